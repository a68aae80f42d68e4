//! The rotation function's half: its settings from environment variables and one Secrets
//! Manager rotation event (`{"SecretId", "ClientRequestToken", "Step"}`) run through the same
//! steps `smssh rotate` uses. The Lambda crate only wires this to lambda_runtime.
//!
//! Owns: the environment variables the function reads (the original sample's `USERNAME`,
//! `TAGNAME`, `TAGVALUE`, and `SMSSH_*`) and their defaults, and how the function finds its
//! workers. Invariant: the function has no disk state; host keys come from the secret's
//! `KnownHosts` (or are learned at createSecret when `SMSSH_LEARN_HOST_KEYS=true`), and an
//! unknown host is refused, never trusted silently. Must not know: lambda_runtime.

use std::path::PathBuf;
use std::time::Duration;

use crate::aws::secret::VersionSelector;
use crate::cli::args::SshOptionArgs;
use crate::key::source::SecretSpec;
use crate::plan::targets::{HostSources, TargetError};
use crate::plan::{FanoutOptions, Local, PlanError, SshOptions};
use crate::rotation::{self, Channel, Reporter, Rotation, RotationError, Settings, Step, Target};

/// A rotation event as Secrets Manager sends it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct RotationEvent {
    #[serde(rename = "SecretId")]
    pub secret_id: String,
    #[serde(rename = "ClientRequestToken")]
    pub client_request_token: String,
    #[serde(rename = "Step")]
    pub step: String,
}

#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    #[error("environment variable {name}={value:?}: {reason}")]
    Setting {
        name: &'static str,
        value: String,
        reason: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error(transparent)]
    Step(#[from] rotation::UnknownStep),
    #[error("workers: {0}")]
    Targets(#[from] TargetError),
    #[error("SSH options: {0}")]
    SshOptions(#[from] PlanError),
    #[error(transparent)]
    Rotation(#[from] RotationError),
}

/// The function's settings.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    /// The account on the workers (`USERNAME`, default ec2-user).
    pub user: String,
    /// EC2 tag selecting the workers (`TAGNAME`=`TAGVALUE`, default RotateSSHKeys=True).
    pub tag_name: String,
    pub tag_value: String,
    /// A hostlist instead of the EC2 tag (`SMSSH_TARGETS`; SSH deploy only).
    pub targets: Option<String>,
    /// The VPC the workers must be in (`SMSSH_VPC_ID`): a second condition next to the tag,
    /// which the operator controls, so that whoever may tag an instance elsewhere cannot bring
    /// it into the rotation.
    pub vpc_id: Option<String>,
    /// SSH port of the workers (`SMSSH_PORT`, default 22).
    pub port: Option<u16>,
    pub connect_timeout: Duration,
    pub settings: Settings,
}

fn setting<T, E>(
    vars: &dyn Fn(&str) -> Option<String>,
    name: &'static str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Result<Option<T>, FunctionError>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match vars(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(None),
        Some(value) => parse(value.trim())
            .map(Some)
            .map_err(|reason| FunctionError::Setting {
                name,
                value,
                reason: Box::new(reason),
            }),
    }
}

/// A text setting: any value is accepted.
fn text(value: &str) -> Result<String, std::convert::Infallible> {
    Ok(value.to_owned())
}

#[derive(Debug, thiserror::Error)]
#[error("use true or false")]
struct NotBool;

fn parse_bool(text: &str) -> Result<bool, NotBool> {
    match text.to_ascii_lowercase().as_str() {
        "true" | "yes" | "1" => Ok(true),
        "false" | "no" | "0" => Ok(false),
        _ => Err(NotBool),
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not a number in range")]
struct NotNumber;

#[derive(Debug, thiserror::Error)]
#[error("not a VPC id: write vpc- and 8 or 17 hexadecimal digits")]
struct NotVpcId;

fn parse_vpc_id(text: &str) -> Result<String, NotVpcId> {
    let digits = text.strip_prefix("vpc-").ok_or(NotVpcId)?;
    let hex = digits
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if hex && matches!(digits.len(), 8 | 17) {
        Ok(text.to_owned())
    } else {
        Err(NotVpcId)
    }
}

fn parse_number<T: std::str::FromStr>(text: &str) -> Result<T, NotNumber> {
    text.parse().map_err(|_| NotNumber)
}

impl FunctionConfig {
    /// Reads the settings through `vars` (the process environment in the function).
    pub fn from_env(
        vars: &dyn Fn(&str) -> Option<String>,
    ) -> Result<FunctionConfig, FunctionError> {
        let user = setting(vars, "USERNAME", |u| {
            rotation::block::validate_user(u).map(|()| u.to_owned())
        })?
        .unwrap_or_else(|| "ec2-user".to_owned());
        let channel =
            setting(vars, "SMSSH_DEPLOY", |t| t.parse::<Channel>())?.unwrap_or(Channel::Ssm);
        let targets = setting(vars, "SMSSH_TARGETS", text)?;
        if channel == Channel::Ssm && targets.is_some() {
            return Err(FunctionError::Setting {
                name: "SMSSH_TARGETS",
                value: targets.unwrap_or_default(),
                reason: "SSM reaches instances by id: leave SMSSH_TARGETS unset and tag the instances, or set SMSSH_DEPLOY=ssh".into(),
            });
        }
        let authorized_keys_file = setting(vars, "SMSSH_AUTHORIZED_KEYS_FILE", |f| {
            rotation::block::validate_file(f).map(|()| f.to_owned())
        })?;
        let settings = Settings {
            key_type: setting(
                vars,
                "SMSSH_KEY_TYPE",
                str::parse::<rotation::keygen::KeyType>,
            )?
            .unwrap_or_default(),
            grace: setting(vars, "SMSSH_GRACE", rotation::parse_duration)?.unwrap_or_default(),
            // The function has no bootstrap key: it never logs in with the operator's own.
            retire_bootstrap_key: false,
            learn_host_keys: setting(vars, "SMSSH_LEARN_HOST_KEYS", parse_bool)?.unwrap_or(false),
            channel,
            ssm_user: user.clone(),
            authorized_keys_file,
            ssm_timeout: Duration::from_secs(
                setting(vars, "SMSSH_SSM_TIMEOUT", parse_number::<u64>)?
                    .unwrap_or(120)
                    .max(1),
            ),
            fanout: FanoutOptions {
                parallel: setting(vars, "SMSSH_PARALLEL", parse_number::<usize>)?
                    .unwrap_or(64)
                    .max(1),
                host_timeout: Some(Duration::from_secs(60)),
                retries: 2,
                ..FanoutOptions::default()
            },
            require_rotation_enabled: true,
        };
        Ok(FunctionConfig {
            user,
            tag_name: setting(vars, "TAGNAME", text)?.unwrap_or_else(|| "RotateSSHKeys".to_owned()),
            tag_value: setting(vars, "TAGVALUE", text)?.unwrap_or_else(|| "True".to_owned()),
            targets,
            vpc_id: setting(vars, "SMSSH_VPC_ID", parse_vpc_id)?,
            port: setting(vars, "SMSSH_PORT", parse_number::<u16>)?,
            connect_timeout: Duration::from_secs(
                setting(vars, "SMSSH_CONNECT_TIMEOUT", parse_number::<u64>)?
                    .unwrap_or(10)
                    .max(1),
            ),
            settings,
        })
    }

    /// The SSH options of every login: no config file, no known_hosts file (the secret's
    /// KnownHosts is the only source), never a prompt.
    fn ssh_options(&self) -> Result<SshOptions, FunctionError> {
        let args = SshOptionArgs {
            options: vec![
                "BatchMode=yes".to_owned(),
                "StrictHostKeyChecking=yes".to_owned(),
                "UserKnownHostsFile=/dev/null".to_owned(),
                "GlobalKnownHostsFile=/dev/null".to_owned(),
                format!("ConnectTimeout={}", self.connect_timeout.as_secs()),
            ],
            config_file: Some("none".to_owned()),
            verbose: 0,
            quiet: true,
        };
        let local = Local {
            home: PathBuf::from("/tmp"),
            user: self.user.clone(),
        };
        Ok(SshOptions::load(&args, &[], &local)?)
    }

    /// Where the workers come from: `SMSSH_TARGETS`, or else the instances with the tag.
    fn host_sources(&self) -> HostSources {
        match &self.targets {
            Some(expr) => HostSources {
                hostlists: vec![expr.clone()],
                ..HostSources::default()
            },
            None => HostSources {
                ec2_filters: std::iter::once(format!("tag:{}={}", self.tag_name, self.tag_value))
                    .chain(self.vpc_id.iter().map(|vpc| format!("vpc-id={vpc}")))
                    .collect(),
                ..HostSources::default()
            },
        }
    }

    async fn targets(&self, aws: &aws_config::SdkConfig) -> Result<Vec<Target>, FunctionError> {
        let ssh = self.ssh_options()?;
        let sources = self.host_sources();
        Ok(Target::resolve(&sources, &ssh, Some(&self.user), self.port, aws).await?)
    }
}

/// Runs the event's step. Returns the step's one-line summary.
pub async fn handle(
    config: &FunctionConfig,
    aws: &aws_config::SdkConfig,
    event: &RotationEvent,
    report: Reporter,
    audit: std::sync::Arc<crate::audit::Auditor>,
) -> Result<String, FunctionError> {
    let step: Step = event.step.parse()?;
    rotation::block::validate_version_id(&event.client_request_token).map_err(|e| {
        FunctionError::Setting {
            name: "ClientRequestToken",
            value: event.client_request_token.clone(),
            reason: Box::new(e),
        }
    })?;
    let targets = config.targets(aws).await?;
    let spec = SecretSpec {
        id: event.secret_id.clone(),
        selector: VersionSelector::Stage(rotation::store::AWSCURRENT.to_owned()),
        field: None,
        fallback_stage: None,
        aws: crate::aws::AwsSettings::default(),
    };
    let rotation =
        Rotation::new(aws, spec, config.settings.clone(), targets, None, report)?.with_audit(audit);
    let outcome = rotation
        .run_step(step, &event.client_request_token, false)
        .await?;
    Ok(format!("{}: {}", outcome.step, outcome.summary))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn config(pairs: &[(&str, &str)]) -> Result<FunctionConfig, FunctionError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        FunctionConfig::from_env(&move |name| map.get(name).cloned())
    }

    #[test]
    fn defaults_follow_the_original_sample() {
        let config = config(&[]).unwrap();
        assert_eq!(config.user, "ec2-user");
        assert_eq!(config.tag_name, "RotateSSHKeys");
        assert_eq!(config.tag_value, "True");
        assert_eq!(config.settings.channel, Channel::Ssm);
        assert_eq!(config.settings.key_type, rotation::keygen::KeyType::Ed25519);
        assert!(config.settings.require_rotation_enabled);
        assert!(!config.settings.learn_host_keys);
    }

    #[test]
    fn settings_are_read_and_bad_ones_name_the_variable() {
        let good = config(&[
            ("USERNAME", "hpc"),
            ("SMSSH_DEPLOY", "ssh"),
            ("SMSSH_TARGETS", "worker[01-04]"),
            ("SMSSH_KEY_TYPE", "rsa-3072"),
            ("SMSSH_GRACE", "2h"),
            ("SMSSH_LEARN_HOST_KEYS", "TRUE"),
            ("SMSSH_PORT", "2222"),
        ])
        .unwrap();
        assert_eq!(good.user, "hpc");
        assert_eq!(good.settings.ssm_user, "hpc");
        assert_eq!(good.settings.grace, Duration::from_secs(7200));
        assert!(good.settings.learn_host_keys);
        assert_eq!(good.port, Some(2222));
        let cases = [
            ("USERNAME", "a b"),
            ("SMSSH_DEPLOY", "scp"),
            ("SMSSH_KEY_TYPE", "dsa"),
            ("SMSSH_GRACE", "soon"),
            ("SMSSH_LEARN_HOST_KEYS", "maybe"),
            ("SMSSH_PORT", "70000"),
            ("SMSSH_SSM_TIMEOUT", "-1"),
            ("SMSSH_AUTHORIZED_KEYS_FILE", "a\nb"),
        ];
        for (name, value) in cases {
            let err = config(&[(name, value)]).unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
        }
        let err = config(&[("SMSSH_VPC_ID", "vpc-0123;rm")]).unwrap_err();
        assert!(err.to_string().contains("SMSSH_VPC_ID"), "{err}");
        let err = config(&[("SMSSH_TARGETS", "w1")]).unwrap_err();
        assert!(err.to_string().contains("SMSSH_DEPLOY=ssh"), "{err}");
    }

    #[test]
    fn events_parse_with_the_services_field_names() {
        let event: RotationEvent = serde_json::from_str(
            r#"{"SecretId":"/dev/ssh","ClientRequestToken":"t-1","Step":"setSecret"}"#,
        )
        .unwrap();
        assert_eq!(event.secret_id, "/dev/ssh");
        assert_eq!(event.client_request_token, "t-1");
        assert_eq!(event.step.parse::<Step>().unwrap(), Step::Set);
    }

    #[test]
    fn workers_are_the_tagged_instances_of_the_functions_vpc_when_one_is_set() {
        let tagged = config(&[]).unwrap().host_sources();
        assert_eq!(tagged.ec2_filters, ["tag:RotateSSHKeys=True"]);
        let in_vpc = config(&[("SMSSH_VPC_ID", "vpc-0123456789abcdef0")])
            .unwrap()
            .host_sources();
        assert_eq!(
            in_vpc.ec2_filters,
            ["tag:RotateSSHKeys=True", "vpc-id=vpc-0123456789abcdef0"]
        );
        let listed = config(&[
            ("SMSSH_DEPLOY", "ssh"),
            ("SMSSH_TARGETS", "w[1-2]"),
            ("SMSSH_VPC_ID", "vpc-01234567"),
        ])
        .unwrap()
        .host_sources();
        assert_eq!(listed.hostlists, ["w[1-2]"]);
        assert!(listed.ec2_filters.is_empty());
    }
}
