#!/usr/bin/env bash
# Miri over nt's synchronization code (the crate's only unsafe: nt::sync's lock guards,
# LockedBy, and the raw mutex unlock): the spin-lock and passive-mutex tests and nt's doc tests.
#
# Needs a nightly toolchain with the miri component. Without one it prints why it skips and
# exits 0; it never installs anything (add the component with
# `rustup +nightly component add miri rust-src`).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

skip() {
  echo "miri: SKIPPED: $*"
  exit 0
}

command -v rustup >/dev/null 2>&1 || skip "rustup is not installed, so no nightly toolchain can be selected"
nightly=$(rustup toolchain list 2>/dev/null | awk '/^nightly/ {print $1; exit}')
[ -n "$nightly" ] || skip "no nightly toolchain (rustup toolchain list | grep nightly found none)"
rustup "+$nightly" component list --installed 2>/dev/null | grep -q '^miri' \
  || skip "toolchain $nightly has no miri component (rustup +nightly component add miri rust-src)"
rustup "+$nightly" component list --installed 2>/dev/null | grep -q '^rust-src' \
  || skip "toolchain $nightly has no rust-src component, which Miri needs for its sysroot"

export CARGO_TARGET_DIR="${MIRI_TARGET_DIR:-target/miri}"
# Isolation stays on (no host clock, no file system); many-seeds would multiply the runtime.
export MIRIFLAGS="${MIRIFLAGS:-}"
echo "== miri ($nightly, target dir $CARGO_TARGET_DIR)"
start=$(date +%s)
cargo "+$nightly" miri setup
cargo "+$nightly" miri test -p nt --test spin_lock --test passive_mutex -- --test-threads=1
cargo "+$nightly" miri test -p nt --doc sync
echo "miri: done in $(( $(date +%s) - start )) s"
