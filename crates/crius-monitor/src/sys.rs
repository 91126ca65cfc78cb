//! The privileged calls of the monitor's host-side steps (mounts, ownership, the mount table and
//! the cgroup hierarchies) behind one trait: [`Linux`] makes them, and the unit tests give the
//! steps a recording fake instead, so that their order and rollback are checked without root.

use std::os::fd::OwnedFd;
use std::path::Path;

use nix::mount::{MntFlags, MsFlags};

use crate::cgroup::Hierarchy;
use crate::mountapi::{self, CallError, MountAttrFlags};

/// Which step of an idmapped clone failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IdmapError {
    /// The source's mount tree cannot be cloned.
    #[error(transparent)]
    Clone(CallError),
    /// The clone cannot be idmapped.
    #[error(transparent)]
    Idmap(CallError),
    /// The idmapped clone cannot be attached.
    #[error(transparent)]
    Attach(CallError),
}

/// A failed step of an overlayfs mount through the new mount API.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub(crate) struct OverlayError {
    /// The call or option that failed.
    pub(crate) step: String,
    /// The errno.
    pub(crate) source: nix::Error,
}

/// The privileged calls of the host-side steps. Shared by the threads of one staging.
pub(crate) trait Sys: Sync {
    /// Bind mounts `source` at `target`, its submounts too when `recursive`.
    fn bind(&self, source: &Path, target: &Path, recursive: bool) -> nix::Result<()>;
    /// Sets the propagation (`MS_PRIVATE`, `MS_SLAVE` or `MS_SHARED`) of the mount tree at
    /// `target`, recursively.
    fn set_propagation(&self, target: &Path, propagation: MsFlags) -> nix::Result<()>;
    /// Mounts a new tmpfs named `source` at `target`.
    fn mount_tmpfs(
        &self,
        source: &str,
        target: &Path,
        flags: MsFlags,
        options: &str,
    ) -> nix::Result<()>;
    /// Mounts overlayfs of `lowers` (bottom to top) with `options` at `target`, one `lowerdir+`
    /// per layer. `Ok(false)` when the kernel lacks `lowerdir+` (nothing is mounted then).
    fn mount_overlay(
        &self,
        lowers: &[std::path::PathBuf],
        options: &[(&str, &std::ffi::OsStr)],
        target: &Path,
    ) -> Result<bool, OverlayError>;
    /// Mounts overlayfs at `target` with one option string (kernels without `lowerdir+`).
    fn mount_overlay_classic(&self, target: &Path, options: &str) -> nix::Result<()>;
    /// The user namespace of process `pid`.
    fn open_userns(&self, pid: i32) -> std::io::Result<OwnedFd>;
    /// Attaches at `target` a clone of the mount at `source` (without its submounts),
    /// idmapped with `userns` and carrying `attrs`.
    fn idmapped_clone(
        &self,
        source: &Path,
        userns: &OwnedFd,
        attrs: MountAttrFlags,
        target: &Path,
    ) -> Result<(), IdmapError>;
    /// A detached clone of the mount at `source` (without its submounts), idmapped with
    /// `userns` and carrying `attrs`, attached nowhere.
    fn idmapped_detached(
        &self,
        source: &Path,
        userns: &OwnedFd,
        attrs: MountAttrFlags,
    ) -> Result<OwnedFd, IdmapError>;
    /// Whether overlayfs stacks layers reached through a detached mount here (Linux 6.15+);
    /// `None` until a mount has told.
    fn detached_layers(&self) -> Option<bool>;
    /// Records whether overlayfs stacked layers reached through a detached mount.
    fn set_detached_layers(&self, works: bool);
    /// Sets `attrs` on the mount tree at `target`, every submount included.
    fn set_recursive(&self, target: &Path, attrs: MountAttrFlags) -> Result<(), CallError>;
    /// Detaches the top mount at `target` (EINVAL: nothing is mounted there).
    fn unmount(&self, target: &Path) -> nix::Result<()>;
    /// Whether `path` is the root of a mount.
    fn is_mount_point(&self, path: &Path) -> bool;
    /// Changes the owner of `path` (a `None` id is left alone).
    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> std::io::Result<()>;
    /// The text of this process's mountinfo.
    fn mountinfo(&self) -> std::io::Result<String>;
    /// Whether the mount at `path` or its filesystem is read-only (statfs's `ST_RDONLY`).
    fn is_read_only(&self, path: &Path) -> std::io::Result<bool>;
    /// The cgroup hierarchies mounted in this mount namespace.
    fn cgroup_hierarchies(&self) -> Vec<Hierarchy>;

    /// Arms SIGKILL as this process's parent-death signal.
    fn kill_with_parent(&self) -> nix::Result<()>;
    /// Sets the real, effective and saved gid.
    fn setresgid(&self, gid: u32) -> nix::Result<()>;
    /// Empties the supplementary groups.
    fn clear_groups(&self) -> nix::Result<()>;
    /// Sets the real, effective and saved uid.
    fn setresuid(&self, uid: u32) -> nix::Result<()>;
    /// Sets whether this process is dumpable.
    fn set_dumpable(&self, dumpable: bool) -> nix::Result<()>;
    /// Brings up `lo` of this network namespace (which gives it 127.0.0.1 and ::1): the job of
    /// CNI's `loopback` plugin, without running a plugin per pod.
    fn loopback_up(&self) -> nix::Result<()>;
    /// Writes `value` to the file at `path` (a sysctl).
    fn write(&self, path: &Path, value: &str) -> std::io::Result<()>;
    /// Makes every mount of this mount namespace a slave of its peers.
    fn make_mounts_slaves(&self) -> nix::Result<()>;
    /// Sets the hostname (of this UTS namespace).
    fn sethostname(&self, name: &str) -> nix::Result<()>;
    /// Makes an empty read-only tmpfs this process's root and detaches the old root.
    fn pivot_to_empty_root(&self) -> nix::Result<()>;
    /// Empties every capability set (bounding and ambient included).
    fn drop_capabilities(&self) -> Result<(), crate::capabilities::SetError>;
    /// Sets no_new_privs.
    fn set_no_new_privs(&self) -> nix::Result<()>;
}

/// The calls made on this host.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Linux;

/// What this monitor has learnt of overlayfs and detached layers: unknown, or one of the two
/// answers below.
static DETACHED_LAYERS: std::sync::atomic::AtomicU8 = std::sync::atomic::AtomicU8::new(0);
const DETACHED_WORKS: u8 = 1;
const DETACHED_REFUSED: u8 = 2;

impl Sys for Linux {
    fn bind(&self, source: &Path, target: &Path, recursive: bool) -> nix::Result<()> {
        let flags = if recursive {
            MsFlags::MS_BIND | MsFlags::MS_REC
        } else {
            MsFlags::MS_BIND
        };
        nix::mount::mount(Some(source), target, None::<&str>, flags, None::<&str>)
    }

    fn set_propagation(&self, target: &Path, propagation: MsFlags) -> nix::Result<()> {
        nix::mount::mount(
            None::<&str>,
            target,
            None::<&str>,
            propagation | MsFlags::MS_REC,
            None::<&str>,
        )
    }

    fn mount_tmpfs(
        &self,
        source: &str,
        target: &Path,
        flags: MsFlags,
        options: &str,
    ) -> nix::Result<()> {
        nix::mount::mount(Some(source), target, Some("tmpfs"), flags, Some(options))
    }

    fn mount_overlay(
        &self,
        lowers: &[std::path::PathBuf],
        options: &[(&str, &std::ffi::OsStr)],
        target: &Path,
    ) -> Result<bool, OverlayError> {
        let Some(names) = crate::lowers::short_names(lowers) else {
            return overlay_fs(lowers, lowers, options, target);
        };
        let dir = crate::lowers::dir_for(target);
        // Short names only speed up later reads of the mount table: without them, full ones.
        let unnamed = |e: std::io::Error| {
            crate::log(format_args!(
                "cannot name layers in {}: {e}; the overlay gets their full names",
                dir.display()
            ));
            overlay_fs(lowers, lowers, options, target)
        };
        let aliases = match crate::lowers::Aliases::make(dir.clone(), lowers, &names) {
            Ok(aliases) => aliases,
            Err(e) => return unnamed(e),
        };
        // `in_dir` fails only before the mount is tried.
        crate::lowers::in_dir(aliases.dir(), || {
            overlay_fs(&names, lowers, options, target)
        })
        .unwrap_or_else(unnamed)
    }

    fn mount_overlay_classic(&self, target: &Path, options: &str) -> nix::Result<()> {
        nix::mount::mount(
            Some("overlay"),
            target,
            Some("overlay"),
            MsFlags::empty(),
            Some(options),
        )
    }

    fn open_userns(&self, pid: i32) -> std::io::Result<OwnedFd> {
        std::fs::File::open(format!("/proc/{pid}/ns/user")).map(OwnedFd::from)
    }

    fn idmapped_clone(
        &self,
        source: &Path,
        userns: &OwnedFd,
        attrs: MountAttrFlags,
        target: &Path,
    ) -> Result<(), IdmapError> {
        let tree = self.idmapped_detached(source, userns, attrs)?;
        mountapi::attach(&tree, target).map_err(IdmapError::Attach)
    }

    fn idmapped_detached(
        &self,
        source: &Path,
        userns: &OwnedFd,
        attrs: MountAttrFlags,
    ) -> Result<OwnedFd, IdmapError> {
        let tree = mountapi::clone_tree(source).map_err(IdmapError::Clone)?;
        mountapi::idmap(&tree, userns, attrs).map_err(IdmapError::Idmap)?;
        Ok(tree)
    }

    fn detached_layers(&self) -> Option<bool> {
        match DETACHED_LAYERS.load(std::sync::atomic::Ordering::Relaxed) {
            DETACHED_WORKS => Some(true),
            DETACHED_REFUSED => Some(false),
            _ => None,
        }
    }

    fn set_detached_layers(&self, works: bool) {
        let value = if works {
            DETACHED_WORKS
        } else {
            DETACHED_REFUSED
        };
        DETACHED_LAYERS.store(value, std::sync::atomic::Ordering::Relaxed);
    }

    fn set_recursive(&self, target: &Path, attrs: MountAttrFlags) -> Result<(), CallError> {
        mountapi::set_recursive(target, attrs)
    }

    fn unmount(&self, target: &Path) -> nix::Result<()> {
        nix::mount::umount2(target, MntFlags::MNT_DETACH)
    }

    fn is_mount_point(&self, path: &Path) -> bool {
        mountapi::is_mount_point(path)
    }

    fn chown(&self, path: &Path, uid: Option<u32>, gid: Option<u32>) -> std::io::Result<()> {
        std::os::unix::fs::chown(path, uid, gid)
    }

    fn mountinfo(&self) -> std::io::Result<String> {
        crius_proto::mountinfo::read_self()
    }

    fn is_read_only(&self, path: &Path) -> std::io::Result<bool> {
        let st = nix::sys::statvfs::statvfs(path)?;
        Ok(st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
    }

    fn cgroup_hierarchies(&self) -> Vec<Hierarchy> {
        crate::cgroup::hierarchies()
    }

    fn kill_with_parent(&self) -> nix::Result<()> {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
    }

    fn setresgid(&self, gid: u32) -> nix::Result<()> {
        let gid = nix::unistd::Gid::from_raw(gid);
        nix::unistd::setresgid(gid, gid, gid)
    }

    fn clear_groups(&self) -> nix::Result<()> {
        nix::unistd::setgroups(&[])
    }

    fn setresuid(&self, uid: u32) -> nix::Result<()> {
        let uid = nix::unistd::Uid::from_raw(uid);
        nix::unistd::setresuid(uid, uid, uid)
    }

    fn set_dumpable(&self, dumpable: bool) -> nix::Result<()> {
        nix::sys::prctl::set_dumpable(dumpable)
    }

    fn loopback_up(&self) -> nix::Result<()> {
        use std::os::fd::AsRawFd;
        let socket = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // SAFETY: ifreq is plain data, for which all zeroes is a valid value.
        let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
        for (to, from) in request.ifr_name.iter_mut().zip(b"lo\0") {
            *to = libc::c_char::from_ne_bytes([*from]);
        }
        // SAFETY: SIOCGIFFLAGS reads the name from `request` and writes its flags into it.
        if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) } < 0 {
            return Err(nix::Error::last());
        }
        // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
        unsafe {
            request.ifr_ifru.ifru_flags |= libc::c_short::try_from(libc::IFF_UP).unwrap_or(1);
        }
        // SAFETY: SIOCSIFFLAGS only reads `request`.
        if unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS, &request) } < 0 {
            return Err(nix::Error::last());
        }
        Ok(())
    }

    fn write(&self, path: &Path, value: &str) -> std::io::Result<()> {
        std::fs::write(path, value)
    }

    fn make_mounts_slaves(&self) -> nix::Result<()> {
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_SLAVE,
            None::<&str>,
        )
    }

    fn sethostname(&self, name: &str) -> nix::Result<()> {
        nix::unistd::sethostname(name)
    }

    fn pivot_to_empty_root(&self) -> nix::Result<()> {
        let base = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        // Any existing directory serves as the mount point; /tmp exists on every host.
        let point = "/tmp";
        nix::mount::mount(
            Some("tmpfs"),
            point,
            Some("tmpfs"),
            base,
            Some("size=4k,mode=0555"),
        )?;
        nix::unistd::chdir(point)?;
        // pivot_root(".", "."): the old root ends up stacked on the new one, then is detached.
        nix::unistd::pivot_root(".", ".")?;
        nix::mount::umount2(".", MntFlags::MNT_DETACH)?;
        nix::unistd::chdir("/")?;
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            base | MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY,
            None::<&str>,
        )
    }

    fn drop_capabilities(&self) -> Result<(), crate::capabilities::SetError> {
        // Bounding, ambient, then the effective, permitted and inheritable sets.
        crate::capabilities::drop_bounding_except(0);
        crate::capabilities::clear_ambient();
        crate::capabilities::set(0)
    }

    fn set_no_new_privs(&self) -> nix::Result<()> {
        nix::sys::prctl::set_no_new_privs()
    }
}

/// Mounts overlayfs with `given[i]` as the name of layer `lowers[i]` (bottom to top; the same
/// paths, or names relative to the working directory) and `options` at `target`. `Ok(false)`
/// when the kernel lacks `lowerdir+` (nothing is mounted then).
fn overlay_fs<N: AsRef<std::ffi::OsStr>>(
    given: &[N],
    lowers: &[std::path::PathBuf],
    options: &[(&str, &std::ffi::OsStr)],
    target: &Path,
) -> Result<bool, OverlayError> {
    use rustix::mount::{
        FsMountFlags, FsOpenFlags, MoveMountFlags, fsconfig_create, fsconfig_set_string, fsmount,
        fsopen, move_mount,
    };
    let failed = |step: String, e: rustix::io::Errno| OverlayError {
        step,
        source: nix::errno::Errno::from_raw(e.raw_os_error()),
    };
    let fs =
        fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| failed("fsopen".into(), e))?;
    for (i, (name, lower)) in given.iter().zip(lowers).enumerate().rev() {
        match fsconfig_set_string(&fs, "lowerdir+", name.as_ref()) {
            Ok(()) => {}
            // The first layer given: a kernel without `lowerdir+` refuses the key.
            Err(rustix::io::Errno::INVAL) if i + 1 == lowers.len() => return Ok(false),
            Err(e) => return Err(failed(format!("lowerdir+ {}", lower.display()), e)),
        }
    }
    for (key, value) in options {
        fsconfig_set_string(&fs, *key, *value).map_err(|e| failed((*key).to_owned(), e))?;
    }
    fsconfig_create(&fs).map_err(|e| failed("create".into(), e))?;
    let mount = fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|e| failed("fsmount".into(), e))?;
    move_mount(
        &mount,
        "",
        rustix::fs::CWD,
        target,
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| failed("move_mount".into(), e))?;
    Ok(true)
}

#[cfg(test)]
pub(crate) mod fake {
    //! A recording [`Sys`]: mounts are entries of a table (the directories they sit on are
    //! real, in a temporary directory), every call is logged, and one call can be made to fail.

    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, MutexGuard};

    use super::*;

    /// A value behind a lock, read and written like a `Cell` or `RefCell` (the fake is shared by
    /// the threads of a staging).
    #[derive(Debug, Default)]
    pub(crate) struct Shared<T>(Mutex<T>);

    impl<T> Shared<T> {
        /// `value`, shared.
        pub(crate) fn new(value: T) -> Self {
            Self(Mutex::new(value))
        }

        /// The value, locked (for reading and writing).
        pub(crate) fn borrow(&self) -> MutexGuard<'_, T> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        /// Replaces the value.
        pub(crate) fn set(&self, value: T) {
            *self.borrow() = value;
        }
    }

    impl<T: Default> Shared<T> {
        /// The value, leaving the default in its place.
        pub(crate) fn take(&self) -> T {
            std::mem::take(&mut *self.borrow())
        }
    }

    impl<T: Copy> Shared<T> {
        /// A copy of the value.
        pub(crate) fn get(&self) -> T {
            *self.borrow()
        }
    }

    /// One mount of the fake table.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) struct FakeMount {
        /// The mount point.
        pub(crate) target: PathBuf,
        /// `bind`, `tmpfs`, `overlay` or `idmapped`.
        pub(crate) kind: &'static str,
        /// Read-only.
        pub(crate) read_only: bool,
    }

    /// The recording fake.
    #[derive(Debug, Default)]
    pub(crate) struct Fake {
        /// Every call, in order (`call target`).
        pub(crate) calls: Shared<Vec<String>>,
        /// The mount table, oldest first.
        pub(crate) mounts: Shared<Vec<FakeMount>>,
        /// The index (in `calls`) of the call that fails with EPERM.
        pub(crate) fail_at: Shared<Option<usize>>,
        /// The call that fails with EPERM, by its text and how many equal calls came before it
        /// (for steps that run on several threads, whose calls interleave).
        pub(crate) fail_on: Shared<Option<(String, usize)>>,
        /// What [`Sys::cgroup_hierarchies`] answers.
        pub(crate) hierarchies: Vec<Hierarchy>,
        /// Overlays come out read-only (as when their upper dir is unusable).
        pub(crate) read_only_overlays: bool,
        /// What [`Sys::detached_layers`] answers (`None`: not known yet).
        pub(crate) detached: Shared<Option<bool>>,
        /// Overlays of layers reached through a detached mount fail (as before Linux 6.15).
        pub(crate) refuse_detached: bool,
    }

    impl Fake {
        /// Logs a call; Err when it is the one to fail.
        fn call(&self, name: &str, path: &Path) -> nix::Result<()> {
            let mut calls = self.calls.borrow();
            let index = calls.len();
            let call = format!("{name} {}", path.display());
            let before = calls.iter().filter(|c| **c == call).count();
            let fails = self.fail_at.get() == Some(index)
                || self
                    .fail_on
                    .borrow()
                    .as_ref()
                    .is_some_and(|(text, n)| *text == call && *n == before);
            calls.push(call);
            if fails {
                return Err(nix::Error::EPERM);
            }
            Ok(())
        }

        fn mount(&self, target: &Path, kind: &'static str) -> nix::Result<()> {
            if !target.exists() {
                return Err(nix::Error::ENOENT);
            }
            self.mounts.borrow().push(FakeMount {
                target: target.to_owned(),
                kind,
                read_only: false,
            });
            Ok(())
        }

        /// The mounts at or below `dir`.
        pub(crate) fn mounts_below(&self, dir: &Path) -> Vec<FakeMount> {
            self.mounts
                .borrow()
                .iter()
                .filter(|m| m.target.starts_with(dir))
                .cloned()
                .collect()
        }
    }

    fn call_error(call: &'static str) -> impl FnOnce(nix::Error) -> CallError {
        move |source| CallError { call, source }
    }

    impl Sys for Fake {
        fn bind(&self, _source: &Path, target: &Path, _recursive: bool) -> nix::Result<()> {
            self.call("bind", target)?;
            self.mount(target, "bind")
        }

        fn set_propagation(&self, target: &Path, _propagation: MsFlags) -> nix::Result<()> {
            self.call("propagation", target)?;
            if !self.is_mount_point(target) {
                return Err(nix::Error::EINVAL);
            }
            Ok(())
        }

        fn mount_tmpfs(
            &self,
            _source: &str,
            target: &Path,
            _flags: MsFlags,
            _options: &str,
        ) -> nix::Result<()> {
            self.call("tmpfs", target)?;
            self.mount(target, "tmpfs")
        }

        fn mount_overlay(
            &self,
            lowers: &[PathBuf],
            _options: &[(&str, &std::ffi::OsStr)],
            target: &Path,
        ) -> Result<bool, OverlayError> {
            let failed = |source| OverlayError {
                step: "fsmount".into(),
                source,
            };
            self.call("overlay", target).map_err(failed)?;
            if self.refuse_detached && lowers.iter().any(|l| l.starts_with("/proc/self/fd")) {
                return Err(failed(nix::Error::EINVAL));
            }
            self.mount(target, "overlay").map_err(failed)?;
            if let Some(m) = self.mounts.borrow().last_mut() {
                m.read_only = self.read_only_overlays;
            }
            Ok(true)
        }

        fn mount_overlay_classic(&self, target: &Path, _options: &str) -> nix::Result<()> {
            self.call("overlay-classic", target)?;
            self.mount(target, "overlay")
        }

        fn open_userns(&self, pid: i32) -> std::io::Result<OwnedFd> {
            self.call("open-userns", Path::new(&format!("/proc/{pid}/ns/user")))?;
            std::fs::File::open("/dev/null").map(OwnedFd::from)
        }

        fn idmapped_clone(
            &self,
            source: &Path,
            userns: &OwnedFd,
            attrs: MountAttrFlags,
            target: &Path,
        ) -> Result<(), IdmapError> {
            let _tree = self.idmapped_detached(source, userns, attrs)?;
            self.call("attach", target)
                .and_then(|()| self.mount(target, "idmapped"))
                .map_err(|e| IdmapError::Attach(call_error("move_mount")(e)))?;
            if attrs.contains(MountAttrFlags::MOUNT_ATTR_RDONLY)
                && let Some(m) = self.mounts.borrow().last_mut()
            {
                m.read_only = true;
            }
            Ok(())
        }

        fn idmapped_detached(
            &self,
            source: &Path,
            _userns: &OwnedFd,
            _attrs: MountAttrFlags,
        ) -> Result<OwnedFd, IdmapError> {
            self.call("open_tree", source)
                .map_err(|e| IdmapError::Clone(call_error("open_tree")(e)))?;
            self.call("idmap", source)
                .map_err(|e| IdmapError::Idmap(call_error("mount_setattr")(e)))?;
            std::fs::File::open("/dev/null")
                .map(OwnedFd::from)
                .map_err(|e| {
                    IdmapError::Clone(call_error("open_tree")(nix::Error::from_raw(
                        e.raw_os_error().unwrap_or(0),
                    )))
                })
        }

        fn detached_layers(&self) -> Option<bool> {
            self.detached.get()
        }

        fn set_detached_layers(&self, works: bool) {
            self.detached.set(Some(works));
        }

        fn set_recursive(&self, target: &Path, attrs: MountAttrFlags) -> Result<(), CallError> {
            self.call("setattr", target)
                .map_err(call_error("mount_setattr"))?;
            if !self.is_mount_point(target) {
                return Err(call_error("mount_setattr")(nix::Error::EINVAL));
            }
            if attrs.contains(MountAttrFlags::MOUNT_ATTR_RDONLY) {
                for m in self.mounts.borrow().iter_mut() {
                    if m.target.starts_with(target) {
                        m.read_only = true;
                    }
                }
            }
            Ok(())
        }

        /// A lazy unmount: the mount and every mount beneath it go; what was made on a
        /// tmpfs goes with it.
        fn unmount(&self, target: &Path) -> nix::Result<()> {
            self.call("unmount", target)?;
            let mut mounts = self.mounts.borrow();
            let Some(i) = mounts.iter().rposition(|m| m.target == target) else {
                return Err(nix::Error::EINVAL);
            };
            let top = mounts.remove(i);
            let mut index = 0;
            mounts.retain(|m| {
                index += 1;
                index <= i || !m.target.starts_with(target)
            });
            if top.kind == "tmpfs" {
                let _ = crius_proto::tree::remove(target);
                let _ = std::fs::create_dir(target);
            }
            Ok(())
        }

        fn is_mount_point(&self, path: &Path) -> bool {
            self.mounts.borrow().iter().any(|m| m.target == path)
        }

        fn chown(&self, path: &Path, _uid: Option<u32>, _gid: Option<u32>) -> std::io::Result<()> {
            self.call("chown", path)?;
            if !path.exists() {
                return Err(std::io::ErrorKind::NotFound.into());
            }
            Ok(())
        }

        fn mountinfo(&self) -> std::io::Result<String> {
            self.call("mountinfo", Path::new("/proc/self/mountinfo"))?;
            let mut text = String::new();
            for (i, m) in self.mounts.borrow().iter().enumerate() {
                let ro = if m.read_only { "ro" } else { "rw" };
                text.push_str(&format!(
                    "{} 1 0:{} / {} {ro},relatime - {} {} rw\n",
                    i + 100,
                    i + 100,
                    m.target.display(),
                    m.kind,
                    m.kind
                ));
            }
            Ok(text)
        }

        fn is_read_only(&self, path: &Path) -> std::io::Result<bool> {
            self.call("statfs", path)?;
            Ok(self
                .mounts
                .borrow()
                .iter()
                .rev()
                .find(|m| path.starts_with(&m.target))
                .is_some_and(|m| m.read_only))
        }

        fn cgroup_hierarchies(&self) -> Vec<Hierarchy> {
            self.hierarchies.clone()
        }

        fn kill_with_parent(&self) -> nix::Result<()> {
            self.call("pdeathsig", Path::new("KILL"))
        }

        fn setresgid(&self, gid: u32) -> nix::Result<()> {
            self.call("setresgid", Path::new(&gid.to_string()))
        }

        fn clear_groups(&self) -> nix::Result<()> {
            self.call("setgroups", Path::new("[]"))
        }

        fn setresuid(&self, uid: u32) -> nix::Result<()> {
            self.call("setresuid", Path::new(&uid.to_string()))
        }

        fn set_dumpable(&self, dumpable: bool) -> nix::Result<()> {
            self.call("dumpable", Path::new(&dumpable.to_string()))
        }

        fn loopback_up(&self) -> nix::Result<()> {
            self.call("link-up", Path::new("lo"))
        }

        fn write(&self, path: &Path, value: &str) -> std::io::Result<()> {
            self.call("write", &path.join(value))?;
            Ok(())
        }

        fn make_mounts_slaves(&self) -> nix::Result<()> {
            self.call("slave", Path::new("/"))
        }

        fn sethostname(&self, name: &str) -> nix::Result<()> {
            self.call("hostname", Path::new(name))
        }

        fn pivot_to_empty_root(&self) -> nix::Result<()> {
            self.call("pivot", Path::new("/tmp"))
        }

        fn drop_capabilities(&self) -> Result<(), crate::capabilities::SetError> {
            self.call("capabilities", Path::new("0"))
                .map_err(|e| crate::capabilities::SetError::fake(e.desc()))
        }

        fn set_no_new_privs(&self) -> nix::Result<()> {
            self.call("no_new_privs", Path::new("1"))
        }
    }
}
