//! Command-line operands: scp file operands and ssh destinations.
//!
//! This module owns the rules by which OpenSSH's `scp` decides whether an
//! operand names a local file or a remote one (`[user@]host:path`,
//! `[user@][ipv6]:path`, `scp://[user@]host[:port][/path]`), and how `ssh`
//! reads its destination (`[user@]host`, `ssh://[user@]host[:port]`).
//!
//! Invariants:
//! - Hosts are returned without IPv6 brackets and are never empty.
//! - A remote path of `""` means the remote user's home directory; OpenSSH
//!   writes it as `.`, which is the same directory.
//! - Parsing is purely textual: nothing is resolved, stat'ed or looked up.
//!
//! This module must not know about ssh_config aliases, default users or
//! ports, or how transfers are performed; the caller applies those.

use std::path::PathBuf;

/// Errors for operands and destinations that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OperandError {
    #[error("empty operand")]
    Empty,
    #[error("{operand:?}: empty host")]
    EmptyHost { operand: String },
    /// OpenSSH refuses `@host` and `scp://@host` rather than guessing a user.
    #[error("{operand:?}: empty user name")]
    EmptyUser { operand: String },
    #[error("{operand:?}: invalid port {port:?} (expected 1 to 65535)")]
    InvalidPort { operand: String, port: String },
    #[error("{operand:?}: missing ] after IPv6 address")]
    UnclosedBracket { operand: String },
    #[error("{operand:?}: invalid %-encoding in URI")]
    InvalidEncoding { operand: String },
    #[error("{operand:?}: an ssh:// destination cannot contain a path")]
    PathInDestination { operand: String },
}

/// A file on a remote host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemotePath {
    pub user: Option<String>,
    pub host: String,
    /// Only the `scp://` form can carry a port.
    pub port: Option<u16>,
    /// `""` means the remote home directory. Relative paths are relative to
    /// the home directory, including the path of an `scp://` URI, as in
    /// OpenSSH.
    pub path: String,
}

/// One scp source or target operand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operand {
    Local(PathBuf),
    Remote(RemotePath),
}

/// An ssh destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// Parses an scp operand as OpenSSH's scp does.
///
/// An operand is remote if it is an `scp://` URI or if it has a `:` before
/// any `/` (a `:` inside `[...]` after the start or after `@` does not
/// count, so IPv6 addresses work). A leading `:` makes it a local file name,
/// as in OpenSSH. The user is everything before the last `@` in front of the
/// colon.
pub fn parse_operand(arg: &str) -> Result<Operand, OperandError> {
    if arg.is_empty() {
        return Err(OperandError::Empty);
    }
    if let Some(rest) = arg.strip_prefix("scp://") {
        let uri = parse_uri(arg, rest)?;
        return Ok(Operand::Remote(RemotePath {
            user: uri.user,
            host: uri.host,
            port: uri.port,
            path: uri.path,
        }));
    }
    let Some(colon) = remote_colon(arg) else {
        return Ok(Operand::Local(PathBuf::from(arg)));
    };
    let (user_host, path) = (&arg[..colon], &arg[colon + 1..]);
    let (user, host) = match user_host.rsplit_once('@') {
        // OpenSSH's scp treats `@host:path` as having no user.
        Some((user, host)) => ((!user.is_empty()).then(|| user.to_string()), host),
        None => (None, user_host),
    };
    let host = strip_brackets(host);
    if host.is_empty() {
        return Err(OperandError::EmptyHost {
            operand: arg.to_string(),
        });
    }
    Ok(Operand::Remote(RemotePath {
        user,
        host: host.to_string(),
        port: None,
        path: path.to_string(),
    }))
}

/// Parses an ssh destination: `[user@]host` (the user ends at the last
/// `@`) or `ssh://[user@]host[:port]`.
pub fn parse_destination(arg: &str) -> Result<Destination, OperandError> {
    if arg.is_empty() {
        return Err(OperandError::Empty);
    }
    if let Some(rest) = arg.strip_prefix("ssh://") {
        let uri = parse_uri(arg, rest)?;
        if !uri.path.is_empty() {
            return Err(OperandError::PathInDestination {
                operand: arg.to_string(),
            });
        }
        return Ok(Destination {
            user: uri.user,
            host: uri.host,
            port: uri.port,
        });
    }
    let (user, host) = match arg.rsplit_once('@') {
        Some(("", _)) => {
            return Err(OperandError::EmptyUser {
                operand: arg.to_string(),
            })
        }
        Some((user, host)) => (Some(user.to_string()), host),
        None => (None, arg),
    };
    let host = strip_brackets(host);
    if host.is_empty() {
        return Err(OperandError::EmptyHost {
            operand: arg.to_string(),
        });
    }
    Ok(Destination {
        user,
        host: host.to_string(),
        port: None,
    })
}

/// Byte index of the `:` that separates host from path, following
/// OpenSSH's `colon()`: a leading `:` means a local file, a `/` before any
/// separating colon means a local path, and while inside brackets that
/// open the operand or follow an `@`, only `]:` separates.
fn remote_colon(arg: &str) -> Option<usize> {
    let bytes = arg.as_bytes();
    if bytes.first() == Some(&b':') {
        return None;
    }
    let mut in_brackets = bytes.first() == Some(&b'[');
    for (i, &b) in bytes.iter().enumerate() {
        let next = bytes.get(i + 1).copied();
        if b == b'@' && next == Some(b'[') {
            in_brackets = true;
        }
        if b == b']' && next == Some(b':') && in_brackets {
            return Some(i + 1);
        }
        if b == b':' && !in_brackets {
            return Some(i);
        }
        if b == b'/' {
            return None;
        }
    }
    None
}

/// Removes the brackets around an IPv6 address, as OpenSSH's
/// `cleanhostname` does.
fn strip_brackets(host: &str) -> &str {
    host.strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host)
}

struct Uri {
    user: Option<String>,
    host: String,
    port: Option<u16>,
    path: String,
}

/// Parses the part of an `scp://` or `ssh://` URI after the scheme, as
/// OpenSSH's `parse_uri` does: optional `user[;params]@` (params ignored),
/// host (IPv6 in brackets), optional `:port`, optional `/path` whose leading
/// slash is a separator and not part of the path. User and path are
/// %-decoded with `+` meaning space, as in OpenSSH.
fn parse_uri(operand: &str, rest: &str) -> Result<Uri, OperandError> {
    let err_operand = || operand.to_string();
    let (authority, path) = match rest.find('/') {
        // A `/` inside brackets cannot occur in a valid IPv6 address, so
        // the first `/` always ends the authority.
        Some(slash) => (&rest[..slash], &rest[slash + 1..]),
        None => (rest, ""),
    };
    let (user, host_port) = match authority.split_once('@') {
        Some((user_info, host_port)) => {
            let user = user_info
                .split_once(';')
                .map_or(user_info, |(user, _)| user);
            if user.is_empty() {
                return Err(OperandError::EmptyUser {
                    operand: err_operand(),
                });
            }
            (Some(url_decode(user, operand)?), host_port)
        }
        None => (None, authority),
    };
    let (host, port_text) = if let Some(bracketed) = host_port.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(OperandError::UnclosedBracket {
                operand: err_operand(),
            });
        };
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            // Text glued to `]` is not a port separator: reject it
            // like OpenSSH does rather than dropping it.
            None => {
                return Err(OperandError::InvalidPort {
                    operand: err_operand(),
                    port: after.to_string(),
                })
            }
        }
    } else {
        match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        }
    };
    if host.is_empty() {
        return Err(OperandError::EmptyHost {
            operand: err_operand(),
        });
    }
    let port = match port_text {
        None => None,
        Some(text) => match text.parse::<u16>() {
            Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => Some(port),
            _ => {
                return Err(OperandError::InvalidPort {
                    operand: err_operand(),
                    port: text.to_string(),
                })
            }
        },
    };
    Ok(Uri {
        user,
        host: host.to_string(),
        port,
        path: url_decode(path, operand)?,
    })
}

/// OpenSSH's urldecode: `%XX` is a byte, `+` is a space; the result must
/// be UTF-8 because paths and users travel as Rust strings.
fn url_decode(text: &str, operand: &str) -> Result<String, OperandError> {
    let invalid = || OperandError::InvalidEncoding {
        operand: operand.to_string(),
    };
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(invalid)?;
                let hex = std::str::from_utf8(hex).map_err(|_| invalid())?;
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid());
                }
                out.push(u8::from_str_radix(hex, 16).map_err(|_| invalid())?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).map_err(|_| invalid())
}

/// A single path component that stays where it is put: nothing that climbs (`..`), stays
/// (`.`), roots or descends (`/`). Names a server gives us for files in a directory, and the
/// host names a gather makes directories of, must be such names.
pub fn is_plain_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains('/') && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote(user: Option<&str>, host: &str, port: Option<u16>, path: &str) -> Operand {
        Operand::Remote(RemotePath {
            user: user.map(String::from),
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    fn local(path: &str) -> Operand {
        Operand::Local(PathBuf::from(path))
    }

    #[test]
    fn operand_table() {
        let cases: Vec<(&str, Operand)> = vec![
            ("file", local("file")),
            ("./a:b", local("./a:b")),
            ("/abs:colon", local("/abs:colon")),
            ("dir/x:y", local("dir/x:y")),
            (":leading-colon", local(":leading-colon")),
            ("[fe80::1]/x", local("[fe80::1]/x")),
            ("user@host", local("user@host")),
            ("host:", remote(None, "host", None, "")),
            ("host:file", remote(None, "host", None, "file")),
            ("host:/abs/path", remote(None, "host", None, "/abs/path")),
            ("host:a:b", remote(None, "host", None, "a:b")),
            ("rotate:x", remote(None, "rotate", None, "x")),
            (
                "ec2-user@10.0.1.5:",
                remote(Some("ec2-user"), "10.0.1.5", None, ""),
            ),
            (
                "ec2-user@10.0.1.5:/var/log",
                remote(Some("ec2-user"), "10.0.1.5", None, "/var/log"),
            ),
            ("a@b@c:path", remote(Some("a@b"), "c", None, "path")),
            ("@host:p", remote(None, "host", None, "p")),
            ("[fe80::1]:/tmp/x", remote(None, "fe80::1", None, "/tmp/x")),
            ("[fe80::1]:", remote(None, "fe80::1", None, "")),
            ("u@[fe80::1]:f", remote(Some("u"), "fe80::1", None, "f")),
            ("u@[::1]:a:b", remote(Some("u"), "::1", None, "a:b")),
            (
                "scp://u@h:2222/tmp/f",
                remote(Some("u"), "h", Some(2222), "tmp/f"),
            ),
            ("scp://h//abs/f", remote(None, "h", None, "/abs/f")),
            ("scp://h/", remote(None, "h", None, "")),
            ("scp://h", remote(None, "h", None, "")),
            ("scp://h:22", remote(None, "h", Some(22), "")),
            (
                "scp://[fe80::1]:2222/x",
                remote(None, "fe80::1", Some(2222), "x"),
            ),
            ("scp://[::1]/x", remote(None, "::1", None, "x")),
            ("scp://u;fp=abc@h/x", remote(Some("u"), "h", None, "x")),
            (
                "scp://a%40b@h/my%20file+2",
                remote(Some("a@b"), "h", None, "my file 2"),
            ),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_operand(arg), Ok(want), "{arg:?}");
        }
    }

    #[test]
    fn operand_error_table() {
        let op = |s: &str| s.to_string();
        let cases: Vec<(&str, OperandError)> = vec![
            ("", OperandError::Empty),
            ("@:x", OperandError::EmptyHost { operand: op("@:x") }),
            (
                "u@:x",
                OperandError::EmptyHost {
                    operand: op("u@:x"),
                },
            ),
            (
                "[]:x",
                OperandError::EmptyHost {
                    operand: op("[]:x"),
                },
            ),
            (
                "scp://",
                OperandError::EmptyHost {
                    operand: op("scp://"),
                },
            ),
            (
                "scp://u@/x",
                OperandError::EmptyHost {
                    operand: op("scp://u@/x"),
                },
            ),
            (
                "scp://@h/x",
                OperandError::EmptyUser {
                    operand: op("scp://@h/x"),
                },
            ),
            (
                "scp://h:/x",
                OperandError::InvalidPort {
                    operand: op("scp://h:/x"),
                    port: op(""),
                },
            ),
            (
                "scp://h:0/x",
                OperandError::InvalidPort {
                    operand: op("scp://h:0/x"),
                    port: op("0"),
                },
            ),
            (
                "scp://h:70000",
                OperandError::InvalidPort {
                    operand: op("scp://h:70000"),
                    port: op("70000"),
                },
            ),
            (
                "scp://h:+22",
                OperandError::InvalidPort {
                    operand: op("scp://h:+22"),
                    port: op("+22"),
                },
            ),
            (
                "scp://[::1/x",
                OperandError::UnclosedBracket {
                    operand: op("scp://[::1/x"),
                },
            ),
            (
                "scp://[::1]x/y",
                OperandError::InvalidPort {
                    operand: op("scp://[::1]x/y"),
                    port: op("x"),
                },
            ),
            (
                "scp://h/%zz",
                OperandError::InvalidEncoding {
                    operand: op("scp://h/%zz"),
                },
            ),
            (
                "scp://h/%4",
                OperandError::InvalidEncoding {
                    operand: op("scp://h/%4"),
                },
            ),
            (
                "scp://h/%ff",
                OperandError::InvalidEncoding {
                    operand: op("scp://h/%ff"),
                },
            ),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_operand(arg), Err(want), "{arg:?}");
        }
    }

    #[test]
    fn destination_table() {
        let dest = |user: Option<&str>, host: &str, port| Destination {
            user: user.map(String::from),
            host: host.to_string(),
            port,
        };
        let cases: Vec<(&str, Result<Destination, OperandError>)> = vec![
            ("host", Ok(dest(None, "host", None))),
            ("rotate", Ok(dest(None, "rotate", None))),
            (
                "ec2-user@10.0.1.5",
                Ok(dest(Some("ec2-user"), "10.0.1.5", None)),
            ),
            ("a@b@c", Ok(dest(Some("a@b"), "c", None))),
            ("u@[fe80::1]", Ok(dest(Some("u"), "fe80::1", None))),
            ("ssh://u@h:2222", Ok(dest(Some("u"), "h", Some(2222)))),
            ("ssh://h", Ok(dest(None, "h", None))),
            ("ssh://h/", Ok(dest(None, "h", None))),
            ("ssh://[::1]:22", Ok(dest(None, "::1", Some(22)))),
            ("", Err(OperandError::Empty)),
            (
                "@host",
                Err(OperandError::EmptyUser {
                    operand: "@host".into(),
                }),
            ),
            (
                "user@",
                Err(OperandError::EmptyHost {
                    operand: "user@".into(),
                }),
            ),
            (
                "ssh://h/path",
                Err(OperandError::PathInDestination {
                    operand: "ssh://h/path".into(),
                }),
            ),
            (
                "ssh://h:x",
                Err(OperandError::InvalidPort {
                    operand: "ssh://h:x".into(),
                    port: "x".into(),
                }),
            ),
        ];
        for (arg, want) in cases {
            assert_eq!(parse_destination(arg), want, "{arg:?}");
        }
    }

    #[test]
    fn error_messages_name_the_operand() {
        let cases = [
            (parse_operand("u@:x").unwrap_err(), "\"u@:x\": empty host"),
            (parse_operand("").unwrap_err(), "empty operand"),
            (
                parse_destination("ssh://h:0").unwrap_err(),
                "\"ssh://h:0\": invalid port \"0\" (expected 1 to 65535)",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }
}
