//! What registry traffic may reach, and what of a registry's answers may reach an error.
//!
//! A registry, a redirect it answers with, or the token service its challenge names can point
//! at a service of the node itself (loopback) or its link (link-local: cloud metadata
//! services). Such destinations are refused unless the registry itself is on one: a redirect
//! or token realm naming such an address or `localhost` is refused before it is followed, and
//! a name resolving to one is refused at connection time (so a name that resolves differently
//! later gains nothing). Configured proxies are exempt.
//!
//! Errors carry the status line of a failed answer and, when the answer came from the host
//! asked, the codes (with bounded, sanitised messages) of its distribution error document
//! (`{"errors":[{"code":"MANIFEST_UNKNOWN",...}]}`); never raw bodies.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// How many redirects one request may follow.
pub(crate) const MAX_REDIRECTS: usize = 10;
/// How many entries of a distribution error document are reported.
const MAX_REPORTED_ERRORS: usize = 3;
/// How many characters of a distribution error message are reported.
const MAX_MESSAGE_CHARS: usize = 120;

/// A destination refused: loopback or link-local while the registry is not.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Refused {
    /// A redirect to such a destination.
    #[error(
        "the registry redirected to {target}, a loopback or link-local destination: refused, \
         as the registry itself is not on one"
    )]
    Redirect {
        /// Scheme, host and port of the redirect target.
        target: String,
    },
    /// A bearer token service at such a destination.
    #[error(
        "the token service {target} the registry names is a loopback or link-local \
         destination: refused, as the registry itself is not on one"
    )]
    Realm {
        /// Scheme, host and port of the realm.
        target: String,
    },
    /// A host name that resolves to such an address.
    #[error(
        "{name} resolves to {addr}, a loopback or link-local address: refused, as the \
         registry itself is not on one"
    )]
    Resolved {
        /// The name.
        name: String,
        /// The local address among its addresses.
        addr: IpAddr,
    },
    /// A redirect chain that does not end.
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
}

/// A URL the registry sent crius to, at a loopback or link-local destination while the
/// registry is not on one.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{target} is a loopback or link-local destination")]
pub(crate) struct LocalTarget {
    /// Scheme, host and port of the URL.
    pub(crate) target: String,
}

/// Whether `ip` is loopback (127.0.0.0/8, ::1), link-local (169.254.0.0/16, fe80::/10) or
/// unspecified (0.0.0.0/8, ::), IPv4-mapped IPv6 forms included.
pub(crate) fn is_local_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_local_v4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => is_local_v4(v4),
            None => {
                v6.is_loopback() || v6.is_unspecified() || (v6.segments()[0] & 0xffc0) == 0xfe80
            }
        },
    }
}

fn is_local_v4(ip: Ipv4Addr) -> bool {
    ip.is_loopback() || ip.is_link_local() || ip.octets()[0] == 0
}

/// Whether a URL host (as [`Url::host_str`] gives it: a name, dotted IPv4, or bracketed IPv6)
/// is local by itself: such an address, or `localhost` and names below it.
pub(crate) fn is_local_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    if host == "localhost" || host.ends_with(".localhost") {
        return true;
    }
    let bare = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(&host);
    bare.parse::<IpAddr>().is_ok_and(is_local_ip)
}

/// The host part of `host[:port]`, as a URL carries it (lower case, IPv4 forms normalised).
fn url_host(host_port: &str) -> Option<String> {
    Url::parse(&format!("http://{host_port}/"))
        .ok()?
        .host_str()
        .map(str::to_owned)
}

/// `scheme://host[:port]` of `url`.
pub(crate) fn origin_of(url: &Url) -> String {
    url.origin().ascii_serialization()
}

/// Where the requests of one registry source may go.
#[derive(Debug)]
pub(crate) struct Reach {
    /// The registry's host as URLs carry it.
    registry: String,
    /// Host names of the proxies in the environment, which may be local.
    proxies: Vec<String>,
    /// The registry is on a loopback or link-local destination: nothing is refused.
    local: AtomicBool,
}

impl Reach {
    /// The reach of the registry at `host_port` (`host[:port]`).
    pub(crate) fn new(host_port: &str) -> Arc<Reach> {
        let registry = url_host(host_port).unwrap_or_else(|| host_port.to_ascii_lowercase());
        let local = is_local_host(&registry);
        Arc::new(Reach {
            registry,
            proxies: proxy_hosts(),
            local: AtomicBool::new(local),
        })
    }

    /// Whether the registry is on a loopback or link-local destination.
    pub(crate) fn registry_is_local(&self) -> bool {
        self.local.load(Ordering::Relaxed)
    }

    /// Checks a URL the registry sent crius to.
    pub(crate) fn check_url(&self, url: &Url) -> Result<(), LocalTarget> {
        let host = url.host_str().unwrap_or_default();
        if self.registry_is_local() || !is_local_host(host) {
            return Ok(());
        }
        Err(LocalTarget {
            target: origin_of(url),
        })
    }

    /// Checks the addresses `name` resolved to.
    fn admit(&self, name: &str, addrs: &[SocketAddr]) -> Result<(), Refused> {
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        let local = addrs.iter().map(SocketAddr::ip).find(|ip| is_local_ip(*ip));
        if name == self.registry {
            if local.is_some() {
                self.local.store(true, Ordering::Relaxed);
            }
            return Ok(());
        }
        match local {
            Some(addr) if !self.registry_is_local() && !self.proxies.contains(&name) => {
                Err(Refused::Resolved { name, addr })
            }
            _ => Ok(()),
        }
    }
}

/// Host names of the proxies the environment configures (reqwest honours them).
fn proxy_hosts() -> Vec<String> {
    [
        "HTTP_PROXY",
        "http_proxy",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .filter_map(|var| std::env::var(var).ok())
    .filter_map(|value| {
        let value = value.trim();
        let url = if value.contains("://") {
            Url::parse(value)
        } else {
            Url::parse(&format!("http://{value}"))
        };
        url.ok()?
            .host_str()
            .map(|h| h.trim_end_matches('.').to_owned())
    })
    .collect()
}

/// The redirect policy of a source: at most [`MAX_REDIRECTS`], none to a destination `reach`
/// refuses.
pub(crate) fn redirect_policy(reach: Arc<Reach>) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            return attempt.error(Refused::TooManyRedirects);
        }
        match reach.check_url(attempt.url()) {
            Ok(()) => attempt.follow(),
            Err(LocalTarget { target }) => attempt.error(Refused::Redirect { target }),
        }
    })
}

/// Name resolution of a source: the system's, refusing names other than the registry's own
/// (and proxies') that resolve to a loopback or link-local address.
#[derive(Debug, Clone)]
pub(crate) struct Resolver(pub(crate) Arc<Reach>);

impl Resolve for Resolver {
    fn resolve(&self, name: Name) -> Resolving {
        let reach = self.0.clone();
        let name = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((name.as_str(), 0)).await?.collect();
            reach.admit(&name, &addrs)?;
            let addrs: Addrs = Box::new(addrs.into_iter());
            Ok(addrs)
        })
    }
}

/// A reqwest error in words, without its URL (which may carry signed query parameters); a
/// refusal by [`Reach`] is given as such.
pub(crate) fn describe_error(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = vec![
        if e.is_timeout() {
            "timed out"
        } else if e.is_connect() {
            "cannot connect"
        } else if e.is_redirect() {
            "redirect failed"
        } else if e.is_body() || e.is_decode() {
            "reading the answer failed"
        } else {
            "request failed"
        }
        .to_owned(),
    ];
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        if let Some(refused) = cause.downcast_ref::<Refused>() {
            return refused.to_string();
        }
        let text = cause.to_string();
        if parts.last() != Some(&text) {
            parts.push(text);
        }
        source = cause.source();
    }
    parts.join(": ")
}

/// One entry of a distribution error document, sanitised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RegistryError {
    /// `MANIFEST_UNKNOWN`, `UNAUTHORIZED`, ...
    pub(crate) code: String,
    /// The message, sanitised and bounded; empty when there is none.
    pub(crate) message: String,
}

/// The entries of a distribution error document (at most a few; codes must look like codes);
/// empty when `body` is not one. `detail` is never read.
pub(crate) fn registry_errors(body: &[u8]) -> Vec<RegistryError> {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(body) else {
        return Vec::new();
    };
    let Some(errors) = doc.get("errors").and_then(|e| e.as_array()) else {
        return Vec::new();
    };
    errors
        .iter()
        .filter_map(|entry| {
            let code = entry.get("code")?.as_str()?;
            if !is_error_code(code) {
                return None;
            }
            let message = entry
                .get("message")
                .and_then(|m| m.as_str())
                .map(|m| sanitize(m, MAX_MESSAGE_CHARS))
                .unwrap_or_default();
            Some(RegistryError {
                code: code.to_owned(),
                message,
            })
        })
        .take(MAX_REPORTED_ERRORS)
        .collect()
}

/// Whether `code` looks like a distribution error code: 1 to 64 of `A-Z`, `0-9`, `_`,
/// starting with a letter.
fn is_error_code(code: &str) -> bool {
    (1..=64).contains(&code.len())
        && code.starts_with(|c: char| c.is_ascii_uppercase())
        && code
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
}

/// Remote text made safe to show on one line: control and formatting characters dropped,
/// whitespace runs collapsed to one space, at most `max` characters (`…` marks a cut).
pub(crate) fn sanitize(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() {
            space = !out.is_empty();
            continue;
        }
        if c.is_control() || is_invisible(c) {
            continue;
        }
        let needed = usize::from(space) + 1;
        if count + needed > max {
            out.push('…');
            return out;
        }
        if space {
            out.push(' ');
            space = false;
        }
        out.push(c);
        count += needed;
    }
    out
}

/// Format characters that change how text reads (bidirectional overrides, zero-width ones).
fn is_invisible(c: char) -> bool {
    matches!(c, '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}')
}

/// The entries of a distribution error document in words: `CODE: message; CODE`.
pub(crate) fn show_errors(errors: &[RegistryError]) -> String {
    errors
        .iter()
        .map(|e| {
            if e.message.is_empty() {
                e.code.clone()
            } else {
                format!("{}: {}", e.code, e.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// What a failed answer means for the pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// Credentials are missing or refused.
    Unauthenticated,
    /// Access is denied.
    Denied,
    /// The registry does not know the image or blob.
    NotFound,
    /// Anything else.
    Other,
}

/// Classifies a failed answer by its distribution error codes, else by its status.
pub(crate) fn classify(status: u16, errors: &[RegistryError]) -> FailureKind {
    let has = |codes: &[&str]| errors.iter().any(|e| codes.contains(&e.code.as_str()));
    if has(&["UNAUTHORIZED"]) {
        FailureKind::Unauthenticated
    } else if has(&["DENIED"]) {
        FailureKind::Denied
    } else if has(&[
        "MANIFEST_UNKNOWN",
        "NAME_UNKNOWN",
        "BLOB_UNKNOWN",
        "NOT_FOUND",
    ]) {
        FailureKind::NotFound
    } else {
        match status {
            401 => FailureKind::Unauthenticated,
            403 => FailureKind::Denied,
            404 => FailureKind::NotFound,
            _ => FailureKind::Other,
        }
    }
}

/// A failed answer in words, without its body: the status line, then either the distribution
/// errors of `body` (when the answer came from the host asked) or the origin that answered
/// after a redirect (whose body is never looked at).
pub(crate) fn describe_failure(
    status: reqwest::StatusCode,
    redirected_to: Option<&str>,
    errors: &[RegistryError],
) -> String {
    match redirected_to {
        Some(origin) => format!("{status} from {origin} (redirected there)"),
        None if errors.is_empty() => status.to_string(),
        None => format!("{status} ({})", show_errors(errors)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("address")
    }

    #[test]
    fn local_addresses() {
        for local in [
            "127.0.0.1",
            "127.255.0.9",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "::1",
            "::",
            "fe80::1",
            "febf::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.1.1",
            "::ffff:0.0.0.0",
        ] {
            assert!(is_local_ip(ip(local)), "{local}");
        }
        for remote in [
            "10.0.0.1",
            "192.168.1.1",
            "198.51.100.1",
            "8.8.8.8",
            "fd00::1",
            "fec0::1",
            "2001:db8::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_local_ip(ip(remote)), "{remote}");
        }
    }

    #[test]
    fn local_hosts() {
        for local in [
            "localhost",
            "LOCALHOST.",
            "registry.localhost",
            "127.0.0.1",
            "[::1]",
            "[::ffff:7f00:1]",
            "[fe80::1]",
        ] {
            assert!(is_local_host(local), "{local}");
        }
        for remote in [
            "registry.example",
            "localhost.example",
            "10.1.2.3",
            "[2001:db8::1]",
        ] {
            assert!(!is_local_host(remote), "{remote}");
        }
        // URLs normalise the other spellings of loopback before they are classified.
        for url in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.1:5000/",
            "http://[::ffff:127.0.0.1]/",
            "http://[0:0:0:0:0:0:0:1]/",
        ] {
            let url = Url::parse(url).expect("url");
            assert!(
                is_local_host(url.host_str().expect("host")),
                "{url} is local"
            );
        }
    }

    #[test]
    fn reach_refuses_local_targets_only_for_remote_registries() {
        let remote = Reach::new("198.51.100.1:5000");
        assert!(!remote.registry_is_local());
        let url = |u: &str| Url::parse(u).expect("url");
        assert_eq!(
            remote.check_url(&url("http://127.0.0.1:8080/secret?x=1")),
            Err(LocalTarget {
                target: "http://127.0.0.1:8080".to_owned()
            })
        );
        assert!(remote.check_url(&url("http://localhost/")).is_err());
        assert!(
            remote
                .check_url(&url("http://[::ffff:127.0.0.1]/"))
                .is_err()
        );
        assert!(
            remote
                .check_url(&url("http://169.254.169.254/latest"))
                .is_err()
        );
        assert!(remote.check_url(&url("https://cdn.example/blob")).is_ok());
        assert!(remote.check_url(&url("http://10.0.0.1/")).is_ok());
        let loopback = Reach::new("127.0.0.1:5000");
        assert!(loopback.registry_is_local());
        assert!(loopback.check_url(&url("http://127.0.0.1:9/")).is_ok());
        assert!(Reach::new("[::1]:5000").registry_is_local());
        assert!(Reach::new("localhost:5000").registry_is_local());
        assert!(!Reach::new("registry.k8s.io").registry_is_local());

        let at = |a: &str| vec![SocketAddr::new(ip(a), 0)];
        assert!(matches!(
            remote.admit("evil.example", &at("127.0.0.1")),
            Err(Refused::Resolved { .. })
        ));
        assert!(remote.admit("cdn.example", &at("93.184.216.34")).is_ok());
        let named = Reach::new("registry.example:5000");
        assert!(named.admit("other.example", &at("::1")).is_err());
        // The registry's own name resolving to loopback makes it a loopback registry.
        assert!(named.admit("Registry.Example.", &at("127.0.0.1")).is_ok());
        assert!(named.registry_is_local());
        assert!(named.admit("other.example", &at("::1")).is_ok());
    }

    #[tokio::test]
    async fn names_resolving_to_loopback_are_refused_at_connection_time() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let reach = Reach::new("198.51.100.1:5000");
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(redirect_policy(reach.clone()))
            .dns_resolver(Resolver(reach))
            .build()
            .expect("client");
        let e = client
            .get("http://localhost:9/")
            .send()
            .await
            .expect_err("refused");
        let text = describe_error(&e);
        assert!(
            text.starts_with("localhost resolves to") && text.contains("refused"),
            "{text}"
        );
    }

    #[test]
    fn distribution_errors_give_codes_and_bounded_messages_only() {
        let body = br#"{"errors":[
            {"code":"MANIFEST_UNKNOWN","message":"manifest\n\tunknown\u0007","detail":{"secret":"DETAIL"}},
            {"code":"<script>","message":"not a code"},
            {"code":"DENIED"},
            {"code":"UNAUTHORIZED","message":"a"},
            {"code":"NAME_UNKNOWN","message":"fourth"}
        ]}"#;
        let errors = registry_errors(body);
        assert_eq!(
            errors,
            [
                RegistryError {
                    code: "MANIFEST_UNKNOWN".into(),
                    message: "manifest unknown".into()
                },
                RegistryError {
                    code: "DENIED".into(),
                    message: String::new()
                },
                RegistryError {
                    code: "UNAUTHORIZED".into(),
                    message: "a".into()
                },
            ]
        );
        let shown = show_errors(&errors);
        assert_eq!(
            shown,
            "MANIFEST_UNKNOWN: manifest unknown; DENIED; UNAUTHORIZED: a"
        );
        assert!(!shown.contains("DETAIL"));
        assert!(registry_errors(b"<html>403 SECRET</html>").is_empty());
        assert!(registry_errors(br#"{"errors":"SECRET"}"#).is_empty());
        assert!(registry_errors(br#"{"errors":[{"code":42}]}"#).is_empty());
        let long = format!(
            r#"{{"errors":[{{"code":"DENIED","message":"{}"}}]}}"#,
            "x".repeat(5000)
        );
        let errors = registry_errors(long.as_bytes());
        assert_eq!(errors[0].message.chars().count(), MAX_MESSAGE_CHARS + 1);
        assert!(errors[0].message.ends_with('…'));
    }

    #[test]
    fn sanitize_keeps_one_bounded_line() {
        assert_eq!(sanitize("  a \r\n b\u{1b}[31m c  ", 100), "a b[31m c");
        assert_eq!(sanitize("abc\u{202e}def\u{200b}", 100), "abcdef");
        assert_eq!(sanitize("abcdef", 3), "abc…");
        assert_eq!(sanitize("ab cd", 3), "ab…");
        assert_eq!(sanitize("", 3), "");
    }

    #[test]
    fn failures_are_classified_and_described_without_bodies() {
        use reqwest::StatusCode;
        let coded = |code: &str| {
            vec![RegistryError {
                code: code.into(),
                message: String::new(),
            }]
        };
        assert_eq!(classify(401, &[]), FailureKind::Unauthenticated);
        assert_eq!(classify(403, &[]), FailureKind::Denied);
        assert_eq!(classify(404, &[]), FailureKind::NotFound);
        assert_eq!(classify(500, &[]), FailureKind::Other);
        assert_eq!(
            classify(400, &coded("UNAUTHORIZED")),
            FailureKind::Unauthenticated
        );
        assert_eq!(classify(404, &coded("DENIED")), FailureKind::Denied);
        assert_eq!(classify(400, &coded("BLOB_UNKNOWN")), FailureKind::NotFound);
        assert_eq!(classify(429, &coded("TOOMANYREQUESTS")), FailureKind::Other);
        assert_eq!(
            describe_failure(StatusCode::FORBIDDEN, None, &[]),
            "403 Forbidden"
        );
        assert_eq!(
            describe_failure(StatusCode::NOT_FOUND, None, &coded("MANIFEST_UNKNOWN")),
            "404 Not Found (MANIFEST_UNKNOWN)"
        );
        assert_eq!(
            describe_failure(
                StatusCode::FORBIDDEN,
                Some("https://cdn.example"),
                &coded("DENIED")
            ),
            "403 Forbidden from https://cdn.example (redirected there)"
        );
    }
}
