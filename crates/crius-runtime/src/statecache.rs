//! Parsed pod monitor states, reused while the file is unchanged.
//!
//! A monitor writes `state.json` whole and renames it into place, so every write makes a new
//! inode: a file with the inode, size and modification time of the cached one is the same
//! document. Listing calls (kubelet's relist every second) then cost one `stat` per pod instead
//! of a read and a JSON parse.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crius_proto::MonitorState;

/// What identifies one version of a state file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Version {
    dev: u64,
    ino: u64,
    len: u64,
    mtime_ns: i128,
}

impl Version {
    fn of(meta: &std::fs::Metadata) -> Version {
        Version {
            dev: meta.dev(),
            ino: meta.ino(),
            len: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
        }
    }
}

/// Parsed `state.json` files by path.
#[derive(Debug, Default)]
pub(crate) struct StateCache {
    entries: Mutex<HashMap<PathBuf, (Version, Arc<MonitorState>)>>,
}

impl StateCache {
    /// The state in `path`, parsed again only when the file changed; `None` when it is missing
    /// or unreadable (its entry is then dropped).
    pub(crate) fn read(&self, path: &Path) -> Option<Arc<MonitorState>> {
        let Ok(meta) = std::fs::metadata(path) else {
            self.forget(path);
            return None;
        };
        let version = Version::of(&meta);
        if let Some((v, state)) = self.lock().get(path)
            && *v == version
        {
            return Some(state.clone());
        }
        let text = std::fs::read(path).ok()?;
        let state: Arc<MonitorState> = Arc::new(serde_json::from_slice(&text).ok()?);
        // Cache the parse only when the file was not replaced around the read: otherwise the
        // text read may belong to either version.
        if std::fs::metadata(path).is_ok_and(|m| Version::of(&m) == version) {
            self.lock()
                .insert(path.to_path_buf(), (version, state.clone()));
        }
        Some(state)
    }

    /// Drops the entry of `path` (its pod is gone).
    pub(crate) fn forget(&self, path: &Path) {
        self.lock().remove(path);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, (Version, Arc<MonitorState>)>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(path: &Path, state: &MonitorState) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec(state).expect("json")).expect("write");
        std::fs::rename(&tmp, path).expect("rename");
    }

    #[test]
    fn a_replaced_file_is_read_again_and_a_missing_one_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let cache = StateCache::default();
        assert!(cache.read(&path).is_none());
        let mut state = MonitorState {
            version: crius_proto::PROTOCOL_VERSION,
            monitor_pid: 11,
            monitor_start_time: 1,
            sandbox_pid: 12,
            sandbox_start_time: 2,
            netns: None,
            cgroup_dirs: Vec::new(),
            exit: None,
            containers: Default::default(),
        };
        write(&path, &state);
        let first = cache.read(&path).expect("state");
        assert_eq!(first.monitor_pid, 11);
        // Unchanged: the same parse.
        assert!(Arc::ptr_eq(&first, &cache.read(&path).expect("state")));
        state.monitor_pid = 12;
        write(&path, &state);
        assert_eq!(cache.read(&path).expect("state").monitor_pid, 12);
        std::fs::remove_file(&path).expect("remove");
        assert!(cache.read(&path).is_none());
        assert!(cache.lock().is_empty());
    }
}
