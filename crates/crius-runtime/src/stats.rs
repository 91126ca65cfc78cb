//! Resource usage read from the node: a container's cgroup (v1 and v2 alike), the size of its
//! writable layer, and the mount a path lives on. Everything here reads files and may block;
//! callers in async code run it with `spawn_blocking`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crius_proto::mountinfo;

use crate::{ContainerView, Pods};

/// A v1 limit at or above this is "no limit" (the kernel reports `PAGE_COUNTER_MAX` pages).
const V1_UNLIMITED: u64 = 1 << 62;

/// Memory usage of a cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Total usage (v1 `memory.usage_in_bytes`, v2 `memory.current`).
    pub usage_bytes: u64,
    /// Usage minus inactive file cache.
    pub working_set_bytes: u64,
    /// The limit, when there is one.
    pub limit_bytes: Option<u64>,
    /// Anonymous memory (v1 `total_rss`, v2 `anon`).
    pub rss_bytes: u64,
    /// Minor and major page faults (`pgfault`).
    pub page_faults: u64,
    /// Major page faults (`pgmajfault`).
    pub major_page_faults: u64,
}

/// What a cgroup's files say; each part is `None` when its controller's files are missing
/// (the cgroup is gone, or the controller is not mounted).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupStats {
    /// Cumulative CPU time in nanoseconds (v1 `cpuacct.usage`, v2 `cpu.stat` `usage_usec`).
    pub cpu_usage_ns: Option<u64>,
    /// Memory.
    pub memory: Option<MemoryStats>,
    /// Number of processes (`pids.current`).
    pub pids: Option<u64>,
    /// Swap, where swap accounting is on.
    pub swap: Option<SwapStats>,
    /// Pressure stall information (cgroup v2 `cpu.pressure`), where the kernel keeps it.
    pub cpu_pressure: Option<Pressure>,
    /// `memory.pressure`.
    pub memory_pressure: Option<Pressure>,
    /// `io.pressure`.
    pub io_pressure: Option<Pressure>,
}

/// One line of a PSI file: the share of time tasks stalled, and the total stall.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PressureLine {
    /// Percent over the last 10 s.
    pub avg10: f64,
    /// Percent over the last 60 s.
    pub avg60: f64,
    /// Percent over the last 300 s.
    pub avg300: f64,
    /// Total stall time in microseconds.
    pub total_us: u64,
}

/// A cgroup v2 PSI file (`cpu.pressure`, `memory.pressure`, `io.pressure`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Pressure {
    /// Some tasks stalled.
    pub some: PressureLine,
    /// All tasks stalled (absent for cpu on older kernels).
    pub full: Option<PressureLine>,
}

/// Parses a PSI file; `None` when it is not one.
pub fn parse_pressure(text: &str) -> Option<Pressure> {
    let mut some = None;
    let mut full = None;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        let kind = words.next()?;
        let mut out = PressureLine::default();
        for word in words {
            let (k, v) = word.split_once('=')?;
            match k {
                "avg10" => out.avg10 = v.parse().ok()?,
                "avg60" => out.avg60 = v.parse().ok()?,
                "avg300" => out.avg300 = v.parse().ok()?,
                "total" => out.total_us = v.parse().ok()?,
                _ => {}
            }
        }
        match kind {
            "some" => some = Some(out),
            "full" => full = Some(out),
            _ => {}
        }
    }
    Some(Pressure { some: some?, full })
}

fn pressure(dir: &Path, file: &str) -> Option<Pressure> {
    // A PSI file is tiny; a bigger one is not what it claims to be.
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    (text.len() < 4096).then(|| parse_pressure(&text)).flatten()
}

/// Swap usage of a cgroup.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SwapStats {
    /// Swap in use (v1 `memory.memsw.usage_in_bytes` − `memory.usage_in_bytes`, v2
    /// `memory.swap.current`).
    pub usage_bytes: u64,
    /// The swap limit, when there is one (v1: the memory+swap limit − the memory limit).
    pub limit_bytes: Option<u64>,
}

fn swap_v1(dir: &Path) -> Option<SwapStats> {
    let memsw = read_u64(&dir.join("memory.memsw.usage_in_bytes"))?;
    let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
    let limit = |f: &str| read_u64(&dir.join(f)).filter(|l| *l < V1_UNLIMITED);
    Some(SwapStats {
        usage_bytes: memsw.saturating_sub(usage),
        limit_bytes: limit("memory.memsw.limit_in_bytes")
            .map(|sw| sw.saturating_sub(limit("memory.limit_in_bytes").unwrap_or(0))),
    })
}

fn swap_v2(dir: &Path) -> Option<SwapStats> {
    Some(SwapStats {
        usage_bytes: read_u64(&dir.join("memory.swap.current"))?,
        limit_bytes: read_u64(&dir.join("memory.swap.max")),
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// `key value` lines (`memory.stat`, `cpu.stat`).
fn read_keyed(path: &Path) -> Option<Vec<(String, u64)>> {
    let text = std::fs::read_to_string(path).ok()?;
    Some(
        text.lines()
            .filter_map(|l| {
                let (k, v) = l.split_once(' ')?;
                Some((k.to_owned(), v.trim().parse().ok()?))
            })
            .collect(),
    )
}

fn key(stat: &[(String, u64)], name: &str) -> Option<u64> {
    stat.iter().find(|(k, _)| k == name).map(|(_, v)| *v)
}

/// Reads the usage of a cgroup given its directories (one per hierarchy, as the monitor
/// records them). v1 files win where both a v1 controller and the v2 tree are mounted
/// (hybrid mode: the unified tree then holds no memory controller).
pub fn read_cgroup(dirs: &[PathBuf]) -> CgroupStats {
    let mut out = CgroupStats::default();
    for dir in dirs {
        if out.cpu_usage_ns.is_none()
            && let Some(v) = read_u64(&dir.join("cpuacct.usage"))
        {
            out.cpu_usage_ns = Some(v);
        }
        if out.memory.is_none() {
            out.memory = memory_v1(dir);
        }
        if out.pids.is_none() {
            out.pids = read_u64(&dir.join("pids.current"));
        }
        if out.swap.is_none() {
            out.swap = swap_v1(dir);
        }
    }
    for dir in dirs {
        if out.cpu_usage_ns.is_none()
            && let Some(stat) = read_keyed(&dir.join("cpu.stat"))
            && let Some(usec) = key(&stat, "usage_usec")
        {
            out.cpu_usage_ns = Some(usec.saturating_mul(1000));
        }
        if out.memory.is_none() {
            out.memory = memory_v2(dir);
        }
        if out.swap.is_none() {
            out.swap = swap_v2(dir);
        }
        if out.pids.is_none() {
            out.pids = read_u64(&dir.join("pids.current"));
        }
        if out.cpu_pressure.is_none() {
            out.cpu_pressure = pressure(dir, "cpu.pressure");
        }
        if out.memory_pressure.is_none() {
            out.memory_pressure = pressure(dir, "memory.pressure");
        }
        if out.io_pressure.is_none() {
            out.io_pressure = pressure(dir, "io.pressure");
        }
    }
    out
}

fn memory_v1(dir: &Path) -> Option<MemoryStats> {
    let usage = read_u64(&dir.join("memory.usage_in_bytes"))?;
    let stat = read_keyed(&dir.join("memory.stat")).unwrap_or_default();
    let either = |total: &str, local: &str| key(&stat, total).or(key(&stat, local)).unwrap_or(0);
    let inactive_file = either("total_inactive_file", "inactive_file");
    let limit = read_u64(&dir.join("memory.limit_in_bytes")).filter(|l| *l < V1_UNLIMITED);
    Some(MemoryStats {
        usage_bytes: usage,
        working_set_bytes: usage.saturating_sub(inactive_file),
        limit_bytes: limit,
        rss_bytes: either("total_rss", "rss"),
        page_faults: either("total_pgfault", "pgfault"),
        major_page_faults: either("total_pgmajfault", "pgmajfault"),
    })
}

fn memory_v2(dir: &Path) -> Option<MemoryStats> {
    let usage = read_u64(&dir.join("memory.current"))?;
    let stat = read_keyed(&dir.join("memory.stat")).unwrap_or_default();
    let get = |name: &str| key(&stat, name).unwrap_or(0);
    // "max" does not parse: no limit.
    let limit = read_u64(&dir.join("memory.max"));
    Some(MemoryStats {
        usage_bytes: usage,
        working_set_bytes: usage.saturating_sub(get("inactive_file")),
        limit_bytes: limit,
        rss_bytes: get("anon"),
        page_faults: get("pgfault"),
        major_page_faults: get("pgmajfault"),
    })
}

/// Space and inodes used below a directory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Allocated bytes (`st_blocks` × 512), each inode counted once.
    pub bytes: u64,
    /// Inodes, the directory itself included, hard links counted once.
    pub inodes: u64,
}

/// How deep [`disk_usage`] descends; what lies deeper is not counted.
const MAX_WALK_DEPTH: usize = 1024;

/// How many hard-linked inodes [`disk_usage`] remembers to count once; beyond that each further
/// one is counted at every link (an over-count, never unbounded memory).
const MAX_LINKED_INODES: usize = 1 << 20;

/// Walks `dir` without following symlinks or crossing into other filesystems. Every
/// subdirectory is opened relative to its parent's descriptor with O_NOFOLLOW, never by path:
/// a container that swaps a directory of its writable layer for a symlink during the walk
/// cannot steer it elsewhere. Entries are visited as the directory is read, so the walk's
/// memory does not grow with the number of entries a container makes. Entries that vanish
/// during the walk are skipped. Blocks: run it off the async workers.
pub fn disk_usage(dir: &Path) -> std::io::Result<DiskUsage> {
    use rustix::fs::{AtFlags, CWD, Dir, FileType, Mode, OFlags, Stat};
    const DIR_FLAGS: OFlags = OFlags::RDONLY
        .union(OFlags::DIRECTORY)
        .union(OFlags::NOFOLLOW)
        .union(OFlags::CLOEXEC);
    let top = rustix::fs::openat(CWD, dir, DIR_FLAGS, Mode::empty())?;
    let st = rustix::fs::fstat(&top)?;
    let dev = st.st_dev;
    let mut seen = HashSet::new();
    let mut usage = DiskUsage::default();
    let mut account = |st: &Stat| {
        let is_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
        if st.st_nlink > 1 && !is_dir {
            let inode = (st.st_dev, st.st_ino);
            if seen.contains(&inode) {
                return false;
            }
            if seen.len() < MAX_LINKED_INODES {
                seen.insert(inode);
            }
        }
        let blocks = u64::try_from(st.st_blocks).unwrap_or(0);
        usage.bytes = usage.bytes.saturating_add(blocks.saturating_mul(512));
        usage.inodes += 1;
        is_dir && st.st_dev == dev
    };
    account(&st);
    // The open directories from the top down to the one being read.
    let mut stack = vec![Dir::new(top)?];
    loop {
        let depth = stack.len();
        let Some(current) = stack.last_mut() else {
            break;
        };
        let entry = match current.read() {
            Some(Ok(entry)) => entry,
            // A directory that cannot be read further is left as counted so far.
            None | Some(Err(_)) => {
                stack.pop();
                continue;
            }
        };
        let name = entry.file_name();
        if name == c"." || name == c".." {
            continue;
        }
        let Ok(fd) = current.fd() else {
            stack.pop();
            continue;
        };
        let Ok(st) = rustix::fs::statat(fd, name, AtFlags::SYMLINK_NOFOLLOW) else {
            continue;
        };
        if !account(&st) || depth >= MAX_WALK_DEPTH {
            continue;
        }
        if let Ok(sub) = rustix::fs::openat(fd, name, DIR_FLAGS, Mode::empty())
            && let Ok(sub) = Dir::new(sub)
        {
            stack.push(sub);
        }
    }
    Ok(usage)
}

/// The mount point of the filesystem holding `path`: the mount statx names for it, looked up in
/// `/proc/self/mountinfo` once and remembered while `path` stays on that mount (mountinfo lists
/// every mount of the node: on a node with many pods, reading it costs milliseconds). The mount
/// is told by its unique id where the kernel has one (Linux 6.8+; the ids mountinfo shows are
/// reused after an unmount). Where statx cannot tell, the longest mount point of mountinfo that
/// is a prefix of `path`; `/` when none matches.
pub fn mountpoint_of(path: &Path) -> PathBuf {
    use std::sync::{Mutex, OnceLock};
    /// Paths asked about (a handful: the container root, a pod's directory), with their mount's
    /// unique id (its plain id where the kernel has none) and mount point.
    static KNOWN: OnceLock<Mutex<std::collections::HashMap<PathBuf, (u64, PathBuf)>>> =
        OnceLock::new();
    const KNOWN_MAX: usize = 64;
    let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
    // A remembered answer costs one statx.
    let Some(unique) =
        mount_id(&path, libc::STATX_MNT_ID_UNIQUE).or_else(|| mount_id(&path, libc::STATX_MNT_ID))
    else {
        return longest_prefix_mount(&path);
    };
    let known = KNOWN.get_or_init(Mutex::default);
    let lock = || known.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((known_id, point)) = lock().get(&path)
        && *known_id == unique
    {
        return point.clone();
    }
    // mountinfo shows the plain id.
    let Some(id) = mount_id(&path, libc::STATX_MNT_ID) else {
        return longest_prefix_mount(&path);
    };
    let text = mountinfo::read_self().unwrap_or_default();
    let Some(point) = mountinfo::parse(&text)
        .find(|m| m.id == id)
        .map(|m| m.mount_point)
    else {
        return longest_prefix_mount(&path);
    };
    let mut known = lock();
    if known.len() >= KNOWN_MAX {
        known.clear();
    }
    known.insert(path, (unique, point.clone()));
    point
}

/// The id of the mount `path` is on, of the kind `mask` asks for (statx `STATX_MNT_ID` or
/// `STATX_MNT_ID_UNIQUE`); `None` where the kernel does not report it.
fn mount_id(path: &Path, mask: libc::c_uint) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statx is a valid value of the plain C struct.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statx buffer this function owns.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            libc::AT_STATX_SYNC_AS_STAT,
            mask,
            &mut stx,
        )
    };
    (rc == 0 && stx.stx_mask & mask != 0).then_some(stx.stx_mnt_id)
}

/// The longest mount point of `/proc/self/mountinfo` that is a prefix of `path`; `/` when none.
fn longest_prefix_mount(path: &Path) -> PathBuf {
    let text = mountinfo::read_self().unwrap_or_default();
    mountinfo::parse(&text)
        .map(|m| m.mount_point)
        .filter(|m| path.starts_with(m))
        .max_by_key(|m| m.as_os_str().len())
        .unwrap_or_else(|| PathBuf::from("/"))
}

impl Pods {
    /// The writable (upper) layer directory of a container: `<container root>/<pod id>/<id>/upper`
    /// as its monitor recorded it, or `<pod dir>/containers/<id>/upper` for a container made
    /// before writable layers moved to the container root.
    pub fn container_upper_dir(&self, view: &ContainerView) -> PathBuf {
        // Where the monitor recorded it (no filesystem check on the stats path).
        if let Some(dir) = view.monitor.as_ref().and_then(|m| m.writable_dir.as_ref()) {
            return dir.join("upper");
        }
        self.pod_dir(&view.record.pod_id)
            .join(crius_proto::CONTAINERS_DIR)
            .join(&view.record.id)
            .join("upper")
    }

    /// The directory holding every pod's directory.
    pub fn pods_dir(&self) -> &Path {
        &self.pods_dir
    }

    /// The directory holding every container's writable layer.
    pub fn container_root(&self) -> &Path {
        &self.config.container_root
    }

    /// Whether the pod's monitor process still runs (the one recorded, not a reused pid).
    pub fn monitor_running(&self, record: &crate::PodRecord) -> bool {
        crate::monitor_alive(record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_cgroup_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let cpu = dir.path().join("cpuacct");
        let mem = dir.path().join("memory");
        std::fs::create_dir_all(&cpu).expect("mkdir");
        std::fs::create_dir_all(&mem).expect("mkdir");
        std::fs::write(cpu.join("cpuacct.usage"), "123456789\n").expect("write");
        std::fs::write(mem.join("memory.usage_in_bytes"), "1000000\n").expect("write");
        std::fs::write(mem.join("memory.memsw.usage_in_bytes"), "1004096\n").expect("write");
        std::fs::write(mem.join("memory.limit_in_bytes"), "9223372036854771712\n").expect("write");
        std::fs::write(
            mem.join("memory.stat"),
            "cache 5\nrss 7\ninactive_file 3\ntotal_rss 400\ntotal_inactive_file 250000\n\
             total_pgfault 11\ntotal_pgmajfault 2\n",
        )
        .expect("write");
        let s = read_cgroup(&[cpu, mem]);
        assert_eq!(s.cpu_usage_ns, Some(123_456_789));
        let m = s.memory.expect("memory");
        assert_eq!(m.usage_bytes, 1_000_000);
        assert_eq!(m.working_set_bytes, 750_000);
        assert_eq!(m.limit_bytes, None);
        assert_eq!(m.rss_bytes, 400);
        assert_eq!((m.page_faults, m.major_page_faults), (11, 2));
        assert_eq!(
            s.swap,
            Some(SwapStats {
                usage_bytes: 4096,
                limit_bytes: None
            })
        );
    }

    #[test]
    fn v2_cgroup_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().to_path_buf();
        std::fs::write(d.join("cpu.stat"), "usage_usec 42\nuser_usec 40\n").expect("write");
        std::fs::write(d.join("memory.current"), "2000\n").expect("write");
        std::fs::write(d.join("memory.max"), "8192\n").expect("write");
        std::fs::write(d.join("memory.swap.current"), "0\n").expect("write");
        std::fs::write(d.join("memory.swap.max"), "max\n").expect("write");
        std::fs::write(
            d.join("memory.stat"),
            "anon 100\nfile 900\ninactive_file 500\npgfault 9\npgmajfault 1\n",
        )
        .expect("write");
        let s = read_cgroup(&[d]);
        assert_eq!(s.cpu_usage_ns, Some(42_000));
        let m = s.memory.expect("memory");
        assert_eq!((m.usage_bytes, m.working_set_bytes), (2000, 1500));
        assert_eq!(m.limit_bytes, Some(8192));
        assert_eq!(
            (m.rss_bytes, m.page_faults, m.major_page_faults),
            (100, 9, 1)
        );
        assert_eq!(
            s.swap,
            Some(SwapStats {
                usage_bytes: 0,
                limit_bytes: None
            })
        );
    }

    #[test]
    fn missing_cgroup_is_none() {
        let s = read_cgroup(&[PathBuf::from("/nonexistent/crius")]);
        assert_eq!(s, CgroupStats::default());
    }

    #[test]
    fn disk_usage_counts_files_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        std::fs::create_dir(d.join("sub")).expect("mkdir");
        std::fs::write(d.join("sub/f"), vec![1u8; 1 << 20]).expect("write");
        std::fs::hard_link(d.join("sub/f"), d.join("g")).expect("link");
        std::os::unix::fs::symlink("/", d.join("root")).expect("symlink");
        let u = disk_usage(d).expect("usage");
        assert_eq!(u.inodes, 4, "dir, sub, f (once), symlink");
        assert!(u.bytes >= 1 << 20 && u.bytes < 3 << 20, "{u:?}");
    }

    #[test]
    fn disk_usage_counts_wide_and_deep_trees_exactly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut deep = dir.path().to_owned();
        // 40 levels, each with 300 files beside the next level: every entry of a directory is
        // counted, before and after the descent into its subdirectory.
        for level in 0..40 {
            for i in 0..150 {
                std::fs::write(deep.join(format!("a{i}")), b"").expect("write");
            }
            deep.push(format!("d{level}"));
            std::fs::create_dir(&deep).expect("mkdir");
            for i in 0..150 {
                std::fs::write(deep.join(format!("z{i}")), b"").expect("write");
            }
        }
        let u = disk_usage(dir.path()).expect("usage");
        assert_eq!(u.inodes, 1 + 40 * (1 + 300));
        // Deeper than the walk goes: the rest is not counted.
        let mut chain = dir.path().join("chain");
        for _ in 0..MAX_WALK_DEPTH + 10 {
            std::fs::create_dir(&chain).expect("mkdir");
            chain.push("c");
        }
        let deeper = disk_usage(dir.path()).expect("usage");
        assert_eq!(
            deeper.inodes - u.inodes,
            u64::try_from(MAX_WALK_DEPTH).expect("depth")
        );
    }

    #[test]
    fn disk_usage_never_follows_a_symlinked_directory() {
        let dir = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        std::fs::write(outside.path().join("big"), vec![1u8; 4 << 20]).expect("write");
        std::os::unix::fs::symlink(outside.path(), dir.path().join("a")).expect("symlink");
        let u = disk_usage(dir.path()).expect("usage");
        assert_eq!(u.inodes, 2, "dir and the symlink");
        assert!(u.bytes < 1 << 20, "{u:?}");
        assert!(
            disk_usage(&dir.path().join("a")).is_err(),
            "the top is a symlink"
        );
    }

    #[test]
    fn parses_pressure_files() {
        let p = parse_pressure(
            "some avg10=1.50 avg60=0.25 avg300=0.00 total=1234\n\
             full avg10=0.00 avg60=0.00 avg300=0.00 total=5\n",
        )
        .expect("psi");
        assert_eq!(p.some.avg10, 1.5);
        assert_eq!(p.some.total_us, 1234);
        assert_eq!(p.full.map(|f| f.total_us), Some(5));
        assert!(parse_pressure("").is_none());
        assert!(parse_pressure("some avg10=x").is_none());
    }

    #[test]
    fn mountpoints() {
        assert_eq!(
            mountpoint_of(Path::new("/proc/self")),
            PathBuf::from("/proc")
        );
        // Asked again: the remembered answer, the same as mountinfo's longest prefix.
        for _ in 0..2 {
            assert_eq!(
                mountpoint_of(Path::new("/proc/self")),
                PathBuf::from("/proc")
            );
        }
        assert_eq!(
            longest_prefix_mount(Path::new("/proc/1")),
            PathBuf::from("/proc")
        );
        assert_eq!(mountpoint_of(Path::new("/")), PathBuf::from("/"));
    }

    /// Tmpfs mounts a test made: unmounted, the last first, when dropped (also when the test
    /// fails).
    #[derive(Default)]
    struct Tmpfs(Vec<PathBuf>);

    impl Tmpfs {
        fn mount(&mut self, at: &Path) {
            nix::mount::mount(
                Some("tmpfs"),
                at,
                Some("tmpfs"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
            self.0.push(at.to_owned());
        }

        fn unmount_all(&mut self) {
            for at in self.0.drain(..).rev() {
                let _ = nix::mount::umount2(&at, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }

    impl Drop for Tmpfs {
        fn drop(&mut self) {
            self.unmount_all();
        }
    }

    /// A temporary directory (and its canonical path) to mount on; `None` without root.
    fn mountable_dir() -> Option<(tempfile::TempDir, PathBuf)> {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: mounting needs root");
            return None;
        }
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().canonicalize().unwrap();
        Some((tmp, dir))
    }

    /// A path whose mount went away and whose new mount got the old one's (reused) id is not
    /// answered from memory: the unique mount id tells them apart.
    #[test]
    fn a_reused_mount_id_is_not_taken_for_the_old_mount() {
        let Some((_tmp, dir)) = mountable_dir() else {
            return;
        };
        let path = dir.join("s");
        std::fs::create_dir(&path).unwrap();
        if mount_id(&path, libc::STATX_MNT_ID_UNIQUE).is_none() {
            eprintln!("skipped: this kernel has no unique mount ids");
            return;
        }
        let mut mounts = Tmpfs::default();
        mounts.mount(&dir);
        std::fs::create_dir(&path).unwrap();
        assert_eq!(mountpoint_of(&path), dir);
        mounts.unmount_all();
        // The next mount most likely takes the freed id.
        mounts.mount(&path);
        assert_eq!(mountpoint_of(&path), path);
    }

    /// A mount made on the path after it was asked about is seen at once: the path's mount id
    /// changed.
    #[test]
    fn a_new_mount_on_the_path_is_seen() {
        let Some((_tmp, dir)) = mountable_dir() else {
            return;
        };
        let before = mountpoint_of(&dir);
        assert_ne!(before, dir);
        let mut mounts = Tmpfs::default();
        mounts.mount(&dir);
        let after = mountpoint_of(&dir);
        mounts.unmount_all();
        assert_eq!(after, dir);
        assert_eq!(mountpoint_of(&dir), before);
    }
}
