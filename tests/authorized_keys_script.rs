//! Runs the rendered authorized_keys script with real shells (`sh`, which is
//! dash on Debian and Ubuntu workers, and `bash`) against real files in
//! temporary homes, the script text on stdin exactly as `sh -s` receives it
//! over SSH.
//!
//! The root-mode tests, among them the race against an attacker swapping
//! files for links, need root (CI runs as root) and fail, rather than skip,
//! without it. The concurrency tests run 16 edits of one home at a time.

use std::collections::hash_map::RandomState;
use std::ffi::OsString;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::io::Write;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use smssh::rotation::block::{
    parse_block, parse_report, render_lines, script, shell_quote, Edit, ManagedKey, PublicKeyLine,
    EXIT_BAD_INPUT, EXIT_IO, EXIT_REFUSED, SCRIPT_BODY, SCRIPT_ERROR_PREFIX,
};
use tempfile::TempDir;

const SHELLS: [&str; 2] = ["sh", "bash"];
const ID: &str = "prod/cluster-key";
/// The lock file the script leaves beside authorized_keys once it has taken
/// the lock to write it.
const LOCK: &str = ".authorized_keys.smssh-lock";

const ED25519: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGHOZKbNeUgKlOBSlf6yk3OyTGhFi4g18wYEA/Vtd5DU a";
const P256: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNOAoUqnaak041YK7IiB1TZkPDGgX8GooVkP1LNCCvi+17pyu/kB7J/lJgGrIasBqvzZdeTt9uCo3pllw3YBAwY= b";
const P384: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBIdk/kAIcgLB1xv/hQPyXzPVjiEbk8IyZkCx+IgiHULAfUsmHx6O8AeYIBQ18HI8qwvRj0OYOM2enMue6sGdU85EhK3wEvHd5e6xOwjKrlSmCdlHLm6QLHNG54efr5weAg== c";

/// What one run of the script produced.
#[derive(Debug)]
struct Run {
    status: i32,
    stdout: String,
    stderr: String,
}

fn key(line: &str, version: &str) -> ManagedKey {
    ManagedKey::new(PublicKeyLine::parse(line).unwrap(), version).unwrap()
}

fn current() -> Vec<ManagedKey> {
    vec![key(ED25519, "v1")]
}

fn rotated() -> Vec<ManagedKey> {
    vec![key(ED25519, "v1"), key(P256, "v2")]
}

fn current_user() -> String {
    let out = Command::new("id").arg("-un").output().unwrap();
    assert!(out.status.success(), "id -un failed");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim() == "0"
}

/// The block exactly as the script writes it.
fn block(id: &str, keys: &[ManagedKey]) -> String {
    if keys.is_empty() {
        return String::new();
    }
    format!(
        "# BEGIN smssh-managed {id}\n{}\n# END smssh-managed {id}\n",
        render_lines(id, keys).unwrap()
    )
}

/// A run in progress, with the directory that makes `sh` mean bash for the
/// bash runs, which must outlive it.
struct Started {
    child: Child,
    _sh_is_bash: Option<TempDir>,
}

/// The full path of a command on the test's PATH.
fn on_path(name: &str) -> PathBuf {
    std::env::split_paths(&path_with(None))
        .map(|dir| dir.join(name))
        .find(|file| file.is_file())
        .unwrap_or_else(|| panic!("{name} is not on PATH"))
}

/// The test's PATH, with `bin_first` in front.
fn path_with(bin_first: Option<&Path>) -> OsString {
    let mut path = OsString::new();
    if let Some(bin) = bin_first {
        path.push(bin);
        path.push(":");
    }
    path.push(std::env::var_os("PATH").unwrap_or_else(|| "/usr/sbin:/usr/bin:/sbin:/bin".into()));
    path
}

/// Starts `text` with `shell -s`, the text on stdin, in a clean environment
/// holding only `path` and HOME. The script runs its edit in a second `sh`;
/// for the bash runs, `sh` is bash as well (as on Amazon Linux, where /bin/sh
/// is bash), so that both parts of the script run under each shell.
fn start_text(shell: &str, text: &str, home: Option<&Path>, path: OsString) -> Started {
    let sh_is_bash = (shell == "bash").then(|| {
        let dir = TempDir::new().unwrap();
        // In root mode the edit runs as another account, which must be able
        // to find this `sh` too.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        symlink(on_path("bash"), dir.path().join("sh")).unwrap();
        dir
    });
    let mut full_path = OsString::new();
    if let Some(dir) = &sh_is_bash {
        full_path.push(dir.path());
        full_path.push(":");
    }
    full_path.push(path);
    let mut command = Command::new(shell);
    command
        .arg("-s")
        .env_clear()
        .env("PATH", full_path)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(home) = home {
        command.env("HOME", home);
    }
    let mut child = command.spawn().unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    Started {
        child,
        _sh_is_bash: sh_is_bash,
    }
}

fn finish(started: Started) -> Run {
    let out = started.child.wait_with_output().unwrap();
    Run {
        status: out.status.code().expect("the shell was killed by a signal"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// Runs `text` as `start_text` starts it, with the test's PATH and
/// `bin_first` in front of it.
fn run_text(shell: &str, text: &str, home: Option<&Path>, bin_first: Option<&Path>) -> Run {
    finish(start_text(shell, text, home, path_with(bin_first)))
}

/// Renders the script for the current user and runs it.
fn rotate(shell: &str, home: &Path, file: Option<&str>, keys: &[ManagedKey]) -> Run {
    let text = script(&current_user(), ID, file, &Edit::block(keys)).unwrap();
    run_text(shell, &text, Some(home), None)
}

fn assert_success(run: &Run, changed: bool, keys: &[ManagedKey]) {
    assert_eq!(run.status, 0, "{run:?}");
    assert_eq!(run.stderr, "", "{run:?}");
    let report = parse_report(&run.stdout).unwrap();
    assert_eq!(report.changed, changed, "{run:?}");
    let ids: Vec<&str> = keys.iter().map(|k| k.version_id.as_str()).collect();
    assert_eq!(report.version_ids, ids, "{run:?}");
    let expected = if changed { "updated" } else { "unchanged" };
    assert!(run.stdout.starts_with(expected), "{run:?}");
}

fn assert_failure(run: &Run, status: i32, reason: &str) {
    assert_eq!(run.status, status, "{run:?}");
    assert_eq!(run.stdout, "", "{run:?}");
    assert_eq!(run.stderr.lines().count(), 1, "{run:?}");
    assert!(run.stderr.ends_with('\n'), "{run:?}");
    assert!(run.stderr.starts_with(SCRIPT_ERROR_PREFIX), "{run:?}");
    assert!(run.stderr.contains(reason), "wanted {reason:?} in {run:?}");
}

/// The names in a directory, sorted; a leftover temporary file shows up here.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
}

/// A home with `.ssh/authorized_keys` holding `content`.
fn home_with(content: &[u8]) -> (TempDir, PathBuf) {
    let home = TempDir::new().unwrap();
    let ssh = home.path().join(".ssh");
    fs::create_dir(&ssh).unwrap();
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700)).unwrap();
    let file = ssh.join("authorized_keys");
    fs::write(&file, content).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o600)).unwrap();
    (home, file)
}

/// Identity and timestamps that any write (or rename) would change.
fn stamp(path: &Path) -> (u64, i64, i64, i64, i64) {
    let m = fs::metadata(path).unwrap();
    (
        m.ino(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

#[test]
fn fresh_home_gets_ssh_dir_700_and_file_600() {
    for shell in SHELLS {
        let home = TempDir::new().unwrap();
        let run = rotate(shell, home.path(), None, &current());
        assert_success(&run, true, &current());
        let ssh = home.path().join(".ssh");
        let file = ssh.join("authorized_keys");
        assert_eq!(mode(&ssh), 0o700, "{shell}");
        assert_eq!(mode(&file), 0o600, "{shell}");
        let uid = fs::metadata(home.path()).unwrap().uid();
        assert_eq!(fs::metadata(&file).unwrap().uid(), uid, "{shell}");
        assert_eq!(fs::read_to_string(&file).unwrap(), block(ID, &current()));
        assert_eq!(entries(&ssh), [LOCK, "authorized_keys"], "{shell}");
        let text = fs::read_to_string(&file).unwrap();
        assert_eq!(parse_block(&text, ID).unwrap(), current());
    }
}

#[test]
fn unmanaged_lines_and_other_blocks_stay_byte_for_byte() {
    // Bytes a line-based rewrite could easily disturb: CRLF, tabs, trailing
    // blanks, invalid UTF-8, options with quotes, an empty line, another
    // secret's block and a block whose id starts with ours.
    let mut before = Vec::new();
    before.extend_from_slice(b"# hand-written header\r\n");
    before.extend_from_slice(
        b"from=\"10.0.0.0/8\",command=\"echo 'hi' $(x)\" ssh-ed25519 AAAA\tme@host  \n",
    );
    before.extend_from_slice(b"\n");
    before.extend_from_slice(b"ssh-rsa AAAA latin1 \xe9\xff bytes\n");
    before.extend_from_slice(block("other/secret", &[key(P384, "o1")]).as_bytes());
    let mut after = before.clone();
    before.extend_from_slice(block(ID, &current()).as_bytes());
    after.extend_from_slice(block(ID, &rotated()).as_bytes());
    let tail = format!(
        "   leading blanks\n{}# last line without newline",
        block(&format!("{ID}2"), &[key(ED25519, "x1")])
    );
    before.extend_from_slice(tail.as_bytes());
    after.extend_from_slice(tail.as_bytes());

    for shell in SHELLS {
        let (home, file) = home_with(&before);
        let run = rotate(shell, home.path(), None, &rotated());
        assert_success(&run, true, &rotated());
        assert_eq!(fs::read(&file).unwrap(), after, "{shell}");
        assert_eq!(entries(file.parent().unwrap()), [LOCK, "authorized_keys"]);
    }
}

/// The `TYPE BASE64` of a fixture line, as the script compares keys.
fn key_text(line: &str) -> String {
    PublicKeyLine::parse(line).unwrap().key_text()
}

/// finishSecret retires the keys the secret held wherever they sit outside the blocks: a
/// cluster's first key, installed by user data or by hand before any rotation, is a plain line
/// with any options and comment. Every other line stays byte for byte, the key inside another
/// secret's block stays (that secret manages it), and the watched key is only counted.
#[test]
fn every_line_holding_a_retired_key_goes_wherever_it_sits_outside_the_blocks() {
    let old = key_text(P384);
    let (old_type, old_blob) = old.split_once(' ').unwrap();
    let watched = key_text(P256);
    // (line, retired?)
    let lines: Vec<(String, bool)> = vec![
        (format!("{old} installed-by-user-data"), true),
        (old.clone(), true),
        (
            format!("restrict,command=\"echo a b\" {old} with options"),
            true,
        ),
        (
            format!("command=\"echo \\\"x {old}\\\"\" {old} quoted"),
            true,
        ),
        (
            format!(" \t{old_type}\t{old_blob}\tleading blanks and tabs"),
            true,
        ),
        (format!("# {old} in a comment"), false),
        (format!("{old_type} {old_blob}x another blob"), false),
        (
            format!("{old_type}-cert-v01@openssh.com {old_blob} another type"),
            false,
        ),
        (
            format!("from=\"{old}\" {watched} key named in an option"),
            false,
        ),
        (format!("{watched} the operator's key"), false),
        (format!("no-pty {watched} again"), false),
        ("".to_owned(), false),
    ];
    let mut before = String::new();
    let mut after = String::new();
    for (line, retired) in &lines {
        before.push_str(line);
        before.push('\n');
        if !retired {
            after.push_str(line);
            after.push('\n');
        }
    }
    let foreign = block("other/secret", &[key(P384, "o1")]);
    before.push_str(&foreign);
    after.push_str(&foreign);
    before.push_str(&block(ID, &[key(P384, "v0"), key(ED25519, "v1")]));
    after.push_str(&block(ID, &current()));
    // A retired last line without a newline: the line before it keeps its own.
    before.push_str(&format!("# kept\n{old} last"));
    after.push_str("# kept\n");
    let retire = [PublicKeyLine::parse(P384).unwrap()];
    let watch = PublicKeyLine::parse(P256).unwrap();
    let keys = current();
    let edit = Edit {
        keys: &keys,
        retire: &retire,
        watch: Some(&watch),
    };
    let text = script(&current_user(), ID, None, &edit).unwrap();
    for shell in SHELLS {
        let (home, file) = home_with(before.as_bytes());
        let run = run_text(shell, &text, Some(home.path()), None);
        assert_success(&run, true, &current());
        let report = parse_report(&run.stdout).unwrap();
        assert_eq!((report.retired, report.watched), (6, 3), "{shell}: {run:?}");
        assert_eq!(fs::read_to_string(&file).unwrap(), after, "{shell}");
        // Nothing is left to retire: the second run writes nothing.
        let again = run_text(shell, &text, Some(home.path()), None);
        assert_success(&again, false, &current());
        let report = parse_report(&again.stdout).unwrap();
        assert_eq!(
            (report.retired, report.watched),
            (0, 3),
            "{shell}: {again:?}"
        );
    }
}

#[test]
fn forged_keys_to_retire_or_watch_are_refused_and_nothing_is_written() {
    let good = render_lines(ID, &current()).unwrap();
    let before = format!("{P384}\n");
    for (retire, watch) in [
        ("ssh-ed25519 AAAA comment".to_owned(), String::new()),
        ("ssh-dss AAAA".to_owned(), String::new()),
        (format!("{}\n* *", key_text(P384)), String::new()),
        (String::new(), "ssh-ed25519 AAAA'".to_owned()),
        (
            String::new(),
            format!("{}\n{}", key_text(P384), key_text(P256)),
        ),
    ] {
        let text = forged_with("", ID, "", &good, &retire, &watch);
        let (home, file) = home_with(before.as_bytes());
        let run = run_text("sh", &text, Some(home.path()), None);
        assert_failure(&run, EXIT_BAD_INPUT, "refusing to write anything");
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            before,
            "{retire:?} {watch:?}"
        );
    }
    // A prologue without the two variables is incomplete, not empty.
    let text = format!(
        "SMSSH_USER=''\nSMSSH_BLOCK_ID={}\nSMSSH_FILE=''\nSMSSH_BLOCK={}\n{SCRIPT_BODY}",
        shell_quote(ID),
        shell_quote(&good)
    );
    let (home, _file) = home_with(before.as_bytes());
    let run = run_text("sh", &text, Some(home.path()), None);
    assert_failure(&run, EXIT_BAD_INPUT, "SMSSH_RETIRE is not set");
}

#[test]
fn block_is_replaced_where_it_stands() {
    let old = block(ID, &current());
    let new = block(ID, &rotated());
    for (prefix, suffix) in [
        ("", "ssh-ed25519 AAAA after\n"),
        ("ssh-ed25519 AAAA before\n", "ssh-ed25519 AAAA after\n"),
        ("ssh-ed25519 AAAA before\n", ""),
    ] {
        for shell in SHELLS {
            let (home, file) = home_with(format!("{prefix}{old}{suffix}").as_bytes());
            let run = rotate(shell, home.path(), None, &rotated());
            assert_success(&run, true, &rotated());
            assert_eq!(
                fs::read_to_string(&file).unwrap(),
                format!("{prefix}{new}{suffix}"),
                "{shell}"
            );
        }
    }
}

#[test]
fn block_is_appended_when_missing() {
    for shell in SHELLS {
        let (home, file) = home_with(b"ssh-ed25519 AAAA mine\n");
        let run = rotate(shell, home.path(), None, &current());
        assert_success(&run, true, &current());
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            format!("ssh-ed25519 AAAA mine\n{}", block(ID, &current()))
        );
    }
}

#[test]
fn empty_key_list_removes_the_block() {
    for shell in SHELLS {
        let content = format!("a\n{}b\n", block(ID, &rotated()));
        let (home, file) = home_with(content.as_bytes());
        let run = rotate(shell, home.path(), None, &[]);
        assert_success(&run, true, &[]);
        assert_eq!(fs::read_to_string(&file).unwrap(), "a\nb\n", "{shell}");
        let again = rotate(shell, home.path(), None, &[]);
        assert_success(&again, false, &[]);

        // Nothing to remove and no file: nothing is created, not even .ssh.
        let empty = TempDir::new().unwrap();
        let run = rotate(shell, empty.path(), None, &[]);
        assert_success(&run, false, &[]);
        assert!(entries(empty.path()).is_empty(), "{shell}");
    }
}

#[test]
fn second_run_is_unchanged_and_writes_nothing() {
    for shell in SHELLS {
        let home = TempDir::new().unwrap();
        let first = rotate(shell, home.path(), None, &rotated());
        assert_success(&first, true, &rotated());
        let ssh = home.path().join(".ssh");
        let file = ssh.join("authorized_keys");
        let (file_before, dir_before) = (stamp(&file), stamp(&ssh));
        let content = fs::read(&file).unwrap();
        // Let a coarse clock tick so that a rewrite could not hide in the
        // same timestamp.
        std::thread::sleep(std::time::Duration::from_millis(20));
        let second = rotate(shell, home.path(), None, &rotated());
        assert_success(&second, false, &rotated());
        assert_eq!(stamp(&file), file_before, "{shell}: file was rewritten");
        assert_eq!(
            stamp(&ssh),
            dir_before,
            "{shell}: a temporary file was made"
        );
        assert_eq!(fs::read(&file).unwrap(), content);
    }
}

#[test]
fn missing_final_newline_is_handled() {
    for shell in SHELLS {
        // Appending: the old last line gets its newline before the block.
        let (home, file) = home_with(b"a\nb");
        let run = rotate(shell, home.path(), None, &current());
        assert_success(&run, true, &current());
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            format!("a\nb\n{}", block(ID, &current()))
        );

        // Replacing in the middle: the unmanaged last line keeps its missing
        // newline.
        let content = format!("a\n{}b", block(ID, &current()));
        let (home, file) = home_with(content.as_bytes());
        let run = rotate(shell, home.path(), None, &rotated());
        assert_success(&run, true, &rotated());
        assert_eq!(
            fs::read_to_string(&file).unwrap(),
            format!("a\n{}b", block(ID, &rotated()))
        );

        // Block last, END without newline: the block is written whole.
        let content = format!("a\n{}", block(ID, &current()));
        let (home, file) = home_with(content.trim_end().as_bytes());
        let run = rotate(shell, home.path(), None, &current());
        assert_success(&run, true, &current());
        assert_eq!(fs::read_to_string(&file).unwrap(), content);
    }
}

#[test]
fn existing_mode_and_owner_are_kept() {
    // As root (CI) the file is given to another owner first, so that keeping
    // the owner is a real check; otherwise the owner must stay ours.
    let root = is_root();
    for shell in SHELLS {
        let (home, file) = home_with(b"x\n");
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        if root {
            let status = Command::new("chown")
                .arg("65534:65534")
                .arg(&file)
                .status()
                .unwrap();
            assert!(status.success());
        }
        let before = fs::metadata(&file).unwrap();
        let run = rotate(shell, home.path(), None, &current());
        assert_success(&run, true, &current());
        let after = fs::metadata(&file).unwrap();
        assert_ne!(after.ino(), before.ino(), "{shell}: not replaced by rename");
        assert_eq!(mode(&file), 0o640, "{shell}");
        assert_eq!((after.uid(), after.gid()), (before.uid(), before.gid()));
        assert_eq!(entries(file.parent().unwrap()), [LOCK, "authorized_keys"]);
    }
}

#[test]
fn ambiguous_markers_are_refused_and_nothing_is_written() {
    let b = format!("# BEGIN smssh-managed {ID}\n");
    let e = format!("# END smssh-managed {ID}\n");
    let line = format!("{}\n", render_lines(ID, &current()).unwrap());
    let cases = [
        format!("x\n{b}{line}"),
        format!("x\n{line}{e}"),
        format!("{b}{b}{line}{e}"),
        format!("{b}{line}{e}y\n{b}{line}{e}"),
        format!("# BEGIN smssh-managed {ID} \n{line}{e}"),
        format!("{b}{line}# END smssh-managed {ID}\r\n"),
        format!("{b}# BEGIN smssh-managed other\n{e}"),
    ];
    for content in &cases {
        // The Rust reader refuses exactly what the script refuses.
        assert!(parse_block(content, ID).is_err(), "{content:?}");
        for shell in SHELLS {
            let (home, file) = home_with(content.as_bytes());
            let before = stamp(&file);
            let run = rotate(shell, home.path(), None, &rotated());
            assert_failure(&run, EXIT_REFUSED, "by hand");
            assert_eq!(fs::read_to_string(&file).unwrap(), *content, "{shell}");
            assert_eq!(stamp(&file), before, "{shell}");
            assert_eq!(entries(file.parent().unwrap()), ["authorized_keys"]);
        }
    }
}

/// A script whose prologue is written by hand, bypassing every check the
/// Rust side makes, as a compromised or buggy caller could.
fn forged(user: &str, id: &str, file: &str, block: &str) -> String {
    forged_with(user, id, file, block, "", "")
}

/// A prologue written by hand with the keys to retire and watch too.
fn forged_with(user: &str, id: &str, file: &str, block: &str, retire: &str, watch: &str) -> String {
    format!(
        "SMSSH_USER={}\nSMSSH_BLOCK_ID={}\nSMSSH_FILE={}\nSMSSH_BLOCK={}\nSMSSH_RETIRE={}\nSMSSH_WATCH={}\n{SCRIPT_BODY}",
        shell_quote(user),
        shell_quote(id),
        shell_quote(file),
        shell_quote(block),
        shell_quote(retire),
        shell_quote(watch)
    )
}

#[test]
fn forged_block_lines_are_refused_and_nothing_is_written() {
    let good = render_lines(ID, &current()).unwrap();
    let blob = ED25519.split(' ').nth(1).unwrap();
    let forged_blocks = [
        format!("ssh-ed25519 {blob} smssh:other/secret:v1"),
        format!("ssh-ed25519 {blob} smssh:{ID}:v1;touch PWNED"),
        format!("ssh-ed25519 {blob} smssh:{ID}:$(touch PWNED)"),
        format!("command=\"touch PWNED\" ssh-ed25519 {blob} smssh:{ID}:v1"),
        format!("ssh-ed25519 {blob} smssh:{ID}:v1 extra"),
        format!("ssh-ed25519  {blob} smssh:{ID}:v1"),
        format!("ssh-dss {blob} smssh:{ID}:v1"),
        format!("ssh-ed25519 {blob}' smssh:{ID}:v1"),
        format!("ssh-ed25519 {blob}=== smssh:{ID}:v1"),
        format!("ssh-ed25519 {blob} smssh:{ID}:"),
        format!("ssh-ed25519 {blob} smssh:{ID}:v1\r"),
        format!("{good}\n\n{good}"),
        format!("{good}\n"),
        format!("{good}\n{good}"),
        format!("{good}\n# END smssh-managed {ID}"),
        format!("{good}\nssh-ed25519 {blob} unmanaged"),
    ];
    let user = current_user();
    for content in &forged_blocks {
        for shell in SHELLS {
            let (home, file) = home_with(b"keep\n");
            let before = stamp(&file);
            let text = forged(&user, ID, "", content);
            let run = run_text(shell, &text, Some(home.path()), None);
            assert_failure(&run, EXIT_BAD_INPUT, "refusing to write anything");
            assert_eq!(fs::read_to_string(&file).unwrap(), "keep\n", "{content:?}");
            assert_eq!(stamp(&file), before);
            assert_eq!(entries(file.parent().unwrap()), ["authorized_keys"]);
            assert!(!Path::new("/PWNED").exists());
        }
    }
}

#[test]
fn forged_block_id_and_user_are_refused() {
    let user = current_user();
    let good = render_lines(ID, &current()).unwrap();
    let cases = [
        (user.as_str(), "", "block id"),
        (user.as_str(), "a b", "block id"),
        (user.as_str(), "a'$(touch PWNED)", "block id"),
        (user.as_str(), "a\nb", "block id"),
        ("-x", ID, "user name"),
        ("a;b", ID, "user name"),
        ("Root", ID, "user name"),
    ];
    for (user, id, reason) in cases {
        for shell in SHELLS {
            let home = TempDir::new().unwrap();
            let run = run_text(shell, &forged(user, id, "", &good), Some(home.path()), None);
            assert_failure(&run, EXIT_BAD_INPUT, reason);
            assert!(entries(home.path()).is_empty());
        }
    }
    // A prologue cut short is refused, not read as empty values.
    for shell in SHELLS {
        let home = TempDir::new().unwrap();
        let text = format!("SMSSH_USER=''\nSMSSH_BLOCK_ID='{ID}'\n{SCRIPT_BODY}");
        let run = run_text(shell, &text, Some(home.path()), None);
        assert_failure(&run, EXIT_BAD_INPUT, "SMSSH_FILE is not set");
    }
}

#[test]
fn failed_rename_leaves_no_temporary_file() {
    for shell in SHELLS {
        let bin = TempDir::new().unwrap();
        let mv = bin.path().join("mv");
        fs::write(&mv, "#!/bin/sh\necho 'mv: simulated failure' >&2\nexit 1\n").unwrap();
        fs::set_permissions(&mv, fs::Permissions::from_mode(0o755)).unwrap();
        let (home, file) = home_with(b"keep\n");
        let text = script(&current_user(), ID, None, &Edit::block(&current())).unwrap();
        let run = run_text(shell, &text, Some(home.path()), Some(bin.path()));
        assert_failure(&run, EXIT_IO, "simulated failure");
        assert_eq!(fs::read_to_string(&file).unwrap(), "keep\n");
        assert_eq!(
            entries(file.parent().unwrap()),
            [LOCK, "authorized_keys"],
            "{shell}"
        );
    }
}

#[test]
fn relative_and_absolute_paths() {
    for shell in SHELLS {
        // Relative to the home; a missing parent directory is created 700.
        let home = TempDir::new().unwrap();
        let run = rotate(shell, home.path(), Some("keys.d/smssh"), &current());
        assert_success(&run, true, &current());
        let dir = home.path().join("keys.d");
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("smssh")), 0o600);
        assert_eq!(
            fs::read_to_string(dir.join("smssh")).unwrap(),
            block(ID, &current())
        );
        assert!(!home.path().join(".ssh").exists());

        // Absolute: used as is, wherever HOME points.
        let elsewhere = TempDir::new().unwrap();
        let target = elsewhere.path().join("authorized_keys");
        fs::write(&target, "mine\n").unwrap();
        let run = rotate(shell, home.path(), target.to_str(), &current());
        assert_success(&run, true, &current());
        assert_eq!(
            fs::read_to_string(&target).unwrap(),
            format!("mine\n{}", block(ID, &current()))
        );
        assert_eq!(entries(elsewhere.path()), [LOCK, "authorized_keys"]);
    }
}

#[test]
fn symbolic_links_and_nul_bytes_are_refused() {
    for shell in SHELLS {
        let (home, file) = home_with(b"real\n");
        let link_home = TempDir::new().unwrap();
        let ssh = link_home.path().join(".ssh");
        fs::create_dir(&ssh).unwrap();
        symlink(&file, ssh.join("authorized_keys")).unwrap();
        let run = rotate(shell, link_home.path(), None, &current());
        assert_failure(&run, EXIT_REFUSED, "symbolic link");
        assert_eq!(fs::read_to_string(&file).unwrap(), "real\n");
        assert!(fs::symlink_metadata(ssh.join("authorized_keys"))
            .unwrap()
            .file_type()
            .is_symlink());
        drop(home);

        let (home, file) = home_with(b"a\0b\n");
        let run = rotate(shell, home.path(), None, &current());
        assert_failure(&run, EXIT_REFUSED, "NUL");
        assert_eq!(fs::read(&file).unwrap(), b"a\0b\n");
    }
}

#[test]
fn stdin_is_never_read() {
    // Over SSH the script arrives on stdin. Text after it must still be there
    // for the shell once the script is done, so no command consumed stdin.
    for shell in SHELLS {
        let home = TempDir::new().unwrap();
        let text = format!(
            "{}printf 'stdin-intact\\n'\n",
            script(&current_user(), ID, None, &Edit::block(&current())).unwrap()
        );
        let run = run_text(shell, &text, Some(home.path()), None);
        assert_eq!(run.status, 0, "{run:?}");
        assert!(run.stdout.ends_with("keys: v1\nstdin-intact\n"), "{run:?}");
    }
}

/// A local account created for the root-mode test and deleted on drop, even
/// when an assertion fails.
struct ThrowawayUser {
    name: String,
}

impl ThrowawayUser {
    fn create(home: &Path) -> ThrowawayUser {
        let suffix = RandomState::new().build_hasher().finish() & 0xffff_ffff;
        let name = format!("smssh-akt-{suffix:08x}");
        let added = retry_account_change(|| {
            Command::new("useradd")
                .arg("--no-create-home")
                .arg("--home-dir")
                .arg(home)
                .arg("--shell")
                .arg("/bin/sh")
                .arg(&name)
                .status()
                .expect("useradd must be installed to test root mode")
        });
        assert!(added, "useradd {name} failed");
        ThrowawayUser { name }
    }

    fn ids(&self) -> (u32, u32) {
        let id = |flag| {
            let out = Command::new("id")
                .arg(flag)
                .arg(&self.name)
                .output()
                .unwrap();
            String::from_utf8(out.stdout)
                .unwrap()
                .trim()
                .parse::<u32>()
                .unwrap()
        };
        (id("-u"), id("-g"))
    }
}

impl Drop for ThrowawayUser {
    fn drop(&mut self) {
        retry_account_change(|| Command::new("userdel").arg(&self.name).status().unwrap());
    }
}

/// Runs useradd or userdel until it succeeds, for a few seconds at most:
/// tests running in parallel each add an account, and each command gives up
/// at once when another one holds the lock on /etc/passwd.
fn retry_account_change(mut change: impl FnMut() -> std::process::ExitStatus) -> bool {
    for _ in 0..50 {
        if change().success() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    false
}

fn chown_to(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).unwrap();
}

#[test]
fn root_edits_another_users_file() {
    assert!(
        is_root(),
        "this test edits another account's authorized_keys and must run as root \
         (CI does); run `cargo test` as root or in the CI container"
    );
    for shell in SHELLS {
        let home = TempDir::new().unwrap();
        let user = ThrowawayUser::create(home.path());
        let (uid, gid) = user.ids();
        // The home belongs to the account, as a real one does: root edits the
        // file as the account, which must be able to create .ssh there.
        chown_to(home.path(), uid, gid);
        // HOME points elsewhere: in root mode the home comes from getent.
        let decoy = TempDir::new().unwrap();
        let text = script(&user.name, ID, None, &Edit::block(&current())).unwrap();

        let run = run_text(shell, &text, Some(decoy.path()), None);
        assert_success(&run, true, &current());
        let ssh = home.path().join(".ssh");
        let file = ssh.join("authorized_keys");
        let (dir_meta, file_meta) = (fs::metadata(&ssh).unwrap(), fs::metadata(&file).unwrap());
        assert_eq!((dir_meta.uid(), dir_meta.gid()), (uid, gid), "{shell}");
        assert_eq!((file_meta.uid(), file_meta.gid()), (uid, gid), "{shell}");
        assert_eq!(mode(&ssh), 0o700);
        assert_eq!(mode(&file), 0o600);
        assert_eq!(fs::read_to_string(&file).unwrap(), block(ID, &current()));
        assert!(entries(decoy.path()).is_empty());

        // SSM may run without HOME at all.
        let again = run_text(shell, &text, None, None);
        assert_success(&again, false, &current());

        // The owner and mode of the existing file are kept on rotation.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
        let rotated_text = script(&user.name, ID, None, &Edit::block(&rotated())).unwrap();
        let run = run_text(shell, &rotated_text, Some(decoy.path()), None);
        assert_success(&run, true, &rotated());
        let file_meta = fs::metadata(&file).unwrap();
        assert_eq!((file_meta.uid(), file_meta.gid()), (uid, gid));
        assert_eq!(mode(&file), 0o640);
        assert_eq!(entries(&ssh), [LOCK, "authorized_keys"]);

        // A file of root's in the account's .ssh is refused: the account,
        // which does the edit, could not keep that owner.
        chown_to(&file, 0, 0);
        let run = run_text(shell, &text, Some(decoy.path()), None);
        assert_failure(&run, EXIT_REFUSED, "owned by uid 0");
        assert_eq!(fs::read_to_string(&file).unwrap(), block(ID, &rotated()));

        // A .ssh that is a link (say to /root/.ssh) is refused as root.
        let target = TempDir::new().unwrap();
        fs::remove_dir_all(&ssh).unwrap();
        symlink(target.path(), &ssh).unwrap();
        let run = run_text(shell, &text, Some(decoy.path()), None);
        assert_failure(&run, EXIT_REFUSED, "symbolic link");
        assert!(entries(target.path()).is_empty());

        // An account that does not exist.
        let text = script("smssh-akt-no-such-user", ID, None, &Edit::block(&current())).unwrap();
        let run = run_text(shell, &text, Some(decoy.path()), None);
        assert_failure(&run, EXIT_BAD_INPUT, "unknown on this host");

        // The other direction is real too: the throwaway account, not root,
        // asking for root's file is refused before anything is read.
        let text = script("root", ID, None, &Edit::block(&current())).unwrap();
        let mut child = Command::new("runuser")
            .arg("-u")
            .arg(&user.name)
            .arg("--")
            .arg(shell)
            .arg("-s")
            .current_dir("/")
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("HOME", home.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("runuser (util-linux) must be installed to test root mode");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let run = Run {
            status: out.status.code().unwrap(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        };
        assert_failure(&run, EXIT_BAD_INPUT, "needs root");
    }
}

/// A directory of links to every command on the test's PATH except `hidden`,
/// open to every account, to stand for the whole PATH of a host that lacks
/// those commands.
fn commands_without(hidden: &[&str]) -> TempDir {
    let dir = TempDir::new().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    for bin in std::env::split_paths(&path_with(None)) {
        let Ok(listing) = fs::read_dir(&bin) else {
            continue;
        };
        for entry in listing {
            let entry = entry.unwrap();
            let link = dir.path().join(entry.file_name());
            let hide = hidden.iter().any(|h| entry.file_name() == *h);
            if !hide && fs::symlink_metadata(&link).is_err() {
                symlink(entry.path(), link).unwrap();
            }
        }
    }
    dir
}

#[test]
fn root_mode_uses_runuser_without_setpriv_and_refuses_without_either() {
    assert!(
        is_root(),
        "this test edits another account's authorized_keys and must run as root \
         (CI does); run `cargo test` as root or in the CI container"
    );
    let no_setpriv = commands_without(&["setpriv"]);
    let neither = commands_without(&["setpriv", "runuser"]);
    for shell in SHELLS {
        let home = TempDir::new().unwrap();
        let user = ThrowawayUser::create(home.path());
        let (uid, gid) = user.ids();
        chown_to(home.path(), uid, gid);
        let file = home.path().join(".ssh/authorized_keys");

        let text = script(&user.name, ID, None, &Edit::block(&current())).unwrap();
        let run = finish(start_text(shell, &text, None, no_setpriv.path().into()));
        assert_success(&run, true, &current());
        let meta = fs::metadata(&file).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid), "{shell}");
        assert_eq!(fs::read_to_string(&file).unwrap(), block(ID, &current()));

        let text = script(&user.name, ID, None, &Edit::block(&rotated())).unwrap();
        let run = finish(start_text(shell, &text, None, neither.path().into()));
        assert_failure(&run, EXIT_IO, "neither setpriv nor runuser");
        assert_eq!(fs::read_to_string(&file).unwrap(), block(ID, &current()));
    }
}

/// The attacker of issue 9, item 2, in Python so that it needs nothing but
/// the interpreter: it watches one directory with inotify and replaces every
/// file created there with a symbolic link to `canary`, atomically (a link
/// made beside it is renamed over it), printing one line per swap.
const SWAPPER: &str = r#"
import ctypes, os, struct, sys
watched, canary = os.fsencode(sys.argv[1]), os.fsencode(sys.argv[2])
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
if fd < 0 or libc.inotify_add_watch(fd, watched, 0x100) < 0:  # IN_CREATE
    sys.exit("inotify failed: errno %d" % ctypes.get_errno())
print("ready", flush=True)
n = 0
while True:
    events = os.read(fd, 65536)
    i = 0
    while i < len(events):
        _, mask, _, size = struct.unpack_from("iIII", events, i)
        name = events[i + 16:i + 16 + size].rstrip(b"\0")
        i += 16 + size
        if mask & 0x40000000 or name.startswith(b"swapper-"):  # IN_ISDIR, our own links
            continue
        n += 1
        link = os.path.join(watched, b"swapper-%d" % n)
        try:
            os.symlink(canary, link)
            os.rename(link, os.path.join(watched, name))
            print("swapped", flush=True)
        except OSError:
            try:
                os.unlink(link)
            except OSError:
                pass
"#;

/// The swapper running as another account; killed on drop, so that the
/// account can be deleted even when an assertion fails.
struct Swapper {
    child: Child,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Swapper {
    fn start(uid: u32, gid: u32, watched: &Path, canary: &Path) -> Swapper {
        let mut child = Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--init-groups")
            .arg("--")
            .arg("python3")
            .arg("-c")
            .arg(SWAPPER)
            .arg(watched)
            .arg(canary)
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .current_dir("/")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("setpriv (util-linux) and python3 must be installed for the race test");
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
        assert_eq!(line, "ready\n", "the swapper did not start");
        Swapper { child, stdout }
    }

    /// Stops the swapper and returns how many files it swapped.
    fn stop(mut self) -> usize {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut self.stdout, &mut rest).unwrap();
        rest.lines().filter(|l| *l == "swapped").count()
    }
}

impl Drop for Swapper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Everything about a file that a write, chmod or chown through a link
/// would change.
fn file_state(path: &Path) -> (Vec<u8>, u32, u32, u32) {
    let meta = fs::metadata(path).unwrap();
    (fs::read(path).unwrap(), mode(path), meta.uid(), meta.gid())
}

/// Issue 9, item 2: in root mode the account owner could swap the script's
/// temporary file for a link between root's steps and have root write, chown
/// and chmod any file. An attacker races every run here; root's canary must
/// never change, and every run must succeed or fail cleanly.
#[test]
fn root_mode_never_writes_through_a_link_the_user_plants() {
    const ROUNDS: usize = 200;
    const CANARY: &[u8] = b"root's secret, never to be touched\n";
    assert!(
        is_root(),
        "this test races an attacker against the script as root and must run as root \
         (CI does); run `cargo test` as root or in the CI container"
    );
    let home = TempDir::new().unwrap();
    let user = ThrowawayUser::create(home.path());
    let (uid, gid) = user.ids();
    chown_to(home.path(), uid, gid);
    let ssh = home.path().join(".ssh");
    fs::create_dir(&ssh).unwrap();
    fs::set_permissions(&ssh, fs::Permissions::from_mode(0o700)).unwrap();
    chown_to(&ssh, uid, gid);
    // The file each round starts from is prepared where only root can reach
    // and renamed into .ssh: the attacker reacts to creations, not renames.
    let stage = TempDir::new_in(home.path()).unwrap();
    let vault = TempDir::new().unwrap();
    let canary = vault.path().join("canary");
    fs::write(&canary, CANARY).unwrap();
    fs::set_permissions(&canary, fs::Permissions::from_mode(0o640)).unwrap();
    let pristine = file_state(&canary);

    let swapper = Swapper::start(uid, gid, &ssh, &canary);
    let text = script(&user.name, ID, None, &Edit::block(&current())).unwrap();
    let (mut wins, mut updated, mut failed) = (0, 0, 0);
    let mut unclean = Vec::new();
    for round in 0..ROUNDS {
        for entry in fs::read_dir(&ssh).unwrap() {
            let path = entry.unwrap().path();
            if fs::symlink_metadata(&path)
                .unwrap()
                .file_type()
                .is_symlink()
            {
                fs::remove_file(&path).unwrap();
            }
        }
        let staged = stage.path().join("authorized_keys");
        fs::write(&staged, "unmanaged\n").unwrap();
        fs::set_permissions(&staged, fs::Permissions::from_mode(0o600)).unwrap();
        chown_to(&staged, uid, gid);
        fs::rename(&staged, ssh.join("authorized_keys")).unwrap();

        let run = run_text(SHELLS[round % 2], &text, None, None);
        let clean_failure = [EXIT_IO, EXIT_REFUSED].contains(&run.status)
            && run.stdout.is_empty()
            && run.stderr.lines().count() == 1
            && run.stderr.starts_with(SCRIPT_ERROR_PREFIX);
        let report = parse_report(&run.stdout);
        if run.status == 0 && run.stderr.is_empty() && report.is_ok_and(|r| r.changed) {
            updated += 1;
        } else if clean_failure {
            failed += 1;
        } else {
            unclean.push(run);
        }
        // Links are the attacker's, and so are names gone before they are
        // looked at: it may still be renaming a link over a name the script
        // has already removed, or removing a link it failed to rename.
        let leftovers: Vec<String> = entries(&ssh)
            .into_iter()
            .filter(|name| !["authorized_keys", LOCK].contains(&name.as_str()))
            .filter(|name| fs::symlink_metadata(ssh.join(name)).is_ok_and(|m| !m.is_symlink()))
            .collect();
        assert!(leftovers.is_empty(), "round {round} left {leftovers:?}");
        if file_state(&canary) != pristine {
            wins += 1;
            fs::write(&canary, CANARY).unwrap();
            fs::set_permissions(&canary, fs::Permissions::from_mode(0o640)).unwrap();
            chown_to(&canary, 0, 0);
        }
    }
    let swaps = swapper.stop();
    eprintln!(
        "{ROUNDS} rounds: attacker won {wins}, {updated} runs updated the file, \
         {failed} failed cleanly, {} did not, {swaps} files swapped",
        unclean.len()
    );
    assert_eq!(
        wins, 0,
        "the attacker made root change the canary in {wins} of {ROUNDS} rounds"
    );
    assert!(
        unclean.is_empty(),
        "runs that neither succeeded nor failed cleanly: {unclean:?}"
    );
    // A race the attacker never ran in proves nothing.
    assert!(
        swaps >= ROUNDS / 2,
        "the attacker swapped only {swaps} files in {ROUNDS} rounds"
    );
}

/// Runs `rounds` rounds of 16 concurrent edits of one home directory, as 16
/// workers sharing an NFS home would: two runs (one per shell) for each of 8
/// secrets, all wanting the rotated keys. Even rounds start without .ssh, so
/// that the workers race to create it; odd ones from a file holding every
/// block with the current keys and one unmanaged line. Returns the number of
/// failed runs, the number of blocks lost and a description of everything
/// that went wrong.
fn edit_concurrently(rounds: usize, bin_first: Option<&Path>) -> (usize, usize, Vec<String>) {
    const WORKERS: usize = 16;
    const SECRETS: usize = 8;
    let ids: Vec<String> = (0..SECRETS).map(|i| format!("shared/key-{i}")).collect();
    let (mut failed, mut lost) = (0, 0);
    let mut problems = Vec::new();
    for round in 0..rounds {
        let home = TempDir::new().unwrap();
        let ssh = home.path().join(".ssh");
        let file = ssh.join("authorized_keys");
        let prefix = if round % 2 == 0 { "" } else { "unmanaged\n" };
        if round % 2 == 1 {
            let old: String = ids.iter().map(|id| block(id, &current())).collect();
            fs::create_dir(&ssh).unwrap();
            fs::write(&file, format!("{prefix}{old}")).unwrap();
        }
        let started: Vec<Started> = (0..WORKERS)
            .map(|w| {
                let text = script(
                    &current_user(),
                    &ids[w % SECRETS],
                    None,
                    &Edit::block(&rotated()),
                )
                .unwrap();
                let shell = SHELLS[w / SECRETS % 2];
                start_text(shell, &text, Some(home.path()), path_with(bin_first))
            })
            .collect();
        for run in started.into_iter().map(finish) {
            let ids_ok = parse_report(&run.stdout).is_ok_and(|r| r.version_ids == ["v1", "v2"]);
            if run.status != 0 || !run.stderr.is_empty() || !ids_ok {
                failed += 1;
                problems.push(format!("round {round}: {run:?}"));
            }
        }
        let text = fs::read_to_string(&file).unwrap_or_default();
        let wanted: Vec<String> = ids.iter().map(|id| block(id, &rotated())).collect();
        for (id, want) in ids.iter().zip(&wanted) {
            if parse_block(&text, id).ok() != Some(rotated()) || text.matches(want).count() != 1 {
                lost += 1;
                problems.push(format!("round {round}: block {id} lost"));
            }
        }
        let length = prefix.len() + wanted.iter().map(String::len).sum::<usize>();
        // Each block once and nothing else (in file order where the blocks
        // were already there) is exactly the file every worker wanted.
        let exact = if round % 2 == 0 {
            text.len() == length
        } else {
            text == format!("{prefix}{}", wanted.concat())
        };
        if !exact {
            problems.push(format!(
                "round {round}: the file is not exactly the wanted blocks: {text:?}"
            ));
        }
        if ssh.is_dir() && entries(&ssh) != [LOCK, "authorized_keys"] {
            problems.push(format!("round {round}: .ssh holds {:?}", entries(&ssh)));
        }
    }
    (failed, lost, problems)
}

/// Issue 9, item 11: the script took no lock, so two edits of one file lost
/// one, and workers sharing a home raced on creating .ssh and failed.
#[test]
fn concurrent_edits_of_one_shared_file_lose_nothing() {
    let rounds = 10;
    let (failed, lost, problems) = edit_concurrently(rounds, None);
    eprintln!(
        "{rounds} rounds of 16 runs: {failed} runs failed, {lost} of {} blocks lost",
        rounds * 8
    );
    assert!(
        problems.is_empty(),
        "{failed} of {} runs failed and {lost} of {} blocks were lost: {problems:#?}",
        rounds * 16,
        rounds * 8
    );
}

/// The same where flock cannot lock (missing, or a file system without
/// locks): the script falls back to a lock directory.
#[test]
fn concurrent_edits_lose_nothing_where_flock_cannot_lock() {
    let bin = TempDir::new().unwrap();
    let flock = bin.path().join("flock");
    fs::write(
        &flock,
        "#!/bin/sh\necho 'flock: 9: No locks available' >&2\nexit 71\n",
    )
    .unwrap();
    fs::set_permissions(&flock, fs::Permissions::from_mode(0o755)).unwrap();
    let rounds = 2;
    let (failed, lost, problems) = edit_concurrently(rounds, Some(bin.path()));
    eprintln!(
        "{rounds} rounds of 16 runs: {failed} runs failed, {lost} of {} blocks lost",
        rounds * 8
    );
    assert!(
        problems.is_empty(),
        "{failed} of {} runs failed and {lost} of {} blocks were lost: {problems:#?}",
        rounds * 16,
        rounds * 8
    );
}
