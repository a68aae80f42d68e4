//! The byte streams an SSH session can run over when it is not a plain TCP connection: a
//! direct-tcpip channel of a jump host's session (ProxyJump, `-J`), and the standard input
//! and output of a proxy command (ProxyCommand). Also smssh's own `-W host:port`, which makes
//! smssh such a command for another ssh.
//!
//! Owns: keeping whatever carries a stream alive exactly as long as the stream (the jump
//! host's session, the command's process), and the proxy command's spawning. Must not know:
//! how a route was chosen (`plan`) or what the session carried over the stream does.

use std::pin::Pin;
use std::process::Stdio;
use std::task::{Context, Poll};

use russh::client::{Handle, Handler};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a proxy stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("ProxyCommand {command}: cannot start it with {shell}: {source}")]
    Spawn {
        command: String,
        shell: String,
        source: std::io::Error,
    },
    #[error("the jump host {via} cannot open a connection to {host} port {port}: {reason}: check that {host} is reachable from {via} and that its sshd allows TCP forwarding")]
    Channel {
        via: String,
        host: String,
        port: u16,
        reason: String,
    },
}

/// A byte stream that keeps `K` alive while it is in use: the jump host's session under a
/// channel, the proxy command's process under its pipes. When the session carried over the
/// stream ends, russh drops the stream, and `K` goes with it.
pub struct Carried<S, K> {
    stream: S,
    _keep: K,
}

impl<S: AsyncRead + Unpin, K: Unpin> AsyncRead for Carried<S, K> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin, K: Unpin> AsyncWrite for Carried<S, K> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// The stream of a direct-tcpip channel to `host:port` opened by the session `via`, which it
/// keeps open. `label` names the jump host in errors.
pub async fn through_jump<H: Handler>(
    via: Handle<H>,
    label: &str,
    host: &str,
    port: u16,
) -> Result<Carried<russh::ChannelStream<russh::client::Msg>, Handle<H>>, ProxyError> {
    // OpenSSH's ssh -W names 127.0.0.1 port 0 as the originator; servers log it, nothing
    // checks it.
    let channel = via
        .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0)
        .await
        .map_err(|err| ProxyError::Channel {
            via: label.to_owned(),
            host: host.to_owned(),
            port,
            reason: err.to_string(),
        })?;
    Ok(Carried {
        stream: channel.into_stream(),
        _keep: via,
    })
}

/// The stream of a running proxy command, started as OpenSSH starts it: `$SHELL -c "exec
/// COMMAND"` (`/bin/sh` without `$SHELL`), its stdin and stdout the transport, its stderr
/// ours. The command is killed when the stream is dropped.
pub fn spawn_command(
    command: &str,
) -> Result<
    Carried<
        tokio::io::Join<tokio::process::ChildStdout, tokio::process::ChildStdin>,
        tokio::process::Child,
    >,
    ProxyError,
> {
    let shell = std::env::var("SHELL")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".to_owned());
    let spawn_error = |source| ProxyError::Spawn {
        command: command.to_owned(),
        shell: shell.clone(),
        source,
    };
    let mut child = tokio::process::Command::new(&shell)
        .arg("-c")
        .arg(format!("exec {command}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(spawn_error)?;
    // Both pipes were asked for above, so both are present.
    let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
        return Err(spawn_error(std::io::Error::other("no pipe to the command")));
    };
    Ok(Carried {
        stream: tokio::io::join(stdout, stdin),
        _keep: child,
    })
}

/// `-W host:port`: copies stdin to a direct-tcpip channel to `host:port` opened by `via`, and
/// the channel to stdout, until both directions have ended. `opened` runs once the channel is
/// open, before any byte is copied.
pub async fn stdio_forward<H: Handler>(
    via: Handle<H>,
    label: &str,
    host: &str,
    port: u16,
    opened: impl FnOnce(),
) -> Result<(), ProxyError> {
    let stream = through_jump(via, label, host, port).await?;
    opened();
    let (mut from_server, mut to_server) = tokio::io::split(stream);
    let upstream = async {
        let mut stdin = tokio::io::stdin();
        let copied = tokio::io::copy(&mut stdin, &mut to_server).await;
        // The far end learns that no more is coming, as ssh -W sends EOF on the channel.
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut to_server).await;
        copied
    };
    let downstream = async {
        let mut stdout = tokio::io::stdout();
        let copied = tokio::io::copy(&mut from_server, &mut stdout).await;
        let _ = tokio::io::AsyncWriteExt::flush(&mut stdout).await;
        copied
    };
    tokio::pin!(upstream, downstream);
    // The server closing the channel ends the forward even if stdin stays open, as with ssh;
    // the end of stdin only half-closes it, and the server's answer is still copied.
    tokio::select! {
        _ = &mut upstream => {
            let _ = (&mut downstream).await;
        }
        _ = &mut downstream => {}
    }
    Ok(())
}
