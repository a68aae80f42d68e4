//! Decoding the private key taken out of a secret into the key russh signs with.
//!
//! Owns: the supported key formats (OpenSSH incl. encrypted, PEM PKCS#1 RSA, PKCS#8 plain and
//! encrypted, SEC1 EC, binary openssh-key-v1 / DER) and [`ClientKey`], the only type that holds
//! a decoded key. Invariant: `ClientKey`'s `Debug` and `Display` show the algorithm and the
//! public fingerprint, never private material; the decoded key zeroizes itself on drop
//! (ssh-key's private key types do). Must not know: where the bytes came from, or SSH sessions.

pub mod file;
pub mod hardening;
pub mod lock;
pub mod source;

use std::fmt;
use std::sync::Arc;

use russh::keys::{HashAlg, PrivateKey};
use secrecy::ExposeSecret;

use crate::aws::secret::{KeyMaterial, PrivateKeyBytes};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("the private key is encrypted and the secret has no Passphrase field: add the passphrase to the secret's JSON as \"Passphrase\"")]
    NeedsPassphrase,
    #[error("cannot decrypt the private key ({reason}): check the Passphrase field of the secret")]
    WrongPassphrase { reason: &'static str },
    #[error("the value is not a private key ({reason}): store an OpenSSH, PEM (PKCS#1) or PKCS#8 private key")]
    NotAKey { reason: &'static str },
    #[error("unsupported key type {key_type}: use ed25519, ecdsa or rsa")]
    Unsupported { key_type: String },
}

/// A decoded client key, shared by every session of one invocation.
#[derive(Clone)]
pub struct ClientKey {
    key: Arc<PrivateKey>,
    fingerprint: String,
}

impl ClientKey {
    pub fn decode(material: &KeyMaterial) -> Result<ClientKey, KeyError> {
        let passphrase = material.passphrase.as_ref().map(|p| p.expose_secret());
        let key = match &material.private_key {
            PrivateKeyBytes::Text(text) => decode_text(text.expose_secret(), passphrase)?,
            PrivateKeyBytes::Binary(bytes) => decode_binary(bytes.expose_secret(), passphrase)?,
        };
        Ok(ClientKey::from_private(key))
    }

    fn from_private(key: PrivateKey) -> ClientKey {
        let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
        let key = Arc::new(key);
        // When the whole process could not be locked, at least the key's own pages are.
        if !hardening::all_memory_locked() {
            match lock::lock_key(&key) {
                Ok(bytes) => crate::term::diag::debug(format_args!(
                    "locked the {bytes} bytes that hold the decoded key"
                )),
                Err(errno) => crate::term::diag::debug(format_args!(
                    "cannot lock the decoded key's pages: {errno}"
                )),
            }
        }
        ClientKey { key, fingerprint }
    }

    /// The key for russh's `authenticate_publickey`.
    pub fn private(&self) -> Arc<PrivateKey> {
        Arc::clone(&self.key)
    }

    pub fn is_rsa(&self) -> bool {
        self.key.algorithm().is_rsa()
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn algorithm(&self) -> String {
        self.key.algorithm().as_str().to_owned()
    }
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClientKey({} {})", self.algorithm(), self.fingerprint)
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.algorithm(), self.fingerprint)
    }
}

fn decode_text(text: &str, passphrase: Option<&str>) -> Result<PrivateKey, KeyError> {
    let trimmed = text.trim();
    if !trimmed.starts_with("-----BEGIN ") && !trimmed.starts_with("PuTTY-User-Key-File-") {
        return Err(KeyError::NotAKey {
            reason: "no -----BEGIN ... PRIVATE KEY----- header",
        });
    }
    let encrypted = trimmed.starts_with("-----BEGIN ENCRYPTED PRIVATE KEY-----")
        || trimmed.contains("Proc-Type: 4,ENCRYPTED");
    if encrypted && passphrase.is_none() {
        return Err(KeyError::NeedsPassphrase);
    }
    // The PEM text of an OpenSSH key does not say whether it is encrypted; russh reports it.
    russh::keys::decode_secret_key(trimmed, passphrase).map_err(|err| classify(err, passphrase))
}

fn decode_binary(bytes: &[u8], passphrase: Option<&str>) -> Result<PrivateKey, KeyError> {
    const OPENSSH_MAGIC: &[u8] = b"openssh-key-v1\0";
    let decoded = if bytes.starts_with(OPENSSH_MAGIC) {
        russh::keys::decode_openssh(bytes, passphrase)
    } else {
        russh::keys::pkcs8::decode_pkcs8(bytes, passphrase.map(str::as_bytes))
    };
    decoded.map_err(|err| classify(err, passphrase))
}

fn classify(err: russh::keys::Error, passphrase: Option<&str>) -> KeyError {
    match err {
        russh::keys::Error::KeyIsEncrypted => KeyError::NeedsPassphrase,
        russh::keys::Error::UnsupportedKeyType {
            key_type_string, ..
        } => KeyError::Unsupported {
            key_type: shown_key_type(&key_type_string),
        },
        // Decryption failures surface as assorted crypto/padding errors; with a passphrase
        // present the likely cause is the passphrase, and the message says so.
        other if passphrase.is_some() => KeyError::WrongPassphrase {
            reason: decoder_problem(&other),
        },
        other => KeyError::NotAKey {
            reason: decoder_problem(&other),
        },
    }
}

/// What the decoder refused, in fixed words. The decoders' own messages may quote the input
/// (ssh-key's PPK parser quotes the header it read), and the input is key text.
fn decoder_problem(err: &russh::keys::Error) -> &'static str {
    use russh::keys::Error;
    match err {
        Error::CouldNotReadKey => "the key cannot be read",
        Error::KeyIsCorrupt => "the key is corrupt",
        Error::Ed25519KeyError(_) => "invalid Ed25519 key data",
        Error::EcdsaKeyError(_) => "invalid ECDSA key data",
        Error::Rsa(_) => "invalid RSA key data",
        Error::Decode(_) => "its base64 does not decode",
        Error::Pad(_) | Error::Unpad(_) => "the decrypted padding is wrong",
        Error::UnknownAlgorithm(_) => "unknown key algorithm",
        _ => "the key decoder refused it",
    }
}

/// A key type name from the key's own data, shown only when it is a short plain token.
fn shown_key_type(name: &str) -> String {
    let plain = name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'@' | b'_'));
    if plain {
        name.to_owned()
    } else {
        "(a name that is not shown)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::SecretString;

    fn material(text: &str, passphrase: Option<&str>) -> KeyMaterial {
        KeyMaterial {
            private_key: PrivateKeyBytes::Text(SecretString::from(text.to_owned())),
            passphrase: passphrase.map(|p| SecretString::from(p.to_owned())),
            known_hosts: None,
        }
    }

    /// Generates a key with ssh-keygen, the way operators and the original sample make them.
    fn keygen(kind: &str, format: Option<&str>, passphrase: &str) -> (String, String) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let mut cmd = std::process::Command::new("ssh-keygen");
        cmd.args(["-q", "-t", kind, "-N", passphrase, "-C", "t", "-f"])
            .arg(&path);
        if let Some(format) = format {
            cmd.args(["-m", format]);
        }
        assert!(cmd
            .status()
            .expect("ssh-keygen (openssh-client) must be installed")
            .success());
        let private = std::fs::read_to_string(&path).unwrap();
        let fingerprint = std::process::Command::new("ssh-keygen")
            .arg("-lf")
            .arg(path.with_extension("pub"))
            .output()
            .unwrap();
        let fingerprint = String::from_utf8(fingerprint.stdout).unwrap();
        (
            private,
            fingerprint.split_whitespace().nth(1).unwrap().to_owned(),
        )
    }

    #[test]
    fn decodes_every_supported_format_with_the_right_fingerprint() {
        let cases = [
            ("ed25519", None, ""),
            ("ecdsa", None, ""),
            ("rsa", None, ""),
            ("rsa", Some("PEM"), ""),
            ("rsa", Some("PKCS8"), ""),
            ("ecdsa", Some("PKCS8"), ""),
            ("ed25519", None, "pass phrase"),
            ("rsa", None, "pass phrase"),
        ];
        for (kind, format, passphrase) in cases {
            let (private, expected) = keygen(kind, format, passphrase);
            let pass = (!passphrase.is_empty()).then_some(passphrase);
            let key = ClientKey::decode(&material(&private, pass))
                .unwrap_or_else(|e| panic!("{kind} {format:?}: {e}"));
            assert_eq!(key.fingerprint(), expected, "{kind} {format:?}");
            assert_eq!(key.is_rsa(), kind == "rsa");
        }
    }

    #[test]
    fn pkcs1_pem_header_is_what_the_sample_writes() {
        let (private, _) = keygen("rsa", Some("PEM"), "");
        assert!(private.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
        ClientKey::decode(&material(&private, None)).unwrap();
    }

    #[test]
    fn bad_keys_give_typed_errors() {
        let (encrypted, _) = keygen("ed25519", None, "secret");
        assert_eq!(
            ClientKey::decode(&material(&encrypted, None)).unwrap_err(),
            KeyError::NeedsPassphrase
        );
        assert!(matches!(
            ClientKey::decode(&material(&encrypted, Some("wrong"))).unwrap_err(),
            KeyError::WrongPassphrase { .. }
        ));
        assert!(matches!(
            ClientKey::decode(&material("hello world", None)).unwrap_err(),
            KeyError::NotAKey { .. }
        ));
        assert!(matches!(
            ClientKey::decode(&material(
                "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----",
                None
            ))
            .unwrap_err(),
            KeyError::NotAKey { .. }
        ));
    }

    #[test]
    fn debug_shows_only_public_fingerprint() {
        let (private, fingerprint) = keygen("ed25519", None, "");
        let key = ClientKey::decode(&material(&private, None)).unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, format!("ClientKey(ssh-ed25519 {fingerprint})"));
    }

    /// The kernel's `Locked:` figure (kB) for the mapping of this process that holds `address`,
    /// read from /proc/self/smaps.
    fn locked_kib_at(address: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").expect("smaps");
        let mut inside = false;
        for line in smaps.lines() {
            if let Some((range, _)) = line.split_once(' ') {
                if let Some((start, end)) = range.split_once('-') {
                    if let (Ok(start), Ok(end)) = (
                        usize::from_str_radix(start, 16),
                        usize::from_str_radix(end, 16),
                    ) {
                        inside = (start..end).contains(&address);
                        continue;
                    }
                }
            }
            if inside {
                if let Some(value) = line.strip_prefix("Locked:") {
                    return value.trim().trim_end_matches("kB").trim().parse().unwrap();
                }
            }
        }
        panic!("no mapping holds {address:#x}");
    }

    /// Regression (issue 9, item 8): a process that could not lock all of its memory (an
    /// unprivileged user under the default RLIMIT_MEMLOCK, as this test process is, since it
    /// never calls lock_down) locked nothing; the decoded key's pages are locked now. Checked
    /// by the kernel, at the key's own address.
    #[test]
    fn memory_is_never_locked_in_practice_for_a_user() {
        assert!(!hardening::all_memory_locked());
        for key_type in [
            crate::rotation::keygen::KeyType::Ed25519,
            crate::rotation::keygen::KeyType::Rsa2048,
        ] {
            let generated = crate::rotation::keygen::generate(key_type).unwrap();
            let material = KeyMaterial {
                private_key: PrivateKeyBytes::Text(generated.private_text),
                passphrase: None,
                known_hosts: None,
            };
            let key = ClientKey::decode(&material).unwrap();
            let address = Arc::as_ptr(&key.key) as usize;
            assert!(
                locked_kib_at(address) > 0,
                "{key_type}: key page not locked"
            );
            if let russh::keys::ssh_key::private::KeypairData::Rsa(pair) = key.key.key_data() {
                let d = pair.private().d().as_bytes().as_ptr() as usize;
                assert!(locked_kib_at(d) > 0, "{key_type}: d not locked");
            }
        }
    }
}
