//! Prometheus metrics of criusd, served over HTTP at `/metrics` on `metrics_address` when it is
//! set: per-RPC counts, errors by gRPC code and latency; pods and containers by state; pods with
//! a user namespace started and failed; image pulls; running pod monitors; lost container events.
//!
//! Call metrics are recorded by the call log layer for every call, whether or not metrics are
//! served; the state gauges are computed at each scrape.

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::Cri;

/// The label set of a metric: name/value pairs.
type Labels = Vec<(&'static str, String)>;

/// A family of histograms of call durations.
type Durations = Family<Labels, Histogram, fn() -> Histogram>;

/// Every metric of the daemon.
pub struct Metrics {
    registry: Registry,
    calls: Family<Labels, Counter>,
    errors: Family<Labels, Counter>,
    durations: Durations,
    pods: Family<Labels, Gauge>,
    containers: Family<Labels, Gauge>,
    userns_started: Counter,
    userns_failed: Counter,
    pulls: Family<Labels, Counter>,
    images: Gauge,
    image_bytes: Gauge,
    pulled_bytes: Counter,
    monitors: Gauge,
    events_dropped: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn duration_histogram() -> Histogram {
    // 0.5 ms to about 16 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("crius");
        let calls = Family::<Labels, Counter>::default();
        registry.register(
            "grpc_requests",
            "CRI calls handled, by method",
            calls.clone(),
        );
        let errors = Family::<Labels, Counter>::default();
        registry.register(
            "grpc_errors",
            "CRI calls that failed, by method and gRPC code",
            errors.clone(),
        );
        let durations: Durations = Family::new_with_constructor(duration_histogram);
        registry.register(
            "grpc_request_duration_seconds",
            "How long CRI calls took, by method",
            durations.clone(),
        );
        let pods = Family::<Labels, Gauge>::default();
        registry.register("pods", "Pod sandboxes by state", pods.clone());
        let containers = Family::<Labels, Gauge>::default();
        registry.register("containers", "Containers by state", containers.clone());
        let userns_started = Counter::default();
        registry.register(
            "userns_pods_started",
            "Pod sandboxes with their own user namespace started",
            userns_started.clone(),
        );
        let userns_failed = Counter::default();
        registry.register(
            "userns_pods_failed",
            "Pod sandboxes with their own user namespace that failed to start",
            userns_failed.clone(),
        );
        let pulls = Family::<Labels, Counter>::default();
        registry.register(
            "image_pulls",
            "PullImage calls, by gRPC code",
            pulls.clone(),
        );
        let pulled_bytes = Counter::default();
        registry.register(
            "image_pulled_bytes",
            "Bytes of the images PullImage brought in (their compressed sizes)",
            pulled_bytes.clone(),
        );
        let images = Gauge::default();
        registry.register("images", "Images in the image store", images.clone());
        let image_bytes = Gauge::default();
        registry.register(
            "image_bytes",
            "Bytes of the images in the image store (their compressed sizes)",
            image_bytes.clone(),
        );
        let monitors = Gauge::default();
        registry.register(
            "pod_monitors",
            "Pod monitor processes running",
            monitors.clone(),
        );
        let events_dropped = Counter::default();
        registry.register(
            "container_events_dropped",
            "Container events lost by GetContainerEvents subscribers that fell behind",
            events_dropped.clone(),
        );
        Metrics {
            registry,
            calls,
            errors,
            durations,
            pods,
            containers,
            userns_started,
            userns_failed,
            pulls,
            images,
            image_bytes,
            pulled_bytes,
            monitors,
            events_dropped,
        }
    }

    /// Records one CRI call: its method, gRPC code and duration.
    pub fn record_call(&self, method: &str, code: tonic::Code, seconds: f64) {
        let by_method: Labels = vec![("method", method.to_owned())];
        self.calls.get_or_create(&by_method).inc();
        self.durations.get_or_create(&by_method).observe(seconds);
        let code_name = format!("{code:?}");
        if code != tonic::Code::Ok {
            let labels: Labels = vec![("method", method.to_owned()), ("code", code_name.clone())];
            self.errors.get_or_create(&labels).inc();
        }
        if method == "PullImage" {
            self.pulls.get_or_create(&vec![("code", code_name)]).inc();
        }
    }

    /// Records a successful pull of an image of `bytes` (compressed) bytes.
    pub(crate) fn record_pull(&self, bytes: u64) {
        self.pulled_bytes.inc_by(bytes);
    }

    /// Records the start of a pod sandbox with its own user namespace, or its failure.
    pub(crate) fn record_userns_pod(&self, started: bool) {
        if started {
            self.userns_started.inc();
        } else {
            self.userns_failed.inc();
        }
    }

    /// The metrics in the Prometheus text format, with the state gauges taken from `cri` now.
    fn render(&self, cri: &Cri) -> String {
        self.refresh(cri);
        let mut out = String::new();
        if let Err(e) = encode(&mut out, &self.registry) {
            tracing::warn!(error = %e, "cannot encode the metrics");
        }
        out
    }

    fn refresh(&self, cri: &Cri) {
        let set = |family: &Family<Labels, Gauge>, counts: &[(&str, i64)]| {
            for (state, n) in counts {
                family
                    .get_or_create(&vec![("state", (*state).to_owned())])
                    .set(*n);
            }
        };
        if let Ok(pods) = cri.pods.list() {
            let ready = pods.iter().filter(|p| p.ready).count();
            let monitors = pods
                .iter()
                .filter(|p| cri.pods.monitor_running(&p.record))
                .count();
            set(
                &self.pods,
                &[
                    ("ready", count(ready)),
                    ("notready", count(pods.len() - ready)),
                ],
            );
            self.monitors.set(count(monitors));
        }
        if let Ok(containers) = cri.pods.list_containers() {
            use crius_runtime::ContainerStateKind as K;
            let of = |k: K| count(containers.iter().filter(|c| c.state == k).count());
            set(
                &self.containers,
                &[
                    ("created", of(K::Created)),
                    ("running", of(K::Running)),
                    ("exited", of(K::Exited)),
                    ("unknown", of(K::Unknown)),
                ],
            );
        }
        if let Ok(images) = cri.images.list() {
            self.images.set(count(images.len()));
            let bytes: u64 = images.iter().map(|i| i.size).sum();
            self.image_bytes
                .set(i64::try_from(bytes).unwrap_or(i64::MAX));
        }
        let dropped = cri.events.dropped();
        let seen = self.events_dropped.get();
        if dropped > seen {
            self.events_dropped.inc_by(dropped - seen);
        }
    }
}

fn count(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The metrics of this process.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// Counts a pod sandbox with its own user namespace as failed unless [`UsernsPod::started`] is
/// called first; does nothing for other pods.
#[derive(Debug)]
pub(crate) struct UsernsPod(bool);

impl UsernsPod {
    /// Watches the start of the pod `spec` describes.
    pub(crate) fn new(spec: &crius_runtime::spec::PodSpec) -> UsernsPod {
        UsernsPod(
            spec.namespaces
                .userns
                .as_ref()
                .is_some_and(|u| u.mode == crius_runtime::spec::NamespaceMode::Pod),
        )
    }

    /// The pod runs.
    pub(crate) fn started(mut self) {
        if self.0 {
            metrics().record_userns_pod(true);
        }
        self.0 = false;
    }
}

impl Drop for UsernsPod {
    fn drop(&mut self) {
        if self.0 {
            metrics().record_userns_pod(false);
        }
    }
}

/// Why the metrics server could not start.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// `metrics_address` could not be bound.
    #[error("cannot listen for metrics on {address}: {source}")]
    Bind {
        /// The address.
        address: SocketAddr,
        /// What the kernel said.
        source: std::io::Error,
    },
}

impl Cri {
    /// Starts the metrics HTTP server on `metrics_address` when it is set; returns the bound
    /// address. Must run inside a tokio runtime.
    pub async fn serve_metrics(self: &Arc<Self>) -> Result<Option<SocketAddr>, MetricsError> {
        let Ok(address) = self.config.metrics_address.parse::<SocketAddr>() else {
            return Ok(None);
        };
        let listener = tokio::net::TcpListener::bind(address)
            .await
            .map_err(|source| MetricsError::Bind { address, source })?;
        let bound = listener
            .local_addr()
            .map_err(|source| MetricsError::Bind { address, source })?;
        tracing::info!(address = %bound, "serving Prometheus metrics at /metrics");
        let cri = self.clone();
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((stream, _)) => stream,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics: cannot accept a connection");
                        continue;
                    }
                };
                let cri = cri.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request| {
                        let cri = cri.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&cri, &request).await) }
                    });
                    let io = hyper_util::rt::TokioIo::new(stream);
                    if let Err(e) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await
                    {
                        tracing::debug!(error = %e, "metrics connection ended");
                    }
                });
            }
        });
        Ok(Some(bound))
    }
}

type Body = http_body_util::Full<bytes::Bytes>;

async fn answer<B>(cri: &Arc<Cri>, request: &http::Request<B>) -> http::Response<Body> {
    let reply = |status: http::StatusCode, content_type: &str, body: String| {
        let mut response = http::Response::new(Body::new(body.into()));
        *response.status_mut() = status;
        if let Ok(v) = http::HeaderValue::from_str(content_type) {
            response.headers_mut().insert(http::header::CONTENT_TYPE, v);
        }
        response
    };
    if request.uri().path() != "/metrics" {
        return reply(
            http::StatusCode::NOT_FOUND,
            "text/plain",
            "crius serves its metrics at /metrics\n".into(),
        );
    }
    if request.method() != http::Method::GET && request.method() != http::Method::HEAD {
        return reply(
            http::StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "use GET\n".into(),
        );
    }
    let cri = cri.clone();
    // The gauges read the metadata database and every pod's state.json.
    let body = tokio::task::spawn_blocking(move || metrics().render(&cri))
        .await
        .unwrap_or_default();
    reply(
        http::StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        body,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_are_counted_by_method_and_code() {
        let m = Metrics::new();
        m.record_call("Version", tonic::Code::Ok, 0.001);
        m.record_call("PullImage", tonic::Code::NotFound, 0.2);
        let mut out = String::new();
        encode(&mut out, &m.registry).expect("encode");
        assert!(
            out.contains("crius_grpc_requests_total{method=\"Version\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("crius_grpc_errors_total{method=\"PullImage\",code=\"NotFound\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("crius_image_pulls_total{code=\"NotFound\"} 1"),
            "{out}"
        );
        assert!(
            out.contains("crius_grpc_request_duration_seconds_count{method=\"Version\"} 1"),
            "{out}"
        );
    }
}
