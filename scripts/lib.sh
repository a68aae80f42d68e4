# Shell helpers shared by the dependency installers (test-deps.sh, bench-deps.sh). Sourced,
# not run. The sourcing script sets PROG (its name, for messages) before calling these.

# Root runs apt-get directly; anyone else needs a password-less sudo, because CI has no
# terminal to type a password into.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -n env DEBIAN_FRONTEND=noninteractive "$@"
    else
        echo "$PROG: must run as root (or with sudo available) to run: $*" >&2
        exit 1
    fi
}

# Installs, with one apt-get update, those of the given Debian packages that are missing;
# when all are present it touches no package list, so a rerun costs well under a second.
apt_install_missing() {
    local missing=() pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed'; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "$PROG: installing ${missing[*]}"
        DEBIAN_FRONTEND=noninteractive as_root apt-get update
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y --no-install-recommends "${missing[@]}"
    else
        echo "$PROG: apt packages already installed"
    fi
}
