#!/usr/bin/env bash
# Runs a real kubelet in standalone mode (no API server) against crius and checks the static pods
# in integration/pods/ (the same Pod YAML a user would `kubectl apply`):
#
#   integration/kubelet/run.sh PATH_TO_KUBELET
#
# Starts criusd on a temporary root (release build; $CRIUSD_BIN overrides), a loopback registry
# that crius mirrors registry.k8s.io and gcr.io to, holding the images the manifests name (built
# offline with ../shared/critest-images, or $CRITEST_IMAGES), a private CNI bridge, then the
# kubelet with a KubeletConfiguration pointing at crius' socket and the manifests as static pods.
# It waits for the pods to run, checks them from the host, over the CRI (crictl) and through the
# kubelet's read-only /pods endpoint, tears everything down (kubelet, pods, criusd, mounts,
# cgroups, the bridge, kernel tunables kubelet changed) and exits 0 only if every check passed.
# Env: KUBELET_READONLY_PORT (default 10255), CRIUS_KEEP_LOGS=DIR keeps the kubelet and criusd logs,
# CRIUS_CGROUP_DRIVER=systemd runs crius and kubelet with the systemd cgroup driver (a node with
# systemd and cgroup v2 alone, as integration/vm/run.sh --kubelet boots): kubelet makes its
# kubepods slices through systemd, crius its pod scopes in them.
set -euo pipefail

kubelet=${1:?usage: integration/kubelet/run.sh PATH_TO_KUBELET}
kubelet=$(realpath "$kubelet")
repo=$(cd "$(dirname "$0")/../.." && pwd)
images_src=${CRITEST_IMAGES:-$repo/../shared/critest-images}
ro_port=${KUBELET_READONLY_PORT:-10255}
crictl_bin=$(command -v crictl || echo /usr/local/bin/crictl)
[ "$(id -u)" = 0 ] || { echo "kubelet/run.sh: run as root" >&2; exit 1; }
[ -x "$kubelet" ] || { echo "kubelet/run.sh: $kubelet is not executable" >&2; exit 1; }
[ -x "$crictl_bin" ] || { echo "kubelet/run.sh: crictl is required" >&2; exit 1; }
[ -d "$images_src" ] || { echo "kubelet/run.sh: no image builder at $images_src" >&2; exit 1; }

driver=${CRIUS_CGROUP_DRIVER:-cgroupfs}
case $driver in cgroupfs|systemd) ;; *) echo "kubelet/run.sh: CRIUS_CGROUP_DRIVER is cgroupfs or systemd" >&2; exit 1 ;; esac
need=(skopeo docker-registry containernetworking-plugins iptables iproute2 python3 curl)
# Building criusd, or crius' stand-in images, needs a compiler and libseccomp's headers.
[ -n "${CRIUSD_BIN:-}" ] || need+=(gcc libseccomp-dev pkg-config)
[ -s "${CRITEST_IMAGES_CACHE:-/var/tmp/crius-critest-images}/out/refs.txt" ] || need+=(gcc)
missing=()
for p in "${need[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi

work=$(mktemp -d /var/tmp/crius-kubelet.XXXXXX)
# Like /run: user-namespaced pods reach their state directory beneath as an unprivileged uid.
chmod 0711 "$work"
tag=$(printf '%04x' $((RANDOM % 65536)))
cgroot=crius-kubelet-$tag
bridge=crk$tag
node=crius-kubelet
sock=$work/state/crius.sock
criusd_pid='' registry_pid='' kubelet_pid='' criusd=''
# Kernel tunables kubelet sets at start (protectKernelDefaults: false); restored on exit.
tunables=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes)
declare -A saved_tunables=()
for t in "${tunables[@]}"; do
  [ -r "/proc/sys/$t" ] && saved_tunables[$t]=$(cat "/proc/sys/$t")
done

printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\n' "$sock" "$sock" >"$work/crictl.yaml"
crictl() { "$crictl_bin" --config "$work/crictl.yaml" --timeout 30s -r "unix://$sock" -i "unix://$sock" "$@"; }

cleanup() {
  set +e
  if [ -n "$kubelet_pid" ]; then
    # Removing the manifests is how static pods are deleted: kubelet stops them itself.
    rm -f "$work"/manifests/*.yaml
    for _ in $(seq 60); do
      [ -z "$(crictl pods -q 2>/dev/null)" ] && break
      sleep 1
    done
    kill "$kubelet_pid" 2>/dev/null && wait "$kubelet_pid" 2>/dev/null
  fi
  if [ -n "$criusd_pid" ]; then
    for p in $(crictl pods -q 2>/dev/null); do
      crictl stopp "$p" >/dev/null 2>&1
      crictl rmp "$p" >/dev/null 2>&1
    done
    kill "$criusd_pid" 2>/dev/null && wait "$criusd_pid" 2>/dev/null
  fi
  # Pod monitors outlive criusd by design: release any pod still there.
  for pod in "$work"/state/pods/*/; do
    [ -d "$pod" ] && [ -n "$criusd" ] && "$criusd" monitor --pod-dir "$pod" --cleanup >/dev/null 2>&1
  done
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null
  if [ -n "${CRIUS_KEEP_LOGS:-}" ]; then
    mkdir -p "$CRIUS_KEEP_LOGS" && cp "$work"/*.log "$CRIUS_KEEP_LOGS"/ 2>/dev/null
  fi
  # kubelet makes its root directory a shared bind mount; crius leaves nothing mounted.
  grep -o " ${work}[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  for c in /sys/fs/cgroup/*/"$cgroot" /sys/fs/cgroup/unified/"$cgroot"; do
    [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  # kubelet's slices (systemd driver) stay after it exits, as on a node.
  [ "$driver" = systemd ] && systemctl stop kubepods.slice 2>/dev/null
  ip link del "$bridge" 2>/dev/null
  for t in "${!saved_tunables[@]}"; do
    echo "${saved_tunables[$t]}" > "/proc/sys/$t" 2>/dev/null
  done
  rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT TERM

if [ -n "${CRIUSD_BIN:-}" ]; then
  criusd=$CRIUSD_BIN
else
  (cd "$repo" && cargo build --release -q -p criusd)
  criusd=$repo/target/release/criusd
fi

fails=0
check() { # check OK|FAIL TEXT
  if [ "$1" = ok ]; then echo "   ok   $2"; else echo "   FAIL $2"; fails=$((fails + 1)); fi
}
step() { printf '\n== %s\n' "$*"; }

step "images: the ones integration/pods/ names, built offline and served from a loopback registry"
cache=${CRITEST_IMAGES_CACHE:-/var/tmp/crius-critest-images}
[ -s "$cache/out/refs.txt" ] || "$images_src/prepare.sh" "$cache"
mkdir -p "$work/images"
ln -s "$cache/out/oci" "$work/images/oci"
: > "$work/images/refs.txt"
for image in $(sed -n 's/^ *image: *//p' "$repo"/integration/pods/*.yaml | sort -u); do
  path=${image#*/}
  grep "^$path " "$cache/out/refs.txt" >> "$work/images/refs.txt" ||
    { echo "no offline build of $image" >&2; exit 1; }
done
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
registry=127.0.0.1:$port
mkdir -p "$work/registry"
cat > "$work/registry.yml" <<YML
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: $work/registry } }
http: { addr: $registry }
YML
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do curl -fs "http://$registry/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
"$images_src/push.sh" "$work/images" "$registry" | sed 's/^/   /'

step "criusd on $work (registry.k8s.io and gcr.io mirrored to $registry, bridge $bridge)"
subnet=10.86.$((RANDOM % 256)).0/24
mkdir -p "$work/cni" "$work/cni-ipam"
cat > "$work/cni/10-crius-kubelet.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "crius-kubelet-$tag",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$bridge",
      "isGateway": true,
      "ipMasq": false,
      "ipam": {
        "type": "host-local",
        "dataDir": "$work/cni-ipam",
        "ranges": [[{ "subnet": "$subnet" }]],
        "routes": [{ "dst": "0.0.0.0/0" }]
      }
    },
    { "type": "portmap", "capabilities": { "portMappings": true } }
  ]
}
JSON
cat > "$work/config.toml" <<TOML
root = "$work/root"
state = "$work/state"
listen = "$sock"
cni_conf_dir = "$work/cni"
insecure_registries = ["$registry"]
cgroup_driver = "$driver"

[registry.mirrors]
"registry.k8s.io" = ["http://$registry"]
"gcr.io" = ["http://$registry"]
TOML
"$criusd" --config "$work/config.toml" --log-level "${CRIUS_LOG_LEVEL:-info}" > "$work/criusd.log" 2>&1 &
criusd_pid=$!
for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
[ -S "$sock" ] || { cat "$work/criusd.log"; exit 1; }
crictl version | sed 's/^/   /'

step "kubelet $("$kubelet" --version 2>&1) in standalone mode, static pods from $work/manifests"
kport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/manifests" "$work/kubelet" "$work/pod-logs"
cat > "$work/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$sock
imageServiceEndpoint: unix://$sock
cgroupDriver: $driver
cgroupRoot: $([ "$driver" = systemd ] && echo / || echo "/$cgroot")
failCgroupV1: false
failSwapOn: false
staticPodPath: $work/manifests
fileCheckFrequency: 2s
syncFrequency: 10s
address: 127.0.0.1
port: $kport
readOnlyPort: $ro_port
healthzPort: 0
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
featureGates:
  UserNamespacesSupport: true
  SupplementalGroupsPolicy: true
podLogsDir: $work/pod-logs
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "10Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
YAML
# kubelet wants its cgroupRoot to exist in every hierarchy; a fresh cpuset needs cpus and mems.
for h in /sys/fs/cgroup/*/; do
  [ "$driver" = cgroupfs ] && [ -f "$h/cgroup.procs" ] && mkdir -p "$h$cgroot"
done
if [ "$driver" = cgroupfs ] && [ -d "/sys/fs/cgroup/cpuset/$cgroot" ]; then
  cat /sys/fs/cgroup/cpuset/cpuset.cpus > "/sys/fs/cgroup/cpuset/$cgroot/cpuset.cpus"
  cat /sys/fs/cgroup/cpuset/cpuset.mems > "/sys/fs/cgroup/cpuset/$cgroot/cpuset.mems"
fi
cp "$repo"/integration/pods/*.yaml "$work/manifests/"
"$kubelet" --config "$work/kubelet.yaml" --root-dir "$work/kubelet" --cert-dir "$work/kubelet/pki" \
  --hostname-override "$node" --v "${KUBELET_V:-2}" > "$work/kubelet.log" 2>&1 &
kubelet_pid=$!

pods_json() { curl -fsS --max-time 5 "http://127.0.0.1:$ro_port/pods"; }
# Prints, per static pod, "name phase ready podIP"; exits 0 when every pod runs and is ready.
pods_summary() {
  python3 -c '
import json, sys
names = sys.argv[1:]
pods = {p["metadata"]["name"]: p for p in json.load(sys.stdin).get("items", [])}
ok = True
for n in names:
    p = pods.get(n)
    if p is None:
        print(n, "absent"); ok = False; continue
    st = p.get("status", {})
    cs = st.get("containerStatuses", [])
    ready = bool(cs) and all(c.get("ready") for c in cs)
    print(n, st.get("phase", "?"), "ready" if ready else "not-ready", st.get("podIP", "-"))
    ok = ok and st.get("phase") == "Running" and ready
sys.exit(0 if ok else 1)
' "$@"
}
names=()
for f in "$repo"/integration/pods/*.yaml; do
  names+=("$(sed -n 's/^  name: *//p' "$f" | head -1)-$node")
done

step "waiting for the static pods (${names[*]})"
ready=
for _ in $(seq 180); do
  if ! kill -0 "$kubelet_pid" 2>/dev/null; then
    echo "kubelet exited:"; tail -40 "$work/kubelet.log"; exit 1
  fi
  if out=$(pods_json 2>/dev/null | pods_summary "${names[@]}" 2>/dev/null); then ready=1; break; fi
  sleep 1
done
echo "$out" | sed 's/^/   /'
if [ -z "$ready" ]; then
  check FAIL "every static pod Running and ready within 180 s"
  echo "--- kubelet log (errors)"; grep -E '^E|error' "$work/kubelet.log" | tail -30
  echo "--- criusd log"; tail -30 "$work/criusd.log"
  exit 1
fi
check ok "every static pod Running and ready (kubelet's read-only :$ro_port/pods)"
pods_json > "$work/pods.json"
# Every process crius started for the pods, to check that none outlives the teardown.
pod_pids=()
for p in $(crictl pods -q); do
  read -r -a pids < <(crictl inspectp -o json "$p" |
    python3 -c 'import json,sys; i=json.load(sys.stdin)["info"]; print(i["monitorPid"], i["sandboxPid"])')
  pod_pids+=("${pids[@]}")
done
for c in $(crictl ps -q); do
  pod_pids+=("$(crictl inspect -o json "$c" | python3 -c 'import json,sys; print(json.load(sys.stdin)["info"]["pid"])')")
done

# Field of a pod in /pods, by a Python expression over `p` (the pod object).
pod_field() {
  python3 -c '
import json, sys
p = next(p for p in json.load(open(sys.argv[1]))["items"] if p["metadata"]["name"] == sys.argv[2])
print(eval(sys.argv[3]))' "$work/pods.json" "$1" "$2"
}
container_id() { # POD CONTAINER -> crius container id
  local pod_id
  pod_id=$(crictl pods -q --name "^$1\$" --state ready | head -1)
  crictl ps -q --pod "$pod_id" --name "^$2\$" --state running | head -1
}

if [ "$driver" = systemd ]; then
  step "the systemd cgroup driver: each pod a scope unit in the pod slice kubelet made"
  for p in $(crictl pods -q); do
    sandbox=$(crictl inspectp -o json "$p" | python3 -c 'import json,sys; print(json.load(sys.stdin)["info"]["sandboxPid"])')
    cg=$(sed -n 's/^0:://p' "/proc/$sandbox/cgroup")
    echo "   pod ${p:0:12}: sandbox in $cg"
    [[ $cg == /kubepods.slice/*-pod*.slice/crius-$p.scope/sandbox ]] &&
      check ok "its sandbox is in crius-${p:0:12}….scope in its kubepods pod slice" ||
      check FAIL "its sandbox is in crius-${p:0:12}….scope in its kubepods pod slice"
    [ "$(systemctl is-active "crius-$p.scope")" = active ] &&
      check ok "systemctl is-active crius-${p:0:12}….scope" || check FAIL "systemctl is-active crius-${p:0:12}….scope"
  done
  limits=$(systemctl show -P MemoryMax "crius-$(crictl pods -q --name "^userns-httpd-$node\$" | head -1).scope")
  echo "   the userns-httpd pod scope's MemoryMax (its pod limits as a unit property): $limits"
fi

step "userns-httpd: hostUsers: false, root serving port 80"
id=$(container_id "userns-httpd-$node" httpd)
inside=$(crictl exec "$id" id)
echo "   id (inside): $inside"
[[ $inside == "uid=0(root) gid=0(root)"* ]] && check ok "root in the container" || check FAIL "root in the container"
uid_map=$(crictl exec "$id" cat /proc/self/uid_map | tr -s ' ' | sed 's/^ //')
echo "   /proc/self/uid_map (inside): $uid_map"
read -r inner host len <<< "$uid_map"
if [ "$inner" = 0 ] && [ "$len" = 65536 ] && [ "$host" -ge 65536 ] && [ $((host % 65536)) = 0 ]; then
  check ok "uid 0 in the pod is host uid $host, 65536 ids (kubelet's mapping)"
else
  check FAIL "uid_map is one 65536-aligned range of 65536 ids above 65535"
fi
pid=$(crictl inspect -o json "$id" | python3 -c 'import json,sys; print(json.load(sys.stdin)["info"]["pid"])')
host_uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")
echo "   ps (host): $(ps -o user=,pid=,args= -p "$pid")"
[ "$host_uids" = "$host $host $host $host" ] &&
  check ok "httpd (host pid $pid) runs as host uid $host" ||
  check FAIL "httpd (host pid $pid) runs as host uid $host (it has $host_uids)"
ip=$(pod_field "userns-httpd-$node" 'p["status"]["podIP"]')
page=$(curl -fsS --max-time 5 "http://$ip/" || true)
echo "   curl http://$ip/: $page"
[ "$page" = "hello from root in a user namespace" ] &&
  check ok "the pod's root serves port 80 on $ip" || check FAIL "the pod's root serves port 80 on $ip"

for policy in strict merge; do
  pod=$policy-groups-$node
  [ -f "$repo/integration/pods/$policy-groups.yaml" ] || continue
  [ $policy = strict ] && want="3000 4000" || want="3000 4000 50000"
  step "$pod: supplementalGroupsPolicy ${policy^}"
  id=$(container_id "$pod" ctr)
  inside=$(crictl exec "$id" id)
  groups=$(crictl exec "$id" id -G)
  echo "   id (inside): $inside"
  [ "$groups" = "$want" ] && check ok "id -G is '$want'" || check FAIL "id -G is '$want' (it is '$groups')"
  user=$(pod_field "$pod" 'json.dumps(p["status"]["containerStatuses"][0].get("user"), sort_keys=True)')
  echo "   status.containerStatuses[0].user (kubelet /pods): $user"
  want_user=$(python3 -c 'import json,sys; g=[int(x) for x in sys.argv[1].split()]; print(json.dumps({"linux": {"gid": 3000, "supplementalGroups": g, "uid": 1000}}, sort_keys=True))' "$want")
  [ "$user" = "$want_user" ] && check ok "kubelet reports uid 1000, gid 3000, groups $want" ||
    check FAIL "kubelet reports uid 1000, gid 3000, groups $want"
done

step "kubelet's summary API (/stats/summary), filled from crius' CRI stats"
# Prints "pod container cpu-nanocores memory-working-set" per container; exits 0 when every
# static pod's containers have memory figures.
stats_summary() {
  python3 -c '
import json, sys
names = set(sys.argv[1:])
pods = {p["podRef"]["name"]: p for p in json.load(sys.stdin).get("pods", [])}
ok = names <= set(pods)
for n in sorted(names & set(pods)):
    cs = pods[n].get("containers", [])
    ok = ok and bool(cs)
    for c in cs:
        ws = c.get("memory", {}).get("workingSetBytes")
        print(n, c["name"], c.get("cpu", {}).get("usageNanoCores", "-"), ws if ws is not None else "-")
        ok = ok and bool(ws)
sys.exit(0 if ok else 1)
' "$@"
}
stats_ok=
for _ in $(seq 30); do
  if out=$(curl -fsS --max-time 5 "http://127.0.0.1:$ro_port/stats/summary" 2>/dev/null | stats_summary "${names[@]}" 2>/dev/null); then
    stats_ok=1; break
  fi
  sleep 1
done
echo "$out" | sed 's/^/   /'
[ -n "$stats_ok" ] && check ok "every static pod's containers have cpu and memory figures" ||
  check FAIL "every static pod's containers have cpu and memory figures"

step "tear down: remove the manifests (kubelet stops the pods), stop kubelet and criusd"
rm -f "$work"/manifests/*.yaml
gone=
for _ in $(seq 60); do
  if [ -z "$(crictl pods -q)" ]; then gone=1; break; fi
  sleep 1
done
[ -n "$gone" ] && check ok "kubelet stopped and removed every pod in crius" ||
  check FAIL "kubelet stopped and removed every pod in crius"
kill "$kubelet_pid" && wait "$kubelet_pid" || true
kubelet_pid=
kill "$criusd_pid" && wait "$criusd_pid" || true
criusd_pid=
left=
for p in "${pod_pids[@]}"; do
  # A zombie has ended: it waits for the host's init (pod monitors are daemons) to reap it.
  state=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$p/stat" 2>/dev/null || true)
  [ -n "$state" ] && [ "$state" != Z ] && left+=" $p"
done
[ -z "$left" ] && check ok "no process of the pods is left (monitors, sandboxes, containers: ${pod_pids[*]})" ||
  check FAIL "no process of the pods is left (still there:$left)"
mounts=$(grep -cE " $work/(state|root)" /proc/self/mountinfo || true)
[ "$mounts" = 0 ] && check ok "nothing of crius is mounted" || check FAIL "nothing of crius is mounted ($mounts mounts left)"
if [ "$driver" = systemd ]; then
  sleep 1
  units=$(systemctl list-units --all --plain --no-legend 'crius-*' | wc -l)
  cgroups=$(find /sys/fs/cgroup/kubepods.slice -mindepth 1 -type d -name 'crius-*' 2>/dev/null | wc -l)
  [ "$units" = 0 ] && [ "$cgroups" = 0 ] && check ok "no crius scope unit or cgroup is left below kubepods.slice" ||
    check FAIL "no crius scope unit or cgroup is left ($units units, $cgroups cgroups)"
else
  cgroups=$(find /sys/fs/cgroup/*/"$cgroot" -mindepth 1 -type d -name 'crius-*' 2>/dev/null | wc -l)
  [ "$cgroups" = 0 ] && check ok "no crius cgroup is left under /$cgroot" ||
    check FAIL "no crius cgroup is left under /$cgroot ($cgroups left)"
fi
if grep -E '^E[0-9]{4}' "$work/kubelet.log" > "$work/kubelet-errors.txt"; then
  echo "   kubelet logged $(wc -l < "$work/kubelet-errors.txt") error lines; the distinct ones:"
  sed -E 's/^E[0-9]{4} [0-9:.]+ +[0-9]+ //' "$work/kubelet-errors.txt" | cut -c1-220 | sort | uniq -c | sort -rn | head -15 | sed 's/^/   /'
fi

echo
if [ "$fails" = 0 ]; then echo "kubelet/run.sh: every check passed"; else echo "kubelet/run.sh: $fails check(s) failed"; fi
[ "$fails" = 0 ]
