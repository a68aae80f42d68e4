//! The interactive multi-host shell (`smssh -w HOSTS` without a command) against real sshd
//! workers: lines piped in as a script, and typed on a real terminal (tmux) with history,
//! Ctrl-C at the prompt and Ctrl-C during a running line.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

/// How long one line may take before a test gives up on it.
const LINE_TIMEOUT: Duration = Duration::from_secs(30);

/// Appends the client port of the SSH connection this command runs over to `~/ports` (each
/// worker has its own HOME): one port per line and host, so the count of distinct ports is
/// the count of logins.
const RECORD_LOGIN: &str = "echo \"$SSH_CONNECTION\" | cut -d' ' -f2 >> ~/ports";

/// A shell started with piped stdin, stdout and stderr, driven a line at a time.
struct PipedShell {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: mpsc::Receiver<Vec<u8>>,
    stderr: mpsc::Receiver<Vec<u8>>,
    out: String,
    err: String,
}

impl PipedShell {
    fn start(mut command: Command) -> PipedShell {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("smssh starts");
        let stdin = child.stdin.take();
        let stdout = pump(child.stdout.take().expect("piped stdout"));
        let stderr = pump(child.stderr.take().expect("piped stderr"));
        PipedShell {
            child,
            stdin,
            stdout,
            stderr,
            out: String::new(),
            err: String::new(),
        }
    }

    fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin is open");
        writeln!(stdin, "{line}").expect("smssh reads its stdin");
        stdin.flush().expect("flush");
    }

    fn collect(&mut self) {
        while let Ok(chunk) = self.stdout.try_recv() {
            self.out.push_str(&String::from_utf8_lossy(&chunk));
        }
        while let Ok(chunk) = self.stderr.try_recv() {
            self.err.push_str(&String::from_utf8_lossy(&chunk));
        }
    }

    /// Waits until stdout (or stderr) holds `needle`, and returns what it held.
    fn wait_for(&mut self, needle: &str, on_stderr: bool) -> String {
        let started = Instant::now();
        loop {
            self.collect();
            let text = if on_stderr { &self.err } else { &self.out };
            if text.contains(needle) {
                return text.clone();
            }
            assert!(
                started.elapsed() < LINE_TIMEOUT,
                "no {needle:?} within {LINE_TIMEOUT:?}\nstdout:\n{}\nstderr:\n{}",
                self.out,
                self.err
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Closes stdin (the end of the script) and returns the exit code, stdout and stderr.
    fn finish(mut self) -> (i32, String, String) {
        self.stdin = None;
        let started = Instant::now();
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for smssh") {
                break status;
            }
            if started.elapsed() > LINE_TIMEOUT {
                let _ = self.child.kill();
                panic!("smssh did not end at the end of its input\n{}", self.err);
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        // The pumps end once the pipes close; what is left is collected.
        std::thread::sleep(Duration::from_millis(100));
        self.collect();
        (
            status.code().unwrap_or(-1),
            self.out.clone(),
            self.err.clone(),
        )
    }
}

impl Drop for PipedShell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn pump(mut pipe: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    rx
}

/// A group of `--group`'s output: the rule, the hostlist with its count, the rule, the text.
fn group(hosts: &str, count: usize, text: &str) -> String {
    let rule = "-".repeat(15);
    format!("{rule}\n{hosts} ({count})\n{rule}\n{text}")
}

/// For each worker, in order: the lines that ran there and the distinct client ports they
/// ran over (the logins).
fn logins(cluster: &Cluster) -> Vec<(usize, usize)> {
    cluster
        .workers
        .iter()
        .map(|w| {
            let text = std::fs::read_to_string(w.sftp_home().join("ports")).unwrap_or_default();
            let mut ports: Vec<&str> = text.lines().collect();
            let lines = ports.len();
            ports.sort_unstable();
            ports.dedup();
            (lines, ports.len())
        })
        .collect()
}

#[test]
fn piped_lines_run_grouped_over_one_login_per_host_and_a_lost_session_is_logged_in_again() {
    let mut cluster = Cluster::new(4);
    // A named group for `@pair`, in the user's configuration file.
    let config_dir = cluster.home.path().join(".config/smssh");
    std::fs::create_dir_all(&config_dir).expect("config dir");
    std::fs::write(
        config_dir.join("config.toml"),
        "[groups]\npair = \"127.0.0.[4-5]\"\n",
    )
    .expect("config.toml");
    let audit_log = cluster.scratch.path().join("audit.jsonl");
    let mut command = cluster.command("smssh");
    command
        .args(["-w", "127.0.0.[2-5]", "--audit-log"])
        .arg(&audit_log);
    let mut shell = PipedShell::start(command);

    // Output that differs by host, and one host exiting non-zero.
    shell.send(&format!(
        "{RECORD_LOGIN}; case \"$SSH_CONNECTION\" in *' 127.0.0.5 '*) echo five; exit 3;; esac; echo line-one"
    ));
    let out = shell.wait_for("five\n", false);
    assert!(
        out.contains(&group("127.0.0.[2-4]", 3, "line-one\n")),
        "{out}"
    );
    assert!(out.contains(&group("127.0.0.5", 1, "five\n")), "{out}");
    shell.wait_for("127.0.0.5: exit status 3", true);

    // A target change: only these hosts answer from now on.
    shell.send("!127.0.0.[2-3]");
    shell.send("?");
    shell.wait_for("targets: 127.0.0.[2-3] (2)", false);
    shell.send(&format!("{RECORD_LOGIN}; echo line-two"));
    let out = shell.wait_for("line-two\n", false);
    assert!(
        out.contains(&group("127.0.0.[2-3]", 2, "line-two\n")),
        "{out}"
    );

    // A named group joins the targets.
    shell.send("+@pair");
    shell.send(&format!("{RECORD_LOGIN}; echo line-three"));
    let out = shell.wait_for("line-three\n", false);
    assert!(
        out.contains(&group("127.0.0.[2-5]", 4, "line-three\n")),
        "{out}"
    );

    // A host whose sshd (and with it the session) is gone is reported by name; the others
    // answer over their sessions.
    cluster.workers[2].stop();
    std::thread::sleep(Duration::from_millis(300));
    shell.send(&format!("{RECORD_LOGIN}; echo line-four"));
    let out = shell.wait_for("line-four\n", false);
    assert!(
        out.contains(&group("127.0.0.[2-3,5]", 3, "line-four\n")),
        "{out}"
    );
    let err = shell.wait_for("1 failed", true);
    assert!(
        err.lines()
            .any(|l| l.contains("127.0.0.4") && l.contains("refused")),
        "{err}"
    );

    // Back again: the host is logged in again before the next line runs.
    cluster.workers[2].start();
    shell.send(&format!(
        "{RECORD_LOGIN}; case \"$SSH_CONNECTION\" in *' 127.0.0.3 '*) exit 7;; esac; echo line-five"
    ));
    let out = shell.wait_for("line-five\n", false);
    assert!(
        out.contains(&group("127.0.0.[2,4-5]", 3, "line-five\n")),
        "{out}"
    );
    // `quit` ends the shell: what follows it is not run.
    shell.send("quit");
    shell.send("echo after-quit");
    let (code, out, err) = shell.finish();
    assert!(!out.contains("after-quit\n"), "{out}");
    assert_eq!(
        code, 7,
        "the last line's status\nstdout:\n{out}\nstderr:\n{err}"
    );
    assert!(err.contains("127.0.0.3: exit status 7"), "{err}");
    assert!(
        !out.contains("smssh> "),
        "no prompt without a terminal: {out}"
    );

    // (lines run, logins) per host: one login each, and one more for the host whose sshd
    // was restarted.
    assert_eq!(
        logins(&cluster),
        [(5, 1), (5, 1), (3, 2), (4, 1)],
        "stdout:\n{out}\nstderr:\n{err}"
    );

    // One audit record per line and host, the host that could not be logged in to included.
    let records: Vec<serde_json::Value> = std::fs::read_to_string(&audit_log)
        .expect("the audit log")
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON record per line"))
        .collect();
    let per_host: Vec<(usize, usize)> = cluster
        .addrs()
        .iter()
        .map(|addr| {
            let mine: Vec<&serde_json::Value> = records
                .iter()
                .filter(|r| r["host"] == addr.as_str() && r["action"]["type"] == "exec")
                .collect();
            let failed = mine.iter().filter(|r| r["outcome"] == "failed").count();
            (mine.len(), failed)
        })
        .collect();
    assert_eq!(per_host, [(5, 0), (5, 0), (4, 1), (4, 0)], "{records:?}");
    assert!(records
        .iter()
        .any(|r| r["host"] == "127.0.0.5" && r["exit_status"] == 3));
}

/// tmux on a server of this test's own (`-L`), which no other test's tmux can end.
fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux")
        .args(["-L", &socket_name()])
        .args(args)
        .output()
        .expect("tmux runs");
    assert!(out.status.success(), "tmux {args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A script that runs `command` with its environment on the pane's terminal, then prints its
/// exit status and keeps the pane open so that the screen can still be read.
fn wrapper(dir: &Path, command: &Command) -> String {
    // Ctrl-C reaches the pane's whole process group; the script outlives it (a trap, not an
    // ignored signal, so that smssh starts with SIGINT's default action).
    let script = format!(
        "#!/bin/sh\ntrap true INT\n{} </dev/tty\necho \"EXIT=$?\"\nsleep 600\n",
        shell_command_lines(command)
    );
    let path = dir.join("run.sh");
    std::fs::write(&path, script).expect("write the wrapper");
    format!("sh {}", path.display())
}

/// A tmux pane running one command.
struct Pane {
    session: String,
}

impl Pane {
    fn screen(&self) -> String {
        tmux(&["capture-pane", "-p", "-S", "-", "-t", &self.session])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        tmux(&args);
    }

    fn type_text(&self, text: &str) {
        tmux(&["send-keys", "-t", &self.session, "-l", text]);
    }

    /// Waits until `done` holds for the screen, and returns the screen.
    fn wait(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if done(&screen) {
                return screen;
            }
            assert!(
                started.elapsed() < LINE_TIMEOUT,
                "{what}: not within {LINE_TIMEOUT:?}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn socket_name() -> String {
    format!("smssh-shell-test-{}", std::process::id())
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &socket_name(), "kill-server"])
            .output();
    }
}

/// Prompt lines on the screen.
fn prompts(screen: &str) -> usize {
    screen.lines().filter(|l| l.starts_with("smssh>")).count()
}

/// Lines of the screen equal to `text`: a command's output, not the line that typed it.
fn output_lines(screen: &str, text: &str) -> usize {
    screen.lines().filter(|l| l.trim_end() == text).count()
}

/// The processes whose command line, its arguments joined by spaces, is `cmdline`.
fn running(cmdline: &str) -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter(|entry| {
            std::fs::read(entry.path().join("cmdline")).is_ok_and(|bytes| {
                let words: Vec<String> = bytes
                    .split(|b| *b == 0)
                    .filter(|w| !w.is_empty())
                    .map(|w| String::from_utf8_lossy(w).into_owned())
                    .collect();
                words.join(" ") == cmdline
            })
        })
        .count()
}

#[test]
fn a_terminal_shell_has_a_prompt_history_and_two_kinds_of_ctrl_c() {
    let cluster = Cluster::new(2);
    let scratch = tempfile::tempdir().expect("scratch");
    let state = scratch.path().join("state");
    let mut command = cluster.command("smssh");
    command
        .env("XDG_STATE_HOME", &state)
        .args(["-w", "127.0.0.[2-3]"]);
    let pane = Pane {
        session: format!("smssh-shell-{}", std::process::id()),
    };
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &pane.session,
        "-x",
        "200",
        "-y",
        "50",
        &wrapper(scratch.path(), &command),
    ]);
    // capture-pane drops the prompt's trailing space.
    pane.wait("the prompt", |s| prompts(s) == 1);

    pane.type_text("echo hi-$((40+2))");
    pane.keys(&["Enter"]);
    pane.wait("the first answer", |s| output_lines(s, "hi-42") == 1);
    let screen = pane.screen();
    assert!(screen.contains("127.0.0.[2-3] (2)"), "{screen}");

    // Ctrl-C at the prompt drops the line typed so far; Up then recalls the last line run.
    pane.type_text("echo partial-$((1+1))");
    pane.keys(&["C-c"]);
    // Keys typed ahead of a new prompt may be read by the editor that just ended; a person
    // sees the prompt first.
    pane.wait("a fresh prompt", |s| prompts(s) == 3);
    pane.keys(&["Up"]);
    pane.keys(&["Enter"]);
    let screen = pane.wait("the recalled line's answer", |s| {
        output_lines(s, "hi-42") == 2
    });
    assert_eq!(output_lines(&screen, "partial-2"), 0, "{screen}");

    // Ctrl-C while a line runs stops it on every host and returns to the prompt at once.
    // The channels are closed: a command that goes on (sshd refuses the `signal` request
    // for root's sessions, which have no privilege-separated child) can no longer write, so
    // nothing after its next write runs.
    let sleeper = "sleep 8.7";
    pane.type_text(&format!(
        "{sleeper}; echo never-printed && touch ~/ran-after-ctrl-c"
    ));
    pane.keys(&["Enter"]);
    let started = Instant::now();
    while running(sleeper) < 2 {
        assert!(
            started.elapsed() < LINE_TIMEOUT,
            "the sleeps did not start; screen:\n{}",
            pane.screen()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let stopped_at = Instant::now();
    pane.keys(&["C-c"]);
    let screen = pane.wait("the prompt after Ctrl-C", |s| {
        s.matches("interrupted").count() >= 2 && prompts(s) == 5
    });
    assert!(
        stopped_at.elapsed() < Duration::from_secs(5),
        "Ctrl-C took {:?}",
        stopped_at.elapsed()
    );
    for host in ["127.0.0.2", "127.0.0.3"] {
        assert!(
            screen.contains(&format!("smssh: {host}: interrupted")),
            "{screen}"
        );
    }
    while running(sleeper) > 0 {
        assert!(
            started.elapsed() < LINE_TIMEOUT,
            "the remote sleeps never ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    std::thread::sleep(Duration::from_millis(500));
    for worker in &cluster.workers {
        assert!(
            !worker.sftp_home().join("ran-after-ctrl-c").exists(),
            "{}: the stopped line went on after its channel was closed; sshd log:\n{}",
            worker.addr(),
            worker.log()
        );
    }
    assert_eq!(output_lines(&pane.screen(), "never-printed"), 0);

    // The sessions stay open: the next line answers, and Ctrl-D ends the shell with the
    // status of the line Ctrl-C stopped.
    pane.type_text("echo still-here");
    pane.keys(&["Enter"]);
    pane.wait("an answer after Ctrl-C", |s| {
        output_lines(s, "still-here") == 1
    });
    pane.keys(&["C-d"]);
    let screen = pane.wait("the end", |s| s.contains("EXIT="));
    assert!(screen.contains("EXIT=0"), "{screen}");

    let history_path = state.join("smssh/history");
    let history = std::fs::read_to_string(&history_path).expect("the history file");
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&history_path)
        .expect("history")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "the history file's mode");
    assert!(history.contains("echo hi-$((40+2))"), "{history}");
    assert!(
        history.contains("sleep 8.7; echo never-printed"),
        "{history}"
    );
    assert!(!history.contains("partial"), "{history}");
}

#[test]
fn flags_for_a_command_fan_out_are_refused_without_a_command() {
    let home = tempfile::tempdir().expect("a HOME");
    for (flag, needle) in [
        ("--json", "--json needs a command"),
        ("--fail-fast", "--fail-fast applies to a command fan-out"),
        ("--stream", "--stream applies to a command fan-out"),
    ] {
        let out = run(Command::new(binary_path("smssh"))
            .env_clear()
            .env("HOME", home.path())
            .env("SMSSH_SECRET_ID", SECRET_ID)
            .stdin(Stdio::null())
            .args([flag, "-w", "127.0.0.[2-3]"]));
        assert_exit_code(&out, 255);
        assert_stderr_contains(&out, needle);
    }
}

#[test]
fn ctrl_c_stops_a_piped_script_with_130() {
    let cluster = Cluster::new(1);
    let mut shell = PipedShell::start({
        let mut command = cluster.command("smssh");
        command.args(["-w", "127.0.0.2"]);
        command
    });
    shell.send("echo started");
    shell.wait_for("started\n", false);
    let sleeper = "sleep 9.3";
    shell.send(sleeper);
    shell.send("touch ~/script-went-on");
    let started = Instant::now();
    while running(sleeper) < 1 {
        assert!(started.elapsed() < LINE_TIMEOUT, "the sleep did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = nix::unistd::Pid::from_raw(i32::try_from(shell.child.id()).expect("a pid"));
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT).expect("SIGINT");
    let stopped_at = Instant::now();
    let (code, out, err) = shell.finish();
    assert!(
        stopped_at.elapsed() < Duration::from_secs(5),
        "Ctrl-C took {:?}",
        stopped_at.elapsed()
    );
    assert_eq!(code, 130, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("127.0.0.2: interrupted"), "{err}");
    assert!(
        !cluster.workers[0]
            .sftp_home()
            .join("script-went-on")
            .exists(),
        "the line after Ctrl-C ran"
    );
}
