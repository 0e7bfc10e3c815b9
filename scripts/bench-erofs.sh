#!/usr/bin/env bash
# EROFS against overlayfs, both berth's: the large multi-layer image of bench-unpack (made
# from this machine's /usr, one gzip layer per directory; its usr/bin has a static busybox)
# unpacked into each snapshotter by berthd, alternating, each run on a daemon just started
# on an empty root (a fresh ext4 with FRESH_FS=1, the default), content imported, caches
# dropped. Prints the medians of RUNS runs of:
#   unpack       `berth images unpack --snapshotter S`
#   first output `berth run --rm --snapshotter S IMAGE busybox echo` on the unpacked image,
#                caches dropped first (EROFS mounts its layer images here)
#   pull-to-run  `berth run` of the image imported but not unpacked (unpack + start + output)
#   disk         what the snapshotter's directory holds after unpack (du -sx) and what the
#                root's filesystem lost to it (df before and after the unpack)
#   remove       removing every snapshot (what a GC of the image does)
# Needs root, mkfs.erofs (erofs-utils) and a kernel with erofs. Not run in CI. NO_BUILD=1 uses
# the release binaries as they are.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3} WORK=${BENCH_DIR:-/var/tmp/berth-bench}
export FRESH_FS=${FRESH_FS:-1}
mkdir -p "$WORK" && source scripts/bench-lib.sh
trap 'cleanup_daemons; clear_leftovers' EXIT
[ "${NO_BUILD:-0}" = 1 ] || cargo build --release -p berth-cmd -p berth-shim --bins >&2
# The image bench-unpack.sh unpacks, made the same way when it is not there yet.
IMAGE="$WORK/unpack-image.tar"
[ -f "$IMAGE" ] || make_image "$IMAGE" usr/include usr/share/doc usr/share/locale usr/bin usr/share/man usr/lib/python3
echo "image: $(du -h "$IMAGE" | cut -f1) archive, $(($(tar -tf "$IMAGE" | grep -c 'blobs/sha256/.') - 2)) layers"
echo "kernel $(uname -r), erofs-utils $(dpkg-query -W -f '${Version}' erofs-utils 2>/dev/null || echo "?")"
REF=bench.local/unpack:latest
BERTH=(target/release/berth -a "$BERTH_SOCK")

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true; }
fresh() {
  cleanup_daemons; PIDS=()
  start_berthd
  ctr -a "$BERTH_SOCK" images import --no-unpack --base-name bench.local/unpack "$IMAGE" >/dev/null
  drop_caches
}
remove_all() { # snapshotter: every snapshot, children before parents
  local keys
  for _ in $(seq 64); do
    keys=$(ctr -a "$BERTH_SOCK" snapshots --snapshotter "$1" ls | awk 'NR>1 {print $1}')
    [ -z "$keys" ] && return 0
    for k in $keys; do ctr -a "$BERTH_SOCK" snapshots --snapshotter "$1" rm "$k" >/dev/null 2>&1 || true; done
  done
}
used_kib() { df --output=used -k "$WORK/berth" | tail -1 | tr -d ' '; }
first_output() { # snapshotter id: prints seconds; fails unless the container said hello
  local t0 t1 out
  t0=$(now)
  out=$("${BERTH[@]}" run --rm --network none --snapshotter "$1" "$REF" /usr/bin/busybox echo hello-"$2")
  t1=$(now)
  [ "$out" = "hello-$2" ] || { echo "bench: container said '$out'" >&2; return 1; }
  echo "$t1 - $t0" | bc
}

declare -A T
measure() { # snapshotter run
  local s=$1 i=$2 t0 t1 before after
  fresh
  before=$(used_kib)
  t0=$(now); "${BERTH[@]}" images unpack --snapshotter "$s" "$REF" >/dev/null; t1=$(now)
  T[$s-unpack]+="$(echo "$t1 - $t0" | bc) "
  # erofs deletes the files it packed in the background (new-* directories): count after.
  while compgen -G "$WORK/berth/root/io.containerd.snapshotter.v1.$s/snapshots/new-*" >/dev/null; do sleep 0.1; done
  sync; after=$(used_kib)
  T[$s-df]+="$(((after - before) / 1024)) "
  T[$s-du]+="$(($(du -sxk "$WORK/berth/root/io.containerd.snapshotter.v1.$s" | cut -f1) / 1024)) "
  drop_caches
  T[$s-first]+="$(first_output "$s" "$i") "
  t0=$(now); remove_all "$s"; t1=$(now)
  T[$s-remove]+="$(echo "$t1 - $t0" | bc) "
  fresh
  T[$s-pullrun]+="$(first_output "$s" "p$i") "
}

for i in $(seq "$RUNS"); do
  for s in overlayfs erofs; do
    measure "$s" "$i"
  done
  echo "run $i done" >&2
done
med() { printf '%s\n' ${T[$1]} | median; }
printf '%-14s %11s %11s %8s\n' "median of $RUNS" overlayfs erofs ratio
for k in unpack first pullrun remove; do
  o=$(med "overlayfs-$k"); e=$(med "erofs-$k")
  printf '%-14s %10.2fs %10.2fs %7.2fx\n' "$k" "$o" "$e" "$(echo "scale=3; $e / $o" | bc)"
done
for k in du df; do
  o=$(med "overlayfs-$k"); e=$(med "erofs-$k")
  printf '%-14s %8sMiB %8sMiB %7.2fx\n' "disk ($k)" "$o" "$e" "$(echo "scale=3; $e / $o" | bc)"
done
for k in unpack first pullrun remove du df; do
  echo "all $k: overlayfs ${T[overlayfs-$k]}/ erofs ${T[erofs-$k]}" >&2
done
