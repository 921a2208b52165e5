#!/usr/bin/env bash
# The test command (README, and `.ci/run` after fmt and clippy): installs and starts the real
# services the tests use (PostgreSQL, single-node Slurm; see scripts/services.sh), runs every
# test of the workspace against them, and stops them again. Extra arguments go to
# `cargo test`. Set LIFTOFF_KEEP_SERVICES=1 to leave the services running afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."

env_file="$(bash scripts/services.sh start)"
if [ "${LIFTOFF_KEEP_SERVICES:-0}" != 1 ]; then
    trap 'bash scripts/services.sh stop' EXIT
fi
# shellcheck disable=SC1090
source "$env_file"
cargo test --workspace "$@"
# Tests ignored for a known fault still run here, bounded and reported, not gating: each
# names its fault in its #[ignore] reason (today: the SQLite WAL-bound test that hangs).
if [ $# -eq 0 ]; then
    if timeout 180 cargo test -p liftoff-store --test sqlite -- --ignored; then
        echo "ignored tests: passed this time"
    else
        echo "ignored tests: failed or hung (known; see their #[ignore] reasons)"
    fi
fi
