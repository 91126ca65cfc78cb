#!/usr/bin/env bash
# The crius test suite: installs what a fresh machine lacks, then runs formatting, lints, unit and
# end-to-end tests. Needs root (the end-to-end tests make namespaces and mounts).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "integration/test.sh: run as root (end-to-end tests create namespaces and mounts)" >&2
  exit 1
fi

# Debian packages used by the tests: the registry, the busybox the test images are made from,
# CNI plugins and the tools the network tests look with, and a C compiler with a static libc
# for the exec_exposure attacker, openssl for the TLS registry's certificates, AppArmor's
# parser, which compiles crius' default profile in a unit test.
packages=(busybox-static docker-registry containernetworking-plugins iptables iproute2 util-linux libseccomp-dev gcc libc6-dev openssl apparmor)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "cargo is required (rustup)" >&2; exit 1; }
rustup component add rustfmt clippy >/dev/null 2>&1 || true

set -x
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The recovery tests crash criusd at named steps: its failpoints are a cargo feature.
cargo build --workspace --bins --features criusd/failpoints
cargo test --workspace
