#!/usr/bin/env bash
# Soak (not CI): HOURS of mixed work against one berthd of its own (temporary root, state and
# socket), at a moderate pace: load.rs's mix (imports, pulls from a loopback docker-registry,
# runs, execs, tags, removals), content ingests, leases, listings, `berth build`s and CRI
# pods (tests/tests/soak.rs). berthd's RSS, descriptors, threads, shims, mounts, content
# store, redb file, root's disk use and GC work are sampled every minute (more often on runs
# under half an hour) into samples.csv; scripts/soak-report.py judges and plots them.
#
#   scripts/soak.sh HOURS          as root; HOURS may be fractional (0.05: a 3-minute trial)
#
# Fails (exit 1, naming them) when an operation erred unexpectedly (ops.csv counts each kind,
# errors.log has every failure) or a sampled series grows without bound (the rule is in
# scripts/soak-report.py: medians of three windows after warm-up, each rising past a
# tolerance). Environment:
#   SOAK_DIR      where samples.csv, ops.csv, errors.log and test.log go
#                 (default /var/tmp/berth-soak-<UTC time>)
#   SOAK_SVG      the plot (default docs/perf/soak-<UTC date>.svg)
#   SOAK_RELEASE  1: berthd and the shim from a release build (built first); default: debug
set -euo pipefail
cd "$(dirname "$0")/.."
HOURS=${1:-}
if ! [[ $HOURS =~ ^[0-9]*\.?[0-9]+$ ]]; then
  echo "usage: scripts/soak.sh HOURS (e.g. 2, or 0.05 for a 3-minute trial)" >&2
  exit 2
fi
[ "$(id -u)" = 0 ] || { echo "soak: run as root (it starts berthd and containers)" >&2; exit 2; }
OUT=${SOAK_DIR:-/var/tmp/berth-soak-$(date -u +%Y%m%dT%H%M%S)}
SVG=${SOAK_SVG:-docs/perf/soak-$(date -u +%Y-%m-%d).svg}
mkdir -p "$OUT" "$(dirname "$SVG")"

# Others may be mid-edit in this checkout: when the build fails, the binaries already built
# run (and say so), rather than no soak at all.
if ! { cargo build --workspace --bins && cargo test -p berth-tests --test soak --no-run; } >&2; then
  echo "soak: the build failed; running the binaries already in target/" >&2
fi
if [ "${SOAK_RELEASE:-0}" = 1 ]; then
  cargo build --release --workspace --bins >&2 || echo "soak: the release build failed; running what target/release holds" >&2
  export BERTH_BIN_DIR="$PWD/target/release"
fi
SOAK_BIN=$(ls -t target/debug/deps/soak-* 2>/dev/null | grep -v '\.d$' | head -n 1 || true)
[ -x "$SOAK_BIN" ] || { echo "soak: no soak test binary in target/debug/deps: build it (cargo test -p berth-tests --test soak --no-run)" >&2; exit 2; }
# The run keeps copies of the binaries: others rebuilding target/ for hours would otherwise
# swap berthd's shim under it (or remove it for a moment while cargo links a new one).
BIN_FROM=${BERTH_BIN_DIR:-$PWD/target/debug}
mkdir -p "$OUT/bin"
find "$BIN_FROM" -maxdepth 1 -type f -executable -exec cp -p {} "$OUT/bin/" \;
cp -p "$SOAK_BIN" "$OUT/bin/soak-test"
SOAK_BIN="$OUT/bin/soak-test"
export BERTH_BIN_DIR="$OUT/bin"

echo "soak: $HOURS h from $(date -u +%FT%TZ), output in $OUT" >&2
status=0
BERTH_SOAK_HOURS=$HOURS BERTH_SOAK_OUT=$OUT \
  "$SOAK_BIN" --nocapture --test-threads 1 2>&1 | tee "$OUT/test.log" || status=1
if [ -s "$OUT/samples.csv" ]; then
  python3 scripts/soak-report.py "$OUT/samples.csv" "$SVG" | tee "$OUT/report.txt" || status=1
else
  echo "soak: no samples were written" >&2
  status=1
fi
if [ -s "$OUT/errors.log" ]; then
  echo "soak: FAILED: unexpected errors by kind (ops.csv: kind,ok,failed):" >&2
  awk -F, 'NR > 1 && $3 > 0' "$OUT/ops.csv" >&2 || true
  head -n 20 "$OUT/errors.log" >&2
  status=1
fi
echo "soak: $( [ "$status" = 0 ] && echo passed || echo FAILED ) at $(date -u +%FT%TZ); figures in $OUT, plot $SVG" >&2
exit "$status"
