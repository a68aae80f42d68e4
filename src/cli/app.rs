//! The three programs' top level (`smscp`, `smssh`, `smssh rotate`): set up the process,
//! resolve the plan, run it, and map every outcome to one stderr line and the exit status
//! scp/ssh would use.
//!
//! Owns: the order of start-up (hardening before any secret, then the plan, then the key,
//! then known_hosts, then connections), the tokio runtime, and exit codes. Invariant: every
//! failure reaches the user as exactly one `program: what: why: what to do` line (a fan-out
//! adds one per failed host), rendered here from a typed error. Must not know: how arguments
//! become a plan (`plan`, `rotation::plan`), protocol details, or output formats
//! (`term::output`).

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::audit::{self, Action, Auditor, KeyUsed, Outcome};
use crate::cli::args::{AgentArgs, CheckArgs, RotateArgs, ScpArgs, SshArgs};
use crate::config::known_hosts::KnownHostsError;
use crate::copy::{self, CopyContext};
use crate::fanout;
use crate::fanout::board::{self, Board, Slot, OUTPUT_CAP};
use crate::key::source::{KeyLoadError, KeySource};
use crate::plan::command::{self, CommandMode, CommandPlanError, Presentation, Remote};
use crate::plan::copy::{CopyMode, CopyPlan, FanoutCopy, FanoutHosts};
use crate::plan::targets::{self, HostSources, TargetError};
use crate::plan::{HostPlan, PlanError, SshOptions};
use crate::rotation::plan::{RotationMode, RotationPlan, RotationPlanError};
use crate::rotation::{self, RotationError};
use crate::ssh::exec::{self, Captured, ExecError, ExecRequest};
use crate::ssh::forward;
use crate::ssh::host_io::HostIo;
use crate::ssh::session::{self, ConnectError, HostKeyDb};
use crate::term::output::{self, HostRun};
use crate::term::progress::Progress;
use crate::term::{cancel, diag, live, tty};

/// ssh's exit status for its own failures (connection, host key, authentication, secret).
pub const SSH_FAILURE: u8 = 255;
/// scp's exit status for any failure.
pub const SCP_FAILURE: u8 = 1;
/// `smssh rotate`'s exit status when a step failed (its hosts are named on stderr).
pub const ROTATE_FAILED: u8 = 1;
/// `smssh rotate`'s exit status for a command line it cannot run.
pub const ROTATE_USAGE: u8 = 2;
/// `smssh check`'s exit status when a required check failed, or its command line is refused.
pub const CHECK_FAILED: u8 = 1;
/// The exit status after Ctrl-C, as a shell reports a process killed by SIGINT.
const INTERRUPTED: u8 = 130;

/// Every failure that ends a program early; each renders as the one line the user sees.
#[derive(Debug, thiserror::Error)]
enum AppError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error(transparent)]
    CommandPlan(#[from] CommandPlanError),
    #[error(transparent)]
    RotationPlan(#[from] RotationPlanError),
    #[error("cannot start: {0}")]
    Runtime(std::io::Error),
    #[error(transparent)]
    Key(#[from] KeyLoadError),
    #[error(transparent)]
    KnownHosts(#[from] KnownHostsError),
    #[error(transparent)]
    Targets(#[from] TargetError),
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    #[error(transparent)]
    Rotation(#[from] RotationError),
    #[error(transparent)]
    Forward(#[from] crate::ssh::forward::ForwardError),
    #[error(transparent)]
    Background(#[from] crate::cli::background::BackgroundError),
    #[error(transparent)]
    Agent(#[from] crate::agent::AgentRunError),
    #[error("agent: {0}")]
    AgentDuration(crate::rotation::DurationError),
    #[error(transparent)]
    AuditConfig(#[from] audit::AuditConfigError),
    #[error(transparent)]
    AuditOpen(#[from] audit::AuditOpenError),
    #[error(transparent)]
    Outdir(#[from] crate::ssh::outdir::OutdirError),
    #[error(transparent)]
    Shell(#[from] crate::shell::ShellError),
}

fn runtime() -> Result<tokio::runtime::Runtime, AppError> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(AppError::Runtime)
}

fn start(program: &'static str, verbose: u8, quiet: bool) {
    diag::init(program, verbose, quiet);
    let posture = crate::key::hardening::lock_down();
    diag::debug(format_args!(
        "core dumps disabled: {}; memory locked: {}",
        posture.core_dumps_disabled,
        match &posture.memory_locked {
            Ok(()) => "yes".to_owned(),
            Err(why) => format!("no ({why})"),
        }
    ));
}

/// Opens this invocation's audit destinations: the administrator's (which must open, or
/// nothing runs), the user's and `--audit-log`'s.
fn open_auditor(program: &str, audit_log: Option<&Path>) -> Result<Arc<Auditor>, AppError> {
    let local = crate::plan::Local::detect();
    let user_path = local.tool_config_path();
    let user = crate::plan::load_tool_config(&user_path)?
        .audit
        .unwrap_or_default();
    let (system, system_path) = audit::load_system_config()?;
    let settings = audit::Settings::merge(&system, &system_path, &user, &user_path, audit_log)?;
    Ok(Arc::new(Auditor::open(
        &settings,
        audit::Invocation::current(program),
    )?))
}

/// The audit view of a host plan.
fn audit_host(plan: &HostPlan) -> audit::Host {
    audit::Host {
        host: plan.hostname.clone(),
        port: plan.port,
        login: plan.user.clone(),
    }
}

/// Prints the error's one line and returns `code`.
fn fail(code: u8, err: AppError) -> u8 {
    diag::error(err);
    code
}

/// Fetches the key (once for the invocation) and loads the host keys `plans` need. The
/// plans' LogLevel is applied first, so the fetch is already reported at that level.
async fn key_and_host_keys(keys: &KeySource, plans: &[HostPlan]) -> Result<HostKeyDb, AppError> {
    diag::apply_log_level(plans.first().and_then(|p| p.log_level));
    let key = keys.initial().await?;
    diag::debug(format_args!("key {} from {}", key.key, keys.spec().id));
    Ok(HostKeyDb::load(plans, key.known_hosts.as_deref())?)
}

/// A fan-out's hosts as the user named them (hostlists, groups, EC2 queries), resolved into
/// one plan each, with the key read and the host keys loaded; from here on the audit records
/// carry the secret's ARN.
async fn fanout_plans(
    keys: &KeySource,
    hosts: &HostSources,
    ssh: &SshOptions,
    login: Option<&str>,
    port: Option<u16>,
    auditor: &Auditor,
) -> Result<(Vec<HostPlan>, HostKeyDb), AppError> {
    let hosts = targets::resolve(hosts, keys.aws_config().await).await?;
    let plans = targets::plans(&hosts, ssh, login, port);
    let db = key_and_host_keys(keys, &plans).await?;
    if let Some(arn) = keys.secret_arn() {
        auditor.set_secret_arn(arn);
    }
    Ok((plans, db))
}

pub fn smscp(args: ScpArgs) -> u8 {
    start("smscp", args.ssh.verbose, args.ssh.quiet);
    let show_progress = !args.ssh.quiet && tty::stderr_is_terminal();
    let prepared = crate::plan::copy::resolve(&args)
        .map_err(AppError::from)
        .and_then(|plan| {
            let auditor = open_auditor("smscp", args.audit.audit_log.as_deref())?;
            Ok((plan, auditor, runtime()?))
        });
    match prepared {
        Ok((plan, auditor, runtime)) => runtime
            .block_on(run_copy(plan, show_progress, auditor))
            .unwrap_or_else(|err| fail(SCP_FAILURE, err)),
        Err(err) => fail(SCP_FAILURE, err),
    }
}

async fn run_copy(
    plan: CopyPlan,
    show_progress: bool,
    auditor: Arc<Auditor>,
) -> Result<u8, AppError> {
    cancel::watch_ctrl_c();
    let ssh = &plan.common.ssh;
    let keys = Arc::new(
        KeySource::new(plan.common.secret.clone()).with_last_resort(plan.common.identities.clone()),
    );
    let (copy, hosts) = match &plan.mode {
        CopyMode::Single(request) => {
            let plans: Vec<HostPlan> = request
                .sources
                .iter()
                .chain(std::iter::once(&request.target))
                .filter_map(|op| match op {
                    crate::config::operand::Operand::Remote(r) => {
                        Some(ssh.plan(&r.host, r.user.as_deref(), r.port.or(request.port)))
                    }
                    crate::config::operand::Operand::Local(_) => None,
                })
                .collect();
            let db = key_and_host_keys(&keys, &plans).await?;
            if let Some(arn) = keys.secret_arn() {
                auditor.set_secret_arn(arn);
            }
            let ctx = CopyContext::new(&plan, Progress::new(show_progress, 1)).with_audit(auditor);
            return Ok(copy::run(request, ssh, &keys, &db, &ctx).await);
        }
        CopyMode::Fanout {
            copy,
            hosts: FanoutHosts::Expanded(hosts),
        } => (copy.clone(), hosts.clone()),
        CopyMode::Fanout {
            copy,
            hosts: FanoutHosts::Sources(sources),
        } => (
            copy.clone(),
            targets::resolve(sources, keys.aws_config().await).await?,
        ),
    };
    let (copy, unusable_source) = match copy {
        FanoutCopy::Push { sources, target } => {
            let (usable, unusable) =
                copy::usable_sources(sources, plan.recursive, &target, &auditor);
            if usable.is_empty() {
                return Ok(SCP_FAILURE);
            }
            let push = FanoutCopy::Push {
                sources: usable,
                target,
            };
            (push, unusable)
        }
        gather => (gather, false),
    };
    let plans = targets::plans(&hosts, ssh, None, plan.port);
    let db = key_and_host_keys(&keys, &plans).await?;
    if let Some(arn) = keys.secret_arn() {
        auditor.set_secret_arn(arn);
    }
    let ctx = Arc::new(
        CopyContext::new(&plan, Progress::new(show_progress, plans.len())).with_audit(auditor),
    );
    // Where each host stands, for the first Ctrl-C's account: a copy to many hosts stops at
    // the second Ctrl-C, as a command fan-out does. Copies keep no output on the board.
    let board = Arc::new(Board::new(plans.iter().map(|p| p.label.clone()), 0));
    board::install(Arc::clone(&board));
    cancel::account_with(move || board.account());
    let progress = Arc::clone(&ctx.progress);
    cancel::announce_with(move |line| progress.line(&format!("{}: {line}", diag::program())));
    // The plan sets `via` only on uploads (pushes), so a gather always goes direct.
    let code = match (&plan.via, copy) {
        (Some(via), FanoutCopy::Push { sources, target }) => {
            let options = &plan.fanout;
            crate::copy_via_s3::run(via, sources, target, plans, keys, db, options, &ctx).await
        }
        (_, copy) => copy::run_fanout(copy, plans, keys, db, &plan.fanout, ctx).await,
    };
    Ok(if code == 0 && unusable_source {
        SCP_FAILURE
    } else {
        code
    })
}

pub fn smssh(args: SshArgs) -> u8 {
    start("smssh", args.ssh.verbose, args.ssh.quiet);
    if args.print_config {
        return match command::resolve_config(&args) {
            Ok(config) => {
                for line in config.lines() {
                    diag::out(line);
                }
                0
            }
            Err(err) => fail(SSH_FAILURE, err.into()),
        };
    }
    if args.list_groups {
        return list_groups();
    }
    let prepared = command::resolve(&args, tty::stdin_is_terminal)
        .map_err(AppError::from)
        .and_then(|plan| Ok((plan, runtime()?)));
    let (plan, runtime) = match prepared {
        Ok(prepared) => prepared,
        Err(err) => return fail(SSH_FAILURE, err),
    };
    // -f: this process only waits for a second smssh to be ready in the background.
    let background = matches!(
        plan.mode,
        CommandMode::Single {
            background: true,
            ..
        }
    );
    if background && !crate::cli::background::is_background_process() {
        return crate::cli::background::run_in_background()
            .unwrap_or_else(|err| fail(SSH_FAILURE, err.into()));
    }
    let auditor = match open_auditor("smssh", args.audit.audit_log.as_deref()) {
        Ok(auditor) => auditor,
        Err(err) => return fail(SSH_FAILURE, err),
    };
    let code = runtime
        .block_on(run_command(plan, auditor))
        .unwrap_or_else(|err| fail(SSH_FAILURE, err));
    // The stdin pump may sit in a blocking read of the terminal; the runtime must not wait
    // for it, or smssh would hang after the remote command ended until Enter is pressed.
    runtime.shutdown_background();
    code
}

async fn run_command(plan: command::CommandPlan, auditor: Arc<Auditor>) -> Result<u8, AppError> {
    let keys = KeySource::new(plan.common.secret).with_last_resort(plan.common.identities);
    match plan.mode {
        CommandMode::Single {
            plan,
            remote,
            pty,
            forward_stdin,
            forwards,
            background,
        } => {
            let (command, subsystem) = match &remote {
                Remote::Shell | Remote::Nothing => (None, None),
                Remote::Command(command) => (Some(command.clone()), None),
                Remote::Subsystem(name) => (None, Some(name.clone())),
            };
            let action = Action::Exec {
                command: command.clone(),
                subsystem: subsystem.clone(),
            };
            let request = ExecRequest {
                command,
                pty,
                forward_stdin,
                input: None,
            };
            let host = audit_host(&plan);
            let started = Instant::now();
            let mut used = KeyUsed::default();
            let result: Result<u8, AppError> = async {
                let db = key_and_host_keys(&keys, std::slice::from_ref(&plan)).await?;
                let conn = session::connect(&plan, &keys, &db).await?;
                used = conn.audited_key();
                diag::debug(format_args!(
                    "authenticated to {} as {} with {}",
                    plan.hostname, plan.user, conn.key_used.key
                ));
                let established = forward::establish(&conn.handle, &forwards, diag::warn).await?;
                if background {
                    crate::cli::background::detach();
                }
                let serving = forward::serve(&conn.handle, established, diag::warn);
                if remote == Remote::Nothing {
                    serving.await;
                    diag::error(format_args!(
                        "Connection to {} closed by remote host.",
                        plan.label
                    ));
                    return Ok(SSH_FAILURE);
                }
                let run = async {
                    match &subsystem {
                        Some(name) => {
                            exec::run_subsystem(&conn, name, &request, &mut exec::Terminal).await
                        }
                        None => exec::run(&conn, &request, &mut exec::Terminal).await,
                    }
                };
                tokio::pin!(run);
                // The forwards run as long as the command; if the session ends first, the
                // command's end (or error) follows at once.
                let exit = tokio::select! {
                    exit = &mut run => exit?,
                    () = serving => run.await?,
                };
                Ok(exit.code())
            }
            .await;
            if let Some(arn) = keys.secret_arn() {
                auditor.set_secret_arn(arn);
            }
            auditor.record(&audit::Event {
                host: Some(host),
                key: used,
                action,
                outcome: match &result {
                    Ok(_) => Outcome::Ok,
                    Err(err) => Outcome::Failed(err.to_string()),
                },
                exit_status: Some(i32::from(*result.as_ref().unwrap_or(&SSH_FAILURE))),
                duration: started.elapsed(),
            });
            result
        }
        CommandMode::Shell {
            hosts,
            login,
            port,
            options,
            capture_limit,
        } => {
            let keys = Arc::new(keys);
            let (plans, db) = fanout_plans(
                &keys,
                &hosts,
                &plan.common.ssh,
                login.as_deref(),
                port,
                &auditor,
            )
            .await?;
            let shell = crate::shell::Shell {
                ssh: plan.common.ssh,
                login,
                port,
                options,
                capture_limit,
                keys,
                auditor,
            };
            Ok(crate::shell::run(shell, plans, db).await?)
        }
        CommandMode::StdioForward { plan, host, port } => {
            let started = Instant::now();
            // An IPv6 address in brackets, as -W takes it.
            let to = if host.contains(':') {
                format!("[{host}]:{port}")
            } else {
                format!("{host}:{port}")
            };
            let record = |key: KeyUsed, outcome: Outcome| {
                if let Some(arn) = keys.secret_arn() {
                    auditor.set_secret_arn(arn);
                }
                auditor.record(&audit::Event {
                    host: Some(audit_host(&plan)),
                    key,
                    action: Action::StdioForward { to: to.clone() },
                    outcome,
                    exit_status: None,
                    duration: started.elapsed(),
                });
            };
            let mut opened = false;
            let mut used = KeyUsed::default();
            let result: Result<u8, AppError> = async {
                let db = key_and_host_keys(&keys, std::slice::from_ref(&plan)).await?;
                let conn = session::connect(&plan, &keys, &db).await?;
                used = conn.audited_key();
                // The record is written as soon as the channel is open: the program whose
                // ProxyCommand this is may end this process with a signal when it is done,
                // as OpenSSH does, so the end of the forward is never a safe moment.
                crate::ssh::proxy::stdio_forward(conn.handle, &plan.label, &host, port, || {
                    opened = true;
                    record(used.clone(), Outcome::Ok);
                })
                .await
                .map_err(|source| ConnectError::Proxy {
                    host: plan.label.clone(),
                    source,
                })?;
                Ok(0)
            }
            .await;
            if let (Err(err), false) = (&result, opened) {
                record(used, Outcome::Failed(err.to_string()));
            }
            result
        }
        CommandMode::Fanout {
            command,
            presentation,
            hosts,
            login,
            port,
            options,
            capture_limit,
            pdsh,
            output_dirs,
            stdin_all,
        } => {
            cancel::watch_ctrl_c();
            let keys = Arc::new(keys);
            let (plans, db) = fanout_plans(
                &keys,
                &hosts,
                &plan.common.ssh,
                login.as_deref(),
                port,
                &auditor,
            )
            .await?;
            // Where each host stands, for the first Ctrl-C's account and the live view.
            let board = Arc::new(Board::new(
                plans.iter().map(|p| p.label.clone()),
                OUTPUT_CAP,
            ));
            board::install(Arc::clone(&board));
            let account = Arc::clone(&board);
            // pdsh -b: one Ctrl-C stops the run, without the account first.
            if !pdsh.is_some_and(|style| style.batch) {
                cancel::account_with(move || account.account());
            }
            let presentation = match presentation {
                Presentation::Live
                    if !std::io::IsTerminal::is_terminal(&std::io::stdout())
                        || may_ask_host_key(&plans, &db)
                        // The terminal's keys go to the hosts, not to the view.
                        || (stdin_all && tty::stdin_is_terminal()) =>
                {
                    Presentation::Prefixed
                }
                other => other,
            };
            let host_io = fanout_host_io(output_dirs, stdin_all, &board)?;
            let job_host_io = host_io.clone();
            // A terminal the view cannot take (no controlling terminal) still gets the lines.
            let view = match presentation {
                Presentation::Live => live::start(Arc::clone(&board))
                    .inspect_err(|err| diag::warn(err))
                    .ok(),
                _ => None,
            };
            let presentation = match (presentation, &view) {
                (Presentation::Live, None) => Presentation::Prefixed,
                (other, _) => other,
            };
            let action = Action::Exec {
                command: Some(command.clone()),
                subsystem: None,
            };
            let job_auditor = Arc::clone(&auditor);
            let job_action = action.clone();
            let request = Arc::new(ExecRequest {
                command: Some(command),
                pty: false,
                // As pdsh: the remote commands read no stdin, so one host cannot swallow it.
                forward_stdin: false,
                input: None,
            });
            // A non-zero exit status is a failure only the job sees; it fires --fail-fast.
            let stop = fanout::Stop::new(options.fail_fast);
            let job_stop = stop.clone();
            let outcomes = fanout::run_until(plans, keys, db, &options, stop, move |conn, plan| {
                let request = Arc::clone(&request);
                let auditor = Arc::clone(&job_auditor);
                let action = job_action.clone();
                let stop = job_stop.clone();
                let host_io = job_host_io.clone();
                async move {
                    let started = Instant::now();
                    let slot = Slot::of(&plan.label);
                    slot.running();
                    let ran = async {
                        if presentation == Presentation::Live {
                            let exit = host_io.run(&conn, &request, &mut slot.sink()).await?;
                            Ok(HostRun {
                                exit,
                                captured: None,
                            })
                        } else if presentation == Presentation::Prefixed {
                            // pdsh -N: the lines without their `host: ` label.
                            let label = match pdsh {
                                Some(style) if !style.labels => "",
                                _ => plan.label.as_str(),
                            };
                            let mut sink = exec::Prefixed::new(label);
                            let exit = host_io.run(&conn, &request, &mut sink).await?;
                            Ok::<_, ExecError>(HostRun {
                                exit,
                                captured: None,
                            })
                        } else {
                            let mut sink = Captured::with_limit(capture_limit);
                            let exit = host_io.run(&conn, &request, &mut sink).await?;
                            Ok(HostRun {
                                exit,
                                captured: Some(sink),
                            })
                        }
                    }
                    .await;
                    match &ran {
                        Ok(run) => slot.exited(&run.exit),
                        Err(err) => slot.failed(err),
                    }
                    auditor.record(&audit::Event {
                        host: Some(audit_host(&plan)),
                        key: conn.audited_key(),
                        action,
                        outcome: match &ran {
                            // The command ran; its own status is `exit_status`.
                            Ok(_) => Outcome::Ok,
                            Err(err) => Outcome::Failed(format!("{}: {err}", plan.label)),
                        },
                        exit_status: ran.as_ref().ok().map(|run| i32::from(run.exit.code())),
                        duration: started.elapsed(),
                    });
                    if ran.as_ref().is_ok_and(|run| run.exit.code() != 0) {
                        stop.host_failed();
                    }
                    ran
                }
            })
            .await;
            // Hosts whose command never ran (no login, a timeout, Ctrl-C) have no record yet.
            for outcome in &outcomes {
                if let Err(err) = &outcome.result {
                    if !matches!(err, fanout::HostError::Job(_)) {
                        auditor.record(&audit::Event {
                            host: Some(audit_host(&outcome.plan)),
                            key: KeyUsed::default(),
                            action: action.clone(),
                            outcome: Outcome::Failed(output::failure_line(
                                &outcome.plan.label,
                                err,
                            )),
                            exit_status: None,
                            duration: outcome.duration,
                        });
                    }
                }
            }
            if let Some(view) = view {
                view.finish();
                live::print_groups(&board);
            }
            let code = host_io.exit_status(fanout_exit_status(presentation, &outcomes));
            Ok(fail_fast_or_pdsh_status(
                code,
                options.fail_fast,
                pdsh,
                &outcomes,
            ))
        }
    }
}

/// The exit status of a command fan-out with `--fail-fast` or run as pdsh, from smssh's own
/// (`code`): Ctrl-C's stays; a `--fail-fast` run in which a host failed exits 1, as pdsh -k
/// does; as pdsh, `-S` gives the largest remote status (255 for a host that could not run
/// the command, as ssh exits then; 254 for one past its `-u` deadline, pdsh's own failure
/// status) and without `-S` the run exits 0, as pdsh does.
fn fail_fast_or_pdsh_status(
    code: u8,
    fail_fast: bool,
    pdsh: Option<crate::cli::args::PdshStyle>,
    outcomes: &[fanout::HostOutcome<HostRun, ExecError>],
) -> u8 {
    if cancel::requested() {
        return code;
    }
    let status = |outcome: &fanout::HostOutcome<HostRun, ExecError>| match &outcome.result {
        Ok(run) => run.exit.code(),
        Err(fanout::HostError::Timeout { .. }) => 254,
        Err(_) => SSH_FAILURE,
    };
    if fail_fast && outcomes.iter().any(|outcome| status(outcome) != 0) {
        return 1;
    }
    match pdsh {
        None => code,
        Some(style) if !style.remote_status => 0,
        Some(_) => outcomes.iter().map(status).max().unwrap_or(0),
    }
}

/// Whether a host-key question may come up during a fan-out (StrictHostKeyChecking=ask
/// without BatchMode, for a host known_hosts does not know): the live view owns the screen
/// and the keys, so such a run streams its lines and the question is asked as usual.
fn may_ask_host_key(plans: &[HostPlan], db: &HostKeyDb) -> bool {
    plans.iter().any(|plan| {
        plan.strict_host_key_checking == crate::config::ssh_config::StrictHostKeyChecking::Ask
            && !plan.batch_mode
            && db
                .known_hosts
                .known_algorithms(&plan.hostname, plan.port)
                .is_empty()
    })
}

/// Prints a command fan-out's results and returns its exit status: the largest remote
/// status, 255 if a host could not run the command, 130 after Ctrl-C.
fn fanout_exit_status(
    presentation: Presentation,
    outcomes: &[fanout::HostOutcome<HostRun, ExecError>],
) -> u8 {
    match presentation {
        Presentation::Json => output::print_json(outcomes),
        Presentation::Grouped => output::print_groups(outcomes),
        Presentation::Prefixed | Presentation::Live => {}
    }
    let mut code = 0u8;
    for outcome in outcomes {
        if let Ok(run) = &outcome.result {
            let host_code = run.exit.code();
            if host_code != 0 && presentation != Presentation::Json {
                diag::error(format!(
                    "{}: {}",
                    outcome.plan.label,
                    output::describe_exit(&run.exit)
                ));
            }
            code = code.max(host_code);
        }
    }
    let quiet_progress = Progress::new(false, outcomes.len());
    if output::summarize(outcomes, &quiet_progress) > 0 {
        code = SSH_FAILURE;
    }
    if cancel::requested() {
        code = INTERRUPTED;
    }
    code
}

/// A command fan-out's `--outdir`/`--errdir` files and `--stdin-all` window. The window asks
/// the board which hosts may still start (queued, logging in, or started and not yet joined).
fn fanout_host_io(
    dirs: crate::ssh::outdir::OutputDirs,
    stdin_all: bool,
    board: &Arc<Board>,
) -> Result<HostIo, AppError> {
    use crate::fanout::board::HostState;
    use crate::ssh::stdin_all::{SharedStdin, Stage};
    let files = match dirs.stdout.is_some() || dirs.stderr.is_some() {
        true => Some(Arc::new(crate::ssh::outdir::OutputFiles::create(dirs)?)),
        false => None,
    };
    let board = Arc::clone(board);
    let census = Box::new(move || {
        let stage = |state: &HostState| match state {
            HostState::Queued => Some(Stage::Queued),
            HostState::Connecting => Some(Stage::Connecting),
            HostState::Running => Some(Stage::Running),
            HostState::Exited { .. } | HostState::Failed(_) => None,
        };
        let rows = board.rows().into_iter();
        rows.filter_map(|row| Some((row.label, stage(&row.state)?)))
            .collect()
    });
    let stdin = stdin_all.then(|| SharedStdin::start(tokio::io::stdin(), census));
    Ok(HostIo { files, stdin })
}

/// `smssh --list-groups`: `@name hosts` per group on stdout; a group that cannot be expanded is
/// one error line, and the status is then 255.
fn list_groups() -> u8 {
    let listed = match targets::list_groups() {
        Ok(listed) => listed,
        Err(err) => return fail(SSH_FAILURE, TargetError::from(err).into()),
    };
    let mut code = 0;
    for (group, shown) in listed {
        match shown {
            Ok(hosts) => diag::out(format_args!("{group} {hosts}")),
            Err(err) => code = fail(SSH_FAILURE, err.into()),
        }
    }
    code
}

/// `smssh rotate`: a whole rotation, one step, or a reconciliation.
pub fn rotate(args: RotateArgs) -> u8 {
    start("smssh", args.ssh.verbose, args.ssh.quiet);
    let prepared = crate::rotation::plan::resolve(&args)
        .map_err(AppError::from)
        .and_then(|plan| Ok((plan, runtime()?)));
    let (plan, runtime) = match prepared {
        Ok(prepared) => prepared,
        Err(err) => return fail(ROTATE_USAGE, err),
    };
    let auditor = match open_auditor("smssh", args.audit.audit_log.as_deref()) {
        Ok(auditor) => auditor,
        Err(err) => return fail(ROTATE_FAILED, err),
    };
    let quiet = args.ssh.quiet;
    let code = runtime
        .block_on(run_rotation(plan, quiet, auditor))
        .unwrap_or_else(|err| {
            let code = if cancel::requested() {
                INTERRUPTED
            } else {
                ROTATE_FAILED
            };
            fail(code, err)
        });
    runtime.shutdown_background();
    code
}

async fn run_rotation(
    plan: RotationPlan,
    quiet: bool,
    auditor: Arc<Auditor>,
) -> Result<u8, AppError> {
    cancel::watch_ctrl_c();
    let aws = crate::aws::sdk_config(&plan.spec.aws).await;
    let targets = plan.targets(&aws).await?;
    diag::apply_log_level(targets.first().and_then(|t| t.plan.log_level));
    let bootstrap = plan.bootstrap()?;
    let report: rotation::Reporter = Arc::new(move |note, line: &str| match note {
        rotation::Note::Progress if !quiet => diag::out(line),
        rotation::Note::Progress => {}
        rotation::Note::HostFailed => diag::error(line),
    });
    let rotation =
        rotation::Rotation::new(&aws, plan.spec, plan.settings, targets, bootstrap, report)?
            .with_audit(auditor);
    let summary = match plan.mode {
        RotationMode::Rotate => rotation
            .rotate()
            .await?
            .last()
            .map(|o| format!("rotated to version {}", o.token))
            .unwrap_or_default(),
        RotationMode::Step(step, token) => {
            let outcome = rotation.run_step(step, &token, true).await?;
            format!("{}: {}", outcome.step, outcome.summary)
        }
        RotationMode::Reconcile => format!("reconcile: {}", rotation.reconcile().await?),
    };
    if !quiet {
        diag::out(summary);
    }
    Ok(0)
}

/// `smssh agent`: the secret's key served to OpenSSH's tools, around a command (its exit
/// status) or as a daemon (`-s`/`-c`, `-D`, `-k`); ssh's 255 when the agent itself fails.
pub fn agent(args: AgentArgs) -> u8 {
    use crate::agent::daemon::{self, Launched, Shell};
    start("smssh", args.verbose, false);
    let shell = Shell::choose(args.sh, args.csh);
    if args.kill {
        return match daemon::kill(shell) {
            Ok(lines) => {
                print!("{lines}");
                0
            }
            // As ssh-agent -k, whose refusals exit 1 (its fatal errors 255).
            Err(err) => fail(1, crate::agent::AgentRunError::from(err).into()),
        };
    }
    let prepared = crate::plan::resolve_secret(&args.secret, &crate::plan::Local::detect())
        .map_err(AppError::from)
        .and_then(|spec| {
            let duration =
                |text: &str| crate::rotation::parse_duration(text).map_err(AppError::AgentDuration);
            let refresh = duration(&args.refresh)?;
            let lifetime = args.lifetime.as_deref().map(duration).transpose()?;
            Ok((spec, refresh, lifetime))
        });
    let (spec, refresh, lifetime) = match prepared {
        Ok(prepared) => prepared,
        Err(err) => return fail(SSH_FAILURE, err),
    };
    // A fallback stage is what ssh tries once the first key is refused; an agent cannot see
    // refusals, so it lists that stage's key after the first one and ssh tries it in turn.
    let mut offer_stages = args.offer_stages;
    if let Some(stage) = &spec.fallback_stage {
        if !offer_stages.contains(stage) {
            offer_stages.push(stage.clone());
        }
    }
    let options = crate::agent::AgentOptions {
        spec,
        refresh,
        offer_stages,
        confirm: args.confirm,
        lifetime,
    };
    let background = args.command.is_empty() && !args.foreground;
    // The foreground half of the daemon form reads no secret: it waits for the background
    // agent and prints what it reports.
    if background && !daemon::is_background_process() {
        return match daemon::launch() {
            Ok(Launched::Ready { pid, socket }) => {
                print!("{}", shell.set_lines(&socket, pid));
                0
            }
            Ok(Launched::Ended(code)) => code,
            Err(err) => fail(SSH_FAILURE, crate::agent::AgentRunError::from(err).into()),
        };
    }
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(err) => return fail(SSH_FAILURE, err),
    };
    let bind = args.bind_address.clone();
    let socket = move || match bind {
        Some(path) => Ok(crate::agent::AgentSocket::at(path)),
        None => crate::agent::AgentSocket::fresh(),
    };
    let run = async {
        if let Some((program, command_args)) = args.command.split_first() {
            return crate::agent::run_command(options, socket, program, command_args).await;
        }
        let mut serving = crate::agent::start(options, socket).await?;
        if background {
            daemon::report_ready(serving.socket.path());
        } else {
            print!(
                "{}",
                shell.set_lines(serving.socket.path(), std::process::id())
            );
            // The caller may be reading the lines through a pipe before the agent ends.
            let _ = std::io::Write::flush(&mut std::io::stdout());
        }
        crate::agent::serve_until_stopped(&mut serving).await?;
        Ok(0)
    };
    let code = runtime
        .block_on(run)
        .unwrap_or_else(|err| fail(SSH_FAILURE, err.into()));
    runtime.shutdown_background();
    code
}

/// `smssh check`: every finding on stdout (lines, or one JSON document with `--json`); 0 when
/// every required check passed, else 1.
pub fn check(args: CheckArgs) -> u8 {
    diag::init("smssh", args.ssh.verbose, args.ssh.quiet);
    // The check reports the posture itself, so it keeps what hardening achieved.
    let posture = crate::key::hardening::lock_down();
    let prepared = crate::check::plan::resolve(&args)
        .map_err(AppError::from)
        .and_then(|plan| Ok((plan, runtime()?)));
    let (plan, runtime) = match prepared {
        Ok(prepared) => prepared,
        Err(err) => return fail(CHECK_FAILED, err),
    };
    let json = plan.json;
    let report = runtime.block_on(async {
        cancel::watch_ctrl_c();
        crate::check::run(plan, &posture).await
    });
    runtime.shutdown_background();
    if json {
        println!("{}", report.to_json());
    } else {
        for line in report.text_lines() {
            // Already escaped by the report; printed as is.
            println!("{line}");
        }
    }
    if cancel::requested() {
        INTERRUPTED
    } else if report.passed() {
        0
    } else {
        CHECK_FAILED
    }
}
