//! End-to-end checks of what critest's conformance specs assert, one test per fixed spec: a
//! real criusd, real pod monitors and libcontainer, busybox images from a test registry.

use std::time::Duration;

use cri_api::v1::*;
use crius_tests::env::{Env, pod_config, setup, with_userns};

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
    let config = with_userns(
        pod_config("userns-pod", false, env.logs.path()),
        1000,
        100_000,
    );
    let pod = env.pod_from(config).await;
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
