//! smssh as the ssh of other tools: rsync, git, Ansible, ClusterShell, pdsh and sftp each run
//! for real against sshd workers with smssh in the place of ssh. OpenSSH's ssh cannot log in
//! there (no key file it would offer is authorized), so every success went through smssh.
//! Where the tool can also run OpenSSH's ssh with the cluster's key file, the same run is
//! done with both and the results compared.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::*;

/// A command for `program` with the environment the binaries need: the cluster's HOME (its
/// `~/.ssh/config` gives the workers' port, its known_hosts their keys), moto's endpoint and
/// the secret's name.
fn tool(cluster: &Cluster, program: &str) -> Command {
    let mut cmd = harness_environment(Command::new(program), cluster.home.path(), &cluster.moto);
    cmd.current_dir(cluster.scratch.path());
    cmd
}

fn smssh_path() -> &'static str {
    binary_path("smssh")
}

/// OpenSSH's ssh as one command string with the cluster's configuration and key, for tools
/// that take their ssh as a command line (`rsync -e`, clush's ssh_path, sftp's -S cannot).
fn openssh_command_line(cluster: &Cluster) -> String {
    format!(
        "ssh -F {} -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
         -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes -i {}",
        cluster.ssh_config_path().display(),
        cluster.known_hosts_path().display(),
        cluster.key_path.display()
    )
}

/// A directory to put first on PATH in which `ssh` is `target`, for tools that run `ssh`
/// by name.
fn ssh_on_path(cluster: &Cluster, name: &str, target: &Path) -> String {
    let dir = cluster.scratch.path().join(name);
    fs::create_dir_all(&dir).expect("create the PATH directory");
    std::os::unix::fs::symlink(target, dir.join("ssh")).expect("symlink ssh");
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").expect("PATH is set")
    )
}

/// A small tree with what rsync must keep: modes, an empty file, a symbolic link, a file
/// larger than one SSH window.
fn sample_tree(cluster: &Cluster) -> PathBuf {
    let root = cluster.scratch.path().join("tree");
    fs::create_dir_all(root.join("sub/deeper")).expect("mkdir");
    fs::write(root.join("a.txt"), "alpha\n").expect("write");
    fs::write(root.join("sub/empty"), "").expect("write");
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    fs::write(root.join("sub/deeper/big.bin"), big).expect("write");
    fs::set_permissions(root.join("a.txt"), fs::Permissions::from_mode(0o750)).expect("chmod");
    std::os::unix::fs::symlink("a.txt", root.join("link")).expect("symlink");
    root
}

/// Both runs succeeded and printed the same, once each one's `(from, to)` replacements are
/// made (names that differ by design, such as the two target directories).
fn assert_same_output(
    (ours, our_names): (&Output, (&str, &str)),
    (theirs, their_names): (&Output, (&str, &str)),
    what: &str,
) {
    assert_success(ours);
    assert_success(theirs);
    assert_eq!(
        stdout(ours).replace(our_names.0, our_names.1),
        stdout(theirs).replace(their_names.0, their_names.1),
        "{what}: smssh and OpenSSH differ\nsmssh: {}\nOpenSSH: {}",
        describe(ours),
        describe(theirs)
    );
}

#[test]
fn rsync_e_smssh_copies_a_tree_as_rsync_over_openssh_does() {
    let cluster = Cluster::new(1);
    let source = sample_tree(&cluster);
    let home = cluster.workers[0].sftp_home();
    let push = |ssh: &str, dest: &str| {
        run(tool(&cluster, "rsync")
            .args(["-a", "-i", "-e", ssh])
            .arg(format!("{}/", source.display()))
            .arg(format!("127.0.0.2:{}/{dest}/", home.display())))
    };
    let ours = push(smssh_path(), "via-smssh");
    let theirs = push(&openssh_command_line(&cluster), "via-openssh");
    assert_same_output(
        (&ours, ("via-smssh", "DEST")),
        (&theirs, ("via-openssh", "DEST")),
        "rsync -i's itemized changes",
    );
    assert_eq!(tree(&home.join("via-smssh")), tree(&source));
    assert_eq!(tree(&home.join("via-openssh")), tree(&source));

    // Back again, with options before the destination as rsync writes them (-l user).
    let back = cluster.scratch.path().join("back");
    let out = run(tool(&cluster, "rsync")
        .args(["-a", "-e"])
        .arg(format!("{} -l root -o BatchMode=yes", smssh_path()))
        .arg(format!("127.0.0.2:{}/via-smssh/", home.display()))
        .arg(&back));
    assert_success(&out);
    assert_eq!(tree(&back), tree(&source));
}

#[test]
fn git_clones_and_pushes_with_git_ssh_command_and_core_ssh_command() {
    let cluster = Cluster::new(1);
    let bare = cluster.workers[0].sftp_home().join("repo.git");
    assert_success(&run(tool(&cluster, "git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&bare)));
    // An explicit port: git passes it with -p only to an ssh that answers `-G` as OpenSSH's
    // does, and refuses it for any other ("ssh variant 'simple' does not support setting
    // port"), so this URL also proves that git recognised smssh through -G.
    let url = format!("ssh://127.0.0.2:{}{}", cluster.port, bare.display());
    let work = cluster.scratch.path().join("work");
    let clone = run(tool(&cluster, "git")
        .env("GIT_SSH_COMMAND", smssh_path())
        .args(["clone", "-q", &url])
        .arg(&work));
    assert_success(&clone);
    fs::write(work.join("README"), "pushed through smssh\n").expect("write");
    let git_in = |dir: &Path| {
        let mut cmd = tool(&cluster, "git");
        cmd.arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com"]);
        cmd
    };
    assert_success(&run(git_in(&work).args(["add", "README"])));
    assert_success(&run(git_in(&work).args(["commit", "-q", "-m", "first"])));
    let push = run(git_in(&work)
        .arg("-c")
        .arg(format!("core.sshCommand={} -o BatchMode=yes", smssh_path()))
        .args(["push", "-q", "origin", "HEAD:main"]));
    assert_success(&push);
    let log =
        run(tool(&cluster, "git")
            .arg("--git-dir")
            .arg(&bare)
            .args(["log", "--format=%s", "main"]));
    assert_stdout_eq(&log, "first\n");

    // A second clone, through core.sshCommand, sees the pushed file.
    let again = cluster.scratch.path().join("again");
    let clone = run(tool(&cluster, "git")
        .arg("-c")
        .arg(format!("core.sshCommand={}", smssh_path()))
        .args(["clone", "-q", &url])
        .arg(&again));
    assert_success(&clone);
    assert_eq!(
        fs::read_to_string(again.join("README")).expect("cloned README"),
        "pushed through smssh\n"
    );
}

/// The Ansible in the test venv (scripts/test-deps.sh installs it there).
fn ansible_bin(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".venv/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run scripts/test-deps.sh",
        path.display()
    );
    path
}

#[test]
fn ansible_ping_command_and_copy_run_with_smssh_as_ansible_ssh_executable() {
    let cluster = Cluster::new(2);
    // piped: Ansible's sftp and scp transfer methods start the sftp and scp binaries, which
    // run OpenSSH's ssh and not ansible_ssh_executable; piped sends the file through the
    // ssh executable itself (dd on the remote side), so smssh is the only ssh involved.
    let inventory = cluster.scratch_file(
        "inventory.ini",
        format!(
            "[workers]\n127.0.0.2\n127.0.0.3\n\n[workers:vars]\nansible_port={}\n\
             ansible_ssh_executable={}\nansible_python_interpreter=/usr/bin/python3\n\
             ansible_ssh_transfer_method=piped\n",
            cluster.port,
            smssh_path()
        )
        .as_bytes(),
    );
    let ansible = |args: &[&str]| {
        let mut cmd = tool(
            &cluster,
            ansible_bin("ansible").to_str().expect("UTF-8 path"),
        );
        cmd.env("ANSIBLE_NOCOLOR", "1")
            .env(
                "ANSIBLE_LOCAL_TEMP",
                cluster.scratch.path().join("ansible-tmp"),
            )
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

    let command = ansible(&["-m", "command", "-a", "printenv HOME"]);
    assert_success(&command);
    for worker in &cluster.workers {
        assert!(
            stdout(&command).contains(&worker.sftp_home().display().to_string()),
            "{}",
            describe(&command)
        );
    }

    let source = cluster.scratch_file("motd", b"copied by ansible over smssh\n");
    let copy = ansible(&[
        "-m",
        "copy",
        "-a",
        &format!("src={} dest=~/motd mode=0640", source.display()),
    ]);
    assert_success(&copy);
    for worker in &cluster.workers {
        let copied = worker.sftp_home().join("motd");
        assert_eq!(
            fs::read(&copied).expect("the copied file"),
            b"copied by ansible over smssh\n"
        );
        assert_eq!(
            fs::metadata(&copied).expect("stat").permissions().mode() & 0o777,
            0o640
        );
    }
}

#[test]
fn clush_with_ssh_path_smssh_answers_as_with_openssh() {
    let cluster = Cluster::new(2);
    let clush = |ssh_path: &str| {
        run(tool(&cluster, "clush")
            .args(["-w", "127.0.0.[2-3]", "-S", "-O"])
            .arg(format!("ssh_path={ssh_path}"))
            .args(["-b", "echo same"]))
    };
    let ours = clush(smssh_path());
    let theirs = clush(&openssh_command_line(&cluster));
    assert_same_output((&ours, ("", "")), (&theirs, ("", "")), "clush -b");
    assert!(
        stdout(&ours).contains("127.0.0.[2-3]"),
        "{}",
        describe(&ours)
    );
    assert!(stdout(&ours).contains("same"), "{}", describe(&ours));

    // A failing host: clush reports its status the same way with either ssh.
    let fail = |ssh_path: &str| {
        run(tool(&cluster, "clush")
            .args(["-w", "127.0.0.[2-3]", "-O"])
            .arg(format!("ssh_path={ssh_path}"))
            .arg("exit 3"))
    };
    let (ours, theirs) = (fail(smssh_path()), fail(&openssh_command_line(&cluster)));
    assert_eq!(
        ours.status.code(),
        theirs.status.code(),
        "{}",
        describe(&ours)
    );
    // clush prints each host's status as the host ends, in whichever order that is.
    let sorted = |out: &Output| {
        let mut lines: Vec<String> = stderr(out).lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&ours), sorted(&theirs));
    assert_eq!(sorted(&ours).len(), 2, "{}", describe(&ours));
}

#[test]
fn pdsh_runs_smssh_as_ssh_from_path() {
    let cluster = Cluster::new(2);
    let pdsh = |path: String, extra_args: Option<String>| {
        let mut cmd = tool(&cluster, "pdsh");
        cmd.env("PATH", path).env("PDSH_RCMD_TYPE", "ssh").args([
            "-S",
            "-w",
            "127.0.0.[2-3]",
            "echo",
            "hello",
            "-n",
        ]);
        if let Some(args) = extra_args {
            cmd.env("PDSH_SSH_ARGS", args);
        }
        let out = run(&mut cmd);
        let mut lines: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
        lines.sort();
        (out, lines)
    };
    let (ours, our_lines) = pdsh(
        ssh_on_path(&cluster, "smssh-bin", Path::new(smssh_path())),
        None,
    );
    assert_success(&ours);
    assert_eq!(our_lines, ["127.0.0.2: hello -n", "127.0.0.3: hello -n"]);

    // OpenSSH's ssh needs its key on the command line: PDSH_SSH_ARGS, with pdsh's own
    // defaults (-2 -a -x -l%u %h) kept.
    let ssh = which("ssh");
    let args = openssh_command_line(&cluster)
        .trim_start_matches("ssh ")
        .to_owned()
        + " -2 -a -x -l%u %h";
    let (theirs, their_lines) = pdsh(
        ssh_on_path(&cluster, "openssh-bin", &ssh),
        Some(args.clone()),
    );
    assert_success(&theirs);
    assert_eq!(our_lines, their_lines);

    // The same PDSH_SSH_ARGS, OpenSSH's options and -i included, serve smssh too: -i is an
    // extra identity after the secret's key, and the options are OpenSSH's.
    let (same, same_lines) = pdsh(
        ssh_on_path(&cluster, "smssh-bin-2", Path::new(smssh_path())),
        Some(args),
    );
    assert_success(&same);
    assert_eq!(same_lines, their_lines);
}

fn which(program: &str) -> PathBuf {
    std::env::var("PATH")
        .expect("PATH is set")
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
        .unwrap_or_else(|| panic!("{program} is not on PATH: run scripts/test-deps.sh"))
}

#[test]
fn sftp_s_smssh_opens_the_sftp_subsystem() {
    let cluster = Cluster::new(1);
    let home = cluster.workers[0].sftp_home();
    let local = cluster.scratch_file("upload.txt", b"through the sftp subsystem\n");
    let batch = cluster.scratch_file(
        "batch",
        format!(
            "put {} up.txt\nls up.txt\nget up.txt {}\n",
            local.display(),
            cluster.scratch.path().join("down.txt").display()
        )
        .as_bytes(),
    );
    let out = run(tool(&cluster, "sftp")
        .arg("-S")
        .arg(smssh_path())
        .arg("-b")
        .arg(&batch)
        .arg("127.0.0.2"));
    assert_success(&out);
    assert_eq!(
        fs::read(home.join("up.txt")).expect("uploaded"),
        b"through the sftp subsystem\n"
    );
    assert_eq!(
        fs::read(cluster.scratch.path().join("down.txt")).expect("downloaded"),
        b"through the sftp subsystem\n"
    );
    assert!(stdout(&out).contains("up.txt"), "{}", describe(&out));

    // A subsystem the server does not have: one line and ssh's 255, as OpenSSH's ssh -s.
    let out = run(tool(&cluster, smssh_path()).args(["-s", "127.0.0.2", "no-such-subsystem"]));
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "subsystem");
}
