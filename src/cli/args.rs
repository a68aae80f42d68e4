//! What the user typed: the command-line grammar of `smscp` and `smssh` (clap derive), with no
//! interpretation. [`crate::plan`] turns these into resolved plans.
//!
//! Owns: flag names, short letters, defaults that are pure syntax. Invariant: the flags match
//! OpenSSH's `scp`/`ssh` letters where OpenSSH has one. Must not know: config files, the
//! environment beyond clap's `env` fallbacks, AWS or SSH.

use std::ffi::OsString;

use clap::{ArgAction, Args, CommandFactory, Parser};

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
    /// Target hosts, pdsh hostlist syntax: worker[01-64],10.0.1.[5-9] (repeatable). pdsh's
    /// letter; for smssh a value shaped like ssh's tunnel request (`0`, `any:1`) is ssh's
    /// `-w local_tun[:remote_tun]`, which is refused.
    #[arg(short = 'w', long = "hosts", value_name = "HOSTS", action = ArgAction::Append)]
    pub hosts: Vec<String>,
    /// Exclude these hosts (hostlist syntax, repeatable). Long form only: `-x` is ssh's "no
    /// X11 forwarding".
    #[arg(long = "exclude", value_name = "HOSTS", action = ArgAction::Append)]
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

/// Where this invocation's audit records go, besides the configured destinations.
#[derive(Debug, Clone, Args, Default)]
pub struct AuditArgs {
    /// Also append one JSON line per host action to FILE (created 0600).
    #[arg(long = "audit-log", value_name = "FILE")]
    pub audit_log: Option<std::path::PathBuf>,
}

/// smscp: copy files with the cluster key from AWS Secrets Manager (drop-in for scp).
#[derive(Debug, Parser)]
#[command(
    name = "smscp",
    version,
    override_usage = "smscp [OPTIONS] SOURCE... TARGET"
)]
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
    /// Ciphers, in ssh_config's Ciphers syntax (as -o Ciphers=, which it beats).
    #[arg(short = 'c', value_name = "CIPHER_SPEC")]
    pub cipher_spec: Option<String>,
    /// Jump hosts, comma-separated [user@]host[:port] or ssh://[user@]host[:port], each
    /// reached through the one before it (as -o ProxyJump=).
    #[arg(short = 'J', value_name = "DESTINATION")]
    pub jump: Option<String>,
    /// IPv4 addresses only (AddressFamily=inet).
    #[arg(short = '4')]
    pub ipv4: bool,
    /// IPv6 addresses only (AddressFamily=inet6).
    #[arg(short = '6')]
    pub ipv6: bool,
    /// Agent forwarding (scp -A): refused, the key never enters an agent.
    #[arg(short = 'A')]
    pub forward_agent: bool,
    /// Local sftp-server program (scp -D): refused, smscp always reaches the remote one.
    #[arg(short = 'D', value_name = "SFTP_SERVER_PATH")]
    pub sftp_server_path: Option<String>,
    /// An extra private key file, offered after the secret's key was refused (repeatable).
    #[arg(short = 'i', value_name = "IDENTITY_FILE", action = ArgAction::Append)]
    pub identity_file: Vec<std::path::PathBuf>,
    /// Legacy SCP protocol (scp -O): accepted, no effect; smscp always speaks SFTP.
    #[arg(short = 'O')]
    pub legacy_protocol: bool,
    /// Remote-to-remote copy through the first host (scp -R): refused, it needs the key there.
    #[arg(short = 'R')]
    pub remote_to_remote: bool,
    /// Copy between two remote hosts through this one (scp -3): accepted, no effect; it is
    /// how smscp always copies between remote hosts, as OpenSSH 9.2's scp does by default.
    #[arg(short = '3')]
    pub through_local: bool,
    /// Program for the connection (scp -S): refused, smscp is its own ssh.
    #[arg(short = 'S', value_name = "PROGRAM")]
    pub program: Option<String>,
    /// SFTP protocol (scp -s): what smscp always uses.
    #[arg(short = 's')]
    pub sftp: bool,
    /// No strict file-name checking (scp -T): accepted, no effect; SFTP names what it sends.
    #[arg(short = 'T')]
    pub no_name_check: bool,
    /// SFTP tuning, buffer=N or nrequests=N (scp -X): accepted, no effect; smscp's window is
    /// fixed by measurement (see the README).
    #[arg(short = 'X', value_name = "SFTP_OPTION", action = ArgAction::Append)]
    pub sftp_options: Vec<String>,
    /// The most entries one remote directory listing may have in a recursive download; a
    /// server that lists more is refused (it may be listing for ever).
    #[arg(long, value_name = "N", default_value_t = 1_000_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_dir_entries: u64,
    /// How an upload's bytes reach the hosts: `direct` (over SSH, the default) or
    /// s3://BUCKET/PREFIX (each file uploaded once, then fetched by every host from a
    /// presigned URL); beats the config file's copy_via.
    #[arg(long, value_name = "direct|s3://BUCKET/PREFIX")]
    pub via: Option<String>,
    /// With --via s3://: encrypt the objects with this KMS key (SSE-KMS).
    #[arg(long, value_name = "KEY")]
    pub sse_kms_key_id: Option<String>,
    /// With --via s3://: leave the objects in S3 after the copy.
    #[arg(long)]
    pub keep: bool,
    /// Fan-out: at the first failed host start no other host and close the running ones.
    #[arg(long)]
    pub fail_fast: bool,
    /// Set when smscp runs as rpdcp (`cli::pdsh`), never typed as a flag: with -w, the
    /// sources are paths on every host, gathered into the local target as DIR/<host>/.
    #[arg(skip)]
    pub gather_from_hosts: bool,
    #[command(flatten)]
    pub ssh: SshOptionArgs,
    #[command(flatten)]
    pub secret: SecretArgs,
    #[command(flatten)]
    pub fanout: FanoutArgs,
    #[command(flatten)]
    pub audit: AuditArgs,
    /// Sources then the target: local paths, [user@]host:[path], scp://[user@]host[:port][/path].
    #[arg(required = true, num_args = 2.., value_names = ["SOURCE", "TARGET"])]
    pub operands: Vec<String>,
}

/// How a fan-out run as `pdsh` shows its results, which pdsh's own options decide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PdshStyle {
    /// `host: ` before every line (pdsh's default; `-N` turns it off).
    pub labels: bool,
    /// `-S`: exit with the largest remote exit status; without it pdsh exits 0 once it ran.
    pub remote_status: bool,
    /// `-b`: one Ctrl-C stops the run, with no account of where it stands first.
    pub batch: bool,
}

/// smssh: run commands over SSH with the cluster key from AWS Secrets Manager (drop-in for ssh).
#[derive(Debug, Parser)]
#[command(name = "smssh", version, after_help = subcommand_help())]
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
    /// Ciphers, in ssh_config's Ciphers syntax (as -o Ciphers=, which it beats).
    #[arg(short = 'c', value_name = "CIPHER_SPEC")]
    pub cipher_spec: Option<String>,
    /// Jump hosts, comma-separated [user@]host[:port] or ssh://[user@]host[:port], each
    /// reached through the one before it (as -o ProxyJump=).
    #[arg(short = 'J', value_name = "DESTINATION")]
    pub jump: Option<String>,
    /// Connect stdin and stdout to HOST:PORT through the server, and nothing else (for
    /// another ssh's ProxyCommand).
    #[arg(short = 'W', value_name = "HOST:PORT")]
    pub stdio_forward: Option<String>,
    /// Open the subsystem named by the first word after the destination (e.g. sftp).
    #[arg(short = 's')]
    pub subsystem: bool,
    /// Run no remote command; keep the session for port forwarding.
    #[arg(short = 'N')]
    pub no_command: bool,
    /// Forward a local port to HOST:HOSTPORT through the server (repeatable).
    #[arg(short = 'L', value_name = "[BIND_ADDRESS:]PORT:HOST:HOSTPORT", action = ArgAction::Append)]
    pub local_forward: Vec<String>,
    /// Forward a port on the server to HOST:HOSTPORT on this side (repeatable; port 0: the
    /// server picks one).
    #[arg(short = 'R', value_name = "[BIND_ADDRESS:]PORT:HOST:HOSTPORT", action = ArgAction::Append)]
    pub remote_forward: Vec<String>,
    /// A local SOCKS 4/4a/5 proxy whose connections go out through the server (repeatable).
    #[arg(short = 'D', value_name = "[BIND_ADDRESS:]PORT", action = ArgAction::Append)]
    pub dynamic_forward: Vec<String>,
    /// Go to the background once authenticated and the forwards are set up (implies -n).
    #[arg(short = 'f')]
    pub fork_after_auth: bool,
    /// Print the configuration that applies to the destination, as ssh -G, and exit.
    #[arg(short = 'G')]
    pub print_config: bool,
    /// Compression (-o Compression=yes).
    #[arg(short = 'C')]
    pub compression: bool,
    /// MAC algorithms (-o MACs=SPEC).
    #[arg(short = 'm', value_name = "MAC_SPEC")]
    pub mac_spec: Option<String>,
    /// Remote hosts may connect to local forwarded ports (-o GatewayPorts=yes).
    #[arg(short = 'g')]
    pub gateway_ports: bool,
    /// SSH protocol 1: refused, as OpenSSH refuses it.
    #[arg(short = '1', hide = true)]
    pub protocol_1: bool,
    /// SSH protocol 2: accepted, no effect; it is the only protocol (pdsh passes it).
    #[arg(short = '2', hide = true)]
    pub protocol_2: bool,
    /// IPv4 addresses only (AddressFamily=inet).
    #[arg(short = '4')]
    pub ipv4: bool,
    /// IPv6 addresses only (AddressFamily=inet6).
    #[arg(short = '6')]
    pub ipv6: bool,
    /// Agent forwarding: refused, the key never enters an agent.
    #[arg(short = 'A')]
    pub forward_agent: bool,
    /// No agent forwarding: accepted, no effect; there is none.
    #[arg(short = 'a')]
    pub no_forward_agent: bool,
    /// Local interface to bind: refused.
    #[arg(short = 'B', value_name = "BIND_INTERFACE")]
    pub bind_interface: Option<String>,
    /// Local address to bind: refused.
    #[arg(short = 'b', value_name = "BIND_ADDRESS")]
    pub bind_address: Option<String>,
    /// Debug log file: refused; diagnostics go to stderr.
    #[arg(short = 'E', value_name = "LOG_FILE")]
    pub log_file: Option<String>,
    /// Escape character: only "none" (what smssh always does) is accepted.
    #[arg(short = 'e', value_name = "ESCAPE_CHAR")]
    pub escape_char: Option<String>,
    /// PKCS#11 provider: refused, the key comes from Secrets Manager.
    #[arg(short = 'I', value_name = "PKCS11")]
    pub pkcs11: Option<String>,
    /// An extra private key file, offered after the secret's key was refused (repeatable).
    #[arg(short = 'i', value_name = "IDENTITY_FILE", action = ArgAction::Append)]
    pub identity_file: Vec<std::path::PathBuf>,
    /// GSSAPI authentication and delegation: refused.
    #[arg(short = 'K')]
    pub gssapi: bool,
    /// No GSSAPI delegation: accepted, no effect; there is none.
    #[arg(short = 'k')]
    pub no_gssapi_delegation: bool,
    /// Connection-sharing master: refused.
    #[arg(short = 'M', action = ArgAction::Count)]
    pub control_master: u8,
    /// Control command for a master connection: refused, there is never a master.
    #[arg(short = 'O', value_name = "CTL_CMD")]
    pub control_command: Option<String>,
    /// Obsolete privileged-port flag: accepted, no effect, as in OpenSSH 9.2.
    #[arg(short = 'P', hide = true)]
    pub privileged_port: bool,
    /// Algorithm query: refused; smssh -G shows the settings in effect.
    #[arg(short = 'Q', value_name = "QUERY_OPTION")]
    pub query: Option<String>,
    /// Control socket path: accepted, no effect; there is never a master to share.
    #[arg(short = 'S', value_name = "CTL_PATH")]
    pub control_path: Option<String>,
    /// X11 forwarding: refused.
    #[arg(short = 'X')]
    pub forward_x11: bool,
    /// No X11 forwarding: accepted, no effect; there is none.
    #[arg(short = 'x')]
    pub no_forward_x11: bool,
    /// Trusted X11 forwarding: refused.
    #[arg(short = 'Y')]
    pub forward_x11_trusted: bool,
    /// Log to syslog: refused; diagnostics go to stderr.
    #[arg(short = 'y')]
    pub syslog: bool,
    #[command(flatten)]
    pub ssh: SshOptionArgs,
    #[command(flatten)]
    pub secret: SecretArgs,
    #[command(flatten)]
    pub fanout: FanoutArgs,
    #[command(flatten)]
    pub audit: AuditArgs,
    /// Fan-out: print identical outputs once, with their host list (clush -b, dshbak -c).
    /// Long form only: `-b` is ssh's bind address.
    #[arg(long = "group", conflicts_with = "json")]
    pub group: bool,
    /// Fan-out: one JSON object per host on stdout (host, exit_status, stdout, stderr, ...).
    #[arg(long)]
    pub json: bool,
    /// Print every named group (`@name`, usable wherever a hostlist goes) with its hosts, and
    /// exit.
    #[arg(long)]
    pub list_groups: bool,
    /// Fan-out: also write each host's stdout to DIR/<host>, whole once the host ends
    /// (created 0700 if missing; clush --outdir, pssh -o).
    #[arg(long, value_name = "DIR")]
    pub outdir: Option<std::path::PathBuf>,
    /// Fan-out: also write each host's stderr to DIR/<host> (clush --errdir, pssh -e).
    #[arg(long, value_name = "DIR")]
    pub errdir: Option<std::path::PathBuf>,
    /// Fan-out: read the local stdin once and send it to every host's command (pssh -I), in
    /// bounded memory.
    #[arg(long)]
    pub stdin_all: bool,
    /// Fan-out: print `host: line` as lines arrive instead of the live view a terminal gets
    /// (the config file's `fanout_output = "stream"` makes this the default).
    #[arg(long)]
    pub stream: bool,
    /// Fan-out: at the first failed host (no login, a timeout, a lost session, a non-zero
    /// exit status) start no other host, close the running ones and exit 1 (pdsh -k).
    #[arg(long)]
    pub fail_fast: bool,
    /// Set when smssh runs as pdsh (`cli::pdsh`), never typed as a flag.
    #[arg(skip)]
    pub pdsh: Option<PdshStyle>,
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

impl SshArgs {
    /// Parses smssh's command line with ssh's grammar: options may also follow the
    /// destination, up to the first word of the command (`ssh host -p 2222 uptime` sets the
    /// port), unless `--` came first. A fan-out (`-w`, `--hosts-file`, `--ec2-filter`) keeps
    /// pdsh's grammar instead: everything after the first word is the command.
    pub fn try_parse_openssh<I, T>(words: I) -> Result<SshArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString>,
    {
        let words: Vec<OsString> = words.into_iter().map(Into::into).collect();
        SshArgs::try_parse_from(openssh_order(&SshArgs::command(), words))
    }
}

/// The long fan-out flags after which the first free word starts the command, as in pdsh
/// (with `-w`).
const HOST_SOURCE_FLAGS: &[&str] = &["--hosts", "--hosts-file", "--ec2-filter"];

/// Moves the options written between the destination and the command in front of the
/// destination, followed by `--`, so that clap sees ssh's meaning. Words that are not UTF-8
/// are never options. `command` tells which flags take a value.
fn openssh_order(command: &clap::Command, words: Vec<OsString>) -> Vec<OsString> {
    let mut rest = words.into_iter();
    let mut ordered: Vec<OsString> = rest.next().into_iter().collect();
    let (before, first) = take_options(command, &mut rest);
    let fanout = before.iter().any(|word| names_hosts(command, word));
    ordered.extend(before);
    match first {
        Some(first) if !fanout => {
            let (mut after, command_start) = take_options(command, &mut rest);
            if after.last().is_some_and(|word| word == "--") {
                after.pop();
            }
            ordered.extend(after);
            ordered.push(OsString::from("--"));
            ordered.push(first);
            ordered.extend(command_start);
        }
        Some(first) => {
            // pdsh's grammar: the first free word starts the command.
            ordered.push(OsString::from("--"));
            ordered.push(first);
        }
        None => {}
    }
    ordered.extend(rest);
    ordered
}

/// Whether `word`, an option taken by [`take_options`], selects fan-out hosts.
fn names_hosts(command: &clap::Command, word: &OsString) -> bool {
    let Some(text) = word.to_str() else {
        return false;
    };
    if text.starts_with("--") {
        return HOST_SOURCE_FLAGS
            .iter()
            .any(|flag| text == *flag || text.starts_with(&format!("{flag}=")));
    }
    // Letters before the first one that takes a value are flags; `w` among them is -w.
    for letter in text.chars().skip(1) {
        if letter == 'w' {
            return true;
        }
        if takes_value(command, |arg| arg.get_short() == Some(letter)) {
            return false;
        }
    }
    false
}

/// Takes options (with their values) from `words` up to the first word that is not one,
/// which is returned apart; a `--` ends the options and is kept as the last option.
fn take_options(
    command: &clap::Command,
    words: &mut impl Iterator<Item = OsString>,
) -> (Vec<OsString>, Option<OsString>) {
    let mut options = Vec::new();
    while let Some(word) = words.next() {
        let Some(text) = word.to_str() else {
            return (options, Some(word));
        };
        if text == "--" {
            options.push(word);
            return (options, None);
        }
        let needs_value = if let Some(long) = text.strip_prefix("--") {
            !long.contains('=') && takes_value(command, |arg| arg.get_long() == Some(long))
        } else if let Some(cluster) = text.strip_prefix('-').filter(|c| !c.is_empty()) {
            // In `-tlroot` the value starts right after the first letter that takes one.
            cluster.char_indices().find_map(|(at, letter)| {
                takes_value(command, |arg| arg.get_short() == Some(letter))
                    .then_some(at + letter.len_utf8() == cluster.len())
            }) == Some(true)
        } else {
            return (options, Some(word));
        };
        let is_long = text.starts_with("--");
        let value = if needs_value { words.next() } else { None };
        match value {
            // Joined to its flag (`-o-x`, `--secret-id=-x`), a value that starts with `-` is
            // still a value to clap, as it is to ssh's getopt.
            Some(value) => {
                let mut joined = word;
                if is_long {
                    joined.push("=");
                }
                joined.push(value);
                options.push(joined);
            }
            None => options.push(word),
        }
    }
    (options, None)
}

fn takes_value(command: &clap::Command, is: impl Fn(&clap::Arg) -> bool) -> bool {
    command
        .get_arguments()
        .any(|arg| is(arg) && arg.get_action().takes_values())
}

/// smssh rotate: rotate the cluster key pair with Secrets Manager's four steps, from here.
#[derive(Debug, Parser)]
#[command(name = "smssh rotate", version)]
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
    #[command(flatten)]
    pub audit: AuditArgs,
}

/// smssh agent: serve the secret's key to OpenSSH's ssh (and every tool built on it) over
/// the ssh-agent protocol, from memory.
#[derive(Debug, Parser)]
#[command(name = "smssh agent", version)]
pub struct AgentArgs {
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Re-read the secret at the first request once the copy is older than this (90s, 5m, 1h).
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub refresh: String,
    /// Also offer the keys of these stages, e.g. AWSPENDING,AWSPREVIOUS (comma-separated),
    /// so that tools keep logging in during a rotation's window.
    #[arg(long, value_name = "STAGES", value_delimiter = ',')]
    pub offer_stages: Vec<String>,
    /// Ask before each signature (on the terminal, or with SSH_ASKPASS), naming the process
    /// that asked.
    #[arg(long)]
    pub confirm: bool,
    /// Print Bourne shell commands (`eval "$(smssh agent -s)"`) [default: from $SHELL].
    #[arg(short = 's', conflicts_with = "csh")]
    pub sh: bool,
    /// Print csh commands.
    #[arg(short = 'c')]
    pub csh: bool,
    /// Stay in the foreground (the commands are printed, the agent serves until a signal).
    #[arg(short = 'D', conflicts_with = "command")]
    pub foreground: bool,
    /// Stop the agent SSH_AGENT_PID names (it removes its socket) and print the commands
    /// that unset the variables.
    #[arg(short = 'k', conflicts_with_all = ["command", "foreground", "bind_address", "lifetime"])]
    pub kill: bool,
    /// Bind the socket at this path instead of a fresh directory.
    #[arg(short = 'a', value_name = "PATH")]
    pub bind_address: Option<std::path::PathBuf>,
    /// Forget the key and stop serving after this time (90s, 30m, 12h).
    #[arg(short = 't', value_name = "LIFETIME")]
    pub lifetime: Option<String>,
    /// Verbose: diagnostics on stderr (never key material).
    #[arg(short = 'v', action = ArgAction::Count)]
    pub verbose: u8,
    /// The command to run with SSH_AUTH_SOCK set; the agent ends with it. Without one, the
    /// agent goes to the background and prints the variables to set, as ssh-agent does.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// smssh check: say what works and what to do about what does not: AWS identity and region,
/// the secret, memory locking, and for each host its reachability, host key and login.
#[derive(Debug, Parser)]
#[command(name = "smssh check", version)]
pub struct CheckArgs {
    #[command(flatten)]
    pub secret: SecretArgs,
    /// Port to connect to on the hosts.
    #[arg(short = 'p', value_name = "PORT")]
    pub port: Option<u16>,
    /// User to log in as.
    #[arg(short = 'l', value_name = "LOGIN")]
    pub login: Option<String>,
    /// An extra private key file, offered after the secret's key was refused (repeatable).
    #[arg(short = 'i', value_name = "IDENTITY_FILE", action = ArgAction::Append)]
    pub identity_file: Vec<std::path::PathBuf>,
    #[command(flatten)]
    pub ssh: SshOptionArgs,
    #[command(flatten)]
    pub fanout: FanoutArgs,
    /// One JSON document on stdout: {"ok": ..., "findings": [{check, ok, required, detail,
    /// hint, host}, ...]}.
    #[arg(long)]
    pub json: bool,
    /// Hosts to check, in hostlist syntax (as -w).
    #[arg(id = "host_operands", value_name = "HOSTS")]
    pub hosts: Vec<String>,
}

/// smssh completions: print the completion script of a shell for smssh or smscp.
#[derive(Debug, Parser)]
#[command(name = "smssh completions", version)]
pub struct CompletionsArgs {
    /// The shell whose completion script to print: bash, zsh or fish (also elvish, powershell).
    #[arg(value_name = "SHELL")]
    pub shell: clap_complete::Shell,
    /// The program the script completes.
    #[arg(value_name = "PROGRAM", value_enum, default_value_t = Program::Smssh)]
    pub program: Program,
}

/// The two programs a completion script can be for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Program {
    Smssh,
    Smscp,
}

/// smssh's subcommands, named by the first word of the command line, each with its parser's
/// definition under the word that selects it. `smssh --help` lists them from here and the
/// completion scripts offer them, so a new subcommand is added here as well as in the
/// binary's dispatch.
pub fn subcommands() -> Vec<clap::Command> {
    vec![
        RotateArgs::command().name("rotate"),
        AgentArgs::command().name("agent"),
        CheckArgs::command().name("check"),
        CompletionsArgs::command().name("completions"),
    ]
}

/// The section of `smssh --help` that names the subcommands, since they are dispatched on
/// the first word before clap sees the line and so are not clap subcommands of `smssh`.
fn subcommand_help() -> String {
    let mut text =
        String::from("Subcommands (the first word; a host of that name is user@NAME):\n");
    for command in subcommands() {
        let about = command
            .get_about()
            .map(ToString::to_string)
            .unwrap_or_default();
        // The about line starts with the subcommand's full name ("smssh rotate: ...").
        let purpose = about
            .split_once(": ")
            .map_or(about.as_str(), |(_, rest)| rest);
        text.push_str(&format!("  {:<12} {purpose}\n", command.get_name()));
    }
    text.push_str("Each has its own --help, e.g. smssh rotate --help.");
    text
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

    fn ssh(words: &[&str]) -> SshArgs {
        SshArgs::try_parse_openssh(std::iter::once("smssh").chain(words.iter().copied()))
            .unwrap_or_else(|err| panic!("{words:?}: {err}"))
    }

    #[test]
    fn options_after_the_destination_are_options_until_the_command() {
        let args = ssh(&["host", "-p", "2222", "-lroot", "-qx", "ls", "-la", "-p"]);
        assert_eq!(args.port, Some(2222));
        assert_eq!(args.login.as_deref(), Some("root"));
        assert!(args.ssh.quiet && args.no_forward_x11);
        assert_eq!(args.destination.as_deref(), Some("host"));
        assert_eq!(args.command, ["ls", "-la", "-p"]);
        // `--` after the destination's options ends them; before the destination it ends
        // every option, so what follows the destination is the command.
        let args = ssh(&["host", "-v", "--", "-p", "x"]);
        assert_eq!((args.ssh.verbose, args.port), (1, None));
        assert_eq!(args.command, ["-p", "x"]);
        let args = ssh(&["-t", "--", "host", "-p", "2"]);
        assert_eq!((args.tty, args.port), (1, None));
        assert_eq!(args.command, ["-p", "2"]);
        // A value that looks like an option is still a value.
        let args = ssh(&["-o", "-x", "host", "-e", "none", "cmd"]);
        assert_eq!(args.ssh.options, ["-x"]);
        assert_eq!(args.escape_char.as_deref(), Some("none"));
        assert_eq!(args.command, ["cmd"]);
    }

    #[test]
    fn a_fanout_keeps_pdsh_grammar() {
        for words in [
            &["-w", "h[1-2]", "ls", "-la"][..],
            &["-qw", "h[1-2]", "ls", "-la"],
            &["--hosts-file", "f", "ls", "-la"],
            &["--hosts=h1", "ls", "-la"],
        ] {
            let args = ssh(words);
            assert_eq!(args.destination.as_deref(), Some("ls"), "{words:?}");
            assert_eq!(args.command, ["-la"], "{words:?}");
            assert_eq!(args.login, None, "{words:?}");
        }
    }

    #[test]
    fn every_openssh_ssh_letter_parses() {
        let args = ssh(&[
            "-46AaCGgKkMNnqsTtVvXxYy"
                .replace(['N', 'V', 'T'], "")
                .as_str(),
            "-B",
            "eth0",
            "-b",
            "10.0.0.1",
            "-E",
            "log",
            "-e",
            "none",
            "-F",
            "none",
            "-I",
            "p11",
            "-i",
            "id",
            "-l",
            "u",
            "-m",
            "hmac-sha2-256",
            "-O",
            "check",
            "-o",
            "User=u",
            "-p",
            "22",
            "-Q",
            "cipher",
            "-S",
            "none",
            "-w",
            "0:1",
            "-P",
            "-2",
            "host",
            "cmd",
        ]);
        assert!(args.ipv4 && args.forward_agent && args.no_forward_agent && args.compression);
        assert!(args.print_config && args.gateway_ports && args.gssapi);
        assert!(args.no_gssapi_delegation && args.control_master == 1 && args.null_stdin);
        assert!(args.ssh.quiet && args.subsystem && !args.no_tty && args.tty == 1);
        assert!(args.forward_x11 && args.no_forward_x11 && args.forward_x11_trusted);
        assert!(args.syslog && args.privileged_port && args.protocol_2);
        assert_eq!(args.fanout.hosts, ["0:1"]);
        assert_eq!(args.control_command.as_deref(), Some("check"));
        assert_eq!(args.mac_spec.as_deref(), Some("hmac-sha2-256"));
        assert_eq!(args.destination.as_deref(), Some("host"));
    }

    #[test]
    fn every_openssh_scp_letter_parses() {
        let args = ScpArgs::try_parse_from([
            "smscp",
            "-46ABCOpqRrsTv",
            "-D",
            "/usr/lib/sftp-server",
            "-F",
            "none",
            "-i",
            "id",
            "-l",
            "100",
            "-o",
            "User=u",
            "-P",
            "22",
            "-S",
            "ssh",
            "-X",
            "nrequests=4",
            "a",
            "h:b",
        ])
        .unwrap();
        assert!(args.ipv4 && args.forward_agent && args.batch && args.compression);
        assert!(args.legacy_protocol && args.preserve && args.ssh.quiet);
        assert!(args.remote_to_remote && args.recursive && args.sftp && args.no_name_check);
        assert_eq!(args.ssh.verbose, 1);
        assert_eq!(args.sftp_options, ["nrequests=4"]);
        assert_eq!(args.program.as_deref(), Some("ssh"));
    }

    #[test]
    fn fanout_letters_do_not_shadow_ssh() {
        let args = ssh(&["-x", "host", "cmd"]);
        assert!(args.no_forward_x11 && args.fanout.exclude.is_empty());
        assert_eq!(args.destination.as_deref(), Some("host"));
        let args = ssh(&["-w", "h[1-3]", "--exclude", "h2", "--group", "--", "uptime"]);
        assert_eq!(args.fanout.exclude, ["h2"]);
        assert!(args.group);
        let args = ssh(&["-b", "10.0.0.1", "host"]);
        assert_eq!(args.bind_address.as_deref(), Some("10.0.0.1"));
        assert!(!args.group);
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
