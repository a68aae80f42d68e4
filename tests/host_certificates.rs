//! Host certificates (`@cert-authority`, `@revoked`) judged side by side with OpenSSH's own
//! ssh: a real sshd presents a certificate made by `ssh-keygen -s`, and smssh must reach the
//! same verdict as ssh on the same known_hosts (accept, or refuse with exit status 255).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// The public key line of a key file made by `Cluster::generate_key_file`, without comment.
fn public_key(private: &Path) -> String {
    let text = fs::read_to_string(format!("{}.pub", private.display()))
        .expect("cannot read the public key");
    text.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A CA key pair of `kind` in the cluster's scratch dir; returns its private key path.
fn new_ca(cluster: &Cluster, kind: &str) -> PathBuf {
    cluster.generate_key_file(kind, "openssh", None).2
}

/// `[127.0.0.2]:PORT`, the name known_hosts gives the worker.
fn bracketed(cluster: &Cluster) -> String {
    format!("[{}]:{}", cluster.workers[0].addr(), cluster.port)
}

/// The worker's plain host key line (`[addr]:port ssh-ed25519 AAAA...`).
fn host_key_line(cluster: &Cluster) -> String {
    cluster.workers[0].host_key_line()
}

/// The worker's host key alone (`ssh-ed25519 AAAA...`).
fn host_key(cluster: &Cluster) -> String {
    host_key_line(cluster)
        .split_whitespace()
        .skip(1)
        .collect::<Vec<_>>()
        .join(" ")
}

/// `HOST` hashed by `ssh-keygen -H`: OpenSSH's own hashed host field.
fn hashed_by_ssh_keygen(cluster: &Cluster, host: &str) -> String {
    let file = cluster.scratch_file(
        "to-hash",
        format!("{host} {}\n", host_key(cluster)).as_bytes(),
    );
    let out = run(Command::new("ssh-keygen").arg("-H").arg("-f").arg(&file));
    assert_success(&out);
    let hashed = fs::read_to_string(&file).expect("hashed file");
    let field = hashed
        .split_whitespace()
        .next()
        .expect("a hashed line")
        .to_owned();
    assert!(field.starts_with("|1|"), "ssh-keygen -H wrote {hashed}");
    field
}

/// OpenSSH's ssh and smssh, each running `true` on the worker with StrictHostKeyChecking=yes.
fn both(cluster: &Cluster, extra: &[&str]) -> (Output, Output) {
    let addr = cluster.workers[0].addr().to_owned();
    let openssh = run(cluster
        .openssh("ssh")
        .args(extra)
        .args([addr.as_str(), "true"]));
    let ours = run(cluster
        .command("smssh")
        .args(["-o", "StrictHostKeyChecking=yes"])
        .args(extra)
        .args([addr.as_str(), "true"]));
    (openssh, ours)
}

struct Case {
    what: &'static str,
    /// `ssh-keygen -s` options after `-I`; `None` keeps the previous certificate.
    sign: Option<Vec<String>>,
    known_hosts: String,
    accepted: bool,
    /// What smssh's refusal must say.
    says: &'static str,
}

#[test]
fn certificates_get_the_same_verdict_as_openssh() {
    let mut cluster = Cluster::new(1);
    let ca = new_ca(&cluster, "ed25519");
    let other_ca = new_ca(&cluster, "ed25519");
    let rsa_ca = new_ca(&cluster, "rsa-3072");
    let ca_key = public_key(&ca);
    let other_ca_key = public_key(&other_ca);
    let rsa_ca_key = public_key(&rsa_ca);
    let addr = cluster.workers[0].addr().to_owned();
    let name = bracketed(&cluster);
    let hashed_name = hashed_by_ssh_keygen(&cluster, &name);
    let host_line = host_key_line(&cluster);
    let plain_key = host_key(&cluster);
    let sign = |args: &[&str]| Some(args.iter().map(|a| a.to_string()).collect::<Vec<_>>());
    let trust = format!("@cert-authority {name} {ca_key}\n");
    let cases = vec![
        Case {
            what: "valid host certificate",
            sign: sign(&["-h", "-n", &addr, "-V", "-5m:+1h"]),
            known_hosts: trust.clone(),
            accepted: true,
            says: "",
        },
        Case {
            what: "CA line without the port",
            sign: None,
            known_hosts: "@cert-authority 127.0.0.* ".to_owned() + &ca_key + "\n",
            accepted: true,
            says: "",
        },
        Case {
            what: "hashed CA line",
            sign: None,
            known_hosts: format!("@cert-authority {hashed_name} {ca_key}\n"),
            accepted: true,
            says: "",
        },
        Case {
            what: "CA pattern does not match the host",
            sign: None,
            known_hosts: format!("@cert-authority 10.* {ca_key}\n"),
            accepted: false,
            // No CA line can vouch, so no certificate algorithm is offered.
            says: "no known_hosts entry for this host",
        },
        Case {
            what: "CA pattern negates the host",
            sign: None,
            known_hosts: format!("@cert-authority 127.0.0.*,!{addr} {ca_key}\n"),
            accepted: false,
            says: "no known_hosts entry for this host",
        },
        Case {
            what: "another CA is trusted for the host",
            sign: None,
            known_hosts: format!("@cert-authority {name} {other_ca_key}\n"),
            accepted: false,
            says: "no @cert-authority line for this host",
        },
        Case {
            what: "CA revoked",
            sign: None,
            known_hosts: format!("{trust}@revoked * {ca_key}\n"),
            accepted: false,
            says: "REVOKED",
        },
        Case {
            what: "host key revoked",
            sign: None,
            known_hosts: format!("{trust}@revoked * {plain_key}\n"),
            accepted: false,
            says: "REVOKED",
        },
        Case {
            what: "revoked CA with the plain key known as well",
            sign: None,
            known_hosts: format!("{trust}{host_line}\n@revoked * {ca_key}\n"),
            accepted: false,
            says: "REVOKED",
        },
        Case {
            what: "wrong principal",
            sign: sign(&["-h", "-n", "127.0.0.3,worker", "-V", "-5m:+1h"]),
            known_hosts: trust.clone(),
            accepted: false,
            says: "not 127.0.0.2",
        },
        Case {
            what: "wrong principal, plain key known",
            sign: None,
            known_hosts: format!("{trust}{host_line}\n"),
            accepted: true,
            says: "",
        },
        Case {
            what: "the principal is [host]:port",
            sign: sign(&["-h", "-n", &name, "-V", "-5m:+1h"]),
            known_hosts: trust.clone(),
            accepted: false,
            says: "not 127.0.0.2",
        },
        Case {
            what: "no principals: valid for every host",
            sign: sign(&["-h", "-V", "-5m:+1h"]),
            known_hosts: trust.clone(),
            accepted: true,
            says: "",
        },
        Case {
            what: "expired",
            sign: sign(&["-h", "-n", &addr, "-V", "20200101:20200102"]),
            known_hosts: trust.clone(),
            accepted: false,
            says: "it expired at 2020-01-0",
        },
        Case {
            what: "not yet valid",
            sign: sign(&["-h", "-n", &addr, "-V", "+1d:+2d"]),
            known_hosts: trust.clone(),
            accepted: false,
            says: "it is not valid before",
        },
        Case {
            what: "user certificate presented as host certificate",
            sign: sign(&["-n", &addr, "-V", "-5m:+1h"]),
            known_hosts: trust.clone(),
            accepted: false,
            says: "not a host certificate",
        },
        Case {
            what: "critical option",
            sign: sign(&[
                "-h",
                "-n",
                &addr,
                "-O",
                "force-command=true",
                "-V",
                "-5m:+1h",
            ]),
            known_hosts: trust.clone(),
            accepted: false,
            says: "critical option \"force-command\"",
        },
        Case {
            what: "RSA CA, SHA-1 signature",
            sign: sign(&["-h", "-n", &addr, "-V", "-5m:+1h", "-t", "ssh-rsa"]),
            known_hosts: format!("@cert-authority {name} {rsa_ca_key}\n"),
            accepted: false,
            says: "CASignatureAlgorithms",
        },
        Case {
            what: "RSA CA, rsa-sha2-512 signature",
            sign: sign(&["-h", "-n", &addr, "-V", "-5m:+1h", "-t", "rsa-sha2-512"]),
            known_hosts: format!("@cert-authority {name} {rsa_ca_key}\n"),
            accepted: true,
            says: "",
        },
    ];
    let mut signer = ca.clone();
    for case in cases {
        if case.what.starts_with("RSA CA") {
            signer = rsa_ca.clone();
        }
        if let Some(options) = &case.sign {
            let options: Vec<&str> = options.iter().map(String::as_str).collect();
            cluster.workers[0].certify_host_key(&signer, &options);
        }
        fs::write(cluster.known_hosts_path(), &case.known_hosts).expect("write known_hosts");
        let (openssh, ours) = both(&cluster, &[]);
        let want = if case.accepted { 0 } else { 255 };
        assert_eq!(
            openssh.status.code(),
            Some(want),
            "{}: OpenSSH's verdict is not the expected one\n{}",
            case.what,
            describe(&openssh)
        );
        assert_eq!(
            ours.status.code(),
            Some(want),
            "{}: smssh disagrees with OpenSSH\n{}",
            case.what,
            describe(&ours)
        );
        if !case.accepted {
            assert_stderr_contains(&ours, case.says);
            assert_eq!(
                stderr(&ours).trim_end().lines().count(),
                1,
                "{}: one error line\n{}",
                case.what,
                describe(&ours)
            );
        }
    }
    // The certificate is now signed with rsa-sha2-512 by the RSA CA, which the last case
    // trusts: a CASignatureAlgorithms without RSA refuses it in both clients.
    let (openssh, ours) = both(&cluster, &["-o", "CASignatureAlgorithms=ssh-ed25519"]);
    assert_exit_code(&openssh, 255);
    assert_exit_code(&ours, 255);
    assert_stderr_contains(&ours, "rsa-sha2-512, which is not in CASignatureAlgorithms");
}

#[test]
fn an_untrusted_certificate_falls_back_to_its_plain_key_under_accept_new() {
    let mut cluster = Cluster::new(1);
    let ca = new_ca(&cluster, "ed25519");
    let ca_key = public_key(&ca);
    let name = bracketed(&cluster);
    cluster.workers[0].certify_host_key(&ca, &["-h", "-n", "somewhere-else", "-V", "-5m:+1h"]);
    let trust = format!("@cert-authority {name} {ca_key}\n");
    let openssh_file = cluster.scratch_file("openssh_known_hosts", trust.as_bytes());
    fs::write(cluster.known_hosts_path(), &trust).expect("write known_hosts");
    let addr = cluster.workers[0].addr().to_owned();
    // OpenSSH records the certificate's plain key, never the certificate. Cluster::openssh
    // fixes StrictHostKeyChecking and the known_hosts file, so this ssh is set up here.
    let openssh = run(Command::new("ssh")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("-F")
        .arg(cluster.ssh_config_path())
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", openssh_file.display()))
        .args(["-o", "GlobalKnownHostsFile=/dev/null"])
        .args(["-o", "StrictHostKeyChecking=accept-new"])
        .args(["-o", "HashKnownHosts=no"])
        .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
        .arg("-i")
        .arg(&cluster.key_path)
        .args([addr.as_str(), "true"]));
    assert_success(&openssh);
    let ours = run(cluster
        .command("smssh")
        .args(["-o", "StrictHostKeyChecking=accept-new"])
        .args(["-o", "HashKnownHosts=no"])
        .args([addr.as_str(), "true"]));
    assert_success(&ours);
    let added = |path: &Path| -> Vec<String> {
        fs::read_to_string(path)
            .expect("known_hosts")
            .lines()
            .skip(1)
            .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .collect()
    };
    assert_eq!(added(&openssh_file), vec![host_key_line(&cluster)]);
    assert_eq!(added(&cluster.known_hosts_path()), added(&openssh_file));
    // Both clients now accept the host by its recorded key.
    let (openssh, ours) = both(&cluster, &[]);
    assert_success(&openssh);
    assert_success(&ours);
}

#[test]
fn hash_known_hosts_writes_a_line_that_openssh_finds() {
    let cluster = Cluster::new(1);
    fs::write(cluster.known_hosts_path(), "").expect("empty known_hosts");
    let addr = cluster.workers[0].addr().to_owned();
    let ours = run(cluster
        .command("smssh")
        .args(["-o", "StrictHostKeyChecking=accept-new"])
        .args(["-o", "HashKnownHosts=yes"])
        .args([addr.as_str(), "true"]));
    assert_success(&ours);
    let written = fs::read_to_string(cluster.known_hosts_path()).expect("known_hosts");
    let fields: Vec<&str> = written.split_whitespace().collect();
    assert_eq!(fields.len(), 3, "one line: {written}");
    assert!(fields[0].starts_with("|1|"), "hashed: {written}");
    assert!(!written.contains(&addr), "no host name in clear: {written}");
    assert_eq!(
        fields[1..].join(" "),
        host_key(&cluster),
        "the worker's key: {written}"
    );
    // OpenSSH's own lookup finds the hashed name, and only for this host and port.
    let find = |name: &str| {
        run(Command::new("ssh-keygen")
            .args(["-F", name, "-f"])
            .arg(cluster.known_hosts_path()))
    };
    let found = find(&bracketed(&cluster));
    assert_success(&found);
    assert!(stdout(&found).contains(fields[0]), "{}", describe(&found));
    assert_failure(&find(&addr));
    assert_failure(&find(&format!("[127.0.0.3]:{}", cluster.port)));
    // Both clients accept the host by that line with StrictHostKeyChecking=yes.
    let (openssh, ours) = both(&cluster, &[]);
    assert_success(&openssh);
    assert_success(&ours);
    // Without HashKnownHosts (and with /etc/ssh/ssh_config out of the way) the line is plain.
    fs::write(cluster.known_hosts_path(), "").expect("empty known_hosts");
    let plain = run(cluster
        .command("smssh")
        .args(["-F", &cluster.ssh_config_path().display().to_string()])
        .args(["-o", "StrictHostKeyChecking=accept-new"])
        .args([addr.as_str(), "true"]));
    assert_success(&plain);
    assert_eq!(
        fs::read_to_string(cluster.known_hosts_path()).expect("known_hosts"),
        host_key_line(&cluster) + "\n"
    );
}
