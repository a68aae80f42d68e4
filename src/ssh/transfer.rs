//! Moving bytes over SFTP: pipelined uploads and downloads of one file, directory listing and
//! creation, and the write-to-temporary-then-rename discipline on both ends.
//!
//! Owns: the SFTP session (russh-sftp's raw request API, not its slow high-level file API),
//! request pipelining, the temporary-name scheme, bandwidth limiting, progress accounting,
//! remote glob expansion (bounded in matches and listings) and session-to-session copies.
//! Invariants: a target file only ever appears complete (written under a temporary name in the
//! same directory, then renamed over the target); a failed transfer removes its temporary file;
//! at most `in_flight` requests are outstanding per file, whatever size the server claims,
//! which bounds memory; a directory listing holds at most its `DirLimit`.
//! Must not know: scp's operand rules (which file goes where) or how connections are made.

use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures::stream::{FuturesUnordered, StreamExt};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::client::RawSftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};

use crate::audit::StreamDigest;
use crate::ssh::session::Connection;

/// Largest read/write request we send, when the server's limits@openssh.com allows it.
/// OpenSSH's sftp-server accepts 255 KiB; fewer, larger requests cost less per byte.
const MAX_REQUEST: u64 = 255 * 1024;
/// Request size for servers that do not state limits (RFC minimum every server takes).
const DEFAULT_REQUEST: u64 = 32 * 1024;
/// Bytes outstanding per file for a single host: enough to fill a fast link's
/// bandwidth-delay product. Fan-out divides a fixed budget among its sessions instead.
pub const IN_FLIGHT_SINGLE: u64 = 8 * 1024 * 1024;
/// Total bytes outstanding across every session of a fan-out, which bounds its memory.
pub const IN_FLIGHT_FANOUT_TOTAL: u64 = 64 * 1024 * 1024;
/// Bytes of a local file kept in memory for hosts that read it at nearly the same offset.
const SOURCE_CACHE_BYTES: usize = 64 * 1024 * 1024;
/// SFTP responses wait at most this long; a stalled server fails the file, not the program.
const REQUEST_TIMEOUT_SECS: u64 = 60;
/// Most entries a directory listing may hold by default: a directory this large, or a server
/// whose listing never ends, gets a clear error instead of the master's memory.
pub const MAX_DIR_ENTRIES: usize = 1_000_000;
/// Most paths one remote glob may match: OpenSSH's glob(3) answers GLOB_NOSPACE ("too many
/// glob matches") where memory ends; a server's listings must not take ours.
pub const MAX_GLOB_MATCHES: usize = 100_000;
/// Most directories one remote glob may list (`*/*/*` over a large tree, or a server whose
/// directories never end in depth).
pub const MAX_GLOB_LISTINGS: usize = 10_000;
/// Most bytes of names a directory listing may hold by default: a million names of 64 bytes.
/// Names are not bounded by the entry count alone, since one can fill a whole SFTP packet.
pub const MAX_DIR_NAME_BYTES: usize = 64 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error("{path}: {reason}")]
    Remote { path: String, reason: String },
    #[error("{path}: {reason}")]
    Local { path: String, reason: String },
    #[error("cannot start SFTP: {reason}: check that the server has the sftp subsystem enabled")]
    Subsystem { reason: String },
    #[error("{path}: interrupted")]
    Interrupted { path: String },
}

fn remote_error(path: &str, err: SftpError) -> TransferError {
    let reason = match &err {
        SftpError::Status(status) => match status.status_code {
            StatusCode::NoSuchFile => "No such file or directory".to_owned(),
            StatusCode::PermissionDenied => "Permission denied".to_owned(),
            _ if !status.error_message.is_empty() => status.error_message.clone(),
            code => code.to_string(),
        },
        SftpError::Timeout => format!("no answer from the server within {REQUEST_TIMEOUT_SECS}s"),
        other => other.to_string(),
    };
    TransferError::Remote {
        path: path.to_owned(),
        reason,
    }
}

/// A local file's failure, in scp's words.
pub fn local_error(path: &Path, err: std::io::Error) -> TransferError {
    TransferError::Local {
        path: path.display().to_string(),
        reason: io_reason(&err),
    }
}

/// What a download copied: its length and the SHA-256 of its bytes, hashed as they
/// arrived (absent when the server's answers could not be hashed in order).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub bytes: u64,
    pub sha256: Option<String>,
}

/// scp's words for the common local errors, OpenSSH's strerror texts.
pub fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "No such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "Permission denied".to_owned(),
        _ => err.to_string(),
    }
}

fn is_no_such_file(err: &SftpError) -> bool {
    matches!(err, SftpError::Status(s) if s.status_code == StatusCode::NoSuchFile)
}

/// What a remote path is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteStat {
    pub is_dir: bool,
    pub size: u64,
    pub mode: u32,
    pub atime: u32,
    pub mtime: u32,
}

impl RemoteStat {
    fn from_attrs(attrs: &FileAttributes) -> RemoteStat {
        RemoteStat {
            is_dir: attrs.is_dir(),
            size: attrs.size.unwrap_or(0),
            mode: attrs.permissions.unwrap_or(0o644),
            atime: attrs.atime.unwrap_or(0),
            mtime: attrs.mtime.unwrap_or(0),
        }
    }
}

/// The permission bits a file written on a server gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permissions {
    /// Asked for at creation, so the server's umask applies (a new file without `-p`).
    Masked(u32),
    /// Set as they are after writing: under `-p`, and for a file that replaces one whose
    /// mode it keeps, as scp's in-place write does.
    Exact(u32),
}

impl Permissions {
    fn bits(self) -> u32 {
        match self {
            Permissions::Masked(bits) | Permissions::Exact(bits) => bits & 0o7777,
        }
    }
}

/// Accounting for one host's transfers: progress bars (the run's total and, in a fan-out,
/// the host's own) and the optional bandwidth cap, which applies per host as scp's `-l` does.
pub struct Meter {
    bars: Vec<indicatif::ProgressBar>,
    limit_bytes_per_sec: Option<u64>,
    started: Instant,
    sent: std::sync::atomic::AtomicU64,
}

impl Meter {
    pub fn new(bars: Vec<indicatif::ProgressBar>, limit_kbits: Option<u64>) -> Meter {
        Meter {
            bars,
            limit_bytes_per_sec: limit_kbits.map(|k| (k * 1000 / 8).max(1)),
            started: Instant::now(),
            sent: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// A file of `bytes` is about to be copied: the bars' totals grow by it.
    pub fn expect(&self, bytes: u64) {
        for bar in &self.bars {
            bar.inc_length(bytes);
        }
    }

    /// Under `-l`, waits until sending `bytes` more keeps the average rate under the cap.
    /// Called before a request goes out, so the link itself is paced, not just the bar.
    async fn pace(&self, bytes: u64) {
        let total = self
            .sent
            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed)
            + bytes;
        if let Some(rate) = self.limit_bytes_per_sec {
            let due = Duration::from_secs_f64(total as f64 / rate as f64);
            let elapsed = self.started.elapsed();
            if due > elapsed {
                tokio::time::sleep(due - elapsed).await;
            }
        }
    }

    /// Counts bytes the server has acknowledged (uploads) or delivered (downloads).
    fn progress(&self, bytes: u64) {
        for bar in &self.bars {
            // The first byte starts the clock the displayed rate is computed from, so the
            // key fetch and the login do not dilute it (term::progress).
            if bar.position() == 0 {
                bar.reset_elapsed();
            }
            bar.inc(bytes);
        }
    }
}

/// An SFTP session on a connection.
pub struct Sftp {
    raw: RawSftpSession,
    request_len: u64,
    posix_rename: bool,
    in_flight: u64,
    dir_limit: DirLimit,
}

/// How much one directory listing may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirLimit {
    pub entries: usize,
    pub name_bytes: usize,
}

impl Default for DirLimit {
    fn default() -> DirLimit {
        DirLimit {
            entries: MAX_DIR_ENTRIES,
            name_bytes: MAX_DIR_NAME_BYTES,
        }
    }
}

impl DirLimit {
    /// Why a listing of `entries` entries and `name_bytes` bytes of names is too large, if
    /// it is.
    fn exceeded(&self, entries: usize, name_bytes: usize) -> Option<String> {
        let what = if entries > self.entries {
            format!("{} entries", self.entries)
        } else if name_bytes > self.name_bytes {
            format!(
                "{} of file names",
                indicatif::BinaryBytes(self.name_bytes as u64)
            )
        } else {
            return None;
        };
        Some(format!(
            "directory listing exceeds {what}: copy its subdirectories or files separately"
        ))
    }
}

impl Sftp {
    /// Opens SFTP on the connection; `in_flight` bytes of requests may be outstanding per file.
    pub async fn open(conn: &Connection, in_flight: u64) -> Result<Sftp, TransferError> {
        let subsystem = |reason: String| TransferError::Subsystem { reason };
        let channel = conn
            .handle
            .channel_open_session()
            .await
            .map_err(|e| subsystem(e.to_string()))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| subsystem(e.to_string()))?;
        let raw = RawSftpSession::new(channel.into_stream());
        raw.set_timeout(REQUEST_TIMEOUT_SECS);
        let version = raw.init().await.map_err(|e| subsystem(e.to_string()))?;
        let posix_rename = version.extensions.contains_key("posix-rename@openssh.com");
        let request_len = if version.extensions.contains_key("limits@openssh.com") {
            match raw.limits().await {
                Ok(limits) => limits
                    .max_write_len
                    .min(limits.max_read_len)
                    .clamp(DEFAULT_REQUEST, MAX_REQUEST),
                Err(_) => DEFAULT_REQUEST,
            }
        } else {
            DEFAULT_REQUEST
        };
        crate::term::diag::debug(format_args!(
            "{}: SFTP v{}, {} KiB requests, posix-rename {}",
            conn.label,
            version.version,
            request_len / 1024,
            posix_rename
        ));
        Ok(Sftp {
            raw,
            request_len,
            posix_rename,
            in_flight,
            dir_limit: DirLimit::default(),
        })
    }

    /// Replaces the default limit on directory listings, for a user whose directories are
    /// larger.
    pub fn set_dir_limit(&mut self, limit: DirLimit) {
        self.dir_limit = limit;
    }

    /// `stat` that follows symlinks; None when the path does not exist.
    pub async fn stat(&self, path: &str) -> Result<Option<RemoteStat>, TransferError> {
        match self.raw.stat(sftp_path(path)).await {
            Ok(attrs) => Ok(Some(RemoteStat::from_attrs(&attrs.attrs))),
            Err(err) if is_no_such_file(&err) => Ok(None),
            Err(err) => Err(remote_error(path, err)),
        }
    }

    /// The entries of a directory, without `.` and `..`. A listing larger than the session's
    /// [`DirLimit`] (or one that never ends) is an error, not a growing list.
    pub async fn read_dir(&self, path: &str) -> Result<Vec<(String, RemoteStat)>, TransferError> {
        let handle = self
            .raw
            .opendir(sftp_path(path))
            .await
            .map_err(|e| remote_error(path, e))?
            .handle;
        let mut entries = Vec::new();
        let (mut seen, mut name_bytes) = (0usize, 0usize);
        let result = loop {
            if crate::term::cancel::requested() {
                break Err(TransferError::Interrupted {
                    path: path.to_owned(),
                });
            }
            match self.raw.readdir(handle.as_str()).await {
                // OpenSSH's client also takes an answer without names as the end: a server
                // that sends only those would otherwise keep us asking forever.
                Ok(name) if name.files.is_empty() => break Ok(()),
                Ok(name) => {
                    seen += name.files.len();
                    name_bytes += name.files.iter().map(|f| f.filename.len()).sum::<usize>();
                    if let Some(reason) = self.dir_limit.exceeded(seen, name_bytes) {
                        break Err(TransferError::Remote {
                            path: path.to_owned(),
                            reason,
                        });
                    }
                    for file in name.files {
                        if file.filename != "." && file.filename != ".." {
                            entries.push((file.filename, RemoteStat::from_attrs(&file.attrs)));
                        }
                    }
                }
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => break Ok(()),
                Err(err) => break Err(remote_error(path, err)),
            }
        };
        let _ = self.raw.close(handle).await;
        result.map(|()| entries)
    }

    /// Expands a remote glob (`*`, `?`, `[...]`, `\` escapes) as OpenSSH's SFTP-mode scp
    /// does with `glob(3)` over SFTP: component by component, listing only the directories a
    /// pattern component needs, a leading `.` matched only by a literal `.`, and the matches
    /// sorted byte-wise. Each match comes with its `stat` (a symbolic link followed, so a
    /// link to a directory counts as one). `None` when nothing matched (the caller then looks
    /// for a file named like the pattern itself, as `GLOB_NOCHECK` does). A server's answers
    /// cannot grow it without bound: at most [`MAX_GLOB_MATCHES`] matches and
    /// [`MAX_GLOB_LISTINGS`] directory listings, each under the session's [`DirLimit`].
    pub async fn glob(
        &self,
        pattern: &str,
    ) -> Result<Option<Vec<(String, RemoteStat)>>, TransferError> {
        let too_many = |what: &str| TransferError::Remote {
            path: pattern.to_owned(),
            reason: format!("too many glob matches (more than {what})"),
        };
        let (root, rest) = match pattern.strip_prefix('/') {
            Some(rest) => ("/", rest),
            None => ("", pattern),
        };
        let components: Vec<&str> = rest.split('/').collect();
        // Partial paths still to expand, each with the index of its next component. An
        // explicit stack rather than recursion, as for the recursive copies.
        let mut partial = vec![(root.to_owned(), 0usize)];
        let mut matches = Vec::new();
        let mut listings = 0usize;
        while let Some((mut path, mut index)) = partial.pop() {
            if crate::term::cancel::requested() {
                return Err(TransferError::Interrupted {
                    path: pattern.to_owned(),
                });
            }
            // Components without wildcards are taken as they are, as glob(3) does: only a
            // wildcard costs a listing.
            while index < components.len() && !has_glob_meta(components[index]) {
                path = glob_join(&path, &glob_unescape(components[index]), index == 0);
                index += 1;
            }
            if index == components.len() {
                if let Some(stat) = self.stat(&path).await? {
                    matches.push((path, stat));
                }
                continue;
            }
            listings += 1;
            if listings > MAX_GLOB_LISTINGS {
                return Err(too_many(&format!("{MAX_GLOB_LISTINGS} directories listed")));
            }
            let dir = if path.is_empty() { "." } else { path.as_str() };
            let last = index + 1 == components.len();
            for (name, stat) in self.read_dir(dir).await? {
                if !glob_match(components[index], &name) {
                    continue;
                }
                let child = glob_join(&path, &name, index == 0);
                // A link's own attributes say nothing of what it points to: a link to a
                // directory is one for the rest of the pattern and for the copy, as with
                // GLOB_MARK.
                let stat = if is_link(stat.mode) {
                    match self.stat(&child).await? {
                        Some(target) => target,
                        None => stat,
                    }
                } else {
                    stat
                };
                if last {
                    if matches.len() >= MAX_GLOB_MATCHES {
                        return Err(too_many(&format!("{MAX_GLOB_MATCHES} paths")));
                    }
                    matches.push((child, stat));
                } else if stat.is_dir {
                    if partial.len() >= MAX_GLOB_MATCHES {
                        return Err(too_many(&format!("{MAX_GLOB_MATCHES} paths")));
                    }
                    partial.push((child, index + 1));
                }
            }
        }
        if matches.is_empty() {
            return Ok(None);
        }
        matches.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        Ok(Some(matches))
    }

    /// Creates a directory; an existing directory is fine (as with scp -r into an existing tree).
    pub async fn mkdir(&self, path: &str, mode: u32) -> Result<(), TransferError> {
        let attrs = FileAttributes {
            permissions: Some(mode & 0o7777),
            ..FileAttributes::empty()
        };
        match self.raw.mkdir(sftp_path(path), attrs).await {
            Ok(_) => Ok(()),
            Err(err) => match self.stat(path).await {
                Ok(Some(stat)) if stat.is_dir => Ok(()),
                _ => Err(remote_error(path, err)),
            },
        }
    }

    pub async fn set_times_and_mode(
        &self,
        path: &str,
        mode: Option<u32>,
        times: Option<(u32, u32)>,
    ) -> Result<(), TransferError> {
        let attrs = FileAttributes {
            permissions: mode.map(|m| m & 0o7777),
            atime: times.map(|t| t.0),
            mtime: times.map(|t| t.1),
            ..FileAttributes::empty()
        };
        self.raw
            .setstat(sftp_path(path), attrs)
            .await
            .map(|_| ())
            .map_err(|e| remote_error(path, e))
    }

    /// Uploads `local` to `remote`: written to a temporary name beside it, then renamed.
    /// `mode` is the final permission bits; `times` (atime, mtime) under `-p`.
    pub async fn upload(
        &self,
        source: &SharedSource,
        remote: &str,
        mode: Permissions,
        times: Option<(u32, u32)>,
        meter: &Meter,
    ) -> Result<u64, TransferError> {
        let (temporary, handle) = self.create_temporary(remote, mode).await?;
        let written = self.write_all(source, &handle, meter).await;
        let closed = self.raw.close(handle).await;
        let finished = match (written, closed) {
            (Ok(bytes), Ok(_)) => Ok(bytes),
            (Err(err), _) => Err(err),
            (Ok(_), Err(err)) => Err(remote_error(remote, err)),
        };
        let finished = match finished {
            Ok(bytes) => self
                .settle(&temporary, remote, mode, times)
                .await
                .map(|()| bytes),
            Err(err) => Err(err),
        };
        if finished.is_err() {
            let _ = self.raw.remove(temporary.as_str()).await;
        }
        finished
    }

    async fn write_all(
        &self,
        source: &SharedSource,
        handle: &str,
        meter: &Meter,
    ) -> Result<u64, TransferError> {
        let max_in_flight = (self.in_flight / self.request_len).max(1) as usize;
        let size = source.size;
        let mut pending = FuturesUnordered::new();
        let mut offset = 0u64;
        let mut done = 0u64;
        loop {
            if crate::term::cancel::requested() {
                return Err(TransferError::Interrupted {
                    path: source.path.display().to_string(),
                });
            }
            while offset < size && pending.len() < max_in_flight {
                let len = self.request_len.min(size - offset);
                meter.pace(len).await;
                let chunk = source.chunk(offset, len)?;
                let at = offset;
                pending.push(async move {
                    // russh-sftp takes the data by value, so each request owns its copy;
                    // the shared chunk itself is read from disk once for every host.
                    self.raw
                        .write(handle, at, chunk.as_ref().clone())
                        .await
                        .map(|_| len)
                });
                offset += len;
            }
            match pending.next().await {
                Some(Ok(bytes)) => {
                    done += bytes;
                    meter.progress(bytes);
                }
                Some(Err(err)) => return Err(remote_error(handle, err)),
                None => break,
            }
        }
        Ok(done)
    }

    /// Downloads `remote` to `local`: written to a temporary name beside it, then renamed.
    /// `stat.size` only sizes the first requests; the copy runs to the server's end of file.
    pub async fn download(
        &self,
        remote: &str,
        stat: &RemoteStat,
        local: &Path,
        mode: u32,
        preserve_times: bool,
        meter: &Meter,
    ) -> Result<Copied, TransferError> {
        let handle = self
            .raw
            .open(remote, OpenFlags::READ, FileAttributes::empty())
            .await
            .map_err(|e| remote_error(remote, e))?
            .handle;
        let temporary = temporary_name_local(local);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|e| local_error(local, e));
        let result = match file {
            Ok(file) => {
                let sink = Sink::Local {
                    file: &file,
                    path: local,
                };
                let mut digest = StreamDigest::new();
                let copied = self
                    .read_all(&handle, remote, stat.size, &sink, meter, &mut digest)
                    .await;
                copied.and_then(|bytes| {
                    finish_local(
                        &file,
                        &temporary,
                        local,
                        mode,
                        preserve_times.then_some(stat),
                    )
                    .map(|()| Copied {
                        bytes,
                        sha256: digest.finish(bytes),
                    })
                })
            }
            Err(err) => Err(err),
        };
        let _ = self.raw.close(handle).await;
        if result.is_err() {
            let _ = std::fs::remove_file(&temporary);
        }
        result
    }

    /// Reads the open file into `file` until the server says end of file, whatever size
    /// `size` (the server's STAT) claims, and returns the bytes copied. At most the session's
    /// window of requests is outstanding and the next offset is worked out as each one goes
    /// out, so memory stays fixed however large the claim. As OpenSSH's client does, the file
    /// is copied as it is: one that shrank ends where its end of file came, and one that grew
    /// goes on (bounded only by the local disk). Past the claimed size, requests start one at
    /// a time and the window doubles with each full answer, so a file whose size was stated
    /// right costs one extra request (sent with the others) to find its end.
    async fn read_all(
        &self,
        handle: &str,
        remote: &str,
        size: u64,
        sink: &Sink<'_>,
        meter: &Meter,
        digest: &mut StreamDigest,
    ) -> Result<u64, TransferError> {
        let window = (self.in_flight / self.request_len).max(1) as usize;
        let mut pending = FuturesUnordered::new();
        // The remainders of short reads, asked for again before any new range.
        let mut remainders: Vec<(u64, u64)> = Vec::new();
        // The lowest offset not yet asked for.
        let mut next = 0u64;
        // The lowest offset at which the server said end of file; u64::MAX until it does.
        let mut eof = u64::MAX;
        // Requests at or past the claimed size allowed at once, and those outstanding.
        let (mut beyond_allowed, mut beyond_pending) = (1usize, 0usize);
        // One past the highest byte written.
        let mut written = 0u64;
        loop {
            if crate::term::cancel::requested() {
                return Err(TransferError::Interrupted {
                    path: remote.to_owned(),
                });
            }
            while pending.len() < window {
                let (at, len) = match remainders.pop() {
                    // A remainder at or past the end of file has nothing left to read.
                    Some((at, _)) if at >= eof => continue,
                    Some(range) => range,
                    None if eof == u64::MAX && next < size => {
                        (next, self.request_len.min(size - next))
                    }
                    None if eof == u64::MAX && beyond_pending < beyond_allowed => {
                        (next, self.request_len)
                    }
                    None => break,
                };
                next = next.max(at + len);
                if at >= size {
                    beyond_pending += 1;
                } else {
                    meter.pace(len).await;
                }
                pending.push(async move { (at, len, self.raw.read(handle, at, len as u32).await) });
            }
            let Some((at, len, result)) = pending.next().await else {
                break;
            };
            if at >= size {
                beyond_pending -= 1;
            }
            match result {
                Ok(data) if !data.data.is_empty() => {
                    let got = data.data.len() as u64;
                    if got > len {
                        return Err(TransferError::Remote {
                            path: remote.to_owned(),
                            reason: format!(
                                "the server sent {got} bytes for a read of {len}: refused"
                            ),
                        });
                    }
                    digest.update_at(at, &data.data);
                    sink.write_at(data.data, at).await?;
                    written = written.max(at + got);
                    if got < len {
                        remainders.push((at + got, len - got));
                    }
                    if at >= size {
                        // Bytes past the claim were never paced when asked for: pace them now.
                        meter.pace(got).await;
                        if got == len {
                            beyond_allowed = (beyond_allowed * 2).min(window);
                        }
                    }
                    meter.progress(got);
                }
                // An empty answer is taken as end of file too: it could not advance anyway.
                Ok(_) => eof = eof.min(at),
                Err(SftpError::Status(s)) if s.status_code == StatusCode::Eof => {
                    eof = eof.min(at);
                }
                Err(err) => return Err(remote_error(remote, err)),
            }
        }
        // Every offset below the end of file has been read. Bytes a server sent past it (its
        // answers disagreeing with each other) are not part of the copy.
        if written > eof {
            sink.truncate(eof).await?;
        }
        Ok(written.min(eof))
    }

    /// Creates the temporary file beside `target` that an upload or a `-3` copy writes and
    /// then renames over it: new (EXCLUDE, so nothing planted there is written through), with
    /// `mode` from the start. Returns its name and handle.
    async fn create_temporary(
        &self,
        target: &str,
        mode: Permissions,
    ) -> Result<(String, String), TransferError> {
        let temporary = temporary_name_remote(target);
        let attrs = FileAttributes {
            permissions: Some(mode.bits()),
            ..FileAttributes::empty()
        };
        let handle = self
            .raw
            .open(
                temporary.as_str(),
                OpenFlags::WRITE | OpenFlags::CREATE | OpenFlags::TRUNCATE | OpenFlags::EXCLUDE,
                attrs,
            )
            .await
            .map_err(|e| remote_error(target, e))?
            .handle;
        Ok((temporary, handle))
    }

    /// Copies `source` on the session `from` to `target` on this one (scp's `-3`): the bytes
    /// pass through this process, read with `from`'s window of requests in flight and
    /// written as they arrive, under a temporary name beside the target that is renamed over
    /// it at the end, as an upload is. `mode` is the final permission bits; `times` (atime,
    /// mtime) under `-p`.
    #[allow(clippy::too_many_arguments)] // Both ends of one file; a struct would only rename it.
    pub async fn crossload(
        &self,
        from: &Sftp,
        source: &str,
        stat: &RemoteStat,
        target: &str,
        mode: Permissions,
        times: Option<(u32, u32)>,
        meter: &Meter,
    ) -> Result<Copied, TransferError> {
        let read_handle = from
            .raw
            .open(source, OpenFlags::READ, FileAttributes::empty())
            .await
            .map_err(|e| remote_error(source, e))?
            .handle;
        let (temporary, write_handle) = match self.create_temporary(target, mode).await {
            Ok(created) => created,
            Err(err) => {
                let _ = from.raw.close(read_handle).await;
                return Err(err);
            }
        };
        let sink = Sink::Remote {
            sftp: self,
            handle: &write_handle,
            path: target,
        };
        // The hash of the bytes that passed through this host is the relay's audit record.
        let mut digest = StreamDigest::new();
        let copied = from
            .read_all(&read_handle, source, stat.size, &sink, meter, &mut digest)
            .await;
        let _ = from.raw.close(read_handle).await;
        let closed = self.raw.close(write_handle).await;
        let finished = match (copied, closed) {
            (Ok(bytes), Ok(_)) => self
                .settle(&temporary, target, mode, times)
                .await
                .map(|()| Copied {
                    bytes,
                    sha256: digest.finish(bytes),
                }),
            (Err(err), _) => Err(err),
            (Ok(_), Err(err)) => Err(remote_error(target, err)),
        };
        if finished.is_err() {
            let _ = self.raw.remove(temporary.as_str()).await;
        }
        finished
    }

    /// Gives a written temporary file its final mode and times, then renames it over
    /// `target`.
    async fn settle(
        &self,
        temporary: &str,
        target: &str,
        mode: Permissions,
        times: Option<(u32, u32)>,
    ) -> Result<(), TransferError> {
        if matches!(mode, Permissions::Exact(_)) || times.is_some() {
            self.set_times_and_mode(temporary, Some(mode.bits()), times)
                .await?;
        }
        self.rename_over(temporary, target).await
    }

    /// Renames `from` over `to`, atomically where the server has posix-rename.
    async fn rename_over(&self, from: &str, to: &str) -> Result<(), TransferError> {
        if self.posix_rename {
            let mut data = Vec::with_capacity(8 + from.len() + to.len());
            for part in [from, to] {
                data.extend_from_slice(&(part.len() as u32).to_be_bytes());
                data.extend_from_slice(part.as_bytes());
            }
            return match self.raw.extended("posix-rename@openssh.com", data).await {
                Ok(russh_sftp::protocol::Packet::Status(s)) if s.status_code == StatusCode::Ok => {
                    Ok(())
                }
                Ok(russh_sftp::protocol::Packet::Status(s)) => {
                    Err(remote_error(to, SftpError::Status(s)))
                }
                Ok(_) => Err(remote_error(to, SftpError::UnexpectedPacket)),
                Err(err) => Err(remote_error(to, err)),
            };
        }
        // Plain SFTP rename refuses to replace a file: remove the old one first. The window in
        // which the target is missing is the price of a server without posix-rename.
        let _ = self.raw.remove(to).await;
        self.raw
            .rename(from, to)
            .await
            .map(|_| ())
            .map_err(|e| remote_error(to, e))
    }
}

/// Where a download's bytes go: a local file, or for `-3` a file open on another session.
enum Sink<'a> {
    Local {
        file: &'a std::fs::File,
        path: &'a Path,
    },
    Remote {
        sftp: &'a Sftp,
        handle: &'a str,
        path: &'a str,
    },
}

impl Sink<'_> {
    /// Writes `data` at offset `at`. A remote write goes in pieces no larger than the
    /// receiving server's request size, which may be smaller than the sending one's, and
    /// each is answered before the next: the reads stay in flight meanwhile, so the slower
    /// of the two links sets the pace.
    async fn write_at(&self, data: Vec<u8>, at: u64) -> Result<(), TransferError> {
        match self {
            Sink::Local { file, path } => file
                .write_all_at(&data, at)
                .map_err(|e| local_error(path, e)),
            Sink::Remote { sftp, handle, path } => {
                let mut offset = at;
                for piece in data.chunks(sftp.request_len as usize) {
                    sftp.raw
                        .write(*handle, offset, piece.to_vec())
                        .await
                        .map_err(|e| remote_error(path, e))?;
                    offset += piece.len() as u64;
                }
                Ok(())
            }
        }
    }

    async fn truncate(&self, len: u64) -> Result<(), TransferError> {
        match self {
            Sink::Local { file, path } => file.set_len(len).map_err(|e| local_error(path, e)),
            Sink::Remote { sftp, handle, path } => {
                let attrs = FileAttributes {
                    size: Some(len),
                    ..FileAttributes::empty()
                };
                sftp.raw
                    .fsetstat(*handle, attrs)
                    .await
                    .map(|_| ())
                    .map_err(|e| remote_error(path, e))
            }
        }
    }
}

/// A local file being uploaded, shared by every host it goes to. Hosts that copy at nearly
/// the same pace find each chunk in memory, so the file is read from disk once however many
/// hosts receive it; a host that falls more than the cache behind reads its chunks again (from
/// the page cache, in practice) rather than holding the others back.
#[derive(Debug)]
pub struct SharedSource {
    path: PathBuf,
    file: std::fs::File,
    pub size: u64,
    cache: std::sync::Mutex<std::collections::BTreeMap<u64, std::sync::Arc<Vec<u8>>>>,
    cache_bytes: std::sync::atomic::AtomicUsize,
    disk_reads: std::sync::atomic::AtomicU64,
    /// SHA-256 of the chunks in file order, taken as the first host to need each chunk gets
    /// it, so a push to many hosts hashes the file once (for audit records).
    digest: std::sync::Mutex<StreamDigest>,
}

impl SharedSource {
    pub fn open(path: &Path) -> Result<SharedSource, TransferError> {
        let file = std::fs::File::open(path).map_err(|e| local_error(path, e))?;
        let size = file.metadata().map_err(|e| local_error(path, e))?.len();
        Ok(SharedSource {
            path: path.to_path_buf(),
            file,
            size,
            cache: std::sync::Mutex::new(std::collections::BTreeMap::new()),
            cache_bytes: std::sync::atomic::AtomicUsize::new(0),
            disk_reads: std::sync::atomic::AtomicU64::new(0),
            digest: std::sync::Mutex::new(StreamDigest::new()),
        })
    }

    /// Lowercase hex SHA-256 of the file's bytes as sent, once every chunk has been sent.
    pub fn sha256(&self) -> Option<String> {
        match self.digest.lock() {
            Ok(digest) => digest.finish(self.size),
            Err(poisoned) => poisoned.into_inner().finish(self.size),
        }
    }

    /// Bytes read from disk so far (for `-v` and for tests of the read-once property).
    pub fn disk_reads(&self) -> u64 {
        self.disk_reads.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn chunk(&self, offset: u64, len: u64) -> Result<std::sync::Arc<Vec<u8>>, TransferError> {
        use std::sync::atomic::Ordering;
        // The lock is held across the read so that two hosts asking for the same chunk at once
        // cause one disk read, not two; a chunk read is a page-cache copy of at most 255 KiB.
        let mut cache = match self.cache.lock() {
            Ok(cache) => cache,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(chunk) = cache.get(&offset) {
            if chunk.len() as u64 == len {
                return Ok(std::sync::Arc::clone(chunk));
            }
        }
        // Every host asks for its chunks in file order, so the one furthest ahead always asks
        // for the next offset to hash, and its chunk is never in the cache yet.
        let mut digest = match self.digest.lock() {
            Ok(digest) => digest,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut data = vec![0u8; len as usize];
        self.file
            .read_exact_at(&mut data, offset)
            .map_err(|e| local_error(&self.path, e))?;
        self.disk_reads.fetch_add(len, Ordering::Relaxed);
        digest.update_at(offset, &data);
        let chunk = std::sync::Arc::new(data);
        cache.insert(offset, std::sync::Arc::clone(&chunk));
        let mut held = self.cache_bytes.fetch_add(len as usize, Ordering::Relaxed) + len as usize;
        // Evict from the lowest offset: every host moves forward, so the oldest chunk is the
        // one the fewest hosts still need.
        while held > SOURCE_CACHE_BYTES {
            let Some((_, evicted)) = cache.pop_first() else {
                break;
            };
            held = self.cache_bytes.fetch_sub(evicted.len(), Ordering::Relaxed) - evicted.len();
        }
        Ok(chunk)
    }
}

/// The local files of one invocation, each opened once and shared by every host.
#[derive(Debug, Default)]
pub struct SourceRegistry {
    files: std::sync::Mutex<std::collections::HashMap<PathBuf, std::sync::Arc<SharedSource>>>,
}

impl SourceRegistry {
    pub fn get(&self, path: &Path) -> Result<std::sync::Arc<SharedSource>, TransferError> {
        let mut files = match self.files.lock() {
            Ok(files) => files,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(source) = files.get(path) {
            return Ok(std::sync::Arc::clone(source));
        }
        let source = std::sync::Arc::new(SharedSource::open(path)?);
        files.insert(path.to_path_buf(), std::sync::Arc::clone(&source));
        Ok(source)
    }

    /// Bytes read from disk across every file.
    pub fn disk_reads(&self) -> u64 {
        match self.files.lock() {
            Ok(files) => files.values().map(|f| f.disk_reads()).sum(),
            Err(poisoned) => poisoned.into_inner().values().map(|f| f.disk_reads()).sum(),
        }
    }
}

/// SFTP resolves relative paths against the login directory; an empty path means that
/// directory itself, as in `host:`.
pub fn sftp_path(path: &str) -> &str {
    if path.is_empty() {
        "."
    } else {
        path
    }
}

/// Whether a path holds a glob wildcard that is not escaped with `\`. A `[` counts only
/// with a `]` after it, as in glob(3), where an unclosed `[` is an ordinary character.
pub fn has_glob_meta(path: &str) -> bool {
    let bytes = path.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'*' | b'?' => return true,
            b'[' if bytes[i + 1..].contains(&b']') => return true,
            _ => {}
        }
        i += 1;
    }
    false
}

/// A glob component without its escapes: `a\*b` names the file `a*b`.
fn glob_unescape(component: &str) -> String {
    let mut out = String::with_capacity(component.len());
    let mut chars = component.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.extend(chars.next()),
            c => out.push(c),
        }
    }
    out
}

/// The path of a glob's next component: the first joins its root (`/` or nothing) as it is,
/// so that a relative pattern's matches stay relative and `.` stays written.
fn glob_join(path: &str, name: &str, first: bool) -> String {
    if first || path.is_empty() || path.ends_with('/') {
        format!("{path}{name}")
    } else {
        format!("{path}/{name}")
    }
}

fn is_link(mode: u32) -> bool {
    mode & 0o170000 == 0o120000
}

/// Whether `name` matches one glob component: `*`, `?`, `[...]` (with `!` to negate and
/// `a-z` ranges), `\` escapes, and a leading `.` only matched by a literal `.`, as glob(3)
/// without GLOB_PERIOD. Matching is on characters, so a multi-byte name counts as one per
/// character for `?`. Only the last `*` is ever backtracked to, which is enough for glob's
/// single-component patterns and bounds the work by the pattern's length times the name's.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    if name.starts_with('.') && !pattern.starts_with('.') {
        return false;
    }
    let pattern: Vec<char> = pattern.chars().collect();
    let name: Vec<char> = name.chars().collect();
    let (mut p, mut n) = (0usize, 0usize);
    // Where the last `*` was, and the name position it currently stands for up to.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        let step = match pattern.get(p) {
            Some('*') => {
                star = Some((p, n));
                p += 1;
                continue;
            }
            Some('?') => Some(p + 1),
            Some('[') => match class_match(&pattern[p..], name[n]) {
                Some((true, len)) => Some(p + len),
                Some((false, _)) => None,
                // An unclosed `[` is an ordinary character.
                None => (name[n] == '[').then_some(p + 1),
            },
            Some('\\') if p + 1 < pattern.len() => (pattern[p + 1] == name[n]).then_some(p + 2),
            Some(&c) => (c == name[n]).then_some(p + 1),
            None => None,
        };
        match step {
            Some(next) => {
                p = next;
                n += 1;
            }
            None => match star {
                Some((star_p, star_n)) => {
                    p = star_p + 1;
                    n = star_n + 1;
                    star = Some((star_p, star_n + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == '*')
}

/// Matches one `[...]` class at the start of `class` against `c`: whether it matched, and
/// the class's length in the pattern; `None` when the class is not closed.
fn class_match(class: &[char], c: char) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = class.get(i) == Some(&'!');
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *class.get(i)?;
        // `]` right after the opening (or its `!`) is a member, not the end.
        if lo == ']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if class.get(i + 1) == Some(&'-') && class.get(i + 2).is_some_and(|&hi| hi != ']') {
            let hi = class[i + 2];
            matched |= lo <= c && c <= hi;
            i += 3;
        } else {
            matched |= lo == c;
            i += 1;
        }
    }
}

/// Joins a remote directory and a name with exactly one `/`.
pub fn remote_join(dir: &str, name: &str) -> String {
    match dir {
        "" | "." => name.to_owned(),
        d if d.ends_with('/') => format!("{d}{name}"),
        d => format!("{d}/{name}"),
    }
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("smscp-{}-{nanos:08x}", std::process::id())
}

fn temporary_name_remote(target: &str) -> String {
    let (dir, name) = match target.rfind('/') {
        Some(i) => (&target[..=i], &target[i + 1..]),
        None => ("", target),
    };
    format!("{dir}.{name}.{}", unique_suffix())
}

fn temporary_name_local(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.{}", unique_suffix()))
}

fn finish_local(
    file: &std::fs::File,
    temporary: &Path,
    target: &Path,
    mode: u32,
    times: Option<&RemoteStat>,
) -> Result<(), TransferError> {
    let fail = |e| local_error(target, e);
    file.set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
        .map_err(fail)?;
    if let Some(stat) = times {
        let times = std::fs::FileTimes::new()
            .set_accessed(UNIX_EPOCH + Duration::from_secs(u64::from(stat.atime)))
            .set_modified(UNIX_EPOCH + Duration::from_secs(u64::from(stat.mtime)));
        file.set_times(times).map_err(fail)?;
    }
    std::fs::rename(temporary, target).map_err(fail)
}

/// Permission bits and (atime, mtime) of a local file, for uploads.
pub fn local_mode_and_times(meta: &std::fs::Metadata) -> (u32, (u32, u32)) {
    let clamp = |secs: i64| u32::try_from(secs.max(0)).unwrap_or(u32::MAX);
    (
        meta.mode() & 0o7777,
        (clamp(meta.atime()), clamp(meta.mtime())),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directory_listings_have_a_limit() {
        let limit = DirLimit {
            entries: 10,
            name_bytes: 100,
        };
        assert_eq!(limit.exceeded(10, 100), None);
        assert_eq!(
            limit.exceeded(11, 0).as_deref(),
            Some(
                "directory listing exceeds 10 entries: copy its subdirectories or files separately"
            )
        );
        assert_eq!(
            limit.exceeded(1, 101).as_deref(),
            Some("directory listing exceeds 100 B of file names: copy its subdirectories or files separately")
        );
        assert!(DirLimit::default()
            .exceeded(MAX_DIR_ENTRIES + 1, 0)
            .is_some_and(|reason| reason.contains("1000000 entries")));
    }

    #[test]
    fn glob_components_match_as_glob3_does() {
        let cases = [
            ("*.log", "a.log", true),
            ("*.log", "a.txt", false),
            ("*.log", ".hidden.log", false),
            (".*.log", ".hidden.log", true),
            ("?.log", "a.log", true),
            ("?.log", "ab.log", false),
            ("?.log", "é.log", true),
            ("[ab].log", "b.log", true),
            ("[ab].log", "c.log", false),
            ("[!ab].log", "c.log", true),
            ("[!ab].log", "a.log", false),
            ("[a-c]x", "bx", true),
            ("[a-c]x", "dx", false),
            ("[]]", "]", true),
            ("[a-]", "-", true),
            ("[ab", "[ab", true),
            ("star\\*", "star*", true),
            ("star\\*", "starX", false),
            ("*a*b*c", "xxaxxbxxc", true),
            ("*a*b*c", "xxaxxcxxb", false),
            ("**", "", true),
            ("*", "", true),
            ("a*", "a", true),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(glob_match(pattern, name), expected, "{pattern:?} {name:?}");
        }
        // A pathological pattern against a long name ends quickly: the only backtracking is
        // to the last star, so the work is at most the pattern's length times the name's.
        let name = "a".repeat(10_000);
        assert!(!glob_match(&format!("{}b", "*a".repeat(50)), &name));
    }

    #[test]
    fn wildcards_are_found_unless_escaped() {
        assert!(has_glob_meta("/var/log/*.log"));
        assert!(has_glob_meta("a?"));
        assert!(has_glob_meta("[ab]"));
        assert!(!has_glob_meta("[ab"));
        assert!(!has_glob_meta("plain/path name:with colon"));
        assert!(!has_glob_meta("star\\*"));
        assert_eq!(glob_unescape("star\\*\\\\x"), "star*\\x");
        assert_eq!(glob_join("/", "var", true), "/var");
        assert_eq!(glob_join("", "var", true), "var");
        assert_eq!(glob_join(".", "a", false), "./a");
        assert_eq!(glob_join("/var", "log", false), "/var/log");
    }

    #[test]
    fn remote_paths() {
        let cases = [
            ("", "f", "f"),
            (".", "f", "f"),
            ("/opt", "f", "/opt/f"),
            ("/opt/", "f", "/opt/f"),
            ("dir", "f", "dir/f"),
        ];
        for (dir, name, joined) in cases {
            assert_eq!(remote_join(dir, name), joined);
        }
        assert_eq!(sftp_path(""), ".");
        let temporary = temporary_name_remote("/opt/app.tar");
        assert!(temporary.starts_with("/opt/.app.tar.smscp-"), "{temporary}");
        assert!(temporary_name_remote("app.tar").starts_with(".app.tar.smscp-"));
        let local = temporary_name_local(Path::new("/tmp/x/file"));
        assert!(
            local.starts_with("/tmp/x")
                && local
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".file.smscp-")
        );
    }
}
