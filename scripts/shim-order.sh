#!/usr/bin/env bash
# Records the functions a serving shim runs and writes them to shim-v2/link-order.txt, the
# order lld lays the shim's code out in (see shim-v2/build.rs): every shim maps only the
# 64 KB windows of its text it touches, so code used together is kept together. Rerun after
# a toolchain or dependency update (names then change) and commit the file. Needs root and
# valgrind (apt-get install valgrind); takes about a minute.
#
# Each shim runs under callgrind, through a wrapper berthd finds first: a container's whole
# life with runc behind the shim (create, start, exec, ps, pause, resume, kill, delete), then
# the native runtime's create. Under valgrind that create fails (valgrind refuses the
# container's RLIMIT_NOFILE), but the shim's own side of it is what is recorded: the
# container's setup runs in a forked child, never in the serving shim.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v valgrind >/dev/null || { echo "shim-order: needs valgrind (apt-get install valgrind)" >&2; exit 1; }
WORK=${BENCH_DIR:-/var/tmp/berth-shim-order}
rm -rf "$WORK"; mkdir -p "$WORK/bin" "$WORK/cg"
source scripts/bench-lib.sh
trap cleanup_daemons EXIT
cargo build --release --workspace --bins >&2
SHIM="$PWD/target/release/containerd-shim-berth-v2"
cp target/release/berthd "$WORK/bin/"
cat > "$WORK/bin/containerd-shim-berth-v2" <<EOF
#!/bin/sh
exec valgrind -q --tool=callgrind --demangle=no --log-file=$WORK/cg/vg.%p.log \
  --callgrind-out-file=$WORK/cg/cg.%p.out "$SHIM" "\$@"
EOF
chmod +x "$WORK/bin/containerd-shim-berth-v2"
img="$WORK/busybox.tar"
make_busybox "$img"
REF=bench.local/busybox:latest
berth() { target/release/berth -a "$WORK/berth.sock" "$@"; }

for runtime in runc native; do
  clear_leftovers
  rm -rf "$WORK/root" "$WORK/state"
  BERTH_SHIM_RUNTIME=$runtime PATH="$WORK/bin:$PATH" "$WORK/bin/berthd" --root "$WORK/root" \
    --state "$WORK/state" --address "$WORK/berth.sock" --log-level error >"$WORK/berthd-$runtime.log" 2>&1 &
  PIDS+=($!)
  wait_socket "$WORK/berth.sock"
  ctr -a "$WORK/berth.sock" images import --base-name bench.local/busybox "$img" >/dev/null
  if [ "$runtime" = runc ]; then
    berth containers run --rm --network none "$REF" o1 /bin/true
    berth containers run -d --network none "$REF" o2 /bin/sleep 100 >/dev/null
    ctr -a "$WORK/berth.sock" tasks exec --exec-id e1 o2 /bin/echo exec >/dev/null
    ctr -a "$WORK/berth.sock" tasks ps o2 >/dev/null
    ctr -a "$WORK/berth.sock" tasks pause o2
    ctr -a "$WORK/berth.sock" tasks resume o2
    ctr -a "$WORK/berth.sock" tasks kill -s SIGKILL o2
    sleep 1
    ctr -a "$WORK/berth.sock" tasks rm o2 >/dev/null
  else
    berth containers run --rm --network none "$REF" o3 /bin/true 2>/dev/null || true
  fi
  kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true
  unset 'PIDS[-1]'
  rm -f "$WORK/berth.sock"
done
sleep 1 # the last shims write their profiles as they exit

# Every function of the shim binary that ran in any of the shims, one phase.
python3 scripts/link-order.py "$SHIM" "$(IFS=,; echo "$WORK"/cg/cg.*.out)" > shim-v2/link-order.txt
echo "shim-order: $(wc -l < shim-v2/link-order.txt) functions in shim-v2/link-order.txt" >&2
