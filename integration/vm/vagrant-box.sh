#!/usr/bin/env bash
# Makes a vagrant-libvirt box of the crius test guest (the image build-image.sh makes and run.sh
# boots), for the offline path of vagrant/Vagrantfile:
#
#   sudo integration/vm/vagrant-box.sh [--image DIR] [--out FILE] [--add USER]
#
#  1. takes the cached image $CRIUS_VM_DIR/image-<hash of build-image.sh> (default
#     /var/tmp/crius-vm; built with build-image.sh when missing), or --image DIR;
#  2. boots a qcow2 overlay of its rootfs.img once with QEMU (TCG, user-mode network with
#     restrict=on, as run.sh does) and adds what Vagrant expects of a box: sudo (Debian's package,
#     fetched on the host with `apt-get download`), a `vagrant` user with Vagrant's insecure public
#     key and passwordless sudo, host name `bookworm`; /etc/machine-id is emptied again so every
#     VM gets its own;
#  3. flattens the overlay into a compressed qcow2 and writes FILE (default
#     $CRIUS_VM_DIR/vagrant/crius-bookworm-local.box), a tar of
#       box.img        the disk: a raw ext4 filesystem, no partition table, no bootloader
#       metadata.json  {"provider": "libvirt", "format": "qcow2", "virtual_size": <GiB>}
#       vmlinuz, initrd.img   the guest's kernel and initrd (direct kernel boot)
#       Vagrantfile    points libvirt.kernel/initrd at those two files in the box's own directory
#                      and boots with root=/dev/vda rw console=ttyS0
#  4. with --add USER: `vagrant box add --force --name crius/bookworm-local FILE` as USER (the
#     user that runs vagrant-libvirt in QEMU session mode; the box lands in its ~/.vagrant.d).
#
# The image itself is only read. Needs root (the image's ssh key is root's), qemu-system-x86,
# qemu-utils and apt (Debian's archive for the sudo package). See vagrant/README.md.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$repo/integration/vm
cache=${CRIUS_VM_DIR:-/var/tmp/crius-vm}
name=crius/bookworm-local

image= out= add_user=
while [ $# -gt 0 ]; do
  case $1 in
    --image) image=$(realpath "${2:?--image needs a directory}"); shift ;;
    --out) out=${2:?--out needs a file}; shift ;;
    --add) add_user=${2:?--add needs a user}; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "vagrant-box.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ "$(id -u)" = 0 ] || { echo "vagrant-box.sh: run as root" >&2; exit 1; }
out=${out:-$cache/vagrant/crius-bookworm-local.box}
for tool in qemu-system-x86_64 qemu-img ssh apt-get; do
  command -v "$tool" > /dev/null || { echo "vagrant-box.sh: $tool is missing (see run.sh for the host packages)" >&2; exit 1; }
done
log() { printf '[vagrant-box %(%H:%M:%S)T] %s\n' -1 "$*"; }
t0=$(date +%s)

# ---- 1. the image -----------------------------------------------------------------------------
# shellcheck source=integration/vm/qemu.sh
. "$here/qemu.sh"
[ -n "$image" ] || vm_image "$cache"
for f in rootfs.img vmlinuz initrd.img id_ed25519; do
  [ -s "$image/$f" ] || { echo "vagrant-box.sh: $image/$f is missing" >&2; exit 1; }
done
log "image: $image ($(tr '\n' ' ' < "$image/versions.txt" 2>/dev/null))"
vagrant_pub=$(ls /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub \
  /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub 2>/dev/null | head -1 || true)
[ -s "$vagrant_pub" ] || { echo "vagrant-box.sh: Vagrant's insecure key (keys/vagrant.pub) not found: install vagrant" >&2; exit 1; }

work=$(mktemp -d "$cache/vagrant-box.XXXXXX")
mkdir "$work/debs"
chmod 0755 "$work"
chown _apt "$work/debs" 2>/dev/null || true # apt-get download fetches as _apt
cleanup() {
  local rc=$?
  set +e
  trap - EXIT INT TERM
  vm_poweroff
  [ "$rc" = 0 ] || { echo "vagrant-box.sh failed; the guest's console:" >&2; tail -20 "$work/serial.log" >&2 2>/dev/null; }
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ---- 2. one boot of an overlay: sudo and the vagrant user ---------------------------------------
log "apt-get download sudo (Debian's archive)"
(cd "$work/debs" && apt-get download -q sudo > /dev/null)
sudo_deb=$(ls "$work"/debs/sudo_*.deb)
s=$(date +%s)
vm_boot "$work" 2 2048
log "guest up after $(( $(date +%s) - s ))s; installing $(basename "$sudo_deb"), adding the vagrant user"
guest 'cat > /root/sudo.deb' < "$sudo_deb"
guest 'cat > /root/vagrant.pub' < "$vagrant_pub"
guest 'bash -s' <<'EOF'
set -euo pipefail
DEBIAN_FRONTEND=noninteractive dpkg -i /root/sudo.deb > /dev/null
id vagrant > /dev/null 2>&1 || useradd -m -s /bin/bash -G sudo vagrant
echo vagrant:vagrant | chpasswd
printf 'vagrant ALL=(ALL) NOPASSWD: ALL\nDefaults:vagrant !requiretty\n' > /etc/sudoers.d/vagrant
chmod 0440 /etc/sudoers.d/vagrant
visudo -cq
install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
install -m 0600 -o vagrant -g vagrant /root/vagrant.pub /home/vagrant/.ssh/authorized_keys
rm -f /root/sudo.deb /root/vagrant.pub /root/.bash_history
# A host name of its own: Vagrant's `grep -w crius /etc/hosts` would match crius-vm and leave the
# name config.vm.hostname sets unresolvable.
echo bookworm > /etc/hostname
sed -i 's/^127\.0\.1\.1 .*/127.0.1.1 bookworm/' /etc/hosts
: > /etc/machine-id
sync
EOF
vm_poweroff || { echo "vagrant-box.sh: the guest did not power off" >&2; exit 1; }

# ---- 3. the box -----------------------------------------------------------------------------------
log "qemu-img convert -c (flattening the overlay into box.img)"
box=$work/box
mkdir -p "$box"
qemu-img convert -c -O qcow2 "$work/disk.qcow2" "$box/box.img"
bytes=$(qemu-img info --output=json "$box/box.img" | python3 -c 'import json, sys; print(json.load(sys.stdin)["virtual-size"])')
printf '{"provider": "libvirt", "format": "qcow2", "virtual_size": %d}\n' $(( (bytes + (1 << 30) - 1) >> 30 )) > "$box/metadata.json"
cp "$image/vmlinuz" "$box/vmlinuz"
cp "$image/initrd.img" "$box/initrd.img"
cp "$image/versions.txt" "$box/versions.txt" 2>/dev/null || true
cat > "$box/Vagrantfile" <<'EOF'
# crius/bookworm-local: the crius test guest of integration/vm (Debian 12, kernel 6.12 from
# bookworm-backports, systemd, cgroup v2 only) as a vagrant-libvirt box. Its disk is a bare ext4
# filesystem with no bootloader, so libvirt boots the kernel and initrd shipped next to this file.
Vagrant.configure("2") do |config|
  config.vm.provider :libvirt do |libvirt|
    libvirt.kernel = File.join(__dir__, "vmlinuz")
    libvirt.initrd = File.join(__dir__, "initrd.img")
    libvirt.cmd_line = "root=/dev/vda rw console=ttyS0"
    libvirt.disk_bus = "virtio"
  end
end
EOF
mkdir -p "$(dirname "$out")"
tar -C "$box" -cf "$out.tmp" metadata.json Vagrantfile box.img vmlinuz initrd.img versions.txt
mv -f "$out.tmp" "$out"
chmod 0644 "$out"
log "wrote $out ($(du -h "$out" | cut -f1); $(cat "$box/metadata.json"))"

# ---- 4. vagrant box add ------------------------------------------------------------------------------
if [ -n "$add_user" ]; then
  log "vagrant box add --name $name as $add_user"
  runuser -u "$add_user" -- vagrant box add --force --name "$name" "$out"
fi
log "done in $(( $(date +%s) - t0 ))s"
[ -n "$add_user" ] || echo "next: vagrant box add --name $name $out   (as the user that runs vagrant)"
