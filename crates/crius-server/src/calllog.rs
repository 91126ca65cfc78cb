//! A tower layer that logs one line per CRI call, with its method, gRPC code and duration,
//! and answers DEADLINE_EXCEEDED when a call's `grpc-timeout` passes (tonic's own timeout,
//! which fires just after, would answer CANCELLED).
//!
//! Each call runs inside a `cri` span carrying the method and an `id` field that handlers fill
//! with the pod, container or image the call is about (`tracing::Span::current().record("id", …)`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tracing::Instrument;

/// Layer adding [`CallLog`] to a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct CallLogLayer;

impl<S> tower::Layer<S> for CallLogLayer {
    type Service = CallLog<S>;

    fn layer(&self, inner: S) -> CallLog<S> {
        CallLog { inner }
    }
}

/// Logs every gRPC call passing through it.
#[derive(Debug, Clone)]
pub struct CallLog<S> {
    inner: S,
}

static CALLS: AtomicU64 = AtomicU64::new(0);

/// The last path segment: `/runtime.v1.RuntimeService/Version` → `Version`.
fn method_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// Parses a `grpc-timeout` header value: up to 8 digits and a unit (`H`, `M`, `S`, `m`, `u`,
/// `n`).
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// How much earlier than the client's deadline a call is answered DEADLINE_EXCEEDED, so that
/// the answer comes before tonic's own timeout of the same deadline.
const DEADLINE_MARGIN: Duration = Duration::from_millis(1);

/// A trailers-only DEADLINE_EXCEEDED answer.
fn deadline_exceeded<RB: Default>(timeout: Duration) -> http::Response<RB> {
    let mut response = http::Response::new(RB::default());
    let headers = response.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/grpc"),
    );
    headers.insert(
        "grpc-status",
        http::HeaderValue::from(tonic::Code::DeadlineExceeded as i32),
    );
    if let Ok(message) = http::HeaderValue::from_str(&format!(
        "the call's deadline ({timeout:?}) passed before it finished"
    )) {
        headers.insert("grpc-message", message);
    }
    response
}

impl<S, B, RB> tower::Service<http::Request<B>> for CallLog<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
    RB: Default + Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = method_name(request.uri().path()).to_owned();
        let call = CALLS.fetch_add(1, Ordering::Relaxed);
        let span = tracing::debug_span!("cri", call, method = %method, id = tracing::field::Empty);
        let start = Instant::now();
        let timeout = request
            .headers()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout);
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let result = match timeout {
                    None => future.await,
                    Some(timeout) => {
                        let budget = timeout.saturating_sub(DEADLINE_MARGIN);
                        match tokio::time::timeout(budget, future).await {
                            Ok(result) => result,
                            // The handler is dropped, as a client that hangs up drops it.
                            Err(_) => Ok(deadline_exceeded(timeout)),
                        }
                    }
                };
                let elapsed = start.elapsed();
                let micros = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX);
                let seconds = elapsed.as_secs_f64();
                match &result {
                    Ok(response) => {
                        // Errors travel in a trailers-only response: the code is in the headers.
                        let code = response
                            .headers()
                            .get("grpc-status")
                            .and_then(|v| v.to_str().ok())
                            .and_then(|v| v.parse::<i32>().ok())
                            .map_or(tonic::Code::Ok, tonic::Code::from_i32);
                        tracing::debug!(code = ?code, micros, "call done");
                        crate::metrics::metrics().record_call(&method, code, seconds);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, micros, "call failed");
                        crate::metrics::metrics().record_call(
                            &method,
                            tonic::Code::Unknown,
                            seconds,
                        );
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse_as_the_spec_writes_them() {
        assert_eq!(parse_grpc_timeout("1m"), Some(Duration::from_millis(1)));
        assert_eq!(parse_grpc_timeout("120S"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("2H"), Some(Duration::from_secs(7200)));
        assert_eq!(
            parse_grpc_timeout("999999u"),
            Some(Duration::from_micros(999_999))
        );
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "m", "123456789S", "1x", "-1S", "1.5S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    /// A handler that never answers, and one that answers at once.
    async fn call_with(timeout: Option<&'static str>, answers: bool) -> http::Response<String> {
        use tower::Service as _;
        let inner = tower::service_fn(move |_: http::Request<()>| async move {
            if !answers {
                std::future::pending::<()>().await;
            }
            Ok::<_, std::convert::Infallible>(http::Response::new("answer".to_owned()))
        });
        let mut service = tower::Layer::layer(&CallLogLayer, inner);
        let mut request = http::Request::new(());
        *request.uri_mut() = http::Uri::from_static("/runtime.v1.ImageService/PullImage");
        if let Some(t) = timeout {
            request
                .headers_mut()
                .insert("grpc-timeout", http::HeaderValue::from_static(t));
        }
        service.call(request).await.expect("infallible")
    }

    #[tokio::test]
    async fn a_call_past_its_deadline_answers_deadline_exceeded() {
        let late = call_with(Some("20m"), false).await;
        assert_eq!(late.headers()["grpc-status"], "4");
        assert!(late.body().is_empty());
        let done = call_with(Some("20S"), true).await;
        assert_eq!(done.body(), "answer");
        let no_deadline = call_with(None, true).await;
        assert_eq!(no_deadline.body(), "answer");
    }

    #[test]
    fn method_is_last_segment() {
        assert_eq!(method_name("/runtime.v1.RuntimeService/Version"), "Version");
        assert_eq!(method_name("Version"), "Version");
    }
}
