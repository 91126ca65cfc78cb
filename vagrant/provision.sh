#!/usr/bin/env bash
# Provisions a one-node Kubernetes cluster on crius: installs criusd and its systemd unit, crius'
# CNI network, kubelet, kubeadm and kubectl, runs `kubeadm init` with kubelet pointed at crius'
# socket, and runs the demo pods of integration/pods/ with `kubectl apply`.
#
#   vagrant/provision.sh                          in the VM (as root; the Vagrantfile runs it)
#   vagrant/provision.sh --no-vm --root DIR       install crius and write every config into DIR,
#                                                 touching nothing else (no packages, services,
#                                                 kernel settings or network); CI runs this
#
# Options: --criusd PATH installs that binary instead of building target/release/criusd;
# --deb PATH installs crius from its Debian package (integration/vm/build-deb.sh) instead: no
# compiler, no rustup, no apt-get update (the offline box has the package's dependencies);
# --offline stops before the first step that needs the internet (pkgs.k8s.io, then kubeadm's
# control-plane images) and says where an online run continues;
# --k8s-version vX.Y picks the pkgs.k8s.io release line (default v1.33: user namespaces and
# supplementalGroupsPolicy are beta and on there).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
root=/
vm=1
criusd_bin=
deb=
offline=
k8s_version=v1.33
while [ $# -gt 0 ]; do
  case $1 in
    --root) root=${2:?--root needs a directory}; shift 2 ;;
    --no-vm) vm=; shift ;;
    --criusd) criusd_bin=${2:?--criusd needs a path}; shift 2 ;;
    --deb) deb=$(realpath "${2:?--deb needs a path}"); shift 2 ;;
    --offline) offline=1; shift ;;
    --k8s-version) k8s_version=${2:?--k8s-version needs vX.Y}; shift 2 ;;
    -h | --help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "provision.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$vm" ] && { [ "$root" = / ] || [ -z "$root" ]; }; then
  echo "provision.sh: --no-vm writes into a directory given with --root DIR (not /)" >&2
  exit 2
fi
mkdir -p "$root"
root=$(cd "$root" && pwd)
# Paths on the node; written beneath $root.
sock=/run/crius/crius.sock
at() { printf '%s%s' "${root%/}" "$1"; }

# Writes stdin to the node path $1 (mode $2), whole: a temporary name, then a rename.
put() {
  local dest
  dest=$(at "$1")
  mkdir -p "$(dirname "$dest")"
  cat > "$dest.tmp.$$"
  chmod "$2" "$dest.tmp.$$"
  mv -f "$dest.tmp.$$" "$dest"
  echo "wrote $1"
}

install_crius() {
  if [ -z "$criusd_bin" ]; then
    if [ -n "$vm" ] || [ ! -x "$repo/target/release/criusd" ]; then
      (cd "$repo" && cargo build --release -q -p criusd)
    fi
    criusd_bin=$repo/target/release/criusd
  fi
  [ -x "$criusd_bin" ] || { echo "provision.sh: $criusd_bin is not an executable criusd" >&2; exit 1; }
  put /usr/local/bin/criusd 0755 < "$criusd_bin"
  put /etc/systemd/system/criusd.service 0644 < "$repo/integration/systemd/criusd.service"
  put /etc/cni/net.d/10-crius.conflist 0644 < "$repo/integration/cni/10-crius.conflist"
  write_crius_config
}

# crius' configuration on the node (with --deb: over the package's default one).
write_crius_config() {
  put /etc/crius/config.toml 0644 <<TOML
# crius on this node (every key is optional; see crius' README). kubelet reaches crius at listen.
root = "/var/lib/crius"
state = "/run/crius"
listen = "$sock"
cni_conf_dir = "/etc/cni/net.d"
cni_bin_dirs = ["/opt/cni/bin", "/usr/lib/cni"]
cgroup_driver = "cgroupfs"
TOML
  put /etc/crictl.yaml 0644 <<YAML
runtime-endpoint: unix://$sock
image-endpoint: unix://$sock
timeout: 30
YAML
}

write_kubernetes_configs() {
  # The one-node cluster: kubelet on crius' socket with the cgroupfs driver (crius' default).
  put /etc/kubeadm/kubeadm.yaml 0644 <<YAML
apiVersion: kubeadm.k8s.io/v1beta4
kind: InitConfiguration
nodeRegistration:
  criSocket: unix://$sock
  taints: []
---
apiVersion: kubeadm.k8s.io/v1beta4
kind: ClusterConfiguration
networking:
  podSubnet: 10.87.0.0/16
---
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
containerRuntimeEndpoint: unix://$sock
imageServiceEndpoint: unix://$sock
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
featureGates:
  UserNamespacesSupport: true
  SupplementalGroupsPolicy: true
  PodAndContainerStatsFromCRI: true
YAML
  put /etc/modules-load.d/crius-kubernetes.conf 0644 <<'CONF'
overlay
br_netfilter
CONF
  put /etc/sysctl.d/99-crius-kubernetes.conf 0644 <<'CONF'
net.ipv4.ip_forward = 1
net.bridge.bridge-nf-call-iptables = 1
net.bridge.bridge-nf-call-ip6tables = 1
CONF
}

if [ -z "$vm" ]; then
  install_crius
  write_kubernetes_configs
  echo "crius and the node's configuration are in $root (nothing else was touched)"
  exit 0
fi

# ---- In the VM from here on: packages, services, the cluster. ----
[ "$(id -u)" = 0 ] || { echo "provision.sh: run as root" >&2; exit 1; }
major_minor=$(uname -r | awk -F. '{print $1 * 100 + $2}')
if [ "$major_minor" -lt 603 ]; then
  echo "provision.sh: Linux $(uname -r) cannot idmap tmpfs; boot a 6.3+ kernel first" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
if [ -n "$deb" ]; then
  # The package's dependencies are installed already (in the offline box: nothing is fetched);
  # it brings criusd, its unit and the CNI network, and starts criusd.service.
  apt-get install -y -q --reinstall "$deb" # the same version rebuilt is installed again
  write_crius_config
else
  apt-get update -q
  apt-get install -y -q curl ca-certificates gpg build-essential pkg-config libseccomp-dev git \
    iptables iproute2 conntrack socat ethtool
  if ! command -v cargo >/dev/null; then
    [ -x /root/.cargo/bin/cargo ] ||
      curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH=/root/.cargo/bin:$PATH
  fi
  install_crius
fi
write_kubernetes_configs
modprobe overlay
modprobe br_netfilter
sysctl --system >/dev/null
swapoff -a
systemctl daemon-reload
systemctl enable --now criusd
# The package started criusd on its own default configuration.
[ -z "$deb" ] || systemctl restart criusd
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done

if [ -n "$offline" ]; then
  [ -S "$sock" ] && systemctl is-active --quiet criusd ||
    { systemctl status --no-pager criusd || true; echo "provision.sh: criusd is not running" >&2; exit 1; }
  cat <<EOF
== provision.sh --offline: done up to the first step that needs the internet
crius is running: criusd.service $(systemctl is-active criusd), socket $sock, kernel $(uname -r),
$(stat -fc %T /sys/fs/cgroup) at /sys/fs/cgroup; the node's configuration is written
(/etc/kubeadm/kubeadm.yaml, /etc/crius/config.toml, /etc/crictl.yaml, modules, sysctls; swap off).
An online run continues here, with:
  1. apt-get install gpg conntrack socat ethtool, the apt repository of pkgs.k8s.io
     (core:/stable:/$k8s_version) and kubelet, kubeadm, kubectl (with cri-tools, kubernetes-cni);
  2. kubeadm init --config /etc/kubeadm/kubeadm.yaml, which pulls the control-plane images
     (kube-apiserver, kube-controller-manager, kube-scheduler, kube-proxy, etcd, coredns, pause)
     from registry.k8s.io through crius;
  3. kubectl apply -R -f integration/pods/ and the checks of the demo pods.
(vagrant up with the default box, debian/bookworm64, runs all of it.)
EOF
  exit 0
fi
if [ -n "$deb" ]; then
  apt-get update -q
  apt-get install -y -q curl ca-certificates gpg iptables iproute2 conntrack socat ethtool
fi

# kubelet, kubeadm and kubectl from the Kubernetes project's packages (kubernetes-cni brings the
# bridge, host-local and portmap plugins crius' network uses).
install -d -m 0755 /etc/apt/keyrings
curl -fsSL "https://pkgs.k8s.io/core:/stable:/$k8s_version/deb/Release.key" |
  gpg --batch --yes --dearmor -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
echo "deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/$k8s_version/deb/ /" \
  > /etc/apt/sources.list.d/kubernetes.list
apt-get update -q
apt-get install -y -q kubelet kubeadm kubectl
apt-mark hold kubelet kubeadm kubectl >/dev/null
crictl info > /dev/null && echo "crictl reaches crius at $sock"

export KUBECONFIG=/etc/kubernetes/admin.conf
if [ ! -f "$KUBECONFIG" ]; then
  kubeadm init --config /etc/kubeadm/kubeadm.yaml
fi
install -d -m 0700 /root/.kube && cp "$KUBECONFIG" /root/.kube/config
# The node object appears once kubelet has registered; then it turns Ready when crius reports
# RuntimeReady and NetworkReady.
for _ in $(seq 60); do kubectl get nodes -o name 2>/dev/null | grep -q . && break; sleep 2; done
kubectl wait --for=condition=Ready node --all --timeout=300s

kubectl apply -R -f "$repo/integration/pods/"
kubectl wait --for=condition=Ready pod/userns-httpd pod/strict-groups pod/merge-groups --timeout=300s
echo "== userns-httpd (hostUsers: false)"
kubectl exec userns-httpd -- id
kubectl exec userns-httpd -- cat /proc/self/uid_map
pid=$(crictl inspect -o go-template --template '{{.info.pid}}' \
  "$(crictl ps -q --name httpd --label io.kubernetes.pod.name=userns-httpd | head -1)")
ps -o user,pid,args -p "$pid"
ip=$(kubectl get pod userns-httpd -o jsonpath='{.status.podIP}')
curl -fsS "http://$ip/"
for pod in strict-groups merge-groups; do
  echo "== $pod"
  kubectl exec "$pod" -- id
  kubectl get pod "$pod" -o jsonpath='{.status.containerStatuses[0].user}'
  echo
done
