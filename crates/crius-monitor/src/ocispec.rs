//! The OCI runtime spec (oci-spec types) of a container, as handed to libcontainer.

use std::path::Path;

use crius_proto::{CapabilityRequest, ContainerSpec};
use oci_spec::runtime::Spec;
use serde_json::{Value, json};

use crate::identity::Identity;
use crate::seccomp::SeccompError;

/// The capabilities a container gets by default (the same set as containerd's).
pub(crate) const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability a privileged container gets.
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

const DEFAULT_MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const DEFAULT_READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn normalize_cap(name: &str) -> String {
    let upper = name.to_ascii_uppercase();
    if upper == "ALL" || upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// "All" capabilities: those this monitor's bounding set holds (as containerd does). A node
/// whose criusd lacks one (say CAP_SYS_RESOURCE) could not give it, and asking libcontainer
/// for it fails the container.
fn all_caps() -> Vec<String> {
    let bounding = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapBnd:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(u64::MAX);
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding & (1u64 << bit) != 0)
        .map(|(_, c)| (*c).to_owned())
        .collect()
}

/// Why a container's runtime spec cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    /// A capability to add or drop that Linux does not have.
    #[error("unknown capability {name:?}")]
    UnknownCapability {
        /// The name, normalized to `CAP_…`.
        name: String,
    },
    /// The seccomp profile cannot be turned into a filter.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// A device the container is given cannot be named by a device rule.
    #[error(transparent)]
    Devices(#[from] crate::devices::DeviceError),
    /// The seccomp filter cannot be encoded.
    #[error("cannot encode the seccomp filter: {source}")]
    EncodeSeccomp {
        /// serde's error.
        source: serde_json::Error,
    },
    /// The spec's JSON is not an OCI runtime spec.
    #[error("cannot build the runtime spec: {source}")]
    Build {
        /// serde's error.
        source: serde_json::Error,
    },
}

/// The capability set after the request's add and drop (drop of `ALL` first, then adds).
pub(crate) fn capabilities(
    req: &CapabilityRequest,
    privileged: bool,
) -> Result<Vec<String>, SpecError> {
    if privileged {
        return Ok(all_caps());
    }
    let adds: Vec<String> = req.add.iter().map(|c| normalize_cap(c)).collect();
    let drops: Vec<String> = req.drop.iter().map(|c| normalize_cap(c)).collect();
    for cap in adds.iter().chain(&drops) {
        if cap != "ALL" && !ALL_CAPS.contains(&cap.as_str()) {
            return Err(SpecError::UnknownCapability { name: cap.clone() });
        }
    }
    let mut caps: Vec<String> = if adds.iter().any(|c| c == "ALL") {
        all_caps()
    } else {
        DEFAULT_CAPS.iter().map(|c| (*c).to_owned()).collect()
    };
    if drops.iter().any(|c| c == "ALL") {
        caps.clear();
    }
    caps.retain(|c| !drops.contains(c));
    for cap in adds.into_iter().filter(|c| c != "ALL") {
        if !caps.contains(&cap) {
            caps.push(cap);
        }
    }
    Ok(caps)
}

/// Where the container's namespaces come from.
pub(crate) struct Namespaces<'a> {
    /// The sandbox (pause) process.
    pub(crate) sandbox_pid: i32,
    /// The pod has its own user namespace.
    pub(crate) userns: bool,
    /// The pod has its own network namespace.
    pub(crate) net: bool,
    /// The pod has its own IPC namespace.
    pub(crate) ipc: bool,
    /// The pod has its own PID namespace.
    pub(crate) pid: bool,
    /// A container whose PID namespace to join (pid TARGET), by its first process.
    pub(crate) pid_target: Option<i32>,
    /// The pod's directory (hostname, hosts, resolv.conf, shm).
    pub(crate) pod_dir: &'a Path,
    /// Replacement sources (idmapped clones) for pod files by their layout name.
    pub(crate) pod_files: &'a std::collections::BTreeMap<String, std::path::PathBuf>,
    /// The pod has a `/dev/shm` tmpfs.
    pub(crate) shm: bool,
    /// On the host network: the host's `/sys` tree, already read-only in every submount, that
    /// the container binds (none: the host's `/sys` itself, for privileged containers).
    pub(crate) host_sys: Option<&'a Path>,
    /// On a cgroup v1 or hybrid node: crius' view of the container's cgroups, bound at
    /// `/sys/fs/cgroup` (none: a cgroup mount in the container's cgroup namespace).
    pub(crate) cgroup_view: Option<&'a Path>,
    /// The pod's open-files limit (soft, hard), set on the container's process (none: it
    /// inherits the monitor's).
    pub(crate) open_files: Option<(u64, u64)>,
}

/// The OCI `hooks` object; libcontainer runs each at its point.
fn hooks(h: &crius_proto::Hooks) -> Value {
    let list = |hooks: &[crius_proto::Hook]| -> Value {
        hooks
            .iter()
            .map(|k| {
                json!({"path": k.path, "args": (!k.args.is_empty()).then_some(&k.args),
                       "env": (!k.env.is_empty()).then_some(&k.env), "timeout": k.timeout})
            })
            .collect()
    };
    json!({
        "prestart": list(&h.prestart),
        "createRuntime": list(&h.create_runtime),
        "createContainer": list(&h.create_container),
        "startContainer": list(&h.start_container),
        "poststart": list(&h.poststart),
        "poststop": list(&h.poststop),
    })
}

/// Builds the spec: rootfs `rootfs`, identity `id`, cgroup `cgroups_path`, the device rules
/// `devices` ([`crate::devices::rules`]; `None`: every device).
pub(crate) fn build(
    spec: &ContainerSpec,
    ns: &Namespaces<'_>,
    id: &Identity,
    cgroups_path: &str,
    devices: Option<&[crate::devices::Rule]>,
) -> Result<Spec, SpecError> {
    let caps = capabilities(&spec.capabilities, spec.privileged)?;
    // A privileged container runs without a filter, as in other CRI runtimes (critest checks
    // that a profile is ignored then).
    let profile = if spec.privileged {
        &crius_proto::SeccompProfile::Unconfined
    } else {
        &spec.seccomp
    };
    let seccomp = crate::seccomp::linux_seccomp(profile, &caps)?
        .map(|s| serde_json::to_value(s).map_err(|source| SpecError::EncodeSeccomp { source }))
        .transpose()?;
    let by_path = |kind: &str| format!("/proc/{}/ns/{kind}", ns.sandbox_pid);
    let mut namespaces = vec![json!({"type": "mount"})];
    if ns.userns {
        namespaces.push(json!({"type": "user", "path": by_path("user")}));
    }
    if ns.net {
        namespaces.push(json!({"type": "network", "path": by_path("net")}));
    }
    if ns.ipc {
        namespaces.push(json!({"type": "ipc", "path": by_path("ipc")}));
    }
    namespaces.push(json!({"type": "uts", "path": by_path("uts")}));
    // A cgroup namespace of its own, rooted at the container's cgroup: the container sees its
    // own cgroup (and limits) at /sys/fs/cgroup, not the node's tree.
    namespaces.push(json!({"type": "cgroup"}));
    if let Some(target) = ns.pid_target {
        namespaces.push(json!({"type": "pid", "path": format!("/proc/{target}/ns/pid")}));
    } else if spec.own_pid_ns {
        namespaces.push(json!({"type": "pid"}));
    } else if ns.pid {
        namespaces.push(json!({"type": "pid", "path": by_path("pid")}));
    }
    let pod_file = |name: &str| {
        ns.pod_files
            .get(name)
            .cloned()
            .unwrap_or_else(|| ns.pod_dir.join(name))
            .to_string_lossy()
            .into_owned()
    };
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
    ];
    // A sysfs of its own where the container's user namespace owns its network namespace (or
    // it has none); else a bind of the host's (crius' read-only copy unless privileged).
    if ns.net || !ns.userns {
        mounts.push(
            json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
                           "options": ["nosuid", "noexec", "nodev", "ro"]}),
        );
    } else {
        let source = ns.host_sys.unwrap_or(Path::new("/sys")).to_string_lossy();
        mounts.push(
            json!({"destination": "/sys", "type": "bind", "source": source,
                           "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}),
        );
    }
    // The container's own cgroup, read-only unless privileged: on cgroup v2 the cgroup2
    // filesystem of its namespace, on v1 each controller's directory of the container.
    let cgroup_access = if spec.privileged { "rw" } else { "ro" };
    let cgroup_mount = match ns.cgroup_view {
        // v1 or hybrid: crius' own view (libcontainer's v1 cgroup mount looks the container's
        // cgroups up by its pid in the pod's pid namespace, on the host's /proc).
        Some(view) => json!({"destination": "/sys/fs/cgroup", "type": "bind",
                             "source": view.to_string_lossy(),
                             "options": ["rbind", "rprivate", cgroup_access]}),
        None => json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
                       "options": ["nosuid", "noexec", "nodev", "relatime", cgroup_access]}),
    };
    mounts.push(cgroup_mount);
    if ns.shm {
        mounts.push(json!({"destination": "/dev/shm", "type": "bind",
                           "source": pod_file(crius_proto::layout::SHM),
                           "options": ["rbind", "nosuid", "noexec", "nodev"]}));
    } else {
        mounts.push(
            json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
                           "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]}),
        );
    }
    // The pod's own files are part of the container's root: read-only with it. They come from
    // a disk, which gives them neither nosuid, nodev nor noexec: the binds do.
    let pod_files_access = if spec.readonly_rootfs { "ro" } else { "rw" };
    for (dest, name) in [
        ("/etc/hostname", crius_proto::layout::HOSTNAME),
        ("/etc/hosts", crius_proto::layout::HOSTS),
        ("/etc/resolv.conf", crius_proto::layout::RESOLV_CONF),
    ] {
        mounts.push(
            json!({"destination": dest, "type": "bind", "source": pod_file(name),
                           "options": ["rbind", "rprivate", "nosuid", "nodev", "noexec",
                                       pod_files_access]}),
        );
    }
    for m in &spec.mounts {
        let propagation = match m.propagation.as_str() {
            "rslave" => "rslave",
            "rshared" => "rshared",
            _ => "rprivate",
        };
        let mut options = vec!["rbind", propagation];
        if m.readonly {
            options.push("ro");
        }
        // Only restricting flags (a CDI mount's); anything else was refused by criusd.
        options.extend(
            m.flags
                .iter()
                .map(String::as_str)
                .filter(|f| matches!(*f, "nosuid" | "nodev" | "noexec")),
        );
        mounts.push(json!({"destination": m.container_path, "type": "bind",
                           "source": m.host_path, "options": options}));
    }
    let (masked, readonly): (Vec<String>, Vec<String>) = if spec.privileged {
        (Vec::new(), Vec::new())
    } else {
        (
            spec.masked_paths
                .clone()
                .unwrap_or_else(|| DEFAULT_MASKED.iter().map(|p| (*p).to_owned()).collect()),
            spec.readonly_paths
                .clone()
                .unwrap_or_else(|| DEFAULT_READONLY.iter().map(|p| (*p).to_owned()).collect()),
        )
    };
    let cwd = if spec.working_dir.is_empty() {
        "/".to_owned()
    } else {
        spec.working_dir.clone()
    };
    let env: Vec<String> = spec
        .env
        .iter()
        .map(|e| String::from_utf8_lossy(e).into_owned())
        .collect();
    let mut resources = serde_json::Map::new();
    let r = &spec.resources;
    let mut cpu = serde_json::Map::new();
    if let Some(v) = r.cpu_shares {
        cpu.insert("shares".into(), json!(v));
    }
    if let Some(v) = r.cpu_quota {
        cpu.insert("quota".into(), json!(v));
    }
    if let Some(v) = r.cpu_period {
        cpu.insert("period".into(), json!(v));
    }
    if !cpu.is_empty() {
        resources.insert("cpu".into(), Value::Object(cpu));
    }
    if let Some(v) = r.memory_limit.filter(|v| *v > 0) {
        resources.insert("memory".into(), json!({"limit": v}));
    }
    if let Some(rules) = devices {
        let mut list = vec![json!({"allow": false, "access": "rwm"})];
        list.extend(rules.iter().map(crate::devices::Rule::oci));
        resources.insert("devices".into(), Value::Array(list));
    }
    let devices: Vec<Value> = spec
        .devices
        .iter()
        .map(|d| {
            json!({"path": d.container_path, "type": d.kind, "major": d.major,
                   "minor": d.minor, "fileMode": d.file_mode,
                   "uid": d.uid.unwrap_or(0), "gid": d.gid.unwrap_or(0)})
        })
        .collect();
    // A mount that receives (or shares) propagation needs the rootfs to be a slave (shared)
    // mount too, else the events never reach it.
    // (libcontainer's values; its default, a slave root, serves private mounts too.)
    let rootfs_propagation = if spec.mounts.iter().any(|m| m.propagation == "rshared") {
        Some("shared")
    } else if spec.mounts.iter().any(|m| m.propagation == "rslave") {
        Some("slave")
    } else {
        None
    };
    let hooks = (!spec.hooks.is_empty()).then(|| hooks(&spec.hooks));
    let value = json!({
        "ociVersion": "1.0.2",
        "hooks": hooks,
        "root": {"path": "rootfs", "readonly": spec.readonly_rootfs},
        "hostname": null,
        "process": {
            "terminal": spec.tty,
            "user": {"uid": id.uid, "gid": id.gid, "additionalGids": id.groups},
            "args": spec.args,
            "env": env,
            "cwd": cwd,
            // libcontainer installs the seccomp filter before dropping capabilities only
            // when this is absent; with `false` it would do so after, and fail (EACCES).
            "noNewPrivileges": spec.no_new_privs.then_some(true),
            // libcontainer's init asks the kernel for it at its exec.
            "apparmorProfile": spec.apparmor_profile,
            "capabilities": {
                "bounding": caps, "effective": caps, "permitted": caps,
                "inheritable": [], "ambient": [],
            },
            "rlimits": ns.open_files.map(|(soft, hard)| {
                json!([{"type": "RLIMIT_NOFILE", "soft": soft, "hard": hard}])
            }),
        },
        "mounts": mounts,
        "linux": {
            "namespaces": namespaces,
            "cgroupsPath": cgroups_path,
            "devices": devices,
            "rootfsPropagation": rootfs_propagation,
            "resources": resources,
            "maskedPaths": masked,
            "readonlyPaths": readonly,
            "seccomp": seccomp,
        },
    });
    serde_json::from_value(value).map_err(|source| SpecError::Build { source })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The device rules of `spec`.
    fn rules(spec: &ContainerSpec) -> Option<Vec<crate::devices::Rule>> {
        crate::devices::rules(spec).expect("rules")
    }

    /// A container spec for unit tests.
    pub(crate) fn spec() -> ContainerSpec {
        ContainerSpec {
            id: "c".into(),
            layers_root: "/l".into(),
            layer_dirs: vec!["/l/a".into()],
            args: vec!["sh".into()],
            env: vec![b"PATH=/bin".to_vec()],
            working_dir: String::new(),
            user: Default::default(),
            readonly_rootfs: true,
            log: None,
            mounts: vec![crius_proto::BindMount {
                host_path: "/h".into(),
                container_path: "/v".into(),
                readonly: true,
                idmap: false,
                propagation: "rslave".into(),
                recursive_read_only: false,
                flags: vec!["nosuid".into()],
                image: None,
            }],
            privileged: false,
            no_new_privs: true,
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
            seccomp: crius_proto::SeccompProfile::Unconfined,
            apparmor_profile: None,
            hooks: Default::default(),
        }
    }

    #[test]
    fn joins_the_sandbox_namespaces_by_path() {
        let files = std::collections::BTreeMap::new();
        let ns = Namespaces {
            sandbox_pid: 42,
            userns: true,
            net: true,
            ipc: true,
            pid: true,
            pid_target: None,
            pod_dir: Path::new("/pod"),
            pod_files: &files,
            shm: true,
            host_sys: None,
            cgroup_view: None,
            open_files: Some((1024, 524_288)),
        };
        let id = Identity {
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: "/".into(),
        };
        let confined = ContainerSpec {
            apparmor_profile: Some("crius-default".into()),
            ..spec()
        };
        let oci = build(
            &confined,
            &ns,
            &id,
            "/crius/crius-p/crius-c",
            rules(&spec()).as_deref(),
        )
        .expect("spec");
        let v = serde_json::to_value(&oci).expect("json");
        assert_eq!(v["process"]["apparmorProfile"], "crius-default");
        assert_eq!(
            v["process"]["rlimits"],
            serde_json::json!([{"type": "RLIMIT_NOFILE", "soft": 1024, "hard": 524_288}])
        );
        let namespaces = v["linux"]["namespaces"].as_array().expect("namespaces");
        for kind in ["user", "network", "ipc", "uts", "pid"] {
            assert!(
                namespaces.iter().any(|n| n["type"] == kind
                    && n["path"]
                        .as_str()
                        .is_some_and(|p| p.starts_with("/proc/42/ns/"))),
                "{kind}: {namespaces:?}"
            );
        }
        assert!(
            namespaces
                .iter()
                .any(|n| n["type"] == "mount" && n.get("path").is_none())
        );
        assert_eq!(v["linux"]["cgroupsPath"], "/crius/crius-p/crius-c");
        assert_eq!(v["linux"]["rootfsPropagation"], "slave");
        assert_eq!(v["root"]["readonly"], true);
        for file in ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"] {
            let mount = v["mounts"]
                .as_array()
                .and_then(|m| m.iter().find(|m| m["destination"] == file))
                .unwrap_or_else(|| panic!("{file} is mounted"));
            assert!(
                mount["options"]
                    .as_array()
                    .is_some_and(|o| o.contains(&json!("ro"))),
                "{file} is read-only with the root: {mount}"
            );
            for flag in ["nosuid", "nodev", "noexec"] {
                assert!(
                    mount["options"]
                        .as_array()
                        .is_some_and(|o| o.contains(&json!(flag))),
                    "{file}: {flag}: {mount}"
                );
            }
        }
        assert_eq!(v["process"]["noNewPrivileges"], true);
        assert!(
            v["linux"].get("uidMappings").is_none(),
            "the userns is joined, not made"
        );
    }

    #[test]
    fn cdi_edits_reach_the_spec() {
        let files = std::collections::BTreeMap::new();
        let ns = Namespaces {
            sandbox_pid: 42,
            userns: false,
            net: true,
            ipc: true,
            pid: true,
            pid_target: None,
            pod_dir: Path::new("/pod"),
            pod_files: &files,
            shm: true,
            host_sys: None,
            cgroup_view: None,
            open_files: None,
        };
        let id = Identity {
            uid: 0,
            gid: 0,
            groups: vec![0],
            home: "/".into(),
        };
        // Without hooks there is no hooks object.
        let plain = serde_json::to_value(
            build(&spec(), &ns, &id, "/c", rules(&spec()).as_deref()).expect("spec"),
        )
        .expect("json");
        assert!(plain.get("hooks").is_none_or(Value::is_null), "{plain}");
        let mut spec = spec();
        spec.hooks.poststart.push(crius_proto::Hook {
            path: "/bin/true".into(),
            args: vec!["true".into(), "x".into()],
            env: Vec::new(),
            timeout: Some(5),
        });
        let node = |path: &str, permissions: &str| crius_proto::DeviceSpec {
            container_path: path.into(),
            kind: "c".into(),
            major: 1,
            minor: 3,
            file_mode: 0o666,
            permissions: permissions.into(),
            uid: Some(7),
            gid: None,
        };
        spec.devices = vec![node("/dev/a", "rw"), node("/dev/b", "")];
        let oci = build(&spec, &ns, &id, "/crius/crius-c", rules(&spec).as_deref()).expect("spec");
        let v = serde_json::to_value(&oci).expect("json");
        let hook = &v["hooks"]["poststart"][0];
        assert_eq!(hook["path"], "/bin/true");
        assert_eq!(hook["args"], json!(["true", "x"]));
        assert_eq!(hook["timeout"], 5);
        let devices = v["linux"]["devices"].as_array().expect("devices");
        assert_eq!(devices.len(), 2);
        assert_eq!(devices[0]["uid"], 7);
        assert_eq!(devices[0]["gid"], 0);
        let rules = v["linux"]["resources"]["devices"]
            .as_array()
            .expect("rules");
        assert_eq!(
            rules.iter().filter(|r| r["access"] == "rw").count(),
            1,
            "{rules:?}"
        );
        assert!(rules.iter().all(|r| r["access"] != ""), "{rules:?}");
        let bind = v["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .find(|m| m["destination"] == "/v")
            .expect("the bind");
        assert!(
            bind["options"]
                .as_array()
                .expect("options")
                .contains(&json!("nosuid")),
            "{bind}"
        );
    }

    #[test]
    fn caps_add_and_drop() {
        let req = CapabilityRequest {
            add: vec!["sys_admin".into()],
            drop: vec!["CAP_CHOWN".into()],
        };
        let caps = capabilities(&req, false).expect("caps");
        assert!(caps.contains(&"CAP_SYS_ADMIN".to_owned()));
        assert!(!caps.contains(&"CAP_CHOWN".to_owned()));
        let req = CapabilityRequest {
            add: vec!["NET_ADMIN".into()],
            drop: vec!["ALL".into()],
        };
        assert_eq!(
            capabilities(&req, false).expect("caps"),
            vec!["CAP_NET_ADMIN"]
        );
        let bad = CapabilityRequest {
            add: vec!["BOGUS".into()],
            drop: vec![],
        };
        assert!(capabilities(&bad, false).is_err());
    }
}
