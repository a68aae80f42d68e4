//! Fan-out benchmark (issue: "Fan-out ... faster than pdsh, pssh, ClusterShell and Ansible").
//! Run with
//!
//! ```sh
//! ./scripts/bench-deps.sh && SMSSH_TEST_MOTO=$PWD/.venv/bin/moto_server cargo bench --bench fanout
//! ```
//!
//! Side by side in one run, against N real sshd workers on loopback (N = 32 and 128 by
//! default; `SMSSH_BENCH_HOSTS="32,128"`), the wall time of two jobs:
//! 1. `true` on every host: `smssh -w` vs pdsh, parallel-ssh (pssh), clush, Ansible ad-hoc
//!    (`-m command`) and `xargs -P N ssh`;
//! 2. a 16 MiB file (`SMSSH_BENCH_MIB`) to every host: `smscp` vs pdcp, parallel-scp,
//!    `clush --copy`, Ansible `-m copy` and `xargs -P N scp`.
//!
//! Every tool gets a fan-out of N, the same key file, the cluster's ssh_config and
//! known_hosts, `StrictHostKeyChecking=yes` and `BatchMode=yes`; smssh and smscp take the key
//! from the secret in moto, as in the tests. Every copy lands in each worker's own SFTP home
//! (`payload`, a relative path), so N real files are written: the SFTP- and scp-based tools
//! get the relative path, Ansible an absolute per-host `dest` from its inventory, and pdcp a
//! remote wrapper (`PDSH_REMOTE_PDCP_PATH`) that enters the home of the worker it runs on
//! (read from `SSH_CONNECTION`) before exec'ing the real pdcp.
//!
//! Each run is checked (exit status 0, per-host success lines where the tool prints them, and
//! for copies every host's file with the right size); a tool that fails is reported as failed,
//! never timed, and is not run again. Rounds (`SMSSH_BENCH_ROUNDS`, default 3) interleave the
//! tools in a rotating order; the table shows medians.
//!
//! The floor: the CPU time the workers' sshd trees (sshd, the session, sftp-server, the
//! command) spend during the smssh/smscp run, read from /proc/<listener>/stat (own and reaped
//! children's time), divided by the number of cores: no client can make N logins finish
//! sooner. smssh's peak memory is its max RSS from `/usr/bin/time -f %M`.
//!
//! Output: a markdown table on stdout and in target/bench/fanout.md, the raw figures in
//! target/bench/fanout.json and a chart, target/bench/fanout.png, drawn by
//! benches/fanout_chart.py. A report, not a test: it never fails on a slow figure.

#[path = "../tests/common/mod.rs"]
mod common;
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

/// The tools, smssh first; each name is the column header.
const TOOLS: [&str; 6] = ["smssh", "pdsh", "pssh", "clush", "ansible", "xargs+openssh"];

fn command_label(tool: &str, job: Job) -> &'static str {
    match (tool, job) {
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
        _ => "?",
    }
}

/// What one successful run measured.
#[derive(Clone, Debug)]
struct Sample {
    wall: Duration,
    /// CPU seconds the workers' sshd trees used during the run.
    server_cpu: f64,
    /// smssh/smscp only: max RSS (KiB) and user+system CPU seconds, from /usr/bin/time.
    max_rss_kib: Option<u64>,
    client_cpu: Option<f64>,
}

#[derive(Default)]
struct Record {
    samples: Vec<Sample>,
    failure: Option<String>,
}

/// Fails with a clear message unless every peer and helper is installed.
fn check_peers() {
    let mut missing = Vec::new();
    for tool in [
        "pdsh",
        "pdcp",
        "parallel-ssh",
        "parallel-scp",
        "clush",
        "xargs",
        "ssh",
        "scp",
    ] {
        if find_on_path(tool).is_none() {
            missing.push(tool.to_owned());
        }
    }
    for file in [
        PathBuf::from("/usr/bin/time"),
        bench_venv().join("bin/ansible"),
    ] {
        if !file.is_file() {
            missing.push(file.display().to_string());
        }
    }
    let matplotlib = Command::new(bench_venv().join("bin/python"))
        .args(["-c", "import matplotlib"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !matplotlib {
        missing.push(format!("matplotlib in {}", bench_venv().display()));
    }
    if !missing.is_empty() {
        eprintln!(
            "fanout bench: missing {}; {DEPS_HINT} (then: SMSSH_TEST_MOTO=$PWD/.venv/bin/moto_server \
             cargo bench --bench fanout)",
            missing.join(", ")
        );
        std::process::exit(2);
    }
}

struct Bench<'a> {
    cluster: &'a Cluster,
    scratch: tempfile::TempDir,
    payload: PathBuf,
    size: u64,
    /// The OpenSSH options every peer passes: -F, known_hosts, StrictHostKeyChecking=yes,
    /// BatchMode=yes, IdentitiesOnly=yes, -i key.
    ssh_opts: Vec<String>,
    listeners: Vec<u32>,
    ticks: f64,
    timeout: Duration,
    run_counter: usize,
}

/// One prepared invocation.
struct Invocation {
    cmd: Command,
    stdin: Option<Vec<u8>>,
    /// Where /usr/bin/time writes "%M %U %S" (smssh/smscp only).
    time_file: Option<PathBuf>,
}

impl<'a> Bench<'a> {
    fn hostlist(&self, n: usize) -> String {
        format!("127.0.0.[2-{}]", n + 1)
    }

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

    fn ssh_opts_line(&self) -> String {
        self.ssh_opts.join(" ")
    }

    /// The smssh/smscp command under /usr/bin/time.
    fn ours(&mut self, bin: &str, args: &[String]) -> Invocation {
        let inner = self.cluster.command(bin);
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
            .args(args)
            .stdin(Stdio::null());
        Invocation {
            cmd,
            stdin: None,
            time_file: Some(time_file),
        }
    }

    fn pdcp_wrapper(&self, n: usize) -> PathBuf {
        let map = self.scratch.path().join("homes");
        let wrapper = self.scratch.path().join("pdcp-in-sftp-home");
        fs::create_dir_all(&map).expect("mkdir homes");
        for worker in self.cluster.workers.iter().take(n) {
            let link = map.join(worker.addr());
            if fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(worker.sftp_home(), &link).expect("symlink a home");
            }
        }
        if !wrapper.exists() {
            let pdcp = find_on_path("pdcp").expect("pdcp");
            let script = format!(
                "#!/bin/sh\n\
                 # The server address is the third field of SSH_CONNECTION.\n\
                 s=${{SSH_CONNECTION% *}}\n\
                 s=${{s##* }}\n\
                 cd '{}'/\"$s\" || exit 1\n\
                 exec '{}' \"$@\"\n",
                map.display(),
                pdcp.display()
            );
            fs::write(&wrapper, script).expect("write the pdcp wrapper");
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        wrapper
    }

    fn ansible(&mut self, n: usize, job: Job) -> Invocation {
        let dir = self.scratch.path().join("ansible");
        fs::create_dir_all(dir.join("remote")).expect("mkdir ansible");
        self.run_counter += 1;
        // A fresh ControlPath directory per run: connections are shared within a run (as
        // Ansible does by default) but never carried over from the previous round.
        let control = dir.join(format!("cp-{}", self.run_counter));
        fs::create_dir_all(&control).expect("mkdir control path dir");
        let inventory = dir.join(format!("inventory-{n}"));
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
                 -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes",
                self.cluster.port,
                self.cluster.key_path.display(),
                self.cluster.ssh_config_path().display(),
                self.cluster.known_hosts_path().display(),
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
        Invocation {
            cmd,
            stdin: None,
            time_file: None,
        }
    }

    fn invocation(&mut self, tool: &str, job: Job, n: usize) -> Invocation {
        let hosts = self.hostlist(n);
        let fanout = n.to_string();
        let payload = self.payload.display().to_string();
        let plain = |cmd: Command| Invocation {
            cmd,
            stdin: None,
            time_file: None,
        };
        match (tool, job) {
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
                    .env("PDSH_SSH_ARGS_APPEND", self.ssh_opts_line())
                    .args(["-R", "ssh", "-f", &fanout, "-w", &hosts]);
                if job == Job::True {
                    cmd.args(["-S", "true"]);
                } else {
                    cmd.env("PDSH_REMOTE_PDCP_PATH", self.pdcp_wrapper(n))
                        .args([&payload, PAYLOAD]);
                }
                plain(cmd)
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
                    &self.ssh_opts_line(),
                ]);
                if job == Job::True {
                    cmd.arg("true");
                } else {
                    cmd.args([&payload, PAYLOAD]);
                }
                plain(cmd)
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
                    &self.ssh_opts_line(),
                ]);
                if job == Job::True {
                    cmd.arg("true");
                } else {
                    cmd.args(["--copy", &payload, "--dest", PAYLOAD]);
                }
                plain(cmd)
            }
            ("ansible", _) => self.ansible(n, job),
            ("xargs+openssh", _) => {
                let mut cmd = self.peer("xargs");
                cmd.args(["-P", &fanout, "-I{}"]);
                if job == Job::True {
                    cmd.arg("ssh").args(&self.ssh_opts).args(["{}", "true"]);
                } else {
                    cmd.arg("scp")
                        .arg("-q")
                        .args(&self.ssh_opts)
                        .args([&payload, &format!("{{}}:{PAYLOAD}")]);
                }
                let list: String = self.addrs(n).iter().map(|a| format!("{a}\n")).collect();
                Invocation {
                    cmd,
                    stdin: Some(list.into_bytes()),
                    time_file: None,
                }
            }
            _ => unreachable!("unknown tool {tool}"),
        }
    }

    fn clean_targets(&self) {
        for worker in &self.cluster.workers {
            if let Ok(entries) = fs::read_dir(worker.sftp_home()) {
                for entry in entries.flatten() {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }

    /// Checks what a run left behind; Err says what is wrong.
    fn verify(&self, tool: &str, job: Job, n: usize, out: &Output) -> Result<(), String> {
        if !out.status.success() {
            return Err(format!("exit status {}", out.status));
        }
        if tool == "ansible" {
            let ok = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(" | CHANGED") || l.contains(" | SUCCESS"))
                .count();
            if ok != n {
                return Err(format!("{ok} of {n} hosts reported success"));
            }
        }
        if tool == "pssh" {
            let ok = String::from_utf8_lossy(&out.stdout)
                .matches("[SUCCESS]")
                .count();
            if ok != n {
                return Err(format!("{ok} of {n} hosts reported [SUCCESS]"));
            }
        }
        if job == Job::Copy {
            let mut bad = Vec::new();
            for worker in self.cluster.workers.iter().take(n) {
                let path = worker.sftp_home().join(PAYLOAD);
                match fs::metadata(&path) {
                    Ok(meta) if meta.len() == self.size => {}
                    Ok(meta) => bad.push(format!("{}: {} bytes", worker.addr(), meta.len())),
                    Err(e) => bad.push(format!("{}: {e}", worker.addr())),
                }
            }
            if !bad.is_empty() {
                return Err(format!(
                    "{} of {n} hosts lack a {}-byte {PAYLOAD} (first: {})",
                    bad.len(),
                    self.size,
                    bad[0]
                ));
            }
        }
        Ok(())
    }

    fn measure(&mut self, tool: &str, job: Job, n: usize) -> Result<Sample, String> {
        if job == Job::Copy {
            self.clean_targets();
        }
        wait_quiet(&self.listeners);
        let inv = self.invocation(tool, job, n);
        let Invocation {
            mut cmd,
            stdin,
            time_file,
        } = inv;
        let before = tree_cpu(&self.listeners, self.ticks);
        let started = Instant::now();
        let running = match &stdin {
            Some(input) => spawn_with_stdin(&mut cmd, input),
            None => spawn(&mut cmd),
        };
        let result = running.wait_timeout(self.timeout);
        let wall = started.elapsed();
        wait_quiet(&self.listeners);
        let server_cpu = tree_cpu(&self.listeners, self.ticks) - before;
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
        let (max_rss_kib, client_cpu) = match time_file {
            Some(path) => {
                let text = fs::read_to_string(&path).unwrap_or_default();
                let last = text.lines().last().unwrap_or_default().to_owned();
                let fields: Vec<&str> = last.split_whitespace().collect();
                let rss = fields.first().and_then(|s| s.parse().ok());
                let cpu = match (fields.get(1), fields.get(2)) {
                    (Some(u), Some(s)) => {
                        Some(u.parse::<f64>().unwrap_or(0.0) + s.parse::<f64>().unwrap_or(0.0))
                    }
                    _ => None,
                };
                (rss, cpu)
            }
            None => (None, None),
        };
        if job == Job::Copy {
            self.clean_targets();
        }
        Ok(Sample {
            wall,
            server_cpu,
            max_rss_kib,
            client_cpu,
        })
    }
}

fn write_payload(path: &Path, size: usize) {
    let mut data = vec![0u8; size];
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    for chunk in data.chunks_mut(8) {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
    }
    fs::write(path, data).expect("write the payload");
}

fn main() {
    check_peers();
    raise_nofile();
    let sizes = host_counts();
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
         {mib} MiB copy, {rounds} rounds, {cores} cores"
    );
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
    let mut bench = Bench {
        cluster: &cluster,
        scratch,
        payload,
        size: (mib * 1024 * 1024) as u64,
        ssh_opts,
        listeners,
        ticks: clock_ticks(),
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
                                "N={n:<3} round {} {:<5} {tool:<14} {:>8.3}s  sshd CPU {:>6.2}s{}",
                                round + 1,
                                job.name(),
                                sample.wall.as_secs_f64(),
                                sample.server_cpu,
                                match (sample.max_rss_kib, sample.client_cpu) {
                                    (Some(rss), Some(cpu)) => format!(
                                        "  client CPU {cpu:.2}s, max RSS {:.1} MiB",
                                        rss as f64 / 1024.0
                                    ),
                                    _ => String::new(),
                                }
                            );
                            record.samples.push(sample);
                        }
                        Err(why) => {
                            println!(
                                "N={n:<3} round {} {:<5} {tool:<14} FAILED: {why}",
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

    let report = report(&records, &sizes, &tools, cores, rounds, mib);
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

fn report(
    records: &BTreeMap<(usize, Job, &str), Record>,
    sizes: &[usize],
    tools: &[&str],
    cores: usize,
    rounds: usize,
    mib: usize,
) -> String {
    let empty = Record::default();
    let mut md = String::new();
    writeln!(
        md,
        "## Fan-out: smssh vs peers (wall seconds, median of {rounds}; ratio = tool / smssh)\n"
    )
    .unwrap();
    writeln!(
        md,
        "Loopback sshd workers (OpenSSH), {cores} cores, fan-out N for every tool; copy = {mib} MiB \
         to every host. Floor = CPU time of the workers' sshd trees (sshd, session, sftp-server, command) during the \
         smssh/smscp run / {cores} cores; the last column is the same for whichever tool made the \
         servers work least.\n"
    )
    .unwrap();
    let mut header = String::from("| job | N |");
    let mut rule = String::from("|---|---:|");
    for tool in tools {
        write!(header, " {tool} |").unwrap();
        rule.push_str("---:|");
    }
    header.push_str(
        " fastest peer / smssh | floor | smssh / floor | lowest sshd CPU of any tool / cores |",
    );
    rule.push_str("---:|---:|---:|---:|");
    writeln!(md, "{header}\n{rule}").unwrap();
    for job in [Job::True, Job::Copy] {
        for &n in sizes {
            let ours = records.get(&(n, job, "smssh")).unwrap_or(&empty);
            let ours_wall = wall_median(ours);
            let mut row = format!("| {} | {n} |", job.name());
            let mut fastest: Option<f64> = None;
            for tool in tools {
                let record = records.get(&(n, job, *tool)).unwrap_or(&empty);
                match (wall_median(record), record.failure.is_some()) {
                    (_, true) => row.push_str(" FAILED |"),
                    (Some(w), _) => {
                        if *tool != "smssh" {
                            fastest = Some(fastest.map_or(w, |f: f64| f.min(w)));
                        }
                        match ours_wall {
                            Some(o) if *tool != "smssh" => {
                                write!(row, " {w:.3} ({:.1}x) |", w / o).unwrap()
                            }
                            _ => write!(row, " {w:.3} |").unwrap(),
                        }
                    }
                    (None, _) => row.push_str(" - |"),
                }
            }
            match (fastest, ours_wall) {
                (Some(f), Some(o)) => write!(row, " {:.2}x |", f / o).unwrap(),
                _ => row.push_str(" - |"),
            }
            match (floor_median(ours, cores), ours_wall) {
                (Some(floor), Some(o)) if floor > 0.0 => {
                    write!(row, " {floor:.3} | {:.2}x |", o / floor).unwrap()
                }
                _ => row.push_str(" - | - |"),
            }
            let lowest = tools
                .iter()
                .filter_map(|t| records.get(&(n, job, *t)))
                .filter(|r| r.failure.is_none())
                .filter_map(|r| floor_median(r, cores))
                .fold(None, |acc: Option<f64>, f| {
                    Some(acc.map_or(f, |a| a.min(f)))
                });
            match lowest {
                Some(l) => write!(row, " {l:.3} |").unwrap(),
                None => row.push_str(" - |"),
            }
            writeln!(md, "{row}").unwrap();
        }
    }
    writeln!(
        md,
        "\nsmssh / smscp itself (median client CPU, max RSS over the runs):\n"
    )
    .unwrap();
    writeln!(
        md,
        "| job | N | client CPU s | sshd CPU s | peak RSS MiB |\n|---|---:|---:|---:|---:|"
    )
    .unwrap();
    for job in [Job::True, Job::Copy] {
        for &n in sizes {
            let Some(record) = records.get(&(n, job, "smssh")) else {
                continue;
            };
            if record.samples.is_empty() {
                continue;
            }
            let mut cpu: Vec<f64> = record.samples.iter().filter_map(|s| s.client_cpu).collect();
            let mut server: Vec<f64> = record.samples.iter().map(|s| s.server_cpu).collect();
            let rss = record.samples.iter().filter_map(|s| s.max_rss_kib).max();
            writeln!(
                md,
                "| {} | {n} | {} | {:.2} | {} |",
                job.name(),
                if cpu.is_empty() {
                    "-".into()
                } else {
                    format!("{:.2}", median(&mut cpu))
                },
                median(&mut server),
                rss.map_or("-".into(), |r| format!("{:.1}", r as f64 / 1024.0)),
            )
            .unwrap();
        }
    }
    writeln!(md, "\nCommands (H = hosts, N = fan-out):\n").unwrap();
    for job in [Job::True, Job::Copy] {
        for tool in tools {
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
         within 1.5x of the floor; peak memory < 200 MiB at N = 128."
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
                "client_cpu_s": r.samples.iter().filter_map(|s| s.client_cpu).collect::<Vec<_>>(),
                "max_rss_kib": r.samples.iter().filter_map(|s| s.max_rss_kib).max(),
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
