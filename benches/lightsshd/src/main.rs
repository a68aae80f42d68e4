//! lightsshd: a light SSH server for smssh's benchmarks.
//!
//! Real sshd workers on one machine spend far more CPU than the master that drives them, which
//! hides the master's own cost. This server answers thousands of hosts from one process (one
//! tokio runtime, one listener, one task per connection and no thread or process per
//! connection), so a benchmark can run smssh against 10,000 distinct loopback addresses and
//! see what smssh itself pays per host. It listens on `--listen` (by default 0.0.0.0 and a
//! port the kernel chooses, printed on the first line of stdout); Linux routes all of
//! 127.0.0.0/8 to the loopback interface, so every 127.x.y.z address reaches it. Connections
//! that come from or arrive at a non-loopback address are closed at once: a listener on
//! 0.0.0.0 is reachable from the network, and a benchmark tool has no business there.
//!
//! What it serves, after public-key authentication with the one key of `--authorized-key`
//! (any user name):
//! - `exec`: nothing runs. `true` exits 0, `false` exits 1, and any other command exits 127
//!   with one fixed line on stderr (the command is never echoed back).
//! - the `sftp` subsystem, for uploads only: files opened for writing take sequential
//!   writes into a SHA-256 and a byte count and are then forgotten except for their size;
//!   STAT, RENAME (and `posix-rename@openssh.com`), REMOVE, MKDIR, SETSTAT and REALPATH work
//!   on those names, as smscp's pushes need. Reads and listings are refused.
//!
//! Its host key (ed25519) is generated at start and only the public line is written, to
//! `--host-key-out`. On SIGTERM or SIGINT it prints its counters on stdout, one `name value`
//! line each (and `sha256 HEX COUNT` for each distinct file checksum), and exits 0.
//!
//! Bounds: at most `--max-sessions` connections at once (the rest wait in the listen backlog),
//! a handshake must finish within [`HANDSHAKE_TIMEOUT`], idle sessions close after
//! [`IDLE_TIMEOUT`], at most [`MAX_CHANNELS`] channels per connection, [`MAX_NAMES`] names and
//! [`MAX_OPEN_FILES`] open files per SFTP session, [`MAX_CHECKSUMS`] distinct checksums
//! remembered (the rest are counted), and SFTP packets of russh-sftp's default 256 KiB.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use clap::Parser;
use russh::keys::ssh_key::{Algorithm, PrivateKey, PublicKey};
use russh::server::{Auth, ChannelOpenHandle, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, ChannelOpenFailure, ChannelStream};
use russh_sftp::protocol::{
    Attrs, FileAttributes, Handle, Name, OpenFlags, Packet, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use sha2::{Digest, Sha256};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::Semaphore;

/// How long a client may take from connecting to the end of the SSH version exchange.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a session may stay silent before the server closes it.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// The listen backlog asked for; Linux caps it at net.core.somaxconn.
const BACKLOG: u32 = 4096;
/// How long the accept loop pauses after a failed accept (EMFILE, ENOBUFS), so that a
/// shortage does not turn into a busy loop.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(20);
const MAX_CHANNELS: usize = 4;
const MAX_NAMES: usize = 1024;
const MAX_OPEN_FILES: usize = 64;
const MAX_CHECKSUMS: usize = 1024;
/// The stderr line of a command this server does not run.
const NOT_RUN: &[u8] = b"lightsshd: only `true` and `false` run here\n";

/// What the command line asks for.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "A light SSH server for benchmarks: exec `true` and SFTP uploads"
)]
struct Args {
    /// Address and port to listen on; port 0 lets the kernel choose (printed on stdout).
    #[arg(long, value_name = "ADDR:PORT", default_value = "0.0.0.0:0")]
    listen: SocketAddr,
    /// The one public key accepted: a file holding an OpenSSH public key line.
    #[arg(long, value_name = "PATH")]
    authorized_key: PathBuf,
    /// Where to write the public line of the host key generated at start.
    #[arg(long, value_name = "PATH")]
    host_key_out: PathBuf,
    /// Most connections served at once; further ones wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = 20_000)]
    max_sessions: usize,
}

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
enum StartError {
    #[error("cannot read the authorized key {}: {source}", path.display())]
    ReadKey { path: PathBuf, source: io::Error },
    #[error("{} holds no OpenSSH public key line: give it a file such as id_ed25519.pub", path.display())]
    NoKey { path: PathBuf },
    #[error("cannot generate the host key: {0}")]
    HostKey(russh::keys::ssh_key::Error),
    #[error("cannot write the host key to {}: {source}", path.display())]
    WriteHostKey { path: PathBuf, source: io::Error },
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: io::Error },
    #[error("cannot start the async runtime: {0}")]
    Runtime(io::Error),
    #[error("cannot catch SIGTERM and SIGINT: {0}")]
    Signal(io::Error),
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lightsshd: {err}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), StartError> {
    raise_open_files();
    let accepted = read_authorized_key(&args.authorized_key)?;
    let host_key =
        PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).map_err(StartError::HostKey)?;
    let line = host_key
        .public_key()
        .to_openssh()
        .map_err(StartError::HostKey)?;
    std::fs::write(&args.host_key_out, format!("{line} lightsshd\n")).map_err(|source| {
        StartError::WriteHostKey {
            path: args.host_key_out.clone(),
            source,
        }
    })?;
    let config = Arc::new(russh::server::Config {
        keys: vec![host_key],
        // Rejections are for clients offering another key; a benchmark gains nothing from
        // making them slow.
        auth_rejection_time: Duration::from_millis(10),
        auth_rejection_time_initial: Some(Duration::ZERO),
        inactivity_timeout: Some(IDLE_TIMEOUT),
        nodelay: true,
        ..Default::default()
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(StartError::Runtime)?;
    let shared = Arc::new(Shared {
        accepted,
        stats: Stats::default(),
    });
    let result = runtime.block_on(async {
        let listener = listen(args.listen)?;
        let mut term = signal(SignalKind::terminate()).map_err(StartError::Signal)?;
        let mut int = signal(SignalKind::interrupt()).map_err(StartError::Signal)?;
        let bound = listener.local_addr().unwrap_or(args.listen);
        println!("listening on {bound}");
        let limit = Arc::new(Semaphore::new(args.max_sessions.max(1)));
        tokio::select! {
            () = serve(listener, config, Arc::clone(&shared), limit) => {}
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        Ok(())
    });
    // Whatever sessions are still open end with the runtime; the counters are final once
    // the signal has arrived.
    runtime.shutdown_background();
    result?;
    print!("{}", shared.stats.report());
    Ok(())
}

/// Raises the open-file soft limit to the hard one: each connection is a descriptor, and
/// the usual soft limit of 1024 would stop the server far short of 10,000 hosts. A failure
/// leaves the limit as it was; accept errors then show in the counters.
fn raise_open_files() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        if soft < hard {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        }
    }
}

/// The first public key line of `path` (blank and `#` lines skipped).
fn read_authorized_key(path: &Path) -> Result<PublicKey, StartError> {
    let text = std::fs::read_to_string(path).map_err(|source| StartError::ReadKey {
        path: path.to_owned(),
        source,
    })?;
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .find_map(|line| PublicKey::from_openssh(line).ok())
        .ok_or_else(|| StartError::NoKey {
            path: path.to_owned(),
        })
}

fn listen(addr: SocketAddr) -> Result<TcpListener, StartError> {
    let failed = |source| StartError::Listen { addr, source };
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4(),
        SocketAddr::V6(_) => TcpSocket::new_v6(),
    }
    .map_err(failed)?;
    socket.set_reuseaddr(true).map_err(failed)?;
    socket.bind(addr).map_err(failed)?;
    socket.listen(BACKLOG).map_err(failed)
}

/// Accepts connections for ever, each served by its own task while it holds a permit.
async fn serve(
    listener: TcpListener,
    config: Arc<russh::server::Config>,
    shared: Arc<Shared>,
    limit: Arc<Semaphore>,
) {
    let stats = &shared.stats;
    loop {
        // The semaphore is never closed, so acquiring fails only if it were; the loop then
        // has nothing left to do.
        let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
            return;
        };
        let (socket, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(_) => {
                Stats::add(&stats.accept_errors, 1);
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let local_is_loopback = socket.local_addr().is_ok_and(|a| a.ip().is_loopback());
        if !peer.ip().is_loopback() || !local_is_loopback {
            Stats::add(&stats.refused, 1);
            continue;
        }
        Stats::add(&stats.connections, 1);
        let open = stats.open_sessions.fetch_add(1, Ordering::Relaxed) + 1;
        stats.peak_sessions.fetch_max(open, Ordering::Relaxed);
        let config = Arc::clone(&config);
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let handler = Connection {
                shared: Arc::clone(&shared),
                channels: HashMap::new(),
            };
            let stats = &shared.stats;
            match tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                russh::server::run_stream(config, socket, handler),
            )
            .await
            {
                Ok(Ok(session)) => {
                    if session.await.is_err() {
                        Stats::add(&stats.session_errors, 1);
                    }
                }
                Ok(Err(_)) | Err(_) => Stats::add(&stats.session_errors, 1),
            }
            stats.open_sessions.fetch_sub(1, Ordering::Relaxed);
            drop(permit);
        });
    }
}

/// What every connection shares: the accepted key and the counters.
struct Shared {
    accepted: PublicKey,
    stats: Stats,
}

/// The counters printed at exit.
#[derive(Default)]
struct Stats {
    connections: AtomicU64,
    refused: AtomicU64,
    accept_errors: AtomicU64,
    session_errors: AtomicU64,
    open_sessions: AtomicU64,
    peak_sessions: AtomicU64,
    logins: AtomicU64,
    auth_rejected: AtomicU64,
    exec_true: AtomicU64,
    exec_false: AtomicU64,
    exec_other: AtomicU64,
    sftp_sessions: AtomicU64,
    files: AtomicU64,
    bytes: AtomicU64,
    sftp_refused: AtomicU64,
    checksums: Mutex<Checksums>,
}

#[derive(Default)]
struct Checksums {
    counts: BTreeMap<[u8; 32], u64>,
    /// Files whose checksum was new once [`MAX_CHECKSUMS`] were already remembered.
    overflow: u64,
}

impl Stats {
    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn record_file(&self, digest: [u8; 32], bytes: u64) {
        Stats::add(&self.files, 1);
        Stats::add(&self.bytes, bytes);
        // A poisoned lock only means another task panicked mid-update of a counter map;
        // the counts are still the best there are.
        let mut sums = self
            .checksums
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(count) = sums.counts.get_mut(&digest) {
            *count += 1;
        } else if sums.counts.len() < MAX_CHECKSUMS {
            sums.counts.insert(digest, 1);
        } else {
            sums.overflow += 1;
        }
    }

    fn report(&self) -> String {
        let mut out = String::new();
        let counters: [(&str, &AtomicU64); 15] = [
            ("connections", &self.connections),
            ("refused", &self.refused),
            ("accept_errors", &self.accept_errors),
            ("session_errors", &self.session_errors),
            ("open_sessions", &self.open_sessions),
            ("peak_sessions", &self.peak_sessions),
            ("logins", &self.logins),
            ("auth_rejected", &self.auth_rejected),
            ("exec_true", &self.exec_true),
            ("exec_false", &self.exec_false),
            ("exec_other", &self.exec_other),
            ("sftp_sessions", &self.sftp_sessions),
            ("sftp_refused", &self.sftp_refused),
            ("files", &self.files),
            ("bytes", &self.bytes),
        ];
        for (name, counter) in counters {
            out.push_str(&format!("{name} {}\n", counter.load(Ordering::Relaxed)));
        }
        let sums = self
            .checksums
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for (digest, count) in &sums.counts {
            let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
            out.push_str(&format!("sha256 {hex} {count}\n"));
        }
        out.push_str(&format!("sha256_overflow {}\n", sums.overflow));
        out
    }
}

/// One client connection.
struct Connection {
    shared: Arc<Shared>,
    /// Open session channels, kept until the client closes them.
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl Connection {
    fn accepts(&self, key: &PublicKey) -> bool {
        key.key_data() == self.shared.accepted.key_data()
    }
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        _user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if self.accepts(offer.public_key) {
            Auth::Accept
        } else {
            Stats::add(&self.shared.stats.auth_rejected, 1);
            Auth::reject()
        })
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        let stats = &self.shared.stats;
        Ok(if self.accepts(key.public_key) {
            Stats::add(&stats.logins, 1);
            Auth::Accept
        } else {
            Stats::add(&stats.auth_rejected, 1);
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if self.channels.len() >= MAX_CHANNELS {
            reply.reject(ChannelOpenFailure::ResourceShortage).await;
            return Ok(());
        }
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn channel_close(
        &mut self,
        id: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.remove(&id);
        Ok(())
    }

    async fn pty_request(
        &mut self,
        id: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(id)
    }

    async fn shell_request(
        &mut self,
        id: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(id)
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        command: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.channels.contains_key(&id) {
            return session.channel_failure(id);
        }
        let stats = &self.shared.stats;
        session.channel_success(id)?;
        let status = match command {
            b"true" => {
                Stats::add(&stats.exec_true, 1);
                0
            }
            b"false" => {
                Stats::add(&stats.exec_false, 1);
                1
            }
            _ => {
                Stats::add(&stats.exec_other, 1);
                session.extended_data(id, 1, NOT_RUN)?;
                127
            }
        };
        session.exit_status_request(id, status)?;
        session.eof(id)?;
        session.close(id)
    }

    async fn subsystem_request(
        &mut self,
        id: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(channel) = self.channels.remove(&id).filter(|_| name == "sftp") else {
            return session.channel_failure(id);
        };
        session.channel_success(id)?;
        Stats::add(&self.shared.stats.sftp_sessions, 1);
        let sink = Sink {
            shared: Arc::clone(&self.shared),
            names: HashMap::new(),
            open: HashMap::new(),
            next_handle: 0,
        };
        let stream = SftpStream {
            inner: Some(channel.into_stream()),
            handle: session.handle(),
            id,
        };
        russh_sftp::server::run(stream, sink).await;
        Ok(())
    }
}

/// The SFTP channel as a byte stream that, once russh-sftp is done with it, tells the client
/// the subsystem exited 0 before the channel closes, as sshd does when sftp-server exits
/// (OpenSSH's scp counts a session without an exit status as failed).
struct SftpStream {
    /// Always `Some` until dropped: `Drop` hands it to the task that closes the channel.
    inner: Option<ChannelStream<Msg>>,
    handle: russh::server::Handle,
    id: ChannelId,
}

impl Drop for SftpStream {
    fn drop(&mut self) {
        let Some(inner) = self.inner.take() else {
            return;
        };
        let handle = self.handle.clone();
        let id = self.id;
        // The exit status goes through the same queue as the close that dropping the channel
        // sends, so it reaches the client first. Without a runtime (the server is shutting
        // down) the channel just closes.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                let _ = handle.exit_status_request(id, 0).await;
                let _ = handle.eof(id).await;
                drop(inner);
            });
        }
    }
}

impl AsyncRead for SftpStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_read(cx, buf),
            None => Poll::Ready(Ok(())),
        }
    }
}

impl AsyncWrite for SftpStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_write(cx, buf),
            None => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.inner.as_mut() {
            Some(inner) => Pin::new(inner).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

/// One SFTP session: uploads go into checksums, and only the names and sizes remain.
struct Sink {
    shared: Arc<Shared>,
    names: HashMap<String, Node>,
    open: HashMap<String, Upload>,
    next_handle: u64,
}

#[derive(Clone, Copy)]
enum Node {
    File { size: u64 },
    Dir,
}

/// A file open for writing.
struct Upload {
    path: String,
    /// The offset the next write must start at: writes arrive in order on one SFTP channel
    /// (smscp sends them in order and russh-sftp answers them one by one), so a sink needs
    /// no buffer for out-of-order data and refuses it instead.
    next: u64,
    hasher: Sha256,
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_owned(),
        language_tag: "en-US".to_owned(),
    }
}

fn failure(message: &str) -> StatusReply {
    StatusCode::Failure.with_message(message)
}

fn attrs(node: Node) -> FileAttributes {
    let (mode, size) = match node {
        Node::File { size } => (0o100644, size),
        Node::Dir => (0o040755, 4096),
    };
    FileAttributes {
        size: Some(size),
        permissions: Some(mode),
        atime: Some(0),
        mtime: Some(0),
        ..FileAttributes::empty()
    }
}

/// The session's starting directory, by the names a client may use for it.
fn is_home(path: &str) -> bool {
    matches!(path, "" | "." | "./" | "/" | "~" | "~/")
}

impl Sink {
    fn node(&self, path: &str) -> Option<Node> {
        if is_home(path) {
            return Some(Node::Dir);
        }
        self.names.get(path).copied()
    }

    fn name(&mut self, path: String, node: Node) -> Result<(), StatusReply> {
        if self.names.len() >= MAX_NAMES && !self.names.contains_key(&path) {
            Stats::add(&self.shared.stats.sftp_refused, 1);
            return Err(failure("lightsshd: too many names in one session"));
        }
        self.names.insert(path, node);
        Ok(())
    }

    fn rename(&mut self, id: u32, from: &str, to: String) -> Result<Status, StatusReply> {
        let node = self.names.remove(from).ok_or(StatusCode::NoSuchFile)?;
        self.names.insert(to, node);
        Ok(ok(id))
    }

    fn refuse(&self) -> StatusReply {
        Stats::add(&self.shared.stats.sftp_refused, 1);
        StatusCode::OpUnsupported.into()
    }
}

/// The two strings of a `posix-rename@openssh.com` request.
fn two_strings(data: &[u8]) -> Option<(String, String)> {
    let mut rest = data;
    let mut take = || {
        let len = u32::from_be_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let text = rest.get(4..4usize.checked_add(len)?)?;
        rest = &rest[4 + len..];
        String::from_utf8(text.to_vec()).ok()
    };
    Some((take()?, take()?))
}

impl russh_sftp::server::Handler for Sink {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        self.refuse()
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        let mut version = Version::new();
        version
            .extensions
            .insert("posix-rename@openssh.com".to_owned(), "1".to_owned());
        Ok(version)
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        if !pflags.contains(OpenFlags::WRITE) {
            return Err(self.refuse());
        }
        if pflags.contains(OpenFlags::EXCLUDE) && self.node(&filename).is_some() {
            return Err(failure("File exists"));
        }
        if matches!(self.node(&filename), Some(Node::Dir)) {
            return Err(failure("Is a directory"));
        }
        if self.open.len() >= MAX_OPEN_FILES {
            Stats::add(&self.shared.stats.sftp_refused, 1);
            return Err(failure("lightsshd: too many open files in one session"));
        }
        self.name(filename.clone(), Node::File { size: 0 })?;
        self.next_handle += 1;
        let handle = format!("w{}", self.next_handle);
        let upload = Upload {
            path: filename,
            next: 0,
            hasher: Sha256::new(),
        };
        self.open.insert(handle.clone(), upload);
        Ok(Handle { id, handle })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let upload = self.open.get_mut(&handle).ok_or(StatusCode::Failure)?;
        if offset != upload.next {
            Stats::add(&self.shared.stats.sftp_refused, 1);
            return Err(failure("lightsshd: writes must arrive in order"));
        }
        upload.hasher.update(&data);
        upload.next += data.len() as u64;
        Ok(ok(id))
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        let upload = self.open.remove(&handle).ok_or(StatusCode::Failure)?;
        let size = upload.next;
        self.shared
            .stats
            .record_file(upload.hasher.finalize().into(), size);
        // The name may have been removed or renamed while the file was open; a closed
        // handle then leaves nothing behind, as with unlink(2) on an open file.
        if let Some(node) = self.names.get_mut(&upload.path) {
            *node = Node::File { size };
        }
        Ok(ok(id))
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let node = self.node(&path).ok_or(StatusCode::NoSuchFile)?;
        Ok(Attrs {
            id,
            attrs: attrs(node),
        })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.stat(id, path).await
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let upload = self.open.get(&handle).ok_or(StatusCode::Failure)?;
        Ok(Attrs {
            id,
            attrs: attrs(Node::File { size: upload.next }),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        self.node(&path).ok_or(StatusCode::NoSuchFile)?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        self.open.get(&handle).ok_or(StatusCode::Failure)?;
        Ok(ok(id))
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        match self.names.get(&filename) {
            Some(Node::File { .. }) => {
                self.names.remove(&filename);
                Ok(ok(id))
            }
            Some(Node::Dir) => Err(failure("Is a directory")),
            None => Err(StatusCode::NoSuchFile.into()),
        }
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        if self.node(&path).is_some() {
            return Err(failure("File exists"));
        }
        self.name(path, Node::Dir)?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let absolute = if is_home(&path) {
            "/".to_owned()
        } else if path.starts_with('/') {
            path
        } else {
            format!("/{path}")
        };
        Ok(Name {
            id,
            files: vec![russh_sftp::protocol::File::dummy(absolute)],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        // SFTP's own RENAME does not replace an existing file.
        if self.node(&newpath).is_some() {
            return Err(failure("File exists"));
        }
        Sink::rename(self, id, &oldpath, newpath)
    }

    async fn extended(
        &mut self,
        id: u32,
        request: String,
        data: Vec<u8>,
    ) -> Result<Packet, Self::Error> {
        if request != "posix-rename@openssh.com" {
            return Err(self.refuse());
        }
        let (from, to) = two_strings(&data).ok_or(StatusCode::BadMessage)?;
        if matches!(self.node(&to), Some(Node::Dir)) {
            return Err(failure("Is a directory"));
        }
        Sink::rename(self, id, &from, to).map(Packet::Status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn posix_rename_data_holds_two_length_prefixed_strings() {
        let mut data = Vec::new();
        for part in ["a/.f.tmp", "a/f"] {
            data.extend_from_slice(&(part.len() as u32).to_be_bytes());
            data.extend_from_slice(part.as_bytes());
        }
        assert_eq!(
            two_strings(&data),
            Some(("a/.f.tmp".to_owned(), "a/f".to_owned()))
        );
        assert_eq!(two_strings(&data[..data.len() - 1]), None);
        assert_eq!(two_strings(&[0xff, 0xff, 0xff, 0xff, b'a']), None);
    }

    #[test]
    fn a_report_names_each_distinct_checksum_once_with_its_count() {
        let stats = Stats::default();
        stats.record_file([1; 32], 10);
        stats.record_file([1; 32], 10);
        stats.record_file([2; 32], 5);
        let report = stats.report();
        assert!(report.contains("files 3\n"), "{report}");
        assert!(report.contains("bytes 25\n"), "{report}");
        assert!(
            report.contains(&format!("sha256 {} 2\n", "01".repeat(32))),
            "{report}"
        );
        assert!(
            report.contains(&format!("sha256 {} 1\n", "02".repeat(32))),
            "{report}"
        );
    }
}
