#!/usr/bin/env bash
# Secret-detection benchmark: Sequester's detector against detect-secrets and CredSweeper.
#
#   bench/detect/run.sh [--quick] [--speed-only]
#
# --quick: smaller files (12/8/4 MB) and 2 MB peer prefixes. --speed-only: skip step 4 (the
# accuracy comparison). Honours CARGO_TARGET_DIR. SCAN_REPEAT (default 3) sets how many runs
# Sequester's best time is taken from (raise it on a busy machine).
#
# 1. Creates a Python virtualenv in bench/detect/.venv (git-ignored) with detect-secrets and
#    credsweeper from PyPI.
# 2. Generates, in a temporary directory: (a) ~100 MB of ordinary source code (the Python
#    standard library) and synthetic application logs with a few fake secrets, (b) a ~20 MB
#    candidate-dense file (keywords and assignments on every line, mostly non-secrets).
# 3. Times each tool on the same files, one core each: Sequester's detector single-threaded
#    (crates/detect/examples/scan_bench.rs, release build, best of 3 runs, file already in
#    memory), `detect-secrets scan --all-files FILE`, `credsweeper --jobs 1 --path FILE` (wall time,
#    including interpreter start-up). The peers are slow, so they get a 4 MB prefix of each
#    file (2 MB under --quick); MB/s are comparable because
#    throughput is per byte.
# 4. Scores each tool on the peer corpus (../shared/corpus, see its README) with the corpus'
#    per-sample scoring, on a seeded subsample (up to 200 positives and 150 negatives per
#    source file), one file per sample. Sequester is also scored on the whole corpus by
#    `cargo test --release --test peer_corpus`.
# Prints a Markdown summary at the end (copy it into bench/RESULTS.md).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
quick=0
speed_only=0
for arg in "$@"; do
    case "$arg" in
        --quick) quick=1 ;;
        --speed-only) speed_only=1 ;;
        *) echo "usage: $0 [--quick] [--speed-only]" >&2; exit 2 ;;
    esac
done
repeat="${SCAN_REPEAT:-3}"
corpus="${SEQUESTER_CORPUS_DIR:-$root/../shared/corpus}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

log() { printf '\n== %s\n' "$*" >&2; }

# --- 1. peers in a virtualenv ---------------------------------------------------------------
venv="$here/.venv"
if [[ ! -x "$venv/bin/detect-secrets" || ! -x "$venv/bin/credsweeper" ]]; then
    log "creating $venv and installing detect-secrets and credsweeper"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet detect-secrets credsweeper
fi
py="$venv/bin/python"
ds_version="$("$venv/bin/detect-secrets" --version 2>/dev/null | tail -n1)"
cs_version="$("$venv/bin/credsweeper" --version 2>/dev/null | tail -n1)"

# --- 2. data ---------------------------------------------------------------------------------
log "generating benchmark data in $work"
code_mb=60
log_mb=40
dense_mb=20
if [[ $quick == 1 ]]; then code_mb=12; log_mb=8; dense_mb=4; fi
"$py" - "$work" "$code_mb" "$log_mb" "$dense_mb" <<'PY'
import binascii, os, random, sys, sysconfig, glob
work, code_mb, log_mb, dense_mb = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
rnd = random.Random(20261124)
B62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
def alnum(n): return "".join(rnd.choice(B62) for _ in range(n))
def gh():
    r = alnum(30); n = binascii.crc32(r.encode()) & 0xffffffff; s = ""
    for _ in range(6): s = B62[n % 62] + s; n //= 62
    return "ghp_" + r + s
def aws(): return "AKIA" + "".join(rnd.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
secrets = lambda: rnd.choice([
    f"GITHUB_TOKEN={gh()}", f"aws_access_key_id = {aws()}",
    f"DATABASE_URL=postgres://app:{alnum(24)}@db.internal:5432/app",
    f'client_secret = "{alnum(40)}"', f"Authorization: Bearer sk-proj-{alnum(74)}T3BlbkFJ{alnum(74)}",
])
# (a) source code: the Python standard library, concatenated, plus a few secrets.
stdlib = sysconfig.get_paths()["stdlib"]
files = sorted(glob.glob(os.path.join(stdlib, "**", "*.py"), recursive=True))
target = code_mb * 1_000_000
with open(os.path.join(work, "code.txt"), "w", encoding="utf-8", errors="replace") as out:
    written = 0; i = 0
    while written < target:
        try:
            text = open(files[i % len(files)], encoding="utf-8", errors="replace").read()
        except OSError:
            text = ""
        i += 1
        out.write(text); written += len(text)
        if i % 400 == 0:
            line = secrets() + "\n"; out.write(line); written += len(line)
# (a) logs: synthetic application logs, a secret every ~2 MB.
levels = ["INFO", "INFO", "INFO", "DEBUG", "WARN", "ERROR"]
paths = ["/v1/users", "/v1/items/42", "/healthz", "/v1/orders?page=3", "/login", "/v1/tokens/refresh"]
target = log_mb * 1_000_000
with open(os.path.join(work, "logs.txt"), "w") as out:
    written = 0; n = 0
    while written < target:
        n += 1
        line = (f"2026-11-24T10:{n // 60 % 60:02d}:{n % 60:02d}.{n % 1000:03d}Z {rnd.choice(levels):5} "
                f"svc=api req={rnd.getrandbits(64):016x} method=GET path={rnd.choice(paths)} "
                f"status={rnd.choice([200, 200, 201, 204, 401, 404, 500])} dur_ms={rnd.randint(1, 900)} "
                f"user=u{rnd.randint(1, 99999)} trace={rnd.getrandbits(128):032x}\n")
        if n % 20000 == 0:
            line += f"2026-11-24T10:00:00.000Z DEBUG env {secrets()}\n"
        out.write(line); written += len(line)
# (b) candidate-dense: keywords and assignments everywhere, a few real-format secrets.
words = ["token", "api_key", "secret", "password", "auth", "private_key", "access_key", "key"]
target = dense_mb * 1_000_000
with open(os.path.join(work, "dense.txt"), "w") as out:
    written = 0; n = 0
    while written < target:
        n += 1
        w = rnd.choice(words)
        v = rnd.choice([f"os.environ['{w.upper()}']", "${" + w.upper() + "}", "<your-key>", f"get_{w}()",
                        f"{rnd.getrandbits(160):040x}", "changeme", f"user_{rnd.randint(1, 999)}_{w}",
                        f"{rnd.randint(0, 10**6)}"])
        line = f"{w}_{n % 97} = \"{v}\"  # {w} handling for module {n % 31}\n"
        if n % 5000 == 0:
            line += secrets() + "\n"
        out.write(line); written += len(line)
PY
ls -la "$work" >&2

peer_mb=4
[[ $quick == 1 ]] && peer_mb=2
for f in code logs dense; do
    # A prefix cut at a line end, so no tool sees a truncated UTF-8 sequence.
    "$py" - "$work/$f.txt" "$work/$f.peer.txt" "$((peer_mb * 1000 * 1000))" <<'PY'
import sys
data = open(sys.argv[1], "rb").read(int(sys.argv[3]))
open(sys.argv[2], "wb").write(data[: data.rfind(b"\n") + 1])
PY
done

# --- 3. speed --------------------------------------------------------------------------------
log "building scan_bench (release)"
(cd "$root" && cargo build --quiet --release -p sequester-detect --example scan_bench)
bench_bin="${CARGO_TARGET_DIR:-$root/target}/release/examples/scan_bench"

declare -A seq_mbps ds_mbps cs_mbps
for f in code logs dense; do
    read -r _ _ mbps _ < <("$bench_bin" --repeat "$repeat" "$work/$f.txt")
    seq_mbps[$f]=$mbps
done

wall() { # runs the command with stdout to $out; prints the seconds it took; fails if it failed
    local start end
    start=$(date +%s.%N)
    "$@" >"$out" 2>"$out.err" || { echo "FAILED: $* (see $out.err)" >&2; tail -5 "$out.err" >&2; exit 1; }
    end=$(date +%s.%N)
    "$py" -c "print($end - $start)"
}
declare -A ds_found cs_found seq_found
for f in code logs dense; do
    bytes=$(stat -c %s "$work/$f.peer.txt")
    read -r _ _ _ n < <("$bench_bin" --repeat 1 "$work/$f.peer.txt")
    seq_found[$f]=$n
    log "detect-secrets on $f ($bytes bytes)"
    out="$work/ds-$f.json"
    # From the work directory and with --all-files: inside a git repository detect-secrets
    # silently skips files git does not track.
    s=$(cd "$work" && wall "$venv/bin/detect-secrets" scan --all-files "$f.peer.txt")
    ds_mbps[$f]=$("$py" -c "print($bytes / 1e6 / $s)")
    ds_found[$f]=$("$py" -c "import json; d=json.load(open('$out')); print(sum(len(v) for v in d['results'].values()))")
    log "credsweeper on $f ($bytes bytes)"
    out="$work/cs-$f.out"
    s=$(wall "$venv/bin/credsweeper" --jobs 1 --path "$work/$f.peer.txt" --save-json "$work/cs-$f.json")
    cs_mbps[$f]=$("$py" -c "print($bytes / 1e6 / $s)")
    cs_found[$f]=$("$py" -c "import json; print(len(json.load(open('$work/cs-$f.json'))))")
done

# --- 4. accuracy on the peer corpus ---------------------------------------------------------
acc_table=""
if [[ $speed_only == 1 ]]; then
    acc_table="(skipped: --speed-only)"
    full=""
elif [[ -d "$corpus" ]]; then
    log "scoring on a subsample of the peer corpus ($corpus)"
    samples="$work/samples"
    mkdir -p "$samples"
    "$py" - "$corpus" "$samples" <<'PY'
import json, os, random, sys, glob
corpus, out = sys.argv[1], sys.argv[2]
rnd = random.Random(7)
index = []
for path in sorted(glob.glob(os.path.join(corpus, "*.jsonl"))):
    name = os.path.splitext(os.path.basename(path))[0]
    rows = [json.loads(l) for l in open(path) if l.strip()]
    pos = [r for r in rows if r["label"] == "positive"]
    neg = [r for r in rows if r["label"] == "negative"]
    pick = rnd.sample(pos, min(200, len(pos))) + rnd.sample(neg, min(150, len(neg)))
    for i, r in enumerate(pick):
        fname = f"{name}__{i:04d}.txt"
        with open(os.path.join(out, fname), "w") as f:
            f.write(r["text"])
        index.append({"file": fname, "source": name, "label": r["label"]})
json.dump(index, open(os.path.join(out, "..", "index.json"), "w"))
PY
    # Sequester: findings per file.
    "$bench_bin" --repeat 1 "$samples"/*.txt | awk -F'\t' '{n=split($1,p,"/"); print p[n] "\t" $4}' > "$work/seq.tsv"
    # detect-secrets: one scan over the directory.
    (cd "$samples" && "$venv/bin/detect-secrets" scan --all-files . > "$work/ds.json" 2>/dev/null) || true
    # CredSweeper: one run over the directory.
    "$venv/bin/credsweeper" --jobs 1 --path "$samples" --save-json "$work/cs.json" >/dev/null 2>&1 || true
    acc_table="$("$py" - "$work" <<'PY'
import json, os, sys, collections
work = sys.argv[1]
index = json.load(open(os.path.join(work, "index.json")))
seq = {}
for line in open(os.path.join(work, "seq.tsv")):
    f, n = line.rstrip("\n").split("\t"); seq[f] = int(n) > 0
ds = set()
try:
    for f, res in json.load(open(os.path.join(work, "ds.json"))).get("results", {}).items():
        if res: ds.add(os.path.basename(f))
except Exception:
    pass
cs = set()
try:
    for item in json.load(open(os.path.join(work, "cs.json"))):
        for line in item.get("line_data_list", []):
            cs.add(os.path.basename(line.get("path", "")))
except Exception:
    pass
tools = {"sequester": lambda f: seq.get(f, False), "detect-secrets": lambda f: f in ds, "credsweeper": lambda f: f in cs}
rows = []
sources = sorted({r["source"] for r in index}) + ["ALL"]
for tool, hit in tools.items():
    cells = []
    for src in sources:
        sel = [r for r in index if src == "ALL" or r["source"] == src]
        p = [r for r in sel if r["label"] == "positive"]; n = [r for r in sel if r["label"] == "negative"]
        rec = sum(hit(r["file"]) for r in p) / max(1, len(p))
        fl = sum(hit(r["file"]) for r in n) / max(1, len(n))
        cells.append(f"{rec:.2f} / {100 * fl:.1f}%")
    rows.append(f"| {tool} | " + " | ".join(cells) + " |")
head = "| tool | " + " | ".join(sources) + " |\n|---|" + "---|" * len(sources)
print(head + "\n" + "\n".join(rows))
print(f"\n(subsample: {len(index)} samples, recall / negatives flagged)")
PY
)"
    log "Sequester on the whole corpus (cargo test --release --test peer_corpus)"
    full="$(cd "$root" && cargo test --quiet --release -p sequester-detect --test peer_corpus -- --nocapture 2>/dev/null | grep -E '^(file|gitleaks|kingfisher|noseyparker|titus|ALL|\(\*)' || true)"
else
    acc_table="(peer corpus not found at $corpus: skipped)"
    full=""
fi

# --- summary ---------------------------------------------------------------------------------
ratio() { "$py" -c "print(round($1 / $2))"; }
{
    echo "### Secret detection — $(date -u +%Y-%m-%d), $(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs))"
    echo
    echo "Throughput, one core (MB/s; Sequester best of $repeat; peers on a ${peer_mb} MB prefix, wall time incl. start-up):"
    echo
    echo "| data | size | Sequester | detect-secrets ($ds_version) | CredSweeper ($cs_version) | vs detect-secrets | vs CredSweeper |"
    echo "|---|---|---|---|---|---|---|"
    for f in code logs dense; do
        size=$(( $(stat -c %s "$work/$f.txt") / 1000000 ))
        printf '| %s | %s MB | %.0f | %.2f | %.2f | %sx | %sx |\n' "$f" "$size" "${seq_mbps[$f]}" "${ds_mbps[$f]}" "${cs_mbps[$f]}" \
            "$(ratio "${seq_mbps[$f]}" "${ds_mbps[$f]}")" "$(ratio "${seq_mbps[$f]}" "${cs_mbps[$f]}")"
    done
    echo
    echo "Findings on the ${peer_mb} MB prefixes (sanity check that every tool scanned): " \
        "$(for f in code logs dense; do printf '%s: Sequester %s, detect-secrets %s, CredSweeper %s; ' "$f" "${seq_found[$f]}" "${ds_found[$f]}" "${cs_found[$f]}"; done)"
    echo
    echo "Accuracy on the peer corpus subsample:"
    echo
    echo "$acc_table"
    if [[ -n "$full" ]]; then
        echo
        echo "Sequester on the whole peer corpus:"
        echo
        echo '```'
        echo "$full"
        echo '```'
    fi
}
