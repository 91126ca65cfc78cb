//! The pod cgroup (cgroupfs driver): one directory per mounted hierarchy, cgroup v1 and v2.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crius_proto::{CgroupSpec, Resources, mountinfo};

use crate::Error;

/// A mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hierarchy {
    /// Where it is mounted.
    pub mount: PathBuf,
    /// cgroup2 (unified) rather than v1.
    pub v2: bool,
    /// v1 controllers of the mount (`cpu`, `memory`, `name=systemd`, …).
    pub controllers: Vec<String>,
}

/// The cgroup v1 controllers the kernel knows. A v1 mount's super options list its
/// controllers among other options (`rw`, `xattr`, `release_agent=…`, `clone_children`, …);
/// `name=` options name controller-less hierarchies such as systemd's.
const V1_CONTROLLERS: &[&str] = &[
    "cpuset",
    "cpu",
    "cpuacct",
    "blkio",
    "memory",
    "devices",
    "freezer",
    "net_cls",
    "perf_event",
    "net_prio",
    "hugetlb",
    "pids",
    "rdma",
    "misc",
];

/// The v2 controllers crius enables for the cgroups it makes, where the parent has them.
const V2_CONTROLLERS: &[&str] = &["cpu", "cpuset", "memory", "pids", "hugetlb", "io"];

/// The leaf below a v2 pod cgroup that holds the sandbox process: a v2 cgroup with
/// controllers enabled for its children cannot hold processes itself.
pub(crate) const SANDBOX_LEAF: &str = "sandbox";

/// The crius-owned cgroup, below every hierarchy's root, that pod monitors live in: outside
/// criusd's cgroup, so stopping criusd's service does not take them along, and outside the
/// pods', so the pods' limits do not apply to them.
pub(crate) const MONITORS: &str = "crius-monitors";

/// The cgroup hierarchies mounted in this mount namespace, one per distinct superblock. Read
/// from mountinfo once per process: a node's cgroup mounts do not change while a monitor lives,
/// and mountinfo, which lists every pod's mounts, is read under the kernel's namespace lock
/// that every mount on the node takes.
pub(crate) fn hierarchies() -> Vec<Hierarchy> {
    static FOUND: std::sync::OnceLock<Vec<Hierarchy>> = std::sync::OnceLock::new();
    if let Some(found) = FOUND.get() {
        return found.clone();
    }
    let found = parse_mountinfo(&mountinfo::read_self().unwrap_or_default());
    // An unreadable mountinfo is not remembered: the next call reads it again.
    if !found.is_empty() {
        let _ = FOUND.set(found.clone());
    }
    found
}

fn parse_mountinfo(text: &str) -> Vec<Hierarchy> {
    let mut seen = Vec::new();
    let mut out = Vec::new();
    for mount in mountinfo::parse(text) {
        let v2 = match mount.fs_type {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        if mount.root != Path::new("/") || seen.contains(&mount.dev) {
            continue;
        }
        seen.push(mount.dev);
        let controllers = if v2 {
            Vec::new()
        } else {
            mount
                .super_options
                .split(',')
                .filter(|o| o.starts_with("name=") || V1_CONTROLLERS.contains(o))
                .map(str::to_owned)
                .collect()
        };
        out.push(Hierarchy {
            mount: mount.mount_point,
            v2,
            controllers,
        });
    }
    out
}

/// The pod cgroup below a hierarchy's mount: `parent/name`, empty and `.` components of the
/// parent skipped. A `..` anywhere, or a name that is not one plain component, is refused
/// rather than dropped: it would name another cgroup than the one asked for (crius-runtime's
/// validation keeps such specs out; this is the monitor's own guard).
pub(crate) fn relative_dir(spec: &CgroupSpec) -> Result<PathBuf, Error> {
    let refused = |reason: &str| Error::Io {
        what: format!(
            "cgroup parent {:?} with name {:?}",
            spec.parent.chars().take(256).collect::<String>(),
            spec.name.chars().take(256).collect::<String>()
        ),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, reason.to_owned()),
    };
    if spec.parent.split('/').any(|c| c == "..") {
        return Err(refused("a .. component is refused"));
    }
    if spec.name.is_empty() || spec.name == "." || spec.name == ".." || spec.name.contains('/') {
        return Err(refused("the name must be one plain path component"));
    }
    if spec.systemd {
        let slice = crius_proto::systemd_slice_path(&spec.parent)
            .ok_or_else(|| refused("the parent is not a systemd slice unit name"))?;
        return Ok(Path::new(slice.trim_start_matches('/')).join(&spec.name));
    }
    Ok(spec
        .parent
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .chain(std::iter::once(spec.name.as_str()))
        .collect())
}

/// The directories (one per hierarchy) of `spec`'s pod cgroup; none for a spec
/// [`relative_dir`] refuses ([`create`] refuses it, so no such cgroup exists).
pub(crate) fn pod_dirs(spec: &CgroupSpec) -> Vec<(Hierarchy, PathBuf)> {
    pod_dirs_in(hierarchies(), spec)
}

/// [`pod_dirs`] in the hierarchies `all`.
pub(crate) fn pod_dirs_in(all: Vec<Hierarchy>, spec: &CgroupSpec) -> Vec<(Hierarchy, PathBuf)> {
    let Ok(relative) = relative_dir(spec) else {
        return Vec::new();
    };
    all.into_iter()
        .map(|h| {
            let dir = h.mount.join(&relative);
            (h, dir)
        })
        .collect()
}

/// Creates the pod cgroup in every hierarchy and applies its limits. Returns the directories.
/// A parent with a `..` component is refused.
pub(crate) fn create(spec: &CgroupSpec) -> Result<Vec<PathBuf>, Error> {
    relative_dir(spec)?;
    let mut created = Vec::new();
    for (h, dir) in pod_dirs(spec) {
        if let Err(e) = make_dirs(&h, &dir) {
            remove(&created);
            return Err(e);
        }
        created.push(dir);
    }
    if let Err(e) = apply(&created, &spec.resources) {
        remove(&created);
        return Err(e);
    }
    Ok(created)
}

/// Creates `dir` and its missing parents below the hierarchy's mount. On v2, every ancestor,
/// made here or not (kubelet makes its pod cgroups with an empty `cgroup.subtree_control`),
/// delegates its controllers down to `dir`.
fn make_dirs(h: &Hierarchy, dir: &Path) -> Result<(), Error> {
    if h.v2 {
        let mut existing: Vec<&Path> = dir
            .ancestors()
            .skip(1)
            .take_while(|a| a.starts_with(&h.mount))
            .filter(|a| a.exists())
            .collect();
        existing.reverse();
        for a in existing {
            enable_controllers(a);
        }
    }
    let mut missing = Vec::new();
    let mut cur = dir;
    while !cur.exists() && cur != h.mount {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(parent) => cur = parent,
            None => break,
        }
    }
    for d in missing.iter().rev() {
        if h.v2
            && let Some(parent) = d.parent()
        {
            enable_controllers(parent);
        }
        match std::fs::create_dir(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(Error::Io {
                    what: format!("cannot create cgroup {}", d.display()),
                    source: e,
                });
            }
        }
        if h.controllers.iter().any(|c| c == "cpuset") {
            inherit_cpuset(d)?;
        }
    }
    Ok(())
}

/// Enables, for the children of v2 cgroup `dir`, each of [`V2_CONTROLLERS`] that `dir` has.
/// One at a time: a controller the kernel refuses (the cgroup holds processes) does not keep
/// the others out.
fn enable_controllers(dir: &Path) {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers")).unwrap_or_default();
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for c in available.split_whitespace() {
        if V2_CONTROLLERS.contains(&c) && !enabled.split_whitespace().any(|e| e == c) {
            let _ = std::fs::write(dir.join("cgroup.subtree_control"), format!("+{c}"));
        }
    }
}

/// The directories the sandbox process goes into: the pod cgroup itself in v1 hierarchies,
/// a [`SANDBOX_LEAF`] below it in v2 ones (made here), so that the pod cgroup can delegate
/// controllers to its containers ([`delegate`], once no process is left in it).
pub(crate) fn sandbox_dirs(pod_dirs: &[PathBuf]) -> Result<Vec<PathBuf>, Error> {
    let v2_mounts = v2_mounts();
    pod_dirs
        .iter()
        .map(|dir| {
            if !v2_mounts.iter().any(|m| dir.starts_with(m)) {
                return Ok(dir.clone());
            }
            let leaf = dir.join(SANDBOX_LEAF);
            match std::fs::create_dir(&leaf) {
                Ok(()) => Ok(leaf),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(leaf),
                Err(e) => Err(Error::Io {
                    what: format!("cannot create cgroup {}", leaf.display()),
                    source: e,
                }),
            }
        })
        .collect()
}

/// Where the cgroup v2 hierarchy is mounted.
pub(crate) fn v2_mounts() -> Vec<PathBuf> {
    hierarchies()
        .into_iter()
        .filter(|h| h.v2)
        .map(|h| h.mount)
        .collect()
}

/// Enables the controllers of each v2 pod cgroup for its children (the sandbox leaf and the
/// containers), given the directories [`sandbox_dirs`] returned: the parent of each v2 leaf. The
/// kernel refuses while a process sits in the pod cgroup itself, so this follows the move into
/// the leaf.
pub(crate) fn delegate(sandbox_dirs: &[PathBuf]) {
    for leaf in sandbox_dirs {
        if leaf.file_name().is_some_and(|n| n == SANDBOX_LEAF)
            && let Some(pod) = leaf.parent()
        {
            enable_controllers(pod);
        }
    }
}

/// The crius-owned [`MONITORS`] cgroup in every hierarchy, made when missing.
pub(crate) fn monitor_dirs() -> Result<Vec<PathBuf>, Error> {
    hierarchies()
        .into_iter()
        .map(|h| {
            let dir = h.mount.join(MONITORS);
            make_dirs(&h, &dir)?;
            Ok(dir)
        })
        .collect()
}

/// The container cgroup of process `pid` in every hierarchy: libcontainer made it, and moved
/// `pid` in, only in the hierarchies its manager drives (v1 or v2, not both on a hybrid
/// node); this makes the others, moves `pid` into them and applies all of `r` (the limits
/// libcontainer is not given: swap, cpusets, hugepages, `unified` files). Returns the
/// directories.
pub(crate) fn attach_container(
    spec: &CgroupSpec,
    pid: i32,
    r: &Resources,
) -> Result<Vec<PathBuf>, Error> {
    relative_dir(spec)?;
    let all = hierarchies();
    let mut dirs = Vec::new();
    for (h, dir) in pod_dirs_in(all.clone(), spec) {
        make_dirs(&h, &dir)?;
        dirs.push(dir);
    }
    // Every move into a cgroup waits for an RCU grace period (milliseconds): the
    // hierarchies libcontainer already put the process in are left alone.
    let already = of_process(&pid.to_string(), &all);
    let missing: Vec<PathBuf> = dirs
        .iter()
        .filter(|d| !already.contains(d))
        .cloned()
        .collect();
    enter(&missing, pid)?;
    apply(&dirs, r)?;
    Ok(dirs)
}

/// Creates the container's cgroup in every hierarchy of `all` (kept if it exists); the
/// directories by hierarchy.
pub(crate) fn create_container_dirs(
    all: Vec<Hierarchy>,
    spec: &CgroupSpec,
) -> Result<Vec<(Hierarchy, PathBuf)>, Error> {
    relative_dir(spec)?;
    let dirs = pod_dirs_in(all, spec);
    for (h, dir) in &dirs {
        make_dirs(h, dir)?;
    }
    Ok(dirs)
}

/// Whether every hierarchy of `all` is cgroup v2 (a unified-only node).
pub(crate) fn v2_only_in(all: &[Hierarchy]) -> bool {
    !all.is_empty() && all.iter().all(|h| h.v2)
}

/// A new v1 cpuset cgroup starts empty: copy its parent's cpus and mems.
fn inherit_cpuset(dir: &Path) -> Result<(), Error> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let own = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if own.trim().is_empty() {
            let value = std::fs::read_to_string(parent.join(file)).unwrap_or_default();
            std::fs::write(dir.join(file), value.trim()).map_err(Error::io(format!(
                "cannot write {}",
                dir.join(file).display()
            )))?;
        }
    }
    Ok(())
}

/// Moves `pid` into every directory.
pub(crate) fn enter(dirs: &[PathBuf], pid: i32) -> Result<(), Error> {
    for dir in dirs {
        std::fs::write(dir.join("cgroup.procs"), pid.to_string()).map_err(Error::io(format!(
            "cannot move pid {pid} into cgroup {}",
            dir.display()
        )))?;
    }
    Ok(())
}

/// Moves this process into every directory. A v1 hierarchy's move of a single-threaded
/// process goes through its `tasks` file as the calling thread (`0`): the kernel then skips the
/// node-wide lock a `cgroup.procs` move takes, whose first taking after a quiet spell waits for
/// an RCU grace period (milliseconds). Elsewhere, and for a process with several threads, the
/// process moves through `cgroup.procs`.
pub(crate) fn enter_self(dirs: &[PathBuf]) -> Result<(), Error> {
    let single = std::fs::read_dir("/proc/self/task").is_ok_and(|d| d.count() == 1);
    let me = std::process::id().to_string();
    for dir in dirs {
        let by_thread = single
            && match std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join("tasks"))
            {
                Ok(mut tasks) => {
                    use std::io::Write;
                    tasks.write_all(b"0").map_err(Error::io(format!(
                        "cannot move this process into cgroup {}",
                        dir.display()
                    )))?;
                    true
                }
                Err(_) => false,
            };
        if !by_thread {
            std::fs::write(dir.join("cgroup.procs"), &me).map_err(Error::io(format!(
                "cannot move this process into cgroup {}",
                dir.display()
            )))?;
        }
    }
    Ok(())
}

/// clone3's flag for a child born in the cgroup `clone_args.cgroup` names.
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` up to `cgroup` (clone3, Linux 5.7).
#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// clone3 with `flags`, the child born in the cgroup v2 directory `cgroup` (no move, so no
/// wait for the cgroup migration lock). Fork-like: returns 0 in the child.
pub(crate) fn clone_into(
    flags: nix::sched::CloneFlags,
    cgroup: &std::os::fd::OwnedFd,
) -> Result<libc::c_long, nix::errno::Errno> {
    let mut args = CloneArgs {
        flags: u64::from(flags.bits().cast_unsigned()) | CLONE_INTO_CGROUP,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD.cast_unsigned().into(),
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: u64::from(std::os::fd::AsRawFd::as_raw_fd(cgroup).cast_unsigned()),
    };
    // SAFETY: a fork-like clone3 (no new stack: the child continues on a copy of this one);
    // `args` outlives the call. Callers are single-threaded (the monitor, the exec helper), so
    // no lock is held by another thread in the child; glibc's fork handlers do not run and its
    // copy of the thread id is stale, which nothing the children do relies on.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &raw mut args,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    nix::errno::Errno::result(ret)
}

/// Whether [`clone_into`] failed because this kernel has no clone3 with `CLONE_INTO_CGROUP`
/// (before 5.7), so the caller should move into the cgroup and clone there instead.
pub(crate) fn clone_into_missing(errno: nix::errno::Errno) -> bool {
    matches!(
        errno,
        nix::errno::Errno::ENOSYS | nix::errno::Errno::E2BIG | nix::errno::Errno::EINVAL
    )
}

/// `dir` open as an `O_PATH` descriptor, and whether it is a cgroup v2 directory (told by its
/// filesystem, without reading the node's mount table).
pub(crate) fn open_dir(dir: &Path) -> nix::Result<(std::os::fd::OwnedFd, bool)> {
    let fd = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let v2 =
        nix::sys::statfs::fstatfs(&fd)?.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC;
    Ok((fd, v2))
}

/// Moves this process into the cgroup v2 directory open as `dir` (an `O_PATH` descriptor, usable
/// after this process left the host's mount namespace).
pub(crate) fn enter_self_at(dir: &std::os::fd::OwnedFd) -> Result<(), Error> {
    use std::io::Write;
    let fd = nix::fcntl::openat(
        dir,
        "cgroup.procs",
        nix::fcntl::OFlag::O_WRONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(Error::sys("cannot open cgroup.procs"))?;
    std::fs::File::from(fd)
        .write_all(std::process::id().to_string().as_bytes())
        .map_err(Error::io(
            "cannot move this process into its cgroup v2 directory",
        ))
}

/// `dirs` split into the one below a cgroup v2 mount of `v2_mounts` (if any) and the others.
pub(crate) fn split_v2(dirs: &[PathBuf], v2_mounts: &[PathBuf]) -> (Option<PathBuf>, Vec<PathBuf>) {
    let (v2, v1): (Vec<PathBuf>, Vec<PathBuf>) = dirs
        .iter()
        .cloned()
        .partition(|d| v2_mounts.iter().any(|m| d.starts_with(m)));
    (v2.into_iter().next(), v1)
}

/// Keeps the kernel's cgroup migration lock quick to take while it lives. The first move into a
/// cgroup after a quiet spell waits for an RCU grace period (~8–15 ms on a 250 Hz kernel); moves
/// within about one grace period of the previous one do not. A thread repeats a move that
/// changes nothing (this process into the cgroup it is in) every few milliseconds, so the wait
/// runs beside the caller's work instead of inside the moves that follow (libcontainer's, of a
/// container's first process). The thread allocates nothing while it loops: the process may be
/// cloned meanwhile. The process has a second thread while it runs (and for a moment after the
/// join, until the kernel has finished the thread's exit).
pub(crate) struct Warm {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Warm {
    /// The period of the repeated move: well inside one grace period.
    const PERIOD: Duration = Duration::from_millis(4);
    /// How long a warm-up started with a pod waits for its first container.
    pub(crate) const POD_START: Duration = Duration::from_millis(500);
    /// The longest a warm-up for one container runs.
    pub(crate) const CREATE: Duration = Duration::from_secs(5);

    /// Starts keeping the lock warm through `dir`, a cgroup this process is in, for at most
    /// `limit`; a guard that does nothing without `dir`, while another warm-up runs through
    /// `dir`, or when its file cannot be opened or the thread cannot start.
    pub(crate) fn start(dir: Option<&Path>, limit: Duration) -> Warm {
        use std::sync::atomic::{AtomicBool, Ordering};
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        // One warm-up at a time per cgroup (every monitor shares `crius-monitors`): an flock
        // on the directory, held by the thread, so concurrent pod starts do not multiply the
        // moves (they keep the lock warm for each other anyway).
        let file = dir.and_then(|d| {
            let holder = std::fs::File::open(d).ok()?;
            // SAFETY: flock on a descriptor `holder` owns.
            let locked = unsafe {
                libc::flock(
                    std::os::fd::AsRawFd::as_raw_fd(&holder),
                    libc::LOCK_EX | libc::LOCK_NB,
                )
            } == 0;
            if !locked {
                return None;
            }
            let procs = std::fs::OpenOptions::new()
                .write(true)
                .open(d.join("cgroup.procs"))
                .ok()?;
            Some((holder, procs))
        });
        let thread = file.and_then(|(holder, mut file)| {
            let stop = stop.clone();
            let me = std::process::id().to_string().into_bytes();
            std::thread::Builder::new()
                .name("cgroup-warm".into())
                .spawn(move || {
                    use std::io::Write;
                    let _held = holder;
                    let until = Instant::now() + limit;
                    while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                        if file.write_all(&me).is_err() {
                            return;
                        }
                        std::thread::park_timeout(Self::PERIOD);
                    }
                })
                .ok()
        });
        Warm { stop, thread }
    }

    /// Whether its thread still keeps the lock warm.
    pub(crate) fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }
}

impl Drop for Warm {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

/// The cgroup directories this process is in now, one per hierarchy.
pub(crate) fn current() -> Vec<PathBuf> {
    of_process("self", &hierarchies())
}

/// The cgroup directories process `pid` (or `self`) is in, one per hierarchy of `all`.
fn of_process(pid: &str, all: &[Hierarchy]) -> Vec<PathBuf> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let mut out = Vec::new();
    for h in all {
        for line in text.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            let matches = if h.v2 {
                ctrls.is_empty()
            } else {
                let set: Vec<&str> = ctrls.split(',').collect();
                !set.is_empty()
                    && h.controllers.iter().all(|c| set.contains(&c.as_str()))
                    && set.len() == h.controllers.len()
            };
            if matches {
                out.push(h.mount.join(path.trim_start_matches('/')));
            }
        }
    }
    out
}

/// Applies limits to the pod cgroup directories (v1 and v2 files, whichever exist).
pub(crate) fn apply(dirs: &[PathBuf], r: &Resources) -> Result<(), Error> {
    if let (Some(swap), Some(_)) = (r.memory_swap.filter(|s| *s > 0), r.memory_limit) {
        // v1 keeps memory.limit_in_bytes <= memory.memsw.limit_in_bytes at every step: when
        // both grow, the total must grow first (an error here is retried after the memory
        // limit below).
        let _ = write_where_present(dirs, "memory.memsw.limit_in_bytes", &swap.to_string());
    }
    for dir in dirs {
        let write = |file: &str, value: String| -> Result<(), Error> {
            let path = dir.join(file);
            if !path.exists() {
                return Ok(());
            }
            std::fs::write(&path, &value).map_err(Error::io(format!(
                "cannot write {value:?} to {}",
                path.display()
            )))
        };
        if let Some(shares) = r.cpu_shares {
            write("cpu.shares", shares.to_string())?;
            write("cpu.weight", shares_to_weight(shares).to_string())?;
        }
        if let Some(period) = r.cpu_period.filter(|p| *p > 0) {
            write("cpu.cfs_period_us", period.to_string())?;
        }
        if let Some(quota) = r.cpu_quota {
            let quota = if quota > 0 { quota } else { -1 };
            write("cpu.cfs_quota_us", quota.to_string())?;
            let period = r.cpu_period.filter(|p| *p > 0).unwrap_or(100_000);
            let max = if quota > 0 {
                quota.to_string()
            } else {
                "max".to_owned()
            };
            write("cpu.max", format!("{max} {period}"))?;
        }
        if let Some(limit) = r.memory_limit {
            let v1 = if limit > 0 { limit } else { -1 };
            write("memory.limit_in_bytes", v1.to_string())?;
            let v2 = if limit > 0 {
                limit.to_string()
            } else {
                "max".to_owned()
            };
            write("memory.max", v2)?;
        }
    }
    apply_more(dirs, r)
}

/// Writes `value` to `file` in every directory that has it; how many did.
fn write_where_present(dirs: &[PathBuf], file: &str, value: &str) -> Result<usize, Error> {
    let mut written = 0;
    for dir in dirs {
        let path = dir.join(file);
        if path.exists() {
            std::fs::write(&path, value).map_err(Error::io(format!(
                "cannot write {value:?} to {}",
                path.display()
            )))?;
            written += 1;
        }
    }
    Ok(written)
}

/// An error for a limit no directory has a file for: never dropped silently.
fn no_file(what: &str, files: &str) -> Error {
    Error::Io {
        what: format!("{what}: the cgroups have no {files}"),
        source: std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "the controller is not available on this node",
        ),
    }
}

/// The limits beyond cpu and memory: swap, cpusets, hugepages and `unified` files. Each must
/// reach at least one directory.
fn apply_more(dirs: &[PathBuf], r: &Resources) -> Result<(), Error> {
    if let Some(swap) = r.memory_swap {
        let v1 = if swap > 0 { swap } else { -1 };
        let mut written =
            write_where_present(dirs, "memory.memsw.limit_in_bytes", &v1.to_string())?;
        for dir in dirs {
            if !dir.join("memory.swap.max").exists() {
                continue;
            }
            // v2 limits swap alone: the total minus the memory limit.
            let memory = r.memory_limit.filter(|m| *m > 0).or_else(|| {
                std::fs::read_to_string(dir.join("memory.max"))
                    .ok()
                    .and_then(|v| v.trim().parse().ok())
            });
            let value = match (swap > 0, memory) {
                (true, Some(m)) => (swap - m).max(0).to_string(),
                _ => "max".to_owned(),
            };
            written += write_where_present(std::slice::from_ref(dir), "memory.swap.max", &value)?;
        }
        // Without swap accounting, "no swap beyond memory" and "unlimited" need no file.
        if written == 0 && swap != -1 && Some(swap) != r.memory_limit {
            return Err(no_file(
                "memory_swap_limit_in_bytes",
                "memory.memsw.limit_in_bytes or memory.swap.max (swap accounting is off)",
            ));
        }
    }
    for (file, value) in [
        ("cpuset.cpus", &r.cpuset_cpus),
        ("cpuset.mems", &r.cpuset_mems),
    ] {
        if let Some(value) = value
            && write_where_present(dirs, file, value)? == 0
        {
            return Err(no_file(file, file));
        }
    }
    for (size, limit) in &r.hugepage_limits {
        let v1 = format!("hugetlb.{size}.limit_in_bytes");
        let v2 = format!("hugetlb.{size}.max");
        let written = write_where_present(dirs, &v1, &limit.to_string())?
            + write_where_present(dirs, &v2, &limit.to_string())?;
        // kubelet sends a limit for every page size, 0 for those the pod does not use: with no
        // file for the size there is nothing to forbid.
        if written == 0 && *limit > 0 {
            return Err(no_file(
                &format!("hugepage limit of page size {size}"),
                &format!("{v1} or {v2}"),
            ));
        }
    }
    for (file, value) in &r.unified {
        if file.contains('/') || file.starts_with('.') {
            return Err(no_file(&format!("unified key {file:?}"), "such file"));
        }
        if write_where_present(dirs, file, value)? == 0 {
            return Err(no_file(&format!("unified key {file:?}"), file));
        }
    }
    Ok(())
}

/// cgroup v1 cpu shares to a cgroup v2 weight (the conversion the OCI runtimes use).
pub(crate) fn shares_to_weight(shares: u64) -> u64 {
    if shares == 0 {
        return 0;
    }
    1 + (shares.clamp(2, 262_144) - 2) * 9999 / 262_142
}

/// Removes the directories, retrying while the last processes leave.
pub(crate) fn remove(dirs: &[PathBuf]) {
    let leaves: Vec<PathBuf> = dirs
        .iter()
        .map(|d| d.join(SANDBOX_LEAF))
        .filter(|l| l.is_dir())
        .collect();
    for dir in leaves.iter().chain(dirs.iter().rev()) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match std::fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                Err(e) if Instant::now() > deadline => {
                    crate::log(format_args!("cannot remove cgroup {}: {e}", dir.display()));
                    break;
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn procs(dir: &Path) -> String {
        std::fs::read_to_string(dir.join("cgroup.procs")).expect("cgroup.procs")
    }

    #[test]
    fn a_warm_up_repeats_its_move_until_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cgroup.procs"), "").expect("cgroup.procs");
        let pid = std::process::id().to_string();
        let warm = Warm::start(Some(dir.path()), Duration::from_secs(30));
        assert!(warm.is_running());
        let deadline = Instant::now() + Duration::from_secs(10);
        while procs(dir.path()).len() < 3 * pid.len() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(warm);
        let written = procs(dir.path());
        assert!(written.len() >= 3 * pid.len(), "{written:?}");
        assert_eq!(written, pid.repeat(written.len() / pid.len()));
        // Joined on drop: nothing more is written.
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(procs(dir.path()), written);
    }

    #[test]
    fn a_process_is_born_in_the_v2_cgroup_it_is_cloned_into() {
        let Some(mount) = v2_mounts().into_iter().next() else {
            eprintln!("no cgroup v2 mount: skipped");
            return;
        };
        /// The test's cgroup, removed however the test ends.
        struct Made(std::path::PathBuf);
        impl Drop for Made {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir(&self.0);
            }
        }
        let dir = mount.join(format!("crius-unit-clone-{}", std::process::id()));
        if let Err(e) = std::fs::create_dir(&dir) {
            eprintln!("cannot make {} ({e}): skipped", dir.display());
            return;
        }
        let made = Made(dir.clone());
        let (fd, v2) = open_dir(&dir).expect("a cgroup directory");
        assert!(v2, "a cgroup v2 directory");
        assert!(!open_dir(Path::new("/proc")).expect("/proc").1);
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).expect("pipe");
        let ret = clone_into(nix::sched::CloneFlags::empty(), &fd).expect("clone3");
        if ret == 0 {
            // The child waits for the parent to look, then leaves (async-signal-safe calls only:
            // the test harness has other threads).
            use std::os::fd::AsRawFd;
            let mut byte = [0u8; 1];
            // SAFETY: plain close, read and _exit on descriptors this child owns.
            unsafe {
                libc::close(w.as_raw_fd());
                libc::read(r.as_raw_fd(), byte.as_mut_ptr().cast(), 1);
                libc::_exit(0);
            }
        }
        let pid = crate::cloned_pid(ret);
        let seen = std::fs::read_to_string(format!("/proc/{pid}/cgroup"));
        drop(w);
        let _ = nix::sys::wait::waitpid(pid, None);
        drop(made);
        let name = dir.file_name().map(|n| n.to_string_lossy().into_owned());
        let want = format!("0::/{}", name.unwrap_or_default());
        let seen = seen.expect("the child's cgroup");
        assert!(seen.lines().any(|l| l == want), "{seen}");
    }

    #[test]
    fn one_warm_up_at_a_time_runs_through_a_cgroup() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cgroup.procs"), "").expect("cgroup.procs");
        let first = Warm::start(Some(dir.path()), Duration::from_secs(30));
        assert!(first.is_running());
        assert!(!Warm::start(Some(dir.path()), Duration::from_secs(30)).is_running());
        drop(first);
        assert!(Warm::start(Some(dir.path()), Duration::from_secs(30)).is_running());
    }

    #[test]
    fn a_warm_up_ends_at_its_limit_and_without_a_cgroup_never_starts() {
        assert!(!Warm::start(None, Duration::from_secs(30)).is_running());
        let missing = tempfile::tempdir().expect("tempdir");
        assert!(!Warm::start(Some(missing.path()), Duration::from_secs(30)).is_running());
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("cgroup.procs"), "").expect("cgroup.procs");
        let warm = Warm::start(Some(dir.path()), Duration::from_millis(20));
        let deadline = Instant::now() + Duration::from_secs(10);
        while warm.is_running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(!warm.is_running());
        assert!(!procs(dir.path()).is_empty());
    }

    #[test]
    fn refuses_dot_dot_instead_of_dropping_it() {
        let spec = |parent: &str, name: &str| CgroupSpec {
            parent: parent.into(),
            name: name.into(),
            resources: Resources::default(),
            systemd: false,
        };
        assert_eq!(
            relative_dir(&spec("/kubepods/./burstable/", "crius-1")).ok(),
            Some(PathBuf::from("kubepods/burstable/crius-1"))
        );
        for (parent, name) in [
            ("/kubepods/../..", "crius-1"),
            ("..", "crius-1"),
            ("/kubepods", ".."),
            ("/kubepods", "a/b"),
            ("/kubepods", ""),
        ] {
            assert!(
                relative_dir(&spec(parent, name)).is_err(),
                "{parent} {name}"
            );
            assert!(pod_dirs(&spec(parent, name)).is_empty(), "{parent} {name}");
        }
        let scope = |parent: &str| CgroupSpec {
            systemd: true,
            ..spec(parent, "crius-1.scope")
        };
        assert_eq!(
            relative_dir(&scope("kubepods-besteffort.slice")).ok(),
            Some(PathBuf::from(
                "kubepods.slice/kubepods-besteffort.slice/crius-1.scope"
            ))
        );
        for parent in ["/kubepods", "../x.slice", "a--b.slice"] {
            assert!(relative_dir(&scope(parent)).is_err(), "{parent}");
        }
    }

    #[test]
    fn parses_hybrid_mountinfo() {
        let text = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory,clone_children
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
99 31 0:29 / /mnt/again rw,relatime - cgroup cgroup rw,cpu
";
        let h = parse_mountinfo(text);
        assert_eq!(h.len(), 5);
        assert_eq!(h[0].controllers, vec!["cpu".to_owned()]);
        assert_eq!(h[1].controllers, vec!["memory".to_owned()]);
        assert_eq!(h[3].controllers, vec!["name=systemd".to_owned()]);
        assert!(h[4].v2);
    }

    #[test]
    fn swap_cpusets_hugepages_and_unified_reach_their_files() {
        let v1 = tempfile::tempdir().expect("tempdir");
        let v2 = tempfile::tempdir().expect("tempdir");
        for f in [
            "memory.limit_in_bytes",
            "memory.memsw.limit_in_bytes",
            "cpuset.cpus",
            "cpuset.mems",
            "pids.max",
            "hugetlb.2MB.limit_in_bytes",
        ] {
            std::fs::write(v1.path().join(f), "").expect("v1 file");
        }
        for f in [
            "memory.max",
            "memory.swap.max",
            "cpuset.cpus",
            "hugetlb.2MB.max",
        ] {
            std::fs::write(v2.path().join(f), "").expect("v2 file");
        }
        let dirs = [v1.path().to_path_buf(), v2.path().to_path_buf()];
        let limits = Resources {
            memory_limit: Some(64 << 20),
            memory_swap: Some(96 << 20),
            cpuset_cpus: Some("0".into()),
            cpuset_mems: Some("0".into()),
            hugepage_limits: [("2MB".to_owned(), 4 << 20)].into(),
            unified: [("pids.max".to_owned(), "42".to_owned())].into(),
            ..Resources::default()
        };
        apply(&dirs, &limits).expect("apply");
        let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
        assert_eq!(
            read(v1.path(), "memory.memsw.limit_in_bytes"),
            (96u64 << 20).to_string()
        );
        assert_eq!(
            read(v2.path(), "memory.swap.max"),
            (32u64 << 20).to_string()
        );
        assert_eq!(read(v1.path(), "cpuset.cpus"), "0");
        assert_eq!(read(v2.path(), "cpuset.cpus"), "0");
        assert_eq!(
            read(v1.path(), "hugetlb.2MB.limit_in_bytes"),
            (4u64 << 20).to_string()
        );
        assert_eq!(read(v2.path(), "hugetlb.2MB.max"), (4u64 << 20).to_string());
        assert_eq!(read(v1.path(), "pids.max"), "42");
        // A limit no directory has a file for is an error, never dropped.
        for missing in [
            Resources {
                hugepage_limits: [("1GB".to_owned(), 1 << 30)].into(),
                ..Resources::default()
            },
            Resources {
                unified: [("memory.high".to_owned(), "1".to_owned())].into(),
                ..Resources::default()
            },
        ] {
            assert!(
                apply(&[v1.path().to_path_buf()], &missing).is_err(),
                "{missing:?}"
            );
        }
        // kubelet's 0 for a page size the node has no file for forbids nothing: accepted.
        let zero = Resources {
            hugepage_limits: [("1GB".to_owned(), 0)].into(),
            ..Resources::default()
        };
        apply(&[v1.path().to_path_buf()], &zero).expect("a zero limit without a file");
    }

    #[test]
    fn limits_reach_v1_and_v2_files() {
        let v1 = tempfile::tempdir().expect("tempdir");
        let v2 = tempfile::tempdir().expect("tempdir");
        for f in [
            "cpu.shares",
            "cpu.cfs_period_us",
            "cpu.cfs_quota_us",
            "memory.limit_in_bytes",
        ] {
            std::fs::write(v1.path().join(f), "").expect("v1 file");
        }
        for f in ["cpu.weight", "cpu.max", "memory.max"] {
            std::fs::write(v2.path().join(f), "").expect("v2 file");
        }
        let dirs = [v1.path().to_path_buf(), v2.path().to_path_buf()];
        let limits = Resources {
            cpu_period: Some(50_000),
            cpu_quota: Some(25_000),
            cpu_shares: Some(1024),
            memory_limit: Some(1 << 30),
            ..Resources::default()
        };
        apply(&dirs, &limits).expect("apply");
        let read = |d: &Path, f: &str| std::fs::read_to_string(d.join(f)).unwrap_or_default();
        assert_eq!(read(v1.path(), "cpu.shares"), "1024");
        assert_eq!(read(v1.path(), "cpu.cfs_quota_us"), "25000");
        assert_eq!(read(v1.path(), "cpu.cfs_period_us"), "50000");
        assert_eq!(read(v1.path(), "memory.limit_in_bytes"), "1073741824");
        assert_eq!(read(v2.path(), "cpu.weight"), "39");
        assert_eq!(read(v2.path(), "cpu.max"), "25000 50000");
        assert_eq!(read(v2.path(), "memory.max"), "1073741824");
        // No v2 file is created where the controller is absent.
        assert!(!v1.path().join("memory.max").exists());
        let unlimited = Resources {
            cpu_quota: Some(-1),
            memory_limit: Some(0),
            ..Resources::default()
        };
        apply(&dirs, &unlimited).expect("apply");
        assert_eq!(read(v2.path(), "cpu.max"), "max 100000");
        assert_eq!(read(v2.path(), "memory.max"), "max");
        assert_eq!(read(v1.path(), "memory.limit_in_bytes"), "-1");
    }

    #[test]
    fn weight_conversion() {
        assert_eq!(shares_to_weight(2), 1);
        assert_eq!(shares_to_weight(1024), 39);
        assert_eq!(shares_to_weight(262_144), 10_000);
    }
}
