#!/usr/bin/env bash
# Builds the packages an operator installs instead of a Rust toolchain:
#
#   target/packages/smssh_VERSION-1_amd64.deb          (cargo-deb)
#   target/packages/smssh-VERSION-1.x86_64.rpm         (cargo-generate-rpm)
#   target/packages/smssh-rotation-lambda-VERSION.zip  (the rotation function, as Lambda takes it)
#
# Both packages hold smssh and smscp (release, stripped), their man pages, the bash, zsh and
# fish completions (written by the built smssh, so they match its options) and
# /usr/share/doc/smssh/config.toml.example. The zip holds the rotation function's `bootstrap`
# for deploy/template.yaml (see the README, "Install from a package").
#
# The packaging tools go to .tools/ in this repository (cargo install --locked), not to
# ~/.cargo; the zip is written with the Python of .venv (python3 -m venv when absent). A rerun
# reuses both and cargo's incremental release build. Every output is written to a
# scratch directory first and moved into place at the end, so a failed run leaves the previous
# packages or none, never half of a set.
set -euo pipefail

PROG=package.sh
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"

# Exact versions: the package layout depends on how each tool reads its Cargo.toml section.
CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
TOOLS="$REPO/.tools"
VENV="$REPO/.venv"

die() {
    echo "$PROG: $*" >&2
    exit 1
}

command -v cargo >/dev/null 2>&1 || die "cargo not found: install the Rust toolchain (https://rustup.rs) and retry"

# True when the tool in .tools/bin reports the pinned version.
has_tool() {
    [ -x "$TOOLS/bin/$1" ] && "$TOOLS/bin/$1" "${1#cargo-}" --version 2>/dev/null | grep -qF "$2"
}
if ! has_tool cargo-deb "$CARGO_DEB_VERSION" || ! has_tool cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"; then
    echo "$PROG: installing cargo-deb $CARGO_DEB_VERSION and cargo-generate-rpm $CARGO_GENERATE_RPM_VERSION into $TOOLS"
    cargo install --quiet --locked --root "$TOOLS" \
        "cargo-deb@$CARGO_DEB_VERSION" "cargo-generate-rpm@$CARGO_GENERATE_RPM_VERSION" \
        || die "cargo install of the packaging tools failed: see the messages above (network, disk)"
fi
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV" || die "cannot create $VENV: install python3-venv and retry"
fi
# cargo finds its subcommands on PATH.
export PATH="$TOOLS/bin:$PATH"

version=$(cargo pkgid -p smssh | sed 's/.*[#@]//')
[ -n "$version" ] || die "cannot read smssh's version from Cargo.toml"
target=${CARGO_TARGET_DIR:-target}
case $target in
    /*) ;;
    *) target=$REPO/$target ;;
esac
out=$target/packages
scratch=$target/packages.partial
rm -rf "$scratch"
mkdir -p "$scratch"

# One release build of the two binaries and the rotation function: they share every
# dependency, so the function costs one more link, not a second build. (cargo lambda build
# would build everything again with its own profile, LTO and codegen-units = 1: twenty minutes
# more on two cores for the same program.)
cargo build --release --locked -p smssh --bins -p smssh-rotation-lambda

completions=$REPO/target/completions
mkdir -p "$completions"
for program in smssh smscp; do
    "$target/release/smssh" completions bash "$program" >"$completions/$program.bash"
    "$target/release/smssh" completions zsh "$program" >"$completions/_$program"
    "$target/release/smssh" completions fish "$program" >"$completions/$program.fish"
done

cargo deb --no-build -p smssh --output "$scratch/"
# Run from the repository root, cargo generate-rpm packages the root crate, smssh (its -p
# takes a directory, not a package name).
cargo generate-rpm --output "$scratch/"

# The function's zip, laid out as `cargo lambda build --output-format zip` lays it out: one
# executable named `bootstrap` at the root, which the provided.al2023 runtime starts. The
# release binaries need glibc 2.34 at most (objdump -T), which Amazon Linux 2023 has.
"$VENV/bin/python" - "$target/release/smssh-rotation-lambda" \
    "$scratch/smssh-rotation-lambda-$version.zip" <<'PY' || die "cannot write the function's zip"
import sys, zipfile
binary, zip_path = sys.argv[1], sys.argv[2]
entry = zipfile.ZipInfo("bootstrap")
entry.external_attr = (0o100755 << 16)
entry.compress_type = zipfile.ZIP_DEFLATED
with open(binary, "rb") as source, zipfile.ZipFile(zip_path, "w") as archive:
    archive.writestr(entry, source.read())
PY

rm -rf "$out"
mv "$scratch" "$out"
for file in "$out"/*; do
    echo "$PROG: wrote $file"
done
