//! Rotating the cluster key pair with Secrets Manager's four steps, shared by the Lambda
//! function and `smssh rotate`.
//!
//! Owns: the steps' semantics (validation of the token as AWS's rotation templates do,
//! createSecret, setSecret, testSecret, finishSecret), what every worker's managed block must
//! hold at each moment, and the local driver that does what RotateSecret does. Invariants:
//! - Until finishSecret moves AWSCURRENT, every worker keeps the current key: setSecret only
//!   adds, and a failed step promotes nothing. The master is never locked out.
//! - Every edit of a worker is a reconciliation to the desired state (the keys of the versions
//!   still valid), never a relative edit, so any retry finishes a partial run.
//! - finishSecret and a reconciliation retire every key the secret holds or held in a version
//!   still listed, wherever it sits in the file, except the desired ones and the operator's
//!   bootstrap key (unless asked to); setSecret never removes anything.
//! - Every SSH session goes through `fanout`, so it sends keepalives unless configured not
//!   to, and a worker that freezes fails its step by name.
//! - The grace period of AWSPREVIOUS counts from the moment its successor became AWSCURRENT,
//!   recorded in the secret's [`store::PROMOTED_TAG`] tag just before the label moves.
//! - Host keys are always verified; unknown ones are learned only when the operator allowed it,
//!   at createSecret, and recorded in the new version's `KnownHosts`.
//!
//! Must not know: how arguments or Lambda events were parsed, or how results are printed
//! (a reporter callback receives progress lines).

pub mod block;
pub mod deploy;
pub mod function;
pub mod keygen;
pub mod plan;
pub mod store;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use secrecy::{ExposeSecret, SecretString};

use crate::audit::{self, Action, Auditor, Outcome};
use crate::aws::secret::{KeyMaterial, PrivateKeyBytes};
use crate::config::known_hosts::KnownHostsError;
use crate::fanout::{self, HostError};
use crate::key::source::{KeySource, LoadedKey, SecretSpec};
use crate::key::ClientKey;
use crate::plan::targets::{self, HostSources, TargetError};
use crate::plan::{FanoutOptions, HostPlan, SshOptions};
use crate::ssh::exec::{self, Captured, ExecError, ExecRequest, RemoteExit};
use crate::ssh::session::{self, Connection, HostKeyDb};
use block::{BlockError, ManagedKey, PublicKeyLine};
use deploy::{DeployFailure, HostResult, RunFailure, SsmError, SsmTarget};
use keygen::{KeyType, KeygenError};
use store::{Description, Document, Store, StoreError, AWSCURRENT, AWSPENDING, AWSPREVIOUS};

/// One of Secrets Manager's rotation steps, spelled as in the rotation event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    Set,
    Test,
    Finish,
}

impl Step {
    pub const ALL: [Step; 4] = [Step::Create, Step::Set, Step::Test, Step::Finish];

    pub fn name(self) -> &'static str {
        match self {
            Step::Create => "createSecret",
            Step::Set => "setSecret",
            Step::Test => "testSecret",
            Step::Finish => "finishSecret",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown rotation step {given:?}: use createSecret, setSecret, testSecret or finishSecret")]
pub struct UnknownStep {
    pub given: String,
}

impl FromStr for Step {
    type Err = UnknownStep;

    fn from_str(text: &str) -> Result<Step, UnknownStep> {
        Step::ALL
            .into_iter()
            .find(|step| step.name().eq_ignore_ascii_case(text))
            .ok_or_else(|| UnknownStep {
                given: text.to_owned(),
            })
    }
}

/// How the authorized_keys script reaches the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Channel {
    /// Over SSH with the current key (or the bootstrap key), through the fan-out engine.
    #[default]
    Ssh,
    /// Through SSM Run Command, as root, on EC2 instances.
    Ssm,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown deploy channel {given:?}: use ssh or ssm")]
pub struct UnknownChannel {
    pub given: String,
}

impl FromStr for Channel {
    type Err = UnknownChannel;

    fn from_str(text: &str) -> Result<Channel, UnknownChannel> {
        match text.to_ascii_lowercase().as_str() {
            "ssh" => Ok(Channel::Ssh),
            "ssm" => Ok(Channel::Ssm),
            _ => Err(UnknownChannel {
                given: text.to_owned(),
            }),
        }
    }
}

/// One worker: where to log in, and its instance id when it was found in EC2.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub plan: HostPlan,
    pub instance_id: Option<String>,
}

impl Target {
    /// The workers `sources` name, through the same resolution as every fan-out; `user` and
    /// `port` apply to hosts that do not name their own.
    pub async fn resolve(
        sources: &HostSources,
        ssh: &SshOptions,
        user: Option<&str>,
        port: Option<u16>,
        aws: &aws_config::SdkConfig,
    ) -> Result<Vec<Target>, TargetError> {
        let hosts = targets::resolve(sources, aws).await?;
        let plans = targets::plans(&hosts, ssh, user, port);
        Ok(hosts
            .into_iter()
            .zip(plans)
            .map(|(host, plan)| Target {
                plan,
                instance_id: host.instance_id,
            })
            .collect())
    }
}

/// The rotation's settings, resolved from flags or the Lambda's environment.
#[derive(Debug, Clone)]
pub struct Settings {
    pub key_type: KeyType,
    /// How long AWSPREVIOUS stays authorized after the current version was promoted.
    pub grace: Duration,
    /// Remove the bootstrap key everywhere at finishSecret (it is kept by default, being the
    /// operator's own key).
    pub retire_bootstrap_key: bool,
    /// Accept and record unknown host keys at createSecret (first contact only).
    pub learn_host_keys: bool,
    pub channel: Channel,
    /// The account whose authorized_keys SSM edits (SSH edits the login user's own).
    pub ssm_user: String,
    /// authorized_keys path on the workers; None is `~/.ssh/authorized_keys`.
    pub authorized_keys_file: Option<String>,
    pub ssm_timeout: Duration,
    pub fanout: FanoutOptions,
    /// Refuse to run a step when the secret's rotation is not enabled (the Lambda's check).
    pub require_rotation_enabled: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RotationError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("secret {id}: rotation is not enabled for it: enable rotation with this function, or rotate with smssh rotate")]
    RotationDisabled { id: String },
    #[error("secret {id}: version {token} is not a version of this secret: pass the ClientRequestToken of a rotation in progress")]
    UnknownToken { id: String, token: String },
    #[error("secret {id}: version {token} is not AWSPENDING (stages: {stages}): only the pending version of a rotation can be set, tested or promoted")]
    NotPending {
        id: String,
        token: String,
        stages: String,
    },
    #[error(
        "secret {id}: version {token} holds no key yet: run createSecret with this token first"
    )]
    PendingEmpty { id: String, token: String },
    #[error("secret {id}: {source}")]
    Keygen { id: String, source: KeygenError },
    #[error(
        "secret {id}: version {version}: {reason}: store a valid key pair or start over from {{}}"
    )]
    BadKey {
        id: String,
        version: String,
        reason: String,
    },
    #[error("secret {id}: no version holds a usable key, so every worker's managed block would be emptied: nothing was changed; run a rotation (or store a key pair) first")]
    NoUsableKey { id: String },
    #[error("secret {id} holds no key yet, so nothing can log in to push the first one: pass --bootstrap-key FILE (a private key already authorized on every worker), or deploy with --deploy ssm")]
    NoCurrentKey { id: String },
    #[error("{step}: {failed} of {total} hosts failed ({hosts}): {consequence}")]
    Hosts {
        step: Step,
        failed: usize,
        total: usize,
        hosts: String,
        consequence: &'static str,
    },
    #[error("{during}: cannot learn the host keys of {failed} of {total} hosts ({hosts}): every host must answer for --learn-host-keys; nothing was stored")]
    Learn {
        during: &'static str,
        failed: usize,
        total: usize,
        hosts: String,
    },
    #[error(transparent)]
    Ssm(#[from] SsmError),
    #[error("--deploy ssm reaches EC2 instances by id: select the hosts with --ec2-filter (not -w or --hosts-file)")]
    SsmNeedsInstances,
    #[error("known_hosts: {0}")]
    KnownHosts(#[from] KnownHostsError),
    #[error("secret {id}: {source}")]
    Block { id: String, source: BlockError },
    #[error("--bootstrap-key: {reason}")]
    BootstrapPublicKey { reason: String },
    #[error("interrupted")]
    Cancelled,
}

/// What a step (or a whole rotation) did, for the caller to print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepOutcome {
    pub step: Step,
    pub token: String,
    pub summary: String,
}

/// Why testSecret's login with the pending key did not prove it on a host.
#[derive(Debug, thiserror::Error)]
pub enum TestFailure {
    #[error("the test command exited {code}: {stderr}")]
    Exit { code: u8, stderr: String },
    #[error(transparent)]
    Exec(ExecError),
}

/// What a reported line is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Note {
    /// A step's progress (stdout for `smssh rotate`).
    Progress,
    /// One host that failed a step, named with its reason (stderr).
    HostFailed,
}

/// Receives one line per event: each finished step, each failed host.
pub type Reporter = Arc<dyn Fn(Note, &str) + Send + Sync>;

/// Everything a rotation of one secret needs.
pub struct Rotation {
    store: Store,
    spec: SecretSpec,
    settings: Settings,
    targets: Vec<Target>,
    bootstrap: Option<Arc<LoadedKey>>,
    ssm: Option<aws_sdk_ssm::Client>,
    report: Reporter,
    /// Where each step and each host's authorized_keys edit is recorded.
    audit: Arc<Auditor>,
}

impl fmt::Debug for Rotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rotation")
            .field("secret", &self.store.id())
            .field("settings", &self.settings)
            .field("targets", &self.targets.len())
            .field(
                "bootstrap",
                &self.bootstrap.as_ref().map(|k| k.key.fingerprint()),
            )
            .finish()
    }
}

/// What a deploy writes: the block's keys, the keys to retire outside it, the bootstrap key
/// to count, and the script that does it.
struct Rendered {
    keys: Vec<ManagedKey>,
    retire: Vec<PublicKeyLine>,
    /// The versions whose keys `retire` holds, for audit records.
    retired_versions: Vec<String>,
    watch: Option<PublicKeyLine>,
    script: String,
}

/// The versions a step works with, read once per step.
struct Versions {
    description: Description,
    current: Option<Document>,
    pending: Option<Document>,
    /// AWSPREVIOUS: a login key for hosts that missed the last rotation, and a desired key
    /// only while the grace period runs.
    previous: Option<Document>,
    previous_in_grace: bool,
}

impl Rotation {
    pub fn new(
        aws: &aws_config::SdkConfig,
        spec: SecretSpec,
        settings: Settings,
        targets: Vec<Target>,
        bootstrap: Option<Arc<LoadedKey>>,
        report: Reporter,
    ) -> Result<Rotation, RotationError> {
        if settings.channel == Channel::Ssm && targets.iter().any(|t| t.instance_id.is_none()) {
            return Err(RotationError::SsmNeedsInstances);
        }
        Ok(Rotation {
            store: Store::new(aws, &spec.id),
            ssm: (settings.channel == Channel::Ssm).then(|| aws_sdk_ssm::Client::new(aws)),
            spec,
            settings,
            targets,
            bootstrap,
            report,
            audit: Arc::new(Auditor::none()),
        })
    }

    /// The same rotation, recording each step and each host's edit with `audit`.
    pub fn with_audit(self, audit: Arc<Auditor>) -> Rotation {
        Rotation { audit, ..self }
    }

    /// Records one step's outcome (with no host: the step as a whole).
    fn record_step(
        &self,
        step: Step,
        token: &str,
        result: Result<(), &RotationError>,
        started: Instant,
    ) {
        self.audit.record(&audit::Event {
            host: None,
            key: audit::KeyUsed::default(),
            action: Action::Rotation {
                step: step.name().to_owned(),
                version_id: token.to_owned(),
            },
            outcome: match result {
                Ok(()) => Outcome::Ok,
                Err(err) => Outcome::Failed(err.to_string()),
            },
            exit_status: None,
            duration: started.elapsed(),
        });
    }

    /// Runs one step for `token`, as the Lambda does for each event, and records it.
    /// `local` allows createSecret for a token Secrets Manager has not listed (smssh rotate
    /// makes its own).
    pub async fn run_step(
        &self,
        step: Step,
        token: &str,
        local: bool,
    ) -> Result<StepOutcome, RotationError> {
        let started = Instant::now();
        let result = self.run_step_unrecorded(step, token, local).await;
        self.record_step(step, token, result.as_ref().map(|_| ()), started);
        result
    }

    async fn run_step_unrecorded(
        &self,
        step: Step,
        token: &str,
        local: bool,
    ) -> Result<StepOutcome, RotationError> {
        let description = self.store.describe().await?;
        self.audit.set_secret_arn(&description.arn);
        if self.settings.require_rotation_enabled && !description.rotation_enabled {
            return Err(RotationError::RotationDisabled {
                id: description.name,
            });
        }
        let listed = description.stages.contains_key(token);
        let may_create_unlisted = local && step == Step::Create;
        if !listed && !may_create_unlisted {
            return Err(RotationError::UnknownToken {
                id: description.name,
                token: token.to_owned(),
            });
        }
        let outcome = |summary: String| StepOutcome {
            step,
            token: token.to_owned(),
            summary,
        };
        if description.has_stage(token, AWSCURRENT) {
            // finishSecret does its reconciliation even then: a retry after a failed removal
            // must still remove the old key (the original sample returned early here).
            if step == Step::Finish {
                let summary = self.reconcile_with(description, Step::Finish).await?;
                return Ok(outcome(summary));
            }
            return Ok(outcome(format!(
                "version {token} is already AWSCURRENT: nothing to do"
            )));
        }
        if listed && !description.has_stage(token, AWSPENDING) {
            return Err(RotationError::NotPending {
                id: description.name.clone(),
                token: token.to_owned(),
                stages: description.stages[token].join(", "),
            });
        }
        let summary = match step {
            Step::Create => self.create(&description, token).await?,
            Step::Set => {
                let versions = self.versions(description, Some(token)).await?;
                self.require_pending(&versions, token)?;
                self.deploy(&versions, Step::Set).await?
            }
            Step::Test => {
                let versions = self.versions(description, Some(token)).await?;
                self.test(&versions, token).await?
            }
            Step::Finish => {
                // Nothing is promoted unless the pending version holds a usable key pair: a
                // `{}` or mismatched version made current would empty every worker's block.
                let versions = self.versions(description.clone(), Some(token)).await?;
                self.require_pending(&versions, token)?;
                let description = self.promote(&description, token).await?;
                self.reconcile_with(description, Step::Finish).await?
            }
        };
        Ok(outcome(summary))
    }

    /// Does what RotateSecret does: the four steps in order for one token. A rotation left
    /// pending by an earlier run is resumed rather than a new one piled on top of it.
    pub async fn rotate(&self) -> Result<Vec<StepOutcome>, RotationError> {
        let description = self.store.describe().await?;
        let token = match description.version_with(AWSPENDING) {
            Some(pending) if self.pending_lacks_host_keys(pending).await? => {
                // The pending version cannot change, and its KnownHosts misses hosts the
                // operator now allows to learn: a new version replaces it (PutSecretValue
                // moves AWSPENDING to it).
                (self.report)(
                    Note::Progress,
                    &format!(
                        "version {pending} lacks host keys learned now: starting a new version"
                    ),
                );
                new_token()
            }
            Some(pending) => {
                (self.report)(
                    Note::Progress,
                    &format!("resuming the rotation to version {pending}"),
                );
                pending.to_owned()
            }
            None => new_token(),
        };
        let mut outcomes = Vec::new();
        for step in [Step::Create, Step::Set] {
            if crate::term::cancel::requested() {
                return Err(RotationError::Cancelled);
            }
            let outcome = self.run_step(step, &token, true).await?;
            (self.report)(
                Note::Progress,
                &format!("{}: {}", outcome.step, outcome.summary),
            );
            outcomes.push(outcome);
        }
        if crate::term::cancel::requested() {
            return Err(RotationError::Cancelled);
        }
        let description = self.store.describe().await?;
        let fused = self.settings.channel == Channel::Ssh
            && description.has_stage(&token, AWSPENDING)
            && !description.has_stage(&token, AWSCURRENT);
        if fused {
            outcomes.extend(self.test_and_finish(description, &token).await?);
        } else {
            for step in [Step::Test, Step::Finish] {
                let outcome = self.run_step(step, &token, true).await?;
                (self.report)(
                    Note::Progress,
                    &format!("{}: {}", outcome.step, outcome.summary),
                );
                outcomes.push(outcome);
            }
        }
        // Secrets Manager removes AWSPENDING itself after a Lambda rotation; the local driver
        // does it here, so that the next run starts a new rotation.
        self.store
            .move_stage(AWSPENDING, None, Some(&token))
            .await?;
        Ok(outcomes)
    }

    /// True when learning is on and some target's host key is in neither the known_hosts
    /// files nor the pending version's KnownHosts.
    async fn pending_lacks_host_keys(&self, pending: &str) -> Result<bool, RotationError> {
        if !self.settings.learn_host_keys {
            return Ok(false);
        }
        let known = match self.store.document(pending).await? {
            Some(doc) => doc
                .text(store::FIELD_KNOWN_HOSTS)
                .unwrap_or_default()
                .to_owned(),
            None => return Ok(false),
        };
        Ok(!self
            .learn_host_keys(&known, "createSecret")
            .await?
            .is_empty())
    }

    /// finishSecret's first half: AWSCURRENT moves to `token` (Secrets Manager moves
    /// AWSPREVIOUS to the old current version). Returns the secret's new description.
    async fn promote(
        &self,
        description: &Description,
        token: &str,
    ) -> Result<Description, RotationError> {
        let current = description.version_with(AWSCURRENT).map(str::to_owned);
        // The tag goes first: if the move then fails, the retry writes it again, and a tag
        // naming a version that never became current is ignored.
        self.store.mark_promoted(token, SystemTime::now()).await?;
        self.store
            .move_stage(AWSCURRENT, Some(token), current.as_deref())
            .await?;
        (self.report)(
            Note::Progress,
            &format!(
                "finishSecret: AWSCURRENT moved to {token}{}",
                current
                    .map(|old| format!(" (AWSPREVIOUS is now {old})"))
                    .unwrap_or_default()
            ),
        );
        Ok(self.store.describe().await?)
    }

    /// Brings every target to the desired state without rotating (`--reconcile`): hosts that
    /// were offline or are new get the current key, stale keys go.
    /// With `--learn-host-keys`, the host keys of workers nobody knows yet are first recorded
    /// in a new current version that carries the same key pair.
    pub async fn reconcile(&self) -> Result<String, RotationError> {
        let mut description = self.store.describe().await?;
        let mut learned = String::new();
        if self.settings.learn_host_keys {
            if let Some((recorded, token, count)) = self.record_new_host_keys(&description).await? {
                description = recorded;
                learned = format!(
                    "recorded {count} new host key(s) in version {token}, which holds the same key pair; "
                );
            }
        }
        let summary = self.reconcile_with(description, Step::Finish).await?;
        Ok(format!("{learned}{summary}"))
    }

    /// Learns the host keys of the targets that neither the known_hosts files nor the current
    /// version know, and stores them as a new AWSCURRENT version holding the current key pair
    /// unchanged: the secret's history says when each host key was accepted, and no key
    /// changes, so nothing on the workers has to. AWSPREVIOUS is put back on the version it
    /// was on and the promotion time carried over, so that a grace period running for the
    /// last rotated-away key is neither cut short nor restarted. Returns the new description,
    /// the new version and how many keys it added, or None when every host is known.
    async fn record_new_host_keys(
        &self,
        description: &Description,
    ) -> Result<Option<(Description, String, usize)>, RotationError> {
        let Some(current_id) = description.version_with(AWSCURRENT) else {
            return Ok(None);
        };
        let Some(current) = self.store.document(current_id).await? else {
            return Ok(None);
        };
        let known = current
            .text(store::FIELD_KNOWN_HOSTS)
            .unwrap_or_default()
            .to_owned();
        let learned = self.learn_host_keys(&known, "reconcile").await?;
        if learned.is_empty() {
            return Ok(None);
        }
        let mut lines: Vec<&str> = known.lines().filter(|l| !l.trim().is_empty()).collect();
        lines.extend(learned.iter().map(String::as_str));
        let mut fields = current.fields.clone();
        fields.insert(
            store::FIELD_KNOWN_HOSTS.to_owned(),
            serde_json::Value::String(lines.join("\n") + "\n"),
        );
        let token = new_token();
        let copy = |secret: &Option<SecretString>| {
            secret
                .as_ref()
                .map(|value| SecretString::from(value.expose_secret()))
        };
        let document = Document {
            version_id: token.clone(),
            private_key: copy(&current.private_key),
            passphrase: copy(&current.passphrase),
            fields,
        };
        let promoted_at = match &description.promoted {
            Some(promotion) if promotion.version_id == current_id => Some(promotion.at),
            _ => self
                .store
                .listed_versions()
                .await?
                .get(current_id)
                .copied()
                .flatten(),
        };
        self.store
            .mark_promoted(&token, promoted_at.unwrap_or_else(SystemTime::now))
            .await?;
        self.store
            .put_version(&token, &document, AWSCURRENT)
            .await?;
        if let Some(previous) = description
            .version_with(AWSPREVIOUS)
            .filter(|previous| *previous != current_id)
        {
            self.store
                .move_stage(AWSPREVIOUS, Some(previous), Some(current_id))
                .await?;
        }
        (self.report)(
            Note::Progress,
            &format!(
                "reconcile: learned {} host key(s) on first contact; version {token} holds them and the same key pair",
                learned.len()
            ),
        );
        let count = learned.len();
        Ok(Some((self.store.describe().await?, token, count)))
    }

    async fn reconcile_with(
        &self,
        description: Description,
        step: Step,
    ) -> Result<String, RotationError> {
        let versions = self.versions(description, None).await?;
        self.deploy(&versions, step).await
    }

    async fn create(
        &self,
        description: &Description,
        token: &str,
    ) -> Result<String, RotationError> {
        let id = &description.name;
        if let Some(existing) = self.store.document(token).await? {
            if existing.private_key.is_some() {
                return Ok(format!("version {token} already holds a key: kept"));
            }
        }
        let current = match description.version_with(AWSCURRENT) {
            Some(version) => self.store.document(version).await?,
            None => None,
        };
        let generated =
            keygen::generate(self.settings.key_type).map_err(|source| RotationError::Keygen {
                id: id.clone(),
                source,
            })?;
        let mut fields = current.map(|doc| doc.fields).unwrap_or_default();
        let tagged = format!("{} smssh:{id}:{token}", generated.public_line);
        for (field, value) in [
            (store::FIELD_PUBLIC_KEY, tagged),
            (store::FIELD_KEY_TYPE, generated.key_type.name().to_owned()),
            (store::FIELD_FINGERPRINT, generated.fingerprint.clone()),
        ] {
            fields.insert(field.to_owned(), serde_json::Value::String(value));
        }
        if self.settings.learn_host_keys {
            let known = fields
                .get(store::FIELD_KNOWN_HOSTS)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned();
            let learned = self.learn_host_keys(&known, "createSecret").await?;
            if !learned.is_empty() {
                (self.report)(
                    Note::Progress,
                    &format!(
                        "createSecret: learned {} host key(s) on first contact",
                        learned.len()
                    ),
                );
                let mut lines: Vec<&str> = known.lines().filter(|l| !l.trim().is_empty()).collect();
                lines.extend(learned.iter().map(String::as_str));
                fields.insert(
                    store::FIELD_KNOWN_HOSTS.to_owned(),
                    serde_json::Value::String(lines.join("\n") + "\n"),
                );
            }
        }
        let document = Document {
            version_id: token.to_owned(),
            private_key: Some(generated.private_text),
            // The new key is stored unencrypted (the secret's KMS key protects it); an old
            // passphrase would only make clients try to decrypt it.
            passphrase: None,
            fields,
        };
        self.store.put_version(token, &document, AWSPENDING).await?;
        Ok(format!(
            "new {} key {} stored as version {token} (AWSPENDING)",
            generated.key_type, generated.fingerprint
        ))
    }

    /// Reads the versions a step needs. `pending` names the token being rotated to; without
    /// it, a pending version that is not yet current is still kept on the workers, so that a
    /// reconciliation during a rotation does not undo its setSecret.
    async fn versions(
        &self,
        description: Description,
        pending: Option<&str>,
    ) -> Result<Versions, RotationError> {
        let current_id = description.version_with(AWSCURRENT).map(str::to_owned);
        let pending_id = pending
            .map(str::to_owned)
            .or_else(|| description.version_with(AWSPENDING).map(str::to_owned))
            .filter(|p| Some(p) != current_id.as_ref());
        let previous_id = description
            .version_with(AWSPREVIOUS)
            .map(str::to_owned)
            .filter(|p| Some(p) != current_id.as_ref());
        let current = match &current_id {
            Some(id) => self.store.document(id).await?,
            None => None,
        };
        let pending = match &pending_id {
            Some(id) => self.store.document(id).await?,
            None => None,
        };
        let previous = match &previous_id {
            Some(id) => self.store.document(id).await?,
            None => None,
        };
        let previous_in_grace = match (&previous, &current_id) {
            (Some(_), Some(current)) if !self.settings.grace.is_zero() => {
                let since = match &description.promoted {
                    Some(promoted) if &promoted.version_id == current => Some(promoted.at),
                    // AWSCURRENT was moved by someone else (the console, the CLI): its
                    // creation is the latest moment known to precede its promotion.
                    _ => self
                        .store
                        .listed_versions()
                        .await?
                        .get(current)
                        .copied()
                        .flatten(),
                };
                since.is_some_and(|since| SystemTime::now() < since + self.settings.grace)
            }
            _ => false,
        };
        Ok(Versions {
            description,
            current,
            pending,
            previous,
            previous_in_grace,
        })
    }

    /// The pending version, which must hold a key pair that decodes and whose public half is
    /// the one its private half derives: the version setSecret installs, testSecret proves and
    /// finishSecret promotes.
    fn require_pending<'a>(
        &self,
        versions: &'a Versions,
        token: &str,
    ) -> Result<&'a Document, RotationError> {
        let id = &versions.description.name;
        let pending = versions
            .pending
            .as_ref()
            .filter(|doc| doc.private_key.is_some())
            .ok_or_else(|| RotationError::PendingEmpty {
                id: id.clone(),
                token: token.to_owned(),
            })?;
        verified_public_key(id, pending)?;
        Ok(pending)
    }

    /// The keys every worker's block must hold now: CURRENT, the pending key of a rotation in
    /// progress, and PREVIOUS during its grace period. Versions without a key (`{}`) add none,
    /// and a set without any key is refused.
    fn desired_keys(&self, versions: &Versions) -> Result<Vec<ManagedKey>, RotationError> {
        let id = &versions.description.name;
        let mut keys: Vec<ManagedKey> = Vec::new();
        let previous = versions
            .previous
            .as_ref()
            .filter(|_| versions.previous_in_grace);
        for doc in [
            versions.current.as_ref(),
            versions.pending.as_ref(),
            previous,
        ]
        .into_iter()
        .flatten()
        {
            let Some(line) = verified_public_key(id, doc)? else {
                continue;
            };
            if keys.iter().any(|k| k.key == line) {
                continue;
            }
            keys.push(ManagedKey::new(line, &doc.version_id).map_err(|source| {
                RotationError::Block {
                    id: id.clone(),
                    source,
                }
            })?);
        }
        if keys.is_empty() {
            // An empty set would remove the block everywhere and, on a cluster that logs in
            // through it, lock the master out; no step or reconciliation ever writes one.
            return Err(RotationError::NoUsableKey { id: id.clone() });
        }
        Ok(keys)
    }

    /// Known hosts: the plans' files (read at each step, so that a step run long after
    /// another sees them as they are then) plus the KnownHosts lines of the versions read.
    fn host_key_db(&self, versions: &Versions) -> Result<HostKeyDb, RotationError> {
        let secret_lines = [&versions.current, &versions.pending, &versions.previous]
            .into_iter()
            .flatten()
            .filter_map(|doc| doc.text(store::FIELD_KNOWN_HOSTS));
        Ok(HostKeyDb::load(self.plans().iter(), secret_lines)?)
    }

    fn plans(&self) -> Vec<HostPlan> {
        self.targets.iter().map(|t| t.plan.clone()).collect()
    }

    fn key_spec(&self) -> SecretSpec {
        self.spec.clone()
    }

    /// What a deploy for `step` writes, for the configured channel: setSecret only adds keys,
    /// finishSecret (and a reconciliation) also retires the keys the secret no longer wants.
    async fn render(&self, versions: &Versions, step: Step) -> Result<Rendered, RotationError> {
        let id = &versions.description.name;
        let keys = self.desired_keys(versions)?;
        let bootstrap = self.bootstrap_public_key()?;
        let (retire, retired_versions) = match step {
            Step::Finish => {
                self.keys_to_retire(versions, &keys, bootstrap.as_ref())
                    .await?
            }
            _ => (Vec::new(), Vec::new()),
        };
        let watch = bootstrap.filter(|key| {
            !self.settings.retire_bootstrap_key && !keys.iter().any(|k| &k.key == key)
        });
        let user = match self.settings.channel {
            Channel::Ssh => "",
            Channel::Ssm => self.settings.ssm_user.as_str(),
        };
        let edit = block::Edit {
            keys: &keys,
            retire: &retire,
            watch: watch.as_ref(),
        };
        let script = block::script(
            user,
            id,
            self.settings.authorized_keys_file.as_deref(),
            &edit,
        )
        .map_err(|source| RotationError::Block {
            id: id.clone(),
            source,
        })?;
        Ok(Rendered {
            keys,
            retire,
            retired_versions,
            watch,
            script,
        })
    }

    /// The public half of `--bootstrap-key`, when one was given.
    fn bootstrap_public_key(&self) -> Result<Option<PublicKeyLine>, RotationError> {
        self.bootstrap
            .as_deref()
            .map(|key| {
                public_key_line(key).map_err(|reason| RotationError::BootstrapPublicKey { reason })
            })
            .transpose()
    }

    /// Every key the secret holds or held in a version still listed (deprecated ones
    /// included), except the desired ones and, unless `--retire-bootstrap-key`, the bootstrap
    /// key. A key is the one its version's private key derives, never a `PublicKey` field
    /// alone, so that nobody can have a foreign key removed by writing a version. A version
    /// that cannot be read as a key pair is reported and skipped: an old mistake in the
    /// secret's history must not stop every later rotation.
    async fn keys_to_retire(
        &self,
        versions: &Versions,
        desired: &[ManagedKey],
        bootstrap: Option<&PublicKeyLine>,
    ) -> Result<(Vec<PublicKeyLine>, Vec<String>), RotationError> {
        let id = &versions.description.name;
        let mut retire: Vec<PublicKeyLine> = Vec::new();
        let mut retired_versions: Vec<String> = Vec::new();
        let add = |key: PublicKeyLine, retire: &mut Vec<PublicKeyLine>| {
            let wanted = desired.iter().any(|k| k.key == key);
            if !wanted && !retire.contains(&key) {
                retire.push(key);
            }
        };
        for version in self.store.listed_versions().await?.into_keys() {
            let document = match self.store.document(&version).await {
                Ok(Some(document)) => document,
                Ok(None) => continue,
                Err(err @ (StoreError::NotJson { .. } | StoreError::FieldNotString { .. })) => {
                    (self.report)(
                        Note::Progress,
                        &format!("finishSecret: {err}: a key it may hold is not retired"),
                    );
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            match verified_public_key(id, &document) {
                Ok(Some(key)) => {
                    let kept_bootstrap =
                        bootstrap == Some(&key) && !self.settings.retire_bootstrap_key;
                    let wanted = desired.iter().any(|k| k.key == key);
                    if !kept_bootstrap && !wanted {
                        retired_versions.push(version.clone());
                    }
                    if !kept_bootstrap {
                        add(key, &mut retire);
                    }
                }
                Ok(None) => {}
                Err(err) => (self.report)(
                    Note::Progress,
                    &format!("finishSecret: {err}; a key it may hold is not retired"),
                ),
            }
        }
        if let Some(key) = bootstrap.filter(|_| self.settings.retire_bootstrap_key) {
            add(key.clone(), &mut retire);
        }
        Ok((retire, retired_versions))
    }

    /// Writes the desired block on every target and fails the step if any host failed.
    async fn deploy(&self, versions: &Versions, step: Step) -> Result<String, RotationError> {
        let id = &versions.description.name;
        let rendered = self.render(versions, step).await?;
        let script = &rendered.script;
        let started = Instant::now();
        let results = match self.settings.channel {
            Channel::Ssh => {
                let source = self.login_keys(versions)?;
                let db = self.host_key_db(versions)?;
                deploy::over_ssh(
                    self.plans(),
                    Arc::new(source),
                    db,
                    &self.settings.fanout,
                    script,
                )
                .await
            }
            Channel::Ssm => {
                let client = self.ssm.as_ref().ok_or(RotationError::SsmNeedsInstances)?;
                let targets: Vec<SsmTarget> = self
                    .targets
                    .iter()
                    .filter_map(|t| {
                        t.instance_id.as_ref().map(|instance| SsmTarget {
                            instance_id: instance.clone(),
                            label: t.plan.label.clone(),
                        })
                    })
                    .collect();
                let comment = format!("smssh {step} {id}");
                deploy::over_ssm(
                    client,
                    &targets,
                    script,
                    &comment,
                    self.settings.ssm_timeout,
                )
                .await?
            }
        };
        self.judge(step, &rendered, &results, started)
    }

    /// A deploy's verdict: every host's block must hold exactly `keys`, or the step fails
    /// naming each host that does not.
    fn judge(
        &self,
        step: Step,
        rendered: &Rendered,
        results: &[HostResult],
        started: Instant,
    ) -> Result<String, RotationError> {
        let versions_wanted: Vec<&str> = rendered
            .keys
            .iter()
            .map(|k| k.version_id.as_str())
            .collect();
        let mut changed = 0usize;
        let mut retired_lines = 0usize;
        let mut retired_hosts = 0usize;
        let mut bootstrap_hosts = 0usize;
        let mut failures: Vec<String> = Vec::new();
        for edit in results {
            let HostResult { host, result, .. } = edit;
            match result {
                Ok(report) if report.version_ids == versions_wanted => {
                    self.record_edit(step, rendered, edit, Outcome::Ok, started);
                    changed += usize::from(report.changed);
                    if report.retired > 0 {
                        (self.report)(
                            Note::Progress,
                            &format!(
                                "{step}: {host}: retired {} line(s) holding keys the secret no longer wants",
                                report.retired
                            ),
                        );
                        retired_lines += report.retired;
                        retired_hosts += 1;
                    }
                    bootstrap_hosts += usize::from(report.watched > 0);
                }
                Ok(report) => {
                    let line = format!(
                        "{step}: {host}: the block holds [{}] after the edit, expected [{}]",
                        report.version_ids.join(" "),
                        versions_wanted.join(" ")
                    );
                    (self.report)(Note::HostFailed, &line);
                    let failed = Outcome::Failed(line);
                    self.record_edit(step, rendered, edit, failed, started);
                    failures.push(host.clone());
                }
                Err(failure) => {
                    let line = if failure.names_host() {
                        format!("{step}: {failure}")
                    } else {
                        format!("{step}: {host}: {failure}")
                    };
                    (self.report)(Note::HostFailed, &line);
                    let failed = Outcome::Failed(line);
                    self.record_edit(step, rendered, edit, failed, started);
                    failures.push(host.clone());
                }
            }
        }
        if !failures.is_empty() {
            return Err(RotationError::Hosts {
                step,
                failed: failures.len(),
                total: results.len(),
                hosts: abbreviate(&failures),
                consequence: match step {
                    Step::Finish => "the new key is current and works on every host that was tested; stale keys stay on these hosts until a retry or smssh rotate --reconcile removes them",
                    _ => "nothing was promoted and the current key still logs in everywhere; fix these hosts and run the step again",
                },
            });
        }
        let mut summary = format!(
            "{} hosts hold [{}] ({} updated, {} unchanged)",
            results.len(),
            versions_wanted.join(" "),
            changed,
            results.len() - changed
        );
        if !rendered.retire.is_empty() {
            summary.push_str(&format!(
                "; {retired_lines} line(s) with retired keys removed on {retired_hosts} host(s)"
            ));
        }
        if rendered.watch.is_some() {
            summary.push_str(&format!(
                "; the bootstrap key is kept and still authorized on {bootstrap_hosts} of {} hosts (--retire-bootstrap-key removes it)",
                results.len()
            ));
        }
        Ok(summary)
    }

    /// Records one host's authorized_keys edit: the key that logged in to make it, the
    /// versions its block holds after it (the desired ones when the host did not say), the
    /// versions retired, and the outcome. The
    /// duration is the deploy's so far: each host's result came in within it.
    fn record_edit(
        &self,
        step: Step,
        rendered: &Rendered,
        edit: &HostResult,
        outcome: Outcome,
        started: Instant,
    ) {
        let label = edit.host.as_str();
        let report = edit.result.as_ref().ok();
        let plan = self
            .targets
            .iter()
            .map(|t| &t.plan)
            .find(|p| p.label == label);
        let login = match self.settings.channel {
            Channel::Ssh => plan.map(|p| p.user.clone()).unwrap_or_default(),
            Channel::Ssm => self.settings.ssm_user.clone(),
        };
        let versions = match report {
            Some(report) => report.version_ids.clone(),
            None => rendered.keys.iter().map(|k| k.version_id.clone()).collect(),
        };
        self.audit.record(&audit::Event {
            host: Some(audit::Host {
                host: plan.map_or_else(|| label.to_owned(), |p| p.hostname.clone()),
                port: plan.map_or(22, |p| p.port),
                login,
            }),
            key: edit.key.clone(),
            action: Action::AuthorizedKeys {
                step: step.name().to_owned(),
                versions,
                retired_versions: rendered.retired_versions.clone(),
                changed: report.is_some_and(|r| r.changed),
                retired_lines: report.map_or(0, |r| r.retired),
            },
            outcome,
            exit_status: None,
            duration: started.elapsed(),
        });
    }

    /// The keys the SSH channel logs in with: CURRENT, then PREVIOUS for hosts that missed the
    /// last rotation, then the bootstrap key. Before the secret holds any key, only the
    /// bootstrap key.
    fn login_keys(&self, versions: &Versions) -> Result<KeySource, RotationError> {
        let id = &versions.description.name;
        let current = match &versions.current {
            Some(doc) if doc.private_key.is_some() => Some(loaded_key(id, doc)?),
            _ => None,
        };
        let mut extra: Vec<Arc<LoadedKey>> = Vec::new();
        if let Some(doc) = versions
            .previous
            .as_ref()
            .filter(|d| d.private_key.is_some())
        {
            extra.push(loaded_key(id, doc)?);
        }
        if let Some(bootstrap) = &self.bootstrap {
            extra.push(Arc::clone(bootstrap));
        }
        match current {
            Some(current) => {
                Ok(KeySource::pinned(self.key_spec(), current).with_last_resort(extra))
            }
            None => match extra.split_first() {
                Some((first, rest)) => Ok(KeySource::pinned(self.key_spec(), Arc::clone(first))
                    .with_last_resort(rest.to_vec())),
                None => Err(RotationError::NoCurrentKey { id: id.clone() }),
            },
        }
    }

    /// testSecret: a login with the pending key on every target, host key verified, and a
    /// command whose exit status must be 0.
    async fn test(&self, versions: &Versions, token: &str) -> Result<String, RotationError> {
        match self.test_logins(versions, token).await? {
            Some(sessions) => Ok(format!(
                "the pending key logged in on all {} hosts",
                sessions.len()
            )),
            None => Ok(nothing_to_test(token)),
        }
    }

    /// testSecret's logins; returns their open sessions, or None for a pending version
    /// without a key.
    async fn test_logins(
        &self,
        versions: &Versions,
        token: &str,
    ) -> Result<Option<Vec<(HostPlan, Connection)>>, RotationError> {
        let id = &versions.description.name;
        // createSecret always stores a key before Secrets Manager calls testSecret, so a
        // pending version without one is the service's configuration check (RotateSecret
        // without immediate rotation makes a temporary AWSPENDING copy and tests it).
        if versions
            .pending
            .as_ref()
            .is_none_or(|doc| doc.private_key.is_none())
        {
            return Ok(None);
        }
        let pending = self.require_pending(versions, token)?;
        let key = loaded_key(id, pending)?;
        let keys = Arc::new(KeySource::pinned(self.key_spec(), key));
        let db = self.host_key_db(versions)?;
        let plans = self.plans();
        let total = plans.len();
        let request = Arc::new(ExecRequest {
            command: Some("true".to_owned()),
            pty: false,
            forward_stdin: false,
            input: None,
        });
        let outcomes = fanout::run(plans, keys, db, &self.settings.fanout, move |conn, _| {
            let request = Arc::clone(&request);
            async move {
                let mut sink = Captured::default();
                match exec::run(&conn, &request, &mut sink).await {
                    Ok(RemoteExit::Status(0)) => Ok(conn),
                    Ok(other) => Err(TestFailure::Exit {
                        code: other.code(),
                        stderr: String::from_utf8_lossy(&sink.stderr).trim().to_owned(),
                    }),
                    Err(err) => Err(TestFailure::Exec(err)),
                }
            }
        })
        .await;
        let mut failures = Vec::new();
        let mut sessions = Vec::with_capacity(total);
        for outcome in outcomes {
            match outcome.result {
                Ok(conn) => sessions.push((outcome.plan, conn)),
                Err(err) => {
                    let line = if err.names_host() {
                        format!("testSecret: {err}")
                    } else {
                        format!("testSecret: {}: {err}", outcome.plan.label)
                    };
                    (self.report)(Note::HostFailed, &line);
                    failures.push(outcome.plan.label.clone());
                }
            }
        }
        if !failures.is_empty() {
            return Err(RotationError::Hosts {
                step: Step::Test,
                failed: failures.len(),
                total,
                hosts: abbreviate(&failures),
                consequence: "nothing was promoted and the current key still logs in everywhere; fix these hosts and run the step again",
            });
        }
        Ok(Some(sessions))
    }

    /// testSecret then finishSecret, for the local driver over SSH. The sessions that proved
    /// the pending key stay open and, once AWSCURRENT has moved to it, carry finishSecret's
    /// reconciliation, so each worker costs one login fewer than two separate steps. A host
    /// whose session was lost in between gets a fresh login.
    async fn test_and_finish(
        &self,
        description: Description,
        token: &str,
    ) -> Result<Vec<StepOutcome>, RotationError> {
        let versions = self.versions(description, Some(token)).await?;
        let outcome = |step: Step, summary: String| {
            (self.report)(Note::Progress, &format!("{step}: {summary}"));
            StepOutcome {
                step,
                token: token.to_owned(),
                summary,
            }
        };
        let test_started = Instant::now();
        let logins = self.test_logins(&versions, token).await;
        self.record_step(Step::Test, token, logins.as_ref().map(|_| ()), test_started);
        let Some(sessions) = logins? else {
            let tested = outcome(Step::Test, nothing_to_test(token));
            let finished = self.run_step(Step::Finish, token, true).await?;
            return Ok(vec![tested, finished]);
        };
        let tested = outcome(
            Step::Test,
            format!("the pending key logged in on all {} hosts", sessions.len()),
        );
        let finish_started = Instant::now();
        let finished = self
            .finish_over(&versions.description, sessions, token)
            .await;
        self.record_step(
            Step::Finish,
            token,
            finished.as_ref().map(|_| ()),
            finish_started,
        );
        let finished = outcome(Step::Finish, finished?);
        Ok(vec![tested, finished])
    }

    /// finishSecret over the sessions testSecret left open: promotes the pending version,
    /// then reconciles every host, logging in afresh only where a session was lost.
    async fn finish_over(
        &self,
        description: &Description,
        sessions: Vec<(HostPlan, Connection)>,
        token: &str,
    ) -> Result<String, RotationError> {
        if crate::term::cancel::requested() {
            return Err(RotationError::Cancelled);
        }
        let description = self.promote(description, token).await?;
        let versions = self.versions(description, None).await?;
        let rendered = self.render(&versions, Step::Finish).await?;
        let started = Instant::now();
        let request = Arc::new(deploy::script_request(&rendered.script));
        let logins = deploy::LoginKeys::default();
        let noted = logins.clone();
        let outcomes = fanout::for_each(sessions, &self.settings.fanout, move |plan, conn| {
            let request = Arc::clone(&request);
            noted.note(&plan.label, &conn);
            async move {
                deploy::run_script(&conn, &request)
                    .await
                    .map_err(HostError::Job)
            }
        })
        .await;
        // A session lost since testSecret (or one that stopped answering) is not the host's
        // fault: it gets a fresh login.
        let mut lost: Vec<HostPlan> = Vec::new();
        let mut results: Vec<HostResult> = Vec::with_capacity(outcomes.len());
        for outcome in outcomes {
            match outcome.result {
                Err(HostError::Job(RunFailure::Session(_)) | HostError::Timeout { .. }) => {
                    lost.push(outcome.plan)
                }
                other => results.push(HostResult {
                    key: logins.of(&outcome.plan.label),
                    host: outcome.plan.label,
                    result: other.map_err(DeployFailure::Ssh),
                }),
            }
        }
        if !lost.is_empty() && !crate::term::cancel::requested() {
            let source = self.login_keys(&versions)?;
            let db = self.host_key_db(&versions)?;
            results.extend(
                deploy::over_ssh(
                    lost,
                    Arc::new(source),
                    db,
                    &self.settings.fanout,
                    &rendered.script,
                )
                .await,
            );
        }
        self.judge(Step::Finish, &rendered, &results, started)
    }

    /// Connects to every target once to learn the host keys nobody knows yet.
    async fn learn_host_keys(
        &self,
        secret_known_hosts: &str,
        during: &'static str,
    ) -> Result<Vec<String>, RotationError> {
        let plans = self.plans();
        let db = HostKeyDb::load(plans.iter(), [secret_known_hosts])?.learning();
        let items = plans.into_iter().map(|plan| (plan, ())).collect();
        let probe_db = db.clone();
        let outcomes = fanout::for_each(items, &self.settings.fanout, move |plan, ()| {
            let db = probe_db.clone();
            async move {
                session::probe_host_key(&plan, &db)
                    .await
                    .map_err(HostError::<std::convert::Infallible>::Connect)
            }
        })
        .await;
        let total = outcomes.len();
        let mut failures = Vec::new();
        for outcome in &outcomes {
            if let Err(err) = &outcome.result {
                let line = if err.names_host() {
                    format!("{during}: {err}")
                } else {
                    format!("{during}: {}: {err}", outcome.plan.label)
                };
                (self.report)(Note::HostFailed, &line);
                failures.push(outcome.plan.label.clone());
            }
        }
        if !failures.is_empty() {
            return Err(RotationError::Learn {
                during,
                failed: failures.len(),
                total,
                hosts: abbreviate(&failures),
            });
        }
        let mut learned = db.learned();
        learned.sort();
        learned.dedup();
        Ok(learned)
    }
}

/// testSecret's summary for a pending version without a key (Secrets Manager's check of the
/// rotation's configuration).
fn nothing_to_test(token: &str) -> String {
    format!("version {token} holds no key: a configuration check, nothing to test")
}

/// A version's public key, derived from its private key; a `PublicKey` field must state the
/// same key. The field alone is never trusted: whoever may write a version but not read one
/// could otherwise have the next rotation install their key on every worker, and an honest
/// mismatched pair would lock everyone out once promoted. None for a version without a key.
fn verified_public_key(id: &str, doc: &Document) -> Result<Option<PublicKeyLine>, RotationError> {
    let bad = |reason: String| RotationError::BadKey {
        id: id.to_owned(),
        version: doc.version_id.clone(),
        reason,
    };
    let stated = doc
        .text(store::FIELD_PUBLIC_KEY)
        .map(|text| PublicKeyLine::parse(text).map_err(|e| bad(format!("PublicKey: {e}"))))
        .transpose()?;
    if doc.private_key.is_none() {
        return match stated {
            Some(_) => Err(bad("PublicKey without PrivateKey".to_owned())),
            None => Ok(None),
        };
    }
    let key = loaded_key(id, doc)?;
    let derived = public_key_line(&key).map_err(bad)?;
    match stated {
        Some(stated) if stated != derived => Err(bad(
            "PublicKey is not the public half of PrivateKey".to_owned(),
        )),
        _ => Ok(Some(derived)),
    }
}

/// The public half of a loaded private key, as a block stores it.
fn public_key_line(key: &LoadedKey) -> Result<PublicKeyLine, String> {
    let line = key
        .key
        .private()
        .public_key()
        .to_openssh()
        .map_err(|e| e.to_string())?;
    PublicKeyLine::parse(&line).map_err(|e| e.to_string())
}

/// Decodes a version's private key for logging in.
fn loaded_key(id: &str, doc: &Document) -> Result<Arc<LoadedKey>, RotationError> {
    let bad = |reason: String| RotationError::BadKey {
        id: id.to_owned(),
        version: doc.version_id.clone(),
        reason,
    };
    let private = doc
        .private_key
        .as_ref()
        .ok_or_else(|| bad("no PrivateKey".to_owned()))?;
    let material = KeyMaterial {
        private_key: PrivateKeyBytes::Text(SecretString::from(private.expose_secret())),
        passphrase: doc
            .passphrase
            .as_ref()
            .map(|p| SecretString::from(p.expose_secret())),
        known_hosts: doc.text(store::FIELD_KNOWN_HOSTS).map(str::to_owned),
    };
    let key = ClientKey::decode(&material).map_err(|e| bad(e.to_string()))?;
    Ok(Arc::new(LoadedKey {
        key,
        version_id: Some(doc.version_id.clone()),
        known_hosts: material.known_hosts,
    }))
}

/// A new ClientRequestToken: a random UUID (version 4), as the AWS CLI and SDKs make.
pub fn new_token() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// At most five names, then a count, so that a fleet-wide failure stays one readable line.
fn abbreviate(hosts: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = hosts
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if hosts.len() > SHOWN {
        text.push_str(&format!(" and {} more", hosts.len() - SHOWN));
    }
    text
}

/// Why a duration did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration {0:?}: write e.g. 0, 90s, 30m, 12h or 7d")]
    Number(String),
    #[error("invalid duration {0:?}: the unit must be s, m, h or d")]
    Unit(String),
    #[error("invalid duration {0:?}: too long")]
    TooLong(String),
}

/// Parses durations as `--grace` takes them: `0`, `90s`, `30m`, `12h`, `7d` (bare = seconds).
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(split) => text.split_at(split),
        None => (text, "s"),
    };
    let value: u64 = number
        .parse()
        .map_err(|_| DurationError::Number(text.to_owned()))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return Err(DurationError::Unit(text.to_owned())),
    };
    value
        .checked_mul(seconds)
        .map(Duration::from_secs)
        .ok_or_else(|| DurationError::TooLong(text.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_parse_as_the_event_spells_them() {
        for step in Step::ALL {
            assert_eq!(step.name().parse::<Step>().unwrap(), step);
        }
        assert_eq!("FINISHSECRET".parse::<Step>().unwrap(), Step::Finish);
        assert!("rotate".parse::<Step>().is_err());
    }

    #[test]
    fn tokens_are_version_4_uuids() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert!("89ab".contains(&a[19..20]), "{a}");
        block::validate_version_id(&a).unwrap();
    }

    #[test]
    fn durations_parse_with_units() {
        let cases = [
            ("0", Some(0)),
            ("90", Some(90)),
            ("90s", Some(90)),
            ("30m", Some(1800)),
            ("12h", Some(43200)),
            ("7d", Some(604800)),
            ("", None),
            ("5w", None),
            ("-1s", None),
            ("99999999999999999999d", None),
        ];
        for (text, expected) in cases {
            assert_eq!(
                parse_duration(text).ok().map(|d| d.as_secs()),
                expected,
                "{text}"
            );
        }
    }

    #[test]
    fn host_lists_are_abbreviated() {
        let hosts: Vec<String> = (1..=7).map(|i| format!("h{i}")).collect();
        assert_eq!(abbreviate(&hosts[..2]), "h1, h2");
        assert_eq!(abbreviate(&hosts), "h1, h2, h3, h4, h5 and 2 more");
    }

    #[test]
    fn channels_parse() {
        assert_eq!("ssh".parse::<Channel>().unwrap(), Channel::Ssh);
        assert_eq!("SSM".parse::<Channel>().unwrap(), Channel::Ssm);
        assert!("scp".parse::<Channel>().is_err());
    }
}
