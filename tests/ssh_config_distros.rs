//! The ssh_config files that Linux distributions and macOS ship, written out here as they
//! ship them (with the `/etc` paths moved into a temporary tree), read by smssh and by
//! OpenSSH's ssh side by side against a real sshd: both must log in, and sshd's own log says
//! which cipher and key exchange each really used.

mod common;

use std::fs;
use std::path::Path;
use std::process::Output;

use common::*;

/// Amazon Linux 2023 / RHEL 9 / Fedora: `/etc/ssh/ssh_config` includes the drop-in
/// directory, whose `50-redhat.conf` applies the crypto policy in a `Match final all` block.
const REDHAT_SSH_CONFIG: &str = "\
#	$OpenBSD: ssh_config,v 1.35 2020/07/17 03:43:42 dtucker Exp $

# This is the ssh client system-wide configuration file.  See
# ssh_config(5) for more information.  This file provides defaults for
# users, and the values can be changed in per-user configuration files
# or on the command line.

# To modify the system-wide ssh configuration, create a  *.conf  file under
#  /etc/ssh/ssh_config.d/  which will be automatically included below
Include @ETC@/ssh/ssh_config.d/*.conf

# Host *
#   ForwardAgent no
#   ForwardX11 no
#   PasswordAuthentication yes
#   HostbasedAuthentication no
#   GSSAPIAuthentication no
#   GSSAPIDelegateCredentials no
#   GSSAPIKeyExchange no
#   GSSAPITrustDNS no
#   BatchMode no
#   CheckHostIP yes
#   AddressFamily any
#   ConnectTimeout 0
#   StrictHostKeyChecking ask
#   IdentityFile ~/.ssh/id_rsa
#   IdentityFile ~/.ssh/id_dsa
#   IdentityFile ~/.ssh/id_ecdsa
#   IdentityFile ~/.ssh/id_ed25519
#   Port 22
#   Ciphers aes128-ctr,aes192-ctr,aes256-ctr,aes128-cbc,3des-cbc
#   MACs hmac-md5,hmac-sha1,umac-64@openssh.com
#   EscapeChar ~
#   Tunnel no
#   TunnelDevice any:any
#   PermitLocalCommand no
#   VisualHostKey no
#   ProxyCommand ssh -q -W %h:%p gateway.example.com
#   RekeyLimit 1G 1h
#   UserKnownHostsFile ~/.ssh/known_hosts.d/%k
";

const REDHAT_50_CONF: &str = "\
# The options here are in the \"Match final block\" to be applied as the last
# options and could be potentially overwritten by the user configuration
Match final all
	# Follow system-wide Crypto Policy, if defined:
	Include @ETC@/crypto-policies/back-ends/openssh.config

	GSSAPIAuthentication yes

# If this option is set to yes then remote X11 clients will have full access
# to the original X11 display. As virtually no X11 client supports the untrusted
# mode correctly we set this to yes.
	ForwardX11Trusted yes

# Uncomment this if you want to use .local domain
# Host *.local

# Send locale environment variables. #367017
	SendEnv LANG LC_CTYPE LC_NUMERIC LC_TIME LC_COLLATE LC_MONETARY LC_MESSAGES
	SendEnv LC_PAPER LC_NAME LC_ADDRESS LC_TELEPHONE LC_IDENTIFICATION LC_MEASUREMENT
	SendEnv LC_ALL LANGUAGE
	SendEnv XMODIFIERS
";

/// RHEL 9's DEFAULT crypto policy, as `update-crypto-policies` writes the OpenSSH back-end.
const CRYPTO_POLICY_DEFAULT: &str = "\
Ciphers aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,aes256-ctr,aes128-gcm@openssh.com,aes128-ctr
MACs hmac-sha2-256-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha2-256,hmac-sha1,umac-128@openssh.com,hmac-sha2-512
GSSAPIKexAlgorithms gss-curve25519-sha256-,gss-nistp256-sha256-,gss-group14-sha256-,gss-group16-sha512-
KexAlgorithms curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,diffie-hellman-group14-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512
HostKeyAlgorithms ecdsa-sha2-nistp256,ecdsa-sha2-nistp256-cert-v01@openssh.com,sk-ecdsa-sha2-nistp256@openssh.com,sk-ecdsa-sha2-nistp256-cert-v01@openssh.com,ecdsa-sha2-nistp384,ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521,ecdsa-sha2-nistp521-cert-v01@openssh.com,ssh-ed25519,ssh-ed25519-cert-v01@openssh.com,sk-ssh-ed25519@openssh.com,sk-ssh-ed25519-cert-v01@openssh.com,rsa-sha2-256,rsa-sha2-256-cert-v01@openssh.com,rsa-sha2-512,rsa-sha2-512-cert-v01@openssh.com
PubkeyAcceptedAlgorithms ecdsa-sha2-nistp256,ecdsa-sha2-nistp256-cert-v01@openssh.com,sk-ecdsa-sha2-nistp256@openssh.com,sk-ecdsa-sha2-nistp256-cert-v01@openssh.com,ecdsa-sha2-nistp384,ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521,ecdsa-sha2-nistp521-cert-v01@openssh.com,ssh-ed25519,ssh-ed25519-cert-v01@openssh.com,sk-ssh-ed25519@openssh.com,sk-ssh-ed25519-cert-v01@openssh.com,rsa-sha2-256,rsa-sha2-256-cert-v01@openssh.com,rsa-sha2-512,rsa-sha2-512-cert-v01@openssh.com
CASignatureAlgorithms ecdsa-sha2-nistp256,sk-ecdsa-sha2-nistp256@openssh.com,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,ssh-ed25519,sk-ssh-ed25519@openssh.com,rsa-sha2-256,rsa-sha2-512
RequiredRSASize 2048
";

/// RHEL 9's FIPS policy: NIST curves and AES only.
const CRYPTO_POLICY_FIPS: &str = "\
Ciphers aes256-gcm@openssh.com,aes256-ctr,aes128-gcm@openssh.com,aes128-ctr
MACs hmac-sha2-256-etm@openssh.com,hmac-sha2-512-etm@openssh.com,hmac-sha2-256,hmac-sha2-512
GSSAPIKeyExchange no
KexAlgorithms ecdh-sha2-nistp256,ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,diffie-hellman-group14-sha256,diffie-hellman-group16-sha512,diffie-hellman-group18-sha512
HostKeyAlgorithms ecdsa-sha2-nistp256,ecdsa-sha2-nistp256-cert-v01@openssh.com,ecdsa-sha2-nistp384,ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521,ecdsa-sha2-nistp521-cert-v01@openssh.com,ssh-ed25519,ssh-ed25519-cert-v01@openssh.com,rsa-sha2-256,rsa-sha2-256-cert-v01@openssh.com,rsa-sha2-512,rsa-sha2-512-cert-v01@openssh.com
PubkeyAcceptedAlgorithms ecdsa-sha2-nistp256,ecdsa-sha2-nistp256-cert-v01@openssh.com,ecdsa-sha2-nistp384,ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521,ecdsa-sha2-nistp521-cert-v01@openssh.com,ssh-ed25519,ssh-ed25519-cert-v01@openssh.com,rsa-sha2-256,rsa-sha2-256-cert-v01@openssh.com,rsa-sha2-512,rsa-sha2-512-cert-v01@openssh.com
CASignatureAlgorithms ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,rsa-sha2-256,rsa-sha2-512
RequiredRSASize 2048
";

/// Debian 12 and Ubuntu 24.04 ship the same file.
const DEBIAN_SSH_CONFIG: &str = "\
# This is the ssh client system-wide configuration file.  See
# ssh_config(5) for more information.  This file provides defaults for
# users, and the values can be changed in per-user configuration files
# or on the command line.

Include @ETC@/ssh/ssh_config.d/*.conf

Host *
#   ForwardAgent no
#   ForwardX11 no
#   ForwardX11Trusted yes
#   PasswordAuthentication yes
#   HostbasedAuthentication no
#   GSSAPIAuthentication no
#   GSSAPIDelegateCredentials no
#   GSSAPIKeyExchange no
#   GSSAPITrustDNS no
#   BatchMode no
#   CheckHostIP no
#   AddressFamily any
#   ConnectTimeout 0
#   StrictHostKeyChecking ask
#   IdentityFile ~/.ssh/id_rsa
#   IdentityFile ~/.ssh/id_dsa
#   IdentityFile ~/.ssh/id_ecdsa
#   IdentityFile ~/.ssh/id_ed25519
#   Port 22
#   Ciphers aes128-ctr,aes192-ctr,aes256-ctr,aes128-cbc,3des-cbc
#   MACs hmac-md5,hmac-sha1,umac-64@openssh.com
#   EscapeChar ~
#   Tunnel no
#   TunnelDevice any:any
#   PermitLocalCommand no
#   VisualHostKey no
#   ProxyCommand ssh -q -W %h:%p gateway.example.com
#   RekeyLimit 1G 1h
#   UserKnownHostsFile ~/.ssh/known_hosts.d/%k
    SendEnv LANG LC_*
    HashKnownHosts yes
    GSSAPIAuthentication yes
";

/// macOS: Apple's Include line, then `Host *`; users' own files carry Apple's keywords.
const MACOS_SSH_CONFIG: &str = "\
#	$OpenBSD: ssh_config,v 1.35 2020/07/17 03:43:42 dtucker Exp $

# This Include directive is not part of the default ssh_config shipped with
# OpenSSH. Options set in the included configuration files generally override
# those that follow.  The defaults only apply to options that have not been
# explicitly set.  Options that appear multiple times keep the first value set,
# unless they are a multivalue option such as IdentityFile.
Include @ETC@/ssh/ssh_config.d/*

# Host *
#   ForwardAgent no
#   ForwardX11 no
#   PasswordAuthentication yes
#   Port 22
#   Protocol 2
#   Cipher 3des

Host *
	SendEnv LANG LC_*
";

const MACOS_100_CONF: &str = "\
# Settings added by macOS
Host *
  SendEnv LANG LC_*
";

/// What users (and Ansible or ClusterShell) put in their own files on these systems.
/// `@HOME@` is the test's HOME: OpenSSH finds `~` through passwd, and really opens the
/// control socket.
const USER_CONFIG_EXTRAS: &str = "\
IgnoreUnknown UseKeychain
Host *
  UseKeychain yes
  AddKeysToAgent yes
  IdentityFile ~/.ssh/id_ed25519
  ControlMaster auto
  ControlPersist 60s
  ControlPath @HOME@/.ansible/cp/%C
  ServerAliveInterval 30
  ForwardX11 no
  VisualHostKey no
";

/// A temporary `/etc`: writes each `(path, text)` with `@ETC@` replaced by its root, and
/// returns the root.
fn etc_tree(files: &[(&str, &str)]) -> tempfile::TempDir {
    let root = tempfile::Builder::new()
        .prefix("smssh-etc-")
        .tempdir()
        .expect("cannot create the temporary /etc");
    for (path, text) in files {
        let file = root.path().join(path);
        fs::create_dir_all(file.parent().expect("a file has a parent"))
            .expect("cannot create a directory of the temporary /etc");
        let text = text.replace("@ETC@", &root.path().display().to_string());
        fs::write(&file, text).expect("cannot write a file of the temporary /etc");
    }
    root
}

/// The file both clients read with -F: the user's config first, then the system's, as
/// OpenSSH reads `~/.ssh/config` before `/etc/ssh/ssh_config`.
fn combined_config(cluster: &Cluster, etc: &Path, user_extras: &str) -> std::path::PathBuf {
    let home = cluster.home.path();
    fs::create_dir_all(home.join(".ansible/cp")).expect("cannot create the control path");
    let user = home.join(".ssh/user-extras");
    let user_extras = user_extras.replace("@HOME@", &home.display().to_string());
    fs::write(&user, user_extras).expect("cannot write the user's extra config");
    let path = etc.join("combined_config");
    fs::write(
        &path,
        format!(
            "Include {}\nInclude {}\nInclude {}\n",
            cluster.ssh_config_path().display(),
            user.display(),
            etc.join("ssh/ssh_config").display()
        ),
    )
    .expect("cannot write the combined config");
    path
}

fn last_logged(worker: &Worker, prefix: &str) -> String {
    let log = worker.log().replace(" [preauth]", "");
    let rest = log
        .lines()
        .rev()
        .find_map(|line| line.split_once(prefix).map(|(_, rest)| rest.to_owned()))
        .unwrap_or_else(|| panic!("sshd logged no {prefix:?}; its log:\n{log}"));
    rest.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// (kex, cipher) of the most recent session, from sshd's log.
fn negotiated(worker: &Worker) -> (String, String) {
    (
        last_logged(worker, "kex: algorithm: "),
        last_logged(worker, "kex: client->server cipher: "),
    )
}

/// Logs in with smssh, then with OpenSSH's ssh, both reading `config`; returns what sshd
/// logged for each.
fn both_log_in(cluster: &Cluster, config: &Path) -> ((String, String), (String, String)) {
    let worker = &cluster.workers[0];
    let config = config.display().to_string();
    let out: Output =
        run(cluster
            .command("smssh")
            .args(["-F", &config, "127.0.0.2", "echo smssh"]));
    assert_success(&out);
    assert_stdout_eq(&out, "smssh\n");
    let smssh = negotiated(worker);
    let out = run(cluster
        .openssh("ssh")
        .args(["-F", &config, "127.0.0.2", "echo ssh"]));
    assert_success(&out);
    (smssh, negotiated(worker))
}

fn debug_cluster() -> Cluster {
    let mut cluster = Cluster::new(1);
    cluster.workers[0].set_global_config("LogLevel DEBUG");
    cluster
}

#[test]
fn amazon_linux_rhel_fedora_crypto_policy_applies_in_match_final() {
    let cluster = debug_cluster();
    let etc = etc_tree(&[
        ("ssh/ssh_config", REDHAT_SSH_CONFIG),
        ("ssh/ssh_config.d/50-redhat.conf", REDHAT_50_CONF),
        (
            "crypto-policies/back-ends/openssh.config",
            CRYPTO_POLICY_DEFAULT,
        ),
    ]);
    let config = combined_config(&cluster, etc.path(), USER_CONFIG_EXTRAS);
    let (smssh, openssh) = both_log_in(&cluster, &config);
    // The policy puts aes256-gcm first; smssh's own default would have chosen aes128-gcm.
    let want = (
        "curve25519-sha256".to_owned(),
        "aes256-gcm@openssh.com".to_owned(),
    );
    assert_eq!(smssh, want, "smssh");
    assert_eq!(openssh, want, "OpenSSH's ssh");
    // Settings from the command line still beat the policy's `Match final` block.
    let out = run(cluster.command("smssh").args([
        "-F",
        &config.display().to_string(),
        "-c",
        "aes128-ctr",
        "127.0.0.2",
        "true",
    ]));
    assert_success(&out);
    assert_eq!(negotiated(&cluster.workers[0]).1, "aes128-ctr");
}

#[test]
fn the_fips_policy_is_followed_to_a_nist_curve() {
    let cluster = debug_cluster();
    let etc = etc_tree(&[
        ("ssh/ssh_config", REDHAT_SSH_CONFIG),
        ("ssh/ssh_config.d/50-redhat.conf", REDHAT_50_CONF),
        (
            "crypto-policies/back-ends/openssh.config",
            CRYPTO_POLICY_FIPS,
        ),
    ]);
    let config = combined_config(&cluster, etc.path(), "");
    let (smssh, openssh) = both_log_in(&cluster, &config);
    let want = (
        "ecdh-sha2-nistp256".to_owned(),
        "aes256-gcm@openssh.com".to_owned(),
    );
    assert_eq!(smssh, want, "smssh");
    assert_eq!(openssh, want, "OpenSSH's ssh");
}

#[test]
fn debian_ubuntu_and_macos_files_are_read_as_openssh_reads_them() {
    let cluster = debug_cluster();
    let debian = etc_tree(&[
        ("ssh/ssh_config", DEBIAN_SSH_CONFIG),
        // Ubuntu's cloud images add this drop-in.
        (
            "ssh/ssh_config.d/50-cloud-init.conf",
            "Host *\n    ServerAliveInterval 60\n",
        ),
    ]);
    let macos = etc_tree(&[
        ("ssh/ssh_config", MACOS_SSH_CONFIG),
        ("ssh/ssh_config.d/100-macos.conf", MACOS_100_CONF),
    ]);
    for etc in [&debian, &macos] {
        let config = combined_config(&cluster, etc.path(), USER_CONFIG_EXTRAS);
        let (smssh, _) = both_log_in(&cluster, &config);
        assert_eq!(smssh.1, "aes128-gcm@openssh.com");
    }
}

#[test]
fn match_criteria_choose_the_destination_end_to_end() {
    let cluster = Cluster::new(2);
    let me = String::from_utf8(run(std::process::Command::new("id").arg("-un")).stdout)
        .expect("id -un prints UTF-8")
        .trim()
        .to_owned();
    // The port comes only from the `Match final` block, so a login proves the second pass;
    // the host from `exec` (run by the user's shell) or from `localuser`.
    let etc = etc_tree(&[(
        "ssh/ssh_config",
        &format!(
            "Match originalhost alias-* exec \"test %n = alias-two\"\n\
             \x20   HostName 127.0.0.3\n\
             Match originalhost alias-* localuser {me},nobody\n\
             \x20   HostName 127.0.0.2\n\
             Match final host 127.0.0.? user {me} !originalhost 127.0.0.*\n\
             \x20   Port {port}\n",
            port = cluster.port
        ),
    )]);
    let config = combined_config(&cluster, etc.path(), "");
    let config = config.display().to_string();
    // $SSH_CONNECTION's third field is the address the server was reached at.
    let server_address = |out: &Output| {
        stdout(out)
            .split_whitespace()
            .nth(2)
            .unwrap_or_default()
            .to_owned()
    };
    for (alias, address) in [("alias-one", "127.0.0.2"), ("alias-two", "127.0.0.3")] {
        let out =
            run(cluster
                .command("smssh")
                .args(["-F", &config, alias, "echo $SSH_CONNECTION"]));
        assert_success(&out);
        assert_eq!(server_address(&out), address, "smssh {alias}");
        let out = run(cluster
            .openssh("ssh")
            .args(["-F", &config, alias, "echo $SSH_CONNECTION"]));
        assert_success(&out);
        assert_eq!(server_address(&out), address, "ssh {alias}");
    }
    // `Tag` and `Match tagged` (OpenSSH 9.4, newer than the local ssh): -o Tag=direct turns
    // the first HostName block on; without it the `localuser` block decides.
    let tagged = etc.path().join("tagged_config");
    fs::write(
        &tagged,
        format!(
            "Match tagged direct originalhost alias-*\n    HostName 127.0.0.3\n\
             Match all\nInclude {config}\n"
        ),
    )
    .expect("cannot write the tagged config");
    let tagged = tagged.display().to_string();
    let out = run(cluster.command("smssh").args([
        "-F",
        &tagged,
        "-o",
        "Tag=direct",
        "alias-three",
        "echo $SSH_CONNECTION",
    ]));
    assert_success(&out);
    assert_eq!(server_address(&out), "127.0.0.3");
    let out =
        run(cluster
            .command("smssh")
            .args(["-F", &tagged, "alias-three", "echo $SSH_CONNECTION"]));
    assert_success(&out);
    assert_eq!(server_address(&out), "127.0.0.2");
}
