//! Starts a real `criusd` on a fresh temporary root, state directory and socket, and connects CRI
//! clients to it over the unix socket. Dropping a [`Criusd`] stops the daemon (also when the test
//! panics) and removes everything it made.

use std::fs::File;
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
    /// Config file contents (TOML); none when empty.
    pub config: String,
    /// Extra command-line arguments.
    pub args: Vec<String>,
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
    let binary = criusd_binary();
    if !binary.exists() {
        bail!(
            "{} does not exist: build it first (cargo build --bins) or set CRIUSD_BIN",
            binary.display()
        );
    }
    let log_file = File::create(log)?;
    Command::new(&binary)
        .args(args)
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
}

impl Criusd {
    /// Starts a daemon with defaults on a fresh temporary directory.
    pub async fn start() -> anyhow::Result<Criusd> {
        Criusd::start_with(Options::default()).await
    }

    /// Starts a daemon with `options` on a fresh temporary directory.
    pub async fn start_with(options: Options) -> anyhow::Result<Criusd> {
        let dir = tempfile::Builder::new().prefix("crius-test-").tempdir()?;
        let paths = Paths::under(dir.path());
        let mut args = Self::base_args(&paths);
        if !options.config.is_empty() {
            std::fs::write(&paths.config, &options.config)?;
            args.push("--config".into());
            args.push(paths.config.display().to_string());
        }
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
        if self.child.is_some() {
            self.stop()?;
        }
        let mut args = Self::base_args(&self.paths);
        if self.paths.config.exists() {
            args.push("--config".into());
            args.push(self.paths.config.display().to_string());
        }
        let log = self.paths.log.with_extension("log.restart");
        let child = spawn(&args, &log)?;
        self.paths.log = log;
        self.child = Some(child);
        self.wait_ready().await
    }
}

impl Drop for Criusd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(pid) = i32::try_from(child.id()) {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
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
        if std::thread::panicking() {
            eprintln!(
                "--- criusd log ({}) ---\n{}",
                self.paths.log.display(),
                self.log()
            );
        }
    }
}
