//! CDI (Container Device Interface) devices. `ContainerConfig.CDI_devices` (DRA's way, and
//! kubelet's device plugins') and the older `cdi.k8s.io/*` annotations name devices
//! `vendor.com/class=name`; spec files in the configured directories (`cdi_spec_dirs`,
//! default `/etc/cdi` then `/var/run/cdi`) describe them, and their container edits (env,
//! device nodes, mounts, hooks, additional gids) become part of the container's spec.
//!
//! Spec files are read as the CDI specification (v0.3.0 to v1.1.0) and its reference
//! implementation read them: `*.json` and `*.yaml` files of each directory (not its
//! subdirectories), unknown fields refused, the declared `cdiVersion` at least the one the
//! fields used need, `kind` `vendor/class` and device names checked. A device of a later
//! directory replaces one of the same name in an earlier directory; two files of the same
//! directory defining a name make it unresolvable. A file that cannot be used (unreadable, not
//! a regular file, larger than [`MAX_SPEC_BYTES`], not owned by criusd's user or writable by
//! others — its hooks run as host root —, malformed or invalid) is logged once and skipped:
//! the other files' devices stay usable. Files are read at each CreateContainer that asks for
//! a device (DRA drivers write them just before), parsed again only when they changed.
//!
//! Edits are applied as the reference implementation applies them: the spec-wide edits of a
//! spec once, before the edits of its first requested device; env entries replace a variable of
//! the same name or are appended; a device node or mount replaces one at the same container
//! path; mounts are then ordered by depth. What crius cannot honour (intelRdt, netDevices, FIFO
//! nodes, mounts other than binds, unknown mount options) is refused
//! ([`CdiErrorKind::Refused`], FailedPrecondition at the CRI) naming the device, never dropped.
//! In a user-namespaced pod the device rules of CRI devices hold (no block devices, a node
//! keeps its host path and is bound from it) and CDI bind mounts are idmapped with the pod's
//! mapping, as the reference implementation asks.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use crius_proto::{BindMount, ContainerSpec, DeviceSpec, Hook as ProtoHook, Hooks};
use serde::{Deserialize, Deserializer};

/// Largest spec file read.
pub const MAX_SPEC_BYTES: u64 = 4 << 20;
/// Most spec files read from one directory (in name order).
const MAX_SPECS_PER_DIR: usize = 4096;
/// Prefix of the annotations that name CDI devices (the flow before the CRI field).
pub const ANNOTATION_PREFIX: &str = "cdi.k8s.io/";
/// Released spec versions, oldest first.
const VERSIONS: [&str; 10] = [
    "0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0", "0.7.0", "0.8.0", "1.0.0", "1.1.0",
];

/// `null` (or an empty YAML value) as the default.
fn nullable<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    #[serde(rename = "cdiVersion")]
    version: String,
    kind: String,
    #[serde(default, deserialize_with = "nullable")]
    annotations: BTreeMap<String, String>,
    #[serde(default, deserialize_with = "nullable")]
    devices: Vec<RawDevice>,
    #[serde(default, rename = "containerEdits", deserialize_with = "nullable")]
    container_edits: Edits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDevice {
    name: String,
    #[serde(default, deserialize_with = "nullable")]
    annotations: BTreeMap<String, String>,
    #[serde(default, rename = "containerEdits", deserialize_with = "nullable")]
    container_edits: Edits,
}

/// The `containerEdits` of a spec or a device.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Edits {
    #[serde(default, deserialize_with = "nullable")]
    env: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    device_nodes: Vec<DeviceNode>,
    #[serde(default, deserialize_with = "nullable")]
    net_devices: Vec<NetDevice>,
    #[serde(default, deserialize_with = "nullable")]
    hooks: Vec<Hook>,
    #[serde(default, deserialize_with = "nullable")]
    mounts: Vec<Mount>,
    /// Kept as data: crius refuses it whatever it holds.
    #[serde(default)]
    intel_rdt: Option<serde_json::Value>,
    #[serde(default, deserialize_with = "nullable")]
    additional_gids: Vec<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct DeviceNode {
    path: String,
    #[serde(default)]
    host_path: String,
    #[serde(default, rename = "type")]
    kind: String,
    #[serde(default)]
    major: i64,
    #[serde(default)]
    minor: i64,
    #[serde(default)]
    file_mode: Option<u32>,
    #[serde(default)]
    permissions: String,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Mount {
    host_path: String,
    container_path: String,
    #[serde(default, deserialize_with = "nullable")]
    options: Vec<String>,
    #[serde(default, rename = "type")]
    kind: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct Hook {
    hook_name: String,
    path: String,
    #[serde(default, deserialize_with = "nullable")]
    args: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    env: Vec<String>,
    #[serde(default)]
    timeout: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct NetDevice {
    host_interface_name: String,
    name: String,
}

impl Edits {
    fn is_empty(&self) -> bool {
        self.env.is_empty()
            && self.device_nodes.is_empty()
            && self.net_devices.is_empty()
            && self.hooks.is_empty()
            && self.mounts.is_empty()
            && self.intel_rdt.is_none()
            && self.additional_gids.is_empty()
    }

    fn validate(&self) -> Result<(), EditsError> {
        validate_env(&self.env)?;
        for d in &self.device_nodes {
            if d.path.is_empty() {
                return Err(EditsError::EmptyNodePath);
            }
            if !matches!(d.kind.as_str(), "" | "b" | "c" | "u" | "p") {
                return Err(EditsError::NodeType {
                    path: d.path.clone(),
                    kind: d.kind.clone(),
                });
            }
            if d.permissions != "none" && !d.permissions.chars().all(|c| "rwm".contains(c)) {
                return Err(EditsError::NodePermissions {
                    path: d.path.clone(),
                    permissions: d.permissions.clone(),
                });
            }
        }
        for h in &self.hooks {
            if !matches!(
                h.hook_name.as_str(),
                "prestart"
                    | "createRuntime"
                    | "createContainer"
                    | "startContainer"
                    | "poststart"
                    | "poststop"
            ) {
                return Err(EditsError::HookName {
                    name: h.hook_name.clone(),
                });
            }
            if h.path.is_empty() {
                return Err(EditsError::HookPath {
                    name: h.hook_name.clone(),
                });
            }
            validate_env(&h.env).map_err(|source| EditsError::HookEnv {
                name: h.hook_name.clone(),
                source,
            })?;
            if h.timeout.is_some_and(|t| t <= 0) {
                return Err(EditsError::HookTimeout {
                    name: h.hook_name.clone(),
                });
            }
        }
        for m in &self.mounts {
            if m.host_path.is_empty() || m.container_path.is_empty() {
                return Err(EditsError::EmptyMountPath);
            }
        }
        let mut hosts = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        for n in &self.net_devices {
            if n.host_interface_name.is_empty() || n.name.is_empty() {
                return Err(EditsError::EmptyNetDevice);
            }
            if !hosts.insert(&n.host_interface_name) || !names.insert(&n.name) {
                return Err(EditsError::NetDeviceTwice {
                    name: n.name.clone(),
                });
            }
        }
        Ok(())
    }
}

/// An env entry that is not `NAME=value`.
#[derive(Debug, thiserror::Error)]
#[error("invalid environment variable {entry:?}")]
struct InvalidEnv {
    entry: String,
}

/// Why `containerEdits` are invalid.
#[derive(Debug, thiserror::Error)]
enum EditsError {
    #[error(transparent)]
    Env(#[from] InvalidEnv),
    #[error("a device node has an empty path")]
    EmptyNodePath,
    #[error("device node {path:?}: invalid type {kind:?}")]
    NodeType { path: String, kind: String },
    #[error("device node {path:?}: invalid permissions {permissions:?}")]
    NodePermissions { path: String, permissions: String },
    #[error("invalid hook name {name:?}")]
    HookName { name: String },
    #[error("hook {name:?} has an empty path")]
    HookPath { name: String },
    #[error("hook {name:?}: {source}")]
    HookEnv { name: String, source: InvalidEnv },
    #[error("hook {name:?}: timeout must be positive")]
    HookTimeout { name: String },
    #[error("a mount has an empty host or container path")]
    EmptyMountPath,
    #[error("a net device has an empty name")]
    EmptyNetDevice,
    #[error("net device {name:?} is listed twice")]
    NetDeviceTwice { name: String },
}

/// Why a CDI name is invalid.
#[derive(Debug, thiserror::Error)]
pub enum NameError {
    /// Not `vendor/class=name`.
    #[error("{device:?} is not a qualified CDI device name vendor/class=name")]
    NotQualified {
        /// The name as given.
        device: String,
    },
    /// A vendor or class of characters CDI does not allow.
    #[error(
        "invalid {what} {name:?}: a letter first, a letter or digit last, letters, digits, \
         '-', '_' and '.' between"
    )]
    VendorOrClass {
        /// `vendor` or `class`.
        what: &'static str,
        /// The vendor or class as given.
        name: String,
    },
    /// A device name of characters CDI does not allow.
    #[error(
        "invalid device name {name:?}: a letter or digit first and last, letters, digits, \
         '-', '_', '.' and ':' between"
    )]
    DeviceName {
        /// The device name as given.
        name: String,
    },
}

/// Why a container's CDI devices cannot be resolved or applied. Its text is the whole message
/// the client gets; [`CdiError::kind`] says which kind of refusal it is.
#[derive(Debug, thiserror::Error)]
pub enum CdiError {
    /// A requested name is not `vendor/class=name`.
    #[error("{field}: {source}")]
    Name {
        /// The request field that names the device.
        field: String,
        /// What is wrong with the name.
        source: NameError,
    },
    /// Two spec files of the directory of highest precedence that has the device define it.
    #[error(
        "{field}: CDI device {name:?} is defined in more than one spec file: {}",
        join_paths(.files)
    )]
    Conflict {
        /// The request field that names the device.
        field: String,
        /// The device's qualified name.
        name: String,
        /// The spec files that define it.
        files: Vec<PathBuf>,
    },
    /// No usable spec file defines the device.
    #[error(
        "{field}: unknown CDI device {name:?}: no usable spec file in {} defines it \
         (criusd logs the spec files it skipped)",
        searched(.dirs)
    )]
    Unknown {
        /// The request field that names the device.
        field: String,
        /// The device's qualified name.
        name: String,
        /// The spec directories searched.
        dirs: Vec<PathBuf>,
    },
    /// The edits ask for intelRdt.
    #[error("CDI device {device}: intelRdt (resctrl classes) is not supported by crius")]
    IntelRdt {
        /// The device and the spec file of the edits.
        device: String,
    },
    /// The edits ask for netDevices.
    #[error(
        "CDI device {device}: netDevices (moving host network interfaces into the pod) is not \
         supported by crius"
    )]
    NetDevices {
        /// The device and the spec file of the edits.
        device: String,
    },
    /// A hook's path is not absolute.
    #[error("CDI device {device}: hook {hook}: path {path:?} is not absolute")]
    HookNotAbsolute {
        /// The device and the spec file of the edits.
        device: String,
        /// The hook's name (`prestart`, `createRuntime`…).
        hook: String,
        /// The hook's path.
        path: String,
    },
    /// A hook's path is not a regular file.
    #[error("CDI device {device}: hook {hook}: {path} is not a regular file")]
    HookNotFile {
        /// The device and the spec file of the edits.
        device: String,
        /// The hook's name.
        hook: String,
        /// The hook's path.
        path: String,
    },
    /// A hook's path cannot be looked up.
    #[error("CDI device {device}: hook {hook}: {path}: {source}")]
    HookMissing {
        /// The device and the spec file of the edits.
        device: String,
        /// The hook's name.
        hook: String,
        /// The hook's path.
        path: String,
        /// What stat said.
        source: std::io::Error,
    },
    /// A hook of a name crius does not know.
    #[error("CDI device {device}: unknown hook {hook:?}")]
    UnknownHook {
        /// The device and the spec file of the edits.
        device: String,
        /// The hook's name.
        hook: String,
    },
    /// A device node crius cannot make as the spec asks.
    #[error("CDI device {device}: device node {path}: {what}")]
    DeviceNode {
        /// The device and the spec file of the edits.
        device: String,
        /// The node's path in the container.
        path: String,
        /// Why it cannot be made.
        what: String,
    },
    /// A block device node in a user-namespaced pod.
    #[error(
        "CDI device {device}: device node {path}: block devices cannot be used in a pod with \
         a user namespace"
    )]
    BlockDeviceInUserns {
        /// The device and the spec file of the edits.
        device: String,
        /// The node's path in the container.
        path: String,
    },
    /// A device node at another path than its host node, in a user-namespaced pod.
    #[error(
        "CDI device {device}: device node {path}: a device at another path than on the host \
         (hostPath {host_path}) in a user-namespaced pod is not implemented by crius yet"
    )]
    NodeMovedInUserns {
        /// The device and the spec file of the edits.
        device: String,
        /// The node's path in the container.
        path: String,
        /// The host node's path.
        host_path: String,
    },
    /// A mount crius cannot make as the spec asks.
    #[error("CDI device {device}: mount at {container_path}: {what}")]
    Mount {
        /// The device and the spec file of the edits.
        device: String,
        /// The mount's path in the container.
        container_path: String,
        /// Why it cannot be made.
        what: String,
    },
    /// An idmapped mount (user-namespaced pod) with a propagation other than private.
    #[error(
        "CDI device {device}: mount at {container_path}: idmapped mounts (a user-namespaced pod) \
         with propagation other than private are not implemented by crius yet"
    )]
    IdmapPropagation {
        /// The device and the spec file of the edits.
        device: String,
        /// The mount's path in the container.
        container_path: String,
    },
}

/// Which kind of refusal a [`CdiError`] is (the CRI status code it maps onto).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CdiErrorKind {
    /// The request names a device wrongly or one that cannot be used (InvalidArgument).
    Invalid,
    /// The device's spec asks for what crius cannot do (FailedPrecondition).
    Refused,
    /// What crius does not implement yet (Unimplemented).
    Unsupported,
}

impl CdiError {
    /// The kind of refusal.
    pub fn kind(&self) -> CdiErrorKind {
        match self {
            CdiError::Name { .. }
            | CdiError::Conflict { .. }
            | CdiError::Unknown { .. }
            | CdiError::BlockDeviceInUserns { .. } => CdiErrorKind::Invalid,
            CdiError::IntelRdt { .. }
            | CdiError::NetDevices { .. }
            | CdiError::HookNotAbsolute { .. }
            | CdiError::HookNotFile { .. }
            | CdiError::HookMissing { .. }
            | CdiError::UnknownHook { .. }
            | CdiError::DeviceNode { .. }
            | CdiError::Mount { .. } => CdiErrorKind::Refused,
            CdiError::NodeMovedInUserns { .. } | CdiError::IdmapPropagation { .. } => {
                CdiErrorKind::Unsupported
            }
        }
    }
}

/// Paths joined by `, `.
fn join_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// The spec directories searched, as an unknown device's message names them.
fn searched(dirs: &[PathBuf]) -> String {
    if dirs.is_empty() {
        "the configured cdi_spec_dirs (none)".to_owned()
    } else {
        join_paths(dirs)
    }
}

fn validate_env(env: &[String]) -> Result<(), InvalidEnv> {
    match env.iter().find(|e| e.find('=').is_none_or(|i| i == 0)) {
        Some(e) => Err(InvalidEnv { entry: e.clone() }),
        None => Ok(()),
    }
}

/// A vendor or class name: a letter first, a letter or digit last, `-`, `_`, `.` and
/// alphanumerics between.
fn validate_vendor_or_class(what: &'static str, name: &str) -> Result<(), NameError> {
    let b = name.as_bytes();
    let ok = match b {
        [] => false,
        [only] => only.is_ascii_alphabetic(),
        [first, middle @ .., last] => {
            first.is_ascii_alphabetic()
                && last.is_ascii_alphanumeric()
                && middle
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"_-.".contains(c))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(NameError::VendorOrClass {
            what,
            name: name.to_owned(),
        })
    }
}

/// A device name: alphanumerics first and last, `-`, `_`, `.`, `:` and alphanumerics between.
fn validate_device_name(name: &str) -> Result<(), NameError> {
    let b = name.as_bytes();
    let ok = match b {
        [] => false,
        [only] => only.is_ascii_alphanumeric(),
        [first, middle @ .., last] => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && middle
                    .iter()
                    .all(|c| c.is_ascii_alphanumeric() || b"_-.:".contains(c))
        }
    };
    if ok {
        Ok(())
    } else {
        Err(NameError::DeviceName {
            name: name.to_owned(),
        })
    }
}

/// Checks a fully qualified device name `vendor.com/class=name`.
pub(crate) fn parse_qualified(device: &str) -> Result<(&str, &str, &str), NameError> {
    let not_qualified = || NameError::NotQualified {
        device: device.to_owned(),
    };
    let (kind, name) = device.split_once('=').ok_or_else(not_qualified)?;
    let (vendor, class) = kind.split_once('/').ok_or_else(not_qualified)?;
    validate_vendor_or_class("vendor", vendor)?;
    validate_vendor_or_class("class", class)?;
    validate_device_name(name)?;
    Ok((vendor, class, name))
}

/// A spec file, checked.
#[derive(Debug)]
struct Spec {
    path: PathBuf,
    /// `vendor/class`.
    kind: String,
    edits: Edits,
    devices: BTreeMap<String, Edits>,
}

fn version_index(v: &str) -> Option<usize> {
    VERSIONS
        .iter()
        .position(|k| *k == v.strip_prefix('v').unwrap_or(v))
}

/// The oldest spec version that has every field `raw` uses.
fn required_version(raw: &RawSpec) -> &'static str {
    let all_edits = || {
        std::iter::once(&raw.container_edits).chain(raw.devices.iter().map(|d| &d.container_edits))
    };
    let v110 = all_edits().any(|e| {
        !e.net_devices.is_empty()
            || e.intel_rdt.as_ref().is_some_and(|r| {
                r.get("schemata").is_some_and(|s| !s.is_null())
                    || r.get("enableMonitoring").and_then(|m| m.as_bool()) == Some(true)
            })
    });
    let v070 = all_edits().any(|e| e.intel_rdt.is_some() || !e.additional_gids.is_empty());
    let v060 = !raw.annotations.is_empty()
        || raw.devices.iter().any(|d| !d.annotations.is_empty())
        || raw
            .kind
            .split_once('/')
            .is_some_and(|(_, c)| c.contains('.'));
    let v050 = raw
        .devices
        .iter()
        .any(|d| d.name.as_bytes().first().is_some_and(u8::is_ascii_digit))
        || all_edits().any(|e| e.device_nodes.iter().any(|n| !n.host_path.is_empty()));
    let v040 = all_edits().any(|e| e.mounts.iter().any(|m| !m.kind.is_empty()));
    if v110 {
        "1.1.0"
    } else if v070 {
        "0.7.0"
    } else if v060 {
        "0.6.0"
    } else if v050 {
        "0.5.0"
    } else if v040 {
        "0.4.0"
    } else {
        "0.3.0"
    }
}

/// Why a spec file's text is not a valid spec.
#[derive(Debug, thiserror::Error)]
enum SpecError {
    #[error("{source}")]
    Json { source: serde_json::Error },
    #[error("{source}")]
    Yaml { source: serde_norway::Error },
    #[error("unknown cdiVersion {version:?}")]
    UnknownVersion { version: String },
    #[error("cdiVersion {version:?} is older than the fields used need ({required})")]
    VersionTooOld {
        version: String,
        required: &'static str,
    },
    #[error("kind {kind:?} is not vendor/class")]
    Kind { kind: String },
    #[error(transparent)]
    Name(#[from] NameError),
    #[error("containerEdits: {source}")]
    Edits { source: EditsError },
    #[error("device {name:?} has no containerEdits")]
    NoEdits { name: String },
    #[error("device {name:?}: {source}")]
    DeviceEdits { name: String, source: EditsError },
    #[error("device {name:?} is defined twice")]
    DefinedTwice { name: String },
    #[error("no devices")]
    NoDevices,
}

/// Parses and checks one spec file's text; `json` for a `.json` file.
fn parse_spec(path: &Path, text: &[u8], json: bool) -> Result<Spec, SpecError> {
    let raw: RawSpec = if json {
        serde_json::from_slice(text).map_err(|source| SpecError::Json { source })?
    } else {
        serde_norway::from_slice(text).map_err(|source| SpecError::Yaml { source })?
    };
    let declared = version_index(&raw.version).ok_or_else(|| SpecError::UnknownVersion {
        version: raw.version.clone(),
    })?;
    let required = required_version(&raw);
    if version_index(required).is_some_and(|r| r > declared) {
        return Err(SpecError::VersionTooOld {
            version: raw.version,
            required,
        });
    }
    let (vendor, class) = raw.kind.split_once('/').ok_or_else(|| SpecError::Kind {
        kind: raw.kind.clone(),
    })?;
    validate_vendor_or_class("vendor", vendor)?;
    validate_vendor_or_class("class", class)?;
    raw.container_edits
        .validate()
        .map_err(|source| SpecError::Edits { source })?;
    let mut devices = BTreeMap::new();
    for d in raw.devices {
        validate_device_name(&d.name)?;
        if d.container_edits.is_empty() {
            return Err(SpecError::NoEdits { name: d.name });
        }
        d.container_edits
            .validate()
            .map_err(|source| SpecError::DeviceEdits {
                name: d.name.clone(),
                source,
            })?;
        if devices.insert(d.name.clone(), d.container_edits).is_some() {
            return Err(SpecError::DefinedTwice { name: d.name });
        }
    }
    if devices.is_empty() {
        return Err(SpecError::NoDevices);
    }
    Ok(Spec {
        path: path.to_owned(),
        kind: raw.kind,
        edits: raw.container_edits,
        devices,
    })
}

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileKey {
    fn of(m: &std::fs::Metadata) -> FileKey {
        use std::os::unix::fs::MetadataExt;
        FileKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// Parsed spec files by path: a file is parsed again only when it changed; an unusable one is
/// remembered as such (and logged once).
type Cache = HashMap<PathBuf, (FileKey, Option<Arc<Spec>>)>;

fn cache() -> &'static Mutex<Cache> {
    static CACHE: std::sync::OnceLock<Mutex<Cache>> = std::sync::OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Why a spec file is not read.
#[derive(Debug, thiserror::Error)]
enum SpecFileError {
    #[error("{source}")]
    Io {
        #[from]
        source: std::io::Error,
    },
    #[error("not a regular file")]
    NotRegular,
    #[error("replaced while being read")]
    Replaced,
    #[error("owned by uid {uid}, not by criusd's user {me}: its hooks would run as criusd")]
    Owner { uid: u32, me: u32 },
    #[error("writable by group or others (mode {mode:o}): its hooks would run as criusd")]
    Writable { mode: u32 },
    #[error("{size} bytes, more than the {MAX_SPEC_BYTES} crius reads")]
    TooLarge { size: u64 },
}

/// Reads one spec file if it is a regular file of criusd's user, not writable by others, at
/// most [`MAX_SPEC_BYTES`]; `cached` is the entry of an earlier read.
fn read_spec(
    path: &Path,
    cached: Option<&(FileKey, Option<Arc<Spec>>)>,
) -> Result<(FileKey, Option<Arc<Spec>>), SpecFileError> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    // stat first: only a regular file is ever opened (a FIFO would block, a device node
    // could act on open).
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(SpecFileError::NotRegular);
    }
    let key = FileKey::of(&meta);
    if let Some((k, spec)) = cached
        && *k == key
    {
        return Ok((key, spec.clone()));
    }
    let check = |m: &std::fs::Metadata| -> Result<(), SpecFileError> {
        // SAFETY: geteuid has no preconditions.
        let me = unsafe { libc::geteuid() };
        if m.uid() != me {
            return Err(SpecFileError::Owner { uid: m.uid(), me });
        }
        if m.mode() & 0o022 != 0 {
            return Err(SpecFileError::Writable {
                mode: m.mode() & 0o7777,
            });
        }
        if m.size() > MAX_SPEC_BYTES {
            return Err(SpecFileError::TooLarge { size: m.size() });
        }
        Ok(())
    };
    // Checked before parsing, and remembered: an unusable file is logged once per change.
    if let Err(e) = check(&meta) {
        tracing::warn!(file = %path.display(), error = %e, "CDI spec file skipped");
        return Ok((key, None));
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let opened = file.metadata()?;
    if !opened.is_file() || opened.dev() != meta.dev() || opened.ino() != meta.ino() {
        return Err(SpecFileError::Replaced);
    }
    let key = FileKey::of(&opened);
    if let Err(e) = check(&opened) {
        tracing::warn!(file = %path.display(), error = %e, "CDI spec file skipped");
        return Ok((key, None));
    }
    let mut text = Vec::new();
    file.take(MAX_SPEC_BYTES + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_SPEC_BYTES {
        tracing::warn!(file = %path.display(), "CDI spec file skipped: it grew past the size limit");
        return Ok((key, None));
    }
    let json = path.extension().is_some_and(|e| e == "json");
    match parse_spec(path, &text, json) {
        Ok(spec) => Ok((key, Some(Arc::new(spec)))),
        Err(e) => {
            tracing::warn!(file = %path.display(), error = %e, "CDI spec file skipped: invalid");
            Ok((key, None))
        }
    }
}

/// A resolvable device: its spec and name, or the files that define it twice in the
/// directory of highest precedence that has it.
#[derive(Debug, Clone)]
enum Entry {
    Device(Arc<Spec>, String),
    Conflict(Vec<PathBuf>),
}

/// Scans `dirs` (in increasing precedence) and returns every device by qualified name.
fn registry(dirs: &[PathBuf]) -> HashMap<String, Entry> {
    let mut cache = cache()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let mut seen = std::collections::HashSet::new();
    let mut devices: HashMap<String, (usize, Entry)> = HashMap::new();
    for (priority, dir) in dirs.iter().enumerate() {
        let entries = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot read a CDI spec directory");
                continue;
            }
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "yaml"))
            .collect();
        files.sort();
        if files.len() > MAX_SPECS_PER_DIR {
            tracing::warn!(dir = %dir.display(), files = files.len(),
                "too many CDI spec files; only the first {MAX_SPECS_PER_DIR} by name are read");
            files.truncate(MAX_SPECS_PER_DIR);
        }
        for path in files {
            let spec = match read_spec(&path, cache.get(&path)) {
                Ok((key, spec)) => {
                    cache.insert(path.clone(), (key, spec.clone()));
                    seen.insert(path.clone());
                    spec
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "CDI spec file skipped");
                    None
                }
            };
            let Some(spec) = spec else { continue };
            for name in spec.devices.keys() {
                let qualified = format!("{}={name}", spec.kind);
                let entry = Entry::Device(spec.clone(), name.clone());
                match devices.get_mut(&qualified) {
                    Some((p, old)) if *p == priority => {
                        let mut files = match old {
                            Entry::Device(s, _) => vec![s.path.clone()],
                            Entry::Conflict(f) => std::mem::take(f),
                        };
                        files.push(spec.path.clone());
                        tracing::warn!(device = %qualified, files = ?files,
                            "CDI device defined in more than one spec file of a directory; unresolvable");
                        *old = Entry::Conflict(files);
                    }
                    _ => {
                        devices.insert(qualified, (priority, entry));
                    }
                }
            }
        }
    }
    cache.retain(|p, _| seen.contains(p));
    devices.into_iter().map(|(k, (_, e))| (k, e)).collect()
}

/// The CDI devices a container asks for, in order and without repeats: `CDI_devices`, then
/// the `cdi.k8s.io/*` annotations (by key; each a comma-separated list), each with the
/// request field it came from. `cdi_devices` are the `CDI_devices[i].name` of the request in
/// order, `annotations` all of the container's annotations. A name that is not
/// `vendor/class=name` is [`CdiError::Name`].
pub fn requested(
    cdi_devices: &[String],
    annotations: &BTreeMap<String, String>,
) -> Result<Vec<(String, String)>, CdiError> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut push = |name: &str, field: String| -> Result<(), CdiError> {
        if let Err(source) = parse_qualified(name) {
            return Err(CdiError::Name { field, source });
        }
        if !out.iter().any(|(n, _)| n == name) {
            out.push((name.to_owned(), field));
        }
        Ok(())
    };
    for (i, name) in cdi_devices.iter().enumerate() {
        push(name, format!("config.CDI_devices[{i}].name"))?;
    }
    let mut keys: Vec<&String> = annotations
        .keys()
        .filter(|k| k.starts_with(ANNOTATION_PREFIX))
        .collect();
    keys.sort();
    for key in keys {
        for name in annotations[key].split(',') {
            push(name, format!("config.annotations[{key:?}]"))?;
        }
    }
    Ok(out)
}

/// The edits of a container's CDI devices, translated into crius' container spec terms.
#[derive(Debug, Default)]
pub struct CdiEdits {
    env: Vec<String>,
    devices: Vec<DeviceSpec>,
    mounts: Vec<BindMount>,
    hooks: Hooks,
    additional_gids: Vec<u32>,
}

/// Resolves `devices` (name, request field) from the spec files in `dirs`; `userns` when the
/// pod has a user namespace. An unknown device is [`CdiError::Unknown`] naming it.
pub fn resolve(
    dirs: &[PathBuf],
    devices: &[(String, String)],
    userns: bool,
) -> Result<CdiEdits, CdiError> {
    let mut out = CdiEdits::default();
    if devices.is_empty() {
        return Ok(out);
    }
    let registry = registry(dirs);
    let mut applied: Vec<*const Spec> = Vec::new();
    for (name, field) in devices {
        let (spec, device) = match registry.get(name) {
            Some(Entry::Device(spec, device)) => (spec, device),
            Some(Entry::Conflict(files)) => {
                return Err(CdiError::Conflict {
                    field: field.clone(),
                    name: name.clone(),
                    files: files.clone(),
                });
            }
            None => {
                return Err(CdiError::Unknown {
                    field: field.clone(),
                    name: name.clone(),
                    dirs: dirs.to_vec(),
                });
            }
        };
        if !applied.contains(&Arc::as_ptr(spec)) {
            applied.push(Arc::as_ptr(spec));
            let label = format!("{name} (spec-wide edits of {})", spec.path.display());
            out.add(&label, &spec.edits, userns)?;
        }
        let label = format!("{name} (from {})", spec.path.display());
        if let Some(edits) = spec.devices.get(device) {
            out.add(&label, edits, userns)?;
        }
    }
    Ok(out)
}

/// Why a host device node cannot be looked up.
#[derive(Debug, thiserror::Error)]
enum HostNodeError {
    #[error("{path}: {source}")]
    Stat {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a device node")]
    NotDevice { path: String },
}

/// The host node at `path` (not following a symlink): type, major, minor, mode bits.
fn host_node(path: &str) -> Result<(&'static str, i64, i64, u32), HostNodeError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let m = std::fs::symlink_metadata(path).map_err(|source| HostNodeError::Stat {
        path: path.to_owned(),
        source,
    })?;
    let t = m.file_type();
    let kind = if t.is_char_device() {
        "c"
    } else if t.is_block_device() {
        "b"
    } else if t.is_fifo() {
        "p"
    } else {
        return Err(HostNodeError::NotDevice {
            path: path.to_owned(),
        });
    };
    let rdev = m.rdev();
    Ok((
        kind,
        i64::from(libc::major(rdev)),
        i64::from(libc::minor(rdev)),
        m.mode() & 0o7777,
    ))
}

impl CdiEdits {
    fn add(&mut self, label: &str, e: &Edits, userns: bool) -> Result<(), CdiError> {
        if e.intel_rdt.is_some() {
            return Err(CdiError::IntelRdt {
                device: label.to_owned(),
            });
        }
        if !e.net_devices.is_empty() {
            return Err(CdiError::NetDevices {
                device: label.to_owned(),
            });
        }
        self.env.extend(e.env.iter().cloned());
        for n in &e.device_nodes {
            let d = device_node(label, n, userns)?;
            self.devices
                .retain(|x| x.container_path != d.container_path);
            self.devices.push(d);
        }
        for m in &e.mounts {
            let b = bind_mount(label, m, userns)?;
            self.mounts.retain(|x| x.container_path != b.container_path);
            self.mounts.push(b);
        }
        for h in &e.hooks {
            if !h.path.starts_with('/') {
                return Err(CdiError::HookNotAbsolute {
                    device: label.to_owned(),
                    hook: h.hook_name.clone(),
                    path: h.path.clone(),
                });
            }
            match std::fs::metadata(&h.path) {
                Ok(m) if m.is_file() => {}
                Ok(_) => {
                    return Err(CdiError::HookNotFile {
                        device: label.to_owned(),
                        hook: h.hook_name.clone(),
                        path: h.path.clone(),
                    });
                }
                Err(source) => {
                    return Err(CdiError::HookMissing {
                        device: label.to_owned(),
                        hook: h.hook_name.clone(),
                        path: h.path.clone(),
                        source,
                    });
                }
            }
            let hook = ProtoHook {
                path: h.path.clone(),
                args: h.args.clone(),
                env: h.env.clone(),
                timeout: h.timeout,
            };
            match h.hook_name.as_str() {
                "prestart" => self.hooks.prestart.push(hook),
                "createRuntime" => self.hooks.create_runtime.push(hook),
                "createContainer" => self.hooks.create_container.push(hook),
                "startContainer" => self.hooks.start_container.push(hook),
                "poststart" => self.hooks.poststart.push(hook),
                "poststop" => self.hooks.poststop.push(hook),
                other => {
                    return Err(CdiError::UnknownHook {
                        device: label.to_owned(),
                        hook: other.to_owned(),
                    });
                }
            }
        }
        self.additional_gids
            .extend(e.additional_gids.iter().copied().filter(|g| *g != 0));
        Ok(())
    }

    /// Applies the edits to a container's spec: env entries replace a variable of the same
    /// name or are appended, a node or mount replaces one at the same container path, mounts
    /// are ordered by depth, gids join the supplemental groups, hooks are appended.
    pub fn apply(self, spec: &mut ContainerSpec) {
        for e in self.env {
            let name_len = e.find('=').map_or(e.len(), |i| i + 1);
            let prefix = &e.as_bytes()[..name_len];
            match spec.env.iter_mut().find(|x| x.starts_with(prefix)) {
                Some(x) => *x = e.into_bytes(),
                None => spec.env.push(e.into_bytes()),
            }
        }
        for d in self.devices {
            spec.devices
                .retain(|x| x.container_path != d.container_path);
            spec.devices.push(d);
        }
        if !self.mounts.is_empty() {
            for m in self.mounts {
                spec.mounts.retain(|x| x.container_path != m.container_path);
                spec.mounts.push(m);
            }
            spec.mounts
                .sort_by_key(|m| Path::new(&m.container_path).components().count());
        }
        spec.user.supplemental_groups.extend(self.additional_gids);
        let h = self.hooks;
        spec.hooks.prestart.extend(h.prestart);
        spec.hooks.create_runtime.extend(h.create_runtime);
        spec.hooks.create_container.extend(h.create_container);
        spec.hooks.start_container.extend(h.start_container);
        spec.hooks.poststart.extend(h.poststart);
        spec.hooks.poststop.extend(h.poststop);
    }
}

/// A spec's device node as crius' device spec: what the spec leaves out is looked up on the
/// host node (`hostPath`, else `path`), as the reference implementation does.
fn device_node(label: &str, n: &DeviceNode, userns: bool) -> Result<DeviceSpec, CdiError> {
    let node = |what: String| CdiError::DeviceNode {
        device: label.to_owned(),
        path: n.path.clone(),
        what,
    };
    if !n.path.starts_with("/dev/") {
        return Err(node(
            "crius (libcontainer) makes device nodes under /dev only".into(),
        ));
    }
    let host_path = if n.host_path.is_empty() {
        n.path.as_str()
    } else {
        n.host_path.as_str()
    };
    let kind = match n.kind.as_str() {
        "u" => "c",
        k => k,
    };
    // Fully given (type and numbers): the host node is only consulted for its mode.
    let minimal = !kind.is_empty() && (n.major != 0 || kind == "p");
    let host = host_node(host_path);
    let (kind, major, minor, mode) = match (&host, minimal) {
        (Ok((_, _, _, mode)), true) => (kind, n.major, n.minor, n.file_mode.unwrap_or(*mode)),
        (Err(_), true) => (kind, n.major, n.minor, n.file_mode.unwrap_or(0o666)),
        (Err(e), false) => return Err(node(format!("cannot look up the host device: {e}"))),
        (Ok((host_kind, major, minor, mode)), false) => {
            let kind = if kind.is_empty() { *host_kind } else { kind };
            if kind != *host_kind {
                return Err(node(format!(
                    "type {kind:?} but the host's {host_path} is {host_kind:?}"
                )));
            }
            let (major, minor) = if n.major == 0 {
                (*major, *minor)
            } else {
                (n.major, n.minor)
            };
            (kind, major, minor, n.file_mode.unwrap_or(*mode))
        }
    };
    if kind == "p" {
        return Err(node("FIFO nodes are not supported by crius".into()));
    }
    if userns {
        if kind == "b" {
            return Err(CdiError::BlockDeviceInUserns {
                device: label.to_owned(),
                path: n.path.clone(),
            });
        }
        if host_path != n.path {
            return Err(CdiError::NodeMovedInUserns {
                device: label.to_owned(),
                path: n.path.clone(),
                host_path: host_path.to_owned(),
            });
        }
        // In a user namespace the node is bound from the host's node at the same path: it
        // must be the device the spec names.
        match &host {
            Ok((k, ma, mi, _)) if *k == kind && *ma == major && *mi == minor => {}
            Ok((k, ma, mi, _)) => {
                return Err(node(format!(
                    "in a user-namespaced pod the node is bound from the host's, which is \
                     {k} {ma}:{mi}, not {kind} {major}:{minor}"
                )));
            }
            Err(e) => {
                return Err(node(format!(
                    "in a user-namespaced pod the node is bound from the host's: {e}"
                )));
            }
        }
    }
    let permissions = match n.permissions.as_str() {
        "" => "rwm".to_owned(),
        "none" => String::new(),
        p => p.to_owned(),
    };
    Ok(DeviceSpec {
        container_path: n.path.clone(),
        kind: kind.to_owned(),
        major,
        minor,
        file_mode: mode & 0o7777,
        permissions,
        uid: n.uid,
        gid: n.gid,
    })
}

/// A spec's mount as a bind mount; only binds, with options crius can honour.
fn bind_mount(label: &str, m: &Mount, userns: bool) -> Result<BindMount, CdiError> {
    let mount = |what: String| CdiError::Mount {
        device: label.to_owned(),
        container_path: m.container_path.clone(),
        what,
    };
    if !m.container_path.starts_with('/') {
        return Err(mount("the container path is not absolute".into()));
    }
    let bind = m.kind == "bind" || m.options.iter().any(|o| o == "bind" || o == "rbind");
    if !bind || !matches!(m.kind.as_str(), "" | "bind" | "none") {
        return Err(mount(format!(
            "type {:?} with options {:?}: crius makes bind mounts only",
            m.kind, m.options
        )));
    }
    let mut readonly = false;
    let mut propagation = "rprivate";
    let mut flags = Vec::new();
    for o in &m.options {
        match o.as_str() {
            "bind" | "rbind" => {}
            "ro" => readonly = true,
            "rw" => readonly = false,
            "private" | "rprivate" => propagation = "rprivate",
            "slave" | "rslave" => propagation = "rslave",
            "shared" | "rshared" => propagation = "rshared",
            "nosuid" | "nodev" | "noexec" => flags.push(o.clone()),
            // The reference implementation asks for it in a user-namespaced pod; crius
            // idmaps there anyway.
            "idmap" | "ridmap" if userns => {}
            other => {
                return Err(mount(format!("option {other:?} is not supported by crius")));
            }
        }
    }
    let host_path = std::fs::canonicalize(&m.host_path)
        .map_err(|e| mount(format!("host path {}: {e}", m.host_path)))?;
    if userns && propagation != "rprivate" {
        return Err(CdiError::IdmapPropagation {
            device: label.to_owned(),
            container_path: m.container_path.clone(),
        });
    }
    Ok(BindMount {
        host_path,
        container_path: m.container_path.clone(),
        readonly,
        idmap: userns,
        propagation: propagation.to_owned(),
        recursive_read_only: false,
        flags,
        image: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPEC: &str = r#"
cdiVersion: "0.6.0"
kind: vendor.example/gpu
annotations:
  a: b
containerEdits:
  env: ["GLOBAL=1"]
devices:
  - name: "0"
    containerEdits:
      env: ["GPU=0"]
      deviceNodes:
        - path: /dev/crius-gpu0
          type: c
          major: 1
          minor: 3
          permissions: rw
  - name: null-twin
    containerEdits:
      deviceNodes:
        - path: /dev/crius-twin
          hostPath: /dev/null
      mounts:
        - hostPath: /
          containerPath: /host
          options: [ro, nosuid, nodev, rbind]
"#;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    fn names(v: &[&str]) -> Vec<(String, String)> {
        v.iter()
            .map(|n| ((*n).to_owned(), "config.CDI_devices[0].name".to_owned()))
            .collect()
    }

    #[test]
    fn qualified_names() {
        assert!(parse_qualified("vendor.com/class=dev-0").is_ok());
        assert!(parse_qualified("nvidia.com/gpu=GPU-a1:b2").is_ok());
        assert!(parse_qualified("vendor.com/class.x=0").is_ok());
        for bad in [
            "",
            "gpu0",
            "vendor.com/class",
            "vendor.com=x",
            "/dev/null",
            "vendor.com/class/x=y",
            "vendor.com/class=",
            "vendor.com/class=-x",
            "1vendor/class=x",
            "vendor.com/class=x y",
        ] {
            assert!(parse_qualified(bad).is_err(), "{bad:?}");
        }
        assert!(matches!(
            parse_qualified("gpu0"),
            Err(NameError::NotQualified { .. })
        ));
        assert!(matches!(
            parse_qualified("1vendor/class=x"),
            Err(NameError::VendorOrClass { what: "vendor", .. })
        ));
    }

    #[test]
    fn yaml_and_json_parse_and_are_checked() {
        let spec = parse_spec(Path::new("/x.yaml"), SPEC.as_bytes(), false).expect("spec");
        assert_eq!(spec.kind, "vendor.example/gpu");
        assert_eq!(spec.devices.len(), 2);
        assert_eq!(spec.edits.env, ["GLOBAL=1"]);
        let json = r#"{"cdiVersion":"1.0.0","kind":"v.io/c","devices":[
            {"name":"d","containerEdits":{"env":["A=1"],"additionalGids":[5]}}]}"#;
        assert!(parse_spec(Path::new("/x.json"), json.as_bytes(), true).is_ok());
        // JSON is YAML too.
        assert!(parse_spec(Path::new("/x.yaml"), json.as_bytes(), false).is_ok());
        for (why, text) in [
            (
                "unknown field",
                r#"{"cdiVersion":"0.6.0","kind":"v.io/c","bogus":1,"devices":[{"name":"d","containerEdits":{"env":["A=1"]}}]}"#,
            ),
            (
                "unknown version",
                r#"{"cdiVersion":"9.9.9","kind":"v.io/c","devices":[{"name":"d","containerEdits":{"env":["A=1"]}}]}"#,
            ),
            (
                "version too old for additionalGids",
                r#"{"cdiVersion":"0.6.0","kind":"v.io/c","devices":[{"name":"d","containerEdits":{"additionalGids":[5]}}]}"#,
            ),
            (
                "version too old for hostPath",
                r#"{"cdiVersion":"0.4.0","kind":"v.io/c","devices":[{"name":"d","containerEdits":{"deviceNodes":[{"path":"/dev/x","hostPath":"/dev/null"}]}}]}"#,
            ),
            (
                "bad kind",
                r#"{"cdiVersion":"0.6.0","kind":"vendor","devices":[{"name":"d","containerEdits":{"env":["A=1"]}}]}"#,
            ),
            (
                "no devices",
                r#"{"cdiVersion":"0.6.0","kind":"v.io/c","devices":[]}"#,
            ),
            (
                "empty edits",
                r#"{"cdiVersion":"0.6.0","kind":"v.io/c","devices":[{"name":"d"}]}"#,
            ),
            (
                "twice",
                r#"{"cdiVersion":"0.6.0","kind":"v.io/c","devices":[{"name":"d","containerEdits":{"env":["A=1"]}},{"name":"d","containerEdits":{"env":["A=1"]}}]}"#,
            ),
            (
                "bad env",
                r#"{"cdiVersion":"0.6.0","kind":"v.io/c","devices":[{"name":"d","containerEdits":{"env":["=1"]}}]}"#,
            ),
            (
                "bad hook",
                r#"{"cdiVersion":"0.6.0","kind":"v.io/c","devices":[{"name":"d","containerEdits":{"hooks":[{"hookName":"later","path":"/bin/true"}]}}]}"#,
            ),
            (
                "bad permissions",
                r#"{"cdiVersion":"0.6.0","kind":"v.io/c","devices":[{"name":"d","containerEdits":{"deviceNodes":[{"path":"/dev/x","permissions":"rx"}]}}]}"#,
            ),
            (
                "bad name",
                r#"{"cdiVersion":"0.6.0","kind":"v.io/c","devices":[{"name":"d!","containerEdits":{"env":["A=1"]}}]}"#,
            ),
        ] {
            assert!(
                parse_spec(Path::new("/x.json"), text.as_bytes(), true).is_err(),
                "{why}"
            );
        }
        assert!(matches!(
            parse_spec(Path::new("/x.yaml"), b"cdiVersion: [", false),
            Err(SpecError::Yaml { .. })
        ));
        let bad_env = r#"{"cdiVersion":"0.6.0","kind":"v.io/c","devices":[{"name":"d","containerEdits":{"env":["=1"]}}]}"#;
        let e = parse_spec(Path::new("/x.json"), bad_env.as_bytes(), true).expect_err("bad env");
        assert!(
            matches!(&e, SpecError::DeviceEdits { name, source: EditsError::Env(_) } if name == "d"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "device \"d\": invalid environment variable \"=1\""
        );
    }

    #[test]
    fn later_dirs_win_conflicts_and_bad_files_are_skipped() {
        use std::os::unix::fs::PermissionsExt;
        let a = tempfile::tempdir().expect("tempdir");
        let b = tempfile::tempdir().expect("tempdir");
        let spec = |kind: &str, dev: &str, env: &str| {
            format!(
                "cdiVersion: 0.6.0\nkind: {kind}\ndevices:\n- name: {dev}\n  containerEdits:\n    env: [{env}]\n"
            )
        };
        write(a.path(), "one.yaml", &spec("v.io/c", "d", "FROM=a"));
        write(b.path(), "two.yaml", &spec("v.io/c", "d", "FROM=b"));
        write(a.path(), "dup1.yaml", &spec("v.io/c", "twice", "X=1"));
        write(a.path(), "dup2.yaml", &spec("v.io/c", "twice", "X=2"));
        write(a.path(), "broken.yaml", "cdiVersion: [\n");
        write(a.path(), "ignored.txt", &spec("v.io/c", "txt", "X=1"));
        let open = write(a.path(), "open.yaml", &spec("v.io/c", "open", "X=1"));
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o666)).expect("chmod");
        nix::unistd::mkfifo(&a.path().join("fifo.yaml"), nix::sys::stat::Mode::S_IRWXU)
            .expect("mkfifo");
        write(a.path(), "ok.yaml", &spec("v.io/c", "ok", "OK=1"));
        let dirs = [a.path().to_owned(), b.path().to_owned()];

        let edits = resolve(&dirs, &names(&["v.io/c=d", "v.io/c=ok"]), false).expect("resolve");
        assert_eq!(edits.env, ["FROM=b", "OK=1"]);
        for (name, kind) in [
            ("v.io/c=twice", CdiErrorKind::Invalid),
            ("v.io/c=open", CdiErrorKind::Invalid),
            ("v.io/c=txt", CdiErrorKind::Invalid),
            ("v.io/c=missing", CdiErrorKind::Invalid),
        ] {
            let e = resolve(&dirs, &names(&[name]), false).expect_err(name);
            assert_eq!(e.kind(), kind, "{name}: {e}");
            assert!(e.to_string().contains(name), "{e}");
        }
        let e = resolve(&dirs, &names(&["v.io/c=twice"]), false).expect_err("twice");
        assert_eq!(
            e.to_string(),
            format!(
                "config.CDI_devices[0].name: CDI device \"v.io/c=twice\" is defined in more than \
                 one spec file: {}, {}",
                a.path().join("dup1.yaml").display(),
                a.path().join("dup2.yaml").display()
            )
        );
        let e = resolve(&[], &names(&["v.io/c=missing"]), false).expect_err("no dirs");
        assert_eq!(
            e.to_string(),
            "config.CDI_devices[0].name: unknown CDI device \"v.io/c=missing\": no usable spec \
             file in the configured cdi_spec_dirs (none) defines it (criusd logs the spec files \
             it skipped)"
        );
        // A fixed file is read again.
        write(a.path(), "broken.yaml", &spec("v.io/c", "fixed", "F=1"));
        assert!(resolve(&dirs, &names(&["v.io/c=fixed"]), false).is_ok());
    }

    #[test]
    fn edits_translate_and_apply() {
        let dir = tempfile::tempdir().expect("tempdir");
        write(dir.path(), "gpu.yaml", SPEC);
        let dirs = [dir.path().to_owned()];
        let edits = resolve(
            &dirs,
            &names(&["vendor.example/gpu=0", "vendor.example/gpu=null-twin"]),
            false,
        )
        .expect("resolve");
        assert_eq!(edits.env, ["GLOBAL=1", "GPU=0"], "spec-wide edits once");
        let gpu = &edits.devices[0];
        assert_eq!((gpu.kind.as_str(), gpu.major, gpu.minor), ("c", 1, 3));
        assert_eq!(gpu.permissions, "rw");
        let twin = &edits.devices[1];
        assert_eq!(twin.container_path, "/dev/crius-twin");
        assert_eq!((twin.kind.as_str(), twin.major, twin.minor), ("c", 1, 3));
        assert_eq!(twin.permissions, "rwm");
        let m = &edits.mounts[0];
        assert!(m.readonly && !m.idmap);
        assert_eq!(m.flags, ["nosuid", "nodev"]);

        let mut spec = ContainerSpec {
            id: "c".into(),
            layers_root: "/l".into(),
            layer_dirs: Vec::new(),
            args: vec!["sh".into()],
            env: vec![b"PATH=/bin".to_vec(), b"GPU=old".to_vec()],
            working_dir: String::new(),
            user: Default::default(),
            readonly_rootfs: false,
            log: None,
            mounts: vec![BindMount {
                host_path: "/tmp".into(),
                container_path: "/host".into(),
                readonly: false,
                idmap: false,
                propagation: "rprivate".into(),
                recursive_read_only: false,
                flags: Vec::new(),
                image: None,
            }],
            privileged: false,
            no_new_privs: false,
            capabilities: Default::default(),
            masked_paths: None,
            readonly_paths: None,
            oom_score_adj: None,
            resources: Default::default(),
            own_pid_ns: false,
            pid_target: None,
            devices: Vec::new(),
            stdin: false,
            stdin_once: false,
            tty: false,
            seccomp: Default::default(),
            apparmor_profile: None,
            hooks: Default::default(),
        };
        edits.apply(&mut spec);
        assert_eq!(
            spec.env,
            [
                b"PATH=/bin".to_vec(),
                b"GPU=0".to_vec(),
                b"GLOBAL=1".to_vec()
            ]
        );
        assert_eq!(spec.mounts.len(), 1, "the CDI mount replaces the request's");
        assert!(spec.mounts[0].readonly);
        assert_eq!(spec.devices.len(), 2);

        // In a user-namespaced pod: a node at another path than its host node is refused,
        // mounts are idmapped.
        let e =
            resolve(&dirs, &names(&["vendor.example/gpu=null-twin"]), true).expect_err("userns");
        assert_eq!(e.kind(), CdiErrorKind::Unsupported, "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "CDI device vendor.example/gpu=null-twin (from {}): device node /dev/crius-twin: \
                 a device at another path than on the host (hostPath /dev/null) in a \
                 user-namespaced pod is not implemented by crius yet",
                dir.path().join("gpu.yaml").display()
            )
        );
        let e = resolve(&dirs, &names(&["vendor.example/gpu=0"]), true).expect_err("no host node");
        assert_eq!(e.kind(), CdiErrorKind::Refused, "{e}");
        assert!(e.to_string().contains("vendor.example/gpu=0"), "{e}");
    }

    #[test]
    fn what_crius_cannot_honour_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let one = |name: &str, edits: &str| {
            write(
                dir.path(),
                &format!("{name}.json"),
                &format!(
                    r#"{{"cdiVersion":"1.1.0","kind":"v.io/{name}","devices":[{{"name":"d","containerEdits":{edits}}}]}}"#
                ),
            );
            format!("v.io/{name}=d")
        };
        let cases = [
            one("rdt", r#"{"intelRdt":{"closID":"x"}}"#),
            one(
                "net",
                r#"{"netDevices":[{"hostInterfaceName":"eth9","name":"net1"}]}"#,
            ),
            one(
                "tmpfs",
                r#"{"mounts":[{"hostPath":"tmpfs","containerPath":"/t","type":"tmpfs"}]}"#,
            ),
            one(
                "opt",
                r#"{"mounts":[{"hostPath":"/","containerPath":"/t","options":["bind","relatime"]}]}"#,
            ),
            one("fifo", r#"{"deviceNodes":[{"path":"/dev/f","type":"p"}]}"#),
            one(
                "outside",
                r#"{"deviceNodes":[{"path":"/tmp/n","type":"c","major":1,"minor":3}]}"#,
            ),
            one(
                "hook",
                r#"{"hooks":[{"hookName":"poststart","path":"/nonexistent/crius-hook"}]}"#,
            ),
            one(
                "missing",
                r#"{"mounts":[{"hostPath":"/nonexistent/crius","containerPath":"/t","options":["bind"]}]}"#,
            ),
        ];
        let dirs = [dir.path().to_owned()];
        for name in &cases {
            let e = resolve(&dirs, &names(&[name]), false).expect_err(name);
            assert_eq!(e.kind(), CdiErrorKind::Refused, "{name}: {e}");
            assert!(e.to_string().contains(name.as_str()), "{e}");
        }
        let e = resolve(&dirs, &names(&[cases[0].as_str()]), false).expect_err("rdt");
        assert_eq!(
            e.to_string(),
            format!(
                "CDI device v.io/rdt=d (from {}): intelRdt (resctrl classes) is not supported by \
                 crius",
                dir.path().join("rdt.json").display()
            )
        );
    }

    #[test]
    fn annotations_are_read_after_the_field() {
        let cdi_devices = ["v.io/c=a".to_owned()];
        let mut annotations = BTreeMap::new();
        annotations.insert("cdi.k8s.io/plugin_x".into(), "v.io/c=b,v.io/c=a".into());
        annotations.insert("other".into(), "v.io/c=z".into());
        let got = requested(&cdi_devices, &annotations).expect("requested");
        assert_eq!(
            got,
            [
                (
                    "v.io/c=a".to_owned(),
                    "config.CDI_devices[0].name".to_owned()
                ),
                (
                    "v.io/c=b".to_owned(),
                    "config.annotations[\"cdi.k8s.io/plugin_x\"]".to_owned()
                )
            ]
        );
        annotations.insert("cdi.k8s.io/bad".into(), "gpu0".into());
        let e = requested(&cdi_devices, &annotations).expect_err("unqualified");
        assert_eq!(e.kind(), CdiErrorKind::Invalid);
        assert_eq!(
            e.to_string(),
            "config.annotations[\"cdi.k8s.io/bad\"]: \"gpu0\" is not a qualified CDI device name \
             vendor/class=name"
        );
        let e = requested(
            &["v.io/c=a".to_owned(), "1v/c=x".to_owned()],
            &BTreeMap::new(),
        )
        .expect_err("bad vendor");
        assert_eq!(e.kind(), CdiErrorKind::Invalid);
        assert!(
            e.to_string()
                .starts_with("config.CDI_devices[1].name: invalid vendor \"1v\""),
            "{e}"
        );
    }
}
