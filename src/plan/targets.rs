//! Which hosts a fan-out or a rotation reaches: hostlists (`-w`, or one written in an scp
//! operand), `--hosts-file`, EC2 instances found by `--ec2-filter` (or the rotation
//! function's tag), minus `--exclude` exclusions.
//!
//! Owns: the one path from host sources to hosts, EC2 discovery included, without duplicates
//! and in the order the sources were given. Invariant: the result is never empty (an empty
//! selection is an error that says why), and a host found in EC2 keeps its instance id (SSM
//! addresses instances by id). Must not know: what will run on the hosts.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::aws::ec2::{self, Ec2Error};
use crate::cli::args::FanoutArgs;
use crate::config::hostlist::{self, HostSpec, HostlistError};
use crate::plan::{HostPlan, SshOptions};

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error("-w: {0}")]
    Hostlist(HostlistError),
    #[error("{path}: {reason}: check the --hosts-file path")]
    HostsFileRead { path: String, reason: String },
    #[error(transparent)]
    HostsFile(HostlistError),
    #[error("--exclude {expr}: {source}")]
    Exclude { expr: String, source: HostlistError },
    #[error(transparent)]
    Ec2(#[from] Ec2Error),
    /// A hostlist written in an scp operand (`user@worker[1-8]:path`).
    #[error(transparent)]
    Operand(HostlistError),
}

/// Where the hosts come from, as the user (or the function's environment) named them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostSources {
    pub hostlists: Vec<String>,
    pub hosts_file: Option<PathBuf>,
    /// `name=value[,value...]` filters, all of which an instance must match.
    pub ec2_filters: Vec<String>,
    pub exclude: Vec<String>,
}

impl HostSources {
    pub fn from_args(args: &FanoutArgs) -> HostSources {
        HostSources {
            hostlists: args.hosts.clone(),
            hosts_file: args.hosts_file.clone(),
            ec2_filters: args.ec2_filter.clone(),
            exclude: args.exclude.clone(),
        }
    }

    /// True when some source names hosts (as opposed to exclusions alone).
    pub fn names_hosts(&self) -> bool {
        !self.hostlists.is_empty() || self.hosts_file.is_some() || !self.ec2_filters.is_empty()
    }
}

/// One host to reach, with its EC2 instance id when discovery found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetHost {
    pub spec: HostSpec,
    pub instance_id: Option<String>,
}

/// Resolves every source. EC2 is asked only when a filter is given.
pub async fn resolve(
    sources: &HostSources,
    aws: &aws_config::SdkConfig,
) -> Result<Vec<TargetHost>, TargetError> {
    let mut hosts = Unique::default();
    add_listed(sources, &mut hosts)?;
    if !sources.ec2_filters.is_empty() {
        let filters = sources
            .ec2_filters
            .iter()
            .map(|f| ec2::parse_filter(f))
            .collect::<Result<Vec<_>, _>>()?;
        for instance in ec2::discover(aws, &filters, ec2::PAGE_SIZE).await? {
            hosts.add(TargetHost {
                spec: HostSpec {
                    user: None,
                    host: instance.private_address,
                    port: None,
                },
                instance_id: Some(instance.instance_id),
            });
        }
    }
    exclude(hosts.list, &sources.exclude)
}

/// Resolves sources that need no AWS call (hostlists and a hosts file), such as the hostlist
/// written in an scp operand.
pub fn resolve_listed(sources: &HostSources) -> Result<Vec<TargetHost>, TargetError> {
    let mut hosts = Unique::default();
    add_listed(sources, &mut hosts)?;
    exclude(hosts.list, &sources.exclude)
}

/// Expands the hostlist written in an scp operand; the operand's user and port apply to the
/// hosts that do not name their own, and `--exclude` still excludes.
pub fn expand_operand(
    host: &str,
    user: Option<&str>,
    port: Option<u16>,
    exclusions: &[String],
) -> Result<Vec<TargetHost>, TargetError> {
    let mut hosts = Unique::default();
    for mut spec in hostlist::expand(host).map_err(TargetError::Operand)? {
        if spec.user.is_none() {
            spec.user = user.map(str::to_owned);
        }
        spec.port = spec.port.or(port);
        hosts.add(TargetHost {
            spec,
            instance_id: None,
        });
    }
    exclude(hosts.list, exclusions)
}

/// One plan per host. `user` and `port` (from -l/-p/-P or an operand) apply to hosts that do
/// not name their own.
pub fn plans(
    hosts: &[TargetHost],
    ssh: &SshOptions,
    user: Option<&str>,
    port: Option<u16>,
) -> Vec<HostPlan> {
    hosts
        .iter()
        .map(|h| {
            ssh.plan(
                &h.spec.host,
                h.spec.user.as_deref().or(user),
                h.spec.port.or(port),
            )
        })
        .collect()
}

/// Hosts in first-seen order without duplicates, in linear time whatever their number.
#[derive(Default)]
struct Unique {
    seen: HashSet<HostSpec>,
    list: Vec<TargetHost>,
}

impl Unique {
    fn add(&mut self, host: TargetHost) {
        if self.seen.insert(host.spec.clone()) {
            self.list.push(host);
        }
    }

    fn add_specs(&mut self, specs: Vec<HostSpec>) {
        for spec in specs {
            self.add(TargetHost {
                spec,
                instance_id: None,
            });
        }
    }
}

fn add_listed(sources: &HostSources, hosts: &mut Unique) -> Result<(), TargetError> {
    for expr in &sources.hostlists {
        hosts.add_specs(hostlist::expand(expr).map_err(TargetError::Hostlist)?);
    }
    if let Some(path) = &sources.hosts_file {
        let text = std::fs::read_to_string(path).map_err(|err| TargetError::HostsFileRead {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
        hosts.add_specs(
            hostlist::parse_hosts_file(&text, &path.display().to_string())
                .map_err(TargetError::HostsFile)?,
        );
    }
    Ok(())
}

fn exclude(
    mut hosts: Vec<TargetHost>,
    exclusions: &[String],
) -> Result<Vec<TargetHost>, TargetError> {
    for expr in exclusions {
        let specs = hosts.iter().map(|h| h.spec.clone()).collect();
        let kept: HashSet<HostSpec> = hostlist::exclude(specs, expr)
            .map_err(|source| TargetError::Exclude {
                expr: expr.clone(),
                source,
            })?
            .into_iter()
            .collect();
        hosts.retain(|h| kept.contains(&h.spec));
    }
    Ok(hosts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(hosts: &[TargetHost]) -> Vec<String> {
        hosts.iter().map(|h| h.spec.host.clone()).collect()
    }

    #[test]
    fn listed_sources_combine_in_order_without_duplicates() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, "w3\nw1 # again\nw4\n").unwrap();
        let cases: [(HostSources, Result<Vec<&str>, &str>); 4] = [
            (
                HostSources {
                    hostlists: vec!["w[1-3]".into(), "w2,w5".into()],
                    ..HostSources::default()
                },
                Ok(vec!["w1", "w2", "w3", "w5"]),
            ),
            (
                HostSources {
                    hostlists: vec!["w[1-2]".into()],
                    hosts_file: Some(file.clone()),
                    exclude: vec!["w3".into()],
                    ..HostSources::default()
                },
                Ok(vec!["w1", "w2", "w4"]),
            ),
            (
                HostSources {
                    hostlists: vec!["w1".into()],
                    exclude: vec!["w1".into()],
                    ..HostSources::default()
                },
                Err("--exclude w1"),
            ),
            (
                HostSources {
                    hosts_file: Some(dir.path().join("missing")),
                    ..HostSources::default()
                },
                Err("check the --hosts-file path"),
            ),
        ];
        for (sources, expected) in cases {
            let got = resolve_listed(&sources);
            match (got, expected) {
                (Ok(hosts), Ok(want)) => assert_eq!(names(&hosts), want, "{sources:?}"),
                (Err(err), Err(needle)) => {
                    assert!(err.to_string().contains(needle), "{sources:?}: {err}")
                }
                (got, want) => panic!("{sources:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn duplicates_among_forty_thousand_hosts_are_removed_in_one_pass() {
        let sources = HostSources {
            hostlists: vec!["n[00001-40000]".into(), "n[00001-40000]".into()],
            ..HostSources::default()
        };
        let hosts = resolve_listed(&sources).unwrap();
        assert_eq!(hosts.len(), 40_000);
        assert_eq!(hosts[39_999].spec.host, "n40000");
    }

    #[test]
    fn names_hosts_ignores_exclusions_alone() {
        let only_exclude = HostSources {
            exclude: vec!["w1".into()],
            ..HostSources::default()
        };
        assert!(!only_exclude.names_hosts());
        let with_ec2 = HostSources {
            ec2_filters: vec!["tag:Role=worker".into()],
            ..HostSources::default()
        };
        assert!(with_ec2.names_hosts());
    }
}
