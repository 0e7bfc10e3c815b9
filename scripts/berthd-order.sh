#!/usr/bin/env bash
# Records the functions berthd runs and writes them to cmd/berthd-link-order.txt, the order
# lld lays berthd's code out in (see cmd/build.rs): the kernel maps a binary's pages 64 KB
# (or a page-cache folio) at a time around each fault, so the code berthd runs at start,
# scattered over 21 MB of text, kept ~12 MB of it mapped while idle. First what runs from
# start until idle, then what a pull, an import and a container's run add. Rerun after a
# toolchain or dependency update, or when start-up changes much (names then change), and
# commit the file; ORDER_BIN=DIR records the release binaries in DIR. Needs root, valgrind (apt-get install valgrind), skopeo and
# docker-registry; takes a few minutes.
#
# berthd runs under callgrind; the profile is dumped once it has been idle for a while
# (phase 1) and written again when it stops (phase 2, the requests).
set -euo pipefail
cd "$(dirname "$0")/.."
for tool in valgrind callgrind_control skopeo docker-registry; do
  command -v "$tool" >/dev/null || { echo "berthd-order: needs $tool" >&2; exit 1; }
done
WORK=${BENCH_DIR:-/var/tmp/berth-berthd-order}
rm -rf "$WORK"; mkdir -p "$WORK/bin" "$WORK/cg"
source scripts/bench-lib.sh
REG_PID=""
stop_all() { if [ -n "$REG_PID" ]; then kill "$REG_PID" 2>/dev/null || true; fi; cleanup_daemons; }
trap stop_all EXIT
# ORDER_BIN: a directory with release builds of berthd, berth and the shim to record instead
# of building them here.
BIN=${ORDER_BIN:-target/release}
if [ -z "${ORDER_BIN:-}" ]; then
  cargo build --release -p berth-cmd -p berth-shim --bin berthd --bin berth --bin containerd-shim-berth-v2 >&2
fi
cp "$BIN/berthd" "$BIN/berth" "$BIN/containerd-shim-berth-v2" "$WORK/bin/"
img="$WORK/busybox.tar"
make_busybox "$img"
start_registry error
REF="127.0.0.1:$PORT/order/busybox:latest"
skopeo copy --quiet --insecure-policy --dest-tls-verify=false "oci-archive:$img:latest" "docker://$REF"
berth() { "$WORK/bin/berth" -a "$WORK/berth.sock" "$@"; }

clear_leftovers
PATH="$WORK/bin:$PATH" valgrind -q --tool=callgrind --demangle=no --log-file="$WORK/cg/vg.log" \
  --callgrind-out-file="$WORK/cg/berthd.out" "$WORK/bin/berthd" --root "$WORK/root" \
  --state "$WORK/state" --address "$WORK/berth.sock" --log-level warn >"$WORK/berthd.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 600); do [ -S "$WORK/berth.sock" ] && break; sleep 0.1; done
[ -S "$WORK/berth.sock" ] || { echo "berthd-order: berthd did not start (see $WORK/berthd.log)" >&2; exit 1; }
sleep 10 # idle: what runs after the socket appears (recovery, GC) belongs to start-up
callgrind_control -d "${PIDS[0]}" >/dev/null

# valgrind lacks openat2, which the layer applier confines every path with: the layers
# download and their unpack starts, then fails, and the run finds no rootfs. What ran is kept.
berth images pull --plain-http "$REF" >/dev/null 2>&1 || true
berth containers run --rm --network none "$REF" order1 /bin/true >/dev/null 2>&1 || true
ctr -a "$WORK/berth.sock" images import --base-name bench.local/busybox "$img" >/dev/null 2>&1 || true
berth images ls >/dev/null
berth containers ls >/dev/null
kill "${PIDS[0]}"; wait "${PIDS[0]}" 2>/dev/null || true
PIDS=()

start=$(ls "$WORK"/cg/berthd.out.* | sort | head -1)
python3 scripts/link-order.py "$WORK/bin/berthd" "$start" "$WORK/cg/berthd.out" \
  > cmd/berthd-link-order.txt
echo "berthd-order: $(wc -l < cmd/berthd-link-order.txt) functions in cmd/berthd-link-order.txt" >&2
