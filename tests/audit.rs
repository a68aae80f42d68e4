//! The audit trail through the built binaries: records read from a real Unix datagram socket
//! (standing in for /dev/log) and from `--audit-log` files, for smscp uploads and downloads,
//! smssh commands and fan-outs with a host down, and every step of `smssh rotate`; the
//! administrator's destinations cannot be turned off and fail closed; no record holds key
//! text.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

/// The administrator's configuration and the syslog socket it names, in a temporary
/// directory (debug builds read `SMSSH_TEST_SYSTEM_CONFIG` instead of /etc/smssh).
struct Admin {
    dir: tempfile::TempDir,
    socket: UnixDatagram,
}

impl Admin {
    /// An administrator who requires syslog on the test socket, plus `extra` lines of
    /// `[audit]`.
    fn requiring_syslog(extra: &str) -> Admin {
        let dir = tempfile::Builder::new()
            .prefix("smssh-audit-")
            .tempdir()
            .expect("temp dir");
        let path = dir.path().join("log");
        let socket = UnixDatagram::bind(&path).expect("bind the test syslog socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("read timeout");
        let config = format!(
            "[audit]\nsyslog = true\nsyslog_socket = {:?}\n{extra}",
            path.display().to_string()
        );
        std::fs::write(dir.path().join("config.toml"), config).expect("write the system config");
        Admin { dir, socket }
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    /// Every datagram received so far (each a whole RFC 5424 frame).
    fn drain(&self) -> Vec<String> {
        let mut frames = Vec::new();
        let mut buf = vec![0u8; 256 * 1024];
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            match self.socket.recv(&mut buf) {
                Ok(n) => frames.push(String::from_utf8(buf[..n].to_vec()).expect("UTF-8 frame")),
                Err(_) => break,
            }
        }
        frames
    }
}

/// A binary's command with the administrator's configuration.
fn command(cluster: &Cluster, admin: &Admin, bin: &str) -> Command {
    let mut cmd = cluster.command(bin);
    cmd.env("SMSSH_TEST_SYSTEM_CONFIG", admin.config());
    cmd
}

/// Checks an RFC 5424 frame's header (facility authpriv, severity by outcome, the program's
/// name and pid) and returns its JSON record.
fn parse_frame(frame: &str, program: &str) -> Value {
    let rest = frame.strip_prefix('<').expect("frame starts with <PRI>");
    let (pri, rest) = rest.split_once('>').expect("PRI closes");
    let pri: u32 = pri.parse().expect("numeric PRI");
    assert_eq!(pri / 8, 10, "facility authpriv: {frame}");
    let fields: Vec<&str> = rest.splitn(7, ' ').collect();
    assert_eq!(fields.len(), 7, "header fields: {frame}");
    assert_eq!(fields[0], "1", "version: {frame}");
    assert!(
        fields[1].ends_with('Z') && fields[1].contains('T'),
        "timestamp: {frame}"
    );
    assert_ne!(fields[2], "", "hostname: {frame}");
    assert_eq!(fields[3], program, "APP-NAME: {frame}");
    assert!(fields[4].parse::<u32>().is_ok(), "PROCID: {frame}");
    let (structured, message) = fields[6].split_at(1);
    assert_eq!(structured, "-", "no structured data: {frame}");
    let record: Value = serde_json::from_str(message.trim_start()).expect("JSON record");
    assert_eq!(fields[5], record["action"]["type"], "MSGID: {frame}");
    let severity = pri % 8;
    match record["outcome"].as_str() {
        Some("ok") => assert_eq!(severity, 6, "{frame}"),
        Some("failed") => assert_eq!(severity, 4, "{frame}"),
        other => panic!("outcome {other:?}: {frame}"),
    }
    record
}

/// The base64 body lines of an OpenSSH or PEM private key.
fn key_body_lines(private_key: &str) -> Vec<String> {
    private_key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 16)
        .map(str::to_owned)
        .collect()
}

/// Fails if `text` holds any sign of key material.
fn assert_no_key_text(text: &str, private_keys: &[String]) {
    assert!(!text.contains("PRIVATE KEY"), "key header in:\n{text}");
    for key in private_keys {
        for line in key_body_lines(key) {
            assert!(!text.contains(&line), "key text {line} in:\n{text}");
            // The JSON form of the secret escapes nothing in base64, but a record could also
            // hold the key with its newlines escaped.
            assert!(!text.contains(&line[..16]), "key prefix in:\n{text}");
        }
    }
}

fn sha256_of(path: &Path) -> String {
    let out = run(Command::new("sha256sum").arg(path));
    assert_success(&out);
    stdout(&out)
        .split_whitespace()
        .next()
        .expect("a digest")
        .to_owned()
}

fn fingerprint_of(key: &Path) -> String {
    let out = run(Command::new("ssh-keygen").arg("-lf").arg(key));
    assert_success(&out);
    stdout(&out)
        .split_whitespace()
        .nth(1)
        .expect("a fingerprint")
        .to_owned()
}

/// The facts every record of a login with the cluster's key holds.
fn assert_cluster_key(record: &Value, cluster: &Cluster) {
    let current = cluster
        .moto
        .version_with_stage(SECRET_ID, "AWSCURRENT")
        .expect("a current version");
    assert_eq!(record["version_id"], current.as_str(), "{record}");
    assert_eq!(
        record["fingerprint"],
        fingerprint_of(&cluster.key_path).as_str(),
        "{record}"
    );
    let arn = record["secret_arn"].as_str().expect("an ARN");
    assert!(
        arn.starts_with("arn:aws:secretsmanager:us-east-1:") && arn.contains(":secret:/dev/ssh"),
        "{record}"
    );
    assert_eq!(record["uid"], nix_uid(), "{record}");
    assert_eq!(record["port"], cluster.port, "{record}");
}

fn nix_uid() -> u32 {
    let out = run(Command::new("id").arg("-u"));
    stdout(&out).trim().parse().expect("numeric uid")
}

fn assert_clean_run(out: &Output) {
    assert_success(out);
    assert!(
        !stderr(out).contains("audit"),
        "no audit warning expected:\n{}",
        describe(out)
    );
}

#[test]
fn smscp_and_smssh_record_each_host_action_in_syslog_without_key_text() {
    let mut cluster = Cluster::new(3);
    cluster.workers[2].stop();
    let admin = Admin::requiring_syslog("");
    let port = cluster.port.to_string();
    let mut all_frames = Vec::new();

    // An upload: one record whose SHA-256 is the file's.
    let content: Vec<u8> = (0..3_000_000u32).map(|i| (i * 31 % 253) as u8).collect();
    let local = cluster.scratch_file("up.bin", &content);
    let out = run(command(&cluster, &admin, "smscp")
        .args(["-q", "-o", "BatchMode=yes"])
        .arg(&local)
        .arg("127.0.0.2:up.bin"));
    assert_clean_run(&out);
    let frames = admin.drain();
    assert_eq!(frames.len(), 1, "{frames:#?}");
    let upload = parse_frame(&frames[0], "smscp");
    assert_eq!(upload["action"]["type"], "upload");
    assert_eq!(upload["action"]["local"], local.display().to_string());
    assert_eq!(upload["action"]["remote"], "up.bin");
    assert_eq!(upload["action"]["bytes"], content.len());
    assert_eq!(upload["action"]["sha256"], sha256_of(&local).as_str());
    assert_eq!(
        sha256_of(&cluster.workers[0].sftp_home().join("up.bin")),
        sha256_of(&local)
    );
    assert_eq!(upload["outcome"], "ok");
    assert_eq!(upload["host"], "127.0.0.2");
    assert_eq!(upload["program"], "smscp");
    assert_eq!(
        upload["argv"][upload["argv"].as_array().unwrap().len() - 1],
        "127.0.0.2:up.bin"
    );
    assert_cluster_key(&upload, &cluster);
    all_frames.extend(frames);

    // A download of the same file back.
    let back = cluster.scratch.path().join("back.bin");
    let out = run(command(&cluster, &admin, "smscp")
        .args(["-q", "-o", "BatchMode=yes", "127.0.0.2:up.bin"])
        .arg(&back));
    assert_clean_run(&out);
    let frames = admin.drain();
    assert_eq!(frames.len(), 1, "{frames:#?}");
    let download = parse_frame(&frames[0], "smscp");
    assert_eq!(download["action"]["type"], "download");
    assert_eq!(download["action"]["remote"], "up.bin");
    assert_eq!(download["action"]["local"], back.display().to_string());
    assert_eq!(download["action"]["sha256"], sha256_of(&local).as_str());
    assert_eq!(download["action"]["bytes"], content.len());
    assert_cluster_key(&download, &cluster);
    all_frames.extend(frames);

    // A copy to a host that is down: one failed record naming it.
    let out = run(command(&cluster, &admin, "smscp")
        .args(["-q", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5"])
        .arg(&local)
        .arg("127.0.0.4:up.bin"));
    assert_exit_code(&out, 1);
    let frames = admin.drain();
    assert_eq!(frames.len(), 1, "{frames:#?}");
    let refused = parse_frame(&frames[0], "smscp");
    assert_eq!(refused["outcome"], "failed");
    assert_eq!(refused["host"], "127.0.0.4");
    assert!(
        refused["error"].as_str().unwrap().contains("127.0.0.4"),
        "{refused}"
    );
    all_frames.extend(frames);

    // One command on one host: its command line and exit status.
    let out = run(command(&cluster, &admin, "smssh").args([
        "-o",
        "BatchMode=yes",
        "127.0.0.2",
        "echo audited; exit 3",
    ]));
    assert_exit_code(&out, 3);
    let frames = admin.drain();
    assert_eq!(frames.len(), 1, "{frames:#?}");
    let exec = parse_frame(&frames[0], "smssh");
    assert_eq!(exec["action"]["type"], "exec");
    assert_eq!(exec["action"]["command"], "echo audited; exit 3");
    assert_eq!(exec["exit_status"], 3);
    assert_eq!(exec["outcome"], "ok");
    assert_eq!(exec["login"], "root");
    assert_cluster_key(&exec, &cluster);
    all_frames.extend(frames);

    // A fan-out to three hosts, one down: one record per host, the down one failed.
    let out = run(command(&cluster, &admin, "smssh").args([
        "-o",
        "BatchMode=yes",
        "--connect-timeout",
        "5",
        "-p",
        &port,
        "-w",
        "127.0.0.[2-4]",
        "--",
        "true",
    ]));
    assert_exit_code(&out, 255);
    let frames = admin.drain();
    assert_eq!(frames.len(), 3, "{frames:#?}");
    let mut records: Vec<Value> = frames.iter().map(|f| parse_frame(f, "smssh")).collect();
    records.sort_by_key(|r| r["host"].as_str().unwrap_or_default().to_owned());
    for record in &records[..2] {
        assert_eq!(record["outcome"], "ok", "{record}");
        assert_eq!(record["exit_status"], 0, "{record}");
        assert_eq!(record["action"]["command"], "true", "{record}");
        assert_cluster_key(record, &cluster);
    }
    assert_eq!(records[2]["host"], "127.0.0.4");
    assert_eq!(records[2]["outcome"], "failed");
    assert_eq!(records[2]["action"]["command"], "true");
    assert!(records[2]["error"].as_str().unwrap().contains("127.0.0.4"));
    assert_eq!(records[2]["version_id"], Value::Null);
    all_frames.extend(frames);

    assert_no_key_text(&all_frames.join("\n"), &[cluster.private_key.clone()]);
}

#[test]
fn a_rotation_records_every_step_and_each_workers_edit_in_both_destinations() {
    let cluster = Cluster::new(2);
    let admin = Admin::requiring_syslog("");
    let old = cluster
        .moto
        .version_with_stage(SECRET_ID, "AWSCURRENT")
        .expect("current");
    let file = cluster.scratch.path().join("rotation.json");
    let out = run(command(&cluster, &admin, "smssh")
        .args(["rotate", "-q", "-w", "127.0.0.[2-3]", "--audit-log"])
        .arg(&file));
    assert_clean_run(&out);
    let new = cluster
        .moto
        .version_with_stage(SECRET_ID, "AWSCURRENT")
        .expect("current");
    assert_ne!(new, old);

    let text = std::fs::read_to_string(&file).expect("the audit file");
    let from_file: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect();
    let from_syslog: Vec<Value> = admin
        .drain()
        .iter()
        .map(|f| parse_frame(f, "smssh"))
        .collect();
    let strip_time = |records: &[Value]| -> Vec<Value> {
        records
            .iter()
            .map(|r| {
                let mut r = r.clone();
                r["time"] = Value::Null;
                r
            })
            .collect()
    };
    assert_eq!(strip_time(&from_file), strip_time(&from_syslog));

    let steps: Vec<(&str, &str)> = from_file
        .iter()
        .filter(|r| r["action"]["type"] == "rotation")
        .map(|r| {
            (
                r["action"]["step"].as_str().unwrap(),
                r["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("createSecret", "ok"),
            ("setSecret", "ok"),
            ("testSecret", "ok"),
            ("finishSecret", "ok")
        ]
    );
    for record in from_file
        .iter()
        .filter(|r| r["action"]["type"] == "rotation")
    {
        assert_eq!(record["action"]["version_id"], new.as_str());
        assert!(record["secret_arn"]
            .as_str()
            .unwrap()
            .contains(":secret:/dev/ssh"));
    }
    let edits = |step: &str| -> Vec<&Value> {
        from_file
            .iter()
            .filter(|r| r["action"]["type"] == "authorized_keys" && r["action"]["step"] == step)
            .collect()
    };
    let set = edits("setSecret");
    assert_eq!(set.len(), 2, "{text}");
    for record in &set {
        assert_eq!(record["outcome"], "ok");
        assert_eq!(record["action"]["changed"], true);
        assert_eq!(record["action"]["versions"], serde_json::json!([old, new]));
        // The edit names the key that logged in to make it: the current one, then.
        assert_eq!(record["version_id"], old.as_str(), "{record}");
        assert_eq!(
            record["fingerprint"],
            fingerprint_of(&cluster.key_path).as_str(),
            "{record}"
        );
    }
    let finish = edits("finishSecret");
    assert_eq!(finish.len(), 2, "{text}");
    let mut hosts: Vec<&str> = finish.iter().map(|r| r["host"].as_str().unwrap()).collect();
    hosts.sort_unstable();
    assert_eq!(hosts, ["127.0.0.2", "127.0.0.3"]);
    for record in &finish {
        assert_eq!(record["outcome"], "ok");
        assert_eq!(record["action"]["versions"], serde_json::json!([new]));
        assert_eq!(
            record["action"]["retired_versions"],
            serde_json::json!([old])
        );
        assert_eq!(record["port"], cluster.port);
        // finishSecret runs over testSecret's sessions, which logged in with the new key.
        assert_eq!(record["version_id"], new.as_str(), "{record}");
        let fingerprint = record["fingerprint"].as_str().expect("a fingerprint");
        assert!(fingerprint.starts_with("SHA256:"), "{record}");
        assert_ne!(fingerprint, fingerprint_of(&cluster.key_path), "{record}");
    }

    let secret: Value =
        serde_json::from_str(&cluster.moto.get_secret_string(SECRET_ID)).expect("secret JSON");
    let new_key = secret["PrivateKey"]
        .as_str()
        .expect("PrivateKey")
        .to_owned();
    assert_no_key_text(&text, &[cluster.private_key.clone(), new_key]);
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn concurrent_runs_append_whole_lines_to_one_file() {
    let cluster = Cluster::new(2);
    let admin = Admin::requiring_syslog("");
    let file = cluster.scratch.path().join("shared.json");
    let port = cluster.port.to_string();
    let runs: Vec<Running> = (0..4)
        .map(|i| {
            spawn(
                command(&cluster, &admin, "smssh")
                    .args(["-o", "BatchMode=yes", "-p", &port, "--audit-log"])
                    .arg(&file)
                    .args(["-w", "127.0.0.[2-3]", "--", &format!("echo run{i}")]),
            )
        })
        .collect();
    for running in runs {
        let out = running.wait_timeout(RUN_TIMEOUT).expect("a run ended");
        assert_clean_run(&out);
    }
    let text = std::fs::read_to_string(&file).expect("the audit file");
    let records: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("whole JSON lines"))
        .collect();
    assert_eq!(records.len(), 8, "{text}");
    for i in 0..4 {
        let command = format!("echo run{i}");
        let count = records
            .iter()
            .filter(|r| r["action"]["command"] == command.as_str())
            .count();
        assert_eq!(count, 2, "{text}");
    }
    // The same records went to syslog: one datagram each.
    assert_eq!(admin.drain().len(), 8);
}

#[test]
fn the_administrators_destinations_cannot_be_turned_off_and_fail_closed() {
    let cluster = Cluster::new(1);
    // The user turns syslog off: the administrator's still gets the record.
    let admin = Admin::requiring_syslog("");
    let user_config = cluster.home.path().join(".config/smssh");
    std::fs::create_dir_all(&user_config).unwrap();
    std::fs::write(user_config.join("config.toml"), "[audit]\nsyslog = false\n").unwrap();
    let out =
        run(command(&cluster, &admin, "smssh").args(["-o", "BatchMode=yes", "127.0.0.2", "true"]));
    assert_clean_run(&out);
    assert_eq!(admin.drain().len(), 1);

    // An administrator's file that cannot be opened: nothing runs, one line, ssh's and scp's
    // exit codes.
    let admin = Admin::requiring_syslog("file = \"/nonexistent/dir/audit.json\"\n");
    let marker = cluster.workers[0].sftp_home().join("marker");
    let out = run(command(&cluster, &admin, "smssh").args([
        "-o",
        "BatchMode=yes",
        "127.0.0.2",
        "touch \"$HOME/marker\"",
    ]));
    assert_exit_code(&out, 255);
    assert_eq!(stderr(&out).lines().count(), 1, "{}", describe(&out));
    assert_stderr_contains(
        &out,
        "smssh: audit: /nonexistent/dir/audit.json: No such file or directory",
    );
    assert_stderr_contains(&out, "the administrator requires");
    assert!(!marker.exists(), "the command ran unaudited");
    let local = cluster.scratch_file("x.txt", b"x");
    let out = run(command(&cluster, &admin, "smscp")
        .args(["-o", "BatchMode=yes"])
        .arg(&local)
        .arg("127.0.0.2:x.txt"));
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "smscp: audit: ");
    assert!(!cluster.workers[0].sftp_home().join("x.txt").exists());
    assert_eq!(admin.drain().len(), 0);

    // A required syslog socket nobody listens on fails closed too.
    let admin = Admin::requiring_syslog("");
    std::fs::remove_file(admin.dir.path().join("log")).unwrap();
    let out = run(command(&cluster, &admin, "smssh").args([
        "-o",
        "BatchMode=yes",
        "127.0.0.2",
        "touch \"$HOME/marker\"",
    ]));
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "smssh: audit: syslog socket ");
    assert!(!marker.exists(), "the command ran unaudited");

    // A user's own file that cannot be opened is a warning; the command runs.
    let admin = Admin::requiring_syslog("");
    let out = run(command(&cluster, &admin, "smssh").args([
        "-o",
        "BatchMode=yes",
        "--audit-log",
        "/nonexistent/dir/mine.json",
        "127.0.0.2",
        "touch \"$HOME/marker\"",
    ]));
    assert_success(&out);
    assert_stderr_contains(&out, "warning: audit: /nonexistent/dir/mine.json");
    assert!(marker.exists());
    assert_eq!(admin.drain().len(), 1);
}

/// Regression (issue 14): copies between two hosts (`-3`), `-W` forwards and sources refused
/// before any byte moved wrote no record at all.
#[test]
fn relays_stdio_forwards_and_refused_sources_are_recorded() {
    let cluster = Cluster::new(2);
    let admin = Admin::requiring_syslog("");
    let port = cluster.port.to_string();
    let content: Vec<u8> = (0..1_500_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let local = cluster.scratch_file("relay.bin", &content);
    std::fs::write(cluster.workers[0].sftp_home().join("relay.bin"), &content)
        .expect("seed the source host");

    // A copy from one host to another through this one: one record on each host, each with
    // the key that logged in there and the SHA-256 of the bytes that passed.
    let out = run(command(&cluster, &admin, "smscp")
        .args(["-q", "-o", "BatchMode=yes", "-P", &port])
        .args(["127.0.0.2:relay.bin", "127.0.0.3:relayed.bin"]));
    assert_clean_run(&out);
    assert_eq!(
        sha256_of(&cluster.workers[1].sftp_home().join("relayed.bin")),
        sha256_of(&local)
    );
    let mut relays: Vec<Value> = admin
        .drain()
        .iter()
        .map(|f| parse_frame(f, "smscp"))
        .collect();
    relays.sort_by_key(|r| r["host"].as_str().unwrap_or_default().to_owned());
    assert_eq!(relays.len(), 2, "{relays:#?}");
    for (record, host) in relays.iter().zip(["127.0.0.2", "127.0.0.3"]) {
        assert_eq!(record["host"], host, "{record}");
        assert_eq!(record["outcome"], "ok", "{record}");
        assert_eq!(record["action"]["type"], "relay", "{record}");
        assert_eq!(record["action"]["from"], "127.0.0.2:relay.bin", "{record}");
        assert_eq!(record["action"]["to"], "127.0.0.3:relayed.bin", "{record}");
        assert_eq!(record["action"]["bytes"], content.len(), "{record}");
        assert_eq!(record["action"]["sha256"], sha256_of(&local).as_str());
        assert_cluster_key(record, &cluster);
    }

    // A source that does not exist, on a host that was logged in to: a failed upload record
    // naming the source, with the key the session used.
    let missing = cluster.scratch.path().join("missing.bin");
    let out = run(command(&cluster, &admin, "smscp")
        .args(["-q", "-o", "BatchMode=yes", "-P", &port])
        .arg(&missing)
        .arg("127.0.0.2:missing.bin"));
    assert_exit_code(&out, 1);
    let frames = admin.drain();
    assert_eq!(frames.len(), 1, "{frames:#?}");
    let refused = parse_frame(&frames[0], "smscp");
    assert_eq!(refused["outcome"], "failed", "{refused}");
    assert_eq!(refused["action"]["type"], "upload");
    assert_eq!(refused["action"]["local"], missing.display().to_string());
    assert_eq!(refused["action"]["bytes"], 0);
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("No such file or directory"),
        "{refused}"
    );
    assert_cluster_key(&refused, &cluster);

    // The same in a fan-out: the source is refused once, before any host, in one record
    // without a host, and the usable source still reaches every host.
    let out = run(command(&cluster, &admin, "smscp")
        .args([
            "-q",
            "-o",
            "BatchMode=yes",
            "-P",
            &port,
            "-w",
            "127.0.0.[2-3]",
        ])
        .arg(&missing)
        .arg(&local)
        .arg("."));
    assert_exit_code(&out, 1);
    let records: Vec<Value> = admin
        .drain()
        .iter()
        .map(|f| parse_frame(f, "smscp"))
        .collect();
    let hostless: Vec<&Value> = records.iter().filter(|r| r["host"].is_null()).collect();
    assert_eq!(hostless.len(), 1, "{records:#?}");
    assert_eq!(hostless[0]["outcome"], "failed");
    assert_eq!(
        hostless[0]["action"]["local"],
        missing.display().to_string()
    );
    assert_eq!(
        records
            .iter()
            .filter(|r| r["outcome"] == "ok" && r["action"]["type"] == "upload")
            .count(),
        2,
        "{records:#?}"
    );
    for worker in &cluster.workers {
        assert_eq!(
            sha256_of(&worker.sftp_home().join("relay.bin")),
            sha256_of(&local)
        );
    }

    // `-W` as another ssh's ProxyCommand: the forward is a record on the host it went
    // through, naming where it went; the login through it is the outer run's own record.
    let proxy = format!(
        "ProxyCommand={} -o BatchMode=yes -p {port} -W %h:%p 127.0.0.2",
        env!("CARGO_BIN_EXE_smssh")
    );
    let out = run(command(&cluster, &admin, "smssh")
        .args(["-o", "BatchMode=yes", "-p", &port, "-o", &proxy])
        .args(["127.0.0.3", "echo through"]));
    assert_clean_run(&out);
    assert_eq!(stdout(&out), "through\n");
    let records: Vec<Value> = admin
        .drain()
        .iter()
        .map(|f| parse_frame(f, "smssh"))
        .collect();
    assert_eq!(records.len(), 2, "{records:#?}");
    let forward = records
        .iter()
        .find(|r| r["action"]["type"] == "stdio_forward")
        .expect("a stdio_forward record");
    assert_eq!(forward["host"], "127.0.0.2", "{forward}");
    assert_eq!(forward["outcome"], "ok", "{forward}");
    assert_eq!(forward["action"]["to"], format!("127.0.0.3:{port}"));
    assert_cluster_key(forward, &cluster);
    let exec = records
        .iter()
        .find(|r| r["action"]["type"] == "exec")
        .expect("the login's exec record");
    assert_eq!(exec["host"], "127.0.0.3", "{exec}");
}
