#!/usr/bin/env bash
# kitebridge against nginx, and cached vends against /healthcheck, in one run, as ratios.
#
#   bash bench/compare.sh            (as root: installs wrk and nginx from Debian if missing)
#
# What it does, all on 127.0.0.1:
#   1. builds the release binary and the bench helpers (examples/bench_world.rs: the GitHub,
#      Buildkite and key-set stand-ins of the integration tests, plus token files; and
#      examples/bench_misses.rs, examples/bench_profiles.rs);
#   2. starts nginx (one process: `master_process off`) answering /healthcheck with a fixed 200;
#   3. starts kitebridge "A" at default settings (rate limits off; audit records to stdout, the
#      default, which is /dev/null here) and
#      measures with wrk: /healthcheck on both at 32 and 256 connections, then cached vends
#      (POST /token) with one repeated JWT and with fresh JWTs (a list longer than the
#      verified-token cache, cycled, so no presentation is a reuse);
#   4. starts kitebridge "B" with TOKEN_CACHE_MAX_ENTRIES and JWT_CACHE_MAX_ENTRIES of 200 000,
#      warms 100 000 pipelines (one miss each), then measures cached vends over the first 10,
#      1 000, 10 000 and 100 000 of them, counting Buildkite calls during each;
#   5. runs bench_misses (50 different pipelines missing at once) and bench_profiles.
# CPU per request is the server's utime+stime from /proc/PID/stat over the run, divided by the
# requests wrk completed (and, separately, its utime: the part in user space). The machine is shared: compare ratios within one run.
#
# Each case runs BENCH_ROUNDS times, the cases of a server interleaved round by round, and the
# report takes each case's median: the machine's speed drifts during a run, and a case measured
# only at one moment would carry that drift into its ratios. The servers run on CPU 1 and wrk on
# CPU 0 (`taskset`), so neither competes with the other for a core.
#
# Knobs: BENCH_SECS (per case and round, default 5), BENCH_ROUNDS (3), BENCH_PIPELINES (100000),
# BENCH_FRESH (30000), BENCH_DIR (target/bench; token files are reused between runs while
# valid), BENCH_PIN (1; 0 leaves the scheduler to place the processes).
set -euo pipefail
cd "$(dirname "$0")/.."

SECS=${BENCH_SECS:-5}
ROUNDS=${BENCH_ROUNDS:-3}
SERVER_CPU=()
CLIENT_CPU=()
if [ "${BENCH_PIN:-1}" = 1 ] && [ "$(nproc)" -ge 2 ]; then
  SERVER_CPU=(taskset -c 1)
  CLIENT_CPU=(taskset -c 0)
fi
PIPELINES=${BENCH_PIPELINES:-100000}
FRESH=${BENCH_FRESH:-30000}
DIR=${BENCH_DIR:-target/bench}
THREADS=2
mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)

if ! command -v wrk >/dev/null || ! { command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; }; then
  echo "installing wrk and nginx-light from Debian" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx-light >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --locked --bin kitebridge \
  --example bench_world --example bench_misses --example bench_profiles >&2
BIN=target/release/kitebridge

. bench/world.sh

# A port nobody listens on now (nginx cannot report one it chose itself).
free_port() {
  local port
  while :; do
    port=$((20000 + RANDOM % 20000))
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}

# CPU ticks of process $1: "utime+stime utime".
ticks() { awk '{ sub(/.*\) /, ""); print $12 + $13, $12 }' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)

# ---- stand-ins and token files
start_world release "$FRESH" "$PIPELINES"
# The coprocess's descriptors do not reach subshells: these set variables instead of printing.
counts() { echo counts >&"${WORLD[1]}"; read -r COUNTS <&"${WORLD[0]}"; }
buildkite_calls() { counts; BK_CALLS=${COUNTS#buildkite=}; BK_CALLS=${BK_CALLS%% *}; }
RING_NS=$(cat "$DIR/ring_verify_ns")

# ---- nginx
NGX_PORT=$(free_port)
mkdir -p "$DIR/nginx"
cat >"$DIR/nginx/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $DIR/nginx/nginx.pid;
error_log $DIR/nginx/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 100000000;
  client_body_temp_path $DIR/nginx/body;
  proxy_temp_path $DIR/nginx/proxy;
  fastcgi_temp_path $DIR/nginx/fastcgi;
  uwsgi_temp_path $DIR/nginx/uwsgi;
  scgi_temp_path $DIR/nginx/scgi;
  server {
    listen 127.0.0.1:$NGX_PORT;
    location = /healthcheck { default_type text/plain; return 200 "OK\n"; }
  }
}
EOF
"${SERVER_CPU[@]}" "$NGINX" -c "$DIR/nginx/nginx.conf" -p "$DIR/nginx" &
NGX_PID=$!
PIDS+=("$NGX_PID")

# ---- kitebridge: start_kitebridge NAME [VAR=VALUE...] sets KB_PID and KB_URL
start_kitebridge() {
  local name=$1
  shift
  start_server "$DIR/$name.stderr" 300 "$@" "${SERVER_CPU[@]}" "$BIN"
}

# run LABEL PID URL CONNECTIONS [wrk args...]: prints
# "LABEL rps cpu_us_per_request errors user_us_per_request"
run() {
  local label=$1 pid=$2 url=$3 conns=$4
  shift 4
  local before after out requests secs errors user_before user_after
  read -r before user_before < <(ticks "$pid")
  out=$("${CLIENT_CPU[@]}" wrk -t "$THREADS" -c "$conns" -d "${SECS}s" "$@" "$url" 2>&1)
  read -r after user_after < <(ticks "$pid")
  requests=$(echo "$out" | awk '/requests in/ { print $1 }')
  secs=$(echo "$out" | awk '/requests in/ { sub(/s,$/, "", $4); print $4 }')
  errors=$(echo "$out" | awk '/Non-2xx/ { print $NF }')
  errors=${errors:-0}
  awk -v l="$label" -v r="$requests" -v s="$secs" -v t=$((after - before)) -v hz="$HZ" -v e="$errors" \
    -v u=$((user_after - user_before)) \
    'BEGIN { printf "%s %.0f %.2f %d %.2f\n", l, r / s, t / hz * 1e6 / r, e, u / hz * 1e6 / r }'
}

token_run() { # LABEL PID URL CONNECTIONS FILE [LIMIT]
  TOKENS=$5 LIMIT=${6:-0} THREADS=$THREADS run "$1" "$2" "$3/token" "$4" -s bench/tokens.lua
}


RESULTS="$DIR/results.txt"
: >"$RESULTS"
record() { tee -a "$RESULTS"; }

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- A: defaults
start_kitebridge A
A_PID=$KB_PID
A_URL=$KB_URL
warm "$A_URL" "$DIR/repeated.txt" 1
for _ in $(seq 1 "$ROUNDS"); do
  for c in 32 256; do
    run "nginx-health-$c" "$NGX_PID" "http://127.0.0.1:$NGX_PORT/healthcheck" "$c" | record
    run "kb-health-$c" "$A_PID" "$A_URL/healthcheck" "$c" | record
  done
  token_run kb-vend-repeated-32 "$A_PID" "$A_URL" 32 "$DIR/repeated.txt" | record
  token_run kb-vend-fresh-32 "$A_PID" "$A_URL" 32 "$DIR/fresh.txt" | record
done
kill "$A_PID"; wait "$A_PID" 2>/dev/null || true

# ---- B: caches sized for 100 000 pipelines
start_kitebridge B TOKEN_CACHE_MAX_ENTRIES=200000 JWT_CACHE_MAX_ENTRIES=200000
B_PID=$KB_PID
B_URL=$KB_URL
warm_started=$(date +%s)
warm "$B_URL" "$DIR/pipelines.txt" "$PIPELINES"
counts
echo "warmed $PIPELINES pipelines in $(( $(date +%s) - warm_started )) s ($COUNTS)" >&2
for _ in $(seq 1 "$ROUNDS"); do
  for n in 10 1000 10000 100000; do
    [ "$n" -le "$PIPELINES" ] || continue
    buildkite_calls
    calls=$BK_CALLS
    line=$(token_run "kb-vend-pipelines-$n" "$B_PID" "$B_URL" 32 "$DIR/pipelines.txt" "$n")
    buildkite_calls
    echo "$line $((BK_CALLS - calls))" | record
  done
done
kill "$B_PID"; wait "$B_PID" 2>/dev/null || true
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# ---- the report
awk -v ring_ns="$RING_NS" -v load_before="$LOAD_BEFORE" -v load_after="$LOAD_AFTER" \
    -v secs="$SECS" -v threads="$THREADS" -v server_cpu="${SERVER_CPU[2]:-any}" -v client_cpu="${CLIENT_CPU[2]:-any}" '
  # Every round of a case: the medians of req/s and of CPU per request, summed refusals and
  # Buildkite calls.
  function median(list,    v, n, i, j, t) {
    n = split(list, v, " ")
    for (i = 2; i <= n; i++) for (j = i; j > 1 && v[j - 1] + 0 > v[j] + 0; j--) { t = v[j]; v[j] = v[j - 1]; v[j - 1] = t }
    return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
  }
  { rpsl[$1] = rpsl[$1] " " $2; cpul[$1] = cpul[$1] " " $3; err[$1] += $4; usrl[$1] = usrl[$1] " " $5; if (NF >= 6) bk[$1] += $6; rounds[$1]++ }
  END {
    for (k in rpsl) { rps[k] = median(rpsl[k]); cpu[k] = median(cpul[k]); usr[k] = median(usrl[k]) }
    ring = ring_ns / 1000
    printf "bench/compare.sh: wrk -t%d, %ss per case and round, medians of %d rounds; servers on CPU %s, wrk on CPU %s; load average %s before, %s after (2 cores)\n\n", threads, secs, rounds["kb-health-32"], server_cpu, client_cpu, load_before, load_after
    printf "| case | req/s | server CPU µs/request | of which user space | non-2xx |\n|---|---:|---:|---:|---:|\n"
    n = split("nginx-health-32 kb-health-32 nginx-health-256 kb-health-256 kb-vend-repeated-32 kb-vend-fresh-32 kb-vend-pipelines-10 kb-vend-pipelines-1000 kb-vend-pipelines-10000 kb-vend-pipelines-100000", order, " ")
    for (i = 1; i <= n; i++) { k = order[i]; if (k in rps) printf "| %s | %d | %.1f | %.1f | %d |\n", k, rps[k], cpu[k], usr[k], err[k] }
    printf "\nbare ring RS256 verify: %.1f µs\n\n", ring
    printf "| ratio | value | target |\n|---|---:|---|\n"
    printf "| kitebridge / nginx /healthcheck CPU per request, 32 conns | %.2f | |\n", cpu["kb-health-32"] / cpu["nginx-health-32"]
    printf "| kitebridge / nginx /healthcheck CPU per request, 256 conns | %.2f | |\n", cpu["kb-health-256"] / cpu["nginx-health-256"]
    printf "| kitebridge / nginx /healthcheck req/s, 32 conns | %.2f | |\n", rps["kb-health-32"] / rps["nginx-health-32"]
    printf "| kitebridge / nginx /healthcheck req/s, 256 conns | %.2f | |\n", rps["kb-health-256"] / rps["nginx-health-256"]
    printf "| repeated-JWT cached vend / /healthcheck, CPU per request | %.2f | ≤ 1.5 |\n", cpu["kb-vend-repeated-32"] / cpu["kb-health-32"]
    printf "| fresh-JWT cached vend / (/healthcheck + ring verify), CPU per request | %.2f | ≤ 1.25 |\n", cpu["kb-vend-fresh-32"] / (cpu["kb-health-32"] + ring)
    if ("kb-vend-pipelines-100000" in rps)
      printf "| cached vend req/s, 100 000 / 10 pipelines | %.2f | ≥ 0.8 |\n", rps["kb-vend-pipelines-100000"] / rps["kb-vend-pipelines-10"]
    printf "| Buildkite calls while measuring 10 / 1 000 / 10 000 / 100 000 pipelines | %s / %s / %s / %s | 0 |\n", bk["kb-vend-pipelines-10"], bk["kb-vend-pipelines-1000"], bk["kb-vend-pipelines-10000"], bk["kb-vend-pipelines-100000"]
    # A case with refusals measured something else than it says: say so, loudly.
    for (k in err) if (err[k] > 0) printf "\nINVALID: %s had %d non-2xx answers; its numbers and ratios do not measure what they name\n", k, err[k]
  }' "$RESULTS"

echo
target/release/examples/bench_misses 5 | sed 's/^/    /'
echo
target/release/examples/bench_profiles "$BIN" | sed 's/^/    /'
