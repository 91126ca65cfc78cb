//! `criusd`: the crius daemon. Serves the CRI over a unix socket.

mod import;
mod lock;

use std::io::IsTerminal;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use crius_server::Cri;
use crius_server::calllog::CallLogLayer;
use crius_server::config::{Config, DEFAULT_CONFIG_FILE, LogFormat};

/// Command-line flags; each overrides the config key of the same name.
#[derive(Debug, Parser)]
#[command(name = "criusd", version, about = "crius: a Kubernetes CRI runtime")]
struct Cli {
    /// Configuration file (TOML). Without this flag /etc/crius/config.toml is read if present.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Directory for persistent data (images, metadata).
    #[arg(long, value_name = "DIR")]
    root: Option<PathBuf>,
    /// Directory for runtime state (pod state, sockets).
    #[arg(long, value_name = "DIR")]
    state: Option<PathBuf>,
    /// Path of the CRI unix socket.
    #[arg(long, value_name = "PATH")]
    listen: Option<PathBuf>,
    /// Log level or tracing filter (error, warn, info, debug, trace).
    #[arg(long, value_name = "LEVEL")]
    log_level: Option<String>,
    /// Log format.
    #[arg(long, value_name = "FORMAT", value_parser = ["text", "json"])]
    log_format: Option<String>,
    /// Serve Prometheus metrics over HTTP at /metrics on this ip:port ("" turns them off).
    #[arg(long, value_name = "ADDR")]
    metrics_address: Option<String>,
    /// The ip:port of the streaming server behind Exec, Attach and PortForward URLs (port 0:
    /// any free port).
    #[arg(long, value_name = "ADDR")]
    stream_address: Option<String>,
}

impl Cli {
    /// Loads the config file and lays the flags over it.
    fn config(&self) -> anyhow::Result<Config> {
        let mut config = match &self.config {
            Some(path) => Config::load(path, true)?,
            None => Config::load(Path::new(DEFAULT_CONFIG_FILE), false)?,
        };
        if let Some(root) = &self.root {
            config.root = absolute(root)?;
        }
        if let Some(state) = &self.state {
            config.state = absolute(state)?;
        }
        if let Some(listen) = &self.listen {
            config.listen = absolute(listen)?;
        }
        if let Some(level) = &self.log_level {
            config.log_level = level.clone();
        }
        if let Some(format) = &self.log_format {
            config.log_format = if format == "json" {
                LogFormat::Json
            } else {
                LogFormat::Text
            };
        }
        if let Some(address) = &self.metrics_address {
            config.metrics_address = address.clone();
        }
        if let Some(address) = &self.stream_address {
            config.stream_address = address.clone();
        }
        config.validate(None)?;
        Ok(config)
    }
}

/// How long in-flight calls may take to finish after SIGTERM or SIGINT.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    std::path::absolute(path).with_context(|| format!("cannot resolve {}", path.display()))
}

fn init_logging(config: &Config) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log_level)
        .with_context(|| format!("invalid log level {:?}", config.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
    Ok(())
}

/// Creates a directory (and its parents) readable only by root.
fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .with_context(|| format!("cannot set the mode of {}", dir.display()))
}

/// Binds the CRI socket with mode 0600, replacing a stale one left by a crashed run.
fn bind_socket(path: &Path) -> anyhow::Result<std::os::unix::net::UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(socket = %path.display(), "removed a stale socket"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
    // No thread runs yet: the umask change cannot race another file creation.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let bound = std::os::unix::net::UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let listener = bound.with_context(|| format!("cannot listen on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set the mode of {}", path.display()))?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Resolves on SIGTERM or SIGINT.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop criusd with SIGKILL");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down");
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let config = cli.config()?;
    init_logging(&config)?;
    make_private_dir(&config.root)?;
    make_private_dir(&config.state)?;
    if let Some(parent) = config.listen.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    let _root_lock = lock::Lock::acquire(&config.root.join("criusd.lock"), "root")?;
    let _state_lock = lock::Lock::acquire(&config.state.join("criusd.lock"), "state")?;
    let socket_lock_path = PathBuf::from(format!("{}.lock", config.listen.display()));
    let _socket_lock = lock::Lock::acquire(&socket_lock_path, "socket")?;
    let listener = bind_socket(&config.listen)?;
    let listen = config.listen.clone();
    // Still single-threaded: the probe clones a short-lived user namespace holder. The
    // container root holds the pod files user-namespaced pods bind idmapped: it is probed too,
    // since it may be a file system of its own.
    let container_root = config.container_root();
    std::fs::create_dir_all(&container_root)
        .with_context(|| format!("cannot create {}", container_root.display()))?;
    let idmap = crius_monitor::probe_idmap(&[&config.root, &config.state, &container_root]);
    match &idmap {
        crius_proto::IdmapSupport::Supported => tracing::info!("idmapped mounts work"),
        other => tracing::warn!(?other, "pods with a user namespace will be refused"),
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .thread_keep_alive(BLOCKING_THREAD_IDLE)
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async {
        let listener = tokio::net::UnixListener::from_std(listener)?;
        let cri = Cri::open(config, idmap)?;
        cri.serve_metrics().await?;
        cri.prepare_images().await;
        cri.recover().await;
        tokio::spawn(return_freed_memory());
        tracing::info!(
            socket = %listen.display(),
            root = %cri.config().root.display(),
            state = %cri.config().state.display(),
            version = crius_server::RUNTIME_VERSION,
            "criusd serving the CRI"
        );
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tonic::transport::Server::builder()
            .layer(CallLogLayer)
            .add_service(cri.runtime_service())
            .add_service(cri.image_service())
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::UnixListenerStream::new(listener),
                async {
                    let _ = stop_rx.await;
                },
            );
        tokio::pin!(server);
        tokio::select! {
            result = &mut server => return result.context("the gRPC server failed"),
            () = shutdown_signal() => {}
        }
        // Clients such as kubelet hold their connection open: finish in-flight calls, then go.
        let _ = stop_tx.send(());
        match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
            Ok(result) => result.context("the gRPC server failed"),
            Err(_) => {
                tracing::info!("closing client connections still open");
                Ok(())
            }
        }
    });
    if let Err(e) = std::fs::remove_file(&listen) {
        tracing::warn!(socket = %listen.display(), error = %e, "cannot remove the socket");
    }
    result
}

/// Most threads for blocking work (file system, metadata transactions, unpacks) at once: a
/// flood of calls queues behind them instead of starting a thread each (250 concurrent
/// RemovePodSandbox calls held ~170 threads and ~8 MiB of their stacks). Work that waits on
/// other blocking work (a layer unpack waits on its download's writes) is capped well below
/// this by its own owner (crius-image unpacks eight layers at once).
const BLOCKING_THREADS: usize = 64;

/// How long an idle blocking thread waits for more work before it exits (tokio's default is
/// ten seconds), so that the stacks of a burst are gone soon after it.
const BLOCKING_THREAD_IDLE: std::time::Duration = std::time::Duration::from_secs(2);

/// How often memory freed by finished work goes back to the system.
const TRIM_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Hands memory that pods, pulls and calls freed back to the system every [`TRIM_EVERY`]:
/// glibc keeps the free pages of its per-thread arenas otherwise, and the daemon's RSS would
/// stay at its high-water mark after a burst of pods is gone.
async fn return_freed_memory() {
    let mut tick = tokio::time::interval(TRIM_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        // SAFETY: malloc_trim only returns free heap pages to the kernel; it takes no
        // pointers and every arena it walks is locked by glibc itself.
        unsafe {
            libc::malloc_trim(0);
        }
    }
}

/// The descriptor table criusd starts with: about 700 pods' worth (criusd held ~5.7
/// descriptors a pod at 250 pods).
const DESCRIPTOR_SLOTS: u32 = 4096;

/// Raises criusd's soft open-files limit to its hard one and hands the limit it was started
/// with to the monitors it starts ([`crius_proto::limits::NOFILE_ENV`]), so pods keep it; then
/// grows the descriptor table to [`DESCRIPTOR_SLOTS`].
fn raise_nofile() {
    match crius_proto::limits::raise_nofile() {
        // SAFETY: no thread has started yet, so nothing reads the environment meanwhile.
        Ok(started) => unsafe { std::env::set_var(crius_proto::limits::NOFILE_ENV, started) },
        Err(e) => {
            eprintln!("criusd: cannot raise the open-files limit: {e}");
            // Pods then inherit criusd's limit; not one some earlier process named.
            // SAFETY: as above.
            unsafe { std::env::remove_var(crius_proto::limits::NOFILE_ENV) };
        }
    }
    crius_proto::limits::reserve_descriptors(DESCRIPTOR_SLOTS);
}

/// Malloc arenas the daemon's threads share.
const MALLOC_ARENAS: libc::c_int = 2;

/// Caps glibc's malloc arenas at [`MALLOC_ARENAS`] (its default is eight per core): each
/// arena keeps its own fragments between trims, so a burst of calls on many blocking threads
/// left the heap megabytes above its idle size after the pods were gone.
fn limit_malloc_arenas() {
    // SAFETY: mallopt only changes an allocator parameter; no thread has started yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS);
    }
}

/// Marks every descriptor above stderr that criusd inherited from whoever started it
/// close-on-exec, so that neither pod monitors nor container and exec processes receive them.
fn cloexec_inherited_fds() {
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptor numbers.
    unsafe {
        libc::syscall(
            libc::SYS_close_range,
            3 as libc::c_uint,
            libc::c_uint::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
}

fn main() -> ExitCode {
    cloexec_inherited_fds();
    // The pod monitor mode: branch before anything starts a thread (it clones and forks).
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "monitor") {
        return crius_monitor::main(&args[2..]);
    }
    if args.get(1).is_some_and(|a| a == "import") {
        return import::main(&args[2..]);
    }
    limit_malloc_arenas();
    raise_nofile();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("criusd: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
