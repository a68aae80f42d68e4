//! scp's semantics on top of [`crate::transfer`]: which source goes to which target path,
//! recursion, `-p`, the per-source error lines and the exit status.
//!
//! Owns: the rules users know from scp: a directory target receives sources under their own
//! names; several sources need a directory target; directories need `-r`; every failing source
//! prints `smscp: PATH: reason` and the rest still copy; exit 1 if anything failed. Invariant:
//! names that come from a server in a remote→local recursive copy are plain names (no `/`,
//! `.`, `..`) before they touch the local file system. Must not know: SFTP packets or how
//! connections are made.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::keysource::KeySource;
use crate::operand::{Operand, RemotePath};
use crate::plan::SshOptions;
use crate::session::{self, Connection, HostKeyDb};
use crate::transfer::{self, Meter, RemoteStat, Sftp, TransferError};

/// The copy the user asked for, resolved.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    pub sources: Vec<Operand>,
    pub target: Operand,
    pub recursive: bool,
    pub preserve: bool,
    /// `-P`: applies to every remote operand without its own port.
    pub port: Option<u16>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CopyPlanError {
    #[error(
        "copies between two remote hosts are not supported: copy to the master first, then out"
    )]
    RemoteToRemote,
    #[error("both {0} and the target are local: use cp")]
    LocalToLocal(String),
}

/// Checks the operand shapes before anything connects.
pub fn check_shape(request: &CopyRequest) -> Result<(), CopyPlanError> {
    let target_remote = matches!(request.target, Operand::Remote(_));
    for source in &request.sources {
        match (source, target_remote) {
            (Operand::Remote(_), true) => return Err(CopyPlanError::RemoteToRemote),
            (Operand::Local(path), false) => {
                return Err(CopyPlanError::LocalToLocal(path.display().to_string()))
            }
            _ => {}
        }
    }
    Ok(())
}

/// Counts failures and prints each as it happens, so a long copy reports early.
#[derive(Default)]
struct Outcome {
    failures: usize,
}

impl Outcome {
    fn fail(&mut self, what: impl std::fmt::Display, meter: &Meter) {
        self.failures += 1;
        let line = format!("{}: {what}", crate::diag::program());
        match meter.bar() {
            Some(bar) => bar.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
}

fn describe(host: &str, err: &TransferError) -> String {
    match err {
        TransferError::Remote { path, reason } => format!("{host}:{path}: {reason}"),
        TransferError::Local { .. } | TransferError::Interrupted { .. } => err.to_string(),
        TransferError::Subsystem { .. } => format!("{host}: {err}"),
    }
}

/// Runs the copy; returns scp's exit status (0, or 1 if anything failed).
pub async fn run(
    request: &CopyRequest,
    ssh: &SshOptions,
    keys: &KeySource,
    db: &HostKeyDb,
    meter: &Meter,
) -> u8 {
    let mut outcome = Outcome::default();
    match &request.target {
        Operand::Remote(target) => {
            upload(request, target, ssh, keys, db, meter, &mut outcome).await
        }
        Operand::Local(target) => {
            download(request, target, ssh, keys, db, meter, &mut outcome).await
        }
    }
    if let Some(bar) = meter.bar() {
        bar.finish_and_clear();
    }
    if crate::cancel::requested() {
        130
    } else {
        u8::from(outcome.failures > 0)
    }
}

async fn open(
    remote: &RemotePath,
    request: &CopyRequest,
    ssh: &SshOptions,
    keys: &KeySource,
    db: &HostKeyDb,
) -> Result<(Connection, Sftp), String> {
    let plan = ssh.plan(
        &remote.host,
        remote.user.as_deref(),
        remote.port.or(request.port),
    );
    let conn = session::connect(&plan, keys, db)
        .await
        .map_err(|e| e.to_string())?;
    let sftp = Sftp::open(&conn)
        .await
        .map_err(|e| format!("{}: {e}", remote.host))?;
    Ok((conn, sftp))
}

fn local_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

async fn upload(
    request: &CopyRequest,
    target: &RemotePath,
    ssh: &SshOptions,
    keys: &KeySource,
    db: &HostKeyDb,
    meter: &Meter,
    outcome: &mut Outcome,
) {
    let (_conn, sftp) = match open(target, request, ssh, keys, db).await {
        Ok(opened) => opened,
        Err(err) => return outcome.fail(err, meter),
    };
    let host = &target.host;
    let target_is_dir = match sftp.stat(&target.path).await {
        Ok(stat) => stat.is_some_and(|s| s.is_dir),
        Err(err) => return outcome.fail(describe(host, &err), meter),
    };
    if request.sources.len() > 1 && !target_is_dir {
        return outcome.fail(format!("{host}:{}: Not a directory", target.path), meter);
    }
    for source in &request.sources {
        if crate::cancel::requested() {
            break;
        }
        let Operand::Local(path) = source else {
            continue;
        };
        let meta = match std::fs::metadata(path) {
            Ok(meta) => meta,
            Err(err) => {
                outcome.fail(describe(host, &transfer_local(path, err)), meter);
                continue;
            }
        };
        let dest = if target_is_dir {
            transfer::remote_join(&target.path, &local_name(path))
        } else {
            target.path.clone()
        };
        if meta.is_dir() {
            if !request.recursive {
                outcome.fail(
                    format!("{}: not a regular file (use -r)", path.display()),
                    meter,
                );
                continue;
            }
            upload_tree(&sftp, host, path, &dest, request.preserve, meter, outcome).await;
        } else {
            upload_one(
                &sftp,
                host,
                path,
                &meta,
                &dest,
                request.preserve,
                meter,
                outcome,
            )
            .await;
        }
    }
}

fn transfer_local(path: &Path, err: std::io::Error) -> TransferError {
    TransferError::Local {
        path: path.display().to_string(),
        reason: match err.kind() {
            std::io::ErrorKind::NotFound => "No such file or directory".to_owned(),
            std::io::ErrorKind::PermissionDenied => "Permission denied".to_owned(),
            _ => err.to_string(),
        },
    }
}

#[allow(clippy::too_many_arguments)] // One file's worth of context; a struct would only rename it.
async fn upload_one(
    sftp: &Sftp,
    host: &str,
    path: &Path,
    meta: &std::fs::Metadata,
    dest: &str,
    preserve: bool,
    meter: &Meter,
    outcome: &mut Outcome,
) {
    if !meta.is_file() {
        return outcome.fail(format!("{}: not a regular file", path.display()), meter);
    }
    let (mode, times) = transfer::local_mode_and_times(meta);
    if let Some(bar) = meter.bar() {
        bar.inc_length(meta.len());
    }
    if let Err(err) = sftp
        .upload(path, dest, mode, preserve.then_some(times), meter)
        .await
    {
        outcome.fail(describe(host, &err), meter);
    }
}

async fn upload_tree(
    sftp: &Sftp,
    host: &str,
    dir: &Path,
    dest: &str,
    preserve: bool,
    meter: &Meter,
    outcome: &mut Outcome,
) {
    // An explicit stack instead of recursion: async recursion would need boxing per level.
    let mut stack = vec![(dir.to_path_buf(), dest.to_owned())];
    let mut finished_dirs = Vec::new();
    while let Some((local_dir, remote_dir)) = stack.pop() {
        let meta = match std::fs::metadata(&local_dir) {
            Ok(meta) => meta,
            Err(err) => {
                outcome.fail(describe(host, &transfer_local(&local_dir, err)), meter);
                continue;
            }
        };
        let (mode, times) = transfer::local_mode_and_times(&meta);
        if let Err(err) = sftp.mkdir(&remote_dir, mode | 0o700).await {
            outcome.fail(describe(host, &err), meter);
            continue;
        }
        let entries = match std::fs::read_dir(&local_dir) {
            Ok(entries) => entries,
            Err(err) => {
                outcome.fail(describe(host, &transfer_local(&local_dir, err)), meter);
                continue;
            }
        };
        let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        names.sort();
        for path in names {
            let child = transfer::remote_join(&remote_dir, &local_name(&path));
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => stack.push((path, child)),
                Ok(meta) => {
                    upload_one(sftp, host, &path, &meta, &child, preserve, meter, outcome).await
                }
                Err(err) => outcome.fail(describe(host, &transfer_local(&path, err)), meter),
            }
        }
        finished_dirs.push((remote_dir, mode, times));
    }
    // Directory modes and times go last: writing the files inside would change the mtime,
    // and a read-only mode would refuse them.
    for (remote_dir, mode, times) in finished_dirs.into_iter().rev() {
        let result = if preserve {
            sftp.set_times_and_mode(&remote_dir, Some(mode), Some(times))
                .await
        } else {
            Ok(())
        };
        if let Err(err) = result {
            outcome.fail(describe(host, &err), meter);
        }
    }
}

/// The last component of a remote path, which names the local copy.
fn remote_name(path: &str) -> Option<&str> {
    let trimmed = path.trim_end_matches('/');
    let name = trimmed.rsplit('/').next().unwrap_or(trimmed);
    is_plain_name(name).then_some(name)
}

/// A name a server may give us for a file in a directory: nothing that climbs or roots.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

/// The permission bits a new local file gets without `-p`: the remote mode under our umask,
/// as scp does.
fn local_mode(remote_mode: u32, preserve: bool, umask: u32) -> u32 {
    if preserve {
        remote_mode & 0o7777
    } else {
        remote_mode & 0o777 & !umask
    }
}

fn current_umask() -> u32 {
    use nix::sys::stat::{umask, Mode};
    // umask can only be read by setting it; it is put back at once, before any file is made.
    let old = umask(Mode::from_bits_truncate(0o022));
    umask(old);
    old.bits()
}

/// One SFTP session per distinct (user, host, port) among the sources.
type SessionKey = (Option<String>, String, Option<u16>);

async fn download(
    request: &CopyRequest,
    target: &Path,
    ssh: &SshOptions,
    keys: &KeySource,
    db: &HostKeyDb,
    meter: &Meter,
    outcome: &mut Outcome,
) {
    let target_is_dir = target.is_dir();
    if request.sources.len() > 1 && !target_is_dir {
        return outcome.fail(format!("{}: Not a directory", target.display()), meter);
    }
    let umask = current_umask();
    let mut sessions: HashMap<SessionKey, (Connection, Sftp)> = HashMap::new();
    for source in &request.sources {
        if crate::cancel::requested() {
            break;
        }
        let Operand::Remote(remote) = source else {
            continue;
        };
        let key = (remote.user.clone(), remote.host.clone(), remote.port);
        if !sessions.contains_key(&key) {
            match open(remote, request, ssh, keys, db).await {
                Ok(opened) => {
                    sessions.insert(key.clone(), opened);
                }
                Err(err) => {
                    outcome.fail(err, meter);
                    continue;
                }
            }
        }
        let Some((_, sftp)) = sessions.get(&key) else {
            continue;
        };
        let host = &remote.host;
        let stat = match sftp.stat(&remote.path).await {
            Ok(Some(stat)) => stat,
            Ok(None) => {
                outcome.fail(
                    format!("{host}:{}: No such file or directory", remote.path),
                    meter,
                );
                continue;
            }
            Err(err) => {
                outcome.fail(describe(host, &err), meter);
                continue;
            }
        };
        let dest = if target_is_dir {
            match remote_name(&remote.path) {
                Some(name) => target.join(name),
                None => {
                    outcome.fail(
                        format!(
                            "{host}:{}: cannot name the local copy: give a target file name",
                            remote.path
                        ),
                        meter,
                    );
                    continue;
                }
            }
        } else {
            target.to_path_buf()
        };
        if let Some(parent) = dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            if !parent.is_dir() {
                outcome.fail(
                    format!(
                        "{}: No such file or directory (the target directory is missing)",
                        parent.display()
                    ),
                    meter,
                );
                continue;
            }
        }
        if stat.is_dir {
            if !request.recursive {
                outcome.fail(
                    format!("{host}:{}: not a regular file (use -r)", remote.path),
                    meter,
                );
                continue;
            }
            download_tree(
                sftp,
                host,
                &remote.path,
                &dest,
                request.preserve,
                umask,
                meter,
                outcome,
            )
            .await;
        } else {
            download_one(
                sftp,
                host,
                &remote.path,
                &stat,
                &dest,
                request.preserve,
                umask,
                meter,
                outcome,
            )
            .await;
        }
    }
}

#[allow(clippy::too_many_arguments)] // One file's worth of context; a struct would only rename it.
async fn download_one(
    sftp: &Sftp,
    host: &str,
    path: &str,
    stat: &RemoteStat,
    dest: &Path,
    preserve: bool,
    umask: u32,
    meter: &Meter,
    outcome: &mut Outcome,
) {
    if let Some(bar) = meter.bar() {
        bar.inc_length(stat.size);
    }
    let mode = local_mode(stat.mode, preserve, umask);
    if let Err(err) = sftp.download(path, stat, dest, mode, preserve, meter).await {
        outcome.fail(describe(host, &err), meter);
    }
}

#[allow(clippy::too_many_arguments)] // One file's worth of context; a struct would only rename it.
async fn download_tree(
    sftp: &Sftp,
    host: &str,
    dir: &str,
    dest: &Path,
    preserve: bool,
    umask: u32,
    meter: &Meter,
    outcome: &mut Outcome,
) {
    let mut stack = vec![(dir.to_owned(), dest.to_path_buf())];
    let mut finished_dirs = Vec::new();
    while let Some((remote_dir, local_dir)) = stack.pop() {
        if let Err(err) = std::fs::create_dir(&local_dir) {
            if !(err.kind() == std::io::ErrorKind::AlreadyExists && local_dir.is_dir()) {
                outcome.fail(describe(host, &transfer_local(&local_dir, err)), meter);
                continue;
            }
        }
        let entries = match sftp.read_dir(&remote_dir).await {
            Ok(entries) => entries,
            Err(err) => {
                outcome.fail(describe(host, &err), meter);
                continue;
            }
        };
        let mut dir_stat = None;
        if preserve {
            dir_stat = sftp.stat(&remote_dir).await.ok().flatten();
        }
        for (name, stat) in entries {
            if !is_plain_name(&name) {
                outcome.fail(
                    format!("{host}:{remote_dir}: the server sent the file name {name:?}, which is not a plain name: refused"),
                    meter,
                );
                continue;
            }
            let child_remote = transfer::remote_join(&remote_dir, &name);
            let child_local = local_dir.join(&name);
            if stat.is_dir {
                stack.push((child_remote, child_local));
            } else {
                download_one(
                    sftp,
                    host,
                    &child_remote,
                    &stat,
                    &child_local,
                    preserve,
                    umask,
                    meter,
                    outcome,
                )
                .await;
            }
        }
        finished_dirs.push((local_dir, dir_stat));
    }
    for (local_dir, stat) in finished_dirs.into_iter().rev() {
        if let Some(stat) = stat {
            let applied = std::fs::set_permissions(
                &local_dir,
                std::os::unix::fs::PermissionsExt::from_mode(stat.mode & 0o7777),
            )
            .and_then(|()| {
                let times = std::fs::FileTimes::new()
                    .set_accessed(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_secs(u64::from(stat.atime)),
                    )
                    .set_modified(
                        std::time::UNIX_EPOCH
                            + std::time::Duration::from_secs(u64::from(stat.mtime)),
                    );
                std::fs::File::open(&local_dir)?.set_times(times)
            });
            if let Err(err) = applied {
                outcome.fail(describe(host, &transfer_local(&local_dir, err)), meter);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_from_the_server_must_be_plain() {
        let cases = [
            ("file", true),
            (".hidden", true),
            ("a b", true),
            ("", false),
            (".", false),
            ("..", false),
            ("a/b", false),
            ("/etc", false),
            ("../x", false),
        ];
        for (name, plain) in cases {
            assert_eq!(is_plain_name(name), plain, "{name:?}");
        }
    }

    #[test]
    fn remote_names_and_modes() {
        assert_eq!(remote_name("/var/log/app.log"), Some("app.log"));
        assert_eq!(remote_name("dir/"), Some("dir"));
        assert_eq!(remote_name("plain"), Some("plain"));
        assert_eq!(remote_name(""), None);
        assert_eq!(remote_name("/"), None);
        assert_eq!(local_mode(0o100755, false, 0o022), 0o755);
        assert_eq!(local_mode(0o100777, false, 0o027), 0o750);
        assert_eq!(local_mode(0o104755, true, 0o022), 0o4755);
    }

    #[test]
    fn operand_shapes() {
        let remote = Operand::Remote(RemotePath {
            user: None,
            host: "h".into(),
            port: None,
            path: "p".into(),
        });
        let local = Operand::Local(PathBuf::from("f"));
        let request = |sources: Vec<Operand>, target: Operand| CopyRequest {
            sources,
            target,
            recursive: false,
            preserve: false,
            port: None,
        };
        assert_eq!(
            check_shape(&request(vec![local.clone()], remote.clone())),
            Ok(())
        );
        assert_eq!(
            check_shape(&request(vec![remote.clone()], local.clone())),
            Ok(())
        );
        assert_eq!(
            check_shape(&request(vec![remote.clone()], remote.clone())),
            Err(CopyPlanError::RemoteToRemote)
        );
        assert!(matches!(
            check_shape(&request(vec![local.clone()], local)),
            Err(CopyPlanError::LocalToLocal(_))
        ));
    }
}
