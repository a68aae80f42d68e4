//! lightsshd (benches/lightsshd), the light SSH server of the simulated 10,000-host benchmark,
//! speaks real SSH: smssh and smscp fan out to 50 of its loopback addresses with the key from
//! moto, OpenSSH's own ssh logs in to it, and its counters say what each of them did. If the
//! simulator only understood our client, the benchmark's figures would measure nothing.
//!
//! The server's binary belongs to the workspace member `lightsshd`; it is found next to this
//! package's binaries, so build the workspace first (`cargo build --workspace`;
//! scripts/test.sh does).

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use sha2::{Digest, Sha256};

const HOSTS: u64 = 50;

fn lightsshd_binary() -> PathBuf {
    let path = Path::new(binary_path("smssh")).with_file_name("lightsshd");
    assert!(
        path.is_file(),
        "{} not found: build the workspace first (cargo build --workspace; scripts/test.sh does)",
        path.display()
    );
    path
}

/// A HOME whose `.ssh` holds an ed25519 client key (`id`, `id.pub`), an ssh_config sending
/// every 127.* host to lightsshd's port, and a known_hosts line with the wildcard pattern
/// `[127.*]:PORT` for its host key, started with that key authorized.
struct Simulated {
    home: tempfile::TempDir,
    server: Lightsshd,
}

impl Simulated {
    fn start() -> Simulated {
        let home = tempfile::Builder::new()
            .prefix("smssh-lightsshd-home-")
            .tempdir()
            .expect("cannot create the test HOME");
        let ssh = home.path().join(".ssh");
        fs::create_dir_all(&ssh).expect("cannot create HOME/.ssh");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "smssh-test", "-f"])
            .arg(ssh.join("id"))
            .stdin(Stdio::null())
            .status()
            .expect("cannot run ssh-keygen");
        assert!(status.success(), "ssh-keygen failed: {status}");
        let server = Lightsshd::start(&lightsshd_binary(), &ssh.join("id.pub"), home.path());
        fs::write(
            ssh.join("config"),
            format!("Host 127.*\n    Port {}\n", server.port),
        )
        .expect("cannot write HOME/.ssh/config");
        fs::write(
            ssh.join("known_hosts"),
            format!("[127.*]:{} {}\n", server.port, server.host_key_line),
        )
        .expect("cannot write HOME/.ssh/known_hosts");
        Simulated { home, server }
    }

    fn ssh_dir(&self) -> PathBuf {
        self.home.path().join(".ssh")
    }

    /// OpenSSH's ssh with this HOME's config, known_hosts and `key`, never prompting.
    fn openssh(&self, key: &Path) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.env_clear()
            .env("HOME", self.home.path())
            .arg("-F")
            .arg(self.ssh_dir().join("config"))
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.ssh_dir().join("known_hosts").display()
            ))
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "StrictHostKeyChecking=yes"])
            .args(["-o", "BatchMode=yes"])
            .args(["-o", "IdentitiesOnly=yes"])
            .args(["-o", "IdentityAgent=none"])
            .arg("-i")
            .arg(key)
            .stdin(Stdio::null());
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        cmd
    }
}

#[test]
fn smssh_and_smscp_fan_out_to_fifty_simulated_hosts() {
    let sim = Simulated::start();
    let moto = Moto::start();
    let private = fs::read_to_string(sim.ssh_dir().join("id")).expect("the private key");
    let public = fs::read_to_string(sim.ssh_dir().join("id.pub")).expect("the public key");
    moto.put_secret_string(SECRET_ID, &key_secret_json(&private, public.trim_end()));
    let hosts = Lightsshd::hostlist(HOSTS as usize);
    assert_eq!(hosts, "127.1.0.[1-50]");
    let command =
        |bin: &str| harness_environment(Command::new(binary_path(bin)), sim.home.path(), &moto);

    let out = run(command("smssh").args(["-w", &hosts, "--", "true"]));
    assert_success(&out);

    // Not a multiple of any SFTP request size, so a lost or repeated piece shows in both the
    // byte count and the checksum.
    let payload: Vec<u8> = (0..100_003u32).map(|i| (i * 7 % 251) as u8).collect();
    let source = sim.home.path().join("payload.bin");
    fs::write(&source, &payload).expect("cannot write the payload");
    let target = format!("{hosts}:payload.bin");
    let out = run(command("smscp").arg(&source).arg(&target));
    assert_success(&out);

    let counters = sim.server.stop();
    let count = |name: &str| counters.get(name).copied().unwrap_or(0);
    let summary = format!("{counters:?}");
    assert_eq!(count("logins"), 2 * HOSTS, "{summary}");
    assert_eq!(count("exec_true"), HOSTS, "{summary}");
    assert_eq!(count("exec_other"), 0, "{summary}");
    assert_eq!(count("auth_rejected"), 0, "{summary}");
    assert_eq!(count("sftp_sessions"), HOSTS, "{summary}");
    assert_eq!(count("files"), HOSTS, "{summary}");
    assert_eq!(count("bytes"), HOSTS * payload.len() as u64, "{summary}");
    let digest: String = Sha256::digest(&payload)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(count(&format!("sha256 {digest}")), HOSTS, "{summary}");
    assert_eq!(count("refused") + count("accept_errors"), 0, "{summary}");
}

#[test]
fn openssh_logs_in_and_runs_true_and_nothing_else() {
    let sim = Simulated::start();
    let key = sim.ssh_dir().join("id");

    let out = run(sim.openssh(&key).args(["127.1.3.7", "true"]));
    assert_success(&out);
    let out = run(sim.openssh(&key).args(["127.1.3.8", "false"]));
    assert_exit_code(&out, 1);
    let out = run(sim.openssh(&key).args(["127.1.3.9", "cat /etc/passwd"]));
    assert_exit_code(&out, 127);
    assert_stderr_contains(&out, "only `true` and `false` run here");

    // Another key is refused: OpenSSH's own exit status for a failed login.
    let other = sim.ssh_dir().join("other");
    let status = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&other)
        .stdin(Stdio::null())
        .status()
        .expect("cannot run ssh-keygen");
    assert!(status.success(), "ssh-keygen failed: {status}");
    let out = run(sim.openssh(&other).args(["127.1.3.10", "true"]));
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "Permission denied");

    let counters = sim.server.stop();
    let count = |name: &str| counters.get(name).copied().unwrap_or(0);
    let summary = format!("{counters:?}");
    assert_eq!(count("connections"), 4, "{summary}");
    assert_eq!(count("logins"), 3, "{summary}");
    assert_eq!(count("exec_true"), 1, "{summary}");
    assert_eq!(count("exec_false"), 1, "{summary}");
    assert_eq!(count("exec_other"), 1, "{summary}");
    assert!(count("auth_rejected") >= 1, "{summary}");
}
