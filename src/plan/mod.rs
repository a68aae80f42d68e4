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
use std::time::Duration;

use serde::Deserialize;

use crate::aws::secret::VersionSelector;
use crate::aws::AwsSettings;
use crate::cli::args::{FanoutArgs, SecretArgs, SshOptionArgs};
use crate::config::ssh_config::{HostSettings, SshConfig, SshConfigError, StrictHostKeyChecking};
use crate::key::source::SecretSpec;

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
    #[error("no command given: smssh -w HOSTS -- command")]
    NoCommand,
    #[error(
        "-b/--group and --json apply to a fan-out: add -w HOSTS, --hosts-file or --ec2-filter"
    )]
    PresentationWithoutHosts,
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
    pub server_alive_interval: Option<Duration>,
    pub server_alive_count_max: u32,
    pub log_level: Option<crate::config::ssh_config::LogLevel>,
    /// A setting in effect for this host that smssh does not implement and must not ignore;
    /// the connection is refused with it named.
    pub unimplemented: Option<crate::config::ssh_config::UnimplementedSetting>,
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
                SshConfig::load_optional(Path::new("/etc/ssh/ssh_config"), &local.home)?,
            ],
        };
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
        let mut settings = self.command_line.clone();
        for file in &self.files {
            settings.fill_from(&file.resolve(host));
        }
        let home = &self.local.home;
        let unimplemented = settings.unimplemented_in_effect().cloned();
        HostPlan {
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
            server_alive_interval: settings.server_alive_interval.filter(|d| !d.is_zero()),
            server_alive_count_max: settings.server_alive_count_max.unwrap_or(3),
            log_level: settings.log_level,
            unimplemented,
        }
    }
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
}

impl Default for FanoutOptions {
    fn default() -> FanoutOptions {
        FanoutOptions {
            parallel: 64,
            host_timeout: None,
            retries: 0,
            backoff: Duration::from_millis(500),
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
}

/// Resolves SSH options and the secret. `implied` holds `-o` options implied by the tool's
/// own flags (scp's -B and -C), applied before the user's own `-o`, like `--connect-timeout`.
pub fn resolve_common(
    ssh: &SshOptionArgs,
    fanout: &FanoutArgs,
    secret: &SecretArgs,
    implied: &[&str],
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
