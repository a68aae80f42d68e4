//! OpenSSH `known_hosts` files: parsing, host key verification and appending
//! new entries.
//!
//! This module owns the known_hosts line syntax (markers, host patterns,
//! hashed host names, key type and base64 key) and the OpenSSH rules that
//! decide whether a presented server host key is valid, unknown, changed or
//! revoked, and whether a host certificate is vouched for by a
//! `@cert-authority` line. It also owns the SHA256 fingerprint format printed
//! by `ssh-keygen -lf`.
//!
//! Invariants:
//! - Keys are handled only in SSH wire form: a key is an algorithm name plus
//!   the decoded blob. Every stored entry has a blob whose embedded key type
//!   equals the key type written on its line, because OpenSSH rejects lines
//!   where the two disagree and we skip the same lines it skips.
//! - Lines OpenSSH cannot parse are skipped silently, never reported, so a
//!   file that works with `ssh` works here too.
//! - `append_entry` writes a whole line with a single buffer, so a reader never
//!   sees a line without its key.
//!
//! This module must not know about SSH connections, SSH crates, configuration
//! files or how the caller reports problems to the user: it returns statuses
//! and the caller formats messages. A certificate reaches it as
//! [`CertificateClaims`], already decoded; checking the CA's signature is
//! cryptography, which the caller does once this module has named the CA.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::config::pattern::pattern_list_matches;

/// Errors from reading or writing known_hosts files.
#[derive(Debug, thiserror::Error)]
pub enum KnownHostsError {
    /// An existing known_hosts file could not be read.
    #[error("cannot read known_hosts file {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The directory that should hold a known_hosts file could not be created.
    #[error("cannot create directory {}: {source}", path.display())]
    CreateDir {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A new entry could not be written to a known_hosts file.
    #[error("cannot add host key to {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The entry to append would not be a valid known_hosts line.
    #[error("refusing to record host key for {host:?}: {reason}")]
    InvalidEntry { host: String, reason: &'static str },
}

/// The outcome of checking a presented server host key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// A plain entry for this host holds exactly the presented key.
    Valid,
    /// No entry for this host holds a key of the presented algorithm.
    Unknown,
    /// This host is known with a different key of the same algorithm.
    Mismatch(Mismatch),
    /// The presented key is marked `@revoked`.
    Revoked {
        /// Fingerprint of the presented (revoked) key.
        fingerprint: String,
        /// `file:line` of the `@revoked` line.
        source: String,
    },
}

/// Details of a host key mismatch, for the caller's warning message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// Fingerprint of the key the server presented.
    pub presented_fingerprint: String,
    /// Every key recorded for this host with the presented algorithm.
    pub known: Vec<KnownKey>,
}

/// One recorded key that disagrees with the presented key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownKey {
    /// Fingerprint of the recorded key.
    pub fingerprint: String,
    /// `file:line` where the key is recorded.
    pub location: String,
}

/// Returns the fingerprint of a wire-form public key exactly as
/// `ssh-keygen -lf` prints it: `SHA256:` followed by unpadded base64.
pub fn fingerprint_sha256(blob: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(blob)))
}

/// The host key algorithm pattern that [`KnownHosts::known_algorithms`] puts
/// first when a `@cert-authority` line may vouch for the host: every
/// certificate algorithm, written as ssh_config's `HostKeyAlgorithms` would.
pub const HOST_CERTIFICATE_ALGORITHMS: &str = "*-cert-v01@openssh.com";

/// The certificate type of a host certificate (PROTOCOL.certkeys); 1 is a
/// user certificate.
pub const HOST_CERTIFICATE_TYPE: u32 = 2;

/// At most this many principals are named in a message: a certificate may
/// list thousands, and one error line must stay one line.
const PRINCIPALS_SHOWN: usize = 4;

/// What a server's host certificate says, as the caller decoded it. Keys are
/// in SSH wire form, as everywhere in this module.
#[derive(Debug, Clone)]
pub struct CertificateClaims<'a> {
    /// Key type of the certified host key (`ssh-ed25519`, not the `-cert-`
    /// name).
    pub key_type: &'a str,
    /// The certified host key.
    pub key_blob: &'a [u8],
    /// 1 for a user certificate, 2 ([`HOST_CERTIFICATE_TYPE`]) for a host one.
    pub cert_type: u32,
    /// Names the certificate is valid for; empty means every name, as in
    /// OpenSSH.
    pub principals: &'a [String],
    /// Unix seconds; valid from `valid_after` included to `valid_before`
    /// excluded.
    pub valid_after: u64,
    pub valid_before: u64,
    /// Names of the critical options.
    pub critical_options: Vec<&'a str>,
    /// Key type and key of the CA that signed the certificate.
    pub ca_key_type: &'a str,
    pub ca_blob: &'a [u8],
    /// The algorithm of the CA's signature (`rsa-sha2-512`, `ssh-ed25519`).
    pub signature_algorithm: &'a str,
}

/// The outcome of checking a host certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertificateStatus {
    /// A `@cert-authority` line for this host holds the signing CA, and the
    /// certificate is a host certificate valid now for this host. The caller
    /// must still verify the CA's signature before it trusts the host.
    Trusted {
        /// `file:line` of the `@cert-authority` line.
        authority: String,
    },
    /// The certified key or the CA key is `@revoked`. As in OpenSSH this is
    /// final: the key is not then tried as a plain host key.
    Revoked {
        /// Fingerprint of the revoked key (the host key or the CA key).
        fingerprint: String,
        /// `file:line` of the `@revoked` line.
        source: String,
    },
    /// The certificate vouches for nothing here. OpenSSH then checks the
    /// certified key as a plain host key, and so must the caller.
    Untrusted(CertificateProblem),
}

/// Why a host certificate does not vouch for the host. Values taken from the
/// certificate are shown through the caller's terminal escaping; every list
/// is cut short.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CertificateProblem {
    #[error("no @cert-authority line for this host holds its CA key {fingerprint}")]
    NoAuthority { fingerprint: String },
    #[error("it is not a host certificate (certificate type {cert_type})")]
    NotHostCertificate { cert_type: u32 },
    #[error("it is not valid before {}", utc_time(*.valid_after))]
    NotYetValid { valid_after: u64 },
    #[error("it expired at {}", utc_time(*.valid_before))]
    Expired { valid_before: u64 },
    #[error("it names {principals}, not {name}")]
    WrongPrincipal { name: String, principals: String },
    #[error(
        "it carries the critical option {option:?}, and no host certificate option is defined"
    )]
    CriticalOption { option: String },
    #[error("its CA signed it with {algorithm}, which is not in CASignatureAlgorithms")]
    SignatureAlgorithm { algorithm: String },
}

/// Formats Unix seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC), the spelling of
/// `ssh-keygen -L` in UTC; the largest value means "forever", as OpenSSH
/// writes it.
fn utc_time(seconds: u64) -> String {
    if seconds == u64::MAX {
        return "forever".to_owned();
    }
    let days = seconds / 86_400;
    let rest = seconds % 86_400;
    // Howard Hinnant's days-to-civil algorithm, on unsigned numbers because
    // Unix seconds here are never before 1970.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// Names at most [`PRINCIPALS_SHOWN`] principals, each quoted, for a message.
fn describe_principals(principals: &[String]) -> String {
    let mut shown: Vec<String> = principals
        .iter()
        .take(PRINCIPALS_SHOWN)
        .map(|p| format!("{:?}", truncate_chars(p, 64)))
        .collect();
    if principals.len() > PRINCIPALS_SHOWN {
        shown.push(format!("{} more", principals.len() - PRINCIPALS_SHOWN));
    }
    shown.join(", ")
}

fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

/// The marker at the start of a known_hosts line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    CertAuthority,
    Revoked,
}

/// The host field of a known_hosts line.
#[derive(Debug, Clone)]
enum HostField {
    /// Comma-separated patterns, stored lowercased because OpenSSH compares
    /// host names case-insensitively.
    Patterns(Vec<String>),
    /// `|1|salt|hash`: HMAC-SHA1 of the host name keyed with the salt.
    Hashed { salt: Vec<u8>, hash: Vec<u8> },
}

#[derive(Debug, Clone)]
struct Entry {
    marker: Marker,
    hosts: HostField,
    key_type: String,
    blob: Vec<u8>,
    /// `file:line`, for messages.
    location: String,
}

/// All known host keys loaded from one or more sources, in load order.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    entries: Vec<Entry>,
}

impl KnownHosts {
    /// Loads every file in `paths`, in order. A file that does not exist
    /// contributes nothing, as in OpenSSH; a file that exists but cannot be
    /// read is an error, because silently ignoring it could turn a known
    /// host into an unknown one.
    pub fn load(paths: &[PathBuf]) -> Result<KnownHosts, KnownHostsError> {
        let mut known = KnownHosts::default();
        for path in paths {
            match fs::read(path) {
                Ok(bytes) => {
                    // Invalid UTF-8 can only affect the lines that contain
                    // it, which then simply fail to match, as in OpenSSH.
                    let text = String::from_utf8_lossy(&bytes);
                    known.extend_from_text(&text, &path.display().to_string());
                }
                Err(e)
                    if e.kind() == io::ErrorKind::NotFound
                        || e.kind() == io::ErrorKind::NotADirectory => {}
                Err(source) => {
                    return Err(KnownHostsError::Read {
                        path: path.clone(),
                        source,
                    })
                }
            }
        }
        Ok(known)
    }

    /// Parses the text of one known_hosts file; `source` names it in
    /// `file:line` locations.
    pub fn parse(text: &str, source: &Path) -> KnownHosts {
        let mut known = KnownHosts::default();
        known.extend_from_text(text, &source.display().to_string());
        known
    }

    /// Adds known_hosts lines that do not come from a file (for example from
    /// a secret); `source` is the label used in `label:line` locations.
    pub fn extend_from_text(&mut self, text: &str, source: &str) {
        for (index, line) in text.lines().enumerate() {
            let location = format!("{}:{}", source, index + 1);
            if let Some(entry) = parse_line(line, location) {
                self.entries.push(entry);
            }
        }
    }

    /// Checks the key a server presented for `host` on `port`.
    ///
    /// `algorithm` is the key type; `rsa-sha2-256` and `rsa-sha2-512` are
    /// accepted as names for `ssh-rsa` because those are signature
    /// algorithms of the same key, which known_hosts always records as
    /// `ssh-rsa`. On a port other than 22, a host with no `[host]:port`
    /// entry holding the key is also looked up without the port, as OpenSSH
    /// does ("checking without port identifier"): only a match there counts,
    /// a different key recorded without the port is not a mismatch.
    pub fn check(&self, host: &str, port: u16, algorithm: &str, blob: &[u8]) -> HostKeyStatus {
        let algorithm = key_type_of(algorithm);
        if let Some(revoked) = self.revocation_of(algorithm, blob) {
            return HostKeyStatus::Revoked {
                fingerprint: fingerprint_sha256(blob),
                source: revoked.location.clone(),
            };
        }
        let name = lookup_name(host, port);
        let same_type: Vec<&Entry> = self
            .plain_entries_for(&name)
            .filter(|e| e.key_type == algorithm)
            .collect();
        if same_type.iter().any(|e| e.blob == blob) {
            return HostKeyStatus::Valid;
        }
        if same_type.is_empty() {
            let without_port = lookup_name(host, 22);
            if port != 22
                && self
                    .plain_entries_for(&without_port)
                    .any(|e| e.key_type == algorithm && e.blob == blob)
            {
                return HostKeyStatus::Valid;
            }
            return HostKeyStatus::Unknown;
        }
        HostKeyStatus::Mismatch(Mismatch {
            presented_fingerprint: fingerprint_sha256(blob),
            known: same_type
                .iter()
                .map(|e| KnownKey {
                    fingerprint: fingerprint_sha256(&e.blob),
                    location: e.location.clone(),
                })
                .collect(),
        })
    }

    /// Where the plain entry holding exactly this key for `host` on `port`
    /// is recorded (`file:line`), looked up as [`KnownHosts::check`] looks
    /// (the `[host]:port` name, then the bare host); None when no entry
    /// holds it. `smssh check` says where a known host key came from.
    pub fn location_of(
        &self,
        host: &str,
        port: u16,
        algorithm: &str,
        blob: &[u8],
    ) -> Option<String> {
        let algorithm = key_type_of(algorithm);
        let holds = |name: &String| {
            self.plain_entries_for(name)
                .find(|e| e.key_type == algorithm && e.blob == blob)
                .map(|e| e.location.clone())
        };
        holds(&lookup_name(host, port)).or_else(|| {
            (port != 22)
                .then(|| holds(&lookup_name(host, 22)))
                .flatten()
        })
    }

    /// Checks a host certificate the server presented for `host` on `port`,
    /// at Unix time `now`, by OpenSSH's rules (sshconnect.c): the certified
    /// key or the CA key `@revoked` refuses; otherwise a `@cert-authority`
    /// line whose patterns match `[host]:port` (or, failing that, the bare
    /// host, as for plain keys) must hold the CA key, and the certificate
    /// must be a host certificate, valid now, name `host` among its
    /// principals (literally, lowercased; no principals means any host),
    /// carry no critical option, and be signed with one of
    /// `ca_signature_algorithms` (ssh_config's `CASignatureAlgorithms`). The
    /// principal is the host name alone, never `[host]:port`, as in OpenSSH.
    pub fn check_certificate(
        &self,
        host: &str,
        port: u16,
        cert: &CertificateClaims<'_>,
        now: u64,
        ca_signature_algorithms: &[String],
    ) -> CertificateStatus {
        for (key_type, blob) in [
            (key_type_of(cert.key_type), cert.key_blob),
            (key_type_of(cert.ca_key_type), cert.ca_blob),
        ] {
            if let Some(revoked) = self.revocation_of(key_type, blob) {
                return CertificateStatus::Revoked {
                    fingerprint: fingerprint_sha256(blob),
                    source: revoked.location.clone(),
                };
            }
        }
        let ca_type = key_type_of(cert.ca_key_type);
        let authority = self
            .authority_entries_for(lookup_name(host, port))
            .chain(
                (port != 22)
                    .then(|| self.authority_entries_for(lookup_name(host, 22)))
                    .into_iter()
                    .flatten(),
            )
            .find(|e| e.key_type == ca_type && e.blob == cert.ca_blob);
        let Some(authority) = authority else {
            return CertificateStatus::Untrusted(CertificateProblem::NoAuthority {
                fingerprint: fingerprint_sha256(cert.ca_blob),
            });
        };
        let name = host.to_ascii_lowercase();
        let problem = if cert.cert_type != HOST_CERTIFICATE_TYPE {
            CertificateProblem::NotHostCertificate {
                cert_type: cert.cert_type,
            }
        } else if now < cert.valid_after {
            CertificateProblem::NotYetValid {
                valid_after: cert.valid_after,
            }
        } else if now >= cert.valid_before {
            CertificateProblem::Expired {
                valid_before: cert.valid_before,
            }
        } else if !cert.principals.is_empty() && !cert.principals.contains(&name) {
            CertificateProblem::WrongPrincipal {
                principals: describe_principals(cert.principals),
                name,
            }
        } else if let Some(option) = cert.critical_options.first() {
            CertificateProblem::CriticalOption {
                option: truncate_chars(option, 64).to_owned(),
            }
        } else if !ca_signature_algorithms
            .iter()
            .any(|allowed| allowed == cert.signature_algorithm)
        {
            CertificateProblem::SignatureAlgorithm {
                algorithm: truncate_chars(cert.signature_algorithm, 64).to_owned(),
            }
        } else {
            return CertificateStatus::Trusted {
                authority: authority.location.clone(),
            };
        };
        CertificateStatus::Untrusted(problem)
    }

    /// Returns the host key algorithms to ask for first for `host` on
    /// `port`: [`HOST_CERTIFICATE_ALGORITHMS`] when a `@cert-authority` line
    /// matches the host (with or without the port, as
    /// [`KnownHosts::check_certificate`] looks), then the key types recorded
    /// for it, in file order without duplicates, as OpenSSH orders them.
    pub fn known_algorithms(&self, host: &str, port: u16) -> Vec<String> {
        let name = lookup_name(host, port);
        let mut types: Vec<String> = Vec::new();
        let authority = self.authority_entries_for(name.clone()).next().is_some()
            || (port != 22
                && self
                    .authority_entries_for(lookup_name(host, 22))
                    .next()
                    .is_some());
        if authority {
            types.push(HOST_CERTIFICATE_ALGORITHMS.to_owned());
        }
        for entry in self.plain_entries_for(&name) {
            if !types.contains(&entry.key_type) {
                types.push(entry.key_type.clone());
            }
        }
        types
    }

    /// The `@revoked` line for this key, if any. A revoked key is refused
    /// for every host, whatever host patterns its line carries: revocation
    /// says the key must never be trusted. (OpenSSH reads only the lines
    /// whose patterns match the host; `@revoked *`, the usual form, is the
    /// same either way.)
    fn revocation_of(&self, key_type: &str, blob: &[u8]) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.marker == Marker::Revoked && e.key_type == key_type && e.blob == blob)
    }

    /// Entries without a marker whose host field matches `name`.
    /// `@cert-authority` lines vouch only for certificates, and `@revoked`
    /// lines for nothing.
    fn plain_entries_for<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Entry> + 'a {
        self.entries
            .iter()
            .filter(move |e| e.marker == Marker::None && host_field_matches(&e.hosts, name))
    }

    /// `@cert-authority` entries whose host field matches `name`.
    fn authority_entries_for(&self, name: String) -> impl Iterator<Item = &Entry> + '_ {
        self.entries.iter().filter(move |e| {
            e.marker == Marker::CertAuthority && host_field_matches(&e.hosts, &name)
        })
    }
}

/// The known_hosts line (`host algorithm base64`, newline-terminated) for a host key, after
/// refusing host names that would corrupt the file or turn the entry into a pattern. Used by
/// [`append_entry`] and by the rotation, which records host keys in the secret.
pub fn entry_line(
    host: &str,
    port: u16,
    algorithm: &str,
    blob: &[u8],
) -> Result<String, KnownHostsError> {
    let invalid = |reason| KnownHostsError::InvalidEntry {
        host: host.to_string(),
        reason,
    };
    // Characters that separate fields or patterns would corrupt the file or
    // turn the entry into a pattern matching other hosts.
    if host.is_empty() {
        return Err(invalid("empty host name"));
    }
    if host.chars().any(|c| {
        c.is_whitespace() || c.is_control() || matches!(c, ',' | '*' | '?' | '!' | '#' | '|' | '@')
    }) {
        return Err(invalid(
            "host name contains characters that are special in known_hosts",
        ));
    }
    let key_type = key_type_of(algorithm);
    if key_type.is_empty()
        || key_type
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid("invalid key type"));
    }
    if blob.is_empty() {
        return Err(invalid("empty key"));
    }
    Ok(format!(
        "{} {} {}\n",
        lookup_name(host, port),
        key_type,
        STANDARD.encode(blob)
    ))
}

/// How [`append_entry`] writes the host name, after ssh_config's
/// `HashKnownHosts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostNameForm {
    /// `host` or `[host]:port`, readable.
    Plain,
    /// `|1|salt|hash`: HMAC-SHA1 of `host` or `[host]:port` keyed with 20
    /// random bytes, as `ssh-keygen -H` writes it, so the file does not list
    /// the hosts the user visits.
    Hashed,
}

/// Appends `host algorithm base64` to the known_hosts file at `path`, for
/// StrictHostKeyChecking=accept-new, with the host name written as `form`
/// says.
///
/// The parent directory is created with mode 0700 and a new file with mode
/// 0600, matching what OpenSSH creates. `rsa-sha2-*` is recorded as
/// `ssh-rsa`. The line goes out in one buffer in append mode so that
/// concurrent readers and writers never see a partial line.
pub fn append_entry(
    path: &Path,
    host: &str,
    port: u16,
    algorithm: &str,
    blob: &[u8],
    form: HostNameForm,
) -> Result<(), KnownHostsError> {
    let mut line = entry_line(host, port, algorithm, blob)?;
    if form == HostNameForm::Hashed {
        // entry_line has refused every host name with a space, so the first
        // space ends the name it wrote.
        if let Some((name, rest)) = line.split_once(' ') {
            line = format!("{} {rest}", hashed_host_name(name, rand::random()));
        }
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        if !parent.exists() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|source| KnownHostsError::CreateDir {
                    path: parent.to_path_buf(),
                    source,
                })?;
        }
    }
    let write_err = |source| KnownHostsError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = fs::OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
        .map_err(write_err)?;
    // A file whose last line lacks its newline would otherwise have our
    // entry glued onto that line, corrupting both.
    let len = file.metadata().map_err(write_err)?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1)).map_err(write_err)?;
        file.read_exact(&mut last).map_err(write_err)?;
        if last[0] != b'\n' {
            line.insert(0, '\n');
        }
    }
    file.write_all(line.as_bytes()).map_err(write_err)?;
    file.flush().map_err(write_err)
}

/// `|1|base64(salt)|base64(HMAC-SHA1(salt, name))`, the hashed host field of
/// OpenSSH (hostfile.c `host_hash`).
fn hashed_host_name(name: &str, salt: [u8; 20]) -> String {
    let hash = match Hmac::<Sha1>::new_from_slice(&salt) {
        Ok(mut mac) => {
            mac.update(name.as_bytes());
            mac.finalize().into_bytes().to_vec()
        }
        // HMAC takes keys of any length, so this branch is never taken; an
        // empty hash would only make the line one that nothing matches.
        Err(_) => Vec::new(),
    };
    format!("|1|{}|{}", STANDARD.encode(salt), STANDARD.encode(hash))
}

/// Maps signature algorithm names of RSA keys to the key type known_hosts
/// records.
fn key_type_of(algorithm: &str) -> &str {
    match algorithm {
        "rsa-sha2-256" | "rsa-sha2-512" => "ssh-rsa",
        other => other,
    }
}

/// The name OpenSSH looks up in known_hosts: the lowercased host for port
/// 22, `[host]:port` otherwise.
fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// Parses one line; `None` for comments, blank lines and anything OpenSSH
/// would skip.
fn parse_line(line: &str, location: String) -> Option<Entry> {
    let mut fields = line.split([' ', '\t', '\r']).filter(|f| !f.is_empty());
    let mut first = fields.next()?;
    if first.starts_with('#') {
        return None;
    }
    let marker = match first {
        "@cert-authority" => Marker::CertAuthority,
        "@revoked" => Marker::Revoked,
        m if m.starts_with('@') => return None,
        _ => Marker::None,
    };
    if marker != Marker::None {
        first = fields.next()?;
    }
    let hosts = parse_host_field(first)?;
    let key_type = fields.next()?;
    let blob = STANDARD.decode(fields.next()?).ok()?;
    if embedded_key_type(&blob)? != key_type.as_bytes() {
        return None;
    }
    Some(Entry {
        marker,
        hosts,
        key_type: key_type.to_string(),
        blob,
        location,
    })
}

/// The key type string at the start of a wire-form key: a big-endian u32
/// length followed by that many bytes.
fn embedded_key_type(blob: &[u8]) -> Option<&[u8]> {
    let len_bytes: [u8; 4] = blob.get(..4)?.try_into().ok()?;
    let len = usize::try_from(u32::from_be_bytes(len_bytes)).ok()?;
    blob.get(4..4usize.checked_add(len)?)
}

fn parse_host_field(field: &str) -> Option<HostField> {
    if let Some(rest) = field.strip_prefix("|1|") {
        let (salt, hash) = rest.split_once('|')?;
        let salt = STANDARD.decode(salt).ok()?;
        let hash = STANDARD.decode(hash).ok()?;
        // OpenSSH insists on SHA1-sized salt and hash and skips other lines.
        if salt.len() != 20 || hash.len() != 20 {
            return None;
        }
        return Some(HostField::Hashed { salt, hash });
    }
    if field.starts_with('|') {
        // An unknown hash scheme cannot be matched against anything.
        return None;
    }
    Some(HostField::Patterns(
        field.split(',').map(str::to_ascii_lowercase).collect(),
    ))
}

fn host_field_matches(field: &HostField, name: &str) -> bool {
    match field {
        HostField::Hashed { salt, hash } => {
            let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(salt) else {
                // HMAC accepts keys of any length, so this branch is never
                // taken; treating it as "no match" is the safe answer anyway.
                return false;
            };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostField::Patterns(patterns) => {
            pattern_list_matches(patterns.iter().map(String::as_str), name)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Produced by `ssh-keygen -t ed25519` / `-t ecdsa`; fingerprints from
    // `ssh-keygen -lf`.
    const K1: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIICptHgzbfoI3REBzV+P73ymHEslhymSagT3OX6wDUo4";
    const K1_FP: &str = "SHA256:c7iPNQY7Vl8DWmBbXy3ahj1H/K2GV7lzwnbG15xYln8";
    const K2: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIKUuNUi6DheLVnLgFr9ch0pt73DB/WVrOiTZ5gCh0AsD";
    const K2_FP: &str = "SHA256:6u7O0/eJ6INLclFDMeQeLaL+ON2EU6Cgi5ITqBC+JfE";
    const K3: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHbf6VyTA/IJqaMXaR9XMw1IY2vft8gTYceQBLKaKPUVsoqaE6QSMS+JDCMDqWQZwhY/5ZLqiW2jt35z8c6jj/E=";
    const K3_FP: &str = "SHA256:9lAkDRt+LNoO2gEFvCzCpcCfYT3kyzgiZsR7DzQq/1w";
    // `ssh-keygen -H` output for "server.example.com <K1>" and
    // "[db.example.com]:2222 <K2>".
    const HASHED_SERVER: &str = "|1|tcYAO0viaXtUpa3hkjSLvj8sMEo=|L6qy5itmjZoqLqRFOFMP8ua9udI=";
    const HASHED_DB_2222: &str = "|1|FnNkn26t4HehFP1eZ1jYIEYwby8=|GatRT6vqhC18a/9R7KT2gYzXlho=";

    const ED: &str = "ssh-ed25519";
    const EC: &str = "ecdsa-sha2-nistp256";

    /// OpenSSH 9's default `CASignatureAlgorithms` (`ssh -G`), without SHA-1 RSA.
    fn ca_signatures() -> Vec<String> {
        [
            "ssh-ed25519",
            "ecdsa-sha2-nistp256",
            "ecdsa-sha2-nistp384",
            "ecdsa-sha2-nistp521",
            "rsa-sha2-512",
            "rsa-sha2-256",
        ]
        .map(String::from)
        .to_vec()
    }

    fn blob(b64: &str) -> Vec<u8> {
        STANDARD.decode(b64).unwrap()
    }

    fn kh(text: &str) -> KnownHosts {
        KnownHosts::parse(text, Path::new("kh"))
    }

    #[test]
    fn fingerprints_match_ssh_keygen() {
        for (key, fp) in [(K1, K1_FP), (K2, K2_FP), (K3, K3_FP)] {
            assert_eq!(fingerprint_sha256(&blob(key)), fp);
        }
    }

    #[test]
    fn check_table() {
        let text = format!(
            "# comment line\n\
             \n\
             {HASHED_SERVER} {ED} {K1}\n\
             {HASHED_DB_2222} {ED} {K2} trailing comment\n\
             plain.example.com,alias {ED} {K1} me@laptop\n\
             [plain.example.com]:2200 {ED} {K2}\n\
             *.wild.example,!bad.wild.example {ED} {K1}\n\
             web?.example.com {EC} {K3}\n\
             MixedCase.Example {ED} {K1}\n\
             @cert-authority *.ca.example {ED} {K1}\n\
             @revoked * {ED} {K2}\n"
        );
        let k = kh(&text);
        let mismatch = |locs: &[(&str, &str)]| {
            HostKeyStatus::Mismatch(Mismatch {
                presented_fingerprint: K3_FP.to_string(),
                known: locs
                    .iter()
                    .map(|(fp, loc)| KnownKey {
                        fingerprint: fp.to_string(),
                        location: loc.to_string(),
                    })
                    .collect(),
            })
        };
        // Presenting K3 as ed25519 lets us provoke a mismatch without a
        // third ed25519 key; check compares blobs only.
        let revoked = HostKeyStatus::Revoked {
            fingerprint: K2_FP.to_string(),
            source: "kh:11".to_string(),
        };
        let cases: Vec<(&str, u16, &str, &str, HostKeyStatus)> = vec![
            // Hashed entries written by ssh-keygen -H.
            ("server.example.com", 22, ED, K1, HostKeyStatus::Valid),
            ("SERVER.example.com", 22, ED, K1, HostKeyStatus::Valid),
            (
                "server.example.com",
                22,
                ED,
                K3,
                mismatch(&[(K1_FP, "kh:3")]),
            ),
            // No `[server.example.com]:2222` entry: found without the port.
            ("server.example.com", 2222, ED, K1, HostKeyStatus::Valid),
            ("server.example.com", 2222, ED, K3, HostKeyStatus::Unknown),
            ("db.example.com", 22, ED, K1, HostKeyStatus::Unknown),
            // K2 is revoked for every host, even where it is recorded.
            ("db.example.com", 2222, ED, K2, revoked.clone()),
            ("anything", 22, ED, K2, revoked),
            // Plain patterns and ports.
            ("plain.example.com", 22, ED, K1, HostKeyStatus::Valid),
            ("alias", 22, ED, K1, HostKeyStatus::Valid),
            (
                "plain.example.com",
                2200,
                ED,
                K3,
                mismatch(&[(K2_FP, "kh:6")]),
            ),
            ("plain.example.com", 2201, ED, K1, HostKeyStatus::Valid),
            // An entry for the port that disagrees is a mismatch, even when
            // the entry without the port holds the key.
            (
                "plain.example.com",
                2200,
                ED,
                K1,
                HostKeyStatus::Mismatch(Mismatch {
                    presented_fingerprint: K1_FP.to_string(),
                    known: vec![KnownKey {
                        fingerprint: K2_FP.to_string(),
                        location: "kh:6".to_string(),
                    }],
                }),
            ),
            // A different key recorded without the port is no mismatch.
            ("alias", 2201, ED, K3, HostKeyStatus::Unknown),
            ("mixedcase.example", 22, ED, K1, HostKeyStatus::Valid),
            // Wildcards and negation.
            ("a.wild.example", 22, ED, K1, HostKeyStatus::Valid),
            ("wild.example", 22, ED, K1, HostKeyStatus::Unknown),
            ("bad.wild.example", 22, ED, K1, HostKeyStatus::Unknown),
            ("web1.example.com", 22, EC, K3, HostKeyStatus::Valid),
            ("web12.example.com", 22, EC, K3, HostKeyStatus::Unknown),
            // Known only with another algorithm.
            ("web1.example.com", 22, ED, K1, HostKeyStatus::Unknown),
            // A CA line never vouches for a plain key.
            ("x.ca.example", 22, ED, K1, HostKeyStatus::Unknown),
            ("nowhere", 22, ED, K1, HostKeyStatus::Unknown),
        ];
        for (host, port, alg, key, want) in cases {
            assert_eq!(
                k.check(host, port, alg, &blob(key)),
                want,
                "{host}:{port} {alg}"
            );
        }
    }

    #[test]
    fn mismatch_lists_every_same_type_key() {
        let k = kh(&format!("h {ED} {K1}\nh {EC} {K3}\nh,other {ED} {K2}\n"));
        let mut presented = blob(K1);
        if let Some(last) = presented.last_mut() {
            *last ^= 1;
        }
        let HostKeyStatus::Mismatch(m) = k.check("h", 22, ED, &presented) else {
            panic!("expected mismatch");
        };
        assert_eq!(m.presented_fingerprint, fingerprint_sha256(&presented));
        let locs: Vec<_> = m
            .known
            .iter()
            .map(|k| (k.fingerprint.as_str(), k.location.as_str()))
            .collect();
        assert_eq!(locs, vec![(K1_FP, "kh:1"), (K2_FP, "kh:3")]);
        // A valid key wins over other, mismatching lines for the host.
        assert_eq!(k.check("h", 22, ED, &blob(K2)), HostKeyStatus::Valid);
    }

    #[test]
    fn unparseable_lines_are_skipped() {
        let lines = [
            format!("@bogus h {ED} {K1}"),
            format!("h {ED} not*base64"),
            format!("h {EC} {K1}"), // key type disagrees with blob
            format!("|1|c2hvcnQ=|c2hvcnQ= {ED} {K1}"), // salt too short
            format!("|2|abc|def {ED} {K1}"),
            "h ssh-ed25519".to_string(),
            format!("h {ED} AAAA"), // blob too short for its type
            "@revoked".to_string(),
        ];
        for line in lines {
            let k = kh(&line);
            assert_eq!(
                k.check("h", 22, ED, &blob(K1)),
                HostKeyStatus::Unknown,
                "{line}"
            );
            assert!(k.known_algorithms("h", 22).is_empty(), "{line}");
        }
    }

    #[test]
    fn known_algorithms_table() {
        let k = kh(&format!(
            "h {ED} {K1}\n{HASHED_SERVER} {EC} {K3}\nh,server.example.com {EC} {K3}\nh {ED} {K2}\n\
             @revoked h ssh-rsa AAAAB3NzaC1yc2E=\n@cert-authority h ssh-rsa AAAAB3NzaC1yc2E=\n"
        ));
        let cases: Vec<(&str, u16, Vec<&str>)> = vec![
            ("h", 22, vec![HOST_CERTIFICATE_ALGORITHMS, ED, EC]),
            ("server.example.com", 22, vec![EC]),
            // The CA line has no port, and certificates are looked up
            // without the port too; plain keys for `h` are not `[h]:2222`'s.
            ("h", 2222, vec![HOST_CERTIFICATE_ALGORITHMS]),
            ("nope", 22, vec![]),
        ];
        for (host, port, want) in cases {
            assert_eq!(k.known_algorithms(host, port), want, "{host}:{port}");
        }
    }

    #[test]
    fn rsa_signature_names_compare_as_ssh_rsa() {
        // Minimal wire-form blob whose embedded type is ssh-rsa.
        let rsa = "AAAAB3NzaC1yc2EAAAADAQAB";
        let k = kh(&format!("h ssh-rsa {rsa}\n"));
        for alg in ["ssh-rsa", "rsa-sha2-256", "rsa-sha2-512"] {
            assert_eq!(
                k.check("h", 22, alg, &blob(rsa)),
                HostKeyStatus::Valid,
                "{alg}"
            );
        }
    }

    #[test]
    fn extend_from_text_labels_locations() {
        let mut k = kh(&format!("h {ED} {K1}\n"));
        k.extend_from_text(&format!("\nh {ED} {K2}\n"), "secret:cluster");
        let presented = blob(K3);
        let HostKeyStatus::Mismatch(m) = k.check("h", 22, ED, &presented) else {
            panic!("expected mismatch");
        };
        let locs: Vec<_> = m.known.iter().map(|k| k.location.as_str()).collect();
        assert_eq!(locs, vec!["kh:1", "secret:cluster:2"]);
    }

    #[test]
    fn load_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        fs::write(&a, format!("h {ED} {K1}\n")).unwrap();
        let missing = dir.path().join("missing");
        let k = KnownHosts::load(&[missing, a.clone()]).unwrap();
        assert_eq!(k.check("h", 22, ED, &blob(K1)), HostKeyStatus::Valid);
        let HostKeyStatus::Mismatch(m) = k.check("h", 22, ED, &blob(K2)) else {
            panic!("expected mismatch");
        };
        assert_eq!(m.known[0].location, format!("{}:1", a.display()));
        // A directory exists but cannot be read as a file.
        let err = KnownHosts::load(&[dir.path().to_path_buf()]).unwrap_err();
        assert!(matches!(err, KnownHostsError::Read { ref path, .. } if path == dir.path()));
        assert!(err.to_string().contains(&dir.path().display().to_string()));
    }

    #[test]
    fn append_entry_table() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/.ssh/known_hosts");
        let cases: Vec<(&str, u16, &str, &str, &str)> = vec![
            ("Server.Example.com", 22, ED, K1, "server.example.com"),
            ("10.0.1.5", 2222, EC, K3, "[10.0.1.5]:2222"),
            ("fe80::1", 2200, ED, K2, "[fe80::1]:2200"),
        ];
        let mut want = String::new();
        for (host, port, alg, key, written) in &cases {
            append_entry(&path, host, *port, alg, &blob(key), HostNameForm::Plain).unwrap();
            want.push_str(&format!("{written} {alg} {key}\n"));
            let k = KnownHosts::load(std::slice::from_ref(&path)).unwrap();
            assert_eq!(k.check(host, *port, alg, &blob(key)), HostKeyStatus::Valid);
        }
        assert_eq!(fs::read_to_string(&path).unwrap(), want);
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }

    #[test]
    fn append_entry_repairs_missing_final_newline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        fs::write(&path, format!("a {ED} {K1}")).unwrap();
        append_entry(&path, "b", 22, ED, &blob(K2), HostNameForm::Plain).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            format!("a {ED} {K1}\nb {ED} {K2}\n")
        );
    }

    #[test]
    fn append_entry_rejects_bad_input() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        let cases: Vec<(&str, &str, Vec<u8>)> = vec![
            ("", ED, blob(K1)),
            ("a b", ED, blob(K1)),
            ("a,b", ED, blob(K1)),
            ("*", ED, blob(K1)),
            ("h", "", blob(K1)),
            ("h", "ssh ed25519", blob(K1)),
            ("h", ED, Vec::new()),
        ];
        for (host, alg, key) in cases {
            let err = append_entry(&path, host, 22, alg, &key, HostNameForm::Hashed).unwrap_err();
            assert!(
                matches!(err, KnownHostsError::InvalidEntry { .. }),
                "{host:?} {alg:?}"
            );
        }
        assert!(!path.exists());
    }

    #[test]
    fn hashed_entries_match_only_their_name_and_differ_each_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        for (host, port) in [
            ("Server.Example.com", 22),
            ("10.0.1.5", 2222),
            ("10.0.1.5", 2222),
        ] {
            append_entry(&path, host, port, ED, &blob(K1), HostNameForm::Hashed).unwrap();
        }
        let text = fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        for line in &lines {
            let fields: Vec<&str> = line.split(' ').collect();
            assert!(fields[0].starts_with("|1|"), "{line}");
            assert_eq!(&fields[1..], [ED, K1], "{line}");
            assert!(
                !line.contains("example") && !line.contains("10.0.1.5"),
                "{line}"
            );
        }
        // A fresh salt each time: the same name never gives the same line.
        assert_ne!(lines[1], lines[2]);
        let k = KnownHosts::load(std::slice::from_ref(&path)).unwrap();
        let cases: Vec<(&str, u16, HostKeyStatus)> = vec![
            ("server.example.com", 22, HostKeyStatus::Valid),
            ("10.0.1.5", 2222, HostKeyStatus::Valid),
            ("10.0.1.5", 22, HostKeyStatus::Unknown),
            ("10.0.1.50", 2222, HostKeyStatus::Unknown),
        ];
        for (host, port, want) in cases {
            assert_eq!(k.check(host, port, ED, &blob(K1)), want, "{host}:{port}");
        }
    }

    #[test]
    fn hashed_host_name_matches_ssh_keygen() {
        // The salt and hash of HASHED_SERVER, written by `ssh-keygen -H`.
        let salt: [u8; 20] = STANDARD
            .decode("tcYAO0viaXtUpa3hkjSLvj8sMEo=")
            .unwrap()
            .try_into()
            .unwrap();
        assert_eq!(hashed_host_name("server.example.com", salt), HASHED_SERVER);
    }

    #[test]
    fn utc_times() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
            (u64::MAX, "forever"),
        ];
        for (seconds, want) in cases {
            assert_eq!(utc_time(seconds), want, "{seconds}");
        }
    }

    #[test]
    fn certificate_table() {
        let ca = format!("{ED} {K2}");
        let text = format!(
            "@cert-authority *.ca.example,!bad.ca.example {ca}\n\
             @cert-authority {HASHED_SERVER} {ca}\n\
             @cert-authority [port.example]:2222 {ca}\n\
             @cert-authority other.example {EC} {K3}\n\
             plain.ca.example {ED} {K1}\n"
        );
        let k = kh(&text);
        // Host key K1 certified by CA K2, valid from 1000 to 2000.
        let names = vec![
            "x.ca.example".to_string(),
            "server.example.com".to_string(),
            "port.example".to_string(),
            "other.example".to_string(),
        ];
        let (key, ca_blob) = (blob(K1), blob(K2));
        let base = CertificateClaims {
            key_type: ED,
            key_blob: &key,
            cert_type: HOST_CERTIFICATE_TYPE,
            principals: &names,
            valid_after: 1000,
            valid_before: 2000,
            critical_options: Vec::new(),
            ca_key_type: ED,
            ca_blob: &ca_blob,
            signature_algorithm: ED,
        };
        let trusted = |line: &str| CertificateStatus::Trusted {
            authority: format!("kh:{line}"),
        };
        let untrusted = CertificateStatus::Untrusted;
        let no_ca = untrusted(CertificateProblem::NoAuthority {
            fingerprint: K2_FP.to_string(),
        });
        let empty: Vec<String> = Vec::new();
        let one = vec!["x.ca.example".to_string()];
        let many: Vec<String> = (0..6).map(|i| format!("h{i}")).collect();
        let star = vec!["*.ca.example".to_string()];
        let bracket = vec!["[port.example]:2222".to_string()];
        let cases: Vec<(&str, &str, u16, CertificateClaims, u64, CertificateStatus)> = vec![
            (
                "plain pattern",
                "x.ca.example",
                22,
                base.clone(),
                1500,
                trusted("1"),
            ),
            (
                "names are lowercased",
                "X.CA.example",
                22,
                base.clone(),
                1500,
                trusted("1"),
            ),
            (
                "first second",
                "x.ca.example",
                22,
                base.clone(),
                1000,
                trusted("1"),
            ),
            (
                "hashed pattern",
                "server.example.com",
                22,
                base.clone(),
                1500,
                trusted("2"),
            ),
            (
                "port pattern",
                "port.example",
                2222,
                base.clone(),
                1500,
                trusted("3"),
            ),
            (
                "no port in the CA line",
                "x.ca.example",
                2222,
                base.clone(),
                1500,
                trusted("1"),
            ),
            (
                "port pattern, other port",
                "port.example",
                2200,
                base.clone(),
                1500,
                no_ca.clone(),
            ),
            (
                "port pattern, port 22",
                "port.example",
                22,
                base.clone(),
                1500,
                no_ca.clone(),
            ),
            (
                "negated",
                "bad.ca.example",
                22,
                base.clone(),
                1500,
                no_ca.clone(),
            ),
            (
                "pattern does not match",
                "ca.example",
                22,
                base.clone(),
                1500,
                no_ca.clone(),
            ),
            (
                "another CA for the host",
                "other.example",
                22,
                base.clone(),
                1500,
                no_ca.clone(),
            ),
            (
                "a plain line vouches for no CA",
                "plain.ca.example",
                22,
                CertificateClaims {
                    ca_blob: &key,
                    ..base.clone()
                },
                1500,
                untrusted(CertificateProblem::NoAuthority {
                    fingerprint: K1_FP.to_string(),
                }),
            ),
            (
                "user certificate",
                "x.ca.example",
                22,
                CertificateClaims {
                    cert_type: 1,
                    ..base.clone()
                },
                1500,
                untrusted(CertificateProblem::NotHostCertificate { cert_type: 1 }),
            ),
            (
                "not yet valid",
                "x.ca.example",
                22,
                base.clone(),
                999,
                untrusted(CertificateProblem::NotYetValid { valid_after: 1000 }),
            ),
            (
                "expired",
                "x.ca.example",
                22,
                base.clone(),
                2000,
                untrusted(CertificateProblem::Expired { valid_before: 2000 }),
            ),
            (
                "wrong principal",
                "y.ca.example",
                22,
                CertificateClaims {
                    principals: &one,
                    ..base.clone()
                },
                1500,
                untrusted(CertificateProblem::WrongPrincipal {
                    name: "y.ca.example".to_string(),
                    principals: "\"x.ca.example\"".to_string(),
                }),
            ),
            (
                "principals are names, not patterns",
                "y.ca.example",
                22,
                CertificateClaims {
                    principals: &star,
                    ..base.clone()
                },
                1500,
                untrusted(CertificateProblem::WrongPrincipal {
                    name: "y.ca.example".to_string(),
                    principals: "\"*.ca.example\"".to_string(),
                }),
            ),
            (
                "the principal never has the port",
                "port.example",
                2222,
                CertificateClaims {
                    principals: &bracket,
                    ..base.clone()
                },
                1500,
                untrusted(CertificateProblem::WrongPrincipal {
                    name: "port.example".to_string(),
                    principals: "\"[port.example]:2222\"".to_string(),
                }),
            ),
            (
                "a long list is cut short",
                "y.ca.example",
                22,
                CertificateClaims {
                    principals: &many,
                    ..base.clone()
                },
                1500,
                untrusted(CertificateProblem::WrongPrincipal {
                    name: "y.ca.example".to_string(),
                    principals: "\"h0\", \"h1\", \"h2\", \"h3\", 2 more".to_string(),
                }),
            ),
            (
                "no principals: any host",
                "z.ca.example",
                22,
                CertificateClaims {
                    principals: &empty,
                    ..base.clone()
                },
                1500,
                trusted("1"),
            ),
            (
                "critical option",
                "x.ca.example",
                22,
                CertificateClaims {
                    critical_options: vec!["force-command"],
                    ..base.clone()
                },
                1500,
                untrusted(CertificateProblem::CriticalOption {
                    option: "force-command".to_string(),
                }),
            ),
            (
                "SHA-1 RSA signature",
                "x.ca.example",
                22,
                CertificateClaims {
                    signature_algorithm: "ssh-rsa",
                    ..base.clone()
                },
                1500,
                untrusted(CertificateProblem::SignatureAlgorithm {
                    algorithm: "ssh-rsa".to_string(),
                }),
            ),
            (
                "SHA-2 RSA signature",
                "x.ca.example",
                22,
                CertificateClaims {
                    signature_algorithm: "rsa-sha2-512",
                    ..base.clone()
                },
                1500,
                trusted("1"),
            ),
        ];
        for (what, host, port, cert, now, want) in cases {
            assert_eq!(
                k.check_certificate(host, port, &cert, now, &ca_signatures()),
                want,
                "{what}"
            );
        }
    }

    #[test]
    fn revoked_host_or_ca_key_refuses_a_certificate() {
        let ca = format!("{ED} {K2}");
        let (key, ca_blob) = (blob(K1), blob(K2));
        let cert = CertificateClaims {
            key_type: ED,
            key_blob: &key,
            cert_type: HOST_CERTIFICATE_TYPE,
            principals: &[],
            valid_after: 0,
            valid_before: u64::MAX,
            critical_options: Vec::new(),
            ca_key_type: ED,
            ca_blob: &ca_blob,
            signature_algorithm: ED,
        };
        let cases = [
            (
                format!("@cert-authority * {ca}\n@revoked * {ED} {K1}\n"),
                K1_FP,
                "kh:2",
            ),
            (
                format!("@cert-authority * {ca}\n@revoked * {ca}\n"),
                K2_FP,
                "kh:2",
            ),
            // Revocation holds even where no CA line vouches, and for every
            // host whatever the revoked line's patterns.
            (format!("@revoked elsewhere {ca}\n"), K2_FP, "kh:1"),
        ];
        for (text, fingerprint, source) in cases {
            assert_eq!(
                kh(&text).check_certificate("h", 22, &cert, 5, &ca_signatures()),
                CertificateStatus::Revoked {
                    fingerprint: fingerprint.to_string(),
                    source: source.to_string(),
                },
                "{text}"
            );
        }
        assert_eq!(
            kh(&format!("@cert-authority * {ca}\n")).check_certificate(
                "h",
                22,
                &cert,
                5,
                &ca_signatures()
            ),
            CertificateStatus::Trusted {
                authority: "kh:1".to_string()
            }
        );
    }

    #[test]
    fn certificate_problems_read_as_one_line() {
        let cases = [
            (
                CertificateProblem::Expired { valid_before: 1_700_000_000 },
                "it expired at 2023-11-14T22:13:20Z",
            ),
            (
                CertificateProblem::NotYetValid { valid_after: 0 },
                "it is not valid before 1970-01-01T00:00:00Z",
            ),
            (
                CertificateProblem::CriticalOption { option: "x\ny".to_string() },
                "it carries the critical option \"x\\ny\", and no host certificate option is defined",
            ),
        ];
        for (problem, want) in cases {
            assert_eq!(problem.to_string(), want);
        }
    }
}
