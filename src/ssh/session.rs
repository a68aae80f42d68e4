//! Opening an authenticated SSH connection to one host: TCP, key exchange, host-key
//! verification against known_hosts, public-key authentication with the secret's key.
//!
//! Owns: russh's client configuration (algorithm order, TCP_NODELAY, window), the host-key
//! policy (StrictHostKeyChecking), the auth order (key, re-fetched key, fallback stage), and
//! [`ConnectError`]. Invariant: a connection is returned only after the server's host key was
//! found Valid in known_hosts (or newly recorded under accept-new/no, or accepted by the user at
//! a terminal) and authentication succeeded; a changed or revoked host key always refuses.
//! Must not know: what the connection is used for (exec, SFTP) or how many hosts there are.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use russh::client::{self, Handle};
use russh::keys::PublicKeyOrCertificate;
use russh::keys::{Certificate, HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh::{cipher, compression, kex, mac};

use crate::config::known_hosts::{
    self, CertificateClaims, CertificateStatus, HostKeyStatus, HostNameForm, KnownHosts,
    KnownHostsError,
};
use crate::config::ssh_config::StrictHostKeyChecking;
use crate::key::source::{KeyLoadError, KeySource, LoadedKey};
use crate::plan::{HostPlan, Route, RouteProblem};
use crate::ssh::proxy::{self, ProxyError};

/// russh's client configuration for `plan`. The algorithm lists are the plan's (ssh_config's,
/// or smssh's defaults, whose order was chosen by measurement: see README "Performance");
/// the rest is fixed: TCP_NODELAY saves two delayed-ACK waits per login, and a 16 MiB window
/// keeps a loopback or LAN link full.
pub fn client_config(plan: &HostPlan, preferred_host_keys: &[String]) -> client::Config {
    let algorithms = &plan.algorithms;
    let mut preferred = russh::Preferred::DEFAULT.clone();
    // Every name in a plan is one smssh supports (ssh_config refuses a list that leaves
    // none, and `supported_names_map_onto_russh` pins that each maps), so these filters
    // drop nothing; they keep a name russh does not know from becoming a panic.
    let mut kex: Vec<kex::Name> = algorithms
        .kex
        .iter()
        .filter_map(|name| kex::Name::try_from(name.as_str()).ok())
        .collect();
    // Not algorithms but capabilities: RFC 8308 extension info and OpenSSH's strict key
    // exchange (the Terrapin fix), offered whatever the list.
    kex.extend([
        kex::EXTENSION_SUPPORT_AS_CLIENT,
        kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
    ]);
    preferred.kex = std::borrow::Cow::Owned(kex);
    preferred.cipher = std::borrow::Cow::Owned(
        algorithms
            .ciphers
            .iter()
            .filter_map(|name| cipher::Name::try_from(name.as_str()).ok())
            .collect(),
    );
    preferred.mac = std::borrow::Cow::Owned(
        algorithms
            .macs
            .iter()
            .filter_map(|name| mac::Name::try_from(name.as_str()).ok())
            .collect(),
    );
    if plan.compression {
        preferred.compression = std::borrow::Cow::Owned(vec![
            compression::ZLIB_LEGACY,
            compression::ZLIB,
            compression::NONE,
        ]);
    } else {
        preferred.compression = std::borrow::Cow::Owned(vec![compression::NONE]);
    }
    let (certificates, mut keys) = host_key_algorithms(&algorithms.host_keys);
    // Like OpenSSH, ask first for the host key types known_hosts already has for this host,
    // so that a server with several keys presents the one we can verify.
    if !preferred_host_keys.is_empty() {
        keys.sort_by_key(|alg| {
            let name = host_key_type_name(alg);
            !preferred_host_keys.contains(&name)
        });
    }
    preferred.key = std::borrow::Cow::Owned(keys);
    // A `@cert-authority` line that may vouch for this host puts the certificate algorithms
    // of HostKeyAlgorithms first, as OpenSSH orders them; without one none is offered, since
    // no certificate could be trusted and the server would present it instead of a plain key.
    if preferred_host_keys
        .iter()
        .any(|name| name == known_hosts::HOST_CERTIFICATE_ALGORITHMS)
    {
        preferred.host_key_certificates = std::borrow::Cow::Owned(certificates);
    }
    client::Config {
        nodelay: true,
        window_size: 16 * 1024 * 1024,
        maximum_packet_size: 65535,
        preferred,
        keepalive_interval: plan.keepalive_interval(),
        keepalive_max: plan.server_alive_count_max as usize,
        // russh bounds a blocked socket write only by the inactivity timeout, which it resets
        // after every exchange that is not a keepalive tick; see HostPlan::unresponsive_limit.
        inactivity_timeout: plan.unresponsive_limit(),
        ..Default::default()
    }
}

/// Splits HostKeyAlgorithms into the keys whose certificates may be asked for
/// (`*-cert-v01@openssh.com`, as russh takes them: the plain algorithm) and the plain
/// algorithms, each in the list's order.
fn host_key_algorithms(
    names: &[String],
) -> (Vec<russh::keys::Algorithm>, Vec<russh::keys::Algorithm>) {
    let mut certificates = Vec::new();
    let mut keys = Vec::new();
    for name in names {
        if name.ends_with("-cert-v01@openssh.com") {
            certificates.extend(russh::keys::Algorithm::new_certificate(name).ok());
        } else {
            keys.extend(russh::keys::Algorithm::new(name).ok());
        }
    }
    (certificates, keys)
}

/// The key type as known_hosts writes it: RSA host keys are `ssh-rsa` whatever the signature
/// hash the session uses.
fn host_key_type_name(alg: &russh::keys::Algorithm) -> String {
    if alg.clone().is_rsa() {
        "ssh-rsa".to_owned()
    } else {
        alg.as_str().to_owned()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("{host} port {port}: cannot resolve: {reason}: check the host name and ~/.ssh/config")]
    Resolve {
        host: String,
        port: u16,
        reason: String,
    },
    #[error("{host} port {port}: connection refused: check that sshd runs there and listens on that port")]
    Refused { host: String, port: u16 },
    #[error("{host} port {port}: cannot connect: {reason}: check the address and the network")]
    Unreachable {
        host: String,
        port: u16,
        reason: String,
    },
    #[error("{host} port {port}: no answer within {seconds}s: the host is down, paused or filtered; raise ConnectTimeout if it is slow")]
    Timeout {
        host: String,
        port: u16,
        seconds: u64,
    },
    #[error("{host} port {port}: HOST KEY CHANGED: the server presents {presented} but known_hosts has {known}: someone may be intercepting, or the host was reinstalled; after checking, remove the old entry with ssh-keygen -R '{host_pattern}'")]
    HostKeyChanged {
        host: String,
        port: u16,
        host_pattern: String,
        presented: String,
        known: String,
    },
    #[error("{host} port {port}: host key {fingerprint} is REVOKED in {source_line}: refusing to connect")]
    HostKeyRevoked {
        host: String,
        port: u16,
        fingerprint: String,
        source_line: String,
    },
    #[error("{host} port {port}: host key verification failed: no known_hosts entry for this host ({algorithm} {fingerprint}){why}: add it to ~/.ssh/known_hosts (e.g. ssh-keyscan), or use -o StrictHostKeyChecking=accept-new")]
    HostKeyUnknown {
        host: String,
        port: u16,
        algorithm: String,
        fingerprint: String,
        why: &'static str,
    },
    #[error("{host} port {port}: host key verification failed: the server's host certificate was not accepted ({reason}) and its key ({algorithm} {fingerprint}) is not in known_hosts{why}: check the @cert-authority line and the certificate (ssh-keygen -L -f), or add the key to ~/.ssh/known_hosts")]
    HostCertificateUntrusted {
        host: String,
        port: u16,
        reason: String,
        algorithm: String,
        fingerprint: String,
        why: &'static str,
    },
    #[error("{host} port {port}: the host certificate's signature does not verify with the CA key in {authority}: someone may be intercepting: refusing to connect")]
    HostCertificateForged {
        host: String,
        port: u16,
        authority: String,
    },
    #[error("{host} port {port}: the RSA host key {fingerprint} has {bits} bits, fewer than RequiredRSASize {required}: refusing to connect; give the host a larger key")]
    HostKeyTooSmall {
        host: String,
        port: u16,
        fingerprint: String,
        bits: u32,
        required: u32,
    },
    #[error("{host} port {port}: cannot record the new host key in {path}: {reason}")]
    RecordHostKey {
        host: String,
        port: u16,
        path: String,
        reason: String,
    },
    #[error("{host} port {port}: SSH handshake failed: {reason}")]
    Handshake {
        host: String,
        port: u16,
        reason: String,
    },
    #[error("{user}@{host}: permission denied (publickey): the server refused {tried}: check that the public key of the secret's current version is in ~{user}/.ssh/authorized_keys there")]
    AuthRefused {
        user: String,
        host: String,
        tried: String,
    },
    #[error("{host}: ssh_config sets {keyword} {value} for this host: smssh does not implement {keyword} yet, and ignoring it would change where it connects or which host keys it trusts: refusing; remove it for this host (or set it to none), or use OpenSSH")]
    Unimplemented {
        host: String,
        keyword: &'static str,
        value: String,
    },
    #[error("{host}: {problem}")]
    Route { host: String, problem: RouteProblem },
    #[error("{host}: {source}")]
    Proxy { host: String, source: ProxyError },
    #[error("{host} port {port}: a host-key probe makes no login, and this host is reached through a jump host, which needs one: record its key with a login first (smssh {host} true)")]
    ProbeThroughJump { host: String, port: u16 },
    #[error("{user}@{host}: the secret's {algorithm} key cannot be offered: {reason}: allow it for this host, or rotate to another key type")]
    KeyNotAllowed {
        user: String,
        host: String,
        algorithm: String,
        reason: String,
    },
    #[error(transparent)]
    Key(#[from] KeyLoadError),
}

impl ConnectError {
    /// True when the message names the host it is about; only a failure to load the key,
    /// which concerns the secret, does not.
    pub fn names_host(&self) -> bool {
        !matches!(self, ConnectError::Key(_))
    }

    /// True for failures that may pass on another try (network and timeouts), as opposed to
    /// verdicts (host key, authentication, secret) that a retry would only repeat.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ConnectError::Refused { .. }
                | ConnectError::Unreachable { .. }
                | ConnectError::Timeout { .. }
                | ConnectError::Handshake { .. }
        )
    }
}

/// What `check_server_key` concluded when it refused, so the caller can say why.
#[derive(Debug)]
enum Refusal {
    Changed {
        presented: String,
        known: String,
    },
    Revoked {
        fingerprint: String,
        source_line: String,
    },
    Unknown {
        algorithm: String,
        fingerprint: String,
        why: &'static str,
        /// Why the server's host certificate did not vouch for it, when it presented one.
        certificate: Option<String>,
    },
    ForgedCertificate {
        authority: String,
    },
    WeakRsaKey {
        fingerprint: String,
        bits: u32,
        required: u32,
    },
    Record {
        path: String,
        reason: String,
    },
}

impl Refusal {
    fn into_error(self, host: String, port: u16) -> ConnectError {
        match self {
            Refusal::Changed { presented, known } => ConnectError::HostKeyChanged {
                host_pattern: host_pattern(&host, port),
                host,
                port,
                presented,
                known,
            },
            Refusal::Revoked {
                fingerprint,
                source_line,
            } => ConnectError::HostKeyRevoked {
                host,
                port,
                fingerprint,
                source_line,
            },
            Refusal::Unknown {
                algorithm,
                fingerprint,
                why,
                certificate: None,
            } => ConnectError::HostKeyUnknown {
                host,
                port,
                algorithm,
                fingerprint,
                why,
            },
            Refusal::Unknown {
                algorithm,
                fingerprint,
                why,
                certificate: Some(reason),
            } => ConnectError::HostCertificateUntrusted {
                host,
                port,
                reason,
                algorithm,
                fingerprint,
                why,
            },
            Refusal::ForgedCertificate { authority } => ConnectError::HostCertificateForged {
                host,
                port,
                authority,
            },
            Refusal::WeakRsaKey {
                fingerprint,
                bits,
                required,
            } => ConnectError::HostKeyTooSmall {
                host,
                port,
                fingerprint,
                bits,
                required,
            },
            Refusal::Record { path, reason } => ConnectError::RecordHostKey {
                host,
                port,
                path,
                reason,
            },
        }
    }
}

/// Host-key verification for one connection.
pub struct Verifier {
    host: String,
    port: u16,
    known_hosts: Arc<KnownHosts>,
    policy: StrictHostKeyChecking,
    batch_mode: bool,
    record_to: Option<PathBuf>,
    record_form: HostNameForm,
    /// `CASignatureAlgorithms`: the signatures a host certificate's CA may use.
    ca_signature_algorithms: Vec<String>,
    /// `RequiredRSASize`: smaller RSA host keys are refused before any lookup, as OpenSSH does.
    required_rsa_size: u32,
    /// Whether the server's forwarded-tcpip channels go to the forwarding loop (the
    /// destination's session) or are refused (a jump host's).
    delivers_forwarded: bool,
    learn: Option<Arc<Mutex<Vec<String>>>>,
    refusal: Arc<Mutex<Option<Refusal>>>,
    /// Told why the session ended, for whoever still waits on one of its channels.
    ended: tokio::sync::watch::Sender<Option<SessionEnd>>,
    /// [`HostPlan::unresponsive_limit`], to say how long an unresponsive server was given.
    unresponsive_limit: Option<std::time::Duration>,
}

impl Verifier {
    /// The verifier for a connection to `plan`'s host, leaving its reason to refuse in
    /// `refusal`.
    fn new(
        plan: &HostPlan,
        db: &HostKeyDb,
        refusal: Arc<Mutex<Option<Refusal>>>,
        ended: tokio::sync::watch::Sender<Option<SessionEnd>>,
    ) -> Verifier {
        Verifier {
            ended,
            unresponsive_limit: plan.unresponsive_limit(),
            host: plan.hostname.clone(),
            port: plan.port,
            known_hosts: Arc::clone(&db.known_hosts),
            policy: plan.strict_host_key_checking,
            batch_mode: plan.batch_mode,
            record_to: plan.user_known_hosts.first().cloned(),
            record_form: if plan.hash_known_hosts {
                HostNameForm::Hashed
            } else {
                HostNameForm::Plain
            },
            ca_signature_algorithms: plan.algorithms.ca_signature.clone(),
            required_rsa_size: plan.algorithms.required_rsa_size,
            delivers_forwarded: false,
            learn: db.learn.clone(),
            refusal,
        }
    }

    fn refuse(&self, refusal: Refusal) -> Result<bool, russh::Error> {
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(refusal);
        }
        Ok(false)
    }

    /// The plain host key against known_hosts; `certificate` says why the certificate that
    /// carried the key, if any, did not vouch for it.
    async fn check_plain_key(
        &self,
        algorithm: &str,
        blob: &[u8],
        certificate: Option<String>,
    ) -> Result<bool, russh::Error> {
        match self
            .known_hosts
            .check(&self.host, self.port, algorithm, blob)
        {
            HostKeyStatus::Valid => Ok(true),
            HostKeyStatus::Revoked {
                fingerprint,
                source,
            } => self.refuse(Refusal::Revoked {
                fingerprint,
                source_line: source,
            }),
            HostKeyStatus::Mismatch(mismatch) => self.refuse(Refusal::Changed {
                presented: format!("{algorithm} {}", mismatch.presented_fingerprint),
                known: mismatch
                    .known
                    .iter()
                    .map(|k| format!("{} ({})", k.fingerprint, k.location))
                    .collect::<Vec<_>>()
                    .join(", "),
            }),
            HostKeyStatus::Unknown => self.decide_unknown(algorithm, blob, certificate).await,
        }
    }

    /// A host certificate, by OpenSSH's rules (see [`KnownHosts::check_certificate`]): trusted
    /// when a `@cert-authority` line vouches for it and the CA's signature verifies; refused
    /// when its key or CA is revoked or the signature is false; otherwise its key is checked
    /// as a plain host key, as OpenSSH does.
    async fn check_certificate(&self, cert: &Certificate) -> Result<bool, russh::Error> {
        match judge_certificate(
            &self.known_hosts,
            &self.host,
            self.port,
            cert,
            &self.ca_signature_algorithms,
        ) {
            CertificateJudgement::Trusted { .. } => Ok(true),
            CertificateJudgement::Forged { authority } => {
                self.refuse(Refusal::ForgedCertificate { authority })
            }
            CertificateJudgement::Revoked {
                fingerprint,
                source,
            } => self.refuse(Refusal::Revoked {
                fingerprint,
                source_line: source,
            }),
            CertificateJudgement::Untrusted {
                key_type,
                key_blob,
                problem,
            } => {
                self.check_plain_key(&key_type, &key_blob, Some(problem))
                    .await
            }
            CertificateJudgement::Unencodable(err) => {
                Err(russh::Error::from(russh::keys::Error::from(err)))
            }
        }
    }

    async fn decide_unknown(
        &self,
        algorithm: &str,
        blob: &[u8],
        certificate: Option<String>,
    ) -> Result<bool, russh::Error> {
        let fingerprint = known_hosts::fingerprint_sha256(blob);
        if let Some(learned) = &self.learn {
            // The operator allowed learning on first contact (rotate --learn-host-keys): the
            // key is trusted for this run and recorded by the caller, never a changed key.
            return match known_hosts::entry_line(&self.host, self.port, algorithm, blob) {
                Ok(line) => {
                    if let Ok(mut lines) = learned.lock() {
                        lines.push(line.trim_end().to_owned());
                    }
                    Ok(true)
                }
                Err(err) => self.refuse(Refusal::Record {
                    path: "the secret's KnownHosts".to_owned(),
                    reason: err.to_string(),
                }),
            };
        }
        let unknown = |why| Refusal::Unknown {
            algorithm: algorithm.to_owned(),
            fingerprint: fingerprint.clone(),
            why,
            certificate: certificate.clone(),
        };
        let record = match self.policy {
            StrictHostKeyChecking::AcceptNew | StrictHostKeyChecking::No => true,
            StrictHostKeyChecking::Yes => {
                return self.refuse(unknown(" and StrictHostKeyChecking=yes"))
            }
            StrictHostKeyChecking::Ask => {
                if self.batch_mode || !crate::term::tty::stdin_and_stderr_are_terminals() {
                    return self.refuse(unknown(if self.batch_mode {
                        " and BatchMode is on"
                    } else {
                        " and no terminal to ask on"
                    }));
                }
                let question = format!(
                    "The authenticity of host '{}' can't be established.\n{algorithm} key fingerprint is {fingerprint}.\nAre you sure you want to continue connecting (yes/no)? ",
                    host_pattern(&self.host, self.port)
                );
                let accepted =
                    tokio::task::spawn_blocking(move || crate::term::tty::ask_yes_no(&question))
                        .await
                        .unwrap_or(false);
                if !accepted {
                    return self.refuse(unknown(" and the answer was not yes"));
                }
                true
            }
        };
        if record {
            if let Some(path) = &self.record_to {
                if let Err(err) = known_hosts::append_entry(
                    path,
                    &self.host,
                    self.port,
                    algorithm,
                    blob,
                    self.record_form,
                ) {
                    return self.refuse(Refusal::Record {
                        path: path.display().to_string(),
                        reason: err.to_string(),
                    });
                }
            }
        }
        Ok(true)
    }
}

impl client::Handler for Verifier {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let key: &PublicKey = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => key,
            PublicKeyOrCertificate::Certificate(cert) => return self.check_certificate(cert).await,
        };
        if let Some(rsa) = key.key_data().rsa() {
            if rsa.key_size() < self.required_rsa_size {
                return self.refuse(Refusal::WeakRsaKey {
                    fingerprint: key.fingerprint(Default::default()).to_string(),
                    bits: rsa.key_size(),
                    required: self.required_rsa_size,
                });
            }
        }
        let algorithm = host_key_type_name(&key.algorithm());
        let blob = key
            .to_bytes()
            .map_err(|e| russh::Error::from(russh::keys::Error::from(e)))?;
        self.check_plain_key(&algorithm, &blob, None).await
    }

    /// A connection to a port the server listens on for `-R`: handed to the forwarding
    /// loop, which checks that the port is one smssh asked for.
    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: russh::Channel<client::Msg>,
        _connected_address: &str,
        connected_port: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        // Dropping the channel and its reply refuses the open.
        if self.delivers_forwarded {
            crate::ssh::forward::deliver(channel, reply, connected_port);
        }
        Ok(())
    }

    /// The session's loop has ended: whoever waits on one of its channels is told why, since
    /// a channel whose peer froze may otherwise wait for a window or a reply for ever.
    async fn disconnected(
        &mut self,
        reason: client::DisconnectReason<Self::Error>,
    ) -> Result<(), Self::Error> {
        let (end, result) = match reason {
            client::DisconnectReason::ReceivedDisconnect(_) => (SessionEnd::ClosedByServer, Ok(())),
            client::DisconnectReason::Error(err) => {
                let end = match (&err, self.unresponsive_limit) {
                    (
                        russh::Error::KeepaliveTimeout | russh::Error::InactivityTimeout,
                        Some(limit),
                    ) => SessionEnd::Unresponsive {
                        seconds: limit.as_secs().max(1),
                    },
                    _ => SessionEnd::Failed {
                        reason: err.to_string(),
                    },
                };
                (end, Err(err))
            }
        };
        self.ended.send_replace(Some(end));
        result
    }
}

/// Why an established session ended, as its [`Connection::ended`] reports it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionEnd {
    #[error(
        "the server stopped answering: no progress and no reply to keepalives for {seconds}s \
         (ServerAliveInterval x (ServerAliveCountMax + 1))"
    )]
    Unresponsive { seconds: u64 },
    #[error("the server closed the connection")]
    ClosedByServer,
    #[error("the connection failed: {reason}")]
    Failed { reason: String },
}

/// An open transport: the session's handle and the signal of its end.
pub struct Transport {
    pub handle: Handle<Verifier>,
    ended: tokio::sync::watch::Receiver<Option<SessionEnd>>,
}

/// What known_hosts makes of a host certificate, by OpenSSH's rules (see
/// [`KnownHosts::check_certificate`]). The login's verifier and `smssh check` both decide
/// through here, so they cannot disagree.
#[derive(Debug)]
pub enum CertificateJudgement {
    /// A `@cert-authority` line vouches for it and the CA's signature verifies.
    Trusted { authority: String },
    /// A `@cert-authority` line vouches for the CA, but the signature is false.
    Forged { authority: String },
    /// Its key or its CA is `@revoked`.
    Revoked { fingerprint: String, source: String },
    /// No authority vouches for it: its key is to be checked as a plain host key.
    Untrusted {
        key_type: String,
        key_blob: Vec<u8>,
        problem: String,
    },
    /// A key in it cannot be encoded in SSH wire form.
    Unencodable(russh::keys::ssh_key::Error),
}

pub fn judge_certificate(
    known: &KnownHosts,
    host: &str,
    port: u16,
    cert: &Certificate,
    ca_signature_algorithms: &[String],
) -> CertificateJudgement {
    let wire =
        |data: &russh::keys::ssh_key::public::KeyData| PublicKey::new(data.clone(), "").to_bytes();
    let (key_blob, ca_blob) = match (wire(cert.public_key()), wire(cert.signature_key())) {
        (Ok(key), Ok(ca)) => (key, ca),
        (Err(err), _) | (_, Err(err)) => return CertificateJudgement::Unencodable(err),
    };
    let key_type = host_key_type_name(&cert.public_key().algorithm());
    let ca_key_type = host_key_type_name(&cert.signature_key().algorithm());
    let signature_algorithm = cert.signature().algorithm();
    let claims = CertificateClaims {
        key_type: &key_type,
        key_blob: &key_blob,
        cert_type: cert.cert_type() as u32,
        principals: cert.valid_principals(),
        valid_after: cert.valid_after(),
        valid_before: cert.valid_before(),
        critical_options: cert.critical_options().keys().map(String::as_str).collect(),
        ca_key_type: &ca_key_type,
        ca_blob: &ca_blob,
        signature_algorithm: signature_algorithm.as_str(),
    };
    // A clock before 1970 reads as 1970, where every real certificate is not yet valid.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    match known.check_certificate(host, port, &claims, now, ca_signature_algorithms) {
        CertificateStatus::Trusted { authority } => {
            // The CA is the one known_hosts trusts (compared blob for blob), so its own
            // fingerprint is the only one to accept; validate_at checks the signature.
            let ca = cert.signature_key().fingerprint(HashAlg::Sha256);
            match cert.validate_at(now, [&ca]) {
                Ok(()) => CertificateJudgement::Trusted { authority },
                Err(_) => CertificateJudgement::Forged { authority },
            }
        }
        CertificateStatus::Revoked {
            fingerprint,
            source,
        } => CertificateJudgement::Revoked {
            fingerprint,
            source,
        },
        CertificateStatus::Untrusted(problem) => CertificateJudgement::Untrusted {
            key_type,
            key_blob,
            problem: problem.to_string(),
        },
    }
}

/// Where host keys are checked and recorded, shared by every connection of an invocation.
#[derive(Debug, Clone)]
pub struct HostKeyDb {
    pub known_hosts: Arc<KnownHosts>,
    /// When set, unknown host keys are accepted and their known_hosts lines collected here
    /// instead of following StrictHostKeyChecking (the rotation's first-contact learning).
    pub learn: Option<Arc<Mutex<Vec<String>>>>,
}

impl HostKeyDb {
    /// The one way to build the database: every known_hosts file the plans name (each read
    /// once, in the order first named), then the `KnownHosts` texts the secret's versions
    /// carry.
    pub fn load<'a>(
        plans: impl IntoIterator<Item = &'a HostPlan>,
        secret_known_hosts: impl IntoIterator<Item = &'a str>,
    ) -> Result<HostKeyDb, KnownHostsError> {
        let mut files: Vec<PathBuf> = Vec::new();
        for plan in plans {
            for path in plan.user_known_hosts.iter().chain(&plan.global_known_hosts) {
                if !files.contains(path) {
                    files.push(path.clone());
                }
            }
        }
        let mut known = KnownHosts::load(&files)?;
        for text in secret_known_hosts {
            known.extend_from_text(text, "secret KnownHosts");
        }
        Ok(HostKeyDb {
            known_hosts: Arc::new(known),
            learn: None,
        })
    }

    /// The same database, learning unknown keys into a fresh list.
    pub fn learning(&self) -> HostKeyDb {
        HostKeyDb {
            known_hosts: Arc::clone(&self.known_hosts),
            learn: Some(Arc::new(Mutex::new(Vec::new()))),
        }
    }

    /// The known_hosts lines learned so far.
    pub fn learned(&self) -> Vec<String> {
        self.learn
            .as_ref()
            .and_then(|lines| lines.lock().ok().map(|lines| lines.clone()))
            .unwrap_or_default()
    }
}

/// An authenticated connection.
pub struct Connection {
    pub handle: Handle<Verifier>,
    pub label: String,
    pub key_used: Arc<LoadedKey>,
    /// The plan's `SetEnv`/`SendEnv` variables, asked for on every session channel.
    pub env: Vec<(String, String)>,
    end: tokio::sync::watch::Receiver<Option<SessionEnd>>,
}

impl Connection {
    /// The key this session logged in with, as an audit record names it (version id and
    /// fingerprint, never the key).
    pub fn audited_key(&self) -> crate::audit::KeyUsed {
        crate::audit::KeyUsed {
            version_id: self.key_used.version_id.clone(),
            fingerprint: Some(self.key_used.key.fingerprint().to_owned()),
        }
    }

    /// Resolves when the session has ended, with the reason. A job still running then is
    /// waiting on something that will never come, or finishing with what already arrived.
    pub fn ended(&self) -> impl std::future::Future<Output = SessionEnd> + Send + 'static {
        let mut end = self.end.clone();
        async move {
            loop {
                if let Some(reason) = end.borrow_and_update().clone() {
                    return reason;
                }
                if end.changed().await.is_err() {
                    // The verifier, and with it the sender, is gone only once the session's
                    // loop has stopped; a loop that stops says why first, so this is a loop
                    // that panicked or was dropped.
                    return end.borrow().clone().unwrap_or(SessionEnd::Failed {
                        reason: "the session stopped".to_owned(),
                    });
                }
            }
        }
    }
}

/// Connects and authenticates, within the plan's ConnectTimeout for the whole login.
pub async fn connect(
    plan: &HostPlan,
    keys: &KeySource,
    db: &HostKeyDb,
) -> Result<Connection, ConnectError> {
    within_connect_timeout(plan, connect_inner(plan, keys, db, Role::Destination)).await
}

/// Whose session a connection is. Only the destination's may hand the server's
/// forwarded-tcpip channels (`-R`) to the forwarding loop: a jump host is another server,
/// which must not reach the local targets of forwards the destination was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Destination,
    JumpHost,
}

/// Runs `work` within the plan's ConnectTimeout, which bounds the whole login.
async fn within_connect_timeout<T>(
    plan: &HostPlan,
    work: impl std::future::Future<Output = Result<T, ConnectError>>,
) -> Result<T, ConnectError> {
    match plan.connect_timeout {
        Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
            Err(ConnectError::Timeout {
                host: plan.hostname.clone(),
                port: plan.port,
                seconds: limit.as_secs().max(1),
            })
        }),
        None => work.await,
    }
}

async fn connect_inner(
    plan: &HostPlan,
    keys: &KeySource,
    db: &HostKeyDb,
    role: Role,
) -> Result<Connection, ConnectError> {
    // The key fetch runs concurrently with TCP and the key exchange: both take a few ms and
    // neither needs the other until authentication.
    let key_fetch = keys.initial();
    let login = open_transport(plan, Some(keys), db, role);
    let (key, handle) = tokio::join!(key_fetch, login);
    let key = key?;
    let mut transport = handle?;
    let handle = &mut transport.handle;
    let mut tried = Vec::new();
    if authenticate(handle, plan, &key).await? {
        return Ok(connection(transport, plan, key));
    }
    tried.push(describe_key(&key));
    if let Some(newer) = keys.refetched(&key).await? {
        if authenticate(handle, plan, &newer).await? {
            return Ok(connection(transport, plan, newer));
        }
        tried.push(describe_key(&newer));
    }
    if let Some(fallback) = keys.fallback().await? {
        if authenticate(handle, plan, &fallback).await? {
            return Ok(connection(transport, plan, fallback));
        }
        tried.push(describe_key(&fallback));
    }
    for last_resort in keys.last_resort() {
        if authenticate(handle, plan, last_resort).await? {
            return Ok(connection(transport, plan, Arc::clone(last_resort)));
        }
        tried.push(describe_key(last_resort));
    }
    Err(ConnectError::AuthRefused {
        user: plan.user.clone(),
        host: plan.hostname.clone(),
        tried: tried.join(", then "),
    })
}

fn connection(transport: Transport, plan: &HostPlan, key: Arc<LoadedKey>) -> Connection {
    Connection {
        handle: transport.handle,
        end: transport.ended,
        label: plan.label.clone(),
        key_used: key,
        env: plan.env.clone(),
    }
}

fn describe_key(key: &LoadedKey) -> String {
    match &key.version_id {
        Some(version) => format!("{} (version {version})", key.key),
        None => key.key.to_string(),
    }
}

/// Connects to a jump host as to any destination. Boxed, because a jump host's own route may
/// go through another jump host.
fn connect_boxed<'a>(
    plan: &'a HostPlan,
    keys: &'a KeySource,
    db: &'a HostKeyDb,
) -> std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Connection, ConnectError>> + Send + 'a>,
> {
    Box::pin(within_connect_timeout(
        plan,
        connect_inner(plan, keys, db, Role::JumpHost),
    ))
}

/// Opens the transport the plan's route names and runs the key exchange over it, checking
/// the host key. `keys` is None for a host-key probe, which logs in nowhere, so cannot cross
/// a jump host.
async fn open_transport(
    plan: &HostPlan,
    keys: Option<&KeySource>,
    db: &HostKeyDb,
    role: Role,
) -> Result<Transport, ConnectError> {
    if let Some(setting) = &plan.unimplemented {
        return Err(ConnectError::Unimplemented {
            host: plan.label.clone(),
            keyword: setting.keyword,
            value: setting.value.clone(),
        });
    }
    let proxy_error = |source| ConnectError::Proxy {
        host: plan.label.clone(),
        source,
    };
    match &plan.route {
        Route::Direct => handshake(plan, db, role, tcp(plan).await?).await,
        Route::Command(command) => {
            handshake(
                plan,
                db,
                role,
                proxy::spawn_command(command).map_err(proxy_error)?,
            )
            .await
        }
        Route::Jump(hop) => {
            let Some(keys) = keys else {
                return Err(ConnectError::ProbeThroughJump {
                    host: plan.hostname.clone(),
                    port: plan.port,
                });
            };
            let via = connect_boxed(hop, keys, db).await?;
            let stream = proxy::through_jump(via.handle, &hop.label, &plan.hostname, plan.port)
                .await
                .map_err(proxy_error)?;
            handshake(plan, db, role, stream).await
        }
        Route::Invalid(problem) => Err(ConnectError::Route {
            host: plan.label.clone(),
            problem: problem.clone(),
        }),
    }
}

/// TCP to the plan's host and port, trying each address in turn.
async fn tcp(plan: &HostPlan) -> Result<tokio::net::TcpStream, ConnectError> {
    let host = plan.hostname.clone();
    let port = plan.port;
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|err| ConnectError::Resolve {
            host: host.clone(),
            port,
            reason: err.to_string(),
        })?
        .filter(|addr| plan.address_family.allows(addr))
        .collect();
    if addrs.is_empty() {
        return Err(ConnectError::Resolve {
            host,
            port,
            reason: format!(
                "no address of family {} (AddressFamily, -4, -6)",
                plan.address_family.name()
            ),
        });
    }
    let mut last_error = None;
    let mut socket = None;
    for addr in addrs {
        match tokio::net::TcpStream::connect(addr).await {
            Ok(stream) => {
                socket = Some(stream);
                break;
            }
            Err(err) => last_error = Some(err),
        }
    }
    let socket = match (socket, last_error) {
        (Some(socket), _) => socket,
        (None, Some(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            return Err(ConnectError::Refused { host, port })
        }
        (None, err) => {
            return Err(ConnectError::Unreachable {
                host,
                port,
                reason: err.map_or_else(|| "no address".to_owned(), |e| e.to_string()),
            })
        }
    };
    // Nagle would hold back each small handshake packet for a delayed ACK (~40 ms each).
    let _ = socket.set_nodelay(true);
    Ok(socket)
}

/// The key exchange over `stream`, with the host key checked by a [`Verifier`].
async fn handshake<R>(
    plan: &HostPlan,
    db: &HostKeyDb,
    role: Role,
    stream: R,
) -> Result<Transport, ConnectError>
where
    R: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let host = plan.hostname.clone();
    let port = plan.port;
    let preferred = db.known_hosts.known_algorithms(&host, port);
    let config = Arc::new(client_config(plan, &preferred));
    let refusal = Arc::new(Mutex::new(None));
    let (ended_tx, ended) = tokio::sync::watch::channel(None);
    let mut verifier = Verifier::new(plan, db, Arc::clone(&refusal), ended_tx);
    verifier.delivers_forwarded = role == Role::Destination;
    match client::connect_stream(config, stream, verifier).await {
        Ok(handle) => Ok(Transport { handle, ended }),
        Err(err) => {
            let refusal = refusal.lock().ok().and_then(|mut r| r.take());
            Err(match refusal {
                Some(refusal) => refusal.into_error(host, port),
                None => ConnectError::Handshake {
                    host,
                    port,
                    reason: err.to_string(),
                },
            })
        }
    }
}

/// Opens the transport to the host and checks its host key, without logging in. The rotation
/// uses it to learn host keys before any key is pushed.
pub async fn probe_host_key(plan: &HostPlan, db: &HostKeyDb) -> Result<(), ConnectError> {
    let probe = async {
        let handle = open_transport(plan, None, db, Role::Destination)
            .await?
            .handle;
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
        Ok(())
    };
    within_connect_timeout(plan, probe).await
}

/// One public-key attempt. Ok(false) means the server said no to this key.
async fn authenticate(
    handle: &mut Handle<Verifier>,
    plan: &HostPlan,
    key: &LoadedKey,
) -> Result<bool, ConnectError> {
    let handshake = |err: russh::Error| ConnectError::Handshake {
        host: plan.hostname.clone(),
        port: plan.port,
        reason: err.to_string(),
    };
    let not_allowed = |algorithm: &str, reason: String| ConnectError::KeyNotAllowed {
        user: plan.user.clone(),
        host: plan.label.clone(),
        algorithm: algorithm.to_owned(),
        reason,
    };
    let allowed = &plan.algorithms.pubkey;
    let public = key.key.private().public_key().clone();
    let hash = if let Some(rsa) = public.key_data().rsa() {
        let bits = rsa.key_size();
        let required = plan.algorithms.required_rsa_size;
        if bits < required {
            return Err(not_allowed(
                "ssh-rsa",
                format!("it has {bits} bits and RequiredRSASize is {required}"),
            ));
        }
        // OpenSSH's order: the strongest hash the server and PubkeyAcceptedAlgorithms both
        // allow; a server that sent no server-sig-algs is assumed to take rsa-sha2-256 or
        // better, as every sshd of the last decade does.
        let ranked = [
            ("rsa-sha2-512", Some(HashAlg::Sha512)),
            ("rsa-sha2-256", Some(HashAlg::Sha256)),
            ("ssh-rsa", None),
        ];
        let server_best = handle.best_supported_rsa_hash().await.map_err(handshake)?;
        let from = match server_best {
            Some(best) => ranked.iter().position(|(_, h)| *h == best).unwrap_or(0),
            None => 0,
        };
        match ranked[from..]
            .iter()
            .find(|(name, _)| allowed.iter().any(|a| a == name))
        {
            Some((_, hash)) => *hash,
            None => {
                return Err(not_allowed(
                    "ssh-rsa",
                    format!(
                        "PubkeyAcceptedAlgorithms {} allows none of the RSA signatures the server takes ({})",
                        allowed.join(","),
                        ranked[from..]
                            .iter()
                            .map(|(name, _)| *name)
                            .collect::<Vec<_>>()
                            .join(",")
                    ),
                ))
            }
        }
    } else {
        let name = public.algorithm().as_str().to_owned();
        if !allowed.contains(&name) {
            return Err(not_allowed(
                &name,
                format!(
                    "PubkeyAcceptedAlgorithms {} does not list it",
                    allowed.join(",")
                ),
            ));
        }
        None
    };
    let result = handle
        .authenticate_publickey(
            plan.user.clone(),
            PrivateKeyWithHashAlg::new(key.key.private(), hash),
        )
        .await
        .map_err(handshake)?;
    Ok(result.success())
}

/// The host as known_hosts and ssh-keygen -R name it: `host` on port 22, `[host]:port` else.
pub fn host_pattern(host: &str, port: u16) -> String {
    if port == 22 {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use base64::Engine as _;

    use super::*;
    use crate::plan::{test_key, test_keys, test_plan};

    #[test]
    fn supported_names_map_onto_russh() {
        use crate::config::ssh_config::AlgorithmKind;
        let maps = |kind: AlgorithmKind, name: &str| match kind {
            AlgorithmKind::Ciphers => cipher::Name::try_from(name).is_ok(),
            AlgorithmKind::KexAlgorithms => kex::Name::try_from(name).is_ok(),
            AlgorithmKind::Macs => mac::Name::try_from(name).is_ok(),
            _ => {
                let (certificates, keys) = host_key_algorithms(&[name.to_owned()]);
                certificates.len() + keys.len() == 1
            }
        };
        for kind in [
            AlgorithmKind::Ciphers,
            AlgorithmKind::KexAlgorithms,
            AlgorithmKind::Macs,
            AlgorithmKind::HostKeyAlgorithms,
            AlgorithmKind::PubkeyAcceptedAlgorithms,
        ] {
            for name in kind.supported() {
                assert!(
                    maps(kind, name),
                    "{kind:?}: {name} has no russh counterpart"
                );
            }
        }
    }

    #[test]
    fn client_config_offers_the_plans_lists_and_never_sha1_rsa_by_default() {
        let plan = test_plan("h", 22);
        let config = client_config(&plan, &[]);
        let names = |list: Vec<&str>| list.join(",");
        assert_eq!(
            names(config.preferred.cipher.iter().map(|c| c.as_ref()).collect()),
            plan.algorithms.ciphers.join(",")
        );
        let kex: Vec<&str> = config.preferred.kex.iter().map(|k| k.as_ref()).collect();
        assert_eq!(
            names(kex[..kex.len() - 2].to_vec()),
            plan.algorithms.kex.join(",")
        );
        assert_eq!(
            kex[kex.len() - 2..],
            ["ext-info-c", "kex-strict-c-v00@openssh.com"]
        );
        assert!(!config
            .preferred
            .key
            .contains(&russh::keys::Algorithm::Rsa { hash: None }));
        assert!(config.preferred.host_key_certificates.is_empty());
        let mut plan = test_plan("h", 22);
        plan.algorithms.ciphers = vec!["aes256-ctr".to_owned()];
        plan.algorithms.host_keys = vec!["ssh-rsa".to_owned(), "ssh-ed25519".to_owned()];
        let config = client_config(&plan, &[]);
        assert_eq!(config.preferred.cipher.as_ref(), [cipher::AES_256_CTR]);
        assert_eq!(
            config.preferred.key.as_ref(),
            [
                russh::keys::Algorithm::Rsa { hash: None },
                russh::keys::Algorithm::Ed25519
            ]
        );
    }

    #[test]
    fn only_network_failures_are_retried_and_only_key_failures_omit_the_host() {
        let host = || "h".to_owned();
        let cases: Vec<(ConnectError, bool, bool)> = vec![
            (
                ConnectError::Refused {
                    host: host(),
                    port: 22,
                },
                true,
                true,
            ),
            (
                ConnectError::Timeout {
                    host: host(),
                    port: 22,
                    seconds: 1,
                },
                true,
                true,
            ),
            (
                ConnectError::Handshake {
                    host: host(),
                    port: 22,
                    reason: "reset".to_owned(),
                },
                true,
                true,
            ),
            (
                ConnectError::HostKeyChanged {
                    host: host(),
                    port: 22,
                    host_pattern: host(),
                    presented: "SHA256:a".to_owned(),
                    known: "SHA256:b".to_owned(),
                },
                false,
                true,
            ),
            (
                ConnectError::AuthRefused {
                    user: "u".to_owned(),
                    host: host(),
                    tried: "k".to_owned(),
                },
                false,
                true,
            ),
        ];
        for (err, retryable, names_host) in cases {
            assert_eq!(err.is_retryable(), retryable, "{err}");
            assert_eq!(err.names_host(), names_host, "{err}");
        }
    }

    #[test]
    fn host_patterns_follow_known_hosts_spelling() {
        assert_eq!(host_pattern("10.0.1.5", 22), "10.0.1.5");
        assert_eq!(host_pattern("10.0.1.5", 2222), "[10.0.1.5]:2222");
    }

    #[test]
    fn the_database_reads_each_file_once_and_adds_the_secrets_lines() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("known_hosts");
        let key_in_file = test_key("file")
            .key
            .private()
            .public_key()
            .to_openssh()
            .unwrap();
        let key_in_secret = test_key("secret")
            .key
            .private()
            .public_key()
            .to_openssh()
            .unwrap();
        std::fs::File::create(&file)
            .and_then(|mut f| writeln!(f, "[127.0.0.9]:2222 {key_in_file}"))
            .expect("write known_hosts");
        let mut a = test_plan("127.0.0.9", 2222);
        a.user_known_hosts = vec![file.clone()];
        let mut b = test_plan("127.0.0.10", 22);
        b.user_known_hosts = vec![file.clone(), file.clone()];
        let secret_text = format!("127.0.0.10 {key_in_secret}\n");
        let db = HostKeyDb::load([&a, &b], [secret_text.as_str()]).expect("load");
        let blob = |line: &str| {
            let field = line.split(' ').nth(1).expect("base64 field");
            base64::engine::general_purpose::STANDARD
                .decode(field)
                .expect("base64")
        };
        let status = |host: &str, port: u16, line: &str| {
            db.known_hosts.check(host, port, "ssh-ed25519", &blob(line))
        };
        assert_eq!(
            status("127.0.0.9", 2222, &key_in_file),
            HostKeyStatus::Valid
        );
        assert_eq!(
            status("127.0.0.10", 22, &key_in_secret),
            HostKeyStatus::Valid
        );
        assert!(matches!(
            status("127.0.0.10", 22, &key_in_file),
            HostKeyStatus::Mismatch(_)
        ));
        assert!(db.learned().is_empty());
    }

    /// A host certificate for `host_key`, signed by `ca`, valid for the host `h` for ever.
    fn host_certificate(host_key: &PublicKey, ca: &russh::keys::PrivateKey) -> Certificate {
        use russh::keys::ssh_key::certificate::{Builder, CertType};
        let mut builder =
            Builder::new([7u8; 32].to_vec(), host_key.key_data().clone(), 0, u64::MAX)
                .expect("certificate builder");
        builder.cert_type(CertType::Host).expect("type");
        builder.key_id("smssh-test").expect("key id");
        builder.valid_principal("h").expect("principal");
        builder.sign(ca).expect("signed")
    }

    #[tokio::test]
    async fn a_certificate_is_trusted_only_when_the_cas_signature_verifies() {
        let ca = test_key("ca");
        let host = test_key("host");
        let certificate = host_certificate(host.key.private().public_key(), &ca.key.private());
        let ca_line = format!(
            "@cert-authority h {}\n",
            ca.key.private().public_key().to_openssh().expect("CA line")
        );
        let mut known = KnownHosts::default();
        known.extend_from_text(&ca_line, "kh");
        let db = HostKeyDb {
            known_hosts: Arc::new(known),
            learn: None,
        };
        let mut plan = test_plan("h", 22);
        plan.strict_host_key_checking = StrictHostKeyChecking::Yes;
        let refusal = Arc::new(Mutex::new(None));
        let verifier = Verifier::new(
            &plan,
            &db,
            Arc::clone(&refusal),
            tokio::sync::watch::channel(None).0,
        );
        assert!(verifier
            .check_certificate(&certificate)
            .await
            .expect("checked"));
        // The signature is the certificate's last field: one bit changed there leaves a
        // certificate that decodes, names the trusted CA, and was never signed by it.
        let mut bytes = certificate.to_bytes().expect("encoded");
        if let Some(last) = bytes.last_mut() {
            *last ^= 1;
        }
        let forged = Certificate::from_bytes(&bytes).expect("decodes");
        assert!(!verifier.check_certificate(&forged).await.expect("checked"));
        let refused = refusal.lock().expect("lock").take();
        assert!(
            matches!(&refused, Some(Refusal::ForgedCertificate { authority }) if authority == "kh:1"),
            "{refused:?}"
        );
        // The same certificate for another host name falls back to its plain key, unknown.
        let mut other = test_plan("other", 22);
        other.strict_host_key_checking = StrictHostKeyChecking::Yes;
        let verifier = Verifier::new(
            &other,
            &db,
            Arc::clone(&refusal),
            tokio::sync::watch::channel(None).0,
        );
        assert!(!verifier
            .check_certificate(&certificate)
            .await
            .expect("checked"));
        let refused = refusal.lock().expect("lock").take();
        assert!(
            matches!(&refused, Some(Refusal::Unknown { certificate: Some(reason), .. }) if reason.contains("no @cert-authority line")),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_server_that_accepts_but_never_speaks_times_out_within_connect_timeout() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        // Accept and hold the connection without a word, as a paused sshd does.
        let holder = tokio::spawn(async move {
            let held = listener.accept().await;
            tokio::time::sleep(std::time::Duration::from_secs(600)).await;
            drop(held);
        });
        let plan = test_plan("127.0.0.1", port);
        let db = HostKeyDb::load([&plan], []).expect("no file");
        let err = connect(&plan, &test_keys(), &db)
            .await
            .err()
            .expect("no SSH banner ever comes");
        holder.abort();
        assert!(
            matches!(err, ConnectError::Timeout { seconds: 1, port: p, .. } if p == port),
            "{err}"
        );
    }
}
