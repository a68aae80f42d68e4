//! smssh: ssh with the cluster key from AWS Secrets Manager. Parses arguments and calls the
//! library; see ARCHITECTURE.md.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Every freed heap block is wiped, so copies of key material made inside the AWS SDK, serde
/// and the SSH crates, which we cannot wrap in zeroizing types, do not outlive their use.
#[global_allocator]
static ALLOCATOR: zeroizing_alloc::ZeroAlloc<std::alloc::System> =
    zeroizing_alloc::ZeroAlloc(std::alloc::System);

fn main() -> ExitCode {
    // Called as pdsh or dshbak (a link), or with `--as NAME` first: that tool's command line.
    if let Some(code) = smssh::cli::pdsh::run_if_personality(
        smssh::cli::args::Program::Smssh,
        std::env::args_os().collect(),
    ) {
        return ExitCode::from(code);
    }
    // `rotate` as the first word is the rotation subcommand; a host of that name is reached
    // as `user@rotate` (see the man page).
    if std::env::args_os()
        .nth(1)
        .is_some_and(|word| word == "rotate")
    {
        let words = std::iter::once(std::ffi::OsString::from("smssh rotate"))
            .chain(std::env::args_os().skip(2));
        return match smssh::cli::args::RotateArgs::try_parse_from(words) {
            Ok(args) => ExitCode::from(smssh::cli::app::rotate(args)),
            Err(err) => {
                let _ = err.print();
                ExitCode::from(if err.use_stderr() {
                    smssh::cli::app::ROTATE_USAGE
                } else {
                    0
                })
            }
        };
    }
    // `agent` as the first word is the agent; a host of that name is reached as
    // `user@agent`, as for `rotate`.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|word| word == "agent")
    {
        let words = std::iter::once(std::ffi::OsString::from("smssh agent"))
            .chain(std::env::args_os().skip(2));
        return match smssh::cli::args::AgentArgs::try_parse_from(words) {
            Ok(args) => ExitCode::from(smssh::cli::app::agent(args)),
            Err(err) => {
                let _ = err.print();
                ExitCode::from(if err.use_stderr() {
                    smssh::cli::app::SSH_FAILURE
                } else {
                    0
                })
            }
        };
    }
    // `check` as the first word is the self-check; a host of that name is reached as
    // `user@check`, as for `rotate`.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|word| word == "check")
    {
        let words = std::iter::once(std::ffi::OsString::from("smssh check"))
            .chain(std::env::args_os().skip(2));
        return match smssh::cli::args::CheckArgs::try_parse_from(words) {
            Ok(args) => ExitCode::from(smssh::cli::app::check(args)),
            Err(err) => {
                let _ = err.print();
                ExitCode::from(if err.use_stderr() {
                    smssh::cli::app::CHECK_FAILED
                } else {
                    0
                })
            }
        };
    }
    // `completions` as the first word prints a shell's completion script, as for `rotate`.
    if std::env::args_os()
        .nth(1)
        .is_some_and(|word| word == "completions")
    {
        let words = std::iter::once(std::ffi::OsString::from("smssh completions"))
            .chain(std::env::args_os().skip(2));
        return match smssh::cli::args::CompletionsArgs::try_parse_from(words) {
            Ok(args) => ExitCode::from(smssh::cli::completions::run(&args)),
            Err(err) => {
                let _ = err.print();
                ExitCode::from(if err.use_stderr() {
                    smssh::cli::app::SSH_FAILURE
                } else {
                    0
                })
            }
        };
    }
    let args = match smssh::cli::args::SshArgs::try_parse_openssh(std::env::args_os()) {
        Ok(args) => args,
        Err(err) => {
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() {
                smssh::cli::app::SSH_FAILURE
            } else {
                0
            });
        }
    };
    ExitCode::from(smssh::cli::app::smssh(args))
}
