//! Records appended to a file, one JSON line each (`--audit-log FILE`, or `file =` in a
//! configuration's `[audit]` table).
//!
//! Owns: how the file is opened and written. Invariants: the file is opened with O_APPEND and
//! created 0600 (records name hosts and commands), never through a symbolic link as its last
//! component, and each record is one `write` of one whole line, so that several smssh
//! processes appending at once never interleave inside a line. Must not know what a record
//! holds.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct FileSink {
    file: File,
    path: PathBuf,
}

impl FileSink {
    /// Opens `path` for appending, creating it 0600 if it does not exist.
    pub fn open(path: &Path) -> std::io::Result<FileSink> {
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
            .open(path)?;
        if !file.metadata()?.is_file() {
            return Err(std::io::Error::other("not a regular file"));
        }
        Ok(FileSink {
            file,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `record` and a newline in one write.
    pub fn append(&self, record: &str) -> std::io::Result<()> {
        let mut line = String::with_capacity(record.len() + 1);
        line.push_str(record);
        line.push('\n');
        let written = (&self.file).write(line.as_bytes())?;
        if written == line.len() {
            Ok(())
        } else {
            Err(std::io::Error::other("a short write: the disk may be full"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn a_new_file_is_private_and_lines_are_appended() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.json");
        std::fs::write(&path, "").unwrap();
        std::fs::remove_file(&path).unwrap();
        let sink = FileSink::open(&path).unwrap();
        sink.append("{\"a\":1}").unwrap();
        let again = FileSink::open(&path).unwrap();
        again.append("{\"b\":2}").unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn symbolic_links_and_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("target");
        std::fs::write(&target, "keep\n").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(FileSink::open(&link).is_err());
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep\n");
        assert!(FileSink::open(dir.path()).is_err());
    }
}
