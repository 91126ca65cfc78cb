//! Open-files limits and descriptor tables, read from the host's /proc as an operator would:
//! criusd and its monitors raise their own soft limit (criusd holds several descriptors per
//! pod), while the pods' processes keep the limit criusd was started with. This file is its own test binary: the
//! test lowers its process's soft limit before starting criusd, which inherits it.

use crius_tests::env::setup;

/// The `Max open files` soft and hard limits in a `/proc/PID/limits` text.
fn nofile(limits: &str) -> (u64, u64) {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap_or_else(|| panic!("no open-files line in {limits}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let number = |w: &str| -> u64 {
        if w == "unlimited" {
            u64::MAX
        } else {
            w.parse().unwrap_or_else(|_| panic!("{line}"))
        }
    };
    (number(words[3]), number(words[4]))
}

/// The open-files limits of process `pid`.
fn nofile_of(pid: i64) -> (u64, u64) {
    nofile(&std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("limits"))
}

/// The size of process `pid`'s descriptor table (`FDSize` in its status).
fn fd_table_of(pid: i64) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .expect("status")
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("FDSize")
}

/// Asserts that process `pid` (`who`) has a descriptor table of `slots` at least: grown
/// before its threads started, not one by one as it opened descriptors.
fn assert_table_grown(who: &str, pid: i64, slots: u64) {
    let table = fd_table_of(pid);
    assert!(table >= slots, "{who}'s descriptor table has {table} slots");
}

#[tokio::test]
async fn criusd_raises_its_own_limit_and_pods_keep_the_one_it_was_started_with() {
    // Lower this process's soft limit, as a service's default of 1024 would be; criusd
    // inherits it.
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write one rlimit each.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &raw mut limit), 0);
        limit.rlim_cur = limit.rlim_max.min(u64::from(u16::MAX)) / 2;
        limit.rlim_cur = limit.rlim_cur.min(1024);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &raw const limit), 0);
    }
    let (started_soft, hard) = (limit.rlim_cur, limit.rlim_max);
    assert!(started_soft < hard, "{limit:?}");

    let mut env = setup(false).await;
    let criusd = i64::from(env.daemon.pid().expect("criusd pid"));
    assert_eq!(
        nofile_of(criusd),
        (hard, hard),
        "criusd runs with its soft limit raised to the hard one"
    );
    assert_table_grown("criusd", criusd, hard.min(4096));

    let pod = env.pod("limits", true).await;
    let id = env
        .run(&pod, env.container_config("limits", "sleep 300"))
        .await;
    let container = env.verbose_info(&id).await["pid"]
        .as_i64()
        .expect("container pid");
    assert_eq!(
        nofile_of(container),
        (started_soft, hard),
        "the container's first process has the limit criusd was started with"
    );
    let state = env.monitor_state(&pod.0);
    let monitor = state["monitor_pid"].as_i64().expect("monitor pid");
    assert_eq!(
        nofile_of(monitor),
        (hard, hard),
        "the pod monitor keeps criusd's raised limit for itself"
    );
    assert_table_grown("the pod monitor", monitor, hard.min(1024));
    let sandbox = state["sandbox_pid"].as_i64().expect("sandbox pid");
    assert_eq!(
        nofile_of(sandbox),
        (started_soft, hard),
        "the sandbox process has the limit criusd was started with"
    );

    let exec = env
        .exec(&id, &["cat", "/proc/self/limits"], 10)
        .await
        .expect("exec");
    assert_eq!(exec.exit_code, 0, "{exec:?}");
    assert_eq!(
        nofile(&String::from_utf8_lossy(&exec.stdout)),
        (started_soft, hard),
        "an exec'd process has the limit criusd was started with"
    );
}
