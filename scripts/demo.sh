#!/usr/bin/env bash
# berth's main job, as far as it goes today: start berthd on its default root, state and
# socket (if it is not running already), import an OCI image archive with containerd's own
# ctr, unpack it into snapshots inside berthd, and look at the image's files.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release
SOCK=/run/berth/berth.sock

if ! "$BIN/berth" version >/dev/null 2>&1; then
  echo "demo: starting berthd (log: /run/berth/berthd.log)"
  mkdir -p /run/berth
  nohup "$BIN/berthd" >/run/berth/berthd.log 2>&1 &
  for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
fi
"$BIN/berth" version

# A one-layer OCI image archive, made here from scratch.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/rootfs/etc" "$work/oci/blobs/sha256"
echo "hello from berth" > "$work/rootfs/etc/motd"
tar --sort=name --mtime=@0 --owner=0 --group=0 -C "$work/rootfs" -cf - etc | gzip -n > "$work/layer.tgz"
blob() { # file media-type -> stores it, prints a descriptor
  local d s; d=$(sha256sum "$1" | cut -d' ' -f1); s=$(stat -c %s "$1")
  cp "$1" "$work/oci/blobs/sha256/$d"
  printf '{"mediaType":"%s","digest":"sha256:%s","size":%d}' "$2" "$d" "$s"
}
diff_id=$(gunzip -c "$work/layer.tgz" | sha256sum | cut -d' ' -f1)
layer=$(blob "$work/layer.tgz" application/vnd.oci.image.layer.v1.tar+gzip)
printf '{"architecture":"amd64","os":"linux","config":{"Cmd":["/bin/sh"]},"rootfs":{"type":"layers","diff_ids":["sha256:%s"]}}' "$diff_id" > "$work/config.json"
config=$(blob "$work/config.json" application/vnd.oci.image.config.v1+json)
printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":%s,"layers":[%s]}' "$config" "$layer" > "$work/manifest.json"
manifest=$(blob "$work/manifest.json" application/vnd.oci.image.manifest.v1+json)
manifest=${manifest%\}}
printf '{"schemaVersion":2,"manifests":[%s,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' "$manifest" > "$work/oci/index.json"
echo '{"imageLayoutVersion":"1.0.0"}' > "$work/oci/oci-layout"
tar -C "$work/oci" -cf "$work/hello.tar" oci-layout index.json blobs

echo
echo "== ctr images import (containerd's client, talking to berthd)"
ctr --address "$SOCK" images import --no-unpack --base-name demo.local/hello "$work/hello.tar"
echo
echo "== berth images unpack (layers into overlayfs snapshots, inside berthd)"
"$BIN/berth" images unpack demo.local/hello:latest
echo
echo "== berth images ls"
"$BIN/berth" images ls
echo
echo "== berth snapshots tree"
"$BIN/berth" snapshots tree
echo
echo "== the image's files, through a writable snapshot"
top=$("$BIN/berth" snapshots ls -q | head -1)
"$BIN/berth" snapshots rm demo-rootfs >/dev/null 2>&1 || true
mkdir -p "$work/rootfs-mnt"
sh -c "$("$BIN/berth" snapshots prepare demo-rootfs "$top" --target "$work/rootfs-mnt")"
echo "/etc/motd: $(cat "$work/rootfs-mnt/etc/motd")"
umount "$work/rootfs-mnt"
"$BIN/berth" snapshots rm demo-rootfs >/dev/null
echo
echo "demo: berthd keeps running; stop it with: kill \$(cat /var/lib/berth/berthd.lock)"
