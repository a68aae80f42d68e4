//! What `smssh agent` costs (issue 12): pdsh and Ansible logging in through the agent, against
//! smssh's own fan-out, at N real sshd workers on loopback (N = 32; `SMSSH_BENCH_AGENT_HOSTS`).
//! Run with
//!
//! ```sh
//! ./scripts/bench-deps.sh && SMSSH_TEST_MOTO=$PWD/.venv/bin/moto_server cargo bench --bench agent
//! ```
//!
//! The job is `true` on every host, with a fan-out of N for every tool:
//! - `smssh -w H -j N -- true`, the built-in fan-out (key from the secret, one fetch);
//! - `smssh agent -- pdsh -R ssh -f N -w H -S true` and `smssh agent -- ansible -f N -m command
//!   -a true` (Ansible's plain OpenSSH connection, pipelining, ControlPersist as in the fan-out
//!   bench): OpenSSH's ssh with no identity file, every signature made by the agent;
//! - the same pdsh and Ansible runs with the key in a file (`-i`, `IdentitiesOnly=yes`, no
//!   agent), so that the table shows what the agent itself adds;
//! - `smssh agent -- true`: the agent alone (secret fetch, socket, exit).
//!
//! Fairness: every OpenSSH client gets `KexAlgorithms=curve25519-sha256` and
//! `Ciphers=aes128-gcm@openssh.com`, what smssh negotiates with OpenSSH 9.2's sshd by default;
//! before timing, worker 1's sshd runs at `LogLevel DEBUG` once and its log must show that
//! both smssh and ssh-through-the-agent negotiated exactly that, or the bench stops.
//!
//! Every run is checked (exit status 0; Ansible must report success for all N hosts); a tool
//! that fails is reported as failed, never timed, and is not run again. Rounds
//! (`SMSSH_BENCH_ROUNDS`, default 3) interleave the tools in a rotating order; the table shows
//! medians. Output: a markdown table on stdout and in target/bench/agent.md. A report, not a
//! test: it never fails on a slow figure.

#[path = "../tests/common/mod.rs"]
mod common;
// Shared with the other benches; this one measures one host count and no sshd CPU time, so
// some of the shared helpers go unused here.
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use support::*;

const KEX: &str = "curve25519-sha256";
const CIPHER: &str = "aes128-gcm@openssh.com";

/// The rows of the table, in order; the first is the reference.
const TOOLS: [&str; 6] = [
    "smssh -w",
    "pdsh via agent",
    "ansible via agent",
    "pdsh with key file",
    "ansible with key file",
    "agent alone",
];

fn command_label(tool: &str) -> &'static str {
    match tool {
        "smssh -w" => "smssh -w H -j N -- true",
        "pdsh via agent" => "smssh agent -- pdsh -R ssh -f N -w H -S true",
        "ansible via agent" => "smssh agent -- ansible workers -f N -m command -a true",
        "pdsh with key file" => "pdsh -R ssh -f N -w H -S true (ssh -i KEY)",
        "ansible with key file" => "ansible workers -f N -m command -a true (private key file)",
        "agent alone" => "smssh agent -- true",
        _ => "?",
    }
}

struct Bench<'a> {
    cluster: &'a Cluster,
    n: usize,
    scratch: tempfile::TempDir,
    listeners: Vec<u32>,
    timeout: Duration,
    run_counter: usize,
}

impl Bench<'_> {
    fn hostlist(&self) -> String {
        format!("127.0.0.[2-{}]", self.n + 1)
    }

    /// OpenSSH's options for every peer: the cluster's config and known_hosts, host keys
    /// checked, never prompting, smssh's kex and cipher, and with `key_file` that key and no
    /// other (no agent); without it, no identity file at all, so the agent signs.
    fn ssh_options(&self, key_file: bool) -> Vec<String> {
        let mut options = vec![
            "-F".to_owned(),
            self.cluster.ssh_config_path().display().to_string(),
            "-o".into(),
            format!(
                "UserKnownHostsFile={}",
                self.cluster.known_hosts_path().display()
            ),
            "-o".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!("KexAlgorithms={KEX}"),
            "-o".into(),
            format!("Ciphers={CIPHER}"),
        ];
        if key_file {
            options.extend([
                "-o".into(),
                "IdentitiesOnly=yes".into(),
                "-o".into(),
                "IdentityAgent=none".into(),
                "-i".into(),
                self.cluster.key_path.display().to_string(),
            ]);
        }
        options
    }

    /// `program` with the binaries' environment (HOME, PATH, moto, the secret's name) and a
    /// UTF-8 locale, which Ansible requires; through `smssh agent --` when `agent` is set.
    fn command(&self, program: &str, agent: bool) -> Command {
        let mut cmd = if agent {
            let mut cmd = self.cluster.command("smssh");
            cmd.args(["agent", "--", program]);
            cmd
        } else {
            harness_environment(
                Command::new(program),
                self.cluster.home.path(),
                &self.cluster.moto,
            )
        };
        cmd.env("LC_ALL", "C.UTF-8")
            .env("LANG", "C.UTF-8")
            .current_dir(self.scratch.path())
            .stdin(Stdio::null());
        cmd
    }

    fn pdsh(&self, agent: bool) -> Command {
        let mut cmd = self.command("pdsh", agent);
        cmd.env("PDSH_RCMD_TYPE", "ssh")
            .env("PDSH_SSH_ARGS_APPEND", self.ssh_options(!agent).join(" "))
            .args([
                "-R",
                "ssh",
                "-f",
                &self.n.to_string(),
                "-w",
                &self.hostlist(),
            ])
            .args(["-S", "true"]);
        cmd
    }

    fn ansible(&mut self, agent: bool) -> Command {
        let dir = self.scratch.path().join("ansible");
        fs::create_dir_all(dir.join("remote")).expect("mkdir ansible");
        self.run_counter += 1;
        // A fresh ControlPath directory per run: connections are shared within a run (as
        // Ansible does by default) but never carried over from the previous one.
        let control = dir.join(format!("cp-{}", self.run_counter));
        fs::create_dir_all(&control).expect("mkdir control path dir");
        let inventory = dir.join(if agent {
            "inventory-agent"
        } else {
            "inventory-key"
        });
        if !inventory.exists() {
            let mut text = String::from("[workers]\n");
            for worker in self.cluster.workers.iter().take(self.n) {
                writeln!(text, "{}", worker.addr()).expect("write to a String");
            }
            writeln!(
                text,
                "[workers:vars]\nansible_connection=ssh\nansible_user=root\nansible_port={}\n\
                 ansible_python_interpreter=/usr/bin/python3\nansible_ssh_common_args={}",
                self.cluster.port,
                self.ssh_options(!agent).join(" "),
            )
            .expect("write to a String");
            fs::write(&inventory, text).expect("write the inventory");
        }
        let mut cmd = self.command(
            bench_venv()
                .join("bin/ansible")
                .to_str()
                .expect("a UTF-8 venv path"),
            agent,
        );
        ansible_env(&mut cmd, &dir, &control);
        cmd.arg("workers")
            .arg("-i")
            .arg(&inventory)
            .args(["-f", &self.n.to_string()])
            .args(["-m", "command", "-a", "true"]);
        cmd
    }

    fn invocation(&mut self, tool: &str) -> Command {
        match tool {
            "smssh -w" => {
                let mut cmd = self.cluster.command("smssh");
                cmd.args(["-j", &self.n.to_string(), "-w", &self.hostlist()])
                    .args(["--", "true"]);
                cmd
            }
            "pdsh via agent" => self.pdsh(true),
            "ansible via agent" => self.ansible(true),
            "pdsh with key file" => self.pdsh(false),
            "ansible with key file" => self.ansible(false),
            "agent alone" => self.command("true", true),
            other => unreachable!("unknown tool {other}"),
        }
    }

    /// Checks a run's outcome; Err says what is wrong.
    fn verify(&self, tool: &str, out: &Output) -> Result<(), String> {
        if !out.status.success() {
            return Err(format!("exit status {}", out.status));
        }
        if tool.starts_with("ansible") {
            let ok = String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.contains(" | CHANGED") || l.contains(" | SUCCESS"))
                .count();
            if ok != self.n {
                return Err(format!("{ok} of {} hosts reported success", self.n));
            }
        }
        Ok(())
    }

    fn measure(&mut self, tool: &str) -> Result<Duration, String> {
        wait_quiet(&self.listeners);
        let mut cmd = self.invocation(tool);
        let started = Instant::now();
        let result = spawn(&mut cmd).wait_timeout(self.timeout);
        let wall = started.elapsed();
        let out = result
            .map_err(|out| format!("killed after {:?}\n{}", self.timeout, tail(&describe(&out))))?;
        self.verify(tool, &out)
            .map_err(|why| format!("{why}\n{}", tail(&describe(&out))))?;
        Ok(wall)
    }
}

/// Fails with a clear message unless every peer is installed.
fn check_peers() {
    require_peers(
        "agent",
        &["pdsh", "ssh"],
        &[bench_venv().join("bin/ansible")],
        &[],
    );
}

/// The last value worker 1's sshd logged after `prefix`, up to the next space.
fn last_logged(log: &str, prefix: &str) -> Option<String> {
    log.lines().rev().find_map(|line| {
        let (_, rest) = line.split_once(prefix)?;
        rest.split_whitespace().next().map(str::to_owned)
    })
}

/// Runs `cmd` against worker 1 with its sshd at `LogLevel DEBUG` and returns the key exchange
/// and cipher its log shows for that session; exits the bench if the run fails.
fn negotiated(worker: &Worker, what: &str, cmd: &mut Command) -> (String, String) {
    let before = worker.log().len();
    let out = run(cmd);
    if !out.status.success() {
        eprintln!("agent bench: {what} failed\n{}", describe(&out));
        std::process::exit(1);
    }
    let log = worker.log();
    let session = log.get(before..).unwrap_or_default();
    let found = (
        last_logged(session, "kex: algorithm: "),
        last_logged(session, "kex: client->server cipher: "),
    );
    match found {
        (Some(kex), Some(cipher)) => (kex, cipher),
        _ => {
            eprintln!("agent bench: sshd logged no key exchange for {what}:\n{session}");
            std::process::exit(1);
        }
    }
}

fn main() {
    check_peers();
    raise_nofile();
    let n = env_usize("SMSSH_BENCH_AGENT_HOSTS", 32).clamp(1, 250);
    let rounds = env_usize("SMSSH_BENCH_ROUNDS", 3).max(1);
    let timeout = Duration::from_secs(env_usize("SMSSH_BENCH_TIMEOUT", 300) as u64);
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    println!("agent benchmark: N = {n} sshd workers, {rounds} rounds, {cores} cores");

    let started = Instant::now();
    let mut cluster = Cluster::new(n);
    println!(
        "cluster of {n} up in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    let scratch = tempfile::Builder::new()
        .prefix("smssh-agent-bench-")
        .tempdir()
        .expect("scratch dir");

    // The same key exchange and cipher for smssh and for OpenSSH through the agent, as sshd
    // logged them; then worker 1 goes back to logging errors only (sshd keeps the first
    // LogLevel, and the new line goes first).
    cluster.workers[0].set_global_config("LogLevel DEBUG");
    {
        let probe = Bench {
            cluster: &cluster,
            n,
            scratch: tempfile::tempdir().expect("probe dir"),
            listeners: Vec::new(),
            timeout,
            run_counter: 0,
        };
        let worker = &cluster.workers[0];
        let ours = negotiated(
            worker,
            "smssh",
            cluster.command("smssh").args(["127.0.0.2", "true"]),
        );
        let mut through_agent = probe.command("ssh", true);
        through_agent
            .args(probe.ssh_options(false))
            .args(["127.0.0.2", "true"]);
        let theirs = negotiated(worker, "ssh through the agent", &mut through_agent);
        let want = (KEX.to_owned(), CIPHER.to_owned());
        if ours != want || theirs != want {
            eprintln!(
                "agent bench: negotiated {ours:?} (smssh) and {theirs:?} (ssh), not {want:?}"
            );
            std::process::exit(1);
        }
        println!("negotiated by both: {KEX}, {CIPHER} (worker 1's sshd log)");
    }
    cluster.workers[0].set_global_config("LogLevel ERROR");

    let listeners = listeners();
    assert_eq!(
        listeners.len(),
        n,
        "expected one listening sshd per worker among the bench's children"
    );
    let mut bench = Bench {
        cluster: &cluster,
        n,
        scratch,
        listeners,
        timeout,
        run_counter: 0,
    };

    let mut walls: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut failures: BTreeMap<&str, String> = BTreeMap::new();
    for round in 0..rounds {
        // Rotate the order each round so no tool always runs first or last.
        let mut order = TOOLS.to_vec();
        order.rotate_left(round % TOOLS.len());
        for tool in order {
            if failures.contains_key(tool) {
                continue;
            }
            match bench.measure(tool) {
                Ok(wall) => {
                    println!(
                        "round {} {tool:<22} {:>8.3}s",
                        round + 1,
                        wall.as_secs_f64()
                    );
                    walls.entry(tool).or_default().push(wall.as_secs_f64());
                }
                Err(why) => {
                    println!("round {} {tool:<22} FAILED: {why}", round + 1);
                    failures.insert(tool, why);
                }
            }
        }
    }

    let report = report(&mut walls, &failures, n, rounds, cores);
    println!("\n{report}");
    let out_dir = target_dir().join("bench");
    fs::create_dir_all(&out_dir).expect("create target/bench");
    let path: PathBuf = out_dir.join("agent.md");
    fs::write(&path, &report).expect("write agent.md");
    println!("wrote {}", path.display());
}

fn report(
    walls: &mut BTreeMap<&str, Vec<f64>>,
    failures: &BTreeMap<&str, String>,
    n: usize,
    rounds: usize,
    cores: usize,
) -> String {
    let mut md = String::new();
    let reference = walls
        .get_mut("smssh -w")
        .filter(|w| !w.is_empty())
        .map(|w| median(w));
    writeln!(
        md,
        "## `smssh agent`: pdsh and Ansible through the agent vs smssh's fan-out \
         (`true` on {n} hosts, wall seconds, median of {rounds})\n"
    )
    .expect("write to a String");
    writeln!(
        md,
        "Loopback OpenSSH 9.2 sshd workers, {cores} cores, fan-out {n} for every tool; every \
         OpenSSH client uses {KEX} and {CIPHER}, what smssh negotiates (checked in sshd's log). \
         Through the agent, ssh has no identity file and the agent signs each login; with a key \
         file, no agent is used.\n"
    )
    .expect("write to a String");
    writeln!(
        md,
        "| tool | command | median s | / smssh -w | runs (s) |\n|---|---|---:|---:|---|"
    )
    .expect("write to a String");
    for tool in TOOLS {
        if let Some(why) = failures.get(tool) {
            writeln!(
                md,
                "| {tool} | `{}` | FAILED | - | {} |",
                command_label(tool),
                why.lines().next().unwrap_or_default()
            )
            .expect("write to a String");
            continue;
        }
        let Some(samples) = walls.get_mut(tool).filter(|w| !w.is_empty()) else {
            continue;
        };
        let runs = samples
            .iter()
            .map(|s| format!("{s:.3}"))
            .collect::<Vec<_>>()
            .join(", ");
        let med = median(samples);
        let ratio = match reference {
            Some(r) if r > 0.0 => format!("{:.2}x", med / r),
            _ => "-".into(),
        };
        writeln!(
            md,
            "| {tool} | `{}` | {med:.3} | {ratio} | {runs} |",
            command_label(tool)
        )
        .expect("write to a String");
    }
    md
}
