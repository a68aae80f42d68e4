//! The fan-out's live view on a real terminal (tmux, read with capture-pane, driven with
//! send-keys) against real sshd workers: the states and their order, one host's output, the
//! output groups, the diff of two hosts, the two stages of Ctrl-C, and a terminal given back
//! (cooked mode, the normal screen) with the result left on it. And the first Ctrl-C's
//! account of a run that streams its lines, by SIGINT.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

fn tmux(args: &[&str]) -> String {
    let out = Command::new("tmux").args(args).output().expect("tmux runs");
    assert!(out.status.success(), "tmux {args:?}: {}", describe(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A detached tmux session of a fixed size, killed when the test ends however it ends.
struct Pane {
    name: String,
}

impl Pane {
    /// Runs `command` in a new 160x40 session through a wrapper that then prints its exit
    /// status and the terminal's modes, and keeps the pane open to be read.
    fn start(name: &str, dir: &Path, command: &Command) -> Pane {
        let name = format!("smssh-live-{name}-{}", std::process::id());
        tmux(&[
            "new-session",
            "-d",
            "-s",
            &name,
            "-x",
            "160",
            "-y",
            "40",
            &wrapper(dir, command),
        ]);
        Pane { name }
    }

    fn screen(&self) -> String {
        tmux(&["capture-pane", "-p", "-t", &self.name])
    }

    /// The screen and its scrollback, wrapped lines joined.
    fn history(&self) -> String {
        tmux(&["capture-pane", "-p", "-J", "-S", "-", "-t", &self.name])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.name];
        args.extend_from_slice(keys);
        tmux(&args);
    }

    /// Leaves a host's output, the groups or a diff (with q: an Escape followed at once by
    /// the next key reads as Alt and that key), and waits for the host table.
    fn back_to_hosts(&self) {
        self.keys(&["q"]);
        self.wait_for("the host table", Duration::from_secs(10), |s| {
            s.contains("Enter/number: host output")
        });
    }

    fn alternate_screen_on(&self) -> bool {
        tmux(&["display-message", "-p", "-t", &self.name, "#{alternate_on}"]).trim() == "1"
    }

    /// Polls the visible screen until `ready` holds, for at most `timeout`.
    fn wait_for(&self, what: &str, timeout: Duration, ready: impl Fn(&str) -> bool) -> String {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            assert!(
                started.elapsed() < timeout,
                "waited {timeout:?} for {what}; screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Pane {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.name])
            .output();
    }
}

/// A shell script that runs `command` with the harness's environment on the pane's terminal,
/// then prints `EXIT=status` and the terminal's modes as smssh left them (`stty -a`).
fn wrapper(dir: &Path, command: &Command) -> String {
    let script = format!(
        "#!/bin/sh\n{} </dev/tty\necho \"EXIT=$?\"\necho \"MODES=$(stty -a | tr '\\n' ' ')\"\nsleep 600\n",
        shell_command_lines(command)
    );
    let path = dir.join("run.sh");
    std::fs::write(&path, script).expect("write the wrapper");
    format!("sh {}", path.display())
}

/// Gives each worker its own job: `sh $HOME/job.sh` runs it (workers set HOME to their
/// directory).
fn give_jobs(cluster: &Cluster, jobs: &[&str]) {
    for (worker, job) in cluster.workers.iter().zip(jobs) {
        std::fs::write(worker.sftp_home().join("job.sh"), job).expect("write a worker's job");
    }
}

const RUN_JOB: &str = "sh \"$HOME/job.sh\"";

/// A job that prints a tick every 0.1 s for a minute, unless stopped.
const LONG_JOB: &str =
    "echo started; i=0; while [ $i -lt 600 ]; do echo tick $i; i=$((i+1)); sleep 0.1; done\n";

/// A job whose last line tries to retitle the window and colour the screen.
const ESCAPING_JOB: &str = "echo same; printf 'esc \\033]2;pwned\\007\\033[31mline2\\033[0m\\n'\n";

/// That line as the view must draw it.
const ESCAPED_LINE: &str = "esc \\x1b]2;pwned\\x07\\x1b[31mline2\\x1b[0m";

/// The line of the host table that names `host`, and its position on the screen.
fn row<'a>(screen: &'a str, host: &str) -> (usize, &'a str) {
    screen
        .lines()
        .enumerate()
        .find(|(_, line)| line.split_whitespace().nth(1) == Some(host))
        .unwrap_or_else(|| panic!("no row for {host}:\n{screen}"))
}

#[test]
fn the_live_view_shows_states_outputs_groups_and_gives_the_terminal_back() {
    let cluster = Cluster::new(4);
    give_jobs(
        &cluster,
        &[
            ESCAPING_JOB,
            ESCAPING_JOB,
            "echo failing >&2; exit 3\n",
            LONG_JOB,
        ],
    );
    let scratch = tempfile::tempdir().expect("scratch");
    let mut command = cluster.command("smssh");
    command.args(["-w", "127.0.0.[2-5]", "--", RUN_JOB]);
    let pane = Pane::start("view", scratch.path(), &command);

    // The states: the failed host first, then the one still running, then the finished.
    let screen = pane.wait_for(
        "three hosts done, one ticking",
        Duration::from_secs(60),
        |s| s.contains("exit 3") && s.matches("exit 0").count() == 2 && s.contains("tick "),
    );
    assert!(
        pane.alternate_screen_on(),
        "the view is on the alternate screen"
    );
    let (failed_at, failed) = row(&screen, "127.0.0.4");
    let (running_at, running) = row(&screen, "127.0.0.5");
    let (ok_at, ok) = row(&screen, "127.0.0.2");
    assert!(
        failed.contains("exit 3") && failed.contains("failing"),
        "{failed}"
    );
    assert!(
        running.contains("running") && running.contains("tick "),
        "{running}"
    );
    assert!(ok.contains("exit 0"), "{ok}");
    // What a host prints cannot act on the terminal: it is drawn escaped.
    assert!(ok.contains(ESCAPED_LINE), "{ok}");
    let title = tmux(&["display-message", "-p", "-t", &pane.name, "#{pane_title}"]);
    assert!(
        !title.contains("pwned"),
        "a host retitled the window: {title}"
    );
    assert!(
        failed_at < running_at && running_at < ok_at,
        "failures, then running, then finished:\n{screen}"
    );
    assert!(
        screen.contains("4 hosts running: 2 ok, 1 running, 0 queued, 1 failed"),
        "{screen}"
    );

    // A host's number opens its output (numbers are input positions; with four hosts no
    // further digit can follow).
    pane.keys(&["4"]);
    let detail = pane.wait_for("host 4's output", Duration::from_secs(10), |s| {
        s.contains("#4 127.0.0.5  running")
    });
    assert!(detail.contains("tick "), "{detail}");
    // Following: the newest tick keeps coming into view.
    let newest = |s: &str| {
        s.lines()
            .filter_map(|l| l.strip_prefix("tick ")?.trim().parse::<u32>().ok())
            .max()
            .unwrap_or(0)
    };
    let before = newest(&detail);
    pane.wait_for("newer ticks", Duration::from_secs(10), |s| {
        newest(s) > before + 5
    });
    // Scrolled to the top, the first line is back and stays while ticks arrive.
    pane.keys(&["Home"]);
    pane.wait_for("the top of the output", Duration::from_secs(10), |s| {
        s.lines().nth(2) == Some("started")
    });
    pane.back_to_hosts();

    // The groups: the two identical outputs under their compressed hostlist.
    pane.keys(&["g"]);
    let groups = pane.wait_for("the groups", Duration::from_secs(10), |s| {
        s.contains("---- 127.0.0.[2-3] (2) ----")
    });
    assert!(groups.contains("---- 127.0.0.4 (1) ----"), "{groups}");
    assert!(
        groups.contains("same") && groups.contains("failing"),
        "{groups}"
    );
    pane.back_to_hosts();

    // The diff of the selected host (3, the failed one) with what most hosts said.
    pane.keys(&["3", "d"]);
    let diff = pane.wait_for("the diff", Duration::from_secs(10), |s| {
        s.contains("diff: -")
    });
    assert!(
        diff.contains("diff: - 127.0.0.2 (#1) + 127.0.0.4 (#3)"),
        "{diff}"
    );
    assert!(
        diff.contains("- same") && diff.contains("+ failing"),
        "{diff}"
    );
    // Escape goes back too.
    pane.keys(&["Escape"]);
    pane.wait_for("the host table", Duration::from_secs(10), |s| {
        s.contains("Enter/number: host output")
    });

    // The first Ctrl-C says where the run stands and stops nothing.
    pane.keys(&["C-c"]);
    let told = pane.wait_for("the account", Duration::from_secs(10), |s| {
        s.contains("(Ctrl-C again within 1s to stop)")
    });
    assert!(
        told.contains("done 2, running 1: 127.0.0.5, queued 0, failed 1: 127.0.0.4"),
        "{told}"
    );
    std::thread::sleep(Duration::from_millis(1500));
    assert!(pane.alternate_screen_on(), "one Ctrl-C stops nothing");
    assert!(pane.screen().contains("running"));

    // Twice within a second: the run stops, the view closes, the result stays on screen.
    pane.keys(&["C-c"]);
    std::thread::sleep(Duration::from_millis(200));
    pane.keys(&["C-c"]);
    let after = pane.wait_for("the end of the run", Duration::from_secs(30), |s| {
        s.contains("MODES=")
    });
    assert!(
        !pane.alternate_screen_on(),
        "the normal screen is back:\n{after}"
    );
    let history = pane.history();
    assert!(history.contains("EXIT=130"), "{history}");
    let modes = history
        .lines()
        .find_map(|l| l.strip_prefix("MODES="))
        .expect("the modes line");
    let words: Vec<&str> = modes.split_whitespace().collect();
    for mode in ["icanon", "echo", "isig", "icrnl", "opost"] {
        assert!(words.contains(&mode), "{mode} not restored: {modes}");
    }
    assert!(
        history.contains("127.0.0.[2-3] (2)"),
        "the groups stay:\n{history}"
    );
    assert!(
        history.contains("smssh: 127.0.0.4: exit status 3"),
        "{history}"
    );
    assert!(
        history.contains("smssh: 127.0.0.5: interrupted"),
        "{history}"
    );
}

#[test]
fn the_first_sigint_shows_where_a_streamed_run_stands_and_two_stop_it() {
    let cluster = Cluster::new(3);
    give_jobs(
        &cluster,
        &[
            "echo quick; touch \"$HOME/done\"\n",
            "touch \"$HOME/started\"; exec sleep 600\n",
            "echo no >&2; exit 2\n",
        ],
    );
    let mut command = cluster.command("smssh");
    command.args(["--stream", "-w", "127.0.0.[2-4]", "--", RUN_JOB]);
    let mut running = spawn(&mut command);
    let started = Instant::now();
    while !(cluster.workers[0].sftp_home().join("done").exists()
        && cluster.workers[1].sftp_home().join("started").exists())
    {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the jobs did not start: {}",
            describe(&running.kill())
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The failing host's end reaches smssh a moment after its worker ran the job.
    std::thread::sleep(Duration::from_secs(1));
    let pid = running.id().to_string();
    let interrupt = || {
        let sent = Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill runs");
        assert!(sent.success());
    };
    interrupt();
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!running.has_exited(), "one SIGINT stops nothing");
    interrupt();
    std::thread::sleep(Duration::from_millis(200));
    interrupt();
    let output = running
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|partial| panic!("two SIGINTs did not stop it: {}", describe(&partial)));
    assert_exit_code(&output, 130);
    let account = "smssh: done 1, running 1: 127.0.0.3, queued 0, failed 1: 127.0.0.4 \
                   (Ctrl-C again within 1s to stop)";
    let err = stderr(&output);
    assert_eq!(err.matches(account).count(), 2, "{err}");
    assert_stderr_contains(&output, "smssh: interrupted: stopping after cleaning up");
    assert_stderr_contains(&output, "smssh: 127.0.0.3: interrupted");
    assert!(
        stdout(&output).contains("127.0.0.2: quick"),
        "{}",
        describe(&output)
    );
}

#[test]
fn the_config_file_can_make_a_terminal_get_streamed_lines() {
    let cluster = Cluster::new(2);
    give_jobs(&cluster, &["echo one\n", "echo two; exit 4\n"]);
    let config_dir = cluster.home.path().join(".config/smssh");
    std::fs::create_dir_all(&config_dir).expect("the config directory");
    let config = config_dir.join("config.toml");
    std::fs::write(&config, "fanout_output = \"stream\"\n").expect("the config file");
    let scratch = tempfile::tempdir().expect("scratch");
    let mut command = cluster.command("smssh");
    command.args(["-w", "127.0.0.[2-3]", "--", RUN_JOB]);
    let pane = Pane::start("config", scratch.path(), &command);
    let screen = pane.wait_for("the end of the run", Duration::from_secs(60), |s| {
        s.contains("MODES=")
    });
    assert!(screen.contains("127.0.0.2: one"), "{screen}");
    assert!(screen.contains("127.0.0.3: two"), "{screen}");
    assert!(screen.contains("EXIT=4"), "{screen}");
    assert!(
        !screen.contains("---------------"),
        "no view, so no groups after it:\n{screen}"
    );

    // A value the file cannot mean is one line before anything connects.
    std::fs::write(&config, "fanout_output = \"fast\"\n").expect("the config file");
    let refused = run(cluster
        .command("smssh")
        .args(["-w", "127.0.0.2", "--", "true"]));
    assert_exit_code(&refused, 255);
    assert_stderr_contains(
        &refused,
        "unknown variant `fast`, expected `live` or `stream`",
    );
}

#[test]
fn a_queued_host_waits_its_turn_and_never_starts_after_ctrl_c() {
    let cluster = Cluster::new(2);
    give_jobs(&cluster, &[LONG_JOB, "echo never\n"]);
    let scratch = tempfile::tempdir().expect("scratch");
    let mut command = cluster.command("smssh");
    command.args(["-j", "1", "-w", "127.0.0.[2-3]", "--", RUN_JOB]);
    let pane = Pane::start("queued", scratch.path(), &command);
    let screen = pane.wait_for("one running, one queued", Duration::from_secs(60), |s| {
        s.contains("1 running, 1 queued") && s.contains("tick ")
    });
    let (running_at, running) = row(&screen, "127.0.0.2");
    let (queued_at, queued) = row(&screen, "127.0.0.3");
    assert!(running.contains("running"), "{running}");
    assert_eq!(
        queued.split_whitespace().collect::<Vec<_>>(),
        ["2", "127.0.0.3", "queued"],
        "a queued host has no time and no line yet"
    );
    assert!(running_at < queued_at, "running before queued:\n{screen}");
    // Enter opens the selected row, the first one when none was selected.
    pane.keys(&["Enter"]);
    pane.wait_for("host 1's output", Duration::from_secs(10), |s| {
        s.contains("#1 127.0.0.2  running") && s.contains("tick ")
    });
    pane.back_to_hosts();

    pane.keys(&["C-c"]);
    std::thread::sleep(Duration::from_millis(200));
    pane.keys(&["C-c"]);
    pane.wait_for("the end of the run", Duration::from_secs(30), |s| {
        s.contains("MODES=")
    });
    let history = pane.history();
    assert!(history.contains("EXIT=130"), "{history}");
    assert!(
        history.contains("smssh: 127.0.0.3: interrupted"),
        "{history}"
    );
    assert!(
        !history.contains("never"),
        "the queued host never ran:\n{history}"
    );
}

#[test]
fn sigterm_ends_the_run_and_gives_the_terminal_back() {
    let cluster = Cluster::new(1);
    give_jobs(&cluster, &[LONG_JOB]);
    let scratch = tempfile::tempdir().expect("scratch");
    let mut command = cluster.command("smssh");
    command.args(["-w", "127.0.0.2", "--", RUN_JOB]);
    let pane = Pane::start("term", scratch.path(), &command);
    pane.wait_for("the view", Duration::from_secs(60), |s| s.contains("tick "));
    // The pane runs the wrapper's sh, whose one child is smssh.
    let shell = tmux(&["display-message", "-p", "-t", &pane.name, "#{pane_pid}"]);
    let children = Command::new("pgrep")
        .args(["-P", shell.trim()])
        .output()
        .expect("pgrep runs");
    let smssh = String::from_utf8_lossy(&children.stdout).trim().to_owned();
    assert!(
        !smssh.is_empty() && !smssh.contains('\n'),
        "one child: {smssh:?}"
    );
    let sent = Command::new("kill")
        .args(["-TERM", &smssh])
        .status()
        .expect("kill runs");
    assert!(sent.success());
    let after = pane.wait_for("the end", Duration::from_secs(30), |s| s.contains("MODES="));
    assert!(!pane.alternate_screen_on(), "{after}");
    let history = pane.history();
    assert!(history.contains("EXIT=143"), "{history}");
    let modes = history
        .lines()
        .find_map(|l| l.strip_prefix("MODES="))
        .expect("the modes line");
    let words: Vec<&str> = modes.split_whitespace().collect();
    for mode in ["icanon", "echo", "isig"] {
        assert!(words.contains(&mode), "{mode} not restored: {modes}");
    }
}
