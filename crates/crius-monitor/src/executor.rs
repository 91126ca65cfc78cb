//! The libcontainer executor of crius: execs the container process with its environment as
//! raw bytes (CRI env values need not be UTF-8, libcontainer's own executor takes strings).

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libcontainer::workload::{
    Executor, ExecutorError, ExecutorSetEnvsError, ExecutorValidationError,
};
use oci_spec::runtime::Spec;

/// Execs `process.args` of the spec with the environment `env` (`NAME=value` byte strings).
#[derive(Debug, Clone)]
pub(crate) struct CriusExecutor {
    pub(crate) env: Vec<Vec<u8>>,
}

impl CriusExecutor {
    fn path_var(&self) -> &[u8] {
        self.env
            .iter()
            .find_map(|e| e.strip_prefix(b"PATH="))
            .unwrap_or(b"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
    }

    /// The program for `arg0`: itself when it holds a slash, else the first executable match
    /// in the container's `PATH`.
    fn program(&self, arg0: &str) -> Option<PathBuf> {
        if arg0.contains('/') {
            return Some(PathBuf::from(arg0));
        }
        self.path_var()
            .split(|b| *b == b':')
            .filter(|d| !d.is_empty())
            .map(|d| Path::new(std::ffi::OsStr::from_bytes(d)).join(arg0))
            .find(|p| is_executable(p))
    }
}

/// Gives a process about to exec a container command the signal state a fresh process has:
/// the monitor (a Rust program) ignores SIGPIPE and blocks SIGCHLD, and ignored and blocked
/// signals survive exec (`yes | head` would never end).
pub(crate) fn reset_signals() {
    use nix::sys::signal::{SigSet, SigmaskHow, sigprocmask};
    // The raw call: glibc refuses its own internal signals (32, 33), which are ignored too.
    // An all-zero kernel sigaction is SIG_DFL, no flags, an empty mask.
    let default = [0u64; 4];
    for sig in 1..=64 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            // SAFETY: the kernel reads one sigaction from `default`, which outlives the call;
            // SIG_DFL installs no handler code.
            unsafe {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    default.as_ptr(),
                    std::ptr::null_mut::<u64>(),
                    8usize,
                )
            };
        }
    }
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

fn args(spec: &Spec) -> Option<&Vec<String>> {
    spec.process()
        .as_ref()
        .and_then(|p| p.args().as_ref())
        .filter(|a| !a.is_empty())
}

impl Executor for CriusExecutor {
    fn exec(&self, spec: &Spec) -> Result<(), ExecutorError> {
        let args = args(spec).ok_or(ExecutorError::InvalidArg)?;
        let program = self
            .program(&args[0])
            .ok_or_else(|| ExecutorError::Other(format!("{:?} not found in PATH", args[0])))?;
        let path =
            CString::new(program.as_os_str().as_bytes()).map_err(|_| ExecutorError::InvalidArg)?;
        let argv: Vec<CString> = args
            .iter()
            .map(|a| CString::new(a.as_bytes()))
            .collect::<Result<_, _>>()
            .map_err(|_| ExecutorError::InvalidArg)?;
        let envp: Vec<CString> = self
            .env
            .iter()
            .map(|e| CString::new(e.as_slice()))
            .collect::<Result<_, _>>()
            .map_err(|_| ExecutorError::InvalidArg)?;
        reset_signals();
        let err = nix::unistd::execve(&path, &argv, &envp).err();
        Err(ExecutorError::Other(format!(
            "cannot exec {}: {}",
            program.display(),
            err.map(|e| e.to_string()).unwrap_or_default()
        )))
    }

    fn validate(&self, spec: &Spec) -> Result<(), ExecutorValidationError> {
        let args = args(spec).ok_or_else(|| {
            ExecutorValidationError::ArgValidationError("the container has no command".into())
        })?;
        match self.program(&args[0]) {
            Some(p) if is_executable(&p) => Ok(()),
            _ => Err(ExecutorValidationError::ArgValidationError(format!(
                "executable {:?} not found in the container's PATH",
                args[0]
            ))),
        }
    }

    fn setup_envs(&self, _envs: HashMap<String, String>) -> Result<(), ExecutorSetEnvsError> {
        // The environment is passed whole to execve.
        Ok(())
    }
}
