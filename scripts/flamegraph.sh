#!/usr/bin/env bash
# Flame graphs of berth's two hot paths, from `perf record` of the release binaries:
#   scripts/flamegraph.sh pull OUT.svg   berthd pulling bench-pull's image (~335 MB gzip, 6
#                                        layers) from a loopback docker-registry, empty root
#   scripts/flamegraph.sh run OUT.svg    berthd and its shims across 20 `berth run --rm
#                                        --network none busybox /bin/true`
#   scripts/flamegraph.sh ten OUT.svg    the whole machine across 5 rounds of ten `berth
#                                        run -d --network none busybox sleep` at once
# Needs root, Debian's linux-perf (perf) and inferno (`cargo install inferno`). Stacks come
# from DWARF unwinding (no frame pointers needed), sampled at 499 Hz.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?pull, run or ten}
out=$(realpath -m "${2:?OUT.svg}")
WORK=${BENCH_DIR:-/var/tmp/berth-bench}
mkdir -p "$WORK" "$(dirname "$out")"
source scripts/bench-lib.sh
command -v perf >/dev/null || { echo "flamegraph: install linux-perf" >&2; exit 1; }
command -v inferno-flamegraph >/dev/null || { echo "flamegraph: cargo install inferno" >&2; exit 1; }
REG_PID=""
stop_all() { if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; fi; cleanup_daemons; }
trap stop_all EXIT
cargo build --release --workspace --bins >&2
data="$WORK/perf.data"

case "$what" in
pull)
  IMAGE="$WORK/unpack-image.tar"
  if [ ! -f "$IMAGE" ]; then
    make_image "$IMAGE" usr/include usr/share/doc usr/share/locale usr/bin usr/share/man usr/lib/python3
  fi
  PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  rm -rf "$WORK/registry"; mkdir -p "$WORK/registry"
  printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$WORK/registry/data" "$PORT" >"$WORK/registry/config.yml"
  docker-registry serve "$WORK/registry/config.yml" >"$WORK/registry.log" 2>&1 &
  REG_PID=$!
  for _ in $(seq 100); do (echo >"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.1; done
  REF="127.0.0.1:$PORT/bench/pull:latest"
  skopeo copy --quiet --insecure-policy --dest-tls-verify=false "oci-archive:$IMAGE:latest" "docker://$REF"
  sync; echo 3 >/proc/sys/vm/drop_caches 2>/dev/null || true
  FRESH_FS=1 start_berthd
  perf record -q -F 499 --call-graph dwarf,32768 -o "$data" -p "${PIDS[0]}" &
  perf_pid=$!
  sleep 0.5
  t0=$(now)
  target/release/berth -a "$BERTH_SOCK" images pull --plain-http "$REF" >/dev/null
  t1=$(now)
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  echo "flamegraph: pull took $(echo "$t1 - $t0" | bc) s under perf" >&2
  ;;
run)
  img="$WORK/busybox.tar"
  make_busybox "$img"
  start_berthd
  target/release/berth -a "$BERTH_SOCK" images import --base-name bench.local/busybox "$img" >/dev/null
  target/release/berth -a "$BERTH_SOCK" containers run --rm --network none bench.local/busybox:latest warm /bin/true
  perf record -q -F 499 --call-graph dwarf,32768 -o "$data" -a &
  perf_pid=$!
  sleep 0.5
  for i in $(seq 20); do
    target/release/berth -a "$BERTH_SOCK" containers run --rm --network none bench.local/busybox:latest "f$i" /bin/true
  done
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  ;;
ten)
  img="$WORK/busybox.tar"
  make_busybox "$img"
  start_berthd
  b() { target/release/berth -a "$BERTH_SOCK" "$@"; }
  b images import --base-name bench.local/busybox "$img" >/dev/null
  b run --rm --network none bench.local/busybox:latest warm /bin/true
  perf record -q -F 499 --call-graph dwarf,32768 -o "$data" -a &
  perf_pid=$!
  sleep 0.5
  for r in $(seq 5); do
    pids=()
    for i in $(seq 10); do b run -d --network none bench.local/busybox:latest "t$r-$i" /bin/sleep 1000 >/dev/null & pids+=($!); done
    wait "${pids[@]}"
    sleep 0.3
  done
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  for r in $(seq 5); do for i in $(seq 10); do b rm -f "t$r-$i" >/dev/null 2>&1 || true; done; done
  ;;
*) echo "flamegraph: pull, run or ten" >&2; exit 2 ;;
esac

# For `run`, every process on the machine was sampled: keep berth's (berthd's threads are
# tokio-rt-worker, the shim's reaper), runc's and the container's, kernel
# work done on their behalf.
filter=cat
if [ "$what" != pull ]; then filter="grep -E '^(berth|tokio-r|reaper|containerd-shim|runc|true|sleep|exe|youki|cgroup-w)'"; fi
perf script -i "$data" 2>/dev/null | inferno-collapse-perf | eval "$filter" | inferno-flamegraph --title "berth $what ($(date -u +%F), $(nproc) cores)" >"$out"
echo "$out"
