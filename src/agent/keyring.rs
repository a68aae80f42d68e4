//! The keys the agent serves: the secret's key (and, with `--offer-stages`, the keys of other
//! stages), read with GetSecretValue and re-read at the first request once the copy is older
//! than `--refresh`, or as soon as a request finds that a watched stage (the one served, and
//! every offered one) moved to another version. That check is one DescribeSecret, made at
//! most every [`STAGE_CHECK`], so a rotation's new key is offered from its createSecret on
//! (with `--offer-stages AWSPENDING`) and served from its finishSecret on, long before the
//! workers stop accepting the old one.
//!
//! Owns: when the secret is read again and what the agent lists. Invariant: the keys only
//! ever live in [`LoadedKey`]s (decoded from `secrecy` wrappers, locked, zeroized on drop);
//! what leaves this module is public (blobs, comments, fingerprints) or a signature. Must not
//! know: the agent protocol or sockets.

use std::sync::Arc;
use std::time::{Duration, Instant};

use russh::keys::signature::Signer;
use russh::keys::ssh_key::private::KeypairData;
use russh::keys::ssh_key::{HashAlg, Signature};

use crate::aws::secret::VersionSelector;
use crate::key::source::{KeyLoadError, KeySource, LoadedKey, SecretSpec};
use crate::rotation::store::{Store, StoreError};

/// How stale the agent's view of the stages may be. A login costs tens of milliseconds and a
/// rotation's steps each cost a round of logins, so a tenth of a second sees every stage move
/// in time, while a burst of logins through the agent costs DescribeSecret at most ten calls a
/// second.
pub const STAGE_CHECK: Duration = Duration::from_millis(100);

/// The agent protocol's SSH_AGENT_RSA_SHA2_256 flag (draft-miller-ssh-agent, 4.5.1).
const RSA_SHA2_256: u32 = 0x02;
/// The agent protocol's SSH_AGENT_RSA_SHA2_512 flag.
const RSA_SHA2_512: u32 = 0x04;

/// One key the agent lists, with its public blob and the comment `ssh-add -l` shows.
#[derive(Debug)]
pub struct ServedKey {
    pub key: Arc<LoadedKey>,
    /// The public key in the SSH wire encoding, as clients name it in a sign request.
    pub blob: Vec<u8>,
    /// `SECRET (stage STAGE, version ID)`: which secret and version the key came from.
    pub comment: String,
}

/// Why a signature could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("rsa signatures with SHA-1 (ssh-rsa) are not made: use rsa-sha2-256 or rsa-sha2-512")]
    RsaSha1,
    #[error("the signer failed")]
    Signer,
}

/// The agent's keys and the time they were read.
#[derive(Debug)]
pub struct Keyring {
    spec: SecretSpec,
    offer_stages: Vec<String>,
    refresh: Duration,
    /// DescribeSecret for the stage check.
    store: Store,
    /// The stages whose versions the stage check compares: the served one (unless a version
    /// id was asked for) and the offered ones.
    watched: Vec<String>,
    state: tokio::sync::Mutex<State>,
}

#[derive(Debug)]
struct State {
    keys: Arc<Vec<ServedKey>>,
    read_at: Instant,
    /// The version each watched stage pointed to at the last check (None: no version has it).
    versions: Vec<Option<String>>,
    checked_at: Instant,
}

impl Keyring {
    /// Reads the secret (and the offered stages) once; the main key must load, or the agent
    /// has nothing to serve.
    pub async fn load(
        spec: SecretSpec,
        offer_stages: Vec<String>,
        refresh: Duration,
    ) -> Result<Keyring, KeyLoadError> {
        let aws = crate::aws::sdk_config(&spec.aws).await;
        let store = Store::new(&aws, &spec.id);
        let mut watched: Vec<String> = match &spec.selector {
            VersionSelector::Stage(stage) => vec![stage.clone()],
            VersionSelector::Id(_) => Vec::new(),
        };
        watched.extend(offer_stages.iter().cloned());
        // The stages are looked at before the keys are read, so that a move in between is
        // seen by the first check rather than missed.
        let versions = staged_versions(&store, &watched).await.unwrap_or_default();
        let keys = read(&spec, &offer_stages).await?;
        Ok(Keyring {
            spec,
            offer_stages,
            refresh,
            store,
            watched,
            state: tokio::sync::Mutex::new(State {
                keys: Arc::new(keys),
                read_at: Instant::now(),
                versions,
                checked_at: Instant::now(),
            }),
        })
    }

    pub fn spec(&self) -> &SecretSpec {
        &self.spec
    }

    /// The keys to list or sign with, read again first if the copy is older than `--refresh`.
    /// A failed re-read keeps the keys the agent has (a warning says why) and is tried again
    /// after another `--refresh`, so a brief AWS outage does not stop every login.
    pub async fn keys(&self) -> Arc<Vec<ServedKey>> {
        let mut state = self.state.lock().await;
        let mut moved = false;
        if !self.watched.is_empty() && state.checked_at.elapsed() >= STAGE_CHECK {
            match staged_versions(&self.store, &self.watched).await {
                Ok(versions) => {
                    moved = versions != state.versions;
                    if moved {
                        crate::term::diag::debug(format_args!(
                            "secret {}: a watched stage moved to another version",
                            self.spec.id
                        ));
                    }
                    state.versions = versions;
                }
                Err(err) => crate::term::diag::debug(format_args!(
                    "secret {}: cannot check its stages: {err}",
                    self.spec.id
                )),
            }
            state.checked_at = Instant::now();
        }
        if moved || state.read_at.elapsed() >= self.refresh {
            match read(&self.spec, &self.offer_stages).await {
                Ok(keys) => {
                    crate::term::diag::debug(format_args!(
                        "read secret {} again: {}",
                        self.spec.id,
                        keys.iter()
                            .map(|k| k.key.key.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                    state.keys = Arc::new(keys);
                }
                Err(err) => crate::term::diag::warn(format_args!(
                    "cannot read secret {} again, still serving the key read before: {err}",
                    self.spec.id
                )),
            }
            state.read_at = Instant::now();
        }
        Arc::clone(&state.keys)
    }
}

/// The version each of `stages` points to now, in order (None where no version has it).
async fn staged_versions(
    store: &Store,
    stages: &[String],
) -> Result<Vec<Option<String>>, StoreError> {
    let description = store.describe().await?;
    Ok(stages
        .iter()
        .map(|stage| description.version_with(stage).map(str::to_owned))
        .collect())
}

/// Reads the main key, then each offered stage. An offered stage that does not exist (no
/// rotation is under way) or cannot be read is left out with a `-v` line; a key already
/// listed is not listed twice.
async fn read(spec: &SecretSpec, offer_stages: &[String]) -> Result<Vec<ServedKey>, KeyLoadError> {
    let main = KeySource::new(spec.clone()).initial().await?;
    let mut keys = vec![served(spec, &spec.selector, main)];
    for stage in offer_stages {
        let selector = VersionSelector::Stage(stage.clone());
        let other = SecretSpec {
            selector: selector.clone(),
            fallback_stage: None,
            ..spec.clone()
        };
        match KeySource::new(other).initial().await {
            Ok(key) => {
                if !keys
                    .iter()
                    .any(|k| k.key.key.fingerprint() == key.key.fingerprint())
                {
                    keys.push(served(spec, &selector, key));
                }
            }
            Err(err) => crate::term::diag::debug(format_args!("not offering {stage}: {err}")),
        }
    }
    Ok(keys)
}

fn served(spec: &SecretSpec, selector: &VersionSelector, key: Arc<LoadedKey>) -> ServedKey {
    // A key whose public half cannot be encoded cannot have been decoded either; an empty
    // blob would match no request, so the key would merely never be used.
    let blob = key
        .key
        .private()
        .public_key()
        .to_bytes()
        .unwrap_or_default();
    let comment = format!(
        "{} ({selector}, version {})",
        spec.id,
        key.version_id.as_deref().unwrap_or("unknown")
    );
    ServedKey { key, blob, comment }
}

/// Signs `data` as the agent protocol asks: RSA with SHA-256 or SHA-512 as `flags` say
/// (never SHA-1, which smssh does not offer anywhere), other keys with their one algorithm.
pub fn sign(key: &LoadedKey, data: &[u8], flags: u32) -> Result<Signature, SignError> {
    let private = key.key.private();
    match private.key_data() {
        KeypairData::Rsa(pair) => {
            let hash = if flags & RSA_SHA2_256 != 0 {
                HashAlg::Sha256
            } else if flags & RSA_SHA2_512 != 0 {
                HashAlg::Sha512
            } else {
                return Err(SignError::RsaSha1);
            };
            Signer::try_sign(&(pair, Some(hash)), data).map_err(|_| SignError::Signer)
        }
        _ => Signer::try_sign(private.as_ref(), data).map_err(|_| SignError::Signer),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_key;

    #[test]
    fn ed25519_signatures_verify_with_the_public_key() {
        use russh::keys::signature::Verifier;
        let key = test_key("v1");
        let signature = sign(&key, b"session data", 0).expect("ed25519 signs");
        let public = key.key.private().public_key().clone();
        assert!(Verifier::verify(public.key_data(), b"session data", &signature).is_ok());
        assert!(Verifier::verify(public.key_data(), b"other data", &signature).is_err());
    }

    #[test]
    fn rsa_follows_the_flags_and_refuses_sha1() {
        let generated =
            crate::rotation::keygen::generate(crate::rotation::keygen::KeyType::Rsa2048).unwrap();
        let material = crate::aws::secret::KeyMaterial {
            private_key: crate::aws::secret::PrivateKeyBytes::Text(generated.private_text),
            passphrase: None,
            known_hosts: None,
        };
        let key = LoadedKey {
            key: crate::key::ClientKey::decode(&material).unwrap(),
            version_id: None,
            known_hosts: None,
        };
        let name = |flags| sign(&key, b"d", flags).map(|s| s.algorithm().as_str().to_owned());
        assert_eq!(name(RSA_SHA2_256).unwrap(), "rsa-sha2-256");
        assert_eq!(name(RSA_SHA2_512).unwrap(), "rsa-sha2-512");
        assert!(matches!(name(0), Err(SignError::RsaSha1)));
    }
}
