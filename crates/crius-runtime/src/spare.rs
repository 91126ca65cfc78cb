//! The spare monitor: one pod monitor started ahead of the next RunPodSandbox, so that a pod
//! start does not wait for the monitor's exec and detach. It waits for one line on its stdin,
//! the pod directory, and ends quietly when its stdin closes (criusd gone).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tokio::io::AsyncWriteExt;
use tokio::process::{ChildStdin, ChildStdout};

/// A started, detached monitor that has no pod yet.
#[derive(Debug)]
struct Spare {
    stdin: ChildStdin,
    stdout: ChildStdout,
}

/// The node's spare monitor, if one is ready, and whether one is being started.
#[derive(Debug, Default)]
pub(crate) struct Spares {
    slot: Mutex<Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    spare: Option<Spare>,
    starting: bool,
}

impl Spares {
    /// Hands pod directory `dir` to the spare monitor; its report comes on the returned stdout.
    /// `None` when no spare is ready or it is gone (the caller starts a monitor of its own).
    pub(crate) async fn take(&self, dir: &Path) -> Option<ChildStdout> {
        let mut line = dir.as_os_str().as_encoded_bytes().to_vec();
        if line.contains(&b'\n') {
            return None;
        }
        line.push(b'\n');
        let Spare { mut stdin, stdout } = self.lock().spare.take()?;
        // A dead spare's pipe has no reader left: the write fails.
        match stdin.write_all(&line).await {
            Ok(()) => Some(stdout),
            Err(e) => {
                tracing::debug!(error = %e, "the spare monitor is gone");
                None
            }
        }
    }

    /// Starts a spare monitor (`exe monitor --spare`) unless one is ready or starting.
    pub(crate) async fn fill(&self, exe: &Path) {
        {
            let mut slot = self.lock();
            if slot.spare.is_some() || slot.starting {
                return;
            }
            slot.starting = true;
        }
        let started = start(exe.to_owned()).await;
        let mut slot = self.lock();
        slot.starting = false;
        match started {
            Ok(spare) => slot.spare = Some(spare),
            Err(e) => tracing::warn!(error = %e, "cannot start a spare pod monitor"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        self.slot
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Starts `exe monitor --spare` and reaps the process started, which exits once it has forked
/// the spare.
async fn start(exe: PathBuf) -> std::io::Result<Spare> {
    let mut child = tokio::process::Command::new(exe)
        .arg("monitor")
        .arg("--spare")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        // criusd's own log until it has a pod: a spare that cannot start says why there.
        .stderr(std::process::Stdio::inherit())
        .spawn()?;
    let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
        return Err(std::io::Error::other("the spare monitor has no pipes"));
    };
    let status = child.wait().await?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "the spare monitor did not start: {status}"
        )));
    }
    Ok(Spare { stdin, stdout })
}
