//! The tools operators already use, unchanged, logging in through `smssh agent`: OpenSSH's
//! `ssh`, `scp` and `sftp`, rsync, git, Ansible's plain OpenSSH connection and pdsh, each run
//! as `smssh agent -- TOOL ...` against real sshd workers. The cluster's key file is deleted
//! before any tool runs, OpenSSH gets no identity file (no `-i`, no `IdentitiesOnly`, no
//! `id_*` in either home), and the workers authorize only the secret's key, so every login
//! that succeeds was signed by the agent. Each test ends by walking `$HOME`, `/tmp` and the
//! working directories for any file that holds the key's base64 body.
//!
//! The rotation test keeps one agent running while `smssh rotate` replaces the key, with a
//! loop of OpenSSH logins going through it the whole time.

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

/// A cluster whose key exists only in the secret: the harness's key file is checked to be
/// found by the leak detector (so the detector can fail), then deleted.
struct AgentCluster {
    cluster: Cluster,
    /// The tools' working directory.
    work: PathBuf,
    /// Lines of the private key's base64 body that identify this key.
    needles: Vec<String>,
    /// When the key was created: no file older than this can hold it.
    since: SystemTime,
}

impl AgentCluster {
    fn new(workers: usize) -> AgentCluster {
        let since = SystemTime::now();
        let cluster = Cluster::new(workers);
        let needles = key_needles(&cluster.private_key, &cluster.public_key);
        let found = files_holding(&[cluster.scratch.path().to_path_buf()], &needles, since);
        assert!(
            found.iter().any(|(path, _)| path == &cluster.key_path),
            "the leak detector missed the harness's own key file {}: {found:?}",
            cluster.key_path.display()
        );
        fs::remove_file(&cluster.key_path).expect("delete the cluster's key file");
        let work = cluster.scratch.path().join("work");
        fs::create_dir_all(&work).expect("create the working directory");
        assert_no_identity_files(&cluster);
        AgentCluster {
            cluster,
            work,
            needles,
            since,
        }
    }

    /// `smssh agent -- PROGRAM`, with the environment the binaries need and the working
    /// directory `work`; the caller adds the program's arguments.
    fn through_agent(&self, program: &str) -> Command {
        let mut cmd = harness_environment(
            Command::new(binary_path("smssh")),
            self.cluster.home.path(),
            &self.cluster.moto,
        );
        cmd.current_dir(&self.work).args(["agent", "--", program]);
        cmd
    }

    /// OpenSSH's client options: the cluster's config and known_hosts, host keys checked,
    /// never prompting, and no identity file, so the agent is the only key source.
    fn ssh_options(&self) -> Vec<String> {
        vec![
            "-F".into(),
            self.cluster.ssh_config_path().display().to_string(),
            "-o".into(),
            format!(
                "UserKnownHostsFile={}",
                self.cluster.known_hosts_path().display()
            ),
            "-o".into(),
            "GlobalKnownHostsFile=/dev/null".into(),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
        ]
    }

    /// [`AgentCluster::ssh_options`] as one line, for tools that take ssh as a command line.
    fn ssh_command_line(&self) -> String {
        format!("ssh {}", self.ssh_options().join(" "))
    }

    /// No file under HOME, /tmp, the tools' working directory or this process's holds the
    /// key's base64 body.
    fn assert_no_key_file(&self) {
        let mut roots = vec![
            self.cluster.home.path().to_path_buf(),
            PathBuf::from("/tmp"),
            self.work.clone(),
        ];
        roots.push(std::env::current_dir().expect("the test's working directory"));
        let found = files_holding(&roots, &self.needles, self.since);
        assert!(
            found.is_empty(),
            "files hold the key's base64 body (path, line of the body): {found:?}"
        );
    }
}

/// Neither the HOME the tools see nor the account's home from passwd (where OpenSSH looks
/// for `~/.ssh/id_*`) holds a default identity file.
fn assert_no_identity_files(cluster: &Cluster) {
    let account = nix::unistd::User::from_uid(nix::unistd::getuid())
        .expect("read passwd")
        .expect("this uid has a passwd entry");
    for home in [cluster.home.path(), account.dir.as_path()] {
        let Ok(entries) = fs::read_dir(home.join(".ssh")) else {
            continue;
        };
        let identities: Vec<String> = entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|name| name.starts_with("id_"))
            .collect();
        assert!(
            identities.is_empty(),
            "{}/.ssh holds identity files OpenSSH would offer: {identities:?}",
            home.display()
        );
    }
}

/// The base64 body lines of `private_key` that identify it: every line but the first (the
/// format's header, the same for every unencrypted key of a type), minus any line that is
/// part of the public key line (which may be anywhere).
fn key_needles(private_key: &str, public_key: &str) -> Vec<String> {
    let needles: Vec<String> = private_key
        .lines()
        .filter(|line| !line.starts_with("-----"))
        .skip(1)
        .filter(|line| line.len() >= 16 && !public_key.contains(*line))
        .map(str::to_owned)
        .collect();
    assert!(
        !needles.is_empty(),
        "the private key has no body line to look for"
    );
    needles
}

/// Entries a walk may visit before it gives up: far more than /tmp and a working tree hold.
const WALK_MAX_ENTRIES: usize = 2_000_000;
/// Directory depth a walk descends to.
const WALK_MAX_DEPTH: usize = 64;
/// Files larger than this are build artifacts, not key files or logs; they are not read.
const WALK_MAX_FILE: u64 = 64 * 1024 * 1024;

/// Every regular file under `roots` changed since `since` (by its ctime, which no tool can
/// set back) that contains one of `needles`, with the needle's index. Symbolic links are
/// not followed, special files and unreadable entries are skipped (other tests create and
/// delete files meanwhile), and the walk is bounded by [`WALK_MAX_ENTRIES`],
/// [`WALK_MAX_DEPTH`] and [`WALK_MAX_FILE`].
fn files_holding(
    roots: &[PathBuf],
    needles: &[String],
    since: SystemTime,
) -> Vec<(PathBuf, usize)> {
    // One second of slack: ctime has the file system's granularity.
    let since = since
        .duration_since(UNIX_EPOCH)
        .expect("after the epoch")
        .as_secs()
        .saturating_sub(1) as i64;
    let mut roots: Vec<PathBuf> = roots
        .iter()
        .filter_map(|root| fs::canonicalize(root).ok())
        .collect();
    roots.sort();
    // A root inside another is walked with it.
    roots.dedup_by(|inner, outer| inner.starts_with(outer));
    let mut found = Vec::new();
    let mut visited = 0usize;
    let mut pending: Vec<(PathBuf, usize)> = roots.into_iter().map(|root| (root, 0)).collect();
    while let Some((dir, depth)) = pending.pop() {
        let Ok(entries) = fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            visited += 1;
            assert!(
                visited <= WALK_MAX_ENTRIES,
                "more than {WALK_MAX_ENTRIES} entries under the walked trees; cannot prove \
                 that no file holds the key"
            );
            let path = entry.path();
            let Ok(meta) = fs::symlink_metadata(&path) else {
                continue;
            };
            if meta.is_dir() {
                if depth < WALK_MAX_DEPTH {
                    pending.push((path, depth + 1));
                }
                continue;
            }
            if !meta.is_file() || meta.ctime() < since || meta.len() > WALK_MAX_FILE {
                continue;
            }
            let Some(content) = read_regular(&path) else {
                continue;
            };
            if let Some(index) = needles
                .iter()
                .position(|needle| contains(&content, needle.as_bytes()))
            {
                found.push((path, index));
            }
        }
    }
    found
}

/// A regular file's content, up to [`WALK_MAX_FILE`] bytes; None if it cannot be read. The
/// file is opened without blocking, so a FIFO swapped in after the check cannot hang the walk.
fn read_regular(path: &Path) -> Option<Vec<u8>> {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut content = Vec::new();
    file.take(WALK_MAX_FILE).read_to_end(&mut content).ok()?;
    Some(content)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The Ansible in the test venv (scripts/test-deps.sh installs it there).
fn ansible_bin() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/ansible");
    assert!(
        path.exists(),
        "{} is missing: run scripts/test-deps.sh",
        path.display()
    );
    path
}

/// The same ssh without the agent is refused: the workers accept no key but the secret's,
/// and nothing else offers it.
fn assert_refused_without_agent(env: &AgentCluster) {
    let mut cmd = harness_environment(
        Command::new("ssh"),
        env.cluster.home.path(),
        &env.cluster.moto,
    );
    cmd.env_remove("SSH_AUTH_SOCK")
        .args(env.ssh_options())
        .args(["127.0.0.2", "true"]);
    let out = run(&mut cmd);
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "Permission denied");
}

#[test]
fn openssh_ssh_scp_and_sftp_log_in_through_the_agent_with_no_key_file() {
    let env = AgentCluster::new(1);
    assert_refused_without_agent(&env);
    let home = env.cluster.workers[0].sftp_home();

    let out = run(env
        .through_agent("ssh")
        .args(env.ssh_options())
        .args(["127.0.0.2", "echo \"$HOME\"; echo \"$SSH_AUTH_SOCK\""]));
    assert_success(&out);
    // The remote side runs in the worker's home; agent forwarding is off, so it sees no socket.
    assert_stdout_eq(&out, &format!("{}\n\n", home.display()));

    // scp both ways, with the SFTP protocol (OpenSSH 9's default) and the legacy one (-O).
    let source = env
        .cluster
        .scratch_file("work/upload.txt", b"through the agent\n");
    for (flag, name) in [(None, "sftp-proto"), (Some("-O"), "scp-proto")] {
        let remote = home.join(format!("{name}.txt"));
        let mut up = env.through_agent("scp");
        up.args(flag).args(env.ssh_options()).arg(&source);
        up.arg(format!("127.0.0.2:{}", remote.display()));
        assert_success(&run(&mut up));
        assert_eq!(fs::read(&remote).expect("uploaded"), b"through the agent\n");
        let back = env.work.join(format!("{name}-back.txt"));
        let mut down = env.through_agent("scp");
        down.args(flag)
            .args(env.ssh_options())
            .arg(format!("127.0.0.2:{}", remote.display()))
            .arg(&back);
        assert_success(&run(&mut down));
        assert_eq!(fs::read(&back).expect("downloaded"), b"through the agent\n");
    }

    let batch = env.cluster.scratch_file(
        "batch",
        format!(
            "put {} up.txt\nls up.txt\nget up.txt {}\n",
            source.display(),
            env.work.join("sftp-back.txt").display()
        )
        .as_bytes(),
    );
    let out = run(env
        .through_agent("sftp")
        .args(env.ssh_options())
        .arg("-b")
        .arg(&batch)
        .arg("127.0.0.2"));
    assert_success(&out);
    assert!(stdout(&out).contains("up.txt"), "{}", describe(&out));
    assert_eq!(
        fs::read(home.join("up.txt")).expect("uploaded"),
        b"through the agent\n"
    );
    assert_eq!(
        fs::read(env.work.join("sftp-back.txt")).expect("downloaded"),
        b"through the agent\n"
    );

    // ssh-add lists the secret's key, and only it.
    let out = run(env.through_agent("ssh-add").arg("-L"));
    assert_success(&out);
    let blob = env
        .cluster
        .public_key
        .split_whitespace()
        .nth(1)
        .expect("a key blob");
    assert_eq!(stdout(&out).lines().count(), 1, "{}", describe(&out));
    assert!(stdout(&out).contains(blob), "{}", describe(&out));

    env.assert_no_key_file();
}

#[test]
fn rsync_copies_a_tree_both_ways_through_the_agent() {
    let env = AgentCluster::new(1);
    let source = env.work.join("tree");
    fs::create_dir_all(source.join("sub/deeper")).expect("mkdir");
    fs::write(source.join("a.txt"), "alpha\n").expect("write");
    fs::write(source.join("sub/empty"), "").expect("write");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(source.join("sub/deeper/big.bin"), big).expect("write");
    fs::set_permissions(source.join("a.txt"), fs::Permissions::from_mode(0o750)).expect("chmod");
    std::os::unix::fs::symlink("a.txt", source.join("link")).expect("symlink");
    let dest = env.cluster.workers[0].sftp_home().join("copy");

    let out = run(env
        .through_agent("rsync")
        .args(["-a", "-e", &env.ssh_command_line()])
        .arg(format!("{}/", source.display()))
        .arg(format!("127.0.0.2:{}/", dest.display())));
    assert_success(&out);
    assert_eq!(tree(&dest), tree(&source));

    let back = env.work.join("back");
    let out = run(env
        .through_agent("rsync")
        .args(["-a", "-e", &env.ssh_command_line()])
        .arg(format!("127.0.0.2:{}/", dest.display()))
        .arg(&back));
    assert_success(&out);
    assert_eq!(tree(&back), tree(&source));

    env.assert_no_key_file();
}

#[test]
fn git_clones_and_pushes_over_ssh_through_the_agent() {
    let env = AgentCluster::new(1);
    let bare = env.cluster.workers[0].sftp_home().join("repo.git");
    assert_success(&run(Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&bare)));
    let url = format!("ssh://127.0.0.2:{}{}", env.cluster.port, bare.display());
    let git = |dir: Option<&Path>| {
        let mut cmd = env.through_agent("git");
        cmd.env("GIT_SSH_COMMAND", env.ssh_command_line())
            .env("GIT_CONFIG_NOSYSTEM", "1");
        if let Some(dir) = dir {
            cmd.arg("-C").arg(dir);
        }
        cmd.args(["-c", "user.name=t", "-c", "user.email=t@example.com"]);
        cmd
    };
    let clone = env.work.join("clone");
    assert_success(&run(git(None).args(["clone", "-q", &url]).arg(&clone)));
    fs::write(clone.join("README"), "pushed through the agent\n").expect("write");
    assert_success(&run(git(Some(&clone)).args(["add", "README"])));
    assert_success(&run(git(Some(&clone)).args(["commit", "-q", "-m", "first"])));
    assert_success(&run(git(Some(&clone)).args([
        "push",
        "-q",
        "origin",
        "HEAD:main",
    ])));
    let log =
        run(Command::new("git")
            .arg("--git-dir")
            .arg(&bare)
            .args(["log", "--format=%s", "main"]));
    assert_stdout_eq(&log, "first\n");

    let again = env.work.join("again");
    assert_success(&run(git(None).args(["clone", "-q", &url]).arg(&again)));
    assert_eq!(
        fs::read_to_string(again.join("README")).expect("cloned README"),
        "pushed through the agent\n"
    );

    env.assert_no_key_file();
}

#[test]
fn ansible_ping_and_copy_with_the_plain_openssh_connection_through_the_agent() {
    let env = AgentCluster::new(2);
    let mut inventory = String::from("[workers]\n");
    for worker in &env.cluster.workers {
        inventory.push_str(&format!(
            "{} home={}\n",
            worker.addr(),
            worker.sftp_home().display()
        ));
    }
    // The plain OpenSSH connection: ssh and sftp by name, no private key file, no
    // ansible_ssh_executable.
    inventory.push_str(&format!(
        "[workers:vars]\nansible_connection=ssh\nansible_port={}\n\
         ansible_python_interpreter=/usr/bin/python3\nansible_ssh_common_args={}\n",
        env.cluster.port,
        env.ssh_options().join(" ")
    ));
    let inventory = env
        .cluster
        .scratch_file("work/inventory.ini", inventory.as_bytes());
    let ansible = |args: &[&str]| {
        let mut cmd = env.through_agent(ansible_bin().to_str().expect("UTF-8 path"));
        cmd.env("ANSIBLE_NOCOLOR", "1")
            .env("ANSIBLE_HOST_KEY_CHECKING", "True")
            .env("ANSIBLE_LOCAL_TEMP", env.work.join("ansible-tmp"))
            .env("LC_ALL", "C.UTF-8")
            .args(["all", "-i"])
            .arg(&inventory)
            .args(args);
        run(&mut cmd)
    };
    let ping = ansible(&["-m", "ping"]);
    assert_success(&ping);
    assert_eq!(
        stdout(&ping).matches("\"ping\": \"pong\"").count(),
        2,
        "{}",
        describe(&ping)
    );

    let source = env
        .cluster
        .scratch_file("work/motd", b"copied by ansible through the agent\n");
    let copy = ansible(&[
        "-m",
        "copy",
        "-a",
        &format!(
            "src={} dest={{{{ home }}}}/motd mode=0640",
            source.display()
        ),
    ]);
    assert_success(&copy);
    for worker in &env.cluster.workers {
        let copied = worker.sftp_home().join("motd");
        assert_eq!(
            fs::read(&copied).expect("the copied file"),
            b"copied by ansible through the agent\n"
        );
        assert_eq!(
            fs::metadata(&copied).expect("stat").permissions().mode() & 0o777,
            0o640
        );
    }

    env.assert_no_key_file();
}

#[test]
fn pdsh_with_rcmd_ssh_runs_on_every_worker_through_the_agent() {
    let env = AgentCluster::new(3);
    let out = run(env
        .through_agent("pdsh")
        .env("PDSH_RCMD_TYPE", "ssh")
        .env("PDSH_SSH_ARGS_APPEND", env.ssh_options().join(" "))
        .args(["-S", "-w", "127.0.0.[2-4]", "echo", "hello"]));
    assert_success(&out);
    let mut lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    lines.sort();
    assert_eq!(
        lines,
        ["127.0.0.2: hello", "127.0.0.3: hello", "127.0.0.4: hello"],
        "{}",
        describe(&out)
    );

    // A failing host: -S makes pdsh exit with the largest remote status.
    let out = run(env
        .through_agent("pdsh")
        .env("PDSH_RCMD_TYPE", "ssh")
        .env("PDSH_SSH_ARGS_APPEND", env.ssh_options().join(" "))
        .args(["-S", "-w", "127.0.0.[2-4]", "exit 3"]));
    assert_exit_code(&out, 3);

    env.assert_no_key_file();
}

/// How long the rotation test keeps logging in after the rotation ended: many of the agent's
/// stage checks, so that a stale key would be noticed.
const AFTER_ROTATION: Duration = Duration::from_secs(4);

/// How many login loops run at once in the rotation test.
const LOOPS: usize = 3;

/// One login of the loop: when it started and ended, and its output if it failed.
struct Login {
    started: Instant,
    ended: Instant,
    failure: Option<Output>,
}

#[test]
fn a_loop_of_logins_through_a_running_agent_sees_no_failure_across_a_rotation() {
    let env = AgentCluster::new(2);
    let old_version = env
        .cluster
        .moto
        .version_with_stage(SECRET_ID, "AWSCURRENT")
        .expect("the harness's version");

    // The agent stays up while its command, a shell that records the socket's path, waits
    // for a stop file; the test's own processes then use the socket.
    let socket_file = env.work.join("socket-path");
    let stop_file = env.work.join("stop");
    let script = r#"printf '%s\n' "$SSH_AUTH_SOCK" >"$1.tmp" && mv "$1.tmp" "$1" || exit 9
        while [ ! -e "$2" ]; do sleep 0.1; done"#;
    let mut agent_cmd = harness_environment(
        Command::new(binary_path("smssh")),
        env.cluster.home.path(),
        &env.cluster.moto,
    );
    agent_cmd
        .current_dir(&env.work)
        .args([
            "agent",
            // The default --refresh (5 minutes) never expires here: only the stage check can
            // carry the agent across the rotation.
            "--offer-stages",
            "AWSPENDING,AWSPREVIOUS",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(&socket_file)
        .arg(&stop_file);
    let mut agent = spawn(&mut agent_cmd);
    let deadline = Instant::now() + Duration::from_secs(30);
    let socket = loop {
        if let Ok(text) = fs::read_to_string(&socket_file) {
            break PathBuf::from(text.trim_end());
        }
        assert!(
            !agent.has_exited() && Instant::now() < deadline,
            "the agent did not start its command within 30 s\n{}",
            describe(&agent.kill())
        );
        thread::sleep(Duration::from_millis(20));
    };

    let login = {
        let options = env.ssh_options();
        let home = env.cluster.home.path().to_path_buf();
        let socket = socket.clone();
        move |addr: &str| {
            let mut cmd = Command::new("ssh");
            cmd.env_clear()
                .env("HOME", &home)
                .env("SSH_AUTH_SOCK", &socket)
                .args(&options)
                .args([addr, "true"]);
            if let Some(path) = std::env::var_os("PATH") {
                cmd.env("PATH", path);
            }
            run(&mut cmd)
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let logins: Arc<Mutex<Vec<Login>>> = Arc::default();
    // Three loops at once, so that every step of the rotation sees logins.
    let loopers: Vec<_> = (0..LOOPS)
        .map(|first| {
            let (stop, logins, login) = (Arc::clone(&stop), Arc::clone(&logins), login.clone());
            let addrs = env.cluster.addrs();
            thread::spawn(move || {
                for addr in addrs.iter().cycle().skip(first) {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let started = Instant::now();
                    let out = login(addr);
                    let failure = (!out.status.success()).then_some(out);
                    logins.lock().expect("the log of logins").push(Login {
                        started,
                        ended: Instant::now(),
                        failure,
                    });
                }
            })
        })
        .collect();

    // A few logins before the rotation, so the loop is known to run.
    thread::sleep(Duration::from_secs(1));
    let rotation_started = Instant::now();
    let rotate = run(env
        .cluster
        .command("smssh")
        .args(["rotate", "-w", "127.0.0.[2-3]"]));
    let rotation_ended = Instant::now();
    thread::sleep(AFTER_ROTATION);
    stop.store(true, Ordering::SeqCst);
    for looper in loopers {
        looper.join().expect("a login loop");
    }
    assert_success(&rotate);

    let logins = logins.lock().expect("the log of logins");
    // Each failure with when it started, in seconds from the rotation's start (which took
    // until the offset given), to tell which step of the rotation it fell in.
    let failures: Vec<String> = logins
        .iter()
        .filter_map(|l| {
            let output = l.failure.as_ref()?;
            let offset = l.started.duration_since(rotation_started).as_secs_f64();
            let offset = if l.started < rotation_started {
                -rotation_started.duration_since(l.started).as_secs_f64()
            } else {
                offset
            };
            Some(format!("at {offset:+.2}s: {}", describe(output)))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} logins through the agent failed across the rotation (which ran from +0 to \
         {:+.2}s); the failures:\n{}\nthe rotation:\n{}",
        failures.len(),
        logins.len(),
        rotation_ended
            .duration_since(rotation_started)
            .as_secs_f64(),
        failures.join("\n"),
        describe(&rotate)
    );
    let during = logins
        .iter()
        .filter(|l| l.started <= rotation_ended && l.ended >= rotation_started)
        .count();
    let after = logins
        .iter()
        .filter(|l| l.started >= rotation_ended)
        .count();
    assert!(
        during >= 2 && after >= 4,
        "the loops did not overlap the rotation: {during} logins during it, {after} after"
    );

    // The rotation really replaced the key: the old one is no longer authorized anywhere,
    // and the agent serves the new one, named by its version.
    let new_version = env
        .cluster
        .moto
        .version_with_stage(SECRET_ID, "AWSCURRENT")
        .expect("the new version");
    assert_ne!(new_version, old_version);
    let old_blob = env
        .cluster
        .public_key
        .split_whitespace()
        .nth(1)
        .expect("a key blob")
        .to_owned();
    let secret: serde_json::Value = serde_json::from_str(
        &env.cluster
            .moto
            .get_secret_string_at_stage(SECRET_ID, "AWSCURRENT"),
    )
    .expect("the secret is JSON");
    let new_blob = secret["PublicKey"]
        .as_str()
        .expect("the new version's PublicKey")
        .split_whitespace()
        .nth(1)
        .expect("a key blob")
        .to_owned();
    for worker in &env.cluster.workers {
        assert!(
            !worker.authorized_keys().contains(&old_blob),
            "{} still authorizes the old key",
            worker.addr()
        );
    }
    let mut list = Command::new("ssh-add");
    list.env_clear().env("SSH_AUTH_SOCK", &socket).arg("-L");
    let listed = run(&mut list);
    assert_success(&listed);
    assert!(stdout(&listed).contains(&new_blob), "{}", describe(&listed));
    let mut fingerprints = Command::new("ssh-add");
    fingerprints
        .env_clear()
        .env("SSH_AUTH_SOCK", &socket)
        .arg("-l");
    let fingerprints = run(&mut fingerprints);
    assert_success(&fingerprints);
    assert!(
        stdout(&fingerprints).contains(&new_version),
        "ssh-add -l does not name the new version {new_version}\n{}",
        describe(&fingerprints)
    );
    // A login after all this still works, through the same running agent.
    assert_success(&login("127.0.0.2"));

    fs::write(&stop_file, "").expect("write the stop file");
    let out = agent
        .wait_timeout(Duration::from_secs(30))
        .unwrap_or_else(|out| panic!("the agent did not exit\n{}", describe(&out)));
    assert_success(&out);
    assert!(
        !socket.exists(),
        "the agent left its socket {}",
        socket.display()
    );
    env.assert_no_key_file();
}
