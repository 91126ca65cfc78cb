#!/usr/bin/env bash
# Builds the crius test guest: Debian bookworm made with debootstrap from Debian's archive, the
# bookworm-backports cloud kernel (6.12: idmapped tmpfs), systemd as PID 1 on cgroup v2 only,
# sshd with a key made for this image, and every package crius and its tests need at run time
# (the guest has no network when it runs).
#
#   integration/vm/build-image.sh OUTDIR
#
# Writes OUTDIR/{rootfs.img,vmlinuz,initrd.img,id_ed25519,id_ed25519.pub,versions.txt}.
# run.sh calls it with OUTDIR keyed by the hash of this file: change anything here and the next
# run rebuilds the image; otherwise it is reused. Needs root, debootstrap and mkfs.ext4 (no loop
# devices: the ext4 image is filled with `mkfs.ext4 -d`).
set -euo pipefail

out=${1:?usage: build-image.sh OUTDIR}
mirror=${CRIUS_VM_MIRROR:-http://deb.debian.org/debian}
suite=bookworm
image_size=${CRIUS_VM_IMAGE_SIZE:-8G}

# What crius needs at run time (the .deb's Depends and Recommends are installed here, since the
# guest installs the .deb offline; apparmor's parser loads crius' default profile into the
# kernel's AppArmor), what its end-to-end tests and the demo need (a registry, busybox for the
# test images, CNI plugins, ip), and what the in-guest CRI client and critest runner use
# (critest loads its AppArmor profiles with `sudo apparmor_parser`).
packages=(
  systemd systemd-sysv dbus udev kmod procps openssh-server
  ca-certificates util-linux iproute2 iptables
  containernetworking-plugins libseccomp2 apparmor
  busybox-static docker-registry skopeo curl
  python3 python3-grpcio python3-grpc-tools python3-protobuf python3-pkg-resources
  sudo
)

[ "$(id -u)" = 0 ] || { echo "build-image.sh: run as root" >&2; exit 1; }
command -v debootstrap >/dev/null || { echo "build-image.sh: debootstrap is missing" >&2; exit 1; }

mkdir -p "$out"
work=$(mktemp -d "$out/build.XXXXXX")
root=$work/root
mounted=()
cleanup() {
  set +e
  for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount -l "${mounted[i]}" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { printf '[build-image %(%H:%M:%S)T] %s\n' -1 "$*"; }

log "debootstrap $suite (minbase) from $mirror"
debootstrap --variant=minbase --include=ca-certificates "$suite" "$root" "$mirror" > "$work/debootstrap.log" 2>&1 ||
  { tail -30 "$work/debootstrap.log"; exit 1; }

mount -t proc proc "$root/proc" && mounted+=("$root/proc")
mount -t sysfs sysfs "$root/sys" && mounted+=("$root/sys")
mount --bind /dev "$root/dev" && mounted+=("$root/dev")
mount -t devpts devpts "$root/dev/pts" -o newinstance,ptmxmode=0666 && mounted+=("$root/dev/pts")

cat > "$root/etc/apt/sources.list" <<EOF
deb $mirror $suite main
deb $mirror $suite-updates main
deb $mirror $suite-backports main
EOF
# No service starts inside the chroot.
printf '#!/bin/sh\nexit 101\n' > "$root/usr/sbin/policy-rc.d"
chmod 0755 "$root/usr/sbin/policy-rc.d"
in_root() { chroot "$root" env DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8 "$@"; }

log "apt-get install: ${packages[*]}"
in_root apt-get update -q > "$work/apt.log" 2>&1 || { tail -30 "$work/apt.log"; exit 1; }
in_root apt-get install -y -q --no-install-recommends "${packages[@]}" >> "$work/apt.log" 2>&1 ||
  { tail -30 "$work/apt.log"; exit 1; }
log "apt-get install -t $suite-backports linux-image-cloud-amd64"
in_root apt-get install -y -q --no-install-recommends -t "$suite-backports" \
  linux-image-cloud-amd64 initramfs-tools >> "$work/apt.log" 2>&1 || { tail -30 "$work/apt.log"; exit 1; }
in_root apt-get clean
rm -f "$root/usr/sbin/policy-rc.d"
rm -rf "$root"/var/lib/apt/lists/*

log "configuring the guest"
echo crius-vm > "$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 crius-vm\n::1 localhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"
echo '/dev/vda / ext4 rw,errors=remount-ro 0 1' > "$root/etc/fstab"
# A fresh machine id on first boot of every run (the disk is a throw-away overlay).
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
# QEMU's user-mode network: the guest is 10.0.2.15, the host's forwarder 10.0.2.2 (restrict=on:
# nothing beyond the forwarded ssh port goes anywhere).
mkdir -p "$root/etc/systemd/network"
cat > "$root/etc/systemd/network/10-qemu.network" <<'EOF'
[Match]
Name=en* eth*

[Network]
Address=10.0.2.15/24
Gateway=10.0.2.2
LinkLocalAddressing=no
IPv6AcceptRA=no
EOF
in_root systemctl enable systemd-networkd.service > /dev/null 2>&1
# Boot faster and quieter: nothing here may reach a network or wake up during tests.
for unit in docker-registry.service apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer \
  fstrim.timer systemd-networkd-wait-online.service; do
  in_root systemctl mask "$unit" > /dev/null 2>&1 || true
done
# The criusd unit wants network-online.target: with a static address it is reached at once.
ssh-keygen -q -t ed25519 -N '' -C crius-vm -f "$work/id_ed25519"
install -d -m 0700 "$root/root/.ssh"
install -m 0600 "$work/id_ed25519.pub" "$root/root/.ssh/authorized_keys"
cat > "$root/etc/ssh/sshd_config.d/crius-vm.conf" <<'EOF'
PermitRootLogin prohibit-password
PasswordAuthentication no
UseDNS no
EOF
# Host keys made once for this image (the client checks nothing: the port is on loopback).
rm -f "$root"/etc/ssh/ssh_host_*
in_root ssh-keygen -A > /dev/null
mkdir -p "$root/etc/systemd/journald.conf.d"
printf '[Journal]\nStorage=volatile\nRuntimeMaxUse=64M\n' > "$root/etc/systemd/journald.conf.d/crius-vm.conf"

kernel=$(basename "$(ls "$root"/boot/vmlinuz-* | sort -V | tail -1)")
kver=${kernel#vmlinuz-}
{
  echo "debian $(cat "$root/etc/debian_version")"
  echo "kernel $kver"
  echo "systemd $(in_root dpkg-query -W -f '${Version}' systemd)"
  echo "built $(date -u +%Y-%m-%dT%H:%M:%SZ)"
} > "$work/versions.txt"

for ((i = ${#mounted[@]} - 1; i >= 0; i--)); do umount "${mounted[i]}"; done
mounted=()
cp "$root/boot/vmlinuz-$kver" "$work/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/initrd.img"

log "mkfs.ext4 -d ($image_size, sparse)"
truncate -s "$image_size" "$work/rootfs.img"
mkfs.ext4 -q -F -L crius-vm -d "$root" "$work/rootfs.img"
rm -rf "$root"

for f in rootfs.img vmlinuz initrd.img id_ed25519 id_ed25519.pub versions.txt; do
  mv "$work/$f" "$out/$f"
done
log "done: $out ($(du -sh --apparent-size "$out/rootfs.img" | cut -f1) apparent, $(du -sh "$out/rootfs.img" | cut -f1) used); $(tr '\n' ' ' < "$out/versions.txt")"
