//! Where the interactive shell's lines come from: a line editor with history on a terminal
//! (rustyline), plain lines without a prompt otherwise (scripts, as clush reads them).
//!
//! Owns: the prompt, the history file (`$XDG_STATE_HOME/smssh/history`, else
//! `~/.local/state/smssh/history`; a 0700 directory, a 0600 file, never a symbolic link) and
//! the bound on a line's length. Invariant: the history holds only lines the user typed and
//! chose to keep (a line starting with a space is not kept); nothing else is ever written to
//! it. Must not know: what a line means or where it runs.

use std::io::BufRead;
use std::path::{Path, PathBuf};

use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{Config, Editor};

/// The longest line the shell accepts, in bytes. Far more than any command typed or pasted;
/// a longer one (a file piped by mistake) is refused without being held in memory.
pub const MAX_LINE: usize = 128 * 1024;

/// Lines kept in the history.
const HISTORY_SIZE: usize = 1000;

/// The prompt, after clush's `clush> `.
const PROMPT: &str = "smssh> ";

/// What the next read gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Input {
    Line(String),
    /// Ctrl-C at the prompt: the line typed so far is dropped.
    Interrupted,
    /// Ctrl-D on an empty line, or the end of piped input.
    End,
    /// A line past [`MAX_LINE`] bytes, dropped up to its end; `number` counts piped lines.
    TooLong {
        number: Option<u64>,
    },
    /// A line that is not UTF-8 (piped input only; the editor reads UTF-8).
    NotText {
        number: u64,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error("cannot read the next line: {0}")]
    Read(std::io::Error),
    #[error("cannot read the next line: {0}")]
    Editor(ReadlineError),
    #[error("cannot use the terminal for line editing: {0}")]
    Terminal(ReadlineError),
}

type LineEditor = Editor<(), FileHistory>;

/// The shell's source of lines.
pub enum Reader {
    Editor {
        /// Taken out while a blocking read runs on tokio's blocking pool.
        editor: Option<Box<LineEditor>>,
        history: Option<PathBuf>,
    },
    Plain {
        lines: u64,
    },
}

impl Reader {
    /// The line editor when stdin is a terminal, with the history file when it can be used
    /// (a warning says why not otherwise); plain lines when it is not.
    pub fn open(terminal: bool) -> Result<Reader, InputError> {
        if !terminal {
            return Ok(Reader::Plain { lines: 0 });
        }
        let config = Config::builder()
            .max_history_size(HISTORY_SIZE)
            .and_then(|b| b.history_ignore_dups(true))
            .map_err(InputError::Terminal)?
            .history_ignore_space(true)
            .auto_add_history(false)
            .build();
        let mut editor = LineEditor::with_config(config).map_err(InputError::Terminal)?;
        let path = history_path();
        let history = match prepare_history(&path) {
            Ok(()) => match editor.load_history(&path) {
                Ok(()) => Some(path),
                Err(err) => {
                    warn_history(&path, &err.to_string());
                    None
                }
            },
            Err(err) => {
                warn_history(&path, &err.to_string());
                None
            }
        };
        Ok(Reader::Editor {
            editor: Some(Box::new(editor)),
            history,
        })
    }

    /// Reads the next line: with the prompt and line editing on a terminal, else a plain line.
    pub async fn next(&mut self) -> Result<Input, InputError> {
        match self {
            Reader::Editor { editor, .. } => {
                let Some(mut taken) = editor.take() else {
                    // Only a read that panicked leaves no editor behind; that ends the input.
                    return Ok(Input::End);
                };
                let (taken, read) = tokio::task::spawn_blocking(move || {
                    let read = taken.readline(PROMPT);
                    (taken, read)
                })
                .await
                .map_err(|err| InputError::Read(std::io::Error::other(err)))?;
                *editor = Some(taken);
                match read {
                    Ok(line) if line.len() > MAX_LINE => Ok(Input::TooLong { number: None }),
                    Ok(line) => Ok(Input::Line(line)),
                    Err(ReadlineError::Interrupted) => Ok(Input::Interrupted),
                    Err(ReadlineError::Eof) => Ok(Input::End),
                    Err(err) => Err(InputError::Editor(err)),
                }
            }
            Reader::Plain { lines } => {
                *lines += 1;
                let number = *lines;
                let read = tokio::task::spawn_blocking(move || {
                    read_line(&mut std::io::stdin().lock(), MAX_LINE)
                })
                .await
                .map_err(|err| InputError::Read(std::io::Error::other(err)))?
                .map_err(InputError::Read)?;
                Ok(match read {
                    Line::End => Input::End,
                    Line::TooLong => Input::TooLong {
                        number: Some(number),
                    },
                    Line::Bytes(bytes) => match String::from_utf8(bytes) {
                        Ok(text) => Input::Line(text),
                        Err(_) => Input::NotText { number },
                    },
                })
            }
        }
    }

    /// Keeps `line` in the history (the editor's, and the file's at once, so that a shell
    /// that is killed keeps what it ran). A line starting with a space is not kept.
    pub fn remember(&mut self, line: &str) {
        let Reader::Editor {
            editor: Some(editor),
            history,
        } = self
        else {
            return;
        };
        if !matches!(editor.add_history_entry(line), Ok(true)) {
            return;
        }
        if let Some(path) = history {
            if let Err(err) = editor.append_history(path.as_path()) {
                warn_history(path, &err.to_string());
                // One warning is enough: the shell goes on without the file.
                *history = None;
            }
        }
    }
}

fn warn_history(path: &Path, why: &str) {
    crate::term::diag::warn(format_args!(
        "{}: {why}: the shell's history is not kept in a file this time",
        path.display()
    ));
}

/// The history file: under `$XDG_STATE_HOME` when it is an absolute path (as the XDG base
/// directory specification asks), else under `~/.local/state`.
pub fn history_path() -> PathBuf {
    let state = std::env::var_os("XDG_STATE_HOME")
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .unwrap_or_else(|| crate::plan::Local::detect().home.join(".local/state"));
    state.join("smssh").join("history")
}

/// Creates the history's directory (0700) and file (0600) if needed, refuses a symbolic link
/// in place of the file, and narrows an existing file's mode to 0600: the commands typed at
/// a cluster's master are nobody else's business.
fn prepare_history(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)?;
    let metadata = file.metadata()?;
    if !metadata.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    if metadata.permissions().mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    Ok(())
}

/// One plain line.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    /// The line without its `\n` (or `\r\n`).
    Bytes(Vec<u8>),
    /// Longer than the bound: dropped through its end.
    TooLong,
    End,
}

/// Reads one line of at most `max` bytes; a longer one is consumed through its newline
/// without being kept, so memory stays bounded whatever stdin holds.
fn read_line(reader: &mut impl BufRead, max: usize) -> std::io::Result<Line> {
    let mut line = Vec::new();
    let mut too_long = false;
    let mut any = false;
    loop {
        let buffer = match reader.fill_buf() {
            Ok(buffer) => buffer,
            Err(err) if err.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err),
        };
        if buffer.is_empty() {
            break;
        }
        any = true;
        let (chunk, done) = match buffer.iter().position(|&b| b == b'\n') {
            Some(end) => (&buffer[..end], Some(end + 1)),
            None => (buffer, None),
        };
        if !too_long {
            if line.len() + chunk.len() > max {
                too_long = true;
                line = Vec::new();
            } else {
                line.extend_from_slice(chunk);
            }
        }
        let used = done.unwrap_or(buffer.len());
        reader.consume(used);
        if done.is_some() {
            break;
        }
    }
    Ok(match (any, too_long) {
        (false, _) => Line::End,
        (true, true) => Line::TooLong,
        (true, false) => {
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Line::Bytes(line)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_lines_are_bounded_and_a_long_one_is_skipped_whole() {
        let text = format!("one\r\n{}\ntwo\nlast", "x".repeat(50));
        // A small buffer, so that lines span several reads.
        let mut reader = std::io::BufReader::with_capacity(7, text.as_bytes());
        let mut lines = Vec::new();
        loop {
            let line = read_line(&mut reader, 16).expect("reads from memory");
            if line == Line::End {
                break;
            }
            lines.push(line);
        }
        assert_eq!(
            lines,
            [
                Line::Bytes(b"one".to_vec()),
                Line::TooLong,
                Line::Bytes(b"two".to_vec()),
                Line::Bytes(b"last".to_vec()),
            ]
        );
    }

    #[test]
    fn an_empty_line_is_not_the_end() {
        let mut reader = std::io::BufReader::new(&b"\n"[..]);
        assert_eq!(
            read_line(&mut reader, 8).expect("reads"),
            Line::Bytes(vec![])
        );
        assert_eq!(read_line(&mut reader, 8).expect("reads"), Line::End);
    }

    #[test]
    fn the_history_file_is_private_and_never_a_link() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("state/smssh/history");
        prepare_history(&path).expect("created");
        let mode = |p: &Path| std::fs::metadata(p).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().expect("a parent")), 0o700);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        prepare_history(&path).expect("narrowed");
        assert_eq!(mode(&path), 0o600);
        let link = dir.path().join("state/smssh/linked");
        std::os::unix::fs::symlink(&path, &link).expect("a link");
        assert!(
            prepare_history(&link).is_err(),
            "a symbolic link is refused"
        );
    }
}
