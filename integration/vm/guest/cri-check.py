#!/usr/bin/python3
"""Checks the packaged criusd.service on a cgroup v2 only, systemd node, over its CRI socket.

Run inside the guest by guest/run.sh, as root, with Debian's python3-grpcio, after
generating the CRI stubs (api_pb2, api_pb2_grpc) from proto/api.proto into STUBS_DIR:

    cri-check.py STUBS_DIR IMAGE [--systemd]

IMAGE is a busybox image in a registry criusd may pull from. With --systemd, the service runs
with cgroup_driver = "systemd": pods get kubelet's systemd cgroup parents (slices) and the checks
look for their scope units. Prints one `ok` or `FAIL` line per check and exits non-zero if any
failed. Everything it makes is removed at the end.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, sys.argv[1])
import grpc  # noqa: E402
import api_pb2 as cri  # noqa: E402
import api_pb2_grpc  # noqa: E402

IMAGE = sys.argv[2]
SYSTEMD = "--systemd" in sys.argv[3:]
SOCKET = "unix:///run/crius/crius.sock"
failures = []
known = []


def check(ok, text, detail=""):
    print(("   ok   " if ok else "   FAIL ") + text + (f" ({detail})" if detail and not ok else ""))
    if not ok:
        failures.append(text)
    return ok


def known_issue(ok, text, note):
    """A check crius is known to fail: printed as KNOWN, listed at the end, not a failure."""
    print(("   ok   " if ok else "   KNOWN ") + text + ("" if ok else f" ({note})"))
    if not ok:
        known.append(text)
    return ok


def step(text):
    print(f"\n== {text}", flush=True)


def connect():
    # grpc's C core sends the socket path as :authority, which h2 refuses (see the README).
    channel = grpc.insecure_channel(SOCKET, options=[("grpc.default_authority", "localhost")])
    return api_pb2_grpc.RuntimeServiceStub(channel), api_pb2_grpc.ImageServiceStub(channel)


def wait_ready(rt, seconds=60):
    deadline = time.time() + seconds
    while True:
        try:
            return rt.Version(cri.VersionRequest(), timeout=5)
        except grpc.RpcError:
            if time.time() > deadline:
                raise
            time.sleep(0.5)


def read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        return f"<{e.strerror}>"


def sh(*args):
    return subprocess.run(args, capture_output=True, text=True).stdout.strip()


def run_pod(rt, name, uid, cgroup_parent, userns=False, resources=None):
    ns = cri.NamespaceOption()
    if userns:
        m = cri.IDMapping(host_id=65536 * 11, container_id=0, length=65536)
        ns.userns_options.CopyFrom(cri.UserNamespace(mode=cri.POD, uids=[m], gids=[m]))
    config = cri.PodSandboxConfig(
        metadata=cri.PodSandboxMetadata(name=name, uid=uid, namespace="default"),
        hostname=name,
        log_directory=f"/var/log/pods/default_{name}_{uid}",
        linux=cri.LinuxPodSandboxConfig(
            cgroup_parent=cgroup_parent,
            security_context=cri.LinuxSandboxSecurityContext(namespace_options=ns),
            resources=resources,
        ),
    )
    pod = rt.RunPodSandbox(cri.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
    return pod, config


def run_container(rt, pod, pod_config, name, command, resources=None, security=None):
    config = cri.ContainerConfig(
        metadata=cri.ContainerMetadata(name=name),
        image=cri.ImageSpec(image=IMAGE),
        command=["sh", "-c", command],
        log_path=f"{name}.log",
        linux=cri.LinuxContainerConfig(resources=resources, security_context=security),
    )
    cid = rt.CreateContainer(
        cri.CreateContainerRequest(pod_sandbox_id=pod, config=config, sandbox_config=pod_config),
        timeout=120,
    ).container_id
    rt.StartContainer(cri.StartContainerRequest(container_id=cid), timeout=120)
    return cid


def info(rt, cid):
    reply = rt.ContainerStatus(cri.ContainerStatusRequest(container_id=cid, verbose=True), timeout=30)
    return reply.status, json.loads(reply.info.get("info", "{}"))


def exec_(rt, cid, command):
    r = rt.ExecSync(cri.ExecSyncRequest(container_id=cid, cmd=["sh", "-c", command], timeout=30), timeout=60)
    return r.exit_code, r.stdout.decode().strip(), r.stderr.decode().strip()


def pod_parent(qos, uid):
    """The cgroup parent kubelet sends for a pod of QoS class qos ("" for Guaranteed): a
    cgroupfs path, or with the systemd driver the path of the pod's slice."""
    if not SYSTEMD:
        return "/kubepods" + (f"/{qos}" if qos else "") + f"/pod{uid}"
    escaped = uid.replace("-", "_")
    path, name = "/kubepods.slice", "kubepods"
    for part in ([qos] if qos else []) + [f"pod{escaped}"]:
        name = f"{name}-{part}"
        path = f"{path}/{name}.slice"
    return path


def pod_cgroup(parent, pod):
    """The pod's own cgroup below its parent: crius-<id>, or the scope unit crius-<id>.scope."""
    return f"{parent}/crius-{pod}" + (".scope" if SYSTEMD else "")


def unit(name, prop):
    return sh("systemctl", "show", "-P", prop, name)


def cgroup_of(pid):
    """The unified cgroup path of pid, from /proc (the one `0::` line on cgroup v2)."""
    for line in read(f"/proc/{pid}/cgroup").splitlines():
        if line.startswith("0::"):
            return line[3:]
    return ""


def main():
    step("the node: kernel, init, cgroups")
    print(f"   kernel {os.uname().release}; {sh('systemctl', '--version').splitlines()[0]}")
    check(sh("stat", "-fc", "%T", "/sys/fs/cgroup") == "cgroup2fs", "stat -fc %T /sys/fs/cgroup = cgroup2fs")
    v1 = [l for l in read("/proc/mounts").splitlines() if l.split()[2:3] == ["cgroup"]]
    check(not v1, "no cgroup v1 hierarchy is mounted (cgroup v2 only)", str(v1))
    check(os.path.basename(os.readlink("/proc/1/exe")) == "systemd", "PID 1 is systemd")
    print(f"   /sys/fs/cgroup/cgroup.subtree_control: {read('/sys/fs/cgroup/cgroup.subtree_control')}")

    step("the packaged service")
    check(sh("systemctl", "is-active", "criusd") == "active", "systemctl is-active criusd = active")
    unit_cg = sh("systemctl", "show", "-P", "ControlGroup", "criusd")
    print(f"   criusd.service's cgroup: {unit_cg}; ExecStart {sh('systemctl', 'show', '-P', 'ExecStart', 'criusd')[:60]}…")
    rt, img = connect()
    v = wait_ready(rt)
    check(v.runtime_name == "crius", f"{v.runtime_name} {v.runtime_version} answers CRI {v.runtime_api_version} on {SOCKET}")
    driver = rt.RuntimeConfig(cri.RuntimeConfigRequest(), timeout=10).linux.cgroup_driver
    want = cri.SYSTEMD if SYSTEMD else cri.CGROUPFS
    check(driver == want, f"RuntimeConfig: cgroup driver {cri.CgroupDriver.Name(driver)}",
          f"want {cri.CgroupDriver.Name(want)}")
    status = rt.Status(cri.StatusRequest(), timeout=10)
    conds = {c.type: c.status for c in status.status.conditions}
    check(conds.get("RuntimeReady") and conds.get("NetworkReady"), f"Status: {conds}")
    handler = [h for h in status.runtime_handlers if h.name == ""]
    check(bool(handler) and handler[0].features.user_namespaces, "the default runtime handler supports user namespaces")

    step(f"PullImage {IMAGE}")
    ref = img.PullImage(cri.PullImageRequest(image=cri.ImageSpec(image=IMAGE)), timeout=300).image_ref
    check(bool(ref), f"pulled as {ref[:19]}…")

    pods = []
    try:
        uid = "11111111-2222-3333-4444-555555555555"
        parent = pod_parent("burstable", uid)
        step(f"a pod with limits under a kubelet-style cgroup parent ({parent})")
        hugetlb = "hugetlb" in read("/sys/fs/cgroup/cgroup.controllers").split()
        pod_res = cri.LinuxContainerResources(cpu_period=100000, cpu_quota=200000, memory_limit_in_bytes=256 << 20)
        pod, pod_config = run_pod(rt, "limits", uid, parent, resources=pod_res)
        pods.append(pod)
        pod_dir = f"/sys/fs/cgroup{pod_cgroup(parent, pod)}"
        print(f"   the pod's cgroup {pod_dir} (its linux.resources):")
        for f, want in [("memory.max", str(256 << 20)), ("cpu.max", "200000 100000")]:
            got = read(f"{pod_dir}/{f}")
            check(got == want, f"{f} = {got}", f"want {want}")
        if SYSTEMD:
            scope = f"crius-{pod}.scope"
            slice_ = parent.rsplit("/", 1)[1]
            print("   systemctl status " + scope + ":\n" + "\n".join(
                "     " + l for l in sh("systemctl", "status", "--no-pager", "--lines=0", scope).splitlines()))
            check(unit(scope, "ActiveState") == "active" and unit(scope, "Slice") == slice_,
                  f"{scope} is an active unit in {slice_}", f"{unit(scope, 'ActiveState')} in {unit(scope, 'Slice')}")
            check(unit(scope, "Delegate") == "yes", f"{scope}: Delegate={unit(scope, 'Delegate')}")
            check(unit(scope, "ControlGroup") == pod_cgroup(parent, pod), f"{scope}: ControlGroup={unit(scope, 'ControlGroup')}")
            check(unit(scope, "MemoryMax") == str(256 << 20), f"{scope}: MemoryMax={unit(scope, 'MemoryMax')} (a unit property)")
            check(unit(scope, "CPUQuotaPerSecUSec") == "2s", f"{scope}: CPUQuotaPerSecUSec={unit(scope, 'CPUQuotaPerSecUSec')}")
            status = sh("systemctl", "status", "--no-pager", "--lines=0", scope)
            check("max: 256.0M" in status, "systemctl status shows the memory limit (max: 256.0M)")
            monitor = f"crius-monitor-{pod}.scope"
            check(unit(monitor, "ActiveState") == "active" and unit(monitor, "Slice") == "system.slice",
                  f"the pod's monitor runs in its own {monitor} in system.slice",
                  f"{unit(monitor, 'ActiveState')} in {unit(monitor, 'Slice')}")
        # What kubelet sends for a Burstable container on cgroup v2, and a little more.
        res = cri.LinuxContainerResources(
            cpu_period=100000, cpu_quota=50000, cpu_shares=512,
            memory_limit_in_bytes=64 << 20, memory_swap_limit_in_bytes=64 << 20,
            cpuset_cpus="0", cpuset_mems="0",
            hugepage_limits=[cri.HugepageLimit(page_size="2MB", limit=4 << 20)] if hugetlb else [],
            unified={"pids.max": "64", "memory.high": str(60 << 20), "memory.oom.group": "1"},
        )
        c1 = run_container(rt, pod, pod_config, "limited", "exec sleep 3600", resources=res)
        st, inf = info(rt, c1)
        check(st.state == cri.CONTAINER_RUNNING, "the container runs")
        pid = inf.get("pid")
        path = cgroup_of(pid)
        print(f"   container pid {pid}, /proc/{pid}/cgroup: 0::{path}")
        print(f"   verbose ContainerStatus cgroupDirs: {inf.get('cgroupDirs')}")
        check(path.startswith(parent + "/"), f"its cgroup is below the pod's parent {parent}")
        d = "/sys/fs/cgroup" + path
        print(f"   in {d}:")
        for f, want in [
            ("memory.max", str(64 << 20)), ("memory.swap.max", "0"), ("memory.high", str(60 << 20)),
            ("cpu.max", "50000 100000"), ("cpu.weight", "20"), ("pids.max", "64"),
            ("memory.oom.group", "1"), ("cpuset.cpus", "0"), ("cpuset.mems", "0"),
        ] + ([("hugetlb.2MB.max", str(4 << 20))] if hugetlb else []):
            got = read(f"{d}/{f}")
            check(got == want, f"{f} = {got}", f"want {want}")
        rc, out, err = exec_(rt, c1, "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max; cat /proc/self/cgroup")
        lines = out.splitlines()
        print(f"   inside: /sys/fs/cgroup/memory.max {lines[0] if lines else '?'}, cpu.max {lines[1] if len(lines) > 1 else '?'}, /proc/self/cgroup {lines[2:]}")
        check(rc == 0 and lines[:2] == [str(64 << 20), "50000 100000"], "the container sees its own limits at /sys/fs/cgroup", err)
        own_ns = os.readlink(f"/proc/{pid}/ns/cgroup")
        check(own_ns != os.readlink("/proc/self/ns/cgroup"), f"the container has its own cgroup namespace ({own_ns})")
        rc, out, _ = exec_(rt, c1, "readlink /proc/self/ns/cgroup")
        known_issue(out == own_ns and lines[2:] == ["0::/"],
                    f"an exec'd process is in that cgroup namespace too (its /proc/self/ns/cgroup: {out})",
                    "the exec helper joins mnt, net, ipc, uts and pid but not the cgroup namespace")
        rc, out, _ = exec_(rt, c1, "grep ' /sys/fs/cgroup ' /proc/self/mounts")
        check(" ro," in out, "/sys/fs/cgroup is mounted read-only inside", out)
        rt.UpdateContainerResources(cri.UpdateContainerResourcesRequest(
            container_id=c1, linux=cri.LinuxContainerResources(memory_limit_in_bytes=96 << 20, cpu_quota=80000, cpu_period=100000)), timeout=30)
        got = (read(f"{d}/memory.max"), read(f"{d}/cpu.max"))
        check(got == (str(96 << 20), "80000 100000"), f"UpdateContainerResources: memory.max {got[0]}, cpu.max {got[1]}")
        stats = rt.ContainerStats(cri.ContainerStatsRequest(container_id=c1), timeout=30).stats
        check(stats.memory.working_set_bytes.value > 0, f"ContainerStats: memory working set {stats.memory.working_set_bytes.value} bytes")
        check(stats.cpu.usage_core_nano_seconds.value > 0, f"ContainerStats: cpu {stats.cpu.usage_core_nano_seconds.value} ns")
        check(stats.cpu.HasField("psi") and stats.memory.HasField("psi"),
              f"ContainerStats: pressure stall information (cpu some avg10 {stats.cpu.psi.Some.Avg10:.2f})")

        step("OOM kill under cgroup v2 (memory.max 16 MiB, tail /dev/zero)")
        oom = run_container(rt, pod, pod_config, "oom", "exec tail /dev/zero",
                            resources=cri.LinuxContainerResources(memory_limit_in_bytes=16 << 20))
        deadline = time.time() + 120
        while True:
            st, _ = info(rt, oom)
            if st.state == cri.CONTAINER_EXITED or time.time() > deadline:
                break
            time.sleep(1)
        check(st.reason == "OOMKilled" and st.exit_code == 137, f"exited {st.exit_code}, reason {st.reason}")

        step("a hostUsers: false pod with supplementalGroupsPolicy Strict and limits")
        uid2 = "66666666-7777-8888-9999-000000000000"
        parent2 = pod_parent("", uid2)
        pod2, pod2_config = run_pod(rt, "userns", uid2, parent2, userns=True,
                                    resources=cri.LinuxContainerResources(memory_limit_in_bytes=128 << 20))
        pods.append(pod2)
        got = read(f"/sys/fs/cgroup{pod_cgroup(parent2, pod2)}/memory.max")
        check(got == str(128 << 20), f"the pod's cgroup: memory.max = {got} (its linux.resources)")
        sec = cri.LinuxContainerSecurityContext(
            run_as_user=cri.Int64Value(value=1000), run_as_group=cri.Int64Value(value=3000),
            supplemental_groups=[4000], supplemental_groups_policy=cri.Strict,
        )
        c2 = run_container(rt, pod2, pod2_config, "strict", "exec sleep 3600",
                           resources=cri.LinuxContainerResources(memory_limit_in_bytes=96 << 20, cpu_shares=256),
                           security=sec)
        st, inf2 = info(rt, c2)
        pid2 = inf2.get("pid")
        uid_map = " ".join(read(f"/proc/{pid2}/uid_map").split())
        check(uid_map == f"0 {65536 * 11} 65536", f"/proc/{pid2}/uid_map: {uid_map}")
        host_uid = [l.split()[1] for l in read(f"/proc/{pid2}/status").splitlines() if l.startswith("Uid:")]
        check(host_uid == [str(65536 * 11 + 1000)], f"the container's uid 1000 is host uid {host_uid}")
        rc, groups, _ = exec_(rt, c2, "id -G")
        check(groups == "3000 4000", f"id -G inside: {groups} (Strict)")
        d2 = "/sys/fs/cgroup" + cgroup_of(pid2)
        print(f"   its cgroup: {d2}")
        check(read(f"{d2}/memory.max") == str(96 << 20), f"memory.max = {read(d2 + '/memory.max')} on the host")
        rc, out, _ = exec_(rt, c2, "cat /sys/fs/cgroup/memory.max")
        check(out == str(96 << 20), f"inside the user-namespaced container: /sys/fs/cgroup/memory.max = {out}")
        check(d2.startswith(f"/sys/fs/cgroup{pod_cgroup(parent2, pod2)}/"), f"that cgroup is below the pod's {pod_cgroup(parent2, pod2)}")
        if SYSTEMD:
            tree = sh("systemctl", "status", "--no-pager", "--lines=0", f"crius-{pod2}.scope")
            print("   systemctl status crius-" + pod2[:12] + "….scope:\n" + "\n".join("     " + l for l in tree.splitlines()))
            check(f"crius-{c2}" in tree and "sleep 3600" in tree,
                  "systemctl status of the pod's scope shows the container's cgroup and process")
            check("max: 128.0M" in tree, "systemctl status of the pod's scope shows its memory limit (max: 128.0M)")

        step("systemctl restart criusd: pods and containers survive and are re-attached")
        before = {c: info(rt, c)[1].get("pid") for c in (c1, c2)}
        subprocess.run(["systemctl", "restart", "criusd"], check=True)
        rt, img = connect()
        wait_ready(rt)
        check(sh("systemctl", "is-active", "criusd") == "active", "criusd.service active again")
        for p in pods:
            s = rt.PodSandboxStatus(cri.PodSandboxStatusRequest(pod_sandbox_id=p), timeout=30).status
            check(s.state == cri.SANDBOX_READY, f"pod {p[:12]} still ready")
        for c, pid_before in before.items():
            st, inf = info(rt, c)
            check(st.state == cri.CONTAINER_RUNNING and inf.get("pid") == pid_before,
                  f"container {c[:12]} still running as pid {pid_before}")
        rc, out, _ = exec_(rt, c2, "cat /sys/fs/cgroup/memory.max")
        check(rc == 0 and out == str(96 << 20), "exec after the restart still works")
        if SYSTEMD:
            for p in pods:
                check(unit(f"crius-{p}.scope", "ActiveState") == "active" and unit(f"crius-monitor-{p}.scope", "ActiveState") == "active",
                      f"crius-{p[:12]}….scope and its monitor's scope are still active")
        if SYSTEMD:
            step("a monitor killed (SIGKILL): its pod's scope is still stopped by RemovePodSandbox")
            victim = pods[0]
            procs = read(f"/sys/fs/cgroup/system.slice/crius-monitor-{victim}.scope/cgroup.procs").split()
            check(len(procs) == 1, f"crius-monitor-{victim[:12]}….scope holds the monitor, pid {procs}")
            if procs:
                os.kill(int(procs[0]), 9)
            rt.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=victim), timeout=120)
            rt.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=victim), timeout=120)
            pods.remove(victim)
            time.sleep(1)
            check(unit(f"crius-{victim}.scope", "ActiveState") in ("inactive", ""),
                  f"crius-{victim[:12]}….scope is gone ({unit(f'crius-{victim}.scope', 'ActiveState') or 'not loaded'})")
            check(not os.path.exists(f"/sys/fs/cgroup{pod_cgroup(parent, victim)}"), "and so is its cgroup")
        monitors = sh("sh", "-c", "systemd-cgls --no-pager -u criusd.service | head -20")
        print("   criusd.service's cgroup after the restart:\n" + "\n".join("     " + l for l in monitors.splitlines()))
    finally:
        step("clean up: StopPodSandbox, RemovePodSandbox")
        for p in pods:
            try:
                rt.StopPodSandbox(cri.StopPodSandboxRequest(pod_sandbox_id=p), timeout=120)
                rt.RemovePodSandbox(cri.RemovePodSandboxRequest(pod_sandbox_id=p), timeout=120)
            except grpc.RpcError as e:
                check(False, f"removing pod {p[:12]}", e.details())
        left = rt.ListPodSandbox(cri.ListPodSandboxRequest(), timeout=30).items
        check(not left, "no pod left")
        stray = sh("sh", "-c", "find /sys/fs/cgroup/kubepods /sys/fs/cgroup/crius -mindepth 1 -type d 2>/dev/null")
        print("   cgroups left below /sys/fs/cgroup/kubepods and /crius: " + (", ".join(stray.split()) or "none"))
        if SYSTEMD:
            time.sleep(1)
            units = sh("sh", "-c", "systemctl list-units --all --plain --no-legend 'crius-*' | awk '{print $1}'")
            check(not units, "no crius scope unit is left (pods' and monitors')", units.replace("\n", " "))
            scopes = sh("sh", "-c", "find /sys/fs/cgroup/kubepods.slice -name 'crius-*' 2>/dev/null")
            check(not scopes, "no crius cgroup is left below kubepods.slice", scopes.replace("\n", " "))

    for k in known:
        print(f"cri-check: KNOWN {k}")
    print(f"\ncri-check: {'all checks passed' if not failures else str(len(failures)) + ' failed: ' + '; '.join(failures)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
