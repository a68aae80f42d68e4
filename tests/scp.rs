//! smscp against real sshd workers and moto: copies both ways, scp's rules, and failures that
//! leave nothing half-written. The workers are local processes, so a "remote" path is also a
//! local path the test can inspect directly.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use common::*;

fn smscp(cluster: &Cluster, args: &[&str]) -> std::process::Output {
    run(cluster.command("smscp").args(args))
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn upload_and_download_round_trip_byte_for_byte() {
    let cluster = Cluster::new(1);
    let data = random_bytes(5 * 1024 * 1024 + 12345, 1);
    let source = cluster.scratch_file("payload.bin", &data);
    let remote_dir = tempfile::tempdir().expect("remote dir");
    let local_dir = tempfile::tempdir().expect("local dir");
    let remote_before = Listing::of(remote_dir.path());
    let local_before = Listing::of(local_dir.path());
    let target = format!("127.0.0.2:{}/", remote_dir.path().display());
    let out = smscp(&cluster, &[source.to_str().expect("utf-8"), &target]);
    assert_success(&out);
    let uploaded = remote_dir.path().join("payload.bin");
    assert_eq!(std::fs::read(&uploaded).expect("uploaded file"), data);

    let back = local_dir.path().join("back.bin");
    let remote = format!("127.0.0.2:{}", uploaded.display());
    let out = smscp(&cluster, &[&remote, back.to_str().expect("utf-8")]);
    assert_success(&out);
    assert_eq!(std::fs::read(&back).expect("downloaded file"), data);
    // A temporary file left behind would be a new name besides the copy, whatever it is called.
    assert_eq!(
        remote_before.new_names_except(&["payload.bin"]),
        Vec::<String>::new(),
        "left on the remote side"
    );
    assert_eq!(
        local_before.new_names_except(&["back.bin"]),
        Vec::<String>::new(),
        "left on the local side"
    );
}

#[test]
fn empty_file_and_scp_uri_target_with_explicit_port() {
    let cluster = Cluster::new(1);
    let source = cluster.scratch_file("empty", b"");
    let remote_dir = tempfile::tempdir().expect("remote dir");
    let uri = format!(
        "scp://root@127.0.0.2:{}/{}/copy",
        cluster.port,
        remote_dir.path().display()
    );
    let out =
        run(cluster
            .command("smscp")
            .args(["-F", "none", source.to_str().expect("utf-8"), &uri]));
    assert_success(&out);
    assert_eq!(
        std::fs::read(remote_dir.path().join("copy"))
            .expect("copy")
            .len(),
        0
    );
}

#[test]
fn recursive_copy_with_p_preserves_modes_and_times() {
    let cluster = Cluster::new(1);
    let tree = tempfile::tempdir().expect("tree");
    let root = tree.path().join("dist");
    std::fs::create_dir_all(root.join("bin/deep")).expect("mkdir");
    std::fs::write(root.join("bin/tool"), b"#!/bin/sh\necho hi\n").expect("write");
    std::fs::set_permissions(
        root.join("bin/tool"),
        std::fs::Permissions::from_mode(0o750),
    )
    .expect("chmod");
    std::fs::write(root.join("bin/deep/data"), random_bytes(70_000, 2)).expect("write");
    std::fs::write(root.join("README"), b"readme").expect("write");
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_500_000_000);
    std::fs::File::options()
        .write(true)
        .open(root.join("README"))
        .expect("open")
        .set_times(
            std::fs::FileTimes::new()
                .set_modified(old)
                .set_accessed(old),
        )
        .expect("touch");

    let remote_dir = tempfile::tempdir().expect("remote dir");
    let target = format!("127.0.0.2:{}", remote_dir.path().display());
    let out = smscp(&cluster, &["-rp", root.to_str().expect("utf-8"), &target]);
    assert_success(&out);
    let copied = remote_dir.path().join("dist");
    assert_eq!(
        std::fs::read(copied.join("bin/deep/data")).expect("data"),
        random_bytes(70_000, 2)
    );
    let mode = std::fs::metadata(copied.join("bin/tool"))
        .expect("tool")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o750);
    let mtime = std::fs::metadata(copied.join("README"))
        .expect("readme")
        .modified()
        .expect("mtime");
    assert_eq!(mtime, old);

    // And back again into an existing local directory.
    let local = tempfile::tempdir().expect("local");
    let source = format!("127.0.0.2:{}", copied.display());
    let out = smscp(
        &cluster,
        &["-r", &source, local.path().to_str().expect("utf-8")],
    );
    assert_success(&out);
    assert_eq!(
        std::fs::read(local.path().join("dist/README")).expect("readme"),
        b"readme"
    );
    assert_eq!(
        std::fs::read(local.path().join("dist/bin/deep/data")).expect("data"),
        random_bytes(70_000, 2)
    );

    // Without -r a directory is refused.
    let out = smscp(&cluster, &[root.to_str().expect("utf-8"), &target]);
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "not a regular file");
}

#[test]
fn a_failing_source_is_reported_and_the_others_still_copy() {
    let cluster = Cluster::new(1);
    let a = cluster.scratch_file("a.txt", b"A");
    let b = cluster.scratch_file("b.txt", b"B");
    let missing = cluster.scratch.path().join("missing.txt");
    let remote_dir = tempfile::tempdir().expect("remote dir");
    let target = format!("127.0.0.2:{}", remote_dir.path().display());
    let out = smscp(
        &cluster,
        &[
            a.to_str().unwrap(),
            missing.to_str().unwrap(),
            b.to_str().unwrap(),
            &target,
        ],
    );
    assert_exit_code(&out, 1);
    assert_eq!(
        stderr(&out).trim(),
        format!("smscp: {}: No such file or directory", missing.display())
    );
    assert_eq!(
        std::fs::read(remote_dir.path().join("a.txt")).expect("a"),
        b"A"
    );
    assert_eq!(
        std::fs::read(remote_dir.path().join("b.txt")).expect("b"),
        b"B"
    );
}

#[test]
fn a_local_source_that_is_not_a_readable_file_is_refused() {
    let cluster = Cluster::new(1);
    let socket_path = cluster.scratch.path().join("socket");
    let _listener = std::os::unix::net::UnixListener::bind(&socket_path).expect("bind socket");
    let remote_dir = tempfile::tempdir().expect("remote dir");
    let target = format!("127.0.0.2:{}/", remote_dir.path().display());
    let out = smscp(&cluster, &[socket_path.to_str().unwrap(), &target]);
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "not a regular file");
    assert_eq!(
        std::fs::read_dir(remote_dir.path()).expect("dir").count(),
        0
    );
}

#[test]
fn missing_remote_path_and_missing_target_directories() {
    let cluster = Cluster::new(1);
    let local = tempfile::tempdir().expect("local");
    let out = smscp(
        &cluster,
        &[
            "127.0.0.2:/nonexistent/file",
            local.path().to_str().unwrap(),
        ],
    );
    assert_exit_code(&out, 1);
    assert_stderr_contains(
        &out,
        "127.0.0.2:/nonexistent/file: No such file or directory",
    );
    assert_eq!(std::fs::read_dir(local.path()).expect("dir").count(), 0);

    let source = cluster.scratch_file("f", b"data");
    let out = smscp(
        &cluster,
        &[source.to_str().unwrap(), "127.0.0.2:/nonexistent-dir/f"],
    );
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "No such file or directory");

    let remote = cluster.scratch_file("remote-f", b"data");
    let missing_local = local.path().join("no/such/dir/f");
    let out = smscp(
        &cluster,
        &[
            &format!("127.0.0.2:{}", remote.display()),
            missing_local.to_str().unwrap(),
        ],
    );
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "the target directory is missing");

    let out = smscp(
        &cluster,
        &[
            source.to_str().unwrap(),
            remote.to_str().unwrap(),
            "127.0.0.2:/nonexistent-parent/dir",
        ],
    );
    // scp makes a missing target directory for several sources, but not its parents.
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "/nonexistent-parent/dir: No such file or directory");
    assert!(!Path::new("/nonexistent-parent").exists());
}

#[test]
fn remote_path_not_permitted() {
    let cluster = Cluster::new(1);
    let source = cluster.scratch_file("f", b"data");
    // Even root may not create files in sysfs.
    let out = smscp(
        &cluster,
        &[source.to_str().unwrap(), "127.0.0.2:/sys/smscp-test"],
    );
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "127.0.0.2:/sys/smscp-test: Permission denied");
}

#[test]
fn connection_and_host_key_failures_exit_1_with_one_line() {
    let mut cluster = Cluster::new(2);
    let source = cluster.scratch_file("f", b"data");
    cluster.workers[0].stop();
    let out = smscp(&cluster, &[source.to_str().unwrap(), "127.0.0.2:/tmp/"]);
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "connection refused");
    cluster.workers[1].regenerate_host_key();
    let out = smscp(&cluster, &[source.to_str().unwrap(), "127.0.0.3:/tmp/"]);
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "HOST KEY CHANGED");
    assert_eq!(stderr(&out).lines().count(), 1, "{}", describe(&out));
}

#[test]
fn an_interrupted_copy_leaves_no_target_and_no_temporary_file() {
    let cluster = Cluster::new(1);
    let data = random_bytes(8 * 1024 * 1024, 3);
    let source = cluster.scratch_file("big", &data);
    let remote_dir = tempfile::tempdir().expect("remote dir");
    let before = Listing::of(remote_dir.path());
    let target = format!("127.0.0.2:{}/big", remote_dir.path().display());
    // -l keeps the copy running long enough to interrupt it half-way.
    let mut child = cluster
        .command("smscp")
        .args(["-l", "8000", source.to_str().unwrap(), &target])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start smscp");
    std::thread::sleep(Duration::from_millis(2500));
    assert!(
        child.try_wait().expect("poll").is_none(),
        "the copy finished too early to be interrupted"
    );
    // The copy in progress is one new file, and it is not yet the target.
    let in_progress = before.new_names_except(&[]);
    assert_eq!(
        in_progress.len(),
        1,
        "one temporary file should be in progress: {in_progress:?}"
    );
    assert_ne!(in_progress[0], "big", "the target is written in place");
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let out = child.wait_with_output().expect("wait");
    assert_eq!(out.status.code(), Some(130), "{}", describe(&out));
    assert_eq!(
        before.new_names_except(&[]),
        Vec::<String>::new(),
        "neither a truncated target nor the temporary file is left"
    );
}

#[test]
fn bandwidth_limit_slows_the_copy() {
    let cluster = Cluster::new(1);
    let source = cluster.scratch_file("one-mb", &random_bytes(1024 * 1024, 4));
    let remote_dir = tempfile::tempdir().expect("remote dir");
    let target = format!("127.0.0.2:{}/", remote_dir.path().display());
    let started = std::time::Instant::now();
    // 4096 Kbit/s = 512 KB/s: one MiB needs about two seconds.
    let out = smscp(&cluster, &["-l", "4096", source.to_str().unwrap(), &target]);
    assert_success(&out);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "took only {:?}",
        started.elapsed()
    );
}

#[test]
fn local_to_local_is_refused_up_front() {
    // Remote to remote is a copy through this host, compared with scp's in scp_compare.rs.
    let cluster = Cluster::new(1);
    let out = smscp(&cluster, &["a", "b"]);
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "use cp");
}

/// Regression (issue 9, item 3): downloads kept the setuid, setgid and sticky bits the server
/// reported, so a compromised worker could plant a setuid program owned by whoever ran
/// `smscp -rp`. OpenSSH's scp masks them with or without -p; so do we.
#[test]
fn smscp_p_plants_setuid_files() {
    let cluster = Cluster::new(1);
    let remote = tempfile::tempdir().expect("remote");
    let tree = remote.path().join("tree");
    std::fs::create_dir(&tree).expect("mkdir");
    std::fs::write(tree.join("suid"), b"#!/bin/sh\n").expect("write");
    std::fs::set_permissions(tree.join("suid"), std::fs::Permissions::from_mode(0o4755))
        .expect("chmod 4755");
    std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o3775)).expect("chmod 3775");
    let local = tempfile::tempdir().expect("local");
    for flags in ["-rp", "-r"] {
        let target = local.path().join(flags);
        std::fs::create_dir(&target).expect("target");
        let source = format!("127.0.0.2:{}", tree.display());
        let out = smscp(&cluster, &[flags, &source, target.to_str().expect("utf-8")]);
        assert_success(&out);
        let mode = |path: &Path| {
            std::fs::metadata(path)
                .expect("copied")
                .permissions()
                .mode()
        };
        assert_eq!(mode(&target.join("tree/suid")) & 0o7000, 0, "{flags}: file");
        assert_eq!(mode(&target.join("tree")) & 0o7000, 0, "{flags}: directory");
        if flags == "-rp" {
            assert_eq!(mode(&target.join("tree/suid")) & 0o777, 0o755);
        }
    }
}

/// Regression (issue 9, item 5): strings that came from a server reached the terminal raw. A
/// remote file name with escape sequences, quoted in an error line, must show them as text.
#[test]
fn the_terminal_is_the_servers() {
    let cluster = Cluster::new(1);
    let remote = tempfile::tempdir().expect("remote");
    let tree = remote.path().join("tree");
    std::fs::create_dir(&tree).expect("mkdir");
    let evil = "\u{1b}]0;owned\u{7}\u{1b}[2J\u{1b}[8mhidden";
    std::fs::write(tree.join(evil), b"data").expect("write");
    let local = tempfile::tempdir().expect("local");
    // A directory where the file must go makes the download of that name fail locally, so
    // the error line quotes the server's name.
    std::fs::create_dir_all(local.path().join("tree").join(evil).join("x")).expect("blocker");
    let source = format!("127.0.0.2:{}", tree.display());
    let out = smscp(
        &cluster,
        &["-r", &source, local.path().to_str().expect("utf-8")],
    );
    assert_exit_code(&out, 1);
    assert!(
        !out.stderr.contains(&0x1b) && !out.stderr.contains(&0x07),
        "raw control bytes on stderr: {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_stderr_contains(&out, "\\x1b]0;owned\\x07\\x1b[2J\\x1b[8mhidden");
}

/// `--max-dir-entries` refuses a remote directory that lists more entries, with one line.
#[test]
fn max_dir_entries_refuses_a_larger_listing_with_one_line() {
    let cluster = Cluster::new(1);
    let remote = tempfile::tempdir().expect("remote");
    let tree = remote.path().join("tree");
    std::fs::create_dir(&tree).expect("mkdir");
    for n in 0..5 {
        std::fs::write(tree.join(format!("f{n}")), b"x").expect("write");
    }
    let local = tempfile::tempdir().expect("local");
    let source = format!("127.0.0.2:{}", tree.display());
    let target = local.path().to_str().expect("utf-8");
    let out = smscp(&cluster, &["-r", "--max-dir-entries", "3", &source, target]);
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "directory listing exceeds 3 entries");
    let out = smscp(
        &cluster,
        &["-r", "--max-dir-entries", "10", &source, target],
    );
    assert_success(&out);
    assert_eq!(
        std::fs::read_dir(local.path().join("tree"))
            .expect("copied")
            .count(),
        5
    );
}

/// A FIFO in a remote tree is skipped, as OpenSSH's scp does; before, smscp opened it and
/// waited for ever for a writer.
#[test]
fn a_fifo_in_a_remote_tree_is_skipped_not_waited_on() {
    let cluster = Cluster::new(1);
    let remote = tempfile::tempdir().expect("remote");
    let tree = remote.path().join("tree");
    std::fs::create_dir(&tree).expect("mkdir");
    std::fs::write(tree.join("file"), b"data").expect("write");
    nix::unistd::mkfifo(
        &tree.join("pipe"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .expect("mkfifo");
    let local = tempfile::tempdir().expect("local");
    let source = format!("127.0.0.2:{}", tree.display());
    let out = run_with_timeout(
        cluster
            .command("smscp")
            .args(["-r", &source, local.path().to_str().expect("utf-8")]),
        Duration::from_secs(30),
    )
    .unwrap_or_else(|out| panic!("smscp waited on the FIFO\n{}", describe(&out)));
    assert_success(&out);
    assert_eq!(
        std::fs::read(local.path().join("tree/file")).expect("file"),
        b"data"
    );
    assert!(!local.path().join("tree/pipe").exists());
}

#[test]
fn scp_letters_are_accepted_or_refused_with_one_line() {
    let cluster = Cluster::new(1);
    let file = cluster.scratch_file("letters.txt", b"letters\n");
    let file = file.display().to_string();
    // -O, -T, -s, -4 and -X change nothing smscp does: the copy is the same.
    let out = run(cluster.command("smscp").args([
        "-O",
        "-T",
        "-s",
        "-4",
        "-X",
        "nrequests=4",
        &file,
        "127.0.0.2:letters.txt",
    ]));
    assert_success(&out);
    assert_eq!(
        std::fs::read(cluster.workers[0].sftp_home().join("letters.txt")).unwrap(),
        b"letters\n"
    );
    let cases: [(&[&str], &str); 5] = [
        (&["-A"], "agent forwarding"),
        (
            &["-i", "/nonexistent/id"],
            "-i /nonexistent/id: No such file",
        ),
        (&["-R"], "key on that host"),
        (&["-S", "ssh"], "runs no other program"),
        (&["-D", "/usr/lib/openssh/sftp-server"], "sftp-server"),
    ];
    for (flags, reason) in cases {
        let mut args = flags.to_vec();
        args.extend([file.as_str(), "127.0.0.2:refused.txt"]);
        let out = run(cluster.command("smscp").args(&args));
        assert_exit_code(&out, 1);
        assert_stderr_contains(&out, reason);
        assert_eq!(stderr(&out).lines().count(), 1, "{}", describe(&out));
    }
    assert!(!cluster.workers[0].sftp_home().join("refused.txt").exists());
}
