//! A tower layer that logs one line per CRI call, with its method, gRPC code and duration.
//!
//! Each call runs inside a `cri` span carrying the method and an `id` field that handlers fill
//! with the pod, container or image the call is about (`tracing::Span::current().record("id", …)`).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

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

impl<S, B, RB> tower::Service<http::Request<B>> for CallLog<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
    S::Error: std::fmt::Display,
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
        let future = span.in_scope(|| self.inner.call(request));
        Box::pin(
            async move {
                let result = future.await;
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
    use super::method_name;

    #[test]
    fn method_is_last_segment() {
        assert_eq!(method_name("/runtime.v1.RuntimeService/Version"), "Version");
        assert_eq!(method_name("Version"), "Version");
    }
}
