//! Fetching the cluster key from AWS Secrets Manager and taking the key material out of the
//! secret's layout.
//!
//! Owns: the AWS client, the mapping of service errors to [`SecretError`], and the secret
//! layouts (JSON `SecretString` with `PrivateKey`/`Passphrase`/`PublicKey`/`KnownHosts`, a
//! `SecretString` that is the key itself, `SecretBinary`). Invariant: every byte of key material
//! it hands out is inside a `secrecy` wrapper; the owned `String`s the SDK returns are moved
//! into those wrappers, never cloned. Must not know: SSH, key formats beyond "looks like a
//! private key", or how the caller reports errors.

use std::fmt;

use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
use secrecy::{ExposeSecret, SecretBox, SecretString};

/// Which version of the secret to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VersionSelector {
    Stage(String),
    Id(String),
}

impl fmt::Display for VersionSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VersionSelector::Stage(stage) => write!(f, "stage {stage}"),
            VersionSelector::Id(id) => write!(f, "version {id}"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("secret {id}: ResourceNotFoundException: {message}: check the secret id, the {selector} and the region")]
    NotFound {
        id: String,
        selector: VersionSelector,
        message: String,
    },
    #[error("secret {id}: AccessDeniedException: {message}: check that the instance role's policy allows secretsmanager:GetSecretValue on it")]
    AccessDenied { id: String, message: String },
    #[error("secret {id}: {code}: {message}: check the AWS credentials (AWS_PROFILE, AWS_ACCESS_KEY_ID, the instance role) are valid and current")]
    BadCredentials {
        id: String,
        code: String,
        message: String,
    },
    #[error("secret {id}: {code}: {message}: check the secret id and the {selector}")]
    InvalidRequest {
        id: String,
        selector: VersionSelector,
        code: String,
        message: String,
    },
    #[error("secret {id}: DecryptionFailure: {message}: check the role may use the secret's KMS key (kms:Decrypt)")]
    Decryption { id: String, message: String },
    #[error("secret {id}: {code}: {message}: the service failed; retry later")]
    Service {
        id: String,
        code: String,
        message: String,
    },
    #[error("secret {id}: no AWS credentials: {reason}: set AWS_PROFILE or AWS_ACCESS_KEY_ID, or run on an instance with a role")]
    NoCredentials { id: String, reason: String },
    #[error("secret {id}: cannot reach Secrets Manager: {reason}: check the network, the region and AWS_ENDPOINT_URL")]
    Unreachable { id: String, reason: String },
    #[error("secret {id}: the response holds neither SecretString nor SecretBinary")]
    Empty { id: String },
    #[error("secret {id}: holds no key yet ({{}}): run the first rotation (smssh rotate --bootstrap-key) or store a key in field {field}")]
    NoKeyYet { id: String, field: String },
    #[error("secret {id}: JSON has no field {field} (fields: {available}): pass --secret-field with the field that holds the private key")]
    MissingField {
        id: String,
        field: String,
        available: String,
    },
    #[error("secret {id}: field {field} is not a string: store the private key as a JSON string")]
    FieldNotString { id: String, field: String },
    #[error("secret {id}: the value is not valid JSON ({reason}) and not a private key: store a PEM/OpenSSH private key or a JSON object with PrivateKey")]
    Malformed { id: String, reason: JsonProblem },
    #[error("secret {id}: --secret-field given but the secret is not JSON: store a JSON object, or leave out --secret-field for a bare key")]
    FieldOfNonJson { id: String },
}

/// What is wrong with a secret's JSON, in words that never quote the secret. serde_json's own
/// messages quote the offending value (`invalid type: string "-----BEGIN ..."`), and in a
/// secret that value is key text, so this is the only way a JSON error of a secret becomes
/// text: its category and position, nothing from the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{problem} at line {line} column {column}")]
pub struct JsonProblem {
    problem: &'static str,
    line: usize,
    column: usize,
}

impl JsonProblem {
    pub fn of(err: &serde_json::Error) -> JsonProblem {
        use serde_json::error::Category;
        JsonProblem {
            problem: match err.classify() {
                Category::Syntax => "a syntax error",
                Category::Data => "not a JSON object of strings",
                Category::Eof => "it ends early",
                Category::Io => "it cannot be read",
            },
            line: err.line(),
            column: err.column(),
        }
    }
}

/// A secret's JSON field names as they may be shown: a name that is not a short plain word
/// could be key text stored as a name by mistake, so it is counted rather than shown. Short
/// means under 24 characters: real field names are words (`PrivateKey`, `Passphrase`), and no
/// run of a key's base64 body long enough to matter fits.
pub fn shown_field_names(names: &[&str]) -> String {
    let plain = |name: &&str| {
        name.len() < 24
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
    };
    let mut shown: Vec<&str> = names.iter().copied().filter(plain).collect();
    shown.sort_unstable();
    let hidden = names.len() - shown.len();
    let mut text = shown.join(", ");
    if hidden > 0 {
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push_str(&format!("{hidden} other name(s) not shown"));
    }
    text
}

/// The raw value of one secret version. `Debug` shows only which kind it is.
pub enum SecretValue {
    String(SecretString),
    Binary(SecretBox<[u8]>),
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretValue::String(_) => f.write_str("SecretValue::String([REDACTED])"),
            SecretValue::Binary(_) => f.write_str("SecretValue::Binary([REDACTED])"),
        }
    }
}

/// One fetched version: its id (for messages and for knowing whether a re-fetch changed
/// anything) and its value.
#[derive(Debug)]
pub struct FetchedSecret {
    /// The secret's ARN as GetSecretValue returned it (for audit records).
    pub arn: Option<String>,
    pub version_id: Option<String>,
    pub value: SecretValue,
}

/// A Secrets Manager client built once per invocation from the default AWS chain.
#[derive(Clone, Debug)]
pub struct SecretsClient {
    client: aws_sdk_secretsmanager::Client,
    config: aws_config::SdkConfig,
}

impl SecretsClient {
    pub fn new(config: &aws_config::SdkConfig) -> SecretsClient {
        SecretsClient {
            client: aws_sdk_secretsmanager::Client::new(config),
            config: config.clone(),
        }
    }

    /// Reads one version with `GetSecretValue`.
    pub async fn fetch(
        &self,
        id: &str,
        selector: &VersionSelector,
    ) -> Result<FetchedSecret, SecretError> {
        let request = self.client.get_secret_value().secret_id(id);
        let request = match selector {
            VersionSelector::Stage(stage) => request.version_stage(stage),
            VersionSelector::Id(version) => request.version_id(version),
        };
        let output = match request.send().await {
            Ok(output) => output,
            Err(err) => return Err(map_sdk_error(&self.config, id, selector, err).await),
        };
        let version_id = output.version_id().map(str::to_owned);
        let arn = output.arn().map(str::to_owned);
        // `into_parts`-style moves: the SDK's owned String/Blob go straight into wrappers.
        let mut output = output;
        let value = if let Some(text) = output.secret_string.take() {
            SecretValue::String(SecretString::from(text))
        } else if let Some(blob) = output.secret_binary.take() {
            SecretValue::Binary(SecretBox::from(blob.into_inner().into_boxed_slice()))
        } else {
            return Err(SecretError::Empty { id: id.to_owned() });
        };
        Ok(FetchedSecret {
            arn,
            version_id,
            value,
        })
    }
}

async fn map_sdk_error(
    config: &aws_config::SdkConfig,
    id: &str,
    selector: &VersionSelector,
    err: SdkError<GetSecretValueError>,
) -> SecretError {
    let id = id.to_owned();
    let reason = crate::aws::describe_chain(&err);
    match err {
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            let (code, message) = crate::aws::code_and_message(
                status,
                service.raw().body().bytes(),
                service.err().code(),
                service.err().message(),
            );
            let err = service.into_err();
            match (&err, code.as_str()) {
                (GetSecretValueError::ResourceNotFoundException(_), _)
                | (_, "ResourceNotFoundException") => SecretError::NotFound {
                    id,
                    selector: selector.clone(),
                    message,
                },
                (GetSecretValueError::DecryptionFailure(_), _) => {
                    SecretError::Decryption { id, message }
                }
                (GetSecretValueError::InvalidParameterException(_), _)
                | (GetSecretValueError::InvalidRequestException(_), _)
                | (_, "ValidationException") => SecretError::InvalidRequest {
                    id,
                    selector: selector.clone(),
                    code,
                    message,
                },
                (_, "AccessDeniedException") | (_, "AccessDenied") => {
                    SecretError::AccessDenied { id, message }
                }
                (_, "UnrecognizedClientException")
                | (_, "InvalidClientTokenId")
                | (_, "InvalidSignatureException")
                | (_, "SignatureDoesNotMatch")
                | (_, "ExpiredTokenException")
                | (_, "ExpiredToken") => SecretError::BadCredentials { id, code, message },
                _ if status == 403 => SecretError::AccessDenied {
                    id,
                    message: format!("{code}: {message}"),
                },
                _ => SecretError::Service { id, code, message },
            }
        }
        // A failure before anything was sent: credentials, region or endpoint configuration.
        SdkError::ConstructionFailure(_) => local_failure(config, id, reason).await,
        SdkError::DispatchFailure(failure) if failure.is_user() || failure.is_other() => {
            local_failure(config, id, reason).await
        }
        // Dispatch, timeout and response failures, and kinds this SDK version does not have
        // yet (SdkError is non-exhaustive), are all a call that never got a service answer.
        _ => SecretError::Unreachable { id, reason },
    }
}

/// Missing credentials, or else a missing region or endpoint, whose text is in the reason.
async fn local_failure(config: &aws_config::SdkConfig, id: String, reason: String) -> SecretError {
    match crate::aws::missing_credentials(config, &reason).await {
        Some(reason) => SecretError::NoCredentials { id, reason },
        None => SecretError::Unreachable { id, reason },
    }
}

/// The key material taken out of a secret: the private key text or bytes, and the optional
/// companions the rotation writes next to it.
pub struct KeyMaterial {
    pub private_key: PrivateKeyBytes,
    pub passphrase: Option<SecretString>,
    /// Extra known_hosts lines recorded by the rotation (`KnownHosts` field). Public data.
    pub known_hosts: Option<String>,
}

/// A private key as stored: PEM/OpenSSH text, or binary DER / openssh-key-v1 bytes.
pub enum PrivateKeyBytes {
    Text(SecretString),
    Binary(SecretBox<[u8]>),
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyMaterial")
            .field("private_key", &"[REDACTED]")
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "known_hosts",
                &self.known_hosts.as_ref().map(|k| k.lines().count()),
            )
            .finish()
    }
}

pub const DEFAULT_FIELD: &str = "PrivateKey";

/// Takes the key material out of a secret value, following the layouts in the module doc.
/// `field` is the JSON field holding the private key (`PrivateKey` when None).
pub fn extract_key_material(
    id: &str,
    value: &SecretValue,
    field: Option<&str>,
) -> Result<KeyMaterial, SecretError> {
    match value {
        SecretValue::String(text) => extract_from_text(id, text.expose_secret(), field),
        SecretValue::Binary(bytes) => match std::str::from_utf8(bytes.expose_secret()) {
            Ok(text) if looks_textual(text) => extract_from_text(id, text, field),
            _ => Ok(KeyMaterial {
                private_key: PrivateKeyBytes::Binary(SecretBox::from(
                    bytes.expose_secret().to_vec().into_boxed_slice(),
                )),
                passphrase: None,
                known_hosts: None,
            }),
        },
    }
}

fn looks_textual(text: &str) -> bool {
    let trimmed = text.trim_start();
    trimmed.starts_with('{') || trimmed.starts_with("-----BEGIN") || trimmed.starts_with("PuTTY")
}

fn extract_from_text(
    id: &str,
    text: &str,
    field: Option<&str>,
) -> Result<KeyMaterial, SecretError> {
    let trimmed = text.trim_start();
    if !trimmed.starts_with('{') {
        if field.is_some_and(|f| f != DEFAULT_FIELD) {
            return Err(SecretError::FieldOfNonJson { id: id.to_owned() });
        }
        return Ok(KeyMaterial {
            private_key: PrivateKeyBytes::Text(SecretString::from(text.to_owned())),
            passphrase: None,
            known_hosts: None,
        });
    }
    let field = field.unwrap_or(DEFAULT_FIELD);
    // The parsed tree holds key text; its strings are moved out below and the rest is freed
    // through the zeroizing allocator.
    let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|err| SecretError::Malformed {
            id: id.to_owned(),
            reason: JsonProblem::of(&err),
        })?;
    if object.is_empty() {
        return Err(SecretError::NoKeyYet {
            id: id.to_owned(),
            field: field.to_owned(),
        });
    }
    let private_key = match object.remove(field) {
        Some(serde_json::Value::String(key)) => SecretString::from(key),
        Some(_) => {
            return Err(SecretError::FieldNotString {
                id: id.to_owned(),
                field: field.to_owned(),
            })
        }
        None => {
            let names: Vec<&str> = object.keys().map(String::as_str).collect();
            return Err(SecretError::MissingField {
                id: id.to_owned(),
                field: field.to_owned(),
                available: shown_field_names(&names),
            });
        }
    };
    let passphrase = match object.remove("Passphrase") {
        Some(serde_json::Value::String(p)) if !p.is_empty() => Some(SecretString::from(p)),
        _ => None,
    };
    let known_hosts = match object.remove("KnownHosts") {
        Some(serde_json::Value::String(lines)) => Some(lines),
        _ => None,
    };
    Ok(KeyMaterial {
        private_key: PrivateKeyBytes::Text(private_key),
        passphrase,
        known_hosts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(s: &str) -> SecretValue {
        SecretValue::String(SecretString::from(s.to_owned()))
    }

    fn key_text(material: &KeyMaterial) -> String {
        match &material.private_key {
            PrivateKeyBytes::Text(t) => t.expose_secret().to_owned(),
            PrivateKeyBytes::Binary(_) => panic!("expected text"),
        }
    }

    /// No error built from a malformed secret may carry its text: a canary key in every shape
    /// that reaches an error path never shows in the error's Display or Debug.
    #[test]
    fn a_canary_key_never_shows_in_an_error() {
        let body = "b3BlbnNzaC1rZXktdjEAAAAACANARYCANARYCANARY";
        let pem = format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----\n"
        );
        let quoted = serde_json::to_string(&pem).unwrap();
        let shapes = [
            format!("{{\"PrivateKey\": {quoted}"),
            format!("{{\"PrivateKey\": [{quoted}]}}"),
            format!("{{\"PrivateKey\": {{\"nested\": {quoted}}}}}"),
            format!("{{{quoted}: \"x\"}}"),
            format!("{{\"Other\": {quoted}}}"),
            format!("{{\"PrivateKey\": {quoted}, {quoted}}}"),
            format!("{{ {}", pem.repeat(3)),
        ];
        for shape in shapes {
            for field in [None, Some("Key")] {
                if let Err(err) = extract_key_material("/dev/ssh", &text(&shape), field) {
                    let shown = format!("{err} {err:?}");
                    assert!(!shown.contains("CANARY"), "{shown}");
                }
            }
        }
    }

    #[test]
    fn field_names_that_are_not_plain_words_are_counted_not_shown() {
        assert_eq!(
            shown_field_names(&["b", "a", "-----BEGIN KEY-----\nAAAA"]),
            "a, b, 1 other name(s) not shown"
        );
        assert_eq!(shown_field_names(&["x y"]), "1 other name(s) not shown");
        // Found by the `secret` fuzz target: a plain-looking name can be a slice of key text.
        assert_eq!(
            shown_field_names(&["PasZXkjEAAAAABG5vbrUEAAAEINsphrare", "PrivateKey"]),
            "PrivateKey, 1 other name(s) not shown"
        );
        assert_eq!(shown_field_names(&[]), "");
    }

    #[test]
    fn layouts() {
        let pem = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----\n";
        let json =
            serde_json::json!({"PrivateKey": pem, "PublicKey": "ssh-ed25519 AAAA x"}).to_string();
        let with_pass = serde_json::json!({"PrivateKey": pem, "Passphrase": "pw", "KnownHosts": "h ssh-ed25519 AAAA"}).to_string();
        let custom = serde_json::json!({"Key": pem}).to_string();
        // (value, field, expected key text, has passphrase, has known_hosts)
        let cases: Vec<(String, Option<&str>, &str, bool, bool)> = vec![
            (json.clone(), None, pem, false, false),
            (with_pass, None, pem, true, true),
            (custom, Some("Key"), pem, false, false),
            (pem.to_owned(), None, pem, false, false),
            (format!("  {pem}"), None, "", false, false),
        ];
        for (value, field, expected, pass, kh) in cases {
            let material = extract_key_material("/dev/ssh", &text(&value), field).unwrap();
            if expected.is_empty() {
                assert!(key_text(&material).contains("BEGIN OPENSSH"));
            } else {
                assert_eq!(key_text(&material), expected, "{value}");
            }
            assert_eq!(material.passphrase.is_some(), pass, "{value}");
            assert_eq!(material.known_hosts.is_some(), kh, "{value}");
        }
    }

    #[test]
    fn layout_errors() {
        let cases: Vec<(&str, Option<&str>, &str)> = vec![
            ("{}", None, "holds no key yet"),
            (
                r#"{"PublicKey": "x", "Other": 1}"#,
                None,
                "no field PrivateKey (fields: Other, PublicKey)",
            ),
            (r#"{"PrivateKey": 5}"#, None, "is not a string"),
            ("{not json", None, "not valid JSON"),
            ("-----BEGIN X-----", Some("Key"), "not JSON"),
        ];
        for (value, field, expected) in cases {
            let err = extract_key_material("/dev/ssh", &text(value), field).unwrap_err();
            let message = err.to_string();
            assert!(message.starts_with("secret /dev/ssh: "), "{message}");
            assert!(message.contains(expected), "{value}: {message}");
        }
    }

    #[test]
    fn binary_pem_is_read_as_text_and_der_kept_binary() {
        let pem = b"-----BEGIN RSA PRIVATE KEY-----\nAA\n-----END RSA PRIVATE KEY-----\n";
        let material = extract_key_material(
            "s",
            &SecretValue::Binary(SecretBox::from(pem.to_vec().into_boxed_slice())),
            None,
        )
        .unwrap();
        assert!(matches!(material.private_key, PrivateKeyBytes::Text(_)));
        let der = vec![0x30u8, 0x82, 0x01, 0x00];
        let material = extract_key_material(
            "s",
            &SecretValue::Binary(SecretBox::from(der.into_boxed_slice())),
            None,
        )
        .unwrap();
        assert!(matches!(material.private_key, PrivateKeyBytes::Binary(_)));
    }

    #[test]
    fn debug_never_shows_key_material() {
        let value = text(r#"{"PrivateKey": "TOPSECRET", "Passphrase": "PASSWORD"}"#);
        let material = extract_key_material("s", &value, None).unwrap();
        let shown = format!("{value:?} {material:?}");
        assert!(
            !shown.contains("TOPSECRET") && !shown.contains("PASSWORD"),
            "{shown}"
        );
    }
}
