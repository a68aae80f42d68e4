#!/usr/bin/env bash
# Runs every test: installs the test dependencies, builds every target once,
# then runs the unit and integration tests. The integration tests start the
# binaries that this build produced, plus real sshd and moto processes.
# Extra arguments go to `cargo test`, e.g. `./scripts/test.sh -- --test-threads=1`.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

bash "$REPO/scripts/test-deps.sh"

# The harness looks here first, so the tests never pick up another moto
# that happens to be on PATH.
export SMSSH_TEST_MOTO="$REPO/.venv/bin/moto_server"

# The whole workspace: tests/lambda_runtime.rs runs the rotation function's binary, which
# belongs to the lambda/ member, so it must be built before the tests start.
cargo build --workspace --all-targets
# Benchmarks are built above (so they cannot rot) but not run: they are reports, not tests,
# and need the peers that scripts/bench-deps.sh installs.
cargo test --workspace --lib --bins --tests --no-fail-fast "$@"
