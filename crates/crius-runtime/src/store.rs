//! Pod records in the metadata database (redb), written transactionally.

use std::collections::BTreeMap;
use std::path::PathBuf;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::spec::PodSpec;

/// The `pods` table: sandbox id → JSON [`PodRecord`].
const PODS: TableDefinition<&str, &[u8]> = TableDefinition::new("pods");

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
    /// The sandbox runs and ADD is due or running: RunPodSandbox has not finished.
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
        }
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
}

/// A redb failure as a [`StoreError`].
pub(crate) fn err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Database {
        source: Box::new(e.into()),
    }
}

/// The pod table of the metadata database, with every record also kept in memory: reads
/// (kubelet lists and asks for status every second) never touch the database, writes go to the
/// database first and reach the memory copy once committed.
#[derive(Debug, Clone)]
pub struct Store {
    db: std::sync::Arc<redb::Database>,
    /// The committed records by id. Writers hold the write lock across their transaction, so
    /// the copy changes in commit order.
    records: std::sync::Arc<std::sync::RwLock<BTreeMap<String, std::sync::Arc<PodRecord>>>>,
}

impl Store {
    /// Opens (creating) the pod table and loads every record. A record that cannot be decoded
    /// is logged and skipped.
    pub fn open(db: std::sync::Arc<redb::Database>) -> Result<Store, StoreError> {
        let txn = db.begin_write().map_err(err)?;
        txn.open_table(PODS).map_err(err)?;
        txn.commit().map_err(err)?;
        let mut records = BTreeMap::new();
        {
            let txn = db.begin_read().map_err(err)?;
            let table = txn.open_table(PODS).map_err(err)?;
            for entry in table.iter().map_err(err)? {
                let (key, value) = entry.map_err(err)?;
                match serde_json::from_slice::<PodRecord>(value.value()) {
                    Ok(r) => {
                        records.insert(r.id.clone(), std::sync::Arc::new(r));
                    }
                    Err(e) => {
                        tracing::error!(id = key.value(), error = %e, "undecodable pod record")
                    }
                }
            }
        }
        Ok(Store {
            db,
            records: std::sync::Arc::new(std::sync::RwLock::new(records)),
        })
    }

    fn write_lock(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, BTreeMap<String, std::sync::Arc<PodRecord>>> {
        self.records
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn read_lock(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, std::sync::Arc<PodRecord>>> {
        self.records
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Inserts or replaces a record.
    pub fn put(&self, record: &PodRecord) -> Result<(), StoreError> {
        let data = serde_json::to_vec(record)?;
        let mut records = self.write_lock();
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(PODS).map_err(err)?;
            table
                .insert(record.id.as_str(), data.as_slice())
                .map_err(err)?;
        }
        txn.commit().map_err(err)?;
        records.insert(record.id.clone(), std::sync::Arc::new(record.clone()));
        Ok(())
    }

    /// Inserts `record` unless a pod with the same metadata exists; returns that pod's id then.
    pub fn insert_unique(&self, record: &PodRecord) -> Result<Option<String>, StoreError> {
        let data = serde_json::to_vec(record)?;
        let mut records = self.write_lock();
        if let Some(other) = records
            .values()
            .find(|other| other.spec.metadata == record.spec.metadata)
        {
            return Ok(Some(other.id.clone()));
        }
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(PODS).map_err(err)?;
            table
                .insert(record.id.as_str(), data.as_slice())
                .map_err(err)?;
        }
        txn.commit().map_err(err)?;
        records.insert(record.id.clone(), std::sync::Arc::new(record.clone()));
        Ok(None)
    }

    /// Changes a record in one transaction; `None` when it does not exist.
    pub fn update(
        &self,
        id: &str,
        change: impl FnOnce(&mut PodRecord),
    ) -> Result<Option<std::sync::Arc<PodRecord>>, StoreError> {
        let mut records = self.write_lock();
        let Some(mut record) = records.get(id).map(|r| PodRecord::clone(r)) else {
            return Ok(None);
        };
        change(&mut record);
        let data = serde_json::to_vec(&record)?;
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(PODS).map_err(err)?;
            table.insert(id, data.as_slice()).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        let record = std::sync::Arc::new(record);
        records.insert(id.to_owned(), record.clone());
        Ok(Some(record))
    }

    /// Deletes a record (absent is fine).
    pub fn delete(&self, id: &str) -> Result<(), StoreError> {
        let mut records = self.write_lock();
        let txn = self.db.begin_write().map_err(err)?;
        {
            let mut table = txn.open_table(PODS).map_err(err)?;
            table.remove(id).map_err(err)?;
        }
        txn.commit().map_err(err)?;
        records.remove(id);
        Ok(())
    }

    /// Every record (shared: a listing copies no record).
    pub fn all(&self) -> Result<Vec<std::sync::Arc<PodRecord>>, StoreError> {
        Ok(self.read_lock().values().cloned().collect())
    }

    /// The record of `id` exactly, else the records whose id starts with `id`.
    pub fn find(&self, id: &str) -> Vec<std::sync::Arc<PodRecord>> {
        let records = self.read_lock();
        if let Some(exact) = records.get(id) {
            return vec![exact.clone()];
        }
        records
            .range::<str, _>((std::ops::Bound::Included(id), std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(id))
            .map(|(_, r)| r.clone())
            .collect()
    }
}
