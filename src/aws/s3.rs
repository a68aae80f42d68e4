//! S3 as the carrier of `smscp --via s3://BUCKET/PREFIX`: one upload per file, presigned GETs
//! for the workers, and the deletion afterwards.
//!
//! Owns: the `s3://` location syntax, the upload (one PutObject, or a multipart upload with a
//! few parts in flight for a file larger than one part, aborted on any failure or Ctrl-C),
//! SSE-KMS, the SHA-256 of exactly the bytes uploaded (computed as they are read), presigning
//! and deletion, and the typed errors of each. Invariants: memory is bounded by the parts in
//! flight whatever the file's size; a presigned URL is a bearer credential, so it exists only
//! as a `SecretString` and no error or log line is ever built from it. Must not know: SSH,
//! workers, or how the URL reaches them.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aws_sdk_s3::config::RequestChecksumCalculation;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use futures::stream::{FuturesUnordered, StreamExt};
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

/// The size of one part of a multipart upload, unless the file needs larger parts to fit in
/// S3's 10,000. Files up to this size go up in one PutObject.
pub const PART_SIZE: u64 = 8 * 1024 * 1024;
/// S3's most parts per multipart upload.
const MAX_PARTS: u64 = 10_000;
/// S3's largest object (5 TiB).
const MAX_OBJECT: u64 = 5 * 1024 * 1024 * 1024 * 1024;
/// Bytes of parts read and not yet acknowledged by S3, at most: enough to keep a fast link
/// busy with a few requests at once, and the bound of this module's memory.
const IN_FLIGHT_BYTES: u64 = 64 * 1024 * 1024;
/// Parts in flight at most, whatever their size.
const MAX_PARTS_IN_FLIGHT: u64 = 4;

/// `s3://BUCKET/PREFIX`, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Prefix {
    pub bucket: String,
    /// The key prefix without leading or trailing slashes; may be empty.
    pub prefix: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum S3UrlError {
    #[error("{0:?}: not an S3 location: write s3://BUCKET or s3://BUCKET/PREFIX")]
    NotS3(String),
    #[error("{0:?}: not an S3 bucket name (3 to 63 lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit)")]
    Bucket(String),
    #[error("the key prefix is {0} bytes long: S3 keys hold at most 1024, and smscp adds a run id and a file number")]
    PrefixTooLong(usize),
    #[error("the key prefix holds a control character: write it without one")]
    PrefixControl,
}

/// The longest prefix accepted: S3's 1024-byte key limit less what [`S3Prefix::key`] adds.
const MAX_PREFIX: usize = 900;

impl S3Prefix {
    pub fn parse(text: &str) -> Result<S3Prefix, S3UrlError> {
        let rest = text
            .strip_prefix("s3://")
            .ok_or_else(|| S3UrlError::NotS3(text.to_owned()))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let edge_ok =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
            && edge_ok(bucket.chars().next())
            && edge_ok(bucket.chars().last())
            && !bucket.contains("..");
        if !valid_bucket {
            return Err(S3UrlError::Bucket(bucket.to_owned()));
        }
        let prefix = prefix.trim_matches('/');
        if prefix.len() > MAX_PREFIX {
            return Err(S3UrlError::PrefixTooLong(prefix.len()));
        }
        if prefix.chars().any(char::is_control) {
            return Err(S3UrlError::PrefixControl);
        }
        Ok(S3Prefix {
            bucket: bucket.to_owned(),
            prefix: prefix.to_owned(),
        })
    }

    /// The key of file number `index` of run `run`: `PREFIX/smscp-RUN/INDEX`. A run's objects
    /// share one folder, so that an operator can find (and a lifecycle rule can expire) what an
    /// interrupted run left.
    pub fn key(&self, run: &str, index: usize) -> String {
        if self.prefix.is_empty() {
            format!("smscp-{run}/{index}")
        } else {
            format!("{}/smscp-{run}/{index}", self.prefix)
        }
    }

    /// `s3://BUCKET/KEY`, for messages.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }
}

/// What was uploaded: its size and the SHA-256 of exactly those bytes, in lowercase hex (as
/// sha256sum prints it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uploaded {
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    #[error("{path}: {reason}")]
    Read { path: PathBuf, reason: String },
    #[error("{path}: the file ended after {read} of its {size} bytes while it was being uploaded: copy it again once it is complete")]
    Shrank { path: PathBuf, read: u64, size: u64 },
    #[error(
        "{path}: {size} bytes is more than S3's largest object (5 TiB): copy it with --via direct"
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{object}: {operation} refused: {code}: {message}: {hint}")]
    Service {
        operation: &'static str,
        object: String,
        code: String,
        message: String,
        hint: &'static str,
    },
    #[error("{object}: {operation} got no answer from S3: {reason}: check the network path, the region and AWS_ENDPOINT_URL")]
    Unreachable {
        operation: &'static str,
        object: String,
        reason: String,
    },
    #[error("{object}: {operation}: no AWS credentials: {reason}: configure credentials as for the AWS CLI (an instance role, AWS_PROFILE or the environment)")]
    NoCredentials {
        operation: &'static str,
        object: String,
        reason: String,
    },
    #[error("{object}: cannot presign a download: {reason}")]
    Presign { object: String, reason: String },
    #[error("{object}: the upload was interrupted")]
    Interrupted { object: String },
}

/// What to do about a refusal, by the action the call needs.
fn hint(operation: &'static str, code: &str) -> &'static str {
    match (code, operation) {
        ("NoSuchBucket", _) => "create the bucket or name another one in --via",
        ("AccessDenied" | "AllAccessDisabled", "PutObject" | "CreateMultipartUpload" | "UploadPart" | "CompleteMultipartUpload") => {
            "the credentials need s3:PutObject on the prefix (and kms:GenerateDataKey on the key with --sse-kms-key-id)"
        }
        ("AccessDenied", "DeleteObject") => "the credentials need s3:DeleteObject on the prefix; delete the object yourself",
        ("AccessDenied", "AbortMultipartUpload") => "the credentials need s3:AbortMultipartUpload on the prefix; abort the upload yourself or set a lifecycle rule",
        ("KMS.NotFoundException" | "KMS.DisabledException" | "KMS.AccessDeniedException" | "InvalidArgument", _) => {
            "check the KMS key given by --sse-kms-key-id and the kms:GenerateDataKey permission"
        }
        _ => "check the bucket, its policy and the credentials' IAM policy",
    }
}

/// One bucket, with a client configured from the invocation's shared AWS configuration.
pub struct Bucket {
    client: aws_sdk_s3::Client,
    config: aws_config::SdkConfig,
    location: S3Prefix,
}

impl Bucket {
    pub fn new(config: &aws_config::SdkConfig, location: S3Prefix) -> Bucket {
        let endpoint_set = config.endpoint_url().is_some()
            || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some_and(|v| !v.is_empty());
        // Path-style addressing when an endpoint URL is set: a local S3 (moto, MinIO) serves
        // buckets under its own host name, and a bucket name with dots would not match a TLS
        // certificate as a virtual host anyway. AWS itself keeps its default virtual hosts.
        // Checksums only where S3 requires them: every worker verifies the SHA-256 of the
        // whole file, which also covers the upload, and the SDK's default CRC trailers are not
        // understood by every S3 implementation.
        let s3_config = aws_sdk_s3::config::Builder::from(config)
            .force_path_style(endpoint_set)
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .build();
        Bucket {
            client: aws_sdk_s3::Client::from_conf(s3_config),
            config: config.clone(),
            location,
        }
    }

    pub fn location(&self) -> &S3Prefix {
        &self.location
    }

    /// Uploads the file at `path` as `key` (SSE-KMS with `kms_key` when given) and returns its
    /// size and SHA-256. A multipart upload that fails or is interrupted (Ctrl-C) is aborted,
    /// so S3 keeps no parts of it.
    pub async fn upload(
        &self,
        key: &str,
        path: &Path,
        kms_key: Option<&str>,
    ) -> Result<Uploaded, S3Error> {
        let read_error = |err: std::io::Error| S3Error::Read {
            path: path.to_owned(),
            reason: crate::ssh::transfer::io_reason(&err),
        };
        let mut file = tokio::fs::File::open(path).await.map_err(read_error)?;
        let size = file.metadata().await.map_err(read_error)?.len();
        if size > MAX_OBJECT {
            return Err(S3Error::TooLarge {
                path: path.to_owned(),
                size,
            });
        }
        if size > PART_SIZE {
            // Not dropped on Ctrl-C from here: it watches the stop request itself, so that
            // the multipart upload it created is always aborted.
            return self.put_parts(key, path, &mut file, size, kms_key).await;
        }
        let object = self.location.url(key);
        tokio::select! {
            result = self.put_whole(key, path, &mut file, size, kms_key) => result,
            () = crate::term::cancel::cancelled() => Err(S3Error::Interrupted { object }),
        }
    }

    async fn put_whole(
        &self,
        key: &str,
        path: &Path,
        file: &mut tokio::fs::File,
        size: u64,
        kms_key: Option<&str>,
    ) -> Result<Uploaded, S3Error> {
        let mut hasher = Sha256::new();
        let body = read_part(file, path, size, 0, size, &mut hasher).await?;
        let mut request = self
            .client
            .put_object()
            .bucket(&self.location.bucket)
            .key(key)
            .body(ByteStream::from(body));
        if let Some(kms_key) = kms_key {
            request = request
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(kms_key);
        }
        let answer = request.send().await;
        self.sent("PutObject", key, answer).await?;
        Ok(Uploaded {
            size,
            sha256: hex(&hasher.finalize()),
        })
    }

    async fn put_parts(
        &self,
        key: &str,
        path: &Path,
        file: &mut tokio::fs::File,
        size: u64,
        kms_key: Option<&str>,
    ) -> Result<Uploaded, S3Error> {
        let mut request = self
            .client
            .create_multipart_upload()
            .bucket(&self.location.bucket)
            .key(key);
        if let Some(kms_key) = kms_key {
            request = request
                .server_side_encryption(ServerSideEncryption::AwsKms)
                .ssekms_key_id(kms_key);
        }
        let answer = request.send().await;
        let created = self.sent("CreateMultipartUpload", key, answer).await?;
        let Some(upload_id) = created.upload_id().map(str::to_owned) else {
            return Err(S3Error::Service {
                operation: "CreateMultipartUpload",
                object: self.location.url(key),
                code: "NoUploadId".to_owned(),
                message: "the answer held no upload id".to_owned(),
                hint: "check that the endpoint is S3",
            });
        };
        // Every way out but success (a refused part, a short read, Ctrl-C, which `send_parts`
        // turns into `Interrupted`) aborts the upload, so S3 keeps no orphaned parts.
        let result = self.send_parts(key, &upload_id, path, file, size).await;
        match result {
            Ok(uploaded) => Ok(uploaded),
            Err(err) => {
                self.abort(key, &upload_id).await;
                Err(err)
            }
        }
    }

    async fn send_parts(
        &self,
        key: &str,
        upload_id: &str,
        path: &Path,
        file: &mut tokio::fs::File,
        size: u64,
    ) -> Result<Uploaded, S3Error> {
        let part_size = part_size(size);
        let in_flight = (IN_FLIGHT_BYTES / part_size).clamp(1, MAX_PARTS_IN_FLIGHT) as usize;
        let mut hasher = Sha256::new();
        let mut pending = FuturesUnordered::new();
        let mut done: Vec<CompletedPart> = Vec::new();
        let mut offset = 0u64;
        let mut number = 1i32;
        while offset < size || !pending.is_empty() {
            if offset < size && pending.len() < in_flight {
                if crate::term::cancel::requested() {
                    return Err(S3Error::Interrupted {
                        object: self.location.url(key),
                    });
                }
                let length = part_size.min(size - offset);
                let body = read_part(file, path, length, offset, size, &mut hasher).await?;
                pending.push(self.send_part(key, upload_id, number, body));
                offset += length;
                number += 1;
                continue;
            }
            let next = tokio::select! {
                next = pending.next() => next,
                () = crate::term::cancel::cancelled() => {
                    return Err(S3Error::Interrupted { object: self.location.url(key) });
                }
            };
            if let Some(part) = next {
                done.push(part?);
            }
        }
        done.sort_by_key(|part| part.part_number());
        let answer = self
            .client
            .complete_multipart_upload()
            .bucket(&self.location.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(done))
                    .build(),
            )
            .send()
            .await;
        self.sent("CompleteMultipartUpload", key, answer).await?;
        Ok(Uploaded {
            size,
            sha256: hex(&hasher.finalize()),
        })
    }

    async fn send_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<CompletedPart, S3Error> {
        let answer = self
            .client
            .upload_part()
            .bucket(&self.location.bucket)
            .key(key)
            .upload_id(upload_id)
            .part_number(number)
            .body(ByteStream::from(body))
            .send()
            .await;
        let answer = self.sent("UploadPart", key, answer).await?;
        Ok(CompletedPart::builder()
            .part_number(number)
            .set_e_tag(answer.e_tag().map(str::to_owned))
            .build())
    }

    /// Best effort: a failed abort is reported, and a lifecycle rule for incomplete multipart
    /// uploads is the remedy the README gives.
    async fn abort(&self, key: &str, upload_id: &str) {
        let aborted = self
            .client
            .abort_multipart_upload()
            .bucket(&self.location.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await;
        if let Err(err) = self.sent("AbortMultipartUpload", key, aborted).await {
            crate::term::diag::warn(err);
        }
    }

    /// A URL that lets whoever holds it GET `key` for `expires`, and nothing else.
    pub async fn presign_get(&self, key: &str, expires: Duration) -> Result<SecretString, S3Error> {
        let presign_error = |reason: String| S3Error::Presign {
            object: self.location.url(key),
            reason,
        };
        let config = PresigningConfig::expires_in(expires)
            .map_err(|err| presign_error(crate::aws::describe_chain(&err)))?;
        // The error of a failed presigning says what is missing (credentials, region); it is
        // built before any URL exists, so it cannot hold one.
        let request = self
            .client
            .get_object()
            .bucket(&self.location.bucket)
            .key(key)
            .presigned(config)
            .await
            .map_err(|err| presign_error(crate::aws::describe_chain(&err)))?;
        Ok(SecretString::from(request.uri().to_owned()))
    }

    pub async fn delete(&self, key: &str) -> Result<(), S3Error> {
        let answer = self
            .client
            .delete_object()
            .bucket(&self.location.bucket)
            .key(key)
            .send()
            .await;
        self.sent("DeleteObject", key, answer).await?;
        Ok(())
    }

    /// The answer of a call, or its failure as an [`S3Error`].
    async fn sent<T, E>(
        &self,
        operation: &'static str,
        key: &str,
        answer: Result<T, SdkError<E>>,
    ) -> Result<T, S3Error>
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        match answer {
            Ok(value) => Ok(value),
            Err(err) => Err(self.failure(operation, key, err).await),
        }
    }

    async fn failure<E>(&self, operation: &'static str, key: &str, err: SdkError<E>) -> S3Error
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let object = self.location.url(key);
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
                S3Error::Service {
                    operation,
                    object,
                    hint: hint(operation, &code),
                    code,
                    message,
                }
            }
            // A failure before anything was sent: credentials, region or endpoint configuration.
            SdkError::ConstructionFailure(_) => self.local_failure(operation, object, reason).await,
            SdkError::DispatchFailure(failure) if failure.is_user() || failure.is_other() => {
                self.local_failure(operation, object, reason).await
            }
            _ => S3Error::Unreachable {
                operation,
                object,
                reason,
            },
        }
    }

    /// Tells missing credentials from the other failures before a request is sent (a missing
    /// region or endpoint, whose text is in `reason`).
    async fn local_failure(
        &self,
        operation: &'static str,
        object: String,
        reason: String,
    ) -> S3Error {
        match crate::aws::missing_credentials(&self.config, &reason).await {
            Some(reason) => S3Error::NoCredentials {
                operation,
                object,
                reason,
            },
            None => S3Error::Unreachable {
                operation,
                object,
                reason,
            },
        }
    }
}

/// The part size for a file of `size` bytes: [`PART_SIZE`], or larger (whole MiB) when the
/// file needs more than S3's 10,000 parts.
fn part_size(size: u64) -> u64 {
    const MIB: u64 = 1024 * 1024;
    let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    needed.max(PART_SIZE)
}

/// Reads the next `length` bytes of the file (at `offset` of `size`) and adds them to `hasher`.
async fn read_part(
    file: &mut tokio::fs::File,
    path: &Path,
    length: u64,
    offset: u64,
    size: u64,
    hasher: &mut Sha256,
) -> Result<Vec<u8>, S3Error> {
    // `length` is at most one part, which fits in memory by construction of `part_size`.
    let capacity = usize::try_from(length).unwrap_or(usize::MAX);
    let mut body = Vec::with_capacity(capacity);
    let read = (&mut *file)
        .take(length)
        .read_to_end(&mut body)
        .await
        .map_err(|err| S3Error::Read {
            path: path.to_owned(),
            reason: crate::ssh::transfer::io_reason(&err),
        })?;
    if (read as u64) < length {
        return Err(S3Error::Shrank {
            path: path.to_owned(),
            read: offset + read as u64,
            size,
        });
    }
    hasher.update(&body);
    Ok(body)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations() {
        let parsed = S3Prefix::parse("s3://my.bucket-1/a/b/").expect("valid");
        assert_eq!(parsed.bucket, "my.bucket-1");
        assert_eq!(parsed.prefix, "a/b");
        assert_eq!(parsed.key("r1", 0), "a/b/smscp-r1/0");
        assert_eq!(parsed.url("k"), "s3://my.bucket-1/k");
        let bare = S3Prefix::parse("s3://bkt").expect("valid");
        assert_eq!(bare.prefix, "");
        assert_eq!(bare.key("r", 2), "smscp-r/2");
        for bad in [
            "s3://",
            "s3://ab",
            "s3://Upper",
            "s3://-x-",
            "s3://a..b",
            "s3://a_b",
        ] {
            assert!(
                matches!(S3Prefix::parse(bad), Err(S3UrlError::Bucket(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            S3Prefix::parse("https://bkt/x"),
            Err(S3UrlError::NotS3(_))
        ));
        assert_eq!(
            S3Prefix::parse("s3://bkt/a\nb"),
            Err(S3UrlError::PrefixControl)
        );
        let long = format!("s3://bkt/{}", "x".repeat(MAX_PREFIX + 1));
        assert!(matches!(
            S3Prefix::parse(&long),
            Err(S3UrlError::PrefixTooLong(_))
        ));
    }

    #[test]
    fn parts_stay_within_s3_limits() {
        assert_eq!(part_size(1), PART_SIZE);
        assert_eq!(part_size(64 * 1024 * 1024), PART_SIZE);
        let huge = MAX_OBJECT;
        let size = part_size(huge);
        assert!(huge.div_ceil(size) <= MAX_PARTS);
        assert_eq!(size % (1024 * 1024), 0);
    }

    #[test]
    fn digests_print_as_sha256sum_does() {
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
