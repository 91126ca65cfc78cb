//! The result cache: what ADD did, kept so CHECK and DEL run with the same inputs even after
//! criusd restarts or the config directory changes.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};

/// The `kind` tag of cache files written by this version of crius.
const KIND: &str = "crius-cni-cache-v1";

/// One cached attachment: the network config, the arguments and the result of ADD.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CacheEntry {
    pub kind: String,
    pub container_id: String,
    pub if_name: String,
    pub netns: PathBuf,
    /// The network config list exactly as ADD ran it.
    pub config: Value,
    /// The `CNI_ARGS` ADD ran with.
    pub cni_args: String,
    /// The capability arguments ADD had (each plugin got the ones it declares).
    pub capability_args: Map<String, Value>,
    /// The final ADD result.
    pub result: Value,
}

impl CacheEntry {
    pub fn new(
        container_id: &str,
        if_name: &str,
        netns: &Path,
        config: Value,
        cni_args: String,
        capability_args: Map<String, Value>,
        result: Value,
    ) -> Self {
        Self {
            kind: KIND.into(),
            container_id: container_id.into(),
            if_name: if_name.into(),
            netns: netns.into(),
            config,
            cni_args,
            capability_args,
            result,
        }
    }
}

/// The cache file of sandbox `id` (already validated) under `dir`.
pub(crate) fn path(dir: &Path, id: &str) -> PathBuf {
    dir.join(format!("{id}.json"))
}

/// Reads the entry of `id`; `None` when there is none.
pub(crate) async fn read(dir: &Path, id: &str) -> Result<Option<CacheEntry>> {
    let path = path(dir, id);
    let bytes = match tokio::fs::read(&path).await {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(Error::Cache { path, source }),
    };
    let entry: CacheEntry = serde_json::from_slice(&bytes).map_err(|e| Error::CacheCorrupt {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if entry.kind != KIND || entry.container_id != id {
        return Err(Error::CacheCorrupt {
            path,
            reason: format!("kind {:?} for {:?}", entry.kind, entry.container_id),
        });
    }
    Ok(Some(entry))
}

/// Writes the entry whole: a temporary file in the same directory, synced, then renamed.
pub(crate) async fn write(dir: &Path, entry: &CacheEntry) -> Result<()> {
    let path = path(dir, &entry.container_id);
    let bytes = serde_json::to_vec_pretty(entry).map_err(|source| Error::Encode {
        what: "result cache entry",
        source,
    })?;
    let tmp = dir.join(format!(".{}.json.tmp", entry.container_id));
    let (dir, target) = (dir.to_owned(), path.clone());
    // One trip to a blocking thread for the whole write.
    let written = tokio::task::spawn_blocking(move || write_file(&dir, &tmp, &target, &bytes))
        .await
        .map_err(|source| Error::Task {
            task: "result cache writer",
            source,
        })?;
    written.map_err(|source| Error::Cache { path, source })
}

/// Writes `bytes` to `tmp` in `dir` (made when missing), syncs it and renames it to `target`;
/// removes `tmp` on failure.
fn write_file(dir: &Path, tmp: &Path, target: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir)?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(tmp)?;
    let written = file
        .write_all(bytes)
        .and_then(|()| file.sync_all())
        .and_then(|()| {
            drop(file);
            std::fs::rename(tmp, target)
        });
    if written.is_err() {
        let _ = std::fs::remove_file(tmp);
    }
    written
}

/// Removes the entry of `id`; a missing entry is fine.
pub(crate) async fn remove(dir: &Path, id: &str) -> Result<()> {
    let path = path(dir, id);
    match tokio::fs::remove_file(&path).await {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::Cache { path, source }),
    }
}

/// The ids that have an entry under `dir`; temporary files of interrupted writes (`.ID.json.tmp`)
/// are removed on the way. A missing directory has none.
pub(crate) async fn ids(dir: &Path) -> Result<Vec<String>> {
    let err = |source| Error::Cache {
        path: dir.to_path_buf(),
        source,
    };
    let mut entries = match tokio::fs::read_dir(dir).await {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(err(source)),
    };
    let mut ids = Vec::new();
    while let Some(entry) = entries.next_entry().await.map_err(err)? {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') && name.ends_with(".json.tmp") {
            tracing::info!(file = %entry.path().display(), "removing an interrupted CNI cache write");
            let _ = tokio::fs::remove_file(entry.path()).await;
        } else if let Some(id) = name.strip_suffix(".json")
            && crate::pod::validate_id(id).is_ok()
        {
            ids.push(id.to_owned());
        }
    }
    ids.sort();
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[tokio::test]
    async fn write_read_remove() {
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("cni");
        assert_eq!(read(&cache, "p1").await.unwrap(), None);
        let entry = CacheEntry::new(
            "p1",
            "eth0",
            Path::new("/run/netns/p1"),
            json!({"name": "n"}),
            "IgnoreUnknown=1".into(),
            Map::new(),
            json!({"cniVersion": "1.0.0"}),
        );
        write(&cache, &entry).await.unwrap();
        assert_eq!(read(&cache, "p1").await.unwrap(), Some(entry.clone()));
        // Only the final file remains.
        let names: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["p1.json"]);
        remove(&cache, "p1").await.unwrap();
        remove(&cache, "p1").await.unwrap();
        assert_eq!(read(&cache, "p1").await.unwrap(), None);
    }

    #[tokio::test]
    async fn ids_lists_entries_and_drops_interrupted_writes() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ids(&dir.path().join("none")).await.unwrap().is_empty());
        std::fs::write(path(dir.path(), "b"), "{}").unwrap();
        std::fs::write(path(dir.path(), "a"), "{}").unwrap();
        std::fs::write(dir.path().join(".c.json.tmp"), "{").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "").unwrap();
        assert_eq!(ids(dir.path()).await.unwrap(), ["a", "b"]);
        assert!(!dir.path().join(".c.json.tmp").exists());
    }

    #[tokio::test]
    async fn corrupt_entries_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path(), "p2"), "{").unwrap();
        let err = read(dir.path(), "p2").await.unwrap_err();
        assert!(matches!(err, Error::CacheCorrupt { .. }), "{err}");
    }
}
