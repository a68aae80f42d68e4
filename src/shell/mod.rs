//! The interactive multi-host shell: `smssh -w HOSTS` (or `--hosts-file`, `--ec2-filter`)
//! without a command, after ClusterShell's interactive mode. Every host is logged in once
//! and its session kept; each line typed runs on every target host over its session (a new
//! channel per line), and the answers are printed grouped, as `--group` prints them, followed
//! by the hosts that failed or exited non-zero.
//!
//! Owns: the targets and their open sessions, the shell's exit status (the last command
//! line's: the largest remote status, 255 if a host could not run it, 130 after Ctrl-C), and
//! Ctrl-C while a line runs (that line's channels are closed; the sessions stay).
//! Invariants: logins and lines go through `fanout` (so `-j`, `--timeout`, keepalives and
//! host-key checks are a fan-out's); a host is logged in again only when its session ended;
//! every host of a line is named in its answer (a group, a non-zero status or a failure),
//! and every line on every host is one audit record. Must not know: the grammar's spelling
//! (`grammar`), the terminal's line editing (`input`), or how a session is made.

mod channel;
pub mod grammar;
mod input;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::FutureExt;
use tokio::signal::unix::{signal, Signal, SignalKind};

use crate::audit::{self, Action, Auditor, KeyUsed, Outcome};
use crate::config::hostlist;
use crate::config::known_hosts::KnownHostsError;
use crate::fanout::{self, HostError, HostOutcome};
use crate::key::source::{KeyLoadError, KeySource};
use crate::plan::targets::{self, HostSources};
use crate::plan::{FanoutOptions, HostPlan, SshOptions};
use crate::ssh::exec::Captured;
use crate::ssh::session::{Connection, HostKeyDb};
use crate::term::output::{self, HostRun};
use crate::term::progress::Progress;
use crate::term::{diag, tty};

use self::channel::{Ended, LineError};
use self::grammar::Request;
use self::input::{Input, InputError, Reader};

/// ssh's status for a host that could not run the line.
const FAILED: u8 = 255;
/// The status after Ctrl-C, as a shell reports a process killed by SIGINT.
const INTERRUPTED: u8 = 130;
/// How long a line may go on after its session ended, to finish with what already arrived,
/// as a fan-out's job may.
const GRACE_AFTER_SESSION_END: Duration = Duration::from_secs(2);

/// What the shell works with, resolved by the plan and `cli::app`.
pub struct Shell {
    /// To plan the hosts typed at the prompt as `-w` hosts are planned.
    pub ssh: SshOptions,
    /// `-l` and `-p`, for hosts that do not name their own.
    pub login: Option<String>,
    pub port: Option<u16>,
    pub options: FanoutOptions,
    /// Bytes of output kept per host and line (`--max-output`).
    pub capture_limit: usize,
    pub keys: Arc<KeySource>,
    pub auditor: Arc<Auditor>,
}

/// What ends the shell early; a host's failure never does.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error(transparent)]
    Key(#[from] KeyLoadError),
    #[error(transparent)]
    KnownHosts(#[from] KnownHostsError),
    #[error("cannot watch for Ctrl-C: {0}")]
    Signal(std::io::Error),
}

/// A session's identity: the same name reached as another user or on another port is
/// another session.
type SessionKey = (String, String, u16);

fn session_key(plan: &HostPlan) -> SessionKey {
    (plan.label.clone(), plan.user.clone(), plan.port)
}

struct State {
    targets: Vec<HostPlan>,
    sessions: HashMap<SessionKey, Arc<Connection>>,
    db: HostKeyDb,
    /// The last command line's status.
    status: u8,
    /// Whether stdin is a terminal (the editor reads it).
    terminal: bool,
}

/// Runs the shell on `plans` (the hosts of `-w`, `--hosts-file`, `--ec2-filter`), whose
/// host keys `db` holds, until `quit`, Ctrl-D or the end of piped input; returns the exit
/// status.
pub async fn run(shell: Shell, plans: Vec<HostPlan>, db: HostKeyDb) -> Result<u8, ShellError> {
    let terminal = tty::stdin_is_terminal();
    let mut reader = Reader::open(terminal)?;
    let mut state = State {
        targets: plans.clone(),
        sessions: HashMap::new(),
        db,
        status: 0,
        terminal,
    };
    // Ctrl-C during the first logins ends the shell, as it ends a fan-out's.
    let mut interrupt = interrupts()?;
    let failures = tokio::select! {
        failures = state.log_in(&shell, plans) => failures,
        _ = interrupt.recv() => {
            diag::error("interrupted while logging in: nothing ran");
            return Ok(INTERRUPTED);
        }
    };
    for (plan, err) in &failures {
        diag::error(output::failure_line(&plan.label, err));
    }
    if terminal {
        diag::out(format_args!(
            "{} of {} hosts logged in; type help for the shell's commands, quit or Ctrl-D to end",
            state.sessions.len(),
            state.targets.len()
        ));
    }
    loop {
        let input = if terminal {
            // The editor reads Ctrl-C as a key (the terminal is raw while it reads).
            reader.next().await?
        } else {
            let mut interrupt = interrupts()?;
            tokio::select! {
                input = reader.next() => input?,
                _ = interrupt.recv() => return Ok(INTERRUPTED),
            }
        };
        let line = match input {
            Input::End => break,
            Input::Interrupted => continue,
            Input::TooLong { number } => {
                diag::error(format_args!(
                    "{}longer than {} KiB: not run; put a long script in a file on the hosts",
                    number.map(|n| format!("line {n}: ")).unwrap_or_default(),
                    input::MAX_LINE / 1024
                ));
                state.status = FAILED;
                continue;
            }
            Input::NotText { number } => {
                diag::error(format_args!("line {number}: not UTF-8 text: not run"));
                state.status = FAILED;
                continue;
            }
            Input::Line(line) => line,
        };
        let request = grammar::parse(&line);
        if request != Request::Nothing {
            reader.remember(&line);
        }
        match request {
            Request::Nothing => {}
            Request::Quit => break,
            Request::Help => println!("{}", grammar::HELP),
            Request::Show => state.show(),
            Request::Set(list) | Request::Add(list) | Request::Remove(list) => {
                let hosts = match resolve(&shell, list).await {
                    Ok(hosts) => hosts,
                    Err(err) => {
                        diag::error(format_args!("{err}: the targets are unchanged"));
                        continue;
                    }
                };
                let targets = state.changed_targets(&request, hosts);
                if let Err(err) = state.set_targets(&shell, targets).await {
                    diag::error(format_args!("{err}: the targets are unchanged"));
                    continue;
                }
                // Hosts that join are logged in now, so that `?` and the next line tell the
                // truth about them.
                let missing = state.without_session();
                let mut interrupt = interrupts()?;
                tokio::select! {
                    failures = state.log_in(&shell, missing) => {
                        for (plan, err) in &failures {
                            diag::error(output::failure_line(&plan.label, err));
                        }
                    }
                    _ = interrupt.recv() => diag::error("interrupted: the new hosts are logged in with the next line"),
                }
            }
            Request::Run(command) => {
                let mut interrupt = interrupts()?;
                state.status = state.run_line(&shell, command, &mut interrupt).await;
                // A script's Ctrl-C stops the script, not just its current line.
                if !terminal && state.status == INTERRUPTED {
                    break;
                }
            }
        }
    }
    Ok(state.status)
}

/// A fresh Ctrl-C listener: only a Ctrl-C pressed from now on counts (one pressed at the
/// prompt is the editor's, one pressed between lines is nobody's).
fn interrupts() -> Result<Signal, ShellError> {
    signal(SignalKind::interrupt()).map_err(ShellError::Signal)
}

/// The hosts a typed hostlist (or `@group`) names, planned as `-w` hosts are.
async fn resolve(shell: &Shell, list: &str) -> Result<Vec<HostPlan>, targets::TargetError> {
    let sources = HostSources {
        hostlists: vec![list.to_owned()],
        ..HostSources::default()
    };
    let hosts = targets::resolve(&sources, shell.keys.aws_config().await).await?;
    Ok(targets::plans(
        &hosts,
        &shell.ssh,
        shell.login.as_deref(),
        shell.port,
    ))
}

/// A login failure as a line's failure for the same host.
fn widen(err: HostError<Infallible>) -> HostError<LineError> {
    match err {
        HostError::Connect(err) => HostError::Connect(err),
        HostError::Timeout { seconds } => HostError::Timeout { seconds },
        HostError::Cancelled => HostError::Cancelled,
        HostError::Lost(end) => HostError::Lost(end),
        HostError::NotStarted => HostError::NotStarted,
        HostError::Stopped => HostError::Stopped,
        HostError::Job(never) => match never {},
    }
}

impl State {
    /// Logs in to `plans` through the fan-out and keeps the sessions; returns the failures.
    async fn log_in(
        &mut self,
        shell: &Shell,
        plans: Vec<HostPlan>,
    ) -> Vec<(HostPlan, HostError<Infallible>)> {
        if plans.is_empty() {
            return Vec::new();
        }
        let outcomes = fanout::run(
            plans,
            Arc::clone(&shell.keys),
            self.db.clone(),
            &shell.options,
            |conn, _plan| async move { Ok::<_, Infallible>(Arc::new(conn)) },
        )
        .await;
        let mut failures = Vec::new();
        for outcome in outcomes {
            match outcome.result {
                Ok(conn) => {
                    diag::debug(format_args!("{}: session open", outcome.plan.label));
                    self.sessions.insert(session_key(&outcome.plan), conn);
                }
                Err(err) => failures.push((outcome.plan, err)),
            }
        }
        failures
    }

    /// The targets without a live session; sessions that ended are forgotten here.
    fn without_session(&mut self) -> Vec<HostPlan> {
        self.sessions
            .retain(|_, conn| conn.ended().now_or_never().is_none() && !conn.handle.is_closed());
        self.targets
            .iter()
            .filter(|plan| !self.sessions.contains_key(&session_key(plan)))
            .cloned()
            .collect()
    }

    /// The targets after `request` with the `hosts` it names.
    fn changed_targets(&self, request: &Request<'_>, hosts: Vec<HostPlan>) -> Vec<HostPlan> {
        let mut targets = self.targets.clone();
        match request {
            Request::Set(_) => targets = hosts,
            Request::Add(_) => {
                for plan in hosts {
                    let key = session_key(&plan);
                    if !targets.iter().any(|t| session_key(t) == key) {
                        targets.push(plan);
                    }
                }
            }
            Request::Remove(_) => {
                let gone: Vec<SessionKey> = hosts.iter().map(session_key).collect();
                targets.retain(|t| !gone.contains(&session_key(t)));
            }
            _ => {}
        }
        targets
    }

    /// Makes `targets` the targets, with their host keys read again: hosts typed at the
    /// prompt may name known_hosts files the first ones did not.
    async fn set_targets(
        &mut self,
        shell: &Shell,
        targets: Vec<HostPlan>,
    ) -> Result<(), ShellError> {
        let key = shell.keys.initial().await?;
        self.db = HostKeyDb::load(&targets, key.known_hosts.as_deref())?;
        self.targets = targets;
        Ok(())
    }

    /// `?`: the targets, and those of them without a session.
    fn show(&mut self) {
        let missing: Vec<String> = self
            .without_session()
            .into_iter()
            .map(|p| p.label)
            .collect();
        let labels: Vec<&str> = self.targets.iter().map(|p| p.label.as_str()).collect();
        diag::out(format_args!(
            "targets: {} ({})",
            if labels.is_empty() {
                "none".to_owned()
            } else {
                hostlist::compress(&labels)
            },
            labels.len()
        ));
        if !missing.is_empty() {
            let missing: Vec<&str> = missing.iter().map(String::as_str).collect();
            diag::out(format_args!(
                "without a session: {} ({}): logged in again with the next line",
                hostlist::compress(&missing),
                missing.len()
            ));
        }
    }

    /// Runs one command line on every target and prints the answers; returns its status.
    async fn run_line(&mut self, shell: &Shell, command: &str, interrupt: &mut Signal) -> u8 {
        if self.targets.is_empty() {
            diag::error("no target hosts: set some with !HOSTLIST or @GROUP (see help)");
            return FAILED;
        }
        let mut results: Vec<Option<HostOutcome<HostRun, LineError>>> =
            std::iter::repeat_with(|| None)
                .take(self.targets.len())
                .collect();
        let mut interrupted = false;
        // A session found dead when its channel is opened is logged in again and the line
        // asked once more on it; a host that fails twice is reported.
        for attempt in 0..2 {
            let missing = self.without_session();
            let failures = tokio::select! {
                failures = self.log_in(shell, missing) => failures,
                _ = interrupt.recv() => { interrupted = true; Vec::new() }
            };
            for (plan, err) in failures {
                let Some(index) = self.index_of(&plan) else {
                    continue;
                };
                audit_login_failure(&shell.auditor, &plan, command, &err);
                results[index] = Some(HostOutcome {
                    plan,
                    result: Err(widen(err)),
                    duration: Duration::ZERO,
                });
            }
            if interrupted {
                break;
            }
            let mut items = Vec::new();
            let mut indices = Vec::new();
            for (index, plan) in self.targets.iter().enumerate() {
                if results[index].is_some() {
                    continue;
                }
                if let Some(conn) = self.sessions.get(&session_key(plan)) {
                    items.push((plan.clone(), Arc::clone(conn)));
                    indices.push(index);
                }
            }
            let (outcomes, stopped) = self.on_sessions(shell, command, items, interrupt).await;
            interrupted |= stopped;
            for (index, outcome) in indices.into_iter().zip(outcomes) {
                let stale = matches!(outcome.result, Err(HostError::Job(LineError::Channel(_))));
                if stale && attempt == 0 && !interrupted {
                    self.sessions.remove(&session_key(&outcome.plan));
                    continue;
                }
                results[index] = Some(outcome);
            }
            if interrupted || results.iter().all(Option::is_some) {
                break;
            }
        }
        let outcomes: Vec<HostOutcome<HostRun, LineError>> = results
            .into_iter()
            .zip(&self.targets)
            .map(|(result, plan)| {
                result.unwrap_or_else(|| HostOutcome {
                    plan: plan.clone(),
                    result: Err(HostError::Cancelled),
                    duration: Duration::ZERO,
                })
            })
            .collect();
        if interrupted && self.terminal {
            // The terminal echoed `^C` where the cursor was; the report starts below it.
            eprintln!();
        }
        let code = report(&outcomes);
        if interrupted {
            INTERRUPTED
        } else {
            code
        }
    }

    fn index_of(&self, plan: &HostPlan) -> Option<usize> {
        let key = session_key(plan);
        self.targets.iter().position(|t| session_key(t) == key)
    }

    /// The line on open sessions, through the fan-out; Ctrl-C stops every host's command and
    /// waits for their channels to close. Returns the outcomes in `items`' order and whether
    /// the line was stopped.
    async fn on_sessions(
        &self,
        shell: &Shell,
        command: &str,
        items: Vec<(HostPlan, Arc<Connection>)>,
        interrupt: &mut Signal,
    ) -> (Vec<HostOutcome<HostRun, LineError>>, bool) {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let command: Arc<str> = Arc::from(command);
        let limit = shell.capture_limit;
        let auditor = Arc::clone(&shell.auditor);
        let line = fanout::for_each(items, &shell.options, move |plan, conn| {
            let command = Arc::clone(&command);
            let auditor = Arc::clone(&auditor);
            let mut stopped = stopped.clone();
            async move {
                let started = Instant::now();
                let stop = async move {
                    // A dropped sender never stops the line; only `true` does.
                    if stopped.wait_for(|stop| *stop).await.is_err() {
                        std::future::pending::<()>().await;
                    }
                };
                let result = on_session(&conn, &command, limit, stop).await;
                let used = KeyUsed {
                    version_id: conn.key_used.version_id.clone(),
                    fingerprint: Some(conn.key_used.key.fingerprint().to_owned()),
                };
                audit_line(
                    &auditor,
                    &plan,
                    used,
                    &command,
                    &result.as_ref(),
                    started.elapsed(),
                );
                result
            }
        });
        tokio::pin!(line);
        tokio::select! {
            outcomes = &mut line => (outcomes, false),
            _ = interrupt.recv() => {
                let _ = stop.send(true);
                (line.await, true)
            }
        }
    }
}

/// One host's line: its output captured, unless the session ends under it (then what
/// arrived within a short grace is kept, else the host fails with the session's end).
async fn on_session(
    conn: &Connection,
    command: &str,
    limit: usize,
    stop: impl std::future::Future<Output = ()>,
) -> Result<HostRun, HostError<LineError>> {
    let mut sink = Captured::with_limit(limit);
    let ended = {
        let run = channel::run(conn, command, &mut sink, stop);
        tokio::pin!(run);
        tokio::select! {
            ended = &mut run => ended,
            end = conn.ended() => match tokio::time::timeout(GRACE_AFTER_SESSION_END, run).await {
                Ok(Ok(Ended::Exit(exit))) if exit != crate::ssh::exec::RemoteExit::NoStatus => {
                    Ok(Ended::Exit(exit))
                }
                _ => return Err(HostError::Lost(end)),
            },
        }
    };
    match ended.map_err(HostError::Job)? {
        Ended::Exit(exit) => Ok(HostRun {
            exit,
            captured: Some(sink),
        }),
        Ended::Stopped => Err(HostError::Cancelled),
    }
}

/// Prints a line's answers: identical outputs once under their hostlist, then the hosts that
/// exited non-zero and those that failed; returns the line's status.
fn report(outcomes: &[HostOutcome<HostRun, LineError>]) -> u8 {
    output::print_groups(outcomes);
    let mut code = 0u8;
    for outcome in outcomes {
        if let Ok(run) = &outcome.result {
            let host_code = run.exit.code();
            if host_code != 0 {
                diag::error(format_args!(
                    "{}: {}",
                    outcome.plan.label,
                    output::describe_exit(&run.exit)
                ));
            }
            code = code.max(host_code);
        }
    }
    if output::summarize(outcomes, &Progress::new(false, outcomes.len())) > 0 {
        code = FAILED;
    }
    code
}

/// The audit record of a line on a host that could not be logged in to.
fn audit_login_failure(
    auditor: &Auditor,
    plan: &HostPlan,
    command: &str,
    err: &HostError<Infallible>,
) {
    auditor.record(&audit::Event {
        host: Some(audit_host(plan)),
        key: KeyUsed::default(),
        action: Action::Exec {
            command: Some(command.to_owned()),
            subsystem: None,
        },
        outcome: Outcome::Failed(output::failure_line(&plan.label, err)),
        exit_status: None,
        duration: Duration::ZERO,
    });
}

/// The audit record of a line on a host with a session.
fn audit_line(
    auditor: &Auditor,
    plan: &HostPlan,
    key: KeyUsed,
    command: &str,
    result: &Result<&HostRun, &HostError<LineError>>,
    duration: Duration,
) {
    auditor.record(&audit::Event {
        host: Some(audit_host(plan)),
        key,
        action: Action::Exec {
            command: Some(command.to_owned()),
            subsystem: None,
        },
        outcome: match result {
            // The command ran; its own status is `exit_status`.
            Ok(_) => Outcome::Ok,
            Err(err) => Outcome::Failed(output::failure_line(&plan.label, *err)),
        },
        exit_status: result.as_ref().ok().map(|run| i32::from(run.exit.code())),
        duration,
    });
}

fn audit_host(plan: &HostPlan) -> audit::Host {
    audit::Host {
        host: plan.hostname.clone(),
        port: plan.port,
        login: plan.user.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_plan;

    fn labels(plans: &[HostPlan]) -> Vec<&str> {
        plans.iter().map(|p| p.label.as_str()).collect()
    }

    #[test]
    fn target_changes_set_add_once_and_remove() {
        let hosts = |names: &[&str]| -> Vec<HostPlan> {
            names.iter().map(|name| test_plan(name, 22)).collect()
        };
        let state = State {
            targets: hosts(&["w1", "w2"]),
            sessions: HashMap::new(),
            db: HostKeyDb::load([], []).expect("no file to read"),
            status: 0,
            terminal: false,
        };
        let set = state.changed_targets(&Request::Set("w3"), hosts(&["w3"]));
        assert_eq!(labels(&set), ["w3"]);
        let added = state.changed_targets(&Request::Add("w[2-3]"), hosts(&["w2", "w3"]));
        assert_eq!(labels(&added), ["w1", "w2", "w3"]);
        let removed = state.changed_targets(&Request::Remove("w1"), hosts(&["w1"]));
        assert_eq!(labels(&removed), ["w2"]);
        // The same name on another port is another host.
        let other_port =
            state.changed_targets(&Request::Add("w1:2222"), vec![test_plan("w1", 2222)]);
        assert_eq!(other_port.len(), 3);
        assert_eq!(
            labels(&state.targets),
            ["w1", "w2"],
            "a change is only a proposal"
        );
    }
}
