#!/usr/bin/env bash
# User-space instructions per request, counted by valgrind's callgrind: a measure that does not
# drift with the machine's load, for comparing two builds of the request path.
#
#   bash bench/instructions.sh [BIN ...]     (default: target/release/kitebridge, built here)
#
# For each binary: starts the stand-ins of examples/bench_world.rs and the binary under
# `valgrind --tool=callgrind` (rate limits off, audit records to /dev/null), warms the cache, then
# for /healthcheck, a cached vend with one repeated JWT and cached vends with fresh JWTs: 1 s of
# `wrk -t1 -c2` to warm up, counters zeroed, 2 s of `wrk -t1 -c2`, counters dumped, and prints
# the instructions counted divided by the requests wrk completed. Kernel time is not counted
# (the CPU per request of bench/compare.sh is). Caveat: under valgrind ring sees no SHA
# extensions and hashes in software, so SHA-256 (the verified-token key) counts several times
# what it costs on the real CPU; the same holds for both builds compared. Installs valgrind and
# wrk from Debian when missing. BENCH_ANNOTATE=N also prints each case's N costliest functions
# (self cost, by callgrind_annotate) and keeps the counts in $BENCH_DIR/callgrind.CASE.
set -euo pipefail
cd "$(dirname "$0")/.."

DIR=${BENCH_DIR:-target/bench}
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
if ! command -v valgrind >/dev/null || ! command -v wrk >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind wrk >/dev/null
fi
cargo build --release --locked --bin kitebridge --example bench_world >&2
BINS=("$@")
[ ${#BINS[@]} -gt 0 ] || BINS=(target/release/kitebridge)

. bench/world.sh

start_world release 30000 10

for BIN in "${BINS[@]}"; do
  OUT=$DIR/callgrind.out
  rm -f "$OUT".*
  start_server "$DIR/instructions.stderr" 1200 valgrind --tool=callgrind --callgrind-out-file="$OUT.%p" "$BIN"
  URL=$KB_URL
  warm "$URL" "$DIR/repeated.txt" 1 2>/dev/null
  echo "== $BIN"
  for CASE in health repeated fresh; do
    ARGS=()
    TARGET=$URL/healthcheck
    case $CASE in
      repeated) export TOKENS=$DIR/repeated.txt LIMIT=1; ARGS=(-s bench/tokens.lua); TARGET=$URL/token ;;
      fresh) export TOKENS=$DIR/fresh.txt LIMIT=0; ARGS=(-s bench/tokens.lua); TARGET=$URL/token ;;
    esac
    export THREADS=1
    wrk -t1 -c2 -d1s "${ARGS[@]}" "$TARGET" >/dev/null
    callgrind_control -z "$KB_PID" >/dev/null 2>&1
    OUTPUT=$(wrk -t1 -c2 -d2s "${ARGS[@]}" "$TARGET")
    callgrind_control -d "$KB_PID" >/dev/null 2>&1
    sleep 0.5
    REQUESTS=$(echo "$OUTPUT" | awk '/requests in/ { print $1 }')
    if echo "$OUTPUT" | grep -q Non-2xx; then
      echo "$CASE: INVALID (non-2xx answers)"
    fi
    DUMP=$(ls -t "$OUT.$KB_PID".* | head -1)
    awk -v c="$CASE" -v n="$REQUESTS" '/^(summary|totals):/ { printf "%-9s %8.0f instructions per request (%d requests)\n", c, $2 / n, n; exit }' "$DUMP"
    if [ "${BENCH_ANNOTATE:-0}" -gt 0 ]; then
      cp "$DUMP" "$DIR/callgrind.$CASE" # for callgrind_annotate --inclusive=yes, or by line
      callgrind_annotate --threshold=100 "$DUMP" 2>/dev/null | grep -E "^ *[0-9,]+ " | awk -v m="$BENCH_ANNOTATE" "NR <= m" |
        sed -E 's#/rustc/[0-9a-f]+/library/##; s#/[^ ]*/registry/src/[^/]+/##; s# \[[^]]*\]$##' |
        awk -v n="$REQUESTS" '{ c = $1; gsub(",", "", c); $1 = ""; printf "  %8.0f %s\n", c / n, $0 }'
    fi
    rm -f "$OUT.$KB_PID".*
  done
  kill "$KB_PID"
  wait "$KB_PID" 2>/dev/null || true
done
