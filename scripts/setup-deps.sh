#!/usr/bin/env bash
# Installs the Debian packages berth's builds, tests and demo use. Safe to run again.
set -euo pipefail
packages=(containerd runc docker-registry skopeo umoci busybox-static)
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
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# containerd's own daemon is never used; only its ctr client and shim binaries.
systemctl disable --now containerd >/dev/null 2>&1 || true

