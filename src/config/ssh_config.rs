//! OpenSSH client configuration: `~/.ssh/config`, `-F FILE` and `-o` options.
//!
//! This module owns the ssh_config(5) syntax (keywords, `=` separators,
//! quoting, comments, `Host` blocks, `Match all`, `Include`) and the rule that
//! the first value obtained for an option wins. It turns the handful of
//! options smssh implements into typed [`HostSettings`] and accepts, without
//! acting on them, the other keywords OpenSSH knows, so users' existing
//! configuration files keep working.
//!
//! Invariants:
//! - Every value is validated when the file is parsed, whether or not its
//!   `Host` block ever matches, as OpenSSH does; `resolve` cannot fail.
//! - `~` and `%d` in known_hosts paths are expanded at parse time with the
//!   home directory the caller passes to `parse`, `load`, `load_optional` or
//!   `apply_option`; the same home also anchors relative `Include` paths
//!   (`~/.ssh/`). `HostName` is stored with its `%h` token unexpanded until
//!   [`HostSettings::effective_hostname`], because `-o HostName=...` is
//!   parsed before the alias is known to this module.
//!
//! This module must not know about known_hosts contents, SSH connections,
//! AWS, or the command-line parser: it receives option strings and paths and
//! returns settings or typed errors naming `file:line`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::pattern::{pattern_list_matches, wildcard_match};

/// Errors from reading or parsing configuration.
#[derive(Debug, thiserror::Error)]
pub enum SshConfigError {
    /// A configuration file that must be read could not be.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A line or `-o` option is invalid; `location` is `file:line` or
    /// `-o OPTION`.
    #[error("{location}: {problem}")]
    Invalid {
        location: String,
        problem: ConfigProblem,
    },
}

/// What is wrong with one configuration line or `-o` option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// A keyword OpenSSH does not know either.
    #[error("Bad configuration option: {0}")]
    BadOption(String),
    /// A keyword OpenSSH knows but smssh does not implement, given with `-o`.
    #[error(
        "unsupported option \"{0}\": smssh implements only HostName, User, Port, \
         ConnectTimeout, BatchMode, StrictHostKeyChecking, UserKnownHostsFile, \
         GlobalKnownHostsFile, Compression, ServerAliveInterval, ServerAliveCountMax \
         and LogLevel (its key comes from Secrets Manager)"
    )]
    UnsupportedOption(String),
    /// `Host`, `Match` or `Include` given with `-o`.
    #[error("{0} is not allowed as a command-line option")]
    NotACommandLineOption(String),
    #[error("missing argument for {0}")]
    MissingArgument(String),
    #[error("too many arguments for {0}")]
    ExtraArguments(String),
    #[error("unterminated quote")]
    UnterminatedQuote,
    #[error("invalid value \"{value}\" for {keyword}: expected {expected}")]
    InvalidValue {
        keyword: String,
        value: String,
        expected: &'static str,
    },
    #[error("Match is unsupported except \"Match all\"")]
    UnsupportedMatch,
    #[error("Include nested more than {MAX_INCLUDE_DEPTH} levels deep")]
    IncludeTooDeep,
    #[error("Include {0}: wildcards are supported only in the last path component")]
    IncludeWildcardDirectory(String),
}

/// `StrictHostKeyChecking` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrictHostKeyChecking {
    /// `yes` / `true`: refuse unknown and changed host keys.
    Yes,
    /// `accept-new`: record unknown keys, refuse changed ones.
    AcceptNew,
    /// `no` / `off` / `false`: record unknown keys; changed keys still fail.
    No,
    /// `ask`: ask the user about unknown keys.
    Ask,
}

/// `LogLevel` values, ordered from least to most verbose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Quiet,
    Fatal,
    Error,
    Info,
    Verbose,
    /// `DEBUG` and `DEBUG1`, which OpenSSH treats as the same level.
    Debug1,
    Debug2,
    Debug3,
}

/// The options smssh implements, each `None` until some source sets it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HostSettings {
    /// Raw `HostName`; may contain `%h` and `%%`, which
    /// [`HostSettings::effective_hostname`] expands.
    pub hostname: Option<String>,
    pub user: Option<String>,
    pub port: Option<u16>,
    /// `Duration::ZERO` means "no timeout", as `ConnectTimeout 0` does in
    /// OpenSSH.
    pub connect_timeout: Option<Duration>,
    pub batch_mode: Option<bool>,
    pub strict_host_key_checking: Option<StrictHostKeyChecking>,
    /// `~` already expanded; `none` gives an empty list.
    pub user_known_hosts_files: Option<Vec<PathBuf>>,
    /// `~` already expanded; `none` gives an empty list.
    pub global_known_hosts_files: Option<Vec<PathBuf>>,
    pub compression: Option<bool>,
    /// `Duration::ZERO` disables keepalives, as in OpenSSH.
    pub server_alive_interval: Option<Duration>,
    pub server_alive_count_max: Option<u32>,
    pub log_level: Option<LogLevel>,
    /// Settings smssh does not implement whose absence would change where it connects or
    /// whom it trusts, each keyword with its first value (`none` included, since a first
    /// `none` overrides any later value as in OpenSSH).
    pub unimplemented: Vec<UnimplementedSetting>,
}

/// A setting that changes the destination or the trust decision (`ProxyJump`,
/// `ProxyCommand`, `HostKeyAlias`, `RevokedHostKeys`, `KnownHostsCommand`): smssh does not act
/// on it yet, and ignoring it would connect somewhere else or trust something else than
/// OpenSSH would, so a host it applies to is refused rather than reached directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnimplementedSetting {
    pub keyword: &'static str,
    pub value: String,
}

/// The keywords of [`UnimplementedSetting`], lowercased, with their usual spelling.
const UNIMPLEMENTED_KEYWORDS: &[(&str, &str)] = &[
    ("proxyjump", "ProxyJump"),
    ("proxycommand", "ProxyCommand"),
    ("hostkeyalias", "HostKeyAlias"),
    ("revokedhostkeys", "RevokedHostKeys"),
    ("knownhostscommand", "KnownHostsCommand"),
];

impl HostSettings {
    /// The first unimplemented setting that is in effect for this host (`none` is not).
    pub fn unimplemented_in_effect(&self) -> Option<&UnimplementedSetting> {
        self.unimplemented
            .iter()
            .find(|s| !s.value.eq_ignore_ascii_case("none"))
    }

    /// Applies one `-o` option (`Key=Value` or `Key Value`). Like OpenSSH,
    /// an option already set keeps its first value, so `-o` options must be
    /// applied before [`HostSettings::fill_from`] with the config file.
    /// `home` expands `~` in known_hosts paths.
    pub fn apply_option(&mut self, option: &str, home: &Path) -> Result<(), SshConfigError> {
        let invalid = |problem| SshConfigError::Invalid {
            location: format!("-o {option}"),
            problem,
        };
        let Some((keyword, args)) = tokenize(option).map_err(invalid)? else {
            // OpenSSH ignores an empty or comment-only -o as well.
            return Ok(());
        };
        let lower = keyword.to_ascii_lowercase();
        if matches!(lower.as_str(), "host" | "match" | "include") {
            return Err(invalid(ConfigProblem::NotACommandLineOption(keyword)));
        }
        match parse_directive(&lower, &keyword, &args, home).map_err(invalid)? {
            Parsed::Set(Directive::Unimplemented(_)) | Parsed::Ignored => {
                return Err(invalid(ConfigProblem::UnsupportedOption(keyword)))
            }
            Parsed::Set(directive) => self.set_if_unset(directive),
            Parsed::Nothing => {}
            Parsed::Unknown => return Err(invalid(ConfigProblem::BadOption(keyword))),
        }
        Ok(())
    }

    /// Fills every field that is still `None` from `other`, so values that
    /// were obtained earlier keep precedence.
    pub fn fill_from(&mut self, other: &HostSettings) {
        fn fill<T: Clone>(mine: &mut Option<T>, theirs: &Option<T>) {
            if mine.is_none() {
                mine.clone_from(theirs);
            }
        }
        fill(&mut self.hostname, &other.hostname);
        fill(&mut self.user, &other.user);
        fill(&mut self.port, &other.port);
        fill(&mut self.connect_timeout, &other.connect_timeout);
        fill(&mut self.batch_mode, &other.batch_mode);
        fill(
            &mut self.strict_host_key_checking,
            &other.strict_host_key_checking,
        );
        fill(
            &mut self.user_known_hosts_files,
            &other.user_known_hosts_files,
        );
        fill(
            &mut self.global_known_hosts_files,
            &other.global_known_hosts_files,
        );
        fill(&mut self.compression, &other.compression);
        fill(
            &mut self.server_alive_interval,
            &other.server_alive_interval,
        );
        fill(
            &mut self.server_alive_count_max,
            &other.server_alive_count_max,
        );
        fill(&mut self.log_level, &other.log_level);
        for setting in &other.unimplemented {
            self.set_if_unset(Directive::Unimplemented(setting.clone()));
        }
    }

    /// The host name to connect to: `HostName` with `%h` replaced by
    /// `host_alias` and `%%` by `%`, or the alias itself when `HostName` is
    /// unset.
    pub fn effective_hostname(&self, host_alias: &str) -> String {
        let Some(raw) = &self.hostname else {
            return host_alias.to_string();
        };
        let mut out = String::with_capacity(raw.len());
        let mut chars = raw.chars();
        while let Some(c) = chars.next() {
            if c != '%' {
                out.push(c);
                continue;
            }
            // Parsing accepted only `%h` and `%%`, so any other character
            // here cannot occur; copying it keeps this function total.
            match chars.next() {
                Some('h') => out.push_str(host_alias),
                Some(other) => out.push(other),
                None => out.push('%'),
            }
        }
        out
    }

    fn set_if_unset(&mut self, directive: Directive) {
        fn set<T>(slot: &mut Option<T>, value: T) {
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        match directive {
            Directive::HostName(v) => set(&mut self.hostname, v),
            Directive::User(v) => set(&mut self.user, v),
            Directive::Port(v) => set(&mut self.port, v),
            Directive::ConnectTimeout(v) => set(&mut self.connect_timeout, v),
            Directive::BatchMode(v) => set(&mut self.batch_mode, v),
            Directive::StrictHostKeyChecking(v) => set(&mut self.strict_host_key_checking, v),
            Directive::UserKnownHostsFiles(v) => set(&mut self.user_known_hosts_files, v),
            Directive::GlobalKnownHostsFiles(v) => set(&mut self.global_known_hosts_files, v),
            Directive::Compression(v) => set(&mut self.compression, v),
            Directive::ServerAliveInterval(v) => set(&mut self.server_alive_interval, v),
            Directive::ServerAliveCountMax(v) => set(&mut self.server_alive_count_max, v),
            Directive::LogLevel(v) => set(&mut self.log_level, v),
            Directive::Unimplemented(setting) => {
                if !self
                    .unimplemented
                    .iter()
                    .any(|s| s.keyword == setting.keyword)
                {
                    self.unimplemented.push(setting);
                }
            }
        }
    }
}

/// OpenSSH's limit on nested `Include`s, which also stops include loops.
const MAX_INCLUDE_DEPTH: usize = 16;

/// A parsed configuration: the implemented directives in file order, each
/// with the `Host` pattern lists that must all match for it to apply (more
/// than one when an `Include` sits inside a `Host` block).
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    directives: Vec<Scoped>,
}

#[derive(Debug, Clone)]
struct Scoped {
    conditions: Vec<Vec<String>>,
    directive: Directive,
}

#[derive(Debug, Clone, PartialEq)]
enum Directive {
    HostName(String),
    User(String),
    Port(u16),
    ConnectTimeout(Duration),
    BatchMode(bool),
    StrictHostKeyChecking(StrictHostKeyChecking),
    UserKnownHostsFiles(Vec<PathBuf>),
    GlobalKnownHostsFiles(Vec<PathBuf>),
    Compression(bool),
    ServerAliveInterval(Duration),
    ServerAliveCountMax(u32),
    LogLevel(LogLevel),
    Unimplemented(UnimplementedSetting),
}

/// State shared across a file and the files it includes.
struct ParseState<'a> {
    home: &'a Path,
    /// Keyword patterns from `IgnoreUnknown`. OpenSSH scopes this option
    /// like any other; we apply it to every later line in file order, which
    /// accepts a superset of what OpenSSH accepts and never rejects a file
    /// OpenSSH reads.
    ignore_unknown: Vec<String>,
    directives: Vec<Scoped>,
}

impl SshConfig {
    /// Parses configuration text; `path` names it in errors and `home`
    /// expands `~` and anchors relative `Include` paths at `home/.ssh`.
    pub fn parse(text: &str, path: &Path, home: &Path) -> Result<SshConfig, SshConfigError> {
        let mut state = ParseState {
            home,
            ignore_unknown: Vec::new(),
            directives: Vec::new(),
        };
        parse_text(text, path, &[], 0, &mut state)?;
        Ok(SshConfig {
            directives: state.directives,
        })
    }

    /// Loads a file that must exist, such as the argument of `-F`.
    pub fn load(path: &Path, home: &Path) -> Result<SshConfig, SshConfigError> {
        let text = fs::read_to_string(path).map_err(|source| SshConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        SshConfig::parse(&text, path, home)
    }

    /// Loads a file that may be absent, such as `~/.ssh/config`; absence
    /// gives an empty configuration, other read errors are reported.
    pub fn load_optional(path: &Path, home: &Path) -> Result<SshConfig, SshConfigError> {
        match fs::read_to_string(path) {
            Ok(text) => SshConfig::parse(&text, path, home),
            Err(e) if is_absent(&e) => Ok(SshConfig::default()),
            Err(source) => Err(SshConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// The settings that apply to `host_alias` (the name the user typed),
    /// first obtained value winning.
    pub fn resolve(&self, host_alias: &str) -> HostSettings {
        let mut settings = HostSettings::default();
        for scoped in &self.directives {
            if scoped.conditions.iter().all(|patterns| {
                pattern_list_matches(patterns.iter().map(String::as_str), host_alias)
            }) {
                settings.set_if_unset(scoped.directive.clone());
            }
        }
        settings
    }
}

fn is_absent(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
    )
}

fn parse_text(
    text: &str,
    path: &Path,
    outer: &[Vec<String>],
    depth: usize,
    state: &mut ParseState<'_>,
) -> Result<(), SshConfigError> {
    // Host patterns of the block we are in within this file; an included
    // file starts outside any block of its own.
    let mut block: Option<Vec<String>> = None;
    for (index, line) in text.lines().enumerate() {
        let invalid = |problem| SshConfigError::Invalid {
            location: format!("{}:{}", path.display(), index + 1),
            problem,
        };
        let Some((keyword, args)) = tokenize(line).map_err(invalid)? else {
            continue;
        };
        let lower = keyword.to_ascii_lowercase();
        let conditions = || {
            let mut c = outer.to_vec();
            c.extend(block.clone());
            c
        };
        match lower.as_str() {
            "host" => {
                if args.is_empty() {
                    return Err(invalid(ConfigProblem::MissingArgument(keyword)));
                }
                block = Some(args);
            }
            "match" => {
                if args.len() == 1 && args[0].eq_ignore_ascii_case("all") {
                    block = Some(vec!["*".to_string()]);
                } else {
                    return Err(invalid(ConfigProblem::UnsupportedMatch));
                }
            }
            "include" => {
                if args.is_empty() {
                    return Err(invalid(ConfigProblem::MissingArgument(keyword)));
                }
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(invalid(ConfigProblem::IncludeTooDeep));
                }
                let conditions = conditions();
                for arg in &args {
                    for file in expand_include(arg, state.home).map_err(invalid)? {
                        let text = match fs::read_to_string(&file) {
                            Ok(text) => text,
                            // OpenSSH silently skips Include targets that
                            // do not exist.
                            Err(e) if is_absent(&e) => continue,
                            Err(source) => return Err(SshConfigError::Read { path: file, source }),
                        };
                        parse_text(&text, &file, &conditions, depth + 1, state)?;
                    }
                }
            }
            "ignoreunknown" => {
                if args.is_empty() {
                    return Err(invalid(ConfigProblem::MissingArgument(keyword)));
                }
                for arg in &args {
                    state
                        .ignore_unknown
                        .extend(arg.split(',').map(str::to_ascii_lowercase));
                }
            }
            _ => match parse_directive(&lower, &keyword, &args, state.home).map_err(invalid)? {
                Parsed::Set(directive) => state.directives.push(Scoped {
                    conditions: conditions(),
                    directive,
                }),
                Parsed::Nothing | Parsed::Ignored => {}
                Parsed::Unknown => {
                    if !pattern_list_matches(
                        state.ignore_unknown.iter().map(String::as_str),
                        &lower,
                    ) {
                        return Err(invalid(ConfigProblem::BadOption(keyword)));
                    }
                }
            },
        }
    }
    Ok(())
}

/// Resolves one `Include` argument to the files it names, sorted as
/// glob(3) sorts them.
fn expand_include(arg: &str, home: &Path) -> Result<Vec<PathBuf>, ConfigProblem> {
    let expanded = expand_tilde(arg, home, "Include")?;
    let path = if expanded.is_absolute() {
        expanded
    } else {
        home.join(".ssh").join(expanded)
    };
    let has_wildcard = |s: &str| s.contains(['*', '?']);
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Ok(vec![path]);
    };
    if has_wildcard(&dir.to_string_lossy()) {
        return Err(ConfigProblem::IncludeWildcardDirectory(arg.to_string()));
    }
    let name = name.to_string_lossy();
    if !has_wildcard(&name) {
        return Ok(vec![path]);
    }
    // An unreadable or missing directory matches nothing, as glob(3) does.
    let Ok(entries) = fs::read_dir(dir) else {
        return Ok(Vec::new());
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .filter(|entry| {
            let file_name = entry.file_name();
            let file_name = file_name.to_string_lossy();
            // glob(3) lets a wildcard match a leading dot only when the
            // pattern itself starts with one.
            (name.starts_with('.') || !file_name.starts_with('.'))
                && wildcard_match(&name, &file_name)
        })
        .map(|entry| entry.path())
        .collect();
    files.sort();
    Ok(files)
}

/// The outcome of interpreting one keyword line.
enum Parsed {
    /// An implemented option with a valid value.
    Set(Directive),
    /// An implemented option whose value means "leave unset" (`none` for a
    /// timeout).
    Nothing,
    /// A keyword OpenSSH knows that smssh does not implement.
    Ignored,
    /// A keyword OpenSSH does not know.
    Unknown,
}

fn parse_directive(
    lower: &str,
    keyword: &str,
    args: &[String],
    home: &Path,
) -> Result<Parsed, ConfigProblem> {
    let single = || -> Result<&str, ConfigProblem> {
        match args {
            [] => Err(ConfigProblem::MissingArgument(keyword.to_string())),
            [one] if one.is_empty() => Err(ConfigProblem::MissingArgument(keyword.to_string())),
            [one] => Ok(one.as_str()),
            _ => Err(ConfigProblem::ExtraArguments(keyword.to_string())),
        }
    };
    let bad = |value: &str, expected| ConfigProblem::InvalidValue {
        keyword: keyword.to_string(),
        value: value.to_string(),
        expected,
    };
    let flag = || -> Result<bool, ConfigProblem> {
        let v = single()?;
        // OpenSSH's client accepts true/false as synonyms of yes/no.
        match v.to_ascii_lowercase().as_str() {
            "yes" | "true" => Ok(true),
            "no" | "false" => Ok(false),
            _ => Err(bad(v, "yes or no")),
        }
    };
    let time = || -> Result<Option<Duration>, ConfigProblem> {
        let v = single()?;
        if v == "none" {
            return Ok(None);
        }
        parse_time(v)
            .map(Some)
            .ok_or_else(|| bad(v, "a time such as 30, 30s, 5m or 1h30m"))
    };
    let files = || -> Result<Vec<PathBuf>, ConfigProblem> {
        if args.is_empty() || args.iter().any(String::is_empty) {
            return Err(ConfigProblem::MissingArgument(keyword.to_string()));
        }
        if args.len() == 1 && args[0] == "none" {
            return Ok(Vec::new());
        }
        args.iter().map(|a| expand_path(a, home, keyword)).collect()
    };
    let directive = match lower {
        "hostname" => {
            let v = single()?;
            if !percent_tokens_ok(v, &['h', '%']) {
                return Err(bad(v, "a host name using no % tokens other than %h and %%"));
            }
            Directive::HostName(v.to_string())
        }
        "user" => Directive::User(single()?.to_string()),
        "port" => {
            let v = single()?;
            match v.parse::<u16>() {
                Ok(port) if port != 0 && v.bytes().all(|b| b.is_ascii_digit()) => {
                    Directive::Port(port)
                }
                _ => return Err(bad(v, "a port number from 1 to 65535")),
            }
        }
        "connecttimeout" => match time()? {
            Some(d) => Directive::ConnectTimeout(d),
            None => return Ok(Parsed::Nothing),
        },
        "serveraliveinterval" => match time()? {
            Some(d) => Directive::ServerAliveInterval(d),
            None => return Ok(Parsed::Nothing),
        },
        "serveralivecountmax" => {
            let v = single()?;
            match v.parse::<u32>() {
                Ok(n) if v.bytes().all(|b| b.is_ascii_digit()) => Directive::ServerAliveCountMax(n),
                _ => return Err(bad(v, "a non-negative whole number")),
            }
        }
        "batchmode" => Directive::BatchMode(flag()?),
        "compression" => Directive::Compression(flag()?),
        "stricthostkeychecking" => {
            let v = single()?;
            let value = match v.to_ascii_lowercase().as_str() {
                "yes" | "true" => StrictHostKeyChecking::Yes,
                "accept-new" => StrictHostKeyChecking::AcceptNew,
                "no" | "off" | "false" => StrictHostKeyChecking::No,
                "ask" => StrictHostKeyChecking::Ask,
                _ => return Err(bad(v, "yes, accept-new, no, off or ask")),
            };
            Directive::StrictHostKeyChecking(value)
        }
        "loglevel" => {
            let v = single()?;
            let level = match v.to_ascii_uppercase().as_str() {
                "QUIET" => LogLevel::Quiet,
                "FATAL" => LogLevel::Fatal,
                "ERROR" => LogLevel::Error,
                "INFO" => LogLevel::Info,
                "VERBOSE" => LogLevel::Verbose,
                "DEBUG" | "DEBUG1" => LogLevel::Debug1,
                "DEBUG2" => LogLevel::Debug2,
                "DEBUG3" => LogLevel::Debug3,
                _ => {
                    return Err(bad(
                        v,
                        "QUIET, FATAL, ERROR, INFO, VERBOSE, DEBUG, DEBUG1, DEBUG2 or DEBUG3",
                    ))
                }
            };
            Directive::LogLevel(level)
        }
        "userknownhostsfile" => Directive::UserKnownHostsFiles(files()?),
        "globalknownhostsfile" => Directive::GlobalKnownHostsFiles(files()?),
        other => match UNIMPLEMENTED_KEYWORDS.iter().find(|(k, _)| *k == other) {
            Some((_, spelling)) => Directive::Unimplemented(UnimplementedSetting {
                keyword: spelling,
                value: args.join(" "),
            }),
            None if IGNORED_KEYWORDS.contains(&other) => return Ok(Parsed::Ignored),
            None => return Ok(Parsed::Unknown),
        },
    };
    Ok(Parsed::Set(directive))
}

/// Keywords OpenSSH's client accepts that smssh does not act on, lowercased.
/// A config file may use them freely; `-o` rejects them so that a user is
/// not misled into thinking they took effect. Deprecated keywords that
/// OpenSSH still accepts are included because old configs carry them, and
/// `UseKeychain` because Apple's OpenSSH accepts it and macOS configs use it.
const IGNORED_KEYWORDS: &[&str] = &[
    "addkeystoagent",
    "addressfamily",
    "bindaddress",
    "bindinterface",
    "canonicaldomains",
    "canonicalizefallbacklocal",
    "canonicalizehostname",
    "canonicalizemaxdots",
    "canonicalizepermittedcnames",
    "casignaturealgorithms",
    "certificatefile",
    "challengeresponseauthentication",
    "channeltimeout",
    "checkhostip",
    "cipher",
    "ciphers",
    "clearallforwardings",
    "compressionlevel",
    "connectionattempts",
    "controlmaster",
    "controlpath",
    "controlpersist",
    "dsaauthentication",
    "dynamicforward",
    "enableescapecommandline",
    "enablesshkeysign",
    "escapechar",
    "exitonforwardfailure",
    "fingerprinthash",
    "forkafterauthentication",
    "forwardagent",
    "forwardx11",
    "forwardx11timeout",
    "forwardx11trusted",
    "gatewayports",
    "globalknownhostsfile2",
    "gssapiauthentication",
    "gssapiclientidentity",
    "gssapidelegatecredentials",
    "gssapikexalgorithms",
    "gssapikeyexchange",
    "gssapirenewalforcesrekey",
    "gssapiserveridentity",
    "gssapitrustdns",
    "hashknownhosts",
    "hostbasedacceptedalgorithms",
    "hostbasedauthentication",
    "hostbasedkeytypes",
    "hostkeyalgorithms",
    "identitiesonly",
    "identityagent",
    "identityfile",
    "ipqos",
    "kbdinteractiveauthentication",
    "kbdinteractivedevices",
    "kexalgorithms",
    "keepalive",
    "localcommand",
    "localforward",
    "macs",
    "nohostauthenticationforlocalhost",
    "numberofpasswordprompts",
    "obscurekeystroketiming",
    "passwordauthentication",
    "permitlocalcommand",
    "permitremoteopen",
    "pkcs11provider",
    "preferredauthentications",
    "protocol",
    "proxyusefdpass",
    "pubkeyacceptedalgorithms",
    "pubkeyacceptedkeytypes",
    "pubkeyauthentication",
    "refuseconnection",
    "rekeylimit",
    "remotecommand",
    "remoteforward",
    "requesttty",
    "requiredrsasize",
    "rhostsrsaauthentication",
    "rsaauthentication",
    "securitykeyprovider",
    "sendenv",
    "sessiontype",
    "setenv",
    "smartcarddevice",
    "stdinnull",
    "streamlocalbindmask",
    "streamlocalbindunlink",
    "syslogfacility",
    "tag",
    "tcpkeepalive",
    "tunnel",
    "tunneldevice",
    "updatehostkeys",
    "usekeychain",
    "useprivilegedport",
    "useroaming",
    "userknownhostsfile2",
    "verifyhostkeydns",
    "versionaddendum",
    "visualhostkey",
    "warnweakcrypto",
    "xauthlocation",
];

/// Splits a line into its keyword and arguments the way OpenSSH does:
/// the keyword ends at whitespace or `=`; arguments are separated by
/// whitespace, may be quoted with `"` or `'`, and a backslash escapes a
/// quote, a backslash or (outside quotes) a space; an argument starting
/// with `#` begins a comment. Returns `None` for blank and comment lines.
fn tokenize(line: &str) -> Result<Option<(String, Vec<String>)>, ConfigProblem> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    if keyword.is_empty() {
        return Err(ConfigProblem::BadOption(line.to_string()));
    }
    let rest = rest.trim_start();
    let rest = rest.strip_prefix('=').unwrap_or(rest);

    let mut args = Vec::new();
    let mut chars = rest.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        match chars.peek() {
            None | Some('#') => break,
            Some(_) => {}
        }
        let mut arg = String::new();
        let mut quote: Option<char> = None;
        while let Some(c) = chars.next() {
            match (c, quote) {
                ('\\', _) => match chars.peek() {
                    Some(&next @ ('"' | '\'' | '\\')) => {
                        arg.push(next);
                        chars.next();
                    }
                    Some(&' ') if quote.is_none() => {
                        arg.push(' ');
                        chars.next();
                    }
                    _ => arg.push('\\'),
                },
                (q, Some(open)) if q == open => quote = None,
                ('"' | '\'', None) => quote = Some(c),
                (w, None) if w.is_whitespace() => break,
                _ => arg.push(c),
            }
        }
        if quote.is_some() {
            return Err(ConfigProblem::UnterminatedQuote);
        }
        args.push(arg);
    }
    Ok(Some((keyword.to_string(), args)))
}

/// Expands `~` / `~/` to `home`, as OpenSSH's tilde_expand does for the
/// current user. `~user` forms are refused because resolving other users'
/// homes is not this module's business.
fn expand_tilde(arg: &str, home: &Path, keyword: &str) -> Result<PathBuf, ConfigProblem> {
    if arg == "~" {
        return Ok(home.to_path_buf());
    }
    if let Some(rest) = arg.strip_prefix("~/") {
        return Ok(home.join(rest));
    }
    if arg.starts_with('~') {
        return Err(ConfigProblem::InvalidValue {
            keyword: keyword.to_string(),
            value: arg.to_string(),
            expected: "a path starting with ~/ (other users' ~user is not supported)",
        });
    }
    Ok(PathBuf::from(arg))
}

/// Expands a known_hosts path: `~`, plus the `%d` (home) and `%%` tokens.
/// Other tokens would need connection details this module does not have,
/// so they are refused rather than left as literal text that would silently
/// name a file that does not exist.
fn expand_path(arg: &str, home: &Path, keyword: &str) -> Result<PathBuf, ConfigProblem> {
    if !percent_tokens_ok(arg, &['d', '%']) || arg.contains("${") {
        return Err(ConfigProblem::InvalidValue {
            keyword: keyword.to_string(),
            value: arg.to_string(),
            expected: "a path using no % tokens other than %d and %%, and no ${VARIABLE}",
        });
    }
    let home_str = home.to_string_lossy();
    let mut out = String::with_capacity(arg.len());
    let mut chars = arg.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // percent_tokens_ok guarantees a `d` or `%` follows.
        match chars.next() {
            Some('d') => out.push_str(&home_str),
            Some(other) => out.push(other),
            None => out.push('%'),
        }
    }
    expand_tilde(&out, home, keyword)
}

/// True if every `%` in `value` starts one of the `allowed` tokens.
fn percent_tokens_ok(value: &str, allowed: &[char]) -> bool {
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c == '%' && !chars.next().is_some_and(|t| allowed.contains(&t)) {
            return false;
        }
    }
    true
}

/// OpenSSH's convtime: one or more `<number>[smhdwSMHDW]` groups, a bare
/// number meaning seconds, capped like OpenSSH at `i32::MAX` seconds.
fn parse_time(value: &str) -> Option<Duration> {
    if value.is_empty() {
        return None;
    }
    let mut total: u64 = 0;
    let mut chars = value.chars().peekable();
    while chars.peek().is_some() {
        let mut number: u64 = 0;
        let mut digits = 0;
        while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
            number = number.checked_mul(10)?.checked_add(u64::from(d))?;
            digits += 1;
            chars.next();
        }
        if digits == 0 {
            return None;
        }
        let multiplier = match chars.next() {
            None | Some('s' | 'S') => 1,
            Some('m' | 'M') => 60,
            Some('h' | 'H') => 3600,
            Some('d' | 'D') => 86_400,
            Some('w' | 'W') => 604_800,
            Some(_) => return None,
        };
        total = total.checked_add(number.checked_mul(multiplier)?)?;
    }
    if total > i32::MAX as u64 {
        return None;
    }
    Some(Duration::from_secs(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOME: &str = "/home/u";

    fn parse(text: &str) -> Result<SshConfig, SshConfigError> {
        SshConfig::parse(text, Path::new("cfg"), Path::new(HOME))
    }

    fn err_text(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    #[test]
    fn tokenize_table() {
        // Expected keyword and arguments, or None for a line with neither.
        type Tokens<'a> = Option<(&'a str, Vec<&'a str>)>;
        let cases: Vec<(&str, Tokens)> = vec![
            ("", None),
            ("   # comment", None),
            ("Port 22", Some(("Port", vec!["22"]))),
            ("Port=22", Some(("Port", vec!["22"]))),
            ("  Port = 22  ", Some(("Port", vec!["22"]))),
            ("\tPort\t22", Some(("Port", vec!["22"]))),
            ("User \"a b\"", Some(("User", vec!["a b"]))),
            ("User 'a b' c", Some(("User", vec!["a b", "c"]))),
            ("User a\\ b", Some(("User", vec!["a b"]))),
            ("User a\"b c\"d", Some(("User", vec!["ab cd"]))),
            ("User \"\"", Some(("User", vec![""]))),
            ("Port 22 # trailing", Some(("Port", vec!["22"]))),
            ("User a#b", Some(("User", vec!["a#b"]))),
            ("Host a b !c", Some(("Host", vec!["a", "b", "!c"]))),
            ("SendEnv=LANG=C", Some(("SendEnv", vec!["LANG=C"]))),
        ];
        for (line, want) in cases {
            let got = tokenize(line).unwrap();
            let want =
                want.map(|(k, a)| (k.to_string(), a.into_iter().map(String::from).collect()));
            assert_eq!(got, want, "{line:?}");
        }
        assert_eq!(
            tokenize("User \"a b"),
            Err(ConfigProblem::UnterminatedQuote)
        );
    }

    #[test]
    fn resolve_first_value_wins_and_host_matching() {
        let cfg = parse(
            "# global options come before any Host line\n\
             User global\n\
             \n\
             Host web-* !web-db\n\
             \x20 HostName %h.internal.example\n\
             \x20 Port 2222\n\
             \x20 User web\n\
             Host web-db\n\
             \x20 HostName=10.0.0.9\n\
             host DB?\n\
             \x20 port 2200\n\
             Host *\n\
             \x20 Port 22\n\
             \x20 ConnectTimeout 10\n\
             \x20 ForwardAgent yes\n\
             \x20 IdentityFile ~/.ssh/id_ed25519\n\
             Match all\n\
             \x20 Compression yes\n",
        )
        .unwrap();
        let cases: Vec<(&str, Option<&str>, Option<u16>, &str)> = vec![
            (
                "web-1",
                Some("global"),
                Some(2222),
                "web-1.internal.example",
            ),
            ("web-db", Some("global"), Some(22), "10.0.0.9"),
            ("DB1", Some("global"), Some(2200), "DB1"),
            ("db1", Some("global"), Some(22), "db1"),
            ("other", Some("global"), Some(22), "other"),
        ];
        for (alias, user, port, hostname) in cases {
            let s = cfg.resolve(alias);
            assert_eq!(s.user.as_deref(), user, "{alias}");
            assert_eq!(s.port, port, "{alias}");
            assert_eq!(s.effective_hostname(alias), hostname, "{alias}");
            assert_eq!(s.connect_timeout, Some(Duration::from_secs(10)), "{alias}");
            assert_eq!(s.compression, Some(true), "{alias}");
        }
    }

    #[test]
    fn values_table() {
        let home = Path::new(HOME);
        let cases: Vec<(&str, HostSettings)> = vec![
            (
                "BatchMode yes",
                HostSettings {
                    batch_mode: Some(true),
                    ..Default::default()
                },
            ),
            (
                "BatchMode FALSE",
                HostSettings {
                    batch_mode: Some(false),
                    ..Default::default()
                },
            ),
            (
                "Compression no",
                HostSettings {
                    compression: Some(false),
                    ..Default::default()
                },
            ),
            (
                "ConnectTimeout 1m30s",
                HostSettings {
                    connect_timeout: Some(Duration::from_secs(90)),
                    ..Default::default()
                },
            ),
            (
                "ConnectTimeout 0",
                HostSettings {
                    connect_timeout: Some(Duration::ZERO),
                    ..Default::default()
                },
            ),
            ("ConnectTimeout none", HostSettings::default()),
            (
                "ServerAliveInterval 2h",
                HostSettings {
                    server_alive_interval: Some(Duration::from_secs(7200)),
                    ..Default::default()
                },
            ),
            (
                "ServerAliveCountMax 0",
                HostSettings {
                    server_alive_count_max: Some(0),
                    ..Default::default()
                },
            ),
            (
                "StrictHostKeyChecking accept-new",
                HostSettings {
                    strict_host_key_checking: Some(StrictHostKeyChecking::AcceptNew),
                    ..Default::default()
                },
            ),
            (
                "StrictHostKeyChecking off",
                HostSettings {
                    strict_host_key_checking: Some(StrictHostKeyChecking::No),
                    ..Default::default()
                },
            ),
            (
                "StrictHostKeyChecking Yes",
                HostSettings {
                    strict_host_key_checking: Some(StrictHostKeyChecking::Yes),
                    ..Default::default()
                },
            ),
            (
                "StrictHostKeyChecking ask",
                HostSettings {
                    strict_host_key_checking: Some(StrictHostKeyChecking::Ask),
                    ..Default::default()
                },
            ),
            (
                "LogLevel debug",
                HostSettings {
                    log_level: Some(LogLevel::Debug1),
                    ..Default::default()
                },
            ),
            (
                "LogLevel DEBUG3",
                HostSettings {
                    log_level: Some(LogLevel::Debug3),
                    ..Default::default()
                },
            ),
            (
                "LogLevel QUIET",
                HostSettings {
                    log_level: Some(LogLevel::Quiet),
                    ..Default::default()
                },
            ),
            (
                "UserKnownHostsFile ~/.ssh/kh /etc/kh %d/x%%",
                HostSettings {
                    user_known_hosts_files: Some(vec![
                        home.join(".ssh/kh"),
                        PathBuf::from("/etc/kh"),
                        PathBuf::from("/home/u/x%"),
                    ]),
                    ..Default::default()
                },
            ),
            (
                "UserKnownHostsFile none",
                HostSettings {
                    user_known_hosts_files: Some(vec![]),
                    ..Default::default()
                },
            ),
            (
                "GlobalKnownHostsFile \"/etc/ssh/a b\"",
                HostSettings {
                    global_known_hosts_files: Some(vec![PathBuf::from("/etc/ssh/a b")]),
                    ..Default::default()
                },
            ),
            (
                "Port 65535",
                HostSettings {
                    port: Some(65535),
                    ..Default::default()
                },
            ),
            (
                "User ec2-user",
                HostSettings {
                    user: Some("ec2-user".into()),
                    ..Default::default()
                },
            ),
            (
                "HostName 100%%.example",
                HostSettings {
                    hostname: Some("100%%.example".into()),
                    ..Default::default()
                },
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line).unwrap().resolve("h"), want, "file: {line}");
            let mut from_option = HostSettings::default();
            from_option.apply_option(line, home).unwrap();
            assert_eq!(from_option, want, "-o {line}");
        }
    }

    #[test]
    fn file_errors_table() {
        let cases = [
            (
                "Port 22\nFrobnicate yes\n",
                "cfg:2: Bad configuration option: Frobnicate",
            ),
            ("Port 0", "cfg:1: invalid value \"0\" for Port"),
            ("Port 0x16", "cfg:1: invalid value \"0x16\" for Port"),
            ("Port 65536", "cfg:1: invalid value \"65536\" for Port"),
            ("Port", "cfg:1: missing argument for Port"),
            ("Port 22 23", "cfg:1: too many arguments for Port"),
            ("User \"\"", "cfg:1: missing argument for User"),
            (
                "BatchMode maybe",
                "cfg:1: invalid value \"maybe\" for BatchMode: expected yes or no",
            ),
            (
                "StrictHostKeyChecking on",
                "cfg:1: invalid value \"on\" for StrictHostKeyChecking",
            ),
            (
                "ConnectTimeout 5x",
                "cfg:1: invalid value \"5x\" for ConnectTimeout",
            ),
            (
                "ConnectTimeout m",
                "cfg:1: invalid value \"m\" for ConnectTimeout",
            ),
            (
                "LogLevel LOUD",
                "cfg:1: invalid value \"LOUD\" for LogLevel",
            ),
            (
                "ServerAliveCountMax -1",
                "cfg:1: invalid value \"-1\" for ServerAliveCountMax",
            ),
            (
                "HostName %u.example",
                "cfg:1: invalid value \"%u.example\" for HostName",
            ),
            (
                "UserKnownHostsFile ~/.ssh/%k",
                "cfg:1: invalid value \"~/.ssh/%k\" for UserKnownHostsFile",
            ),
            (
                "UserKnownHostsFile ~bob/kh",
                "cfg:1: invalid value \"~bob/kh\" for UserKnownHostsFile",
            ),
            (
                "\nMatch host foo",
                "cfg:2: Match is unsupported except \"Match all\"",
            ),
            ("Match", "cfg:1: Match is unsupported except \"Match all\""),
            ("Host", "cfg:1: missing argument for Host"),
            ("User \"open", "cfg:1: unterminated quote"),
            (
                "Include /etc/*/x",
                "cfg:1: Include /etc/*/x: wildcards are supported only in the last path component",
            ),
            // An unknown keyword is an error even in a block that never matches.
            (
                "Host nothing-matches-this\n  Bogus 1\n",
                "cfg:2: Bad configuration option: Bogus",
            ),
            // A bad value is an error even in a block that never matches.
            (
                "Host nothing-matches-this\n  Port x\n",
                "cfg:2: invalid value \"x\" for Port",
            ),
        ];
        for (text, want) in cases {
            let got = err_text(text);
            assert!(
                got.starts_with(want),
                "{text:?}: got {got:?}, want prefix {want:?}"
            );
        }
    }

    #[test]
    fn ignore_unknown_table() {
        let cases = [
            ("IgnoreUnknown UseFoo\nUseFoo yes\n", true),
            ("IgnoreUnknown Use*,Other\nusebar yes\nOther 1\n", true),
            ("IgnoreUnknown UseFoo\nUseBar yes\n", false),
            // Only later lines are covered.
            ("UseFoo yes\nIgnoreUnknown UseFoo\n", false),
            // Known keywords are accepted without IgnoreUnknown.
            (
                "UseKeychain yes\nAddKeysToAgent yes\nControlMaster auto\nProxyJump bastion\n",
                true,
            ),
        ];
        for (text, ok) in cases {
            assert_eq!(parse(text).is_ok(), ok, "{text:?}");
        }
    }

    #[test]
    fn apply_option_errors_table() {
        let home = Path::new(HOME);
        let cases = [
            (
                "IdentityFile=~/.ssh/id",
                "-o IdentityFile=~/.ssh/id: unsupported option \"IdentityFile\"",
            ),
            (
                "ForwardAgent yes",
                "-o ForwardAgent yes: unsupported option \"ForwardAgent\"",
            ),
            (
                "Nonsense=1",
                "-o Nonsense=1: Bad configuration option: Nonsense",
            ),
            (
                "Host=foo",
                "-o Host=foo: Host is not allowed as a command-line option",
            ),
            (
                "Include x",
                "-o Include x: Include is not allowed as a command-line option",
            ),
            ("Port=abc", "-o Port=abc: invalid value \"abc\" for Port"),
            ("BatchMode", "-o BatchMode: missing argument for BatchMode"),
        ];
        for (option, want) in cases {
            let got = HostSettings::default()
                .apply_option(option, home)
                .unwrap_err()
                .to_string();
            assert!(got.starts_with(want), "{option:?}: got {got:?}");
        }
        // Empty and comment-only options are accepted and change nothing.
        let mut s = HostSettings::default();
        s.apply_option("", home).unwrap();
        s.apply_option("# nothing", home).unwrap();
        assert_eq!(s, HostSettings::default());
    }

    #[test]
    fn option_then_config_precedence() {
        let home = Path::new(HOME);
        let cfg = parse("Host h\n  Port 2200\n  User cfguser\n  BatchMode no\n").unwrap();
        let mut s = HostSettings::default();
        s.apply_option("Port=2222", home).unwrap();
        // A later -o for the same keyword loses, as in OpenSSH.
        s.apply_option("Port 1", home).unwrap();
        s.apply_option("BatchMode=yes", home).unwrap();
        s.fill_from(&cfg.resolve("h"));
        assert_eq!(s.port, Some(2222));
        assert_eq!(s.user.as_deref(), Some("cfguser"));
        assert_eq!(s.batch_mode, Some(true));
        assert_eq!(s.compression, None);
    }

    #[test]
    fn effective_hostname_table() {
        let cases = [
            (None, "alias", "alias"),
            (Some("%h.example"), "web", "web.example"),
            (Some("100%%-%h"), "a", "100%-a"),
            (Some("plain"), "a", "plain"),
        ];
        for (raw, alias, want) in cases {
            let s = HostSettings {
                hostname: raw.map(String::from),
                ..Default::default()
            };
            assert_eq!(s.effective_hostname(alias), want, "{raw:?}");
        }
    }

    #[test]
    fn include_files() {
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        fs::create_dir_all(ssh.join("config.d")).unwrap();
        fs::write(
            ssh.join("config.d/b.conf"),
            "Host b\n  Port 2\nUser from-b\n",
        )
        .unwrap();
        fs::write(ssh.join("config.d/a.conf"), "Host a b\n  Port 1\n").unwrap();
        fs::write(ssh.join("config.d/.hidden.conf"), "Port 99\n").unwrap();
        fs::write(ssh.join("config.d/ignored.txt"), "Bogus\n").unwrap();
        fs::write(ssh.join("scoped"), "User scoped\n").unwrap();
        let main = ssh.join("config");
        fs::write(
            &main,
            "Include config.d/*.conf ~/.ssh/does-not-exist\n\
             Host s\n  Include scoped\n\
             Host *\n  User last\n",
        )
        .unwrap();
        let cfg = SshConfig::load(&main, home.path()).unwrap();
        let cases = [
            ("a", Some(1), "last"),
            // a.conf sorts first, so its Port wins; b.conf's trailing User
            // sits inside its own `Host b` block.
            ("b", Some(1), "from-b"),
            ("s", None, "scoped"),
            ("z", None, "last"),
        ];
        for (alias, port, user) in cases {
            let s = cfg.resolve(alias);
            assert_eq!(s.port, port, "{alias}");
            assert_eq!(s.user.as_deref(), Some(user), "{alias}");
        }
        // Errors inside an included file name that file and line.
        fs::write(ssh.join("bad"), "\nPort x\n").unwrap();
        let err = SshConfig::parse("Include bad", Path::new("main"), home.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}:2: invalid value \"x\" for Port: expected a port number from 1 to 65535",
                ssh.join("bad").display()
            )
        );
        // A file that includes itself stops at the depth limit.
        fs::write(ssh.join("loop"), "Include loop\n").unwrap();
        let err = SshConfig::parse("Include loop", Path::new("main"), home.path()).unwrap_err();
        assert!(
            err.to_string().contains("Include nested more than 16"),
            "{err}"
        );
    }

    #[test]
    fn load_and_load_optional() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        assert!(SshConfig::load_optional(&missing, dir.path())
            .unwrap()
            .directives
            .is_empty());
        let err = SshConfig::load(&missing, dir.path()).unwrap_err();
        assert!(matches!(err, SshConfigError::Read { ref path, .. } if *path == missing));
        // A directory exists but is not readable as a file: always an error.
        assert!(SshConfig::load_optional(dir.path(), dir.path()).is_err());
        let file = dir.path().join("config");
        fs::write(&file, "Port 7\n").unwrap();
        assert_eq!(
            SshConfig::load_optional(&file, dir.path())
                .unwrap()
                .resolve("x")
                .port,
            Some(7)
        );
    }

    #[test]
    fn parse_time_table() {
        let cases = [
            ("0", Some(0)),
            ("30", Some(30)),
            ("30s", Some(30)),
            ("5M", Some(300)),
            ("1h30m", Some(5400)),
            ("1d", Some(86_400)),
            ("1w", Some(604_800)),
            ("", None),
            ("s", None),
            ("1x", None),
            ("-1", None),
            ("3000000000", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_time(text), want.map(Duration::from_secs), "{text:?}");
        }
    }
}
