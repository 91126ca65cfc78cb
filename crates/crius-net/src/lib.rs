//! CNI networking for crius pods.
//!
//! [`Cni`] loads the network of the config directory (the first `.conflist`, `.conf` or
//! `.json` in lexical order), runs its plugin chain for a pod's network namespace and keeps
//! what ADD did in a result cache, so that CHECK and DEL run with the same config and
//! arguments even after criusd restarts or the config directory changes.
//!
//! Each pod gets two attachments: `lo` from a built-in `loopback` config, then `eth0` from
//! the configured network. Only `eth0` is cached and torn down; `lo` holds no host-side
//! state and disappears with the namespace.
//!
//! Network configs stay JSON objects end to end: a plugin receives its own config field for
//! field (plus the injected `name`, `cniVersion`, `prevResult` and `runtimeConfig`), and the
//! cache keeps the list exactly as ADD ran it. Only results are given types, and only the
//! parts crius reads (interfaces and IPs).
//!
//! ```no_run
//! # async fn demo() -> crius_net::Result<()> {
//! use crius_net::{Cni, PodNetwork};
//!
//! let cni = Cni::new("/etc/cni/net.d", ["/opt/cni/bin", "/usr/lib/cni"], "/var/lib/crius/cni");
//! let pod = PodNetwork {
//!     id: "0123abcd".into(),
//!     netns_path: "/run/crius/netns/0123abcd".into(),
//!     name: "web-0".into(),
//!     namespace: "default".into(),
//!     uid: "8f0c6a52-0000-4000-8000-000000000000".into(),
//!     ..Default::default()
//! };
//! let attached = cni.add(&pod).await?;
//! println!("pod IP {:?}", attached.ips.first());
//! cni.del(&pod).await?;
//! # Ok(())
//! # }
//! ```

mod cache;
pub mod config;
pub mod error;
mod exec;
pub mod pod;
pub mod result;
pub mod version;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

pub use config::{DEFAULT_CONFLIST, DEFAULT_CONFLIST_NAME, NetworkConfigList, load_conf_dir};
pub use error::{Error, InvalidRequest, Result};
pub use exec::{CniCommand, find_plugin};
pub use pod::{Bandwidth, Dns, PodNetwork, PortMapping, Protocol};
pub use result::{Interface, IpConfig, PodNetworkResult, ResultError};
pub use version::{CniVersion, UnsupportedVersion};

use cache::CacheEntry;
use exec::Invocation;

/// The pod's interface name (`CNI_IFNAME`).
pub const POD_IF_NAME: &str = "eth0";
/// The loopback interface name.
pub const LOOPBACK_IF_NAME: &str = "lo";
/// The default limit for one plugin invocation.
pub const DEFAULT_PLUGIN_TIMEOUT: Duration = Duration::from_secs(60);

/// Whether pods can be networked, and if not, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkStatus {
    /// A network config is loaded and its plugins exist.
    Ready {
        /// The network name.
        network: String,
        /// The file it came from.
        origin: String,
    },
    /// Pods cannot be networked; the message says why (for NetworkReady's message).
    NotReady {
        /// Why, in words an operator can act on.
        message: String,
    },
}

impl NetworkStatus {
    /// Whether the network is ready.
    pub fn is_ready(&self) -> bool {
        matches!(self, Self::Ready { .. })
    }
}

/// The CNI driver of criusd. Cheap to share behind an `Arc`; all methods take `&self`.
#[derive(Debug, Clone)]
pub struct Cni {
    conf_dir: PathBuf,
    bin_dirs: Vec<PathBuf>,
    cache_dir: PathBuf,
    timeout: Duration,
    loopback: bool,
}

impl Cni {
    /// A driver reading configs from `conf_dir`, plugins from `bin_dirs` (first match wins),
    /// and keeping ADD results under `cache_dir` (created when first needed).
    pub fn new(
        conf_dir: impl Into<PathBuf>,
        bin_dirs: impl IntoIterator<Item = impl Into<PathBuf>>,
        cache_dir: impl Into<PathBuf>,
    ) -> Self {
        Self {
            conf_dir: conf_dir.into(),
            bin_dirs: bin_dirs.into_iter().map(Into::into).collect(),
            cache_dir: cache_dir.into(),
            timeout: DEFAULT_PLUGIN_TIMEOUT,
            loopback: true,
        }
    }

    /// Sets the limit for each single plugin invocation (default 60 s).
    pub fn with_plugin_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether ADD also brings up `lo` with the `loopback` plugin (default true).
    pub fn with_loopback(mut self, loopback: bool) -> Self {
        self.loopback = loopback;
        self
    }

    /// The config directory.
    pub fn conf_dir(&self) -> &Path {
        &self.conf_dir
    }

    /// Loads the current network config from the config directory.
    pub async fn load_config(&self) -> Result<NetworkConfigList> {
        let dir = self.conf_dir.clone();
        tokio::task::spawn_blocking(move || load_conf_dir(&dir))
            .await
            .map_err(|source| Error::Task {
                task: "config loader",
                source,
            })?
    }

    /// Whether a network config exists and every plugin it (and loopback) needs is installed.
    pub async fn status(&self) -> NetworkStatus {
        let list = match self.load_config().await {
            Ok(list) => list,
            Err(e) => {
                return NetworkStatus::NotReady {
                    message: e.to_string(),
                };
            }
        };
        let loopback = self.loopback.then(config::loopback_config);
        let types = list
            .plugin_types()
            .chain(loopback.iter().flat_map(|l| l.plugin_types()));
        for plugin in types {
            if let Err(e) = find_plugin(plugin, &self.bin_dirs) {
                return NetworkStatus::NotReady {
                    message: format!("network {} ({}): {e}", list.name, list.origin),
                };
            }
        }
        NetworkStatus::Ready {
            network: list.name,
            origin: list.origin,
        }
    }

    /// Attaches the pod: `lo` (unless disabled), then the configured network on `eth0`,
    /// and caches the result. Refuses a netns path naming criusd's own namespace.
    /// Calling it again for an attached pod attaches it again (new addresses): DEL first. If the chain fails part-way, what was set up is deleted again
    /// (best effort) and the ADD error is returned.
    pub async fn add(&self, pod: &PodNetwork) -> Result<PodNetworkResult> {
        pod.validate()?;
        require_netns(pod)?;
        let list = self.load_config().await?;
        let cni_args = pod.cni_args();
        let caps = pod.capability_args();
        if self.loopback {
            let lo = config::loopback_config();
            let inv = self.invocation(CniCommand::Add, pod, LOOPBACK_IF_NAME, &cni_args);
            self.run_chain(&lo, &inv, &Map::new(), None).await?;
        }
        let inv = self.invocation(CniCommand::Add, pod, POD_IF_NAME, &cni_args);
        match self.add_and_cache(&list, &inv, pod, &caps).await {
            Ok(result) => Ok(result),
            Err(e) => {
                let inv = Invocation {
                    command: CniCommand::Del,
                    ..inv
                };
                if let Err(del) = self.run_del(&list, &inv, &caps, None).await {
                    tracing::warn!(id = pod.id, error = %del, "cleanup after failed CNI ADD failed");
                }
                Err(e)
            }
        }
    }

    /// The ADD chain of the pod interface, its result interpreted and cached.
    async fn add_and_cache(
        &self,
        list: &NetworkConfigList,
        inv: &Invocation<'_>,
        pod: &PodNetwork,
        caps: &Map<String, Value>,
    ) -> Result<PodNetworkResult> {
        let invalid = |reason: String| Error::InvalidResult {
            plugin: list.plugin_types().last().unwrap_or_default().to_string(),
            command: "ADD",
            reason,
        };
        let result = self
            .run_chain(list, inv, caps, None)
            .await?
            .ok_or_else(|| invalid("the chain printed no result".into()))?;
        let parsed = PodNetworkResult::from_value(result.clone(), inv.if_name)
            .map_err(|e| invalid(e.to_string()))?;
        let entry = CacheEntry::new(
            &pod.id,
            inv.if_name,
            &pod.netns_path,
            list.to_value(),
            inv.cni_args.to_string(),
            caps.clone(),
            result,
        );
        cache::write(&self.cache_dir, &entry).await?;
        Ok(parsed)
    }

    /// Checks the pod's attachment with the cached config, arguments and result. Networks
    /// of CNI versions before 0.4.0, or with `disableCheck`, pass without running plugins.
    pub async fn check(&self, pod: &PodNetwork) -> Result<()> {
        pod.validate()?;
        require_netns(pod)?;
        let entry = cache::read(&self.cache_dir, &pod.id)
            .await?
            .ok_or_else(|| Error::NotAdded { id: pod.id.clone() })?;
        let list = self.cached_list(&entry)?;
        if !list.cni_version.has_check() || list.disable_check {
            return Ok(());
        }
        let inv = self.invocation(CniCommand::Check, pod, &entry.if_name, &entry.cni_args);
        for plugin in &list.plugins {
            self.run_plugin(
                &list,
                plugin,
                &inv,
                &entry.capability_args,
                Some(&entry.result),
            )
            .await?;
        }
        Ok(())
    }

    /// Detaches the pod; idempotent. With a cache entry, the plugins run in reverse order
    /// with exactly the config and arguments of ADD and its result as prevResult, and the
    /// entry is removed on success; an empty `netns_path` then means the path ADD had.
    /// Without an entry, the current config is used (nothing is done if there is none).
    /// A missing or vanished network namespace is not an error: plugins still release what
    /// they hold on the host (IPs, veths, port mappings). A path that names criusd's own
    /// namespace (a recycled `/proc/PID/ns/net`) is not passed to plugins.
    pub async fn del(&self, pod: &PodNetwork) -> Result<()> {
        pod.validate()?;
        match cache::read(&self.cache_dir, &pod.id).await {
            Ok(Some(entry)) => {
                let list = self.cached_list(&entry)?;
                let mut inv =
                    self.invocation(CniCommand::Del, pod, &entry.if_name, &entry.cni_args);
                if pod.netns_path.as_os_str().is_empty() {
                    inv.netns = &entry.netns;
                }
                inv.netns = del_netns(&pod.id, inv.netns);
                let prev = list.cni_version.has_check().then_some(&entry.result);
                self.run_del(&list, &inv, &entry.capability_args, prev)
                    .await?;
            }
            Ok(None) => self.del_with_current_config(pod).await?,
            Err(e @ Error::CacheCorrupt { .. }) => {
                tracing::warn!(id = pod.id, error = %e, "ignoring unreadable CNI cache for DEL");
                self.del_with_current_config(pod).await?;
            }
            Err(e) => return Err(e),
        }
        cache::remove(&self.cache_dir, &pod.id).await
    }

    /// Waits until no plugin is left working for pod `id` (those a daemon that died during ADD
    /// or DEL started run on), at most the plugin timeout; whether none is left.
    pub async fn wait_for_plugins(&self, id: &str) -> bool {
        let deadline = std::time::Instant::now() + self.timeout;
        loop {
            let owned = id.to_owned();
            let busy = tokio::task::spawn_blocking(move || !exec::working_for(&owned).is_empty())
                .await
                .unwrap_or(false);
            if !busy {
                return true;
            }
            if std::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The cached ADD result of a pod, if it is attached (e.g. to report pod IPs after a
    /// restart).
    pub async fn cached_result(&self, id: &str) -> Result<Option<PodNetworkResult>> {
        pod::validate_id(id)?;
        let Some(entry) = cache::read(&self.cache_dir, id).await? else {
            return Ok(None);
        };
        let path = cache::path(&self.cache_dir, id);
        PodNetworkResult::from_value(entry.result, &entry.if_name)
            .map(Some)
            .map_err(|e| Error::CacheCorrupt {
                path,
                reason: e.to_string(),
            })
    }

    /// The ids of every pod with a cached ADD result, and removes the temporary files an
    /// interrupted cache write left behind (a crash between write and rename).
    pub async fn cached_ids(&self) -> Result<Vec<String>> {
        cache::ids(&self.cache_dir).await
    }

    async fn del_with_current_config(&self, pod: &PodNetwork) -> Result<()> {
        let list = match self.load_config().await {
            Ok(list) => list,
            Err(Error::NoConfig { .. }) => {
                tracing::warn!(
                    id = pod.id,
                    "no cached CNI result and no network config: nothing to delete"
                );
                return Ok(());
            }
            Err(e) => return Err(e),
        };
        let cni_args = pod.cni_args();
        let mut inv = self.invocation(CniCommand::Del, pod, POD_IF_NAME, &cni_args);
        inv.netns = del_netns(&pod.id, inv.netns);
        self.run_del(&list, &inv, &pod.capability_args(), None)
            .await
    }

    async fn run_del(
        &self,
        list: &NetworkConfigList,
        inv: &Invocation<'_>,
        caps: &Map<String, Value>,
        prev: Option<&Value>,
    ) -> Result<()> {
        // A netns that is already gone is passed as it is: plugins treat a missing path on
        // DEL as "nothing to do inside", and still free host-side state.
        for plugin in list.plugins.iter().rev() {
            self.run_plugin(list, plugin, inv, caps, prev).await?;
        }
        Ok(())
    }

    fn cached_list(&self, entry: &CacheEntry) -> Result<NetworkConfigList> {
        let origin = format!(
            "cached config {}",
            cache::path(&self.cache_dir, &entry.container_id).display()
        );
        let bytes = serde_json::to_vec(&entry.config).map_err(|source| Error::Encode {
            what: "cached network config",
            source,
        })?;
        NetworkConfigList::from_list_bytes(&bytes, &origin)
    }

    fn invocation<'a>(
        &'a self,
        command: CniCommand,
        pod: &'a PodNetwork,
        if_name: &'a str,
        cni_args: &'a str,
    ) -> Invocation<'a> {
        Invocation {
            command,
            container_id: &pod.id,
            netns: &pod.netns_path,
            if_name,
            cni_args,
            bin_dirs: &self.bin_dirs,
            timeout: self.timeout,
        }
    }

    /// Runs the list in order (ADD), each plugin getting the previous one's result.
    async fn run_chain(
        &self,
        list: &NetworkConfigList,
        inv: &Invocation<'_>,
        caps: &Map<String, Value>,
        mut prev: Option<Value>,
    ) -> Result<Option<Value>> {
        for plugin in &list.plugins {
            let out = self
                .run_plugin(list, plugin, inv, caps, prev.as_ref())
                .await?;
            if out.is_some() {
                prev = out;
            }
        }
        Ok(prev)
    }

    async fn run_plugin(
        &self,
        list: &NetworkConfigList,
        plugin: &Map<String, Value>,
        inv: &Invocation<'_>,
        caps: &Map<String, Value>,
        prev: Option<&Value>,
    ) -> Result<Option<Value>> {
        let conf = plugin_stdin(list, plugin, caps, prev);
        let kind = plugin
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default();
        exec::invoke(kind, &conf, inv).await
    }
}

/// Writes [`DEFAULT_CONFLIST`] as `conf_dir/10-crius.conflist` (whole: temporary file, then
/// rename), creating the directory, unless the directory already holds a usable network
/// config. Returns the path written, or `None` when a config was already there.
pub async fn install_default_conflist(conf_dir: &Path) -> Result<Option<PathBuf>> {
    let dir = conf_dir.to_path_buf();
    tokio::task::spawn_blocking(move || config::install_default(&dir))
        .await
        .map_err(|source| Error::Task {
            task: "config installer",
            source,
        })?
}

/// The stdin of one plugin: its own config plus the list's name and version, the
/// prevResult, and the `runtimeConfig` of the capabilities it declares.
pub fn plugin_stdin(
    list: &NetworkConfigList,
    plugin: &Map<String, Value>,
    capability_args: &Map<String, Value>,
    prev: Option<&Value>,
) -> Value {
    let mut conf = plugin.clone();
    conf.insert("name".into(), list.name.clone().into());
    conf.insert("cniVersion".into(), list.cni_version.to_string().into());
    if let Some(prev) = prev {
        conf.insert("prevResult".into(), prev.clone());
    }
    if let Some(rc) = pod::runtime_config_for(plugin, capability_args) {
        conf.insert("runtimeConfig".into(), Value::Object(rc));
    }
    Value::Object(conf)
}

fn require_netns(pod: &PodNetwork) -> Result<()> {
    if pod.netns_path.as_os_str().is_empty() {
        return Err(InvalidRequest::NoNetns { id: pod.id.clone() }.into());
    }
    if is_own_netns(&pod.netns_path) {
        return Err(InvalidRequest::HostNetns {
            id: pod.id.clone(),
            netns: pod.netns_path.clone(),
        }
        .into());
    }
    Ok(())
}

/// Whether `path` names the network namespace criusd itself runs in. A `/proc/PID/ns/net`
/// path whose process died can come back naming another process's namespace; if that is the
/// host's, plugins must not be let loose in it (DEL would remove the host's `eth0`).
fn is_own_netns(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (
        std::fs::metadata(path),
        std::fs::metadata("/proc/thread-self/ns/net"),
    ) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// The netns path to hand DEL: never criusd's own namespace.
fn del_netns<'a>(id: &str, path: &'a Path) -> &'a Path {
    if is_own_netns(path) {
        tracing::warn!(id, netns = %path.display(), "netns path names criusd's own namespace; running DEL without it");
        Path::new("")
    } else {
        path
    }
}
