//! The failure matrix of `smssh rotate`: a step fails at every point where the outside world
//! can fail it, and each case ends the same way. The master is never locked out (the key
//! AWSCURRENT holds still logs in on every live worker, proved by a real login with
//! `smssh -w HOSTS -- true` rather than by reading authorized_keys), and a rerun completes the
//! same version instead of piling a new one on top.
//!
//! The failures:
//! - a worker whose SSH session freezes after login (its per-connection sshd is stopped) during
//!   setSecret and during testSecret;
//! - Secrets Manager refusing PutSecretValue (createSecret) and UpdateSecretVersionStage (the
//!   promotion in finishSecret, and the whole-rotation driver's removal of AWSPENDING), with
//!   moto enforcing IAM for real;
//! - Ctrl-C (SIGINT) during each of the four steps of a whole `smssh rotate`.
//!
//! A session is frozen deterministically, without racing a process poll: the worker's sshd
//! runs every command through a ForceCommand wrapper ([`Freezer`]) that, once armed, stops its
//! parent (the per-connection `sshd: root@notty`, so keepalives go unanswered too) and itself
//! at the chosen command, and leaves a marker file the test waits for.

mod common;

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const WORKERS: usize = 3;
const ALL: &str = "127.0.0.[2-4]";
/// The worker whose session freezes (or that is paused) in the cases that need one.
const ODD_ONE: usize = 1;
const ODD_ADDR: &str = "127.0.0.3";

/// An IAM user's access key id and secret access key.
type Creds = (String, String);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// `smssh` signing its AWS requests with `creds`, or with the harness's `testing` key.
fn smssh(cluster: &Cluster, creds: Option<&Creds>) -> Command {
    let mut cmd = cluster.command("smssh");
    if let Some((id, secret)) = creds {
        cmd.env("AWS_ACCESS_KEY_ID", id)
            .env("AWS_SECRET_ACCESS_KEY", secret);
    }
    cmd
}

fn rotate(cluster: &Cluster, creds: Option<&Creds>, args: &[&str]) -> Output {
    run(smssh(cluster, creds).arg("rotate").args(args))
}

fn rotate_step(
    cluster: &Cluster,
    creds: Option<&Creds>,
    step: &str,
    token: &str,
    extra: &[&str],
) -> Output {
    let args = [&["-w", ALL, "--step", step, "--token", token], extra].concat();
    rotate(cluster, creds, &args)
}

fn version_with(cluster: &Cluster, stage: &str) -> Option<String> {
    cluster.moto.version_with_stage(SECRET_ID, stage)
}

/// A real login with the key AWSCURRENT holds now on every host of `hosts`: smssh fetches
/// AWSCURRENT, and the workers let the master in through the managed block only (see
/// [`rotated_cluster`]), so a worker whose block lacks that key refuses it.
#[track_caller]
fn assert_current_key_logs_in(
    cluster: &Cluster,
    creds: Option<&Creds>,
    hosts: &str,
    moment: &str,
    extra: &[&str],
) {
    let out = run(smssh(cluster, creds)
        .args(["-o", "BatchMode=yes"])
        .args(extra)
        .args(["-w", hosts, "--", "true"]));
    assert!(
        out.status.success(),
        "the AWSCURRENT key ({:?}) does not log in on {hosts} {moment}\n{}",
        version_with(cluster, "AWSCURRENT"),
        describe(&out)
    );
}

/// A cluster after one rotation whose workers let the master in through the managed block
/// only (the rotation retired the harness's first key, installed outside the block), with that
/// rotation's version.
fn rotated_cluster() -> (Cluster, String) {
    let cluster = Cluster::new(WORKERS);
    assert_success(&rotate(&cluster, None, &["-w", ALL]));
    for worker in &cluster.workers {
        assert!(
            !worker.authorized_keys().contains(&cluster.public_key),
            "the first rotation left the first key on {}",
            worker.addr()
        );
    }
    let current = version_with(&cluster, "AWSCURRENT").expect("a rotated secret has a current");
    assert_current_key_logs_in(&cluster, None, ALL, "after the first rotation", &[]);
    (cluster, current)
}

/// Asserts the state a step left when it failed before promoting: AWSCURRENT is still `old`,
/// `pending` is AWSPENDING.
#[track_caller]
fn assert_nothing_promoted(cluster: &Cluster, old: &str, pending: &str) {
    assert_eq!(
        version_with(cluster, "AWSCURRENT").as_deref(),
        Some(old),
        "AWSCURRENT moved"
    );
    assert_eq!(
        version_with(cluster, "AWSPENDING").as_deref(),
        Some(pending),
        "the pending version is kept for the rerun"
    );
}

/// Asserts a completed rotation to `token`: it is AWSCURRENT, no AWSPENDING is left (when
/// `pending_removed`; the single-step driver leaves that to Secrets Manager), every worker's
/// block holds exactly it, and it logs in everywhere.
#[track_caller]
fn assert_completed(cluster: &Cluster, creds: Option<&Creds>, token: &str, pending_removed: bool) {
    assert_eq!(
        version_with(cluster, "AWSCURRENT").as_deref(),
        Some(token),
        "the rerun completed another version"
    );
    if pending_removed {
        assert_eq!(version_with(cluster, "AWSPENDING"), None, "AWSPENDING left");
    }
    for worker in &cluster.workers {
        assert_eq!(block_versions(worker), [token], "{}", worker.addr());
    }
    assert_current_key_logs_in(cluster, creds, ALL, "after the rerun", &[]);
}

/// Sends SIGINT, what Ctrl-C sends, to a running command.
fn interrupt(running: &Running) {
    let status = Command::new("kill")
        .args(["-INT", &running.id().to_string()])
        .status()
        .expect("cannot run kill");
    assert!(status.success(), "kill -INT failed");
}

/// Polls `ready` until it holds while `running` runs. Panics with what the command printed if
/// it exits first or `ready` does not hold within `timeout`.
fn wait_while_running(
    mut running: Running,
    what: &str,
    timeout: Duration,
    mut ready: impl FnMut() -> bool,
) -> Running {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return running;
        }
        if running.has_exited() || Instant::now() >= deadline {
            let out = running.kill();
            panic!(
                "{what} did not happen within {timeout:?} while the command ran\n{}",
                describe(&out)
            );
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Which command of a rotation the [`Freezer`] stops at.
#[derive(Clone, Copy)]
enum FreezeAt {
    /// `/bin/sh -s`: the authorized_keys script of setSecret and finishSecret.
    Script,
    /// `true`: testSecret's login with the pending key (and the liveness check's command).
    Test,
}

/// A ForceCommand wrapper on one worker's sshd that runs every command as sshd would, except
/// the one it was armed for: there it stops the per-connection sshd (its parent; a root login
/// has no separate privilege-separated child on OpenSSH 9.2, so that process carries the
/// connection and answers keepalives), writes a marker file, and stops itself. The arming file
/// is consumed by the one session that freezes, so every later login (the liveness checks, the
/// rerun) passes through.
struct Freezer {
    armed: PathBuf,
    frozen: PathBuf,
}

impl Freezer {
    fn install(worker: &mut Worker) -> Freezer {
        let dir = worker.dir().to_owned();
        let armed = dir.join("freeze.armed");
        let frozen = dir.join("freeze.frozen");
        let wrapper = dir.join("freeze.sh");
        // The arming file holds `KIND SKIP`: freeze at the (SKIP+1)th command of KIND. A
        // rotation runs one command at a time per worker, so the count needs no lock.
        let script = format!(
            r#"#!/bin/sh
armed='{armed}'
case $SSH_ORIGINAL_COMMAND in
    *'sh -s') kind=script ;;
    true) kind=test ;;
    *) kind=other ;;
esac
if [ -f "$armed" ] && read -r want skip <"$armed" && [ "$want" = "$kind" ]; then
    if [ "$skip" -gt 0 ]; then
        echo "$want $((skip - 1))" >"$armed"
    elif mv "$armed" "$armed.used" 2>/dev/null; then
        # Stopping anything but the session's sshd would not freeze the connection.
        if [ "$(cat /proc/$PPID/comm)" != sshd ]; then
            echo "freeze wrapper: parent $PPID is not sshd" >&2
            exit 1
        fi
        kill -STOP "$PPID"
        : >'{frozen}'
        kill -STOP $$
        exit 1
    fi
fi
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
"#,
            armed = armed.display(),
            frozen = frozen.display(),
        );
        fs::write(&wrapper, script).expect("cannot write the freeze wrapper");
        fs::set_permissions(&wrapper, fs::Permissions::from_mode(0o755))
            .expect("cannot make the freeze wrapper executable");
        // `exec` makes the wrapper the shell's replacement, so its parent is the session sshd.
        // The line goes first, so that no Match block another helper appended can swallow it.
        let config = fs::read_to_string(worker.config_path()).expect("sshd_config");
        let config = format!("ForceCommand exec {}\n{config}", wrapper.display());
        fs::write(worker.config_path(), config).expect("cannot rewrite sshd_config");
        worker.stop();
        worker.start();
        Freezer { armed, frozen }
    }

    /// Freezes the session of the (`skip`+1)th command of `kind` from now on.
    fn arm(&self, kind: FreezeAt, skip: u32) {
        let kind = match kind {
            FreezeAt::Script => "script",
            FreezeAt::Test => "test",
        };
        fs::write(&self.armed, format!("{kind} {skip}\n")).expect("cannot arm the freezer");
    }

    fn has_frozen(&self) -> bool {
        self.frozen.exists()
    }
}

// ---------------------------------------------------------------------------
// A session frozen after login
// ---------------------------------------------------------------------------

/// Runs `step` for `token` with `extra` options while `freezer` is armed, and checks that the
/// session froze and that the step failed naming that one host (within 40 s, or it never gave
/// up). Returns the output and how long the step took.
fn run_step_with_a_frozen_session(
    cluster: &Cluster,
    freezer: &Freezer,
    step: &str,
    token: &str,
    extra: &[&str],
) -> (Output, Duration) {
    let started = Instant::now();
    let out = run_with_timeout(
        smssh(cluster, None)
            .arg("rotate")
            .args(extra)
            .args(["-w", ALL, "--step", step, "--token", token]),
        Duration::from_secs(40),
    )
    .unwrap_or_else(|out| {
        panic!(
            "{step} never gave up on the frozen session\n{}",
            describe(&out)
        )
    });
    let took = started.elapsed();
    assert!(
        freezer.has_frozen(),
        "the session never froze\n{}",
        describe(&out)
    );
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, &format!("{step}: 1 of 3 hosts failed ({ODD_ADDR})"));
    (out, took)
}

#[test]
fn set_secret_with_a_session_frozen_after_login_fails_naming_the_host_within_the_keepalive_and_a_rerun_completes_the_same_version(
) {
    let (mut cluster, old) = rotated_cluster();
    let freezer = Freezer::install(&mut cluster.workers[ODD_ONE]);
    let token = "f0000000-0000-4000-8000-000000000001";
    assert_success(&rotate_step(&cluster, None, "createSecret", token, &[]));

    freezer.arm(FreezeAt::Script, 0);
    let keepalive = ["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=3"];
    let (out, took) =
        run_step_with_a_frozen_session(&cluster, &freezer, "setSecret", token, &keepalive);
    assert_stderr_contains(&out, "current key still logs in everywhere");
    // Three unanswered keepalives one second apart, plus the logins: far below the 30 s a
    // connect timeout would take, and nowhere near for ever.
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_nothing_promoted(&cluster, &old, token);
    for (i, worker) in cluster.workers.iter().enumerate() {
        let expected = if i == ODD_ONE {
            vec![old.clone()]
        } else {
            vec![old.clone(), token.to_owned()]
        };
        assert_eq!(block_versions(worker), expected, "{}", worker.addr());
    }
    // The frozen session holds no lock on the worker: a new login works there even before
    // it is resumed.
    assert_current_key_logs_in(&cluster, None, ALL, "with the session still frozen", &[]);

    cluster.workers[ODD_ONE].resume();
    assert_success(&rotate_step(&cluster, None, "setSecret", token, &[]));
    for worker in &cluster.workers {
        assert_eq!(block_versions(worker), [old.clone(), token.to_owned()]);
    }
    assert_current_key_logs_in(&cluster, None, ALL, "after the rerun of setSecret", &[]);
    for step in ["testSecret", "finishSecret"] {
        assert_success(&rotate_step(&cluster, None, step, token, &[]));
    }
    assert_completed(&cluster, None, token, false);
}

#[test]
fn test_secret_with_a_session_frozen_after_login_fails_within_the_host_timeout_promotes_nothing_and_a_rerun_completes_the_same_version(
) {
    let (mut cluster, old) = rotated_cluster();
    let freezer = Freezer::install(&mut cluster.workers[ODD_ONE]);
    let token = "f0000000-0000-4000-8000-000000000002";
    for step in ["createSecret", "setSecret"] {
        assert_success(&rotate_step(&cluster, None, step, token, &[]));
    }

    // Here the per-host deadline, not the keepalive, ends the wait.
    freezer.arm(FreezeAt::Test, 0);
    let (out, took) = run_step_with_a_frozen_session(
        &cluster,
        &freezer,
        "testSecret",
        token,
        &["--timeout", "5"],
    );
    assert_stderr_contains(&out, "--timeout");
    assert_stderr_contains(&out, "nothing was promoted");
    assert!(took < Duration::from_secs(20), "took {took:?}");
    assert_nothing_promoted(&cluster, &old, token);
    for worker in &cluster.workers {
        assert_eq!(block_versions(worker), [old.clone(), token.to_owned()]);
    }
    assert_current_key_logs_in(&cluster, None, ALL, "with the session still frozen", &[]);

    cluster.workers[ODD_ONE].resume();
    for step in ["testSecret", "finishSecret"] {
        assert_success(&rotate_step(&cluster, None, step, token, &[]));
    }
    assert_completed(&cluster, None, token, false);
}

// ---------------------------------------------------------------------------
// Secrets Manager refusing a write (moto enforcing IAM)
// ---------------------------------------------------------------------------

const ALLOWED: &str = "rotator";
const NO_PUT: &str = "rotator-denied-put-secret-value";
const NO_STAGE: &str = "rotator-denied-update-secret-version-stage";

/// A rotated cluster whose moto enforces IAM, with three users: one allowed every Secrets
/// Manager action, and two allowed them all but one, denied explicitly. The harness's own calls
/// are signed as the allowed user from then on. Returns the users' keys.
fn rotated_cluster_enforcing_iam() -> (Cluster, String, HashMap<String, Creds>) {
    let (mut cluster, current) = rotated_cluster();
    // secretsmanager:* also covers what a rotation may call besides the four operations
    // (DescribeSecret, ListSecretVersionIds, TagResource). Moto evaluates Secrets Manager
    // actions against resource "*". With -w no EC2 or SSM call is made.
    let allow_all =
        serde_json::json!({"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"});
    let deny = |action: &str| serde_json::json!({"Effect": "Deny", "Action": format!("secretsmanager:{action}"), "Resource": "*"});
    let users = serde_json::json!({
        ALLOWED: [allow_all],
        NO_PUT: [allow_all, deny("PutSecretValue")],
        NO_STAGE: [allow_all, deny("UpdateSecretVersionStage")],
    });
    let keys = cluster.moto.create_iam_users(&users);
    cluster.moto.enforce_iam();
    let (id, secret) = keys[ALLOWED].clone();
    cluster.moto.sign_harness_calls_as(&id, &secret);
    (cluster, current, keys)
}

/// Asserts the one line of a refused Secrets Manager call: it names the secret, the operation
/// and AccessDeniedException, and says which permission to grant; exit status 1.
#[track_caller]
fn assert_refused(out: &Output, operation: &str) {
    assert_exit_code(out, 1);
    let err = stderr(out);
    assert_eq!(
        err.lines().count(),
        1,
        "exactly one stderr line\n{}",
        describe(out)
    );
    assert!(
        err.starts_with(&format!(
            "smssh: secret {SECRET_ID}: {operation}: AccessDeniedException:"
        )),
        "the line names the secret, the operation and the denial\n{}",
        describe(out)
    );
    assert_stderr_contains(out, &format!("allow secretsmanager:{operation}"));
}

#[test]
fn a_refused_put_secret_value_stores_no_version_and_an_allowed_rerun_with_the_same_token_completes()
{
    let (cluster, old, keys) = rotated_cluster_enforcing_iam();
    let (allowed, no_put) = (&keys[ALLOWED], &keys[NO_PUT]);
    let before = cluster.moto.stages(SECRET_ID);
    assert_current_key_logs_in(&cluster, Some(allowed), ALL, "under IAM enforcement", &[]);

    let token = "d0000000-0000-4000-8000-000000000001";
    let out = rotate_step(&cluster, Some(no_put), "createSecret", token, &[]);
    assert_refused(&out, "PutSecretValue");
    assert_eq!(
        cluster.moto.stages(SECRET_ID),
        before,
        "no version was stored"
    );
    assert_current_key_logs_in(&cluster, Some(allowed), ALL, "after the refused step", &[]);

    // A whole rotation is refused at the same call, before any worker is touched.
    let out = rotate(&cluster, Some(no_put), &["-w", ALL]);
    assert_refused(&out, "PutSecretValue");
    assert_eq!(
        cluster.moto.stages(SECRET_ID),
        before,
        "no version was stored"
    );
    for worker in &cluster.workers {
        assert_eq!(block_versions(worker), [old.as_str()]);
    }
    assert_current_key_logs_in(
        &cluster,
        Some(allowed),
        ALL,
        "after the refused rotation",
        &[],
    );

    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let out = rotate_step(&cluster, Some(allowed), step, token, &[]);
        assert_success(&out);
    }
    assert_completed(&cluster, Some(allowed), token, false);
}

#[test]
fn a_refused_promotion_in_finish_secret_keeps_the_current_key_and_an_allowed_rerun_completes_the_same_version(
) {
    let (cluster, old, keys) = rotated_cluster_enforcing_iam();
    let (allowed, no_stage) = (&keys[ALLOWED], &keys[NO_STAGE]);

    // One step at a time: createSecret, setSecret and testSecret pass, finishSecret is refused.
    let token = "d0000000-0000-4000-8000-000000000002";
    for step in ["createSecret", "setSecret", "testSecret"] {
        assert_success(&rotate_step(&cluster, Some(allowed), step, token, &[]));
    }
    let out = rotate_step(&cluster, Some(no_stage), "finishSecret", token, &[]);
    assert_refused(&out, "UpdateSecretVersionStage");
    assert_nothing_promoted(&cluster, &old, token);
    for worker in &cluster.workers {
        assert_eq!(block_versions(worker), [old.clone(), token.to_owned()]);
    }
    assert_current_key_logs_in(
        &cluster,
        Some(allowed),
        ALL,
        "after the refused finishSecret",
        &[],
    );
    assert_success(&rotate_step(
        &cluster,
        Some(allowed),
        "finishSecret",
        token,
        &[],
    ));
    assert_completed(&cluster, Some(allowed), token, false);

    // A whole rotation by the same user: createSecret, setSecret and testSecret pass, the
    // promotion is refused, and the allowed rerun resumes that version. The single-step run
    // above left AWSPENDING on the current version (Secrets Manager removes it after a
    // Lambda rotation), which the next run resumes and finishes first; an allowed run does that
    // here so that the denied run starts a new version.
    assert_success(&rotate(&cluster, Some(allowed), &["-w", ALL]));
    assert_eq!(version_with(&cluster, "AWSPENDING"), None);
    let current = version_with(&cluster, "AWSCURRENT").expect("current");
    let out = rotate(&cluster, Some(no_stage), &["-w", ALL]);
    assert_refused(&out, "UpdateSecretVersionStage");
    assert_eq!(
        version_with(&cluster, "AWSCURRENT").as_deref(),
        Some(current.as_str()),
        "AWSCURRENT moved"
    );
    let pending = version_with(&cluster, "AWSPENDING").expect("the new version stays pending");
    assert_ne!(pending, current);
    for worker in &cluster.workers {
        assert_eq!(block_versions(worker), [current.clone(), pending.clone()]);
    }
    assert_current_key_logs_in(
        &cluster,
        Some(allowed),
        ALL,
        "after the refused rotation",
        &[],
    );
    let out = rotate(&cluster, Some(allowed), &["-w", ALL]);
    assert_success(&out);
    assert!(
        stdout(&out).contains(&format!("resuming the rotation to version {pending}")),
        "{}",
        describe(&out)
    );
    assert_completed(&cluster, Some(allowed), &pending, true);
}

/// The whole-rotation driver's last call removes AWSPENDING (UpdateSecretVersionStage with only
/// RemoveFromVersionId). Moto evaluates no policy conditions, so no user can be denied that
/// call alone while allowed the promotion; instead the refused run resumes a rotation whose
/// version is already AWSCURRENT, where that removal is the only UpdateSecretVersionStage call.
#[test]
fn a_refused_removal_of_awspending_after_the_promotion_leaves_the_new_key_working_and_a_rerun_finishes_it(
) {
    let (cluster, _, keys) = rotated_cluster_enforcing_iam();
    let (allowed, no_stage) = (&keys[ALLOWED], &keys[NO_STAGE]);
    let token = "d0000000-0000-4000-8000-000000000003";
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        assert_success(&rotate_step(&cluster, Some(allowed), step, token, &[]));
    }
    assert_eq!(version_with(&cluster, "AWSCURRENT").as_deref(), Some(token));
    assert_eq!(version_with(&cluster, "AWSPENDING").as_deref(), Some(token));

    let out = rotate(&cluster, Some(no_stage), &["-w", ALL]);
    assert_refused(&out, "UpdateSecretVersionStage");
    assert!(
        stdout(&out).contains(&format!("resuming the rotation to version {token}")),
        "{}",
        describe(&out)
    );
    assert_eq!(version_with(&cluster, "AWSCURRENT").as_deref(), Some(token));
    assert_eq!(version_with(&cluster, "AWSPENDING").as_deref(), Some(token));
    for worker in &cluster.workers {
        assert_eq!(block_versions(worker), [token]);
    }
    assert_current_key_logs_in(
        &cluster,
        Some(allowed),
        ALL,
        "after the refused removal",
        &[],
    );

    let out = rotate(&cluster, Some(allowed), &["-w", ALL]);
    assert_success(&out);
    assert!(
        stdout(&out).contains(&format!("resuming the rotation to version {token}")),
        "{}",
        describe(&out)
    );
    assert_completed(&cluster, Some(allowed), token, true);
}

// ---------------------------------------------------------------------------
// Ctrl-C during each step of a whole rotation
// ---------------------------------------------------------------------------

/// How long an interrupted `smssh rotate` may take to exit: it must stop at once, not wait
/// for the frozen host.
const INTERRUPT_GRACE: Duration = Duration::from_secs(10);

/// Interrupts `running` and returns its output once it has exited, asserting it says so.
fn interrupt_and_wait(running: Running) -> Output {
    interrupt(&running);
    let out = running
        .wait_timeout(INTERRUPT_GRACE)
        .unwrap_or_else(|out| panic!("smssh rotate ignored Ctrl-C\n{}", describe(&out)));
    assert_exit_code(&out, 130);
    assert_stderr_contains(&out, "interrupted");
    out
}

/// Whether some TCP connection to `addr:port` is established on this machine, as the kernel
/// lists it in /proc/net/tcp (addresses in hex, the IPv4 one little-endian). A paused sshd's
/// kernel still completes the handshake, so this tells that a client has reached it.
fn connected_to(addr: &str, port: u16) -> bool {
    let octets: Vec<u8> = addr
        .split('.')
        .map(|o| o.parse().expect("an IPv4 address"))
        .collect();
    let remote = format!(
        "{:02X}{:02X}{:02X}{:02X}:{port:04X}",
        octets[3], octets[2], octets[1], octets[0]
    );
    fs::read_to_string("/proc/net/tcp")
        .expect("cannot read /proc/net/tcp")
        .lines()
        .skip(1)
        .any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.len() > 3 && fields[2] == remote && fields[3] == "01"
        })
}

/// createSecret waits only on the host-key probes of --learn-host-keys, so a paused worker
/// whose key is not known yet holds it there. Nothing is stored before the probes end.
#[test]
fn ctrl_c_during_create_secret_stores_nothing_and_a_rerun_rotates_with_the_current_key_working_throughout(
) {
    let (cluster, old) = rotated_cluster();
    let full_known_hosts = cluster.scratch_file(
        "known_hosts.full",
        &fs::read(cluster.known_hosts_path()).expect("known_hosts"),
    );
    let odd_line = cluster.workers[ODD_ONE].host_key_line();
    let rest: String = fs::read_to_string(cluster.known_hosts_path())
        .expect("known_hosts")
        .lines()
        .filter(|line| *line != odd_line)
        .map(|line| format!("{line}\n"))
        .collect();
    fs::write(cluster.known_hosts_path(), rest).expect("cannot rewrite known_hosts");
    let before = cluster.moto.stages(SECRET_ID);

    let odd = &cluster.workers[ODD_ONE];
    odd.pause();
    let running = spawn(smssh(&cluster, None).args([
        "rotate",
        "-o",
        "BatchMode=yes",
        "-w",
        ALL,
        "--learn-host-keys",
    ]));
    // The first connection to the paused worker is createSecret's probe of its host key.
    let running = wait_while_running(
        running,
        "a connection to the paused worker",
        Duration::from_secs(30),
        || connected_to(odd.addr(), odd.port()),
    );
    let out = interrupt_and_wait(running);
    odd.resume();
    assert_stderr_contains(&out, "createSecret");
    assert_eq!(
        cluster.moto.stages(SECRET_ID),
        before,
        "no version was stored"
    );
    for worker in &cluster.workers {
        assert_eq!(block_versions(worker), [old.as_str()]);
    }
    let full = format!("UserKnownHostsFile={}", full_known_hosts.display());
    assert_current_key_logs_in(&cluster, None, ALL, "after Ctrl-C", &["-o", &full]);

    // Nothing was pending, so the rerun starts a version of its own and learns the host key
    // the interrupted run never stored; the login check then trusts it from the secret.
    let out = rotate(
        &cluster,
        None,
        &["-o", "BatchMode=yes", "-w", ALL, "--learn-host-keys"],
    );
    assert_success(&out);
    assert!(!stdout(&out).contains("resuming"), "{}", describe(&out));
    let current = version_with(&cluster, "AWSCURRENT").expect("current");
    assert_ne!(current, old);
    assert_completed(&cluster, None, &current, true);
}

/// Runs a whole `smssh rotate` on a rotated cluster whose odd worker's session freezes at the
/// (`skip`+1)th command of `kind`, during `step`, and interrupts it there. `interrupted` checks
/// the state the interruption left (given the cluster, the version AWSCURRENT held before and
/// the pending one). Then the current key must log in everywhere once the worker is resumed,
/// and a rerun must resume and complete the pending version.
fn ctrl_c_at(
    kind: FreezeAt,
    skip: u32,
    step: &str,
    interrupted: impl FnOnce(&Cluster, &str, &str),
) {
    let (mut cluster, old) = rotated_cluster();
    let freezer = Freezer::install(&mut cluster.workers[ODD_ONE]);
    freezer.arm(kind, skip);
    let running = spawn(smssh(&cluster, None).args(["rotate", "-w", ALL]));
    let running = wait_while_running(
        running,
        &format!("the freeze of {ODD_ADDR}'s session in {step}"),
        Duration::from_secs(30),
        || freezer.has_frozen(),
    );
    let out = interrupt_and_wait(running);
    assert_stderr_contains(&out, &format!("{step}: "));
    assert_stderr_contains(&out, ODD_ADDR);
    let pending = version_with(&cluster, "AWSPENDING")
        .unwrap_or_else(|| panic!("no AWSPENDING after Ctrl-C in {step}\n{}", describe(&out)));
    assert_ne!(pending, old);
    interrupted(&cluster, &old, &pending);

    cluster.workers[ODD_ONE].resume();
    assert_current_key_logs_in(&cluster, None, ALL, &format!("after Ctrl-C in {step}"), &[]);

    let out = rotate(&cluster, None, &["-w", ALL]);
    assert_success(&out);
    assert!(
        stdout(&out).contains(&format!("resuming the rotation to version {pending}")),
        "{}",
        describe(&out)
    );
    assert_completed(&cluster, None, &pending, true);
    // One rotation, from the version the interrupted run found: nothing piled up.
    assert_eq!(
        version_with(&cluster, "AWSPREVIOUS").as_deref(),
        Some(old.as_str())
    );
}

#[test]
fn ctrl_c_during_set_secret_exits_130_promotes_nothing_and_a_rerun_completes_the_same_version() {
    ctrl_c_at(FreezeAt::Script, 0, "setSecret", |cluster, old, pending| {
        assert_nothing_promoted(cluster, old, pending);
        // The frozen worker never ran the script; the others may or may not have.
        assert_eq!(block_versions(&cluster.workers[ODD_ONE]), [old]);
    });
}

#[test]
fn ctrl_c_during_test_secret_exits_130_promotes_nothing_and_a_rerun_completes_the_same_version() {
    ctrl_c_at(FreezeAt::Test, 0, "testSecret", |cluster, old, pending| {
        assert_nothing_promoted(cluster, old, pending);
        for worker in &cluster.workers {
            assert_eq!(block_versions(worker), [old, pending]);
        }
    });
}

/// The local driver promotes first and then reconciles over testSecret's open sessions, so
/// the session frozen here is the second authorized_keys script on that worker, after
/// setSecret's, and the frozen worker still holds both keys.
#[test]
fn ctrl_c_during_finish_secret_exits_130_and_a_rerun_completes_the_same_version() {
    ctrl_c_at(
        FreezeAt::Script,
        1,
        "finishSecret",
        |cluster, old, pending| {
            let current = version_with(cluster, "AWSCURRENT");
            assert!(
                current.as_deref() == Some(old) || current.as_deref() == Some(pending),
                "AWSCURRENT is {current:?}, neither {old} nor {pending}"
            );
            assert_eq!(block_versions(&cluster.workers[ODD_ONE]), [old, pending]);
        },
    );
}
