# Shared by the benchmark scripts (sourced, not run): tool checks, the release build, a work
# directory whose processes are stopped by PID on exit, free loopback ports, HTTP readiness,
# CPU accounting from /proc, and the nginx settings every nginx instance here uses.
# The sourcing script sets ROOT (the repository) and BIN (the sequester binary) first.

missing=0
need() { # TOOL HINT: notes a missing tool; call `((missing == 0)) || exit 1` after the checks
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "run.sh: required tool '$1' is missing: $2" >&2
    missing=1
  fi
}

build_sequester() { # unless SKIP_BUILD is set; then BIN must exist
  if [[ -z ${SKIP_BUILD:-} ]]; then
    echo "building: cargo build --release -p sequester"
    (cd "$ROOT" && cargo build --release -q -p sequester)
  fi
  [[ -x $BIN ]] || { echo "run.sh: $BIN not found; run cargo build --release -p sequester" >&2; exit 1; }
}
build_floor() { # EXAMPLE PATH: builds sequester-proxy's example EXAMPLE unless SKIP_BUILD is
  # set; then PATH (the built example, or another given by the caller) must exist
  local cmd="cargo build --release -p sequester-proxy --example $1"
  if [[ -z ${SKIP_BUILD:-} ]]; then
    echo "building: $cmd"
    (cd "$ROOT" && $cmd -q)
  fi
  [[ -x $2 ]] || { echo "run.sh: $2 not found; run $cmd" >&2; exit 1; }
}

# ---------------------------------------------------------------- processes and cleanup
PIDS=()
cleanup() {
  local pid i
  trap - EXIT INT TERM
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for ((i = 0; i < 150; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ -n ${KEEP_TMP:-} ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
}
bench_workdir() { # NAME: sets WORK; every PID added to PIDS is stopped on exit, WORK removed
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/sequester-$1-bench.XXXXXX")
  chmod 755 "$WORK" # nginx workers run as another user when nginx is started by root
  trap cleanup EXIT
  trap 'exit 130' INT TERM
}

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() { # below the usual ephemeral range (32768-60999), where outgoing connections bind
  local p i
  for ((i = 0; i < 100; i++)); do
    p=$((20000 + RANDOM % 12000))
    if port_free "$p"; then echo "$p"; return; fi
  done
  echo "run.sh: no free port found" >&2
  exit 1
}
wait_printed() { # PID ERRFILE NAME CMD…: CMD's first non-empty output (an address the process
  # prints once it listens), retried for at most 10 s while PID lives; use as
  # `x=$(wait_printed …) || exit 1`
  local pid=$1 err=$2 name=$3 got i
  shift 3
  for ((i = 0; i < 100; i++)); do
    got=$("$@" 2>/dev/null || true)
    if [[ -n $got ]]; then echo "$got"; return 0; fi
    kill -0 "$pid" 2>/dev/null || { cat "$err" >&2; echo "run.sh: $name exited" >&2; exit 1; }
    sleep 0.1
  done
  echo "run.sh: $name did not print its address" >&2
  exit 1
}
wait_http() { # URL [curl args…]: until it answers, at most 10 s
  local url=$1 i
  shift
  for ((i = 0; i < 100; i++)); do
    curl -fsS -o /dev/null "$@" "$url" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "run.sh: $url did not come up" >&2
  curl -sS -o /dev/null "$@" "$url" >&2 || true
  exit 1
}

# ---------------------------------------------------------------- CPU accounting
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # PID…: user+system clock ticks of these processes (all their threads)
  local pid sum=0 stat rest
  for pid in "$@"; do
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || continue
    rest=${stat##*) } # fields after "(comm) ": state is field 3, utime 14, stime 15
    read -r -a f <<<"$rest"
    sum=$((sum + f[11] + f[12]))
  done
  echo "$sum"
}
children_ticks() { # CPU ticks of this shell's finished children (the load generator)
  local stat rest
  stat=$(cat /proc/$$/stat)
  rest=${stat##*) }
  read -r -a f <<<"$rest"
  echo $((f[13] + f[14]))
}
machine_ticks() { awk '/^cpu / {busy = $2 + $3 + $4 + $7 + $8 + $9; print busy, busy + $5 + $6}' /proc/stat; }
busy_percent() { # seconds: share of all CPUs busy over that interval
  local b0 t0 b1 t1
  read -r b0 t0 < <(machine_ticks)
  sleep "$1"
  read -r b1 t1 < <(machine_ticks)
  awk -v b=$((b1 - b0)) -v t=$((t1 - t0)) 'BEGIN {printf "%.0f", (t > 0 ? 100 * b / t : 0)}'
}
wait_quiet() { # waits up to WAIT_QUIET seconds for idle CPUs; prints how busy they were
  local idle_busy waited=0
  idle_busy=$(busy_percent 2)
  while ((idle_busy > 15 && waited < ${WAIT_QUIET:-0})); do
    sleep 3
    waited=$((waited + 5))
    idle_busy=$(busy_percent 2)
  done
  echo "before:  CPUs ${idle_busy}% busy with nothing of ours running"
  ((idle_busy <= 15)) || echo "WARNING: other processes are using the CPUs; the figures will be noisy (WAIT_QUIET=300 waits for quiet)"
}

nginx_common_http() { # PREFIX_DIR: settings inside http { } for every nginx started here
  cat <<NGINX
    access_log off;
    client_body_temp_path $1/client_body;
    proxy_temp_path $1/proxy;
    fastcgi_temp_path $1/fastcgi;
    uwsgi_temp_path $1/uwsgi;
    scgi_temp_path $1/scgi;
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    tcp_nodelay on;
NGINX
}

print_machine() { # TOOLS LOAD: the header every run prints (date, machine, build, load)
  echo "== machine"
  echo "date:    $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "cores:   $(nproc) (nproc); kernel $(uname -r)"
  echo "cpu:     $(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)"
  echo "tools:   $1"
  echo "build:   $BIN (commit $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown))"
  echo "load:    $2"
}

audit_summary() { # METRICS_URL: one line on the receipt writer's group commits so far
  curl -fsS "$1" 2>/dev/null | awk '
    /^sequester_audit_receipts_total\{durable="waited"\}/ { waited = $2 }
    /^sequester_audit_receipts_total\{durable="queued"\}/ { queued = $2 }
    /^sequester_audit_commit_seconds_sum / { secs = $2 }
    /^sequester_audit_commit_seconds_count / { n = $2 }
    END {
      if (n > 0)
        printf "audit:   %d commits, %.1f receipts per commit (%.1f waited for), %.3f ms per commit on average\n",
          n, (waited + queued) / n, waited / n, 1000 * secs / n
    }'
}
