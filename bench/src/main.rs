//! crius-bench: drives criusd and Debian's containerd (the peer) through the same CRI client
//! code in one run, alternating A/B per iteration after a warm-up, and prints a markdown table of
//! median, p90, p99 and the crius/peer ratio. A figure a runtime cannot do yet (an RPC answering
//! `Unimplemented`, a missing feature) reads `n/a (reason)`; nothing here needs changing as crius
//! grows. See `integration/bench/README.md`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cri_api::v1::image_service_client::ImageServiceClient;
use cri_api::v1::runtime_service_client::RuntimeServiceClient;
use cri_api::v1::{
    ContainerConfig, ContainerMetadata, ContainerState, ContainerStatusRequest,
    CreateContainerRequest, ExecSyncRequest, IdMapping, ImageSpec, LinuxContainerConfig,
    LinuxContainerSecurityContext, LinuxPodSandboxConfig, LinuxSandboxSecurityContext,
    ListContainerStatsRequest, ListContainersRequest, ListImagesRequest, ListPodSandboxRequest,
    ListPodSandboxStatsRequest, NamespaceMode, NamespaceOption, PodSandboxConfig,
    PodSandboxMetadata, PodSandboxStatusRequest, PullImageRequest, RemoveContainerRequest,
    RemoveImageRequest, RemovePodSandboxRequest, RunPodSandboxRequest, StartContainerRequest,
    StatusRequest, StopContainerRequest, StopPodSandboxRequest, UserNamespace, VersionRequest,
};
use crius_tests::harness::connect;
use crius_tests::image::{self, Compression, Entry, Image, Layer};
use crius_tests::registry::Registry;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tonic::transport::Channel;

/// Files in the large test image's extra layer.
const LARGE_FILES: usize = 20_000;
/// Layers of the two layer-count test images (start time of a deep image against a shallow
/// one).
const SHALLOW_LAYERS: usize = 20;
const DEEP_LAYERS: usize = 128;
/// The CNI plugin directory of Debian's containernetworking-plugins.
const CNI_BIN_DIR: &str = "/usr/lib/cni";
/// Length of every user namespace mapping the bench asks for.
const USERNS_LENGTH: u32 = 65_536;
/// The conflist used when the repository's `integration/cni/10-crius.conflist` is missing.
const FALLBACK_CONFLIST: &str = r#"{
  "cniVersion": "1.0.0",
  "name": "crius",
  "plugins": [
    {
      "type": "bridge", "bridge": "crius0", "isGateway": true, "ipMasq": true,
      "hairpinMode": true,
      "ipam": { "type": "host-local", "ranges": [[{ "subnet": "10.87.0.0/16" }]],
                "routes": [{ "dst": "0.0.0.0/0" }] }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
"#;

const USAGE: &str = "usage: crius-bench [--quick] [--out FILE] [--criusd PATH] [--conflist FILE]
                   [--containerd2 DIR] [--no-containerd16] [--pause-src FILE]
                   [--iterations N] [--pods N] [--density N] [--density-only]
                   [--layers-only]
  --quick        few iterations (CI smoke run, two or three minutes)
  --out FILE     where to write the markdown table (default integration/bench/results.md)
  --criusd PATH  the criusd binary (default: next to this binary)
  --conflist F   CNI conflist given to both runtimes (default integration/cni/10-crius.conflist)
  --containerd2 DIR  containerd, containerd-shim-runc-v2 and runc of containerd 2 (built as
                 integration/bench/README.md says); without it that peer is skipped
  --no-containerd16  skip Debian's containerd 1.6
  --pause-src F  pause.c for containerd's sandbox image (default: ../shared/critest-images/src/
                 pause.c beside the repository)
  --iterations N measured iterations per latency figure (overrides the mode's default)
  --pods N       pods in the concurrency figure (default 50)
  --density N    pods (two containers each) of the list/status figures (default 250)
  --density-only only the density figures (start, memory, list/status calls, relist CPU)
  --layers-only  only the layer-count figures (full pod start, 128-layer and 20-layer image,
                 plain and userns) and their ratios";

// ---------------------------------------------------------------------------------------------
// Options

/// How much work one run does.
#[derive(Debug, Clone)]
struct Plan {
    /// Unrecorded iterations before each latency figure.
    warmup: usize,
    /// Recorded iterations of each latency figure.
    iterations: usize,
    /// Recorded iterations of the large-image pull.
    pulls: usize,
    /// Pods started at once in the concurrency figure.
    pods: usize,
    /// Rounds of the concurrency figure.
    rounds: usize,
    /// Calls of each list/status figure per runtime.
    calls: usize,
    /// Pods (two containers each) of the list/status figures.
    density: usize,
    /// Seconds of the kubelet-like relist loop.
    relist_secs: u64,
    /// ExecSync calls per CPU sample.
    execs: usize,
}

/// Command-line options.
#[derive(Debug, Clone)]
struct Options {
    quick: bool,
    /// Only the layer-count figures.
    layers_only: bool,
    /// Where containerd 2's binaries are; `None`: that peer is skipped.
    containerd2: Option<PathBuf>,
    /// Whether Debian's containerd 1.6 runs.
    containerd16: bool,
    /// Only the density figures (pods with two containers, list/status calls, relist CPU).
    density_only: bool,
    out: PathBuf,
    criusd: PathBuf,
    conflist: PathBuf,
    pause_src: PathBuf,
    plan: Plan,
}

/// The repository root (this crate lives in `<root>/bench`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

fn parse_options() -> Result<Options> {
    let mut args = std::env::args().skip(1);
    let root = repo_root();
    let exe = std::env::current_exe()?;
    let mut quick = false;
    let mut layers_only = false;
    let mut out = root.join("integration/bench/results.md");
    let mut criusd = exe
        .parent()
        .map(|d| d.join("criusd"))
        .unwrap_or_else(|| PathBuf::from("criusd"));
    let mut conflist = root.join("integration/cni/10-crius.conflist");
    // shared/ sits beside the repository.
    let mut pause_src = root.join("../shared/critest-images/src/pause.c");
    let mut iterations = None;
    let mut pods = 50;
    let mut density = None;
    let mut containerd2 = std::env::var_os("CRIUS_BENCH_CONTAINERD2").map(PathBuf::from);
    let mut containerd16 = true;
    let mut density_only = false;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => quick = true,
            "--layers-only" => layers_only = true,
            "--out" => out = value("--out")?.into(),
            "--criusd" => criusd = value("--criusd")?.into(),
            "--conflist" => conflist = value("--conflist")?.into(),
            "--pause-src" => pause_src = value("--pause-src")?.into(),
            "--iterations" => iterations = Some(value("--iterations")?.parse()?),
            "--pods" => pods = value("--pods")?.parse()?,
            "--density" => density = Some(value("--density")?.parse()?),
            "--containerd2" => containerd2 = Some(value("--containerd2")?.into()),
            "--no-containerd16" => containerd16 = false,
            "--density-only" => density_only = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other}\n{USAGE}"),
        }
    }
    let mut plan = if quick {
        Plan {
            warmup: 1,
            iterations: 5,
            pulls: 2,
            pods,
            rounds: 1,
            calls: 50,
            density: density.unwrap_or(30),
            relist_secs: 5,
            execs: 10,
        }
    } else {
        Plan {
            warmup: 3,
            iterations: 30,
            pulls: 5,
            pods,
            rounds: 2,
            calls: 300,
            density: density.unwrap_or(250),
            relist_secs: 20,
            execs: 20,
        }
    };
    if let Some(n) = iterations {
        plan.iterations = n;
    }
    Ok(Options {
        quick,
        layers_only,
        containerd2,
        containerd16,
        density_only,
        out,
        criusd,
        conflist,
        pause_src,
        plan,
    })
}

// ---------------------------------------------------------------------------------------------
// Results

/// The unit a figure is measured in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Millis,
    Seconds,
    Mebibytes,
    /// Milliseconds of CPU per second of wall time.
    CpuMsPerSec,
}

impl Unit {
    fn format(self, v: f64) -> String {
        match self {
            Unit::Millis => format!("{v:.1} ms"),
            Unit::Seconds => format!("{v:.2} s"),
            Unit::Mebibytes => format!("{v:.1} MiB"),
            Unit::CpuMsPerSec => format!("{v:.1} ms/s"),
        }
    }
}

/// One runtime's measurements of one figure.
#[derive(Debug, Clone, Default)]
struct Cell {
    samples: Vec<f64>,
    na: Option<String>,
}

/// One row group of the table: a figure and its cell per runtime.
#[derive(Debug, Clone)]
struct Figure {
    name: String,
    unit: Unit,
    /// One per runtime, in the order of the bench's targets.
    cells: Vec<Cell>,
}

/// Every figure, in table order, plus notes: each distinct full error text and the figures it
/// made n/a.
#[derive(Debug, Default)]
struct Results {
    /// How many runtimes run.
    runtimes: usize,
    figures: Vec<Figure>,
    notes: Vec<(String, Vec<String>)>,
    /// Milliseconds of `tar -x` of the large image's layers (the unpack baseline).
    baseline: Vec<f64>,
    /// Milliseconds of `curl | tar -xz` of the multi-layer image's layers (the pull floor).
    pull_floor: Vec<f64>,
}

impl Results {
    fn figure(&mut self, name: &str, unit: Unit) -> usize {
        if let Some(i) = self.figures.iter().position(|f| f.name == name) {
            return i;
        }
        self.figures.push(Figure {
            name: name.to_owned(),
            unit,
            cells: vec![Cell::default(); self.runtimes.max(1)],
        });
        self.figures.len() - 1
    }

    fn cell(&mut self, name: &str, unit: Unit, target: usize) -> &mut Cell {
        let i = self.figure(name, unit);
        &mut self.figures[i].cells[target]
    }

    fn record(&mut self, name: &str, unit: Unit, target: usize, value: f64) {
        let cell = self.cell(name, unit, target);
        if cell.na.is_none() {
            cell.samples.push(value);
        }
    }

    fn is_na(&self, name: &str, target: usize) -> bool {
        self.figures
            .iter()
            .any(|f| f.name == name && f.cells[target].na.is_some())
    }

    fn fail(&mut self, name: &str, unit: Unit, target: usize, reason: String, detail: String) {
        let cell = self.cell(name, unit, target);
        if cell.na.is_none() {
            cell.na = Some(reason);
            cell.samples.clear();
            match self.notes.iter_mut().find(|(d, _)| *d == detail) {
                Some((_, figures)) => figures.push(name.to_owned()),
                None => self.notes.push((detail, vec![name.to_owned()])),
            }
        }
    }
}

/// The `q`-quantile (0..=1) of sorted `v`, nearest rank.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    // Nearest rank: ceil(q * n), 1-based.
    let n = sorted.len();
    let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
    sorted[rank - 1]
}

fn median(samples: &[f64]) -> Option<f64> {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    (!v.is_empty()).then(|| quantile(&v, 0.5))
}

fn md_escape(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

/// Renders the results as markdown: per figure a row per runtime, crius first; each peer's
/// row carries the ratio of crius' median to that peer's.
fn render(results: &Results, names: &[&str], header: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{header}");
    let _ = writeln!(
        out,
        "| figure | runtime | n | median | p90 | p99 | crius/this runtime |\n|---|---|---|---|---|---|---|"
    );
    for f in &results.figures {
        let medians: Vec<Option<f64>> = f
            .cells
            .iter()
            .map(|c| {
                if c.na.is_some() {
                    None
                } else {
                    median(&c.samples)
                }
            })
            .collect();
        for (t, cell) in f.cells.iter().enumerate() {
            let label = if t == 0 { f.name.as_str() } else { "" };
            if let Some(reason) = &cell.na {
                let _ = writeln!(
                    out,
                    "| {} | {} | – | n/a ({}) | – | – | – |",
                    md_escape(label),
                    names[t],
                    md_escape(reason)
                );
                continue;
            }
            if cell.samples.is_empty() {
                let _ = writeln!(
                    out,
                    "| {} | {} | 0 | n/a (not measured) | – | – | – |",
                    md_escape(label),
                    names[t]
                );
                continue;
            }
            let mut v = cell.samples.clone();
            v.sort_by(f64::total_cmp);
            let ratio = match (t, medians[0], medians[t]) {
                (1.., Some(a), Some(b)) if b > 0.0 => format!("**{:.2}**", a / b),
                _ => "–".to_owned(),
            };
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                md_escape(label),
                names[t],
                v.len(),
                f.unit.format(quantile(&v, 0.5)),
                f.unit.format(quantile(&v, 0.9)),
                f.unit.format(quantile(&v, 0.99)),
                ratio
            );
        }
    }
    // Large-image cost relative to the small image, and deep-image cost relative to the
    // shallow one, per runtime. A layer-count ratio a runtime cannot give reads n/a with the
    // reason of the figure it lacks.
    let pairs = [
        (
            F_POD,
            F_POD_LARGE,
            "plain",
            "20k-file / 20-file image",
            false,
        ),
        (
            F_POD_USERNS,
            F_POD_USERNS_LARGE,
            "userns",
            "20k-file / 20-file image",
            false,
        ),
        (
            F_POD_SHALLOW,
            F_POD_DEEP,
            "plain",
            "128-layer / 20-layer image",
            true,
        ),
        (
            F_POD_USERNS_SHALLOW,
            F_POD_USERNS_DEEP,
            "userns",
            "128-layer / 20-layer image",
            true,
        ),
    ];
    let mut ratio_lines = Vec::new();
    for (small, large, what, ratio, na_line) in pairs {
        for (t, name) in names.iter().enumerate() {
            // The median of figure `n` on this runtime; None when the figure is not in this
            // run, Some(Err(reason)) when it has no median.
            let get = |n: &str| {
                results.figures.iter().find(|f| f.name == n).map(|f| {
                    let c = &f.cells[t];
                    match &c.na {
                        Some(reason) => Err(reason.clone()),
                        None => median(&c.samples).ok_or_else(|| "not measured".to_owned()),
                    }
                })
            };
            match (get(small), get(large)) {
                (Some(Ok(s)), Some(Ok(l))) if s > 0.0 => ratio_lines.push(format!(
                    "| full pod start, {what}: {ratio} | {name} | {:.2} |",
                    l / s
                )),
                (Some(s), Some(l)) if na_line => {
                    let why = [s.err(), l.err()]
                        .into_iter()
                        .flatten()
                        .next()
                        .unwrap_or_else(|| "zero median".to_owned());
                    ratio_lines.push(format!(
                        "| full pod start, {what}: {ratio} | {name} | n/a ({}) |",
                        md_escape(&why)
                    ));
                }
                _ => {}
            }
        }
    }
    if !ratio_lines.is_empty() {
        let _ = writeln!(
            out,
            "\n| image-size ratio (medians) | runtime | ratio |\n|---|---|---|"
        );
        for l in ratio_lines {
            let _ = writeln!(out, "{l}");
        }
    }
    if let Some(m) = median(&results.baseline) {
        let _ = writeln!(
            out,
            "\nBaseline: `tar -xf` of the 20k-file image's layers (gzip) into an empty directory \
             (no runtime, no registry): median {} of {}.",
            Unit::Millis.format(m),
            results.baseline.len()
        );
    }
    if let Some(m) = median(&results.pull_floor) {
        let _ = writeln!(
            out,
            "\nPull floor: `curl | tar -xz` of the 5-layer image's layers from the same registry, \
             one after another, into an empty directory: median {} of {}.",
            Unit::Millis.format(m),
            results.pull_floor.len()
        );
    }
    if !results.notes.is_empty() {
        let _ = writeln!(out, "\nWhy cells are n/a:\n");
        for (detail, figures) in &results.notes {
            let _ = writeln!(
                out,
                "- {}  \n  ({})",
                md_escape(detail),
                md_escape(&figures.join("; "))
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Figures

const F_PULL: &str = "image pull + unpack, 20k-file image";
const F_PULL_MULTI: &str = "image pull + unpack, 5 gzip layers (~170 MB, 320 MiB unpacked)";
const F_RUN: &str = "RunPodSandbox (CNI)";
const F_STOPRM: &str = "StopPodSandbox + RemovePodSandbox";
const F_RUN_USERNS: &str = "RunPodSandbox, userns (CNI)";
const F_RUN_HOST: &str = "RunPodSandbox, host network (no CNI)";
const F_CTR: &str = "CreateContainer + StartContainer";
const F_CTR_USERNS: &str = "CreateContainer + StartContainer, userns";
const F_POD: &str = "full pod start, 20-file image";
const F_POD_LARGE: &str = "full pod start, 20k-file image";
const F_POD_USERNS: &str = "full pod start, userns, 20-file image";
const F_POD_USERNS_LARGE: &str = "full pod start, userns, 20k-file image";
const F_POD_SHALLOW: &str = "full pod start, 20-layer image";
const F_POD_DEEP: &str = "full pod start, 128-layer image";
const F_POD_USERNS_SHALLOW: &str = "full pod start, userns, 20-layer image";
const F_POD_USERNS_DEEP: &str = "full pod start, userns, 128-layer image";
const F_EXEC: &str = "ExecSync `/bin/true` (each call)";
const F_EXEC_PACED: &str = "ExecSync `/bin/true`, one every 0.5 s (an exec probe's pace)";
const F_EXEC_CPU: &str =
    "ExecSync CPU per call (daemon + the pod's monitor or shim, children included)";

/// The figures of one many-pods phase.
#[derive(Debug, Clone)]
struct ManyFigures {
    /// Pods started.
    pods: usize,
    /// Each pod gets a busybox container (else sandboxes only).
    containers: bool,
    start: String,
    stop: String,
    rss: String,
    pss: String,
    pss_all: String,
    /// The list/status figures, measured with a second container in every pod.
    list: Option<ListFigures>,
}

/// The figures of kubelet's hot paths at one density.
#[derive(Debug, Clone)]
struct ListFigures {
    list_pods: String,
    pod_status: String,
    list: String,
    status: String,
    stats: String,
    /// CPU of the daemon and its per-pod processes under a kubelet-like relist loop.
    relist_cpu: String,
}

impl ListFigures {
    fn new(pods: usize) -> ListFigures {
        let containers = pods * 2;
        ListFigures {
            list_pods: format!("ListPodSandbox, {pods} pods"),
            pod_status: format!("PodSandboxStatus, {pods} pods"),
            list: format!("ListContainers, {containers} containers"),
            status: format!("ContainerStatus, {containers} containers"),
            stats: format!("ListContainerStats, {containers} containers"),
            relist_cpu: format!(
                "CPU under a kubelet-like relist loop (1/s lists, stats every 10 s), {pods} pods"
            ),
        }
    }

    fn all(&self) -> Vec<(String, Unit)> {
        vec![
            (self.list_pods.clone(), Unit::Millis),
            (self.pod_status.clone(), Unit::Millis),
            (self.list.clone(), Unit::Millis),
            (self.status.clone(), Unit::Millis),
            (self.stats.clone(), Unit::Millis),
            (self.relist_cpu.clone(), Unit::CpuMsPerSec),
        ]
    }
}

impl ManyFigures {
    /// The phase of `pods` full pods (sandbox + container; with the list/status figures when
    /// `list`), or of `pods` bare sandboxes.
    fn new(pods: usize, containers: bool, list: bool) -> ManyFigures {
        if containers {
            ManyFigures {
                pods,
                containers,
                start: format!("{pods} pods started concurrently (wall, until all running)"),
                stop: format!("{pods} pods stopped + removed concurrently (wall)"),
                rss: format!("daemon RSS, {pods} pods running"),
                pss: format!(
                    "per-pod PSS: crius pod monitor vs containerd-shim-runc-v2, {pods} pods"
                ),
                pss_all: format!(
                    "per-pod PSS incl. sandbox process (monitor+sandbox vs shim+pause), {pods} pods"
                ),
                list: list.then(|| ListFigures::new(pods)),
            }
        } else {
            ManyFigures {
                pods,
                containers,
                start: format!("{pods} sandboxes started concurrently (wall, no containers)"),
                stop: format!("{pods} sandboxes stopped + removed concurrently (wall)"),
                rss: format!("daemon RSS, {pods} sandboxes (no containers)"),
                pss: "per-sandbox PSS (no containers): pod monitor vs shim".to_owned(),
                pss_all: "per-sandbox PSS incl. sandbox process (no containers)".to_owned(),
                list: None,
            }
        }
    }

    /// Every figure with its unit, in table order.
    fn all(&self) -> Vec<(String, Unit)> {
        let mut v = vec![
            (self.start.clone(), Unit::Seconds),
            (self.stop.clone(), Unit::Seconds),
            (self.rss.clone(), Unit::Mebibytes),
            (self.pss.clone(), Unit::Mebibytes),
            (self.pss_all.clone(), Unit::Mebibytes),
        ];
        if let Some(list) = &self.list {
            v.extend(list.all());
        }
        v
    }
}

/// Clients that start the user-namespaced pods of [`UsernsFigures`] together.
const USERNS_CLIENTS: usize = 10;

/// The figures of many user-namespaced pods started by a few clients at once.
struct UsernsFigures {
    pods: usize,
    wall: String,
    run: String,
    slowest: String,
    rss: String,
}

impl UsernsFigures {
    fn new(pods: usize) -> UsernsFigures {
        UsernsFigures {
            pods,
            wall: format!(
                "{pods} user-namespaced pods started by {USERNS_CLIENTS} clients (wall, until all running)"
            ),
            run: format!(
                "RunPodSandbox, userns, among {pods} pods started by {USERNS_CLIENTS} clients"
            ),
            slowest: format!("slowest of those {pods} RunPodSandbox calls"),
            rss: format!("daemon RSS, {pods} user-namespaced pods running"),
        }
    }

    fn all(&self) -> Vec<(String, Unit)> {
        vec![
            (self.wall.clone(), Unit::Seconds),
            (self.run.clone(), Unit::Millis),
            (self.slowest.clone(), Unit::Millis),
            (self.rss.clone(), Unit::Mebibytes),
        ]
    }
}

/// Daemon RSS with no pods, after setup.
const F_RSS_IDLE: &str = "daemon RSS, idle (after setup)";
/// Daemon RSS with no pods, at the end.
const F_RSS_END: &str = "daemon RSS, idle (end of run)";
/// The daemon's anonymous memory (RssAnon: heap, stacks) with no pods, after setup; VmRSS also
/// counts the pages of its executable it has run, which the page cache shares.
const F_ANON_IDLE: &str = "daemon anonymous memory (RssAnon), idle (after setup)";
/// The daemon's anonymous memory with no pods, at the end.
const F_ANON_END: &str = "daemon anonymous memory (RssAnon), idle (end of run)";

// ---------------------------------------------------------------------------------------------
// Daemons

/// Which runtime a daemon is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Crius,
    /// containerd 2 with a current runc, from binaries given by path.
    Containerd2,
    /// Debian's containerd 1.6 with Debian's runc.
    Containerd,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Crius => "crius",
            Kind::Containerd2 => "containerd 2",
            Kind::Containerd => "containerd 1.6",
        }
    }

    /// A name for paths.
    fn slug(self) -> &'static str {
        match self {
            Kind::Crius => "crius",
            Kind::Containerd2 => "containerd2",
            Kind::Containerd => "containerd",
        }
    }
}

/// A daemon under test: its process and its temporary directory, torn down on drop (processes
/// it left, mounts beneath its directory, cgroups under its cgroup parent, the directory).
struct Daemon {
    kind: Kind,
    dir: PathBuf,
    socket: PathBuf,
    log: PathBuf,
    child: Option<Child>,
    /// The cgroup parent given to every pod of this daemon (absolute, cgroupfs).
    cgroup_parent: String,
    /// Directories outside `dir` the daemon creates, removed at teardown when empty (containerd
    /// 1.6 puts shim sockets under `/run/containerd/s` whatever its state dir).
    outside_dirs: Vec<PathBuf>,
    torn_down: bool,
}

impl Daemon {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Stops the daemon and removes everything it left. Idempotent; errors are ignored.
    fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        if let Some(mut child) = self.child.take() {
            crius_tests::harness::terminate(&mut child, Duration::from_secs(10));
        }
        let dir = self.dir.display().to_string();
        let pattern = self.cgroup_parent.clone();
        for _ in 0..5 {
            let victims = leftover_processes(&dir, &pattern);
            if victims.is_empty() {
                break;
            }
            for pid in victims {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        if let Some(keep) = std::env::var_os("CRIUS_BENCH_KEEP_LOGS") {
            let to = Path::new(&keep).join(format!("{}.log", self.kind.slug()));
            let _ = std::fs::copy(&self.log, &to);
        }
        unmount_beneath(&self.dir);
        remove_cgroups(&self.cgroup_parent);
        for d in &self.outside_dirs {
            let _ = std::fs::remove_dir(d);
        }
        if std::fs::remove_dir_all(&self.dir).is_err() {
            // A mount may have needed a moment to go away (MNT_DETACH): try once more.
            std::thread::sleep(Duration::from_millis(300));
            unmount_beneath(&self.dir);
            if let Err(e) = std::fs::remove_dir_all(&self.dir) {
                eprintln!("crius-bench: cannot remove {}: {e}", self.dir.display());
            }
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.teardown();
    }
}

/// Processes (other than this one) whose command line names `dir`, or that live in a cgroup
/// beneath `cgroup_parent`: pod monitors and sandboxes, shims, containers.
fn leftover_processes(dir: &str, cgroup_parent: &str) -> Vec<i32> {
    let me = std::process::id();
    let mut out = Vec::new();
    for (pid, argv) in processes() {
        if pid as u32 == me {
            continue;
        }
        let by_cmdline = argv.iter().any(|a| a.contains(dir));
        let by_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .map(|c| {
                c.lines().any(|l| {
                    l.split(':')
                        .nth(2)
                        .is_some_and(|p| p.starts_with(cgroup_parent))
                })
            })
            .unwrap_or(false);
        if by_cmdline || by_cgroup {
            out.push(pid);
        }
    }
    out
}

/// Every process and its argv.
fn processes() -> Vec<(i32, Vec<String>)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(raw) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let argv = raw
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.push((pid, argv));
    }
    out
}

/// Unescapes a mountinfo path (`\040` and friends).
fn unescape_mountinfo(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts every mount at or beneath `dir`, deepest first.
fn unmount_beneath(dir: &Path) {
    for _ in 0..5 {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut mounts: Vec<PathBuf> = text
            .lines()
            .filter_map(|l| l.split(' ').nth(4))
            .map(|p| PathBuf::from(unescape_mountinfo(p)))
            .filter(|p| p.starts_with(dir))
            .collect();
        if mounts.is_empty() {
            return;
        }
        mounts.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for m in mounts {
            let _ = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH);
        }
    }
}

/// Removes the cgroup directories under `parent` in every mounted hierarchy, deepest first.
fn remove_cgroups(parent: &str) {
    let Ok(hierarchies) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let rel = parent.trim_start_matches('/');
    if rel.is_empty() {
        return;
    }
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup").join(rel)];
    for h in hierarchies.flatten() {
        roots.push(h.path().join(rel));
    }
    for root in roots {
        let mut dirs = Vec::new();
        collect_dirs(&root, &mut dirs);
        dirs.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
        for d in dirs {
            let _ = std::fs::remove_dir(&d);
        }
    }
    // The parent's own parent (`/crius-bench-PID`) is shared by both daemons: remove it when
    // empty.
    if let Some(top) = Path::new(rel).components().next() {
        for h in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(h.path().join(top));
        }
    }
}

fn collect_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    if !dir.is_dir() {
        return;
    }
    out.push(dir.to_path_buf());
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_dirs(&e.path(), out);
            }
        }
    }
}

/// A fresh directory for one daemon.
fn daemon_dir(kind: Kind) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!(
        "crius-bench-{}-{}",
        std::process::id(),
        kind.slug()
    ));
    if dir.exists() {
        unmount_beneath(&dir);
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    // Runtime state lives on a tmpfs, as /run is on a node: files written there (and their
    // fsyncs) cost what they cost in production, for every runtime alike.
    let state = dir.join("state");
    std::fs::create_dir_all(&state)?;
    nix::mount::mount(
        Some("tmpfs"),
        &state,
        Some("tmpfs"),
        nix::mount::MsFlags::MS_NOSUID | nix::mount::MsFlags::MS_NODEV,
        Some("mode=0711"),
    )
    .with_context(|| format!("mounting a tmpfs on {}", state.display()))?;
    Ok(dir)
}

fn spawn_logged(program: &Path, args: &[String], log: &Path) -> Result<Child> {
    spawn_logged_env(program, args, log, &[])
}

fn spawn_logged_env(
    program: &Path,
    args: &[String],
    log: &Path,
    env: &[(&str, &str)],
) -> Result<Child> {
    use std::os::unix::process::CommandExt as _;
    let file = std::fs::File::create(log)?;
    Command::new(program)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file)
        // Own process group: a terminal Ctrl-C reaches the bench, which cleans up over CRI
        // before stopping the daemons.
        .process_group(0)
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))
}

/// Starts criusd on a fresh directory.
fn start_criusd(opts: &Options, registry_host: &str, cni_dir: &Path) -> Result<Daemon> {
    if !opts.criusd.exists() {
        bail!(
            "{} does not exist (cargo build --release -p criusd, or --criusd PATH)",
            opts.criusd.display()
        );
    }
    let dir = daemon_dir(Kind::Crius)?;
    let outside_dirs = Vec::new();
    let socket = dir.join("state/crius.sock");
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "insecure_registries = [\"{registry_host}\"]\ncni_conf_dir = \"{}\"\n\
             cni_bin_dirs = [\"{CNI_BIN_DIR}\"]\n",
            cni_dir.display()
        ),
    )?;
    let args = vec![
        "--config".into(),
        config.display().to_string(),
        "--root".into(),
        dir.join("root").display().to_string(),
        "--state".into(),
        dir.join("state").display().to_string(),
        "--listen".into(),
        socket.display().to_string(),
        "--log-level".into(),
        std::env::var("CRIUS_BENCH_LOG_LEVEL").unwrap_or_else(|_| "info".into()),
    ];
    let log = dir.join("criusd.log");
    let child = spawn_logged(&opts.criusd, &args, &log)?;
    Ok(Daemon {
        kind: Kind::Crius,
        cgroup_parent: format!("/crius-bench-{}/crius", std::process::id()),
        dir,
        socket,
        log,
        child: Some(child),
        outside_dirs,
        torn_down: false,
    })
}

/// Starts containerd on a fresh directory with a generated config: Debian's (`bin_dir`
/// `None`), or the `containerd`, `containerd-shim-runc-v2` and `runc` of `bin_dir`.
fn start_containerd(
    kind: Kind,
    bin_dir: Option<&Path>,
    registry_host: &str,
    pause: &str,
    cni_dir: &Path,
) -> Result<Daemon> {
    let binary = match bin_dir {
        Some(d) => d.join("containerd"),
        None => PathBuf::from("/usr/bin/containerd"),
    };
    if !binary.exists() {
        bail!(
            "{} is missing ({})",
            binary.display(),
            if bin_dir.is_some() {
                "see integration/bench/README.md for building containerd 2 and runc"
            } else {
                "apt-get install containerd runc"
            }
        );
    }
    // containerd 2's shim and runc come from the same directory.
    let runc_binary = match bin_dir {
        Some(d) => {
            for b in ["containerd-shim-runc-v2", "runc"] {
                if !d.join(b).exists() {
                    bail!("{} is missing", d.join(b).display());
                }
            }
            format!("BinaryName = \"{}\"", d.join("runc").display())
        }
        None => String::new(),
    };
    let dir = daemon_dir(kind)?;
    // Only what did not exist before (a system containerd may own them), deepest first.
    let outside_dirs: Vec<PathBuf> = ["/run/containerd/s", "/run/containerd"]
        .iter()
        .map(PathBuf::from)
        .filter(|d| !d.exists())
        .collect();
    let socket = dir.join("containerd.sock");
    // Registry access: a hosts.toml per registry host under config_path (containerd 1.5+); the
    // loopback registry speaks plain HTTP.
    let hosts_dir = dir.join("certs.d").join(registry_host);
    std::fs::create_dir_all(&hosts_dir)?;
    std::fs::write(
        hosts_dir.join("hosts.toml"),
        format!(
            "server = \"http://{registry_host}\"\n\n[host.\"http://{registry_host}\"]\n  \
             capabilities = [\"pull\", \"resolve\"]\n  skip_verify = true\n"
        ),
    )?;
    let d = dir.display();
    let config = format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
oom_score = 0
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]

[grpc]
  address = "{d}/containerd.sock"

[ttrpc]
  address = ""

[debug]
  address = ""
  level = "info"

[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{pause}"
  disable_apparmor = true
  # Lowering oom_score_adj (the sandbox's -998) needs CAP_SYS_RESOURCE, which a container or
  # VM may not grant: keep every score at least containerd's own, as rootless setups do.
  restrict_oom_score_adj = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "{d}/runc"
        {runc_binary}

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{CNI_BIN_DIR}"
    conf_dir = "{cni}"
    max_conf_num = 1

  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{d}/certs.d"
"#,
        cni = cni_dir.display(),
    );
    let config_path = dir.join("config.toml");
    std::fs::write(&config_path, config)?;
    let log = dir.join("containerd.log");
    // The shim is found on PATH: the given directory first.
    let path = match bin_dir {
        Some(d) => format!(
            "{}:{}",
            d.display(),
            std::env::var("PATH").unwrap_or_default()
        ),
        None => std::env::var("PATH").unwrap_or_default(),
    };
    let child = spawn_logged_env(
        &binary,
        &["--config".into(), config_path.display().to_string()],
        &log,
        &[("PATH", path.as_str())],
    )?;
    Ok(Daemon {
        kind,
        cgroup_parent: format!("/crius-bench-{}/{}", std::process::id(), kind.slug()),
        dir,
        socket,
        log,
        child: Some(child),
        outside_dirs,
        torn_down: false,
    })
}

// ---------------------------------------------------------------------------------------------
// Targets: a daemon and its CRI clients

/// A runtime under test with its CRI clients and per-run state.
struct Target {
    daemon: Daemon,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
    version: String,
    userns: bool,
    /// The long-lived sandbox of the container figure.
    container_pod: Option<Pod>,
    /// Pods of the concurrency figure.
    many: Vec<Pod>,
}

impl Target {
    fn name(&self) -> &'static str {
        self.daemon.kind.name()
    }
}

/// Waits for a daemon's `Version` and connects.
async fn connect_target(mut daemon: Daemon) -> Result<Target> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(child) = daemon.child.as_mut()
            && let Some(status) = child.try_wait()?
        {
            bail!(
                "{} exited with {status} while starting:\n{}",
                daemon.kind.name(),
                daemon.log_tail()
            );
        }
        if daemon.socket.exists()
            && let Ok(channel) = connect(&daemon.socket).await
        {
            let mut runtime = RuntimeServiceClient::new(channel.clone());
            if let Ok(v) = runtime.version(VersionRequest::default()).await {
                let v = v.into_inner();
                let status = runtime
                    .status(StatusRequest { verbose: false })
                    .await
                    .map(|s| s.into_inner())
                    .ok();
                let userns = status.is_some_and(|s| {
                    s.runtime_handlers
                        .iter()
                        .any(|h| h.name.is_empty() && h.features.is_some_and(|f| f.user_namespaces))
                });
                return Ok(Target {
                    daemon,
                    runtime,
                    images: ImageServiceClient::new(channel),
                    version: format!("{} {}", v.runtime_name, v.runtime_version),
                    userns,
                    container_pod: None,
                    many: Vec::new(),
                });
            }
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not answer Version in 30 s:\n{}",
                daemon.kind.name(),
                daemon.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A pod the bench made: its id, config (CreateContainer needs it) and containers.
#[derive(Debug, Clone)]
struct Pod {
    id: String,
    config: PodSandboxConfig,
    containers: Vec<String>,
}

/// The images every runtime uses.
#[derive(Debug, Clone)]
struct Images {
    small: String,
    large: String,
    /// The 20-layer and the 128-layer image.
    shallow: String,
    deep: String,
    pause: String,
    /// The 5-layer image of the pull figure, and its layer blob URLs (for the floor).
    multi: String,
    multi_urls: Vec<String>,
}

/// Hands out unique pod names and user namespace ranges.
#[derive(Debug, Default)]
struct Counter(u64);

impl Counter {
    fn next(&mut self) -> u64 {
        self.0 += 1;
        self.0
    }
}

/// The user namespace option of pod number `n`: a 65536-aligned host range above 65535, as
/// kubelet allocates them.
fn userns_option(n: u64) -> UserNamespace {
    let slot = u32::try_from(n % 4096).unwrap_or(0);
    let map = IdMapping {
        host_id: USERNS_LENGTH * (16 + slot),
        container_id: 0,
        length: USERNS_LENGTH,
    };
    UserNamespace {
        mode: NamespaceMode::Pod as i32,
        uids: vec![map],
        gids: vec![map],
    }
}

/// A kubelet-like pod config.
fn pod_config(t: &Target, n: u64, userns: bool) -> Result<PodSandboxConfig> {
    let name = format!("bench-{n}");
    let log_dir = t.daemon.dir.join("logs").join(&name);
    std::fs::create_dir_all(&log_dir)?;
    let namespace_options = NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        target_id: String::new(),
        userns_options: userns.then(|| userns_option(n)),
    };
    Ok(PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.clone(),
            uid: format!("{:08x}-bench-{}-{n}", std::process::id(), t.name()),
            namespace: "bench".into(),
            attempt: 0,
        }),
        hostname: name,
        log_directory: log_dir.display().to_string(),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: t.daemon.cgroup_parent.clone(),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespace_options),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}

/// A container config as kubelet sends it: the pod's namespace options (user namespace
/// mappings included) repeated in the container's security context.
fn container_config(pod: &PodSandboxConfig, image: &str, name: &str) -> ContainerConfig {
    let namespace_options = pod
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.clone());
    ContainerConfig {
        linux: Some(LinuxContainerConfig {
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options,
                ..Default::default()
            }),
            ..Default::default()
        }),
        metadata: Some(ContainerMetadata {
            name: name.to_owned(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.to_owned(),
            ..Default::default()
        }),
        command: vec!["/bin/sleep".into(), "3600".into()],
        log_path: format!("{name}.log"),
        ..Default::default()
    }
}

/// The clients of a target, cloneable into tasks.
#[derive(Clone)]
struct Clients {
    runtime: RuntimeServiceClient<Channel>,
}

impl Clients {
    async fn run_pod(&mut self, config: PodSandboxConfig) -> Result<Pod> {
        let id = self
            .runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .context("RunPodSandbox")?
            .into_inner()
            .pod_sandbox_id;
        Ok(Pod {
            id,
            config,
            containers: Vec::new(),
        })
    }

    /// CreateContainer + StartContainer, then waits until ContainerStatus says running.
    async fn start_container(&mut self, pod: &mut Pod, image: &str, name: &str) -> Result<()> {
        let id = self
            .runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: pod.id.clone(),
                config: Some(container_config(&pod.config, image, name)),
                sandbox_config: Some(pod.config.clone()),
            })
            .await
            .context("CreateContainer")?
            .into_inner()
            .container_id;
        pod.containers.push(id.clone());
        self.runtime
            .start_container(StartContainerRequest {
                container_id: id.clone(),
            })
            .await
            .context("StartContainer")?;
        self.wait_running(&id).await
    }

    async fn wait_running(&mut self, id: &str) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = self
                .runtime
                .container_status(ContainerStatusRequest {
                    container_id: id.to_owned(),
                    verbose: false,
                })
                .await
                .context("ContainerStatus")?
                .into_inner()
                .status
                .context("ContainerStatus without status")?;
            if status.state == ContainerState::ContainerRunning as i32 {
                return Ok(());
            }
            if status.state == ContainerState::ContainerExited as i32 {
                bail!(
                    "container exited: code {} reason {} {}",
                    status.exit_code,
                    status.reason,
                    status.message
                );
            }
            if Instant::now() > deadline {
                bail!("container {id} not running after 60 s");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    async fn stop_remove_pod(&mut self, id: &str) -> Result<()> {
        self.runtime
            .stop_pod_sandbox(StopPodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            })
            .await
            .context("StopPodSandbox")?;
        self.runtime
            .remove_pod_sandbox(RemovePodSandboxRequest {
                pod_sandbox_id: id.to_owned(),
            })
            .await
            .context("RemovePodSandbox")?;
        Ok(())
    }

    async fn stop_remove_container(&mut self, id: &str) -> Result<()> {
        self.runtime
            .stop_container(StopContainerRequest {
                container_id: id.to_owned(),
                timeout: 0,
            })
            .await
            .context("StopContainer")?;
        self.runtime
            .remove_container(RemoveContainerRequest {
                container_id: id.to_owned(),
            })
            .await
            .context("RemoveContainer")?;
        Ok(())
    }

    /// A full pod start: sandbox plus one container until running.
    async fn full_pod(&mut self, config: PodSandboxConfig, image: &str) -> Result<Pod> {
        let mut pod = self.run_pod(config).await?;
        if let Err(e) = self.start_container(&mut pod, image, "sleeper").await {
            let _ = self.stop_remove_pod(&pod.id).await;
            return Err(e);
        }
        Ok(pod)
    }
}

/// The full text of `err` for the notes: the outermost context, then the gRPC code and message
/// when the error is a CRI answer.
fn detail(runtime: &str, err: &anyhow::Error) -> String {
    match err.chain().find_map(|e| e.downcast_ref::<tonic::Status>()) {
        Some(s) => {
            let outer = err.to_string();
            let what = if outer == s.to_string() {
                String::new()
            } else {
                format!("{outer}: ")
            };
            format!("{runtime}: {what}{:?}: {}", s.code(), s.message())
        }
        None => format!("{runtime}: {err:#}"),
    }
}

/// The reason a figure is n/a for `runtime` after `err`.
fn reason(runtime: &str, err: &anyhow::Error) -> String {
    if let Some(s) = err.chain().find_map(|e| e.downcast_ref::<tonic::Status>()) {
        if s.code() == tonic::Code::Unimplemented {
            return format!("{runtime}: Unimplemented");
        }
        let mut msg: String = s.message().chars().take(80).collect();
        if s.message().chars().count() > 80 {
            msg.push('…');
        }
        return format!("{runtime}: {:?}: {msg}", s.code());
    }
    let text = format!("{err:#}");
    let mut msg: String = text.chars().take(80).collect();
    if text.chars().count() > 80 {
        msg.push('…');
    }
    format!("{runtime}: {msg}")
}

// ---------------------------------------------------------------------------------------------
// The bench

/// One run: both targets, the images, the counters and the results.
struct Bench {
    opts: Options,
    targets: Vec<Target>,
    images: Images,
    counter: Counter,
    results: Results,
    /// Peers that do not run, and why; and what the run found on the node before it began.
    skipped: Vec<String>,
    /// The large image's layer blobs on disk, for the `tar -x` baseline.
    large_layers: Vec<PathBuf>,
    /// A scratch directory.
    work: PathBuf,
}

/// What one A/B step measures.
#[derive(Debug, Clone, Copy)]
enum Step {
    Pull,
    /// The 5-layer image of ~170 MB.
    PullMulti,
    Sandbox {
        userns: bool,
    },
    /// A sandbox on the host's network: RunPodSandbox without CNI.
    HostSandbox,
    Container {
        userns: bool,
    },
    FullPod {
        userns: bool,
        image: PodImage,
    },
}

/// The image of a full pod start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PodImage {
    /// The 20-file busybox image.
    Small,
    /// The 20k-file image.
    Large,
    /// The 20-layer image.
    Shallow,
    /// The 128-layer image.
    Deep,
}

impl PodImage {
    const ALL: [PodImage; 4] = [
        PodImage::Small,
        PodImage::Large,
        PodImage::Shallow,
        PodImage::Deep,
    ];
}

impl Step {
    /// The figures this step records, the first one gating the step.
    fn figures(self) -> Vec<(&'static str, Unit)> {
        match self {
            Step::Pull => vec![(F_PULL, Unit::Millis)],
            Step::PullMulti => vec![(F_PULL_MULTI, Unit::Millis)],
            Step::Sandbox { userns: false } => {
                vec![(F_RUN, Unit::Millis), (F_STOPRM, Unit::Millis)]
            }
            Step::Sandbox { userns: true } => vec![(F_RUN_USERNS, Unit::Millis)],
            Step::HostSandbox => vec![(F_RUN_HOST, Unit::Millis)],
            Step::Container { userns: false } => vec![(F_CTR, Unit::Millis)],
            Step::Container { userns: true } => vec![(F_CTR_USERNS, Unit::Millis)],
            Step::FullPod { userns, image } => {
                let name = match (userns, image) {
                    (false, PodImage::Small) => F_POD,
                    (false, PodImage::Large) => F_POD_LARGE,
                    (false, PodImage::Shallow) => F_POD_SHALLOW,
                    (false, PodImage::Deep) => F_POD_DEEP,
                    (true, PodImage::Small) => F_POD_USERNS,
                    (true, PodImage::Large) => F_POD_USERNS_LARGE,
                    (true, PodImage::Shallow) => F_POD_USERNS_SHALLOW,
                    (true, PodImage::Deep) => F_POD_USERNS_DEEP,
                };
                vec![(name, Unit::Millis)]
            }
        }
    }

    fn userns(self) -> bool {
        matches!(
            self,
            Step::Sandbox { userns: true }
                | Step::Container { userns: true }
                | Step::FullPod { userns: true, .. }
        )
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Bench {
    fn clients(&self, t: usize) -> Clients {
        Clients {
            runtime: self.targets[t].runtime.clone(),
        }
    }

    /// Whether target `t` can run `step`; marks its figures n/a when it cannot.
    fn gate(&mut self, t: usize, step: Step) -> bool {
        let figures = step.figures();
        if self.results.is_na(figures[0].0, t) {
            return false;
        }
        let target = &self.targets[t];
        if step.userns() && target.daemon.kind != Kind::Crius && !target.userns {
            let why = format!(
                "{}: no user namespace support in Status",
                target.daemon.kind.name()
            );
            for (f, u) in figures {
                self.results.fail(f, u, t, why.clone(), why.clone());
            }
            return false;
        }
        true
    }

    /// One iteration of `step` on target `t`; returns a sample per figure of the step.
    async fn step(&mut self, t: usize, step: Step) -> Result<Vec<f64>> {
        let mut c = self.clients(t);
        match step {
            Step::Pull | Step::PullMulti => {
                let mut images = self.targets[t].images.clone();
                let spec = ImageSpec {
                    image: if matches!(step, Step::Pull) {
                        self.images.large.clone()
                    } else {
                        self.images.multi.clone()
                    },
                    ..Default::default()
                };
                // Not timed: make sure the image is absent (NotFound is fine).
                let _ = images
                    .remove_image(RemoveImageRequest {
                        image: Some(spec.clone()),
                    })
                    .await;
                // Not timed either: what earlier pulls of any runtime left unwritten goes to
                // disk now, so that no pull waits on another's writeback.
                settle_writeback();
                let start = Instant::now();
                images
                    .pull_image(PullImageRequest {
                        image: Some(spec),
                        ..Default::default()
                    })
                    .await
                    .context("PullImage")?;
                Ok(vec![ms(start.elapsed())])
            }
            Step::Sandbox { userns } => {
                let config = pod_config(&self.targets[t], self.counter.next(), userns)?;
                let start = Instant::now();
                let pod = c.run_pod(config).await?;
                let run = ms(start.elapsed());
                let start = Instant::now();
                c.stop_remove_pod(&pod.id).await?;
                let stop = ms(start.elapsed());
                Ok(if userns { vec![run] } else { vec![run, stop] })
            }
            Step::HostSandbox => {
                let mut config = pod_config(&self.targets[t], self.counter.next(), false)?;
                // On the host's network the pod shares the host's UTS namespace too: runc
                // refuses a hostname there.
                config.hostname.clear();
                if let Some(ns) = config
                    .linux
                    .as_mut()
                    .and_then(|l| l.security_context.as_mut())
                    .and_then(|s| s.namespace_options.as_mut())
                {
                    ns.network = NamespaceMode::Node as i32;
                }
                let start = Instant::now();
                let pod = c.run_pod(config).await?;
                let run = ms(start.elapsed());
                c.stop_remove_pod(&pod.id).await?;
                Ok(vec![run])
            }
            Step::Container { userns } => {
                // The sandbox lives for the whole figure (removed after it): one per figure.
                if self.targets[t].container_pod.is_none() {
                    let config = pod_config(&self.targets[t], self.counter.next(), userns)?;
                    let pod = c.run_pod(config).await?;
                    self.targets[t].container_pod = Some(pod);
                }
                let mut pod = self.targets[t]
                    .container_pod
                    .clone()
                    .context("container pod")?;
                let name = format!("c{}", self.counter.next());
                let start = Instant::now();
                let result = c.start_container(&mut pod, &self.images.small, &name).await;
                let elapsed = ms(start.elapsed());
                if let Some(id) = pod.containers.pop() {
                    let _ = c.stop_remove_container(&id).await;
                }
                result?;
                Ok(vec![elapsed])
            }
            Step::FullPod { userns, image } => {
                let config = pod_config(&self.targets[t], self.counter.next(), userns)?;
                let image = match image {
                    PodImage::Small => self.images.small.clone(),
                    PodImage::Large => self.images.large.clone(),
                    PodImage::Shallow => self.images.shallow.clone(),
                    PodImage::Deep => self.images.deep.clone(),
                };
                let start = Instant::now();
                let pod = c.full_pod(config, &image).await?;
                let elapsed = ms(start.elapsed());
                c.stop_remove_pod(&pod.id).await?;
                Ok(vec![elapsed])
            }
        }
    }

    /// Runs `step` on both targets, alternating which goes first, with warm-up.
    async fn ab(&mut self, step: Step, iterations: usize) {
        let figures = step.figures();
        // A pull is long and the page cache is warm after one: one warm-up is enough.
        let warmup = match step {
            Step::Pull | Step::PullMulti => self.opts.plan.warmup.min(1),
            _ => self.opts.plan.warmup,
        };
        eprintln!(
            "crius-bench: {} ({} warm-up + {iterations} iterations)",
            figures.iter().map(|f| f.0).collect::<Vec<_>>().join(" / "),
            warmup
        );
        let total = warmup + iterations;
        for i in 0..total {
            let order: Vec<usize> = if i % 2 == 0 {
                (0..self.targets.len()).collect()
            } else {
                (0..self.targets.len()).rev().collect()
            };
            for t in order {
                if !self.gate(t, step) {
                    continue;
                }
                let name = self.targets[t].name();
                match self.step(t, step).await {
                    Ok(samples) if i >= warmup => {
                        for ((f, u), v) in figures.iter().zip(samples) {
                            self.results.record(f, *u, t, v);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        let why = reason(name, &e);
                        eprintln!("crius-bench:   {}", detail(name, &e));
                        for (f, u) in &figures {
                            self.results.fail(f, *u, t, why.clone(), detail(name, &e));
                        }
                    }
                }
            }
        }
        // The container figure's sandbox is not needed after its figure.
        for t in 0..self.targets.len() {
            if let Some(pod) = self.targets[t].container_pod.take() {
                let _ = self.clients(t).stop_remove_pod(&pod.id).await;
            }
        }
    }

    /// Pulls `image` on every target, untimed. A failure marks nothing: the figures that need
    /// the image fail on their own with the runtime's answer.
    async fn prepull(&mut self, image: &str) {
        for t in &mut self.targets {
            if let Err(e) = t
                .images
                .pull_image(PullImageRequest {
                    image: Some(ImageSpec {
                        image: image.to_owned(),
                        ..Default::default()
                    }),
                    ..Default::default()
                })
                .await
            {
                eprintln!(
                    "crius-bench:   {}: PullImage {image}: {:?}: {}",
                    t.name(),
                    e.code(),
                    e.message()
                );
            }
        }
    }

    /// Daemon RSS (VmRSS) in MiB, recorded under `figure`.
    fn record_rss(&mut self, figure: &str) {
        self.record_memory(figure, "VmRSS:");
    }

    /// The daemon's `field` of `/proc/PID/status` in MiB, recorded under `figure`.
    fn record_memory(&mut self, figure: &str, field: &str) {
        for t in 0..self.targets.len() {
            let pid = self.targets[t].daemon.pid();
            match pid.and_then(|p| proc_kib(p as i32, "status", field)) {
                Some(kib) => self
                    .results
                    .record(figure, Unit::Mebibytes, t, kib as f64 / 1024.0),
                None => {
                    let why = format!("{}: daemon not running", self.targets[t].name());
                    self.results
                        .fail(figure, Unit::Mebibytes, t, why.clone(), why);
                }
            }
        }
    }

    /// A many-pods phase: `rounds` rounds of starting the pods on each runtime at once (wall
    /// time), memory and (with containers) list/status latencies on the last round, then
    /// stopping and removing them all at once.
    async fn many(&mut self, figs: &ManyFigures, rounds: usize) {
        let pods = figs.pods;
        eprintln!(
            "crius-bench: {} ({rounds} rounds), memory{}",
            figs.start,
            if figs.list.is_some() {
                ", list/status"
            } else {
                ""
            }
        );
        for round in 0..rounds {
            let last = round + 1 == rounds;
            let all: Vec<usize> = if round % 2 == 0 {
                (0..self.targets.len()).collect()
            } else {
                (0..self.targets.len()).rev().collect()
            };
            // At the density of the list/status figures one runtime's pods at a time: another
            // runtime's hundreds of pods (and its daemon's background work) would be measured
            // too.
            let groups: Vec<Vec<usize>> = if figs.list.is_some() {
                all.iter().map(|t| vec![*t]).collect()
            } else {
                vec![all]
            };
            for order in groups {
                for &t in &order {
                    if self.results.is_na(&figs.start, t) {
                        continue;
                    }
                    let mut set = tokio::task::JoinSet::new();
                    let image = self.images.small.clone();
                    let start = Instant::now();
                    for _ in 0..pods {
                        let config = match pod_config(&self.targets[t], self.counter.next(), false)
                        {
                            Ok(c) => c,
                            Err(e) => {
                                eprintln!("crius-bench: pod config: {e:#}");
                                continue;
                            }
                        };
                        let mut c = self.clients(t);
                        let image = image.clone();
                        let containers = figs.containers;
                        set.spawn(async move {
                            if containers {
                                c.full_pod(config, &image).await
                            } else {
                                c.run_pod(config).await
                            }
                        });
                    }
                    let (pods, first_error) = join_all(set).await;
                    self.targets[t].many.extend(pods);
                    let wall = start.elapsed().as_secs_f64();
                    let name = self.targets[t].name();
                    match first_error {
                        None => self.results.record(&figs.start, Unit::Seconds, t, wall),
                        Some(e) => {
                            eprintln!("crius-bench:   {}", detail(name, &e));
                            for (f, u) in figs.all() {
                                self.results
                                    .fail(&f, u, t, reason(name, &e), detail(name, &e));
                            }
                        }
                    }
                }
                if last {
                    self.memory(&figs.rss, &figs.pss, &figs.pss_all).await;
                    if let Some(list) = &figs.list {
                        self.list_status(list).await;
                    }
                }
                for &t in &order {
                    let made = std::mem::take(&mut self.targets[t].many);
                    if made.is_empty() {
                        continue;
                    }
                    let start = Instant::now();
                    let mut set = tokio::task::JoinSet::new();
                    for pod in made {
                        let mut c = self.clients(t);
                        set.spawn(async move { c.stop_remove_pod(&pod.id).await });
                    }
                    let mut first_error = None;
                    while let Some(joined) = set.join_next().await {
                        if let Ok(Err(e)) = joined {
                            first_error.get_or_insert(e);
                        }
                    }
                    let wall = start.elapsed().as_secs_f64();
                    let name = self.targets[t].name();
                    match first_error {
                        None => self.results.record(&figs.stop, Unit::Seconds, t, wall),
                        Some(e) => self.results.fail(
                            &figs.stop,
                            Unit::Seconds,
                            t,
                            reason(name, &e),
                            detail(name, &e),
                        ),
                    }
                }
            }
        }
    }

    /// Starts `figs.pods` user-namespaced pods (sandbox + one container each) on each runtime
    /// in turn from [`USERNS_CLIENTS`] clients working through them together; records the wall
    /// time until all run, every RunPodSandbox, the slowest one and the daemon's RSS, then
    /// removes them (untimed).
    async fn userns_pods(&mut self, figs: &UsernsFigures) {
        for t in 0..self.targets.len() {
            let target = &self.targets[t];
            if target.daemon.kind != Kind::Crius && !target.userns {
                let why = format!("{}: no user namespace support in Status", target.name());
                for (f, u) in figs.all() {
                    self.results.fail(&f, u, t, why.clone(), why.clone());
                }
                continue;
            }
            let mut configs = Vec::new();
            for _ in 0..figs.pods {
                match pod_config(&self.targets[t], self.counter.next(), true) {
                    Ok(c) => configs.push(c),
                    Err(e) => eprintln!("crius-bench: pod config: {e:#}"),
                }
            }
            let queue = std::sync::Arc::new(std::sync::Mutex::new(configs));
            let image = self.images.small.clone();
            let start = Instant::now();
            let mut set = tokio::task::JoinSet::new();
            for _ in 0..USERNS_CLIENTS {
                let (queue, image, mut c) = (queue.clone(), image.clone(), self.clients(t));
                set.spawn(async move {
                    let mut made: Vec<(Pod, f64)> = Vec::new();
                    loop {
                        let next = queue.lock().map(|mut q| q.pop()).unwrap_or(None);
                        let Some(config) = next else {
                            return Ok::<_, anyhow::Error>(made);
                        };
                        let started = Instant::now();
                        let mut pod = c.run_pod(config).await?;
                        let run = ms(started.elapsed());
                        let started = c.start_container(&mut pod, &image, "app").await;
                        made.push((pod, run));
                        started?;
                    }
                });
            }
            let (batches, first_error) = join_all(set).await;
            let made: Vec<(Pod, f64)> = batches.into_iter().flatten().collect();
            let wall = start.elapsed().as_secs_f64();
            let name = self.targets[t].name();
            match first_error {
                None => {
                    self.results.record(&figs.wall, Unit::Seconds, t, wall);
                    for (_, run) in &made {
                        self.results.record(&figs.run, Unit::Millis, t, *run);
                    }
                    let slowest = made.iter().map(|(_, r)| *r).fold(0.0, f64::max);
                    self.results.record(&figs.slowest, Unit::Millis, t, slowest);
                    self.record_rss_one(t, &figs.rss);
                }
                Some(e) => {
                    for (f, u) in figs.all() {
                        self.results
                            .fail(&f, u, t, reason(name, &e), detail(name, &e));
                    }
                }
            }
            let mut set = tokio::task::JoinSet::new();
            for (pod, _) in made {
                let mut c = self.clients(t);
                set.spawn(async move { c.stop_remove_pod(&pod.id).await });
            }
            while set.join_next().await.is_some() {}
        }
    }

    /// Daemon RSS with the pods running, and per-pod PSS of the runtime's per-pod processes.
    async fn memory(&mut self, f_rss: &str, f_pss: &str, f_pss_all: &str) {
        let procs = processes();
        for t in 0..self.targets.len() {
            if self.targets[t].many.is_empty() {
                continue;
            }
            self.record_rss_one(t, f_rss);
            let pods = self.targets[t].many.clone();
            let kind = self.targets[t].daemon.kind;
            let socket = self.targets[t].daemon.socket.display().to_string();
            for pod in &pods {
                let info = self.targets[t]
                    .runtime
                    .pod_sandbox_status(PodSandboxStatusRequest {
                        pod_sandbox_id: pod.id.clone(),
                        verbose: true,
                    })
                    .await
                    .map(|r| r.into_inner().info)
                    .unwrap_or_default();
                let (agent, sandbox) = match kind {
                    Kind::Crius => (
                        info_pid(&info, "monitorPid")
                            .or_else(|| find_process(&procs, &["monitor", &pod.id])),
                        info_pid(&info, "sandboxPid"),
                    ),
                    Kind::Containerd | Kind::Containerd2 => (
                        find_process(&procs, &["containerd-shim", &pod.id, &socket]),
                        info_pid(&info, "pid"),
                    ),
                };
                let who = match kind {
                    Kind::Crius => "pod monitor",
                    Kind::Containerd | Kind::Containerd2 => "shim",
                };
                match agent.and_then(pss_kib) {
                    Some(a) => {
                        self.results
                            .record(f_pss, Unit::Mebibytes, t, a as f64 / 1024.0);
                        match sandbox.and_then(pss_kib) {
                            Some(s) => self.results.record(
                                f_pss_all,
                                Unit::Mebibytes,
                                t,
                                (a + s) as f64 / 1024.0,
                            ),
                            None => {
                                let why = format!(
                                    "{}: sandbox pid not in verbose PodSandboxStatus",
                                    kind.name()
                                );
                                self.results
                                    .fail(f_pss_all, Unit::Mebibytes, t, why.clone(), why);
                            }
                        }
                    }
                    None => {
                        let why = format!("{}: {who} process not found", kind.name());
                        self.results
                            .fail(f_pss, Unit::Mebibytes, t, why.clone(), why.clone());
                        self.results
                            .fail(f_pss_all, Unit::Mebibytes, t, why.clone(), why);
                    }
                }
            }
        }
    }

    fn record_rss_one(&mut self, t: usize, figure: &str) {
        if let Some(kib) = self.targets[t].daemon.pid().and_then(|p| rss_kib(p as i32)) {
            self.results
                .record(figure, Unit::Mebibytes, t, kib as f64 / 1024.0);
        }
    }

    /// Adds a second container to every pod, then times ListPodSandbox, PodSandboxStatus,
    /// ListContainers, ContainerStatus and ListContainerStats, alternating runtimes in batches
    /// of ten calls; then the CPU of a kubelet-like relist loop.
    async fn list_status(&mut self, figs: &ListFigures) {
        for t in 0..self.targets.len() {
            if self.targets[t].many.is_empty() {
                continue;
            }
            let pods = std::mem::take(&mut self.targets[t].many);
            let mut set = tokio::task::JoinSet::new();
            for mut pod in pods {
                let mut c = self.clients(t);
                let image = self.images.small.clone();
                set.spawn(async move {
                    let r = c.start_container(&mut pod, &image, "second").await;
                    (pod, r)
                });
            }
            let mut first_error = None;
            while let Some(joined) = set.join_next().await {
                if let Ok((pod, r)) = joined {
                    if let Err(e) = r {
                        first_error.get_or_insert(e);
                    }
                    self.targets[t].many.push(pod);
                }
            }
            if let Some(e) = first_error {
                let name = self.targets[t].name();
                for (f, u) in figs.all() {
                    self.results
                        .fail(&f, u, t, reason(name, &e), detail(name, &e));
                }
            }
        }
        let ids: Vec<Vec<String>> = self
            .targets
            .iter()
            .map(|t| t.many.iter().flat_map(|p| p.containers.clone()).collect())
            .collect();
        let pod_ids: Vec<Vec<String>> = self
            .targets
            .iter()
            .map(|t| t.many.iter().map(|p| p.id.clone()).collect())
            .collect();
        let batches = self.opts.plan.calls.div_ceil(10);
        for b in 0..batches {
            for i in 0..self.targets.len() {
                let t = if b % 2 == 0 {
                    i
                } else {
                    self.targets.len() - 1 - i
                };
                if ids[t].is_empty() || self.results.is_na(&figs.list, t) {
                    continue;
                }
                let mut rt = self.targets[t].runtime.clone();
                for k in 0..10 {
                    let n = b * 10 + k;
                    // Each call's time is taken as it returns, before the next call starts.
                    let mut timed: Vec<(&str, f64, Result<(), tonic::Status>)> = Vec::new();
                    let start = Instant::now();
                    let r = rt
                        .list_pod_sandbox(ListPodSandboxRequest { filter: None })
                        .await
                        .map(drop);
                    timed.push((&figs.list_pods, ms(start.elapsed()), r));
                    let start = Instant::now();
                    let r = rt
                        .pod_sandbox_status(PodSandboxStatusRequest {
                            pod_sandbox_id: pod_ids[t][n % pod_ids[t].len()].clone(),
                            verbose: false,
                        })
                        .await
                        .map(drop);
                    timed.push((&figs.pod_status, ms(start.elapsed()), r));
                    let start = Instant::now();
                    let r = rt
                        .list_containers(ListContainersRequest { filter: None })
                        .await
                        .map(drop);
                    timed.push((&figs.list, ms(start.elapsed()), r));
                    let start = Instant::now();
                    let r = rt
                        .container_status(ContainerStatusRequest {
                            container_id: ids[t][n % ids[t].len()].clone(),
                            verbose: false,
                        })
                        .await
                        .map(drop);
                    timed.push((&figs.status, ms(start.elapsed()), r));
                    // Stats are slower by nature: one call in ten.
                    if k == 0 {
                        let start = Instant::now();
                        let r = rt
                            .list_container_stats(ListContainerStatsRequest { filter: None })
                            .await
                            .map(drop);
                        timed.push((&figs.stats, ms(start.elapsed()), r));
                    }
                    let name = self.targets[t].name();
                    for (figure, elapsed, r) in timed {
                        match r {
                            Ok(()) => self.results.record(figure, Unit::Millis, t, elapsed),
                            Err(e) => {
                                let e = anyhow::Error::from(e);
                                self.results.fail(
                                    figure,
                                    Unit::Millis,
                                    t,
                                    reason(name, &e),
                                    detail(name, &e),
                                );
                            }
                        }
                    }
                }
            }
        }
        self.relist_cpu(figs).await;
    }

    /// The CPU the daemon and its per-pod processes spend while a client relists as kubelet's
    /// PLEG does (ListPodSandbox and ListContainers every second) and asks for stats every ten
    /// seconds (ListPodSandboxStats, ListContainerStats), in ms of CPU per second.
    async fn relist_cpu(&mut self, figs: &ListFigures) {
        let secs = self.opts.plan.relist_secs.max(1);
        for t in 0..self.targets.len() {
            if self.targets[t].many.is_empty() || self.results.is_na(&figs.list, t) {
                continue;
            }
            let mut pids = self.agent_pids(t).await;
            pids.extend(self.targets[t].daemon.pid().map(|p| p as i32));
            let mut rt = self.targets[t].runtime.clone();
            let before = cpu_ticks(&pids);
            let start = Instant::now();
            let mut failed = None;
            for second in 0..secs {
                let tick = start + Duration::from_secs(second);
                tokio::time::sleep_until(tick.into()).await;
                let lists = async {
                    rt.list_pod_sandbox(ListPodSandboxRequest { filter: None })
                        .await?;
                    rt.list_containers(ListContainersRequest { filter: None })
                        .await?;
                    if second % 10 == 0 {
                        rt.list_pod_sandbox_stats(ListPodSandboxStatsRequest { filter: None })
                            .await?;
                        rt.list_container_stats(ListContainerStatsRequest { filter: None })
                            .await?;
                    }
                    Ok::<(), tonic::Status>(())
                };
                if let Err(e) = lists.await {
                    failed = Some(e);
                    break;
                }
            }
            tokio::time::sleep_until((start + Duration::from_secs(secs)).into()).await;
            let used = cpu_ticks(&pids).saturating_sub(before);
            let name = self.targets[t].name();
            match failed {
                None => self.results.record(
                    &figs.relist_cpu,
                    Unit::CpuMsPerSec,
                    t,
                    ticks_ms(used) / secs as f64,
                ),
                Some(e) => {
                    let e = anyhow::Error::from(e);
                    self.results.fail(
                        &figs.relist_cpu,
                        Unit::CpuMsPerSec,
                        t,
                        reason(name, &e),
                        detail(name, &e),
                    );
                }
            }
        }
    }

    /// The per-pod processes of target `t`'s pods: crius' pod monitors, containerd's shims.
    async fn agent_pids(&mut self, t: usize) -> Vec<i32> {
        let procs = processes();
        let kind = self.targets[t].daemon.kind;
        let socket = self.targets[t].daemon.socket.display().to_string();
        let pods = self.targets[t].many.clone();
        let mut out = Vec::new();
        for pod in &pods {
            if let Some(pid) = self.agent_pid(t, kind, &procs, &socket, &pod.id).await {
                out.push(pid);
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }

    /// The pod monitor (crius) or shim (containerd) of pod `id`.
    async fn agent_pid(
        &mut self,
        t: usize,
        kind: Kind,
        procs: &[(i32, Vec<String>)],
        socket: &str,
        id: &str,
    ) -> Option<i32> {
        match kind {
            Kind::Crius => {
                let info = self.targets[t]
                    .runtime
                    .pod_sandbox_status(PodSandboxStatusRequest {
                        pod_sandbox_id: id.to_owned(),
                        verbose: true,
                    })
                    .await
                    .map(|r| r.into_inner().info)
                    .unwrap_or_default();
                info_pid(&info, "monitorPid").or_else(|| find_process(procs, &["monitor", id]))
            }
            Kind::Containerd | Kind::Containerd2 => {
                find_process(procs, &["containerd-shim", id, socket])
            }
        }
    }

    /// ExecSync latency (each call, back to back and at a probe's pace) and its CPU (daemon and
    /// the pod's own processes, children included, per call) on a running busybox container of
    /// each runtime, alternating.
    async fn exec_sync(&mut self) {
        let plan = self.opts.plan.clone();
        eprintln!(
            "crius-bench: {F_EXEC} ({} warm-up + {} batches of {})",
            plan.warmup, plan.iterations, plan.execs
        );
        let mut pods: Vec<Option<(Pod, Vec<i32>)>> = Vec::new();
        for t in 0..self.targets.len() {
            let mut c = self.clients(t);
            let made = async {
                let config = pod_config(&self.targets[t], self.counter.next(), false)?;
                c.full_pod(config, &self.images.small).await
            }
            .await;
            match made {
                Ok(pod) => {
                    let procs = processes();
                    let kind = self.targets[t].daemon.kind;
                    let socket = self.targets[t].daemon.socket.display().to_string();
                    let mut pids: Vec<i32> = self.targets[t]
                        .daemon
                        .pid()
                        .map(|p| p as i32)
                        .into_iter()
                        .collect();
                    pids.extend(self.agent_pid(t, kind, &procs, &socket, &pod.id).await);
                    pods.push(Some((pod, pids)));
                }
                Err(e) => {
                    let name = self.targets[t].name();
                    for (f, u) in [
                        (F_EXEC, Unit::Millis),
                        (F_EXEC_PACED, Unit::Millis),
                        (F_EXEC_CPU, Unit::Millis),
                    ] {
                        self.results
                            .fail(f, u, t, reason(name, &e), detail(name, &e));
                    }
                    pods.push(None);
                }
            }
        }
        for i in 0..plan.warmup + plan.iterations {
            let order: Vec<usize> = if i % 2 == 0 {
                (0..self.targets.len()).collect()
            } else {
                (0..self.targets.len()).rev().collect()
            };
            for t in order {
                let Some((pod, pids)) = pods[t].clone() else {
                    continue;
                };
                if self.results.is_na(F_EXEC, t) {
                    continue;
                }
                let mut rt = self.targets[t].runtime.clone();
                let before = cpu_ticks(&pids);
                let mut latencies = Vec::new();
                let mut failed = None;
                for _ in 0..plan.execs.max(1) {
                    let start = Instant::now();
                    let r = exec_true(&mut rt, &pod.containers[0]).await;
                    latencies.push(ms(start.elapsed()));
                    if let Err(e) = r {
                        failed = Some(e);
                        break;
                    }
                }
                let used = cpu_ticks(&pids).saturating_sub(before);
                let name = self.targets[t].name();
                if let Some(e) = failed {
                    for (f, u) in [(F_EXEC, Unit::Millis), (F_EXEC_CPU, Unit::Millis)] {
                        self.results
                            .fail(f, u, t, reason(name, &e), detail(name, &e));
                    }
                    continue;
                }
                if i >= plan.warmup {
                    for l in &latencies {
                        self.results.record(F_EXEC, Unit::Millis, t, *l);
                    }
                    self.results.record(
                        F_EXEC_CPU,
                        Unit::Millis,
                        t,
                        ticks_ms(used) / latencies.len() as f64,
                    );
                }
            }
        }
        // At a probe's pace: kubelet runs each exec probe every few seconds, so the node is
        // quiet between two calls and nothing a previous call left warm helps the next.
        eprintln!(
            "crius-bench: {F_EXEC_PACED} ({} iterations)",
            plan.iterations
        );
        for i in 0..plan.iterations {
            let order: Vec<usize> = if i % 2 == 0 {
                (0..self.targets.len()).collect()
            } else {
                (0..self.targets.len()).rev().collect()
            };
            for t in order {
                let Some((pod, _)) = &pods[t] else {
                    continue;
                };
                if self.results.is_na(F_EXEC_PACED, t) {
                    continue;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                let mut rt = self.targets[t].runtime.clone();
                let start = Instant::now();
                let r = exec_true(&mut rt, &pod.containers[0]).await;
                let elapsed = ms(start.elapsed());
                match r {
                    Ok(()) => self.results.record(F_EXEC_PACED, Unit::Millis, t, elapsed),
                    Err(e) => {
                        let name = self.targets[t].name();
                        self.results.fail(
                            F_EXEC_PACED,
                            Unit::Millis,
                            t,
                            reason(name, &e),
                            detail(name, &e),
                        );
                    }
                }
            }
        }
        for (t, pod) in pods.into_iter().enumerate() {
            if let Some((pod, _)) = pod {
                let _ = self.clients(t).stop_remove_pod(&pod.id).await;
            }
        }
    }

    /// Every figure, in order.
    async fn run(&mut self) -> Result<()> {
        let plan = self.opts.plan.clone();
        // The layer-count figures: a full pod start from the 20-layer and the 128-layer image,
        // plain and in a user namespace.
        let layer_steps: Vec<Step> = [false, true]
            .into_iter()
            .flat_map(|userns| {
                [PodImage::Shallow, PodImage::Deep].map(|image| Step::FullPod { userns, image })
            })
            .collect();
        if self.opts.layers_only {
            for s in &layer_steps {
                for (f, u) in s.figures() {
                    self.results.figure(f, u);
                }
            }
            eprintln!("crius-bench: pre-pulling the test images (untimed)");
            let pause = self.images.pause.clone();
            self.prepull(&pause).await;
            return self.layers(&layer_steps, plan.iterations).await;
        }
        if self.opts.density_only {
            let dense = ManyFigures::new(plan.density, true, true);
            for (f, u) in dense.all() {
                self.results.figure(&f, u);
            }
            let (small, pause) = (self.images.small.clone(), self.images.pause.clone());
            let userns = UsernsFigures::new(plan.density);
            for (f, u) in userns.all() {
                self.results.figure(&f, u);
            }
            self.prepull(&small).await;
            self.prepull(&pause).await;
            self.many(&dense, 1).await;
            self.userns_pods(&userns).await;
            return Ok(());
        }
        // Table order first, so the rows read the same however the run goes.
        let mut steps = vec![
            Step::PullMulti,
            Step::Pull,
            Step::Sandbox { userns: false },
            Step::Sandbox { userns: true },
            Step::HostSandbox,
            Step::Container { userns: false },
            Step::Container { userns: true },
        ];
        for userns in [false, true] {
            for image in PodImage::ALL {
                steps.push(Step::FullPod { userns, image });
            }
        }
        for s in steps {
            for (f, u) in s.figures() {
                self.results.figure(f, u);
            }
        }
        self.results.figure(F_EXEC, Unit::Millis);
        self.results.figure(F_EXEC_PACED, Unit::Millis);
        self.results.figure(F_EXEC_CPU, Unit::Millis);
        let full = ManyFigures::new(plan.pods, true, false);
        let dense = ManyFigures::new(plan.density, true, true);
        let userns = UsernsFigures::new(plan.density);
        let bare = ManyFigures::new(plan.pods, false, false);
        self.results.figure(F_RSS_IDLE, Unit::Mebibytes);
        self.results.figure(F_ANON_IDLE, Unit::Mebibytes);
        for (f, u) in full
            .all()
            .into_iter()
            .chain(dense.all())
            .chain(bare.all())
            .chain(userns.all())
        {
            self.results.figure(&f, u);
        }
        self.results.figure(F_RSS_END, Unit::Mebibytes);
        self.results.figure(F_ANON_END, Unit::Mebibytes);

        eprintln!("crius-bench: pre-pulling the test images (untimed)");
        let (small, pause) = (self.images.small.clone(), self.images.pause.clone());
        self.prepull(&small).await;
        self.prepull(&pause).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        self.record_rss(F_RSS_IDLE);
        self.record_memory(F_ANON_IDLE, "RssAnon:");

        self.ab(Step::PullMulti, plan.pulls).await;
        self.pull_floor(plan.pulls);
        let multi = self.images.multi.clone();
        self.remove_everywhere(&multi).await;
        // The 20k-file pull next: it leaves the large image pulled for the pod figures.
        self.ab(Step::Pull, plan.pulls).await;
        self.tar_baseline(plan.pulls);
        let large = self.images.large.clone();
        self.prepull(&large).await;
        self.ab(Step::Sandbox { userns: false }, plan.iterations)
            .await;
        self.ab(Step::Sandbox { userns: true }, plan.iterations)
            .await;
        self.ab(Step::HostSandbox, plan.iterations).await;
        self.ab(Step::Container { userns: false }, plan.iterations)
            .await;
        self.ab(Step::Container { userns: true }, plan.iterations)
            .await;
        for (userns, image) in [
            (false, PodImage::Small),
            (false, PodImage::Large),
            (true, PodImage::Small),
            (true, PodImage::Large),
        ] {
            self.ab(Step::FullPod { userns, image }, plan.iterations)
                .await;
        }
        self.exec_sync().await;
        self.many(&full, plan.rounds).await;
        self.many(&dense, 1).await;
        // Bare sandboxes: the per-pod cost of the runtime's own processes, which crius can
        // show before it runs containers.
        self.many(&bare, 1).await;
        self.userns_pods(&userns).await;
        // A few seconds for what the daemons free in the background (crius trims its heap
        // every two seconds).
        tokio::time::sleep(Duration::from_secs(3)).await;
        self.record_rss(F_RSS_END);
        self.record_memory(F_ANON_END, "RssAnon:");
        // Last, so the other figures (the idle RSS at the end too) run as they did before
        // these images existed.
        self.layers(&layer_steps, plan.iterations).await
    }

    /// Removes `image` from every runtime (untimed; failures ignored).
    async fn remove_everywhere(&mut self, image: &str) {
        for t in &mut self.targets {
            let _ = t
                .images
                .remove_image(RemoveImageRequest {
                    image: Some(ImageSpec {
                        image: image.to_owned(),
                        ..Default::default()
                    }),
                })
                .await;
        }
    }

    /// The layer-count figures: pulls the 20-layer and the 128-layer image (untimed), then
    /// times `steps`. A runtime that cannot pull or start an image has those figures n/a with
    /// its answer; the run goes on.
    async fn layers(&mut self, steps: &[Step], iterations: usize) -> Result<()> {
        let (shallow, deep) = (self.images.shallow.clone(), self.images.deep.clone());
        self.prepull(&shallow).await;
        self.prepull(&deep).await;
        for &s in steps {
            self.ab(s, iterations).await;
        }
        Ok(())
    }

    /// Times `curl URL | tar -xz` of the multi-layer image's layers, one after another, into an
    /// empty directory: the floor of a pull from this registry.
    fn pull_floor(&mut self, iterations: usize) {
        let dest = self.work.join("floor");
        for i in 0..=iterations {
            let _ = std::fs::remove_dir_all(&dest);
            if std::fs::create_dir_all(&dest).is_err() {
                return;
            }
            settle_writeback();
            let start = Instant::now();
            for url in &self.images.multi_urls {
                let ok = Command::new("sh")
                    .arg("-c")
                    .arg("curl -sf \"$1\" | tar -xzf - -C \"$2\"")
                    .arg("sh")
                    .arg(url)
                    .arg(&dest)
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    eprintln!("crius-bench: curl | tar -xz of {url} failed (is curl installed?)");
                    return;
                }
            }
            if i > 0 {
                self.results.pull_floor.push(ms(start.elapsed()));
            }
        }
        let _ = std::fs::remove_dir_all(&dest);
    }

    /// Times `tar -xf` of the large image's layers into an empty directory: unpacking with no
    /// runtime around it, next to the pull figure.
    fn tar_baseline(&mut self, iterations: usize) {
        let dest = self.work.join("untar");
        for i in 0..=iterations {
            let _ = std::fs::remove_dir_all(&dest);
            if std::fs::create_dir_all(&dest).is_err() {
                return;
            }
            settle_writeback();
            let start = Instant::now();
            for layer in &self.large_layers {
                let ok = Command::new("tar")
                    .arg("-xf")
                    .arg(layer)
                    .arg("-C")
                    .arg(&dest)
                    .status()
                    .is_ok_and(|s| s.success());
                if !ok {
                    eprintln!("crius-bench: tar -xf {} failed", layer.display());
                    return;
                }
            }
            if i > 0 {
                self.results.baseline.push(ms(start.elapsed()));
            }
        }
        let _ = std::fs::remove_dir_all(&dest);
    }

    /// Removes every pod and image on both runtimes over CRI (best effort).
    async fn cleanup_cri(&mut self) {
        for t in &mut self.targets {
            let mut rt = t.runtime.clone();
            if let Ok(list) = rt
                .list_pod_sandbox(ListPodSandboxRequest { filter: None })
                .await
            {
                let mut set = tokio::task::JoinSet::new();
                for pod in list.into_inner().items {
                    let mut c = Clients {
                        runtime: rt.clone(),
                    };
                    set.spawn(async move { c.stop_remove_pod(&pod.id).await });
                }
                while set.join_next().await.is_some() {}
            }
            if let Ok(list) = t
                .images
                .list_images(ListImagesRequest { filter: None })
                .await
            {
                for image in list.into_inner().images {
                    let _ = t
                        .images
                        .remove_image(RemoveImageRequest {
                            image: Some(ImageSpec {
                                image: image.id,
                                ..Default::default()
                            }),
                        })
                        .await;
                }
            }
        }
    }
}

/// ExecSync `/bin/true` in `container`: an error for a refused call or a non-zero exit.
async fn exec_true(rt: &mut RuntimeServiceClient<Channel>, container: &str) -> Result<()> {
    let r = rt
        .exec_sync(ExecSyncRequest {
            container_id: container.to_owned(),
            cmd: vec!["/bin/true".into()],
            timeout: 10,
        })
        .await?;
    match r.get_ref().exit_code {
        0 => Ok(()),
        code => bail!("exit code {code}"),
    }
}

/// A pid from a verbose status `info` map: any JSON value holding `key` at its top level.
fn info_pid(info: &std::collections::BTreeMap<String, String>, key: &str) -> Option<i32> {
    info.values().find_map(|v| {
        let json: serde_json::Value = serde_json::from_str(v).ok()?;
        let pid = json.get(key)?.as_i64()?;
        i32::try_from(pid).ok().filter(|p| *p > 0)
    })
}

/// The first process whose argv mentions every one of `needles`.
fn find_process(procs: &[(i32, Vec<String>)], needles: &[&str]) -> Option<i32> {
    procs
        .iter()
        .find(|(_, argv)| needles.iter().all(|n| argv.iter().any(|a| a.contains(n))))
        .map(|(pid, _)| *pid)
}

/// CPU clock ticks of `pids` and of their reaped children (utime, stime, cutime, cstime).
fn cpu_ticks(pids: &[i32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the command name, which may hold spaces: from the last ')'.
            let rest = &stat[stat.rfind(')')? + 2..];
            let fields: Vec<u64> = rest
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            // utime is field 14 of the line, index 11 after the state field.
            Some(fields.get(11..15)?.iter().sum::<u64>())
        })
        .sum()
}

/// Clock ticks in milliseconds.
fn ticks_ms(ticks: u64) -> f64 {
    // SAFETY: sysconf reads a configuration value; no memory is passed.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    ticks as f64 * 1000.0 / hz
}

/// A field of `/proc/PID/<file>` in kB.
fn proc_kib(pid: i32, file: &str, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// Waits for every task of `set`: what the successful ones returned, and the first failure.
async fn join_all<T: 'static>(
    mut set: tokio::task::JoinSet<Result<T>>,
) -> (Vec<T>, Option<anyhow::Error>) {
    let (mut done, mut first_error) = (Vec::new(), None);
    while let Some(joined) = set.join_next().await {
        match joined {
            Ok(Ok(value)) => done.push(value),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(anyhow::anyhow!("task: {e}"));
            }
        }
    }
    (done, first_error)
}

/// The CNI network of a run: its own name (which tells its pods' iptables chains from other
/// networks'), bridge, subnet and host-local state, so that it shares nothing with the node's
/// networks and nothing of it outlives the run unnoticed.
#[derive(Debug, Clone)]
struct BenchNetwork {
    name: String,
    bridge: String,
    subnet: String,
}

/// The network of this run, once made.
static NETWORK: std::sync::OnceLock<BenchNetwork> = std::sync::OnceLock::new();

impl BenchNetwork {
    /// A network named after this process, with a random bridge name and a random /21 of
    /// 10.128.0.0/9 (room for the three runtimes' 250 pods at once).
    fn new() -> Result<BenchNetwork> {
        let mut bytes = [0u8; 6];
        std::io::Read::read_exact(&mut std::fs::File::open("/dev/urandom")?, &mut bytes)?;
        Ok(BenchNetwork {
            name: format!("crius-bench-{}", std::process::id()),
            bridge: format!(
                "crb{:02x}{:02x}{:02x}{:02x}",
                bytes[0], bytes[1], bytes[2], bytes[3]
            ),
            subnet: format!("10.{}.{}.0/21", 128 + (bytes[4] & 0x7f), bytes[5] & 0xf8),
        })
    }

    /// Removes what pods of the network left (their nat chains) and its bridge; how many chains.
    fn remove(&self) -> usize {
        let leaked = remove_chains(&self.name);
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
        leaked
    }
}

/// `conflist` on network `net`: its name, every bridge plugin's bridge, and every host-local
/// IPAM's subnet, with that IPAM's state in `ipam_dir`.
fn own_network(conflist: &str, net: &BenchNetwork, ipam_dir: &Path) -> Result<String> {
    let mut conf: serde_json::Value = serde_json::from_str(conflist)?;
    let top = conf.as_object_mut().context("not a JSON object")?;
    top.insert("name".into(), net.name.clone().into());
    let plugins = top
        .get_mut("plugins")
        .and_then(serde_json::Value::as_array_mut)
        .context("no plugins")?;
    for plugin in plugins {
        if plugin.get("type").and_then(serde_json::Value::as_str) == Some("bridge") {
            plugin["bridge"] = net.bridge.clone().into();
        }
        if let Some(ipam) = plugin
            .get_mut("ipam")
            .and_then(serde_json::Value::as_object_mut)
            && ipam.get("type").and_then(serde_json::Value::as_str) == Some("host-local")
        {
            ipam.insert("dataDir".into(), ipam_dir.display().to_string().into());
            ipam.insert(
                "ranges".into(),
                serde_json::json!([[{ "subnet": net.subnet }]]),
            );
        }
    }
    Ok(serde_json::to_string_pretty(&conf)?)
}

/// The nat chains of `rules` (the nat table as [`nat_rules`] gives it) made for pods of network
/// `network` (`None`: of any network): chains holding a rule whose comment names the network
/// (bridge's), and chains such a rule jumps to (portmap's per-pod DNAT chains, jumped to from its
/// shared `CNI-HOSTPORT-DNAT`). portmap's shared `CNI-HOSTPORT-*` chains are never among them.
fn nat_chains(rules: &str, network: Option<&str>) -> Vec<String> {
    let mut chains: Vec<String> = Vec::new();
    for rule in rules.lines() {
        let words = shell_words(rule);
        if words.first().map(String::as_str) != Some("-A") {
            continue;
        }
        let Some(comment) = words
            .windows(2)
            .find(|w| w[0] == "--comment")
            .map(|w| w[1].as_str())
        else {
            continue;
        };
        let named = match network {
            Some(n) => comment.contains(&format!("name: \"{n}\" ")),
            None => comment.contains("name: \""),
        };
        if !named {
            continue;
        }
        let target = words
            .windows(2)
            .find(|w| w[0] == "-j")
            .map(|w| w[1].as_str());
        for chain in [words.get(1).map(String::as_str), target]
            .into_iter()
            .flatten()
        {
            if chain.starts_with("CNI-")
                && !chain.starts_with("CNI-HOSTPORT-")
                && !chains.iter().any(|c| c == chain)
            {
                chains.push(chain.to_owned());
            }
        }
    }
    chains
}

/// The nat table's rules as `iptables -S` prints them (empty when it cannot run).
fn nat_rules() -> String {
    Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default()
}

/// Removes the nat chains of network `network` and the rules jumping to them; how many.
fn remove_chains(network: &str) -> usize {
    let rules = nat_rules();
    let chains = nat_chains(&rules, Some(network));
    if chains.is_empty() {
        return 0;
    }
    for rule in rules.lines() {
        let words = shell_words(rule);
        let jumps = words
            .windows(2)
            .any(|w| w[0] == "-j" && chains.contains(&w[1]));
        if words.first().map(String::as_str) == Some("-A") && jumps {
            // The rule as iptables printed it, deleted by the same arguments.
            let mut args = vec!["-w".to_owned(), "-t".into(), "nat".into(), "-D".into()];
            args.extend(words.into_iter().skip(1));
            let _ = Command::new("iptables").args(&args).status();
        }
    }
    for chain in &chains {
        let _ = Command::new("iptables")
            .args(["-w", "-t", "nat", "-F", chain])
            .status();
        let _ = Command::new("iptables")
            .args(["-w", "-t", "nat", "-X", chain])
            .status();
    }
    chains.len()
}

/// Splits a rule as `iptables -S` prints it into its arguments: words, or double-quoted
/// strings with `\"` inside.
fn shell_words(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let (mut quoted, mut escaped, mut any) = (false, false, false);
    for c in line.chars() {
        match c {
            _ if escaped => {
                word.push(c);
                escaped = false;
            }
            '\\' if quoted => escaped = true,
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any || !word.is_empty() {
                    out.push(std::mem::take(&mut word));
                }
                any = false;
            }
            _ => word.push(c),
        }
    }
    if any || !word.is_empty() {
        out.push(word);
    }
    out
}

/// Writes every file system's dirty pages to disk (`sync`), outside any timed span.
fn settle_writeback() {
    let _ = Command::new("sync").status();
}

fn rss_kib(pid: i32) -> Option<u64> {
    proc_kib(pid, "status", "VmRSS:")
}

fn pss_kib(pid: i32) -> Option<u64> {
    proc_kib(pid, "smaps_rollup", "Pss:")
}

// ---------------------------------------------------------------------------------------------
// Setup

/// A ~20-entry busybox image: the directories, `/bin/busybox`, a few applet links, passwd and
/// group.
fn small_image() -> Result<Image> {
    let busybox = std::fs::read(image::BUSYBOX).with_context(|| {
        format!(
            "reading {} (apt-get install busybox-static)",
            image::BUSYBOX
        )
    })?;
    let mut entries = Vec::new();
    for d in [
        "bin", "dev", "etc", "proc", "root", "sys", "tmp", "usr", "var",
    ] {
        entries.push(Entry::dir(d, if d == "tmp" { 0o1777 } else { 0o755 }));
    }
    entries.push(Entry::file("bin/busybox", busybox, 0o755));
    for applet in ["sh", "sleep", "true", "cat", "ls", "id", "ps"] {
        entries.push(Entry::symlink(&format!("bin/{applet}"), "busybox"));
    }
    entries.push(Entry::file(
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
        0o644,
    ));
    entries.push(Entry::file(
        "etc/group",
        "root:x:0:\nnogroup:x:65534:\n",
        0o644,
    ));
    entries.push(Entry::file("etc/hostname", "bench\n", 0o644));
    Ok(Image::new(vec![Layer::new(&entries, Compression::Gzip)?]).with_cmd(&["sh"]))
}

/// The image of the multi-layer pull figure: 5 gzip layers of 64 files of 1 MiB each, every
/// file half random bytes and half text (about 2:1 compression, as real layers), ~170 MB.
fn multi_layer_image() -> Result<Image> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut layers = Vec::new();
    for l in 0..5 {
        let mut entries = vec![Entry::dir(&format!("data{l}"), 0o755)];
        for f in 0..64 {
            let mut data = Vec::with_capacity(1 << 20);
            while data.len() < 1 << 19 {
                // xorshift64: cheap bytes gzip cannot shrink.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                data.extend_from_slice(&state.to_le_bytes());
            }
            let mut line = 0u64;
            while data.len() < 1 << 20 {
                line += 1;
                data.extend_from_slice(
                    format!("layer {l} file {f} line {line}: the quick brown fox\n").as_bytes(),
                );
            }
            data.truncate(1 << 20);
            entries.push(Entry::file(&format!("data{l}/f{f:03}"), data, 0o644));
        }
        layers.push(Layer::new(&entries, Compression::Gzip)?);
    }
    Ok(Image::new(layers).with_cmd(&["sh"]))
}

/// A `depth`-layer image, built like the storage tests' `deep_image`: the bench's busybox
/// image plus `depth - 1` small gzip layers, layer `n` adding `/layers/NNN` and the topmost also
/// `/etc/motd`.
fn layered_image(depth: usize) -> Result<Image> {
    let mut image = small_image()?;
    for n in 1..depth {
        let mut entries = vec![Entry::file(
            &format!("layers/{n:03}"),
            format!("{n}\n"),
            0o644,
        )];
        if n == depth - 1 {
            entries.push(Entry::file("etc/motd", "top layer\n", 0o644));
        }
        image = image.with_layer(Layer::new(&entries, Compression::Gzip)?);
    }
    Ok(image)
}

/// The pause image for containerd: `pause.c` compiled with `gcc -static`, alone in one layer.
/// Falls back to the small busybox image running `sleep` when gcc or the source is missing.
fn pause_image(src: &Path, work: &Path) -> Result<(Image, &'static str)> {
    let out = work.join("pause");
    let built = Command::new("gcc")
        .args(["-static", "-O2", "-o"])
        .arg(&out)
        .arg(src)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if built {
        let bin = std::fs::read(&out)?;
        let layer = Layer::new(&[Entry::file("pause", bin, 0o755)], Compression::Gzip)?;
        return Ok((
            Image::new(vec![layer]).with_entrypoint(&["/pause"]),
            "gcc -static pause.c",
        ));
    }
    eprintln!(
        "crius-bench: cannot build {} with gcc -static: using busybox sleep as pause",
        src.display()
    );
    Ok((
        small_image()?.with_entrypoint(&["/bin/sleep", "2147483647"]),
        "busybox sleep (gcc failed)",
    ))
}

fn command_output(program: &str, args: &[&str]) -> String {
    Command::new(program)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default()
}

fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    let mem = proc_kib_file("/proc/meminfo", "MemTotal:").map_or(0, |k| k / 1024 / 1024);
    let kernel = command_output("uname", &["-r"]);
    format!("{cpu}, {cores} cores, {mem} GiB, Linux {kernel}")
}

fn proc_kib_file(path: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn now_utc() -> String {
    command_output("date", &["-u", "+%Y-%m-%d %H:%M UTC"])
}

async fn setup_and_run(bench_slot: &mut Option<Bench>, opts: &Options) -> Result<()> {
    let work = tempfile::Builder::new()
        .prefix("crius-bench-images-")
        .tempdir()?;
    eprintln!("crius-bench: starting the loopback registry and pushing the test images");
    let registry = Registry::start()?;
    let host = registry.host();
    let small = small_image()?;
    let large = image::large(LARGE_FILES)?;
    let mut large_layers = Vec::new();
    for (i, layer) in large.layers.iter().enumerate() {
        let path = work.path().join(format!("large-layer-{i}.tar.gz"));
        std::fs::write(&path, layer.blob())?;
        large_layers.push(path);
    }
    let (pause, pause_how) = pause_image(&opts.pause_src, work.path())?;
    eprintln!("crius-bench: making the 5-layer pull image");
    let multi = multi_layer_image()?;
    let images = Images {
        small: small.push(&host, "bench/small:20").await?.reference,
        large: large.push(&host, "bench/large:20k").await?.reference,
        shallow: layered_image(SHALLOW_LAYERS)?
            .push(&host, &format!("bench/layers:{SHALLOW_LAYERS}"))
            .await?
            .reference,
        deep: layered_image(DEEP_LAYERS)?
            .push(&host, &format!("bench/layers:{DEEP_LAYERS}"))
            .await?
            .reference,
        pause: pause.push(&host, "bench/pause:3.9").await?.reference,
        multi: multi.push(&host, "bench/multi:5").await?.reference,
        multi_urls: multi
            .layers
            .iter()
            .map(|l| format!("http://{host}/v2/bench/multi/blobs/{}", l.digest()))
            .collect(),
    };
    drop(multi);
    eprintln!("crius-bench: pause image from {pause_how}");

    // One CNI configuration directory for both runtimes.
    let cni_dir = work.path().join("net.d");
    std::fs::create_dir_all(&cni_dir)?;
    let conflist = match std::fs::read_to_string(&opts.conflist) {
        Ok(text) => text,
        Err(_) => {
            eprintln!(
                "crius-bench: {} missing: using the built-in bridge conflist",
                opts.conflist.display()
            );
            FALLBACK_CONFLIST.to_owned()
        }
    };
    // Before any pod of this run: every pod chain there is another network's.
    let foreign = nat_chains(&nat_rules(), None).len();
    let network = BenchNetwork::new().context("cannot read /dev/urandom")?;
    let network = NETWORK.get_or_init(|| network);
    let conflist = own_network(&conflist, network, &work.path().join("ipam"))
        .with_context(|| format!("{}: not a CNI conflist", opts.conflist.display()))?;
    std::fs::write(cni_dir.join("10-crius.conflist"), conflist)?;

    let mut daemons = vec![start_criusd(opts, &host, &cni_dir)?];
    let mut skipped = Vec::new();
    match &opts.containerd2 {
        Some(dir) => daemons.push(start_containerd(
            Kind::Containerd2,
            Some(dir),
            &host,
            &images.pause,
            &cni_dir,
        )?),
        None => skipped.push(format!(
            "{}: skipped, no `--containerd2 DIR` (integration/bench/README.md says how to build it)",
            Kind::Containerd2.name()
        )),
    }
    if opts.containerd16 {
        daemons.push(start_containerd(
            Kind::Containerd,
            None,
            &host,
            &images.pause,
            &cni_dir,
        )?);
    } else {
        skipped.push(format!(
            "{}: skipped (`--no-containerd16`)",
            Kind::Containerd.name()
        ));
    }
    if foreign > 0 {
        skipped.push(format!(
            "the node's nat table held {foreign} `CNI-` chains of other networks at the start \
             (the bridge plugin's iptables runs load them all)"
        ));
    }
    let mut targets = Vec::new();
    for daemon in daemons {
        targets.push(connect_target(daemon).await?);
    }
    *bench_slot = Some(Bench {
        opts: opts.clone(),
        results: Results {
            runtimes: targets.len(),
            ..Results::default()
        },
        targets,
        skipped,
        images,
        counter: Counter::default(),
        large_layers,
        work: work.path().to_path_buf(),
    });
    let bench = bench_slot.as_mut().context("bench")?;
    let outcome = bench.run().await;
    // The registry and image work dir live until the run ends (containerd may still pull).
    drop(registry);
    drop(work);
    outcome
}

fn header(opts: &Options, bench: &Bench) -> String {
    let plan = &opts.plan;
    let versions: Vec<String> = bench
        .targets
        .iter()
        .map(|t| format!("{} ({})", t.name(), t.version))
        .collect();
    let work = if opts.layers_only {
        "only the layer-count figures".to_owned()
    } else {
        format!(
            "{} pulls, {} concurrent pods × {} rounds, {} list/status calls",
            plan.pulls, plan.pods, plan.rounds, plan.calls
        )
    };
    let mut runc = vec![format!(
        "containerd 1.6 with Debian's {}",
        command_output("runc", &["--version"])
    )];
    if let Some(dir) = &opts.containerd2 {
        runc.insert(
            0,
            format!(
                "containerd 2 with {}",
                command_output(&dir.join("runc").display().to_string(), &["--version"])
            ),
        );
    }
    let skipped: String = bench.skipped.iter().map(|s| format!("- {s}\n")).collect();
    format!(
        "## crius vs containerd 2 and containerd 1.6 ({mode})\n\n\
         - date: {date}\n- machine: {machine}\n- runtimes: {versions}\n- {runc}\n{skipped}\
         - plan: {warm} warm-up + {it} iterations per latency figure, {work}; runtimes \
         alternate per iteration\n\
         - the last column is crius' median over that runtime's (below 1: crius is faster or \
         lighter)\n",
        mode = match (opts.quick, opts.layers_only) {
            (true, false) => "--quick",
            (false, false) => "default",
            (true, true) => "--quick --layers-only",
            (false, true) => "--layers-only",
        },
        date = now_utc(),
        machine = machine_description(),
        versions = versions.join(", "),
        runc = runc.join("; "),
        warm = plan.warmup,
        it = plan.iterations,
    )
}

fn main() {
    let outcome = parse_options().and_then(|opts| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(async_main(opts))
    });
    if let Err(e) = outcome {
        eprintln!("crius-bench: {e:#}");
        std::process::exit(1);
    }
}

async fn async_main(opts: Options) -> Result<()> {
    let started = Instant::now();
    let mut bench: Option<Bench> = None;
    let mut sigterm = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let outcome = tokio::select! {
        r = setup_and_run(&mut bench, &opts) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        _ = sigterm.recv() => Err(anyhow::anyhow!("terminated")),
    };
    let Some(mut bench) = bench else {
        return outcome;
    };
    let names: Vec<&str> = bench.targets.iter().map(Target::name).collect();
    let table = render(&bench.results, &names, &header(&opts, &bench));
    eprintln!("crius-bench: cleaning up");
    let cleanup = tokio::time::timeout(Duration::from_secs(120), bench.cleanup_cri());
    tokio::select! {
        _ = cleanup => {},
        _ = tokio::signal::ctrl_c() => eprintln!("crius-bench: interrupted again: stopping the daemons"),
    }
    for t in &mut bench.targets {
        t.daemon.teardown();
    }
    drop(bench);
    let mut table = table;
    let leaked = NETWORK.get().map_or(0, BenchNetwork::remove);
    if leaked > 0 {
        let line = format!(
            "\nAfter the run, {leaked} of the iptables chains of the bench's network were left (a \
             runtime failed to tear down a pod) and have been removed.\n"
        );
        eprint!("crius-bench:{line}");
        table.push_str(&line);
    }
    println!("{table}");
    if outcome.is_ok() {
        if let Some(parent) = opts.out.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&opts.out, &table)?;
        eprintln!(
            "crius-bench: wrote {} ({:.0} s)",
            opts.out.display(),
            started.elapsed().as_secs_f64()
        );
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_gets_its_own_network() {
        let net = BenchNetwork::new().unwrap();
        assert!(net.bridge.len() <= 15, "{net:?}");
        let conf = own_network(FALLBACK_CONFLIST, &net, Path::new("/w/ipam")).unwrap();
        let conf: serde_json::Value = serde_json::from_str(&conf).unwrap();
        assert_eq!(conf["name"], net.name);
        assert_eq!(conf["plugins"][0]["bridge"], net.bridge);
        assert_eq!(conf["plugins"][0]["ipam"]["dataDir"], "/w/ipam");
        assert_eq!(
            conf["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            net.subnet
        );
        assert_eq!(conf["plugins"][0]["ipam"]["routes"][0]["dst"], "0.0.0.0/0");
        assert!(conf["plugins"][1].get("ipam").is_none());
        assert!(own_network("[]", &net, Path::new("/w")).is_err());
    }

    #[test]
    fn rules_split_into_the_arguments_that_made_them() {
        let rule = r#"-A POSTROUTING -s 10.87.0.5/32 -m comment --comment "name: \"crius-bench-7\" id: \"ab\"" -j CNI-0123"#;
        assert_eq!(
            shell_words(rule),
            [
                "-A",
                "POSTROUTING",
                "-s",
                "10.87.0.5/32",
                "-m",
                "comment",
                "--comment",
                r#"name: "crius-bench-7" id: "ab""#,
                "-j",
                "CNI-0123"
            ]
        );
        assert_eq!(
            shell_words(r#"-A X --comment """#),
            ["-A", "X", "--comment", ""]
        );
    }
}
