#!/usr/bin/env bash
# Installs everything the integration tests need on a fresh Debian machine that
# already has the Rust toolchain: OpenSSH (the tests start real sshd workers and
# compare against the real ssh/scp), procps (the harness pauses and stops
# workers with kill and pkill), pdsh, and moto's server in a venv at .venv.
# The same venv gets cfn-lint, which CI runs on deploy/template.yaml, and
# cargo-lambda, whose local Lambda runtime the tests start the rotation
# function under.
# It is idempotent: what is already installed is left alone, so running it
# before every test run costs well under a second.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$REPO/.venv"
# A bounded range keeps CI reproducible if moto ever ships a breaking 6.x.
MOTO_SPEC='moto[server]>=5,<6'
# Bounded for the same reason. cargo-lambda's PyPI wheel carries the binary and
# pulls ziglang, which it uses to link.
CFN_LINT_SPEC='cfn-lint>=1,<2'
CARGO_LAMBDA_SPEC='cargo-lambda>=1.9,<2'
# Ansible's ssh connection plugin is one of the tools tests/tools.rs runs over smssh.
ANSIBLE_SPEC='ansible-core>=2.15,<3'
# ssh-audit grades smssh's key-exchange offer in tests/algorithms.rs (ssh-audit -c).
SSH_AUDIT_SPEC='ssh-audit>=3,<4'
# time: the hostile-server tests measure smscp's and smssh's peak memory with GNU time; tmux:
# the host-key question test types on a real terminal; util-linux: setpriv, runuser and
# prlimit, which the authorized_keys script and the memory-locking tests use; rsync, git and
# clustershell: tests/tools.rs runs them (and pdsh, sftp, Ansible) with smssh as their ssh.
# curl and wget: the workers of tests/copy_via_s3.rs fetch smscp's S3 objects with them, and
# check them with openssl (sha256sum, from coreutils, where it is missing).
# rpm and man-db: tests/packaging.rs reads the .rpm with rpm -qlp/-qip, and the man page of
# the .deb it installs with man.
APT_PACKAGES=(openssh-server openssh-client python3 python3-venv procps pdsh ca-certificates time tmux util-linux rsync git clustershell curl wget openssl rpm man-db)

export DEBIAN_FRONTEND=noninteractive

log() { echo "test-deps: $*"; }

PROG=test-deps
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"

apt_install_missing "${APT_PACKAGES[@]}"

for tool in /usr/sbin/sshd /usr/lib/openssh/sftp-server ssh ssh-keygen scp sftp kill pkill /usr/bin/time tmux setpriv runuser prlimit unshare nsenter rsync git pdsh clush curl wget openssl rpm man; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "test-deps: $tool is still missing after installing ${APT_PACKAGES[*]}" >&2
        exit 1
    fi
done

# sshd refuses to start without its privilege-separation directory, and /run
# is often a fresh tmpfs on which the openssh-server package never created it.
as_root mkdir -p /run/sshd
as_root chmod 0755 /run/sshd

# moto is checked through the venv's own interpreter, which also catches a
# venv whose base Python has since disappeared; reading the package metadata
# is much faster than importing moto.
if [ -x "$VENV/bin/moto_server" ] \
    && "$VENV/bin/python" -c 'import importlib.metadata as m; m.version("moto"); m.version("flask"); m.version("flask-cors")' >/dev/null 2>&1; then
    log "moto already installed in $VENV"
else
    log "creating $VENV with moto"
    python3 -m venv --clear "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$MOTO_SPEC"
    "$VENV/bin/python" -c 'import moto.server, moto.secretsmanager' \
        || { echo "test-deps: moto was installed but cannot be imported" >&2; exit 1; }
fi

# True when the venv has the command and its distribution has the major version
# the spec pins; metadata again, because running either tool costs far more.
venv_has() {
    local cmd="$1" dist="$2" major="$3"
    [ -x "$VENV/bin/$cmd" ] && "$VENV/bin/python" -c \
        'import importlib.metadata as m, sys; sys.exit(m.version(sys.argv[1]).split(".")[0] != sys.argv[2])' \
        "$dist" "$major" >/dev/null 2>&1
}

missing=()
venv_has cfn-lint cfn-lint 1 || missing+=("$CFN_LINT_SPEC")
venv_has cargo-lambda cargo-lambda 1 || missing+=("$CARGO_LAMBDA_SPEC")
venv_has ansible ansible-core 2 || missing+=("$ANSIBLE_SPEC")
venv_has ssh-audit ssh-audit 3 || missing+=("$SSH_AUDIT_SPEC")
if [ "${#missing[@]}" -eq 0 ]; then
    log "cfn-lint, cargo-lambda and ansible-core already installed in $VENV"
else
    log "installing ${missing[*]} into $VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${missing[@]}"
    # Off PATH, cargo cannot find the subcommand, so the binary is called directly
    # and is given the subcommand name itself: `cargo-lambda lambda ...`.
    "$VENV/bin/cfn-lint" --version >/dev/null \
        || { echo "test-deps: cfn-lint was installed but does not run" >&2; exit 1; }
    "$VENV/bin/cargo-lambda" lambda --version >/dev/null \
        || { echo "test-deps: cargo-lambda was installed but does not run" >&2; exit 1; }
fi
log "ready (moto_server: $VENV/bin/moto_server, cfn-lint: $VENV/bin/cfn-lint, cargo-lambda: $VENV/bin/cargo-lambda, ansible: $VENV/bin/ansible)"
