//! Directory trees deeper than any stack or descriptor table: an image whose layer names a path
//! 200,000 directories deep, trees of that kind left in criusd's temporary and writable-layer
//! directories, and a container that builds a 100,000-level chain in its writable layer. Each is
//! refused or removed while criusd and the pod monitor go on answering.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::{Duration, Instant};

use cri_api::v1::*;
use crius_tests::env::setup;
use crius_tests::harness::{Criusd, Options};
use crius_tests::host::{DeepTree, entries};
use crius_tests::image::{Compression, Image, Layer};
use crius_tests::registry::Registry;
use nix::fcntl::{OFlag, openat};
use nix::sys::stat::{Mode, mkdirat};
use tonic::Code;

/// Makes `dir` and a chain of `depth` directories `d` under it, holding two descriptors at most.
fn deep_chain(dir: &Path, depth: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut fd: OwnedFd = nix::fcntl::open(dir, flags, Mode::empty()).unwrap();
    for _ in 0..depth {
        mkdirat(&fd, "d", Mode::from_bits_truncate(0o755)).unwrap();
        fd = openat(&fd, "d", flags, Mode::empty()).unwrap();
    }
}

/// A layer tar of a file whose path, given in a PAX record, is `depth` directories deep, then a
/// file climbing out with `..` (refused: the unpack fails after the first entry, were that one
/// unpacked).
fn deep_path_tar(depth: usize) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let path = [b"a/".repeat(depth), b"f".to_vec()].concat();
    builder
        .append_pax_extensions([("path", path.as_slice())])
        .unwrap();
    let mut append = |name: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.as_old_mut().name[..name.len()].copy_from_slice(name);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mode(0o644);
        header.set_mtime(crius_tests::image::MTIME);
        header.set_size(1);
        header.set_cksum();
        builder.append(&header, &b"x"[..]).unwrap();
    };
    append(b"placeholder");
    append(b"../escape");
    builder.into_inner().unwrap()
}

async fn answers(daemon: &mut Criusd) -> bool {
    daemon
        .runtime
        .version(VersionRequest::default())
        .await
        .is_ok()
}

/// A layer entry 200,000 directories deep is refused naming PATH_MAX and the layer; criusd
/// answers the next call, restarts, and leaves nothing in its temporary directory.
#[tokio::test]
async fn an_image_path_deeper_than_path_max_is_refused() {
    let registry = Registry::start().unwrap();
    let layer = Layer::from_tar(deep_path_tar(200_000), Compression::Gzip).unwrap();
    let digest = layer.digest().to_owned();
    let pushed = Image::new(vec![layer])
        .push(&registry.host(), "crius/deep-path:1")
        .await
        .unwrap();
    let mut daemon = Criusd::start_with(Options {
        config: format!("insecure_registries = [\"{}\"]\n", registry.host()),
        ..Options::default()
    })
    .await
    .unwrap();
    let started = Instant::now();
    let status = daemon
        .pull(&pushed.reference)
        .await
        .expect_err("the pull succeeded");
    eprintln!("refused in {:?}: {}", started.elapsed(), status.message());
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let message = status.message();
    assert!(
        message.contains("PATH_MAX (4096 bytes)") && message.contains(&digest),
        "{message}"
    );
    assert!(message.len() < 1024, "a message of {} bytes", message.len());
    assert!(answers(&mut daemon).await, "criusd does not answer");
    let tmp = daemon.paths.root.join("image-tmp");
    assert_eq!(entries(&tmp), Vec::<String>::new());
    daemon.restart().await.unwrap();
    assert!(answers(&mut daemon).await, "criusd does not answer");
    assert_eq!(entries(&tmp), Vec::<String>::new());
}

/// Trees deeper than criusd's descriptor limit, left in its image temporary directory and as
/// the writable layers of a pod it has no record of, are removed at start-up.
#[tokio::test]
async fn deep_trees_left_behind_are_removed_at_start_up() {
    let mut daemon = Criusd::start().await.unwrap();
    daemon.stop().unwrap();
    let root = daemon.paths.root.clone();
    // Deeper than the descriptors criusd may open (a hard limit of 20,000 on these machines)
    // and than a 2 MiB stack takes frames of a recursive walk.
    const DEPTH: usize = 25_000;
    let tmp = root.join("image-tmp");
    deep_chain(&tmp.join("layer-left-behind"), DEPTH);
    let orphan = root.join("containers").join("f".repeat(64));
    deep_chain(&orphan.join("c0/upper"), DEPTH);
    // Dropped before the daemon's temporary root, should the start-up leave them.
    let _planted = [DeepTree(tmp.clone()), DeepTree(orphan.clone())];
    let started = Instant::now();
    daemon.restart().await.unwrap();
    eprintln!("restarted in {:?}", started.elapsed());
    assert!(answers(&mut daemon).await, "criusd does not answer");
    assert_eq!(entries(&tmp), Vec::<String>::new());
    assert!(
        !orphan.exists(),
        "the orphan writable layers are still there"
    );
}

/// busybox sh building a chain at least `depth` directories deep at `/x`, 201 levels a step (a
/// `mkdir -p` chain under a new top, the chain so far moved to its bottom), so that every path
/// it names stays short of PATH_MAX; it prints `done` and sleeps.
fn chain_script(depth: usize) -> String {
    const CHUNK: usize = 200;
    let rounds = depth.div_ceil(CHUNK + 1);
    format!(
        "set -e; p=d; i=1; while [ $i -lt {CHUNK} ]; do p=$p/d; i=$((i+1)); done; \
         cd /; mkdir x; n=0; \
         while [ $n -lt {rounds} ]; do mkdir -p c/$p; mv x c/$p/x; mv c x; n=$((n+1)); done; \
         echo done; exec sleep 1000"
    )
}

/// A container builds a chain 100,000 directories deep in its writable layer (another one
/// 25,000 deep): RemoveContainer and RemovePodSandbox succeed, the pod monitor lives until the
/// pod goes, and the writable layers are gone from the host.
#[tokio::test]
async fn deep_writable_layers_are_removed_with_their_container_and_pod() {
    let mut env = setup(false).await;
    let pod = env.pod("deep", false).await;
    let monitor = env.monitor_state(&pod.0)["monitor_pid"].as_i64().unwrap();
    let monitor = nix::unistd::Pid::from_raw(i32::try_from(monitor).unwrap());
    let mut ids = Vec::new();
    let started = Instant::now();
    for (name, depth) in [("deep-a", 100_000), ("deep-b", 25_000)] {
        let id = env
            .run(&pod, env.container_config(name, &chain_script(depth)))
            .await;
        ids.push(id);
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    for (name, id) in ["deep-a", "deep-b"].into_iter().zip(ids.clone()) {
        while env.stdout(name) != ["done"] {
            let s = env.status(&id).await;
            assert_eq!(
                s.state,
                ContainerState::ContainerRunning as i32,
                "{name}: {:?}",
                env.log_lines(name)
            );
            assert!(Instant::now() < deadline, "{name} did not finish");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    eprintln!("chains built in {:?}", started.elapsed());
    let root = env.daemon.paths.root.join("containers").join(&pod.0);
    let (deep_a, deep_b) = (root.join(&ids[0]), root.join(&ids[1]));
    assert!(deep_a.join("upper/x/d").exists() && deep_b.join("upper/x/d").exists());
    env.daemon
        .runtime
        .stop_container(StopContainerRequest {
            container_id: ids[0].clone(),
            timeout: 0,
        })
        .await
        .unwrap();
    let started = Instant::now();
    env.daemon
        .runtime
        .remove_container(RemoveContainerRequest {
            container_id: ids[0].clone(),
        })
        .await
        .unwrap();
    eprintln!("container removed in {:?}", started.elapsed());
    assert!(
        !deep_a.exists(),
        "the writable layer outlived its container"
    );
    assert!(
        nix::sys::signal::kill(monitor, None).is_ok(),
        "the pod monitor is gone"
    );
    let pods = env
        .daemon
        .runtime
        .pod_sandbox_status(PodSandboxStatusRequest {
            pod_sandbox_id: pod.0.clone(),
            verbose: false,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        pods.status.unwrap().state,
        PodSandboxState::SandboxReady as i32
    );
    env.daemon
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.0.clone(),
        })
        .await
        .unwrap();
    let started = Instant::now();
    env.daemon
        .runtime
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.0.clone(),
        })
        .await
        .unwrap();
    eprintln!("pod removed in {:?}", started.elapsed());
    assert!(!deep_b.exists(), "the writable layer outlived its pod");
    assert!(!root.exists(), "{} is still there", root.display());
    assert!(
        !env.pod_dir(&pod.0).exists(),
        "the pod directory is still there"
    );
}
