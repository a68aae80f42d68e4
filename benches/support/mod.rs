//! What the benchmarks share: their settings, where they write, the peers' venv, and the CPU
//! accounting of the worker sshd processes read from /proc. Included by each bench with
//! `#[path = "support/mod.rs"]`; not a bench target itself.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::common::processes;

pub const REPO: &str = env!("CARGO_MANIFEST_DIR");
pub const DEPS_HINT: &str = "run ./scripts/bench-deps.sh to install the benchmark's peers";

pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    values[values.len() / 2]
}

pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(REPO).join("target"))
}

pub fn bench_venv() -> PathBuf {
    Path::new(REPO).join(".venv-bench")
}

pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Raises the soft limit on open files to the hard one: 128 workers and 128 client
/// connections per tool need more than the usual 1024. sshd workers inherit it.
pub fn raise_nofile() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
        let (soft, _) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((soft, hard));
        if soft < 4096 {
            eprintln!(
                "bench: warning: only {soft} open files allowed (ulimit -n); 128 workers may fail"
            );
        }
    }
}

pub fn clock_ticks() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map(|t| t as f64)
        .unwrap_or(100.0)
}

/// The workers' listening sshd processes: the bench's own sshd children.
pub fn listeners() -> Vec<u32> {
    let me = std::process::id();
    processes()
        .into_iter()
        .filter(|(_, ppid, comm)| *ppid == me && comm == "sshd")
        .map(|(pid, _, _)| pid)
        .collect()
}

/// CPU seconds of `pids` and of their reaped children (utime+stime+cutime+cstime).
pub fn tree_cpu(pids: &[u32], ticks: f64) -> f64 {
    let mut total = 0u64;
    for pid in pids {
        let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // After the command: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14).
        for i in 11..=14 {
            total += fields
                .get(i)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    total as f64 / ticks
}

/// Waits until no listener has a live session child (every connection of the previous run is
/// closed and reaped, so its CPU time is in the listener's cutime/cstime) and no ssh client
/// of ours (e.g. an Ansible ControlPersist master) is left.
pub fn wait_quiet(listeners: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let busy = processes()
            .iter()
            .filter(|(_, ppid, _)| listeners.contains(ppid))
            .count();
        if busy == 0 {
            return;
        }
        if Instant::now() > deadline {
            eprintln!("bench: warning: {busy} sshd sessions still open after 30 s");
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The last lines of a long text, for failure reports.
pub fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(12);
    lines[start..].join("\n")
}

/// The worker counts to measure (`SMSSH_BENCH_HOSTS`, default 32 and 128), ascending, each
/// within what the harness can start (1 to 250 loopback addresses).
pub fn host_counts() -> Vec<usize> {
    let mut sizes: Vec<usize> = std::env::var("SMSSH_BENCH_HOSTS")
        .unwrap_or_else(|_| "32,128".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&n| (1..=250).contains(&n))
        .collect();
    sizes.sort();
    sizes.dedup();
    assert!(
        !sizes.is_empty(),
        "SMSSH_BENCH_HOSTS names no host count in 1..=250"
    );
    sizes
}

/// The environment every Ansible run of the benchmarks gets: its own home, config and temp
/// dirs under `dir`, host keys checked, pipelining and a short-lived shared connection
/// (ControlPersist 2 s, sockets in `control`), and no colour, retry files or warnings.
pub fn ansible_env(cmd: &mut std::process::Command, dir: &Path, control: &Path) {
    cmd.env("ANSIBLE_HOME", dir)
        .env("ANSIBLE_CONFIG", dir.join("none.cfg"))
        .env("ANSIBLE_LOCAL_TEMP", dir.join("local"))
        .env("ANSIBLE_REMOTE_TEMP", dir.join("remote"))
        .env("ANSIBLE_HOST_KEY_CHECKING", "True")
        .env("ANSIBLE_PYTHON_INTERPRETER", "/usr/bin/python3")
        .env("ANSIBLE_PIPELINING", "True")
        .env(
            "ANSIBLE_SSH_ARGS",
            "-o ControlMaster=auto -o ControlPersist=2s",
        )
        .env("ANSIBLE_SSH_CONTROL_PATH_DIR", control)
        .env("ANSIBLE_DEPRECATION_WARNINGS", "False")
        .env("ANSIBLE_NOCOLOR", "True")
        .env("ANSIBLE_RETRY_FILES_ENABLED", "False");
}
