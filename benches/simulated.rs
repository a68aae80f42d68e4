//! Simulated-scale benchmark (issue 13, "10,000 hosts, simulated"): what the master pays per
//! host when the hosts cost (almost) nothing. Run with
//!
//! ```sh
//! SMSSH_TEST_MOTO=$PWD/.venv/bin/moto_server cargo bench --bench simulated
//! ```
//!
//! Real sshd workers on one machine burn far more CPU than the master that drives them, so a
//! loopback fan-out to 1,000 of them measures the workers. Here every host is one of 10,000
//! distinct loopback addresses (127.1.0.1 .. 127.1.39.250) answered by a single lightsshd
//! process (benches/lightsshd: russh's server side, exec `true` and SFTP writes into a
//! checksum), built in release mode by this benchmark. For each host count
//! (`SMSSH_SIM_HOSTS`, default 1000,2000,5000,10000), each fan-out (`SMSSH_SIM_JOBS`, default
//! 64 = smssh's default, 256 and 1024) and each job (`SMSSH_SIM_JOBS_KINDS`, default `true`
//! and `push`: a 64 KiB file, `SMSSH_SIM_PUSH_KIB`), it runs
//!
//! - `smssh -w HOSTS -j N -- true`, or
//! - `smscp -j N FILE HOSTS:payload`,
//!
//! against a fresh lightsshd, and records the wall time, smssh's user+system CPU and peak RSS
//! (GNU time's `%U %S %M`), its peak number of open file descriptors (entries of
//! /proc/PID/fd, sampled every 10 ms), and lightsshd's own CPU (utime+stime from /proc) and
//! peak RSS, so a reader sees who paid what. A run counts only if smssh exits 0 and the
//! server's counters show one login and one `true` (or one file with the payload's SHA-256)
//! per host; otherwise its last error lines are reported and the run is not timed. Rounds
//! (`SMSSH_BENCH_ROUNDS`, default 1) repeat each point; the table shows medians.
//!
//! Before each point it waits (at most `SMSSH_SIM_QUIET_SECS`, default 0) for the 1-minute
//! load average to drop under 1.0, and records the load it started with.
//!
//! The open-file soft limit is raised to the hard limit first, and smssh inherits it.
//!
//! Output: a markdown table on stdout and in target/bench/simulated.md, and the raw figures
//! in target/bench/simulated.json. A report, not a test: it never fails on a slow figure.

#[path = "../tests/common/mod.rs"]
mod common;
// Each bench uses a subset of what the benches share.
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use support::*;

/// How long one smssh run may take before it is killed and reported as failed.
const RUN_LIMIT: Duration = Duration::from_secs(900);
/// How often the open descriptors and memory of the running smssh are sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(10);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Job {
    True,
    Push,
}

impl Job {
    fn name(self) -> &'static str {
        match self {
            Job::True => "true",
            Job::Push => "push",
        }
    }
}

/// What one successful run measured.
#[derive(Clone, Debug)]
struct Sample {
    wall: f64,
    client_cpu: f64,
    client_rss_kib: u64,
    client_fds: usize,
    server_cpu: f64,
    server_rss_kib: u64,
    server_peak_sessions: u64,
    load: f64,
}

/// The client's files and environment: a HOME with the key pair, moto holding it.
struct Setup {
    home: tempfile::TempDir,
    moto: Moto,
    server: PathBuf,
    payload: PathBuf,
    payload_sha256: String,
    payload_len: u64,
}

fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_owned())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn load_average() -> f64 {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(f64::NAN)
}

/// Waits up to `limit` for the 1-minute load average to drop under 1.0 (polled every 30 s),
/// and returns the load it ended with.
fn wait_for_quiet(limit: Duration) -> f64 {
    let deadline = Instant::now() + limit;
    loop {
        let load = load_average();
        if load < 1.0 || Instant::now() >= deadline {
            return load;
        }
        eprintln!("bench: load average {load:.2}; waiting for a quiet machine");
        std::thread::sleep(Duration::from_secs(30).min(deadline - Instant::now()));
    }
}

/// Builds lightsshd in release mode (cargo builds it only as a workspace member, never as a
/// dependency of smssh) and returns its path.
fn build_lightsshd() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "-p", "lightsshd"])
        .current_dir(REPO)
        .status()
        .expect("cannot run cargo to build lightsshd");
    assert!(
        status.success(),
        "cargo build --release -p lightsshd failed"
    );
    let path = target_dir().join("release/lightsshd");
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

fn setup() -> Setup {
    let server = build_lightsshd();
    let moto = Moto::start();
    let home = tempfile::Builder::new()
        .prefix("smssh-sim-home-")
        .tempdir()
        .expect("cannot create the bench HOME");
    let ssh = home.path().join(".ssh");
    fs::create_dir_all(&ssh).expect("cannot create HOME/.ssh");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "smssh-bench", "-f"])
        .arg(ssh.join("id"))
        .stdin(Stdio::null())
        .status()
        .expect("cannot run ssh-keygen");
    assert!(status.success(), "ssh-keygen failed");
    let private = fs::read_to_string(ssh.join("id")).expect("the private key");
    let public = fs::read_to_string(ssh.join("id.pub")).expect("the public key");
    moto.put_secret_string(SECRET_ID, &key_secret_json(&private, public.trim_end()));
    let kib = env_usize("SMSSH_SIM_PUSH_KIB", 64);
    let content: Vec<u8> = (0..kib * 1024).map(|i| (i * 7 % 251) as u8).collect();
    let payload = home.path().join("payload.bin");
    fs::write(&payload, &content).expect("cannot write the payload");
    let payload_sha256 = sha256_hex(&content);
    Setup {
        home,
        moto,
        server,
        payload,
        payload_sha256,
        payload_len: content.len() as u64,
    }
}

/// A /proc field of `pid`'s status file, in KiB.
fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn open_fds(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|entries| entries.count())
        .unwrap_or(0)
}

/// One run: a fresh lightsshd, smssh/smscp under GNU time, the counters checked.
fn run_once(setup: &Setup, job: Job, hosts: usize, jobs: usize) -> Result<Sample, String> {
    let ssh = setup.home.path().join(".ssh");
    let server = Lightsshd::start(&setup.server, &ssh.join("id.pub"), setup.home.path());
    fs::write(
        ssh.join("config"),
        format!("Host 127.*\n    Port {}\n", server.port),
    )
    .expect("cannot write HOME/.ssh/config");
    fs::write(
        ssh.join("known_hosts"),
        format!("[127.*]:{} {}\n", server.port, server.host_key_line),
    )
    .expect("cannot write HOME/.ssh/known_hosts");

    let scratch = tempfile::Builder::new()
        .prefix("smssh-sim-run-")
        .tempdir()
        .expect("cannot create a temp dir for the run");
    let report = scratch.path().join("time");
    let list = Lightsshd::hostlist(hosts);
    let mut cmd = harness_environment(
        Command::new("/usr/bin/time"),
        setup.home.path(),
        &setup.moto,
    );
    cmd.args(["-f", "%e %U %S %M", "-o"]).arg(&report);
    match job {
        Job::True => {
            cmd.arg(binary_path("smssh"))
                .args(["-w", &list, "-j", &jobs.to_string(), "--", "true"])
        }
        Job::Push => cmd
            .arg(binary_path("smscp"))
            .args(["-j", &jobs.to_string()])
            .arg(&setup.payload)
            .arg(format!("{list}:payload")),
    };
    let stdout = fs::File::create(scratch.path().join("stdout")).expect("stdout file");
    let stderr = fs::File::create(scratch.path().join("stderr")).expect("stderr file");
    cmd.stdout(stdout).stderr(stderr);

    let load = load_average();
    let started = Instant::now();
    let mut time = cmd
        .spawn()
        .expect("cannot start /usr/bin/time (GNU time; install the `time` package)");
    let mut client: Option<u32> = None;
    let mut peak_fds = 0usize;
    let mut peak_rss = 0u64;
    let status = loop {
        if let Some(status) = time.try_wait().expect("cannot poll GNU time") {
            break status;
        }
        if client.is_none() {
            client = processes()
                .into_iter()
                .find(|(_, ppid, _)| *ppid == time.id())
                .map(|(pid, _, _)| pid);
        }
        if let Some(pid) = client {
            peak_fds = peak_fds.max(open_fds(pid));
            peak_rss = peak_rss.max(status_kib(pid, "VmHWM:").unwrap_or(0));
        }
        if started.elapsed() > RUN_LIMIT {
            let _ = time.kill();
            if let Some(pid) = client {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            let _ = time.wait();
            return Err(format!("still running after {RUN_LIMIT:?}; killed"));
        }
        std::thread::sleep(SAMPLE_EVERY);
    };
    let wall = started.elapsed().as_secs_f64();
    let server_cpu = tree_cpu(&[server.pid()], clock_ticks());
    let server_rss_kib = status_kib(server.pid(), "VmHWM:").unwrap_or(0);
    let counters = server.stop();
    let errors = fs::read_to_string(scratch.path().join("stderr")).unwrap_or_default();
    let timed = fs::read_to_string(&report).unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "exit {status}\n{}\n{}",
            tail(&errors),
            timed.trim()
        ));
    }
    let count = |name: &str| counters.get(name).copied().unwrap_or(0);
    let n = hosts as u64;
    let verified = match job {
        Job::True => count("logins") == n && count("exec_true") == n,
        Job::Push => {
            count("logins") == n
                && count("files") == n
                && count("bytes") == n * setup.payload_len
                && count(&format!("sha256 {}", setup.payload_sha256)) == n
        }
    };
    if !verified {
        return Err(format!("the server's counters do not match: {counters:?}"));
    }
    // GNU time's last line is "%e %U %S %M" (earlier lines would be its own notes).
    let fields: Vec<f64> = timed
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [_, user, system, rss] = fields[..] else {
        return Err(format!("GNU time reported {timed:?}"));
    };
    Ok(Sample {
        wall,
        client_cpu: user + system,
        client_rss_kib: (rss as u64).max(peak_rss),
        client_fds: peak_fds,
        server_cpu,
        server_rss_kib,
        server_peak_sessions: count("peak_sessions"),
        load,
    })
}

struct Point {
    job: Job,
    hosts: usize,
    jobs: usize,
    samples: Vec<Sample>,
    failure: Option<String>,
}

fn med(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    let mut values: Vec<f64> = samples.iter().map(f).collect();
    median(&mut values)
}

fn max_of(samples: &[Sample], f: impl Fn(&Sample) -> f64) -> f64 {
    samples.iter().map(f).fold(0.0, f64::max)
}

fn table(points: &[Point], rounds: usize) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "## Simulated hosts: what smssh pays per host (lightsshd, median of {rounds})\n"
    );
    let _ = writeln!(
        out,
        "| job | hosts | -j | wall s | smssh CPU s | smssh CPU ms/host | smssh peak RSS MiB | smssh peak fds | lightsshd CPU s | lightsshd peak RSS MiB | peak sessions | load at start |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for p in points {
        if let Some(failure) = &p.failure {
            let first = failure.lines().next().unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {} | {} | failed: {} | | | | | | | | |",
                p.job.name(),
                p.hosts,
                p.jobs,
                first.replace('|', "\\|")
            );
            continue;
        }
        let s = &p.samples;
        let cpu = med(s, |x| x.client_cpu);
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.2} | {:.3} | {:.1} | {} | {:.2} | {:.1} | {} | {:.2} |",
            p.job.name(),
            p.hosts,
            p.jobs,
            med(s, |x| x.wall),
            cpu,
            cpu * 1000.0 / p.hosts as f64,
            max_of(s, |x| x.client_rss_kib as f64) / 1024.0,
            max_of(s, |x| x.client_fds as f64),
            med(s, |x| x.server_cpu),
            max_of(s, |x| x.server_rss_kib as f64) / 1024.0,
            max_of(s, |x| x.server_peak_sessions as f64),
            s.first().map(|x| x.load).unwrap_or(f64::NAN),
        );
    }
    out
}

fn json(points: &[Point]) -> String {
    let rows: Vec<serde_json::Value> = points
        .iter()
        .map(|p| {
            serde_json::json!({
                "job": p.job.name(),
                "hosts": p.hosts,
                "jobs": p.jobs,
                "failure": p.failure,
                "samples": p.samples.iter().map(|s| serde_json::json!({
                    "wall_s": s.wall,
                    "smssh_cpu_s": s.client_cpu,
                    "smssh_rss_kib": s.client_rss_kib,
                    "smssh_peak_fds": s.client_fds,
                    "lightsshd_cpu_s": s.server_cpu,
                    "lightsshd_rss_kib": s.server_rss_kib,
                    "peak_sessions": s.server_peak_sessions,
                    "load_at_start": s.load,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::to_string_pretty(&rows).unwrap_or_default()
}

fn main() {
    raise_nofile();
    let setup = setup();
    let hosts: Vec<usize> = env_list("SMSSH_SIM_HOSTS", "1000,2000,5000,10000")
        .iter()
        .filter_map(|s| s.parse().ok())
        .filter(|&n| (1..=250 * 256).contains(&n))
        .collect();
    let fanouts: Vec<usize> = env_list("SMSSH_SIM_JOBS", "64,256,1024")
        .iter()
        .filter_map(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .collect();
    let kinds: Vec<Job> = env_list("SMSSH_SIM_JOBS_KINDS", "true,push")
        .iter()
        .filter_map(|s| match s.as_str() {
            "true" => Some(Job::True),
            "push" => Some(Job::Push),
            _ => None,
        })
        .collect();
    let rounds = env_usize("SMSSH_BENCH_ROUNDS", 1).max(1);
    let quiet = Duration::from_secs(env_usize("SMSSH_SIM_QUIET_SECS", 0) as u64);

    let mut points = Vec::new();
    for &job in &kinds {
        for &n in &hosts {
            for &j in &fanouts {
                wait_for_quiet(quiet);
                let mut point = Point {
                    job,
                    hosts: n,
                    jobs: j,
                    samples: Vec::new(),
                    failure: None,
                };
                for round in 0..rounds {
                    match run_once(&setup, job, n, j) {
                        Ok(sample) => {
                            eprintln!(
                                "bench: {} N={n} -j {j} round {round}: {:.2} s wall, {:.2} s smssh CPU, {:.1} MiB, {} fds, lightsshd {:.2} s CPU (load {:.2})",
                                job.name(),
                                sample.wall,
                                sample.client_cpu,
                                sample.client_rss_kib as f64 / 1024.0,
                                sample.client_fds,
                                sample.server_cpu,
                                sample.load
                            );
                            point.samples.push(sample);
                        }
                        Err(why) => {
                            eprintln!("bench: {} N={n} -j {j} failed:\n{why}", job.name());
                            point.failure = Some(why);
                            point.samples.clear();
                            break;
                        }
                    }
                }
                points.push(point);
            }
        }
    }

    let markdown = table(&points, rounds);
    print!("{markdown}");
    let dir = target_dir().join("bench");
    let _ = fs::create_dir_all(&dir);
    let _ = fs::write(dir.join("simulated.md"), &markdown);
    let _ = fs::write(dir.join("simulated.json"), json(&points));
}
