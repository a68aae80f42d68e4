//! `smssh check`'s command line resolved: the SSH options every host check uses, the secret
//! (or why none is configured, which is a finding rather than a refusal), the host sources
//! and where the AWS region comes from.
//!
//! Owns: the options a check forces (BatchMode, StrictHostKeyChecking=yes: a check never
//! prompts and never writes known_hosts) and its default per-host deadline. Must not know:
//! how anything is checked.

use std::time::Duration;

use crate::aws::AwsSettings;
use crate::cli::args::CheckArgs;
use crate::key::source::{LoadedKey, SecretSpec};
use crate::plan::targets::HostSources;
use crate::plan::{FanoutOptions, Local, PlanError, SshOptions};

/// One host's whole check (TCP, banner, host key, login) when `--timeout` sets none: a login
/// takes well under a second; a host that has not answered in this time is reported as such.
pub const DEFAULT_HOST_TIMEOUT: Duration = Duration::from_secs(30);

/// Options a check imposes before the user's own, which they beat (first value wins): a check
/// asks nothing and records no host key, so that running it changes nothing.
const IMPLIED: [&str; 2] = ["BatchMode=yes", "StrictHostKeyChecking=yes"];

/// Where the region in effect was set, as far as smssh can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionSource {
    Flag,
    Environment(&'static str),
    ConfigFile(String),
    /// aws-config's own chain: the profile's `region`, or the instance metadata.
    ProfileOrInstance,
}

impl std::fmt::Display for RegionSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RegionSource::Flag => f.write_str("--region"),
            RegionSource::Environment(name) => f.write_str(name),
            RegionSource::ConfigFile(path) => f.write_str(path),
            RegionSource::ProfileOrInstance => {
                f.write_str("the AWS profile (~/.aws/config) or the instance metadata")
            }
        }
    }
}

/// What `smssh check` will look at.
#[derive(Debug)]
pub struct CheckPlan {
    pub ssh: SshOptions,
    /// The secret to read, or why no secret is configured.
    pub secret: Result<SecretSpec, PlanError>,
    /// Region and profile for AWS calls when no secret is configured.
    pub aws: AwsSettings,
    pub region_source: RegionSource,
    pub identities: Vec<std::sync::Arc<LoadedKey>>,
    pub sources: HostSources,
    pub login: Option<String>,
    pub port: Option<u16>,
    pub options: FanoutOptions,
    pub json: bool,
}

/// Resolves the command line; only an SSH configuration or a key file that cannot be read
/// refuses it, everything else is for the check to report.
pub fn resolve(args: &CheckArgs) -> Result<CheckPlan, PlanError> {
    let local = Local::detect();
    let mut implied: Vec<String> = IMPLIED.iter().map(|s| (*s).to_owned()).collect();
    if let Some(seconds) = args.fanout.connect_timeout {
        implied.push(format!("ConnectTimeout={seconds}"));
    }
    let implied: Vec<&str> = implied.iter().map(String::as_str).collect();
    let ssh = SshOptions::load(&args.ssh, &implied, &local)?;
    let secret = crate::plan::resolve_secret(&args.secret, &local);
    let aws = match &secret {
        Ok(spec) => spec.aws.clone(),
        Err(_) => AwsSettings {
            region: args.secret.location.region.clone(),
            profile: args.secret.location.profile.clone(),
        },
    };
    let env_set = |name: &str| std::env::var_os(name).is_some_and(|v| !v.is_empty());
    let region_source = if args.secret.location.region.is_some() {
        RegionSource::Flag
    } else if env_set("AWS_REGION") {
        RegionSource::Environment("AWS_REGION")
    } else if env_set("AWS_DEFAULT_REGION") {
        RegionSource::Environment("AWS_DEFAULT_REGION")
    } else if aws.region.is_some() {
        RegionSource::ConfigFile(local.tool_config_path().display().to_string())
    } else {
        RegionSource::ProfileOrInstance
    };
    let identities = args
        .identity_file
        .iter()
        .map(|path| crate::key::file::load(path))
        .collect::<Result<_, _>>()?;
    let mut sources = HostSources::from_args(&args.fanout);
    sources.hostlists.extend(args.hosts.iter().cloned());
    let mut options = crate::plan::fanout_options(&args.fanout);
    options.host_timeout = options.host_timeout.or(Some(DEFAULT_HOST_TIMEOUT));
    Ok(CheckPlan {
        ssh,
        secret,
        aws,
        region_source,
        identities,
        sources,
        login: args.login.clone(),
        port: args.port,
        options,
        json: args.json,
    })
}
