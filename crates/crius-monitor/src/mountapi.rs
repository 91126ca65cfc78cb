//! The new mount API on detached mounts: `open_tree`, `fsopen`/`fsconfig`/`fsmount` and
//! `move_mount` through rustix; `mount_setattr`, which rustix does not offer, by hand.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use rustix::fs::CWD;
pub(crate) use rustix::mount::MountAttrFlags;
use rustix::mount::{FsMountFlags, FsOpenFlags, MoveMountFlags, OpenTreeFlags};

/// A failed call of the mount API.
#[derive(Debug, thiserror::Error)]
#[error("{call}: {source}")]
pub struct CallError {
    /// The call, with its key argument.
    pub call: &'static str,
    /// The errno.
    pub source: nix::Error,
}

fn failed(call: &'static str) -> impl FnOnce(rustix::io::Errno) -> CallError {
    move |e| CallError {
        call,
        source: nix::Error::from_raw(e.raw_os_error()),
    }
}

/// A detached clone of the mount at `path`, without its submounts
/// (`open_tree(OPEN_TREE_CLONE)`).
pub(crate) fn clone_tree(path: &Path) -> Result<OwnedFd, CallError> {
    rustix::mount::open_tree(
        CWD,
        path,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .map_err(failed("open_tree"))
}

/// A detached mount of a new, empty tmpfs.
pub(crate) fn fresh_tmpfs() -> Result<OwnedFd, CallError> {
    let fs = rustix::mount::fsopen("tmpfs", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(failed("fsopen(tmpfs)"))?;
    rustix::mount::fsconfig_create(fs.as_fd()).map_err(failed("fsconfig(create)"))?;
    rustix::mount::fsmount(
        fs.as_fd(),
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::empty(),
    )
    .map_err(failed("fsmount"))
}

/// Attaches the detached mount `tree` at `target`.
pub(crate) fn attach(tree: &OwnedFd, target: &Path) -> Result<(), CallError> {
    rustix::mount::move_mount(
        tree.as_fd(),
        "",
        CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(failed("move_mount"))
}

/// `struct mount_attr` of mount_setattr(2).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Idmaps the detached `mount` with the user namespace `userns`, also setting `extra`.
pub(crate) fn idmap(
    mount: &OwnedFd,
    userns: &OwnedFd,
    extra: MountAttrFlags,
) -> Result<(), CallError> {
    let attr = MountAttr {
        attr_set: u64::from((MountAttrFlags::MOUNT_ATTR_IDMAP | extra).bits()),
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
        return Err(CallError {
            call: "mount_setattr(MOUNT_ATTR_IDMAP)",
            source: nix::Error::last(),
        });
    }
    Ok(())
}

/// Sets `set` on the mount tree at `target`, every submount included.
pub(crate) fn set_recursive(target: &Path, set: MountAttrFlags) -> Result<(), CallError> {
    let attr = MountAttr {
        attr_set: u64::from(set.bits()),
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let failed = |source| CallError {
        call: "mount_setattr(AT_RECURSIVE)",
        source,
    };
    let c = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| failed(nix::Error::EINVAL))?;
    // SAFETY: mount_setattr on a NUL-terminated path with a properly sized attr struct.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_RECURSIVE as libc::c_uint,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if ret < 0 {
        return Err(failed(nix::Error::last()));
    }
    Ok(())
}

/// Whether `path` is the root of a mount (statx's STATX_ATTR_MOUNT_ROOT: a bind or idmapped
/// view of a directory on the same filesystem counts too, which a device comparison misses).
pub(crate) fn is_mount_point(path: &Path) -> bool {
    use rustix::fs::{AtFlags, CWD, StatxAttributes, StatxFlags, statx};
    match statx(
        CWD,
        path,
        AtFlags::NO_AUTOMOUNT | AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::empty(),
    ) {
        Ok(st) if st.stx_attributes_mask.contains(StatxAttributes::MOUNT_ROOT) => {
            st.stx_attributes.contains(StatxAttributes::MOUNT_ROOT)
        }
        // Kernels before 5.8: compare devices with the parent.
        Ok(_) => {
            let (Ok(me), Some(Ok(parent))) = (
                std::fs::symlink_metadata(path),
                path.parent().map(std::fs::symlink_metadata),
            ) else {
                return path.parent().is_none();
            };
            me.dev() != parent.dev() || me.ino() == parent.ino()
        }
        Err(_) => false,
    }
}
