#!/usr/bin/env bash
# `make fuzz`: runs every libFuzzer target (fuzz/libfuzzer/fuzz_targets/*.rs) for
# FUZZ_SECONDS each (default 60), starting from the checked-in seeds in fuzz/corpus/<target>.
#
#   make fuzz                         every target, 60 s each
#   FUZZ_SECONDS=600 make fuzz        longer
#   FUZZ_TARGETS=bundle_decode make fuzz
#
# What the fuzzer finds interesting goes to $PALISADE_CACHE/fuzz/corpus/<target> (kept between
# runs, never into the checkout); a failing input goes to fuzz/libfuzzer/artifacts/<target>/
# and the run fails, printing the command that replays it. Copy a small, interesting input
# into fuzz/corpus/<target>/ to make `make test` replay it forever.
#
# The targets are built by cargo-fuzz (installed at a pinned version if missing) with the
# stable compiler: RUSTC_BOOTSTRAP=1 lets it accept the sanitizer-coverage flags libFuzzer
# needs, so no nightly toolchain is required. No AddressSanitizer: every crate here forbids
# unsafe code, and ASan would halve the executions per second. Overflow checks and debug
# assertions are on.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${FUZZ_SECONDS:-60}
cache=${PALISADE_CACHE:-$HOME/.cache/palisade}/fuzz
cargo=${CARGO:-cargo}
bash scripts/cargo-tool.sh cargo-fuzz 0.13.2
# The fuzz workspace builds the workspace's crates at the versions of the workspace's lock
# file (its own lock is derived from it, not kept in Git).
cp Cargo.lock fuzz/libfuzzer/Cargo.lock

targets=${FUZZ_TARGETS:-$(for f in fuzz/libfuzzer/fuzz_targets/*.rs; do basename "$f" .rs; done)}
failed=()
for t in $targets; do
  mkdir -p "$cache/corpus/$t"
  echo "fuzz: $t for ${seconds}s (corpus $cache/corpus/$t + fuzz/corpus/$t)"
  if ! RUSTC_BOOTSTRAP=1 "$cargo" fuzz run --fuzz-dir fuzz/libfuzzer --sanitizer none \
      --debug-assertions "$t" "$cache/corpus/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -timeout=10 -print_final_stats=1; then
    failed+=("$t")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: FAILED: ${failed[*]} (inputs in fuzz/libfuzzer/artifacts/)" >&2
  exit 1
fi
echo "fuzz: every target ran ${seconds}s without a failure"
