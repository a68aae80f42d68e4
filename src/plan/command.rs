//! smssh's plan: one destination (ssh's own job) or a fan-out of one command, resolved before
//! anything connects.
//!
//! Owns: ssh's rules for the destination and the PTY decision (`-t`, `-tt`, `-T`, a terminal
//! on stdin), and which presentation a fan-out uses. Must not know: sessions or output.

use crate::cli::args::SshArgs;
use crate::config::operand;
use crate::plan::targets::HostSources;
use crate::plan::{fanout_options, resolve_common, Common, FanoutOptions, HostPlan, PlanError};

/// How a fan-out prints what the hosts said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presentation {
    /// pdsh's `host: line`, as the lines arrive.
    Prefixed,
    /// Identical outputs once, under the hostlist of the hosts that printed them (`-b`).
    Grouped,
    /// One JSON object per host (`--json`).
    Json,
}

/// What smssh runs.
#[derive(Debug)]
pub enum CommandMode {
    Single {
        plan: HostPlan,
        /// None opens a shell.
        command: Option<String>,
        pty: bool,
        forward_stdin: bool,
    },
    Fanout {
        command: String,
        presentation: Presentation,
        hosts: HostSources,
        /// `-l` and `-p`, for hosts that do not name their own.
        login: Option<String>,
        port: Option<u16>,
        options: FanoutOptions,
        /// Bytes of output kept per host for `-b` and `--json`.
        capture_limit: usize,
    },
}

#[derive(Debug)]
pub struct CommandPlan {
    pub common: Common,
    pub mode: CommandMode,
}

/// Resolves smssh's command line. `stdin_is_terminal` is asked only when ssh's PTY rule
/// depends on it.
pub fn resolve(
    args: &SshArgs,
    stdin_is_terminal: impl Fn() -> bool,
) -> Result<CommandPlan, PlanError> {
    let common = resolve_common(&args.ssh, &args.fanout, &args.secret, &[])?;
    let hosts = HostSources::from_args(&args.fanout);
    let mode = if hosts.names_hosts() {
        let words: Vec<String> = args
            .destination
            .iter()
            .chain(args.command.iter())
            .cloned()
            .collect();
        if words.is_empty() {
            return Err(PlanError::NoCommand);
        }
        CommandMode::Fanout {
            command: words.join(" "),
            presentation: if args.json {
                Presentation::Json
            } else if args.group {
                Presentation::Grouped
            } else {
                Presentation::Prefixed
            },
            hosts,
            login: args.login.clone(),
            port: args.port,
            options: fanout_options(&args.fanout),
            capture_limit: usize::try_from(args.max_output.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
        }
    } else if args.group || args.json {
        return Err(PlanError::PresentationWithoutHosts);
    } else {
        let text = args.destination.as_ref().ok_or(PlanError::NoDestination)?;
        let destination =
            operand::parse_destination(text).map_err(|source| PlanError::Operand {
                text: text.clone(),
                source,
            })?;
        let plan = common.ssh.plan(
            &destination.host,
            destination.user.as_deref().or(args.login.as_deref()),
            destination.port.or(args.port),
        );
        let command = (!args.command.is_empty()).then(|| args.command.join(" "));
        // As ssh: a PTY for an interactive shell on a terminal, for -t on a terminal, or
        // always for -tt; never with -T.
        let pty = !args.no_tty
            && match (args.tty, &command) {
                (0, None) => stdin_is_terminal(),
                (0, Some(_)) => false,
                (1, _) => stdin_is_terminal(),
                _ => true,
            };
        CommandMode::Single {
            plan,
            command,
            pty,
            forward_stdin: !args.null_stdin,
        }
    };
    Ok(CommandPlan { common, mode })
}
