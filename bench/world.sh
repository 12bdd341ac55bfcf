# Sourced by the bench/*.sh scripts (needs DIR): the processes stopped on exit, and the stand-ins
# of examples/bench_world.rs (GitHub, Buildkite and the key set, plus token files in $DIR).

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

# start_world BUILD FRESH PIPELINES: bench_world of target/BUILD (release or profiling) as the
# coprocess WORLD, writing FRESH fresh and PIPELINES pipeline tokens; returns once it is ready.
start_world() {
  rm -f "$DIR/ready" # an earlier run's: the stand-ins' ports are new each run
  coproc WORLD { exec "target/$1/examples/bench_world" "$DIR" "$2" "$3"; }
  PIDS+=("$WORLD_PID")
  for _ in $(seq 1 3000); do [ -e "$DIR/ready" ] && break; sleep 0.2; done
  [ -e "$DIR/ready" ] || { echo "bench_world did not get ready" >&2; exit 1; }
}

# warm URL FILE LIMIT: bench_world presents every token of the first LIMIT of FILE once.
warm() {
  echo "warm ${1#http://} $2 $3" >&"${WORLD[1]}"
  local line
  read -r line <&"${WORLD[0]}"
  echo "$line" >&2
}

# start_server LOG TRIES [VAR=VALUE ...] COMMAND...: COMMAND (kitebridge, or a wrapper running it)
# with the stand-ins' environment, rate limits off and any VAR=VALUE given, stdout to /dev/null
# (the audit records) and stderr to LOG; sets KB_PID and KB_URL once it answers /healthcheck,
# looking every 0.1 s at most TRIES times.
start_server() {
  local log=$1 tries=$2
  shift 2
  env -i PATH="$PATH" $(cat "$DIR/env") SERVER_PORT=0 LOG_LEVEL=info \
    RATE_LIMIT_PER_PIPELINE=off RATE_LIMIT_PER_SOURCE=off RATE_LIMIT_MINTS=off "$@" >/dev/null 2>"$log" &
  KB_PID=$!
  PIDS+=("$KB_PID")
  KB_URL=
  for _ in $(seq 1 "$tries"); do
    KB_URL=$(sed -n 's/.*listening on \(http:\/\/[0-9.:]*\).*/\1/p' "$log" 2>/dev/null | head -1 || true)
    if [ -n "$KB_URL" ] && [ "$(curl -s -o /dev/null -w '%{http_code}' "$KB_URL/healthcheck")" = 200 ]; then
      return
    fi
    sleep 0.1
  done
  echo "kitebridge did not get ready ($log):" >&2
  cat "$log" >&2
  exit 1
}
