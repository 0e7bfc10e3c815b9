#!/usr/bin/env bash
# The whole test suite: lint, build the binaries the black-box tests run, then every test.
# Black-box tests start real daemons and must run as root. Afterwards nothing a test made may
# be left on the host (bridges, veths, netns, iptables rules, mounts, shims): what was there
# before the tests and is not now is printed, and fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
before=$(mktemp)
trap 'rm -f "$before"' EXIT
./scripts/leftovers.sh list >"$before"
status=0
cargo test --workspace --no-fail-fast "$@" || status=$?
# The container suites again with runc behind berth's shim (its default is the native
# runtime, libcontainer in the shim): both runtimes stay tested.
BERTH_SHIM_RUNTIME=runc cargo test -p berth-tests --no-fail-fast \
  --test run --test tasks --test cli --test ctr --test volumes --test verbs "$@" || status=$?
./scripts/leftovers.sh diff "$before" || status=$?
exit "$status"
