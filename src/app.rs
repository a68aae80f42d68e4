//! The two programs' top level: set up the process, resolve the plan, run, map every outcome
//! to one stderr line and the exit status scp/ssh would use.
//!
//! Owns: the order of start-up (hardening before any secret, then plan, then key, then
//! known_hosts, then connect), the choice between a single-host run and a fan-out, the tokio
//! runtime, and exit codes. Invariant: every failure reaches the user as exactly one
//! `program: what: why: what to do` line (a fan-out adds one per failed host). Must not know:
//! protocol details; it calls the modules that do.

use std::sync::Arc;
use std::time::Duration;

use crate::args::{FanoutArgs, RotateArgs, ScpArgs, SecretArgs, SshArgs, SshOptionArgs};
use crate::copy::{self, CopyContext, CopyRequest, FanoutCopy};
use crate::diag;
use crate::exec::{self, Captured, ExecRequest, RemoteExit};
use crate::fanout::{self, FanoutOptions};
use crate::hostlist::{self, HostSpec};
use crate::keysource::{KeySource, LoadedKey, SecretSpec};
use crate::known_hosts::KnownHosts;
use crate::operand::{self, Operand};
use crate::plan::{self, HostPlan, Local, SshOptions};
use crate::progress::Progress;
use crate::rotation;
use crate::session::{self, HostKeyDb};

/// ssh's exit status for its own failures (connection, host key, authentication, secret).
pub const SSH_FAILURE: u8 = 255;
/// scp's exit status for any failure.
pub const SCP_FAILURE: u8 = 1;

fn runtime() -> Result<tokio::runtime::Runtime, std::io::Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

fn start(program: &'static str, verbose: u8, quiet: bool) {
    diag::init(program, verbose, quiet);
    let posture = crate::hardening::lock_down();
    diag::debug(format_args!(
        "core dumps disabled: {}; memory locked: {}",
        posture.core_dumps_disabled,
        match &posture.memory_locked {
            Ok(()) => "yes".to_owned(),
            Err(why) => format!("no ({why})"),
        }
    ));
}

/// Loads every known_hosts file the plans name, plus the lines the secret carries.
fn host_key_db(plans: &[HostPlan], key: &LoadedKey) -> Result<HostKeyDb, String> {
    let mut files = Vec::new();
    for plan in plans {
        for path in plan.user_known_hosts.iter().chain(&plan.global_known_hosts) {
            if !files.contains(path) {
                files.push(path.clone());
            }
        }
    }
    let mut known = KnownHosts::load(&files).map_err(|e| e.to_string())?;
    if let Some(lines) = &key.known_hosts {
        known.extend_from_text(lines, "secret KnownHosts");
    }
    Ok(HostKeyDb::new(known))
}

/// The steps both programs take before any work: SSH options, the secret, the runtime.
fn prepare(
    ssh: &SshOptionArgs,
    fanout: &FanoutArgs,
    secret: &SecretArgs,
    extra: &[&str],
) -> Result<(SshOptions, SecretSpec, tokio::runtime::Runtime), String> {
    let local = Local::detect();
    let implied = implied_options(fanout, extra);
    let implied: Vec<&str> = implied.iter().map(String::as_str).collect();
    let ssh = SshOptions::load(ssh, &implied, &local).map_err(|e| e.to_string())?;
    let spec = plan::resolve_secret(secret, &local).map_err(|e| e.to_string())?;
    let runtime = runtime().map_err(|err| format!("cannot start: {err}"))?;
    Ok((ssh, spec, runtime))
}

/// Fetches the key (once for the invocation) and loads the host keys `plans` need. The
/// plans' LogLevel is applied first, so the fetch is already reported at that level.
async fn key_and_host_keys(keys: &KeySource, plans: &[HostPlan]) -> Result<HostKeyDb, String> {
    diag::apply_log_level(plans.first().and_then(|p| p.log_level));
    let key = keys.initial().await.map_err(|e| e.to_string())?;
    diag::debug(format_args!("key {} from {}", key.key, keys.spec().id));
    host_key_db(plans, &key)
}

/// `-o` options implied by tool flags, applied before the user's own `-o`.
fn implied_options(fanout: &FanoutArgs, extra: &[&str]) -> Vec<String> {
    let mut options: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
    if let Some(seconds) = fanout.connect_timeout {
        options.push(format!("ConnectTimeout={seconds}"));
    }
    options
}

fn fanout_options(args: &FanoutArgs) -> FanoutOptions {
    FanoutOptions {
        parallel: args.parallel as usize,
        host_timeout: args.timeout.map(Duration::from_secs),
        retries: args.retries,
        ..FanoutOptions::default()
    }
}

/// Expands a hostlist written in an operand (`user@worker[1-8]:path`), applying -x.
fn expand_operand_hosts(
    user: Option<&str>,
    host: &str,
    port: Option<u16>,
    fanout: &FanoutArgs,
) -> Result<Vec<HostSpec>, String> {
    let mut hosts = hostlist::expand(host).map_err(|e| e.to_string())?;
    for spec in &mut hosts {
        if spec.user.is_none() {
            spec.user = user.map(str::to_owned);
        }
        if spec.port.is_none() {
            spec.port = port;
        }
    }
    for expr in &fanout.exclude {
        hosts = hostlist::exclude(hosts, expr).map_err(|e| format!("-x {expr}: {e}"))?;
    }
    Ok(hosts)
}

fn plans_for(
    hosts: &[HostSpec],
    ssh: &SshOptions,
    user: Option<&str>,
    port: Option<u16>,
) -> Vec<HostPlan> {
    hosts
        .iter()
        .map(|h| ssh.plan(&h.host, h.user.as_deref().or(user), h.port.or(port)))
        .collect()
}

/// What smscp will do, decided from the operands and the fan-out flags.
enum CopyMode {
    Single(CopyRequest),
    Fanout {
        copy: FanoutCopy,
        hosts: Vec<HostSpec>,
    },
    /// Hosts still to be resolved from -w / --hosts-file / --ec2-filter.
    FanoutFromFlags(FanoutCopy),
}

fn copy_mode(
    args: &ScpArgs,
    mut operands: Vec<Operand>,
    raw_target: &str,
) -> Result<CopyMode, String> {
    let Some(target) = operands.pop() else {
        return Err("no target given".to_owned());
    };
    let local_sources = |operands: &[Operand]| -> Result<Vec<std::path::PathBuf>, String> {
        operands
            .iter()
            .map(|op| match op {
                Operand::Local(path) => Ok(path.clone()),
                Operand::Remote(r) => Err(format!(
                    "{}:{}: a fan-out copies local files to every host; remote sources are not supported here",
                    r.host, r.path
                )),
            })
            .collect()
    };
    if args.fanout.names_hosts() {
        // pdcp's form: the target is a path on every host.
        let target = match target {
            Operand::Local(_) => raw_target.to_owned(),
            Operand::Remote(r) => {
                return Err(format!(
                    "{}:{}: with -w, --hosts-file or --ec2-filter write the target as a remote path (e.g. /opt/), without host:",
                    r.host, r.path
                ))
            }
        };
        return Ok(CopyMode::FanoutFromFlags(FanoutCopy::Push {
            sources: local_sources(&operands)?,
            target,
        }));
    }
    if let Operand::Remote(remote) = &target {
        if hostlist::is_hostlist(&remote.host) {
            let hosts = expand_operand_hosts(
                remote.user.as_deref(),
                &remote.host,
                remote.port,
                &args.fanout,
            )?;
            return Ok(CopyMode::Fanout {
                copy: FanoutCopy::Push {
                    sources: local_sources(&operands)?,
                    target: remote.path.clone(),
                },
                hosts,
            });
        }
    }
    let gather: Vec<&operand::RemotePath> = operands
        .iter()
        .filter_map(|op| match op {
            Operand::Remote(r) if hostlist::is_hostlist(&r.host) => Some(r),
            _ => None,
        })
        .collect();
    if let Some(first) = gather.first() {
        let all_same = operands.iter().all(|op| {
            matches!(op, Operand::Remote(r) if r.host == first.host && r.user == first.user && r.port == first.port)
        });
        if !all_same {
            return Err(
                "a gather copies from one hostlist: give every source as the same HOSTS:path"
                    .to_owned(),
            );
        }
        let Operand::Local(dir) = &target else {
            return Err("a gather needs a local target directory".to_owned());
        };
        if !dir.is_dir() {
            return Err(format!(
                "{}: Not a directory: a gather writes DIR/<host>/...; create the directory first",
                dir.display()
            ));
        }
        let hosts =
            expand_operand_hosts(first.user.as_deref(), &first.host, first.port, &args.fanout)?;
        let sources = gather.iter().map(|r| r.path.clone()).collect();
        return Ok(CopyMode::Fanout {
            copy: FanoutCopy::Gather {
                sources,
                target: dir.clone(),
            },
            hosts,
        });
    }
    let request = CopyRequest {
        sources: operands,
        target,
        recursive: args.recursive,
        preserve: args.preserve,
        port: args.port,
    };
    copy::check_shape(&request).map_err(|e| e.to_string())?;
    Ok(CopyMode::Single(request))
}

pub fn smscp(args: ScpArgs) -> u8 {
    start("smscp", args.ssh.verbose, args.ssh.quiet);
    let fail = |message: String| {
        diag::error(message);
        SCP_FAILURE
    };
    let mut operands = Vec::with_capacity(args.operands.len());
    for text in &args.operands {
        match operand::parse_operand(text) {
            Ok(op) => operands.push(op),
            Err(err) => return fail(format!("{text}: {err}")),
        }
    }
    let raw_target = args.operands.last().cloned().unwrap_or_default();
    let mode = match copy_mode(&args, operands, &raw_target) {
        Ok(mode) => mode,
        Err(err) => return fail(err),
    };
    let mut extra = Vec::new();
    if args.batch {
        extra.push("BatchMode=yes");
    }
    if args.compression {
        extra.push("Compression=yes");
    }
    let (ssh, spec, runtime) = match prepare(&args.ssh, &args.fanout, &args.secret, &extra) {
        Ok(prepared) => prepared,
        Err(err) => return fail(err),
    };
    let show_progress = !args.ssh.quiet && crate::tty::stderr_is_terminal();
    runtime.block_on(async move {
        crate::cancel::watch_ctrl_c();
        let keys = Arc::new(KeySource::new(spec));
        let (copy, hosts) = match mode {
            CopyMode::Single(request) => {
                let plans: Vec<HostPlan> = request
                    .sources
                    .iter()
                    .chain(std::iter::once(&request.target))
                    .filter_map(|op| match op {
                        Operand::Remote(r) => {
                            Some(ssh.plan(&r.host, r.user.as_deref(), r.port.or(request.port)))
                        }
                        Operand::Local(_) => None,
                    })
                    .collect();
                let db = match key_and_host_keys(&keys, &plans).await {
                    Ok(db) => db,
                    Err(err) => return fail(err),
                };
                let ctx = CopyContext::new(
                    args.recursive,
                    args.preserve,
                    args.limit_kbits,
                    Progress::new(show_progress, 1),
                );
                return copy::run(&request, &ssh, &keys, &db, &ctx).await;
            }
            CopyMode::Fanout { copy, hosts } => (copy, hosts),
            CopyMode::FanoutFromFlags(copy) => {
                match crate::targets::resolve(&args.fanout, keys.aws_config().await).await {
                    Ok(hosts) => (copy, hosts),
                    Err(err) => return fail(err.to_string()),
                }
            }
        };
        // A local source that cannot be copied fails the run (scp's rule) but not the hosts.
        let mut unusable_source = false;
        let copy = match copy {
            FanoutCopy::Push { sources, target } => {
                // Local sources are checked once here rather than failing on every host.
                let mut usable = Vec::new();
                for source in sources {
                    let problem = match std::fs::metadata(&source) {
                        Ok(meta) if meta.is_dir() && !args.recursive => {
                            Some("not a regular file (use -r)".to_owned())
                        }
                        Ok(_) => None,
                        Err(err) => Some(io_reason(&err)),
                    };
                    match problem {
                        Some(problem) => {
                            unusable_source = true;
                            diag::error(format!("{}: {problem}", source.display()));
                        }
                        None => usable.push(source),
                    }
                }
                if usable.is_empty() {
                    return SCP_FAILURE;
                }
                FanoutCopy::Push {
                    sources: usable,
                    target,
                }
            }
            gather => gather,
        };
        let plans = plans_for(&hosts, &ssh, None, args.port);
        let db = match key_and_host_keys(&keys, &plans).await {
            Ok(db) => db,
            Err(err) => return fail(err),
        };
        let ctx = Arc::new(CopyContext::new(
            args.recursive,
            args.preserve,
            args.limit_kbits,
            Progress::new(show_progress, plans.len()),
        ));
        let code =
            copy::run_fanout(copy, plans, keys, db, &fanout_options(&args.fanout), ctx).await;
        if code == 0 && unusable_source {
            SCP_FAILURE
        } else {
            code
        }
    })
}

fn io_reason(err: &std::io::Error) -> String {
    match err.kind() {
        std::io::ErrorKind::NotFound => "No such file or directory".to_owned(),
        std::io::ErrorKind::PermissionDenied => "Permission denied".to_owned(),
        _ => err.to_string(),
    }
}

pub fn smssh(args: SshArgs) -> u8 {
    start("smssh", args.ssh.verbose, args.ssh.quiet);
    let fail = |message: String| {
        diag::error(message);
        SSH_FAILURE
    };
    let (ssh, spec, runtime) = match prepare(&args.ssh, &args.fanout, &args.secret, &[]) {
        Ok(prepared) => prepared,
        Err(err) => return fail(err),
    };
    let code = if args.fanout.names_hosts() {
        runtime.block_on(smssh_fanout(&args, &ssh, spec))
    } else if args.group || args.json {
        fail(
            "-b/--group and --json apply to a fan-out: add -w HOSTS, --hosts-file or --ec2-filter"
                .to_owned(),
        )
    } else {
        runtime.block_on(smssh_single(&args, &ssh, spec))
    };
    // The stdin pump may sit in a blocking read of the terminal; the runtime must not wait
    // for it, or smssh would hang after the remote command ended until Enter is pressed.
    runtime.shutdown_background();
    code
}

async fn smssh_single(args: &SshArgs, ssh: &SshOptions, spec: SecretSpec) -> u8 {
    let fail = |message: String| {
        diag::error(message);
        SSH_FAILURE
    };
    let Some(destination_text) = &args.destination else {
        return fail(
            "no destination given: smssh [user@]host [command], or -w HOSTS -- command".to_owned(),
        );
    };
    let destination = match operand::parse_destination(destination_text) {
        Ok(destination) => destination,
        Err(err) => return fail(format!("{destination_text}: {err}")),
    };
    let plan = ssh.plan(
        &destination.host,
        destination.user.as_deref().or(args.login.as_deref()),
        destination.port.or(args.port),
    );
    let command = (!args.command.is_empty()).then(|| args.command.join(" "));
    // As ssh: a PTY for an interactive shell on a terminal, for -t on a terminal, or always
    // for -tt; never with -T.
    let pty = !args.no_tty
        && match (args.tty, &command) {
            (0, None) => crate::tty::stdin_is_terminal(),
            (0, Some(_)) => false,
            (1, _) => crate::tty::stdin_is_terminal(),
            _ => true,
        };
    let request = ExecRequest {
        command,
        pty,
        forward_stdin: !args.null_stdin,
        input: None,
    };
    let keys = KeySource::new(spec);
    let db = match key_and_host_keys(&keys, std::slice::from_ref(&plan)).await {
        Ok(db) => db,
        Err(err) => return fail(err),
    };
    let conn = match session::connect(&plan, &keys, &db).await {
        Ok(conn) => conn,
        Err(err) => return fail(err.to_string()),
    };
    diag::debug(format_args!(
        "authenticated to {} as {} with {}",
        plan.hostname, plan.user, conn.key_used.key
    ));
    match exec::run(&conn, &request, &mut exec::Terminal).await {
        Ok(exit) => exit.code(),
        Err(err) => fail(err.to_string()),
    }
}

/// How a fan-out prints what the hosts said.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Presentation {
    Prefixed,
    Grouped,
    Json,
}

/// One host's command result.
struct HostRun {
    exit: RemoteExit,
    captured: Option<Captured>,
}

async fn smssh_fanout(args: &SshArgs, ssh: &SshOptions, spec: SecretSpec) -> u8 {
    let fail = |message: String| {
        diag::error(message);
        SSH_FAILURE
    };
    crate::cancel::watch_ctrl_c();
    let words: Vec<String> = args
        .destination
        .iter()
        .chain(args.command.iter())
        .cloned()
        .collect();
    if words.is_empty() {
        return fail("no command given: smssh -w HOSTS -- command".to_owned());
    }
    let command = words.join(" ");
    let presentation = if args.json {
        Presentation::Json
    } else if args.group {
        Presentation::Grouped
    } else {
        Presentation::Prefixed
    };
    let keys = Arc::new(KeySource::new(spec));
    let hosts = match crate::targets::resolve(&args.fanout, keys.aws_config().await).await {
        Ok(hosts) => hosts,
        Err(err) => return fail(err.to_string()),
    };
    let plans = plans_for(&hosts, ssh, args.login.as_deref(), args.port);
    let db = match key_and_host_keys(&keys, &plans).await {
        Ok(db) => db,
        Err(err) => return fail(err),
    };
    let request = Arc::new(ExecRequest {
        command: Some(command),
        pty: false,
        // As pdsh: the remote commands read no stdin, so one host cannot swallow it.
        forward_stdin: false,
        input: None,
    });
    let outcomes = fanout::run(
        plans,
        keys,
        db,
        &fanout_options(&args.fanout),
        move |conn, plan| {
            let request = Arc::clone(&request);
            async move {
                if presentation == Presentation::Prefixed {
                    let mut sink = exec::Prefixed::new(&plan.label);
                    let exit = exec::run(&conn, &request, &mut sink)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(HostRun {
                        exit,
                        captured: None,
                    })
                } else {
                    let mut sink = Captured::default();
                    let exit = exec::run(&conn, &request, &mut sink)
                        .await
                        .map_err(|e| e.to_string())?;
                    Ok(HostRun {
                        exit,
                        captured: Some(sink),
                    })
                }
            }
        },
    )
    .await;
    match presentation {
        Presentation::Json => print_json(&outcomes),
        Presentation::Grouped => print_groups(&outcomes),
        Presentation::Prefixed => {}
    }
    let mut code = 0u8;
    for outcome in &outcomes {
        if let Ok(run) = &outcome.result {
            let host_code = run.exit.code();
            if host_code != 0 && presentation != Presentation::Json {
                diag::error(format!(
                    "{}: {}",
                    outcome.plan.label,
                    describe_exit(&run.exit)
                ));
            }
            code = code.max(host_code);
        }
    }
    let quiet_progress = Progress::new(false, outcomes.len());
    if copy::summarize(&outcomes, &quiet_progress) > 0 {
        code = SSH_FAILURE;
    }
    if crate::cancel::requested() {
        code = 130;
    }
    code
}

fn describe_exit(exit: &RemoteExit) -> String {
    match exit {
        RemoteExit::Status(status) => format!("exit status {status}"),
        RemoteExit::Signal { name, .. } => format!("killed by signal {name}"),
        RemoteExit::NoStatus => "the session ended without an exit status".to_owned(),
    }
}

fn print_json(outcomes: &[fanout::HostOutcome<HostRun>]) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    for outcome in outcomes {
        let (exit_status, signal, stdout, stderr, error) = match &outcome.result {
            Ok(run) => {
                let captured = run.captured.as_ref();
                let text = |bytes: Option<&Vec<u8>>| {
                    bytes.map(|b| String::from_utf8_lossy(b).into_owned())
                };
                let (status, signal) = match &run.exit {
                    RemoteExit::Status(s) => (Some(*s), None),
                    RemoteExit::Signal { name, .. } => (None, Some(name.clone())),
                    RemoteExit::NoStatus => (None, None),
                };
                (
                    status,
                    signal,
                    text(captured.map(|c| &c.stdout)),
                    text(captured.map(|c| &c.stderr)),
                    None,
                )
            }
            Err(err) => (None, None, None, None, Some(err.to_string())),
        };
        let object = serde_json::json!({
            "host": outcome.plan.label,
            "address": outcome.plan.hostname,
            "port": outcome.plan.port,
            "user": outcome.plan.user,
            "exit_status": exit_status,
            "signal": signal,
            "stdout": stdout.unwrap_or_default(),
            "stderr": stderr.unwrap_or_default(),
            "duration_ms": outcome.duration.as_millis() as u64,
            "error": error,
        });
        let _ = writeln!(out, "{object}");
    }
}

fn print_groups(outcomes: &[fanout::HostOutcome<HostRun>]) {
    use std::io::Write;
    // Groups keep the order in which their first host appears.
    let mut groups: Vec<(Vec<u8>, Vec<&str>)> = Vec::new();
    for outcome in outcomes {
        let Ok(run) = &outcome.result else { continue };
        let Some(captured) = &run.captured else {
            continue;
        };
        let mut text = captured.stdout.clone();
        text.extend_from_slice(&captured.stderr);
        match groups.iter_mut().find(|(t, _)| *t == text) {
            Some((_, hosts)) => hosts.push(&outcome.plan.label),
            None => groups.push((text, vec![&outcome.plan.label])),
        }
    }
    let mut out = std::io::stdout().lock();
    for (text, hosts) in groups {
        let rule = "-".repeat(15);
        let _ = writeln!(
            out,
            "{rule}\n{} ({})\n{rule}",
            hostlist::compress(&hosts),
            hosts.len()
        );
        let _ = out.write_all(&text);
        if !text.ends_with(b"\n") && !text.is_empty() {
            let _ = writeln!(out);
        }
    }
}

/// `smssh rotate`'s exit status when a step failed (its hosts are named on stderr).
pub const ROTATE_FAILED: u8 = 1;
/// `smssh rotate`'s exit status for a command line it cannot run.
pub const ROTATE_USAGE: u8 = 2;

/// `smssh rotate`: a whole rotation, one step, or a reconciliation.
pub fn rotate(args: RotateArgs) -> u8 {
    start("smssh", args.ssh.verbose, args.ssh.quiet);
    let usage = |message: String| {
        diag::error(message);
        ROTATE_USAGE
    };
    let plan = match rotation_plan(&args) {
        Ok(plan) => plan,
        Err(message) => return usage(message),
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(err) => return usage(format!("cannot start: {err}")),
    };
    let code = runtime.block_on(run_rotation(&args, plan));
    runtime.shutdown_background();
    code
}

/// What `smssh rotate` was asked to do, checked before anything touches AWS.
struct RotationPlan {
    spec: SecretSpec,
    ssh: SshOptions,
    settings: rotation::Settings,
    mode: RotationMode,
}

enum RotationMode {
    Rotate,
    Step(rotation::Step, String),
    Reconcile,
}

fn rotation_plan(args: &RotateArgs) -> Result<RotationPlan, String> {
    let local = Local::detect();
    let secret_args = SecretArgs {
        location: args.secret.clone(),
        ..SecretArgs::default()
    };
    let spec = plan::resolve_secret(&secret_args, &local).map_err(|e| e.to_string())?;
    let implied = implied_options(&args.fanout, &[]);
    let implied: Vec<&str> = implied.iter().map(String::as_str).collect();
    let ssh = SshOptions::load(&args.ssh, &implied, &local).map_err(|e| e.to_string())?;
    if !args.fanout.names_hosts() {
        return Err(
            "no hosts given: select the workers with -w HOSTS, --hosts-file FILE or --ec2-filter FILTER"
                .to_owned(),
        );
    }
    let channel: rotation::Channel = args.deploy.parse().map_err(|e| format!("--deploy: {e}"))?;
    if channel == rotation::Channel::Ssm && args.fanout.ec2_filter.is_empty() {
        return Err(rotation::RotationError::SsmNeedsInstances.to_string());
    }
    let key_type = args
        .key_type
        .parse()
        .map_err(|e| format!("--key-type: {e}"))?;
    let grace = rotation::parse_duration(&args.grace).map_err(|e| format!("--grace: {e}"))?;
    if let Some(file) = &args.authorized_keys_file {
        rotation::block::validate_file(file).map_err(|e| format!("--authorized-keys-file: {e}"))?;
    }
    let ssm_user = args.login.clone().unwrap_or_else(|| "ec2-user".to_owned());
    if channel == rotation::Channel::Ssm {
        rotation::block::validate_user(&ssm_user).map_err(|e| format!("-l: {e}"))?;
    }
    let mode = match (&args.step, &args.token, args.reconcile) {
        (Some(step), Some(token), false) => {
            let step = step.parse().map_err(|e| format!("--step: {e}"))?;
            rotation::block::validate_version_id(token).map_err(|e| format!("--token: {e}"))?;
            RotationMode::Step(step, token.clone())
        }
        (None, None, true) => RotationMode::Reconcile,
        (None, None, false) => RotationMode::Rotate,
        _ => return Err("--step and --token go together, without --reconcile".to_owned()),
    };
    Ok(RotationPlan {
        spec,
        ssh,
        settings: rotation::Settings {
            key_type,
            grace,
            learn_host_keys: args.learn_host_keys,
            channel,
            ssm_user,
            authorized_keys_file: args.authorized_keys_file.clone(),
            ssm_timeout: Duration::from_secs(args.ssm_timeout.max(1)),
            fanout: fanout_options(&args.fanout),
            require_rotation_enabled: false,
        },
        mode,
    })
}

/// The workers, with their instance ids when SSM needs them.
async fn rotation_targets(
    args: &RotateArgs,
    ssh: &SshOptions,
    settings: &rotation::Settings,
    aws: &aws_config::SdkConfig,
) -> Result<Vec<rotation::Target>, String> {
    if settings.channel == rotation::Channel::Ssh {
        let hosts = crate::targets::resolve(&args.fanout, aws)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(plans_for(&hosts, ssh, args.login.as_deref(), args.port)
            .into_iter()
            .map(|plan| rotation::Target {
                plan,
                instance_id: None,
            })
            .collect());
    }
    let filters = args
        .fanout
        .ec2_filter
        .iter()
        .map(|f| crate::ec2::parse_filter(f))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let instances = crate::ec2::discover_instances(aws, &filters)
        .await
        .map_err(|e| e.to_string())?;
    let mut targets = Vec::new();
    for instance in instances {
        let mut spec = vec![HostSpec {
            user: None,
            host: instance.private_address.clone(),
            port: None,
        }];
        for expr in &args.fanout.exclude {
            spec = hostlist::exclude(spec, expr).map_err(|e| format!("-x {expr}: {e}"))?;
        }
        if spec.is_empty() {
            continue;
        }
        targets.push(rotation::Target {
            plan: ssh.plan(
                &instance.private_address,
                Some(&settings.ssm_user),
                args.port,
            ),
            instance_id: Some(instance.instance_id),
        });
    }
    if targets.is_empty() {
        return Err("-x excluded every instance the EC2 filter found".to_owned());
    }
    Ok(targets)
}

/// Reads `--bootstrap-key` into the same wrappers a key from the secret lives in.
fn bootstrap_key(path: &std::path::Path) -> Result<Arc<LoadedKey>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|err| format!("--bootstrap-key {}: {err}", path.display()))?;
    let material = crate::secret::KeyMaterial {
        private_key: crate::secret::PrivateKeyBytes::Text(secrecy::SecretString::from(text)),
        passphrase: None,
        known_hosts: None,
    };
    let key = crate::key::ClientKey::decode(&material).map_err(|err| match err {
        crate::key::KeyError::NeedsPassphrase => format!(
            "--bootstrap-key {}: the key is encrypted: give an unencrypted copy (e.g. on a tmpfs) for the first rotation",
            path.display()
        ),
        other => format!("--bootstrap-key {}: {other}", path.display()),
    })?;
    Ok(Arc::new(LoadedKey {
        key,
        version_id: None,
        known_hosts: None,
    }))
}

async fn run_rotation(args: &RotateArgs, plan: RotationPlan) -> u8 {
    let failed = |message: String| {
        diag::error(message);
        if crate::cancel::requested() {
            130
        } else {
            ROTATE_FAILED
        }
    };
    crate::cancel::watch_ctrl_c();
    let aws = crate::aws::sdk_config(&plan.spec.aws).await;
    let targets = match rotation_targets(args, &plan.ssh, &plan.settings, &aws).await {
        Ok(targets) => targets,
        Err(err) => return failed(err),
    };
    diag::apply_log_level(targets.first().and_then(|t| t.plan.log_level));
    let bootstrap = match args.bootstrap_key.as_deref().map(bootstrap_key).transpose() {
        Ok(key) => key,
        Err(err) => return failed(err),
    };
    let quiet = args.ssh.quiet;
    let report: rotation::Reporter = Arc::new(move |note, line: &str| match note {
        rotation::Note::Progress if !quiet => println!("{line}"),
        rotation::Note::Progress => {}
        rotation::Note::HostFailed => diag::error(line),
    });
    let rotation =
        match rotation::Rotation::new(&aws, plan.spec, plan.settings, targets, bootstrap, report) {
            Ok(rotation) => rotation,
            Err(err) => return failed(err.to_string()),
        };
    let result = match plan.mode {
        RotationMode::Rotate => rotation.rotate().await.map(|outcomes| {
            outcomes
                .last()
                .map(|o| format!("rotated to version {}", o.token))
                .unwrap_or_default()
        }),
        RotationMode::Step(step, token) => rotation
            .run_step(step, &token, true)
            .await
            .map(|o| format!("{}: {}", o.step, o.summary)),
        RotationMode::Reconcile => rotation
            .reconcile()
            .await
            .map(|s| format!("reconcile: {s}")),
    };
    match result {
        Ok(summary) => {
            if !args.ssh.quiet {
                println!("{summary}");
            }
            0
        }
        Err(err) => failed(err.to_string()),
    }
}
