//! The open-files limit and descriptor table of criusd and its pod monitors.
//!
//! criusd holds a few descriptors per pod (about six at 250 pods), more than the 1024 a
//! service gets by default, so it raises its own soft limit to the hard one. The processes of
//! pods keep the limit criusd was started with: criusd passes it in [`NOFILE_ENV`] to every
//! monitor, which gives it to the sandbox, the containers and exec'd processes.

use std::io;

/// The environment variable that carries the open-files limit criusd started with
/// (`SOFT:HARD`) to the monitors it starts.
pub const NOFILE_ENV: &str = "CRIUS_NOFILE";

fn get_nofile() -> io::Result<libc::rlimit> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into the struct it is given.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(limit)
}

fn set_nofile(limit: libc::rlimit) -> io::Result<()> {
    // SAFETY: setrlimit reads one rlimit from the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Raises this process's soft open-files limit to its hard limit (no capability needed);
/// returns the limit before, as [`NOFILE_ENV`] carries it.
pub fn raise_nofile() -> io::Result<String> {
    let before = get_nofile()?;
    if before.rlim_cur < before.rlim_max {
        set_nofile(libc::rlimit {
            rlim_cur: before.rlim_max,
            rlim_max: before.rlim_max,
        })?;
    }
    Ok(format!("{}:{}", before.rlim_cur, before.rlim_max))
}

/// The soft limit `text` (`SOFT:HARD`, as [`raise_nofile`] gives) asks for.
fn parse_nofile(text: &str) -> Option<u64> {
    let (soft, hard) = text.split_once(':')?;
    let (soft, hard) = (soft.parse::<u64>().ok()?, hard.parse::<u64>().ok()?);
    (soft <= hard).then_some(soft)
}

/// The open-files limit (soft, hard) that `text` carries, as this process can set it: the
/// soft limit at most the hard one, which stays as it is (lowering it could not be undone).
pub fn started_nofile(text: &str) -> io::Result<(u64, u64)> {
    let soft = parse_nofile(text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{NOFILE_ENV}={text:?} is not SOFT:HARD"),
        )
    })?;
    let now = get_nofile()?;
    Ok((soft.min(now.rlim_max), now.rlim_max))
}

/// Sets this process's open-files limit to `(soft, hard)`.
pub fn set_open_files(soft: u64, hard: u64) -> io::Result<()> {
    set_nofile(libc::rlimit {
        rlim_cur: soft,
        rlim_max: hard,
    })
}

/// Grows this process's descriptor table to hold `slots` descriptors (fewer when the soft
/// open-files limit is lower). Call it while the process is single-threaded: the kernel grows
/// the table of a process with threads only after an RCU grace period, 5–30 ms here, which a
/// thread would otherwise wait for the first time it holds 64, 128, 256… descriptors.
pub fn reserve_descriptors(slots: u32) {
    let Ok(limit) = get_nofile() else {
        return;
    };
    let highest = u64::from(slots).min(limit.rlim_cur).saturating_sub(1);
    let Ok(highest) = libc::c_int::try_from(highest) else {
        return;
    };
    // F_DUPFD takes the lowest free descriptor at or above the one asked, growing the table
    // to hold it; the table keeps its size once that descriptor is closed.
    let Ok(root) = std::fs::File::open("/") else {
        return;
    };
    // SAFETY: fcntl duplicates a descriptor this function holds (or fails); close takes only
    // that copy.
    unsafe {
        let fd = libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&root),
            libc::F_DUPFD_CLOEXEC,
            highest,
        );
        if fd >= 0 {
            libc::close(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_parsed_as_raise_nofile_writes_them() {
        assert_eq!(parse_nofile("1024:524288"), Some(1024));
        assert_eq!(
            parse_nofile(&format!("{}:{}", u64::MAX, u64::MAX)),
            Some(u64::MAX)
        );
        for bad in [
            "",
            "1024",
            "1024:",
            ":1024",
            "x:1",
            "2048:1024",
            "1:2:3",
            " 1:2",
        ] {
            assert_eq!(parse_nofile(bad), None, "{bad:?}");
        }
    }
}
