//! A streaming server backed by host processes, for trying real clients by hand:
//! `cargo run -p crius-stream --example demo_server -- exec 'echo hi; exit 3'` prints an exec
//! URL (and `portforward` a port-forward URL), then serves for a minute.

#[path = "../tests/support/backend.rs"]
mod backend;

use std::sync::Arc;
use std::time::Duration;

use crius_stream::{ExecRequest, PortForwardRequest, StreamConfig, StreamServer};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let server =
        StreamServer::start(StreamConfig::default(), Arc::new(backend::ProcessBackend)).await?;
    let url = match args.first().map(String::as_str) {
        Some("exec") => server.exec_url(ExecRequest {
            container_id: "demo".into(),
            cmd: vec![
                "sh".into(),
                "-c".into(),
                args.get(1).cloned().unwrap_or_default(),
            ],
            tty: args.iter().any(|a| a == "--tty"),
            stdin: true,
            stdout: true,
            stderr: !args.iter().any(|a| a == "--tty"),
        })?,
        Some("portforward") => server.port_forward_url(PortForwardRequest {
            pod_id: "demo".into(),
            ports: vec![],
        })?,
        _ => return Err("usage: demo_server exec SCRIPT [--tty] | portforward".into()),
    };
    println!("{url}");
    if args.iter().any(|a| a == "--echo") {
        println!("{}", backend::echo_listener().await);
    }
    tokio::time::sleep(Duration::from_secs(60)).await;
    Ok(())
}
