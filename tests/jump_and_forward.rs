//! Jump hosts and proxy commands against real sshd: a bastion (OpenSSH sshd, one per
//! connection with `sshd -i`) that straddles the tests' network and a hidden network
//! namespace, and workers inside that namespace that nothing else can reach. Each behaviour
//! is compared with OpenSSH's own ssh given the same configuration.

mod common;

use std::fs;
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::*;

const BASTION: &str = "127.0.77.1";

/// A cluster (for moto, the secret, HOME and the key), a bastion, and `hidden` workers at
/// 127.0.77.2, .3, ... that only the bastion reaches. HOME's ssh config gives them all the
/// one port, and known_hosts holds all their host keys.
struct Site {
    cluster: Cluster,
    bastion: Bastion,
    hidden: Vec<Worker>,
    port: u16,
    // Dropped last: the hidden workers and the bastion's sessions live in it.
    _netns: Netns,
}

fn site(hidden: usize) -> Site {
    let cluster = Cluster::new(1);
    let netns = Netns::new();
    let port = free_port(&[BASTION]);
    let bastion = Bastion::new(&netns, BASTION, port);
    bastion.worker.authorize(&cluster.public_key);
    let hidden: Vec<Worker> = (0..hidden)
        .map(|i| {
            let worker = Worker::new_hidden(&netns, &format!("127.0.77.{}", i + 2), port);
            worker.authorize(&cluster.public_key);
            worker
        })
        .collect();
    let mut config = fs::OpenOptions::new()
        .append(true)
        .open(cluster.ssh_config_path())
        .expect("open HOME/.ssh/config");
    writeln!(config, "Host 127.0.77.*\n    Port {port}").expect("append to HOME/.ssh/config");
    let mut known = fs::OpenOptions::new()
        .append(true)
        .open(cluster.known_hosts_path())
        .expect("open known_hosts");
    for worker in std::iter::once(&bastion.worker).chain(&hidden) {
        writeln!(known, "{}", worker.host_key_line()).expect("append to known_hosts");
    }
    Site {
        cluster,
        bastion,
        hidden,
        port,
        _netns: netns,
    }
}

impl Site {
    fn smssh(&self, args: &[&str]) -> Output {
        run(self.cluster.command("smssh").args(args))
    }

    /// Puts `text` before HOME's ssh config (first value wins, so it beats the rest).
    fn prepend_config(&self, text: &str) {
        let path = self.cluster.ssh_config_path();
        let old = fs::read_to_string(&path).expect("read HOME/.ssh/config");
        fs::write(&path, format!("{text}\n{old}")).expect("write HOME/.ssh/config");
    }

    /// OpenSSH's ssh with a config file of its own that says what smssh gets from HOME and
    /// the secret (key, known_hosts, no prompts) and then includes HOME's config. OpenSSH
    /// passes `-F` to the ssh it runs for each jump host, and no `-o`, so everything is in
    /// the file. The environment is the binaries' own, so that a ProxyCommand running smssh
    /// finds the secret.
    fn openssh(&self) -> Command {
        let config = self.cluster.scratch_file(
            "openssh_config",
            format!(
                "Host *\n    IdentityFile {key}\n    IdentitiesOnly yes\n    IdentityAgent none\n    UserKnownHostsFile {known}\n    GlobalKnownHostsFile /dev/null\n    StrictHostKeyChecking yes\n    BatchMode yes\n    ConnectTimeout 10\nInclude {home_config}\n",
                key = self.cluster.key_path.display(),
                known = self.cluster.known_hosts_path().display(),
                home_config = self.cluster.ssh_config_path().display(),
            )
            .as_bytes(),
        );
        let mut cmd = harness_environment(
            Command::new("ssh"),
            self.cluster.home.path(),
            &self.cluster.moto,
        );
        cmd.arg("-F").arg(config);
        cmd
    }

    fn home_of(&self, index: usize) -> String {
        format!("{}\n", self.hidden[index].sftp_home().display())
    }
}

fn smssh_path() -> PathBuf {
    PathBuf::from(binary_path("smssh"))
}

#[test]
fn a_hidden_host_is_refused_directly_and_reached_through_the_bastion_as_openssh_does() {
    let site = site(2);
    let target = "127.0.77.2";

    // Nothing listens at the hidden address in our namespace: both clients are refused.
    let direct = site.smssh(&[target, "true"]);
    assert_exit_code(&direct, 255);
    assert_stderr_contains(&direct, "connection refused");
    let openssh_direct = run(site.openssh().args([target, "true"]));
    assert_exit_code(&openssh_direct, 255);

    let jumped = site.smssh(&["-J", BASTION, target, "echo $HOME"]);
    assert_success(&jumped);
    assert_stdout_eq(&jumped, &site.home_of(0));
    let openssh_jumped = run(site.openssh().args(["-J", BASTION, target, "echo $HOME"]));
    assert_success(&openssh_jumped);
    assert_eq!(stdout(&jumped), stdout(&openssh_jumped));

    // Per-hop user and port, the ssh:// form, and two hops (the second hidden host reached
    // from the first one's sshd).
    let with_user = format!("root@{BASTION}:{}", site.port);
    let uri = format!("ssh://root@{BASTION}:{}", site.port);
    let two_hops = format!("{BASTION},{target}");
    for jump in [with_user.as_str(), uri.as_str(), two_hops.as_str()] {
        let out = site.smssh(&["-J", jump, "127.0.77.3", "echo $HOME"]);
        assert_success(&out);
        assert_stdout_eq(&out, &site.home_of(1));
        let theirs = run(site
            .openssh()
            .args(["-J", jump, "127.0.77.3", "echo $HOME"]));
        assert_success(&theirs);
        assert_eq!(stdout(&out), stdout(&theirs), "-J {jump}");
    }
    assert!(
        site.bastion.connections() >= 8,
        "every jump went through the bastion"
    );
}

#[test]
fn proxyjump_in_ssh_config_serves_smssh_smscp_and_fanouts_and_none_turns_it_off() {
    let site = site(2);
    site.prepend_config(&format!(
        "Host 127.0.77.* !{BASTION}\n    ProxyJump {BASTION}\n"
    ));

    let out = site.smssh(&["127.0.77.2", "echo $HOME"]);
    assert_success(&out);
    assert_stdout_eq(&out, &site.home_of(0));

    // -J none beats the file: a direct connection, refused.
    let none = site.smssh(&["-J", "none", "127.0.77.2", "true"]);
    assert_exit_code(&none, 255);
    assert_stderr_contains(&none, "connection refused");

    let fanout = site.smssh(&["-w", "127.0.77.[2-3]", "echo $HOME"]);
    assert_success(&fanout);
    for (index, addr) in ["127.0.77.2", "127.0.77.3"].iter().enumerate() {
        assert!(
            stdout(&fanout).contains(&format!("{addr}: {}", site.home_of(index))),
            "{}",
            describe(&fanout)
        );
    }

    let source = site
        .cluster
        .scratch_file("payload", b"through the bastion\n");
    let copy = run(site
        .cluster
        .command("smscp")
        .arg(&source)
        .arg("127.0.77.3:copied"));
    assert_success(&copy);
    assert_eq!(
        fs::read(site.hidden[1].sftp_home().join("copied")).expect("the copy arrived"),
        b"through the bastion\n"
    );
    let pushed = run(site
        .cluster
        .command("smscp")
        .arg(&source)
        .arg("127.0.77.[2-3]:pushed"));
    assert_success(&pushed);
    for worker in &site.hidden {
        assert_eq!(
            fs::read(worker.sftp_home().join("pushed")).expect("the push arrived"),
            b"through the bastion\n"
        );
    }
}

#[test]
fn every_hops_host_key_is_verified() {
    let site = site(1);
    // known_hosts without the bastion: the first hop is refused, by both clients.
    let known = fs::read_to_string(site.cluster.known_hosts_path()).expect("read known_hosts");
    let without_bastion: String = known
        .lines()
        .filter(|line| !line.starts_with(&format!("[{BASTION}]")))
        .map(|line| format!("{line}\n"))
        .collect();
    fs::write(site.cluster.known_hosts_path(), without_bastion).expect("write known_hosts");
    let out = site.smssh(&["-J", BASTION, "127.0.77.2", "true"]);
    assert_exit_code(&out, 255);
    assert_stderr_contains(
        &out,
        &format!("{BASTION} port {}: host key verification failed", site.port),
    );
    let theirs = run(site.openssh().args(["-J", BASTION, "127.0.77.2", "true"]));
    assert_exit_code(&theirs, 255);

    // The bastion known, the target's key changed: the last hop is refused.
    fs::write(
        site.cluster.known_hosts_path(),
        format!(
            "{}\n[127.0.77.2]:{} {}\n",
            site.bastion.worker.host_key_line(),
            site.port,
            site.cluster.public_key
        ),
    )
    .expect("write known_hosts");
    let changed = site.smssh(&["-J", BASTION, "127.0.77.2", "true"]);
    assert_exit_code(&changed, 255);
    assert_stderr_contains(&changed, "127.0.77.2 port");
    assert_stderr_contains(&changed, "HOST KEY CHANGED");
}

#[test]
fn a_jump_loop_is_refused_with_one_line() {
    let site = site(1);
    site.prepend_config(&format!("Host *\n    ProxyJump {BASTION}\n"));
    let out = site.smssh(&["127.0.77.2", "true"]);
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "jump host loop via");
    assert_eq!(stderr(&out).lines().count(), 1, "{}", describe(&out));
}

#[test]
fn proxycommand_expands_its_tokens_and_openssh_can_use_smssh_w_as_its_proxycommand() {
    let site = site(1);
    let tokens = site.cluster.scratch.path().join("tokens");
    site.prepend_config(&format!(
        "Host hidden\n    HostName 127.0.77.2\n    Port {port}\n    ProxyCommand sh -c 'echo \"%r %n %h %p %%\" >{tokens}; exec \"$0\" -W %h:%p {BASTION}' {smssh}\n",
        tokens = tokens.display(),
        port = site.port,
        smssh = smssh_path().display(),
    ));

    let ours = site.smssh(&["hidden", "echo $HOME"]);
    assert_success(&ours);
    assert_stdout_eq(&ours, &site.home_of(0));
    let user = stdout(&run(Command::new("id").arg("-un")));
    assert_eq!(
        fs::read_to_string(&tokens).expect("the proxy command ran"),
        format!("{} hidden 127.0.77.2 {} %\n", user.trim(), site.port)
    );

    // OpenSSH's ssh through smssh -W: smssh is the transport, OpenSSH does the rest.
    fs::remove_file(&tokens).expect("remove the token file");
    let theirs = run(site.openssh().args(["hidden", "echo $HOME"]));
    assert_success(&theirs);
    assert_stdout_eq(&theirs, &site.home_of(0));
    assert!(tokens.is_file(), "OpenSSH ran the same ProxyCommand");

    // A token smssh does not expand is refused rather than passed to the shell.
    site.prepend_config(&format!(
        "Host odd\n    HostName 127.0.77.2\n    ProxyCommand {} -W %h:%p %C\n",
        smssh_path().display()
    ));
    let odd = site.smssh(&["odd", "true"]);
    assert_exit_code(&odd, 255);
    assert_stderr_contains(&odd, "%C is not a token smssh expands");
}
