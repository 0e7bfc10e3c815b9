#!/usr/bin/env bash
# Flame graphs of berth's two hot paths, from `perf record` of the release binaries:
#   scripts/flamegraph.sh pull OUT.svg   berthd pulling bench-pull's image (~335 MB gzip, 6
#                                        layers) from a loopback docker-registry, empty root
#   scripts/flamegraph.sh run OUT.svg    berthd and its shims across 20 `berth run --rm
#                                        --network none busybox /bin/true`
#   scripts/flamegraph.sh ten OUT.svg    the whole machine across 5 rounds of ten `berth
#                                        run -d --network none busybox sleep` at once
#   scripts/flamegraph.sh cri OUT.svg    the whole machine across 10 CRI pod lifecycles through
#                                        crictl (runp, create, start, exec, exec -s, stop, stopp,
#                                        rmp) with ../shared/cri's conflist and images; CRICTL
#                                        names crictl v1.36.0 (built by you, not in this repository)
# Needs root, Debian's linux-perf (perf) and inferno (`cargo install inferno`). Stacks come
# from DWARF unwinding (no frame pointers needed), sampled at 499 Hz.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?pull, run, ten or cri}
out=$(realpath -m "${2:?OUT.svg}")
WORK=${BENCH_DIR:-/var/tmp/berth-bench}
mkdir -p "$WORK" "$(dirname "$out")"
# BERTH_BIN=DIR profiles the binaries in DIR (an older build's copy) instead of a fresh build.
fresh_build=${BERTH_BIN:-yes}
source scripts/bench-lib.sh
command -v perf >/dev/null || { echo "flamegraph: install linux-perf" >&2; exit 1; }
command -v inferno-flamegraph >/dev/null || { echo "flamegraph: cargo install inferno" >&2; exit 1; }
REG_PID=""
stop_all() { if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; fi; cleanup_daemons; }
trap stop_all EXIT
if [ "$fresh_build" = yes ]; then cargo build --release --workspace --bins >&2; fi
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
  "$BERTH_BIN/berth" -a "$BERTH_SOCK" images pull --plain-http "$REF" >/dev/null
  t1=$(now)
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  echo "flamegraph: pull took $(echo "$t1 - $t0" | bc) s under perf" >&2
  ;;
run)
  img="$WORK/busybox.tar"
  make_busybox "$img"
  start_berthd
  "$BERTH_BIN/berth" -a "$BERTH_SOCK" images import --base-name bench.local/busybox "$img" >/dev/null
  "$BERTH_BIN/berth" -a "$BERTH_SOCK" containers run --rm --network none bench.local/busybox:latest warm /bin/true
  perf record -q -F 499 --call-graph dwarf,32768 -o "$data" -a &
  perf_pid=$!
  sleep 0.5
  for i in $(seq 20); do
    "$BERTH_BIN/berth" -a "$BERTH_SOCK" containers run --rm --network none bench.local/busybox:latest "f$i" /bin/true
  done
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  ;;
ten)
  img="$WORK/busybox.tar"
  make_busybox "$img"
  start_berthd
  b() { "$BERTH_BIN/berth" -a "$BERTH_SOCK" "$@"; }
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
cri)
  CRICTL=${CRICTL:-$(command -v crictl || true)}
  [ -x "$CRICTL" ] || { echo "flamegraph: set CRICTL to a crictl binary (cri-tools v1.36.0)" >&2; exit 2; }
  KIT=${KIT:-/work/shared/cri}
  export CRI_TEST_DIR=${CRI_TEST_DIR:-$WORK/cri-test}
  "$KIT/write-runtime-config.sh" >/dev/null
  "$KIT/prepare-images.sh" >/dev/null 2>&1 || true
  clear_leftovers
  fresh_root "$WORK/berth"
  mkdir -p "$WORK/berth"
  printf 'root = "%s"\nstate = "%s"\naddress = "%s"\nlog_level = "warn"\n[registry]\nconfig_path = "%s"\n[cri]\nsandbox_image = "registry.k8s.io/pause:3.6"\ncni_conf_dir = "%s"\nrestrict_oom_score_adj = true\n' \
    "$WORK/berth/root" "$WORK/berth/state" "$BERTH_SOCK" "$CRI_TEST_DIR/certs.d" "$CRI_TEST_DIR/cni/net.d" >"$WORK/berth/berthd.toml"
  "$BERTH_BIN/berthd" -c "$WORK/berth/berthd.toml" >"$WORK/berthd.log" 2>&1 &
  PIDS+=($!)
  wait_socket "$BERTH_SOCK"
  c=("$CRICTL" --runtime-endpoint "unix://$BERTH_SOCK" --image-endpoint "unix://$BERTH_SOCK" --timeout 60s)
  IMG=registry.k8s.io/e2e-test-images/busybox:1.29-2
  "${c[@]}" pull "$IMG" >/dev/null
  "${c[@]}" pull registry.k8s.io/pause:3.6 >/dev/null
  printf '{"metadata":{"name":"c"},"image":{"image":"%s"},"command":["sh","-c","trap \\"exit 0\\" TERM; sleep 3600 & wait"],"linux":{}}' "$IMG" >"$WORK/ctr.json"
  lifecycle() {
    printf '{"metadata":{"name":"flame-%s","namespace":"default","uid":"flame-%s-%s","attempt":1},"log_directory":"%s/logs-%s","linux":{}}' \
      "$1" "$1" "$$" "$WORK" "$1" >"$WORK/pod.json"
    local pod cid
    pod=$("${c[@]}" runp "$WORK/pod.json")
    cid=$("${c[@]}" create "$pod" "$WORK/ctr.json" "$WORK/pod.json")
    "${c[@]}" start "$cid" >/dev/null
    "${c[@]}" exec "$cid" echo hi >/dev/null
    "${c[@]}" exec -s "$cid" echo hi >/dev/null
    "${c[@]}" stop --timeout 10 "$cid" >/dev/null
    "${c[@]}" stopp "$pod" >/dev/null
    "${c[@]}" rmp "$pod" >/dev/null
  }
  lifecycle warm
  perf record -q -F 499 --call-graph dwarf,32768 -o "$data" -a &
  perf_pid=$!
  sleep 0.5
  for i in $(seq 10); do lifecycle "$i"; done
  kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null || true
  ;;
*) echo "flamegraph: pull, run, ten or cri" >&2; exit 2 ;;
esac

# For `run`, every process on the machine was sampled: keep berth's (berthd's threads are
# tokio-rt-worker, the shim's reaper), runc's and the container's, kernel
# work done on their behalf.
filter=cat
if [ "$what" != pull ]; then filter="grep -E '^(berth|tokio-r|reaper|containerd-shim|runc|true|sleep|exe|youki|cgroup-w|native-r|bridge|host-local|portmap|loopback|pause|sh|echo|crictl)'"; fi
perf script -i "$data" 2>/dev/null | inferno-collapse-perf | eval "$filter" | inferno-flamegraph --title "berth $what ($(date -u +%F), $(nproc) cores)" >"$out"
echo "$out"
