//! The systemd cgroup driver: each pod cgroup is a transient scope unit in the pod's slice
//! (`crius-<id>.scope`, Delegate=yes), each monitor one of its own in `system.slice`
//! (`crius-monitor-<id>.scope`); systemd makes, accounts and removes them, over D-Bus through
//! libcgroups' systemd manager (its own synchronous D-Bus client: no thread in the monitor).
//! The pod's limits are the scope's unit properties; below the scope, in the delegated
//! subtree (the sandbox leaf, the containers), crius writes cgroupfs as with the cgroupfs
//! driver.

use std::path::PathBuf;
use std::time::Duration;

use crius_proto::{CgroupSpec, Resources};
use libcgroups::common::{CgroupManager, ControllerOpt};
use libcgroups::systemd::manager::Manager;
use libcgroups_nix::unistd::Pid;
use oci_spec::runtime::{
    LinuxCpuBuilder, LinuxMemoryBuilder, LinuxResources, LinuxResourcesBuilder,
};

use crate::Error;

/// Where the unified hierarchy is mounted on a systemd host.
const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// The slice monitor scopes go in: beside the services, outside every pod's slice (the pods'
/// limits do not apply to their monitors) and outside criusd's service (stopping it does not
/// stop them).
const MONITOR_SLICE: &str = "system.slice";

/// The prefix of a monitor's scope unit, followed by its pod's id.
const MONITOR_PREFIX: &str = "crius-monitor";

/// How long systemd may take to move a process into a new scope.
const MOVE_TIMEOUT: Duration = Duration::from_secs(10);

fn failed(
    what: impl Into<String>,
) -> impl FnOnce(libcgroups::systemd::manager::SystemdManagerError) -> Error {
    let what = what.into();
    move |e| Error::Systemd {
        what,
        source: Box::new(e),
    }
}

/// The manager of scope `<prefix>-<name>.scope` in `slice` (a D-Bus connection to systemd).
fn manager(slice: &str, prefix: &str, name: &str) -> Result<Manager, Error> {
    Manager::new(
        PathBuf::from(CGROUP_ROOT),
        PathBuf::from(format!("{slice}:{prefix}:{name}")),
        format!("{prefix}-{name}"),
        true,
        MOVE_TIMEOUT,
    )
    .map_err(failed(format!(
        "cannot reach systemd for {prefix}-{name}.scope in {slice}"
    )))
}

/// The pod scope's manager: `spec.name` is `<prefix>-<name>.scope`.
fn pod_manager(spec: &CgroupSpec) -> Result<Manager, Error> {
    let (prefix, name) = spec
        .name
        .strip_suffix(".scope")
        .and_then(|stem| stem.split_once('-'))
        .filter(|(p, n)| !p.is_empty() && !n.is_empty() && !n.contains(['/', ':']))
        .ok_or_else(|| Error::ScopeName {
            name: spec.name.clone(),
        })?;
    manager(&spec.parent, prefix, name)
}

/// The cgroup directory of the pod scope `spec` names.
pub(crate) fn pod_dir(spec: &CgroupSpec) -> Option<PathBuf> {
    Some(PathBuf::from(CGROUP_ROOT).join(crate::cgroup::relative_dir(spec).ok()?))
}

/// Starts the pod's scope with process `pid` in it (systemd moves it there) and the pod's
/// limits. Returns the scope's cgroup directory. When the limits fail, `pid` is moved back to
/// `home` and the scope stopped (left to systemd if the move fails: stopping it would kill `pid`).
pub(crate) fn start_pod(spec: &CgroupSpec, pid: i32, home: &[PathBuf]) -> Result<PathBuf, Error> {
    let dir = pod_dir(spec).ok_or_else(|| Error::NotASlice {
        parent: spec.parent.clone(),
    })?;
    let manager = pod_manager(spec)?;
    manager
        .add_task(Pid::from_raw(pid))
        .map_err(failed(format!("cannot start the pod scope {}", spec.name)))?;
    if let Err(e) = set_limits_with(
        &manager,
        &spec.name,
        std::slice::from_ref(&dir),
        &spec.resources,
    ) {
        // Out of the scope first: stopping it with this process inside would kill it. If the
        // move fails the scope stays; systemd drops it once its processes are gone.
        if crate::cgroup::enter(home, pid).is_ok() {
            let _ = manager.remove();
        }
        return Err(e);
    }
    Ok(dir)
}

/// Sets `r` on the pod's scope: as unit properties where systemd has one (it writes the files
/// and keeps the values across its reloads), in the scope's files `dirs` for the rest.
pub(crate) fn set_limits(spec: &CgroupSpec, dirs: &[PathBuf], r: &Resources) -> Result<(), Error> {
    set_limits_with(&pod_manager(spec)?, &spec.name, dirs, r)
}

fn set_limits_with(
    manager: &Manager,
    unit: &str,
    dirs: &[PathBuf],
    r: &Resources,
) -> Result<(), Error> {
    let (resources, rest) = split_limits(r)?;
    manager
        .apply(&ControllerOpt {
            resources: &resources,
            disable_oom_killer: false,
            oom_score_adj: None,
            freezer_state: None,
        })
        .map_err(failed(format!("cannot set the limits of {unit}")))?;
    crate::cgroup::apply(dirs, &rest)
}

/// `r` split into what systemd takes as unit properties and the rest, which crius writes to the
/// scope's files (writing both would leave the files at crius' values until systemd rewrites
/// its own).
fn split_limits(r: &Resources) -> Result<(LinuxResources, Resources), Error> {
    let properties = oci_resources(r)?;
    let swap_is_property = properties
        .memory()
        .as_ref()
        .is_some_and(|m| m.swap().is_some());
    let rest = Resources {
        cpu_period: None,
        cpu_quota: None,
        cpu_shares: None,
        memory_limit: None,
        memory_swap: r.memory_swap.filter(|_| !swap_is_property),
        cpuset_cpus: None,
        cpuset_mems: None,
        hugepage_limits: r.hugepage_limits.clone(),
        unified: r.unified.clone(),
    };
    Ok((properties, rest))
}

/// Stops the pod's scope: systemd kills what is left in it and removes its cgroup. A scope
/// that is gone already is fine.
pub(crate) fn stop_pod(spec: &CgroupSpec) -> Result<(), Error> {
    pod_manager(spec)?
        .remove()
        .map_err(failed(format!("cannot stop the pod scope {}", spec.name)))
}

/// Moves monitor `pid` of pod `pod_id` into its own scope, `crius-monitor-<pod_id>.scope` in
/// `system.slice`.
pub(crate) fn enter_monitor_scope(pod_id: &str, pid: i32) -> Result<(), Error> {
    manager(MONITOR_SLICE, MONITOR_PREFIX, pod_id)?
        .add_task(Pid::from_raw(pid))
        .map_err(failed(format!(
            "cannot start the monitor scope {MONITOR_PREFIX}-{pod_id}.scope"
        )))
}

/// The limits systemd takes as unit properties: cpu weight and quota, memory and swap, cpusets.
/// Hugepages and `unified` files have no property: the cgroupfs writes that follow set them.
fn oci_resources(r: &Resources) -> Result<LinuxResources, Error> {
    let bad = |source| Error::PodLimits { source };
    let mut builder = LinuxResourcesBuilder::default();
    let mut cpu = LinuxCpuBuilder::default();
    let mut any_cpu = false;
    if let Some(shares) = r.cpu_shares {
        cpu = cpu.shares(shares);
        any_cpu = true;
    }
    if let Some(quota) = r.cpu_quota {
        cpu = cpu.quota(quota);
        any_cpu = true;
    }
    if let Some(period) = r.cpu_period.filter(|p| *p > 0) {
        cpu = cpu.period(period);
        any_cpu = true;
    }
    if let Some(cpus) = &r.cpuset_cpus {
        cpu = cpu.cpus(cpus.clone());
        any_cpu = true;
    }
    if let Some(mems) = &r.cpuset_mems {
        cpu = cpu.mems(mems.clone());
        any_cpu = true;
    }
    if any_cpu {
        builder = builder.cpu(cpu.build().map_err(bad)?);
    }
    // crius' 0 (and kubelet's) is "no limit"; the runtime spec's is -1.
    let unlimited_if_not_positive = |v: i64| if v > 0 { v } else { -1 };
    if r.memory_limit.is_some() || r.memory_swap.is_some() {
        let mut memory = LinuxMemoryBuilder::default();
        if let Some(limit) = r.memory_limit {
            memory = memory.limit(unlimited_if_not_positive(limit));
        }
        // systemd's swap property is the swap alone, derived from a total no smaller than a
        // positive limit; other totals are left to the cgroupfs write.
        let limit = r.memory_limit.filter(|l| *l > 0);
        match r.memory_swap {
            Some(swap) if swap <= 0 => memory = memory.swap(-1),
            Some(swap) if limit.is_some_and(|l| l <= swap) => memory = memory.swap(swap),
            _ => {}
        }
        builder = builder.memory(memory.build().map_err(bad)?);
    }
    builder.build().map_err(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_scopes_sit_in_their_slice() {
        let spec = CgroupSpec {
            parent: "kubepods-burstable-pod1.slice".into(),
            name: "crius-ab.scope".into(),
            resources: Resources::default(),
            systemd: true,
        };
        assert_eq!(
            pod_dir(&spec),
            Some(PathBuf::from(
                "/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/\
                 kubepods-burstable-pod1.slice/crius-ab.scope"
            ))
        );
        let path_like = CgroupSpec {
            parent: "/kubepods".into(),
            ..spec
        };
        assert_eq!(pod_dir(&path_like), None);
    }

    #[test]
    fn only_what_has_no_property_is_left_for_the_files() {
        let r = Resources {
            cpu_shares: Some(512),
            memory_limit: Some(64 << 20),
            memory_swap: Some(96 << 20),
            hugepage_limits: [("2MB".to_owned(), 4 << 20)].into(),
            unified: [("pids.max".to_owned(), "12".to_owned())].into(),
            ..Resources::default()
        };
        let (properties, rest) = split_limits(&r).expect("split");
        assert_eq!(
            properties.memory().as_ref().and_then(|m| m.swap()),
            Some(96 << 20)
        );
        assert_eq!(
            rest,
            Resources {
                hugepage_limits: r.hugepage_limits.clone(),
                unified: r.unified.clone(),
                ..Resources::default()
            }
        );
        // A total systemd cannot take stays for the files.
        let odd = Resources {
            memory_swap: Some(1 << 20),
            ..Resources::default()
        };
        assert_eq!(
            split_limits(&odd).expect("split").1.memory_swap,
            Some(1 << 20)
        );
    }

    #[test]
    fn limits_become_unit_properties() {
        let r = Resources {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory_limit: Some(64 << 20),
            memory_swap: Some(0),
            cpuset_cpus: Some("0".into()),
            ..Resources::default()
        };
        let oci = oci_resources(&r).expect("resources");
        let cpu = oci.cpu().as_ref().expect("cpu");
        assert_eq!(cpu.shares(), Some(512));
        assert_eq!(cpu.quota(), Some(50_000));
        assert_eq!(cpu.cpus().as_deref(), Some("0"));
        let memory = oci.memory().as_ref().expect("memory");
        assert_eq!(memory.limit(), Some(64 << 20));
        assert_eq!(memory.swap(), Some(-1));
        let none = oci_resources(&Resources::default()).expect("none");
        assert!(none.cpu().is_none() && none.memory().is_none());
        let unlimited = oci_resources(&Resources {
            memory_limit: Some(0),
            memory_swap: Some(1 << 20),
            ..Resources::default()
        })
        .expect("unlimited");
        let memory = unlimited.memory().as_ref().expect("memory");
        assert_eq!((memory.limit(), memory.swap()), (Some(-1), None));
    }
}
