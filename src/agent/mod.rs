//! `smssh agent`: the secret's key served over the ssh-agent protocol from memory, so that
//! OpenSSH's ssh and every tool built on it (rsync, git, Ansible, pdsh, sftp) log in with it
//! and no key file exists anywhere.
//!
//! Owns: the agent's socket (a fresh 0700 directory holding a 0600 socket, removed on every
//! way out) and the `-- COMMAND` wrapper (the command runs with SSH_AUTH_SOCK and
//! SSH_AGENT_PID set; its status is the agent's). Invariant: the key is read before the
//! command starts, and lives only in the keyring. Must not know: the wire format
//! (`ssh-agent-lib`, through `server`) or argument syntax.

pub mod confirm;
pub mod daemon;
pub mod keyring;
pub mod server;

use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};

use crate::key::source::{KeyLoadError, SecretSpec};
use keyring::Keyring;

/// What the agent serves and how.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub spec: SecretSpec,
    /// Age after which the first request reads the secret again.
    pub refresh: Duration,
    /// Stages offered besides the main key (AWSPENDING, AWSPREVIOUS during a rotation).
    pub offer_stages: Vec<String>,
    /// Ask before each signature.
    pub confirm: bool,
    /// `-t`: how long the agent serves.
    pub lifetime: Option<Duration>,
}

/// Why the agent could not start or run its command.
#[derive(Debug, thiserror::Error)]
pub enum AgentRunError {
    #[error(transparent)]
    Key(#[from] KeyLoadError),
    #[error("agent: cannot create a socket directory in {dir}: {source}")]
    SocketDir { dir: String, source: std::io::Error },
    #[error("agent: cannot listen on {path}: {source}")]
    Bind {
        path: String,
        source: std::io::Error,
    },
    #[error("agent: cannot watch for signals: {0}")]
    Signals(std::io::Error),
    #[error("agent: cannot run {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("agent: cannot wait for {program}: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Daemon(#[from] daemon::DaemonError),
}

/// The agent's socket: removed when dropped (with its directory when the agent made one),
/// so that every way out of the agent (the command's end, a signal, an error) cleans up.
#[derive(Debug)]
pub struct AgentSocket {
    /// The fresh directory holding the socket; `None` for a path given with `-a`.
    dir: Option<PathBuf>,
    socket: PathBuf,
}

impl AgentSocket {
    /// A fresh `smssh-agent-XXXXXXXXXXXX` directory (mode 0700) under `$TMPDIR` or /tmp, with
    /// the socket named `agent.PID` inside it, as ssh-agent names its own.
    pub fn fresh() -> Result<AgentSocket, AgentRunError> {
        let base = std::env::var_os("TMPDIR")
            .filter(|d| !d.is_empty())
            .map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
        let mut last = None;
        // A name that exists already (a collision, or a name planted by someone else) is
        // never reused: mkdir fails on it and another random name is tried.
        for _ in 0..8 {
            let suffix: String = (0..12)
                .map(|_| {
                    let alphabet = b"abcdefghijklmnopqrstuvwxyz0123456789";
                    char::from(alphabet[rand::random_range(0..alphabet.len())])
                })
                .collect();
            let dir = base.join(format!("smssh-agent-{suffix}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => {
                    let socket = dir.join(format!("agent.{}", std::process::id()));
                    return Ok(AgentSocket {
                        dir: Some(dir),
                        socket,
                    });
                }
                Err(err) => last = Some(err),
            }
        }
        Err(AgentRunError::SocketDir {
            dir: base.display().to_string(),
            source: last.unwrap_or_else(|| std::io::Error::other("no attempt made")),
        })
    }

    /// The socket at `path` (`-a`); its directory is the user's.
    pub fn at(path: PathBuf) -> AgentSocket {
        AgentSocket {
            dir: None,
            socket: path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.socket
    }

    /// Binds the socket and makes it 0600 (in a fresh directory, its 0700 already keeps
    /// others out between the two calls; at a given path, peers are still checked).
    fn bind(&self) -> Result<tokio::net::UnixListener, AgentRunError> {
        let bind_error = |source| AgentRunError::Bind {
            path: self.socket.display().to_string(),
            source,
        };
        let listener = tokio::net::UnixListener::bind(&self.socket).map_err(bind_error)?;
        std::fs::set_permissions(&self.socket, std::fs::Permissions::from_mode(0o600))
            .map_err(bind_error)?;
        Ok(listener)
    }
}

impl Drop for AgentSocket {
    fn drop(&mut self) {
        // Nothing else can be done about a failure here; a fresh directory is ours alone.
        let _ = std::fs::remove_file(&self.socket);
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// A serving agent: its socket, and the task that answers on it until `lifetime` (if any)
/// has passed.
#[derive(Debug)]
pub struct Serving {
    pub socket: AgentSocket,
    server: tokio::task::JoinHandle<()>,
}

impl Serving {
    /// Waits until the agent stops serving: its `-t` lifetime ended, or the listener failed.
    pub async fn ended(&mut self) {
        let _ = (&mut self.server).await;
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Reads the key, binds `socket` and serves on it. The key is read first, so that a secret
/// that cannot be read leaves no socket behind.
pub async fn start(
    options: AgentOptions,
    socket: impl FnOnce() -> Result<AgentSocket, AgentRunError>,
) -> Result<Serving, AgentRunError> {
    let keyring =
        Arc::new(Keyring::load(options.spec, options.offer_stages, options.refresh).await?);
    let socket = socket()?;
    let listener = socket.bind()?;
    let confirm = options.confirm;
    let lifetime = options.lifetime;
    let server = tokio::spawn(async move {
        let serve = server::serve(listener, keyring, confirm);
        let outcome = match lifetime {
            Some(lifetime) => tokio::time::timeout(lifetime, serve).await.ok(),
            None => Some(serve.await),
        };
        match outcome {
            Some(Err(err)) => crate::term::diag::error(format_args!("agent: {err}")),
            Some(Ok(())) => {}
            None => crate::term::diag::debug("agent: lifetime over, key forgotten"),
        }
    });
    Ok(Serving { socket, server })
}

/// The signals that stop the agent, as one future yielding the one that came.
struct StopSignals(Vec<(tokio::signal::unix::Signal, Signal)>);

impl StopSignals {
    fn watch() -> Result<StopSignals, AgentRunError> {
        let mut signals = Vec::new();
        for (kind, number) in [
            (SignalKind::terminate(), Signal::SIGTERM),
            (SignalKind::interrupt(), Signal::SIGINT),
            (SignalKind::hangup(), Signal::SIGHUP),
        ] {
            signals.push((signal(kind).map_err(AgentRunError::Signals)?, number));
        }
        Ok(StopSignals(signals))
    }

    /// The next stop signal. A signal stream ends only when the runtime shuts down, which
    /// the agent outlives; were it to happen, SIGTERM is what it would amount to.
    async fn next(&mut self) -> Signal {
        let (received, _, _) =
            futures::future::select_all(self.0.iter_mut().map(|(stream, number)| {
                Box::pin(async move { stream.recv().await.map(|_| *number) })
            }))
            .await;
        received.unwrap_or(Signal::SIGTERM)
    }
}

/// `smssh agent -- COMMAND`: reads the key, serves it on a fresh socket (or `-a`'s), runs
/// the command with SSH_AUTH_SOCK and SSH_AGENT_PID set, and returns its exit status (128+N
/// when a signal ended it). SIGTERM, SIGINT or SIGHUP to the agent is passed on to the
/// command and ends the agent with 128+N, the socket removed. When `-t` ends first, the
/// socket goes away and the command runs on without an agent.
pub async fn run_command(
    options: AgentOptions,
    socket: impl FnOnce() -> Result<AgentSocket, AgentRunError>,
    program: &OsString,
    args: &[OsString],
) -> Result<u8, AgentRunError> {
    let mut stops = StopSignals::watch()?;
    let mut serving = Some(start(options, socket).await?);
    let shown = program.to_string_lossy().into_owned();
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env(
            "SSH_AUTH_SOCK",
            serving.as_ref().map_or(Path::new(""), |s| s.socket.path()),
        )
        .env("SSH_AGENT_PID", std::process::id().to_string())
        .spawn()
        .map_err(|source| AgentRunError::Spawn {
            program: shown.clone(),
            source,
        })?;
    loop {
        tokio::select! {
            status = child.wait() => {
                return Ok(exit_code(status.map_err(|source| AgentRunError::Wait {
                    program: shown,
                    source,
                })?));
            }
            number = stops.next() => {
                if let Some(pid) = child.id().and_then(|id| i32::try_from(id).ok()) {
                    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), number);
                }
                return Ok(128 + number as u8);
            }
            () = async { if let Some(s) = serving.as_mut() { s.ended().await } else { std::future::pending().await } } => {
                // -t: the socket and the key go; the command keeps running.
                serving = None;
            }
        }
    }
}

/// Serves until a stop signal or the end of `-t`'s lifetime (the daemon forms).
pub async fn serve_until_stopped(serving: &mut Serving) -> Result<(), AgentRunError> {
    let mut stops = StopSignals::watch()?;
    tokio::select! {
        _ = stops.next() => {}
        () = serving.ended() => {}
    }
    Ok(())
}

/// A shell's view of a status: the exit code, or 128+N for signal N.
fn exit_code(status: std::process::ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(255),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(255),
        (None, None) => 255,
    }
}
