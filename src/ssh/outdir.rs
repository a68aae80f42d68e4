//! `--outdir DIR` / `--errdir DIR` (clush's names, pssh's `-o`/`-e`): each host's stdout and
//! stderr in a file of its own, `DIR/<host>`, beside whatever else prints them.
//!
//! Owns: the directories (created 0700 when missing), the file name a host label becomes,
//! and each file's life: written under a temporary name in the same directory (created
//! exclusively, never through a symlink, mode 0600) and renamed over `DIR/<host>` only when
//! the host's command ended, so a reader never sees a half-written file and a symlink left at
//! `DIR/<host>` is replaced, never followed. A host whose command did not end (no login, a
//! lost session, a timeout, Ctrl-C) leaves no file and no temporary file. Invariant: memory
//! per host is one small write buffer whatever the host sends. Must not know: how the output
//! is also shown (the inner sink), or how the session was made.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::ssh::exec::OutputSink;
use crate::term::diag;

/// Where the files go; both `None` when neither option was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutputDirs {
    /// `--outdir`: each host's stdout.
    pub stdout: Option<PathBuf>,
    /// `--errdir`: each host's stderr.
    pub stderr: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum OutdirError {
    #[error("{option} {path}: cannot create the directory: {reason}: check the path and its parent's permissions")]
    Create {
        option: &'static str,
        path: String,
        reason: String,
    },
    #[error("{option} {path}: not a directory: name a directory (it is created if missing)")]
    NotDirectory { option: &'static str, path: String },
    #[error("--outdir and --errdir name the same directory ({0}): a host's stdout and stderr would take the same file; name two directories")]
    SameDirectory(String),
}

/// One run's output directories, shared by its hosts.
#[derive(Debug)]
pub struct OutputFiles {
    dirs: OutputDirs,
    /// Hosts whose file could not be written; each said why in its own line.
    failures: AtomicUsize,
    /// Makes temporary names unique within the process.
    counter: AtomicU64,
    /// How many hosts took each file name so far: the same host name twice (other users or
    /// ports) writes `<host>.1`, `<host>.2`, as pssh does, instead of one file replacing the
    /// other.
    taken: Mutex<HashMap<String, u32>>,
}

impl OutputFiles {
    /// Creates the directories that are missing (0700; an existing one keeps its mode).
    pub fn create(dirs: OutputDirs) -> Result<OutputFiles, OutdirError> {
        for (option, dir) in [("--outdir", &dirs.stdout), ("--errdir", &dirs.stderr)] {
            let Some(dir) = dir else { continue };
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|err| OutdirError::Create {
                    option,
                    path: dir.display().to_string(),
                    reason: err.to_string(),
                })?;
            if !dir.is_dir() {
                return Err(OutdirError::NotDirectory {
                    option,
                    path: dir.display().to_string(),
                });
            }
        }
        if let (Some(out), Some(err)) = (&dirs.stdout, &dirs.stderr) {
            let same = match (out.canonicalize(), err.canonicalize()) {
                (Ok(out), Ok(err)) => out == err,
                _ => out == err,
            };
            if same {
                return Err(OutdirError::SameDirectory(out.display().to_string()));
            }
        }
        Ok(OutputFiles {
            dirs,
            failures: AtomicUsize::new(0),
            counter: AtomicU64::new(0),
            taken: Mutex::new(HashMap::new()),
        })
    }

    /// Whether any host's file could not be written.
    pub fn failed(&self) -> bool {
        self.failures.load(Ordering::Relaxed) > 0
    }

    /// A sink that writes `label`'s output to its files and passes it on to `inner`.
    pub fn tee<'a>(&'a self, label: &str, inner: &'a mut dyn OutputSink) -> HostFiles<'a> {
        let name = self.claim(file_name(label));
        let open = |dir: &Option<PathBuf>| {
            let dir = dir.as_ref()?;
            match Pending::open(dir, &name, self.counter.fetch_add(1, Ordering::Relaxed)) {
                Ok(pending) => Some(pending),
                Err(err) => {
                    self.report(&dir.join(&name), &err);
                    None
                }
            }
        };
        HostFiles {
            out: open(&self.dirs.stdout),
            err: open(&self.dirs.stderr),
            inner,
            files: self,
        }
    }

    fn claim(&self, name: String) -> String {
        let mut taken = self.taken.lock().unwrap_or_else(PoisonError::into_inner);
        let count = taken.entry(name.clone()).or_insert(0);
        *count += 1;
        match *count {
            1 => name,
            n => format!("{name}.{}", n - 1),
        }
    }

    fn report(&self, path: &Path, err: &std::io::Error) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        diag::error(format_args!(
            "{}: cannot write: {err}: check the directory's space and permissions",
            path.display()
        ));
    }
}

/// The file name of a host label: `%` and `/` become `%25` and `%2F`, control characters
/// `%XX`, and a leading `.` `%2E`, so that every label is one plain, visible name in the
/// directory and two labels never share a file.
pub fn file_name(label: &str) -> String {
    let mut name = String::with_capacity(label.len());
    for (at, c) in label.char_indices() {
        match c {
            '%' | '/' => name.push_str(&format!("%{:02X}", c as u32)),
            '.' if at == 0 => name.push_str("%2E"),
            c if c.is_control() && (c as u32) < 0x100 => {
                name.push_str(&format!("%{:02X}", c as u32))
            }
            c => name.push(c),
        }
    }
    if name.is_empty() {
        name.push('%');
    }
    name
}

/// A file being written under its temporary name.
#[derive(Debug)]
struct Pending {
    temporary: PathBuf,
    target: PathBuf,
    file: Option<BufWriter<File>>,
    /// The first write error; later writes are skipped.
    error: Option<std::io::Error>,
}

impl Pending {
    fn open(dir: &Path, name: &str, unique: u64) -> std::io::Result<Pending> {
        // A leading '.' keeps the temporary name apart from every final name, which never
        // starts with one.
        let temporary = dir.join(format!(".{name}.smssh-{}-{unique}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&temporary)?;
        Ok(Pending {
            target: dir.join(name),
            temporary,
            file: Some(BufWriter::with_capacity(64 * 1024, file)),
            error: None,
        })
    }

    fn write(&mut self, data: &[u8]) {
        if self.error.is_some() {
            return;
        }
        if let Some(file) = &mut self.file {
            if let Err(err) = file.write_all(data) {
                self.error = Some(err);
            }
        }
    }

    /// Flushes and renames over the target (rename replaces a symlink there, it does not
    /// follow it).
    fn commit(mut self) -> Result<(), (PathBuf, std::io::Error)> {
        let target = self.target.clone();
        if let Some(err) = self.error.take() {
            return Err((target, err));
        }
        // No fsync: the rename alone is what readers need (they see the old name or the
        // whole file), and thousands of hosts must not each wait for the disk.
        let flushed = match self.file.take() {
            Some(file) => file
                .into_inner()
                .map(drop)
                .map_err(std::io::IntoInnerError::into_error),
            None => Ok(()),
        };
        flushed
            .and_then(|()| std::fs::rename(&self.temporary, &target))
            .map_err(|err| (target, err))
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        // Committed files were renamed away; anything else must not stay behind.
        let _ = std::fs::remove_file(&self.temporary);
    }
}

/// One host's files, and the sink that also shows its output.
pub struct HostFiles<'a> {
    out: Option<Pending>,
    err: Option<Pending>,
    inner: &'a mut dyn OutputSink,
    files: &'a OutputFiles,
}

impl HostFiles<'_> {
    /// The command ended: both files take their final names. Dropped instead (the command did
    /// not end), they are removed.
    pub fn commit(mut self) {
        for pending in [self.out.take(), self.err.take()].into_iter().flatten() {
            if let Err((path, err)) = pending.commit() {
                self.files.report(&path, &err);
            }
        }
    }
}

impl OutputSink for HostFiles<'_> {
    fn stdout(&mut self, data: &[u8]) {
        if let Some(out) = &mut self.out {
            out.write(data);
        }
        self.inner.stdout(data);
    }

    fn stderr(&mut self, data: &[u8]) {
        if let Some(err) = &mut self.err {
            err.write(data);
        }
        self.inner.stderr(data);
    }

    fn finish(&mut self) {
        self.inner.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ssh::exec::Captured;

    #[test]
    fn labels_become_one_plain_name_each() {
        for (label, name) in [
            ("127.0.0.2", "127.0.0.2"),
            ("..", "%2E."),
            (".hidden", "%2Ehidden"),
            ("a/b", "a%2Fb"),
            ("50%", "50%25"),
            ("a\nb", "a%0Ab"),
            ("", "%"),
            ("user@host:22", "user@host:22"),
        ] {
            assert_eq!(file_name(label), name, "{label:?}");
        }
    }

    #[test]
    fn files_appear_whole_replace_symlinks_and_vanish_when_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out/nested");
        let files = OutputFiles::create(OutputDirs {
            stdout: Some(out.clone()),
            stderr: None,
        })
        .unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o700
        );
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        std::os::unix::fs::symlink(&victim, out.join("h1")).unwrap();
        let mut shown = Captured::default();
        let mut sink = files.tee("h1", &mut shown);
        sink.stdout(b"hello ");
        sink.stdout(b"world\n");
        assert!(
            out.join("h1").is_symlink(),
            "nothing is renamed before the host ends"
        );
        sink.commit();
        assert_eq!(
            std::fs::read_to_string(out.join("h1")).unwrap(),
            "hello world\n"
        );
        assert!(!out.join("h1").is_symlink());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");
        assert_eq!(shown.stdout, b"hello world\n");
        let mut other = Captured::default();
        let mut sink = files.tee("h2", &mut other);
        sink.stdout(b"partial");
        drop(sink);
        let names: Vec<_> = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["h1"]);
        // The same label again (another user or port of the same host) gets a file of its own.
        let mut again = Captured::default();
        let mut sink = files.tee("h1", &mut again);
        sink.stdout(b"second\n");
        sink.commit();
        assert_eq!(
            std::fs::read_to_string(out.join("h1.1")).unwrap(),
            "second\n"
        );
        assert!(!files.failed());
    }
}
