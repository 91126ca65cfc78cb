//! AppArmor end to end. On a node that enforces it (the VM run: Debian's kernel with the
//! `apparmor` package): containers that name no profile run under `crius-default` unless
//! privileged, and so do their execs, also when the container replaced its own `/proc`;
//! Localhost names a profile the node has loaded; a pod that names a profile confines its
//! sandbox process. On a node without it (this host): only unset and Unconfined are accepted.
//! Each test says when it is skipped for the kind of node it runs on.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cri_api::v1::*;
use crius_tests::env::{Env, pod_config, setup};

const DEFAULT: &str = "crius-default (enforce)";
const SC: &str = "config.linux.security_context";

/// Whether this node enforces AppArmor (the module is on and securityfs shows it).
fn enforced() -> bool {
    std::fs::read_to_string("/sys/module/apparmor/parameters/enabled")
        .is_ok_and(|v| v.starts_with('Y'))
        && Path::new("/sys/kernel/security/apparmor").is_dir()
}

/// The node's AppArmor parser; a node that enforces AppArmor must have it for these tests.
fn parser() -> PathBuf {
    ["/usr/sbin/apparmor_parser", "/sbin/apparmor_parser"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .expect("AppArmor is on here, but apparmor_parser is missing: install `apparmor`")
}

/// Skips (true) where the node does not enforce AppArmor.
fn skip_without_apparmor() -> bool {
    if enforced() {
        return false;
    }
    eprintln!("skipped: this node does not enforce AppArmor (the VM run covers it)");
    true
}

/// A profile the test loads into the node and removes again, even when the test fails.
struct NodeProfile {
    text: String,
}

impl NodeProfile {
    /// Loads `profile NAME { BODY }` (with the 3.0 ABI where the parser has it).
    fn load(name: &str, body: &str) -> NodeProfile {
        let abi = if Path::new("/etc/apparmor.d/abi/3.0").is_file() {
            "abi <abi/3.0>,\n"
        } else {
            ""
        };
        let text = format!(
            "{abi}profile {name} flags=(attach_disconnected,mediate_deleted) {{\n{body}\n}}\n"
        );
        assert!(parse(&["-K", "-r"], &text), "cannot load {name}");
        NodeProfile { text }
    }
}

impl Drop for NodeProfile {
    fn drop(&mut self) {
        parse(&["-R"], &self.text);
    }
}

/// Runs the parser with `args` on `text`; whether it succeeded.
fn parse(args: &[&str], text: &str) -> bool {
    let mut child = Command::new(parser())
        .args(args)
        .stdin(Stdio::piped())
        .spawn()
        .expect("apparmor_parser");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("write the profile");
    child.wait().expect("wait").success()
}

/// The container's security context, made where missing.
fn security(config: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
    config
        .linux
        .get_or_insert_default()
        .security_context
        .get_or_insert_default()
}

fn profile(kind: security_profile::ProfileType, localhost_ref: &str) -> Option<SecurityProfile> {
    Some(SecurityProfile {
        profile_type: kind.into(),
        localhost_ref: localhost_ref.into(),
    })
}

/// The label of host process `pid`.
fn label(pid: u64) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/attr/current"))
        .unwrap_or_else(|e| panic!("label of {pid}: {e}"))
        .trim_end_matches(['\n', '\0'])
        .to_owned()
}

/// ExecSync's stdout, trimmed, and its exit code.
async fn exec(env: &mut Env, id: &str, cmd: &[&str]) -> (String, i32) {
    let out = env.exec(id, cmd, 10).await.expect("exec");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        out.exit_code,
    )
}

/// What the probe script prints: the process's label, then whether it could mount a tmpfs
/// (needs CAP_SYS_ADMIN), write a sysctl of its network namespace (CAP_NET_ADMIN) and one of
/// its IPC namespace.
const PROBE: &str = "echo \"$(tr -d \\\\0 < /proc/self/attr/current)\"; mkdir -p /tmp/m; \
    mount -t tmpfs t /tmp/m 2>/dev/null && echo mount=yes || echo mount=no; \
    echo 1 > /proc/sys/net/ipv4/ip_forward 2>/dev/null && echo forward=yes || echo forward=no; \
    echo 4000 > /proc/sys/kernel/shmmni 2>/dev/null && echo shm=yes || echo shm=no; \
    sleep 300";

/// Unset and `runtime/default` run under crius-default, privileged and Unconfined run
/// unconfined. Under crius-default a root holding CAP_SYS_ADMIN and CAP_NET_ADMIN in its pod's
/// user namespace can neither mount nor write its network sysctls, which the same container
/// unconfined can; its IPC sysctls stay as the kernel allows. An exec runs under the
/// container's profile.
#[tokio::test]
#[allow(
    deprecated,
    reason = "the deprecated apparmor_profile field is read too"
)]
async fn containers_run_under_crius_default_unless_they_ask_otherwise() {
    if skip_without_apparmor() {
        return;
    }
    let mut env = setup(false).await;
    assert_eq!(status_apparmor(&mut env).await, "enforced");
    let pod = env.pod("aa-default", true).await;
    type Edit = fn(&mut LinuxContainerSecurityContext);
    let cases: [(&str, Edit, &str); 3] = [
        ("unset", |_| {}, DEFAULT),
        (
            "deprecated",
            |sc| sc.apparmor_profile = "runtime/default".into(),
            DEFAULT,
        ),
        (
            "unconfined",
            |sc| sc.apparmor = profile(security_profile::ProfileType::Unconfined, ""),
            "unconfined",
        ),
    ];
    let mut ids = Vec::new();
    for (name, edit, want) in cases {
        let mut config = env.container_config(name, PROBE);
        let sc = security(&mut config);
        sc.capabilities = Some(Capability {
            add_capabilities: vec!["CAP_SYS_ADMIN".into(), "CAP_NET_ADMIN".into()],
            ..Capability::default()
        });
        edit(sc);
        let id = env.run(&pod, config).await;
        assert_eq!(env.wait_stdout(name, 1).await[0], want, "{name}");
        ids.push((name, id, want));
    }
    let unconfined = env.wait_stdout("unconfined", 4).await;
    assert_eq!(
        unconfined[1..],
        ["mount=yes", "forward=yes", "shm=yes"],
        "the probe works"
    );
    for name in ["unset", "deprecated"] {
        let out = env.wait_stdout(name, 4).await;
        // The IPC namespace's sysctls stay writable.
        assert_eq!(out[1..], ["mount=no", "forward=no", "shm=yes"], "{name}");
    }
    for (name, id, want) in &ids {
        let (label, code) = exec(&mut env, id, &["cat", "/proc/self/attr/current"]).await;
        assert_eq!(
            (label.trim_end_matches('\0'), code),
            (*want, 0),
            "{name}: exec"
        );
    }
    let out = env
        .exec(&ids[0].1, &["mount", "-t", "tmpfs", "t", "/tmp/m"], 10)
        .await
        .expect("exec");
    assert_ne!(out.exit_code, 0, "an exec under crius-default mounted");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("Permission denied"), "{stderr}");

    // A privileged container is not confined by default.
    let privileged = env.privileged_pod("aa-privileged").await;
    let mut config = env.container_config("privileged", PROBE);
    security(&mut config).privileged = true;
    env.run(&privileged, config).await;
    assert_eq!(env.wait_stdout("privileged", 1).await[0], "unconfined");
}

/// Localhost runs the container (even a privileged one) and its execs under the named profile,
/// from the message or the deprecated `localhost/<name>` string; a profile the node has not
/// loaded is FailedPrecondition naming the field.
#[tokio::test]
#[allow(
    deprecated,
    reason = "the deprecated apparmor_profile field is read too"
)]
async fn localhost_profiles_must_be_loaded_and_apply() {
    if skip_without_apparmor() {
        return;
    }
    let name = "crius-test-localhost";
    let _profile = NodeProfile::load(
        name,
        "  file,\n  network,\n  capability,\n  signal,\n  ptrace,\n  umount,\n  \
         deny /etc/hostname r,",
    );
    let mut env = setup(false).await;
    let pod = env.privileged_pod("aa-localhost").await;
    let script = "echo \"$(tr -d \\\\0 < /proc/self/attr/current)\"; \
        cat /etc/hostname > /dev/null 2>&1 && echo read=yes || echo read=no; sleep 300";
    let want = [format!("{name} (enforce)"), "read=no".into()];
    type Edit = fn(&mut LinuxContainerSecurityContext);
    let cases: [(&str, Edit); 3] = [
        ("message", |sc| {
            sc.apparmor = profile(
                security_profile::ProfileType::Localhost,
                "crius-test-localhost",
            );
        }),
        ("deprecated", |sc| {
            sc.apparmor_profile = "localhost/crius-test-localhost".into();
        }),
        ("privileged", |sc| {
            sc.privileged = true;
            sc.apparmor = profile(
                security_profile::ProfileType::Localhost,
                "crius-test-localhost",
            );
        }),
    ];
    for (case, edit) in cases {
        let mut config = env.container_config(case, script);
        edit(security(&mut config));
        let id = env.run(&pod, config).await;
        assert_eq!(env.wait_stdout(case, 2).await, want, "{case}");
        let (_, code) = exec(&mut env, &id, &["cat", "/etc/hostname"]).await;
        assert_ne!(code, 0, "{case}: the exec read what its profile denies");
    }
    for (case, edit, field) in [
        (
            "missing",
            (|sc| {
                sc.apparmor = profile(
                    security_profile::ProfileType::Localhost,
                    "crius-test-missing",
                );
            }) as fn(&mut LinuxContainerSecurityContext),
            format!("{SC}.apparmor.localhost_ref"),
        ),
        (
            "missing-deprecated",
            |sc| sc.apparmor_profile = "localhost/crius-test-missing".into(),
            format!("{SC}.apparmor_profile"),
        ),
    ] {
        let mut config = env.container_config(case, "true");
        edit(security(&mut config));
        let err = env.create(&pod, config).await.expect_err(case);
        assert_eq!(
            err.code(),
            tonic::Code::FailedPrecondition,
            "{case}: {err:?}"
        );
        assert!(
            err.message().contains(&field) && err.message().contains("not loaded"),
            "{case}: {}",
            err.message()
        );
    }
}

/// The attacker: a root container of a user-namespaced pod (CAP_SYS_ADMIN there), under a
/// node profile that lets it unmount and write files but not mount (crius-default would not
/// let it plant anything in `/proc`), unmounts its `/proc` and plants regular files where a
/// runtime would ask for the exec's profile. An exec still runs under the container's profile
/// (it cannot mount), since crius asks through the host's `/proc`; an exec that asked through
/// the container's would have written to the planted file and run unconfined.
#[tokio::test]
async fn an_exec_is_confined_even_when_the_container_replaced_its_proc() {
    if skip_without_apparmor() {
        return;
    }
    let name = "crius-test-planted";
    let _profile = NodeProfile::load(
        name,
        "  file,\n  network,\n  capability,\n  signal,\n  ptrace,\n  umount,\n  deny mount,",
    );
    let mut env = setup(false).await;
    let pod = env.pod("aa-planted", true).await;
    let script = "if ! out=$(umount -l /proc 2>&1); then echo \"umount: $out\"; sleep 300; fi; \
        for d in self thread-self; do mkdir -p /proc/$d/attr/apparmor && \
        : > /proc/$d/attr/apparmor/exec && : > /proc/$d/attr/exec || echo \"cannot plant $d\"; done; \
        test -f /proc/thread-self/attr/apparmor/exec && echo planted; sleep 300";
    let mut config = env.container_config("planted", script);
    let sc = security(&mut config);
    sc.apparmor = profile(security_profile::ProfileType::Localhost, name);
    sc.capabilities = Some(Capability {
        add_capabilities: vec!["CAP_SYS_ADMIN".into()],
        ..Capability::default()
    });
    let id = env.run(&pod, config).await;
    assert_eq!(env.wait_stdout("planted", 1).await, ["planted"]);
    let (out, code) = exec(&mut env, &id, &["echo", "ok"]).await;
    assert_eq!((out.as_str(), code), ("ok", 0), "an exec works");
    let (out, code) = exec(
        &mut env,
        &id,
        &[
            "sh",
            "-c",
            "mkdir -p /tmp/m; mount -t tmpfs t /tmp/m && echo mounted || echo refused",
        ],
    )
    .await;
    assert_eq!(
        (out.as_str(), code),
        ("refused", 0),
        "the exec ran unconfined"
    );
}

/// A pod that names a profile runs its sandbox process under it (RuntimeDefault:
/// crius-default), with and without a user namespace, and its containers still run; one that
/// names none leaves it unconfined; a Localhost profile the node has not loaded is
/// FailedPrecondition naming the field.
#[tokio::test]
async fn a_profile_the_pod_names_confines_its_sandbox() {
    if skip_without_apparmor() {
        return;
    }
    let mut env = setup(false).await;
    for (name, userns, asked, want) in [
        ("aa-pod-plain", false, None, "unconfined"),
        (
            "aa-pod-default",
            false,
            profile(security_profile::ProfileType::RuntimeDefault, ""),
            DEFAULT,
        ),
        (
            "aa-pod-userns",
            true,
            profile(security_profile::ProfileType::RuntimeDefault, ""),
            DEFAULT,
        ),
    ] {
        let mut config = pod_config(name, userns, env.logs.path());
        pod_security(&mut config).apparmor = asked;
        let pod = env.pod_from(config).await;
        let pid = env.monitor_state(&pod.0)["sandbox_pid"]
            .as_u64()
            .expect("sandbox pid");
        assert_eq!(label(pid), want, "{name}");
        let c = format!("{name}-c");
        env.run(&pod, env.container_config(&c, "echo up; sleep 300"))
            .await;
        assert_eq!(env.wait_stdout(&c, 1).await, ["up"], "{name}");
    }
    let mut config = pod_config("aa-pod-missing", false, env.logs.path());
    pod_security(&mut config).apparmor = profile(
        security_profile::ProfileType::Localhost,
        "crius-test-missing",
    );
    let err = run_pod(&mut env, config)
        .await
        .expect_err("missing profile");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message()
            .contains(&format!("{SC}.apparmor.localhost_ref")),
        "{}",
        err.message()
    );
}

/// On a node without AppArmor, unset and Unconfined (message or string) run; RuntimeDefault
/// and Localhost, for a container or a pod, are FailedPrecondition naming the field, never run
/// unconfined.
#[tokio::test]
#[allow(
    deprecated,
    reason = "the deprecated apparmor_profile field is read too"
)]
async fn without_apparmor_only_unset_and_unconfined_are_accepted() {
    if enforced() {
        eprintln!("skipped: this node enforces AppArmor");
        return;
    }
    let mut env = setup(false).await;
    let said = status_apparmor(&mut env).await;
    assert!(said.starts_with("off: "), "{said}");
    let pod = env.pod("aa-off", false).await;
    type Edit = fn(&mut LinuxContainerSecurityContext);
    let accepted: [(&str, Edit); 3] = [
        ("unset", |_| {}),
        ("unconfined", |sc| {
            sc.apparmor = profile(security_profile::ProfileType::Unconfined, "");
        }),
        ("unconfined-string", |sc| {
            sc.apparmor_profile = "unconfined".into()
        }),
    ];
    for (name, edit) in accepted {
        let mut config = env.container_config(name, "echo ran");
        edit(security(&mut config));
        env.run(&pod, config).await;
        assert_eq!(env.wait_stdout(name, 1).await, ["ran"], "{name}");
    }
    let refused: [(&str, Edit, &str); 4] = [
        (
            "runtime-default",
            |sc| sc.apparmor = profile(security_profile::ProfileType::RuntimeDefault, ""),
            "security_context.apparmor",
        ),
        (
            "runtime-default-string",
            |sc| sc.apparmor_profile = "runtime/default".into(),
            "security_context.apparmor",
        ),
        (
            "localhost",
            |sc| sc.apparmor = profile(security_profile::ProfileType::Localhost, "k8s-nginx"),
            "security_context.apparmor.localhost_ref",
        ),
        (
            "localhost-string",
            |sc| sc.apparmor_profile = "localhost/k8s-nginx".into(),
            "security_context.apparmor_profile",
        ),
    ];
    for (name, edit, field) in refused {
        let mut config = env.container_config(name, "true");
        edit(security(&mut config));
        let err = env.create(&pod, config).await.expect_err(name);
        assert_eq!(
            err.code(),
            tonic::Code::FailedPrecondition,
            "{name}: {err:?}"
        );
        assert!(
            err.message().contains(field) && err.message().contains("not enabled"),
            "{name}: {}",
            err.message()
        );
    }
    for (name, kind, localhost_ref) in [
        (
            "aa-off-default",
            security_profile::ProfileType::RuntimeDefault,
            "",
        ),
        (
            "aa-off-localhost",
            security_profile::ProfileType::Localhost,
            "k8s-nginx",
        ),
    ] {
        let mut config = pod_config(name, false, env.logs.path());
        pod_security(&mut config).apparmor = profile(kind, localhost_ref);
        let err = run_pod(&mut env, config).await.expect_err(name);
        assert_eq!(
            err.code(),
            tonic::Code::FailedPrecondition,
            "{name}: {err:?}"
        );
        assert!(
            err.message().contains("not enabled"),
            "{name}: {}",
            err.message()
        );
    }
}

/// Malformed AppArmor fields are InvalidArgument naming the field, on any node.
#[tokio::test]
#[allow(
    deprecated,
    reason = "the deprecated apparmor_profile field is read too"
)]
async fn malformed_apparmor_fields_are_invalid_arguments() {
    let mut env = setup(false).await;
    let pod = env.pod("aa-bad", false).await;
    type Edit = fn(&mut LinuxContainerSecurityContext);
    let cases: [(&str, Edit, &str); 7] = [
        (
            "string",
            |sc| sc.apparmor_profile = "bogus".into(),
            "security_context.apparmor_profile",
        ),
        (
            "ref-without-localhost",
            |sc| {
                sc.apparmor = profile(security_profile::ProfileType::RuntimeDefault, "p");
            },
            "security_context.apparmor.localhost_ref",
        ),
        (
            "unknown-type",
            |sc| {
                sc.apparmor = Some(SecurityProfile {
                    profile_type: 9,
                    localhost_ref: String::new(),
                });
            },
            "security_context.apparmor",
        ),
        (
            "empty-name",
            |sc| sc.apparmor = profile(security_profile::ProfileType::Localhost, ""),
            "security_context.apparmor.localhost_ref",
        ),
        (
            "control-character",
            |sc| sc.apparmor_profile = "localhost/a\nb".into(),
            "security_context.apparmor_profile",
        ),
        (
            "policy-namespace",
            |sc| sc.apparmor_profile = "localhost/:inner://p".into(),
            "security_context.apparmor_profile",
        ),
        (
            "hat",
            |sc| {
                sc.apparmor = profile(security_profile::ProfileType::Localhost, "p//hat");
            },
            "security_context.apparmor.localhost_ref",
        ),
    ];
    for (name, edit, field) in cases {
        let mut config = env.container_config(name, "true");
        edit(security(&mut config));
        let err = env.create(&pod, config).await.expect_err(name);
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{name}: {err:?}");
        assert!(err.message().contains(field), "{name}: {}", err.message());
    }
    let mut config = pod_config("aa-bad-pod", false, env.logs.path());
    pod_security(&mut config).apparmor = profile(security_profile::ProfileType::Unconfined, "p");
    let err = run_pod(&mut env, config).await.expect_err("pod");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(
        err.message()
            .contains("security_context.apparmor.localhost_ref"),
        "{}",
        err.message()
    );
}

/// The sandbox security context of `config`, made where missing.
fn pod_security(config: &mut PodSandboxConfig) -> &mut LinuxSandboxSecurityContext {
    config
        .linux
        .get_or_insert_default()
        .security_context
        .get_or_insert_default()
}

/// What the verbose runtime Status says of the node's AppArmor.
async fn status_apparmor(env: &mut Env) -> String {
    let status = env
        .daemon
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .expect("Status")
        .into_inner();
    let config: serde_json::Value =
        serde_json::from_str(&status.info["config"]).expect("config json");
    config["apparmor"].as_str().unwrap_or_default().to_owned()
}

/// RunPodSandbox, its error kept.
async fn run_pod(env: &mut Env, config: PodSandboxConfig) -> Result<String, tonic::Status> {
    env.daemon
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: String::new(),
        })
        .await
        .map(|r| r.into_inner().pod_sandbox_id)
}
