//! Running a remote command or shell on an authenticated connection, the way ssh does:
//! stdout and stderr streamed as they arrive, stdin forwarded, an optional PTY, and the remote
//! exit status (or 128+N for a signal) returned.
//!
//! Owns: one session channel's life and the mapping of its end to an exit code. Invariant: the
//! local terminal is left as it was found (raw mode is scoped), and stdout is flushed before
//! the exit code is returned. Must not know: how the connection was made or which key it used.

use std::io::Write;
use std::sync::Arc;

use russh::{ChannelMsg, Sig};
use tokio::io::AsyncReadExt;

use crate::ssh::session::Connection;

/// What to do with the remote side's terminal and our stdin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    /// None: an interactive login shell.
    pub command: Option<String>,
    pub pty: bool,
    /// false with `-n`: the remote command sees end-of-file at once.
    pub forward_stdin: bool,
    /// Bytes sent as the command's whole stdin instead of ours (the rotation's script for
    /// `sh -s`); wins over `forward_stdin`.
    pub input: Option<Arc<[u8]>>,
}

/// How the remote side ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteExit {
    Status(u32),
    Signal {
        name: String,
        core_dumped: bool,
    },
    /// The channel closed without an exit status (e.g. sshd killed).
    NoStatus,
}

impl RemoteExit {
    /// The exit code ssh users expect: the status, 128+N for a signal, 255 when unknown.
    pub fn code(&self) -> u8 {
        match self {
            RemoteExit::Status(status) => u8::try_from(*status).unwrap_or(255),
            RemoteExit::Signal { name, .. } => 128 + signal_number(name),
            RemoteExit::NoStatus => 255,
        }
    }
}

fn signal_name(sig: &Sig) -> String {
    match sig {
        Sig::ABRT => "ABRT",
        Sig::ALRM => "ALRM",
        Sig::FPE => "FPE",
        Sig::HUP => "HUP",
        Sig::ILL => "ILL",
        Sig::INT => "INT",
        Sig::KILL => "KILL",
        Sig::PIPE => "PIPE",
        Sig::QUIT => "QUIT",
        Sig::SEGV => "SEGV",
        Sig::TERM => "TERM",
        Sig::USR1 => "USR1",
        Sig::Custom(name) => name.as_str(),
    }
    .to_owned()
}

/// Linux numbers for the signal names RFC 4254 defines, plus the common custom ones.
fn signal_number(name: &str) -> u8 {
    match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "ILL" => 4,
        "ABRT" => 6,
        "FPE" => 8,
        "KILL" => 9,
        "USR1" => 10,
        "SEGV" => 11,
        "USR2" => 12,
        "PIPE" => 13,
        "ALRM" => 14,
        "TERM" => 15,
        // An unknown name still has to read as "killed by a signal" to a script.
        _ => 127,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("{host}: cannot open a session: {reason}")]
    Channel { host: String, reason: String },
    #[error("{host}: the server refused to run the {what}: {reason}")]
    Refused {
        host: String,
        what: &'static str,
        reason: String,
    },
}

/// Where a remote command's output goes.
pub trait OutputSink: Send {
    fn stdout(&mut self, data: &[u8]);
    fn stderr(&mut self, data: &[u8]);
    /// Called once when the channel ends, to flush anything held back.
    fn finish(&mut self) {}
}

/// Straight to our stdout/stderr, as ssh does.
pub struct Terminal;

impl OutputSink for Terminal {
    fn stdout(&mut self, data: &[u8]) {
        let mut out = std::io::stdout().lock();
        // A closed stdout (e.g. `| head`) ends our interest in the output, not the remote
        // command: keep draining for the exit status.
        let _ = out.write_all(data).and_then(|()| out.flush());
    }

    fn stderr(&mut self, data: &[u8]) {
        let mut err = std::io::stderr().lock();
        let _ = err.write_all(data).and_then(|()| err.flush());
    }
}

/// pdsh-style `host: line` output. Lines are written whole, under the stream's lock, so
/// lines of different hosts never interleave mid-line.
pub struct Prefixed {
    label: String,
    out: Vec<u8>,
    err: Vec<u8>,
}

impl Prefixed {
    pub fn new(label: &str) -> Prefixed {
        Prefixed {
            label: label.to_owned(),
            out: Vec::new(),
            err: Vec::new(),
        }
    }

    fn emit(label: &str, pending: &mut Vec<u8>, data: &[u8], to_stderr: bool, flush_all: bool) {
        pending.extend_from_slice(data);
        let complete = if flush_all {
            pending.len()
        } else {
            match pending.iter().rposition(|b| *b == b'\n') {
                Some(i) => i + 1,
                None => return,
            }
        };
        if complete == 0 {
            return;
        }
        let mut text = Vec::with_capacity(complete + 32);
        for line in pending[..complete].split_inclusive(|b| *b == b'\n') {
            text.extend_from_slice(label.as_bytes());
            text.extend_from_slice(b": ");
            text.extend_from_slice(line);
            if !line.ends_with(b"\n") {
                text.push(b'\n');
            }
        }
        pending.drain(..complete);
        let _ = if to_stderr {
            std::io::stderr().lock().write_all(&text)
        } else {
            std::io::stdout().lock().write_all(&text)
        };
    }
}

impl OutputSink for Prefixed {
    fn stdout(&mut self, data: &[u8]) {
        Prefixed::emit(&self.label, &mut self.out, data, false, false);
    }

    fn stderr(&mut self, data: &[u8]) {
        Prefixed::emit(&self.label, &mut self.err, data, true, false);
    }

    fn finish(&mut self) {
        Prefixed::emit(&self.label, &mut self.out, &[], false, true);
        Prefixed::emit(&self.label, &mut self.err, &[], true, true);
    }
}

/// Everything kept in memory, for `--group` and `--json`.
#[derive(Debug, Default)]
pub struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl OutputSink for Captured {
    fn stdout(&mut self, data: &[u8]) {
        self.stdout.extend_from_slice(data);
    }

    fn stderr(&mut self, data: &[u8]) {
        self.stderr.extend_from_slice(data);
    }
}

/// Runs the request and sends its output to `sink`.
pub async fn run(
    conn: &Connection,
    request: &ExecRequest,
    sink: &mut dyn OutputSink,
) -> Result<RemoteExit, ExecError> {
    let host = conn.label.clone();
    let channel = conn
        .handle
        .channel_open_session()
        .await
        .map_err(|err| ExecError::Channel {
            host: host.clone(),
            reason: err.to_string(),
        })?;
    let refused = |what: &'static str| {
        let host = host.clone();
        move |err: russh::Error| ExecError::Refused {
            host,
            what,
            reason: err.to_string(),
        }
    };
    let _raw_mode = if request.pty {
        let term = std::env::var("TERM").unwrap_or_else(|_| "xterm".to_owned());
        let (cols, rows) = crate::term::tty::size();
        channel
            .request_pty(true, &term, cols, rows, 0, 0, &[])
            .await
            .map_err(refused("PTY request"))?;
        if crate::term::tty::stdin_is_terminal() {
            crate::term::tty::RawMode::enter().ok()
        } else {
            None
        }
    } else {
        None
    };
    match &request.command {
        Some(command) => channel
            .exec(true, command.as_bytes())
            .await
            .map_err(refused("command"))?,
        None => channel
            .request_shell(true)
            .await
            .map_err(refused("shell"))?,
    }
    let (mut reader, writer) = channel.split();

    // stdin is pumped on its own task: a blocking read of the terminal must not hold up output.
    let stdin_task = if let Some(input) = request.input.clone() {
        let mut remote = writer.make_writer();
        Some(tokio::spawn(async move {
            if tokio::io::AsyncWriteExt::write_all(&mut remote, &input)
                .await
                .is_ok()
            {
                let _ = tokio::io::AsyncWriteExt::shutdown(&mut remote).await;
            }
        }))
    } else if request.forward_stdin {
        let writer_for_stdin = writer.make_writer();
        Some(tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut remote = writer_for_stdin;
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if tokio::io::AsyncWriteExt::write_all(&mut remote, &buf[..n])
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            }
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut remote).await;
        }))
    } else {
        let _ = writer.eof().await;
        None
    };

    let mut resize = if request.pty {
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change()).ok()
    } else {
        None
    };

    let mut exit = RemoteExit::NoStatus;
    loop {
        let message = tokio::select! {
            message = reader.wait() => message,
            Some(()) = async { match resize.as_mut() { Some(s) => s.recv().await, None => std::future::pending().await } } => {
                let (cols, rows) = crate::term::tty::size();
                let _ = writer.window_change(cols, rows, 0, 0).await;
                continue;
            }
        };
        let Some(message) = message else { break };
        match message {
            ChannelMsg::Data { data } => sink.stdout(&data),
            ChannelMsg::ExtendedData { data, ext: 1 } => sink.stderr(&data),
            ChannelMsg::ExitStatus { exit_status } => exit = RemoteExit::Status(exit_status),
            ChannelMsg::ExitSignal {
                signal_name: sig,
                core_dumped,
                ..
            } => {
                exit = RemoteExit::Signal {
                    name: signal_name(&sig),
                    core_dumped,
                }
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    if let Some(task) = stdin_task {
        task.abort();
    }
    sink.finish();
    Ok(exit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_ssh() {
        let cases = [
            (RemoteExit::Status(0), 0),
            (RemoteExit::Status(3), 3),
            (RemoteExit::Status(300), 255),
            (
                RemoteExit::Signal {
                    name: "TERM".into(),
                    core_dumped: false,
                },
                143,
            ),
            (
                RemoteExit::Signal {
                    name: "KILL".into(),
                    core_dumped: false,
                },
                137,
            ),
            (
                RemoteExit::Signal {
                    name: "WINCH".into(),
                    core_dumped: false,
                },
                255,
            ),
            (RemoteExit::NoStatus, 255),
        ];
        for (exit, code) in cases {
            assert_eq!(exit.code(), code, "{exit:?}");
        }
    }
}
