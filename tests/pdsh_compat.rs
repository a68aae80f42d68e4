//! smssh and smscp as pdsh, pdcp, rpdcp and dshbak (links named like them, and `--as`),
//! side by side with the real /usr/bin/pdsh, pdcp, rpdcp and dshbak run against the same sshd
//! workers with OpenSSH's ssh and the cluster's key file; and `--fail-fast` (pdsh's `-k`).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

/// A directory of links named pdsh, pdcp, rpdcp and dshbak to the built binaries.
fn links(cluster: &Cluster) -> PathBuf {
    let dir = cluster.scratch.path().join("links");
    fs::create_dir_all(&dir).expect("create the links directory");
    for (name, binary) in [
        ("pdsh", "smssh"),
        ("dshbak", "smssh"),
        ("pdcp", "smscp"),
        ("rpdcp", "smscp"),
    ] {
        let link = dir.join(name);
        if !link.exists() {
            std::os::unix::fs::symlink(binary_path(binary), &link).expect("symlink");
        }
    }
    dir
}

/// Our `name` (a link to smssh or smscp) with the binaries' environment.
fn ours(cluster: &Cluster, name: &str) -> Command {
    let mut cmd = harness_environment(
        Command::new(links(cluster).join(name)),
        cluster.home.path(),
        &cluster.moto,
    );
    cmd.current_dir(cluster.scratch.path());
    cmd
}

/// The real `/usr/bin/name`, whose ssh rcmd module runs OpenSSH's ssh with the cluster's
/// configuration, known_hosts and key (pdsh's own ssh arguments kept after them).
fn theirs(cluster: &Cluster, name: &str) -> Command {
    let path = Path::new("/usr/bin").join(name);
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test-deps.sh",
        path.display()
    );
    let ssh_args = format!(
        "-F {} -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null \
         -o StrictHostKeyChecking=yes -o BatchMode=yes -o IdentitiesOnly=yes -i {} \
         -2 -a -x -l%u %h",
        cluster.ssh_config_path().display(),
        cluster.known_hosts_path().display(),
        cluster.key_path.display()
    );
    let mut cmd = harness_environment(Command::new(path), cluster.home.path(), &cluster.moto);
    cmd.current_dir(cluster.scratch.path())
        .env("PDSH_RCMD_TYPE", "ssh")
        .env("PDSH_SSH_ARGS", ssh_args);
    cmd
}

fn sorted_lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

/// Runs the same arguments through our tool and the real one; returns both outputs.
fn side_by_side(cluster: &Cluster, name: &str, args: &[&str]) -> (Output, Output) {
    let mine = run(ours(cluster, name).args(args));
    let real = run(theirs(cluster, name).args(args));
    (mine, real)
}

/// Each worker's `status` file (in its HOME) holds the exit status its command will use.
fn write_statuses(cluster: &Cluster, statuses: &[u8]) {
    for (worker, status) in cluster.workers.iter().zip(statuses) {
        fs::write(worker.sftp_home().join("status"), format!("{status}\n")).expect("status");
    }
}

#[test]
fn pdsh_command_lines_from_the_man_page_print_and_exit_as_pdsh() {
    let mut cluster = Cluster::new(3);
    let all = "127.0.0.[2-4]";
    write_statuses(&cluster, &[0, 3, 7]);
    let exits = "echo out $HOME; echo err >&2; exit $(cat $HOME/status)";
    for args in [
        &["-w", all, "echo", "hello"][..],
        &["-w", all, "-x", "127.0.0.3", "echo", "$HOME"],
        &[
            "-w",
            "127.0.0.[2,4],127.0.0.3",
            "-l",
            "root",
            "-f",
            "1",
            "echo",
            "$HOME",
        ],
        &["-N", "-w", all, "echo", "$HOME"],
        &["-w", all, exits],
        &["-S", "-w", all, exits],
        &["-Sw", all, "-t", "5", "-u", "30", "-b", exits],
    ] {
        let (mine, real) = side_by_side(&cluster, "pdsh", args);
        assert_eq!(
            mine.status.code(),
            real.status.code(),
            "{args:?}\nours: {}\ntheirs: {}",
            describe(&mine),
            describe(&real)
        );
        assert_eq!(
            sorted_lines(&stdout(&mine)),
            sorted_lines(&stdout(&real)),
            "{args:?}"
        );
        assert!(!stdout(&mine).is_empty(), "{args:?}: {}", describe(&mine));
        // The remote stderr lines, `host: err`, are the same; the lines each tool adds about
        // exit statuses differ in wording.
        let remote_err = |out: &Output| {
            let lines: Vec<String> = sorted_lines(&stderr(out))
                .into_iter()
                .filter(|line| line.ends_with(": err"))
                .collect();
            lines
        };
        assert_eq!(remote_err(&mine), remote_err(&real), "{args:?}");
    }
    let (mine, _) = side_by_side(&cluster, "pdsh", &["-S", "-w", all, exits]);
    assert_exit_code(&mine, 7);

    // No -w: WCOLL names the hosts; DSHPATH is the remote PATH.
    let wcoll = cluster.scratch_file("wcoll", b"127.0.0.2\n127.0.0.4\n");
    let with_env = |mut cmd: Command| {
        cmd.env("WCOLL", &wcoll)
            .env("DSHPATH", "/opt/tools/bin:/usr/bin:/bin")
            .args(["echo", "$PATH"]);
        run(&mut cmd)
    };
    let (mine, real) = (
        with_env(ours(&cluster, "pdsh")),
        with_env(theirs(&cluster, "pdsh")),
    );
    assert_success(&real);
    assert_eq!(sorted_lines(&stdout(&mine)), sorted_lines(&stdout(&real)));
    assert_eq!(
        sorted_lines(&stdout(&mine)),
        [
            "127.0.0.2: /opt/tools/bin:/usr/bin:/bin",
            "127.0.0.4: /opt/tools/bin:/usr/bin:/bin"
        ]
    );

    // A host that cannot be reached: ssh's 255 under -S, and 0 without, as pdsh.
    cluster.workers[2].stop();
    for (args, code) in [
        (&["-S", "-w", all, "true"][..], 255),
        (&["-w", all, "true"], 0),
    ] {
        let (mine, real) = side_by_side(&cluster, "pdsh", args);
        assert_exit_code(&real, code);
        assert_exit_code(&mine, code);
        assert_stderr_contains(&mine, "127.0.0.4");
    }
}

#[test]
fn pdsh_q_lists_the_options_and_hosts_as_pdsh_does() {
    let cluster = Cluster::new(1);
    let hosts = cluster.scratch_file("hosts", b"127.0.0.9\n127.0.0.10\n127.0.0.11\n");
    let from_file = format!("127.0.0.[2-5],^{}", hosts.display());
    for args in [
        &[
            "-q",
            "-w",
            "127.0.0.[2-6]",
            "-x",
            "127.0.0.4",
            "-l",
            "bob",
            "-t",
            "5",
            "-u",
            "30",
            "-f",
            "4",
            "-R",
            "ssh",
            "uptime",
        ][..],
        &[
            "-q",
            "-N",
            "-b",
            "-w",
            "127.0.0.[2-5],-127.0.0.3",
            "hostname",
        ],
        &["-q", "-w", &from_file, "-x", "127.0.0.10", "true"],
        &[
            "-Q",
            "-d",
            "-S",
            "-w",
            "127.0.0.[3-4],127.0.0.2",
            "echo",
            "a  b",
        ],
    ] {
        let (mine, real) = side_by_side(&cluster, "pdsh", args);
        assert_success(&real);
        assert_success(&mine);
        // The program's own path is where each one is installed.
        let report = |out: &Output| -> Vec<String> {
            stdout(out)
                .lines()
                .filter(|line| {
                    !line.starts_with("Full program") && !line.starts_with("Remote program")
                })
                .map(str::to_owned)
                .collect()
        };
        assert_eq!(report(&mine), report(&real), "{args:?}");
        assert!(
            stdout(&mine).contains("-- Target nodes --"),
            "{}",
            describe(&mine)
        );
    }
    let (mine, real) = side_by_side(
        &cluster,
        "pdcp",
        &[
            "-q",
            "-r",
            "-p",
            "-w",
            "127.0.0.[2-3]",
            "/etc/hosts",
            "/etc/passwd",
            "/tmp",
        ],
    );
    let report = |out: &Output| -> Vec<String> {
        stdout(out)
            .lines()
            .filter(|line| !line.starts_with("Full program") && !line.starts_with("Remote program"))
            .map(str::to_owned)
            .collect()
    };
    assert_success(&real);
    assert_eq!(report(&mine), report(&real));

    // `--as` gives the same personality to smssh itself.
    let mut cmd = cluster.command("smssh");
    let out = run(cmd.args(["--as", "pdsh", "-q", "-w", "127.0.0.[2-3]", "uptime"]));
    assert_success(&out);
    assert!(
        stdout(&out).ends_with("-- Target nodes --\n127.0.0.[2-3]\n"),
        "{}",
        describe(&out)
    );

    // A named group (smssh's own, not pdsh's) goes wherever -w takes hosts.
    let config = cluster.home.path().join(".config/smssh/config.toml");
    fs::create_dir_all(config.parent().expect("a parent")).expect("mkdir");
    fs::write(&config, "[groups]\nlab = \"127.0.0.[2-5]\"\n").expect("config");
    let out = run(ours(&cluster, "pdsh").args(["-q", "-w", "@lab", "-x", "127.0.0.4", "true"]));
    assert_success(&out);
    assert!(
        stdout(&out).ends_with("-- Target nodes --\n127.0.0.[2-3,5]\n"),
        "{}",
        describe(&out)
    );
}

#[test]
fn pdsh_refuses_what_it_cannot_honour_in_one_line() {
    let cluster = Cluster::new(1);
    for (args, needle) in [
        (&["-R", "exec", "-w", "127.0.0.2", "true"][..], "-R exec"),
        (&["-g", "compute", "true"], "genders"),
        (&["-w", "/node.*/", "true"], "regular expressions"),
        (&["-Z", "true"], "invalid option -- 'Z'"),
        (&["-w"], "option requires an argument -- 'w'"),
        (&["-f", "5000", "-w", "127.0.0.2", "true"], "5000"),
        (&["-N", "-w", "127.0.0.2"], "interactive shell"),
    ] {
        let out = run(ours(&cluster, "pdsh").args(args));
        assert_exit_code(&out, 1);
        let err = stderr(&out);
        assert_eq!(err.lines().count(), 1, "{args:?}: {err}");
        assert!(
            err.starts_with("pdsh: ") && err.contains(needle),
            "{args:?}: {err}"
        );
    }
    let out = run(cluster
        .command("smssh")
        .args(["--as", "pdshx", "-w", "h", "true"]));
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "--as pdshx");
}

#[test]
fn pdcp_and_rpdcp_lay_out_files_as_pdcp_and_rpdcp() {
    let mut cluster = Cluster::new(2);
    let all = "127.0.0.[2-3]";
    let file = cluster.scratch_file("src/app.conf", b"setting=1\n");
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).expect("chmod");
    let source_tree = cluster.scratch.path().join("src/tree");
    fs::create_dir_all(source_tree.join("sub")).expect("mkdir");
    fs::write(source_tree.join("sub/deep.txt"), "deep\n").expect("write");
    fs::write(source_tree.join("top.txt"), "top\n").expect("write");
    let dest = |who: &str| {
        let dir = cluster.scratch.path().join(format!("dest-{who}"));
        fs::create_dir_all(&dir).expect("mkdir");
        dir
    };
    // Every worker shares this machine's file system, so an absolute destination would be one
    // directory for both hosts, and two hosts copying one tree into it at once race (the real
    // pdcp then flattens the tree now and then): the layout is compared on one host.
    let (mine_dir, real_dir) = (dest("ours"), dest("theirs"));
    let (file_s, tree_s) = (file.to_str().unwrap(), source_tree.to_str().unwrap());
    let one = "127.0.0.2";
    let mine = run(ours(&cluster, "pdcp").args([
        "-w",
        one,
        "-rp",
        file_s,
        tree_s,
        mine_dir.to_str().unwrap(),
    ]));
    let real = run(theirs(&cluster, "pdcp").args([
        "-w",
        one,
        "-rp",
        file_s,
        tree_s,
        real_dir.to_str().unwrap(),
    ]));
    assert_success(&real);
    assert_success(&mine);
    assert_eq!(tree(&mine_dir), tree(&real_dir));
    assert_eq!(tree(&mine_dir).len(), 5, "{:?}", tree(&mine_dir));

    // rpdcp: DIR/file.<host> for every host.
    let (mine_dir, real_dir) = (dest("r-ours"), dest("r-theirs"));
    let mine = run(ours(&cluster, "rpdcp").args([
        "-w",
        all,
        "-r",
        file_s,
        tree_s,
        mine_dir.to_str().unwrap(),
    ]));
    let real = run(theirs(&cluster, "rpdcp").args([
        "-w",
        all,
        "-r",
        file_s,
        tree_s,
        real_dir.to_str().unwrap(),
    ]));
    assert_success(&real);
    assert_success(&mine);
    let names = |dir: &Path| -> Vec<String> { tree(dir).into_keys().collect() };
    assert_eq!(names(&mine_dir), names(&real_dir));
    assert!(
        names(&mine_dir).contains(&"app.conf.127.0.0.3".to_owned()),
        "{:?}",
        names(&mine_dir)
    );
    assert_eq!(tree(&mine_dir), tree(&real_dir));
    // The staging directory is gone.
    assert!(fs::read_dir(&mine_dir).expect("list").all(|e| !e
        .expect("entry")
        .file_name()
        .to_string_lossy()
        .starts_with(".rpdcp")));

    // A host that cannot be reached: pdcp 2.34 exits 0 all the same; smscp as pdcp exits 1,
    // as smscp does, so that a script can tell (the one deliberate difference).
    cluster.workers[1].stop();
    let (mine_dir, real_dir) = (dest("dead-ours"), dest("dead-theirs"));
    let mine = run(ours(&cluster, "pdcp").args(["-w", all, file_s, mine_dir.to_str().unwrap()]));
    let real = run(theirs(&cluster, "pdcp").args(["-w", all, file_s, real_dir.to_str().unwrap()]));
    assert_exit_code(&real, 0);
    assert_exit_code(&mine, 1);
    assert!(
        mine_dir.join("app.conf").is_file(),
        "the live host got the file"
    );
    assert_stderr_contains(&mine, "127.0.0.3");

    // A name rpdcp cannot take (a directory holds it): one line, status 1, and the copies
    // kept in the staging directory it names.
    let blocked = dest("blocked");
    fs::create_dir_all(blocked.join("app.conf.127.0.0.2/inside")).expect("mkdir");
    let out =
        run(ours(&cluster, "rpdcp").args(["-w", "127.0.0.2", file_s, blocked.to_str().unwrap()]));
    assert_exit_code(&out, 1);
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("app.conf.127.0.0.2") && err.contains("left the hosts' files in"),
        "{err}"
    );
    let staging = fs::read_dir(&blocked)
        .expect("list")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".rpdcp"))
        })
        .expect("the staging directory is kept");
    assert_eq!(
        fs::read(staging.join("127.0.0.2/app.conf")).expect("the copy is kept"),
        b"setting=1\n"
    );

    // smscp --as rpdcp is the same tool.
    let again = dest("as");
    let out = run(cluster.command("smscp").args([
        "--as",
        "rpdcp",
        "-w",
        "127.0.0.2",
        file_s,
        again.to_str().unwrap(),
    ]));
    assert_success(&out);
    assert!(again.join("app.conf.127.0.0.2").is_file());
}

#[test]
fn dshbak_groups_pdsh_output_as_dshbak_does() {
    let cluster = Cluster::new(3);
    write_statuses(&cluster, &[5, 5, 6]);
    let real = run(theirs(&cluster, "pdsh").args([
        "-w",
        "127.0.0.[2-4]",
        "cat $HOME/status; echo second line",
    ]));
    assert_success(&real);
    let input = stdout(&real);
    assert_eq!(input.lines().count(), 6, "{input}");
    for args in [&["-c"][..], &[]] {
        let mine = run_with_stdin(ours(&cluster, "dshbak").args(args), input.as_bytes());
        let real = run_with_stdin(theirs(&cluster, "dshbak").args(args), input.as_bytes());
        assert_success(&mine);
        assert_eq!(stdout(&mine), stdout(&real), "dshbak {args:?}");
    }
    let mine = run_with_stdin(ours(&cluster, "dshbak").arg("-c"), input.as_bytes());
    assert!(
        stdout(&mine)
            .starts_with("----------------\n127.0.0.[2-3]\n----------------\n5\nsecond line\n"),
        "{}",
        stdout(&mine)
    );

    // smssh --as dshbak is the same tool.
    let mut cmd = cluster.command("smssh");
    let again = run_with_stdin(cmd.args(["--as", "dshbak", "-c"]), input.as_bytes());
    assert_eq!(stdout(&again), stdout(&mine));

    // -d DIR: each host's lines in DIR/host.
    let (mine_dir, real_dir) = (
        cluster.scratch.path().join("bak-ours"),
        cluster.scratch.path().join("bak-theirs"),
    );
    for dir in [&mine_dir, &real_dir] {
        fs::create_dir_all(dir).expect("mkdir");
    }
    let mine = run_with_stdin(
        ours(&cluster, "dshbak").arg("-d").arg(&mine_dir),
        input.as_bytes(),
    );
    let real = run_with_stdin(
        theirs(&cluster, "dshbak").arg("-d").arg(&real_dir),
        input.as_bytes(),
    );
    assert_success(&mine);
    assert_success(&real);
    let contents = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        tree(dir)
            .into_iter()
            .map(|(name, (_, data))| (name, data))
            .collect()
    };
    assert_eq!(contents(&mine_dir), contents(&real_dir));
}

/// The command of the fail-fast runs: the worker whose HOME holds `fail` exits 1 at once,
/// the others mark that they started and would run for a minute.
const FAIL_OR_SLEEP: &str =
    "touch $HOME/started; test -e $HOME/fail && exit 1; sleep 60; touch $HOME/finished";

fn fail_fast_cluster() -> Cluster {
    let cluster = Cluster::new(5);
    fs::write(cluster.workers[0].sftp_home().join("fail"), "").expect("fail marker");
    cluster
}

/// Four hosts two at a time: the first fails, the second is stopped, the last three never
/// start; the run ends long before the sleeping host would have.
fn assert_stopped_fast(cluster: &Cluster, out: &Output, started: Instant) {
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "the run waited for the sleeping host: {:?}\n{}",
        started.elapsed(),
        describe(out)
    );
    assert_exit_code(out, 1);
    let err = stderr(out);
    assert!(
        err.contains("never started") && err.contains("127.0.0.[4-6]"),
        "{err}"
    );
    assert!(err.contains("127.0.0.3: stopped"), "{err}");
    for worker in &cluster.workers[2..] {
        assert!(
            !worker.sftp_home().join("started").exists(),
            "{} started",
            worker.addr()
        );
    }
    assert!(!cluster.workers[1].sftp_home().join("finished").exists());
    // One host was running beside the failed one, and it alone is named as stopped.
    assert_eq!(
        err.lines()
            .filter(|line| line.contains(": stopped:"))
            .count(),
        1,
        "{err}"
    );
}

#[test]
fn fail_fast_stops_the_run_at_the_first_failed_host() {
    let cluster = fail_fast_cluster();
    let started = Instant::now();
    let out = run(cluster.command("smssh").args([
        "--fail-fast",
        "-j",
        "2",
        "-w",
        "127.0.0.[2-6]",
        "--",
        FAIL_OR_SLEEP,
    ]));
    assert_stopped_fast(&cluster, &out, started);
    assert_stderr_contains(&out, "127.0.0.2: exit status 1");

    // pdsh -k through the link: the same stop.
    for worker in &cluster.workers {
        let _ = fs::remove_file(worker.sftp_home().join("started"));
    }
    let started = Instant::now();
    let out =
        run(ours(&cluster, "pdsh").args(["-k", "-f", "2", "-w", "127.0.0.[2-6]", FAIL_OR_SLEEP]));
    assert_stopped_fast(&cluster, &out, started);
}

#[test]
fn smscp_fail_fast_copies_to_no_host_after_a_failure() {
    let mut cluster = Cluster::new(4);
    cluster.workers[0].stop();
    let file = cluster.scratch_file("app.conf", b"setting=1\n");
    let out = run(cluster.command("smscp").args([
        "--fail-fast",
        "-j",
        "1",
        "-w",
        "127.0.0.[2-5]",
        file.to_str().unwrap(),
        ".",
    ]));
    assert_exit_code(&out, 1);
    let err = stderr(&out);
    assert!(
        err.contains("never started") && err.contains("127.0.0.[3-5]"),
        "{err}"
    );
    for worker in &cluster.workers[1..] {
        assert!(
            !worker.sftp_home().join("app.conf").exists(),
            "{} got the file",
            worker.addr()
        );
    }
    // Without a fan-out there is nothing to stop: refused in one line.
    let out = run(cluster
        .command("smssh")
        .args(["--fail-fast", "127.0.0.3", "true"]));
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "--fail-fast applies to a fan-out");
    let out =
        run(cluster
            .command("smscp")
            .args(["--fail-fast", file.to_str().unwrap(), "127.0.0.3:"]));
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "--fail-fast applies to a fan-out");
    assert!(!cluster.workers[1].sftp_home().join("app.conf").exists());
}

#[test]
fn pdsh_b_stops_at_the_first_ctrl_c() {
    let cluster = Cluster::new(2);
    let child = ours(&cluster, "pdsh")
        .args(["-b", "-w", "127.0.0.[2-3]", "sleep", "30"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start pdsh");
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "one Ctrl-C did not stop pdsh -b: {:?}\n{}",
        started.elapsed(),
        describe(&out)
    );
    assert_exit_code(&out, 130);
    assert_stderr_contains(&out, "interrupted");
}
