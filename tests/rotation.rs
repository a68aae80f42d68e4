//! `smssh rotate` against real sshd workers and moto: whole rotations, single steps, crashes
//! and failures between steps, reconciliation, host-key learning and the SSM channel. After
//! every step the master must still log in everywhere with whatever AWSCURRENT holds.

mod common;

use std::collections::BTreeMap;
use std::process::Output;

use common::*;

const WORKERS: usize = 3;
const ALL: &str = "127.0.0.[2-4]";

fn rotate(cluster: &Cluster, args: &[&str]) -> Output {
    run(cluster.command("smssh").arg("rotate").args(args))
}

fn rotate_step(cluster: &Cluster, hosts: &str, step: &str, token: &str) -> Output {
    rotate(cluster, &["-w", hosts, "--step", step, "--token", token])
}

fn stages(cluster: &Cluster) -> BTreeMap<String, Vec<String>> {
    cluster.moto.stages(SECRET_ID)
}

fn version_with(cluster: &Cluster, stage: &str) -> Option<String> {
    cluster.moto.version_with_stage(SECRET_ID, stage)
}

/// The authorized_keys lines outside the managed block.
fn unmanaged_lines(worker: &Worker) -> Vec<String> {
    lines_outside_blocks(&worker.authorized_keys())
}

/// Copies a file to every worker with smscp and the key AWSCURRENT holds now.
fn assert_copy_works_everywhere(cluster: &Cluster, hosts: &str, moment: &str) {
    let file = cluster.scratch_file("probe.txt", moment.as_bytes());
    let out = run(cluster
        .command("smscp")
        .args(["-q", "-o", "BatchMode=yes", "-w", hosts])
        .arg(&file)
        .arg("probe.txt"));
    assert!(
        out.status.success(),
        "smscp with AWSCURRENT failed {moment}\n{}",
        describe(&out)
    );
}

/// A cluster after one rotation, with the current version. The harness installs the secret's
/// first key outside any block, as the AWS sample's cluster starts; the rotation retired it, so
/// only the managed block lets the master in.
fn rotated_cluster() -> (Cluster, String) {
    let cluster = Cluster::new(WORKERS);
    assert_success(&rotate(&cluster, &["-w", ALL]));
    for worker in &cluster.workers {
        assert!(
            !worker.authorized_keys().contains(&cluster.public_key),
            "the first key is still installed:\n{}",
            worker.authorized_keys()
        );
    }
    let current = version_with(&cluster, "AWSCURRENT").expect("current");
    (cluster, current)
}

/// Asserts that `key` logs in on every worker (`works`) or is refused on every one.
fn assert_key_everywhere(cluster: &Cluster, key: &std::path::Path, works: bool, what: &str) {
    for worker in &cluster.workers {
        let out = cluster.openssh_login(None, worker.addr(), key);
        if works {
            assert!(
                out.status.success(),
                "{what} no longer logs in on {}\n{}",
                worker.addr(),
                describe(&out)
            );
        } else {
            assert_exit_code(&out, 255);
            assert!(
                stderr(&out).contains("Permission denied"),
                "{what} on {}: {}",
                worker.addr(),
                describe(&out)
            );
        }
    }
}

/// The done criterion of the rotation-promise issue: the secret's first key is installed
/// outside any block on every worker, as the AWS sample's cluster is (by user data, an image or
/// by hand). After one rotation it is refused everywhere; after a second, the first two keys
/// are refused and only the third logs in, judged by OpenSSH's own client. Unrelated lines stay.
#[test]
fn the_first_key_outside_any_block_is_retired_and_two_rotations_refuse_the_first_two_keys() {
    let cluster = Cluster::new(WORKERS);
    let first = version_with(&cluster, "AWSCURRENT").expect("the harness's version");
    let operator = "from=\"10.0.0.1\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl operator";
    for worker in &cluster.workers {
        // The first key also sits a second time with options, as a hand edit leaves it.
        worker.authorize(&format!("no-pty {} copy", cluster.public_key));
        worker.authorize(operator);
    }
    assert_key_everywhere(
        &cluster,
        &cluster.key_path,
        true,
        "the first key before rotating",
    );

    let out = rotate(&cluster, &["-w", ALL]);
    assert_success(&out);
    for worker in &cluster.workers {
        assert!(
            stdout(&out).contains(&format!(
                "finishSecret: {}: retired 2 line(s)",
                worker.addr()
            )),
            "{}",
            describe(&out)
        );
    }
    assert!(
        stdout(&out).contains("6 line(s) with retired keys removed on 3 host(s)"),
        "{}",
        describe(&out)
    );
    let second = version_with(&cluster, "AWSCURRENT").expect("current");
    assert_key_everywhere(&cluster, &cluster.key_path, false, "the first key");
    let second_key = cluster.version_key_file(&second);
    assert_key_everywhere(&cluster, &second_key, true, "the second key");

    assert_success(&rotate(&cluster, &["-w", ALL]));
    let third = version_with(&cluster, "AWSCURRENT").expect("current");
    assert_ne!(third, second);
    assert_key_everywhere(&cluster, &cluster.key_path, false, "the first key");
    assert_key_everywhere(&cluster, &second_key, false, "the second key");
    assert_key_everywhere(
        &cluster,
        &cluster.version_key_file(&third),
        true,
        "the third key",
    );
    for worker in &cluster.workers {
        assert_eq!(unmanaged_lines(worker), [operator], "{}", worker.addr());
        assert_eq!(block_versions(worker), [third.as_str()]);
    }
    // Retiring changed no version: the first is still the one the harness stored.
    assert_key_everywhere(
        &cluster,
        &cluster.version_key_file(&first),
        false,
        "the first version's key",
    );
}

/// The operator's bootstrap key is kept by default, and the summary says where it still logs
/// in; --retire-bootstrap-key removes it everywhere once testSecret proved the new key.
#[test]
fn the_bootstrap_key_is_kept_and_counted_unless_asked_to_retire_it() {
    let cluster = Cluster::new(WORKERS);
    cluster.moto.delete_secret(SECRET_ID);
    cluster.moto.put_secret_string(SECRET_ID, "{}");
    let bootstrap = cluster.key_path.display().to_string();

    let out = rotate(&cluster, &["-w", ALL, "--bootstrap-key", &bootstrap]);
    assert_success(&out);
    assert!(
        stdout(&out).contains("the bootstrap key is kept and still authorized on 3 of 3 hosts"),
        "{}",
        describe(&out)
    );
    assert_key_everywhere(&cluster, &cluster.key_path, true, "the kept bootstrap key");

    // Without --bootstrap-key there is nothing to retire it with, and with --reconcile
    // nothing proved the new key first: both are usage errors.
    let out = rotate(&cluster, &["-w", ALL, "--retire-bootstrap-key"]);
    assert_exit_code(&out, 2);
    assert_stderr_contains(&out, "--bootstrap-key");
    let out = rotate(
        &cluster,
        &[
            "-w",
            ALL,
            "--reconcile",
            "--bootstrap-key",
            &bootstrap,
            "--retire-bootstrap-key",
        ],
    );
    assert_exit_code(&out, 2);
    assert_stderr_contains(&out, "--reconcile");

    let out = rotate(
        &cluster,
        &[
            "-w",
            ALL,
            "--bootstrap-key",
            &bootstrap,
            "--retire-bootstrap-key",
        ],
    );
    assert_success(&out);
    assert!(
        stdout(&out).contains("3 line(s) with retired keys removed on 3 host(s)"),
        "{}",
        describe(&out)
    );
    assert_key_everywhere(
        &cluster,
        &cluster.key_path,
        false,
        "the retired bootstrap key",
    );
    let current = version_with(&cluster, "AWSCURRENT").expect("current");
    assert_key_everywhere(
        &cluster,
        &cluster.version_key_file(&current),
        true,
        "the current key",
    );
}

#[test]
fn a_rotation_step_by_step_keeps_the_master_logged_in_between_every_pair_of_steps() {
    let (cluster, old) = rotated_cluster();
    assert_copy_works_everywhere(&cluster, ALL, "before the rotation");

    let token = "11111111-2222-4333-8444-555555555555";
    for step in ["createSecret", "setSecret", "testSecret", "finishSecret"] {
        let out = rotate_step(&cluster, ALL, step, token);
        assert_success(&out);
        assert_copy_works_everywhere(&cluster, ALL, &format!("after {step}"));
        match step {
            "createSecret" | "testSecret" => {
                assert_eq!(
                    version_with(&cluster, "AWSCURRENT").as_deref(),
                    Some(old.as_str())
                );
                assert_eq!(version_with(&cluster, "AWSPENDING").as_deref(), Some(token));
            }
            "setSecret" => {
                for worker in &cluster.workers {
                    assert_eq!(block_versions(worker), [old.clone(), token.to_owned()]);
                }
            }
            _ => {
                assert_eq!(version_with(&cluster, "AWSCURRENT").as_deref(), Some(token));
                assert_eq!(
                    version_with(&cluster, "AWSPREVIOUS").as_deref(),
                    Some(old.as_str())
                );
                for worker in &cluster.workers {
                    assert_eq!(block_versions(worker), [token.to_owned()]);
                }
            }
        }
    }
    // The old key no longer logs in: its line is gone from every worker.
    let out = run(cluster.command("smssh").args([
        "--version-id",
        &old,
        "-o",
        "BatchMode=yes",
        "127.0.0.2",
        "true",
    ]));
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "refused");
}

#[test]
fn ten_rotations_from_an_empty_secret_leave_exactly_the_current_key_and_unmanaged_lines_alone() {
    let cluster = Cluster::new(WORKERS);
    // A fresh secret holding `{}`, with no earlier version whose key could log in.
    cluster.moto.delete_secret(SECRET_ID);
    cluster.moto.put_secret_string(SECRET_ID, "{}");
    // Unmanaged lines of every shape the file may hold stay byte for byte.
    for worker in &cluster.workers {
        worker.authorize("# operator's own key follows");
        worker.authorize("from=\"10.0.0.1\" ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl backup");
    }
    let before: Vec<Vec<String>> = cluster.workers.iter().map(unmanaged_lines).collect();
    let bootstrap = cluster.key_path.display().to_string();

    let out = rotate(&cluster, &["-w", ALL]);
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "--bootstrap-key");

    let mut seen = Vec::new();
    for round in 0..10 {
        let out = rotate(&cluster, &["-w", ALL, "--bootstrap-key", &bootstrap]);
        assert_success(&out);
        let current = version_with(&cluster, "AWSCURRENT").expect("current");
        assert!(!seen.contains(&current), "round {round} made a new version");
        seen.push(current.clone());
        assert_eq!(version_with(&cluster, "AWSPENDING"), None, "round {round}");
        for (worker, unmanaged) in cluster.workers.iter().zip(&before) {
            assert_eq!(block_versions(worker), [current.as_str()], "round {round}");
            assert_eq!(&unmanaged_lines(worker), unmanaged, "round {round}");
        }
        assert_copy_works_everywhere(&cluster, ALL, &format!("after rotation {round}"));
    }
    let secret: serde_json::Value =
        serde_json::from_str(&cluster.moto.get_secret_string(SECRET_ID)).expect("JSON");
    assert_eq!(secret["KeyType"], "ed25519");
    assert!(secret["PublicKey"]
        .as_str()
        .expect("PublicKey")
        .ends_with(&format!("smssh:{SECRET_ID}:{}", seen[9])));
    assert!(secret["Fingerprint"]
        .as_str()
        .expect("Fingerprint")
        .starts_with("SHA256:"));
}

#[test]
fn a_worker_down_during_set_secret_fails_the_step_and_the_next_run_resumes_the_same_version() {
    let (mut cluster, old) = rotated_cluster();
    cluster.workers[1].stop();

    let out = rotate(&cluster, &["-w", ALL]);
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "setSecret: 1 of 3 hosts failed (127.0.0.3)");
    assert_stderr_contains(&out, "current key still logs in everywhere");
    let pending = version_with(&cluster, "AWSPENDING").expect("pending kept for the next run");
    assert_eq!(
        version_with(&cluster, "AWSCURRENT").as_deref(),
        Some(old.as_str())
    );
    assert_copy_works_everywhere(&cluster, "127.0.0.[2,4]", "after the failed setSecret");

    cluster.workers[1].start();
    let out = rotate(&cluster, &["-w", ALL]);
    assert_success(&out);
    assert!(stdout(&out).contains(&format!("resuming the rotation to version {pending}")));
    assert_eq!(
        version_with(&cluster, "AWSCURRENT").as_deref(),
        Some(pending.as_str())
    );
    assert_eq!(stages(&cluster).len(), 3, "no extra versions piled up");
    for worker in &cluster.workers {
        assert_eq!(block_versions(worker), [pending.as_str()]);
    }
    assert_copy_works_everywhere(&cluster, ALL, "after the resumed rotation");
}

#[test]
fn a_worker_down_during_test_secret_promotes_nothing_and_a_rerun_completes() {
    let (mut cluster, old) = rotated_cluster();
    let token = "aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee";
    assert_success(&rotate_step(&cluster, ALL, "createSecret", token));
    assert_success(&rotate_step(&cluster, ALL, "setSecret", token));
    cluster.workers[2].stop();
    let out = rotate_step(&cluster, ALL, "testSecret", token);
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "testSecret: 1 of 3 hosts failed (127.0.0.4)");
    assert_eq!(
        version_with(&cluster, "AWSCURRENT").as_deref(),
        Some(old.as_str())
    );
    assert_copy_works_everywhere(&cluster, "127.0.0.[2-3]", "after the failed testSecret");
    cluster.workers[2].start();
    assert_copy_works_everywhere(&cluster, ALL, "with the worker back");
    assert_success(&rotate_step(&cluster, ALL, "testSecret", token));
    assert_success(&rotate_step(&cluster, ALL, "finishSecret", token));
    assert_copy_works_everywhere(&cluster, ALL, "after finishSecret");
}

#[test]
fn a_crash_after_any_step_is_completed_by_the_next_run() {
    let (cluster, _) = rotated_cluster();
    let steps = ["createSecret", "setSecret", "testSecret", "finishSecret"];
    for done in 1..=4 {
        let token = format!("00000000-0000-4000-8000-00000000000{done}");
        for step in &steps[..done] {
            assert_success(&rotate_step(&cluster, ALL, step, &token));
        }
        // Here the driver "crashed": the next run must finish this rotation, not start one.
        let out = rotate(&cluster, &["-w", ALL]);
        assert_success(&out);
        assert_eq!(
            version_with(&cluster, "AWSCURRENT").as_deref(),
            Some(token.as_str()),
            "after a crash following {}",
            steps[done - 1]
        );
        assert_eq!(version_with(&cluster, "AWSPENDING"), None);
        for worker in &cluster.workers {
            assert_eq!(block_versions(worker), [token.as_str()]);
        }
        assert_copy_works_everywhere(&cluster, ALL, &format!("after resuming step {done}"));
    }
}

#[test]
fn a_failed_removal_in_finish_secret_is_finished_by_a_retry_of_the_same_step() {
    let (mut cluster, old) = rotated_cluster();
    let token = "12345678-1234-4234-8234-123456789abc";
    for step in ["createSecret", "setSecret", "testSecret"] {
        assert_success(&rotate_step(&cluster, ALL, step, token));
    }
    cluster.workers[0].stop();
    let out = rotate_step(&cluster, ALL, "finishSecret", token);
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "finishSecret: 1 of 3 hosts failed (127.0.0.2)");
    assert_eq!(version_with(&cluster, "AWSCURRENT").as_deref(), Some(token));
    cluster.workers[0].start();
    // The host still holds the old key next to the new one...
    assert_eq!(
        block_versions(&cluster.workers[0]),
        [old.clone(), token.to_owned()]
    );
    // ...and a retry of finishSecret (the version is already AWSCURRENT) removes it.
    let out = rotate_step(&cluster, ALL, "finishSecret", token);
    assert_success(&out);
    for worker in &cluster.workers {
        assert_eq!(block_versions(worker), [token.to_owned()]);
    }
}

#[test]
fn reconcile_brings_a_host_that_was_offline_during_a_rotation_to_the_current_key() {
    let (mut cluster, _) = rotated_cluster();
    cluster.workers[2].stop();
    assert_success(&rotate(&cluster, &["-w", ALL, "--exclude", "127.0.0.4"]));
    let current = version_with(&cluster, "AWSCURRENT").expect("current");
    cluster.workers[2].start();
    // The host missed the rotation: AWSCURRENT does not log in there.
    let out = run(cluster
        .command("smssh")
        .args(["-o", "BatchMode=yes", "127.0.0.4", "true"]));
    assert_exit_code(&out, 255);

    let out = rotate(&cluster, &["-w", ALL, "--reconcile"]);
    assert_success(&out);
    for worker in &cluster.workers {
        assert_eq!(block_versions(worker), [current.as_str()]);
    }
    assert_copy_works_everywhere(&cluster, ALL, "after --reconcile");
}

/// The secret's tags, as DescribeSecret lists them.
fn tags(cluster: &Cluster) -> BTreeMap<String, String> {
    let described = cluster
        .moto
        .block_on(
            cluster
                .moto
                .client()
                .describe_secret()
                .secret_id(SECRET_ID)
                .send(),
        )
        .expect("DescribeSecret");
    described
        .tags()
        .iter()
        .map(|t| {
            (
                t.key().unwrap_or_default().to_owned(),
                t.value().unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

fn set_tag(cluster: &Cluster, key: &str, value: &str) {
    cluster
        .moto
        .block_on(
            cluster
                .moto
                .client()
                .tag_resource()
                .secret_id(SECRET_ID)
                .tags(
                    aws_sdk_secretsmanager::types::Tag::builder()
                        .key(key)
                        .value(value)
                        .build(),
                )
                .send(),
        )
        .expect("TagResource");
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// The grace period of AWSPREVIOUS counts from the promotion of its successor, which
/// finishSecret records in the secret's `smssh:promoted` tag; it used to count from the
/// successor's creation, which for a version created long before its promotion (a rotation
/// left pending, then finished) cut the grace short or ended it before it began.
#[test]
fn the_grace_period_counts_from_the_promotion_recorded_in_a_tag() {
    let cluster = Cluster::new(1);
    assert_success(&rotate(&cluster, &["-w", "127.0.0.2"]));
    let first = version_with(&cluster, "AWSCURRENT").expect("current");
    let before = unix_now();
    assert_success(&rotate(&cluster, &["-w", "127.0.0.2", "--grace", "1h"]));
    let after = unix_now();
    let second = version_with(&cluster, "AWSCURRENT").expect("current");
    assert_eq!(
        block_versions(&cluster.workers[0]),
        [second.clone(), first.clone()]
    );

    let tag = tags(&cluster)
        .remove("smssh:promoted")
        .expect("the promotion is recorded");
    let (version, at) = tag.split_once(' ').expect("<version> <seconds>");
    let at: u64 = at.parse().expect("seconds");
    assert_eq!(version, second);
    assert!(
        (before..=after).contains(&at),
        "{tag} not within {before}..={after}"
    );

    // Within the hour the previous key stays, and it still logs in.
    assert_success(&rotate(
        &cluster,
        &["-w", "127.0.0.2", "--reconcile", "--grace", "1h"],
    ));
    assert_eq!(
        block_versions(&cluster.workers[0]),
        [second.clone(), first.clone()]
    );
    let first_key = cluster.version_key_file(&first);
    assert_key_everywhere(
        &cluster,
        &first_key,
        true,
        "the previous key within its grace",
    );

    // Promoted two hours ago: the grace of one hour is over, whatever the creation dates say.
    set_tag(
        &cluster,
        "smssh:promoted",
        &format!("{second} {}", unix_now() - 7200),
    );
    assert_success(&rotate(
        &cluster,
        &["-w", "127.0.0.2", "--reconcile", "--grace", "1h"],
    ));
    assert_eq!(block_versions(&cluster.workers[0]), [second]);
    assert_key_everywhere(
        &cluster,
        &first_key,
        false,
        "the previous key after its grace",
    );
}

/// `--reconcile --learn-host-keys` brings in a worker added since the last rotation: its host
/// key goes into a new AWSCURRENT version holding the same key pair (the history says when it
/// was accepted, and no key changes), AWSPREVIOUS stays where it was, and a host whose key
/// changed is still refused with both fingerprints.
#[test]
fn reconcile_learns_a_new_workers_host_key_into_a_version_with_the_same_key_pair() {
    let mut cluster = Cluster::new(WORKERS);
    std::fs::write(cluster.known_hosts_path(), "").expect("empty known_hosts");
    let first = version_with(&cluster, "AWSCURRENT").expect("the harness's version");
    let out = rotate(
        &cluster,
        &[
            "-o",
            "BatchMode=yes",
            "-w",
            "127.0.0.[2-3]",
            "--learn-host-keys",
        ],
    );
    assert_success(&out);
    let second = version_with(&cluster, "AWSCURRENT").expect("current");

    // The worker that was not part of the rotation is unknown: a plain reconcile refuses it.
    let out = rotate(&cluster, &["-o", "BatchMode=yes", "-w", ALL, "--reconcile"]);
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "127.0.0.4");

    let out = rotate(
        &cluster,
        &[
            "-o",
            "BatchMode=yes",
            "-w",
            ALL,
            "--reconcile",
            "--learn-host-keys",
        ],
    );
    assert_success(&out);
    assert!(
        stdout(&out).contains("recorded 1 new host key(s) in version"),
        "{}",
        describe(&out)
    );
    let third = version_with(&cluster, "AWSCURRENT").expect("current");
    assert_ne!(third, second);
    assert_eq!(
        version_with(&cluster, "AWSPREVIOUS").as_deref(),
        Some(first.as_str())
    );
    let read = |version: &str| -> serde_json::Value {
        let value = cluster
            .moto
            .block_on(
                cluster
                    .moto
                    .client()
                    .get_secret_value()
                    .secret_id(SECRET_ID)
                    .version_id(version)
                    .send(),
            )
            .expect("GetSecretValue");
        serde_json::from_str(value.secret_string().expect("string")).expect("JSON")
    };
    let (old, new) = (read(&second), read(&third));
    assert_eq!(old["PrivateKey"], new["PrivateKey"], "the key pair changed");
    assert_eq!(old["PublicKey"], new["PublicKey"]);
    let known = new["KnownHosts"].as_str().expect("KnownHosts");
    for worker in &cluster.workers {
        assert!(known.contains(&worker.host_key_line()), "{known}");
        assert_eq!(
            block_versions(worker),
            [third.as_str()],
            "{}",
            worker.addr()
        );
    }
    // The new worker logged in with the first key, which is now retired there too (OpenSSH
    // judges, with a known_hosts file of its own).
    cluster.refresh_known_hosts();
    assert_key_everywhere(&cluster, &cluster.key_path, false, "the first key");
    let out = run(cluster.command("smssh").args([
        "-o",
        "StrictHostKeyChecking=yes",
        "-w",
        ALL,
        "--",
        "true",
    ]));
    assert_success(&out);

    // A changed host key is refused, naming both fingerprints, and no version is stored.
    let versions_before = stages(&cluster);
    cluster.workers[2].regenerate_host_key();
    let out = rotate(
        &cluster,
        &[
            "-o",
            "BatchMode=yes",
            "-w",
            ALL,
            "--reconcile",
            "--learn-host-keys",
        ],
    );
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "127.0.0.4");
    assert!(
        stderr(&out).matches("SHA256:").count() >= 2,
        "{}",
        describe(&out)
    );
    assert_eq!(stages(&cluster), versions_before);
}

#[test]
fn learned_host_keys_go_into_the_secret_and_let_smssh_verify_hosts_with_nothing_on_disk() {
    let cluster = Cluster::new(WORKERS);
    std::fs::write(cluster.known_hosts_path(), "").expect("empty known_hosts");

    // Without learning, unknown hosts stop the rotation before anything is pushed.
    let out = rotate(&cluster, &["-o", "BatchMode=yes", "-w", ALL]);
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "setSecret: 3 of 3 hosts failed");
    assert_stderr_contains(&out, "host key");
    for worker in &cluster.workers {
        assert!(block_versions(worker).is_empty());
    }

    let out = rotate(
        &cluster,
        &["-o", "BatchMode=yes", "-w", ALL, "--learn-host-keys"],
    );
    assert_success(&out);
    let secret: serde_json::Value =
        serde_json::from_str(&cluster.moto.get_secret_string(SECRET_ID)).expect("JSON");
    let known = secret["KnownHosts"].as_str().expect("KnownHosts recorded");
    for worker in &cluster.workers {
        assert!(known.contains(&worker.host_key_line()), "{known}");
    }
    assert_eq!(
        std::fs::read_to_string(cluster.known_hosts_path()).unwrap(),
        ""
    );
    let out = run(cluster.command("smssh").args([
        "-o",
        "StrictHostKeyChecking=yes",
        "-w",
        ALL,
        "--",
        "true",
    ]));
    assert_success(&out);

    // A host whose key changed is refused even with learning on, naming both fingerprints.
    let mut cluster = cluster;
    cluster.workers[0].regenerate_host_key();
    let out = rotate(
        &cluster,
        &["-o", "BatchMode=yes", "-w", ALL, "--learn-host-keys"],
    );
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "127.0.0.2");
    assert_stderr_contains(&out, "SHA256:");
}

#[test]
fn rsa_and_ecdsa_rotations_store_loadable_keys() {
    let cluster = Cluster::new(1);
    for (key_type, header) in [
        ("rsa-2048", "-----BEGIN RSA PRIVATE KEY-----"),
        ("ecdsa-p256", "-----BEGIN OPENSSH PRIVATE KEY-----"),
    ] {
        assert_success(&rotate(
            &cluster,
            &["-w", "127.0.0.2", "--key-type", key_type],
        ));
        let secret: serde_json::Value =
            serde_json::from_str(&cluster.moto.get_secret_string(SECRET_ID)).expect("JSON");
        assert_eq!(secret["KeyType"], key_type);
        assert!(secret["PrivateKey"].as_str().unwrap().starts_with(header));
        assert_copy_works_everywhere(&cluster, "127.0.0.2", key_type);
    }
}

#[test]
fn bad_rotation_inputs_get_one_line_and_the_usage_or_failure_status() {
    let cluster = Cluster::new(1);
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["-w", "127.0.0.2", "--key-type", "dsa"],
            2,
            "--key-type: unknown key type",
        ),
        (
            &["-w", "127.0.0.2", "--grace", "5w"],
            2,
            "--grace: invalid duration",
        ),
        (&["-w", "127.0.0.2", "--deploy", "ssm"], 2, "--ec2-filter"),
        (&["-w", "127.0.0.2", "--deploy", "scp"], 2, "use ssh or ssm"),
        (
            &["-w", "127.0.0.2", "--step", "rotate", "--token", "x"],
            2,
            "unknown rotation step",
        ),
        (
            &[
                "-w",
                "127.0.0.2",
                "--step",
                "setSecret",
                "--token",
                "no'quote",
            ],
            2,
            "--token",
        ),
        (
            &["--step", "setSecret", "--token", "abc"],
            2,
            "no hosts given",
        ),
        (
            &["-w", "127.0.0.2", "--step", "setSecret", "--token", "abc"],
            1,
            "is not a version of this secret",
        ),
        (
            &["-w", "127.0.0.2", "--bootstrap-key", "/nonexistent/key"],
            1,
            "--bootstrap-key /nonexistent/key",
        ),
        (
            &["-w", "127.0.0.2", "--secret-id", "/no/such"],
            1,
            "ResourceNotFoundException",
        ),
    ];
    for (args, code, needle) in cases {
        let out = rotate(&cluster, args);
        assert_exit_code(&out, *code);
        assert_stderr_contains(&out, needle);
        assert_eq!(
            stderr(&out).lines().count(),
            1,
            "{args:?}: {}",
            describe(&out)
        );
    }
    // A step without its token is a grammar error, reported by the parser with the usage.
    let out = rotate(&cluster, &["-w", "127.0.0.2", "--step", "createSecret"]);
    assert_exit_code(&out, 2);
    assert_stderr_contains(&out, "--token");
    // The current version is still the harness's, untouched by every refusal.
    assert_eq!(stages(&cluster).len(), 1);
}

#[test]
fn the_ssm_channel_sends_the_script_to_the_tagged_instances_and_rotates_end_to_end() {
    let cluster = Cluster::new(WORKERS);
    let spec: Vec<serde_json::Value> = cluster
        .workers
        .iter()
        .map(|w| {
            serde_json::json!({
                "ip": w.addr(),
                "tags": {
                    "RotateSSHKeys": "True",
                    "SmsshTestHome": w.sftp_home().display().to_string(),
                },
            })
        })
        .chain(std::iter::once(serde_json::json!({
            "ip": "127.0.0.40",
            "tags": {"RotateSSHKeys": "False"},
        })))
        .collect();
    let ids = cluster
        .moto
        .create_ec2_instances(&serde_json::Value::Array(spec));
    let ssm = [
        "--deploy",
        "ssm",
        "-l",
        "root",
        "--ec2-filter",
        "tag:RotateSSHKeys=True",
    ];
    let out = rotate(&cluster, &ssm);
    assert_success(&out);
    let current = version_with(&cluster, "AWSCURRENT").expect("current");
    for worker in &cluster.workers {
        assert_eq!(block_versions(worker), [current.as_str()]);
    }
    assert_copy_works_everywhere(&cluster, ALL, "after an SSM rotation");

    // The commands went to the three tagged instances only, as AWS-RunShellScript.
    let sent = cluster.moto.run_python(LIST_SSM_COMMANDS, &[]);
    let commands: Vec<serde_json::Value> = serde_json::from_str(sent.trim()).expect("commands");
    assert_eq!(commands.len(), 2, "setSecret and finishSecret: {sent}");
    for command in &commands {
        assert_eq!(command["DocumentName"], "AWS-RunShellScript");
        let mut targets: Vec<String> = command["InstanceIds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect();
        targets.sort();
        let mut expected: Vec<String> = cluster
            .workers
            .iter()
            .map(|w| ids[w.addr()].clone())
            .collect();
        expected.sort();
        assert_eq!(targets, expected);
        let script = command["Parameters"]["commands"][0].as_str().unwrap();
        assert!(script.contains("SMSSH_USER='root'"));
    }

    // An instance whose agent never reports (moto's untagged default: no output) fails the
    // step by name.
    let extra = cluster.moto.create_ec2_instances(&serde_json::json!([
        {"ip": "127.0.0.41", "tags": {"RotateSSHKeys": "True"}}
    ]));
    let out = rotate(
        &cluster,
        &[
            "--deploy",
            "ssm",
            "-l",
            "root",
            "--ec2-filter",
            "tag:RotateSSHKeys=True",
            "--step",
            "setSecret",
            "--token",
            &current,
        ],
    );
    // The current version needs no setSecret; a reconcile exercises the deploy instead.
    assert_success(&out);
    let out = rotate(&cluster, &[&ssm[..], &["--reconcile"]].concat());
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, &extra["127.0.0.41"]);
}

/// Prints the Run Command commands moto recorded, as JSON.
const LIST_SSM_COMMANDS: &str = r#"
import json, os
import boto3
ssm = boto3.client("ssm", endpoint_url=os.environ["MOTO_ENDPOINT"], region_name="us-east-1",
                   aws_access_key_id="testing", aws_secret_access_key="testing")
commands = ssm.list_commands()["Commands"]
print(json.dumps([{k: c[k] for k in ("DocumentName", "InstanceIds", "Parameters")} for c in commands]))
"#;

/// Ctrl-C reaches every part of a rotation that waits on workers: here the first-contact
/// host-key probes of createSecret, which ran outside the fan-out engine and waited out a
/// frozen worker's ConnectTimeout (30 s) before the interruption took effect.
#[test]
fn ctrl_c_while_learning_host_keys_stops_at_once_and_stores_nothing() {
    let cluster = Cluster::new(WORKERS);
    std::fs::write(cluster.known_hosts_path(), "").expect("empty known_hosts");
    let before = stages(&cluster);
    cluster.workers[1].pause();
    let running = spawn(cluster.command("smssh").args([
        "rotate",
        "-o",
        "BatchMode=yes",
        "-w",
        ALL,
        "--learn-host-keys",
    ]));
    // Long enough for createSecret to reach the probes; far shorter than ConnectTimeout.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let interrupt = std::process::Command::new("kill")
        .args(["-INT", &running.id().to_string()])
        .status()
        .expect("kill");
    assert!(interrupt.success());
    let out = running
        .wait_timeout(std::time::Duration::from_secs(10))
        .unwrap_or_else(|out| panic!("smssh rotate ignored Ctrl-C\n{}", describe(&out)));
    cluster.workers[1].resume();
    assert_exit_code(&out, 130);
    assert_stderr_contains(&out, "interrupted");
    assert_eq!(stages(&cluster), before, "no version was stored");
    for worker in &cluster.workers {
        assert!(block_versions(worker).is_empty());
    }
}

/// Makes `value` a new version labelled AWSPENDING while AWSCURRENT stays where it is.
fn stage_pending(cluster: &Cluster, value: &str) -> String {
    let current = version_with(cluster, "AWSCURRENT").expect("current");
    let pending = cluster.moto.put_secret_value(SECRET_ID, value);
    cluster
        .moto
        .update_stage(SECRET_ID, "AWSCURRENT", &current, Some(&pending));
    cluster
        .moto
        .update_stage(SECRET_ID, "AWSPENDING", &pending, None);
    assert_eq!(version_with(cluster, "AWSCURRENT"), Some(current));
    pending
}

/// Regression (issue 9, item 6): finishSecret promoted an AWSPENDING version of `{}`, the
/// desired key set became empty and the managed block was removed from every worker.
#[test]
fn finish_secret_can_empty_every_worker() {
    let (cluster, current) = rotated_cluster();
    let pending = stage_pending(&cluster, "{}");
    let out = rotate_step(&cluster, ALL, "finishSecret", &pending);
    assert_exit_code(&out, 1);
    assert_stderr_contains(&out, "holds no key yet");
    assert_eq!(
        version_with(&cluster, "AWSCURRENT").as_deref(),
        Some(current.as_str())
    );
    for worker in &cluster.workers {
        assert_eq!(block_versions(worker), std::slice::from_ref(&current));
    }
    assert_copy_works_everywhere(&cluster, ALL, "after the refused finishSecret");
    let out = rotate(&cluster, &["-w", ALL, "--reconcile"]);
    assert_success(&out);
}

/// Regression (issue 9, item 6): the PublicKey field was trusted without checking it against
/// PrivateKey, so a version whose PublicKey is someone else's key would have been installed on
/// every worker, and a mismatched pair locks everyone out once promoted.
#[test]
fn a_public_key_that_is_not_the_private_keys_half_is_refused_at_every_step() {
    let (cluster, current) = rotated_cluster();
    let document: serde_json::Value = serde_json::from_str(
        &cluster
            .moto
            .get_secret_string_at_stage(SECRET_ID, "AWSCURRENT"),
    )
    .expect("JSON");
    let stranger = cluster.workers[0].host_key_line();
    let stranger: Vec<&str> = stranger.split(' ').skip(1).collect();
    let forged = serde_json::json!({
        "PrivateKey": document["PrivateKey"],
        "PublicKey": stranger.join(" "),
    });
    let pending = stage_pending(&cluster, &forged.to_string());
    for step in ["setSecret", "testSecret", "finishSecret"] {
        let out = rotate_step(&cluster, ALL, step, &pending);
        assert_exit_code(&out, 1);
        assert_stderr_contains(&out, "PublicKey is not the public half of PrivateKey");
    }
    assert_eq!(
        version_with(&cluster, "AWSCURRENT").as_deref(),
        Some(current.as_str())
    );
    for worker in &cluster.workers {
        assert_eq!(block_versions(worker), std::slice::from_ref(&current));
        assert!(!worker.authorized_keys().contains(stranger[1]));
    }
}
