//! How a fan-out's results are shown once it has run: the summary of failed hosts (both
//! programs), grouped outputs (`--group`) and JSON lines (`--json`) for commands.
//!
//! Owns: the formats and their order (groups in order of their first host; JSON objects and
//! summary lines in input order). Invariant: each failed host is named on exactly one
//! summary line, and a line names the host once. Must not know: how the results were made.

use std::io::Write;

use crate::config::hostlist;
use crate::fanout::{HostError, HostOutcome};
use crate::ssh::exec::{Captured, RemoteExit};
use crate::term::progress::Progress;

/// One host's command result in a fan-out: how it ended and, for `--group`/`--json`, what it said.
#[derive(Debug)]
pub struct HostRun {
    pub exit: RemoteExit,
    pub captured: Option<Captured>,
}

/// The one line that says why a host failed, naming the host once.
pub fn failure_line<E: std::fmt::Display>(label: &str, err: &HostError<E>) -> String {
    if err.names_host() {
        err.to_string()
    } else {
        format!("{label}: {err}")
    }
}

/// Prints the fan-out summary to stderr and returns the number of failed hosts.
pub fn summarize<T, E: std::fmt::Display>(
    outcomes: &[HostOutcome<T, E>],
    progress: &Progress,
) -> usize {
    let program = crate::term::diag::program();
    // Hosts a `--fail-fast` run never started are named together, on one line.
    let never_started = crate::fanout::never_started(outcomes);
    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !matches!(o.result, Err(HostError::NotStarted)))
        .filter_map(|o| {
            o.result
                .as_ref()
                .err()
                .map(|err| failure_line(&o.plan.label, err))
        })
        .collect();
    let count = failed.len() + never_started.len();
    if count > 0 {
        progress.line(&format!(
            "{program}: {} hosts: {} ok, {count} failed",
            outcomes.len(),
            outcomes.len() - count,
        ));
    }
    for line in &failed {
        progress.line(&format!("{program}: {line}"));
    }
    if !never_started.is_empty() {
        progress.line(&format!(
            "{program}: never started (--fail-fast stopped the run): {}",
            hostlist::compress(&never_started)
        ));
    }
    count
}

/// The most characters of a signal's name that [`describe_exit`] shows: real names are a few
/// letters, and the line must stay one line whatever name a server sends.
const MAX_SIGNAL_NAME: usize = 64;

/// How a remote command ended, for the line naming a host whose command failed. The caller
/// prints it through `term/escape`, which shows the name's control characters.
pub fn describe_exit(exit: &RemoteExit) -> String {
    match exit {
        RemoteExit::Status(status) => format!("exit status {status}"),
        RemoteExit::Signal { name, .. } => format!("killed by signal {}", shown_signal(name)),
        RemoteExit::NoStatus => "the session ended without an exit status".to_owned(),
    }
}

/// A signal name as the server sent it, cut at [`MAX_SIGNAL_NAME`] characters: real names are
/// a few letters, and a server must not make one line (or one JSON field) arbitrarily long.
fn shown_signal(name: &str) -> String {
    match name.char_indices().nth(MAX_SIGNAL_NAME) {
        Some((cut, _)) => format!("{}... (a {}-byte name, cut)", &name[..cut], name.len()),
        None => name.to_owned(),
    }
}

/// One JSON object per host on stdout, in input order.
pub fn print_json<E: std::fmt::Display>(outcomes: &[HostOutcome<HostRun, E>]) {
    let mut out = std::io::stdout().lock();
    for outcome in outcomes {
        let truncated = outcome
            .result
            .as_ref()
            .ok()
            .and_then(|run| run.captured.as_ref())
            .is_some_and(|c| c.truncated);
        let (exit_status, signal, stdout, stderr, error) = match &outcome.result {
            Ok(run) => {
                let captured = run.captured.as_ref();
                let text = |bytes: Option<&Vec<u8>>| {
                    bytes.map(|b| String::from_utf8_lossy(b).into_owned())
                };
                let (status, signal) = match &run.exit {
                    RemoteExit::Status(s) => (Some(*s), None),
                    RemoteExit::Signal { name, .. } => (None, Some(shown_signal(name))),
                    RemoteExit::NoStatus => (None, None),
                };
                (
                    status,
                    signal,
                    text(captured.map(|c| &c.stdout)),
                    text(captured.map(|c| &c.stderr)),
                    None,
                )
            }
            Err(err) => (None, None, None, None, Some(err.to_string())),
        };
        let object = serde_json::json!({
            "host": outcome.plan.label,
            "address": outcome.plan.hostname,
            "port": outcome.plan.port,
            "user": outcome.plan.user,
            "exit_status": exit_status,
            "signal": signal,
            "stdout": stdout.unwrap_or_default(),
            "stderr": stderr.unwrap_or_default(),
            "truncated": truncated,
            "duration_ms": outcome.duration.as_millis() as u64,
            "error": error,
        });
        let _ = writeln!(out, "{object}");
    }
}

/// One host's captured output: (stdout, stderr).
type Output<'a> = (&'a [u8], &'a [u8]);

/// Identical outputs once, under the compressed hostlist of the hosts that printed them.
pub fn print_groups<E>(outcomes: &[HostOutcome<HostRun, E>]) {
    // Groups keep the order in which their first host appears. Outputs are compared in
    // place, as (stdout, stderr) pairs, so that no host's output is copied.
    let mut groups: Vec<(Output, Vec<&str>)> = Vec::new();
    for outcome in outcomes {
        let Ok(run) = &outcome.result else { continue };
        let Some(captured) = &run.captured else {
            continue;
        };
        let text = (captured.stdout.as_slice(), captured.stderr.as_slice());
        match groups.iter_mut().find(|(t, _)| *t == text) {
            Some((_, hosts)) => hosts.push(&outcome.plan.label),
            None => groups.push((text, vec![&outcome.plan.label])),
        }
    }
    let mut out = std::io::stdout().lock();
    for (text, hosts) in groups {
        let rule = "-".repeat(15);
        let _ = writeln!(
            out,
            "{rule}\n{} ({})\n{rule}",
            hostlist::compress(&hosts),
            hosts.len()
        );
        let (stdout, stderr) = text;
        let _ = out.write_all(stdout);
        let _ = out.write_all(stderr);
        let last = if stderr.is_empty() { stdout } else { stderr };
        if !last.is_empty() && !last.ends_with(b"\n") {
            let _ = writeln!(out);
        }
    }
}
