//! `--confirm`: before each signature, ask the user whether the process that asked may use
//! the key, as ssh-agent does for a key added with `ssh-add -c`: with the program SSH_ASKPASS
//! names (SSH_ASKPASS_PROMPT=confirm; allowed when it exits 0 and prints nothing or "yes"),
//! else on the terminal (only "yes" allows).
//!
//! Owns: the question and how an answer is read. Invariant: everything the requesting process
//! controls (its command line) is escaped before it is shown; no answer within two minutes is
//! a refusal. Must not know: the agent protocol.

use std::time::Duration;

use tokio::io::AsyncReadExt;

/// How long a question waits for its answer before the signature is refused.
const ANSWER_WITHIN: Duration = Duration::from_secs(120);
/// How much of an askpass program's output or a command line is read.
const READ_AT_MOST: u64 = 4096;

/// Asks whether the process `pid` may sign with `key` (algorithm and fingerprint) of `secret`.
pub async fn ask(key: &str, secret: &str, pid: Option<i32>) -> bool {
    let requester = match pid {
        Some(pid) => format!("process {pid}: {}", command_line(pid)),
        None => "an unknown process".to_owned(),
    };
    let question = crate::term::escape::visible(&format!(
        "Allow use of key {key} from secret {secret}? Requested by {requester}"
    ))
    .into_owned();
    let askpass = std::env::var_os("SSH_ASKPASS")
        .filter(|p| !p.is_empty())
        .filter(|_| std::env::var_os("SSH_ASKPASS_REQUIRE").is_none_or(|v| v != "never"));
    let answered = match askpass {
        Some(program) => tokio::time::timeout(ANSWER_WITHIN, ask_program(program, question)).await,
        None => tokio::time::timeout(
            ANSWER_WITHIN,
            tokio::task::spawn_blocking(move || {
                crate::term::tty::ask_yes_no(&format!("{question} (yes/no)? "))
            }),
        )
        .await
        .map(|joined| joined.unwrap_or(false)),
    };
    answered.unwrap_or(false)
}

/// Runs the askpass program as OpenSSH's `ask_permission` does and reads its verdict.
async fn ask_program(program: std::ffi::OsString, question: String) -> bool {
    let child = tokio::process::Command::new(program)
        .arg(question)
        .env("SSH_ASKPASS_PROMPT", "confirm")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = child else {
        return false;
    };
    let mut said = Vec::new();
    if let Some(stdout) = child.stdout.take() {
        if stdout
            .take(READ_AT_MOST)
            .read_to_end(&mut said)
            .await
            .is_err()
        {
            return false;
        }
    }
    let Ok(status) = child.wait().await else {
        return false;
    };
    let said = String::from_utf8_lossy(&said);
    let said = said.trim_end_matches(['\n', '\r']);
    status.success() && (said.is_empty() || said.eq_ignore_ascii_case("yes"))
}

/// The requesting process's command line from /proc (arguments joined by spaces), or a note
/// that it could not be read; the caller escapes it.
fn command_line(pid: i32) -> String {
    use std::io::Read;
    let mut bytes = Vec::new();
    let read = std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .and_then(|file| file.take(READ_AT_MOST).read_to_end(&mut bytes));
    match read {
        Ok(_) if !bytes.is_empty() => {
            let text = String::from_utf8_lossy(&bytes).replace('\0', " ");
            text.trim_end().to_owned()
        }
        _ => "(command line unavailable)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_command_line_is_read() {
        let line = command_line(std::process::id() as i32);
        assert!(!line.is_empty() && line != "(command line unavailable)");
        assert_eq!(command_line(i32::MAX), "(command line unavailable)");
    }
}
