//! Records in the metadata database (redb): pod records, and the table every kind of record
//! is kept in (JSON by key, written transactionally, mirrored in memory).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::spec::PodSpec;

/// Where a pod is in its life, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PodState {
    /// RunPodSandbox is in progress (a crash here leaves a pod that reports NotReady).
    Creating,
    /// The sandbox was started (it is reported ready while its monitor and sandbox live).
    Ready,
    /// Stopped, failed, or its monitor is gone.
    NotReady,
}

/// Where the pod's CNI attachment is, as recorded. It lets a restarted criusd tell an
/// interrupted RunPodSandbox (roll back) from a finished one, and a finished DEL (never run
/// again) from one still due.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkPhase {
    /// No CNI: a host-network pod, or a record from before phases were kept.
    #[default]
    None,
    /// ADD is due or running: RunPodSandbox has not finished (recorded from its start for a pod
    /// with a network namespace of its own).
    Pending,
    /// ADD succeeded and its result is cached.
    Attached,
    /// DEL succeeded: nothing of the network is left.
    Detached,
}

/// One pod as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    /// Sandbox id (64 hex digits).
    pub id: String,
    /// What was asked.
    pub spec: PodSpec,
    /// Recorded state.
    pub state: PodState,
    /// Creation time, nanoseconds since the epoch.
    pub created_at_ns: i64,
    /// The pod directory `<state>/pods/<id>`.
    pub dir: PathBuf,
    /// The monitor's pid (0 before it runs).
    pub monitor_pid: i32,
    /// The monitor's start time (`/proc/PID/stat` field 22).
    pub monitor_start_time: u64,
    /// The sandbox process's pid (0 before it runs).
    pub sandbox_pid: i32,
    /// The sandbox's start time.
    pub sandbox_start_time: u64,
    /// The pinned network namespace (CNI `netns_path`) while the pod has one.
    pub netns: Option<PathBuf>,
    /// Pod IPs, once networking has assigned them (first is the primary).
    #[serde(default)]
    pub ips: Vec<String>,
    /// The CNI attachment's phase.
    #[serde(default)]
    pub network: NetworkPhase,
    /// Where its hostname, hosts and resolv.conf are; none: in `dir` (pods made before).
    #[serde(default)]
    pub files_dir: Option<PathBuf>,
}

impl PodRecord {
    /// The record of a pod being created: state `Creating`, no processes, no network yet.
    pub fn creating(id: String, spec: PodSpec, dir: PathBuf, created_at_ns: i64) -> PodRecord {
        PodRecord {
            id,
            spec,
            state: PodState::Creating,
            created_at_ns,
            dir,
            monitor_pid: 0,
            monitor_start_time: 0,
            sandbox_pid: 0,
            sandbox_start_time: 0,
            netns: None,
            ips: Vec::new(),
            network: NetworkPhase::None,
            files_dir: None,
        }
    }

    /// The directory of the pod's hostname, hosts and resolv.conf.
    pub fn files_dir(&self) -> &std::path::Path {
        self.files_dir.as_deref().unwrap_or(&self.dir)
    }
}

/// A metadata database failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed.
    #[error("metadata database: {source}")]
    Database {
        /// What redb said.
        source: Box<redb::Error>,
    },
    /// A record could not be encoded.
    #[error("metadata database: {source}")]
    Encode {
        /// What serde said.
        #[from]
        source: serde_json::Error,
    },
    /// The thread that wrote the record ended without an answer.
    #[error("metadata database: the writing task failed: {source}")]
    Task {
        /// What tokio said.
        #[from]
        source: tokio::task::JoinError,
    },
}

/// A redb failure as a [`StoreError`].
pub(crate) fn err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Database {
        source: Box::new(e.into()),
    }
}

/// A record kept in a table of the metadata database.
pub trait Record: Serialize + DeserializeOwned + Clone {
    /// The table's name.
    const TABLE: &'static str;
    /// What a record is called in a log line.
    const KIND: &'static str;
    /// The record's key.
    fn key(&self) -> &str;
}

impl Record for PodRecord {
    const TABLE: &'static str = "pods";
    const KIND: &'static str = "pod";
    fn key(&self) -> &str {
        &self.id
    }
}

/// A table of the metadata database (key → JSON record), with every record also kept in
/// memory: reads (kubelet lists and asks for status every second) never touch the database,
/// writes go to the database first and reach the memory copy once committed.
#[derive(Debug)]
pub struct Store<T> {
    db: Arc<redb::Database>,
    /// The committed records by key. Writers hold the write lock across their transaction,
    /// so the copy changes in commit order.
    records: RwLock<BTreeMap<String, Arc<T>>>,
}

impl<T: Record> Store<T> {
    fn table() -> TableDefinition<'static, &'static str, &'static [u8]> {
        TableDefinition::new(T::TABLE)
    }

    /// Opens (creating) the table and loads every record. A record that cannot be decoded is
    /// logged and skipped.
    pub fn open(db: Arc<redb::Database>) -> Result<Store<T>, StoreError> {
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(Self::table()).map_err(err)?;
        txn.commit().map_err(err)?;
        let mut records = BTreeMap::new();
        {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(Self::table()).map_err(err)?;
            for entry in table.iter().map_err(err)? {
                let (key, value) = entry.map_err(err)?;
                match serde_json::from_slice::<T>(value.value()) {
                    Ok(r) => {
                        records.insert(r.key().to_owned(), Arc::new(r));
                    }
                    Err(e) => {
                        tracing::error!(
                            key = key.value(),
                            error = %e,
                            "undecodable {} record",
                            T::KIND
                        )
                    }
                }
            }
        }
        Ok(Store {
            db,
            records: RwLock::new(records),
        })
    }

    fn write_lock(&self) -> RwLockWriteGuard<'_, BTreeMap<String, Arc<T>>> {
        self.records.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn read_lock(&self) -> RwLockReadGuard<'_, BTreeMap<String, Arc<T>>> {
        self.records.read().unwrap_or_else(PoisonError::into_inner)
    }

    /// Writes `record` in one transaction while the memory copy is locked, then puts it there.
    fn commit(
        &self,
        records: &mut BTreeMap<String, Arc<T>>,
        record: T,
    ) -> Result<Arc<T>, StoreError> {
        let data = serde_json::to_vec(&record)?;
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(Self::table()).map_err(err)?;
            table.insert(record.key(), data.as_slice()).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        let record = Arc::new(record);
        records.insert(record.key().to_owned(), record.clone());
        Ok(record)
    }

    /// Inserts or replaces a record.
    pub fn put(&self, record: &T) -> Result<(), StoreError> {
        let mut records = self.write_lock();
        self.commit(&mut records, record.clone()).map(drop)
    }

    /// Inserts `record` unless a record `conflicts` with it; returns that record's key then.
    pub fn insert_unless(
        &self,
        record: &T,
        conflicts: impl Fn(&T) -> bool,
    ) -> Result<Option<String>, StoreError> {
        let mut records = self.write_lock();
        if let Some(other) = records.values().find(|other| conflicts(other)) {
            return Ok(Some(other.key().to_owned()));
        }
        self.commit(&mut records, record.clone())?;
        Ok(None)
    }

    /// Changes a record in one transaction; `None` when it does not exist.
    pub fn update(
        &self,
        key: &str,
        change: impl FnOnce(&mut T),
    ) -> Result<Option<Arc<T>>, StoreError> {
        let mut records = self.write_lock();
        let Some(mut record) = records.get(key).map(|r| T::clone(r)) else {
            return Ok(None);
        };
        change(&mut record);
        self.commit(&mut records, record).map(Some)
    }

    /// Deletes a record (absent is fine).
    pub fn delete(&self, key: &str) -> Result<(), StoreError> {
        let mut records = self.write_lock();
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(Self::table()).map_err(err)?;
            table.remove(key).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        records.remove(key);
        Ok(())
    }

    /// Every record (shared: a listing copies no record).
    pub fn all(&self) -> Vec<Arc<T>> {
        self.read_lock().values().cloned().collect()
    }

    /// The record of `key` exactly, else the records whose key starts with `key`.
    pub fn find(&self, key: &str) -> Vec<Arc<T>> {
        let records = self.read_lock();
        if let Some(exact) = records.get(key) {
            return vec![exact.clone()];
        }
        records
            .range::<str, _>((std::ops::Bound::Included(key), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(key))
            .map(|(_, r)| r.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
    struct Thing {
        id: String,
        name: String,
    }

    impl Record for Thing {
        const TABLE: &'static str = "things";
        const KIND: &'static str = "thing";
        fn key(&self) -> &str {
            &self.id
        }
    }

    fn thing(id: &str, name: &str) -> Thing {
        Thing {
            id: id.into(),
            name: name.into(),
        }
    }

    #[test]
    fn records_survive_a_reopen_and_a_bad_one_is_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Arc::new(redb::Database::create(dir.path().join("m.redb")).expect("db"));
        let store = Store::<Thing>::open(db.clone()).expect("open");
        store.put(&thing("a1", "x")).expect("put");
        assert_eq!(
            store
                .insert_unless(&thing("b1", "x"), |o| o.name == "x")
                .expect("insert"),
            Some("a1".to_owned())
        );
        assert_eq!(
            store
                .insert_unless(&thing("a2", "y"), |o| o.name == "y")
                .expect("insert"),
            None
        );
        let changed = store.update("a2", |t| t.name = "z".into()).expect("update");
        assert_eq!(changed.map(|t| t.name.clone()), Some("z".to_owned()));
        assert!(store.update("nope", |_| ()).expect("update").is_none());
        assert_eq!(store.find("a").len(), 2);
        assert_eq!(store.find("a1")[0].name, "x");
        store.delete("a1").expect("delete");
        store.delete("a1").expect("deleting twice is fine");
        // A record written by something else that does not decode is skipped on open.
        let txn = db.begin_write().expect("txn");
        {
            let mut table = txn.open_table(Store::<Thing>::table()).expect("table");
            table.insert("bad", b"{".as_slice()).expect("insert");
        }
        txn.commit().expect("commit");
        drop(store);
        let store = Store::<Thing>::open(db).expect("reopen");
        assert_eq!(
            store
                .all()
                .iter()
                .map(|t| Thing::clone(t))
                .collect::<Vec<_>>(),
            vec![thing("a2", "z")]
        );
    }
}
