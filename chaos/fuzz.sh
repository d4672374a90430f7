#!/usr/bin/env bash
# Runs every fuzz target (actors/, raft-store/, node/) with libFuzzer for a bounded time each
# and prints, per target, the executions, their rate, the coverage reached and any crash.
# Needs the nightly toolchain (`rustup toolchain list`) and cargo-fuzz (installed if missing).
# A crash stops nothing: it is listed, its input stays in CRATE/fuzz/artifacts/TARGET/, and it
# belongs in CRATE/fuzz/regressions/TARGET/ once fixed (the stable replay tests read it there).
# Usage: bash chaos/fuzz.sh [SECONDS_PER_TARGET=60] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-60}
shift || true
want=("$@")
rustup toolchain list | grep -q '^nightly' || { echo "no nightly toolchain: fuzzing needs one" >&2; exit 1; }
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
printf '%-16s %-12s %12s %10s %8s %8s  %s\n' target crate execs 'execs/s' cov ft result
for crate in actors raft-store node; do
  [ -d "$crate/fuzz" ] || continue
  for target in $(cd "$crate" && cargo +nightly fuzz list); do
    if ((${#want[@]})) && ! printf '%s\n' "${want[@]}" | grep -qx "$target"; then continue; fi
    log=$(mktemp)
    mkdir -p "$crate/fuzz/corpus/$target"
    status=ok
    (cd "$crate" && cargo +nightly fuzz run "$target" -- -max_total_time="$secs" \
      -rss_limit_mb=1024 -timeout=5 -print_final_stats=1) >"$log" 2>&1 || status="CRASH (see $crate/fuzz/artifacts/$target)"
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
    ft=$(grep -o 'ft: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
    printf '%-16s %-12s %12s %10s %8s %8s  %s\n' "$target" "$crate" "${execs:--}" "${rate:--}" "${cov:--}" "${ft:--}" "$status"
    [ "$status" = ok ] || tail -30 "$log" >&2
    rm -f "$log"
  done
done
