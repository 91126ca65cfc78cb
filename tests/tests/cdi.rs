//! CDI devices end to end: spec files in a directory criusd is configured with
//! (`cdi_spec_dirs`), containers asking for devices through `CDI_devices` (and the older
//! `cdi.k8s.io/*` annotations), their edits (env, device nodes, bind mounts, additional gids,
//! hooks) checked from inside the container and on the host.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cri_api::v1::*;
use crius_tests::env::{Env, setup_config};

/// A spec directory and the config line that points criusd at it.
fn spec_dir() -> (tempfile::TempDir, String) {
    let dir = tempfile::Builder::new()
        .prefix("crius-cdi-")
        .tempdir()
        .expect("tempdir");
    let line = format!("cdi_spec_dirs = [{:?}]\n", dir.path().display().to_string());
    (dir, line)
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write spec");
}

fn cdi(names: &[&str]) -> Vec<CdiDevice> {
    names
        .iter()
        .map(|n| CdiDevice {
            name: (*n).to_owned(),
        })
        .collect()
}

/// A character device node on the host, removed on drop.
struct HostNode(PathBuf);

impl HostNode {
    fn new(path: &str, major: u64, minor: u64) -> HostNode {
        use nix::sys::stat::{Mode, SFlag, makedev, mknod};
        let path = PathBuf::from(path);
        let _ = std::fs::remove_file(&path);
        mknod(
            &path,
            SFlag::S_IFCHR,
            Mode::from_bits_truncate(0o666),
            makedev(major, minor),
        )
        .expect("mknod");
        // mknod applied the umask; a user-namespaced pod's root is "others" to this node.
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
            .expect("chmod");
        HostNode(path)
    }
}

impl Drop for HostNode {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Waits until the file exists and returns its text.
fn wait_file(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(path)
            && !text.is_empty()
        {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What each container prints: the env, the nodes, the mount, its groups.
///
/// Each pod here runs one container: on a cgroup v1 node libcontainer 0.7 resolves the
/// container init's pid in the pod's pid namespace against the host's /proc when it mounts
/// the cgroup view (`mount_cgroup_v1`), so a later container of a pod can fail "failed to
/// prepare rootfs" when that pid does not exist on the host (not a CDI matter).
const PROBE: &str = r#"
echo "env=$CRIUS_CDI $CRIUS_CDI_SPEC"
echo "node=$(stat -c '%t %T %F' "$NODE")"
echo "write=$(echo x > "$NODE" && echo ok)"
echo "data=$(cat /cdi-data/hello.txt)"
echo "owner=$(stat -c '%u' /cdi-data/hello.txt)"
echo "mount=$(touch /cdi-data/new 2>/dev/null && echo rw || echo ro)"
echo "flags=$(grep ' /cdi-data ' /proc/self/mounts | cut -d' ' -f4)"
echo "groups=$(id -G)"
if [ -e /dev/crius-cdi-zero ]; then echo "zero=$(stat -c '%t %T' /dev/crius-cdi-zero)"; fi
"#;

async fn run_probe(
    env: &mut Env,
    pod: &(String, PodSandboxConfig),
    name: &str,
    node: &str,
    devices: &[&str],
) -> (String, Vec<String>) {
    let mut config = env.container_config(name, &format!("NODE={node}\n{PROBE}"));
    config.cdi_devices = cdi(devices);
    let id = env.run(pod, config).await;
    let s = env.wait_exit(&id, Duration::from_secs(20)).await;
    assert_eq!(s.exit_code, 0, "{name}: {:?}", env.stdout(name));
    (id, env.stdout(name))
}

#[tokio::test]
async fn cdi_devices_are_injected() {
    let (specs, line) = spec_dir();
    let data = tempfile::tempdir().expect("tempdir");
    std::fs::write(data.path().join("hello.txt"), "from-the-host").expect("write");
    let hooks = tempfile::tempdir().expect("tempdir");
    let state = hooks.path().join("state.json");
    // In a user-namespaced pod a node is bound from the host's node at the same path.
    let host_node = format!("/dev/crius-cdi-test-{}", std::process::id());
    let _node = HostNode::new(&host_node, 1, 3);
    let spec = format!(
        r#"---
cdiVersion: "0.7.0"
kind: crius.test/dev
containerEdits:
  env:
  - CRIUS_CDI_SPEC=global
devices:
- name: null0
  containerEdits:
    env: ["CRIUS_CDI=injected"]
    deviceNodes:
    - path: /dev/crius-cdi-null
      type: c
      major: 1
      minor: 3
      permissions: rw
    - path: /dev/crius-cdi-zero
      hostPath: /dev/zero
    mounts:
    - hostPath: {data}
      containerPath: /cdi-data
      options: [ro, nosuid, nodev, bind]
    hooks:
    - hookName: poststart
      path: /bin/sh
      args: [sh, -c, "/bin/cat > {state}"]
    additionalGids: [4321]
- name: userns0
  containerEdits:
    env: ["CRIUS_CDI=injected"]
    deviceNodes:
    - path: {host_node}
    mounts:
    - hostPath: {data}
      containerPath: /cdi-data
      options: [ro, nosuid, nodev, rbind]
    additionalGids: [4321]
"#,
        data = data.path().display(),
        state = state.display(),
    );
    write(specs.path(), "crius-test.yaml", &spec);
    // A malformed file in the same directory does not take the others' devices with it.
    write(specs.path(), "broken.yaml", "cdiVersion: [\nkind: {\n");
    let mut env = setup_config(false, &line).await;

    let pod = env.pod("cdi", false).await;
    let (id, out) = run_probe(
        &mut env,
        &pod,
        "cdi",
        "/dev/crius-cdi-null",
        &["crius.test/dev=null0"],
    )
    .await;
    eprintln!("{out:?}");
    assert!(out.contains(&"env=injected global".to_owned()), "{out:?}");
    assert!(
        out.contains(&"node=1 3 character special file".to_owned()),
        "{out:?}"
    );
    assert!(out.contains(&"write=ok".to_owned()), "{out:?}");
    assert!(out.contains(&"data=from-the-host".to_owned()), "{out:?}");
    assert!(out.contains(&"owner=0".to_owned()), "{out:?}");
    assert!(out.contains(&"mount=ro".to_owned()), "{out:?}");
    let flags = out
        .iter()
        .find_map(|l| l.strip_prefix("flags="))
        .expect("flags");
    assert!(
        ["ro", "nosuid", "nodev"]
            .iter()
            .all(|f| flags.split(',').any(|x| x == *f)),
        "{out:?}"
    );
    let groups = out
        .iter()
        .find_map(|l| l.strip_prefix("groups="))
        .expect("groups");
    assert!(groups.split(' ').any(|g| g == "4321"), "{out:?}");
    // The node the spec left to the host's /dev/zero has its numbers.
    assert!(out.contains(&"zero=1 5".to_owned()), "{out:?}");
    // The poststart hook ran on the host with the container's state on stdin.
    let text = wait_file(&state);
    assert!(text.contains(&id), "{text}");

    // A user-namespaced pod: a char device that keeps its host path; the mount is idmapped
    // (host root's file is root's in the pod).
    let userns_pod = env.pod("cdi-userns", true).await;
    let (_, out) = run_probe(
        &mut env,
        &userns_pod,
        "cdi-userns",
        &host_node,
        &["crius.test/dev=userns0"],
    )
    .await;
    eprintln!("{out:?}");
    assert!(out.contains(&"env=injected global".to_owned()), "{out:?}");
    assert!(
        out.contains(&"node=1 3 character special file".to_owned()),
        "{out:?}"
    );
    assert!(out.contains(&"write=ok".to_owned()), "{out:?}");
    assert!(out.contains(&"data=from-the-host".to_owned()), "{out:?}");
    assert!(out.contains(&"owner=0".to_owned()), "{out:?}");
    assert!(out.contains(&"mount=ro".to_owned()), "{out:?}");
    let flags = out
        .iter()
        .find_map(|l| l.strip_prefix("flags="))
        .expect("flags");
    assert!(
        ["ro", "nosuid", "nodev"]
            .iter()
            .all(|f| flags.split(',').any(|x| x == *f)),
        "{out:?}"
    );
    let groups = out
        .iter()
        .find_map(|l| l.strip_prefix("groups="))
        .expect("groups");
    assert!(groups.split(' ').any(|g| g == "4321"), "{out:?}");
    // The same rules as CRI devices: a node without a host node at its path is refused.
    let mut config = env.container_config("cdi-userns-null", "true");
    config.cdi_devices = cdi(&["crius.test/dev=null0"]);
    let err = env
        .create(&userns_pod, config)
        .await
        .expect_err("a node at another path than on the host in a user-namespaced pod");
    assert!(
        err.message().contains("crius.test/dev=null0"),
        "{}",
        err.message()
    );
}

#[tokio::test]
async fn unknown_and_malformed_cdi_devices() {
    let (specs, line) = spec_dir();
    write(
        specs.path(),
        "good.yaml",
        "cdiVersion: 0.6.0\nkind: crius.test/good\ndevices:\n- name: ok\n  containerEdits:\n    env: [CRIUS_CDI_GOOD=yes]\n",
    );
    write(specs.path(), "a-broken.yaml", "cdiVersion: [\n  - \"\n");
    write(
        specs.path(),
        "b-unknown-field.json",
        r#"{"cdiVersion":"0.6.0","kind":"crius.test/bad","devices":[{"name":"x","containerEdits":{"env":["A=1"]}}],"bogus":true}"#,
    );
    write(
        specs.path(),
        "c-version.json",
        r#"{"cdiVersion":"0.3.0","kind":"crius.test/old","devices":[{"name":"x","containerEdits":{"additionalGids":[5]}}]}"#,
    );
    let mut env = setup_config(false, &line).await;
    let pod = env.pod("cdi-bad", false).await;

    for (name, why) in [
        ("crius.test/good=nope", "unknown device of a known kind"),
        ("crius.test/none=x", "unknown kind"),
        (
            "crius.test/bad=x",
            "the device of a spec with an unknown field",
        ),
        (
            "crius.test/old=x",
            "the device of a spec older than its fields",
        ),
        ("gpu0", "not a qualified name"),
    ] {
        let mut config = env.container_config("cdi-unknown", "true");
        config.cdi_devices = cdi(&["crius.test/good=ok", name]);
        let err = env.create(&pod, config).await.expect_err(why);
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{why}: {}",
            err.message()
        );
        assert!(err.message().contains(name), "{why}: {}", err.message());
    }

    // The good file's device works despite the bad files beside it, through the field and
    // through the older annotation form.
    let mut config = env.container_config("cdi-good", "echo \"good=$CRIUS_CDI_GOOD\"");
    config.cdi_devices = cdi(&["crius.test/good=ok"]);
    let id = env.run(&pod, config).await;
    assert_eq!(
        env.wait_exit(&id, Duration::from_secs(20)).await.exit_code,
        0
    );
    assert_eq!(env.stdout("cdi-good"), ["good=yes"]);
    let pod = env.pod("cdi-annotation", false).await;
    let mut config = env.container_config("cdi-annotation", "echo \"good=$CRIUS_CDI_GOOD\"");
    config
        .annotations
        .insert("cdi.k8s.io/test_device".into(), "crius.test/good=ok".into());
    let id = env.run(&pod, config).await;
    assert_eq!(
        env.wait_exit(&id, Duration::from_secs(20)).await.exit_code,
        0
    );
    assert_eq!(env.stdout("cdi-annotation"), ["good=yes"]);

    // Each skipped file is named in criusd's log.
    let log = env.daemon.log();
    for file in ["a-broken.yaml", "b-unknown-field.json", "c-version.json"] {
        assert!(log.contains(file), "{file} not logged:\n{log}");
    }
}
