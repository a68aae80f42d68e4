//! The progress display on a real pseudo-terminal (util-linux `script`): a copy ends with one
//! line left on screen giving its size, the time since the first byte and the rate, which is
//! never slower than the size over the whole run (the rate once counted the key fetch and the
//! login as transfer time), and no `0 B/0 B` bar is ever drawn.

mod common;

use std::process::Command;
use std::time::Instant;

use common::*;

#[test]
fn a_copy_on_a_terminal_leaves_a_true_final_line() {
    let cluster = Cluster::new(1);
    let size = 20 << 20;
    let payload: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
    let source = cluster.scratch_file("payload", &payload);
    let remote = tempfile::tempdir().expect("remote dir");
    let copy = format!(
        "{} {} 127.0.0.2:{}/copy",
        binary_path("smscp"),
        source.display(),
        remote.path().display()
    );
    let mut cmd = harness_environment(Command::new("script"), cluster.home.path(), &cluster.moto);
    cmd.env("TERM", "xterm").args(["-qec", &copy, "/dev/null"]);
    let started = Instant::now();
    let out = run(&mut cmd);
    let wall = started.elapsed().as_secs_f64();
    assert_success(&out);
    assert_eq!(
        std::fs::read(remote.path().join("copy"))
            .expect("copied")
            .len(),
        size
    );
    let screen = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        !screen.contains("0 B/0 B"),
        "an empty full bar was drawn\n{screen}"
    );
    let plain = without_escapes(&screen);
    let last = plain
        .split(['\r', '\n'])
        .map(str::trim)
        .rfind(|l| l.starts_with("20.00 MiB in "))
        .unwrap_or_else(|| {
            let tail: String = plain
                .chars()
                .rev()
                .take(400)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect();
            panic!("no final line with the size; the screen ends with\n{tail:?}")
        })
        .to_owned();
    // `20.00 MiB in 0.31 s, 64.52 MiB/s`
    let fields: Vec<&str> = last.split_whitespace().collect();
    assert_eq!(fields.len(), 7, "{last}");
    let seconds: f64 = fields[3].parse().expect("seconds");
    let scale = match fields[6] {
        "KiB/s" => 1.0 / 1024.0,
        "MiB/s" => 1.0,
        "GiB/s" => 1024.0,
        other => panic!("{last}: unexpected unit {other}"),
    };
    let rate: f64 = fields[5].parse::<f64>().expect("rate") * scale;
    assert!(
        seconds > 0.0 && seconds <= wall,
        "{last}: the run took {wall:.2} s"
    );
    assert!(
        // The time is shown to 0.01 s, so the product may be off by up to half of that.
        (rate * seconds - 20.0).abs() <= rate * 0.006 + 0.1,
        "{last}: the rate is the size over the time shown"
    );
    assert!(
        rate >= 20.0 / wall,
        "{last}: slower than the size over the whole run ({wall:.2} s)"
    );
}

/// The text of a terminal stream without its CSI escape sequences (`ESC [ ... letter`).
fn without_escapes(screen: &str) -> String {
    let mut out = String::with_capacity(screen.len());
    let mut chars = screen.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
