//! CreateContainer: the request in crius' terms, its checks against the pod, the image leases,
//! CDI edits, the monitor's container spec and the container record.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use crius_proto::{BindMount, CapabilityRequest, ContainerSpec, SeccompProfile, UserRequest};

use crate::spec::{IdRange, NamespaceMode, Resources};
use crate::validate::{Invalid, shown};
use crate::{ContainerRecord, PodError, Pods};

/// Everything CreateContainer asks for, independent of the CRI types. Field names in errors
/// are the CRI's (`config.mounts[0].host_path`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerRequest {
    /// The pod (an id or a unique prefix).
    pub pod_id: String,
    /// `metadata.name`; required.
    pub name: String,
    /// `metadata.attempt`.
    pub attempt: u32,
    /// The image reference; required.
    pub image: String,
    /// The image as the user wrote it (reported back, not resolved).
    pub user_specified_image: String,
    /// `command`: replaces the image's Entrypoint.
    pub command: Vec<String>,
    /// `args`: replaces the image's Cmd.
    pub args: Vec<String>,
    /// The working directory; empty for the image's.
    pub working_dir: String,
    /// Environment entries (name, value bytes), after the image's.
    pub envs: Vec<(String, Vec<u8>)>,
    /// Mounts.
    pub mounts: Vec<MountRequest>,
    /// Host devices.
    pub devices: Vec<DeviceRequest>,
    /// CDI device names (`CDI_devices`), in order.
    pub cdi_devices: Vec<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations (the `cdi.k8s.io/*` ones also name CDI devices).
    pub annotations: BTreeMap<String, String>,
    /// The log file, relative to the pod's log directory; empty for none.
    pub log_path: String,
    /// Keep stdin open.
    pub stdin: bool,
    /// Close stdin after the first attach ends.
    pub stdin_once: bool,
    /// Give the process a terminal.
    pub tty: bool,
    /// The stop signal asked for; none for the image's (else SIGTERM).
    pub stop_signal: Option<i32>,
    /// The security context.
    pub security: SecurityRequest,
    /// cgroup limits, already checked.
    pub resources: Resources,
    /// `oom_score_adj`; 0 leaves it unset.
    pub oom_score_adj: i64,
}

/// The container's security context in crius' terms.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecurityRequest {
    /// Privileged (needs a privileged pod).
    pub privileged: bool,
    /// Read-only root filesystem.
    pub readonly_rootfs: bool,
    /// `no_new_privs`.
    pub no_new_privs: bool,
    /// The seccomp profile.
    pub seccomp: Seccomp,
    /// The AppArmor profile.
    pub apparmor: crate::apparmor::Request,
    /// `run_as_user`.
    pub run_as_user: Option<i64>,
    /// `run_as_username`; empty when unset.
    pub run_as_username: String,
    /// `run_as_group` (needs a user).
    pub run_as_group: Option<i64>,
    /// `supplemental_groups`.
    pub supplemental_groups: Vec<i64>,
    /// `supplemental_groups_policy` Strict: no memberships from the image's `/etc/group`.
    pub strict_groups: bool,
    /// Capabilities to add.
    pub add_capabilities: Vec<String>,
    /// Capabilities to drop.
    pub drop_capabilities: Vec<String>,
    /// Paths masked in the container.
    pub masked_paths: Vec<String>,
    /// Paths made read-only in the container.
    pub readonly_paths: Vec<String>,
    /// The PID namespace: the pod's, the container's own, or another container's.
    pub pid: NamespaceMode,
    /// The container whose PID namespace `Target` joins.
    pub target_id: String,
}

/// A seccomp profile as asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Seccomp {
    /// No filter.
    #[default]
    Unconfined,
    /// crius' own default profile.
    RuntimeDefault,
    /// A profile file of the node, read and checked at CreateContainer.
    Localhost {
        /// The request field that named it.
        field: String,
        /// The file.
        path: String,
    },
}

/// Mount propagation as the CRI names it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Propagation {
    /// `rprivate`.
    #[default]
    Private,
    /// `rslave`.
    HostToContainer,
    /// `rshared`.
    Bidirectional,
}

impl Propagation {
    /// The mount option.
    pub fn option(self) -> &'static str {
        match self {
            Propagation::Private => "rprivate",
            Propagation::HostToContainer => "rslave",
            Propagation::Bidirectional => "rshared",
        }
    }
}

/// A mount as asked for: a host path bound in, or an image volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MountRequest {
    /// Where it appears in the container; absolute.
    pub container_path: String,
    /// The host path (empty for an image volume).
    pub host_path: String,
    /// Read-only.
    pub readonly: bool,
    /// Read-only all the way down (needs `readonly` and private propagation).
    pub recursive_read_only: bool,
    /// Propagation.
    pub propagation: Propagation,
    /// uid mappings; only the pod's own are honoured.
    pub uid_mappings: Vec<IdRange>,
    /// gid mappings; only the pod's own are honoured.
    pub gid_mappings: Vec<IdRange>,
    /// The image to mount instead of a host path.
    pub image: Option<ImageVolumeRequest>,
}

/// An image mounted as a volume.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageVolumeRequest {
    /// The image reference.
    pub image: String,
    /// The runtime handler the image was pulled for; only the default `""`.
    pub runtime_handler: String,
    /// The directory of the image to mount, relative.
    pub sub_path: String,
}

/// A host device node asked for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceRequest {
    /// Where it appears in the container.
    pub container_path: String,
    /// The host node.
    pub host_path: String,
    /// cgroup permissions, a subset of `rwm`; empty for all.
    pub permissions: String,
}

fn invalid(field: &str, reason: impl Into<String>) -> PodError {
    PodError::InvalidContainer(Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    })
}

fn unsupported(field: &str, what: &'static str) -> PodError {
    PodError::Unsupported {
        field: field.to_owned(),
        what,
    }
}

/// The process arguments as kubelet expects them: `command` replaces the image's Entrypoint
/// (and then the image's Cmd is not used), `args` replaces its Cmd.
pub fn merge_args(
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
pub fn merge_env(image: &[String], request: &[(String, Vec<u8>)]) -> Vec<Vec<u8>> {
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
                .map(|(k, v)| (k.as_bytes().to_vec(), v.clone())),
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

fn u32_id(field: &str, value: i64) -> Result<u32, PodError> {
    u32::try_from(value).map_err(|_| invalid(field, format!("{value} is not a valid id")))
}

/// The seccomp profile for the monitor; a `Localhost` file is read and checked now.
fn seccomp_profile(seccomp: &Seccomp) -> Result<SeccompProfile, PodError> {
    Ok(match seccomp {
        Seccomp::Unconfined => SeccompProfile::Unconfined,
        Seccomp::RuntimeDefault => SeccompProfile::RuntimeDefault,
        Seccomp::Localhost { field, path } => {
            let profile = crate::validate::read_seccomp_profile(field, path)
                .map_err(PodError::InvalidContainer)?;
            SeccompProfile::Localhost {
                path: path.clone(),
                profile: serde_json::to_string(&profile).map_err(|source| {
                    PodError::EncodeProfile {
                        path: path.clone(),
                        source,
                    }
                })?,
            }
        }
    })
}

/// The pod's user-namespace mapping (uids, gids), if it has its own user namespace.
type PodMaps<'a> = Option<(&'a [IdRange], &'a [IdRange])>;

/// The request's mounts. A mount carrying exactly the pod's mapping is bound idmapped.
fn bind_mounts(
    mounts: &[MountRequest],
    pod_userns: PodMaps<'_>,
) -> Result<Vec<BindMount>, PodError> {
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
                    Some((uids, gids)) if m.uid_mappings == uids && m.gid_mappings == gids => {}
                    Some(_) => {
                        return Err(unsupported(&field, "id mappings other than the pod's own"));
                    }
                }
            }
            if m.recursive_read_only && (!m.readonly || m.propagation != Propagation::Private) {
                return Err(invalid(
                    &format!("{field}.recursive_read_only"),
                    "needs readonly and private propagation",
                ));
            }
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
            if idmap && m.propagation != Propagation::Private {
                return Err(unsupported(
                    &field,
                    "idmapped mounts with propagation other than private",
                ));
            }
            Ok(BindMount {
                host_path: real,
                container_path: m.container_path.clone(),
                readonly: m.readonly,
                idmap,
                propagation: m.propagation.option().to_owned(),
                recursive_read_only: m.recursive_read_only,
                flags: Vec::new(),
                image: None,
            })
        })
        .collect()
}

/// An image volume as the request names it; the image is leased and its layers filled in
/// later. Always read-only; the sub path is relative and stays beneath the image.
fn image_volume(
    field: &str,
    m: &MountRequest,
    image: &ImageVolumeRequest,
) -> Result<BindMount, PodError> {
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
        return Err(unsupported(
            field,
            "id mappings on an image volume (it takes the pod's own)",
        ));
    }
    let sub = &image.sub_path;
    if sub.starts_with('/')
        || sub.chars().any(char::is_control)
        || sub.split('/').any(|c| c == "..")
    {
        return Err(invalid(
            &format!("{field}.image_sub_path"),
            format!(
                "{} must be a relative path beneath the image, without ..",
                shown(sub)
            ),
        ));
    }
    if m.propagation != Propagation::Private {
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
        propagation: Propagation::Private.option().to_owned(),
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

/// The request's devices: host nodes looked up for their type and numbers. Block devices are
/// refused in a user-namespaced pod (as Kubernetes documents).
fn devices(
    devices: &[DeviceRequest],
    userns: bool,
) -> Result<Vec<crius_proto::DeviceSpec>, PodError> {
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
                return Err(unsupported(
                    &field,
                    "a device at another path than on the host in a user-namespaced pod",
                ));
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

/// The warning for an image whose files are owned by ids the pod's user namespace does not map
/// (they show as nobody inside and cannot be changed there), or none.
fn unmapped_ids_warning(
    image: &str,
    (uids, gids): (&[IdRange], &[IdRange]),
    (uid, gid): (u32, u32),
) -> Option<String> {
    let mapped = |ranges: &[IdRange], id: u32| ranges.iter().any(|r| r.to_host(id).is_some());
    let length = |ranges: &[IdRange]| -> u64 { ranges.iter().map(|r| u64::from(r.length)).sum() };
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

/// The checks that need no lease: everything the request says on its own and against its pod.
struct Checked {
    pod: crate::PodView,
    seccomp: SeccompProfile,
    mounts: Vec<BindMount>,
    devices: Vec<crius_proto::DeviceSpec>,
    cdi: crate::cdi::CdiEdits,
    pid_target: Option<String>,
    user: UserRequest,
    /// The AppArmor profile, once resolved on the node.
    apparmor: Option<String>,
}

impl Pods {
    /// CreateContainer: checks the request against its pod, leases the image (and any image
    /// volumes), builds the monitor's container spec and records the container. On failure
    /// nothing is left: no record, no lease, no container in the monitor.
    pub async fn create_container(&self, req: ContainerRequest) -> Result<String, PodError> {
        if req.name.is_empty() {
            return Err(invalid("config.metadata.name", "is required"));
        }
        if req.image.is_empty() {
            return Err(invalid("config.image.image", "is required"));
        }
        let apparmor = self.apparmor_profile(&req.security).await?;
        let checked = self.check_container(&req, apparmor)?;
        let id = self.new_container_id()?;
        // The lease commits while the container is made; a failure releases it after the
        // commit has ended.
        let (rootfs, lease) = self
            .images
            .lease_early(&id, &req.image)
            .await
            .map_err(|source| PodError::Image {
                field: None,
                source,
            })?;
        let result = self.create_leased(&id, req, checked, (rootfs, lease)).await;
        if result.is_err()
            && let Err(e) = self.images.release(&id).await
        {
            tracing::warn!(%id, error = %e, "cannot release the image lease");
        }
        result
    }

    fn check_container(
        &self,
        req: &ContainerRequest,
        apparmor: Option<String>,
    ) -> Result<Checked, PodError> {
        let pod = self.get(&req.pod_id)?;
        let sc = &req.security;
        let seccomp = seccomp_profile(&sc.seccomp)?;
        // As the CRI says: a privileged container needs a privileged pod sandbox.
        if sc.privileged && pod.record.spec.privileged == Some(false) {
            return Err(invalid(
                "config.linux.security_context.privileged",
                "the pod sandbox is not privileged (its security context must be privileged \
                 for a privileged container, as kubelet sets it)",
            ));
        }
        crate::validate::validate_log_path("config.log_path", &req.log_path)
            .map_err(PodError::InvalidContainer)?;
        if !req.log_path.is_empty() && !pod.record.spec.log_directory.is_empty() {
            crate::validate::check_log_path_beneath(
                "config.log_path",
                Path::new(&pod.record.spec.log_directory),
                Path::new(&req.log_path),
            )
            .map_err(PodError::InvalidContainer)?;
        }
        let pod_userns = pod_maps(&pod);
        let mounts = bind_mounts(&req.mounts, pod_userns)?;
        let devices = devices(&req.devices, pod_userns.is_some())?;
        // CDI devices (CDI_devices, and the older cdi.k8s.io/* annotations): resolved from
        // the spec files now, their edits applied to the spec later.
        let cdi = crate::cdi::resolve(
            &self.config.cdi_spec_dirs,
            &crate::cdi::requested(&req.cdi_devices, &req.annotations)?,
            pod_userns.is_some(),
        )?;
        let pid_target = if sc.pid == NamespaceMode::Target {
            const FIELD: &str = "config.linux.security_context.namespace_options.target_id";
            let target = self
                .get_container(&sc.target_id)
                .map_err(|_| invalid(FIELD, format!("no container {:?}", sc.target_id)))?;
            if target.record.pod_id != pod.record.id {
                return Err(invalid(FIELD, "the target container is in another pod"));
            }
            Some(target.record.id.clone())
        } else {
            None
        };
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
                .map(|v| u32_id(&format!("{SC}.run_as_user"), v))
                .transpose()?,
            username: sc.run_as_username.clone(),
            gid: sc
                .run_as_group
                .map(|v| u32_id(&format!("{SC}.run_as_group"), v))
                .transpose()?,
            image_user: String::new(),
            supplemental_groups: sc
                .supplemental_groups
                .iter()
                .map(|g| u32_id(&format!("{SC}.supplemental_groups"), *g))
                .collect::<Result<_, _>>()?,
            strict: sc.strict_groups,
        };
        Ok(Checked {
            pod,
            seccomp,
            mounts,
            devices,
            cdi,
            pid_target,
            user,
            apparmor,
        })
    }

    /// The AppArmor profile the container runs under on this node (`None`: unconfined).
    async fn apparmor_profile(&self, sc: &SecurityRequest) -> Result<Option<String>, PodError> {
        const FIELD: &str = "config.linux.security_context.apparmor";
        let node = self.config.apparmor.clone();
        if !node.enforced() {
            // Decided without reading the node.
            return Ok(node.resolve(FIELD, &sc.apparmor, sc.privileged)?);
        }
        let (request, privileged) = (sc.apparmor.clone(), sc.privileged);
        crius_proto::blocking(move || Ok(node.resolve(FIELD, &request, privileged)?)).await
    }

    /// The part of CreateContainer after the image is leased under `id`.
    async fn create_leased(
        &self,
        id: &str,
        req: ContainerRequest,
        checked: Checked,
        (rootfs, lease): (crius_image::RootfsSpec, crius_image::LeaseCommit),
    ) -> Result<String, PodError> {
        let Checked {
            pod,
            seccomp,
            mut mounts,
            devices,
            cdi,
            pid_target,
            user,
            apparmor,
        } = checked;
        // Files of the image owned beyond the pod's user namespace: a warning, not a refusal
        // (the pod may never touch them, and kubelet cannot give it a longer mapping).
        let warning = pod_maps(&pod)
            .zip(rootfs.max_ids)
            .and_then(|(maps, ids)| unmapped_ids_warning(&req.image, maps, ids));
        if let Some(w) = &warning {
            tracing::warn!(container = %id, "{w}");
        }
        // Image volumes: each image is leased under `<id>/image-<n>` (released with the
        // container's own lease) and its layers handed to the monitor.
        for (i, m) in mounts.iter_mut().enumerate() {
            if let Some(volume) = &mut m.image {
                let leased = self
                    .images
                    .lease(&format!("{id}/image-{i}"), &volume.reference)
                    .await
                    .map_err(|source| PodError::Image {
                        field: Some(format!("config.mounts[{i}].image")),
                        source,
                    })?;
                volume.image_id = leased.image_id;
                volume.layer_dirs = leased.layer_dirs;
            }
        }
        // The request's signal, else the image's STOPSIGNAL, else SIGTERM.
        let stop_signal = match req.stop_signal {
            Some(n) => n,
            None => crate::signal::parse(&rootfs.config.stop_signal).map_err(|source| {
                PodError::ImageStopSignal {
                    image: req.image.clone(),
                    source,
                }
            })?,
        };
        let args = merge_args(
            &req.command,
            &req.args,
            &rootfs.config.entrypoint,
            &rootfs.config.cmd,
        );
        if args.is_empty() {
            return Err(invalid(
                "config.command",
                "neither the request nor the image names a command",
            ));
        }
        let log_directory = &pod.record.spec.log_directory;
        let log_path = (!log_directory.is_empty() && !req.log_path.is_empty())
            .then(|| PathBuf::from(log_directory).join(&req.log_path));
        let sc = &req.security;
        let mut spec = ContainerSpec {
            id: id.to_owned(),
            layers_root: self.images.layers_dir().to_owned(),
            layer_dirs: rootfs.layer_dirs.clone(),
            args,
            env: merge_env(&rootfs.config.env, &req.envs),
            working_dir: if req.working_dir.is_empty() {
                rootfs.config.working_dir.clone()
            } else {
                req.working_dir.clone()
            },
            user: UserRequest {
                image_user: rootfs.config.user.clone(),
                ..user
            },
            readonly_rootfs: sc.readonly_rootfs,
            log: log_path.as_ref().map(|_| crius_proto::LogFile {
                directory: log_directory.clone().into(),
                path: req.log_path.clone().into(),
            }),
            mounts: mounts.clone(),
            privileged: sc.privileged,
            no_new_privs: sc.no_new_privs,
            capabilities: CapabilityRequest {
                add: sc.add_capabilities.clone(),
                drop: sc.drop_capabilities.clone(),
            },
            // Applied exactly as sent: kubelet sends the default lists for procMount
            // Default and empty ones for Unmasked.
            masked_paths: Some(sc.masked_paths.clone()),
            readonly_paths: Some(sc.readonly_paths.clone()),
            oom_score_adj: (req.oom_score_adj != 0)
                .then(|| i32::try_from(req.oom_score_adj.clamp(-1000, 1000)).unwrap_or(0)),
            resources: req.resources.clone(),
            own_pid_ns: sc.pid == NamespaceMode::Container,
            pid_target,
            devices,
            stdin: req.stdin,
            stdin_once: req.stdin_once,
            tty: req.tty,
            seccomp,
            apparmor_profile: apparmor,
            hooks: Default::default(),
        };
        cdi.apply(&mut spec);
        let record = ContainerRecord {
            id: id.to_owned(),
            pod_id: pod.record.id.clone(),
            name: req.name,
            attempt: req.attempt,
            image: req.image,
            image_id: rootfs.image_id.clone(),
            image_ref: rootfs.repo_digest.clone().unwrap_or_default(),
            user_specified_image: req.user_specified_image,
            warning: warning.unwrap_or_default(),
            labels: req.labels,
            annotations: req.annotations,
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
        self.commit_container(record, spec, lease).await
    }
}

/// The pod's own user-namespace mapping, if it has one.
fn pod_maps(pod: &crate::PodView) -> PodMaps<'_> {
    pod.record
        .spec
        .namespaces
        .userns
        .as_ref()
        .filter(|u| u.mode == NamespaceMode::Pod)
        .map(|u| (u.uids.as_slice(), u.gids.as_slice()))
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
            &[("A".into(), b"2".to_vec()), ("B".into(), vec![0xff, 0xfe])],
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
        let range = IdRange {
            container_id: 0,
            host_id: 1000,
            length: 10,
        };
        let pod = ([range], [range]);
        let mount = |m: MountRequest| bind_mounts(&[m], Some((&pod.0, &pod.1)));
        let base = MountRequest {
            container_path: "/v".into(),
            host_path: "/tmp".into(),
            ..MountRequest::default()
        };
        let ok = mount(MountRequest {
            uid_mappings: vec![range],
            gid_mappings: vec![range],
            ..base.clone()
        })
        .expect("the pod's mapping");
        assert!(ok[0].idmap);
        assert_eq!(ok[0].propagation, "rprivate");
        let other = IdRange {
            host_id: 7,
            ..range
        };
        let e = mount(MountRequest {
            uid_mappings: vec![other],
            gid_mappings: vec![other],
            ..base.clone()
        })
        .expect_err("another mapping");
        assert!(matches!(e, PodError::Unsupported { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            "config.mounts[0]: id mappings other than the pod's own is not implemented by crius yet"
        );
        let e = bind_mounts(
            &[MountRequest {
                uid_mappings: vec![range],
                ..base.clone()
            }],
            None,
        )
        .expect_err("no userns");
        assert!(matches!(e, PodError::InvalidContainer(_)), "{e}");
        let e = mount(MountRequest {
            host_path: "/nonexistent/crius".into(),
            ..base.clone()
        })
        .expect_err("missing host path");
        assert!(matches!(e, PodError::InvalidContainer(_)), "{e}");
        let slave = mount(MountRequest {
            propagation: Propagation::HostToContainer,
            ..base
        })
        .expect("rslave");
        assert_eq!(slave[0].propagation, "rslave");
    }
}
