//! A container that floods its output: the pod monitor copies it into the CRI log, and must
//! still answer its pod (stop, log reopening) while the flood goes on.

use std::time::{Duration, Instant};

use cri_api::v1::*;
use crius_tests::env::setup;

/// `yes` writes two-byte lines as fast as a pipe takes them, the costliest output for a log
/// copier (one CRI record per line). While it runs, ReopenContainerLog and StopContainer (2 s
/// grace) must be answered within seconds, and the container must end up exited; the log
/// holds the flood's records.
#[tokio::test]
async fn a_container_flooding_its_output_can_still_be_stopped() {
    let mut env = setup(false).await;
    let pod = env.pod("flood", false).await;
    let config = env.container_config("yes", "exec yes");
    let id = env.run(&pod, config).await;
    // The flood is on once the log has grown.
    let log = env.logs.path().join("yes.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::fs::metadata(&log).map_or(0, |m| m.len()) < 1 << 20 {
        assert!(Instant::now() < deadline, "no output from yes");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;

    let started = Instant::now();
    let reopened = tokio::time::timeout(
        Duration::from_secs(20),
        env.daemon
            .runtime
            .reopen_container_log(ReopenContainerLogRequest {
                container_id: id.clone(),
            }),
    )
    .await;
    let reopen_took = started.elapsed();
    assert!(
        matches!(reopened, Ok(Ok(_))),
        "ReopenContainerLog under the flood: {reopened:?} after {reopen_took:?}"
    );

    let started = Instant::now();
    let stopped = tokio::time::timeout(
        Duration::from_secs(30),
        env.daemon.runtime.stop_container(StopContainerRequest {
            container_id: id.clone(),
            timeout: 2,
        }),
    )
    .await;
    let stop_took = started.elapsed();
    assert!(
        matches!(stopped, Ok(Ok(_))),
        "StopContainer under the flood: {stopped:?} after {stop_took:?}"
    );
    eprintln!("ReopenContainerLog took {reopen_took:?}, StopContainer {stop_took:?}");
    assert!(
        reopen_took < Duration::from_secs(5),
        "ReopenContainerLog waited {reopen_took:?} behind the flood"
    );
    assert!(
        stop_took < Duration::from_secs(8),
        "StopContainer waited {stop_took:?} behind the flood"
    );
    let status = env.wait_exit(&id, Duration::from_secs(10)).await;
    assert_ne!(status.exit_code, 0, "yes was killed: {status:?}");
    // The log is large: its first records are enough.
    let mut head = vec![0u8; 64 * 1024];
    let n = std::io::Read::read(&mut std::fs::File::open(&log).expect("log"), &mut head)
        .expect("read log");
    let text = String::from_utf8_lossy(&head[..n]);
    let records: Vec<&str> = text.lines().take(1000).collect();
    assert!(
        records.len() == 1000 && records.iter().all(|l| l.ends_with(" stdout F y")),
        "the log holds the flood's records: {:?}",
        &records[..records.len().min(3)]
    );
}
