//! What the user typed: the command-line grammar of `smscp` and `smssh` (clap derive), with no
//! interpretation. [`crate::plan`] turns these into resolved plans.
//!
//! Owns: flag names, short letters, defaults that are pure syntax. Invariant: the flags match
//! OpenSSH's `scp`/`ssh` letters where OpenSSH has one. Must not know: config files, the
//! environment beyond clap's `env` fallbacks, AWS or SSH.

use clap::{ArgAction, Args, Parser};

/// Which secret, in which region, with which credentials; shared by every command.
#[derive(Debug, Clone, Args, Default)]
pub struct SecretLocationArgs {
    /// Secret holding the private key (name or ARN).
    #[arg(long, env = "SMSSH_SECRET_ID", value_name = "ID")]
    pub secret_id: Option<String>,
    /// AWS region of the secret.
    #[arg(long, value_name = "REGION")]
    pub region: Option<String>,
    /// AWS profile for credentials.
    #[arg(long, value_name = "PROFILE")]
    pub profile: Option<String>,
}

/// Where the key comes from; shared by both binaries.
#[derive(Debug, Clone, Args, Default)]
pub struct SecretArgs {
    #[command(flatten)]
    pub location: SecretLocationArgs,
    /// Staging label of the version to read [default: AWSCURRENT].
    #[arg(long, value_name = "STAGE", conflicts_with = "version_id")]
    pub version_stage: Option<String>,
    /// Exact version id to read instead of a stage.
    #[arg(long, value_name = "ID")]
    pub version_id: Option<String>,
    /// JSON field of the secret that holds the private key [default: PrivateKey].
    #[arg(long, value_name = "NAME")]
    pub secret_field: Option<String>,
    /// Stage to try when the server refuses the current key, e.g. AWSPREVIOUS.
    #[arg(long, value_name = "STAGE")]
    pub fallback_stage: Option<String>,
}

/// SSH options both binaries take, with OpenSSH's letters where they agree.
#[derive(Debug, Clone, Args, Default)]
pub struct SshOptionArgs {
    /// OpenSSH option in ssh_config syntax, e.g. -o StrictHostKeyChecking=accept-new.
    #[arg(short = 'o', value_name = "OPTION", action = ArgAction::Append)]
    pub options: Vec<String>,
    /// Alternative ssh_config file ("none" reads none) [default: ~/.ssh/config].
    #[arg(short = 'F', value_name = "FILE")]
    pub config_file: Option<String>,
    /// Verbose: diagnostics on stderr (never key material).
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,
    /// Quiet: no progress bar, no warnings.
    #[arg(short = 'q')]
    pub quiet: bool,
}

/// Which hosts a fan-out reaches, and how hard it tries; shared by both binaries.
#[derive(Debug, Clone, Args, Default)]
pub struct FanoutArgs {
    /// Target hosts, pdsh hostlist syntax: worker[01-64],10.0.1.[5-9] (repeatable).
    #[arg(short = 'w', value_name = "HOSTS", action = ArgAction::Append)]
    pub hosts: Vec<String>,
    /// Exclude these hosts (hostlist syntax, repeatable).
    #[arg(short = 'x', value_name = "HOSTS", action = ArgAction::Append)]
    pub exclude: Vec<String>,
    /// Read target hosts from FILE: one [user@]host[:port] or hostlist per line, # comments.
    #[arg(long, value_name = "FILE")]
    pub hosts_file: Option<std::path::PathBuf>,
    /// Target the running EC2 instances matching this DescribeInstances filter, e.g.
    /// tag:RotateSSHKeys=True (repeatable; all must match), at their private addresses.
    #[arg(long, value_name = "FILTER", action = ArgAction::Append)]
    pub ec2_filter: Vec<String>,
    /// Sessions in flight at once.
    #[arg(short = 'j', long = "parallel", value_name = "N", default_value_t = 64,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub parallel: u32,
    /// Seconds to wait for a host's SSH login (same as -o ConnectTimeout=).
    #[arg(long, value_name = "SECONDS")]
    pub connect_timeout: Option<u64>,
    /// Seconds one host may take in all, connection included; a slower host fails.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,
    /// Connection attempts to repeat after a refused or timed-out connection, with back-off.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub retries: u32,
}

/// smscp: copy files with the cluster key from AWS Secrets Manager (drop-in for scp).
#[derive(Debug, Parser)]
#[command(name = "smscp", version, about, disable_help_flag = false)]
pub struct ScpArgs {
    /// Recursively copy directories.
    #[arg(short = 'r')]
    pub recursive: bool,
    /// Preserve modification/access times and modes.
    #[arg(short = 'p')]
    pub preserve: bool,
    /// Enable compression.
    #[arg(short = 'C')]
    pub compression: bool,
    /// Batch mode: never ask for anything (as scp -B).
    #[arg(short = 'B')]
    pub batch: bool,
    /// Port to connect to on the remote host.
    #[arg(short = 'P', value_name = "PORT")]
    pub port: Option<u16>,
    /// Bandwidth limit in Kbit/s.
    #[arg(short = 'l', value_name = "LIMIT")]
    pub limit_kbits: Option<u64>,
    /// The most entries one remote directory listing may have in a recursive download; a
    /// server that lists more is refused (it may be listing for ever).
    #[arg(long, value_name = "N", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_dir_entries: u64,
    #[command(flatten)]
    pub ssh: SshOptionArgs,
    #[command(flatten)]
    pub secret: SecretArgs,
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// Sources then the target: local paths, [user@]host:[path], scp://[user@]host[:port][/path].
    #[arg(required = true, num_args = 2.., value_name = "SOURCE... TARGET")]
    pub operands: Vec<String>,
}

/// smssh: run commands over SSH with the cluster key from AWS Secrets Manager (drop-in for ssh).
#[derive(Debug, Parser)]
#[command(name = "smssh", version, about)]
pub struct SshArgs {
    /// Force a PTY (-tt forces it even without a local terminal).
    #[arg(short = 't', action = ArgAction::Count, conflicts_with = "no_tty")]
    pub tty: u8,
    /// Disable PTY allocation.
    #[arg(short = 'T')]
    pub no_tty: bool,
    /// Read stdin from /dev/null.
    #[arg(short = 'n')]
    pub null_stdin: bool,
    /// Port to connect to on the remote host.
    #[arg(short = 'p', value_name = "PORT")]
    pub port: Option<u16>,
    /// User to log in as.
    #[arg(short = 'l', value_name = "LOGIN")]
    pub login: Option<String>,
    #[command(flatten)]
    pub ssh: SshOptionArgs,
    #[command(flatten)]
    pub secret: SecretArgs,
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// Fan-out: print identical outputs once, with their host list (clush -b, dshbak -c).
    #[arg(short = 'b', long = "group", conflicts_with = "json")]
    pub group: bool,
    /// Fan-out: one JSON object per host on stdout (host, exit_status, stdout, stderr, ...).
    #[arg(long)]
    pub json: bool,
    /// With -b or --json, the most output kept per host, in MiB (stdout and stderr together);
    /// the rest is dropped and the host's output says so.
    #[arg(long, value_name = "MIB", default_value_t = 16,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub max_output: u64,
    /// [user@]host or ssh://[user@]host[:port]; with -w, --hosts-file or --ec2-filter, the
    /// first word of the command.
    #[arg(value_name = "DESTINATION")]
    pub destination: Option<String>,
    /// Command to run; without one, an interactive shell.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// smssh rotate: rotate the cluster key pair with Secrets Manager's four steps, from here.
#[derive(Debug, Parser)]
#[command(name = "smssh rotate", version, about)]
pub struct RotateArgs {
    #[command(flatten)]
    pub secret: SecretLocationArgs,
    /// How the public key reaches the workers: ssh (with the current key) or ssm (Run
    /// Command as root on EC2 instances selected with --ec2-filter).
    #[arg(long = "deploy", value_name = "ssh|ssm", default_value = "ssh")]
    pub deploy: String,
    /// Type of the new key: ed25519, rsa-2048, rsa-3072, rsa-4096 or ecdsa-p256.
    #[arg(long, value_name = "TYPE", default_value = "ed25519")]
    pub key_type: String,
    /// A private key file already authorized on every worker, to push the first key of a
    /// secret that holds none yet ({}).
    #[arg(long, value_name = "FILE")]
    pub bootstrap_key: Option<std::path::PathBuf>,
    /// Remove the --bootstrap-key's public key from every worker at finishSecret, once
    /// testSecret has proved the new key everywhere (by default it is kept: it is yours).
    #[arg(long, requires = "bootstrap_key", conflicts_with = "reconcile")]
    pub retire_bootstrap_key: bool,
    /// How long the previous key stays authorized after a rotation (0, 90s, 30m, 12h, 7d).
    #[arg(long, value_name = "DURATION", default_value = "0")]
    pub grace: String,
    /// Accept unknown host keys on first contact and record them in the secret's KnownHosts.
    #[arg(long)]
    pub learn_host_keys: bool,
    /// authorized_keys path on the workers, relative to the home [default: .ssh/authorized_keys].
    #[arg(long, value_name = "PATH")]
    pub authorized_keys_file: Option<String>,
    /// Run one step only (createSecret, setSecret, testSecret, finishSecret) for --token.
    #[arg(
        long,
        value_name = "STEP",
        requires = "token",
        conflicts_with = "reconcile"
    )]
    pub step: Option<String>,
    /// The version (ClientRequestToken) the step works on.
    #[arg(long, value_name = "TOKEN", requires = "step")]
    pub token: Option<String>,
    /// Bring every host to the current state without rotating (new or previously offline hosts).
    #[arg(long)]
    pub reconcile: bool,
    /// Seconds to wait for every SSM invocation to finish.
    #[arg(long, value_name = "SECONDS", default_value_t = 120)]
    pub ssm_timeout: u64,
    /// Port to connect to on the workers.
    #[arg(short = 'p', value_name = "PORT")]
    pub port: Option<u16>,
    /// User whose authorized_keys is managed (and who logs in) [default for ssm: ec2-user].
    #[arg(short = 'l', value_name = "LOGIN")]
    pub login: Option<String>,
    #[command(flatten)]
    pub ssh: SshOptionArgs,
    #[command(flatten)]
    pub fanout: FanoutArgs,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_command_keeps_its_own_flags() {
        let args =
            SshArgs::try_parse_from(["smssh", "-p", "2222", "host", "ls", "-la", "/tmp"]).unwrap();
        assert_eq!(args.port, Some(2222));
        assert_eq!(args.destination.as_deref(), Some("host"));
        assert_eq!(args.command, ["ls", "-la", "/tmp"]);
    }

    #[test]
    fn scp_grammar() {
        let args = ScpArgs::try_parse_from([
            "smscp",
            "-rpq",
            "-P",
            "2200",
            "-o",
            "BatchMode=yes",
            "-o",
            "Port=1",
            "a",
            "b",
            "h:",
        ])
        .unwrap();
        assert!(args.recursive && args.preserve && args.ssh.quiet);
        assert_eq!(args.port, Some(2200));
        assert_eq!(args.ssh.options, ["BatchMode=yes", "Port=1"]);
        assert_eq!(args.operands, ["a", "b", "h:"]);
        assert!(ScpArgs::try_parse_from(["smscp", "onlyone"]).is_err());
        assert!(ScpArgs::try_parse_from([
            "smscp",
            "--version-stage",
            "X",
            "--version-id",
            "Y",
            "a",
            "b"
        ])
        .is_err());
    }
}
