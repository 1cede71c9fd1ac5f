#!/usr/bin/env bash
# Forward-proxy (TLS interception) benchmark: requests/s and p50/p99 latency on loopback for
#   direct      oha → HTTPS upstream, sending the real value
#   seq-full    oha → CONNECT through `sequester serve --proxy-listen` (release build, default
#               audit: intent receipt fsync'd before forwarding) → HTTPS upstream. The agent key
#               authenticates the CONNECT; inside the tunnel Sequester terminates TLS with a leaf
#               minted by its interception CA, swaps the token for the value, re-encrypts toward
#               the upstream, writes an intent and a completion receipt and scrubs the response
#   seq-normal  the same with a config file `[audit] sync = "normal"` (no fsync per commit)
#   mitmproxy   oha → CONNECT through mitmdump with bench/proxy/swap_addon.py (replaces
#               "Bearer TOKEN" by "Bearer VALUE"; proxyauth set, like Sequester's agent key)
#               → HTTPS upstream: a header rewrite only, no audit, no scrubbing
#   floor       oha → CONNECT through the `mitm_floor` example (crates/proxy/examples/
#               mitm_floor.rs): the same interception built from Sequester's own parts (tokio,
#               hyper, rustls, its interception CA code, the pooled hyper-rustls client,
#               mimalloc) and nothing else: no proxy authentication, egress policy, token
#               lookup, receipts, scrubbing or metrics. What the stack costs, for reference
# with HTTP/1.1 keep-alive (`ka`: 32 connections, each one CONNECT + TLS handshake, then many
# requests), and new connections (`new`: oha --disable-keepalive, so every request is a new
# CONNECT, a TLS handshake with the proxy and, for every proxy, a new upstream connection or a
# pooled one as the proxy chooses) for the proxies, and at a fixed rate (`rate`: keep-alive,
# RATE requests/s in all, oha -q with --latency-correction, so a late response does not hold
# back the requests behind it) for direct, Sequester (seq-full) and the floor: latency below
# saturation, where the keep-alive figures measure mostly the queue in front of a busy proxy.
#
# The upstream is nginx with TLS (a throwaway CA and a leaf for localhost, made here with
# openssl) serving a ~100-byte JSON file. It answers 401 unless the request carries the real
# value, so a proxy that fails to swap shows up as errors, not as speed. Besides oha's figures
# the script reads, from /proc, the CPU time the proxy spent per request and how much CPU went
# to processes other than oha, the upstream and the proxy measured: a measurement where that
# exceeds 10% is marked "disturbed".
#
# Usage: bench/proxy/run.sh   (from anywhere; runs `cargo build --release -p sequester` and
# `cargo build --release -p sequester-proxy --example mitm_floor` first)
# Takes about 5 minutes with the defaults (plus, on the first run, a `pip install mitmproxy` into
# bench/proxy/.venv, which is gitignored: mitmproxy pins an h11 that breaks the main env).
# Environment knobs:
#   DURATION=8    seconds per measurement        WARMUP=2   seconds of discarded warm-up before each
#   ROUNDS=3      rounds of all measurements, interleaved; each cell is the median over rounds
#   CONNS=32      connections (oha -c)
#   RATE=2000     requests/s of the fixed-rate measurements (well below every proxy's capacity
#                 but mitmproxy's, which is left out of them)
#   UPSTREAM_WORKERS=2  upstream nginx worker_processes
#   WAIT_QUIET=0  wait up to this many seconds for other processes to leave the CPUs idle
#   MITM_VENV=DIR virtualenv holding mitmdump [bench/proxy/.venv; created if missing]
#   SEQUESTER_BIN=PATH  measure another build (implies SKIP_BUILD=1)     SKIP_BUILD=1
#   FLOOR_BIN=PATH      the mitm_floor example [target/release/examples/mitm_floor]
#   PERF_OUT=FILE perf record -g of Sequester (seq-full, keep-alive) in the last round
#   KEEP_TMP=1    keep the temporary directory (certificates, configs, logs, data dirs)
# Everything listens on 127.0.0.1; every process started here is stopped by its PID on exit.
set -euo pipefail

DURATION=${DURATION:-8}
WARMUP=${WARMUP:-2}
ROUNDS=${ROUNDS:-3}
CONNS=${CONNS:-32}
RATE=${RATE:-2000}
UPSTREAM_WORKERS=${UPSTREAM_WORKERS:-2}
WAIT_QUIET=${WAIT_QUIET:-0}
PERF_OUT=${PERF_OUT:-}

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
ADDON="$HERE/swap_addon.py"
MITM_VENV=${MITM_VENV:-"$HERE/.venv"}
BIN=${SEQUESTER_BIN:-"$ROOT/target/release/sequester"}
FLOOR_BIN=${FLOOR_BIN:-"$ROOT/target/release/examples/mitm_floor"}
[[ -z ${SEQUESTER_BIN:-} ]] || SKIP_BUILD=1
# shellcheck source=../lib.sh
source "$ROOT/bench/lib.sh"

# ---------------------------------------------------------------- tools
need nginx "install it with: apt-get install -y nginx-light"
need oha "install it with: cargo install oha --locked"
need openssl "install it with: apt-get install -y openssl"
need curl "install it with: apt-get install -y curl"
need jq "install it with: apt-get install -y jq"
need awk "install it with: apt-get install -y gawk"
need base64 "install coreutils"
need getconf "install libc-bin"
need timeout "install coreutils"
[[ -x $MITM_VENV/bin/mitmdump ]] || need python3 "needed to create the mitmproxy virtualenv $MITM_VENV"
[[ -n ${SKIP_BUILD:-} ]] || need cargo "install a Rust toolchain (rustup), or set SKIP_BUILD=1 with a built target/release/sequester"
if [[ -n $PERF_OUT ]]; then need perf "install it with: apt-get install -y linux-perf, or unset PERF_OUT"; fi
[[ -f $ADDON ]] || { echo "run.sh: $ADDON is missing" >&2; missing=1; }
((missing == 0)) || exit 1
if ! oha --help 2>/dev/null | grep -q -- '--proxy-header'; then
  echo "run.sh: this oha has no --proxy-header (needed for the proxy's 407 auth); cargo install oha --locked" >&2
  exit 1
fi

if [[ ! -x $MITM_VENV/bin/mitmdump ]]; then
  echo "creating $MITM_VENV: python3 -m venv, pip install mitmproxy"
  python3 -m venv "$MITM_VENV"
  "$MITM_VENV/bin/pip" install -q mitmproxy
fi
MITMDUMP="$MITM_VENV/bin/mitmdump"

build_sequester
build_floor mitm_floor "$FLOOR_BIN"

bench_workdir proxy

# ---------------------------------------------------------------- machine
print_machine "$(nginx -v 2>&1 | sed 's/^nginx version: //'), $(oha --version 2>&1 | head -1), mitmproxy $("$MITMDUMP" --version 2>/dev/null | awk '/^Mitmproxy:/ {print $2}'), $(openssl version | awk '{print $1, $2}')" \
  "oha -c$CONNS -z${DURATION}s after ${WARMUP}s warm-up, HTTP/1.1, loopback, $ROUNDS round(s)"
wait_quiet

# ---------------------------------------------------------------- certificates, content, upstream
REAL="sk-bench-$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" # the "real" secret value
mkdir -p "$WORK/www" "$WORK/up" "$WORK/pki" "$WORK/mitm"
printf '{"id":"cmpl-bench-0001","object":"chat.completion","model":"bench","choices":[{"text":"hello!"}]}' >"$WORK/www/json"
chmod 644 "$WORK/www/"*
echo "body:    json $(wc -c <"$WORK/www/json") bytes"

# A throwaway CA and a leaf for localhost / 127.0.0.1, both P-256.
(
  cd "$WORK/pki"
  openssl req -x509 -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
    -keyout ca.key -out ca.pem -subj "/CN=sequester bench upstream CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout leaf.key -out leaf.csr -subj "/CN=localhost"
  printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n' >leaf.ext
  openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -out leaf.pem -extfile leaf.ext
  chmod 644 ca.pem leaf.pem leaf.key
) >/dev/null 2>"$WORK/pki/openssl.err" || { cat "$WORK/pki/openssl.err" >&2; exit 1; }
UP_CA="$WORK/pki/ca.pem"

UP_PORT=$(pick_port)
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
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:bench:10m;
    server {
        listen 127.0.0.1:$UP_PORT ssl;
        server_name localhost;
        ssl_certificate $WORK/pki/leaf.pem;
        ssl_certificate_key $WORK/pki/leaf.key;
        root $WORK/www;
        # Only the real value is accepted: a proxy that fails to swap gets 401s.
        if (\$http_authorization != "Bearer $REAL") { return 401; }
        location = /json { types { } default_type application/json; }
    }
}
EOF
nginx -p "$WORK/up" -e "$WORK/up/error.log" -c "$WORK/up/nginx.conf" &
UP_PID=$!
PIDS+=("$UP_PID")

# ---------------------------------------------------------------- sequester (two data dirs)
# seq-full: the default audit (fsync before injecting); seq-normal: [audit] sync = "normal".
export SEQUESTER_LOG=warn
declare -A SQ_PID SQ_PROXY SQ_CA SQ_KEY SQ_TOKEN SQ_GATEWAY
proxy_listen() { grep '"event":"ready"' "$1" | head -1 | jq -r '.proxy // empty'; } # OUTFILE
start_sequester() { # variant
  local v=$1 dir="$WORK/$1" out err cfg=() addr="" ca=""
  mkdir -p "$dir"
  export SEQUESTER_DATA_DIR="$dir/data"
  "$BIN" init >/dev/null
  printf %s "$REAL" | "$BIN" secret add S --host localhost >/dev/null
  "$BIN" agent add bot >/dev/null
  "$BIN" egress allow localhost >/dev/null # loopback is refused unless a rule names it
  SQ_TOKEN[$v]=$("$BIN" token issue --agent bot --secret S 2>"$dir/token.err") || { cat "$dir/token.err" >&2; exit 1; }
  [[ ${SQ_TOKEN[$v]} == sqt_* ]] || { echo "run.sh: token issue did not print a token" >&2; exit 1; }
  SQ_KEY[$v]=$("$BIN" --json agent key issue bot | jq -r .key)
  [[ ${SQ_KEY[$v]} == sqa_* ]] || { echo "run.sh: agent key issue did not print a key" >&2; exit 1; }
  if [[ $v == seq-normal ]]; then
    printf '[audit]\nsync = "normal"\n' >"$dir/sequester.toml"
    cfg=(--config "$dir/sequester.toml")
  fi
  out="$dir/sequester.out" err="$dir/sequester.err"
  : >"$out"
  "$BIN" --json serve "${cfg[@]}" --listen 127.0.0.1:0 --proxy-listen 127.0.0.1:0 --upstream-ca "$UP_CA" >>"$out" 2>"$err" &
  SQ_PID[$v]=$!
  PIDS+=("${SQ_PID[$v]}")
  addr=$(wait_printed "${SQ_PID[$v]}" "$err" "sequester ($v)" proxy_listen "$out") || exit 1
  ca=$(grep '"event":"ready"' "$out" | head -1 | jq -r '.ca')
  [[ -f $ca ]] || { echo "run.sh: sequester ($v) CA $ca not found" >&2; exit 1; }
  SQ_PROXY[$v]=$addr
  SQ_CA[$v]=$ca
  SQ_GATEWAY[$v]=$(grep '"event":"ready"' "$out" | head -1 | jq -r '.listen') # serves /metrics
  unset SEQUESTER_DATA_DIR
}
start_sequester seq-full
start_sequester seq-normal

# ---------------------------------------------------------------- mitmproxy
MITM_PORT=$(pick_port)
while [[ $MITM_PORT == "$UP_PORT" ]]; do MITM_PORT=$(pick_port); done
MITM_PASS="bench-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
MITM_TOKEN="sqt_mitm$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')" # any string; the addon swaps it
SWAP_TOKEN="$MITM_TOKEN" SWAP_REAL="$REAL" "$MITMDUMP" -q \
  --listen-host 127.0.0.1 --listen-port "$MITM_PORT" \
  --set confdir="$WORK/mitm" \
  --set ssl_verify_upstream_trusted_ca="$UP_CA" \
  --set proxyauth="bot:$MITM_PASS" \
  -s "$ADDON" >"$WORK/mitm/out.log" 2>&1 &
MITM_PID=$!
PIDS+=("$MITM_PID")
for ((i = 0; i < 200; i++)); do
  if [[ -s $WORK/mitm/mitmproxy-ca-cert.pem ]] && ! port_free "$MITM_PORT"; then break; fi
  kill -0 "$MITM_PID" 2>/dev/null || { cat "$WORK/mitm/out.log" >&2; echo "run.sh: mitmdump exited" >&2; exit 1; }
  sleep 0.1
done
[[ -s $WORK/mitm/mitmproxy-ca-cert.pem ]] || { echo "run.sh: mitmdump did not write its CA" >&2; exit 1; }

# ---------------------------------------------------------------- the floor
mkdir -p "$WORK/floor"
: >"$WORK/floor/out"
BENCH_VALUE="Bearer $REAL" "$FLOOR_BIN" 127.0.0.1:0 "$WORK/floor/ca.pem" "$UP_CA" >>"$WORK/floor/out" 2>"$WORK/floor/err" &
FL_PID=$!
PIDS+=("$FL_PID")
floor_listen() { sed -n 's/^listening on //p' "$WORK/floor/out" | head -1; }
FL_ADDR=$(wait_printed "$FL_PID" "$WORK/floor/err" mitm_floor floor_listen) || exit 1

# ---------------------------------------------------------------- targets and a correctness check
UP_URL="https://localhost:$UP_PORT/json"
declare -A CA AUTH PROXY PROXY_USER CPU_PIDS
CA[direct]=$UP_CA
AUTH[direct]="Bearer $REAL" # the agent would hold the real key
PROXY[direct]=""
for v in seq-full seq-normal; do
  CA[$v]=${SQ_CA[$v]}
  AUTH[$v]="Bearer ${SQ_TOKEN[$v]}" # the agent holds only the token
  PROXY[$v]="http://${SQ_PROXY[$v]}"
  PROXY_USER[$v]="bot:${SQ_KEY[$v]}"
  CPU_PIDS[$v]=${SQ_PID[$v]}
done
CA[mitmproxy]="$WORK/mitm/mitmproxy-ca-cert.pem"
AUTH[mitmproxy]="Bearer $MITM_TOKEN"
PROXY[mitmproxy]="http://127.0.0.1:$MITM_PORT"
PROXY_USER[mitmproxy]="bot:$MITM_PASS"
CPU_PIDS[mitmproxy]=$MITM_PID
CA[floor]="$WORK/floor/ca.pem"
AUTH[floor]="Bearer $MITM_TOKEN" # replaced by the value whatever it is
PROXY[floor]="http://$FL_ADDR"
PROXY_USER[floor]="bot:unchecked" # the floor does not authenticate
CPU_PIDS[floor]=$FL_PID
CPU_PIDS[direct]=""
TARGETS=(direct seq-full seq-normal mitmproxy floor)

curl_args() { # target
  local a=(--cacert "${CA[$1]}" -H "Authorization: ${AUTH[$1]}")
  if [[ -n ${PROXY[$1]} ]]; then a+=(--proxy "${PROXY[$1]}" --proxy-user "${PROXY_USER[$1]}"); fi
  printf '%s\n' "${a[@]}"
}
mapfile -t args < <(curl_args direct)
wait_http "$UP_URL" "${args[@]}"
code=$(curl -sS -o /dev/null -w '%{http_code}' --cacert "$UP_CA" -H "Authorization: Bearer wrong" "$UP_URL")
[[ $code == 401 ]] || { echo "run.sh: the upstream answered $code to a wrong value, want 401" >&2; exit 1; }
for t in "${TARGETS[@]}"; do
  mapfile -t args < <(curl_args "$t")
  wait_http "$UP_URL" "${args[@]}"
  got="$WORK/check.$t"
  curl -fsS -o "$got" "${args[@]}" "$UP_URL" || { echo "run.sh: $t failed; KEEP_TMP=1 keeps the logs" >&2; exit 1; }
  cmp -s "$got" "$WORK/www/json" || { echo "run.sh: $t returned a different body" >&2; exit 1; }
done
echo "check:   all five return the upstream's body through TLS they verify (each proxy's own CA);"
echo "         the upstream answers 401 to anything but the real value"

UP_ALL="$UP_PID $(pgrep -P "$UP_PID" | tr '\n' ' ')"

# ---------------------------------------------------------------- measure
# RES[target.mode.round] =
#   "rps p50_ms p99_ms errors proxy_us_per_req proxy_cores upstream_cores busy% not_ours%"
# not_ours: CPU time of processes other than oha, the upstream and the proxy measured.
declare -A RES
DISTURBED=0
oha_cmd() { # target mode duration → the oha argument list, one per line
  local t=$1 m=$2 d=$3
  local a=(--no-tui --output-format json -c "$CONNS" -z "${d}s" -w --cacert "${CA[$t]}" -H "Authorization: ${AUTH[$t]}")
  if [[ -n ${PROXY[$t]} ]]; then
    a+=(-x "${PROXY[$t]}" --proxy-header "Proxy-Authorization: Basic $(printf %s "${PROXY_USER[$t]}" | base64 -w0)")
  fi
  [[ $m == new ]] && a+=(--disable-keepalive)
  [[ $m == rate ]] && a+=(-q "$RATE" --latency-correction)
  a+=("$UP_URL")
  printf '%s\n' "${a[@]}"
}
measure() { # target mode round
  local t=$1 m=$2 r=$3 out perf_pid="" p0 p1 u0 u1 c0 c1 b0 t0 b1 t1 args
  mapfile -t args < <(oha_cmd "$t" "$m" "$WARMUP")
  timeout $((WARMUP + 30)) oha "${args[@]}" >/dev/null 2>&1 || true
  if [[ -n $PERF_OUT && $t == seq-full && $m == ka && $r == "$ROUNDS" ]]; then
    perf record -q -g -F 999 -o "$PERF_OUT" -p "${SQ_PID[seq-full]}" -- sleep "$DURATION" >/dev/null 2>&1 &
    perf_pid=$!
    PIDS+=("$perf_pid")
  fi
  mapfile -t args < <(oha_cmd "$t" "$m" "$DURATION")
  # shellcheck disable=SC2086 # PID lists
  p0=$(cpu_ticks ${CPU_PIDS[$t]}) u0=$(cpu_ticks $UP_ALL) c0=$(children_ticks)
  read -r b0 t0 < <(machine_ticks)
  out=$(timeout $((DURATION + 60)) oha "${args[@]}" 2>"$WORK/oha.err") || { cat "$WORK/oha.err" >&2; echo "run.sh: oha failed ($t $m)" >&2; exit 1; }
  # shellcheck disable=SC2086
  p1=$(cpu_ticks ${CPU_PIDS[$t]}) u1=$(cpu_ticks $UP_ALL) c1=$(children_ticks)
  read -r b1 t1 < <(machine_ticks)
  if [[ -n $perf_pid ]]; then wait "$perf_pid" 2>/dev/null || true; fi
  printf '%s\n' "$out" >"$WORK/oha.$t.$m.$r.json"
  # requests = responses with any status; errors = non-200 responses plus transport errors
  local line
  line=$(jq -r '[(.statusCodeDistribution // {} | to_entries | map(.value) | add // 0),
                 (.statusCodeDistribution // {} | to_entries | map(select(.key != "200") | .value) | add // 0),
                 (.errorDistribution // {} | to_entries | map(.value) | add // 0),
                 .summary.total, .latencyPercentiles.p50, .latencyPercentiles.p99] | @tsv' <<<"$out")
  RES[$t.$m.$r]=$(awk -v pt=$((p1 - p0)) -v ut=$((u1 - u0)) -v bt=$((b1 - b0)) -v tt=$((t1 - t0)) -v ct=$((c1 - c0)) -v hz="$CLK_TCK" -v proxied="${CPU_PIDS[$t]}" '{
      n = $1; err = $2 + $3; secs = $4
      us = (proxied == "" || n == 0) ? 0 : pt / hz * 1e6 / n
      printf "%.1f %.3f %.3f %d %.1f %.2f %.2f %.0f %.0f", (secs > 0 ? n / secs : 0), $5 * 1000, $6 * 1000, err,
        us, pt / hz / secs, ut / hz / secs, (tt > 0 ? 100 * bt / tt : 0),
        (tt > 0 ? 100 * (bt - pt - ut - ct) / tt : 0)
    }' <<<"$line")
  read -r rps p50 p99 err us pc uc busy others <<<"${RES[$t.$m.$r]}"
  printf '  round %d  %-3s %-10s %8s req/s  p50 %8s ms  p99 %8s ms  errors %s  proxy %7s µs/req %s cores  upstream %s cores  CPUs %s%% busy, %s%% not ours%s\n' \
    "$r" "$m" "$t" "$rps" "$p50" "$p99" "$err" "$us" "$pc" "$uc" "$busy" "$others" "$( ((others > 10)) && echo '  <- disturbed')"
  if ((others > 10)); then DISTURBED=$((DISTURBED + 1)); fi
  sleep 1
}

RUNS=("direct ka" "seq-full ka" "seq-normal ka" "mitmproxy ka" "floor ka" "seq-full new" "seq-normal new" "mitmproxy new" "floor new"
  "direct rate" "seq-full rate" "floor rate")
echo "== measurements"
mapfile -t example < <(oha_cmd seq-full ka "$DURATION")
echo "  e.g.: oha ${example[*]}" | sed -e "s/sqt_[A-Za-z0-9_-]*/sqt_…/g" -e "s/Basic [A-Za-z0-9+\/=]*/Basic …/"
for ((r = 1; r <= ROUNDS; r++)); do
  for run in "${RUNS[@]}"; do
    # shellcheck disable=SC2086
    measure $run "$r"
  done
done

for v in seq-full seq-normal; do printf '%-10s ' "$v"; audit_summary "http://${SQ_GATEWAY[$v]}/metrics"; done

# ---------------------------------------------------------------- summarise
median_of() { # target mode field (1-based, as in RES)
  local r vals=()
  for ((r = 1; r <= ROUNDS; r++)); do vals+=("$(awk -v f="$3" '{print $f}' <<<"${RES[$1.$2.$r]}")"); done
  printf '%s\n' "${vals[@]}" | sort -g | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
declare -A M # M[target.mode] = "rps p50 p99 errors us_per_req" (medians per field)
for run in "${RUNS[@]}"; do
  read -r t m <<<"$run"
  M[$t.$m]="$(median_of "$t" "$m" 1) $(median_of "$t" "$m" 2) $(median_of "$t" "$m" 3) $(median_of "$t" "$m" 4) $(median_of "$t" "$m" 5)"
done

read -r d_rps d_p50 d_p99 _ <<<"${M[direct.ka]}"
read -r _ _ dr_p99 _ <<<"${M[direct.rate]}"
read -r mk_rps _ <<<"${M[mitmproxy.ka]}"
read -r mn_rps _ <<<"${M[mitmproxy.new]}"
echo
echo "== table (oha -c$CONNS -z${DURATION}s, HTTP/1.1 to https://localhost, loopback, $(nproc) cores shared by all processes; median of $ROUNDS)"
echo "   ka = keep-alive (one CONNECT + handshake per connection); new = --disable-keepalive (CONNECT + TLS handshake per request);"
echo "   rate = keep-alive at $RATE req/s in all (oha -q $RATE --latency-correction)"
printf '| %-4s | %-10s | %8s | %8s | %8s | %8s | %8s | %8s | %12s | %6s |\n' \
  mode target "req/s" "p50 ms" "p99 ms" "x direct" "+p99 ms" "x mitm" "proxy µs/req" errors
echo "|------|------------|---------:|---------:|---------:|---------:|---------:|---------:|-------------:|-------:|"
for run in "${RUNS[@]}"; do
  read -r t m <<<"$run"
  read -r rps p50 p99 err us <<<"${M[$t.$m]}"
  mref=$mk_rps ref99=$d_p99
  [[ $m == new ]] && mref=$mn_rps
  [[ $m == rate ]] && ref99=$dr_p99
  awk -v m="$m" -v t="$t" -v rps="$rps" -v d="$d_rps" -v p50="$p50" -v p99="$p99" -v d99="$ref99" -v mr="$mref" -v err="$err" -v us="$us" \
    'BEGIN {
       xd = (m == "ka" && t != "direct") ? sprintf("%.3f", rps / d) : (t == "direct" && m == "ka" ? "1.00" : "-")
       ad = (m != "new" && t != "direct") ? sprintf("%+.3f", p99 - d99) : "-"
       xm = (t == "direct" || t == "mitmproxy" || m == "rate") ? "-" : sprintf("%.1f", rps / mr)
       u = (t == "direct") ? "-" : sprintf("%.1f", us)
       printf "| %-4s | %-10s | %8.0f | %8.3f | %8.3f | %8s | %8s | %8s | %12s | %6d |\n", m, t, rps, p50, p99, xd, ad, xm, u, err
     }'
done

echo
echo "== targets (keep-alive): Sequester >= 100x mitmproxy's throughput; >= 0.4x direct; added p99 < 2 ms"
for v in seq-full seq-normal; do
  read -r s_rps _ s_p99 _ <<<"${M[$v.ka]}"
  awk -v v="$v" -v s="$s_rps" -v mk="$mk_rps" -v d="$d_rps" -v sp="$s_p99" -v dp="$d_p99" 'BEGIN {
    printf "  %-10s x mitmproxy = %.1f  %s;  x direct = %.3f  %s;  added p99 = %.3f ms  %s\n", v,
      s / mk, (s >= 100 * mk ? "MET" : "MISSED"), s / d, (s >= 0.4 * d ? "MET" : "MISSED"),
      sp - dp, (sp - dp < 2 ? "MET" : "MISSED") }'
done
read -r _ _ sr_p99 _ <<<"${M[seq-full.rate]}"
awk -v sp="$sr_p99" -v dp="$dr_p99" -v rate="$RATE" 'BEGIN {
  printf "  seq-full   added p99 at %d req/s (below saturation) = %.3f ms  %s\n", rate, sp - dp, (sp - dp < 2 ? "MET" : "MISSED") }'

echo
echo "== for reference: the floor (the same libraries; no authentication, policy, lookup, receipts or scrubbing)"
read -r f_rps _ f_p99 _ f_us <<<"${M[floor.ka]}"
read -r fn_rps _ _ _ fn_us <<<"${M[floor.new]}"
awk -v f="$f_rps" -v d="$d_rps" -v mk="$mk_rps" -v fp="$f_p99" -v dp="$d_p99" -v fu="$f_us" 'BEGIN {
  printf "  ka   floor x direct = %.3f (%.1f µs/req), added p99 %.3f ms; 100x mitmproxy would be %.0f req/s = %.2fx direct\n",
    f / d, fu, fp - dp, 100 * mk, 100 * mk / d }'
for v in seq-full seq-normal; do
  read -r s_rps _ _ _ s_us <<<"${M[$v.ka]}"
  read -r sn_rps _ _ _ sn_us <<<"${M[$v.new]}"
  awk -v v="$v" -v s="$s_rps" -v f="$f_rps" -v su="$s_us" -v fu="$f_us" -v sn="$sn_rps" -v fn="$fn_rps" -v snu="$sn_us" -v fnu="$fn_us" 'BEGIN {
    printf "  %-10s / floor: ka %.2f (+%.1f µs/req), new %.2f (+%.1f µs/req)\n", v, s / f, su - fu, sn / fn, snu - fnu }'
done

echo "after:   CPUs $(busy_percent 2)% busy with our servers idle"
if ((DISTURBED > 0)); then
  echo "WARNING: in $DISTURBED measurement(s) other processes took over 10% of the CPUs; compare with care"
fi
for v in seq-full seq-normal; do
  echo "receipts ($v): $(SEQUESTER_DATA_DIR="$WORK/$v/data" "$BIN" receipts verify 2>&1 | tail -1 || true)"
done
if [[ -n $PERF_OUT ]]; then echo "perf:    Sequester (seq-full, keep-alive, last round): $PERF_OUT"; fi
exit 0
