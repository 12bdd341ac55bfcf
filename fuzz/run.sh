#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) for SECONDS each (default 20), one after another, on
# the stable toolchain: `-s none` builds without a sanitizer, which needs no nightly flags. New
# inputs go to fuzz/corpus/<target>/generated/ (not in git); the checked-in seeds are read too.
# Fails if any target crashes (the input is saved under fuzz/artifacts/<target>/); prints each
# target's executions per second and total executions.
#
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")"

seconds=${1:-20}
shift || true
case $seconds in
  '' | *[!0-9]*) echo "usage: fuzz/run.sh [SECONDS] [TARGET...]" >&2; exit 2 ;;
esac

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

if [ $# -gt 0 ]; then
  targets=("$@")
else
  mapfile -t targets < <(cargo fuzz list)
fi

echo "--- building ${#targets[@]} fuzz targets"
for target in "${targets[@]}"; do
  cargo fuzz build -s none "$target"
done

mkdir -p artifacts/logs
failed=()
summary=()
for target in "${targets[@]}"; do
  echo "--- fuzzing $target for ${seconds}s"
  generated=corpus/$target/generated
  mkdir -p "$generated"
  log=artifacts/logs/$target.log
  if cargo fuzz run -s none "$target" "$generated" "corpus/$target" -- \
      -max_total_time="$seconds" -print_final_stats=1 >"$log" 2>&1; then
    status=ok
  else
    status=FAILED
    failed+=("$target")
    tail -n 40 "$log"
  fi
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
  summary+=("$(printf '%-16s %-6s %12s execs %9s exec/s' "$target" "$status" "${runs:-?}" "${rate:-?}")")
done

echo "--- summary (${seconds}s per target; logs in fuzz/artifacts/logs/)"
printf '%s\n' "${summary[@]}"
if [ ${#failed[@]} -gt 0 ]; then
  echo "crashed: ${failed[*]} (inputs under fuzz/artifacts/<target>/)"
  exit 1
fi
