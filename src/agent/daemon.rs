//! The agent's daemon forms, as ssh-agent has them: `eval "$(smssh agent -s)"` (or `-c`)
//! starts an agent in the background and prints the variables to set; `-k` stops the agent
//! SSH_AGENT_PID names. Going to the background works as `cli/background` does for ssh's
//! `-f`, without `fork`: this program starts itself again with the same arguments and a pipe
//! named in an internal environment variable; the second one reads the key, binds the
//! socket, leaves the terminal's session, and writes the socket's path to the pipe.
//!
//! Owns: the hand-over between the two processes and the shell lines. Invariant: the first
//! process prints only once the agent serves, and the background one holds none of the
//! caller's output pipes open (so `$(...)` ends). Must not know: the agent protocol.

use std::ffi::OsString;
use std::io::{BufRead, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};

/// The variable that tells the background agent which of its descriptors is the pipe.
const READY_FD: &str = "SMSSH_INTERNAL_AGENT_FD";
/// The longest socket path the pipe carries (a Unix socket path is far shorter).
const MAX_PATH: u64 = 4096;

/// Why a daemon form failed.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("agent: cannot create the pipe to the background agent: {0}")]
    Pipe(nix::Error),
    #[error("agent: cannot start the background agent: {0}")]
    Spawn(std::io::Error),
    #[error("agent: cannot wait for the background agent: {0}")]
    Wait(std::io::Error),
    #[error("SSH_AGENT_PID not set, cannot kill agent")]
    NoPid,
    #[error("SSH_AGENT_PID=\"{0}\", which is not a good PID")]
    BadPid(String),
    #[error("SSH_AGENT_PID={0} is not a smssh agent: not killed")]
    NotAnAgent(i32),
    #[error("kill {pid}: {errno}")]
    Kill { pid: i32, errno: nix::Error },
}

/// Which shell the printed lines are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shell {
    Sh,
    Csh,
}

impl Shell {
    /// `-s`, `-c`, or (as ssh-agent) csh when $SHELL ends in "csh", sh otherwise.
    pub fn choose(sh: bool, csh: bool) -> Shell {
        let shell_is_csh =
            std::env::var_os("SHELL").is_some_and(|shell| shell.as_bytes().ends_with(b"csh"));
        if csh || (!sh && shell_is_csh) {
            Shell::Csh
        } else {
            Shell::Sh
        }
    }

    /// The lines that set SSH_AUTH_SOCK and SSH_AGENT_PID, as ssh-agent prints them.
    pub fn set_lines(self, socket: &Path, pid: u32) -> String {
        let socket = quoted(socket);
        match self {
            Shell::Sh => format!(
                "SSH_AUTH_SOCK={socket}; export SSH_AUTH_SOCK;\nSSH_AGENT_PID={pid}; export SSH_AGENT_PID;\necho Agent pid {pid};\n"
            ),
            Shell::Csh => format!(
                "setenv SSH_AUTH_SOCK {socket};\nsetenv SSH_AGENT_PID {pid};\necho Agent pid {pid};\n"
            ),
        }
    }

    /// The lines `-k` prints, as ssh-agent's.
    pub fn unset_lines(self, pid: i32) -> String {
        match self {
            Shell::Sh => format!(
                "unset SSH_AUTH_SOCK;\nunset SSH_AGENT_PID;\necho Agent pid {pid} killed;\n"
            ),
            Shell::Csh => format!(
                "unsetenv SSH_AUTH_SOCK;\nunsetenv SSH_AGENT_PID;\necho Agent pid {pid} killed;\n"
            ),
        }
    }
}

/// A path as a shell word: as it is when it holds only plain characters (every fresh socket
/// path does), else in single quotes, so that an `-a` path cannot run anything under `eval`.
fn quoted(path: &Path) -> String {
    let text = path.to_string_lossy();
    let plain = text
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/._+,@%:=-".contains(&b));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// Whether this process is the background half.
pub fn is_background_process() -> bool {
    std::env::var_os(READY_FD).is_some()
}

/// What the foreground half saw.
#[derive(Debug)]
pub enum Launched {
    /// The background agent serves at `socket`.
    Ready { pid: u32, socket: PathBuf },
    /// It ended before it was ready (its error line is already on stderr), with this status.
    Ended(u8),
}

/// The foreground half: starts this program again with the same arguments (stdin and stdout
/// on /dev/null, stderr shared until the agent is ready) and waits for the socket's path.
pub fn launch() -> Result<Launched, DaemonError> {
    let (read_end, write_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(DaemonError::Pipe)?;
    // The write end alone is inherited by the child.
    fcntl(&write_end, FcntlArg::F_SETFD(FdFlag::empty())).map_err(DaemonError::Pipe)?;
    let program = std::env::current_exe().map_err(DaemonError::Spawn)?;
    let mut child = Command::new(program)
        .args(std::env::args_os().skip(1))
        .env(READY_FD, write_end.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .map_err(DaemonError::Spawn)?;
    drop(write_end);
    let mut said = Vec::new();
    let pipe = std::io::BufReader::new(std::fs::File::from(read_end).take(MAX_PATH));
    // The agent keeps its end of the pipe open while it serves, so the path ends at a NUL,
    // not at EOF. A read error is treated as the agent's end: its status tells what happened.
    let _ = { pipe }.read_until(0, &mut said);
    if said.last() == Some(&0) {
        said.pop();
        return Ok(Launched::Ready {
            pid: child.id(),
            socket: PathBuf::from(OsString::from_vec(said)),
        });
    }
    let status = child.wait().map_err(DaemonError::Wait)?;
    Ok(Launched::Ended(
        status
            .code()
            .and_then(|code| u8::try_from(code).ok())
            .unwrap_or(255),
    ))
}

/// The background half, once it serves: leaves the terminal's session, sends its later
/// diagnostics to /dev/null (no one reads the caller's stderr any more), and writes the
/// socket's path, NUL-terminated, to the pipe.
pub fn report_ready(socket: &Path) {
    // A started child is never a process-group leader, so setsid cannot fail with EPERM;
    // were it to fail, the agent would merely stay in the terminal's session.
    let _ = nix::unistd::setsid();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // Were this to fail, warnings would still reach the caller's stderr, nothing worse.
        let _ = nix::unistd::dup2_stderr(&null);
    }
    let Some(fd) = std::env::var(READY_FD)
        .ok()
        .and_then(|text| text.parse::<u32>().ok())
    else {
        return;
    };
    // A second handle on the inherited pipe through /proc, without unsafe code. The pipe
    // stays open in this process until it exits; the reader stops at the NUL.
    if let Ok(mut pipe) = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/self/fd/{fd}"))
    {
        let mut message = socket.as_os_str().as_bytes().to_vec();
        message.push(0);
        let _ = pipe.write_all(&message);
    }
}

/// `-k`: sends SIGTERM to the agent SSH_AGENT_PID names, once /proc shows it runs this very
/// program (a stale pid may have been reused by anything), and returns the lines to print.
/// The agent removes its socket as it ends.
pub fn kill(shell: Shell) -> Result<String, DaemonError> {
    let text = std::env::var("SSH_AGENT_PID").map_err(|_| DaemonError::NoPid)?;
    let pid = text
        .parse::<i32>()
        .ok()
        .filter(|pid| *pid > 1)
        .ok_or_else(|| DaemonError::BadPid(text.clone()))?;
    let theirs = std::fs::read_link(format!("/proc/{pid}/exe"));
    let ours = std::env::current_exe();
    match (theirs, ours) {
        (Ok(theirs), Ok(ours)) if theirs == ours => {}
        _ => return Err(DaemonError::NotAnAgent(pid)),
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGTERM,
    )
    .map_err(|errno| DaemonError::Kill { pid, errno })?;
    Ok(shell.unset_lines(pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_ssh_agents() {
        let sh = Shell::Sh.set_lines(Path::new("/tmp/smssh-agent-x/agent.1"), 2);
        assert_eq!(
            sh,
            "SSH_AUTH_SOCK=/tmp/smssh-agent-x/agent.1; export SSH_AUTH_SOCK;\nSSH_AGENT_PID=2; export SSH_AGENT_PID;\necho Agent pid 2;\n"
        );
        let csh = Shell::Csh.set_lines(Path::new("/s"), 2);
        assert_eq!(
            csh,
            "setenv SSH_AUTH_SOCK /s;\nsetenv SSH_AGENT_PID 2;\necho Agent pid 2;\n"
        );
        assert!(Shell::Sh
            .set_lines(Path::new("/tmp/a b'$(x)"), 2)
            .starts_with(r"SSH_AUTH_SOCK='/tmp/a b'\''$(x)';"));
    }
}
