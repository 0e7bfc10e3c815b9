#!/usr/bin/env bash
# A/B of two berth builds: `berth containers run --rm --network none IMAGE ID /bin/true`, each build's
# berthd on its own root, runs interleaved (A, B, B unconfined) so both see the same machine.
# A and B are directories holding berthd, berth and containerd-shim-berth-v2 (release builds
# of two commits). Usage: A=/path/to/old/target/release B=target/release scripts/bench-ab.sh
# B's third column passes `--security-opt seccomp=unconfined` (omit with UNCONFINED=0 when B
# predates that flag). Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${A:?A=directory of the first build's binaries}" "${B:?B=directory of the second build's binaries}"
RUNS=${RUNS:-21}
WORK=${BENCH_DIR:-/var/tmp/berth-bench-ab}
rm -rf "$WORK"; mkdir -p "$WORK"
source scripts/bench-lib.sh
make_busybox "$WORK/busybox.tar"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
start() { # NAME BINDIR
  mkdir -p "$WORK/$1"
  PATH="$2:$PATH" "$2/berthd" --root "$WORK/$1/root" --state "$WORK/$1/state" \
    --address "$WORK/$1/b.sock" >"$WORK/$1/log" 2>&1 &
  pids+=($!)
  wait_socket "$WORK/$1/b.sock"
  ctr -a "$WORK/$1/b.sock" images import --base-name bench.local/busybox "$WORK/busybox.tar" >/dev/null
}
start a "$A"
start b "$B"
ms() { local s; s=$(date +%s%N); "$@" >/dev/null 2>&1; echo $(( ($(date +%s%N) - s) / 1000 )); }
run() { # BINDIR NAME ID [OPTS...]
  local bin=$1 name=$2 id=$3; shift 3
  PATH="$bin:$PATH" ms "$bin/berth" -a "$WORK/$name/b.sock" containers run --rm --network none "$@" \
    bench.local/busybox:latest "$id" /bin/true
}
a=(); b=(); u=()
for i in $(seq "$RUNS"); do
  a+=("$(run "$A" a "r$i")")
  b+=("$(run "$B" b "r$i")")
  [ "${UNCONFINED:-1}" = 0 ] || u+=("$(run "$B" b "u$i" --security-opt seccomp=unconfined)")
done
median_ms() { printf '%s\n' "$@" | sort -n | awk '{v[NR]=$1} END {printf "%.1f ms", v[int((NR+1)/2)]/1000}'; }
echo "berth run --rm, median of $RUNS interleaved: A $(median_ms "${a[@]}"), B $(median_ms "${b[@]}")${u[0]:+, B unconfined $(median_ms "${u[@]}")}"
