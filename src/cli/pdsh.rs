//! pdsh, pdcp, rpdcp and dshbak by program name (links to smssh and smscp) or by
//! `smssh --as NAME` / `smscp --as NAME`: their command lines with their meanings.
//!
//! Owns: pdsh's option letters (getopt's grammar: clustered flags, values attached or next,
//! options end at the first word that is not one), their translation into the command lines
//! of smssh and smscp, whose plans run the work, `-q`'s report, rpdcp's `DIR/file.host`
//! layout, and dshbak. Invariant: every pdsh letter is honoured or refused with one line; none
//! is parsed and dropped. Must not know: sessions, the fan-out or output formats; a run goes
//! through `cli::app` like any smssh or smscp run.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use clap::Parser;

use crate::cli::args::{PdshStyle, Program, ScpArgs, SshArgs};
use crate::config::hostlist;
use crate::config::operand::is_plain_name;
use crate::plan::targets::{self, HostSources};
use crate::term::diag;
use crate::term::escape::visible;

/// The exit status of pdsh, pdcp and dshbak for their own errors (a refused option, a
/// missing argument), as theirs.
const PDSH_FAILURE: u8 = 1;

/// The tools smssh and smscp can stand in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Personality {
    Pdsh,
    Pdcp,
    Rpdcp,
    Dshbak,
}

impl Personality {
    fn named(name: &OsStr) -> Option<Personality> {
        match name.to_str()? {
            "pdsh" => Some(Personality::Pdsh),
            "pdcp" => Some(Personality::Pdcp),
            "rpdcp" => Some(Personality::Rpdcp),
            "dshbak" => Some(Personality::Dshbak),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Personality::Pdsh => "pdsh",
            Personality::Pdcp => "pdcp",
            Personality::Rpdcp => "rpdcp",
            Personality::Dshbak => "dshbak",
        }
    }

    fn copies(self) -> bool {
        matches!(self, Personality::Pdcp | Personality::Rpdcp)
    }
}

/// Every way a pdsh, pdcp, rpdcp or dshbak command line is refused, each one line.
#[derive(Debug, thiserror::Error)]
pub enum PdshError {
    #[error("--as {0}: not a tool smssh stands in for: write pdsh, pdcp, rpdcp or dshbak")]
    UnknownPersonality(String),
    #[error("--as needs a name: pdsh, pdcp, rpdcp or dshbak")]
    NoPersonality,
    #[error("invalid option -- '{0}' (see -h)")]
    UnknownOption(char),
    #[error("option requires an argument -- '{0}'")]
    MissingValue(char),
    #[error("-{letter} {value}: not a number of {what}")]
    NotANumber {
        letter: char,
        value: String,
        what: &'static str,
    },
    #[error("an argument that is not UTF-8: name hosts, files and commands in UTF-8")]
    NotUtf8,
    #[error("-{0}: {1}")]
    Refused(char, &'static str),
    #[error("-R {0}: only the ssh rcmd module is provided (smssh is the ssh); remove -R or write -R ssh")]
    RcmdModule(String),
    #[error(
        "{0}: only the ssh rcmd module is provided (smssh is the ssh): unset it or set it to ssh"
    )]
    RcmdEnvironment(String),
    #[error("-{letter} {term}: {why}")]
    Target {
        letter: char,
        term: String,
        why: &'static str,
    },
    #[error("-{0}: more than one ^FILE: put the hosts in one file")]
    SeveralHostFiles(char),
    #[error("{0}: {1}")]
    ReadHosts(String, String),
    #[error("no target hosts: give -w HOSTS (or set WCOLL to a file of hosts)")]
    NoTargets,
    #[error("no files to copy: give the source files and then the {0}")]
    MissingOperands(&'static str),
    #[error("{host:?}: {tool} writes {layout}, and this host name is not a plain name: name the host differently")]
    HostName {
        host: String,
        tool: &'static str,
        layout: &'static str,
    },
    #[error(transparent)]
    Hosts(#[from] targets::TargetError),
    #[error("{0}")]
    Translate(String),
    #[error("{path}: {why}: rpdcp left the hosts' files in {staging}")]
    Move {
        path: String,
        why: String,
        staging: String,
    },
    #[error("{0}: cannot create a staging directory: {1}")]
    Staging(String, String),
    #[error("Do not specify both -c and -d")]
    CoalesceAndDirectory,
    #[error("Option -f may only be used with -d")]
    ForceWithoutDirectory,
    #[error("Output directory {0} does not exist (add -f to create it)")]
    NoDirectory(String),
    #[error("{0}: {1}")]
    Output(String, String),
    #[error("standard input: {0}")]
    Input(String),
    #[error("standard input: more than {} MiB: dshbak keeps every line in memory; split the input", MAX_DSHBAK_INPUT / (1024 * 1024))]
    InputTooLarge,
}

/// The most bytes dshbak reads from its standard input: it groups every host's lines, so it
/// holds all of them until the end.
const MAX_DSHBAK_INPUT: usize = 1024 * 1024 * 1024;

/// The largest hosts file `-x ^FILE` reads: host names, never data.
const MAX_HOSTS_FILE: u64 = 16 * 1024 * 1024;

/// Runs pdsh, pdcp, rpdcp or dshbak when the program was called by one of those names
/// (`argv[0]`, a link) or with `--as NAME` as its first argument, and returns its exit
/// status; `None` when neither, so that the binary goes on as smssh or smscp. `program` is
/// the binary, for the status of a refused `--as`.
pub fn run_if_personality(program: Program, argv: Vec<OsString>) -> Option<u8> {
    let mut words = argv.into_iter();
    let argv0 = words.next().unwrap_or_default();
    let rest: Vec<OsString> = words.collect();
    let called = Path::new(&argv0).file_name().and_then(Personality::named);
    let (personality, rest) = match called {
        Some(personality) => (Ok(personality), rest),
        None => {
            let first = rest.first()?.to_str()?;
            let name = if first == "--as" {
                rest.get(1).map(|name| name.to_string_lossy().into_owned())
            } else {
                Some(first.strip_prefix("--as=")?.to_owned())
            };
            let skip = if first == "--as" { 2 } else { 1 };
            let personality = match name {
                None => Err(PdshError::NoPersonality),
                Some(name) => {
                    Personality::named(OsStr::new(&name)).ok_or(PdshError::UnknownPersonality(name))
                }
            };
            (personality, rest.into_iter().skip(skip).collect())
        }
    };
    let personality = match personality {
        Ok(personality) => personality,
        Err(err) => {
            let (name, code) = match program {
                Program::Smssh => ("smssh", crate::cli::app::SSH_FAILURE),
                Program::Smscp => ("smscp", crate::cli::app::SCP_FAILURE),
            };
            diag::init(name, 0, false);
            diag::error(err);
            return Some(code);
        }
    };
    // The first name set is the one every line of this run is prefixed with.
    diag::init(personality.name(), 0, false);
    let result = match personality {
        Personality::Dshbak => dshbak(&rest),
        _ => run(personality, &argv0, &rest),
    };
    Some(result.unwrap_or_else(|err| {
        diag::error(err);
        PDSH_FAILURE
    }))
}

/// pdsh's options, as its `-q` shows them.
#[derive(Debug, Default)]
struct Options {
    /// `-w` terms that name hosts (hostlists, `user@` included).
    hosts: Vec<String>,
    /// `-w -TERM` and `-x TERM`.
    exclude: Vec<String>,
    /// `-w ^FILE` (or `WCOLL`).
    hosts_file: Option<PathBuf>,
    user: Option<String>,
    connect_timeout: u64,
    command_timeout: u64,
    fanout: u32,
    labels: bool,
    remote_status: bool,
    fail_fast: bool,
    batch: bool,
    debug: bool,
    query: Option<Query>,
    help: bool,
    version: bool,
    recursive: bool,
    preserve: bool,
    remote_program: Option<String>,
    operands: Vec<String>,
}

/// `-q` (hosts as a hostlist) or `-Q` (one by one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Query {
    Ranged,
    Expanded,
}

/// pdsh's defaults: 10 s to connect, no command limit, 32 hosts at once.
const DEFAULT_CONNECT_TIMEOUT: u64 = 10;
const DEFAULT_FANOUT: u32 = 32;

/// The letters that take a value, for getopt's grammar.
fn takes_value(personality: Personality, letter: char) -> bool {
    matches!(
        letter,
        'w' | 'x' | 'l' | 't' | 'u' | 'f' | 'R' | 'M' | 'g' | 'X' | 'F' | 'j' | 'P' | 'T'
    ) || (personality.copies() && letter == 'e')
}

/// The option letters of a command line, each with its value if it takes one.
type Letters = Vec<(char, Option<String>)>;

/// Splits pdsh's command line into (letter, value) pairs and the operands, as getopt does
/// with pdsh's option string: options end at `--` or at the first word that is not one.
fn getopt(
    personality: Personality,
    words: &[OsString],
) -> Result<(Letters, Vec<String>), PdshError> {
    let mut words = words
        .iter()
        .map(|word| word.to_str().map(str::to_owned).ok_or(PdshError::NotUtf8));
    let mut options = Vec::new();
    let mut operands = Vec::new();
    while let Some(word) = words.next() {
        let word = word?;
        if word == "--" {
            break;
        }
        let Some(cluster) = word.strip_prefix('-').filter(|c| !c.is_empty()) else {
            operands.push(word);
            break;
        };
        for (at, letter) in cluster.char_indices() {
            if !takes_value(personality, letter) {
                options.push((letter, None));
                continue;
            }
            let attached = &cluster[at + letter.len_utf8()..];
            let value = if attached.is_empty() {
                words.next().ok_or(PdshError::MissingValue(letter))??
            } else {
                attached.to_owned()
            };
            options.push((letter, Some(value)));
            break;
        }
    }
    for word in words {
        operands.push(word?);
    }
    Ok((options, operands))
}

/// A number of seconds or hosts.
fn number<T: std::str::FromStr>(
    letter: char,
    value: &str,
    what: &'static str,
) -> Result<T, PdshError> {
    value.trim().parse().map_err(|_| PdshError::NotANumber {
        letter,
        value: value.to_owned(),
        what,
    })
}

/// The rcmd module pdsh would use: only ssh is provided.
fn check_rcmd(name: &str) -> Result<(), PdshError> {
    if name == "ssh" {
        Ok(())
    } else {
        Err(PdshError::RcmdModule(name.to_owned()))
    }
}

/// Parses pdsh's (or pdcp's) options, with the environment variables pdsh reads.
fn parse(
    personality: Personality,
    words: &[OsString],
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Options, PdshError> {
    let mut options = Options {
        connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        fanout: DEFAULT_FANOUT,
        labels: true,
        ..Options::default()
    };
    if let Some(rcmd) = env("PDSH_RCMD_TYPE") {
        if rcmd != "ssh" {
            return Err(PdshError::RcmdEnvironment(format!("PDSH_RCMD_TYPE={rcmd}")));
        }
    }
    if let Some(value) = env("FANOUT") {
        options.fanout = number('f', &value, "hosts (FANOUT)")?;
    }
    if let Some(value) = env("PDSH_CONNECT_TIMEOUT") {
        options.connect_timeout = number('t', &value, "seconds (PDSH_CONNECT_TIMEOUT)")?;
    }
    if let Some(value) = env("PDSH_COMMAND_TIMEOUT") {
        options.command_timeout = number('u', &value, "seconds (PDSH_COMMAND_TIMEOUT)")?;
    }
    let (letters, operands) = getopt(personality, words)?;
    for (letter, value) in letters {
        let value = value.unwrap_or_default();
        match letter {
            'w' => add_targets(&mut options, 'w', &value)?,
            'x' => add_targets(&mut options, 'x', &value)?,
            'l' => options.user = Some(value),
            't' => options.connect_timeout = number(letter, &value, "seconds")?,
            'u' => options.command_timeout = number(letter, &value, "seconds")?,
            'f' => options.fanout = number(letter, &value, "hosts")?,
            'R' => check_rcmd(&value)?,
            'N' => options.labels = false,
            'S' => options.remote_status = true,
            'k' => options.fail_fast = true,
            'b' => options.batch = true,
            'd' => options.debug = true,
            'q' => options.query = Some(Query::Ranged),
            'Q' => options.query = Some(Query::Expanded),
            'h' => options.help = true,
            'V' => options.version = true,
            // Labels are never shortened to the first part of a domain name here.
            'K' => {}
            'r' if personality.copies() => options.recursive = true,
            'p' if personality.copies() => options.preserve = true,
            'e' if personality.copies() => options.remote_program = Some(value),
            'M' => {
                return Err(PdshError::Refused(
                    letter,
                    "misc modules are not provided: remove -M",
                ))
            }
            'L' => {
                return Err(PdshError::Refused(
                    letter,
                    "no modules to list: smssh provides the ssh rcmd module only",
                ))
            }
            'g' | 'X' | 'F' | 'i' | 'a' | 'A' => {
                return Err(PdshError::Refused(
                    letter,
                    "genders is not provided: name the hosts with -w (hostlists, ^FILE or @group)",
                ))
            }
            'j' | 'P' => {
                return Err(PdshError::Refused(
                    letter,
                    "SLURM and Torque jobs are not provided: name the hosts with -w",
                ))
            }
            's' => {
                return Err(PdshError::Refused(
                    letter,
                    "stdout and stderr are always separate here",
                ))
            }
            'T' => {
                return Err(PdshError::Refused(
                    letter,
                    "pdsh's internal test cases are not provided",
                ))
            }
            'y' | 'z' | 'Z' if personality.copies() => {
                return Err(PdshError::Refused(
                    letter,
                    "pdcp's remote server is not needed: smscp copies over SFTP",
                ))
            }
            other => return Err(PdshError::UnknownOption(other)),
        }
    }
    if options.hosts.is_empty() && options.hosts_file.is_none() {
        options.hosts_file = env("WCOLL").map(PathBuf::from);
    }
    options.operands = operands;
    Ok(options)
}

/// Splits a `-w`/`-x` value at its commas outside brackets (a hostlist's own commas stay) and
/// files each term: `-TERM` excludes, `^FILE` reads hosts from a file, `ssh:` is the only rcmd
/// type; regular expressions and `-` (hosts on stdin) are refused.
fn add_targets(options: &mut Options, letter: char, value: &str) -> Result<(), PdshError> {
    let mut depth = 0u32;
    let mut start = 0;
    let mut terms = Vec::new();
    for (at, c) in value.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&value[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    terms.push(&value[start..]);
    let refused = |term: &str, why| PdshError::Target {
        letter,
        term: term.to_owned(),
        why,
    };
    for term in terms.into_iter().filter(|t| !t.is_empty()) {
        let (excluded, body) = match term.strip_prefix('-') {
            Some(rest) if !rest.is_empty() => (true, rest),
            Some(_) => return Err(refused(
                term,
                "hosts on standard input are not supported: list them in a file and write ^FILE",
            )),
            None => (letter == 'x', term),
        };
        let body = match body.split_once(':') {
            Some(("ssh", rest)) => rest,
            Some(("rsh" | "exec" | "mrsh" | "krb4" | "xcpu", _)) => {
                return Err(refused(term, "only the ssh rcmd type is provided"))
            }
            _ => body,
        };
        if body.starts_with('/') {
            return Err(refused(
                term,
                "regular expressions are not supported: write a hostlist",
            ));
        }
        match (body.strip_prefix('^'), excluded) {
            (Some(file), false) => {
                if options.hosts_file.is_some() {
                    return Err(PdshError::SeveralHostFiles(letter));
                }
                options.hosts_file = Some(PathBuf::from(file));
            }
            (Some(file), true) => options.exclude.extend(hosts_file_lines(file)?),
            (None, false) => options.hosts.push(body.to_owned()),
            (None, true) => options.exclude.push(body.to_owned()),
        }
    }
    Ok(())
}

/// The hostlists a hosts file holds, one a line, without comments and blank lines.
fn hosts_file_lines(path: &str) -> Result<Vec<String>, PdshError> {
    let unreadable = |err: std::io::Error| PdshError::ReadHosts(path.to_owned(), err.to_string());
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(unreadable)?
        .take(MAX_HOSTS_FILE)
        .read_to_string(&mut text)
        .map_err(unreadable)?;
    Ok(text
        .lines()
        .map(|line| line.find('#').map_or(line, |at| &line[..at]).trim())
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect())
}

impl Options {
    fn sources(&self) -> HostSources {
        HostSources {
            hostlists: self.hosts.clone(),
            hosts_file: self.hosts_file.clone(),
            ec2_filters: Vec::new(),
            exclude: self.exclude.clone(),
        }
    }

    /// The options smssh and smscp share, in their spelling.
    fn fanout_words(&self) -> Vec<String> {
        let mut words: Vec<String> = self.hosts.iter().map(|h| format!("--hosts={h}")).collect();
        words.extend(self.exclude.iter().map(|x| format!("--exclude={x}")));
        if let Some(file) = &self.hosts_file {
            words.push(format!("--hosts-file={}", file.display()));
        }
        words.push(format!("--parallel={}", self.fanout.max(1)));
        if self.connect_timeout > 0 {
            words.push(format!("--connect-timeout={}", self.connect_timeout));
        }
        if self.command_timeout > 0 {
            words.push(format!("--timeout={}", self.command_timeout));
        }
        if self.fail_fast {
            words.push("--fail-fast".to_owned());
        }
        if self.debug {
            words.push("-v".to_owned());
        }
        words
    }
}

/// pdsh, pdcp or rpdcp.
fn run(personality: Personality, argv0: &OsStr, words: &[OsString]) -> Result<u8, PdshError> {
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let options = parse(personality, words, &env)?;
    if options.help {
        print!("{}", usage(personality));
        return Ok(0);
    }
    if options.version {
        println!(
            "{} {} (smssh as {})\nrcmd modules: ssh (default: ssh)",
            personality.name(),
            env!("CARGO_PKG_VERSION"),
            personality.name()
        );
        return Ok(0);
    }
    let sources = options.sources();
    if !sources.names_hosts() {
        return Err(PdshError::NoTargets);
    }
    if let Some(query) = options.query {
        let hosts = targets::resolve_listed(&sources)?;
        let names: Vec<&str> = hosts.iter().map(|h| h.spec.host.as_str()).collect();
        print!(
            "{}",
            report(personality, argv0, &options, query, &names, &env)
        );
        return Ok(0);
    }
    match personality {
        Personality::Pdsh => pdsh(options, &env),
        _ => copy(personality, options),
    }
}

/// pdsh as a smssh fan-out: `host: line` output, `-N`, `-S` and `-k`.
fn pdsh(options: Options, env: &dyn Fn(&str) -> Option<String>) -> Result<u8, PdshError> {
    // Without a command, pdsh's interactive mode is smssh's shell, which groups each line's
    // answers and exits with the last line's status: -N and -S would change nothing there.
    if options.operands.is_empty() {
        let shell = "without a command this is smssh's interactive shell, which groups the answers: give a command";
        if !options.labels {
            return Err(PdshError::Refused('N', shell));
        }
        if options.remote_status {
            return Err(PdshError::Refused('S', shell));
        }
    }
    let mut words = vec!["pdsh".to_owned()];
    words.extend(options.fanout_words());
    if let Some(user) = &options.user {
        words.push(format!("-l{user}"));
    }
    words.push("--".to_owned());
    let mut command = options.operands.clone();
    // DSHPATH becomes the remote PATH, set before the command as pdsh does.
    if let (Some(path), Some(first)) = (env("DSHPATH"), command.first_mut()) {
        *first = format!("PATH={path};{first}");
    }
    words.extend(command);
    let mut args = SshArgs::try_parse_from(&words).map_err(translate_error)?;
    args.pdsh = Some(PdshStyle {
        labels: options.labels,
        remote_status: options.remote_status,
        batch: options.batch,
    });
    Ok(crate::cli::app::smssh(args))
}

/// pdcp and rpdcp as a smscp fan-out.
fn copy(personality: Personality, options: Options) -> Result<u8, PdshError> {
    let Some((target, sources)) = options
        .operands
        .split_last()
        .filter(|(_, sources)| !sources.is_empty())
    else {
        return Err(PdshError::MissingOperands(
            if personality == Personality::Rpdcp {
                "local directory"
            } else {
                "remote destination"
            },
        ));
    };
    let mut words = vec![personality.name().to_owned()];
    words.extend(options.fanout_words());
    if let Some(user) = &options.user {
        // scp's -l is a bandwidth limit; the login is the User option, as -l sets it for ssh.
        words.push(format!("-oUser={user}"));
    }
    if options.recursive {
        words.push("-r".to_owned());
    }
    if options.preserve {
        words.push("-p".to_owned());
    }
    words.push("--".to_owned());
    words.extend(sources.iter().cloned());
    if personality == Personality::Pdcp {
        words.push(target.clone());
        let args = ScpArgs::try_parse_from(&words).map_err(translate_error)?;
        return Ok(crate::cli::app::smscp(args));
    }
    // rpdcp: each host's files are gathered into a staging directory beside their
    // destination, as STAGING/<host>/file, then renamed to DIR/file.<host>, so that no
    // half-copied file ever carries a final name.
    let hosts = targets::resolve_listed(&options.sources())?;
    if let Some(bad) = hosts.iter().find(|h| !is_plain_name(&h.spec.host)) {
        return Err(PdshError::HostName {
            host: bad.spec.host.clone(),
            tool: "rpdcp",
            layout: "DIR/file.<host>",
        });
    }
    let dir = PathBuf::from(target);
    let mut staging = Staging::create(&dir)?;
    words.push(staging.path.display().to_string());
    let mut args = ScpArgs::try_parse_from(&words).map_err(translate_error)?;
    args.gather_from_hosts = true;
    let code = crate::cli::app::smscp(args);
    staging.move_into(&dir)?;
    Ok(code)
}

/// clap's refusal of a translated command line (a value out of smssh's range, such as
/// `-f 5000`), as its first line.
fn translate_error(err: clap::Error) -> PdshError {
    let text = err.to_string();
    let first = text.lines().next().unwrap_or_default();
    PdshError::Translate(first.trim_start_matches("error: ").to_owned())
}

/// rpdcp's staging directory: removed with what is left in it when dropped, unless a file
/// could not be moved out of it (then it is kept, and named, so that nothing copied is lost).
struct Staging {
    path: PathBuf,
    keep: bool,
}

impl Staging {
    fn create(dir: &Path) -> Result<Staging, PdshError> {
        let name = format!(
            ".rpdcp-{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        );
        let path = dir.join(name);
        std::fs::create_dir(&path)
            .map_err(|err| PdshError::Staging(dir.display().to_string(), err.to_string()))?;
        Ok(Staging { path, keep: false })
    }

    /// Renames every `STAGING/<host>/<name>` to `DIR/<name>.<host>`, replacing a file of that
    /// name as rpdcp does. On a failure the staging directory is kept.
    fn move_into(&mut self, dir: &Path) -> Result<(), PdshError> {
        let moved = self.move_all(dir);
        self.keep = moved.is_err();
        moved
    }

    fn move_all(&self, dir: &Path) -> Result<(), PdshError> {
        let fail = |path: &Path, err: std::io::Error| PdshError::Move {
            path: path.display().to_string(),
            why: err.to_string(),
            staging: self.path.display().to_string(),
        };
        let hosts = std::fs::read_dir(&self.path).map_err(|err| fail(&self.path, err))?;
        for host in hosts {
            let host = host.map_err(|err| fail(&self.path, err))?;
            let host_name = host.file_name();
            for entry in std::fs::read_dir(host.path()).map_err(|err| fail(&host.path(), err))? {
                let entry = entry.map_err(|err| fail(&host.path(), err))?;
                let mut name = entry.file_name();
                name.push(".");
                name.push(&host_name);
                let to = dir.join(name);
                // A directory of the same name (an earlier `rpdcp -r`) is replaced whole.
                if entry.path().is_dir() && to.is_dir() && !to.is_symlink() {
                    std::fs::remove_dir_all(&to).map_err(|err| fail(&to, err))?;
                }
                std::fs::rename(entry.path(), &to).map_err(|err| fail(&to, err))?;
            }
        }
        Ok(())
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        // Unless a move failed, what is left is the emptied host directories (and, after
        // Ctrl-C, what the run had not finished), which go.
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// What `-q` (or `-Q`) prints: pdsh's report of its options and the target hosts.
fn report(
    personality: Personality,
    argv0: &OsStr,
    options: &Options,
    query: Query,
    hosts: &[&str],
    env: &dyn Fn(&str) -> Option<String>,
) -> String {
    let yes_no = |on: bool| if on { "Yes" } else { "No" };
    let shown = |text: &str| visible(text).into_owned();
    let program = std::path::absolute(argv0)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| argv0.to_string_lossy().into_owned());
    let mut text = String::new();
    if personality.copies() {
        let (target, sources) = options
            .operands
            .split_last()
            .map_or((None, &[][..]), |(t, s)| (Some(t.as_str()), s));
        text.push_str("-- PCP-specific options --\n");
        if !sources.is_empty() {
            text.push_str(&format!("Infile(s)\t\t{}\n", shown(&sources.join(", "))));
        }
        text.push_str(&format!(
            "Outfile\t\t\t{}\n",
            shown(target.unwrap_or("none"))
        ));
        text.push_str(&format!("Recursive\t\t{}\n", yes_no(options.recursive)));
        text.push_str(&format!(
            "Preserve mod time/mode\t{}\n",
            yes_no(options.preserve)
        ));
    } else {
        let command = options.operands.join(" ");
        text.push_str("-- DSH-specific options --\n");
        text.push_str("Separate stderr/stdout\tYes\n");
        let path = env("DSHPATH").map(|p| format!("PATH={p};"));
        text.push_str(&format!(
            "Path prepended to cmd\t{}\n",
            shown(path.as_deref().unwrap_or("none"))
        ));
        text.push_str("Appended to cmd         none\n");
        let command = if command.is_empty() { "none" } else { &command };
        text.push_str(&format!("Command:\t\t{}\n", shown(command)));
    }
    text.push_str(&format!("Full program pathname\t{}\n", shown(&program)));
    let remote = options.remote_program.as_deref().unwrap_or(&program);
    text.push_str(&format!("Remote program path\t{}\n", shown(remote)));
    let uid = nix::unistd::getuid();
    let local_user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map_or_else(|| uid.to_string(), |u| u.name);
    text.push_str("\n-- Generic options --\n");
    text.push_str(&format!("Local username\t\t{}\n", shown(&local_user)));
    text.push_str(&format!("Local uid     \t\t{uid}\n"));
    let remote_user = options.user.as_deref().unwrap_or(&local_user);
    text.push_str(&format!("Remote username\t\t{}\n", shown(remote_user)));
    text.push_str("Rcmd type\t\tssh\n");
    text.push_str(&format!(
        "one ^C will kill pdsh   {}\n",
        yes_no(options.batch)
    ));
    text.push_str(&format!(
        "Connect timeout (secs)\t{}\n",
        options.connect_timeout
    ));
    text.push_str(&format!(
        "Command timeout (secs)\t{}\n",
        options.command_timeout
    ));
    text.push_str(&format!("Fanout\t\t\t{}\n", options.fanout));
    text.push_str(&format!(
        "Display hostname labels\t{}\n",
        yes_no(options.labels)
    ));
    text.push_str(&format!("Debugging       \t{}\n", yes_no(options.debug)));
    text.push_str("\n-- Target nodes --\n");
    let nodes = match query {
        Query::Ranged => hostlist::compress(hosts),
        Query::Expanded => hosts.join(","),
    };
    text.push_str(&shown(&nodes));
    text.push('\n');
    text
}

/// `-h`: the options this personality takes, with pdsh's wording where it applies.
fn usage(personality: Personality) -> String {
    let name = personality.name();
    let mut text = match personality {
        Personality::Pdsh => format!("Usage: {name} [-options] command ...\n"),
        Personality::Rpdcp => format!("Usage: {name} [-options] src [src2...] dir\n"),
        _ => format!("Usage: {name} [-options] src [src2...] dest\n"),
    };
    if personality == Personality::Pdsh {
        text.push_str("-S                return largest of remote command return values\n");
    }
    text.push_str(
        "-h                output usage menu and quit\n\
         -V                output version information and quit\n\
         -q                list the option settings and quit\n\
         -Q                like -q, with every host named\n\
         -b                disable ^C status feature (batch mode)\n\
         -d                more diagnostics on stderr (as smssh -v)\n\
         -k                fail fast: at the first failed host stop every other one\n\
         -l user           log in as user\n\
         -t seconds        set connect timeout (default is 10 sec)\n\
         -u seconds        set the limit for each host (no default)\n\
         -f n              use fanout of n nodes (default 32)\n\
         -w host,host,...  set target node list (hostlists, -host, ^file, @group)\n\
         -x host,host,...  set node exclusion list\n\
         -R ssh            the rcmd module: ssh is the only one\n",
    );
    if personality == Personality::Pdsh {
        text.push_str("-N                disable hostname: labels on output lines\n");
    } else {
        text.push_str(
            "-r                copy directories recursively\n\
             -p                preserve modification time and modes\n\
             -e path           the remote pdcp path (not needed: smscp copies over SFTP)\n",
        );
    }
    text
}

/// dshbak's options.
#[derive(Debug, Default)]
struct DshbakOptions {
    coalesce: bool,
    directory: Option<PathBuf>,
    force: bool,
}

/// dshbak: pdsh's `host: line` output on stdin, grouped by host under a header (or, with
/// `-c`, hosts with identical output under one header naming them all as a hostlist; with
/// `-d DIR`, each host's lines in `DIR/host`).
fn dshbak(words: &[OsString]) -> Result<u8, PdshError> {
    let mut options = DshbakOptions::default();
    let mut words = words.iter();
    while let Some(word) = words.next() {
        let word = word.to_str().ok_or(PdshError::NotUtf8)?;
        let Some(cluster) = word
            .strip_prefix('-')
            .filter(|c| !c.is_empty() && *c != "-")
        else {
            return Err(PdshError::Refused(
                '-',
                "dshbak reads standard input and takes no file names: dshbak [-c] [-d DIR [-f]] <FILE",
            ));
        };
        for (at, letter) in cluster.char_indices() {
            match letter {
                'c' => options.coalesce = true,
                'f' => options.force = true,
                'h' => {
                    print!(
                        "Usage: dshbak [OPTION]...\n -h       Display this help message\n -c       Coalesce identical output from hosts\n -d DIR   Send output to files in DIR, one file per host\n -f       With -d, force creation of DIR\n"
                    );
                    return Ok(0);
                }
                'd' => {
                    let attached = &cluster[at + 1..];
                    let value = if attached.is_empty() {
                        let next = words.next().ok_or(PdshError::MissingValue('d'))?;
                        next.to_str().ok_or(PdshError::NotUtf8)?.to_owned()
                    } else {
                        attached.to_owned()
                    };
                    options.directory = Some(PathBuf::from(value));
                    break;
                }
                other => return Err(PdshError::UnknownOption(other)),
            }
        }
    }
    if options.coalesce && options.directory.is_some() {
        return Err(PdshError::CoalesceAndDirectory);
    }
    if options.force && options.directory.is_none() {
        return Err(PdshError::ForceWithoutDirectory);
    }
    let lines = read_tagged(std::io::stdin().lock())?;
    match &options.directory {
        Some(dir) => write_per_host(dir, options.force, &lines)?,
        None => {
            let text = if options.coalesce {
                coalesced(&lines)
            } else {
                per_host(&lines)
            };
            let mut out = std::io::stdout().lock();
            // A closed stdout (`| head`) ends the output, as for any filter.
            let _ = out.write_all(&text).and_then(|()| out.flush());
        }
    }
    Ok(0)
}

/// Each host's lines in input order, from `host: line` input, as dshbak reads it: the host
/// is the first word before a colon, one space after the colon is dropped; a line with no
/// host, or without its newline at the end of the input, is skipped.
fn read_tagged(mut input: impl BufRead) -> Result<BTreeMap<String, Vec<Vec<u8>>>, PdshError> {
    let mut lines: BTreeMap<String, Vec<Vec<u8>>> = BTreeMap::new();
    let mut total = 0usize;
    let mut line = Vec::new();
    loop {
        line.clear();
        // At most one byte past the limit is read, however long the line.
        let room = (MAX_DSHBAK_INPUT - total + 1) as u64;
        let read = (&mut input)
            .take(room)
            .read_until(b'\n', &mut line)
            .map_err(|err| PdshError::Input(err.to_string()))?;
        total += read;
        if total > MAX_DSHBAK_INPUT {
            return Err(PdshError::InputTooLarge);
        }
        let Some(whole) = line.strip_suffix(b"\n") else {
            // The end of the input, or a last line without its newline.
            break;
        };
        if let Some((host, data)) = split_tag(whole) {
            lines.entry(host).or_default().push(data.to_vec());
        }
    }
    Ok(lines)
}

/// `(host, data)` of one line (without its newline), or None when it has no tag.
fn split_tag(line: &[u8]) -> Option<(String, &[u8])> {
    let start = line.iter().position(|b| !b.is_ascii_whitespace())?;
    let line = &line[start..];
    let colon = line.iter().position(|b| *b == b':')?;
    let tag = std::str::from_utf8(&line[..colon]).ok()?.trim_end();
    if tag.is_empty() || tag.contains(char::is_whitespace) {
        return None;
    }
    let data = &line[colon + 1..];
    Some((tag.to_owned(), data.strip_prefix(b" ").unwrap_or(data)))
}

/// Hosts in dshbak's order: by the number their name ends with, then by name.
fn dshbak_order<'a>(hosts: impl Iterator<Item = &'a String>) -> Vec<&'a String> {
    let mut hosts: Vec<&String> = hosts.collect();
    let number = |host: &str| {
        let digits = host.len() - host.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        host[host.len() - digits..].parse::<u64>().unwrap_or(0)
    };
    hosts.sort_by(|a, b| number(a).cmp(&number(b)).then_with(|| a.cmp(b)));
    hosts
}

/// One block: the header naming the hosts, then their lines.
fn block(text: &mut Vec<u8>, hosts: &str, lines: &[Vec<u8>]) {
    let divider = b"----------------\n";
    text.extend_from_slice(divider);
    text.extend_from_slice(visible(hosts).as_bytes());
    text.push(b'\n');
    text.extend_from_slice(divider);
    for line in lines {
        text.extend_from_slice(line);
        text.push(b'\n');
    }
}

fn per_host(lines: &BTreeMap<String, Vec<Vec<u8>>>) -> Vec<u8> {
    let mut text = Vec::new();
    for host in dshbak_order(lines.keys()) {
        block(&mut text, host, &lines[host]);
    }
    text
}

/// `-c`: hosts with identical output under one header, in the order of their first host.
fn coalesced(lines: &BTreeMap<String, Vec<Vec<u8>>>) -> Vec<u8> {
    let mut groups: Vec<(&Vec<Vec<u8>>, Vec<&str>)> = Vec::new();
    for host in dshbak_order(lines.keys()) {
        let output = &lines[host];
        match groups.iter_mut().find(|(o, _)| *o == output) {
            Some((_, hosts)) => hosts.push(host),
            None => groups.push((output, vec![host])),
        }
    }
    let mut text = Vec::new();
    for (output, hosts) in groups {
        block(&mut text, &hostlist::compress(&hosts), output);
    }
    text
}

/// `-d DIR`: each host's lines in `DIR/host`, written to a temporary file and renamed.
fn write_per_host(
    dir: &Path,
    force: bool,
    lines: &BTreeMap<String, Vec<Vec<u8>>>,
) -> Result<(), PdshError> {
    let failed = |path: &Path, err: std::io::Error| {
        PdshError::Output(path.display().to_string(), err.to_string())
    };
    if force && !dir.is_dir() {
        std::fs::create_dir_all(dir).map_err(|err| failed(dir, err))?;
    }
    if !dir.is_dir() {
        return Err(PdshError::NoDirectory(dir.display().to_string()));
    }
    for (host, host_lines) in lines {
        if !is_plain_name(host) {
            return Err(PdshError::HostName {
                host: host.clone(),
                tool: "dshbak -d",
                layout: "DIR/<host>",
            });
        }
        let path = dir.join(host);
        let temporary = dir.join(format!(".{host}.dshbak-{}", std::process::id()));
        let written = std::fs::File::create(&temporary).and_then(|mut file| {
            for line in host_lines {
                file.write_all(line)?;
                file.write_all(b"\n")?;
            }
            file.sync_all()
        });
        if let Err(err) = written.and_then(|()| std::fs::rename(&temporary, &path)) {
            let _ = std::fs::remove_file(&temporary);
            return Err(failed(&path, err));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn getopt_clusters_and_stops_at_the_command() {
        let options = parse(
            Personality::Pdsh,
            &words(&[
                "-Sw",
                "h[1-3],-h2",
                "-x",
                "h3",
                "-l",
                "bob",
                "-f4",
                "-N",
                "uptime",
                "-k",
            ]),
            &no_env,
        )
        .expect("parses");
        assert!(options.remote_status && !options.labels && !options.fail_fast);
        assert_eq!(options.hosts, ["h[1-3]"]);
        assert_eq!(options.exclude, ["h2", "h3"]);
        assert_eq!(options.user.as_deref(), Some("bob"));
        assert_eq!(options.fanout, 4);
        assert_eq!(options.operands, ["uptime", "-k"]);
        assert_eq!(options.connect_timeout, DEFAULT_CONNECT_TIMEOUT);
    }

    #[test]
    fn refused_letters_say_why_in_one_line() {
        for (line, expected) in [
            (&["-R", "exec", "-w", "h", "x"][..], "-R exec"),
            (&["-g", "compute", "x"], "genders"),
            (&["-w", "/node.*/", "x"], "regular expressions"),
            (&["-w", "-", "x"], "standard input"),
            (&["-w", "rsh:h1", "x"], "ssh rcmd"),
            (&["-Z", "x"], "invalid option -- 'Z'"),
            (&["-w"], "requires an argument -- 'w'"),
            (&["-f", "many", "-w", "h", "x"], "not a number"),
        ] {
            let err = parse(Personality::Pdsh, &words(line), &no_env)
                .err()
                .unwrap_or_else(|| panic!("{line:?} was accepted"));
            let text = err.to_string();
            assert!(text.contains(expected), "{line:?}: {text}");
            assert!(!text.contains('\n'), "{text}");
        }
        // -r and -p are pdcp's; pdsh does not know them.
        assert!(parse(Personality::Pdsh, &words(&["-r", "x"]), &no_env).is_err());
        let pdcp = parse(
            Personality::Pdcp,
            &words(&["-rp", "-w", "h", "a", "b"]),
            &no_env,
        )
        .expect("pdcp takes -r and -p");
        assert!(pdcp.recursive && pdcp.preserve);
    }

    #[test]
    fn the_environment_gives_defaults_and_wcoll_names_hosts() {
        let env = |name: &str| match name {
            "WCOLL" => Some("/etc/hosts.list".to_owned()),
            "FANOUT" => Some("8".to_owned()),
            "PDSH_COMMAND_TIMEOUT" => Some("30".to_owned()),
            _ => None,
        };
        let options = parse(Personality::Pdsh, &words(&["-f", "3", "uptime"]), &env).expect("ok");
        assert_eq!(options.hosts_file, Some(PathBuf::from("/etc/hosts.list")));
        assert_eq!((options.fanout, options.command_timeout), (3, 30));
        let ssh_only = |name: &str| (name == "PDSH_RCMD_TYPE").then(|| "rsh".to_owned());
        assert!(parse(Personality::Pdsh, &words(&["-w", "h", "x"]), &ssh_only).is_err());
    }

    #[test]
    fn dshbak_groups_lines_by_host_and_coalesces_identical_outputs() {
        let input = b"h2: b\nh10: a\n  h1: a\nno tag here\nh1:a2\nh10: a2\nh2: \nh3: partial";
        let lines = read_tagged(&input[..]).expect("reads");
        assert_eq!(lines["h1"], [b"a".to_vec(), b"a2".to_vec()]);
        assert_eq!(lines["h2"], [b"b".to_vec(), Vec::new()]);
        // The last line has no newline: dshbak skips it.
        assert!(!lines.contains_key("h3"));
        let text = String::from_utf8(coalesced(&lines)).expect("UTF-8");
        assert_eq!(
            text,
            "----------------\nh[1,10]\n----------------\na\na2\n\
             ----------------\nh2\n----------------\nb\n\n"
        );
        let text = String::from_utf8(per_host(&lines)).expect("UTF-8");
        assert!(text.starts_with("----------------\nh1\n----------------\na\na2\n"));
    }

    #[test]
    fn the_personality_comes_from_the_program_name_or_as() {
        let named = Path::new("/usr/local/bin/pdcp")
            .file_name()
            .and_then(Personality::named);
        assert_eq!(named, Some(Personality::Pdcp));
        assert_eq!(Personality::named(OsStr::new("smssh")), None);
        assert_eq!(
            run_if_personality(Program::Smssh, words(&["smssh", "-w", "h", "uptime"])),
            None
        );
    }
}
