#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets/) for SECONDS each (default 600), two at a time on
# this 2-core machine, with the corpus kept in fuzz/corpus/<target>/ (minimised afterwards so
# that the repository keeps only inputs that add coverage). A crash leaves its input in
# fuzz/artifacts/<target>/ and fails the script; once fixed, copy it into fuzz/regressions/<target>/
# (minimisation never touches that folder), so that
# tests/fuzz_corpus.rs replays it in every `cargo test`.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
# Needs the nightly toolchain; installs cargo-fuzz if it is missing.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
seconds="${1:-600}"
shift || true
if [ "$#" -gt 0 ]; then
    targets=("$@")
else
    targets=(hostlist operand ssh_config known_hosts secret authorized_keys)
fi

if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

for target in "${targets[@]}"; do
    cargo +nightly fuzz build "$target"
done

mkdir -p target/fuzz-logs
status=0
run_one() {
    local target="$1"
    local log="target/fuzz-logs/$target.log"
    mkdir -p "fuzz/corpus/$target"
    if cargo +nightly fuzz run "$target" "fuzz/corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 >"$log" 2>&1; then
        local runs
        runs=$(grep -Eo 'Done [0-9]+ runs in [0-9]+ second' "$log" | tail -n 1)
        echo "fuzz: $target: ${runs:-finished}, no crash"
    else
        echo "fuzz: $target: CRASH, see $log and fuzz/artifacts/$target/" >&2
        return 1
    fi
}

# Two targets at a time: one per core.
for ((i = 0; i < ${#targets[@]}; i += 2)); do
    pids=()
    for target in "${targets[@]:i:2}"; do
        run_one "$target" &
        pids+=("$!")
    done
    for pid in "${pids[@]}"; do
        wait "$pid" || status=1
    done
done

for target in "${targets[@]}"; do
    cargo +nightly fuzz cmin "$target" "fuzz/corpus/$target" >/dev/null 2>&1 \
        || echo "fuzz: $target: corpus minimisation failed; the corpus is kept as it is" >&2
    echo "fuzz: $target: $(find "fuzz/corpus/$target" -type f | wc -l) inputs in the corpus"
done
exit "$status"
