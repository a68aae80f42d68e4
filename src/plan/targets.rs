//! Which hosts a fan-out or a rotation reaches: hostlists (`-w`, or one written in an scp
//! operand), `--hosts-file`, EC2 instances found by `--ec2-filter` (or the rotation
//! function's tag), minus `--exclude` exclusions; `@group` anywhere a hostlist goes.
//!
//! Owns: the one path from host sources to hosts, EC2 discovery included, without duplicates
//! and in the order the sources were given. Invariant: the result is never empty (an empty
//! selection is an error that says why), and a host found in EC2 keeps its instance id (SSM
//! addresses instances by id). Must not know: what will run on the hosts.

use std::collections::HashSet;
use std::path::PathBuf;

use crate::aws::ec2::{self, Ec2Error};
use crate::cli::args::FanoutArgs;
use crate::config::groups::{self, Expansion, GroupError, Groups};
use crate::config::hostlist::{self, HostSpec, HostlistError};
use crate::plan::{HostPlan, Local, SshOptions};

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
    #[error(transparent)]
    Groups(#[from] GroupError),
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
    let mut groups = LazyGroups::default();
    let group_filters = add_listed(sources, &mut hosts, &mut groups)?;
    // `--ec2-filter`s are one query (all must match); each EC2 group is a query of its own.
    let mut queries: Vec<Vec<&String>> = Vec::new();
    if !sources.ec2_filters.is_empty() {
        queries.push(sources.ec2_filters.iter().collect());
    }
    queries.extend(group_filters.iter().map(|f| vec![f]));
    for query in queries {
        let filters = query
            .into_iter()
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
    exclude(hosts.list, &sources.exclude, &mut groups)
}

/// Resolves sources that need no AWS call (hostlists and a hosts file), such as the hostlist
/// written in an scp operand; an EC2 group among them is refused.
pub fn resolve_listed(sources: &HostSources) -> Result<Vec<TargetHost>, TargetError> {
    let mut hosts = Unique::default();
    let mut groups = LazyGroups::default();
    let group_filters = add_listed(sources, &mut hosts, &mut groups)?;
    if let Some(filter) = group_filters.first() {
        return Err(GroupError::Ec2NotHere {
            group: format!("ec2:{filter}"),
            place: "this command",
        }
        .into());
    }
    exclude(hosts.list, &sources.exclude, &mut groups)
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
    let mut groups = LazyGroups::default();
    let host = groups.hosts_only(host, "an scp operand that gathers")?;
    for mut spec in hostlist::expand(&host).map_err(TargetError::Operand)? {
        if spec.user.is_none() {
            spec.user = user.map(str::to_owned);
        }
        spec.port = spec.port.or(port);
        hosts.add(TargetHost {
            spec,
            instance_id: None,
        });
    }
    exclude(hosts.list, exclusions, &mut groups)
}

/// Every group definition smssh reads, in this order: the administrator's `[groups]`
/// (`/etc/smssh/config.toml`, whose names a user cannot redefine), the user's
/// (`~/.config/smssh/config.toml`), then ClusterShell's group files found as ClusterShell
/// finds them. What was skipped is shown with `-v`.
pub fn load_groups() -> Result<Groups, GroupError> {
    let local = Local::detect();
    let user = local.tool_config_path();
    let mut groups = Groups::new(&user);
    groups.add_toml_file(&crate::audit::system_config_path(), true)?;
    groups.add_toml_file(&user, false)?;
    groups.add_clustershell(&clustershell_configs(&local))?;
    for note in &groups.notes {
        crate::term::diag::debug(note);
    }
    Ok(groups)
}

/// A group as `--list-groups` shows it: `@name`, and its hosts or why they cannot be named.
pub type ListedGroup = (String, Result<String, TargetError>);

/// `smssh --list-groups`: every group with what it stands for (its hosts as a short hostlist,
/// an EC2 group as `ec2:FILTER`), or why it cannot be expanded.
pub fn list_groups() -> Result<Vec<ListedGroup>, GroupError> {
    let groups = load_groups()?;
    let listed = groups
        .list()
        .into_iter()
        .map(|(term, expansion)| {
            let shown = expansion.map_err(TargetError::from).and_then(|expansion| {
                let mut parts = Vec::new();
                if let Some(list) = &expansion.hostlist {
                    let specs = hostlist::expand(list).map_err(TargetError::Hostlist)?;
                    let names: Vec<String> = specs.into_iter().map(|s| s.host).collect();
                    let names: Vec<&str> = names.iter().map(String::as_str).collect();
                    parts.push(hostlist::compress(&names));
                }
                parts.extend(expansion.ec2_filters.iter().map(|f| format!("ec2:{f}")));
                Ok(parts.join(","))
            });
            (term, shown)
        })
        .collect();
    Ok(listed)
}

/// ClusterShell 1.9's `groups.conf` places, lowest priority first: the system's, pip's
/// `--user` prefix, the XDG directory, then `$CLUSTERSHELL_CFGDIR`.
fn clustershell_configs(local: &Local) -> Vec<std::path::PathBuf> {
    let mut paths = vec![
        PathBuf::from("/etc/clustershell/groups.conf"),
        local.home.join(".local/etc/clustershell/groups.conf"),
    ];
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|d| !d.is_empty())
        .map_or_else(|| local.home.join(".config"), PathBuf::from);
    paths.push(xdg.join("clustershell/groups.conf"));
    if let Some(dir) = std::env::var_os("CLUSTERSHELL_CFGDIR") {
        paths.push(PathBuf::from(dir).join("groups.conf"));
    }
    paths
}

/// The group definitions, read the first time an expression names a group, so that a run
/// without `@` reads no group file.
#[derive(Default)]
struct LazyGroups(Option<Groups>);

impl LazyGroups {
    fn expand(&mut self, expr: &str) -> Result<Expansion, GroupError> {
        if !groups::mentions_group(expr) {
            return Ok(Expansion {
                hostlist: Some(expr.to_owned()),
                ec2_filters: Vec::new(),
            });
        }
        self.loaded()?.expand(expr)
    }

    /// `expr` with its groups replaced, for a place that takes host names only.
    fn hosts_only(&mut self, expr: &str, place: &'static str) -> Result<String, GroupError> {
        if !groups::mentions_group(expr) {
            return Ok(expr.to_owned());
        }
        self.loaded()?.expand_hosts(expr, place)
    }

    fn loaded(&mut self) -> Result<&Groups, GroupError> {
        if self.0.is_none() {
            self.0 = Some(load_groups()?);
        }
        Ok(self.0.get_or_insert_with(Groups::default))
    }
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

/// Adds the hosts of `-w` and `--hosts-file`, and returns the EC2 filters of the EC2 groups
/// they name.
fn add_listed(
    sources: &HostSources,
    hosts: &mut Unique,
    groups: &mut LazyGroups,
) -> Result<Vec<String>, TargetError> {
    let mut filters = Vec::new();
    for expr in &sources.hostlists {
        let expansion = groups.expand(expr)?;
        if let Some(list) = &expansion.hostlist {
            hosts.add_specs(hostlist::expand(list).map_err(TargetError::Hostlist)?);
        }
        filters.extend(expansion.ec2_filters);
    }
    if let Some(path) = &sources.hosts_file {
        let text = std::fs::read_to_string(path).map_err(|err| TargetError::HostsFileRead {
            path: path.display().to_string(),
            reason: err.to_string(),
        })?;
        // Each line's groups are replaced on that line, so errors keep their line numbers;
        // a line of EC2 groups alone becomes a blank line.
        let mut expanded = String::with_capacity(text.len());
        let mut file_filters = 0;
        for line in text.lines() {
            let bare = line.find('#').map_or(line, |at| &line[..at]);
            if groups::mentions_group(bare) {
                let expansion = groups.expand(bare)?;
                expanded.push_str(expansion.hostlist.as_deref().unwrap_or_default());
                file_filters += expansion.ec2_filters.len();
                filters.extend(expansion.ec2_filters);
            } else {
                expanded.push_str(line);
            }
            expanded.push('\n');
        }
        let only_groups = file_filters > 0 && expanded.trim().is_empty();
        if !only_groups {
            hosts.add_specs(
                hostlist::parse_hosts_file(&expanded, &path.display().to_string())
                    .map_err(TargetError::HostsFile)?,
            );
        }
    }
    filters.dedup();
    Ok(filters)
}

fn exclude(
    mut hosts: Vec<TargetHost>,
    exclusions: &[String],
    groups: &mut LazyGroups,
) -> Result<Vec<TargetHost>, TargetError> {
    for expr in exclusions {
        let names = groups.hosts_only(expr, "--exclude")?;
        let specs = hosts.iter().map(|h| h.spec.clone()).collect();
        let kept: HashSet<HostSpec> = hostlist::exclude(specs, &names)
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
