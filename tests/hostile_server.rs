//! smscp and smssh against a hostile server (tests/hostile): whatever sizes, listings, names,
//! links, modes, outputs, exit signals and host keys it sends, the binaries' memory stays
//! bounded, nothing is written outside the target, and each case ends with an exact outcome. Every run is measured: the binary's peak resident set (VmHWM) must stay under
//! [`BOUND_KIB`], and a run that grows past twice that is killed rather than allowed to take
//! the machine's memory.

mod common;
mod hostile;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use common::Listing;
use hostile::{run_measured, End, Hostile, Measured, Script, Tree, ADDR, ADDR2};

/// The peak resident set every run must stay under.
const BOUND_KIB: u64 = 200 * 1024;
/// A run whose resident set passes this is killed: it is growing without bound.
const KILL_ABOVE_KIB: u64 = 2 * BOUND_KIB;
/// A run still going after this is killed: it is not making progress.
const TIMEOUT: Duration = Duration::from_secs(180);
/// The time bound of the runs that should take a second: a hang or a loop is killed here.
const SHORT: Duration = Duration::from_secs(60);
const MIB: u64 = 1024 * 1024;

#[track_caller]
fn assert_bounded(run: &Measured) {
    assert!(
        run.killed.is_none(),
        "killed: {}\n{run:?}",
        run.killed.as_deref().unwrap_or_default()
    );
    assert!(
        run.peak_kib <= BOUND_KIB,
        "peak resident set {:.1} MiB is over {} MiB\n{run:?}",
        run.peak_mib(),
        BOUND_KIB / 1024
    );
    eprintln!("peak resident set: {:.1} MiB", run.peak_mib());
}

/// Bytes that differ from one offset to the next, so a misplaced chunk shows.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn a_stat_claiming_two_to_the_sixty_bytes_downloads_the_real_bytes() {
    let content = Arc::new(pattern(300_000));
    let server = Hostile::start(Script::LyingStat {
        path: "big.bin".to_owned(),
        content: Arc::clone(&content),
        claimed: 1 << 60,
    });
    let target = tempfile::tempdir().expect("target dir");
    let before = Listing::of(target.path());
    let local = target.path().join("big.bin");
    let mut cmd = server.command("smscp");
    cmd.arg(format!("{ADDR}:big.bin")).arg(&local);
    let run = run_measured(&cmd, b"", KILL_ABOVE_KIB, TIMEOUT);
    assert_bounded(&run);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stderr, "");
    assert!(
        fs::read(&local).expect("the downloaded file") == *content,
        "the copy differs from the file's real bytes"
    );
    assert_eq!(before.new_names_except(&["big.bin"]), Vec::<String>::new());
}

#[test]
fn a_file_longer_than_its_stat_is_copied_whole() {
    // Past the claimed size requests go one at a time at first, then more as answers come
    // back full; the whole file arrives either way.
    let content = Arc::new(pattern(3 * 1024 * 1024 + 7));
    let server = Hostile::start(Script::LyingStat {
        path: "grown.bin".to_owned(),
        content: Arc::clone(&content),
        claimed: 1000,
    });
    let target = tempfile::tempdir().expect("target dir");
    let before = Listing::of(target.path());
    let local = target.path().join("grown.bin");
    let mut cmd = server.command("smscp");
    cmd.arg(format!("{ADDR}:grown.bin")).arg(&local);
    let run = run_measured(&cmd, b"", KILL_ABOVE_KIB, TIMEOUT);
    assert_bounded(&run);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stderr, "");
    assert!(
        fs::read(&local).expect("the downloaded file") == *content,
        "the copy differs from the file's real bytes"
    );
    assert_eq!(
        before.new_names_except(&["grown.bin"]),
        Vec::<String>::new()
    );
}

#[test]
fn an_endless_directory_listing_ends_with_one_error_line() {
    let server = Hostile::start(Script::EndlessDir {
        path: "tree".to_owned(),
        batch: 1000,
    });
    let target = tempfile::tempdir().expect("target dir");
    let before = Listing::of(target.path());
    let mut cmd = server.command("smscp");
    cmd.current_dir(target.path())
        .args(["-r", &format!("{ADDR}:tree"), "."]);
    let run = run_measured(&cmd, b"", KILL_ABOVE_KIB, TIMEOUT);
    assert_bounded(&run);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.stderr,
        format!(
            "smscp: {ADDR}:tree: directory listing exceeds 1000000 entries: \
             copy its subdirectories or files separately\n"
        )
    );
    // The directory itself is created before it is listed; nothing else is.
    assert_eq!(before.new_names_except(&["tree"]), Vec::<String>::new());
    let inside = fs::read_dir(target.path().join("tree"))
        .expect("the target directory")
        .count();
    assert_eq!(inside, 0, "files were written from a refused listing");
}

#[test]
fn an_endless_line_under_w_is_printed_in_prefixed_pieces() {
    const TOTAL: u64 = 256 * MIB;
    const PIECE: u64 = 64 * 1024;
    let server = Hostile::start(Script::Flood {
        total: TOTAL,
        fill: b'x',
    });
    let mut cmd = server.command("smssh");
    cmd.args(["-w", ADDR, "--", "flood"]);
    let prefix = format!("{ADDR}: ");
    let run = run_measured(&cmd, prefix.as_bytes(), KILL_ABOVE_KIB, TIMEOUT);
    assert_bounded(&run);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stderr, "");
    let out = &run.stdout;
    assert_eq!(out.lines, TOTAL / PIECE, "{out:?}");
    assert_eq!(out.unprefixed_lines, 0, "{out:?}");
    assert_eq!(out.longest_line, prefix.len() as u64 + PIECE, "{out:?}");
    assert_eq!(
        out.bytes,
        TOTAL + out.lines * (prefix.len() as u64 + 1),
        "{out:?}"
    );
}

#[test]
fn a_flood_under_b_is_captured_up_to_the_limit_and_says_so() {
    const TOTAL: u64 = 256 * MIB;
    const LIMIT: u64 = 16 * MIB;
    let server = Hostile::start(Script::Flood {
        total: TOTAL,
        fill: b'x',
    });
    let mut cmd = server.command("smssh");
    cmd.args(["-w", ADDR, "--group", "--", "flood"]);
    let run = run_measured(&cmd, b"", KILL_ABOVE_KIB, TIMEOUT);
    assert_bounded(&run);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stderr, "");
    let rule = "-".repeat(15);
    let header = format!("{rule}\n{ADDR} (1)\n{rule}\n");
    let marker = "\nsmssh: output truncated after 16.00 MiB: the rest was not kept\n";
    let out = &run.stdout;
    assert_eq!(
        out.bytes,
        (header.len() + marker.len()) as u64 + LIMIT,
        "{out:?}"
    );
    assert!(
        out.tail.ends_with(marker.as_bytes()),
        "no truncation marker at the end: {:?}",
        String::from_utf8_lossy(&out.tail)
    );
}

/// The names in `dir`, sorted.
fn names(dir: &Path) -> BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| {
            e.expect("a directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|n| (*n).to_owned()).collect()
}

fn mode_of(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
}

/// The terminal's control bytes a hostile name could carry: none may reach stderr raw.
#[track_caller]
fn assert_no_raw_controls(text: &str) {
    let raw: Vec<char> = text
        .chars()
        .filter(|c| c.is_control() && *c != '\n')
        .collect();
    assert!(raw.is_empty(), "raw control characters {raw:?} in {text:?}");
}

/// A target directory `DIR` inside a parent of its own, so that a write beside `DIR` shows.
struct Target {
    parent: tempfile::TempDir,
}

impl Target {
    fn new() -> Target {
        let parent = tempfile::Builder::new()
            .prefix("smssh-hostile-parent-")
            .tempdir()
            .expect("parent dir");
        fs::create_dir(parent.path().join("DIR")).expect("DIR");
        Target { parent }
    }

    fn dir(&self) -> std::path::PathBuf {
        self.parent.path().join("DIR")
    }
}

#[test]
fn hostile_names_in_a_listing_are_refused_one_line_each_and_plain_ones_copy() {
    let target = Target::new();
    // An absolute name inside the test's own parent directory: were it obeyed, the write
    // would land where this test looks (and not on the machine's /etc).
    let absolute = target.parent.path().join("absolute");
    let absolute = absolute.to_str().expect("a UTF-8 temp path");
    let newline = "new\nline";
    let escapes = "\u{1b}]0;x\u{7}title";
    let listed = [
        "plain",
        ".",
        "..",
        "a/b",
        "/etc/passwd",
        absolute,
        "../../escape",
        newline,
        escapes,
    ];
    // Every hostile name opens on the server too, so that a client that obeyed one would
    // really write a file (except /etc/passwd, which only the listing names).
    let tree = Tree::new()
        .dir("tree", 0o755, &listed)
        .file("tree/plain", 0o644, b"plain\n")
        .file("tree/a/b", 0o644, b"slash\n")
        .file(&format!("tree/{absolute}"), 0o644, b"absolute\n")
        .file("tree/../../escape", 0o644, b"escape\n")
        .file(&format!("tree/{newline}"), 0o644, b"newline\n")
        .file(&format!("tree/{escapes}"), 0o644, b"escapes\n");
    let server = Hostile::start(Script::Tree(Arc::new(tree)));
    let mut cmd = server.command("smscp");
    cmd.arg("-r").arg(format!("{ADDR}:tree")).arg(target.dir());
    let run = run_measured(&cmd, b"", KILL_ABOVE_KIB, SHORT);
    assert_bounded(&run);
    assert_eq!(run.code, Some(1), "{run:?}");
    // `.` and `..` are skipped without a word, as OpenSSH's client does; every other name
    // that is not a plain one is refused with one line that shows it escaped.
    let refused = |name: &str| {
        format!(
            "smscp: {ADDR}:tree: the server sent the file name {name:?}, which is not a plain \
             name: refused\n"
        )
    };
    let expected: String = ["a/b", "/etc/passwd", absolute, "../../escape"]
        .into_iter()
        .map(refused)
        .collect();
    assert_eq!(run.stderr, expected);
    assert_no_raw_controls(&run.stderr);
    // Nothing beside DIR, nothing in DIR but the tree, and in the tree the plain names only:
    // a newline or an escape sequence is a legal file name, copied as it is (as OpenSSH
    // does), and contained in DIR.
    assert_eq!(names(target.parent.path()), set(&["DIR"]));
    assert_eq!(names(&target.dir()), set(&["tree"]));
    let copied = target.dir().join("tree");
    assert_eq!(names(&copied), set(&["plain", newline, escapes]));
    assert_eq!(fs::read(copied.join("plain")).unwrap(), b"plain\n");
    assert_eq!(fs::read(copied.join(newline)).unwrap(), b"newline\n");
    assert_eq!(fs::read(copied.join(escapes)).unwrap(), b"escapes\n");
}

#[test]
fn symlinks_in_a_tree_copy_as_their_targets_and_loops_end_with_one_line_each() {
    // A listing that says what OpenSSH's sftp-server says: a link is a link (LSTAT). As
    // OpenSSH's scp, smscp copies a link to a file as that file (STAT's mode, not the
    // link's 0777) and refuses a link to a directory or one that never resolves.
    let tree = Tree::new()
        .dir("tree", 0o755, &["plain", "link", "up", "dirlink", "self"])
        .file("tree/plain", 0o640, b"plain\n")
        .link("tree/link", "plain")
        .file("outside", 0o600, b"outside\n")
        .link("tree/up", "../outside")
        .link("tree/dirlink", ".")
        .link("tree/self", "self");
    let server = Hostile::start(Script::Tree(Arc::new(tree)));
    let target = Target::new();
    let mut cmd = server.command("smscp");
    cmd.arg("-rp").arg(format!("{ADDR}:tree")).arg(target.dir());
    let run = run_measured(&cmd, b"", KILL_ABOVE_KIB, SHORT);
    assert_bounded(&run);
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(
        run.stderr,
        format!(
            "smscp: {ADDR}:tree/dirlink: not a regular file\n\
             smscp: {ADDR}:tree/self: Too many levels of symbolic links\n"
        )
    );
    assert_eq!(names(target.parent.path()), set(&["DIR"]));
    assert_eq!(names(&target.dir()), set(&["tree"]));
    let copied = target.dir().join("tree");
    assert_eq!(names(&copied), set(&["plain", "link", "up"]));
    for (name, content, mode) in [
        ("plain", &b"plain\n"[..], 0o100640),
        ("link", b"plain\n", 0o100640),
        ("up", b"outside\n", 0o100600),
    ] {
        let path = copied.join(name);
        assert_eq!(
            mode_of(&path),
            mode,
            "{name}: a regular file, with its target's mode"
        );
        assert_eq!(fs::read(&path).unwrap(), content, "{name}");
    }
}

#[test]
fn a_symlink_loop_listed_as_a_directory_stops_at_64_levels_with_one_line() {
    // A server that follows links in its listings says `loop` (a link to its own
    // directory) is a directory, so every level lists it again, and this one resolves any
    // number of links: OpenSSH's scp stops at 64 levels, and so does smscp.
    let tree = Tree::new()
        .without_link_limit()
        .dir("tree", 0o755, &["plain", "loop"])
        .listed_as_dir("tree", "loop", 0o755)
        .file("tree/plain", 0o644, b"plain\n")
        .link("tree/loop", ".");
    let server = Hostile::start(Script::Tree(Arc::new(tree)));
    let target = Target::new();
    let mut cmd = server.command("smscp");
    cmd.arg("-r").arg(format!("{ADDR}:tree")).arg(target.dir());
    let run = run_measured(&cmd, b"", KILL_ABOVE_KIB, SHORT);
    assert_bounded(&run);
    assert_eq!(run.code, Some(1), "{run:?}");
    let deepest = format!("tree{}", "/loop".repeat(64));
    assert_eq!(
        run.stderr,
        format!(
            "smscp: {ADDR}:{deepest}: more than 64 directory levels: not copied \
             (a symbolic link loop?)\n"
        )
    );
    assert_eq!(names(target.parent.path()), set(&["DIR"]));
    assert_eq!(names(&target.dir()), set(&["tree"]));
    // Levels 0 to 63 are copied, each with its file; the 64th is not made.
    let mut level = target.dir().join("tree");
    for depth in 0..64 {
        let expected = if depth < 63 {
            set(&["loop", "plain"])
        } else {
            set(&["plain"])
        };
        assert_eq!(names(&level), expected, "level {depth}");
        assert_eq!(fs::read(level.join("plain")).unwrap(), b"plain\n");
        level = level.join("loop");
    }
}

#[test]
fn setuid_setgid_and_sticky_bits_from_the_server_are_dropped_under_rp() {
    let tree = Tree::new()
        .dir("tree", 0o1777, &["suid", "shared"])
        .file("tree/suid", 0o4755, b"#!/bin/sh\n")
        .dir("tree/shared", 0o3775, &["both"])
        .file("tree/shared/both", 0o6755, b"#!/bin/sh\n");
    let server = Hostile::start(Script::Tree(Arc::new(tree)));
    let target = Target::new();
    let mut cmd = server.command("smscp");
    cmd.arg("-rp").arg(format!("{ADDR}:tree")).arg(target.dir());
    let run = run_measured(&cmd, b"", KILL_ABOVE_KIB, SHORT);
    assert_bounded(&run);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stderr, "");
    let copied = target.dir().join("tree");
    assert_eq!(names(&copied), set(&["suid", "shared"]));
    assert_eq!(names(&copied.join("shared")), set(&["both"]));
    // Directories are made as OpenSSH's scp makes them, even under -p: with the remote bits
    // under this process's umask (the owner can already write and search them).
    let umask = {
        use nix::sys::stat::{umask, Mode};
        let old = umask(Mode::from_bits_truncate(0o022));
        umask(old);
        old.bits()
    };
    for (path, mode) in [
        (copied.clone(), 0o40000 | (0o777 & !umask)),
        (copied.join("suid"), 0o100755),
        (copied.join("shared"), 0o40000 | (0o775 & !umask)),
        (copied.join("shared/both"), 0o100755),
    ] {
        let actual = mode_of(&path);
        assert_eq!(actual, mode, "{}: {actual:o}", path.display());
        assert_eq!(actual & 0o7000, 0, "{}", path.display());
    }
}

fn signal_server(name: &str) -> Hostile {
    Hostile::start(Script::Exit {
        stdout: b"out\n".to_vec(),
        end: End::Signal(name.to_owned()),
    })
}

#[test]
fn an_exit_signal_with_escape_codes_under_w_is_one_escaped_line_and_exit_255() {
    let server = signal_server("KILL\u{1b}[2J\u{7}");
    let mut cmd = server.command("smssh");
    cmd.args(["-w", ADDR, "--", "run"]);
    let run = run_measured(&cmd, b"", KILL_ABOVE_KIB, SHORT);
    assert_bounded(&run);
    // Not a signal ssh knows by that name: 255, as for a command whose end is unknown.
    assert_eq!(run.code, Some(255), "{run:?}");
    assert_eq!(run.stdout.tail, format!("{ADDR}: out\n").as_bytes());
    assert_eq!(
        run.stderr,
        format!("smssh: {ADDR}: killed by signal KILL\\x1b[2J\\x07\n")
    );
    assert_no_raw_controls(&run.stderr);
}

#[test]
fn an_exit_signal_with_a_10_kb_name_under_w_is_one_line_cut_at_64_characters() {
    let name = format!("{}\u{1b}[2J", "X".repeat(10_000));
    let server = signal_server(&name);
    let mut cmd = server.command("smssh");
    cmd.args(["-w", ADDR, "--", "run"]);
    let run = run_measured(&cmd, b"", KILL_ABOVE_KIB, SHORT);
    assert_bounded(&run);
    assert_eq!(run.code, Some(255), "{run:?}");
    assert_eq!(run.stdout.tail, format!("{ADDR}: out\n").as_bytes());
    assert_eq!(
        run.stderr,
        format!(
            "smssh: {ADDR}: killed by signal {}... (a 10004-byte name, cut)\n",
            "X".repeat(64)
        )
    );
    assert_no_raw_controls(&run.stderr);
}

#[test]
fn an_exit_signal_with_a_hostile_name_ends_single_host_smssh_with_255_and_no_line() {
    for name in ["KILL\u{1b}[2J\u{7}".to_owned(), "X".repeat(10_000)] {
        let server = signal_server(&name);
        let mut cmd = server.command("smssh");
        cmd.args([ADDR, "run"]);
        let run = run_measured(&cmd, b"", KILL_ABOVE_KIB, SHORT);
        assert_bounded(&run);
        // As ssh: the remote command's output as it is, no line of our own about the
        // signal, and the status of a command killed by a signal it does not know.
        assert_eq!(run.code, Some(255), "{run:?}");
        assert_eq!(run.stdout.tail, b"out\n");
        assert_eq!(run.stderr, "");
    }
}

#[test]
fn a_host_key_changed_mid_fan_out_fails_that_host_alone_naming_both_fingerprints() {
    // Both addresses are the same server and known_hosts records the same key for both,
    // but the second now presents another.
    let server = Hostile::start_on(
        Script::Exit {
            stdout: b"ok\n".to_vec(),
            end: End::Status(0),
        },
        &[ADDR, ADDR2],
        Some(ADDR2),
    );
    let known_hosts = server.home.path().join(".ssh/known_hosts");
    let before = fs::read_to_string(&known_hosts).expect("known_hosts");
    let mut cmd = server.command("smssh");
    cmd.args([
        "-w",
        &format!("{ADDR},{ADDR2}"),
        "--retries",
        "1",
        "--",
        "run",
    ]);
    let run = run_measured(&cmd, b"", KILL_ABOVE_KIB, SHORT);
    assert_bounded(&run);
    assert_eq!(run.code, Some(255), "{run:?}");
    assert_eq!(run.stdout.tail, format!("{ADDR}: ok\n").as_bytes());
    let port = server.port;
    let changed = server
        .changed_fingerprint
        .as_deref()
        .expect("a changed key");
    assert_ne!(changed, server.host_fingerprint);
    assert_eq!(
        run.stderr,
        format!(
            "smssh: 2 hosts: 1 ok, 1 failed\n\
             smssh: {ADDR2} port {port}: HOST KEY CHANGED: the server presents ssh-ed25519 \
             {changed} but known_hosts has {} ({}:2): someone may be intercepting, or the \
             host was reinstalled; after checking, remove the old entry with \
             ssh-keygen -R '[{ADDR2}]:{port}'\n",
            server.host_fingerprint,
            known_hosts.display(),
        )
    );
    assert_eq!(
        fs::read_to_string(&known_hosts).expect("known_hosts"),
        before,
        "known_hosts changed"
    );
}
