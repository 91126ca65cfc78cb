//! Pod networking glue: the CNI driver built from the configuration (handed to crius-runtime,
//! which runs ADD and DEL) and the `NetworkReady` condition of Status.

use cri_api::v1::RuntimeCondition;
use crius_net::NetworkStatus;

use crate::Cri;

/// Condition type: the pod network is ready.
pub const NETWORK_READY: &str = "NetworkReady";

/// Directory under `--root` where CNI results are cached, so DEL works after a restart or reboot.
pub const CNI_CACHE_DIR: &str = "cni";

/// The CNI client for a configuration. Without the `loopback` plugin: each pod's sandbox
/// brings its `lo` up itself as it creates the network namespace.
pub(crate) fn cni(config: &crate::Config) -> crius_net::Cni {
    crius_net::Cni::new(
        &config.cni_conf_dir,
        &config.cni_bin_dirs,
        config.root.join(CNI_CACHE_DIR),
    )
    .with_loopback(false)
}

impl Cri {
    /// `NetworkReady`: true when a CNI configuration is loaded and its plugins exist.
    pub(crate) async fn network_condition(&self) -> RuntimeCondition {
        match self.pods.network_status().await {
            NetworkStatus::Ready { .. } => RuntimeCondition {
                r#type: NETWORK_READY.into(),
                status: true,
                reason: String::new(),
                message: String::new(),
            },
            NetworkStatus::NotReady { message } => RuntimeCondition {
                r#type: NETWORK_READY.into(),
                status: false,
                reason: "NetworkPluginNotReady".into(),
                message,
            },
        }
    }
}
