//! Path resolution the kernel confines: openat2(2) beneath or inside a directory, so a symlink
//! or `..` planted by an image or a client cannot lead a host-root process elsewhere.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use nix::errno::Errno;

/// Fail with EXDEV when resolution would leave the starting directory.
pub(crate) const RESOLVE_BENEATH: u64 = 0x08;
/// Resolve as if the starting directory were `/`.
pub(crate) const RESOLVE_IN_ROOT: u64 = 0x10;
/// Fail with ELOOP on any symlink.
pub(crate) const RESOLVE_NO_SYMLINKS: u64 = 0x04;
/// Fail on magic links (`/proc/PID/fd/N` and the like).
pub(crate) const RESOLVE_NO_MAGICLINKS: u64 = 0x02;

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// openat2(2) of `path` relative to `dir` with open `flags`, creation `mode` and `resolve`
/// restrictions; the descriptor is always close-on-exec.
pub(crate) fn openat2(
    dir: BorrowedFd<'_>,
    path: &str,
    flags: libc::c_int,
    mode: libc::mode_t,
    resolve: u64,
) -> Result<OwnedFd, Errno> {
    let c = CString::new(path).map_err(|_| Errno::EINVAL)?;
    let how = OpenHow {
        flags: u64::from((flags | libc::O_CLOEXEC).cast_unsigned()),
        mode: u64::from(mode),
        resolve,
    };
    // SAFETY: openat2 with a valid directory fd, a NUL-terminated path and a sized open_how.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir.as_raw_fd(),
            c.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if ret < 0 {
        return Err(Errno::last());
    }
    let fd = libc::c_int::try_from(ret).map_err(|_| Errno::EBADF)?;
    // SAFETY: the kernel returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
