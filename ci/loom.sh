#!/usr/bin/env bash
# Model checking with loom: the protocol models in crates/wdf/tests/loom_protocols.rs (see the
# file's header and ARCHITECTURE.md, "What is proven, and by which test").
#
# Builds in its own target directory (target/loom) so that `--cfg loom` does not invalidate the
# normal build. The preemption bound defaults to 4: measured on the 2-core build machine, the
# models run in about 1 s at bound 3, 7 s at 4 and 30 s at 5 (plus about a minute for the first
# release build); bound 2 misses a seeded bug (a cancel routine that finds its request under one
# hold of the queue lock and removes it under another) that bound 3 catches.
# ci/loom-mutants.py seeds fourteen such bugs one at a time and checks that each is caught.
# Override with LOOM_MAX_PREEMPTIONS=N; pass test names or other libtest arguments through.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-4}"
export CARGO_TARGET_DIR="${LOOM_TARGET_DIR:-target/loom}"
export RUSTFLAGS="--cfg loom"

echo "== loom (LOOM_MAX_PREEMPTIONS=$LOOM_MAX_PREEMPTIONS, target dir $CARGO_TARGET_DIR)"
start=$(date +%s)
cargo test -p wdf --test loom_protocols --release -- --nocapture "$@"
echo "loom: done in $(( $(date +%s) - start )) s"
