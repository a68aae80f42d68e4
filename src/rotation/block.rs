//! The managed block of public keys in a worker's authorized_keys file, and
//! the text of the script that rewrites it.
//!
//! Every secret owns one block per authorized_keys file, delimited by the
//! lines `# BEGIN smssh-managed <secret>` and `# END smssh-managed <secret>`.
//! Each line inside is `TYPE BASE64 smssh:<secret>:<version id>`. The file is
//! edited on the worker by a fixed, reviewed POSIX sh body
//! (`authorized_keys.sh`); this module renders the short prologue that hands
//! it its four inputs, and the same text is run over SSH (`sh -s`) and through
//! SSM Run Command.
//!
//! Invariants:
//! - Every value in the prologue has been validated here and is single-quoted,
//!   so the prologue only ever assigns variables. The body validates the block
//!   again, so a forged prologue still cannot write a foreign line.
//! - A `PublicKeyLine` can only be built by `parse`, so every key rendered into
//!   a block has a supported type and a blob whose embedded type matches it.
//! - `parse_block` accepts and refuses the same marker layouts as the script:
//!   exact marker lines only, one block per secret, no guessing.
//!
//! This module knows nothing of SSH connections, SSM or Secrets Manager: it
//! produces text and parses text, and callers report the errors.

use std::collections::HashSet;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// The fixed body of the authorized_keys script. `script` prepends the
/// prologue that assigns its inputs.
pub const SCRIPT_BODY: &str = include_str!("authorized_keys.sh");

/// Exit status of the script when a write, rename or lookup failed.
pub const EXIT_IO: i32 = 1;
/// Exit status of the script when its inputs are invalid; nothing was written.
pub const EXIT_BAD_INPUT: i32 = 2;
/// Exit status of the script when the existing file's state is refused
/// (unbalanced markers, symbolic links, foreign owners); nothing was written.
pub const EXIT_REFUSED: i32 = 3;
/// Every error line the script prints on stderr starts with this.
pub const SCRIPT_ERROR_PREFIX: &str = "smssh-authorized-keys: ";

/// The key types a managed block may hold, in the spelling of OpenSSH.
pub const KEY_TYPES: [&str; 5] = [
    "ssh-ed25519",
    "ssh-rsa",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
];

const MAX_BLOCK_ID_LEN: usize = 512;
const MAX_USER_LEN: usize = 32;
const MAX_FILE_LEN: usize = 4096;
/// Far above the 2.8 KB of a 16384-bit RSA key, low enough that a pasted file
/// is not taken for a key.
const MAX_BASE64_LEN: usize = 16 * 1024;
/// How much of an offending value an error message quotes.
const QUOTE_LEN: usize = 64;

const TAG_PREFIX: &str = "smssh:";
const BEGIN_PREFIX: &str = "# BEGIN smssh-managed ";
const END_PREFIX: &str = "# END smssh-managed ";

/// What is wrong with the markers of a block in an existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarkerProblem {
    /// A BEGIN line whose block never ends.
    BeginWithoutEnd,
    /// An END line with no open block.
    EndWithoutBegin,
    /// A second BEGIN line before the first block ended.
    NestedBegin,
    /// A second complete block for the same secret.
    DuplicateBlock,
    /// A marker line followed by spaces, tabs or a carriage return.
    TrailingBlanks,
    /// Another secret's marker between this block's BEGIN and END.
    ForeignMarkerInside,
}

impl fmt::Display for MarkerProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MarkerProblem::BeginWithoutEnd => "BEGIN marker without an END marker",
            MarkerProblem::EndWithoutBegin => "END marker without a BEGIN marker",
            MarkerProblem::NestedBegin => "second BEGIN marker before the END marker",
            MarkerProblem::DuplicateBlock => "second block for the same secret",
            MarkerProblem::TrailingBlanks => "marker followed by blanks or a carriage return",
            MarkerProblem::ForeignMarkerInside => "another block's marker inside this block",
        })
    }
}

/// Everything that can be wrong with a key, a block or the script's inputs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    /// The public key text is empty.
    #[error("public key: the line is empty: pass one line of a .pub file")]
    EmptyKeyLine,
    /// The public key text contains a newline or another control character.
    #[error("public key: the text contains a newline or control character: pass exactly one line of a .pub file")]
    KeyLineControl,
    /// The key type is not one smssh manages.
    #[error("public key: unsupported key type {found:?}: use one of ssh-ed25519, ssh-rsa, ecdsa-sha2-nistp256/384/521 (and no options before the type)")]
    UnsupportedKeyType { found: String },
    /// The line has a type but no base64 field.
    #[error("public key: {algorithm} has no base64 key after the type: pass the whole line of the .pub file")]
    MissingKeyBlob { algorithm: String },
    /// The base64 field does not decode.
    #[error("public key: {algorithm} key is not valid base64 ({reason}): pass the line of the .pub file unchanged")]
    BadBase64 { algorithm: String, reason: String },
    /// The decoded blob names another key type than the line.
    #[error("public key: the line says {algorithm} but the key inside is {blob_type:?}: the line was edited or assembled by hand; use the .pub file as generated")]
    BlobTypeMismatch {
        algorithm: String,
        blob_type: String,
    },
    /// The decoded blob is not a well-formed key of its type.
    #[error(
        "public key: {algorithm} key blob is malformed ({reason}): use the .pub file as generated"
    )]
    MalformedBlob {
        algorithm: String,
        reason: &'static str,
    },
    /// A version id has characters the block format cannot carry.
    #[error(
        "version id {version:?}: {reason}: use the Secrets Manager version id (A-Z a-z 0-9 . _ -)"
    )]
    InvalidVersionId {
        version: String,
        reason: &'static str,
    },
    /// Two keys of one block carry the same version id.
    #[error(
        "version id {version:?} appears twice in the block: give each key its own secret version"
    )]
    DuplicateVersionId { version: String },
    /// The block id (secret name) has characters the markers cannot carry.
    #[error("block id {id:?}: {reason}: use the secret's name (1-512 characters of A-Z a-z 0-9 / _ + = . @ -)")]
    InvalidBlockId { id: String, reason: &'static str },
    /// The user name is not a plain POSIX account name.
    #[error("user {user:?}: {reason}: pass an account name like alice or ec2-user")]
    InvalidUser { user: String, reason: &'static str },
    /// The authorized_keys path cannot be passed safely.
    #[error(
        "authorized_keys path {path:?}: {reason}: pass a plain path such as .ssh/authorized_keys"
    )]
    InvalidFile { path: String, reason: &'static str },
    /// The block's markers in an existing file are ambiguous.
    #[error("authorized_keys block {block_id}: line {line}: {problem}: fix the markers by hand, smssh does not guess")]
    Markers {
        block_id: String,
        line: usize,
        problem: MarkerProblem,
    },
    /// A line inside the block is not a managed key line of this block.
    #[error("authorized_keys block {block_id}: line {line}: not a managed key line ({reason}): run the rotation again to rewrite the block")]
    BadManagedLine {
        block_id: String,
        line: usize,
        reason: ManagedLineProblem,
    },
    /// The script's stdout does not end with its two report lines.
    #[error("authorized_keys script: unexpected output ({reason}): check that the worker runs the script with a POSIX sh")]
    BadScriptOutput { reason: &'static str },
}

/// One OpenSSH public key, reduced to what a managed block stores: the type
/// and the base64 blob. The comment is dropped because the block's own tag
/// takes its place.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PublicKeyLine {
    algorithm: String,
    blob_base64: String,
}

impl PublicKeyLine {
    /// Parses `TYPE BASE64 [COMMENT]` as found in a `.pub` file. Surrounding
    /// blanks and one trailing newline are accepted; options before the type
    /// (authorized_keys syntax) are not, because a managed line never has any.
    pub fn parse(text: &str) -> Result<PublicKeyLine, BlockError> {
        let text = text.trim_matches([' ', '\t', '\r', '\n']);
        if text.is_empty() {
            return Err(BlockError::EmptyKeyLine);
        }
        if text.chars().any(|c| c.is_control() && c != '\t') {
            return Err(BlockError::KeyLineControl);
        }
        let mut fields = text.split([' ', '\t']).filter(|f| !f.is_empty());
        // The text is non-empty after trimming blanks, so there is a field.
        let algorithm = fields.next().unwrap_or_default();
        let blob_base64 = fields.next();
        Self::from_parts(algorithm, blob_base64)
    }

    /// Validates a type and its base64 blob; `parse` and `parse_block` share it.
    fn from_parts(algorithm: &str, blob_base64: Option<&str>) -> Result<PublicKeyLine, BlockError> {
        if !KEY_TYPES.contains(&algorithm) {
            return Err(BlockError::UnsupportedKeyType {
                found: quote_prefix(algorithm),
            });
        }
        let Some(blob_base64) = blob_base64 else {
            return Err(BlockError::MissingKeyBlob {
                algorithm: algorithm.to_owned(),
            });
        };
        if blob_base64.len() > MAX_BASE64_LEN {
            return Err(BlockError::BadBase64 {
                algorithm: algorithm.to_owned(),
                reason: format!("longer than {MAX_BASE64_LEN} characters"),
            });
        }
        // The standard engine insists on padding and canonical trailing bits,
        // so the stored text is exactly what OpenSSH itself would write.
        let blob = STANDARD
            .decode(blob_base64)
            .map_err(|e| BlockError::BadBase64 {
                algorithm: algorithm.to_owned(),
                reason: e.to_string(),
            })?;
        check_blob(algorithm, &blob)?;
        Ok(PublicKeyLine {
            algorithm: algorithm.to_owned(),
            blob_base64: blob_base64.to_owned(),
        })
    }

    /// The key type, for example `ssh-ed25519`.
    pub fn algorithm(&self) -> &str {
        &self.algorithm
    }

    /// The key blob in standard padded base64, as in a `.pub` file.
    pub fn blob_base64(&self) -> &str {
        &self.blob_base64
    }

    /// `TYPE BASE64`, the form in which the script compares keys with a file's lines.
    pub fn key_text(&self) -> String {
        format!("{} {}", self.algorithm, self.blob_base64)
    }
}

/// What one run of the script does to a file: the block's keys, the keys to remove from the
/// lines outside every block, and the key whose lines are only counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Edit<'a> {
    pub keys: &'a [ManagedKey],
    pub retire: &'a [PublicKeyLine],
    pub watch: Option<&'a PublicKeyLine>,
}

impl<'a> Edit<'a> {
    /// Rewrites the block to hold `keys` and touches nothing outside it.
    pub fn block(keys: &'a [ManagedKey]) -> Edit<'a> {
        Edit {
            keys,
            ..Edit::default()
        }
    }
}

/// A key as it sits in a managed block: the key and the Secrets Manager
/// version it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedKey {
    pub key: PublicKeyLine,
    pub version_id: String,
}

impl ManagedKey {
    /// Pairs a key with a validated version id.
    pub fn new(key: PublicKeyLine, version_id: &str) -> Result<ManagedKey, BlockError> {
        validate_version_id(version_id)?;
        Ok(ManagedKey {
            key,
            version_id: version_id.to_owned(),
        })
    }
}

/// What the script reported on stdout after a successful run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptReport {
    /// True when the file was replaced, false when it already held the block.
    pub changed: bool,
    /// Lines outside the blocks removed because they held a retired key.
    pub retired: usize,
    /// Lines outside this block that hold the watched key, after the edit.
    pub watched: usize,
    /// The version ids now in the block, in file order.
    pub version_ids: Vec<String>,
}

/// Checks a secret's name for use in marker lines and key tags.
pub fn validate_block_id(id: &str) -> Result<(), BlockError> {
    let fail = |reason| {
        Err(BlockError::InvalidBlockId {
            id: quote_prefix(id),
            reason,
        })
    };
    if id.is_empty() {
        return fail("it is empty");
    }
    if id.len() > MAX_BLOCK_ID_LEN {
        return fail("it is longer than 512 characters");
    }
    if !id.bytes().all(is_block_id_byte) {
        return fail("it has a character outside A-Z a-z 0-9 / _ + = . @ -");
    }
    Ok(())
}

/// Checks a Secrets Manager version id for use in a key tag.
pub fn validate_version_id(version: &str) -> Result<(), BlockError> {
    let fail = |reason| {
        Err(BlockError::InvalidVersionId {
            version: quote_prefix(version),
            reason,
        })
    };
    if version.is_empty() {
        return fail("it is empty");
    }
    if !version.bytes().all(is_version_byte) {
        return fail("it has a character outside A-Z a-z 0-9 . _ -");
    }
    Ok(())
}

/// Checks the account name handed to the script. Empty means "the account
/// the script runs as".
pub fn validate_user(user: &str) -> Result<(), BlockError> {
    let fail = |reason| {
        Err(BlockError::InvalidUser {
            user: quote_prefix(user),
            reason,
        })
    };
    if user.is_empty() {
        return Ok(());
    }
    if user.len() > MAX_USER_LEN {
        return fail("it is longer than 32 characters");
    }
    // One trailing `$` is allowed for Samba machine accounts.
    let name = user.strip_suffix('$').unwrap_or(user);
    let mut bytes = name.bytes();
    match bytes.next() {
        Some(b) if b.is_ascii_lowercase() || b == b'_' => {}
        _ => return fail("it does not start with a-z or _"),
    }
    if !bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b)) {
        return fail("it has a character outside a-z 0-9 _ . - (and one final $)");
    }
    Ok(())
}

/// Checks the authorized_keys path handed to the script. Empty means
/// `.ssh/authorized_keys` in the user's home.
pub fn validate_file(path: &str) -> Result<(), BlockError> {
    let fail = |reason| {
        Err(BlockError::InvalidFile {
            path: quote_prefix(path),
            reason,
        })
    };
    if path.len() > MAX_FILE_LEN {
        return fail("it is longer than 4096 bytes");
    }
    // Newlines would split the script's one-line messages and NUL cannot be
    // passed at all; other control characters have no business in a path.
    if path.chars().any(char::is_control) {
        return fail("it contains a newline, NUL or other control character");
    }
    if path.is_empty() {
        return Ok(());
    }
    let name = path.rsplit('/').next().unwrap_or_default();
    if name.is_empty() || name == "." || name == ".." {
        return fail("it names a directory, not a file");
    }
    Ok(())
}

/// Renders the desired block content: one `TYPE BASE64 smssh:<id>:<version>`
/// line per key, newline separated, without a trailing newline. No keys gives
/// the empty string, which makes the script remove the block.
pub fn render_lines(block_id: &str, keys: &[ManagedKey]) -> Result<String, BlockError> {
    validate_block_id(block_id)?;
    let mut seen = HashSet::new();
    let mut lines = Vec::with_capacity(keys.len());
    for key in keys {
        // The fields are public, so the version id is checked again here.
        validate_version_id(&key.version_id)?;
        if !seen.insert(key.version_id.as_str()) {
            return Err(BlockError::DuplicateVersionId {
                version: key.version_id.clone(),
            });
        }
        lines.push(format!(
            "{} {} {TAG_PREFIX}{block_id}:{}",
            key.key.algorithm, key.key.blob_base64, key.version_id
        ));
    }
    Ok(lines.join("\n"))
}

/// Quotes a value for POSIX sh: the whole value in single quotes, each `'`
/// written as `'\''`. Nothing inside single quotes is special to the shell.
pub fn shell_quote(value: &str) -> String {
    let mut quoted = String::with_capacity(value.len() + 2);
    quoted.push('\'');
    for c in value.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

/// The complete script text run on a worker, by `sh -s` over SSH or as an
/// SSM `AWS-RunShellScript` command: a prologue assigning the six validated
/// inputs, then `SCRIPT_BODY`. `file` of `None` or `Some("")` means
/// `.ssh/authorized_keys` in the user's home.
pub fn script(
    user: &str,
    block_id: &str,
    file: Option<&str>,
    edit: &Edit<'_>,
) -> Result<String, BlockError> {
    validate_user(user)?;
    let file = file.unwrap_or("");
    validate_file(file)?;
    let block = render_lines(block_id, edit.keys)?;
    // Every retired or watched key was built by `PublicKeyLine::parse`, so its text is one
    // valid `TYPE BASE64` line.
    let retire: Vec<String> = edit.retire.iter().map(PublicKeyLine::key_text).collect();
    let retire = retire.join("\n");
    let watch = edit.watch.map(PublicKeyLine::key_text).unwrap_or_default();
    let mut text = String::with_capacity(SCRIPT_BODY.len() + block.len() + 256);
    text.push_str("#!/bin/sh\n");
    for (name, value) in [
        ("SMSSH_USER", user),
        ("SMSSH_BLOCK_ID", block_id),
        ("SMSSH_FILE", file),
        ("SMSSH_BLOCK", block.as_str()),
        ("SMSSH_RETIRE", retire.as_str()),
        ("SMSSH_WATCH", watch.as_str()),
    ] {
        text.push_str(name);
        text.push('=');
        text.push_str(&shell_quote(value));
        text.push('\n');
    }
    text.push_str(SCRIPT_BODY);
    Ok(text)
}

/// Returns the managed keys in `block_id`'s block of an authorized_keys text,
/// in file order; no block gives an empty list. Marker layouts the script
/// refuses are refused here with the same reason, and a line inside the block
/// that the script would not have written is an error.
pub fn parse_block(
    authorized_keys_text: &str,
    block_id: &str,
) -> Result<Vec<ManagedKey>, BlockError> {
    validate_block_id(block_id)?;
    let begin = format!("{BEGIN_PREFIX}{block_id}");
    let end = format!("{END_PREFIX}{block_id}");
    let markers = |line, problem| BlockError::Markers {
        block_id: block_id.to_owned(),
        line,
        problem,
    };

    // Lines are split on `\n` only, as awk does in the script: a `\r` stays
    // part of its line, so a CRLF marker is refused rather than accepted.
    let body = authorized_keys_text
        .strip_suffix('\n')
        .unwrap_or(authorized_keys_text);
    let lines: Vec<&str> = if authorized_keys_text.is_empty() {
        Vec::new()
    } else {
        body.split('\n').collect()
    };

    let mut keys = Vec::new();
    let mut seen_versions = HashSet::new();
    let mut open_at: Option<usize> = None;
    let mut seen_block = false;
    for (index, line) in lines.iter().copied().enumerate() {
        let number = index + 1;
        if line == begin {
            if open_at.is_some() {
                return Err(markers(number, MarkerProblem::NestedBegin));
            }
            if seen_block {
                return Err(markers(number, MarkerProblem::DuplicateBlock));
            }
            open_at = Some(number);
            seen_block = true;
            continue;
        }
        if line == end {
            if open_at.take().is_none() {
                return Err(markers(number, MarkerProblem::EndWithoutBegin));
            }
            continue;
        }
        let trimmed = line.trim_end_matches([' ', '\t', '\r']);
        if trimmed == begin || trimmed == end {
            return Err(markers(number, MarkerProblem::TrailingBlanks));
        }
        if open_at.is_none() {
            continue;
        }
        if line.starts_with(BEGIN_PREFIX) || line.starts_with(END_PREFIX) {
            return Err(markers(number, MarkerProblem::ForeignMarkerInside));
        }
        let key =
            parse_managed_line(line, block_id).map_err(|reason| BlockError::BadManagedLine {
                block_id: block_id.to_owned(),
                line: number,
                reason,
            })?;
        if !seen_versions.insert(key.version_id.clone()) {
            return Err(BlockError::DuplicateVersionId {
                version: key.version_id,
            });
        }
        keys.push(key);
    }
    if let Some(line) = open_at {
        return Err(markers(line, MarkerProblem::BeginWithoutEnd));
    }
    Ok(keys)
}

/// Reads the script's report from its stdout. Only the last three lines count,
/// because a worker's shell start-up files may print before the script runs.
pub fn parse_report(stdout: &str) -> Result<ScriptReport, BlockError> {
    let fail = |reason| Err(BlockError::BadScriptOutput { reason });
    let Some(body) = stdout.strip_suffix('\n') else {
        return fail("it does not end with a newline");
    };
    let mut lines = body.rsplit('\n');
    let (Some(keys_line), Some(counts_line), Some(status_line)) =
        (lines.next(), lines.next(), lines.next())
    else {
        return fail("fewer than three lines");
    };
    let counts = counts_line
        .strip_prefix("retired:")
        .and_then(|rest| rest.split_once(" watched:"))
        .and_then(|(retired, watched)| Some((count(retired)?, count(watched)?)));
    let Some((retired, watched)) = counts else {
        return fail("no retired:N watched:N line");
    };
    let changed = match status_line {
        "updated" => true,
        "unchanged" => false,
        _ => return fail("no updated or unchanged line"),
    };
    let Some(ids) = keys_line.strip_prefix("keys:") else {
        return fail("the last line is not a keys: line");
    };
    let mut version_ids = Vec::new();
    if !ids.is_empty() {
        // Each id is preceded by exactly one space, so "keys:" alone means an
        // empty block and a double space is an error.
        let Some(ids) = ids.strip_prefix(' ') else {
            return fail("the keys: line is not space separated");
        };
        for id in ids.split(' ') {
            if validate_version_id(id).is_err() {
                return fail("the keys: line holds an invalid version id");
            }
            version_ids.push(id.to_owned());
        }
    }
    Ok(ScriptReport {
        changed,
        retired,
        watched,
        version_ids,
    })
}

/// A line count as the script prints it: decimal digits only.
fn count(text: &str) -> Option<usize> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// Why a line inside the block is not a managed key line, for [`BlockError::BadManagedLine`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManagedLineProblem {
    #[error("expected TYPE BASE64 TAG separated by single spaces")]
    Fields,
    #[error("{0}")]
    Key(Box<BlockError>),
    #[error("the tag is not smssh:{block_id}:VERSION")]
    Tag { block_id: String },
}

/// Parses `TYPE BASE64 smssh:<block_id>:<version>` with single spaces, the
/// only form the script writes.
fn parse_managed_line(line: &str, block_id: &str) -> Result<ManagedKey, ManagedLineProblem> {
    let fields: Vec<&str> = line.split(' ').collect();
    let [algorithm, blob, tag] = fields.as_slice() else {
        return Err(ManagedLineProblem::Fields);
    };
    let key = PublicKeyLine::from_parts(algorithm, Some(blob))
        .map_err(|e| ManagedLineProblem::Key(Box::new(e)))?;
    let version = tag
        .strip_prefix(TAG_PREFIX)
        .and_then(|t| t.strip_prefix(block_id))
        .and_then(|t| t.strip_prefix(':'))
        .ok_or_else(|| ManagedLineProblem::Tag {
            block_id: block_id.to_owned(),
        })?;
    ManagedKey::new(key, version).map_err(|e| ManagedLineProblem::Key(Box::new(e)))
}

/// Checks that a decoded blob is a well-formed key of `algorithm`: the type
/// name as an SSH string first, then exactly the fields of that key type.
fn check_blob(algorithm: &str, blob: &[u8]) -> Result<(), BlockError> {
    let malformed = |reason| BlockError::MalformedBlob {
        algorithm: algorithm.to_owned(),
        reason,
    };
    let mut rest = blob;
    let name = read_ssh_string(&mut rest).ok_or_else(|| malformed("no key type at its start"))?;
    if name != algorithm.as_bytes() {
        return Err(BlockError::BlobTypeMismatch {
            algorithm: algorithm.to_owned(),
            blob_type: quote_prefix(&String::from_utf8_lossy(name)),
        });
    }
    match algorithm {
        "ssh-ed25519" => {
            let point = read_ssh_string(&mut rest).ok_or_else(|| malformed("truncated"))?;
            if point.len() != 32 {
                return Err(malformed("the public key is not 32 bytes"));
            }
        }
        "ssh-rsa" => {
            let e = read_ssh_string(&mut rest).ok_or_else(|| malformed("truncated exponent"))?;
            let n = read_ssh_string(&mut rest).ok_or_else(|| malformed("truncated modulus"))?;
            if e.is_empty() || n.is_empty() {
                return Err(malformed("empty exponent or modulus"));
            }
        }
        _ => {
            // The remaining types are the ecdsa-sha2-<curve> ones, whose blob
            // repeats the curve name before the point.
            let curve = algorithm.strip_prefix("ecdsa-sha2-").unwrap_or_default();
            let named = read_ssh_string(&mut rest).ok_or_else(|| malformed("truncated curve"))?;
            if named != curve.as_bytes() {
                return Err(malformed("the curve does not match the key type"));
            }
            let point = read_ssh_string(&mut rest).ok_or_else(|| malformed("truncated point"))?;
            if point.first() != Some(&0x04) {
                return Err(malformed("the point is not in uncompressed form"));
            }
        }
    }
    if !rest.is_empty() {
        return Err(malformed("bytes after the key"));
    }
    Ok(())
}

/// Reads one SSH wire string (u32 big-endian length, then the bytes).
fn read_ssh_string<'a>(buf: &mut &'a [u8]) -> Option<&'a [u8]> {
    let (len, rest) = buf.split_first_chunk::<4>()?;
    let len = usize::try_from(u32::from_be_bytes(*len)).ok()?;
    if rest.len() < len {
        return None;
    }
    let (value, rest) = rest.split_at(len);
    *buf = rest;
    Some(value)
}

fn is_block_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"/_+=.@-".contains(&b)
}

fn is_version_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"._-".contains(&b)
}

/// The start of an offending value, short enough for a one-line message.
/// Messages print it with `{:?}`, which escapes newlines and quotes.
fn quote_prefix(value: &str) -> String {
    match value.char_indices().nth(QUOTE_LEN) {
        Some((end, _)) => format!("{}...", &value[..end]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ED25519: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGHOZKbNeUgKlOBSlf6yk3OyTGhFi4g18wYEA/Vtd5DU fixture@ed25519";
    const RSA: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDS1YAG8U/mtlG54c3oHFJqdmmNij4Kftg6JLzA7O43iqEQO/RuwogkaiPQGNcQqOrz6kOFL8HVAS+qys2Mc4iTGrj0yiUrYM8Btc5d1ZLwBBTMUmX+fpqnATDmpWqfmROpd4UhUKUkeirmSisVVv2qnrd3PqcIxsBWUlJhcy5P0a/CRj9sOKb9MrJLa76GVYtoUiWeUYwl2dYL+1MLRgJYCDkq3sluiUcbXx0Ns6JXWMNw5mXSVNe9qPD22BwqhRBS3rn1WeQnl0SrsfFK3Uyhtd2G1YQvgHGmHnw3XVBSDdjwhRWQOXSr6uB1LPTWIxjH31Ym/uh/xHfSXpAjNN/V fixture@rsa";
    const P256: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNOAoUqnaak041YK7IiB1TZkPDGgX8GooVkP1LNCCvi+17pyu/kB7J/lJgGrIasBqvzZdeTt9uCo3pllw3YBAwY= fixture@p256";
    const P384: &str = "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBIdk/kAIcgLB1xv/hQPyXzPVjiEbk8IyZkCx+IgiHULAfUsmHx6O8AeYIBQ18HI8qwvRj0OYOM2enMue6sGdU85EhK3wEvHd5e6xOwjKrlSmCdlHLm6QLHNG54efr5weAg== fixture@p384";
    const P521: &str = "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBAH0I2ZOZjsWa13159DNoIu63EkzlKWC2fkL0ZlGxrS1gqpmj+qQuaifXKcGVEcwU1ebLRf+SCkLwcS91HuemZ+hUQGQHVaovD/zJx3FYE8DLPVb72SCWwrwWj2qHDRDPhZqQFfWi5jsO2i2aCymXm8o8o/Lt/aSnTOfuCI8XSCLsHYqEw== fixture@p521";

    fn field(line: &str, n: usize) -> &str {
        line.split(' ').nth(n).unwrap()
    }

    fn managed(line: &str, version: &str) -> ManagedKey {
        ManagedKey::new(PublicKeyLine::parse(line).unwrap(), version).unwrap()
    }

    /// Builds a base64 blob from SSH strings, for hand-made malformed keys.
    fn blob(strings: &[&[u8]]) -> String {
        let mut out = Vec::new();
        for s in strings {
            out.extend_from_slice(&u32::try_from(s.len()).unwrap().to_be_bytes());
            out.extend_from_slice(s);
        }
        STANDARD.encode(out)
    }

    #[test]
    fn parse_accepts_every_supported_type() {
        for (line, algorithm) in [
            (ED25519, "ssh-ed25519"),
            (RSA, "ssh-rsa"),
            (P256, "ecdsa-sha2-nistp256"),
            (P384, "ecdsa-sha2-nistp384"),
            (P521, "ecdsa-sha2-nistp521"),
        ] {
            let key = PublicKeyLine::parse(line).unwrap();
            assert_eq!(key.algorithm(), algorithm, "{line}");
            assert_eq!(key.blob_base64(), field(line, 1), "{line}");
        }
    }

    #[test]
    fn parse_accepts_layout_variants_and_drops_the_comment() {
        let blob = field(ED25519, 1);
        for text in [
            format!("ssh-ed25519 {blob}"),
            format!("ssh-ed25519 {blob}\n"),
            format!("ssh-ed25519 {blob}\r\n"),
            format!("  ssh-ed25519\t{blob}  a comment with spaces  "),
            format!("ssh-ed25519 {blob} comment'with;$(quotes)`and`|pipes"),
        ] {
            let key = PublicKeyLine::parse(&text).unwrap();
            assert_eq!(key.algorithm(), "ssh-ed25519", "{text:?}");
            assert_eq!(key.blob_base64(), blob, "{text:?}");
        }
    }

    /// Recognises the error a table row expects.
    type ErrorCheck = fn(&BlockError) -> bool;

    #[test]
    fn parse_refuses_bad_lines() {
        let ed = field(ED25519, 1);
        let p256 = field(P256, 1);
        let cases: Vec<(String, ErrorCheck)> = vec![
            (String::new(), |e| matches!(e, BlockError::EmptyKeyLine)),
            ("  \n".into(), |e| matches!(e, BlockError::EmptyKeyLine)),
            ("ssh-dss AAAAB3NzaC1kc3M=".into(), |e| {
                matches!(e, BlockError::UnsupportedKeyType { .. })
            }),
            (format!("SSH-ED25519 {ed}"), |e| {
                matches!(e, BlockError::UnsupportedKeyType { .. })
            }),
            (format!("sk-ssh-ed25519@openssh.com {ed}"), |e| {
                matches!(e, BlockError::UnsupportedKeyType { .. })
            }),
            (format!("command=\"/bin/sh\" ssh-ed25519 {ed}"), |e| {
                matches!(e, BlockError::UnsupportedKeyType { .. })
            }),
            (format!("'; rm -rf / ' {ed}"), |e| {
                matches!(e, BlockError::UnsupportedKeyType { .. })
            }),
            ("ssh-ed25519".into(), |e| {
                matches!(e, BlockError::MissingKeyBlob { .. })
            }),
            ("ssh-ed25519 not*base64".into(), |e| {
                matches!(e, BlockError::BadBase64 { .. })
            }),
            (
                format!("ecdsa-sha2-nistp256 {}", p256.trim_end_matches('=')),
                |e| matches!(e, BlockError::BadBase64 { .. }),
            ),
            ("ssh-ed25519 $(reboot)".into(), |e| {
                matches!(e, BlockError::BadBase64 { .. })
            }),
            ("ssh-ed25519 AAAA'BBBB".into(), |e| {
                matches!(e, BlockError::BadBase64 { .. })
            }),
            (
                format!("ssh-ed25519 {}", "A".repeat(MAX_BASE64_LEN + 4)),
                |e| matches!(e, BlockError::BadBase64 { .. }),
            ),
            (format!("ssh-rsa {ed}"), |e| {
                matches!(e, BlockError::BlobTypeMismatch { .. })
            }),
            (format!("ecdsa-sha2-nistp384 {p256}"), |e| {
                matches!(e, BlockError::BlobTypeMismatch { .. })
            }),
            (format!("ssh-ed25519 {ed}\nssh-ed25519 {ed}"), |e| {
                matches!(e, BlockError::KeyLineControl)
            }),
            (format!("ssh-ed25519 {ed} a\ncomment"), |e| {
                matches!(e, BlockError::KeyLineControl)
            }),
            (format!("ssh-ed25519 {ed} nul\0"), |e| {
                matches!(e, BlockError::KeyLineControl)
            }),
            ("ssh-ed25519 AAAA".into(), |e| {
                matches!(e, BlockError::MalformedBlob { .. })
            }),
            (
                format!("ssh-ed25519 {}", blob(&[b"ssh-ed25519", &[7; 31]])),
                |e| matches!(e, BlockError::MalformedBlob { .. }),
            ),
            (
                format!("ssh-ed25519 {}", blob(&[b"ssh-ed25519", &[7; 32], b"x"])),
                |e| matches!(e, BlockError::MalformedBlob { .. }),
            ),
            (format!("ssh-rsa {}", blob(&[b"ssh-rsa", &[1]])), |e| {
                matches!(e, BlockError::MalformedBlob { .. })
            }),
            (
                format!(
                    "ecdsa-sha2-nistp256 {}",
                    blob(&[b"ecdsa-sha2-nistp256", b"nistp384", &[4, 1]])
                ),
                |e| matches!(e, BlockError::MalformedBlob { .. }),
            ),
            (
                format!(
                    "ecdsa-sha2-nistp256 {}",
                    blob(&[b"ecdsa-sha2-nistp256", b"nistp256", &[2, 1]])
                ),
                |e| matches!(e, BlockError::MalformedBlob { .. }),
            ),
        ];
        for (text, expected) in cases {
            let err = PublicKeyLine::parse(&text).unwrap_err();
            assert!(expected(&err), "{text:?} gave {err:?}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }

    #[test]
    fn block_ids() {
        let long = "a".repeat(MAX_BLOCK_ID_LEN);
        for good in [
            "c",
            "cluster/key",
            "prod/hpc-cluster_1+2=3.x@y-z",
            long.as_str(),
        ] {
            assert_eq!(validate_block_id(good), Ok(()), "{good}");
        }
        let too_long = "a".repeat(MAX_BLOCK_ID_LEN + 1);
        for bad in [
            "",
            too_long.as_str(),
            "a b",
            "a'b",
            "a$(id)",
            "a;b",
            "a\nb",
            "a:b",
            "a\\b",
            "ä",
            "a`b`",
        ] {
            let err = validate_block_id(bad).unwrap_err();
            assert!(matches!(err, BlockError::InvalidBlockId { .. }), "{bad:?}");
            assert!(!err.to_string().contains('\n'), "{err}");
        }
    }

    #[test]
    fn version_ids() {
        for good in ["v1", "a1b2c3d4-e5f6-7890-abcd-ef0123456789", "EXAMPLE1.2_3"] {
            assert_eq!(validate_version_id(good), Ok(()), "{good}");
        }
        for bad in ["", "v 1", "v'1", "v$(id)", "v;1", "v\n1", "v:1", "v/1"] {
            assert!(
                matches!(
                    validate_version_id(bad),
                    Err(BlockError::InvalidVersionId { .. })
                ),
                "{bad:?}"
            );
        }
        let key = PublicKeyLine::parse(ED25519).unwrap();
        assert!(ManagedKey::new(key, "v1;reboot").is_err());
    }

    #[test]
    fn users() {
        for good in [
            "",
            "alice",
            "ec2-user",
            "_svc",
            "a.b",
            "host1$",
            "u".repeat(32).as_str(),
        ] {
            assert_eq!(validate_user(good), Ok(()), "{good}");
        }
        for bad in [
            "Alice",
            "1user",
            "-x",
            "a b",
            "a'b",
            "a$(id)",
            "a;b",
            "a\nb",
            "a:b",
            "a$$",
            "$",
            "u".repeat(33).as_str(),
        ] {
            assert!(
                matches!(validate_user(bad), Err(BlockError::InvalidUser { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn files() {
        for good in [
            "",
            ".ssh/authorized_keys",
            "/etc/ssh/keys/alice",
            "it's $(fine) here;",
        ] {
            assert_eq!(validate_file(good), Ok(()), "{good}");
        }
        let too_long = "a".repeat(MAX_FILE_LEN + 1);
        for bad in [
            "a\nb",
            "a\0b",
            "a\rb",
            ".ssh/",
            "/",
            "a/..",
            ".",
            too_long.as_str(),
        ] {
            assert!(
                matches!(validate_file(bad), Err(BlockError::InvalidFile { .. })),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn render() {
        assert_eq!(render_lines("c/k", &[]).unwrap(), "");
        let keys = [managed(ED25519, "v1"), managed(RSA, "v2")];
        let text = render_lines("c/k", &keys).unwrap();
        assert_eq!(
            text,
            format!(
                "ssh-ed25519 {} smssh:c/k:v1\nssh-rsa {} smssh:c/k:v2",
                field(ED25519, 1),
                field(RSA, 1)
            )
        );
        assert!(matches!(
            render_lines("c k", &keys),
            Err(BlockError::InvalidBlockId { .. })
        ));
        let twice = [managed(ED25519, "v1"), managed(P256, "v1")];
        assert!(matches!(
            render_lines("c", &twice),
            Err(BlockError::DuplicateVersionId { .. })
        ));
        // The fields are public, so a version id set after construction is
        // checked at render time.
        let mut forged = managed(ED25519, "v1");
        forged.version_id = "v1\nssh-ed25519 AAAA smssh:c:x".to_owned();
        assert!(matches!(
            render_lines("c", &[forged]),
            Err(BlockError::InvalidVersionId { .. })
        ));
    }

    #[test]
    fn shell_quoting() {
        for (value, quoted) in [
            ("", "''"),
            ("plain", "'plain'"),
            ("it's", r"'it'\''s'"),
            ("''", r"''\'''\'''"),
            ("$(id) `id` ${x} \\ \" ;|&", "'$(id) `id` ${x} \\ \" ;|&'"),
            ("a\nb", "'a\nb'"),
        ] {
            assert_eq!(shell_quote(value), quoted, "{value:?}");
        }
    }

    #[test]
    fn quoted_values_survive_a_real_shell() {
        for value in [
            "",
            "it's",
            "'",
            "$(echo pwned)",
            "`id`",
            "a\nb",
            "\\n",
            "-n",
            "*",
        ] {
            let out = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf '%s' {}", shell_quote(value)))
                .output()
                .unwrap();
            assert!(out.status.success());
            assert_eq!(String::from_utf8(out.stdout).unwrap(), value);
        }
    }

    #[test]
    fn script_prologue() {
        let keys = [managed(ED25519, "v1")];
        let retire = [
            PublicKeyLine::parse(ED25519).unwrap(),
            PublicKeyLine::parse(RSA).unwrap(),
        ];
        let edit = Edit {
            keys: &keys,
            retire: &retire,
            watch: Some(&retire[1]),
        };
        let text = script("alice", "c/k", Some("/etc/ssh/it's"), &edit).unwrap();
        let prologue = format!(
            "#!/bin/sh\nSMSSH_USER='alice'\nSMSSH_BLOCK_ID='c/k'\nSMSSH_FILE='/etc/ssh/it'\\''s'\nSMSSH_BLOCK='ssh-ed25519 {ed} smssh:c/k:v1'\nSMSSH_RETIRE='ssh-ed25519 {ed}\nssh-rsa {rsa}'\nSMSSH_WATCH='ssh-rsa {rsa}'\n",
            ed = field(ED25519, 1),
            rsa = field(RSA, 1),
        );
        assert_eq!(text, format!("{prologue}{SCRIPT_BODY}"));
        let none = script("", "c", None, &Edit::default()).unwrap();
        assert!(none.starts_with(
            "#!/bin/sh\nSMSSH_USER=''\nSMSSH_BLOCK_ID='c'\nSMSSH_FILE=''\nSMSSH_BLOCK=''\nSMSSH_RETIRE=''\nSMSSH_WATCH=''\n"
        ));
        assert_eq!(script("", "c", Some(""), &Edit::default()).unwrap(), none);
    }

    #[test]
    fn script_refuses_injection() {
        let keys = [managed(ED25519, "v1")];
        for user in ["a'b", "a$(id)", "a;b", "a\nb"] {
            assert!(matches!(
                script(user, "c", None, &Edit::block(&keys)),
                Err(BlockError::InvalidUser { .. })
            ));
        }
        for id in ["c'", "c$(id)", "c;d", "c\nd"] {
            assert!(matches!(
                script("", id, None, &Edit::block(&keys)),
                Err(BlockError::InvalidBlockId { .. })
            ));
        }
        for file in ["a\nb", "a\0b"] {
            assert!(matches!(
                script("", "c", Some(file), &Edit::block(&keys)),
                Err(BlockError::InvalidFile { .. })
            ));
        }
    }

    #[test]
    fn body_keeps_its_rules() {
        assert!(SCRIPT_BODY.contains("set -eu"));
        assert!(SCRIPT_BODY.trim_end().ends_with("smssh_main </dev/null"));
        for line in SCRIPT_BODY
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
        {
            assert!(!line.contains("eval"), "{line}");
        }
    }

    fn file_with(lines: &[&str]) -> String {
        lines.iter().map(|l| format!("{l}\n")).collect()
    }

    #[test]
    fn parse_block_reads_the_block() {
        let block = render_lines("c/k", &[managed(ED25519, "v1"), managed(P521, "v2")]).unwrap();
        let other = render_lines("other", &[managed(RSA, "v9")]).unwrap();
        let text = file_with(&[
            "ssh-ed25519 AAAA unmanaged",
            "# BEGIN smssh-managed other",
            &other,
            "# END smssh-managed other",
            "# BEGIN smssh-managed c/k",
            &block,
            "# END smssh-managed c/k",
            "# trailing comment",
        ]);
        let keys = parse_block(&text, "c/k").unwrap();
        let got: Vec<(&str, &str, &str)> = keys
            .iter()
            .map(|k| {
                (
                    k.key.algorithm(),
                    k.key.blob_base64(),
                    k.version_id.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("ssh-ed25519", field(ED25519, 1), "v1"),
                ("ecdsa-sha2-nistp521", field(P521, 1), "v2"),
            ]
        );
        assert_eq!(parse_block(&text, "other").unwrap().len(), 1);
        assert_eq!(parse_block(&text, "absent").unwrap(), []);
        assert_eq!(parse_block("", "c/k").unwrap(), []);
        let empty_block = file_with(&["# BEGIN smssh-managed c", "# END smssh-managed c"]);
        assert_eq!(parse_block(&empty_block, "c").unwrap(), []);
        // The last line may lack its newline.
        assert_eq!(parse_block(text.trim_end(), "c/k").unwrap().len(), 2);
    }

    #[test]
    fn parse_block_refuses_ambiguous_markers() {
        let b = "# BEGIN smssh-managed c";
        let e = "# END smssh-managed c";
        let line = render_lines("c", &[managed(ED25519, "v1")]).unwrap();
        let cases: [(&[&str], usize, MarkerProblem); 8] = [
            (&["x", b, &line], 2, MarkerProblem::BeginWithoutEnd),
            (&[&line, e], 2, MarkerProblem::EndWithoutBegin),
            (&[b, b, e], 2, MarkerProblem::NestedBegin),
            (&[b, e, b, e], 3, MarkerProblem::DuplicateBlock),
            (
                &["# BEGIN smssh-managed c ", e],
                1,
                MarkerProblem::TrailingBlanks,
            ),
            (
                &[b, "# END smssh-managed c\r"],
                2,
                MarkerProblem::TrailingBlanks,
            ),
            (
                &[b, "# BEGIN smssh-managed d", e],
                2,
                MarkerProblem::ForeignMarkerInside,
            ),
            (
                &[b, "# END smssh-managed d", e],
                2,
                MarkerProblem::ForeignMarkerInside,
            ),
        ];
        for (lines, at, problem) in cases {
            let err = parse_block(&file_with(lines), "c").unwrap_err();
            assert_eq!(
                err,
                BlockError::Markers {
                    block_id: "c".into(),
                    line: at,
                    problem
                },
                "{lines:?}"
            );
        }
        // A block id that is a prefix of another is a different block.
        let text = file_with(&["# BEGIN smssh-managed c2", "# END smssh-managed c2"]);
        assert_eq!(parse_block(&text, "c").unwrap(), []);
    }

    #[test]
    fn parse_block_refuses_foreign_lines_inside() {
        let ed = field(ED25519, 1);
        for inside in [
            format!("ssh-ed25519 {ed} smssh:other:v1"),
            format!("ssh-ed25519 {ed} smssh:c:v1;reboot"),
            format!("ssh-ed25519 {ed} smssh:c:"),
            format!("ssh-ed25519  {ed} smssh:c:v1"),
            format!("ssh-ed25519 {ed} hand-added"),
            format!("ssh-rsa {ed} smssh:c:v1"),
            format!("command=\"x\" ssh-ed25519 {ed} smssh:c:v1"),
            String::new(),
        ] {
            let text = file_with(&["# BEGIN smssh-managed c", &inside, "# END smssh-managed c"]);
            let err = parse_block(&text, "c").unwrap_err();
            assert!(
                matches!(err, BlockError::BadManagedLine { line: 2, .. }),
                "{inside:?} gave {err:?}"
            );
            assert!(!err.to_string().contains('\n'), "{err}");
        }
        let twice = format!("ssh-ed25519 {ed} smssh:c:v1");
        let text = file_with(&[
            "# BEGIN smssh-managed c",
            &twice,
            &twice,
            "# END smssh-managed c",
        ]);
        assert!(matches!(
            parse_block(&text, "c"),
            Err(BlockError::DuplicateVersionId { .. })
        ));
    }

    /// `Some((changed, version ids))` for a report that parses.
    type ExpectedReport = Option<(bool, usize, usize, &'static [&'static str])>;

    #[test]
    fn reports() {
        let cases: [(&str, ExpectedReport); 12] = [
            (
                "updated\nretired:2 watched:1\nkeys: v1 v2\n",
                Some((true, 2, 1, &["v1", "v2"])),
            ),
            (
                "unchanged\nretired:0 watched:0\nkeys:\n",
                Some((false, 0, 0, &[])),
            ),
            (
                "motd line\nunchanged\nretired:0 watched:3\nkeys: a.b_c-d\n",
                Some((false, 0, 3, &["a.b_c-d"])),
            ),
            ("updated\nretired:0 watched:0\nkeys: v1", None),
            ("updated\nkeys: v1\n", None),
            ("retired:0 watched:0\nkeys: v1\n", None),
            ("changed\nretired:0 watched:0\nkeys: v1\n", None),
            ("updated\nretired:-1 watched:0\nkeys: v1\n", None),
            ("updated\nretired:1 watched:\nkeys: v1\n", None),
            ("updated\nretired:0 watched:0\nkeys: v1  v2\n", None),
            ("updated\nretired:0 watched:0\nkeys:v1\n", None),
            ("updated\nretired:0 watched:0\nkeys: v;1\n", None),
        ];
        for (stdout, expected) in cases {
            let got = parse_report(stdout);
            match expected {
                Some((changed, retired, watched, ids)) => {
                    let report = got.unwrap();
                    assert_eq!(report.changed, changed, "{stdout:?}");
                    assert_eq!(
                        (report.retired, report.watched),
                        (retired, watched),
                        "{stdout:?}"
                    );
                    assert_eq!(report.version_ids, ids, "{stdout:?}");
                }
                None => assert!(
                    matches!(got, Err(BlockError::BadScriptOutput { .. })),
                    "{stdout:?}"
                ),
            }
        }
    }

    #[test]
    fn messages_are_one_line_and_quote_short() {
        let long = "x".repeat(1000);
        let err = validate_block_id(&format!("{long}\n")).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\n'));
        assert!(text.len() < 300, "{text}");
    }
}
