//! `smssh agent`: OpenSSH's own clients (ssh, scp, sftp, ssh-add) use the secret's key
//! through the agent against real sshd workers, with no key file anywhere; the wrapper's exit
//! status, the socket's modes and its removal on every way out; a peer of another uid is
//! refused; `--confirm` asks SSH_ASKPASS; a rotated secret is served after `--refresh`.

mod common;

use std::collections::hash_map::RandomState;
use std::fs;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// `smssh agent [agent_args] -- sh -c SCRIPT`, in the cluster's environment, run from the
/// cluster's scratch directory. The script gets `$SSHOPTS`: the options that point OpenSSH at
/// the cluster's config and known_hosts (OpenSSH finds `~` through the password database,
/// not `$HOME`). IdentitiesOnly is not set, so ssh offers whatever it finds besides the agent.
fn agent_script(cluster: &Cluster, agent_args: &[&str], script: &str) -> Command {
    let mut cmd = cluster.command("smssh");
    cmd.current_dir(cluster.scratch.path())
        .env("SSHOPTS", openssh_options(cluster))
        .arg("agent")
        .args(agent_args)
        .args(["--", "sh", "-c", script]);
    cmd
}

fn openssh_options(cluster: &Cluster) -> String {
    format!(
        "-F {} -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
         -o StrictHostKeyChecking=yes -o BatchMode=yes",
        cluster.ssh_config_path().display(),
        cluster.known_hosts_path().display(),
    )
}

/// The cluster's key as OpenSSH's ssh-keygen fingerprints it.
fn fingerprint(public_key_line: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("k.pub");
    fs::write(&path, format!("{public_key_line}\n")).unwrap();
    let out = run(Command::new("ssh-keygen").arg("-lf").arg(&path));
    assert_success(&out);
    stdout(&out).split_whitespace().nth(1).unwrap().to_owned()
}

/// The lines of a private key file's base64 body that only this key has: lines every key of
/// its type shares (the format's header) and any line found in the public key are left out.
fn private_body(private_key: &str, public_key: &str, same_type: &str) -> Vec<String> {
    private_key
        .lines()
        .filter(|l| !l.starts_with("-----") && l.len() >= 40)
        .filter(|l| !same_type.contains(l) && !public_key.contains(l))
        .map(str::to_owned)
        .collect()
}

/// Every regular file under `root` (not following symbolic links) that holds any of `needles`.
fn files_holding(root: &Path, needles: &[String]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            // Build trees (other checkouts' `target`) hold compiled code, not copies of a key
            // made at run time; skipping them keeps the walk of a shared /tmp short.
            if kind.is_dir() && entry.file_name() != "target" {
                stack.push(entry.path());
            } else if kind.is_file() && entry.metadata().is_ok_and(|m| m.len() < 16 << 20) {
                if let Ok(bytes) = fs::read(entry.path()) {
                    let text = String::from_utf8_lossy(&bytes);
                    if needles.iter().any(|n| text.contains(n.as_str())) {
                        found.push(entry.path());
                    }
                }
            }
        }
    }
    found
}

/// A cluster whose key exists only in moto: the key file the harness generated is removed.
fn cluster_without_key_file(kind: &str) -> Cluster {
    let cluster = Cluster::with_key_type(1, kind);
    fs::remove_file(&cluster.key_path).unwrap();
    cluster
}

#[test]
fn openssh_ssh_scp_and_sftp_log_in_through_the_agent_with_no_key_file_anywhere() {
    let cluster = cluster_without_key_file("ed25519");
    let worker = &cluster.workers[0];
    let scratch = cluster.scratch.path();
    fs::write(scratch.join("up.txt"), "through the agent\n").unwrap();
    fs::write(scratch.join("batch"), "put up.txt sftp-up.txt\nls\n").unwrap();
    let script = format!(
        "set -e
         ssh $SSHOPTS {host} 'echo remote says hello'
         scp $SSHOPTS up.txt {host}:scp-up.txt
         sftp $SSHOPTS -b batch {host}",
        host = worker.addr()
    );
    let out = run(&mut agent_script(&cluster, &[], &script));
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.contains("remote says hello"), "{}", describe(&out));
    for name in ["scp-up.txt", "sftp-up.txt"] {
        let copied = fs::read_to_string(worker.sftp_home().join(name)).unwrap();
        assert_eq!(copied, "through the agent\n", "{name}");
    }
    // Every login above used the agent's key: the worker authorizes only it, and no
    // private key file exists for OpenSSH to find.
    let (other_private, _) = cluster.generate_key("ed25519", "openssh", None);
    let needles = private_body(&cluster.private_key, &cluster.public_key, &other_private);
    assert!(!needles.is_empty());
    // The search finds a planted copy, so an empty result below means something.
    let planted = scratch.join("planted");
    fs::write(&planted, &cluster.private_key).unwrap();
    assert_eq!(files_holding(scratch, &needles), vec![planted.clone()]);
    fs::remove_file(&planted).unwrap();
    for file in fs::read_dir(scratch).unwrap().flatten() {
        if file.file_name().to_string_lossy().starts_with("id_") {
            fs::remove_file(file.path()).unwrap();
        }
    }
    for root in [cluster.home.path(), Path::new("/tmp"), scratch] {
        let holding = files_holding(root, &needles);
        assert!(holding.is_empty(), "key material in {holding:?}");
    }
}

#[test]
fn rsa_and_ecdsa_keys_sign_for_openssh() {
    for kind in ["rsa", "ecdsa"] {
        let cluster = cluster_without_key_file(kind);
        // OpenSSH 9.2 asks the agent for rsa-sha2-512 or -256 (the flags); an ssh-rsa (SHA-1)
        // signature would be refused by this sshd's defaults anyway.
        let script = format!(
            "ssh $SSHOPTS {} 'echo {kind} ok'",
            cluster.workers[0].addr()
        );
        let out = run(&mut agent_script(&cluster, &[], &script));
        assert_success(&out);
        assert_stdout_eq(&out, &format!("{kind} ok\n"));
    }
}

#[test]
fn ssh_add_lists_the_key_and_its_secret_and_every_change_is_refused() {
    let cluster = cluster_without_key_file("ed25519");
    let (_, other_public, other_file) = cluster.generate_key_file("ed25519", "openssh", None);
    let script = format!(
        "ssh-add -l; echo \"list=$?\"
         ssh-add {other} 2>&1; echo \"add=$?\"
         ssh-add -d {other}.pub 2>&1; echo \"remove=$?\"
         ssh-add -D 2>&1; echo \"remove-all=$?\"
         echo pw | SSH_ASKPASS= ssh-add -x </dev/null 2>&1; echo \"lock=$?\"
         ssh-add -l; echo \"list=$?\"",
        other = other_file.display()
    );
    let version = cluster
        .moto
        .version_with_stage(SECRET_ID, "AWSCURRENT")
        .unwrap();
    let out = run(&mut agent_script(&cluster, &[], &script));
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    let listing = format!(
        "256 {} {SECRET_ID} (stage AWSCURRENT, version {version}) (ED25519)",
        fingerprint(&cluster.public_key)
    );
    assert_eq!(lines.first().copied(), Some(listing.as_str()), "{text}");
    assert_eq!(lines.get(1).copied(), Some("list=0"), "{text}");
    for refused in ["add=1", "remove=1", "remove-all=1"] {
        assert!(lines.contains(&refused), "{refused} missing: {text}");
    }
    assert!(!text.contains(&fingerprint(&other_public)), "{text}");
    assert_eq!(lines.last().copied(), Some("list=0"), "{text}");
    assert_eq!(lines[lines.len() - 2], listing, "{text}");
}

#[test]
fn the_wrapper_exits_with_the_commands_status_and_removes_its_socket() {
    let cluster = cluster_without_key_file("ed25519");
    let script = "echo \"$SSH_AUTH_SOCK\"; echo \"$SSH_AGENT_PID\"
                  stat -c %a \"$(dirname \"$SSH_AUTH_SOCK\")\" \"$SSH_AUTH_SOCK\"; exit 7";
    let mut cmd = agent_script(&cluster, &[], script);
    let out = run(&mut cmd);
    assert_exit_code(&out, 7);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4, "{}", describe(&out));
    let socket = Path::new(lines[0]);
    assert!(lines[1].parse::<u32>().is_ok(), "{}", describe(&out));
    assert_eq!(lines[2], "700", "directory mode");
    assert_eq!(lines[3], "600", "socket mode");
    assert!(!socket.exists(), "socket left behind");
    assert!(!socket.parent().unwrap().exists(), "directory left behind");

    // A command killed by a signal: 128+N, as a shell reports it.
    let out = run(&mut agent_script(&cluster, &[], "kill -TERM $$"));
    assert_exit_code(&out, 143);
}

/// Polls for `path` to exist and hold a line, for ten seconds at most.
fn wait_for_line(path: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(text) = fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text.trim_end().to_owned();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn sigterm_and_sigint_to_the_agent_remove_the_socket() {
    let cluster = cluster_without_key_file("ed25519");
    for (signal, code) in [("TERM", 143), ("INT", 130)] {
        let note = cluster.scratch.path().join(format!("socket-{signal}"));
        let script = format!("echo \"$SSH_AUTH_SOCK\" > {}; sleep 30", note.display());
        let running = spawn(&mut agent_script(&cluster, &[], &script));
        let socket = PathBuf::from(wait_for_line(&note));
        assert!(socket.exists());
        let killed = run(Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(running.id().to_string()));
        assert_success(&killed);
        let out = running
            .wait_timeout(Duration::from_secs(10))
            .expect("the agent ends on the signal");
        assert_exit_code(&out, code);
        assert!(!socket.exists(), "{signal}: socket left behind");
        assert!(
            !socket.parent().unwrap().exists(),
            "{signal}: directory left behind"
        );
    }
}

/// A local account that exists for one test; removed on drop.
struct ThrowawayUser {
    name: String,
}

impl ThrowawayUser {
    fn create() -> ThrowawayUser {
        let suffix = RandomState::new().build_hasher().finish() & 0xffff_ffff;
        let name = format!("smssh-agt-{suffix:08x}");
        let added = retry_account_change(|| {
            Command::new("useradd")
                .args(["--no-create-home", "--shell", "/bin/sh"])
                .arg(&name)
                .status()
                .expect("useradd must be installed")
        });
        assert!(added, "useradd {name} failed");
        ThrowawayUser { name }
    }
}

impl Drop for ThrowawayUser {
    fn drop(&mut self) {
        retry_account_change(|| Command::new("userdel").arg(&self.name).status().unwrap());
    }
}

/// useradd and userdel give up at once when another test holds /etc/passwd's lock.
fn retry_account_change(mut change: impl FnMut() -> std::process::ExitStatus) -> bool {
    for _ in 0..50 {
        if change().success() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

#[test]
fn a_client_of_another_uid_is_refused() {
    assert!(nix::unistd::getuid().is_root(), "this test runs as root");
    let cluster = cluster_without_key_file("ed25519");
    let user = ThrowawayUser::create();
    // First the file modes keep the other user out; then, with the modes opened, the
    // SO_PEERCRED check does.
    let script = format!(
        "runuser -u {u} -- env SSH_AUTH_SOCK=\"$SSH_AUTH_SOCK\" ssh-add -l 2>&1; echo \"modes=$?\"
         chmod 755 \"$(dirname \"$SSH_AUTH_SOCK\")\"; chmod 666 \"$SSH_AUTH_SOCK\"
         runuser -u {u} -- env SSH_AUTH_SOCK=\"$SSH_AUTH_SOCK\" ssh-add -l 2>&1; echo \"peer=$?\"
         ssh-add -l; echo \"owner=$?\"",
        u = user.name
    );
    let out = run(&mut agent_script(&cluster, &[], &script));
    assert_success(&out);
    let text = stdout(&out);
    let fp = fingerprint(&cluster.public_key);
    assert_eq!(
        text.matches(&fp).count(),
        1,
        "only the owner sees the key: {text}"
    );
    assert!(text.contains("Permission denied"), "{text}");
    assert!(text.contains("modes=2"), "{text}");
    assert!(text.contains("error fetching identities"), "{text}");
    assert!(text.contains("peer=1"), "{text}");
    assert!(text.contains("owner=0"), "{text}");
    assert_stderr_contains(&out, "agent: refused a connection from uid");
}

#[test]
fn confirm_asks_ssh_askpass_naming_the_process() {
    let cluster = cluster_without_key_file("ed25519");
    let scratch = cluster.scratch.path();
    let asked = scratch.join("asked");
    let askpass = scratch.join("askpass");
    // Answers with the exit status the file `answer` holds, and records each question.
    fs::write(
        &askpass,
        format!(
            "#!/bin/sh\nprintf '%s|%s\\n' \"$SSH_ASKPASS_PROMPT\" \"$1\" >> {}\nexit $(cat {})\n",
            asked.display(),
            scratch.join("answer").display()
        ),
    )
    .unwrap();
    assert_success(&run(Command::new("chmod").arg("755").arg(&askpass)));
    let host = cluster.workers[0].addr();
    for (answer, allowed) in [("0", true), ("1", false)] {
        fs::write(scratch.join("answer"), answer).unwrap();
        let _ = fs::remove_file(&asked);
        let script = format!("ssh $SSHOPTS {host} 'echo confirmed login'");
        let mut cmd = agent_script(&cluster, &["--confirm"], &script);
        let out = run(cmd.env("SSH_ASKPASS", &askpass));
        assert_eq!(out.status.success(), allowed, "{}", describe(&out));
        let question = fs::read_to_string(&asked).expect("askpass was asked");
        assert!(
            question.starts_with("confirm|Allow use of key ssh-ed25519 SHA256:"),
            "{question}"
        );
        assert!(question.contains("Requested by process "), "{question}");
        assert!(question.contains("ssh -F"), "{question}");
        assert!(question.contains(host), "{question}");
    }
}

#[test]
fn a_rotated_secret_is_served_after_refresh_with_the_offered_previous_stage() {
    let cluster = cluster_without_key_file("ed25519");
    let old = fingerprint(&cluster.public_key);
    let (new_private, new_public) = cluster.generate_key("ed25519", "openssh", None);
    let new = fingerprint(&new_public);
    let scratch = cluster.scratch.path();
    let (ready, go) = (scratch.join("ready"), scratch.join("go"));
    let script = format!(
        "ssh-add -l; echo ready > {ready}
         while [ ! -e {go} ]; do sleep 0.1; done
         sleep 1.2; ssh-add -l",
        ready = ready.display(),
        go = go.display()
    );
    let running = spawn(&mut agent_script(
        &cluster,
        &["--refresh", "1s", "--offer-stages", "AWSPREVIOUS"],
        &script,
    ));
    wait_for_line(&ready);
    cluster.store_key_secret(SECRET_ID, &new_private, &new_public);
    fs::write(&go, "").unwrap();
    let out = running.wait_timeout(RUN_TIMEOUT).expect("the command ends");
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[0].contains(&old) && lines[0].contains("AWSCURRENT"),
        "{text}"
    );
    assert!(
        lines[1].contains(&new) && lines[1].contains("AWSCURRENT"),
        "{text}"
    );
    assert!(
        lines[2].contains(&old) && lines[2].contains("AWSPREVIOUS"),
        "{text}"
    );
}

#[test]
fn eval_s_starts_a_background_agent_that_k_stops() {
    let cluster = cluster_without_key_file("ed25519");
    let smssh = binary_path("smssh");
    let script = format!(
        "set -e
         eval \"$({smssh} agent -s)\"
         sock=$SSH_AUTH_SOCK
         ssh-add -l
         ssh $SSHOPTS {host} 'echo daemon login'
         eval \"$({smssh} agent -k)\"
         echo \"unset=${{SSH_AUTH_SOCK:-yes}}\"
         for i in $(seq 100); do [ -e \"$sock\" ] || break; sleep 0.1; done
         [ ! -e \"$sock\" ] && echo removed",
        host = cluster.workers[0].addr()
    );
    let mut cmd = harness_environment(Command::new("sh"), cluster.home.path(), &cluster.moto);
    cmd.current_dir(cluster.scratch.path())
        .env("SSHOPTS", openssh_options(&cluster))
        .args(["-c", &script]);
    let out = run(&mut cmd);
    assert_success(&out);
    let text = stdout(&out);
    assert!(text.starts_with("Agent pid "), "{text}");
    assert!(text.contains(&fingerprint(&cluster.public_key)), "{text}");
    assert!(text.contains("daemon login\n"), "{text}");
    assert!(text.contains(" killed\n"), "{text}");
    assert!(text.contains("unset=yes\nremoved\n"), "{text}");
}

#[test]
fn c_prints_csh_lines_and_a_and_t_bind_a_path_for_a_lifetime() {
    let cluster = cluster_without_key_file("ed25519");
    let socket = cluster.scratch.path().join("given.sock");
    let mut cmd = cluster.command("smssh");
    cmd.arg("agent").args(["-c", "-t", "2s", "-a"]).arg(&socket);
    let out = run(&mut cmd);
    assert_success(&out);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(
        lines[0],
        format!("setenv SSH_AUTH_SOCK {};", socket.display())
    );
    let pid: i32 = lines[1]
        .strip_prefix("setenv SSH_AGENT_PID ")
        .and_then(|rest| rest.strip_suffix(';'))
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(lines[2], format!("echo Agent pid {pid};"));
    let listed = run(Command::new("ssh-add")
        .arg("-l")
        .env("SSH_AUTH_SOCK", &socket));
    assert_success(&listed);
    // After the lifetime, the agent is gone and so is its socket.
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = || Path::new(&format!("/proc/{pid}")).exists();
    while (alive() || socket.exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!alive(), "the agent outlived -t");
    assert!(!socket.exists(), "the socket outlived the agent");
}

#[test]
fn d_serves_in_the_foreground_and_k_refuses_a_process_that_is_no_agent() {
    let cluster = cluster_without_key_file("ed25519");
    let socket = cluster.scratch.path().join("fg.sock");
    let mut cmd = cluster.command("smssh");
    cmd.arg("agent").args(["-D", "-s", "-a"]).arg(&socket);
    let running = spawn(&mut cmd);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(Instant::now() < deadline, "no socket from -D");
        std::thread::sleep(Duration::from_millis(50));
    }
    let listed = run(Command::new("ssh-add")
        .arg("-l")
        .env("SSH_AUTH_SOCK", &socket));
    assert_success(&listed);

    // -k checks that the pid is an agent before it sends anything.
    let sleeper = spawn(Command::new("sleep").arg("30"));
    let mut kill = cluster.command("smssh");
    kill.args(["agent", "-k"])
        .env("SSH_AGENT_PID", sleeper.id().to_string());
    let refused = run(&mut kill);
    // ssh-agent -k's status for a pid it will not kill.
    assert_exit_code(&refused, 1);
    assert_stderr_contains(&refused, "is not a smssh agent");
    assert!(Path::new(&format!("/proc/{}", sleeper.id())).exists());

    let mut kill = cluster.command("smssh");
    kill.args(["agent", "-k"])
        .env("SSH_AGENT_PID", running.id().to_string());
    let killed = run(&mut kill);
    assert_success(&killed);
    assert_eq!(
        stdout(&killed),
        format!(
            "unset SSH_AUTH_SOCK;\nunset SSH_AGENT_PID;\necho Agent pid {} killed;\n",
            running.id()
        )
    );
    let out = running
        .wait_timeout(Duration::from_secs(10))
        .expect("-D ends on SIGTERM");
    assert_success(&out);
    assert!(stdout(&out).starts_with(&format!(
        "SSH_AUTH_SOCK={}; export SSH_AUTH_SOCK;\n",
        socket.display()
    )));
    assert!(!socket.exists(), "socket left behind");
}

/// Sends one agent frame and returns the first byte of the answer (its type), or `None` when
/// the agent closed the connection instead.
fn agent_answer(socket: &Path, frame: &[u8]) -> Option<u8> {
    use std::io::{Read, Write};
    let mut stream = std::os::unix::net::UnixStream::connect(socket).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream.write_all(frame).unwrap();
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).ok().map(|()| header[4])
}

fn frame(payload: &[u8]) -> Vec<u8> {
    let mut framed = (payload.len() as u32).to_be_bytes().to_vec();
    framed.extend_from_slice(payload);
    framed
}

#[test]
fn extensions_and_locks_answer_failure_and_an_oversized_request_is_cut_off() {
    const FAILURE: u8 = 5;
    const IDENTITIES_ANSWER: u8 = 12;
    let cluster = cluster_without_key_file("ed25519");
    let note = cluster.scratch.path().join("socket");
    let script = format!("echo \"$SSH_AUTH_SOCK\" > {}; sleep 30", note.display());
    let running = spawn(&mut agent_script(&cluster, &[], &script));
    let socket = PathBuf::from(wait_for_line(&note));

    let mut extension = vec![27u8];
    extension.extend_from_slice(&frame(b"session-bind@openssh.com")[..]);
    assert_eq!(agent_answer(&socket, &frame(&extension)), Some(FAILURE));
    let mut lock = vec![22u8];
    lock.extend_from_slice(&frame(b"password"));
    assert_eq!(agent_answer(&socket, &frame(&lock)), Some(FAILURE));
    // A length prefix past 256 KiB ends the connection before anything is buffered.
    let huge = (64u32 << 20).to_be_bytes();
    assert_eq!(agent_answer(&socket, &huge), None);
    // The agent still serves the next client.
    assert_eq!(
        agent_answer(&socket, &frame(&[11])),
        Some(IDENTITIES_ANSWER)
    );
    // SIGTERM rather than the harness's kill on drop, so that the agent removes its socket.
    assert_success(&run(Command::new("kill").arg(running.id().to_string())));
    let out = running
        .wait_timeout(Duration::from_secs(10))
        .expect("the agent ends on SIGTERM");
    assert_exit_code(&out, 143);
    assert!(!socket.exists());
}
