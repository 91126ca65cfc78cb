//! What a test (or the demo) looks at on the host: namespace identities and process ids in /proc,
//! and directories.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use anyhow::{Context, ensure};

/// `NS_GET_USERNS` of ioctl_ns(2): `_IO(0xb7, 0x1)`.
const NS_GET_USERNS: libc::c_ulong = 0xb701;

/// The inode of a file, e.g. `/proc/PID/ns/user`: equal inodes are the same namespace.
pub fn inode(path: &str) -> anyhow::Result<u64> {
    Ok(std::fs::metadata(path)
        .with_context(|| format!("stat {path}"))?
        .ino())
}

/// The inode of the user namespace that owns namespace `ns` (`net`, `ipc`, …) of process `pid`.
pub fn owner_userns(pid: i32, ns: &str) -> anyhow::Result<u64> {
    let file = std::fs::File::open(format!("/proc/{pid}/ns/{ns}"))?;
    // SAFETY: NS_GET_USERNS on a namespace descriptor takes no argument and returns a new
    // descriptor or -1.
    let fd = unsafe { libc::ioctl(file.as_raw_fd(), NS_GET_USERNS) };
    ensure!(
        fd >= 0,
        "NS_GET_USERNS on {ns}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the ioctl returned a descriptor that nothing else owns.
    let owner = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(std::fs::File::from(owner).metadata()?.ino())
}

/// The numbers of a `/proc/PID/status` line such as `Uid:` or `Gid:` (real, effective, saved,
/// filesystem).
pub fn status_ids(pid: i32, key: &str) -> anyhow::Result<Vec<u32>> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with(key))
        .with_context(|| format!("no {key} line in /proc/{pid}/status"))?;
    Ok(line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect())
}

/// Pod monitors of the daemon whose directory is `dir`: processes whose command line names
/// `criusd monitor` and a path under `dir`, or whose stderr is a pod's log in `pods` (a monitor
/// started as the spare names no path). An idle spare, which has no pod yet, is not one.
pub fn pod_monitors(dir: &std::path::Path, pods: &std::path::Path) -> usize {
    let dir = dir.display().to_string();
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| {
            let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
                return false;
            };
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            let logs_to_a_pod =
                std::fs::read_link(e.path().join("fd/2")).is_ok_and(|log| log.starts_with(pods));
            cmdline.contains(" monitor ") && (cmdline.contains(&dir) || logs_to_a_pod)
        })
        .count()
}

/// The names in directory `dir`, sorted (none when it does not exist).
pub fn entries(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

/// Removes the tree at its path when dropped, however deep, with crius' own removal: a failing
/// test's temporary directories are removed with the standard library's recursive walk, which
/// a tree tens of thousands of levels deep overflows.
pub struct DeepTree(pub std::path::PathBuf);

impl Drop for DeepTree {
    fn drop(&mut self) {
        let _ = crius_proto::tree::remove(&self.0);
    }
}
