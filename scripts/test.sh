#!/usr/bin/env bash
# The test command from the README: every unit, integration and doc test in the workspace.
# nextest runs each test in its own process, which matters here: the verifier's counters are
# process-wide, and tests assert on them.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo nextest run --workspace --no-fail-fast
cargo test --workspace --doc
