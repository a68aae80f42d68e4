//! `smscp --via s3://BUCKET/PREFIX`: an upload whose bytes leave this host once, to S3, and
//! reach every host from there, so that what the master sends does not grow with the host
//! count.
//!
//! Owns: the order of a run (every file uploaded once, then every host fetches every file over
//! the SSH session the fan-out opened, then every object deleted unless `--keep`, after
//! failures and Ctrl-C too) and the one fixed script each host runs per file: read a presigned
//! URL from stdin, download it with curl (wget when curl is missing) to a temporary name in the
//! target directory, verify the SHA-256 recorded during the upload, set the mode as scp would,
//! rename it into place; any failure removes the temporary file and prints one line. Invariants:
//! the presigned URL (a bearer credential) travels only on the command's stdin, never in a
//! command line, an environment variable, a log or an error; every value in the command line
//! is single-quoted; a host's failure is that host's alone. Must not know: how S3 is called
//! (`aws/s3`), how sessions are made (`fanout`) or how hosts are chosen (`plan`).

use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::ExposeSecret;

use crate::audit::{Action, Outcome};
use crate::aws::s3::{Bucket, S3Error};
use crate::copy::{exit_status, AuditedHost, CopyContext};
use crate::fanout;
use crate::key::source::KeySource;
use crate::plan::copy::ViaS3;
use crate::plan::{FanoutOptions, HostPlan};
use crate::rotation::block::shell_quote;
use crate::ssh::exec::{self, Captured, ExecError, ExecRequest, RemoteExit};
use crate::ssh::session::HostKeyDb;
use crate::term::{cancel, diag, output};

/// How long a presigned URL is valid at most. Each host's URL is made just before its
/// download starts, and S3 checks the expiry when a request starts (a long download that
/// started in time completes), so the URL only has to outlive the few seconds before curl
/// connects; the margin covers clock skew and a slow connection setup.
const PRESIGN_EXPIRY: Duration = Duration::from_secs(600);
/// The shortest expiry used, whatever `--timeout` says.
const MIN_PRESIGN_EXPIRY: Duration = Duration::from_secs(60);
/// Output kept from one host's download command: the script prints at most a few short lines,
/// so anything longer is a hostile or broken shell and is cut.
const OUTPUT_LIMIT: usize = 64 * 1024;
/// The longest failure line taken from a host.
const MAX_REASON: usize = 512;

/// The script each host runs for one file, as `sh -c SCRIPT smscp ARGS`. Arguments: the target
/// as typed, the file's name, 1 when several files go to one target (which must then be a
/// directory), the SHA-256, the source's mode in octal, `p` for scp's -p (else `-`), and the
/// modification and access times. The URL is the first line of stdin: it is read into a shell
/// variable and handed to curl or wget on their stdin by `printf`, a builtin of every POSIX
/// shell this runs under (dash, bash), so it appears in no process's arguments or environment.
/// After the download has been verified, `verified` is written to stdout before the rename: if
/// the session is gone (Ctrl-C on the master), the write raises SIGPIPE, the trap exits, and
/// the temporary file is removed instead of renamed. The digest comes from `openssl dgst`
/// when the host has it (OpenSSL uses the CPU's SHA extensions: 256 MiB in 0.15 s of CPU here,
/// against 0.48 s for coreutils' `sha256sum`, the fallback); its `(stdin)= HEX` and
/// `SHA2-256(stdin)= HEX` forms both end in the digest.
const SCRIPT: &str = r#"t=$1 name=$2 several=$3 sum=$4 mode=$5 keep=$6 mtime=$7 atime=$8
tmp=
fail() { printf '%s\n' "$1" >&2; exit 1; }
trap 'if [ -n "$tmp" ]; then rm -f -- "$tmp"; fi' EXIT
trap 'exit 1' HUP INT TERM PIPE
case $t in "~") t=$HOME ;; "~/"*) t=$HOME/${t#"~/"} ;; "") t=. ;; esac
if [ -d "$t" ]; then dest=${t%/}/$name
elif [ "$several" = 1 ]; then fail "$t: Not a directory"
else dest=$t; fi
[ -d "$dest" ] && fail "$dest: Is a directory"
case $dest in */*) dir=${dest%/*} ;; *) dir=. ;; esac
[ -n "$dir" ] || dir=/
IFS= read -r url || fail "$dest: no download URL was sent"
tmp=$(mktemp -- "$dir/.smscp.XXXXXX" 2>&1) || { why=${tmp##*: }; tmp=; fail "$dest: cannot create a temporary file in $dir: $why"; }
if command -v curl >/dev/null 2>&1; then
  printf 'url = "%s"\n' "$url" | curl -fs --speed-time 60 --speed-limit 1 -K - -o "$tmp" 2>/dev/null
  rc=$?
  [ "$rc" -eq 0 ] || fail "$dest: download from S3 failed: curl exit status $rc"
elif command -v wget >/dev/null 2>&1; then
  printf '%s\n' "$url" | wget -q --tries=1 --read-timeout=60 -O "$tmp" -i - 2>/dev/null
  rc=$?
  [ "$rc" -eq 0 ] || fail "$dest: download from S3 failed: wget exit status $rc"
else
  fail "$dest: neither curl nor wget is installed: install one, or copy with --via direct"
fi
url=
if command -v openssl >/dev/null 2>&1 && got=$(openssl dgst -sha256 <"$tmp" 2>/dev/null); then
  got=${got##* }
elif command -v sha256sum >/dev/null 2>&1; then
  got=$(sha256sum <"$tmp") || fail "$dest: cannot read the download back"
  got=${got%% *}
else
  fail "$dest: neither openssl nor sha256sum is installed: install coreutils, or copy with --via direct"
fi
[ "$got" = "$sum" ] || fail "$dest: checksum mismatch: the download's SHA-256 is $got, the upload's $sum: not copied"
if [ "$keep" = p ]; then m=$mode
elif [ -f "$dest" ] && [ ! -L "$dest" ]; then m=$(stat -c %a -- "$dest") || fail "$dest: cannot read the mode of the file it replaces"
else m=$(printf '%o' $(( 0$mode & 0777 & ~0$(umask) ))); fi
chmod "$m" "$tmp" || fail "$dest: cannot set the mode $m"
if [ "$keep" = p ]; then
  touch -m -d "@$mtime" -- "$tmp" && touch -a -d "@$atime" -- "$tmp" || fail "$dest: cannot set the times"
fi
printf 'verified\n' || exit 1
mv -f -- "$tmp" "$dest" || fail "$dest: cannot rename the download into place"
tmp=
"#;

/// One file of the run, uploaded.
struct Staged {
    key: String,
    /// The name it gets in a directory target.
    name: String,
    /// The source's permission bits, as scp -p gives them.
    mode: u32,
    /// (atime, mtime), as scp -p gives them.
    times: (u32, u32),
    sha256: String,
    /// Bytes uploaded, for the hosts' audit records.
    size: u64,
}

/// One host's failed part: a line per failing file (`PATH: reason`), shown as the first and
/// how many more in a fan-out's summary, every one in a single-host copy as scp shows them.
#[derive(Debug, thiserror::Error)]
#[error("{}{}", .lines[0], if .lines.len() > 1 { format!(" (and {} more errors)", .lines.len() - 1) } else { String::new() })]
struct HostFailure {
    /// Never empty: a host without a failure has no `HostFailure`.
    lines: Vec<String>,
}

/// Runs the upload of `sources` to `target` on every host of `plans` through S3; prints what
/// failed (as scp for a single-host copy, else the fan-out's summary); returns scp's status.
#[allow(clippy::too_many_arguments)] // The same context as `copy::run_fanout`, plus the S3 part.
pub async fn run(
    via: &ViaS3,
    sources: Vec<PathBuf>,
    target: String,
    plans: Vec<HostPlan>,
    keys: Arc<KeySource>,
    db: HostKeyDb,
    options: &FanoutOptions,
    ctx: &CopyContext,
) -> u8 {
    let bucket = Arc::new(Bucket::new(keys.aws_config().await, via.location.clone()));
    let run_id = format!("{:016x}", rand::random::<u64>());
    let (staged, mut failed) = upload_all(&bucket, &run_id, &sources, via).await;
    let staged = Arc::new(staged);
    let outcomes = if staged.is_empty() || cancel::requested() {
        Vec::new()
    } else {
        let several = sources.len() > 1;
        let expiry = options.host_timeout.map_or(PRESIGN_EXPIRY, |t| {
            t.clamp(MIN_PRESIGN_EXPIRY, PRESIGN_EXPIRY)
        });
        let job_staged = Arc::clone(&staged);
        let job_bucket = Arc::clone(&bucket);
        let target: Arc<str> = target.into();
        let preserve = ctx.preserve;
        let progress = Arc::clone(&ctx.progress);
        let auditor = Arc::clone(&ctx.audit);
        fanout::run(plans, keys, db, options, move |conn, plan| {
            let bucket = Arc::clone(&job_bucket);
            let staged = Arc::clone(&job_staged);
            let target = Arc::clone(&target);
            let progress = Arc::clone(&progress);
            let auditor = Arc::clone(&auditor);
            async move {
                let audited = AuditedHost::of(&plan, Some(&conn));
                let mut failures: Vec<String> = Vec::new();
                for (local, file) in staged.iter() {
                    if cancel::requested() {
                        break;
                    }
                    let started = std::time::Instant::now();
                    let fetched = fetch(&conn, &bucket, file, &target, several, preserve, expiry);
                    let result = fetched.await;
                    // The host wrote the file only if its SHA-256 matched the upload's, so a
                    // success records the upload's hash; a failure records none.
                    let (outcome, sha256) = match &result {
                        Ok(()) => (Outcome::Ok, Some(file.sha256.clone())),
                        Err(line) => (Outcome::Failed(line.clone()), None),
                    };
                    let remote = if several {
                        format!("{}/{}", target.trim_end_matches('/'), file.name)
                    } else {
                        target.to_string()
                    };
                    let action = Action::Upload {
                        local: local.display().to_string(),
                        remote,
                        bytes: if result.is_ok() { file.size } else { 0 },
                        sha256,
                    };
                    audited.record_to(&auditor, action, outcome, started);
                    if let Err(line) = result {
                        failures.push(line);
                    }
                }
                progress.host_done();
                if failures.is_empty() {
                    Ok(())
                } else {
                    Err(HostFailure { lines: failures })
                }
            }
        })
        .await
    };
    ctx.progress.finish();
    if via.single_host {
        for outcome in &outcomes {
            let program = diag::program();
            let label = &outcome.plan.label;
            match &outcome.result {
                Ok(()) => {}
                Err(fanout::HostError::Job(failure)) => {
                    failed = true;
                    for line in &failure.lines {
                        ctx.progress.line(&format!("{program}: {label}:{line}"));
                    }
                }
                Err(err) => {
                    failed = true;
                    let line = output::failure_line(label, err);
                    ctx.progress.line(&format!("{program}: {line}"));
                }
            }
        }
    } else {
        failed |= output::summarize(&outcomes, &ctx.progress) > 0;
    }
    failed |= !finish(&bucket, &staged, via.keep).await;
    exit_status(failed)
}

/// Uploads every regular file once; a source that cannot go (a directory, a name that is not
/// UTF-8, a refused upload) is reported and the others still go, as in scp. Returns what was
/// uploaded and whether anything failed. Stops at Ctrl-C.
async fn upload_all(
    bucket: &Bucket,
    run_id: &str,
    sources: &[PathBuf],
    via: &ViaS3,
) -> (Vec<(PathBuf, Staged)>, bool) {
    let mut staged = Vec::new();
    let mut failed = false;
    for (index, path) in sources.iter().enumerate() {
        if cancel::requested() {
            break;
        }
        let shown = path.display();
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(err) => {
                diag::error(format!(
                    "{shown}: {}",
                    crate::ssh::transfer::io_reason(&err)
                ));
                failed = true;
                continue;
            }
        };
        if !meta.is_file() {
            diag::error(format!(
                "{shown}: not a regular file: --via s3:// copies files; copy directories with --via direct"
            ));
            failed = true;
            continue;
        }
        let Some(name) = path.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
            diag::error(format!(
                "{shown}: the file name is not UTF-8: rename it, or copy it with --via direct"
            ));
            failed = true;
            continue;
        };
        let key = bucket.location().key(run_id, index);
        diag::debug(format_args!(
            "uploading {shown} to {}",
            bucket.location().url(&key)
        ));
        match bucket.upload(&key, path, via.kms_key.as_deref()).await {
            Ok(uploaded) => {
                diag::debug(format_args!(
                    "uploaded {} bytes, SHA-256 {}",
                    uploaded.size, uploaded.sha256
                ));
                let (mode, times) = crate::ssh::transfer::local_mode_and_times(&meta);
                staged.push((
                    path.clone(),
                    Staged {
                        key,
                        name,
                        mode: mode & 0o777,
                        times,
                        sha256: uploaded.sha256,
                        size: uploaded.size,
                    },
                ));
            }
            Err(err) => {
                diag::error(&err);
                failed = true;
                if matches!(err, S3Error::Interrupted { .. }) {
                    break;
                }
            }
        }
    }
    (staged, failed)
}

/// Deletes every object of the run unless `keep` (then names each). Returns false if any
/// object is left behind that should not be.
async fn finish(bucket: &Bucket, staged: &[(PathBuf, Staged)], keep: bool) -> bool {
    let mut clean = true;
    for (path, file) in staged {
        let url = bucket.location().url(&file.key);
        if keep {
            diag::warn(format_args!(
                "kept {url} ({}, SHA-256 {})",
                path.display(),
                file.sha256
            ));
            continue;
        }
        match bucket.delete(&file.key).await {
            Ok(()) => diag::debug(format_args!("deleted {url}")),
            Err(err) => {
                diag::error(&err);
                clean = false;
            }
        }
    }
    clean
}

/// One host fetches one file: a fresh presigned URL on the command's stdin, the fixed script
/// with its single-quoted arguments on the command line. Returns the failure line (starting
/// with the remote path) when the file did not arrive intact.
async fn fetch(
    conn: &crate::ssh::session::Connection,
    bucket: &Bucket,
    file: &Staged,
    target: &str,
    several: bool,
    preserve: bool,
    expiry: Duration,
) -> Result<(), String> {
    let url = bucket
        .presign_get(&file.key, expiry)
        .await
        .map_err(|err| format!("{target}: {err}"))?;
    let input = url_line(url.expose_secret()).ok_or_else(|| {
        format!("{target}: the presigned URL holds characters a download tool's input cannot carry")
    })?;
    let request = ExecRequest {
        command: Some(command(target, file, several, preserve)),
        pty: false,
        forward_stdin: false,
        input: Some(input),
    };
    let mut sink = Captured::with_limit(OUTPUT_LIMIT);
    // The fan-out's summary names the host, so the session's own errors lose their host here.
    let exit = exec::run(conn, &request, &mut sink)
        .await
        .map_err(|err| match err {
            ExecError::Channel { reason, .. } => {
                format!("{target}: cannot open a session: {reason}")
            }
            ExecError::Refused { what, reason, .. } => {
                format!("{target}: the server refused to run the {what}: {reason}")
            }
            // This script's stdin is its own `input`, never `--stdin-all`'s window.
            err @ (ExecError::StdinMissed { .. } | ExecError::StdinRead { .. }) => err.to_string(),
        })?;
    let verified = sink.stdout.windows(8).any(|w| w == b"verified");
    match exit {
        RemoteExit::Status(0) if verified => Ok(()),
        other => Err(last_line(&sink.stderr).unwrap_or_else(|| {
            format!(
                "{target}: the download command ended with {}",
                output::describe_exit(&other)
            )
        })),
    }
}

/// The command line of one file's download: `sh -c SCRIPT smscp ARGS`, every part quoted.
fn command(target: &str, file: &Staged, several: bool, preserve: bool) -> String {
    let mut line = format!("sh -c {} smscp", shell_quote(SCRIPT));
    let args = [
        target.to_owned(),
        file.name.clone(),
        if several { "1" } else { "0" }.to_owned(),
        file.sha256.clone(),
        format!("{:o}", file.mode),
        if preserve { "p" } else { "-" }.to_owned(),
        file.times.1.to_string(),
        file.times.0.to_string(),
    ];
    for arg in args {
        // Writing to a String cannot fail.
        let _ = write!(line, " {}", shell_quote(&arg));
    }
    line
}

/// The URL as the first line of the script's stdin, or None if it holds a character that
/// would end the line or break curl's quoted config value (a presigned URL never does).
fn url_line(url: &str) -> Option<Arc<[u8]>> {
    let plain = url
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\');
    plain.then(|| {
        let mut bytes = Vec::with_capacity(url.len() + 1);
        bytes.extend_from_slice(url.as_bytes());
        bytes.push(b'\n');
        Arc::from(bytes)
    })
}

/// The last non-empty line a host wrote to stderr, cut to [`MAX_REASON`] characters; it is
/// printed through `term/escape` like every line.
fn last_line(stderr: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(stderr);
    let line = text.lines().rev().find(|l| !l.trim().is_empty())?;
    Some(match line.char_indices().nth(MAX_REASON) {
        Some((cut, _)) => format!("{}...", &line[..cut]),
        None => line.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged() -> Staged {
        Staged {
            key: "p/smscp-1/0".to_owned(),
            name: "it's.bin".to_owned(),
            mode: 0o640,
            times: (1, 2),
            sha256: "ab".repeat(32),
            size: 3,
        }
    }

    #[test]
    fn every_argument_is_quoted() {
        let line = command("/opt/x; rm -rf /", &staged(), true, true);
        assert!(line.starts_with("sh -c '"));
        assert!(line.ends_with(&format!(
            " smscp '/opt/x; rm -rf /' 'it'\\''s.bin' '1' '{}' '640' 'p' '2' '1'",
            "ab".repeat(32)
        )));
    }

    #[test]
    fn urls_go_on_one_line() {
        let url = "https://b.s3.amazonaws.com/k?X-Amz-Signature=abc%2F&X-Amz-Expires=600";
        let line = url_line(url).expect("a presigned URL is plain");
        assert_eq!(&line[..], format!("{url}\n").as_bytes());
        for bad in ["http://x/\"", "http://x/\\", "http://x/ y", "http://x/\ny"] {
            assert!(url_line(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn the_last_line_names_the_failure() {
        assert_eq!(
            last_line(b"mv: cannot move\n/x: cannot rename\n\n").as_deref(),
            Some("/x: cannot rename")
        );
        assert_eq!(last_line(b" \n"), None);
        let long = "x".repeat(MAX_REASON + 10);
        assert_eq!(
            last_line(long.as_bytes()).map(|l| l.len()),
            Some(MAX_REASON + 3)
        );
    }
}
