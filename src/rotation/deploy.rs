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

use crate::exec::{self, Captured, ExecRequest, RemoteExit};
use crate::fanout::{self, FanoutOptions};
use crate::keysource::KeySource;
use crate::plan::HostPlan;
use crate::rotation::block::{self, ScriptReport};
use crate::session::HostKeyDb;

/// What the script did on one host, or why it did not run.
#[derive(Debug)]
pub struct HostResult {
    pub host: String,
    pub result: Result<ScriptReport, String>,
}

/// The shell command that runs the script read from stdin. POSIX sh, as the script is.
pub const SSH_COMMAND: &str = "/bin/sh -s";

/// Why a script run on an open session gave no verdict or a failing one.
#[derive(Debug, thiserror::Error)]
pub enum RunFailure {
    /// The session broke before the script's end was known; a fresh login may succeed.
    #[error("{0}")]
    Session(String),
    /// The script ran and failed, or its report was wrong.
    #[error("{0}")]
    Script(String),
}

/// Runs the script request on an open session.
pub async fn run_script(
    conn: &crate::session::Connection,
    request: &ExecRequest,
) -> Result<ScriptReport, RunFailure> {
    let mut sink = Captured::default();
    let exit = exec::run(conn, request, &mut sink)
        .await
        .map_err(|e| RunFailure::Session(e.to_string()))?;
    verdict(exit, &sink.stdout, &sink.stderr).map_err(RunFailure::Script)
}

/// Runs `script` on every host over SSH, logged in with `keys`.
pub async fn over_ssh(
    plans: Vec<HostPlan>,
    keys: Arc<KeySource>,
    db: HostKeyDb,
    options: &FanoutOptions,
    script: &str,
) -> Vec<HostResult> {
    let request = Arc::new(ExecRequest {
        command: Some(SSH_COMMAND.to_owned()),
        pty: false,
        forward_stdin: false,
        input: Some(Arc::from(script.as_bytes())),
    });
    let outcomes = fanout::run(plans, keys, db, options, move |conn, _plan| {
        let request = Arc::clone(&request);
        async move { run_script(&conn, &request).await.map_err(|e| e.to_string()) }
    })
    .await;
    outcomes
        .into_iter()
        .map(|outcome| HostResult {
            host: outcome.plan.label.clone(),
            result: outcome
                .result
                .map_err(|err| strip_host(&outcome.plan.label, &err.to_string())),
        })
        .collect()
}

/// The fan-out's errors start with the host already; the rotation prints `host: reason`.
fn strip_host(host: &str, message: &str) -> String {
    message
        .strip_prefix(host)
        .and_then(|rest| rest.strip_prefix(": "))
        .unwrap_or(message)
        .to_owned()
}

/// A script run's verdict from its exit status and output.
fn verdict(exit: RemoteExit, stdout: &[u8], stderr: &[u8]) -> Result<ScriptReport, String> {
    let stdout = String::from_utf8_lossy(stdout);
    match exit {
        RemoteExit::Status(0) => block::parse_report(&stdout).map_err(|e| e.to_string()),
        other => Err(script_failure(other.code().into(), stderr)),
    }
}

fn script_failure(code: i32, stderr: &[u8]) -> String {
    let stderr = String::from_utf8_lossy(stderr);
    let line = stderr
        .lines()
        .rev()
        .find(|line| line.starts_with(block::SCRIPT_ERROR_PREFIX))
        .or_else(|| stderr.lines().rev().find(|line| !line.trim().is_empty()))
        .unwrap_or("no error output");
    format!(
        "authorized_keys script failed (exit {code}): {}",
        line.trim()
    )
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

fn map_ssm_error<E, R>(operation: &'static str, err: aws_sdk_ssm::error::SdkError<E, R>) -> SsmError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let reason = crate::aws::describe_chain(&err);
    match &err {
        aws_sdk_ssm::error::SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or("HTTP error").to_owned();
            let message = service.err().message().unwrap_or("no message").to_owned();
            if code.starts_with("AccessDenied") {
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
type Verdict = Result<ScriptReport, String>;

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
            || crate::cancel::requested()
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
            result: finals.remove(&target.instance_id).unwrap_or_else(|| {
                Err(format!(
                    "SSM command did not finish within {}s: check the SSM agent on the instance",
                    deadline.as_secs()
                ))
            }),
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
            Some(block::parse_report(stdout).map_err(|e| e.to_string()))
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
        Some(other) => Some(Err(format!(
            "SSM invocation ended {}: {}",
            other.as_str(),
            invocation.status_details().unwrap_or("no details")
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts_need_exit_zero_and_a_report() {
        let ok = verdict(RemoteExit::Status(0), b"updated\nkeys: a b\n", b"");
        assert_eq!(ok.unwrap().version_ids, vec!["a", "b"]);
        let noise = verdict(RemoteExit::Status(0), b"motd\n", b"");
        assert!(noise.is_err());
        let failed = verdict(
            RemoteExit::Status(3),
            b"",
            b"bash: warning\nsmssh-authorized-keys: refused: markers\n",
        )
        .unwrap_err();
        assert!(failed.contains("exit 3"), "{failed}");
        assert!(failed.contains("refused: markers"), "{failed}");
        let killed = verdict(RemoteExit::NoStatus, b"", b"").unwrap_err();
        assert!(killed.contains("exit 255"), "{killed}");
    }

    #[test]
    fn host_prefixes_are_stripped_once() {
        assert_eq!(strip_host("h1", "h1: refused"), "refused");
        assert_eq!(strip_host("h1", "other: refused"), "other: refused");
    }
}
