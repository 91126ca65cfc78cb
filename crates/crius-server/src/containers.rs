//! The container RPCs of the CRI `RuntimeService`: CRI requests mapped onto crius-runtime's
//! container records and the pod monitor's container spec.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cri_api::v1::*;
use crius_proto::{BindMount, CapabilityRequest, ContainerSpec, SeccompProfile, UserRequest};
use crius_runtime::{ContainerRecord, ContainerStateKind, ContainerView};
use tonic::Status;

use crate::Cri;
use crate::runtime::pod_error;

fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

fn unimplemented(what: &str) -> Status {
    Status::unimplemented(format!("{what} is not implemented by crius yet"))
}

/// The process arguments as kubelet expects them: `command` replaces the image's Entrypoint
/// (and then the image's Cmd is not used), `args` replaces its Cmd.
pub(crate) fn merge_args(
    command: &[String],
    args: &[String],
    entrypoint: &[String],
    cmd: &[String],
) -> Vec<String> {
    let (head, tail) = if command.is_empty() {
        (entrypoint, if args.is_empty() { cmd } else { args })
    } else {
        (command, args)
    };
    head.iter().chain(tail).cloned().collect()
}

/// The environment: the image's, then the request's (a later value of a name wins, in the
/// position of its first appearance). Values are bytes.
pub(crate) fn merge_env(image: &[String], request: &[KeyValue]) -> Vec<Vec<u8>> {
    let mut order: Vec<Vec<u8>> = Vec::new();
    let mut values: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let pairs = image
        .iter()
        .map(|e| match e.split_once('=') {
            Some((k, v)) => (k.as_bytes().to_vec(), v.as_bytes().to_vec()),
            None => (e.as_bytes().to_vec(), Vec::new()),
        })
        .chain(
            request
                .iter()
                .map(|kv| (kv.key.as_bytes().to_vec(), kv.value.clone())),
        );
    for (k, v) in pairs {
        if !values.contains_key(&k) {
            order.push(k.clone());
        }
        values.insert(k, v);
    }
    order
        .into_iter()
        .map(|k| {
            let mut e = k.clone();
            e.push(b'=');
            e.extend_from_slice(values.get(&k).map(Vec::as_slice).unwrap_or_default());
            e
        })
        .collect()
}

fn u32_id(field: &str, value: i64) -> Result<u32, Status> {
    u32::try_from(value).map_err(|_| invalid(field, format!("{value} is not a valid id")))
}

/// The seccomp profile the request asks for, and a refusal of what crius does not do,
/// clearly, instead of ignoring it. The deprecated profile fields are still read: a profile
/// named there must not be ignored either. A `Localhost` profile file is read and checked
/// here (InvalidArgument naming it).
#[allow(deprecated)]
fn check_security(sc: &LinuxContainerSecurityContext) -> Result<SeccompProfile, Status> {
    const F: &str = "config.linux.security_context";
    let localhost = |field: &str, path: &str| {
        crius_runtime::validate::read_seccomp_profile(field, path)
            .map(|profile| SeccompProfile::Localhost {
                path: path.to_owned(),
                profile,
            })
            .map_err(crate::runtime::invalid_status)
    };
    let seccomp = if let Some(p) = &sc.seccomp {
        match security_profile::ProfileType::try_from(p.profile_type) {
            Ok(security_profile::ProfileType::Unconfined) => SeccompProfile::Unconfined,
            Ok(security_profile::ProfileType::RuntimeDefault) => SeccompProfile::RuntimeDefault,
            Ok(security_profile::ProfileType::Localhost) => {
                localhost(&format!("{F}.seccomp.localhost_ref"), &p.localhost_ref)?
            }
            Err(_) => return Err(invalid(&format!("{F}.seccomp"), "unknown profile type")),
        }
    } else {
        let field = format!("{F}.seccomp_profile_path");
        match sc.seccomp_profile_path.as_str() {
            "" | "unconfined" => SeccompProfile::Unconfined,
            "runtime/default" | "docker/default" => SeccompProfile::RuntimeDefault,
            other => match other.strip_prefix("localhost/") {
                Some(path) => localhost(&field, path)?,
                None => {
                    return Err(invalid(
                        &field,
                        format!(
                            "{} is not unconfined, runtime/default or localhost/<path>",
                            crius_runtime::validate::shown(other)
                        ),
                    ));
                }
            },
        }
    };
    if let Some(p) = &sc.apparmor
        && p.profile_type != security_profile::ProfileType::Unconfined as i32
    {
        return Err(Status::failed_precondition(format!(
            "{F}.apparmor: this node has no AppArmor support in crius; only Unconfined works"
        )));
    }
    if !sc.apparmor_profile.is_empty() && sc.apparmor_profile != "unconfined" {
        return Err(Status::failed_precondition(format!(
            "{F}.apparmor_profile {:?}: only unconfined works",
            sc.apparmor_profile
        )));
    }
    if let Some(se) = &sc.selinux_options
        && (!se.r#type.is_empty()
            || !se.level.is_empty()
            || !se.user.is_empty()
            || !se.role.is_empty())
    {
        return Err(Status::failed_precondition(format!(
            "{F}.selinux_options: SELinux is not supported by crius"
        )));
    }
    Ok(seccomp)
}

/// The request's mounts. `pod_userns` is the pod's mapping (uids, gids), if it has a user
/// namespace: a mount carrying exactly that mapping is bound idmapped.
fn bind_mounts(
    mounts: &[Mount],
    pod_userns: Option<(
        &[crius_runtime::spec::IdRange],
        &[crius_runtime::spec::IdRange],
    )>,
) -> Result<Vec<BindMount>, Status> {
    let same = |maps: &[IdMapping], ranges: &[crius_runtime::spec::IdRange]| {
        maps.len() == ranges.len()
            && maps.iter().zip(ranges).all(|(m, r)| {
                m.host_id == r.host_id && m.container_id == r.container_id && m.length == r.length
            })
    };
    mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let field = format!("config.mounts[{i}]");
            if let Some(image) = &m.image {
                return image_volume(&field, m, image);
            }
            let idmap = !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty();
            if idmap {
                match pod_userns {
                    None => {
                        return Err(invalid(
                            &format!("{field}.uid_mappings"),
                            "the pod has no user namespace",
                        ));
                    }
                    Some((uids, gids))
                        if same(&m.uid_mappings, uids) && same(&m.gid_mappings, gids) => {}
                    Some(_) => {
                        return Err(unimplemented(&format!(
                            "{field}: id mappings other than the pod's own"
                        )));
                    }
                }
            }
            if m.recursive_read_only
                && (!m.readonly || m.propagation != MountPropagation::PropagationPrivate as i32)
            {
                return Err(invalid(
                    &format!("{field}.recursive_read_only"),
                    "needs readonly and private propagation",
                ));
            }
            let propagation = match MountPropagation::try_from(m.propagation) {
                Ok(MountPropagation::PropagationPrivate) => "rprivate",
                Ok(MountPropagation::PropagationHostToContainer) => "rslave",
                Ok(MountPropagation::PropagationBidirectional) => "rshared",
                Err(_) => {
                    return Err(invalid(
                        &format!("{field}.propagation"),
                        format!("unknown propagation {}", m.propagation),
                    ));
                }
            };
            if !m.container_path.starts_with('/') {
                return Err(invalid(
                    &format!("{field}.container_path"),
                    "must be absolute",
                ));
            }
            let host = PathBuf::from(&m.host_path);
            let real = std::fs::canonicalize(&host).map_err(|e| {
                invalid(
                    &format!("{field}.host_path"),
                    format!("{}: {e}", host.display()),
                )
            })?;
            if idmap && propagation != "rprivate" {
                return Err(unimplemented(&format!(
                    "{field}: idmapped mounts with propagation other than private"
                )));
            }
            Ok(BindMount {
                host_path: real,
                container_path: m.container_path.clone(),
                readonly: m.readonly,
                idmap,
                propagation: propagation.to_owned(),
                recursive_read_only: m.recursive_read_only,
                flags: Vec::new(),
                image: None,
            })
        })
        .collect()
}

/// An image volume as the request names it; the image is leased and its layers filled in by
/// CreateContainer. Always read-only; the sub path is relative and stays beneath the image.
fn image_volume(field: &str, m: &Mount, image: &ImageSpec) -> Result<BindMount, Status> {
    if image.image.is_empty() {
        return Err(invalid(&format!("{field}.image.image"), "is required"));
    }
    if !image.runtime_handler.is_empty() {
        return Err(invalid(
            &format!("{field}.image.runtime_handler"),
            "crius has only the default runtime handler \"\"",
        ));
    }
    if !m.container_path.starts_with('/') {
        return Err(invalid(
            &format!("{field}.container_path"),
            "must be absolute",
        ));
    }
    if !m.host_path.is_empty() {
        return Err(invalid(
            &format!("{field}.host_path"),
            "must be empty for an image volume",
        ));
    }
    if !m.uid_mappings.is_empty() || !m.gid_mappings.is_empty() {
        return Err(unimplemented(&format!(
            "{field}: id mappings on an image volume (it takes the pod's own)"
        )));
    }
    let sub = &m.image_sub_path;
    if sub.starts_with('/')
        || sub.chars().any(char::is_control)
        || sub.split('/').any(|c| c == "..")
    {
        return Err(invalid(
            &format!("{field}.image_sub_path"),
            format!(
                "{} must be a relative path beneath the image, without ..",
                crius_runtime::validate::shown(sub)
            ),
        ));
    }
    if m.propagation != MountPropagation::PropagationPrivate as i32 {
        return Err(invalid(
            &format!("{field}.propagation"),
            "an image volume is private",
        ));
    }
    Ok(BindMount {
        host_path: PathBuf::new(),
        container_path: m.container_path.clone(),
        readonly: true,
        idmap: false,
        propagation: "rprivate".to_owned(),
        recursive_read_only: false,
        flags: vec!["nosuid".into(), "nodev".into()],
        image: Some(crius_proto::ImageVolume {
            reference: image.image.clone(),
            image_id: String::new(),
            layer_dirs: Vec::new(),
            sub_path: sub.trim_matches('/').to_owned(),
        }),
    })
}

/// The cgroup limits of a container, after the same checks as a pod's: the raw values
/// ([`crate::runtime::check_resources`]) and then the kernel's limits. `prefix` names the
/// request field (`config.linux.resources` for CreateContainer, `linux` for
/// UpdateContainerResources).
pub(crate) fn container_resources(
    prefix: &str,
    res: &LinuxContainerResources,
) -> Result<crius_proto::Resources, Status> {
    crate::runtime::check_resources(prefix, res).map_err(crate::runtime::invalid_status)?;
    let resources = crius_proto::Resources {
        cpu_period: u64::try_from(res.cpu_period).ok().filter(|v| *v > 0),
        cpu_quota: (res.cpu_quota > 0).then_some(res.cpu_quota),
        cpu_shares: u64::try_from(res.cpu_shares).ok().filter(|v| *v > 0),
        memory_limit: (res.memory_limit_in_bytes > 0).then_some(res.memory_limit_in_bytes),
        memory_swap: (res.memory_swap_limit_in_bytes != 0)
            .then_some(res.memory_swap_limit_in_bytes),
        cpuset_cpus: (!res.cpuset_cpus.is_empty()).then(|| res.cpuset_cpus.clone()),
        cpuset_mems: (!res.cpuset_mems.is_empty()).then(|| res.cpuset_mems.clone()),
        hugepage_limits: res
            .hugepage_limits
            .iter()
            .map(|h| (h.page_size.clone(), h.limit))
            .collect(),
        unified: res.unified.clone().into_iter().collect(),
    };
    crius_runtime::validate::validate_resources(prefix, &resources)
        .map_err(crate::runtime::invalid_status)?;
    Ok(resources)
}

/// The limits in force as CRI reports them in ContainerStatus (0 or empty for what is unset).
fn cri_resources(
    res: &crius_proto::Resources,
    oom_score_adj: Option<i32>,
) -> LinuxContainerResources {
    let unsigned = |v: Option<u64>| v.and_then(|v| i64::try_from(v).ok()).unwrap_or(0);
    LinuxContainerResources {
        cpu_period: unsigned(res.cpu_period),
        cpu_quota: res.cpu_quota.unwrap_or(0),
        cpu_shares: unsigned(res.cpu_shares),
        memory_limit_in_bytes: res.memory_limit.unwrap_or(0),
        oom_score_adj: oom_score_adj.map_or(0, i64::from),
        cpuset_cpus: res.cpuset_cpus.clone().unwrap_or_default(),
        cpuset_mems: res.cpuset_mems.clone().unwrap_or_default(),
        hugepage_limits: res
            .hugepage_limits
            .iter()
            .map(|(page_size, limit)| HugepageLimit {
                page_size: page_size.clone(),
                limit: *limit,
            })
            .collect(),
        unified: res
            .unified
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        memory_swap_limit_in_bytes: res.memory_swap.unwrap_or(0),
    }
}

/// The request's devices: host nodes looked up for their type and numbers. Block devices are
/// refused in a user-namespaced pod (as Kubernetes documents).
fn devices(devices: &[Device], userns: bool) -> Result<Vec<crius_proto::DeviceSpec>, Status> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let field = format!("config.devices[{i}]");
            let meta = std::fs::metadata(&d.host_path).map_err(|e| {
                invalid(
                    &format!("{field}.host_path"),
                    format!("{}: {e}", d.host_path),
                )
            })?;
            let kind = if meta.file_type().is_char_device() {
                "c"
            } else if meta.file_type().is_block_device() {
                if userns {
                    return Err(invalid(
                        &field,
                        "block devices cannot be used in a pod with a user namespace",
                    ));
                }
                "b"
            } else {
                return Err(invalid(
                    &format!("{field}.host_path"),
                    format!("{} is not a device", d.host_path),
                ));
            };
            if !d.container_path.starts_with('/') {
                return Err(invalid(
                    &format!("{field}.container_path"),
                    "must be absolute",
                ));
            }
            if userns && d.container_path != d.host_path {
                // In a user namespace the node is bound from the host path of the same name.
                return Err(unimplemented(&format!(
                    "{field}: a device at another path than on the host in a user-namespaced pod"
                )));
            }
            let permissions = if d.permissions.is_empty() {
                "rwm".to_owned()
            } else if d.permissions.chars().all(|c| "rwm".contains(c)) {
                d.permissions.clone()
            } else {
                return Err(invalid(
                    &format!("{field}.permissions"),
                    format!("{:?} is not a subset of \"rwm\"", d.permissions),
                ));
            };
            let rdev = meta.rdev();
            Ok(crius_proto::DeviceSpec {
                container_path: d.container_path.clone(),
                kind: kind.to_owned(),
                major: i64::from(libc::major(rdev)),
                minor: i64::from(libc::minor(rdev)),
                file_mode: meta.mode() & 0o7777,
                permissions,
                uid: None,
                gid: None,
            })
        })
        .collect()
}

fn cri_state(kind: ContainerStateKind) -> i32 {
    match kind {
        ContainerStateKind::Created => ContainerState::ContainerCreated,
        ContainerStateKind::Running => ContainerState::ContainerRunning,
        ContainerStateKind::Exited => ContainerState::ContainerExited,
        ContainerStateKind::Unknown => ContainerState::ContainerUnknown,
    }
    .into()
}

fn cri_mounts(r: &ContainerRecord) -> Vec<Mount> {
    r.mounts
        .iter()
        .map(|m| Mount {
            container_path: m.container_path.clone(),
            host_path: m.host_path.to_string_lossy().into_owned(),
            image: m.image.as_ref().map(|i| ImageSpec {
                image: i.reference.clone(),
                ..ImageSpec::default()
            }),
            image_sub_path: m
                .image
                .as_ref()
                .map(|i| i.sub_path.clone())
                .unwrap_or_default(),
            readonly: m.readonly,
            recursive_read_only: m.recursive_read_only,
            propagation: match m.propagation.as_str() {
                "rslave" => MountPropagation::PropagationHostToContainer,
                "rshared" => MountPropagation::PropagationBidirectional,
                _ => MountPropagation::PropagationPrivate,
            }
            .into(),
            ..Mount::default()
        })
        .collect()
}

fn container_of(v: &ContainerView) -> Container {
    let r = &v.record;
    Container {
        id: r.id.clone(),
        pod_sandbox_id: r.pod_id.clone(),
        metadata: Some(ContainerMetadata {
            name: r.name.clone(),
            attempt: r.attempt,
        }),
        image: Some(image_spec_of(r)),
        image_ref: image_ref_of(r),
        state: cri_state(v.state),
        created_at: r.created_at_ns,
        labels: r.labels.clone().into_iter().collect(),
        annotations: r.annotations.clone().into_iter().collect(),
        image_id: r.image_id.clone(),
    }
}

/// ContainerStatus' reason for a container whose image has files owned beyond its pod's user
/// namespace.
const UNMAPPED_IDS: &str = "ImageIdsOutsideUserNamespace";

/// The warning for an image whose files are owned by ids the pod's user namespace does not map
/// (they show as nobody inside and cannot be changed there), or none.
fn unmapped_ids_warning(
    image: &str,
    (uids, gids): (
        &[crius_runtime::spec::IdRange],
        &[crius_runtime::spec::IdRange],
    ),
    (uid, gid): (u32, u32),
) -> Option<String> {
    let mapped = |ranges: &[crius_runtime::spec::IdRange], id: u32| {
        ranges.iter().any(|r| r.to_host(id).is_some())
    };
    let length = |ranges: &[crius_runtime::spec::IdRange]| -> u64 {
        ranges.iter().map(|r| u64::from(r.length)).sum()
    };
    if mapped(uids, uid) && mapped(gids, gid) {
        return None;
    }
    Some(format!(
        "image {image} has files owned by uid {uid} / gid {gid}, beyond the pod's user \
         namespace mapping ({} uids, {} gids): inside they belong to nobody (65534) and cannot \
         be changed; give the pod a longer mapping or the image lower ids",
        length(uids),
        length(gids)
    ))
}

/// The image of a container as kubelet asked for it.
fn image_spec_of(r: &ContainerRecord) -> ImageSpec {
    ImageSpec {
        image: r.image.clone(),
        user_specified_image: r.user_specified_image.clone(),
        ..ImageSpec::default()
    }
}

/// What ContainerStatus and ListContainers report as `image_ref`: the repository digest
/// (`repo@sha256:…`, what `kubectl get pod` shows as imageID), the image id when no digest is
/// known (an image imported without one, or a container made before it was recorded).
fn image_ref_of(r: &ContainerRecord) -> String {
    if r.image_ref.is_empty() {
        r.image_id.clone()
    } else {
        r.image_ref.clone()
    }
}

pub(crate) fn status_of(v: &ContainerView) -> ContainerStatus {
    let r = &v.record;
    let m = v.monitor.clone().unwrap_or_default();
    let (exit_code, finished_at) = m.exit.map(|e| (e.code, e.at_ns)).unwrap_or((0, 0));
    let reason = match v.state {
        ContainerStateKind::Exited if v.monitor_died => "PodMonitorDied",
        ContainerStateKind::Exited if m.oom_killed => "OOMKilled",
        ContainerStateKind::Exited if exit_code == 0 => "Completed",
        ContainerStateKind::Exited => "Error",
        _ => "",
    };
    let message = match v.state {
        ContainerStateKind::Exited if v.monitor_died => {
            "the pod monitor died; the container was killed with its pod sandbox"
        }
        ContainerStateKind::Unknown => "the pod monitor is gone; the container's end is unknown",
        _ => "",
    };
    // A warning from CreateContainer shows where nothing more pressing does.
    let (reason, message) = match (reason, message) {
        ("", "") if !r.warning.is_empty() => (UNMAPPED_IDS, r.warning.as_str()),
        (reason, "") => (reason, r.warning.as_str()),
        other => other,
    };
    ContainerStatus {
        id: r.id.clone(),
        metadata: Some(ContainerMetadata {
            name: r.name.clone(),
            attempt: r.attempt,
        }),
        state: cri_state(v.state),
        created_at: r.created_at_ns,
        started_at: m.started_at_ns.unwrap_or(0),
        finished_at,
        exit_code,
        image: Some(image_spec_of(r)),
        image_ref: image_ref_of(r),
        reason: reason.into(),
        message: message.into(),
        labels: r.labels.clone().into_iter().collect(),
        annotations: r.annotations.clone().into_iter().collect(),
        mounts: cri_mounts(r),
        log_path: r.log_path.clone(),
        resources: Some(ContainerResources {
            linux: Some(cri_resources(&r.resources, r.oom_score_adj)),
            windows: None,
        }),
        image_id: r.image_id.clone(),
        user: m.user.clone().map(|u| ContainerUser {
            linux: Some(LinuxContainerUser {
                uid: i64::from(u.uid),
                gid: i64::from(u.gid),
                supplemental_groups: u.groups.iter().map(|g| i64::from(*g)).collect(),
            }),
        }),
        stop_signal: crate::signal::to_cri(r.stop_signal),
    }
}

impl Cri {
    /// CreateContainer.
    pub(crate) async fn create_container(
        &self,
        req: CreateContainerRequest,
    ) -> Result<String, Status> {
        crate::fields::refuse_unhandled_container(&req, &self.pods)?;
        let config = req.config.ok_or_else(|| invalid("config", "is required"))?;
        let metadata = config
            .metadata
            .clone()
            .filter(|m| !m.name.is_empty())
            .ok_or_else(|| invalid("config.metadata.name", "is required"))?;
        let image = config
            .image
            .as_ref()
            .map(|i| i.image.clone())
            .filter(|i| !i.is_empty())
            .ok_or_else(|| invalid("config.image.image", "is required"))?;
        let pod = self.pods.get(&req.pod_sandbox_id).map_err(pod_error)?;
        let linux = config.linux.clone().unwrap_or_default();
        let sc = linux.security_context.clone().unwrap_or_default();
        let seccomp = check_security(&sc)?;
        // As the CRI says: a privileged container needs a privileged pod sandbox.
        if sc.privileged && pod.record.spec.privileged == Some(false) {
            return Err(invalid(
                "config.linux.security_context.privileged",
                "the pod sandbox is not privileged (its security context must be privileged \
                 for a privileged container, as kubelet sets it)",
            ));
        }
        crius_runtime::validate::validate_log_path("config.log_path", &config.log_path)
            .map_err(crate::runtime::invalid_status)?;
        if !config.log_path.is_empty() && !pod.record.spec.log_directory.is_empty() {
            crius_runtime::validate::check_log_path_beneath(
                "config.log_path",
                Path::new(&pod.record.spec.log_directory),
                Path::new(&config.log_path),
            )
            .map_err(crate::runtime::invalid_status)?;
        }
        let pod_userns = pod
            .record
            .spec
            .namespaces
            .userns
            .as_ref()
            .filter(|u| u.mode == crius_runtime::spec::NamespaceMode::Pod)
            .map(|u| (u.uids.as_slice(), u.gids.as_slice()));
        let mounts = bind_mounts(&config.mounts, pod_userns)?;
        let devices = devices(&config.devices, pod_userns.is_some())?;
        // CDI devices (CDI_devices, and the older cdi.k8s.io/* annotations): resolved from
        // the spec files now, their edits applied to the spec below.
        let cdi = crate::cdi::resolve(
            &self.config.cdi_spec_dirs,
            &crate::cdi::requested(&config)?,
            pod_userns.is_some(),
        )?;
        let ns = sc.namespace_options.clone().unwrap_or_default();
        let own_pid_ns = ns.pid == NamespaceMode::Container as i32;
        let pid_target = if ns.pid == NamespaceMode::Target as i32 {
            let target = self.pods.get_container(&ns.target_id).map_err(|_| {
                invalid(
                    "config.linux.security_context.namespace_options.target_id",
                    format!("no container {:?}", ns.target_id),
                )
            })?;
            if target.record.pod_id != pod.record.id {
                return Err(invalid(
                    "config.linux.security_context.namespace_options.target_id",
                    "the target container is in another pod",
                ));
            }
            Some(target.record.id.clone())
        } else {
            None
        };
        let policy_strict =
            sc.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32;
        const SC: &str = "config.linux.security_context";
        if sc.run_as_group.is_some() && sc.run_as_user.is_none() && sc.run_as_username.is_empty() {
            return Err(invalid(
                "config.linux.security_context.run_as_group",
                "is set without run_as_user or run_as_username",
            ));
        }
        let user = UserRequest {
            uid: sc
                .run_as_user
                .map(|v| u32_id(&format!("{SC}.run_as_user"), v.value))
                .transpose()?,
            username: sc.run_as_username.clone(),
            gid: sc
                .run_as_group
                .map(|v| u32_id(&format!("{SC}.run_as_group"), v.value))
                .transpose()?,
            image_user: String::new(),
            supplemental_groups: sc
                .supplemental_groups
                .iter()
                .map(|g| u32_id(&format!("{SC}.supplemental_groups"), *g))
                .collect::<Result<_, _>>()?,
            strict: policy_strict,
        };
        let res = linux.resources.clone().unwrap_or_default();
        let resources = container_resources("config.linux.resources", &res)?;
        let id = self.pods.new_container_id().map_err(pod_error)?;
        let rootfs = self
            .images
            .lease(&id, &image)
            .await
            .map_err(crate::image::status_of)?;
        crius_runtime::failpoint("create-container:leased");
        let result = async {
            // Files of the image owned beyond the pod's user namespace: a warning, not a refusal
            // (the pod may never touch them, and kubelet cannot give it a longer mapping).
            let warning = pod_userns
                .zip(rootfs.max_ids)
                .and_then(|(maps, ids)| unmapped_ids_warning(&image, maps, ids));
            if let Some(w) = &warning {
                tracing::warn!(container = %id, "{w}");
            }
            // Image volumes: each image is leased under `<id>/image-<n>` (released with the
            // container's own lease) and its layers handed to the monitor.
            let mut mounts = mounts;
            for (i, m) in mounts.iter_mut().enumerate() {
                if let Some(volume) = &mut m.image {
                    let leased = self
                        .images
                        .lease(&format!("{id}/image-{i}"), &volume.reference)
                        .await
                        .map_err(|e| {
                            let status = crate::image::status_of(e);
                            Status::new(
                                status.code(),
                                format!("config.mounts[{i}].image: {}", status.message()),
                            )
                        })?;
                    volume.image_id = leased.image_id;
                    volume.layer_dirs = leased.layer_dirs;
                }
            }
            // The request's signal, else the image's STOPSIGNAL, else SIGTERM.
            let stop_signal = match crate::signal::from_cri(config.stop_signal)
                .map_err(|e| invalid("config.stop_signal", e))?
            {
                Some(n) => n,
                None => crate::signal::parse(&rootfs.config.stop_signal)
                    .map_err(|e| Status::failed_precondition(format!("image {image}: {e}")))?,
            };
            let args = merge_args(
                &config.command,
                &config.args,
                &rootfs.config.entrypoint,
                &rootfs.config.cmd,
            );
            if args.is_empty() {
                return Err(invalid(
                    "config.command",
                    "neither the request nor the image names a command",
                ));
            }
            let log_path = (!pod.record.spec.log_directory.is_empty()
                && !config.log_path.is_empty())
            .then(|| PathBuf::from(&pod.record.spec.log_directory).join(&config.log_path));
            let mut spec = ContainerSpec {
                id: id.clone(),
                layers_root: self.images.layers_dir().to_owned(),
                layer_dirs: rootfs.layer_dirs.clone(),
                args,
                env: merge_env(&rootfs.config.env, &config.envs),
                working_dir: if config.working_dir.is_empty() {
                    rootfs.config.working_dir.clone()
                } else {
                    config.working_dir.clone()
                },
                user: UserRequest {
                    image_user: rootfs.config.user.clone(),
                    ..user
                },
                readonly_rootfs: sc.readonly_rootfs,
                log: log_path.as_ref().map(|_| crius_proto::LogFile {
                    directory: pod.record.spec.log_directory.clone().into(),
                    path: config.log_path.clone().into(),
                }),
                mounts: mounts.clone(),
                privileged: sc.privileged,
                no_new_privs: sc.no_new_privs,
                capabilities: sc
                    .capabilities
                    .as_ref()
                    .map(|c| CapabilityRequest {
                        add: c.add_capabilities.clone(),
                        drop: c.drop_capabilities.clone(),
                    })
                    .unwrap_or_default(),
                // Applied exactly as sent: kubelet sends the default lists for procMount
                // Default and empty ones for Unmasked.
                masked_paths: Some(sc.masked_paths.clone()),
                readonly_paths: Some(sc.readonly_paths.clone()),
                oom_score_adj: (res.oom_score_adj != 0)
                    .then(|| i32::try_from(res.oom_score_adj.clamp(-1000, 1000)).unwrap_or(0)),
                resources: resources.clone(),
                own_pid_ns,
                pid_target,
                devices,
                stdin: config.stdin,
                stdin_once: config.stdin_once,
                tty: config.tty,
                seccomp,
                hooks: Default::default(),
            };
            cdi.apply(&mut spec);
            let record = ContainerRecord {
                id: id.clone(),
                pod_id: pod.record.id.clone(),
                name: metadata.name.clone(),
                attempt: metadata.attempt,
                image: image.clone(),
                image_id: rootfs.image_id.clone(),
                image_ref: rootfs.repo_digest.clone().unwrap_or_default(),
                user_specified_image: config
                    .image
                    .as_ref()
                    .map(|i| i.user_specified_image.clone())
                    .unwrap_or_default(),
                warning: warning.clone().unwrap_or_default(),
                labels: config
                    .labels
                    .clone()
                    .into_iter()
                    .collect::<BTreeMap<_, _>>(),
                annotations: config.annotations.clone().into_iter().collect(),
                log_path: log_path
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default(),
                mounts,
                stop_signal,
                created_at_ns: crius_proto::now_ns(),
                creating: false,
                resources: spec.resources.clone(),
                oom_score_adj: spec.oom_score_adj,
            };
            self.pods
                .create_container(record, spec)
                .await
                .map_err(pod_error)
        }
        .await;
        if result.is_err()
            && let Err(e) = self.images.release(&id).await
        {
            tracing::warn!(%id, error = %e, "cannot release the image lease");
        }
        result
    }

    /// RemoveContainer: idempotent.
    pub(crate) async fn remove_container(&self, id: &str) -> Result<(), Status> {
        let removed = self.pods.remove_container(id).await.map_err(pod_error)?;
        crius_runtime::failpoint("remove-container:forgotten");
        if let Some(record) = removed
            && let Err(e) = self.images.release(&record.id).await
        {
            tracing::warn!(id = %record.id, error = %e, "cannot release the image lease");
        }
        Ok(())
    }

    /// The start-up sweep of image leases: a lease whose container has no record (a
    /// CreateContainer or RemoveContainer cut short, or rolled back by the pod store's sweep)
    /// is released, and with it the layers nothing else owns. Failures are logged.
    pub(crate) async fn release_orphan_leases(&self) {
        let known: std::collections::HashSet<String> = match self.pods.list_containers() {
            Ok(list) => list.into_iter().map(|v| v.record.id.clone()).collect(),
            Err(e) => {
                tracing::error!(error = %e, "cannot list containers to sweep image leases");
                return;
            }
        };
        let leases = match self.images.leases() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot list image leases");
                return;
            }
        };
        for (lease, _image) in leases {
            // A container's image volumes are leased under `<container id>/image-<n>`.
            let owner = lease.split('/').next().unwrap_or_default();
            if known.contains(owner) {
                continue;
            }
            tracing::warn!(%lease, "releasing an image lease no container owns");
            if let Err(e) = self.images.release(&lease).await {
                tracing::error!(%lease, error = %e, "cannot release an orphaned image lease");
            }
        }
    }

    /// Releases the image leases of a removed pod's containers.
    pub(crate) async fn release_leases(&self, ids: &[String]) {
        for id in ids {
            if let Err(e) = self.images.release(id).await {
                tracing::warn!(%id, error = %e, "cannot release the image lease");
            }
        }
    }

    /// The ids of a pod's containers.
    pub(crate) fn pod_containers(&self, pod_id: &str) -> Vec<String> {
        let full = match self.pods.get(pod_id) {
            Ok(p) => p.record.id.clone(),
            Err(_) => return Vec::new(),
        };
        self.pods
            .list_containers()
            .map(|l| {
                l.into_iter()
                    .filter(|v| v.record.pod_id == full)
                    .map(|v| v.record.id.clone())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// StopContainer.
    pub(crate) async fn stop_container(&self, id: &str, timeout: i64) -> Result<(), Status> {
        let timeout = Duration::from_secs(u64::try_from(timeout).unwrap_or(0));
        match self.pods.stop_container(id, timeout).await {
            // CRI: stopping a container that is already gone is not an error.
            Ok(()) | Err(crius_runtime::PodError::ContainerNotFound { .. }) => Ok(()),
            Err(e) => Err(pod_error(e)),
        }
    }

    /// ContainerStatus.
    pub(crate) fn container_status(
        &self,
        id: &str,
        verbose: bool,
    ) -> Result<ContainerStatusResponse, Status> {
        let view = self.pods.get_container(id).map_err(pod_error)?;
        let mut info = HashMap::new();
        if verbose {
            let m = view.monitor.clone().unwrap_or_default();
            let value = serde_json::json!({
                "pid": m.pid,
                "sandboxID": view.record.pod_id,
                "imageId": view.record.image_id,
                "stopSignal": view.record.stop_signal,
                "cgroupDirs": m.cgroup_dirs,
                "oomKilled": m.oom_killed,
            });
            info.insert("info".to_owned(), value.to_string());
        }
        Ok(ContainerStatusResponse {
            status: Some(status_of(&view)),
            info,
        })
    }

    /// ListContainers with its filter.
    pub(crate) fn list_containers(
        &self,
        filter: Option<ContainerFilter>,
    ) -> Result<Vec<Container>, Status> {
        let filter = filter.unwrap_or_default();
        let all = self.pods.list_containers().map_err(pod_error)?;
        Ok(all
            .iter()
            .filter(|v| filter.id.is_empty() || v.record.id.starts_with(&filter.id))
            .filter(|v| {
                filter.pod_sandbox_id.is_empty()
                    || v.record.pod_id.starts_with(&filter.pod_sandbox_id)
            })
            .filter(|v| {
                filter
                    .state
                    .as_ref()
                    .is_none_or(|s| s.state == cri_state(v.state))
            })
            .filter(|v| {
                filter
                    .label_selector
                    .iter()
                    .all(|(k, val)| v.record.labels.get(k) == Some(val))
            })
            .map(container_of)
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| (*x).to_owned()).collect()
    }

    #[test]
    fn args_merge_like_kubelet() {
        let (ep, cmd) = (s(&["/ep"]), s(&["c1"]));
        assert_eq!(merge_args(&[], &[], &ep, &cmd), s(&["/ep", "c1"]));
        assert_eq!(merge_args(&[], &s(&["a"]), &ep, &cmd), s(&["/ep", "a"]));
        assert_eq!(merge_args(&s(&["/x"]), &[], &ep, &cmd), s(&["/x"]));
        assert_eq!(
            merge_args(&s(&["/x"]), &s(&["a"]), &ep, &cmd),
            s(&["/x", "a"])
        );
    }

    #[test]
    fn env_overrides_and_bytes() {
        let env = merge_env(
            &s(&["PATH=/bin", "A=1"]),
            &[
                KeyValue {
                    key: "A".into(),
                    value: b"2".to_vec(),
                },
                KeyValue {
                    key: "B".into(),
                    value: vec![0xff, 0xfe],
                },
            ],
        );
        assert_eq!(
            env,
            vec![
                b"PATH=/bin".to_vec(),
                b"A=2".to_vec(),
                vec![b'B', b'=', 0xff, 0xfe]
            ]
        );
    }

    #[test]
    fn mounts_are_checked_not_ignored() {
        let range = crius_runtime::spec::IdRange {
            container_id: 0,
            host_id: 1000,
            length: 10,
        };
        let pod = ([range], [range]);
        let map = IdMapping {
            host_id: 1000,
            container_id: 0,
            length: 10,
        };
        let mount = |m: Mount| bind_mounts(&[m], Some((&pod.0, &pod.1)));
        let base = Mount {
            container_path: "/v".into(),
            host_path: "/tmp".into(),
            ..Mount::default()
        };
        let ok = mount(Mount {
            uid_mappings: vec![map],
            gid_mappings: vec![map],
            ..base.clone()
        })
        .expect("the pod's mapping");
        assert!(ok[0].idmap);
        assert_eq!(ok[0].propagation, "rprivate");
        let other = IdMapping { host_id: 7, ..map };
        let e = mount(Mount {
            uid_mappings: vec![other],
            gid_mappings: vec![other],
            ..base.clone()
        })
        .expect_err("another mapping");
        assert_eq!(e.code(), tonic::Code::Unimplemented);
        let e = bind_mounts(
            &[Mount {
                uid_mappings: vec![map],
                ..base.clone()
            }],
            None,
        )
        .expect_err("no userns");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let e = mount(Mount {
            host_path: "/nonexistent/crius".into(),
            ..base.clone()
        })
        .expect_err("missing host path");
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        let slave = mount(Mount {
            propagation: MountPropagation::PropagationHostToContainer.into(),
            ..base
        })
        .expect("rslave");
        assert_eq!(slave[0].propagation, "rslave");
    }
}
