#!/usr/bin/env bash
# Runs each fuzz target briefly (default 20 s each) on stable Rust, using RUSTC_BOOTSTRAP=1 to
# unlock the nightly-only sanitizer flags cargo-fuzz passes. Installs cargo-fuzz if missing.
# Usage: crates/detect/fuzz/smoke.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-20}"
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi
export RUSTC_BOOTSTRAP=1
for target in detect redact rules; do
    echo "== fuzz target ${target} (${seconds}s)"
    mkdir -p "corpus/${target}"
    cargo fuzz run "${target}" "corpus/${target}" -- -max_total_time="${seconds}" -max_len=65536 -rss_limit_mb=2048
done
echo "fuzz smoke: all targets ran ${seconds}s without a crash"
