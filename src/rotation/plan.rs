//! `smssh rotate`'s plan: what its command line asks for, checked before anything touches
//! AWS, and the workers it reaches.
//!
//! Owns: the flags' meaning for a rotation (whole rotation, one step, or a reconciliation),
//! the deploy channel's requirements (SSM reaches EC2 instances by id, as root editing
//! `-l`'s file), and reading `--bootstrap-key` into the same wrappers a secret's key lives
//! in. Must not know: the steps themselves, or how results are printed.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::cli::args::{RotateArgs, SecretArgs};
use crate::key::file::KeyFileError;
use crate::key::source::{LoadedKey, SecretSpec};
use crate::plan::targets::{HostSources, TargetError};
use crate::plan::{fanout_options, resolve_common, PlanError, SshOptions};
use crate::rotation::block::{self, BlockError};
use crate::rotation::keygen::UnknownKeyType;
use crate::rotation::{
    Channel, DurationError, Settings, Step, Target, UnknownChannel, UnknownStep,
};

#[derive(Debug, thiserror::Error)]
pub enum RotationPlanError {
    #[error(transparent)]
    Plan(#[from] PlanError),
    #[error("no hosts given: select the workers with -w HOSTS, --hosts-file FILE or --ec2-filter FILTER")]
    NoHosts,
    #[error("--deploy: {0}")]
    Deploy(#[from] UnknownChannel),
    #[error("--deploy ssm reaches EC2 instances by id: select the hosts with --ec2-filter (not -w or --hosts-file)")]
    SsmNeedsInstances,
    #[error("--key-type: {0}")]
    KeyType(#[from] UnknownKeyType),
    #[error("--grace: {0}")]
    Grace(#[from] DurationError),
    #[error("--authorized-keys-file: {0}")]
    AuthorizedKeysFile(BlockError),
    #[error("-l: {0}")]
    User(BlockError),
    #[error("--step: {0}")]
    Step(#[from] UnknownStep),
    #[error("--token: {0}")]
    Token(BlockError),
    #[error("--step and --token go together, without --reconcile")]
    StepWithoutToken,
    #[error("--bootstrap-key {0}")]
    Bootstrap(#[from] KeyFileError),
    #[error(transparent)]
    Targets(#[from] TargetError),
}

/// What `smssh rotate` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RotationMode {
    Rotate,
    Step(Step, String),
    Reconcile,
}

/// What `smssh rotate` was asked to do.
#[derive(Debug)]
pub struct RotationPlan {
    pub spec: SecretSpec,
    pub ssh: SshOptions,
    pub settings: Settings,
    pub mode: RotationMode,
    pub hosts: HostSources,
    /// `-l`, for hosts that do not name their own (over SSM, the account edited).
    pub login: Option<String>,
    pub port: Option<u16>,
    pub bootstrap_key: Option<PathBuf>,
}

/// Checks the command line; nothing here reads a file other than the configuration.
pub fn resolve(args: &RotateArgs) -> Result<RotationPlan, RotationPlanError> {
    let secret_args = SecretArgs {
        location: args.secret.clone(),
        ..SecretArgs::default()
    };
    let common = resolve_common(&args.ssh, &args.fanout, &secret_args, &[], &[])?;
    let hosts = HostSources::from_args(&args.fanout);
    if !hosts.names_hosts() {
        return Err(RotationPlanError::NoHosts);
    }
    let channel: Channel = args.deploy.parse()?;
    // SSM addresses instances by id, which only EC2 discovery yields.
    let reaches_instances_only =
        !hosts.ec2_filters.is_empty() && hosts.hostlists.is_empty() && hosts.hosts_file.is_none();
    if channel == Channel::Ssm && !reaches_instances_only {
        return Err(RotationPlanError::SsmNeedsInstances);
    }
    let key_type = args.key_type.parse()?;
    let grace = crate::rotation::parse_duration(&args.grace)?;
    if let Some(file) = &args.authorized_keys_file {
        block::validate_file(file).map_err(RotationPlanError::AuthorizedKeysFile)?;
    }
    let ssm_user = args.login.clone().unwrap_or_else(|| "ec2-user".to_owned());
    if channel == Channel::Ssm {
        block::validate_user(&ssm_user).map_err(RotationPlanError::User)?;
    }
    let mode = match (&args.step, &args.token, args.reconcile) {
        (Some(step), Some(token), false) => {
            let step = step.parse()?;
            block::validate_version_id(token).map_err(RotationPlanError::Token)?;
            RotationMode::Step(step, token.clone())
        }
        (None, None, true) => RotationMode::Reconcile,
        (None, None, false) => RotationMode::Rotate,
        _ => return Err(RotationPlanError::StepWithoutToken),
    };
    // Over SSM the plans only name the hosts in messages, as the account whose file is edited.
    let login = match channel {
        Channel::Ssh => args.login.clone(),
        Channel::Ssm => Some(ssm_user.clone()),
    };
    Ok(RotationPlan {
        spec: common.secret,
        ssh: common.ssh,
        settings: Settings {
            key_type,
            grace,
            retire_bootstrap_key: args.retire_bootstrap_key,
            learn_host_keys: args.learn_host_keys,
            channel,
            ssm_user,
            authorized_keys_file: args.authorized_keys_file.clone(),
            ssm_timeout: Duration::from_secs(args.ssm_timeout.max(1)),
            fanout: fanout_options(&args.fanout),
            require_rotation_enabled: false,
        },
        mode,
        hosts,
        login,
        port: args.port,
        bootstrap_key: args.bootstrap_key.clone(),
    })
}

impl RotationPlan {
    /// The workers, through the same resolution as every fan-out.
    pub async fn targets(
        &self,
        aws: &aws_config::SdkConfig,
    ) -> Result<Vec<Target>, RotationPlanError> {
        let login = self.login.as_deref();
        Ok(Target::resolve(&self.hosts, &self.ssh, login, self.port, aws).await?)
    }

    /// Reads `--bootstrap-key`, when given.
    pub fn bootstrap(&self) -> Result<Option<Arc<LoadedKey>>, RotationPlanError> {
        Ok(self
            .bootstrap_key
            .as_deref()
            .map(crate::key::file::load)
            .transpose()?)
    }
}
