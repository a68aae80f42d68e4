//! smscp side by side with OpenSSH's own scp (9.2, SFTP mode): each copy shape runs once with
//! each program against the same worker, in two fresh copies of one template world (a
//! `local/` and a `remote/` directory; the worker is a local sshd, so the remote side is a
//! local directory too). The test then compares what each left behind (names, bytes, modes,
//! symbolic links, and modification times where `-p` or the template set them), the exit
//! status, stdout, and stderr (text with the program name and world paths taken out; its
//! shape, the number of lines, must agree). It prints a score table and requires "same" for
//! every shape but the deliberate differences that README.md lists under "Copies: how smscp
//! compares with scp".

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Output;
use std::time::{Duration, UNIX_EPOCH};

use common::*;

/// Modification times the template gives its files and directories: all long past, so a
/// time at or after [`RECENT`] can only be the copy's own.
const OLD: u64 = 1_500_000_000;
const RECENT: i64 = 1_600_000_000;

/// A copy shape: its name in the table and scp's arguments, with `H:` for the worker,
/// `{R}` for the world's remote directory and `{L}` for its local one (the programs also run
/// in `{L}`).
struct Shape {
    name: &'static str,
    args: &'static [&'static str],
}

const fn shape(name: &'static str, args: &'static [&'static str]) -> Shape {
    Shape { name, args }
}

/// Downloads: remote sources, a local target.
const DOWNLOADS: &[Shape] = &[
    shape("get file into .", &["H:{R}/a.txt", "."]),
    shape("get file to new name", &["H:{R}/a.txt", "{L}/copy.txt"]),
    shape(
        "get file over existing file",
        &["H:{R}/a.txt", "{L}/file.txt"],
    ),
    shape("get file into dir", &["H:{R}/a.txt", "{L}/existing"]),
    shape("get file into dir/", &["H:{R}/a.txt", "{L}/existing/"]),
    shape("get file into missing dir/", &["H:{R}/a.txt", "{L}/nodir/"]),
    shape(
        "get file, missing target dir",
        &["H:{R}/a.txt", "{L}/nodir/x.txt"],
    ),
    shape("get -p file", &["-p", "H:{R}/b.txt", "."]),
    shape("get executable", &["H:{R}/exec.sh", "."]),
    shape("get empty file", &["H:{R}/empty", "."]),
    shape("get name with space", &["H:{R}/with space.txt", "."]),
    shape("get name with colon", &["H:{R}/co:lon.txt", "."]),
    shape("get missing source", &["H:{R}/missing.txt", "."]),
    shape(
        "get missing + good",
        &["H:{R}/missing.txt", "H:{R}/a.txt", "."],
    ),
    shape(
        "get several into dir",
        &["H:{R}/a.txt", "H:{R}/b.txt", "{L}/existing"],
    ),
    shape(
        "get several into file",
        &["H:{R}/a.txt", "H:{R}/b.txt", "{L}/file.txt"],
    ),
    shape(
        "get several into missing",
        &["H:{R}/a.txt", "H:{R}/b.txt", "{L}/nodir"],
    ),
    shape("get dir without -r", &["H:{R}/tree", "."]),
    shape("get -r into new dir", &["-r", "H:{R}/tree", "{L}/newtree"]),
    shape(
        "get -r into existing dir",
        &["-r", "H:{R}/tree", "{L}/existing"],
    ),
    shape("get -r source/", &["-r", "H:{R}/tree/", "{L}/existing"]),
    shape("get -rp", &["-rp", "H:{R}/tree", "."]),
    shape("get -r modes", &["-r", "H:{R}/modes", "."]),
    shape("get -rp modes", &["-rp", "H:{R}/modes", "."]),
    shape("get -r symlinks", &["-r", "H:{R}/links", "."]),
    shape("get symlink to file", &["H:{R}/links/to-file", "."]),
    shape("get .. in path", &["H:{R}/tree/../a.txt", "."]),
    shape("get glob *", &["H:{R}/logs/*.log", "."]),
    shape("get glob ?", &["H:{R}/logs/?.log", "."]),
    shape("get glob [..]", &["H:{R}/logs/[ab].log", "{L}/existing"]),
    shape("get glob [!..]", &["H:{R}/logs/[!ab].*", "{L}/existing"]),
    shape("get glob in dir part", &["H:{R}/l*s/a.log", "."]),
    shape("get glob no match", &["H:{R}/logs/*.nothing", "."]),
    shape(
        "get glob one match, new name",
        &["H:{R}/logs/a.*", "{L}/one.log"],
    ),
    shape("get glob many, new dir", &["H:{R}/logs/*.log", "{L}/fresh"]),
    shape(
        "get glob many, onto file",
        &["H:{R}/logs/*.log", "{L}/file.txt"],
    ),
    shape("get glob dirs without -r", &["H:{R}/*", "{L}/existing"]),
    shape("get -r glob", &["-r", "H:{R}/tree/*", "{L}/existing"]),
    shape("get glob relative", &["H:rel/*.txt", "."]),
    shape("get glob escaped", &["H:{R}/logs/star\\*.log", "."]),
];

/// Uploads: local sources, a remote target.
const UPLOADS: &[Shape] = &[
    shape("put file into dir", &["up.txt", "H:{R}/"]),
    shape("put file into dir, no /", &["up.txt", "H:{R}"]),
    shape("put file to new name", &["up.txt", "H:{R}/new.txt"]),
    shape("put file over existing", &["up.txt", "H:{R}/a.txt"]),
    shape("put file into missing dir/", &["up.txt", "H:{R}/nodir/"]),
    shape(
        "put file, missing target dir",
        &["up.txt", "H:{R}/nodir/x.txt"],
    ),
    shape("put -p file", &["-p", "up.txt", "H:{R}/"]),
    shape("put executable", &["run.sh", "H:{R}/"]),
    shape("put empty file", &["upempty", "H:{R}/"]),
    shape("put name with space", &["up space.txt", "H:{R}/"]),
    shape("put name with colon", &["./up:colon.txt", "H:{R}/"]),
    shape("put missing source", &["missing.txt", "H:{R}/"]),
    shape("put missing + good", &["missing.txt", "up.txt", "H:{R}/"]),
    shape("put several into dir", &["up.txt", "run.sh", "H:{R}/tree"]),
    shape(
        "put several into file",
        &["up.txt", "run.sh", "H:{R}/a.txt"],
    ),
    shape(
        "put several into missing",
        &["up.txt", "run.sh", "H:{R}/nodir"],
    ),
    shape("put dir without -r", &["uptree", "H:{R}/"]),
    shape("put -r into new dir", &["-r", "uptree", "H:{R}/newtree"]),
    shape("put -r into existing dir", &["-r", "uptree", "H:{R}/tree"]),
    shape("put -r source/", &["-r", "uptree/", "H:{R}/tree"]),
    shape("put -rp", &["-rp", "uptree", "H:{R}/"]),
    shape("put .. in path", &["uptree/../up.txt", "H:{R}/tree/../"]),
];

/// Remote to remote: `H` and `H2` are two workers (which share this machine's files, so
/// `{R}` is the same directory on both). OpenSSH 9.2's scp goes through the local host by
/// default, with or without `-3`.
const REMOTE_TO_REMOTE: &[Shape] = &[
    shape(
        "-3 file to new name",
        &["-3", "H:{R}/a.txt", "H2:{R}/new.txt"],
    ),
    shape("-3 file into dir", &["-3", "H:{R}/a.txt", "H2:{R}/tree"]),
    shape(
        "-3 file over existing",
        &["-3", "H:{R}/a.txt", "H2:{R}/b.txt"],
    ),
    shape("-3 -p file", &["-3", "-p", "H:{R}/exec.sh", "H2:{R}/tree/"]),
    shape("-3 empty file", &["-3", "H:{R}/empty", "H2:{R}/tree/"]),
    shape(
        "remote to remote, no -3",
        &["H:{R}/a.txt", "H2:{R}/new.txt"],
    ),
    shape(
        "-3 missing source",
        &["-3", "H:{R}/missing.txt", "H2:{R}/tree/"],
    ),
    shape("-3 dir without -r", &["-3", "H:{R}/tree", "H2:{R}/logs"]),
    shape(
        "-3 -r into new dir",
        &["-3", "-r", "H:{R}/tree", "H2:{R}/newtree"],
    ),
    shape(
        "-3 -r into existing dir",
        &["-3", "-r", "H:{R}/tree", "H2:{R}/logs"],
    ),
    shape("-3 -rp", &["-3", "-rp", "H:{R}/modes", "H2:{R}/logs"]),
    shape(
        "-3 -r symlinks",
        &["-3", "-r", "H:{R}/links", "H2:{R}/tree"],
    ),
    shape("-3 glob", &["-3", "H:{R}/logs/*.log", "H2:{R}/tree"]),
    shape(
        "-3 several into dir",
        &["-3", "H:{R}/a.txt", "H:{R}/b.txt", "H2:{R}/tree"],
    ),
    shape(
        "-3 missing target dir",
        &["-3", "H:{R}/a.txt", "H2:{R}/nodir/x.txt"],
    ),
];

/// Shapes where smscp differs on purpose, each with the reason README.md gives.
const DELIBERATE: &[(&str, &str)] = &[
    ("get file over existing file", REPLACED),
    ("put file over existing", REPLACED),
    ("-3 file over existing", REPLACED),
    ("get several into file", UNNAMED),
    ("get several into missing", UNNAMED),
    ("put missing source", FATAL_SOURCE),
    ("put missing + good", FATAL_SOURCE),
    ("put several into file", FATAL_MKDIR),
];

const REPLACED: &str = "written under a temporary name and renamed over the target, so the \
    directory holding it changes (its mtime); scp rewrites the file in place";
const UNNAMED: &str =
    "scp prints this error without its name; every smscp error line starts with it";
const FATAL_SOURCE: &str = "scp 9.2 stops at a missing local source with status 255 and copies \
    nothing more; smscp reports it, copies the others and exits 1";
const FATAL_MKDIR: &str =
    "scp 9.2 exits 255 from a failed mkdir; smscp says Not a directory and exits 1";

fn set_mtime(path: &Path, secs: u64) {
    let time = UNIX_EPOCH + Duration::from_secs(secs);
    fs::File::open(path)
        .and_then(|f| f.set_times(fs::FileTimes::new().set_accessed(time).set_modified(time)))
        .unwrap_or_else(|e| panic!("cannot set the times of {}: {e}", path.display()));
}

fn write(path: &Path, content: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).expect("mkdir");
    }
    fs::write(path, content).expect("write");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn mkdir(path: &Path, mode: u32) {
    fs::create_dir_all(path).expect("mkdir");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
}

fn pattern_bytes(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// The template world both programs start from.
fn build_template(root: &Path) {
    let r = root.join("remote");
    let l = root.join("local");
    write(&r.join("a.txt"), b"alpha\n", 0o644);
    write(&r.join("b.txt"), b"bravo\n", 0o600);
    write(&r.join("exec.sh"), b"#!/bin/sh\necho run\n", 0o755);
    write(&r.join("empty"), b"", 0o644);
    write(&r.join("with space.txt"), b"space\n", 0o644);
    write(&r.join("co:lon.txt"), b"colon\n", 0o644);
    write(&r.join("tree/x.txt"), b"x\n", 0o644);
    write(&r.join("tree/sub/y.bin"), &pattern_bytes(300_000, 7), 0o640);
    write(&r.join("tree/sub/deep/z.txt"), b"z\n", 0o444);
    mkdir(&r.join("tree/sub"), 0o750);
    write(&r.join("modes/open/f"), b"f\n", 0o666);
    mkdir(&r.join("modes/open"), 0o777);
    write(&r.join("modes/readonly/f"), b"f\n", 0o644);
    mkdir(&r.join("modes/readonly"), 0o555);
    write(&r.join("modes/private/f"), b"f\n", 0o600);
    mkdir(&r.join("modes/private"), 0o700);
    write(&r.join("links/f.txt"), b"linked\n", 0o640);
    std::os::unix::fs::symlink("f.txt", r.join("links/to-file")).expect("symlink");
    std::os::unix::fs::symlink("../tree/sub", r.join("links/to-dir")).expect("symlink");
    std::os::unix::fs::symlink("nowhere", r.join("links/dangling")).expect("symlink");
    for (name, body) in [
        ("a.log", "a"),
        ("b.log", "b"),
        ("c.log", "c"),
        ("1.log", "1"),
        (".hidden.log", "h"),
        ("d.txt", "d"),
        ("star*.log", "s"),
    ] {
        write(&r.join("logs").join(name), body.as_bytes(), 0o644);
    }
    write(&l.join("file.txt"), b"old local file\n", 0o600);
    mkdir(&l.join("existing"), 0o755);
    write(&l.join("up.txt"), b"upload\n", 0o644);
    write(&l.join("run.sh"), b"#!/bin/sh\n", 0o750);
    write(&l.join("upempty"), b"", 0o644);
    write(&l.join("up space.txt"), b"space\n", 0o644);
    write(&l.join("up:colon.txt"), b"colon\n", 0o644);
    write(&l.join("uptree/u.txt"), b"u\n", 0o644);
    write(
        &l.join("uptree/in/v.bin"),
        &pattern_bytes(100_000, 3),
        0o600,
    );
    mkdir(&l.join("uptree/in"), 0o700);
    // Every time in the template is old and distinct, so that `-p` shows.
    let mut secs = OLD;
    let mut all = Vec::new();
    collect(root, &mut all);
    for path in all {
        if !fs::symlink_metadata(&path).expect("lstat").is_symlink() {
            set_mtime(&path, secs);
            secs += 3600;
        }
    }
}

fn collect(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let mut entries: Vec<_> = fs::read_dir(dir)
        .expect("read_dir")
        .map(|e| e.expect("entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let meta = fs::symlink_metadata(&path).expect("lstat");
        if meta.is_dir() {
            collect(&path, out);
        }
        out.push(path);
    }
}

/// What a world holds: one line per entry, by relative path.
fn snapshot(world: &Path) -> BTreeMap<String, String> {
    let mut all = Vec::new();
    collect(world, &mut all);
    all.into_iter()
        .map(|path| {
            let meta = fs::symlink_metadata(&path).expect("lstat");
            let rel = path
                .strip_prefix(world)
                .expect("inside the world")
                .display()
                .to_string();
            let time = if meta.mtime() >= RECENT {
                "new".to_owned()
            } else {
                meta.mtime().to_string()
            };
            let what = if meta.is_symlink() {
                format!(
                    "link -> {}",
                    fs::read_link(&path).expect("readlink").display()
                )
            } else if meta.is_dir() {
                format!("dir {:o} mtime {time}", meta.mode() & 0o7777)
            } else {
                use sha2::Digest;
                let digest = sha2::Sha256::digest(fs::read(&path).expect("read"));
                let hex: String = digest[..6].iter().map(|b| format!("{b:02x}")).collect();
                format!(
                    "file {:o} {} bytes {hex} mtime {time}",
                    meta.mode() & 0o7777,
                    meta.len()
                )
            };
            (rel, what)
        })
        .collect()
}

/// One program's run of one shape.
struct Outcome {
    code: Option<i32>,
    stdout: String,
    stderr: Vec<String>,
    tree: BTreeMap<String, String>,
}

fn normalize(text: &str, world: &Path) -> Vec<String> {
    let world = world.display().to_string();
    text.lines()
        .map(|line| {
            let line = line.replace(&world, "W");
            for program in ["smscp: ", "scp: "] {
                if let Some(rest) = line.strip_prefix(program) {
                    return format!("PROG: {rest}");
                }
            }
            line
        })
        .collect()
}

fn run_shape(
    cluster: &Cluster,
    template: &Path,
    scratch: &Path,
    shape: &Shape,
    program: &str,
) -> Outcome {
    let world = scratch.join(format!(
        "{}-{}",
        program,
        shape
            .name
            .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    ));
    let copied = run(std::process::Command::new("cp")
        .arg("-a")
        .arg(template)
        .arg(&world));
    assert_success(&copied);
    let remote = world.join("remote").display().to_string();
    let local = world.join("local");
    let args: Vec<String> = shape
        .args
        .iter()
        .map(|arg| {
            arg.replace("H2:", "127.0.0.3:")
                .replace("H:", "127.0.0.2:")
                .replace("{R}", &remote)
                .replace("{L}", &local.display().to_string())
        })
        .collect();
    let mut cmd = match program {
        "scp" => cluster.openssh("scp"),
        _ => cluster.command("smscp"),
    };
    cmd.current_dir(&local).args(&args);
    let output: Output = run(&mut cmd);
    Outcome {
        code: output.status.code(),
        stdout: normalize(&stdout(&output), &world).join("\n"),
        stderr: normalize(&stderr(&output), &world),
        tree: snapshot(&world),
    }
}

/// How two runs of one shape compare: the differences found, none when they agree.
fn differences(scp: &Outcome, smscp: &Outcome) -> Vec<String> {
    let mut found = Vec::new();
    if scp.code != smscp.code {
        found.push(format!("exit {:?} vs {:?}", scp.code, smscp.code));
    }
    if scp.stdout != smscp.stdout {
        found.push(format!("stdout {:?} vs {:?}", scp.stdout, smscp.stdout));
    }
    // The shape of stderr: silent, or error lines each starting with the program's name.
    // The wording is shown in the table but not compared: smscp prints one line per failure
    // (`PATH: reason`) where scp often prints two.
    let shape = |lines: &[String]| {
        (
            lines.is_empty(),
            lines.iter().all(|line| line.starts_with("PROG: ")),
        )
    };
    if shape(&scp.stderr) != shape(&smscp.stderr) {
        found.push(format!(
            "stderr shape (silent, all PROG lines): {:?} vs {:?}",
            shape(&scp.stderr),
            shape(&smscp.stderr)
        ));
    }
    let paths: std::collections::BTreeSet<&String> =
        scp.tree.keys().chain(smscp.tree.keys()).collect();
    for path in paths {
        let (a, b) = (scp.tree.get(path), smscp.tree.get(path));
        if a != b {
            found.push(format!(
                "{path}: {} vs {}",
                a.map_or("absent", String::as_str),
                b.map_or("absent", String::as_str)
            ));
        }
    }
    found
}

fn compare(shapes: &[Shape], title: &str, workers: usize) {
    let cluster = Cluster::new(workers);
    let scratch = tempfile::Builder::new()
        .prefix("smssh-compare-")
        .tempdir()
        .expect("scratch dir");
    let template = scratch.path().join("template");
    build_template(&template);
    // Relative remote paths start in the worker's home; both programs read the same files.
    let rel = cluster.workers[0].sftp_home().join("rel");
    write(&rel.join("one.txt"), b"1\n", 0o644);
    write(&rel.join("two.txt"), b"2\n", 0o600);

    let mut table = vec![format!("{title}: shape | scp exit | smscp exit | verdict")];
    let mut unexpected = Vec::new();
    let mut deliberate_but_same = Vec::new();
    for shape in shapes {
        let scp = run_shape(&cluster, &template, scratch.path(), shape, "scp");
        let smscp = run_shape(&cluster, &template, scratch.path(), shape, "smscp");
        let found = differences(&scp, &smscp);
        let deliberate = DELIBERATE.iter().find(|(name, _)| *name == shape.name);
        let verdict = match (found.is_empty(), deliberate) {
            (true, None) => "same".to_owned(),
            (true, Some(_)) => {
                deliberate_but_same.push(shape.name);
                "same (listed as deliberate)".to_owned()
            }
            (false, Some((_, why))) => format!("different, deliberate: {why}"),
            (false, None) => {
                unexpected.push(shape.name);
                "DIFFERENT".to_owned()
            }
        };
        table.push(format!(
            "{:<32} | {:>4} | {:>4} | {verdict}",
            shape.name,
            scp.code.map_or("sig".into(), |c| c.to_string()),
            smscp.code.map_or("sig".into(), |c| c.to_string()),
        ));
        for line in &found {
            table.push(format!("    {line}"));
        }
        if scp.stderr != smscp.stderr {
            for line in &scp.stderr {
                table.push(format!("    scp:   {line}"));
            }
            for line in &smscp.stderr {
                table.push(format!("    smscp: {line}"));
            }
        }
    }
    println!("{}", table.join("\n"));
    assert!(
        unexpected.is_empty(),
        "smscp differs from scp in {unexpected:?}\n{}",
        table.join("\n")
    );
    assert!(
        deliberate_but_same.is_empty(),
        "listed as deliberate differences but now the same (update DELIBERATE and README.md): {deliberate_but_same:?}"
    );
}

#[test]
fn downloads_match_openssh_scp() {
    compare(DOWNLOADS, "downloads", 1);
}

#[test]
fn uploads_match_openssh_scp() {
    compare(UPLOADS, "uploads", 1);
}

#[test]
fn remote_to_remote_copies_match_openssh_scp() {
    compare(REMOTE_TO_REMOTE, "remote to remote", 2);
}
