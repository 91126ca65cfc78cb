//! The container RPCs of the CRI `RuntimeService`: CRI requests converted to crius-runtime's
//! container requests, its records and views converted back.

use std::collections::BTreeMap;
use std::time::Duration;

use cri_api::v1::*;
use crius_runtime::{
    ContainerRecord, ContainerRequest, ContainerStateKind, ContainerView, DeviceRequest,
    ImageVolumeRequest, MountRequest, Propagation, Seccomp, SecurityRequest, apparmor,
};
use tonic::Status;

use crate::Cri;
use crate::status::pod_error;

fn invalid(field: &str, reason: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

/// The cgroup limits of a container, after the same checks as a pod's: the raw values
/// ([`crate::pods::check_resources`]) and then the kernel's limits. `prefix` names the
/// request field (`config.linux.resources` for CreateContainer, `linux` for
/// UpdateContainerResources).
pub(crate) fn container_resources(
    prefix: &str,
    res: &LinuxContainerResources,
) -> Result<crius_runtime::spec::Resources, Status> {
    crate::pods::check_resources(prefix, res).map_err(crate::status::invalid_status)?;
    let resources = crius_runtime::spec::Resources {
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
        .map_err(crate::status::invalid_status)?;
    Ok(resources)
}

/// The AppArmor profile a security context (`F`, dotted from `config`) asks for: its `apparmor`
/// message when set, else the deprecated string `deprecated` of a container's context
/// (`runtime/default`, `unconfined`, `localhost/<name>`). Whether the node can apply it is
/// crius-runtime's to decide.
pub(crate) fn apparmor_request(
    profile: Option<&SecurityProfile>,
    deprecated: &str,
) -> Result<apparmor::Request, Status> {
    const F: &str = "config.linux.security_context";
    let localhost = |field: &str, name: &str| {
        // kubelet sends the bare name; a `localhost/` prefix is taken off all the same.
        let name = name.strip_prefix("localhost/").unwrap_or(name);
        if name.is_empty() {
            return Err(invalid(field, "a Localhost profile needs a name"));
        }
        if name.len() > apparmor::MAX_NAME_BYTES {
            return Err(invalid(
                field,
                format!(
                    "the profile name is longer than {} bytes",
                    apparmor::MAX_NAME_BYTES
                ),
            ));
        }
        // The kernel reads the name as a label: `:ns:` would pick another policy namespace,
        // `//` a hat or a stack, `&` a stack, and it trims the spaces a check would keep.
        let bad = if name.chars().any(char::is_control) {
            Some("has a control character")
        } else if name.starts_with(':') {
            Some("names a policy namespace (`:ns:`); only the node's own profiles apply")
        } else if name.contains("//") || name.contains('&') {
            Some("names a hat or a stack (`//`, `&`); only whole profiles apply")
        } else if name.trim() != name {
            Some("starts or ends with white space")
        } else {
            None
        };
        if let Some(reason) = bad {
            return Err(invalid(
                field,
                format!("profile {} {reason}", crius_runtime::validate::shown(name)),
            ));
        }
        Ok(apparmor::Request::Localhost {
            field: field.to_owned(),
            name: name.to_owned(),
        })
    };
    if let Some(p) = profile {
        let field = format!("{F}.apparmor");
        let ref_field = format!("{field}.localhost_ref");
        return match security_profile::ProfileType::try_from(p.profile_type) {
            Ok(security_profile::ProfileType::Localhost) => localhost(&ref_field, &p.localhost_ref),
            Ok(_) if !p.localhost_ref.is_empty() => Err(invalid(
                &ref_field,
                "is set, but the profile type is not Localhost",
            )),
            Ok(security_profile::ProfileType::RuntimeDefault) => {
                Ok(apparmor::Request::RuntimeDefault)
            }
            Ok(security_profile::ProfileType::Unconfined) => Ok(apparmor::Request::Unconfined),
            Err(_) => Err(invalid(&field, "unknown profile type")),
        };
    }
    let field = format!("{F}.apparmor_profile");
    match deprecated {
        "" => Ok(apparmor::Request::Unset),
        "runtime/default" | "docker/default" => Ok(apparmor::Request::RuntimeDefault),
        "unconfined" => Ok(apparmor::Request::Unconfined),
        other => match other.strip_prefix("localhost/") {
            Some(name) => localhost(&field, name),
            None => Err(invalid(
                &field,
                format!(
                    "{} is not runtime/default, unconfined or localhost/<name>",
                    crius_runtime::validate::shown(other)
                ),
            )),
        },
    }
}

/// The container's security context in crius-runtime's terms, refusing what crius does not do
/// (SELinux) instead of ignoring it. The deprecated profile fields are still read: a
/// profile named there must not be ignored either.
#[allow(deprecated)]
fn security_request(sc: &LinuxContainerSecurityContext) -> Result<SecurityRequest, Status> {
    const F: &str = "config.linux.security_context";
    let localhost = |field: String, path: &str| Seccomp::Localhost {
        field,
        path: path.to_owned(),
    };
    let seccomp = if let Some(p) = &sc.seccomp {
        match security_profile::ProfileType::try_from(p.profile_type) {
            Ok(security_profile::ProfileType::Unconfined) => Seccomp::Unconfined,
            Ok(security_profile::ProfileType::RuntimeDefault) => Seccomp::RuntimeDefault,
            Ok(security_profile::ProfileType::Localhost) => {
                localhost(format!("{F}.seccomp.localhost_ref"), &p.localhost_ref)
            }
            Err(_) => return Err(invalid(&format!("{F}.seccomp"), "unknown profile type")),
        }
    } else {
        let field = format!("{F}.seccomp_profile_path");
        match sc.seccomp_profile_path.as_str() {
            "" | "unconfined" => Seccomp::Unconfined,
            "runtime/default" | "docker/default" => Seccomp::RuntimeDefault,
            other => match other.strip_prefix("localhost/") {
                Some(path) => localhost(field, path),
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
    let apparmor = apparmor_request(sc.apparmor.as_ref(), &sc.apparmor_profile)?;
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
    let ns = sc.namespace_options.clone().unwrap_or_default();
    let capabilities = sc.capabilities.clone().unwrap_or_default();
    Ok(SecurityRequest {
        privileged: sc.privileged,
        readonly_rootfs: sc.readonly_rootfs,
        no_new_privs: sc.no_new_privs,
        seccomp,
        apparmor,
        run_as_user: sc.run_as_user.map(|v| v.value),
        run_as_username: sc.run_as_username.clone(),
        run_as_group: sc.run_as_group.map(|v| v.value),
        supplemental_groups: sc.supplemental_groups.clone(),
        strict_groups: sc.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32,
        add_capabilities: capabilities.add_capabilities,
        drop_capabilities: capabilities.drop_capabilities,
        masked_paths: sc.masked_paths.clone(),
        readonly_paths: sc.readonly_paths.clone(),
        pid: crate::pods::namespace_mode(ns.pid, &format!("{F}.namespace_options.pid"))?,
        target_id: ns.target_id,
    })
}

/// A CRI mount in crius-runtime's terms.
fn mount_request(i: usize, m: &Mount) -> Result<MountRequest, Status> {
    let propagation = match MountPropagation::try_from(m.propagation) {
        Ok(MountPropagation::PropagationPrivate) => Propagation::Private,
        Ok(MountPropagation::PropagationHostToContainer) => Propagation::HostToContainer,
        Ok(MountPropagation::PropagationBidirectional) => Propagation::Bidirectional,
        Err(_) => {
            return Err(invalid(
                &format!("config.mounts[{i}].propagation"),
                format!("unknown propagation {}", m.propagation),
            ));
        }
    };
    Ok(MountRequest {
        container_path: m.container_path.clone(),
        host_path: m.host_path.clone(),
        readonly: m.readonly,
        recursive_read_only: m.recursive_read_only,
        propagation,
        uid_mappings: crate::pods::id_ranges(&m.uid_mappings),
        gid_mappings: crate::pods::id_ranges(&m.gid_mappings),
        image: m.image.as_ref().map(|image| ImageVolumeRequest {
            image: image.image.clone(),
            runtime_handler: image.runtime_handler.clone(),
            sub_path: m.image_sub_path.clone(),
        }),
    })
}

/// CreateContainer's request in crius-runtime's terms.
fn container_request(req: CreateContainerRequest) -> Result<ContainerRequest, Status> {
    let config = req.config.ok_or_else(|| invalid("config", "is required"))?;
    let metadata = config.metadata.clone().unwrap_or_default();
    let image = config.image.clone().unwrap_or_default();
    let linux = config.linux.clone().unwrap_or_default();
    let res = linux.resources.unwrap_or_default();
    Ok(ContainerRequest {
        pod_id: req.pod_sandbox_id,
        name: metadata.name,
        attempt: metadata.attempt,
        image: image.image,
        user_specified_image: image.user_specified_image,
        mounts: config
            .mounts
            .iter()
            .enumerate()
            .map(|(i, m)| mount_request(i, m))
            .collect::<Result<_, _>>()?,
        devices: config
            .devices
            .into_iter()
            .map(|d| DeviceRequest {
                container_path: d.container_path,
                host_path: d.host_path,
                permissions: d.permissions,
            })
            .collect(),
        cdi_devices: config.cdi_devices.into_iter().map(|d| d.name).collect(),
        command: config.command,
        args: config.args,
        working_dir: config.working_dir,
        envs: config
            .envs
            .into_iter()
            .map(|kv| (kv.key, kv.value))
            .collect(),
        labels: config.labels,
        annotations: config.annotations,
        log_path: config.log_path,
        stdin: config.stdin,
        stdin_once: config.stdin_once,
        tty: config.tty,
        stop_signal: crate::signal::from_cri(config.stop_signal)
            .map_err(|e| invalid("config.stop_signal", e))?,
        security: security_request(&linux.security_context.unwrap_or_default())?,
        resources: container_resources("config.linux.resources", &res)?,
        oom_score_adj: res.oom_score_adj,
    })
}

/// The limits in force as CRI reports them in ContainerStatus (0 or empty for what is unset).
fn cri_resources(
    res: &crius_runtime::spec::Resources,
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
        labels: r.labels.clone(),
        annotations: r.annotations.clone(),
        image_id: r.image_id.clone(),
    }
}

/// ContainerStatus' reason for a container whose image has files owned beyond its pod's user
/// namespace.
const UNMAPPED_IDS: &str = "ImageIdsOutsideUserNamespace";

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
        labels: r.labels.clone(),
        annotations: r.annotations.clone(),
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
        let request = container_request(req)?;
        self.pods.create_container(request).await.map_err(pod_error)
    }

    /// RemoveContainer: idempotent.
    pub(crate) async fn remove_container(&self, id: &str) -> Result<(), Status> {
        self.pods.remove_container(id).await.map_err(pod_error)
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
        let mut info = BTreeMap::new();
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
            .filter(|v| {
                v.selected_by(&filter.id, &filter.pod_sandbox_id, &filter.label_selector)
                    && filter
                        .state
                        .as_ref()
                        .is_none_or(|s| s.state == cri_state(v.state))
            })
            .map(container_of)
            .collect())
    }
}
