//! Algorithm settings judged where they take effect: sshd's own log at `LogLevel DEBUG2`
//! says which key exchange, cipher and MAC a session really used and what smssh offered,
//! OpenSSH's ssh given the same settings must agree, and ssh-audit grades the default offer.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// A one-worker cluster whose sshd logs each key exchange (DEBUG2 adds the client's whole
/// proposal to DEBUG's choice lines).
fn debug_cluster() -> Cluster {
    let mut cluster = Cluster::new(1);
    cluster.workers[0].set_global_config("LogLevel DEBUG2");
    cluster
}

fn smssh(cluster: &Cluster, args: &[&str]) -> Output {
    run(cluster.command("smssh").args(args))
}

/// The last value sshd logged after `prefix` (e.g. `kex: algorithm: `), up to the next
/// space: what the most recent session negotiated. sshd's ` [preauth]` suffix is dropped.
fn last_logged(worker: &Worker, prefix: &str) -> String {
    let log = worker.log().replace(" [preauth]", "");
    let line = log
        .lines()
        .rev()
        .find_map(|line| line.split_once(prefix).map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("sshd logged no {prefix:?}; its log:\n{log}"));
    line.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// What the most recent session negotiated: (kex, client->server cipher, MAC).
fn negotiated(worker: &Worker) -> (String, String, String) {
    (
        last_logged(worker, "kex: algorithm: "),
        last_logged(worker, "kex: client->server cipher: "),
        last_logged(worker, " MAC: "),
    )
}

/// The client's proposal for `list` ("KEX algorithms", "host key algorithms",
/// "ciphers ctos", "MACs ctos") as sshd logged it for the most recent session.
fn offered(worker: &Worker, list: &str) -> Vec<String> {
    let log = worker.log().replace(" [preauth]", "");
    let start = log
        .rfind("peer client KEXINIT proposal")
        .unwrap_or_else(|| panic!("sshd logged no client proposal; its log:\n{log}"));
    let prefix = format!("{list}: ");
    log[start..]
        .lines()
        .find_map(|line| line.split_once(&prefix).map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("no {list:?} in the client proposal"))
        .split(',')
        .map(str::to_owned)
        .collect()
}

#[test]
fn default_offer_is_aead_first_and_never_sha1_host_keys() {
    let cluster = debug_cluster();
    let worker = &cluster.workers[0];
    let out = smssh(&cluster, &["127.0.0.2", "true"]);
    assert_success(&out);
    // OpenSSH 9.2's sshd has no ML-KEM, so the first shared exchange is curve25519.
    let (kex, cipher, _) = negotiated(worker);
    assert_eq!(kex, "curve25519-sha256");
    assert_eq!(cipher, "aes128-gcm@openssh.com");
    let host_keys = offered(worker, "host key algorithms");
    assert!(
        host_keys.contains(&"ssh-ed25519".to_owned()),
        "{host_keys:?}"
    );
    assert!(!host_keys.contains(&"ssh-rsa".to_owned()), "{host_keys:?}");
    let macs = offered(worker, "MACs ctos");
    assert!(!macs.iter().any(|m| m.contains("sha1")), "{macs:?}");
    let kexes = offered(worker, "KEX algorithms");
    assert!(!kexes.iter().any(|k| k.contains("sha1")), "{kexes:?}");
    assert!(
        kexes.contains(&"kex-strict-c-v00@openssh.com".to_owned()),
        "{kexes:?}"
    );
}

#[test]
fn options_c_and_files_choose_what_the_server_sees_as_openssh_does() {
    let cluster = debug_cluster();
    let worker = &cluster.workers[0];
    // The options both clients get, then the (kex, cipher, MAC) sshd must log.
    type Case<'a> = (&'a [&'a str], (&'a str, &'a str, &'a str));
    let cases: [Case; 4] = [
        (
            &["-c", "aes256-ctr", "-o", "MACs=hmac-sha2-512"],
            ("curve25519-sha256", "aes256-ctr", "hmac-sha2-512"),
        ),
        (
            &[
                "-o",
                "KexAlgorithms=diffie-hellman-group14-sha256",
                "-o",
                "Ciphers=chacha20-poly1305@openssh.com",
            ],
            (
                "diffie-hellman-group14-sha256",
                "chacha20-poly1305@openssh.com",
                "<implicit>",
            ),
        ),
        // -c beats -o Ciphers, whatever their order.
        (
            &[
                "-o",
                "Ciphers=aes128-ctr",
                "-c",
                "aes192-ctr",
                "-o",
                "MACs=hmac-sha2-256-etm@openssh.com",
            ],
            (
                "curve25519-sha256",
                "aes192-ctr",
                "hmac-sha2-256-etm@openssh.com",
            ),
        ),
        // `^` puts names first, `-` removes them from the default.
        (
            &[
                "-o",
                "KexAlgorithms=^diffie-hellman-group16-sha512",
                "-o",
                "Ciphers=-*gcm*,chacha20*",
                "-o",
                "MACs=^hmac-sha2-512-etm@openssh.com",
            ],
            (
                "diffie-hellman-group16-sha512",
                "aes256-ctr",
                "hmac-sha2-512-etm@openssh.com",
            ),
        ),
    ];
    for (options, (kex, cipher, mac)) in cases {
        let mut args: Vec<&str> = options.to_vec();
        args.extend(["127.0.0.2", "true"]);
        let out = smssh(&cluster, &args);
        assert_success(&out);
        let want = (kex.to_owned(), cipher.to_owned(), mac.to_owned());
        assert_eq!(negotiated(worker), want, "smssh {options:?}");
        // OpenSSH's ssh with the same options negotiates the same where the options name
        // the lists outright; where a list is relative to the default, or not set, OpenSSH's
        // own default order (sntrup761 and chacha20 first) decides.
        let mut ssh = cluster.openssh("ssh");
        ssh.args(options).args(["127.0.0.2", "true"]);
        assert_success(&run(&mut ssh));
        let openssh = negotiated(worker);
        let explicit = |key: &str| {
            options
                .iter()
                .any(|o| o.starts_with(key) && !o.contains("=^") && !o.contains("=-"))
        };
        if explicit("KexAlgorithms=") {
            assert_eq!(openssh.0, want.0, "ssh {options:?}");
        }
        if explicit("Ciphers=") || options.contains(&"-c") {
            assert_eq!(openssh.1, want.1, "ssh {options:?}");
        }
        if explicit("MACs=") && want.2 != "<implicit>" {
            assert_eq!(openssh.2, want.2, "ssh {options:?}");
        }
    }
    // The same settings from a config file.
    std::fs::write(
        cluster.ssh_config_path(),
        format!(
            "Host 127.0.0.*\n    Port {}\n    Ciphers aes128-ctr\n    MACs hmac-sha2-256\n",
            cluster.port
        ),
    )
    .unwrap();
    assert_success(&smssh(&cluster, &["127.0.0.2", "true"]));
    let (_, cipher, mac) = negotiated(worker);
    assert_eq!(
        (cipher.as_str(), mac.as_str()),
        ("aes128-ctr", "hmac-sha2-256")
    );
}

#[test]
fn sha1_rsa_host_keys_only_when_asked_for() {
    let cluster = debug_cluster();
    let worker = &cluster.workers[0];
    let out = smssh(
        &cluster,
        &["-o", "HostKeyAlgorithms=+ssh-rsa", "127.0.0.2", "true"],
    );
    assert_success(&out);
    let host_keys = offered(worker, "host key algorithms");
    assert_eq!(
        host_keys.last().map(String::as_str),
        Some("ssh-rsa"),
        "{host_keys:?}"
    );
    // A host-key list the server cannot satisfy fails the handshake, as with OpenSSH.
    let out = smssh(
        &cluster,
        &["-o", "HostKeyAlgorithms=rsa-sha2-512", "127.0.0.2", "true"],
    );
    assert_exit_code(&out, 255);
    let mut ssh = cluster.openssh("ssh");
    ssh.args(["-o", "HostKeyAlgorithms=rsa-sha2-512", "127.0.0.2", "true"]);
    assert_exit_code(&run(&mut ssh), 255);
}

#[test]
fn a_policy_that_leaves_nothing_supported_fails_with_one_line_naming_both_lists() {
    let cluster = Cluster::new(1);
    let cases: [(&str, &[&str], i32); 4] = [
        ("smssh", &["-c", "3des-cbc", "127.0.0.2", "true"], 255),
        (
            "smssh",
            &[
                "-o",
                "KexAlgorithms=sntrup761x25519-sha512@openssh.com",
                "127.0.0.2",
                "true",
            ],
            255,
        ),
        ("smssh", &["-o", "MACs=-*", "127.0.0.2", "true"], 255),
        (
            "smscp",
            &["-c", "3des-cbc", "127.0.0.2:/etc/hostname", "/dev/null"],
            1,
        ),
    ];
    for (bin, args, code) in cases {
        let out = run(cluster.command(bin).args(args));
        assert_exit_code(&out, code);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{bin} {args:?}: {err}");
        assert!(
            err.contains("leaves no algorithm smssh supports (resolved to: "),
            "{err}"
        );
        assert!(err.contains("; smssh supports "), "{err}");
    }
    // A name OpenSSH itself does not know is refused as OpenSSH refuses it.
    let out = smssh(&cluster, &["-c", "blowfish-cbc", "127.0.0.2", "true"]);
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "Bad Ciphers spec 'blowfish-cbc'");
    let mut ssh = cluster.openssh("ssh");
    ssh.args(["-c", "blowfish-cbc", "127.0.0.2", "true"]);
    assert_exit_code(&run(&mut ssh), 255);
}

/// ssh-audit's client audit: it listens, smssh connects and offers its algorithms, and
/// ssh-audit grades the offer. No line of smssh's default offer may be graded `[fail]` but
/// the ECDSA host keys the README explains.
#[test]
fn ssh_audit_finds_no_failure_in_the_default_offer() {
    let cluster = Cluster::new(1);
    let audit = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/ssh-audit");
    assert!(
        audit.is_file(),
        "{} not found: run scripts/test-deps.sh",
        audit.display()
    );
    let port = free_port(&["127.0.0.1"]);
    let port_text = port.to_string();
    let mut auditor = spawn(
        Command::new(&audit)
            .args(["-c", "-n", "-p", &port_text, "-t", "20"])
            .env("NO_COLOR", "1"),
    );
    // ssh-audit reports on the first client that connects and exits, so smssh itself is
    // the probe: it is refused until ssh-audit listens, and fails the handshake once
    // ssh-audit has read its offer.
    let port_option = format!("Port={port}");
    let started = Instant::now();
    while !auditor.has_exited() {
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ssh-audit never audited smssh"
        );
        let _ = smssh(
            &cluster,
            &[
                "-o",
                &port_option,
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "ConnectTimeout=5",
                "127.0.0.1",
                "true",
            ],
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let report = auditor
        .wait_timeout(Duration::from_secs(60))
        .unwrap_or_else(|o| panic!("ssh-audit did not finish:\n{}", describe(&o)));
    let text = stdout(&report);
    assert!(
        text.contains("curve25519-sha256"),
        "ssh-audit saw no offer:\n{text}"
    );
    // The ECDSA host-key algorithms are the README's one exception ("Configuration files
    // and algorithms"): a host whose known_hosts entry is ECDSA must stay reachable.
    let excepted = [
        "(key) ecdsa-sha2-nistp256 ",
        "(key) ecdsa-sha2-nistp384 ",
        "(key) ecdsa-sha2-nistp521 ",
    ];
    for line in excepted {
        assert!(
            text.contains(line),
            "ssh-audit no longer lists {line:?}:\n{text}"
        );
    }
    let failures: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("[fail]") && !excepted.iter().any(|e| l.starts_with(e)))
        .collect();
    assert!(
        failures.is_empty(),
        "ssh-audit failures:\n{}\n\nfull report:\n{text}",
        failures.join("\n")
    );
}

/// `PubkeyAcceptedAlgorithms` and `RequiredRSASize` decide which signature smssh offers with
/// the secret's key, as they decide OpenSSH's: side by side on the same worker, the same
/// verdict, and where smssh cannot offer the key at all, one line saying why. sshd's DEBUG log
/// names the signature algorithm each accepted login used.
#[test]
fn pubkey_accepted_algorithms_and_required_rsa_size_choose_the_signature_as_openssh_does() {
    let mut cluster = Cluster::with_key_type(1, "rsa-2048");
    cluster.workers[0].set_global_config("LogLevel DEBUG2");
    let cases: [(&str, bool); 4] = [
        ("PubkeyAcceptedAlgorithms=rsa-sha2-256", true),
        ("PubkeyAcceptedAlgorithms=-rsa-sha2-512", true),
        // Debian's sshd takes no SHA-1 signature, so a client allowed only ssh-rsa is refused.
        ("PubkeyAcceptedAlgorithms=ssh-rsa", false),
        ("RequiredRSASize=3072", false),
    ];
    for (option, accepted) in cases {
        let ours = smssh(
            &cluster,
            &["-o", "BatchMode=yes", "-o", option, "127.0.0.2", "true"],
        );
        assert_eq!(
            ours.status.success(),
            accepted,
            "{option}: {}",
            describe(&ours)
        );
        if accepted {
            // The signature smssh's accepted login used, before OpenSSH's login adds its own.
            let log = cluster.workers[0].log();
            let used = log
                .lines()
                .rev()
                .find_map(|line| line.split_once("userauth_pubkey: publickey test pkalg "))
                .map(|(_, rest)| rest.to_owned())
                .unwrap_or_default();
            assert!(
                used.starts_with("rsa-sha2-256"),
                "{option}: sshd saw {used:?}"
            );
        } else {
            assert_exit_code(&ours, 255);
            assert_eq!(stderr(&ours).lines().count(), 1, "{}", describe(&ours));
        }
        let theirs = run(cluster
            .openssh("ssh")
            .args(["-o", option, "127.0.0.2", "true"]));
        assert_eq!(
            theirs.status.success(),
            accepted,
            "OpenSSH, {option}: {}",
            describe(&theirs)
        );
    }
    let ours = smssh(
        &cluster,
        &["-o", "RequiredRSASize=3072", "127.0.0.2", "true"],
    );
    assert_stderr_contains(&ours, "2048 bits and RequiredRSASize is 3072");
    let ed25519 = Cluster::new(1);
    let out = smssh(
        &ed25519,
        &[
            "-o",
            "PubkeyAcceptedAlgorithms=-ssh-ed25519",
            "127.0.0.2",
            "true",
        ],
    );
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "ssh-ed25519 key cannot be offered");
}
