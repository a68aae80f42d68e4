//! Named groups (`@group`) against what we did not write: ClusterShell's own `nodeset -e`
//! expands the same group files, and real sshd workers run the fan-outs and copies that name
//! groups in `-w`, `--exclude`, `--hosts-file` lines and smscp operands.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// ClusterShell's shipped `local` source, as `/etc/clustershell/groups.conf` has it.
const LOCAL_SOURCE: &str = "[local]\nmap: [ -f $CFGDIR/groups ] && f=$CFGDIR/groups || f=$CFGDIR/groups.d/local.cfg; sed -n 's/^$GROUP:\\(.*\\)/\\1/p' $f\nall: [ -f $CFGDIR/groups ] && f=$CFGDIR/groups || f=$CFGDIR/groups.d/local.cfg; sed -n 's/^all:\\(.*\\)/\\1/p' $f\nlist: [ -f $CFGDIR/groups ] && f=$CFGDIR/groups || f=$CFGDIR/groups.d/local.cfg; sed -n 's/^\\([0-9A-Za-z_-]*\\):.*/\\1/p' $f\n";

/// A ClusterShell configuration directory of the test's own, with a local source, YAML
/// sources and an upcall source whose command would leave `marker` behind if anyone ran it.
fn clustershell_dir(scratch: &Path, marker: &Path) -> PathBuf {
    let dir = scratch.join("clustershell");
    std::fs::create_dir_all(dir.join("groups.d")).expect("mkdir groups.d");
    std::fs::create_dir_all(dir.join("groups.conf.d")).expect("mkdir groups.conf.d");
    std::fs::write(
        dir.join("groups.conf"),
        format!(
            "[Main]\ndefault: local\nconfdir: $CFGDIR/groups.conf.d\nautodir: $CFGDIR/groups.d\n\n{LOCAL_SOURCE}\n[upcall]\nmap: touch {} && echo evil1\n",
            marker.display()
        ),
    )
    .expect("groups.conf");
    std::fs::write(
        dir.join("groups.d/local.cfg"),
        "# the cluster's nodes\nadm: node[1-2]\ncompute: node[10-14] node20\nio: node[30-31],@adm\nall: @compute,@io\n",
    )
    .expect("local.cfg");
    std::fs::write(
        dir.join("groups.d/site.yaml"),
        "racks:\n    rack1: 'node[1-2,10-11]'  # the first rack\n    rack2: \"node[12-14]\"\n    both: '@rack1,@rack2'\n    spares:\n        - 'spare[1-3]'\n        - spare9\nroles:\n    login: 'login[01-03]'\n",
    )
    .expect("site.yaml");
    dir
}

/// `nodeset -e` with the test's ClusterShell directory and home.
fn nodeset(cluster: &Cluster, cfgdir: &Path, arg: &str) -> Vec<String> {
    let out = run(Command::new("nodeset")
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", cluster.home.path())
        .env("CLUSTERSHELL_CFGDIR", cfgdir)
        .args(["-e", arg]));
    assert_success(&out);
    let mut hosts: Vec<String> = stdout(&out).split_whitespace().map(str::to_owned).collect();
    hosts.sort();
    hosts
}

fn write_user_config(cluster: &Cluster, text: &str) {
    let dir = cluster.home.path().join(".config/smssh");
    std::fs::create_dir_all(&dir).expect("mkdir config");
    std::fs::write(dir.join("config.toml"), text).expect("config.toml");
}

/// `smssh --list-groups` as `group -> hostlist`.
/// The command's stdout lines, sorted: a fan-out prints its hosts' lines in the order they
/// arrive.
fn sorted_lines(out: &std::process::Output) -> Vec<String> {
    let mut lines: Vec<String> = stdout(out).lines().map(str::to_owned).collect();
    lines.sort();
    lines
}

fn listed(out: &std::process::Output) -> std::collections::BTreeMap<String, String> {
    stdout(out)
        .lines()
        .map(|line| {
            let (group, hosts) = line.split_once(' ').expect("`@group hosts` lines");
            (group.to_owned(), hosts.to_owned())
        })
        .collect()
}

#[test]
fn clustershell_group_files_expand_as_nodeset_expands_them_and_no_upcall_runs() {
    let cluster = Cluster::new(1);
    let marker = cluster.scratch.path().join("upcall-ran");
    let cfgdir = clustershell_dir(cluster.scratch.path(), &marker);
    let out = run(cluster
        .command("smssh")
        .env("CLUSTERSHELL_CFGDIR", &cfgdir)
        .args(["-v", "--list-groups"]));
    assert_success(&out);
    let groups = listed(&out);
    for group in [
        "@adm",
        "@compute",
        "@io",
        "@all",
        "@racks:rack1",
        "@racks:rack2",
        "@racks:both",
        "@racks:spares",
        "@roles:login",
    ] {
        let ours = groups
            .get(group)
            .unwrap_or_else(|| panic!("{group} not listed\n{}", describe(&out)));
        assert_eq!(
            nodeset(&cluster, &cfgdir, ours),
            nodeset(&cluster, &cfgdir, group),
            "{group}: smssh lists {ours}"
        );
    }
    assert!(!marker.exists(), "smssh ran a group source's upcall");
    assert_stderr_contains(&out, "\"upcall\": its groups come from commands");
}

#[test]
fn smssh_groups_refer_to_clustershell_groups_and_cycles_fail_in_one_line() {
    let cluster = Cluster::new(1);
    let marker = cluster.scratch.path().join("upcall-ran");
    let cfgdir = clustershell_dir(cluster.scratch.path(), &marker);
    let system = cluster.scratch_file(
        "system.toml",
        b"[groups]\nworkers = \"worker[01-64]\"\ngpu = \"ec2:tag:Role=gpu\"\n",
    );
    write_user_config(
        &cluster,
        "[groups]\nworkers = \"evil[1-9]\"\nmine = \"@workers,@adm,db1\"\nloop-a = \"@loop-b\"\nloop-b = \"x1,@loop-a\"\n",
    );
    let out = run(cluster
        .command("smssh")
        .env("CLUSTERSHELL_CFGDIR", &cfgdir)
        .env("SMSSH_TEST_SYSTEM_CONFIG", &system)
        .args(["-v", "--list-groups"]));
    assert_exit_code(&out, 255);
    let groups = listed(&out);
    // The administrator's name stays theirs; the user's own names are added.
    assert_eq!(groups["@workers"], "worker[01-64]");
    assert_eq!(groups["@gpu"], "ec2:tag:Role=gpu");
    assert_eq!(
        nodeset(&cluster, &cfgdir, &groups["@mine"]),
        nodeset(&cluster, &cfgdir, "worker[01-64],node[1-2],db1")
    );
    assert_stderr_contains(&out, "group @workers is the administrator's");
    let errors = stderr(&out);
    let cycle: Vec<&str> = errors
        .lines()
        .filter(|l| l.contains("in a cycle"))
        .collect();
    assert_eq!(cycle.len(), 2, "{}", describe(&out));
    assert!(
        cycle[0].contains("@loop-a -> @loop-b -> @loop-a"),
        "{cycle:?}"
    );
    // A fan-out naming an unknown group says where to define it, before any secret is read.
    let out = run(cluster
        .command("smssh")
        .env("CLUSTERSHELL_CFGDIR", &cfgdir)
        .args(["-w", "@nosuch", "--", "true"]));
    assert_exit_code(&out, 255);
    assert_stderr_contains(&out, "@nosuch: no such group: define it under [groups] in");
}

#[test]
fn a_fanout_and_copies_reach_the_hosts_of_named_groups() {
    let cluster = Cluster::new(4);
    let marker = cluster.scratch.path().join("upcall-ran");
    let cfgdir = clustershell_dir(cluster.scratch.path(), &marker);
    std::fs::write(
        cfgdir.join("groups.d/workers.yaml"),
        "lab:\n    odd: '127.0.0.[3,5]'\n",
    )
    .expect("workers.yaml");
    write_user_config(&cluster, "[groups]\nworkers = \"127.0.0.[2-5]\"\n");
    // The administrator's file holds groups beside its audit policy.
    let system = cluster.scratch_file(
        "system.toml",
        b"[audit]\nsyslog = false\n[groups]\nfirst = \"127.0.0.2\"\n",
    );
    let smssh = |args: &[&str]| {
        run(cluster
            .command("smssh")
            .env("CLUSTERSHELL_CFGDIR", &cfgdir)
            .env("SMSSH_TEST_SYSTEM_CONFIG", &system)
            .args(args))
    };
    let out = smssh(&["-w", "@workers", "--", "echo", "hi"]);
    assert_success(&out);
    let lines = sorted_lines(&out);
    assert_eq!(
        lines,
        [
            "127.0.0.2: hi",
            "127.0.0.3: hi",
            "127.0.0.4: hi",
            "127.0.0.5: hi"
        ]
    );
    // --exclude takes groups, ClusterShell's among them.
    let out = smssh(&[
        "-w",
        "@workers",
        "--exclude",
        "@lab:odd",
        "--",
        "echo",
        "hi",
    ]);
    assert_success(&out);
    let lines = sorted_lines(&out);
    assert_eq!(lines, ["127.0.0.2: hi", "127.0.0.4: hi"]);
    // A hosts file line names groups too.
    let hosts = cluster.scratch_file("hosts", b"@first # the first\n127.0.0.4\n");
    let out = smssh(&[
        "--hosts-file",
        hosts.to_str().expect("utf-8"),
        "--",
        "echo",
        "hi",
    ]);
    assert_success(&out);
    let lines = sorted_lines(&out);
    assert_eq!(lines, ["127.0.0.2: hi", "127.0.0.4: hi"]);
    // smscp's operands: a push to `@group:path` and a gather from it.
    let source = cluster.scratch_file("payload.txt", b"to every worker\n");
    let out = run(cluster
        .command("smscp")
        .env("CLUSTERSHELL_CFGDIR", &cfgdir)
        .args([source.to_str().expect("utf-8"), "@workers:payload.txt"]));
    assert_success(&out);
    for worker in &cluster.workers {
        let got = std::fs::read(worker.sftp_home().join("payload.txt")).expect("pushed");
        assert_eq!(got, b"to every worker\n", "{}", worker.addr());
    }
    let gathered = tempfile::tempdir().expect("gather dir");
    let out = run(cluster
        .command("smscp")
        .env("CLUSTERSHELL_CFGDIR", &cfgdir)
        .args([
            "--exclude",
            "@lab:odd",
            "@workers:payload.txt",
            gathered.path().to_str().expect("utf-8"),
        ]));
    assert_success(&out);
    let mut got: Vec<String> = std::fs::read_dir(gathered.path())
        .expect("gathered")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    got.sort();
    assert_eq!(got, ["127.0.0.2", "127.0.0.4"]);
}

#[test]
fn an_ec2_group_is_discovered_for_a_fanout_and_a_push() {
    let cluster = Cluster::new(3);
    cluster.moto.create_ec2_instances(&serde_json::json!([
        {"ip": "127.0.0.3", "tags": {"Role": "gpu"}},
        {"ip": "127.0.0.4", "tags": {"Role": "gpu"}},
        {"ip": "127.0.0.2", "tags": {"Role": "cpu"}},
    ]));
    write_user_config(
        &cluster,
        "[groups]\ngpu = \"ec2:tag:Role=gpu\"\nlab = \"@gpu,127.0.0.2\"\n",
    );
    let out = run(cluster
        .command("smssh")
        .args(["-w", "@lab", "--", "echo", "hi"]));
    assert_success(&out);
    let lines = sorted_lines(&out);
    assert_eq!(lines, ["127.0.0.2: hi", "127.0.0.3: hi", "127.0.0.4: hi"]);
    let source = cluster.scratch_file("gpu.conf", b"for the gpus\n");
    let out = run(cluster
        .command("smscp")
        .args([source.to_str().expect("utf-8"), "@gpu:gpu.conf"]));
    assert_success(&out);
    for worker in &cluster.workers {
        let pushed = worker.sftp_home().join("gpu.conf").exists();
        assert_eq!(pushed, worker.addr() != "127.0.0.2", "{}", worker.addr());
    }
    // An EC2 group cannot be excluded: only discovery knows its hosts.
    let out = run(cluster
        .command("smssh")
        .args(["-w", "@lab", "--exclude", "@gpu", "--", "true"]));
    assert_exit_code(&out, 255);
    assert_stderr_contains(
        &out,
        "@gpu is an EC2 group, and --exclude takes host names only",
    );
}
