//! Private keys read from a file given on the command line: `smssh rotate --bootstrap-key`
//! and the extra identities of `smssh -i` / `smscp -i`.
//!
//! Owns: reading the file straight into the same `secrecy` wrappers a secret's key lives in,
//! and the one-line reasons a file is refused. Invariant: the file's text is never shown, and
//! an encrypted key is refused rather than prompted for (these tools never ask for a
//! passphrase). Must not know: what the key is used for.

use std::path::Path;
use std::sync::Arc;

use crate::aws::secret::{KeyMaterial, PrivateKeyBytes};
use crate::key::source::LoadedKey;
use crate::key::{ClientKey, KeyError};

/// Why a key file cannot be used; each message starts with the path.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path}: {reason}")]
    Read { path: String, reason: String },
    #[error("{path}: the key is encrypted, and smssh never asks for a passphrase: give an unencrypted copy (e.g. on a tmpfs)")]
    Encrypted { path: String },
    #[error("{path}: {source}")]
    Decode { path: String, source: KeyError },
}

/// Reads and decodes the private key in `path`.
pub fn load(path: &Path) -> Result<Arc<LoadedKey>, KeyFileError> {
    let shown = crate::term::escape::visible(&path.display().to_string()).into_owned();
    let text = std::fs::read_to_string(path).map_err(|err| KeyFileError::Read {
        path: shown.clone(),
        reason: err.to_string(),
    })?;
    let material = KeyMaterial {
        private_key: PrivateKeyBytes::Text(secrecy::SecretString::from(text)),
        passphrase: None,
        known_hosts: None,
    };
    let key = ClientKey::decode(&material).map_err(|err| match err {
        KeyError::NeedsPassphrase => KeyFileError::Encrypted {
            path: shown.clone(),
        },
        source => KeyFileError::Decode {
            path: shown.clone(),
            source,
        },
    })?;
    Ok(Arc::new(LoadedKey {
        key,
        version_id: None,
        known_hosts: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreadable_encrypted_and_foreign_files_are_refused_with_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let err = load(&missing).unwrap_err().to_string();
        assert!(err.starts_with(&missing.display().to_string()), "{err}");
        let not_a_key = dir.path().join("notes");
        std::fs::write(&not_a_key, "hello\n").unwrap();
        let err = load(&not_a_key).unwrap_err();
        assert!(matches!(err, KeyFileError::Decode { .. }), "{err}");
        assert!(!err.to_string().contains("hello"), "{err}");
    }
}
