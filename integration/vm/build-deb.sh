#!/usr/bin/env bash
# Builds crius' Debian package with dpkg-deb (no debhelper, no cargo-deb):
#
#   integration/vm/build-deb.sh [--no-build] [--binary PATH] [--out DIR]
#
# Builds criusd (`cargo build --release -p criusd`, at low priority) unless --no-build or
# --binary PATH is given, and writes DIR/crius_<version>_amd64.deb (default DIR:
# target/debian). Prints the path of the package on its last line.
#
# The package holds:
#   /usr/bin/criusd                          the daemon (also the pod monitor: same binary)
#   /lib/systemd/system/criusd.service       integration/systemd/criusd.service, ExecStart=/usr/bin/criusd
#   /etc/crius/config.toml                   every key commented with its default (conffile)
#   /etc/cni/net.d/10-crius.conflist         the default bridge network (conffile)
#   /usr/share/doc/crius/                    README.md, copyright
# It depends on the shared libraries criusd links (dpkg-shlibdeps: libc6, libseccomp2,
# libgcc-s1) and on what pods need at run time: Debian's CNI plugins, iptables (the bridge's
# masquerading, portmap) and iproute2. Installing it enables and starts criusd.service.
set -euo pipefail
repo=$(cd "$(dirname "$0")/../.." && pwd)
here=$repo/integration/vm

build=1 binary= out=$repo/target/debian
while [ $# -gt 0 ]; do
  case $1 in
    --no-build) build=0 ;;
    --binary) binary=$(realpath "${2:?--binary needs a path}"); build=0; shift ;;
    --out) out=${2:?--out needs a directory}; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ {sub(/^# ?/, ""); print; next} NR > 1 {exit}' "$0"; exit 0 ;;
    *) echo "build-deb.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

if [ "$build" = 1 ]; then
  (cd "$repo" && nice -n 19 cargo build --release -q -p criusd) >&2
fi
binary=${binary:-$repo/target/release/criusd}
[ -x "$binary" ] || { echo "build-deb.sh: $binary is missing: build it or pass --binary" >&2; exit 1; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)
[ -n "$version" ] || { echo "build-deb.sh: no version in Cargo.toml" >&2; exit 1; }
arch=$(dpkg --print-architecture)

work=$(mktemp -d "${TMPDIR:-/tmp}/crius-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
pkg=$work/pkg

install -D -m 0755 "$binary" "$pkg/usr/bin/criusd"
strip --strip-unneeded "$pkg/usr/bin/criusd"
install -d "$pkg/lib/systemd/system"
sed 's|^ExecStart=/usr/local/bin/criusd|ExecStart=/usr/bin/criusd|' \
  "$repo/integration/systemd/criusd.service" > "$pkg/lib/systemd/system/criusd.service"
grep -q '^ExecStart=/usr/bin/criusd ' "$pkg/lib/systemd/system/criusd.service" ||
  { echo "build-deb.sh: the unit's ExecStart is not /usr/local/bin/criusd any more" >&2; exit 1; }
install -D -m 0644 "$here/deb/config.toml" "$pkg/etc/crius/config.toml"
install -D -m 0644 "$repo/integration/cni/10-crius.conflist" "$pkg/etc/cni/net.d/10-crius.conflist"
install -D -m 0644 "$repo/README.md" "$pkg/usr/share/doc/crius/README.md"
cat > "$pkg/usr/share/doc/crius/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: crius

Files: *
License: Apache-2.0
 On Debian systems the full text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
EOF

# Shared-library dependencies, as debhelper would compute them.
shlibs=
if command -v dpkg-shlibdeps >/dev/null; then
  mkdir -p "$work/src/debian"
  printf 'Source: crius\n\nPackage: crius\nArchitecture: any\n' > "$work/src/debian/control"
  shlibs=$(cd "$work/src" && dpkg-shlibdeps -O "$pkg/usr/bin/criusd" 2>/dev/null |
    sed -n 's/^shlibs:Depends=//p')
fi
shlibs=${shlibs:-libc6 (>= 2.34), libgcc-s1 (>= 4.2), libseccomp2 (>= 2.5.0)}

install -d "$pkg/DEBIAN"
installed_size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat > "$pkg/DEBIAN/control" <<EOF
Package: crius
Version: $version
Architecture: $arch
Maintainer: crius developers <crius@localhost>
Installed-Size: $installed_size
Depends: $shlibs, containernetworking-plugins, iptables, iproute2
Recommends: apparmor
Section: admin
Priority: optional
Description: Kubernetes container runtime (CRI) with user namespaces
 criusd serves the CRI v1 API to kubelet on unix:///run/crius/crius.sock. It pulls
 images onto overlayfs, runs every pod sandbox and its user namespace from one clone,
 starts containers with youki's libcontainer and maps image layers and volumes into
 the pod's user namespace with idmapped mounts, never chowning a file.
 .
 The package installs the criusd.service unit (enabled and started), a commented
 /etc/crius/config.toml and crius' default CNI bridge network in /etc/cni/net.d.
EOF
printf '/etc/crius/config.toml\n/etc/cni/net.d/10-crius.conflist\n' > "$pkg/DEBIAN/conffiles"
cat > "$pkg/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
  systemctl enable criusd.service >/dev/null 2>&1 || true
  # An upgrade restarts criusd; running pods are kept (KillMode=process).
  systemctl restart criusd.service || true
elif [ "$1" = configure ]; then
  # No systemd running (a chroot, an image build): enabled for the next boot.
  mkdir -p /etc/systemd/system/multi-user.target.wants
  ln -sf /lib/systemd/system/criusd.service /etc/systemd/system/multi-user.target.wants/criusd.service
fi
exit 0
EOF
cat > "$pkg/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop criusd.service || true
fi
exit 0
EOF
cat > "$pkg/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = remove ] || [ "$1" = purge ]; then
  rm -f /etc/systemd/system/multi-user.target.wants/criusd.service
  [ -d /run/systemd/system ] && systemctl daemon-reload >/dev/null 2>&1 || true
fi
exit 0
EOF
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/prerm" "$pkg/DEBIAN/postrm"

mkdir -p "$out"
deb=$out/crius_${version}_${arch}.deb
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"
