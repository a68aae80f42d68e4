//! The packages an operator installs: scripts/package.sh builds the .deb, the .rpm and the
//! rotation function's zip; the .deb is installed with the real dpkg and its smssh and man
//! page are used from the installed files; rpm reads the .rpm. One test does it all in order,
//! since the script's release builds are the cost (see the README, "Install from a package").

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{assert_success, describe, run, run_with_timeout, stdout};

/// A cold run installs the packaging tools and makes two release builds on two shared cores.
const PACKAGE_TIMEOUT: Duration = Duration::from_secs(75 * 60);

/// The files both packages must install (man pages may be compressed by the .deb).
const INSTALLED: &[&str] = &[
    "/usr/bin/smssh",
    "/usr/bin/smscp",
    "/usr/share/man/man1/smssh.1",
    "/usr/share/man/man1/smscp.1",
    "/usr/share/bash-completion/completions/smssh",
    "/usr/share/bash-completion/completions/smscp",
    "/usr/share/fish/vendor_completions.d/smssh.fish",
    "/usr/share/fish/vendor_completions.d/smscp.fish",
    "/usr/share/doc/smssh/config.toml.example",
];

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The one file in `dir` whose name ends with `suffix`.
fn only(dir: &Path, suffix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|err| panic!("{}: {err}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.to_string_lossy().ends_with(suffix))
        .collect();
    assert_eq!(
        found.len(),
        1,
        "{suffix} files in {}: {found:?}",
        dir.display()
    );
    found.into_iter().next().unwrap()
}

fn lists(listing: &str, path: &str) -> bool {
    listing.lines().any(|line| {
        let line = line.trim_end();
        line.ends_with(path) || line.ends_with(&format!("{path}.gz"))
    })
}

/// Removes the installed package however the test ends, so that a failure leaves no smssh
/// in /usr/bin behind.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new("dpkg").args(["--remove", "smssh"]).output();
    }
}

#[test]
fn package_sh_builds_a_deb_that_installs_and_runs_an_rpm_and_the_function_zip() {
    let output = run_with_timeout(
        Command::new("bash").arg(repo().join("scripts/package.sh")),
        PACKAGE_TIMEOUT,
    )
    .unwrap_or_else(|partial| panic!("scripts/package.sh did not finish\n{}", describe(&partial)));
    assert_success(&output);
    let packages = repo().join("target/packages");
    let deb = only(&packages, ".deb");
    let rpm = only(&packages, ".rpm");
    let zip = only(&packages, ".zip");
    assert!(!repo().join("target/packages.partial").exists());

    // The .deb's contents and control fields, as dpkg-deb reads them.
    let contents = stdout(&run(Command::new("dpkg-deb").arg("--contents").arg(&deb)));
    for path in INSTALLED {
        assert!(
            lists(&contents, path),
            "{path} missing from the .deb:\n{contents}"
        );
    }
    assert!(
        lists(&contents, "/usr/share/zsh/vendor-completions/_smssh"),
        "{contents}"
    );
    let control = stdout(&run(Command::new("dpkg-deb").arg("--info").arg(&deb)));
    assert!(control.contains("Package: smssh"), "{control}");
    assert!(
        control.contains(&format!("Version: {}", env!("CARGO_PKG_VERSION"))),
        "{control}"
    );
    assert!(control.contains("Depends: libc6"), "{control}");

    // Installed with the real dpkg on this machine (CI runs as root), then used from there.
    let uid = stdout(&run(Command::new("id").arg("-u")));
    assert_eq!(
        uid.trim(),
        "0",
        "dpkg -i needs root: run the tests as root, as CI does"
    );
    let installed = Installed;
    assert_success(&run(Command::new("dpkg").arg("--install").arg(&deb)));
    let version = run(Command::new("/usr/bin/smssh").arg("--version"));
    assert_success(&version);
    assert_eq!(
        stdout(&version).trim(),
        format!("smssh {}", env!("CARGO_PKG_VERSION"))
    );
    let smscp = run(Command::new("/usr/bin/smscp").arg("--help"));
    assert!(
        stdout(&smscp).starts_with("smscp: copy files"),
        "{}",
        describe(&smscp)
    );
    // Stripped: no symbol table left (readelf is in binutils, which the Rust linker needs).
    let sections = stdout(&run(Command::new("readelf").args([
        "-S",
        "-W",
        "/usr/bin/smssh",
    ])));
    assert!(!sections.contains(".symtab"), "{sections}");
    let page = run(Command::new("man").args(["-w", "smscp"]));
    assert_success(&page);
    assert!(
        stdout(&page).starts_with("/usr/share/man/man1/smscp.1"),
        "{}",
        describe(&page)
    );
    let manual = run(Command::new("man")
        .arg("smscp")
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80"));
    assert_success(&manual);
    assert!(
        stdout(&manual).contains("smscp - "),
        "{}",
        describe(&manual)
    );
    drop(installed);
    assert!(
        !Path::new("/usr/bin/smssh").exists(),
        "dpkg --remove left /usr/bin/smssh"
    );

    // The .rpm, read by rpm itself.
    let files = stdout(&run(Command::new("rpm").arg("-qlp").arg(&rpm)));
    for path in INSTALLED {
        assert!(
            lists(&files, path),
            "{path} missing from the .rpm:\n{files}"
        );
    }
    assert!(
        lists(&files, "/usr/share/zsh/site-functions/_smssh"),
        "{files}"
    );
    let info = stdout(&run(Command::new("rpm").arg("-qip").arg(&rpm)));
    for field in [
        "Name        : smssh".to_owned(),
        format!("Version     : {}", env!("CARGO_PKG_VERSION")),
        "License     : Apache-2.0".to_owned(),
        "Architecture: x86_64".to_owned(),
    ] {
        assert!(info.contains(&field), "{field} not in rpm -qip:\n{info}");
    }

    // The zip Lambda runs: an executable `bootstrap` at its root.
    let listing = run(Command::new("python3")
        .args([
            "-c",
            "import sys, zipfile\nfor i in zipfile.ZipFile(sys.argv[1]).infolist():\n    print(i.filename, oct((i.external_attr >> 16) & 0o777))",
        ])
        .arg(&zip));
    assert_success(&listing);
    let entries = stdout(&listing);
    assert!(
        entries
            .lines()
            .any(|line| line.starts_with("bootstrap 0o7")),
        "no executable bootstrap in {}:\n{entries}",
        zip.display()
    );
}
