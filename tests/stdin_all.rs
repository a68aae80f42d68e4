//! `--stdin-all` against real sshd workers: the local stdin read once and streamed to every
//! host's command in bounded memory, checked by each host's own `sha256sum` and by GNU time's
//! peak RSS of smssh.

mod common;

use std::collections::BTreeMap;
use std::process::{Command, Output, Stdio};

use common::*;

const HOSTS: &str = "127.0.0.[2-4]";

/// 64 MiB of a pattern that no window size divides evenly.
fn input_file(cluster: &Cluster, len: usize) -> std::path::PathBuf {
    let data: Vec<u8> = (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 20) as u8)
        .collect();
    cluster.scratch_file("input.bin", &data)
}

/// The local `sha256sum` of `path`: a tool we did not write.
fn local_sha256(path: &std::path::Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    assert_success(&out);
    stdout(&out)
        .split_whitespace()
        .next()
        .expect("a checksum")
        .to_owned()
}

/// `smssh ARGS` under GNU time, stdin from `input`.
fn smssh_timed(cluster: &Cluster, input: &std::path::Path, args: &[&str]) -> Output {
    let smssh = cluster.command("smssh");
    let mut cmd = Command::new("/usr/bin/time");
    cmd.env_clear();
    for (name, value) in smssh.get_envs() {
        if let Some(value) = value {
            cmd.env(name, value);
        }
    }
    cmd.arg("-v")
        .arg(smssh.get_program())
        .args(args)
        .stdin(Stdio::from(std::fs::File::open(input).expect("input")));
    run(&mut cmd)
}

fn peak_rss_kib(out: &Output) -> u64 {
    stderr(out)
        .lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix("Maximum resident set size (kbytes): ")
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("GNU time printed no peak RSS\n{}", describe(out)))
}

/// `host: checksum  -` lines as host -> checksum.
fn checksums(out: &Output) -> BTreeMap<String, String> {
    stdout(out)
        .lines()
        .map(|line| {
            let (host, rest) = line.split_once(": ").expect("host: line");
            let sum = rest.split_whitespace().next().expect("checksum");
            (host.to_owned(), sum.to_owned())
        })
        .collect()
}

#[test]
fn sixty_four_mib_reach_every_host_whole_in_bounded_memory() {
    let cluster = Cluster::new(3);
    let input = input_file(&cluster, 64 * 1024 * 1024);
    let want = local_sha256(&input);
    let out = smssh_timed(
        &cluster,
        &input,
        &["-w", HOSTS, "--stdin-all", "--", "sha256sum"],
    );
    assert_success(&out);
    let got = checksums(&out);
    assert_eq!(got.len(), 3, "{}", describe(&out));
    for (host, sum) in &got {
        assert_eq!(sum, &want, "{host} got other bytes");
    }
    let peak = peak_rss_kib(&out);
    // The same run with 1 KiB of stdin is the baseline: what smssh needs for three sessions.
    let tiny = cluster.scratch_file("tiny.bin", &[7u8; 1024]);
    let baseline = smssh_timed(
        &cluster,
        &tiny,
        &["-w", HOSTS, "--stdin-all", "--", "sha256sum"],
    );
    assert_success(&baseline);
    let baseline = peak_rss_kib(&baseline);
    // The window is 16 MiB and the sessions' send windows a few more; half the input is a
    // bound that only a bounded window stays under.
    let growth = peak.saturating_sub(baseline);
    eprintln!("peak RSS: {peak} KiB with 64 MiB of stdin, {baseline} KiB with 1 KiB");
    assert!(
        growth < 32 * 1024,
        "smssh grew by {growth} KiB (peak {peak}, baseline {baseline}) for a 64 MiB stdin\n{}",
        describe(&out)
    );
}

#[test]
fn a_host_that_stops_reading_or_never_logs_in_leaves_and_short_input_works_with_any_j() {
    let mut cluster = Cluster::new(4);
    cluster.workers[3].stop();
    let input = input_file(&cluster, 40 * 1024 * 1024);
    let want = local_sha256(&input);
    // 127.0.0.3 reads 100 bytes and ends, 127.0.0.5 is down; the others must still get
    // everything.
    let script = "set -- $SSH_CONNECTION; case $3 in 127.0.0.3) head -c 100 >/dev/null; echo early;; *) sha256sum;; esac";
    let out = smssh_timed(
        &cluster,
        &input,
        &["-w", "127.0.0.[2-5]", "--stdin-all", "--", script],
    );
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "127.0.0.5");
    let got = checksums(&out);
    assert_eq!(got.len(), 3, "{}", describe(&out));
    assert_eq!(got["127.0.0.3"], "early");
    assert_eq!(got["127.0.0.2"], want);
    assert_eq!(got["127.0.0.4"], want);
    // Input shorter than the window is held whole: one host at a time still gets all of it.
    let small = cluster.scratch_file("small.txt", b"one\ntwo\nthree\n");
    let out = smssh_timed(
        &cluster,
        &small,
        &["-j", "1", "-w", HOSTS, "--stdin-all", "--", "wc", "-l"],
    );
    assert_success(&out);
    let got = checksums(&out);
    assert_eq!(got.values().collect::<Vec<_>>(), ["3", "3", "3"]);
}

#[test]
fn more_stdin_than_the_window_with_hosts_waiting_for_a_turn_fails_them_by_name() {
    let cluster = Cluster::new(3);
    let input = input_file(&cluster, 40 * 1024 * 1024);
    let want = local_sha256(&input);
    let out = smssh_timed(
        &cluster,
        &input,
        &["-j", "1", "-w", HOSTS, "--stdin-all", "--", "sha256sum"],
    );
    assert_exit_code(&out, 255);
    // The first host got everything; the others were refused in one line each.
    let got = checksums(&out);
    assert_eq!(got.len(), 1, "{}", describe(&out));
    assert_eq!(got.values().next(), Some(&want));
    let refused = stderr(&out)
        .lines()
        .filter(|l| l.contains("--stdin-all: stdin had moved past its first 16 MiB"))
        .count();
    assert_eq!(refused, 2, "{}", describe(&out));
    // Without --stdin-all, a fan-out's commands read end-of-file, as with pdsh.
    let out = smssh_timed(&cluster, &input, &["-w", HOSTS, "--", "wc", "-c"]);
    assert_success(&out);
    assert!(
        checksums(&out).values().all(|count| count == "0"),
        "{}",
        describe(&out)
    );
}
