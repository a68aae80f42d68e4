//! Host-key questions in a fan-out, asked on a real terminal (tmux): one question at a time,
//! each naming its host, and each answer applied to that host only.

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

/// A shell script that runs `command` with the harness's environment, then prints its exit
/// status and keeps the pane open so that the screen can still be read.
fn wrapper(dir: &Path, command: &Command) -> String {
    let script = format!(
        "#!/bin/sh\n{} </dev/tty\necho \"EXIT=$?\"\nsleep 600\n",
        shell_command_lines(command)
    );
    let path = dir.join("run.sh");
    std::fs::write(&path, script).expect("write the wrapper");
    format!("sh {}", path.display())
}

/// Regression (issue 9, item 4): under StrictHostKeyChecking=ask the questions of several
/// hosts were shown at once, and the `yes` typed for the fingerprint on screen was recorded
/// for another host.
#[test]
fn the_wrong_host_gets_trusted() {
    let cluster = Cluster::new(3);
    std::fs::write(cluster.known_hosts_path(), "").expect("empty known_hosts");
    let scratch = tempfile::tempdir().expect("scratch");
    let mut command = cluster.command("smssh");
    command.args([
        "-o",
        "StrictHostKeyChecking=ask",
        "-w",
        "127.0.0.[2-4]",
        "--",
        "true",
    ]);
    let session = format!("smssh-prompts-{}", std::process::id());
    tmux(&[
        "new-session",
        "-d",
        "-s",
        &session,
        "-x",
        "220",
        "-y",
        "60",
        &wrapper(scratch.path(), &command),
    ]);
    let refused = "127.0.0.3";
    let mut answered: Vec<String> = Vec::new();
    let started = Instant::now();
    let screen = loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the run did not end; screen:\n{}",
            tmux(&["capture-pane", "-p", "-t", &session])
        );
        std::thread::sleep(Duration::from_millis(300));
        let screen = tmux(&["capture-pane", "-p", "-S", "-", "-t", &session]);
        if screen.contains("EXIT=") {
            break screen;
        }
        let asked: Vec<&str> = screen
            .lines()
            .filter(|l| l.starts_with("The authenticity of host '"))
            .collect();
        let waiting = asked.len() - answered.len();
        assert!(
            waiting <= 1,
            "{waiting} questions on screen at once:\n{screen}"
        );
        if waiting == 1 {
            // The question names the host as known_hosts does: `[127.0.0.2]:PORT`.
            let named = asked[asked.len() - 1]
                .split('\'')
                .nth(1)
                .expect("the question names its host");
            let host = named
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or(named)
                .to_owned();
            let answer = if host == refused { "no" } else { "yes" };
            tmux(&["send-keys", "-t", &session, answer, "Enter"]);
            answered.push(host);
        }
    };
    tmux(&["kill-session", "-t", &session]);
    answered.sort();
    assert_eq!(
        answered,
        ["127.0.0.2", "127.0.0.3", "127.0.0.4"],
        "{screen}"
    );
    assert!(screen.contains("EXIT=255"), "{screen}");
    let known = std::fs::read_to_string(cluster.known_hosts_path()).expect("known_hosts");
    for worker in &cluster.workers {
        let blob = worker
            .host_key_line()
            .split(' ')
            .nth(2)
            .expect("blob")
            .to_owned();
        assert_eq!(
            known.contains(&blob),
            worker.addr() != refused,
            "{}: known_hosts:\n{known}",
            worker.addr()
        );
    }
}
