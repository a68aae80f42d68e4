//! scp's semantics on top of [`crate::ssh::transfer`]: which source goes to which target path,
//! recursion, `-p`, the per-source error lines and the exit status.
//!
//! Owns: the rules users know from scp: a directory target receives sources under their own
//! names; several sources need a directory target; directories need `-r`; every failing source
//! prints `smscp: PATH: reason` and the rest still copy; exit 1 if anything failed. Invariant:
//! names that come from a server in a remote→local recursive copy are plain names (no `/`,
//! `.`, `..`) before they touch the local file system, and such a copy goes at most 64
//! directory levels deep (a server can list a symbolic link loop as a directory); a link in
//! it is copied as the regular file it points to, with that file's mode. Remote sources are
//! globs expanded on the server, and a remote source with a remote target goes through this
//! host (scp's `-3`); modes follow OpenSSH 9.2's scp, which `tests/scp_compare.rs` checks.
//! Must not know: SFTP packets or how connections are made.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::audit::{self, Action, Auditor, KeyUsed, Outcome};
use crate::config::operand::{is_plain_name, Operand, RemotePath};
use crate::fanout;
use crate::key::source::KeySource;
use crate::plan::copy::{CopyPlan, CopyRequest, FanoutCopy};
use crate::plan::{FanoutOptions, HostPlan, SshOptions};
use crate::ssh::session::{self, ConnectError, Connection, HostKeyDb};
use crate::ssh::transfer::{
    self, DirLimit, Meter, Permissions, RemoteStat, Sftp, SourceRegistry, TransferError,
};
use crate::term::output;
use crate::term::progress::Progress;

/// What every host of one copy shares.
pub struct CopyContext {
    pub recursive: bool,
    pub preserve: bool,
    pub limit_kbits: Option<u64>,
    /// How much one remote directory listing may hold (`--max-dir-entries`).
    pub dir_limit: DirLimit,
    pub registry: SourceRegistry,
    pub progress: Arc<Progress>,
    /// Where each file's upload or download is recorded.
    pub audit: Arc<Auditor>,
    umask: u32,
}

impl CopyContext {
    pub fn new(plan: &CopyPlan, progress: Arc<Progress>) -> CopyContext {
        CopyContext {
            recursive: plan.recursive,
            preserve: plan.preserve,
            limit_kbits: plan.limit_kbits,
            dir_limit: DirLimit {
                entries: plan.max_dir_entries,
                ..DirLimit::default()
            },
            registry: SourceRegistry::default(),
            progress,
            audit: Arc::new(Auditor::none()),
            umask: current_umask(),
        }
    }

    /// The same context, recording each host action with `audit`.
    pub fn with_audit(self, audit: Arc<Auditor>) -> CopyContext {
        CopyContext { audit, ..self }
    }
}

/// The host a copy is working on and the key it logged in with, for audit records.
#[derive(Debug, Clone)]
pub struct AuditedHost {
    host: audit::Host,
    key: KeyUsed,
}

impl AuditedHost {
    pub fn of(plan: &HostPlan, conn: Option<&Connection>) -> AuditedHost {
        AuditedHost {
            host: audit::Host {
                host: plan.hostname.clone(),
                port: plan.port,
                login: plan.user.clone(),
            },
            key: conn.map(Connection::audited_key).unwrap_or_default(),
        }
    }

    fn record(
        &self,
        ctx: &CopyContext,
        action: Action,
        outcome: Outcome,
        started: std::time::Instant,
    ) {
        self.record_to(&ctx.audit, action, outcome, started);
    }

    /// One record of `action` on this host, to `auditor`.
    pub fn record_to(
        &self,
        auditor: &Auditor,
        action: Action,
        outcome: Outcome,
        started: std::time::Instant,
    ) {
        auditor.record(&audit::Event {
            host: Some(self.host.clone()),
            key: self.key.clone(),
            action,
            outcome,
            exit_status: None,
            duration: started.elapsed(),
        });
    }
}

/// The failures of one host's part of a copy. A single-host copy prints each at once, as
/// scp does; a fan-out keeps them for its summary, one line per failed host. Every file
/// copied is one audit record (`transferred`); every failure before or around a file (a
/// missing source, a target that is not a directory, a directory that cannot be made) is
/// one record of the attempt it stopped (`attempt`), so a refusal is audited as well.
pub struct Report {
    echo: bool,
    pub failures: usize,
    pub first: Option<String>,
    /// The hosts the next transfers happen on, for their audit records: the target, and for
    /// a copy between two hosts (`-3`) the source as well.
    hosts: Vec<AuditedHost>,
    /// What the copy is attempting now, recorded as failed if a failure stops it.
    attempt: Option<Action>,
}

impl Report {
    pub fn new(echo: bool) -> Report {
        Report {
            echo,
            failures: 0,
            first: None,
            hosts: Vec::new(),
            attempt: None,
        }
    }

    /// The host (and key) the following transfers are on.
    pub fn on_host(&mut self, host: AuditedHost) {
        self.hosts = vec![host];
    }

    /// The two hosts of a copy between them (`-3`): records go to both.
    fn on_hosts(&mut self, target: AuditedHost, source: AuditedHost) {
        self.hosts = vec![target, source];
    }

    /// The action the following failures stop, until the next call.
    fn attempt(&mut self, action: Action) {
        self.attempt = Some(action);
    }

    fn record(&self, ctx: &CopyContext, action: &Action, outcome: &Outcome, started: Instant) {
        for host in &self.hosts {
            host.record(ctx, action.clone(), outcome.clone(), started);
        }
    }

    /// Records one transfer: ok, or failed with the line `fail` printed (or kept).
    fn transferred(
        &mut self,
        ctx: &CopyContext,
        action: Action,
        result: Result<(), String>,
        started: Instant,
    ) {
        let outcome = match result {
            Ok(()) => Outcome::Ok,
            Err(line) => {
                self.note(ctx, &line);
                Outcome::Failed(line)
            }
        };
        self.record(ctx, &action, &outcome, started);
    }

    /// A failure outside any one file's transfer: printed (or kept), and recorded as the
    /// failure of the current attempt on the current hosts.
    fn fail(&mut self, ctx: &CopyContext, what: impl std::fmt::Display) {
        let line = what.to_string();
        self.note(ctx, &line);
        if let Some(action) = &self.attempt {
            self.record(ctx, action, &Outcome::Failed(line), Instant::now());
        }
    }

    fn note(&mut self, ctx: &CopyContext, text: &str) {
        self.failures += 1;
        if self.echo {
            ctx.progress
                .line(&format!("{}: {text}", crate::term::diag::program()));
        }
        if self.first.is_none() {
            self.first = Some(text.to_owned());
        }
    }

    /// The host's result for a fan-out summary.
    fn into_result(self) -> Result<(), HostCopyFailure> {
        match self.first {
            Some(first) if self.failures > 0 => Err(HostCopyFailure {
                first,
                more: self.failures - 1,
            }),
            _ => Ok(()),
        }
    }
}

/// One host's failed part of a fan-out copy: the line of its first failing source (scp's
/// `PATH: reason`) and how many more failed, for the summary's one line per host.
#[derive(Debug, thiserror::Error)]
#[error("{first}{}", if *.more > 0 { format!(" (and {} more errors)", .more) } else { String::new() })]
pub struct HostCopyFailure {
    first: String,
    more: usize,
}

impl HostCopyFailure {
    fn one(line: String) -> HostCopyFailure {
        HostCopyFailure {
            first: line,
            more: 0,
        }
    }
}

/// Why a single-host copy could not start on a host.
#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("{host}: {source}")]
    Sftp { host: String, source: TransferError },
}

fn describe(host: &str, err: &TransferError) -> String {
    match err {
        TransferError::Remote { path, reason } => format!("{host}:{path}: {reason}"),
        TransferError::Local { .. } | TransferError::Interrupted { .. } => err.to_string(),
        TransferError::Subsystem { .. } => format!("{host}: {err}"),
    }
}

/// Runs a single-host copy (scp's own job); returns scp's exit status (0, 1, or 130).
pub async fn run(
    request: &CopyRequest,
    ssh: &SshOptions,
    keys: &KeySource,
    db: &HostKeyDb,
    ctx: &CopyContext,
) -> u8 {
    let mut report = Report::new(true);
    let (meter, _bar) = ctx.progress.host("", ctx.limit_kbits);
    match &request.target {
        Operand::Remote(target) => {
            match open(target, request, ssh, keys, db, ctx.dir_limit).await {
                Ok((conn, plan, sftp)) => {
                    let target_host = AuditedHost::of(&plan, Some(&conn));
                    report.on_host(target_host.clone());
                    let sources: Vec<PathBuf> = request
                        .sources
                        .iter()
                        .filter_map(|s| match s {
                            Operand::Local(path) => Some(path.clone()),
                            Operand::Remote(_) => None,
                        })
                        .collect();
                    if !sources.is_empty() {
                        push(
                            &sftp,
                            &target.host,
                            &sources,
                            &target.path,
                            ctx,
                            &meter,
                            &mut report,
                        )
                        .await;
                    }
                    let to = Side {
                        sftp: &sftp,
                        host: &target.host,
                    };
                    let several = request.sources.len() > 1;
                    // Remote sources come through this host (scp's -3, its default), one
                    // session per source host.
                    for host in source_hosts(&request.sources) {
                        if crate::term::cancel::requested() {
                            break;
                        }
                        let paths = paths_on(&request.sources, host);
                        match open(host, request, ssh, keys, db, ctx.dir_limit).await {
                            Ok((from_conn, from_plan, from_sftp)) => {
                                report.on_hosts(
                                    target_host.clone(),
                                    AuditedHost::of(&from_plan, Some(&from_conn)),
                                );
                                let from = Side {
                                    sftp: &from_sftp,
                                    host: &host.host,
                                };
                                let cross = Cross {
                                    from,
                                    to,
                                    ctx,
                                    meter: &meter,
                                };
                                cross.copy(&paths, &target.path, several, &mut report).await;
                            }
                            Err(err) => {
                                let from_plan = ssh.plan(
                                    &host.host,
                                    host.user.as_deref(),
                                    host.port.or(request.port),
                                );
                                report.on_hosts(
                                    target_host.clone(),
                                    AuditedHost::of(&from_plan, None),
                                );
                                report.attempt(relay_attempt(
                                    &host.host,
                                    &paths,
                                    &target.host,
                                    &target.path,
                                ));
                                report.fail(ctx, err);
                            }
                        }
                    }
                }
                Err(err) => {
                    let line = err.to_string();
                    let local = request
                        .sources
                        .iter()
                        .filter_map(|s| match s {
                            Operand::Local(path) => Some(path.display().to_string()),
                            Operand::Remote(_) => None,
                        })
                        .collect::<Vec<_>>()
                        .join(" ");
                    let plan = ssh.plan(
                        &target.host,
                        target.user.as_deref(),
                        target.port.or(request.port),
                    );
                    report.on_host(AuditedHost::of(&plan, None));
                    report.attempt(Action::Upload {
                        local,
                        remote: target.path.clone(),
                        bytes: 0,
                        sha256: None,
                    });
                    report.fail(ctx, line);
                }
            }
        }
        Operand::Local(target) => {
            // Several sources need a directory target, checked before anything connects, as
            // scp's verifydir does (in its words: a missing target is "No such file or
            // directory").
            let not_a_dir = match std::fs::metadata(target) {
                Ok(meta) if meta.is_dir() => None,
                Ok(_) => Some("Not a directory".to_owned()),
                Err(err) => Some(transfer::io_reason(&err)),
            };
            if let (true, Some(reason)) = (request.sources.len() > 1, not_a_dir) {
                report.fail(ctx, format!("{}: {reason}", target.display()));
            } else {
                // Sources on several hosts are fetched host by host, one session each.
                for host in source_hosts(&request.sources) {
                    if crate::term::cancel::requested() {
                        break;
                    }
                    let paths = paths_on(&request.sources, host);
                    match open(host, request, ssh, keys, db, ctx.dir_limit).await {
                        Ok((conn, plan, sftp)) => {
                            report.on_host(AuditedHost::of(&plan, Some(&conn)));
                            pull(&sftp, &host.host, &paths, target, ctx, &meter, &mut report).await
                        }
                        Err(err) => {
                            let plan = ssh.plan(
                                &host.host,
                                host.user.as_deref(),
                                host.port.or(request.port),
                            );
                            report.on_host(AuditedHost::of(&plan, None));
                            report.attempt(Action::Download {
                                local: target.display().to_string(),
                                remote: paths.join(" "),
                                bytes: 0,
                                sha256: None,
                            });
                            report.fail(ctx, err)
                        }
                    }
                }
            }
        }
    }
    ctx.progress.finish();
    exit_status(report.failures > 0)
}

fn same_host(a: &RemotePath, b: &RemotePath) -> bool {
    a.user == b.user && a.host == b.host && a.port == b.port
}

/// The distinct hosts of the remote sources, in the order they were first named.
fn source_hosts(sources: &[Operand]) -> Vec<&RemotePath> {
    let mut hosts: Vec<&RemotePath> = Vec::new();
    for source in sources {
        if let Operand::Remote(remote) = source {
            if !hosts.iter().any(|h| same_host(h, remote)) {
                hosts.push(remote);
            }
        }
    }
    hosts
}

/// The paths of the sources on `host`, in order.
fn paths_on(sources: &[Operand], host: &RemotePath) -> Vec<String> {
    sources
        .iter()
        .filter_map(|s| match s {
            Operand::Remote(r) if same_host(r, host) => Some(r.path.clone()),
            _ => None,
        })
        .collect()
}

/// scp's status: 130 after Ctrl-C, 1 if anything failed, else 0.
pub fn exit_status(failed: bool) -> u8 {
    if crate::term::cancel::requested() {
        130
    } else {
        u8::from(failed)
    }
}

async fn open(
    remote: &RemotePath,
    request: &CopyRequest,
    ssh: &SshOptions,
    keys: &KeySource,
    db: &HostKeyDb,
    dir_limit: DirLimit,
) -> Result<(Connection, HostPlan, Sftp), OpenError> {
    let plan = ssh.plan(
        &remote.host,
        remote.user.as_deref(),
        remote.port.or(request.port),
    );
    let conn = session::connect(&plan, keys, db).await?;
    let mut sftp = Sftp::open(&conn, transfer::IN_FLIGHT_SINGLE)
        .await
        .map_err(|source| OpenError::Sftp {
            host: remote.host.clone(),
            source,
        })?;
    sftp.set_dir_limit(dir_limit);
    Ok((conn, plan, sftp))
}

fn local_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// Copies local `sources` to `target` on one host, with scp's rules.
pub async fn push(
    sftp: &Sftp,
    host: &str,
    sources: &[PathBuf],
    target: &str,
    ctx: &CopyContext,
    meter: &Meter,
    report: &mut Report,
) {
    report.attempt(upload_attempt(sources.iter().map(|p| p.as_path()), target));
    let (target_exists, target_is_dir) = match sftp.stat(target).await {
        Ok(stat) => (stat.is_some(), stat.is_some_and(|s| s.is_dir)),
        Err(err) => return report.fail(ctx, describe(host, &err)),
    };
    if sources.len() > 1 && target_exists && !target_is_dir {
        return report.fail(ctx, format!("{host}:{target}: Not a directory"));
    }
    // Several sources into a target that does not exist yet: scp makes the directory, with
    // the first source's mode made writable and searchable for its owner.
    let target_is_dir = if sources.len() > 1 && !target_exists {
        let mode = std::fs::metadata(&sources[0])
            .map(|meta| transfer::local_mode_and_times(&meta).0)
            .unwrap_or(0o755);
        if let Err(err) = sftp.mkdir(target, (mode & 0o777) | 0o700).await {
            return report.fail(ctx, describe(host, &err));
        }
        true
    } else {
        target_is_dir
    };
    for path in sources {
        if crate::term::cancel::requested() {
            break;
        }
        let dest = if target_is_dir {
            transfer::remote_join(target, &local_name(path))
        } else {
            target.to_owned()
        };
        report.attempt(upload_attempt(std::iter::once(path.as_path()), &dest));
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(err) => {
                report.fail(ctx, describe(host, &transfer::local_error(path, err)));
                continue;
            }
        };
        if meta.is_dir() {
            if !ctx.recursive {
                report.fail(
                    ctx,
                    format!("{}: not a regular file (use -r)", path.display()),
                );
                continue;
            }
            push_tree(sftp, host, path, &dest, ctx, meter, report).await;
        } else {
            push_one(sftp, host, path, &meta, &dest, ctx, meter, report).await;
        }
    }
}

#[allow(clippy::too_many_arguments)] // One file's worth of context; a struct would only rename it.
async fn push_one(
    sftp: &Sftp,
    host: &str,
    path: &Path,
    meta: &std::fs::Metadata,
    dest: &str,
    ctx: &CopyContext,
    meter: &Meter,
    report: &mut Report,
) {
    if !meta.is_file() {
        return report.fail(ctx, format!("{}: not a regular file", path.display()));
    }
    let source = match ctx.registry.get(path) {
        Ok(source) => source,
        Err(err) => return report.fail(ctx, describe(host, &err)),
    };
    let (mode, times) = transfer::local_mode_and_times(meta);
    let mode = match remote_permissions(sftp, dest, mode, ctx.preserve).await {
        Ok(mode) => mode,
        Err(err) => return report.fail(ctx, describe(host, &err)),
    };
    meter.expect(source.size);
    let started = std::time::Instant::now();
    let result = sftp
        .upload(&source, dest, mode, ctx.preserve.then_some(times), meter)
        .await;
    let (bytes, sha256) = match &result {
        Ok(bytes) => (*bytes, source.sha256()),
        Err(_) => (0, None),
    };
    let action = Action::Upload {
        local: path.display().to_string(),
        remote: dest.to_owned(),
        bytes,
        sha256,
    };
    let result = result.map(|_| ()).map_err(|err| describe(host, &err));
    report.transferred(ctx, action, result, started);
}

/// The mode a file written to `dest` on a server gets: `mode` under `-p` (exactly) or for a
/// new file (under the server's umask); without `-p`, a file it replaces keeps its own mode,
/// as with scp, which writes into the existing file. Costs one STAT per file.
async fn remote_permissions(
    sftp: &Sftp,
    dest: &str,
    mode: u32,
    preserve: bool,
) -> Result<Permissions, TransferError> {
    if preserve {
        return Ok(Permissions::Exact(mode));
    }
    Ok(match sftp.stat(dest).await? {
        Some(existing) if is_regular(existing.mode) => Permissions::Exact(existing.mode & 0o777),
        _ => Permissions::Masked(mode),
    })
}

async fn push_tree(
    sftp: &Sftp,
    host: &str,
    dir: &Path,
    dest: &str,
    ctx: &CopyContext,
    meter: &Meter,
    report: &mut Report,
) {
    // An explicit stack instead of recursion: async recursion would need boxing per level.
    let mut stack = vec![(dir.to_path_buf(), dest.to_owned())];
    let mut finished_dirs = Vec::new();
    while let Some((local_dir, remote_dir)) = stack.pop() {
        if crate::term::cancel::requested() {
            break;
        }
        let meta = match std::fs::metadata(&local_dir) {
            Ok(meta) => meta,
            Err(err) => {
                report.fail(ctx, describe(host, &transfer::local_error(&local_dir, err)));
                continue;
            }
        };
        let (mode, times) = transfer::local_mode_and_times(&meta);
        if let Err(err) = sftp.mkdir(&remote_dir, mode | 0o700).await {
            report.fail(ctx, describe(host, &err));
            continue;
        }
        let entries = match std::fs::read_dir(&local_dir) {
            Ok(entries) => entries,
            Err(err) => {
                report.fail(ctx, describe(host, &transfer::local_error(&local_dir, err)));
                continue;
            }
        };
        let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for path in names {
            let child = transfer::remote_join(&remote_dir, &local_name(&path));
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => stack.push((path, child)),
                Ok(meta) => push_one(sftp, host, &path, &meta, &child, ctx, meter, report).await,
                Err(err) => report.fail(ctx, describe(host, &transfer::local_error(&path, err))),
            }
        }
        finished_dirs.push((remote_dir, mode, times));
    }
    // Directory modes and times go last: writing the files inside would change the mtime,
    // and a read-only mode would refuse them.
    if ctx.preserve {
        for (remote_dir, mode, times) in finished_dirs.into_iter().rev() {
            if let Err(err) = sftp
                .set_times_and_mode(&remote_dir, Some(mode), Some(times))
                .await
            {
                report.fail(ctx, describe(host, &err));
            }
        }
    }
}

/// How deep a recursive download goes below its top directory, OpenSSH's `MAX_DIR_DEPTH`.
const MAX_DIR_DEPTH: usize = 64;

const FILE_TYPE: u32 = 0o170000;

fn is_symlink(mode: u32) -> bool {
    mode & FILE_TYPE == 0o120000
}

/// A regular file, or a mode that does not say its type.
fn is_regular(mode: u32) -> bool {
    matches!(mode & FILE_TYPE, 0 | 0o100000)
}

/// The last component of a remote path, which names the local copy.
fn remote_name(path: &str) -> Option<&str> {
    let trimmed = path.trim_end_matches('/');
    let name = trimmed.rsplit('/').next().unwrap_or(trimmed);
    is_plain_name(name).then_some(name)
}

/// The permission bits a downloaded file or directory gets: the remote mode without the
/// setuid, setgid and sticky bits, as OpenSSH's scp does with or without `-p` (a compromised
/// server must not plant a setuid program owned by whoever ran `smscp -rp`); without `-p`,
/// writable by its owner and under our umask, as scp creates it.
fn local_mode(remote_mode: u32, preserve: bool, umask: u32) -> u32 {
    if preserve {
        remote_mode & 0o777
    } else {
        (remote_mode & 0o777 | 0o200) & !umask
    }
}

fn current_umask() -> u32 {
    use nix::sys::stat::{umask, Mode};
    // umask can only be read by setting it; it is put back at once, before any file is made.
    let old = umask(Mode::from_bits_truncate(0o022));
    umask(old);
    old.bits()
}

/// Copies `sources` from one host to the local `target`, with scp's rules. A source with
/// wildcards is expanded on the server, as OpenSSH's SFTP-mode scp does; one that matches
/// nothing is taken as a plain name, which then has to exist.
pub async fn pull(
    sftp: &Sftp,
    host: &str,
    sources: &[String],
    target: &Path,
    ctx: &CopyContext,
    meter: &Meter,
    report: &mut Report,
) {
    let mut target_is_dir = target.is_dir();
    for path in sources {
        if crate::term::cancel::requested() {
            break;
        }
        report.attempt(Action::Download {
            local: target.display().to_string(),
            remote: path.clone(),
            bytes: 0,
            sha256: None,
        });
        let matches = match expand(sftp, path).await {
            Ok(Some(matches)) => matches,
            Ok(None) => {
                report.fail(ctx, format!("{host}:{path}: No such file or directory"));
                continue;
            }
            Err(err) => {
                report.fail(ctx, describe(host, &err));
                continue;
            }
        };
        // Several matches need a directory, which scp makes when the target does not exist
        // yet (and refuses when it is something else).
        if matches.len() > 1 && !target_is_dir {
            if target.symlink_metadata().is_ok() {
                report.fail(
                    ctx,
                    format!(
                        "{host}:{path}: Multiple files match pattern, but destination \"{}\" is not a directory",
                        target.display()
                    ),
                );
                continue;
            }
            if let Err(err) = std::fs::create_dir(target) {
                report.fail(ctx, describe(host, &transfer::local_error(target, err)));
                continue;
            }
            target_is_dir = true;
        }
        for (path, stat) in matches {
            if crate::term::cancel::requested() {
                break;
            }
            pull_match(
                sftp,
                host,
                &path,
                &stat,
                target,
                target_is_dir,
                ctx,
                meter,
                report,
            )
            .await;
        }
    }
}

/// A source's paths on the server with their `stat`: its glob matches, or the path itself
/// when it has no wildcard or its pattern matched nothing; `None` when that does not exist.
async fn expand(
    sftp: &Sftp,
    path: &str,
) -> Result<Option<Vec<(String, RemoteStat)>>, TransferError> {
    // A `\` escape is glob syntax too: `star\*.log` names `star*.log`.
    if transfer::has_glob_meta(path) || path.contains('\\') {
        if let Some(matches) = sftp.glob(path).await? {
            return Ok(Some(matches));
        }
    }
    Ok(sftp
        .stat(path)
        .await?
        .map(|stat| vec![(path.to_owned(), stat)]))
}

/// Copies one remote path (a source, or one of its glob's matches) to the local target.
#[allow(clippy::too_many_arguments)] // One file's worth of context; a struct would only rename it.
async fn pull_match(
    sftp: &Sftp,
    host: &str,
    path: &str,
    stat: &RemoteStat,
    target: &Path,
    target_is_dir: bool,
    ctx: &CopyContext,
    meter: &Meter,
    report: &mut Report,
) {
    // A target written with a trailing `/` names a directory; if there is none, nothing is
    // written (a temporary file beside it would be left behind for nothing).
    if !target_is_dir && target.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return report.fail(
            ctx,
            format!(
                "{}: No such file or directory (the target directory is missing)",
                target.display()
            ),
        );
    }
    let dest = if target_is_dir {
        match remote_name(path) {
            Some(name) => target.join(name),
            None => {
                return report.fail(
                    ctx,
                    format!("{host}:{path}: cannot name the local copy: give a target file name"),
                )
            }
        }
    } else {
        target.to_path_buf()
    };
    if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.is_dir() {
            return report.fail(
                ctx,
                format!(
                    "{}: No such file or directory (the target directory is missing)",
                    parent.display()
                ),
            );
        }
    }
    if stat.is_dir {
        if !ctx.recursive {
            return report.fail(ctx, format!("{host}:{path}: not a regular file (use -r)"));
        }
        pull_tree(sftp, host, path, stat, &dest, ctx, meter, report).await;
    } else if !is_regular(stat.mode) {
        report.fail(ctx, format!("{host}:{path}: not a regular file"));
    } else {
        pull_one(sftp, host, path, stat, &dest, ctx, meter, report).await;
    }
}

#[allow(clippy::too_many_arguments)] // One file's worth of context; a struct would only rename it.
async fn pull_one(
    sftp: &Sftp,
    host: &str,
    path: &str,
    stat: &RemoteStat,
    dest: &Path,
    ctx: &CopyContext,
    meter: &Meter,
    report: &mut Report,
) {
    meter.expect(stat.size);
    // Without -p a file that replaces another keeps that one's mode, as scp's write into the
    // existing file does.
    let mode = match std::fs::metadata(dest) {
        Ok(existing) if existing.is_file() && !ctx.preserve => {
            std::os::unix::fs::PermissionsExt::mode(&existing.permissions()) & 0o777
        }
        _ => local_mode(stat.mode, ctx.preserve, ctx.umask),
    };
    let started = std::time::Instant::now();
    let result = sftp
        .download(path, stat, dest, mode, ctx.preserve, meter)
        .await;
    let copied = result.as_ref().ok();
    let action = Action::Download {
        local: dest.display().to_string(),
        remote: path.to_owned(),
        bytes: copied.map_or(0, |c| c.bytes),
        sha256: copied.and_then(|c| c.sha256.clone()),
    };
    let result = result.map(|_| ()).map_err(|err| describe(host, &err));
    report.transferred(ctx, action, result, started);
}

/// The mode a downloaded directory is made with, and the one it gets once its files are in
/// (`None` when that is the same), as OpenSSH's scp does with or without `-p`: made with the
/// remote bits plus the owner's write and search (so the copy can fill it) under our umask,
/// then set to the remote bits exactly if those lack either. Setuid, setgid and sticky bits
/// are dropped, as for files.
fn local_dir_modes(remote_mode: u32) -> (u32, Option<u32>) {
    let mode = remote_mode & 0o777;
    let while_copying = mode | 0o300;
    (while_copying, (mode != while_copying).then_some(mode))
}

#[allow(clippy::too_many_arguments)] // One tree's worth of context; a struct would only rename it.
async fn pull_tree(
    sftp: &Sftp,
    host: &str,
    dir: &str,
    dir_stat: &RemoteStat,
    dest: &Path,
    ctx: &CopyContext,
    meter: &Meter,
    report: &mut Report,
) {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    // Each directory's depth below `dir`, which is 0: a server whose listings never end in
    // depth (a symbolic link loop it lists as a directory) stops at OpenSSH's limit.
    let mut stack = vec![(dir.to_owned(), dir_stat.clone(), dest.to_path_buf(), 0usize)];
    let mut finished_dirs = Vec::new();
    while let Some((remote_dir, dir_stat, local_dir, depth)) = stack.pop() {
        if crate::term::cancel::requested() {
            break;
        }
        if depth >= MAX_DIR_DEPTH {
            report.fail(ctx, too_deep(host, &remote_dir));
            continue;
        }
        let (while_copying, final_mode) = local_dir_modes(dir_stat.mode);
        if let Err(err) = std::fs::DirBuilder::new()
            .mode(while_copying)
            .create(&local_dir)
        {
            if !(err.kind() == std::io::ErrorKind::AlreadyExists && local_dir.is_dir()) {
                report.fail(ctx, describe(host, &transfer::local_error(&local_dir, err)));
                continue;
            }
        }
        // Mode and times are set once the directory is full; from here it must be.
        finished_dirs.push((local_dir.clone(), dir_stat, final_mode));
        let entries = match sftp.read_dir(&remote_dir).await {
            Ok(entries) => entries,
            Err(err) => {
                report.fail(ctx, describe(host, &err));
                continue;
            }
        };
        for (name, stat) in entries {
            let Some(stat) = tree_entry(sftp, host, &remote_dir, &name, stat, ctx, report).await
            else {
                continue;
            };
            let child_remote = transfer::remote_join(&remote_dir, &name);
            let child_local = local_dir.join(&name);
            if stat.is_dir {
                stack.push((child_remote, stat, child_local, depth + 1));
            } else {
                pull_one(
                    sftp,
                    host,
                    &child_remote,
                    &stat,
                    &child_local,
                    ctx,
                    meter,
                    report,
                )
                .await;
            }
        }
    }
    // Directory modes and times go last, deepest first: writing the files inside would
    // change the times, and a read-only mode would refuse them.
    for (local_dir, stat, final_mode) in finished_dirs.into_iter().rev() {
        let times = ctx.preserve.then(|| {
            std::fs::FileTimes::new()
                .set_accessed(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(stat.atime)),
                )
                .set_modified(
                    std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::from(stat.mtime)),
                )
        });
        let applied = times
            .map_or(Ok(()), |times| {
                std::fs::File::open(&local_dir)?.set_times(times)
            })
            .and_then(|()| {
                final_mode.map_or(Ok(()), |mode| {
                    std::fs::set_permissions(&local_dir, std::fs::Permissions::from_mode(mode))
                })
            });
        if let Err(err) = applied {
            report.fail(ctx, describe(host, &transfer::local_error(&local_dir, err)));
        }
    }
}

/// One end of a remote-to-remote copy.
#[derive(Clone, Copy)]
struct Side<'a> {
    sftp: &'a Sftp,
    host: &'a str,
}

/// A remote-to-remote copy through this host (scp's `-3`, its default): the same rules as a
/// download (globs expanded on the source, plain names, the depth limit, links copied as the
/// files they point to), written as an upload is.
struct Cross<'a> {
    from: Side<'a>,
    to: Side<'a>,
    ctx: &'a CopyContext,
    meter: &'a Meter,
}

impl Cross<'_> {
    async fn copy(&self, sources: &[String], target: &str, several: bool, report: &mut Report) {
        let (from, to, ctx) = (self.from, self.to, self.ctx);
        report.attempt(relay_attempt(from.host, sources, to.host, target));
        let target_is_dir = match to.sftp.stat(target).await {
            Ok(stat) => stat.is_some_and(|s| s.is_dir),
            Err(err) => return report.fail(ctx, describe(to.host, &err)),
        };
        if several && !target_is_dir {
            return report.fail(ctx, format!("{}:{target}: Not a directory", to.host));
        }
        for path in sources {
            report.attempt(relay_attempt(
                from.host,
                std::slice::from_ref(path),
                to.host,
                target,
            ));
            let matches = match expand(from.sftp, path).await {
                Ok(Some(matches)) => matches,
                Ok(None) => {
                    report.fail(
                        ctx,
                        format!("{}:{path}: No such file or directory", from.host),
                    );
                    continue;
                }
                Err(err) => {
                    report.fail(ctx, describe(from.host, &err));
                    continue;
                }
            };
            for (path, stat) in matches {
                if crate::term::cancel::requested() {
                    return;
                }
                let dest = if target_is_dir {
                    match remote_name(&path) {
                        Some(name) => transfer::remote_join(target, name),
                        None => {
                            report.fail(
                                ctx,
                                format!(
                                    "{}:{path}: cannot name the copy: give a target file name",
                                    from.host
                                ),
                            );
                            continue;
                        }
                    }
                } else {
                    target.to_owned()
                };
                if stat.is_dir {
                    if ctx.recursive {
                        self.tree(&path, &dest, report).await;
                    } else {
                        report.fail(
                            ctx,
                            format!("{}:{path}: not a regular file (use -r)", from.host),
                        );
                    }
                } else if !is_regular(stat.mode) {
                    report.fail(ctx, format!("{}:{path}: not a regular file", from.host));
                } else {
                    self.file(&path, &stat, &dest, report).await;
                }
            }
        }
    }

    async fn file(&self, path: &str, stat: &RemoteStat, dest: &str, report: &mut Report) {
        self.meter.expect(stat.size);
        let times = self.ctx.preserve.then_some((stat.atime, stat.mtime));
        // The source's permission bits without setuid, setgid and sticky, as a download
        // takes them.
        let mode = match remote_permissions(
            self.to.sftp,
            dest,
            stat.mode & 0o777,
            self.ctx.preserve,
        )
        .await
        {
            Ok(mode) => mode,
            Err(err) => return report.fail(self.ctx, describe(self.to.host, &err)),
        };
        let started = Instant::now();
        let result = self
            .to
            .sftp
            .crossload(self.from.sftp, path, stat, dest, mode, times, self.meter)
            .await;
        let copied = result.as_ref().ok();
        let action = Action::Relay {
            from: format!("{}:{path}", self.from.host),
            to: format!("{}:{dest}", self.to.host),
            bytes: copied.map_or(0, |c| c.bytes),
            sha256: copied.and_then(|c| c.sha256.clone()),
        };
        let result = result.map(|_| ()).map_err(|err| {
            // The error names the path it is about: the source's (when the two differ) was
            // the reading side's.
            let host = match &err {
                TransferError::Remote { path: failed, .. } if failed == path && path != dest => {
                    self.from.host
                }
                _ => self.to.host,
            };
            describe(host, &err)
        });
        report.transferred(self.ctx, action, result, started);
    }

    async fn tree(&self, dir: &str, dest: &str, report: &mut Report) {
        let (from, to, ctx) = (self.from, self.to, self.ctx);
        let mut stack = vec![(dir.to_owned(), dest.to_owned(), 0usize)];
        let mut finished_dirs = Vec::new();
        while let Some((remote_dir, target_dir, depth)) = stack.pop() {
            if crate::term::cancel::requested() {
                break;
            }
            if depth >= MAX_DIR_DEPTH {
                report.fail(ctx, too_deep(from.host, &remote_dir));
                continue;
            }
            let dir_stat = match from.sftp.stat(&remote_dir).await {
                Ok(Some(stat)) => stat,
                Ok(None) => {
                    report.fail(
                        ctx,
                        format!("{}:{remote_dir}: No such file or directory", from.host),
                    );
                    continue;
                }
                Err(err) => {
                    report.fail(ctx, describe(from.host, &err));
                    continue;
                }
            };
            if let Err(err) = to
                .sftp
                .mkdir(&target_dir, (dir_stat.mode & 0o777) | 0o700)
                .await
            {
                report.fail(ctx, describe(to.host, &err));
                continue;
            }
            let entries = match from.sftp.read_dir(&remote_dir).await {
                Ok(entries) => entries,
                Err(err) => {
                    report.fail(ctx, describe(from.host, &err));
                    continue;
                }
            };
            for (name, stat) in entries {
                let Some(stat) =
                    tree_entry(from.sftp, from.host, &remote_dir, &name, stat, ctx, report).await
                else {
                    continue;
                };
                let child = transfer::remote_join(&remote_dir, &name);
                let child_dest = transfer::remote_join(&target_dir, &name);
                if stat.is_dir {
                    stack.push((child, child_dest, depth + 1));
                } else {
                    self.file(&child, &stat, &child_dest, report).await;
                }
            }
            finished_dirs.push((target_dir, dir_stat));
        }
        // OpenSSH 9.2's scp -3 gives every directory it made the source's mode and times,
        // with or without -p; so does this copy.
        for (target_dir, stat) in finished_dirs.into_iter().rev() {
            let applied = to
                .sftp
                .set_times_and_mode(
                    &target_dir,
                    Some(stat.mode & 0o777),
                    Some((stat.atime, stat.mtime)),
                )
                .await;
            if let Err(err) = applied {
                report.fail(ctx, describe(to.host, &err));
            }
        }
    }
}

fn too_deep(host: &str, dir: &str) -> String {
    format!(
        "{host}:{dir}: more than {MAX_DIR_DEPTH} directory levels: not copied (a symbolic link loop?)"
    )
}

/// What to do with one entry of a remote directory being copied: `None` to skip it (a name
/// that is not plain, reported; a link that does not resolve to a file, reported; a FIFO,
/// socket or device, skipped quietly as OpenSSH's scp does), else its attributes with a
/// symbolic link replaced by the file it points to (STAT's mode and times, as OpenSSH's scp
/// takes them), never the link's 0777. A link to a directory is not followed.
async fn tree_entry(
    sftp: &Sftp,
    host: &str,
    dir: &str,
    name: &str,
    stat: RemoteStat,
    ctx: &CopyContext,
    report: &mut Report,
) -> Option<RemoteStat> {
    if !is_plain_name(name) {
        report.fail(
            ctx,
            format!("{host}:{dir}: the server sent the file name {name:?}, which is not a plain name: refused"),
        );
        return None;
    }
    let path = transfer::remote_join(dir, name);
    let stat = if is_symlink(stat.mode) {
        match sftp.stat(&path).await {
            Ok(Some(target)) if is_regular(target.mode) => target,
            Ok(Some(_)) => {
                report.fail(ctx, format!("{host}:{path}: not a regular file"));
                return None;
            }
            Ok(None) => {
                report.fail(ctx, format!("{host}:{path}: No such file or directory"));
                return None;
            }
            Err(err) => {
                report.fail(ctx, describe(host, &err));
                return None;
            }
        }
    } else {
        stat
    };
    if !stat.is_dir && !is_regular(stat.mode) {
        // Reading a FIFO, socket or device could block for ever or never end.
        crate::term::diag::debug(format_args!("{host}:{path}: not a regular file: skipped"));
        return None;
    }
    Some(stat)
}

/// Runs a copy on every host; prints the summary; returns scp's exit status.
pub async fn run_fanout(
    copy: FanoutCopy,
    plans: Vec<HostPlan>,
    keys: Arc<KeySource>,
    db: HostKeyDb,
    options: &FanoutOptions,
    ctx: Arc<CopyContext>,
) -> u8 {
    let sessions = options.parallel.min(plans.len()).max(1) as u64;
    let in_flight =
        (transfer::IN_FLIGHT_FANOUT_TOTAL / sessions).clamp(512 * 1024, transfer::IN_FLIGHT_SINGLE);
    let job_ctx = Arc::clone(&ctx);
    let copy = Arc::new(copy);
    let intended_copy = Arc::clone(&copy);
    let outcomes = fanout::run(plans, keys, db, options, move |conn, plan| {
        let ctx = Arc::clone(&job_ctx);
        let copy = Arc::clone(&copy);
        async move {
            let audited = AuditedHost::of(&plan, Some(&conn));
            let mut sftp = match Sftp::open(&conn, in_flight).await {
                Ok(sftp) => sftp,
                Err(err) => {
                    let line = describe(&plan.label, &err);
                    audited.record(
                        &ctx,
                        intended(&copy),
                        Outcome::Failed(line.clone()),
                        std::time::Instant::now(),
                    );
                    return Err(HostCopyFailure::one(line));
                }
            };
            sftp.set_dir_limit(ctx.dir_limit);
            let (meter, _bar) = ctx.progress.host(&plan.label, ctx.limit_kbits);
            let mut report = Report::new(false);
            report.on_host(audited);
            match copy.as_ref() {
                FanoutCopy::Push { sources, target } => {
                    push(
                        &sftp,
                        &plan.label,
                        sources,
                        target,
                        &ctx,
                        &meter,
                        &mut report,
                    )
                    .await;
                }
                FanoutCopy::Gather { sources, target } => {
                    let dir = target.join(&plan.label);
                    match std::fs::create_dir(&dir) {
                        Ok(()) => {}
                        Err(err)
                            if err.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                        Err(err) => {
                            return Err(HostCopyFailure::one(describe(
                                &plan.label,
                                &transfer::local_error(&dir, err),
                            )))
                        }
                    }
                    pull(&sftp, &plan.label, sources, &dir, &ctx, &meter, &mut report).await;
                }
            }
            ctx.progress.host_done();
            report.into_result()
        }
    })
    .await;
    // Hosts whose job never ran (no login, a timeout, Ctrl-C) have no record yet.
    for outcome in &outcomes {
        if let Err(err) = &outcome.result {
            if !matches!(err, fanout::HostError::Job(_)) {
                ctx.audit.record(&audit::Event {
                    host: Some(AuditedHost::of(&outcome.plan, None).host),
                    key: KeyUsed::default(),
                    action: intended(&intended_copy),
                    outcome: Outcome::Failed(output::failure_line(&outcome.plan.label, err)),
                    exit_status: None,
                    duration: outcome.duration,
                });
            }
        }
    }
    ctx.progress.finish();
    crate::term::diag::debug(format_args!(
        "read {} bytes of local files from disk",
        ctx.registry.disk_reads()
    ));
    let failed = output::summarize(&outcomes, &ctx.progress);
    exit_status(failed > 0)
}

/// The local sources of a push that can be copied: a source that cannot (missing, or a
/// directory without -r) fails the run, as in scp, but not the hosts, so it is reported once
/// here rather than on every host, and recorded once, for no host, in the audit trail.
/// Returns the usable ones and whether any was not.
pub fn usable_sources(
    sources: Vec<PathBuf>,
    recursive: bool,
    target: &str,
    auditor: &Auditor,
) -> (Vec<PathBuf>, bool) {
    let mut usable = Vec::new();
    let mut unusable = false;
    for source in sources {
        let problem = match std::fs::metadata(&source) {
            Ok(meta) if meta.is_dir() && !recursive => {
                Some("not a regular file (use -r)".to_owned())
            }
            Ok(_) => None,
            Err(err) => Some(transfer::io_reason(&err)),
        };
        match problem {
            Some(problem) => {
                unusable = true;
                let line = format!("{}: {problem}", source.display());
                auditor.record(&audit::Event {
                    host: None,
                    key: KeyUsed::default(),
                    action: upload_attempt(std::iter::once(source.as_path()), target),
                    outcome: Outcome::Failed(line.clone()),
                    exit_status: None,
                    duration: std::time::Duration::ZERO,
                });
                crate::term::diag::error(line);
            }
            None => usable.push(source),
        }
    }
    (usable, unusable)
}

/// An upload of `sources` to `target` that has not moved a byte yet.
fn upload_attempt<'a>(sources: impl Iterator<Item = &'a Path>, target: &str) -> Action {
    Action::Upload {
        local: sources
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(" "),
        remote: target.to_owned(),
        bytes: 0,
        sha256: None,
    }
}

/// A copy between two hosts (`-3`) that has not moved a byte yet.
fn relay_attempt(from: &str, sources: &[String], to: &str, target: &str) -> Action {
    Action::Relay {
        from: sources
            .iter()
            .map(|path| format!("{from}:{path}"))
            .collect::<Vec<_>>()
            .join(" "),
        to: format!("{to}:{target}"),
        bytes: 0,
        sha256: None,
    }
}

/// The action a host's record names when the host failed before any file moved.
fn intended(copy: &FanoutCopy) -> Action {
    let joined = |paths: &mut dyn Iterator<Item = String>| paths.collect::<Vec<_>>().join(" ");
    match copy {
        FanoutCopy::Push { sources, target } => {
            upload_attempt(sources.iter().map(PathBuf::as_path), target)
        }
        FanoutCopy::Gather { sources, target } => Action::Download {
            local: target.display().to_string(),
            remote: joined(&mut sources.iter().cloned()),
            bytes: 0,
            sha256: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_server_must_be_plain() {
        let cases = [
            ("file", true),
            (".hidden", true),
            ("a b", true),
            ("", false),
            (".", false),
            ("..", false),
            ("a/b", false),
            ("/etc", false),
            ("../x", false),
        ];
        for (name, plain) in cases {
            assert_eq!(is_plain_name(name), plain, "{name:?}");
        }
    }

    #[test]
    fn remote_names_and_modes() {
        assert_eq!(remote_name("/var/log/app.log"), Some("app.log"));
        assert_eq!(remote_name("dir/"), Some("dir"));
        assert_eq!(remote_name("plain"), Some("plain"));
        assert_eq!(remote_name(""), None);
        assert_eq!(remote_name("/"), None);
        assert_eq!(local_mode(0o100755, false, 0o022), 0o755);
        assert_eq!(local_mode(0o100777, false, 0o027), 0o750);
        assert_eq!(local_mode(0o104755, true, 0o022), 0o755);
        assert_eq!(local_mode(0o102775, false, 0o002), 0o775);
        assert_eq!(local_mode(0o041777, true, 0o022), 0o777);
        assert_eq!(local_mode(0o100444, false, 0o022), 0o644);
        assert_eq!(local_mode(0o100444, true, 0o022), 0o444);
        assert_eq!(local_dir_modes(0o040755), (0o755, None));
        assert_eq!(local_dir_modes(0o040777), (0o777, None));
        assert_eq!(local_dir_modes(0o040555), (0o755, Some(0o555)));
        assert_eq!(local_dir_modes(0o041500), (0o700, Some(0o500)));
    }

    #[test]
    fn file_types_from_the_server() {
        assert!(is_symlink(0o120777));
        assert!(!is_symlink(0o100644));
        assert!(!is_symlink(0o040755));
        assert!(is_regular(0o100644));
        assert!(is_regular(0o104755));
        assert!(
            is_regular(0o644),
            "a mode without a type is taken as a file"
        );
        assert!(!is_regular(0o040755));
        assert!(!is_regular(0o120777));
        assert!(!is_regular(0o010644), "a FIFO");
    }
}
