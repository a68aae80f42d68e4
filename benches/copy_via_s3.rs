//! What the master sends for one push: `smscp --via s3://` against the direct push (issue 13's
//! goal: at most 1.05x one copy whatever the host count, and a wall time no worse than the
//! direct push on loopback). Run with
//!
//! ```sh
//! SMSSH_TEST_MOTO=$PWD/.venv/bin/moto_server cargo bench --bench copy_via_s3
//! ```
//!
//! N real sshd workers on loopback (`SMSSH_BENCH_HOSTS`, default 128) and moto's S3 on
//! loopback. A 64 MiB file (`SMSSH_BENCH_MIB`) goes to every host, once over SSH (`--via
//! direct`) and once through S3 (`--via s3://`, each worker fetching with curl), with the same
//! `-j` (`SMSSH_BENCH_PARALLEL`, default 32: moto holds a whole object in memory for each GET
//! it serves). Each copy is checked on every host by SHA-256 before its figures count.
//!
//! Bytes sent: each copy runs twice. The first run is timed. The second runs under
//! `strace -f -ff -yy` tracing `write`, `writev`, `sendto`, `sendmsg` and `sendmmsg`, and the
//! bench sums the return values of the calls whose descriptor is a TCP socket (SSH to the
//! workers, HTTP to S3): every byte smscp handed to TCP, which is what the master's network
//! card carries, less TCP/IP headers. (The kernel's `wchar` counter misses `send*` calls, which
//! is how the SSH side writes.) The direct push's figure, close to N copies, checks the method.
//!
//! Output: a markdown table on stdout and in target/bench/copy_via_s3.md. A report, not a
//! test: it never fails on a slow figure, only on a copy that did not arrive.

#[path = "../tests/common/mod.rs"]
mod common;
// Each bench uses a subset of the shared support module.
#[allow(dead_code)]
#[path = "support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::fs;
use std::time::Instant;

use common::*;
use support::*;

const BUCKET: &str = "smscp-bench";
const PAYLOAD: &str = "payload";

struct Row {
    hosts: usize,
    method: &'static str,
    seconds: f64,
    sent: u64,
    cpu: f64,
}

fn main() {
    raise_nofile();
    let sizes = host_counts("128", 250);
    let mib = env_usize("SMSSH_BENCH_MIB", 64);
    let parallel = env_usize("SMSSH_BENCH_PARALLEL", 32);
    let max_n = *sizes.last().expect("host_counts is never empty");
    eprintln!("bench: starting {max_n} workers and moto");
    let cluster = Cluster::new(max_n);
    cluster.moto.run_python(
        r#"
import boto3, os, sys
boto3.client("s3", endpoint_url=os.environ["MOTO_ENDPOINT"], region_name="us-east-1",
             aws_access_key_id="testing", aws_secret_access_key="testing").create_bucket(Bucket=sys.argv[1])
"#,
        &[BUCKET],
    );
    let source = cluster.scratch.path().join(PAYLOAD);
    write_payload(&source, mib * 1024 * 1024);
    let digest = sha256_hex(&fs::read(&source).expect("read the payload"));
    let size = (mib * 1024 * 1024) as u64;
    let source = source.display().to_string();
    let via_s3 = format!("s3://{BUCKET}/bench");
    let parallel = parallel.to_string();

    let mut rows = Vec::new();
    for &n in &sizes {
        let hosts = hostlist(n);
        // The SFTP push writes relative to sftp-server's start directory (each worker's home);
        // the S3 script runs in the login shell's directory, so it is given `~/` (each
        // worker's HOME is its SFTP home).
        let methods: [(&str, &str, &str); 2] =
            [("direct", "direct", PAYLOAD), ("s3", &via_s3, "~/payload")];
        for (method, via, target) in methods {
            clean_homes(&cluster);
            let cpu_before = children_cpu();
            let started = Instant::now();
            let args = [
                "-q", "-j", &parallel, "--via", via, "-w", &hosts, &source, target,
            ];
            let out = run(cluster.command("smscp").args(args));
            let seconds = started.elapsed().as_secs_f64();
            let cpu = children_cpu() - cpu_before;
            check(&cluster, &out, n, via, &digest);
            clean_homes(&cluster);
            let (out, sent) = traced_tcp_bytes(&cluster, &args);
            check(&cluster, &out, n, via, &digest);
            eprintln!(
                "bench: {n} hosts, {method}: {seconds:.1} s, {:.2} copies sent",
                sent as f64 / size as f64
            );
            rows.push(Row {
                hosts: n,
                method,
                seconds,
                sent,
                cpu,
            });
        }
    }

    let mut table = String::new();
    let _ = writeln!(
        table,
        "smscp push of a {mib} MiB file, -j {parallel}, load average before: {}\n",
        loadavg()
    );
    let _ = writeln!(
        table,
        "| hosts | method | wall s | master bytes sent | copies of the file | master CPU s |"
    );
    let _ = writeln!(table, "|---:|---|---:|---:|---:|---:|");
    for row in &rows {
        let _ = writeln!(
            table,
            "| {} | {} | {:.1} | {} | {:.3} | {:.1} |",
            row.hosts,
            row.method,
            row.seconds,
            row.sent,
            row.sent as f64 / size as f64,
            row.cpu
        );
    }
    print!("{table}");
    let out_dir = target_dir().join("bench");
    fs::create_dir_all(&out_dir).expect("mkdir target/bench");
    fs::write(out_dir.join("copy_via_s3.md"), &table).expect("write copy_via_s3.md");
}

fn check(cluster: &Cluster, out: &std::process::Output, n: usize, via: &str, digest: &str) {
    assert!(
        out.status.success(),
        "smscp --via {via} to {n} hosts failed:\n{}",
        tail(&describe(out))
    );
    if let Err(problem) = verify_copies(cluster, n, PAYLOAD, digest) {
        panic!("smscp --via {via} to {n} hosts: {problem}");
    }
}

/// Runs smscp with `args` under strace and returns its output and the bytes it handed to TCP
/// sockets (the sum of the successful write calls on descriptors strace shows as TCP).
fn traced_tcp_bytes(cluster: &Cluster, args: &[&str]) -> (std::process::Output, u64) {
    let dir = tempfile::Builder::new()
        .prefix("smscp-strace-")
        .tempdir()
        .expect("a temp dir for strace");
    let prefix = dir.path().join("trace");
    let mut cmd = harness_environment(
        std::process::Command::new("strace"),
        cluster.home.path(),
        &cluster.moto,
    );
    cmd.args(["-f", "-ff", "-qq", "-yy", "-s", "0", "-e"])
        .arg("trace=write,writev,sendto,sendmsg,sendmmsg")
        .arg("-o")
        .arg(&prefix)
        .arg(binary_path("smscp"))
        .args(args);
    let out = run(&mut cmd);
    let mut sent = 0u64;
    for entry in fs::read_dir(dir.path()).expect("read the traces") {
        let text = fs::read_to_string(entry.expect("a trace").path()).unwrap_or_default();
        for line in text.lines() {
            // `writev(12<TCP:[127.0.0.1:40000->127.0.0.2:22]>, ...) = 32820`
            let Some(open) = line.find('(') else { continue };
            let first_arg = line[open + 1..].split(',').next().unwrap_or("");
            if !first_arg.contains("<TCP") {
                continue;
            }
            let Some((_, result)) = line.rsplit_once(" = ") else {
                continue;
            };
            let digits: String = result.chars().take_while(char::is_ascii_digit).collect();
            sent += digits.parse::<u64>().unwrap_or(0);
        }
    }
    (out, sent)
}
