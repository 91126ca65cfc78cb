//! Helpers shared by the crius-net integration tests: unique names, and guards that undo
//! whatever a test created on the host even when it panics.

#![allow(dead_code, missing_docs)]

use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{SystemTime, UNIX_EPOCH};

use crius_net::PodNetwork;

/// Debian's plugin directory.
pub const PLUGIN_DIR: &str = "/usr/lib/cni";

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A value unique to this process and call.
pub fn unique() -> u32 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    (std::process::id() << 12) ^ nanos ^ (COUNTER.fetch_add(1, Ordering::Relaxed) << 24)
}

pub fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// Runs a command, returning stdout if it succeeded.
pub fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Runs `scenario` on a thread of its own that first moves into a fresh network namespace,
/// which then stands in for the host: bridges, iptables rules and sysctls the plugins
/// create there vanish with it. Plugins inherit the namespace of the thread spawning them.
pub fn in_isolated_host_netns<F, Fut>(scenario: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    std::thread::spawn(move || {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
        run("ip", &["link", "set", "lo", "up"]).expect("lo up in the host stand-in");
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(scenario());
    })
    .join()
    .expect("scenario thread");
}

/// A network namespace under /run/netns, deleted on drop.
pub struct Netns {
    pub name: String,
    deleted: bool,
}

impl Netns {
    pub fn new() -> Self {
        let name = format!("crius-test-{:08x}", unique());
        run("ip", &["netns", "add", &name]).expect("ip netns add");
        Self {
            name,
            deleted: false,
        }
    }

    pub fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.name)
    }

    /// Deletes the namespace now (as if the pod's sandbox had died).
    pub fn delete(&mut self) {
        if !self.deleted {
            let _ = run("ip", &["netns", "del", &self.name]);
            self.deleted = true;
        }
    }

    /// `ip -n NS ARGS...`.
    pub fn ip(&self, args: &[&str]) -> Result<String, String> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        run("ip", &all)
    }

    /// Starts a TCP listener on `port` (0: any) inside the namespace, in a thread that
    /// joins it; the thread answers one connection with `hello` and ends. Returns the port.
    pub fn serve_once(&self, port: u16) -> u16 {
        serve_once_in(&self.path(), port)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        self.delete();
    }
}

/// A process in a new user namespace (mapping root to root) and a new network namespace it
/// owns, the way a crius pod sandbox holds its netns; killed on drop.
pub struct UsernsSandbox {
    child: std::process::Child,
}

impl UsernsSandbox {
    pub fn new() -> Self {
        let child = Command::new("unshare")
            .args(["--user", "--map-root-user", "--net", "sleep", "120"])
            .spawn()
            .expect("spawn unshare");
        let sandbox = Self { child };
        let own = std::fs::read_link("/proc/self/ns/net").expect("own netns");
        for _ in 0..200 {
            let comm = std::fs::read_to_string(format!("/proc/{}/comm", sandbox.pid()))
                .unwrap_or_default();
            let net = std::fs::read_link(sandbox.netns_path()).ok();
            if comm.trim() == "sleep" && net.is_some_and(|n| n != own) {
                return sandbox;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the userns sandbox did not come up");
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/ns/net", self.pid()))
    }
}

impl Drop for UsernsSandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a one-shot TCP greeter inside the network namespace at `path` (see
/// [`Netns::serve_once`]).
pub fn serve_once_in(path: &Path, port: u16) -> u16 {
    let ns = std::fs::File::open(path).expect("open netns");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let bound = nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("setns: {e}"))
            .and_then(|()| {
                TcpListener::bind((Ipv4Addr::UNSPECIFIED, port)).map_err(|e| e.to_string())
            });
        match bound {
            Ok(listener) => {
                let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
                let _ = tx.send(Ok(port));
                if let Ok((mut conn, _)) = listener.accept() {
                    use std::io::Write;
                    let _ = conn.write_all(b"hello");
                }
            }
            Err(e) => {
                let _ = tx.send(Err(e));
            }
        }
    });
    rx.recv()
        .expect("listener thread")
        .expect("listen in netns")
}

/// Connects to `ip:port` and reads the greeting of [`Netns::serve_once`].
pub fn greet(ip: IpAddr, port: u16) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(
        &(ip, port).into(),
        std::time::Duration::from_secs(5),
    )?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut buf = String::new();
    s.read_to_string(&mut buf)?;
    Ok(buf)
}

/// A test bridge `crius-t<hex>` with 10.88.N.1/24, deleted on drop. The bridge plugin
/// attaches to it (isGateway false, so it never changes the host's ip_forward).
pub struct Bridge {
    pub name: String,
    pub octet: u8,
}

impl Bridge {
    pub fn new() -> Self {
        let routes = run("ip", &["-4", "route"]).unwrap_or_default();
        let octet = (0..200u32)
            .map(|i| u8::try_from(unique().wrapping_add(i) % 150 + 100).expect("below 250"))
            .find(|o| !routes.contains(&format!("10.88.{o}.")))
            .expect("a free 10.88.x.0/24");
        let name = format!("crius-t{:06x}", unique() & 0xff_ffff);
        run("ip", &["link", "add", &name, "type", "bridge"]).expect("add bridge");
        let bridge = Self { name, octet };
        run(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", bridge.gateway()),
                "dev",
                &bridge.name,
            ],
        )
        .expect("bridge address");
        run("ip", &["link", "set", &bridge.name, "up"]).expect("bridge up");
        bridge
    }

    pub fn subnet(&self) -> String {
        format!("10.88.{}.0/24", self.octet)
    }

    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 88, self.octet, 1)
    }
}

impl Drop for Bridge {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.name]);
    }
}

/// Whether a link exists on the host.
pub fn link_exists(name: &str) -> bool {
    run("ip", &["link", "show", "dev", name]).is_ok()
}

/// A pod request for tests.
pub fn pod(id: &str, netns: &Path) -> PodNetwork {
    PodNetwork {
        id: id.into(),
        netns_path: netns.into(),
        name: "web-0".into(),
        namespace: "crius-test".into(),
        uid: "0b8a7c1e-1111-2222-3333-444455556666".into(),
        ..Default::default()
    }
}

/// Writes an executable shell script.
pub fn script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).expect("write script");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}
