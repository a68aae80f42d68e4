//! smssh against real sshd workers and moto: commands, streams, exit codes, and every way a
//! login can fail.

mod common;

use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;

fn smssh(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    run(cluster.command("smssh").args(args))
}

/// The SHA256 fingerprint of a public key file, as ssh-keygen prints it.
fn fingerprint_of(path: &std::path::Path) -> String {
    let out = run(std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(path));
    assert_success(&out);
    stdout(&out)
        .split_whitespace()
        .nth(1)
        .expect("fingerprint field")
        .to_owned()
}

#[test]
fn command_output_streams_and_exit_status_is_the_remote_one() {
    let cluster = Cluster::new(1);
    let out = smssh(&cluster, &["127.0.0.2", "echo out; echo err >&2; exit 7"]);
    assert_exit_code(&out, 7);
    assert_stdout_eq(&out, "out\n");
    assert_stderr_contains(&out, "err");
}

#[test]
fn arguments_after_the_destination_are_the_command_even_with_dashes() {
    let cluster = Cluster::new(1);
    let out = smssh(&cluster, &["127.0.0.2", "printf", "'%s-%s\\n'", "-a", "b"]);
    assert_success(&out);
    assert_stdout_eq(&out, "-a-b\n");
}

#[test]
fn stdin_is_forwarded_and_n_gives_end_of_file() {
    let cluster = Cluster::new(1);
    let mut child = cluster
        .command("smssh")
        .args(["127.0.0.2", "wc -c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start smssh");
    let payload = vec![b'x'; 300_000];
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(&payload)
        .expect("write stdin");
    let out = child.wait_with_output().expect("wait smssh");
    assert_success(&out);
    assert_eq!(stdout(&out).trim(), "300000");

    let out = run(cluster
        .command("smssh")
        .args(["-n", "127.0.0.2", "cat; echo done"]));
    assert_success(&out);
    assert_stdout_eq(&out, "done\n");
}

#[test]
fn a_remote_signal_gives_128_plus_its_number() {
    let cluster = Cluster::new(1);
    let out = smssh(&cluster, &["127.0.0.2", "kill -TERM $$"]);
    assert_exit_code(&out, 143);
}

#[test]
fn login_as_user_at_host_and_with_l_and_p() {
    let cluster = Cluster::new(1);
    let port = cluster.port.to_string();
    let out = smssh(
        &cluster,
        &[
            "-F",
            "none",
            "-p",
            &port,
            "-l",
            "root",
            "127.0.0.2",
            "id -un",
        ],
    );
    assert_success(&out);
    assert_stdout_eq(&out, "root\n");
    let uri = format!("ssh://root@127.0.0.2:{port}");
    let out = smssh(&cluster, &["-F", "none", &uri, "id -un"]);
    assert_success(&out);
    assert_stdout_eq(&out, "root\n");
}

#[test]
fn ssh_config_aliases_and_o_options_apply() {
    let cluster = Cluster::new(1);
    let config = cluster.scratch_file(
        "config",
        format!(
            "Host worker1\n  HostName 127.0.0.2\n  Port {}\n  User root\n",
            cluster.port
        )
        .as_bytes(),
    );
    let config = config.display().to_string();
    let out = smssh(&cluster, &["-F", &config, "worker1", "echo via-alias"]);
    assert_success(&out);
    assert_stdout_eq(&out, "via-alias\n");
    // -o beats the file: the wrong port must make it fail.
    let out = smssh(
        &cluster,
        &["-F", &config, "-o", "Port=1", "worker1", "true"],
    );
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "port 1: connection refused");
    let out = smssh(&cluster, &["-o", "NoSuchOption=yes", "127.0.0.2", "true"]);
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "NoSuchOption");
}

#[test]
fn every_key_format_in_every_secret_layout_logs_in() {
    let cluster = Cluster::new(1);
    let worker = &cluster.workers[0];
    let cases = [
        ("rsa", "pem", None),
        ("rsa", "pkcs8", None),
        ("rsa", "openssh", None),
        ("ecdsa", "openssh", None),
        ("ecdsa-384", "pem", None),
        ("ed25519", "openssh", Some("correct horse")),
        ("rsa", "pkcs8", Some("correct horse")),
    ];
    for (i, (kind, format, passphrase)) in cases.iter().enumerate() {
        let (private, public) = cluster.generate_key(kind, format, *passphrase);
        worker.authorize(&public);
        let name = format!("/test/key{i}");
        let mut value = serde_json::json!({ "PrivateKey": private, "PublicKey": public });
        if let Some(p) = passphrase {
            value["Passphrase"] = serde_json::Value::String((*p).to_owned());
        }
        cluster.moto.put_secret_string(&name, &value.to_string());
        let out = smssh(&cluster, &["--secret-id", &name, "127.0.0.2", "echo ok"]);
        assert_success(&out);
        assert_stdout_eq(&out, "ok\n");
        // The bare key as SecretString, and as SecretBinary, for unencrypted keys.
        if passphrase.is_none() {
            let bare = format!("{name}-bare");
            cluster.moto.put_secret_string(&bare, &private);
            assert_success(&smssh(
                &cluster,
                &["--secret-id", &bare, "127.0.0.2", "true"],
            ));
            let binary = format!("{name}-binary");
            cluster.moto.put_secret_binary(&binary, private.as_bytes());
            assert_success(&smssh(
                &cluster,
                &["--secret-id", &binary, "127.0.0.2", "true"],
            ));
        }
    }
    // A custom field through --secret-field.
    let custom = serde_json::json!({ "ClusterKey": cluster.private_key }).to_string();
    cluster.moto.put_secret_string("/test/custom", &custom);
    let out = smssh(
        &cluster,
        &[
            "--secret-id",
            "/test/custom",
            "--secret-field",
            "ClusterKey",
            "127.0.0.2",
            "true",
        ],
    );
    assert_success(&out);
}

#[test]
fn secret_problems_each_give_one_clear_line_and_255() {
    let cluster = Cluster::new(1);
    let (encrypted, _) = cluster.generate_key("ed25519", "openssh", Some("secret words"));
    cluster.moto.put_secret_string("/bad/encrypted", &encrypted);
    cluster
        .moto
        .put_secret_string("/bad/notakey", "hello world");
    cluster.moto.put_secret_string("/bad/empty", "{}");
    cluster
        .moto
        .put_secret_string("/bad/nofield", r#"{"PublicKey": "ssh-ed25519 AAAA"}"#);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--secret-id", "/no/such"], "ResourceNotFoundException"),
        (
            vec!["--version-stage", "NOSUCHSTAGE"],
            "ResourceNotFoundException",
        ),
        (
            vec!["--version-id", "00000000-0000-0000-0000-000000000000"],
            "ResourceNotFoundException",
        ),
        (vec!["--secret-field", "Nope"], "no field Nope"),
        (
            vec!["--secret-id", "/bad/nofield"],
            "no field PrivateKey (fields: PublicKey)",
        ),
        (vec!["--secret-id", "/bad/notakey"], "is not a private key"),
        (vec!["--secret-id", "/bad/empty"], "holds no key yet"),
        (
            vec!["--secret-id", "/bad/encrypted"],
            "encrypted and the secret has no Passphrase",
        ),
    ];
    for (flags, expected) in cases {
        let mut args = flags.clone();
        args.extend(["127.0.0.2", "true"]);
        let out = smssh(&cluster, &args);
        assert_exit_code(&out, 255);
        let err = stderr(&out);
        assert!(
            err.contains(expected),
            "{flags:?}: expected {expected:?}\n{}",
            describe(&out)
        );
        assert_eq!(
            err.lines().count(),
            1,
            "{flags:?}: one line only\n{}",
            describe(&out)
        );
        assert!(
            err.starts_with("smssh: secret "),
            "{flags:?}\n{}",
            describe(&out)
        );
    }
    // No secret configured at all.
    let out = run(cluster
        .command("smssh")
        .env_remove("SMSSH_SECRET_ID")
        .args(["127.0.0.2", "true"]));
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "no secret given");
}

#[test]
fn unreachable_endpoint_and_missing_credentials_are_explained() {
    let cluster = Cluster::new(1);
    let dead = format!("http://127.0.0.1:{}", free_port(&["127.0.0.1"]));
    let out = run(cluster
        .command("smssh")
        .env("AWS_ENDPOINT_URL", &dead)
        .args(["127.0.0.2", "true"]));
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "cannot reach Secrets Manager");

    let out = run(cluster
        .command("smssh")
        .env_remove("AWS_ACCESS_KEY_ID")
        .env_remove("AWS_SECRET_ACCESS_KEY")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .args(["127.0.0.2", "true"]));
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "no AWS credentials");
    assert_eq!(stderr(&out).lines().count(), 1, "{}", describe(&out));
}

#[test]
fn connection_refused_and_silent_host_time_out_with_255() {
    let mut cluster = Cluster::new(2);
    cluster.workers[0].stop();
    let out = smssh(&cluster, &["127.0.0.2", "true"]);
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "connection refused");

    cluster.workers[1].pause();
    let started = Instant::now();
    let out = smssh(&cluster, &["-o", "ConnectTimeout=2", "127.0.0.3", "true"]);
    cluster.workers[1].resume();
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "no answer within 2s");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "took {:?}",
        started.elapsed()
    );
}

#[test]
fn changed_host_key_refuses_and_names_both_fingerprints() {
    let mut cluster = Cluster::new(1);
    let old = fingerprint_of(&cluster.workers[0].host_key_path().with_extension("pub"));
    cluster.workers[0].regenerate_host_key();
    let new = fingerprint_of(&cluster.workers[0].host_key_path().with_extension("pub"));
    assert_ne!(old, new);
    for policy in ["yes", "accept-new", "no"] {
        let option = format!("StrictHostKeyChecking={policy}");
        let out = smssh(&cluster, &["-o", &option, "127.0.0.2", "echo must-not-run"]);
        assert_exit_code(&out, 255);
        assert_stderr_contains(&out, "HOST KEY CHANGED");
        assert_stderr_contains(&out, &old);
        assert_stderr_contains(&out, &new);
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn unknown_host_fails_in_batch_mode_and_accept_new_records_it() {
    let cluster = Cluster::new(1);
    std::fs::write(cluster.known_hosts_path(), "").expect("empty known_hosts");
    for extra in [
        vec!["-o", "BatchMode=yes"],
        vec![],
        vec!["-o", "StrictHostKeyChecking=yes"],
    ] {
        let mut args = extra.clone();
        args.extend(["127.0.0.2", "true"]);
        let out = smssh(&cluster, &args);
        assert_exit_code(&out, 255);
        assert_stderr_contains(&out, "host key verification failed");
    }
    let out = smssh(
        &cluster,
        &[
            "-o",
            "StrictHostKeyChecking=accept-new",
            "127.0.0.2",
            "echo first",
        ],
    );
    assert_success(&out);
    // The entry may be hashed (Debian's /etc/ssh/ssh_config sets HashKnownHosts yes, which
    // smssh honours as OpenSSH does), so OpenSSH's own lookup is the judge.
    let recorded = std::fs::read_to_string(cluster.known_hosts_path()).expect("known_hosts");
    let expected = cluster.workers[0].host_key_line();
    let expected_key: Vec<&str> = expected.split_whitespace().skip(1).take(2).collect();
    let found = run(std::process::Command::new("ssh-keygen")
        .arg("-F")
        .arg(format!("[127.0.0.2]:{}", cluster.port))
        .arg("-f")
        .arg(cluster.known_hosts_path()));
    assert_success(&found);
    assert!(
        stdout(&found).contains(&expected_key.join(" ")),
        "known_hosts should hold {expected}, has:\n{recorded}\nssh-keygen -F: {}",
        describe(&found)
    );
    let out = smssh(
        &cluster,
        &["-o", "StrictHostKeyChecking=yes", "127.0.0.2", "echo known"],
    );
    assert_success(&out);
}

#[test]
fn revoked_host_key_is_refused() {
    let cluster = Cluster::new(1);
    let line = cluster.workers[0].host_key_line();
    let key: Vec<&str> = line.split_whitespace().skip(1).take(2).collect();
    let text = format!("{line}\n@revoked * {} {}\n", key[0], key[1]);
    std::fs::write(cluster.known_hosts_path(), text).expect("write known_hosts");
    let out = smssh(&cluster, &["127.0.0.2", "true"]);
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "REVOKED");
}

#[test]
fn host_keys_in_the_secret_verify_hosts_with_nothing_on_disk() {
    let cluster = Cluster::new(1);
    std::fs::write(cluster.known_hosts_path(), "").expect("empty known_hosts");
    let value = serde_json::json!({
        "PrivateKey": cluster.private_key,
        "KnownHosts": cluster.workers[0].host_key_line(),
    });
    cluster
        .moto
        .put_secret_string("/test/with-hosts", &value.to_string());
    let out = smssh(
        &cluster,
        &[
            "--secret-id",
            "/test/with-hosts",
            "-o",
            "StrictHostKeyChecking=yes",
            "127.0.0.2",
            "echo ok",
        ],
    );
    assert_success(&out);
}

#[test]
fn refused_key_is_fetched_again_then_fallback_stage_is_tried() {
    let cluster = Cluster::new(1);
    let old_version = cluster.moto.put_secret_string(
        "/test/rotating",
        &key_secret_json(&cluster.private_key, &cluster.public_key),
    );
    // A new version becomes AWSCURRENT whose key no worker trusts yet; the old one is AWSPREVIOUS.
    let (new_private, new_public) = cluster.generate_key("ed25519", "openssh", None);
    let new_version = cluster.moto.put_secret_value(
        "/test/rotating",
        &key_secret_json(&new_private, &new_public),
    );
    assert_ne!(old_version, new_version);
    let fetches = || cluster.moto.request_count("secretsmanager.GetSecretValue");

    let before = fetches();
    let out = smssh(
        &cluster,
        &["-v", "--secret-id", "/test/rotating", "127.0.0.2", "true"],
    );
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "permission denied (publickey)");
    assert_stderr_contains(&out, "fetching secret /test/rotating again");
    assert_stderr_contains(&out, &new_version);
    // Counted by moto: the first fetch and the one after the refusal.
    assert_eq!(
        fetches() - before,
        2,
        "GetSecretValue requests\n{}",
        describe(&out)
    );

    let before = fetches();
    let out = smssh(
        &cluster,
        &[
            "--secret-id",
            "/test/rotating",
            "--fallback-stage",
            "AWSPREVIOUS",
            "127.0.0.2",
            "echo previous",
        ],
    );
    assert_success(&out);
    assert_stdout_eq(&out, "previous\n");
    // AWSCURRENT, AWSCURRENT again after the refusal, then AWSPREVIOUS.
    assert_eq!(
        fetches() - before,
        3,
        "GetSecretValue requests\n{}",
        describe(&out)
    );
}

#[test]
fn verbose_output_never_contains_key_material() {
    let cluster = Cluster::new(1);
    let out = smssh(&cluster, &["-vvv", "127.0.0.2", "true"]);
    assert_success(&out);
    let err = stderr(&out);
    assert!(err.contains("debug:"), "-v should print something\n{err}");
    for line in cluster
        .private_key
        .lines()
        .filter(|l| !l.starts_with("-----"))
    {
        assert!(!err.contains(line), "stderr leaks key material: {line}");
    }
}

#[test]
fn tt_forces_a_pty_and_t_capital_disables_it() {
    let cluster = Cluster::new(1);
    let out = smssh(&cluster, &["-tt", "127.0.0.2", "tty"]);
    assert_success(&out);
    assert!(stdout(&out).starts_with("/dev/pts/"), "{}", describe(&out));
    let out = smssh(&cluster, &["-T", "127.0.0.2", "tty"]);
    assert_exit_code(&out, 1);
    assert_stdout_eq(&out, "not a tty\n");
}

#[test]
fn log_level_from_o_is_applied() {
    let cluster = Cluster::new(1);
    let out = smssh(&cluster, &["-o", "LogLevel=DEBUG", "127.0.0.2", "true"]);
    assert_success(&out);
    assert_stderr_contains(&out, "debug: authenticated to 127.0.0.2");
    let out = smssh(
        &cluster,
        &[
            "-o",
            "LogLevel=QUIET",
            "-o",
            "StrictHostKeyChecking=accept-new",
            "127.0.0.2",
            "true",
        ],
    );
    assert_success(&out);
    assert!(stderr(&out).is_empty(), "{}", describe(&out));
}

/// Runs `smssh 127.0.0.2 sleep 5` under `wrapper` (a command that ends by exec'ing its
/// arguments, such as prlimit) and returns, from the sample where the kernel reported the most
/// locked memory, `VmLck` and `VmSize` in kB.
fn locked_and_total_kib_of_smssh_under(cluster: &Cluster, wrapper: &[&str]) -> (u64, u64) {
    // The same program, arguments and environment as the harness's command, run by `wrapper`.
    let plain = cluster.command("smssh");
    let mut cmd = std::process::Command::new(wrapper[0]);
    cmd.args(&wrapper[1..])
        .arg("--")
        .arg(plain.get_program())
        .args(plain.get_args())
        .args(["127.0.0.2", "sleep", "5"]);
    for (key, value) in plain.get_envs() {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    let running = spawn(&mut cmd);
    // The wrappers exec the program, so the pid is smssh's own once it has started.
    let status_path = format!("/proc/{}/status", running.id());
    let field = |status: &str, name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let mut most = (0u64, 0u64);
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        let status = std::fs::read_to_string(&status_path).unwrap_or_default();
        if status.lines().any(|l| l == "Name:\tsmssh") {
            let now = (field(&status, "VmLck:"), field(&status, "VmSize:"));
            if now.0 >= most.0 {
                most = now;
            }
        }
    }
    let out = running
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|out| panic!("smssh did not end\n{}", describe(&out)));
    assert_success(&out);
    most
}

fn assert_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test checks root's behaviour and must run as root"
    );
}

/// Regression (issue 9, item 8): memory was never locked in practice, because mlockall was
/// skipped unless the hard RLIMIT_MEMLOCK was already unlimited, even for root, who may lift
/// it. Checked from the kernel's side: `VmLck` of the running process, started as root with
/// the distributions' default limit of 8 MiB.
#[test]
fn memory_is_locked_for_root_even_with_the_default_memlock_limit() {
    assert_root();
    let cluster = Cluster::new(1);
    let limit = format!("--memlock={0}:{0}", 8 * 1024 * 1024);
    let (locked, total) = locked_and_total_kib_of_smssh_under(&cluster, &["prlimit", &limit]);
    eprintln!("VmLck {locked} kB of VmSize {total} kB");
    // All memory: every mapping is locked (russh locks a few buffers of its own, which is
    // why a fraction would prove nothing).
    assert!(
        locked * 10 >= total * 9,
        "VmLck {locked} kB of VmSize {total} kB: not all memory was locked"
    );
}

/// Regression (issue 9, item 10): `ProxyJump`, `ProxyCommand`, `HostKeyAlias`,
/// `RevokedHostKeys` and `KnownHostsCommand` in a config file were accepted and ignored, so a
/// host configured to go through a bastion was reached directly and a revocation list was not
/// applied. A host they apply to is now refused with one line; `none` and other hosts' blocks
/// change nothing.
#[test]
fn security_keywords_in_ssh_config_are_silently_ignored() {
    let cluster = Cluster::new(1);
    // ProxyJump and ProxyCommand are implemented now (tests/jump_and_forward.rs); these
    // still change which host key is trusted and are refused rather than ignored.
    for (keyword, value) in [
        ("HostKeyAlias", "other-host"),
        ("RevokedHostKeys", "/etc/ssh/revoked_keys"),
        ("KnownHostsCommand", "/usr/local/bin/known-hosts %H"),
    ] {
        let config = cluster.scratch_file(
            "config",
            format!(
                "Host 127.0.0.2\n  {keyword} {value}\n  Port {}\n  User root\n",
                cluster.port
            )
            .as_bytes(),
        );
        let config = config.display().to_string();
        let out = smssh(&cluster, &["-F", &config, "127.0.0.2", "true"]);
        assert_exit_code(&out, 255);
        assert_stderr_contains(&out, &format!("ssh_config sets {keyword} {value}"));
        assert_eq!(stderr(&out).lines().count(), 1, "{}", describe(&out));
    }
    let harmless = cluster.scratch_file(
        "config",
        format!(
            "Host 127.0.0.2\n  ProxyJump none\n  Port {}\n  User root\nHost 127.0.0.*\n  ProxyJump bastion.invalid\nHost elsewhere\n  ProxyCommand nc %h %p\n",
            cluster.port
        )
        .as_bytes(),
    );
    let harmless = harmless.display().to_string();
    let out = smssh(&cluster, &["-F", &harmless, "127.0.0.2", "echo direct"]);
    assert_success(&out);
    assert_stdout_eq(&out, "direct\n");
}

/// `keyword value` lines of `-G` output, first value of each keyword.
fn g_lines(output: &std::process::Output) -> std::collections::BTreeMap<String, String> {
    let mut map = std::collections::BTreeMap::new();
    for line in stdout(output).lines() {
        if let Some((keyword, value)) = line.split_once(' ') {
            map.entry(keyword.to_owned())
                .or_insert_with(|| value.to_owned());
        }
    }
    map
}

#[test]
fn print_config_agrees_with_openssh_g_on_every_keyword_smssh_prints() {
    let cluster = Cluster::new(1);
    let config = cluster.scratch_file(
        "g-config",
        b"Host w*\n  HostName 10.1.2.%h\n  User ec2-user\n  Port 2200\n  ConnectTimeout 7\n  \
          ServerAliveInterval 9\nHost *\n  StrictHostKeyChecking accept-new\n  BatchMode yes\n  \
          Compression yes\n  UserKnownHostsFile /tmp/k1 /tmp/k2\n",
    );
    let config = config.display().to_string();
    let cases: [&[&str]; 5] = [
        &["-F", &config, "-G", "w1"],
        &[
            "-F",
            &config,
            "-o",
            "ServerAliveCountMax=5",
            "-o",
            "LogLevel=ERROR",
            "-G",
            "w1",
        ],
        // Options after the destination, -l/-p over the file, -C and -v.
        &[
            "-F", &config, "-G", "w7", "-l", "root", "-p", "2222", "-C", "-v",
        ],
        &[
            "-F",
            &config,
            "-o",
            "StrictHostKeyChecking=yes",
            "-q",
            "-G",
            "db",
        ],
        &[
            "-F",
            "none",
            "-o",
            "GlobalKnownHostsFile=none",
            "-o",
            "Port=23",
            "-G",
            "x",
        ],
    ];
    for args in cases {
        let ours = smssh(&cluster, args);
        assert_success(&ours);
        let theirs = run(std::process::Command::new("ssh")
            .env_clear()
            .env("HOME", cluster.home.path())
            .args(args));
        assert_success(&theirs);
        let (ours_map, theirs_map) = (g_lines(&ours), g_lines(&theirs));
        let mut compared = 0;
        for (keyword, value) in &ours_map {
            if matches!(keyword.as_str(), "secretid" | "versionstage") {
                continue;
            }
            // OpenSSH prints `none` without a ConnectTimeout; smssh prints the 30 s it applies.
            if keyword == "connecttimeout" && value == "30" {
                assert_eq!(theirs_map[keyword], "none");
                continue;
            }
            // OpenSSH finds ~ through the password database, smssh through HOME.
            if keyword.ends_with("knownhostsfile") && value.contains(".ssh/known_hosts") {
                continue;
            }
            assert_eq!(
                Some(value),
                theirs_map.get(keyword),
                "{args:?}: {keyword}\nsmssh:\n{}\nssh:\n{}",
                stdout(&ours),
                stdout(&theirs)
            );
            compared += 1;
        }
        assert!(
            compared >= 10,
            "{args:?}: only {compared} keywords compared"
        );
        assert_eq!(ours_map["secretid"], SECRET_ID);
        assert_eq!(ours_map["versionstage"], "AWSCURRENT");
    }
    // -G reads no secret, so it works before one is configured.
    let out = run(cluster
        .command("smssh")
        .env_remove("SMSSH_SECRET_ID")
        .args(["-G", "host"]));
    assert_success(&out);
    assert_eq!(g_lines(&out)["secretid"], "none");
    assert_eq!(cluster.moto.request_count("GetSecretValue"), 0);
}

#[test]
fn ssh_letters_keep_their_meaning_and_harmless_ones_are_no_ops() {
    let cluster = Cluster::new(1);
    // `-x` once excluded hosts; it is ssh's "no X11" again, so the host is the destination.
    let no_ops = [
        "-x", "-a", "-k", "-2", "-4", "-P", "-e", "none", "-S", "none", "-o",
    ];
    let mut args: Vec<&str> = no_ops.to_vec();
    args.extend(["BatchMode=yes", "127.0.0.2", "echo", "ok"]);
    let out = smssh(&cluster, &args);
    assert_success(&out);
    assert_stdout_eq(&out, "ok\n");
    // Options between the destination and the command, then words that only look like
    // options: the same split as OpenSSH's.
    let words = ["127.0.0.2", "-l", "root", "-T", "echo", "-l", "-T"];
    let ours = smssh(&cluster, &words);
    let theirs = run(cluster.openssh("ssh").args(words));
    assert_success(&theirs);
    assert_success(&ours);
    assert_eq!(stdout(&ours), stdout(&theirs));
    assert_stdout_eq(&ours, "-l -T\n");
    let out = smssh(&cluster, &["-V"]);
    assert_success(&out);
    assert!(stdout(&out).starts_with("smssh "), "{}", describe(&out));
}

#[test]
fn flags_smssh_cannot_honour_are_refused_with_one_line_and_255() {
    let cluster = Cluster::new(1);
    let cases: [(&[&str], &str); 17] = [
        (&["-1"], "protocol"),
        (&["-A"], "agent forwarding"),
        (&["-X"], "X11"),
        (&["-Y"], "X11"),
        (&["-b", "127.0.0.1"], "local interface or address"),
        (&["-B", "lo"], "local interface or address"),
        (
            &["-i", "/nonexistent/id"],
            "-i /nonexistent/id: No such file",
        ),
        (&["-I", "p11.so"], "PKCS#11"),
        (&["-K"], "GSSAPI"),
        (&["-M"], "connection sharing"),
        (&["-O", "check"], "no master connection"),
        (&["-Q", "cipher"], "smssh -G"),
        (&["-E", "/tmp/smssh-log"], "stderr"),
        (&["-y"], "syslog"),
        (&["-e", "~"], "escape characters"),
        (&["-w", "0:1"], "tunnel"),
        (&["-w", "any"], "tunnel"),
    ];
    for (flags, reason) in cases {
        let mut args = flags.to_vec();
        args.extend(["127.0.0.2", "true"]);
        let out = smssh(&cluster, &args);
        assert_exit_code(&out, 255);
        assert_stderr_contains(&out, reason);
        assert_eq!(stderr(&out).lines().count(), 1, "{}", describe(&out));
    }
    assert_eq!(
        cluster.moto.request_count("GetSecretValue"),
        0,
        "a refused command line reads no secret"
    );
    // OpenSSH gives the same status for -O without a master.
    let theirs =
        run(cluster
            .openssh("ssh")
            .args(["-S", "/nonexistent/ctl", "-O", "check", "127.0.0.2"]));
    assert_exit_code(&theirs, 255);
}

#[test]
fn s_opens_a_subsystem_as_openssh_does() {
    let cluster = Cluster::new(1);
    // SSH_FXP_INIT, version 3: sftp-server answers with SSH_FXP_VERSION and its extensions.
    // stdin stays open a moment after it: sftp-server exits at end-of-file without sending
    // what it has queued, with any client.
    let feed = r#"{ printf '\0\0\0\005\001\0\0\0\003'; sleep 2; } | "$0" "$@" -s 127.0.0.2 sftp"#;
    let mut ours = harness_environment(
        std::process::Command::new("sh"),
        cluster.home.path(),
        &cluster.moto,
    );
    ours.args(["-c", feed, binary_path("smssh")]);
    let ours = run(&mut ours);
    let openssh = cluster.openssh("ssh");
    let mut theirs = std::process::Command::new("sh");
    theirs
        .env_clear()
        .envs(openssh.get_envs().filter_map(|(k, v)| Some((k, v?))))
        .args(["-c", feed, "ssh"])
        .args(openssh.get_args());
    let theirs = run(&mut theirs);
    assert_success(&ours);
    assert_success(&theirs);
    assert_eq!(ours.stdout.get(4), Some(&2), "{}", describe(&ours));
    assert_eq!(ours.stdout, theirs.stdout);
    // A name the server has no subsystem for: one line and 255, as ssh.
    let ours = smssh(&cluster, &["-s", "127.0.0.2", "nonesuch"]);
    let theirs = run(cluster.openssh("ssh").args(["-s", "127.0.0.2", "nonesuch"]));
    assert_exit_code(&ours, 255);
    assert_exit_code(&theirs, 255);
    assert_stderr_contains(&ours, "subsystem");
}

/// SendEnv and SetEnv reach the session as OpenSSH's do, sshd's AcceptEnv deciding: the same
/// variables arrive through smssh and through OpenSSH's ssh, and AWS credentials never leave,
/// whatever SendEnv names.
#[test]
fn send_env_and_set_env_reach_the_session_as_with_openssh() {
    let mut cluster = Cluster::new(1);
    cluster.workers[0].set_global_config("AcceptEnv TESTVAR_* FROMSET AWS_*");
    let config = cluster.scratch_file(
        "env-config",
        format!(
            "Host 127.0.0.2\n  Port {}\n  User root\n  SendEnv TESTVAR_* AWS_*\n  SetEnv FROMSET=\"set here\"\n",
            cluster.port
        )
        .as_bytes(),
    );
    let remote =
        "echo \"[$TESTVAR_ONE][$TESTVAR_TWO][$FROMSET][$NOTSENT][${AWS_SECRET_ACCESS_KEY:-}]\"";
    let mut ours = cluster.command("smssh");
    ours.arg("-F")
        .arg(&config)
        .args(["-o", "BatchMode=yes", "127.0.0.2", remote]);
    let mut theirs = cluster.openssh("ssh");
    // OpenSSH gets the same configuration file in place of the harness's.
    theirs.arg("-F").arg(&config).args(["127.0.0.2", remote]);
    for cmd in [&mut ours, &mut theirs] {
        cmd.env("TESTVAR_ONE", "one")
            .env("TESTVAR_TWO", "two words")
            .env("NOTSENT", "no");
    }
    let ours = run(&mut ours);
    let theirs = run(&mut theirs);
    assert_success(&ours);
    assert_success(&theirs);
    assert_eq!(
        stdout(&ours),
        "[one][two words][set here][][]\n",
        "{}",
        describe(&ours)
    );
    // OpenSSH sends the same three; it has no AWS credentials in its environment to send.
    assert_eq!(stdout(&theirs), stdout(&ours), "{}", describe(&theirs));
}

/// `-i FILE` is an extra identity, offered after the secret's key was refused, as the issue
/// asks and as OpenSSH offers its identities in turn: a worker that accepts only that file's
/// key lets smssh and smscp in with it, and without `-i` refuses them.
#[test]
fn an_identity_file_is_offered_after_the_secrets_key() {
    let cluster = Cluster::new(1);
    let (_, public, path) = cluster.generate_key_file("ed25519", "openssh", None);
    cluster.workers[0].set_authorized_keys(&format!("{public}\n"));
    let out = smssh(
        &cluster,
        &["-o", "BatchMode=yes", "127.0.0.2", "echo", "refused"],
    );
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "permission denied");
    let key = path.display().to_string();
    let out = smssh(
        &cluster,
        &["-o", "BatchMode=yes", "-i", &key, "127.0.0.2", "echo", "in"],
    );
    assert_success(&out);
    assert_stdout_eq(&out, "in\n");
    let file = cluster.scratch_file("with-identity.txt", b"copied with -i\n");
    let out = run(cluster
        .command("smscp")
        .args(["-q", "-o", "BatchMode=yes", "-i", &key])
        .arg(&file)
        .arg("127.0.0.2:with-identity.txt"));
    assert_success(&out);
    assert_eq!(
        std::fs::read(cluster.workers[0].sftp_home().join("with-identity.txt")).unwrap(),
        b"copied with -i\n"
    );
    // An encrypted key file is refused in one line: smssh never asks for a passphrase.
    let (_, _, locked) = cluster.generate_key_file("ed25519", "openssh", Some("pass"));
    let locked = locked.display().to_string();
    let out = smssh(&cluster, &["-i", &locked, "127.0.0.2", "true"]);
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "never asks for a passphrase");
    assert_eq!(stderr(&out).lines().count(), 1, "{}", describe(&out));
}

/// `-4` and `-6` (AddressFamily) choose which of the resolver's addresses are tried, as in
/// ssh: a worker on an IPv4 loopback address is reached with -4 and not with -6, by smssh and
/// by OpenSSH alike, and smscp takes the same letters.
#[test]
fn address_family_flags_choose_the_addresses_tried_as_openssh_does() {
    let cluster = Cluster::new(1);
    for (flag, works) in [("-4", true), ("-6", false)] {
        let ours = smssh(
            &cluster,
            &["-o", "BatchMode=yes", flag, "127.0.0.2", "true"],
        );
        let theirs = run(cluster.openssh("ssh").args([flag, "127.0.0.2", "true"]));
        assert_eq!(ours.status.success(), works, "{flag}: {}", describe(&ours));
        assert_eq!(
            theirs.status.code(),
            ours.status.code(),
            "{flag}: {}",
            describe(&theirs)
        );
        if !works {
            assert_stderr_contains(&ours, "no address of family inet6");
            assert_eq!(stderr(&ours).lines().count(), 1, "{}", describe(&ours));
        }
    }
    let out = smssh(&cluster, &["-o", "AddressFamily=inet6", "-G", "127.0.0.2"]);
    assert!(
        stdout(&out).contains("addressfamily inet6\n"),
        "{}",
        describe(&out)
    );
    let file = cluster.scratch_file("family.txt", b"v4\n");
    let out = run(cluster
        .command("smscp")
        .args(["-q", "-6", "-o", "BatchMode=yes"])
        .arg(&file)
        .arg("127.0.0.2:family.txt"));
    assert_exit_code(&out, 1);
    assert!(!cluster.workers[0].sftp_home().join("family.txt").exists());
}
