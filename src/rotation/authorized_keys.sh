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
#   SMSSH_RETIRE    keys to retire, "TYPE BASE64", newline separated: every
#                   line outside the managed blocks whose key is one of them
#                   is removed, whatever its options or comment. These are
#                   the keys the secret held and no longer wants, so that a
#                   key installed before any rotation (user data, an image,
#                   by hand) stops working too.
#   SMSSH_WATCH     one key, "TYPE BASE64", or empty: the lines outside this
#                   block that hold it are counted (the operator's bootstrap
#                   key, kept on purpose, so that the summary can say where it
#                   still logs in).
#
# Output on success: "updated" or "unchanged", then "retired:R watched:W"
# (lines removed for SMSSH_RETIRE, lines holding SMSSH_WATCH), then "keys:"
# followed by the version ids now in the block, each preceded by one space.
# Lines inside another secret's block are never removed: they belong to that
# secret's rotation.
# Failure: one line on stderr starting "smssh-authorized-keys: ", status 2 for
# bad input, 3 when the existing file's state is refused, 1 for I/O failures.
# The file is not changed on failure and no temporary file survives it.
#
# The script has two parts. The first checks the inputs and finds the file;
# it opens nothing in the account's home. The second, the edit, is a separate sh script kept in a
# here-document below, so that the first part can start it as another
# account. When root edits another account's file, every path on the way is
# one that account controls: it can rename its .ssh or anything in it, and
# inotify tells it the moment to do so, so root would write, chown or chmod
# wherever a link planted between two of its steps pointed. Root therefore
# never acts on those paths itself: it runs the edit as the account, through
# setpriv or else runuser (util-linux, present on Amazon Linux, Debian and
# Ubuntu), and refuses if neither exists. In root mode the file, and its
# directory where it exists, must therefore belong to the account, and a file
# the account cannot write (an absolute SMSSH_FILE in a directory of root's)
# cannot be edited; running the script as its owner can.
#
# An edit that finds the file already right writes nothing and takes no lock.
# Otherwise it locks the file before reading it again and writing it, so that
# two edits of one file (two secrets sharing it, a reconcile overlapping a
# rotation, workers sharing an NFS home) never lose one another's block. The
# lock is flock(1) on an empty file kept beside the file, ".<name>.smssh-lock",
# which NFS locks across hosts and which the edit creates the first time it
# writes; where flock is missing or cannot lock, it is a directory
# ".<name>.smssh-lock.d", waited for 30 seconds at most. Hosts sharing one
# home must use the same kind, which they do when all have util-linux. The
# new content goes to a temporary file that is flushed to disk and renamed
# over the old file, and the directory is flushed after the rename, so that
# "updated" means the new file survives a crash. Workers sharing a home may
# create a missing .ssh at the same moment; each accepts the other's.
#
# Rules this body keeps: it never reads stdin (over SSH, stdin is this very
# script; the edit's stdin is its own here-document), it never uses eval, and
# key text only ever reaches a command through a quoted "$variable" or the
# environment.

# The prologue assigns these variables; shellcheck cannot see that.
# shellcheck disable=SC2154

set -eu

# Character classes below must mean ASCII, and awk, tr and cmp must treat the
# file as bytes, whatever locale the worker is configured with.
LC_ALL=C
export LC_ALL

# Prints the one error line and exits with status $1. Captured messages from
# other commands may contain newlines; they are folded so that the caller
# always sees exactly one line.
smssh_die() {
    smssh_msg=$(printf '%s' "$2" | tr '\n\r' '  ')
    printf 'smssh-authorized-keys: %s\n' "$smssh_msg" >&2
    exit "$1"
}

# Prints field $2 of the first line of the passwd entry $1.
smssh_pw_field() {
    printf '%s\n' "$1" | head -n 1 | cut -d: -f"$2"
}

# Runs the edit with sh, prefixed by the command in "$@" that switches to the
# account (nothing when the script already runs as it). The edit's arguments
# are the file, the account's name for messages, and "yes" when it runs for
# root as the account; the block arrives in the environment. Everything
# between the here-document markers is the edit's own script.
smssh_edit() {
    "$@" sh -s -- "$smssh_file" "$smssh_who" "$smssh_root_mode" <<'SMSSH_EDIT'
set -eu
# The edit is a script of its own: it sees nothing the first part defined
# except the environment, and repeats what it needs.
LC_ALL=C
export LC_ALL
# The lock file it creates is the account's alone, like the file.
umask 077

smssh_nl='
'
smssh_counts=''
smssh_file=$1
smssh_who=$2
smssh_for_root=$3
smssh_name=${smssh_file##*/}
smssh_dir=${smssh_file%/*}
[ -n "$smssh_dir" ] || smssh_dir=/

# The temporary file and the lock directory while they exist, so that the
# exit trap can remove them whatever way the edit ends.
smssh_tmp=''
smssh_lockdir=''

smssh_die() {
    smssh_msg=$(printf '%s' "$2" | tr '\n\r' '  ')
    printf 'smssh-authorized-keys: %s\n' "$smssh_msg" >&2
    exit "$1"
}

smssh_cleanup() {
    if [ -n "$smssh_tmp" ]; then
        rm -f -- "$smssh_tmp"
    fi
    # The lock directory can only be gone if someone removed it by hand,
    # which changes nothing for this edit.
    if [ -n "$smssh_lockdir" ]; then
        rmdir -- "$smssh_lockdir" 2>/dev/null || :
    fi
}

# Runs inside a command substitution so that a failed write can be reported
# with the shell's own reason.
smssh_write_new() {
    printf '%s' "$smssh_new" >"$1"
}

# Flushes the file or directory $1 to disk. coreutils sync before 8.24 (and
# busybox's) ignores its arguments and flushes every file system, which is
# slower but just as durable.
smssh_flush() {
    smssh_err=$(sync -- "$1" 2>&1) || smssh_die 1 "cannot flush $1 to disk: $smssh_err"
}

# Checks the file and its directory, reads the file and builds its new
# content in smssh_new. It runs once without the lock, for the common case
# where nothing changes, and again under the lock before writing, because
# another edit may have replaced the file in between.
smssh_read() {
    # The file is replaced by renaming a new file over it. Over a symbolic
    # link that would replace the link itself, which is never what whoever
    # made the link wanted, so it is refused rather than guessed at.
    if [ -L "$smssh_file" ]; then
        smssh_die 3 "$smssh_file is a symbolic link: smssh replaces the file by renaming and would replace the link; point SMSSH_FILE at the link's target"
    fi
    if [ -e "$smssh_file" ] && [ ! -f "$smssh_file" ]; then
        smssh_die 3 "$smssh_file exists but is not a regular file: remove it or fix SMSSH_FILE"
    fi

    # When root asked for the edit, it runs as the account, and these checks
    # no longer protect root. They refuse, with a reason rather than a
    # permission error, what sshd's StrictModes refuses too and what the
    # account could not edit as it is: a file or directory of root's, whose
    # owner the account could not keep. A link out of the home usually
    # points at such a place.
    if [ "$smssh_for_root" = yes ]; then
        smssh_uid=$(id -u)
        if [ -L "$smssh_dir" ]; then
            smssh_die 3 "$smssh_dir is a symbolic link: smssh does not follow links in $smssh_who's directories when root edits them; replace the link with a directory"
        fi
        if [ -e "$smssh_dir" ]; then
            smssh_owner=$(stat -c %u -- "$smssh_dir" 2>&1) || smssh_die 1 "cannot stat $smssh_dir: $smssh_owner"
            if [ "$smssh_owner" != "$smssh_uid" ]; then
                smssh_die 3 "$smssh_dir is owned by uid $smssh_owner, not $smssh_who: as root, smssh edits $smssh_who's file as $smssh_who; give the directory to $smssh_who"
            fi
            smssh_perms=$(stat -c %A -- "$smssh_dir" 2>&1) || smssh_die 1 "cannot stat $smssh_dir: $smssh_perms"
            case $smssh_perms in
            ????????w?) smssh_die 3 "$smssh_dir is writable by others: chmod o-w it (sshd StrictModes refuses it too)" ;;
            esac
        fi
        if [ -e "$smssh_file" ]; then
            smssh_owner=$(stat -c %u -- "$smssh_file" 2>&1) || smssh_die 1 "cannot stat $smssh_file: $smssh_owner"
            if [ "$smssh_owner" != "$smssh_uid" ]; then
                smssh_die 3 "$smssh_file is owned by uid $smssh_owner, not $smssh_who: as root, smssh edits $smssh_who's file as $smssh_who, who could not keep that owner; give the file to $smssh_who"
            fi
        fi
    fi

    smssh_src=/dev/null
    smssh_nonl=0
    if [ -e "$smssh_file" ]; then
        [ -r "$smssh_file" ] || smssh_die 1 "cannot read $smssh_file: permission denied; run as its owner or as root"
        # Shell variables cannot hold NUL bytes, so such a file could not be
        # kept byte for byte; it is not a valid authorized_keys file anyway.
        # The file is read once for this: read twice without the lock, it
        # could be two different files.
        smssh_nuls=$(tr -dc '\000' <"$smssh_file" | wc -c)
        if [ "$smssh_nuls" -ne 0 ]; then
            smssh_die 3 "$smssh_file contains NUL bytes: repair it by hand"
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
# The key of an authorized_keys line, "TYPE BASE64", or "" for a comment or
# a blank line. As sshd reads the line: a key type first, or else options up
# to the first blank outside double quotes (where \" does not end a quote),
# then the key.
function keyof(l,   i, c, q, f, n) {
    sub(/^[ \t]+/, "", l)
    if (l == "" || substr(l, 1, 1) == "#") return ""
    n = split(l, f, /[ \t]+/)
    if (f[1] ~ keytype) return (n >= 2 ? f[1] " " f[2] : "")
    q = 0
    for (i = 1; i <= length(l); i++) {
        c = substr(l, i, 1)
        if (c == "\\" && substr(l, i + 1, 1) == "\"") { i++; continue }
        if (c == "\"") { q = !q; continue }
        if (!q && (c == " " || c == "\t")) break
    }
    l = substr(l, i)
    sub(/^[ \t]+/, "", l)
    n = split(l, f, /[ \t]+/)
    return (n >= 2 ? f[1] " " f[2] : "")
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
    keytype = "^(ssh-(ed25519|rsa|dss)|ecdsa-sha2-nistp(256|384|521)|sk-(ssh-ed25519|ecdsa-sha2-nistp256)@openssh[.]com)(-cert-v01@openssh[.]com)?$"
    k = 0
    if (ENVIRON["SMSSH_RETIRE"] != "") k = split(ENVIRON["SMSSH_RETIRE"], r, "\n")
    for (i = 1; i <= k; i++) retire[r[i]] = 1
    watch = ENVIRON["SMSSH_WATCH"]
    retired = 0; watched = 0; foreign = 0
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
    # The block of another secret holds the keys of that secret, which its
    # own rotation manages; only the lines outside every block are retired.
    if (index(line, "# BEGIN smssh-managed ") == 1) foreign = 1
    else if (index(line, "# END smssh-managed ") == 1) foreign = 0
    else {
        key = keyof(line)
        if (key != "" && key == watch) watched++
        if (key != "" && !foreign && (key in retire)) { retired++; next }
    }
    out[++m] = line
    last_idx = m; last_nr = NR
}
END {
    if (bad != "") { printf "%s", bad; exit 3 }
    if (inside) { printf "the BEGIN marker for %s at line %d has no END: fix the markers by hand", id, begin_nr; exit 3 }
    printf "retired:%d watched:%d\n", retired, watched
    if (!seen) emit_block()
    for (i = 1; i <= m; i++) {
        if (i == m && nonl && last_idx == m && last_nr == NR) printf "%s", out[i]
        else printf "%s\n", out[i]
    }
}' <"$smssh_src" 2>/dev/null && printf x) || smssh_rc=$?
    case $smssh_rc in
    0)
        # The first line is awk's count of retired and watched lines; the
        # file's new content follows it.
        smssh_new=${smssh_new%x}
        smssh_counts=${smssh_new%%"$smssh_nl"*}
        smssh_new=${smssh_new#*"$smssh_nl"}
        ;;
    3) smssh_die 3 "$smssh_file: $smssh_new" ;;
    *) smssh_die 1 "cannot read $smssh_file (awk failed with status $smssh_rc): check the file and the disk" ;;
    esac
}

# Succeeds when the file already holds smssh_new. A missing file and an
# empty new content are the same: nothing is written, not even a new
# directory, so mtimes and inodes stay as they were.
smssh_unchanged() {
    if [ -e "$smssh_file" ]; then
        printf '%s' "$smssh_new" | cmp -s - "$smssh_file"
    else
        [ -z "$smssh_new" ]
    fi
}

# Takes the lock on the file for as long as the edit runs. flock holds it on
# descriptor 9, which the edit keeps open until it exits; status 1 is
# flock's timeout, anything else (127 when it is missing, an error from a
# file system that cannot lock) selects the lock directory instead.
smssh_lock() {
    smssh_lockfile=$smssh_dir/.$smssh_name.smssh-lock
    { command exec 9>>"$smssh_lockfile"; } 2>/dev/null ||
        smssh_die 1 "cannot open the lock file $smssh_lockfile for writing: check the owner and mode of $smssh_dir"
    smssh_rc=0
    flock -w 30 9 2>/dev/null || smssh_rc=$?
    case $smssh_rc in
    0) return 0 ;;
    1) smssh_die 1 "another edit of $smssh_file held its lock for 30 seconds: run the rotation again once it is done" ;;
    esac
    # mkdir is atomic, on NFS too. Its failures all count as "held": the
    # directory is writable (the lock file was just opened in it), and one
    # that vanished between mkdir and a look at it was released meanwhile.
    smssh_waited=0
    until smssh_err=$(mkdir -m 700 -- "$smssh_lockfile.d" 2>&1); do
        [ "$smssh_waited" -lt 30 ] ||
            smssh_die 1 "could not create the lock directory $smssh_lockfile.d for 30 seconds ($smssh_err): another edit of $smssh_file is running, or one was killed; remove the directory if none is running"
        sleep 1
        smssh_waited=$((smssh_waited + 1))
    done
    smssh_lockdir=$smssh_lockfile.d
}

smssh_edit_main() {
    smssh_read
    if smssh_unchanged; then
        printf 'unchanged\n%s\n' "$smssh_counts"
        return 0
    fi

    if [ ! -d "$smssh_dir" ]; then
        # Workers sharing a home directory may create it at the same moment;
        # losing that race is as good as winning it.
        smssh_err=$(mkdir -m 700 -- "$smssh_dir" 2>&1) || [ -d "$smssh_dir" ] ||
            smssh_die 1 "cannot create directory $smssh_dir: $smssh_err"
        # A crash must not lose the new directory, with the file in it,
        # after the edit reported "updated".
        smssh_parent=${smssh_dir%/*}
        smssh_flush "${smssh_parent:-/}"
    fi

    smssh_lock
    smssh_read
    if smssh_unchanged; then
        printf 'unchanged\n%s\n' "$smssh_counts"
        return 0
    fi

    # The new file's owner and mode: the existing file's, or 600 and the
    # account's own for a new file. They are applied before the rename so
    # that the file never exists with the wrong ones.
    smssh_mode=600
    smssh_owner=''
    if [ -e "$smssh_file" ]; then
        smssh_mode=$(stat -c %a -- "$smssh_file" 2>&1) || smssh_die 1 "cannot stat $smssh_file: $smssh_mode"
        smssh_owner=$(stat -c %u:%g -- "$smssh_file" 2>&1) || smssh_die 1 "cannot stat $smssh_file: $smssh_owner"
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
    # Flushed before the rename, so that a crash cannot leave the name
    # pointing at a file whose content never reached the disk.
    smssh_flush "$smssh_tmp"
    smssh_err=$(mv -f -- "$smssh_tmp" "$smssh_file" 2>&1) ||
        smssh_die 1 "cannot rename $smssh_tmp to $smssh_file: $smssh_err"
    smssh_tmp=''
    # And the directory after it, so that the rename itself is on disk before
    # the edit reports it.
    smssh_flush "$smssh_dir"
    printf 'updated\n%s\n' "$smssh_counts"
}

trap smssh_cleanup EXIT
trap 'smssh_die 1 "interrupted by a signal: run the rotation again to finish"' HUP INT TERM
smssh_edit_main </dev/null
SMSSH_EDIT
}

smssh_main() {
    # A truncated prologue must not be mistaken for empty values.
    [ "${SMSSH_USER+set}" = set ] || smssh_die 2 "SMSSH_USER is not set: the script prologue is incomplete; rerun smssh"
    [ "${SMSSH_BLOCK_ID+set}" = set ] || smssh_die 2 "SMSSH_BLOCK_ID is not set: the script prologue is incomplete; rerun smssh"
    [ "${SMSSH_FILE+set}" = set ] || smssh_die 2 "SMSSH_FILE is not set: the script prologue is incomplete; rerun smssh"
    [ "${SMSSH_BLOCK+set}" = set ] || smssh_die 2 "SMSSH_BLOCK is not set: the script prologue is incomplete; rerun smssh"
    [ "${SMSSH_RETIRE+set}" = set ] || smssh_die 2 "SMSSH_RETIRE is not set: the script prologue is incomplete; rerun smssh"
    [ "${SMSSH_WATCH+set}" = set ] || smssh_die 2 "SMSSH_WATCH is not set: the script prologue is incomplete; rerun smssh"

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

    # The keys to retire or count are compared with what the file holds, so
    # only plain "TYPE BASE64" lines are accepted.
    export SMSSH_RETIRE SMSSH_WATCH
    smssh_rc=0
    smssh_err=$(awk '
BEGIN {
    re = "^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521) [A-Za-z0-9+/]+=?=?$"
    n = 0
    if (ENVIRON["SMSSH_RETIRE"] != "") n = split(ENVIRON["SMSSH_RETIRE"], line, "\n")
    for (i = 1; i <= n; i++) {
        if (line[i] !~ re) {
            printf "line %d of SMSSH_RETIRE is not \"TYPE BASE64\" with a supported key type: refusing to write anything; render the script with smssh", i
            exit 2
        }
    }
    w = ENVIRON["SMSSH_WATCH"]
    if (w != "" && w !~ re) {
        printf "SMSSH_WATCH is not \"TYPE BASE64\" with a supported key type: refusing to write anything; render the script with smssh"
        exit 2
    }
}' </dev/null) || smssh_rc=$?
    case $smssh_rc in
    0) ;;
    2) smssh_die 2 "$smssh_err" ;;
    *) smssh_die 1 "awk failed with status $smssh_rc while checking SMSSH_RETIRE: check that awk works on this host" ;;
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
    case $smssh_name in
    '' | . | ..) smssh_die 2 "authorized_keys path $smssh_file names a directory, not a file: fix SMSSH_FILE" ;;
    esac

    # Root runs the edit as the account whose file it is; see the top of
    # this file. setpriv changes nothing else (no PAM session, no login
    # environment); runuser is the fallback on hosts without it.
    if [ "$smssh_root_mode" = yes ]; then
        if command -v setpriv >/dev/null 2>&1; then
            set -- setpriv --reuid="$smssh_uid" --regid="$smssh_gid" --init-groups --
        elif command -v runuser >/dev/null 2>&1; then
            set -- runuser -u "$SMSSH_USER" --
        else
            smssh_die 1 "neither setpriv nor runuser is installed: as root, smssh edits $SMSSH_USER's file as $SMSSH_USER and needs one of them; install util-linux"
        fi
    else
        set --
    fi

    # The account may not be allowed into the caller's working directory
    # (SSM runs scripts from a directory only root can enter), and bash
    # complains on stderr when it starts in such a place. Every path used
    # from here on is absolute.
    cd /

    # The edit prints "updated" or "unchanged" straight to stdout; its
    # stderr is captured so that a failure of setpriv or runuser, which do
    # not speak this script's language, still ends in one line.
    smssh_rc=0
    { smssh_err=$(smssh_edit "$@" 2>&1 >&3); } 3>&1 || smssh_rc=$?
    case $smssh_rc:$smssh_err in
    0:*)
        if [ -n "$smssh_err" ]; then
            printf '%s\n' "$smssh_err" >&2
        fi
        ;;
    [123]:"smssh-authorized-keys: "*) smssh_die "$smssh_rc" "${smssh_err#smssh-authorized-keys: }" ;;
    *) smssh_die 1 "the edit as $smssh_who failed with status $smssh_rc: ${smssh_err:-no message}" ;;
    esac
    printf 'keys:%s\n' "$smssh_keys"
}

trap 'smssh_die 1 "interrupted by a signal: run the rotation again to finish"' HUP INT TERM

# The whole body is one function call with stdin from /dev/null: over SSH the
# shell has read the complete script before anything runs (a cut connection
# cannot run half of it), and no command can swallow the script text.
smssh_main </dev/null
