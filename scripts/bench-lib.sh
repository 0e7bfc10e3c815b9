# Shared by the bench scripts: starting berthd and containerd side by side on private
# roots and sockets, and building a large test image from this machine's own files.
# Source it; it expects WORK to be set.

BERTH_SOCK="$WORK/berth.sock"
# Where berthd, berth and the shim come from: a release build, or a copy of an older one.
BERTH_BIN=${BERTH_BIN:-target/release}
CTRD_SOCK="$WORK/containerd.sock"
PIDS=()

cleanup_daemons() {
  local p
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  berth_host_cleanup
}

# What the bench's berthd put on the host outside WORK (its bridges and iptables rules; its
# shims and mounts too): each run's fresh root made another network, and left it.
berth_host_cleanup() {
  [ -d "$WORK/berth/root" ] || return 0
  "$BERTH_BIN/berthd" --root "$WORK/berth/root" --state "$WORK/berth/state" \
    --address "$BERTH_SOCK" cleanup >/dev/null 2>&1 || true
}

# Leftovers of an interrupted run: shims and mounts under WORK.
clear_leftovers() {
  berth_host_cleanup
  pkill -f "containerd-shim-.* -address $WORK/" 2>/dev/null || true
  # containerd's runc shim keeps runc state in the shared /run/containerd/runc: drop the
  # bench's own containers (ids cN, cnN) left there.
  for id in $(runc --root /run/containerd/runc/default list -q 2>/dev/null | grep -E '^(cn?|rc)[0-9]+$' || true); do
    runc --root /run/containerd/runc/default delete --force "$id" 2>/dev/null || true
  done
  awk -v w="$WORK" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount -l "$m" 2>/dev/null || true; done
  # Loop devices of fresh_fs filesystems (detached once unmounted).
  losetup -j "$WORK/berth.img" 2>/dev/null | cut -d: -f1 | while read -r l; do losetup -d "$l" 2>/dev/null || true; done
  local fs
  for fs in containerd containerd2; do
    losetup -j "$WORK/$fs.img" 2>/dev/null | cut -d: -f1 | while read -r l; do losetup -d "$l" 2>/dev/null || true; done
  done
}

wait_socket() {
  for _ in $(seq 200); do [ -S "$1" ] && return 0; sleep 0.05; done
  echo "bench: $1 did not appear" >&2; return 1
}

# fresh_fs DIR: DIR becomes an empty ext4 filesystem of its own (a sparse file on a loop
# device, direct I/O). With FRESH_FS=1 each daemon starts on one: a root deleted just
# before makes ext4 skip its recently freed inodes one by one, which cost a pull half its
# CPU in `__ext4_new_inode -> recently_deleted` (perf), a cost of the bench, not of the engine.
fresh_fs() {
  local dir=$1 img="$1.img"
  rm -rf "$dir" "$img"; mkdir -p "$dir"
  truncate -s 16G "$img"
  mkfs.ext4 -q -F "$img"
  local dev; dev=$(losetup --direct-io=on --show -f "$img")
  mount "$dev" "$dir"
}

# The daemon's own directory, emptied (or made a fresh filesystem, see fresh_fs).
fresh_root() {
  rm -rf "$1"
  if [ "${FRESH_FS:-0}" = 1 ]; then fresh_fs "$1"; fi
  return 0
}

start_berthd() {
  clear_leftovers
  fresh_root "$WORK/berth"
  "$BERTH_BIN/berthd" --root "$WORK/berth/root" --state "$WORK/berth/state" --address "$BERTH_SOCK" \
    --log-level warn >"$WORK/berthd.log" 2>&1 &
  PIDS+=($!)
  wait_socket "$BERTH_SOCK"
}

start_containerd() {
  command -v containerd >/dev/null || { echo "bench: containerd not installed (apt-get install containerd)" >&2; return 1; }
  clear_leftovers
  fresh_root "$WORK/containerd"
  mkdir -p "$WORK/containerd"
  cat >"$WORK/containerd.toml" <<TOML
version = 2
root = "$WORK/containerd/root"
state = "$WORK/containerd/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$CTRD_SOCK"
[ttrpc]
  address = "$CTRD_SOCK.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/containerd/opt"
TOML
  containerd --config "$WORK/containerd.toml" >"$WORK/containerd.log" 2>&1 &
  PIDS+=($!)
  wait_socket "$CTRD_SOCK"
}

# containerd 2.3.4 as a second anchor: the binaries ../shared/containerd-suite/build.sh makes
# (nothing of them lives in this repository). CTRD2_BIN overrides where they are; when they are
# absent, the benches say so and leave the row out.
CTRD2_BIN=${CTRD2_BIN:-${CONTAINERD_SUITE_DIR:-/tmp/containerd-suite}/bin}
CTRD2_SOCK="$WORK/containerd2.sock"
have_containerd2() {
  local b
  for b in containerd ctr containerd-shim-runc-v2; do
    if [ ! -x "$CTRD2_BIN/$b" ]; then
      echo "bench: no containerd 2.3.4 at $CTRD2_BIN ($b missing; build it with ../shared/containerd-suite/build.sh or set CTRD2_BIN): its rows are left out" >&2
      return 1
    fi
  done
}
ctr2() { "$CTRD2_BIN/ctr" -a "$CTRD2_SOCK" "$@"; }

# start_containerd2 [tuned] : containerd 2.3.4 on its own root and socket, its own runc shim
# first on PATH. "tuned" gives its Transfer service parallel unpacks and chunked layer fetches.
start_containerd2() {
  clear_leftovers
  fresh_root "$WORK/containerd2"
  mkdir -p "$WORK/containerd2"
  local transfer=""
  if [ "${1:-}" = tuned ]; then
    transfer="[plugins.\"io.containerd.transfer.v1.local\"]
  max_concurrent_downloads = 6
  max_concurrent_unpacks = $(nproc)
  concurrent_layer_fetch_buffer = 8388608"
  fi
  cat >"$WORK/containerd2.toml" <<TOML
version = 3
root = "$WORK/containerd2/root"
state = "$WORK/containerd2/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime", "io.containerd.podsandbox.controller.v1.podsandbox"]
[grpc]
  address = "$CTRD2_SOCK"
[ttrpc]
  address = "$CTRD2_SOCK.ttrpc"
[debug]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/containerd2/opt"
$transfer
TOML
  PATH="$CTRD2_BIN:$PATH" "$CTRD2_BIN/containerd" --config "$WORK/containerd2.toml" >"$WORK/containerd2.log" 2>&1 &
  PIDS+=($!)
  wait_socket "$CTRD2_SOCK"
}

# make_image OUT.tar DIR... : one gzip layer per directory (relative to /), as an OCI archive.
make_image() {
  local out=$1; shift
  local lay="$WORK/layout"
  rm -rf "$lay"; mkdir -p "$lay/blobs/sha256"
  local layers="" diffs=""
  for d in "$@"; do
    echo "bench: layer from /$d" >&2
    tar --sort=name -C / -cf - "$d" 2>/dev/null | tee >(sha256sum | cut -d' ' -f1 >"$WORK/diffid") | gzip -6 >"$WORK/layer.gz"
    sleep 0.2
    local dg; dg=$(sha256sum "$WORK/layer.gz" | cut -d' ' -f1)
    local sz; sz=$(stat -c %s "$WORK/layer.gz")
    mv "$WORK/layer.gz" "$lay/blobs/sha256/$dg"
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$dg\",\"size\":$sz}"
    diffs+="${diffs:+,}\"sha256:$(cat "$WORK/diffid")\""
  done
  local cfg="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Cmd\":[\"/bin/sh\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[$diffs]}}"
  local cd; cd=$(printf '%s' "$cfg" | sha256sum | cut -d' ' -f1)
  printf '%s' "$cfg" >"$lay/blobs/sha256/$cd"
  local man="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cd\",\"size\":${#cfg}},\"layers\":[$layers]}"
  local md; md=$(printf '%s' "$man" | sha256sum | cut -d' ' -f1)
  printf '%s' "$man" >"$lay/blobs/sha256/$md"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"latest"},"platform":{"architecture":"amd64","os":"linux"}}]}' "$md" "${#man}" >"$lay/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$lay/oci-layout"
  tar -C "$lay" -cf "$out" oci-layout index.json blobs
  rm -rf "$lay"
}

# remove_snapshots SOCK : removes every snapshot, children before parents.
remove_snapshots() {
  for _ in $(seq 64); do
    local keys; keys=$(ctr -a "$1" snapshots ls 2>/dev/null | awk 'NR>1 {print $1}')
    [ -z "$keys" ] && return 0
    for k in $keys; do ctr -a "$1" snapshots rm "$k" >/dev/null 2>&1 || true; done
  done
}

# start_registry LEVEL : a docker-registry on a free loopback port, storing under
# WORK/registry and logging at LEVEL to WORK/registry.log; sets PORT and REG_PID.
start_registry() {
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rm -rf "$WORK/registry"; mkdir -p "$WORK/registry"
  cat >"$WORK/registry/config.yml" <<YML
version: 0.1
log:
  level: $1
storage:
  filesystem:
    rootdirectory: $WORK/registry/data
http:
  addr: 127.0.0.1:$PORT
YML
  docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry.log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
}

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

# make_busybox OUT.tar : a one-layer busybox image (sh, true, sleep, echo), made here once.
make_busybox() {
  local img=$1 r lay ld di cfg cd_ man md
  [ -f "$img" ] && return 0
  r="$WORK/rootfs"; rm -rf "$r"; mkdir -p "$r/bin" "$r/etc" "$r/proc" "$r/sys" "$r/dev" "$r/tmp"
  cp /bin/busybox "$r/bin/"; for a in sh true sleep echo; do ln -s busybox "$r/bin/$a"; done
  echo "root:x:0:0:root:/root:/bin/sh" >"$r/etc/passwd"; echo "root:x:0:" >"$r/etc/group"
  lay="$WORK/oci"; rm -rf "$lay"; mkdir -p "$lay/blobs/sha256"
  tar -C "$r" -cf "$WORK/l.tar" .; gzip -c "$WORK/l.tar" >"$WORK/l.tgz"
  ld=$(sha256sum "$WORK/l.tgz" | cut -d' ' -f1); di=$(sha256sum "$WORK/l.tar" | cut -d' ' -f1); cp "$WORK/l.tgz" "$lay/blobs/sha256/$ld"
  cfg="{\"architecture\":\"amd64\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/bin\"]},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$di\"]}}"
  cd_=$(printf '%s' "$cfg" | sha256sum | cut -d' ' -f1); printf '%s' "$cfg" >"$lay/blobs/sha256/$cd_"
  man="{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$cd_\",\"size\":${#cfg}},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$ld\",\"size\":$(stat -c %s "$WORK/l.tgz")}]}"
  md=$(printf '%s' "$man" | sha256sum | cut -d' ' -f1); printf '%s' "$man" >"$lay/blobs/sha256/$md"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%d,"annotations":{"org.opencontainers.image.ref.name":"latest"}}]}' "$md" "${#man}" >"$lay/index.json"
  echo '{"imageLayoutVersion":"1.0.0"}' >"$lay/oci-layout"; tar -C "$lay" -cf "$img" oci-layout index.json blobs
}
