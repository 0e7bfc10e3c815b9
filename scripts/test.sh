#!/usr/bin/env bash
# The whole test suite: lint, build the binaries the black-box tests run, then every test.
# Black-box tests start real daemons and must run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace --no-fail-fast "$@"
# The container suites again with runc behind berth's shim (its default is the native
# runtime, libcontainer in the shim): both runtimes stay tested.
BERTH_SHIM_RUNTIME=runc cargo test -p berth-tests --no-fail-fast \
  --test run --test tasks --test cli --test ctr --test volumes --test verbs "$@"
