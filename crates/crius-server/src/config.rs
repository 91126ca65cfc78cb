//! The daemon's configuration: a TOML file whose every key is optional, with built-in defaults.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default configuration file.
pub const DEFAULT_CONFIG_FILE: &str = "/etc/crius/config.toml";
/// Default directory for persistent data (images, metadata).
pub const DEFAULT_ROOT: &str = "/var/lib/crius";
/// Default directory for runtime state (sockets, per-pod state).
pub const DEFAULT_STATE: &str = "/run/crius";
/// Default CRI socket.
pub const DEFAULT_LISTEN: &str = "/run/crius/crius.sock";
/// Default directory holding CNI network configurations.
pub const DEFAULT_CNI_CONF_DIR: &str = "/etc/cni/net.d";
/// Default directories searched for CNI plugin binaries, in order.
pub const DEFAULT_CNI_BIN_DIRS: [&str; 2] = ["/opt/cni/bin", "/usr/lib/cni"];

/// Default address of the streaming server (Exec, Attach, PortForward URLs): loopback, any
/// free port.
pub const DEFAULT_STREAM_ADDRESS: &str = "127.0.0.1:0";
/// Default `events_buffer`: events kept per GetContainerEvents subscriber.
pub const DEFAULT_EVENTS_BUFFER: usize = 1024;
/// Default directories holding CDI spec files, in increasing order of precedence (the CDI
/// spec's static and dynamic directories).
pub const DEFAULT_CDI_SPEC_DIRS: [&str; 2] = ["/etc/cdi", "/var/run/cdi"];

/// Default directory of per-registry host settings (containerd's `certs.d` layout).
pub const DEFAULT_REGISTRY_CONFIG_DIR: &str = "/etc/crius/certs.d";
/// Default `pull_progress_timeout`.
pub const DEFAULT_PULL_PROGRESS_TIMEOUT: &str = "5m";

/// Exists while systemd runs as the init system.
pub const SYSTEMD_RUNNING: &str = "/run/systemd/system";

/// Whether `/sys/fs/cgroup` is a cgroup2 mount (a unified-only node).
fn unified_cgroups() -> bool {
    nix::sys::statfs::statfs("/sys/fs/cgroup")
        .is_ok_and(|fs| fs.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
}

/// Why a configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a value of the wrong type.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Line, column, key and reason.
        message: String,
    },
    /// A value parsed but is not acceptable.
    #[error("invalid config{origin}: key `{key}`: {reason}")]
    Invalid {
        /// ` file PATH` when the value came from a file.
        origin: String,
        /// The key, dotted.
        key: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Who manages cgroups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CgroupDriver {
    /// crius writes the cgroup filesystem itself.
    #[default]
    Cgroupfs,
    /// systemd manages the cgroups (needs a running systemd).
    Systemd,
}

/// Registry settings.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Upstream registry host → mirror endpoints (`http://` or `https://` URLs), tried in order
    /// before the upstream host.
    #[serde(default)]
    pub mirrors: BTreeMap<String, Vec<String>>,
}

/// The whole configuration, after defaults are applied.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Persistent data directory.
    pub root: PathBuf,
    /// Where containers' writable layers live (`<root>/containers` when unset): on disk, never
    /// the state directory.
    pub container_root: Option<PathBuf>,
    /// Runtime state directory.
    pub state: PathBuf,
    /// Path of the CRI unix socket.
    pub listen: PathBuf,
    /// Log filter (`error`, `warn`, `info`, `debug`, `trace`, or a tracing filter directive).
    pub log_level: String,
    /// Log output format.
    pub log_format: LogFormat,
    /// Registries (`host` or `host:port`) reached over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Registry mirrors.
    pub registry: RegistryConfig,
    /// Directory of per-registry host settings in containerd's `certs.d` layout
    /// (`<host>/hosts.toml`: mirrors, CAs, client certificates, `skip_verify`); empty: none.
    pub registry_config_dir: PathBuf,
    /// How long a pull may receive nothing before it fails (`30s`, `5m`); `0`: no limit.
    pub pull_progress_timeout: String,
    /// Directory holding CNI network configurations.
    pub cni_conf_dir: PathBuf,
    /// Directories searched for CNI plugin binaries.
    pub cni_bin_dirs: Vec<PathBuf>,
    /// The cgroup driver: `cgroupfs` or `systemd` (must match kubelet's).
    pub cgroup_driver: CgroupDriver,
    /// Where the streaming server listens (`ip:port`; port 0 picks a free one). Its URLs are
    /// handed to kubelet, which connects to them.
    pub stream_address: String,
    /// Most uncompressed bytes one image layer may expand to; a pull over it fails.
    pub max_layer_bytes: u64,
    /// Most tar entries one image layer may hold.
    pub max_layer_entries: u64,
    /// Most layers one image may have.
    pub max_image_layers: usize,
    /// A directory whose OCI layouts and image tarballs (`docker save`, OCI archive) criusd
    /// imports at start-up.
    pub import_dir: Option<PathBuf>,
    /// Where Prometheus metrics are served over HTTP at `/metrics` (`ip:port`); empty: off.
    pub metrics_address: String,
    /// GetContainerEvents events kept for a subscriber that falls behind; older ones are
    /// dropped for it (and counted) rather than slowing container operations.
    pub events_buffer: usize,
    /// Directories of CDI spec files (`*.yaml`, `*.json`) resolving `CDI_devices`; a device
    /// in a later directory overrides one of the same name in an earlier one.
    pub cdi_spec_dirs: Vec<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            root: DEFAULT_ROOT.into(),
            state: DEFAULT_STATE.into(),
            listen: DEFAULT_LISTEN.into(),
            log_level: "info".into(),
            log_format: LogFormat::Text,
            insecure_registries: Vec::new(),
            registry: RegistryConfig::default(),
            registry_config_dir: DEFAULT_REGISTRY_CONFIG_DIR.into(),
            pull_progress_timeout: DEFAULT_PULL_PROGRESS_TIMEOUT.into(),
            cni_conf_dir: DEFAULT_CNI_CONF_DIR.into(),
            cni_bin_dirs: DEFAULT_CNI_BIN_DIRS.iter().map(PathBuf::from).collect(),
            cgroup_driver: CgroupDriver::Cgroupfs,
            stream_address: DEFAULT_STREAM_ADDRESS.into(),
            max_layer_bytes: crius_image::limits::DEFAULT_MAX_LAYER_BYTES,
            max_layer_entries: crius_image::limits::DEFAULT_MAX_LAYER_ENTRIES,
            max_image_layers: crius_image::limits::DEFAULT_MAX_LAYERS,
            import_dir: None,
            container_root: None,
            metrics_address: String::new(),
            events_buffer: DEFAULT_EVENTS_BUFFER,
            cdi_spec_dirs: DEFAULT_CDI_SPEC_DIRS.iter().map(PathBuf::from).collect(),
        }
    }
}

impl Config {
    /// Where containers' writable layers live.
    pub fn container_root(&self) -> PathBuf {
        self.container_root
            .clone()
            .unwrap_or_else(|| self.root.join("containers"))
    }

    /// Parses TOML text; `path` names its origin in errors.
    pub fn from_toml(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: describe_toml_error(text, &e),
        })?;
        config.validate(Some(path))?;
        Ok(config)
    }

    /// Reads a config file. A missing file gives the defaults when `required` is false.
    pub fn load(path: &Path, required: bool) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Config::from_toml(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
                Ok(Config::default())
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Checks values that parse but make no sense; `path` names the file they came from.
    pub fn validate(&self, path: Option<&Path>) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            origin: path
                .map(|p| format!(" file {}", p.display()))
                .unwrap_or_default(),
            key: key.to_owned(),
            reason,
        };
        for (key, dir) in [
            ("root", &self.root),
            ("state", &self.state),
            ("listen", &self.listen),
            ("cni_conf_dir", &self.cni_conf_dir),
        ] {
            if !dir.is_absolute() {
                return Err(invalid(
                    key,
                    format!("{} is not an absolute path", dir.display()),
                ));
            }
        }
        if let Some(dir) = &self.container_root
            && !dir.is_absolute()
        {
            return Err(invalid(
                "container_root",
                format!("{} is not an absolute path", dir.display()),
            ));
        }
        if !self.registry_config_dir.as_os_str().is_empty()
            && !self.registry_config_dir.is_absolute()
        {
            return Err(invalid(
                "registry_config_dir",
                format!(
                    "{} is not an absolute path",
                    self.registry_config_dir.display()
                ),
            ));
        }
        crius_image::hosts::parse_duration(&self.pull_progress_timeout)
            .map_err(|e| invalid("pull_progress_timeout", e.to_string()))?;
        if let Some(dir) = &self.import_dir
            && !dir.is_absolute()
        {
            return Err(invalid(
                "import_dir",
                format!("{} is not an absolute path", dir.display()),
            ));
        }
        for (key, value) in [
            ("max_layer_bytes", self.max_layer_bytes),
            ("max_layer_entries", self.max_layer_entries),
            ("max_image_layers", self.max_image_layers as u64),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be at least 1".into()));
            }
        }
        for dir in &self.cni_bin_dirs {
            if !dir.is_absolute() {
                return Err(invalid(
                    "cni_bin_dirs",
                    format!("{} is not an absolute path", dir.display()),
                ));
            }
        }
        for dir in &self.cdi_spec_dirs {
            if !dir.is_absolute() {
                return Err(invalid(
                    "cdi_spec_dirs",
                    format!("{} is not an absolute path", dir.display()),
                ));
            }
        }
        if self.cgroup_driver == CgroupDriver::Systemd && !Path::new(SYSTEMD_RUNNING).exists() {
            return Err(invalid(
                "cgroup_driver",
                format!(
                    "\"systemd\" needs a running systemd ({SYSTEMD_RUNNING} is missing); use \"cgroupfs\""
                ),
            ));
        }
        if self.cgroup_driver == CgroupDriver::Systemd && !unified_cgroups() {
            return Err(invalid(
                "cgroup_driver",
                "\"systemd\" needs cgroup v2 alone (/sys/fs/cgroup a cgroup2 mount, as kubelet \
                 1.35+ wants it); this node mounts cgroup v1 hierarchies: use \"cgroupfs\" or boot \
                 with systemd.unified_cgroup_hierarchy=1"
                    .to_owned(),
            ));
        }
        if let Err(e) = self.stream_address.parse::<std::net::SocketAddr>() {
            return Err(invalid(
                "stream_address",
                format!(
                    "{:?} is not an ip:port address ({e}); e.g. \"127.0.0.1:0\" or \"[::1]:10010\"",
                    self.stream_address
                ),
            ));
        }
        if !self.metrics_address.is_empty()
            && let Err(e) = self.metrics_address.parse::<std::net::SocketAddr>()
        {
            return Err(invalid(
                "metrics_address",
                format!(
                    "{:?} is not an ip:port address ({e}); e.g. \"127.0.0.1:9090\", or empty for none",
                    self.metrics_address
                ),
            ));
        }
        if self.events_buffer == 0 {
            return Err(invalid("events_buffer", "must be at least 1".into()));
        }
        if self.cni_bin_dirs.is_empty() {
            return Err(invalid(
                "cni_bin_dirs",
                "must name at least one directory".into(),
            ));
        }
        for host in &self.insecure_registries {
            validate_host(host)
                .map_err(|e| invalid("insecure_registries", format!("{host:?}: {e}")))?;
        }
        for (host, endpoints) in &self.registry.mirrors {
            let key = format!("registry.mirrors.\"{host}\"");
            validate_host(host).map_err(|e| invalid(&key, e.to_string()))?;
            if endpoints.is_empty() {
                return Err(invalid(&key, "lists no mirror endpoint".into()));
            }
            for endpoint in endpoints {
                validate_endpoint(endpoint)
                    .map_err(|e| invalid(&key, format!("{endpoint:?}: {e}")))?;
            }
        }
        Ok(())
    }

    /// The streaming server's address (validated; the default if it does not parse).
    pub fn stream_addr(&self) -> std::net::SocketAddr {
        self.stream_address
            .parse()
            .unwrap_or_else(|_| std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0)))
    }

    /// The pull progress timeout (validated); `None` when off.
    pub fn pull_progress_timeout(&self) -> Option<std::time::Duration> {
        crius_image::hosts::parse_duration(&self.pull_progress_timeout)
            .ok()
            .filter(|d| !d.is_zero())
    }

    /// The per-registry host settings directory, if any.
    pub fn registry_config_dir(&self) -> Option<PathBuf> {
        (!self.registry_config_dir.as_os_str().is_empty()).then(|| self.registry_config_dir.clone())
    }

    /// The mirror endpoints configured for an upstream registry host, in order.
    pub fn mirrors_for(&self, host: &str) -> &[String] {
        self.registry
            .mirrors
            .get(host)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }
}

/// Renders a TOML error with its line and column and, where serde names it, the key.
fn describe_toml_error(text: &str, error: &toml::de::Error) -> String {
    let reason = error.message();
    match error.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            let source_line = text.lines().nth(line - 1).unwrap_or("").trim();
            format!("line {line}, column {column} (`{source_line}`): {reason}")
        }
        None => reason.to_owned(),
    }
}

/// Why a registry host or mirror endpoint is not acceptable.
#[derive(Debug, thiserror::Error)]
enum RegistryError {
    #[error("empty host")]
    EmptyHost,
    #[error("a host must not carry a scheme")]
    HostScheme,
    #[error("not a host or host:port")]
    NotHost,
    #[error("port {port:?} is not a number from 0 to 65535")]
    Port {
        port: String,
        source: std::num::ParseIntError,
    },
    #[error("must start with http:// or https://")]
    EndpointScheme,
}

/// A registry host: `name` or `name:port`, no scheme, no path.
fn validate_host(host: &str) -> Result<(), RegistryError> {
    if host.is_empty() {
        return Err(RegistryError::EmptyHost);
    }
    if host.contains("://") {
        return Err(RegistryError::HostScheme);
    }
    if host.contains('/') || host.chars().any(char::is_whitespace) {
        return Err(RegistryError::NotHost);
    }
    if let Some((_, port)) = host.rsplit_once(':')
        && !host.ends_with(']')
        && let Err(source) = port.parse::<u16>()
    {
        return Err(RegistryError::Port {
            port: port.to_owned(),
            source,
        });
    }
    Ok(())
}

/// A mirror endpoint: `http://host[:port]` or `https://host[:port]`, optionally with a path.
fn validate_endpoint(endpoint: &str) -> Result<(), RegistryError> {
    let rest = endpoint
        .strip_prefix("http://")
        .or_else(|| endpoint.strip_prefix("https://"))
        .ok_or(RegistryError::EndpointScheme)?;
    let host = rest.split('/').next().unwrap_or_default();
    validate_host(host)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::from_toml(text, Path::new("/etc/crius/config.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn full_file_parses() {
        let config = parse(
            r#"
root = "/tmp/r"
state = "/tmp/s"
listen = "/tmp/s/c.sock"
log_level = "debug"
log_format = "json"
insecure_registries = ["127.0.0.1:5000"]
cni_conf_dir = "/tmp/cni"
cni_bin_dirs = ["/usr/lib/cni"]
[registry.mirrors]
"registry.k8s.io" = ["http://127.0.0.1:5000", "https://mirror.example:443/v2"]
"#,
        )
        .unwrap();
        assert_eq!(config.root, Path::new("/tmp/r"));
        assert_eq!(config.log_format, LogFormat::Json);
        assert_eq!(config.mirrors_for("registry.k8s.io").len(), 2);
        assert!(config.mirrors_for("docker.io").is_empty());
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let err = parse("root = \"/x\"\n\nbogus_key = 1\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("/etc/crius/config.toml"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("bogus_key"), "{err}");
    }

    #[test]
    fn wrong_type_names_line() {
        let err = parse("log_level = \"info\"\ninsecure_registries = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2"), "{err}");
        assert!(err.contains("insecure_registries"), "{err}");
    }

    #[test]
    fn relative_root_is_refused() {
        let err = parse("root = \"var/lib\"").unwrap_err().to_string();
        assert!(err.contains("`root`"), "{err}");
    }

    #[test]
    fn bad_registry_values_are_refused() {
        for (text, wanted) in [
            (
                "insecure_registries = [\"http://127.0.0.1:5000\"]",
                "\"http://127.0.0.1:5000\": a host must not carry a scheme",
            ),
            (
                "insecure_registries = [\"127.0.0.1:99999\"]",
                "\"127.0.0.1:99999\": port \"99999\" is not a number from 0 to 65535",
            ),
            (
                "[registry.mirrors]\n\"docker.io\" = [\"127.0.0.1:5000\"]",
                "\"127.0.0.1:5000\": must start with http:// or https://",
            ),
            (
                "[registry.mirrors]\n\"docker.io\" = []",
                "lists no mirror endpoint",
            ),
        ] {
            let err = parse(text).unwrap_err();
            assert!(
                matches!(&err, ConfigError::Invalid { reason, .. } if reason == wanted),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn cgroup_driver_parses_and_checks_systemd() {
        assert_eq!(parse("").unwrap().cgroup_driver, CgroupDriver::Cgroupfs);
        let config = parse("cgroup_driver = \"cgroupfs\"").unwrap();
        assert_eq!(config.cgroup_driver, CgroupDriver::Cgroupfs);
        assert!(parse("cgroup_driver = \"lxc\"").is_err());
        let systemd = parse("cgroup_driver = \"systemd\"");
        if Path::new(SYSTEMD_RUNNING).exists() && unified_cgroups() {
            assert_eq!(systemd.unwrap().cgroup_driver, CgroupDriver::Systemd);
        } else {
            let err = systemd.unwrap_err().to_string();
            assert!(err.contains("cgroup_driver"), "{err}");
        }
    }

    #[test]
    fn stream_address_parses_and_is_checked() {
        let config = parse("").unwrap();
        assert_eq!(config.stream_address, DEFAULT_STREAM_ADDRESS);
        assert_eq!(config.stream_addr().to_string(), "127.0.0.1:0");
        let config = parse("stream_address = \"[::1]:10010\"").unwrap();
        assert_eq!(config.stream_addr().port(), 10010);
        assert!(config.stream_addr().is_ipv6());
        for bad in ["localhost:10010", "127.0.0.1", "127.0.0.1:99999", ""] {
            let err = parse(&format!("stream_address = {bad:?}")).unwrap_err();
            assert!(matches!(err, ConfigError::Invalid { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("stream_address"), "{err}");
        }
    }

    #[test]
    fn cdi_spec_dirs_default_and_are_checked() {
        assert_eq!(
            parse("").unwrap().cdi_spec_dirs,
            [Path::new("/etc/cdi"), Path::new("/var/run/cdi")]
        );
        let config = parse("cdi_spec_dirs = [\"/opt/cdi\"]").unwrap();
        assert_eq!(config.cdi_spec_dirs, [Path::new("/opt/cdi")]);
        assert!(
            parse("cdi_spec_dirs = []")
                .unwrap()
                .cdi_spec_dirs
                .is_empty()
        );
        let err = parse("cdi_spec_dirs = [\"/etc/cdi\", \"cdi\"]").unwrap_err();
        assert!(matches!(err, ConfigError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("cdi_spec_dirs"), "{err}");
    }

    #[test]
    fn missing_optional_file_gives_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = Config::load(&dir.path().join("none.toml"), false).unwrap();
        assert_eq!(config, Config::default());
        assert!(Config::load(&dir.path().join("none.toml"), true).is_err());
    }
}
