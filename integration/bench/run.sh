#!/usr/bin/env bash
# crius vs containerd, side by side in one run: installs the peers if missing, builds criusd and
# crius-bench in release mode and runs the bench. Needs root (namespaces, mounts, cgroups).
#
#   sudo integration/bench/run.sh [--quick] [--out FILE] [other crius-bench options]
#
# The markdown table goes to stdout and to --out (default integration/bench/results.md).
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ "$(id -u)" != 0 ]; then
  echo "integration/bench/run.sh: run as root (pods need namespaces, mounts and cgroups)" >&2
  exit 1
fi

# The peer (Debian's containerd with runc), CNI plugins, the loopback registry, the busybox the
# test images are made from, gcc for the pause binary, iptables for the bridge plugin's masquerade.
packages=(containerd runc curl containernetworking-plugins docker-registry busybox-static gcc libc6-dev iptables libseccomp-dev)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo is required (rustup)" >&2; exit 1; }

# Debian's containerd package starts a system containerd where systemd runs; the bench starts
# its own on a private root and socket, so a system one is left alone (it is merely idle load).

cargo build --release -p criusd
cargo build --release -p crius-bench

target_dir=$(cargo metadata --format-version 1 --no-deps 2>/dev/null \
  | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
target_dir=${target_dir:-target}
exec "$target_dir/release/crius-bench" --criusd "$target_dir/release/criusd" "$@"
