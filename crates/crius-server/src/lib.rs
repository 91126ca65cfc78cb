//! The CRI services of crius: maps CRI `RuntimeService` and `ImageService` requests onto the
//! domain crates, and holds the daemon's configuration.

pub mod calllog;
pub mod config;
mod containers;
mod events;
mod fields;
mod image;
pub mod metrics;
mod network;
mod podcidr;
mod pods;
mod runtime;
mod signal;
mod stats;
mod status;
mod stream;

use std::pin::Pin;
use std::sync::Arc;

use cri_api::v1::image_service_server::ImageServiceServer;
use cri_api::v1::runtime_service_server::RuntimeServiceServer;

pub use config::{Config, ConfigError, LogFormat};

/// The CRI API version crius speaks.
pub const RUNTIME_API_VERSION: &str = "v1";
/// The runtime name reported by `Version`.
pub const RUNTIME_NAME: &str = "crius";
/// The crius version reported by `Version`.
pub const RUNTIME_VERSION: &str = env!("CARGO_PKG_VERSION");

/// A boxed server stream, the response type of streaming RPCs.
pub(crate) type BoxStream<T> =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<T, tonic::Status>> + Send + 'static>>;

/// The metadata database under `--root`: pods, containers and images.
pub const METADATA_FILE: &str = "metadata.redb";

/// Why the services could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The metadata database could not be opened or created.
    #[error("cannot open the metadata database {path}: {source}")]
    Metadata {
        /// The database file.
        path: std::path::PathBuf,
        /// What redb said.
        source: Box<redb::DatabaseError>,
    },
    /// The metadata database file could not be made root-only.
    #[error("cannot restrict the metadata database {path} to root: {source}")]
    MetadataMode {
        /// The database file.
        path: std::path::PathBuf,
        /// What the kernel said.
        source: std::io::Error,
    },
    /// The image store could not be opened.
    #[error("cannot open the image store: {0}")]
    Images(#[source] crius_image::ImageError),
    /// The pod store could not be opened.
    #[error("cannot open the pod store: {0}")]
    Pods(#[source] crius_runtime::PodError),
    /// The path of the running binary (started again as the pod monitor) is unknown.
    #[error("cannot find the criusd binary: {0}")]
    Exe(#[source] std::io::Error),
}

/// State shared by every CRI service.
#[derive(Debug)]
pub struct Cri {
    config: Config,
    /// The metadata database; each domain crate keeps its own tables in it.
    #[allow(dead_code, reason = "the image and pod stores keep their tables here")]
    db: Arc<redb::Database>,
    /// The image store (blobs, layers, image records).
    images: Arc<crius_image::ImageStore>,
    /// The pod sandboxes.
    pods: Arc<crius_runtime::Pods>,
    /// The streaming server of Exec, Attach and PortForward.
    stream: stream::Streaming,
    /// The container events of GetContainerEvents.
    events: Arc<events::Events>,
    /// The node's pod CIDRs (UpdateRuntimeConfig).
    pod_cidrs: podcidr::PodCidrs,
}

/// Memory the metadata database may keep of its pages (redb's default is 1 GiB). Reads are
/// served from crius' own records; a pod's record is a few KiB.
const METADATA_CACHE_BYTES: usize = 16 << 20;

/// Opens (creating) `<root>/metadata.redb`, mode 0600: it holds pod annotations, labels and
/// container configuration, which no host user but root may read.
pub fn open_metadata(root: &std::path::Path) -> Result<redb::Database, StartError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = root.join(METADATA_FILE);
    let mode = |source| StartError::MetadataMode {
        path: path.clone(),
        source,
    };
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(mode)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).map_err(mode)?;
    redb::Builder::new()
        .set_cache_size(METADATA_CACHE_BYTES)
        .create(&path)
        .map_err(|e| StartError::Metadata {
            path: path.clone(),
            source: Box::new(e),
        })
}

/// The node's AppArmor, with crius' default profile loaded where the kernel enforces it.
fn apparmor_node() -> crius_runtime::apparmor::Node {
    use crius_runtime::apparmor::{DEFAULT_PROFILE, Node};
    let node = Node::detect();
    match &node {
        Node::Off(reason) => tracing::info!(
            %reason,
            "AppArmor is off: containers run without a profile; RuntimeDefault and Localhost are refused"
        ),
        Node::On { .. } => match node.load_default() {
            Ok(()) => tracing::info!(profile = DEFAULT_PROFILE, "AppArmor default profile loaded"),
            Err(e) => tracing::warn!(
                error = %e,
                "AppArmor is on, but crius' default profile cannot be loaded now (it is tried \
                 again at each container that needs it)"
            ),
        },
    }
    node
}

impl Cri {
    /// Opens the stores under the configuration's root (already validated) and builds the
    /// services. `idmap` is the result of the idmapped-mount probe criusd ran at start.
    pub fn open(
        config: Config,
        idmap: crius_runtime::IdmapSupport,
    ) -> Result<Arc<Cri>, StartError> {
        let db = Arc::new(open_metadata(&config.root)?);
        let registry = crius_image::RegistryOptions {
            insecure: config.insecure_registries.clone(),
            mirrors: config.registry.mirrors.clone(),
            hosts_dir: config.registry_config_dir(),
            progress_timeout: config.pull_progress_timeout(),
        };
        let images = crius_image::ImageStore::open(&config.root, db.clone(), registry)
            .map_err(StartError::Images)?;
        let images = Arc::new(images);
        let pods = crius_runtime::Pods::open(
            db.clone(),
            images.clone(),
            crius_runtime::PodsConfig {
                state_dir: config.state.clone(),
                monitor_exe: std::env::current_exe().map_err(StartError::Exe)?,
                idmap,
                cgroup_driver: match config.cgroup_driver {
                    config::CgroupDriver::Cgroupfs => crius_runtime::CgroupDriver::Cgroupfs,
                    config::CgroupDriver::Systemd => crius_runtime::CgroupDriver::Systemd,
                },
                container_root: config.container_root(),
                cni: network::cni(&config),
                cdi_spec_dirs: config.cdi_spec_dirs.clone(),
                apparmor: apparmor_node(),
            },
        )
        .map_err(StartError::Pods)?;
        let pods = Arc::new(pods);
        let events = Arc::new(events::Events::new(pods.clone(), config.events_buffer));
        events.watch();
        let cri = Arc::new(Cri {
            events,
            pod_cidrs: podcidr::PodCidrs::load(&config.root),
            stream: stream::Streaming::new(config.stream_addr(), pods.clone()),
            config,
            db,
            images,
            pods,
        });
        // Inside a tokio runtime the streaming server starts now; otherwise at first use.
        cri.start_streaming();
        Ok(cri)
    }

    /// The start-up recovery: the pod store's (records, directories, cgroups, temporary
    /// files, pod networks, image leases no container owns). Failures are logged; criusd
    /// serves anyway.
    pub async fn recover(self: &Arc<Self>) {
        match self.pods.recover().await {
            Ok(r) => tracing::info!(
                rolled_back = r.rolled_back.len(),
                orphan_dirs = r.orphan_dirs.len(),
                orphan_cgroups = r.orphan_cgroups.len(),
                temp_files = r.temp_files.len(),
                "pod store recovered"
            ),
            Err(e) => tracing::error!(error = %e, "pod store recovery failed"),
        }
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The tonic `RuntimeService` server.
    pub fn runtime_service(self: &Arc<Self>) -> RuntimeServiceServer<runtime::Runtime> {
        RuntimeServiceServer::new(runtime::Runtime(self.clone()))
    }

    /// The tonic `ImageService` server.
    pub fn image_service(self: &Arc<Self>) -> ImageServiceServer<image::Images> {
        ImageServiceServer::new(image::Images(self.clone()))
    }
}

/// An `Unimplemented` status naming the RPC.
pub(crate) fn unimplemented(rpc: &str) -> tonic::Status {
    tonic::Status::unimplemented(format!("{rpc} is not implemented by crius yet"))
}

/// Defines RPC methods that answer `Unimplemented` with their CRI name, in the desugared form
/// `#[tonic::async_trait]` produces (it does not see methods a macro expands to).
macro_rules! unimplemented_rpcs {
    ($($method:ident($req:ty) -> $resp:ty = $name:literal;)*) => {
        $(
            fn $method<'life0, 'async_trait>(
                &'life0 self,
                _request: tonic::Request<$req>,
            ) -> ::std::pin::Pin<Box<
                dyn ::std::future::Future<Output = Result<tonic::Response<$resp>, tonic::Status>>
                    + Send
                    + 'async_trait,
            >>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async move { Err($crate::unimplemented($name)) })
            }
        )*
    };
}
pub(crate) use unimplemented_rpcs;
