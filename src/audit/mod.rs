//! The audit trail: one JSON record per host action (who, with which key, on which host, did
//! what, with what outcome), written to syslog and/or files, so that an operator can answer
//! what CloudTrail cannot (it sees only GetSecretValue).
//!
//! Owns: the record's shape ([`Record`], [`Action`]), the `[audit]` table of both
//! configuration files and how they merge ([`Settings::merge`]: the union of the
//! administrator's and the user's destinations, the administrator's required), the sinks
//! ([`syslog`], [`file`], standard output for the Lambda), and the streaming SHA-256 of a
//! transfer ([`StreamDigest`]). Invariants: a record holds public facts only (the secret's
//! ARN, version id and key fingerprint, never key text, never an environment variable);
//! every string in it is bounded ([`MAX_FIELD`]) and escaped by serde_json; a destination
//! the administrator requires that cannot be opened stops the program before any host is
//! touched (fail closed), and a write that fails later is reported once per destination.
//! Must not know: SSH, AWS, or how the records' facts were obtained.

pub mod file;
pub mod syslog;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use syslog::Facility;

/// The administrator's configuration file. A constant, not a setting: an unprivileged user
/// must not be able to point a root-run smssh at a file of their own, and a user's run must
/// not be able to skip the administrator's destinations. Debug builds (the test suite's)
/// alone also read [`TEST_SYSTEM_CONFIG_VAR`].
pub const SYSTEM_CONFIG: &str = "/etc/smssh/config.toml";

/// Test-only: in debug builds, the path of the system configuration file instead of
/// [`SYSTEM_CONFIG`]. Release builds never read it.
pub const TEST_SYSTEM_CONFIG_VAR: &str = "SMSSH_TEST_SYSTEM_CONFIG";

/// Where the system logger listens.
pub const DEFAULT_SYSLOG_SOCKET: &str = "/dev/log";

/// The most bytes of one string in a record (a command line, a path, an error line); the
/// rest is cut at a character boundary and replaced by a marker saying how much was cut.
pub const MAX_FIELD: usize = 4096;

/// The most bytes of the program's arguments kept in one record, all arguments together.
const MAX_ARGV: usize = 8192;

/// How far a download's hash may fall behind the bytes received (answers that arrive out of
/// order wait in memory until the gap before them is filled). Twice the largest window of
/// requests in flight: an honest server never needs more; past it the hash is given up,
/// never the copy.
const MAX_REORDER: usize = 16 * 1024 * 1024;

/// The `[audit]` table, in the user's `~/.config/smssh/config.toml` and in the
/// administrator's `/etc/smssh/config.toml` alike.
#[derive(Debug, Default, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditTable {
    /// Send records to the system logger. Unset in both files means on (see
    /// [`Settings::merge`]).
    pub syslog: Option<bool>,
    /// The syslog facility [default: authpriv].
    pub facility: Option<String>,
    /// The logger's socket [default: /dev/log]; it applies to this file's syslog
    /// destination only, so a user cannot divert the administrator's.
    pub syslog_socket: Option<PathBuf>,
    /// Append records to this file, one JSON line each.
    pub file: Option<PathBuf>,
}

/// The administrator's file: `[audit]`, and `[groups]`, which `config::groups` reads.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
struct SystemConfig {
    audit: Option<AuditTable>,
    /// Named host groups: accepted here so that the strict parse of the audit policy does
    /// not refuse the file that also holds them; their reader validates them.
    #[serde(rename = "groups")]
    _groups: Option<std::collections::BTreeMap<String, String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum AuditConfigError {
    #[error("{path}: {reason}: fix the file (it is the administrator's audit policy)")]
    SystemFile { path: String, reason: String },
    #[error("{path}: [audit] facility {name:?} is not a syslog facility: use authpriv, auth, user, daemon or local0..local7")]
    Facility { path: String, name: String },
}

/// An audit destination the administrator requires could not be opened: nothing runs.
#[derive(Debug, thiserror::Error)]
#[error("audit: {destination}: {reason}: the administrator requires this audit destination ({config}); fix it or ask them")]
pub struct AuditOpenError {
    destination: String,
    reason: String,
    config: String,
}

/// Reads the administrator's `[audit]` table. A missing file is no policy; a file that
/// cannot be read or parsed stops the program (the policy cannot be known).
pub fn load_system_config() -> Result<(AuditTable, PathBuf), AuditConfigError> {
    let path = system_config_path();
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Ok((AuditTable::default(), path))
        }
        Err(err) => {
            return Err(AuditConfigError::SystemFile {
                path: path.display().to_string(),
                reason: err.to_string(),
            })
        }
    };
    let parsed: SystemConfig =
        toml::from_str(&text).map_err(|err| AuditConfigError::SystemFile {
            path: path.display().to_string(),
            reason: err.message().to_owned(),
        })?;
    Ok((parsed.audit.unwrap_or_default(), path))
}

/// The administrator's file: [`SYSTEM_CONFIG`], or in debug builds the test override.
#[cfg(debug_assertions)]
pub fn system_config_path() -> PathBuf {
    std::env::var_os(TEST_SYSTEM_CONFIG_VAR)
        .filter(|p| !p.is_empty())
        .map_or_else(|| PathBuf::from(SYSTEM_CONFIG), PathBuf::from)
}

/// The administrator's file: [`SYSTEM_CONFIG`].
#[cfg(not(debug_assertions))]
pub fn system_config_path() -> PathBuf {
    PathBuf::from(SYSTEM_CONFIG)
}

/// One destination of the merged settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Syslog {
        socket: PathBuf,
        facility: Facility,
        /// Set by the administrator: failing to reach it stops the program.
        required: bool,
        /// The default destination nobody asked for: a missing logger is not worth a line.
        quiet: bool,
    },
    File {
        path: PathBuf,
        required: bool,
    },
}

/// The effective destinations of one invocation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    pub destinations: Vec<Destination>,
    /// The administrator's file, named when a required destination fails.
    pub system_config: PathBuf,
}

impl Settings {
    /// The union of the administrator's destinations (required) and the user's (best
    /// effort), plus `--audit-log`. A user's `syslog = false` turns off only the user's own
    /// syslog destination; with nothing configured anywhere, records go to the system logger
    /// (as sudo's do), quietly skipped where there is none.
    pub fn merge(
        system: &AuditTable,
        system_path: &Path,
        user: &AuditTable,
        user_path: &Path,
        audit_log: Option<&Path>,
    ) -> Result<Settings, AuditConfigError> {
        let mut destinations: Vec<Destination> = Vec::new();
        let facility = |table: &AuditTable, path: &Path| match &table.facility {
            None => Ok(Facility::AUTHPRIV),
            Some(name) => Facility::parse(name).ok_or_else(|| AuditConfigError::Facility {
                path: path.display().to_string(),
                name: name.clone(),
            }),
        };
        let socket = |table: &AuditTable| {
            table
                .syslog_socket
                .clone()
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SYSLOG_SOCKET))
        };
        if system.syslog == Some(true) {
            destinations.push(Destination::Syslog {
                socket: socket(system),
                facility: facility(system, system_path)?,
                required: true,
                quiet: false,
            });
        }
        let user_syslog = user.syslog.or(system.syslog).unwrap_or(true);
        if user_syslog {
            let asked = user.syslog == Some(true);
            let destination = Destination::Syslog {
                socket: socket(user),
                facility: facility(user, user_path)?,
                required: false,
                quiet: !asked,
            };
            push_unique(&mut destinations, destination);
        }
        if let Some(path) = &system.file {
            push_unique(
                &mut destinations,
                Destination::File {
                    path: path.clone(),
                    required: true,
                },
            );
        }
        for path in user.file.iter().map(PathBuf::as_path).chain(audit_log) {
            push_unique(
                &mut destinations,
                Destination::File {
                    path: path.to_path_buf(),
                    required: false,
                },
            );
        }
        Ok(Settings {
            destinations,
            system_config: system_path.to_path_buf(),
        })
    }
}

/// Adds `new` unless the same place is already a destination (the first, the
/// administrator's if any, is kept, with its `required`).
fn push_unique(destinations: &mut Vec<Destination>, new: Destination) {
    let same = |d: &Destination| match (d, &new) {
        (
            Destination::Syslog {
                socket: a,
                facility: fa,
                ..
            },
            Destination::Syslog {
                socket: b,
                facility: fb,
                ..
            },
        ) => a == b && fa == fb,
        (Destination::File { path: a, .. }, Destination::File { path: b, .. }) => a == b,
        _ => false,
    };
    if !destinations.iter().any(same) {
        destinations.push(new);
    }
}

/// Who ran what: the same for every record of one invocation.
#[derive(Debug, Clone, Serialize)]
pub struct Invocation {
    pub program: String,
    pub argv: Vec<String>,
    pub uid: u32,
    /// From the password database, not `$USER`, which the caller sets.
    pub user: Option<String>,
}

impl Invocation {
    /// This process: its real uid and the arguments as given (never the environment).
    pub fn current(program: &str) -> Invocation {
        let uid = nix::unistd::getuid();
        let user = nix::unistd::User::from_uid(uid)
            .ok()
            .flatten()
            .map(|u| u.name);
        Invocation {
            program: program.to_owned(),
            argv: bounded_argv(std::env::args_os().map(|a| a.to_string_lossy().into_owned())),
            uid: uid.as_raw(),
            user,
        }
    }
}

/// The key a host action used: public facts only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct KeyUsed {
    pub version_id: Option<String>,
    pub fingerprint: Option<String>,
}

/// Where a host action happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Host {
    pub host: String,
    pub port: u16,
    pub login: String,
}

/// What was done on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// A command (`command`), a subsystem (`subsystem`), or an interactive shell (neither).
    Exec {
        command: Option<String>,
        subsystem: Option<String>,
    },
    Upload {
        local: String,
        remote: String,
        bytes: u64,
        /// Lowercase hex of the bytes sent; absent when the copy failed.
        sha256: Option<String>,
    },
    Download {
        local: String,
        remote: String,
        bytes: u64,
        sha256: Option<String>,
    },
    /// A file copied from one host to another through this one (scp's `-3`), recorded on
    /// both hosts, each with the key that logged in there. `from` and `to` are `host:path`.
    Relay {
        from: String,
        to: String,
        bytes: u64,
        /// Lowercase hex of the bytes that passed through this host; absent when the copy
        /// failed.
        sha256: Option<String>,
    },
    /// `smssh -W host:port`: standard input and output forwarded through the host to `to`.
    StdioForward { to: String },
    /// One host's authorized_keys edit in a rotation step.
    AuthorizedKeys {
        step: String,
        /// The versions the managed block holds after the edit (added if they were not).
        versions: Vec<String>,
        /// The versions whose keys the edit removes outside the block.
        retired_versions: Vec<String>,
        /// Whether the file changed.
        changed: bool,
        /// Lines removed because they held a retired key.
        retired_lines: usize,
    },
    /// One rotation step (no host: the step as a whole).
    Rotation { step: String, version_id: String },
}

impl Action {
    /// The syslog MSGID: the action's kind.
    fn kind(&self) -> &'static str {
        match self {
            Action::Exec { .. } => "exec",
            Action::Upload { .. } => "upload",
            Action::Download { .. } => "download",
            Action::Relay { .. } => "relay",
            Action::StdioForward { .. } => "stdio_forward",
            Action::AuthorizedKeys { .. } => "authorized_keys",
            Action::Rotation { .. } => "rotation",
        }
    }

    /// A copy of the action with every string bounded.
    fn bounded(&self) -> Action {
        let b = |s: &str| bounded(s, MAX_FIELD);
        let bo = |s: &Option<String>| s.as_deref().map(b);
        match self {
            Action::Exec { command, subsystem } => Action::Exec {
                command: bo(command),
                subsystem: bo(subsystem),
            },
            Action::Upload {
                local,
                remote,
                bytes,
                sha256,
            } => Action::Upload {
                local: b(local),
                remote: b(remote),
                bytes: *bytes,
                sha256: sha256.clone(),
            },
            Action::Download {
                local,
                remote,
                bytes,
                sha256,
            } => Action::Download {
                local: b(local),
                remote: b(remote),
                bytes: *bytes,
                sha256: sha256.clone(),
            },
            Action::Relay {
                from,
                to,
                bytes,
                sha256,
            } => Action::Relay {
                from: b(from),
                to: b(to),
                bytes: *bytes,
                sha256: sha256.clone(),
            },
            Action::StdioForward { to } => Action::StdioForward { to: b(to) },
            other => other.clone(),
        }
    }
}

/// How a host action ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// The one error line the user saw (or the host's line of a fan-out summary).
    Failed(String),
}

/// One host action as it happened, before the invocation's facts are added.
#[derive(Debug, Clone)]
pub struct Event {
    pub host: Option<Host>,
    pub key: KeyUsed,
    pub action: Action,
    pub outcome: Outcome,
    /// The remote command's exit status (exec), the step's (rotation) or none.
    pub exit_status: Option<i32>,
    pub duration: Duration,
}

/// The JSON object of one record.
#[derive(Debug, Serialize)]
pub struct Record<'a> {
    pub time: String,
    pub uid: u32,
    pub user: Option<&'a str>,
    pub program: &'a str,
    pub argv: &'a [String],
    pub secret_arn: Option<&'a str>,
    pub version_id: Option<&'a str>,
    pub fingerprint: Option<&'a str>,
    pub host: Option<&'a str>,
    pub port: Option<u16>,
    pub login: Option<&'a str>,
    pub action: Action,
    pub outcome: &'static str,
    pub error: Option<String>,
    pub exit_status: Option<i32>,
    pub duration_ms: u64,
}

/// Where records go.
#[derive(Debug)]
enum Sink {
    Syslog(syslog::SyslogSink),
    File(file::FileSink),
    /// The Lambda's log: one JSON line per record on stdout.
    Stdout,
}

#[derive(Debug)]
struct Destined {
    sink: Sink,
    /// Set after the first failed write, so that it is reported once.
    failed: AtomicBool,
}

/// Writes the records of one invocation to every destination. Shared by every task of a
/// fan-out; a record is one write per destination, so records never interleave.
#[derive(Debug)]
pub struct Auditor {
    invocation: Invocation,
    destinations: Vec<Destined>,
    secret_arn: OnceLock<String>,
}

impl Auditor {
    /// Opens every destination. A required one that cannot be opened is an error (nothing
    /// may run unaudited); a user's is one warning (the default syslog none, when the
    /// system has no logger).
    pub fn open(settings: &Settings, invocation: Invocation) -> Result<Auditor, AuditOpenError> {
        let mut destinations = Vec::new();
        for destination in &settings.destinations {
            let (opened, required, quiet, shown) = match destination {
                Destination::Syslog {
                    socket,
                    facility,
                    required,
                    quiet,
                } => (
                    syslog::SyslogSink::open(socket, *facility, &invocation.program)
                        .map(Sink::Syslog),
                    *required,
                    *quiet,
                    format!("syslog socket {}", socket.display()),
                ),
                Destination::File { path, required } => (
                    file::FileSink::open(path).map(Sink::File),
                    *required,
                    false,
                    path.display().to_string(),
                ),
            };
            match opened {
                Ok(sink) => destinations.push(Destined {
                    sink,
                    failed: AtomicBool::new(false),
                }),
                Err(err) if required => {
                    return Err(AuditOpenError {
                        destination: shown,
                        reason: reason(&err),
                        config: settings.system_config.display().to_string(),
                    })
                }
                Err(_) if quiet => {}
                Err(err) => crate::term::diag::warn(format_args!(
                    "audit: {shown}: {}: no records go there",
                    reason(&err)
                )),
            }
        }
        Ok(Auditor {
            invocation,
            destinations,
            secret_arn: OnceLock::new(),
        })
    }

    /// An auditor that writes each record as one JSON line on stdout (the Lambda's log).
    pub fn stdout(invocation: Invocation) -> Auditor {
        Auditor {
            invocation,
            destinations: vec![Destined {
                sink: Sink::Stdout,
                failed: AtomicBool::new(false),
            }],
            secret_arn: OnceLock::new(),
        }
    }

    /// An auditor with no destination (library callers and unit tests).
    pub fn none() -> Auditor {
        Auditor {
            invocation: Invocation {
                program: String::new(),
                argv: Vec::new(),
                uid: nix::unistd::getuid().as_raw(),
                user: None,
            },
            destinations: Vec::new(),
            secret_arn: OnceLock::new(),
        }
    }

    /// The ARN GetSecretValue (or DescribeSecret) returned; the first one set is kept.
    pub fn set_secret_arn(&self, arn: &str) {
        let _ = self.secret_arn.set(bounded(arn, MAX_FIELD));
    }

    /// Writes one record to every destination. A failed write is reported once per
    /// destination; the action itself has already happened and is not undone.
    pub fn record(&self, event: &Event) {
        if self.destinations.is_empty() {
            return;
        }
        let (outcome, error) = match &event.outcome {
            Outcome::Ok => ("ok", None),
            Outcome::Failed(line) => ("failed", Some(bounded(line, MAX_FIELD))),
        };
        let record = Record {
            time: rfc3339(SystemTime::now()),
            uid: self.invocation.uid,
            user: self.invocation.user.as_deref(),
            program: &self.invocation.program,
            argv: &self.invocation.argv,
            secret_arn: self.secret_arn.get().map(String::as_str),
            version_id: event.key.version_id.as_deref(),
            fingerprint: event.key.fingerprint.as_deref(),
            host: event.host.as_ref().map(|h| h.host.as_str()),
            port: event.host.as_ref().map(|h| h.port),
            login: event.host.as_ref().map(|h| h.login.as_str()),
            action: event.action.bounded(),
            outcome,
            error,
            exit_status: event.exit_status,
            duration_ms: u64::try_from(event.duration.as_millis()).unwrap_or(u64::MAX),
        };
        // Serializing plain strings and numbers cannot fail; if it ever did, a record would
        // be missing, which the one warning below says.
        let json = serde_json::to_string(&record);
        for destination in &self.destinations {
            let written = match (&json, &destination.sink) {
                (Err(err), _) => Err(std::io::Error::other(err.to_string())),
                (Ok(json), Sink::Syslog(sink)) => sink.send(
                    &record.time,
                    severity(&event.outcome),
                    event.action.kind(),
                    json,
                ),
                (Ok(json), Sink::File(sink)) => sink.append(json),
                (Ok(json), Sink::Stdout) => {
                    use std::io::Write;
                    let mut line = json.clone();
                    line.push('\n');
                    std::io::stdout().lock().write_all(line.as_bytes())
                }
            };
            if let Err(err) = written {
                if !destination.failed.swap(true, Ordering::Relaxed) {
                    crate::term::diag::warn(format_args!(
                        "audit: {}: {}: later records may be missing there",
                        destination.sink.name(),
                        reason(&err)
                    ));
                }
            }
        }
    }
}

impl Sink {
    fn name(&self) -> String {
        match self {
            Sink::Syslog(sink) => format!("syslog socket {}", sink.socket().display()),
            Sink::File(sink) => sink.path().display().to_string(),
            Sink::Stdout => "stdout".to_owned(),
        }
    }
}

/// An I/O error as one readable phrase, without Rust's "(os error N)".
fn reason(err: &std::io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error ") {
        Some(at) => text[..at].to_owned(),
        None => text,
    }
}

/// syslog severity: informational for an action that worked, warning for one that failed.
fn severity(outcome: &Outcome) -> u8 {
    match outcome {
        Outcome::Ok => syslog::SEVERITY_INFO,
        Outcome::Failed(_) => syslog::SEVERITY_WARNING,
    }
}

/// `text` cut to at most `max` bytes (at a character boundary), with a marker saying how
/// many bytes were cut.
pub fn bounded(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...[{} more bytes]", &text[..end], text.len() - end)
}

/// The arguments, each bounded, at most [`MAX_ARGV`] bytes in all; the rest counted.
fn bounded_argv(args: impl Iterator<Item = String>) -> Vec<String> {
    let mut kept = Vec::new();
    let mut used = 0usize;
    let mut dropped = 0usize;
    for arg in args {
        let arg = bounded(&arg, MAX_FIELD);
        if dropped > 0 || used + arg.len() > MAX_ARGV {
            dropped += 1;
            continue;
        }
        used += arg.len();
        kept.push(arg);
    }
    if dropped > 0 {
        kept.push(format!("...[{dropped} more arguments]"));
    }
    kept
}

/// RFC 3339 in UTC with milliseconds: `2026-11-30T14:18:51.123Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = civil_from_days(days);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_millis()
    )
}

/// The proleptic Gregorian date of a count of days since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for non-negative counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// SHA-256 of a file received as answers at offsets, in any order: what arrives in order
/// is hashed at once, what arrives early waits (at most [`MAX_REORDER`] bytes, after which
/// the hash is given up). The bytes are hashed as they pass; nothing is read twice.
#[derive(Debug, Default)]
pub struct StreamDigest {
    hasher: Sha256,
    /// Bytes hashed so far: the next offset the hasher needs.
    next: u64,
    early: BTreeMap<u64, Vec<u8>>,
    early_bytes: usize,
    given_up: bool,
}

impl StreamDigest {
    pub fn new() -> StreamDigest {
        StreamDigest::default()
    }

    /// Takes the bytes at `offset`.
    pub fn update_at(&mut self, offset: u64, data: &[u8]) {
        if self.given_up || data.is_empty() {
            return;
        }
        let end = offset + data.len() as u64;
        if end <= self.next {
            return;
        }
        if offset > self.next {
            self.early_bytes += data.len();
            if self.early_bytes > MAX_REORDER {
                self.give_up();
                return;
            }
            if let Some(old) = self.early.insert(offset, data.to_vec()) {
                self.early_bytes -= old.len();
            }
            return;
        }
        // `offset <= next < end`: the new part starts at `next`.
        let skip = (self.next - offset) as usize;
        self.hasher.update(&data[skip..]);
        self.next = end;
        while let Some(entry) = self.early.first_entry() {
            let at = *entry.key();
            if at > self.next {
                break;
            }
            let chunk = entry.remove();
            self.early_bytes -= chunk.len();
            let chunk_end = at + chunk.len() as u64;
            if chunk_end > self.next {
                let skip = (self.next - at) as usize;
                self.hasher.update(&chunk[skip..]);
                self.next = chunk_end;
            }
        }
    }

    /// Stops hashing: the bytes hashed are not the file's (answers too far out of order, or
    /// bytes past the end of file that were later cut off).
    pub fn give_up(&mut self) {
        self.given_up = true;
        self.early.clear();
        self.early_bytes = 0;
    }

    /// Lowercase hex of the first `len` bytes, if exactly those were hashed.
    pub fn finish(&self, len: u64) -> Option<String> {
        (!self.given_up && self.next == len).then(|| hex(&self.hasher.clone().finalize()))
    }
}

/// Lowercase hex, as sha256sum prints.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::new(), |mut out, b| {
        let _ = write!(out, "{b:02x}");
        out
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(syslog: Option<bool>, file: Option<&str>) -> AuditTable {
        AuditTable {
            syslog,
            file: file.map(PathBuf::from),
            ..AuditTable::default()
        }
    }

    fn syslog(required: bool, quiet: bool) -> Destination {
        Destination::Syslog {
            socket: PathBuf::from(DEFAULT_SYSLOG_SOCKET),
            facility: Facility::AUTHPRIV,
            required,
            quiet,
        }
    }

    fn file(path: &str, required: bool) -> Destination {
        Destination::File {
            path: PathBuf::from(path),
            required,
        }
    }

    #[test]
    fn settings_merge_as_the_union_with_the_administrators_required() {
        // (what, the administrator's table, the user's, --audit-log, the destinations)
        type Case = (
            &'static str,
            AuditTable,
            AuditTable,
            Option<&'static str>,
            Vec<Destination>,
        );
        let cases: Vec<Case> = vec![
            (
                "nothing configured: quiet syslog",
                table(None, None),
                table(None, None),
                None,
                vec![syslog(false, true)],
            ),
            (
                "the user turns the default off",
                table(None, None),
                table(Some(false), None),
                None,
                vec![],
            ),
            (
                "the user cannot turn the administrator's syslog off",
                table(Some(true), None),
                table(Some(false), None),
                None,
                vec![syslog(true, false)],
            ),
            (
                "the administrator's off is the default, the user may still ask",
                table(Some(false), None),
                table(Some(true), None),
                None,
                vec![syslog(false, false)],
            ),
            (
                "the administrator's off with nothing from the user",
                table(Some(false), None),
                table(None, None),
                None,
                vec![],
            ),
            (
                "same syslog twice is one destination, required",
                table(Some(true), None),
                table(Some(true), None),
                None,
                vec![syslog(true, false)],
            ),
            (
                "files add up: administrator's required, user's and flag's not",
                table(Some(false), Some("/var/log/smssh.json")),
                table(Some(false), Some("/home/u/a.json")),
                Some("/tmp/b.json"),
                vec![
                    file("/var/log/smssh.json", true),
                    file("/home/u/a.json", false),
                    file("/tmp/b.json", false),
                ],
            ),
            (
                "the flag naming the administrator's file stays required",
                table(Some(false), Some("/var/log/smssh.json")),
                table(None, None),
                Some("/var/log/smssh.json"),
                vec![file("/var/log/smssh.json", true)],
            ),
        ];
        for (name, system, user, flag, want) in cases {
            let got = Settings::merge(
                &system,
                Path::new("/etc/smssh/config.toml"),
                &user,
                Path::new("/home/u/.config/smssh/config.toml"),
                flag.map(Path::new),
            )
            .unwrap();
            assert_eq!(got.destinations, want, "{name}");
        }
    }

    #[test]
    fn the_users_socket_and_facility_do_not_move_the_administrators() {
        let system = AuditTable {
            syslog: Some(true),
            ..AuditTable::default()
        };
        let user = AuditTable {
            syslog: Some(true),
            facility: Some("local3".to_owned()),
            syslog_socket: Some(PathBuf::from("/tmp/mine")),
            file: None,
        };
        let got = Settings::merge(&system, Path::new("s"), &user, Path::new("u"), None).unwrap();
        assert_eq!(
            got.destinations,
            vec![
                syslog(true, false),
                Destination::Syslog {
                    socket: PathBuf::from("/tmp/mine"),
                    facility: Facility::parse("local3").unwrap(),
                    required: false,
                    quiet: false,
                },
            ]
        );
    }

    #[test]
    fn an_unknown_facility_or_key_is_refused() {
        let bad = AuditTable {
            facility: Some("secure".to_owned()),
            ..AuditTable::default()
        };
        let err = Settings::merge(&bad, Path::new("/etc/x"), &bad, Path::new("u"), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"secure\""), "{err}");
        assert!(toml::from_str::<SystemConfig>("[audit]\nsyslg = true\n").is_err());
        assert!(toml::from_str::<SystemConfig>("secret_id = \"x\"\n").is_err());
        let parsed: SystemConfig =
            toml::from_str("[audit]\nsyslog = true\nfacility = \"local7\"\nfile = \"/a\"\n")
                .unwrap();
        assert_eq!(parsed.audit.unwrap().file.as_deref(), Some(Path::new("/a")));
    }

    #[test]
    fn strings_are_bounded_at_character_boundaries() {
        assert_eq!(bounded("short", 10), "short");
        assert_eq!(bounded("abcdef", 3), "abc...[3 more bytes]");
        // 'é' is two bytes: a cut inside it moves back to its start.
        assert_eq!(bounded("aé", 2), "a...[2 more bytes]");
        let argv = bounded_argv((0..10).map(|_| "x".repeat(MAX_FIELD)));
        assert_eq!(argv.len(), 3);
        assert_eq!(argv[2], "...[8 more arguments]");
        let long = bounded_argv(std::iter::once("y".repeat(3 * MAX_FIELD)));
        assert!(long[0].len() < MAX_FIELD + 32);
    }

    #[test]
    fn times_are_rfc3339_utc() {
        let cases = [
            (0u64, 0u32, "1970-01-01T00:00:00.000Z"),
            (951_782_400, 5_000_000, "2000-02-29T00:00:00.005Z"),
            (1_796_051_931, 123_000_000, "2026-11-30T15:18:51.123Z"),
            (4_102_444_799, 999_000_000, "2099-12-31T23:59:59.999Z"),
        ];
        for (secs, nanos, want) in cases {
            let time = UNIX_EPOCH + Duration::new(secs, nanos);
            assert_eq!(rfc3339(time), want);
        }
    }

    #[test]
    fn a_stream_digest_hashes_answers_in_any_order() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let want = hex(&Sha256::digest(&data));
        let orders: [&[(usize, usize)]; 4] = [
            &[(0, 4000), (4000, 10_000)],
            &[(4000, 10_000), (0, 4000)],
            // A short read, its remainder asked for again later, overlapping answers.
            &[(0, 1000), (2000, 10_000), (1000, 1500), (1200, 2000)],
            &[(6000, 10_000), (3000, 6000), (0, 3000), (0, 3000)],
        ];
        for order in orders {
            let mut digest = StreamDigest::new();
            for &(from, to) in order {
                digest.update_at(from as u64, &data[from..to]);
            }
            assert_eq!(
                digest.finish(data.len() as u64),
                Some(want.clone()),
                "{order:?}"
            );
        }
        let mut gap = StreamDigest::new();
        gap.update_at(5000, &data[5000..]);
        assert_eq!(gap.finish(data.len() as u64), None);
    }

    #[test]
    fn a_stream_digest_gives_up_rather_than_grow() {
        let mut digest = StreamDigest::new();
        let chunk = vec![1u8; 1024 * 1024];
        for i in 1..=17u64 {
            digest.update_at(i * chunk.len() as u64, &chunk);
        }
        assert!(digest.early.is_empty());
        digest.update_at(0, &chunk);
        assert_eq!(digest.finish(18 * chunk.len() as u64), None);
    }

    #[test]
    fn records_hold_the_events_facts_as_one_json_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.json");
        let settings = Settings {
            destinations: vec![file(path.to_str().unwrap(), true)],
            system_config: PathBuf::from(SYSTEM_CONFIG),
        };
        let invocation = Invocation {
            program: "smssh".to_owned(),
            argv: vec!["smssh".to_owned(), "host".to_owned(), "ls".to_owned()],
            uid: 1000,
            user: Some("alice".to_owned()),
        };
        let auditor = Auditor::open(&settings, invocation).unwrap();
        auditor.set_secret_arn("arn:aws:secretsmanager:us-east-1:1:secret:k-AbCdEf");
        auditor.record(&Event {
            host: Some(Host {
                host: "w1".to_owned(),
                port: 22,
                login: "ec2-user".to_owned(),
            }),
            key: KeyUsed {
                version_id: Some("v1".to_owned()),
                fingerprint: Some("SHA256:abc".to_owned()),
            },
            action: Action::Exec {
                command: Some("x".repeat(3 * MAX_FIELD)),
                subsystem: None,
            },
            outcome: Outcome::Failed("w1: \"quoted\"\nline".to_owned()),
            exit_status: Some(255),
            duration: Duration::from_millis(1500),
        });
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(text.trim_end()).unwrap();
        assert_eq!(value["uid"], 1000);
        assert_eq!(value["user"], "alice");
        assert_eq!(value["program"], "smssh");
        assert_eq!(value["argv"][2], "ls");
        assert_eq!(
            value["secret_arn"],
            "arn:aws:secretsmanager:us-east-1:1:secret:k-AbCdEf"
        );
        assert_eq!(value["version_id"], "v1");
        assert_eq!(value["fingerprint"], "SHA256:abc");
        assert_eq!(value["host"], "w1");
        assert_eq!(value["port"], 22);
        assert_eq!(value["login"], "ec2-user");
        assert_eq!(value["action"]["type"], "exec");
        assert!(value["action"]["command"].as_str().unwrap().len() < MAX_FIELD + 32);
        assert_eq!(value["outcome"], "failed");
        assert_eq!(value["error"], "w1: \"quoted\"\nline");
        assert_eq!(value["exit_status"], 255);
        assert_eq!(value["duration_ms"], 1500);
        assert!(value["time"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn a_required_destination_that_cannot_open_fails_closed() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such/dir/audit.json");
        let required = Settings {
            destinations: vec![file(missing.to_str().unwrap(), true)],
            system_config: PathBuf::from("/etc/smssh/config.toml"),
        };
        let err = Auditor::open(&required, Invocation::current("smssh"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("audit: "), "{err}");
        assert!(err.contains("/etc/smssh/config.toml"), "{err}");
        let optional = Settings {
            destinations: vec![file(missing.to_str().unwrap(), false)],
            system_config: PathBuf::from("/etc/smssh/config.toml"),
        };
        assert!(Auditor::open(&optional, Invocation::current("smssh")).is_ok());
    }
}
