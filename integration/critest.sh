#!/usr/bin/env bash
# Runs the CRI conformance suite (critest from kubernetes-sigs/cri-tools) against crius.
#
#   integration/critest.sh PATH_TO_CRITEST [extra critest flags, e.g. -ginkgo.focus=...]
#
# Starts criusd on a temporary root, builds critest's images offline with
# ../shared/critest-images (or $CRITEST_IMAGES), serves them from a loopback registry that crius
# mirrors registry.k8s.io, gcr.io, k8s.gcr.io, public.ecr.aws and docker.io to, installs the
# default CNI conflist (bridge + portmap) in a private conf dir, runs critest, and cleans up.
# The report goes to $CRITEST_OUT (default: a file in the work dir, printed at the end).
# This script does not build critest; pass the path of a binary you have.
set -euo pipefail

critest=${1:?usage: integration/critest.sh PATH_TO_CRITEST [critest flags]}
shift
critest=$(realpath "$critest")
repo=$(cd "$(dirname "$0")/.." && pwd)
images_src=${CRITEST_IMAGES:-$repo/../shared/critest-images}
[ "$(id -u)" = 0 ] || { echo "critest.sh: run as root" >&2; exit 1; }
[ -x "$critest" ] || { echo "critest.sh: $critest is not executable" >&2; exit 1; }
[ -d "$images_src" ] || { echo "critest.sh: no critest image builder at $images_src" >&2; exit 1; }

need=()
for p in skopeo docker-registry containernetworking-plugins iptables gcc python3 libseccomp-dev pkg-config; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi

work=$(mktemp -d /var/tmp/crius-critest.XXXXXX)
# Like /run: user-namespaced pods reach their state directory beneath as an unprivileged uid.
chmod 0711 "$work"
criusd_pid= registry_pid= criusd=
cleanup() {
  # Keep critest's exit code: nothing in here may turn it into a failure.
  set +e
  [ -n "$criusd_pid" ] && kill "$criusd_pid" 2>/dev/null && wait "$criusd_pid" 2>/dev/null || true
  # Pod monitors outlive criusd by design: release every pod critest left behind.
  for pod in "$work"/state/pods/*/; do
    [ -d "$pod" ] && "$criusd" monitor --pod-dir "$pod" --cleanup >/dev/null 2>&1 || true
  done
  [ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null || true
  # Anything crius left mounted under the work dir is a bug, but never leave it behind.
  grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m" || true; done
  rm -rf "$work"
}
trap cleanup EXIT INT TERM

if [ -n "${CRIUSD_BIN:-}" ]; then
  criusd=$CRIUSD_BIN
else
  (cd "$repo" && cargo build --release -q -p criusd)
  criusd=$repo/target/release/criusd
fi

# Images: built once per machine and reused (they are reproducible).
cache=${CRITEST_IMAGES_CACHE:-/var/tmp/crius-critest-images}
if [ ! -s "$cache/out/refs.txt" ]; then
  "$images_src/prepare.sh" "$cache"
fi

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
"$images_src/push.sh" "$cache/out" "$registry" > "$work/push.log"

mkdir -p "$work/cni"
cp "$repo/integration/cni/10-crius.conflist" "$work/cni/"
cat > "$work/config.toml" <<TOML
root = "$work/root"
state = "$work/state"
listen = "$work/state/crius.sock"
cni_conf_dir = "$work/cni"
insecure_registries = ["$registry"]

[registry.mirrors]
"registry.k8s.io" = ["http://$registry"]
"gcr.io" = ["http://$registry"]
"k8s.gcr.io" = ["http://$registry"]
"public.ecr.aws" = ["http://$registry"]
"docker.io" = ["http://$registry"]
TOML
"$criusd" --config "$work/config.toml" --log-level "${CRIUS_LOG_LEVEL:-info}" > "$work/criusd.log" 2>&1 &
criusd_pid=$!
for _ in $(seq 200); do [ -S "$work/state/crius.sock" ] && break; sleep 0.05; done
[ -S "$work/state/crius.sock" ] || { cat "$work/criusd.log"; exit 1; }

out=${CRITEST_OUT:-$work/critest.log}
set +e
"$critest" --runtime-endpoint "unix://$work/state/crius.sock" \
  --image-endpoint "unix://$work/state/crius.sock" "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
set -e
echo "critest exit code $rc; summary:"
grep -E "^(Ran|FAIL!|SUCCESS!|PASS|FAIL)|Passed|Failed" "$out" | tail -5 || true
if [ "$rc" != 0 ] && [ -n "${CRIUS_KEEP_LOG:-}" ]; then cp "$work/criusd.log" "$CRIUS_KEEP_LOG"; fi
exit "$rc"
