//! Pods whose monitor recorded a change: the monitor records every container exit (and every
//! other change of its containers) by renaming a new `state.json` into the pod directory, and a
//! thread watching the pods directory with inotify reports the pod of each such rename.

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::Pods;

impl Pods {
    /// Starts a thread that calls `changed` with the id of every pod whose monitor wrote a new
    /// `state.json` (several changes close together may be reported once; after a lost
    /// inotify event, every pod is reported). Failures to watch are logged.
    pub fn watch_states(&self, changed: impl Fn(&str) + Send + 'static) {
        let dir = self.pods_dir().to_owned();
        let spawned = std::thread::Builder::new()
            .name("crius-watch".into())
            .spawn(move || {
                if let Err(e) = watch_loop(&dir, &changed) {
                    tracing::error!(
                        dir = %dir.display(),
                        error = %e,
                        "cannot watch the pods directory: containers that exit by themselves \
                         produce no STOPPED event"
                    );
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the pods directory watcher thread");
        }
    }
}

fn watch_loop(pods_dir: &Path, changed: &dyn Fn(&str)) -> nix::Result<()> {
    let inotify = Inotify::init(InitFlags::IN_CLOEXEC)?;
    let top = inotify.add_watch(
        pods_dir,
        AddWatchFlags::IN_CREATE | AddWatchFlags::IN_ONLYDIR,
    )?;
    let pod_flags = AddWatchFlags::IN_MOVED_TO | AddWatchFlags::IN_CLOSE_WRITE;
    let mut watched: HashMap<WatchDescriptor, String> = HashMap::new();
    let add = |watched: &mut HashMap<_, _>, name: &OsStr| {
        let path: PathBuf = pods_dir.join(name);
        if let (Ok(wd), Some(id)) = (inotify.add_watch(&path, pod_flags), name.to_str()) {
            watched.insert(wd, id.to_owned());
        }
    };
    if let Ok(entries) = std::fs::read_dir(pods_dir) {
        for entry in entries.flatten() {
            add(&mut watched, &entry.file_name());
        }
    }
    loop {
        let batch = match inotify.read_events() {
            Ok(batch) => batch,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        };
        let mut dirty = HashSet::new();
        for event in batch {
            if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                // Some changes were lost: look at every pod.
                dirty.extend(watched.values().cloned());
                continue;
            }
            if event.mask.contains(AddWatchFlags::IN_IGNORED) {
                watched.remove(&event.wd);
                continue;
            }
            let Some(name) = event.name else { continue };
            if event.wd == top {
                if event.mask.contains(AddWatchFlags::IN_ISDIR) {
                    add(&mut watched, &name);
                }
            } else if name == crius_proto::layout::STATE
                && let Some(id) = watched.get(&event.wd)
            {
                dirty.insert(id.clone());
            }
        }
        for id in dirty {
            changed(&id);
        }
    }
}
