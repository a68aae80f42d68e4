//! What a new user reads first: `--help` of each program and subcommand, the man pages, the
//! README's exit statuses and the completion scripts, all checked against each other through
//! the built binaries and a real bash.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use common::{assert_success, binary_path, run, stdout};

/// The subcommands `smssh --help` must name (the issue asks for each one, by name).
const SUBCOMMANDS: &[&str] = &["rotate", "agent", "check", "completions"];

fn help(program: &str, words: &[&str]) -> String {
    let output = run(Command::new(binary_path(program))
        .args(words)
        .arg("--help")
        .env_remove("SMSSH_SECRET_ID"));
    assert_success(&output);
    stdout(&output)
}

/// The long options that a `--help` text lists: the definition lines (indented less than
/// the descriptions, starting with a dash), not the options named inside descriptions.
fn long_options(help: &str) -> BTreeSet<String> {
    let mut options = BTreeSet::new();
    for line in help.lines() {
        let text = line.trim_start();
        if line.len() - text.len() >= 10 || !text.starts_with('-') {
            continue;
        }
        // The definition ends where the description starts (two spaces), if on this line.
        let definition = text.split("  ").next().unwrap_or(text);
        for (at, _) in definition.match_indices("--") {
            let name: String = definition[at + 2..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '-')
                .collect();
            if !name.is_empty() {
                options.insert(format!("--{name}"));
            }
        }
    }
    options
}

/// A man page's text with roff's escapes for dashes and fonts taken out, so that
/// `\-\-secret\-id` reads `--secret-id`.
fn man_text(page: &str) -> String {
    let source =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("man").join(page))
            .unwrap_or_else(|err| panic!("man/{page}: {err}"));
    let mut text = source
        .replace("\\-", "-")
        .replace("\\&", "")
        .replace("\\c", "");
    for font in [
        "\\fB", "\\fI", "\\fR", "\\fP", "\\f(CW", "\\f[B]", "\\f[I]", "\\f[R]",
    ] {
        text = text.replace(font, "");
    }
    text
}

/// Whether `text` names `option` as a whole word (`--keep` is not found in `--keep-alive`).
fn names_option(text: &str, option: &str) -> bool {
    text.match_indices(option).any(|(at, _)| {
        !text[at + option.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

#[test]
fn every_long_option_help_lists_is_in_the_man_page() {
    let mut missing = Vec::new();
    let mut checked = 0;
    let mut pages = vec![("smscp", vec![], "smscp.1"), ("smssh", vec![], "smssh.1")];
    for name in SUBCOMMANDS {
        pages.push(("smssh", vec![*name], "smssh.1"));
    }
    for (program, words, page) in pages {
        let text = man_text(page);
        let options = long_options(&help(program, &words));
        assert!(
            options.contains("--help"),
            "{program} {words:?} --help lists no long options the test can read"
        );
        for option in options {
            checked += 1;
            if !names_option(&text, &option) {
                missing.push(format!(
                    "{program} {} {option} (man/{page})",
                    words.join(" ")
                ));
            }
        }
    }
    assert!(
        checked > 40,
        "only {checked} options found in the --help texts"
    );
    assert!(
        missing.is_empty(),
        "options --help lists but the man page does not name:\n{}",
        missing.join("\n")
    );
}

#[test]
fn each_help_opens_with_its_own_purpose_and_a_usage_that_reads_right() {
    let smscp = help("smscp", &[]);
    let first = smscp.lines().next().unwrap_or_default();
    assert!(first.starts_with("smscp: copy files"), "{smscp}");
    assert!(
        smscp.contains("Usage: smscp [OPTIONS] SOURCE... TARGET\n"),
        "{smscp}"
    );
    assert!(
        !smscp.contains("<SOURCE... TARGET> <SOURCE... TARGET>"),
        "{smscp}"
    );

    let smssh = help("smssh", &[]);
    assert!(smssh.starts_with("smssh: run commands over SSH"), "{smssh}");
    // The subcommands section lists each one with its purpose, not the package description.
    let section = smssh
        .split_once("Subcommands")
        .map(|(_, rest)| rest)
        .unwrap_or_else(|| panic!("smssh --help names no subcommands:\n{smssh}"));
    for name in SUBCOMMANDS {
        let line = section
            .lines()
            .find(|line| line.trim_start().starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("smssh --help does not list {name}:\n{smssh}"));
        assert!(line.split_whitespace().count() > 3, "{line}");
        let own = help("smssh", &[name]);
        assert!(own.starts_with(&format!("smssh {name}: ")), "{own}");
        assert!(own.contains(&format!("Usage: smssh {name} ")), "{own}");
    }
    // No program shows the package's description in place of its own purpose.
    let description = "scp and ssh for a cluster whose key pair lives";
    assert!(!smscp.contains(description) && !smssh.contains(description));
}

/// The numbers in the EXIT STATUS section of a man page.
fn man_exit_statuses(page: &str) -> BTreeSet<u32> {
    let text = man_text(page);
    let section = text
        .split_once(".SH EXIT STATUS")
        .and_then(|(_, rest)| rest.split("\n.SH ").next())
        .unwrap_or_else(|| panic!("man/{page} has no EXIT STATUS section"));
    numbers(section)
}

fn numbers(text: &str) -> BTreeSet<u32> {
    text.split(|c: char| !c.is_ascii_digit())
        .filter_map(|word| word.parse().ok())
        .collect()
}

/// The statuses the README's "Exit status" table gives `program` (rows whose first cell
/// names it, subcommands included).
fn readme_exit_statuses(program: &str) -> BTreeSet<u32> {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let section = readme
        .split_once("\n## Exit status\n")
        .and_then(|(_, rest)| rest.split("\n## ").next())
        .expect("README.md has no \"## Exit status\" section");
    let mut statuses = BTreeSet::new();
    for row in section.lines().filter(|line| line.starts_with('|')) {
        let cells: Vec<&str> = row.split('|').map(str::trim).collect();
        if cells.len() > 3 && cells[1].trim_matches('`').starts_with(program) {
            statuses.extend(numbers(cells[2]));
        }
    }
    statuses
}

#[test]
fn the_man_pages_and_the_readme_give_the_same_exit_statuses() {
    for (program, page) in [("smscp", "smscp.1"), ("smssh", "smssh.1")] {
        let man = man_exit_statuses(page);
        let readme = readme_exit_statuses(program);
        assert!(
            man.contains(&0) || man.contains(&255),
            "man/{page}: {man:?}"
        );
        assert_eq!(
            man, readme,
            "{program}: man/{page}'s EXIT STATUS against the README's table"
        );
    }
}

/// Completes `line` (the cursor at its end) with the bash script `smssh completions bash
/// PROGRAM` prints, loaded into a real bash as bash-completion would load it.
fn bash_complete(program: &str, line: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join(program);
    let output = run(Command::new(binary_path("smssh")).args(["completions", "bash", program]));
    assert_success(&output);
    std::fs::write(&script, &output.stdout).unwrap();
    let driver = r#"
        source "$1"
        read -r -a COMP_WORDS <<<"$2"
        # A line ending in a space completes a new, empty word.
        case $2 in *" ") COMP_WORDS+=("") ;; esac
        COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
        COMP_LINE=$2
        COMP_POINT=${#2}
        # The function complete -F registered for the program, as bash would call it.
        fn=$(complete -p "$3" | sed -n 's/.*-F \([^ ]*\).*/\1/p')
        [ -n "$fn" ] || { echo "no completion function for $3" >&2; exit 3; }
        "$fn" "$3" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
        printf '%s\n' "${COMPREPLY[@]}"
    "#;
    let output = run(Command::new("bash")
        .args(["--norc", "--noprofile", "-c", driver, "bash"])
        .arg(&script)
        .args([line, program]));
    assert_success(&output);
    stdout(&output).lines().map(str::to_owned).collect()
}

#[test]
fn the_bash_completion_completes_flags_and_subcommands_in_a_real_bash() {
    assert_eq!(bash_complete("smscp", "smscp --secret-i"), ["--secret-id"]);
    let hosts = bash_complete("smssh", "smssh --hosts-f");
    assert_eq!(hosts, ["--hosts-file"]);
    let words = bash_complete("smssh", "smssh rot");
    assert!(words.contains(&"rotate".to_owned()), "{words:?}");
    let rotate = bash_complete("smssh", "smssh rotate --dep");
    assert_eq!(rotate, ["--deploy"]);
}
