//! smscp and smssh against a hostile server (tests/hostile): whatever sizes, listings and
//! outputs it sends, the binaries' memory stays bounded and each case ends with an exact
//! outcome. Every run is measured: the binary's peak resident set (VmHWM) must stay under
//! [`BOUND_KIB`], and a run that grows past twice that is killed rather than allowed to take
//! the machine's memory.

mod common;
mod hostile;

use std::fs;
use std::sync::Arc;
use std::time::Duration;

use common::Listing;
use hostile::{run_measured, Hostile, Measured, Script, ADDR};

/// The peak resident set every run must stay under.
const BOUND_KIB: u64 = 200 * 1024;
/// A run whose resident set passes this is killed: it is growing without bound.
const KILL_ABOVE_KIB: u64 = 2 * BOUND_KIB;
/// A run still going after this is killed: it is not making progress.
const TIMEOUT: Duration = Duration::from_secs(180);
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
    cmd.args(["-w", ADDR, "-b", "--", "flood"]);
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
