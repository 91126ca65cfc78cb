//! The CRI `RuntimeService`.

use std::collections::BTreeMap;
use std::sync::Arc;

use cri_api::v1::runtime_service_server::RuntimeService;
use cri_api::v1::*;

use crate::pods::{pod_resources, pod_spec, sandbox_status};
use crate::status::{invalid_status, pod_error};
use crate::{
    BoxStream, Cri, RUNTIME_API_VERSION, RUNTIME_NAME, RUNTIME_VERSION, unimplemented_rpcs,
};

/// The `RuntimeService` implementation.
#[derive(Debug)]
pub struct Runtime(pub(crate) Arc<Cri>);

#[tonic::async_trait]
impl RuntimeService for Runtime {
    type GetContainerEventsStream = BoxStream<ContainerEventResponse>;
    type StreamContainerStatsStream = BoxStream<StreamContainerStatsResponse>;
    type StreamContainersStream = BoxStream<StreamContainersResponse>;
    type StreamPodSandboxMetricsStream = BoxStream<StreamPodSandboxMetricsResponse>;
    type StreamPodSandboxStatsStream = BoxStream<StreamPodSandboxStatsResponse>;
    type StreamPodSandboxesStream = BoxStream<StreamPodSandboxesResponse>;

    async fn version(
        &self,
        _request: tonic::Request<VersionRequest>,
    ) -> Result<tonic::Response<VersionResponse>, tonic::Status> {
        Ok(tonic::Response::new(VersionResponse {
            version: "0.1.0".into(),
            runtime_name: RUNTIME_NAME.into(),
            runtime_version: RUNTIME_VERSION.into(),
            runtime_api_version: RUNTIME_API_VERSION.into(),
        }))
    }

    async fn status(
        &self,
        request: tonic::Request<StatusRequest>,
    ) -> Result<tonic::Response<StatusResponse>, tonic::Status> {
        Ok(tonic::Response::new(
            self.0.status(request.get_ref().verbose).await,
        ))
    }

    async fn run_pod_sandbox(
        &self,
        request: tonic::Request<RunPodSandboxRequest>,
    ) -> Result<tonic::Response<RunPodSandboxResponse>, tonic::Status> {
        crate::fields::refuse_unhandled_pod(request.get_ref().config.as_ref())?;
        let request = request.into_inner();
        let config = request
            .config
            .ok_or_else(|| tonic::Status::invalid_argument("config: is required"))?;
        let spec = pod_spec(config, request.runtime_handler)?;
        let userns = crate::metrics::UsernsPod::new(&spec);
        let id = self
            .0
            .pods
            .run(spec, self.0.pod_cidrs.ip_ranges())
            .await
            .map_err(pod_error)?;
        tracing::Span::current().record("id", id.as_str());
        self.0.events.sandbox_started(&id);
        userns.started();
        Ok(tonic::Response::new(RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        request: tonic::Request<StopPodSandboxRequest>,
    ) -> Result<tonic::Response<StopPodSandboxResponse>, tonic::Status> {
        let id = request.into_inner().pod_sandbox_id;
        tracing::Span::current().record("id", id.as_str());
        self.0.pods.stop(&id).await.map_err(pod_error)?;
        self.0.events.sandbox_stopped(&id);
        Ok(tonic::Response::new(StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        request: tonic::Request<RemovePodSandboxRequest>,
    ) -> Result<tonic::Response<RemovePodSandboxResponse>, tonic::Status> {
        let id = request.into_inner().pod_sandbox_id;
        tracing::Span::current().record("id", id.as_str());
        let deleted = self.0.events.before_sandbox_removal(&id);
        self.0.pods.remove(&id).await.map_err(pod_error)?;
        self.0.events.removed(deleted);
        Ok(tonic::Response::new(RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        request: tonic::Request<PodSandboxStatusRequest>,
    ) -> Result<tonic::Response<PodSandboxStatusResponse>, tonic::Status> {
        let request = request.into_inner();
        tracing::Span::current().record("id", request.pod_sandbox_id.as_str());
        let pod = self
            .0
            .pods
            .get(&request.pod_sandbox_id)
            .map_err(pod_error)?;
        let mut info = BTreeMap::new();
        if request.verbose {
            let r = &pod.record;
            let verbose = serde_json::json!({
                "monitorPid": r.monitor_pid,
                "sandboxPid": r.sandbox_pid,
                "netns": r.netns,
                "podDir": r.dir,
                "podFilesDir": r.files_dir(),
                "recordedState": format!("{:?}", r.state),
                "sandboxExit": self.0.pods.monitor_state(r).and_then(|s| s.exit).map(|e| {
                    serde_json::json!({ "code": e.code, "atNs": e.at_ns })
                }),
                "runtimeSpec": {
                    "hostname": r.spec.hostname,
                    "cgroupParent": r.spec.cgroup_parent,
                    "logDirectory": r.spec.log_directory,
                },
            });
            info.insert("info".to_owned(), verbose.to_string());
        }
        Ok(tonic::Response::new(PodSandboxStatusResponse {
            status: Some(sandbox_status(&pod)),
            info,
            containers_statuses: Vec::new(),
            timestamp: crius_runtime::now_ns(),
        }))
    }

    async fn list_pod_sandbox(
        &self,
        request: tonic::Request<ListPodSandboxRequest>,
    ) -> Result<tonic::Response<ListPodSandboxResponse>, tonic::Status> {
        let items = self.0.list_pods(request.into_inner().filter)?;
        Ok(tonic::Response::new(ListPodSandboxResponse { items }))
    }

    async fn stream_pod_sandboxes(
        &self,
        request: tonic::Request<StreamPodSandboxesRequest>,
    ) -> Result<tonic::Response<Self::StreamPodSandboxesStream>, tonic::Status> {
        let items = self.0.list_pods(request.into_inner().filter)?;
        let chunks: Vec<Result<StreamPodSandboxesResponse, tonic::Status>> = items
            .chunks(STREAM_CHUNK)
            .map(|c| {
                Ok(StreamPodSandboxesResponse {
                    pod_sandboxes: c.to_vec(),
                })
            })
            .collect();
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn runtime_config(
        &self,
        _request: tonic::Request<RuntimeConfigRequest>,
    ) -> Result<tonic::Response<RuntimeConfigResponse>, tonic::Status> {
        let driver = match self.0.pods.cgroup_driver() {
            crius_runtime::CgroupDriver::Cgroupfs => CgroupDriver::Cgroupfs,
            crius_runtime::CgroupDriver::Systemd => CgroupDriver::Systemd,
        };
        Ok(tonic::Response::new(RuntimeConfigResponse {
            linux: Some(LinuxRuntimeConfiguration {
                cgroup_driver: driver.into(),
            }),
        }))
    }

    async fn update_runtime_config(
        &self,
        request: tonic::Request<UpdateRuntimeConfigRequest>,
    ) -> Result<tonic::Response<UpdateRuntimeConfigResponse>, tonic::Status> {
        let pod_cidr = request
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        self.0.pod_cidrs.set(&pod_cidr)?;
        Ok(tonic::Response::new(UpdateRuntimeConfigResponse {}))
    }

    async fn update_pod_sandbox_resources(
        &self,
        request: tonic::Request<UpdatePodSandboxResourcesRequest>,
    ) -> Result<tonic::Response<UpdatePodSandboxResourcesResponse>, tonic::Status> {
        crate::fields::refuse_unhandled_pod_update(request.get_ref())?;
        let request = request.into_inner();
        tracing::Span::current().record("id", request.pod_sandbox_id.as_str());
        let resources = pod_resources(
            ("resources", request.resources.as_ref()),
            ("overhead", request.overhead.as_ref()),
        )
        .and_then(|r| {
            crius_runtime::validate::validate_resources("resources", &r)?;
            Ok(r)
        })
        .map_err(invalid_status)?;
        self.0
            .pods
            .update_resources(&request.pod_sandbox_id, resources)
            .await
            .map_err(pod_error)?;
        Ok(tonic::Response::new(UpdatePodSandboxResourcesResponse {}))
    }

    async fn create_container(
        &self,
        request: tonic::Request<CreateContainerRequest>,
    ) -> Result<tonic::Response<CreateContainerResponse>, tonic::Status> {
        let request = request.into_inner();
        tracing::Span::current().record("id", request.pod_sandbox_id.as_str());
        let id = self.0.create_container(request).await?;
        self.0.events.container_created(&id);
        Ok(tonic::Response::new(CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        request: tonic::Request<StartContainerRequest>,
    ) -> Result<tonic::Response<StartContainerResponse>, tonic::Status> {
        let id = request.into_inner().container_id;
        tracing::Span::current().record("id", id.as_str());
        self.0.pods.start_container(&id).await.map_err(pod_error)?;
        self.0.events.container_started(&id);
        Ok(tonic::Response::new(StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        request: tonic::Request<StopContainerRequest>,
    ) -> Result<tonic::Response<StopContainerResponse>, tonic::Status> {
        let request = request.into_inner();
        tracing::Span::current().record("id", request.container_id.as_str());
        self.0
            .stop_container(&request.container_id, request.timeout)
            .await?;
        self.0.events.container_stopped(&request.container_id);
        Ok(tonic::Response::new(StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        request: tonic::Request<RemoveContainerRequest>,
    ) -> Result<tonic::Response<RemoveContainerResponse>, tonic::Status> {
        let id = request.into_inner().container_id;
        tracing::Span::current().record("id", id.as_str());
        let deleted = self.0.events.before_container_removal(&id);
        self.0.remove_container(&id).await?;
        self.0.events.removed(deleted);
        Ok(tonic::Response::new(RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: tonic::Request<ListContainersRequest>,
    ) -> Result<tonic::Response<ListContainersResponse>, tonic::Status> {
        let containers = self.0.list_containers(request.into_inner().filter)?;
        Ok(tonic::Response::new(ListContainersResponse { containers }))
    }

    async fn stream_containers(
        &self,
        request: tonic::Request<StreamContainersRequest>,
    ) -> Result<tonic::Response<Self::StreamContainersStream>, tonic::Status> {
        let items = self.0.list_containers(request.into_inner().filter)?;
        let chunks: Vec<Result<StreamContainersResponse, tonic::Status>> = items
            .chunks(STREAM_CHUNK)
            .map(|c| {
                Ok(StreamContainersResponse {
                    containers: c.to_vec(),
                })
            })
            .collect();
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn container_status(
        &self,
        request: tonic::Request<ContainerStatusRequest>,
    ) -> Result<tonic::Response<ContainerStatusResponse>, tonic::Status> {
        let request = request.into_inner();
        tracing::Span::current().record("id", request.container_id.as_str());
        Ok(tonic::Response::new(self.0.container_status(
            &request.container_id,
            request.verbose,
        )?))
    }

    async fn update_container_resources(
        &self,
        request: tonic::Request<UpdateContainerResourcesRequest>,
    ) -> Result<tonic::Response<UpdateContainerResourcesResponse>, tonic::Status> {
        crate::fields::refuse_unhandled_container_update(request.get_ref())?;
        let request = request.into_inner();
        tracing::Span::current().record("id", request.container_id.as_str());
        let linux = request.linux.unwrap_or_default();
        let resources = crate::containers::container_resources("linux", &linux)?;
        self.0
            .pods
            .update_container_resources(&request.container_id, resources)
            .await
            .map_err(pod_error)?;
        Ok(tonic::Response::new(UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        request: tonic::Request<ReopenContainerLogRequest>,
    ) -> Result<tonic::Response<ReopenContainerLogResponse>, tonic::Status> {
        let id = request.into_inner().container_id;
        tracing::Span::current().record("id", id.as_str());
        let view = self.0.pods.get_container(&id).map_err(pod_error)?;
        let pod = self.0.pods.get(&view.record.pod_id).map_err(pod_error)?;
        let directory = std::path::Path::new(&pod.record.spec.log_directory);
        if let Ok(relative) = std::path::Path::new(&view.record.log_path).strip_prefix(directory) {
            crius_runtime::validate::check_log_path_beneath("log_path", directory, relative)
                .map_err(invalid_status)?;
        }
        self.0
            .pods
            .reopen_container_log(&id)
            .await
            .map_err(pod_error)?;
        Ok(tonic::Response::new(ReopenContainerLogResponse {}))
    }

    async fn exec_sync(
        &self,
        request: tonic::Request<ExecSyncRequest>,
    ) -> Result<tonic::Response<ExecSyncResponse>, tonic::Status> {
        let request = request.into_inner();
        tracing::Span::current().record("id", request.container_id.as_str());
        let timeout = std::time::Duration::from_secs(u64::try_from(request.timeout).unwrap_or(0));
        match self
            .0
            .pods
            .exec_sync(&request.container_id, &request.cmd, timeout)
            .await
        {
            Ok(out) => Ok(tonic::Response::new(ExecSyncResponse {
                stdout: out.stdout,
                stderr: out.stderr,
                exit_code: out.exit_code,
            })),
            Err(crius_runtime::ExecError::Timeout(t)) => Err(tonic::Status::deadline_exceeded(
                format!("command {:?} timed out after {t:?}", request.cmd),
            )),
            Err(crius_runtime::ExecError::Pod(e)) => Err(pod_error(e)),
        }
    }

    async fn container_stats(
        &self,
        request: tonic::Request<ContainerStatsRequest>,
    ) -> Result<tonic::Response<ContainerStatsResponse>, tonic::Status> {
        let id = request.into_inner().container_id;
        tracing::Span::current().record("id", id.as_str());
        let stats = self.0.container_stats(&id).await?;
        Ok(tonic::Response::new(ContainerStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_container_stats(
        &self,
        request: tonic::Request<ListContainerStatsRequest>,
    ) -> Result<tonic::Response<ListContainerStatsResponse>, tonic::Status> {
        let stats = self
            .0
            .list_container_stats(request.into_inner().filter)
            .await?;
        Ok(tonic::Response::new(ListContainerStatsResponse { stats }))
    }

    async fn stream_container_stats(
        &self,
        request: tonic::Request<StreamContainerStatsRequest>,
    ) -> Result<tonic::Response<Self::StreamContainerStatsStream>, tonic::Status> {
        let stats = self
            .0
            .list_container_stats(request.into_inner().filter)
            .await?;
        let chunks: Vec<Result<StreamContainerStatsResponse, tonic::Status>> = stats
            .chunks(crate::stats::STREAM_CHUNK)
            .map(|c| {
                Ok(StreamContainerStatsResponse {
                    container_stats: c.to_vec(),
                })
            })
            .collect();
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn pod_sandbox_stats(
        &self,
        request: tonic::Request<PodSandboxStatsRequest>,
    ) -> Result<tonic::Response<PodSandboxStatsResponse>, tonic::Status> {
        let id = request.into_inner().pod_sandbox_id;
        tracing::Span::current().record("id", id.as_str());
        let stats = self.0.pod_sandbox_stats(&id).await?;
        Ok(tonic::Response::new(PodSandboxStatsResponse {
            stats: Some(stats),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        request: tonic::Request<ListPodSandboxStatsRequest>,
    ) -> Result<tonic::Response<ListPodSandboxStatsResponse>, tonic::Status> {
        let stats = self
            .0
            .list_pod_sandbox_stats(request.into_inner().filter)
            .await?;
        Ok(tonic::Response::new(ListPodSandboxStatsResponse { stats }))
    }

    async fn stream_pod_sandbox_stats(
        &self,
        request: tonic::Request<StreamPodSandboxStatsRequest>,
    ) -> Result<tonic::Response<Self::StreamPodSandboxStatsStream>, tonic::Status> {
        let stats = self
            .0
            .list_pod_sandbox_stats(request.into_inner().filter)
            .await?;
        let chunks: Vec<Result<StreamPodSandboxStatsResponse, tonic::Status>> = stats
            .chunks(crate::stats::STREAM_CHUNK)
            .map(|c| {
                Ok(StreamPodSandboxStatsResponse {
                    pod_sandbox_stats: c.to_vec(),
                })
            })
            .collect();
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn list_metric_descriptors(
        &self,
        _request: tonic::Request<ListMetricDescriptorsRequest>,
    ) -> Result<tonic::Response<ListMetricDescriptorsResponse>, tonic::Status> {
        Ok(tonic::Response::new(ListMetricDescriptorsResponse {
            descriptors: crate::stats::metric_descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _request: tonic::Request<ListPodSandboxMetricsRequest>,
    ) -> Result<tonic::Response<ListPodSandboxMetricsResponse>, tonic::Status> {
        let pod_metrics = self.0.pod_sandbox_metrics().await?;
        Ok(tonic::Response::new(ListPodSandboxMetricsResponse {
            pod_metrics,
        }))
    }

    async fn stream_pod_sandbox_metrics(
        &self,
        _request: tonic::Request<StreamPodSandboxMetricsRequest>,
    ) -> Result<tonic::Response<Self::StreamPodSandboxMetricsStream>, tonic::Status> {
        let all = self.0.pod_sandbox_metrics().await?;
        let chunks: Vec<Result<StreamPodSandboxMetricsResponse, tonic::Status>> = all
            .chunks(crate::stats::STREAM_CHUNK)
            .map(|c| {
                Ok(StreamPodSandboxMetricsResponse {
                    pod_sandbox_metrics: c.to_vec(),
                })
            })
            .collect();
        Ok(tonic::Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn get_container_events(
        &self,
        _request: tonic::Request<GetEventsRequest>,
    ) -> Result<tonic::Response<Self::GetContainerEventsStream>, tonic::Status> {
        Ok(tonic::Response::new(self.0.events.subscribe()))
    }

    async fn exec(
        &self,
        request: tonic::Request<ExecRequest>,
    ) -> Result<tonic::Response<ExecResponse>, tonic::Status> {
        let request = request.into_inner();
        tracing::Span::current().record("id", request.container_id.as_str());
        Ok(tonic::Response::new(self.0.exec(request).await?))
    }

    async fn attach(
        &self,
        request: tonic::Request<AttachRequest>,
    ) -> Result<tonic::Response<AttachResponse>, tonic::Status> {
        let request = request.into_inner();
        tracing::Span::current().record("id", request.container_id.as_str());
        Ok(tonic::Response::new(self.0.attach(request).await?))
    }

    async fn port_forward(
        &self,
        request: tonic::Request<PortForwardRequest>,
    ) -> Result<tonic::Response<PortForwardResponse>, tonic::Status> {
        let request = request.into_inner();
        tracing::Span::current().record("id", request.pod_sandbox_id.as_str());
        Ok(tonic::Response::new(self.0.port_forward(request).await?))
    }

    unimplemented_rpcs! {
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse = "CheckpointContainer";
    }
}

/// Condition type: the runtime can serve containers.
pub const RUNTIME_READY: &str = "RuntimeReady";

impl Cri {
    /// Builds the `Status` answer: readiness conditions, handlers and features.
    pub(crate) async fn status(&self, verbose: bool) -> StatusResponse {
        let network = self.network_condition().await;
        let runtime = RuntimeCondition {
            r#type: RUNTIME_READY.into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        };
        let idmap_support = self.pods.idmap_support();
        let idmap = *idmap_support == crius_runtime::IdmapSupport::Supported;
        let mut info = BTreeMap::new();
        if verbose {
            let idmap_text = match idmap_support {
                crius_runtime::IdmapSupport::Supported => "supported".to_owned(),
                crius_runtime::IdmapSupport::Unsupported(reason) => reason.clone(),
                crius_runtime::IdmapSupport::Unknown => "not probed".to_owned(),
            };
            let config = serde_json::json!({
                "cgroupDriver": format!("{:?}", self.pods.cgroup_driver()).to_lowercase(),
                "idmappedMounts": idmap_text,
                "apparmor": match self.pods.apparmor() {
                    crius_runtime::apparmor::Node::Off(reason) => format!("off: {reason}"),
                    crius_runtime::apparmor::Node::On { parser: Some(_), .. } => "enforced".into(),
                    crius_runtime::apparmor::Node::On { parser: None, .. } => {
                        "enforced; no apparmor_parser for crius' default profile".into()
                    }
                },
                "root": self.config.root,
                "state": self.config.state,
                "listen": self.config.listen,
                "cniConfDir": self.config.cni_conf_dir,
                "cniBinDirs": self.config.cni_bin_dirs,
                "podCidrs": self.pod_cidrs.get(),
            });
            info.insert("config".to_owned(), config.to_string());
        }
        StatusResponse {
            status: Some(RuntimeStatus {
                conditions: vec![runtime, network],
            }),
            info,
            runtime_handlers: vec![RuntimeHandler {
                name: String::new(),
                features: Some(RuntimeHandlerFeatures {
                    recursive_read_only_mounts: idmap,
                    user_namespaces: idmap,
                }),
            }],
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: true,
                // The host network's sysfs is bound read-only from the host (no new sysfs,
                // which the host's network namespace would forbid in a user namespace).
                user_namespaces_host_network: idmap,
            }),
        }
    }
}

/// Pods per message of `StreamPodSandboxes`.
const STREAM_CHUNK: usize = 100;
