//! What the benchmarks share: their settings, where they write, the peers' venv, and the CPU
//! accounting of the worker sshd processes read from /proc. Included by each bench with
//! `#[path = "support/mod.rs"]` and `#[allow(dead_code)]` (each uses a subset of it); not a
//! bench target itself.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::common::{processes, Cluster};

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

/// Exits the bench named `bench` with one line naming whatever is missing of the commands on
/// PATH (`tools`), the files (`files`) and the Python modules of the peers' venv (`modules`),
/// and how to install them.
pub fn require_peers(bench: &str, tools: &[&str], files: &[PathBuf], modules: &[&str]) {
    let mut missing: Vec<String> = tools
        .iter()
        .filter(|tool| find_on_path(tool).is_none())
        .map(|tool| (*tool).to_owned())
        .collect();
    missing.extend(
        files
            .iter()
            .filter(|file| !file.is_file())
            .map(|file| file.display().to_string()),
    );
    let python = bench_venv().join("bin/python");
    for module in modules {
        let present = std::process::Command::new(&python)
            .args(["-c", &format!("import {module}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|status| status.success());
        if !present {
            missing.push(format!("{module} in {}", bench_venv().display()));
        }
    }
    if !missing.is_empty() {
        eprintln!(
            "{bench} bench: missing {}; {DEPS_HINT} (then: SMSSH_TEST_MOTO=$PWD/.venv/bin/moto_server \
             cargo bench --bench {bench})",
            missing.join(", ")
        );
        std::process::exit(2);
    }
}

/// Raises the soft limit on open files to the hard one: 128 workers and 128 client
/// connections per tool need more than the usual 1024 (1,000 need several thousand). sshd
/// workers inherit it.
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

/// The CPU time of the workers' sshd trees: every process the listeners start, however it
/// ends. Counted by a cpuacct cgroup (cgroup v1) or a cgroup v2 group that the listeners are
/// moved into, which their children inherit. Without one, falls back to [`tree_cpu`] of the
/// listeners, which counts only what each listener reaped itself: a process reaped by anyone
/// else (a session whose parent exited first is adopted by init or a subreaper) is missing
/// from it, and on this machine that fallback read 9.7 s where perf sampled 13.6 s of sshd
/// during one 1,000-host run.
pub struct WorkerCpu {
    group: Option<PathBuf>,
    listeners: Vec<u32>,
    ticks: f64,
}

impl WorkerCpu {
    pub fn new(listeners: &[u32], ticks: f64) -> WorkerCpu {
        const PREFIX: &str = "smssh-bench-workers-";
        let name = format!("{PREFIX}{}", std::process::id());
        let parents = [
            "/sys/fs/cgroup/cpuacct",
            "/sys/fs/cgroup/unified",
            "/sys/fs/cgroup",
        ];
        // An earlier bench's group outlives it when its workers were still exiting: remove
        // the ones now empty (rmdir refuses the others).
        for parent in parents {
            for entry in fs::read_dir(parent).into_iter().flatten().flatten() {
                if entry.file_name().to_string_lossy().starts_with(PREFIX) {
                    let _ = fs::remove_dir(entry.path());
                }
            }
        }
        let candidates = [
            Path::new(parents[0]).join(&name),
            Path::new(parents[1]).join(&name),
            Path::new(parents[2]).join(&name),
        ];
        let group = candidates.into_iter().find(|dir| {
            let usable = fs::create_dir(dir).is_ok()
                && (dir.join("cpuacct.usage").exists() || dir.join("cpu.stat").exists())
                && listeners
                    .iter()
                    .all(|pid| fs::write(dir.join("cgroup.procs"), pid.to_string()).is_ok());
            if !usable {
                let _ = fs::remove_dir(dir);
            }
            usable
        });
        if group.is_none() {
            eprintln!(
                "bench: warning: no writable cpuacct or cgroup v2 group; the workers' CPU is \
                 what their listeners reaped, which can undercount"
            );
        }
        WorkerCpu {
            group,
            listeners: listeners.to_vec(),
            ticks,
        }
    }

    /// How the figure is counted, for the report.
    pub fn method(&self) -> &'static str {
        match &self.group {
            Some(_) => "a cgroup holding every worker process",
            None => "the listeners' own and reaped children's time (/proc/PID/stat)",
        }
    }

    /// CPU seconds so far.
    pub fn seconds(&self) -> f64 {
        let Some(group) = &self.group else {
            return tree_cpu(&self.listeners, self.ticks);
        };
        if let Ok(ns) = fs::read_to_string(group.join("cpuacct.usage")) {
            return ns.trim().parse::<f64>().unwrap_or(0.0) / 1e9;
        }
        let stat = fs::read_to_string(group.join("cpu.stat")).unwrap_or_default();
        stat.lines()
            .find_map(|line| line.strip_prefix("usage_usec "))
            .and_then(|usec| usec.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
            / 1e6
    }

    /// The listeners' CPU by the fallback method, whatever the group: to compare the two.
    pub fn reaped_seconds(&self) -> f64 {
        tree_cpu(&self.listeners, self.ticks)
    }
}

impl Drop for WorkerCpu {
    fn drop(&mut self) {
        // The group can only go once its processes have; the cluster usually stops after
        // this, so a group left behind is empty and removed by the next attempt's rmdir.
        if let Some(group) = &self.group {
            let _ = fs::remove_dir(group);
        }
    }
}

/// One untimed `smssh -w ... -- true` on the first `n` workers, before the first measured
/// run. A freshly started sshd's first login costs more CPU than its later ones (about 4 ms
/// per host on this machine, seen by [`WorkerCpu`]'s cgroup and missed by what the
/// listeners reaped), which would otherwise weigh on whichever tool runs first.
pub fn warm_up(cluster: &Cluster, listeners: &[u32], n: usize) {
    let out = crate::common::run(cluster.command("smssh").args([
        "-q",
        "-j",
        &n.to_string(),
        "-w",
        &hostlist(n),
        "--",
        "true",
    ]));
    assert!(
        out.status.success(),
        "the warm-up login to every worker failed:\n{}",
        tail(&crate::common::describe(&out))
    );
    wait_quiet(listeners);
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

/// The worker counts to measure (`SMSSH_BENCH_HOSTS`, else `default`, e.g. "32,128"),
/// ascending, each within 1..=`max` (at most what the harness can start,
/// `common::MAX_WORKERS`).
pub fn host_counts(default: &str, max: usize) -> Vec<usize> {
    let max = max.min(crate::common::MAX_WORKERS);
    let mut sizes: Vec<usize> = std::env::var("SMSSH_BENCH_HOSTS")
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&n| (1..=max).contains(&n))
        .collect();
    sizes.sort();
    sizes.dedup();
    assert!(
        !sizes.is_empty(),
        "SMSSH_BENCH_HOSTS names no host count in 1..={max}"
    );
    sizes
}

/// The pdsh hostlist of the first `n` workers of a cluster (`common::worker_addr`'s layout:
/// 250 to a /24, from .2): `127.0.0.[2-33]`, or one term per /24 beyond 250.
pub fn hostlist(n: usize) -> String {
    (0..n.div_ceil(250))
        .map(|block| {
            let count = (n - block * 250).min(250);
            format!("127.0.{block}.[2-{}]", count + 1)
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The OpenSSH options of a "tuned" peer row: the key exchange and cipher smssh negotiates
/// with these workers, so that a peer's row compares like for like (OpenSSH 9.2's default
/// sntrup761x25519 exchange costs the client several times curve25519's CPU).
pub const TUNED_OPTS: [&str; 4] = [
    "-o",
    "KexAlgorithms=curve25519-sha256",
    "-o",
    "Ciphers=aes128-gcm@openssh.com",
];

/// bssh, installed by scripts/bench-deps.sh under the repository (crates.io has no Debian
/// package of it).
pub fn bssh_path() -> PathBuf {
    Path::new(REPO).join(".bench-tools/bin/bssh")
}

/// User + system CPU seconds of this process's reaped children. The difference across one
/// run is the tool's own CPU time plus that of the children it waited for, provided the bench
/// reaps no other child meanwhile (its sshd workers and moto live on).
pub fn children_cpu() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    let Ok(usage) = getrusage(UsageWho::RUSAGE_CHILDREN) else {
        return 0.0;
    };
    let seconds = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    seconds(usage.user_time()) + seconds(usage.system_time())
}

/// The three load averages from /proc/loadavg, as printed there ("0.52 0.61 0.70").
pub fn loadavg() -> String {
    fs::read_to_string("/proc/loadavg")
        .map(|text| {
            text.split_whitespace()
                .take(3)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_else(|_| "?".into())
}

/// What `/usr/bin/time -f "%M %U %S"` wrote for one run: max RSS in KiB and user + system
/// CPU seconds of the tool and every descendant it reaped.
pub fn read_time_file(path: &Path) -> (Option<u64>, Option<f64>) {
    let text = fs::read_to_string(path).unwrap_or_default();
    let last = text.lines().last().unwrap_or_default().to_owned();
    let fields: Vec<&str> = last.split_whitespace().collect();
    let rss = fields.first().and_then(|s| s.parse().ok());
    let cpu = match (
        fields.get(1).and_then(|u| u.parse::<f64>().ok()),
        fields.get(2).and_then(|s| s.parse::<f64>().ok()),
    ) {
        (Some(u), Some(s)) => Some(u + s),
        _ => None,
    };
    (rss, cpu)
}

/// The SHA-256 of `data`, in hex.
pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks that `name` in each of the first `n` workers' SFTP homes has the SHA-256 `digest`;
/// Err says how many do not and what the first one holds.
pub fn verify_copies(cluster: &Cluster, n: usize, name: &str, digest: &str) -> Result<(), String> {
    let mut bad = Vec::new();
    for worker in cluster.workers.iter().take(n) {
        let path = worker.sftp_home().join(name);
        match fs::read(&path) {
            Ok(data) => {
                let got = sha256_hex(&data);
                if got != digest {
                    bad.push(format!(
                        "{}: {} bytes with SHA-256 {got}",
                        worker.addr(),
                        data.len()
                    ));
                }
            }
            Err(e) => bad.push(format!("{}: {e}", worker.addr())),
        }
    }
    match bad.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} of {n} hosts lack {name} with SHA-256 {digest} (first: {first})",
            bad.len()
        )),
    }
}

/// Removes every plain file from every worker's SFTP home, untimed, so that each copy starts
/// from an empty target and a stale file can never pass the checksum.
pub fn clean_homes(cluster: &Cluster) {
    for worker in &cluster.workers {
        if let Ok(entries) = fs::read_dir(worker.sftp_home()) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// A pseudo-random payload of `size` bytes (xorshift, fixed seed): incompressible, and the
/// same in every run.
pub fn write_payload(path: &Path, size: usize) {
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

/// A remote wrapper for pdcp (`PDSH_REMOTE_PDCP_PATH`) that enters the SFTP home of the
/// worker it runs on (read from `SSH_CONNECTION`) before exec'ing the real pdcp, so that
/// pdcp's relative target lands where the SFTP-based tools write theirs. Written once into
/// `dir`, with a link per worker from its address to its home.
pub fn pdcp_wrapper(cluster: &Cluster, dir: &Path) -> PathBuf {
    let map = dir.join("homes");
    let wrapper = dir.join("pdcp-in-sftp-home");
    fs::create_dir_all(&map).expect("mkdir homes");
    for worker in &cluster.workers {
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

/// Puts the cluster key back as AWSCURRENT (a new version, untimed), and back on every
/// worker as an unmanaged line where a rotation retired it, so the next rotation on any N
/// hosts starts as the first one does (adopting a cluster whose key was installed by hand),
/// whatever smaller N rotated before (and left the others behind).
pub fn reset_secret(cluster: &Cluster) {
    cluster.store_key_secret(
        crate::common::SECRET_ID,
        &cluster.private_key,
        &cluster.public_key,
    );
    for worker in &cluster.workers {
        if !worker.authorized_keys().contains(&cluster.public_key) {
            worker.authorize(&cluster.public_key);
        }
    }
}

/// After `smssh rotate` on the first `n` workers: every worker's block holds exactly the
/// AWSCURRENT version, and the cluster key's line, which the run retired, is gone.
pub fn verify_rotation(cluster: &Cluster, n: usize) -> Result<(), String> {
    use crate::common::SECRET_ID;
    let current = cluster
        .moto
        .version_with_stage(SECRET_ID, "AWSCURRENT")
        .ok_or_else(|| format!("{SECRET_ID} has no AWSCURRENT version"))?;
    let mut bad = Vec::new();
    for worker in cluster.workers.iter().take(n) {
        let text = worker.authorized_keys();
        match smssh::rotation::block::parse_block(&text, SECRET_ID) {
            Ok(_) if text.contains(&cluster.public_key) => {
                bad.push(format!(
                    "{}: the cluster key was not retired",
                    worker.addr()
                ));
            }
            Ok(keys) => {
                let versions: Vec<&str> = keys.iter().map(|k| k.version_id.as_str()).collect();
                if versions != [current.as_str()] {
                    bad.push(format!("{}: block holds {versions:?}", worker.addr()));
                }
            }
            Err(e) => bad.push(format!("{}: {e}", worker.addr())),
        }
    }
    match bad.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} of {n} hosts do not hold exactly AWSCURRENT {current} (first: {first})",
            bad.len()
        )),
    }
}

/// Moto: the bench's own Python child (the harness starts it as `python -c ...`). Look it up
/// before any Python peer runs, so that Ansible cannot be mistaken for it.
pub fn moto_pid() -> Option<u32> {
    let me = std::process::id();
    processes()
        .into_iter()
        .find(|(_, ppid, comm)| *ppid == me && comm.starts_with("python"))
        .map(|(pid, _, _)| pid)
}
