//! Container root filesystems without chown: the pod's idmapped view of the layer store and an
//! overlay per container whose upper and work dirs sit on the (not idmapped) pod directory.

use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crius_proto::mountinfo;
use nix::mount::MsFlags;

use crate::Error;
use crate::mountapi::MountAttrFlags;
use crate::sys::{IdmapError, Sys};

/// Where a user-namespaced pod's idmapped views of its image layers are attached, in the pod
/// directory (one per layer, `layers/<layer dir name>`).
pub(crate) const LAYERS: &str = "layers";

/// Mounts an idmapped, read-only, nosuid, nodev view of each of `layer_dirs` (directories
/// directly beneath `layers_root`) at `<pod dir>/layers/<name>`, mapped into the user namespace
/// of `sandbox_pid`; a layer already mounted for the pod is reused. Returns the views in the
/// order given. Only the layers of the pod's own images are ever visible there, and nothing
/// can change them or gain privileges through them.
pub(crate) fn idmapped_layers(
    sys: &dyn Sys,
    pod_dir: &Path,
    layers_root: &Path,
    layer_dirs: &[PathBuf],
    sandbox_pid: i32,
) -> Result<Vec<PathBuf>, Error> {
    let views = pod_dir.join(LAYERS);
    make_dir(&views, 0o700, true)?;
    let ns = open_userns(sys, sandbox_pid)?;
    let mut out = Vec::with_capacity(layer_dirs.len());
    for layer in layer_dirs {
        let target = views.join(layer_name(layer, layers_root)?);
        if !sys.is_mount_point(&target) {
            make_dir(&target, 0o700, true)?;
            sys.idmapped_clone(
                layer,
                &ns,
                MountAttrFlags::MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID_NODEV,
                &target,
            )
            .map_err(|e| idmap_error(e, "layer", layer, &target))?;
        }
        out.push(target);
    }
    Ok(out)
}

/// The name of `layer`, which must be a directory directly beneath `layers_root`.
fn layer_name<'a>(layer: &'a Path, layers_root: &Path) -> Result<&'a std::ffi::OsStr, Error> {
    match (
        layer
            .strip_prefix(layers_root)
            .map(|rel| rel.components().count()),
        layer.file_name(),
    ) {
        (Ok(1), Some(name)) => Ok(name),
        _ => Err(Error::LayerOutsideStore {
            layer: layer.to_owned(),
            root: layers_root.to_owned(),
        }),
    }
}

/// A detached clone of the layer store, idmapped into the pod's user namespace, read-only,
/// nosuid and nodev. It is attached nowhere: only this process reaches it, through its
/// descriptor, and an overlay stacked on it keeps private clones of its layers, so nothing of
/// it is left on the host once it is dropped.
struct MappedStore {
    fd: std::os::fd::OwnedFd,
    root: PathBuf,
}

impl MappedStore {
    fn open(sys: &dyn Sys, layers_root: &Path, sandbox_pid: i32) -> Result<Self, Error> {
        let ns = open_userns(sys, sandbox_pid)?;
        let fd = sys
            .idmapped_detached(
                layers_root,
                &ns,
                MountAttrFlags::MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID_NODEV,
            )
            .map_err(|e| idmap_error(e, "layer", layers_root, layers_root))?;
        Ok(MappedStore {
            fd,
            root: layers_root.to_owned(),
        })
    }

    /// Each of `layer_dirs` (directories directly beneath the store's root) through the
    /// store's descriptor.
    fn lowers(&self, layer_dirs: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
        let base = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        layer_dirs
            .iter()
            .map(|layer| Ok(base.join(layer_name(layer, &self.root)?)))
            .collect()
    }
}

/// Mounts a container's rootfs as [`mount_overlay`] does, over `layer_dirs` (beneath
/// `layers_root`) mapped into the user namespace of `sandbox_pid`: stacked from one detached
/// idmapped clone of the layer store where overlayfs takes layers from a detached mount
/// (Linux 6.15+; nothing is attached on the host for them), else from the pod's attached
/// views of each layer ([`idmapped_layers`]). The first rootfs a monitor mounts tells which.
#[allow(clippy::too_many_arguments)]
pub(crate) fn mount_idmapped_overlay(
    sys: &dyn Sys,
    pod_dir: &Path,
    dir: &Path,
    writable: &Path,
    layers_root: &Path,
    layer_dirs: &[PathBuf],
    sandbox_pid: i32,
    owner: (u32, u32),
) -> Result<Rootfs, Error> {
    let dirs = overlay_dirs(sys, dir, writable, layer_dirs, owner)?;
    if sys.detached_layers() != Some(false) {
        let store = MappedStore::open(sys, layers_root, sandbox_pid)?;
        match mount_overlay_on(sys, &store.lowers(layer_dirs)?, &dirs) {
            Ok(rootfs) => {
                sys.set_detached_layers(true);
                return Ok(rootfs);
            }
            Err(e) if sys.detached_layers().is_none() => {
                crate::log(format_args!(
                    "overlayfs does not stack layers of a detached mount here ({e}); the pod's \
                     layers are mounted as views"
                ));
                sys.set_detached_layers(false);
            }
            Err(e) => return Err(e),
        }
    }
    let lowers = idmapped_layers(sys, pod_dir, layers_root, layer_dirs, sandbox_pid)?;
    mount_overlay_on(sys, &lowers, &dirs)
}

/// The lower layers of an image volume mapped into the user namespace of `sandbox_pid`, and
/// what must stay open until its overlay is mounted: through the detached store where a
/// rootfs has shown that overlayfs stacks them, else the pod's attached views.
pub(crate) fn idmapped_lowers(
    sys: &dyn Sys,
    pod_dir: &Path,
    layers_root: &Path,
    layer_dirs: &[PathBuf],
    sandbox_pid: i32,
) -> Result<(Vec<PathBuf>, Option<impl Sized>), Error> {
    if sys.detached_layers() == Some(true) {
        let store = MappedStore::open(sys, layers_root, sandbox_pid)?;
        let lowers = store.lowers(layer_dirs)?;
        return Ok((lowers, Some(store)));
    }
    let lowers = idmapped_layers(sys, pod_dir, layers_root, layer_dirs, sandbox_pid)?;
    Ok((lowers, None))
}

/// Unmounts every layer view of the pod and removes `<pod dir>/layers`.
pub(crate) fn release_layers(sys: &dyn Sys, pod_dir: &Path) -> Result<(), Error> {
    let views = pod_dir.join(LAYERS);
    // A pod made before views were per layer has one view of the whole store here.
    while sys.unmount(&views).is_ok() {}
    if let Ok(entries) = std::fs::read_dir(&views) {
        for entry in entries.flatten() {
            crate::mounts::release(sys, &entry.path())?;
        }
    }
    crate::mounts::release(sys, &views)
}

/// Creates the directory `path` with `mode` (an existing one is fine when `existing_ok`).
fn make_dir(path: &Path, mode: u32, existing_ok: bool) -> Result<(), Error> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => Ok(()),
        Err(e) if existing_ok && e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(Error::io(format!("cannot create {}", path.display()))(e)),
    }
}

/// The user namespace of the sandbox process `sandbox_pid`.
fn open_userns(sys: &dyn Sys, sandbox_pid: i32) -> Result<std::os::fd::OwnedFd, Error> {
    sys.open_userns(sandbox_pid).map_err(Error::io(format!(
        "cannot open /proc/{sandbox_pid}/ns/user"
    )))
}

/// The error of an idmapped clone of `source` (a `layer` or a `mount`) attached at `target`.
fn idmap_error(e: IdmapError, what: &'static str, source: &Path, target: &Path) -> Error {
    match e {
        IdmapError::Clone(e) => Error::CloneTree {
            what,
            path: source.to_owned(),
            source: e,
        },
        IdmapError::Idmap(e) if what == "layer" => Error::IdmapLayer {
            layer: source.to_owned(),
            source: e,
        },
        IdmapError::Idmap(e) => Error::IdmapMount {
            path: source.to_owned(),
            source: e,
        },
        IdmapError::Attach(e) => Error::Sys {
            what: format!("cannot attach a mount at {}", target.display()),
            source: e.source,
        },
    }
}

/// Makes an idmapped clone of `source` (a file or directory) with the user namespace of
/// `sandbox_pid`, attached at `<dir>/mounts/<name>`; returns that path. A bind of it keeps the
/// mapping, so libcontainer gets it as a plain bind source.
pub(crate) fn idmapped_bind(
    sys: &dyn Sys,
    dir: &Path,
    name: &str,
    source: &Path,
    sandbox_pid: i32,
) -> Result<PathBuf, Error> {
    let target = mount_point(dir, name, source)?;
    let ns = open_userns(sys, sandbox_pid)?;
    sys.idmapped_clone(source, &ns, MountAttrFlags::empty(), &target)
        .map_err(|e| idmap_error(e, "mount", source, &target))?;
    Ok(target)
}

/// Binds `source` (recursively) at `<dir>/mounts/<name>` with the propagation `propagation`
/// (`rprivate`, `rslave`, `rshared`) and returns that path. libcontainer binds it into the
/// container, and a bind takes the propagation of its source (libcontainer does not apply
/// propagation options to binds itself).
pub(crate) fn propagation_bind(
    sys: &dyn Sys,
    dir: &Path,
    name: &str,
    source: &Path,
    propagation: &str,
) -> Result<PathBuf, Error> {
    let target = mount_point(dir, name, source)?;
    sys.bind(source, &target, true)
        .map_err(Error::sys(format!("cannot bind {}", source.display())))?;
    let flag = match propagation {
        "rslave" => MsFlags::MS_SLAVE,
        "rshared" => MsFlags::MS_SHARED,
        _ => MsFlags::MS_PRIVATE,
    };
    sys.set_propagation(&target, flag)
        .map_err(Error::sys(format!(
            "cannot set the propagation {propagation} of {}",
            source.display()
        )))?;
    Ok(target)
}

/// `MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV`.
pub(crate) const MOUNT_ATTR_NOSUID_NODEV: MountAttrFlags =
    MountAttrFlags::MOUNT_ATTR_NOSUID.union(MountAttrFlags::MOUNT_ATTR_NODEV);
/// `MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC`.
pub(crate) const MOUNT_ATTR_NOSUID_NODEV_NOEXEC: MountAttrFlags =
    MOUNT_ATTR_NOSUID_NODEV.union(MountAttrFlags::MOUNT_ATTR_NOEXEC);

/// Sets `attrs` (at least read-only) on the mount tree at `target`, every submount included.
pub(crate) fn make_recursive_read_only(
    sys: &dyn Sys,
    target: &Path,
    attrs: MountAttrFlags,
) -> Result<(), Error> {
    sys.set_recursive(target, MountAttrFlags::MOUNT_ATTR_RDONLY | attrs)
        .map_err(|e| Error::Sys {
            what: format!("cannot make {} recursively read-only", target.display()),
            source: e.source,
        })
}

/// Makes the mount tree at `path` in the mount namespace of process `pid` read-only (plus
/// `attrs`), every submount included: the monitor enters that namespace for the call and
/// returns to its own.
pub(crate) fn read_only_in(
    sys: &dyn Sys,
    pid: i32,
    path: &Path,
    attrs: MountAttrFlags,
) -> Result<(), Error> {
    use nix::sched::{CloneFlags, setns, unshare};
    // The kernel lets a thread enter a mount namespace only while no other thread shares its
    // filesystem attributes (a `cgroup::Warm` thread that has just been joined may still, for
    // a moment): give this one its own.
    unshare(CloneFlags::CLONE_FS)
        .map_err(Error::sys("cannot unshare the monitor's fs attributes"))?;
    let own = std::fs::File::open("/proc/self/ns/mnt")
        .map_err(Error::io("cannot open the monitor's mount namespace"))?;
    let ns_path = format!("/proc/{pid}/ns/mnt");
    let theirs =
        std::fs::File::open(&ns_path).map_err(Error::io(format!("cannot open {ns_path}")))?;
    setns(&theirs, CloneFlags::CLONE_NEWNS)
        .map_err(Error::sys(format!("cannot enter {ns_path}")))?;
    let result = make_recursive_read_only(sys, path, attrs);
    if let Err(e) = setns(&own, CloneFlags::CLONE_NEWNS) {
        // Every later path would resolve in the container: nothing may go on from here.
        crate::log(format_args!(
            "cannot return to the monitor's mount namespace: {e}"
        ));
        std::process::exit(1);
    }
    let _ = std::env::set_current_dir("/");
    result
}

/// Creates the mount point `<dir>/mounts/<name>`, a directory or a file like `source`.
fn mount_point(dir: &Path, name: &str, source: &Path) -> Result<PathBuf, Error> {
    let mounts = dir.join(MOUNTS);
    make_dir(&mounts, 0o700, true)?;
    let target = mounts.join(name);
    let meta = std::fs::metadata(source)
        .map_err(Error::io(format!("cannot stat {}", source.display())))?;
    if meta.is_dir() {
        make_dir(&target, 0o755, false)?;
    } else {
        std::fs::File::create(&target)
            .map_err(Error::io(format!("cannot create {}", target.display())))?;
    }
    Ok(target)
}

/// Mounts an image volume at `<dir>/mounts/<name>`: the overlay of `layers` (bottom to top), or
/// a bind of a single layer, read-only, nosuid and nodev. Returns the path the container binds:
/// the mount's root, or `sub_path` resolved beneath it (symlinks may not leave the image).
pub(crate) fn image_volume(
    sys: &dyn Sys,
    dir: &Path,
    name: &str,
    layers: &[PathBuf],
    sub_path: &str,
) -> Result<PathBuf, Error> {
    let target = dir.join(MOUNTS).join(name);
    make_dir(&target, 0o755, false)?;
    match layers {
        [] => {
            return Err(Error::NoLayers {
                what: "the image volume",
            });
        }
        [only] => {
            sys.bind(only, &target, false)
                .map_err(Error::sys(format!("cannot bind {}", only.display())))?;
        }
        // A read-only overlay: lower layers only (two at least without an upper dir).
        _ => {
            if !fs_overlay(sys, layers, &[], &target, "the image volume")? {
                return Err(Error::NoLowerdirPlus { target });
            }
        }
    }
    let result = (|| {
        make_recursive_read_only(sys, &target, MOUNT_ATTR_NOSUID_NODEV)?;
        if sub_path.is_empty() {
            return Ok(target.clone());
        }
        let root = std::fs::File::open(&target)
            .map_err(Error::io(format!("cannot open {}", target.display())))?;
        let fd = crate::resolve::openat2(
            std::os::fd::AsFd::as_fd(&root),
            sub_path,
            libc::O_PATH,
            0,
            crate::resolve::RESOLVE_BENEATH | crate::resolve::RESOLVE_NO_MAGICLINKS,
        )
        .map_err(|source| Error::SubPath {
            sub_path: sub_path.to_owned(),
            source,
        })?;
        // The image is read-only: the path the descriptor names stays what was resolved.
        std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .map_err(Error::io(format!("cannot resolve {sub_path}")))
    })();
    if result.is_err() {
        let _ = crate::mounts::release(sys, &target);
    }
    result
}

/// The name of a container's view of its own cgroups on a cgroup v1 (or hybrid) node, in its
/// `mounts` directory: a tmpfs with, per hierarchy, a bind of the container's cgroup directory
/// under the hierarchy's mount name (and the host's alias symlinks), bound at `/sys/fs/cgroup`
/// and released once the container has its own copy.
pub(crate) const CGROUP_VIEW: &str = "volume-cgroup";

/// Builds [`CGROUP_VIEW`] in `dir/mounts` from the container's cgroup directories (`dirs`, one per
/// hierarchy, already made), read-only in every submount unless `writable`. Returns its path.
pub(crate) fn cgroup_v1_view(
    sys: &dyn Sys,
    dir: &Path,
    dirs: &[(crate::cgroup::Hierarchy, PathBuf)],
    writable: bool,
) -> Result<PathBuf, Error> {
    let target = dir.join(MOUNTS).join(CGROUP_VIEW);
    make_dir(&target, 0o755, false)?;
    sys.mount_tmpfs(
        "tmpfs",
        &target,
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
        "mode=0755,size=64k",
    )
    .map_err(Error::sys(format!(
        "cannot mount a tmpfs at {}",
        target.display()
    )))?;
    let result = (|| {
        for (h, cgroup) in dirs {
            let Some(name) = h.mount.file_name() else {
                continue;
            };
            let point = target.join(name);
            make_dir(&point, 0o755, false)?;
            sys.bind(cgroup, &point, false)
                .map_err(Error::sys(format!("cannot bind {}", cgroup.display())))?;
        }
        // The host's aliases (`cpu -> cpu,cpuacct`) for the hierarchies bound above.
        if let Some(root) = dirs.first().and_then(|(h, _)| h.mount.parent())
            && let Ok(entries) = std::fs::read_dir(root)
        {
            for entry in entries.flatten() {
                let Ok(link) = std::fs::read_link(entry.path()) else {
                    continue;
                };
                if link.components().count() == 1 && target.join(&link).is_dir() {
                    let _ = std::os::unix::fs::symlink(&link, target.join(entry.file_name()));
                }
            }
        }
        if !writable {
            make_recursive_read_only(sys, &target, MOUNT_ATTR_NOSUID_NODEV_NOEXEC)?;
        }
        Ok(target.clone())
    })();
    if result.is_err() {
        let _ = crate::mounts::release(sys, &target);
    }
    result
}

/// The name of a host-network container's read-only copy of the host's `/sys`, in its
/// `mounts` directory (released once the container has its own copy, like volumes).
pub(crate) const HOST_SYS: &str = "volume-sys";

/// Where a container's idmapped mount sources are attached, in its directory.
pub(crate) const MOUNTS: &str = "mounts";

/// The directories of one container's root filesystem.
#[derive(Debug, Clone)]
pub(crate) struct Rootfs {
    /// The overlay mount point.
    pub(crate) merged: PathBuf,
}

/// Creates `writable/upper`, `writable/work` (owned by `owner`; `writable` made root-only when
/// missing, with its parents) and mounts the overlay of `lowers` (bottom to top) at
/// `dir/rootfs`; checks that it came out writable.
pub(crate) fn mount_overlay(
    sys: &dyn Sys,
    dir: &Path,
    writable: &Path,
    lowers: &[PathBuf],
    owner: (u32, u32),
) -> Result<Rootfs, Error> {
    let dirs = overlay_dirs(sys, dir, writable, lowers, owner)?;
    mount_overlay_on(sys, lowers, &dirs)
}

/// The upper, work and mount point directories of a container's overlay.
struct OverlayDirs {
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
}

/// Makes the directories of [`mount_overlay`] (refusing an image without `lowers`).
fn overlay_dirs(
    sys: &dyn Sys,
    dir: &Path,
    writable: &Path,
    lowers: &[PathBuf],
    owner: (u32, u32),
) -> Result<OverlayDirs, Error> {
    if lowers.is_empty() {
        return Err(Error::NoLayers { what: "the image" });
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(writable)
        .map_err(Error::io(format!("cannot create {}", writable.display())))?;
    let upper = writable.join("upper");
    let work = writable.join("work");
    let merged = dir.join("rootfs");
    for (path, mode) in [(&upper, 0o755), (&work, 0o700), (&merged, 0o755)] {
        make_dir(path, mode, false)?;
    }
    // Only these directories, made by crius for this container, get the pod root as owner.
    for path in [&upper, &work] {
        sys.chown(path, Some(owner.0), Some(owner.1))
            .map_err(Error::io(format!("cannot chown {}", path.display())))?;
    }
    Ok(OverlayDirs {
        upper,
        work,
        merged,
    })
}

/// Mounts the overlay of `lowers` on `dirs` and checks that it came out writable
/// ([`check_writable`]).
fn mount_overlay_on(
    sys: &dyn Sys,
    lowers: &[PathBuf],
    dirs: &OverlayDirs,
) -> Result<Rootfs, Error> {
    let OverlayDirs {
        upper,
        work,
        merged,
    } = dirs;
    mount_overlay_fs(sys, lowers, upper, work, merged)?;
    if let Err(e) = check_writable(sys, merged) {
        let _ = sys.unmount(merged);
        return Err(e);
    }
    Ok(Rootfs {
        merged: merged.clone(),
    })
}

/// Mounts overlayfs at `merged` through the new mount API, one `lowerdir+` per layer (top
/// first): no limit on the number of layers or the length of their paths (Linux 6.8+). An older
/// kernel gets the classic option string, limited to a page.
fn mount_overlay_fs(
    sys: &dyn Sys,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> Result<(), Error> {
    let options = [
        ("upperdir", upper.as_os_str()),
        ("workdir", work.as_os_str()),
        ("index", "off".as_ref()),
        ("redirect_dir", "off".as_ref()),
        ("metacopy", "off".as_ref()),
    ];
    match fs_overlay(sys, lowers, &options, merged, "the overlay rootfs")? {
        true => Ok(()),
        false => mount_overlay_classic(sys, lowers, upper, work, merged),
    }
}

/// Mounts overlayfs of `lowers` (bottom to top) with `options` at `target` through the new mount
/// API, one `lowerdir+` per layer. `Ok(false)` when the kernel does not know `lowerdir+`
/// (nothing is mounted then); `what` names the mount in errors.
fn fs_overlay(
    sys: &dyn Sys,
    lowers: &[PathBuf],
    options: &[(&str, &std::ffi::OsStr)],
    target: &Path,
    what: &str,
) -> Result<bool, Error> {
    sys.mount_overlay(lowers, options, target)
        .map_err(|e| Error::Sys {
            what: format!("cannot mount {what} at {} ({})", target.display(), e.step),
            source: e.source,
        })
}

/// The overlay as one mount(2) option string (kernels without `lowerdir+`).
fn mount_overlay_classic(
    sys: &dyn Sys,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
    merged: &Path,
) -> Result<(), Error> {
    let lowerdir: Vec<String> = lowers
        .iter()
        .rev()
        .map(|p| escape(&p.to_string_lossy()))
        .collect();
    let options = format!(
        "lowerdir={},upperdir={},workdir={},index=off,redirect_dir=off,metacopy=off",
        lowerdir.join(":"),
        escape(&upper.to_string_lossy()),
        escape(&work.to_string_lossy()),
    );
    sys.mount_overlay_classic(merged, &options)
        .map_err(Error::sys(format!(
            "cannot mount the overlay rootfs at {} ({} layers; this kernel takes them in one \
         page of options only)",
            merged.display(),
            lowers.len()
        )))
}

/// Escapes the characters overlayfs treats specially in its options.
fn escape(path: &str) -> String {
    path.replace('\\', "\\\\")
        .replace(':', "\\:")
        .replace(',', "\\,")
}

/// Fails when the mount at `path` came out read-only (overlayfs falls back to read-only
/// when its upper dir cannot be used, e.g. on an idmapped mount).
pub(crate) fn check_writable(sys: &dyn Sys, path: &Path) -> Result<(), Error> {
    // statfs answers from the mount and its superblock alone; mountinfo, which lists every
    // mount of the node, is read only to explain a refusal.
    let read_only = sys
        .is_read_only(path)
        .map_err(Error::io(format!("cannot statfs {}", path.display())))?;
    if !read_only {
        return Ok(());
    }
    let text = sys
        .mountinfo()
        .map_err(Error::io("cannot read /proc/self/mountinfo"))?;
    let mount = mountinfo::parse(&text)
        .filter(|m| m.mount_point == path)
        .last()
        .ok_or_else(|| Error::NotInMountinfo {
            path: path.to_owned(),
        })?;
    Err(Error::ReadOnlyRootfs {
        path: path.to_owned(),
        mount_options: mount.mount_options.to_owned(),
        super_options: mount.super_options.to_owned(),
    })
}

/// Detaches and removes the host-side staging mounts of a container's volumes
/// (`mounts/volume-N`) once its mount namespace holds its own copies. Left in place they pin
/// the volumes' submounts on the host: a directory the host unmounted a tmpfs from could not
/// be removed (EBUSY) while the container lives.
pub(crate) fn release_volume_staging(sys: &dyn Sys, dir: &Path) -> Result<(), Error> {
    if let Ok(entries) = std::fs::read_dir(dir.join(MOUNTS)) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with("volume-") {
                crate::mounts::release(sys, &entry.path())?;
            }
        }
    }
    Ok(())
}

/// Removes a container's writable layer directory (absent is fine), however deep the container
/// made it. It is never a mount point.
pub(crate) fn remove_writable(dir: &Path) -> Result<(), Error> {
    remove_tree(dir)
}

/// Removes directory tree `dir` (absent is fine) whatever its depth, without following symlinks
/// or emptying a mount point.
fn remove_tree(dir: &Path) -> Result<(), Error> {
    match crius_proto::tree::remove(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.is_not_found() => Ok(()),
        Err(e) => Err(Error::io(format!("cannot remove {}", dir.display()))(
            e.into(),
        )),
    }
}

/// Removes a pod's writable root (every container's writable layer; absent is fine).
pub(crate) fn remove_writable_root(root: Option<&Path>) -> Result<(), Error> {
    root.map_or(Ok(()), remove_writable)
}

/// Unmounts a container's rootfs and idmapped mount sources (absent or unmounted is fine) and
/// removes its directory. Nothing is removed while anything in it is still mounted.
pub(crate) fn remove(sys: &dyn Sys, dir: &Path) -> Result<(), Error> {
    // Every mount is released even when one cannot be; the first error is reported.
    let mut result = crate::mounts::release(sys, &dir.join("rootfs"));
    if let Ok(entries) = std::fs::read_dir(dir.join(MOUNTS)) {
        for entry in entries.flatten() {
            let released = if crate::lowers::is_alias_dir(&entry.file_name()) {
                // Layer names of an image volume's mount, left by a monitor that died in it.
                crius_proto::tree::remove(&entry.path()).map_err(|e| {
                    Error::io(format!("cannot remove {}", entry.path().display()))(e.into())
                })
            } else {
                crate::mounts::release(sys, &entry.path())
            };
            result = result.and(released);
        }
    }
    result?;
    remove_tree(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_container_mount_namespace_is_entered_beside_another_thread() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: entering a mount namespace needs root");
            return;
        }
        // Another thread of this process, alive across the call, as a `cgroup::Warm` thread
        // being joined is.
        let (stop, parked) = std::sync::mpsc::channel::<()>();
        let other = std::thread::spawn(move || {
            let _ = parked.recv();
        });
        let fake = crate::sys::fake::Fake::default();
        let tmp = tempfile::tempdir().unwrap();
        fake.bind(tmp.path(), tmp.path(), false).unwrap();
        let me = i32::try_from(std::process::id()).unwrap();
        let done = read_only_in(&fake, me, tmp.path(), MountAttrFlags::empty());
        let _ = stop.send(());
        other.join().unwrap();
        done.unwrap();
        assert!(
            fake.calls
                .borrow()
                .iter()
                .any(|c| c.starts_with("setattr") && c.contains(&*tmp.path().to_string_lossy())),
            "{:?}",
            fake.calls.borrow()
        );
    }

    #[test]
    fn a_read_only_overlay_is_refused_and_unmounted() {
        let tmp = tempfile::tempdir().unwrap();
        let fake = crate::sys::fake::Fake {
            read_only_overlays: true,
            ..Default::default()
        };
        let lowers = [tmp.path().join("a")];
        let refused = mount_overlay(&fake, tmp.path(), &tmp.path().join("w"), &lowers, (1, 1));
        match refused {
            Err(Error::ReadOnlyRootfs {
                path,
                mount_options,
                ..
            }) => {
                assert_eq!(path, tmp.path().join("rootfs"));
                assert!(mount_options.starts_with("ro"), "{mount_options}");
            }
            other => panic!("not refused: {other:?}"),
        }
        assert_eq!(fake.mounts_below(tmp.path()), []);
        let fake = crate::sys::fake::Fake::default();
        let tmp = tempfile::tempdir().unwrap();
        let root = mount_overlay(&fake, tmp.path(), &tmp.path().join("w"), &lowers, (1, 1));
        assert_eq!(root.unwrap().merged, tmp.path().join("rootfs"));
        // Checked by statfs alone: the node's mount table is not read.
        assert!(
            !fake
                .calls
                .borrow()
                .iter()
                .any(|c| c.starts_with("mountinfo"))
        );
    }

    #[test]
    fn escapes_overlay_separators() {
        assert_eq!(escape("/a:b,c"), "/a\\:b\\,c");
    }

    #[test]
    fn root_is_a_mount_point() {
        use crate::mountapi::is_mount_point;
        assert!(is_mount_point(Path::new("/")));
        assert!(is_mount_point(Path::new("/proc")));
    }
}
