#!/usr/bin/env bash
# Runs inside the guest (as root), after integration/vm/run.sh installed crius' .deb and copied
# this directory's parent (/root/crius-vm) in. Each part appends one line to summary.txt:
#   PASS|FAIL <part> <seconds>s <detail>
# and keeps its full output in logs/<part>.log.
#
#   run.sh [--smoke] [--tests "sandbox containers ..."] [--kubelet] [--critest] [-- critest flags]
set -uo pipefail
base=$(cd "$(dirname "$0")/.." && pwd)
smoke=0 tests="" critest=0 kubelet=0 critest_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --smoke) smoke=1 ;;
    --tests) tests=$2; shift ;;
    --critest) critest=1 ;;
    --kubelet) kubelet=1 ;;
    --) shift; critest_args=("$@"); break ;;
    *) echo "guest/run.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
summary=$base/summary.txt logs=$base/logs
mkdir -p "$logs"
: > "$summary"
registry_pid=
trap '[ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null' EXIT

# part NAME COMMAND...: runs it with output to the console and logs/NAME.log, records the result.
part() {
  local name=$1 start rc detail
  shift
  echo
  echo "######## $name: $*"
  start=$(date +%s)
  "$@" 2>&1 | tee "$logs/$name.log"
  rc=${PIPESTATUS[0]}
  detail=$(detail_of "$name")
  # A test binary (or critest) whose every failure is listed in known-failures.txt passes.
  if [ "$rc" != 0 ] && [ -n "$(failed_tests "$name")" ] && [ -z "$(unknown_failures "$name")" ]; then
    rc=0
  fi
  if [ "$rc" = 0 ]; then
    echo "PASS $name $(( $(date +%s) - start ))s $detail" >> "$summary"
  else
    echo "FAIL $name $(( $(date +%s) - start ))s (exit $rc) $detail" >> "$summary"
  fi
  return 0
}

# The failed tests of a part: cargo's "test NAME ... FAILED", critest's "[FAIL] SPEC".
failed_tests() {
  case $1 in
    test-*) sed -n 's/^test \(.*\) \.\.\. FAILED$/\1/p' "$logs/$1.log" ;;
    critest) sed -n 's/^ *\[FAIL\] \(.*\)$/\1/p' "$logs/$1.log" | sort -u ;;
  esac
}
# The names known-failures.txt lists for a part (test-NAME: binary NAME).
known_tests() {
  awk -F ' [|] ' -v b="${1#test-}" '$1 == b {print $2}' "$base/known-failures.txt" 2>/dev/null
}
# Failed tests not listed (critest's entries are parts of the spec's name).
unknown_failures() {
  local t k listed
  failed_tests "$1" | while IFS= read -r t; do
    listed=0
    while IFS= read -r k; do
      if [[ $1 == critest && $t == *"$k"* ]] || [ "$t" = "$k" ]; then listed=1; fi
    done < <(known_tests "$1")
    [ "$listed" = 1 ] || echo "$t"
  done
}

# A one-line account of a part's log: test counts and failed tests, or the failed checks.
detail_of() {
  local log=$logs/$1.log
  case $1 in
    test-*)
      local passed failed ignored unknown known fixed
      passed=$(grep -o '[0-9]* passed' "$log" | awk '{s += $1} END {print s + 0}')
      failed=$(grep -o '[0-9]* failed' "$log" | awk '{s += $1} END {print s + 0}')
      ignored=$(grep -o '[0-9]* ignored' "$log" | awk '{s += $1} END {print s + 0}')
      unknown=$(unknown_failures "$1" | tr '\n' ' ')
      known=$(failed_tests "$1" | grep -vxF -f <(unknown_failures "$1"; echo /) | tr '\n' ' ')
      fixed=$(known_tests "$1" | while read -r t; do grep -q "^test $t ... ok$" "$log" && echo "$t"; done | tr '\n' ' ')
      echo "$passed passed, $failed failed, $ignored ignored${unknown:+; FAILED: $unknown}${known:+; known (v1-only test): $known}${fixed:+; listed in known-failures.txt but passed now: $fixed}"
      ;;
    critest)
      unknown=$(unknown_failures critest | tr '\n' ';')
      known=$(failed_tests critest | grep -vxF -f <(unknown_failures critest; echo /) | tr '\n' ';')
      echo "$(grep -E '^(Ran [0-9]+|FAIL!|SUCCESS!)' "$log" | tail -2 | tr '\n' ' ')${unknown:+ FAILED: $unknown}${known:+ known: $known}"
      ;;
    *)
      grep -E '^ *FAIL |cri-check: |kubelet/run.sh: ' "$log" | head -4 | tr '\n' ' '
      ;;
  esac
}

facts() {
  echo "kernel $(uname -r); $(systemctl --version | head -1); cgroup fs: $(stat -fc %T /sys/fs/cgroup)"
  echo "crius package: $(dpkg-query -W -f '${Package} ${Version} ${Status}' crius)"
  echo "criusd.service: $(systemctl is-active criusd) ($(systemctl show -P ControlGroup criusd))"
  echo "failed units: $(systemctl --failed --no-legend --plain | awk '{print $1}' | tr '\n' ' ')"
  [ "$(stat -fc %T /sys/fs/cgroup)" = cgroup2fs ] && systemctl is-active -q criusd
}

# A registry on loopback with a busybox image, and criusd told (in its conffile, as an operator
# would) that it is plain HTTP.
registry=127.0.0.1:5000
start_registry() {
  mkdir -p /var/tmp/vm-registry
  cat > /var/tmp/vm-registry.yml <<YML
version: 0.1
log: { level: warn }
storage: { filesystem: { rootdirectory: /var/tmp/vm-registry }, delete: { enabled: true } }
http: { addr: $registry }
YML
  docker-registry serve /var/tmp/vm-registry.yml > "$logs/registry.log" 2>&1 &
  registry_pid=$!
  for _ in $(seq 100); do curl -fs "http://$registry/v2/" > /dev/null && break; sleep 0.2; done
  rm -rf /var/tmp/vm-busybox
  /usr/bin/python3 "$base/guest/busybox-image.py" /var/tmp/vm-busybox 1 &&
    skopeo copy --quiet --dest-tls-verify=false oci:/var/tmp/vm-busybox:1 "docker://$registry/vm/busybox:1" &&
    sed -i "1i insecure_registries = [\"$registry\"]" /etc/crius/config.toml &&
    systemctl restart criusd
}

cri_check() {
  local stubs=/var/tmp/cri-stubs
  rm -rf "$stubs" && mkdir -p "$stubs"
  # Debian's grpc_tools (protoc 3.x) does not know the debug_redact option: it changes nothing
  # on the wire, so it is dropped.
  sed -E 's/ *\[debug_redact *= *true\]//' "$base/api.proto" > "$stubs/api.proto"
  (cd "$stubs" && /usr/bin/python3 -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. api.proto) &&
    /usr/bin/python3 "$base/guest/cri-check.py" "$stubs" "$registry/vm/busybox:1" "$@"
}

# The same checks with the systemd cgroup driver set in the conffile (as an operator would),
# then the default driver back.
cri_check_systemd() {
  local rc
  sed -i '1i cgroup_driver = "systemd"' /etc/crius/config.toml
  systemctl restart criusd
  cri_check --systemd
  rc=$?
  sed -i '/^cgroup_driver = "systemd"$/d' /etc/crius/config.toml
  systemctl restart criusd
  return $rc
}

run_test() {
  local bin=$1 skip=() criusd=/usr/bin/criusd
  # Its precondition (no systemd running) cannot hold on this node.
  [ "$(basename "$bin")" = sandbox ] && skip=(--skip systemd_cgroup_driver_without_systemd_is_refused)
  # The recovery tests kill criusd at failpoints (CRIUS_FAILPOINT), which only a criusd built
  # with the `failpoints` feature has: they run against that debug build of the same tree.
  [ "$(basename "$bin")" = recovery ] && [ -x "$base/bin/criusd-debug" ] && criusd=$base/bin/criusd-debug
  echo "CRIUSD_BIN=$criusd"
  (cd /var/tmp && CRIUSD_BIN=$criusd RUST_BACKTRACE=1 "$bin" --test-threads="${CRIUS_VM_TEST_THREADS:-2}" "${skip[@]}")
}

# kubelet (standalone, static pods of integration/pods/) on its own criusd, both with the systemd
# cgroup driver: kubelet makes the kubepods slices through systemd, crius its scopes in them.
kubelet_run() {
  mkdir -p /var/tmp/kubelet-images && ln -sfn "$base/critest/images" /var/tmp/kubelet-images/out
  CRIUSD_BIN=/usr/bin/criusd CRIUS_CGROUP_DRIVER=systemd CRITEST_IMAGES="$base/critest" \
    CRITEST_IMAGES_CACHE=/var/tmp/kubelet-images PATH="$PATH:$base/kubelet" \
    "$base/repo/integration/kubelet/run.sh" "$base/kubelet/kubelet"
}

critest_run() {
  "$base/critest/push.sh" "$base/critest/images" "$registry" > "$logs/critest-push.log" || return 1
  {
    printf '[registry.mirrors]\n'
    for host in registry.k8s.io gcr.io k8s.gcr.io public.ecr.aws docker.io; do
      printf '"%s" = ["http://%s"]\n' "$host" "$registry"
    done
  } >> /etc/crius/config.toml
  # The node shape of the VM: the systemd cgroup driver (CRIUS_VM_CRITEST_DRIVER=cgroupfs for
  # the default one; the host's integration/critest.sh runs that).
  if [ "${CRIUS_VM_CRITEST_DRIVER:-systemd}" = systemd ]; then
    sed -i '1i cgroup_driver = "systemd"' /etc/crius/config.toml
  fi
  systemctl restart criusd
  for _ in $(seq 100); do [ -S /run/crius/crius.sock ] && break; sleep 0.2; done
  # Debian's kernel has AppArmor on: critest runs its AppArmor specs here (it loads their
  # profiles with apparmor_parser and expects crius to apply them).
  local since rc
  echo "criusd.service config: $(grep '^cgroup_driver' /etc/crius/config.toml || echo 'cgroup_driver = "cgroupfs" (default)')"
  since=$(date '+%F %T')
  "$base/critest/critest" --runtime-endpoint unix:///run/crius/crius.sock \
    --image-endpoint unix:///run/crius/crius.sock -ginkgo.no-color "${critest_args[@]}"
  rc=$?
  echo "pod scope units systemd started and stopped during critest: $(journalctl --since "$since" -o cat --no-pager |
    grep -c '^crius-[0-9a-f]\{64\}\.scope: Deactivated successfully')"
  return $rc
}

part facts facts
part registry start_registry
part demo "$base/bin/crius-demo" --criusd /usr/bin/criusd
part cri-check cri_check
part cri-check-systemd cri_check_systemd
if [ "$smoke" = 0 ]; then
  for t in $tests; do
    part "test-$t" run_test "$base/tests/$t"
  done
  [ "$kubelet" = 1 ] && part kubelet-systemd kubelet_run
  [ "$critest" = 1 ] && part critest critest_run
  part journal sh -c 'journalctl -u criusd --no-pager | grep -E " (WARN|ERROR) " | tail -40; true'
fi
! grep -q '^FAIL' "$summary"
