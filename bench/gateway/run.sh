#!/usr/bin/env bash
# Reverse-gateway benchmark: requests/s and p50/p99 latency on loopback, HTTP/1.1 keep-alive,
# 32 connections, for three targets
#   direct     wrk → upstream
#   sequester  wrk → `sequester serve` (release build) → upstream: token swapped for the value,
#              a durable intent receipt before forwarding and a completion receipt after, per
#              request (SQLite, group commit), response scrubbed for the value
#   nginx      wrk → nginx (proxy_set_header Authorization "Bearer VALUE", upstream keepalive 64)
#              → upstream: a header rewrite only, no token check, no audit, no scrubbing
#   hyper      wrk → the `hyper_floor` example (crates/proxy/examples/hyper_floor.rs): the same
#              header rewrite built from Sequester's own parts (tokio, hyper-util's server and
#              pooled client, mimalloc) and nothing else, so the table separates what those
#              libraries cost from what Sequester's work (token, policy, receipts, scrubbing)
#              adds
# and two workloads: `json`, a ~100-byte JSON response, and `sse`, 20 events of ~100 bytes
# (text/event-stream, sent without delay). Then, for each target, `json` at a fixed rate (RATE
# requests/s in all over the same 32 connections, oha -q with --latency-correction, so a late
# response does not hold back the requests behind it): latency below saturation, where the
# keep-alive figures measure mostly the queue in front of a busy proxy.
#
# The upstream is a second nginx serving two static files. It answers 401 unless the request
# carries the real value, so a proxy that fails to swap shows up as errors, not as speed.
# Besides wrk's figures the script reads, from /proc, the CPU time the proxy process(es)
# spent per request (on a small shared machine the steadier number) and how much CPU went to
# processes other than wrk, the upstream and the proxy measured: a measurement where that
# exceeds 10% is marked "disturbed".
#
# Usage: bench/gateway/run.sh   (from anywhere; runs `cargo build --release -p sequester` and
# `cargo build --release -p sequester-proxy --example hyper_floor` first)
# Takes about 4 minutes with the defaults. Environment knobs:
#   DURATION=10   seconds per measurement        WARMUP=2   seconds of discarded warm-up before each
#   ROUNDS=3      rounds of all six measurements, interleaved; each cell is the median over rounds
#   CONNS=32      connections                    THREADS=2  wrk threads
#   RATE=2000     requests/s of the fixed-rate measurements (oha; well below every target's capacity)
#   PROXY_WORKERS=2     nginx proxy worker_processes (Sequester runs 2 tokio worker threads)
#   UPSTREAM_WORKERS=2  upstream nginx worker_processes
#   WAIT_QUIET=0  wait up to this many seconds for other processes to leave the CPUs idle
#   SEQUESTER_BIN=PATH  measure another build (implies SKIP_BUILD=1)     SKIP_BUILD=1
#   FLOOR_BIN=PATH      the hyper_floor example [target/release/examples/hyper_floor]
#   AUDIT_SYNC=normal  run Sequester with `[audit] sync = "normal"` (no fsync per receipt commit)
#   PERF_OUT=FILE perf record -g of Sequester during its JSON measurement in the last round
#   KEEP_TMP=1    keep the temporary directory (configs, logs, Sequester's data dir)
# Everything listens on 127.0.0.1; every process started here is stopped by its PID on exit.
set -euo pipefail

DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
RATE=${RATE:-2000}
THREADS=${THREADS:-2}
PROXY_WORKERS=${PROXY_WORKERS:-2}
UPSTREAM_WORKERS=${UPSTREAM_WORKERS:-2}
WAIT_QUIET=${WAIT_QUIET:-0}
PERF_OUT=${PERF_OUT:-}
AUDIT_SYNC=${AUDIT_SYNC:-}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
LUA="$HERE/report.lua"
BIN=${SEQUESTER_BIN:-"$ROOT/target/release/sequester"}
FLOOR_BIN=${FLOOR_BIN:-"$ROOT/target/release/examples/hyper_floor"}
[[ -z ${SEQUESTER_BIN:-} ]] || SKIP_BUILD=1
# shellcheck source=../lib.sh
source "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- tools
need nginx "install it with: apt-get install -y nginx-light"
need wrk "install it with: apt-get install -y wrk"
need oha "install it with: cargo install oha --locked"
need jq "install it with: apt-get install -y jq"
need curl "install it with: apt-get install -y curl"
need awk "install it with: apt-get install -y gawk"
need pgrep "install it with: apt-get install -y procps"
need getconf "install libc-bin"
need timeout "install coreutils"
[[ -n ${SKIP_BUILD:-} ]] || need cargo "install a Rust toolchain (rustup), or set SKIP_BUILD=1 with a built target/release/sequester"
if [[ -n $PERF_OUT ]]; then need perf "install it with: apt-get install -y linux-perf, or unset PERF_OUT"; fi
[[ -f $LUA ]] || { echo "run.sh: $LUA is missing" >&2; missing=1; }
((missing == 0)) || exit 1

build_sequester
build_floor hyper_floor "$FLOOR_BIN"

bench_workdir gateway

# ---------------------------------------------------------------- machine
print_machine "$(nginx -v 2>&1 | sed 's/^nginx version: //'), $(wrk -v 2>&1 | awk 'NR==1 {print $1, $2}')" \
  "wrk -t$THREADS -c$CONNS -d${DURATION}s after ${WARMUP}s warm-up, keep-alive, loopback, $ROUNDS round(s)"
wait_quiet

# ---------------------------------------------------------------- upstream content and nginx
REAL="sk-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" # the "real" secret value
mkdir -p "$WORK/www" "$WORK/up" "$WORK/px"
printf '{"id":"cmpl-bench-0001","object":"chat.completion","model":"bench","choices":[{"text":"hello!"}]}' >"$WORK/www/json"
for i in $(seq -w 1 20); do
  printf 'data: {"id":"cmpl-bench","i":%s,"choices":[{"delta":{"content":"token %s of the stream ....."}}]}\n\n' "$i" "$i"
done >"$WORK/www/sse"
chmod 644 "$WORK/www/"*
echo "bodies:  json $(wc -c <"$WORK/www/json") bytes; sse 20 events, $(wc -c <"$WORK/www/sse") bytes"

UP_PORT=$(pick_port)
NG_PORT=$(pick_port)
while [[ $NG_PORT == "$UP_PORT" ]]; do NG_PORT=$(pick_port); done

cat >"$WORK/up/nginx.conf" <<EOF
worker_processes $UPSTREAM_WORKERS;
daemon off;
pid $WORK/up/nginx.pid;
error_log $WORK/up/error.log warn;
events { worker_connections 4096; }
http {
$(nginx_common_http "$WORK/up")
    sendfile on;
    etag off;
    server {
        listen 127.0.0.1:$UP_PORT;
        root $WORK/www;
        # Only the real value is accepted: a proxy that fails to swap gets 401s.
        if (\$http_authorization != "Bearer $REAL") { return 401; }
        location = /json { types { } default_type application/json; }
        location = /sse  { types { } default_type text/event-stream; add_header Cache-Control no-cache; }
    }
}
EOF

cat >"$WORK/px/nginx.conf" <<EOF
worker_processes $PROXY_WORKERS;
daemon off;
pid $WORK/px/nginx.pid;
error_log $WORK/px/error.log warn;
events { worker_connections 4096; }
http {
$(nginx_common_http "$WORK/px")
    upstream backend {
        server 127.0.0.1:$UP_PORT;
        keepalive 64;
        keepalive_requests 10000000;
    }
    server {
        listen 127.0.0.1:$NG_PORT;
        location /up/ {
            proxy_pass http://backend/;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Authorization "Bearer $REAL";
            # Stream like Sequester does (and as SSE needs) instead of buffering responses.
            proxy_buffering off;
        }
    }
}
EOF

nginx -p "$WORK/up" -e "$WORK/up/error.log" -c "$WORK/up/nginx.conf" &
UP_PID=$!
PIDS+=("$UP_PID")
nginx -p "$WORK/px" -e "$WORK/px/error.log" -c "$WORK/px/nginx.conf" &
NG_PID=$!
PIDS+=("$NG_PID")

# ---------------------------------------------------------------- sequester
export SEQUESTER_DATA_DIR="$WORK/data"
export SEQUESTER_LOG=warn
"$BIN" init >/dev/null
"$BIN" service add up --base-url "http://127.0.0.1:$UP_PORT" >/dev/null
printf %s "$REAL" | "$BIN" secret add S --host 127.0.0.1 >/dev/null
"$BIN" agent add bot >/dev/null
TOKEN=$("$BIN" token issue --agent bot --secret S 2>"$WORK/token.err") || { cat "$WORK/token.err" >&2; exit 1; }
[[ $TOKEN == sqt_* ]] || { echo "run.sh: token issue did not print a token" >&2; exit 1; }
: >"$WORK/sequester.out"
SQ_CFG=()
if [[ -n $AUDIT_SYNC ]]; then
  printf '[audit]\nsync = "%s"\n' "$AUDIT_SYNC" >"$WORK/sequester.toml"
  SQ_CFG=(--config "$WORK/sequester.toml")
fi
"$BIN" --json serve "${SQ_CFG[@]}" --listen 127.0.0.1:0 >>"$WORK/sequester.out" 2>"$WORK/sequester.err" &
SQ_PID=$!
PIDS+=("$SQ_PID")
sq_listen() { sed -n 's/.*"event":"ready".*"listen":"\([^"]*\)".*/\1/p' "$WORK/sequester.out" | head -1; }
SQ_ADDR=$(wait_printed "$SQ_PID" "$WORK/sequester.err" sequester sq_listen) || exit 1

# ---------------------------------------------------------------- the hyper floor
: >"$WORK/floor.out"
BENCH_VALUE="Bearer $REAL" "$FLOOR_BIN" 127.0.0.1:0 "http://127.0.0.1:$UP_PORT" >>"$WORK/floor.out" 2>"$WORK/floor.err" &
FL_PID=$!
PIDS+=("$FL_PID")
floor_listen() { sed -n 's/^listening on //p' "$WORK/floor.out" | head -1; }
FL_ADDR=$(wait_printed "$FL_PID" "$WORK/floor.err" hyper_floor floor_listen) || exit 1

# ---------------------------------------------------------------- targets and a correctness check
declare -A URL AUTH CPU_PIDS
URL[direct]="http://127.0.0.1:$UP_PORT"
URL[sequester]="http://$SQ_ADDR/up"
URL[nginx]="http://127.0.0.1:$NG_PORT/up"
URL[hyper]="http://$FL_ADDR/up"
AUTH[direct]="Bearer $REAL"     # the agent would hold the real key
AUTH[sequester]="Bearer $TOKEN" # the agent holds only the token
AUTH[nginx]="Bearer $TOKEN"     # nginx overwrites whatever the agent sent
AUTH[hyper]="Bearer $TOKEN"     # so does the floor
TARGETS=(direct sequester nginx hyper)
WORKLOADS=(json sse)

wait_http "${URL[direct]}/json" -H "Authorization: ${AUTH[direct]}"
wait_http "${URL[nginx]}/json" -H "Authorization: ${AUTH[nginx]}"
wait_http "${URL[hyper]}/json" -H "Authorization: ${AUTH[hyper]}"
for t in "${TARGETS[@]}"; do
  for w in "${WORKLOADS[@]}"; do
    got="$WORK/check.$t.$w"
    ctype=$(curl -fsS -o "$got" -w '%{content_type}' -H "Authorization: ${AUTH[$t]}" "${URL[$t]}/$w") || {
      echo "run.sh: $t /$w failed; KEEP_TMP=1 keeps the logs" >&2; exit 1; }
    cmp -s "$got" "$WORK/www/$w" || { echo "run.sh: $t /$w returned a different body" >&2; exit 1; }
    case $w in json) want=application/json ;; sse) want=text/event-stream ;; esac
    [[ $ctype == "$want"* ]] || { echo "run.sh: $t /$w content-type $ctype, want $want" >&2; exit 1; }
  done
done
echo "check:   all four return the upstream's bodies; the upstream refuses anything but the real value"

# Whose CPU time is charged to each target: the proxy in front of the upstream.
CPU_PIDS[direct]=""
CPU_PIDS[sequester]="$SQ_PID"
CPU_PIDS[nginx]="$NG_PID $(pgrep -P "$NG_PID" | tr '\n' ' ')"
CPU_PIDS[hyper]="$FL_PID"
UP_ALL="$UP_PID $(pgrep -P "$UP_PID" | tr '\n' ' ')"

# ---------------------------------------------------------------- measure
# RES[target.workload.round] =
#   "rps p50_ms p99_ms errors proxy_us_per_req proxy_cores upstream_cores busy% not_ours%"
# not_ours: CPU time of processes other than wrk, the upstream and the proxy measured.
declare -A RES
DISTURBED=0
measure() { # target workload round
  local t=$1 w=$2 r=$3 out line perf_pid="" p0 p1 u0 u1 c0 c1 b0 t0 b1 t1
  BENCH_AUTH="${AUTH[$t]}" timeout $((WARMUP + 30)) \
    wrk -t"$THREADS" -c"$CONNS" -d"${WARMUP}s" --timeout 5s -s "$LUA" "${URL[$t]}/$w" >/dev/null
  if [[ -n $PERF_OUT && $t == sequester && $w == json && $r == "$ROUNDS" ]]; then
    perf record -q -g -F 999 -o "$PERF_OUT" -p "$SQ_PID" -- sleep "$DURATION" >/dev/null 2>&1 &
    perf_pid=$!
    PIDS+=("$perf_pid")
  fi
  # shellcheck disable=SC2086 # PID lists
  p0=$(cpu_ticks ${CPU_PIDS[$t]}) u0=$(cpu_ticks $UP_ALL) c0=$(children_ticks)
  read -r b0 t0 < <(machine_ticks)
  out=$(BENCH_AUTH="${AUTH[$t]}" timeout $((DURATION + 30)) \
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 5s --latency -s "$LUA" "${URL[$t]}/$w")
  # shellcheck disable=SC2086
  p1=$(cpu_ticks ${CPU_PIDS[$t]}) u1=$(cpu_ticks $UP_ALL) c1=$(children_ticks)
  read -r b1 t1 < <(machine_ticks)
  if [[ -n $perf_pid ]]; then wait "$perf_pid" 2>/dev/null || true; fi
  line=$(grep '^RESULT ' <<<"$out") || { echo "$out" >&2; echo "run.sh: no RESULT from wrk" >&2; exit 1; }
  RES[$t.$w.$r]=$(awk -v pt=$((p1 - p0)) -v ut=$((u1 - u0)) -v bt=$((b1 - b0)) -v tt=$((t1 - t0)) -v ct=$((c1 - c0)) -v hz="$CLK_TCK" -v proxied="${CPU_PIDS[$t]}" '{
      for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
      secs = v["duration_us"] / 1e6
      err = v["connect_err"] + v["read_err"] + v["write_err"] + v["status_err"] + v["timeout_err"]
      us = (proxied == "" || v["requests"] == 0) ? 0 : pt / hz * 1e6 / v["requests"]
      printf "%.0f %.3f %.3f %d %.1f %.2f %.2f %.0f %.0f", v["requests"] / secs, v["p50_us"] / 1000, v["p99_us"] / 1000, err,
        us, pt / hz / secs, ut / hz / secs, (tt > 0 ? 100 * bt / tt : 0),
        (tt > 0 ? 100 * (bt - pt - ut - ct) / tt : 0)
    }' <<<"$line")
  read -r rps p50 p99 err us pc uc busy others <<<"${RES[$t.$w.$r]}"
  printf '  round %d  %-5s %-9s %6s req/s  p50 %6s ms  p99 %7s ms  errors %s  proxy %5s µs/req %s cores  upstream %s cores  CPUs %s%% busy, %s%% not ours%s\n' \
    "$r" "$w" "$t" "$rps" "$p50" "$p99" "$err" "$us" "$pc" "$uc" "$busy" "$others" "$( ((others > 10)) && echo '  <- disturbed')"
  if ((others > 10)); then DISTURBED=$((DISTURBED + 1)); fi
  sleep 1
}

# RATE_RES[target.round] = "p50_ms p99_ms errors" at RATE requests/s (json).
declare -A RATE_RES
measure_rate() { # target round
  local t=$1 r=$2 out line a
  a=(--no-tui --output-format json -w -c "$CONNS" -q "$RATE" --latency-correction -H "Authorization: ${AUTH[$t]}")
  timeout $((WARMUP + 30)) oha "${a[@]}" -z "${WARMUP}s" "${URL[$t]}/json" >/dev/null 2>&1 || true
  out=$(timeout $((DURATION + 60)) oha "${a[@]}" -z "${DURATION}s" "${URL[$t]}/json" 2>"$WORK/oha.err") || {
    cat "$WORK/oha.err" >&2; echo "run.sh: oha failed ($t, fixed rate)" >&2; exit 1; }
  line=$(jq -r '[(.latencyPercentiles.p50 // 0) * 1000, (.latencyPercentiles.p99 // 0) * 1000,
                 ((.statusCodeDistribution // {} | to_entries | map(select(.key != "200") | .value) | add // 0)
                  + (.errorDistribution // {} | to_entries | map(.value) | add // 0))] | @tsv' <<<"$out")
  RATE_RES[$t.$r]=$(awk '{printf "%.3f %.3f %d", $1, $2, $3}' <<<"$line")
  read -r p50 p99 err <<<"${RATE_RES[$t.$r]}"
  printf '  round %d  json at %d req/s  %-9s p50 %6s ms  p99 %7s ms  errors %s\n' "$r" "$RATE" "$t" "$p50" "$p99" "$err"
  sleep 1
}

echo "== measurements"
for ((r = 1; r <= ROUNDS; r++)); do
  for w in "${WORKLOADS[@]}"; do
    for t in "${TARGETS[@]}"; do measure "$t" "$w" "$r"; done
  done
done
echo "== at a fixed rate: oha -c$CONNS -q $RATE --latency-correction -z${DURATION}s"
for ((r = 1; r <= ROUNDS; r++)); do
  for t in "${TARGETS[@]}"; do measure_rate "$t" "$r"; done
done

audit_summary "http://$SQ_ADDR/metrics"

# ---------------------------------------------------------------- summarise
median_of() { # target workload field (1-based, as in RES)
  local r vals=()
  for ((r = 1; r <= ROUNDS; r++)); do vals+=("$(awk -v f="$3" '{print $f}' <<<"${RES[$1.$2.$r]}")"); done
  printf '%s\n' "${vals[@]}" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
declare -A M # M[target.workload] = "rps p50 p99 errors us_per_req" (medians per field)
for w in "${WORKLOADS[@]}"; do
  for t in "${TARGETS[@]}"; do
    M[$t.$w]="$(median_of "$t" "$w" 1) $(median_of "$t" "$w" 2) $(median_of "$t" "$w" 3) $(median_of "$t" "$w" 4) $(median_of "$t" "$w" 5)"
  done
done

echo
echo "== ratios to direct (median of $ROUNDS round(s))"
for w in "${WORKLOADS[@]}"; do
  read -r d_rps d_p50 d_p99 _ <<<"${M[direct.$w]}"
  for t in sequester nginx hyper; do
    read -r rps p50 p99 _ <<<"${M[$t.$w]}"
    awk -v w="$w" -v t="$t" -v rps="$rps" -v d="$d_rps" -v p50="$p50" -v d50="$d_p50" -v p99="$p99" -v d99="$d_p99" \
      'BEGIN {printf "  %-5s %-10s throughput x%.2f of direct, p50 %+.3f ms, p99 %+.3f ms\n", w, t, rps / d, p50 - d50, p99 - d99}'
  done
done

echo
echo "== table (wrk -t$THREADS -c$CONNS -d${DURATION}s, keep-alive, loopback, $(nproc) cores shared by all processes; median of $ROUNDS)"
printf '| %-8s | %-9s | %7s | %7s | %7s | %8s | %8s | %8s | %12s | %6s |\n' \
  workload target "req/s" "p50 ms" "p99 ms" "x direct" "+p50 ms" "+p99 ms" "proxy µs/req" errors
echo "|----------|-----------|--------:|--------:|--------:|---------:|---------:|---------:|-------------:|-------:|"
for w in "${WORKLOADS[@]}"; do
  read -r d_rps d_p50 d_p99 _ <<<"${M[direct.$w]}"
  for t in "${TARGETS[@]}"; do
    read -r rps p50 p99 err us <<<"${M[$t.$w]}"
    awk -v w="$w" -v t="$t" -v rps="$rps" -v d="$d_rps" -v p50="$p50" -v d50="$d_p50" -v p99="$p99" -v d99="$d_p99" -v err="$err" -v us="$us" \
      'BEGIN {
         if (t == "direct") printf "| %-8s | %-9s | %7.0f | %7.3f | %7.3f | %8s | %8s | %8s | %12s | %6d |\n", w, t, rps, p50, p99, "1.00", "-", "-", "-", err
         else printf "| %-8s | %-9s | %7.0f | %7.3f | %7.3f | %8.2f | %8.3f | %8.3f | %12.1f | %6d |\n", w, t, rps, p50, p99, rps / d, p50 - d50, p99 - d99, us, err
       }'
  done
done

echo
echo "== targets: Sequester's throughput >= nginx's; Sequester's added p99 < 1 ms"
for w in "${WORKLOADS[@]}"; do
  read -r s_rps _ s_p99 _ <<<"${M[sequester.$w]}"
  read -r n_rps _ _ _ <<<"${M[nginx.$w]}"
  read -r _ _ d_p99 _ <<<"${M[direct.$w]}"
  awk -v w="$w" -v s="$s_rps" -v n="$n_rps" -v sp="$s_p99" -v dp="$d_p99" 'BEGIN {
    printf "  %-5s throughput sequester/nginx = %.2f  %s;  added p99 = %.3f ms  %s\n", w, s / n,
      (s >= n ? "MET" : "MISSED"), sp - dp, (sp - dp < 1 ? "MET" : "MISSED") }'
done
echo
echo "== at $RATE req/s (below saturation; median of $ROUNDS): p50 / p99 ms, added to direct's"
rate_median() { # target field
  local r
  for ((r = 1; r <= ROUNDS; r++)); do awk -v f="$2" '{print $f}' <<<"${RATE_RES[$1.$r]}"; done |
    sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
rd50=$(rate_median direct 1) rd99=$(rate_median direct 2)
for t in "${TARGETS[@]}"; do
  awk -v t="$t" -v p50="$(rate_median "$t" 1)" -v p99="$(rate_median "$t" 2)" -v err="$(rate_median "$t" 3)" -v d50="$rd50" -v d99="$rd99" 'BEGIN {
    if (t == "direct") printf "  %-9s p50 %.3f  p99 %.3f  errors %d\n", t, p50, p99, err
    else printf "  %-9s p50 %.3f (%+.3f)  p99 %.3f (%+.3f)  errors %d%s\n", t, p50, p50 - d50, p99, p99 - d99, err,
      (t == "sequester" ? sprintf("  added p99 < 1 ms: %s", (p99 - d99 < 1 ? "MET" : "MISSED")) : "") }'
done
echo "== for reference: the hyper floor (the same libraries, no token, policy, receipts or scrubbing)"
for w in "${WORKLOADS[@]}"; do
  read -r s_rps _ _ _ s_us <<<"${M[sequester.$w]}"
  read -r n_rps _ _ _ n_us <<<"${M[nginx.$w]}"
  read -r h_rps _ _ _ h_us <<<"${M[hyper.$w]}"
  awk -v w="$w" -v s="$s_rps" -v n="$n_rps" -v h="$h_rps" -v su="$s_us" -v nu="$n_us" -v hu="$h_us" 'BEGIN {
    printf "  %-5s hyper floor/nginx = %.2f (%.1f vs %.1f µs/req);  sequester/hyper floor = %.2f (+%.1f µs/req)\n",
      w, h / n, hu, nu, s / h, su - hu }'
done

echo "after:   CPUs $(busy_percent 2)% busy with our servers idle"
if ((DISTURBED > 0)); then
  echo "WARNING: in $DISTURBED measurement(s) other processes took over 10% of the CPUs; compare with care"
fi
echo "receipts: $("$BIN" receipts verify 2>&1 | tail -1 || true)"
if [[ -n $PERF_OUT ]]; then echo "perf:    Sequester during its JSON measurement (last round): $PERF_OUT"; fi
exit 0
