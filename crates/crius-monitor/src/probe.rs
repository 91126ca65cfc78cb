//! The start-up probe: do idmapped mounts work on the filesystems crius uses?

use std::ffi::CString;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use crius_proto::IdmapSupport;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
pub(crate) struct MountAttr {
    pub(crate) attr_set: u64,
    pub(crate) attr_clr: u64,
    pub(crate) propagation: u64,
    pub(crate) userns_fd: u64,
}

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
        let result = open_tree(path).and_then(|fd| idmap(&fd, ns));
        if let Err(e) = result {
            failures.push(format!("the filesystem of {}: {e}", path.display()));
        }
    }
    if let Err(e) = fresh_tmpfs().and_then(|fd| idmap(&fd, ns)) {
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

/// Why a detached mount or the probe's user namespace could not be made.
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
    /// A system call returned a descriptor out of range.
    #[error("{call}: bad descriptor")]
    BadDescriptor {
        /// The call.
        call: &'static str,
    },
    /// The path holds a NUL byte.
    #[error("{source}")]
    Path {
        /// The path.
        path: std::path::PathBuf,
        /// Where the NUL is.
        source: std::ffi::NulError,
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

fn owned(ret: libc::c_long, call: &'static str) -> Result<OwnedFd, ProbeError> {
    if ret < 0 {
        return Err(last_error(call));
    }
    let fd = RawFd::try_from(ret).map_err(|_| ProbeError::BadDescriptor { call })?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A detached clone of the mount tree at `path` (`open_tree(OPEN_TREE_CLONE)`).
pub(crate) fn open_tree(path: &Path) -> Result<OwnedFd, ProbeError> {
    let c =
        CString::new(path.as_os_str().as_encoded_bytes()).map_err(|source| ProbeError::Path {
            path: path.to_owned(),
            source,
        })?;
    // SAFETY: open_tree with a valid NUL-terminated path; returns a new descriptor or -1.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    owned(ret, "open_tree")
}

fn fresh_tmpfs() -> Result<OwnedFd, ProbeError> {
    let name = c"tmpfs";
    // SAFETY: fsopen with a valid NUL-terminated filesystem name.
    let fs = owned(
        unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) },
        "fsopen(tmpfs)",
    )?;
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    };
    if ret < 0 {
        return Err(last_error("fsconfig(create)"));
    }
    // SAFETY: fsmount on the configured context; returns a detached mount descriptor.
    owned(
        unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), FSMOUNT_CLOEXEC, 0) },
        "fsmount",
    )
}

/// Idmaps the detached `mount` with `userns`.
pub(crate) fn idmap(mount: &OwnedFd, userns: &OwnedFd) -> Result<(), ProbeError> {
    idmap_with(mount, userns, 0)
}

/// Idmaps the detached `mount` with `userns` and makes it read-only, nosuid and nodev: the view
/// of image layers a pod gets, which nothing may change or gain privileges through.
pub(crate) fn idmap_read_only(mount: &OwnedFd, userns: &OwnedFd) -> Result<(), ProbeError> {
    const MOUNT_ATTR_RDONLY: u64 = 0x0000_0001;
    const MOUNT_ATTR_NOSUID: u64 = 0x0000_0002;
    const MOUNT_ATTR_NODEV: u64 = 0x0000_0004;
    idmap_with(
        mount,
        userns,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    )
}

fn idmap_with(mount: &OwnedFd, userns: &OwnedFd, extra: u64) -> Result<(), ProbeError> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | extra,
        attr_clr: 0,
        propagation: 0,
        // A descriptor is never negative; u64::MAX would be refused as no descriptor.
        userns_fd: u64::try_from(userns.as_raw_fd()).unwrap_or(u64::MAX),
    };
    let empty = c"";
    // SAFETY: mount_setattr on a detached mount descriptor with a properly sized attr struct.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(last_error("mount_setattr(MOUNT_ATTR_IDMAP)"));
    }
    Ok(())
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
