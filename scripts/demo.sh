#!/usr/bin/env bash
# See smssh work: the README's one command for a fresh Debian machine that has
# the Rust toolchain.
#
#   ./scripts/demo.sh
#
# It builds smssh and smscp, starts a local Secrets Manager (moto_server) and
# three real OpenSSH servers on 127.0.0.2, 127.0.0.3 and 127.0.0.4, stores a
# freshly generated key pair as the secret /dev/ssh, deletes the private key
# file, and then logs in and copies files with nothing but the secret.
# Everything it starts is stopped, and everything it creates outside the
# repository is removed, when it exits; it exits non-zero if any step fails.
# Missing packages (openssh-server, and moto in .venv) are installed first,
# which needs root or a password-less sudo.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO"

die() {
    echo "demo.sh: $*" >&2
    exit 1
}

# Prints its arguments as a shell command that could be pasted back, quoting
# only the words that need it, so the output reads like `set -x`.
quote() {
    local out="" word
    for word in "$@"; do
        if [[ $word =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
            out+=" $word"
        else
            out+=" '${word//\'/\'\\\'\'}'"
        fi
    done
    printf '%s' "${out# }"
}

show() {
    printf '+ %s\n' "$(quote "$@")"
}

step() {
    printf '\n== %s\n' "$*"
}

# Runs a setup command, after printing it; a failure ends the demo.
run() {
    show "$@"
    "$@" || die "failed with exit status $?: $(quote "$@")"
}

# Everything started in the background is recorded here and stopped by the
# EXIT trap, by PID, so that a failed or interrupted demo leaves no server
# running and no temporary files behind.
pids=()
work=""
cleanup() {
    local status=$? pid
    for pid in ${pids[@]+"${pids[@]}"}; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in ${pids[@]+"${pids[@]}"}; do
        wait "$pid" 2>/dev/null || true
    done
    if [ -n "$work" ]; then
        rm -rf "$work"
    fi
    exit "$status"
}
trap cleanup EXIT
# Ctrl-C and kill are turned into an ordinary exit, so that the EXIT trap
# cleans up after them too.
trap 'exit 130' INT
trap 'exit 143' TERM

step "Installing what the demo needs, if anything is missing"
command -v cargo >/dev/null 2>&1 \
    || die "cargo not found: install the Rust toolchain (https://rustup.rs) and retry"
# Only what the demo runs: OpenSSH's server and client, and moto's server (with boto3) in a
# venv at .venv. The test suite's own list (scripts/test-deps.sh) adds cargo-lambda and its
# toolchain, Ansible, pdsh and more, which the demo never uses.
PROG=demo.sh
# shellcheck source=scripts/lib.sh
. "$REPO/scripts/lib.sh"
apt_install_missing openssh-server openssh-client python3 python3-venv ca-certificates
MOTO_SPEC='moto[server]>=5,<6'
if [ -x "$REPO/.venv/bin/moto_server" ] \
    && "$REPO/.venv/bin/python" -c 'import importlib.metadata as m; m.version("moto"); m.version("boto3"); m.version("flask")' >/dev/null 2>&1; then
    echo "moto already installed in .venv"
else
    [ -x "$REPO/.venv/bin/python" ] || run python3 -m venv "$REPO/.venv"
    run "$REPO/.venv/bin/python" -m pip install --quiet --disable-pip-version-check "$MOTO_SPEC"
fi
# /run is usually a tmpfs, so sshd's privilege-separation directory may be
# gone after a reboot even though openssh-server is installed.  Only an sshd
# started as root needs it.
if [ "$(id -u)" -eq 0 ] && [ ! -d /run/sshd ]; then
    run mkdir -p -m 0755 /run/sshd
fi
py=$REPO/.venv/bin/python

step "Building smssh and smscp"
# The same build as scripts/package.sh's and the packaging test's (the rotation function
# included): cargo unifies dependency features over the packages it builds at once, so a
# build of the two binaries alone would compile every dependency a second time.
run cargo build --release --locked -p smssh --bins -p smssh-rotation-lambda
target=${CARGO_TARGET_DIR:-target}
[[ $target = /* ]] || target=$REPO/$target
bin=$target/release
for b in smssh smscp; do
    [ -x "$bin/$b" ] || die "$bin/$b: missing after the build: check the cargo output above"
done

work=$(mktemp -d "${TMPDIR:-/tmp}/smssh-demo.XXXXXX")

# Prints a TCP port that is free on every address given.  The three workers
# share one port so that a single `Port` line in ~/.ssh/config covers them
# all, as on a real cluster.
free_port() {
    "$py" - "$@" <<'EOF'
import socket, sys
for _ in range(100):
    socks = []
    try:
        first = socket.socket()
        socks.append(first)
        first.bind((sys.argv[1], 0))
        port = first.getsockname()[1]
        for addr in sys.argv[2:]:
            s = socket.socket()
            socks.append(s)
            s.bind((addr, port))
    except OSError:
        continue
    finally:
        for s in socks:
            s.close()
    print(port)
    sys.exit(0)
sys.exit("no free port found on " + " ".join(sys.argv[1:]))
EOF
}

# Waits until something accepts connections on host:port; gives up with the
# server's log if the process dies or is not listening after 60 seconds.
wait_listening() {
    local host=$1 port=$2 pid=$3 log=$4 i
    for ((i = 0; i < 600; i++)); do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
            return 0
        fi
        if ! kill -0 "$pid" 2>/dev/null; then
            cat "$log" >&2
            die "the server for $host:$port exited: its log is above"
        fi
        sleep 0.1
    done
    cat "$log" >&2
    die "nothing listens on $host:$port after 60 seconds: the server's log is above"
}

step "Starting a local Secrets Manager (moto_server)"
moto_port=$(free_port 127.0.0.1)
echo "+ $(quote .venv/bin/moto_server -H 127.0.0.1 -p "$moto_port") &"
"$REPO/.venv/bin/moto_server" -H 127.0.0.1 -p "$moto_port" >"$work/moto.log" 2>&1 &
pids+=($!)
wait_listening 127.0.0.1 "$moto_port" "$!" "$work/moto.log"

step "Starting three sshd workers on 127.0.0.2, 127.0.0.3 and 127.0.0.4"
ssh_port=$(free_port 127.0.0.2 127.0.0.3 127.0.0.4)
user=$(id -un)
for n in 2 3 4; do
    dir=$work/worker$n
    mkdir "$dir"
    run ssh-keygen -q -t ed25519 -N '' -C "worker 127.0.0.$n" -f "$dir/host_ed25519_key"
    : >"$dir/authorized_keys"
    mkdir -p "$dir/home/.ssh"
    # Each worker is a complete, separate sshd that touches nothing of the
    # system's own sshd: its own address, host key, PID file and authorized
    # keys.  StrictModes is off because the files live in a temporary
    # directory whose parents sshd would otherwise insist on checking.
    # Only public-key logins are allowed, as on the cluster; PAM is off so
    # that this also works where no PAM service for sshd is set up.
    # SetEnv pins SHLVL for every session, so the remote commands see the
    # same environment however sshd itself was started, and gives each worker
    # its own HOME: the rotation below edits ~/.ssh/authorized_keys, which
    # must be this worker's file, never the home of whoever runs the demo.
    cat >"$dir/sshd_config" <<EOF
ListenAddress 127.0.0.$n:$ssh_port
HostKey $dir/host_ed25519_key
PidFile $dir/sshd.pid
AuthorizedKeysFile $dir/authorized_keys $dir/home/.ssh/authorized_keys
StrictModes no
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
Subsystem sftp /usr/lib/openssh/sftp-server
SetEnv SHLVL=1 HOME=$dir/home
EOF
    # The demo logs in as whoever runs it, which may be root.
    if [ "$(id -u)" -eq 0 ]; then
        echo "PermitRootLogin yes" >>"$dir/sshd_config"
    fi
    /usr/sbin/sshd -t -f "$dir/sshd_config" || die "$dir/sshd_config: rejected by sshd -t (see above)"
    # sshd insists on being started by its absolute path, so that it can
    # re-execute itself for each connection.
    echo "+ $(quote /usr/sbin/sshd -D -e -f "$dir/sshd_config") &"
    /usr/sbin/sshd -D -e -f "$dir/sshd_config" 2>"$dir/sshd.log" &
    pids+=($!)
    wait_listening "127.0.0.$n" "$ssh_port" "$!" "$dir/sshd.log"
done

step "Generating the cluster key pair and storing it as the secret /dev/ssh"
keys=$work/keygen
mkdir -m 0700 "$keys"
run ssh-keygen -q -t ed25519 -N '' -C smssh-demo -f "$keys/id_ed25519"
# The key goes into the account's own ~/.ssh/authorized_keys, the file the rotation manages,
# so that the rotation below can retire it there.
for n in 2 3 4; do
    run cp "$keys/id_ed25519.pub" "$work/worker$n/home/.ssh/authorized_keys"
done
# The JSON layout is the one of the AWS sample rotation Lambda
# (aws-secrets-manager-ssh-key-rotation), which smssh reads by default.
export AWS_ENDPOINT_URL=http://127.0.0.1:$moto_port
export AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1
echo "+ boto3: create_secret(Name='/dev/ssh', SecretString=json.dumps({'PrivateKey': <id_ed25519>, 'PublicKey': <id_ed25519.pub>}))"
"$py" - "$keys/id_ed25519" <<'EOF'
import json, os, sys
import boto3
key = sys.argv[1]
with open(key) as f:
    private = f.read()
with open(key + ".pub") as f:
    public = f.read().strip()
client = boto3.client("secretsmanager", endpoint_url=os.environ["AWS_ENDPOINT_URL"],
                      region_name=os.environ["AWS_REGION"])
arn = client.create_secret(Name="/dev/ssh",
                           SecretString=json.dumps({"PrivateKey": private, "PublicKey": public}))["ARN"]
print("stored", arn)
EOF
# This is the point of smssh: from here on, the private key exists only in
# the secret.  (On a real cluster the rotation Lambda generates the pair, and
# the key never touches the master node's disk at all.)
run rm "$keys/id_ed25519" "$keys/id_ed25519.pub"
run rmdir "$keys"

step "Writing a demo HOME that knows the workers' host keys but has no key"
home=$work/home
mkdir -m 0700 "$home" "$home/.ssh"
for n in 2 3 4; do
    # A server on a port other than 22 is recorded as [host]:port.
    printf '[127.0.0.%s]:%s %s\n' "$n" "$ssh_port" \
        "$(cut -d' ' -f1,2 "$work/worker$n/host_ed25519_key.pub")" >>"$home/.ssh/known_hosts"
done
printf 'Host 127.0.0.*\n    Port %s\n' "$ssh_port" >"$home/.ssh/config"
run ls -A "$home/.ssh"
run cat "$home/.ssh/config"

# The demo commands run with a clean environment, so that neither the
# caller's AWS settings nor their ~/.ssh and ~/.config can change what
# happens.  HOME is set only for them: cargo and pip above need the real one.
demo_env=(env -i
    PATH="$bin:/usr/local/bin:/usr/bin:/bin"
    HOME="$home" USER="$user" LOGNAME="$user" TERM="${TERM:-dumb}" LANG=C.UTF-8
    SMSSH_SECRET_ID=/dev/ssh
    AWS_ENDPOINT_URL="$AWS_ENDPOINT_URL"
    AWS_ACCESS_KEY_ID=demo AWS_SECRET_ACCESS_KEY=demo AWS_REGION=us-east-1
    AWS_EC2_METADATA_DISABLED=true)
# Runs one of the commands the demo is about and returns its exit status.
# The timeout turns a hang into a failure instead of a demo that never ends;
# --foreground keeps the command in the terminal's foreground process group,
# where it may read the terminal and draw a progress bar.
demo() {
    show "$@"
    timeout --foreground 120 "${demo_env[@]}" "$@"
}
# Runs a demo command that must succeed.
must() {
    demo "$@" || die "failed with exit status $?: $(quote "$@")"
}

step "Using smssh and smscp with the key from the secret only"
for (( i = 1; i < ${#demo_env[@]}; i++ )); do
    case ${demo_env[i]} in
        PATH=* | HOME=* | SMSSH_* | AWS_*) echo "+ export $(quote "${demo_env[i]}")" ;;
    esac
done

must smssh 127.0.0.2 'hostname; uptime'
# The single quotes are deliberate: $SSH_CONNECTION is the remote one.
# shellcheck disable=SC2016
for n in 2 3 4; do
    must smssh "127.0.0.$n" 'set -- $SSH_CONNECTION; echo "$(id -un) logged in to $3 port $4"' </dev/null
done

echo "+ echo 'standard input is forwarded' | smssh 127.0.0.2 'tr a-z A-Z'"
echo 'standard input is forwarded' | timeout 120 "${demo_env[@]}" smssh 127.0.0.2 'tr a-z A-Z' \
    || die "failed with exit status $?: smssh 127.0.0.2 'tr a-z A-Z'"

step "Copying a file to a worker and back with smscp"
payload=$work/payload.bin
remote=$work/remote
back=$work/payload.back
echo "+ $(quote head -c 3000000 /dev/urandom) > $(quote "$payload")"
head -c 3000000 /dev/urandom >"$payload"
must smssh 127.0.0.3 mkdir -p "$remote"
must smscp "$payload" "127.0.0.3:$remote/"
must smssh 127.0.0.3 sha256sum "$remote/payload.bin"
must smscp "127.0.0.3:$remote/payload.bin" "$back"
run sha256sum "$payload" "$back"
[ "$(sha256sum <"$payload")" = "$(sha256sum <"$back")" ] \
    || die "$back: differs from $payload after the round trip"
echo "checksums match"
must smscp -r man "127.0.0.4:$remote/"
must smssh 127.0.0.4 ls -l "$remote/man"

step "Exit statuses come back from the remote command"
status=0
demo smssh 127.0.0.4 'echo about to fail >&2; exit 3' </dev/null || status=$?
echo "exit status: $status"
[ "$status" -eq 3 ] || die "smssh returned $status for a remote 'exit 3'"
status=0
demo smssh 127.0.0.4 'kill -TERM $$' </dev/null || status=$?
echo "exit status: $status (128 + 15, the remote shell was killed by SIGTERM)"
[ "$status" -eq 143 ] || die "smssh returned $status for a remote shell killed by SIGTERM"

step "Checking what works before the real work: smssh check"
must smssh check -w '127.0.0.[2-4]'

step "The headline job: one command on every worker, grouped and as JSON"
must smssh -w '127.0.0.[2-4]' --group -- uname -s
# shellcheck disable=SC2016
must smssh -w '127.0.0.[2-4]' --json -- 'set -- $SSH_CONNECTION; echo "$3"'

step "A push to every worker, and a gather from every worker"
must smscp "$payload" "127.0.0.[2-4]:$remote/pushed.bin"
must smssh -w '127.0.0.[2-4]' -- sha256sum "$remote/pushed.bin"
gathered=$work/gathered
mkdir "$gathered"
must smscp "127.0.0.[2-4]:$remote/pushed.bin" "$gathered/"
run find "$gathered" -type f
for n in 2 3 4; do
    cmp -s "$payload" "$gathered/127.0.0.$n/pushed.bin" \
        || die "$gathered/127.0.0.$n/pushed.bin: differs from what was pushed"
done
echo "every gathered copy matches"

step "Rotating the key pair on every worker, with no moment of lock-out"
# The four rotation steps, as the Lambda function runs them: a new ed25519 key
# pair stored as AWSPENDING, its public key added to each worker's managed
# block, a login with it everywhere, then AWSCURRENT moved to it and the
# block reduced to exactly that key. finishSecret also retires, everywhere,
# every key the secret held before, the first one included.
must smssh rotate -w '127.0.0.[2-4]'
must smssh 127.0.0.3 'cat ~/.ssh/authorized_keys'
must smscp -v "$payload" "127.0.0.2:$remote/after-rotation.bin" 2>"$work/rotated.err"
grep -F "GetSecretValue" "$work/rotated.err" >&2 || die "smscp -v did not report its key fetch"

step "The old key is refused: a login with AWSPREVIOUS fails"
status=0
demo smssh --version-stage AWSPREVIOUS 127.0.0.2 'echo this must not run' </dev/null 2>"$work/old-key.err" || status=$?
cat "$work/old-key.err" >&2
echo "exit status: $status"
[ "$status" -eq 255 ] || die "smssh returned $status instead of 255 for the retired key"
grep -qF "permission denied (publickey)" "$work/old-key.err" \
    || die "the refusal of the old key does not say permission denied (publickey)"

step "One worker down: the fan-out names it in its summary"
echo "+ kill the sshd of 127.0.0.3"
kill "${pids[2]}"
wait "${pids[2]}" 2>/dev/null || true
status=0
demo smssh -w '127.0.0.[2-4]' -- true || status=$?
echo "exit status: $status"
[ "$status" -eq 255 ] || die "smssh -w returned $status instead of 255 with a worker down"
status=0
demo smssh check -w '127.0.0.[2-4]' || status=$?
echo "exit status: $status"
[ "$status" -eq 1 ] || die "smssh check returned $status instead of 1 with a worker down"

step "A changed host key is refused"
# Pretend that 127.0.0.4 was replaced by an impostor: known_hosts now holds a
# different key for it than the one the worker presents.
ssh-keygen -q -t ed25519 -N '' -C impostor -f "$work/impostor_key"
expected_fp=$(ssh-keygen -lf "$work/impostor_key.pub" | cut -d' ' -f2)
offered_fp=$(ssh-keygen -lf "$work/worker4/host_ed25519_key.pub" | cut -d' ' -f2)
echo "+ (replace [127.0.0.4]:$ssh_port in ~/.ssh/known_hosts with $expected_fp)"
grep -v "^\[127\.0\.0\.4\]:" "$home/.ssh/known_hosts" >"$work/known_hosts.new"
printf '[127.0.0.4]:%s %s\n' "$ssh_port" "$(cut -d' ' -f1,2 "$work/impostor_key.pub")" \
    >>"$work/known_hosts.new"
mv "$work/known_hosts.new" "$home/.ssh/known_hosts"
status=0
demo smssh 127.0.0.4 'echo this must not run' </dev/null 2>"$work/mismatch.err" || status=$?
cat "$work/mismatch.err" >&2
echo "exit status: $status"
[ "$status" -eq 255 ] || die "smssh returned $status instead of 255 for a changed host key"
if ! grep -qF "$expected_fp" "$work/mismatch.err" || ! grep -qF "$offered_fp" "$work/mismatch.err"; then
    die "the refusal does not show both fingerprints ($expected_fp and $offered_fp)"
fi

step "Done: every step worked, with no private key file anywhere"
