//! The rotation function's binary under cargo-lambda's local runtime: cargo-lambda serves the
//! Lambda runtime API and the invoke endpoint, the function (built by `cargo build
//! --workspace`, as scripts/test.sh does first) polls it, and each invoke is one rotation step
//! against moto and real sshd workers.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;
use smssh::rotation::block;

/// cargo-lambda from the test venv (scripts/test-deps.sh installs it next to moto).
fn cargo_lambda() -> PathBuf {
    let moto = PathBuf::from(
        std::env::var("SMSSH_TEST_MOTO")
            .unwrap_or_else(|_| format!("{}/.venv/bin/moto_server", env!("CARGO_MANIFEST_DIR"))),
    );
    let path = moto.with_file_name("cargo-lambda");
    assert!(
        path.is_file(),
        "{} not found: run ./scripts/test-deps.sh (it installs cargo-lambda from PyPI)",
        path.display()
    );
    path
}

/// The function binary, built into the same directory as this package's binaries.
fn function_binary() -> PathBuf {
    let smssh = Path::new(env!("CARGO_BIN_EXE_smssh"));
    let path = smssh.with_file_name("smssh-rotation-lambda");
    assert!(
        path.is_file(),
        "{} not found: build the workspace first (cargo build --workspace; scripts/test.sh does)",
        path.display()
    );
    path
}

/// Kills a child process when dropped, so that a failing assertion leaves nothing behind.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn invoke(lambda: &Path, port: u16, payload: &str) -> Output {
    run(Command::new(lambda)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "lambda",
            "invoke",
            "--invoke-address",
            "127.0.0.1",
            "--invoke-port",
        ])
        .arg(port.to_string())
        .args(["--data-ascii", payload]))
}

fn event(step: &str, token: &str) -> String {
    serde_json::json!({"SecretId": SECRET_ID, "ClientRequestToken": token, "Step": step})
        .to_string()
}

/// Turns rotation on for the secret without rotating (RotateSecret with
/// RotateImmediately=false), as configuring the function does: the function refuses to run a
/// step for a secret whose rotation is off.
fn enable_rotation(cluster: &Cluster) {
    cluster
        .moto
        .block_on(
            cluster
                .moto
                .client()
                .rotate_secret()
                .secret_id(SECRET_ID)
                .rotation_rules(
                    aws_sdk_secretsmanager::types::RotationRulesType::builder()
                        .automatically_after_days(30)
                        .build(),
                )
                .rotate_immediately(false)
                .send(),
        )
        .expect("RotateSecret enabling rotation");
}

/// The function's settings for the SSH channel to `hosts` as root, the way the tests that do
/// not need EC2 run it.
fn ssh_channel(cluster: &Cluster, hosts: &str) -> Vec<(&'static str, String)> {
    vec![
        ("USERNAME", "root".to_owned()),
        ("SMSSH_DEPLOY", "ssh".to_owned()),
        ("SMSSH_TARGETS", hosts.to_owned()),
        ("SMSSH_PORT", cluster.port.to_string()),
    ]
}

/// cargo-lambda's local runtime and the function's binary attached to it; both stop when this
/// is dropped.
struct FunctionRuntime {
    lambda: PathBuf,
    port: u16,
    log: PathBuf,
    _runtime: Guard,
    _function: Guard,
}

impl FunctionRuntime {
    /// Starts the runtime and the function with only what every Lambda's environment holds
    /// (the runtime API, the function's name, AWS credentials and region, here pointed at
    /// moto) plus `settings`, the function's own variables (USERNAME, TAGNAME, SMSSH_*...). A
    /// variable left out of `settings` is unset, so the function falls back to its default.
    fn start(cluster: &Cluster, settings: &[(&str, String)]) -> FunctionRuntime {
        let lambda = cargo_lambda();
        let port = free_port(&["127.0.0.1"]);
        let runtime = Guard(
            Command::new(&lambda)
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .args([
                    "lambda",
                    "watch",
                    "--only-lambda-apis",
                    "--invoke-address",
                    "127.0.0.1",
                    "--invoke-port",
                ])
                .arg(port.to_string())
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("cargo lambda watch starts"),
        );
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "cargo lambda watch did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = cluster.scratch.path().join("function.log");
        let log_file = std::fs::File::create(&log).expect("function log");
        let mut command = Command::new(function_binary());
        command
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env(
                "AWS_LAMBDA_RUNTIME_API",
                format!("http://127.0.0.1:{port}/.rt"),
            )
            // cargo-lambda's runtime without --function serves the function named `_`, which
            // is also what `cargo lambda invoke` calls by default.
            .env("AWS_LAMBDA_FUNCTION_NAME", "_")
            .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
            .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
            .env("AWS_ENDPOINT_URL", cluster.moto.endpoint())
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1");
        for (name, value) in settings {
            command.env(name, value);
        }
        let function = Guard(
            command
                .stdin(Stdio::null())
                .stdout(log_file.try_clone().expect("log"))
                .stderr(log_file)
                .spawn()
                .expect("the function starts"),
        );
        FunctionRuntime {
            lambda,
            port,
            log,
            _runtime: runtime,
            _function: function,
        }
    }

    fn invoke(&self, payload: &str) -> Output {
        invoke(&self.lambda, self.port, payload)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

#[test]
fn the_function_rotates_a_pending_version_step_by_step_under_cargo_lambdas_runtime() {
    let cluster = Cluster::new(2);
    let hosts = "127.0.0.[2-3]";
    // Rotation must be enabled on the secret, as the function checks like AWS's templates.
    enable_rotation(&cluster);
    // After RotateSecret, because moto's RotateSecret without a function copies the first
    // version's value into the new current one.

    // The function has no disk: the workers' host keys travel in the secret.
    let known: String = cluster
        .workers
        .iter()
        .map(|w| w.host_key_line() + "\n")
        .collect();
    cluster.moto.put_secret_value(
        SECRET_ID,
        &serde_json::json!({
            "PrivateKey": cluster.private_key,
            "PublicKey": cluster.public_key,
            "KnownHosts": known,
        })
        .to_string(),
    );
    // createSecret runs locally (moto cannot start a rotation without a Lambda of its own);
    // the function does the three steps that touch the workers.
    let token = "0badc0de-0000-4000-8000-00000000cafe";
    assert_success(&run(cluster.command("smssh").args([
        "rotate",
        "-w",
        hosts,
        "--step",
        "createSecret",
        "--token",
        token,
    ])));

    let function = FunctionRuntime::start(&cluster, &ssh_channel(&cluster, hosts));

    // A token Secrets Manager never listed is refused, and the function keeps serving.
    let out = function.invoke(&event("setSecret", "not-a-version"));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        text.contains("is not a version of this secret"),
        "{}\nfunction log:\n{}",
        describe(&out),
        function.log()
    );

    for step in ["setSecret", "testSecret", "finishSecret"] {
        let out = function.invoke(&event(step, token));
        assert!(
            out.status.success() && stdout(&out).contains(step),
            "{step}: {}\nfunction log:\n{}",
            describe(&out),
            function.log()
        );
    }
    assert_eq!(
        cluster
            .moto
            .version_with_stage(SECRET_ID, "AWSCURRENT")
            .as_deref(),
        Some(token)
    );
    for worker in &cluster.workers {
        let keys = block::parse_block(&worker.authorized_keys(), SECRET_ID).expect("block");
        let versions: Vec<&str> = keys.iter().map(|k| k.version_id.as_str()).collect();
        assert_eq!(versions, [token]);
    }
    let file = cluster.scratch_file("after-lambda.txt", b"rotated by the function\n");
    assert_success(&run(cluster
        .command("smscp")
        .args(["-q", "-o", "BatchMode=yes", "-w", hosts])
        .arg(&file)
        .arg("after-lambda.txt")));
    // The function's log holds the audit records, one JSON line each: every step, and each
    // worker's edit in setSecret and finishSecret; no key text.
    let log = function.log();
    let records: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    let steps: Vec<&str> = records
        .iter()
        .filter(|r| r["action"]["type"] == "rotation" && r["action"]["version_id"] == token)
        .map(|r| r["action"]["step"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(steps, ["setSecret", "testSecret", "finishSecret"], "{log}");
    let edits = records
        .iter()
        .filter(|r| r["action"]["type"] == "authorized_keys" && r["outcome"] == "ok")
        .count();
    assert_eq!(edits, 4, "{log}");
    assert!(records
        .iter()
        .all(|r| r["program"] == "smssh-rotation-lambda"));
    assert!(!log.contains("PRIVATE KEY"), "{log}");
    let secret: serde_json::Value =
        serde_json::from_str(&cluster.moto.get_secret_string(SECRET_ID)).expect("secret JSON");
    let new_key = secret["PrivateKey"].as_str().unwrap_or_default();
    for line in cluster.private_key.lines().chain(new_key.lines()) {
        assert!(line.starts_with("-----") || !log.contains(line), "{log}");
    }
}

#[test]
fn a_bad_setting_stops_the_function_with_one_line_naming_the_variable() {
    let out = run(Command::new(function_binary())
        .env_clear()
        .env("AWS_LAMBDA_RUNTIME_API", "http://127.0.0.1:1/.rt")
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("SMSSH_DEPLOY", "scp")
        .stdin(Stdio::null()));
    assert_exit_code(&out, 1);
    assert_eq!(
        stderr(&out).trim(),
        "smssh-rotation-lambda: environment variable SMSSH_DEPLOY=\"scp\": unknown deploy channel \"scp\": use ssh or ssm"
    );
}

/// Item 1 of the hostile-input issue, on the function's side: a current version holding a
/// canary key in a malformed shape makes createSecret fail, and neither the function's
/// response nor its log (CloudWatch, in AWS) holds any of the key's text.
#[test]
fn the_function_never_logs_or_returns_key_text_from_a_malformed_secret() {
    let cluster = Cluster::new(1);
    let hosts = "127.0.0.2";
    let scratch = tempfile::tempdir().expect("scratch");
    let key = scratch.path().join("canary");
    let made = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .output()
        .expect("ssh-keygen runs");
    assert!(made.status.success(), "{}", describe(&made));
    let pem = std::fs::read_to_string(&key).expect("canary key");
    let body: Vec<&str> = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let quoted = serde_json::to_string(&pem).expect("JSON string");
    let shapes = [
        quoted.clone(),
        format!("[{quoted}]"),
        format!("{{\"PrivateKey\": {{\"k\": {quoted}}}}}"),
        format!("{{\"PrivateKey\": {quoted}"),
        serde_json::json!({ "PrivateKey": &pem[..pem.len() / 2] }).to_string(),
    ];
    enable_rotation(&cluster);
    let function = FunctionRuntime::start(&cluster, &ssh_channel(&cluster, hosts));
    for (n, shape) in shapes.iter().enumerate() {
        cluster.moto.put_secret_value(SECRET_ID, shape);
        let token = format!("0badc0de-0000-4000-8000-00000000000{n}");
        // The token must be listed for the function: stage it as AWSPENDING, as
        // RotateSecret does before it calls createSecret.
        cluster
            .moto
            .block_on(
                cluster
                    .moto
                    .client()
                    .put_secret_value()
                    .secret_id(SECRET_ID)
                    .client_request_token(&token)
                    .secret_string("{}")
                    .version_stages("AWSPENDING")
                    .send(),
            )
            .expect("a pending version");
        for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
            let out = function.invoke(&event(step, &token));
            let seen = format!("{}{}{}", stdout(&out), stderr(&out), function.log());
            if step == "createSecret" && n < 4 {
                // The step ran and failed on the malformed version, rather than passing by
                // never reading it (the last shape is valid JSON, so only setSecret, which
                // decodes the current key, fails on it).
                assert!(
                    seen.contains(SECRET_ID) && !seen.contains("AWSPENDING)"),
                    "shape {n}: createSecret did not fail on the secret:\n{seen}"
                );
            }
            for line in &body {
                assert!(
                    !seen.contains(line),
                    "shape {n}, {step}: key text in the response or the log:\n{seen}"
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// The default path: SSM deploy, workers found by tag, a non-root USERNAME edited by root
// ---------------------------------------------------------------------------

/// The three workers of the default-path test, as the function finds them by their tag.
const WORKERS: &str = "127.0.0.[2-4]";

/// Prints the Run Command commands moto recorded, as JSON (as tests/rotation.rs lists them).
const LIST_SSM_COMMANDS: &str = r#"
import json, os
import boto3
ssm = boto3.client("ssm", endpoint_url=os.environ["MOTO_ENDPOINT"], region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
commands = ssm.list_commands()["Commands"]
print(json.dumps([{k: c[k] for k in ("DocumentName", "InstanceIds", "Parameters")} for c in commands]))
"#;

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().expect("id runs");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// Runs useradd or userdel until it succeeds, for five seconds at most: each gives up at once
/// while another test holds the lock on /etc/passwd, and userdel while a process of the
/// account (an sshd session that is closing) still runs.
fn retry_account_change(mut change: impl FnMut() -> std::process::ExitStatus) -> bool {
    for _ in 0..50 {
        if change().success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// A real local account for the function's USERNAME: not root, with its home under /home and
/// its own `~/.ssh/authorized_keys`, as ec2-user is on the sample's cluster. It is deleted
/// with its home (userdel -r) when dropped, even when an assertion fails.
struct Account {
    name: String,
    home: PathBuf,
}

impl Account {
    fn create() -> Account {
        use std::hash::{BuildHasher, Hasher};
        assert!(
            is_root(),
            "this test creates an account and runs the SSM script as root: run it as root (CI does)"
        );
        let suffix = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish()
            & 0xffff_ffff;
        let name = format!("smssh-lr-{suffix:08x}");
        let home = PathBuf::from("/home").join(&name);
        // The password field is `*`, not useradd's `!`: the workers' sshd runs without PAM and
        // then refuses an account whose password starts with `!` as locked. `*` matches no
        // password either, so only keys log in, as on a cloud image.
        let added = retry_account_change(|| {
            Command::new("useradd")
                .args(["--create-home", "--home-dir"])
                .arg(&home)
                .args(["--shell", "/bin/sh", "--password", "*"])
                .arg(&name)
                .stdin(Stdio::null())
                .status()
                .expect("useradd must be installed (package passwd)")
        });
        assert!(added, "useradd {name} failed");
        Account { name, home }
    }

    fn authorized_keys_path(&self) -> PathBuf {
        self.home.join(".ssh/authorized_keys")
    }

    fn authorized_keys(&self) -> String {
        std::fs::read_to_string(self.authorized_keys_path()).expect("the account's authorized_keys")
    }

    /// Writes `text` as the account's `~/.ssh/authorized_keys`, owned by the account with the
    /// modes sshd's StrictModes wants (home and .ssh 700, the file 600): the script refuses,
    /// when root edits for the account, a file the account does not own.
    fn install_authorized_keys(&self, text: &str) {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let owner = std::fs::metadata(&self.home).expect("the account's home");
        let (uid, gid) = (owner.uid(), owner.gid());
        assert_ne!(uid, 0, "useradd made the home of {} root's", self.name);
        let ssh = self.home.join(".ssh");
        std::fs::create_dir_all(&ssh).expect("the account's .ssh");
        std::fs::write(self.authorized_keys_path(), text).expect("the account's authorized_keys");
        for (path, mode) in [
            (&self.home, 0o700),
            (&ssh, 0o700),
            (&self.authorized_keys_path(), 0o600),
        ] {
            std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
        }
    }

    /// The owner and permission bits of the account's authorized_keys.
    fn authorized_keys_owner_and_mode(&self) -> (u32, u32, u32) {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(self.authorized_keys_path()).expect("authorized_keys");
        (meta.uid(), meta.gid(), meta.mode() & 0o7777)
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        let removed = retry_account_change(|| {
            Command::new("userdel")
                .arg("-r")
                .arg(&self.name)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .expect("userdel runs")
        });
        if !removed {
            eprintln!(
                "warning: userdel -r {} failed; remove the account by hand",
                self.name
            );
        }
    }
}

/// The secret's versions and their labels, each version's labels sorted.
fn sorted_stages(cluster: &Cluster) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut stages = cluster.moto.stages(SECRET_ID);
    for labels in stages.values_mut() {
        labels.sort();
    }
    stages
}

/// Takes `stage` off `version` without giving it to another version.
fn remove_stage(cluster: &Cluster, stage: &str, version: &str) {
    cluster
        .moto
        .block_on(
            cluster
                .moto
                .client()
                .update_secret_version_stage()
                .secret_id(SECRET_ID)
                .version_stage(stage)
                .remove_from_version_id(version)
                .send(),
        )
        .unwrap_or_else(|e| panic!("removing {stage} from {version}: {e:?}"));
}

/// Turns rotation on as configuring the function does (RotateSecret with
/// RotateImmediately=false, [`enable_rotation`]), then undoes what only moto does: without a
/// function of its own, moto's RotateSecret copies the current value into a new AWSCURRENT
/// version. Secrets Manager leaves AWSCURRENT where it was, so it is moved back and the copy
/// keeps no label; the secret's first version is current again.
fn enable_rotation_as_configuring_the_function_does(cluster: &Cluster) {
    let first = cluster
        .moto
        .version_with_stage(SECRET_ID, "AWSCURRENT")
        .expect("a current version");
    enable_rotation(cluster);
    let copy = cluster
        .moto
        .version_with_stage(SECRET_ID, "AWSCURRENT")
        .expect("a current version");
    if copy != first {
        cluster
            .moto
            .update_stage(SECRET_ID, "AWSCURRENT", &first, Some(&copy));
        remove_stage(cluster, "AWSPREVIOUS", &copy);
    }
    let labelled: Vec<(String, Vec<String>)> = sorted_stages(cluster)
        .into_iter()
        .filter(|(_, labels)| !labels.is_empty())
        .collect();
    assert_eq!(
        labelled,
        [(first, vec!["AWSCURRENT".to_owned()])],
        "the first version alone is labelled, and it is AWSCURRENT"
    );
}

/// What Secrets Manager does before it calls createSecret: a version whose id is the token,
/// labelled AWSPENDING and holding no value yet (AWS's rotation templates refuse a token that
/// DescribeSecret does not list with AWSPENDING, and their createSecret expects
/// GetSecretValue of it to fail with ResourceNotFoundException; AWS documents that a failed
/// rotation can leave "AWSPENDING attached to an empty secret version"). Only RotateSecret
/// makes a version without a value, in moto as in AWS; moto, having no function to call,
/// then makes it AWSCURRENT at once, so the labels are put back: AWSCURRENT and AWSPREVIOUS
/// where they were, AWSPENDING on the new version.
fn stage_empty_pending_version(cluster: &Cluster, token: &str) {
    let before = sorted_stages(cluster);
    let holder = |stage: &str| {
        before
            .iter()
            .find(|(_, labels)| labels.iter().any(|l| l == stage))
            .map(|(id, _)| id.clone())
    };
    let current = holder("AWSCURRENT").expect("a current version");
    let previous = holder("AWSPREVIOUS");
    cluster
        .moto
        .block_on(
            cluster
                .moto
                .client()
                .rotate_secret()
                .secret_id(SECRET_ID)
                .client_request_token(token)
                .rotate_immediately(true)
                .send(),
        )
        .expect("RotateSecret making the empty version");
    // Moto has made the new version AWSCURRENT and the current one AWSPREVIOUS. Moving
    // AWSCURRENT back gives the new version AWSPREVIOUS, which goes back where it was.
    cluster
        .moto
        .update_stage(SECRET_ID, "AWSCURRENT", &current, Some(token));
    cluster
        .moto
        .update_stage(SECRET_ID, "AWSPENDING", token, None);
    match &previous {
        Some(previous) => {
            cluster
                .moto
                .update_stage(SECRET_ID, "AWSPREVIOUS", previous, Some(token))
        }
        None => remove_stage(cluster, "AWSPREVIOUS", token),
    }
    let mut expected = before;
    expected.insert(token.to_owned(), vec!["AWSPENDING".to_owned()]);
    assert_eq!(
        sorted_stages(cluster),
        expected,
        "the new version alone changed, labelled AWSPENDING"
    );
    let read = cluster.moto.block_on(
        cluster
            .moto
            .client()
            .get_secret_value()
            .secret_id(SECRET_ID)
            .version_id(token)
            .send(),
    );
    assert!(
        read.as_ref().is_err_and(|e| e
            .as_service_error()
            .is_some_and(|e| e.is_resource_not_found_exception())),
        "the new version must hold no value yet: {read:?}"
    );
}

/// Stores `value` as version `token` labelled AWSPENDING, AWSCURRENT staying where it is.
fn stage_pending_value(cluster: &Cluster, token: &str, value: &str) {
    cluster
        .moto
        .block_on(
            cluster
                .moto
                .client()
                .put_secret_value()
                .secret_id(SECRET_ID)
                .client_request_token(token)
                .secret_string(value)
                .version_stages("AWSPENDING")
                .send(),
        )
        .expect("a pending version");
}

impl FunctionRuntime {
    /// Invokes `step` for `token` and fails the test, with the function's log, unless the
    /// step succeeded.
    fn step(&self, step: &str, token: &str) {
        let out = self.invoke(&event(step, token));
        assert!(
            out.status.success() && stdout(&out).contains(step),
            "{step} for {token}: {}\nfunction log:\n{}",
            describe(&out),
            self.log()
        );
    }
}

/// One rotation as Secrets Manager runs it: the service makes the token's empty AWSPENDING
/// version, calls the four steps in order with that one token, and after a successful
/// finishSecret takes AWSPENDING off the new current version.
fn rotate_as_secrets_manager_does(cluster: &Cluster, function: &FunctionRuntime) -> String {
    let token = smssh::rotation::new_token();
    stage_empty_pending_version(cluster, &token);
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        function.step(step, &token);
    }
    assert_eq!(
        cluster
            .moto
            .version_with_stage(SECRET_ID, "AWSCURRENT")
            .as_deref(),
        Some(token.as_str()),
        "finishSecret made the new version current"
    );
    remove_stage(cluster, "AWSPENDING", &token);
    token
}

/// Asserts that `text` (the account's authorized_keys) has a block holding `version` only and,
/// outside it, only the operator's line; returns the text for further checks.
#[track_caller]
fn assert_block_and_operator_line(
    text: &str,
    version: &str,
    operator_line: &str,
    moment: &str,
) -> String {
    let block_versions: Vec<String> = block::parse_block(text, SECRET_ID)
        .expect("the block parses")
        .into_iter()
        .map(|k| k.version_id)
        .collect();
    assert_eq!(block_versions, [version], "{moment}:\n{text}");
    assert_eq!(
        lines_outside_blocks(text),
        [operator_line],
        "{moment}, outside the block only the operator's line is left:\n{text}"
    );
    text.to_owned()
}

/// Checks on every worker that `accepted` logs in as `user` and that each of `refused` is
/// refused by sshd itself ("Permission denied", not a failed connection); fails naming every
/// worker and key that disagree.
fn assert_logins(
    cluster: &Cluster,
    user: &str,
    accepted: (&str, &Path),
    refused: &[(&str, &Path)],
    moment: &str,
) {
    let mut wrong = Vec::new();
    for worker in &cluster.workers {
        let out = cluster.openssh_login(Some(user), worker.addr(), accepted.1);
        if !out.status.success() {
            wrong.push(format!(
                "{}: the {} key was refused\n{}",
                worker.addr(),
                accepted.0,
                describe(&out)
            ));
        }
        for (name, key) in refused {
            let out = cluster.openssh_login(Some(user), worker.addr(), key);
            let denied = out.status.code() == Some(255)
                && stderr(&out).contains("Permission denied (publickey)");
            if !denied {
                wrong.push(format!(
                    "{}: the {name} key was not refused by sshd\n{}",
                    worker.addr(),
                    describe(&out)
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{moment}:\n{}", wrong.join("\n"));
}

/// The issue's done criterion on the function's real path. The cluster starts as the AWS
/// sample's does: the secret's first version holds a key pair whose public key was installed
/// by hand (user data), outside any smssh block, in the account's authorized_keys on every
/// worker. The function runs under cargo-lambda with its defaults: SSM deploy, workers found by
/// the RotateSSHKeys=True tag, USERNAME a real non-root account whose file root edits. It
/// passes the check Secrets Manager makes when rotation is configured, then rotates twice as
/// the service does; real logins then refuse the first and second keys everywhere and accept
/// the third, and the operator's own line is still there byte for byte.
#[test]
fn the_default_function_over_ssm_rotates_twice_and_only_the_newest_key_logs_in_anywhere() {
    let mut cluster = Cluster::new(3);
    let account = Account::create();
    let user = account.name.clone();
    // The workers share one account and so one home, as workers sharing an NFS home do: each
    // SSM invocation edits the same file (the script locks it), and each worker's sshd reads
    // it, as a stock sshd does, from the account's home.
    for worker in cluster.workers.iter_mut() {
        worker.read_authorized_keys_from_home_of(&user);
    }

    // The start state of the sample's cluster.
    let (first_private, first_public, first_key) =
        cluster.generate_key_file("ed25519", "openssh", None);
    let (_, operator_public) = cluster.generate_key("ed25519", "openssh", None);
    let key_part = |line: &str| {
        line.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let first_line = format!(
        "{} root@master installed-by-user-data",
        key_part(&first_public)
    );
    let operator_line = format!(
        "from=\"10.0.0.0/8\",no-agent-forwarding {} operator@bastion",
        key_part(&operator_public)
    );
    account.install_authorized_keys(&format!("{operator_line}\n{first_line}\n"));
    let owner_and_mode = account.authorized_keys_owner_and_mode();
    // The function has no disk: the workers' host keys travel in the secret.
    let known: String = cluster
        .workers
        .iter()
        .map(|w| w.host_key_line() + "\n")
        .collect();
    cluster.moto.delete_secret(SECRET_ID);
    let first_version = cluster.moto.put_secret_string(
        SECRET_ID,
        &serde_json::json!({
            "PrivateKey": first_private,
            "PublicKey": first_public,
            "KnownHosts": known,
        })
        .to_string(),
    );
    enable_rotation_as_configuring_the_function_does(&cluster);

    // The workers are tagged instances whose private addresses are the sshd workers'. The
    // SmsshTestHome tag makes the harness's SSM emulation run their commands as root, with
    // root's HOME the worker's own directory, which the script must ignore for another
    // account. The last instance lacks the tag value and must never get a command.
    let mut spec: Vec<serde_json::Value> = cluster
        .workers
        .iter()
        .map(|w| {
            serde_json::json!({
                "ip": w.addr(),
                "tags": {
                    "RotateSSHKeys": "True",
                    "SmsshTestHome": w.sftp_home().display().to_string(),
                },
            })
        })
        .collect();
    let bystander_home = tempfile::tempdir().expect("a home for the bystander");
    spec.push(serde_json::json!({
        "ip": "127.0.0.40",
        "tags": {
            "RotateSSHKeys": "False",
            "SmsshTestHome": bystander_home.path().display().to_string(),
        },
    }));
    let ids = cluster
        .moto
        .create_ec2_instances(&serde_json::Value::Array(spec));

    // The defaults: no SMSSH_DEPLOY (SSM), no SMSSH_TARGETS and no TAGNAME/TAGVALUE (the
    // RotateSSHKeys=True tag). Only the account and the test's sshd port are set.
    let function = FunctionRuntime::start(
        &cluster,
        &[
            ("USERNAME", user.clone()),
            ("SMSSH_PORT", cluster.port.to_string()),
        ],
    );

    // Before anything rotates, the first key logs in everywhere: the refusals checked later
    // are the rotations' doing, not the set-up's.
    assert_logins(
        &cluster,
        &user,
        ("first", &first_key),
        &[],
        "before any rotation",
    );

    // Configuring rotation without rotating at once: "Secrets Manager tests the rotation
    // configuration by running the testSecret step of the Lambda rotation function. The test
    // creates an AWSPENDING version of the secret and then removes it." What that version
    // holds is not documented, so each likely shape is checked: no value, a copy of the
    // current value, and an empty JSON object. Moto cannot call the function itself.
    let untouched = account.authorized_keys();
    let current_value = cluster
        .moto
        .get_secret_string_at_stage(SECRET_ID, "AWSCURRENT");
    for shape in ["no value", "a copy of the current value", "{}"] {
        let token = smssh::rotation::new_token();
        match shape {
            "no value" => stage_empty_pending_version(&cluster, &token),
            "{}" => stage_pending_value(&cluster, &token, "{}"),
            _ => stage_pending_value(&cluster, &token, &current_value),
        }
        let out = function.invoke(&event("testSecret", &token));
        assert!(
            out.status.success() && stdout(&out).contains("testSecret"),
            "the configuration check with {shape}: {}\nfunction log:\n{}",
            describe(&out),
            function.log()
        );
        remove_stage(&cluster, "AWSPENDING", &token);
        assert_eq!(
            cluster.moto.version_with_stage(SECRET_ID, "AWSCURRENT"),
            Some(first_version.clone()),
            "the configuration check with {shape} moved AWSCURRENT"
        );
        assert_eq!(
            account.authorized_keys(),
            untouched,
            "the configuration check with {shape} changed the workers' file"
        );
    }

    // Rotation 1: the first key, held by AWSPREVIOUS now, is refused everywhere although it was
    // installed outside the block; the second logs in.
    let second_version = rotate_as_secrets_manager_does(&cluster, &function);
    assert_eq!(
        cluster.moto.version_with_stage(SECRET_ID, "AWSPREVIOUS"),
        Some(first_version.clone())
    );
    let second_key = cluster.version_key_file(&second_version);
    assert_logins(
        &cluster,
        &user,
        ("second", &second_key),
        &[("first", &first_key)],
        "after rotation 1",
    );
    assert_block_and_operator_line(
        &account.authorized_keys(),
        &second_version,
        &operator_line,
        "after rotation 1",
    );

    // Rotation 2: the first and second keys are refused everywhere; the third logs in, with
    // OpenSSH and with smssh as the master runs it (AWSCURRENT from the secret).
    let third_version = rotate_as_secrets_manager_does(&cluster, &function);
    let third_key = cluster.version_key_file(&third_version);
    assert_logins(
        &cluster,
        &user,
        ("third", &third_key),
        &[("first", &first_key), ("second", &second_key)],
        "after rotation 2",
    );
    let text = assert_block_and_operator_line(
        &account.authorized_keys(),
        &third_version,
        &operator_line,
        "after rotation 2",
    );
    assert!(
        text.starts_with(&format!("{operator_line}\n")),
        "the operator's line is kept byte for byte, in its place:\n{text}"
    );
    assert_eq!(
        account.authorized_keys_owner_and_mode(),
        owner_and_mode,
        "the file keeps its owner and mode"
    );
    assert_success(&run(cluster.command("smssh").args([
        "-o",
        "BatchMode=yes",
        "-l",
        &user,
        "-w",
        WORKERS,
        "--",
        "true",
    ])));

    // Root's own file on each worker (SSM's HOME) was never touched.
    for worker in &cluster.workers {
        assert!(
            !worker.authorized_keys().contains("smssh-managed"),
            "{}: root's authorized_keys got a block",
            worker.addr()
        );
    }
    // setSecret and finishSecret of each rotation went to the three tagged instances only, as
    // root editing the account's file; the configuration checks and testSecret sent nothing.
    let sent = cluster.moto.run_python(LIST_SSM_COMMANDS, &[]);
    let commands: Vec<serde_json::Value> = serde_json::from_str(sent.trim()).expect("commands");
    assert_eq!(commands.len(), 4, "two per rotation: {sent}");
    let mut expected: Vec<String> = cluster
        .workers
        .iter()
        .map(|w| ids[w.addr()].clone())
        .collect();
    expected.sort();
    for command in &commands {
        assert_eq!(command["DocumentName"], "AWS-RunShellScript");
        let mut targets: Vec<String> = command["InstanceIds"]
            .as_array()
            .expect("InstanceIds")
            .iter()
            .map(|v| v.as_str().expect("an instance id").to_owned())
            .collect();
        targets.sort();
        assert_eq!(targets, expected, "{sent}");
        assert!(!targets.contains(&ids["127.0.0.40"]));
        let script = command["Parameters"]["commands"][0]
            .as_str()
            .expect("the script");
        assert!(script.contains(&format!("SMSSH_USER='{user}'")), "{script}");
    }
}
