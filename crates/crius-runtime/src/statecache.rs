//! Parsed pod monitor states, reused while the file is unchanged.
//!
//! A monitor writes `state.json` whole and renames it into place. Each cached state's pod
//! directory is watched with inotify: a rename, write or removal of `state.json` queues an
//! event before the monitor's rename returns (so before it answers criusd), and the next read
//! drains the queue and parses again what changed. Listing calls (kubelet's relist every
//! second) then touch no pod's files at all. Where no watch can be had, a file with the inode,
//! size and modification time of the cached one is taken for the same document.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crius_proto::MonitorState;
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

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

/// One cached state.
#[derive(Debug)]
struct Entry {
    version: Version,
    state: Arc<MonitorState>,
    /// The watch on its directory, when there is one.
    watch: Option<WatchDescriptor>,
    /// No event has told of a change since it was parsed.
    fresh: bool,
}

/// The cache and the watches behind it.
#[derive(Debug, Default)]
struct Inner {
    /// By the state file's path, as bytes (hashed whole, not component by component: a
    /// listing looks up every pod).
    entries: HashMap<std::ffi::OsString, Entry>,
    /// Watched directory → the state file in it.
    watched: HashMap<WatchDescriptor, PathBuf>,
}

/// Parsed `state.json` files by path.
#[derive(Debug)]
pub(crate) struct StateCache {
    inner: Mutex<Inner>,
    /// `None` where inotify is not available: every read then checks the file's version.
    inotify: Option<Inotify>,
}

impl Default for StateCache {
    fn default() -> Self {
        StateCache {
            inner: Mutex::default(),
            inotify: Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok(),
        }
    }
}

/// The events that may mean a new `state.json`.
fn watch_mask() -> AddWatchFlags {
    AddWatchFlags::IN_MOVED_TO
        | AddWatchFlags::IN_CLOSE_WRITE
        | AddWatchFlags::IN_DELETE
        | AddWatchFlags::IN_DELETE_SELF
        | AddWatchFlags::IN_MOVE_SELF
}

impl StateCache {
    /// The state in `path`, parsed again only when the file changed; `None` when it is missing
    /// or unreadable (its entry is then dropped).
    pub(crate) fn read(&self, path: &Path) -> Option<Arc<MonitorState>> {
        self.take_changes();
        self.read_taken(path)
    }

    /// Takes in the change events queued so far, so that the [`StateCache::read_taken`] calls
    /// of one listing that follow see every state written before it, for one `read` of the
    /// queue instead of one per pod.
    pub(crate) fn take_changes(&self) {
        let mut inner = self.lock();
        self.drain(&mut inner);
    }

    /// [`StateCache::read`] without taking in the queued events first (a listing did, once,
    /// with [`StateCache::take_changes`]).
    pub(crate) fn read_taken(&self, path: &Path) -> Option<Arc<MonitorState>> {
        {
            let inner = self.lock();
            if let Some(entry) = inner.entries.get(path.as_os_str())
                && entry.fresh
                && entry.watch.is_some()
            {
                return Some(entry.state.clone());
            }
        }
        let Ok(meta) = std::fs::metadata(path) else {
            self.forget(path);
            return None;
        };
        let version = Version::of(&meta);
        {
            let mut inner = self.lock();
            if let Some(entry) = inner.entries.get_mut(path.as_os_str())
                && entry.version == version
            {
                entry.fresh = true;
                return Some(entry.state.clone());
            }
        }
        // Watch before reading: a change after this point is seen by the next read.
        let watch = self.watch(path);
        let text = std::fs::read(path).ok()?;
        let state: Arc<MonitorState> = Arc::new(serde_json::from_slice(&text).ok()?);
        // Cache the parse only when the file was not replaced around the read: otherwise the
        // text read may belong to either version.
        if std::fs::metadata(path).is_ok_and(|m| Version::of(&m) == version) {
            let mut inner = self.lock();
            if let Some(wd) = watch {
                inner.watched.insert(wd, path.to_path_buf());
            }
            inner.entries.insert(
                path.as_os_str().to_owned(),
                Entry {
                    version,
                    state: state.clone(),
                    watch,
                    fresh: true,
                },
            );
        }
        Some(state)
    }

    /// Drops the entry of `path` (its pod is gone) and its watch.
    pub(crate) fn forget(&self, path: &Path) {
        let mut inner = self.lock();
        if let Some(entry) = inner.entries.remove(path.as_os_str())
            && let Some(wd) = entry.watch
        {
            inner.watched.remove(&wd);
            if let Some(inotify) = &self.inotify {
                let _ = inotify.rm_watch(wd);
            }
        }
    }

    /// A watch on the directory of `path` (inotify gives one per directory, however often
    /// asked).
    fn watch(&self, path: &Path) -> Option<WatchDescriptor> {
        let inotify = self.inotify.as_ref()?;
        inotify.add_watch(path.parent()?, watch_mask()).ok()
    }

    /// Marks stale every entry an event tells of.
    fn drain(&self, inner: &mut Inner) {
        let Some(inotify) = &self.inotify else {
            return;
        };
        while let Ok(events) = inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    for entry in inner.entries.values_mut() {
                        entry.fresh = false;
                    }
                    continue;
                }
                let about_state = event
                    .name
                    .as_deref()
                    .is_none_or(|n| n == OsStr::new(crius_proto::layout::STATE));
                if !about_state {
                    continue;
                }
                if let Some(path) = inner.watched.get(&event.wd).cloned()
                    && let Some(entry) = inner.entries.get_mut(path.as_os_str())
                {
                    entry.fresh = false;
                }
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
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

    /// A state whose monitor is `pid` (the sandbox `pid + 1`).
    fn state_of(pid: i32) -> MonitorState {
        MonitorState {
            version: crius_proto::PROTOCOL_VERSION,
            monitor_pid: pid,
            monitor_start_time: 1,
            sandbox_pid: pid + 1,
            sandbox_start_time: 2,
            netns: None,
            cgroup_dirs: Vec::new(),
            exit: None,
            containers: Default::default(),
        }
    }

    #[test]
    fn a_replaced_file_is_read_again_and_a_missing_one_forgotten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let cache = StateCache::default();
        assert!(cache.read(&path).is_none());
        let mut state = state_of(11);
        write(&path, &state);
        let first = cache.read(&path).expect("state");
        assert_eq!(first.monitor_pid, 11);
        // Unchanged: the same parse.
        assert!(Arc::ptr_eq(&first, &cache.read(&path).expect("state")));
        state.monitor_pid = 12;
        write(&path, &state);
        assert_eq!(cache.read(&path).expect("state").monitor_pid, 12);
        // A write in place (not a rename) is seen too.
        state.monitor_pid = 13;
        std::fs::write(&path, serde_json::to_vec(&state).expect("json")).expect("write");
        assert_eq!(cache.read(&path).expect("state").monitor_pid, 13);
        // Other files of the directory change nothing.
        std::fs::write(dir.path().join("monitor.log"), "x").expect("write");
        let cached = cache.read(&path).expect("state");
        assert!(Arc::ptr_eq(&cached, &cache.read(&path).expect("state")));
        std::fs::remove_file(&path).expect("remove");
        assert!(cache.read(&path).is_none());
        assert!(cache.lock().entries.is_empty() && cache.lock().watched.is_empty());
    }

    #[test]
    fn a_listing_sees_what_was_written_before_it_took_the_changes() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state.json");
        let cache = StateCache::default();
        let mut state = state_of(21);
        write(&path, &state);
        assert_eq!(cache.read(&path).expect("state").monitor_pid, 21);
        state.monitor_pid = 23;
        write(&path, &state);
        // Not yet taken in: a listing that started before the write may still see the old one.
        assert_eq!(cache.read_taken(&path).expect("state").monitor_pid, 21);
        cache.take_changes();
        assert_eq!(cache.read_taken(&path).expect("state").monitor_pid, 23);
    }
}
