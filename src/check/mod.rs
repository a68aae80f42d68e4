//! `smssh check`: what works on this master and what to do about what does not, one finding
//! at a time, in the order a login needs them: the AWS identity and region, the secret (its
//! version, stages and key), memory locking, then for each host its reachability (TCP and the
//! SSH banner), its host key (known from which known_hosts line or certificate authority,
//! unknown, or changed) and a real public-key login.
//!
//! Owns: the findings and their order, the verdict (every required finding passed), and their
//! rendering as text lines or one JSON document, every string escaped where it is written.
//! Invariants: a check asks nothing, writes no known_hosts line and never shows key text (a
//! key is named by type, size and fingerprint); host work goes through `fanout` (bounded
//! concurrency, a deadline per host, Ctrl-C). Must not know: how the findings are turned into
//! an exit status beyond [`Report::passed`].

pub mod plan;

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use russh::keys::{Certificate, HashAlg, PublicKey, PublicKeyOrCertificate};
use tokio::io::AsyncReadExt;

use crate::config::known_hosts::{fingerprint_sha256, HostKeyStatus};
use crate::fanout::{self, HostError};
use crate::key::hardening::Posture;
use crate::key::source::{KeySource, LoadedKey};
use crate::plan::targets;
use crate::plan::{FanoutOptions, HostPlan, Route, DEFAULT_CONNECT_TIMEOUT};
use crate::ssh::session::{self, CertificateJudgement, ConnectError, HostKeyDb};
use crate::term::escape::visible;

use self::plan::CheckPlan;

/// The longest first line an SSH server may send (RFC 4253 4.2: 255 characters), and the most
/// bytes read while looking for it (servers may send other lines first).
const BANNER_MAX: usize = 255;
const BANNER_SEARCH_MAX: usize = 8192;

/// One thing the check found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// What was checked: `aws-identity`, `aws-region`, `secret`, `memory-lock`, `hosts`,
    /// `known-hosts`, `reachable`, `host-key`, `login`.
    pub check: &'static str,
    pub ok: bool,
    /// Whether smssh needs this to work; a finding that is not required (memory locking) only
    /// warns.
    pub required: bool,
    pub detail: String,
    /// What to do; empty when there is nothing to do.
    pub hint: String,
    pub host: Option<String>,
}

impl Finding {
    fn pass(check: &'static str, detail: impl Into<String>) -> Finding {
        Finding {
            check,
            ok: true,
            required: true,
            detail: detail.into(),
            hint: String::new(),
            host: None,
        }
    }

    fn fail(check: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Finding {
        Finding {
            ok: false,
            hint: hint.into(),
            ..Finding::pass(check, detail)
        }
    }

    /// A failure whose message is one of smssh's own error lines, which end with what to do:
    /// that part becomes the hint.
    fn failed_with(check: &'static str, message: &str, default_hint: &str) -> Finding {
        let (detail, hint) = split_hint(message);
        Finding::fail(check, detail, hint.unwrap_or(default_hint))
    }

    fn on(mut self, host: &str) -> Finding {
        self.host = Some(host.to_owned());
        self
    }
}

/// The imperative words smssh's error lines start their last part ("what to do") with.
const HINT_VERBS: [&str; 14] = [
    "check ",
    "add ",
    "pass ",
    "set ",
    "run ",
    "use ",
    "raise ",
    "remove ",
    "allow ",
    "store ",
    "give ",
    "after checking",
    "retry ",
    "record ",
];

/// Splits `message` before its last `: what to do` part, if it has one.
fn split_hint(message: &str) -> (&str, Option<&str>) {
    let mut at = message.len();
    while let Some(found) = message[..at].rfind(": ") {
        let rest = &message[found + 2..];
        if HINT_VERBS.iter().any(|verb| rest.starts_with(verb)) {
            return (&message[..found], Some(rest));
        }
        at = found;
    }
    (message, None)
}

/// Every finding of one run, in order.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
}

impl Report {
    /// True when every required finding passed: the exit status is 0 exactly then.
    pub fn passed(&self) -> bool {
        self.findings.iter().all(|f| f.ok || !f.required)
    }

    /// One line per finding (`ok`, `WARN` or `FAIL`, the check, the host, what was found and
    /// what to do), then a summary line; every string escaped.
    pub fn text_lines(&self) -> Vec<String> {
        let mut lines = Vec::with_capacity(self.findings.len() + 1);
        for finding in &self.findings {
            let status = match (finding.ok, finding.required) {
                (true, _) => "ok  ",
                (false, false) => "WARN",
                (false, true) => "FAIL",
            };
            let mut line = format!("{status} {:<12} ", finding.check);
            if let Some(host) = &finding.host {
                line.push_str(&visible(host));
                line.push_str(": ");
            }
            line.push_str(&visible(&finding.detail));
            if !finding.hint.is_empty() {
                line.push_str(": ");
                line.push_str(&visible(&finding.hint));
            }
            lines.push(line);
        }
        let failed = self.findings.iter().filter(|f| !f.ok && f.required).count();
        let warned = self
            .findings
            .iter()
            .filter(|f| !f.ok && !f.required)
            .count();
        lines.push(if failed == 0 {
            format!(
                "all {} checks passed{}",
                self.findings.len(),
                if warned > 0 {
                    format!(" ({warned} warning(s))")
                } else {
                    String::new()
                }
            )
        } else {
            format!("{failed} of {} checks failed", self.findings.len())
        });
        lines
    }

    /// The one JSON document of `--json`; strings escaped as on a terminal, since a script's
    /// output often ends up on one.
    pub fn to_json(&self) -> serde_json::Value {
        let findings: Vec<serde_json::Value> = self
            .findings
            .iter()
            .map(|f| {
                serde_json::json!({
                    "check": f.check,
                    "ok": f.ok,
                    "required": f.required,
                    "detail": visible(&f.detail),
                    "hint": visible(&f.hint),
                    "host": f.host.as_deref().map(visible),
                })
            })
            .collect();
        serde_json::json!({ "ok": self.passed(), "findings": findings })
    }
}

/// Runs every check of `plan`. `posture` is what the process's hardening achieved.
pub async fn run(plan: CheckPlan, posture: &Posture) -> Report {
    let mut report = Report::default();
    let aws = crate::aws::sdk_config(&plan.aws).await;
    report.findings.push(identity(&aws).await);
    report.findings.push(match aws.region() {
        Some(region) => Finding::pass(
            "aws-region",
            format!("{region} (from {})", plan.region_source),
        ),
        None => Finding::fail(
            "aws-region",
            "no region is set",
            "pass --region, set AWS_REGION, or put region in ~/.config/smssh/config.toml",
        ),
    });
    let (keys, key) = match &plan.secret {
        Ok(spec) => {
            let keys =
                Arc::new(KeySource::new(spec.clone()).with_last_resort(plan.identities.clone()));
            match keys.initial().await {
                Ok(key) => {
                    report
                        .findings
                        .push(secret_found(&aws, &spec.id, &key).await);
                    (Some(keys), Some(key))
                }
                Err(err) => {
                    report.findings.push(Finding::failed_with(
                        "secret",
                        &err.to_string(),
                        "check the secret id, the region and the role's policy",
                    ));
                    (None, None)
                }
            }
        }
        Err(err) => {
            report.findings.push(Finding::failed_with(
                "secret",
                &err.to_string(),
                "pass --secret-id",
            ));
            (None, None)
        }
    };
    report.findings.push(memory(posture, key.as_deref()));
    if plan.sources.names_hosts() {
        report
            .findings
            .extend(hosts(&plan, &aws, keys, key.as_deref()).await);
    }
    report
}

/// STS GetCallerIdentity: who AWS thinks we are.
async fn identity(aws: &aws_config::SdkConfig) -> Finding {
    use aws_sdk_sts::error::{ProvideErrorMetadata, SdkError};
    let client = aws_sdk_sts::Client::new(aws);
    match client.get_caller_identity().send().await {
        Ok(out) => Finding::pass(
            "aws-identity",
            format!(
                "{} (account {})",
                out.arn().unwrap_or("unknown ARN"),
                out.account().unwrap_or("unknown")
            ),
        ),
        Err(err) => {
            let reason = crate::aws::describe_chain(&err);
            let (detail, hint) = match &err {
                SdkError::ServiceError(service) => (
                    format!(
                        "GetCallerIdentity: {}: {}",
                        service.err().code().unwrap_or("error"),
                        service.err().message().unwrap_or("no message")
                    ),
                    "check that the AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, the instance role) are valid and current",
                ),
                _ => match crate::aws::missing_credentials(aws, &reason).await {
                    Some(reason) => (
                        format!("no AWS credentials: {reason}"),
                        "set AWS_PROFILE or AWS_ACCESS_KEY_ID, or run on an instance with a role",
                    ),
                    None => (
                        format!("cannot reach STS: {reason}"),
                        "check the network, the region and AWS_ENDPOINT_URL",
                    ),
                },
            };
            Finding::fail("aws-identity", detail, hint)
        }
    }
}

/// The secret could be read: which version, its stages (when DescribeSecret is allowed) and
/// the key it holds, by type, size and fingerprint only.
async fn secret_found(aws: &aws_config::SdkConfig, id: &str, key: &LoadedKey) -> Finding {
    let version = key.version_id.as_deref().unwrap_or("unknown");
    let store = crate::rotation::store::Store::new(aws, id);
    let stages = match (store.describe().await, &key.version_id) {
        (Ok(description), Some(version)) => match description.stages.get(version) {
            Some(labels) if !labels.is_empty() => labels.join(","),
            _ => "no stage".to_owned(),
        },
        (Ok(_), None) => "stages unknown".to_owned(),
        (Err(_), _) => "stages not shown: DescribeSecret is not allowed".to_owned(),
    };
    Finding::pass(
        "secret",
        format!(
            "{id}: version {version} ({stages}): {}",
            describe_key(&key.key)
        ),
    )
}

/// `ssh-ed25519 256-bit SHA256:...`: the type, size and fingerprint of a client key.
fn describe_key(key: &crate::key::ClientKey) -> String {
    let private = key.private();
    let bits = match private.public_key().key_data() {
        data if data.rsa().is_some() => data.rsa().map_or(0, |rsa| rsa.key_size()),
        data if data.ecdsa().is_some() => match data.ecdsa().map(|e| e.curve()) {
            Some(russh::keys::EcdsaCurve::NistP256) => 256,
            Some(russh::keys::EcdsaCurve::NistP384) => 384,
            Some(russh::keys::EcdsaCurve::NistP521) => 521,
            None => 0,
        },
        _ => 256,
    };
    format!("{} {bits}-bit {}", key.algorithm(), key.fingerprint())
}

/// Whether memory holding the key is locked. Not required: smssh runs without it, but the
/// key's pages could then reach swap.
fn memory(posture: &Posture, key: Option<&LoadedKey>) -> Finding {
    let dumps = if posture.core_dumps_disabled {
        "core dumps disabled"
    } else {
        "core dumps NOT disabled"
    };
    let mut finding = match &posture.memory_locked {
        Ok(()) => Finding::pass(
            "memory-lock",
            format!("all memory locked (mlockall); {dumps}"),
        ),
        Err(why) => match key.map(|k| crate::key::lock::lock_key(&k.key.private())) {
            Some(Ok(bytes)) => Finding::fail(
                "memory-lock",
                format!("only the key's own pages are locked ({bytes} bytes): {why}; {dumps}"),
                "allow unlimited memlock for this user (limits.conf, or LimitMEMLOCK=infinity) to lock all memory",
            ),
            Some(Err(errno)) => Finding::fail(
                "memory-lock",
                format!("memory not locked ({why}), not even the key's pages ({errno}); {dumps}"),
                "allow memlock for this user (limits.conf memlock, or LimitMEMLOCK=infinity)",
            ),
            None => Finding::fail(
                "memory-lock",
                format!("memory not locked: {why}; {dumps}"),
                "allow unlimited memlock for this user (limits.conf, or LimitMEMLOCK=infinity)",
            ),
        },
    };
    finding.ok = finding.ok && posture.core_dumps_disabled;
    finding.required = false;
    finding
}

/// Every host's findings, through the fan-out executor, in the order the hosts were named.
async fn hosts(
    plan: &CheckPlan,
    aws: &aws_config::SdkConfig,
    keys: Option<Arc<KeySource>>,
    key: Option<&LoadedKey>,
) -> Vec<Finding> {
    let hosts = match targets::resolve(&plan.sources, aws).await {
        Ok(hosts) => hosts,
        Err(err) => {
            return vec![Finding::failed_with(
                "hosts",
                &err.to_string(),
                "check the hostlist, the hosts file or the EC2 filter",
            )]
        }
    };
    let plans = targets::plans(&hosts, &plan.ssh, plan.login.as_deref(), plan.port);
    let secret_known_hosts = key.and_then(|k| k.known_hosts.as_deref());
    let db = match HostKeyDb::load(&plans, secret_known_hosts) {
        Ok(db) => db,
        Err(err) => {
            return vec![Finding::fail(
                "known-hosts",
                err.to_string(),
                "make the known_hosts files readable, or point UserKnownHostsFile elsewhere",
            )]
        }
    };
    let items = plans.into_iter().map(|plan| (plan, ())).collect();
    let options = plan.options.clone();
    let outcomes = fanout::for_each(items, &plan.options, move |plan, ()| {
        let keys = keys.clone();
        let db = db.clone();
        let options = options.clone();
        async move { Ok::<_, HostError<Infallible>>(check_host(&plan, keys, &db, &options).await) }
    })
    .await;
    let mut findings = Vec::new();
    for outcome in outcomes {
        match outcome.result {
            Ok(found) => findings.extend(found),
            Err(err) => findings.push(
                Finding::fail(
                    "reachable",
                    err.to_string(),
                    "check that the host is up, or raise --timeout",
                )
                .on(&outcome.plan.label),
            ),
        }
    }
    findings
}

/// One host: reachable, host key, login. A step that fails ends the host's findings, since
/// the next one could not be judged.
async fn check_host(
    plan: &HostPlan,
    keys: Option<Arc<KeySource>>,
    db: &HostKeyDb,
    options: &FanoutOptions,
) -> Vec<Finding> {
    let host = plan.label.as_str();
    let mut findings = Vec::new();
    if plan.route == Route::Direct {
        let (banner, stream, prefix) = match reach(plan).await {
            Ok(reached) => reached,
            Err(finding) => return vec![finding.on(host)],
        };
        findings.push(
            Finding::pass(
                "reachable",
                format!("{} port {}: {banner}", plan.hostname, plan.port),
            )
            .on(host),
        );
        let key_finding = match presented_key(plan, db, stream, prefix).await {
            Ok(presented) => judge_host_key(plan, db, &presented),
            Err(reason) => Finding::fail(
                "host-key",
                format!("no host key received: {reason}"),
                "check the host's sshd and its HostKeyAlgorithms against ours (smssh -G)",
            ),
        };
        let trusted = key_finding.ok;
        findings.push(key_finding.on(host));
        if !trusted {
            return findings;
        }
    } else {
        findings.push(
            Finding::pass(
                "reachable",
                "through a jump host or proxy command: judged by the login",
            )
            .on(host),
        );
    }
    let Some(keys) = keys else {
        findings.push(
            Finding::fail(
                "login",
                "not tried: the secret's key could not be read",
                "fix the secret finding above first",
            )
            .on(host),
        );
        return findings;
    };
    findings.push(login(plan, &keys, db, options).await.on(host));
    findings
}

/// TCP to the host and its SSH banner. Returns the banner, the stream and every byte read so
/// far (the key exchange continues on the same connection).
async fn reach(plan: &HostPlan) -> Result<(String, tokio::net::TcpStream, Vec<u8>), Finding> {
    let limit = plan.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let (host, port) = (plan.hostname.clone(), plan.port);
    let failed = |err: ConnectError| {
        Finding::failed_with(
            "reachable",
            &err.to_string(),
            "check the address and the network",
        )
    };
    let work = async {
        let addrs: Vec<std::net::SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|err| {
                failed(ConnectError::Resolve {
                    host: host.clone(),
                    port,
                    reason: err.to_string(),
                })
            })?
            .filter(|addr| plan.address_family.allows(addr))
            .collect();
        let mut last = None;
        let mut stream = None;
        for addr in addrs {
            match tokio::net::TcpStream::connect(addr).await {
                Ok(connected) => {
                    stream = Some(connected);
                    break;
                }
                Err(err) => last = Some(err),
            }
        }
        let mut stream = match (stream, last) {
            (Some(stream), _) => stream,
            (None, Some(err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
                return Err(failed(ConnectError::Refused {
                    host: host.clone(),
                    port,
                }))
            }
            (None, err) => {
                return Err(failed(ConnectError::Unreachable {
                    host: host.clone(),
                    port,
                    reason: err.map_or_else(|| "no address".to_owned(), |e| e.to_string()),
                }))
            }
        };
        let (banner, prefix) = read_banner(&mut stream).await.map_err(|reason| {
            Finding::fail(
                "reachable",
                format!("{host} port {port}: TCP connects, but {reason}"),
                "check that sshd (not another service) listens on that port",
            )
        })?;
        Ok((banner, stream, prefix))
    };
    match tokio::time::timeout(limit, work).await {
        Ok(result) => result,
        Err(_) => Err(failed(ConnectError::Timeout {
            host: plan.hostname.clone(),
            port,
            seconds: limit.as_secs().max(1),
        })),
    }
}

/// Reads up to the server's `SSH-` line, bounded; returns it and every byte read.
async fn read_banner(stream: &mut tokio::net::TcpStream) -> Result<(String, Vec<u8>), String> {
    let mut read = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let mut start = 0;
        for (at, byte) in read.iter().enumerate() {
            if *byte == b'\n' {
                let line = &read[start..at];
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                if line.starts_with(b"SSH-") {
                    if !line.starts_with(b"SSH-2.0-") && !line.starts_with(b"SSH-1.99-") {
                        return Err(format!(
                            "it speaks an SSH version other than 2 ({})",
                            String::from_utf8_lossy(&line[..line.len().min(BANNER_MAX)])
                        ));
                    }
                    let banner =
                        String::from_utf8_lossy(&line[..line.len().min(BANNER_MAX)]).into_owned();
                    return Ok((banner, read));
                }
                start = at + 1;
            }
        }
        if read.len() >= BANNER_SEARCH_MAX {
            return Err(format!(
                "sent {BANNER_SEARCH_MAX} bytes without an SSH banner"
            ));
        }
        let n = stream
            .read(&mut chunk)
            .await
            .map_err(|err| format!("reading the SSH banner failed: {err}"))?;
        if n == 0 {
            return Err("it closed the connection without an SSH banner".to_owned());
        }
        read.extend_from_slice(&chunk[..n]);
    }
}

/// The host key the server presents to a client configured as the login will be (same
/// algorithm preferences), so the key judged is the key the login will see.
enum Presented {
    Key { algorithm: String, blob: Vec<u8> },
    Certificate(Box<Certificate>),
}

/// Records the server's host key and ends the key exchange there: nothing is trusted.
struct Capture {
    seen: Arc<Mutex<Option<Presented>>>,
}

impl russh::client::Handler for Capture {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let presented = match server_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => Presented::Key {
                algorithm: key_type_name(key),
                blob: key
                    .to_bytes()
                    .map_err(|e| russh::Error::from(russh::keys::Error::from(e)))?,
            },
            PublicKeyOrCertificate::Certificate(cert) => {
                Presented::Certificate(Box::new(cert.clone()))
            }
        };
        if let Ok(mut seen) = self.seen.lock() {
            *seen = Some(presented);
        }
        Ok(false)
    }
}

/// The key type as known_hosts writes it: RSA keys are `ssh-rsa` whatever the signature hash.
fn key_type_name(key: &PublicKey) -> String {
    if key.algorithm().is_rsa() {
        "ssh-rsa".to_owned()
    } else {
        key.algorithm().as_str().to_owned()
    }
}

async fn presented_key(
    plan: &HostPlan,
    db: &HostKeyDb,
    stream: tokio::net::TcpStream,
    prefix: Vec<u8>,
) -> Result<Presented, String> {
    let preferred = db.known_hosts.known_algorithms(&plan.hostname, plan.port);
    let config = Arc::new(session::client_config(plan, &preferred));
    let seen = Arc::new(Mutex::new(None));
    let (reader, writer) = stream.into_split();
    // The banner already read goes to russh first, then the rest of the connection.
    let replay = std::io::Cursor::new(prefix).chain(reader);
    let limit = plan.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    let capture = Capture {
        seen: Arc::clone(&seen),
    };
    let handshake = russh::client::connect_stream(config, tokio::io::join(replay, writer), capture);
    let outcome = tokio::time::timeout(limit, handshake).await;
    let taken = seen.lock().ok().and_then(|mut seen| seen.take());
    match (taken, outcome) {
        (Some(presented), _) => Ok(presented),
        (None, Ok(Err(err))) => Err(format!("SSH handshake failed: {err}")),
        (None, Ok(Ok(_))) => Err("the handshake ended without a host key".to_owned()),
        (None, Err(_)) => Err(format!("no host key within {}s", limit.as_secs().max(1))),
    }
}

/// The presented host key against known_hosts (and the secret's KnownHosts), as the login's
/// verifier will judge it, but saying where a known key is recorded.
fn judge_host_key(plan: &HostPlan, db: &HostKeyDb, presented: &Presented) -> Finding {
    let (host, port) = (plan.hostname.as_str(), plan.port);
    let known = &db.known_hosts;
    match presented {
        Presented::Key { algorithm, blob } => judge_plain_key(plan, db, algorithm, blob, None),
        Presented::Certificate(cert) => match session::judge_certificate(
            known,
            host,
            port,
            cert,
            &plan.algorithms.ca_signature,
        ) {
            CertificateJudgement::Trusted { authority } => Finding::pass(
                "host-key",
                format!(
                    "host certificate for {} {} signed by CA {}, trusted by the @cert-authority line at {authority}",
                    key_type_name(&PublicKey::new(cert.public_key().clone(), "")),
                    cert.public_key().fingerprint(HashAlg::Sha256),
                    cert.signature_key().fingerprint(HashAlg::Sha256),
                ),
            ),
            CertificateJudgement::Forged { authority } => Finding::fail(
                "host-key",
                format!("the host certificate's signature does not verify with the CA key in {authority}"),
                "someone may be intercepting: do not log in until the host's administrator has checked",
            ),
            CertificateJudgement::Revoked {
                fingerprint,
                source,
            } => Finding::fail(
                "host-key",
                format!("the host certificate's key or CA {fingerprint} is REVOKED in {source}"),
                "refusing it is right: ask the host's administrator for a new host key",
            ),
            CertificateJudgement::Untrusted {
                key_type,
                key_blob,
                problem,
            } => judge_plain_key(plan, db, &key_type, &key_blob, Some(problem)),
            CertificateJudgement::Unencodable(_) => Finding::fail(
                "host-key",
                "the host certificate cannot be encoded",
                "check the host certificate with ssh-keygen -L -f",
            ),
        },
    }
}

fn judge_plain_key(
    plan: &HostPlan,
    db: &HostKeyDb,
    algorithm: &str,
    blob: &[u8],
    certificate_problem: Option<String>,
) -> Finding {
    let (host, port) = (plan.hostname.as_str(), plan.port);
    let fingerprint = fingerprint_sha256(blob);
    let certificate = certificate_problem
        .map(|problem| format!(" (its host certificate was not accepted: {problem})"))
        .unwrap_or_default();
    let pattern = session::host_pattern(host, port);
    match db.known_hosts.check(host, port, algorithm, blob) {
        HostKeyStatus::Valid => {
            let location = db
                .known_hosts
                .location_of(host, port, algorithm, blob)
                .unwrap_or_else(|| "known_hosts".to_owned());
            Finding::pass(
                "host-key",
                format!("{algorithm} {fingerprint} known from {location}{certificate}"),
            )
        }
        HostKeyStatus::Unknown => {
            let files: Vec<String> = plan
                .user_known_hosts
                .iter()
                .chain(&plan.global_known_hosts)
                .map(|p| p.display().to_string())
                .collect();
            Finding::fail(
                "host-key",
                format!(
                    "{algorithm} {fingerprint} is unknown: no entry for {pattern} in {} or the secret's KnownHosts{certificate}",
                    files.join(", ")
                ),
                format!(
                    "compare the fingerprint with the host's own (ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub there), then add it: ssh-keyscan -p {port} -t {algorithm} {host} >> ~/.ssh/known_hosts"
                ),
            )
        }
        HostKeyStatus::Mismatch(mismatch) => Finding::fail(
            "host-key",
            format!(
                "HOST KEY MISMATCH: the server presents {algorithm} {} but known_hosts has {}{certificate}",
                mismatch.presented_fingerprint,
                mismatch
                    .known
                    .iter()
                    .map(|k| format!("{} ({})", k.fingerprint, k.location))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            format!(
                "someone may be intercepting, or the host was reinstalled; after checking, remove the old entry with ssh-keygen -R '{pattern}'"
            ),
        ),
        HostKeyStatus::Revoked {
            fingerprint,
            source,
        } => Finding::fail(
            "host-key",
            format!("{algorithm} {fingerprint} is REVOKED in {source}"),
            "refusing it is right: ask the host's administrator for a new host key",
        ),
    }
}

/// A real public-key login with the secret's key, as smssh makes it, tried again as a
/// fan-out would (`--retries`) after a failure that may pass.
async fn login(
    plan: &HostPlan,
    keys: &KeySource,
    db: &HostKeyDb,
    options: &FanoutOptions,
) -> Finding {
    let mut attempt = 0;
    let result = loop {
        match session::connect(plan, keys, db).await {
            Err(err) if err.is_retryable() && attempt < options.retries => {
                tokio::time::sleep(options.backoff * 2u32.saturating_pow(attempt)).await;
                attempt += 1;
            }
            result => break result,
        }
    };
    match result {
        Ok(conn) => {
            let version = conn
                .key_used
                .version_id
                .as_deref()
                .map(|v| format!(" (version {v})"))
                .unwrap_or_default();
            let _ = conn
                .handle
                .disconnect(russh::Disconnect::ByApplication, "", "en")
                .await;
            Finding::pass(
                "login",
                format!(
                    "{}@{} accepts {}{version}",
                    plan.user, plan.hostname, conn.key_used.key
                ),
            )
        }
        Err(err @ ConnectError::AuthRefused { .. }) => {
            let message = err.to_string();
            let (detail, _) = split_hint(&message);
            Finding::fail(
                "login",
                detail,
                format!(
                    "add the secret's public key to ~{}/.ssh/authorized_keys there (smssh rotate --reconcile does it for every worker)",
                    plan.user
                ),
            )
        }
        Err(err) => Finding::failed_with(
            "login",
            &err.to_string(),
            "run smssh -v on this host for details",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hint_is_the_last_part_that_says_what_to_do() {
        assert_eq!(
            split_hint("h port 22: connection refused: check that sshd runs there"),
            (
                "h port 22: connection refused",
                Some("check that sshd runs there")
            )
        );
        assert_eq!(
            split_hint("nothing to do here: really"),
            ("nothing to do here: really", None)
        );
        // The last such part wins, so a detail that itself says "check" stays whole.
        assert_eq!(
            split_hint("a: check b: use c"),
            ("a: check b", Some("use c"))
        );
    }

    #[test]
    fn the_verdict_ignores_warnings_but_not_failures() {
        let mut report = Report {
            findings: vec![Finding::pass("secret", "v1")],
        };
        let mut warning = Finding::fail("memory-lock", "not locked", "raise the limit");
        warning.required = false;
        report.findings.push(warning);
        assert!(report.passed());
        assert!(report.text_lines()[1].starts_with("WARN memory-lock"));
        report
            .findings
            .push(Finding::fail("login", "refused", "add the key").on("h\u{1b}[2J"));
        assert!(!report.passed());
        let lines = report.text_lines();
        assert_eq!(
            lines[2],
            "FAIL login        h\\x1b[2J: refused: add the key"
        );
        assert_eq!(lines[3], "1 of 3 checks failed");
        assert_eq!(report.to_json()["ok"], serde_json::json!(false));
        assert_eq!(report.to_json()["findings"][2]["host"], "h\\x1b[2J");
    }
}
