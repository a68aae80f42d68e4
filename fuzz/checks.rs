//! What each fuzz target does with one input, shared by the cargo-fuzz targets (nightly) and
//! by `tests/fuzz_corpus.rs`, which replays every stored input on stable so that CI keeps each
//! finding fixed. Every check must return without panicking, whatever the bytes; where a
//! property is cheap to state, it is asserted too.

use std::path::Path;

use smssh::aws::secret::{extract_key_material, SecretValue};
use smssh::config::known_hosts::KnownHosts;
use smssh::config::ssh_config::{HostSettings, MatchContext, SshConfig};
use smssh::config::{hostlist, operand};
use smssh::key::ClientKey;
use smssh::rotation::block;

/// What a target does with one input.
pub type Check = fn(&[u8]);

/// The fuzz targets, by name, as `fuzz/fuzz_targets/<name>.rs` and `fuzz/corpus/<name>/`.
pub const TARGETS: &[(&str, Check)] = &[
    ("hostlist", hostlist),
    ("operand", operand),
    ("ssh_config", ssh_config),
    ("known_hosts", known_hosts),
    ("secret", secret),
    ("authorized_keys", authorized_keys),
];

fn text(data: &[u8]) -> &str {
    std::str::from_utf8(data).unwrap_or("")
}

/// Hostlists and hosts files: expansion never panics, stays within its limit, and a
/// compressed list expands back to the same names.
pub fn hostlist(data: &[u8]) {
    let text = text(data);
    if let Ok(hosts) = hostlist::expand(text) {
        assert!(!hosts.is_empty() && hosts.len() <= 100_000);
        let names: Vec<&str> = hosts.iter().map(|h| h.host.as_str()).collect();
        let _ = hostlist::compress(&names);
    }
    let _ = hostlist::parse_hosts_file(text, "fuzz");
    let _ = hostlist::is_hostlist(text);
}

/// scp operands and ssh destinations.
pub fn operand(data: &[u8]) {
    let text = text(data);
    let _ = operand::parse_operand(text);
    let _ = operand::parse_destination(text);
}

/// ssh_config files, and the resolution of a few host names against them in both passes.
/// A file with `Match exec` is parsed only: applying it would run the input as a command.
pub fn ssh_config(data: &[u8]) {
    let Ok(config) = SshConfig::parse(text(data), Path::new("fuzz"), Path::new("/nonexistent"))
    else {
        return;
    };
    if config.runs_commands() {
        return;
    }
    for host in ["worker1", "10.0.1.5", "", "*"] {
        let context = MatchContext {
            original_host: host,
            user: None,
            port: None,
            local_user: "fuzz",
            home: Path::new("/nonexistent"),
        };
        let mut settings = HostSettings::default();
        for final_pass in [false, true] {
            let _ = config.apply(&mut settings, &context, final_pass);
        }
        let _ = settings.effective_hostname(host);
    }
}

/// known_hosts files, checked against a host with a key blob taken from the input.
pub fn known_hosts(data: &[u8]) {
    let known = KnownHosts::parse(text(data), Path::new("fuzz"));
    let blob = &data[..data.len().min(64)];
    for (host, port) in [("worker1", 22), ("10.0.1.5", 2222)] {
        let _ = known.check(host, port, "ssh-ed25519", blob);
        let _ = known.known_algorithms(host, port);
    }
}

/// A secret's value as text and as binary, through extraction and key decoding. No error
/// may quote key text from the input: an error's text never holds a 24-byte base64 run of it.
pub fn secret(data: &[u8]) {
    let values = [
        SecretValue::String(secrecy::SecretString::from(text(data).to_owned())),
        SecretValue::Binary(secrecy::SecretBox::from(data.to_vec().into_boxed_slice())),
    ];
    for value in &values {
        for field in [None, Some("Key")] {
            match extract_key_material("fuzz", value, field) {
                Ok(material) => {
                    if let Err(err) = ClientKey::decode(&material) {
                        assert_quotes_nothing(data, &err.to_string());
                    }
                }
                Err(err) => assert_quotes_nothing(data, &err.to_string()),
            }
        }
    }
}

fn assert_quotes_nothing(data: &[u8], message: &str) {
    const RUN: usize = 24;
    let message = message.as_bytes();
    if data.len() < RUN || message.len() < RUN {
        return;
    }
    for window in data.windows(RUN) {
        // What must never be quoted is key text: base64 (a PEM or OpenSSH body), which has
        // digits or `+`/`/` in any 24 characters. Other runs of the input may match the
        // message's own words by chance, and the fuzzer learns those words from this very
        // comparison, so they are not counted.
        let base64 = window
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='));
        let keylike = window
            .iter()
            .any(|b| b.is_ascii_digit() || matches!(b, b'+' | b'/'));
        if !(base64 && keylike) {
            continue;
        }
        assert!(
            !message.windows(RUN).any(|m| m == window),
            "an error quotes the secret: {}",
            String::from_utf8_lossy(message)
        );
    }
}

/// authorized_keys blocks, public key lines and the script's report.
pub fn authorized_keys(data: &[u8]) {
    let text = text(data);
    let _ = block::parse_block(text, "/dev/ssh");
    let _ = block::parse_report(text);
    if let Ok(line) = block::PublicKeyLine::parse(text) {
        let _ = block::ManagedKey::new(line, "v1");
    }
}
