//! Key text never reaches output: a canary private key stored in every malformed shape we could
//! think of, run through smscp, smssh and `smssh rotate` (a whole rotation and a
//! reconciliation). Its base64 body must never appear on stdout or stderr, whatever the error.

mod common;

use std::process::Output;

use common::*;

/// A fresh ed25519 key made by ssh-keygen, optionally encrypted with `passphrase`.
fn canary_key(dir: &std::path::Path, name: &str, passphrase: &str) -> String {
    let path = dir.join(name);
    let made = std::process::Command::new("ssh-keygen")
        .args([
            "-q", "-t", "ed25519", "-N", passphrase, "-C", "canary", "-f",
        ])
        .arg(&path)
        .output()
        .expect("ssh-keygen runs");
    assert!(made.status.success(), "{}", describe(&made));
    std::fs::read_to_string(&path).expect("the key file")
}

/// Every base64 line of a PEM body, the pieces that must never be printed.
fn body_lines(pem: &str) -> Vec<String> {
    pem.lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

fn assert_no_canary(out: &Output, secrets: &[Vec<String>], what: &str) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // JSON escaping and our terminal escaping can split a body only at line breaks, which the
    // lines themselves do not contain, so looking for each line is enough.
    for lines in secrets {
        for line in lines {
            assert!(
                !text.contains(line.as_str()),
                "{what}: the canary's key text was printed:\n{text}"
            );
        }
    }
}

#[test]
fn a_canary_key_in_every_malformed_shape_never_reaches_output() {
    let cluster = Cluster::new(1);
    let scratch = tempfile::tempdir().expect("scratch");
    let plain = canary_key(scratch.path(), "plain", "");
    let encrypted = canary_key(scratch.path(), "encrypted", "right passphrase");
    let secrets = [body_lines(&plain), body_lines(&encrypted)];
    let quoted = serde_json::to_string(&plain).expect("JSON string");
    let half = &plain[..plain.len() / 2];
    let shapes: Vec<(&str, Vec<u8>, bool)> = vec![
        ("a JSON string", quoted.clone().into_bytes(), false),
        ("a JSON array", format!("[{quoted}]").into_bytes(), false),
        (
            "a number field",
            format!("{{\"PrivateKey\": 5, \"Other\": {quoted}}}").into_bytes(),
            false,
        ),
        (
            "a nested object",
            format!("{{\"PrivateKey\": {{\"k\": {quoted}}}}}").into_bytes(),
            false,
        ),
        (
            "an array field",
            format!("{{\"PrivateKey\": [{quoted}]}}").into_bytes(),
            false,
        ),
        (
            "a key as a field name",
            format!("{{{quoted}: \"x\"}}").into_bytes(),
            false,
        ),
        (
            "truncated JSON",
            format!("{{\"PrivateKey\": {quoted}").into_bytes(),
            false,
        ),
        ("a truncated PEM", half.as_bytes().to_vec(), false),
        (
            "a truncated PEM in JSON",
            serde_json::json!({ "PrivateKey": half })
                .to_string()
                .into_bytes(),
            false,
        ),
        (
            "the wrong passphrase",
            serde_json::json!({ "PrivateKey": encrypted, "Passphrase": "wrong" })
                .to_string()
                .into_bytes(),
            false,
        ),
        (
            "no passphrase",
            serde_json::json!({ "PrivateKey": encrypted })
                .to_string()
                .into_bytes(),
            false,
        ),
        (
            "trailing garbage",
            serde_json::json!({ "PrivateKey": format!("{plain}garbage\u{1b}[2J") })
                .to_string()
                .into_bytes(),
            false,
        ),
        ("a huge value", plain.repeat(150).into_bytes(), false),
        (
            "binary with a NUL",
            [half.as_bytes(), b"\0", half.as_bytes()].concat(),
            true,
        ),
    ];
    let file = cluster.scratch_file("probe.txt", b"probe");
    let file = file.to_str().expect("utf-8");
    for (name, value, binary) in &shapes {
        if *binary {
            cluster.moto.put_secret_binary(SECRET_ID, value);
        } else {
            let text = std::str::from_utf8(value).expect("text shape");
            cluster.moto.put_secret_value(SECRET_ID, text);
        }
        let runs: Vec<(String, Output)> = vec![
            (
                "smscp".to_owned(),
                run(cluster
                    .command("smscp")
                    .args(["-v", file, "127.0.0.2:probe.txt"])),
            ),
            (
                "smssh".to_owned(),
                run(cluster.command("smssh").args(["-v", "127.0.0.2", "true"])),
            ),
            (
                "smssh rotate".to_owned(),
                run(cluster
                    .command("smssh")
                    .args(["rotate", "-v", "-w", "127.0.0.2"])),
            ),
            (
                "smssh rotate --reconcile".to_owned(),
                run(cluster.command("smssh").args([
                    "rotate",
                    "-v",
                    "-w",
                    "127.0.0.2",
                    "--reconcile",
                ])),
            ),
        ];
        for (program, out) in runs {
            assert!(
                !out.status.success(),
                "{name}: {program} succeeded\n{}",
                describe(&out)
            );
            assert_no_canary(&out, &secrets, &format!("{name}: {program}"));
        }
    }
}
