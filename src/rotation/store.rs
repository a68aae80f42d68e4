//! The Secrets Manager side of a rotation: describing the secret's versions, reading one
//! version's JSON document, writing the AWSPENDING version and moving staging labels.
//!
//! Owns: the calls a rotation makes (DescribeSecret, ListSecretVersionIds, GetSecretValue by
//! version, PutSecretValue, UpdateSecretVersionStage, TagResource) and the mapping of their
//! failures to [`StoreError`], and the [`PROMOTED_TAG`] that records when a version became
//! AWSCURRENT (Secrets Manager records only when a version was created). Invariant: the JSON documents it returns keep their private key inside a
//! `secrecy` wrapper; everything else in them is public (PublicKey, KeyType, KnownHosts).
//! Must not know: SSH, workers, or the order of the steps.

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use crate::aws::secret::{shown_field_names, JsonProblem};
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use secrecy::{ExposeSecret, SecretString};

pub const AWSCURRENT: &str = "AWSCURRENT";
pub const AWSPENDING: &str = "AWSPENDING";
pub const AWSPREVIOUS: &str = "AWSPREVIOUS";

/// JSON fields a rotation writes.
pub const FIELD_PRIVATE_KEY: &str = "PrivateKey";
pub const FIELD_PASSPHRASE: &str = "Passphrase";
pub const FIELD_PUBLIC_KEY: &str = "PublicKey";
pub const FIELD_KEY_TYPE: &str = "KeyType";
pub const FIELD_FINGERPRINT: &str = "Fingerprint";
pub const FIELD_KNOWN_HOSTS: &str = "KnownHosts";

/// The secret's tag recording the last promotion made by smssh: `<version id> <Unix seconds>`.
pub const PROMOTED_TAG: &str = "smssh:promoted";

/// A version and the moment it was made AWSCURRENT, read from [`PROMOTED_TAG`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub version_id: String,
    pub at: SystemTime,
}

impl Promotion {
    /// Reads the tag's value; anything but `<version id> <seconds>` is ignored, as a tag that
    /// anyone allowed to tag the secret may have written.
    fn parse(value: &str) -> Option<Promotion> {
        let (version_id, seconds) = value.split_once(' ')?;
        crate::rotation::block::validate_version_id(version_id).ok()?;
        if seconds.is_empty() || !seconds.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let at = SystemTime::UNIX_EPOCH
            .checked_add(std::time::Duration::from_secs(seconds.parse().ok()?))?;
        Some(Promotion {
            version_id: version_id.to_owned(),
            at,
        })
    }

    fn value(version_id: &str, at: SystemTime) -> String {
        let seconds = at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        format!("{version_id} {seconds}")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("secret {id}: {operation}: ResourceNotFoundException: {message}: check the secret id and the region")]
    NotFound {
        id: String,
        operation: &'static str,
        message: String,
    },
    #[error("secret {id}: {operation}: AccessDeniedException: {message}: allow secretsmanager:{operation} on this secret in the role's policy")]
    AccessDenied {
        id: String,
        operation: &'static str,
        message: String,
    },
    #[error("secret {id}: {operation}: {code}: {message}: check the AWS credentials are valid and current")]
    BadCredentials {
        id: String,
        operation: &'static str,
        code: String,
        message: String,
    },
    #[error("secret {id}: {operation}: {code}: {message}")]
    Rejected {
        id: String,
        operation: &'static str,
        code: String,
        message: String,
    },
    #[error("secret {id}: {operation}: cannot reach Secrets Manager: {reason}: check the network, the region and AWS_ENDPOINT_URL")]
    Unreachable {
        id: String,
        operation: &'static str,
        reason: String,
    },
    #[error("secret {id}: version {version} is not valid JSON ({reason}): a rotated secret holds a JSON object; store {{}} to start over")]
    NotJson {
        id: String,
        version: String,
        reason: JsonProblem,
    },
    #[error("secret {id}: version {version} has field {field} that is not a string: fix the secret's JSON")]
    FieldNotString {
        id: String,
        version: String,
        field: &'static str,
    },
}

/// A secret's identity and the staging labels of its versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Description {
    pub arn: String,
    pub name: String,
    pub rotation_enabled: bool,
    /// Version id → staging labels.
    pub stages: BTreeMap<String, Vec<String>>,
    /// The last promotion smssh recorded, if the tag is there and well formed.
    pub promoted: Option<Promotion>,
}

impl Description {
    /// The version holding `stage`, if any.
    pub fn version_with(&self, stage: &str) -> Option<&str> {
        self.stages
            .iter()
            .find(|(_, labels)| labels.iter().any(|l| l == stage))
            .map(|(id, _)| id.as_str())
    }

    pub fn has_stage(&self, version: &str, stage: &str) -> bool {
        self.stages
            .get(version)
            .is_some_and(|labels| labels.iter().any(|l| l == stage))
    }
}

/// One version's JSON object. The private key is moved into a `SecretString` on parse, so the
/// map holds public fields only.
pub struct Document {
    pub version_id: String,
    pub private_key: Option<SecretString>,
    pub passphrase: Option<SecretString>,
    pub fields: serde_json::Map<String, serde_json::Value>,
}

impl fmt::Debug for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Document")
            .field("version_id", &self.version_id)
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "[REDACTED]"),
            )
            .field(
                "fields",
                &shown_field_names(&self.fields.keys().map(String::as_str).collect::<Vec<_>>()),
            )
            .finish()
    }
}

impl Document {
    /// A string field other than the private key.
    pub fn text(&self, field: &'static str) -> Option<&str> {
        self.fields.get(field).and_then(serde_json::Value::as_str)
    }

    fn parse(id: &str, version_id: String, text: &str) -> Result<Document, StoreError> {
        let trimmed = text.trim();
        let mut fields: serde_json::Map<String, serde_json::Value> = if trimmed.is_empty() {
            serde_json::Map::new()
        } else if trimmed.starts_with("-----BEGIN") {
            // A secret that holds a bare key (the layout smscp also reads) is treated as
            // {"PrivateKey": ...}, so that its first rotation keeps working.
            let mut map = serde_json::Map::new();
            map.insert(
                FIELD_PRIVATE_KEY.to_owned(),
                serde_json::Value::String(trimmed.to_owned()),
            );
            map
        } else {
            serde_json::from_str(trimmed).map_err(|err| StoreError::NotJson {
                id: id.to_owned(),
                version: version_id.clone(),
                reason: JsonProblem::of(&err),
            })?
        };
        let mut take_secret = |field: &'static str| match fields.remove(field) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(text)) => Ok(Some(SecretString::from(text))),
            Some(_) => Err(StoreError::FieldNotString {
                id: id.to_owned(),
                version: version_id.clone(),
                field,
            }),
        };
        let private_key = take_secret(FIELD_PRIVATE_KEY)?;
        let passphrase = take_secret(FIELD_PASSPHRASE)?;
        for field in [FIELD_PUBLIC_KEY, FIELD_KNOWN_HOSTS, FIELD_KEY_TYPE] {
            if fields.get(field).is_some_and(|v| !v.is_string()) {
                return Err(StoreError::FieldNotString {
                    id: id.to_owned(),
                    version: version_id,
                    field,
                });
            }
        }
        Ok(Document {
            version_id,
            private_key,
            passphrase,
            fields,
        })
    }

    /// The JSON text to store, private key included. The caller passes it straight to
    /// PutSecretValue inside a `SecretString`.
    pub fn to_secret_string(&self) -> SecretString {
        let mut object = self.fields.clone();
        for (field, value) in [
            (FIELD_PRIVATE_KEY, &self.private_key),
            (FIELD_PASSPHRASE, &self.passphrase),
        ] {
            if let Some(value) = value {
                object.insert(
                    field.to_owned(),
                    serde_json::Value::String(value.expose_secret().to_owned()),
                );
            }
        }
        SecretString::from(serde_json::Value::Object(object).to_string())
    }
}

/// Secrets Manager calls for one secret.
#[derive(Debug, Clone)]
pub struct Store {
    client: aws_sdk_secretsmanager::Client,
    id: String,
}

impl Store {
    pub fn new(config: &aws_config::SdkConfig, id: &str) -> Store {
        Store {
            client: aws_sdk_secretsmanager::Client::new(config),
            id: id.to_owned(),
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub async fn describe(&self) -> Result<Description, StoreError> {
        let output = self
            .client
            .describe_secret()
            .secret_id(&self.id)
            .send()
            .await
            .map_err(|err| self.map_error("DescribeSecret", err))?;
        let stages = output
            .version_ids_to_stages()
            .map(|map| {
                map.iter()
                    .map(|(id, labels)| (id.clone(), labels.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let promoted = output
            .tags()
            .iter()
            .find(|tag| tag.key() == Some(PROMOTED_TAG))
            .and_then(|tag| tag.value())
            .and_then(Promotion::parse);
        Ok(Description {
            arn: output.arn().unwrap_or(&self.id).to_owned(),
            name: output.name().unwrap_or(&self.id).to_owned(),
            rotation_enabled: output.rotation_enabled().unwrap_or(false),
            stages,
            promoted,
        })
    }

    /// Every version Secrets Manager still lists, deprecated ones (without a label) included,
    /// with its creation date when known.
    pub async fn listed_versions(
        &self,
    ) -> Result<BTreeMap<String, Option<SystemTime>>, StoreError> {
        let mut versions = BTreeMap::new();
        let mut pages = self
            .client
            .list_secret_version_ids()
            .secret_id(&self.id)
            .include_deprecated(true)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|err| self.map_error("ListSecretVersionIds", err))?;
            for version in page.versions() {
                if let Some(id) = version.version_id() {
                    let created = version
                        .created_date()
                        .and_then(|date| SystemTime::try_from(*date).ok());
                    versions.insert(id.to_owned(), created);
                }
            }
        }
        Ok(versions)
    }

    /// Records that `version_id` becomes AWSCURRENT at `at` (the secret's [`PROMOTED_TAG`]).
    pub async fn mark_promoted(&self, version_id: &str, at: SystemTime) -> Result<(), StoreError> {
        let tag = aws_sdk_secretsmanager::types::Tag::builder()
            .key(PROMOTED_TAG)
            .value(Promotion::value(version_id, at))
            .build();
        self.client
            .tag_resource()
            .secret_id(&self.id)
            .tags(tag)
            .send()
            .await
            .map_err(|err| self.map_error("TagResource", err))?;
        Ok(())
    }

    /// Reads one version by id. `Ok(None)` when the version has no value (Secrets Manager
    /// lists the token of a rotation before createSecret stored anything).
    pub async fn document(&self, version_id: &str) -> Result<Option<Document>, StoreError> {
        let result = self
            .client
            .get_secret_value()
            .secret_id(&self.id)
            .version_id(version_id)
            .send()
            .await;
        let mut output = match result {
            Ok(output) => output,
            Err(err) => {
                let mapped = self.map_error("GetSecretValue", err);
                return match mapped {
                    StoreError::NotFound { .. } => Ok(None),
                    other => Err(other),
                };
            }
        };
        let text = match (output.secret_string.take(), output.secret_binary.take()) {
            (Some(text), _) => SecretString::from(text),
            (None, Some(blob)) => {
                SecretString::from(String::from_utf8_lossy(&blob.into_inner()).into_owned())
            }
            (None, None) => return Ok(None),
        };
        Document::parse(&self.id, version_id.to_owned(), text.expose_secret()).map(Some)
    }

    /// Stores `document` as version `token` labelled `stage` (AWSPENDING for a rotation;
    /// AWSCURRENT for a version that only adds host keys, when Secrets Manager moves
    /// AWSPREVIOUS itself). Idempotent for a token: Secrets Manager accepts the same token with
    /// the same value again.
    pub async fn put_version(
        &self,
        token: &str,
        document: &Document,
        stage: &str,
    ) -> Result<(), StoreError> {
        let text = document.to_secret_string();
        self.client
            .put_secret_value()
            .secret_id(&self.id)
            .client_request_token(token)
            .secret_string(text.expose_secret())
            .version_stages(stage)
            .send()
            .await
            .map_err(|err| self.map_error("PutSecretValue", err))?;
        Ok(())
    }

    /// Moves `stage` to `to`, taking it from `from` (required when another version holds it).
    pub async fn move_stage(
        &self,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<(), StoreError> {
        self.client
            .update_secret_version_stage()
            .secret_id(&self.id)
            .version_stage(stage)
            .set_move_to_version_id(to.map(str::to_owned))
            .set_remove_from_version_id(from.map(str::to_owned))
            .send()
            .await
            .map_err(|err| self.map_error("UpdateSecretVersionStage", err))?;
        Ok(())
    }

    fn map_error<E>(&self, operation: &'static str, err: SdkError<E>) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let id = self.id.clone();
        let reason = crate::aws::describe_chain(&err);
        match &err {
            SdkError::ServiceError(service) => {
                // An IAM refusal may come as an XML body the JSON protocol cannot parse (as
                // from moto's IAM layer), leaving the SDK without a code: the body and the
                // status still say what happened.
                let status = service.raw().status().as_u16();
                let (code, message) = crate::aws::code_and_message(
                    status,
                    service.raw().body().bytes(),
                    service.err().code(),
                    service.err().message(),
                );
                let code = match code.as_str() {
                    "AccessDeniedException" | "AccessDenied" => "AccessDeniedException".to_owned(),
                    _ if status == 403 && !is_credential_code(&code) => {
                        "AccessDeniedException".to_owned()
                    }
                    _ => code,
                };
                match code.as_str() {
                    "ResourceNotFoundException" => StoreError::NotFound {
                        id,
                        operation,
                        message,
                    },
                    "AccessDeniedException" => StoreError::AccessDenied {
                        id,
                        operation,
                        message,
                    },
                    _ if is_credential_code(&code) => StoreError::BadCredentials {
                        id,
                        operation,
                        code,
                        message,
                    },
                    _ => StoreError::Rejected {
                        id,
                        operation,
                        code,
                        message,
                    },
                }
            }
            _ => StoreError::Unreachable {
                id,
                operation,
                reason,
            },
        }
    }
}

/// Error codes that mean the credentials themselves are wrong, not that a policy refused.
fn is_credential_code(code: &str) -> bool {
    matches!(
        code,
        "UnrecognizedClientException"
            | "InvalidClientTokenId"
            | "InvalidSignatureException"
            | "SignatureDoesNotMatch"
            | "ExpiredTokenException"
            | "ExpiredToken"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_parse_from_every_stored_layout() {
        let cases: &[(&str, bool, usize)] = &[
            ("{}", false, 0),
            ("", false, 0),
            (
                "{\"PrivateKey\":\"-----BEGIN X-----\",\"PublicKey\":\"ssh-ed25519 AAAA\"}",
                true,
                1,
            ),
            (
                "-----BEGIN OPENSSH PRIVATE KEY-----\nabc\n-----END OPENSSH PRIVATE KEY-----\n",
                true,
                0,
            ),
            ("{\"PrivateKey\":null,\"Other\":1}", false, 1),
        ];
        for (text, has_key, fields) in cases {
            let doc = Document::parse("s", "v".to_owned(), text).unwrap();
            assert_eq!(doc.private_key.is_some(), *has_key, "{text}");
            assert_eq!(doc.fields.len(), *fields, "{text}");
            assert!(!format!("{doc:?}").contains("BEGIN"), "{text}");
        }
    }

    /// Regression (issue 9, item 1): a version whose value is a JSON string made serde_json's
    /// error quote the whole value, so `smssh rotate` printed the private key and the Lambda
    /// logged and returned it.
    #[test]
    fn private_key_printed_in_an_error_for_a_json_string_version() {
        let body = "b3BlbnNzaC1rZXktdjEAAAAACANARYCANARYCANARY";
        let pem = format!(
            "-----BEGIN OPENSSH PRIVATE KEY-----\n{body}\n-----END OPENSSH PRIVATE KEY-----\n"
        );
        let shapes = [
            serde_json::to_string(&pem).unwrap(),
            format!("[{}]", serde_json::to_string(&pem).unwrap()),
            format!("{{\"PrivateKey\": {}", serde_json::to_string(&pem).unwrap()),
            format!(
                "{{\"PrivateKey\": [{}]}}",
                serde_json::to_string(&pem).unwrap()
            ),
            format!(
                "{{\"PrivateKey\": {{\"nested\": {}}}}}",
                serde_json::to_string(&pem).unwrap()
            ),
            format!("{{{}: 1}}", serde_json::to_string(&pem).unwrap()),
            format!("x{pem}"),
        ];
        for shape in shapes {
            let shown = match Document::parse("s", "v".to_owned(), &shape) {
                Ok(doc) => format!("{doc:?}"),
                Err(err) => format!("{err} {err:?}"),
            };
            assert!(!shown.contains(body), "{shown}");
            assert!(!shown.contains("CANARY"), "{shown}");
        }
    }

    #[test]
    fn malformed_documents_are_refused_with_the_field() {
        let err = Document::parse("s", "v".to_owned(), "{\"PrivateKey\":3}").unwrap_err();
        assert!(err.to_string().contains("PrivateKey"), "{err}");
        let err = Document::parse("s", "v".to_owned(), "{\"KnownHosts\":[1]}").unwrap_err();
        assert!(err.to_string().contains("KnownHosts"), "{err}");
        let err = Document::parse("s", "v".to_owned(), "not json").unwrap_err();
        assert!(matches!(err, StoreError::NotJson { .. }), "{err}");
    }

    #[test]
    fn documents_round_trip_keeping_other_fields() {
        let doc = Document::parse(
            "s",
            "v".to_owned(),
            "{\"PrivateKey\":\"k\",\"Passphrase\":\"p\",\"Team\":\"hpc\"}",
        )
        .unwrap();
        let text = doc.to_secret_string();
        let value: serde_json::Value = serde_json::from_str(text.expose_secret()).unwrap();
        assert_eq!(value["PrivateKey"], "k");
        assert_eq!(value["Team"], "hpc");
        assert_eq!(value["Passphrase"], "p");
        assert!(!format!("{doc:?}").contains("\"p\""));
    }

    #[test]
    fn promotion_tags_are_read_strictly() {
        let cases: &[(&str, Option<(&str, u64)>)] = &[
            ("v1 1700000000", Some(("v1", 1_700_000_000))),
            (
                "0badc0de-0000-4000-8000-00000000cafe 0",
                Some(("0badc0de-0000-4000-8000-00000000cafe", 0)),
            ),
            ("v1", None),
            ("v1 ", None),
            ("v1 -5", None),
            ("v1 12x", None),
            ("v;1 5", None),
            ("v1  5", None),
            ("v1 99999999999999999999999", None),
        ];
        for (value, expected) in cases {
            let got = Promotion::parse(value).map(|p| {
                let seconds =
                    p.at.duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                (p.version_id, seconds)
            });
            assert_eq!(got, expected.map(|(v, s)| (v.to_owned(), s)), "{value:?}");
        }
        let at = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(42);
        assert_eq!(
            Promotion::parse(&Promotion::value("v2", at)).unwrap().at,
            at
        );
    }

    #[test]
    fn description_finds_stages() {
        let mut stages = BTreeMap::new();
        stages.insert("a".to_owned(), vec![AWSCURRENT.to_owned()]);
        stages.insert("b".to_owned(), vec![AWSPENDING.to_owned(), "X".to_owned()]);
        let description = Description {
            arn: "arn".into(),
            name: "n".into(),
            rotation_enabled: false,
            stages,
            promoted: None,
        };
        assert_eq!(description.version_with(AWSCURRENT), Some("a"));
        assert_eq!(description.version_with(AWSPENDING), Some("b"));
        assert_eq!(description.version_with(AWSPREVIOUS), None);
        assert!(description.has_stage("b", "X"));
        assert!(!description.has_stage("c", "X"));
    }
}
