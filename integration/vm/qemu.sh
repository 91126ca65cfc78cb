# Sourced by run.sh and vagrant-box.sh: one throw-away boot of the guest image under QEMU TCG
# (this machine's /dev/kvm cannot start a stock kernel), a qcow2 overlay so the image stays as
# built, direct kernel boot, user-mode networking with restrict=on and only ssh forwarded on a free
# 127.0.0.1 port. Needs $here (this directory) and a `log` function.

vm_pid= vm_port=
vm_ssh_opts=(-o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
  -o LogLevel=ERROR -o ConnectTimeout=5 -o ServerAliveInterval=15 -o ServerAliveCountMax=8)

# vm_image CACHE: sets $image to the guest image of this build-image.sh below CACHE (keyed by the
# script's hash), building it under a lock when missing; images of older scripts are removed.
vm_image() {
  local cache=$1 old
  mkdir -p "$cache"
  image=$cache/image-$(sha256sum "$here/build-image.sh" | cut -c1-16)
  exec 9> "$cache/.lock"
  flock 9
  if [ ! -s "$image/rootfs.img" ]; then
    log "building the guest image $image (build-image.sh changed or no image yet)"
    rm -rf "$image.tmp"
    nice -n 10 "$here/build-image.sh" "$image.tmp"
    mv "$image.tmp" "$image"
    for old in "$cache"/image-*; do [ "$old" = "$image" ] || rm -rf "$old"; done
  else
    log "guest image: $image (cached; $(tr '\n' ' ' < "$image/versions.txt"))"
  fi
  flock -u 9
}

# guest COMMAND...: runs it as root in the guest over ssh.
guest() { ssh "${vm_ssh_opts[@]}" -i "$image/id_ed25519" -p "$vm_port" root@127.0.0.1 "$@"; }

# vm_boot DIR CPUS MEM: boots an overlay made in DIR (DIR/qemu.log, DIR/serial.log: the console)
# and waits for ssh and `systemctl is-system-running`; exits the script if it does not come up.
vm_boot() {
  local dir=$1 cpus=$2 mem=$3 i
  qemu-img create -q -f qcow2 -b "$image/rootfs.img" -F raw "$dir/disk.qcow2"
  vm_port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  log "booting the guest (QEMU TCG, $cpus vCPUs, $mem MiB, ssh on 127.0.0.1:$vm_port)"
  nice -n 10 qemu-system-x86_64 -accel tcg -cpu max -smp "$cpus" -m "$mem" \
    -kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
    -append "root=/dev/vda rw console=ttyS0 panic=-1" \
    -drive "file=$dir/disk.qcow2,if=virtio,format=qcow2" \
    -netdev "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:$vm_port-:22" \
    -device virtio-net-pci,netdev=net0 \
    -serial "file:$dir/serial.log" -display none -monitor none -no-reboot \
    > "$dir/qemu.log" 2>&1 &
  vm_pid=$!
  for i in $(seq 300); do
    kill -0 "$vm_pid" 2>/dev/null || { cat "$dir/qemu.log"; tail -30 "$dir/serial.log"; exit 1; }
    guest 'systemctl is-system-running --wait > /dev/null 2>&1; true' 2>/dev/null && return 0
    [ "$i" = 300 ] && { echo "$(basename "$0"): no ssh after 10 minutes" >&2; tail -30 "$dir/serial.log" >&2; exit 1; }
    sleep 2
  done
}

# vm_poweroff: `systemctl poweroff` in the guest, then SIGTERM and SIGKILL to QEMU if it lingers.
# Returns non-zero if the guest had to be killed.
vm_poweroff() {
  local clean=0
  [ -n "$vm_pid" ] && kill -0 "$vm_pid" 2>/dev/null || { vm_pid=; return 0; }
  guest 'systemctl poweroff' > /dev/null 2>&1
  for _ in $(seq 120); do kill -0 "$vm_pid" 2>/dev/null || break; sleep 0.5; done
  if kill -0 "$vm_pid" 2>/dev/null; then
    clean=1
    kill "$vm_pid" 2>/dev/null
    for _ in $(seq 20); do kill -0 "$vm_pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$vm_pid" 2>/dev/null
  fi
  wait "$vm_pid" 2>/dev/null
  vm_pid=
  return "$clean"
}
