//! `smssh check` through the built binary against real sshd workers and moto: every verdict
//! (all good, a worker down, an unknown and a changed host key, a refused key, a secret that
//! is missing or denied) in text and in `--json`, with the fingerprints compared to what
//! OpenSSH's own tools print for the same files.

mod common;

use std::collections::HashMap;
use std::process::Output;

use common::*;

/// `smssh check` on `hosts` with the cluster's environment.
fn check(cluster: &Cluster, extra: &[&str]) -> Output {
    run(cluster.command("smssh").arg("check").args(extra))
}

/// The finding lines of a text report: (status, check, rest of the line).
fn lines(out: &Output) -> Vec<(String, String, String)> {
    stdout(out)
        .lines()
        .filter_map(|line| {
            let (status, rest) = line.split_once(' ')?;
            if !matches!(status, "ok" | "WARN" | "FAIL") {
                return None;
            }
            let rest = rest.trim_start();
            let (check, rest) = rest.split_once(' ').unwrap_or((rest, ""));
            Some((
                status.to_owned(),
                check.to_owned(),
                rest.trim_start().to_owned(),
            ))
        })
        .collect()
}

/// The one line for `check` on `host` (or without a host when `host` is None).
#[track_caller]
fn line_for(out: &Output, check: &str, host: Option<&str>) -> (String, String) {
    let found: Vec<(String, String)> = lines(out)
        .into_iter()
        .filter(|(_, c, rest)| {
            c == check
                && match host {
                    Some(host) => rest.starts_with(&format!("{host}: ")),
                    None => true,
                }
        })
        .map(|(status, _, rest)| (status, rest))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "exactly one {check} line for {host:?}\n{}",
        describe(out)
    );
    found.into_iter().next().expect("one line")
}

/// `SHA256:...` of a public key file, as ssh-keygen -lf prints it.
fn keygen_fingerprint(path: &std::path::Path) -> String {
    let out = run(std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(path));
    assert_success(&out);
    stdout(&out)
        .split_whitespace()
        .nth(1)
        .expect("a fingerprint field")
        .to_owned()
}

#[test]
fn all_good_exits_0_with_one_ok_line_per_finding() {
    let cluster = Cluster::new(2);
    let out = check(&cluster, &["127.0.0.[2-3]"]);
    assert_success(&out);
    let (status, identity) = line_for(&out, "aws-identity", None);
    assert_eq!(status, "ok", "{}", describe(&out));
    assert!(identity.contains("arn:aws:"), "{identity}");
    let (status, region) = line_for(&out, "aws-region", None);
    assert_eq!(status, "ok");
    assert_eq!(region, "us-east-1 (from AWS_REGION)");
    let (status, secret) = line_for(&out, "secret", None);
    assert_eq!(status, "ok");
    let version = cluster
        .moto
        .version_with_stage(SECRET_ID, "AWSCURRENT")
        .expect("a current version");
    let client_fingerprint = keygen_fingerprint(&cluster.key_path.with_extension("pub"));
    assert!(
        secret.contains(&format!("version {version} (AWSCURRENT)"))
            && secret.contains(&format!("ssh-ed25519 256-bit {client_fingerprint}")),
        "{secret}"
    );
    assert!(!stdout(&out).contains("PRIVATE KEY"));
    let memory = line_for(&out, "memory-lock", None);
    assert!(matches!(memory.0.as_str(), "ok" | "WARN"), "{memory:?}");
    for worker in &cluster.workers {
        let addr = worker.addr();
        let (status, reach) = line_for(&out, "reachable", Some(addr));
        assert_eq!(status, "ok");
        assert!(reach.contains("SSH-2.0-OpenSSH_"), "{reach}");
        let (status, key) = line_for(&out, "host-key", Some(addr));
        assert_eq!(status, "ok");
        let host_fingerprint = keygen_fingerprint(&worker.host_key_path().with_extension("pub"));
        let line = cluster
            .workers
            .iter()
            .position(|w| w.addr() == addr)
            .expect("the worker")
            + 1;
        assert_eq!(
            key,
            format!(
                "{addr}: ssh-ed25519 {host_fingerprint} known from {}:{line}",
                cluster.known_hosts_path().display()
            )
        );
        let (status, login) = line_for(&out, "login", Some(addr));
        assert_eq!(status, "ok");
        assert!(
            login.contains(&client_fingerprint) && login.contains(&version),
            "{login}"
        );
    }
    assert!(
        stdout(&out).trim_end().ends_with("checks passed")
            || stdout(&out).trim_end().ends_with("warning(s))")
    );
}

/// Four workers: one good, one down, one whose host key is unknown, one whose host key
/// changed, one that does not authorize our key.
#[test]
fn each_broken_host_is_named_with_what_to_do_in_text_and_json() {
    let mut cluster = Cluster::new(5);
    let addrs = cluster.addrs();
    cluster.workers[1].stop();
    // Unknown: known_hosts lists every worker but the third.
    let known: String = cluster
        .workers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 2)
        .map(|(_, w)| w.host_key_line() + "\n")
        .collect();
    std::fs::write(cluster.known_hosts_path(), known).expect("known_hosts");
    // Changed: the fourth worker gets a new host key; known_hosts keeps the old one.
    cluster.workers[3].regenerate_host_key();
    cluster.workers[4].set_authorized_keys("");

    let out = check(&cluster, &["127.0.0.[2-6]"]);
    assert_exit_code(&out, 1);
    assert_eq!(line_for(&out, "login", Some(&addrs[0])).0, "ok");

    let (status, down) = line_for(&out, "reachable", Some(&addrs[1]));
    assert_eq!(status, "FAIL");
    assert!(
        down.contains("connection refused") && down.contains("check that sshd runs there"),
        "{down}"
    );

    // Unknown: the fingerprint is ssh-keygen's for the worker's host key, and the hint says
    // how to add it.
    let (status, unknown) = line_for(&out, "host-key", Some(&addrs[2]));
    assert_eq!(status, "FAIL");
    let fingerprint = keygen_fingerprint(&cluster.workers[2].host_key_path().with_extension("pub"));
    assert!(
        unknown.contains(&format!("ssh-ed25519 {fingerprint} is unknown"))
            && unknown.contains("ssh-keyscan"),
        "{unknown}"
    );
    let openssh = run(cluster.openssh("ssh").args([&addrs[2], "true"]));
    assert_exit_code(&openssh, 255);
    assert_stderr_contains(&openssh, "No ED25519 host key is known for");

    // Changed: both fingerprints, each as OpenSSH prints it for the same known_hosts.
    let (status, changed) = line_for(&out, "host-key", Some(&addrs[3]));
    assert_eq!(status, "FAIL");
    let openssh = run(cluster.openssh("ssh").args([&addrs[3], "true"]));
    assert_exit_code(&openssh, 255);
    let openssh_err = stderr(&openssh);
    let presented = openssh_err
        .lines()
        .skip_while(|l| !l.contains("sent by the remote host is"))
        .nth(1)
        .and_then(|l| l.trim().strip_suffix('.'))
        .unwrap_or_else(|| panic!("OpenSSH names the presented key\n{openssh_err}"))
        .to_owned();
    let offending = openssh_err
        .lines()
        .find_map(|l| l.trim().strip_prefix("Offending ED25519 key in "))
        .unwrap_or_else(|| panic!("OpenSSH names the offending line\n{openssh_err}"))
        .trim()
        .to_owned();
    let old_fingerprint = {
        let line = std::fs::read_to_string(cluster.known_hosts_path())
            .expect("known_hosts")
            .lines()
            .nth(2)
            .expect("the fourth worker's line")
            .to_owned();
        let file = cluster.scratch_file(
            "old-host-key.pub",
            line.split_once(' ').expect("fields").1.as_bytes(),
        );
        keygen_fingerprint(&file)
    };
    assert_eq!(
        changed,
        format!(
            "{}: HOST KEY MISMATCH: the server presents ssh-ed25519 {presented} but known_hosts has {old_fingerprint} ({offending}): someone may be intercepting, or the host was reinstalled; after checking, remove the old entry with ssh-keygen -R '[{}]:{}'",
            addrs[3], addrs[3], cluster.port
        )
    );

    // Refused: a real login fails, as OpenSSH's with the same key does.
    let (status, refused) = line_for(&out, "login", Some(&addrs[4]));
    assert_eq!(status, "FAIL");
    assert!(
        refused.contains("permission denied (publickey)") && refused.contains("authorized_keys"),
        "{refused}"
    );
    assert_failure(&cluster.openssh_login(None, &addrs[4], &cluster.key_path));
    assert!(stdout(&out).trim_end().ends_with("checks failed"));

    // --json: one document, the same verdicts in the same order.
    let json = check(&cluster, &["--json", "127.0.0.[2-6]"]);
    assert_exit_code(&json, 1);
    let document: serde_json::Value =
        serde_json::from_str(&stdout(&json)).unwrap_or_else(|e| panic!("{e}\n{}", describe(&json)));
    assert_eq!(document["ok"], false);
    let from_json: Vec<(String, String, String)> = document["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| {
            let status = match (f["ok"].as_bool(), f["required"].as_bool()) {
                (Some(true), _) => "ok",
                (Some(false), Some(false)) => "WARN",
                _ => "FAIL",
            };
            let host = f["host"].as_str().unwrap_or("").to_owned();
            assert!(f["detail"].is_string() && f["hint"].is_string(), "{f}");
            (
                status.to_owned(),
                f["check"].as_str().expect("check").to_owned(),
                host,
            )
        })
        .collect();
    let from_text: Vec<(String, String, String)> = lines(&out)
        .into_iter()
        .map(|(status, check, rest)| {
            let host = addrs
                .iter()
                .find(|a| rest.starts_with(&format!("{a}: ")))
                .cloned()
                .unwrap_or_default();
            (status, check, host)
        })
        .collect();
    assert_eq!(from_json, from_text);
}

#[test]
fn a_missing_or_denied_secret_fails_and_no_login_is_tried() {
    let cluster = Cluster::new(1);
    let out = run(cluster.command("smssh").args([
        "check",
        "--secret-id",
        "/no/such/secret",
        "127.0.0.2",
    ]));
    assert_exit_code(&out, 1);
    let (status, secret) = line_for(&out, "secret", None);
    assert_eq!(status, "FAIL");
    assert!(secret.contains("ResourceNotFoundException"), "{secret}");
    // The host is still reachable and its host key known; the login cannot be tried.
    assert_eq!(line_for(&out, "host-key", Some("127.0.0.2")).0, "ok");
    let (status, login) = line_for(&out, "login", Some("127.0.0.2"));
    assert_eq!(status, "FAIL");
    assert!(login.contains("not tried"), "{login}");

    // Moto enforcing IAM: a user that may only describe the secret cannot read it.
    let users = serde_json::json!({
        "may-only-describe": [
            {"Effect": "Allow", "Action": ["secretsmanager:DescribeSecret", "sts:GetCallerIdentity"], "Resource": "*"},
        ],
    });
    let keys: HashMap<String, (String, String)> = cluster.moto.create_iam_users(&users);
    cluster.moto.enforce_iam();
    let (id, secret_key) = &keys["may-only-describe"];
    let out = run(cluster
        .command("smssh")
        .env("AWS_ACCESS_KEY_ID", id)
        .env("AWS_SECRET_ACCESS_KEY", secret_key)
        .args(["check", "--json"]));
    assert_exit_code(&out, 1);
    let document: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("JSON");
    let secret = document["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .find(|f| f["check"] == "secret")
        .expect("a secret finding")
        .clone();
    assert_eq!(secret["ok"], false);
    assert!(
        secret["detail"]
            .as_str()
            .is_some_and(|d| d.contains("AccessDeniedException")),
        "{secret}"
    );
    assert!(
        secret["hint"]
            .as_str()
            .is_some_and(|h| h.contains("secretsmanager:GetSecretValue")),
        "{secret}"
    );
}
