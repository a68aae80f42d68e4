#!/bin/sh
# Builds smscp and smssh from this source tree and installs them, with their
# manual pages and their bash, zsh and fish completions, under a prefix
# (default /usr/local).
#
#   ./install.sh                      # /usr/local/bin, /usr/local/share/man/man1
#   ./install.sh --prefix "$HOME/.local"
#
# Running it again rebuilds and overwrites the installed files, so it is also
# the way to upgrade.

set -eu

prog=install.sh

usage() {
    cat <<EOF
Usage: $prog [--prefix DIR]

Build smscp and smssh (cargo build --release) and install them to DIR/bin,
their manual pages to DIR/share/man/man1, and their completions to
DIR/share/bash-completion/completions, DIR/share/zsh/site-functions and
DIR/share/fish/vendor_completions.d, and links named pdsh, dshbak, pdcp and
rpdcp to them in DIR/lib/smssh/pdsh (put that directory first on PATH to
run pdsh's command lines through smssh and smscp).

Options:
  --prefix DIR   installation prefix (default: /usr/local)
  -h, --help     show this help and exit

Needs the Rust toolchain (cargo). Safe to run again: it overwrites the files
it installed before.
EOF
}

# Every error is one line on stderr saying what failed and what to do.
die() {
    echo "$prog: $*" >&2
    exit 1
}

prefix=/usr/local
while [ $# -gt 0 ]; do
    case $1 in
        --prefix)
            [ $# -ge 2 ] || { echo "$prog: --prefix needs a directory: see $prog --help" >&2; exit 2; }
            prefix=$2
            shift 2
            ;;
        --prefix=*)
            prefix=${1#--prefix=}
            shift
            ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "$prog: unknown argument '$1': see $prog --help" >&2
            exit 2
            ;;
    esac
done
[ -n "$prefix" ] || die "--prefix is empty: give a directory such as /usr/local"

# The build runs from the script's own directory, so a relative prefix has to
# be made absolute first, against the directory the user called us from.
case $prefix in
    /*) ;;
    *) prefix=$(pwd)/$prefix ;;
esac
bindir=$prefix/bin
pdshdir=$prefix/lib/smssh/pdsh
mandir=$prefix/share/man/man1
bashdir=$prefix/share/bash-completion/completions
zshdir=$prefix/share/zsh/site-functions
fishdir=$prefix/share/fish/vendor_completions.d

# cargo is often installed by rustup into ~/.cargo/bin without that directory
# being on PATH for every shell, so look there too before giving up.
if command -v cargo >/dev/null 2>&1; then
    cargo=cargo
elif [ -x "${CARGO_HOME:-${HOME:-/nonexistent}/.cargo}/bin/cargo" ]; then
    cargo=${CARGO_HOME:-$HOME/.cargo}/bin/cargo
else
    die "cargo not found: install the Rust toolchain (https://rustup.rs) and retry"
fi

# Find out before a build of several minutes whether the files can be
# installed at all: the nearest directory of the prefix that already exists
# must be writable.
dir=$bindir
while [ ! -d "$dir" ]; do
    dir=$(dirname "$dir")
done
[ -w "$dir" ] || die "$dir: not writable: run as a user who can write there (e.g. with sudo), or pick another --prefix such as \$HOME/.local"

srcdir=$(cd "$(dirname "$0")" && pwd)
cd "$srcdir"

# --locked makes the build use exactly the dependency versions that were
# tested, and fail instead of silently resolving new ones.
if [ -f Cargo.lock ]; then
    "$cargo" build --release --locked
else
    "$cargo" build --release
fi

# Cargo puts its output under CARGO_TARGET_DIR when that is set.
target=${CARGO_TARGET_DIR:-target}
case $target in
    /*) ;;
    *) target=$srcdir/$target ;;
esac

for bin in smscp smssh; do
    [ -x "$target/release/$bin" ] || die "$target/release/$bin: missing after the build: check the cargo output above"
done
for page in smscp.1 smssh.1; do
    [ -f "man/$page" ] || die "man/$page: missing from the source tree: check out the complete repository"
done

install -d -m 0755 "$bindir" "$mandir"
# install(1) replaces the destination file instead of writing into it, so
# re-running this while an old smssh is in use is safe.
for bin in smscp smssh; do
    install -m 0755 "$target/release/$bin" "$bindir/$bin"
    echo "installed $bindir/$bin"
done
for page in smscp.1 smssh.1; do
    install -m 0644 "man/$page" "$mandir/$page"
    echo "installed $mandir/$page"
done
# pdsh, dshbak, pdcp and rpdcp as links to the binaries (each name runs that tool's command
# line), in a directory of their own, as the packages place them: in DIR/bin they would
# shadow a real pdsh. A link is made beside its final name and renamed over it, so an
# existing one is replaced at once.
install -d -m 0755 "$pdshdir"
for pair in pdsh:smssh dshbak:smssh pdcp:smscp rpdcp:smscp; do
    name=${pair%%:*}
    ln -sfn "../../../bin/${pair#*:}" "$pdshdir/.$name.new"
    mv -f "$pdshdir/.$name.new" "$pdshdir/$name"
    echo "linked $pdshdir/$name -> $bindir/${pair#*:}"
done

# The completion scripts come from the built smssh, so they match its options. Each is
# written to a scratch file first: a failure leaves the installed one as it was.
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
install -d -m 0755 "$bashdir" "$zshdir" "$fishdir"
for program in smscp smssh; do
    for shell in bash zsh fish; do
        case $shell in
            bash) dest=$bashdir/$program ;;
            zsh) dest=$zshdir/_$program ;;
            fish) dest=$fishdir/$program.fish ;;
        esac
        "$target/release/smssh" completions "$shell" "$program" >"$scratch/script" \
            || die "smssh completions $shell $program failed: check the message above"
        install -m 0644 "$scratch/script" "$dest"
        echo "installed $dest"
    done
done

# A prefix outside PATH is a common reason for "command not found" right
# after an install, so say so now.
case :${PATH:-}: in
    *:"$bindir":*) ;;
    *) echo "note: $bindir is not on PATH; add it, or run $bindir/smssh" ;;
esac
