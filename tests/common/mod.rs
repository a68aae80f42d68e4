//! Integration-test harness: real moto and real OpenSSH sshd processes.
//!
//! Every test binary under `tests/` declares `mod common;` and builds what it
//! needs from here. Nothing is faked: a missing dependency panics with the
//! name of what to install (`./scripts/test-deps.sh` installs all of it), so
//! a machine without it fails instead of quietly skipping tests.
//!
//! Everything a test starts belongs to a value whose `Drop` kills it, and
//! every temporary file lives in a `tempfile::TempDir` under the system temp
//! dir. As a second line of defence, a small reaper process (see [`reaper`])
//! kills the long-running servers if the test binary itself is killed.

// Each test binary compiles this module on its own and uses only a subset of
// it, so unused items are expected here and nowhere else.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use aws_sdk_secretsmanager::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_secretsmanager::primitives::Blob;
use tempfile::TempDir;

/// The secret that holds a cluster's key pair, as the binaries see it through
/// `SMSSH_SECRET_ID`.
pub const SECRET_ID: &str = "/dev/ssh";
/// How long [`run`] lets a command take before killing it.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long moto may take to answer HTTP after being started.
const MOTO_DEADLINE: Duration = Duration::from_secs(60);
/// How long sshd may take to accept connections after being started.
const SSHD_DEADLINE: Duration = Duration::from_secs(10);
const SSHD: &str = "/usr/sbin/sshd";
const SFTP_SERVER: &str = "/usr/lib/openssh/sftp-server";
const INSTALL_HINT: &str = "run ./scripts/test-deps.sh to install the test dependencies";

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// Lowest and highest port the harness hands out. The range stays below
/// Linux's ephemeral range (32768 and up) so that the source ports of
/// outgoing connections never collide with a server the harness starts.
const PORT_MIN: u16 = 20_000;
const PORT_MAX: u16 = 32_000;
static NEXT_PORT: AtomicU16 = AtomicU16::new(0);

/// Returns a port that is free on every one of `addrs`.
///
/// Ports come from a per-process counter, so parallel tests in one binary
/// never get the same port; the counter starts at an offset derived from the
/// process id so that two test binaries running at once rarely overlap, and
/// each candidate is checked by binding it on every address.
pub fn free_port(addrs: &[&str]) -> u16 {
    let span = PORT_MAX - PORT_MIN;
    let _ = NEXT_PORT.compare_exchange(
        0,
        ((std::process::id() % 400) * 30) as u16,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..span {
        let offset = NEXT_PORT.fetch_add(1, Ordering::SeqCst) % span;
        let port = PORT_MIN + offset;
        let all_free = addrs.iter().all(|addr| {
            let ip: Ipv4Addr = addr.parse().expect("free_port takes IPv4 addresses");
            TcpListener::bind(SocketAddrV4::new(ip, port)).is_ok()
        });
        if all_free {
            return port;
        }
    }
    panic!("no free port between {PORT_MIN} and {PORT_MAX} on {addrs:?}");
}

// ---------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------

/// The reaper is one `sh` process per test binary whose stdin is a pipe from
/// this process. Each long-running server's PID is written to it when the
/// server starts, and `-PID` when the harness has stopped it. When this
/// process exits for any reason, even SIGKILL from a CI timeout, the pipe
/// closes, `read` sees end of file, and the reaper kills whatever is still
/// registered, so no sshd or moto outlives the test binary.
fn reaper() -> &'static Mutex<Option<ChildStdin>> {
    static REAPER: OnceLock<Mutex<Option<ChildStdin>>> = OnceLock::new();
    REAPER.get_or_init(|| {
        let script = r#"
            pids=""
            while read -r line; do
                case "$line" in
                    -*) gone="${line#-}"; kept=""
                        for p in $pids; do [ "$p" = "$gone" ] || kept="$kept $p"; done
                        pids="$kept" ;;
                    *) pids="$pids $line" ;;
                esac
            done
            for p in $pids; do pkill -KILL -P "$p"; kill -KILL "$p"; done 2>/dev/null
        "#;
        // A reaper that cannot start only loses the safety net, so the
        // tests go on without it rather than fail.
        let stdin = Command::new("sh")
            .args(["-c", script])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()
            .and_then(|mut child| child.stdin.take());
        Mutex::new(stdin)
    })
}

fn reaper_send(line: &str) {
    let mut guard = reaper()
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(stdin) = guard.as_mut() {
        let _ = writeln!(stdin, "{line}");
    }
}

/// (pid, ppid, command name) of every process, read from `/proc`. The command name may
/// contain spaces and parentheses, so the parent PID is read after the last ')'.
pub fn processes() -> Vec<(u32, u32, String)> {
    let mut all = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return all;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let ppid = stat[close + 1..]
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        all.push((pid, ppid, comm));
    }
    all
}

/// The PIDs of every process below `pid`, read from `/proc`. The tree has to
/// be read before `pid` dies, because its children are then re-parented.
fn descendants(pid: u32) -> Vec<u32> {
    let parent_of: Vec<(u32, u32)> = processes()
        .into_iter()
        .map(|(child, ppid, _)| (child, ppid))
        .collect();
    let mut found = Vec::new();
    let mut frontier = vec![pid];
    while let Some(parent) = frontier.pop() {
        for &(child, ppid) in &parent_of {
            if ppid == parent && !found.contains(&child) {
                found.push(child);
                frontier.push(child);
            }
        }
    }
    found
}

/// Sends `signal` (a name such as `STOP`) to `pids` with the `kill` command.
fn signal(signal: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    // A process of the tree may exit between being listed and being
    // signalled, which makes `kill` fail harmlessly, so only a `kill` that
    // cannot run at all is an error.
    if let Err(e) = Command::new("kill")
        .arg(format!("-{signal}"))
        .args(pids.iter().map(u32::to_string))
        .stderr(Stdio::null())
        .status()
    {
        panic!("cannot run `kill` (package procps; {INSTALL_HINT}): {e}");
    }
}

/// Kills `child` and everything it started, then reaps it.
fn kill_tree(child: &mut Child) {
    let pid = child.id();
    if child.try_wait().ok().flatten().is_none() {
        let mut pids = descendants(pid);
        pids.push(pid);
        signal("KILL", &pids);
    }
    let _ = child.wait();
}

/// Like [`kill_tree`] for a server registered with the reaper, which is told
/// to forget the PID once it has been reaped and may be reused.
fn kill_server(child: &mut Child) {
    kill_tree(child);
    reaper_send(&format!("-{}", child.id()));
}

fn read_log(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// Finds an executable named `name` on PATH.
fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Runs a helper tool such as `ssh-keygen` and panics with its output if it
/// cannot be started or fails.
fn run_tool(cmd: &mut Command, what: &str) -> Output {
    let output = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!(
            "cannot run {what} ({:?}): {e}; {INSTALL_HINT}",
            cmd.get_program()
        )
    });
    assert!(
        output.status.success(),
        "{what} failed\n{}",
        describe(&output)
    );
    output
}

// ---------------------------------------------------------------------------
// Running commands under test
// ---------------------------------------------------------------------------

/// Runs `cmd` to completion with [`RUN_TIMEOUT`], panicking with whatever it
/// printed if it does not finish in time.
pub fn run(cmd: &mut Command) -> Output {
    run_with_timeout(cmd, RUN_TIMEOUT).unwrap_or_else(|partial| {
        panic!(
            "{:?} did not finish within {RUN_TIMEOUT:?} and was killed\n{}",
            cmd.get_program(),
            describe(&partial)
        )
    })
}

/// Runs `cmd` with captured stdout and stderr. Returns `Ok` with the output
/// if it exits within `timeout`; otherwise kills it (and its children) and
/// returns `Err` with what it had printed, which is what hang tests expect.
/// The command's stdin is left as configured (the harness's commands set it
/// to null).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Result<Output, Output> {
    spawn(cmd).wait_timeout(timeout)
}

/// Runs `cmd` like [`run`] with `input` fed to its stdin.
pub fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> Output {
    spawn_with_stdin(cmd, input)
        .wait_timeout(RUN_TIMEOUT)
        .unwrap_or_else(|partial| {
            panic!(
                "{:?} did not finish within {RUN_TIMEOUT:?} and was killed\n{}",
                cmd.get_program(),
                describe(&partial)
            )
        })
}

/// Starts `cmd` in the background with captured stdout and stderr, for
/// tests that act while it runs (stop or pause a worker mid-transfer).
pub fn spawn(cmd: &mut Command) -> Running {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {:?}: {e}", cmd.get_program()));
    // Both pipes are drained on their own threads, so a child that fills one
    // pipe while the harness waits on the other cannot deadlock.
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = Drained::start(child.stderr.take().expect("stderr is piped"));
    Running {
        child: Some(child),
        stdout,
        stderr,
    }
}

/// Like [`spawn`], with `input` written to the command's stdin, which is
/// then closed.
pub fn spawn_with_stdin(cmd: &mut Command, input: &[u8]) -> Running {
    let mut running = spawn(cmd.stdin(Stdio::piped()));
    let mut stdin = running
        .child
        .as_mut()
        .and_then(|child| child.stdin.take())
        .expect("stdin is piped");
    let input = input.to_vec();
    // A writer thread keeps a command that reads slowly, or not at all, from
    // blocking the test; a command that exits early just breaks the pipe.
    thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    running
}

/// A command started by [`spawn`]; dropping it kills the command and its
/// children.
pub struct Running {
    child: Option<Child>,
    stdout: mpsc::Receiver<Vec<u8>>,
    stderr: Drained,
}

impl Running {
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("the command is running").id()
    }

    /// Whether the command has exited.
    pub fn has_exited(&mut self) -> bool {
        let child = self.child.as_mut().expect("the command is running");
        child.try_wait().expect("cannot poll the command").is_some()
    }

    /// Waits for the command. Returns `Ok` with its output if it exits
    /// within `timeout`; otherwise kills it and its children and returns
    /// `Err` with what it had printed.
    pub fn wait_timeout(mut self, timeout: Duration) -> Result<Output, Output> {
        let deadline = Instant::now() + timeout;
        let mut child = self.child.take().expect("the command is running");
        let (status, timed_out) = loop {
            match child.try_wait().expect("cannot wait for the command") {
                Some(status) => break (status, false),
                None if Instant::now() >= deadline => {
                    kill_tree(&mut child);
                    let status = child.wait().expect("cannot wait for the killed command");
                    break (status, true);
                }
                None => thread::sleep(Duration::from_millis(10)),
            }
        };
        // A grandchild that inherited the pipes may keep them open after
        // the command exits, so the reads get a bounded grace period rather
        // than an unbounded join.
        let grace = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(2);
        let output = Output {
            status,
            stdout: self.stdout.recv_timeout(grace).unwrap_or_default(),
            stderr: self.stderr.finish(Duration::from_secs(2)),
        };
        if timed_out {
            Err(output)
        } else {
            Ok(output)
        }
    }

    /// Waits up to `timeout` for `needle` on the command's stderr; whether it came.
    pub fn stderr_shows(&mut self, needle: &str, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while !self.stderr.contains(needle) {
            if Instant::now() >= deadline || self.has_exited() {
                return self.stderr.contains(needle);
            }
            thread::sleep(Duration::from_millis(20));
        }
        true
    }

    /// Kills the command and its children and returns what it printed.
    pub fn kill(self) -> Output {
        match self.wait_timeout(Duration::ZERO) {
            Ok(output) | Err(output) => output,
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_tree(child);
        }
    }
}

/// A pipe read on its own thread whose bytes so far can be looked at while the command runs,
/// so a test waits for a line instead of sleeping a guessed time.
struct Drained {
    seen: Arc<Mutex<Vec<u8>>>,
    ended: mpsc::Receiver<()>,
}

impl Drained {
    fn start(mut pipe: impl Read + Send + 'static) -> Drained {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, ended) = mpsc::channel();
        let writer = Arc::clone(&seen);
        thread::spawn(move || {
            let mut chunk = [0u8; 8192];
            while let Ok(n @ 1..) = pipe.read(&mut chunk) {
                writer
                    .lock()
                    .expect("drain lock")
                    .extend_from_slice(&chunk[..n]);
            }
            let _ = tx.send(());
        });
        Drained { seen, ended }
    }

    fn contains(&self, needle: &str) -> bool {
        let seen = self.seen.lock().expect("drain lock");
        String::from_utf8_lossy(&seen).contains(needle)
    }

    /// Everything read, after waiting up to `grace` for the end of the pipe.
    fn finish(&self, grace: Duration) -> Vec<u8> {
        let _ = self.ended.recv_timeout(grace);
        std::mem::take(&mut *self.seen.lock().expect("drain lock"))
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipe.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Two SIGINTs 200 ms apart, as two Ctrl-Cs on a terminal: the first makes a fan-out say
/// where it stands, the second, within a second of it, stops the run.
pub fn interrupt_twice(pid: u32) {
    for _ in 0..2 {
        let status = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success(), "kill -INT {pid} failed");
        thread::sleep(Duration::from_millis(200));
    }
}

/// A readable dump of an output, for assertion messages.
pub fn describe(output: &Output) -> String {
    format!(
        "status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}\n--------------",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Panics with the full output unless the command succeeded.
#[track_caller]
pub fn assert_success(output: &Output) {
    assert!(
        output.status.success(),
        "command failed\n{}",
        describe(output)
    );
}

/// Panics with the full output unless the command failed with a non-zero exit
/// code (being killed by a signal does not count as failing cleanly).
#[track_caller]
pub fn assert_failure(output: &Output) {
    assert!(
        !output.status.success() && output.status.code().is_some(),
        "command should have exited with an error\n{}",
        describe(output)
    );
}

/// Panics with the full output unless the command exited with `code`.
#[track_caller]
pub fn assert_exit_code(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "unexpected exit status\n{}",
        describe(output)
    );
}

/// Panics with the full output unless stderr contains `needle`.
#[track_caller]
pub fn assert_stderr_contains(output: &Output, needle: &str) {
    assert!(
        stderr(output).contains(needle),
        "stderr lacks {needle:?}\n{}",
        describe(output)
    );
}

/// Panics with the full output unless stdout equals `expected`.
#[track_caller]
pub fn assert_stdout_eq(output: &Output, expected: &str) {
    assert_eq!(
        stdout(output),
        expected,
        "unexpected stdout\n{}",
        describe(output)
    );
}

/// The names in a directory at one moment, to tell afterwards which files a command left
/// there whatever it named them.
pub struct Listing {
    dir: PathBuf,
    names: std::collections::BTreeSet<String>,
}

impl Listing {
    pub fn of(dir: &Path) -> Listing {
        Listing {
            dir: dir.to_owned(),
            names: names_in(dir),
        }
    }

    /// The names in the directory now that were not in it when this listing was taken, other
    /// than `expected`, sorted.
    pub fn new_names_except(&self, expected: &[&str]) -> Vec<String> {
        names_in(&self.dir)
            .into_iter()
            .filter(|name| !self.names.contains(name) && !expected.contains(&name.as_str()))
            .collect()
    }
}

fn names_in(dir: &Path) -> std::collections::BTreeSet<String> {
    fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|entry| {
            let entry = entry.unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
            entry.file_name().to_string_lossy().into_owned()
        })
        .collect()
}

/// Whether a process was ended by a signal rather than exiting.
pub fn killed_by_signal(status: &ExitStatus) -> bool {
    status.code().is_none()
}

// ---------------------------------------------------------------------------
// Moto
// ---------------------------------------------------------------------------

/// A moto server on 127.0.0.1 with a Secrets Manager client pointed at it.
pub struct Moto {
    child: Child,
    port: u16,
    dir: TempDir,
    client: aws_sdk_secretsmanager::Client,
    runtime: tokio::runtime::Runtime,
}

impl Moto {
    /// Starts moto and waits until it answers HTTP.
    pub fn start() -> Moto {
        let mut moto = Moto::spawn();
        moto.wait_ready();
        moto
    }

    /// Starts moto without waiting for it, so a cluster can start its
    /// workers during the seconds moto's Python takes to come up.
    fn spawn() -> Moto {
        let bin = moto_binary();
        let python = moto_python(&bin);
        let port = free_port(&["127.0.0.1"]);
        let dir = tempfile::Builder::new()
            .prefix("smssh-moto-")
            .tempdir()
            .expect("cannot create a temp dir for moto");
        let log = fs::File::create(dir.path().join("moto.log")).expect("cannot create moto.log");
        let child = Command::new(&python)
            .args([
                "-c",
                MOTO_LAUNCHER,
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot share moto.log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} for {} ({e}); {INSTALL_HINT}",
                    python.display(),
                    bin.display()
                )
            });
        reaper_send(&child.id().to_string());

        let config = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .credentials_provider(Credentials::new(
                "testing",
                "testing",
                None,
                None,
                "smssh-test",
            ))
            .build();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("cannot build a tokio runtime for the Secrets Manager client");
        Moto {
            child,
            port,
            dir,
            client: aws_sdk_secretsmanager::Client::from_conf(config),
            runtime,
        }
    }

    /// Polls with a TCP connect and a plain HTTP request until moto answers,
    /// and panics with moto's log if it exits or misses [`MOTO_DEADLINE`].
    fn wait_ready(&mut self) {
        let started = Instant::now();
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        loop {
            if http_answers(addr) {
                return;
            }
            if let Some(status) = self.child.try_wait().expect("cannot wait for moto_server") {
                panic!(
                    "moto_server exited during startup with {status}; its log:\n{}",
                    self.log()
                );
            }
            assert!(
                started.elapsed() < MOTO_DEADLINE,
                "moto_server did not answer on {addr} within {MOTO_DEADLINE:?}; its log:\n{}",
                self.log()
            );
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// `http://127.0.0.1:PORT`, the value for `AWS_ENDPOINT_URL`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What moto printed so far.
    pub fn log(&self) -> String {
        read_log(&self.dir.path().join("moto.log"))
    }

    /// The SDK client the harness uses, for calls the helpers do not cover;
    /// run its futures with [`Moto::block_on`].
    pub fn client(&self) -> &aws_sdk_secretsmanager::Client {
        &self.client
    }

    /// Runs a future on the harness's own runtime.
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// Creates secret `name` holding `value` as SecretString, or adds a new
    /// version if it exists. Returns the new version id.
    pub fn put_secret_string(&self, name: &str, value: &str) -> String {
        let created = self.block_on(
            self.client
                .create_secret()
                .name(name)
                .secret_string(value)
                .send(),
        );
        match created {
            Ok(out) => out.version_id.expect("CreateSecret returned no version id"),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_exists_exception()) =>
            {
                self.put_secret_value(name, value)
            }
            Err(e) => panic!("CreateSecret {name} failed: {}", error_text(&e)),
        }
    }

    /// Creates secret `name` holding `value` as SecretBinary, or adds a new
    /// version if it exists. Returns the new version id.
    pub fn put_secret_binary(&self, name: &str, value: &[u8]) -> String {
        let created = self.block_on(
            self.client
                .create_secret()
                .name(name)
                .secret_binary(Blob::new(value))
                .send(),
        );
        match created {
            Ok(out) => out.version_id.expect("CreateSecret returned no version id"),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_resource_exists_exception()) =>
            {
                let out = self
                    .block_on(
                        self.client
                            .put_secret_value()
                            .secret_id(name)
                            .secret_binary(Blob::new(value))
                            .send(),
                    )
                    .unwrap_or_else(|e| panic!("PutSecretValue {name} failed: {}", error_text(&e)));
                out.version_id
                    .expect("PutSecretValue returned no version id")
            }
            Err(e) => panic!("CreateSecret {name} failed: {}", error_text(&e)),
        }
    }

    /// Adds a new version of an existing secret; it becomes AWSCURRENT and
    /// the previous one AWSPREVIOUS. Returns the new version id.
    pub fn put_secret_value(&self, name: &str, value: &str) -> String {
        let out = self
            .block_on(
                self.client
                    .put_secret_value()
                    .secret_id(name)
                    .secret_string(value)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("PutSecretValue {name} failed: {}", error_text(&e)));
        out.version_id
            .expect("PutSecretValue returned no version id")
    }

    /// Moves staging label `stage` to `move_to_version`, taking it from
    /// `remove_from_version` (required by AWS when the label is attached).
    pub fn update_stage(
        &self,
        name: &str,
        stage: &str,
        move_to_version: &str,
        remove_from_version: Option<&str>,
    ) {
        self.block_on(
            self.client
                .update_secret_version_stage()
                .secret_id(name)
                .version_stage(stage)
                .move_to_version_id(move_to_version)
                .set_remove_from_version_id(remove_from_version.map(str::to_owned))
                .send(),
        )
        .unwrap_or_else(|e| {
            panic!(
                "UpdateSecretVersionStage {name} {stage} failed: {}",
                error_text(&e)
            )
        });
    }

    /// Version id → staging labels of secret `name`, as DescribeSecret lists them.
    pub fn stages(&self, name: &str) -> std::collections::BTreeMap<String, Vec<String>> {
        let out = self
            .block_on(self.client.describe_secret().secret_id(name).send())
            .unwrap_or_else(|e| panic!("DescribeSecret {name} failed: {}", error_text(&e)));
        out.version_ids_to_stages()
            .map(|map| {
                map.iter()
                    .map(|(id, labels)| (id.clone(), labels.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The version of secret `name` that holds staging label `stage`.
    pub fn version_with_stage(&self, name: &str, stage: &str) -> Option<String> {
        self.stages(name)
            .into_iter()
            .find(|(_, labels)| labels.iter().any(|l| l == stage))
            .map(|(id, _)| id)
    }

    /// Deletes a secret at once, without a recovery window.
    pub fn delete_secret(&self, name: &str) {
        self.block_on(
            self.client
                .delete_secret()
                .secret_id(name)
                .force_delete_without_recovery(true)
                .send(),
        )
        .unwrap_or_else(|e| panic!("DeleteSecret {name} failed: {}", error_text(&e)));
    }

    /// The SecretString that GetSecretValue returns without a stage or
    /// version, which AWS defines as the AWSCURRENT version.
    pub fn get_secret_string(&self, name: &str) -> String {
        let out = self
            .block_on(self.client.get_secret_value().secret_id(name).send())
            .unwrap_or_else(|e| panic!("GetSecretValue {name} failed: {}", error_text(&e)));
        out.secret_string
            .unwrap_or_else(|| panic!("secret {name} has no SecretString"))
    }

    /// The SecretString of the version labelled `stage`.
    pub fn get_secret_string_at_stage(&self, name: &str, stage: &str) -> String {
        let out = self
            .block_on(
                self.client
                    .get_secret_value()
                    .secret_id(name)
                    .version_stage(stage)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("GetSecretValue {name} {stage} failed: {}", error_text(&e)));
        out.secret_string
            .unwrap_or_else(|| panic!("secret {name} {stage} has no SecretString"))
    }

    /// The SecretBinary of the AWSCURRENT version.
    pub fn get_secret_binary(&self, name: &str) -> Vec<u8> {
        let out = self
            .block_on(self.client.get_secret_value().secret_id(name).send())
            .unwrap_or_else(|e| panic!("GetSecretValue {name} failed: {}", error_text(&e)));
        out.secret_binary
            .unwrap_or_else(|| panic!("secret {name} has no SecretBinary"))
            .into_inner()
    }

    /// Runs `script` with `args` under the Python that runs moto, which has
    /// boto3 (moto depends on it), for set-up calls to services the Rust SDK
    /// here does not cover, such as IAM. The script finds moto in the
    /// `MOTO_ENDPOINT` environment variable. Returns its stdout; panics with
    /// its output if it fails.
    /// Creates EC2 instances in this moto (see [`CREATE_EC2_INSTANCES`] for the spec) and
    /// returns `{private ip: instance id}`.
    pub fn create_ec2_instances(
        &self,
        spec: &serde_json::Value,
    ) -> std::collections::HashMap<String, String> {
        let printed = self.run_python(CREATE_EC2_INSTANCES, &[&spec.to_string()]);
        serde_json::from_str(printed.trim())
            .unwrap_or_else(|e| panic!("cannot read the created instances ({e}) from {printed:?}"))
    }

    /// Creates IAM users (see [`CREATE_IAM_USERS`]) and returns `{name: (key id, secret)}`.
    pub fn create_iam_users(
        &self,
        users: &serde_json::Value,
    ) -> std::collections::HashMap<String, (String, String)> {
        let printed = self.run_python(CREATE_IAM_USERS, &[&users.to_string()]);
        serde_json::from_str(printed.trim()).unwrap_or_else(|e| {
            panic!("cannot read the created users' keys ({e}) from {printed:?}")
        })
    }

    pub fn run_python(&self, script: &str, args: &[&str]) -> String {
        let python = moto_python(&moto_binary());
        let output = run_tool(
            Command::new(&python)
                .arg("-c")
                .arg(script)
                .args(args)
                .env("MOTO_ENDPOINT", self.endpoint()),
            "a Python set-up script for moto",
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Turns on moto's IAM enforcement, as starting it with
    /// `INITIAL_NO_AUTH_ACTION_COUNT=0` would, through moto's own
    /// `POST /moto-api/reset-auth`. From then on every request must be
    /// signed with the access key of an IAM user created in this moto, and
    /// is refused with HTTP 403 unless that user's policies allow the action
    /// (moto checks Secrets Manager actions against resource `*`). The
    /// harness's client and the `testing` key of [`Cluster::command`] are
    /// refused too, so this comes after all set-up. Panics with moto's log if
    /// moto does not confirm.
    pub fn enforce_iam(&self) {
        // Moto reads the count from the raw body, which Flask leaves alone
        // only for a content type it does not parse as a form.
        let request = "POST /moto-api/reset-auth HTTP/1.0\r\nHost: 127.0.0.1\r\n\
                       Content-Type: text/plain\r\nContent-Length: 1\r\n\
                       Connection: close\r\n\r\n0";
        let (sent, response) = self.http(request);
        let confirmed = response.starts_with("HTTP/1.") && response.contains(" 200 ");
        assert!(
            sent.is_ok() && confirmed && response.contains(r#""status": "ok""#),
            "moto did not turn on IAM enforcement ({sent:?}); its answer:\n{response}\nits log:\n{}",
            self.log()
        );
    }

    /// How many requests for `operation` have reached this moto since it started, counted by
    /// moto (see [`MOTO_LAUNCHER`]) and not by the program that sent them, retries included.
    /// `operation` is a JSON service's X-Amz-Target, such as
    /// `secretsmanager.GetSecretValue`, or a query service's signing name and Action, such as
    /// `ec2.DescribeInstances`. The harness's own calls count too.
    pub fn request_count(&self, operation: &str) -> u64 {
        let request =
            "GET /smssh-test/requests HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        let (sent, response) = self.http(request);
        let counts: Option<std::collections::HashMap<String, u64>> = response
            .split_once("\r\n\r\n")
            .filter(|(head, _)| head.starts_with("HTTP/1.") && head.contains(" 200 "))
            .and_then(|(_, body)| serde_json::from_str(body).ok());
        let Some(counts) = counts else {
            panic!(
                "moto did not give its request counts ({sent:?}); its answer:\n{response}\nits log:\n{}",
                self.log()
            );
        };
        counts.get(operation).copied().unwrap_or(0)
    }

    /// Sends one raw HTTP/1.0 request to moto and returns how reading the answer went and
    /// what was read of it.
    fn http(&self, request: &str) -> (std::io::Result<usize>, String) {
        let addr = SocketAddr::from(([127, 0, 0, 1], self.port));
        let mut response = String::new();
        let sent =
            TcpStream::connect_timeout(&addr, Duration::from_secs(5)).and_then(|mut stream| {
                stream.set_read_timeout(Some(Duration::from_secs(10)))?;
                stream.write_all(request.as_bytes())?;
                stream.read_to_string(&mut response)
            });
        (sent, response)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        kill_server(&mut self.child);
    }
}

/// Where moto_server comes from: `SMSSH_TEST_MOTO`, then PATH, then the
/// `.venv` that scripts/test-deps.sh creates.
fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("SMSSH_TEST_MOTO") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "SMSSH_TEST_MOTO={} does not exist; {INSTALL_HINT}",
            path.display()
        );
        return path;
    }
    if let Some(path) = find_on_path("moto_server") {
        return path;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/moto_server");
    assert!(
        venv.is_file(),
        "moto_server not found (not in SMSSH_TEST_MOTO, PATH or {}); {INSTALL_HINT} \
         (it pip-installs moto[server] into .venv)",
        venv.display()
    );
    venv
}

/// Starts moto's server like the `moto_server` script does, after fixing one
/// divergence from AWS: moto's UpdateSecretVersionStage moves the AWSCURRENT
/// label but not the version that GetSecretValue without a stage returns
/// (nor the one PutSecretValue demotes to AWSPREVIOUS), so a test that
/// rolls AWSCURRENT back would see the old value. The fix fails loudly, with
/// the error in moto's log, if a moto release renames what it patches. The
/// launcher also runs Run Command scripts as the SSM agent would, and counts
/// the requests moto receives for [`Moto::request_count`].
const MOTO_LAUNCHER: &str = r#"
import inspect, sys
from moto.secretsmanager.models import SecretsManagerBackend
from moto.server import main

_update_stage = SecretsManagerBackend.update_secret_version_stage
_signature = inspect.signature(_update_stage)

def update_secret_version_stage(self, *args, **kwargs):
    result = _update_stage(self, *args, **kwargs)
    call = _signature.bind(self, *args, **kwargs).arguments
    if call["version_stage"] == "AWSCURRENT" and call["move_to_version_id"]:
        self.secrets[call["secret_id"]].set_default_version_id(call["move_to_version_id"])
    return result

SecretsManagerBackend.update_secret_version_stage = update_secret_version_stage

# moto records Run Command invocations but runs nothing. Instances tagged SmsshTestHome
# stand for SSM-managed machines: their command runs here, as the SSM agent runs it (as
# root, through /bin/sh), with that tag as HOME, and the invocation reports the real exit
# status and output. Untagged instances keep moto's empty "Success".
import os, subprocess
from moto.ec2.models import ec2_backends
from moto.ssm.models import Command, SimpleSystemManagerBackend

# moto turns an empty Targets list into a filter matching every instance, so a command sent
# to a list of instance ids would reach all of them; AWS adds no instance for no target.
_from_targets = Command._get_instance_ids_from_targets
Command._get_instance_ids_from_targets = lambda self: _from_targets(self) if self.targets else []

_send_command = SimpleSystemManagerBackend.send_command

def send_command(self, *args, **kwargs):
    command = _send_command(self, *args, **kwargs)
    if command.document_name != "AWS-RunShellScript":
        return command
    ec2 = ec2_backends[self.account_id][self.region_name]
    script = "\n".join(command.parameters.get("commands", []))
    for invocation in command.invocations:
        tags = {t["key"]: t["value"] for t in ec2.describe_tags(filters={"resource-id": [invocation["InstanceId"]]})}
        home = tags.get("SmsshTestHome")
        if not home:
            continue
        run = subprocess.run(
            ["/bin/sh", "-c", script],
            env={"HOME": home, "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            capture_output=True, text=True, timeout=60,
        )
        status = "Success" if run.returncode == 0 else "Failed"
        invocation.update(
            Status=status, StatusDetails=status, ResponseCode=run.returncode,
            StandardOutputContent=run.stdout[-24000:], StandardErrorContent=run.stderr[-8000:],
        )
    return command

SimpleSystemManagerBackend.send_command = send_command

# Tests count the requests that reach moto here instead of believing what the binaries log
# about themselves. A request counts under its operation: the X-Amz-Target header of JSON
# services ("secretsmanager.GetSecretValue"), or for query services such as EC2 and IAM the
# service of the signature's credential scope and the Action field ("ec2.DescribeInstances").
# GET /smssh-test/requests answers every count so far as one JSON object, and is not counted.
import collections, io, json, re, threading, urllib.parse
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

_requests = collections.Counter()
_requests_lock = threading.Lock()
_dispatch = DomainDispatcherApplication.__call__

def operation(environ):
    target = environ.get("HTTP_X_AMZ_TARGET")
    if target:
        return target
    fields = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    length = environ.get("CONTENT_LENGTH")
    if length and environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        # The form is read here and put back, so moto still finds the whole body.
        body = environ["wsgi.input"].read(int(length))
        environ["wsgi.input"] = io.BytesIO(body)
        fields.update(urllib.parse.parse_qs(body.decode("utf-8", "replace")))
    if "Action" not in fields:
        return None
    scope = re.search(r"Credential=[^/]*/[^/]*/[^/]*/([^/]*)/", environ.get("HTTP_AUTHORIZATION", ""))
    action = fields["Action"][0]
    return f"{scope.group(1)}.{action}" if scope else action

def count_requests(self, environ, start_response):
    if environ.get("PATH_INFO") == "/smssh-test/requests":
        with _requests_lock:
            counts = json.dumps(_requests).encode()
        start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(counts)))])
        return [counts]
    name = operation(environ)
    if name:
        with _requests_lock:
            _requests[name] += 1
    return _dispatch(self, environ, start_response)

DomainDispatcherApplication.__call__ = count_requests
sys.exit(main())
"#;

/// The Python that runs `moto_server`: the interpreter on its `#!` line when
/// that is a Python (as pip writes it), else the `python3` beside it (as in a
/// pyenv shims directory, where `moto_server` is a bash shim).
fn moto_python(moto_server: &Path) -> PathBuf {
    let script = fs::read(moto_server)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}; {INSTALL_HINT}", moto_server.display()));
    let first_line =
        String::from_utf8_lossy(script.split(|&b| b == b'\n').next().unwrap_or_default());
    let mut words = first_line
        .strip_prefix("#!")
        .unwrap_or_default()
        .split_whitespace();
    let interpreter = match (words.next(), words.next()) {
        (Some(env), Some(name)) if env.ends_with("/env") && name.starts_with("python") => {
            find_on_path(name)
        }
        (Some(path), _)
            if Path::new(path)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("python")) =>
        {
            Some(PathBuf::from(path))
        }
        _ => moto_server
            .parent()
            .map(|dir| dir.join("python3"))
            .filter(|p| p.is_file()),
    };
    interpreter.unwrap_or_else(|| {
        panic!(
            "cannot tell which Python runs {}; {INSTALL_HINT}",
            moto_server.display()
        )
    })
}

/// Whether an HTTP server answers a plain request on `addr`.
fn http_answers(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = "GET / HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 8];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

/// The SDK's error with its whole source chain, which `Display` leaves out.
fn error_text(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// ---------------------------------------------------------------------------
// Worker
// ---------------------------------------------------------------------------

/// One real OpenSSH sshd listening on `addr:port`, with its own directory
/// holding its config, host key, authorized_keys, PID file and log.
pub struct Worker {
    addr: String,
    port: u16,
    dir: TempDir,
    child: Option<Child>,
}

impl Worker {
    /// Writes the config, generates a host key and starts sshd.
    pub fn new(addr: &str, port: u16) -> Worker {
        let dir = tempfile::Builder::new()
            .prefix(&format!("smssh-worker-{addr}-{port}-"))
            .tempdir()
            .expect("cannot create a temp dir for a worker");
        let mut worker = Worker {
            addr: addr.to_owned(),
            port,
            dir,
            child: None,
        };
        fs::create_dir_all(worker.sftp_home().join(".ssh"))
            .expect("cannot create the worker's home and its .ssh");
        fs::write(worker.authorized_keys_path(), "").expect("cannot create authorized_keys");
        worker.generate_host_key();
        fs::write(worker.config_path(), worker.config()).expect("cannot write sshd_config");
        worker.start();
        worker
    }

    fn config(&self) -> String {
        let dir = self.dir.path();
        let mut config = format!(
            "ListenAddress {addr}:{port}\n\
             HostKey {hostkey}\n\
             PidFile {pidfile}\n\
             AuthorizedKeysFile {authorized}\n\
             StrictModes no\n\
             PermitRootLogin yes\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             Subsystem sftp {SFTP_SERVER} -d {sftp_home}\n\
             MaxStartups 1000:30:1000\n\
             MaxSessions 100\n\
             PrintMotd no\n\
             PrintLastLog no\n\
             LogLevel ERROR\n",
            addr = self.addr,
            port = self.port,
            hostkey = self.host_key_path().display(),
            pidfile = dir.join("sshd.pid").display(),
            authorized = self.authorized_keys_path().display(),
            sftp_home = self.sftp_home().display(),
        );
        // With SHLVL already 1, bash run by sshd does not source root's
        // ~/.bashrc, which on these machines runs a slow `pyenv init`. No
        // AcceptEnv line is written, so the client's environment never
        // reaches the session. HOME gives each worker its own home although
        // they all log in as the same account, so that the rotation's script
        // edits this worker's `~/.ssh/authorized_keys`, the file sshd reads.
        config.push_str(&format!(
            "SetEnv SHLVL=1 HOME={}\n",
            self.sftp_home().display()
        ));
        // OpenSSH 9.8 and later penalise addresses with many failed
        // logins, which would turn the failures that tests provoke into
        // refused connections; older versions reject the keyword.
        if sshd_knows("PerSourcePenalties no") {
            config.push_str("PerSourcePenalties no\n");
        }
        config
    }

    /// Starts sshd with the existing config and waits until it accepts
    /// connections. Does nothing if it is already running.
    pub fn start(&mut self) {
        if self.child.is_some() {
            return;
        }
        assert!(
            Path::new(SSHD).is_file(),
            "{SSHD} not found (package openssh-server); {INSTALL_HINT}"
        );
        ensure_privsep_dir();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("cannot open the sshd log");
        let mut child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(self.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot share the sshd log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SSHD}: {e}; {INSTALL_HINT}"));
        reaper_send(&child.id().to_string());

        let started = Instant::now();
        let addr = self.socket_addr();
        loop {
            if let Some(status) = child.try_wait().expect("cannot wait for sshd") {
                reaper_send(&format!("-{}", child.id()));
                panic!(
                    "sshd for {addr} exited during startup with {status}; its log:\n{}",
                    self.log()
                );
            }
            if ssh_banner(addr) {
                break;
            }
            if started.elapsed() > SSHD_DEADLINE {
                kill_server(&mut child);
                panic!("sshd for {addr} did not accept connections within {SSHD_DEADLINE:?}; its log:\n{}", self.log());
            }
            thread::sleep(Duration::from_millis(10));
        }
        self.child = Some(child);
    }

    /// Kills sshd and every session it serves, as if the machine died.
    /// Idempotent.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            kill_server(&mut child);
        }
    }

    /// Whether sshd is running (it may be paused).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Freezes sshd and all its sessions with SIGSTOP: new connections are
    /// accepted by the kernel but never answered, and open ones hang.
    pub fn pause(&self) {
        let pid = self.pid();
        let mut pids = vec![pid];
        pids.extend(descendants(pid));
        signal("STOP", &pids);
    }

    /// Undoes [`Worker::pause`].
    pub fn resume(&self) {
        let pid = self.pid();
        let mut pids = vec![pid];
        pids.extend(descendants(pid));
        signal("CONT", &pids);
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("the worker is stopped").id()
    }

    /// Replaces the host key and restarts sshd, so clients see a changed
    /// host key.
    pub fn regenerate_host_key(&mut self) {
        self.stop();
        self.generate_host_key();
        self.start();
    }

    fn generate_host_key(&self) {
        let key = self.host_key_path();
        // ssh-keygen asks before overwriting, so the old pair goes first.
        let _ = fs::remove_file(&key);
        let _ = fs::remove_file(key.with_extension("pub"));
        run_tool(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                .arg(&key),
            "ssh-keygen (host key)",
        );
    }

    /// This worker's home: SFTP sessions start here and sessions see it as HOME, so relative
    /// remote paths (`host:file`) and `~/.ssh` are per worker although workers share this
    /// machine's file system and account.
    pub fn sftp_home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The known_hosts line for this worker: `[ADDR]:PORT ssh-ed25519 AAAA...`.
    pub fn host_key_line(&self) -> String {
        let public = fs::read_to_string(self.host_key_path().with_extension("pub"))
            .expect("cannot read the worker's public host key");
        let mut fields = public.split_whitespace();
        let kind = fields.next().expect("empty public host key");
        let blob = fields.next().expect("public host key without key data");
        format!("[{}]:{} {kind} {blob}", self.addr, self.port)
    }

    /// Appends a public key line to authorized_keys.
    pub fn authorize(&self, pubkey_line: &str) {
        let mut file = fs::OpenOptions::new()
            .append(true)
            .open(self.authorized_keys_path())
            .expect("cannot open authorized_keys");
        writeln!(file, "{}", pubkey_line.trim_end()).expect("cannot append to authorized_keys");
    }

    /// Replaces authorized_keys, e.g. to revoke a key.
    pub fn set_authorized_keys(&self, content: &str) {
        fs::write(self.authorized_keys_path(), content).expect("cannot write authorized_keys");
    }

    pub fn authorized_keys(&self) -> String {
        fs::read_to_string(self.authorized_keys_path()).expect("cannot read authorized_keys")
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `ADDR:PORT`.
    pub fn socket_addr(&self) -> SocketAddr {
        let ip: Ipv4Addr = self.addr.parse().expect("worker addresses are IPv4");
        SocketAddr::from((ip, self.port))
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("sshd_config")
    }

    pub fn host_key_path(&self) -> PathBuf {
        self.dir.path().join("ssh_host_ed25519_key")
    }

    /// `~/.ssh/authorized_keys` in this worker's home (see `sftp_home`).
    pub fn authorized_keys_path(&self) -> PathBuf {
        self.sftp_home().join(".ssh/authorized_keys")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("sshd.log")
    }

    /// What sshd logged so far (errors only, per `LogLevel ERROR`).
    pub fn log(&self) -> String {
        read_log(&self.log_path())
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // SIGKILL ends stopped processes too, so this works whether or not
        // a test resumed a paused worker.
        self.stop();
    }
}

/// Whether an SSH server sends its banner on `addr`. sshd accepts from the
/// moment it listens, so the banner also proves it is serving.
fn ssh_banner(addr: SocketAddr) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(500)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).is_ok() && &head == b"SSH-"
}

/// sshd refuses to start without its privilege-separation directory.
fn ensure_privsep_dir() {
    let dir = Path::new("/run/sshd");
    if !dir.is_dir() {
        fs::create_dir_all(dir).unwrap_or_else(|e| {
            panic!("cannot create /run/sshd ({e}); run the tests as root or {INSTALL_HINT}")
        });
    }
}

/// Whether this sshd accepts a config line, checked once per test binary
/// with `sshd -t` against a minimal throwaway config.
fn sshd_knows(line: &str) -> bool {
    static CACHE: Mutex<Vec<(String, bool)>> = Mutex::new(Vec::new());
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((_, known)) = cache.iter().find(|(l, _)| l == line) {
        return *known;
    }
    let dir = tempfile::tempdir().expect("cannot create a temp dir to probe sshd");
    let key = dir.path().join("key");
    run_tool(
        Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&key),
        "ssh-keygen (probe key)",
    );
    let config = dir.path().join("sshd_config");
    fs::write(&config, format!("HostKey {}\n{line}\n", key.display()))
        .expect("cannot write the probe config");
    ensure_privsep_dir();
    let known = Command::new(SSHD)
        .arg("-t")
        .arg("-f")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap_or_else(|e| {
            panic!("cannot run {SSHD} (package openssh-server): {e}; {INSTALL_HINT}")
        })
        .success();
    cache.push((line.to_owned(), known));
    known
}

// ---------------------------------------------------------------------------
// Cluster
// ---------------------------------------------------------------------------

/// A moto server plus `n` workers at 127.0.0.2 .. 127.0.0.(n+1) (past 250, in the
/// next /24s: [`worker_addr`]), all on one port, sharing one client key pair
/// that is authorized everywhere and stored in moto as [`SECRET_ID`].
pub struct Cluster {
    pub moto: Moto,
    pub workers: Vec<Worker>,
    /// The fake HOME: `.ssh/config` and `.ssh/known_hosts` live here.
    pub home: TempDir,
    /// The port every worker listens on.
    pub port: u16,
    /// The client key pair's private key file (OpenSSH format).
    pub key_path: PathBuf,
    /// The client key pair's private key text.
    pub private_key: String,
    /// The client key pair's public key line (`TYPE BASE64 smssh-test`).
    pub public_key: String,
    /// Scratch space: generated keys and any files a test wants to copy.
    pub scratch: TempDir,
    key_counter: AtomicUsize,
}

impl Cluster {
    /// A cluster whose client key is ed25519.
    pub fn new(n_workers: usize) -> Cluster {
        Cluster::with_key_type(n_workers, "ed25519")
    }

    /// A cluster whose client key is of `kind` ("rsa", "ecdsa" or
    /// "ed25519", optionally with bits as in "ecdsa-384").
    pub fn with_key_type(n_workers: usize, kind: &str) -> Cluster {
        assert!(
            (1..=MAX_WORKERS).contains(&n_workers),
            "a cluster has 1 to {MAX_WORKERS} workers, not {n_workers}"
        );
        // Moto's Python takes seconds to start, so it comes up while the
        // workers are being set up.
        let moto = Moto::spawn();
        let addrs: Vec<String> = (0..n_workers).map(worker_addr).collect();
        let addr_refs: Vec<&str> = addrs.iter().map(String::as_str).collect();
        let port = free_port(&addr_refs);
        let scratch = tempfile::Builder::new()
            .prefix("smssh-cluster-")
            .tempdir()
            .expect("cannot create the cluster's temp dir");
        let home = tempfile::Builder::new()
            .prefix("smssh-home-")
            .tempdir()
            .expect("cannot create the cluster's HOME");

        let mut cluster = Cluster {
            moto,
            workers: Vec::new(),
            home,
            port,
            key_path: PathBuf::new(),
            private_key: String::new(),
            public_key: String::new(),
            scratch,
            key_counter: AtomicUsize::new(0),
        };
        let (private_key, public_key, key_path) = cluster.generate_key_file(kind, "openssh", None);
        cluster.private_key = private_key;
        cluster.public_key = public_key;
        cluster.key_path = key_path;

        cluster.workers = addrs.iter().map(|addr| Worker::new(addr, port)).collect();
        for worker in &cluster.workers {
            worker.authorize(&cluster.public_key);
        }

        let ssh_dir = cluster.home.path().join(".ssh");
        fs::create_dir_all(&ssh_dir).expect("cannot create HOME/.ssh");
        fs::write(
            cluster.ssh_config_path(),
            format!("Host {}\n    Port {port}\n", worker_patterns(n_workers)),
        )
        .expect("cannot write HOME/.ssh/config");
        cluster.refresh_known_hosts();

        cluster.moto.wait_ready();
        let json = key_secret_json(&cluster.private_key, &cluster.public_key);
        cluster.moto.put_secret_string(SECRET_ID, &json);
        cluster
    }

    /// The workers' addresses, in order.
    pub fn addrs(&self) -> Vec<String> {
        self.workers.iter().map(|w| w.addr().to_owned()).collect()
    }

    pub fn ssh_config_path(&self) -> PathBuf {
        self.home.path().join(".ssh/config")
    }

    pub fn known_hosts_path(&self) -> PathBuf {
        self.home.path().join(".ssh/known_hosts")
    }

    /// Rewrites known_hosts from the workers' current host keys (after a
    /// test has regenerated one and wants it trusted again).
    pub fn refresh_known_hosts(&self) {
        let lines: String = self
            .workers
            .iter()
            .map(|w| w.host_key_line() + "\n")
            .collect();
        fs::write(self.known_hosts_path(), lines).expect("cannot write HOME/.ssh/known_hosts");
    }

    /// Stores a key pair as a secret in the JSON layout the binaries read.
    /// Returns the version id.
    pub fn store_key_secret(&self, name: &str, private_key: &str, public_key: &str) -> String {
        self.moto
            .put_secret_string(name, &key_secret_json(private_key, public_key))
    }

    /// Generates a key pair with ssh-keygen and returns (private key text,
    /// public key line). `kind` is "rsa", "ecdsa" or "ed25519", optionally
    /// with bits ("rsa-4096", "ecdsa-384"); `format` is "openssh", "pem"
    /// (`BEGIN RSA PRIVATE KEY` / `BEGIN EC PRIVATE KEY`) or "pkcs8"
    /// (`BEGIN PRIVATE KEY`, or `BEGIN ENCRYPTED PRIVATE KEY` with a
    /// passphrase). ssh-keygen wants passphrases of at least five characters
    /// and cannot write ed25519 as pem or pkcs8; both panic here.
    pub fn generate_key(
        &self,
        kind: &str,
        format: &str,
        passphrase: Option<&str>,
    ) -> (String, String) {
        let (private, public, _) = self.generate_key_file(kind, format, passphrase);
        (private, public)
    }

    /// Like [`Cluster::generate_key`], and also returns the private key's
    /// path (mode 0600, usable with `ssh -i`).
    pub fn generate_key_file(
        &self,
        kind: &str,
        format: &str,
        passphrase: Option<&str>,
    ) -> (String, String, PathBuf) {
        let (kind_name, bits) = match kind.split_once('-') {
            Some((name, bits)) => (name, Some(bits)),
            None => (kind, None),
        };
        assert!(
            matches!(kind_name, "rsa" | "ecdsa" | "ed25519"),
            "unknown key kind {kind:?}: use rsa, ecdsa or ed25519"
        );
        let mode = match format {
            "openssh" => "RFC4716",
            "pem" => "PEM",
            "pkcs8" => "PKCS8",
            other => panic!("unknown key format {other:?}: use openssh, pem or pkcs8"),
        };
        assert!(
            !(kind_name == "ed25519" && format != "openssh"),
            "ssh-keygen cannot write ed25519 keys as {format}; use openssh"
        );
        let n = self.key_counter.fetch_add(1, Ordering::SeqCst);
        let path = self.scratch.path().join(format!("id_{kind}_{format}_{n}"));
        let mut cmd = Command::new("ssh-keygen");
        cmd.args([
            "-q",
            "-t",
            kind_name,
            "-N",
            passphrase.unwrap_or(""),
            "-C",
            "smssh-test",
        ]);
        cmd.args(["-m", mode]);
        if let Some(bits) = bits {
            cmd.args(["-b", bits]);
        }
        run_tool(
            cmd.arg("-f").arg(&path),
            &format!("ssh-keygen ({kind}, {format})"),
        );
        let private = fs::read_to_string(&path).expect("cannot read the generated private key");
        let public = fs::read_to_string(format!("{}.pub", path.display()))
            .expect("cannot read the generated public key");
        (private, public.trim_end().to_owned(), path)
    }

    /// A command for one of this package's binaries ("smscp" or "smssh")
    /// with a cleared environment holding only HOME, PATH, the AWS settings
    /// pointing at moto and `SMSSH_SECRET_ID`; stdin is null.
    pub fn command(&self, bin: &str) -> Command {
        self.binary_environment(Command::new(binary_path(bin)))
    }

    /// Runs binary `bin` with `args` as [`run`] runs [`Cluster::command`], and returns with
    /// its output the kernel's I/O counters for it from `/proc/PID/io` (`rchar`, `wchar`,
    /// `read_bytes`, ...), so that a test can measure what it read instead of believing what
    /// it says. The counters of a process that has exited are gone, but Linux adds them to
    /// its parent's when the parent reaps it; so the binary runs under a `sh` that waits for
    /// it and then reports its own counters. `sh` itself adds a few kilobytes (the dynamic
    /// loader reading its libraries). `rchar` counts every byte `read` returned, from
    /// sockets and pipes as well as files. A binary killed by signal N exits 128+N here.
    pub fn run_counting_io(
        &self,
        bin: &str,
        args: &[&str],
    ) -> (Output, std::collections::BTreeMap<String, u64>) {
        let report_dir = tempfile::Builder::new()
            .prefix("smssh-io-")
            .tempdir()
            .expect("cannot create a temp dir for the I/O report");
        let report = report_dir.path().join("io");
        let script =
            r#"report=$1; shift; "$@"; status=$?; cat "/proc/$$/io" >"$report"; exit $status"#;
        let mut cmd = self.binary_environment(Command::new("sh"));
        cmd.args(["-c", script, "sh"])
            .arg(&report)
            .arg(binary_path(bin))
            .args(args);
        let output = run(&mut cmd);
        let text = fs::read_to_string(&report).unwrap_or_else(|e| {
            panic!(
                "sh wrote no I/O counters for {bin} ({e})\n{}",
                describe(&output)
            )
        });
        let counters = text
            .lines()
            .filter_map(|line| {
                let (name, value) = line.split_once(':')?;
                Some((name.to_owned(), value.trim().parse().ok()?))
            })
            .collect();
        (output, counters)
    }

    /// Gives `cmd` the environment of [`Cluster::command`] and a null stdin.
    fn binary_environment(&self, cmd: Command) -> Command {
        harness_environment(cmd, self.home.path(), &self.moto)
    }

    /// The real OpenSSH `ssh` or `scp`, configured like the binaries: the
    /// cluster's config, known_hosts and key, never prompting. OpenSSH finds
    /// `~` through passwd rather than HOME, hence the explicit paths.
    pub fn openssh(&self, bin: &str) -> Command {
        self.openssh_with_key(bin, &self.key_path)
    }

    /// [`Cluster::openssh`] offering `key` instead of the cluster's key.
    pub fn openssh_with_key(&self, bin: &str, key: &Path) -> Command {
        assert!(
            matches!(bin, "ssh" | "scp"),
            "openssh() runs ssh or scp, not {bin:?}"
        );
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("HOME", self.home.path())
            .arg("-F")
            .arg(self.ssh_config_path())
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.known_hosts_path().display()
            ))
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "StrictHostKeyChecking=yes"])
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "IdentitiesOnly=yes"])
            .arg("-i")
            .arg(key)
            .stdin(Stdio::null());
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd
    }

    /// The private key that `version` of the secret holds, written to a 0600 scratch file
    /// for OpenSSH's `ssh -i`.
    pub fn version_key_file(&self, version: &str) -> PathBuf {
        let out = self
            .moto
            .block_on(
                self.moto
                    .client()
                    .get_secret_value()
                    .secret_id(SECRET_ID)
                    .version_id(version)
                    .send(),
            )
            .unwrap_or_else(|e| panic!("GetSecretValue {version}: {e:?}"));
        let document: serde_json::Value =
            serde_json::from_str(out.secret_string().expect("a SecretString")).expect("JSON");
        let mut key = document["PrivateKey"]
            .as_str()
            .unwrap_or_else(|| panic!("version {version} holds no PrivateKey"))
            .to_owned();
        if !key.ends_with('\n') {
            key.push('\n');
        }
        let path = self.scratch_file(&format!("key-of-{version}"), key.as_bytes());
        fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .expect("chmod 600");
        path
    }

    /// Logs in to `addr` (as `user`, or the configuration's user) with OpenSSH offering `key`
    /// and nothing else, and runs `true`: an independent client's verdict on whether the
    /// worker accepts that key.
    pub fn openssh_login(&self, user: Option<&str>, addr: &str, key: &Path) -> Output {
        let mut cmd = self.openssh_with_key("ssh", key);
        cmd.args(["-o", "IdentityAgent=none"])
            .args(["-o", "PasswordAuthentication=no"])
            .args(["-o", "KbdInteractiveAuthentication=no"]);
        if let Some(user) = user {
            cmd.args(["-l", user]);
        }
        cmd.args([addr, "true"]);
        run(&mut cmd)
    }

    /// Writes a file into the scratch dir and returns its path.
    pub fn scratch_file(&self, name: &str, content: &[u8]) -> PathBuf {
        let path = self.scratch.path().join(name);
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent).expect("cannot create a scratch dir");
        }
        fs::write(&path, content).expect("cannot write a scratch file");
        path
    }
}

/// Gives `cmd` only the environment the binaries need: `home` as HOME, PATH, `moto`'s endpoint
/// and dummy credentials, and the secret's name; stdin is null.
pub fn harness_environment(mut cmd: Command, home: &Path, moto: &Moto) -> Command {
    cmd.env_clear()
        .env("HOME", home)
        .env("AWS_ENDPOINT_URL", moto.endpoint())
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env("SMSSH_SECRET_ID", SECRET_ID)
        .stdin(Stdio::null());
    if let Some(path) = std::env::var_os("PATH") {
        cmd.env("PATH", path);
    }
    cmd
}

/// The path cargo built one of this package's binaries ("smscp" or "smssh") at.
pub fn binary_path(bin: &str) -> &'static str {
    match bin {
        "smscp" => env!("CARGO_BIN_EXE_smscp"),
        "smssh" => env!("CARGO_BIN_EXE_smssh"),
        other => panic!("unknown binary {other:?}: use smscp or smssh"),
    }
}

/// Every entry under `root`: its mode and its content (or a link's target).
pub fn tree(root: &Path) -> std::collections::BTreeMap<String, (u32, Vec<u8>)> {
    use std::os::unix::fs::PermissionsExt;
    let mut entries = std::collections::BTreeMap::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in fs::read_dir(&dir).expect("read_dir") {
            let path = entry.expect("dir entry").path();
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let name = path
                .strip_prefix(root)
                .expect("under root")
                .display()
                .to_string();
            let content = if meta.file_type().is_symlink() {
                fs::read_link(&path)
                    .expect("readlink")
                    .into_os_string()
                    .into_encoded_bytes()
            } else if meta.is_dir() {
                pending.push(path.clone());
                Vec::new()
            } else {
                fs::read(&path).expect("read")
            };
            entries.insert(name, (meta.permissions().mode(), content));
        }
    }
    entries
}

/// The version ids in a worker's managed block for the harness's secret, in file order.
pub fn block_versions(worker: &Worker) -> Vec<String> {
    smssh::rotation::block::parse_block(&worker.authorized_keys(), SECRET_ID)
        .expect("the managed block parses")
        .into_iter()
        .map(|key| key.version_id)
        .collect()
}

/// The authorized_keys lines outside every smssh block, in file order.
pub fn lines_outside_blocks(text: &str) -> Vec<String> {
    let mut inside = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.starts_with("# BEGIN smssh-managed ") {
            inside = true;
        } else if line.starts_with("# END smssh-managed ") {
            inside = false;
        } else if !inside {
            lines.push(line.to_owned());
        }
    }
    lines
}

/// The secret layout the binaries read: `{"PrivateKey": ..., "PublicKey": ...}`.
pub fn key_secret_json(private_key: &str, public_key: &str) -> String {
    serde_json::json!({ "PrivateKey": private_key, "PublicKey": public_key }).to_string()
}

/// Creates the instances described by the JSON list in argv[1], each entry
/// `{"ip": "127.0.0.N", "tags": {...}, "state": "running"|"stopped"|"terminated", "type": "..."}`,
/// one `RunInstances` call (so one reservation) per entry, in a VPC 127.0.0.0/16 with one /24
/// subnet per third octet used. Prints `{ip: instance id}` as JSON.
const CREATE_EC2_INSTANCES: &str = r#"
import json, os, sys
import boto3

ec2 = boto3.client(
    "ec2",
    endpoint_url=os.environ["MOTO_ENDPOINT"],
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)
vpc = ec2.create_vpc(CidrBlock="127.0.0.0/16")["Vpc"]["VpcId"]
subnets = {}
ids = {}
for spec in json.loads(sys.argv[1]):
    ip = spec["ip"]
    block = ".".join(ip.split(".")[:3])
    if block not in subnets:
        subnets[block] = ec2.create_subnet(VpcId=vpc, CidrBlock=block + ".0/24")["Subnet"]["SubnetId"]
    args = dict(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        SubnetId=subnets[block],
        PrivateIpAddress=ip,
        InstanceType=spec.get("type", "t3.micro"),
    )
    tags = [{"Key": k, "Value": v} for k, v in spec.get("tags", {}).items()]
    if tags:
        args["TagSpecifications"] = [{"ResourceType": "instance", "Tags": tags}]
    instance = ec2.run_instances(**args)["Instances"][0]
    if instance["PrivateIpAddress"] != ip:
        sys.exit(f"moto gave {instance['PrivateIpAddress']} instead of {ip}")
    ids[ip] = instance["InstanceId"]
    state = spec.get("state", "running")
    if state == "stopped":
        ec2.stop_instances(InstanceIds=[ids[ip]])
    elif state == "terminated":
        ec2.terminate_instances(InstanceIds=[ids[ip]])
print(json.dumps(ids))
"#;

/// Creates one IAM user per entry of the JSON object in argv[1] (name to policy statements),
/// each with an inline policy of those statements and an access key, and prints
/// `{name: [access key id, secret access key]}` as JSON.
const CREATE_IAM_USERS: &str = r#"
import json, os, sys
import boto3

iam = boto3.client(
    "iam",
    endpoint_url=os.environ["MOTO_ENDPOINT"],
    region_name="us-east-1",
    aws_access_key_id="testing",
    aws_secret_access_key="testing",
)
keys = {}
for name, statements in json.loads(sys.argv[1]).items():
    iam.create_user(UserName=name)
    policy = {"Version": "2012-10-17", "Statement": statements}
    iam.put_user_policy(UserName=name, PolicyName="smssh", PolicyDocument=json.dumps(policy))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    keys[name] = [key["AccessKeyId"], key["SecretAccessKey"]]
print(json.dumps(keys))
"#;

impl Moto {
    /// Signs the harness's own Secrets Manager calls ([`Moto::stages`] and the other helpers)
    /// with `key_id` and `secret` from now on. Once [`Moto::enforce_iam`] refuses the `testing`
    /// key, a test that still inspects the secret gives the harness an allowed IAM user's key.
    pub fn sign_harness_calls_as(&mut self, key_id: &str, secret: &str) {
        let config = self
            .client
            .config()
            .to_builder()
            .credentials_provider(Credentials::new(
                key_id,
                secret,
                None,
                None,
                "smssh-test-iam",
            ))
            .build();
        self.client = aws_sdk_secretsmanager::Client::from_conf(config);
    }
}

impl Worker {
    /// Makes this sshd read `user`'s own `~/.ssh/authorized_keys` (the home from passwd, `%h`)
    /// instead of the worker's fixed file, as a stock sshd does, and restarts it. For tests
    /// that log in as a real account whose file the rotation edits as root; every other
    /// account keeps the worker's file.
    pub fn read_authorized_keys_from_home_of(&mut self, user: &str) {
        let mut config = fs::OpenOptions::new()
            .append(true)
            .open(self.config_path())
            .expect("cannot open sshd_config");
        write!(
            config,
            "Match User {user}\n    AuthorizedKeysFile %h/.ssh/authorized_keys\n"
        )
        .expect("cannot append to sshd_config");
        self.stop();
        self.start();
    }
}

impl Worker {
    /// Signs this worker's host key with the CA private key `ca`
    /// (`ssh-keygen -s CA -I ID OPTIONS host_key.pub`, where `options` are for example
    /// `["-h", "-n", "127.0.0.2", "-V", "-5m:+1h"]`), makes sshd present the certificate
    /// (`HostCertificate`, written before any `Match` block, which may not hold it) and
    /// restarts sshd. Signing again replaces the certificate. Returns its path.
    pub fn certify_host_key(&mut self, ca: &Path, options: &[&str]) -> PathBuf {
        let public = self.host_key_path().with_extension("pub");
        let certificate = self.dir.path().join("ssh_host_ed25519_key-cert.pub");
        run_tool(
            Command::new("ssh-keygen")
                .args(["-q", "-s"])
                .arg(ca)
                .args(["-I", "smssh-test-host"])
                .args(options)
                .arg(&public),
            "ssh-keygen -s (host certificate)",
        );
        assert!(
            certificate.is_file(),
            "ssh-keygen wrote no certificate at {}",
            certificate.display()
        );
        let config = fs::read_to_string(self.config_path()).expect("cannot read sshd_config");
        if !config.contains("HostCertificate ") {
            fs::write(
                self.config_path(),
                format!("HostCertificate {}\n{config}", certificate.display()),
            )
            .expect("cannot write sshd_config");
        }
        self.stop();
        self.start();
        certificate
    }
}

// ---------------------------------------------------------------------------
// Hidden network: workers that only a bastion can reach
// ---------------------------------------------------------------------------

/// A network namespace of its own, loopback only, held open by a sleeping process. An sshd
/// started in it cannot be reached from the tests' namespace at all, whatever its address:
/// a connection there is refused by the kernel.
pub struct Netns {
    holder: Child,
}

impl Netns {
    /// Creates the namespace (`unshare --net`, which needs root) and brings its loopback up.
    pub fn new() -> Netns {
        let mut holder = Command::new("unshare")
            .args(["--net", "sleep", "100000"])
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run unshare (package util-linux): {e}"));
        reaper_send(&holder.id().to_string());
        let ours = fs::read_link("/proc/self/ns/net").expect("cannot read our network namespace");
        let theirs = format!("/proc/{}/ns/net", holder.id());
        let started = Instant::now();
        // unshare switches namespace after it starts; until then the link still names ours.
        while fs::read_link(&theirs).ok().as_ref() == Some(&ours) || fs::read_link(&theirs).is_err()
        {
            if let Some(status) = holder.try_wait().expect("cannot wait for unshare") {
                panic!("unshare --net exited with {status}: the tests need root (CAP_SYS_ADMIN)");
            }
            assert!(
                started.elapsed() < SSHD_DEADLINE,
                "unshare --net did not enter a new namespace within {SSHD_DEADLINE:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
        let netns = Netns { holder };
        run_tool(
            netns.command("ip").args(["link", "set", "lo", "up"]),
            "ip link set lo up (package iproute2) in the hidden namespace",
        );
        netns
    }

    /// `program` run inside the namespace (`nsenter --net=...`, which execs it, so the PID
    /// is the program's).
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/proc/{}/ns/net", self.holder.id()))
            .arg(program);
        cmd
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        kill_server(&mut self.holder);
    }
}

impl Worker {
    /// A worker whose sshd runs inside `netns`, so that only a bastion in the same namespace
    /// reaches it.
    pub fn new_hidden(netns: &Netns, addr: &str, port: u16) -> Worker {
        let mut worker = Worker::prepared(addr, port);
        ensure_privsep_dir();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(worker.log_path())
            .expect("cannot open the sshd log");
        let mut child = netns
            .command(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(worker.config_path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cannot share the sshd log"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {SSHD} with nsenter: {e}"));
        reaper_send(&child.id().to_string());
        // sshd writes its PID file once it listens; the banner cannot be read from here.
        let pid_file = worker.dir.path().join("sshd.pid");
        let started = Instant::now();
        while !pid_file.is_file() {
            if let Some(status) = child.try_wait().expect("cannot wait for sshd") {
                panic!(
                    "hidden sshd {addr}:{port} exited with {status}; its log:\n{}",
                    worker.log()
                );
            }
            if started.elapsed() > SSHD_DEADLINE {
                kill_server(&mut child);
                panic!("hidden sshd {addr}:{port} did not listen within {SSHD_DEADLINE:?}");
            }
            thread::sleep(Duration::from_millis(10));
        }
        worker.child = Some(child);
        worker
    }

    /// The worker's directory, config and host key, with no sshd started.
    fn prepared(addr: &str, port: u16) -> Worker {
        let dir = tempfile::Builder::new()
            .prefix(&format!("smssh-worker-{addr}-{port}-"))
            .tempdir()
            .expect("cannot create a temp dir for a worker");
        let worker = Worker {
            addr: addr.to_owned(),
            port,
            dir,
            child: None,
        };
        fs::create_dir_all(worker.sftp_home().join(".ssh"))
            .expect("cannot create the worker's home and its .ssh");
        fs::write(worker.authorized_keys_path(), "").expect("cannot create authorized_keys");
        worker.generate_host_key();
        fs::write(worker.config_path(), worker.config()).expect("cannot write sshd_config");
        worker
    }
}

/// A real OpenSSH sshd that straddles two networks, as a bastion does: it accepts on
/// `addr:port` in the tests' namespace and serves each connection with `sshd -i` inside a
/// [`Netns`], so the hosts it forwards to are that namespace's hidden workers.
pub struct Bastion {
    pub worker: Worker,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    acceptor: Option<thread::JoinHandle<()>>,
    sessions: std::sync::Arc<Mutex<Vec<Child>>>,
}

impl Bastion {
    pub fn new(netns: &Netns, addr: &str, port: u16) -> Bastion {
        let worker = Worker::prepared(addr, port);
        ensure_privsep_dir();
        let listener = TcpListener::bind((addr, port))
            .unwrap_or_else(|e| panic!("cannot listen on {addr}:{port} for the bastion: {e}"));
        listener
            .set_nonblocking(true)
            .expect("cannot make the bastion's listener non-blocking");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sessions = std::sync::Arc::new(Mutex::new(Vec::new()));
        let netns_path = format!("--net=/proc/{}/ns/net", netns.holder.id());
        let config = worker.config_path();
        let log = worker.log_path();
        let acceptor = {
            let stop = std::sync::Arc::clone(&stop);
            let sessions = std::sync::Arc::clone(&sessions);
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let stream = match listener.accept() {
                        Ok((stream, _)) => stream,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(5));
                            continue;
                        }
                        Err(e) => panic!("the bastion's accept failed: {e}"),
                    };
                    stream
                        .set_nonblocking(false)
                        .expect("cannot make a bastion connection blocking");
                    let input = stream
                        .try_clone()
                        .expect("cannot share a bastion connection");
                    let errors = fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&log)
                        .expect("cannot open the bastion's log");
                    let child = Command::new("nsenter")
                        .arg(&netns_path)
                        .args([SSHD, "-i", "-e", "-f"])
                        .arg(&config)
                        .stdin(Stdio::from(std::os::fd::OwnedFd::from(input)))
                        .stdout(Stdio::from(std::os::fd::OwnedFd::from(stream)))
                        .stderr(errors)
                        .spawn()
                        .unwrap_or_else(|e| panic!("cannot start sshd -i for the bastion: {e}"));
                    reaper_send(&child.id().to_string());
                    sessions
                        .lock()
                        .unwrap_or_else(|poisoned| poisoned.into_inner())
                        .push(child);
                }
            })
        };
        Bastion {
            worker,
            stop,
            acceptor: Some(acceptor),
            sessions,
        }
    }

    /// How many connections the bastion has served.
    pub fn connections(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .len()
    }
}

impl Drop for Bastion {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        let mut sessions = self
            .sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for child in sessions.iter_mut() {
            kill_server(child);
        }
    }
}

impl Worker {
    /// Puts `lines` at the top of this sshd's config, where they beat the harness's own
    /// settings (sshd keeps the first value) and stay outside any `Match` block, and
    /// restarts it: e.g. `LogLevel DEBUG` so that a test can read which key exchange and
    /// cipher a session really used, or `Ciphers ...` to restrict what the server accepts.
    pub fn set_global_config(&mut self, lines: &str) {
        let path = self.config_path();
        let config = fs::read_to_string(&path).expect("cannot read sshd_config");
        let lines = if lines.ends_with('\n') {
            lines.to_owned()
        } else {
            format!("{lines}\n")
        };
        fs::write(&path, format!("{lines}{config}")).expect("cannot write sshd_config");
        self.stop();
        self.start();
    }
}

/// The most workers a [`Cluster`] starts: the benchmarks' scaling curve goes to 1,000 and
/// beyond; tests stay within the first 250.
pub const MAX_WORKERS: usize = 2000;

/// The address of worker `i` (from 0): 127.0.0.2 .. 127.0.0.251 for the first 250, which is
/// all tests use, then 250 more in each following /24 (127.0.1.2 .. 127.0.1.251, ...), so
/// that host `i` of a hostlist is `127.0.{i / 250}.{i % 250 + 2}`.
pub fn worker_addr(i: usize) -> String {
    format!("127.0.{}.{}", i / 250, i % 250 + 2)
}

/// The ssh_config `Host` patterns covering the first `n` workers: `127.0.0.*` alone up to
/// 250, so that tests can configure other 127.0.x.* addresses differently.
pub fn worker_patterns(n: usize) -> String {
    (0..n.div_ceil(250))
        .map(|block| format!("127.0.{block}.*"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// lightsshd
// ---------------------------------------------------------------------------

/// lightsshd (benches/lightsshd), the one-process SSH server that stands in for thousands of
/// hosts: started from `binary` with `authorized_key` (a `.pub` file) accepted, its host key
/// written in `dir`, listening on 0.0.0.0 and a port the kernel chose. Dropping it kills it.
pub struct Lightsshd {
    child: Child,
    lines: mpsc::Receiver<String>,
    pub port: u16,
    /// The host key's public line (`ssh-ed25519 BASE64 lightsshd`).
    pub host_key_line: String,
}

impl Lightsshd {
    pub fn start(binary: &Path, authorized_key: &Path, dir: &Path) -> Lightsshd {
        let host_key = dir.join("lightsshd_host_key.pub");
        let mut child = Command::new(binary)
            .arg("--authorized-key")
            .arg(authorized_key)
            .arg("--host-key-out")
            .arg(&host_key)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        reaper_send(&child.id().to_string());
        let stdout = std::io::BufReader::new(child.stdout.take().expect("stdout is piped"));
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in std::io::BufRead::lines(stdout).map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = lines.recv_timeout(SSHD_DEADLINE).unwrap_or_default();
        let port = first
            .strip_prefix("listening on 0.0.0.0:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("lightsshd did not say where it listens: {first:?}"));
        let host_key_line = fs::read_to_string(&host_key).expect("lightsshd wrote no host key");
        let host_key_line = host_key_line.trim_end().to_owned();
        Lightsshd {
            child,
            lines,
            port,
            host_key_line,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The hostlist of `n` distinct simulated hosts: 127.1.0.1 .. 127.1.0.250, then 250 more
    /// in each following /24, clear of the harness's workers in 127.0.0.0/16.
    pub fn hostlist(n: usize) -> String {
        assert!(
            (1..=250 * 256).contains(&n),
            "1 to 64,000 simulated hosts, not {n}"
        );
        let (full, rest) = (n / 250, n % 250);
        let mut terms = Vec::new();
        if full > 0 {
            terms.push(format!("127.1.[0-{}].[1-250]", full - 1));
        }
        if rest > 0 {
            terms.push(format!("127.1.{full}.[1-{rest}]"));
        }
        terms.join(",")
    }

    /// Stops it with SIGTERM and returns the counters it printed: `name value` lines, and
    /// `sha256 HEX COUNT` lines as `sha256 HEX` -> COUNT.
    pub fn stop(self) -> std::collections::BTreeMap<String, u64> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let mut counters = std::collections::BTreeMap::new();
        while let Ok(line) = self.lines.recv_timeout(SSHD_DEADLINE) {
            if let Some((name, value)) = line.rsplit_once(' ') {
                counters.insert(name.to_owned(), value.parse().unwrap_or(u64::MAX));
            }
        }
        counters
    }
}

impl Drop for Lightsshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        reaper_send(&format!("-{}", self.child.id()));
    }
}

/// `command` as `sh` lines: its environment exported, then the program and its arguments,
/// each single-quoted. Tests that run a binary on a tmux pane's terminal write this into a
/// script, with the redirections and epilogue they need after it.
pub fn shell_command_lines(command: &Command) -> String {
    let quote =
        |text: &std::ffi::OsStr| format!("'{}'", text.to_string_lossy().replace('\'', "'\\''"));
    let mut script = String::new();
    for (key, value) in command.get_envs() {
        if let (Some(value), Some(key)) = (value, key.to_str()) {
            script.push_str(&format!("export {key}={}\n", quote(value)));
        }
    }
    script.push_str(&quote(command.get_program()));
    for arg in command.get_args() {
        script.push(' ');
        script.push_str(&quote(arg));
    }
    script
}
