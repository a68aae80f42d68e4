//! `--outdir`/`--errdir` against real sshd workers: each host's stdout and stderr in a file of
//! its own, never seen half-written, symlinks replaced rather than followed, no file for a host
//! that never ran, and the summary, prefixed lines and `--json` still printed.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

const HOSTS: &str = "127.0.0.[2-4]";

/// Each host prints its own address on stdout and stderr.
const SCRIPT: &str = "set -- $SSH_CONNECTION; echo out $3; echo err $3 >&2";

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn each_host_gets_its_files_a_dead_host_none_and_symlinks_are_replaced() {
    let mut cluster = Cluster::new(3);
    cluster.workers[2].stop();
    let base = tempfile::tempdir().expect("tempdir");
    let outdir = base.path().join("run/out");
    let errdir = base.path().join("run/err");
    // A symlink planted where a host's file goes must be replaced, its target untouched.
    std::fs::create_dir_all(&outdir).expect("mkdir");
    let victim = base.path().join("victim");
    std::fs::write(&victim, "precious\n").expect("victim");
    std::os::unix::fs::symlink(&victim, outdir.join("127.0.0.2")).expect("symlink");
    let out = run(cluster.command("smssh").args([
        "-w",
        HOSTS,
        "--outdir",
        outdir.to_str().expect("utf-8"),
        "--errdir",
        errdir.to_str().expect("utf-8"),
        "--",
        SCRIPT,
    ]));
    assert_exit_code(&out, 255);
    // Prefixed output and the summary are still printed.
    assert!(
        stdout(&out).contains("127.0.0.2: out 127.0.0.2"),
        "{}",
        describe(&out)
    );
    assert_stderr_contains(&out, "127.0.0.4");
    assert_stderr_contains(&out, "3 hosts");
    for (dir, stream) in [(&outdir, "out"), (&errdir, "err")] {
        // The dead host has no file, and no temporary file is left anywhere.
        assert_eq!(names(dir), ["127.0.0.2", "127.0.0.3"], "{stream}");
        for host in ["127.0.0.2", "127.0.0.3"] {
            let path = dir.join(host);
            assert!(!path.is_symlink(), "{} is still a symlink", path.display());
            let text = std::fs::read_to_string(&path).expect("host file");
            assert_eq!(text, format!("{stream} {host}\n"));
        }
    }
    assert_eq!(
        std::fs::read_to_string(&victim).expect("victim"),
        "precious\n"
    );
    let mode = std::fs::metadata(&errdir)
        .expect("errdir")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "a created directory is 0700");
}

#[test]
fn a_reader_never_sees_a_half_written_file_and_json_still_prints() {
    let cluster = Cluster::new(1);
    let outdir = tempfile::tempdir().expect("tempdir");
    let file = outdir.path().join("127.0.0.2");
    let running = spawn(cluster.command("smssh").args([
        "--json",
        "-w",
        "127.0.0.2",
        "--outdir",
        outdir.path().to_str().expect("utf-8"),
        "--",
        "for i in 1 2 3 4 5 6; do echo line $i; sleep 0.3; done",
    ]));
    // Poll while the host prints: the file is absent until it is whole.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen_absent = false;
    loop {
        match std::fs::read_to_string(&file) {
            Ok(text) => {
                let want: String = (1..=6).map(|i| format!("line {i}\n")).collect();
                assert_eq!(text, want, "a reader saw a partial file");
                break;
            }
            Err(_) => seen_absent = true,
        }
        assert!(Instant::now() < deadline, "no file within 30 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(seen_absent, "the file existed before the host ended");
    let out = running.wait_timeout(RUN_TIMEOUT).expect("smssh ended");
    assert_success(&out);
    let object: serde_json::Value =
        serde_json::from_str(stdout(&out).trim()).expect("one JSON object");
    assert_eq!(
        object["stdout"].as_str(),
        Some("line 1\nline 2\nline 3\nline 4\nline 5\nline 6\n")
    );
    assert_eq!(names(outdir.path()), ["127.0.0.2"]);
    // With --group the grouped output is printed and the files are written the same way.
    let errdir = tempfile::tempdir().expect("tempdir");
    let out = run(cluster.command("smssh").args([
        "--group",
        "-w",
        "127.0.0.2",
        "--errdir",
        errdir.path().to_str().expect("utf-8"),
        "--",
        SCRIPT,
    ]));
    assert_success(&out);
    assert!(stdout(&out).contains("out 127.0.0.2"), "{}", describe(&out));
    let text = std::fs::read_to_string(errdir.path().join("127.0.0.2")).expect("stderr file");
    assert_eq!(text, "err 127.0.0.2\n");
}

#[test]
fn outdir_without_a_command_fanout_is_refused_and_an_unusable_dir_fails_before_connecting() {
    let cluster = Cluster::new(1);
    let out = run(cluster
        .command("smssh")
        .args(["--outdir", "/tmp/x", "127.0.0.2", "true"]));
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "--outdir applies to a command fan-out");
    let file = cluster.scratch_file("plain-file", b"not a dir");
    let out = run(cluster.command("smssh").args([
        "-w",
        "127.0.0.2",
        "--errdir",
        file.join("sub").to_str().expect("utf-8"),
        "--",
        "true",
    ]));
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "--errdir");
    assert_stderr_contains(&out, "cannot create the directory");
    let dir = cluster.scratch.path().join("both");
    let dir = dir.to_str().expect("utf-8");
    let out = run(cluster.command("smssh").args([
        "-w",
        "127.0.0.2",
        "--outdir",
        dir,
        "--errdir",
        &format!("{dir}/."),
        "--",
        "true",
    ]));
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "--outdir and --errdir name the same directory");
}

#[test]
fn outdir_files_match_pssh_o_and_e_on_the_same_workers() {
    let mut cluster = Cluster::new(3);
    cluster.workers[2].stop();
    let ours = tempfile::tempdir().expect("tempdir");
    let theirs = tempfile::tempdir().expect("tempdir");
    let out = run(cluster.command("smssh").args([
        "-w",
        HOSTS,
        "--outdir",
        ours.path().join("out").to_str().expect("utf-8"),
        "--errdir",
        ours.path().join("err").to_str().expect("utf-8"),
        "--",
        SCRIPT,
    ]));
    assert_exit_code(&out, 255);
    // pssh 2.3 with OpenSSH, the same configuration and key.
    let opts: Vec<String> = cluster
        .openssh("ssh")
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut pssh = Command::new("parallel-ssh");
    pssh.env_clear()
        .env("HOME", cluster.home.path())
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for host in ["127.0.0.2", "127.0.0.3", "127.0.0.4"] {
        pssh.args(["-H", host]);
    }
    pssh.args(["-x", &opts.join(" "), "-o"])
        .arg(theirs.path().join("out"))
        .arg("-e")
        .arg(theirs.path().join("err"))
        .arg(SCRIPT);
    let pssh_out = run(&mut pssh);
    assert!(
        stdout(&pssh_out).contains("[FAILURE] 127.0.0.4"),
        "{}",
        describe(&pssh_out)
    );
    // The same stdout files, byte for byte; pssh also keeps ssh's error for the dead host.
    let (our_out, their_out) = (ours.path().join("out"), theirs.path().join("out"));
    assert_eq!(names(&our_out), names(&their_out));
    for name in names(&our_out) {
        assert_eq!(
            std::fs::read(our_out.join(&name)).expect("ours"),
            std::fs::read(their_out.join(&name)).expect("theirs"),
            "{name}"
        );
    }
    let (our_err, their_err) = (ours.path().join("err"), theirs.path().join("err"));
    assert_eq!(names(&our_err), ["127.0.0.2", "127.0.0.3"]);
    assert_eq!(names(&their_err), ["127.0.0.2", "127.0.0.3", "127.0.0.4"]);
    for name in names(&our_err) {
        assert_eq!(
            std::fs::read(our_err.join(&name)).expect("ours"),
            std::fs::read(their_err.join(&name)).expect("theirs"),
            "{name}"
        );
    }
}
