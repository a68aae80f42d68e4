//! smssh's plan: one destination (ssh's own job) or a fan-out of one command, resolved before
//! anything connects.
//!
//! Owns: ssh's rules for the destination and the PTY decision (`-t`, `-tt`, `-T`, a terminal
//! on stdin), and which presentation a fan-out uses. Must not know: sessions or output.

use crate::aws::secret::VersionSelector;
use crate::cli::args::SshArgs;
use crate::config::operand;
use crate::config::ssh_config::{LogLevel, StrictHostKeyChecking};
use crate::key::source::SecretSpec;
use crate::plan::targets::HostSources;
use crate::plan::{
    fanout_options, resolve_common, resolve_secret, Common, FanoutOptions, HostPlan, Local,
    PlanError, SshOptions,
};
use crate::ssh::forward::{self, ForwardSpecError, Forwards};
use crate::ssh::outdir::OutputDirs;

/// An OpenSSH flag whose meaning smssh does not provide and cannot drop without surprising
/// the caller; smssh and smscp refuse it with one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RefusedFlag {
    #[error("-1: SSH protocol v.1 is no longer supported")]
    ProtocolOne,
    #[error("-A: agent forwarding is not supported: the key never enters an agent; remove -A")]
    AgentForwarding,
    #[error(
        "-{flag} {value}: choosing the local interface or address is not supported: remove -{flag}"
    )]
    Bind { flag: char, value: String },
    #[error("-E {0}: a log file is not supported: diagnostics go to stderr (redirect 2>>FILE)")]
    LogFile(String),
    #[error("-y: logging to syslog is not supported: diagnostics go to stderr")]
    Syslog,
    #[error("-e {0}: escape characters are not supported: smssh passes every byte through, as -e none does")]
    EscapeChar(String),
    #[error("-I {0}: PKCS#11 keys are not supported: the key comes from Secrets Manager")]
    Pkcs11(String),
    #[error("-K: GSSAPI authentication is not supported: the key comes from Secrets Manager")]
    Gssapi,
    #[error(
        "-M: connection sharing is not supported: each run opens its own connection; remove -M"
    )]
    ControlMaster,
    #[error("-O {0}: connection sharing is not supported: there is no master connection")]
    ControlCommand(String),
    #[error("-Q {0}: queries are not supported: smssh -G HOST shows the settings in effect")]
    Query(String),
    #[error("-{0}: X11 forwarding is not supported")]
    X11(char),
    #[error("-w {0}: tunnel device forwarding is not supported (-w takes a hostlist; a host named like a tunnel device is written user@{0})")]
    Tunnel(String),
    #[error("-D {0}: a local sftp-server is not supported: smscp always reaches the remote one")]
    SftpServerPath(String),
    #[error("-R: copying between remote hosts through the first one is not supported: it would need the key on that host")]
    RemoteToRemote,
    #[error("-S {0}: smscp makes its own SSH connections and runs no other program: remove -S")]
    Program(String),
}

/// Every way smssh's command line is refused before anything connects.
#[derive(Debug, thiserror::Error)]
pub enum CommandPlanError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    Refused(#[from] RefusedFlag),
    #[error("-s: no subsystem given: smssh -s [user@]host SUBSYSTEM")]
    NoSubsystem,
    #[error("-{0} applies to one destination: remove -w, --hosts-file and --ec2-filter")]
    SingleHostOnly(char),
    #[error("-W {0}: not HOST:PORT (an IPv6 address as [ADDRESS]:PORT)")]
    BadStdioForward(String),
    #[error(transparent)]
    Forward(#[from] ForwardSpecError),
    #[error("-o {option}: {problem}")]
    ForwardOption {
        option: String,
        problem: &'static str,
    },
    #[error("Cannot fork into background without a command to execute: add a command or -N")]
    ForkWithoutCommand,
    #[error("-W cannot be combined with -L, -R or -D: run a second smssh for the forwards")]
    StdioForwardWithForwards,
    #[error("--json needs a command: the interactive shell (-w HOSTS without a command) prints grouped answers; add -- COMMAND")]
    JsonInShell,
    #[error("{0} applies to a command fan-out: add -w HOSTS (or --hosts-file, --ec2-filter) and -- COMMAND")]
    CommandFanoutOnly(&'static str),
}

/// The first flag given that only a command fan-out takes.
fn command_fanout_flag(args: &SshArgs) -> Option<&'static str> {
    [
        (args.outdir.is_some(), "--outdir"),
        (args.errdir.is_some(), "--errdir"),
        (args.stdin_all, "--stdin-all"),
    ]
    .into_iter()
    .find_map(|(given, flag)| given.then_some(flag))
}

/// Whether a fan-out has no command words (it opens the interactive shell).
fn no_command_words(args: &SshArgs) -> bool {
    args.destination.is_none() && args.command.is_empty()
}

fn output_dirs(args: &SshArgs) -> OutputDirs {
    OutputDirs {
        stdout: args.outdir.clone(),
        stderr: args.errdir.clone(),
    }
}

/// Whether a `-w` value has the shape of ssh's `local_tun[:remote_tun]` (a number or `any`,
/// optionally twice), rather than a hostlist.
pub fn is_tunnel_request(value: &str) -> bool {
    let device = |part: &str| {
        part == "any" || (!part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()))
    };
    match value.split_once(':') {
        Some((local, remote)) => device(local) && device(remote),
        None => device(value),
    }
}

/// Refuses the ssh flags whose meaning smssh does not provide (see the README's "Drop-in
/// behaviour"); the flags accepted with no effect need no check.
fn refuse_unsupported(args: &SshArgs) -> Result<(), RefusedFlag> {
    let bind = |flag, value: &Option<String>| {
        value.as_ref().map(|value| RefusedFlag::Bind {
            flag,
            value: value.clone(),
        })
    };
    let refusal = [
        args.protocol_1.then_some(RefusedFlag::ProtocolOne),
        args.forward_agent.then_some(RefusedFlag::AgentForwarding),
        bind('B', &args.bind_interface),
        bind('b', &args.bind_address),
        args.log_file.clone().map(RefusedFlag::LogFile),
        args.syslog.then_some(RefusedFlag::Syslog),
        args.escape_char
            .clone()
            .filter(|c| c != "none")
            .map(RefusedFlag::EscapeChar),
        args.pkcs11.clone().map(RefusedFlag::Pkcs11),
        args.gssapi.then_some(RefusedFlag::Gssapi),
        (args.control_master > 0).then_some(RefusedFlag::ControlMaster),
        args.control_command
            .clone()
            .map(RefusedFlag::ControlCommand),
        args.query.clone().map(RefusedFlag::Query),
        args.forward_x11.then_some(RefusedFlag::X11('X')),
        args.forward_x11_trusted.then_some(RefusedFlag::X11('Y')),
        args.fanout
            .hosts
            .iter()
            .find(|value| is_tunnel_request(value))
            .cloned()
            .map(RefusedFlag::Tunnel),
    ]
    .into_iter()
    .flatten()
    .next();
    refusal.map_or(Ok(()), Err)
}

/// `-o` options implied by ssh's own letters, applied before the user's `-o` as OpenSSH does.
fn implied_options(args: &SshArgs) -> Vec<String> {
    let mut implied = Vec::new();
    // -J is ProxyJump given first, so it beats -o ProxyCommand and the files.
    if let Some(jump) = &args.jump {
        implied.push(format!("ProxyJump={jump}"));
    }
    if args.compression {
        implied.push("Compression=yes".to_owned());
    }
    // -4 and -6 are AddressFamily given first. Given both (a contradiction ssh settles by
    // taking the last), -4 wins: clap keeps flags, not their order.
    if args.ipv4 {
        implied.push("AddressFamily=inet".to_owned());
    }
    if args.ipv6 {
        implied.push("AddressFamily=inet6".to_owned());
    }
    if let Some(spec) = &args.mac_spec {
        implied.push(format!("MACs={spec}"));
    }
    // -c is Ciphers given before -o, so it beats -o Ciphers as in OpenSSH.
    if let Some(spec) = &args.cipher_spec {
        implied.push(format!("Ciphers={spec}"));
    }
    implied
}

/// The `-o` options that shape forwarding, which this module resolves itself (forwards add
/// up, they are not first-value-wins settings), and the other `-o` options for ssh_config.
struct SessionOptions {
    forwards: Forwards,
    fork_after_auth: Option<bool>,
    rest: crate::cli::args::SshOptionArgs,
}

/// `-L`/`-R`/`-D`/`-g` and the forwarding keywords among the `-o` options (`LocalForward`,
/// `RemoteForward`, `DynamicForward`, `GatewayPorts`, `ExitOnForwardFailure`,
/// `ForkAfterAuthentication`), read as ssh reads them.
fn session_options(args: &SshArgs) -> Result<SessionOptions, CommandPlanError> {
    let mut forwards = Forwards {
        gateway_ports: args.gateway_ports,
        ..Forwards::default()
    };
    for spec in &args.local_forward {
        forwards.local.push(forward::parse_local(spec)?);
    }
    for spec in &args.remote_forward {
        forwards.remote.push(forward::parse_remote(spec)?);
    }
    for spec in &args.dynamic_forward {
        forwards.dynamic.push(forward::parse_dynamic(spec)?);
    }
    let mut gateway_ports = None;
    let mut exit_on_failure = None;
    let mut fork_after_auth = None;
    let mut rest = args.ssh.clone();
    rest.options.clear();
    for option in &args.ssh.options {
        let trimmed = option.trim_start();
        let end = trimmed
            .find(|c: char| c == '=' || c.is_whitespace())
            .unwrap_or(trimmed.len());
        let keyword = trimmed[..end].to_ascii_lowercase();
        let value = trimmed[end..].trim_start();
        let value = value.strip_prefix('=').unwrap_or(value);
        let words: Vec<&str> = value
            .split_whitespace()
            .map(|w| w.trim_matches('"'))
            .collect();
        let bad = |problem| CommandPlanError::ForwardOption {
            option: option.clone(),
            problem,
        };
        let yes_no = |words: &[&str]| match words {
            [word] if word.eq_ignore_ascii_case("yes") => Ok(true),
            [word] if word.eq_ignore_ascii_case("no") => Ok(false),
            _ => Err(bad("expected yes or no")),
        };
        match (keyword.as_str(), words.as_slice()) {
            ("localforward", [listen, target]) => {
                forwards
                    .local
                    .push(forward::parse_local(&format!("{listen}:{target}"))?);
            }
            ("remoteforward", [listen, target]) => {
                forwards
                    .remote
                    .push(forward::parse_remote(&format!("{listen}:{target}"))?);
            }
            ("remoteforward", [listen]) => {
                return Err(ForwardSpecError::RemoteDynamic((*listen).to_owned()).into())
            }
            ("localforward" | "remoteforward", _) => {
                return Err(bad("expected [bind_address:]port host:hostport"))
            }
            ("dynamicforward", [listen]) => forwards.dynamic.push(forward::parse_dynamic(listen)?),
            ("dynamicforward", _) => return Err(bad("expected [bind_address:]port")),
            ("gatewayports", words) => {
                let value = yes_no(words)?;
                gateway_ports.get_or_insert(value);
            }
            ("exitonforwardfailure", words) => {
                let value = yes_no(words)?;
                exit_on_failure.get_or_insert(value);
            }
            ("forkafterauthentication", words) => {
                let value = yes_no(words)?;
                fork_after_auth.get_or_insert(value);
            }
            _ => rest.options.push(option.clone()),
        }
    }
    // -g sets GatewayPorts outright, as in ssh; otherwise the first -o value wins.
    forwards.gateway_ports |= gateway_ports.unwrap_or(false);
    forwards.exit_on_failure = exit_on_failure.unwrap_or(false);
    if args.fork_after_auth {
        fork_after_auth = Some(true);
    }
    Ok(SessionOptions {
        forwards,
        fork_after_auth,
        rest,
    })
}

/// What `smssh -G` prints: the settings one destination resolves to, and the secret.
#[derive(Debug)]
pub struct ResolvedConfig {
    pub plan: HostPlan,
    /// None when no secret is configured anywhere.
    pub secret: Option<SecretSpec>,
    /// The level `-v`/`-q` or LogLevel set, as ssh -G shows it.
    pub log_level: LogLevel,
}

impl ResolvedConfig {
    /// `ssh -G`'s format: a lowercase keyword, a space, the value; OpenSSH's order for the
    /// keywords both know, then smssh's own.
    pub fn lines(&self) -> Vec<String> {
        let plan = &self.plan;
        let yes_no = |on: bool| if on { "yes" } else { "no" };
        let seconds = |d: Option<std::time::Duration>| {
            d.map_or_else(|| "none".to_owned(), |d| d.as_secs().to_string())
        };
        let paths = |list: &[std::path::PathBuf]| {
            if list.is_empty() {
                "none".to_owned()
            } else {
                list.iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        let mut lines = vec![
            format!("host {}", plan.label),
            format!("user {}", plan.user),
            format!("hostname {}", plan.hostname),
            format!("port {}", plan.port),
            format!("batchmode {}", yes_no(plan.batch_mode)),
            format!("compression {}", yes_no(plan.compression)),
            format!("addressfamily {}", plan.address_family.name()),
            format!(
                "stricthostkeychecking {}",
                match plan.strict_host_key_checking {
                    StrictHostKeyChecking::Yes => "true",
                    StrictHostKeyChecking::No => "false",
                    StrictHostKeyChecking::AcceptNew => "accept-new",
                    StrictHostKeyChecking::Ask => "ask",
                }
            ),
            format!("serveralivecountmax {}", plan.server_alive_count_max),
            format!(
                "serveraliveinterval {}",
                plan.keepalive_interval().map_or(0, |d| d.as_secs())
            ),
            format!("loglevel {}", log_level_name(self.log_level)),
            format!("globalknownhostsfile {}", paths(&plan.global_known_hosts)),
            format!("userknownhostsfile {}", paths(&plan.user_known_hosts)),
            format!("connecttimeout {}", seconds(plan.connect_timeout)),
        ];
        if let Some(setting) = &plan.unimplemented {
            lines.push(format!(
                "{} {}",
                setting.keyword.to_ascii_lowercase(),
                setting.value
            ));
        }
        match &self.secret {
            Some(spec) => {
                lines.push(format!("secretid {}", spec.id));
                lines.push(match &spec.selector {
                    VersionSelector::Stage(stage) => format!("versionstage {stage}"),
                    VersionSelector::Id(id) => format!("versionid {id}"),
                });
            }
            None => lines.push("secretid none".to_owned()),
        }
        lines
    }
}

fn log_level_name(level: LogLevel) -> &'static str {
    match level {
        // OpenSSH 9.2 prints QUIET under its internal name.
        LogLevel::Quiet => "SILENT",
        LogLevel::Fatal => "FATAL",
        LogLevel::Error => "ERROR",
        LogLevel::Info => "INFO",
        LogLevel::Verbose => "VERBOSE",
        // ssh -G names DEBUG1 as plain DEBUG.
        LogLevel::Debug1 => "DEBUG",
        LogLevel::Debug2 => "DEBUG2",
        LogLevel::Debug3 => "DEBUG3",
    }
}

/// Resolves `smssh -G`: the destination's settings without reading the secret, so that it
/// works (and shows `secretid none`) before any secret is configured.
pub fn resolve_config(args: &SshArgs) -> Result<ResolvedConfig, CommandPlanError> {
    refuse_unsupported(args)?;
    if HostSources::from_args(&args.fanout).names_hosts() {
        return Err(CommandPlanError::SingleHostOnly('G'));
    }
    let local = Local::detect();
    let implied = implied_options(args);
    let implied: Vec<&str> = implied.iter().map(String::as_str).collect();
    let options = SshOptions::load(&session_options(args)?.rest, &implied, &local)?;
    let plan = destination_plan(args, &options)?;
    let secret = match resolve_secret(&args.secret, &local) {
        Ok(spec) => Some(spec),
        Err(PlanError::NoSecretId { .. }) => None,
        Err(err) => return Err(err.into()),
    };
    let log_level = match (args.ssh.quiet, args.ssh.verbose) {
        (true, _) => LogLevel::Quiet,
        (false, 0) => plan.log_level.unwrap_or(LogLevel::Info),
        (false, 1) => LogLevel::Debug1,
        (false, 2) => LogLevel::Debug2,
        (false, _) => LogLevel::Debug3,
    };
    Ok(ResolvedConfig {
        plan,
        secret,
        log_level,
    })
}

/// The plan for smssh's one destination, with `-l` and `-p` where it names neither.
fn destination_plan(args: &SshArgs, options: &SshOptions) -> Result<HostPlan, PlanError> {
    let text = args.destination.as_ref().ok_or(PlanError::NoDestination)?;
    let destination = operand::parse_destination(text).map_err(|source| PlanError::Operand {
        text: text.clone(),
        source,
    })?;
    Ok(options.plan(
        &destination.host,
        destination.user.as_deref().or(args.login.as_deref()),
        destination.port.or(args.port),
    ))
}

/// How a fan-out prints what the hosts said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presentation {
    /// pdsh's `host: line`, as the lines arrive.
    Prefixed,
    /// Identical outputs once, under the hostlist of the hosts that printed them (`--group`).
    Grouped,
    /// One JSON object per host (`--json`).
    Json,
    /// The live view (`term::live`) when stdout is a terminal, which only the run can tell;
    /// `Prefixed` otherwise. The grouped outputs are printed when the view closes.
    Live,
}

/// Whether a fan-out without `--json` or `--group` wants the live view: not with `--stream`,
/// `-q`, pdsh's output, or the config file's `fanout_output = "stream"`.
fn live_wanted(args: &SshArgs) -> Result<bool, PlanError> {
    if args.stream || args.ssh.quiet || args.pdsh.is_some() {
        return Ok(false);
    }
    let file = crate::plan::load_tool_config(&Local::detect().tool_config_path())?;
    Ok(file.fanout_output != Some(crate::plan::FanoutOutput::Stream))
}

/// What a single-destination smssh starts on the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// An interactive login shell (no command given).
    Shell,
    /// The command words joined by spaces, as ssh sends them.
    Command(String),
    /// `-s`: the subsystem the command words name (e.g. `sftp`).
    Subsystem(String),
    /// `-N`: nothing; the session carries the forwards only.
    Nothing,
}

/// What smssh runs.
#[derive(Debug)]
pub enum CommandMode {
    Single {
        plan: HostPlan,
        remote: Remote,
        pty: bool,
        forward_stdin: bool,
        /// `-L`, `-R`, `-D` and the settings that shape them.
        forwards: Forwards,
        /// `-f`: go to the background once authenticated and forwarding.
        background: bool,
    },
    Fanout {
        command: String,
        presentation: Presentation,
        hosts: HostSources,
        /// `-l` and `-p`, for hosts that do not name their own.
        login: Option<String>,
        port: Option<u16>,
        options: FanoutOptions,
        /// Bytes of output kept per host for `--group` and `--json`.
        capture_limit: usize,
        /// Run as pdsh: its labels and its exit status rule.
        pdsh: Option<crate::cli::args::PdshStyle>,
        /// `--outdir`/`--errdir`: each host's output also in a file of its own.
        output_dirs: OutputDirs,
        /// `--stdin-all`: the local stdin sent to every host's command.
        stdin_all: bool,
    },
    /// `-w HOSTS` with no command: the interactive multi-host shell (`shell::run`), whose
    /// answers are always grouped.
    Shell {
        hosts: HostSources,
        /// `-l` and `-p`, for hosts that do not name their own (also those typed at the prompt).
        login: Option<String>,
        port: Option<u16>,
        options: FanoutOptions,
        /// Bytes of output kept per host and line.
        capture_limit: usize,
    },
    /// `-W host:port`: stdin and stdout joined to a TCP connection that the destination's
    /// sshd opens to `host:port`; no session runs.
    StdioForward {
        plan: HostPlan,
        host: String,
        port: u16,
    },
}

/// `-W`'s `host:port`, `[address]:port` for IPv6.
fn parse_stdio_forward(spec: &str) -> Result<(String, u16), CommandPlanError> {
    let bad = || CommandPlanError::BadStdioForward(spec.to_owned());
    let (host, port) = match spec.strip_prefix('[') {
        Some(bracketed) => bracketed.split_once("]:").ok_or_else(bad)?,
        None => match spec.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => (host, port),
            _ => return Err(bad()),
        },
    };
    match port.parse::<u16>() {
        Ok(number)
            if number != 0 && !host.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Ok((host.to_owned(), number))
        }
        _ => Err(bad()),
    }
}

/// The interactive shell's mode. `--json` is refused: the shell prints groups, and a JSON
/// stream per typed line is not what a script reading JSON expects; so are `--stream` (the
/// shell always groups) and `--fail-fast` (a line's hosts are not a deployment's order).
fn shell_mode(args: &SshArgs, hosts: HostSources) -> Result<CommandMode, CommandPlanError> {
    if args.json {
        return Err(CommandPlanError::JsonInShell);
    }
    let refused = [(args.fail_fast, "--fail-fast"), (args.stream, "--stream")];
    if let Some((_, flag)) = refused.into_iter().find(|(given, _)| *given) {
        return Err(CommandPlanError::CommandFanoutOnly(flag));
    }
    Ok(CommandMode::Shell {
        hosts,
        login: args.login.clone(),
        port: args.port,
        options: fanout_options(&args.fanout),
        capture_limit: usize::try_from(args.max_output.saturating_mul(1024 * 1024))
            .unwrap_or(usize::MAX),
    })
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
) -> Result<CommandPlan, CommandPlanError> {
    refuse_unsupported(args)?;
    let implied = implied_options(args);
    let implied: Vec<&str> = implied.iter().map(String::as_str).collect();
    let session = session_options(args)?;
    let hosts = HostSources::from_args(&args.fanout);
    let background = session.fork_after_auth.unwrap_or(false);
    if hosts.names_hosts() {
        // Checked before any file or secret is read: these need one session.
        let single_only = [
            (args.no_command, 'N'),
            (!session.forwards.local.is_empty(), 'L'),
            (!session.forwards.remote.is_empty(), 'R'),
            (!session.forwards.dynamic.is_empty(), 'D'),
            (background, 'f'),
        ];
        if let Some((_, flag)) = single_only.iter().find(|(set, _)| *set) {
            return Err(CommandPlanError::SingleHostOnly(*flag));
        }
    }
    let common = resolve_common(
        &session.rest,
        &args.fanout,
        &args.secret,
        &implied,
        &args.identity_file,
    )?;
    if let Some(flag) = command_fanout_flag(args) {
        if !hosts.names_hosts() || no_command_words(args) {
            return Err(CommandPlanError::CommandFanoutOnly(flag));
        }
    }
    let mode = if hosts.names_hosts() {
        if args.subsystem {
            return Err(CommandPlanError::SingleHostOnly('s'));
        }
        if args.stdio_forward.is_some() {
            return Err(CommandPlanError::SingleHostOnly('W'));
        }
        let words: Vec<String> = args
            .destination
            .iter()
            .chain(args.command.iter())
            .cloned()
            .collect();
        if words.is_empty() {
            return Ok(CommandPlan {
                common,
                mode: shell_mode(args, hosts)?,
            });
        }
        CommandMode::Fanout {
            command: words.join(" "),
            presentation: if args.json {
                Presentation::Json
            } else if args.group {
                Presentation::Grouped
            } else if live_wanted(args)? {
                Presentation::Live
            } else {
                Presentation::Prefixed
            },
            hosts,
            login: args.login.clone(),
            port: args.port,
            options: FanoutOptions {
                fail_fast: args.fail_fast,
                ..fanout_options(&args.fanout)
            },
            capture_limit: usize::try_from(args.max_output.saturating_mul(1024 * 1024))
                .unwrap_or(usize::MAX),
            pdsh: args.pdsh,
            output_dirs: output_dirs(args),
            stdin_all: args.stdin_all,
        }
    } else if args.group || args.json {
        return Err(PlanError::PresentationWithoutHosts.into());
    } else if args.fail_fast {
        return Err(PlanError::FailFastWithoutHosts.into());
    } else if let Some(spec) = &args.stdio_forward {
        if !session.forwards.is_empty() {
            return Err(CommandPlanError::StdioForwardWithForwards);
        }
        let (host, port) = parse_stdio_forward(spec)?;
        CommandMode::StdioForward {
            plan: destination_plan(args, &common.ssh)?,
            host,
            port,
        }
    } else {
        let plan = destination_plan(args, &common.ssh)?;
        let words = args.command.join(" ");
        let remote = match (args.subsystem, args.command.is_empty()) {
            // As ssh: -N runs nothing, whatever command words follow.
            _ if args.no_command => Remote::Nothing,
            (true, true) => return Err(CommandPlanError::NoSubsystem),
            (true, false) => Remote::Subsystem(words),
            (false, true) if background => return Err(CommandPlanError::ForkWithoutCommand),
            (false, true) => Remote::Shell,
            (false, false) => Remote::Command(words),
        };
        // As ssh: a PTY for an interactive shell on a terminal, for -t on a terminal, or
        // always for -tt; never with -T.
        let pty = !args.no_tty
            && match (args.tty, &remote) {
                (_, Remote::Nothing) => false,
                (0, Remote::Shell) => stdin_is_terminal(),
                (0, _) => false,
                (1, _) => stdin_is_terminal(),
                _ => true,
            };
        CommandMode::Single {
            plan,
            remote,
            pty,
            // -f implies -n, as in ssh: the background process must not read the terminal.
            forward_stdin: !args.null_stdin && !background,
            forwards: session.forwards,
            background,
        }
    };
    Ok(CommandPlan { common, mode })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tunnel_shaped_w_values_are_told_from_hostlists() {
        for tunnel in ["0", "12", "any", "0:1", "any:any", "3:any"] {
            assert!(is_tunnel_request(tunnel), "{tunnel}");
        }
        for hosts in [
            "w1", "w[1-4]", "10.0.0.1", "h:22", "0:", ":1", "any:x", "", "1,2",
        ] {
            assert!(!is_tunnel_request(hosts), "{hosts}");
        }
    }

    #[test]
    fn forwarding_options_are_taken_out_of_o_as_ssh_reads_them() {
        let args = SshArgs::try_parse_openssh([
            "smssh",
            "-L",
            "8080:web:80",
            "-o",
            "LocalForward=9090 [::1]:90",
            "-o",
            "ExitOnForwardFailure yes",
            "-o",
            "exitonforwardfailure=no",
            "-o",
            "User=u",
            "-D",
            "1080",
            "-o",
            "RemoteForward 0 localhost:22",
            "host",
        ])
        .expect("parses");
        let session = session_options(&args).expect("valid");
        let forwards = &session.forwards;
        assert_eq!(
            forwards
                .local
                .iter()
                .map(|f| (f.port, f.host.as_str()))
                .collect::<Vec<_>>(),
            [(8080, "web"), (9090, "::1")]
        );
        assert_eq!((forwards.dynamic.len(), forwards.remote.len()), (1, 1));
        assert!(forwards.exit_on_failure && !forwards.gateway_ports);
        assert_eq!(session.rest.options, ["User=u"]);
        for bad in [
            "LocalForward=8080:web:80",
            "GatewayPorts=maybe",
            "DynamicForward",
        ] {
            let args = SshArgs::try_parse_openssh(["smssh", "-o", bad, "host"]).expect("parses");
            assert!(session_options(&args).is_err(), "{bad}");
        }
        let args = SshArgs::try_parse_openssh(["smssh", "-w", "h[1-2]", "-L", "1:a:2", "uptime"])
            .expect("parses");
        assert!(matches!(
            resolve(&args, || false),
            Err(CommandPlanError::SingleHostOnly('L'))
        ));
    }

    #[test]
    fn print_config_lines_follow_ssh_g() {
        let config = ResolvedConfig {
            plan: crate::plan::test_plan("w1", 2200),
            secret: Some(SecretSpec {
                id: "/dev/ssh".to_owned(),
                selector: VersionSelector::Stage("AWSPREVIOUS".to_owned()),
                field: None,
                fallback_stage: None,
                aws: crate::aws::AwsSettings::default(),
            }),
            log_level: LogLevel::Debug2,
        };
        let lines = config.lines();
        for expected in [
            "host w1",
            "hostname w1",
            "port 2200",
            "user tester",
            "batchmode yes",
            "stricthostkeychecking true",
            "connecttimeout 1",
            "userknownhostsfile /dev/null",
            "loglevel DEBUG2",
            "secretid /dev/ssh",
            "versionstage AWSPREVIOUS",
        ] {
            assert!(lines.iter().any(|l| l == expected), "{expected}: {lines:?}");
        }
        assert_eq!(lines[0], "host w1", "ssh -G starts with the host");
        let none = ResolvedConfig {
            secret: None,
            ..config
        };
        assert_eq!(
            none.lines().last().map(String::as_str),
            Some("secretid none")
        );
    }
}
