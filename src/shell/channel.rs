//! One typed line on one host: a new session channel on the host's open connection, the
//! command's output kept for grouping, and, when the line is stopped (Ctrl-C), the command
//! interrupted and its channel closed while the connection stays open for the next line.
//!
//! `ssh::exec` runs a command for as long as it lives and leaves a dropped channel open on
//! the server; the shell must end one line's channels and keep the sessions, so it opens its
//! own. Owns: that channel's life. Invariant: a stopped line leaves no channel of ours open
//! (a `signal` request, which OpenSSH's sshd honours, then `close`). Must not know: how the
//! session was made, or how results are shown.

use std::future::Future;

use russh::{ChannelMsg, Sig};

use crate::ssh::exec::{Captured, OutputSink, RemoteExit};
use crate::ssh::session::Connection;

/// Why a line did not run on a host whose session was open.
#[derive(Debug, thiserror::Error)]
pub enum LineError {
    /// No channel: nothing ran (a session that just ended is logged in again and asked once
    /// more, see `shell::run_line`).
    #[error("cannot open a session channel: {0}")]
    Channel(String),
    #[error("the server refused to run the command: {0}")]
    Refused(String),
}

/// How one host's line ended.
#[derive(Debug)]
pub enum Ended {
    Exit(RemoteExit),
    /// Stopped by Ctrl-C: the channel was closed.
    Stopped,
}

/// Runs `command` on `conn` with no stdin (as a fan-out: one host must not swallow the
/// script the shell is reading), its output kept in `sink`, until it ends or `stop` resolves.
pub async fn run(
    conn: &Connection,
    command: &str,
    sink: &mut Captured,
    stop: impl Future<Output = ()>,
) -> Result<Ended, LineError> {
    let refused = |err: russh::Error| LineError::Refused(err.to_string());
    let mut channel = conn
        .handle
        .channel_open_session()
        .await
        .map_err(|err| LineError::Channel(err.to_string()))?;
    // The plan's SetEnv/SendEnv variables, as `ssh::exec` sends them: no reply asked.
    for (name, value) in &conn.env {
        channel
            .set_env(false, name.as_str(), value.as_str())
            .await
            .map_err(refused)?;
    }
    channel
        .exec(true, command.as_bytes())
        .await
        .map_err(refused)?;
    // The remote command reads end-of-file at once; a failure here means the channel is
    // already going, which the loop below sees.
    let _ = channel.eof().await;
    tokio::pin!(stop);
    let mut exit = RemoteExit::NoStatus;
    loop {
        let message = tokio::select! {
            message = channel.wait() => message,
            () = &mut stop => {
                // OpenSSH's sshd delivers a `signal` request to the command's process group;
                // closing alone would leave a command without a terminal running.
                let _ = channel.signal(Sig::INT).await;
                let _ = channel.close().await;
                sink.finish();
                return Ok(Ended::Stopped);
            }
        };
        match message {
            None | Some(ChannelMsg::Close) => break,
            Some(ChannelMsg::Data { data }) => sink.stdout(&data),
            Some(ChannelMsg::ExtendedData { data, ext: 1 }) => sink.stderr(&data),
            Some(ChannelMsg::ExitStatus { exit_status }) => exit = RemoteExit::Status(exit_status),
            Some(ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                ..
            }) => {
                exit = RemoteExit::Signal {
                    name: match signal_name {
                        Sig::Custom(name) => name,
                        // The standard names are the variants' own (`INT`, `TERM`, ...).
                        other => format!("{other:?}"),
                    },
                    core_dumped,
                }
            }
            Some(ChannelMsg::Failure) => {
                let _ = channel.close().await;
                return Err(LineError::Refused("the server said no".to_owned()));
            }
            Some(_) => {}
        }
    }
    sink.finish();
    Ok(Ended::Exit(exit))
}
