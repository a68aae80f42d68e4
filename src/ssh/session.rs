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
use russh::keys::{HashAlg, PrivateKeyWithHashAlg, PublicKey};
use russh::{cipher, compression, kex};

use crate::config::known_hosts::{self, HostKeyStatus, KnownHosts, KnownHostsError};
use crate::config::ssh_config::StrictHostKeyChecking;
use crate::key::source::{KeyLoadError, KeySource, LoadedKey};
use crate::plan::HostPlan;

/// The fixed part of the client configuration, chosen for throughput and short logins.
/// Measured choices (see README "Performance"): TCP_NODELAY saves two delayed-ACK waits per
/// login; AES-GCM runs on AES-NI and beats chacha20-poly1305 on bulk copies; a 16 MiB window
/// keeps a loopback or LAN link full; ML-KEM hybrid stays first so that a server that offers
/// it gets a post-quantum exchange, and curve25519 is the cheap choice for older sshd.
pub fn client_config(plan: &HostPlan, preferred_host_keys: &[String]) -> client::Config {
    let mut preferred = russh::Preferred::DEFAULT.clone();
    preferred.kex = std::borrow::Cow::Owned(vec![
        kex::MLKEM768X25519_SHA256,
        kex::CURVE25519,
        kex::CURVE25519_PRE_RFC_8731,
        kex::DH_GEX_SHA256,
        kex::DH_G16_SHA512,
        kex::DH_G14_SHA256,
        kex::EXTENSION_SUPPORT_AS_CLIENT,
        kex::EXTENSION_OPENSSH_STRICT_KEX_AS_CLIENT,
    ]);
    preferred.cipher = std::borrow::Cow::Owned(vec![
        cipher::AES_128_GCM,
        cipher::AES_256_GCM,
        cipher::CHACHA20_POLY1305,
        cipher::AES_256_CTR,
        cipher::AES_128_CTR,
    ]);
    if plan.compression {
        preferred.compression = std::borrow::Cow::Owned(vec![
            compression::ZLIB_LEGACY,
            compression::ZLIB,
            compression::NONE,
        ]);
    } else {
        preferred.compression = std::borrow::Cow::Owned(vec![compression::NONE]);
    }
    // Like OpenSSH, ask first for the host key types known_hosts already has for this host,
    // so that a server with several keys presents the one we can verify.
    if !preferred_host_keys.is_empty() {
        let mut keys: Vec<russh::keys::Algorithm> = preferred.key.to_vec();
        keys.sort_by_key(|alg| {
            let name = host_key_type_name(alg);
            !preferred_host_keys.contains(&name)
        });
        preferred.key = std::borrow::Cow::Owned(keys);
    }
    client::Config {
        nodelay: true,
        window_size: 16 * 1024 * 1024,
        maximum_packet_size: 65535,
        preferred,
        keepalive_interval: plan.server_alive_interval,
        keepalive_max: plan.server_alive_count_max as usize,
        inactivity_timeout: None,
        ..Default::default()
    }
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
    #[error("{host} port {port}: the server presents a host certificate: smssh verifies plain host keys only; add the host's key to known_hosts")]
    HostCertificate { host: String, port: u16 },
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
    },
    Certificate,
    Record {
        path: String,
        reason: String,
    },
}

/// Host-key verification for one connection.
pub struct Verifier {
    host: String,
    port: u16,
    known_hosts: Arc<KnownHosts>,
    policy: StrictHostKeyChecking,
    batch_mode: bool,
    record_to: Option<PathBuf>,
    learn: Option<Arc<Mutex<Vec<String>>>>,
    refusal: Arc<Mutex<Option<Refusal>>>,
}

impl Verifier {
    fn refuse(&self, refusal: Refusal) -> Result<bool, russh::Error> {
        if let Ok(mut slot) = self.refusal.lock() {
            *slot = Some(refusal);
        }
        Ok(false)
    }

    async fn decide_unknown(&self, algorithm: &str, blob: &[u8]) -> Result<bool, russh::Error> {
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
        let record = match self.policy {
            StrictHostKeyChecking::AcceptNew | StrictHostKeyChecking::No => true,
            StrictHostKeyChecking::Yes => {
                return self.refuse(Refusal::Unknown {
                    algorithm: algorithm.to_owned(),
                    fingerprint,
                    why: " and StrictHostKeyChecking=yes",
                })
            }
            StrictHostKeyChecking::Ask => {
                if self.batch_mode || !crate::term::tty::stdin_and_stderr_are_terminals() {
                    return self.refuse(Refusal::Unknown {
                        algorithm: algorithm.to_owned(),
                        fingerprint,
                        why: if self.batch_mode {
                            " and BatchMode is on"
                        } else {
                            " and no terminal to ask on"
                        },
                    });
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
                    return self.refuse(Refusal::Unknown {
                        algorithm: algorithm.to_owned(),
                        fingerprint,
                        why: " and the answer was not yes",
                    });
                }
                true
            }
        };
        if record {
            if let Some(path) = &self.record_to {
                if let Err(err) =
                    known_hosts::append_entry(path, &self.host, self.port, algorithm, blob)
                {
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
            PublicKeyOrCertificate::Certificate(_) => return self.refuse(Refusal::Certificate),
        };
        let algorithm = host_key_type_name(&key.algorithm());
        let blob = key
            .to_bytes()
            .map_err(|e| russh::Error::from(russh::keys::Error::from(e)))?;
        match self
            .known_hosts
            .check(&self.host, self.port, &algorithm, &blob)
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
            HostKeyStatus::Unknown => self.decide_unknown(&algorithm, &blob).await,
        }
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
}

/// Connects and authenticates, within the plan's ConnectTimeout for the whole login.
pub async fn connect(
    plan: &HostPlan,
    keys: &KeySource,
    db: &HostKeyDb,
) -> Result<Connection, ConnectError> {
    within_connect_timeout(plan, connect_inner(plan, keys, db)).await
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
) -> Result<Connection, ConnectError> {
    // The key fetch runs concurrently with TCP and the key exchange: both take a few ms and
    // neither needs the other until authentication.
    let key_fetch = keys.initial();
    let login = open_transport(plan, db);
    let (key, handle) = tokio::join!(key_fetch, login);
    let key = key?;
    let mut handle = handle?;
    let mut tried = Vec::new();
    if authenticate(&mut handle, plan, &key).await? {
        return Ok(connection(handle, plan, key));
    }
    tried.push(describe_key(&key));
    if let Some(newer) = keys.refetched(&key).await? {
        if authenticate(&mut handle, plan, &newer).await? {
            return Ok(connection(handle, plan, newer));
        }
        tried.push(describe_key(&newer));
    }
    if let Some(fallback) = keys.fallback().await? {
        if authenticate(&mut handle, plan, &fallback).await? {
            return Ok(connection(handle, plan, fallback));
        }
        tried.push(describe_key(&fallback));
    }
    for last_resort in keys.last_resort() {
        if authenticate(&mut handle, plan, last_resort).await? {
            return Ok(connection(handle, plan, Arc::clone(last_resort)));
        }
        tried.push(describe_key(last_resort));
    }
    Err(ConnectError::AuthRefused {
        user: plan.user.clone(),
        host: plan.hostname.clone(),
        tried: tried.join(", then "),
    })
}

fn connection(handle: Handle<Verifier>, plan: &HostPlan, key: Arc<LoadedKey>) -> Connection {
    Connection {
        handle,
        label: plan.label.clone(),
        key_used: key,
    }
}

fn describe_key(key: &LoadedKey) -> String {
    match &key.version_id {
        Some(version) => format!("{} (version {version})", key.key),
        None => key.key.to_string(),
    }
}

async fn open_transport(plan: &HostPlan, db: &HostKeyDb) -> Result<Handle<Verifier>, ConnectError> {
    if let Some(setting) = &plan.unimplemented {
        return Err(ConnectError::Unimplemented {
            host: plan.label.clone(),
            keyword: setting.keyword,
            value: setting.value.clone(),
        });
    }
    let host = plan.hostname.clone();
    let port = plan.port;
    let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|err| ConnectError::Resolve {
            host: host.clone(),
            port,
            reason: err.to_string(),
        })?
        .collect();
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
    let preferred = db.known_hosts.known_algorithms(&host, port);
    let config = Arc::new(client_config(plan, &preferred));
    let refusal = Arc::new(Mutex::new(None));
    let verifier = Verifier {
        host: host.clone(),
        port,
        known_hosts: Arc::clone(&db.known_hosts),
        policy: plan.strict_host_key_checking,
        batch_mode: plan.batch_mode,
        record_to: plan.user_known_hosts.first().cloned(),
        learn: db.learn.clone(),
        refusal: Arc::clone(&refusal),
    };
    match client::connect_stream(config, socket, verifier).await {
        Ok(handle) => Ok(handle),
        Err(err) => {
            let refusal = refusal.lock().ok().and_then(|mut r| r.take());
            Err(match refusal {
                Some(Refusal::Changed { presented, known }) => ConnectError::HostKeyChanged {
                    host_pattern: host_pattern(&host, port),
                    host,
                    port,
                    presented,
                    known,
                },
                Some(Refusal::Revoked {
                    fingerprint,
                    source_line,
                }) => ConnectError::HostKeyRevoked {
                    host,
                    port,
                    fingerprint,
                    source_line,
                },
                Some(Refusal::Unknown {
                    algorithm,
                    fingerprint,
                    why,
                }) => ConnectError::HostKeyUnknown {
                    host,
                    port,
                    algorithm,
                    fingerprint,
                    why,
                },
                Some(Refusal::Certificate) => ConnectError::HostCertificate { host, port },
                Some(Refusal::Record { path, reason }) => ConnectError::RecordHostKey {
                    host,
                    port,
                    path,
                    reason,
                },
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
        let handle = open_transport(plan, db).await?;
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
    let hash = if key.key.is_rsa() {
        // Outer None: the server sent no server-sig-algs; every sshd of the last decade
        // accepts rsa-sha2-256, and SHA-1 (None) is refused by modern ones.
        match handle.best_supported_rsa_hash().await.map_err(handshake)? {
            Some(hash) => hash,
            None => Some(HashAlg::Sha256),
        }
    } else {
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
