#!/usr/bin/env bash
# A `perf` profile of one bench/compare.sh case, on a build with symbols.
#
#   bash bench/profile.sh health|repeated|fresh|pipelines [N]     (as root: perf needs it)
#
# Builds `--profile profiling` (the release build, symbols kept), starts the stand-ins of
# examples/bench_world.rs and kitebridge as bench/compare.sh does, warms the cache, then records
# 4 s of the server under `wrk -t2 -c32` (DWARF call graphs) to target/bench/CASE.perf.data and
# prints where the time goes (pinned like compare.sh: server on CPU 1, wrk on CPU 0; BENCH_PIN=0
# leaves placement to the scheduler): kernel / kitebridge / libc, the system calls, the top symbols.
# `pipelines N` cycles the first N (default 100000) pipeline tokens. Installs `perf` (Debian's
# linux-perf), `wrk` and `nginx-light` like compare.sh when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

CASE=${1:?usage: bench/profile.sh health|repeated|fresh|pipelines [N]}
N=${2:-100000}
DIR=${BENCH_DIR:-target/bench}
SERVER_CPU=()
CLIENT_CPU=()
if [ "${BENCH_PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  SERVER_CPU=(taskset -c 1)
  CLIENT_CPU=(taskset -c 0)
fi
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
if ! command -v perf >/dev/null || ! command -v wrk >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf wrk >/dev/null
fi
cargo build --profile profiling --locked --bin kitebridge --example bench_world >&2
BIN=target/profiling/kitebridge

. bench/world.sh

start_world profiling 30000 100000

case $CASE in
  health) FILE=; LIMIT=0; CACHE=() ;;
  repeated) FILE=$DIR/repeated.txt; LIMIT=1; CACHE=() ;;
  fresh) FILE=$DIR/fresh.txt; LIMIT=0; CACHE=() ;;
  pipelines) FILE=$DIR/pipelines.txt; LIMIT=$N
    CACHE=(TOKEN_CACHE_MAX_ENTRIES=200000 JWT_CACHE_MAX_ENTRIES=200000) ;;
  *) echo "unknown case $CASE" >&2; exit 2 ;;
esac
start_server "$DIR/profile.stderr" 300 "${CACHE[@]}" "${SERVER_CPU[@]}" "$BIN"
URL=$KB_URL

ARGS=()
TARGET=$URL/healthcheck
if [ -n "$FILE" ]; then
  warm "$URL" "$FILE" "$LIMIT"
  ARGS=(-s bench/tokens.lua)
  TARGET=$URL/token
fi
export TOKENS=${FILE:-none} LIMIT THREADS=2
"${CLIENT_CPU[@]}" wrk -t2 -c32 -d2s "${ARGS[@]}" "$TARGET" >/dev/null # warm-up
DATA=$DIR/$CASE.perf.data
perf record -q -F 2000 --call-graph dwarf,16384 -p "$KB_PID" -o "$DATA" -- sleep 4 &
PERF_PID=$!
"${CLIENT_CPU[@]}" wrk -t2 -c32 -d5s "${ARGS[@]}" "$TARGET" | grep -E 'Requests/sec|Non-2xx' >&2
wait "$PERF_PID" || true

echo "== $CASE: where the server's samples are ($DATA)"
perf report -i "$DATA" --no-children --sort dso --stdio -g none 2>/dev/null | grep '%'
echo "== system calls (inclusive)"
perf report -i "$DATA" --children --sort symbol --stdio -g none --percent-limit 0.5 2>/dev/null |
  grep -E '\] __x64_sys_' | sed 's/  */ /g' | cut -c1-80
echo "== top symbols (self)"
perf report -i "$DATA" --no-children --sort symbol --stdio -g none --percent-limit 1 2>/dev/null |
  grep '%' | sed 's/  */ /g' | cut -c1-120
