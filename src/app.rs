//! The two programs' top level: set up the process, resolve the plan, run, map every outcome
//! to one stderr line and the exit status scp/ssh would use.
//!
//! Owns: the order of start-up (hardening before any secret, then plan, then key, then
//! known_hosts, then connect), the tokio runtime, and exit codes. Invariant: every failure
//! reaches the user as exactly one `program: what: why: what to do` line. Must not know:
//! protocol details; it calls the modules that do.

use std::sync::Arc;

use crate::args::{ScpArgs, SshArgs};
use crate::copy::{self, CopyRequest};
use crate::diag;
use crate::exec::{self, ExecRequest};
use crate::keysource::{KeySource, LoadedKey};
use crate::known_hosts::KnownHosts;
use crate::operand::{self, Operand};
use crate::plan::{self, HostPlan, Local, SshOptions};
use crate::session::{self, HostKeyDb};
use crate::transfer::Meter;

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
fn host_key_db(plans: &[&HostPlan], key: &LoadedKey) -> Result<HostKeyDb, String> {
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
    Ok(HostKeyDb {
        known_hosts: Arc::new(known),
    })
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
    let Some(target) = operands.pop() else {
        return fail("no target given".to_owned());
    };
    let request = CopyRequest {
        sources: operands,
        target,
        recursive: args.recursive,
        preserve: args.preserve,
        port: args.port,
    };
    if let Err(err) = copy::check_shape(&request) {
        return fail(err.to_string());
    }
    let local = Local::detect();
    let mut extra = Vec::new();
    if args.batch {
        extra.push("BatchMode=yes");
    }
    if args.compression {
        extra.push("Compression=yes");
    }
    let ssh = match SshOptions::load(&args.ssh, &extra, &local) {
        Ok(ssh) => ssh,
        Err(err) => return fail(err.to_string()),
    };
    let spec = match plan::resolve_secret(&args.secret, &local) {
        Ok(spec) => spec,
        Err(err) => return fail(err.to_string()),
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(err) => return fail(format!("cannot start: {err}")),
    };
    runtime.block_on(async move {
        crate::cancel::watch_ctrl_c();
        let keys = KeySource::new(spec);
        let key = match keys.initial().await {
            Ok(key) => key,
            Err(err) => return fail(err.to_string()),
        };
        diag::debug(format_args!("key {} from {}", key.key, keys.spec().id));
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
        let db = match host_key_db(&plans.iter().collect::<Vec<_>>(), &key) {
            Ok(db) => db,
            Err(err) => return fail(err),
        };
        let bar = (!args.ssh.quiet && crate::tty::stderr_is_terminal()).then(progress_bar);
        let meter = Meter::new(bar, args.limit_kbits);
        copy::run(&request, &ssh, &keys, &db, &meter).await
    })
}

fn progress_bar() -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(0);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bytes}/{total_bytes} {wide_bar} {binary_bytes_per_sec} ETA {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

pub fn smssh(args: SshArgs) -> u8 {
    start("smssh", args.ssh.verbose, args.ssh.quiet);
    let fail = |message: String| {
        diag::error(message);
        SSH_FAILURE
    };
    let destination = match operand::parse_destination(&args.destination) {
        Ok(destination) => destination,
        Err(err) => return fail(format!("{}: {err}", args.destination)),
    };
    let local = Local::detect();
    let ssh = match SshOptions::load(&args.ssh, &[], &local) {
        Ok(ssh) => ssh,
        Err(err) => return fail(err.to_string()),
    };
    let plan = ssh.plan(
        &destination.host,
        destination.user.as_deref().or(args.login.as_deref()),
        destination.port.or(args.port),
    );
    let spec = match plan::resolve_secret(&args.secret, &local) {
        Ok(spec) => spec,
        Err(err) => return fail(err.to_string()),
    };
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
    };
    let runtime = match runtime() {
        Ok(runtime) => runtime,
        Err(err) => return fail(format!("cannot start: {err}")),
    };
    let code = runtime.block_on(async move {
        let keys = KeySource::new(spec);
        let key = match keys.initial().await {
            Ok(key) => key,
            Err(err) => return fail(err.to_string()),
        };
        diag::debug(format_args!("key {} from {}", key.key, keys.spec().id));
        let db = match host_key_db(&[&plan], &key) {
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
        match exec::run(&conn, &request).await {
            Ok(exit) => exit.code(),
            Err(err) => fail(err.to_string()),
        }
    });
    // The stdin pump may sit in a blocking read of the terminal; the runtime must not wait
    // for it, or smssh would hang after the remote command ended until Enter is pressed.
    runtime.shutdown_background();
    code
}
