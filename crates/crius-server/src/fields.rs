//! Every field of every CRI request crius receives is decided: either **honoured** (and a test
//! proves it) or **refused** with a clear error naming it (InvalidArgument, FailedPrecondition or
//! Unimplemented), never silently dropped. A third, small table holds fields whose acceptance
//! without effect *is* the contract (a copy of a configuration crius already has, an
//! informational hint, the infra-container settings of a sandbox that has no infra container);
//! each says why.
//!
//! The guard test walks the request messages of both CRI services from `proto/api.proto`
//! (every field, recursively) and fails on any field in no table, so a new proto field fails
//! CI until someone decides. Paths are dotted from the request message, repeated and map
//! fields without an index (`CreateContainerRequest.config.mounts.host_path`). A refused or
//! accepted entry may name a message field, and then covers every field beneath it; an
//! honoured entry names one field. The tables are rendered in `docs/architecture.md`
//! ("CRI fields: honoured or refused"); a test checks that every path appears there.
//!
//! The `refuse_unhandled_*` functions refuse, at the top of their handlers, what no other code
//! path refuses.

use std::fmt::Display;

use cri_api::v1::*;
use tonic::{Code, Status};

/// A field crius acts on.
#[cfg_attr(not(test), allow(dead_code, reason = "read by the guard tests"))]
pub(crate) struct Honoured {
    /// The dotted field path from the request message.
    pub path: &'static str,
    /// The test that proves it: `<file from the repository root>::<test function>`.
    pub proof: &'static str,
}

/// A field crius refuses, when set to a value it cannot apply.
#[cfg_attr(not(test), allow(dead_code, reason = "read by the guard tests"))]
pub(crate) struct Refused {
    /// The dotted field path from the request message (a message field covers its fields).
    pub path: &'static str,
    /// The gRPC code of the refusal.
    pub code: Code,
    /// Which values are refused (the default value of a field is never refused).
    pub when: &'static str,
    /// The function that refuses it: `<file>::<function>`.
    pub place: &'static str,
    /// The test that proves the refusal.
    pub proof: &'static str,
}

/// A field accepted without effect because that is what the CRI contract means for crius.
#[cfg_attr(not(test), allow(dead_code, reason = "read by the guard tests"))]
pub(crate) struct Accepted {
    /// The dotted field path from the request message (a message field covers its fields).
    pub path: &'static str,
    /// Why accepting it without effect is right.
    pub why: &'static str,
    /// The test that shows it accepted.
    pub proof: &'static str,
}

/// The fields crius acts on, each with the test that proves it.
#[cfg_attr(not(test), allow(dead_code, reason = "read by the guard tests"))]
const HONOURED: &[Honoured] = &[
    Honoured {
        path: "RunPodSandboxRequest.config.metadata.name",
        proof: "tests/tests/stats.rs::pod_sandbox_metrics_match_their_descriptors",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.metadata.uid",
        proof: "tests/tests/events.rs::events_follow_stopped_and_self_exiting_containers_in_order",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.metadata.namespace",
        proof: "tests/tests/stats.rs::pod_sandbox_metrics_match_their_descriptors",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.metadata.attempt",
        proof: "tests/tests/events.rs::events_follow_stopped_and_self_exiting_containers_in_order",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.hostname",
        proof: "tests/tests/sandbox.rs::userns_pod_owns_its_namespaces",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.log_directory",
        proof: "tests/tests/host_exposure.rs::log_paths_cannot_leave_the_pods_log_directory",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.dns_config.servers",
        proof: "tests/tests/sandbox.rs::userns_pod_owns_its_namespaces",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.dns_config.searches",
        proof: "crates/crius-runtime/src/files.rs::resolv_conf_from_dns_config",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.dns_config.options",
        proof: "tests/tests/sandbox.rs::userns_pod_owns_its_namespaces",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.port_mappings.protocol",
        proof: "crates/crius-net/src/pod.rs::capability_args_follow_the_cni_conventions",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.port_mappings.container_port",
        proof: "crates/crius-net/src/pod.rs::capability_args_follow_the_cni_conventions",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.port_mappings.host_port",
        proof: "crates/crius-net/src/pod.rs::capability_args_follow_the_cni_conventions",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.port_mappings.host_ip",
        proof: "crates/crius-net/src/pod.rs::capability_args_follow_the_cni_conventions",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.labels",
        proof: "tests/tests/sandbox.rs::plain_and_host_network_pods",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.annotations",
        proof: "tests/tests/sandbox.rs::plain_and_host_network_pods",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.cgroup_parent",
        proof: "tests/tests/host_exposure.rs::cgroup_parent_cannot_nest_in_crius_or_another_pod",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.security_context.namespace_options.network",
        proof: "tests/tests/sandbox.rs::failed_sandbox_rolls_back_and_host_namespaces_work",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.security_context.namespace_options.pid",
        proof: "tests/tests/sandbox.rs::failed_sandbox_rolls_back_and_host_namespaces_work",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.security_context.namespace_options.ipc",
        proof: "tests/tests/sandbox.rs::failed_sandbox_rolls_back_and_host_namespaces_work",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.security_context.namespace_options.userns_options.mode",
        proof: "tests/tests/sandbox.rs::userns_pod_owns_its_namespaces",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.security_context.namespace_options.userns_options.uids.host_id",
        proof: "tests/tests/sandbox.rs::userns_pod_owns_its_namespaces",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.security_context.namespace_options.userns_options.uids.container_id",
        proof: "tests/tests/sandbox.rs::userns_pod_owns_its_namespaces",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.security_context.namespace_options.userns_options.uids.length",
        proof: "tests/tests/sandbox.rs::userns_pod_owns_its_namespaces",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.security_context.namespace_options.userns_options.gids.host_id",
        proof: "tests/tests/sandbox.rs::userns_pod_owns_its_namespaces",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.security_context.namespace_options.userns_options.gids.container_id",
        proof: "tests/tests/sandbox.rs::userns_pod_owns_its_namespaces",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.security_context.namespace_options.userns_options.gids.length",
        proof: "tests/tests/sandbox.rs::userns_pod_owns_its_namespaces",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.security_context.readonly_rootfs",
        proof: "tests/tests/security.rs::sandbox_process_is_hardened",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.sysctls",
        proof: "tests/tests/sandbox.rs::userns_pod_owns_its_namespaces",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.overhead.cpu_period",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.overhead.cpu_quota",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.overhead.cpu_shares",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.overhead.memory_limit_in_bytes",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.overhead.cpuset_cpus",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.overhead.cpuset_mems",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.overhead.hugepage_limits.page_size",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.overhead.hugepage_limits.limit",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.overhead.unified",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.overhead.memory_swap_limit_in_bytes",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.resources.cpu_period",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.resources.cpu_quota",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.resources.cpu_shares",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.resources.memory_limit_in_bytes",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.resources.cpuset_cpus",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.resources.cpuset_mems",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.resources.hugepage_limits.page_size",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.resources.hugepage_limits.limit",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.resources.unified",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.resources.memory_swap_limit_in_bytes",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "StopPodSandboxRequest.pod_sandbox_id",
        proof: "tests/tests/sandbox.rs::userns_pod_owns_its_namespaces",
    },
    Honoured {
        path: "RemovePodSandboxRequest.pod_sandbox_id",
        proof: "tests/tests/sandbox.rs::userns_pod_owns_its_namespaces",
    },
    Honoured {
        path: "PodSandboxStatusRequest.pod_sandbox_id",
        proof: "tests/tests/sandbox.rs::plain_and_host_network_pods",
    },
    Honoured {
        path: "PodSandboxStatusRequest.verbose",
        proof: "tests/tests/sandbox.rs::plain_and_host_network_pods",
    },
    Honoured {
        path: "ListPodSandboxRequest.filter.id",
        proof: "tests/tests/sandbox.rs::plain_and_host_network_pods",
    },
    Honoured {
        path: "ListPodSandboxRequest.filter.state.state",
        proof: "tests/tests/sandbox.rs::plain_and_host_network_pods",
    },
    Honoured {
        path: "ListPodSandboxRequest.filter.label_selector",
        proof: "tests/tests/sandbox.rs::plain_and_host_network_pods",
    },
    Honoured {
        path: "StreamPodSandboxesRequest.filter.id",
        proof: "tests/tests/sandbox.rs::plain_and_host_network_pods",
    },
    Honoured {
        path: "StreamPodSandboxesRequest.filter.state.state",
        proof: "tests/tests/sandbox.rs::plain_and_host_network_pods",
    },
    Honoured {
        path: "StreamPodSandboxesRequest.filter.label_selector",
        proof: "tests/tests/sandbox.rs::plain_and_host_network_pods",
    },
    Honoured {
        path: "CreateContainerRequest.pod_sandbox_id",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Honoured {
        path: "CreateContainerRequest.config.metadata.name",
        proof: "tests/tests/stats.rs::busy_container_shows_rising_cpu_usage_and_nano_cores",
    },
    Honoured {
        path: "CreateContainerRequest.config.metadata.attempt",
        proof: "tests/tests/recovery.rs::create_container_cut_at_any_step_is_rolled_back_at_restart",
    },
    Honoured {
        path: "CreateContainerRequest.config.image.image",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Honoured {
        path: "CreateContainerRequest.config.command",
        proof: "crates/crius-runtime/src/create.rs::args_merge_like_kubelet",
    },
    Honoured {
        path: "CreateContainerRequest.config.args",
        proof: "crates/crius-runtime/src/create.rs::args_merge_like_kubelet",
    },
    Honoured {
        path: "CreateContainerRequest.config.working_dir",
        proof: "tests/tests/exec_exposure.rs::an_exec_takes_environment_and_directory_from_the_config",
    },
    Honoured {
        path: "CreateContainerRequest.config.envs.key",
        proof: "crates/crius-runtime/src/create.rs::env_overrides_and_bytes",
    },
    Honoured {
        path: "CreateContainerRequest.config.envs.value",
        proof: "crates/crius-runtime/src/create.rs::env_overrides_and_bytes",
    },
    Honoured {
        path: "CreateContainerRequest.config.mounts.container_path",
        proof: "tests/tests/containers.rs::idmapped_volumes_and_pod_files_in_a_userns_pod",
    },
    Honoured {
        path: "CreateContainerRequest.config.mounts.host_path",
        proof: "tests/tests/containers.rs::idmapped_volumes_and_pod_files_in_a_userns_pod",
    },
    Honoured {
        path: "CreateContainerRequest.config.mounts.readonly",
        proof: "tests/tests/containers.rs::idmapped_volumes_and_pod_files_in_a_userns_pod",
    },
    Honoured {
        path: "CreateContainerRequest.config.mounts.propagation",
        proof: "tests/tests/conformance_fixes.rs::mount_propagation_private_bidirectional_and_host_to_container",
    },
    Honoured {
        path: "CreateContainerRequest.config.mounts.uidMappings.host_id",
        proof: "tests/tests/containers.rs::idmapped_volumes_and_pod_files_in_a_userns_pod",
    },
    Honoured {
        path: "CreateContainerRequest.config.mounts.uidMappings.container_id",
        proof: "tests/tests/containers.rs::idmapped_volumes_and_pod_files_in_a_userns_pod",
    },
    Honoured {
        path: "CreateContainerRequest.config.mounts.uidMappings.length",
        proof: "tests/tests/containers.rs::idmapped_volumes_and_pod_files_in_a_userns_pod",
    },
    Honoured {
        path: "CreateContainerRequest.config.mounts.gidMappings.host_id",
        proof: "tests/tests/containers.rs::idmapped_volumes_and_pod_files_in_a_userns_pod",
    },
    Honoured {
        path: "CreateContainerRequest.config.mounts.gidMappings.container_id",
        proof: "tests/tests/containers.rs::idmapped_volumes_and_pod_files_in_a_userns_pod",
    },
    Honoured {
        path: "CreateContainerRequest.config.mounts.gidMappings.length",
        proof: "tests/tests/containers.rs::idmapped_volumes_and_pod_files_in_a_userns_pod",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.security_context.privileged",
        proof: "tests/tests/workloads.rs::privileged_containers_need_a_privileged_pod",
    },
    Honoured {
        path: "CreateContainerRequest.config.image.user_specified_image",
        proof: "tests/tests/workloads.rs::status_reports_the_repository_digest_and_the_users_image",
    },
    Honoured {
        path: "CreateContainerRequest.config.mounts.image.image",
        proof: "tests/tests/storage.rs::image_volumes_mount_an_images_layers_read_only",
    },
    Honoured {
        path: "CreateContainerRequest.config.mounts.image_sub_path",
        proof: "tests/tests/storage.rs::image_volumes_mount_an_images_layers_read_only",
    },
    Honoured {
        path: "CreateContainerRequest.config.mounts.recursive_read_only",
        proof: "tests/tests/containers.rs::recursive_read_only_mounts",
    },
    Honoured {
        path: "CreateContainerRequest.config.devices.container_path",
        proof: "tests/tests/containers.rs::devices_and_block_devices_in_userns_pods",
    },
    Honoured {
        path: "CreateContainerRequest.config.devices.host_path",
        proof: "tests/tests/containers.rs::devices_and_block_devices_in_userns_pods",
    },
    Honoured {
        path: "CreateContainerRequest.config.devices.permissions",
        proof: "tests/tests/containers.rs::devices_and_block_devices_in_userns_pods",
    },
    Honoured {
        path: "CreateContainerRequest.config.labels",
        proof: "tests/tests/stats.rs::busy_container_shows_rising_cpu_usage_and_nano_cores",
    },
    Honoured {
        path: "CreateContainerRequest.config.annotations",
        proof: "tests/tests/stats.rs::busy_container_shows_rising_cpu_usage_and_nano_cores",
    },
    Honoured {
        path: "CreateContainerRequest.config.log_path",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Honoured {
        path: "CreateContainerRequest.config.stdin",
        proof: "tests/tests/streaming.rs::attach_reads_output_and_writes_stdin_across_detach_and_restart",
    },
    Honoured {
        path: "CreateContainerRequest.config.stdin_once",
        proof: "tests/tests/streaming.rs::stdin_once_closes_stdin_after_the_first_attach",
    },
    Honoured {
        path: "CreateContainerRequest.config.tty",
        proof: "tests/tests/streaming.rs::attach_to_a_tty_container_resizes_its_terminal",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.resources.cpu_period",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.resources.cpu_quota",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.resources.cpu_shares",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.resources.memory_limit_in_bytes",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.resources.oom_score_adj",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.resources.cpuset_cpus",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.resources.cpuset_mems",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.resources.hugepage_limits.page_size",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.resources.hugepage_limits.limit",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.resources.unified",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.resources.memory_swap_limit_in_bytes",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.capabilities.add_capabilities",
        proof: "tests/tests/conformance_fixes.rs::adding_all_capabilities",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.capabilities.drop_capabilities",
        proof: "tests/tests/containers.rs::capabilities_follow_the_request",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.privileged",
        proof: "tests/tests/conformance_fixes.rs::privileged_container_in_a_privileged_pod_runs",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.network",
        proof: "crates/crius-server/src/fields.rs::container_namespaces_must_be_the_pods",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.pid",
        proof: "tests/tests/containers.rs::container_and_target_pid_namespaces",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.ipc",
        proof: "crates/crius-server/src/fields.rs::container_namespaces_must_be_the_pods",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.target_id",
        proof: "tests/tests/containers.rs::container_and_target_pid_namespaces",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.userns_options.mode",
        proof: "tests/tests/containers.rs::userns_root_container_sees_its_mapping_and_no_layer_changes_owner",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.userns_options.uids.host_id",
        proof: "tests/tests/containers.rs::userns_root_container_sees_its_mapping_and_no_layer_changes_owner",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.userns_options.uids.container_id",
        proof: "tests/tests/containers.rs::userns_root_container_sees_its_mapping_and_no_layer_changes_owner",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.userns_options.uids.length",
        proof: "tests/tests/containers.rs::userns_root_container_sees_its_mapping_and_no_layer_changes_owner",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.userns_options.gids.host_id",
        proof: "tests/tests/containers.rs::userns_root_container_sees_its_mapping_and_no_layer_changes_owner",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.userns_options.gids.container_id",
        proof: "tests/tests/containers.rs::userns_root_container_sees_its_mapping_and_no_layer_changes_owner",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.userns_options.gids.length",
        proof: "tests/tests/containers.rs::userns_root_container_sees_its_mapping_and_no_layer_changes_owner",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.run_as_user.value",
        proof: "tests/tests/containers.rs::supplemental_groups_merge_and_strict_with_and_without_userns",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.run_as_username",
        proof: "crates/crius-monitor/src/identity.rs::image_user_by_name_and_missing_names",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.readonly_rootfs",
        proof: "tests/tests/containers.rs::readonly_rootfs_refuses_writes",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.supplemental_groups",
        proof: "tests/tests/containers.rs::supplemental_groups_merge_and_strict_with_and_without_userns",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.apparmor_profile",
        proof: "tests/tests/apparmor.rs::containers_run_under_crius_default_unless_they_ask_otherwise",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.seccomp_profile_path",
        proof: "tests/tests/security.rs::localhost_profile_applies_its_errno",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.no_new_privs",
        proof: "tests/tests/security.rs::runtime_default_denies_unshare_and_unconfined_allows_it",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.run_as_group.value",
        proof: "tests/tests/containers.rs::supplemental_groups_merge_and_strict_with_and_without_userns",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.masked_paths",
        proof: "tests/tests/workloads.rs::proc_mount_lists_are_applied_as_sent",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.readonly_paths",
        proof: "tests/tests/workloads.rs::proc_mount_lists_are_applied_as_sent",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.seccomp.profile_type",
        proof: "tests/tests/security.rs::runtime_default_denies_unshare_and_unconfined_allows_it",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.seccomp.localhost_ref",
        proof: "tests/tests/security.rs::localhost_profile_applies_its_errno",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.apparmor.profile_type",
        proof: "tests/tests/apparmor.rs::containers_run_under_crius_default_unless_they_ask_otherwise",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.apparmor.localhost_ref",
        proof: "tests/tests/apparmor.rs::localhost_profiles_must_be_loaded_and_apply",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.security_context.apparmor.profile_type",
        proof: "tests/tests/apparmor.rs::a_profile_the_pod_names_confines_its_sandbox",
    },
    Honoured {
        path: "RunPodSandboxRequest.config.linux.security_context.apparmor.localhost_ref",
        proof: "tests/tests/apparmor.rs::a_profile_the_pod_names_confines_its_sandbox",
    },
    Honoured {
        path: "CreateContainerRequest.config.linux.security_context.supplemental_groups_policy",
        proof: "tests/tests/containers.rs::supplemental_groups_merge_and_strict_with_and_without_userns",
    },
    Honoured {
        path: "CreateContainerRequest.config.CDI_devices.name",
        proof: "tests/tests/cdi.rs::cdi_devices_are_injected",
    },
    Honoured {
        path: "CreateContainerRequest.config.stop_signal",
        proof: "tests/tests/workloads.rs::stop_signal_is_configured_per_container",
    },
    Honoured {
        path: "StartContainerRequest.container_id",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Honoured {
        path: "StopContainerRequest.container_id",
        proof: "tests/tests/workloads.rs::stop_signal_is_configured_per_container",
    },
    Honoured {
        path: "StopContainerRequest.timeout",
        proof: "tests/tests/workloads.rs::stop_signal_is_configured_per_container",
    },
    Honoured {
        path: "RemoveContainerRequest.container_id",
        proof: "tests/tests/recovery.rs::start_and_remove_container_cut_short_are_completed_at_restart",
    },
    Honoured {
        path: "ListContainersRequest.filter.id",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Honoured {
        path: "ListContainersRequest.filter.state.state",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Honoured {
        path: "ListContainersRequest.filter.pod_sandbox_id",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Honoured {
        path: "ListContainersRequest.filter.label_selector",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Honoured {
        path: "StreamContainersRequest.filter.id",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Honoured {
        path: "StreamContainersRequest.filter.state.state",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Honoured {
        path: "StreamContainersRequest.filter.pod_sandbox_id",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Honoured {
        path: "StreamContainersRequest.filter.label_selector",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Honoured {
        path: "ContainerStatusRequest.container_id",
        proof: "tests/tests/workloads.rs::missing_containers_are_named_as_containers",
    },
    Honoured {
        path: "ContainerStatusRequest.verbose",
        proof: "tests/tests/workloads.rs::missing_containers_are_named_as_containers",
    },
    Honoured {
        path: "UpdateContainerResourcesRequest.container_id",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "UpdateContainerResourcesRequest.linux.cpu_period",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "UpdateContainerResourcesRequest.linux.cpu_quota",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "UpdateContainerResourcesRequest.linux.cpu_shares",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "UpdateContainerResourcesRequest.linux.memory_limit_in_bytes",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "UpdateContainerResourcesRequest.linux.cpuset_cpus",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "UpdateContainerResourcesRequest.linux.cpuset_mems",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "UpdateContainerResourcesRequest.linux.hugepage_limits.page_size",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "UpdateContainerResourcesRequest.linux.hugepage_limits.limit",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "UpdateContainerResourcesRequest.linux.unified",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "UpdateContainerResourcesRequest.linux.memory_swap_limit_in_bytes",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Honoured {
        path: "ReopenContainerLogRequest.container_id",
        proof: "tests/tests/containers.rs::reopen_container_log",
    },
    Honoured {
        path: "ExecSyncRequest.container_id",
        proof: "tests/tests/containers.rs::exec_sync_runs_in_the_pods_user_namespace_with_the_containers_identity",
    },
    Honoured {
        path: "ExecSyncRequest.cmd",
        proof: "tests/tests/containers.rs::exec_sync_runs_in_the_pods_user_namespace_with_the_containers_identity",
    },
    Honoured {
        path: "ExecSyncRequest.timeout",
        proof: "tests/tests/conformance_fixes.rs::exec_sync_timeout_kills_the_command",
    },
    Honoured {
        path: "ExecRequest.container_id",
        proof: "tests/tests/streaming.rs::exec_streams_output_stdin_tty_and_the_exit_code",
    },
    Honoured {
        path: "ExecRequest.cmd",
        proof: "tests/tests/streaming.rs::exec_streams_output_stdin_tty_and_the_exit_code",
    },
    Honoured {
        path: "ExecRequest.tty",
        proof: "tests/tests/streaming.rs::exec_streams_output_stdin_tty_and_the_exit_code",
    },
    Honoured {
        path: "ExecRequest.stdin",
        proof: "tests/tests/streaming.rs::exec_streams_output_stdin_tty_and_the_exit_code",
    },
    Honoured {
        path: "ExecRequest.stdout",
        proof: "tests/tests/streaming.rs::exec_streams_output_stdin_tty_and_the_exit_code",
    },
    Honoured {
        path: "ExecRequest.stderr",
        proof: "tests/tests/streaming.rs::exec_streams_output_stdin_tty_and_the_exit_code",
    },
    Honoured {
        path: "AttachRequest.container_id",
        proof: "tests/tests/streaming.rs::attach_reads_output_and_writes_stdin_across_detach_and_restart",
    },
    Honoured {
        path: "AttachRequest.stdin",
        proof: "tests/tests/streaming.rs::attach_reads_output_and_writes_stdin_across_detach_and_restart",
    },
    Honoured {
        path: "AttachRequest.tty",
        proof: "tests/tests/streaming.rs::attach_to_a_tty_container_resizes_its_terminal",
    },
    Honoured {
        path: "AttachRequest.stdout",
        proof: "tests/tests/streaming.rs::attach_reads_output_and_writes_stdin_across_detach_and_restart",
    },
    Honoured {
        path: "AttachRequest.stderr",
        proof: "tests/tests/streaming.rs::attach_reads_output_and_writes_stdin_across_detach_and_restart",
    },
    Honoured {
        path: "PortForwardRequest.pod_sandbox_id",
        proof: "tests/tests/streaming.rs::port_forward_reaches_the_pods_loopback",
    },
    Honoured {
        path: "PortForwardRequest.port",
        proof: "tests/tests/streaming.rs::port_forward_reaches_the_pods_loopback",
    },
    Honoured {
        path: "ContainerStatsRequest.container_id",
        proof: "tests/tests/stats.rs::busy_container_shows_rising_cpu_usage_and_nano_cores",
    },
    Honoured {
        path: "ListContainerStatsRequest.filter.id",
        proof: "tests/tests/stats.rs::list_container_stats_filters_by_id_pod_and_label",
    },
    Honoured {
        path: "ListContainerStatsRequest.filter.pod_sandbox_id",
        proof: "tests/tests/stats.rs::list_container_stats_filters_by_id_pod_and_label",
    },
    Honoured {
        path: "ListContainerStatsRequest.filter.label_selector",
        proof: "tests/tests/stats.rs::list_container_stats_filters_by_id_pod_and_label",
    },
    Honoured {
        path: "StreamContainerStatsRequest.filter.id",
        proof: "tests/tests/stats.rs::list_container_stats_filters_by_id_pod_and_label",
    },
    Honoured {
        path: "StreamContainerStatsRequest.filter.pod_sandbox_id",
        proof: "tests/tests/stats.rs::list_container_stats_filters_by_id_pod_and_label",
    },
    Honoured {
        path: "StreamContainerStatsRequest.filter.label_selector",
        proof: "tests/tests/stats.rs::list_container_stats_filters_by_id_pod_and_label",
    },
    Honoured {
        path: "PodSandboxStatsRequest.pod_sandbox_id",
        proof: "tests/tests/stats.rs::busy_container_shows_rising_cpu_usage_and_nano_cores",
    },
    Honoured {
        path: "ListPodSandboxStatsRequest.filter.id",
        proof: "tests/tests/stats.rs::list_container_stats_filters_by_id_pod_and_label",
    },
    Honoured {
        path: "ListPodSandboxStatsRequest.filter.label_selector",
        proof: "tests/tests/stats.rs::list_container_stats_filters_by_id_pod_and_label",
    },
    Honoured {
        path: "StreamPodSandboxStatsRequest.filter.id",
        proof: "tests/tests/stats.rs::list_container_stats_filters_by_id_pod_and_label",
    },
    Honoured {
        path: "StreamPodSandboxStatsRequest.filter.label_selector",
        proof: "tests/tests/stats.rs::list_container_stats_filters_by_id_pod_and_label",
    },
    Honoured {
        path: "UpdateRuntimeConfigRequest.runtime_config.network_config.pod_cidr",
        proof: "tests/tests/runtime_config.rs::pod_cidrs_are_checked_kept_and_reported",
    },
    Honoured {
        path: "StatusRequest.verbose",
        proof: "tests/tests/daemon.rs::status_reports_conditions_handlers_and_config",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.pod_sandbox_id",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.overhead.cpu_period",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.overhead.cpu_quota",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.overhead.cpu_shares",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.overhead.memory_limit_in_bytes",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.overhead.cpuset_cpus",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.overhead.cpuset_mems",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.overhead.hugepage_limits.page_size",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.overhead.hugepage_limits.limit",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.overhead.unified",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.overhead.memory_swap_limit_in_bytes",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.resources.cpu_period",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.resources.cpu_quota",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.resources.cpu_shares",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.resources.memory_limit_in_bytes",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.resources.cpuset_cpus",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.resources.cpuset_mems",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.resources.hugepage_limits.page_size",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.resources.hugepage_limits.limit",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.resources.unified",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "UpdatePodSandboxResourcesRequest.resources.memory_swap_limit_in_bytes",
        proof: "tests/tests/security.rs::pod_resources_and_overhead_reach_the_pod_cgroup",
    },
    Honoured {
        path: "ListImagesRequest.filter.image.image",
        proof: "tests/tests/image_service.rs::pull_by_tag_and_digest_then_status_list_fsinfo_remove",
    },
    Honoured {
        path: "StreamImagesRequest.filter.image.image",
        proof: "tests/tests/image_service.rs::pull_by_tag_and_digest_then_status_list_fsinfo_remove",
    },
    Honoured {
        path: "ImageStatusRequest.image.image",
        proof: "tests/tests/image_service.rs::pull_by_tag_and_digest_then_status_list_fsinfo_remove",
    },
    Honoured {
        path: "ImageStatusRequest.verbose",
        proof: "tests/tests/image_service.rs::pull_by_tag_and_digest_then_status_list_fsinfo_remove",
    },
    Honoured {
        path: "PullImageRequest.image.image",
        proof: "tests/tests/image_service.rs::pull_by_tag_and_digest_then_status_list_fsinfo_remove",
    },
    Honoured {
        path: "PullImageRequest.auth.username",
        proof: "tests/tests/image_service.rs::htpasswd_registry_needs_the_right_credentials",
    },
    Honoured {
        path: "PullImageRequest.auth.password",
        proof: "tests/tests/image_service.rs::htpasswd_registry_needs_the_right_credentials",
    },
    Honoured {
        path: "PullImageRequest.auth.auth",
        proof: "crates/crius-image/src/pull.rs::credentials_map_to_auth",
    },
    Honoured {
        path: "PullImageRequest.auth.identity_token",
        proof: "tests/tests/image_service.rs::an_identity_token_is_exchanged_at_the_token_service",
    },
    Honoured {
        path: "PullImageRequest.auth.registry_token",
        proof: "crates/crius-image/src/pull.rs::credentials_map_to_auth",
    },
    Honoured {
        path: "RemoveImageRequest.image.image",
        proof: "tests/tests/image_service.rs::pull_by_tag_and_digest_then_status_list_fsinfo_remove",
    },
];
/// The fields (or values of fields) crius refuses with an error naming them.
#[cfg_attr(not(test), allow(dead_code, reason = "read by the guard tests"))]
const REFUSED: &[Refused] = &[
    Refused {
        path: "RunPodSandboxRequest.config.linux.security_context.namespace_options.pid",
        code: Code::InvalidArgument,
        when: "TARGET (a pod sandbox has no target)",
        place: "crates/crius-runtime/src/validate.rs::validate",
        proof: "tests/tests/sandbox.rs::invalid_requests_are_refused",
    },
    Refused {
        path: "RunPodSandboxRequest.config.linux.security_context.namespace_options.target_id",
        code: Code::InvalidArgument,
        when: "non-empty: a target is for a container whose pid namespace is TARGET",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_pod",
        proof: "crates/crius-server/src/fields.rs::pod_security_fields_crius_cannot_apply_are_refused",
    },
    Refused {
        path: "RunPodSandboxRequest.config.linux.security_context.selinux_options.user",
        code: Code::FailedPrecondition,
        when: "non-empty: SELinux is not supported by crius",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_pod",
        proof: "crates/crius-server/src/fields.rs::pod_security_fields_crius_cannot_apply_are_refused",
    },
    Refused {
        path: "RunPodSandboxRequest.config.linux.security_context.selinux_options.role",
        code: Code::FailedPrecondition,
        when: "non-empty: SELinux is not supported by crius",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_pod",
        proof: "crates/crius-server/src/fields.rs::pod_security_fields_crius_cannot_apply_are_refused",
    },
    Refused {
        path: "RunPodSandboxRequest.config.linux.security_context.selinux_options.type",
        code: Code::FailedPrecondition,
        when: "non-empty: SELinux is not supported by crius",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_pod",
        proof: "crates/crius-server/src/fields.rs::pod_security_fields_crius_cannot_apply_are_refused",
    },
    Refused {
        path: "RunPodSandboxRequest.config.linux.security_context.selinux_options.level",
        code: Code::FailedPrecondition,
        when: "non-empty: SELinux is not supported by crius",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_pod",
        proof: "crates/crius-server/src/fields.rs::pod_security_fields_crius_cannot_apply_are_refused",
    },
    Refused {
        path: "RunPodSandboxRequest.config.linux.security_context.seccomp_profile_path",
        code: Code::InvalidArgument,
        when: "`localhost/<path>` naming a missing, unreadable, oversized or malformed profile, and anything else but empty, `unconfined`, `runtime/default` or `docker/default`",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_pod",
        proof: "crates/crius-server/src/fields.rs::pod_security_fields_crius_cannot_apply_are_refused",
    },
    Refused {
        path: "RunPodSandboxRequest.config.linux.security_context.seccomp.profile_type",
        code: Code::InvalidArgument,
        when: "an unknown type; Localhost naming a missing, unreadable, oversized or malformed profile",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_pod",
        proof: "crates/crius-server/src/fields.rs::pod_security_fields_crius_cannot_apply_are_refused",
    },
    Refused {
        path: "RunPodSandboxRequest.config.linux.security_context.seccomp.localhost_ref",
        code: Code::InvalidArgument,
        when: "non-empty without profile type Localhost, or naming a missing, unreadable, oversized or malformed profile",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_pod",
        proof: "crates/crius-server/src/fields.rs::pod_security_fields_crius_cannot_apply_are_refused",
    },
    Refused {
        path: "RunPodSandboxRequest.config.linux.security_context.apparmor.profile_type",
        code: Code::FailedPrecondition,
        when: "RuntimeDefault or Localhost on a node without AppArmor (InvalidArgument: an unknown profile type, by `apparmor_request`)",
        place: "crates/crius-runtime/src/apparmor.rs::choose",
        proof: "tests/tests/apparmor.rs::without_apparmor_only_unset_and_unconfined_are_accepted",
    },
    Refused {
        path: "RunPodSandboxRequest.config.linux.security_context.apparmor.localhost_ref",
        code: Code::FailedPrecondition,
        when: "naming a profile the node has not loaded, or any profile on a node without AppArmor (InvalidArgument: non-empty without profile type Localhost, by `apparmor_request`)",
        place: "crates/crius-runtime/src/apparmor.rs::resolve",
        proof: "tests/tests/apparmor.rs::a_profile_the_pod_names_confines_its_sandbox",
    },
    Refused {
        path: "RunPodSandboxRequest.config.linux.overhead.oom_score_adj",
        code: Code::InvalidArgument,
        when: "non-zero: a pod has no oom_score_adj of its own (the sandbox process always gets -998; set it per container)",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_pod",
        proof: "crates/crius-server/src/fields.rs::pod_oom_score_adj_is_refused",
    },
    Refused {
        path: "RunPodSandboxRequest.config.linux.resources.oom_score_adj",
        code: Code::InvalidArgument,
        when: "non-zero: a pod has no oom_score_adj of its own (the sandbox process always gets -998; set it per container)",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_pod",
        proof: "crates/crius-server/src/fields.rs::pod_oom_score_adj_is_refused",
    },
    Refused {
        path: "RunPodSandboxRequest.config.windows",
        code: Code::InvalidArgument,
        when: "set to anything but an empty message: crius is a Linux runtime",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_pod",
        proof: "crates/crius-server/src/fields.rs::windows_configs_are_refused",
    },
    Refused {
        path: "RunPodSandboxRequest.runtime_handler",
        code: Code::InvalidArgument,
        when: "anything but the default handler \"\"",
        place: "crates/crius-runtime/src/lib.rs::run_inner",
        proof: "tests/tests/hostile.rs::hostile_pod_sandbox_configs",
    },
    Refused {
        path: "CreateContainerRequest.config.image.runtime_handler",
        code: Code::InvalidArgument,
        when: "anything but the default handler \"\"",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_container",
        proof: "crates/crius-server/src/fields.rs::container_fields_crius_cannot_apply_are_refused",
    },
    Refused {
        path: "CreateContainerRequest.config.mounts.image.runtime_handler",
        code: Code::InvalidArgument,
        when: "anything but the default handler \"\"",
        place: "crates/crius-runtime/src/create.rs::image_volume",
        proof: "tests/tests/storage.rs::image_volumes_mount_an_images_layers_read_only",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.capabilities.add_ambient_capabilities",
        code: Code::Unimplemented,
        when: "non-empty: ambient capabilities are not built",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_container",
        proof: "crates/crius-server/src/fields.rs::container_fields_crius_cannot_apply_are_refused",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.network",
        code: Code::InvalidArgument,
        when: "CONTAINER or TARGET, or NODE in a pod with a network namespace of its own: a container joins its pod's",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_container",
        proof: "crates/crius-server/src/fields.rs::container_namespaces_must_be_the_pods",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.pid",
        code: Code::InvalidArgument,
        when: "NODE in a pod with a PID namespace of its own",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_container",
        proof: "crates/crius-server/src/fields.rs::container_namespaces_must_be_the_pods",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.ipc",
        code: Code::InvalidArgument,
        when: "CONTAINER or TARGET, or NODE in a pod with an IPC namespace of its own",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_container",
        proof: "crates/crius-server/src/fields.rs::container_namespaces_must_be_the_pods",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.target_id",
        code: Code::InvalidArgument,
        when: "non-empty without pid TARGET; with TARGET a container that is not in the pod",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_container",
        proof: "crates/crius-server/src/fields.rs::container_namespaces_must_be_the_pods",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.userns_options.mode",
        code: Code::InvalidArgument,
        when: "anything but the pod's own user namespace (its mode and, for POD, its mappings or none): a container joins its pod's",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_container",
        proof: "crates/crius-server/src/fields.rs::container_namespaces_must_be_the_pods",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.userns_options.uids.host_id",
        code: Code::InvalidArgument,
        when: "anything but the pod's own user namespace (its mode and, for POD, its mappings or none): a container joins its pod's",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_container",
        proof: "crates/crius-server/src/fields.rs::container_namespaces_must_be_the_pods",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.userns_options.uids.container_id",
        code: Code::InvalidArgument,
        when: "anything but the pod's own user namespace (its mode and, for POD, its mappings or none): a container joins its pod's",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_container",
        proof: "crates/crius-server/src/fields.rs::container_namespaces_must_be_the_pods",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.userns_options.uids.length",
        code: Code::InvalidArgument,
        when: "anything but the pod's own user namespace (its mode and, for POD, its mappings or none): a container joins its pod's",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_container",
        proof: "crates/crius-server/src/fields.rs::container_namespaces_must_be_the_pods",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.userns_options.gids.host_id",
        code: Code::InvalidArgument,
        when: "anything but the pod's own user namespace (its mode and, for POD, its mappings or none): a container joins its pod's",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_container",
        proof: "crates/crius-server/src/fields.rs::container_namespaces_must_be_the_pods",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.userns_options.gids.container_id",
        code: Code::InvalidArgument,
        when: "anything but the pod's own user namespace (its mode and, for POD, its mappings or none): a container joins its pod's",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_container",
        proof: "crates/crius-server/src/fields.rs::container_namespaces_must_be_the_pods",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.namespace_options.userns_options.gids.length",
        code: Code::InvalidArgument,
        when: "anything but the pod's own user namespace (its mode and, for POD, its mappings or none): a container joins its pod's",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_container",
        proof: "crates/crius-server/src/fields.rs::container_namespaces_must_be_the_pods",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.selinux_options.user",
        code: Code::FailedPrecondition,
        when: "non-empty: SELinux is not supported by crius",
        place: "crates/crius-server/src/containers.rs::security_request",
        proof: "tests/tests/security.rs::selinux_options_are_accepted_empty_and_refused_otherwise",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.selinux_options.role",
        code: Code::FailedPrecondition,
        when: "non-empty: SELinux is not supported by crius",
        place: "crates/crius-server/src/containers.rs::security_request",
        proof: "tests/tests/security.rs::selinux_options_are_accepted_empty_and_refused_otherwise",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.selinux_options.type",
        code: Code::FailedPrecondition,
        when: "non-empty: SELinux is not supported by crius",
        place: "crates/crius-server/src/containers.rs::security_request",
        proof: "tests/tests/security.rs::selinux_options_are_accepted_empty_and_refused_otherwise",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.selinux_options.level",
        code: Code::FailedPrecondition,
        when: "non-empty: SELinux is not supported by crius",
        place: "crates/crius-server/src/containers.rs::security_request",
        proof: "tests/tests/security.rs::selinux_options_are_accepted_empty_and_refused_otherwise",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.apparmor_profile",
        code: Code::InvalidArgument,
        when: "anything but empty, `runtime/default`, `docker/default`, `unconfined` or `localhost/<name>` (FailedPrecondition: `runtime/default` or `localhost/<name>` on a node without AppArmor; a profile the node has not loaded, by `resolve`)",
        place: "crates/crius-server/src/containers.rs::apparmor_request",
        proof: "tests/tests/apparmor.rs::malformed_apparmor_fields_are_invalid_arguments",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.seccomp.profile_type",
        code: Code::InvalidArgument,
        when: "an unknown type; Localhost naming a missing, unreadable, oversized or malformed profile",
        place: "crates/crius-server/src/containers.rs::security_request",
        proof: "tests/tests/security.rs::bad_localhost_profiles_are_invalid_argument_naming_the_file",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.seccomp.localhost_ref",
        code: Code::InvalidArgument,
        when: "non-empty without profile type Localhost",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_container",
        proof: "crates/crius-server/src/fields.rs::container_fields_crius_cannot_apply_are_refused",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.apparmor.profile_type",
        code: Code::FailedPrecondition,
        when: "RuntimeDefault or Localhost on a node without AppArmor (InvalidArgument: an unknown profile type, by `apparmor_request`)",
        place: "crates/crius-runtime/src/apparmor.rs::choose",
        proof: "tests/tests/apparmor.rs::without_apparmor_only_unset_and_unconfined_are_accepted",
    },
    Refused {
        path: "CreateContainerRequest.config.linux.security_context.apparmor.localhost_ref",
        code: Code::FailedPrecondition,
        when: "naming a profile the node has not loaded, or any profile on a node without AppArmor (InvalidArgument: non-empty without profile type Localhost; empty with it, by `apparmor_request`)",
        place: "crates/crius-runtime/src/apparmor.rs::resolve",
        proof: "tests/tests/apparmor.rs::localhost_profiles_must_be_loaded_and_apply",
    },
    Refused {
        path: "CreateContainerRequest.config.windows",
        code: Code::InvalidArgument,
        when: "set to anything but an empty message: crius is a Linux runtime",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_container",
        proof: "crates/crius-server/src/fields.rs::windows_configs_are_refused",
    },
    Refused {
        path: "UpdateContainerResourcesRequest.windows",
        code: Code::InvalidArgument,
        when: "set to anything but an empty message: crius is a Linux runtime",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_container_update",
        proof: "crates/crius-server/src/fields.rs::windows_configs_are_refused",
    },
    Refused {
        path: "CheckpointContainerRequest",
        code: Code::Unimplemented,
        when: "any request: CheckpointContainer is not built",
        place: "crates/crius-server/src/runtime.rs::checkpoint_container",
        proof: "tests/tests/daemon.rs::unimplemented_rpc_is_named_and_daemon_keeps_serving",
    },
    Refused {
        path: "UpdatePodSandboxResourcesRequest.overhead.oom_score_adj",
        code: Code::InvalidArgument,
        when: "non-zero: a pod has no oom_score_adj of its own",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_pod_update",
        proof: "crates/crius-server/src/fields.rs::pod_oom_score_adj_is_refused",
    },
    Refused {
        path: "UpdatePodSandboxResourcesRequest.resources.oom_score_adj",
        code: Code::InvalidArgument,
        when: "non-zero: a pod has no oom_score_adj of its own",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_pod_update",
        proof: "crates/crius-server/src/fields.rs::pod_oom_score_adj_is_refused",
    },
    Refused {
        path: "ListImagesRequest.filter.image.runtime_handler",
        code: Code::InvalidArgument,
        when: "anything but the default handler \"\" (crius has one image store for its one handler)",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_image",
        proof: "crates/crius-server/src/fields.rs::image_runtime_handlers_are_refused",
    },
    Refused {
        path: "StreamImagesRequest.filter.image.runtime_handler",
        code: Code::InvalidArgument,
        when: "anything but the default handler \"\" (crius has one image store for its one handler)",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_image",
        proof: "crates/crius-server/src/fields.rs::image_runtime_handlers_are_refused",
    },
    Refused {
        path: "ImageStatusRequest.image.runtime_handler",
        code: Code::InvalidArgument,
        when: "anything but the default handler \"\" (crius has one image store for its one handler)",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_image",
        proof: "crates/crius-server/src/fields.rs::image_runtime_handlers_are_refused",
    },
    Refused {
        path: "PullImageRequest.image.runtime_handler",
        code: Code::InvalidArgument,
        when: "anything but the default handler \"\" (crius has one image store for its one handler)",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_image",
        proof: "crates/crius-server/src/fields.rs::image_runtime_handlers_are_refused",
    },
    Refused {
        path: "RemoveImageRequest.image.runtime_handler",
        code: Code::InvalidArgument,
        when: "anything but the default handler \"\" (crius has one image store for its one handler)",
        place: "crates/crius-server/src/fields.rs::refuse_unhandled_image",
        proof: "crates/crius-server/src/fields.rs::image_runtime_handlers_are_refused",
    },
];
/// The few fields accepted without effect, each with the reason that is the contract.
#[cfg_attr(not(test), allow(dead_code, reason = "read by the guard tests"))]
const ACCEPTED: &[Accepted] = &[
    Accepted {
        path: "VersionRequest.version",
        why: "the client's API version, informational: crius answers with the one it speaks (v1)",
        proof: "tests/tests/daemon.rs::version_names_crius_and_v1",
    },
    Accepted {
        path: "RunPodSandboxRequest.config.linux.security_context.run_as_user.value",
        why: "the sandbox process is crius' own code, not an image's pause container: it parks with no capabilities (a user-namespaced pod's keeps CAP_SYS_PTRACE permitted as a trace guard), no_new_privs, a seccomp filter of its own that allows only its pause loop, an empty read-only root and root ids (of the pod's user namespace, if any); kubelet sends this for every pod and copies it into each container's own security context, where it is honoured",
        proof: "tests/tests/security.rs::sandbox_process_is_hardened",
    },
    Accepted {
        path: "RunPodSandboxRequest.config.linux.security_context.supplemental_groups",
        why: "the sandbox process is crius' own code, not an image's pause container: it parks with no capabilities (a user-namespaced pod's keeps CAP_SYS_PTRACE permitted as a trace guard), no_new_privs, a seccomp filter of its own that allows only its pause loop, an empty read-only root and root ids (of the pod's user namespace, if any); kubelet sends this for every pod and copies it into each container's own security context, where it is honoured",
        proof: "tests/tests/security.rs::sandbox_process_is_hardened",
    },
    Accepted {
        path: "RunPodSandboxRequest.config.linux.security_context.seccomp_profile_path",
        why: "the sandbox process is crius' own code, not an image's pause container: it parks with no capabilities (a user-namespaced pod's keeps CAP_SYS_PTRACE permitted as a trace guard), no_new_privs, a seccomp filter of its own that allows only its pause loop, an empty read-only root and root ids (of the pod's user namespace, if any); kubelet sends this for every pod and copies it into each container's own security context, where it is honoured",
        proof: "tests/tests/security.rs::sandbox_process_is_hardened",
    },
    Accepted {
        path: "RunPodSandboxRequest.config.linux.security_context.run_as_group.value",
        why: "the sandbox process is crius' own code, not an image's pause container: it parks with no capabilities (a user-namespaced pod's keeps CAP_SYS_PTRACE permitted as a trace guard), no_new_privs, a seccomp filter of its own that allows only its pause loop, an empty read-only root and root ids (of the pod's user namespace, if any); kubelet sends this for every pod and copies it into each container's own security context, where it is honoured",
        proof: "tests/tests/security.rs::sandbox_process_is_hardened",
    },
    Accepted {
        path: "RunPodSandboxRequest.config.linux.security_context.seccomp.profile_type",
        why: "the sandbox process is crius' own code, not an image's pause container: it parks with no capabilities (a user-namespaced pod's keeps CAP_SYS_PTRACE permitted as a trace guard), no_new_privs, a seccomp filter of its own that allows only its pause loop, an empty read-only root and root ids (of the pod's user namespace, if any); kubelet sends this for every pod and copies it into each container's own security context, where it is honoured",
        proof: "tests/tests/security.rs::sandbox_process_is_hardened",
    },
    Accepted {
        path: "RunPodSandboxRequest.config.linux.security_context.supplemental_groups_policy",
        why: "the sandbox process is crius' own code, not an image's pause container: it parks with no capabilities (a user-namespaced pod's keeps CAP_SYS_PTRACE permitted as a trace guard), no_new_privs, a seccomp filter of its own that allows only its pause loop, an empty read-only root and root ids (of the pod's user namespace, if any); kubelet sends this for every pod and copies it into each container's own security context, where it is honoured",
        proof: "tests/tests/security.rs::sandbox_process_is_hardened",
    },
    Accepted {
        path: "CreateContainerRequest.config.mounts.image.annotations",
        why: "as for the container's image: crius always takes the node's linux/<arch>",
        proof: "tests/tests/storage.rs::image_volumes_mount_an_images_layers_read_only",
    },
    Accepted {
        path: "CreateContainerRequest.config.mounts.image.user_specified_image",
        why: "informational: the reference as the user wrote it; crius acts on `image`",
        proof: "tests/tests/storage.rs::image_volumes_mount_an_images_layers_read_only",
    },
    Accepted {
        path: "CreateContainerRequest.config.mounts.image.image_ref",
        why: "names what `image` names (the image kubelet pulled); crius mounts `image`",
        proof: "tests/tests/storage.rs::image_volumes_mount_an_images_layers_read_only",
    },
    Accepted {
        path: "CreateContainerRequest.config.image.annotations",
        why: "a hint for choosing in a multi-platform image; crius always takes the node's linux/<arch>, which annotations cannot change",
        proof: "tests/tests/image_service.rs::an_index_resolves_to_linux_amd64",
    },
    Accepted {
        path: "CreateContainerRequest.config.image.image_ref",
        why: "the digest of an image volume's image; outside Mount.image it names what `image` already names (crius' own Image.spec carries the image id there, and a client may echo it back)",
        proof: "tests/tests/image_service.rs::pull_by_tag_and_digest_then_status_list_fsinfo_remove",
    },
    Accepted {
        path: "CreateContainerRequest.config.mounts.selinux_relabel",
        why: "a relabel has no label to apply: crius has no SELinux (labels are refused), so it is a no-op as in runc and containerd on nodes without SELinux; kubelet sends it only when SELinux is enabled on the node",
        proof: "tests/tests/conformance_fixes.rs::readonly_volume_with_a_submount_can_be_removed_while_the_container_runs",
    },
    Accepted {
        path: "CreateContainerRequest.sandbox_config",
        why: "kubelet's copy of the pod's config; crius uses the pod as RunPodSandbox made it (each field is classified under RunPodSandboxRequest.config)",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Accepted {
        path: "UpdateContainerResourcesRequest.linux.oom_score_adj",
        why: "a property of the container's processes, set at CreateContainer; an update leaves it, as containerd does (kubelet sends the value of the container's QoS class again)",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Accepted {
        path: "UpdateContainerResourcesRequest.annotations",
        why: "arbitrary information about the update for runtime plugins; crius has none (no NRI)",
        proof: "tests/tests/security.rs::pids_cpusets_swap_and_hugepages_apply_at_create_and_update",
    },
    Accepted {
        path: "ListImagesRequest.filter.image.annotations",
        why: "a hint for choosing in a multi-platform image; crius always takes the node's linux/<arch>, which annotations cannot change",
        proof: "tests/tests/image_service.rs::an_index_resolves_to_linux_amd64",
    },
    Accepted {
        path: "ListImagesRequest.filter.image.user_specified_image",
        why: "informational: the reference as the user wrote it; crius acts on `image`",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Accepted {
        path: "ListImagesRequest.filter.image.image_ref",
        why: "the digest of an image volume's image; outside Mount.image it names what `image` already names (crius' own Image.spec carries the image id there, and a client may echo it back)",
        proof: "tests/tests/image_service.rs::pull_by_tag_and_digest_then_status_list_fsinfo_remove",
    },
    Accepted {
        path: "StreamImagesRequest.filter.image.annotations",
        why: "a hint for choosing in a multi-platform image; crius always takes the node's linux/<arch>, which annotations cannot change",
        proof: "tests/tests/image_service.rs::an_index_resolves_to_linux_amd64",
    },
    Accepted {
        path: "StreamImagesRequest.filter.image.user_specified_image",
        why: "informational: the reference as the user wrote it; crius acts on `image`",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Accepted {
        path: "StreamImagesRequest.filter.image.image_ref",
        why: "the digest of an image volume's image; outside Mount.image it names what `image` already names (crius' own Image.spec carries the image id there, and a client may echo it back)",
        proof: "tests/tests/image_service.rs::pull_by_tag_and_digest_then_status_list_fsinfo_remove",
    },
    Accepted {
        path: "ImageStatusRequest.image.annotations",
        why: "a hint for choosing in a multi-platform image; crius always takes the node's linux/<arch>, which annotations cannot change",
        proof: "tests/tests/image_service.rs::an_index_resolves_to_linux_amd64",
    },
    Accepted {
        path: "ImageStatusRequest.image.user_specified_image",
        why: "informational: the reference as the user wrote it; crius acts on `image`",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Accepted {
        path: "ImageStatusRequest.image.image_ref",
        why: "the digest of an image volume's image; outside Mount.image it names what `image` already names (crius' own Image.spec carries the image id there, and a client may echo it back)",
        proof: "tests/tests/image_service.rs::pull_by_tag_and_digest_then_status_list_fsinfo_remove",
    },
    Accepted {
        path: "PullImageRequest.image.annotations",
        why: "a hint for choosing in a multi-platform image; crius always takes the node's linux/<arch>, which annotations cannot change",
        proof: "tests/tests/image_service.rs::an_index_resolves_to_linux_amd64",
    },
    Accepted {
        path: "PullImageRequest.image.user_specified_image",
        why: "informational: the reference as the user wrote it; crius acts on `image`",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Accepted {
        path: "PullImageRequest.image.image_ref",
        why: "the digest of an image volume's image; outside Mount.image it names what `image` already names (crius' own Image.spec carries the image id there, and a client may echo it back)",
        proof: "tests/tests/image_service.rs::pull_by_tag_and_digest_then_status_list_fsinfo_remove",
    },
    Accepted {
        path: "PullImageRequest.auth.server_address",
        why: "names the registry the credentials are for; kubelet already chose them for the image's registry, and crius sends them only to the registry (or mirror) of the reference",
        proof: "tests/tests/image_service.rs::htpasswd_registry_needs_the_right_credentials",
    },
    Accepted {
        path: "PullImageRequest.sandbox_config",
        why: "a pull does not depend on the pod: images are one content-addressed store per node, shared by every pod",
        proof: "tests/tests/image_service.rs::pull_by_tag_and_digest_then_status_list_fsinfo_remove",
    },
    Accepted {
        path: "RemoveImageRequest.image.annotations",
        why: "a hint for choosing in a multi-platform image; crius always takes the node's linux/<arch>, which annotations cannot change",
        proof: "tests/tests/image_service.rs::an_index_resolves_to_linux_amd64",
    },
    Accepted {
        path: "RemoveImageRequest.image.user_specified_image",
        why: "informational: the reference as the user wrote it; crius acts on `image`",
        proof: "tests/tests/containers.rs::plain_container_runs_logs_and_exits_with_its_code",
    },
    Accepted {
        path: "RemoveImageRequest.image.image_ref",
        why: "the digest of an image volume's image; outside Mount.image it names what `image` already names (crius' own Image.spec carries the image id there, and a client may echo it back)",
        proof: "tests/tests/image_service.rs::pull_by_tag_and_digest_then_status_list_fsinfo_remove",
    },
];

fn invalid(field: &str, reason: impl Display) -> Status {
    Status::invalid_argument(format!("{field}: {reason}"))
}

fn unimplemented(field: &str, what: &str) -> Status {
    Status::unimplemented(format!("{field}: {what} is not implemented by crius"))
}

fn precondition(field: &str, reason: &str) -> Status {
    Status::failed_precondition(format!("{field}: {reason}"))
}

const LINUX_ONLY: &str = "crius is a Linux runtime and cannot apply a Windows configuration";
const NO_SELINUX: &str = "SELinux is not supported by crius";
const SC: &str = "config.linux.security_context";

fn selinux_set(o: &SeLinuxOption) -> bool {
    !o.user.is_empty() || !o.role.is_empty() || !o.r#type.is_empty() || !o.level.is_empty()
}

fn refuse_oom_score_adj(prefix: &str, r: Option<&LinuxContainerResources>) -> Result<(), Status> {
    match r {
        Some(r) if r.oom_score_adj != 0 => Err(invalid(
            &format!("{prefix}.oom_score_adj"),
            format!(
                "{} is set, but a pod sandbox has no oom_score_adj of its own (its sandbox \
                 process always gets -998); set it per container",
                r.oom_score_adj
            ),
        )),
        _ => Ok(()),
    }
}

/// RunPodSandbox: refuses what the pod path would otherwise ignore. A missing config is left
/// to the handler.
#[allow(
    deprecated,
    reason = "the deprecated seccomp_profile_path must be read too"
)]
pub(crate) fn refuse_unhandled_pod(config: Option<&PodSandboxConfig>) -> Result<(), Status> {
    let Some(config) = config else {
        return Ok(());
    };
    if config
        .windows
        .as_ref()
        .is_some_and(|w| *w != WindowsPodSandboxConfig::default())
    {
        return Err(invalid("config.windows", LINUX_ONLY));
    }
    let Some(linux) = &config.linux else {
        return Ok(());
    };
    refuse_oom_score_adj("config.linux.resources", linux.resources.as_ref())?;
    refuse_oom_score_adj("config.linux.overhead", linux.overhead.as_ref())?;
    let Some(sc) = &linux.security_context else {
        return Ok(());
    };
    if sc
        .namespace_options
        .as_ref()
        .is_some_and(|ns| !ns.target_id.is_empty())
    {
        return Err(invalid(
            &format!("{SC}.namespace_options.target_id"),
            "is for a container whose pid namespace is TARGET, not for a pod sandbox",
        ));
    }
    if sc.selinux_options.as_ref().is_some_and(selinux_set) {
        return Err(precondition(&format!("{SC}.selinux_options"), NO_SELINUX));
    }
    // A Localhost profile for the sandbox is checked like a container's and then accepted
    // without effect: the sandbox process runs only crius' own code, hardened (the profile
    // binds the pod's containers, which kubelet gives it in their own security contexts).
    let checked = |field: &str, path: &str| {
        crius_runtime::validate::read_seccomp_profile(field, path)
            .map(drop)
            .map_err(crate::status::invalid_status)
    };
    if let Some(p) = &sc.seccomp {
        match security_profile::ProfileType::try_from(p.profile_type) {
            Ok(security_profile::ProfileType::Localhost) => {
                checked(&format!("{SC}.seccomp.localhost_ref"), &p.localhost_ref)?;
            }
            Ok(_) => {}
            Err(_) => {
                return Err(invalid(
                    &format!("{SC}.seccomp.profile_type"),
                    format!("unknown profile type {}", p.profile_type),
                ));
            }
        }
        if !p.localhost_ref.is_empty()
            && p.profile_type != security_profile::ProfileType::Localhost as i32
        {
            return Err(invalid(
                &format!("{SC}.seccomp.localhost_ref"),
                "is set, but the profile type is not Localhost",
            ));
        }
    }
    let field = format!("{SC}.seccomp_profile_path");
    match sc.seccomp_profile_path.as_str() {
        "" | "unconfined" | "runtime/default" | "docker/default" => Ok(()),
        path if path.starts_with("localhost/") => {
            checked(&field, path.trim_start_matches("localhost/"))
        }
        other => Err(invalid(
            &field,
            format!(
                "{} is not unconfined, runtime/default or localhost/<path>",
                crius_runtime::validate::shown(other)
            ),
        )),
    }
}

/// UpdatePodSandboxResources: a pod has no oom_score_adj of its own.
pub(crate) fn refuse_unhandled_pod_update(
    req: &UpdatePodSandboxResourcesRequest,
) -> Result<(), Status> {
    refuse_oom_score_adj("resources", req.resources.as_ref())?;
    refuse_oom_score_adj("overhead", req.overhead.as_ref())
}

/// UpdateContainerResources: a Windows update cannot be applied.
pub(crate) fn refuse_unhandled_container_update(
    req: &UpdateContainerResourcesRequest,
) -> Result<(), Status> {
    if req
        .windows
        .as_ref()
        .is_some_and(|w| *w != WindowsContainerResources::default())
    {
        return Err(invalid("windows", LINUX_ONLY));
    }
    Ok(())
}

/// An image spec's runtime handler: crius has only the default one. `field` names the spec
/// in the request (`image`, `filter.image`).
pub(crate) fn refuse_unhandled_image(field: &str, spec: Option<&ImageSpec>) -> Result<(), Status> {
    match spec {
        Some(s) if !s.runtime_handler.is_empty() => Err(invalid(
            &format!("{field}.runtime_handler"),
            format!(
                "unknown runtime handler {}: crius has only the default handler \"\"",
                crius_runtime::validate::shown(&s.runtime_handler)
            ),
        )),
        _ => Ok(()),
    }
}

/// CreateContainer: refuses what the container path would otherwise ignore, including
/// namespace options that are not the pod's (checked against the pod's record; a pod that
/// cannot be read is left to the handler, which reports it).
pub(crate) fn refuse_unhandled_container(
    req: &CreateContainerRequest,
    pods: &crius_runtime::Pods,
) -> Result<(), Status> {
    let Some(config) = &req.config else {
        return Ok(());
    };
    let pod = pods
        .get(&req.pod_sandbox_id)
        .ok()
        .map(|p| p.record.spec.namespaces.clone());
    check_container(config, pod.as_ref())
}

fn check_container(
    config: &ContainerConfig,
    pod: Option<&crius_runtime::spec::NamespaceOptions>,
) -> Result<(), Status> {
    if config
        .windows
        .as_ref()
        .is_some_and(|w| *w != WindowsContainerConfig::default())
    {
        return Err(invalid("config.windows", LINUX_ONLY));
    }
    refuse_unhandled_image("config.image", config.image.as_ref())?;
    if let Some((i, _)) = config
        .mounts
        .iter()
        .enumerate()
        .find(|(_, m)| m.image.is_none() && !m.image_sub_path.is_empty())
    {
        return Err(invalid(
            &format!("config.mounts[{i}].image_sub_path"),
            "is set on a mount that is not an image volume",
        ));
    }
    let Some(sc) = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
    else {
        return Ok(());
    };
    if sc
        .capabilities
        .as_ref()
        .is_some_and(|c| !c.add_ambient_capabilities.is_empty())
    {
        return Err(unimplemented(
            &format!("{SC}.capabilities.add_ambient_capabilities"),
            "ambient capabilities",
        ));
    }
    if let Some(p) = &sc.seccomp
        && !p.localhost_ref.is_empty()
        && p.profile_type != security_profile::ProfileType::Localhost as i32
    {
        return Err(invalid(
            &format!("{SC}.seccomp.localhost_ref"),
            "is set, but the profile type is not Localhost",
        ));
    }
    match (&sc.namespace_options, pod) {
        (Some(ns), Some(pod)) => check_container_namespaces(ns, pod),
        _ => Ok(()),
    }
}

/// A container joins its pod's namespaces: a mode or mapping that is not the pod's is refused
/// instead of ignored. POD means "the pod's" (also when the pod's is the node's).
fn check_container_namespaces(
    ns: &NamespaceOption,
    pod: &crius_runtime::spec::NamespaceOptions,
) -> Result<(), Status> {
    use crius_runtime::spec::NamespaceMode as M;
    const NS: &str = "config.linux.security_context.namespace_options";
    for (name, mode, pod_mode) in [
        ("network", ns.network, pod.network),
        ("ipc", ns.ipc, pod.ipc),
    ] {
        let field = format!("{NS}.{name}");
        match NamespaceMode::try_from(mode) {
            Ok(NamespaceMode::Pod) => {}
            Ok(NamespaceMode::Node) if pod_mode == M::Node => {}
            Ok(NamespaceMode::Node) => {
                return Err(invalid(
                    &field,
                    format!(
                        "is NODE, but the pod has a {name} namespace of its own, which its \
                         containers join"
                    ),
                ));
            }
            Ok(NamespaceMode::Container | NamespaceMode::Target) => {
                return Err(invalid(
                    &field,
                    format!("a container joins its pod's {name} namespace: POD or NODE only"),
                ));
            }
            Err(_) => {
                return Err(invalid(&field, format!("unknown namespace mode {mode}")));
            }
        }
    }
    let pid = NamespaceMode::try_from(ns.pid).map_err(|_| {
        invalid(
            &format!("{NS}.pid"),
            format!("unknown namespace mode {}", ns.pid),
        )
    })?;
    if pid == NamespaceMode::Node && pod.pid != M::Node {
        return Err(invalid(
            &format!("{NS}.pid"),
            "is NODE, but the pod has a PID namespace of its own",
        ));
    }
    if !ns.target_id.is_empty() && pid != NamespaceMode::Target {
        return Err(invalid(
            &format!("{NS}.target_id"),
            "is set, but pid is not TARGET",
        ));
    }
    let Some(u) = &ns.userns_options else {
        return Ok(());
    };
    let field = format!("{NS}.userns_options");
    let pod_userns = pod.userns.as_ref().filter(|p| p.mode == M::Pod);
    let same = |maps: &[IdMapping], ranges: &[crius_runtime::spec::IdRange]| {
        maps.is_empty()
            || (maps.len() == ranges.len()
                && maps.iter().zip(ranges).all(|(m, r)| {
                    m.host_id == r.host_id
                        && m.container_id == r.container_id
                        && m.length == r.length
                }))
    };
    match (NamespaceMode::try_from(u.mode), pod_userns) {
        (Ok(NamespaceMode::Node), None) if u.uids.is_empty() && u.gids.is_empty() => Ok(()),
        (Ok(NamespaceMode::Node), None) => Err(invalid(
            &field,
            "mode NODE must not carry uid or gid mappings",
        )),
        (Ok(NamespaceMode::Node), Some(_)) => Err(invalid(
            &format!("{field}.mode"),
            "is NODE, but the pod has a user namespace of its own, which its containers join",
        )),
        (Ok(NamespaceMode::Pod), Some(p)) if same(&u.uids, &p.uids) && same(&u.gids, &p.gids) => {
            Ok(())
        }
        (Ok(NamespaceMode::Pod), Some(_)) => Err(invalid(
            &field,
            "the mappings are not the pod's: a container joins its pod's user namespace",
        )),
        (Ok(NamespaceMode::Pod), None) if u.uids.is_empty() && u.gids.is_empty() => Ok(()),
        (Ok(NamespaceMode::Pod), None) => Err(invalid(
            &field,
            "carries mappings, but the pod has no user namespace of its own",
        )),
        (Ok(NamespaceMode::Container | NamespaceMode::Target), _) => Err(invalid(
            &format!("{field}.mode"),
            "a container joins its pod's user namespace: POD or NODE (as the pod) only",
        )),
        (Err(_), _) => Err(invalid(
            &format!("{field}.mode"),
            format!("unknown namespace mode {}", u.mode),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use protox::prost_reflect::{DescriptorPool, Kind, MessageDescriptor};

    use super::*;

    /// Refusal functions whose call is still to be added to a handler.
    const PENDING_WIRING: &[&str] = &[];

    fn repo() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
    }

    fn read(relative: &str) -> Option<String> {
        std::fs::read_to_string(repo().join(relative)).ok()
    }

    /// The descriptors of `proto/api.proto`, compiled as cri-api's build script does.
    fn pool() -> DescriptorPool {
        let dir = repo().join("proto");
        protox::Compiler::new([&dir])
            .expect("the proto directory")
            .open_files(["api.proto"])
            .expect("api.proto compiles")
            .descriptor_pool()
    }

    /// The field paths beneath `message`: scalars, enums, repeated and map fields of them, and
    /// message fields with no fields. A message met again on its own path ends the walk there.
    fn walk(
        message: &MessageDescriptor,
        prefix: &str,
        seen: &mut Vec<String>,
        out: &mut Vec<String>,
    ) {
        for field in message.fields() {
            let path = format!("{prefix}.{}", field.name());
            let kind = match field.kind() {
                Kind::Message(entry) if field.is_map() => entry.map_entry_value_field().kind(),
                kind => kind,
            };
            match kind {
                Kind::Message(sub)
                    if sub.fields().len() > 0 && !seen.iter().any(|s| s == sub.full_name()) =>
                {
                    seen.push(sub.full_name().to_owned());
                    walk(&sub, &path, seen, out);
                    seen.pop();
                }
                _ => out.push(path),
            }
        }
    }

    /// Every field of the request of every RPC of both CRI services.
    fn request_fields() -> Vec<String> {
        let pool = pool();
        let mut out = Vec::new();
        let mut roots = BTreeSet::new();
        for service in pool.services() {
            for method in service.methods() {
                let input = method.input();
                if roots.insert(input.full_name().to_owned()) {
                    walk(
                        &input,
                        input.name(),
                        &mut vec![input.full_name().to_owned()],
                        &mut out,
                    );
                }
            }
        }
        out
    }

    /// Whether a table entry (a field, or a message field covering its fields) covers `path`.
    fn covers(entry: &str, path: &str) -> bool {
        path.strip_prefix(entry)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
    }

    fn paths() -> impl Iterator<Item = &'static str> {
        HONOURED
            .iter()
            .map(|h| h.path)
            .chain(REFUSED.iter().map(|r| r.path))
            .chain(ACCEPTED.iter().map(|a| a.path))
    }

    #[test]
    fn every_request_field_is_honoured_or_refused() {
        let fields = request_fields();
        assert!(
            fields.len() > 400,
            "the walk found only {} fields",
            fields.len()
        );
        let unclassified: Vec<&String> = fields
            .iter()
            .filter(|p| {
                !HONOURED.iter().any(|h| h.path == p.as_str())
                    && !REFUSED.iter().any(|r| covers(r.path, p))
                    && !ACCEPTED.iter().any(|a| covers(a.path, p))
            })
            .collect();
        let mut stale: Vec<&str> = HONOURED
            .iter()
            .map(|h| h.path)
            .filter(|h| !fields.iter().any(|p| p == h))
            .collect();
        stale.extend(
            REFUSED
                .iter()
                .map(|r| r.path)
                .chain(ACCEPTED.iter().map(|a| a.path))
                .filter(|e| !fields.iter().any(|p| covers(e, p))),
        );
        let mut twice = Vec::new();
        for table in [
            HONOURED.iter().map(|h| h.path).collect::<Vec<_>>(),
            REFUSED.iter().map(|r| r.path).collect(),
            ACCEPTED.iter().map(|a| a.path).collect(),
        ] {
            let mut seen = BTreeSet::new();
            twice.extend(table.into_iter().filter(|p| !seen.insert(*p)));
        }
        // A field either does something or is accepted without effect, not both.
        let contradictory: Vec<&str> = ACCEPTED
            .iter()
            .map(|a| a.path)
            .filter(|a| HONOURED.iter().any(|h| covers(a, h.path)))
            .collect();
        assert!(
            unclassified.is_empty()
                && stale.is_empty()
                && twice.is_empty()
                && contradictory.is_empty(),
            "CRI fields in neither table (decide: honour it and name the test that proves it, \
             or refuse it with a clear error; see crates/crius-server/src/fields.rs):\n  {}\n\
             table entries naming no field of proto/api.proto:\n  {}\n\
             entries listed twice in one table:\n  {}\n\
             entries both honoured and accepted without effect:\n  {}",
            unclassified
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n  "),
            stale.join("\n  "),
            twice.join("\n  "),
            contradictory.join("\n  "),
        );
    }

    /// `file::function` names a function defined in that file.
    fn defined(reference: &str, pattern: impl Fn(&str) -> String) -> bool {
        let Some((file, function)) = reference.split_once("::") else {
            return false;
        };
        read(file).is_some_and(|text| text.contains(&pattern(function)))
    }

    #[test]
    fn every_named_test_and_refusal_exists() {
        let proofs = HONOURED
            .iter()
            .map(|h| h.proof)
            .chain(REFUSED.iter().map(|r| r.proof))
            .chain(ACCEPTED.iter().map(|a| a.proof));
        let mut missing: BTreeSet<String> = proofs
            .filter(|p| !defined(p, |f| format!("fn {f}(")))
            .map(|p| format!("test {p}"))
            .collect();
        let server = repo().join("crates/crius-server/src");
        let callers: Vec<String> = std::fs::read_dir(&server)
            .expect("crius-server sources")
            .flatten()
            .filter(|e| e.file_name() != "fields.rs")
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .collect();
        for place in REFUSED.iter().map(|r| r.place) {
            if !defined(place, |f| format!("{f}(")) {
                missing.insert(format!("refusal {place}"));
            }
            if let Some(function) = place
                .strip_prefix("crates/crius-server/src/fields.rs::")
                .filter(|f| !PENDING_WIRING.contains(f))
                && !callers
                    .iter()
                    .any(|c| c.contains(&format!("fields::{function}(")))
            {
                missing.insert(format!("a handler calling fields::{function}"));
            }
        }
        assert!(
            missing.is_empty(),
            "named but not found:\n  {}",
            missing.into_iter().collect::<Vec<_>>().join("\n  ")
        );
    }

    #[test]
    fn the_docs_list_every_field() {
        let docs = read("docs/architecture.md").expect("docs/architecture.md");
        let section = docs
            .split_once("## CRI fields: honoured or refused")
            .map(|(_, s)| s)
            .expect("the section \"CRI fields: honoured or refused\" in docs/architecture.md");
        let missing: Vec<&str> = paths()
            .filter(|p| !section.contains(&format!("`{p}`")))
            .collect();
        assert!(
            missing.is_empty(),
            "docs/architecture.md does not list (regenerate the section with `cargo test -p \
             crius-server fields::tests::print_docs_section -- --ignored --nocapture`):\n  {}",
            missing.join("\n  ")
        );
    }

    /// Prints the docs section from the tables.
    #[test]
    #[ignore = "prints the docs/architecture.md section"]
    fn print_docs_section() {
        let mut s = String::from(DOCS_INTRO);
        s.push_str("\n### Honoured\n\n| field | proved by |\n| --- | --- |\n");
        for h in HONOURED {
            s.push_str(&format!("| `{}` | `{}` |\n", h.path, h.proof));
        }
        s.push_str(
            "\n### Refused\n\nThe default value of a field is never refused; a field also \
             listed as honoured is refused only for the values named here.\n\n\
             | field | refused when | code | where | proved by |\n| --- | --- | --- | --- | --- |\n",
        );
        for r in REFUSED {
            s.push_str(&format!(
                "| `{}` | {} | {:?} | `{}` | `{}` |\n",
                r.path, r.when, r.code, r.place, r.proof
            ));
        }
        s.push_str("\n### Accepted without effect, by the contract\n\n| field | why | shown by |\n| --- | --- | --- |\n");
        for a in ACCEPTED {
            s.push_str(&format!("| `{}` | {} | `{}` |\n", a.path, a.why, a.proof));
        }
        println!("{s}");
    }

    const DOCS_INTRO: &str = "## CRI fields: honoured or refused

Every field of every request of both CRI services is decided, in the tables of
`crates/crius-server/src/fields.rs`: honoured (a test proves it), refused with an error naming
the field, or, for a few, accepted without effect because that is what the contract means for
crius (each says why). The test `fields::tests::every_request_field_is_honoured_or_refused`
walks `proto/api.proto` (every field of every request message, recursively) and fails on a
field in no table, so a new proto field fails CI until someone decides; other tests check that
every named test and refusal exists, that every refusal in `fields.rs` is called by a handler,
and that this section lists every path. Paths are dotted from the request message, without
indexes; a refused or accepted message field covers the fields beneath it. This section is
printed by `cargo test -p crius-server fields::tests::print_docs_section -- --ignored
--nocapture`.
";

    fn kubelet_pod() -> PodSandboxConfig {
        PodSandboxConfig {
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: "/kubepods/burstable/pod1".into(),
                security_context: Some(LinuxSandboxSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        pid: NamespaceMode::Container.into(),
                        userns_options: Some(UserNamespace {
                            mode: NamespaceMode::Node.into(),
                            ..UserNamespace::default()
                        }),
                        ..NamespaceOption::default()
                    }),
                    run_as_user: Some(Int64Value { value: 1000 }),
                    run_as_group: Some(Int64Value { value: 1000 }),
                    supplemental_groups: vec![2000, 3000],
                    supplemental_groups_policy: SupplementalGroupsPolicy::Strict.into(),
                    privileged: true,
                    seccomp: Some(SecurityProfile {
                        profile_type: security_profile::ProfileType::RuntimeDefault.into(),
                        localhost_ref: String::new(),
                    }),
                    ..LinuxSandboxSecurityContext::default()
                }),
                sysctls: [(
                    "net.ipv4.ip_unprivileged_port_start".to_owned(),
                    "0".to_owned(),
                )]
                .into(),
                overhead: Some(LinuxContainerResources::default()),
                resources: Some(LinuxContainerResources {
                    cpu_shares: 102,
                    cpu_period: 100_000,
                    memory_limit_in_bytes: 1 << 30,
                    ..LinuxContainerResources::default()
                }),
            }),
            ..PodSandboxConfig::default()
        }
    }

    fn security(config: &mut PodSandboxConfig) -> &mut LinuxSandboxSecurityContext {
        config
            .linux
            .get_or_insert_default()
            .security_context
            .get_or_insert_default()
    }

    fn refused(r: Result<(), Status>, code: Code, field: &str) {
        let e = r.expect_err(field);
        assert_eq!(e.code(), code, "{field}: {}", e.message());
        assert!(e.message().contains(field), "{field}: {}", e.message());
    }

    #[test]
    fn kubelet_shaped_requests_pass() {
        refuse_unhandled_pod(Some(&kubelet_pod())).expect("kubelet's pod");
        refuse_unhandled_pod(None).expect("no config: the handler's to refuse");
        let pod = crius_runtime::spec::NamespaceOptions {
            pid: crius_runtime::spec::NamespaceMode::Container,
            userns: Some(crius_runtime::spec::UsernsOptions {
                mode: crius_runtime::spec::NamespaceMode::Node,
                ..Default::default()
            }),
            ..Default::default()
        };
        check_container(&kubelet_container(), Some(&pod)).expect("kubelet's container");
        check_container(&kubelet_container(), None).expect("an unknown pod: the handler's");
        refuse_unhandled_container_update(&UpdateContainerResourcesRequest {
            container_id: "c".into(),
            linux: Some(LinuxContainerResources {
                oom_score_adj: 937,
                ..LinuxContainerResources::default()
            }),
            windows: Some(WindowsContainerResources::default()),
            annotations: Default::default(),
        })
        .expect("kubelet's update");
        refuse_unhandled_pod_update(&UpdatePodSandboxResourcesRequest::default())
            .expect("an empty update");
    }

    fn kubelet_container() -> ContainerConfig {
        ContainerConfig {
            image: Some(ImageSpec {
                image: "sha256:0123".into(),
                user_specified_image: "busybox:1.36".into(),
                ..ImageSpec::default()
            }),
            mounts: vec![Mount {
                container_path: "/etc/hosts".into(),
                host_path: "/var/lib/kubelet/pods/1/etc-hosts".into(),
                selinux_relabel: true,
                ..Mount::default()
            }],
            linux: Some(LinuxContainerConfig {
                security_context: Some(LinuxContainerSecurityContext {
                    namespace_options: Some(NamespaceOption {
                        pid: NamespaceMode::Container.into(),
                        userns_options: Some(UserNamespace {
                            mode: NamespaceMode::Node.into(),
                            ..UserNamespace::default()
                        }),
                        ..NamespaceOption::default()
                    }),

                    seccomp: Some(SecurityProfile {
                        profile_type: security_profile::ProfileType::RuntimeDefault.into(),
                        localhost_ref: String::new(),
                    }),
                    ..LinuxContainerSecurityContext::default()
                }),
                ..LinuxContainerConfig::default()
            }),
            ..ContainerConfig::default()
        }
    }

    #[test]
    fn windows_configs_are_refused() {
        let mut pod = kubelet_pod();
        pod.windows = Some(WindowsPodSandboxConfig::default());
        refuse_unhandled_pod(Some(&pod)).expect("an empty Windows config");
        pod.windows = Some(WindowsPodSandboxConfig {
            security_context: Some(WindowsSandboxSecurityContext {
                host_process: true,
                ..WindowsSandboxSecurityContext::default()
            }),
        });
        refused(
            refuse_unhandled_pod(Some(&pod)),
            Code::InvalidArgument,
            "config.windows",
        );
        let mut c = kubelet_container();
        c.windows = Some(WindowsContainerConfig {
            resources: Some(WindowsContainerResources {
                cpu_count: 2,
                ..WindowsContainerResources::default()
            }),
            ..WindowsContainerConfig::default()
        });
        refused(
            check_container(&c, None),
            Code::InvalidArgument,
            "config.windows",
        );
        refused(
            refuse_unhandled_container_update(&UpdateContainerResourcesRequest {
                windows: Some(WindowsContainerResources {
                    memory_limit_in_bytes: 1 << 20,
                    ..WindowsContainerResources::default()
                }),
                ..UpdateContainerResourcesRequest::default()
            }),
            Code::InvalidArgument,
            "windows",
        );
    }

    #[test]
    #[allow(
        deprecated,
        reason = "the deprecated seccomp_profile_path is refused too"
    )]
    fn pod_security_fields_crius_cannot_apply_are_refused() {
        const F: &str = "config.linux.security_context";
        type Set = fn(&mut LinuxSandboxSecurityContext);
        let cases: Vec<(Set, Code, &str)> = vec![
            (
                |s| {
                    s.selinux_options = Some(SeLinuxOption {
                        level: "s0:c1".into(),
                        ..SeLinuxOption::default()
                    })
                },
                Code::FailedPrecondition,
                "selinux_options",
            ),
            (
                |s| {
                    s.seccomp = Some(SecurityProfile {
                        profile_type: security_profile::ProfileType::Localhost.into(),
                        localhost_ref: "/nonexistent/p.json".into(),
                    })
                },
                Code::InvalidArgument,
                "seccomp.localhost_ref",
            ),
            (
                |s| {
                    s.seccomp = Some(SecurityProfile {
                        profile_type: 9,
                        localhost_ref: String::new(),
                    })
                },
                Code::InvalidArgument,
                "seccomp.profile_type",
            ),
            (
                |s| {
                    s.seccomp = Some(SecurityProfile {
                        profile_type: security_profile::ProfileType::RuntimeDefault.into(),
                        localhost_ref: "/p.json".into(),
                    })
                },
                Code::InvalidArgument,
                "seccomp.localhost_ref",
            ),
            (
                |s| s.seccomp_profile_path = "localhost//nonexistent/p.json".into(),
                Code::InvalidArgument,
                "seccomp_profile_path",
            ),
            (
                |s| s.seccomp_profile_path = "bogus".into(),
                Code::InvalidArgument,
                "seccomp_profile_path",
            ),
            (
                |s| s.namespace_options.get_or_insert_default().target_id = "c".into(),
                Code::InvalidArgument,
                "namespace_options.target_id",
            ),
        ];
        for (set, code, field) in cases {
            let mut pod = kubelet_pod();
            set(security(&mut pod));
            refused(
                refuse_unhandled_pod(Some(&pod)),
                code,
                &format!("{F}.{field}"),
            );
        }
        // A valid Localhost profile for the sandbox is accepted (critest sends one).
        let dir = tempfile::tempdir().expect("tempdir");
        let profile = dir.path().join("p.json");
        std::fs::write(&profile, r#"{"defaultAction":"SCMP_ACT_ALLOW"}"#).expect("write");
        let mut pod = kubelet_pod();
        security(&mut pod).seccomp = Some(SecurityProfile {
            profile_type: security_profile::ProfileType::Localhost.into(),
            localhost_ref: profile.display().to_string(),
        });
        assert!(refuse_unhandled_pod(Some(&pod)).is_ok());
        let mut pod = kubelet_pod();
        security(&mut pod).seccomp = None;
        security(&mut pod).seccomp_profile_path = format!("localhost/{}", profile.display());
        assert!(refuse_unhandled_pod(Some(&pod)).is_ok());
        for ok in ["", "unconfined", "runtime/default", "docker/default"] {
            let mut pod = kubelet_pod();
            security(&mut pod).seccomp = None;
            security(&mut pod).seccomp_profile_path = ok.into();
            refuse_unhandled_pod(Some(&pod)).expect(ok);
        }
    }

    #[test]
    fn pod_oom_score_adj_is_refused() {
        let mut pod = kubelet_pod();
        pod.linux
            .get_or_insert_default()
            .resources
            .get_or_insert_default()
            .oom_score_adj = -998;
        refused(
            refuse_unhandled_pod(Some(&pod)),
            Code::InvalidArgument,
            "config.linux.resources.oom_score_adj",
        );
        let mut pod = kubelet_pod();
        pod.linux
            .get_or_insert_default()
            .overhead
            .get_or_insert_default()
            .oom_score_adj = 5;
        refused(
            refuse_unhandled_pod(Some(&pod)),
            Code::InvalidArgument,
            "config.linux.overhead.oom_score_adj",
        );
        for field in ["resources", "overhead"] {
            let r = Some(LinuxContainerResources {
                oom_score_adj: 100,
                ..LinuxContainerResources::default()
            });
            let req = if field == "resources" {
                UpdatePodSandboxResourcesRequest {
                    resources: r,
                    ..Default::default()
                }
            } else {
                UpdatePodSandboxResourcesRequest {
                    overhead: r,
                    ..Default::default()
                }
            };
            refused(
                refuse_unhandled_pod_update(&req),
                Code::InvalidArgument,
                &format!("{field}.oom_score_adj"),
            );
        }
    }

    #[test]
    fn container_fields_crius_cannot_apply_are_refused() {
        fn sc(c: &mut ContainerConfig) -> &mut LinuxContainerSecurityContext {
            c.linux
                .get_or_insert_default()
                .security_context
                .get_or_insert_default()
        }
        const F: &str = "config.linux.security_context";
        let mut c = kubelet_container();
        sc(&mut c).capabilities = Some(Capability {
            add_ambient_capabilities: vec!["CAP_NET_BIND_SERVICE".into()],
            ..Capability::default()
        });
        refused(
            check_container(&c, None),
            Code::Unimplemented,
            &format!("{F}.capabilities.add_ambient_capabilities"),
        );
        let mut c = kubelet_container();
        sc(&mut c).seccomp = Some(SecurityProfile {
            profile_type: security_profile::ProfileType::RuntimeDefault.into(),
            localhost_ref: "/p.json".into(),
        });
        refused(
            check_container(&c, None),
            Code::InvalidArgument,
            &format!("{F}.seccomp.localhost_ref"),
        );
        let mut c = kubelet_container();
        c.mounts[0].image_sub_path = "dir".into();
        refused(
            check_container(&c, None),
            Code::InvalidArgument,
            "config.mounts[0].image_sub_path",
        );
        let mut c = kubelet_container();
        c.image.get_or_insert_default().runtime_handler = "kata".into();
        refused(
            check_container(&c, None),
            Code::InvalidArgument,
            "config.image.runtime_handler",
        );
    }

    #[test]
    fn image_runtime_handlers_are_refused() {
        refuse_unhandled_image("image", None).expect("no spec");
        refuse_unhandled_image(
            "image",
            Some(&ImageSpec {
                image: "busybox".into(),
                ..ImageSpec::default()
            }),
        )
        .expect("the default handler");
        refused(
            refuse_unhandled_image(
                "filter.image",
                Some(&ImageSpec {
                    runtime_handler: "kata".into(),
                    ..ImageSpec::default()
                }),
            ),
            Code::InvalidArgument,
            "filter.image.runtime_handler",
        );
    }

    #[test]
    fn container_namespaces_must_be_the_pods() {
        use crius_runtime::spec::{IdRange, NamespaceMode as M, NamespaceOptions, UsernsOptions};
        const F: &str = "config.linux.security_context.namespace_options";
        let range = IdRange {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        };
        let map = IdMapping {
            container_id: 0,
            host_id: 65536,
            length: 65536,
        };
        let userns_pod = NamespaceOptions {
            pid: M::Container,
            userns: Some(UsernsOptions {
                mode: M::Pod,
                uids: vec![range],
                gids: vec![range],
            }),
            ..NamespaceOptions::default()
        };
        let host_pod = NamespaceOptions {
            network: M::Node,
            pid: M::Node,
            ipc: M::Node,
            ..NamespaceOptions::default()
        };
        let userns = |mode: NamespaceMode, maps: Vec<IdMapping>| {
            Some(UserNamespace {
                mode: mode.into(),
                uids: maps.clone(),
                gids: maps,
            })
        };
        let ok = |ns: NamespaceOption, pod: &NamespaceOptions| {
            check_container_namespaces(&ns, pod).expect("the pod's namespaces");
        };
        // What kubelet sends: the pod's own options.
        ok(
            NamespaceOption {
                pid: NamespaceMode::Container.into(),
                userns_options: userns(NamespaceMode::Pod, vec![map]),
                ..Default::default()
            },
            &userns_pod,
        );
        ok(
            NamespaceOption {
                pid: NamespaceMode::Pod.into(),
                userns_options: userns(NamespaceMode::Pod, vec![]),
                ..Default::default()
            },
            &userns_pod,
        );
        ok(
            NamespaceOption {
                network: NamespaceMode::Node.into(),
                pid: NamespaceMode::Node.into(),
                ipc: NamespaceMode::Node.into(),
                ..Default::default()
            },
            &host_pod,
        );
        // POD is the pod's namespace, the node's in a host-namespace pod.
        ok(NamespaceOption::default(), &host_pod);
        ok(
            NamespaceOption {
                pid: NamespaceMode::Target.into(),
                target_id: "c".into(),
                ..Default::default()
            },
            &userns_pod,
        );
        let refused_ns = |ns: NamespaceOption, pod: &NamespaceOptions, field: &str| {
            refused(
                check_container_namespaces(&ns, pod),
                Code::InvalidArgument,
                &format!("{F}.{field}"),
            );
        };
        refused_ns(
            NamespaceOption {
                network: NamespaceMode::Node.into(),
                ..Default::default()
            },
            &userns_pod,
            "network",
        );
        refused_ns(
            NamespaceOption {
                network: NamespaceMode::Container.into(),
                ..Default::default()
            },
            &host_pod,
            "network",
        );
        refused_ns(
            NamespaceOption {
                ipc: NamespaceMode::Node.into(),
                ..Default::default()
            },
            &userns_pod,
            "ipc",
        );
        refused_ns(
            NamespaceOption {
                ipc: 7,
                ..Default::default()
            },
            &userns_pod,
            "ipc",
        );
        refused_ns(
            NamespaceOption {
                pid: NamespaceMode::Node.into(),
                ..Default::default()
            },
            &userns_pod,
            "pid",
        );
        refused_ns(
            NamespaceOption {
                target_id: "c".into(),
                ..Default::default()
            },
            &userns_pod,
            "target_id",
        );
        refused_ns(
            NamespaceOption {
                userns_options: userns(NamespaceMode::Node, vec![]),
                ..Default::default()
            },
            &userns_pod,
            "userns_options.mode",
        );
        refused_ns(
            NamespaceOption {
                userns_options: userns(
                    NamespaceMode::Pod,
                    vec![IdMapping {
                        host_id: 1000,
                        ..map
                    }],
                ),
                ..Default::default()
            },
            &userns_pod,
            "userns_options",
        );
        refused_ns(
            NamespaceOption {
                userns_options: userns(NamespaceMode::Pod, vec![map]),
                ..Default::default()
            },
            &host_pod,
            "userns_options",
        );
        refused_ns(
            NamespaceOption {
                userns_options: userns(NamespaceMode::Container, vec![]),
                ..Default::default()
            },
            &userns_pod,
            "userns_options.mode",
        );
        refused_ns(
            NamespaceOption {
                userns_options: userns(NamespaceMode::Node, vec![map]),
                ..Default::default()
            },
            &host_pod,
            "userns_options",
        );
    }
}
