//! Which hosts a fan-out reaches: `-w` hostlists, `--hosts-file`, `--ec2-filter` discovery,
//! minus `-x` exclusions.
//!
//! Owns: combining the host sources in the order given, without duplicates. Invariant: the
//! result is never empty (an empty selection is an error that says why). Must not know: SSH
//! options or what will run on the hosts.

use crate::args::FanoutArgs;
use crate::ec2::{self, Ec2Error};
use crate::hostlist::{self, HostSpec, HostlistError};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("-w: {0}")]
    Hostlist(HostlistError),
    #[error("{path}: {reason}: check the --hosts-file path")]
    HostsFileRead { path: String, reason: String },
    #[error(transparent)]
    HostsFile(HostlistError),
    #[error("-x: {0}")]
    Exclude(HostlistError),
    #[error(transparent)]
    Ec2(#[from] Ec2Error),
}

/// Resolves the hosts the flags name. EC2 discovery runs only when a filter is given.
pub async fn resolve(
    args: &FanoutArgs,
    aws: &aws_config::SdkConfig,
) -> Result<Vec<HostSpec>, TargetError> {
    let mut hosts: Vec<HostSpec> = Vec::new();
    let mut add = |more: Vec<HostSpec>| {
        for host in more {
            if !hosts.contains(&host) {
                hosts.push(host);
            }
        }
    };
    for expr in &args.hosts {
        add(hostlist::expand(expr).map_err(TargetError::Hostlist)?);
    }
    if let Some(path) = &args.hosts_file {
        let text = std::fs::read_to_string(path).map_err(|err| TargetError::HostsFileRead {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
        add(
            hostlist::parse_hosts_file(&text, &path.display().to_string())
                .map_err(TargetError::HostsFile)?,
        );
    }
    if !args.ec2_filter.is_empty() {
        let filters = args
            .ec2_filter
            .iter()
            .map(|f| ec2::parse_filter(f))
            .collect::<Result<Vec<_>, _>>()?;
        let addresses = ec2::discover(aws, &filters).await?;
        add(addresses
            .into_iter()
            .map(|host| HostSpec {
                user: None,
                host,
                port: None,
            })
            .collect());
    }
    for expr in &args.exclude {
        hosts = hostlist::exclude(hosts, expr).map_err(TargetError::Exclude)?;
    }
    Ok(hosts)
}
