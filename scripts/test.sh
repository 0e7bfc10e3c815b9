#!/usr/bin/env bash
# The whole test suite: lint, build the binaries the black-box tests run, then every test.
# Black-box tests start real daemons and must run as root.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace --bins
cargo test --workspace --no-fail-fast "$@"
