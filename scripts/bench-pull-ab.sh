#!/usr/bin/env bash
# A/B of two berthd builds pulling one image, for CPU cost on a loaded machine: berthd's
# CPU-seconds (utime+stime from /proc/PID/stat, before and after the pull) and the wall
# time, each pull into a fresh ext4 root (see bench-lib's fresh_fs), builds alternating.
#   REF=127.0.0.1:PORT/bench/pull:latest scripts/bench-pull-ab.sh ROUNDS DIR_A DIR_B...
# Each DIR holds a berthd and a berth (copy release builds there: target/ is shared).
# PERF_OUT=file (with PERF_CG, default -g) records berthd under perf; STRACE_OUT=file
# counts its syscalls (strace -c -f). The registry: bench-pull.sh's, or start_registry.
set -euo pipefail
REF=${REF:?REF=registry/repo:tag}
W=${BENCH_DIR:-/var/tmp/berth-bench}/ab; mkdir -p "$W"
ROUNDS=$1; shift
TCK=$(getconf CLK_TCK)
cpu() { awk -v t="$TCK" '{print ($14+$15)/t}' "/proc/$1/stat"; }
detach() { losetup -j "$W/root.img" 2>/dev/null | cut -d: -f1 | while read -r l; do losetup -d "$l"; done; }
fresh() {
  if mountpoint -q "$W/root"; then umount "$W/root"; fi
  detach
  rm -rf "$W/root" "$W/root.img"; mkdir -p "$W/root"; truncate -s 16G "$W/root.img"; mkfs.ext4 -q -F "$W/root.img"
  mount "$(losetup --direct-io=on --show -f "$W/root.img")" "$W/root"
}
one() {
  local d=$1 pid c0 t0 t1 c1 pp="" sp=""; fresh; sync; echo 3 >/proc/sys/vm/drop_caches
  "$d/berthd" --root "$W/root/root" --state "$W/root/state" --address "$W/b.sock" --log-level warn >"$W/berthd.log" 2>&1 &
  pid=$!
  for _ in $(seq 200); do [ -S "$W/b.sock" ] && break; sleep 0.05; done
  sleep 0.3
  if [ -n "${PERF_OUT:-}" ]; then perf record -q -F 499 ${PERF_CG:--g} -o "$PERF_OUT" -p "$pid" & pp=$!; sleep 0.3; fi
  if [ -n "${STRACE_OUT:-}" ]; then strace -c -f -o "$STRACE_OUT" -p "$pid" & sp=$!; sleep 0.5; fi
  c0=$(cpu "$pid"); t0=$(date +%s.%N)
  "$d/berth" -a "$W/b.sock" images pull --plain-http "$REF" >/dev/null
  t1=$(date +%s.%N); c1=$(cpu "$pid")
  if [ -n "$pp" ]; then kill -INT "$pp"; wait "$pp" || true; fi
  if [ -n "$sp" ]; then kill -INT "$sp"; wait "$sp" || true; fi
  kill "$pid"; wait "$pid" || true
  printf '%s cpu %.2f wall %.2f load %s\n' "$d" "$(echo "$c1 - $c0" | bc)" "$(echo "$t1 - $t0" | bc)" "$(cut -d' ' -f1 /proc/loadavg)"
  rm -f "$W/b.sock"
}
for _ in $(seq "$ROUNDS"); do for d in "$@"; do one "$d"; done; done
umount "$W/root" 2>/dev/null || true
detach
