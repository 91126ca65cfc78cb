//! Exclusive lock files: one criusd per root, state directory and socket.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use nix::fcntl::{Flock, FlockArg};

/// A held lock; released when dropped (or when the process dies).
#[derive(Debug)]
pub struct Lock {
    _flock: Flock<File>,
}

impl Lock {
    /// Takes the lock at `path` or fails naming what holds it; `what` says what it guards.
    pub fn acquire(path: &Path, what: &str) -> anyhow::Result<Lock> {
        let file = File::options()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .with_context(|| format!("cannot open lock file {}", path.display()))?;
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(mut flock) => {
                flock.set_len(0)?;
                flock.rewind()?;
                writeln!(flock, "{}", std::process::id())?;
                Ok(Lock { _flock: flock })
            }
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut holder = String::new();
                let _ = file.read_to_string(&mut holder);
                Err(AlreadyRunning {
                    what: what.to_owned(),
                    path: path.to_owned(),
                    pid: holder.trim().to_owned(),
                }
                .into())
            }
            Err((_, errno)) => {
                Err(errno).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }
}

/// Another criusd holds a lock.
#[derive(Debug, thiserror::Error)]
#[error(
    "another criusd (pid {pid}) is already running with this {what}: {path} is locked; stop it first or choose another --root, --state and --listen"
)]
pub struct AlreadyRunning {
    what: String,
    path: PathBuf,
    pid: String,
}
