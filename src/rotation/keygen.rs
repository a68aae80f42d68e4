//! New cluster key pairs for createSecret.
//!
//! Owns: the key types a rotation may create and their storage formats. RSA private keys are
//! written as PEM PKCS#1 (`-----BEGIN RSA PRIVATE KEY-----`) because the original sample's
//! paramiko client loads only that; every other type is written in OpenSSH format.
//! Invariant: the private key text exists only inside a [`SecretString`] (the generator's own
//! buffers are zeroizing types), and `Debug` shows the fingerprint only. Must not know:
//! Secrets Manager or workers.

use std::fmt;
use std::str::FromStr;

use russh::keys::ssh_key::private::{EcdsaKeypair, KeypairData, RsaKeypair};
use russh::keys::ssh_key::{Algorithm, EcdsaCurve, LineEnding, PrivateKey};
use russh::keys::HashAlg;
use secrecy::SecretString;

/// A key type createSecret can generate (`--key-type`, `SMSSH_KEY_TYPE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyType {
    #[default]
    Ed25519,
    Rsa2048,
    Rsa3072,
    Rsa4096,
    EcdsaP256,
}

impl KeyType {
    pub const NAMES: [&'static str; 5] =
        ["ed25519", "rsa-2048", "rsa-3072", "rsa-4096", "ecdsa-p256"];

    pub fn name(self) -> &'static str {
        match self {
            KeyType::Ed25519 => "ed25519",
            KeyType::Rsa2048 => "rsa-2048",
            KeyType::Rsa3072 => "rsa-3072",
            KeyType::Rsa4096 => "rsa-4096",
            KeyType::EcdsaP256 => "ecdsa-p256",
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key type {given:?}: use one of ed25519, rsa-2048, rsa-3072, rsa-4096, ecdsa-p256")]
pub struct UnknownKeyType {
    pub given: String,
}

impl FromStr for KeyType {
    type Err = UnknownKeyType;

    fn from_str(text: &str) -> Result<KeyType, UnknownKeyType> {
        match text.trim().to_ascii_lowercase().as_str() {
            "ed25519" => Ok(KeyType::Ed25519),
            "rsa-2048" | "rsa" => Ok(KeyType::Rsa2048),
            "rsa-3072" => Ok(KeyType::Rsa3072),
            "rsa-4096" => Ok(KeyType::Rsa4096),
            "ecdsa-p256" | "ecdsa" => Ok(KeyType::EcdsaP256),
            _ => Err(UnknownKeyType {
                given: text.to_owned(),
            }),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeygenError {
    #[error("cannot generate a {key_type} key: {reason}")]
    Generate { key_type: KeyType, reason: String },
    #[error("cannot encode the new {key_type} key: {reason}")]
    Encode { key_type: KeyType, reason: String },
}

/// A freshly generated key pair, ready to store.
pub struct GeneratedKey {
    pub key_type: KeyType,
    /// PEM PKCS#1 for RSA, OpenSSH format otherwise.
    pub private_text: SecretString,
    /// `TYPE BASE64`, without a comment.
    pub public_line: String,
    /// `SHA256:...`.
    pub fingerprint: String,
}

impl fmt::Debug for GeneratedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKey")
            .field("key_type", &self.key_type)
            .field("private_text", &"[REDACTED]")
            .field("fingerprint", &self.fingerprint)
            .finish()
    }
}

/// Generates a key pair of `key_type` from the operating system's random source.
pub fn generate(key_type: KeyType) -> Result<GeneratedKey, KeygenError> {
    let mut rng = rand::rng();
    let failed = |reason: String| KeygenError::Generate { key_type, reason };
    let key = match key_type {
        KeyType::Ed25519 => {
            PrivateKey::random(&mut rng, Algorithm::Ed25519).map_err(|e| failed(e.to_string()))?
        }
        KeyType::EcdsaP256 => {
            let pair = EcdsaKeypair::random(&mut rng, EcdsaCurve::NistP256)
                .map_err(|e| failed(e.to_string()))?;
            PrivateKey::new(KeypairData::Ecdsa(pair), "").map_err(|e| failed(e.to_string()))?
        }
        KeyType::Rsa2048 | KeyType::Rsa3072 | KeyType::Rsa4096 => {
            let bits = match key_type {
                KeyType::Rsa2048 => 2048,
                KeyType::Rsa3072 => 3072,
                _ => 4096,
            };
            let pair = RsaKeypair::random(&mut rng, bits).map_err(|e| failed(e.to_string()))?;
            PrivateKey::new(KeypairData::Rsa(pair), "").map_err(|e| failed(e.to_string()))?
        }
    };
    let encode_failed = |reason: String| KeygenError::Encode { key_type, reason };
    let private_text = match key.key_data() {
        KeypairData::Rsa(pair) => pkcs1_pem(key_type, pair)?,
        _ => {
            let text = key
                .to_openssh(LineEnding::LF)
                .map_err(|e| encode_failed(e.to_string()))?;
            SecretString::from(text.as_str())
        }
    };
    let public = key.public_key();
    let public_line = public
        .to_openssh()
        .map_err(|e| encode_failed(e.to_string()))?;
    Ok(GeneratedKey {
        key_type,
        private_text,
        public_line: public_line.trim().to_owned(),
        fingerprint: public.fingerprint(HashAlg::Sha256).to_string(),
    })
}

/// PEM PKCS#1, the format of `ssh-keygen -m PEM -t rsa` and of the original sample's keys.
fn pkcs1_pem(key_type: KeyType, pair: &RsaKeypair) -> Result<SecretString, KeygenError> {
    use rsa::pkcs1::EncodeRsaPrivateKey;
    let encode_failed = |reason: String| KeygenError::Encode { key_type, reason };
    let key = rsa::RsaPrivateKey::try_from(pair).map_err(|e| encode_failed(e.to_string()))?;
    let pem = key
        .to_pkcs1_pem(rsa::pkcs1::LineEnding::LF)
        .map_err(|e| encode_failed(e.to_string()))?;
    Ok(SecretString::from(pem.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::secret::{KeyMaterial, PrivateKeyBytes};
    use crate::key::ClientKey;

    #[test]
    fn key_type_names_round_trip() {
        for name in KeyType::NAMES {
            let parsed: KeyType = name.parse().unwrap();
            assert_eq!(parsed.name(), name);
        }
        for bad in ["", "dsa", "rsa-1024", "ed448"] {
            let err = bad.parse::<KeyType>().unwrap_err();
            assert!(err.to_string().contains("use one of"), "{err}");
        }
    }

    /// Every generated key must load through the same decoder smscp uses, and its public line
    /// must be what the private key says.
    #[test]
    fn generated_keys_load_back_with_matching_public_keys() {
        use secrecy::ExposeSecret;
        for (key_type, header, algorithm) in [
            (
                KeyType::Ed25519,
                "-----BEGIN OPENSSH PRIVATE KEY-----",
                "ssh-ed25519 ",
            ),
            (
                KeyType::EcdsaP256,
                "-----BEGIN OPENSSH PRIVATE KEY-----",
                "ecdsa-sha2-nistp256 ",
            ),
            (
                KeyType::Rsa2048,
                "-----BEGIN RSA PRIVATE KEY-----",
                "ssh-rsa ",
            ),
        ] {
            let generated = generate(key_type).unwrap();
            assert!(
                generated.private_text.expose_secret().starts_with(header),
                "{key_type}"
            );
            assert!(generated.public_line.starts_with(algorithm), "{key_type}");
            assert!(!format!("{generated:?}").contains("PRIVATE"));
            let material = KeyMaterial {
                private_key: PrivateKeyBytes::Text(generated.private_text),
                passphrase: None,
                known_hosts: None,
            };
            let decoded = ClientKey::decode(&material).unwrap();
            assert_eq!(decoded.fingerprint(), generated.fingerprint, "{key_type}");
        }
    }

    #[test]
    fn two_keys_differ() {
        let a = generate(KeyType::Ed25519).unwrap();
        let b = generate(KeyType::Ed25519).unwrap();
        assert_ne!(a.public_line, b.public_line);
    }
}
