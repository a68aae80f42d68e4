//! Fan-out benchmark (issue: "Fan-out ... faster than pdsh, pssh, ClusterShell and Ansible";
//! issue 13: "Fair peers", "The nearest peer joins the table"). Run with
//!
//! ```sh
//! ./scripts/bench-deps.sh && SMSSH_TEST_MOTO=$PWD/.venv/bin/moto_server cargo bench --bench fanout
//! ```
//!
//! Side by side in one run, against N real sshd workers on loopback (N = 32 and 128 by
//! default; `SMSSH_BENCH_HOSTS="32,128"`), the wall time of two jobs:
//! 1. `true` on every host: `smssh -w` vs bssh, pdsh, parallel-ssh (pssh), clush, Ansible
//!    ad-hoc (`-m command`) and `xargs -P N ssh`;
//! 2. a 16 MiB file (`SMSSH_BENCH_MIB`) to every host: `smscp` vs `bssh upload`, pdcp,
//!    parallel-scp, `clush --copy`, Ansible `-m copy` and `xargs -P N scp`.
//!
//! Every OpenSSH-based peer runs twice: with OpenSSH 9.2's defaults (sntrup761x25519 key
//! exchange, chacha20-poly1305), and a "tuned" row with `-o KexAlgorithms=curve25519-sha256
//! -o Ciphers=aes128-gcm@openssh.com`, what smssh negotiates with these workers, so that the
//! comparison is like for like. bssh (russh-based, like smssh) runs once.
//! `SMSSH_BENCH_TOOLS="pdsh,pdsh (tuned)"` limits the peers.
//!
//! Every tool gets a fan-out of N, the same key file, the cluster's ssh_config and
//! known_hosts, strict host-key checking and (OpenSSH) `BatchMode=yes`; smssh and smscp take
//! the key from the secret in moto, as in the tests. Every copy lands in each worker's own
//! SFTP home (`payload`, a relative path), so N real files are written: the SFTP- and
//! scp-based tools get the relative path, Ansible an absolute per-host `dest` from its
//! inventory, and pdcp a remote wrapper (`PDSH_REMOTE_PDCP_PATH`) that enters the home of the
//! worker it runs on (read from `SSH_CONNECTION`) before exec'ing the real pdcp.
//!
//! Each run is checked (exit status 0, per-host success lines where the tool prints them, and
//! for copies every host's file by SHA-256 against the source's); a tool that fails is
//! reported as failed, never timed, and is not run again. Rounds (`SMSSH_BENCH_ROUNDS`,
//! default 3) interleave the tools in a rotating order; the tables show medians.
//!
//! The floor: the CPU time the workers' sshd trees (sshd, the session, sftp-server, the
//! command) spend during the smssh/smscp run, counted by a cgroup around the workers
//! (support's `WorkerCpu`), divided by the number of cores: no client can make N logins
//! finish sooner. Every worker serves one untimed login first (`warm_up`). Every tool runs under `/usr/bin/time`, which gives the master's side: the CPU time
//! of the tool's whole process tree (each ssh or scp it reaped) and its largest RSS; for a
//! copy the table divides that CPU by the GiB delivered (size x N), and compares smscp's with
//! OpenSSH scp's with the same cipher (the tuned xargs+openssh row). The load average is
//! recorded at the start and end of the run.
//!
//! Output: markdown tables on stdout and in target/bench/fanout.md, the raw figures in
//! target/bench/fanout.json and a chart, target/bench/fanout.png, drawn by
//! benches/fanout_chart.py. A report, not a test: it never fails on a slow figure.

#[path = "../tests/common/mod.rs"]
mod common;
// Each bench uses a subset of what the benches share.
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use support::*;

const PAYLOAD: &str = "payload";

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Job {
    True,
    Copy,
}

impl Job {
    fn name(self) -> &'static str {
        match self {
            Job::True => "true",
            Job::Copy => "copy",
        }
    }
}

/// The tools, smssh first. Each OpenSSH-based peer runs twice: with OpenSSH's defaults, and
/// "tuned" with [`TUNED_OPTS`] (the key exchange and cipher smssh negotiates), so that the
/// comparison is like for like.
const TOOLS: [&str; 12] = [
    "smssh",
    "bssh",
    "pdsh",
    "pdsh (tuned)",
    "pssh",
    "pssh (tuned)",
    "clush",
    "clush (tuned)",
    "ansible",
    "ansible (tuned)",
    "xargs+openssh",
    "xargs+openssh (tuned)",
];

const TUNED: &str = " (tuned)";

/// A tool's name without the tuned suffix, and whether it is the tuned row.
fn base(tool: &str) -> (&str, bool) {
    match tool.strip_suffix(TUNED) {
        Some(base) => (base, true),
        None => (tool, false),
    }
}

fn command_label(tool: &str, job: Job) -> &'static str {
    match (base(tool).0, job) {
        ("smssh", Job::True) => "smssh -w H -j N -- true",
        ("smssh", Job::Copy) => "smscp -j N FILE H:payload",
        ("pdsh", Job::True) => "pdsh -R ssh -f N -S true",
        ("pdsh", Job::Copy) => "pdcp -R ssh -f N FILE payload",
        ("pssh", Job::True) => "parallel-ssh -p N true",
        ("pssh", Job::Copy) => "parallel-scp -p N FILE payload",
        ("clush", Job::True) => "clush -f N -S true",
        ("clush", Job::Copy) => "clush -f N -S --copy FILE --dest payload",
        ("ansible", Job::True) => "ansible -f N -m command -a true (pipelining)",
        ("ansible", Job::Copy) => "ansible -f N -m copy",
        ("xargs+openssh", Job::True) => "xargs -P N ssh H true",
        ("xargs+openssh", Job::Copy) => "xargs -P N scp FILE H:",
        ("bssh", Job::True) => {
            "bssh -H H -p PORT -l root -i KEY -F CONFIG --strict-host-key-checking yes --parallel N \
             --batch --any-failure true"
        }
        ("bssh", Job::Copy) => {
            "bssh -H H -p PORT -l root -i KEY -F CONFIG --strict-host-key-checking yes --parallel N \
             --batch upload FILE payload"
        }
        _ => "?",
    }
}

/// What one successful run measured.
#[derive(Clone, Debug)]
struct Sample {
    wall: Duration,
    /// CPU seconds the workers' sshd trees used during the run.
    server_cpu: f64,
    /// Max RSS (KiB) of the tool's largest process and user+system CPU seconds of its whole
    /// process tree (what it reaped), from /usr/bin/time.
    max_rss_kib: u64,
    client_cpu: f64,
}

#[derive(Default)]
struct Record {
    samples: Vec<Sample>,
    failure: Option<String>,
}

/// Fails with a clear message unless every peer and helper is installed.
fn check_peers() {
    require_peers(
        "fanout",
        &[
            "pdsh",
            "pdcp",
            "parallel-ssh",
            "parallel-scp",
            "clush",
            "xargs",
            "ssh",
            "scp",
        ],
        &[
            PathBuf::from("/usr/bin/time"),
            bench_venv().join("bin/ansible"),
            bssh_path(),
        ],
        &["matplotlib"],
    );
}

struct Bench<'a> {
    cluster: &'a Cluster,
    scratch: tempfile::TempDir,
    payload: PathBuf,
    digest: String,
    /// The OpenSSH options every peer passes: -F, known_hosts, StrictHostKeyChecking=yes,
    /// BatchMode=yes, IdentitiesOnly=yes, -i key.
    ssh_opts: Vec<String>,
    listeners: Vec<u32>,
    /// The workers' CPU, counted by a cgroup around them when one can be made.
    workers: WorkerCpu,
    timeout: Duration,
    run_counter: usize,
}

/// One prepared invocation, under /usr/bin/time.
struct Invocation {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    /// Where /usr/bin/time writes "%M %U %S".
    time_file: PathBuf,
}

impl<'a> Bench<'a> {
    fn addrs(&self, n: usize) -> Vec<String> {
        self.cluster.addrs().into_iter().take(n).collect()
    }

    fn hosts_file(&self, n: usize) -> PathBuf {
        let path = self.scratch.path().join(format!("hosts-{n}"));
        if !path.exists() {
            let text: String = self.addrs(n).iter().map(|a| format!("{a}\n")).collect();
            fs::write(&path, text).expect("write the hosts file");
        }
        path
    }

    /// A peer's command with a clean environment: PATH, a HOME without any user config of
    /// the tools, a UTF-8 locale (Ansible refuses others).
    fn peer(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env_clear()
            .env("HOME", self.cluster.home.path())
            .env("LC_ALL", "C.UTF-8")
            .env("LANG", "C.UTF-8")
            .stdin(Stdio::null());
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd
    }

    /// The OpenSSH options of a peer's row: the common ones, plus the tuned kex and cipher
    /// for a tuned row.
    fn opts(&self, tuned: bool) -> Vec<String> {
        let mut opts = self.ssh_opts.clone();
        if tuned {
            opts.extend(TUNED_OPTS.iter().map(|s| (*s).to_owned()));
        }
        opts
    }

    fn opts_line(&self, tuned: bool) -> String {
        self.opts(tuned).join(" ")
    }

    /// `inner` (program, arguments, environment) run under /usr/bin/time, which reports the
    /// CPU time of the tool's whole process tree and its largest RSS.
    fn timed(&mut self, inner: Command, stdin: Option<Vec<u8>>) -> Invocation {
        self.run_counter += 1;
        let time_file = self
            .scratch
            .path()
            .join(format!("time-{}", self.run_counter));
        let mut cmd = Command::new("/usr/bin/time");
        cmd.env_clear();
        for (key, value) in inner.get_envs() {
            if let Some(value) = value {
                cmd.env(key, value);
            }
        }
        cmd.arg("-o")
            .arg(&time_file)
            .args(["-f", "%M %U %S"])
            .arg(inner.get_program())
            .args(inner.get_args())
            .stdin(Stdio::null());
        Invocation {
            cmd,
            stdin,
            time_file,
        }
    }

    /// smssh or smscp with the harness's environment.
    fn ours(&mut self, bin: &str, args: &[String]) -> Invocation {
        let mut inner = self.cluster.command(bin);
        inner.args(args);
        self.timed(inner, None)
    }

    fn ansible(&mut self, n: usize, job: Job, tuned: bool) -> Invocation {
        let dir = self.scratch.path().join("ansible");
        fs::create_dir_all(dir.join("remote")).expect("mkdir ansible");
        self.run_counter += 1;
        // A fresh ControlPath directory per run: connections are shared within a run (as
        // Ansible does by default) but never carried over from the previous round.
        let control = dir.join(format!("cp-{}", self.run_counter));
        fs::create_dir_all(&control).expect("mkdir control path dir");
        let inventory = dir.join(format!(
            "inventory-{n}{}",
            if tuned { "-tuned" } else { "" }
        ));
        if !inventory.exists() {
            let mut text = String::from("[workers]\n");
            for worker in self.cluster.workers.iter().take(n) {
                writeln!(
                    text,
                    "{} home={}",
                    worker.addr(),
                    worker.sftp_home().display()
                )
                .unwrap();
            }
            writeln!(
                text,
                "[workers:vars]\nansible_connection=ssh\nansible_user=root\nansible_port={}\n\
                 ansible_python_interpreter=/usr/bin/python3\nansible_ssh_private_key_file={}\n\
                 ansible_ssh_common_args=-F {} -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
                 -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes{}",
                self.cluster.port,
                self.cluster.key_path.display(),
                self.cluster.ssh_config_path().display(),
                self.cluster.known_hosts_path().display(),
                if tuned {
                    format!(" {}", TUNED_OPTS.join(" "))
                } else {
                    String::new()
                },
            )
            .unwrap();
            fs::write(&inventory, text).expect("write the inventory");
        }
        let mut cmd = self.peer(bench_venv().join("bin/ansible"));
        ansible_env(&mut cmd, &dir, &control);
        cmd.arg("workers")
            .arg("-i")
            .arg(&inventory)
            .args(["-f", &n.to_string()]);
        match job {
            Job::True => cmd.args(["-m", "command", "-a", "true"]),
            Job::Copy => cmd.args([
                "-m",
                "copy",
                "-a",
                &format!(
                    "src={} dest={{{{ home }}}}/{PAYLOAD}",
                    self.payload.display()
                ),
            ]),
        };
        self.timed(cmd, None)
    }

    fn invocation(&mut self, tool: &str, job: Job, n: usize) -> Invocation {
        let hosts = hostlist(n);
        let fanout = n.to_string();
        let payload = self.payload.display().to_string();
        let (name, tuned) = base(tool);
        match (name, job) {
            ("smssh", Job::True) => self.ours(
                "smssh",
                &[
                    "-j".into(),
                    fanout,
                    "-w".into(),
                    hosts,
                    "--".into(),
                    "true".into(),
                ],
            ),
            ("smssh", Job::Copy) => self.ours(
                "smscp",
                &[
                    "-q".into(),
                    "-j".into(),
                    fanout,
                    payload,
                    format!("{hosts}:{PAYLOAD}"),
                ],
            ),
            ("pdsh", _) => {
                let mut cmd = self.peer(if job == Job::True { "pdsh" } else { "pdcp" });
                cmd.env("PDSH_RCMD_TYPE", "ssh")
                    .env("PDSH_SSH_ARGS_APPEND", self.opts_line(tuned))
                    .args(["-R", "ssh", "-f", &fanout, "-w", &hosts]);
                if job == Job::True {
                    cmd.args(["-S", "true"]);
                } else {
                    cmd.env(
                        "PDSH_REMOTE_PDCP_PATH",
                        pdcp_wrapper(self.cluster, self.scratch.path()),
                    )
                    .args([&payload, PAYLOAD]);
                }
                self.timed(cmd, None)
            }
            ("pssh", _) => {
                let mut cmd = self.peer(if job == Job::True {
                    "parallel-ssh"
                } else {
                    "parallel-scp"
                });
                cmd.arg("-h").arg(self.hosts_file(n)).args([
                    "-p",
                    &fanout,
                    "-t",
                    "0",
                    "-x",
                    &self.opts_line(tuned),
                ]);
                if job == Job::True {
                    cmd.arg("true");
                } else {
                    cmd.args([&payload, PAYLOAD]);
                }
                self.timed(cmd, None)
            }
            ("clush", _) => {
                let mut cmd = self.peer("clush");
                cmd.args([
                    "-w",
                    &hosts,
                    "-f",
                    &fanout,
                    "-S",
                    "-o",
                    &self.opts_line(tuned),
                ]);
                if job == Job::True {
                    cmd.arg("true");
                } else {
                    cmd.args(["--copy", &payload, "--dest", PAYLOAD]);
                }
                self.timed(cmd, None)
            }
            ("ansible", _) => self.ansible(n, job, tuned),
            ("bssh", _) => {
                let mut cmd = self.peer(bssh_path());
                cmd.args(["-H", &hosts])
                    .args(["-p", &self.cluster.port.to_string(), "-l", "root", "-i"])
                    .arg(&self.cluster.key_path)
                    .arg("-F")
                    .arg(self.cluster.ssh_config_path())
                    .args([
                        "--strict-host-key-checking",
                        "yes",
                        "--parallel",
                        &fanout,
                        "--batch",
                    ]);
                if job == Job::True {
                    cmd.args(["--any-failure", "true"]);
                } else {
                    cmd.args(["upload", &payload, PAYLOAD]);
                }
                self.timed(cmd, None)
            }
            ("xargs+openssh", _) => {
                let mut cmd = self.peer("xargs");
                cmd.args(["-P", &fanout, "-I{}"]);
                if job == Job::True {
                    cmd.arg("ssh").args(self.opts(tuned)).args(["{}", "true"]);
                } else {
                    cmd.arg("scp")
                        .arg("-q")
                        .args(self.opts(tuned))
                        .args([&payload, &format!("{{}}:{PAYLOAD}")]);
                }
                let list: String = self.addrs(n).iter().map(|a| format!("{a}\n")).collect();
                self.timed(cmd, Some(list.into_bytes()))
            }
            _ => unreachable!("unknown tool {tool}"),
        }
    }

    /// Checks what a run left behind; Err says what is wrong.
    fn verify(&self, tool: &str, job: Job, n: usize, out: &Output) -> Result<(), String> {
        if !out.status.success() {
            return Err(out.status.to_string());
        }
        let (name, _) = base(tool);
        if name == "ansible" {
            let ok = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(" | CHANGED") || l.contains(" | SUCCESS"))
                .count();
            if ok != n {
                return Err(format!("{ok} of {n} hosts reported success"));
            }
        }
        if name == "pssh" {
            let ok = String::from_utf8_lossy(&out.stdout)
                .matches("[SUCCESS]")
                .count();
            if ok != n {
                return Err(format!("{ok} of {n} hosts reported [SUCCESS]"));
            }
        }
        if job == Job::Copy {
            verify_copies(self.cluster, n, PAYLOAD, &self.digest)?;
        }
        Ok(())
    }

    fn measure(&mut self, tool: &str, job: Job, n: usize) -> Result<Sample, String> {
        if job == Job::Copy {
            clean_homes(self.cluster);
        }
        wait_quiet(&self.listeners);
        let inv = self.invocation(tool, job, n);
        let Invocation {
            mut cmd,
            stdin,
            time_file,
        } = inv;
        let before = self.workers.seconds();
        let started = Instant::now();
        let running = match &stdin {
            Some(input) => spawn_with_stdin(&mut cmd, input),
            None => spawn(&mut cmd),
        };
        let result = running.wait_timeout(self.timeout);
        let wall = started.elapsed();
        wait_quiet(&self.listeners);
        let server_cpu = self.workers.seconds() - before;
        let out = match result {
            Ok(out) => out,
            Err(out) => {
                return Err(format!(
                    "killed after {:?}\n{}",
                    self.timeout,
                    tail(&describe(&out))
                ))
            }
        };
        self.verify(tool, job, n, &out)
            .map_err(|why| format!("{why}\n{}", tail(&describe(&out))))?;
        let (Some(max_rss_kib), Some(client_cpu)) = read_time_file(&time_file) else {
            return Err(format!(
                "/usr/bin/time wrote no figures to {}",
                time_file.display()
            ));
        };
        if job == Job::Copy {
            clean_homes(self.cluster);
        }
        Ok(Sample {
            wall,
            server_cpu,
            max_rss_kib,
            client_cpu,
        })
    }
}

fn main() {
    check_peers();
    raise_nofile();
    let sizes = host_counts("32,128", MAX_WORKERS);
    let rounds = env_usize("SMSSH_BENCH_ROUNDS", 3).max(1);
    let mib = env_usize("SMSSH_BENCH_MIB", 16).max(1);
    let timeout = Duration::from_secs(env_usize("SMSSH_BENCH_TIMEOUT", 300) as u64);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let only: Option<Vec<String>> = std::env::var("SMSSH_BENCH_TOOLS")
        .ok()
        .map(|s| s.split(',').map(|t| t.trim().to_owned()).collect());
    let tools: Vec<&str> = TOOLS
        .iter()
        .copied()
        .filter(|t| *t == "smssh" || only.as_ref().is_none_or(|o| o.iter().any(|x| x == t)))
        .collect();

    let max_n = *sizes.last().unwrap();
    println!(
        "fan-out benchmark: N = {sizes:?} ({max_n} sshd workers started; the first N used), \
         {mib} MiB copy, {rounds} rounds, {cores} cores, load {}",
        loadavg()
    );
    let load_start = loadavg();
    let started = Instant::now();
    let cluster = Cluster::new(max_n);
    println!(
        "cluster of {max_n} up in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let scratch = tempfile::Builder::new()
        .prefix("smssh-fanout-bench-")
        .tempdir()
        .expect("scratch dir");
    let payload = scratch.path().join("payload.bin");
    write_payload(&payload, mib * 1024 * 1024);
    let digest = sha256_hex(&fs::read(&payload).expect("read the payload back"));
    let ssh_opts: Vec<String> = cluster
        .openssh("ssh")
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let listeners = listeners();
    assert_eq!(
        listeners.len(),
        max_n,
        "expected one listening sshd per worker among the bench's children"
    );
    warm_up(&cluster, &listeners, max_n);
    let mut bench = Bench {
        cluster: &cluster,
        scratch,
        payload,
        digest,
        ssh_opts,
        workers: WorkerCpu::new(&listeners, clock_ticks()),
        listeners,
        timeout,
        run_counter: 0,
    };

    let mut records: BTreeMap<(usize, Job, &str), Record> = BTreeMap::new();
    for &n in &sizes {
        for round in 0..rounds {
            for job in [Job::True, Job::Copy] {
                // Rotate the order each round so no tool always runs first or last.
                let mut order = tools.clone();
                order.rotate_left(round % tools.len());
                for tool in order {
                    let record = records.entry((n, job, tool)).or_default();
                    if record.failure.is_some() {
                        continue;
                    }
                    match bench.measure(tool, job, n) {
                        Ok(sample) => {
                            println!(
                                "N={n:<3} round {} {:<5} {tool:<22} {:>8.3}s  sshd CPU {:>6.2}s  \
                                 client CPU {:>6.2}s  max RSS {:>6.1} MiB",
                                round + 1,
                                job.name(),
                                sample.wall.as_secs_f64(),
                                sample.server_cpu,
                                sample.client_cpu,
                                sample.max_rss_kib as f64 / 1024.0,
                            );
                            record.samples.push(sample);
                        }
                        Err(why) => {
                            println!(
                                "N={n:<3} round {} {:<5} {tool:<22} FAILED: {why}",
                                round + 1,
                                job.name()
                            );
                            record.failure = Some(why);
                        }
                    }
                }
            }
        }
    }

    let context = Context {
        sizes: &sizes,
        tools: &tools,
        cores,
        rounds,
        mib,
        load_start,
        load_end: loadavg(),
        worker_cpu_method: bench.workers.method(),
    };
    let report = report(&records, &context);
    println!("\n{report}");
    let out_dir = target_dir().join("bench");
    fs::create_dir_all(&out_dir).expect("create target/bench");
    fs::write(out_dir.join("fanout.md"), &report).expect("write fanout.md");
    let json = to_json(&records, &tools, cores, rounds, mib);
    let json_path = out_dir.join("fanout.json");
    fs::write(&json_path, serde_json::to_string_pretty(&json).unwrap()).expect("write fanout.json");
    let png = out_dir.join("fanout.png");
    let chart = Command::new(bench_venv().join("bin/python"))
        .arg(Path::new(REPO).join("benches/fanout_chart.py"))
        .arg(&json_path)
        .arg(&png)
        .status();
    match chart {
        Ok(s) if s.success() => println!(
            "wrote {}, {}, {}",
            out_dir.join("fanout.md").display(),
            json_path.display(),
            png.display()
        ),
        other => eprintln!(
            "fanout bench: the chart failed ({other:?}); the table is in {}",
            out_dir.join("fanout.md").display()
        ),
    }
}

fn wall_median(record: &Record) -> Option<f64> {
    if record.failure.is_some() || record.samples.is_empty() {
        return None;
    }
    let mut walls: Vec<f64> = record
        .samples
        .iter()
        .map(|s| s.wall.as_secs_f64())
        .collect();
    Some(median(&mut walls))
}

fn floor_median(record: &Record, cores: usize) -> Option<f64> {
    if record.samples.is_empty() {
        return None;
    }
    let mut cpu: Vec<f64> = record.samples.iter().map(|s| s.server_cpu).collect();
    Some(median(&mut cpu) / cores as f64)
}

/// Median of one figure over a record's samples; None for a failed or empty record.
fn median_of(record: &Record, figure: impl Fn(&Sample) -> f64) -> Option<f64> {
    if record.failure.is_some() || record.samples.is_empty() {
        return None;
    }
    let mut values: Vec<f64> = record.samples.iter().map(figure).collect();
    Some(median(&mut values))
}

/// Master CPU seconds per GiB delivered: the tool tree's median CPU / (size x hosts).
fn cpu_per_gib(record: &Record, n: usize, mib: usize) -> Option<f64> {
    let gib = (mib * n) as f64 / 1024.0;
    median_of(record, |s| s.client_cpu).map(|cpu| cpu / gib)
}

/// The fastest of `tools` (by median wall time) among the successful records at (n, job).
fn fastest<'t>(
    records: &BTreeMap<(usize, Job, &str), Record>,
    n: usize,
    job: Job,
    tools: impl Iterator<Item = &'t str>,
) -> Option<(&'t str, f64)> {
    tools
        .filter_map(|t| {
            records
                .get(&(n, job, t))
                .and_then(wall_median)
                .map(|w| (t, w))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// What the report says about the run as a whole.
struct Context<'a> {
    sizes: &'a [usize],
    tools: &'a [&'a str],
    cores: usize,
    rounds: usize,
    mib: usize,
    load_start: String,
    load_end: String,
    worker_cpu_method: &'static str,
}

fn report(records: &BTreeMap<(usize, Job, &str), Record>, ctx: &Context) -> String {
    let (sizes, tools, cores, mib) = (ctx.sizes, ctx.tools, ctx.cores, ctx.mib);
    let empty = Record::default();
    let mut md = String::new();
    writeln!(
        md,
        "## Fan-out: smssh vs peers (median of {} rounds)\n",
        ctx.rounds
    )
    .unwrap();
    writeln!(
        md,
        "Loopback sshd workers (OpenSSH 9.2), {cores} cores shared by the client and every worker, \
         fan-out N for every tool; copy = {mib} MiB to every host, checked by SHA-256 on every \
         host. Every OpenSSH-based peer runs twice: with OpenSSH's defaults, and tuned \
         (`{}`: what smssh negotiates with these workers). Floor = CPU time of the workers' sshd \
         trees ({}; every worker served one untimed login first) during the smssh/smscp run \
         / {cores} cores. Master CPU = user + system time of \
         the tool's whole process tree (every ssh or scp it ran and reaped; Ansible's \
         ControlPersist masters daemonize and escape it), from /usr/bin/time; for a copy also \
         per GiB delivered ({mib} MiB x N). Load average (1, 5, 15 min): {} at the start, {} \
         at the end.\n",
        TUNED_OPTS.join(" "),
        ctx.worker_cpu_method,
        ctx.load_start,
        ctx.load_end
    )
    .unwrap();

    writeln!(
        md,
        "| job | N | smssh s | fastest default peer | fastest tuned peer | floor s | smssh / floor | smscp CPU/GiB / scp (tuned) CPU/GiB |\n\
         |---|---:|---:|---|---|---:|---:|---:|"
    )
    .unwrap();
    for job in [Job::True, Job::Copy] {
        for &n in sizes {
            let ours = records.get(&(n, job, "smssh")).unwrap_or(&empty);
            let ours_wall = wall_median(ours);
            let peer = |tuned: bool| {
                let candidates = tools
                    .iter()
                    .copied()
                    .filter(|t| *t != "smssh" && (base(t).1 == tuned));
                match (fastest(records, n, job, candidates), ours_wall) {
                    (Some((t, w)), Some(o)) => format!("{t} {w:.3} ({:.1}x)", w / o),
                    (Some((t, w)), None) => format!("{t} {w:.3}"),
                    _ => "-".into(),
                }
            };
            let floor = floor_median(ours, cores).filter(|f| *f > 0.0);
            let cpu_ratio = match job {
                Job::True => "-".to_owned(),
                Job::Copy => cpu_per_gib(ours, n, mib)
                    .zip(
                        records
                            .get(&(n, job, "xargs+openssh (tuned)"))
                            .and_then(|r| cpu_per_gib(r, n, mib)),
                    )
                    .map_or("-".into(), |(o, scp)| format!("{:.2}x", o / scp)),
            };
            writeln!(
                md,
                "| {} | {n} | {} | {} | {} | {} | {} | {cpu_ratio} |",
                job.name(),
                ours_wall.map_or("-".into(), |w| format!("{w:.3}")),
                peer(false),
                peer(true),
                floor.map_or("-".into(), |f| format!("{f:.3}")),
                floor
                    .zip(ours_wall)
                    .map_or("-".into(), |(f, o)| format!("{:.2}x", o / f)),
            )
            .unwrap();
        }
    }

    writeln!(
        md,
        "\nEvery tool (medians; x smssh = wall / smssh's wall; RSS = the tool's largest process):\n"
    )
    .unwrap();
    writeln!(
        md,
        "| job | N | tool | wall s | x smssh | sshd CPU s | master CPU s | master CPU s / GiB | peak RSS MiB |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|"
    )
    .unwrap();
    for job in [Job::True, Job::Copy] {
        for &n in sizes {
            let ours_wall = records.get(&(n, job, "smssh")).and_then(wall_median);
            for tool in tools {
                let record = records.get(&(n, job, *tool)).unwrap_or(&empty);
                if record.failure.is_some() {
                    writeln!(md, "| {} | {n} | {tool} | FAILED | | | | | |", job.name()).unwrap();
                    continue;
                }
                let (Some(wall), Some(sshd), Some(client)) = (
                    wall_median(record),
                    median_of(record, |s| s.server_cpu),
                    median_of(record, |s| s.client_cpu),
                ) else {
                    continue;
                };
                let rss = record
                    .samples
                    .iter()
                    .map(|s| s.max_rss_kib)
                    .max()
                    .unwrap_or(0);
                writeln!(
                    md,
                    "| {} | {n} | {tool} | {wall:.3} | {} | {sshd:.2} | {client:.2} | {} | {:.1} |",
                    job.name(),
                    ours_wall.map_or("-".into(), |o| format!("{:.1}x", wall / o)),
                    match job {
                        Job::True => "-".to_owned(),
                        Job::Copy =>
                            cpu_per_gib(record, n, mib).map_or("-".into(), |c| format!("{c:.2}")),
                    },
                    rss as f64 / 1024.0,
                )
                .unwrap();
            }
        }
    }

    writeln!(
        md,
        "\nCommands (H = hosts, N = fan-out; a tuned row adds `{}` to ssh):\n",
        TUNED_OPTS.join(" ")
    )
    .unwrap();
    for job in [Job::True, Job::Copy] {
        for tool in tools.iter().filter(|t| !base(t).1) {
            writeln!(
                md,
                "- {} / {tool}: `{}`",
                job.name(),
                command_label(tool, job)
            )
            .unwrap();
        }
    }
    let failures: Vec<String> = records
        .iter()
        .filter_map(|((n, job, tool), r)| {
            r.failure.as_ref().map(|why| {
                format!(
                    "- {tool}, {} on {n}: {}",
                    job.name(),
                    why.lines().next().unwrap_or_default()
                )
            })
        })
        .collect();
    if !failures.is_empty() {
        writeln!(md, "\nFailed (not timed):\n\n{}", failures.join("\n")).unwrap();
    }
    writeln!(
        md,
        "\nGoals (reported, not asserted): smssh >= 2x faster than the fastest peer on both jobs, \
         within 1.5x of the floor; peak memory < 200 MiB at N = 128; smscp's master CPU per GiB \
         at most 0.3x OpenSSH scp's with the same cipher (the last column of the first table)."
    )
    .unwrap();
    md
}

fn to_json(
    records: &BTreeMap<(usize, Job, &str), Record>,
    tools: &[&str],
    cores: usize,
    rounds: usize,
    mib: usize,
) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = records
        .iter()
        .map(|((n, job, tool), r)| {
            serde_json::json!({
                "n": n,
                "job": job.name(),
                "tool": tool,
                "failed": r.failure.is_some(),
                "failure": r.failure.as_deref().map(|w| w.lines().next().unwrap_or_default()),
                "median_s": wall_median(r),
                "walls_s": r.samples.iter().map(|s| s.wall.as_secs_f64()).collect::<Vec<_>>(),
                "sshd_cpu_s": r.samples.iter().map(|s| s.server_cpu).collect::<Vec<_>>(),
                "floor_s": if *tool == "smssh" { floor_median(r, cores) } else { None },
                "client_cpu_s": r.samples.iter().map(|s| s.client_cpu).collect::<Vec<_>>(),
                "client_cpu_per_gib_s": if *job == Job::Copy { cpu_per_gib(r, *n, mib) } else { None },
                "max_rss_kib": r.samples.iter().map(|s| s.max_rss_kib).max(),
            })
        })
        .collect();
    serde_json::json!({
        "cores": cores,
        "rounds": rounds,
        "copy_mib": mib,
        "tools": tools,
        "results": rows,
    })
}
