//! Host-side mounts of a pod: the pinned network namespace and the `/dev/shm` tmpfs.

use std::path::{Path, PathBuf};

use crius_proto::layout;
use nix::mount::MsFlags;

use crate::Error;
use crate::sys::Sys;

/// Bind mounts `/proc/PID/ns/net` onto `DIR/netns`, so the namespace outlives lookups by pid
/// and CNI has a stable path.
pub(crate) fn pin_netns(sys: &dyn Sys, dir: &Path, pid: i32) -> Result<PathBuf, Error> {
    let target = dir.join(layout::NETNS);
    std::fs::File::create(&target)
        .map_err(Error::io(format!("cannot create {}", target.display())))?;
    let source = format!("/proc/{pid}/ns/net");
    sys.bind(Path::new(&source), &target, false)
        .map_err(Error::sys(format!(
            "cannot bind {source} to {}",
            target.display()
        )))?;
    Ok(target)
}

/// Mounts the pod's `/dev/shm` tmpfs at `DIR/shm`, owned by host root, mode 1777. A
/// user-namespaced pod's containers get it through a bind idmapped with the pod's mapping, which
/// shows host root as the pod's root (owning it by the mapped root would shift the ids twice).
pub(crate) fn mount_shm(sys: &dyn Sys, dir: &Path, size: u64) -> Result<PathBuf, Error> {
    let target = dir.join(layout::SHM);
    match std::fs::create_dir(&target) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => {
            return Err(Error::Io {
                what: format!("cannot create {}", target.display()),
                source: e,
            });
        }
    }
    let options = format!("mode=1777,size={size},uid=0,gid=0");
    sys.mount_tmpfs(
        "shm",
        &target,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        &options,
    )
    .map_err(Error::sys(format!(
        "cannot mount the pod's shm tmpfs on {}",
        target.display()
    )))?;
    Ok(target)
}

/// Unmounts `path` (lazily: a mount namespace elsewhere may still see it) and removes it.
/// Missing paths and paths that are not mount points are fine.
pub(crate) fn release(sys: &dyn Sys, path: &Path) -> Result<(), Error> {
    loop {
        match sys.unmount(path) {
            Ok(()) => continue,
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOENT) => break,
            Err(e) => {
                return Err(Error::Sys {
                    what: format!("cannot unmount {}", path.display()),
                    source: e,
                });
            }
        }
    }
    // Removing the mount point also drops copies of the mount in other mount namespaces (such
    // as other sandboxes cloned while it existed).
    let removed = if path.is_dir() {
        std::fs::remove_dir(path)
    } else {
        std::fs::remove_file(path)
    };
    match removed {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::Io {
            what: format!("cannot remove {}", path.display()),
            source: e,
        }),
    }
}
