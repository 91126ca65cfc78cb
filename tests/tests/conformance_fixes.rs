//! End-to-end checks of what critest's conformance specs assert, one test per fixed spec: a
//! real criusd, real pod monitors and libcontainer, busybox images from a test registry.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use cri_api::v1::*;
use crius_tests::harness::{Criusd, Options};
use crius_tests::image::{busybox, busybox_with_image_user};
use crius_tests::registry::Registry;

const HOST_ID: u32 = 200_000;
const MAP_LEN: u32 = 65_536;

struct Env {
    daemon: Criusd,
    image: String,
    logs: tempfile::TempDir,
    _registry: Registry,
}

async fn setup(with_image_user: bool) -> Env {
    let registry = Registry::start().expect("registry");
    let img = if with_image_user {
        busybox_with_image_user().expect("image")
    } else {
        busybox().expect("image")
    };
    let pushed = img
        .push(&registry.host(), "crius/busybox:1")
        .await
        .expect("push");
    let mut daemon = Criusd::start_with(Options {
        config: format!("insecure_registries = [\"{}\"]\n", registry.host()),
        ..Options::default()
    })
    .await
    .expect("criusd");
    daemon
        .images
        .pull_image(PullImageRequest {
            image: Some(ImageSpec {
                image: pushed.reference.clone(),
                ..ImageSpec::default()
            }),
            auth: None,
            sandbox_config: None,
        })
        .await
        .expect("pull");
    let logs = tempfile::Builder::new()
        .prefix("crius-logs-")
        .tempdir()
        .expect("tempdir");
    Env {
        daemon,
        image: pushed.reference,
        logs,
        _registry: registry,
    }
}

fn pod_config(name: &str, userns: bool, log_dir: &Path) -> PodSandboxConfig {
    let map = IdMapping {
        host_id: HOST_ID,
        container_id: 0,
        length: MAP_LEN,
    };
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("uid-{name}"),
            namespace: "crius-test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption {
                    userns_options: userns.then(|| UserNamespace {
                        mode: NamespaceMode::Pod.into(),
                        uids: vec![map],
                        gids: vec![map],
                    }),
                    ..NamespaceOption::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl Env {
    async fn pod(&mut self, name: &str, userns: bool) -> (String, PodSandboxConfig) {
        let config = pod_config(name, userns, self.logs.path());
        let id = self
            .daemon
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .expect("run pod")
            .into_inner()
            .pod_sandbox_id;
        (id, config)
    }

    fn container_config(&self, name: &str, script: &str) -> ContainerConfig {
        ContainerConfig {
            metadata: Some(ContainerMetadata {
                name: name.into(),
                attempt: 0,
            }),
            image: Some(ImageSpec {
                image: self.image.clone(),
                ..ImageSpec::default()
            }),
            command: vec!["/bin/sh".into(), "-c".into(), script.into()],
            log_path: format!("{name}.log"),
            labels: HashMap::from([("app".into(), name.into())]),
            annotations: HashMap::from([("note".into(), "n".into())]),
            linux: Some(LinuxContainerConfig::default()),
            ..ContainerConfig::default()
        }
    }

    async fn create(
        &mut self,
        pod: &(String, PodSandboxConfig),
        config: ContainerConfig,
    ) -> Result<String, tonic::Status> {
        self.daemon
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.0.clone(),
                config: Some(config),
                sandbox_config: Some(pod.1.clone()),
            })
            .await
            .map(|r| r.into_inner().container_id)
    }

    async fn start(&mut self, id: &str) {
        self.daemon
            .runtime
            .start_container(StartContainerRequest {
                container_id: id.into(),
            })
            .await
            .expect("start");
    }

    async fn run(&mut self, pod: &(String, PodSandboxConfig), config: ContainerConfig) -> String {
        let id = self.create(pod, config).await.expect("create");
        self.start(&id).await;
        id
    }

    async fn status(&mut self, id: &str) -> ContainerStatus {
        self.daemon
            .runtime
            .container_status(ContainerStatusRequest {
                container_id: id.into(),
                verbose: true,
            })
            .await
            .expect("status")
            .into_inner()
            .status
            .expect("status body")
    }

    async fn wait_exit(&mut self, id: &str, timeout: Duration) -> ContainerStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.status(id).await;
            if s.state == ContainerState::ContainerExited as i32 {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "container {id} did not exit: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The lines of a container's CRI log, checked for the format, as (stream, tag, text).
    fn log_lines(&self, name: &str) -> Vec<(String, String, String)> {
        let text = std::fs::read_to_string(self.logs.path().join(format!("{name}.log")))
            .unwrap_or_default();
        text.lines()
            .map(|l| {
                let parts: Vec<&str> = l.splitn(4, ' ').collect();
                assert_eq!(parts.len(), 4, "CRI log line {l:?}");
                let ts = parts[0];
                assert!(
                    ts.len() == 30 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
                    "RFC3339Nano time in {l:?}"
                );
                assert!(parts[1] == "stdout" || parts[1] == "stderr", "{l:?}");
                assert!(parts[2] == "F" || parts[2] == "P", "{l:?}");
                (
                    parts[1].to_owned(),
                    parts[2].to_owned(),
                    parts[3].to_owned(),
                )
            })
            .collect()
    }

    fn stdout(&self, name: &str) -> Vec<String> {
        self.log_lines(name)
            .into_iter()
            .filter(|(s, _, _)| s == "stdout")
            .map(|(_, _, t)| t)
            .collect()
    }
}

/// Every file under `dir` with its owner, for before/after comparisons.
impl Env {
    async fn exec(
        &mut self,
        id: &str,
        cmd: &[&str],
        timeout: i64,
    ) -> Result<ExecSyncResponse, tonic::Status> {
        self.daemon
            .runtime
            .exec_sync(ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|c| (*c).to_owned()).collect(),
                timeout,
            })
            .await
            .map(|r| r.into_inner())
    }
}

/// critest "Idempotence StopContainer should not return an error if not found".
#[tokio::test]
async fn stop_container_of_an_unknown_id_is_ok() {
    let mut env = setup(false).await;
    env.daemon
        .runtime
        .stop_container(StopContainerRequest {
            container_id: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef".into(),
            timeout: 0,
        })
        .await
        .expect("StopContainer of an unknown id answers OK");
}

/// critest "runtime should support execSync with timeout": the timed-out command is gone
/// before ExecSync answers DeadlineExceeded's successor call.
#[tokio::test]
async fn exec_sync_timeout_kills_the_command() {
    let mut env = setup(false).await;
    let pod = env.pod("exec-timeout", false).await;
    let id = env
        .run(
            &pod,
            env.container_config("exec-timeout", "exec tail -f /dev/null"),
        )
        .await;
    let err = env
        .exec(&id, &["sleep", "4321"], 1)
        .await
        .expect_err("exec must time out");
    assert_eq!(err.code(), tonic::Code::DeadlineExceeded, "{err:?}");
    let out = env
        .exec(&id, &["sh", "-c", "for p in /proc/[0-9]*; do read c < $p/comm && [ \"$c\" = sleep ] && echo ${p#/proc/}; done; true"], 10)
        .await
        .expect("exec");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(stderr.is_empty(), "stderr: {stderr}");
    assert!(stdout.trim().is_empty(), "left over: {stdout:?}");
}

/// critest "runtime should return error if RunAsGroup is set without RunAsUser".
#[tokio::test]
async fn run_as_group_without_run_as_user_is_invalid() {
    let mut env = setup(false).await;
    let pod = env.pod("run-as-group", false).await;
    let mut config = env.container_config("run-as-group", "id");
    config
        .linux
        .get_or_insert_default()
        .security_context
        .get_or_insert_default()
        .run_as_group = Some(Int64Value { value: 1002 });
    let err = env.create(&pod, config).await.expect_err("refused");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("run_as_group"), "{}", err.message());
}

/// The effective capability mask of a running container's first process, read by an exec.
async fn cap_eff(env: &mut Env, id: &str) -> u64 {
    let out = env
        .exec(id, &["cat", "/proc/self/status"], 10)
        .await
        .expect("exec");
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let status = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .expect("CapEff");
    u64::from_str_radix(line.trim(), 16).expect("hex")
}

/// Every capability this host gives its root processes (criusd's bounding set, which may
/// lack some, such as CAP_SYS_RESOURCE in a VM sandbox).
fn all_caps_mask() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("status");
    let bounding = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .expect("CapBnd");
    u64::from_str_radix(bounding.trim(), 16).expect("hex")
}

/// critest "runtime should support Privileged is true": a privileged container in a
/// privileged pod runs and has every capability.
#[tokio::test]
async fn privileged_container_in_a_privileged_pod_runs() {
    let mut env = setup(false).await;
    let pod = env.privileged_pod("privileged").await;
    let mut c = env.container_config("privileged", "exec tail -f /dev/null");
    c.linux
        .get_or_insert_default()
        .security_context
        .get_or_insert_default()
        .privileged = true;
    let cid = env.run(&pod, c).await;
    assert_eq!(
        env.status(&cid).await.state,
        ContainerState::ContainerRunning as i32
    );
    assert_eq!(cap_eff(&mut env, &cid).await, all_caps_mask());
}

/// critest "runtime should support adding ALL capabilities".
#[tokio::test]
async fn adding_all_capabilities() {
    let mut env = setup(false).await;
    let pod = env.pod("all-caps", false).await;
    let mut c = env.container_config("all-caps", "exec tail -f /dev/null");
    c.linux
        .get_or_insert_default()
        .security_context
        .get_or_insert_default()
        .capabilities = Some(Capability {
        add_capabilities: vec!["ALL".into()],
        ..Capability::default()
    });
    let cid = env.run(&pod, c).await;
    assert_eq!(cap_eff(&mut env, &cid).await, all_caps_mask());
}

/// critest "Container Mount Readonly … non-recursive / recursive readonly mounts": with the
/// container still running, the host unmounts the tmpfs under the volume (MNT_DETACH) and
/// removes the volume; no copy of the tmpfs may be left on the host side.
#[tokio::test]
async fn readonly_volume_with_a_submount_can_be_removed_while_the_container_runs() {
    for rro in [false, true] {
        let volume = tempfile::Builder::new()
            .prefix("crius-ro-sub-")
            .tempdir()
            .expect("tempdir");
        let sub = volume.path().join("tmpfs");
        std::fs::create_dir(&sub).expect("mkdir");
        nix::mount::mount(
            Some("none"),
            &sub,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .expect("tmpfs");
        let mut env = setup(false).await;
        let pod = env.privileged_pod("ro-sub").await;
        let mut c = env.container_config("ro-sub", "exec tail -f /dev/null");
        c.mounts = vec![Mount {
            container_path: "/mnt".into(),
            host_path: volume.path().display().to_string(),
            readonly: true,
            recursive_read_only: rro,
            selinux_relabel: true,
            ..Mount::default()
        }];
        let id = env.run(&pod, c).await;
        let cmd: &[&str] = if rro {
            &[
                "sh",
                "-c",
                "touch /mnt/tmpfs/foo 2>&1 | grep -q 'Read-only file system'",
            ]
        } else {
            &["touch", "/mnt/tmpfs/file"]
        };
        let out = env.exec(&id, cmd, 10).await.expect("exec");
        assert_eq!(out.exit_code, 0, "rro={rro}: {out:?}");
        assert!(out.stderr.is_empty(), "rro={rro}: {out:?}");
        nix::mount::umount2(&sub, nix::mount::MntFlags::MNT_DETACH).expect("umount");
        if let Err(e) = std::fs::remove_dir(&sub) {
            let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            let name = volume.path().display().to_string();
            let lines: Vec<&str> = info.lines().filter(|l| l.contains(&name)).collect();
            panic!(
                "rro={rro}: cannot remove {}: {e}; host mounts: {lines:#?}",
                sub.display()
            );
        }
    }
}

impl Env {
    /// A pod whose sandbox security context is privileged (critest's createPrivilegedPodSandbox).
    async fn privileged_pod(&mut self, name: &str) -> (String, PodSandboxConfig) {
        let mut config = pod_config(name, false, self.logs.path());
        config
            .linux
            .get_or_insert_default()
            .security_context
            .get_or_insert_default()
            .privileged = true;
        let id = self
            .daemon
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .expect("run pod")
            .into_inner()
            .pod_sandbox_id;
        (id, config)
    }
}

/// critest "Container Mount Propagation": a privileged container in a privileged pod mounts
/// `mnt` (a bind of itself, rprivate or rshared on the host) at the same path; the host then
/// binds a directory inside it, the container binds /etc inside it, and each side checks what
/// it sees of the other's mount.
#[tokio::test]
async fn mount_propagation_private_bidirectional_and_host_to_container() {
    use nix::mount::{MntFlags, MsFlags, mount, umount2};
    let mut env = setup(false).await;
    let pod = env.privileged_pod("propagation").await;
    for (propagation, host_sees_container, container_sees_host) in [
        (MountPropagation::PropagationPrivate, false, false),
        (MountPropagation::PropagationBidirectional, true, true),
        (MountPropagation::PropagationHostToContainer, false, true),
    ] {
        let host = tempfile::Builder::new()
            .prefix("crius-propagation-")
            .tempdir()
            .expect("tempdir");
        let source = host.path().join("mnt");
        let host_mnt = source.join("propagationMnt");
        std::fs::create_dir_all(&host_mnt).expect("mkdir");
        let src_dir = host.path().join("propagationSrcDir");
        std::fs::create_dir_all(&src_dir).expect("mkdir");
        std::fs::write(src_dir.join("flagFile"), "").expect("flag");
        let flags = if propagation == MountPropagation::PropagationPrivate {
            MsFlags::MS_PRIVATE
        } else {
            MsFlags::MS_SHARED
        };
        mount(
            Some(&source),
            &source,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .expect("bind");
        mount(
            None::<&str>,
            &source,
            None::<&str>,
            flags | MsFlags::MS_REC,
            None::<&str>,
        )
        .expect("propagation");
        let path = source.display().to_string();
        let mut c = env.container_config("propagation", "exec tail -f /dev/null");
        c.linux
            .get_or_insert_default()
            .security_context
            .get_or_insert_default()
            .privileged = true;
        c.mounts = vec![Mount {
            container_path: path.clone(),
            host_path: path.clone(),
            propagation: propagation.into(),
            ..Mount::default()
        }];
        let id = env.run(&pod, c).await;
        mount(
            Some(&src_dir),
            &host_mnt,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .expect("host mount");
        let out = env
            .exec(&id, &["ls", "-A", &host_mnt.display().to_string()], 10)
            .await
            .expect("exec");
        assert_eq!(out.exit_code, 0, "{propagation:?}: {out:?}");
        assert_eq!(
            !out.stdout.is_empty(),
            container_sees_host,
            "{propagation:?}: the container sees {:?}",
            String::from_utf8_lossy(&out.stdout)
        );
        let container_mnt = source.join("containerMntPoint");
        let script = format!(
            "mkdir -p {0} && mount --bind /etc {0}",
            container_mnt.display()
        );
        let out = env
            .exec(&id, &["sh", "-c", &script], 10)
            .await
            .expect("exec");
        assert_eq!(out.exit_code, 0, "{propagation:?}: {out:?}");
        assert!(out.stderr.is_empty(), "{propagation:?}: {out:?}");
        let seen = std::fs::read_dir(&container_mnt)
            .expect("read_dir")
            .next()
            .is_some();
        assert_eq!(seen, host_sees_container, "{propagation:?}: host view");
        env.daemon
            .runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
            .expect("remove");
        let _ = umount2(&container_mnt, MntFlags::MNT_DETACH);
        umount2(&host_mnt, MntFlags::MNT_DETACH).expect("umount host mount");
        umount2(&source, MntFlags::MNT_DETACH).expect("umount source");
    }
}

/// critest "Security Context UserNamespaces … runtime should support NamespaceMode_POD": a
/// pod with uids and gids 0 → 1000 (length 100000) runs a container that sees that mapping.
#[tokio::test]
async fn userns_pod_mode_shows_the_requested_mapping() {
    let mut env = setup(false).await;
    let mut config = pod_config("userns-pod", true, env.logs.path());
    let map = IdMapping {
        host_id: 1000,
        container_id: 0,
        length: 100_000,
    };
    let userns = config
        .linux
        .get_or_insert_default()
        .security_context
        .get_or_insert_default()
        .namespace_options
        .get_or_insert_default()
        .userns_options
        .get_or_insert_default();
    userns.uids = vec![map];
    userns.gids = vec![map];
    let id = env
        .daemon
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id;
    let pod = (id, config);
    let cid = env
        .run(
            &pod,
            env.container_config("userns-pod", "cat /proc/self/uid_map"),
        )
        .await;
    env.wait_exit(&cid, Duration::from_secs(20)).await;
    let lines = env.stdout("userns-pod");
    let fields: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(fields, [["0", "1000", "100000"]], "{lines:?}");
}
