#!/usr/bin/env bash
# Installs what berth needs on Debian 12 and builds it. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/setup-deps.sh

cargo build --release --workspace --bins
echo "setup: built target/release/berthd and target/release/berth"
