//! The start-up recovery: what a criusd that died mid-operation left behind is finished or
//! rolled back before the new one serves. Pod and container records, pod directories,
//! cgroups, temporary files, the pod network (pending ADDs and cached attachments no pod
//! owns) and image leases no container owns.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crius_net::PodNetwork;
use crius_proto::{RequestBody, layout};

use crate::store::{NetworkPhase, PodRecord, PodState};
use crate::{DEFAULT_CGROUP_PARENT, PodError, Pods, client, internal, monitor_alive, remove_tree};

/// What the start-up sweep found and did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Pods whose RunPodSandbox was interrupted before the sandbox was recorded, rolled back.
    pub rolled_back: Vec<String>,
    /// Pod directories no record owns, released and removed.
    pub orphan_dirs: Vec<PathBuf>,
    /// Pod cgroups under the default parent that no record owns, removed.
    pub orphan_cgroups: Vec<PathBuf>,
    /// Temporary files of interrupted writes, removed.
    pub temp_files: Vec<PathBuf>,
    /// Containers whose CreateContainer was cut short, removed from their monitor and forgotten.
    pub containers_rolled_back: Vec<String>,
    /// Container records whose container their pod's monitor no longer has (a RemoveContainer
    /// cut short) or whose pod is gone, forgotten.
    pub containers_forgotten: Vec<String>,
    /// Containers a pod monitor has that no record owns, removed from the monitor.
    pub orphan_containers: Vec<String>,
    /// Pods whose RunPodSandbox stopped between the sandbox and the end of CNI ADD: their
    /// network torn down (DEL) and the pod removed (the client never got their id).
    pub networks_rolled_back: Vec<String>,
    /// Pod ids with a cached CNI attachment but no pod, torn down (DEL).
    pub orphan_attachments: Vec<String>,
    /// Image leases no container owns (a CreateContainer or RemoveContainer cut short, or
    /// rolled back by the sweep), released.
    pub orphan_leases: Vec<String>,
}

impl Pods {
    /// The start-up recovery, run once before criusd serves: the sweep of records and files,
    /// then the network (see [`Recovery`]). Network failures are logged and leave the pod or
    /// attachment for the next start; the sweep's first failure is returned, after the
    /// network part has run.
    pub async fn recover(self: &Arc<Self>) -> Result<Recovery, PodError> {
        let mut out = Recovery::default();
        let swept = self.sweep(&mut out).await;
        self.recover_network(&mut out).await;
        self.release_orphan_leases(&mut out).await;
        self.fill_spare().await;
        if out != Recovery::default() {
            tracing::info!(?out, "start-up sweep");
        }
        swept.map(|()| out)
    }

    /// The sweep: rolls back pods whose RunPodSandbox was cut short before the sandbox was
    /// recorded (state `Creating`), then containers (see `recover_containers`), and releases
    /// and removes what no record owns: pod directories (with their mounts, netns pin and
    /// processes), `crius-<id>` cgroups under the default parent, and temporary files of
    /// interrupted writes.
    async fn sweep(&self, out: &mut Recovery) -> Result<(), PodError> {
        for record in self.store.all() {
            if record.state != PodState::Creating {
                continue;
            }
            tracing::warn!(id = %record.id, "rolling back an interrupted RunPodSandbox");
            // ADD starts once the monitor has pinned the namespace, before the pod is recorded
            // ready: undone before the namespace goes.
            if record.network == NetworkPhase::Pending
                && record.dir.join(layout::NETNS).exists()
                && let Err(e) = self.detach_interrupted(&record).await
            {
                tracing::error!(id = %record.id, error = %e, "cannot tear down the network of an interrupted RunPodSandbox; the next start retries");
                continue;
            }
            self.release(&record).await?;
            self.forget_containers(&record.id)?;
            self.store.delete(&record.id)?;
            out.rolled_back.push(record.id.clone());
        }
        self.recover_containers(out).await?;
        let known: std::collections::HashSet<String> =
            self.store.all().into_iter().map(|r| r.id.clone()).collect();
        let mut orphan_ids = std::collections::HashSet::new();
        let mut entries = tokio::fs::read_dir(&self.pods_dir)
            .await
            .map_err(internal("cannot read the pods directory"))?;
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(internal("cannot read the pods directory"))?
        {
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if name.starts_with('.') && name.contains(".tmp") {
                let _ = tokio::fs::remove_file(&path).await;
                out.temp_files.push(path);
                continue;
            }
            if known.contains(&name) || !entry.file_type().await.is_ok_and(|t| t.is_dir()) {
                continue;
            }
            tracing::warn!(dir = %path.display(), "releasing a pod directory no record owns");
            self.cleanup(&path).await?;
            remove_tree(path.clone()).await?;
            out.orphan_dirs.push(path);
            orphan_ids.insert(name);
        }
        // Writable roots of pods no record owns (their pod directory is gone already, or the
        // monitor died before removing them).
        if let Ok(mut roots) = tokio::fs::read_dir(&self.config.container_root).await {
            while let Ok(Some(entry)) = roots.next_entry().await {
                let name = entry.file_name().to_string_lossy().into_owned();
                if known.contains(&name) {
                    continue;
                }
                tracing::warn!(dir = %entry.path().display(), "removing writable layers no pod owns");
                remove_tree(entry.path()).await?;
                out.orphan_dirs.push(entry.path());
            }
        }
        for record in self.store.all() {
            let Ok(mut files) = tokio::fs::read_dir(&record.dir).await else {
                continue;
            };
            while let Ok(Some(f)) = files.next_entry().await {
                let name = f.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') && name.contains(".tmp.") {
                    let _ = tokio::fs::remove_file(f.path()).await;
                    out.temp_files.push(f.path());
                }
            }
        }
        let parent = DEFAULT_CGROUP_PARENT.trim_start_matches('/').to_owned();
        let orphans = tokio::task::spawn_blocking(move || orphan_cgroups(&parent, &orphan_ids))
            .await
            .map_err(|source| PodError::Task {
                what: "cgroup sweep",
                source,
            })?;
        out.orphan_cgroups = orphans;
        Ok(())
    }

    /// The container part of the start-up sweep: a record left `creating` is rolled back (the
    /// monitor removes whatever it made of it), a record whose pod is gone or whose pod's
    /// monitor state no longer holds it is forgotten (its removal was cut short), and a
    /// container a running monitor holds that no record owns (asked once the monitor has
    /// finished what it was doing) is removed from the monitor. The
    /// image leases of what is forgotten are left to the caller (they have no record now).
    async fn recover_containers(&self, out: &mut Recovery) -> Result<(), PodError> {
        let pods: HashMap<String, Arc<PodRecord>> = self
            .store
            .all()
            .into_iter()
            .map(|r| (r.id.clone(), r))
            .collect();
        let mut records = self.container_ids_by_pod()?;
        for (pod_id, ids) in &mut records {
            let pod = pods.get(pod_id);
            let alive = pod.is_some_and(|p| monitor_alive(p));
            let state = pod.and_then(|p| self.monitor_state(p));
            let mut kept = Vec::new();
            for (id, creating) in ids.drain(..) {
                if creating {
                    if let Some(p) = pod.filter(|_| alive) {
                        tracing::warn!(%id, "rolling back an interrupted CreateContainer");
                        if let Err(e) =
                            client::request(&p.dir, RequestBody::RemoveContainer { id: id.clone() })
                                .await
                        {
                            tracing::error!(%id, error = %e, "the monitor cannot remove an interrupted container");
                            kept.push((id, creating));
                            continue;
                        }
                    }
                    self.delete_container(&id)?;
                    out.containers_rolled_back.push(id);
                    continue;
                }
                let gone = match (pod, &state) {
                    (None, _) => true,
                    (Some(_), Some(s)) => !s.containers.contains_key(&id),
                    (Some(_), None) => false,
                };
                if gone {
                    tracing::warn!(%id, "forgetting a container its pod no longer has");
                    self.delete_container(&id)?;
                    out.containers_forgotten.push(id);
                } else {
                    kept.push((id, creating));
                }
            }
            *ids = kept;
        }
        for (pod_id, pod) in &pods {
            if !monitor_alive(pod) {
                continue;
            }
            // Asked, not read from `state.json`: the monitor answers after any request it is
            // still working on, so a container the dead daemon's CreateContainer is making is
            // in the answer.
            let state = match client::request(&pod.dir, RequestBody::Status).await {
                Ok(state) => state,
                Err(e) => {
                    tracing::error!(pod = %pod_id, error = %e, "cannot ask the monitor for its containers");
                    continue;
                }
            };
            let owned = records.get(pod_id);
            for id in state.containers.keys() {
                if owned.is_some_and(|ids| ids.iter().any(|(i, _)| i == id)) {
                    continue;
                }
                tracing::warn!(%id, pod = %pod_id, "removing a container no record owns");
                match client::request(&pod.dir, RequestBody::RemoveContainer { id: id.clone() })
                    .await
                {
                    Ok(_) => out.orphan_containers.push(id.clone()),
                    Err(e) => {
                        tracing::error!(%id, error = %e, "the monitor cannot remove an orphaned container")
                    }
                }
            }
        }
        Ok(())
    }

    /// The network part of the start-up recovery: pods left with their network pending are
    /// rolled back (DEL, then removal), and cached CNI attachments no pod owns are torn down.
    /// Failures are logged.
    async fn recover_network(self: &Arc<Self>, out: &mut Recovery) {
        let pods = match self.list() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "cannot list pods to recover");
                return;
            }
        };
        for pod in &pods {
            let r = &pod.record;
            if r.network != NetworkPhase::Pending {
                continue;
            }
            tracing::warn!(id = %r.id, "rolling back a RunPodSandbox interrupted before its network was set up");
            if let Err(e) = self.detach_interrupted(r).await {
                tracing::error!(id = %r.id, error = %e, "cannot tear down the network of an interrupted pod");
                continue;
            }
            match self.remove_pod(&r.id).await {
                Ok(()) => out.networks_rolled_back.push(r.id.clone()),
                Err(e) => {
                    tracing::error!(id = %r.id, error = %e, "cannot remove an interrupted pod")
                }
            }
        }
        let cached = match self.config.cni.cached_ids().await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::error!(error = %e, "cannot list the CNI cache");
                return;
            }
        };
        for id in cached {
            if pods.iter().any(|p| p.record.id == id) {
                continue;
            }
            tracing::warn!(%id, "tearing down a CNI attachment no pod owns");
            let orphan = PodNetwork {
                id: id.clone(),
                ..PodNetwork::default()
            };
            match self.config.cni.del(&orphan).await {
                Ok(()) => out.orphan_attachments.push(id),
                Err(e) => {
                    tracing::error!(%id, error = %e, "cannot tear down an orphaned CNI attachment")
                }
            }
        }
    }
}

/// Removes the `crius-<id>` cgroups (and their empty children, deepest first) below `parent`
/// in every v1 hierarchy and the unified one for each `id` of `orphans`: pods whose directory
/// this criusd found without a record. Only those: another criusd on the node (another root)
/// owns cgroups under the same parent. A cgroup that still holds processes stays. Returns the
/// pod cgroups removed.
fn orphan_cgroups(parent: &str, orphans: &std::collections::HashSet<String>) -> Vec<PathBuf> {
    let text = crius_proto::mountinfo::read_self().unwrap_or_default();
    let mut removed = Vec::new();
    for mount in crius_proto::mountinfo::parse(&text) {
        if !matches!(mount.fs_type, "cgroup" | "cgroup2") {
            continue;
        }
        let base = mount.mount_point.join(parent);
        let Ok(entries) = std::fs::read_dir(&base) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(id) = name.strip_prefix("crius-") else {
                continue;
            };
            if !orphans.contains(id) || !entry.path().is_dir() {
                continue;
            }
            if remove_cgroup_tree(&entry.path()) {
                removed.push(entry.path());
            }
        }
    }
    removed
}

/// Removes a cgroup directory and its children, deepest first; false if one could not go
/// (it still holds processes).
fn remove_cgroup_tree(dir: &Path) -> bool {
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) && !remove_cgroup_tree(&e.path()) {
                return false;
            }
        }
    }
    std::fs::remove_dir(dir).is_ok()
}

impl Pods {
    /// Releases every image lease whose container has no record, and with it the layers
    /// nothing else owns. Failures are logged.
    async fn release_orphan_leases(&self, out: &mut Recovery) {
        let known: std::collections::HashSet<String> = self
            .container_records()
            .iter()
            .map(|r| r.id.clone())
            .collect();
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
            match self.images.release(&lease).await {
                Ok(()) => out.orphan_leases.push(lease),
                Err(e) => {
                    tracing::error!(%lease, error = %e, "cannot release an orphaned image lease");
                }
            }
        }
    }
}
