//! smssh and smscp against moto enforcing IAM for real: a caller whose policy does not allow
//! secretsmanager:GetSecretValue gets one line naming the denial and the policy to check, and a
//! caller whose policy allows it logs in, on the same moto with the same secret.
//!
//! Moto authorises nothing by default. Once [`Moto::enforce_iam`] has turned enforcement on,
//! every request must be signed with an IAM user's access key (the signature is checked) and is
//! evaluated against that user's policies, with explicit denies winning, before it reaches the
//! Secrets Manager backend. The users and their keys are created before that, while moto still
//! lets anything through.

mod common;

use std::collections::HashMap;
use std::process::{Command, Output};

use common::*;

const MAY_READ: &str = "may-read";
const MAY_ONLY_DESCRIBE: &str = "may-only-describe";
const DENIED_EXPLICITLY: &str = "denied-explicitly";

/// A one-worker cluster whose moto enforces IAM, with three users: one allowed
/// GetSecretValue, one allowed only to describe and list secrets, and one allowed every
/// Secrets Manager action but explicitly denied GetSecretValue. Returns the users' keys.
fn cluster_enforcing_iam() -> (Cluster, HashMap<String, (String, String)>) {
    let cluster = Cluster::new(1);
    // Moto evaluates Secrets Manager actions against resource "*", so a statement naming the
    // secret's ARN would never match there; "*" is what reaches the decision.
    let users = serde_json::json!({
        MAY_READ: [
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": "*"},
        ],
        MAY_ONLY_DESCRIBE: [
            {"Effect": "Allow", "Action": ["secretsmanager:DescribeSecret", "secretsmanager:ListSecrets"], "Resource": "*"},
        ],
        DENIED_EXPLICITLY: [
            {"Effect": "Allow", "Action": "secretsmanager:*", "Resource": "*"},
            {"Effect": "Deny", "Action": "secretsmanager:GetSecretValue", "Resource": "*"},
        ],
    });
    let keys = cluster.moto.create_iam_users(&users);
    cluster.moto.enforce_iam();
    (cluster, keys)
}

/// `cmd` signing its requests with `user`'s access key instead of the harness's `testing` key.
fn as_user<'a>(
    cmd: &'a mut Command,
    keys: &HashMap<String, (String, String)>,
    user: &str,
) -> &'a mut Command {
    let (id, secret) = keys
        .get(user)
        .unwrap_or_else(|| panic!("no key for user {user}"));
    cmd.env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret)
}

/// Asserts the one-line denial: `{bin}: secret /dev/ssh: AccessDeniedException: ...` naming the
/// policy to check, and the exit code.
#[track_caller]
fn assert_denied(out: &Output, bin: &str, code: i32) {
    assert_exit_code(out, code);
    let err = stderr(out);
    assert_eq!(
        err.lines().count(),
        1,
        "exactly one stderr line\n{}",
        describe(out)
    );
    assert!(
        err.starts_with(&format!(
            "{bin}: secret {SECRET_ID}: AccessDeniedException:"
        )),
        "the line names the secret and AccessDeniedException first\n{}",
        describe(out)
    );
    assert_stderr_contains(
        out,
        "check that the instance role's policy allows secretsmanager:GetSecretValue",
    );
}

#[test]
fn smssh_without_get_secret_value_is_denied_with_255_and_with_it_logs_in() {
    let (cluster, keys) = cluster_enforcing_iam();
    for user in [MAY_ONLY_DESCRIBE, DENIED_EXPLICITLY] {
        let out =
            run(as_user(&mut cluster.command("smssh"), &keys, user).args(["127.0.0.2", "true"]));
        assert_denied(&out, "smssh", 255);
    }
    let out = run(
        as_user(&mut cluster.command("smssh"), &keys, MAY_READ).args(["127.0.0.2", "echo", "in"]),
    );
    assert_success(&out);
    assert_stdout_eq(&out, "in\n");
}

#[test]
fn smscp_without_get_secret_value_is_denied_with_1_and_with_it_copies() {
    let (cluster, keys) = cluster_enforcing_iam();
    let source = cluster.scratch_file("payload", b"only for readers\n");
    let remote_dir = tempfile::tempdir().expect("remote dir");
    let target = format!("127.0.0.2:{}/copy", remote_dir.path().display());
    let copied = remote_dir.path().join("copy");
    for user in [MAY_ONLY_DESCRIBE, DENIED_EXPLICITLY] {
        let out = run(as_user(&mut cluster.command("smscp"), &keys, user)
            .args([source.to_str().expect("utf-8"), &target]));
        assert_denied(&out, "smscp", 1);
        assert!(
            !copied.exists(),
            "a denied copy wrote nothing\n{}",
            describe(&out)
        );
    }
    let out = run(as_user(&mut cluster.command("smscp"), &keys, MAY_READ)
        .args([source.to_str().expect("utf-8"), &target]));
    assert_success(&out);
    assert_eq!(
        std::fs::read(&copied).expect("copied file"),
        b"only for readers\n"
    );
}
