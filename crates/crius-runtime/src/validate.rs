//! Validation of RunPodSandbox against the CRI contract (not kubelet's allocation policy).

use std::path::Path;

use crius_proto::seccomp;

use crate::spec::{IdRange, NamespaceMode, PodSpec};

/// A request field that breaks the contract.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct Invalid {
    /// The CRI field, dotted from `config`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> Invalid {
    Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// The kernel's limit on a hostname.
const HOST_NAME_MAX: usize = 64;

const USERNS: &str = "config.linux.security_context.namespace_options.userns_options";

/// Checks a pod spec; the first broken field wins.
pub fn validate(spec: &PodSpec) -> Result<(), Invalid> {
    let Some(meta) = &spec.metadata else {
        return Err(invalid("config.metadata", "is required"));
    };
    for (field, value) in [
        ("config.metadata.name", &meta.name),
        ("config.metadata.uid", &meta.uid),
        ("config.metadata.namespace", &meta.namespace),
    ] {
        if value.is_empty() {
            return Err(invalid(field, "must not be empty"));
        }
    }
    for (field, value) in [
        ("config.metadata.name", &meta.name),
        ("config.metadata.uid", &meta.uid),
        ("config.metadata.namespace", &meta.namespace),
    ] {
        validate_name(field, value)?;
    }
    validate_hostname(&spec.hostname)?;
    validate_runtime_handler(&spec.runtime_handler)?;
    validate_path("config.log_directory", &spec.log_directory, false)?;
    validate_path("config.linux.cgroup_parent", &spec.cgroup_parent, true)?;
    validate_cgroup_parent(&spec.cgroup_parent)?;
    if let Some(dns) = &spec.dns {
        validate_dns(dns)?;
    }
    for (i, port) in spec.port_mappings.iter().enumerate() {
        validate_port(i, port)?;
    }
    validate_resources("config.linux.resources", &spec.resources)?;
    let ns = &spec.namespaces;
    if ns.pid == NamespaceMode::Target {
        return Err(invalid(
            "config.linux.security_context.namespace_options.pid",
            "TARGET is for containers, not pod sandboxes",
        ));
    }
    for (field, mode) in [
        (
            "config.linux.security_context.namespace_options.network",
            ns.network,
        ),
        (
            "config.linux.security_context.namespace_options.ipc",
            ns.ipc,
        ),
    ] {
        if matches!(mode, NamespaceMode::Target | NamespaceMode::Container) {
            return Err(invalid(field, "must be POD or NODE"));
        }
    }
    if let Some(userns) = &ns.userns {
        match userns.mode {
            NamespaceMode::Node => {
                if !userns.uids.is_empty() || !userns.gids.is_empty() {
                    return Err(invalid(
                        USERNS,
                        "mode NODE must not carry uid or gid mappings",
                    ));
                }
            }
            NamespaceMode::Pod => {
                validate_ranges(&format!("{USERNS}.uids"), &userns.uids)?;
                validate_ranges(&format!("{USERNS}.gids"), &userns.gids)?;
            }
            NamespaceMode::Container | NamespaceMode::Target => {
                return Err(invalid(
                    &format!("{USERNS}.mode"),
                    "only POD and NODE are supported for a pod sandbox",
                ));
            }
        }
    }
    for (key, value) in &spec.sysctls {
        validate_sysctl(key, ns.network, ns.ipc)?;
        validate_sysctl_value(key, value)?;
    }
    if spec.run_as_group.is_some() && spec.run_as_user.is_none() {
        return Err(invalid(
            "config.linux.security_context.run_as_group",
            "is set without run_as_user",
        ));
    }
    for (field, id) in [
        (
            "config.linux.security_context.run_as_user",
            spec.run_as_user,
        ),
        (
            "config.linux.security_context.run_as_group",
            spec.run_as_group,
        ),
    ] {
        if id.is_some_and(|id| !(0..=i64::from(u32::MAX)).contains(&id)) {
            return Err(invalid(field, "is out of range"));
        }
    }
    Ok(())
}

/// The longest name, namespace or uid accepted (a DNS subdomain; a UID is far shorter).
const NAME_MAX: usize = 253;
/// The longest path accepted for a log directory or cgroup parent.
const PATH_MAX: usize = 4096;
/// The longest DNS search domain.
const DOMAIN_MAX: usize = 253;
/// At most this many DNS servers, search domains or options each.
const DNS_ENTRIES_MAX: usize = 32;

/// How a client-supplied string is shown in an error: quoted, escaped, cut after 64 bytes, so a
/// 64 KiB value does not make a 64 KiB message (gRPC carries it in a header).
pub fn shown(value: &str) -> String {
    crius_proto::shown_cut(value, 64)
}

/// A metadata string: names files and cgroups nowhere, but is logged, listed and matched; it
/// must be a printable single line without `/`, not `.` or `..`, of sane length.
fn validate_name(field: &str, value: &str) -> Result<(), Invalid> {
    if value.len() > NAME_MAX {
        return Err(invalid(
            field,
            format!("is {} bytes, more than {NAME_MAX}", value.len()),
        ));
    }
    if value.chars().any(|c| c.is_control() || c == '/') || value == "." || value == ".." {
        return Err(invalid(
            field,
            format!(
                "{} must not contain '/' or control characters (NUL, newline) nor be . or ..",
                shown(value)
            ),
        ));
    }
    Ok(())
}

/// A runtime handler name (whether crius has it is decided by the caller): a short printable
/// name, so that the error for an unknown one stays small.
fn validate_runtime_handler(handler: &str) -> Result<(), Invalid> {
    if handler.len() > NAME_MAX || handler.chars().any(|c| c.is_control() || c == '/') {
        return Err(invalid(
            "runtime_handler",
            format!(
                "{} is not a runtime handler name: crius has only the default handler \"\"",
                shown(handler)
            ),
        ));
    }
    Ok(())
}

/// A hostname is written to the kernel and into the pod's /etc/hosts: a DNS name of at most
/// 64 bytes (letters, digits, '-', '.', '_').
fn validate_hostname(hostname: &str) -> Result<(), Invalid> {
    let field = "config.hostname";
    if hostname.len() > HOST_NAME_MAX {
        return Err(invalid(
            field,
            format!(
                "is {} bytes, more than the kernel's {HOST_NAME_MAX}",
                hostname.len()
            ),
        ));
    }
    if !hostname
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
    {
        return Err(invalid(
            field,
            format!(
                "{} may hold only letters, digits, '-', '.' and '_'",
                shown(hostname)
            ),
        ));
    }
    Ok(())
}

/// An absolute path without `.`/`..` components or control characters; empty is allowed (the
/// default). With `slice`, a systemd slice name (`kubepods-besteffort.slice`) is allowed too.
/// A path's length and characters: at most [`PATH_MAX`] bytes, no control characters.
fn validate_path_text(field: &str, path: &str) -> Result<(), Invalid> {
    if path.len() > PATH_MAX {
        return Err(invalid(
            field,
            format!("is {} bytes, more than {PATH_MAX}", path.len()),
        ));
    }
    if path.chars().any(char::is_control) {
        return Err(invalid(
            field,
            format!(
                "{} must not contain control characters (NUL, newline)",
                shown(path)
            ),
        ));
    }
    Ok(())
}

fn validate_path(field: &str, path: &str, slice: bool) -> Result<(), Invalid> {
    if path.is_empty() {
        return Ok(());
    }
    validate_path_text(field, path)?;
    let systemd_slice = slice && !path.contains('/') && path.ends_with(".slice");
    if !path.starts_with('/') && !systemd_slice {
        return Err(invalid(
            field,
            format!("{} must be an absolute path", shown(path)),
        ));
    }
    if path.split('/').any(|c| c == "." || c == "..") {
        return Err(invalid(
            field,
            format!("{} must not contain . or .. components", shown(path)),
        ));
    }
    Ok(())
}

/// A pod's cgroup parent must lie in kubelet's hierarchy: no component may name a cgroup crius
/// makes for itself (`crius-monitors`) or for a pod or container (`crius-<64 hex digits>`), so a
/// request can never nest a pod inside the monitors' cgroup or inside another pod.
fn validate_cgroup_parent(path: &str) -> Result<(), Invalid> {
    let owned_by_crius = |component: &str| {
        let name = component
            .strip_suffix(".slice")
            .or_else(|| component.strip_suffix(".scope"))
            .unwrap_or(component);
        name == "crius-monitors"
            || name
                .strip_prefix("crius-")
                .is_some_and(|id| id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit()))
    };
    if let Some(component) = path.split('/').find(|c| owned_by_crius(c)) {
        return Err(invalid(
            "config.linux.cgroup_parent",
            format!(
                "{} names {}, a cgroup crius owns (its pod monitors or another pod); \
                 pass the cgroup kubelet made for the pod",
                shown(path),
                shown(component)
            ),
        ));
    }
    Ok(())
}

/// With the systemd cgroup driver, the slice unit a pod's cgroup parent names: a slice name
/// (`kubepods-burstable-pod<uid>.slice`) or the slice's cgroup path as kubelet sends it
/// (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice`). An empty
/// parent is `default`.
pub fn systemd_slice(parent: &str, default: &str) -> Result<String, Invalid> {
    if parent.is_empty() {
        return Ok(default.to_owned());
    }
    let name = parent.rsplit('/').next().unwrap_or_default();
    match crius_proto::systemd_slice_path(name) {
        Some(path) if !parent.contains('/') || parent.trim_end_matches('/') == path => {
            Ok(name.to_owned())
        }
        _ => Err(invalid(
            "config.linux.cgroup_parent",
            format!(
                "{} is not a systemd slice: with cgroup_driver = \"systemd\" the cgroup parent \
                 is a slice unit such as kubepods-besteffort.slice (or its path, \
                 /kubepods.slice/kubepods-besteffort.slice), as kubelet sends it with its \
                 systemd cgroup driver",
                shown(parent)
            ),
        )),
    }
}

/// A container's log path: relative to the pod's log directory and beneath it (no `..`, no
/// absolute path); the monitor also opens it without following symlinks.
pub fn validate_log_path(field: &str, path: &str) -> Result<(), Invalid> {
    if path.is_empty() {
        return Ok(());
    }
    validate_path_text(field, path)?;
    if path.starts_with('/') {
        return Err(invalid(
            field,
            format!(
                "{} must be relative to the pod's log_directory",
                shown(path)
            ),
        ));
    }
    if path
        .split('/')
        .any(|c| c == "." || c == ".." || c.is_empty())
    {
        return Err(invalid(
            field,
            format!(
                "{} must stay beneath the pod's log_directory (no ., .. or empty components)",
                shown(path)
            ),
        ));
    }
    Ok(())
}

/// Checks on the node that no existing component of `relative` beneath `directory` is a
/// symlink (the pod monitor opens the log with RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS anyway;
/// this names the problem for the client). Missing components are fine: they are created.
pub fn check_log_path_beneath(
    field: &str,
    directory: &Path,
    relative: &Path,
) -> Result<(), Invalid> {
    let mut path = directory.to_path_buf();
    for component in relative.components() {
        path.push(component);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(invalid(
                    field,
                    format!(
                        "{} is a symlink; a container log must stay beneath the pod's \
                         log_directory {}",
                        shown(&path.to_string_lossy()),
                        shown(&directory.to_string_lossy())
                    ),
                ));
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

/// resolv.conf is line based: no entry may carry whitespace that would start a new line or
/// keyword; servers are IP addresses.
fn validate_dns(dns: &crate::spec::DnsConfig) -> Result<(), Invalid> {
    for (field, entries) in [
        ("config.dns_config.servers", &dns.servers),
        ("config.dns_config.searches", &dns.searches),
        ("config.dns_config.options", &dns.options),
    ] {
        if entries.len() > DNS_ENTRIES_MAX {
            return Err(invalid(
                field,
                format!("has {} entries, more than {DNS_ENTRIES_MAX}", entries.len()),
            ));
        }
        for entry in entries {
            if entry.is_empty()
                || entry.len() > DOMAIN_MAX
                || entry.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(invalid(
                    field,
                    format!(
                        "{} must be 1 to {DOMAIN_MAX} bytes without whitespace or control \
                         characters",
                        shown(entry)
                    ),
                ));
            }
        }
    }
    for server in &dns.servers {
        if server.parse::<std::net::IpAddr>().is_err() {
            return Err(invalid(
                "config.dns_config.servers",
                format!("{} is not an IP address", shown(server)),
            ));
        }
    }
    Ok(())
}

/// A port mapping: ports in range, a known protocol, an IP address (or nothing) to bind.
fn validate_port(index: usize, port: &crate::spec::PortMapping) -> Result<(), Invalid> {
    let field = format!("config.port_mappings[{index}]");
    if !(1..=65535).contains(&port.container_port) {
        return Err(invalid(
            &format!("{field}.container_port"),
            format!("{} is not a port (1..65535)", port.container_port),
        ));
    }
    if !(0..=65535).contains(&port.host_port) {
        return Err(invalid(
            &format!("{field}.host_port"),
            format!("{} is not a port (1..65535, or 0 for none)", port.host_port),
        ));
    }
    if !matches!(port.protocol.as_str(), "tcp" | "udp" | "sctp") {
        return Err(invalid(
            &format!("{field}.protocol"),
            format!("{} is not TCP, UDP or SCTP", shown(&port.protocol)),
        ));
    }
    if !port.host_ip.is_empty() && port.host_ip.parse::<std::net::IpAddr>().is_err() {
        return Err(invalid(
            &format!("{field}.host_ip"),
            format!("{} is not an IP address", shown(&port.host_ip)),
        ));
    }
    Ok(())
}

/// Pod cgroup limits the kernel would refuse (so they never reach the monitor as an Internal
/// error): CFS period 1 ms to 1 s, quota at least 1 ms, shares 2 to 262144, memory not
/// negative. `prefix` names the request field (`config.linux.resources` for RunPodSandbox,
/// `resources` for UpdatePodSandboxResources, `config.linux.resources` or `linux` for
/// containers).
pub fn validate_resources(prefix: &str, r: &crate::spec::Resources) -> Result<(), Invalid> {
    if let Some(period) = r.cpu_period
        && !(1_000..=1_000_000).contains(&period)
    {
        return Err(invalid(
            &format!("{prefix}.cpu_period"),
            format!("{period} is outside 1000..1000000 microseconds"),
        ));
    }
    if let Some(quota) = r.cpu_quota
        && (0..1_000).contains(&quota)
    {
        return Err(invalid(
            &format!("{prefix}.cpu_quota"),
            format!("{quota} is below 1000 microseconds"),
        ));
    }
    if let Some(shares) = r.cpu_shares
        && !(2..=262_144).contains(&shares)
    {
        return Err(invalid(
            &format!("{prefix}.cpu_shares"),
            format!("{shares} is outside 2..262144"),
        ));
    }
    if let Some(memory) = r.memory_limit
        && memory < 0
    {
        return Err(invalid(
            &format!("{prefix}.memory_limit_in_bytes"),
            format!("{memory} is negative"),
        ));
    }
    if let Some(swap) = r.memory_swap {
        let field = format!("{prefix}.memory_swap_limit_in_bytes");
        if swap < -1 {
            return Err(invalid(&field, format!("{swap} is below -1 (unlimited)")));
        }
        if let Some(memory) = r.memory_limit.filter(|m| *m > 0)
            && swap >= 0
            && swap < memory
        {
            return Err(invalid(
                &field,
                format!("{swap} is below the memory limit {memory} (it counts memory plus swap)"),
            ));
        }
    }
    Ok(())
}

/// A CRI `LinuxContainerResources` as the client sent it, before crius drops what means
/// "unset" (0, and −1 for the CFS quota). crius-server fills it in; every check of those raw
/// values lives in [`validate_raw_resources`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawResources<'a> {
    /// CFS period in microseconds; 0 means unset.
    pub cpu_period: i64,
    /// CFS quota in microseconds; 0 means unset, −1 unlimited.
    pub cpu_quota: i64,
    /// cpu shares; 0 means unset.
    pub cpu_shares: i64,
    /// Memory limit in bytes; 0 means unlimited.
    pub memory_limit_in_bytes: i64,
    /// OOM score adjustment; 0 means unset.
    pub oom_score_adj: i64,
    /// The `page_size` of every hugepage limit (`2MB`, `1GB`).
    pub hugepage_sizes: Vec<&'a str>,
    /// The keys of `unified` (cgroup v2 file names such as `memory.high`).
    pub unified_keys: Vec<&'a str>,
    /// `cpuset_cpus`, a kernel CPU list (`0-3,5`) or empty.
    pub cpuset_cpus: &'a str,
    /// `cpuset_mems`, a kernel node list or empty.
    pub cpuset_mems: &'a str,
}

/// Checks the raw CRI resource values that converting them would silently drop: negative
/// numbers (except a CFS quota of −1, unlimited), an OOM score adjustment outside
/// −1000..1000, hugepage sizes that are not a power of two of at least 64KB written as
/// `<n>KB|MB|GB`, `unified` keys that are not a plain file name, and CPU or node lists the
/// kernel would refuse. `prefix` names the request field (`config.linux.resources`,
/// `config.linux.overhead`, `resources`, `linux`, ...).
pub fn validate_raw_resources(prefix: &str, r: &RawResources<'_>) -> Result<(), Invalid> {
    for (name, value) in [
        ("cpu_period", r.cpu_period),
        ("cpu_shares", r.cpu_shares),
        ("memory_limit_in_bytes", r.memory_limit_in_bytes),
    ] {
        if value < 0 {
            return Err(invalid(
                &format!("{prefix}.{name}"),
                format!("{value} is negative"),
            ));
        }
    }
    if r.cpu_quota < -1 {
        return Err(invalid(
            &format!("{prefix}.cpu_quota"),
            format!("{} is below -1 (unlimited)", r.cpu_quota),
        ));
    }
    if !(-1000..=1000).contains(&r.oom_score_adj) {
        return Err(invalid(
            &format!("{prefix}.oom_score_adj"),
            format!("{} is outside -1000..1000", r.oom_score_adj),
        ));
    }
    for size in &r.hugepage_sizes {
        if hugepage_bytes(size).is_none() {
            return Err(invalid(
                &format!("{prefix}.hugepage_limits"),
                format!(
                    "page size {} is not a power of two of at least 64KB written as <n>KB, <n>MB \
                     or <n>GB",
                    shown(size)
                ),
            ));
        }
    }
    for key in &r.unified_keys {
        if key.is_empty()
            || *key == "."
            || *key == ".."
            || key.contains('/')
            || key.chars().any(char::is_control)
        {
            return Err(invalid(
                &format!("{prefix}.unified"),
                format!(
                    "key {} is not a cgroup file name (no /, not . or ..)",
                    shown(key)
                ),
            ));
        }
    }
    for (name, list) in [
        ("cpuset_cpus", r.cpuset_cpus),
        ("cpuset_mems", r.cpuset_mems),
    ] {
        if !list.is_empty() && !is_kernel_list(list) {
            return Err(invalid(
                &format!("{prefix}.{name}"),
                format!("{} is not a list such as 0-3,5", shown(list)),
            ));
        }
    }
    Ok(())
}

/// The bytes of a hugepage size such as `2MB`, if it is one.
fn hugepage_bytes(size: &str) -> Option<u64> {
    let (number, shift) = [("KB", 10), ("MB", 20), ("GB", 30)]
        .into_iter()
        .find_map(|(unit, shift)| size.strip_suffix(unit).map(|n| (n, shift)))?;
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bytes = number.parse::<u64>().ok()?.checked_mul(1 << shift)?;
    (bytes.is_power_of_two() && bytes >= 64 << 10).then_some(bytes)
}

/// A kernel CPU or node list: comma-separated numbers and ascending `a-b` ranges.
fn is_kernel_list(list: &str) -> bool {
    let number = |s: &str| {
        (!s.is_empty() && s.len() <= 5 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u32>().ok())
            .flatten()
    };
    list.split(',').all(|item| match item.split_once('-') {
        Some((a, b)) => matches!((number(a), number(b)), (Some(a), Some(b)) if a <= b),
        None => number(item).is_some(),
    })
}

/// A sysctl value is written to /proc/sys as is: one line, no NUL, not empty.
fn validate_sysctl_value(key: &str, value: &str) -> Result<(), Invalid> {
    if value.is_empty() || value.len() > PATH_MAX || value.chars().any(char::is_control) {
        return Err(invalid(
            "config.linux.sysctls",
            format!(
                "the value of {} must be 1 to {PATH_MAX} bytes on one line without NUL",
                shown(key)
            ),
        ));
    }
    Ok(())
}

/// A pod sysctl must be namespaced, in a namespace the pod has of its own.
fn validate_sysctl(key: &str, network: NamespaceMode, ipc: NamespaceMode) -> Result<(), Invalid> {
    let field = "config.linux.sysctls";
    if key.len() > PATH_MAX
        || key.chars().any(char::is_control)
        || crius_proto::sysctl_path(key).is_none()
    {
        return Err(invalid(
            field,
            format!("{} is not a sysctl name", shown(key)),
        ));
    }
    if crius_proto::sysctl_path(key).is_some_and(|p| !p.exists()) {
        return Err(invalid(
            field,
            format!("{} is not a sysctl of this kernel", shown(key)),
        ));
    }
    let dotted = key.replace('/', ".");
    let (needs, mode) = if dotted.starts_with("net.") {
        ("network", network)
    } else if dotted.starts_with("kernel.shm")
        || dotted.starts_with("kernel.msg")
        || dotted == "kernel.sem"
        || dotted.starts_with("fs.mqueue.")
    {
        ("IPC", ipc)
    } else if dotted == "kernel.domainname" {
        ("UTS", NamespaceMode::Pod)
    } else {
        return Err(invalid(
            field,
            format!(
                "{} is not a namespaced sysctl and would change the whole node",
                shown(key)
            ),
        ));
    };
    if mode == NamespaceMode::Node {
        return Err(invalid(
            field,
            format!(
                "{} would change the host's {needs} namespace, which the pod shares",
                shown(key)
            ),
        ));
    }
    Ok(())
}

fn validate_ranges(field: &str, ranges: &[IdRange]) -> Result<(), Invalid> {
    let [range] = ranges else {
        return Err(invalid(
            field,
            format!(
                "exactly one mapping range is supported, got {}",
                ranges.len()
            ),
        ));
    };
    if range.length == 0 {
        return Err(invalid(field, "the range length must not be 0"));
    }
    let end = |start: u32| u64::from(start) + u64::from(range.length);
    if end(range.container_id) > 1 << 32 || end(range.host_id) > 1 << 32 {
        return Err(invalid(
            field,
            format!(
                "the range {}:{}:{} overflows 32-bit ids",
                range.container_id, range.host_id, range.length
            ),
        ));
    }
    if range.container_id != 0 {
        return Err(invalid(
            field,
            "container id 0 (the pod's root) is not mapped",
        ));
    }
    Ok(())
}

/// The largest seccomp profile file crius reads.
const SECCOMP_PROFILE_MAX: u64 = 4 << 20;

/// Seccomp actions of the OCI and Docker profile formats. `SCMP_ACT_NOTIFY` is absent: it
/// needs a seccomp agent, which crius does not run.
const SECCOMP_ACTIONS: &[&str] = &[
    "SCMP_ACT_KILL",
    "SCMP_ACT_KILL_PROCESS",
    "SCMP_ACT_KILL_THREAD",
    "SCMP_ACT_TRAP",
    "SCMP_ACT_ERRNO",
    "SCMP_ACT_TRACE",
    "SCMP_ACT_ALLOW",
    "SCMP_ACT_LOG",
];

/// Comparison operators of seccomp rule arguments.
const SECCOMP_OPS: &[&str] = &[
    "SCMP_CMP_NE",
    "SCMP_CMP_LT",
    "SCMP_CMP_LE",
    "SCMP_CMP_EQ",
    "SCMP_CMP_GE",
    "SCMP_CMP_GT",
    "SCMP_CMP_MASKED_EQ",
];

/// Seccomp filter flags.
const SECCOMP_FLAGS: &[&str] = &[
    "SECCOMP_FILTER_FLAG_TSYNC",
    "SECCOMP_FILTER_FLAG_LOG",
    "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
];

/// Reads a node's seccomp profile file (kubelet's `Localhost` profile: OCI or Docker JSON) and
/// checks its shape: a `defaultAction` and `syscalls` rules with names and a known action,
/// errno values, arguments 0 to 5 with known operators, known architectures and flags. Every
/// failure names `field` and the path.
pub fn read_seccomp_profile(field: &str, path: &str) -> Result<seccomp::Profile, Invalid> {
    use std::io::Read;
    if !path.starts_with('/') {
        return Err(invalid(
            field,
            format!("seccomp profile path {} is not absolute", shown(path)),
        ));
    }
    let bad = |reason: String| invalid(field, format!("seccomp profile {}: {reason}", shown(path)));
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot open: {e}")))?;
    let mut text = String::new();
    file.take(SECCOMP_PROFILE_MAX + 1)
        .read_to_string(&mut text)
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    if text.len() as u64 > SECCOMP_PROFILE_MAX {
        return Err(bad(format!("larger than {SECCOMP_PROFILE_MAX} bytes")));
    }
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    check_seccomp_profile(&value).map_err(|e| bad(e.to_string()))?;
    serde_json::from_value(value).map_err(|e| bad(format!("not a seccomp profile: {e}")))
}

/// What is wrong with the shape of a seccomp profile; `field` is the profile's key, dotted
/// and indexed (`syscalls[2].action`).
#[derive(Debug, thiserror::Error)]
enum ProfileError {
    #[error("not a JSON object")]
    NotObject,
    #[error("{field} is missing")]
    MissingAction { field: String },
    #[error("{field}: unknown or unsupported action {}", shown(.action))]
    UnknownAction { field: String, action: String },
    #[error("{field}: {value} is not an errno value")]
    Errno {
        field: String,
        value: serde_json::Value,
    },
    #[error("{field}: {value} is not a string")]
    NotString {
        field: String,
        value: serde_json::Value,
    },
    #[error("{field}: {value} is not a list")]
    NotList {
        field: String,
        value: serde_json::Value,
    },
    #[error("architectures: unknown {}", shown(.arch))]
    UnknownArchitecture { arch: String },
    #[error("flags: unknown {}", shown(.flag))]
    UnknownFlag { flag: String },
    #[error("listenerPath: seccomp agents are not supported")]
    Listener,
    #[error("syscalls is not a list")]
    SyscallsNotList,
    #[error("syscalls[{rule}] is not an object")]
    RuleNotObject { rule: usize },
    #[error("syscalls[{rule}].name is not a string")]
    NameNotString { rule: usize },
    #[error("syscalls[{rule}] names no system call")]
    NoSyscall { rule: usize },
    #[error("syscalls[{rule}].args is not a list")]
    ArgsNotList { rule: usize },
    #[error("syscalls[{rule}].args[{arg}].index must be 0 to 5")]
    ArgIndex { rule: usize, arg: usize },
    #[error("syscalls[{rule}].args[{arg}].{key} is not an unsigned 64-bit number")]
    ArgValue {
        rule: usize,
        arg: usize,
        key: &'static str,
    },
    #[error("syscalls[{rule}].args[{arg}].op is missing or unknown")]
    ArgOp { rule: usize, arg: usize },
}

/// The shape checks of [`read_seccomp_profile`].
fn check_seccomp_profile(value: &serde_json::Value) -> Result<(), ProfileError> {
    use serde_json::Value;
    let obj = value.as_object().ok_or(ProfileError::NotObject)?;
    let action = |v: Option<&Value>, field: &str| -> Result<(), ProfileError> {
        match v.and_then(Value::as_str) {
            Some(a) if SECCOMP_ACTIONS.contains(&a) => Ok(()),
            Some(a) => Err(ProfileError::UnknownAction {
                field: field.to_owned(),
                action: a.to_owned(),
            }),
            None => Err(ProfileError::MissingAction {
                field: field.to_owned(),
            }),
        }
    };
    let errno = |v: Option<&Value>, field: &str| -> Result<(), ProfileError> {
        match v {
            None | Some(Value::Null) => Ok(()),
            Some(n) if n.as_u64().is_some_and(|n| n < 4096) => Ok(()),
            Some(n) => Err(ProfileError::Errno {
                field: field.to_owned(),
                value: n.clone(),
            }),
        }
    };
    let names = |v: Option<&Value>, field: &str| -> Result<Vec<String>, ProfileError> {
        match v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|n| {
                    n.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| ProfileError::NotString {
                            field: field.to_owned(),
                            value: n.clone(),
                        })
                })
                .collect(),
            Some(other) => Err(ProfileError::NotList {
                field: field.to_owned(),
                value: other.clone(),
            }),
        }
    };
    action(obj.get("defaultAction"), "defaultAction")?;
    errno(obj.get("defaultErrnoRet"), "defaultErrnoRet")?;
    for arch in names(obj.get("architectures"), "architectures")? {
        if !arch.starts_with("SCMP_ARCH_") {
            return Err(ProfileError::UnknownArchitecture { arch });
        }
    }
    for flag in names(obj.get("flags"), "flags")? {
        if !SECCOMP_FLAGS.contains(&flag.as_str()) {
            return Err(ProfileError::UnknownFlag { flag });
        }
    }
    if obj.get("listenerPath").is_some_and(|v| !v.is_null()) {
        return Err(ProfileError::Listener);
    }
    let rules = match obj.get("syscalls") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => return Err(ProfileError::SyscallsNotList),
    };
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("syscalls[{i}]");
        if !rule.is_object() {
            return Err(ProfileError::RuleNotObject { rule: i });
        }
        let mut all = names(rule.get("names"), &format!("{at}.names"))?;
        match rule.get("name") {
            None | Some(Value::Null) => {}
            Some(Value::String(n)) => all.push(n.clone()),
            Some(_) => return Err(ProfileError::NameNotString { rule: i }),
        }
        if all.is_empty() || all.iter().any(String::is_empty) {
            return Err(ProfileError::NoSyscall { rule: i });
        }
        action(rule.get("action"), &format!("{at}.action"))?;
        errno(rule.get("errnoRet"), &format!("{at}.errnoRet"))?;
        let args = match rule.get("args") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(a)) => a.clone(),
            Some(_) => return Err(ProfileError::ArgsNotList { rule: i }),
        };
        for (j, arg) in args.iter().enumerate() {
            if arg
                .get("index")
                .and_then(Value::as_u64)
                .is_none_or(|n| n >= 6)
            {
                return Err(ProfileError::ArgIndex { rule: i, arg: j });
            }
            for key in ["value", "valueTwo"] {
                if arg
                    .get(key)
                    .is_some_and(|v| !v.is_null() && v.as_u64().is_none())
                {
                    return Err(ProfileError::ArgValue {
                        rule: i,
                        arg: j,
                        key,
                    });
                }
            }
            match arg.get("op").and_then(Value::as_str) {
                Some(op) if SECCOMP_OPS.contains(&op) => {}
                _ => return Err(ProfileError::ArgOp { rule: i, arg: j }),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{DnsConfig, PodMetadata, PortMapping, Resources, UsernsOptions};

    fn range(c: u32, h: u32, l: u32) -> IdRange {
        IdRange {
            container_id: c,
            host_id: h,
            length: l,
        }
    }

    fn pod() -> PodSpec {
        PodSpec {
            metadata: Some(PodMetadata {
                name: "n".into(),
                uid: "u".into(),
                namespace: "ns".into(),
                attempt: 0,
            }),
            ..PodSpec::default()
        }
    }

    fn with_userns(mode: NamespaceMode, uids: Vec<IdRange>, gids: Vec<IdRange>) -> PodSpec {
        let mut p = pod();
        p.namespaces.userns = Some(UsernsOptions { mode, uids, gids });
        p
    }

    fn field_of(spec: &PodSpec) -> String {
        validate(spec).err().map(|e| e.field).unwrap_or_default()
    }

    #[test]
    fn accepts_plain_and_critest_mappings() {
        assert_eq!(validate(&pod()), Ok(()));
        let critest = with_userns(
            NamespaceMode::Pod,
            vec![range(0, 1000, 100000)],
            vec![range(0, 1000, 100000)],
        );
        assert_eq!(validate(&critest), Ok(()));
        let kubelet = with_userns(
            NamespaceMode::Pod,
            vec![range(0, 65536 * 3, 65536)],
            vec![range(0, 65536 * 3, 65536)],
        );
        assert_eq!(validate(&kubelet), Ok(()));
        let top = with_userns(
            NamespaceMode::Pod,
            vec![range(0, u32::MAX - 9, 10)],
            vec![range(0, 0, u32::MAX)],
        );
        assert_eq!(validate(&top), Ok(()));
        assert_eq!(
            validate(&with_userns(NamespaceMode::Node, vec![], vec![])),
            Ok(())
        );
    }

    #[test]
    fn metadata_is_required() {
        let mut p = pod();
        p.metadata = None;
        assert_eq!(field_of(&p), "config.metadata");
        for f in ["name", "uid", "namespace"] {
            let mut p = pod();
            if let Some(m) = p.metadata.as_mut() {
                match f {
                    "name" => m.name.clear(),
                    "uid" => m.uid.clear(),
                    _ => m.namespace.clear(),
                }
            }
            assert_eq!(field_of(&p), format!("config.metadata.{f}"));
        }
    }

    #[test]
    fn refuses_bad_mappings() {
        let ok = vec![range(0, 1000, 100)];
        let two = vec![range(0, 1000, 10), range(10, 2000, 10)];
        let cases = [
            (two.clone(), ok.clone(), "uids"),
            (ok.clone(), two, "gids"),
            (vec![], ok.clone(), "uids"),
            (vec![range(1, 1000, 10)], ok.clone(), "uids"),
            (ok.clone(), vec![range(0, 1000, 0)], "gids"),
            (vec![range(0, u32::MAX, 2)], ok.clone(), "uids"),
            (ok.clone(), vec![range(0, 5, u32::MAX)], "gids"),
        ];
        for (uids, gids, which) in cases {
            let spec = with_userns(NamespaceMode::Pod, uids.clone(), gids.clone());
            assert_eq!(
                field_of(&spec),
                format!("{USERNS}.{which}"),
                "{uids:?} {gids:?}"
            );
        }
    }

    #[test]
    fn refuses_bad_modes() {
        let ok = vec![range(0, 1000, 100)];
        for mode in [NamespaceMode::Container, NamespaceMode::Target] {
            let spec = with_userns(mode, ok.clone(), ok.clone());
            assert_eq!(field_of(&spec), format!("{USERNS}.mode"));
        }
        let spec = with_userns(NamespaceMode::Node, ok.clone(), vec![]);
        assert_eq!(field_of(&spec), USERNS);
        // A user namespace on the host network is fine (KEP-5607).
        let mut spec = with_userns(NamespaceMode::Pod, ok.clone(), ok);
        spec.namespaces.network = NamespaceMode::Node;
        assert_eq!(validate(&spec), Ok(()));
    }

    #[test]
    fn sysctls_must_be_namespaced_and_own() {
        let mut p = pod();
        p.sysctls
            .insert("net.ipv4.ip_unprivileged_port_start".into(), "0".into());
        p.sysctls.insert("kernel.shmmni".into(), "100".into());
        assert_eq!(validate(&p), Ok(()));
        p.namespaces.network = NamespaceMode::Node;
        assert_eq!(field_of(&p), "config.linux.sysctls");
        let mut p = pod();
        p.sysctls.insert("vm.swappiness".into(), "1".into());
        assert_eq!(field_of(&p), "config.linux.sysctls");
        let mut p = pod();
        p.sysctls.insert("net/../../x".into(), "1".into());
        assert_eq!(field_of(&p), "config.linux.sysctls");
    }

    #[test]
    fn hostname_fits_the_kernel() {
        let mut p = pod();
        p.hostname = "h".repeat(64);
        assert_eq!(validate(&p), Ok(()));
        p.hostname.push('h');
        assert_eq!(field_of(&p), "config.hostname");
    }

    #[test]
    fn run_as_group_needs_run_as_user() {
        let mut p = pod();
        p.run_as_group = Some(1);
        assert_eq!(field_of(&p), "config.linux.security_context.run_as_group");
        p.run_as_user = Some(1);
        assert_eq!(validate(&p), Ok(()));
    }

    fn port(container_port: i32, host_port: i32, protocol: &str, host_ip: &str) -> PortMapping {
        PortMapping {
            protocol: protocol.into(),
            container_port,
            host_port,
            host_ip: host_ip.into(),
        }
    }

    #[test]
    fn accepts_what_kubelet_sends() {
        let mut p = pod();
        p.hostname = "web-0.example_x".into();
        p.log_directory = "/var/log/pods/default_web-0_0b6f5a2e-8c1d-4d7e-9a55-0d7e4c9c1f1a".into();
        p.cgroup_parent = "/kubepods/burstable/pod0b6f5a2e".into();
        p.dns = Some(DnsConfig {
            servers: vec!["10.96.0.10".into(), "fd00::a".into()],
            searches: vec!["default.svc.cluster.local".into()],
            options: vec!["ndots:5".into(), "single-request-reopen".into()],
        });
        p.port_mappings = vec![
            port(80, 8080, "tcp", ""),
            port(53, 0, "udp", "0.0.0.0"),
            port(9, 9, "sctp", "::1"),
        ];
        p.resources = Resources {
            cpu_period: Some(100_000),
            cpu_quota: Some(50_000),
            cpu_shares: Some(1024),
            memory_limit: Some(1 << 30),
            ..Resources::default()
        };
        p.sysctls
            .insert("net.ipv4.ip_unprivileged_port_start".into(), "0".into());
        assert_eq!(validate(&p), Ok(()));
        p.cgroup_parent = "kubepods-burstable.slice".into();
        assert_eq!(validate(&p), Ok(()));
    }

    fn meta(p: &mut PodSpec) -> &mut PodMetadata {
        p.metadata.get_or_insert_default()
    }

    #[test]
    fn refuses_hostile_fields() {
        let big = "x".repeat(64 * 1024);
        type Case = (&'static str, Box<dyn Fn(&mut PodSpec)>, &'static str);
        let cases: Vec<Case> = vec![
            (
                "name /",
                Box::new(move |p| meta(p).name = "a/b".into()),
                "config.metadata.name",
            ),
            (
                "name ..",
                Box::new(move |p| meta(p).name = "..".into()),
                "config.metadata.name",
            ),
            (
                "name NUL",
                Box::new(move |p| meta(p).name = "a\0".into()),
                "config.metadata.name",
            ),
            (
                "uid newline",
                Box::new(move |p| meta(p).uid = "u\n".into()),
                "config.metadata.uid",
            ),
            (
                "namespace long",
                Box::new({
                    let b = big.clone();
                    move |p| meta(p).namespace = b.clone()
                }),
                "config.metadata.namespace",
            ),
            (
                "hostname /",
                Box::new(|p| p.hostname = "a/b".into()),
                "config.hostname",
            ),
            (
                "hostname newline",
                Box::new(|p| p.hostname = "a\n1.2.3.4 x".into()),
                "config.hostname",
            ),
            (
                "handler long",
                Box::new({
                    let b = big.clone();
                    move |p| p.runtime_handler = b.clone()
                }),
                "runtime_handler",
            ),
            (
                "handler NUL",
                Box::new(|p| p.runtime_handler = "x\0".into()),
                "runtime_handler",
            ),
            (
                "log relative",
                Box::new(|p| p.log_directory = "logs".into()),
                "config.log_directory",
            ),
            (
                "log ..",
                Box::new(|p| p.log_directory = "/var/log/pods/../..".into()),
                "config.log_directory",
            ),
            (
                "log NUL",
                Box::new(|p| p.log_directory = "/a\0".into()),
                "config.log_directory",
            ),
            (
                "cgroup ..",
                Box::new(|p| p.cgroup_parent = "/a/../../b".into()),
                "config.linux.cgroup_parent",
            ),
            (
                "cgroup relative",
                Box::new(|p| p.cgroup_parent = "a/b".into()),
                "config.linux.cgroup_parent",
            ),
            (
                "cgroup slice with /",
                Box::new(|p| p.cgroup_parent = "../x.slice".into()),
                "config.linux.cgroup_parent",
            ),
            (
                "cgroup newline",
                Box::new(|p| p.cgroup_parent = "/a\nb".into()),
                "config.linux.cgroup_parent",
            ),
            (
                "dns option newline",
                Box::new(|p| {
                    p.dns.get_or_insert_default().options = vec!["a\nnameserver 1.1.1.1".into()]
                }),
                "config.dns_config.options",
            ),
            (
                "dns search space",
                Box::new(|p| p.dns.get_or_insert_default().searches = vec!["a b".into()]),
                "config.dns_config.searches",
            ),
            (
                "dns server name",
                Box::new(|p| p.dns.get_or_insert_default().servers = vec!["dns".into()]),
                "config.dns_config.servers",
            ),
            (
                "dns too many",
                Box::new(|p| p.dns.get_or_insert_default().options = vec!["a".into(); 33]),
                "config.dns_config.options",
            ),
            (
                "port 0",
                Box::new(|p| p.port_mappings = vec![port(0, 1, "tcp", "")]),
                "config.port_mappings[0].container_port",
            ),
            (
                "host port 65536",
                Box::new(|p| p.port_mappings = vec![port(1, 65536, "tcp", "")]),
                "config.port_mappings[0].host_port",
            ),
            (
                "protocol",
                Box::new(|p| p.port_mappings = vec![port(1, 1, "icmp", "")]),
                "config.port_mappings[0].protocol",
            ),
            (
                "host ip",
                Box::new(|p| p.port_mappings = vec![port(1, 1, "tcp", "1.2.3")]),
                "config.port_mappings[0].host_ip",
            ),
            (
                "second port",
                Box::new(|p| p.port_mappings = vec![port(1, 1, "tcp", ""), port(1, -1, "tcp", "")]),
                "config.port_mappings[1].host_port",
            ),
            (
                "cpu_period",
                Box::new(|p| p.resources.cpu_period = Some(999)),
                "config.linux.resources.cpu_period",
            ),
            (
                "cpu_quota",
                Box::new(|p| p.resources.cpu_quota = Some(999)),
                "config.linux.resources.cpu_quota",
            ),
            (
                "cpu_shares",
                Box::new(|p| p.resources.cpu_shares = Some(262_145)),
                "config.linux.resources.cpu_shares",
            ),
            (
                "memory",
                Box::new(|p| p.resources.memory_limit = Some(-1)),
                "config.linux.resources.memory_limit_in_bytes",
            ),
            (
                "sysctl value newline",
                Box::new(|p| {
                    p.sysctls
                        .insert("net.ipv4.ip_unprivileged_port_start".into(), "0\n1".into());
                }),
                "config.linux.sysctls",
            ),
            (
                "sysctl value empty",
                Box::new(|p| {
                    p.sysctls
                        .insert("net.ipv4.ip_unprivileged_port_start".into(), String::new());
                }),
                "config.linux.sysctls",
            ),
            (
                "sysctl key newline",
                Box::new(|p| {
                    p.sysctls.insert("net.ipv4.ip_forward\n".into(), "1".into());
                }),
                "config.linux.sysctls",
            ),
            (
                "sysctl unknown",
                Box::new(|p| {
                    p.sysctls
                        .insert("net.ipv4.no_such_sysctl".into(), "1".into());
                }),
                "config.linux.sysctls",
            ),
        ];
        for (label, breaks, field) in cases {
            let mut p = pod();
            breaks(&mut p);
            let err = validate(&p).err();
            assert_eq!(
                err.as_ref().map(|e| e.field.as_str()),
                Some(field),
                "{label}"
            );
            let shown = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(shown.len() < 512, "{label}: a {} byte message", shown.len());
        }
    }

    #[test]
    fn resources_of_an_update_name_their_field() {
        let r = Resources {
            cpu_period: Some(1 << 40),
            ..Resources::default()
        };
        let e = validate_resources("resources", &r).err();
        assert_eq!(e.map(|e| e.field), Some("resources.cpu_period".into()));
        assert_eq!(
            validate_resources("resources", &Resources::default()),
            Ok(())
        );
    }

    #[test]
    fn raw_resources_refuse_what_conversion_would_drop() {
        let kubelet = RawResources {
            cpu_period: 100_000,
            cpu_quota: -1,
            cpu_shares: 2,
            oom_score_adj: -997,
            hugepage_sizes: vec!["2MB", "1GB", "64KB"],
            unified_keys: vec!["memory.high"],
            cpuset_cpus: "0-3,5",
            cpuset_mems: "0",
            ..RawResources::default()
        };
        assert_eq!(validate_raw_resources("r", &kubelet), Ok(()));
        assert_eq!(
            validate_raw_resources("r", &RawResources::default()),
            Ok(())
        );
        let cases: Vec<(RawResources<'_>, &str)> = vec![
            (
                RawResources {
                    cpu_period: -1,
                    ..RawResources::default()
                },
                "r.cpu_period",
            ),
            (
                RawResources {
                    cpu_quota: -2,
                    ..RawResources::default()
                },
                "r.cpu_quota",
            ),
            (
                RawResources {
                    cpu_shares: -1,
                    ..RawResources::default()
                },
                "r.cpu_shares",
            ),
            (
                RawResources {
                    memory_limit_in_bytes: -1,
                    ..RawResources::default()
                },
                "r.memory_limit_in_bytes",
            ),
            (
                RawResources {
                    oom_score_adj: 1001,
                    ..RawResources::default()
                },
                "r.oom_score_adj",
            ),
            (
                RawResources {
                    hugepage_sizes: vec!["3KB"],
                    ..RawResources::default()
                },
                "r.hugepage_limits",
            ),
            (
                RawResources {
                    hugepage_sizes: vec!["../2MB"],
                    ..RawResources::default()
                },
                "r.hugepage_limits",
            ),
            (
                RawResources {
                    hugepage_sizes: vec!["MB"],
                    ..RawResources::default()
                },
                "r.hugepage_limits",
            ),
            (
                RawResources {
                    unified_keys: vec![".."],
                    ..RawResources::default()
                },
                "r.unified",
            ),
            (
                RawResources {
                    unified_keys: vec!["../x"],
                    ..RawResources::default()
                },
                "r.unified",
            ),
            (
                RawResources {
                    cpuset_cpus: "0-\n",
                    ..RawResources::default()
                },
                "r.cpuset_cpus",
            ),
            (
                RawResources {
                    cpuset_mems: "3-1",
                    ..RawResources::default()
                },
                "r.cpuset_mems",
            ),
        ];
        for (raw, field) in cases {
            let e = validate_raw_resources("r", &raw).err();
            assert_eq!(e.map(|e| e.field), Some(field.to_owned()), "{raw:?}");
        }
    }

    #[test]
    fn seccomp_profiles_are_checked_and_named() {
        let dir = tempfile::tempdir().expect("tempdir");
        let write = |name: &str, text: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, text).expect("write");
            p.to_string_lossy().into_owned()
        };
        let good = write(
            "good.json",
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],
                "action":"SCMP_ACT_ERRNO","errnoRet":28,
                "args":[{"index":0,"value":1,"op":"SCMP_CMP_EQ"}]}]}"#,
        );
        assert!(read_seccomp_profile("f", &good).is_ok());
        for (name, text) in [
            ("json.json", "{"),
            ("action.json", r#"{"defaultAction":"SCMP_ACT_NOPE"}"#),
            ("notify.json", r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#),
            (
                "names.json",
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"action":"SCMP_ACT_ERRNO"}]}"#,
            ),
            (
                "index.json",
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a"],"action":"SCMP_ACT_ERRNO","args":[{"index":6,"value":0,"op":"SCMP_CMP_EQ"}]}]}"#,
            ),
        ] {
            let path = write(name, text);
            let err = read_seccomp_profile("f", &path).expect_err(name);
            assert_eq!(err.field, "f");
            assert!(err.reason.contains(&path), "{name}: {}", err.reason);
        }
        let missing = dir.path().join("missing.json");
        let err = read_seccomp_profile("f", &missing.to_string_lossy()).expect_err("missing");
        assert!(err.reason.contains("missing.json"), "{}", err.reason);
        assert!(read_seccomp_profile("f", "relative.json").is_err());
    }

    #[test]
    fn seccomp_profile_refusals_name_the_key() {
        let reason = |text: &str| {
            let value: serde_json::Value = serde_json::from_str(text).expect("json");
            check_seccomp_profile(&value).expect_err(text).to_string()
        };
        assert_eq!(reason("[]"), "not a JSON object");
        assert_eq!(
            reason(r#"{"defaultAction":"SCMP_ACT_NOPE"}"#),
            r#"defaultAction: unknown or unsupported action "SCMP_ACT_NOPE""#
        );
        assert_eq!(
            reason(r#"{"defaultAction":"SCMP_ACT_ALLOW","architectures":[1]}"#),
            "architectures: 1 is not a string"
        );
        assert_eq!(
            reason(r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a"]}]}"#),
            "syscalls[0].action is missing"
        );
        assert_eq!(
            reason(
                r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["a"],
                    "action":"SCMP_ACT_ERRNO","args":[{"index":0,"valueTwo":-1,
                    "op":"SCMP_CMP_EQ"}]}]}"#
            ),
            "syscalls[0].args[0].valueTwo is not an unsigned 64-bit number"
        );
    }

    #[test]
    fn systemd_parents_are_slices() {
        let slice = |p: &str| systemd_slice(p, "crius.slice");
        assert_eq!(slice("").as_deref(), Ok("crius.slice"));
        assert_eq!(
            slice("kubepods-besteffort-pod1.slice").as_deref(),
            Ok("kubepods-besteffort-pod1.slice")
        );
        assert_eq!(
            slice("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1.slice")
                .as_deref(),
            Ok("kubepods-besteffort-pod1.slice")
        );
        for bad in [
            "/kubepods/besteffort/pod1",
            "/kubepods.slice/kubepods-burstable.slice/kubepods-besteffort-pod1.slice",
            "/x/kubepods.slice",
            "kubepods",
            "crius-1.scope",
            "a--b.slice",
        ] {
            let err = slice(bad).expect_err(bad);
            assert_eq!(err.field, "config.linux.cgroup_parent");
            assert!(err.reason.contains("systemd"), "{}", err.reason);
        }
    }

    #[test]
    fn cgroup_parent_stays_out_of_crius_cgroups() {
        for ok in [
            "",
            "/kubepods/burstable/pod1",
            "/crius",
            "kubepods-pod1.slice",
            "/crius-hostile-0a1b",
            "/crius/crius-0123abcd",
        ] {
            assert_eq!(validate_cgroup_parent(ok), Ok(()), "{ok}");
        }
        for bad in [
            "/crius-monitors",
            "/crius-monitors/x",
            "/crius/crius-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "/kubepods/crius-0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef/x",
            "crius-monitors.slice",
        ] {
            let err = validate_cgroup_parent(bad).expect_err(bad);
            assert_eq!(err.field, "config.linux.cgroup_parent");
        }
    }

    #[test]
    fn log_paths_stay_beneath_the_log_directory() {
        for ok in ["", "c/0.log", "0.log", "a b/x.log"] {
            assert_eq!(validate_log_path("log_path", ok), Ok(()), "{ok}");
        }
        for bad in [
            "/etc/profile",
            "../x",
            "c/../../x",
            "c//x",
            "./x",
            "c/x\n",
            "a\0",
        ] {
            assert!(validate_log_path("log_path", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn shown_cuts_long_values() {
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        let long = "é".repeat(100);
        let cut = shown(&long);
        assert!(cut.ends_with("... (200 bytes)"), "{cut}");
        assert!(cut.len() < 100, "{cut}");
    }
}
