//! What a container can reach of the processes crius runs inside it, and what ExecSync gives
//! back: an exec takes its environment and working directory from the container's config (not
//! from the first process's live memory); the exec helper can be neither traced nor read by
//! the container it enters (a static C attacker inside the pod races a few hundred ExecSyncs);
//! and an ExecSync reply always fits kubelet's 16 MiB gRPC message limit.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::*;
use crius_tests::env::{Env, pod_config, setup};
use crius_tests::harness::{Criusd, Options, connect};
use crius_tests::image::{
    BUSYBOX_GROUP, BUSYBOX_PASSWD, Compression, Entry, Image, Layer, busybox_entries,
};
use crius_tests::registry::Registry;

/// The attacker: runs as the container's root (default capabilities, RuntimeDefault seccomp,
/// no_new_privs) in the pod's PID namespace. It scans `/proc` for processes whose `comm` is
/// `criusd` (the exec helper between its fork and its exec, and the pause process) and tries
/// PTRACE_SEIZE, reading `/proc/N/environ`, opening `/proc/N/exe` for reading and writing and
/// looking for the host's pod directory in `/proc/N/cmdline` on each, as long as the process
/// is still criusd. A success counts only when the process
/// was still criusd afterwards (so the container's own exec'd command never counts). Every
/// traced process is interrupted, checked and detached at once. It stops at `/tmp/stop` or
/// after `LIMIT_SECONDS` and prints one `SUMMARY` line.
const ATTACKER_C: &str = r#"
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define LIMIT_SECONDS 300
#define MAX_PID 65536

enum { F_SEEN = 1, F_ATTACH = 2, F_ENVIRON = 4, F_MARKER = 8, F_EXE_READ = 16,
       F_EXE_WRITE = 32, F_EXE_TXTBSY = 64, F_CMDLINE = 128 };

static unsigned char flags[MAX_PID];
static long seen, attempts, attach, environ_read, marker_read, exe_read, exe_write, exe_txtbsy,
    cmdline_read;
static off_t busybox_size, self_size;
static const char *marker;
static char envbuf[1 << 20];

static void say(const char *what, int pid, const char *detail) {
    dprintf(1, "HIT %s pid=%d %s\n", what, pid, detail ? detail : "");
}

static int is_crius(int pid) {
    char path[64], comm[64];
    snprintf(path, sizeof path, "/proc/%d/comm", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    ssize_t n = read(fd, comm, sizeof comm - 1);
    close(fd);
    if (n <= 0) return 0;
    comm[n] = 0;
    if (comm[n - 1] == '\n') comm[n - 1] = 0;
    return strcmp(comm, "criusd") == 0;
}

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void try_ptrace(int pid) {
    if (flags[pid] & F_ATTACH) return;
    if (ptrace(PTRACE_SEIZE, pid, 0, 0) != 0) return;
    int stopped = 0;
    if (ptrace(PTRACE_INTERRUPT, pid, 0, 0) == 0) {
        double until = now() + 2;
        while (now() < until) {
            int status;
            int r = waitpid(pid, &status, WNOHANG | __WALL);
            if (r == pid) { stopped = WIFSTOPPED(status); break; }
            if (r < 0) break;
            usleep(200);
        }
    }
    int crius = is_crius(pid);
    if (stopped) ptrace(PTRACE_DETACH, pid, 0, 0);
    if (crius) {
        flags[pid] |= F_ATTACH;
        attach++;
        say("attach", pid, stopped ? "stopped" : "not-stopped");
    }
}

static void try_environ(int pid) {
    if (flags[pid] & F_ENVIRON) return;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/environ", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    size_t len = 0;
    ssize_t n;
    while (len < sizeof envbuf - 1 && (n = read(fd, envbuf + len, sizeof envbuf - 1 - len)) > 0)
        len += (size_t)n;
    close(fd);
    int has_marker = len > 0 && memmem(envbuf, len, marker, strlen(marker)) != NULL;
    if (len > 0 && (has_marker || is_crius(pid))) {
        flags[pid] |= F_ENVIRON;
        environ_read++;
        if (has_marker) { flags[pid] |= F_MARKER; marker_read++; }
        say("environ", pid, has_marker ? "criusd-environment" : "");
    }
}

static void try_exe(int pid) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/exe", pid);
    if (!(flags[pid] & F_EXE_READ)) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            struct stat st;
            int foreign = fstat(fd, &st) == 0 && st.st_size != busybox_size
                && st.st_size != self_size;
            close(fd);
            if (foreign && is_crius(pid)) {
                flags[pid] |= F_EXE_READ;
                exe_read++;
                say("exe-read", pid, "");
            }
        }
    }
    if (!(flags[pid] & (F_EXE_WRITE | F_EXE_TXTBSY))) {
        /* Never written to: the open alone shows whether the binary could be. */
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        int err = errno;
        if (fd >= 0) close(fd);
        if ((fd >= 0 || err == ETXTBSY) && is_crius(pid)) {
            if (fd >= 0) { flags[pid] |= F_EXE_WRITE; exe_write++; say("exe-write", pid, ""); }
            else { flags[pid] |= F_EXE_TXTBSY; exe_txtbsy++; say("exe-write-txtbsy", pid, ""); }
        }
    }
}

static void try_cmdline(int pid) {
    if (flags[pid] & F_CMDLINE) return;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/cmdline", pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return;
    ssize_t n = read(fd, envbuf, 4096);
    close(fd);
    if (n > 0 && memmem(envbuf, (size_t)n, "--pod-dir", 9) != NULL) {
        flags[pid] |= F_CMDLINE;
        cmdline_read++;
        say("cmdline", pid, "");
    }
}

static off_t size_of(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

int main(int argc, char **argv) {
    if (argc < 2) { dprintf(2, "usage: attacker MARKER\n"); return 2; }
    marker = argv[1];
    busybox_size = size_of("/bin/busybox");
    self_size = size_of("/proc/self/exe");
    int self = getpid();
    DIR *proc = opendir("/proc");
    if (!proc) { dprintf(1, "ERROR opendir /proc: %s\n", strerror(errno)); return 1; }
    dprintf(1, "READY pid=%d\n", self);
    double deadline = now() + LIMIT_SECONDS;
    long loops = 0;
    while (now() < deadline) {
        if ((++loops & 63) == 0 && access("/tmp/stop", F_OK) == 0) break;
        rewinddir(proc);
        struct dirent *e;
        while ((e = readdir(proc)) != NULL) {
            char *end;
            long pid = strtol(e->d_name, &end, 10);
            if (*end || pid <= 0 || pid == self || pid >= MAX_PID) continue;
            if (!is_crius(pid)) continue;
            if (!(flags[pid] & F_SEEN)) {
                flags[pid] |= F_SEEN;
                if (pid != 1) seen++;
            }
            attempts++;
            try_ptrace(pid);
            try_environ(pid);
            try_exe(pid);
            try_cmdline(pid);
        }
    }
    dprintf(1, "SUMMARY seen=%ld attempts=%ld attach=%ld environ=%ld marker=%ld exe_read=%ld "
               "exe_write=%ld exe_txtbsy=%ld cmdline=%ld\n",
            seen, attempts, attach, environ_read, marker_read, exe_read, exe_write, exe_txtbsy,
            cmdline_read);
    return 0;
}
"#;

/// How many ExecSyncs the attacker races.
const EXECS: usize = 200;

/// A variable only criusd's environment holds.
const MARKER: &str = "CRIUS_EXPOSURE_MARKER";

/// Compiles [`ATTACKER_C`] with `gcc -static -O2` into `dir`; its bytes.
fn build_attacker(dir: &Path) -> Vec<u8> {
    let source = dir.join("attacker.c");
    let binary = dir.join("attacker");
    std::fs::write(&source, ATTACKER_C).expect("write attacker.c");
    let out = std::process::Command::new("gcc")
        .args(["-static", "-O2", "-Wall", "-o"])
        .arg(&binary)
        .arg(&source)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run gcc ({e}): this test needs gcc and libc6-dev (apt-get install gcc libc6-dev)")
        });
    assert!(
        out.status.success(),
        "gcc -static failed (needs gcc and libc6-dev): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&binary).expect("read the attacker")
}

/// busybox plus `/attacker`.
fn attacker_image(attacker: Vec<u8>) -> Image {
    let mut entries = busybox_entries(BUSYBOX_PASSWD, BUSYBOX_GROUP).expect("busybox entries");
    entries.push(Entry::file("attacker", attacker, 0o755));
    let layer = Layer::new(&entries, Compression::Gzip).expect("layer");
    Image::new(vec![layer]).with_cmd(&["sh"])
}

/// The stdout lines of the CRI log at `path`.
fn log_stdout(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let parts: Vec<&str> = l.splitn(4, ' ').collect();
            (parts.len() == 4 && parts[1] == "stdout").then(|| parts[3].to_owned())
        })
        .collect()
}

/// Waits until a line of the CRI log at `path` starts with `prefix`.
async fn wait_for_line(path: &Path, prefix: &str, timeout: Duration) -> String {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(line) = log_stdout(path).into_iter().find(|l| l.starts_with(prefix)) {
            return line;
        }
        assert!(
            Instant::now() < deadline,
            "no {prefix:?} line in {}: {:?}",
            path.display(),
            log_stdout(path)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `key=value` pairs of a `SUMMARY` line.
fn counts(summary: &str) -> std::collections::BTreeMap<String, i64> {
    summary
        .split_whitespace()
        .skip(1)
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.parse().expect("count")))
        .collect()
}

/// A container process (root, default capabilities, RuntimeDefault seccomp, no_new_privs) in
/// a pod without a user namespace, sharing the pod's PID namespace, races `EXECS` ExecSyncs:
/// it must never trace the exec helper, read its environment (criusd's), open the criusd
/// binary through `/proc/N/exe` or read the helper's arguments (the host's pod directory),
/// and must have seen the helpers (else the race proves nothing).
#[tokio::test]
async fn the_container_can_neither_trace_nor_read_the_exec_helper() {
    let build = tempfile::Builder::new()
        .prefix("crius-attacker-")
        .tempdir()
        .expect("tempdir");
    let image = attacker_image(build_attacker(build.path()));
    let registry = Registry::start().expect("registry");
    let pushed = image
        .push(&registry.host(), "crius/attacker:1")
        .await
        .expect("push");
    let mut daemon = Criusd::start_with(Options {
        config: format!("insecure_registries = [\"{}\"]\n", registry.host()),
        ..Options::default()
    })
    .await
    .expect("criusd");
    // criusd's environment carries a marker the attacker looks for in what it reads.
    let marker_value = format!("{MARKER}=secret-{}", std::process::id());
    daemon
        .restart_with_env(&[(MARKER, marker_value.split_once('=').expect("marker").1)])
        .await
        .expect("restart with the marker");
    daemon.pull(&pushed.reference).await.expect("pull");
    let logs = tempfile::Builder::new()
        .prefix("crius-logs-")
        .tempdir()
        .expect("tempdir");
    let pod_config = pod_config("exposure", false, logs.path());
    let pod = daemon
        .runtime
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(pod_config.clone()),
            runtime_handler: String::new(),
        })
        .await
        .expect("run pod")
        .into_inner()
        .pod_sandbox_id;
    let config = ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "attacker".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: pushed.reference.clone(),
            ..ImageSpec::default()
        }),
        command: vec!["/attacker".into(), marker_value.clone()],
        log_path: "attacker.log".into(),
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                seccomp: Some(SecurityProfile {
                    profile_type: security_profile::ProfileType::RuntimeDefault.into(),
                    localhost_ref: String::new(),
                }),
                no_new_privs: true,
                ..LinuxContainerSecurityContext::default()
            }),
            ..LinuxContainerConfig::default()
        }),
        ..ContainerConfig::default()
    };
    let id = daemon
        .runtime
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod,
            config: Some(config),
            sandbox_config: Some(pod_config),
        })
        .await
        .expect("create")
        .into_inner()
        .container_id;
    daemon
        .runtime
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .await
        .expect("start");
    let log = logs.path().join("attacker.log");
    wait_for_line(&log, "READY", Duration::from_secs(30)).await;

    let exec = |cmd: &[&str]| ExecSyncRequest {
        container_id: id.clone(),
        cmd: cmd.iter().map(|c| (*c).to_owned()).collect(),
        timeout: 20,
    };
    let started = Instant::now();
    let mut done = 0;
    while done < EXECS && started.elapsed() < Duration::from_secs(180) {
        let out = daemon
            .runtime
            .exec_sync(exec(&["true"]))
            .await
            .expect("exec true")
            .into_inner();
        assert_eq!(
            out.exit_code,
            0,
            "exec {done}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        done += 1;
    }
    let elapsed = started.elapsed();
    let out = daemon
        .runtime
        .exec_sync(exec(&["touch", "/tmp/stop"]))
        .await
        .expect("exec touch")
        .into_inner();
    assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
    let summary = wait_for_line(&log, "SUMMARY", Duration::from_secs(30)).await;
    let hits: Vec<String> = log_stdout(&log)
        .into_iter()
        .filter(|l| l.starts_with("HIT"))
        .take(20)
        .collect();
    eprintln!("{done} execs in {elapsed:?}; attacker: {summary}; first hits: {hits:#?}");
    let c = counts(&summary);
    assert_eq!(done, EXECS, "only {done} execs in {elapsed:?}");
    for key in [
        "attach",
        "environ",
        "marker",
        "exe_read",
        "exe_write",
        "exe_txtbsy",
        "cmdline",
    ] {
        assert_eq!(c[key], 0, "{key}: {summary}\n{hits:#?}");
    }
    // The attacker must have seen the helpers before their exec, or the race shows nothing.
    assert!(
        c["seen"] >= i64::try_from(EXECS / 4).expect("count"),
        "the attacker saw too few exec helpers: {summary}"
    );
}

/// The environment and working directory of an exec come from the container's config: a
/// first process that exports a variable and changes directory before exec'ing (so its
/// `/proc/PID/environ` and cwd show both) changes neither.
#[tokio::test]
async fn an_exec_takes_environment_and_directory_from_the_config() {
    let mut env = setup(false).await;
    for userns in [false, true] {
        let name = if userns { "planted-userns" } else { "planted" };
        let pod = env.pod(name, userns).await;
        let mut config = env.container_config(
            name,
            "cd /etc && export PLANTED=1 LD_PRELOAD=/tmp/evil.so && echo go && exec sleep 3600",
        );
        config.envs = vec![KeyValue {
            key: "FROM_CONFIG".into(),
            value: "yes".into(),
        }];
        config.working_dir = "/tmp".into();
        let id = env.run(&pod, config).await;
        wait_stdout(&env, name, "go").await;
        // The first process did change its own environment and directory.
        let pid = first_pid(&mut env, &id).await;
        let environ = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
        assert!(
            String::from_utf8_lossy(&environ).contains("PLANTED=1"),
            "{}",
            String::from_utf8_lossy(&environ)
        );
        assert_eq!(
            std::fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd"),
            PathBuf::from("/etc")
        );

        let out = env.exec(&id, &["env"], 10).await.expect("exec env");
        let vars = String::from_utf8_lossy(&out.stdout).into_owned();
        assert_eq!(out.exit_code, 0, "{}", String::from_utf8_lossy(&out.stderr));
        assert!(!vars.contains("PLANTED"), "{name}: {vars}");
        assert!(!vars.contains("LD_PRELOAD"), "{name}: {vars}");
        for expected in [
            "FROM_CONFIG=yes",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/root",
        ] {
            assert!(
                vars.lines().any(|l| l == expected),
                "{name}: {expected} missing from {vars}"
            );
        }
        let out = env.exec(&id, &["pwd"], 10).await.expect("exec pwd");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "/tmp",
            "{name}"
        );
    }
}

/// Waits until the container named `name` has logged `line` on stdout.
async fn wait_stdout(env: &Env, name: &str, line: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !env.stdout(name).iter().any(|l| l == line) {
        assert!(
            Instant::now() < deadline,
            "{name}: {:?}",
            env.log_lines(name)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The host pid of a container's first process.
async fn first_pid(env: &mut Env, id: &str) -> i64 {
    env.verbose_info(id).await["pid"].as_i64().expect("pid")
}

/// kubelet's gRPC message limit (its CRI client's maximum message size).
const KUBELET_MAX_MESSAGE: usize = 16 * 1024 * 1024;

/// A command that writes 20 MiB to each of stdout and stderr still gets an ExecSync reply a
/// client with kubelet's 16 MiB limit can decode, with a fair share of each stream.
#[tokio::test]
async fn exec_sync_output_fits_kubelets_message_limit() {
    let mut env = setup(false).await;
    let pod = env.pod("big-output", false).await;
    let id = env
        .run(&pod, env.container_config("big-output", "exec sleep 3600"))
        .await;
    let channel = connect(&env.daemon.paths.socket).await.expect("connect");
    let mut kubelet =
        RuntimeServiceClient::new(channel).max_decoding_message_size(KUBELET_MAX_MESSAGE);
    let twenty = (20 * 1024 * 1024).to_string();
    let out = kubelet
        .exec_sync(ExecSyncRequest {
            container_id: id,
            cmd: vec![
                "sh".into(),
                "-c".into(),
                format!("head -c {twenty} /dev/zero; head -c {twenty} /dev/zero >&2"),
            ],
            timeout: 60,
        })
        .await
        .expect("an ExecSync reply within kubelet's message limit")
        .into_inner();
    assert_eq!(out.exit_code, 0);
    let (o, e) = (out.stdout.len(), out.stderr.len());
    eprintln!("stdout {o} bytes, stderr {e} bytes");
    assert!(o + e < KUBELET_MAX_MESSAGE, "{o} + {e}");
    assert!(o + e > KUBELET_MAX_MESSAGE - 1024 * 1024, "{o} + {e}");
    assert_eq!(o, e, "each stream gets half");
    assert!(out.stdout.iter().chain(&out.stderr).all(|b| *b == 0));
}

/// An exec'd command, and whatever it leaves running, is as killable as the container's own
/// processes, not as protected as criusd: in a container whose first process has
/// `oom_score_adj` 800 (kubelet's value for a pod of low priority; raising it from criusd's
/// is always allowed), `cat /proc/self/oom_score_adj` through ExecSync prints 800, with and
/// without a pod user namespace.
#[tokio::test]
async fn an_exec_gets_the_containers_oom_score_adj() {
    let mut env = setup(false).await;
    let own = std::fs::read_to_string("/proc/self/oom_score_adj").expect("own oom_score_adj");
    assert_ne!(own.trim(), "800", "the test runs at the value it looks for");
    for userns in [false, true] {
        let name = if userns { "oom-userns" } else { "oom-plain" };
        let pod = env.pod(name, userns).await;
        let mut config = env.container_config(name, "cat /proc/self/oom_score_adj; sleep 300");
        config
            .linux
            .get_or_insert_default()
            .resources
            .get_or_insert_default()
            .oom_score_adj = 800;
        let id = env.run(&pod, config).await;
        assert_eq!(
            env.wait_stdout(name, 1).await,
            ["800"],
            "{name}: first process"
        );
        let out = env
            .exec(&id, &["cat", "/proc/self/oom_score_adj"], 10)
            .await
            .expect("exec");
        assert_eq!(
            out.exit_code,
            0,
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "800\n",
            "{name}: the exec'd command's oom_score_adj"
        );
        assert!(
            out.stderr.is_empty(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
