#!/usr/bin/env bash
# The long fuzz campaign: each target in turn (never two at once, one core), from its saved
# corpus, until EXECS executions or LIMIT seconds, whichever comes first; one line of results
# per target at the end. Needs cargo-afl (docs/fuzzing.md).
#   fuzz/campaign.sh [target...]        default: all five
# Environment: EXECS (10000000), LIMIT (2400 s), OUT (target/afl-out), CARGO_TARGET_DIR
# (target/afl: instrumented builds kept apart from the normal ones).
set -euo pipefail
cd "$(dirname "$0")/.."

EXECS=${EXECS:-10000000}
LIMIT=${LIMIT:-2400}
OUT=${OUT:-target/afl-out}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target/afl}
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(wire otlp_json body config state)

cargo afl build --release -p cujo-fuzz --features afl --bins

export AFL_SKIP_CPUFREQ=1 AFL_NO_UI=1 AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES=1
for t in "${targets[@]}"; do
  rm -rf "$OUT/$t"
  mkdir -p "$OUT"
  # -V stops AFL++ itself a little before the hard bound, so its last stats are written.
  timeout --signal=INT $((LIMIT + 60)) cargo afl fuzz -i "fuzz/corpus/$t" -o "$OUT/$t" \
    -E "$EXECS" -V "$LIMIT" "$CARGO_TARGET_DIR/release/$t" >"$OUT/$t.log" 2>&1 || true
done

stat() { awk -v k="$2" '$1 == k { print $3 }' "$OUT/$1/default/fuzzer_stats"; }
echo "target | executions | exec/s | time (s) | crashes | hangs | bitmap_cvg | edges found"
for t in "${targets[@]}"; do
  echo "$t | $(stat "$t" execs_done) | $(stat "$t" execs_per_sec) | $(stat "$t" run_time) |" \
    "$(stat "$t" saved_crashes) | $(stat "$t" saved_hangs) | $(stat "$t" bitmap_cvg) |" \
    "$(stat "$t" edges_found) of $(stat "$t" total_edges)"
done
