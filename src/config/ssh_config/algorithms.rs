//! The algorithm lists of ssh_config(5): `Ciphers`, `KexAlgorithms`, `MACs`,
//! `HostKeyAlgorithms`, `PubkeyAcceptedAlgorithms` and `CASignatureAlgorithms`, with
//! OpenSSH's `+` (append to the default), `-` (remove from the default) and `^` (put at the
//! head of the default) forms.
//!
//! Owns: the names OpenSSH 9.x knows (so that a name OpenSSH would refuse is refused at
//! parse time, as OpenSSH does), the names smssh can negotiate, and smssh's default lists.
//! Invariants: every default is a subset of OpenSSH 9.x's default for the same keyword (never
//! weaker), in smssh's preference order; a resolved list holds only names smssh can
//! negotiate, and is never empty (an empty one is a parse error naming both lists). Must not
//! know: how the names map onto the SSH library (`ssh::session::client_config` does, and its
//! tests check that every supported name here maps).

use crate::config::pattern::{pattern_list_matches, wildcard_match};

/// Which algorithm list a keyword sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlgorithmKind {
    Ciphers,
    KexAlgorithms,
    Macs,
    HostKeyAlgorithms,
    PubkeyAcceptedAlgorithms,
    CaSignatureAlgorithms,
}

/// What one keyword accepts and what smssh does with it.
struct Table {
    keyword: &'static str,
    /// Every name OpenSSH 9.x accepts for the keyword, in `ssh -Q` order (the order in which
    /// a wildcard expands).
    known: &'static [&'static str],
    /// smssh's default list, in preference order.
    default: &'static [&'static str],
    /// Names smssh can negotiate beyond its default, only when a configuration asks.
    optional: &'static [&'static str],
    /// Whether `*`/`?` patterns are allowed outside the `-` form (OpenSSH allows them for
    /// key algorithm lists only).
    wildcards: bool,
}

const CIPHERS_KNOWN: &[&str] = &[
    "3des-cbc",
    "aes128-cbc",
    "aes192-cbc",
    "aes256-cbc",
    "aes128-ctr",
    "aes192-ctr",
    "aes256-ctr",
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
];

/// Measured order (README "Performance"): AES-GCM runs on AES-NI and beats
/// chacha20-poly1305 on bulk copies. The set is OpenSSH 9.x's default.
const CIPHERS_DEFAULT: &[&str] = &[
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
];

const CIPHERS_OPTIONAL: &[&str] = &["aes128-cbc", "aes192-cbc", "aes256-cbc"];

const KEX_KNOWN: &[&str] = &[
    "diffie-hellman-group1-sha1",
    "diffie-hellman-group14-sha1",
    "diffie-hellman-group14-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group-exchange-sha1",
    "diffie-hellman-group-exchange-sha256",
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
    "mlkem768x25519-sha256",
];

/// ML-KEM hybrid first, so that a server that offers it (OpenSSH 9.9 and later) gets a
/// post-quantum exchange; curve25519 is the cheap choice for older sshd. The NIST-curve
/// exchanges of OpenSSH's default are left out: every sshd since 6.5 has curve25519, and
/// ssh-audit fails a client that offers them.
const KEX_DEFAULT: &[&str] = &[
    "mlkem768x25519-sha256",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group-exchange-sha256",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group14-sha256",
];

const KEX_OPTIONAL: &[&str] = &[
    "ecdh-sha2-nistp256",
    "ecdh-sha2-nistp384",
    "ecdh-sha2-nistp521",
    "diffie-hellman-group14-sha1",
    "diffie-hellman-group-exchange-sha1",
    "diffie-hellman-group1-sha1",
];

const MACS_KNOWN: &[&str] = &[
    "hmac-sha1",
    "hmac-sha1-96",
    "hmac-sha2-256",
    "hmac-sha2-512",
    "hmac-md5",
    "hmac-md5-96",
    "umac-64@openssh.com",
    "umac-128@openssh.com",
    "hmac-sha1-etm@openssh.com",
    "hmac-sha1-96-etm@openssh.com",
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-md5-etm@openssh.com",
    "hmac-md5-96-etm@openssh.com",
    "umac-64-etm@openssh.com",
    "umac-128-etm@openssh.com",
];

/// SHA-2 only: the default ciphers are AEAD and use no MAC, and SHA-1 MACs are what
/// ssh-audit fails.
const MACS_DEFAULT: &[&str] = &[
    "hmac-sha2-256-etm@openssh.com",
    "hmac-sha2-512-etm@openssh.com",
    "hmac-sha2-256",
    "hmac-sha2-512",
];

const MACS_OPTIONAL: &[&str] = &["hmac-sha1-etm@openssh.com", "hmac-sha1"];

const KEYS_KNOWN: &[&str] = &[
    "ssh-ed25519",
    "ssh-ed25519-cert-v01@openssh.com",
    "sk-ssh-ed25519@openssh.com",
    "sk-ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "sk-ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
    "ssh-dss",
    "ssh-dss-cert-v01@openssh.com",
    "ssh-rsa",
    "ssh-rsa-cert-v01@openssh.com",
    "rsa-sha2-256",
    "rsa-sha2-256-cert-v01@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-512-cert-v01@openssh.com",
];

/// OpenSSH 9.x's default without the certificate and security-key names smssh cannot use,
/// and without `ssh-rsa` (SHA-1 signatures), which OpenSSH dropped from its defaults in 8.8.
const KEYS_DEFAULT: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
];

const KEYS_OPTIONAL: &[&str] = &["ssh-rsa"];

/// Host keys: certificates first, as in OpenSSH's default (offered only when a
/// `@cert-authority` line may vouch for the host), then [`KEYS_DEFAULT`].
const HOST_KEYS_DEFAULT: &[&str] = &[
    "ssh-ed25519-cert-v01@openssh.com",
    "ecdsa-sha2-nistp256-cert-v01@openssh.com",
    "ecdsa-sha2-nistp384-cert-v01@openssh.com",
    "ecdsa-sha2-nistp521-cert-v01@openssh.com",
    "rsa-sha2-512-cert-v01@openssh.com",
    "rsa-sha2-256-cert-v01@openssh.com",
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
];

const HOST_KEYS_OPTIONAL: &[&str] = &["ssh-rsa-cert-v01@openssh.com", "ssh-rsa"];

/// Certificate-authority signatures: OpenSSH 9.x's default, non-certificate key names.
const CA_DEFAULT: &[&str] = &[
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com",
    "sk-ecdsa-sha2-nistp256@openssh.com",
    "rsa-sha2-512",
    "rsa-sha2-256",
];

const CA_OPTIONAL: &[&str] = &[
    "ssh-rsa",
    "ssh-dss",
    "webauthn-sk-ecdsa-sha2-nistp256@openssh.com",
];

impl AlgorithmKind {
    fn table(self) -> Table {
        match self {
            AlgorithmKind::Ciphers => Table {
                keyword: "Ciphers",
                known: CIPHERS_KNOWN,
                default: CIPHERS_DEFAULT,
                optional: CIPHERS_OPTIONAL,
                wildcards: false,
            },
            AlgorithmKind::KexAlgorithms => Table {
                keyword: "KexAlgorithms",
                known: KEX_KNOWN,
                default: KEX_DEFAULT,
                optional: KEX_OPTIONAL,
                wildcards: false,
            },
            AlgorithmKind::Macs => Table {
                keyword: "MACs",
                known: MACS_KNOWN,
                default: MACS_DEFAULT,
                optional: MACS_OPTIONAL,
                wildcards: false,
            },
            AlgorithmKind::HostKeyAlgorithms => Table {
                keyword: "HostKeyAlgorithms",
                known: KEYS_KNOWN,
                default: HOST_KEYS_DEFAULT,
                optional: HOST_KEYS_OPTIONAL,
                wildcards: true,
            },
            AlgorithmKind::PubkeyAcceptedAlgorithms => Table {
                keyword: "PubkeyAcceptedAlgorithms",
                known: KEYS_KNOWN,
                default: KEYS_DEFAULT,
                optional: KEYS_OPTIONAL,
                wildcards: true,
            },
            AlgorithmKind::CaSignatureAlgorithms => Table {
                keyword: "CASignatureAlgorithms",
                known: KEYS_KNOWN,
                default: CA_DEFAULT,
                optional: CA_OPTIONAL,
                wildcards: true,
            },
        }
    }

    /// The keyword as ssh_config(5) spells it.
    pub fn keyword(self) -> &'static str {
        self.table().keyword
    }

    /// smssh's list when no configuration sets one.
    pub fn default_list(self) -> Vec<String> {
        self.table()
            .default
            .iter()
            .map(|s| (*s).to_owned())
            .collect()
    }

    /// Every name smssh can negotiate for this list: its default, then the names only a
    /// configuration can add.
    pub fn supported(self) -> Vec<&'static str> {
        let table = self.table();
        table
            .default
            .iter()
            .chain(table.optional)
            .copied()
            .collect()
    }
}

/// Why an algorithm list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AlgorithmProblem {
    /// A name OpenSSH does not know, or a malformed list (OpenSSH's own words).
    #[error("Bad {keyword} spec '{value}'")]
    BadSpec {
        keyword: &'static str,
        value: String,
    },
    /// The list is valid but leaves nothing smssh can negotiate.
    #[error(
        "{keyword} {value} leaves no algorithm smssh supports (resolved to: {resolved}); \
         smssh supports {supported}"
    )]
    NothingSupported {
        keyword: &'static str,
        value: String,
        resolved: String,
        supported: String,
    },
}

/// Resolves one value of `kind`'s keyword (`LIST`, `+LIST`, `-LIST` or `^LIST`, each
/// comma-separated) against smssh's default list, as OpenSSH's `kex_assemble_names` does
/// against its own: the result keeps the list's order, expands patterns in `ssh -Q` order,
/// drops duplicates, then keeps only what smssh can negotiate.
pub fn resolve(kind: AlgorithmKind, value: &str) -> Result<Vec<String>, AlgorithmProblem> {
    let table = kind.table();
    let bad = || AlgorithmProblem::BadSpec {
        keyword: table.keyword,
        value: value.to_owned(),
    };
    let (op, list) = match value.as_bytes().first() {
        Some(b'+' | b'-' | b'^') => (value.as_bytes()[0], &value[1..]),
        _ => (b'=', value),
    };
    let names: Vec<&str> = list.split(',').collect();
    if names.iter().any(|n| n.is_empty() || n.starts_with('!')) {
        return Err(bad());
    }
    let is_pattern = |n: &str| n.contains(['*', '?']);
    if op != b'-'
        && !names
            .iter()
            .all(|n| table.known.contains(n) || (table.wildcards && is_pattern(n)))
    {
        return Err(bad());
    }
    let default = table.default.iter().copied();
    let assembled: Vec<&str> = match op {
        b'+' => default.chain(names.iter().copied()).collect(),
        b'^' => names.iter().copied().chain(default).collect(),
        b'-' => default
            .filter(|name| !pattern_list_matches(names.iter().copied(), name))
            .collect(),
        _ => names,
    };
    let mut resolved: Vec<&str> = Vec::new();
    for entry in assembled {
        for name in table.known.iter().copied() {
            let matches = if is_pattern(entry) {
                wildcard_match(entry, name)
            } else {
                entry == name
            };
            if matches && !resolved.contains(&name) {
                resolved.push(name);
            }
        }
    }
    let supported = kind.supported();
    let usable: Vec<String> = resolved
        .iter()
        .filter(|name| supported.contains(name))
        .map(|name| (*name).to_owned())
        .collect();
    if usable.is_empty() {
        return Err(AlgorithmProblem::NothingSupported {
            keyword: table.keyword,
            value: value.to_owned(),
            resolved: if resolved.is_empty() {
                "nothing".to_owned()
            } else {
                resolved.join(",")
            },
            supported: supported.join(","),
        });
    }
    Ok(usable)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL_KINDS: [AlgorithmKind; 6] = [
        AlgorithmKind::Ciphers,
        AlgorithmKind::KexAlgorithms,
        AlgorithmKind::Macs,
        AlgorithmKind::HostKeyAlgorithms,
        AlgorithmKind::PubkeyAcceptedAlgorithms,
        AlgorithmKind::CaSignatureAlgorithms,
    ];

    /// OpenSSH 9.9's defaults (`ssh -G` of 9.9, plus ML-KEM which 9.9 added), against which
    /// smssh's defaults must be no weaker: a subset.
    const OPENSSH_DEFAULTS: [(AlgorithmKind, &str); 5] = [
        (
            AlgorithmKind::Ciphers,
            "chacha20-poly1305@openssh.com,aes128-ctr,aes192-ctr,aes256-ctr,\
             aes128-gcm@openssh.com,aes256-gcm@openssh.com",
        ),
        (
            AlgorithmKind::KexAlgorithms,
            "sntrup761x25519-sha512,sntrup761x25519-sha512@openssh.com,mlkem768x25519-sha256,\
             curve25519-sha256,curve25519-sha256@libssh.org,ecdh-sha2-nistp256,\
             ecdh-sha2-nistp384,ecdh-sha2-nistp521,diffie-hellman-group-exchange-sha256,\
             diffie-hellman-group16-sha512,diffie-hellman-group18-sha512,\
             diffie-hellman-group14-sha256",
        ),
        (
            AlgorithmKind::Macs,
            "umac-64-etm@openssh.com,umac-128-etm@openssh.com,hmac-sha2-256-etm@openssh.com,\
             hmac-sha2-512-etm@openssh.com,hmac-sha1-etm@openssh.com,umac-64@openssh.com,\
             umac-128@openssh.com,hmac-sha2-256,hmac-sha2-512,hmac-sha1",
        ),
        (
            AlgorithmKind::HostKeyAlgorithms,
            "ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256-cert-v01@openssh.com,\
             ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521-cert-v01@openssh.com,\
             sk-ssh-ed25519-cert-v01@openssh.com,sk-ecdsa-sha2-nistp256-cert-v01@openssh.com,\
             rsa-sha2-512-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com,\
             ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,\
             sk-ssh-ed25519@openssh.com,sk-ecdsa-sha2-nistp256@openssh.com,rsa-sha2-512,\
             rsa-sha2-256",
        ),
        (
            AlgorithmKind::CaSignatureAlgorithms,
            "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,\
             sk-ssh-ed25519@openssh.com,sk-ecdsa-sha2-nistp256@openssh.com,rsa-sha2-512,\
             rsa-sha2-256",
        ),
    ];

    #[test]
    fn defaults_are_no_weaker_than_openssh_and_known() {
        for (kind, openssh) in OPENSSH_DEFAULTS {
            let openssh: Vec<&str> = openssh.split(',').collect();
            for name in kind.default_list() {
                assert!(openssh.contains(&name.as_str()), "{kind:?}: {name}");
            }
        }
        for kind in ALL_KINDS {
            let table = kind.table();
            for name in kind.supported() {
                assert!(table.known.contains(&name), "{kind:?}: {name}");
            }
        }
        for kind in [
            AlgorithmKind::HostKeyAlgorithms,
            AlgorithmKind::PubkeyAcceptedAlgorithms,
        ] {
            let default = kind.default_list();
            assert!(
                !default.iter().any(|n| n.starts_with("ssh-rsa")),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn resolve_table() {
        use AlgorithmKind::*;
        let cases: Vec<(AlgorithmKind, &str, &str)> = vec![
            (Ciphers, "aes256-ctr", "aes256-ctr"),
            (
                Ciphers,
                "-chacha20-poly1305@openssh.com",
                "aes128-gcm@openssh.com,aes256-gcm@openssh.com,aes256-ctr,aes192-ctr,aes128-ctr",
            ),
            (
                Ciphers,
                "-*-ctr,*-gcm@openssh.com",
                "chacha20-poly1305@openssh.com",
            ),
            (
                Ciphers,
                "^aes128-ctr,aes256-ctr",
                "aes128-ctr,aes256-ctr,aes128-gcm@openssh.com,aes256-gcm@openssh.com,\
                 chacha20-poly1305@openssh.com,aes192-ctr",
            ),
            (
                Ciphers,
                "+aes128-cbc",
                "aes128-gcm@openssh.com,aes256-gcm@openssh.com,chacha20-poly1305@openssh.com,\
                 aes256-ctr,aes192-ctr,aes128-ctr,aes128-cbc",
            ),
            // Names smssh cannot negotiate drop out while one it can remains.
            (Ciphers, "3des-cbc,aes256-ctr", "aes256-ctr"),
            (
                KexAlgorithms,
                "sntrup761x25519-sha512@openssh.com,curve25519-sha256",
                "curve25519-sha256",
            ),
            (Macs, "hmac-sha1", "hmac-sha1"),
            (
                PubkeyAcceptedAlgorithms,
                "+ssh-rsa",
                "ssh-ed25519,ecdsa-sha2-nistp256,ecdsa-sha2-nistp384,ecdsa-sha2-nistp521,\
                 rsa-sha2-512,rsa-sha2-256,ssh-rsa",
            ),
            (
                HostKeyAlgorithms,
                "rsa-sha2-*",
                "rsa-sha2-256,rsa-sha2-256-cert-v01@openssh.com,rsa-sha2-512,\
                 rsa-sha2-512-cert-v01@openssh.com",
            ),
            (
                HostKeyAlgorithms,
                "-ecdsa*,*-cert-v01@openssh.com",
                "ssh-ed25519,rsa-sha2-512,rsa-sha2-256",
            ),
            (
                HostKeyAlgorithms,
                "*-cert-v01@openssh.com",
                "ssh-ed25519-cert-v01@openssh.com,ecdsa-sha2-nistp256-cert-v01@openssh.com,\
                 ecdsa-sha2-nistp384-cert-v01@openssh.com,ecdsa-sha2-nistp521-cert-v01@openssh.com,\
                 ssh-rsa-cert-v01@openssh.com,rsa-sha2-256-cert-v01@openssh.com,\
                 rsa-sha2-512-cert-v01@openssh.com",
            ),
            (PubkeyAcceptedAlgorithms, "ssh-ed25519", "ssh-ed25519"),
        ];
        for (kind, value, want) in cases {
            let want: Vec<String> = want.split(',').map(|s| s.trim().to_owned()).collect();
            assert_eq!(resolve(kind, value).unwrap(), want, "{kind:?} {value}");
        }
    }

    #[test]
    fn resolve_errors_table() {
        use AlgorithmKind::*;
        let cases: Vec<(AlgorithmKind, &str, &str)> = vec![
            (Ciphers, "aes*", "Bad Ciphers spec 'aes*'"),
            (Ciphers, "blowfish-cbc", "Bad Ciphers spec 'blowfish-cbc'"),
            (Ciphers, "aes128-ctr,", "Bad Ciphers spec 'aes128-ctr,'"),
            (Macs, "+!hmac-sha1", "Bad MACs spec '+!hmac-sha1'"),
            (
                Ciphers,
                "3des-cbc",
                "Ciphers 3des-cbc leaves no algorithm smssh supports (resolved to: 3des-cbc); \
                 smssh supports aes128-gcm@openssh.com,",
            ),
            (
                Ciphers,
                "-*",
                "Ciphers -* leaves no algorithm smssh supports (resolved to: nothing)",
            ),
            (
                KexAlgorithms,
                "sntrup761x25519-sha512@openssh.com",
                "KexAlgorithms sntrup761x25519-sha512@openssh.com leaves no algorithm",
            ),
            (
                HostKeyAlgorithms,
                "sk-*",
                "HostKeyAlgorithms sk-* leaves no algorithm",
            ),
        ];
        for (kind, value, want) in cases {
            let got = resolve(kind, value).unwrap_err().to_string();
            assert!(got.starts_with(want), "{kind:?} {value}: {got}");
        }
    }
}
