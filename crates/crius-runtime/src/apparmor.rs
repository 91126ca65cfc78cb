//! AppArmor: whether the node enforces it, crius' default profile (`crius-default`), and the
//! profile a container or sandbox runs under.
//!
//! A node enforces AppArmor when the kernel's module is enabled and securityfs shows its
//! policy. crius then loads its default profile with the node's `apparmor_parser` at start
//! (and again should it have been unloaded). Containers that name no profile run under it
//! unless privileged; `Localhost` names a profile the node has loaded. On a node without
//! AppArmor only an unset or `Unconfined` profile is accepted: anything else is refused, never
//! run unconfined.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The name of crius' default profile.
pub const DEFAULT_PROFILE: &str = "crius-default";

/// The kernel module's switch.
const ENABLED: &str = "/sys/module/apparmor/parameters/enabled";
/// AppArmor's securityfs directory.
const SECURITYFS: &str = "/sys/kernel/security/apparmor";
/// The profiles loaded in the caller's policy namespace, one `NAME (MODE)` per line.
const PROFILES: &str = "/sys/kernel/security/apparmor/profiles";
/// Where the policy compiler is looked for.
const PARSERS: [&str; 2] = ["/usr/sbin/apparmor_parser", "/sbin/apparmor_parser"];
/// The policy ABI the default profile is written against, when the node's parser ships it.
const ABI_3: &str = "/etc/apparmor.d/abi/3.0";
/// How long the parser may take to load the default profile.
const PARSER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);
/// Most bytes of a profile name crius passes on.
pub const MAX_NAME_BYTES: usize = 1024;
/// Most bytes of the parser's complaint kept for the error.
const MAX_PARSER_OUTPUT: usize = 2048;

/// The profile a request asks for, as the CRI fields say it.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Nothing named: crius' default, but none for a privileged container.
    #[default]
    Unset,
    /// No profile.
    Unconfined,
    /// crius' default profile, but none for a privileged container.
    RuntimeDefault,
    /// A profile the node has loaded; `field` is the CRI field that named it. The name is
    /// not empty, at most [`MAX_NAME_BYTES`] long and has no control characters.
    Localhost {
        /// The CRI field, dotted from `config`.
        field: String,
        /// The profile's name (without a `localhost/` prefix).
        name: String,
    },
}

/// Why a profile cannot be applied; refused as FailedPrecondition.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Refused {
    /// The CRI field, dotted from `config`.
    pub field: String,
    /// Why.
    pub reason: String,
}

/// The node's AppArmor, as found when criusd started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// Not enforced here (why): only unset or Unconfined profiles are accepted.
    Off(String),
    /// Enforced.
    On {
        /// The policy compiler, if installed: without it crius' default cannot be loaded.
        parser: Option<PathBuf>,
        /// criusd's own profile, when it runs confined: the default profile lets it signal.
        daemon: Option<String>,
    },
}

/// Why the default profile could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The node enforces AppArmor but has no `apparmor_parser`.
    #[error("AppArmor is enabled but apparmor_parser is not installed (looked for {})", PARSERS.join(", "))]
    NoParser,
    /// The parser could not be run.
    #[error("cannot run {parser}: {source}")]
    Spawn {
        /// The parser.
        parser: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The parser did not finish in time.
    #[error("{parser} did not finish within {PARSER_TIMEOUT:?}")]
    Timeout {
        /// The parser.
        parser: PathBuf,
    },
    /// The parser refused the profile.
    #[error("{parser} refused {DEFAULT_PROFILE} ({status}): {output}")]
    Parser {
        /// The parser.
        parser: PathBuf,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// The start of what it printed.
        output: String,
    },
}

/// What [`choose`] decided, before anything is checked on the node.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Choice {
    /// Run without a profile.
    None,
    /// crius' default profile.
    Default,
    /// A node profile, which must be loaded.
    Named { field: String, name: String },
}

/// The profile a request maps to on a node with AppArmor (`enforced`) or without; `field`
/// names the request's AppArmor field for refusals.
fn choose(
    request: &Request,
    privileged: bool,
    enforced: bool,
    field: &str,
) -> Result<Choice, Refused> {
    let refuse = |field: &str, reason: &str| Refused {
        field: field.to_owned(),
        reason: reason.to_owned(),
    };
    match request {
        Request::Unconfined => Ok(Choice::None),
        // Refused even for a privileged container: asked for, never silently dropped.
        Request::RuntimeDefault if !enforced => Err(refuse(
            field,
            "RuntimeDefault: AppArmor is not enabled on this node",
        )),
        Request::Unset if !enforced => Ok(Choice::None),
        Request::Unset | Request::RuntimeDefault if privileged => Ok(Choice::None),
        Request::Unset | Request::RuntimeDefault => Ok(Choice::Default),
        Request::Localhost { field, name } => {
            if !enforced {
                return Err(refuse(
                    field,
                    &format!(
                        "profile {}: AppArmor is not enabled on this node",
                        crate::validate::shown(name)
                    ),
                ));
            }
            Ok(Choice::Named {
                field: field.clone(),
                name: name.clone(),
            })
        }
    }
}

/// The mode (`enforce`, `complain`, ...) of `name` in a profiles list (`NAME (MODE)` lines,
/// read as bytes: a name is whatever the policy's author chose), or none when not listed.
fn mode_in(profiles: impl std::io::BufRead, name: &str) -> std::io::Result<Option<String>> {
    for line in profiles.split(b'\n') {
        let line = line?;
        let Some(open) = line.windows(2).rposition(|w| w == b" (") else {
            continue;
        };
        if &line[..open] == name.as_bytes() {
            let mode = line[open + 2..]
                .strip_suffix(b")")
                .unwrap_or(&line[open + 2..]);
            return Ok(Some(String::from_utf8_lossy(mode).into_owned()));
        }
    }
    Ok(None)
}

/// The mode of `name` among the profiles the node has loaded, or none when not loaded.
fn loaded_mode(name: &str) -> std::io::Result<Option<String>> {
    mode_in(
        std::io::BufReader::new(std::fs::File::open(PROFILES)?),
        name,
    )
}

/// The label the calling process runs under, when it is not `unconfined`.
fn own_label() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/self/attr/apparmor/current")
        .or_else(|_| std::fs::read_to_string("/proc/self/attr/current"))
        .ok()?;
    let label = raw.trim_end_matches(['\n', '\0']);
    // `NAME (MODE)`, or `unconfined`.
    let name = label.rsplit_once(" (").map_or(label, |(name, _)| name);
    (name != "unconfined" && !name.is_empty()).then(|| name.to_owned())
}

/// Whether a label can be written into a profile as a bare `peer=` value.
fn plain_label(label: &str) -> bool {
    !label.is_empty()
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.:/".contains(&b))
}

/// crius' default profile. The other layers (capabilities, seccomp, namespaces, the read-only
/// and masked paths) already bound network, capability and file use; the profile adds what
/// they cannot say: no mounts, no writes to the host's kernel interfaces in `/proc` and `/sys`
/// (but a process's own `/proc/PID`, the IPC namespace's sysctls and the container's
/// cgroups), nothing at all of firmware, powercap and securityfs, and signals and tracing only
/// among processes under this profile and from the node's runtime (`daemon`: criusd's own
/// profile, if it runs under one). `abi`: pin the 3.0 policy ABI (newer kernels mediate more
/// classes, which a profile written for 3.0 would otherwise deny).
pub fn default_profile(abi: bool, daemon: Option<&str>) -> String {
    let mut p = String::new();
    if abi {
        p.push_str("abi <abi/3.0>,\n\n");
    }
    p.push_str(&format!(
        "profile {DEFAULT_PROFILE} flags=(attach_disconnected,mediate_deleted) {{\n"
    ));
    p.push_str(
        "  network,\n  capability,\n  file,\n  umount,\n\n\
         \x20 signal (receive) peer=unconfined,\n",
    );
    if let Some(daemon) = daemon.filter(|d| plain_label(d)) {
        // criusd's exec helper opens the container's namespaces through /proc.
        p.push_str(&format!(
            "  signal (receive) peer={daemon},\n  ptrace (readby, tracedby) peer={daemon},\n"
        ));
    }
    p.push_str(&format!(
        "  signal (send, receive) peer={DEFAULT_PROFILE},\n\
         \x20 ptrace (trace, read, tracedby, readby) peer={DEFAULT_PROFILE},\n\n"
    ));
    for rule in [
        "deny mount,",
        // /proc: nothing at its top; of its trees only the processes' own and /proc/sys.
        "deny /proc/* w,",
        "deny /proc/[^0-9s]*/** w,",
        "deny /proc/s[^y]*/** w,",
        "deny /proc/sy[^s]*/** w,",
        "deny /proc/sys?*/** w,",
        "deny /proc/{s,sy}/** w,",
        // /proc/sys: only the IPC namespace's kernel.shm*, kernel.msg* and kernel.sem*.
        "deny /proc/sys/[^k]** w,",
        "deny /proc/sys/kernel/[^ms]** w,",
        "deny /proc/sys/kernel/m[^s]** w,",
        "deny /proc/sys/kernel/ms[^g]** w,",
        "deny /proc/sys/kernel/s[^he]** w,",
        "deny /proc/sys/kernel/sh[^m]** w,",
        "deny /proc/sys/kernel/se[^m]** w,",
        "deny /proc/sys/kernel/{m,s,ms,sh,se} w,",
        "deny /proc/sysrq-trigger rwklx,",
        "deny /proc/kcore rwklx,",
        // /sys: nothing written but the cgroup tree.
        "deny /sys/[^f]** wklx,",
        "deny /sys/f[^s]** wklx,",
        "deny /sys/fs/[^c]** wklx,",
        "deny /sys/fs/c[^g]** wklx,",
        "deny /sys/fs/cg[^r]** wklx,",
        "deny /sys/firmware/** rwklx,",
        "deny /sys/devices/virtual/powercap/** rwklx,",
        "deny /sys/kernel/security/** rwklx,",
    ] {
        p.push_str("  ");
        p.push_str(rule);
        p.push('\n');
    }
    p.push_str("}\n");
    p
}

impl Node {
    /// Finds whether this node enforces AppArmor and where its parser is.
    pub fn detect() -> Node {
        match std::fs::read_to_string(ENABLED) {
            Ok(v) if v.starts_with('Y') => {}
            Ok(_) => return Node::Off("the kernel's AppArmor module is disabled".into()),
            Err(_) => return Node::Off("the kernel has no AppArmor".into()),
        }
        if !Path::new(SECURITYFS).is_dir() {
            return Node::Off(format!("{SECURITYFS} is missing (securityfs not mounted)"));
        }
        Node::On {
            parser: PARSERS.iter().map(PathBuf::from).find(|p| p.is_file()),
            daemon: own_label(),
        }
    }

    /// Whether this node enforces AppArmor.
    pub fn enforced(&self) -> bool {
        matches!(self, Node::On { .. })
    }

    /// Loads (or replaces) crius' default profile; nothing to do where AppArmor is off.
    pub fn load_default(&self) -> Result<(), LoadError> {
        let Node::On { parser, daemon } = self else {
            return Ok(());
        };
        let parser = parser.as_ref().ok_or(LoadError::NoParser)?;
        let text = default_profile(Path::new(ABI_3).is_file(), daemon.as_deref());
        // -K: no cache of the compiled policy; -r: replace a loaded profile of that name.
        let mut child = Command::new(parser)
            .args(["-K", "-r"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| LoadError::Spawn {
                parser: parser.clone(),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            // A parser that stops reading reports why on stderr.
            let _ = stdin.write_all(text.as_bytes());
        }
        let spawn_failed = |source| LoadError::Spawn {
            parser: parser.clone(),
            source,
        };
        // The profile is small; a parser still busy after a minute is stuck.
        let deadline = std::time::Instant::now() + PARSER_TIMEOUT;
        while child.try_wait().map_err(spawn_failed)?.is_none() {
            if std::time::Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(LoadError::Timeout {
                    parser: parser.clone(),
                });
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let out = child.wait_with_output().map_err(spawn_failed)?;
        if out.status.success() {
            return Ok(());
        }
        let mut output = String::from_utf8_lossy(&out.stderr).trim().to_owned();
        if output.len() > MAX_PARSER_OUTPUT {
            let mut end = MAX_PARSER_OUTPUT;
            while !output.is_char_boundary(end) {
                end -= 1;
            }
            output.truncate(end);
            output.push('…');
        }
        Err(LoadError::Parser {
            parser: parser.clone(),
            status: out.status,
            output,
        })
    }

    /// The profile `request` runs under here (`None`: unconfined). The default profile is
    /// loaded again if it has gone; a Localhost profile must be loaded. Blocking (it reads
    /// securityfs and may run the parser).
    pub fn resolve(
        &self,
        field: &str,
        request: &Request,
        privileged: bool,
    ) -> Result<Option<String>, Refused> {
        let choice = choose(request, privileged, self.enforced(), field)?;
        let refuse = |field: &str, reason: String| Refused {
            field: field.to_owned(),
            reason,
        };
        let loaded = |field: &str, name: &str| {
            loaded_mode(name).map_err(|e| refuse(field, format!("cannot read {PROFILES}: {e}")))
        };
        match choice {
            Choice::None => Ok(None),
            Choice::Default => {
                if loaded(field, DEFAULT_PROFILE)?.is_some() {
                    return Ok(Some(DEFAULT_PROFILE.to_owned()));
                }
                match self.load_default() {
                    Ok(()) => Ok(Some(DEFAULT_PROFILE.to_owned())),
                    // A node without the policy compiler has AppArmor but no default to give:
                    // a container that names no profile runs as on a node without AppArmor.
                    Err(LoadError::NoParser) if *request == Request::Unset => Ok(None),
                    Err(e) => Err(refuse(
                        field,
                        format!("crius' default AppArmor profile is not loaded: {e}"),
                    )),
                }
            }
            Choice::Named { field, name } => match loaded(&field, &name)?.as_deref() {
                None => Err(refuse(
                    &field,
                    format!(
                        "AppArmor profile {} is not loaded on this node",
                        crate::validate::shown(&name)
                    ),
                )),
                // A profile loaded in unconfined mode confines nothing.
                Some("unconfined") => Err(refuse(
                    &field,
                    format!(
                        "AppArmor profile {} is loaded in unconfined mode, which confines nothing",
                        crate::validate::shown(&name)
                    ),
                )),
                Some(_) => Ok(Some(name)),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const F: &str = "config.linux.security_context.apparmor";

    fn localhost(name: &str) -> Request {
        Request::Localhost {
            field: format!("{F}.localhost_ref"),
            name: name.into(),
        }
    }

    #[test]
    fn unset_and_runtime_default_take_the_default_unless_privileged() {
        for request in [Request::Unset, Request::RuntimeDefault] {
            assert_eq!(choose(&request, false, true, F), Ok(Choice::Default));
            assert_eq!(choose(&request, true, true, F), Ok(Choice::None));
        }
        assert_eq!(
            choose(&Request::Unconfined, false, true, F),
            Ok(Choice::None)
        );
    }

    #[test]
    fn localhost_names_a_profile_even_for_privileged_containers() {
        let want = Choice::Named {
            field: format!("{F}.localhost_ref"),
            name: "my-profile".into(),
        };
        assert_eq!(choose(&localhost("my-profile"), true, true, F), Ok(want));
    }

    #[test]
    fn without_apparmor_only_unset_and_unconfined_pass() {
        assert_eq!(choose(&Request::Unset, false, false, F), Ok(Choice::None));
        assert_eq!(
            choose(&Request::Unconfined, false, false, F),
            Ok(Choice::None)
        );
        let err = choose(&Request::RuntimeDefault, false, false, F).unwrap_err();
        assert_eq!(err.field, F);
        assert!(err.reason.contains("not enabled"), "{err}");
        // Privileged does not turn a refusal into an unconfined run.
        assert!(choose(&Request::RuntimeDefault, true, false, F).is_err());
        let err = choose(&localhost("p"), false, false, F).unwrap_err();
        assert_eq!(err.field, format!("{F}.localhost_ref"));
    }

    #[test]
    fn the_profiles_list_is_matched_by_whole_name() {
        let list: &[u8] = b"crius-default (enforce)\nmy (profile) (complain)\n\xff\xfe (enforce)\n\
            /usr/bin/x (enforce)\nfirefox (unconfined)\n:ns://inner (enforce)\n";
        let mode = |name: &str| mode_in(list, name).expect("read");
        assert_eq!(mode("crius-default").as_deref(), Some("enforce"));
        assert_eq!(mode("my (profile)").as_deref(), Some("complain"));
        assert_eq!(mode("/usr/bin/x").as_deref(), Some("enforce"));
        assert_eq!(mode("firefox").as_deref(), Some("unconfined"));
        assert_eq!(mode("crius"), None);
        assert_eq!(mode("inner"), None, "another policy namespace's profile");
        assert_eq!(mode("crius-default (enforce)"), None);
        assert_eq!(mode_in(&b""[..], "crius-default").expect("read"), None);
    }

    /// The node's parser compiles the default profile (without loading it: `-Q`). Skipped,
    /// saying so, where no parser is installed.
    #[test]
    fn the_default_profile_compiles() {
        let Some(parser) = PARSERS.iter().map(Path::new).find(|p| p.is_file()) else {
            eprintln!("skipped: no apparmor_parser installed");
            return;
        };
        let abi = Path::new(ABI_3).is_file();
        for daemon in [None, Some("criusd")] {
            let mut child = Command::new(parser)
                .args(["-Q", "-K", "-S"])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run apparmor_parser");
            child
                .stdin
                .take()
                .expect("stdin")
                .write_all(default_profile(abi, daemon).as_bytes())
                .expect("write");
            let out = child.wait_with_output().expect("wait");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Nothing to warn about either (a kernel without AppArmor leaves a note on the
            // cache, which `-K` does not use anyway).
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(!stderr.to_lowercase().contains("warning"), "{stderr}");
        }
    }

    #[test]
    fn the_default_profile_pins_its_abi_and_names_its_peers() {
        let with = default_profile(true, Some("criusd"));
        assert!(with.starts_with("abi <abi/3.0>,\n"));
        assert!(
            with.contains("profile crius-default flags=(attach_disconnected,mediate_deleted) {")
        );
        assert!(with.contains("  signal (receive) peer=criusd,\n"));
        assert!(with.contains("  deny mount,\n"));
        assert!(with.trim_end().ends_with('}'));
        let without = default_profile(false, Some("bad label, with rules"));
        assert!(!without.contains("abi <"));
        assert!(!without.contains("bad label"));
        // Every rule line ends its rule.
        for line in without.lines().map(str::trim) {
            if !line.is_empty() && !line.ends_with('{') && line != "}" {
                assert!(line.ends_with(','), "{line}");
            }
        }
    }
}
