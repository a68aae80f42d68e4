//! The one place an invocation gets its client key: fetched once, shared by every session,
//! re-fetched at most once when a server refuses it, and optionally the fallback stage.
//!
//! Owns: the fetch-once / re-fetch-once / fallback policy and its cache. Invariant: however
//! many hosts an invocation reaches, Secrets Manager sees at most one `GetSecretValue` per
//! stage asked for (plus the single re-fetch), so a 1000-host fan-out costs one API call.
//! Must not know: SSH protocol details; it answers "which keys may I try, in order".

use std::sync::Arc;

use tokio::sync::OnceCell;

use crate::aws::secret::{extract_key_material, SecretError, SecretsClient, VersionSelector};
use crate::aws::AwsSettings;
use crate::key::{ClientKey, KeyError};

/// Which secret, which version, which field: the user's choice, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretSpec {
    pub id: String,
    pub selector: VersionSelector,
    pub field: Option<String>,
    pub fallback_stage: Option<String>,
    pub aws: AwsSettings,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyLoadError {
    #[error(transparent)]
    Secret(#[from] SecretError),
    #[error("secret {id} ({selector}): {source}")]
    Key {
        id: String,
        selector: VersionSelector,
        source: KeyError,
    },
}

/// A key decoded from one version of the secret, with what the secret says about hosts.
#[derive(Debug)]
pub struct LoadedKey {
    pub key: ClientKey,
    pub version_id: Option<String>,
    /// known_hosts lines stored in the secret by the rotation (public data).
    pub known_hosts: Option<String>,
}

#[derive(Debug)]
pub struct KeySource {
    spec: SecretSpec,
    aws: OnceCell<aws_config::SdkConfig>,
    client: OnceCell<SecretsClient>,
    initial: OnceCell<Arc<LoadedKey>>,
    refetched: OnceCell<Arc<LoadedKey>>,
    fallback: OnceCell<Option<Arc<LoadedKey>>>,
    /// Keys from outside the usual fetch (the rotation's previous key, `--bootstrap-key`),
    /// tried in order after every other.
    last_resort: Vec<Arc<LoadedKey>>,
    /// True when the key is fixed (a rotation's pending key): no re-fetch.
    pinned: bool,
    /// The secret's ARN from the first GetSecretValue (for audit records).
    arn: std::sync::OnceLock<String>,
}

impl KeySource {
    pub fn new(spec: SecretSpec) -> KeySource {
        KeySource {
            spec,
            aws: OnceCell::new(),
            client: OnceCell::new(),
            initial: OnceCell::new(),
            refetched: OnceCell::new(),
            fallback: OnceCell::new(),
            last_resort: Vec::new(),
            pinned: false,
            arn: std::sync::OnceLock::new(),
        }
    }

    /// A source that offers exactly `key`: no fetch, no re-fetch, no fallback. The rotation
    /// logs in with the pending key this way, or with the bootstrap key before the secret
    /// holds one.
    pub fn pinned(spec: SecretSpec, key: Arc<LoadedKey>) -> KeySource {
        KeySource {
            initial: OnceCell::new_with(Some(key)),
            pinned: true,
            ..KeySource::new(spec)
        }
    }

    /// Adds keys tried, in order, after the secret's (and the fallback stage's) were refused.
    pub fn with_last_resort(mut self, keys: Vec<Arc<LoadedKey>>) -> KeySource {
        self.last_resort.extend(keys);
        self
    }

    pub fn last_resort(&self) -> &[Arc<LoadedKey>] {
        &self.last_resort
    }

    pub fn spec(&self) -> &SecretSpec {
        &self.spec
    }

    /// The secret's ARN, once a GetSecretValue has returned it.
    pub fn secret_arn(&self) -> Option<&str> {
        self.arn.get().map(String::as_str)
    }

    /// The AWS configuration of this invocation, loaded once; other AWS clients (EC2
    /// discovery) share it so that credentials are resolved once.
    pub async fn aws_config(&self) -> &aws_config::SdkConfig {
        self.aws
            .get_or_init(|| crate::aws::sdk_config(&self.spec.aws))
            .await
    }

    /// The key to try first. Fetched on first use, then shared.
    pub async fn initial(&self) -> Result<Arc<LoadedKey>, KeyLoadError> {
        self.initial
            .get_or_try_init(|| self.load(&self.spec.selector))
            .await
            .cloned()
    }

    /// Called when a server refused `tried`: fetches the secret once more, because it may have
    /// rotated since the first fetch. Returns the new key only if it differs from `tried`.
    pub async fn refetched(
        &self,
        tried: &LoadedKey,
    ) -> Result<Option<Arc<LoadedKey>>, KeyLoadError> {
        if self.pinned {
            return Ok(None);
        }
        crate::term::diag::debug(format_args!(
            "the server refused {}: fetching secret {} again in case it was rotated",
            tried.key, self.spec.id
        ));
        let again = self
            .refetched
            .get_or_try_init(|| self.load(&self.spec.selector))
            .await?;
        Ok((again.key.fingerprint() != tried.key.fingerprint()).then(|| Arc::clone(again)))
    }

    /// The `--fallback-stage` key (e.g. AWSPREVIOUS), when one was asked for.
    pub async fn fallback(&self) -> Result<Option<Arc<LoadedKey>>, KeyLoadError> {
        let Some(stage) = self.spec.fallback_stage.as_ref().filter(|_| !self.pinned) else {
            return Ok(None);
        };
        self.fallback
            .get_or_try_init(|| async {
                self.load(&VersionSelector::Stage(stage.clone()))
                    .await
                    .map(Some)
            })
            .await
            .cloned()
    }

    async fn load(&self, selector: &VersionSelector) -> Result<Arc<LoadedKey>, KeyLoadError> {
        let client = self
            .client
            .get_or_init(|| async { SecretsClient::new(self.aws_config().await) })
            .await;
        let fetched = client.fetch(&self.spec.id, selector).await?;
        if let Some(arn) = &fetched.arn {
            let _ = self.arn.set(arn.clone());
        }
        crate::term::diag::debug(format_args!(
            "GetSecretValue {} ({selector}): version {}",
            self.spec.id,
            fetched.version_id.as_deref().unwrap_or("unknown")
        ));
        let material =
            extract_key_material(&self.spec.id, &fetched.value, self.spec.field.as_deref())?;
        let key = ClientKey::decode(&material).map_err(|source| KeyLoadError::Key {
            id: self.spec.id.clone(),
            selector: selector.clone(),
            source,
        })?;
        Ok(Arc::new(LoadedKey {
            key,
            version_id: fetched.version_id,
            known_hosts: material.known_hosts,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::test_key;

    fn spec(fallback_stage: Option<&str>) -> SecretSpec {
        SecretSpec {
            id: "unit".to_owned(),
            selector: VersionSelector::Stage("AWSCURRENT".to_owned()),
            field: None,
            fallback_stage: fallback_stage.map(str::to_owned),
            // No AWS call may happen in these tests: an unroutable region and no endpoint
            // would make one fail loudly rather than pass by accident.
            aws: AwsSettings {
                region: Some("unit-test-1".to_owned()),
                profile: None,
            },
        }
    }

    #[tokio::test]
    async fn a_pinned_source_offers_its_key_and_never_fetches() {
        let key = test_key("pending");
        let source = KeySource::pinned(spec(Some("AWSPREVIOUS")), Arc::clone(&key));
        let first = source.initial().await.expect("pinned");
        assert!(Arc::ptr_eq(&first, &key));
        assert!(source.refetched(&first).await.expect("no fetch").is_none());
        assert!(source.fallback().await.expect("no fetch").is_none());
        assert!(
            source.client.get().is_none(),
            "no Secrets Manager client was made"
        );
    }

    #[tokio::test]
    async fn last_resort_keys_keep_their_order() {
        let (a, b) = (test_key("previous"), test_key("bootstrap"));
        let source = KeySource::pinned(spec(None), test_key("current"))
            .with_last_resort(vec![Arc::clone(&a)])
            .with_last_resort(vec![Arc::clone(&b)]);
        let order: Vec<Option<&str>> = source
            .last_resort()
            .iter()
            .map(|k| k.version_id.as_deref())
            .collect();
        assert_eq!(order, vec![Some("previous"), Some("bootstrap")]);
    }

    #[test]
    fn a_loaded_keys_debug_shows_no_private_material() {
        let key = test_key("v1");
        let private = key.key.private();
        let shown = format!("{key:?}");
        let secret_bytes = match private.key_data() {
            russh::keys::ssh_key::private::KeypairData::Ed25519(pair) => pair.private.to_bytes(),
            _ => unreachable!("test_key makes ed25519 keys"),
        };
        let hex: String = secret_bytes.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!shown.contains(&hex));
        assert!(!shown.contains(&format!("{secret_bytes:?}")));
        assert!(shown.contains("SHA256:"), "{shown}");
    }
}
