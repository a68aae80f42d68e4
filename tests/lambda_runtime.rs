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

/// cargo-lambda's local runtime and the function's binary attached to it, configured for the
/// SSH channel to `hosts`; both stop when this is dropped.
struct FunctionRuntime {
    lambda: PathBuf,
    port: u16,
    log: PathBuf,
    _runtime: Guard,
    _function: Guard,
}

impl FunctionRuntime {
    fn start(cluster: &Cluster, hosts: &str) -> FunctionRuntime {
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
        let function = Guard(
            Command::new(function_binary())
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
                .env("AWS_REGION", "us-east-1")
                .env("USERNAME", "root")
                .env("SMSSH_DEPLOY", "ssh")
                .env("SMSSH_TARGETS", hosts)
                .env("SMSSH_PORT", cluster.port.to_string())
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

    let function = FunctionRuntime::start(&cluster, hosts);

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
    let function = FunctionRuntime::start(&cluster, hosts);
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
