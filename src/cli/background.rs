//! ssh's `-f`: go to the background once authenticated, without `fork` (forbidden in a
//! multi-threaded process, and unsafe code besides). The foreground smssh starts itself again
//! with the same arguments and a pipe whose number it names in an internal environment
//! variable; the second smssh connects, authenticates and sets up its forwards, then leaves
//! the terminal's session (`setsid`) and writes one byte to the pipe. The first one exits 0
//! on that byte, or with the second one's status if it ended first (its error line is
//! already on the shared stderr).
//!
//! Owns: the hand-over between the two processes. Must not know: what the background process
//! does.

use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};

/// The variable that tells the second smssh which of its file descriptors is the pipe. It
/// is internal: smssh reads it only with `-f`, and only to write one byte.
const READY_FD: &str = "SMSSH_INTERNAL_BACKGROUND_FD";

/// Why `-f` could not start the background process.
#[derive(Debug, thiserror::Error)]
pub enum BackgroundError {
    #[error("-f: cannot create the pipe to the background process: {0}")]
    Pipe(nix::Error),
    #[error("-f: cannot start the background process: {0}")]
    Spawn(std::io::Error),
    #[error("-f: cannot wait for the background process: {0}")]
    Wait(std::io::Error),
}

/// Whether this process is the background half of `-f`.
pub fn is_background_process() -> bool {
    std::env::var_os(READY_FD).is_some()
}

/// The foreground half: starts this program again with the same arguments and waits until
/// it is ready (exit status 0) or has ended (its status, 255 when killed by a signal).
pub fn run_in_background() -> Result<u8, BackgroundError> {
    let (read_end, write_end) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(BackgroundError::Pipe)?;
    // The write end alone is inherited by the child.
    fcntl(&write_end, FcntlArg::F_SETFD(FdFlag::empty())).map_err(BackgroundError::Pipe)?;
    let program = std::env::current_exe().map_err(BackgroundError::Spawn)?;
    let mut child = Command::new(program)
        .args(std::env::args_os().skip(1))
        .env(READY_FD, write_end.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .spawn()
        .map_err(BackgroundError::Spawn)?;
    drop(write_end);
    let mut byte = [0u8; 1];
    let mut pipe = std::fs::File::from(read_end);
    if matches!(pipe.read(&mut byte), Ok(1)) {
        return Ok(0);
    }
    let status = child.wait().map_err(BackgroundError::Wait)?;
    Ok(status
        .code()
        .and_then(|code| u8::try_from(code).ok())
        .unwrap_or(255))
}

/// The background half, once authenticated and forwarding: leaves the terminal's session,
/// so that closing the terminal or Ctrl-C there no longer reaches this process, and tells
/// the foreground half to exit.
pub fn detach() {
    // A started child is never a process-group leader (it joins its parent's group under a
    // pid of its own), so setsid cannot fail with EPERM; were it to fail, the process would
    // merely stay in the terminal's session.
    let _ = nix::unistd::setsid();
    let Some(fd) = std::env::var(READY_FD)
        .ok()
        .and_then(|text| text.parse::<u32>().ok())
    else {
        return;
    };
    // Opening the descriptor through /proc gives a second handle on the same pipe without
    // unsafe code; when it is dropped, only the inherited one stays open, which the
    // foreground half no longer reads.
    if let Ok(mut pipe) = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{fd}"))
    {
        let _ = pipe.write_all(b"1");
    }
}
