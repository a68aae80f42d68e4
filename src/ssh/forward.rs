//! Port forwarding over one authenticated session, as ssh's `-L`, `-D` and `-R` do it: local
//! listeners whose connections become direct-tcpip channels to a fixed `host:port` (`-L`) or
//! to the address a SOCKS 4, 4a or 5 CONNECT names (`-D`), and `tcpip-forward` requests whose
//! forwarded-tcpip channels are connected to a `host:port` on this side (`-R`).
//!
//! Owns: the forward specifications' syntax (OpenSSH's `parse_forward`), where a listener
//! binds (OpenSSH's GatewayPorts rule), the SOCKS handshake, and the bounds that keep one
//! hostile or stuck local client from hurting the others (a handshake deadline, a cap on
//! connections in flight, fixed-size reads). Must not know: how the session was made, what
//! else runs over it, or how a failure is shown to the user.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::OnceLock;
use std::time::Duration;

use futures::future::Either;
use futures::stream::{FuturesUnordered, StreamExt};
use russh::client::{ChannelOpenHandle, Handle, Handler, Msg};
use russh::Channel;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// One `-L [bind_address:]port:host:hostport` (or `LocalForward`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalForward {
    /// The bind address as written; None when the spec named none.
    pub bind: Option<String>,
    pub port: u16,
    pub host: String,
    pub host_port: u16,
}

/// One `-D [bind_address:]port` (or `DynamicForward`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DynamicForward {
    pub bind: Option<String>,
    pub port: u16,
}

/// One `-R [bind_address:]port:host:hostport` (or `RemoteForward`); port 0 asks the server to
/// choose one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteForward {
    pub bind: Option<String>,
    pub port: u16,
    pub host: String,
    pub host_port: u16,
}

/// Every forward of one invocation, with the two settings that shape them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forwards {
    pub local: Vec<LocalForward>,
    pub dynamic: Vec<DynamicForward>,
    pub remote: Vec<RemoteForward>,
    /// `GatewayPorts` (`-g`): a local listener with no bind address listens on every
    /// interface instead of loopback.
    pub gateway_ports: bool,
    /// `ExitOnForwardFailure`: a forward that cannot be set up ends smssh (255) instead of
    /// being reported and skipped.
    pub exit_on_failure: bool,
}

impl Forwards {
    pub fn is_empty(&self) -> bool {
        self.local.is_empty() && self.dynamic.is_empty() && self.remote.is_empty()
    }
}

/// Which of ssh's forward flags a specification belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForwardKind {
    Local,
    Dynamic,
    Remote,
}

impl ForwardKind {
    fn flag(self) -> char {
        match self {
            ForwardKind::Local => 'L',
            ForwardKind::Dynamic => 'D',
            ForwardKind::Remote => 'R',
        }
    }

    fn name(self) -> &'static str {
        match self {
            ForwardKind::Local => "local",
            ForwardKind::Dynamic => "dynamic",
            ForwardKind::Remote => "remote",
        }
    }
}

/// Why a forward specification is refused before anything connects.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ForwardSpecError {
    #[error("Bad {} forwarding specification '{spec}': expected {}", kind.name(), expected(*kind))]
    Bad { kind: ForwardKind, spec: String },
    #[error("-{} {spec}: forwarding to or from a Unix-domain socket is not supported: use TCP ports", kind.flag())]
    UnixSocket { kind: ForwardKind, spec: String },
    #[error("-R {0}: a remote dynamic (SOCKS) forward is not supported: use -D on the other side, or -R port:host:hostport")]
    RemoteDynamic(String),
}

fn expected(kind: ForwardKind) -> &'static str {
    match kind {
        ForwardKind::Local => "[bind_address:]port:host:hostport",
        ForwardKind::Dynamic => "[bind_address:]port",
        ForwardKind::Remote => "[bind_address:]port:host:hostport",
    }
}

/// Splits a forward specification at its colons, keeping `[...]` (an IPv6 address) whole and
/// without its brackets, as OpenSSH's `hpdelim` does.
fn fields(spec: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    let mut rest = spec;
    loop {
        let (field, after) = if let Some(bracketed) = rest.strip_prefix('[') {
            let (inside, after) = bracketed.split_once(']')?;
            if !(after.is_empty() || after.starts_with(':')) {
                return None;
            }
            (inside, after)
        } else {
            match rest.find(':') {
                Some(at) => (&rest[..at], &rest[at..]),
                None => (rest, ""),
            }
        };
        out.push(field.to_owned());
        match after.strip_prefix(':') {
            Some(next) => rest = next,
            None => return Some(out),
        }
    }
}

fn port(text: &str, zero_allowed: bool) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse::<u16>().ok().filter(|&p| p != 0 || zero_allowed)
}

/// The parts of `[bind:]port:host:hostport`; `zero_port` allows a listening port of 0.
fn parse_fixed(
    kind: ForwardKind,
    spec: &str,
    zero_port: bool,
) -> Result<(Option<String>, u16, String, u16), ForwardSpecError> {
    let bad = || ForwardSpecError::Bad {
        kind,
        spec: spec.to_owned(),
    };
    if spec.contains('/') {
        return Err(ForwardSpecError::UnixSocket {
            kind,
            spec: spec.to_owned(),
        });
    }
    let parts = fields(spec).ok_or_else(bad)?;
    let (bind, rest) = match parts.len() {
        3 => (None, &parts[..]),
        4 => (Some(parts[0].clone()), &parts[1..]),
        1 | 2 if kind == ForwardKind::Remote => {
            return Err(ForwardSpecError::RemoteDynamic(spec.to_owned()))
        }
        _ => return Err(bad()),
    };
    let listen = port(&rest[0], zero_port).ok_or_else(bad)?;
    let target = port(&rest[2], false).ok_or_else(bad)?;
    if rest[1].is_empty() {
        return Err(bad());
    }
    Ok((bind, listen, rest[1].clone(), target))
}

/// `-L [bind_address:]port:host:hostport`.
pub fn parse_local(spec: &str) -> Result<LocalForward, ForwardSpecError> {
    let (bind, port, host, host_port) = parse_fixed(ForwardKind::Local, spec, false)?;
    Ok(LocalForward {
        bind,
        port,
        host,
        host_port,
    })
}

/// `-R [bind_address:]port:host:hostport`.
pub fn parse_remote(spec: &str) -> Result<RemoteForward, ForwardSpecError> {
    let (bind, port, host, host_port) = parse_fixed(ForwardKind::Remote, spec, true)?;
    Ok(RemoteForward {
        bind,
        port,
        host,
        host_port,
    })
}

/// `-D [bind_address:]port`.
pub fn parse_dynamic(spec: &str) -> Result<DynamicForward, ForwardSpecError> {
    let kind = ForwardKind::Dynamic;
    let bad = || ForwardSpecError::Bad {
        kind,
        spec: spec.to_owned(),
    };
    if spec.contains('/') {
        return Err(ForwardSpecError::UnixSocket {
            kind,
            spec: spec.to_owned(),
        });
    }
    let parts = fields(spec).ok_or_else(bad)?;
    let (bind, listen) = match parts.as_slice() {
        [port_text] => (None, port_text),
        [bind, port_text] => (Some(bind.clone()), port_text),
        _ => return Err(bad()),
    };
    Ok(DynamicForward {
        bind,
        port: port(listen, false).ok_or_else(bad)?,
    })
}

/// Where a local listener binds, by OpenSSH's client rule (`channel_fwd_bind_addr`): no
/// address means loopback, or every interface with GatewayPorts; `""` and `*` mean every
/// interface; `localhost` means loopback in both families; any other address is bound as
/// given, whatever GatewayPorts says.
fn listen_addresses(
    bind: Option<&str>,
    port: u16,
    gateway_ports: bool,
) -> std::io::Result<Vec<SocketAddr>> {
    let loopback = || {
        vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port),
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::LOCALHOST), port),
        ]
    };
    let wildcard = || {
        vec![
            SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), port),
        ]
    };
    match bind {
        None if gateway_ports => Ok(wildcard()),
        None | Some("localhost") => Ok(loopback()),
        Some("" | "*") => Ok(wildcard()),
        Some(address) => {
            use std::net::ToSocketAddrs;
            Ok((address, port).to_socket_addrs()?.collect())
        }
    }
}

/// The bind address a `tcpip-forward` request names, as OpenSSH's `channel_rfwd_bind_host`:
/// `localhost` when none was given, `""` (every interface, if the server's GatewayPorts
/// allows) for `*` or an empty one.
fn remote_bind(bind: Option<&str>) -> &str {
    match bind {
        None => "localhost",
        Some("*") => "",
        Some(address) => address,
    }
}

/// A forward that could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("-{flag} {spec}: cannot listen on port {port}: {reason}")]
    Listen {
        flag: char,
        spec: String,
        port: u16,
        reason: String,
    },
    #[error("-R {spec}: remote port forwarding failed for listen port {port}: {reason}")]
    Remote {
        spec: String,
        port: u16,
        reason: String,
    },
}

/// What a local listener's connections go to.
#[derive(Debug, Clone)]
enum Target {
    Fixed { host: String, port: u16 },
    Socks,
}

/// A `tcpip-forward` the server granted, and where its connections go.
#[derive(Debug, Clone)]
struct Granted {
    /// The port the server listens on (the one it allocated for a request of port 0).
    port: u32,
    host: String,
    host_port: u16,
}

/// A forwarded-tcpip channel the server opened, handed from the session's handler to
/// [`serve`].
pub struct Forwarded {
    channel: Channel<Msg>,
    reply: ChannelOpenHandle,
    listen_port: u32,
}

/// At most this many forwarded-tcpip channels wait for [`serve`]; a server that opens more
/// at once has the rest refused, so it cannot grow memory.
const INBOX_CAPACITY: usize = 64;

/// The one inbox for forwarded-tcpip channels. A process has at most one session that asks
/// for remote forwards (smssh's destination), and the handler that receives the channels is
/// built before anyone knows whether it will; a channel that arrives with no `-R` granted is
/// refused.
static INBOX: OnceLock<mpsc::Sender<Forwarded>> = OnceLock::new();

/// Called by the session's handler for each forwarded-tcpip channel the server opens.
pub fn deliver(channel: Channel<Msg>, reply: ChannelOpenHandle, listen_port: u32) {
    let forwarded = Forwarded {
        channel,
        reply,
        listen_port,
    };
    // With no inbox (no -R) or a full one, the channel and its reply are dropped, which
    // refuses the open.
    if let Some(inbox) = INBOX.get() {
        let _ = inbox.try_send(forwarded);
    }
}

/// Listeners bound and remote forwards granted, ready for [`serve`].
pub struct Established {
    listeners: Vec<(TcpListener, Target, String)>,
    granted: Vec<Granted>,
    inbox: Option<mpsc::Receiver<Forwarded>>,
}

/// Binds every local listener and requests every remote forward. A failure ends everything
/// with ExitOnForwardFailure, and is otherwise passed to `warn` and skipped, as in ssh.
pub async fn establish<H: Handler>(
    handle: &Handle<H>,
    forwards: &Forwards,
    warn: impl Fn(ForwardError),
) -> Result<Established, ForwardError> {
    let fail = |err: ForwardError| {
        if forwards.exit_on_failure {
            Err(err)
        } else {
            warn(err);
            Ok(())
        }
    };
    let mut listeners = Vec::new();
    let locals = forwards.local.iter().map(|f| {
        let spec = match &f.bind {
            Some(bind) => format!("{bind}:{}:{}:{}", f.port, f.host, f.host_port),
            None => format!("{}:{}:{}", f.port, f.host, f.host_port),
        };
        let target = Target::Fixed {
            host: f.host.clone(),
            port: f.host_port,
        };
        ('L', spec, f.bind.as_deref(), f.port, target)
    });
    let dynamics = forwards.dynamic.iter().map(|f| {
        let spec = match &f.bind {
            Some(bind) => format!("{bind}:{}", f.port),
            None => f.port.to_string(),
        };
        ('D', spec, f.bind.as_deref(), f.port, Target::Socks)
    });
    for (flag, spec, bind, port, target) in locals.chain(dynamics) {
        match bind_all(bind, port, forwards.gateway_ports).await {
            Ok(bound) => listeners.extend(
                bound
                    .into_iter()
                    .map(|listener| (listener, target.clone(), format!("-{flag} {spec}"))),
            ),
            Err(reason) => fail(ForwardError::Listen {
                flag,
                spec,
                port,
                reason,
            })?,
        }
    }
    let mut granted = Vec::new();
    let mut inbox = None;
    if !forwards.remote.is_empty() {
        let (sender, receiver) = mpsc::channel(INBOX_CAPACITY);
        // Only the first -R session of a process gets the inbox; smssh has one.
        if INBOX.set(sender).is_ok() {
            inbox = Some(receiver);
        }
    }
    for f in &forwards.remote {
        let spec = match &f.bind {
            Some(bind) => format!("{bind}:{}:{}:{}", f.port, f.host, f.host_port),
            None => format!("{}:{}:{}", f.port, f.host, f.host_port),
        };
        match handle
            .tcpip_forward(remote_bind(f.bind.as_deref()), u32::from(f.port))
            .await
        {
            Ok(allocated) => {
                let port = if f.port == 0 {
                    crate::term::diag::warn(format_args!(
                        "Allocated port {allocated} for remote forward to {}:{}",
                        f.host, f.host_port
                    ));
                    allocated
                } else {
                    u32::from(f.port)
                };
                granted.push(Granted {
                    port,
                    host: f.host.clone(),
                    host_port: f.host_port,
                });
            }
            Err(err) => fail(ForwardError::Remote {
                spec,
                port: f.port,
                reason: err.to_string(),
            })?,
        }
    }
    Ok(Established {
        listeners,
        granted,
        inbox,
    })
}

/// Binds `port` on every address the bind rule names; succeeds if at least one binds (a host
/// without IPv6 still gets its IPv4 loopback listener, as with ssh).
async fn bind_all(
    bind: Option<&str>,
    port: u16,
    gateway_ports: bool,
) -> Result<Vec<TcpListener>, String> {
    let addresses = listen_addresses(bind, port, gateway_ports).map_err(|e| e.to_string())?;
    let mut bound = Vec::new();
    let mut last_error = None;
    for address in addresses {
        let socket = match address {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
        };
        let listener = socket.and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(address)?;
            socket.listen(128)
        });
        match listener {
            Ok(listener) => bound.push(listener),
            Err(err) => last_error = Some(format!("{address}: {err}")),
        }
    }
    if bound.is_empty() {
        Err(last_error.unwrap_or_else(|| "no address to listen on".to_owned()))
    } else {
        Ok(bound)
    }
}

/// How long a SOCKS client may take to say where it wants to go.
const SOCKS_HANDSHAKE_DEADLINE: Duration = Duration::from_secs(30);

/// The most forwarded connections open at once; more are closed as they arrive, so a local
/// flood cannot exhaust memory or file descriptors.
const MAX_CONNECTIONS: usize = 4096;

/// How often [`serve`] checks whether the session has ended.
const SESSION_POLL: Duration = Duration::from_millis(500);

/// Carries the forwards' connections until the session ends. `report` receives one line
/// per connection that could not be forwarded.
pub async fn serve<H: Handler>(
    handle: &Handle<H>,
    established: Established,
    report: impl Fn(String),
) {
    let Established {
        listeners,
        granted,
        mut inbox,
    } = established;
    // Each listener accepts on its own task (which needs nothing of the session), so one
    // slow accept never holds another back; the tasks end with this future.
    let (accepted_tx, mut accepted) = mpsc::channel::<(TcpStream, SocketAddr, usize)>(64);
    let targets: Vec<(Target, String)> = listeners
        .iter()
        .map(|(_, target, label)| (target.clone(), label.clone()))
        .collect();
    let acceptors: Vec<_> = listeners
        .into_iter()
        .enumerate()
        .map(|(index, (listener, _, _))| {
            let accepted_tx = accepted_tx.clone();
            AbortOnDrop(tokio::spawn(async move {
                loop {
                    if let Ok((stream, peer)) = listener.accept().await {
                        if accepted_tx.send((stream, peer, index)).await.is_err() {
                            return;
                        }
                    }
                }
            }))
        })
        .collect();
    drop(accepted_tx);
    let mut connections = FuturesUnordered::new();
    let mut poll = tokio::time::interval(SESSION_POLL);
    loop {
        tokio::select! {
            Some((stream, peer, index)) = accepted.recv() => {
                if connections.len() >= MAX_CONNECTIONS {
                    report(format!("{}: {MAX_CONNECTIONS} connections already open: closing the one from {peer}", targets[index].1));
                    continue;
                }
                let (target, label) = &targets[index];
                connections.push(Either::Left(forward_local(handle, stream, peer, target.clone(), label.clone())));
            }
            Some(forwarded) = recv(&mut inbox) => {
                match granted.iter().find(|g| g.port == forwarded.listen_port) {
                    Some(granted) if connections.len() < MAX_CONNECTIONS => {
                        connections.push(Either::Right(forward_remote(forwarded, granted.clone())));
                    }
                    // A channel for a port we never asked for, or one too many: refused by
                    // dropping its reply.
                    _ => drop(forwarded),
                }
            }
            Some(outcome) = connections.next() => {
                if let Err(unforwarded) = outcome {
                    report(unforwarded.line);
                }
            }
            _ = poll.tick() => {
                if handle.is_closed() {
                    break;
                }
            }
        }
    }
    drop(acceptors);
}

async fn recv(inbox: &mut Option<mpsc::Receiver<Forwarded>>) -> Option<Forwarded> {
    match inbox {
        Some(inbox) => inbox.recv().await,
        None => std::future::pending().await,
    }
}

/// A spawned task that ends when this is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Why a connection could not be forwarded. A local connection travels with the line so
/// that it is closed only after the line is written: whoever sees the close (a script, a
/// test) then also finds the reason on stderr.
struct Unforwarded {
    line: String,
    _held_open: Option<TcpStream>,
}

/// One local connection: the SOCKS handshake for `-D`, then a direct-tcpip channel, then
/// bytes both ways until both sides are done.
async fn forward_local<H: Handler>(
    handle: &Handle<H>,
    mut stream: TcpStream,
    peer: SocketAddr,
    target: Target,
    label: String,
) -> Result<(), Unforwarded> {
    let _ = stream.set_nodelay(true);
    let (host, port, socks) = match target {
        Target::Fixed { host, port } => (host, port, None),
        Target::Socks => {
            match tokio::time::timeout(SOCKS_HANDSHAKE_DEADLINE, socks_request(&mut stream)).await {
                Ok(Ok(request)) => (request.host.clone(), request.port, Some(request)),
                // A client that speaks no SOCKS, or too slowly, is simply closed.
                Ok(Err(_)) | Err(_) => return Ok(()),
            }
        }
    };
    let channel = handle
        .channel_open_direct_tcpip(
            host.as_str(),
            u32::from(port),
            peer.ip().to_string(),
            u32::from(peer.port()),
        )
        .await;
    let channel = match channel {
        Ok(channel) => channel,
        Err(err) => {
            if let Some(request) = socks {
                let _ = stream.write_all(&request.reply(false)).await;
            }
            return Err(Unforwarded {
                line: format!("{label}: the server could not connect to {host} port {port}: {err}"),
                _held_open: Some(stream),
            });
        }
    };
    if let Some(request) = socks {
        if stream.write_all(&request.reply(true)).await.is_err() {
            return Ok(());
        }
    }
    let mut channel = channel.into_stream();
    let _ = tokio::io::copy_bidirectional(&mut stream, &mut channel).await;
    Ok(())
}

/// One forwarded-tcpip channel: a TCP connection to the forward's local target, then bytes
/// both ways.
async fn forward_remote(forwarded: Forwarded, granted: Granted) -> Result<(), Unforwarded> {
    let target = (granted.host.as_str(), granted.host_port);
    match TcpStream::connect(target).await {
        Ok(mut stream) => {
            let _ = stream.set_nodelay(true);
            forwarded.reply.accept().await;
            let mut channel = forwarded.channel.into_stream();
            let _ = tokio::io::copy_bidirectional(&mut stream, &mut channel).await;
            Ok(())
        }
        Err(err) => {
            // Dropping the reply refuses the channel, as ssh does when its connect fails.
            drop(forwarded);
            Err(Unforwarded {
                line: format!(
                    "-R port {}: cannot connect to {} port {}: {err}",
                    granted.port, granted.host, granted.host_port
                ),
                _held_open: None,
            })
        }
    }
}

/// What a SOCKS client asked to CONNECT to, and which version answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct SocksRequest {
    version: u8,
    host: String,
    port: u16,
}

impl SocksRequest {
    /// The reply to send once the channel opened (`ok`) or failed. The bound address is
    /// zero, as ssh sends it: the client learns nothing of the server's side.
    fn reply(&self, ok: bool) -> Vec<u8> {
        if self.version == 5 {
            vec![5, if ok { 0 } else { 1 }, 0, 1, 0, 0, 0, 0, 0, 0]
        } else {
            vec![0, if ok { 0x5a } else { 0x5b }, 0, 0, 0, 0, 0, 0]
        }
    }
}

/// Why a SOCKS handshake was given up.
#[derive(Debug)]
enum SocksError {
    Io,
    Protocol,
}

impl From<std::io::Error> for SocksError {
    fn from(_: std::io::Error) -> SocksError {
        SocksError::Io
    }
}

/// The longest user id or host name a SOCKS 4/4a request may carry; SOCKS 5 names are at
/// most 255 bytes by construction.
const SOCKS4_FIELD_MAX: usize = 255;

/// Reads a SOCKS 4, 4a or 5 CONNECT request (no authentication), answering SOCKS 5's method
/// negotiation. Every read has a fixed size, so a client cannot make it allocate more.
async fn socks_request<S>(stream: &mut S) -> Result<SocksRequest, SocksError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match stream.read_u8().await? {
        4 => socks4_request(stream).await,
        5 => socks5_request(stream).await,
        _ => Err(SocksError::Protocol),
    }
}

async fn socks4_request<S>(stream: &mut S) -> Result<SocksRequest, SocksError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut head = [0u8; 7];
    stream.read_exact(&mut head).await?;
    let [command, port_hi, port_lo, a, b, c, d] = head;
    let port = u16::from_be_bytes([port_hi, port_lo]);
    // The user id is read and ignored, as ssh does.
    read_nul_terminated(stream).await?;
    if command != 1 {
        let _ = stream.write_all(&[0, 0x5b, 0, 0, 0, 0, 0, 0]).await;
        return Err(SocksError::Protocol);
    }
    // SOCKS 4a: an address 0.0.0.x (x not 0) means a host name follows.
    let host = if a == 0 && b == 0 && c == 0 && d != 0 {
        let name = read_nul_terminated(stream).await?;
        String::from_utf8(name).map_err(|_| SocksError::Protocol)?
    } else {
        Ipv4Addr::new(a, b, c, d).to_string()
    };
    if host.is_empty() {
        return Err(SocksError::Protocol);
    }
    Ok(SocksRequest {
        version: 4,
        host,
        port,
    })
}

async fn read_nul_terminated<S>(stream: &mut S) -> Result<Vec<u8>, SocksError>
where
    S: tokio::io::AsyncRead + Unpin,
{
    let mut out = Vec::new();
    loop {
        match stream.read_u8().await? {
            0 => return Ok(out),
            _ if out.len() >= SOCKS4_FIELD_MAX => return Err(SocksError::Protocol),
            byte => out.push(byte),
        }
    }
}

async fn socks5_request<S>(stream: &mut S) -> Result<SocksRequest, SocksError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let count = usize::from(stream.read_u8().await?);
    let mut methods = [0u8; 255];
    stream.read_exact(&mut methods[..count]).await?;
    // Method 0 is "no authentication"; ssh offers nothing else.
    if !methods[..count].contains(&0) {
        let _ = stream.write_all(&[5, 0xff]).await;
        return Err(SocksError::Protocol);
    }
    stream.write_all(&[5, 0]).await?;
    let mut head = [0u8; 4];
    stream.read_exact(&mut head).await?;
    let [version, command, _reserved, address_type] = head;
    if version != 5 {
        return Err(SocksError::Protocol);
    }
    let host = match address_type {
        1 => {
            let mut ip = [0u8; 4];
            stream.read_exact(&mut ip).await?;
            Ipv4Addr::from(ip).to_string()
        }
        3 => {
            let length = usize::from(stream.read_u8().await?);
            let mut name = [0u8; 255];
            stream.read_exact(&mut name[..length]).await?;
            String::from_utf8(name[..length].to_vec()).map_err(|_| SocksError::Protocol)?
        }
        4 => {
            let mut ip = [0u8; 16];
            stream.read_exact(&mut ip).await?;
            std::net::Ipv6Addr::from(ip).to_string()
        }
        _ => {
            let _ = stream.write_all(&[5, 8, 0, 1, 0, 0, 0, 0, 0, 0]).await;
            return Err(SocksError::Protocol);
        }
    };
    let port = stream.read_u16().await?;
    if command != 1 {
        // Only CONNECT: BIND and UDP ASSOCIATE are answered "command not supported".
        let _ = stream.write_all(&[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]).await;
        return Err(SocksError::Protocol);
    }
    if host.is_empty() {
        return Err(SocksError::Protocol);
    }
    Ok(SocksRequest {
        version: 5,
        host,
        port,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_specs_parse_as_openssh_reads_them() {
        let ok = |spec: &str, bind: Option<&str>, port, host: &str, host_port| {
            assert_eq!(
                parse_local(spec),
                Ok(LocalForward {
                    bind: bind.map(str::to_owned),
                    port,
                    host: host.to_owned(),
                    host_port,
                }),
                "{spec}"
            );
        };
        ok("8080:web:80", None, 8080, "web", 80);
        ok("127.0.0.5:8080:web:80", Some("127.0.0.5"), 8080, "web", 80);
        ok("*:8080:web:80", Some("*"), 8080, "web", 80);
        ok(":8080:web:80", Some(""), 8080, "web", 80);
        ok("[::1]:8080:[fe80::1]:80", Some("::1"), 8080, "fe80::1", 80);
        for bad in [
            "8080",
            "8080:web",
            "0:web:80",
            "8080:web:0",
            "x:web:80",
            "8080::80",
            "a:b:8080:web:80",
            "[::1:8080:web:80",
            "65536:web:80",
            "8080:web:+80",
        ] {
            assert!(
                matches!(parse_local(bad), Err(ForwardSpecError::Bad { .. })),
                "{bad}: {:?}",
                parse_local(bad)
            );
        }
        assert!(matches!(
            parse_local("8080:/run/socket"),
            Err(ForwardSpecError::UnixSocket { .. })
        ));
    }

    #[test]
    fn dynamic_and_remote_specs() {
        assert_eq!(
            parse_dynamic("1080"),
            Ok(DynamicForward {
                bind: None,
                port: 1080
            })
        );
        assert_eq!(
            parse_dynamic("[::1]:1080").map(|d| d.bind),
            Ok(Some("::1".to_owned()))
        );
        assert!(parse_dynamic("0").is_err() && parse_dynamic("a:b:1").is_err());
        assert_eq!(parse_remote("0:localhost:22").map(|r| r.port), Ok(0));
        assert!(matches!(
            parse_remote("1080"),
            Err(ForwardSpecError::RemoteDynamic(_))
        ));
        assert_eq!(
            ForwardSpecError::Bad {
                kind: ForwardKind::Local,
                spec: "x".to_owned()
            }
            .to_string(),
            "Bad local forwarding specification 'x': expected [bind_address:]port:host:hostport"
        );
    }

    #[test]
    fn bind_addresses_follow_gateway_ports() {
        let ips = |bind, gateway| {
            listen_addresses(bind, 1, gateway)
                .expect("resolvable")
                .into_iter()
                .map(|a| a.ip().to_string())
                .collect::<Vec<_>>()
        };
        assert_eq!(ips(None, false), ["127.0.0.1", "::1"]);
        assert_eq!(ips(None, true), ["0.0.0.0", "::"]);
        assert_eq!(ips(Some("localhost"), true), ["127.0.0.1", "::1"]);
        assert_eq!(ips(Some("*"), false), ["0.0.0.0", "::"]);
        assert_eq!(ips(Some("127.0.0.9"), false), ["127.0.0.9"]);
        assert_eq!(remote_bind(None), "localhost");
        assert_eq!(remote_bind(Some("*")), "");
    }

    async fn handshake(input: &[u8]) -> (Result<SocksRequest, SocksError>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(4096);
        client.write_all(input).await.expect("write");
        drop(client.shutdown().await);
        let result = socks_request(&mut server).await;
        drop(server);
        let mut replies = Vec::new();
        let _ = client.read_to_end(&mut replies).await;
        (result, replies)
    }

    #[tokio::test]
    async fn socks_requests_are_read_within_fixed_bounds() {
        let (request, replies) =
            handshake(&[5, 1, 0, 5, 1, 0, 3, 4, b'w', b'e', b'b', b'1', 0, 80]).await;
        assert_eq!(
            request.expect("socks5"),
            SocksRequest {
                version: 5,
                host: "web1".to_owned(),
                port: 80
            }
        );
        assert_eq!(replies, [5, 0]);
        let (request, _) = handshake(&[4, 1, 0, 22, 0, 0, 0, 1, b'u', 0, b'h', 0]).await;
        assert_eq!(request.expect("socks4a").host, "h");
        let (request, _) = handshake(&[4, 1, 0, 22, 10, 0, 0, 1, 0]).await;
        assert_eq!(request.expect("socks4").host, "10.0.0.1");
        // No acceptable method, BIND, garbage, a user id that never ends, a cut request.
        let (request, replies) = handshake(&[5, 1, 2]).await;
        assert!(request.is_err() && replies == [5, 0xff]);
        let (request, replies) = handshake(&[5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 80]).await;
        assert!(request.is_err() && replies == [5, 0, 5, 7, 0, 1, 0, 0, 0, 0, 0, 0]);
        assert!(handshake(b"GET / HTTP/1.1\r\n\r\n").await.0.is_err());
        let mut long = vec![4, 1, 0, 22, 1, 2, 3, 4];
        long.extend(std::iter::repeat_n(b'u', 1000));
        assert!(handshake(&long).await.0.is_err());
        assert!(handshake(&[5, 1, 0, 5, 1, 0, 3, 9, b'a']).await.0.is_err());
    }
}
