//! The start-up probe: do idmapped mounts work on the filesystems crius uses?

use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::Path;

use crius_proto::IdmapSupport;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use crate::mountapi::{self, MountAttrFlags};

/// Probes idmapped mounts on the filesystem of each path and on a fresh tmpfs. Must be called
/// while the process is single-threaded (it clones a short-lived user namespace holder).
pub fn probe_idmap(paths: &[&Path]) -> IdmapSupport {
    let holder = match UsernsHolder::new() {
        Ok(h) => h,
        Err(e) => {
            return IdmapSupport::Unsupported(format!(
                "cannot create a user namespace to probe idmapped mounts: {e}"
            ));
        }
    };
    let Some(ns) = holder.ns.as_ref() else {
        return IdmapSupport::Unsupported("no probe user namespace".into());
    };
    let mut failures = Vec::new();
    for path in paths {
        let result = mountapi::clone_tree(path)
            .and_then(|fd| mountapi::idmap(&fd, ns, MountAttrFlags::empty()));
        if let Err(e) = result {
            failures.push(format!("the filesystem of {}: {e}", path.display()));
        }
    }
    if let Err(e) =
        mountapi::fresh_tmpfs().and_then(|fd| mountapi::idmap(&fd, ns, MountAttrFlags::empty()))
    {
        failures.push(format!("tmpfs: {e}"));
    }
    drop(holder);
    if failures.is_empty() {
        IdmapSupport::Supported
    } else {
        IdmapSupport::Unsupported(format!(
            "idmapped mounts (Linux 6.3+ for tmpfs) do not work on {}",
            failures.join("; ")
        ))
    }
}

/// Why the probe's user namespace could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// A system call failed.
    #[error("{call}: {source}")]
    Syscall {
        /// The call, with its key argument.
        call: &'static str,
        /// The errno.
        source: nix::Error,
    },
    /// The pipe to the namespace holder could not be made.
    #[error("{source}")]
    Pipe {
        /// The errno.
        source: nix::Error,
    },
    /// A map of the probe namespace could not be written.
    #[error("cannot write {file} of the probe namespace: {source}")]
    WriteMap {
        /// `uid_map` or `gid_map`.
        file: &'static str,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The probe namespace could not be opened.
    #[error("cannot open the probe user namespace: {source}")]
    OpenNamespace {
        /// The I/O error.
        source: std::io::Error,
    },
}

/// The failure of `call`, from errno.
fn last_error(call: &'static str) -> ProbeError {
    ProbeError::Syscall {
        call,
        source: nix::errno::Errno::last(),
    }
}

/// A child parked in a new user namespace with a map, and that namespace's descriptor.
struct UsernsHolder {
    pid: Pid,
    release: Option<std::fs::File>,
    ns: Option<OwnedFd>,
}

impl UsernsHolder {
    fn new() -> Result<UsernsHolder, ProbeError> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|source| ProbeError::Pipe { source })?;
        // SAFETY: a fork-like clone in a single-threaded process; the child only reads a pipe
        // and exits.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_clone,
                (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        };
        if ret < 0 {
            return Err(last_error("clone(CLONE_NEWUSER)"));
        }
        if ret == 0 {
            drop(w);
            let mut byte = [0u8; 1];
            let _ = nix::unistd::read(&r, &mut byte);
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        drop(r);
        let pid = crate::cloned_pid(ret);
        let mut holder = UsernsHolder {
            pid,
            release: Some(std::fs::File::from(w)),
            ns: None,
        };
        for file in ["uid_map", "gid_map"] {
            std::fs::write(format!("/proc/{pid}/{file}"), "0 100000 65536\n")
                .map_err(|source| ProbeError::WriteMap { file, source })?;
        }
        let ns = std::fs::File::open(format!("/proc/{pid}/ns/user"))
            .map(OwnedFd::from)
            .map_err(|source| ProbeError::OpenNamespace { source })?;
        holder.ns = Some(ns);
        Ok(holder)
    }
}

impl Drop for UsernsHolder {
    fn drop(&mut self) {
        if let Some(mut w) = self.release.take() {
            let _ = w.write_all(b"x");
        }
        let _ = waitpid(self.pid, None);
    }
}
