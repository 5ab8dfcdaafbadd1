#!/usr/bin/env bash
# ThreadSanitizer over the nt and wdf test suites (unit and integration tests).
#
# Needs a nightly toolchain with the rust-src component: -Zsanitizer=thread must be applied to
# std too (-Zbuild-std). Without rust-src the only way to link is
# -Cunsafe-allow-abi-mismatch=sanitizer with an uninstrumented std, and then TSan reports races
# inside std's own synchronization (tried on the build machine: OnceLock initialisation in
# nt::executors::clock::epoch, the test harness's channels), so this script skips instead.
# Without a usable toolchain it prints why it skips and exits 0; it never installs anything.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

skip() {
  echo "tsan: SKIPPED: $*"
  exit 0
}

command -v rustup >/dev/null 2>&1 || skip "rustup is not installed, so no nightly toolchain can be selected"
nightly=$(rustup toolchain list 2>/dev/null | awk '/^nightly/ {print $1; exit}')
[ -n "$nightly" ] || skip "no nightly toolchain (rustup toolchain list | grep nightly found none)"
rustup "+$nightly" component list --installed 2>/dev/null | grep -q '^rust-src' \
  || skip "toolchain $nightly has no rust-src component, needed to build std with ThreadSanitizer (rustup +nightly component add rust-src)"

target=$(rustc "+$nightly" -vV | awk '/^host:/ {print $2}')
export CARGO_TARGET_DIR="${TSAN_TARGET_DIR:-target/tsan}"
export RUSTFLAGS="-Zsanitizer=thread"
export RUSTDOCFLAGS="-Zsanitizer=thread"
export TSAN_OPTIONS="${TSAN_OPTIONS:-halt_on_error=1 second_deadlock_stack=1}"
echo "== tsan ($nightly, $target, target dir $CARGO_TARGET_DIR)"
start=$(date +%s)
# One test at a time per binary: the verifier's counters are process-wide (scripts/test.sh uses
# nextest, one process per test, for the same reason).
cargo "+$nightly" test -Zbuild-std --target "$target" -p nt -p wdf --lib --tests -- --test-threads=1
echo "tsan: done in $(( $(date +%s) - start )) s"
