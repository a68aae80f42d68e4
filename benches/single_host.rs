//! Single-host benchmark (issue: smscp/smssh core). Run with
//! `cargo bench --bench single_host` (after ./scripts/test-deps.sh).
//!
//! Side by side in one run, against one real sshd worker on loopback and moto_server:
//! 1. throughput of one 256 MiB upload: smscp (key from the secret) vs OpenSSH scp with the
//!    same key, with its default cipher and with AES-GCM;
//! 2. whole-command latency of a 1 KiB upload, key fetch included, vs `scp -i`;
//! 3. whole-command latency of `smssh host true` vs `ssh -i host true`.
//!
//! Goals (README "Performance"): throughput ratio >= 1.0, latency within 1.3x.
//! Prints medians; this is a report, not a test: it never fails on a slow figure.

#[path = "../tests/common/mod.rs"]
mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(cmd: &mut Command) -> Duration {
    let started = Instant::now();
    let out = run(cmd);
    let elapsed = started.elapsed();
    assert_success(&out);
    elapsed
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let size_mib = env_usize("SMSSH_BENCH_MIB", 256);
    let rounds = env_usize("SMSSH_BENCH_ROUNDS", 3);
    let latency_runs = env_usize("SMSSH_BENCH_LATENCY_RUNS", 20);
    let cluster = Cluster::new(1);
    let big = cluster.scratch.path().join("big.bin");
    {
        let mut data = vec![0u8; size_mib * 1024 * 1024];
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        for chunk in data.chunks_mut(8) {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        std::fs::write(&big, data).expect("write the payload");
    }
    let small = cluster.scratch_file("small.bin", &[7u8; 1024]);
    let remote = tempfile::tempdir().expect("remote dir");
    let target = format!("127.0.0.2:{}/", remote.path().display());

    let smscp = |file: &std::path::Path| {
        let mut cmd = cluster.command("smscp");
        cmd.args(["-q", file.to_str().expect("utf-8"), &target]);
        cmd
    };
    let scp = |file: &std::path::Path, cipher: Option<&str>| {
        let mut cmd = cluster.openssh("scp");
        cmd.arg("-q");
        if let Some(cipher) = cipher {
            cmd.args(["-c", cipher]);
        }
        cmd.args([file.to_str().expect("utf-8"), &target]);
        cmd
    };

    println!(
        "single-host benchmark: {size_mib} MiB x {rounds} rounds, {latency_runs} latency runs"
    );
    let mut ours = Vec::new();
    let mut theirs_default = Vec::new();
    let mut theirs_gcm = Vec::new();
    // Interleaved so that both tools see the same machine load.
    for _ in 0..rounds {
        ours.push(time(&mut smscp(&big)));
        theirs_default.push(time(&mut scp(&big, None)));
        theirs_gcm.push(time(&mut scp(&big, Some("aes128-gcm@openssh.com"))));
    }
    let mib = size_mib as f64;
    let rate = |d: Duration| mib / d.as_secs_f64();
    let (ours, default, gcm) = (median(ours), median(theirs_default), median(theirs_gcm));
    println!(
        "throughput  smscp                     {:>8.1} MiB/s ({:.2}s)",
        rate(ours),
        ours.as_secs_f64()
    );
    println!(
        "throughput  scp (default cipher)      {:>8.1} MiB/s ({:.2}s)",
        rate(default),
        default.as_secs_f64()
    );
    println!(
        "throughput  scp -c aes128-gcm         {:>8.1} MiB/s ({:.2}s)",
        rate(gcm),
        gcm.as_secs_f64()
    );
    println!(
        "throughput ratio smscp/scp: {:.2} (default cipher), {:.2} (aes128-gcm); goal >= 1.0",
        rate(ours) / rate(default),
        rate(ours) / rate(gcm)
    );

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    let mut ssh_ours = Vec::new();
    let mut ssh_theirs = Vec::new();
    for _ in 0..latency_runs {
        ours.push(time(&mut smscp(&small)));
        theirs.push(time(&mut scp(&small, None)));
        ssh_ours.push(time(cluster.command("smssh").args(["127.0.0.2", "true"])));
        ssh_theirs.push(time(cluster.openssh("ssh").args(["127.0.0.2", "true"])));
    }
    let (ours, theirs) = (median(ours), median(theirs));
    let (ssh_ours, ssh_theirs) = (median(ssh_ours), median(ssh_theirs));
    println!(
        "latency     smscp 1 KiB (key fetch incl.) {:>6.1} ms",
        ours.as_secs_f64() * 1e3
    );
    println!(
        "latency     scp -i 1 KiB                  {:>6.1} ms",
        theirs.as_secs_f64() * 1e3
    );
    println!(
        "latency     smssh host true               {:>6.1} ms",
        ssh_ours.as_secs_f64() * 1e3
    );
    println!(
        "latency     ssh -i host true              {:>6.1} ms",
        ssh_theirs.as_secs_f64() * 1e3
    );
    println!(
        "latency ratio smscp/scp: {:.2}; smssh/ssh: {:.2}; goal <= 1.3",
        ours.as_secs_f64() / theirs.as_secs_f64(),
        ssh_ours.as_secs_f64() / ssh_theirs.as_secs_f64()
    );
}
