//! Fan-out against 16 real sshd workers: commands and copies on every host, gathers, and
//! hosts that are dead, hung or changed, each reported on its own while the others finish.

mod common;

use std::time::{Duration, Instant};

use common::*;

const WORKERS: usize = 16;
const ALL: &str = "127.0.0.[2-17]";

fn lines(text: &str) -> Vec<String> {
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

#[test]
fn a_command_runs_on_every_host_with_pdsh_prefixes_and_one_secret_fetch() {
    let cluster = Cluster::new(WORKERS);
    let fetches_before = cluster.moto.request_count("secretsmanager.GetSecretValue");
    let out = run(cluster
        .command("smssh")
        .args(["-w", ALL, "--", "echo", "hello"]));
    assert_success(&out);
    let expected: Vec<String> = lines(
        &cluster
            .addrs()
            .iter()
            .map(|a| format!("{a}: hello\n"))
            .collect::<String>(),
    );
    assert_eq!(lines(&stdout(&out)), expected);
    // Moto counts the requests it received, retries included, so the count does not depend
    // on what smssh says about its fetches.
    let fetches = cluster.moto.request_count("secretsmanager.GetSecretValue") - fetches_before;
    assert_eq!(
        fetches,
        1,
        "moto got {fetches} GetSecretValue requests for one run on {WORKERS} hosts\n{}",
        describe(&out)
    );
}

#[test]
fn json_reports_each_host_and_the_exit_status_is_the_largest() {
    let cluster = Cluster::new(WORKERS);
    let script = "case \"$SSH_CONNECTION\" in *' 127.0.0.5 '*) echo five; exit 3;; esac; echo ok";
    let out = run(cluster
        .command("smssh")
        .args(["--json", "-w", ALL, "--", script]));
    assert_exit_code(&out, 3);
    let mut seen = 0;
    for line in stdout(&out).lines() {
        let object: serde_json::Value =
            serde_json::from_str(line).expect("one JSON object per line");
        let host = object["host"].as_str().expect("host");
        assert!(object["duration_ms"].as_u64().is_some());
        assert!(object["error"].is_null());
        if host == "127.0.0.5" {
            assert_eq!(object["exit_status"], 3);
            assert_eq!(object["stdout"], "five\n");
        } else {
            assert_eq!(object["exit_status"], 0, "{line}");
            assert_eq!(object["stdout"], "ok\n");
        }
        seen += 1;
    }
    assert_eq!(seen, WORKERS);
}

#[test]
fn group_prints_identical_outputs_once_with_their_hostlist() {
    let cluster = Cluster::new(WORKERS);
    let script = "case \"$SSH_CONNECTION\" in *' 127.0.0.17 '*) echo odd;; *) echo same;; esac";
    let out = run(cluster
        .command("smssh")
        .args(["--group", "-w", ALL, "--", script]));
    assert_success(&out);
    let text = stdout(&out);
    assert!(
        text.contains("127.0.0.[2-16] (15)\n---------------\nsame\n"),
        "{text}"
    );
    assert!(
        text.contains("127.0.0.17 (1)\n---------------\nodd\n"),
        "{text}"
    );
}

#[test]
fn dead_hung_and_changed_hosts_fail_alone_and_quickly() {
    let mut cluster = Cluster::new(WORKERS);
    cluster.workers[0].stop();
    cluster.workers[1].pause();
    cluster.workers[2].regenerate_host_key();
    let started = Instant::now();
    let out = run(cluster.command("smssh").args([
        "--connect-timeout",
        "3",
        "-w",
        ALL,
        "--",
        "echo",
        "up",
    ]));
    let elapsed = started.elapsed();
    cluster.workers[1].resume();
    assert_exit_code(&out, 255);
    assert_eq!(
        stdout(&out).lines().count(),
        WORKERS - 3,
        "{}",
        describe(&out)
    );
    let err = stderr(&out);
    assert!(
        err.contains("127.0.0.2 port") && err.contains("connection refused"),
        "{err}"
    );
    assert!(
        err.contains("127.0.0.3") && err.contains("no answer within 3s"),
        "{err}"
    );
    assert!(
        err.contains("127.0.0.4") && err.contains("HOST KEY CHANGED"),
        "{err}"
    );
    assert!(err.contains("16 hosts: 13 ok, 3 failed"), "{err}");
    assert!(
        elapsed < Duration::from_secs(20),
        "a hung host held the run up: {elapsed:?}"
    );
}

#[test]
fn a_copy_reaches_every_host_reading_the_file_once() {
    let cluster = Cluster::new(WORKERS);
    let data: Vec<u8> = (0..3 * 1024 * 1024 + 77)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let source = cluster.scratch_file("build.tar", &data);
    for worker in &cluster.workers {
        std::fs::create_dir_all(worker.sftp_home().join("opt")).expect("mkdir opt");
    }
    let target = format!("root@{ALL}:opt/");
    let (out, io) = cluster.run_counting_io("smscp", &[source.to_str().unwrap(), &target]);
    assert_success(&out);
    for worker in &cluster.workers {
        let copy = std::fs::read(worker.sftp_home().join("opt/build.tar")).expect("copied file");
        assert!(copy == data, "{} got a different file", worker.addr());
    }
    // The kernel's count of bytes read covers the file and everything else: the TLS root
    // certificates the AWS SDK loads (about 0.4 MB on Debian), the SSH handshakes and the
    // servers' small SFTP replies, moto's answer, config files and the dynamic loader. That
    // is well below the file's size here, so reading it once stays under one and a half
    // times its size, while a second read, let alone one per host, would not.
    let size = data.len() as u64;
    let read = io["rchar"];
    assert!(
        (size..size + size / 2).contains(&read),
        "smscp read {read} bytes to copy a {size}-byte file to {WORKERS} hosts\n{io:?}\n{}",
        describe(&out)
    );
}

#[test]
fn w_with_a_path_target_pushes_and_a_dead_host_fails_alone() {
    let mut cluster = Cluster::new(WORKERS);
    let source = cluster.scratch_file("app.conf", b"setting=1\n");
    cluster.workers[5].stop();
    let missing = cluster.scratch.path().join("missing.conf");
    let out = run(cluster.command("smscp").args([
        "-w",
        ALL,
        "--exclude",
        "127.0.0.17",
        source.to_str().unwrap(),
        missing.to_str().unwrap(),
        ".",
    ]));
    assert_exit_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("15 hosts: 14 ok, 1 failed"), "{err}");
    assert_eq!(
        err.matches("missing.conf: No such file or directory")
            .count(),
        1,
        "reported once: {err}"
    );
    assert!(
        err.contains("127.0.0.7 port") && err.contains("connection refused"),
        "{err}"
    );
    for (i, worker) in cluster.workers.iter().enumerate() {
        let path = worker.sftp_home().join("app.conf");
        match i {
            5 | 15 => assert!(!path.exists(), "{} should have nothing", worker.addr()),
            _ => assert_eq!(std::fs::read(&path).expect("copied"), b"setting=1\n"),
        }
    }
}

#[test]
fn gather_writes_each_hosts_file_under_its_name() {
    let cluster = Cluster::new(WORKERS);
    for worker in &cluster.workers {
        std::fs::write(
            worker.sftp_home().join("app.log"),
            format!("log of {}\n", worker.addr()),
        )
        .expect("log");
    }
    let logs = tempfile::tempdir().expect("logs dir");
    let source = format!("{ALL}:app.log");
    let out = run(cluster
        .command("smscp")
        .args([&source, logs.path().to_str().unwrap()]));
    assert_success(&out);
    for worker in &cluster.workers {
        let got = std::fs::read_to_string(logs.path().join(worker.addr()).join("app.log"))
            .expect("gathered");
        assert_eq!(got, format!("log of {}\n", worker.addr()));
    }
}

#[test]
fn hosts_file_and_bad_hostlists() {
    let cluster = Cluster::new(3);
    let file = cluster.scratch_file(
        "hosts",
        b"# workers\n127.0.0.2\nroot@127.0.0.3 # with a user\n\n127.0.0.4\n",
    );
    let out = run(cluster.command("smssh").args([
        "--hosts-file",
        file.to_str().unwrap(),
        "--",
        "echo",
        "x",
    ]));
    assert_success(&out);
    assert_eq!(stdout(&out).lines().count(), 3);
    for (expr, message) in [
        ("worker[01-64", "unbalanced"),
        ("worker[9-1]", "runs backwards"),
        ("127.0.0.[2-4]", "every host"),
    ] {
        let out = run(cluster.command("smssh").args([
            "-w",
            expr,
            "--exclude",
            "127.0.0.[2-4]",
            "--",
            "true",
        ]));
        assert_exit_code(&out, 255);
        assert_stderr_contains(&out, message);
        assert_eq!(stderr(&out).lines().count(), 1, "{}", describe(&out));
    }
}

#[test]
fn ctrl_c_stops_running_hosts_and_still_summarizes() {
    let cluster = Cluster::new(4);
    let child = cluster
        .command("smssh")
        .args(["-w", "127.0.0.[2-5]", "--", "sleep", "30"])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start smssh");
    std::thread::sleep(Duration::from_millis(1500));
    let started = Instant::now();
    // The first Ctrl-C only says where the run stands; the second, within a second, stops it.
    interrupt_twice(child.id());
    let out = child.wait_with_output().expect("wait");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "Ctrl-C took {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    assert_stderr_contains(&out, "running 4: 127.0.0.[2-5]");
    assert_stderr_contains(&out, "4 hosts: 0 ok, 4 failed");
    assert_stderr_contains(&out, "interrupted");
}

#[test]
fn ec2_filter_reaches_the_tagged_running_instances_at_their_private_addresses() {
    let cluster = Cluster::new(4);
    let tagged = serde_json::json!({"RotateSSHKeys": "True"});
    cluster.moto.create_ec2_instances(&serde_json::json!([
        {"ip": "127.0.0.2", "tags": tagged},
        {"ip": "127.0.0.3"},
        {"ip": "127.0.0.4", "tags": tagged},
        {"ip": "127.0.0.5", "tags": tagged, "state": "stopped"},
    ]));
    let out = run(cluster.command("smssh").args([
        "--ec2-filter",
        "tag:RotateSSHKeys=True",
        "--",
        "echo",
        "tagged",
    ]));
    assert_success(&out);
    assert_eq!(
        lines(&stdout(&out)),
        ["127.0.0.2: tagged", "127.0.0.4: tagged"]
    );

    let out = run(cluster
        .command("smssh")
        .args(["--ec2-filter", "tag:Role=none", "--", "true"]));
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "no running instance matches");
}

#[test]
fn retries_wait_for_a_host_that_comes_back_and_timeout_bounds_a_slow_one() {
    let mut cluster = Cluster::new(2);
    cluster.workers[0].stop();
    let (restarted, started) = std::sync::mpsc::channel();
    let command = {
        let mut cmd = cluster.command("smssh");
        cmd.args([
            "--retries",
            "4",
            "-w",
            "127.0.0.[2-3]",
            "--",
            "echo",
            "back",
        ]);
        cmd
    };
    let mut worker = cluster.workers.remove(0);
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1200));
        worker.start();
        restarted.send(()).expect("signal the restart");
        worker
    });
    let mut command = command;
    let out = run(&mut command);
    started.recv().expect("the worker was restarted");
    let worker = restarter.join().expect("restart thread");
    assert_success(&out);
    assert_eq!(lines(&stdout(&out)), ["127.0.0.2: back", "127.0.0.3: back"]);
    drop(worker);

    let started = Instant::now();
    let out = run(cluster.command("smssh").args([
        "--timeout",
        "2",
        "-w",
        "127.0.0.3",
        "--",
        "sleep",
        "20",
    ]));
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "no result within 2s");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took {:?}",
        started.elapsed()
    );
}

/// Regression (issue 9, item 9): a gather writes DIR/<host>/..., so a host named `..` (here an
/// alias that ssh_config resolves to a real worker) wrote into the parent of DIR.
#[test]
fn a_host_named_dot_dot_makes_a_gather_write_into_the_parent_of_the_target() {
    let cluster = Cluster::new(1);
    let remote = cluster.workers[0].sftp_home().join("probe.txt");
    std::fs::write(&remote, b"from the worker").expect("remote file");
    let config = cluster.scratch_file(
        "config",
        format!(
            "Host ..\n  HostName 127.0.0.2\n  Port {}\n  User root\nHost 127.0.0.2\n  Port {}\n  User root\n",
            cluster.port, cluster.port
        )
        .as_bytes(),
    );
    let parent = tempfile::tempdir().expect("parent");
    let target = parent.path().join("gathered");
    std::fs::create_dir(&target).expect("target");
    let out = run(cluster.command("smscp").args([
        "-F",
        config.to_str().expect("utf-8"),
        "127.0.0.2,..:probe.txt",
        target.to_str().expect("utf-8"),
    ]));
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "not a plain directory name");
    assert!(
        !parent.path().join("probe.txt").exists(),
        "written into the parent"
    );
    assert_eq!(
        std::fs::read_dir(&target).expect("target").count(),
        0,
        "nothing is copied when the plan is refused"
    );
}

/// `--max-output` bounds what `-b` and `--json` keep per host, and the result says so.
#[test]
fn max_output_bounds_what_group_and_json_keep_and_says_so() {
    let cluster = Cluster::new(2);
    let command = "head -c 3000000 /dev/zero | tr '\\0' x; echo";
    let out = run(cluster.command("smssh").args([
        "--json",
        "--max-output",
        "1",
        "-w",
        "127.0.0.[2-3]",
        "--",
        command,
    ]));
    assert_success(&out);
    for line in stdout(&out).lines() {
        let object: serde_json::Value = serde_json::from_str(line).expect("JSON");
        assert_eq!(object["truncated"], true, "{line:.200}");
        let kept = object["stdout"].as_str().expect("stdout").len();
        assert_eq!(kept, 1024 * 1024, "{line:.200}");
    }
    let out = run(cluster.command("smssh").args([
        "--group",
        "--max-output",
        "1",
        "-w",
        "127.0.0.[2-3]",
        "--",
        command,
    ]));
    assert_success(&out);
    assert!(
        stdout(&out).contains("output truncated after 1.00 MiB"),
        "{:.300}",
        stdout(&out)
    );
}

/// Liveness: a host whose sshd freezes after login (its whole process tree SIGSTOPped while
/// its command runs) fails by name once its keepalives go unanswered, while the others, whose
/// commands run longer than the keepalive bound, finish. The interval is set small here so
/// the test is quick; `fanout::tests` pins that a fan-out without one uses 15 s.
#[test]
fn a_host_that_freezes_after_login_fails_by_name_and_the_others_finish() {
    let cluster = Cluster::new(3);
    let marker = cluster.workers[1].sftp_home().join("started");
    let started = Instant::now();
    let running = spawn(cluster.command("smssh").args([
        "-o",
        "ServerAliveInterval=1",
        "-o",
        "ServerAliveCountMax=2",
        "-w",
        "127.0.0.[2-4]",
        "--",
        "touch \"$HOME/started\"; sleep 5; echo done",
    ]));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(
            Instant::now() < deadline,
            "the command never started on 127.0.0.3"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    cluster.workers[1].pause();
    let out = running.wait_timeout(Duration::from_secs(30));
    cluster.workers[1].resume();
    let out = out.unwrap_or_else(|out| panic!("the frozen host held the run\n{}", describe(&out)));
    assert_exit_code(&out, 255);
    assert_eq!(
        lines(&stdout(&out)),
        ["127.0.0.2: done", "127.0.0.4: done"],
        "{}",
        describe(&out)
    );
    assert_stderr_contains(&out, "127.0.0.3: the session ended");
    // Two unanswered keepalives a second apart, after a command of 5 s on the others.
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "{:?}",
        started.elapsed()
    );
}

/// Liveness mid-transfer: a host whose sshd freezes while a large upload to it is under way
/// fails by name within the keepalive bound, the others receive the whole file, and no
/// temporary file is left on them. A frozen receiver stops reading, so the client's socket
/// send buffer fills and its writes block: the keepalive timer alone cannot end that wait.
#[test]
fn a_host_that_freezes_mid_upload_fails_by_name_within_the_keepalive_bound() {
    let cluster = Cluster::new(3);
    // Far more than the channel window and the loopback socket buffers together, so the
    // client is still sending when the host freezes.
    let payload: Vec<u8> = (0..64u32 * 1024 * 1024 / 4)
        .flat_map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes())
        .collect();
    let source = cluster.scratch_file("image.bin", &payload);
    let frozen_home = cluster.workers[1].sftp_home();
    let started = Instant::now();
    let running = spawn(cluster.command("smscp").args([
        "-o",
        "ServerAliveInterval=1",
        "-o",
        "ServerAliveCountMax=2",
        "-w",
        "127.0.0.[2-4]",
        source.to_str().unwrap(),
        ".",
    ]));
    let deadline = Instant::now() + Duration::from_secs(90);
    let receiving = || {
        std::fs::read_dir(&frozen_home)
            .into_iter()
            .flatten()
            .flatten()
            .any(|entry| {
                entry
                    .file_name()
                    .to_string_lossy()
                    .starts_with(".image.bin.")
                    && entry.metadata().map(|m| m.len() > 0).unwrap_or(false)
            })
    };
    while !receiving() {
        if Instant::now() >= deadline {
            let out = running.wait_timeout(Duration::ZERO);
            panic!(
                "the upload never started on 127.0.0.3\n{}",
                describe(out.as_ref().unwrap_or_else(|out| out))
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    cluster.workers[1].pause();
    let out = running.wait_timeout(Duration::from_secs(60));
    cluster.workers[1].resume();
    let out = out.unwrap_or_else(|out| panic!("the frozen host held the run\n{}", describe(&out)));
    assert_exit_code(&out, 1);
    let err = stderr(&out);
    assert!(err.contains("3 hosts: 2 ok, 1 failed"), "{err}");
    assert!(err.contains("127.0.0.3"), "{err}");
    for i in [0, 2] {
        let home = cluster.workers[i].sftp_home();
        assert!(
            std::fs::read(home.join("image.bin")).expect("copied") == payload,
            "{} got a different file",
            cluster.workers[i].addr()
        );
    }
    // Three seconds without progress (an interval of 1 s, ServerAliveCountMax 2), the grace
    // after the session's end, and the time the others' uploads take.
    assert!(
        started.elapsed() < Duration::from_secs(45),
        "{:?}\n{}",
        started.elapsed(),
        describe(&out)
    );
    assert!(
        err.contains("127.0.0.3") && err.contains("the server stopped answering"),
        "{err}"
    );
}

/// Pacing through a jump host: sshd drops unauthenticated connections beyond its
/// `MaxStartups` (10 by default, before a random share is dropped; here all of them, so the
/// test is not left to chance), and a fan-out through a bastion opens one connection to it
/// per destination. The bastion's key lookup takes a second (an AuthorizedKeysCommand that
/// sleeps), as a loaded bastion far away would, so logins overlap; with 24 destinations and
/// `-j 24`, every one must still get through.
#[test]
fn a_fanout_through_one_jump_host_stays_under_its_max_startups() {
    use std::os::unix::fs::PermissionsExt;

    let mut cluster = Cluster::new(25);
    // sshd runs an AuthorizedKeysCommand only from a path that root owns and nobody else may
    // write, up to /; /tmp is writable by all, /run is not.
    let slow = tempfile::Builder::new()
        .prefix("smssh-slow-keys")
        .tempdir_in("/run")
        .expect("a directory under /run");
    std::fs::set_permissions(slow.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod the directory");
    let script = slow.path().join("keys");
    std::fs::write(
        &script,
        format!("#!/bin/sh\nsleep 1\necho '{}'\n", cluster.public_key.trim()),
    )
    .expect("write the key command");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755))
        .expect("chmod the key command");
    cluster.workers[0].set_authorized_keys("");
    cluster.workers[0].set_global_config(&format!(
        "MaxStartups 10:100:10\nLogLevel DEBUG\nAuthorizedKeysCommand {}\nAuthorizedKeysCommandUser root",
        script.display()
    ));
    let path = cluster.ssh_config_path();
    let config = std::fs::read_to_string(&path).expect("read HOME/.ssh/config");
    std::fs::write(
        &path,
        format!("Host 127.0.0.* !127.0.0.2\n    ProxyJump 127.0.0.2\n{config}"),
    )
    .expect("write HOME/.ssh/config");
    let out =
        run(cluster
            .command("smssh")
            .args(["-j", "24", "-w", "127.0.0.[3-26]", "--", "true"]));
    assert_success(&out);
    // Each destination was reached through the bastion, which logs every channel it opens.
    let bastion_log = cluster.workers[0].log();
    for worker in &cluster.workers[1..] {
        assert!(
            bastion_log.contains(&format!("target {} port", worker.addr())),
            "{} was not reached through the bastion\n{}",
            worker.addr(),
            describe(&out)
        );
    }
}

/// A `-j` larger than the open-file limit allows runs at the width that fits, and says so in
/// one line, instead of failing hosts with "Too many open files" half way through.
#[test]
fn a_fanout_wider_than_the_open_file_limit_narrows_with_one_line() {
    let cluster = Cluster::new(3);
    let smssh = cluster.command("smssh");
    let mut limited = std::process::Command::new("bash");
    limited.args(["-c", "ulimit -Sn 96 && ulimit -Hn 96 && exec \"$0\" \"$@\""]);
    limited.arg(smssh.get_program());
    for (name, value) in smssh.get_envs() {
        match value {
            Some(value) => limited.env(name, value),
            None => limited.env_remove(name),
        };
    }
    limited.args(["-j", "500", "-w", "127.0.0.[2-4]", "--", "echo ok"]);
    let out = run(&mut limited);
    assert_success(&out);
    assert_eq!(
        lines(&stdout(&out)),
        ["127.0.0.2: ok", "127.0.0.3: ok", "127.0.0.4: ok"]
    );
    let err = stderr(&out);
    assert_eq!(
        err.matches("-j 500 needs about 1064 open files").count(),
        1,
        "{err}"
    );
    assert!(err.contains("(96, the hard limit"), "{err}");
    assert!(err.contains("running 16 hosts at once"), "{err}");
}
