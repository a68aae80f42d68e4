//! Running a remote command or shell on an authenticated connection, the way ssh does:
//! stdout and stderr streamed as they arrive, stdin forwarded, an optional PTY, and the remote
//! exit status (or 128+N for a signal) returned.
//!
//! Owns: one session channel's life and the mapping of its end to an exit code. Invariant: the
//! local terminal is left as it was found (raw mode is scoped), stdout is flushed before the
//! exit code is returned, and what a sink holds of a host's output is bounded whatever the
//! host sends (a held-back line by `MAX_LINE`, a capture by its limit). Must not know: how the
//! connection was made or which key it used.

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
    /// `--stdin-all`: the host logged in after the shared window of stdin had moved on.
    #[error("{host}: --stdin-all: stdin had moved past its first {window_mib} MiB when this host started: give -j at least the number of hosts, or send less")]
    StdinMissed { host: String, window_mib: usize },
    /// `--stdin-all`: reading the local stdin failed, so the host got only part of it.
    #[error("{host}: --stdin-all: cannot read stdin: {reason}: the host got only part of it")]
    StdinRead { host: String, reason: String },
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
        // A closed stdout (e.g. `| head`) ends our interest in the output, not the remote
        // command: keep draining for the exit status.
        let _ = write_waiting(data, false);
    }

    fn stderr(&mut self, data: &[u8]) {
        let _ = write_waiting(data, true);
    }
}

/// Writes all of `data` to our stdout or stderr, under the stream's lock and past its
/// buffer, waiting whenever the descriptor is non-blocking and full. rsync hands its ssh such
/// a stdout; a plain `write_all` would fail with EAGAIN there and lose output mid-stream,
/// where OpenSSH waits and writes the rest. The wait is a short sleep (the crate has no poll
/// binding), and the caller is already a blocking writer.
fn write_waiting(mut data: &[u8], to_stderr: bool) -> std::io::Result<()> {
    use std::io::ErrorKind;
    use std::os::fd::AsFd;
    let (stdout, stderr) = (std::io::stdout(), std::io::stderr());
    // Both locks are taken so that the text of one call is never interleaved with another
    // thread's; stdout's buffer is flushed first so that bytes keep their order.
    let mut out = stdout.lock();
    let err = stderr.lock();
    out.flush()?;
    while !data.is_empty() {
        let written = if to_stderr {
            nix::unistd::write(err.as_fd(), data)
        } else {
            nix::unistd::write(out.as_fd(), data)
        };
        match written {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(nix::errno::Errno::EAGAIN) => {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
            Err(nix::errno::Errno::EINTR) => {}
            Err(errno) => return Err(errno.into()),
        }
    }
    Ok(())
}

/// Longest line `Prefixed` holds back. A longer line, or one that never ends, is printed in
/// pieces of this size, each under the host's prefix (as pdsh does), so a host cannot make us
/// buffer without bound.
pub const MAX_LINE: usize = 64 * 1024;

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

    /// Prints every line that `data` completes and keeps the unfinished rest.
    fn emit(label: &str, pending: &mut Vec<u8>, data: &[u8], to_stderr: bool) {
        Prefixed::write(&Prefixed::complete_lines(label, pending, data), to_stderr);
    }

    /// The prefixed lines that `data` completes after `pending`, which keeps the unfinished
    /// rest (at most [`MAX_LINE`] bytes). Only the new bytes are searched for newlines, once
    /// each.
    fn complete_lines(label: &str, pending: &mut Vec<u8>, data: &[u8]) -> Vec<u8> {
        let mut text = Vec::new();
        let mut rest = data;
        while !rest.is_empty() {
            let room = MAX_LINE - pending.len();
            // One byte more than fits, so that a newline right after a full line still ends
            // that line instead of printing an empty one.
            let window = &rest[..rest.len().min(room + 1)];
            let (line, used) = match window.iter().position(|b| *b == b'\n') {
                Some(i) => (&window[..i], i + 1),
                None if window.len() > room => (&window[..room], room),
                None => {
                    pending.extend_from_slice(window);
                    break;
                }
            };
            Prefixed::push_line(&mut text, label, pending, line);
            rest = &rest[used..];
        }
        text
    }

    /// What is left of an unfinished line, prefixed and with the newline it never had.
    fn last_line(label: &str, pending: &mut Vec<u8>) -> Vec<u8> {
        let mut text = Vec::new();
        if !pending.is_empty() {
            Prefixed::push_line(&mut text, label, pending, &[]);
        }
        text
    }

    /// Appends `label: ` (nothing for an empty label: pdsh -N's whole lines without labels)
    /// and the line made of `pending` then `line`, and empties `pending`.
    fn push_line(text: &mut Vec<u8>, label: &str, pending: &mut Vec<u8>, line: &[u8]) {
        if !label.is_empty() {
            text.extend_from_slice(label.as_bytes());
            text.extend_from_slice(b": ");
        }
        text.append(pending);
        text.extend_from_slice(line);
        text.push(b'\n');
    }

    fn write(text: &[u8], to_stderr: bool) {
        if text.is_empty() {
            return;
        }
        let _ = write_waiting(text, to_stderr);
    }
}

impl OutputSink for Prefixed {
    fn stdout(&mut self, data: &[u8]) {
        Prefixed::emit(&self.label, &mut self.out, data, false);
    }

    fn stderr(&mut self, data: &[u8]) {
        Prefixed::emit(&self.label, &mut self.err, data, true);
    }

    fn finish(&mut self) {
        Prefixed::write(&Prefixed::last_line(&self.label, &mut self.out), false);
        Prefixed::write(&Prefixed::last_line(&self.label, &mut self.err), true);
    }
}

/// Bytes of output, stdout and stderr together, that `Captured` keeps per host by default.
pub const CAPTURE_LIMIT: usize = 16 * 1024 * 1024;

/// Everything kept in memory, for `--group` and `--json` (and the rotation's script), up to
/// a limit: past it, output is dropped and a line at the end of `stderr` says so.
#[derive(Debug)]
pub struct Captured {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Whether output past the limit was dropped.
    pub truncated: bool,
    limit: usize,
}

impl Default for Captured {
    fn default() -> Captured {
        Captured::with_limit(CAPTURE_LIMIT)
    }
}

impl Captured {
    /// Keeps at most `limit` bytes of stdout and stderr together.
    pub fn with_limit(limit: usize) -> Captured {
        Captured {
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated: false,
            limit,
        }
    }

    fn keep(&mut self, data: &[u8], to_stderr: bool) {
        if self.truncated {
            return;
        }
        let room = self
            .limit
            .saturating_sub(self.stdout.len() + self.stderr.len());
        let kept = &data[..data.len().min(room)];
        let limit = self.limit;
        let buffer = if to_stderr {
            &mut self.stderr
        } else {
            &mut self.stdout
        };
        // Grow by doubling as Vec does, but not past the limit: a full buffer would otherwise
        // hold up to twice the memory it needs.
        let needed = buffer.len() + kept.len();
        if needed > buffer.capacity() {
            let target = (buffer.capacity() * 2).min(limit).max(needed);
            buffer.reserve_exact(target - buffer.len());
        }
        buffer.extend_from_slice(kept);
        if kept.len() < data.len() {
            self.truncated = true;
            self.mark_truncated();
        }
    }

    /// Ends `stderr` with the line saying output was dropped, on a line of its own in the
    /// text that `--group` shows (stdout, then stderr).
    fn mark_truncated(&mut self) {
        let last = self.stderr.last().or(self.stdout.last());
        if last.is_some_and(|b| *b != b'\n') {
            self.stderr.push(b'\n');
        }
        let line = format!(
            "{}: output truncated after {}: the rest was not kept\n",
            crate::term::diag::program(),
            indicatif::BinaryBytes(self.limit as u64)
        );
        self.stderr.extend_from_slice(line.as_bytes());
    }
}

impl OutputSink for Captured {
    fn stdout(&mut self, data: &[u8]) {
        self.keep(data, false);
    }

    fn stderr(&mut self, data: &[u8]) {
        self.keep(data, true);
    }
}

/// Runs the request and sends its output to `sink`.
pub async fn run(
    conn: &Connection,
    request: &ExecRequest,
    sink: &mut dyn OutputSink,
) -> Result<RemoteExit, ExecError> {
    run_channel(conn, request, None, None, sink).await
}

/// Writes a command's stdin from elsewhere (`--stdin-all`'s shared window), given the
/// channel's writer, and ends it with end-of-file; it is stopped when the channel closes.
pub type StdinFeed = Box<
    dyn FnOnce(
            std::pin::Pin<Box<dyn tokio::io::AsyncWrite + Send>>,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>
        + Send,
>;

/// [`run`], with `feed` writing the command's stdin instead of the request's own.
pub async fn run_fed(
    conn: &Connection,
    request: &ExecRequest,
    feed: StdinFeed,
    sink: &mut dyn OutputSink,
) -> Result<RemoteExit, ExecError> {
    run_channel(conn, request, None, Some(feed), sink).await
}

/// Opens the subsystem `name` (ssh -s, e.g. `sftp`) instead of the request's command, and
/// connects it to stdin and `sink` as a command would be.
pub async fn run_subsystem(
    conn: &Connection,
    name: &str,
    request: &ExecRequest,
    sink: &mut dyn OutputSink,
) -> Result<RemoteExit, ExecError> {
    run_channel(conn, request, Some(name), None, sink).await
}

async fn run_channel(
    conn: &Connection,
    request: &ExecRequest,
    subsystem: Option<&str>,
    feed: Option<StdinFeed>,
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
    // As OpenSSH: no reply is asked for, and sshd silently drops what AcceptEnv refuses.
    for (name, value) in &conn.env {
        channel
            .set_env(false, name.as_str(), value.as_str())
            .await
            .map_err(refused("environment request"))?;
    }
    let what = match (subsystem, &request.command) {
        (Some(_), _) => "subsystem",
        (None, Some(_)) => "command",
        (None, None) => "shell",
    };
    match (subsystem, &request.command) {
        (Some(name), _) => channel
            .request_subsystem(true, name)
            .await
            .map_err(refused("subsystem"))?,
        (None, Some(command)) => channel
            .exec(true, command.as_bytes())
            .await
            .map_err(refused("command"))?,
        (None, None) => channel
            .request_shell(true)
            .await
            .map_err(refused("shell"))?,
    }
    let (mut reader, writer) = channel.split();

    // stdin is pumped on its own task: a blocking read of the terminal must not hold up output.
    let stdin_task = if let Some(feed) = feed {
        Some(tokio::spawn(feed(Box::pin(writer.make_writer()))))
    } else if let Some(input) = request.input.clone() {
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
    // Replies come in the order of the requests: the PTY's first (a refused PTY is not fatal,
    // as in ssh), then the one for the command, shell or subsystem.
    let mut pty_reply_pending = request.pty;
    let mut refusal = None;
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
            ChannelMsg::Success | ChannelMsg::Failure if pty_reply_pending => {
                pty_reply_pending = false;
            }
            ChannelMsg::Failure => {
                // ssh ends here too ("Request for subsystem 'x' failed"); the server would
                // otherwise leave the channel open with nothing running.
                refusal = Some(ExecError::Refused {
                    host: host.clone(),
                    what,
                    reason: "the server said no".to_owned(),
                });
                break;
            }
            ChannelMsg::Close => break,
            _ => {}
        }
    }
    if let Some(task) = stdin_task {
        task.abort();
    }
    sink.finish();
    refusal.map_or(Ok(exit), Err)
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

    /// Feeds `chunks` to one stream of a `Prefixed` sink and returns everything it prints.
    fn prefixed(chunks: &[&[u8]]) -> Vec<u8> {
        let mut pending = Vec::new();
        let mut text = Vec::new();
        for chunk in chunks {
            text.extend(Prefixed::complete_lines("h", &mut pending, chunk));
            assert!(
                pending.len() <= MAX_LINE,
                "{} bytes held back",
                pending.len()
            );
        }
        text.extend(Prefixed::last_line("h", &mut pending));
        text
    }

    #[test]
    fn prefixed_lines_are_whole_across_chunks() {
        assert_eq!(prefixed(&[b"a\nb", b"c\n", b"d"]), b"h: a\nh: bc\nh: d\n");
        assert_eq!(prefixed(&[b"\n\n"]), b"h: \nh: \n");
        assert_eq!(prefixed(&[]), b"");
    }

    #[test]
    fn prefixed_long_lines_are_printed_in_pieces() {
        let piece = |fill: u8| {
            let mut line = b"h: ".to_vec();
            line.extend(std::iter::repeat_n(fill, MAX_LINE));
            line.push(b'\n');
            line
        };
        // A line that never ends, in small chunks: pieces of MAX_LINE, then the rest at the end.
        let endless = vec![b'x'; 2 * MAX_LINE + 5];
        let chunks: Vec<&[u8]> = endless.chunks(1000).collect();
        let mut expected = [piece(b'x'), piece(b'x')].concat();
        expected.extend_from_slice(b"h: xxxxx\n");
        assert_eq!(prefixed(&chunks), expected);
        // A line of exactly MAX_LINE bytes keeps its own newline: no empty line after it.
        let mut exact = vec![b'y'; MAX_LINE];
        exact.extend_from_slice(b"\nz");
        assert_eq!(
            prefixed(&[&exact]),
            [piece(b'y'), b"h: z\n".to_vec()].concat()
        );
        assert_eq!(
            prefixed(&[&exact[..MAX_LINE], &exact[MAX_LINE..]]),
            [piece(b'y'), b"h: z\n".to_vec()].concat()
        );
    }

    #[test]
    fn captured_output_stops_at_the_limit_and_says_so() {
        let mut sink = Captured::with_limit(10);
        sink.stdout(b"hello");
        sink.stderr(b"wor");
        assert!(!sink.truncated);
        sink.stderr(b"ld!!");
        sink.stdout(b"more");
        assert!(sink.truncated);
        assert_eq!(sink.stdout, b"hello");
        assert_eq!(
            String::from_utf8_lossy(&sink.stderr),
            "world\nsmssh: output truncated after 10 B: the rest was not kept\n"
        );
        // Output ending with a newline gets no empty line before the marker.
        let mut sink = Captured::with_limit(3);
        sink.stdout(b"ab\ncd");
        assert_eq!(sink.stdout, b"ab\n");
        assert!(String::from_utf8_lossy(&sink.stderr).starts_with("smssh: output truncated"));
        // Within the limit, nothing changes.
        let mut sink = Captured::default();
        sink.stdout(&vec![b'x'; CAPTURE_LIMIT]);
        assert!(!sink.truncated && sink.stderr.is_empty());
        assert_eq!(sink.stdout.len(), CAPTURE_LIMIT);
    }
}
