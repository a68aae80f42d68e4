//! The agent protocol on a Unix socket, through `ssh-agent-lib`: every accepted connection is
//! checked (SO_PEERCRED: the same uid or root, as ssh-agent does), its frames are bounded,
//! and a [`Connection`] answers it: the keyring's keys for REQUEST_IDENTITIES, a signature for
//! SIGN_REQUEST (after `--confirm`'s question), failure for everything else.
//!
//! Owns: who may use the agent and what each request gets. Invariant: no request changes the
//! keys (ADD, REMOVE, REMOVE_ALL, LOCK, UNLOCK and every extension answer failure); a refused
//! peer gets failure for every request and never sees a key. Must not know: where the keys
//! come from (the keyring) or how the socket's directory is made.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use ssh_agent_lib::agent::{self, ListeningSocket, Session};
use ssh_agent_lib::error::AgentError;
use ssh_agent_lib::proto::{Extension, Identity, PublicCredential, SignRequest};
use ssh_agent_lib::ssh_encoding::{Decode, Encode};
use ssh_agent_lib::ssh_key::public::KeyData;
use ssh_agent_lib::ssh_key::{Algorithm, Signature};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{UnixListener, UnixStream};

use crate::agent::confirm;
use crate::agent::keyring::{self, Keyring};
use crate::term::diag;

/// The longest request accepted, as OpenSSH's ssh-agent (AGENT_MAX_LEN, 256 KiB): a longer
/// length prefix ends the connection before anything is buffered.
pub const MAX_FRAME: usize = 256 * 1024;

/// Serves the agent protocol on `listener` until the listener fails for good.
pub async fn serve(
    listener: UnixListener,
    keyring: Arc<Keyring>,
    confirm: bool,
) -> Result<(), AgentError> {
    let factory = Factory {
        keyring,
        confirm,
        uid: nix::unistd::getuid().as_raw(),
    };
    agent::listen(Listener(listener), factory).await
}

/// The listening socket, with accept failures that pass (too many open files, an aborted
/// connection) waited out rather than ending the agent.
#[derive(Debug)]
struct Listener(UnixListener);

#[ssh_agent_lib::async_trait]
impl ListeningSocket for Listener {
    type Stream = Bounded;

    async fn accept(&mut self) -> io::Result<Bounded> {
        loop {
            match self.0.accept().await {
                Ok((stream, _)) => return Ok(Bounded::new(stream)),
                Err(err) if passing(&err) => {
                    diag::warn(format_args!("agent: cannot accept a connection: {err}"));
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => return Err(err),
            }
        }
    }
}

fn passing(err: &io::Error) -> bool {
    use nix::errno::Errno;
    err.raw_os_error().is_some_and(|code| {
        [
            Errno::EMFILE,
            Errno::ENFILE,
            Errno::ENOBUFS,
            Errno::ENOMEM,
            Errno::ECONNABORTED,
            Errno::EINTR,
        ]
        .contains(&Errno::from_raw(code))
    })
}

/// A client's stream whose frames' length prefixes are checked as the bytes pass, so that a
/// client announcing a huge request is cut off instead of making the codec buffer it.
#[derive(Debug)]
pub struct Bounded {
    stream: UnixStream,
    header: [u8; 4],
    header_len: usize,
    body_left: usize,
}

impl Bounded {
    fn new(stream: UnixStream) -> Bounded {
        Bounded {
            stream,
            header: [0; 4],
            header_len: 0,
            body_left: 0,
        }
    }

    /// Follows the frame boundaries through `bytes`, the next bytes read from the client.
    fn track(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            let n = (4 - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + n].copy_from_slice(&bytes[..n]);
            self.header_len += n;
            bytes = &bytes[n..];
            if self.header_len == 4 {
                self.header_len = 0;
                let length = u32::from_be_bytes(self.header) as usize;
                if length > MAX_FRAME {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        "agent request longer than 256 KiB",
                    ));
                }
                self.body_left = length;
            }
        }
        Ok(())
    }
}

impl AsyncRead for Bounded {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => Poll::Ready(this.track(&buf.filled()[before..])),
            other => other,
        }
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Makes one [`Connection`] per accepted client, after checking who it is.
struct Factory {
    keyring: Arc<Keyring>,
    confirm: bool,
    uid: u32,
}

impl agent::Agent<Listener> for Factory {
    fn new_session(&mut self, socket: &Bounded) -> impl Session {
        let peer = socket.stream.peer_cred();
        let admitted = match &peer {
            // As ssh-agent: the agent's own user, or root (who could read its memory anyway).
            Ok(cred) if cred.uid() == self.uid || cred.uid() == 0 => true,
            Ok(cred) => {
                diag::warn(format_args!(
                    "agent: refused a connection from uid {} (pid {}): only uid {} and root may use this agent",
                    cred.uid(),
                    cred.pid().map_or_else(|| "unknown".to_owned(), |p| p.to_string()),
                    self.uid
                ));
                false
            }
            Err(err) => {
                diag::warn(format_args!(
                    "agent: refused a connection whose peer cannot be checked: {err}"
                ));
                false
            }
        };
        Connection {
            keyring: admitted.then(|| Arc::clone(&self.keyring)),
            confirm: self.confirm,
            peer_pid: peer.ok().and_then(|cred| cred.pid()),
        }
    }
}

/// One client's session. `keyring` is `None` for a refused peer.
struct Connection {
    keyring: Option<Arc<Keyring>>,
    confirm: bool,
    peer_pid: Option<i32>,
}

#[ssh_agent_lib::async_trait]
impl Session for Connection {
    async fn request_identities(&mut self) -> Result<Vec<Identity>, AgentError> {
        let keyring = self.keyring.as_ref().ok_or(AgentError::Failure)?;
        let keys = keyring.keys().await;
        let mut identities = Vec::with_capacity(keys.len());
        for served in keys.iter() {
            let key =
                KeyData::decode(&mut served.blob.as_slice()).map_err(|_| AgentError::Failure)?;
            identities.push(Identity {
                credential: PublicCredential::Key(key),
                comment: served.comment.clone(),
            });
        }
        Ok(identities)
    }

    async fn sign(&mut self, request: SignRequest) -> Result<Signature, AgentError> {
        let keyring = self.keyring.as_ref().ok_or(AgentError::Failure)?;
        let mut wanted = Vec::new();
        request
            .credential
            .key_data()
            .encode(&mut wanted)
            .map_err(|_| AgentError::Failure)?;
        let keys = keyring.keys().await;
        let served = keys
            .iter()
            .find(|k| k.blob == wanted)
            .ok_or(AgentError::Failure)?;
        if self.confirm
            && !confirm::ask(
                &served.key.key.to_string(),
                &keyring.spec().id,
                self.peer_pid,
            )
            .await
        {
            diag::warn(format_args!(
                "agent: a signature with {} was not confirmed",
                served.key.key
            ));
            return Err(AgentError::Failure);
        }
        let signature =
            keyring::sign(&served.key, &request.data, request.flags).map_err(|err| {
                diag::warn(format_args!(
                    "agent: cannot sign with {}: {err}",
                    served.key.key
                ));
                AgentError::Failure
            })?;
        // The protocol crate speaks an older ssh-key than russh; the two agree on the wire
        // encoding, so the signature crosses as its algorithm name and bytes.
        let algorithm =
            Algorithm::new(signature.algorithm().as_str()).map_err(|_| AgentError::Failure)?;
        Signature::new(algorithm, signature.as_bytes().to_vec()).map_err(|_| AgentError::Failure)
    }

    async fn extension(&mut self, _extension: Extension) -> Result<Option<Extension>, AgentError> {
        // No extension is supported (session-bind@openssh.com included, which ssh treats as
        // optional); OpenSSH's ssh-agent answers an unknown one with plain failure too.
        Err(AgentError::Failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_frame_longer_than_the_limit_is_refused_and_shorter_ones_pass() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut bounded = Bounded::new(a);
        let ok = (MAX_FRAME as u32).to_be_bytes();
        bounded.track(&ok[..2]).unwrap();
        bounded.track(&ok[2..]).unwrap();
        bounded.track(&vec![0u8; MAX_FRAME]).unwrap();
        let too_long = (MAX_FRAME as u32 + 1).to_be_bytes();
        assert!(bounded.track(&too_long).is_err());
    }
}
