//! crius-net against scripted plugins that record their environment and stdin: the CNI
//! protocol as crius drives it, without touching the host's network.

mod common;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{pod, script};
use crius_net::{Cni, Error, NetworkStatus, PortMapping, Protocol};
use serde_json::{Value, json};
use tempfile::TempDir;

const RESULT_A: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"10.1.0.5/24","interface":0}]}"#;
const RESULT_B: &str = r#"{"cniVersion":"1.0.0","interfaces":[{"name":"eth0","sandbox":"/x"}],"ips":[{"address":"fd00::9/64","interface":0},{"address":"10.1.0.9/24","interface":0}]}"#;

/// A scratch world: conf dir, two bin dirs, cache dir and the invocation log.
struct World {
    tmp: TempDir,
}

impl World {
    fn new() -> Self {
        let w = Self {
            tmp: tempfile::tempdir().expect("tempdir"),
        };
        for d in ["conf", "bin1", "bin2", "cache"] {
            std::fs::create_dir(w.dir(d)).expect("mkdir");
        }
        w.recorder("bin1", "fake-a", "fake-a", RESULT_A);
        w.recorder("bin2", "fake-a", "fake-a-shadowed", RESULT_A);
        w.recorder("bin2", "fake-b", "fake-b", RESULT_B);
        w.recorder(
            "bin2",
            "loopback",
            "loopback",
            r#"{"cniVersion":"1.0.0","interfaces":[{"name":"lo","sandbox":"/x"}],"ips":[]}"#,
        );
        w
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn log(&self) -> PathBuf {
        self.tmp.path().join("log")
    }

    /// A plugin that logs one JSON line per call and prints `result` on ADD.
    fn recorder(&self, bin: &str, file: &str, label: &str, result: &str) {
        let body = format!(
            r#"stdin=$(cat)
printf '{{"plugin":"{label}","command":"%s","id":"%s","netns":"%s","ifname":"%s","args":"%s","path":"%s","stdin":%s}}\n' \
  "$CNI_COMMAND" "$CNI_CONTAINERID" "$CNI_NETNS" "$CNI_IFNAME" "$CNI_ARGS" "$CNI_PATH" "$stdin" >> {log}
if [ "$CNI_COMMAND" = ADD ]; then printf '%s' '{result}'; fi"#,
            log = self.log().display()
        );
        script(&self.dir(bin).join(file), &body);
    }

    fn conflist(&self, file: &str, doc: &Value) {
        std::fs::write(self.dir("conf").join(file), doc.to_string()).expect("write conflist");
    }

    fn cni(&self) -> Cni {
        Cni::new(
            self.dir("conf"),
            [self.dir("bin1"), self.dir("bin2")],
            self.dir("cache"),
        )
    }

    /// The invocations so far, and forget them.
    fn calls(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(self.log()).unwrap_or_default();
        let _ = std::fs::remove_file(self.log());
        text.lines()
            .map(|l| serde_json::from_str(l).expect("log line is JSON"))
            .collect()
    }
}

fn two_plugins(version: &str) -> Value {
    json!({
        "cniVersion": version,
        "name": "testnet",
        "plugins": [
            {"type": "fake-a", "custom": {"keep": [1, 2]}},
            {"type": "fake-b", "capabilities": {"portMappings": true, "bandwidth": true}}
        ]
    })
}

fn summary(calls: &[Value]) -> Vec<String> {
    calls
        .iter()
        .map(|c| {
            format!(
                "{} {} {}",
                c["command"].as_str().expect("command logged"),
                c["plugin"].as_str().expect("plugin logged"),
                c["ifname"].as_str().expect("ifname logged")
            )
        })
        .collect()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| s.parse().expect("an IP")).collect()
}

#[tokio::test]
async fn add_chains_prev_result_and_sets_the_cni_environment() {
    let w = World::new();
    w.conflist("10-test.conflist", &two_plugins("1.0.0"));
    let mut p = pod("sandbox1", Path::new("/run/netns/fake1"));
    p.port_mappings = vec![PortMapping {
        host_port: 8080,
        container_port: 80,
        protocol: Protocol::Tcp,
        host_ip: None,
    }];
    let result = w.cni().add(&p).await.expect("add");
    assert_eq!(result.ips, ips(&["10.1.0.9", "fd00::9"]), "IPv4 first");

    let calls = w.calls();
    assert_eq!(
        summary(&calls),
        ["ADD loopback lo", "ADD fake-a eth0", "ADD fake-b eth0"],
        "lo first, then the list in order, fake-a from the first bin dir"
    );
    let cni_path = format!("{}:{}", w.dir("bin1").display(), w.dir("bin2").display());
    for c in &calls {
        assert_eq!(c["id"], "sandbox1");
        assert_eq!(c["netns"], "/run/netns/fake1");
        assert_eq!(c["path"], cni_path.as_str());
        assert_eq!(
            c["args"],
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=crius-test;K8S_POD_NAME=web-0;\
             K8S_POD_INFRA_CONTAINER_ID=sandbox1;K8S_POD_UID=0b8a7c1e-1111-2222-3333-444455556666"
        );
    }
    let a = &calls[1]["stdin"];
    assert_eq!(a["name"], "testnet");
    assert_eq!(a["cniVersion"], "1.0.0");
    assert_eq!(
        a["custom"],
        json!({"keep": [1, 2]}),
        "plugin fields pass through"
    );
    assert!(
        a.get("prevResult").is_none(),
        "first plugin has no prevResult"
    );
    assert!(
        a.get("runtimeConfig").is_none(),
        "fake-a declares no capabilities"
    );
    let b = &calls[2]["stdin"];
    assert_eq!(
        b["prevResult"],
        serde_json::from_str::<Value>(RESULT_A).unwrap()
    );
    assert_eq!(
        b["runtimeConfig"],
        json!({"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}),
        "only declared capabilities that the pod has"
    );

    let cached = w
        .cni()
        .cached_result("sandbox1")
        .await
        .unwrap()
        .expect("cached");
    assert_eq!(cached, result);
}

#[tokio::test]
async fn check_runs_with_the_cached_result() {
    let w = World::new();
    w.conflist("10-test.conflist", &two_plugins("1.0.0"));
    let p = pod("sandbox2", Path::new("/run/netns/fake2"));
    let cni = w.cni().with_loopback(false);
    assert!(matches!(cni.check(&p).await, Err(Error::NotAdded { .. })));
    cni.add(&p).await.expect("add");
    w.calls();
    cni.check(&p).await.expect("check");
    let calls = w.calls();
    assert_eq!(summary(&calls), ["CHECK fake-a eth0", "CHECK fake-b eth0"]);
    let final_result: Value = serde_json::from_str(RESULT_B).unwrap();
    for c in &calls {
        assert_eq!(c["stdin"]["prevResult"], final_result);
    }
}

#[tokio::test]
async fn check_is_skipped_before_040_and_with_disable_check() {
    for doc in [two_plugins("0.3.1"), {
        let mut d = two_plugins("1.0.0");
        d["disableCheck"] = true.into();
        d
    }] {
        let w = World::new();
        w.conflist("10-test.conflist", &doc);
        let p = pod("sandbox3", Path::new("/run/netns/fake3"));
        let cni = w.cni().with_loopback(false);
        cni.add(&p).await.expect("add");
        w.calls();
        cni.check(&p).await.expect("check");
        assert!(w.calls().is_empty(), "no plugin runs for {doc}");
    }
}

#[tokio::test]
async fn del_uses_the_cached_config_in_reverse_after_a_restart() {
    let w = World::new();
    w.conflist("10-test.conflist", &two_plugins("1.0.0"));
    let mut p = pod("sandbox4", Path::new("/run/netns/fake4"));
    p.port_mappings = vec![PortMapping {
        host_port: 8443,
        container_port: 443,
        protocol: Protocol::Tcp,
        host_ip: None,
    }];
    w.cni().add(&p).await.expect("add");
    w.calls();

    // The operator replaces the network; criusd restarts (a new Cni), and the pod request
    // at DEL time no longer carries the port mappings.
    std::fs::remove_file(w.dir("conf").join("10-test.conflist")).unwrap();
    w.conflist(
        "05-new.conflist",
        &json!({"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "fake-b"}]}),
    );
    let restarted = w.cni();
    // It does not know the netns path either: the cached one is used.
    let del_pod = pod("sandbox4", Path::new(""));
    restarted.del(&del_pod).await.expect("del");
    let calls = w.calls();
    assert_eq!(summary(&calls), ["DEL fake-b eth0", "DEL fake-a eth0"]);
    let final_result: Value = serde_json::from_str(RESULT_B).unwrap();
    for c in &calls {
        assert_eq!(
            c["stdin"]["name"], "testnet",
            "the cached network, not the new one"
        );
        assert_eq!(c["stdin"]["prevResult"], final_result);
        assert_eq!(c["netns"], "/run/netns/fake4");
    }
    assert_eq!(
        calls[0]["stdin"]["runtimeConfig"]["portMappings"][0]["hostPort"],
        8443
    );
    assert!(restarted.cached_result("sandbox4").await.unwrap().is_none());
    assert!(!w.dir("cache").join("sandbox4.json").exists());

    // Again: no cache, so the current config runs, without prevResult.
    restarted.del(&del_pod).await.expect("second del");
    let calls = w.calls();
    assert_eq!(summary(&calls), ["DEL fake-b eth0"]);
    assert_eq!(calls[0]["stdin"]["name"], "other");
    assert_eq!(calls[0]["netns"], "");
    assert!(calls[0]["stdin"].get("prevResult").is_none());
}

#[tokio::test]
async fn del_before_040_gets_no_prev_result() {
    let w = World::new();
    w.conflist("10-test.conflist", &two_plugins("0.3.1"));
    let p = pod("sandbox5", Path::new("/run/netns/fake5"));
    let cni = w.cni().with_loopback(false);
    cni.add(&p).await.expect("add");
    w.calls();
    cni.del(&p).await.expect("del");
    let calls = w.calls();
    assert_eq!(summary(&calls), ["DEL fake-b eth0", "DEL fake-a eth0"]);
    assert!(calls.iter().all(|c| c["stdin"].get("prevResult").is_none()));
}

#[tokio::test]
async fn del_with_no_cache_and_no_config_does_nothing() {
    let w = World::new();
    let p = pod("sandbox6", Path::new(""));
    w.cni().del(&p).await.expect("del");
    assert!(w.calls().is_empty());
}

#[tokio::test]
async fn plugin_errors_carry_code_msg_and_details_and_add_cleans_up() {
    let w = World::new();
    script(
        &w.dir("bin1").join("broken"),
        r#"cat >/dev/null
if [ "$CNI_COMMAND" = ADD ]; then
  printf '{"cniVersion":"1.0.0","code":7,"msg":"invalid network config","details":"bridge name too long"}'
  exit 1
fi"#,
    );
    w.conflist(
        "10-test.conflist",
        &json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "fake-a"}, {"type": "broken"}]}),
    );
    let p = pod("sandbox7", Path::new("/run/netns/fake7"));
    let cni = w.cni().with_loopback(false);
    let err = cni.add(&p).await.expect_err("add must fail");
    match &err {
        Error::Plugin {
            plugin,
            command,
            code,
            msg,
            details,
        } => {
            assert_eq!((plugin.as_str(), *command, *code), ("broken", "ADD", 7));
            assert_eq!(msg, "invalid network config");
            assert_eq!(details, "bridge name too long");
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        "CNI plugin broken ADD failed with code 7: invalid network config (bridge name too long)"
    );
    // The part of the chain that ran was deleted again, and nothing was cached.
    assert_eq!(summary(&w.calls()), ["ADD fake-a eth0", "DEL fake-a eth0"]);
    assert!(cni.cached_result("sandbox7").await.unwrap().is_none());
}

#[tokio::test]
async fn failures_without_error_json_show_the_output() {
    let w = World::new();
    script(
        &w.dir("bin1").join("crashy"),
        "cat >/dev/null; echo 'panic: nil map' >&2; exit 2",
    );
    script(
        &w.dir("bin1").join("garbage"),
        "cat >/dev/null; echo 'not json'",
    );
    let cni = w.cni().with_loopback(false);
    let p = pod("sandbox8", Path::new("/run/netns/fake8"));

    w.conflist(
        "10-test.conflist",
        &json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "crashy"}]}),
    );
    let err = cni.add(&p).await.expect_err("crash");
    assert!(matches!(err, Error::PluginFailed { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("exit status: 2") && text.contains("panic: nil map"),
        "{text}"
    );

    w.conflist(
        "10-test.conflist",
        &json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "garbage"}]}),
    );
    let err = cni.add(&p).await.expect_err("garbage");
    assert!(matches!(err, Error::InvalidResult { .. }), "{err:?}");
}

#[tokio::test]
async fn a_hanging_plugin_times_out() {
    let w = World::new();
    script(&w.dir("bin1").join("hang"), "exec sleep 30");
    w.conflist(
        "10-test.conflist",
        &json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "hang"}]}),
    );
    let cni = w
        .cni()
        .with_loopback(false)
        .with_plugin_timeout(Duration::from_millis(300));
    let start = Instant::now();
    let err = cni
        .add(&pod("sandbox9", Path::new("/x")))
        .await
        .expect_err("timeout");
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn status_says_why_the_network_is_not_ready() {
    let w = World::new();
    let cni = w.cni();
    match cni.status().await {
        NetworkStatus::NotReady { message } => assert_eq!(
            message,
            format!("no CNI network config in {}", w.dir("conf").display())
        ),
        ready => panic!("{ready:?}"),
    }
    w.conflist("10-test.conflist", &json!({"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "fake-a"}, {"type": "absent"}]}));
    match cni.status().await {
        NetworkStatus::NotReady { message } => {
            assert!(message.contains("\"absent\" not found"), "{message}")
        }
        ready => panic!("{ready:?}"),
    }
    let err = cni
        .add(&pod("sandbox10", Path::new("/x")))
        .await
        .expect_err("absent");
    assert!(matches!(err, Error::PluginNotFound { .. }), "{err:?}");
    w.conflist("10-test.conflist", &two_plugins("1.0.0"));
    assert_eq!(
        cni.status().await,
        NetworkStatus::Ready {
            network: "testnet".into(),
            origin: w.dir("conf").join("10-test.conflist").display().to_string()
        }
    );
}

#[tokio::test]
async fn bad_requests_are_refused_before_any_plugin_runs() {
    let w = World::new();
    w.conflist("10-test.conflist", &two_plugins("1.0.0"));
    let cni = w.cni();
    let bad_id = pod("../etc", Path::new("/x"));
    assert!(matches!(
        cni.add(&bad_id).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        cni.del(&bad_id).await,
        Err(Error::InvalidArgument(_))
    ));
    let no_netns = pod("ok", Path::new(""));
    assert!(matches!(
        cni.add(&no_netns).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(w.calls().is_empty());
}

#[tokio::test]
async fn the_daemons_own_netns_is_never_handed_to_plugins() {
    let w = World::new();
    w.conflist("10-test.conflist", &two_plugins("1.0.0"));
    let cni = w.cni().with_loopback(false);
    let own = pod("sandbox11", Path::new("/proc/thread-self/ns/net"));
    let err = cni.add(&own).await.expect_err("host netns");
    assert!(err.to_string().contains("own (host) namespace"), "{err}");
    assert!(matches!(
        cni.check(&own).await,
        Err(Error::InvalidArgument(_))
    ));
    assert!(w.calls().is_empty());

    // A cached pod whose /proc path now names the host: DEL runs without a netns.
    let elsewhere = pod("sandbox11", Path::new("/run/netns/fake11"));
    cni.add(&elsewhere).await.expect("add");
    w.calls();
    cni.del(&own).await.expect("del");
    let calls = w.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls.iter().all(|c| c["netns"] == ""), "{calls:?}");
    // And without a cache.
    cni.del(&own).await.expect("del again");
    assert!(w.calls().iter().all(|c| c["netns"] == ""));
}
