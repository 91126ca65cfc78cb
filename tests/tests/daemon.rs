//! The daemon itself: CRI basics over the real socket, socket mode, locking, signals, config.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::time::{Duration, Instant};

use cri_api::v1::{CheckpointContainerRequest, StatusRequest, VersionRequest};
use crius_tests::harness::{Criusd, Options, Paths, connect, spawn};
use nix::sys::signal::Signal;

/// Runs criusd with `args` expecting it to fail; returns its stderr.
fn expect_start_failure(args: &[String], log: &std::path::Path) -> String {
    let mut child = spawn(args, log).expect("spawn criusd");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("criusd kept running although it should have refused to start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = std::fs::read_to_string(log).unwrap_or_default();
    assert!(!status.success(), "criusd exited 0: {output}");
    output
}

#[tokio::test]
async fn version_names_crius_and_v1() {
    let mut daemon = Criusd::start().await.unwrap();
    let version = daemon
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.runtime_name, "crius");
    assert_eq!(version.runtime_api_version, "v1");
    assert_eq!(version.runtime_version, env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn status_reports_conditions_handlers_and_config() {
    let mut daemon = Criusd::start_with(Options {
        config: "cni_conf_dir = \"/nonexistent/crius-cni\"\n".into(),
        ..Options::default()
    })
    .await
    .unwrap();
    let status = daemon
        .runtime
        .status(StatusRequest { verbose: true })
        .await
        .unwrap()
        .into_inner();
    let conditions = status.status.unwrap().conditions;
    let runtime = conditions
        .iter()
        .find(|c| c.r#type == "RuntimeReady")
        .unwrap();
    assert!(runtime.status);
    let network = conditions
        .iter()
        .find(|c| c.r#type == "NetworkReady")
        .unwrap();
    assert!(!network.status, "no CNI config, yet NetworkReady is true");
    assert!(!network.reason.is_empty());
    assert!(
        network.message.contains("/nonexistent/crius-cni"),
        "{}",
        network.message
    );
    let default_handler = status.runtime_handlers.iter().find(|h| h.name.is_empty());
    assert!(
        default_handler.is_some(),
        "the default handler must be listed"
    );
    let config: serde_json::Value = serde_json::from_str(&status.info["config"]).unwrap();
    assert_eq!(config["root"], daemon.paths.root.display().to_string());
    assert_eq!(config["state"], daemon.paths.state.display().to_string());

    let quiet = daemon
        .runtime
        .status(StatusRequest { verbose: false })
        .await
        .unwrap()
        .into_inner();
    assert!(quiet.info.is_empty(), "info must be empty unless verbose");
}

#[tokio::test]
async fn unimplemented_rpc_is_named_and_daemon_keeps_serving() {
    let mut daemon = Criusd::start().await.unwrap();
    let err = daemon
        .runtime
        .checkpoint_container(CheckpointContainerRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
    assert!(
        err.message().contains("CheckpointContainer"),
        "{}",
        err.message()
    );
    daemon
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn socket_is_root_only() {
    let daemon = Criusd::start().await.unwrap();
    let meta = std::fs::metadata(&daemon.paths.socket).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.mode() & 0o777, 0o600, "socket mode {:o}", meta.mode());
    assert_eq!(meta.uid(), 0);
}

#[tokio::test]
async fn second_instance_on_same_root_or_socket_is_refused() {
    let mut daemon = Criusd::start().await.unwrap();
    let other = tempfile::tempdir().unwrap();
    let other_paths = Paths::under(other.path());

    // Same root, own state and socket.
    let mut args = Criusd::base_args(&other_paths);
    args[1] = daemon.paths.root.display().to_string();
    let out = expect_start_failure(&args, &other.path().join("a.log"));
    assert!(out.contains("already running"), "{out}");
    assert!(out.contains("root"), "{out}");

    // Same socket, own root and state.
    let mut args = Criusd::base_args(&other_paths);
    args[5] = daemon.paths.socket.display().to_string();
    let out = expect_start_failure(&args, &other.path().join("b.log"));
    assert!(out.contains("already running"), "{out}");

    // The first daemon still owns its socket and answers.
    daemon
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();
    assert!(daemon.paths.socket.exists());
}

#[tokio::test]
async fn stale_socket_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    std::fs::create_dir_all(&paths.state).unwrap();
    // A socket file nobody listens on, as a crashed run leaves it. (A process another test
    // forks at this moment holds a copy of the listener until it execs: wait until it is gone.)
    drop(std::os::unix::net::UnixListener::bind(&paths.socket).unwrap());
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::os::unix::net::UnixStream::connect(&paths.socket).is_ok() {
        assert!(
            Instant::now() < deadline,
            "the dropped listener still answers"
        );
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut child = spawn(&Criusd::base_args(&paths), &paths.log).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let served = loop {
        if let Ok(channel) = connect(&paths.socket).await {
            let mut client =
                cri_api::v1::runtime_service_client::RuntimeServiceClient::new(channel);
            if client.version(VersionRequest::default()).await.is_ok() {
                break true;
            }
        }
        if Instant::now() > deadline || child.try_wait().unwrap().is_some() {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        served,
        "{}",
        std::fs::read_to_string(&paths.log).unwrap_or_default()
    );
}

#[tokio::test]
async fn sigterm_and_sigint_stop_cleanly_and_remove_the_socket() {
    for signal in [Signal::SIGTERM, Signal::SIGINT] {
        let mut daemon = Criusd::start().await.unwrap();
        let status = daemon.signal_and_wait(signal).unwrap();
        assert!(
            status.success(),
            "{signal}: exit {status}\n{}",
            daemon.log()
        );
        assert!(
            !daemon.paths.socket.exists(),
            "{signal}: socket left behind"
        );
        // The locks are released: a new daemon starts on the same directories.
        daemon.restart().await.unwrap();
    }
}

#[tokio::test]
async fn invalid_config_names_file_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    std::fs::write(&paths.config, "root = \"/tmp/x\"\n\nno_such_key = true\n").unwrap();
    let mut args = Criusd::base_args(&paths);
    args.extend(["--config".into(), paths.config.display().to_string()]);
    let out = expect_start_failure(&args, &paths.log);
    assert!(out.contains(&paths.config.display().to_string()), "{out}");
    assert!(out.contains("line 3"), "{out}");
    assert!(out.contains("no_such_key"), "{out}");

    std::fs::write(
        &paths.config,
        "insecure_registries = [\"http://127.0.0.1:5000\"]\n",
    )
    .unwrap();
    let out = expect_start_failure(&args, &paths.log);
    assert!(out.contains("insecure_registries"), "{out}");

    let missing = dir.path().join("missing.toml");
    let mut args = Criusd::base_args(&paths);
    args.extend(["--config".into(), missing.display().to_string()]);
    let out = expect_start_failure(&args, &paths.log);
    assert!(out.contains(&missing.display().to_string()), "{out}");
}

#[tokio::test]
async fn flags_override_config_keys() {
    let dir = tempfile::tempdir().unwrap();
    let from_config = dir.path().join("from-config.sock");
    let mut daemon = Criusd::start_with(Options {
        config: format!(
            "listen = \"{}\"\nlog_level = \"warn\"\n",
            from_config.display()
        ),
        ..Options::default()
    })
    .await
    .unwrap();
    // The harness passes --listen and --log-level debug: both must win over the file.
    assert!(daemon.paths.socket.exists());
    assert!(!from_config.exists());
    daemon
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();
    assert!(
        daemon.log().contains("Version"),
        "debug call log missing:\n{}",
        daemon.log()
    );
}

#[tokio::test]
async fn json_logs_carry_method_and_duration() {
    let mut daemon = Criusd::start_with(Options {
        args: vec!["--log-format".into(), "json".into()],
        ..Options::default()
    })
    .await
    .unwrap();
    daemon
        .runtime
        .version(VersionRequest::default())
        .await
        .unwrap();
    daemon.stop().unwrap();
    let log = daemon.log();
    let call = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["span"]["method"] == "Version" && v["fields"]["micros"].is_u64());
    assert!(call.is_some(), "no JSON call line for Version:\n{log}");
}
