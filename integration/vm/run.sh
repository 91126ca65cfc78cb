#!/usr/bin/env bash
# crius on the node shape most clusters run, in a VM: Debian bookworm with the 6.12 kernel,
# systemd as PID 1, cgroup v2 only. One command:
#
#   sudo integration/vm/run.sh [--smoke] [--critest PATH] [--kubelet PATH [--crictl PATH]]
#                              [--tests "sandbox containers ..."] [--no-build] [-- critest flags]
#
#  1. builds the guest image (build-image.sh) unless one built by the same script is cached in
#     $CRIUS_VM_DIR (default /var/tmp/crius-vm), keyed by the script's hash;
#  2. builds crius' Debian package (build-deb.sh), the demo and the end-to-end test binaries on
#     the host (--no-build: takes the ones already in target/ instead);
#  3. boots the guest with QEMU (TCG, user-mode network with restrict=on: no way out but ssh
#     forwarded on a free 127.0.0.1 port) on a throw-away overlay of the image;
#  4. installs the package in the guest as an operator would (apt-get install ./crius_*.deb; its
#     dependencies are in the image, the guest has no network);
#  5. runs guest/run.sh inside: the demo, checks of the packaged criusd.service over its CRI socket
#     (cgroupfs driver, limits in /sys/fs/cgroup, OOM, a user-namespaced pod, a restart of the
#     service), the chosen end-to-end test binaries against /usr/bin/criusd, and critest against
#     the service when --critest gives a binary;
#  6. powers the guest off (also on failure or Ctrl-C) and prints what passed and failed.
#
# --smoke: boot, install the package, the demo and the service checks only.
# Needs root, and from Debian (installed when missing): debootstrap, qemu-system-x86, qemu-utils.
# Network: Debian's archive while the image is built; none while it runs. See README.md here.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$repo/integration/vm
cache=${CRIUS_VM_DIR:-/var/tmp/crius-vm}
mem=${CRIUS_VM_MEMORY:-4096}
cpus=${CRIUS_VM_CPUS:-2}
default_tests="sandbox containers stats workloads security apparmor recovery"

smoke=0 build=1 critest= kubelet= crictl= tests=$default_tests critest_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) smoke=1 ;;
    --no-build) build=0 ;;
    --critest) critest=$(realpath "${2:?--critest needs a path}"); shift ;;
    --kubelet) kubelet=$(realpath "${2:?--kubelet needs a path}"); shift ;;
    --crictl) crictl=$(realpath "${2:?--crictl needs a path}"); shift ;;
    --tests) tests=${2?--tests needs a list}; shift ;;
    --) shift; critest_args=("$@"); break ;;
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "integration/vm/run.sh: run as root" >&2; exit 1; }
[ -z "$critest" ] || [ -x "$critest" ] || { echo "run.sh: $critest is not executable" >&2; exit 1; }
if [ -n "$kubelet" ]; then
  [ -x "$kubelet" ] || { echo "run.sh: $kubelet is not executable" >&2; exit 1; }
  # crictl: given, on PATH, or beside critest.
  [ -n "$crictl" ] || crictl=$(command -v crictl || true)
  [ -n "$crictl" ] || [ -z "$critest" ] || crictl=$(dirname "$critest")/crictl
  [ -x "$crictl" ] || { echo "run.sh: --kubelet needs crictl (--crictl PATH)" >&2; exit 1; }
fi

t0=$(date +%s)
declare -A took
now() { date +%s; }
log() { printf '\n[vm %(%H:%M:%S)T] %s\n' -1 "$*"; }

# Host prerequisites, from Debian. qemu-system-x86 must match an installed qemu-utils: where
# qemu-utils comes from bookworm-backports, bookworm's qemu-system-x86 would remove it, so the
# backports one is taken then.
host_packages() {
  local need=()
  command -v debootstrap > /dev/null || need+=(debootstrap)
  command -v qemu-img > /dev/null || need+=(qemu-utils)
  command -v qemu-system-x86_64 > /dev/null || need+=(qemu-system-x86)
  command -v mkfs.ext4 > /dev/null || need+=(e2fsprogs)
  command -v ssh > /dev/null || need+=(openssh-client)
  command -v strip > /dev/null || need+=(binutils)
  [ ${#need[@]} = 0 ] && return 0
  log "installing host packages: ${need[*]}"
  apt-get update -q > /dev/null
  if apt-get install -s -y --no-install-recommends "${need[@]}" 2>/dev/null | grep -q '^Remv'; then
    if ! apt-cache policy | grep -q bookworm-backports; then
      printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm-backports\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
        > /etc/apt/sources.list.d/bookworm-backports.sources
      apt-get update -q > /dev/null
    fi
    if apt-get install -s -y --no-install-recommends -t bookworm-backports "${need[@]}" | grep -q '^Remv'; then
      echo "run.sh: installing ${need[*]} would remove packages; install them by hand" >&2
      exit 1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends -t bookworm-backports "${need[@]}"
  else
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${need[@]}"
  fi
}
host_packages

# shellcheck source=integration/vm/qemu.sh
. "$here/qemu.sh"

# ---- 1. the image, cached by the hash of its build script -------------------------------------
s=$(now)
vm_image "$cache"
took[image]=$(( $(now) - s ))

# ---- 2. what goes into the guest -----------------------------------------------------------------
run=$(mktemp -d "$cache/run.XXXXXX")
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  if [ -n "$vm_pid" ]; then
    log "powering the guest off"
    vm_poweroff
  fi
  rm -rf "$run"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

s=$(now)
stage=$run/stage
mkdir -p "$stage/bin" "$stage/tests" "$stage/guest"
if [ "$build" = 1 ]; then
  log "building the package, the demo and the test binaries (cargo, nice 19)"
  deb=$("$here/build-deb.sh" --out "$run")
  (cd "$repo" && nice -n 19 cargo build --release -q -p crius-tests --bin crius-demo)
  demo=$repo/target/release/crius-demo
  # The recovery tests need failpoints, a cargo feature of criusd (debug build).
  if [ "$smoke" = 0 ] && [[ " $tests " == *" recovery "* ]]; then
    (cd "$repo" && nice -n 19 cargo build -q -p criusd --features criusd/failpoints)
  fi
  declare -A test_bin
  if [ "$smoke" = 0 ] && [ -n "$tests" ]; then
    args=()
    for t in $tests; do args+=(--test "$t"); done
    while read -r name path; do test_bin[$name]=$path; done < <(
      cd "$repo" && nice -n 19 cargo test --no-run -q -p crius-tests "${args[@]}" --message-format=json |
        python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and "test" in m["target"]["kind"]:
        print(m["target"]["name"], m["executable"])')
  fi
else
  deb=$("$here/build-deb.sh" --no-build --out "$run")
  demo=$(ls -t "$repo"/target/release/crius-demo "$repo"/target/debug/crius-demo 2>/dev/null | head -1)
  declare -A test_bin
  for t in $tests; do
    test_bin[$t]=$(find "$repo/target/debug/deps" -maxdepth 1 -type f -executable -regex ".*/${t}-[0-9a-f]+" -printf '%T@ %p\n' |
      sort -rn | head -1 | cut -d' ' -f2)
  done
fi
[ -x "${demo:-}" ] || { echo "run.sh: no crius-demo binary (build it or drop --no-build)" >&2; exit 1; }
cp "$deb" "$stage/"
cp "$demo" "$stage/bin/crius-demo"
if [ "$smoke" = 0 ]; then
  for t in $tests; do
    [ -x "${test_bin[$t]:-}" ] || { echo "run.sh: no test binary for $t" >&2; exit 1; }
    echo "test binary $t: ${test_bin[$t]} ($(date -r "${test_bin[$t]}" '+%F %T'))"
    strip -g -o "$stage/tests/$t" "${test_bin[$t]}"
  done
fi
if [ "$smoke" = 0 ] && [[ " $tests " == *" recovery "* ]] && [ -x "$repo/target/debug/criusd" ]; then
  strip -g -o "$stage/bin/criusd-debug" "$repo/target/debug/criusd"
fi
cp "$repo/proto/api.proto" "$here/known-failures.txt" "$stage/"
cp "$here"/guest/* "$stage/guest/"
if { [ -n "$critest" ] || [ -n "$kubelet" ]; } && [ "$smoke" = 0 ]; then
  images_src=${CRITEST_IMAGES:-$repo/../shared/critest-images}
  images_cache=${CRITEST_IMAGES_CACHE:-/var/tmp/crius-critest-images}
  [ -s "$images_cache/out/refs.txt" ] || "$images_src/prepare.sh" "$images_cache"
  mkdir -p "$stage/critest"
  [ -z "$critest" ] || cp "$critest" "$stage/critest/critest"
  cp "$images_src/push.sh" "$stage/critest/push.sh"
  cp -r "$images_cache/out" "$stage/critest/images"
fi
if [ -n "$kubelet" ] && [ "$smoke" = 0 ]; then
  mkdir -p "$stage/kubelet" "$stage/repo/integration/kubelet"
  strip -o "$stage/kubelet/kubelet" "$kubelet" 2>/dev/null || cp "$kubelet" "$stage/kubelet/kubelet"
  cp "$crictl" "$stage/kubelet/crictl"
  cp "$repo/integration/kubelet/run.sh" "$stage/repo/integration/kubelet/"
  cp -r "$repo/integration/pods" "$stage/repo/integration/"
fi
took[build]=$(( $(now) - s ))

# ---- 3. boot ---------------------------------------------------------------------------------
s=$(now)
vm_boot "$run" "$cpus" "$mem"
took[boot]=$(( $(now) - s ))
log "guest up after ${took[boot]}s: $(guest 'uname -r; systemctl --version | head -1; stat -fc %T /sys/fs/cgroup' | tr '\n' ' ')"

# ---- 4. install the package as an operator would ---------------------------------------------------
s=$(now)
log "copying $(du -sh "$stage" | cut -f1) into the guest and installing $(basename "$deb")"
tar -C "$stage" -cf - . | guest 'rm -rf /root/crius-vm && mkdir -p /root/crius-vm && tar -C /root/crius-vm -xf -'
guest "DEBIAN_FRONTEND=noninteractive apt-get install -y -q /root/crius-vm/$(basename "$deb")"
took[install]=$(( $(now) - s ))

# ---- 5. the checks inside ------------------------------------------------------------------------
s=$(now)
guest_args=()
[ "$smoke" = 1 ] && guest_args+=(--smoke)
[ "$smoke" = 0 ] && guest_args+=(--tests "$tests")
[ -n "$kubelet" ] && [ "$smoke" = 0 ] && guest_args+=(--kubelet)
[ -n "$critest" ] && [ "$smoke" = 0 ] && guest_args+=(--critest -- "${critest_args[@]}")
# The settings guest/run.sh reads go along (ssh passes no environment).
guest_env=()
for v in CRIUS_VM_CRITEST_DRIVER CRIUS_VM_TEST_THREADS; do
  [ -n "${!v:-}" ] && guest_env+=("$v=${!v}")
done
set +e
guest "env ${guest_env[*]+$(printf '%q ' "${guest_env[@]}")} /root/crius-vm/guest/run.sh $(printf '%q ' "${guest_args[@]}")"
guest_rc=$?
set -e
took[guest]=$(( $(now) - s ))
logs=$cache/last-run
rm -rf "$logs" && mkdir -p "$logs"
guest 'cd /root/crius-vm && tar -cf - summary.txt logs' 2>/dev/null | tar -C "$logs" -xf - 2>/dev/null || true
cp "$run/serial.log" "$logs/serial.log" 2>/dev/null || true

# ---- 6. summary ------------------------------------------------------------------------------------
echo
echo "================ crius VM run ($([ "$smoke" = 1 ] && echo smoke || echo full)) ================"
echo "guest: $(tr '\n' ' ' < "$image/versions.txt")"
if [ -s "$logs/summary.txt" ]; then
  cat "$logs/summary.txt"
else
  echo "FAIL guest: no summary (guest/run.sh exit $guest_rc)"
  guest_rc=1
fi
echo "timings: image ${took[image]}s, host build ${took[build]}s, boot ${took[boot]}s, install ${took[install]}s, in guest ${took[guest]}s, total $(( $(now) - t0 ))s"
echo "logs: $logs"
passed=$(grep -c '^PASS' "$logs/summary.txt" 2>/dev/null || true)
failed=$(grep -c '^FAIL' "$logs/summary.txt" 2>/dev/null || true)
echo "vm: ${passed:-0} passed, ${failed:-0} failed"
[ "$guest_rc" = 0 ] && [ "${failed:-0}" = 0 ]
