#!/usr/bin/env bash
# Installs the peers that `cargo bench --bench fanout` and `--bench scale` compare smssh
# against, on top of the test dependencies: pdsh/pdcp, pssh (parallel-ssh/parallel-scp),
# ClusterShell (clush), GNU time (peak memory, CPU of a tool's process tree), a venv at
# .venv-bench with ansible-core and matplotlib (the charts), and bssh (crates.io, a russh-based
# parallel ssh) built with the nightly toolchain into .bench-tools/ (bssh 3.1 needs a newer
# rustc than the stable one; the build takes minutes on 2 cores).
# Idempotent: what is already installed is left alone.
#
#   ./scripts/bench-deps.sh && SMSSH_TEST_MOTO=$PWD/.venv/bin/moto_server cargo bench --bench fanout
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv-bench"
APT_PACKAGES=(pdsh pssh clustershell python3-venv time)
PIP_PACKAGES=(ansible-core matplotlib)
BSSH_VERSION=3.1.0
TOOLS_ROOT="$REPO/.bench-tools"

export DEBIAN_FRONTEND=noninteractive
log() { echo "bench-deps: $*"; }

PROG=bench-deps
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"

# openssh-server, the moto venv (.venv), procps.
"$REPO/scripts/test-deps.sh"

apt_install_missing "${APT_PACKAGES[@]}"

for tool in pdsh pdcp parallel-ssh parallel-scp clush /usr/bin/time; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "bench-deps: $tool is still missing after installing ${APT_PACKAGES[*]}" >&2
        exit 1
    fi
done

if [ -x "$VENV/bin/ansible" ] \
    && "$VENV/bin/python" -c 'import importlib.metadata as m; m.version("ansible-core"); m.version("matplotlib")' >/dev/null 2>&1; then
    log "ansible-core and matplotlib already installed in $VENV"
else
    log "creating $VENV with ${PIP_PACKAGES[*]}"
    python3 -m venv --clear "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
    "$VENV/bin/python" -c 'import ansible, matplotlib' \
        || { echo "bench-deps: the $VENV packages were installed but cannot be imported" >&2; exit 1; }
fi

if [ -x "$TOOLS_ROOT/bin/bssh" ] \
    && "$TOOLS_ROOT/bin/bssh" --version 2>&1 | grep -q "$BSSH_VERSION"; then
    log "bssh $BSSH_VERSION already installed in $TOOLS_ROOT"
else
    if ! cargo +nightly --version >/dev/null 2>&1; then
        echo "bench-deps: bssh $BSSH_VERSION needs the nightly toolchain (rustup toolchain install nightly)" >&2
        exit 1
    fi
    log "building bssh $BSSH_VERSION with nightly into $TOOLS_ROOT (several minutes)"
    nice cargo +nightly install bssh --version "$BSSH_VERSION" --locked --root "$TOOLS_ROOT"
    [ -x "$TOOLS_ROOT/bin/bssh" ] \
        || { echo "bench-deps: bssh was built but $TOOLS_ROOT/bin/bssh is missing" >&2; exit 1; }
fi

# 128 workers x (listener + sessions) plus 128 client sockets per tool need descriptors; the
# bench raises its own soft limit up to the hard one, so only a low hard limit is a problem.
hard="$(ulimit -Hn)"
if [ "$hard" != unlimited ] && [ "$hard" -lt 8192 ]; then
    log "warning: the hard limit on open files is $hard; 128 workers want 8192 (ulimit -Hn)"
fi
log "ready (ansible: $VENV/bin/ansible, python: $VENV/bin/python, bssh: $TOOLS_ROOT/bin/bssh)"
