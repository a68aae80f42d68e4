//! Diagnostics on stderr: `-v` lines and warnings, prefixed with the program name.
//!
//! Owns: the process-wide verbosity and program name. Invariant: every line is written
//! through [`visible`], so nothing a server sent can act on the terminal; callers pass only public
//! facts (host names, fingerprints, version ids, timings); nothing here formats key material,
//! and no type holding key material implements `Display` with secret content.
//! Must not know: what is being diagnosed.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::OnceLock;

use crate::term::escape::visible;

static VERBOSITY: AtomicU8 = AtomicU8::new(0);
static QUIET: AtomicU8 = AtomicU8::new(0);
static PROGRAM: OnceLock<&'static str> = OnceLock::new();

pub fn init(program: &'static str, verbosity: u8, quiet: bool) {
    let _ = PROGRAM.set(program);
    VERBOSITY.store(verbosity, Ordering::Relaxed);
    QUIET.store(u8::from(quiet), Ordering::Relaxed);
}

/// Applies an ssh_config `LogLevel` when the command line said neither -v nor -q, as OpenSSH
/// lets `-v`/`-q` override the configured level.
pub fn apply_log_level(level: Option<crate::config::ssh_config::LogLevel>) {
    use crate::config::ssh_config::LogLevel;
    if VERBOSITY.load(Ordering::Relaxed) > 0 || QUIET.load(Ordering::Relaxed) > 0 {
        return;
    }
    match level {
        Some(LogLevel::Quiet | LogLevel::Fatal | LogLevel::Error) => {
            QUIET.store(1, Ordering::Relaxed)
        }
        Some(LogLevel::Debug1) => VERBOSITY.store(1, Ordering::Relaxed),
        Some(LogLevel::Debug2) => VERBOSITY.store(2, Ordering::Relaxed),
        Some(LogLevel::Debug3) => VERBOSITY.store(3, Ordering::Relaxed),
        Some(LogLevel::Info | LogLevel::Verbose) | None => {}
    }
}

pub fn program() -> &'static str {
    PROGRAM.get().copied().unwrap_or("smssh")
}

pub fn verbosity() -> u8 {
    VERBOSITY.load(Ordering::Relaxed)
}

/// A `-v` line.
pub fn debug(message: impl std::fmt::Display) {
    if verbosity() > 0 {
        line_to_stderr(format!(
            "{}: debug: {}\n",
            program(),
            visible(&message.to_string())
        ));
    }
}

/// A warning that `-q` silences.
pub fn warn(message: impl std::fmt::Display) {
    if QUIET.load(Ordering::Relaxed) == 0 {
        line_to_stderr(format!(
            "{}: warning: {}\n",
            program(),
            visible(&message.to_string())
        ));
    }
}

/// An error line: always printed.
pub fn error(message: impl std::fmt::Display) {
    line_to_stderr(format!(
        "{}: {}\n",
        program(),
        visible(&message.to_string())
    ));
}

/// Writes a whole line at once. `eprintln!` writes each formatted piece with its own write
/// call, so a line could be cut after the program name by a signal, or interleaved with
/// another thread's line; one `write_all` of a short line is one write.
fn line_to_stderr(line: String) {
    let _ = std::io::stderr().lock().write_all(line.as_bytes());
}

/// A line of our own on stdout (a rotation's progress and summary).
pub fn out(message: impl std::fmt::Display) {
    println!("{}", visible(&message.to_string()));
}
