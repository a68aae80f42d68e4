# shellcheck shell=sh
# smssh: replace one managed block of public keys in an OpenSSH authorized_keys file.
#
# This is the fixed body of the script that smssh runs on a worker, over SSH
# (`sh -s`, script text on stdin) or through SSM Run Command (as root). The
# caller prepends a prologue that assigns four variables with single-quoted
# values that it has already validated:
#
#   SMSSH_USER      account whose file is edited; empty or the invoking user
#                   means "this account, home from $HOME", anything else
#                   needs root and takes the home from getent passwd.
#   SMSSH_BLOCK_ID  the secret's name; the block is delimited by the lines
#                   "# BEGIN smssh-managed <id>" and "# END smssh-managed <id>".
#   SMSSH_FILE      authorized_keys path: empty means .ssh/authorized_keys, a
#                   relative path is relative to the home, an absolute one is
#                   used as is.
#   SMSSH_BLOCK     the desired key lines, "TYPE BASE64 smssh:<id>:<version>",
#                   newline separated; empty removes the block.
#
# Output on success: "updated" or "unchanged", then "keys:" followed by the
# version ids now in the block, each preceded by one space.
# Failure: one line on stderr starting "smssh-authorized-keys: ", status 2 for
# bad input, 3 when the existing file's state is refused, 1 for I/O failures.
# Nothing is written on failure and no temporary file survives it.
#
# Rules this body keeps: it never reads stdin (over SSH, stdin is this very
# script), it never uses eval, and key text only ever reaches a command through
# a quoted "$variable" or the environment.

# The prologue assigns these variables; shellcheck cannot see that.
# shellcheck disable=SC2154

set -eu

# Character classes below must mean ASCII, and awk, tr and cmp must treat the
# file as bytes, whatever locale the worker is configured with.
LC_ALL=C
export LC_ALL

# The path of the temporary file while one exists, so that the exit trap can
# remove it whatever way the script ends.
smssh_tmp=''

# Prints the one error line and exits with status $1. Captured messages from
# other commands may contain newlines; they are folded so that the caller
# always sees exactly one line.
smssh_die() {
    smssh_msg=$(printf '%s' "$2" | tr '\n\r' '  ')
    printf 'smssh-authorized-keys: %s\n' "$smssh_msg" >&2
    exit "$1"
}

smssh_cleanup() {
    if [ -n "$smssh_tmp" ]; then
        rm -f -- "$smssh_tmp"
    fi
}

# Runs inside a command substitution so that a failed write can be reported
# with the shell's own reason.
smssh_write_new() {
    printf '%s' "$smssh_new" >"$1"
}

# Prints field $2 of the first line of the passwd entry $1.
smssh_pw_field() {
    printf '%s\n' "$1" | head -n 1 | cut -d: -f"$2"
}

smssh_main() {
    # A truncated prologue must not be mistaken for empty values.
    [ "${SMSSH_USER+set}" = set ] || smssh_die 2 "SMSSH_USER is not set: the script prologue is incomplete; rerun smssh"
    [ "${SMSSH_BLOCK_ID+set}" = set ] || smssh_die 2 "SMSSH_BLOCK_ID is not set: the script prologue is incomplete; rerun smssh"
    [ "${SMSSH_FILE+set}" = set ] || smssh_die 2 "SMSSH_FILE is not set: the script prologue is incomplete; rerun smssh"
    [ "${SMSSH_BLOCK+set}" = set ] || smssh_die 2 "SMSSH_BLOCK is not set: the script prologue is incomplete; rerun smssh"

    # The block id ends up in marker lines and is compared with key tags, so
    # it is checked again here rather than trusted.
    case $SMSSH_BLOCK_ID in
    '' | *[!A-Za-z0-9/_+=.@-]*)
        smssh_die 2 "block id is empty or has a character outside A-Z a-z 0-9 / _ + = . @ -: use the secret's name"
        ;;
    esac
    [ "${#SMSSH_BLOCK_ID}" -le 512 ] || smssh_die 2 "block id is longer than 512 characters: use the secret's name"

    # The user name is passed to getent; a leading "-" or a ":" must never
    # reach it. One trailing "$" (machine accounts) is allowed.
    if [ -n "$SMSSH_USER" ]; then
        smssh_u=${SMSSH_USER%\$}
        case $smssh_u in
        [a-z_]*) ;;
        *) smssh_die 2 "user name is not [a-z_][a-z0-9_.-]*: pass a valid account name" ;;
        esac
        case $smssh_u in
        *[!a-z0-9_.-]*) smssh_die 2 "user name is not [a-z_][a-z0-9_.-]*: pass a valid account name" ;;
        esac
        [ "${#SMSSH_USER}" -le 32 ] || smssh_die 2 "user name is longer than 32 characters: pass a valid account name"
    fi

    # Every desired line is checked before anything is looked at on disk, so
    # a forged or corrupted block can never be written. The version ids are
    # collected for the final "keys:" line.
    export SMSSH_BLOCK_ID SMSSH_BLOCK
    smssh_rc=0
    smssh_keys=$(awk '
BEGIN {
    id = ENVIRON["SMSSH_BLOCK_ID"]
    block = ENVIRON["SMSSH_BLOCK"]
    n = 0
    if (block != "") n = split(block, line, "\n")
    re = "^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521) [A-Za-z0-9+/]+=?=? smssh:[^ ]+$"
    prefix = "smssh:" id ":"
    ids = ""
    for (i = 1; i <= n; i++) {
        l = line[i]
        if (l !~ re) {
            printf "line %d of SMSSH_BLOCK is not \"TYPE BASE64 smssh:%s:VERSION\" with a supported key type: refusing to write anything; render the block with smssh", i, id
            exit 2
        }
        tag = substr(l, index(l, " smssh:") + 1)
        if (substr(tag, 1, length(prefix)) != prefix) {
            printf "line %d of SMSSH_BLOCK is tagged for another block than %s: refusing to write anything; render the block with smssh", i, id
            exit 2
        }
        v = substr(tag, length(prefix) + 1)
        if (v !~ /^[A-Za-z0-9._-]+$/) {
            printf "line %d of SMSSH_BLOCK has a version id outside A-Z a-z 0-9 . _ -: refusing to write anything; render the block with smssh", i
            exit 2
        }
        if (v in seen) {
            printf "line %d of SMSSH_BLOCK repeats version id %s: refusing to write anything; render the block with smssh", i, v
            exit 2
        }
        seen[v] = 1
        ids = ids " " v
    }
    printf "%s", ids
}' </dev/null) || smssh_rc=$?
    case $smssh_rc in
    0) ;;
    2) smssh_die 2 "$smssh_keys" ;;
    *) smssh_die 1 "awk failed with status $smssh_rc while checking SMSSH_BLOCK: check that awk works on this host" ;;
    esac

    # Locate the home directory.
    smssh_me=$(id -un 2>/dev/null) || smssh_me=''
    smssh_euid=$(id -u)
    smssh_root_mode=no
    smssh_uid=''
    smssh_gid=''
    if [ -z "$SMSSH_USER" ] || [ "$SMSSH_USER" = "$smssh_me" ]; then
        smssh_who=${smssh_me:-uid $smssh_euid}
        smssh_home=${HOME:-}
        if [ -z "$smssh_home" ]; then
            # SSM Run Command can start scripts without HOME; the passwd
            # entry is where a login would have taken it from.
            smssh_pw=$(getent passwd "$smssh_euid" 2>/dev/null) ||
                smssh_die 1 "HOME is not set and getent passwd has no entry for uid $smssh_euid: set HOME or add the account"
            smssh_home=$(smssh_pw_field "$smssh_pw" 6)
        fi
    else
        smssh_who=$SMSSH_USER
        [ "$smssh_euid" = 0 ] ||
            smssh_die 2 "editing the authorized_keys of $SMSSH_USER needs root but this script runs as ${smssh_me:-uid $smssh_euid}: run it as root (SSM) or connect as $SMSSH_USER"
        smssh_pw=$(getent passwd "$SMSSH_USER" 2>/dev/null) ||
            smssh_die 2 "user $SMSSH_USER is unknown on this host (getent passwd has no entry): create the account or fix the user name"
        smssh_uid=$(smssh_pw_field "$smssh_pw" 3)
        smssh_gid=$(smssh_pw_field "$smssh_pw" 4)
        smssh_home=$(smssh_pw_field "$smssh_pw" 6)
        smssh_root_mode=yes
    fi
    case $smssh_home in
    /*) ;;
    *) smssh_die 3 "the home directory of $smssh_who is \"$smssh_home\", not an absolute path: fix HOME or the passwd entry" ;;
    esac
    smssh_home=${smssh_home%/}

    case $SMSSH_FILE in
    '') smssh_file=$smssh_home/.ssh/authorized_keys ;;
    /*) smssh_file=$SMSSH_FILE ;;
    *) smssh_file=$smssh_home/$SMSSH_FILE ;;
    esac
    smssh_name=${smssh_file##*/}
    smssh_dir=${smssh_file%/*}
    [ -n "$smssh_dir" ] || smssh_dir=/
    case $smssh_name in
    '' | . | ..) smssh_die 2 "authorized_keys path $smssh_file names a directory, not a file: fix SMSSH_FILE" ;;
    esac

    # The file is replaced by renaming a new file over it. Over a symbolic
    # link that would replace the link itself, which is never what whoever
    # made the link wanted, so it is refused rather than guessed at.
    if [ -L "$smssh_file" ]; then
        smssh_die 3 "$smssh_file is a symbolic link: smssh replaces the file by renaming and would replace the link; point SMSSH_FILE at the link's target"
    fi
    if [ -e "$smssh_file" ] && [ ! -f "$smssh_file" ]; then
        smssh_die 3 "$smssh_file exists but is not a regular file: remove it or fix SMSSH_FILE"
    fi

    # As root in another user's home, a link or a foreign directory could
    # redirect the write into someone else's file (for example root's own
    # authorized_keys). sshd's StrictModes refuses such a layout anyway.
    if [ "$smssh_root_mode" = yes ]; then
        if [ -L "$smssh_dir" ]; then
            smssh_die 3 "$smssh_dir is a symbolic link: as root, smssh does not follow links in $SMSSH_USER's directories; replace the link with a directory"
        fi
        if [ -e "$smssh_dir" ]; then
            smssh_owner=$(stat -c %u -- "$smssh_dir" 2>&1) || smssh_die 1 "cannot stat $smssh_dir: $smssh_owner"
            if [ "$smssh_owner" != 0 ] && [ "$smssh_owner" != "$smssh_uid" ]; then
                smssh_die 3 "$smssh_dir is owned by uid $smssh_owner, neither root nor $SMSSH_USER: fix its owner (sshd StrictModes refuses it too)"
            fi
            smssh_perms=$(stat -c %A -- "$smssh_dir" 2>&1) || smssh_die 1 "cannot stat $smssh_dir: $smssh_perms"
            case $smssh_perms in
            ????????w?) smssh_die 3 "$smssh_dir is writable by others: chmod o-w it (sshd StrictModes refuses it too)" ;;
            esac
        fi
        if [ -e "$smssh_file" ]; then
            smssh_owner=$(stat -c %u -- "$smssh_file" 2>&1) || smssh_die 1 "cannot stat $smssh_file: $smssh_owner"
            if [ "$smssh_owner" != 0 ] && [ "$smssh_owner" != "$smssh_uid" ]; then
                smssh_die 3 "$smssh_file is owned by uid $smssh_owner, neither root nor $SMSSH_USER: fix its owner (sshd StrictModes refuses it too)"
            fi
        fi
    fi

    smssh_src=/dev/null
    smssh_nonl=0
    if [ -e "$smssh_file" ]; then
        [ -r "$smssh_file" ] || smssh_die 1 "cannot read $smssh_file: permission denied; run as its owner or as root"
        # Shell variables cannot hold NUL bytes, so such a file could not be
        # kept byte for byte; it is not a valid authorized_keys file anyway.
        # Both sides of the pipe only read the file (SC2094 sees a write).
        # shellcheck disable=SC2094
        if ! tr -d '\000' <"$smssh_file" | cmp -s - "$smssh_file"; then
            smssh_die 3 "$smssh_file contains NUL bytes or cannot be read: repair it by hand"
        fi
        # awk cannot tell whether the last line had a newline; a kept last
        # line must be written back exactly as it was.
        if [ -s "$smssh_file" ] && [ -n "$(tail -c 1 -- "$smssh_file")" ]; then
            smssh_nonl=1
        fi
        smssh_src=$smssh_file
    fi

    # Build the new content. The block's position is kept; a missing block is
    # appended. Anything ambiguous (BEGIN without END, END without BEGIN, two
    # blocks, markers with trailing blanks, another block's marker inside this
    # one) is refused with status 3 and its reason on stdout. The trailing "x"
    # protects trailing newlines from the command substitution.
    smssh_rc=0
    smssh_new=$(awk -v nonl="$smssh_nonl" '
function refuse(msg) {
    if (bad == "") bad = msg
    exit 3
}
function emit_block(   i) {
    if (n == 0) return
    out[++m] = begin_m
    for (i = 1; i <= n; i++) out[++m] = want[i]
    out[++m] = end_m
}
BEGIN {
    id = ENVIRON["SMSSH_BLOCK_ID"]
    begin_m = "# BEGIN smssh-managed " id
    end_m = "# END smssh-managed " id
    n = 0
    if (ENVIRON["SMSSH_BLOCK"] != "") n = split(ENVIRON["SMSSH_BLOCK"], want, "\n")
    inside = 0; seen = 0; m = 0; bad = ""; last_idx = 0; last_nr = 0
}
{
    line = $0
    if (line == begin_m) {
        if (inside) refuse(sprintf("line %d is a second BEGIN marker for %s before its END: fix the markers by hand", NR, id))
        if (seen) refuse(sprintf("line %d starts a second block for %s (first at line %d): remove one block by hand", NR, id, begin_nr))
        inside = 1; seen = 1; begin_nr = NR
        emit_block()
        next
    }
    if (line == end_m) {
        if (!inside) refuse(sprintf("line %d is an END marker for %s without a BEGIN: fix the markers by hand", NR, id))
        inside = 0
        next
    }
    t = line
    sub(/[ \t\r]+$/, "", t)
    if (t == begin_m || t == end_m) refuse(sprintf("line %d is a marker for %s with trailing blanks or CR: fix the marker by hand", NR, id))
    if (inside) {
        if (index(line, "# BEGIN smssh-managed ") == 1 || index(line, "# END smssh-managed ") == 1)
            refuse(sprintf("line %d is another block marker inside the block for %s: fix the markers by hand", NR, id))
        next
    }
    out[++m] = line
    last_idx = m; last_nr = NR
}
END {
    if (bad != "") { printf "%s", bad; exit 3 }
    if (inside) { printf "the BEGIN marker for %s at line %d has no END: fix the markers by hand", id, begin_nr; exit 3 }
    if (!seen) emit_block()
    for (i = 1; i <= m; i++) {
        if (i == m && nonl && last_idx == m && last_nr == NR) printf "%s", out[i]
        else printf "%s\n", out[i]
    }
}' <"$smssh_src" 2>/dev/null && printf x) || smssh_rc=$?
    case $smssh_rc in
    0) smssh_new=${smssh_new%x} ;;
    3) smssh_die 3 "$smssh_file: $smssh_new" ;;
    *) smssh_die 1 "cannot read $smssh_file (awk failed with status $smssh_rc): check the file and the disk" ;;
    esac

    # Unchanged content means no write at all: no temporary file, no rename,
    # not even a new .ssh directory, so mtimes and inodes stay as they were.
    if [ -e "$smssh_file" ]; then
        if printf '%s' "$smssh_new" | cmp -s - "$smssh_file"; then
            printf 'unchanged\nkeys:%s\n' "$smssh_keys"
            return 0
        fi
    elif [ -z "$smssh_new" ]; then
        printf 'unchanged\nkeys:%s\n' "$smssh_keys"
        return 0
    fi

    if [ ! -d "$smssh_dir" ]; then
        smssh_err=$(mkdir -m 700 -- "$smssh_dir" 2>&1) ||
            smssh_die 1 "cannot create directory $smssh_dir: $smssh_err"
        if [ "$smssh_root_mode" = yes ]; then
            smssh_err=$(chown -- "$smssh_uid:$smssh_gid" "$smssh_dir" 2>&1) ||
                smssh_die 1 "cannot give $smssh_dir to $SMSSH_USER: $smssh_err"
        fi
    fi

    # The new file's owner and mode: the existing file's, or 600 and the
    # user's for a new file. They are applied before the rename so that the
    # file never exists with the wrong ones.
    if [ -e "$smssh_file" ]; then
        smssh_mode=$(stat -c %a -- "$smssh_file" 2>&1) || smssh_die 1 "cannot stat $smssh_file: $smssh_mode"
        smssh_owner=$(stat -c %u:%g -- "$smssh_file" 2>&1) || smssh_die 1 "cannot stat $smssh_file: $smssh_owner"
    else
        smssh_mode=600
        smssh_owner=''
        if [ "$smssh_root_mode" = yes ]; then
            smssh_owner=$smssh_uid:$smssh_gid
        fi
    fi

    smssh_out=$(mktemp "$smssh_dir/.$smssh_name.smssh-XXXXXX" 2>&1) ||
        smssh_die 1 "cannot create a temporary file in $smssh_dir: $smssh_out"
    smssh_tmp=$smssh_out
    smssh_err=$(smssh_write_new "$smssh_tmp" 2>&1) ||
        smssh_die 1 "cannot write $smssh_tmp: $smssh_err"
    if [ -n "$smssh_owner" ]; then
        smssh_cur=$(stat -c %u:%g -- "$smssh_tmp" 2>&1) || smssh_die 1 "cannot stat $smssh_tmp: $smssh_cur"
        # chown runs before chmod because chown may clear mode bits.
        if [ "$smssh_cur" != "$smssh_owner" ]; then
            smssh_err=$(chown -- "$smssh_owner" "$smssh_tmp" 2>&1) ||
                smssh_die 1 "cannot give the new file the owner $smssh_owner of $smssh_file: $smssh_err"
        fi
    fi
    smssh_err=$(chmod "$smssh_mode" "$smssh_tmp" 2>&1) ||
        smssh_die 1 "cannot give the new file the mode $smssh_mode of $smssh_file: $smssh_err"
    smssh_err=$(mv -f -- "$smssh_tmp" "$smssh_file" 2>&1) ||
        smssh_die 1 "cannot rename $smssh_tmp to $smssh_file: $smssh_err"
    smssh_tmp=''
    printf 'updated\nkeys:%s\n' "$smssh_keys"
}

trap smssh_cleanup EXIT
trap 'smssh_die 1 "interrupted by a signal: run the rotation again to finish"' HUP INT TERM

# The whole body is one function call with stdin from /dev/null: over SSH the
# shell has read the complete script before anything runs (a cut connection
# cannot run half of it), and no command can swallow the script text.
smssh_main </dev/null
