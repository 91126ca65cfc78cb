//! Validation of RunPodSandbox against the CRI contract (not kubelet's allocation policy).

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
    if spec.hostname.len() > HOST_NAME_MAX || spec.hostname.contains('\0') {
        return Err(invalid(
            "config.hostname",
            format!("must be at most {HOST_NAME_MAX} bytes without NUL"),
        ));
    }
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
                if ns.network == NamespaceMode::Node {
                    return Err(invalid(
                        USERNS,
                        "a user namespace with host network is not supported by crius \
                         (the runtime feature user_namespaces_host_network is false)",
                    ));
                }
            }
            NamespaceMode::Container | NamespaceMode::Target => {
                return Err(invalid(
                    &format!("{USERNS}.mode"),
                    "only POD and NODE are supported for a pod sandbox",
                ));
            }
        }
    }
    for key in spec.sysctls.keys() {
        validate_sysctl(key, ns.network, ns.ipc)?;
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

/// A pod sysctl must be namespaced, in a namespace the pod has of its own.
fn validate_sysctl(key: &str, network: NamespaceMode, ipc: NamespaceMode) -> Result<(), Invalid> {
    let field = "config.linux.sysctls";
    if crius_proto::sysctl_path(key).is_none() {
        return Err(invalid(field, format!("{key:?} is not a sysctl name")));
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
            format!("{key} is not a namespaced sysctl and would change the whole node"),
        ));
    };
    if mode == NamespaceMode::Node {
        return Err(invalid(
            field,
            format!("{key} would change the host's {needs} namespace, which the pod shares"),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{PodMetadata, UsernsOptions};

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
        let mut spec = with_userns(NamespaceMode::Pod, ok.clone(), ok);
        spec.namespaces.network = NamespaceMode::Node;
        assert_eq!(field_of(&spec), USERNS);
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
}
