//! Per-registry host settings read from a `certs.d` directory in containerd's `hosts.toml`
//! format, so an operator can copy a node's `/etc/containerd/certs.d` as it is.
//!
//! For a registry `host[:port]` the directory consulted is the first that exists of
//! `<dir>/<host>_<port>_`, `<dir>/<host[:port]>` and `<dir>/_default`. Its `hosts.toml` lists
//! mirrors as `[host."<url>"]` tables, tried in file order, then the upstream `server`; each
//! has `capabilities`, `ca`, `client`, `skip_verify`, `header`, `override_path` and
//! `dial_timeout`. Relative file names are relative to the directory. A directory without a
//! `hosts.toml` is read in Docker's layout instead: `*.crt` files are CAs, `*.cert` files
//! client certificates with their `*.key`.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why a host directory could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct HostsError {
    /// The file (or directory) at fault.
    pub path: PathBuf,
    /// What is wrong with it.
    pub reason: String,
}

/// Why a `hosts.toml` is not usable.
#[derive(Debug, thiserror::Error)]
pub enum HostsFileError {
    /// The text is not TOML.
    #[error("{source}")]
    Toml {
        /// The TOML error.
        #[from]
        source: toml::de::Error,
    },
    /// A key the format does not have.
    #[error("unknown key `{key}`")]
    UnknownKey {
        /// The key.
        key: String,
    },
    /// A capability the format does not have.
    #[error("unknown capability `{capability}`")]
    UnknownCapability {
        /// The capability, lower case.
        capability: String,
    },
    /// A value of the wrong type.
    #[error("`{key}` must {expected}")]
    WrongType {
        /// The key, dotted.
        key: String,
        /// What it must be (`be true or false`, `hold strings`, ...).
        expected: &'static str,
    },
    /// A `client` entry that is an array but not a `[cert, key]` pair.
    #[error("a `client` pair must be [\"cert\", \"key\"]")]
    ClientPair,
    /// A URL of a scheme other than `http://` and `https://`.
    #[error("{url:?} is neither http:// nor https://")]
    Scheme {
        /// The URL.
        url: String,
    },
    /// A URL without a usable host.
    #[error("{url:?} names no usable host")]
    Host {
        /// The URL.
        url: String,
    },
    /// A URL with `..`, a query or a fragment in its path.
    #[error("{url:?} has an unusable path")]
    Path {
        /// The URL.
        url: String,
    },
    /// `dial_timeout` is not a duration.
    #[error("dial_timeout: {source}")]
    DialTimeout {
        /// Why.
        #[from]
        source: InvalidDuration,
    },
    /// A mirror's table is unusable.
    #[error("host.\"{url}\": {source}")]
    Mirror {
        /// The mirror's URL, the table's name.
        url: String,
        /// Why.
        source: Box<HostsFileError>,
    },
    /// The upstream `server` is unusable.
    #[error("server: {source}")]
    Server {
        /// Why.
        source: Box<HostsFileError>,
    },
}

impl HostsFileError {
    /// A [`HostsFileError::WrongType`] of `key`.
    fn wrong_type(key: impl Into<String>, expected: &'static str) -> HostsFileError {
        HostsFileError::WrongType {
            key: key.into(),
            expected,
        }
    }
}

/// A duration that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{text:?} is not a duration such as 30s, 5m or 1h30m")]
pub struct InvalidDuration {
    /// The text, trimmed.
    pub text: String,
}

/// TLS settings of one endpoint, as files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// CA bundles trusted beside the system's roots.
    pub ca: Vec<PathBuf>,
    /// Client certificates with their keys (`None`: the key is in the certificate file).
    pub client: Vec<(PathBuf, Option<PathBuf>)>,
    /// Whether the server's certificate is not verified.
    pub skip_verify: bool,
}

/// One endpoint of a registry: a mirror or the upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `http` rather than `https`.
    pub plain_http: bool,
    /// `host[:port]`; `None` for the upstream server when `server` is not set.
    pub host: Option<String>,
    /// The registry API root (`/v2`, or a path ending in `/v2`, or the path as given with
    /// `override_path`).
    pub api_root: String,
    /// Manifests and blobs by digest may be fetched here.
    pub pull: bool,
    /// Tags may be resolved here.
    pub resolve: bool,
    /// TLS settings.
    pub tls: TlsFiles,
    /// Headers sent with every request.
    pub headers: Vec<(String, String)>,
    /// How long connecting may take.
    pub dial_timeout: Option<Duration>,
    /// This is the upstream server, not a mirror.
    pub is_server: bool,
}

/// The host settings of one registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// The directory they came from.
    pub dir: PathBuf,
    /// Mirrors in order, then the server.
    pub endpoints: Vec<Endpoint>,
}

/// The directories consulted for `registry`, in order.
pub fn candidate_dirs(root: &Path, registry: &str) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some((host, port)) = registry.rsplit_once(':')
        && !host.is_empty()
    {
        dirs.push(root.join(format!("{host}_{port}_")));
    }
    dirs.push(root.join(registry));
    dirs.push(root.join("_default"));
    dirs
}

/// Reads the host settings of `registry` under `root`; `None` when no directory applies.
pub fn load(root: &Path, registry: &str) -> Result<Option<HostConfig>, HostsError> {
    if registry.contains('/') || registry.starts_with('.') {
        return Ok(None);
    }
    for dir in candidate_dirs(root, registry) {
        match std::fs::metadata(&dir) {
            Ok(meta) if meta.is_dir() => return load_dir(&dir).map(Some),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(HostsError {
                    path: dir,
                    reason: e.to_string(),
                });
            }
        }
    }
    Ok(None)
}

/// Reads one host directory.
fn load_dir(dir: &Path) -> Result<HostConfig, HostsError> {
    let file = dir.join("hosts.toml");
    let text = match std::fs::read_to_string(&file) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => {
            return Err(HostsError {
                path: file,
                reason: e.to_string(),
            });
        }
    };
    let endpoints = if text.trim().is_empty() {
        vec![cert_files(dir)?]
    } else {
        parse(dir, &text).map_err(|e| HostsError {
            path: file.clone(),
            reason: e.to_string(),
        })?
    };
    Ok(HostConfig {
        dir: dir.to_owned(),
        endpoints,
    })
}

/// The upstream server with the CAs and client certificates of a Docker-style directory.
fn cert_files(dir: &Path) -> Result<Endpoint, HostsError> {
    let unreadable = |e: std::io::Error| HostsError {
        path: dir.to_owned(),
        reason: e.to_string(),
    };
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map_err(unreadable)?
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| !t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut tls = TlsFiles::default();
    for name in &names {
        if name.ends_with(".crt") {
            tls.ca.push(dir.join(name));
        } else if let Some(stem) = name.strip_suffix(".cert") {
            let key = dir.join(format!("{stem}.key"));
            let key = key.is_file().then_some(key);
            tls.client.push((dir.join(name), key));
        }
    }
    Ok(Endpoint {
        tls,
        ..server_default()
    })
}

/// The upstream server with nothing configured.
fn server_default() -> Endpoint {
    Endpoint {
        plain_http: false,
        host: None,
        api_root: "/v2".into(),
        pull: true,
        resolve: true,
        tls: TlsFiles::default(),
        headers: Vec::new(),
        dial_timeout: None,
        is_server: true,
    }
}

/// Parses a `hosts.toml` of directory `dir`.
pub fn parse(dir: &Path, text: &str) -> Result<Vec<Endpoint>, HostsFileError> {
    let doc: toml::Table = text.parse()?;
    let mut endpoints = Vec::new();
    if let Some(hosts) = doc.get("host") {
        let hosts = hosts.as_table().ok_or_else(|| {
            HostsFileError::wrong_type("host", "be a table of `[host.\"<url>\"]` tables")
        })?;
        for (url, settings) in hosts {
            let settings = settings.as_table().ok_or_else(|| {
                HostsFileError::wrong_type(format!("host.\"{url}\""), "be a table")
            })?;
            let mirror = |source| HostsFileError::Mirror {
                url: url.clone(),
                source: Box::new(source),
            };
            let mut endpoint = endpoint(dir, settings).map_err(mirror)?;
            set_url(&mut endpoint, url, settings).map_err(mirror)?;
            endpoint.is_server = false;
            endpoints.push(endpoint);
        }
    }
    let mut server = endpoint(dir, &doc)?;
    server.is_server = true;
    if let Some(url) = doc.get("server") {
        let url = url
            .as_str()
            .ok_or_else(|| HostsFileError::wrong_type("server", "be a string"))?;
        set_url(&mut server, url, &doc).map_err(|source| HostsFileError::Server {
            source: Box::new(source),
        })?;
    }
    endpoints.push(server);
    Ok(endpoints)
}

/// The keys a host table (or the top level) may hold.
const KEYS: &[&str] = &[
    "capabilities",
    "ca",
    "client",
    "skip_verify",
    "header",
    "override_path",
    "dial_timeout",
];

/// The settings of one host table (or of the top level, for the server).
fn endpoint(dir: &Path, table: &toml::Table) -> Result<Endpoint, HostsFileError> {
    for key in table.keys() {
        if !KEYS.contains(&key.as_str()) && key != "server" && key != "host" {
            return Err(HostsFileError::UnknownKey { key: key.clone() });
        }
    }
    let mut endpoint = server_default();
    if let Some(caps) = table.get("capabilities") {
        endpoint.pull = false;
        endpoint.resolve = false;
        for cap in strings(caps, "capabilities")? {
            match cap.to_ascii_lowercase().as_str() {
                "pull" => endpoint.pull = true,
                "resolve" => endpoint.resolve = true,
                "push" | "referrers" => {}
                other => {
                    return Err(HostsFileError::UnknownCapability {
                        capability: other.to_owned(),
                    });
                }
            }
        }
    }
    if let Some(ca) = table.get("ca") {
        endpoint.tls.ca = strings(ca, "ca")?
            .into_iter()
            .map(|p| absolute(dir, &p))
            .collect();
    }
    if let Some(client) = table.get("client") {
        endpoint.tls.client = client_pairs(dir, client)?;
    }
    if let Some(skip) = table.get("skip_verify") {
        endpoint.tls.skip_verify = skip
            .as_bool()
            .ok_or_else(|| HostsFileError::wrong_type("skip_verify", "be true or false"))?;
    }
    if let Some(header) = table.get("header") {
        let header = header
            .as_table()
            .ok_or_else(|| HostsFileError::wrong_type("header", "be a table"))?;
        for (name, value) in header {
            for value in strings(value, &format!("header.{name}"))? {
                endpoint.headers.push((name.clone(), value));
            }
        }
    }
    if let Some(timeout) = table.get("dial_timeout") {
        let text = timeout
            .as_str()
            .ok_or_else(|| HostsFileError::wrong_type("dial_timeout", "be a string"))?;
        endpoint.dial_timeout = Some(parse_duration(text)?);
    }
    Ok(endpoint)
}

/// Sets scheme, host and API root from `url` (`https://` when it has no scheme).
fn set_url(endpoint: &mut Endpoint, url: &str, table: &toml::Table) -> Result<(), HostsFileError> {
    let (plain_http, rest) = if let Some(rest) = url.strip_prefix("http://") {
        (true, rest)
    } else if let Some(rest) = url.strip_prefix("https://") {
        (false, rest)
    } else if url.contains("://") {
        return Err(HostsFileError::Scheme {
            url: url.to_owned(),
        });
    } else {
        (false, url)
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    if host.is_empty() || host.contains(['@', '?', '#', ' ']) {
        return Err(HostsFileError::Host {
            url: url.to_owned(),
        });
    }
    let override_path = match table.get("override_path") {
        Some(v) => v
            .as_bool()
            .ok_or_else(|| HostsFileError::wrong_type("override_path", "be true or false"))?,
        None => false,
    };
    let segments: Vec<&str> = path
        .split('/')
        .filter(|s| !s.is_empty() && *s != ".")
        .collect();
    if segments.contains(&"..") || path.contains(['?', '#']) {
        return Err(HostsFileError::Path {
            url: url.to_owned(),
        });
    }
    let mut api_root = String::new();
    for segment in &segments {
        api_root.push('/');
        api_root.push_str(segment);
    }
    if !override_path && !api_root.ends_with("/v2") {
        api_root.push_str("/v2");
    }
    endpoint.plain_http = plain_http;
    endpoint.host = Some(host.to_owned());
    endpoint.api_root = api_root;
    Ok(())
}

/// A string or an array of strings.
fn strings(value: &toml::Value, key: &str) -> Result<Vec<String>, HostsFileError> {
    match value {
        toml::Value::String(s) => Ok(vec![s.clone()]),
        toml::Value::Array(items) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| HostsFileError::wrong_type(key, "hold strings"))
            })
            .collect(),
        _ => Err(HostsFileError::wrong_type(
            key,
            "be a string or an array of strings",
        )),
    }
}

/// `client`: a file, an array of files, or an array of `[cert, key]` pairs.
fn client_pairs(
    dir: &Path,
    value: &toml::Value,
) -> Result<Vec<(PathBuf, Option<PathBuf>)>, HostsFileError> {
    let items = match value {
        toml::Value::String(s) => return Ok(vec![(absolute(dir, s), None)]),
        toml::Value::Array(items) => items,
        _ => {
            return Err(HostsFileError::wrong_type(
                "client",
                "be a file, or an array of files or [cert, key] pairs",
            ));
        }
    };
    items
        .iter()
        .map(|item| match item {
            toml::Value::String(s) => Ok((absolute(dir, s), None)),
            toml::Value::Array(pair) => match pair.as_slice() {
                [toml::Value::String(cert), toml::Value::String(key)] => {
                    Ok((absolute(dir, cert), Some(absolute(dir, key))))
                }
                _ => Err(HostsFileError::ClientPair),
            },
            _ => Err(HostsFileError::wrong_type(
                "client",
                "hold files or [cert, key] pairs",
            )),
        })
        .collect()
}

/// `path` made absolute against `dir`.
fn absolute(dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_owned()
    } else {
        dir.join(path)
    }
}

/// A duration as Go writes them (`500ms`, `30s`, `1m30s`, `2h`), or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration, InvalidDuration> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let bad = || InvalidDuration {
        text: text.to_owned(),
    };
    let mut total = Duration::ZERO;
    let mut rest = text;
    if rest.is_empty() {
        return Err(bad());
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let number: f64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total += Duration::try_from_secs_f64(number * scale).map_err(|_| bad())?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_containerd_hosts_file_parses_in_order() {
        let dir = Path::new("/etc/crius/certs.d/registry.example:5000");
        let text = r#"
server = "https://registry.example:5000"
ca = "ca.crt"
client = [["/etc/certs/client.cert", "/etc/certs/client.key"]]

[host."https://mirror-b.example/prefix"]
  capabilities = ["pull"]
  skip_verify = true
  dial_timeout = "3s"

[host."http://mirror-a.example:8080"]
  capabilities = ["pull", "resolve"]
  ca = ["/etc/a.pem", "b.pem"]
  client = "both.pem"
  [host."http://mirror-a.example:8080".header]
    x-custom = ["1", "2"]

[host."https://exact.example/custom/api"]
  override_path = true
"#;
        let endpoints = parse(dir, text).expect("parses");
        assert_eq!(endpoints.len(), 4);
        let b = &endpoints[0];
        assert_eq!(b.host.as_deref(), Some("mirror-b.example"));
        assert_eq!(b.api_root, "/prefix/v2");
        assert!(b.pull && !b.resolve && b.tls.skip_verify && !b.plain_http);
        assert_eq!(b.dial_timeout, Some(Duration::from_secs(3)));
        let a = &endpoints[1];
        assert!(a.plain_http && a.pull && a.resolve);
        assert_eq!(a.api_root, "/v2");
        assert_eq!(
            a.tls.ca,
            vec![PathBuf::from("/etc/a.pem"), dir.join("b.pem")]
        );
        assert_eq!(a.tls.client, vec![(dir.join("both.pem"), None)]);
        assert_eq!(
            a.headers,
            vec![
                ("x-custom".into(), "1".into()),
                ("x-custom".into(), "2".into())
            ]
        );
        assert_eq!(endpoints[2].api_root, "/custom/api");
        let server = &endpoints[3];
        assert!(server.is_server && server.pull && server.resolve);
        assert_eq!(server.host.as_deref(), Some("registry.example:5000"));
        assert_eq!(server.tls.ca, vec![dir.join("ca.crt")]);
        assert_eq!(
            server.tls.client,
            vec![(
                PathBuf::from("/etc/certs/client.cert"),
                Some(PathBuf::from("/etc/certs/client.key"))
            )]
        );
    }

    #[test]
    fn bad_hosts_files_are_refused_with_the_key() {
        let dir = Path::new("/d");
        for (text, wanted) in [
            ("capabilities = [\"fly\"]", "fly"),
            ("skip_verfy = true", "skip_verfy"),
            ("server = 5", "server"),
            ("[host.\"ftp://x\"]\n", "ftp://x"),
            ("client = [[\"a\"]]", "pair"),
            ("dial_timeout = \"soon\"", "dial_timeout"),
            ("[host.\"https://x/../y\"]\n", "path"),
            ("not toml at all = = =", "="),
        ] {
            let err = parse(dir, text).expect_err(text).to_string();
            assert!(err.contains(wanted), "{text}: {err}");
        }
        let err = parse(dir, "[host.\"ftp://x\"]\n").expect_err("ftp");
        assert!(
            matches!(&err, HostsFileError::Mirror { url, source }
                if url == "ftp://x" && matches!(**source, HostsFileError::Scheme { .. })),
            "{err:?}"
        );
    }

    #[test]
    fn host_directories_are_looked_up_as_containerd_does() {
        let root = tempfile::tempdir().expect("tempdir");
        assert_eq!(
            candidate_dirs(root.path(), "127.0.0.1:5000"),
            vec![
                root.path().join("127.0.0.1_5000_"),
                root.path().join("127.0.0.1:5000"),
                root.path().join("_default"),
            ]
        );
        assert!(load(root.path(), "r.example").expect("load").is_none());
        std::fs::create_dir(root.path().join("_default")).expect("mkdir");
        std::fs::write(root.path().join("_default/ca.crt"), "x").expect("write");
        std::fs::write(root.path().join("_default/me.cert"), "x").expect("write");
        std::fs::write(root.path().join("_default/me.key"), "x").expect("write");
        let config = load(root.path(), "r.example").expect("load").expect("some");
        let server = &config.endpoints[0];
        assert_eq!(server.tls.ca, vec![root.path().join("_default/ca.crt")]);
        assert_eq!(
            server.tls.client,
            vec![(
                root.path().join("_default/me.cert"),
                Some(root.path().join("_default/me.key"))
            )]
        );
        assert_eq!(server.host, None);
        std::fs::create_dir(root.path().join("r.example")).expect("mkdir");
        std::fs::write(
            root.path().join("r.example/hosts.toml"),
            "skip_verify = true\n",
        )
        .expect("write");
        let config = load(root.path(), "r.example").expect("load").expect("some");
        assert!(config.endpoints[0].tls.skip_verify);
        assert!(load(root.path(), "../etc").expect("load").is_none());
    }

    #[test]
    fn durations_parse_as_go_writes_them() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
    }
}
