//! Prometheus metrics end to end: a real criusd serving `/metrics` on a loopback port; the page
//! parses with a Prometheus text-format parser and its counters and gauges follow the CRI
//! calls the test makes.

use cri_api::v1::*;
use crius_tests::env::setup_config;
use prometheus_parse::{Scrape, Value};

/// A loopback port free right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port()
}

async fn get(url: &str) -> (u16, String) {
    let response = reqwest::get(url).await.expect("GET");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

async fn scrape(base: &str) -> Scrape {
    let (status, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(status, 200, "{text}");
    Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
}

/// The value of the sample `metric` whose labels include `labels`; 0 when there is none.
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == metric)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(_) | Value::Summary(_) => 0.0,
        })
        .sum()
}

#[tokio::test]
async fn metrics_parse_and_follow_the_calls() {
    let port = free_port();
    let mut env = setup_config(false, &format!("metrics_address = \"127.0.0.1:{port}\"\n")).await;
    let base = format!("http://127.0.0.1:{port}");

    let before = scrape(&base).await;
    // The image pull of the setup is counted.
    assert!(value(&before, "crius_image_pulls_total", &[("code", "Ok")]) >= 1.0);
    assert!(value(&before, "crius_images", &[]) >= 1.0);
    // ... with the bytes it brought in: at least the image store's own size, one image.
    assert!(value(&before, "crius_image_pulled_bytes_total", &[]) >= 1.0);
    assert_eq!(
        value(&before, "crius_image_pulled_bytes_total", &[]),
        value(&before, "crius_image_bytes", &[]),
        "one image pulled, one image stored"
    );

    for _ in 0..3 {
        env.daemon
            .runtime
            .version(VersionRequest::default())
            .await
            .expect("version");
    }
    let missing = env
        .daemon
        .runtime
        .container_status(ContainerStatusRequest {
            container_id: "0000000000000000".into(),
            verbose: false,
        })
        .await
        .expect_err("no such container");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let pod = env.pod("metrics", true).await;
    let plain = env.pod("metrics-plain", false).await;
    let container = env
        .run(&pod, env.container_config("sleeper", "sleep 1000"))
        .await;
    // A pod with a user namespace that cannot start: its mapping does not map root.
    let mut bad = crius_tests::env::pod_config("metrics-bad", true, env.logs.path());
    if let Some(u) = bad
        .linux
        .as_mut()
        .and_then(|l| l.security_context.as_mut())
        .and_then(|s| s.namespace_options.as_mut())
        .and_then(|n| n.userns_options.as_mut())
    {
        u.uids[0].container_id = 1;
        u.gids[0].container_id = 1;
    }
    env.daemon
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(bad),
            runtime_handler: String::new(),
        })
        .await
        .expect_err("a mapping without root");

    let after = scrape(&base).await;
    // Every metric family is described (a family without samples yet is left out).
    for family in [
        "crius_grpc_requests",
        "crius_grpc_errors",
        "crius_grpc_request_duration_seconds",
        "crius_pods",
        "crius_containers",
        "crius_userns_pods_started",
        "crius_userns_pods_failed",
        "crius_image_pulls",
        "crius_images",
        "crius_pod_monitors",
        "crius_container_events_dropped",
    ] {
        assert!(
            after.docs.contains_key(family),
            "no HELP for {family}: {:?}",
            after.docs.keys()
        );
    }
    let delta = |metric: &str, labels: &[(&str, &str)]| {
        value(&after, metric, labels) - value(&before, metric, labels)
    };
    assert!(
        delta("crius_grpc_requests_total", &[("method", "Version")]) >= 3.0,
        "Version calls counted"
    );
    assert!(
        delta(
            "crius_grpc_errors_total",
            &[("method", "ContainerStatus"), ("code", "NotFound")]
        ) >= 1.0
    );
    assert!(
        delta(
            "crius_grpc_errors_total",
            &[("method", "RunPodSandbox"), ("code", "InvalidArgument")]
        ) >= 1.0
    );
    assert!(
        delta(
            "crius_grpc_request_duration_seconds_count",
            &[("method", "Version")]
        ) >= 3.0
    );
    let histogram = after
        .samples
        .iter()
        .find(|s| {
            s.metric == "crius_grpc_request_duration_seconds"
                && s.labels.get("method") == Some("RunPodSandbox")
        })
        .expect("RunPodSandbox latency histogram");
    let Value::Histogram(buckets) = &histogram.value else {
        panic!("not a histogram: {histogram:?}");
    };
    assert!(
        buckets
            .iter()
            .any(|b| b.less_than.is_infinite() && b.count >= 3.0)
    );
    assert_eq!(delta("crius_userns_pods_started_total", &[]), 1.0);
    assert_eq!(delta("crius_userns_pods_failed_total", &[]), 1.0);
    assert_eq!(value(&after, "crius_pods", &[("state", "ready")]), 2.0);
    assert_eq!(
        value(&after, "crius_containers", &[("state", "running")]),
        1.0
    );
    assert_eq!(value(&after, "crius_pod_monitors", &[]), 2.0);

    // Stopping moves the gauges.
    env.daemon
        .runtime
        .stop_container(StopContainerRequest {
            container_id: container.clone(),
            timeout: 0,
        })
        .await
        .expect("stop");
    env.daemon
        .runtime
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: plain.0.clone(),
        })
        .await
        .expect("stop pod");
    let last = scrape(&base).await;
    assert_eq!(
        value(&last, "crius_containers", &[("state", "running")]),
        0.0
    );
    assert_eq!(
        value(&last, "crius_containers", &[("state", "exited")]),
        1.0
    );
    assert_eq!(value(&last, "crius_pods", &[("state", "ready")]), 1.0);
    assert_eq!(value(&last, "crius_pods", &[("state", "notready")]), 1.0);

    let (status, _) = get(&format!("{base}/other")).await;
    assert_eq!(status, 404);
}
