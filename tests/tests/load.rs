//! Load: pods started concurrently by many clients, then many running pods while
//! ListContainers, ContainerStatus and ListPodSandbox are hammered from many connections. No
//! request may fail; the slowest of each kind is printed.
//!
//! The normal suite runs a small version that asserts no errors. The long form (50 pods by 10
//! clients, then 100 running pods, every request under 1 s) is ignored and run by
//! `cargo test -p crius-tests --test load -- --ignored --nocapture`.

#![allow(clippy::unwrap_used, reason = "test code")]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::*;
use crius_tests::env::{Env, pod_config, setup};
use crius_tests::harness::connect;
use tokio::sync::Mutex;
use tonic::transport::Channel;

/// The slowest request of each kind, and how many ran.
#[derive(Debug, Default)]
struct Latencies {
    slowest: HashMap<&'static str, Duration>,
    count: HashMap<&'static str, usize>,
}

impl Latencies {
    fn record(&mut self, kind: &'static str, took: Duration) {
        let s = self.slowest.entry(kind).or_default();
        *s = (*s).max(took);
        *self.count.entry(kind).or_default() += 1;
    }

    fn merge(&mut self, other: &Latencies) {
        for (k, d) in &other.slowest {
            let s = self.slowest.entry(k).or_default();
            *s = (*s).max(*d);
        }
        for (k, n) in &other.count {
            *self.count.entry(k).or_default() += n;
        }
    }

    fn max(&self) -> Duration {
        self.slowest.values().copied().max().unwrap_or_default()
    }
}

/// Times one request, panicking with its kind and error if it fails.
async fn timed<T>(
    lat: &mut Latencies,
    kind: &'static str,
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> T {
    let started = Instant::now();
    let out = fut.await.unwrap_or_else(|e| panic!("{kind} failed: {e}"));
    lat.record(kind, started.elapsed());
    out.into_inner()
}

/// Runs a pod named `name` with one `sleep` container in it; returns the container id.
async fn start_pod(
    rt: &mut RuntimeServiceClient<Channel>,
    lat: &mut Latencies,
    name: &str,
    logs: &std::path::Path,
    container: ContainerConfig,
) -> String {
    let config = pod_config(name, false, logs);
    let pod = timed(
        lat,
        "RunPodSandbox",
        rt.run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: String::new(),
        }),
    )
    .await
    .pod_sandbox_id;
    let id = timed(
        lat,
        "CreateContainer",
        rt.create_container(CreateContainerRequest {
            pod_sandbox_id: pod,
            config: Some(container),
            sandbox_config: Some(config),
        }),
    )
    .await
    .container_id;
    timed(
        lat,
        "StartContainer",
        rt.start_container(StartContainerRequest {
            container_id: id.clone(),
        }),
    )
    .await;
    id
}

/// A client of its own (its own connection) to the daemon of `env`.
async fn client(env: &Env) -> RuntimeServiceClient<Channel> {
    RuntimeServiceClient::new(connect(&env.daemon.paths.socket).await.unwrap())
}

/// `concurrent` pods started by `clients` clients at once, then pods up to `running`, then
/// `queries` rounds of ListContainers / ContainerStatus / ListPodSandbox from `clients`
/// clients. Returns the latencies of the concurrent start and of the query phase.
async fn load(
    clients: usize,
    concurrent: usize,
    running: usize,
    queries: usize,
) -> (Latencies, Latencies) {
    let mut env = setup(false).await;
    let logs = env.logs.path().to_path_buf();
    let ids = Arc::new(Mutex::new(Vec::new()));

    // Phase 1: `concurrent` pods, `concurrent / clients` from each client at the same time.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut rt = client(&env).await;
        let names: Vec<String> = (0..concurrent)
            .filter(|n| n % clients == c)
            .map(|n| format!("load-{n}"))
            .collect();
        let configs: Vec<ContainerConfig> = names
            .iter()
            .map(|n| env.container_config(n, "exec sleep 100000"))
            .collect();
        let logs = logs.clone();
        let ids = Arc::clone(&ids);
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            for (name, config) in names.iter().zip(configs) {
                let id = start_pod(&mut rt, &mut lat, name, &logs, config).await;
                ids.lock().await.push(id);
            }
            lat
        }));
    }
    let mut start_lat = Latencies::default();
    for t in tasks {
        start_lat.merge(&t.await.unwrap());
    }
    eprintln!(
        "{concurrent} pods with a container each, by {clients} clients: {:?}; {start_lat:?}",
        started.elapsed()
    );

    // Phase 2: more pods, one after another, until `running` run.
    let mut rt = client(&env).await;
    let mut more = Latencies::default();
    for n in concurrent..running {
        let name = format!("load-{n}");
        let config = env.container_config(&name, "exec sleep 100000");
        let id = start_pod(&mut rt, &mut more, &name, &logs, config).await;
        ids.lock().await.push(id);
    }
    let ids: Arc<Vec<String>> = Arc::new(ids.lock().await.clone());
    assert_eq!(ids.len(), running);

    // Phase 3: hammer the read paths from every client at once.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let mut rt = client(&env).await;
        let ids = Arc::clone(&ids);
        tasks.push(tokio::spawn(async move {
            let mut lat = Latencies::default();
            for q in 0..queries {
                let list = timed(
                    &mut lat,
                    "ListContainers",
                    rt.list_containers(ListContainersRequest::default()),
                )
                .await;
                assert_eq!(list.containers.len(), ids.len());
                assert!(
                    list.containers
                        .iter()
                        .all(|c| c.state == ContainerState::ContainerRunning as i32),
                    "every container runs"
                );
                let id = &ids[(c * 7 + q * 13) % ids.len()];
                let status = timed(
                    &mut lat,
                    "ContainerStatus",
                    rt.container_status(ContainerStatusRequest {
                        container_id: id.clone(),
                        verbose: false,
                    }),
                )
                .await
                .status
                .unwrap();
                assert_eq!(status.state, ContainerState::ContainerRunning as i32);
                if q % 4 == 0 {
                    let pods = timed(
                        &mut lat,
                        "ListPodSandbox",
                        rt.list_pod_sandbox(ListPodSandboxRequest::default()),
                    )
                    .await;
                    assert_eq!(pods.items.len(), ids.len());
                }
            }
            lat
        }));
    }
    let mut query_lat = Latencies::default();
    for t in tasks {
        query_lat.merge(&t.await.unwrap());
    }
    eprintln!(
        "{running} running pods, {clients} clients x {queries} rounds: {:?}; {query_lat:?}",
        started.elapsed()
    );
    // Every pod is still there and ready.
    let pods = env.daemon.pods().await;
    assert!(
        pods.iter()
            .all(|p| p.state == PodSandboxState::SandboxReady as i32)
    );
    drop(env);
    (start_lat, query_lat)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pods_and_hammered_reads_never_fail() {
    load(4, 8, 12, 40).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "long: 100 pods; run with --ignored"]
async fn fifty_concurrent_then_a_hundred_pods_answer_within_a_second() {
    let (start, query) = load(10, 50, 100, 200).await;
    eprintln!(
        "slowest start-phase request {:?}, slowest query {:?}",
        start.max(),
        query.max()
    );
    assert!(
        query.max() < Duration::from_secs(1),
        "a query took {:?}: {query:?}",
        query.max()
    );
    assert!(
        start.max() < Duration::from_secs(1),
        "a start-phase request took {:?}: {start:?}",
        start.max()
    );
}
