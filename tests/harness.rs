//! Self-test of the integration-test harness in `tests/common`, using only
//! OpenSSH and the AWS SDK, so it holds whether or not the smssh binaries
//! work yet.

mod common;

use std::fs;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::{
    assert_failure, assert_stderr_contains, assert_stdout_eq, assert_success, run, run_with_stdin,
    run_with_timeout, spawn, Cluster, Moto, SECRET_ID,
};

#[test]
fn ssh_runs_a_command_on_every_worker() {
    let started = Instant::now();
    let cluster = Cluster::new(3);
    eprintln!("3-worker cluster ready in {:?}", started.elapsed());
    assert_eq!(cluster.addrs(), ["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    for worker in &cluster.workers {
        assert_eq!(
            worker.port(),
            cluster.port,
            "all workers share the cluster's port"
        );
        let output = run(cluster.openssh("ssh").args([worker.addr(), "echo", "ok"]));
        assert_success(&output);
        assert_stdout_eq(&output, "ok\n");
    }
}

#[test]
fn scp_copies_a_file_to_a_worker() {
    let cluster = Cluster::new(1);
    let content: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let local = cluster.scratch_file("payload.bin", &content);
    let remote = cluster.workers[0].dir().join("copied.bin");
    let target = format!("{}:{}", cluster.workers[0].addr(), remote.display());
    let output = run(cluster.openssh("scp").arg(&local).arg(&target));
    assert_success(&output);
    assert_eq!(fs::read(&remote).expect("the copied file exists"), content);
}

#[test]
fn a_stopped_worker_refuses_connections_and_can_restart() {
    let mut cluster = Cluster::new(1);
    let addr = cluster.workers[0].socket_addr();
    cluster.workers[0].stop();
    cluster.workers[0].stop();
    let error = TcpStream::connect(addr).expect_err("a stopped worker must not accept");
    assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused);
    let output = run(cluster
        .openssh("ssh")
        .args([cluster.workers[0].addr(), "true"]));
    assert_failure(&output);
    assert_stderr_contains(&output, "Connection refused");

    let started = Instant::now();
    cluster.workers[0].start();
    eprintln!("worker restarted in {:?}", started.elapsed());
    let output = run(cluster
        .openssh("ssh")
        .args([cluster.workers[0].addr(), "echo", "back"]));
    assert_success(&output);
    assert_stdout_eq(&output, "back\n");
}

#[test]
fn a_regenerated_host_key_fails_strict_checking() {
    let mut cluster = Cluster::new(1);
    let old_line = cluster.workers[0].host_key_line();
    assert!(old_line.starts_with(&format!("[127.0.0.2]:{} ssh-ed25519 AAAA", cluster.port)));
    cluster.workers[0].regenerate_host_key();
    assert_ne!(cluster.workers[0].host_key_line(), old_line);

    let output = run(cluster
        .openssh("ssh")
        .args([cluster.workers[0].addr(), "true"]));
    assert_failure(&output);
    assert_stderr_contains(&output, "REMOTE HOST IDENTIFICATION HAS CHANGED");

    cluster.refresh_known_hosts();
    let output = run(cluster
        .openssh("ssh")
        .args([cluster.workers[0].addr(), "true"]));
    assert_success(&output);
}

#[test]
fn a_paused_worker_hangs_until_resumed() {
    let cluster = Cluster::new(1);
    let worker = &cluster.workers[0];
    worker.pause();
    let hung = run_with_timeout(
        cluster.openssh("ssh").args([worker.addr(), "echo", "late"]),
        Duration::from_secs(2),
    );
    let partial = hung.expect_err("ssh to a paused worker must hang");
    assert!(
        common::killed_by_signal(&partial.status),
        "the hung ssh was killed"
    );
    worker.resume();
    let output = run(cluster.openssh("ssh").args([worker.addr(), "echo", "late"]));
    assert_success(&output);
    assert_stdout_eq(&output, "late\n");
}

#[test]
fn the_key_secret_matches_the_key_file() {
    let cluster = Cluster::with_key_type(1, "ecdsa");
    let secret: serde_json::Value =
        serde_json::from_str(&cluster.moto.get_secret_string(SECRET_ID)).expect("secret is JSON");
    let private = fs::read_to_string(&cluster.key_path).expect("key file readable");
    let public = fs::read_to_string(format!("{}.pub", cluster.key_path.display()))
        .expect("public key file readable");
    assert_eq!(secret["PrivateKey"].as_str(), Some(private.as_str()));
    assert_eq!(secret["PublicKey"].as_str(), Some(public.trim_end()));
    assert!(public.starts_with("ecdsa-sha2-nistp256 "));
    assert!(public.trim_end().ends_with(" smssh-test"));
    assert!(cluster.workers[0]
        .authorized_keys()
        .contains(public.trim_end()));
    let output = run(cluster
        .openssh("ssh")
        .args([cluster.workers[0].addr(), "echo", "ok"]));
    assert_success(&output);
}

#[test]
fn secret_versions_and_stages() {
    let started = Instant::now();
    let moto = Moto::start();
    eprintln!("moto ready in {:?}", started.elapsed());
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));

    let first = moto.put_secret_string("s", "one");
    let second = moto.put_secret_value("s", "two");
    assert_ne!(first, second);
    assert_eq!(moto.get_secret_string("s"), "two");
    assert_eq!(moto.get_secret_string_at_stage("s", "AWSPREVIOUS"), "one");
    moto.update_stage("s", "AWSCURRENT", &first, Some(&second));
    assert_eq!(moto.get_secret_string("s"), "one");
    moto.update_stage("s", "AWSPENDING", &second, None);
    assert_eq!(moto.get_secret_string_at_stage("s", "AWSPENDING"), "two");

    moto.put_secret_binary("b", b"\x00\x01binary");
    assert_eq!(moto.get_secret_binary("b"), b"\x00\x01binary");
    let third = moto.put_secret_string("s", "three");
    assert_ne!(third, second);
    assert_eq!(moto.get_secret_string("s"), "three");
    assert_eq!(moto.get_secret_string_at_stage("s", "AWSCURRENT"), "three");
    assert_eq!(moto.get_secret_string_at_stage("s", "AWSPREVIOUS"), "one");
}

#[test]
fn generated_keys_have_the_requested_format() {
    let cluster = Cluster::new(1);
    let cases = [
        (
            "ed25519",
            "openssh",
            None,
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "ssh-ed25519 ",
        ),
        (
            "rsa",
            "pem",
            None,
            "-----BEGIN RSA PRIVATE KEY-----",
            "ssh-rsa ",
        ),
        (
            "ecdsa",
            "pem",
            None,
            "-----BEGIN EC PRIVATE KEY-----",
            "ecdsa-sha2-nistp256 ",
        ),
        (
            "ecdsa-384",
            "pkcs8",
            None,
            "-----BEGIN PRIVATE KEY-----",
            "ecdsa-sha2-nistp384 ",
        ),
        (
            "ecdsa",
            "pkcs8",
            Some("secret1"),
            "-----BEGIN ENCRYPTED PRIVATE KEY-----",
            "ecdsa-",
        ),
        (
            "ed25519",
            "openssh",
            Some("secret1"),
            "-----BEGIN OPENSSH PRIVATE KEY-----",
            "ssh-",
        ),
    ];
    for (kind, format, passphrase, header, public_prefix) in cases {
        let (private, public) = cluster.generate_key(kind, format, passphrase);
        assert!(private.starts_with(header), "{kind} {format}: {private}");
        assert!(
            public.starts_with(public_prefix),
            "{kind} {format}: {public}"
        );
    }
    let (_, public, path) = cluster.generate_key_file("ed25519", "openssh", None);
    cluster.workers[0].authorize(&public);
    let output = run(cluster
        .openssh("ssh")
        .arg("-i")
        .arg(&path)
        .args([cluster.workers[0].addr(), "true"]));
    assert_success(&output);
}

#[test]
fn binary_commands_get_a_clean_environment() {
    let cluster = Cluster::new(1);
    for bin in ["smscp", "smssh"] {
        let cmd = cluster.command(bin);
        assert!(
            std::path::Path::new(cmd.get_program()).is_file(),
            "{bin} was built"
        );
        let envs: Vec<(String, String)> = cmd
            .get_envs()
            .filter_map(|(k, v)| Some((k.to_str()?.to_owned(), v?.to_str()?.to_owned())))
            .collect();
        let get = |key: &str| envs.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        assert_eq!(get("HOME"), cluster.home.path().to_str());
        assert_eq!(
            get("AWS_ENDPOINT_URL"),
            Some(cluster.moto.endpoint().as_str())
        );
        assert_eq!(get("SMSSH_SECRET_ID"), Some(SECRET_ID));
        assert_eq!(get("AWS_REGION"), Some("us-east-1"));
    }
    let config = fs::read_to_string(cluster.ssh_config_path()).expect("config written");
    assert!(config.contains(&format!("Port {}", cluster.port)));
    let known = fs::read_to_string(cluster.known_hosts_path()).expect("known_hosts written");
    assert_eq!(known, cluster.workers[0].host_key_line() + "\n");
}

#[test]
fn stdin_reaches_the_remote_command() {
    let cluster = Cluster::new(1);
    let output = run_with_stdin(
        cluster
            .openssh("ssh")
            .args([cluster.workers[0].addr(), "cat"]),
        b"through stdin\n",
    );
    assert_success(&output);
    assert_stdout_eq(&output, "through stdin\n");
}

#[test]
fn stopping_a_worker_ends_its_open_sessions() {
    let mut cluster = Cluster::new(1);
    let marker = cluster.workers[0].dir().join("started");
    let remote = format!("touch {} && sleep 60", marker.display());
    let session = spawn(
        cluster
            .openssh("ssh")
            .args([cluster.workers[0].addr(), &remote]),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the remote command never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.workers[0].stop();
    let output = session
        .wait_timeout(Duration::from_secs(10))
        .expect("ssh must notice that the worker died");
    assert_failure(&output);
}
