//! The local terminal: is there one, asking yes/no on it, raw mode for interactive sessions,
//! and its size for the remote PTY.
//!
//! Owns: every interaction with /dev/tty and termios. Invariant: raw mode is always undone,
//! because [`RawMode`] restores the saved settings on drop, including on error paths.
//! Must not know: SSH.

use std::io::{BufRead, IsTerminal, Write};
use std::os::fd::AsFd;

use nix::sys::termios::{self, SetArg, Termios};

pub fn stdin_and_stderr_are_terminals() -> bool {
    std::io::stdin().is_terminal() && std::io::stderr().is_terminal()
}

pub fn stdin_is_terminal() -> bool {
    std::io::stdin().is_terminal()
}

pub fn stderr_is_terminal() -> bool {
    std::io::stderr().is_terminal()
}

/// Held for the whole of one question and its answer, so that the questions of a fan-out's
/// hosts come one at a time and each answer applies to the host its question named.
static ONE_QUESTION_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Asks on the controlling terminal, as OpenSSH does, so that a redirected stdin cannot answer.
/// Only an explicit "yes" accepts. Questions are asked one at a time.
pub fn ask_yes_no(question: &str) -> bool {
    // A poisoned lock only means another question's thread panicked; asking is still safe.
    let _turn = ONE_QUESTION_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    // The question's own line breaks stay; anything else a host name could carry is shown.
    let question: Vec<_> = question
        .split('\n')
        .map(crate::term::escape::visible)
        .collect();
    let question = question.join("\n");
    let Ok(mut tty) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
    else {
        return false;
    };
    if tty.write_all(question.as_bytes()).is_err() || tty.flush().is_err() {
        return false;
    }
    let mut answer = String::new();
    let mut reader = std::io::BufReader::new(tty);
    if reader.read_line(&mut answer).is_err() {
        return false;
    }
    answer.trim().eq_ignore_ascii_case("yes")
}

/// Columns and rows of the terminal on stdout (or stdin), 80x24 when there is none.
pub fn size() -> (u32, u32) {
    let found = terminal_size::terminal_size_of(std::io::stdout())
        .or_else(|| terminal_size::terminal_size_of(std::io::stdin()));
    match found {
        Some((terminal_size::Width(w), terminal_size::Height(h))) => (u32::from(w), u32::from(h)),
        None => (80, 24),
    }
}

/// Puts stdin's terminal in raw mode for the life of the value.
pub struct RawMode {
    saved: Termios,
}

impl RawMode {
    pub fn enter() -> Result<RawMode, nix::Error> {
        let stdin = std::io::stdin();
        let saved = termios::tcgetattr(stdin.as_fd())?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &raw)?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}
