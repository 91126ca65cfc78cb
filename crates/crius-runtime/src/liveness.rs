//! Whether a recorded process (a pod monitor, a sandbox) still runs, answered from a pidfd
//! kept open per process: one `poll` instead of reading `/proc/PID/stat`, which listing calls
//! would otherwise do for every pod every second.

use std::collections::HashMap;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::{Mutex, PoisonError};

/// Entries kept before the dead ones are dropped.
const PRUNE_AT: usize = 4096;

/// What is known of one process, by pid and start time.
#[derive(Debug)]
enum Known {
    /// It ran when its pidfd was opened; the pidfd tells when it ends.
    Watched(OwnedFd),
    /// It has ended (or never matched).
    Gone,
}

/// The processes asked about, by pid and start time.
#[derive(Debug, Default)]
pub(crate) struct Liveness {
    known: Mutex<HashMap<(i32, u64), Known>>,
}

impl Liveness {
    /// Whether the process `pid` that started at `start_time` (`/proc/PID/stat` field 22)
    /// still runs; a zombie does not.
    pub(crate) fn is_running(&self, pid: i32, start_time: u64) -> bool {
        if pid <= 0 {
            return false;
        }
        let key = (pid, start_time);
        {
            let mut known = self.lock();
            match known.get(&key) {
                Some(Known::Gone) => return false,
                Some(Known::Watched(fd)) => {
                    if !has_exited(fd) {
                        return true;
                    }
                    known.insert(key, Known::Gone);
                    return false;
                }
                None => {}
            }
        }
        let Some(fd) = pidfd_open(pid) else {
            // No pidfd (descriptors exhausted, or the process is gone): ask /proc each time.
            return crius_proto::process_is(pid, start_time);
        };
        // The pid may have been reused before the pidfd was opened: the start time tells.
        let running = crius_proto::process_is(pid, start_time) && !has_exited(&fd);
        let mut known = self.lock();
        if known.len() >= PRUNE_AT {
            known.retain(|_, k| matches!(k, Known::Watched(_)));
        }
        known.insert(
            key,
            if running {
                Known::Watched(fd)
            } else {
                Known::Gone
            },
        );
        running
    }

    /// [`Liveness::is_running`] of each of `procs` (pid, start time), with one `poll` over
    /// every pidfd already kept instead of one per process.
    pub(crate) fn running_all(&self, procs: &[(i32, u64)]) -> Vec<bool> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let mut out = vec![false; procs.len()];
        let mut unknown = Vec::new();
        {
            let mut known = self.lock();
            let mut watched = Vec::new();
            let mut exited = Vec::new();
            {
                let mut fds = Vec::new();
                for (i, &(pid, start)) in procs.iter().enumerate() {
                    if pid <= 0 {
                        continue;
                    }
                    match known.get(&(pid, start)) {
                        Some(Known::Gone) => {}
                        Some(Known::Watched(fd)) => {
                            fds.push(PollFd::new(fd.as_fd(), PollFlags::POLLIN));
                            watched.push(i);
                        }
                        None => unknown.push(i),
                    }
                }
                let polled = !fds.is_empty() && poll(&mut fds, PollTimeout::ZERO).is_ok();
                for (fd, &i) in fds.iter().zip(&watched) {
                    let gone = if polled {
                        fd.revents().is_some_and(|r| !r.is_empty())
                    } else {
                        // No answer for the set (e.g. more descriptors than `poll` takes):
                        // each on its own.
                        has_exited_fd(fd.as_fd())
                    };
                    if gone {
                        exited.push(i);
                    } else {
                        out[i] = true;
                    }
                }
            }
            for i in exited {
                known.insert(procs[i], Known::Gone);
            }
        }
        for i in unknown {
            let (pid, start) = procs[i];
            out[i] = self.is_running(pid, start);
        }
        out
    }

    /// Forgets `pid` (its pod is gone), closing its pidfd.
    pub(crate) fn forget(&self, pid: i32, start_time: u64) {
        self.lock().remove(&(pid, start_time));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(i32, u64), Known>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A pidfd of `pid`, close-on-exec.
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: the kernel just returned this descriptor to us; nothing else owns it. pidfds
    // are always close-on-exec.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether the process of `pidfd` has exited (its pidfd polls readable).
fn has_exited(pidfd: &OwnedFd) -> bool {
    has_exited_fd(pidfd.as_fd())
}

/// [`has_exited`] of a borrowed pidfd.
fn has_exited_fd(pidfd: std::os::fd::BorrowedFd<'_>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(pidfd, PollFlags::POLLIN)];
    match poll(&mut fds, PollTimeout::ZERO) {
        Ok(n) => n > 0,
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn start_time(pid: i32) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
        let rest = &stat[stat.rfind(')').expect(")") + 1..];
        rest.split_whitespace()
            .nth(19)
            .and_then(|t| t.parse().ok())
            .expect("start time")
    }

    #[test]
    fn running_all_answers_each_process_as_is_running_does() {
        let liveness = Liveness::default();
        let spawn = || {
            std::process::Command::new("sleep")
                .arg("30")
                .spawn()
                .expect("sleep")
        };
        let (mut a, mut b) = (spawn(), spawn());
        let pid = |c: &std::process::Child| i32::try_from(c.id()).expect("pid");
        let procs = [
            (pid(&a), start_time(pid(&a))),
            (pid(&b), start_time(pid(&b))),
            (pid(&a), start_time(pid(&a)) + 1),
            (0, 0),
        ];
        // First unknown (pidfds opened), then from the pidfds in one poll.
        assert_eq!(liveness.running_all(&procs), [true, true, false, false]);
        assert_eq!(liveness.running_all(&procs), [true, true, false, false]);
        b.kill().expect("kill");
        b.wait().expect("reap");
        assert_eq!(liveness.running_all(&procs), [true, false, false, false]);
        assert!(
            !liveness.is_running(procs[1].0, procs[1].1),
            "remembered as gone"
        );
        a.kill().expect("kill");
        a.wait().expect("reap");
        assert_eq!(liveness.running_all(&procs), [false; 4]);
    }

    #[test]
    fn a_child_runs_until_it_exits_and_a_wrong_start_time_never_runs() {
        let liveness = Liveness::default();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("sleep");
        let pid = i32::try_from(child.id()).expect("pid");
        let start = start_time(pid);
        assert!(liveness.is_running(pid, start));
        assert!(liveness.is_running(pid, start), "answered from the pidfd");
        assert!(!liveness.is_running(pid, start + 1), "another process");
        child.kill().expect("kill");
        // A zombie until reaped: not running.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while liveness.is_running(pid, start) {
            assert!(std::time::Instant::now() < deadline, "still running");
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        child.wait().expect("reap");
        assert!(!liveness.is_running(pid, start));
        assert_eq!(liveness.running_all(&[(pid, start)]), [false]);
        liveness.forget(pid, start);
        assert!(!liveness.is_running(pid, start));
        assert!(!liveness.is_running(0, 0) && !liveness.is_running(-1, 0));
    }
}
