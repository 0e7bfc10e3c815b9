#!/usr/bin/env bash
# Unpack benchmark: a multi-layer image (hundreds of MB, tens of thousands of files, made
# from this machine's /usr) unpacked by containerd and by berthd, side by side, alternating.
#   containerd  `ctr images mount` against containerd (ctr unpacks through its services)
#   berth/ctr   the same ctr command against berthd (berth's Snapshots and Diff services)
#   berth       `berth images unpack` (inside berthd, layers in parallel)
# Each unpack starts from a daemon just started on an empty root (a fresh ext4 of its own with
# FRESH_FS=1, the default), the image's content imported, caches dropped. Prints the median
# of RUNS runs each and the ratios. Needs root, containerd and runc.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
WORK=${BENCH_DIR:-/var/tmp/berth-bench}
export FRESH_FS=${FRESH_FS:-1}
mkdir -p "$WORK"
source scripts/bench-lib.sh
trap 'cleanup_daemons; clear_leftovers' EXIT

cargo build --release --workspace --bins >&2
IMAGE="$WORK/unpack-image.tar"
if [ ! -f "$IMAGE" ]; then
  make_image "$IMAGE" usr/include usr/share/doc usr/share/locale usr/bin usr/share/man usr/lib/python3
fi
echo "image: $(du -h "$IMAGE" | cut -f1) archive, $(($(tar -tf "$IMAGE" | grep -c 'blobs/sha256/.') - 2)) layers"

REF=bench.local/unpack:latest
files=0
for b in $(tar -tf "$IMAGE" | grep 'blobs/sha256/.'); do
  n=$( (tar -xOf "$IMAGE" "$b" | gzip -dc 2>/dev/null | tar -t 2>/dev/null || true) | wc -l)
  files=$((files + n))
done
echo "entries in layers: $files"

mnt="$WORK/mnt"; mkdir -p "$mnt"
# Each measurement on a daemon just started on an empty root (with FRESH_FS=1, the default,
# a fresh ext4 of its own: see bench-lib's fresh_fs), the image's content imported, caches
# dropped; only the unpack is timed.
fresh() { # containerd|berth: sets SOCK
  cleanup_daemons; PIDS=()
  if [ "$1" = containerd ]; then start_containerd; SOCK=$CTRD_SOCK; else start_berthd; SOCK=$BERTH_SOCK; fi
  ctr -a "$SOCK" images import --no-unpack --base-name bench.local/unpack "$IMAGE" >/dev/null
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
}
time_ctr_mount() { # containerd|berth: sets LAST
  local t0 t1; fresh "$1"
  t0=$(now)
  ctr -a "$SOCK" images mount "$REF" "$mnt" >/dev/null
  t1=$(now)
  ctr -a "$SOCK" images unmount "$mnt" >/dev/null
  LAST=$(echo "$t1 - $t0" | bc)
}
time_berth_unpack() { # sets LAST
  local t0 t1; fresh berth
  t0=$(now)
  target/release/berth -a "$SOCK" images unpack "$REF" >/dev/null
  t1=$(now)
  LAST=$(echo "$t1 - $t0" | bc)
}

c=(); b=(); p=()
for i in $(seq "$RUNS"); do
  time_ctr_mount containerd; c+=("$LAST")
  time_ctr_mount berth; b+=("$LAST")
  time_berth_unpack; p+=("$LAST")
  echo "run $i: containerd ${c[-1]}s  berth/ctr ${b[-1]}s  berth ${p[-1]}s" >&2
done
mc=$(printf '%s\n' "${c[@]}" | median)
mb=$(printf '%s\n' "${b[@]}" | median)
mp=$(printf '%s\n' "${p[@]}" | median)
echo "containerd (ctr images mount):     ${mc}s"
echo "berth via ctr (same client):       ${mb}s   ratio $(echo "scale=2; $mb / $mc" | bc)x"
echo "berth images unpack (in daemon):   ${mp}s   ratio $(echo "scale=2; $mp / $mc" | bc)x"
