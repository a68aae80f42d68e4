//! A scripted, hostile SSH server for the memory-bound tests: russh's server side (and
//! russh-sftp's) on 127.0.0.200, answering with whatever its [`Script`] says, plus a runner
//! that measures the peak memory of the binary it runs.
//!
//! The client key lives in moto as [`common::SECRET_ID`], the server's host key is written
//! into the test HOME's known_hosts and the address's port into its `.ssh/config`, so the
//! binaries connect to it as to any worker. Only the client's own public key is accepted.
//! [`Hostile::start_on`] listens on several addresses at once, one of which may present a
//! host key other than the one known_hosts records for it.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use russh::server::{Auth, ChannelOpenHandle, Msg, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, Sig};
use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;
use tempfile::TempDir;

use crate::common::{self, Moto};

/// The address the hostile server listens on, away from the harness's workers.
pub const ADDR: &str = "127.0.0.200";
/// A second address for the same server, for fan-outs of two hosts.
pub const ADDR2: &str = "127.0.0.201";

/// What the server does.
#[derive(Clone, Debug)]
pub enum Script {
    /// SFTP: `path` is a regular file holding `content`, but STAT says it has `claimed` bytes.
    LyingStat {
        path: String,
        content: Arc<Vec<u8>>,
        claimed: u64,
    },
    /// SFTP: `path` is a directory whose READDIR never answers end of file, `batch` new names
    /// a time.
    EndlessDir { path: String, batch: usize },
    /// exec: whatever the command, `total` bytes of `fill` on stdout, then exit status 0.
    Flood { total: u64, fill: u8 },
    /// SFTP: a file tree whose listings, symbolic links and modes say what the test wants.
    Tree(Arc<Tree>),
    /// exec: whatever the command, `stdout`, then `end`.
    Exit { stdout: Vec<u8>, end: End },
}

/// How a [`Script::Exit`] command ends.
#[derive(Clone, Debug)]
pub enum End {
    /// exit-status.
    Status(u32),
    /// exit-signal with this name, sent as it is (RFC 4254 names have no "SIG").
    Signal(String),
}

/// A remote file tree. Paths are the strings the client sends (`tree/sub/file`, no leading
/// `/`); a symbolic link's target is resolved from its directory, as a real server does, so
/// a link can point anywhere in the tree, or at itself.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    nodes: HashMap<String, Node>,
    /// How many symbolic links one path may pass through; None is Linux's 40.
    link_limit: Option<usize>,
}

#[derive(Clone, Debug)]
enum Node {
    /// `mode` is the permission bits (with setuid and the like), without the type.
    File {
        mode: u32,
        content: Arc<Vec<u8>>,
    },
    /// READDIR answers `listing` in this order, in one batch, then end of file. An entry's
    /// attributes are those it claims, or else its node's own (LSTAT's), or else a regular
    /// file's, for a name that has no node.
    Dir {
        mode: u32,
        listing: Vec<(String, Option<FileAttributes>)>,
    },
    Link {
        target: String,
    },
}

/// How many symbolic links one path may pass through on Linux.
const MAX_LINKS: usize = 40;

impl Tree {
    pub fn new() -> Tree {
        Tree::default()
    }

    /// A regular file: `mode` is its permission bits (setuid, setgid and sticky included).
    pub fn file(mut self, path: &str, mode: u32, content: &[u8]) -> Tree {
        let node = Node::File {
            mode,
            content: Arc::new(content.to_vec()),
        };
        self.nodes.insert(path.to_owned(), node);
        self
    }

    /// A directory whose listing names `names`, in this order; a name needs no node of its own
    /// (a listing can name anything).
    pub fn dir(mut self, path: &str, mode: u32, names: &[&str]) -> Tree {
        let listing = names.iter().map(|n| ((*n).to_owned(), None)).collect();
        self.nodes
            .insert(path.to_owned(), Node::Dir { mode, listing });
        self
    }

    /// In `dir`'s listing, `name` claims to be a directory with `mode`, whatever its node is
    /// (as a server that follows symbolic links in its listings says of a link).
    pub fn listed_as_dir(mut self, dir: &str, name: &str, mode: u32) -> Tree {
        let Some(Node::Dir { listing, .. }) = self.nodes.get_mut(dir) else {
            panic!("{dir:?} is not a directory of the tree");
        };
        let entry = listing
            .iter_mut()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("{dir:?} does not list {name:?}"));
        entry.1 = Some(attrs(0o040000 | mode, 4096));
        self
    }

    /// A symbolic link to `target`.
    pub fn link(mut self, path: &str, target: &str) -> Tree {
        let node = Node::Link {
            target: target.to_owned(),
        };
        self.nodes.insert(path.to_owned(), node);
        self
    }

    /// Lets one path pass through any number of symbolic links, so that a loop's depth has
    /// no end on the server's side (a hostile server needs no kernel to resolve its paths).
    pub fn without_link_limit(mut self) -> Tree {
        self.link_limit = Some(usize::MAX);
        self
    }

    /// The path `path` names once its symbolic links are followed (the last one only when
    /// `follow_last`), as a key of `nodes`. A path that is a key as it is stands for itself,
    /// so that a test can give a node to any string a client might send.
    fn resolve(&self, path: &str, follow_last: bool) -> Result<String, StatusReply> {
        match self.nodes.get(path) {
            Some(Node::Link { .. }) if follow_last => {}
            Some(_) => return Ok(path.to_owned()),
            None => {}
        }
        let mut rest: VecDeque<String> = path.split('/').map(str::to_owned).collect();
        let mut done: Vec<String> = Vec::new();
        let mut links = 0;
        while let Some(part) = rest.pop_front() {
            match part.as_str() {
                "" | "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => done.push(part),
            }
            let Some(Node::Link { target }) = self.nodes.get(&done.join("/")) else {
                continue;
            };
            if rest.is_empty() && !follow_last {
                break;
            }
            links += 1;
            if links > self.link_limit.unwrap_or(MAX_LINKS) {
                return Err(StatusCode::Failure.with_message("Too many levels of symbolic links"));
            }
            done.pop();
            if target.starts_with('/') {
                done.clear();
            }
            for part in target.split('/').rev() {
                rest.push_front(part.to_owned());
            }
        }
        Ok(done.join("/"))
    }

    /// The node `path` names, following symbolic links (STAT) or not (LSTAT).
    fn node(&self, path: &str, follow: bool) -> Result<(String, &Node), StatusReply> {
        let resolved = self.resolve(path, follow)?;
        match self.nodes.get(&resolved) {
            Some(node) => Ok((resolved, node)),
            None => Err(StatusCode::NoSuchFile.into()),
        }
    }

    fn attrs_of(node: &Node) -> FileAttributes {
        match node {
            Node::File { mode, content } => attrs(0o100000 | mode, content.len() as u64),
            Node::Dir { mode, .. } => attrs(0o040000 | mode, 4096),
            Node::Link { target } => attrs(0o120777, target.len() as u64),
        }
    }

    fn listing(&self, dir: &str) -> Vec<File> {
        let Some(Node::Dir { listing, .. }) = self.nodes.get(dir) else {
            return Vec::new();
        };
        listing
            .iter()
            .map(|(name, claimed)| {
                let attrs = claimed.clone().unwrap_or_else(|| {
                    match self.nodes.get(&format!("{dir}/{name}")) {
                        Some(node) => Tree::attrs_of(node),
                        None => attrs(0o100644, 0),
                    }
                });
                File::new(name.clone(), attrs)
            })
            .collect()
    }
}

/// A running hostile server and the client side's environment: moto holding the client key,
/// and a HOME whose ssh config and known_hosts lead to the server.
pub struct Hostile {
    pub moto: Moto,
    pub home: TempDir,
    pub port: u16,
    /// The SHA256 fingerprint of the host key known_hosts records for every address.
    pub host_fingerprint: String,
    /// The SHA256 fingerprint of the other key the `changed` address of
    /// [`Hostile::start_on`] presents.
    pub changed_fingerprint: Option<String>,
    /// Hosts the server; dropping it stops the server.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Hostile {
    pub fn start(script: Script) -> Hostile {
        Hostile::start_on(script, &[ADDR], None)
    }

    /// A server on each of `addrs` (one port for all), each recorded in known_hosts with the
    /// same host key; the `changed` address presents another key, as a reinstalled host (or
    /// someone in the middle) would.
    pub fn start_on(script: Script, addrs: &[&str], changed: Option<&str>) -> Hostile {
        let moto = Moto::start();
        let home = tempfile::Builder::new()
            .prefix("smssh-hostile-home-")
            .tempdir()
            .expect("cannot create the test HOME");
        let ssh_dir = home.path().join(".ssh");
        fs::create_dir_all(&ssh_dir).expect("cannot create HOME/.ssh");
        let (client_private, client_public) = keygen(&ssh_dir.join("client"));
        let (host_private, host_public) = keygen(&ssh_dir.join("host"));
        moto.put_secret_string(
            common::SECRET_ID,
            &common::key_secret_json(&client_private, &client_public),
        );
        let port = common::free_port(addrs);
        fs::write(
            ssh_dir.join("config"),
            format!("Host {}\n    Port {port}\n", addrs.join(" ")),
        )
        .expect("cannot write HOME/.ssh/config");
        let known: String = addrs
            .iter()
            .map(|addr| format!("[{addr}]:{port} {host_public}\n"))
            .collect();
        fs::write(ssh_dir.join("known_hosts"), known).expect("cannot write HOME/.ssh/known_hosts");
        let host_fingerprint = fingerprint(&ssh_dir.join("host.pub"));
        let other = changed.map(|_| keygen(&ssh_dir.join("changed")).0);
        let changed_fingerprint = changed.map(|_| fingerprint(&ssh_dir.join("changed.pub")));

        let decode = |private: &str| {
            russh::keys::decode_secret_key(private, None)
                .expect("cannot decode the generated host key")
        };
        let accepted = russh::keys::parse_public_key_base64(
            client_public
                .split_whitespace()
                .nth(1)
                .expect("a public key line has a base64 field"),
        )
        .expect("cannot parse the generated client key");
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("cannot build the server's runtime");
        for addr in addrs {
            let host_key = match (&other, changed) {
                (Some(other), Some(c)) if c == *addr => decode(other),
                _ => decode(&host_private),
            };
            let config = Arc::new(russh::server::Config {
                keys: vec![host_key],
                auth_rejection_time: Duration::from_millis(10),
                auth_rejection_time_initial: Some(Duration::ZERO),
                ..Default::default()
            });
            let listener = runtime
                .block_on(tokio::net::TcpListener::bind((*addr, port)))
                .expect("cannot listen on the hostile server's address");
            let script = script.clone();
            let accepted = accepted.clone();
            runtime.spawn(async move {
                while let Ok((socket, _)) = listener.accept().await {
                    let handler = Connection {
                        script: script.clone(),
                        accepted: accepted.clone(),
                        channels: HashMap::new(),
                    };
                    let config = Arc::clone(&config);
                    tokio::spawn(async move {
                        if let Ok(session) =
                            russh::server::run_stream(config, socket, handler).await
                        {
                            let _ = session.await;
                        }
                    });
                }
            });
        }
        Hostile {
            moto,
            home,
            port,
            host_fingerprint,
            changed_fingerprint,
            runtime: Some(runtime),
        }
    }

    /// A command for `bin` ("smscp" or "smssh") with only the environment the binaries need:
    /// HOME, PATH, moto's endpoint and credentials, and the secret's name; stdin is null.
    pub fn command(&self, bin: &str) -> Command {
        common::harness_environment(
            Command::new(common::binary_path(bin)),
            self.home.path(),
            &self.moto,
        )
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        // The accept loop and the sessions are tasks of this runtime; they end with it.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// An ed25519 key pair made by ssh-keygen at `path`: (private key text, public key line).
fn keygen(path: &Path) -> (String, String) {
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "smssh-hostile", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .status()
        .expect("cannot run ssh-keygen");
    assert!(status.success(), "ssh-keygen failed: {status}");
    let private = fs::read_to_string(path).expect("cannot read the private key");
    let public = fs::read_to_string(path.with_extension("pub")).expect("cannot read the .pub");
    (private, public.trim_end().to_owned())
}

/// The SHA256 fingerprint of a public key file, as ssh-keygen prints it.
fn fingerprint(public: &Path) -> String {
    let out = Command::new("ssh-keygen")
        .args(["-l", "-E", "sha256", "-f"])
        .arg(public)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run ssh-keygen -l");
    assert!(out.status.success(), "ssh-keygen -l failed: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .expect("ssh-keygen -l prints a fingerprint")
        .to_owned()
}

/// One client connection's SSH side.
struct Connection {
    script: Script,
    accepted: russh::keys::PublicKey,
    channels: HashMap<ChannelId, Channel<Msg>>,
}

impl russh::server::Handler for Connection {
    type Error = russh::Error;

    async fn auth_publickey(
        &mut self,
        _user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(if key.public_key.key_data() == self.accepted.key_data() {
            Auth::Accept
        } else {
            Auth::reject()
        })
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.channels.insert(channel.id(), channel);
        reply.accept().await;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        id: ChannelId,
        _command: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let Some(channel) = self.channels.remove(&id) else {
            return session.channel_failure(id);
        };
        match self.script.clone() {
            Script::Flood { total, fill } => {
                session.channel_success(id)?;
                tokio::spawn(async move {
                    // One shared buffer sent again and again: the server's own memory stays
                    // small however much it sends, and the channel's window paces it to the
                    // client.
                    let block = vec![fill; 256 * 1024];
                    let mut left = total;
                    while left > 0 {
                        let len = left.min(block.len() as u64) as usize;
                        if channel.data(&block[..len]).await.is_err() {
                            return;
                        }
                        left -= len as u64;
                    }
                    let _ = channel.exit_status(0).await;
                    let _ = channel.eof().await;
                    let _ = channel.close().await;
                });
            }
            Script::Exit { stdout, end } => {
                session.channel_success(id)?;
                let handle = session.handle();
                tokio::spawn(async move {
                    if !stdout.is_empty() && channel.data(&stdout[..]).await.is_err() {
                        return;
                    }
                    match end {
                        End::Status(status) => {
                            let _ = channel.exit_status(status).await;
                        }
                        End::Signal(name) => {
                            let _ = handle
                                .exit_signal_request(
                                    id,
                                    Sig::Custom(name),
                                    false,
                                    String::new(),
                                    String::new(),
                                )
                                .await;
                        }
                    }
                    let _ = channel.eof().await;
                    let _ = channel.close().await;
                });
            }
            _ => return session.channel_failure(id),
        }
        Ok(())
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
        let sftp = Sftp {
            script: self.script.clone(),
            listed: 0,
            handles: HashMap::new(),
            next_handle: 0,
        };
        russh_sftp::server::run(channel.into_stream(), sftp).await;
        Ok(())
    }
}

/// One SFTP session's side of the script.
struct Sftp {
    script: Script,
    /// Names an endless directory has handed out so far.
    listed: u64,
    /// A [`Script::Tree`]'s open handles: the node's path and, for a directory, whether its
    /// listing has been sent.
    handles: HashMap<String, (String, bool)>,
    next_handle: u64,
}

const FILE_HANDLE: &str = "file";
const DIR_HANDLE: &str = "dir";

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".to_owned(),
        language_tag: "en-US".to_owned(),
    }
}

fn attrs(mode: u32, size: u64) -> FileAttributes {
    FileAttributes {
        size: Some(size),
        permissions: Some(mode),
        atime: Some(0),
        mtime: Some(0),
        ..FileAttributes::empty()
    }
}

impl Sftp {
    fn attrs_of(&self, path: &str, follow: bool) -> Result<FileAttributes, StatusReply> {
        match &self.script {
            Script::LyingStat {
                path: file,
                claimed,
                ..
            } if path == file => Ok(attrs(0o100644, *claimed)),
            Script::EndlessDir { path: dir, .. } if path == dir => Ok(attrs(0o040755, 4096)),
            Script::Tree(tree) => tree.node(path, follow).map(|(_, n)| Tree::attrs_of(n)),
            _ => Err(StatusCode::NoSuchFile.into()),
        }
    }

    /// A new handle for the tree node at `path`.
    fn tree_handle(&mut self, id: u32, path: String) -> Handle {
        self.next_handle += 1;
        let handle = format!("tree-{}", self.next_handle);
        self.handles.insert(handle.clone(), (path, false));
        Handle { id, handle }
    }
}

impl russh_sftp::server::Handler for Sftp {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.into()
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.attrs_of(&path, true).map(|attrs| Attrs { id, attrs })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.attrs_of(&path, false).map(|attrs| Attrs { id, attrs })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        match (&self.script, handle.as_str()) {
            (Script::LyingStat { claimed, .. }, FILE_HANDLE) => Ok(Attrs {
                id,
                attrs: attrs(0o100644, *claimed),
            }),
            (Script::Tree(tree), handle) => {
                let (path, _) = self.handles.get(handle).ok_or(StatusCode::Failure)?;
                let (_, node) = tree.node(path, true)?;
                Ok(Attrs {
                    id,
                    attrs: Tree::attrs_of(node),
                })
            }
            _ => Err(StatusCode::Failure.into()),
        }
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        _pflags: russh_sftp::protocol::OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        match &self.script {
            Script::LyingStat { path, .. } if *path == filename => Ok(Handle {
                id,
                handle: FILE_HANDLE.to_owned(),
            }),
            Script::Tree(tree) => {
                // As open(2): a directory opens too; it is READ that fails.
                let (path, _) = tree.node(&filename, true)?;
                Ok(self.tree_handle(id, path))
            }
            _ => Err(StatusCode::PermissionDenied.into()),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let content = match &self.script {
            Script::LyingStat { content, .. } if handle == FILE_HANDLE => content,
            Script::Tree(tree) => {
                let (path, _) = self.handles.get(&handle).ok_or(StatusCode::Failure)?;
                match tree.nodes.get(path) {
                    Some(Node::File { content, .. }) => content,
                    _ => return Err(StatusCode::Failure.with_message("Is a directory")),
                }
            }
            _ => return Err(StatusCode::Failure.into()),
        };
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        if start >= content.len() {
            return Err(StatusCode::Eof.into());
        }
        let end = content.len().min(start.saturating_add(len as usize));
        Ok(Data {
            id,
            data: content[start..end].to_vec(),
        })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        self.handles.remove(&handle);
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        match &self.script {
            Script::EndlessDir { path: dir, .. } if *dir == path => Ok(Handle {
                id,
                handle: DIR_HANDLE.to_owned(),
            }),
            Script::Tree(tree) => match tree.node(&path, true)? {
                (path, Node::Dir { .. }) => Ok(self.tree_handle(id, path)),
                _ => Err(StatusCode::Failure.with_message("Not a directory")),
            },
            _ => Err(StatusCode::NoSuchFile.into()),
        }
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match &self.script {
            Script::EndlessDir { batch, .. } if handle == DIR_HANDLE => {
                let files = (0..*batch)
                    .map(|i| {
                        File::new(
                            format!("f{:012}", self.listed + i as u64),
                            attrs(0o100644, 1),
                        )
                    })
                    .collect();
                self.listed += *batch as u64;
                Ok(Name { id, files })
            }
            Script::Tree(tree) => {
                let (path, sent) = self.handles.get_mut(&handle).ok_or(StatusCode::Failure)?;
                if *sent {
                    return Err(StatusCode::Eof.into());
                }
                *sent = true;
                Ok(Name {
                    id,
                    files: tree.listing(path),
                })
            }
            _ => Err(StatusCode::Failure.into()),
        }
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let Script::Tree(tree) = &self.script else {
            return Err(StatusCode::NoSuchFile.into());
        };
        match tree.node(&path, false)? {
            (_, Node::Link { target }) => Ok(Name {
                id,
                files: vec![File::dummy(target.clone())],
            }),
            _ => Err(StatusCode::Failure.with_message("Invalid argument")),
        }
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        Ok(Name {
            id,
            files: vec![File::dummy(path)],
        })
    }
}

// ---------------------------------------------------------------------------
// Measured runs
// ---------------------------------------------------------------------------

/// What a measured run printed on stdout, examined as it streams past (the outputs of these
/// tests are hundreds of megabytes, which the test itself should not hold either).
#[derive(Debug, Default)]
pub struct StdoutStats {
    pub bytes: u64,
    pub lines: u64,
    /// The longest line, its newline excluded.
    pub longest_line: u64,
    /// Lines that do not start with the expected prefix, when one was given.
    pub unprefixed_lines: u64,
    /// The last bytes printed (at most 4 KiB).
    pub tail: Vec<u8>,
    prefix: Vec<u8>,
    line: Vec<u8>,
    line_len: u64,
}

const TAIL: usize = 4096;

impl StdoutStats {
    fn new(prefix: &[u8]) -> StdoutStats {
        StdoutStats {
            prefix: prefix.to_vec(),
            ..StdoutStats::default()
        }
    }

    fn feed(&mut self, data: &[u8]) {
        self.bytes += data.len() as u64;
        for &byte in data {
            if byte == b'\n' {
                self.end_line();
            } else {
                if self.line.len() < self.prefix.len() {
                    self.line.push(byte);
                }
                self.line_len += 1;
            }
        }
        self.tail.extend_from_slice(data);
        if self.tail.len() > TAIL {
            self.tail.drain(..self.tail.len() - TAIL);
        }
    }

    fn end_line(&mut self) {
        self.lines += 1;
        self.longest_line = self.longest_line.max(self.line_len);
        if !self.line.starts_with(&self.prefix) {
            self.unprefixed_lines += 1;
        }
        self.line.clear();
        self.line_len = 0;
    }
}

/// How a measured run ended.
#[derive(Debug)]
pub struct Measured {
    /// The exit code; None when the binary was killed.
    pub code: Option<i32>,
    pub stdout: StdoutStats,
    pub stderr: String,
    /// The binary's peak resident set (VmHWM, kernel's ru_maxrss), in KiB.
    pub peak_kib: u64,
    /// Why the runner killed the binary, if it did.
    pub killed: Option<String>,
}

impl Measured {
    pub fn peak_mib(&self) -> f64 {
        self.peak_kib as f64 / 1024.0
    }
}

/// Runs `cmd` under GNU time, which reports the peak resident set of the binary exactly
/// (its ru_maxrss, the VmHWM it had when it exited), while polling that VmHWM from /proc to
/// kill the binary once it passes `kill_above_kib` or runs past `timeout`, so that a run that
/// grows without bound fails instead of taking the machine's memory. Lines of stdout must
/// start with `prefix`.
pub fn run_measured(
    cmd: &Command,
    prefix: &[u8],
    kill_above_kib: u64,
    timeout: Duration,
) -> Measured {
    let report_dir = tempfile::Builder::new()
        .prefix("smssh-peak-")
        .tempdir()
        .expect("cannot create a temp dir for the peak report");
    let report = report_dir.path().join("peak");
    let mut timed = Command::new("/usr/bin/time");
    timed.env_clear();
    for (name, value) in cmd.get_envs() {
        if let Some(value) = value {
            timed.env(name, value);
        }
    }
    if let Some(dir) = cmd.get_current_dir() {
        timed.current_dir(dir);
    }
    timed
        .args(["-f", "%M", "-o"])
        .arg(&report)
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = timed
        .spawn()
        .expect("cannot start /usr/bin/time (GNU time; install the `time` package)");
    let mut stdout_pipe = child.stdout.take().expect("stdout is piped");
    let mut stderr_pipe = child.stderr.take().expect("stderr is piped");
    let mut stats = StdoutStats::new(prefix);
    let stdout_reader = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n) = stdout_pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            stats.feed(&buf[..n]);
        }
        stats
    });
    let stderr_reader = thread::spawn(move || {
        let mut text = Vec::new();
        let _ = stderr_pipe.read_to_end(&mut text);
        text
    });

    let started = Instant::now();
    let mut binary: Option<u32> = None;
    let mut polled_peak = 0u64;
    let mut killed = None;
    let status = loop {
        if let Some(status) = child.try_wait().expect("cannot poll GNU time") {
            break status;
        }
        if binary.is_none() {
            binary = common::processes()
                .into_iter()
                .find(|(_, ppid, _)| *ppid == child.id())
                .map(|(pid, _, _)| pid);
        }
        if let Some(pid) = binary {
            polled_peak = polled_peak.max(vm_hwm_kib(pid).unwrap_or(0));
            let reason = if polled_peak > kill_above_kib {
                Some(format!(
                    "peak resident set {} MiB passed {} MiB",
                    polled_peak / 1024,
                    kill_above_kib / 1024
                ))
            } else if started.elapsed() > timeout {
                Some(format!("still running after {timeout:?}"))
            } else {
                None
            };
            if let Some(reason) = reason.filter(|_| killed.is_none()) {
                killed = Some(reason);
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        thread::sleep(Duration::from_millis(10));
    };
    let stdout = stdout_reader.join().expect("the stdout reader panicked");
    let stderr = stderr_reader.join().expect("the stderr reader panicked");
    // GNU time writes "Command exited with non-zero status N" or "Command terminated by
    // signal N" before the figure when the command did not succeed.
    let reported = fs::read_to_string(&report).unwrap_or_default();
    let time_peak = reported
        .lines()
        .last()
        .and_then(|line| line.trim().parse::<u64>().ok())
        .unwrap_or(0);
    Measured {
        code: if killed.is_some() || reported.contains("terminated by signal") {
            None
        } else {
            status.code()
        },
        stdout,
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        peak_kib: time_peak.max(polled_peak),
        killed,
    }
}

/// VmHWM of a live process, in KiB.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
