#!/usr/bin/env bash
# Brings up a one-node Kubernetes cluster on loopback with kubelet on crius, runs the YAML of
# integration/pods/ through the API server and checks it the way a user would (kubectl) and over
# the CRI (crictl):
#
#   integration/cluster/run.sh PATH_TO_BINARIES
#
# PATH_TO_BINARIES holds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet and
# kubectl (v1.33 or later: user namespaces and supplementalGroupsPolicy on by default). The
# script installs its Debian prerequisites (etcd-server, openssl, docker-registry, skopeo, CNI
# plugins, ...), then starts, on a temporary work directory:
#   - certificates made with openssl (a CA, the API server's serving certificate for 127.0.0.1,
#     localhost and the service IP 10.0.0.1, client certificates for the admin, the controllers,
#     the scheduler, kubelet and the API server's kubelet client, kubelet's serving certificate,
#     a service-account key pair) and their kubeconfigs; etcd (Debian's etcd-server);
#   - kube-apiserver, kube-controller-manager and kube-scheduler, all three on 127.0.0.1;
#   - a loopback registry holding the images the YAML names (built offline like
#     integration/kubelet/run.sh does), criusd (release build; $CRIUSD_BIN overrides) on its own
#     root, state directory and socket with a private CNI bridge (a /24 of 10.87.0.0/16), and
#     kubelet on crius as node `localhost`, listening on the bridge's gateway address (the API
#     server's node proxy refuses loopback addresses, so not 127.0.0.1).
# Nothing is reached but 127.0.0.1 and that bridge. It applies integration/pods/*.yaml (Pods) and
# integration/pods/api-server/*.yaml (a Deployment with a Secret and a ConfigMap), checks them
# from the host, with kubectl and over the CRI (crictl), restarts criusd under them, deletes them,
# tears everything down, checks nothing is left and exits 0 only if every check passed.
# Env: CRIUSD_BIN, CRICTL (default: crictl on PATH), CRIUS_KEEP_LOGS=DIR keeps every log,
# KUBELET_V (kubelet's verbosity, default 2), CRITEST_IMAGES (the offline image builder).
set -euo pipefail

bin=${1:?usage: integration/cluster/run.sh PATH_TO_BINARIES}
bin=$(realpath "$bin")
repo=$(cd "$(dirname "$0")/../.." && pwd)
images_src=${CRITEST_IMAGES:-$repo/../shared/critest-images}
[ "$(id -u)" = 0 ] || { echo "cluster/run.sh: run as root" >&2; exit 1; }
for b in kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl; do
  [ -x "$bin/$b" ] || { echo "cluster/run.sh: no executable $bin/$b" >&2; exit 1; }
done
crictl_bin=${CRICTL:-$(command -v crictl || echo /usr/local/bin/crictl)}
[ -x "$crictl_bin" ] || { echo "cluster/run.sh: crictl is required (\$CRICTL)" >&2; exit 1; }
[ -d "$images_src" ] || { echo "cluster/run.sh: no image builder at $images_src" >&2; exit 1; }

need=()
for p in etcd-server openssl skopeo docker-registry containernetworking-plugins iptables iproute2 \
  gcc python3 curl libseccomp-dev pkg-config; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

started=$(date +%s)
work=$(mktemp -d /var/tmp/crius-cluster.XXXXXX)
# Like /run: user-namespaced pods reach their state directory beneath as an unprivileged uid.
chmod 0711 "$work"
tag=$(printf '%04x' $((RANDOM % 65536)))
cgroot=crius-cluster-$tag
bridge=crc$tag
node=localhost
# The pod network: a private bridge with a /24 of 10.87.0.0/16 whose gateway address (.1, on the
# host) is kubelet's node IP: the API server's node proxy (/api/v1/nodes/NODE/proxy/...) refuses
# loopback addresses, so kubelet listens there rather than on 127.0.0.1.
net=10.87.$((RANDOM % 256))
subnet=$net.0/24
node_ip=$net.1
sock=$work/state/crius.sock
pki=$work/pki
criusd='' criusd_pid='' registry_pid='' kubelet_pid=''
declare -A cp_pids=() # control plane: etcd, kube-apiserver, kube-controller-manager, kube-scheduler
# Kernel tunables kubelet sets at start (protectKernelDefaults: false); restored on exit.
tunables=(vm/overcommit_memory vm/panic_on_oom kernel/panic kernel/panic_on_oops kernel/keys/root_maxkeys kernel/keys/root_maxbytes)
declare -A saved_tunables=()
for t in "${tunables[@]}"; do
  [ -r "/proc/sys/$t" ] && saved_tunables[$t]=$(cat "/proc/sys/$t")
done
# kubelet leaves a KUBE-KUBELET-CANARY chain in iptables' mangle table (ip6tables' too) to notice
# flushes; removed at the end unless it was there before.
canary_before=
iptables -w -t mangle -nL KUBE-KUBELET-CANARY >/dev/null 2>&1 && canary_before=1

printf 'runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\n' "$sock" "$sock" >"$work/crictl.yaml"
crictl() { "$crictl_bin" --config "$work/crictl.yaml" --timeout 30s -r "unix://$sock" -i "unix://$sock" "$@"; }
kubectl() { "$bin/kubectl" --kubeconfig "$work/admin.kubeconfig" --request-timeout 30s "$@"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

stop_pid() { # PID: SIGTERM, then SIGKILL after 15 s
  local p=$1
  kill "$p" 2>/dev/null || return 0
  for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$p" 2>/dev/null || true
  wait "$p" 2>/dev/null || true
}

cleanup() {
  set +e
  if [ -n "$kubelet_pid" ] && [ -n "${cp_pids[kube-apiserver]:-}" ]; then
    kubectl delete deployment,pod,secret,configmap -l app=crius-demo --wait=true --timeout 60s >/dev/null 2>&1
    for _ in $(seq 60); do
      [ -z "$(crictl pods -q 2>/dev/null)" ] && break
      sleep 1
    done
  fi
  [ -n "$kubelet_pid" ] && stop_pid "$kubelet_pid"
  if [ -n "$criusd_pid" ]; then
    for p in $(crictl pods -q 2>/dev/null); do
      crictl stopp "$p" >/dev/null 2>&1
      crictl rmp "$p" >/dev/null 2>&1
    done
    stop_pid "$criusd_pid"
  fi
  # Pod monitors outlive criusd by design: release any pod still there.
  for pod in "$work"/state/pods/*/; do
    [ -d "$pod" ] && [ -n "$criusd" ] && "$criusd" monitor --pod-dir "$pod" --cleanup >/dev/null 2>&1
  done
  for c in kube-scheduler kube-controller-manager kube-apiserver etcd; do
    [ -n "${cp_pids[$c]:-}" ] && stop_pid "${cp_pids[$c]}"
  done
  [ -n "$registry_pid" ] && stop_pid "$registry_pid"
  if [ -n "${CRIUS_KEEP_LOGS:-}" ]; then
    mkdir -p "$CRIUS_KEEP_LOGS" && cp "$work"/*.log "$CRIUS_KEEP_LOGS"/ 2>/dev/null
  fi
  # kubelet makes its root directory a shared bind mount and mounts the pods' volumes beneath.
  grep -o " ${work}[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" 2>/dev/null; done
  for c in /sys/fs/cgroup/*/"$cgroot" /sys/fs/cgroup/unified/"$cgroot"; do
    [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
  done
  ip link del "$bridge" 2>/dev/null
  for t in "${!saved_tunables[@]}"; do
    echo "${saved_tunables[$t]}" > "/proc/sys/$t" 2>/dev/null
  done
  if [ -z "$canary_before" ]; then
    for ipt in iptables ip6tables; do
      for table in mangle nat filter; do
        "$ipt" -w -t "$table" -X KUBE-KUBELET-CANARY 2>/dev/null
      done
    done
  fi
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

fails=0 passed=0
check() { # check ok|FAIL TEXT
  if [ "$1" = ok ]; then
    echo "   ok   $2"; passed=$((passed + 1))
  else
    echo "   FAIL $2"; fails=$((fails + 1))
  fi
}
step() { printf '\n== %s\n' "$*"; }
# until SECONDS CMD...: runs CMD every second until it succeeds; fails after SECONDS tries.
until_ok() {
  local n=$1; shift
  for _ in $(seq "$n"); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  return 1
}

step "certificates (openssl) in $pki"
mkdir -p "$pki"
openssl req -x509 -new -newkey rsa:2048 -nodes -days 2 -sha256 -subj "/CN=crius-cluster-ca" \
  -keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
# cert NAME CN O EXTENDED-KEY-USAGE [SUBJECT-ALT-NAMES]
cert() {
  local name=$1 cn=$2 o=$3 eku=$4 san=${5:-}
  {
    echo "basicConstraints = critical, CA:FALSE"
    echo "keyUsage = critical, digitalSignature, keyEncipherment"
    echo "extendedKeyUsage = $eku"
    [ -n "$san" ] && echo "subjectAltName = $san"
  } > "$pki/$name.ext"
  openssl req -new -newkey rsa:2048 -nodes -subj "/CN=$cn${o:+/O=$o}" \
    -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$pki/$name.ext" -out "$pki/$name.crt" 2>/dev/null
  echo "   $name: CN=$cn${o:+ O=$o}${san:+ ($san)}"
}
cert apiserver kube-apiserver "" serverAuth \
  "IP:127.0.0.1, IP:10.0.0.1, DNS:localhost, DNS:kubernetes, DNS:kubernetes.default, DNS:kubernetes.default.svc, DNS:kubernetes.default.svc.cluster.local"
cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters clientAuth
cert admin admin system:masters clientAuth
cert controller-manager system:kube-controller-manager "" clientAuth
cert scheduler system:kube-scheduler "" clientAuth
cert kubelet-client "system:node:$node" system:nodes clientAuth
cert kubelet-serving "$node" "" serverAuth "DNS:localhost, IP:127.0.0.1, IP:$node_ip"
openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
echo "   sa.key, sa.pub: the service-account signing key pair"

etcd_port=$(free_port) etcd_peer_port=$(free_port) api_port=$(free_port) cm_port=$(free_port)
sched_port=$(free_port) kubelet_port=$(free_port)
api=https://127.0.0.1:$api_port
for who in admin controller-manager scheduler kubelet; do
  user=$who; [ "$who" = kubelet ] && user=kubelet-client
  cat > "$work/$who.kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
  - name: crius
    cluster: { server: "$api", certificate-authority: "$pki/ca.crt" }
users:
  - name: $who
    user: { client-certificate: "$pki/$user.crt", client-key: "$pki/$user.key" }
contexts:
  - name: crius
    context: { cluster: crius, user: $who }
current-context: crius
YAML
done

step "control plane on 127.0.0.1: etcd :$etcd_port, kube-apiserver :$api_port, controller-manager :$cm_port, scheduler :$sched_port"
etcd --name crius --data-dir "$work/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "crius=http://127.0.0.1:$etcd_peer_port" --initial-cluster-state new \
  > "$work/etcd.log" 2>&1 &
cp_pids[etcd]=$!
until_ok 30 curl -fsS --max-time 2 "http://127.0.0.1:$etcd_port/health" ||
  { check FAIL "etcd answers /health"; tail -20 "$work/etcd.log"; exit 1; }
echo "   etcd $(etcd --version | sed -n 's/^etcd Version: //p') (pid ${cp_pids[etcd]})"

"$bin/kube-apiserver" --etcd-servers "http://127.0.0.1:$etcd_port" \
  --bind-address 127.0.0.1 --advertise-address 127.0.0.1 --secure-port "$api_port" \
  --service-cluster-ip-range 10.0.0.0/24 \
  --tls-cert-file "$pki/apiserver.crt" --tls-private-key-file "$pki/apiserver.key" \
  --client-ca-file "$pki/ca.crt" --authorization-mode Node,RBAC \
  --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
  --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
  --kubelet-certificate-authority "$pki/ca.crt" --kubelet-preferred-address-types InternalIP \
  --service-account-issuer https://kubernetes.default.svc.cluster.local \
  --service-account-key-file "$pki/sa.pub" --service-account-signing-key-file "$pki/sa.key" \
  --endpoint-reconciler-type none --allow-privileged=true --profiling=false \
  > "$work/kube-apiserver.log" 2>&1 &
cp_pids[kube-apiserver]=$!
if until_ok 90 kubectl get --raw /readyz; then
  check ok "kube-apiserver $("$bin/kube-apiserver" --version | awk '{print $2}') is ready (/readyz)"
else
  check FAIL "kube-apiserver is ready (/readyz)"; tail -30 "$work/kube-apiserver.log"; exit 1
fi

"$bin/kube-controller-manager" --kubeconfig "$work/controller-manager.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$cm_port" --leader-elect=false \
  --service-account-private-key-file "$pki/sa.key" --root-ca-file "$pki/ca.crt" \
  --use-service-account-credentials \
  --cluster-signing-cert-file "$pki/ca.crt" --cluster-signing-key-file "$pki/ca.key" \
  --service-cluster-ip-range 10.0.0.0/24 --profiling=false \
  > "$work/kube-controller-manager.log" 2>&1 &
cp_pids[kube-controller-manager]=$!
"$bin/kube-scheduler" --kubeconfig "$work/scheduler.kubeconfig" \
  --bind-address 127.0.0.1 --secure-port "$sched_port" --leader-elect=false --profiling=false \
  > "$work/kube-scheduler.log" 2>&1 &
cp_pids[kube-scheduler]=$!
for c in kube-controller-manager:$cm_port kube-scheduler:$sched_port; do
  if until_ok 60 curl -fsSk --max-time 2 "https://127.0.0.1:${c#*:}/healthz"; then
    check ok "${c%%:*} is healthy (/healthz)"
  else
    check FAIL "${c%%:*} is healthy (/healthz)"; tail -20 "$work/${c%%:*}.log"; exit 1
  fi
done
# The controllers create each namespace's default ServiceAccount, which pods need.
until_ok 60 kubectl get serviceaccount default ||
  { check FAIL "the default ServiceAccount exists"; exit 1; }

step "images: the ones integration/pods/ names, built offline and served from a loopback registry"
yaml=("$repo"/integration/pods/*.yaml "$repo"/integration/pods/api-server/*.yaml)
cache=${CRITEST_IMAGES_CACHE:-/var/tmp/crius-critest-images}
[ -s "$cache/out/refs.txt" ] || "$images_src/prepare.sh" "$cache"
mkdir -p "$work/images"
ln -s "$cache/out/oci" "$work/images/oci"
: > "$work/images/refs.txt"
for image in $(sed -n 's/^ *image: *//p' "${yaml[@]}" | sort -u); do
  path=${image#*/}
  grep "^$path " "$cache/out/refs.txt" >> "$work/images/refs.txt" ||
    { echo "no offline build of $image" >&2; exit 1; }
done
registry=127.0.0.1:$(free_port)
mkdir -p "$work/registry"
cat > "$work/registry.yml" <<YML
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: $work/registry } }
http: { addr: $registry }
YML
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
registry_pid=$!
until_ok 10 curl -fs "http://$registry/v2/"
"$images_src/push.sh" "$work/images" "$registry" | sed 's/^/   /'

step "criusd on $work (registry.k8s.io and gcr.io mirrored to $registry, bridge $bridge)"
# Made here, so kubelet can listen on its gateway address; the bridge plugin takes it as it is.
ip link add "$bridge" type bridge
ip addr add "$node_ip/24" dev "$bridge"
ip link set "$bridge" up
mkdir -p "$work/cni" "$work/cni-ipam"
cat > "$work/cni/10-crius-cluster.conflist" <<JSON
{
  "cniVersion": "1.0.0",
  "name": "crius-cluster-$tag",
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

[registry.mirrors]
"registry.k8s.io" = ["http://$registry"]
"gcr.io" = ["http://$registry"]
TOML
start_criusd() {
  "$criusd" --config "$work/config.toml" --log-level "${CRIUS_LOG_LEVEL:-info}" >> "$work/criusd.log" 2>&1 &
  criusd_pid=$!
  for _ in $(seq 200); do [ -S "$sock" ] && break; sleep 0.05; done
  [ -S "$sock" ] && crictl version >/dev/null 2>&1
}
start_criusd || { check FAIL "criusd starts"; tail -30 "$work/criusd.log"; exit 1; }
crictl version | sed 's/^/   /'

step "kubelet $("$bin/kubelet" --version 2>&1 | awk '{print $2}') on crius as node $node, port $node_ip:$kubelet_port"
mkdir -p "$work/kubelet" "$work/pod-logs"
cat > "$work/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$sock
imageServiceEndpoint: unix://$sock
cgroupDriver: cgroupfs
cgroupRoot: /$cgroot
failCgroupV1: false
failSwapOn: false
address: $node_ip
port: $kubelet_port
readOnlyPort: 0
healthzPort: 0
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $pki/ca.crt
authorization:
  mode: Webhook
clusterDomain: cluster.local
# Pod and container stats from crius' CRI stats alone (ListPodSandboxStats): without it kubelet
# takes pod network figures from cAdvisor, which has them only for runtimes it knows (containerd,
# CRI-O). integration/kubelet/run.sh checks the default, partly-cAdvisor path.
featureGates:
  PodAndContainerStatsFromCRI: true
podLogsDir: $work/pod-logs
serializeImagePulls: false
syncFrequency: 10s
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
  [ -f "$h/cgroup.procs" ] && mkdir -p "$h$cgroot"
done
if [ -d "/sys/fs/cgroup/cpuset/$cgroot" ]; then
  cat /sys/fs/cgroup/cpuset/cpuset.cpus > "/sys/fs/cgroup/cpuset/$cgroot/cpuset.cpus"
  cat /sys/fs/cgroup/cpuset/cpuset.mems > "/sys/fs/cgroup/cpuset/$cgroot/cpuset.mems"
fi
"$bin/kubelet" --config "$work/kubelet.yaml" --kubeconfig "$work/kubelet.kubeconfig" \
  --root-dir "$work/kubelet" --cert-dir "$work/kubelet/pki" --hostname-override "$node" --node-ip "$node_ip" \
  --v "${KUBELET_V:-2}" > "$work/kubelet.log" 2>&1 &
kubelet_pid=$!
node_ready() {
  [ "$(kubectl get node "$node" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
if until_ok 120 node_ready; then
  check ok "node $node registered and Ready"
else
  check FAIL "node $node registered and Ready"
  grep -E '^E[0-9]{4}' "$work/kubelet.log" | tail -20; exit 1
fi
kubectl get node -o wide | sed 's/^/   /'

step "workloads: kubectl apply -f integration/pods/ (Pods) and integration/pods/api-server/ (Deployment)"
for f in "${yaml[@]}"; do kubectl apply -f "$f" | sed 's/^/   /'; done
pods=()
for f in "$repo"/integration/pods/*.yaml; do pods+=("$(sed -n 's/^  name: *//p' "$f" | head -1)"); done
deploy=userns-volumes
if kubectl rollout status "deployment/$deploy" --timeout 180s >/dev/null &&
  kubectl wait --for=condition=Ready "${pods[@]/#/pod/}" --timeout 120s >/dev/null; then
  check ok "every Pod (${pods[*]}) Ready and deployment/$deploy available"
else
  check FAIL "every Pod (${pods[*]}) Ready and deployment/$deploy available"
  kubectl get pods -o wide; kubectl describe pods | grep -A12 '^Events' | tail -40
  grep -E '^E[0-9]{4}' "$work/kubelet.log" | tail -20; tail -20 "$work/criusd.log"; exit 1
fi
kubectl get pods -o wide | sed 's/^/   /'

# Running pods of the Deployment (none being deleted).
deploy_pods() {
  kubectl get pods -l app=$deploy -o go-template='{{range .items}}{{if and (not .metadata.deletionTimestamp) (eq .status.phase "Running")}}{{.metadata.name}}{{"\n"}}{{end}}{{end}}'
}
container_id() { # POD CONTAINER -> crius container id, from kubelet's pod status
  local id
  id=$(kubectl get pod "$1" -o jsonpath="{.status.containerStatuses[?(@.name==\"$2\")].containerID}")
  echo "${id#*://}"
}
host_pid() { crictl inspect -o json "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["info"]["pid"])'; }
# Every process crius started for the pods (monitors, sandboxes, containers), for the teardown check.
pod_pids=()
record_pod_pids() {
  local p c
  for p in $(crictl pods -q); do
    read -r -a pids < <(crictl inspectp -o json "$p" |
      python3 -c 'import json,sys; i=json.load(sys.stdin)["info"]; print(i["monitorPid"], i["sandboxPid"])')
    pod_pids+=("${pids[@]}")
  done
  for c in $(crictl ps -q); do pod_pids+=("$(host_pid "$c")"); done
}
record_pod_pids

mapfile -t dpods < <(deploy_pods)
pod=${dpods[0]}
step "$pod (deployment/$deploy): hostUsers: false, Secret, ConfigMap, projected token, memory emptyDir"
inside=$(kubectl exec "$pod" -c httpd -- id)
echo "   kubectl exec $pod -- id: $inside"
[[ $inside == "uid=0(root) gid=0(root)"* ]] && check ok "kubectl exec: root in the container" ||
  check FAIL "kubectl exec: root in the container"
# An interactive tty session (kubectl exec -it, on a terminal `script` gives it) starts clean:
# the first bytes on the client's screen are the command's own, no stray NUL bytes.
tty_raw=$work/tty-exec.out
script -qec "$bin/kubectl --kubeconfig $work/admin.kubeconfig exec -it $pod -c httpd -- sh -c 'echo TTY-CLEAN-\$((40+2))'" /dev/null \
  < /dev/null > "$tty_raw" 2>&1 || true
echo "   kubectl exec -it, first bytes: $(head -c 24 "$tty_raw" | od -An -c | tr -s ' ')"
if grep -q 'TTY-CLEAN-42' "$tty_raw" &&
  { ! tr -d '\000' < "$tty_raw" | cmp -s - "$tty_raw" || grep -qF '^@' "$tty_raw"; }; then
  check FAIL "kubectl exec -it: NUL bytes (or their ^@ echo) on the terminal"
elif grep -q 'TTY-CLEAN-42' "$tty_raw"; then
  check ok "kubectl exec -it: the session starts clean (no NUL bytes)"
else
  check FAIL "kubectl exec -it: no output ($(head -c 200 "$tty_raw"))"
fi
declare -A host_uid=()
for p in "${dpods[@]}"; do
  pid=$(host_pid "$(container_id "$p" httpd)")
  uid_map=$(tr -s ' ' < "/proc/$pid/uid_map" | sed 's/^ //')
  gid_map=$(tr -s ' ' < "/proc/$pid/gid_map" | sed 's/^ //')
  uids=$(awk '/^Uid:/ {print $2, $3, $4, $5}' "/proc/$pid/status")
  echo "   $p: httpd is host pid $pid, uid_map '$uid_map', gid_map '$gid_map', host uids $uids"
  read -r inner host len <<< "$uid_map"
  host_uid[$p]=$host
  if [ "$inner" = 0 ] && [ "$len" = 65536 ] && [ "$host" -ge 65536 ] && [ $((host % 65536)) = 0 ] &&
    [ "$gid_map" = "$uid_map" ] && [ "$uids" = "$host $host $host $host" ]; then
    check ok "$p: container root is host uid $host, /proc/$pid/uid_map maps 65536 ids"
  else
    check FAIL "$p: container root is an unprivileged host uid with a 65536-id /proc/<pid>/uid_map"
  fi
done
[ "${host_uid[${dpods[0]}]}" != "${host_uid[${dpods[1]}]}" ] &&
  check ok "the Deployment's two pods have different host ranges (${host_uid[*]})" ||
  check FAIL "the Deployment's two pods have different host ranges (${host_uid[*]})"

uid=$(kubectl get pod "$pod" -o jsonpath='{.metadata.uid}')
vols=$work/kubelet/pods/$uid/volumes
secret=$(kubectl exec "$pod" -c httpd -- cat /etc/secret/password)
owner=$(kubectl exec "$pod" -c httpd -- stat -L -c '%u:%g %a' /etc/secret/password)
host_owner=$(stat -L -c '%u:%g %a' "$vols/kubernetes.io~secret/secret/password")
host_fs=$(stat -f -c %T "$vols/kubernetes.io~secret/secret")
echo "   /etc/secret/password: '$secret', $owner inside; $host_owner on the host ($host_fs)"
[ "$secret" = not-so-secret ] && [ "${owner%% *}" = 0:0 ] &&
  check ok "root in the pod reads the Secret (cat), owned by its root" ||
  check FAIL "root in the pod reads the Secret (cat), owned by its root"
[ "${host_owner%% *}" = 0:0 ] && [ "$host_fs" = tmpfs ] &&
  check ok "on the host the Secret is still host root's file on kubelet's tmpfs (not chowned)" ||
  check FAIL "on the host the Secret is still host root's file on kubelet's tmpfs (not chowned)"
token=$(kubectl exec "$pod" -c httpd -- cat /var/run/secrets/tokens/token)
owner=$(kubectl exec "$pod" -c httpd -- stat -L -c '%u:%g %a' /var/run/secrets/tokens/token)
host_token=$(cat "$vols/kubernetes.io~projected/token/token")
host_owner=$(stat -L -c '%u:%g %a' "$vols/kubernetes.io~projected/token/token")
host_fs=$(stat -f -c %T "$vols/kubernetes.io~projected/token")
claims=$(python3 -c '
import base64, json, sys
p = sys.argv[1].split(".")[1]
c = json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)))
print(c["aud"][0], c["sub"])' "$token" 2>/dev/null || true)
echo "   token: ${#token} bytes, aud and sub '$claims', $owner inside; $host_owner on the host ($host_fs)"
[ "$claims" = "crius-test system:serviceaccount:default:default" ] && [ "${owner%% *}" = 0:0 ] &&
  [ "$token" = "$host_token" ] &&
  check ok "root in the pod reads the projected service-account token (audience crius-test)" ||
  check FAIL "root in the pod reads the projected service-account token (audience crius-test)"
[ "${host_owner%% *}" = 0:0 ] && [ "$host_fs" = tmpfs ] &&
  check ok "on the host the token is still host root's file on kubelet's tmpfs (not chowned)" ||
  check FAIL "on the host the token is still host root's file on kubelet's tmpfs (not chowned)"
greeting=$(kubectl exec "$pod" -c httpd -- cat /etc/config/greeting)
[ "$greeting" = "hello from a ConfigMap" ] && check ok "root in the pod reads the ConfigMap" ||
  check FAIL "root in the pod reads the ConfigMap ('$greeting')"
scratch=$(kubectl exec "$pod" -c httpd -- sh -c 'grep " /scratch " /proc/mounts | cut -d" " -f3; echo x > /scratch/f && stat -c %u:%g /scratch/f')
host_scratch=$(stat -c '%u:%g' "$vols/kubernetes.io~empty-dir/scratch/f" 2>/dev/null || echo absent)
echo "   /scratch: $(echo "$scratch" | tr '\n' ' ')inside, file owner $host_scratch on the host"
[ "$scratch" = "$(printf 'tmpfs\n0:0')" ] &&
  check ok "the memory emptyDir is a tmpfs the pod's root writes to" ||
  check FAIL "the memory emptyDir is a tmpfs the pod's root writes to"

logs=$(kubectl logs "$pod" -c httpd)
echo "   kubectl logs: $logs"
[ "$logs" = "userns-volumes: serving /www on port 8080 as 0" ] && check ok "kubectl logs" ||
  check FAIL "kubectl logs"

lport=$(free_port)
kubectl port-forward "pod/$pod" "$lport:8080" --address 127.0.0.1 > "$work/port-forward.log" 2>&1 &
pf_pid=$!
page=
for _ in $(seq 20); do page=$(curl -fsS --max-time 5 "http://127.0.0.1:$lport/" 2>/dev/null) && break; sleep 0.5; done
stop_pid "$pf_pid"
echo "   curl http://127.0.0.1:$lport/ (kubectl port-forward to $pod:8080): $page"
[ "$page" = "hello from a user-namespaced Deployment" ] && check ok "kubectl port-forward to busybox httpd" ||
  check FAIL "kubectl port-forward to busybox httpd ($(tr '\n' ' ' < "$work/port-forward.log"))"

attached=$( { echo "hello over attach"; sleep 3; } | timeout 10 "$bin/kubectl" --kubeconfig "$work/admin.kubeconfig" \
  attach -i "$pod" -c echo 2>"$work/attach.err" || true)
echo "   kubectl attach -i -c echo: $(echo "$attached" | tr '\n' ' ')"
[[ $attached == *"echo: hello over attach"* ]] && check ok "kubectl attach: stdin in, stdout out" ||
  check FAIL "kubectl attach: stdin in, stdout out ($(tr '\n' ' ' < "$work/attach.err"))"

head -c 100000 /dev/urandom | base64 > "$work/cp-in"
kubectl cp "$work/cp-in" "$pod:/scratch/cp-in" -c httpd >/dev/null 2>&1 || true
kubectl cp "$pod:/scratch/cp-in" "$work/cp-out" -c httpd >/dev/null 2>&1 || true
inside=$(kubectl exec "$pod" -c httpd -- md5sum /scratch/cp-in | cut -d' ' -f1)
if [ "$inside" = "$(md5sum < "$work/cp-in" | cut -d' ' -f1)" ] && cmp -s "$work/cp-in" "$work/cp-out"; then
  check ok "kubectl cp into the pod and back ($(wc -c < "$work/cp-in") bytes)"
else
  check FAIL "kubectl cp into the pod and back"
fi

step "userns-httpd, strict-groups, merge-groups (integration/pods/*.yaml as Pods)"
ip=$(kubectl get pod userns-httpd -o jsonpath='{.status.podIP}')
page=$(curl -fsS --max-time 5 "http://$ip/" || true)
echo "   curl http://$ip/: $page"
[ "$page" = "hello from root in a user namespace" ] &&
  check ok "userns-httpd: the pod's root serves port 80 on $ip" || check FAIL "userns-httpd: the pod's root serves port 80 on $ip"
for policy in strict merge; do
  [ $policy = strict ] && want="3000 4000" || want="3000 4000 50000"
  groups=$(kubectl exec $policy-groups -- id -G)
  user=$(kubectl get pod $policy-groups -o json |
    python3 -c 'import json,sys; print(json.dumps(json.load(sys.stdin)["status"]["containerStatuses"][0].get("user"), sort_keys=True))')
  want_user=$(python3 -c 'import json,sys; g=[int(x) for x in sys.argv[1].split()]; print(json.dumps({"linux": {"gid": 3000, "supplementalGroups": g, "uid": 1000}}, sort_keys=True))' "$want")
  echo "   $policy-groups: id -G '$groups'; status.containerStatuses[0].user $user"
  [ "$groups" = "$want" ] && [ "$user" = "$want_user" ] &&
    check ok "supplementalGroupsPolicy ${policy^}: id -G and status.containerStatuses[].user say uid 1000, gid 3000, groups $want" ||
    check FAIL "supplementalGroupsPolicy ${policy^}: id -G and status.containerStatuses[].user say uid 1000, gid 3000, groups $want"
done

step "deployment/$deploy replaces a deleted pod"
kubectl delete pod "$pod" --wait=true --timeout 60s | sed 's/^/   /'
replaced() {
  mapfile -t now < <(deploy_pods)
  [ ${#now[@]} = 2 ] && [[ " ${now[*]} " != *" $pod "* ]] &&
    [ "$(kubectl get deployment $deploy -o jsonpath='{.status.readyReplicas}')" = 2 ]
}
if until_ok 120 replaced; then
  check ok "$pod was replaced: $(deploy_pods | tr '\n' ' ')Ready"
else
  check FAIL "$pod was replaced by a Ready pod"; kubectl get pods -o wide
fi
record_pod_pids

step "criusd restart under running pods"
sandboxes=$(crictl pods -q --state ready | sort)
declare -A ctr_pid=()
for c in $(crictl ps -q --state running); do ctr_pid[$c]=$(host_pid "$c"); done
stop_pid "$criusd_pid"
echo "   stopped criusd (pid $criusd_pid); $(echo "$sandboxes" | wc -w) sandboxes, ${#ctr_pid[@]} containers running"
alive=0
for c in "${!ctr_pid[@]}"; do kill -0 "${ctr_pid[$c]}" 2>/dev/null && alive=$((alive + 1)); done
if start_criusd; then
  check ok "criusd started again (pid $criusd_pid) while ${alive}/${#ctr_pid[@]} containers kept running"
else
  check FAIL "criusd started again"; tail -20 "$work/criusd.log"
fi
same=1
[ "$(crictl pods -q --state ready | sort)" = "$sandboxes" ] || same=
for c in "${!ctr_pid[@]}"; do
  [ "$(host_pid "$c" 2>/dev/null)" = "${ctr_pid[$c]}" ] || same=
done
[ -n "$same" ] && [ "$alive" = "${#ctr_pid[@]}" ] &&
  check ok "after the restart crius reports the same sandboxes and containers, with the same pids" ||
  check FAIL "after the restart crius reports the same sandboxes and containers, with the same pids"
all_ready() {
  kubectl wait --for=condition=Ready pod --all --timeout 5s >/dev/null &&
    [ "$(kubectl get pods -o jsonpath='{range .items[*]}{range .status.containerStatuses[*]}{.restartCount}{"\n"}{end}{end}' | sort -u)" = 0 ]
}
sleep 12 # a kubelet sync after the restart
if until_ok 30 all_ready; then
  check ok "every pod still Running and Ready in the API server, no container restarted"
else
  check FAIL "every pod still Running and Ready in the API server, no container restarted"
  kubectl get pods -o wide
fi
mapfile -t dpods < <(deploy_pods)
out=$(kubectl exec "${dpods[0]}" -c httpd -- cat /etc/secret/password 2>&1 || true)
[ "$out" = not-so-secret ] && check ok "kubectl exec after the restart" ||
  check FAIL "kubectl exec after the restart ($out)"

step "kubelet's /stats/summary through the API server (kubectl get --raw .../proxy/stats/summary)"
# Prints "pod rx-bytes tx-bytes interface containers" per pod; exits 0 when each pod has network
# figures and each container memory figures.
stats_summary() {
  python3 -c '
import json, sys
want = set(sys.argv[1:])
pods = {p["podRef"]["name"]: p for p in json.load(sys.stdin).get("pods", []) if p["podRef"]["namespace"] == "default"}
ok = want <= set(pods)
for n in sorted(pods):
    p = pods[n]
    net = p.get("network") or {}
    ifs = ",".join(dict.fromkeys(([net["name"]] if net.get("name") else []) + [i["name"] for i in net.get("interfaces", [])]))
    mem = all(c.get("memory", {}).get("workingSetBytes") for c in p.get("containers", []))
    print(n, "rx", net.get("rxBytes", "-"), "tx", net.get("txBytes", "-"), "interface", ifs or "-",
          "containers", len(p.get("containers", [])), "memory" if mem else "no-memory")
    ok = ok and net.get("rxBytes") is not None and net.get("txBytes") is not None and bool(p.get("containers")) and mem
sys.exit(0 if ok else 1)
' "$@"
}
stats_ok=
want_pods=("${pods[@]}" $(deploy_pods))
for _ in $(seq 40); do
  if kubectl get --raw "/api/v1/nodes/$node/proxy/stats/summary" > "$work/summary.json" 2> "$work/summary.err" &&
    out=$(stats_summary "${want_pods[@]}" < "$work/summary.json" 2>&1); then
    stats_ok=1; break
  fi
  sleep 2
done
echo "$out" | sed 's/^/   /'
[ -s "$work/summary.err" ] && sed 's/^/   /' "$work/summary.err"
[ -n "$stats_ok" ] && check ok "every pod has network (rx/tx) and its containers memory figures" ||
  check FAIL "every pod has network (rx/tx) and its containers memory figures"

step "tear down: delete the workloads, stop kubelet, criusd and the control plane"
record_pod_pids
kubectl delete deployment $deploy --wait=true --timeout 60s | sed 's/^/   /'
kubectl delete pod --all --wait=true --timeout 90s | sed 's/^/   /'
deleted=$(date +%s)
sleep 3
left=$(crictl pods -q | wc -l)
echo "   3 s after 'kubectl delete pod --all' returned, crius still holds $left sandbox(es):"
crictl pods | sed 's/^/     /'
kubectl delete secret,configmap -l app=crius-demo | sed 's/^/   /'
gone=
for _ in $(seq 90); do
  if [ -z "$(crictl pods -q)" ]; then gone=1; break; fi
  sleep 1
done
[ -n "$gone" ] && check ok "kubelet stopped and removed every pod in crius ($(( $(date +%s) - deleted )) s after the delete)" ||
  check FAIL "kubelet stopped and removed every pod in crius ($(crictl pods -q | wc -l) left)"
kubelet_mounts=$(grep -cE " $work/kubelet/pods/" /proc/self/mountinfo || true)
stop_pid "$kubelet_pid"
kubelet_pid=
stop_pid "$criusd_pid"
criusd_pid=
for c in kube-scheduler kube-controller-manager kube-apiserver etcd; do
  stop_pid "${cp_pids[$c]}"
done
all_pids=("${pod_pids[@]}" "${cp_pids[@]}")
cp_pids=()
left=
for p in "${all_pids[@]}"; do
  # A zombie has ended: it waits for the host's init (pod monitors are daemons) to reap it.
  state=$(sed -E 's/^.*\) (.).*$/\1/' "/proc/$p/stat" 2>/dev/null || true)
  [ -n "$state" ] && [ "$state" != Z ] && left+=" $p"
done
[ -z "$left" ] && check ok "no process is left (control plane, kubelet, criusd, pod monitors, sandboxes, containers)" ||
  check FAIL "no process is left (still there:$left)"
mounts=$(grep -cE " $work/(state|root)" /proc/self/mountinfo || true)
[ "$mounts" = 0 ] && [ "$kubelet_mounts" = 0 ] &&
  check ok "nothing of crius is mounted, nor any pod volume of kubelet's" ||
  check FAIL "nothing of crius is mounted ($mounts left), nor any pod volume of kubelet's ($kubelet_mounts left)"
netns=$(grep -c " $work/.* nsfs " /proc/self/mountinfo || true)
[ "$netns" = 0 ] && check ok "no network namespace is pinned" || check FAIL "no network namespace is pinned ($netns left)"
cgroups=$(find /sys/fs/cgroup/*/"$cgroot" -mindepth 1 -type d -name 'crius-*' 2>/dev/null | wc -l || true)
for c in /sys/fs/cgroup/*/"$cgroot"; do
  [ -d "$c" ] && find "$c" -depth -type d -exec rmdir {} + 2>/dev/null
done
cgroot_left=$(ls -d /sys/fs/cgroup/*/"$cgroot" 2>/dev/null | wc -l || true)
[ "$cgroups" = 0 ] && [ "$cgroot_left" = 0 ] &&
  check ok "no crius cgroup was left under /$cgroot, which is removed (kubelet's cgroups too)" ||
  check FAIL "no crius cgroup is left under /$cgroot ($cgroups left; $cgroot_left hierarchies keep /$cgroot)"
ports=$(ls "/sys/class/net/$bridge/brif" 2>/dev/null | wc -l || true)
ip link del "$bridge" 2>/dev/null || true
[ "$ports" = 0 ] && ! ip link show "$bridge" >/dev/null 2>&1 &&
  check ok "no veth was left on bridge $bridge, which is removed" ||
  check FAIL "no veth is left on bridge $bridge ($ports left)"
for f in kubelet kube-apiserver kube-controller-manager kube-scheduler; do
  if grep -E '^E[0-9]{4}' "$work/$f.log" > "$work/$f-errors.txt"; then
    echo "   $f logged $(wc -l < "$work/$f-errors.txt") error lines; the most frequent:"
    sed -E 's/^E[0-9]{4} [0-9:.]+ +[0-9]+ //' "$work/$f-errors.txt" | cut -c1-200 | sort | uniq -c | sort -rn | awk 'NR <= 8' | sed 's/^/   /'
  fi
done

echo
secs=$(( $(date +%s) - started ))
if [ "$fails" = 0 ]; then
  echo "cluster/run.sh: all $passed checks passed ($("$bin/kubelet" --version 2>&1), ${secs} s)"
else
  echo "cluster/run.sh: $fails of $((passed + fails)) checks failed ($("$bin/kubelet" --version 2>&1), ${secs} s)"
fi
[ "$fails" = 0 ]
