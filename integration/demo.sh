#!/usr/bin/env bash
# The crius demo: builds criusd, starts it on built-in defaults (its own temporary root, state
# and socket), serves its demo image from a loopback registry, and runs a pod with a user namespace:
# root serving port 80 as an unprivileged host uid, and supplementalGroupsPolicy Merge and Strict,
# checking from the host what it prints.
# Installs its Debian prerequisites and, if /etc/cni/net.d holds no network, crius' default
# bridge network. Needs root. Exits 0 only if every step did what it printed.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "integration/demo.sh: run as root" >&2; exit 1; }

need=()
for p in containernetworking-plugins iptables iproute2 docker-registry busybox-static libseccomp-dev; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
fi
if ! ls /etc/cni/net.d/*.conflist /etc/cni/net.d/*.conf /etc/cni/net.d/*.json >/dev/null 2>&1; then
  install -D -m 0644 integration/cni/10-crius.conflist /etc/cni/net.d/10-crius.conflist
  echo "installed crius' default CNI network: /etc/cni/net.d/10-crius.conflist"
fi

cargo build --release -q -p criusd -p crius-tests --bin criusd --bin crius-demo
exec target/release/crius-demo --criusd target/release/criusd
