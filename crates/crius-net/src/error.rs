//! The errors of crius-net.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while configuring or invoking CNI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The config directory holds no usable network configuration.
    #[error("no CNI network config in {}{}", dir.display(), skipped_suffix(skipped))]
    NoConfig {
        /// The directory searched.
        dir: PathBuf,
        /// Files that were found but could not be used, with the reason.
        skipped: Vec<String>,
    },
    /// The config directory could not be read.
    #[error("cannot read CNI config dir {}: {source}", dir.display())]
    ReadDir {
        /// The directory.
        dir: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A network configuration is malformed.
    #[error("invalid CNI network config {origin}: {reason}")]
    InvalidConfig {
        /// The file (or other origin) of the config.
        origin: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No directory in the plugin search path holds the plugin.
    #[error("CNI plugin {plugin:?} not found in {dirs:?}")]
    PluginNotFound {
        /// The plugin type.
        plugin: String,
        /// The directories searched.
        dirs: Vec<PathBuf>,
    },
    /// The plugin could not be started or talked to.
    #[error("cannot run CNI plugin {}: {source}", path.display())]
    Exec {
        /// The plugin binary.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The plugin reported a CNI error (exit status non-zero, error JSON on stdout).
    #[error(
        "CNI plugin {plugin} {command} failed with code {code}: {msg}{}",
        details_suffix(details)
    )]
    Plugin {
        /// The plugin type.
        plugin: String,
        /// The CNI command (ADD, CHECK, DEL).
        command: &'static str,
        /// The CNI error code (1-99 reserved by the spec, 100+ plugin specific).
        code: u32,
        /// The error message.
        msg: String,
        /// Optional details.
        details: String,
    },
    /// The plugin failed without a parseable CNI error.
    #[error("CNI plugin {plugin} {command} failed ({status}): {output}")]
    PluginFailed {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// The exit status as text.
        status: String,
        /// What the plugin printed (stdout, then stderr), trimmed.
        output: String,
    },
    /// The plugin did not finish in time and was killed.
    #[error("CNI plugin {plugin} {command} timed out after {timeout:?}")]
    Timeout {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// The limit that was exceeded.
        timeout: Duration,
    },
    /// The plugin succeeded but printed something that is not a CNI result.
    #[error("CNI plugin {plugin} {command} returned an invalid result: {reason}")]
    InvalidResult {
        /// The plugin type.
        plugin: String,
        /// The CNI command.
        command: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The request itself is unusable (bad id, names with CNI_ARGS separators, ...).
    #[error("invalid pod network request: {0}")]
    InvalidArgument(#[from] InvalidRequest),
    /// CHECK needs the cached result of ADD and there is none.
    #[error("no cached CNI result for {id}: the pod network was never added or was deleted")]
    NotAdded {
        /// The pod sandbox id.
        id: String,
    },
    /// Reading or writing the result cache failed.
    #[error("CNI result cache {}: {source}", path.display())]
    Cache {
        /// The cache file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A cache file exists but cannot be understood.
    #[error("CNI result cache {} is corrupt: {reason}", path.display())]
    CacheCorrupt {
        /// The cache file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The default config could not be installed.
    #[error("cannot install the default CNI config {}: {source}", path.display())]
    Install {
        /// The file being written.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A document crius builds could not be encoded as JSON.
    #[error("internal error: {source}")]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// A blocking helper task panicked or was cancelled.
    #[error("internal error: {task}: {source}")]
    Task {
        /// What the task was doing.
        task: &'static str,
        /// How it ended.
        source: tokio::task::JoinError,
    },
}

/// Why a pod network request is refused.
#[derive(Debug, thiserror::Error)]
pub enum InvalidRequest {
    /// The pod sandbox id would not make a safe file name.
    #[error(
        "pod sandbox id {id:?} must be 1-256 ASCII alphanumerics, '_', '.' or '-', not \
         starting with '.'"
    )]
    SandboxId {
        /// The id.
        id: String,
    },
    /// A pod name, namespace or uid holds a CNI_ARGS separator or a control character.
    #[error("pod {field} {value:?} contains ';', '=' or a control character")]
    PodField {
        /// `name`, `namespace` or `uid`.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// The pod has no network namespace path.
    #[error("pod sandbox {id} has no network namespace path")]
    NoNetns {
        /// The pod sandbox id.
        id: String,
    },
    /// The network namespace path names criusd's own namespace.
    #[error(
        "network namespace {} of pod sandbox {id} is criusd's own (host) namespace",
        netns.display()
    )]
    HostNetns {
        /// The pod sandbox id.
        id: String,
        /// The path.
        netns: PathBuf,
    },
    /// The plugin directories cannot be joined into `CNI_PATH`.
    #[error("CNI bin dirs cannot form CNI_PATH: {source}")]
    CniPath {
        /// The joining error.
        source: std::env::JoinPathsError,
    },
}

fn skipped_suffix(skipped: &[String]) -> String {
    if skipped.is_empty() {
        String::new()
    } else {
        format!(" (skipped: {})", skipped.join("; "))
    }
}

fn details_suffix(details: &str) -> String {
    if details.is_empty() {
        String::new()
    } else {
        format!(" ({details})")
    }
}

/// Short for `std::result::Result<T, crius_net::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;
