#!/usr/bin/env bash
# Unpack benchmark: a multi-layer image (hundreds of MB, tens of thousands of files, made
# from this machine's /usr) unpacked by containerd and by berthd, side by side, alternating.
#   containerd  `ctr images mount` against containerd (ctr unpacks through its services)
#   berth/ctr   the same ctr command against berthd (berth's Snapshots and Diff services)
#   berth       `berth images unpack` (inside berthd, layers in parallel)
# Prints the median of RUNS runs each and the ratios. Needs root, containerd and runc.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
WORK=${BENCH_DIR:-/var/tmp/berth-bench}
mkdir -p "$WORK"
source scripts/bench-lib.sh
trap cleanup_daemons EXIT

cargo build --release --workspace --bins >&2
IMAGE="$WORK/unpack-image.tar"
if [ ! -f "$IMAGE" ]; then
  make_image "$IMAGE" usr/include usr/share/doc usr/share/locale usr/bin usr/share/man usr/lib/python3
fi
echo "image: $(du -h "$IMAGE" | cut -f1) archive, $(($(tar -tf "$IMAGE" | grep -c 'blobs/sha256/.') - 2)) layers"

start_berthd
start_containerd
REF=bench.local/unpack:latest
for s in "$BERTH_SOCK" "$CTRD_SOCK"; do
  ctr -a "$s" images import --no-unpack --base-name bench.local/unpack "$IMAGE" >/dev/null
done
files=0
for b in $(tar -tf "$IMAGE" | grep 'blobs/sha256/.'); do
  n=$( (tar -xOf "$IMAGE" "$b" | gzip -dc 2>/dev/null | tar -t 2>/dev/null || true) | wc -l)
  files=$((files + n))
done
echo "entries in layers: $files"

mnt="$WORK/mnt"; mkdir -p "$mnt"
time_ctr_mount() { # SOCK
  local t0 t1; t0=$(now)
  ctr -a "$1" images mount "$REF" "$mnt" >/dev/null
  t1=$(now)
  ctr -a "$1" images unmount --rm "$mnt" >/dev/null
  remove_snapshots "$1"
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  echo "$t1 - $t0" | bc
}
time_berth_unpack() {
  local t0 t1; t0=$(now)
  target/release/berth -a "$BERTH_SOCK" images unpack "$REF" >/dev/null
  t1=$(now)
  remove_snapshots "$BERTH_SOCK"
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  echo "$t1 - $t0" | bc
}

c=(); b=(); p=()
for i in $(seq "$RUNS"); do
  c+=("$(time_ctr_mount "$CTRD_SOCK")")
  b+=("$(time_ctr_mount "$BERTH_SOCK")")
  p+=("$(time_berth_unpack)")
  echo "run $i: containerd ${c[-1]}s  berth/ctr ${b[-1]}s  berth ${p[-1]}s" >&2
done
mc=$(printf '%s\n' "${c[@]}" | median)
mb=$(printf '%s\n' "${b[@]}" | median)
mp=$(printf '%s\n' "${p[@]}" | median)
echo "containerd (ctr images mount):     ${mc}s"
echo "berth via ctr (same client):       ${mb}s   ratio $(echo "scale=2; $mb / $mc" | bc)x"
echo "berth images unpack (in daemon):   ${mp}s   ratio $(echo "scale=2; $mp / $mc" | bc)x   (target <= 0.3x)"
