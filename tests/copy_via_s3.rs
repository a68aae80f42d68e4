//! `smscp --via s3://`: uploads carried by S3 (moto's, on loopback) to real sshd workers that
//! fetch them with the real curl or wget, as a cluster's workers would.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const BUCKET: &str = "smscp-carrier";

/// Moto's S3 through boto3 (moto's own dependency): create a bucket, list its objects, list
/// its unfinished multipart uploads.
const S3_SCRIPT: &str = r#"
import boto3, os, sys
s3 = boto3.client("s3", endpoint_url=os.environ["MOTO_ENDPOINT"], region_name="us-east-1",
                  aws_access_key_id="testing", aws_secret_access_key="testing")
action, bucket = sys.argv[1], sys.argv[2]
if action == "create":
    s3.create_bucket(Bucket=bucket)
elif action == "objects":
    for o in s3.list_objects_v2(Bucket=bucket).get("Contents", []):
        print(o["Key"])
elif action == "uploads":
    for u in s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []):
        print(u["Key"])
"#;

fn create_bucket(cluster: &Cluster) {
    cluster.moto.run_python(S3_SCRIPT, &["create", BUCKET]);
}

fn objects(cluster: &Cluster) -> Vec<String> {
    let listed = cluster.moto.run_python(S3_SCRIPT, &["objects", BUCKET]);
    listed.lines().map(str::to_owned).collect()
}

fn unfinished_uploads(cluster: &Cluster) -> Vec<String> {
    let listed = cluster.moto.run_python(S3_SCRIPT, &["uploads", BUCKET]);
    listed.lines().map(str::to_owned).collect()
}

/// `sha256sum` of a file, as the workers compute it.
fn sha256(path: &Path) -> String {
    let out = run(std::process::Command::new("sha256sum").arg(path));
    assert_success(&out);
    stdout(&out)
        .split_whitespace()
        .next()
        .expect("sha256sum prints a digest")
        .to_owned()
}

/// A file of `len` bytes that no two offsets of which repeat in a short period, so that a
/// misplaced part would change the checksum.
fn payload(cluster: &Cluster, name: &str, len: usize) -> PathBuf {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect();
    cluster.scratch_file(name, &bytes)
}

fn write_script(path: &Path, text: &str) {
    fs::write(path, text).expect("cannot write a script");
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("cannot chmod a script");
}

/// Gives `worker`'s sessions `path` as PATH. sshd keeps only the first SetEnv line, so the
/// harness's HOME and SHLVL are repeated here.
fn set_worker_path(worker: &mut Worker, path: &str) {
    let home = worker.sftp_home();
    worker.set_global_config(&format!(
        "SetEnv PATH={path} SHLVL=1 HOME={}",
        home.display()
    ));
}

/// The entries of a worker's directory whose names start with `.smscp.`: temporary files a
/// failed or interrupted download would have left.
fn leftovers(dir: &Path) -> Vec<String> {
    match fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .filter(|n| n.starts_with(".smscp."))
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn hostlist(cluster: &Cluster) -> String {
    let last = cluster.workers.len() + 1;
    format!("127.0.0.[2-{last}]")
}

#[test]
fn a_multipart_file_reaches_every_host_intact_and_the_object_is_deleted() {
    let mut cluster = Cluster::new(3);
    create_bucket(&cluster);
    // Three parts of 8 MiB and a short one: the multipart path, parts completed out of order.
    let source = payload(&cluster, "image.bin", 3 * 8 * 1024 * 1024 + 12_345);
    let expected = sha256(&source);
    // The first worker's curl is a wrapper that records every process's command line and
    // environment on that worker while the download runs, then runs the real curl.
    let wrappers = cluster.workers[0].dir().join("wrappers");
    fs::create_dir_all(&wrappers).expect("mkdir wrappers");
    write_script(
        &wrappers.join("curl"),
        "#!/bin/sh\n\
         ps -eww -o args >\"$HOME/ps.txt\" 2>&1\n\
         for p in /proc/[0-9]*; do cat \"$p/cmdline\" \"$p/environ\" 2>/dev/null; echo; done >\"$HOME/procs.txt\"\n\
         exec /usr/bin/curl \"$@\"\n",
    );
    set_worker_path(
        &mut cluster.workers[0],
        &format!("{}:/usr/local/bin:/usr/bin:/bin", wrappers.display()),
    );
    for worker in &cluster.workers {
        fs::create_dir_all(worker.sftp_home().join("incoming")).expect("mkdir incoming");
    }

    let audit_log = cluster.scratch.path().join("audit.jsonl");
    let out = run(cluster
        .command("smscp")
        .arg("--audit-log")
        .arg(&audit_log)
        .args(["-v", "--via", &format!("s3://{BUCKET}/runs/"), "-w"])
        .arg(hostlist(&cluster))
        .arg(&source)
        .arg("~/incoming/"));
    assert_success(&out);

    // Each host's download is a host action with the cluster key: one upload record each,
    // with the bytes and the SHA-256 the host verified.
    let records: Vec<serde_json::Value> = fs::read_to_string(&audit_log)
        .expect("the audit log")
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON record per line"))
        .collect();
    let mut hosts: Vec<&str> = records
        .iter()
        .map(|record| record["host"].as_str().expect("a host"))
        .collect();
    hosts.sort_unstable();
    let mut addrs: Vec<&str> = cluster.workers.iter().map(|w| w.addr()).collect();
    addrs.sort_unstable();
    assert_eq!(hosts, addrs, "{records:?}");
    for record in &records {
        assert_eq!(record["outcome"], "ok", "{record}");
        assert_eq!(record["action"]["type"], "upload", "{record}");
        assert_eq!(record["action"]["sha256"], expected.as_str(), "{record}");
        assert_eq!(
            record["action"]["bytes"],
            fs::metadata(&source).expect("stat").len(),
            "{record}"
        );
        assert!(record["fingerprint"]
            .as_str()
            .is_some_and(|f| f.starts_with("SHA256:")));
    }

    for worker in &cluster.workers {
        let copy = worker.sftp_home().join("incoming/image.bin");
        assert_eq!(sha256(&copy), expected, "{} got other bytes", worker.addr());
        let mode = fs::metadata(&copy).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "the source's 0644 under the umask 022");
        assert_eq!(
            leftovers(&worker.sftp_home().join("incoming")),
            Vec::<String>::new()
        );
    }
    assert_eq!(
        objects(&cluster),
        Vec::<String>::new(),
        "the object is deleted"
    );
    assert_eq!(unfinished_uploads(&cluster), Vec::<String>::new());

    // The presigned URL is a bearer credential: not in smscp's output (even with -v), and in
    // no command line or environment on the worker while curl ran.
    let printed = format!("{}{}", stdout(&out), stderr(&out));
    for marker in ["X-Amz-Signature", "X-Amz-Credential", "Signature="] {
        assert!(
            !printed.contains(marker),
            "smscp printed {marker}:\n{printed}"
        );
    }
    let home = cluster.workers[0].sftp_home();
    let ps = fs::read_to_string(home.join("ps.txt")).expect("the curl wrapper ran");
    let procs = fs::read(home.join("procs.txt")).expect("the curl wrapper ran");
    let procs = String::from_utf8_lossy(&procs);
    assert!(ps.contains("curl"), "ps ran during the download:\n{ps}");
    assert!(
        procs.contains("smscp"),
        "the script's processes were listed"
    );
    for marker in ["X-Amz-Signature", "X-Amz-Credential"] {
        assert!(!ps.contains(marker), "ps shows the URL:\n{ps}");
        assert!(
            !procs.contains(marker),
            "a command line or environment holds the URL"
        );
    }
}

#[test]
fn keep_leaves_the_object_and_a_single_host_copy_keeps_modes_with_p() {
    let cluster = Cluster::new(1);
    create_bucket(&cluster);
    let source = cluster.scratch_file("tool.sh", b"#!/bin/sh\necho hi\n");
    fs::set_permissions(&source, fs::Permissions::from_mode(0o750)).expect("chmod");
    let target = cluster.workers[0].sftp_home().join("tool.sh");

    let out = run(cluster
        .command("smscp")
        .args(["-p", "--keep", "--via", &format!("s3://{BUCKET}")])
        .arg(&source)
        .arg(format!("127.0.0.2:{}", target.display())));
    assert_success(&out);
    assert_eq!(fs::read(&target).expect("copied"), b"#!/bin/sh\necho hi\n");
    let meta = fs::metadata(&target).expect("stat");
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o750,
        "-p keeps the mode"
    );
    let source_mtime = fs::metadata(&source)
        .expect("stat")
        .modified()
        .expect("mtime");
    let copy_mtime = meta.modified().expect("mtime");
    let drift = source_mtime
        .duration_since(copy_mtime)
        .or_else(|_| copy_mtime.duration_since(source_mtime))
        .expect("comparable");
    assert!(drift.as_secs() < 1, "-p keeps the modification time");

    let kept = objects(&cluster);
    assert_eq!(kept.len(), 1, "--keep leaves the object: {kept:?}");
    assert!(kept[0].starts_with("smscp-"), "{kept:?}");
    assert_stderr_contains(&out, &format!("kept s3://{BUCKET}/{}", kept[0]));
}

/// Writes `dir/TOOL`, which creates `$HOME/TOOL-used` and then runs /usr/bin/TOOL, so a test
/// can tell which of the tools a worker had the script used.
fn marking_wrapper(dir: &Path, tool: &str) {
    let real = Path::new("/usr/bin").join(tool);
    assert!(
        real.exists(),
        "{tool} is missing; run ./scripts/test-deps.sh"
    );
    write_script(
        &dir.join(tool),
        &format!(
            "#!/bin/sh\n: >\"$HOME/{tool}-used\"\nexec {} \"$@\"\n",
            real.display()
        ),
    );
}

#[test]
fn corruption_is_caught_openssl_digests_wget_stands_in_for_curl_and_a_dead_host_fails_alone() {
    let mut cluster = Cluster::new(4);
    create_bucket(&cluster);
    let source = payload(&cluster, "data.bin", 1024 * 1024 + 7);
    let expected = sha256(&source);

    // 127.0.0.2: the default tools, with an openssl that marks its use before running the
    // real one: the digest comes from openssl where the host has it.
    let marked = cluster.workers[0].dir().join("marked-openssl");
    fs::create_dir_all(&marked).expect("mkdir");
    marking_wrapper(&marked, "openssl");
    set_worker_path(
        &mut cluster.workers[0],
        &format!("{}:/usr/local/bin:/usr/bin:/bin", marked.display()),
    );

    // 127.0.0.3: a curl that flips the first byte of what it downloaded.
    let corrupt = cluster.workers[1].dir().join("corrupt");
    fs::create_dir_all(&corrupt).expect("mkdir");
    write_script(
        &corrupt.join("curl"),
        "#!/bin/sh\n\
         out=; prev=\n\
         for a in \"$@\"; do [ \"$prev\" = -o ] && out=$a; prev=$a; done\n\
         /usr/bin/curl \"$@\" || exit $?\n\
         printf 'X' | dd of=\"$out\" bs=1 count=1 conv=notrunc 2>/dev/null\n",
    );
    set_worker_path(
        &mut cluster.workers[1],
        &format!("{}:/usr/local/bin:/usr/bin:/bin", corrupt.display()),
    );

    // 127.0.0.4: no curl and no openssl, only the tools the download needs (sha256sum checks
    // the download) and a wget that marks its use before running the real one.
    let no_curl = cluster.workers[2].dir().join("no-curl");
    fs::create_dir_all(&no_curl).expect("mkdir");
    for tool in [
        "sh",
        "mktemp",
        "sha256sum",
        "stat",
        "chmod",
        "touch",
        "mv",
        "rm",
        "cat",
    ] {
        let real = ["/usr/bin", "/bin"]
            .iter()
            .map(|dir| Path::new(dir).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(&real, no_curl.join(tool)).expect("symlink");
    }
    marking_wrapper(&no_curl, "wget");
    set_worker_path(&mut cluster.workers[2], &no_curl.display().to_string());

    // 127.0.0.5: down.
    cluster.workers[3].stop();

    let out = run(cluster
        .command("smscp")
        .args([
            "--connect-timeout",
            "5",
            "--via",
            &format!("s3://{BUCKET}/x"),
        ])
        .args(["-w", &hostlist(&cluster)])
        .arg(&source)
        .arg("~/data.bin"));
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "4 hosts: 2 ok, 2 failed");

    let ok = &cluster.workers[0];
    assert_eq!(sha256(&ok.sftp_home().join("data.bin")), expected);
    assert!(
        ok.sftp_home().join("openssl-used").exists(),
        "openssl computed the digest"
    );

    let corrupted = &cluster.workers[1];
    let err = stderr(&out);
    let line = err
        .lines()
        .find(|l| l.contains("127.0.0.3"))
        .unwrap_or_else(|| panic!("127.0.0.3 is not named:\n{err}"));
    assert!(line.contains("checksum mismatch"), "{line}");
    assert!(
        !corrupted.sftp_home().join("data.bin").exists(),
        "no corrupt target"
    );
    assert_eq!(leftovers(&corrupted.sftp_home()), Vec::<String>::new());

    let by_wget = &cluster.workers[2];
    assert_eq!(sha256(&by_wget.sftp_home().join("data.bin")), expected);
    assert!(
        by_wget.sftp_home().join("wget-used").exists(),
        "wget did the download"
    );

    assert_eq!(
        err.lines().filter(|l| l.contains("127.0.0.5")).count(),
        1,
        "the dead host is named once:\n{err}"
    );
    assert_eq!(
        objects(&cluster),
        Vec::<String>::new(),
        "deleted after failures too"
    );
}

#[test]
fn the_config_default_carries_uploads_and_via_direct_overrides_it() {
    let cluster = Cluster::new(1);
    create_bucket(&cluster);
    let config_dir = cluster.home.path().join(".config/smssh");
    fs::create_dir_all(&config_dir).expect("mkdir config");
    fs::write(
        config_dir.join("config.toml"),
        format!("copy_via = \"s3://{BUCKET}/from-config\"\n"),
    )
    .expect("write config");
    let source = cluster.scratch_file("a.txt", b"via the config\n");
    let home = cluster.workers[0].sftp_home();

    let out = run(cluster
        .command("smscp")
        .arg("--keep")
        .arg(&source)
        .arg(format!("127.0.0.2:{}", home.join("a.txt").display())));
    assert_success(&out);
    assert_eq!(
        fs::read(home.join("a.txt")).expect("copied"),
        b"via the config\n"
    );
    let kept = objects(&cluster);
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert!(kept[0].starts_with("from-config/smscp-"), "{kept:?}");

    let out = run(cluster
        .command("smscp")
        .args(["--via", "direct"])
        .arg(&source)
        .arg(format!("127.0.0.2:{}", home.join("b.txt").display())));
    assert_success(&out);
    assert_eq!(
        fs::read(home.join("b.txt")).expect("copied"),
        b"via the config\n"
    );
    assert_eq!(objects(&cluster), kept, "nothing more went through S3");

    let out = run(cluster
        .command("smscp")
        .args(["--via", "direct", "--keep"])
        .arg(&source)
        .arg("127.0.0.2:c.txt"));
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "--keep applies to --via s3://");

    let out = run(cluster
        .command("smscp")
        .args(["--via", &format!("s3://{BUCKET}")])
        .arg("127.0.0.2:a.txt")
        .arg(cluster.scratch.path()));
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "--via s3:// carries uploads");

    let missing = home.join("d.txt");
    let out = run(cluster
        .command("smscp")
        .args(["--via", "s3://no-such-bucket-here/x"])
        .arg(&source)
        .arg(format!("127.0.0.2:{}", missing.display())));
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "NoSuchBucket");
    assert_stderr_contains(&out, "create the bucket");
    assert!(!missing.exists());

    let out = run(cluster
        .command("smscp")
        .args(["--via", "ftp://x"])
        .arg(&source)
        .arg(format!("127.0.0.2:{}", missing.display())));
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "write direct or s3://BUCKET/PREFIX");
}

#[test]
fn ctrl_c_deletes_the_object_and_the_hosts_remove_their_temporary_files() {
    let mut cluster = Cluster::new(2);
    create_bucket(&cluster);
    let source = payload(&cluster, "slow.bin", 100_000);
    // Each worker's curl marks that the download started, then waits before fetching.
    for worker in cluster.workers.iter_mut() {
        let dir = worker.dir().join("slow");
        fs::create_dir_all(&dir).expect("mkdir");
        write_script(
            &dir.join("curl"),
            "#!/bin/sh\n: >\"$HOME/started\"\nsleep 3\nexec /usr/bin/curl \"$@\"\n",
        );
        set_worker_path(
            worker,
            &format!("{}:/usr/local/bin:/usr/bin:/bin", dir.display()),
        );
    }
    let child = spawn(
        cluster
            .command("smscp")
            .args(["--via", &format!("s3://{BUCKET}/int"), "-w"])
            .arg(hostlist(&cluster))
            .arg(&source)
            .arg("~/slow.bin"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cluster
        .workers
        .iter()
        .all(|w| w.sftp_home().join("started").exists())
    {
        assert!(Instant::now() < deadline, "the downloads never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let interrupted = Instant::now();
    // The first Ctrl-C says where the run stands; the second, within a second, stops it.
    interrupt_twice(child.id());
    let out = child
        .wait_timeout(Duration::from_secs(20))
        .unwrap_or_else(|out| panic!("smscp did not end after Ctrl-C:\n{}", describe(&out)));
    assert!(
        interrupted.elapsed() < Duration::from_secs(5),
        "Ctrl-C took {:?}",
        interrupted.elapsed()
    );
    assert_exit_code(&out, 130);
    assert_stderr_contains(&out, &format!("running {}: ", cluster.workers.len()));
    assert_eq!(
        objects(&cluster),
        Vec::<String>::new(),
        "deleted after Ctrl-C"
    );

    // Each script finds the object gone (or its session closed), fails and removes its
    // temporary file; nothing is renamed into place.
    let deadline = Instant::now() + Duration::from_secs(20);
    for worker in &cluster.workers {
        let home = worker.sftp_home();
        while !leftovers(&home).is_empty() {
            assert!(
                Instant::now() < deadline,
                "{} kept {:?}",
                worker.addr(),
                leftovers(&home)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(
            !home.join("slow.bin").exists(),
            "{} got the file",
            worker.addr()
        );
    }
}
