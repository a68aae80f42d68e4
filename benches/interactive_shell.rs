//! What the interactive shell's open sessions save: L command lines on N real sshd workers
//! typed into one `smssh -w H` shell (one login per host, then a channel per line), against
//! the same L lines as L separate `smssh -w H --group -- LINE` fan-outs (a secret fetch and a
//! login per host for every line). N = 32 (`SMSSH_BENCH_SHELL_HOSTS`), L = 20
//! (`SMSSH_BENCH_SHELL_LINES`). Run with
//!
//! ```sh
//! SMSSH_TEST_MOTO=$PWD/.venv/bin/moto_server cargo bench --bench interactive_shell
//! ```
//!
//! The line is `hostname`; every run is checked (exit status 0, and each line's answer grouped
//! under all N hosts), and a failed run is reported, not timed. The shell's time per line is
//! the difference between a shell given L + 1 lines and one given a single line, divided by
//! L, so that its logins are left out. Rounds (`SMSSH_BENCH_ROUNDS`, default 3) alternate the
//! two; the table shows medians. Output: a markdown table on stdout and in
//! target/bench/interactive_shell.md. A report, not a test: it never fails on a slow figure.

#[path = "../tests/common/mod.rs"]
mod common;
// Shared with the other benches; this one needs only a few of its helpers.
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::process::Output;
use std::time::{Duration, Instant};

use common::*;
use support::*;

const LINE: &str = "hostname";

/// Checks that `out` succeeded and holds `lines` groups of all `n` hosts.
fn check(out: &Output, n: usize, lines: usize) -> Result<(), String> {
    if !out.status.success() {
        return Err(format!(
            "exit {:?}: {}",
            out.status.code(),
            tail(&stderr(out))
        ));
    }
    let header = format!("({n})");
    let groups = stdout(out).lines().filter(|l| l.ends_with(&header)).count();
    if groups != lines {
        return Err(format!(
            "{groups} groups of {n} hosts for {lines} lines: {}",
            tail(&stdout(out))
        ));
    }
    Ok(())
}

/// Seconds for a shell fed `lines` lines.
fn shell(cluster: &Cluster, hosts: &str, n: usize, lines: usize) -> Result<f64, String> {
    let script = format!("{LINE}\n").repeat(lines);
    let started = Instant::now();
    let out = run_with_stdin(
        cluster
            .command("smssh")
            .args(["-w", hosts, "-j", &n.to_string()]),
        script.as_bytes(),
    );
    let seconds = started.elapsed().as_secs_f64();
    // Hosts whose names differ answer in separate groups; here every worker's hostname is
    // the machine's, so one group per line holds all N.
    check(&out, n, lines).map(|()| seconds)
}

/// Seconds for `lines` separate fan-outs.
fn fanouts(cluster: &Cluster, hosts: &str, n: usize, lines: usize) -> Result<f64, String> {
    let started = Instant::now();
    for _ in 0..lines {
        let out = run(cluster.command("smssh").args([
            "--group",
            "-w",
            hosts,
            "-j",
            &n.to_string(),
            "--",
            LINE,
        ]));
        check(&out, n, 1)?;
    }
    Ok(started.elapsed().as_secs_f64())
}

fn main() {
    raise_nofile();
    let n = env_usize("SMSSH_BENCH_SHELL_HOSTS", 32).clamp(1, 250);
    let lines = env_usize("SMSSH_BENCH_SHELL_LINES", 20).max(1);
    let rounds = env_usize("SMSSH_BENCH_ROUNDS", 3).max(1);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("interactive shell benchmark: N = {n} sshd workers, L = {lines} lines, {rounds} rounds, {cores} cores");
    let load_before = loadavg();
    let cluster = Cluster::new(n);
    let hosts = hostlist(n);
    let (mut one, mut many, mut separate) = (Vec::new(), Vec::new(), Vec::new());
    let mut failure = None;
    for _ in 0..rounds {
        let round = shell(&cluster, &hosts, n, 1).and_then(|a| {
            let b = shell(&cluster, &hosts, n, lines + 1)?;
            let c = fanouts(&cluster, &hosts, n, lines)?;
            Ok((a, b, c))
        });
        match round {
            Ok((a, b, c)) => {
                one.push(a);
                many.push(b);
                separate.push(c);
            }
            Err(err) => {
                failure = Some(err);
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut table = String::new();
    let _ = writeln!(
        table,
        "# Interactive shell: {lines} lines of `{LINE}` on {n} hosts\n\nload average at start: {load_before}; at end: {}\n",
        loadavg()
    );
    match failure {
        Some(err) => {
            let _ = writeln!(table, "failed: {err}");
        }
        None => {
            let (one, many, separate) =
                (median(&mut one), median(&mut many), median(&mut separate));
            let per_line = (many - one) / lines as f64;
            let _ = writeln!(table, "| run | wall time (median) | per line |");
            let _ = writeln!(table, "|---|---|---|");
            let _ = writeln!(table, "| shell, 1 line (logins included) | {one:.2} s | |");
            let _ = writeln!(
                table,
                "| shell, {} lines | {many:.2} s | {:.0} ms |",
                lines + 1,
                per_line * 1000.0
            );
            let _ = writeln!(
                table,
                "| {lines} separate `smssh --group -w` runs | {separate:.2} s | {:.0} ms |",
                separate / lines as f64 * 1000.0
            );
        }
    }
    print!("{table}");
    let dir = target_dir().join("bench");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("interactive_shell.md"), table);
}
