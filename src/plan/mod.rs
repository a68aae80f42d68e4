//! The resolved plan: what [`crate::cli::args`] says the user typed, merged with the environment,
//! `~/.config/smssh/config.toml`, `~/.ssh/config` and `/etc/ssh/ssh_config`, into the exact
//! secret to read and the exact parameters of each connection.
//!
//! Owns: precedence (command line > environment > smssh config file for the secret; `-o` >
//! user ssh_config > system ssh_config, first value wins, for SSH options) and defaults (port
//! 22, the local user name, the known_hosts files). Invariant: everything downstream reads a
//! [`HostPlan`] or [`SecretSpec`], never the raw arguments. Must not know: how a connection
//! is made or a secret fetched.

pub mod command;
pub mod copy;
pub mod targets;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use crate::aws::secret::VersionSelector;
use crate::aws::AwsSettings;
use crate::cli::args::{FanoutArgs, SecretArgs, SshOptionArgs};
use crate::config::ssh_config::{
    AlgorithmKind, HostSettings, MatchContext, SshConfig, SshConfigError, StrictHostKeyChecking,
    MIN_RSA_SIZE,
};
use crate::key::source::{LoadedKey, SecretSpec};

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(
        "no secret given: pass --secret-id ID, set SMSSH_SECRET_ID, or put secret_id in {config}"
    )]
    NoSecretId { config: String },
    #[error("{path}: {reason}: fix the file or remove it")]
    ToolConfig { path: String, reason: String },
    #[error(transparent)]
    SshConfig(#[from] SshConfigError),
    #[error("{text}: {source}")]
    Operand {
        text: String,
        source: crate::config::operand::OperandError,
    },
    #[error(transparent)]
    Copy(#[from] copy::CopyPlanError),
    #[error(transparent)]
    Targets(#[from] targets::TargetError),
    #[error("no destination given: smssh [user@]host [command], or -w HOSTS -- command")]
    NoDestination,
    #[error("--group and --json apply to a fan-out: add -w HOSTS, --hosts-file or --ec2-filter")]
    PresentationWithoutHosts,
    #[error("--fail-fast applies to a fan-out: add -w HOSTS, --hosts-file or --ec2-filter")]
    FailFastWithoutHosts,
    #[error("-i {0}")]
    Identity(#[from] crate::key::file::KeyFileError),
}

/// `~/.config/smssh/config.toml`: defaults for the secret, so scripts need no flags.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    pub secret_id: Option<String>,
    pub version_stage: Option<String>,
    pub secret_field: Option<String>,
    pub fallback_stage: Option<String>,
    pub region: Option<String>,
    pub profile: Option<String>,
    /// The user's audit destinations (`[audit]`), added to the administrator's.
    pub audit: Option<crate::audit::AuditTable>,
    /// smscp's default carrier for uploads: `s3://BUCKET/PREFIX` (or `direct`); `--via` wins.
    pub copy_via: Option<String>,
    /// The KMS key for `copy_via` uploads; `--sse-kms-key-id` wins.
    pub copy_sse_kms_key_id: Option<String>,
    /// How a command fan-out on a terminal shows its hosts: `live` (the default) or
    /// `stream` (`host: line`, as `--stream`).
    pub fanout_output: Option<FanoutOutput>,
    /// Named host groups (`[groups]`, `name = "hostlist"` or `"ec2:FILTER"`), used as
    /// `@name`; `config::groups` reads them from this file and the administrator's.
    pub groups: Option<std::collections::BTreeMap<String, String>>,
}

/// The config file's `fanout_output`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FanoutOutput {
    Live,
    Stream,
}

/// Facts about the local side that several resolutions need.
#[derive(Debug, Clone)]
pub struct Local {
    pub home: PathBuf,
    pub user: String,
}

impl Local {
    /// `$HOME` and `$USER` as a shell user expects, falling back to the password database.
    pub fn detect() -> Local {
        let entry = nix::unistd::User::from_uid(nix::unistd::getuid())
            .ok()
            .flatten();
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .or_else(|| entry.as_ref().map(|u| u.dir.clone()))
            .unwrap_or_else(|| PathBuf::from("/"));
        let user = std::env::var("USER")
            .ok()
            .filter(|u| !u.is_empty())
            .or_else(|| entry.map(|u| u.name))
            .unwrap_or_else(|| "root".to_owned());
        Local { home, user }
    }

    pub fn tool_config_path(&self) -> PathBuf {
        match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
            Some(dir) => PathBuf::from(dir).join("smssh/config.toml"),
            None => self.home.join(".config/smssh/config.toml"),
        }
    }
}

pub fn load_tool_config(path: &Path) -> Result<ToolConfig, PlanError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(ToolConfig::default()),
        Err(err) => {
            return Err(PlanError::ToolConfig {
                path: path.display().to_string(),
                reason: err.to_string(),
            })
        }
    };
    toml::from_str(&text).map_err(|err| PlanError::ToolConfig {
        path: path.display().to_string(),
        reason: err.message().to_owned(),
    })
}

/// Resolves which secret to read. `--region`/`--profile` beat `AWS_REGION`/`AWS_PROFILE`,
/// which beat the config file, so the file never overrides what the environment says.
pub fn resolve_secret(args: &SecretArgs, local: &Local) -> Result<SecretSpec, PlanError> {
    let path = local.tool_config_path();
    let file = load_tool_config(&path)?;
    let id = args
        .location
        .secret_id
        .clone()
        .or(file.secret_id)
        .ok_or_else(|| PlanError::NoSecretId {
            config: path.display().to_string(),
        })?;
    let selector = match (&args.version_id, &args.version_stage) {
        (Some(version), _) => VersionSelector::Id(version.clone()),
        (None, Some(stage)) => VersionSelector::Stage(stage.clone()),
        (None, None) => VersionSelector::Stage(
            file.version_stage
                .unwrap_or_else(|| "AWSCURRENT".to_owned()),
        ),
    };
    let env_set = |names: &[&str]| {
        names
            .iter()
            .any(|n| std::env::var_os(n).is_some_and(|v| !v.is_empty()))
    };
    let region = args.location.region.clone().or_else(|| {
        (!env_set(&["AWS_REGION", "AWS_DEFAULT_REGION"]))
            .then_some(file.region)
            .flatten()
    });
    let profile = args.location.profile.clone().or_else(|| {
        (!env_set(&["AWS_PROFILE"]))
            .then_some(file.profile)
            .flatten()
    });
    Ok(SecretSpec {
        id,
        selector,
        field: args.secret_field.clone().or(file.secret_field),
        fallback_stage: args.fallback_stage.clone().or(file.fallback_stage),
        aws: AwsSettings { region, profile },
    })
}

/// How long to wait for a host that accepts TCP but never speaks, when the user set no
/// ConnectTimeout: OpenSSH would wait for the kernel; a cluster tool must not hang forever.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// OpenSSH's ServerAliveInterval in BatchMode when none is configured.
pub const BATCH_MODE_KEEPALIVE: Duration = Duration::from_secs(300);

/// Everything needed to connect to one host.
#[derive(Debug, Clone, PartialEq)]
pub struct HostPlan {
    /// The host as the user wrote it (for messages and per-host output).
    pub label: String,
    pub hostname: String,
    pub port: u16,
    pub user: String,
    pub connect_timeout: Option<Duration>,
    pub batch_mode: bool,
    pub strict_host_key_checking: StrictHostKeyChecking,
    pub user_known_hosts: Vec<PathBuf>,
    pub global_known_hosts: Vec<PathBuf>,
    pub compression: bool,
    /// `ServerAliveInterval` as configured: None when nothing set it, zero when set off. Use
    /// [`HostPlan::keepalive_interval`] for the interval in effect.
    pub server_alive_interval: Option<Duration>,
    pub server_alive_count_max: u32,
    pub log_level: Option<crate::config::ssh_config::LogLevel>,
    /// `HashKnownHosts`: host keys recorded under accept-new get a hashed host name.
    pub hash_known_hosts: bool,
    /// `AddressFamily` (`-4`, `-6`): which resolved addresses a connection tries.
    pub address_family: crate::config::ssh_config::AddressFamily,
    /// Environment variables each session asks the server to set (`SetEnv`, then the local
    /// variables `SendEnv` names); sshd's `AcceptEnv` decides which it takes.
    pub env: Vec<(String, String)>,
    /// A setting in effect for this host that smssh does not implement and must not ignore;
    /// the connection is refused with it named.
    pub unimplemented: Option<crate::config::ssh_config::UnimplementedSetting>,
    /// How the connection is carried: TCP, a jump host, or a proxy command.
    pub route: Route,
    /// The algorithms this connection may negotiate, in preference order.
    pub algorithms: Algorithms,
}

/// The algorithm lists of one connection (OpenSSH names, each non-empty and holding only
/// names smssh can negotiate), from ssh_config or smssh's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Algorithms {
    pub kex: Vec<String>,
    pub ciphers: Vec<String>,
    pub macs: Vec<String>,
    pub host_keys: Vec<String>,
    /// Signature algorithms smssh may sign with when it offers its key.
    pub pubkey: Vec<String>,
    /// Signature algorithms a host certificate's authority may have used.
    pub ca_signature: Vec<String>,
    /// The smallest RSA key, in bits, smssh accepts or offers.
    pub required_rsa_size: u32,
}

impl Algorithms {
    /// The lists `settings` gives, smssh's defaults for the others.
    fn from_settings(settings: &HostSettings) -> Algorithms {
        let list = |value: &Option<Vec<String>>, kind: AlgorithmKind| {
            value.clone().unwrap_or_else(|| kind.default_list())
        };
        Algorithms {
            kex: list(&settings.kex_algorithms, AlgorithmKind::KexAlgorithms),
            ciphers: list(&settings.ciphers, AlgorithmKind::Ciphers),
            macs: list(&settings.macs, AlgorithmKind::Macs),
            host_keys: list(
                &settings.host_key_algorithms,
                AlgorithmKind::HostKeyAlgorithms,
            ),
            pubkey: list(
                &settings.pubkey_accepted_algorithms,
                AlgorithmKind::PubkeyAcceptedAlgorithms,
            ),
            ca_signature: list(
                &settings.ca_signature_algorithms,
                AlgorithmKind::CaSignatureAlgorithms,
            ),
            required_rsa_size: settings.required_rsa_size.unwrap_or(MIN_RSA_SIZE),
        }
    }
}

/// How the connection to a host is carried (`ProxyJump`/`-J`, `ProxyCommand`).
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// TCP to `hostname:port`.
    Direct,
    /// A direct-tcpip channel opened by a session with this jump host, which is itself
    /// reached by its own route: `-J a,b c` reaches `c` through `b`, and `b` through `a`.
    Jump(Box<HostPlan>),
    /// The standard input and output of this shell command, `%` tokens already expanded.
    Command(String),
    /// The setting cannot be followed; the connection is refused with this reason, since
    /// connecting directly instead would reach the host some other way than the user said.
    Invalid(RouteProblem),
}

/// Why a `ProxyJump` or `ProxyCommand` setting cannot be followed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteProblem {
    #[error("ProxyJump {spec:?}: not [user@]host[:port] or ssh://[user@]host[:port]")]
    BadJumpHost { spec: String },
    #[error("jump host loop via {via}: exclude the jump host from the Host block that sets ProxyJump (e.g. Host * !{via})")]
    JumpLoop { via: String },
    #[error("more than {MAX_JUMP_DEPTH} jump hosts in one chain: the ProxyJump settings of ssh_config lead round in a circle")]
    TooManyJumps,
    #[error("ProxyCommand: %{token} is not a token smssh expands: use %h, %p, %r, %n or %%")]
    UnknownToken { token: char },
    #[error("ProxyCommand: %{token} would put {value:?} into a shell command, and it holds characters the shell would interpret: refusing")]
    UnsafeValue { token: char, value: String },
}

/// The most jump hosts one connection goes through, counting those a jump host's own
/// ProxyJump adds; a longer chain is a circle in ssh_config.
pub const MAX_JUMP_DEPTH: usize = 16;

/// The variables a session sends: every `SetEnv` pair, then each local variable that a
/// `SendEnv` pattern names. Variables that hold AWS credentials or smssh's own settings never
/// leave this host, whatever the patterns say (`SendEnv *` would otherwise hand the
/// credentials that unlock the cluster key to every worker).
fn session_env(
    settings: &HostSettings,
    local: impl Iterator<Item = (String, String)>,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = settings.set_env.clone().unwrap_or_default();
    if settings.send_env.is_empty() {
        return env;
    }
    let mut local: Vec<(String, String)> = local
        .filter(|(name, _)| !name.starts_with("AWS_") && !name.starts_with("SMSSH_"))
        .filter(|(name, _)| {
            settings
                .send_env
                .iter()
                .any(|pattern| crate::config::pattern::wildcard_match(pattern, name))
        })
        .filter(|(name, _)| !env.iter().any(|(set, _)| set == name))
        .collect();
    local.sort();
    env.extend(local);
    env
}

impl HostPlan {
    /// The keepalive interval in effect: the configured one (none when set to 0), else 300 s
    /// in BatchMode and none otherwise, as OpenSSH decides it.
    pub fn keepalive_interval(&self) -> Option<Duration> {
        match self.server_alive_interval {
            Some(interval) if interval.is_zero() => None,
            Some(interval) => Some(interval),
            None if self.batch_mode => Some(BATCH_MODE_KEEPALIVE),
            None => None,
        }
    }

    /// How long the session may go without any progress (nothing read, nothing written, no
    /// keepalive answered) before it is declared dead: the keepalive interval times
    /// ServerAliveCountMax plus one interval, so a host that answers keepalives is never
    /// cut off, and none when keepalives are off or `ServerAliveCountMax 0` asks never to
    /// disconnect. Keepalives alone cannot end a session whose server stopped reading: once
    /// the socket's send buffer is full, every write (keepalives included) waits on it.
    pub fn unresponsive_limit(&self) -> Option<Duration> {
        let interval = self.keepalive_interval()?;
        (self.server_alive_count_max > 0)
            .then(|| interval.saturating_mul(self.server_alive_count_max.saturating_add(1)))
    }
}

/// The SSH option sources of one invocation: `-o` options, then the config files.
#[derive(Debug)]
pub struct SshOptions {
    command_line: HostSettings,
    files: Vec<SshConfig>,
    local: Local,
}

impl SshOptions {
    /// `extra` holds settings implied by tool flags (scp's -B, -C), applied like `-o`.
    pub fn load(
        args: &SshOptionArgs,
        extra: &[&str],
        local: &Local,
    ) -> Result<SshOptions, PlanError> {
        let mut command_line = HostSettings::default();
        for option in extra
            .iter()
            .copied()
            .chain(args.options.iter().map(String::as_str))
        {
            command_line.apply_option(option, &local.home)?;
        }
        let files = match args.config_file.as_deref() {
            Some("none") => Vec::new(),
            Some(path) => vec![SshConfig::load(Path::new(path), &local.home)?],
            None => vec![
                SshConfig::load_optional(&local.home.join(".ssh/config"), &local.home)?,
                SshConfig::load_system(Path::new(SYSTEM_SSH_CONFIG), &local.home)?,
            ],
        };
        for warning in files.iter().flat_map(SshConfig::warnings) {
            crate::term::diag::warn(warning);
        }
        Ok(SshOptions {
            command_line,
            files,
            local: local.clone(),
        })
    }

    /// Plans a connection to `host` as the user wrote it. `user` and `port` come from the
    /// destination itself (`user@`, `ssh://...:port`) or the tool's -l/-p/-P flags, and beat
    /// every config source, as in OpenSSH.
    pub fn plan(&self, host: &str, user: Option<&str>, port: Option<u16>) -> HostPlan {
        self.plan_with_route(host, user, port, true, 0)
    }

    /// A plan with its route. `command_line` says whether `-o` (and `-J`) apply: they do to
    /// the destination, not to jump hosts, which OpenSSH plans from the files alone. `depth`
    /// counts the jump hosts already above this one.
    fn plan_with_route(
        &self,
        host: &str,
        user: Option<&str>,
        port: Option<u16>,
        command_line: bool,
        depth: usize,
    ) -> HostPlan {
        let (mut plan, proxy) = self.plan_direct(host, user, port, command_line);
        let jump = proxy
            .jump
            .as_deref()
            .filter(|v| !v.eq_ignore_ascii_case("none"));
        let command = proxy
            .command
            .as_deref()
            .filter(|v| !v.eq_ignore_ascii_case("none"));
        let route = match (jump, command) {
            (Some(jump), _) => self.jump_route(jump, &plan, depth),
            (None, Some(command)) => expand_proxy_command(command, &plan),
            (None, None) => Ok(Route::Direct),
        };
        plan.route = route.unwrap_or_else(Route::Invalid);
        plan
    }

    /// The route through the comma-separated jump hosts of `value` to `target`: the first
    /// hop by its own route from ssh_config, each later one through the hop before it.
    fn jump_route(
        &self,
        value: &str,
        target: &HostPlan,
        depth: usize,
    ) -> Result<Route, RouteProblem> {
        let mut route = None;
        for (index, spec) in value.split(',').enumerate() {
            if depth + index >= MAX_JUMP_DEPTH {
                return Err(RouteProblem::TooManyJumps);
            }
            let hop = parse_jump_host(spec)?;
            let hop = match route.take() {
                None => {
                    self.plan_with_route(&hop.host, hop.user.as_deref(), hop.port, false, depth + 1)
                }
                Some(previous) => {
                    let (mut plan, _) =
                        self.plan_direct(&hop.host, hop.user.as_deref(), hop.port, false);
                    plan.route = previous;
                    plan
                }
            };
            if (hop.hostname.as_str(), hop.port, hop.user.as_str())
                == (target.hostname.as_str(), target.port, target.user.as_str())
            {
                return Err(RouteProblem::JumpLoop { via: hop.label });
            }
            route = Some(Route::Jump(Box::new(hop)));
        }
        route.ok_or_else(|| RouteProblem::BadJumpHost {
            spec: value.to_owned(),
        })
    }

    /// The plan of a direct connection, with the proxy settings that apply to the host.
    fn plan_direct(
        &self,
        host: &str,
        user: Option<&str>,
        port: Option<u16>,
        command_line: bool,
    ) -> (HostPlan, ProxySettings) {
        let mut settings = if command_line {
            self.command_line.clone()
        } else {
            HostSettings::default()
        };
        let context = MatchContext {
            original_host: host,
            user,
            port,
            local_user: &self.local.user,
            home: &self.local.home,
        };
        self.apply_files(&mut settings, &context);
        let algorithms = Algorithms::from_settings(&settings);
        let home = &self.local.home;
        let unimplemented = settings.unimplemented_in_effect().cloned();
        let env = session_env(&settings, std::env::vars());
        let proxy = ProxySettings {
            jump: settings.proxy_jump.take(),
            command: settings.proxy_command.take(),
        };
        let plan = HostPlan {
            label: host.to_owned(),
            hostname: settings.effective_hostname(host),
            port: port.or(settings.port).unwrap_or(22),
            user: user
                .map(str::to_owned)
                .or(settings.user)
                .unwrap_or_else(|| self.local.user.clone()),
            connect_timeout: match settings.connect_timeout {
                Some(Duration::ZERO) => None,
                Some(limit) => Some(limit),
                None => Some(DEFAULT_CONNECT_TIMEOUT),
            },
            batch_mode: settings.batch_mode.unwrap_or(false),
            strict_host_key_checking: settings
                .strict_host_key_checking
                .unwrap_or(StrictHostKeyChecking::Ask),
            user_known_hosts: settings.user_known_hosts_files.unwrap_or_else(|| {
                vec![
                    home.join(".ssh/known_hosts"),
                    home.join(".ssh/known_hosts2"),
                ]
            }),
            global_known_hosts: settings.global_known_hosts_files.unwrap_or_else(|| {
                vec![
                    PathBuf::from("/etc/ssh/ssh_known_hosts"),
                    PathBuf::from("/etc/ssh/ssh_known_hosts2"),
                ]
            }),
            compression: settings.compression.unwrap_or(false),
            server_alive_interval: settings.server_alive_interval,
            server_alive_count_max: settings.server_alive_count_max.unwrap_or(3),
            log_level: settings.log_level,
            hash_known_hosts: settings.hash_known_hosts.unwrap_or(false),
            address_family: settings.address_family.unwrap_or_default(),
            env,
            unimplemented,
            route: Route::Direct,
            algorithms,
        };
        (plan, proxy)
    }

    /// Applies the files in order, then once more with `Match final` true if one of them
    /// asks for it, as OpenSSH re-reads its configuration; what is already set keeps its
    /// value. `Match exec` problems are warnings, as in OpenSSH.
    fn apply_files(&self, settings: &mut HostSettings, context: &MatchContext<'_>) {
        let passes: &[bool] = if self.files.iter().any(SshConfig::wants_final_pass) {
            &[false, true]
        } else {
            &[false]
        };
        for &final_pass in passes {
            for file in &self.files {
                for note in file.apply(settings, context, final_pass) {
                    crate::term::diag::warn(note);
                }
            }
        }
    }
}

/// The system-wide ssh_config, read after the user's as OpenSSH does.
const SYSTEM_SSH_CONFIG: &str = "/etc/ssh/ssh_config";

/// The raw `ProxyJump` and `ProxyCommand` of a host (at most one of them is set).
struct ProxySettings {
    jump: Option<String>,
    command: Option<String>,
}

/// One `ProxyJump` entry: `[user@]host[:port]` (`[addr]:port` for IPv6) or
/// `ssh://[user@]host[:port]`, as OpenSSH's `parse_jump` reads it.
fn parse_jump_host(spec: &str) -> Result<crate::config::operand::Destination, RouteProblem> {
    let bad = || RouteProblem::BadJumpHost {
        spec: spec.to_owned(),
    };
    if spec.starts_with("ssh://") {
        return crate::config::operand::parse_destination(spec).map_err(|_| bad());
    }
    let (user, rest) = match spec.rsplit_once('@') {
        Some((user, rest)) if !user.is_empty() => (Some(user.to_owned()), rest),
        Some(_) => return Err(bad()),
        None => (None, spec),
    };
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or_else(bad)?)),
        }
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let port = match port {
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => Some(port),
            _ => return Err(bad()),
        },
        None => None,
    };
    if host.is_empty() || host.contains(['/', ' ', '@']) {
        return Err(bad());
    }
    Ok(crate::config::operand::Destination {
        user,
        host: host.to_owned(),
        port,
    })
}

/// `ProxyCommand` with `%h` (the host name to connect to), `%p` (port), `%r` (remote user),
/// `%n` (the host as the user wrote it) and `%%` expanded, as OpenSSH does before it hands
/// the command to the shell.
fn expand_proxy_command(command: &str, plan: &HostPlan) -> Result<Route, RouteProblem> {
    // A name typed on the command line or found in a hosts file must not become shell
    // syntax: only the characters of host names, addresses and user names pass.
    let safe = |token: char, value: &str| {
        if value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-:@+%[]".contains(c))
        {
            Ok(value.to_owned())
        } else {
            Err(RouteProblem::UnsafeValue {
                token,
                value: value.to_owned(),
            })
        }
    };
    let mut out = String::with_capacity(command.len());
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(&safe('h', &plan.hostname)?),
            Some('p') => out.push_str(&plan.port.to_string()),
            Some('r') => out.push_str(&safe('r', &plan.user)?),
            Some('n') => out.push_str(&safe('n', &plan.label)?),
            Some('%') => out.push('%'),
            Some(token) => return Err(RouteProblem::UnknownToken { token }),
            None => return Err(RouteProblem::UnknownToken { token: ' ' }),
        }
    }
    Ok(Route::Command(out))
}

/// Limits of one fan-out run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutOptions {
    /// Sessions in flight at once (`-j`).
    pub parallel: usize,
    /// Deadline for one host, connection included (`--timeout`); None waits for the job.
    pub host_timeout: Option<Duration>,
    /// Extra connection attempts after a failure that may pass (`--retries`).
    pub retries: u32,
    /// First wait before a retry; doubles for each further one.
    pub backoff: Duration,
    /// `--fail-fast`: the first failed host stops the run (no new host starts, the running
    /// ones are closed).
    pub fail_fast: bool,
}

impl Default for FanoutOptions {
    fn default() -> FanoutOptions {
        FanoutOptions {
            parallel: 64,
            host_timeout: None,
            retries: 0,
            backoff: Duration::from_millis(500),
            fail_fast: false,
        }
    }
}

/// The fan-out limits the user asked for.
pub fn fanout_options(args: &FanoutArgs) -> FanoutOptions {
    FanoutOptions {
        parallel: args.parallel as usize,
        host_timeout: args.timeout.map(Duration::from_secs),
        retries: args.retries,
        ..FanoutOptions::default()
    }
}

/// What every program resolves the same way before any work: the SSH option sources and the
/// secret to read.
#[derive(Debug)]
pub struct Common {
    pub ssh: SshOptions,
    pub secret: SecretSpec,
    /// `-i` key files, read here, offered in order after the secret's key was refused.
    pub identities: Vec<Arc<LoadedKey>>,
}

/// Resolves SSH options and the secret. `implied` holds `-o` options implied by the tool's
/// own flags (scp's -B and -C), applied before the user's own `-o`, like `--connect-timeout`.
pub fn resolve_common(
    ssh: &SshOptionArgs,
    fanout: &FanoutArgs,
    secret: &SecretArgs,
    implied: &[&str],
    identity_files: &[PathBuf],
) -> Result<Common, PlanError> {
    let local = Local::detect();
    let mut options: Vec<String> = implied.iter().map(|s| (*s).to_owned()).collect();
    if let Some(seconds) = fanout.connect_timeout {
        options.push(format!("ConnectTimeout={seconds}"));
    }
    let options: Vec<&str> = options.iter().map(String::as_str).collect();
    Ok(Common {
        ssh: SshOptions::load(ssh, &options, &local)?,
        secret: resolve_secret(secret, &local)?,
        identities: identity_files
            .iter()
            .map(|path| crate::key::file::load(path))
            .collect::<Result<_, _>>()?,
    })
}

/// A plan for `host` on `port` with OpenSSH's defaults, no configuration file, no known_hosts
/// file and never a prompt, for the unit tests of the layers below.
#[cfg(test)]
pub(crate) fn test_plan(host: &str, port: u16) -> HostPlan {
    let args = SshOptionArgs {
        options: vec![
            "BatchMode=yes".to_owned(),
            "StrictHostKeyChecking=yes".to_owned(),
            "UserKnownHostsFile=/dev/null".to_owned(),
            "GlobalKnownHostsFile=/dev/null".to_owned(),
            "ConnectTimeout=1".to_owned(),
        ],
        config_file: Some("none".to_owned()),
        verbose: 0,
        quiet: true,
    };
    let local = Local {
        home: PathBuf::from("/nonexistent"),
        user: "tester".to_owned(),
    };
    match SshOptions::load(&args, &[], &local) {
        Ok(options) => options.plan(host, None, Some(port)),
        Err(err) => panic!("the test options are valid: {err}"),
    }
}

/// A key source that offers one fresh key and never calls AWS, for unit tests.
#[cfg(test)]
pub(crate) fn test_keys() -> crate::key::source::KeySource {
    let spec = SecretSpec {
        id: "unit".to_owned(),
        selector: VersionSelector::Stage("AWSCURRENT".to_owned()),
        field: None,
        fallback_stage: None,
        aws: AwsSettings::default(),
    };
    crate::key::source::KeySource::pinned(spec, test_key("v1"))
}

/// A freshly generated ed25519 key as the secret would hand it out, for unit tests.
#[cfg(test)]
pub(crate) fn test_key(version: &str) -> std::sync::Arc<crate::key::source::LoadedKey> {
    use crate::aws::secret::{KeyMaterial, PrivateKeyBytes};
    use crate::rotation::keygen::{self, KeyType};
    let generated = keygen::generate(KeyType::Ed25519).expect("ed25519 generation");
    let material = KeyMaterial {
        private_key: PrivateKeyBytes::Text(generated.private_text),
        passphrase: None,
        known_hosts: None,
    };
    std::sync::Arc::new(crate::key::source::LoadedKey {
        key: crate::key::ClientKey::decode(&material).expect("a generated key decodes"),
        version_id: Some(version.to_owned()),
        known_hosts: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(dir: &Path) -> Local {
        Local {
            home: dir.to_path_buf(),
            user: "me".to_owned(),
        }
    }

    #[test]
    fn option_precedence_is_first_obtained() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cfg");
        std::fs::write(
            &config,
            "Host w*\n  HostName 10.0.0.%h\n  User ec2-user\n  Port 2200\n  ConnectTimeout 7\nHost *\n  User other\n  StrictHostKeyChecking accept-new\n",
        )
        .unwrap();
        let args = SshOptionArgs {
            options: vec!["Port=2222".to_owned()],
            config_file: Some(config.display().to_string()),
            ..Default::default()
        };
        let options = SshOptions::load(&args, &["BatchMode=yes"], &local(dir.path())).unwrap();
        let plan = options.plan("w1", None, None);
        assert_eq!(plan.hostname, "10.0.0.w1");
        assert_eq!(plan.port, 2222, "-o beats the file");
        assert_eq!(plan.user, "ec2-user", "first matching block wins");
        assert_eq!(plan.connect_timeout, Some(Duration::from_secs(7)));
        assert!(plan.batch_mode);
        assert_eq!(
            plan.strict_host_key_checking,
            StrictHostKeyChecking::AcceptNew
        );
        let explicit = options.plan("w1", Some("root"), Some(22));
        assert_eq!((explicit.user.as_str(), explicit.port), ("root", 22));
        let other = options.plan("db", None, None);
        assert_eq!(
            (other.hostname.as_str(), other.user.as_str(), other.port),
            ("db", "other", 2222)
        );
        assert_eq!(
            other.user_known_hosts[0],
            dir.path().join(".ssh/known_hosts")
        );
    }

    #[test]
    fn jump_hosts_are_planned_from_the_files_and_the_first_proxy_setting_wins() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cfg");
        std::fs::write(
            &config,
            "Host b\n  HostName 10.0.0.1\n  User ops\n  Port 2200\nHost c\n  ProxyCommand nc '%h' %p -- %r %n %%\nHost * !b\n  ProxyJump b\n  ProxyCommand ignored\n",
        )
        .unwrap();
        let args = SshOptionArgs {
            options: vec!["User=cli".to_owned()],
            config_file: Some(config.display().to_string()),
            ..Default::default()
        };
        let options = SshOptions::load(&args, &[], &local(dir.path())).unwrap();
        let plan = options.plan("w1", None, None);
        let Route::Jump(hop) = &plan.route else {
            panic!("w1 goes through b: {:?}", plan.route)
        };
        // -o applies to the destination only, as OpenSSH passes no -o to the jump host.
        assert_eq!(plan.user, "cli");
        assert_eq!(
            (hop.hostname.as_str(), hop.port, hop.user.as_str()),
            ("10.0.0.1", 2200, "ops")
        );
        assert_eq!(hop.route, Route::Direct);
        // ProxyCommand came first for c; the raw line reaches the shell, tokens expanded.
        assert_eq!(
            options.plan("c", Some("r"), Some(22)).route,
            Route::Command("nc 'c' 22 -- r c %".to_owned())
        );
        let chain = SshOptions::load(
            &SshOptionArgs::default(),
            &["ProxyJump=a@x:1,ssh://y:2"],
            &local(dir.path()),
        )
        .unwrap()
        .plan("t", None, None);
        let Route::Jump(y) = &chain.route else {
            panic!("t goes through y: {:?}", chain.route)
        };
        let Route::Jump(x) = &y.route else {
            panic!("y goes through x: {:?}", y.route)
        };
        assert_eq!((y.hostname.as_str(), y.port), ("y", 2));
        assert_eq!(
            (x.hostname.as_str(), x.port, x.user.as_str()),
            ("x", 1, "a")
        );
    }

    #[test]
    fn bad_jump_hosts_loops_and_tokens_become_invalid_routes() {
        let dir = tempfile::tempdir().unwrap();
        let route = |option: &str, host: &str| {
            SshOptions::load(
                &SshOptionArgs {
                    config_file: Some("none".to_owned()),
                    ..Default::default()
                },
                &[option],
                &local(dir.path()),
            )
            .unwrap()
            .plan(host, None, None)
            .route
        };
        for spec in ["u@", "h:0", "h:x", "[::1", "a,,b"] {
            assert!(
                matches!(
                    route(&format!("ProxyJump={spec}"), "t"),
                    Route::Invalid(RouteProblem::BadJumpHost { .. })
                ),
                "{spec}"
            );
        }
        assert_eq!(
            route("ProxyJump=t", "t"),
            Route::Invalid(RouteProblem::JumpLoop {
                via: "t".to_owned()
            })
        );
        assert_eq!(
            route("ProxyCommand=nc %h %C", "t"),
            Route::Invalid(RouteProblem::UnknownToken { token: 'C' })
        );
        assert_eq!(
            route("ProxyCommand=nc %n 22", "a;reboot"),
            Route::Invalid(RouteProblem::UnsafeValue {
                token: 'n',
                value: "a;reboot".to_owned()
            })
        );
        assert_eq!(route("ProxyJump=none", "t"), Route::Direct);
        assert_eq!(route("ProxyCommand=none", "t"), Route::Direct);
        let long = vec!["h"; MAX_JUMP_DEPTH + 1].join(",");
        assert_eq!(
            route(&format!("ProxyJump={long}"), "t"),
            Route::Invalid(RouteProblem::TooManyJumps)
        );
    }

    #[test]
    fn match_sees_the_destination_and_final_runs_a_second_pass() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("cfg");
        std::fs::write(
            &config,
            "Match user admin\n  Port 2201\n\
             Host w*\n  HostName 10.0.0.%h\n\
             Match final host 10.0.0.*\n  Ciphers aes256-ctr\n  RequiredRSASize 3072\n",
        )
        .unwrap();
        let load = |options: &[&str]| {
            let args = SshOptionArgs {
                options: options.iter().map(|o| (*o).to_owned()).collect(),
                config_file: Some(config.display().to_string()),
                ..Default::default()
            };
            SshOptions::load(&args, &[], &local(dir.path())).unwrap()
        };
        let plan = load(&[]).plan("w1", Some("admin"), None);
        assert_eq!(plan.port, 2201, "Match user sees the destination's user");
        assert_eq!(plan.algorithms.ciphers, ["aes256-ctr"]);
        assert_eq!(plan.algorithms.required_rsa_size, 3072);
        let plan = load(&["Ciphers=aes128-ctr"]).plan("w1", None, None);
        assert_eq!(plan.port, 22);
        assert_eq!(
            plan.algorithms.ciphers,
            ["aes128-ctr"],
            "-o beats Match final"
        );
        let plan = load(&[]).plan("db", None, None);
        assert_eq!(
            plan.algorithms.ciphers,
            AlgorithmKind::Ciphers.default_list()
        );
        assert_eq!(plan.algorithms.required_rsa_size, MIN_RSA_SIZE);
        assert!(!plan.algorithms.host_keys.iter().any(|k| k == "ssh-rsa"));
    }

    #[test]
    fn config_none_reads_nothing_and_defaults_apply() {
        let dir = tempfile::tempdir().unwrap();
        let args = SshOptionArgs {
            config_file: Some("none".to_owned()),
            ..Default::default()
        };
        let plan = SshOptions::load(&args, &[], &local(dir.path()))
            .unwrap()
            .plan("h", None, None);
        assert_eq!((plan.port, plan.user.as_str()), (22, "me"));
        assert_eq!(plan.strict_host_key_checking, StrictHostKeyChecking::Ask);
        assert!(!plan.batch_mode && !plan.compression);
    }

    #[test]
    fn tool_config_is_parsed_and_unknown_keys_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "secret_id = \"/dev/ssh\"\nversion_stage = \"AWSPREVIOUS\"\n",
        )
        .unwrap();
        let config = load_tool_config(&path).unwrap();
        assert_eq!(config.secret_id.as_deref(), Some("/dev/ssh"));
        assert_eq!(config.version_stage.as_deref(), Some("AWSPREVIOUS"));
        std::fs::write(&path, "secret = \"x\"\n").unwrap();
        let err = load_tool_config(&path).unwrap_err().to_string();
        assert!(err.contains("unknown field"), "{err}");
        assert_eq!(
            load_tool_config(&dir.path().join("missing")).unwrap(),
            ToolConfig::default()
        );
    }
}
