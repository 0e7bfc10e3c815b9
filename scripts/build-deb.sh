#!/usr/bin/env bash
# Builds berth's Debian package with Debian's own dpkg-deb: berthd, berth, the shim and berth-snapshotter in
# /usr/bin, the systemd unit, /etc/berth/config.toml (a conffile), shell completions and man
# pages generated from the CLI definitions.
#   scripts/build-deb.sh [OUT_DIR]      release build (default OUT_DIR: target/debian)
#   PROFILE=debug scripts/build-deb.sh  package the debug binaries
#   BIN_DIR=DIR scripts/build-deb.sh    package binaries already built in DIR (no cargo; the
#                                       package test does this)
# Install: apt install ./target/debian/berth_*.deb   (pulls runc, CNI plugins, iptables)
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-target/debian}")
profile=${PROFILE:-release}
if [ -n "${BIN_DIR:-}" ]; then
  bin=$BIN_DIR
elif [ "$profile" = release ]; then
  cargo build --release --bins
  bin=target/release
else
  cargo build --bins
  bin=target/debug
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
arch=$(dpkg --print-architecture)
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg="$stage/berth"

install -D -m 0755 "$bin/berthd" "$pkg/usr/bin/berthd"
install -D -m 0755 "$bin/berth" "$pkg/usr/bin/berth"
install -D -m 0755 "$bin/containerd-shim-berth-v2" "$pkg/usr/bin/containerd-shim-berth-v2"
install -D -m 0755 "$bin/berth-snapshotter" "$pkg/usr/bin/berth-snapshotter"
strip --strip-unneeded "$pkg/usr/bin/"* 2>/dev/null || true
install -D -m 0644 cmd/systemd/berthd.service "$pkg/lib/systemd/system/berthd.service"
install -d -m 0755 "$pkg/etc/berth"
{
  echo "# berthd's configuration: every key with its default. berthd reads this file when it"
  echo "# starts; SIGHUP (systemctl reload berthd) re-reads log_level and [registry]."
  echo "# Drop-in files: imports = [\"/etc/berth/conf.d/*.toml\"]"
  "$bin/berthd" config default
} > "$pkg/etc/berth/config.toml"
chmod 0644 "$pkg/etc/berth/config.toml"
for tool in berth berthd; do
  install -d "$pkg/usr/share/bash-completion/completions" "$pkg/usr/share/zsh/vendor-completions" \
    "$pkg/usr/share/fish/vendor_completions.d"
  "$bin/$tool" completion bash > "$pkg/usr/share/bash-completion/completions/$tool"
  "$bin/$tool" completion zsh > "$pkg/usr/share/zsh/vendor-completions/_$tool"
  "$bin/$tool" completion fish > "$pkg/usr/share/fish/vendor_completions.d/$tool.fish"
  "$bin/$tool" man "$pkg/usr/share/man/man1"
done
gzip -9n "$pkg/usr/share/man/man1/"*.1
install -d "$pkg/usr/share/doc/berth"
cat > "$pkg/usr/share/doc/berth/copyright" <<'EOF'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: berth
Files: *
License: Apache-2.0
 On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.
EOF
find "$pkg" -type d -exec chmod 0755 {} +

install -d "$pkg/DEBIAN"
size=$(du -sk --exclude=DEBIAN "$pkg" | cut -f1)
cat > "$pkg/DEBIAN/control" <<EOF
Package: berth
Version: $version
Architecture: $arch
Maintainer: berth developers <berth@localhost>
Installed-Size: $size
Depends: libc6 (>= 2.34), libisal2, libseccomp2, runc, containernetworking-plugins, iptables, iproute2
Recommends: util-linux
Section: admin
Priority: optional
Homepage: https://github.com/berth/berth
Description: container engine speaking containerd's API
 berthd serves containerd's gRPC API (ctr, Docker Engine, the containerd clients
 work unchanged) and the Kubernetes CRI, with an embedded metadata store; berth is
 its command line (ctr-style groups and Docker-style verbs).
EOF
echo /etc/berth/config.toml > "$pkg/DEBIAN/conffiles"
# Maintainer scripts leave the service alone when installing into another root (DPKG_ROOT)
# or on a machine without systemd.
cat > "$pkg/DEBIAN/postinst" <<'EOF'
#!/bin/sh
set -e
if [ "$1" = configure ] && [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload || true
  systemctl enable berthd.service >/dev/null 2>&1 || true
  if [ -n "$2" ]; then systemctl try-restart berthd.service || true; else systemctl start berthd.service || true; fi
fi
exit 0
EOF
cat > "$pkg/DEBIAN/prerm" <<'EOF'
#!/bin/sh
set -e
# Stops berthd only; containers keep running under their shims (KillMode=process).
if [ "$1" = remove ] && [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then
  systemctl stop berthd.service || true
  systemctl disable berthd.service >/dev/null 2>&1 || true
fi
exit 0
EOF
cat > "$pkg/DEBIAN/postrm" <<'EOF'
#!/bin/sh
set -e
if [ -z "${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
# Images, containers and volumes under /var/lib/berth are kept, even on purge: remove them
# by hand if they are no longer wanted.
exit 0
EOF
chmod 0755 "$pkg/DEBIAN/postinst" "$pkg/DEBIAN/prerm" "$pkg/DEBIAN/postrm"

mkdir -p "$out"
deb="$out/berth_${version}_${arch}.deb"
dpkg-deb --root-owner-group -Zxz --build "$pkg" "$deb" >/dev/null
echo "$deb"
