#!/usr/bin/env bash
# Runs every libFuzzer target built in BUILD_DIR for SECONDS each, seeded with the checked-in
# corpus; stops at the first crash (libFuzzer leaves the crashing input as crash-*).
set -euo pipefail
build="${1:-build-fuzz}"
seconds="${2:-60}"
here="$(cd "$(dirname "$0")/.." && pwd)"
found=0
for bin in "$build"/tests/fuzz/fuzz_*; do
  [ -x "$bin" ] || continue
  found=1
  name="$(basename "$bin")"
  corpus="$here/tests/fuzz/corpus/$name"
  work="$build/fuzz-corpus/$name"
  mkdir -p "$work"
  echo "== $name for ${seconds}s"
  "$bin" -max_total_time="$seconds" -rss_limit_mb=2048 -print_final_stats=1 "$work" "$corpus" 2>&1 | tail -n 12
done
if [ "$found" = 0 ]; then echo "no fuzz targets in $build/tests/fuzz" >&2; exit 1; fi
