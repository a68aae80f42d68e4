//! Getting the authorized_keys script to the workers and its verdict back: over SSH through
//! the fan-out engine, or through SSM Run Command (`AWS-RunShellScript`).
//!
//! Owns: the two channels, the SSM command's life (SendCommand in batches of 50, polling
//! every invocation with GetCommandInvocation to a final status within a deadline), and turning each host's answer into
//! a [`HostResult`]. Invariants: every target yields exactly one result, in input order; a
//! host succeeds only when the script exited 0 and its report parsed. Must not know: which
//! keys the block should hold (the caller renders the script) or Secrets Manager.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use aws_sdk_ssm::error::ProvideErrorMetadata;
use aws_sdk_ssm::types::CommandInvocationStatus;
use futures::StreamExt;

use crate::audit::KeyUsed;
use crate::fanout::{self, HostError};
use crate::key::source::KeySource;
use crate::plan::{FanoutOptions, HostPlan};
use crate::rotation::block::{self, BlockError, ScriptReport};
use crate::ssh::exec::{self, Captured, ExecError, ExecRequest, RemoteExit};
use crate::ssh::session::{Connection, HostKeyDb};

/// What the script did on one host, or why it did not run.
#[derive(Debug)]
pub struct HostResult {
    pub host: String,
    /// The key the host was logged in with (none over SSM, or when no login succeeded), for
    /// the edit's audit record.
    pub key: KeyUsed,
    pub result: Result<ScriptReport, DeployFailure>,
}

/// The key each host's session logged in with, filled in by the jobs as they start.
#[derive(Clone, Default)]
pub struct LoginKeys(Arc<std::sync::Mutex<HashMap<String, KeyUsed>>>);

impl LoginKeys {
    /// Notes the key `conn` logged in to `label` with.
    pub fn note(&self, label: &str, conn: &Connection) {
        // A poisoned lock means a job panicked, which `fanout` turns into a panic of the
        // run; the note is then moot, so it is skipped rather than panicking again.
        if let Ok(mut keys) = self.0.lock() {
            keys.insert(label.to_owned(), conn.audited_key());
        }
    }

    /// The key noted for `label`, or none.
    pub fn of(&self, label: &str) -> KeyUsed {
        self.0
            .lock()
            .ok()
            .and_then(|keys| keys.get(label).cloned())
            .unwrap_or_default()
    }
}

/// Why one host has no good verdict.
#[derive(Debug, thiserror::Error)]
pub enum DeployFailure {
    /// The SSH channel: no login, a timeout, an interruption, or the script's own failure.
    #[error(transparent)]
    Ssh(HostError<RunFailure>),
    /// The SSM channel: the invocation failed or never finished.
    #[error(transparent)]
    Ssm(ScriptFailure),
}

impl DeployFailure {
    /// True when the message already names the host.
    pub fn names_host(&self) -> bool {
        matches!(self, DeployFailure::Ssh(err) if err.names_host())
    }
}

/// How the script itself failed on a host it reached.
#[derive(Debug, thiserror::Error)]
pub enum ScriptFailure {
    #[error("authorized_keys script failed (exit {code}): {line}")]
    Exit { code: i32, line: String },
    #[error(transparent)]
    Report(#[from] BlockError),
    #[error("SSM invocation ended {status}: {details}")]
    SsmEnded { status: String, details: String },
    #[error("SSM command did not finish within {seconds}s: check the SSM agent on the instance")]
    SsmDeadline { seconds: u64 },
}

/// The shell command that runs the script read from stdin. POSIX sh, as the script is.
pub const SSH_COMMAND: &str = "/bin/sh -s";

/// Why a script run on an open session gave no verdict or a failing one.
#[derive(Debug, thiserror::Error)]
pub enum RunFailure {
    /// The session broke before the script's end was known; a fresh login may succeed.
    #[error(transparent)]
    Session(ExecError),
    /// The script ran and failed, or its report was wrong.
    #[error(transparent)]
    Script(ScriptFailure),
}

/// The request that runs `script` with `sh -s`, the script on stdin.
pub fn script_request(script: &str) -> ExecRequest {
    ExecRequest {
        command: Some(SSH_COMMAND.to_owned()),
        pty: false,
        forward_stdin: false,
        input: Some(Arc::from(script.as_bytes())),
    }
}

/// Runs the script request on an open session.
pub async fn run_script(
    conn: &Connection,
    request: &ExecRequest,
) -> Result<ScriptReport, RunFailure> {
    let mut sink = Captured::default();
    let exit = exec::run(conn, request, &mut sink)
        .await
        .map_err(RunFailure::Session)?;
    verdict(exit, &sink.stdout, &sink.stderr).map_err(RunFailure::Script)
}

/// Turns the fan-out's outcomes of script runs into the rotation's host results.
pub fn host_results(
    outcomes: Vec<fanout::HostOutcome<ScriptReport, RunFailure>>,
    keys: &LoginKeys,
) -> Vec<HostResult> {
    outcomes
        .into_iter()
        .map(|outcome| HostResult {
            key: keys.of(&outcome.plan.label),
            host: outcome.plan.label,
            result: outcome.result.map_err(DeployFailure::Ssh),
        })
        .collect()
}

/// Runs `script` on every host over SSH, logged in with `keys`.
pub async fn over_ssh(
    plans: Vec<HostPlan>,
    keys: Arc<KeySource>,
    db: HostKeyDb,
    options: &FanoutOptions,
    script: &str,
) -> Vec<HostResult> {
    let request = Arc::new(script_request(script));
    let logins = LoginKeys::default();
    let noted = logins.clone();
    let outcomes = fanout::run(plans, keys, db, options, move |conn, plan| {
        let request = Arc::clone(&request);
        noted.note(&plan.label, &conn);
        async move { run_script(&conn, &request).await }
    })
    .await;
    host_results(outcomes, &logins)
}

/// A script run's verdict from its exit status and output.
fn verdict(exit: RemoteExit, stdout: &[u8], stderr: &[u8]) -> Result<ScriptReport, ScriptFailure> {
    let stdout = String::from_utf8_lossy(stdout);
    match exit {
        RemoteExit::Status(0) => Ok(block::parse_report(&stdout)?),
        other => Err(script_failure(other.code().into(), stderr)),
    }
}

fn script_failure(code: i32, stderr: &[u8]) -> ScriptFailure {
    let stderr = String::from_utf8_lossy(stderr);
    let line = stderr
        .lines()
        .rev()
        .find(|line| line.starts_with(block::SCRIPT_ERROR_PREFIX))
        .or_else(|| stderr.lines().rev().find(|line| !line.trim().is_empty()))
        .unwrap_or("no error output");
    ScriptFailure::Exit {
        code,
        line: line.trim().to_owned(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SsmError {
    #[error("ssm:{operation}: AccessDeniedException: {message}: allow ssm:{operation} in the role's policy")]
    AccessDenied {
        operation: &'static str,
        message: String,
    },
    #[error("ssm:{operation}: {code}: {message}")]
    Rejected {
        operation: &'static str,
        code: String,
        message: String,
    },
    #[error("ssm:{operation}: cannot reach SSM: {reason}: check the network, the region and AWS_ENDPOINT_URL")]
    Unreachable {
        operation: &'static str,
        reason: String,
    },
}

fn map_ssm_error<E>(operation: &'static str, err: aws_sdk_ssm::error::SdkError<E>) -> SsmError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let reason = crate::aws::describe_chain(&err);
    match &err {
        aws_sdk_ssm::error::SdkError::ServiceError(service) => {
            // As for Secrets Manager: an XML refusal leaves the SDK without a code.
            let status = service.raw().status().as_u16();
            let (code, message) = crate::aws::code_and_message(
                status,
                service.raw().body().bytes(),
                service.err().code(),
                service.err().message(),
            );
            if code.starts_with("AccessDenied") || (status == 403 && code.starts_with("HTTP ")) {
                SsmError::AccessDenied { operation, message }
            } else {
                SsmError::Rejected {
                    operation,
                    code,
                    message,
                }
            }
        }
        _ => SsmError::Unreachable { operation, reason },
    }
}

/// A host's script result: its report, or why it failed.
type Verdict = Result<ScriptReport, ScriptFailure>;

/// One instance an SSM deploy reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SsmTarget {
    pub instance_id: String,
    /// How the host is named in messages (its private address).
    pub label: String,
}

/// SendCommand accepts at most 50 instance ids per call.
const SSM_BATCH: usize = 50;
/// GetCommandInvocation calls in flight at once.
const SSM_POLLERS: usize = 16;

/// Runs `script` as root on every instance through `AWS-RunShellScript` and waits up to
/// `deadline` for every invocation to reach a final status.
pub async fn over_ssm(
    client: &aws_sdk_ssm::Client,
    targets: &[SsmTarget],
    script: &str,
    comment: &str,
    deadline: Duration,
) -> Result<Vec<HostResult>, SsmError> {
    let started = Instant::now();
    let mut commands: Vec<String> = Vec::new();
    for batch in targets.chunks(SSM_BATCH) {
        let output = client
            .send_command()
            .document_name("AWS-RunShellScript")
            .set_instance_ids(Some(batch.iter().map(|t| t.instance_id.clone()).collect()))
            .parameters("commands", vec![script.to_owned()])
            .parameters(
                "executionTimeout",
                vec![deadline.as_secs().max(30).to_string()],
            )
            .comment(comment)
            .send()
            .await
            .map_err(|err| map_ssm_error("SendCommand", err))?;
        let id = output
            .command()
            .and_then(|c| c.command_id())
            .unwrap_or_default()
            .to_owned();
        commands.push(id);
    }
    // Which command each instance was sent in.
    let sent: Vec<(&SsmTarget, &str)> = targets
        .chunks(SSM_BATCH)
        .zip(&commands)
        .flat_map(|(batch, command)| batch.iter().map(move |t| (t, command.as_str())))
        .collect();
    let mut finals: HashMap<String, Verdict> = HashMap::new();
    // Polling starts fast, because a healthy fleet answers within a second or two, and backs
    // off to 2 s so that a slow fleet does not hammer the API. GetCommandInvocation is asked
    // per instance, a few at a time: unlike ListCommandInvocations it returns the script's
    // whole output (24,000 characters rather than 2,500).
    let mut interval = Duration::from_millis(250);
    loop {
        let waiting: Vec<(&SsmTarget, &str)> = sent
            .iter()
            .filter(|(t, _)| !finals.contains_key(&t.instance_id))
            .copied()
            .collect();
        let answers: Vec<(String, Result<Option<Verdict>, SsmError>)> =
            futures::stream::iter(waiting.into_iter().map(|(target, command)| async move {
                let answer = client
                    .get_command_invocation()
                    .command_id(command)
                    .instance_id(&target.instance_id)
                    .send()
                    .await;
                let verdict = match answer {
                    Ok(invocation) => Ok(final_result(&invocation)),
                    // Right after SendCommand the invocation may not be listed yet.
                    Err(err)
                        if err
                            .as_service_error()
                            .is_some_and(|e| e.is_invocation_does_not_exist()) =>
                    {
                        Ok(None)
                    }
                    Err(err) => Err(map_ssm_error("GetCommandInvocation", err)),
                };
                (target.instance_id.clone(), verdict)
            }))
            .buffer_unordered(SSM_POLLERS)
            .collect()
            .await;
        for (instance, verdict) in answers {
            if let Some(result) = verdict? {
                finals.insert(instance, result);
            }
        }
        if finals.len() == targets.len()
            || started.elapsed() >= deadline
            || crate::term::cancel::requested()
        {
            break;
        }
        tokio::time::sleep(interval).await;
        interval = (interval * 2).min(Duration::from_secs(2));
    }
    Ok(targets
        .iter()
        .map(|target| HostResult {
            host: format!("{} ({})", target.label, target.instance_id),
            // Run Command logs in with no key of the secret's.
            key: KeyUsed::default(),
            result: finals
                .remove(&target.instance_id)
                .unwrap_or(Err(ScriptFailure::SsmDeadline {
                    seconds: deadline.as_secs(),
                }))
                .map_err(DeployFailure::Ssm),
        })
        .collect())
}

/// The verdict of one invocation, or None while it is still running.
fn final_result(
    invocation: &aws_sdk_ssm::operation::get_command_invocation::GetCommandInvocationOutput,
) -> Option<Verdict> {
    let stdout = invocation.standard_output_content().unwrap_or_default();
    let stderr = invocation.standard_error_content().unwrap_or_default();
    match invocation.status() {
        Some(CommandInvocationStatus::Success) => {
            Some(block::parse_report(stdout).map_err(ScriptFailure::Report))
        }
        Some(CommandInvocationStatus::Failed) => Some(Err(script_failure(
            invocation.response_code(),
            stderr.as_bytes(),
        ))),
        Some(CommandInvocationStatus::Pending)
        | Some(CommandInvocationStatus::InProgress)
        | Some(CommandInvocationStatus::Delayed)
        | Some(CommandInvocationStatus::Cancelling)
        | None => None,
        Some(other) => Some(Err(ScriptFailure::SsmEnded {
            status: other.as_str().to_owned(),
            details: invocation
                .status_details()
                .unwrap_or("no details")
                .to_owned(),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_need_exit_zero_and_a_report() {
        let ok = verdict(
            RemoteExit::Status(0),
            b"updated\nretired:0 watched:0\nkeys: a b\n",
            b"",
        );
        assert_eq!(ok.unwrap().version_ids, vec!["a", "b"]);
        let noise = verdict(RemoteExit::Status(0), b"motd\n", b"");
        assert!(noise.is_err());
        let failed = verdict(
            RemoteExit::Status(3),
            b"",
            b"bash: warning\nsmssh-authorized-keys: refused: markers\n",
        )
        .unwrap_err();
        assert!(
            matches!(&failed, ScriptFailure::Exit { code: 3, line } if line == "smssh-authorized-keys: refused: markers"),
            "{failed}"
        );
        let killed = verdict(RemoteExit::NoStatus, b"", b"").unwrap_err();
        assert!(
            matches!(killed, ScriptFailure::Exit { code: 255, .. }),
            "{killed}"
        );
    }
}
