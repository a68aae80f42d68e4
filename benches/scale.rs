//! Scaling curve (issue 13: "A scaling curve in benches/"). Run with
//!
//! ```sh
//! ./scripts/bench-deps.sh && SMSSH_TEST_MOTO=$PWD/.venv/bin/moto_server cargo bench --bench scale
//! ```
//!
//! Against N real sshd workers on loopback (N = 8, 32, 128, 512 and 1,000 by default;
//! `SMSSH_BENCH_HOSTS="8,32"` to choose; the first 250 on 127.0.0.2-251, then 250 to each
//! following /24, tests/common's `worker_addr`), one cluster of the largest N, whose first N
//! workers each step uses:
//! 1. exec: `smssh -w H -j N -- true`, bssh (`--parallel N`) and pdsh tuned (`-f N`, OpenSSH
//!    with curve25519 and AES-GCM, what smssh negotiates);
//! 2. push: a 1 MiB file (`SMSSH_BENCH_PUSH_KIB`) to every host: `smscp -j N`, `bssh upload`
//!    and pdcp tuned; every host's copy is checked by SHA-256 afterwards;
//! 3. rotate: a full `smssh rotate -w H -j N` (the four steps against the secret in moto),
//!    checked as benches/rotation.rs checks it (every block holds exactly AWSCURRENT, the
//!    cluster key retired); each run starts, untimed, from the cluster key.
//!
//! Every tool gets the same key file, the cluster's ssh_config and known_hosts, and strict
//! host-key checking; smssh and smscp take the key from the secret in moto. A run that fails
//! (exit status, a missing or wrong copy, a wrong block) is reported as failed, never timed,
//! and that tool is not run again at that N.
//!
//! The floor of a run is the CPU time the workers' sshd trees (listener, sessions,
//! sftp-server, the command or the rotation's script) spent during smssh's run of that job,
//! counted by a cgroup the listeners are moved into (support's `WorkerCpu`; where none can be
//! made, the listeners' own and reaped children's time from /proc, which misses what they did
//! not reap), divided by the number of cores: no client on this machine can finish sooner.
//! Before the first measured run every worker serves one untimed login, since a fresh sshd's
//! first login costs more than its later ones. Each tool's wall time is shown as a
//! ratio to that floor. The master's own cost is the tool's process tree CPU (user + system,
//! from `/usr/bin/time`, which every tool runs under) per host, and its peak RSS (`%M`: the
//! largest single process of the tree, which for smssh is smssh itself).
//!
//! The bench raises its own open-file limit (soft to hard) before starting the workers; each
//! listening sshd takes a few MiB (its RSS is reported). Rounds (`SMSSH_BENCH_ROUNDS`, default
//! 3) rotate the tools' order; the table shows medians; `SMSSH_BENCH_TIMEOUT` (seconds,
//! default 600) bounds one run; `SMSSH_BENCH_JOBS` (e.g. "exec") runs only the jobs named. The
//! load average is recorded at the start and end of each N.
//!
//! Output: a markdown table on stdout and in target/bench/scale.md, the raw figures in
//! target/bench/scale.json and a chart, target/bench/scale.png, drawn by
//! benches/scale_chart.py (copy them to benches/results/ to publish a run). A report, not a
//! test: it never fails on a slow figure.

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
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use support::*;

const PAYLOAD: &str = "payload";

/// The issue's goals at 1,000 hosts (reported, never asserted): wall / floor.
const GOAL_EXEC_RATIO: f64 = 1.25;
const GOAL_ROTATE_RATIO: f64 = 1.15;
const GOAL_AT: usize = 1000;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Job {
    Exec,
    Push,
    Rotate,
}

impl Job {
    fn name(self) -> &'static str {
        match self {
            Job::Exec => "exec",
            Job::Push => "push",
            Job::Rotate => "rotate",
        }
    }

    /// The tools measured for this job, smssh first (its run gives the floor).
    fn tools(self) -> &'static [Tool] {
        match self {
            Job::Exec | Job::Push => &[Tool::Smssh, Tool::Bssh, Tool::PdshTuned],
            Job::Rotate => &[Tool::Smssh],
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Tool {
    Smssh,
    Bssh,
    PdshTuned,
}

impl Tool {
    fn name(self) -> &'static str {
        match self {
            Tool::Smssh => "smssh",
            Tool::Bssh => "bssh",
            Tool::PdshTuned => "pdsh (tuned)",
        }
    }

    fn label(self, job: Job) -> &'static str {
        match (self, job) {
            (Tool::Smssh, Job::Exec) => "smssh -w H -j N -- true",
            (Tool::Smssh, Job::Push) => "smscp -q -j N FILE H:payload",
            (Tool::Smssh, Job::Rotate) => "smssh rotate -q -o BatchMode=yes -w H -j N",
            (Tool::Bssh, Job::Exec) => {
                "bssh -H H -p PORT -l root -i KEY -F CONFIG --strict-host-key-checking yes \
                 --parallel N --batch --any-failure true"
            }
            (Tool::Bssh, _) => {
                "bssh -H H -p PORT -l root -i KEY -F CONFIG --strict-host-key-checking yes \
                 --parallel N --batch upload FILE payload"
            }
            (Tool::PdshTuned, Job::Exec) => {
                "pdsh -R ssh -f N -S true (ssh -o KexAlgorithms=curve25519-sha256 \
                 -o Ciphers=aes128-gcm@openssh.com)"
            }
            (Tool::PdshTuned, _) => {
                "pdcp -R ssh -f N FILE payload (ssh -o KexAlgorithms=curve25519-sha256 \
                 -o Ciphers=aes128-gcm@openssh.com)"
            }
        }
    }
}

/// What one successful run measured.
#[derive(Clone, Debug)]
struct Sample {
    wall: Duration,
    /// CPU seconds the workers' sshd trees used during the run.
    sshd_cpu: f64,
    /// The same, counted only from what the listeners reaped themselves (the figure before
    /// the cgroup), to show how much that missed.
    sshd_reaped_cpu: f64,
    /// CPU seconds of the tool's process tree (user + system), from /usr/bin/time.
    client_cpu: f64,
    /// The largest RSS of one process of the tool's tree, KiB.
    max_rss_kib: u64,
    /// CPU seconds moto used during the run.
    moto_cpu: f64,
    /// CPU seconds no process used during the run (idle + iowait over every core, from
    /// /proc/stat): what separates a wall time bound by CPU from one spent waiting.
    idle_cpu: f64,
}

#[derive(Default)]
struct Record {
    samples: Vec<Sample>,
    failure: Option<String>,
}

/// The load average when each N started and ended.
struct Load {
    start: String,
    end: String,
}

/// Exits with a clear message unless every peer and helper is installed.
fn check_peers() {
    require_peers(
        "scale",
        &["pdsh", "pdcp", "ssh"],
        &[PathBuf::from("/usr/bin/time"), bssh_path()],
        &["matplotlib"],
    );
}

struct Bench<'a> {
    cluster: &'a Cluster,
    scratch: tempfile::TempDir,
    payload: PathBuf,
    digest: String,
    /// The OpenSSH options pdsh passes: -F, known_hosts, StrictHostKeyChecking=yes,
    /// BatchMode=yes, IdentitiesOnly=yes, -i key, then the tuned kex and cipher.
    ssh_opts: String,
    listeners: Vec<u32>,
    workers: WorkerCpu,
    moto: Option<u32>,
    ticks: f64,
    timeout: Duration,
    run_counter: usize,
}

impl Bench<'_> {
    fn moto_cpu(&self) -> f64 {
        self.moto.map_or(0.0, |pid| tree_cpu(&[pid], self.ticks))
    }

    /// `program args` under `/usr/bin/time`, with `env` as its whole environment and a null
    /// stdin; returns the command and the file time writes to.
    fn timed(
        &mut self,
        program: &Path,
        args: &[String],
        env: Vec<(String, String)>,
    ) -> (Command, PathBuf) {
        self.run_counter += 1;
        let time_file = self
            .scratch
            .path()
            .join(format!("time-{}", self.run_counter));
        let mut cmd = Command::new("/usr/bin/time");
        cmd.env_clear()
            .envs(env)
            .arg("-o")
            .arg(&time_file)
            .args(["-f", "%M %U %S"])
            .arg(program)
            .args(args)
            .stdin(Stdio::null());
        (cmd, time_file)
    }

    /// The environment of smssh/smscp: what the harness gives the binaries.
    fn ours_env(&self) -> Vec<(String, String)> {
        let template = self.cluster.command("smssh");
        template
            .get_envs()
            .filter_map(|(k, v)| {
                Some((
                    k.to_string_lossy().into_owned(),
                    v?.to_string_lossy().into_owned(),
                ))
            })
            .collect()
    }

    /// A peer's environment: PATH, a HOME without any user config of the tools (its
    /// ~/.ssh/known_hosts is the cluster's), a UTF-8 locale.
    fn peer_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "HOME".to_owned(),
                self.cluster.home.path().display().to_string(),
            ),
            ("LC_ALL".to_owned(), "C.UTF-8".to_owned()),
            ("LANG".to_owned(), "C.UTF-8".to_owned()),
        ];
        if let Ok(path) = std::env::var("PATH") {
            env.push(("PATH".to_owned(), path));
        }
        env
    }

    fn invocation(&mut self, tool: Tool, job: Job, n: usize) -> (Command, PathBuf) {
        let hosts = hostlist(n);
        let fanout = n.to_string();
        let payload = self.payload.display().to_string();
        match tool {
            Tool::Smssh => {
                let args: Vec<String> = match job {
                    Job::Exec => vec![
                        "-j".into(),
                        fanout,
                        "-w".into(),
                        hosts,
                        "--".into(),
                        "true".into(),
                    ],
                    Job::Push => vec![
                        "-q".into(),
                        "-j".into(),
                        fanout,
                        payload,
                        format!("{hosts}:{PAYLOAD}"),
                    ],
                    Job::Rotate => vec![
                        "rotate".into(),
                        "-q".into(),
                        "-o".into(),
                        "BatchMode=yes".into(),
                        "-w".into(),
                        hosts,
                        "-j".into(),
                        fanout,
                    ],
                };
                let bin = if job == Job::Push { "smscp" } else { "smssh" };
                let env = self.ours_env();
                self.timed(Path::new(binary_path(bin)), &args, env)
            }
            Tool::Bssh => {
                let mut args: Vec<String> = vec![
                    "-H".into(),
                    hosts,
                    "-p".into(),
                    self.cluster.port.to_string(),
                    "-l".into(),
                    "root".into(),
                    "-i".into(),
                    self.cluster.key_path.display().to_string(),
                    "-F".into(),
                    self.cluster.ssh_config_path().display().to_string(),
                    "--strict-host-key-checking".into(),
                    "yes".into(),
                    "--parallel".into(),
                    fanout,
                    "--batch".into(),
                ];
                match job {
                    Job::Exec => args.extend(["--any-failure".into(), "true".into()]),
                    _ => args.extend(["upload".into(), payload, PAYLOAD.into()]),
                }
                let env = self.peer_env();
                self.timed(&bssh_path(), &args, env)
            }
            Tool::PdshTuned => {
                let mut env = self.peer_env();
                env.push(("PDSH_RCMD_TYPE".into(), "ssh".into()));
                env.push(("PDSH_SSH_ARGS_APPEND".into(), self.ssh_opts.clone()));
                let mut args: Vec<String> = vec![
                    "-R".into(),
                    "ssh".into(),
                    "-f".into(),
                    fanout,
                    "-w".into(),
                    hosts,
                ];
                let program = if job == Job::Exec {
                    args.extend(["-S".into(), "true".into()]);
                    find_on_path("pdsh").expect("pdsh")
                } else {
                    let wrapper = pdcp_wrapper(self.cluster, self.scratch.path());
                    env.push((
                        "PDSH_REMOTE_PDCP_PATH".into(),
                        wrapper.display().to_string(),
                    ));
                    args.extend([payload, PAYLOAD.into()]);
                    find_on_path("pdcp").expect("pdcp")
                };
                self.timed(&program, &args, env)
            }
        }
    }

    fn measure(&mut self, tool: Tool, job: Job, n: usize) -> Result<Sample, String> {
        match job {
            Job::Push => clean_homes(self.cluster),
            Job::Rotate => reset_secret(self.cluster),
            Job::Exec => {}
        }
        let (mut cmd, time_file) = self.invocation(tool, job, n);
        wait_quiet(&self.listeners);
        let sshd_before = self.workers.seconds();
        let reaped_before = self.workers.reaped_seconds();
        let moto_before = self.moto_cpu();
        let idle_before = machine_idle_cpu(self.ticks);
        let started = Instant::now();
        let mut running = spawn(&mut cmd);
        // The clock stops when the tool exits, not when its output pipes close (a process it
        // left behind could hold them open).
        while !running.has_exited() && started.elapsed() < self.timeout {
            std::thread::sleep(Duration::from_millis(5));
        }
        let wall = started.elapsed();
        let idle_cpu = machine_idle_cpu(self.ticks) - idle_before;
        let result = running.wait_timeout(self.timeout.saturating_sub(wall));
        wait_quiet(&self.listeners);
        let sshd_cpu = self.workers.seconds() - sshd_before;
        let sshd_reaped_cpu = self.workers.reaped_seconds() - reaped_before;
        let moto_cpu = self.moto_cpu() - moto_before;
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
        if !out.status.success() {
            return Err(format!("{}\n{}", out.status, tail(&describe(&out))));
        }
        let checked = match job {
            Job::Exec => Ok(()),
            Job::Push => verify_copies(self.cluster, n, PAYLOAD, &self.digest),
            Job::Rotate => {
                let verdict = verify_rotation(self.cluster, n);
                // The rotation retired the cluster key on these N workers and made a new key
                // current; the next N's exec and push (and the peers' key file) need the
                // cluster key back everywhere.
                reset_secret(self.cluster);
                verdict
            }
        };
        checked.map_err(|why| format!("{why}\n{}", tail(&describe(&out))))?;
        let (rss, cpu) = read_time_file(&time_file);
        let (Some(max_rss_kib), Some(client_cpu)) = (rss, cpu) else {
            return Err(format!(
                "/usr/bin/time wrote no figures to {}",
                time_file.display()
            ));
        };
        if job == Job::Push {
            clean_homes(self.cluster);
        }
        Ok(Sample {
            wall,
            sshd_cpu,
            sshd_reaped_cpu,
            client_cpu,
            max_rss_kib,
            moto_cpu,
            idle_cpu,
        })
    }
}

/// Idle and iowait seconds of all cores since boot, from the first line of /proc/stat
/// (`cpu user nice system idle iowait ...`, in clock ticks).
fn machine_idle_cpu(ticks: f64) -> f64 {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    (fields.get(3).copied().unwrap_or(0.0) + fields.get(4).copied().unwrap_or(0.0)) / ticks
}

/// The jobs to run: `SMSSH_BENCH_JOBS` (e.g. "exec" or "exec,rotate"), else all three.
fn selected_jobs() -> Vec<Job> {
    let all = [Job::Exec, Job::Push, Job::Rotate];
    match std::env::var("SMSSH_BENCH_JOBS") {
        Ok(list) => {
            let jobs: Vec<Job> = all
                .into_iter()
                .filter(|job| list.split(',').any(|name| name.trim() == job.name()))
                .collect();
            assert!(
                !jobs.is_empty(),
                "SMSSH_BENCH_JOBS names none of exec, push, rotate"
            );
            jobs
        }
        Err(_) => all.to_vec(),
    }
}

/// VmRSS of each listening sshd, KiB.
fn listener_rss(listeners: &[u32]) -> Vec<u64> {
    listeners
        .iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .collect()
}

fn mem_available_mib() -> u64 {
    fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kib| kib / 1024)
}

fn main() {
    check_peers();
    raise_nofile();
    let sizes = host_counts("8,32,128,512,1000", MAX_WORKERS);
    let rounds = env_usize("SMSSH_BENCH_ROUNDS", 3).max(1);
    let jobs = selected_jobs();
    let push_kib = env_usize("SMSSH_BENCH_PUSH_KIB", 1024).max(1);
    let timeout = Duration::from_secs(env_usize("SMSSH_BENCH_TIMEOUT", 600) as u64);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let max_n = *sizes
        .last()
        .expect("host_counts never returns an empty list");

    println!(
        "scale benchmark: N = {sizes:?} ({max_n} sshd workers started; the first N used), \
         {push_kib} KiB push, {rounds} rounds, {cores} cores, load {}",
        loadavg()
    );
    let mem_before = mem_available_mib();
    let started = Instant::now();
    let cluster = Cluster::new(max_n);
    let startup = started.elapsed();
    let listeners = listeners();
    assert_eq!(
        listeners.len(),
        max_n,
        "expected one listening sshd per worker among the bench's children"
    );
    let rss = listener_rss(&listeners);
    let rss_mean_mib = rss.iter().sum::<u64>() as f64 / rss.len().max(1) as f64 / 1024.0;
    let mem_used_mib = mem_before.saturating_sub(mem_available_mib());
    let cluster_line = format!(
        "{max_n} sshd workers up in {:.1} s; each listener {rss_mean_mib:.1} MiB RSS (shared \
         pages counted in each); MemAvailable fell by {mem_used_mib} MiB",
        startup.as_secs_f64()
    );
    println!("{cluster_line}");
    let moto = moto_pid();
    if moto.is_none() {
        eprintln!("scale bench: warning: moto's process not found; its CPU time reads 0");
    }

    let scratch = tempfile::Builder::new()
        .prefix("smssh-scale-bench-")
        .tempdir()
        .expect("scratch dir");
    let payload = scratch.path().join("payload.bin");
    write_payload(&payload, push_kib * 1024);
    let digest = sha256_hex(&fs::read(&payload).expect("read the payload back"));
    let ssh_opts: Vec<String> = cluster
        .openssh("ssh")
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .chain(TUNED_OPTS.iter().map(|s| (*s).to_owned()))
        .collect();
    let mut bench = Bench {
        cluster: &cluster,
        scratch,
        payload,
        digest,
        ssh_opts: ssh_opts.join(" "),
        workers: WorkerCpu::new(&listeners, clock_ticks()),
        listeners,
        moto,
        ticks: clock_ticks(),
        timeout,
        run_counter: 0,
    };

    warm_up(&cluster, &bench.listeners, max_n);
    let mut records: BTreeMap<(usize, Job, Tool), Record> = BTreeMap::new();
    let mut loads: BTreeMap<usize, Load> = BTreeMap::new();
    for &n in &sizes {
        let start = loadavg();
        println!("N={n}: load average {start}");
        for round in 0..rounds {
            for &job in &jobs {
                // Rotate the order each round so no tool always runs first or last.
                let mut order = job.tools().to_vec();
                let len = order.len();
                order.rotate_left(round % len);
                for tool in order {
                    let record = records.entry((n, job, tool)).or_default();
                    if record.failure.is_some() {
                        continue;
                    }
                    match bench.measure(tool, job, n) {
                        Ok(s) => {
                            println!(
                                "N={n:<4} round {} {:<6} {:<13} {:>8.3}s  sshd CPU {:>7.2}s \
                                 (reaped {:.2}s)  \
                                 client CPU {:>6.2}s  max RSS {:>6.1} MiB  moto CPU {:.2}s  \
                                 idle CPU {:.2}s",
                                round + 1,
                                job.name(),
                                tool.name(),
                                s.wall.as_secs_f64(),
                                s.sshd_cpu,
                                s.sshd_reaped_cpu,
                                s.client_cpu,
                                s.max_rss_kib as f64 / 1024.0,
                                s.moto_cpu,
                                s.idle_cpu,
                            );
                            record.samples.push(s);
                        }
                        Err(why) => {
                            println!(
                                "N={n:<4} round {} {:<6} {:<13} FAILED: {why}",
                                round + 1,
                                job.name(),
                                tool.name()
                            );
                            record.failure = Some(why);
                        }
                    }
                }
            }
        }
        let end = loadavg();
        println!("N={n}: load average {end} at the end");
        loads.insert(n, Load { start, end });
    }

    let context = Context {
        cores,
        rounds,
        push_kib,
        cluster_line,
        worker_cpu_method: bench.workers.method(),
    };
    let report = report(&records, &loads, &sizes, &context);
    println!("\n{report}");
    let out_dir = target_dir().join("bench");
    fs::create_dir_all(&out_dir).expect("create target/bench");
    let md_path = out_dir.join("scale.md");
    fs::write(&md_path, &report).expect("write scale.md");
    let json = to_json(&records, &loads, &sizes, &context);
    let json_path = out_dir.join("scale.json");
    fs::write(
        &json_path,
        serde_json::to_string_pretty(&json).expect("JSON values serialize"),
    )
    .expect("write scale.json");
    let png = out_dir.join("scale.png");
    let chart = Command::new(bench_venv().join("bin/python"))
        .arg(Path::new(REPO).join("benches/scale_chart.py"))
        .arg(&json_path)
        .arg(&png)
        .status();
    match chart {
        Ok(s) if s.success() => println!(
            "wrote {}, {}, {}",
            md_path.display(),
            json_path.display(),
            png.display()
        ),
        other => eprintln!(
            "scale bench: the chart failed ({other:?}); the table is in {}",
            md_path.display()
        ),
    }
}

/// What the report says about the run as a whole.
struct Context {
    cores: usize,
    rounds: usize,
    push_kib: usize,
    cluster_line: String,
    worker_cpu_method: &'static str,
}

/// Median of one figure over a record's samples; None for a failed or empty record.
fn median_of(record: &Record, figure: impl Fn(&Sample) -> f64) -> Option<f64> {
    if record.failure.is_some() || record.samples.is_empty() {
        return None;
    }
    let mut values: Vec<f64> = record.samples.iter().map(figure).collect();
    Some(median(&mut values))
}

fn wall_median(record: &Record) -> Option<f64> {
    median_of(record, |s| s.wall.as_secs_f64())
}

/// The floor of (N, job): the median sshd CPU of smssh's runs / cores.
fn floor(
    records: &BTreeMap<(usize, Job, Tool), Record>,
    n: usize,
    job: Job,
    cores: usize,
) -> Option<f64> {
    records
        .get(&(n, job, Tool::Smssh))
        .and_then(|r| median_of(r, |s| s.sshd_cpu))
        .map(|cpu| cpu / cores as f64)
        .filter(|f| *f > 0.0)
}

fn report(
    records: &BTreeMap<(usize, Job, Tool), Record>,
    loads: &BTreeMap<usize, Load>,
    sizes: &[usize],
    ctx: &Context,
) -> String {
    let cores = ctx.cores;
    let mut md = String::new();
    writeln!(
        md,
        "## Scaling: 8 to 1,000 loopback sshd workers (median of {} rounds)\n",
        ctx.rounds
    )
    .unwrap();
    writeln!(
        md,
        "Real OpenSSH sshd workers on loopback, {cores} cores shared by the client and every \
         worker, fan-out N for every tool; push = {} KiB to every host, SHA-256 checked on \
         every host. Floor = CPU time of the workers' sshd trees (sshd, session, sftp-server, \
         the command or the rotation's script) during smssh's run of that job / {cores} cores: \
         no client on this machine can finish sooner. Master CPU = the tool's process tree \
         (user + system); peak RSS = its largest process; sshd CPU is counted by {}, after \
         one untimed login to every worker (a fresh sshd's first login costs more); idle = CPU seconds no process \
         used during the run (idle + iowait of all cores, /proc/stat), so a wall time above \
         its floor with little idle is CPU spent outside the sshd trees, and with much idle is \
         waiting. {}.\n",
        ctx.push_kib, ctx.worker_cpu_method, ctx.cluster_line
    )
    .unwrap();
    writeln!(
        md,
        "| job | N | tool | wall s | floor s | wall / floor | master CPU ms / host | sshd CPU ms / host | peak RSS MiB | idle CPU s |\n\
         |---|---:|---|---:|---:|---:|---:|---:|---:|---:|"
    )
    .unwrap();
    for job in [Job::Exec, Job::Push, Job::Rotate] {
        for &n in sizes {
            let fl = floor(records, n, job, cores);
            for &tool in job.tools() {
                let Some(record) = records.get(&(n, job, tool)) else {
                    continue;
                };
                if record.failure.is_some() {
                    writeln!(
                        md,
                        "| {} | {n} | {} | FAILED | | | | | | |",
                        job.name(),
                        tool.name()
                    )
                    .unwrap();
                    continue;
                }
                let (Some(wall), Some(client), Some(sshd), Some(idle)) = (
                    wall_median(record),
                    median_of(record, |s| s.client_cpu),
                    median_of(record, |s| s.sshd_cpu),
                    median_of(record, |s| s.idle_cpu),
                ) else {
                    continue;
                };
                let rss = record
                    .samples
                    .iter()
                    .map(|s| s.max_rss_kib)
                    .max()
                    .unwrap_or(0);
                let n_f = n as f64;
                writeln!(
                    md,
                    "| {} | {n} | {} | {wall:.3} | {} | {} | {:.2} | {:.2} | {:.1} | {idle:.2} |",
                    job.name(),
                    tool.name(),
                    fl.map_or("-".into(), |f| format!("{f:.3}")),
                    fl.map_or("-".into(), |f| format!("{:.2}x", wall / f)),
                    client * 1000.0 / n_f,
                    sshd * 1000.0 / n_f,
                    rss as f64 / 1024.0,
                )
                .unwrap();
            }
        }
    }

    writeln!(md, "\nGoals at N = {GOAL_AT} (reported, not asserted):\n").unwrap();
    for (job, goal) in [
        (Job::Exec, GOAL_EXEC_RATIO),
        (Job::Rotate, GOAL_ROTATE_RATIO),
    ] {
        let ratio = records
            .get(&(GOAL_AT, job, Tool::Smssh))
            .and_then(wall_median)
            .zip(floor(records, GOAL_AT, job, cores))
            .map(|(w, f)| w / f);
        let verdict = match ratio {
            Some(r) if r <= goal => format!("{r:.2}x: met"),
            Some(r) => format!("{r:.2}x: **not met**"),
            None => "not measured in this run".to_owned(),
        };
        writeln!(
            md,
            "- {} on {GOAL_AT} hosts at most {goal:.2}x its floor: {verdict}",
            job.name()
        )
        .unwrap();
    }

    writeln!(
        md,
        "\nLoad average (1, 5, 15 min) at the start and end of each N:\n"
    )
    .unwrap();
    for (n, load) in loads {
        writeln!(md, "- N = {n}: {} -> {}", load.start, load.end).unwrap();
    }

    writeln!(md, "\nCommands (H = hostlist, N = fan-out):\n").unwrap();
    for job in [Job::Exec, Job::Push, Job::Rotate] {
        for &tool in job.tools() {
            writeln!(
                md,
                "- {} / {}: `{}`",
                job.name(),
                tool.name(),
                tool.label(job)
            )
            .unwrap();
        }
    }
    let failures: Vec<String> = records
        .iter()
        .filter_map(|((n, job, tool), r)| {
            r.failure.as_ref().map(|why| {
                format!(
                    "- {}, {} on {n}: {}",
                    tool.name(),
                    job.name(),
                    why.lines().next().unwrap_or_default()
                )
            })
        })
        .collect();
    if !failures.is_empty() {
        writeln!(md, "\nFailed (not timed):\n\n{}", failures.join("\n")).unwrap();
    }
    md
}

fn to_json(
    records: &BTreeMap<(usize, Job, Tool), Record>,
    loads: &BTreeMap<usize, Load>,
    sizes: &[usize],
    ctx: &Context,
) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = records
        .iter()
        .map(|((n, job, tool), r)| {
            serde_json::json!({
                "n": n,
                "job": job.name(),
                "tool": tool.name(),
                "command": tool.label(*job),
                "failed": r.failure.is_some(),
                "failure": r.failure.as_deref().map(|w| w.lines().next().unwrap_or_default()),
                "median_s": wall_median(r),
                "floor_s": floor(records, *n, *job, ctx.cores),
                "client_cpu_median_s": median_of(r, |s| s.client_cpu),
                "sshd_cpu_median_s": median_of(r, |s| s.sshd_cpu),
                "max_rss_kib": r.samples.iter().map(|s| s.max_rss_kib).max(),
                "walls_s": r.samples.iter().map(|s| s.wall.as_secs_f64()).collect::<Vec<_>>(),
                "client_cpu_s": r.samples.iter().map(|s| s.client_cpu).collect::<Vec<_>>(),
                "sshd_cpu_s": r.samples.iter().map(|s| s.sshd_cpu).collect::<Vec<_>>(),
                "sshd_reaped_cpu_s": r.samples.iter().map(|s| s.sshd_reaped_cpu).collect::<Vec<_>>(),
                "moto_cpu_s": r.samples.iter().map(|s| s.moto_cpu).collect::<Vec<_>>(),
                "idle_cpu_s": r.samples.iter().map(|s| s.idle_cpu).collect::<Vec<_>>(),
            })
        })
        .collect();
    serde_json::json!({
        "cores": ctx.cores,
        "rounds": ctx.rounds,
        "push_kib": ctx.push_kib,
        "sizes": sizes,
        "cluster": ctx.cluster_line,
        "load": loads.iter().map(|(n, l)| serde_json::json!({"n": n, "start": l.start, "end": l.end})).collect::<Vec<_>>(),
        "goals": {"at_n": GOAL_AT, "exec_ratio": GOAL_EXEC_RATIO, "rotate_ratio": GOAL_ROTATE_RATIO},
        "results": rows,
    })
}
