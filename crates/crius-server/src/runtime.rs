//! The CRI `RuntimeService`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use cri_api::v1::runtime_service_server::RuntimeService;
use cri_api::v1::*;

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
            self.0.status(request.get_ref().verbose),
        ))
    }

    unimplemented_rpcs! {
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse = "RunPodSandbox";
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse = "StopPodSandbox";
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse = "RemovePodSandbox";
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse = "PodSandboxStatus";
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse = "ListPodSandbox";
        stream_pod_sandboxes(StreamPodSandboxesRequest) -> Self::StreamPodSandboxesStream = "StreamPodSandboxes";
        create_container(CreateContainerRequest) -> CreateContainerResponse = "CreateContainer";
        start_container(StartContainerRequest) -> StartContainerResponse = "StartContainer";
        stop_container(StopContainerRequest) -> StopContainerResponse = "StopContainer";
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse = "RemoveContainer";
        list_containers(ListContainersRequest) -> ListContainersResponse = "ListContainers";
        stream_containers(StreamContainersRequest) -> Self::StreamContainersStream = "StreamContainers";
        container_status(ContainerStatusRequest) -> ContainerStatusResponse = "ContainerStatus";
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse = "UpdateContainerResources";
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse = "ReopenContainerLog";
        exec_sync(ExecSyncRequest) -> ExecSyncResponse = "ExecSync";
        exec(ExecRequest) -> ExecResponse = "Exec";
        attach(AttachRequest) -> AttachResponse = "Attach";
        port_forward(PortForwardRequest) -> PortForwardResponse = "PortForward";
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse = "ContainerStats";
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse = "ListContainerStats";
        stream_container_stats(StreamContainerStatsRequest) -> Self::StreamContainerStatsStream = "StreamContainerStats";
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse = "PodSandboxStats";
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse = "ListPodSandboxStats";
        stream_pod_sandbox_stats(StreamPodSandboxStatsRequest) -> Self::StreamPodSandboxStatsStream = "StreamPodSandboxStats";
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse = "UpdateRuntimeConfig";
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse = "CheckpointContainer";
        get_container_events(GetEventsRequest) -> Self::GetContainerEventsStream = "GetContainerEvents";
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse = "ListMetricDescriptors";
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse = "ListPodSandboxMetrics";
        stream_pod_sandbox_metrics(StreamPodSandboxMetricsRequest) -> Self::StreamPodSandboxMetricsStream = "StreamPodSandboxMetrics";
        runtime_config(RuntimeConfigRequest) -> RuntimeConfigResponse = "RuntimeConfig";
        update_pod_sandbox_resources(UpdatePodSandboxResourcesRequest) -> UpdatePodSandboxResourcesResponse = "UpdatePodSandboxResources";
    }
}

/// Condition type: the runtime can serve containers.
pub const RUNTIME_READY: &str = "RuntimeReady";
/// Condition type: the pod network is ready.
pub const NETWORK_READY: &str = "NetworkReady";

impl Cri {
    /// Builds the `Status` answer: readiness conditions, handlers and features.
    pub(crate) fn status(&self, verbose: bool) -> StatusResponse {
        let network = network_condition(&self.config.cni_conf_dir);
        let runtime = RuntimeCondition {
            r#type: RUNTIME_READY.into(),
            status: true,
            reason: String::new(),
            message: String::new(),
        };
        let mut info = HashMap::new();
        if verbose {
            let config = serde_json::json!({
                "root": self.config.root,
                "state": self.config.state,
                "listen": self.config.listen,
                "cniConfDir": self.config.cni_conf_dir,
                "cniBinDirs": self.config.cni_bin_dirs,
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
                    recursive_read_only_mounts: false,
                    user_namespaces: false,
                }),
            }],
            features: Some(RuntimeFeatures {
                supplemental_groups_policy: false,
                user_namespaces_host_network: false,
            }),
        }
    }
}

/// `NetworkReady`: false with a reason until pods can be networked through CNI.
fn network_condition(cni_conf_dir: &Path) -> RuntimeCondition {
    let has_conf = std::fs::read_dir(cni_conf_dir)
        .map(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.ends_with(".conflist") || name.ends_with(".conf") || name.ends_with(".json")
            })
        })
        .unwrap_or(false);
    let message = if has_conf {
        "CNI pod networking is not implemented by crius yet".to_owned()
    } else {
        format!(
            "no CNI network configuration in {}, and CNI pod networking is not implemented by crius yet",
            cni_conf_dir.display()
        )
    };
    RuntimeCondition {
        r#type: NETWORK_READY.into(),
        status: false,
        reason: "NetworkPluginNotReady".into(),
        message,
    }
}
