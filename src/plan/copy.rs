//! smscp's plan: what the operands and flags ask for, resolved before anything connects.
//!
//! Owns: the choice between a single-host copy (scp's own shapes) and a fan-out (a push to
//! every host of a hostlist or of `-w`/`--hosts-file`/`--ec2-filter`, or a gather from every
//! host into `DIR/<host>/`), and the shape rules that refuse a copy before any secret is read.
//! Invariant: every operand is parsed exactly once, here. Must not know: SFTP or sessions.

use std::path::PathBuf;

use crate::aws::s3::S3Prefix;
use crate::cli::args::ScpArgs;
use crate::config::hostlist;
use crate::config::operand::{self, is_plain_name, Operand, RemotePath};
use crate::plan::command::RefusedFlag;
use crate::plan::targets::{self, HostSources, TargetHost};
use crate::plan::{fanout_options, resolve_common, Common, FanoutOptions, PlanError};

/// A single-host copy, as scp takes it.
#[derive(Debug, Clone)]
pub struct CopyRequest {
    pub sources: Vec<Operand>,
    pub target: Operand,
    pub recursive: bool,
    pub preserve: bool,
    /// `-P`: applies to every remote operand without its own port.
    pub port: Option<u16>,
}

/// Where a fan-out copy goes.
#[derive(Debug, Clone)]
pub enum FanoutCopy {
    /// Local sources to the same remote path on every host.
    Push {
        sources: Vec<PathBuf>,
        target: String,
    },
    /// Remote paths from every host into `target/<host>/`.
    Gather {
        sources: Vec<String>,
        target: PathBuf,
    },
}

/// Which hosts a fan-out copy reaches.
#[derive(Debug, Clone)]
pub enum FanoutHosts {
    /// Expanded from the hostlist written in an operand.
    Expanded(Vec<TargetHost>),
    /// Still to be resolved from the flags, since EC2 discovery needs the AWS configuration.
    Sources(HostSources),
}

#[derive(Debug, Clone)]
pub enum CopyMode {
    Single(CopyRequest),
    Fanout {
        copy: FanoutCopy,
        hosts: FanoutHosts,
    },
}

/// Everything smscp was asked to do.
#[derive(Debug)]
pub struct CopyPlan {
    pub common: Common,
    pub mode: CopyMode,
    pub recursive: bool,
    pub preserve: bool,
    pub limit_kbits: Option<u64>,
    /// `--max-dir-entries`: the most entries one remote directory listing may have.
    pub max_dir_entries: usize,
    /// `-P`, for hosts and operands without their own port.
    pub port: Option<u16>,
    pub fanout: FanoutOptions,
    /// `--via s3://...` (or the config file's `copy_via`): the upload goes through S3.
    pub via: Option<ViaS3>,
}

/// An upload carried through S3 rather than over each host's SSH session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViaS3 {
    pub location: S3Prefix,
    /// `--sse-kms-key-id` (or `copy_sse_kms_key_id`): SSE-KMS with this key.
    pub kms_key: Option<String>,
    /// `--keep`: the objects stay in S3 after the copy.
    pub keep: bool,
    /// The copy was written as scp's single-host upload (`FILE host:PATH`): its failures are
    /// reported as scp reports them, not as a fan-out's summary.
    pub single_host: bool,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CopyPlanError {
    #[error("no target given")]
    NoTarget,
    #[error("both {0} and the target are local: use cp")]
    LocalToLocal(String),
    #[error("{host}:{path}: a fan-out copies local files to every host; remote sources are not supported here")]
    RemoteSourceInPush { host: String, path: String },
    #[error("{host}:{path}: with -w, --hosts-file or --ec2-filter write the target as a remote path (e.g. /opt/), without host:")]
    HostInFlagTarget { host: String, path: String },
    #[error("a gather copies from one hostlist: give every source as the same HOSTS:path")]
    GatherFromSeveralHostlists,
    #[error("a gather needs a local target directory")]
    GatherToRemote,
    #[error("{0}: Not a directory: a gather writes DIR/<host>/...; create the directory first")]
    GatherTargetNotDirectory(String),
    #[error("{0:?}: a gather writes DIR/<host>/..., and this host name is not a plain directory name: name the host differently (an alias in ~/.ssh/config)")]
    GatherHostName(String),
    #[error(transparent)]
    Refused(#[from] RefusedFlag),
    #[error("--via {0}")]
    Via(#[from] crate::aws::s3::S3UrlError),
    #[error("--via {0:?}: write direct or s3://BUCKET/PREFIX")]
    ViaUnknown(String),
    #[error("{0} applies to --via s3://BUCKET/PREFIX: add --via or remove {0}")]
    ViaOnly(&'static str),
    #[error(
        "--via s3:// carries uploads (local files to remote hosts): copy this with --via direct"
    )]
    ViaUploadsOnly,
    #[error("-l limits SSH traffic, and --via s3:// moves the files over HTTPS: remove -l or use --via direct")]
    ViaWithLimit,
}

/// Refuses the scp flags whose meaning smscp does not provide (see the README's "Drop-in
/// behaviour"); the flags accepted with no effect need no check.
fn refuse_unsupported(args: &ScpArgs) -> Result<(), RefusedFlag> {
    let refusal = [
        args.forward_agent.then_some(RefusedFlag::AgentForwarding),
        args.sftp_server_path
            .clone()
            .map(RefusedFlag::SftpServerPath),
        args.remote_to_remote.then_some(RefusedFlag::RemoteToRemote),
        args.program.clone().map(RefusedFlag::Program),
    ]
    .into_iter()
    .flatten()
    .next();
    refusal.map_or(Ok(()), Err)
}

/// Resolves smscp's command line: operands first (so that a typo is reported before any
/// configuration is read), then the SSH options and the secret.
pub fn resolve(args: &ScpArgs) -> Result<CopyPlan, PlanError> {
    refuse_unsupported(args).map_err(CopyPlanError::from)?;
    let mut operands = Vec::with_capacity(args.operands.len());
    for text in &args.operands {
        let parsed = operand::parse_operand(text).map_err(|source| PlanError::Operand {
            text: text.clone(),
            source,
        })?;
        operands.push(group_operand(text, parsed));
    }
    let raw_target = args.operands.last().cloned().unwrap_or_default();
    let mode = copy_mode(args, operands, &raw_target)?;
    if args.fail_fast && matches!(mode, CopyMode::Single(_)) {
        return Err(PlanError::FailFastWithoutHosts);
    }
    let (mode, via) = resolve_via(args, mode)?;
    let mut implied = Vec::new();
    // -J is ProxyJump given first, so it beats -o ProxyCommand and the files.
    let jump = args.jump.as_ref().map(|jump| format!("ProxyJump={jump}"));
    implied.extend(jump.as_deref());
    // -c is Ciphers given before -o, so it beats -o Ciphers as in OpenSSH.
    let ciphers = args
        .cipher_spec
        .as_ref()
        .map(|spec| format!("Ciphers={spec}"));
    implied.extend(ciphers.as_deref());
    if args.batch {
        implied.push("BatchMode=yes");
    }
    if args.compression {
        implied.push("Compression=yes");
    }
    // -4 and -6 are AddressFamily given first; given both, -4 wins, as for smssh.
    if args.ipv4 {
        implied.push("AddressFamily=inet");
    }
    if args.ipv6 {
        implied.push("AddressFamily=inet6");
    }
    Ok(CopyPlan {
        common: resolve_common(
            &args.ssh,
            &args.fanout,
            &args.secret,
            &implied,
            &args.identity_file,
        )?,
        mode,
        recursive: args.recursive,
        preserve: args.preserve,
        limit_kbits: args.limit_kbits,
        max_dir_entries: usize::try_from(args.max_dir_entries).unwrap_or(usize::MAX),
        port: args.port,
        fanout: FanoutOptions {
            fail_fast: args.fail_fast,
            ..fanout_options(&args.fanout)
        },
        via,
    })
}

/// Whether the copy goes through S3: `--via` beats the config file's `copy_via`, and `direct`
/// in either turns it off. A default from the file applies only where it can (an upload of
/// files without -r or -l); an explicit `--via s3://` (or `--keep`, `--sse-kms-key-id`) on
/// another copy is refused. A single-host
/// upload becomes a push to one host, which is how the S3 path runs it.
fn resolve_via(args: &ScpArgs, mode: CopyMode) -> Result<(CopyMode, Option<ViaS3>), PlanError> {
    let file = crate::plan::load_tool_config(&crate::plan::Local::detect().tool_config_path())?;
    let explicit = args.via.is_some();
    let location = match args.via.clone().or(file.copy_via).as_deref() {
        None | Some("direct") => None,
        Some(text) if text.starts_with("s3://") => {
            Some(S3Prefix::parse(text).map_err(CopyPlanError::from)?)
        }
        Some(text) => return Err(CopyPlanError::ViaUnknown(text.to_owned()).into()),
    };
    let Some(location) = location else {
        if args.keep {
            return Err(CopyPlanError::ViaOnly("--keep").into());
        }
        if args.sse_kms_key_id.is_some() {
            return Err(CopyPlanError::ViaOnly("--sse-kms-key-id").into());
        }
        return Ok((mode, None));
    };
    let upload = match &mode {
        CopyMode::Fanout {
            copy: FanoutCopy::Push { .. },
            ..
        } => true,
        CopyMode::Single(request) => {
            matches!(request.target, Operand::Remote(_))
                && request
                    .sources
                    .iter()
                    .all(|s| matches!(s, Operand::Local(_)))
        }
        CopyMode::Fanout { .. } => false,
    };
    // --keep and --sse-kms-key-id ask for S3, so with them the default is not dropped.
    let asks_for_s3 = explicit || args.keep || args.sse_kms_key_id.is_some();
    if !asks_for_s3 && (!upload || args.recursive || args.limit_kbits.is_some()) {
        return Ok((mode, None));
    }
    if !upload {
        return Err(CopyPlanError::ViaUploadsOnly.into());
    }
    if args.limit_kbits.is_some() {
        return Err(CopyPlanError::ViaWithLimit.into());
    }
    let single_host = matches!(mode, CopyMode::Single(_));
    let mode = match mode {
        CopyMode::Single(CopyRequest {
            sources,
            target: Operand::Remote(target),
            ..
        }) => CopyMode::Fanout {
            copy: FanoutCopy::Push {
                sources: local_sources(&sources)?,
                target: target.path,
            },
            hosts: FanoutHosts::Expanded(vec![TargetHost {
                spec: hostlist::HostSpec {
                    user: target.user,
                    host: target.host,
                    port: target.port,
                },
                instance_id: None,
            }]),
        },
        other => other,
    };
    Ok((
        mode,
        Some(ViaS3 {
            location,
            kms_key: args.sse_kms_key_id.clone().or(file.copy_sse_kms_key_id),
            keep: args.keep,
            single_host,
        }),
    ))
}

fn copy_mode(
    args: &ScpArgs,
    mut operands: Vec<Operand>,
    raw_target: &str,
) -> Result<CopyMode, PlanError> {
    // clap requires a source and a target, so the list is never empty here; an empty one is
    // still answered with one line rather than a panic.
    let Some(target) = operands.pop() else {
        return Err(CopyPlanError::NoTarget.into());
    };
    let sources = HostSources::from_args(&args.fanout);
    if sources.names_hosts() && args.gather_from_hosts {
        // rpdcp's form: every source is a path on every host, the target a local directory.
        let Operand::Local(dir) = target else {
            return Err(CopyPlanError::GatherToRemote.into());
        };
        if !dir.is_dir() {
            return Err(CopyPlanError::GatherTargetNotDirectory(dir.display().to_string()).into());
        }
        let count = operands.len();
        return Ok(CopyMode::Fanout {
            copy: FanoutCopy::Gather {
                sources: args.operands[..count].to_vec(),
                target: dir,
            },
            hosts: FanoutHosts::Sources(sources),
        });
    }
    if sources.names_hosts() {
        // pdcp's form: the target is a path on every host.
        let target = match target {
            Operand::Local(_) => raw_target.to_owned(),
            Operand::Remote(r) => {
                return Err(CopyPlanError::HostInFlagTarget {
                    host: r.host,
                    path: r.path,
                }
                .into())
            }
        };
        return Ok(CopyMode::Fanout {
            copy: FanoutCopy::Push {
                sources: local_sources(&operands)?,
                target,
            },
            hosts: FanoutHosts::Sources(sources),
        });
    }
    if let Operand::Remote(remote) = &target {
        if remote.host.starts_with('@') {
            // Groups may be EC2 groups, which only discovery at run time can expand.
            return Ok(CopyMode::Fanout {
                copy: FanoutCopy::Push {
                    sources: local_sources(&operands)?,
                    target: remote.path.clone(),
                },
                hosts: FanoutHosts::Sources(HostSources {
                    hostlists: vec![remote.host.clone()],
                    exclude: args.fanout.exclude.clone(),
                    ..HostSources::default()
                }),
            });
        }
        if hostlist::is_hostlist(&remote.host) {
            return Ok(CopyMode::Fanout {
                copy: FanoutCopy::Push {
                    sources: local_sources(&operands)?,
                    target: remote.path.clone(),
                },
                hosts: FanoutHosts::Expanded(operand_hosts(remote, args)?),
            });
        }
    }
    let gather: Vec<&RemotePath> = operands
        .iter()
        .filter_map(|op| match op {
            Operand::Remote(r) if names_many(&r.host) => Some(r),
            _ => None,
        })
        .collect();
    if let Some(first) = gather.first() {
        let all_same = operands.iter().all(|op| {
            matches!(op, Operand::Remote(r) if r.host == first.host && r.user == first.user && r.port == first.port)
        });
        if !all_same {
            return Err(CopyPlanError::GatherFromSeveralHostlists.into());
        }
        let Operand::Local(dir) = &target else {
            return Err(CopyPlanError::GatherToRemote.into());
        };
        if !dir.is_dir() {
            return Err(CopyPlanError::GatherTargetNotDirectory(dir.display().to_string()).into());
        }
        let hosts = operand_hosts(first, args)?;
        // Each host's files land in DIR/<host>: a host named `..` or `.` would write into
        // DIR's parent or DIR itself.
        if let Some(bad) = hosts.iter().find(|h| !is_plain_name(&h.spec.host)) {
            return Err(CopyPlanError::GatherHostName(bad.spec.host.clone()).into());
        }
        return Ok(CopyMode::Fanout {
            copy: FanoutCopy::Gather {
                sources: gather.iter().map(|r| r.path.clone()).collect(),
                target: dir.clone(),
            },
            hosts: FanoutHosts::Expanded(hosts),
        });
    }
    let request = CopyRequest {
        sources: operands,
        target,
        recursive: args.recursive,
        preserve: args.preserve,
        port: args.port,
    };
    check_shape(&request)?;
    Ok(CopyMode::Single(request))
}

/// `@group:path` (also `@a,@b:path`) names groups, the host part kept with its `@`s, where
/// OpenSSH's scp reads `@host:path` as a host with no user.
fn group_operand(text: &str, parsed: Operand) -> Operand {
    match parsed {
        Operand::Remote(remote) if text.starts_with('@') && remote.user.is_none() => {
            let host_end = text.len() - remote.path.len() - 1;
            Operand::Remote(RemotePath {
                host: text[..host_end].to_owned(),
                ..remote
            })
        }
        other => other,
    }
}

/// Whether an operand's host part names several hosts: a hostlist or groups.
fn names_many(host: &str) -> bool {
    hostlist::is_hostlist(host) || host.starts_with('@')
}

fn operand_hosts(remote: &RemotePath, args: &ScpArgs) -> Result<Vec<TargetHost>, PlanError> {
    Ok(targets::expand_operand(
        &remote.host,
        remote.user.as_deref(),
        remote.port,
        &args.fanout.exclude,
    )?)
}

fn local_sources(operands: &[Operand]) -> Result<Vec<PathBuf>, CopyPlanError> {
    operands
        .iter()
        .map(|op| match op {
            Operand::Local(path) => Ok(path.clone()),
            Operand::Remote(r) => Err(CopyPlanError::RemoteSourceInPush {
                host: r.host.clone(),
                path: r.path.clone(),
            }),
        })
        .collect()
}

/// Checks a single-host copy's operand shapes before anything connects. A remote source
/// with a remote target is copied through this host (scp's `-3`, its default).
pub fn check_shape(request: &CopyRequest) -> Result<(), CopyPlanError> {
    let target_remote = matches!(request.target, Operand::Remote(_));
    for source in &request.sources {
        if let (Operand::Local(path), false) = (source, target_remote) {
            return Err(CopyPlanError::LocalToLocal(path.display().to_string()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operand_shapes() {
        let remote = Operand::Remote(RemotePath {
            user: None,
            host: "h".into(),
            port: None,
            path: "p".into(),
        });
        let local = Operand::Local(PathBuf::from("f"));
        let request = |sources: Vec<Operand>, target: Operand| CopyRequest {
            sources,
            target,
            recursive: false,
            preserve: false,
            port: None,
        };
        assert_eq!(
            check_shape(&request(vec![local.clone()], remote.clone())),
            Ok(())
        );
        assert_eq!(
            check_shape(&request(vec![remote.clone()], local.clone())),
            Ok(())
        );
        assert_eq!(
            check_shape(&request(
                vec![remote.clone(), local.clone()],
                remote.clone()
            )),
            Ok(())
        );
        assert!(matches!(
            check_shape(&request(vec![local.clone()], local)),
            Err(CopyPlanError::LocalToLocal(_))
        ));
    }
}
