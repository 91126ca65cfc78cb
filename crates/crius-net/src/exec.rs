//! Running one CNI plugin: finding its binary, its environment and stdin, its output.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

use crate::error::{Error, InvalidRequest, Result};

/// A CNI command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CniCommand {
    /// Attach the container to the network.
    Add,
    /// Check the attachment is as ADD left it.
    Check,
    /// Detach and release resources.
    Del,
}

impl CniCommand {
    /// The `CNI_COMMAND` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Add => "ADD",
            Self::Check => "CHECK",
            Self::Del => "DEL",
        }
    }
}

/// Everything one plugin invocation needs besides its config.
#[derive(Debug, Clone)]
pub(crate) struct Invocation<'a> {
    pub command: CniCommand,
    pub container_id: &'a str,
    pub netns: &'a Path,
    pub if_name: &'a str,
    pub cni_args: &'a str,
    pub bin_dirs: &'a [PathBuf],
    pub timeout: Duration,
}

/// Finds `plugin` in the first directory of `dirs` that holds it.
pub fn find_plugin(plugin: &str, dirs: &[PathBuf]) -> Result<PathBuf> {
    dirs.iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::PluginNotFound {
            plugin: plugin.to_string(),
            dirs: dirs.to_vec(),
        })
}

/// The error document a failing plugin prints.
#[derive(Deserialize)]
struct PluginError {
    code: u32,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    details: String,
}

/// The processes working for container `id`: plugins and what they run, whose environment names
/// it as `CNI_CONTAINERID` and whose standard output is a pipe (to the daemon or the plugin that
/// ran them; a daemon a plugin started, such as a DNS server, has its output elsewhere and is
/// not waited for).
pub(crate) fn working_for(id: &str) -> Vec<i32> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.flatten()
        .filter(|p| {
            p.environ().is_ok_and(|env| {
                env.get(std::ffi::OsStr::new("CNI_CONTAINERID"))
                    .is_some_and(|v| v.as_encoded_bytes() == id.as_bytes())
            }) && std::fs::read_link(format!("/proc/{}/fd/1", p.pid))
                .is_ok_and(|target| target.as_os_str().as_encoded_bytes().starts_with(b"pipe:"))
        })
        .map(|p| p.pid)
        .collect()
}

/// Runs `plugin` with `stdin_conf` and returns what it printed on success (`None` when it
/// printed nothing, as DEL and CHECK do).
pub(crate) async fn invoke(
    plugin: &str,
    stdin_conf: &Value,
    inv: &Invocation<'_>,
) -> Result<Option<Value>> {
    let path = find_plugin(plugin, inv.bin_dirs)?;
    let command = inv.command.as_str();
    let cni_path =
        std::env::join_paths(inv.bin_dirs).map_err(|source| InvalidRequest::CniPath { source })?;
    // serde_json cannot fail on a Value it built itself.
    let stdin = serde_json::to_vec(stdin_conf).map_err(|source| Error::Encode {
        what: "plugin stdin",
        source,
    })?;
    tracing::debug!(
        plugin,
        command,
        id = inv.container_id,
        "invoking CNI plugin"
    );

    let mut child = Command::new(&path)
        .env("CNI_COMMAND", command)
        .env("CNI_CONTAINERID", inv.container_id)
        .env("CNI_NETNS", inv.netns)
        .env("CNI_IFNAME", inv.if_name)
        .env("CNI_ARGS", inv.cni_args)
        .env("CNI_PATH", &cni_path)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| Error::Exec {
            path: path.clone(),
            source,
        })?;
    let mut pipe = child.stdin.take();
    let run = async {
        if let Some(pipe) = pipe.as_mut() {
            // A plugin may exit without reading stdin (EPIPE): its exit status tells.
            let _ = pipe.write_all(&stdin).await;
        }
        drop(pipe);
        child.wait_with_output().await
    };
    let output = match tokio::time::timeout(inv.timeout, run).await {
        Ok(Ok(output)) => output,
        Ok(Err(source)) => return Err(Error::Exec { path, source }),
        // Dropping the future drops the child, which kills it (kill_on_drop).
        Err(_) => {
            return Err(Error::Timeout {
                plugin: plugin.to_string(),
                command,
                timeout: inv.timeout,
            });
        }
    };

    if !output.status.success() {
        if let Ok(e) = serde_json::from_slice::<PluginError>(&output.stdout) {
            return Err(Error::Plugin {
                plugin: plugin.to_string(),
                command,
                code: e.code,
                msg: e.msg,
                details: e.details,
            });
        }
        let text = [&output.stdout[..], &output.stderr[..]]
            .iter()
            .map(|b| String::from_utf8_lossy(b).trim().to_string())
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        return Err(Error::PluginFailed {
            plugin: plugin.to_string(),
            command,
            status: output.status.to_string(),
            output: truncate(text, 4096),
        });
    }
    if !output.stderr.is_empty() {
        tracing::debug!(plugin, command, stderr = %String::from_utf8_lossy(&output.stderr).trim(), "CNI plugin stderr");
    }
    if output.stdout.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(&output.stdout) {
        Ok(v @ Value::Object(_)) => Ok(Some(v)),
        Ok(_) => Err(Error::InvalidResult {
            plugin: plugin.to_string(),
            command,
            reason: "output is not a JSON object".into(),
        }),
        Err(e) => Err(Error::InvalidResult {
            plugin: plugin.to_string(),
            command,
            reason: e.to_string(),
        }),
    }
}

fn truncate(mut text: String, max: usize) -> String {
    if text.len() > max {
        let mut cut = max;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn processes_are_found_by_the_container_id_in_their_environment() {
        let id = format!("working-for-{}", std::process::id());
        let sleep = |id: &str, output: std::process::Stdio| {
            std::process::Command::new("sleep")
                .arg("30")
                .env("CNI_CONTAINERID", id)
                .stdout(output)
                .spawn()
                .expect("sleep")
        };
        let mut plugin = sleep(&id, std::process::Stdio::piped());
        let pid = i32::try_from(plugin.id()).expect("pid");
        let mut other = sleep(&format!("{id}-other"), std::process::Stdio::piped());
        // A daemon a plugin left running for the pod.
        let mut daemon = sleep(&id, std::process::Stdio::null());
        // The parent may return from spawn before the kernel has laid out the new program's
        // environment (it is empty until then); wait for all three to have theirs.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        for child in [&plugin, &other, &daemon] {
            let environ = format!("/proc/{}/environ", child.id());
            while std::fs::read(&environ).is_ok_and(|env| env.is_empty())
                && std::time::Instant::now() < deadline
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
        let found = working_for(&id);
        for child in [&mut plugin, &mut other, &mut daemon] {
            let _ = child.kill();
            let _ = child.wait();
        }
        assert_eq!(found, [pid], "only the plugin working for {id}");
        assert_eq!(working_for(&id), Vec::<i32>::new(), "gone once it exits");
    }
}
