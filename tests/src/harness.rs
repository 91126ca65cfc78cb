//! Starts a real `criusd` on a fresh temporary root, state directory and socket, and connects CRI
//! clients to it over the unix socket. Dropping a [`Criusd`] stops the daemon (also when the test
//! panics) and removes everything it made.

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use cri_api::v1::image_service_client::ImageServiceClient;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use hyper_util::rt::TokioIo;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::{Channel, Endpoint, Uri};

/// How long a daemon may take to answer its first `Version`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// The `criusd` binary under test: `$CRIUSD_BIN`, or the one built next to the test binary.
pub fn criusd_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("CRIUSD_BIN") {
        return PathBuf::from(path);
    }
    // Test binaries live in target/<profile>/deps; criusd in target/<profile>.
    let exe = std::env::current_exe().unwrap_or_default();
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    profile_dir.join("criusd")
}

/// Connects to a CRI unix socket.
pub async fn connect(socket: &Path) -> anyhow::Result<Channel> {
    let socket = socket.to_path_buf();
    // The URI is required by tonic but unused: the connector dials the socket.
    let channel = Endpoint::try_from("http://[::]:50051")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(socket).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
        .await?;
    Ok(channel)
}

/// How to start a daemon.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Config file contents (TOML). Unless it sets `cni_conf_dir`, the harness adds one naming
    /// a [`TestNetwork`] private to this daemon.
    pub config: String,
    /// Extra command-line arguments.
    pub args: Vec<String>,
}

/// A CNI network private to one test daemon: its own bridge (no masquerading, no port
/// mappings), its own /24 and IPAM state under the daemon's temporary directory, so daemons
/// running side by side never share addresses and the host's CNI state is never touched. The
/// bridge is deleted on drop.
#[derive(Debug)]
pub struct TestNetwork {
    /// The bridge the CNI bridge plugin creates (`crt` + 8 hex digits).
    pub bridge: String,
    /// The first three octets of the pod subnet, e.g. `10.201.7`.
    pub prefix: String,
    /// The CNI configuration directory.
    pub conf_dir: PathBuf,
    /// host-local's data directory (one file per allocated IP under `<it>/<network name>/`).
    pub ipam_dir: PathBuf,
}

/// The CNI network name of every [`TestNetwork`].
pub const TEST_NETWORK_NAME: &str = "crius-test";

impl TestNetwork {
    /// Writes the conflist under `dir`.
    pub fn create(dir: &Path) -> anyhow::Result<TestNetwork> {
        let mut bytes = [0u8; 6];
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .context("cannot read /dev/urandom")?;
        let bridge = format!(
            "crt{:02x}{:02x}{:02x}{:02x}",
            bytes[0], bytes[1], bytes[2], bytes[3]
        );
        // 10.128.0.0/9 holds 32768 /24s: enough that concurrent test daemons do not collide.
        let prefix = format!("10.{}.{}", 128 + (bytes[4] & 0x7f), bytes[5]);
        let conf_dir = dir.join("cni");
        let ipam_dir = dir.join("cni-ipam");
        std::fs::create_dir_all(&conf_dir)?;
        let conflist = serde_json::json!({
            "cniVersion": "1.0.0",
            "name": TEST_NETWORK_NAME,
            "plugins": [{
                "type": "bridge",
                "bridge": bridge,
                "isGateway": true,
                "ipMasq": false,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir,
                    "ranges": [[{ "subnet": format!("{prefix}.0/24") }]],
                },
            }],
        });
        std::fs::write(conf_dir.join("10-test.conflist"), conflist.to_string())?;
        Ok(TestNetwork {
            bridge,
            prefix,
            conf_dir,
            ipam_dir,
        })
    }

    /// The addresses host-local has handed out and not released.
    pub fn allocated_ips(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.ipam_dir.join(TEST_NETWORK_NAME)) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with(&self.prefix))
            .collect()
    }

    /// Interfaces attached to the bridge (one veth per pod).
    pub fn attached_links(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(format!("/sys/class/net/{}/brif", self.bridge)) else {
            return Vec::new();
        };
        entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        if Path::new("/sys/class/net").join(&self.bridge).exists() {
            let _ = Command::new("ip")
                .args(["link", "del", &self.bridge])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Paths of one daemon's temporary world.
#[derive(Debug, Clone)]
pub struct Paths {
    /// `--root`.
    pub root: PathBuf,
    /// `--state`.
    pub state: PathBuf,
    /// `--listen`.
    pub socket: PathBuf,
    /// The config file given with `--config`.
    pub config: PathBuf,
    /// The daemon's stderr.
    pub log: PathBuf,
}

impl Paths {
    /// Paths under `dir`.
    pub fn under(dir: &Path) -> Paths {
        Paths {
            root: dir.join("root"),
            state: dir.join("state"),
            socket: dir.join("state/crius.sock"),
            config: dir.join("config.toml"),
            log: dir.join("criusd.log"),
        }
    }
}

/// Starts `criusd` with `args` and waits for it, without connecting. Its stderr goes to `log`.
pub fn spawn(args: &[String], log: &Path) -> anyhow::Result<Child> {
    spawn_binary(&criusd_binary(), args, log)
}

/// [`spawn`] with extra environment variables.
fn spawn_env(args: &[String], log: &Path, env: &[(&str, &str)]) -> anyhow::Result<Child> {
    spawn_command(&criusd_binary(), args, log, env)
}

/// Starts the criusd at `binary` with `args`, its output going to `log`.
pub fn spawn_binary(binary: &Path, args: &[String], log: &Path) -> anyhow::Result<Child> {
    spawn_command(binary, args, log, &[])
}

fn spawn_command(
    binary: &Path,
    args: &[String],
    log: &Path,
    env: &[(&str, &str)],
) -> anyhow::Result<Child> {
    if !binary.exists() {
        bail!(
            "{} does not exist: build it first (cargo build --bins --features criusd/failpoints) or set \
             CRIUSD_BIN",
            binary.display()
        );
    }
    let log_file = File::create(log)?;
    Command::new(binary)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("cannot start {}", binary.display()))
}

/// A running daemon with CRI clients connected to it.
#[derive(Debug)]
pub struct Criusd {
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// Its paths.
    pub paths: Paths,
    /// RuntimeService client.
    pub runtime: RuntimeServiceClient<Channel>,
    /// ImageService client.
    pub images: ImageServiceClient<Channel>,
    /// The daemon's private CNI network, unless the config named its own.
    pub network: Option<TestNetwork>,
}

impl Criusd {
    /// ListPodSandbox without a filter.
    pub async fn pods(&mut self) -> Vec<cri_api::v1::PodSandbox> {
        self.runtime
            .list_pod_sandbox(cri_api::v1::ListPodSandboxRequest::default())
            .await
            .expect("ListPodSandbox")
            .into_inner()
            .items
    }

    /// PullImage of `reference` without credentials.
    pub async fn pull(
        &mut self,
        reference: &str,
    ) -> Result<cri_api::v1::PullImageResponse, tonic::Status> {
        self.images
            .pull_image(cri_api::v1::PullImageRequest {
                image: Some(cri_api::v1::ImageSpec {
                    image: reference.to_owned(),
                    ..cri_api::v1::ImageSpec::default()
                }),
                auth: None,
                sandbox_config: None,
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Starts a daemon with defaults on a fresh temporary directory.
    pub async fn start() -> anyhow::Result<Criusd> {
        Criusd::start_with(Options::default()).await
    }

    /// Starts a daemon with `options` on a fresh temporary directory.
    pub async fn start_with(options: Options) -> anyhow::Result<Criusd> {
        let dir = tempfile::Builder::new().prefix("crius-test-").tempdir()?;
        // As /run is: a pod's mapped root must be able to reach the state directory beneath.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
        let paths = Paths::under(dir.path());
        let mut args = Self::base_args(&paths);
        let mut config = options.config;
        let mut network = None;
        if !config.contains("cni_conf_dir") {
            let net = TestNetwork::create(dir.path())?;
            // Top-level keys must precede any table of the caller's config.
            config = format!("cni_conf_dir = \"{}\"\n{config}", net.conf_dir.display());
            network = Some(net);
        }
        std::fs::write(&paths.config, &config)?;
        args.push("--config".into());
        args.push(paths.config.display().to_string());
        args.extend(options.args);
        let child = spawn(&args, &paths.log)?;
        let mut daemon = Criusd {
            dir,
            child: Some(child),
            runtime: RuntimeServiceClient::new(
                Endpoint::from_static("http://[::]:1").connect_lazy(),
            ),
            images: ImageServiceClient::new(Endpoint::from_static("http://[::]:1").connect_lazy()),
            paths,
            network,
        };
        daemon.wait_ready().await?;
        Ok(daemon)
    }

    /// The arguments pointing a daemon at `paths`.
    pub fn base_args(paths: &Paths) -> Vec<String> {
        vec![
            "--root".into(),
            paths.root.display().to_string(),
            "--state".into(),
            paths.state.display().to_string(),
            "--listen".into(),
            paths.socket.display().to_string(),
            "--log-level".into(),
            "debug".into(),
        ]
    }

    /// The temporary directory holding root, state, config and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The daemon's pid, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The daemon's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.paths.log).unwrap_or_default()
    }

    /// Waits until the daemon answers `Version`, then (re)connects the clients.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!(
                    "criusd exited with {status} while starting:\n{}",
                    self.log()
                );
            }
            if let Ok(channel) = connect(&self.paths.socket).await {
                let mut runtime = RuntimeServiceClient::new(channel.clone());
                if runtime
                    .version(cri_api::v1::VersionRequest::default())
                    .await
                    .is_ok()
                {
                    self.runtime = runtime;
                    self.images = ImageServiceClient::new(channel);
                    return Ok(());
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "criusd did not become ready in {READY_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends `signal` and waits for the daemon to exit.
    pub fn signal_and_wait(&mut self, signal: Signal) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("criusd is not running")?;
        let pid = Pid::from_raw(i32::try_from(child.id())?);
        kill(pid, signal)?;
        Ok(child.wait()?)
    }

    /// Stops the daemon with SIGTERM and waits for it.
    pub fn stop(&mut self) -> anyhow::Result<ExitStatus> {
        self.signal_and_wait(Signal::SIGTERM)
    }

    /// Starts the daemon again on the same directories (after [`Criusd::stop`] or a kill).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.restart_with_env(&[]).await
    }

    /// Waits for the daemon to exit by itself (e.g. at a failpoint); its exit status.
    pub fn wait_exit(&mut self) -> anyhow::Result<ExitStatus> {
        let mut child = self.child.take().context("criusd is not running")?;
        Ok(child.wait()?)
    }

    /// [`Criusd::restart`] with extra environment variables for the daemon (such as
    /// `CRIUS_FAILPOINT`).
    pub async fn restart_with_env(&mut self, env: &[(&str, &str)]) -> anyhow::Result<()> {
        if self.child.is_some() {
            self.stop()?;
        }
        let mut args = Self::base_args(&self.paths);
        if self.paths.config.exists() {
            args.push("--config".into());
            args.push(self.paths.config.display().to_string());
        }
        let log = self.paths.log.with_extension("log.restart");
        let child = spawn_env(&args, &log, env)?;
        self.paths.log = log;
        self.child = Some(child);
        self.wait_ready().await
    }
}

/// Stops and removes every pod sandbox of the daemon on `socket` over CRI, from a thread of its
/// own (a `Drop` may run inside a test's async runtime). Errors are ignored: this is cleanup.
fn remove_all_pods(socket: &Path) {
    let socket = socket.to_path_buf();
    let cleanup = std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async {
            let Ok(channel) = connect(&socket).await else {
                return;
            };
            let mut runtime = RuntimeServiceClient::new(channel);
            let Ok(list) = runtime
                .list_pod_sandbox(cri_api::v1::ListPodSandboxRequest::default())
                .await
            else {
                return;
            };
            for pod in list.into_inner().items {
                let _ = runtime
                    .stop_pod_sandbox(cri_api::v1::StopPodSandboxRequest {
                        pod_sandbox_id: pod.id.clone(),
                    })
                    .await;
                let _ = runtime
                    .remove_pod_sandbox(cri_api::v1::RemovePodSandboxRequest {
                        pod_sandbox_id: pod.id,
                    })
                    .await;
            }
        });
    });
    let _ = cleanup.join();
}

/// Stops a daemon: SIGTERM, then SIGKILL if it has not exited within `grace`; reaps it.
pub fn terminate(child: &mut std::process::Child, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let deadline = Instant::now() + grace;
    loop {
        match child.try_wait() {
            Ok(Some(_)) | Err(_) => break,
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

impl Drop for Criusd {
    fn drop(&mut self) {
        if self.child.is_some() {
            remove_all_pods(&self.paths.socket);
        }
        if let Some(mut child) = self.child.take() {
            terminate(&mut child, Duration::from_secs(10));
        }
        if std::thread::panicking() {
            eprintln!(
                "--- criusd log ({}) ---\n{}",
                self.paths.log.display(),
                self.log()
            );
        }
    }
}
