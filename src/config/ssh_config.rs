//! OpenSSH client configuration: `~/.ssh/config`, `/etc/ssh/ssh_config`, `-F FILE` and `-o`
//! options.
//!
//! This module owns the ssh_config(5) syntax (keywords, `=` separators,
//! quoting, comments, `Host` blocks, `Match` with every criterion OpenSSH 9.x
//! has but `localnetwork`, `Include`, `Tag`) and the rule that the first value
//! obtained for an option wins. It turns the options smssh implements into
//! typed [`HostSettings`] and accepts, without acting on them, the other
//! keywords OpenSSH knows when ignoring them cannot change the destination,
//! the trust decision or the algorithms; the others are kept as
//! [`UnimplementedSetting`]s that refuse the host they apply to.
//!
//! Invariants:
//! - Every value is validated when the file is parsed, whether or not its
//!   `Host` or `Match` block ever matches, as OpenSSH does; applying a parsed
//!   file to a host cannot fail.
//! - `Host` and `Match` conditions are evaluated where their line stands, with
//!   the options obtained up to that line, as OpenSSH's single pass does;
//!   `Match final` / `canonical` hold only in the second pass
//!   ([`SshConfig::wants_final_pass`]).
//! - `~` and `%d` in known_hosts paths are expanded at parse time with the
//!   home directory the caller passes to `parse`, `load`, `load_optional` or
//!   `apply_option`; the same home also anchors relative `Include` paths
//!   (`~/.ssh/`). `HostName` is stored with its `%h` token unexpanded until
//!   [`HostSettings::effective_hostname`], because `-o HostName=...` is
//!   parsed before the alias is known to this module.
//!
//! This module must not know about known_hosts contents, SSH connections,
//! AWS, or the command-line parser: it receives option strings and paths and
//! returns settings or typed errors naming `file:line`. The one process it
//! starts is a `Match exec` command, through the user's shell as OpenSSH does.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::config::pattern::{pattern_list_matches, wildcard_match};

mod algorithms;

pub use algorithms::{AlgorithmKind, AlgorithmProblem};

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
    /// A keyword smssh does not act on, given with `-o` and a value that asks for something
    /// (its off value is accepted, as tools that call ssh pass those).
    #[error("{keyword} {value}: smssh {reason}: remove the option, or give it its off value")]
    NotActedOn {
        keyword: String,
        value: String,
        reason: &'static str,
    },
    /// A keyword smssh must not ignore and does not implement yet, given with `-o`.
    #[error("{keyword} {value}: smssh does not implement {keyword} yet, and ignoring it would change where it connects or which host keys it trusts")]
    Unimplemented { keyword: String, value: String },
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
    #[error("Unsupported Match attribute {0}")]
    MatchAttribute(String),
    #[error("Missing Match criteria for {0}")]
    MatchMissingArgument(String),
    #[error("One or more attributes required for Match")]
    MatchEmpty,
    #[error("'all' cannot be combined with other Match attributes")]
    MatchAllCombined,
    #[error("Match exec {0}: unknown % token (OpenSSH knows %%, %C, %d, %h, %i, %k, %L, %l, %n, %p, %r, %u)")]
    MatchExecToken(String),
    #[error(transparent)]
    Algorithms(#[from] AlgorithmProblem),
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

/// `AddressFamily` (also `-4` and `-6`): which of the resolver's addresses to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AddressFamily {
    #[default]
    Any,
    Inet,
    Inet6,
}

impl AddressFamily {
    /// The keyword's value as `ssh -G` prints it.
    pub fn name(self) -> &'static str {
        match self {
            AddressFamily::Any => "any",
            AddressFamily::Inet => "inet",
            AddressFamily::Inet6 => "inet6",
        }
    }

    /// Whether `addr` is one this family allows.
    pub fn allows(self, addr: &std::net::SocketAddr) -> bool {
        match self {
            AddressFamily::Any => true,
            AddressFamily::Inet => addr.is_ipv4(),
            AddressFamily::Inet6 => addr.is_ipv6(),
        }
    }
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
    /// `HashKnownHosts`: whether a host key recorded by accept-new (or a yes at the prompt)
    /// gets a hashed host name.
    pub hash_known_hosts: Option<bool>,
    /// Raw `ProxyJump` (`none` or a comma-separated list of `[user@]host[:port]` and
    /// `ssh://` URIs). It competes with `ProxyCommand`: whichever of the two is obtained
    /// first keeps the other unset, as in OpenSSH.
    pub proxy_jump: Option<String>,
    /// Raw `ProxyCommand`: the rest of its line, unparsed, since it goes to the shell; `none`
    /// included.
    pub proxy_command: Option<String>,
    /// Algorithm lists, each already resolved against smssh's default (`+`, `-`, `^`) to
    /// the names smssh can negotiate, in order; never empty.
    pub ciphers: Option<Vec<String>>,
    pub kex_algorithms: Option<Vec<String>>,
    pub macs: Option<Vec<String>>,
    pub host_key_algorithms: Option<Vec<String>>,
    pub pubkey_accepted_algorithms: Option<Vec<String>>,
    pub ca_signature_algorithms: Option<Vec<String>>,
    /// `RequiredRSASize` in bits, never below OpenSSH's floor of 1024.
    pub required_rsa_size: Option<u32>,
    /// `Tag`, which `Match tagged` tests.
    pub tag: Option<String>,
    pub address_family: Option<AddressFamily>,
    /// `SendEnv` patterns, accumulated over every line that applies, in order; a `-PATTERN`
    /// entry removes the patterns listed before it that it matches, as in OpenSSH.
    pub send_env: Vec<String>,
    /// `SetEnv`: the `NAME=VALUE` pairs of the first line that applies, as in OpenSSH.
    pub set_env: Option<Vec<(String, String)>>,
    /// Settings smssh does not implement whose absence would change where it connects or
    /// whom it trusts, each keyword with its first value (`none` included, since a first
    /// `none` overrides any later value as in OpenSSH).
    pub unimplemented: Vec<UnimplementedSetting>,
}

/// A setting that changes the destination or the trust decision (`HostKeyAlias`,
/// `RevokedHostKeys`, `KnownHostsCommand`): smssh does not act
/// on it yet, and ignoring it would connect somewhere else or trust something else than
/// OpenSSH would, so a host it applies to is refused rather than reached directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnimplementedSetting {
    pub keyword: &'static str,
    pub value: String,
}

/// The keywords of [`UnimplementedSetting`], lowercased, with their usual spelling.
/// `CanonicalizeHostname` would change the name smssh connects to and looks up in
/// known_hosts; `RefuseConnection` (OpenSSH 10) forbids connecting at all.
const UNIMPLEMENTED_KEYWORDS: &[(&str, &str)] = &[
    ("hostkeyalias", "HostKeyAlias"),
    ("revokedhostkeys", "RevokedHostKeys"),
    ("knownhostscommand", "KnownHostsCommand"),
    ("canonicalizehostname", "CanonicalizeHostname"),
    ("refuseconnection", "RefuseConnection"),
];

/// Values of an [`UnimplementedSetting`] that ask for nothing, so that ignoring the setting
/// is what OpenSSH does too: `none` for the file and command settings, `no` for the two
/// switches.
fn asks_for_nothing(setting: &UnimplementedSetting) -> bool {
    let value = setting.value.to_ascii_lowercase();
    match setting.keyword {
        "CanonicalizeHostname" | "RefuseConnection" => matches!(value.as_str(), "no" | "false"),
        _ => value == "none",
    }
}

impl HostSettings {
    /// The first unimplemented setting that is in effect for this host (`none`, or `no` for
    /// a switch, is not).
    pub fn unimplemented_in_effect(&self) -> Option<&UnimplementedSetting> {
        self.unimplemented.iter().find(|s| !asks_for_nothing(s))
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
        match parse_directive(&lower, &keyword, &args, option, home).map_err(invalid)? {
            Parsed::Set(Directive::Unimplemented(setting)) => {
                if !asks_for_nothing(&setting) {
                    return Err(invalid(ConfigProblem::Unimplemented {
                        keyword: setting.keyword.to_owned(),
                        value: setting.value,
                    }));
                }
            }
            Parsed::Ignored => {
                if let Some(reason) = requested_but_not_acted_on(&lower, &args) {
                    return Err(invalid(ConfigProblem::NotActedOn {
                        keyword,
                        value: args.join(" "),
                        reason,
                    }));
                }
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
        fill(&mut self.hash_known_hosts, &other.hash_known_hosts);
        fill(&mut self.ciphers, &other.ciphers);
        fill(&mut self.kex_algorithms, &other.kex_algorithms);
        fill(&mut self.macs, &other.macs);
        fill(&mut self.host_key_algorithms, &other.host_key_algorithms);
        fill(
            &mut self.pubkey_accepted_algorithms,
            &other.pubkey_accepted_algorithms,
        );
        fill(
            &mut self.ca_signature_algorithms,
            &other.ca_signature_algorithms,
        );
        fill(&mut self.required_rsa_size, &other.required_rsa_size);
        fill(&mut self.tag, &other.tag);
        fill(&mut self.address_family, &other.address_family);
        self.send_env.extend(other.send_env.iter().cloned());
        fill(&mut self.set_env, &other.set_env);
        if let Some(jump) = &other.proxy_jump {
            self.set_if_unset(Directive::ProxyJump(jump.clone()));
        }
        if let Some(command) = &other.proxy_command {
            self.set_if_unset(Directive::ProxyCommand(command.clone()));
        }
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
            Directive::HashKnownHosts(v) => set(&mut self.hash_known_hosts, v),
            Directive::Algorithms(kind, list) => {
                let slot = match kind {
                    AlgorithmKind::Ciphers => &mut self.ciphers,
                    AlgorithmKind::KexAlgorithms => &mut self.kex_algorithms,
                    AlgorithmKind::Macs => &mut self.macs,
                    AlgorithmKind::HostKeyAlgorithms => &mut self.host_key_algorithms,
                    AlgorithmKind::PubkeyAcceptedAlgorithms => &mut self.pubkey_accepted_algorithms,
                    AlgorithmKind::CaSignatureAlgorithms => &mut self.ca_signature_algorithms,
                };
                set(slot, list);
            }
            Directive::RequiredRsaSize(v) => set(&mut self.required_rsa_size, v),
            Directive::Tag(v) => set(&mut self.tag, v),
            Directive::AddressFamily(v) => set(&mut self.address_family, v),
            Directive::SendEnv(patterns) => {
                for pattern in patterns {
                    match pattern.strip_prefix('-') {
                        Some(removed) => self
                            .send_env
                            .retain(|kept| !crate::config::pattern::wildcard_match(removed, kept)),
                        None => self.send_env.push(pattern),
                    }
                }
            }
            Directive::SetEnv(pairs) => set(&mut self.set_env, pairs),
            // ProxyJump and ProxyCommand share one slot: the first obtained wins.
            Directive::ProxyJump(v) if self.proxy_command.is_none() => set(&mut self.proxy_jump, v),
            Directive::ProxyCommand(v) if self.proxy_jump.is_none() => {
                set(&mut self.proxy_command, v)
            }
            Directive::ProxyJump(_) | Directive::ProxyCommand(_) => {}
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

/// OpenSSH's floor for `RequiredRSASize`, which is also its default.
pub const MIN_RSA_SIZE: u32 = 1024;

/// OpenSSH's limit on nested `Include`s, which also stops include loops.
const MAX_INCLUDE_DEPTH: usize = 16;

/// A parsed configuration: the `Host` and `Match` lines and the implemented
/// directives, in file order, includes expanded in place.
#[derive(Debug, Clone, Default)]
pub struct SshConfig {
    entries: Vec<Entry>,
    blocks: Vec<Block>,
    wants_final_pass: bool,
    warnings: Vec<String>,
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
    HashKnownHosts(bool),
    Algorithms(AlgorithmKind, Vec<String>),
    RequiredRsaSize(u32),
    Tag(String),
    AddressFamily(AddressFamily),
    SendEnv(Vec<String>),
    SetEnv(Vec<(String, String)>),
    ProxyJump(String),
    ProxyCommand(String),
    Unimplemented(UnimplementedSetting),
}

#[derive(Debug, Clone)]
enum Entry {
    /// A `Host` or `Match` line: where OpenSSH evaluates the block's condition, with the
    /// options obtained up to that line.
    Enter(usize),
    /// A directive that applies when every block in `within` is active: the block it
    /// stands in and the blocks around the `Include`s that brought its file in.
    Set {
        within: Vec<usize>,
        directive: Directive,
    },
}

#[derive(Debug, Clone)]
struct Block {
    /// The blocks around the `Include` that brought this block's file in; the block
    /// is active only if they are.
    outer: Vec<usize>,
    condition: Condition,
}

#[derive(Debug, Clone)]
enum Condition {
    /// `Host` patterns, matched against the name the user typed.
    Host(Vec<String>),
    /// `Match` criteria, all of which must hold.
    Match(Vec<Criterion>),
    /// A `Host` or `Match` line of a system file that smssh could not read: it never
    /// matches, so that its directives cannot apply where OpenSSH's would not.
    Never,
}

#[derive(Debug, Clone)]
struct Criterion {
    negated: bool,
    test: Test,
}

#[derive(Debug, Clone)]
enum Test {
    All,
    /// `canonical` and `final`: true in the second pass only, as in OpenSSH (smssh never
    /// canonicalizes, so the second pass is the one `Match final` asks for).
    FinalPass,
    Exec(String),
    Host(String),
    OriginalHost(String),
    User(String),
    LocalUser(String),
    Tagged(String),
}

/// What `Match` compares against, besides the options obtained so far: facts about the
/// invocation that OpenSSH knows before it reads any file.
#[derive(Debug, Clone, Copy)]
pub struct MatchContext<'a> {
    /// The host as the user typed it (`originalhost`, `%n`, and `host` until `HostName`).
    pub original_host: &'a str,
    /// The destination's or `-l`'s user, which beats every file.
    pub user: Option<&'a str>,
    /// The destination's or `-p`'s port, which beats every file.
    pub port: Option<u16>,
    /// The local account (`localuser`, `%u`, and `user` when nothing sets one).
    pub local_user: &'a str,
    /// The local home directory (`%d`).
    pub home: &'a Path,
}

/// State shared across a file and the files it includes.
struct ParseState<'a> {
    home: &'a Path,
    /// Keyword patterns from `IgnoreUnknown`. OpenSSH scopes this option
    /// like any other; we apply it to every later line in file order, which
    /// accepts a superset of what OpenSSH accepts and never rejects a file
    /// OpenSSH reads.
    ignore_unknown: Vec<String>,
    /// A system file (`/etc/ssh/ssh_config` and what it includes): a line smssh cannot
    /// read is skipped with a warning instead of failing every command, except a list that
    /// leaves no algorithm smssh supports.
    lenient: bool,
    config: SshConfig,
}

impl SshConfig {
    /// Parses configuration text; `path` names it in errors and `home`
    /// expands `~` and anchors relative `Include` paths at `home/.ssh`.
    pub fn parse(text: &str, path: &Path, home: &Path) -> Result<SshConfig, SshConfigError> {
        SshConfig::parse_with(text, path, home, false)
    }

    fn parse_with(
        text: &str,
        path: &Path,
        home: &Path,
        lenient: bool,
    ) -> Result<SshConfig, SshConfigError> {
        let mut state = ParseState {
            home,
            ignore_unknown: Vec::new(),
            lenient,
            config: SshConfig::default(),
        };
        parse_text(text, path, &[], 0, &mut state)?;
        Ok(state.config)
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

    /// Loads a system file the user did not write, such as `/etc/ssh/ssh_config`, which
    /// must never make every command fail: an absent or unreadable file, an unreadable
    /// `Include`, an unknown keyword, `Match` attribute or algorithm name, or a bad value,
    /// is skipped with a warning ([`SshConfig::warnings`]), and a `Host` or `Match` line
    /// that cannot be read never matches. A list that leaves no algorithm smssh supports
    /// still fails: it is a policy smssh cannot honour.
    pub fn load_system(path: &Path, home: &Path) -> Result<SshConfig, SshConfigError> {
        match fs::read_to_string(path) {
            Ok(text) => SshConfig::parse_with(&text, path, home, true),
            Err(e) if is_absent(&e) => Ok(SshConfig::default()),
            Err(e) => Ok(SshConfig {
                warnings: vec![format!("{}: {e}: ignored", path.display())],
                ..SshConfig::default()
            }),
        }
    }

    /// What a lenient load skipped, one line each.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Whether applying this file may run a command (`Match exec`).
    pub fn runs_commands(&self) -> bool {
        self.blocks.iter().any(|block| match &block.condition {
            Condition::Match(criteria) => criteria.iter().any(|c| matches!(c.test, Test::Exec(_))),
            Condition::Host(_) | Condition::Never => false,
        })
    }

    /// Whether some `Match` line asks for `final`, so that the files must be applied once
    /// more with `final_pass` set, as OpenSSH re-reads its configuration.
    pub fn wants_final_pass(&self) -> bool {
        self.wants_final_pass
    }

    /// Applies this file to `settings` for one connection, first obtained value winning,
    /// evaluating each `Host` and `Match` line where it stands with the options obtained
    /// so far. Returns one line per `Match exec` that could not run.
    pub fn apply(
        &self,
        settings: &mut HostSettings,
        context: &MatchContext<'_>,
        final_pass: bool,
    ) -> Vec<String> {
        let mut notes = Vec::new();
        let mut active = vec![false; self.blocks.len()];
        for entry in &self.entries {
            match entry {
                Entry::Enter(id) => {
                    let block = &self.blocks[*id];
                    active[*id] = block.outer.iter().all(|outer| active[*outer])
                        && block
                            .condition
                            .holds(settings, context, final_pass, &mut notes);
                }
                Entry::Set { within, directive } => {
                    if within.iter().all(|id| active[*id]) {
                        settings.set_if_unset(directive.clone());
                    }
                }
            }
        }
        notes
    }

    /// The settings that apply to `host_alias` with nothing else known, in one pass.
    #[cfg(test)]
    pub fn resolve(&self, host_alias: &str) -> HostSettings {
        let mut settings = HostSettings::default();
        let context = MatchContext {
            original_host: host_alias,
            user: None,
            port: None,
            local_user: "me",
            home: Path::new("/home/me"),
        };
        self.apply(&mut settings, &context, false);
        settings
    }
}

impl Condition {
    fn holds(
        &self,
        settings: &HostSettings,
        context: &MatchContext<'_>,
        final_pass: bool,
        notes: &mut Vec<String>,
    ) -> bool {
        let criteria = match self {
            Condition::Host(patterns) => {
                return pattern_list_matches(
                    patterns.iter().map(String::as_str),
                    context.original_host,
                )
            }
            Condition::Never => return false,
            Condition::Match(criteria) => criteria,
        };
        let host = settings.effective_hostname(context.original_host);
        let user = context
            .user
            .or(settings.user.as_deref())
            .unwrap_or(context.local_user);
        let in_list = |list: &str, text: &str| pattern_list_matches(list.split(','), text);
        for criterion in criteria {
            // OpenSSH stops at the first criterion that fails, so a later `exec` never runs.
            let result = match &criterion.test {
                Test::All => true,
                Test::FinalPass => final_pass,
                Test::Host(list) => in_list(&list.to_ascii_lowercase(), &host.to_ascii_lowercase()),
                Test::OriginalHost(list) => in_list(
                    &list.to_ascii_lowercase(),
                    &context.original_host.to_ascii_lowercase(),
                ),
                Test::User(list) => in_list(list, user),
                Test::LocalUser(list) => in_list(list, context.local_user),
                Test::Tagged(list) => in_list(list, settings.tag.as_deref().unwrap_or("")),
                Test::Exec(command) => {
                    let tokens = ExecTokens {
                        host: &host,
                        user,
                        port: context.port.or(settings.port).unwrap_or(22),
                        context,
                    };
                    match run_match_exec(command, &tokens) {
                        Ok(status) => status,
                        Err(note) => {
                            notes.push(note);
                            false
                        }
                    }
                }
            };
            if result == criterion.negated {
                return false;
            }
        }
        true
    }
}

/// The values `Match exec`'s `%` tokens stand for.
struct ExecTokens<'a> {
    host: &'a str,
    user: &'a str,
    port: u16,
    context: &'a MatchContext<'a>,
}

/// The `%` tokens OpenSSH expands in `Match exec`.
const EXEC_TOKENS: &[char] = &['%', 'C', 'd', 'h', 'i', 'k', 'L', 'l', 'n', 'p', 'r', 'u'];

/// Runs a `Match exec` command through `$SHELL -c` (`/bin/sh` when unset), stdin and stdout
/// on /dev/null and stderr inherited, as OpenSSH does; the criterion holds when it exits 0.
/// A host or user name that came from the command line and holds a character a shell would
/// act on is refused instead of being spliced into the command (OpenSSH 9.6's rule).
fn run_match_exec(command: &str, tokens: &ExecTokens<'_>) -> Result<bool, String> {
    let expanded = expand_exec_tokens(command, tokens)?;
    let shell = std::env::var_os("SHELL")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "/bin/sh".into());
    let status = std::process::Command::new(&shell)
        .arg("-c")
        .arg(&expanded)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .status()
        .map_err(|e| {
            format!(
                "Match exec: cannot run {}: {e}: the criterion does not match",
                Path::new(&shell).display()
            )
        })?;
    Ok(status.success())
}

fn expand_exec_tokens(command: &str, tokens: &ExecTokens<'_>) -> Result<String, String> {
    let context = tokens.context;
    let shell_safe = |name: &str, value: &str| {
        if value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:@[]+=,/".contains(c))
        {
            Ok(value.to_owned())
        } else {
            Err(format!(
                "Match exec: the {name} holds characters a shell would interpret: the \
                 criterion does not match"
            ))
        }
    };
    let local_host = local_hostname();
    let mut out = String::with_capacity(command.len());
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        // Parsing accepted only the tokens of EXEC_TOKENS.
        match chars.next() {
            Some('%') | None => out.push('%'),
            Some('C') => out.push_str(&connection_hash(
                &local_host,
                tokens.host,
                tokens.port,
                tokens.user,
            )),
            Some('d') => out.push_str(&context.home.to_string_lossy()),
            Some('h') => out.push_str(&shell_safe("host name", tokens.host)?),
            Some('i') => out.push_str(&nix::unistd::getuid().to_string()),
            Some('k') | Some('n') => out.push_str(&shell_safe("host name", context.original_host)?),
            Some('L') => out.push_str(local_host.split('.').next().unwrap_or("")),
            Some('l') => out.push_str(&local_host),
            Some('p') => out.push_str(&tokens.port.to_string()),
            Some('r') => out.push_str(&shell_safe("user name", tokens.user)?),
            Some('u') => out.push_str(&shell_safe("local user name", context.local_user)?),
            Some(other) => out.push(other),
        }
    }
    Ok(out)
}

/// The local host name as the kernel reports it (`%l`).
fn local_hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// OpenSSH's `%C`: the SHA-1 of the local host name, the host, the port and the user, in hex.
fn connection_hash(local_host: &str, host: &str, port: u16, user: &str) -> String {
    use sha1::Digest;
    let mut hasher = sha1::Sha1::new();
    hasher.update(local_host.as_bytes());
    hasher.update(host.as_bytes());
    hasher.update(port.to_string().as_bytes());
    hasher.update(user.as_bytes());
    hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Parses a `Match` line's arguments into criteria, with OpenSSH's rules: at least one
/// attribute; `all` last, after at most one other; each other attribute but
/// `canonical`/`final` takes one argument. Also reports whether `final` appears.
fn parse_match(args: &[String]) -> Result<(Vec<Criterion>, bool), ConfigProblem> {
    if args.is_empty() {
        return Err(ConfigProblem::MatchEmpty);
    }
    let mut criteria = Vec::new();
    let mut wants_final = false;
    let mut words = args.iter();
    while let Some(word) = words.next() {
        let (negated, attribute) = match word.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, word.as_str()),
        };
        let lower = attribute.to_ascii_lowercase();
        let test = match lower.as_str() {
            "all" => {
                if criteria.len() > 1 || words.len() > 0 {
                    return Err(ConfigProblem::MatchAllCombined);
                }
                Test::All
            }
            "canonical" => Test::FinalPass,
            "final" => {
                wants_final = true;
                Test::FinalPass
            }
            "exec" | "host" | "originalhost" | "user" | "localuser" | "tagged" => {
                let Some(argument) = words.next().filter(|a| !a.is_empty()) else {
                    return Err(ConfigProblem::MatchMissingArgument(attribute.to_owned()));
                };
                let argument = argument.clone();
                match lower.as_str() {
                    "exec" => {
                        if !percent_tokens_ok(&argument, EXEC_TOKENS) {
                            return Err(ConfigProblem::MatchExecToken(argument));
                        }
                        Test::Exec(argument)
                    }
                    "host" => Test::Host(argument),
                    "originalhost" => Test::OriginalHost(argument),
                    "user" => Test::User(argument),
                    "localuser" => Test::LocalUser(argument),
                    _ => Test::Tagged(argument),
                }
            }
            _ => return Err(ConfigProblem::MatchAttribute(attribute.to_owned())),
        };
        criteria.push(Criterion { negated, test });
    }
    Ok((criteria, wants_final))
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
    outer: &[usize],
    depth: usize,
    state: &mut ParseState<'_>,
) -> Result<(), SshConfigError> {
    // The block we are in within this file; an included file starts outside any block of
    // its own.
    let mut block: Option<usize> = None;
    for (index, line) in text.lines().enumerate() {
        let location = || format!("{}:{}", path.display(), index + 1);
        let within = || {
            let mut w = outer.to_vec();
            w.extend(block);
            w
        };
        match parse_line(line, depth, state) {
            Ok(Line::Nothing) => {}
            Ok(Line::Block(condition)) => {
                let id = state.config.blocks.len();
                state.config.blocks.push(Block {
                    outer: outer.to_vec(),
                    condition,
                });
                state.config.entries.push(Entry::Enter(id));
                block = Some(id);
            }
            Ok(Line::Set(directive)) => state.config.entries.push(Entry::Set {
                within: within(),
                directive,
            }),
            Ok(Line::Include(files)) => {
                let within = within();
                for file in files {
                    let text = match fs::read_to_string(&file) {
                        Ok(text) => text,
                        // OpenSSH silently skips Include targets that do not exist.
                        Err(e) if is_absent(&e) => continue,
                        Err(e) if state.lenient => {
                            state
                                .config
                                .warnings
                                .push(format!("{}: {e}: ignored", file.display()));
                            continue;
                        }
                        Err(source) => return Err(SshConfigError::Read { path: file, source }),
                    };
                    parse_text(&text, &file, &within, depth + 1, state)?;
                }
            }
            Err(problem)
                if state.lenient
                    && !matches!(
                        problem,
                        ConfigProblem::Algorithms(AlgorithmProblem::NothingSupported { .. })
                    ) =>
            {
                state
                    .config
                    .warnings
                    .push(format!("{}: {problem}: line ignored", location()));
                // A block header smssh cannot read starts a block that never matches, so
                // the lines under it apply nowhere rather than to the enclosing block.
                if let Some((keyword, _)) = tokenize(line).ok().flatten() {
                    if matches!(keyword.to_ascii_lowercase().as_str(), "host" | "match") {
                        let id = state.config.blocks.len();
                        state.config.blocks.push(Block {
                            outer: outer.to_vec(),
                            condition: Condition::Never,
                        });
                        state.config.entries.push(Entry::Enter(id));
                        block = Some(id);
                    }
                }
            }
            Err(problem) => {
                return Err(SshConfigError::Invalid {
                    location: location(),
                    problem,
                })
            }
        }
    }
    Ok(())
}

/// What one configuration line asks for.
enum Line {
    Nothing,
    Block(Condition),
    Set(Directive),
    Include(Vec<PathBuf>),
}

fn parse_line(line: &str, depth: usize, state: &mut ParseState<'_>) -> Result<Line, ConfigProblem> {
    let Some((keyword, args)) = tokenize(line)? else {
        return Ok(Line::Nothing);
    };
    let lower = keyword.to_ascii_lowercase();
    match lower.as_str() {
        "host" => {
            if args.is_empty() {
                return Err(ConfigProblem::MissingArgument(keyword));
            }
            Ok(Line::Block(Condition::Host(args)))
        }
        "match" => {
            let (criteria, wants_final) = parse_match(&args)?;
            state.config.wants_final_pass |= wants_final;
            Ok(Line::Block(Condition::Match(criteria)))
        }
        "include" => {
            if args.is_empty() {
                return Err(ConfigProblem::MissingArgument(keyword));
            }
            if depth >= MAX_INCLUDE_DEPTH {
                return Err(ConfigProblem::IncludeTooDeep);
            }
            let mut files = Vec::new();
            for arg in &args {
                files.extend(expand_include(arg, state.home)?);
            }
            Ok(Line::Include(files))
        }
        "ignoreunknown" => {
            if args.is_empty() {
                return Err(ConfigProblem::MissingArgument(keyword));
            }
            for arg in &args {
                state
                    .ignore_unknown
                    .extend(arg.split(',').map(str::to_ascii_lowercase));
            }
            Ok(Line::Nothing)
        }
        _ => match parse_directive(&lower, &keyword, &args, line, state.home)? {
            Parsed::Set(directive) => Ok(Line::Set(directive)),
            Parsed::Nothing | Parsed::Ignored => Ok(Line::Nothing),
            Parsed::Unknown => {
                if pattern_list_matches(state.ignore_unknown.iter().map(String::as_str), &lower) {
                    Ok(Line::Nothing)
                } else {
                    Err(ConfigProblem::BadOption(keyword))
                }
            }
        },
    }
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

/// `line` is the whole line, for `ProxyCommand`, whose value is the raw rest of it.
fn parse_directive(
    lower: &str,
    keyword: &str,
    args: &[String],
    line: &str,
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
    let algorithms = |kind| -> Result<Directive, ConfigProblem> {
        Ok(Directive::Algorithms(
            kind,
            algorithms::resolve(kind, single()?)?,
        ))
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
        "hashknownhosts" => Directive::HashKnownHosts(flag()?),
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
        "proxyjump" => Directive::ProxyJump(single()?.to_string()),
        "proxycommand" => {
            if args.is_empty() {
                return Err(ConfigProblem::MissingArgument(keyword.to_string()));
            }
            Directive::ProxyCommand(rest_after_keyword(line).to_string())
        }
        "ciphers" => algorithms(AlgorithmKind::Ciphers)?,
        "kexalgorithms" => algorithms(AlgorithmKind::KexAlgorithms)?,
        "macs" => algorithms(AlgorithmKind::Macs)?,
        "hostkeyalgorithms" => algorithms(AlgorithmKind::HostKeyAlgorithms)?,
        "pubkeyacceptedalgorithms" | "pubkeyacceptedkeytypes" => {
            algorithms(AlgorithmKind::PubkeyAcceptedAlgorithms)?
        }
        "casignaturealgorithms" => algorithms(AlgorithmKind::CaSignatureAlgorithms)?,
        "requiredrsasize" => {
            let v = single()?;
            match v.parse::<u32>() {
                // OpenSSH lets this limit only be raised from its default.
                Ok(bits) if v.bytes().all(|b| b.is_ascii_digit()) => {
                    Directive::RequiredRsaSize(bits.max(MIN_RSA_SIZE))
                }
                _ => return Err(bad(v, "a number of bits")),
            }
        }
        "tag" => Directive::Tag(single()?.to_string()),
        "addressfamily" => {
            let v = single()?;
            Directive::AddressFamily(match v.to_ascii_lowercase().as_str() {
                "any" => AddressFamily::Any,
                "inet" => AddressFamily::Inet,
                "inet6" => AddressFamily::Inet6,
                _ => return Err(bad(v, "any, inet or inet6")),
            })
        }
        "sendenv" => {
            if args.is_empty() {
                return Err(ConfigProblem::MissingArgument(keyword.to_string()));
            }
            Directive::SendEnv(args.to_vec())
        }
        "setenv" => {
            if args.is_empty() {
                return Err(ConfigProblem::MissingArgument(keyword.to_string()));
            }
            let pairs = args
                .iter()
                .map(|arg| match arg.split_once('=') {
                    Some((name, value)) if !name.is_empty() => {
                        Ok((name.to_owned(), value.to_owned()))
                    }
                    _ => Err(bad(arg, "NAME=VALUE")),
                })
                .collect::<Result<Vec<_>, _>>()?;
            Directive::SetEnv(pairs)
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
///
/// Each is here because ignoring it cannot change where smssh connects, which host key it
/// trusts or which algorithms it negotiates: authentication and identity settings (the key
/// comes from Secrets Manager), forwarding, connection sharing, terminal and logging
/// settings, `CanonicalDomains` and its siblings (inert while `CanonicalizeHostname`, which
/// is refused, is off), `CheckHostIP` (only warns), `VerifyHostKeyDNS` and
/// `NoHostAuthenticationForLocalhost` (each would make OpenSSH trust more, never less),
/// `GSSAPIKexAlgorithms` and `HostbasedAcceptedAlgorithms` (for GSSAPI and host-based
/// authentication, which smssh never uses), `RekeyLimit`, `IPQoS`, `AddressFamily` and the
/// bind settings (the same destination over another route).
const IGNORED_KEYWORDS: &[&str] = &[
    "addkeystoagent",
    "afstokenpassing",
    "bindaddress",
    "bindinterface",
    "canonicaldomains",
    "canonicalizefallbacklocal",
    "canonicalizemaxdots",
    "canonicalizepermittedcnames",
    "certificatefile",
    "challengeresponseauthentication",
    "channeltimeout",
    "checkhostip",
    "cipher",
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
    "fallbacktorsh",
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
    "hostbasedacceptedalgorithms",
    "hostbasedauthentication",
    "hostbasedkeytypes",
    "identitiesonly",
    "identityagent",
    "identityfile",
    "identityfile2",
    "ipqos",
    "kbdinteractiveauthentication",
    "kbdinteractivedevices",
    "kerberosauthentication",
    "kerberostgtpassing",
    "keepalive",
    "localcommand",
    "localforward",
    "logverbose",
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
    "pubkeyauthentication",
    "rekeylimit",
    "remotecommand",
    "remoteforward",
    "requesttty",
    "rhostsauthentication",
    "rhostsrsaauthentication",
    "rsaauthentication",
    "securitykeyprovider",
    "sessiontype",
    "skeyauthentication",
    "smartcarddevice",
    "stdinnull",
    "streamlocalbindmask",
    "streamlocalbindunlink",
    "syslogfacility",
    "tcpkeepalive",
    "tisauthentication",
    "tunnel",
    "tunneldevice",
    "updatehostkeys",
    "usekeychain",
    "useprivilegedport",
    "useroaming",
    "userknownhostsfile2",
    "usersh",
    "verifyhostkeydns",
    "versionaddendum",
    "visualhostkey",
    "warnweakcrypto",
    "xauthlocation",
];

/// Why an ignored keyword given with `-o` cannot be accepted with this value: the user asked
/// on the command line for something smssh does not do, and silence would mislead. Off
/// values (the ones tools such as Ansible, ClusterShell, sftp and git pass) and keywords
/// whose every value is harmless to ignore give None.
fn requested_but_not_acted_on(lower: &str, args: &[String]) -> Option<&'static str> {
    let value = args.join(" ").to_ascii_lowercase();
    let off = |offs: &[&str]| offs.contains(&value.as_str());
    let no = off(&["no", "false"]);
    match lower {
        "forwardagent" if !no => Some("does not forward an agent"),
        "forwardx11" if !no => Some("does not forward X11"),
        "remotecommand" if !off(&["none"]) => {
            Some("does not run RemoteCommand: give the command after the destination")
        }
        "requesttty" if !off(&["auto", "no", "false"]) => {
            Some("takes -t and -T for a terminal, not RequestTTY")
        }
        "sessiontype" if !off(&["default"]) => {
            Some("takes -N and -s for the session type, not SessionType")
        }
        "stdinnull" if !no => Some("takes -n, not StdinNull"),
        "forkafterauthentication" if !no => Some("takes -f, not ForkAfterAuthentication"),
        "identityfile" | "certificatefile" if !off(&["none"]) => {
            Some("logs in with the key from Secrets Manager, not key files")
        }
        "pkcs11provider" | "securitykeyprovider" if !off(&["none", "internal"]) => {
            Some("logs in with the key from Secrets Manager, not key files")
        }
        "permitlocalcommand" if !no => Some("does not run LocalCommand"),
        "tunnel" if !no => Some("does not forward tun devices"),
        _ => None,
    }
}

/// The text after a line's keyword and its separator (whitespace, or one `=` with optional
/// whitespace around it), trailing whitespace removed: OpenSSH passes `ProxyCommand`'s value
/// to the shell as written, quotes included.
fn rest_after_keyword(line: &str) -> &str {
    let line = line.trim_start();
    let end = line
        .find(|c: char| c.is_whitespace() || c == '=')
        .unwrap_or(line.len());
    let rest = line[end..].trim_start();
    rest.strip_prefix('=').unwrap_or(rest).trim()
}

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
                "\nMatch localnetwork 10.0.0.0/8",
                "cfg:2: Unsupported Match attribute localnetwork",
            ),
            ("Match", "cfg:1: One or more attributes required for Match"),
            ("Match host", "cfg:1: Missing Match criteria for host"),
            ("Match !exec", "cfg:1: Missing Match criteria for exec"),
            (
                "Match all host x",
                "cfg:1: 'all' cannot be combined with other Match attributes",
            ),
            (
                "Match host a user b all",
                "cfg:1: 'all' cannot be combined with other Match attributes",
            ),
            (
                "Match exec \"test %x\"",
                "cfg:1: Match exec test %x: unknown % token",
            ),
            (
                "Host never\n  Ciphers blowfish",
                "cfg:2: Bad Ciphers spec 'blowfish'",
            ),
            (
                "Ciphers 3des-cbc",
                "cfg:1: Ciphers 3des-cbc leaves no algorithm smssh supports (resolved to: \
                 3des-cbc); smssh supports aes128-gcm@openssh.com,",
            ),
            (
                "RequiredRSASize big",
                "cfg:1: invalid value \"big\" for RequiredRSASize",
            ),
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

    /// The port `text` gives `host` in the pass `final_pass`, with `user` from the command
    /// line and `tag` from `-o Tag`, and the notes `apply` returned.
    fn port_for(
        text: &str,
        host: &str,
        user: Option<&str>,
        tag: Option<&str>,
        final_pass: bool,
    ) -> (Option<u16>, Vec<String>) {
        let cfg = parse(text).unwrap();
        let mut settings = HostSettings {
            tag: tag.map(str::to_owned),
            ..Default::default()
        };
        let context = MatchContext {
            original_host: host,
            user,
            port: None,
            local_user: "me",
            home: Path::new(HOME),
        };
        let notes = cfg.apply(&mut settings, &context, final_pass);
        (settings.port, notes)
    }

    #[test]
    fn match_criteria_table() {
        // (config, host, command-line user, tag, final pass, expected port)
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            bool,
            Option<u16>,
        );
        let cases: Vec<Case> = vec![
            (
                "Match host web*\n Port 1",
                "web1",
                None,
                None,
                false,
                Some(1),
            ),
            ("Match host web*\n Port 1", "db1", None, None, false, None),
            // Host names compare without case, as OpenSSH's match_hostname does.
            (
                "Match host WEB*\n Port 1",
                "web1",
                None,
                None,
                false,
                Some(1),
            ),
            (
                "Match !host web*\n Port 1",
                "db1",
                None,
                None,
                false,
                Some(1),
            ),
            (
                "Match host web*,!web2\n Port 1",
                "web2",
                None,
                None,
                false,
                None,
            ),
            // `host` sees HostName as obtained so far; `originalhost` what was typed.
            (
                "Host w1\n HostName 10.0.0.1\nMatch host 10.0.0.*\n Port 2",
                "w1",
                None,
                None,
                false,
                Some(2),
            ),
            (
                "Host w1\n HostName 10.0.0.1\nMatch originalhost 10.0.0.*\n Port 2",
                "w1",
                None,
                None,
                false,
                None,
            ),
            (
                "Match originalhost w?\n Port 3",
                "w1",
                None,
                None,
                false,
                Some(3),
            ),
            // `user` is the command line's, else User as obtained so far, else the local one.
            (
                "Match user root\n Port 4",
                "h",
                Some("root"),
                None,
                false,
                Some(4),
            ),
            (
                "User root\nMatch user root\n Port 4",
                "h",
                None,
                None,
                false,
                Some(4),
            ),
            (
                "Match user root\n Port 4\nUser root",
                "h",
                None,
                None,
                false,
                None,
            ),
            ("Match user me\n Port 4", "h", None, None, false, Some(4)),
            (
                "Match localuser me\n Port 5",
                "h",
                Some("root"),
                None,
                false,
                Some(5),
            ),
            (
                "Match localuser root\n Port 5",
                "h",
                None,
                None,
                false,
                None,
            ),
            // Several criteria must all hold.
            (
                "Match host h user me\n Port 6",
                "h",
                None,
                None,
                false,
                Some(6),
            ),
            (
                "Match host h user you\n Port 6",
                "h",
                None,
                None,
                false,
                None,
            ),
            // `final` and `canonical` hold in the second pass only.
            ("Match final all\n Port 7", "h", None, None, false, None),
            ("Match final all\n Port 7", "h", None, None, true, Some(7)),
            (
                "Match canonical host h\n Port 7",
                "h",
                None,
                None,
                true,
                Some(7),
            ),
            ("Match !final\n Port 7", "h", None, None, false, Some(7)),
            ("Match all\n Port 8", "h", None, None, false, Some(8)),
            // `Tag` (from -o or a file) and `tagged`.
            (
                "Match tagged prod\n Port 9",
                "h",
                None,
                Some("prod"),
                false,
                Some(9),
            ),
            ("Match tagged prod\n Port 9", "h", None, None, false, None),
            (
                "Tag prod\nMatch tagged p*\n Port 9",
                "h",
                None,
                None,
                false,
                Some(9),
            ),
            ("Match !tagged ?*\n Port 9", "h", None, None, false, Some(9)),
            // exec runs through the shell with tokens expanded; exit 0 matches.
            (
                "Match exec \"test %h = web1\"\n Port 10",
                "web1",
                None,
                None,
                false,
                Some(10),
            ),
            (
                "Match exec \"test %h = web1\"\n Port 10",
                "web2",
                None,
                None,
                false,
                None,
            ),
            (
                "Match exec \"test %n:%r:%u:%p:%d = h:bob:me:22:/home/u\"\n Port 10",
                "h",
                Some("bob"),
                None,
                false,
                Some(10),
            ),
            // %C is a 40-digit SHA-1; %% is a literal percent sign.
            (
                "Match exec \"[ $(printf %%s %C | wc -c) -eq 40 ]\"\n Port 10",
                "h",
                None,
                None,
                false,
                Some(10),
            ),
            ("Match exec false\n Port 10", "h", None, None, false, None),
            // A failed criterion stops the line: this exec would match but never runs.
            (
                "Match host x exec true\n Port 10",
                "h",
                None,
                None,
                false,
                None,
            ),
            // Host blocks still match the name as typed, case included.
            ("Host H\n Port 11", "h", None, None, false, None),
        ];
        for (text, host, user, tag, final_pass, want) in cases {
            let (got, notes) = port_for(text, host, user, tag, final_pass);
            assert_eq!(got, want, "{text:?} for {host} (final: {final_pass})");
            assert!(notes.is_empty(), "{text:?}: {notes:?}");
        }
    }

    #[test]
    fn match_exec_never_splices_a_hostile_name_into_the_shell() {
        let dir = tempfile::tempdir().unwrap();
        let witness = dir.path().join("ran");
        let text = "Match exec \"true %h\"\n Port 1\n";
        let host = format!("h;touch {}", witness.display());
        let (port, notes) = port_for(text, &host, None, None, false);
        assert_eq!(port, None);
        assert!(!witness.exists(), "the injected command ran");
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(
            notes[0].contains("characters a shell would interpret"),
            "{notes:?}"
        );
    }

    #[test]
    fn match_blocks_scope_includes_and_final_pass_is_requested() {
        let home = tempfile::tempdir().unwrap();
        let ssh = home.path().join(".ssh");
        fs::create_dir_all(&ssh).unwrap();
        fs::write(ssh.join("inner"), "Port 20\nHost other\n  Port 21\n").unwrap();
        let cfg = SshConfig::parse(
            "Match host web*\n  Include inner\nMatch final all\n  User late\n",
            Path::new("cfg"),
            home.path(),
        )
        .unwrap();
        assert!(cfg.wants_final_pass());
        assert!(!cfg.runs_commands());
        assert!(parse("Match host x e\"x\"ec true").unwrap().runs_commands());
        assert!(!parse("Match canonical all\n Port 1")
            .unwrap()
            .wants_final_pass());
        let context = |host| MatchContext {
            original_host: host,
            user: None,
            port: None,
            local_user: "me",
            home: home.path(),
        };
        let mut web = HostSettings::default();
        cfg.apply(&mut web, &context("web1"), false);
        assert_eq!((web.port, web.user.as_deref()), (Some(20), None));
        cfg.apply(&mut web, &context("web1"), true);
        assert_eq!((web.port, web.user.as_deref()), (Some(20), Some("late")));
        // The included file's own Host block still needs the outer Match.
        let mut other = HostSettings::default();
        cfg.apply(&mut other, &context("other"), false);
        assert_eq!(other.port, None);
    }

    #[test]
    fn system_files_skip_what_they_cannot_read_with_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let system = dir.path().join("ssh_config");
        fs::write(
            &system,
            "Frobnicate yes\n\
             Match localnetwork 10.0.0.0/8\n  Port 1\n\
             Host *\n  Port x\n  User sys\n\
             Ciphers aes256-ctr,blowfish\n",
        )
        .unwrap();
        let cfg = SshConfig::load_system(&system, dir.path()).unwrap();
        assert_eq!(cfg.warnings().len(), 4, "{:?}", cfg.warnings());
        assert!(cfg.warnings()[0].contains(":1: Bad configuration option: Frobnicate"));
        let s = cfg.resolve("h");
        assert_eq!((s.port, s.user.as_deref()), (None, Some("sys")));
        assert_eq!(s.ciphers, None);
        // A policy that leaves nothing smssh supports still fails, naming both lists.
        fs::write(&system, "Ciphers 3des-cbc\n").unwrap();
        let err = SshConfig::load_system(&system, dir.path()).unwrap_err();
        assert!(err.to_string().contains("smssh supports"), "{err}");
        // The same text from a file the user chose fails at its first bad line.
        assert!(SshConfig::load(&system, dir.path()).is_err());
        // An unreadable system file is a warning, not a failure.
        let cfg = SshConfig::load_system(dir.path(), dir.path()).unwrap();
        assert_eq!(cfg.warnings().len(), 1);
    }

    #[test]
    fn algorithm_keywords_from_files_and_options() {
        let home = Path::new(HOME);
        let cfg = parse(
            "Host a\n  Ciphers aes256-ctr\n  KexAlgorithms -mlkem*\n  MACs ^hmac-sha2-512\n\
             Host *\n  Ciphers aes128-ctr\n  HostKeyAlgorithms +ssh-rsa\n  RequiredRSASize 512\n",
        )
        .unwrap();
        let s = cfg.resolve("a");
        assert_eq!(s.ciphers, Some(vec!["aes256-ctr".to_owned()]));
        assert_eq!(
            s.kex_algorithms.as_ref().map(|k| k[0].as_str()),
            Some("curve25519-sha256")
        );
        assert_eq!(
            s.macs.as_ref().map(|m| m[0].as_str()),
            Some("hmac-sha2-512")
        );
        assert!(s
            .host_key_algorithms
            .as_ref()
            .unwrap()
            .contains(&"ssh-rsa".to_owned()));
        // RequiredRSASize may only be raised, as in OpenSSH.
        assert_eq!(s.required_rsa_size, Some(MIN_RSA_SIZE));
        let mut o = HostSettings::default();
        o.apply_option("Ciphers=chacha20-poly1305@openssh.com", home)
            .unwrap();
        o.apply_option("RequiredRSASize 3072", home).unwrap();
        o.apply_option("Tag prod", home).unwrap();
        o.fill_from(&s);
        assert_eq!(
            o.ciphers,
            Some(vec!["chacha20-poly1305@openssh.com".to_owned()])
        );
        assert_eq!(o.required_rsa_size, Some(3072));
        assert_eq!(o.tag.as_deref(), Some("prod"));
        let err = HostSettings::default()
            .apply_option("KexAlgorithms=-*", home)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("-o KexAlgorithms=-*: KexAlgorithms -* leaves no algorithm smssh supports (resolved to: nothing); smssh supports mlkem768x25519-sha256,"), "{err}");
    }

    #[test]
    fn switches_that_change_the_destination_are_refused_unless_off() {
        for (text, refused) in [
            ("CanonicalizeHostname yes", true),
            ("CanonicalizeHostname always", true),
            ("CanonicalizeHostname no\nCanonicalizeHostname yes", false),
            ("RefuseConnection yes", true),
            ("RefuseConnection no", false),
            ("CanonicalDomains example.com", false),
        ] {
            let s = parse(text).unwrap().resolve("h");
            assert_eq!(s.unimplemented_in_effect().is_some(), refused, "{text}");
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
                "-o IdentityFile=~/.ssh/id: IdentityFile ~/.ssh/id: smssh logs in with the key from Secrets Manager",
            ),
            (
                "ForwardAgent yes",
                "-o ForwardAgent yes: ForwardAgent yes: smssh does not forward an agent",
            ),
            ("RemoteCommand=uptime", "-o RemoteCommand=uptime: RemoteCommand uptime: smssh does not run RemoteCommand"),
            ("HostKeyAlias=other", "-o HostKeyAlias=other: HostKeyAlias other: smssh does not implement HostKeyAlias yet"),
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
        // Empty and comment-only options are accepted and change nothing, and so are the
        // off values of keywords smssh does not act on, which tools that call ssh pass
        // (Ansible, ClusterShell, sftp, git).
        let mut s = HostSettings::default();
        for option in [
            "",
            "# nothing",
            "ForwardAgent=no",
            "ForwardX11=no",
            "ForwardX11Trusted=yes",
            "ControlMaster=auto",
            "ControlPersist=60s",
            "ControlPath=/tmp/cp-%C",
            "KbdInteractiveAuthentication=no",
            "PreferredAuthentications=gssapi-with-mic,gssapi-keyex,hostbased,publickey",
            "PasswordAuthentication=no",
            "PermitLocalCommand=no",
            "ClearAllForwardings=yes",
            "GSSAPIAuthentication=no",
            "IdentitiesOnly=yes",
            "RequestTTY=no",
            "HostKeyAlias=none",
        ] {
            s.apply_option(option, home)
                .unwrap_or_else(|e| panic!("{option:?}: {e}"));
        }
        assert_eq!(s, HostSettings::default());
    }

    #[test]
    fn send_env_accumulates_and_set_env_takes_the_first_line() {
        let home = Path::new(HOME);
        let cfg = parse(
            "Host h
  SendEnv LANG LC_*
  SetEnv A=1 B=\"two words\"
Host *
  SendEnv -LC_ALL TERM
  SetEnv C=3
",
        )
        .unwrap();
        let mut s = HostSettings::default();
        s.apply_option("SendEnv=GIT_PROTOCOL", home).unwrap();
        s.fill_from(&cfg.resolve("h"));
        assert_eq!(s.send_env, ["GIT_PROTOCOL", "LANG", "LC_*", "TERM"]);
        assert_eq!(
            s.set_env,
            Some(vec![
                ("A".to_owned(), "1".to_owned()),
                ("B".to_owned(), "two words".to_owned())
            ])
        );
        let err = HostSettings::default()
            .apply_option("SetEnv=novalue", home)
            .unwrap_err()
            .to_string();
        assert!(err.contains("NAME=VALUE"), "{err}");
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
            .entries
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
