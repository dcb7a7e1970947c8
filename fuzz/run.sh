#!/usr/bin/env bash
# Coverage-guided fuzzing on the stable toolchain: libFuzzer (libfuzzer-sys) with LLVM's
# SanitizerCoverage passes enabled through stable -C flags (no nightly, no ASan needed for
# these safe-Rust targets; panics abort and libFuzzer records the crashing input).
#
#   fuzz/run.sh                 # every target, 10 s each (what CI runs)
#   fuzz/run.sh timestamp 600   # one target, 10 minutes
set -euo pipefail
cd "$(dirname "$0")"
targets=(timestamp content gate container_json)
if [ $# -ge 1 ]; then targets=("$1"); fi
secs="${2:-10}"
# A fixed seed by default keeps CI reproducible; FUZZ_SEED=0 lets libFuzzer pick one.
seed="${FUZZ_SEED:-1}"
export RUSTFLAGS="-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
 -Cllvm-args=-sanitizer-coverage-trace-compares -Cdebug-assertions -Coverflow-checks"
# An explicit --target keeps RUSTFLAGS off build scripts and proc macros.
triple="$(rustc -vV | sed -n "s/^host: //p")"
cargo build --release --target "$triple" --target-dir ../target/fuzz-cov --bins
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t" "artifacts/$t"
  echo "== fuzz $t for ${secs}s"
  "../target/fuzz-cov/$triple/release/$t" -max_total_time="$secs" -seed="$seed" -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" "corpus/$t" 2>&1 | grep -E "^(Done|stat::number_of_executed_units|==|INFO: A corpus)|panicked|ERROR" || true
  if ls "artifacts/$t/"crash-* >/dev/null 2>&1; then
    echo "fuzz target $t found a crash: see fuzz/artifacts/$t/" >&2
    exit 1
  fi
done
