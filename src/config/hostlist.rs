//! Hostlist expressions: the pdsh/ClusterShell notation for naming many hosts
//! at once, such as `ec2-user@rack[1-2]-node[01-32]:2222,db1`.
//!
//! This module owns that notation in both directions: expanding expressions
//! (from the command line or a hosts file) into [`HostSpec`]s, removing an
//! exclusion list from them, compressing host names back into a short
//! expression for display, and deciding whether a piece of text uses the
//! notation at all.
//!
//! Invariants:
//! - [`expand`] and [`parse_hosts_file`] never return an empty list, never
//!   produce more than `MAX_HOSTS` (100,000) hosts, and keep the order in
//!   which hosts are written. A target appears once: two targets are the same
//!   when their host names are equal ignoring ASCII case (as OpenSSH and DNS
//!   treat them) and their users and ports are equal; the first spelling is
//!   kept.
//! - Every returned host is non-empty, has no brackets, no shell
//!   metacharacters and no leading `-`, so nothing downstream can mistake it
//!   for a command-line option.
//! - Parsing is purely textual: nothing is resolved or looked up.
//!
//! This module must not know about ssh_config aliases, default users or
//! ports, command-line flags, files on disk, or how connections are made; the
//! caller reads hosts files and passes their text.

use std::collections::{BTreeMap, BTreeSet, HashSet};

/// The most hosts one expression (or one hosts file) may produce, counted
/// before duplicates are removed. It stops typos such as `[1-99999999]` from
/// exhausting memory or opening millions of connections.
const MAX_HOSTS: u64 = 100_000;

/// Characters refused in host and user names, besides whitespace and control
/// characters. They are the shell metacharacters OpenSSH refuses in host
/// names, `/` (which would make an scp operand a local path), `#` (which
/// starts a comment in hosts files) and the brackets and comma of hostlist
/// syntax, whose presence in a name means the text was not parsed as the user
/// intended.
const FORBIDDEN: &str = "'`\"$\\;&<>|(){}[],/#";

/// Errors for hostlist expressions and hosts files that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostlistError {
    #[error("empty host list: name at least one host, for example worker[01-64]")]
    Empty,
    #[error("{expr}: empty host name between commas: remove the extra ','")]
    EmptyTerm { expr: String },
    #[error("{term}: unbalanced '[': close it with ']'")]
    UnbalancedOpen { term: String },
    #[error("{term}: unbalanced ']': remove it or open the range with '['")]
    UnbalancedClose { term: String },
    #[error("{term}: empty brackets '[]': put numbers inside, for example [1-8]")]
    EmptyBrackets { term: String },
    /// `[1,,3]`, `[1-]` and `[-3]`: a comma or dash with no number beside it.
    #[error(
        "{term}: a number is missing in brackets: write ranges as [1-8] and lists as [1,3,5-7]"
    )]
    MissingNumber { term: String },
    #[error("{term}: '{bound}' in brackets is not a number: brackets hold only digits, '-' and ',', as in [01-64]")]
    NonNumericBound { term: String, bound: String },
    #[error("{term}: number {bound} in brackets is too large: check it for a typo")]
    BoundTooLarge { term: String, bound: String },
    /// A bound written with more digits than a host name label can hold.
    #[error("{term}: a bound of {digits} digits: a host name label has at most 63 characters")]
    BoundTooWide { term: String, digits: usize },
    /// `first` and `second` are the bounds as written, so the suggested fix
    /// keeps the user's zero padding.
    #[error("{term}: range {first}-{second} runs backwards: write it as {second}-{first}")]
    ReversedRange {
        term: String,
        first: String,
        second: String,
    },
    #[error("{expr}: more than {MAX_HOSTS} hosts in total: check the ranges for a typo such as [1-99999999]")]
    TooManyHosts { expr: String },
    #[error("{term}: invalid port '{port}': use a number from 1 to 65535")]
    BadPort { term: String, port: String },
    #[error("{term}: empty user name before '@': write user@host, or drop the '@'")]
    EmptyUser { term: String },
    #[error("{term}: no host name: write [user@]host[:port]")]
    EmptyHost { term: String },
    /// A bare IPv6 address, or a port written twice.
    #[error("{term}: more than one ':' outside brackets: put an IPv6 address in brackets, as in [fe80::1]:22, and give at most one port")]
    ExtraColon { term: String },
    #[error(
        "{term}: unexpected text after the bracketed IPv6 address: only ':port' may follow ']'"
    )]
    TextAfterIpv6 { term: String },
    /// `what` is "host name" or "user name".
    #[error("{term}: {ch:?} is not allowed in a {what}: remove it")]
    InvalidCharacter {
        term: String,
        what: &'static str,
        ch: char,
    },
    /// A leading `-` would let a name pass for an option to ssh or scp.
    #[error(
        "{term}: a {what} cannot start with '-', which would read as an option: remove the '-'"
    )]
    LeadingDash { term: String, what: &'static str },
    #[error("every host was excluded by {exclude}: narrow the exclude list so at least one host remains")]
    AllExcluded { exclude: String },
    #[error("{path}: no hosts listed: add one [user@]host[:port] or hostlist expression per line")]
    NoHostsInFile { path: String },
    /// An error on one line of a hosts file. The inner error is displayed
    /// rather than exposed as a source so that `{:#}` chains print it once.
    #[error("{path}:{line}: {error}")]
    InFile {
        path: String,
        line: usize,
        error: Box<HostlistError>,
    },
}

/// One target host as written: optional user, the host, optional port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostSpec {
    pub user: Option<String>,
    pub host: String,
    pub port: Option<u16>,
}

/// Expands a pdsh/ClusterShell hostlist expression into hosts, in order,
/// without duplicates.
///
/// Terms are separated by commas outside brackets. Each term is
/// `[user@]pattern[:port]`, where the pattern is literal text and bracket
/// groups of numbers and ranges (`[1,3,5-7]`, `[01-64]`), or a single
/// bracketed IPv6 address (`[fe80::1]`). A range keeps the width of its low
/// bound as written, so `[098-101]` gives `098 099 100 101` and `[8-10]` gives
/// `8 9 10`. Several groups multiply, the leftmost varying slowest. Spaces
/// around terms are ignored.
///
/// An expression that would produce more than 100,000 hosts, counting
/// duplicates, is refused before any host is generated.
pub fn expand(expr: &str) -> Result<Vec<HostSpec>, HostlistError> {
    let mut hosts = Collector::default();
    hosts.add_expression(expr)?;
    Ok(hosts.hosts)
}

/// Parses a hosts file's text (path is for messages): one `[user@]host[:port]`
/// or hostlist expression per line, `#` comments (whole-line and trailing),
/// blank lines skipped.
///
/// Duplicates are removed across the whole file, and the limit of 100,000
/// hosts applies to the whole file. A file that lists no host is an error,
/// because running a command on nothing is never what was meant. Errors name
/// the file and line.
pub fn parse_hosts_file(text: &str, path: &str) -> Result<Vec<HostSpec>, HostlistError> {
    let mut hosts = Collector::default();
    for (index, raw) in text.lines().enumerate() {
        // Host names cannot contain '#', so the first one always starts a comment.
        let line = raw.find('#').map_or(raw, |at| &raw[..at]).trim();
        if line.is_empty() {
            continue;
        }
        hosts
            .add_expression(line)
            .map_err(|error| HostlistError::InFile {
                path: path.to_string(),
                line: index + 1,
                error: Box::new(error),
            })?;
    }
    if hosts.hosts.is_empty() {
        return Err(HostlistError::NoHostsInFile {
            path: path.to_string(),
        });
    }
    Ok(hosts.hosts)
}

/// Removes every host matched by `exclude` (a hostlist expression; hosts
/// compare on the host name, case-insensitively, ignoring user/port, like
/// pdsh -x) from `hosts`.
///
/// Removing every host is an error rather than an empty list, so that a
/// too-broad exclusion is reported instead of silently doing nothing.
pub fn exclude(hosts: Vec<HostSpec>, exclude: &str) -> Result<Vec<HostSpec>, HostlistError> {
    let excluded: HashSet<String> = expand(exclude)?
        .into_iter()
        .map(|spec| spec.host.to_ascii_lowercase())
        .collect();
    let kept: Vec<HostSpec> = hosts
        .into_iter()
        .filter(|spec| !excluded.contains(&spec.host.to_ascii_lowercase()))
        .collect();
    if kept.is_empty() {
        return Err(HostlistError::AllExcluded {
            exclude: exclude.trim().to_string(),
        });
    }
    Ok(kept)
}

/// Compresses host names back into a short hostlist expression for display
/// (clush -b / dshbak -c): `["worker01","worker02","worker03","worker07","db1"]`
/// becomes `"db1,worker[01-03,07]"`.
///
/// Names are grouped by the text before and after their last run of digits;
/// names without digits stand alone. Groups are sorted by that text, numbers
/// within a group numerically, and duplicates are dropped. Zero padding is
/// kept: consecutive numbers join a range only when [`expand`] would
/// reproduce each of them exactly, so expanding the result gives back the
/// input names in that sorted order. Only names that [`expand`] accepts as
/// plain host names survive that round trip.
pub fn compress(hosts: &[&str]) -> String {
    let mut groups: BTreeMap<GroupKey, BTreeSet<(u64, &str)>> = BTreeMap::new();
    for &name in hosts {
        match split_last_number(name) {
            Some((prefix, value, digits, suffix)) => {
                groups
                    .entry((prefix, suffix, true))
                    .or_default()
                    .insert((value, digits));
            }
            None => {
                groups.entry((name, "", false)).or_default();
            }
        }
    }
    let mut terms = Vec::with_capacity(groups.len());
    for ((prefix, suffix, _), numbers) in groups {
        let numbers: Vec<(u64, &str)> = numbers.into_iter().collect();
        match numbers.as_slice() {
            [] => terms.push(prefix.to_string()),
            [(_, digits)] => terms.push(format!("{prefix}{digits}{suffix}")),
            _ => terms.push(format!("{prefix}[{}]{suffix}", number_ranges(&numbers))),
        }
    }
    terms.join(",")
}

/// How [`compress`] groups names: (prefix, suffix, numbered). `numbered`
/// keeps the name "db" apart from the group "db1,db2", whose prefix and
/// suffix are the same, and sorts it first.
type GroupKey<'a> = (&'a str, &'a str, bool);

/// Does the text contain hostlist syntax (an unescaped `[...]` range or a
/// comma), so that an scp operand like `worker[1-8]:/var/log/x` should be
/// expanded? IPv6 literals in brackets (`[fe80::1]`, anything containing ':'
/// inside the brackets) are NOT hostlists.
///
/// The scan stops at the first `:` or `/` outside brackets, because what
/// follows is a port or a remote path (`host:/logs/a,b` is not a hostlist),
/// and a `/` before any `:` makes an scp operand a local path. A backslash
/// escapes the next character. An unclosed `[` counts as hostlist syntax so
/// that [`expand`] can report it.
pub fn is_hostlist(host: &str) -> bool {
    // Every character that matters here is ASCII, and no byte of a multi-byte
    // UTF-8 character is ASCII, so scanning bytes is exact.
    let bytes = host.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b',' => return true,
            b':' | b'/' => return false,
            b'[' => {
                let Some(close) = host[i..].find(']') else {
                    return true;
                };
                if !host[i..i + close].contains(':') {
                    return true;
                }
                // An IPv6 literal: skip it whole so its colons do not end the scan.
                i += close;
            }
            _ => {}
        }
        i += 1;
    }
    false
}

/// Gathers hosts from one or more expressions, removing duplicates and
/// enforcing `MAX_HOSTS` across all of them.
#[derive(Default)]
struct Collector {
    hosts: Vec<HostSpec>,
    /// (user, lower-cased host, port) of every host in `hosts`.
    seen: HashSet<(Option<String>, String, Option<u16>)>,
    /// Hosts produced so far, duplicates included.
    produced: u64,
}

impl Collector {
    fn add_expression(&mut self, expr: &str) -> Result<(), HostlistError> {
        let expr = expr.trim();
        if expr.is_empty() {
            return Err(HostlistError::Empty);
        }
        for raw in split_terms(expr) {
            let term = raw.trim();
            if term.is_empty() {
                return Err(HostlistError::EmptyTerm {
                    expr: expr.to_string(),
                });
            }
            let parsed = parse_term(term)?;
            // Counting before generating keeps a typo like [1-99999999] from
            // allocating anything.
            self.produced = self.produced.saturating_add(parsed.host.count());
            if self.produced > MAX_HOSTS {
                return Err(HostlistError::TooManyHosts {
                    expr: expr.to_string(),
                });
            }
            for host in parsed.host.names() {
                let key = (parsed.user.clone(), host.to_ascii_lowercase(), parsed.port);
                if self.seen.insert(key) {
                    self.hosts.push(HostSpec {
                        user: parsed.user.clone(),
                        host,
                        port: parsed.port,
                    });
                }
            }
        }
        Ok(())
    }
}

/// One comma-separated term of an expression, parsed.
struct Term {
    user: Option<String>,
    host: HostPattern,
    port: Option<u16>,
}

/// The host part of a term.
enum HostPattern {
    /// A bracketed IPv6 address, stored without its brackets.
    Ipv6(String),
    /// Literal text and bracket groups, in the order written.
    Segments(Vec<Segment>),
}

enum Segment {
    Literal(String),
    /// The ranges of one bracket group, in the order written.
    Numbers(Vec<NumberRange>),
}

/// `low..=high`, each number printed at least `width` digits wide with
/// leading zeros. Invariant: `low <= high`.
struct NumberRange {
    low: u64,
    high: u64,
    width: usize,
}

impl HostPattern {
    /// How many names `names` will produce, saturating rather than wrapping
    /// so that absurd ranges still compare as too many.
    fn count(&self) -> u64 {
        match self {
            HostPattern::Ipv6(_) => 1,
            HostPattern::Segments(segments) => segments
                .iter()
                .filter_map(|segment| match segment {
                    Segment::Literal(_) => None,
                    Segment::Numbers(ranges) => Some(ranges.iter().fold(0u64, |sum, range| {
                        sum.saturating_add((range.high - range.low).saturating_add(1))
                    })),
                })
                .fold(1u64, u64::saturating_mul),
        }
    }

    /// Every name, the leftmost bracket group varying slowest.
    fn names(&self) -> Vec<String> {
        let segments = match self {
            HostPattern::Ipv6(address) => return vec![address.clone()],
            HostPattern::Segments(segments) => segments,
        };
        let mut names = vec![String::new()];
        for segment in segments {
            match segment {
                Segment::Literal(text) => names.iter_mut().for_each(|name| name.push_str(text)),
                Segment::Numbers(ranges) => {
                    let mut next = Vec::new();
                    for name in &names {
                        for range in ranges {
                            for value in range.low..=range.high {
                                next.push(format!("{name}{value:0width$}", width = range.width));
                            }
                        }
                    }
                    names = next;
                }
            }
        }
        names
    }
}

/// Splits an expression at the commas outside brackets.
fn split_terms(expr: &str) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut start = 0;
    for (at, _) in outside_brackets(expr).filter(|&(_, c)| c == ',') {
        terms.push(&expr[start..at]);
        start = at + 1;
    }
    terms.push(&expr[start..]);
    terms
}

/// The byte offsets and characters of `text` outside square brackets, the
/// brackets themselves excluded. A stray `]` is ignored rather than making
/// the depth negative; [`check_brackets`] reports it.
fn outside_brackets(text: &str) -> impl Iterator<Item = (usize, char)> + '_ {
    let mut depth = 0usize;
    text.char_indices().filter(move |&(_, c)| match c {
        '[' => {
            depth += 1;
            false
        }
        ']' => {
            depth = depth.saturating_sub(1);
            false
        }
        _ => depth == 0,
    })
}

/// Checks that every `[` in a term is closed by a `]` before the next `[`,
/// and that every `]` closes one.
fn check_brackets(term: &str) -> Result<(), HostlistError> {
    let mut open = false;
    for c in term.chars() {
        match (c, open) {
            ('[', true) => return Err(unbalanced_open(term)),
            (']', false) => {
                return Err(HostlistError::UnbalancedClose {
                    term: term.to_string(),
                })
            }
            ('[', false) | (']', true) => open = !open,
            _ => {}
        }
    }
    if open {
        return Err(unbalanced_open(term));
    }
    Ok(())
}

fn unbalanced_open(term: &str) -> HostlistError {
    HostlistError::UnbalancedOpen {
        term: term.to_string(),
    }
}

/// Parses one trimmed, non-empty term: `[user@]pattern[:port]` or
/// `[user@][ipv6][:port]`.
fn parse_term(term: &str) -> Result<Term, HostlistError> {
    check_brackets(term)?;
    // The user is everything before the last '@', as in OpenSSH, so user
    // names that themselves contain '@' still work.
    let (user, rest) = match outside_brackets(term).filter(|&(_, c)| c == '@').last() {
        Some((at, _)) => (Some(&term[..at]), &term[at + 1..]),
        None => (None, term),
    };
    if let Some(user) = user {
        if user.is_empty() {
            return Err(HostlistError::EmptyUser {
                term: term.to_string(),
            });
        }
        check_name(term, user, "user name")?;
    }
    let user = user.map(str::to_string);
    if let Some(address) = ipv6_literal(rest) {
        check_name(term, address, "host name")?;
        let after = &rest[address.len() + 2..];
        let port = match after.strip_prefix(':') {
            Some(port) => Some(parse_port(term, port)?),
            None if after.is_empty() => None,
            None => {
                return Err(HostlistError::TextAfterIpv6 {
                    term: term.to_string(),
                })
            }
        };
        return Ok(Term {
            user,
            host: HostPattern::Ipv6(address.to_string()),
            port,
        });
    }
    let colons: Vec<usize> = outside_brackets(rest)
        .filter(|&(_, c)| c == ':')
        .map(|(at, _)| at)
        .collect();
    let (pattern, port) = match colons.as_slice() {
        [] => (rest, None),
        [at] => (&rest[..*at], Some(parse_port(term, &rest[at + 1..])?)),
        _ => {
            return Err(HostlistError::ExtraColon {
                term: term.to_string(),
            })
        }
    };
    if pattern.is_empty() {
        return Err(HostlistError::EmptyHost {
            term: term.to_string(),
        });
    }
    Ok(Term {
        user,
        host: HostPattern::Segments(parse_pattern(term, pattern)?),
        port,
    })
}

/// The address inside `[...]` at the start of `text`, if the brackets hold a
/// ':' and so are an IPv6 literal rather than a range.
fn ipv6_literal(text: &str) -> Option<&str> {
    let inside = text.strip_prefix('[')?;
    let address = &inside[..inside.find(']')?];
    address.contains(':').then_some(address)
}

/// Parses a host pattern whose brackets [`check_brackets`] has accepted.
fn parse_pattern(term: &str, pattern: &str) -> Result<Vec<Segment>, HostlistError> {
    if pattern.starts_with('-') {
        return Err(HostlistError::LeadingDash {
            term: term.to_string(),
            what: "host name",
        });
    }
    let mut segments = Vec::new();
    let mut rest = pattern;
    while let Some(open) = rest.find('[') {
        push_literal(term, &rest[..open], &mut segments)?;
        // check_brackets guarantees the ']'; reporting it again here costs
        // nothing and avoids a panic if that ever changes.
        let Some((inside, tail)) = rest[open + 1..].split_once(']') else {
            return Err(unbalanced_open(term));
        };
        segments.push(Segment::Numbers(parse_ranges(term, inside)?));
        rest = tail;
    }
    push_literal(term, rest, &mut segments)?;
    Ok(segments)
}

fn push_literal(term: &str, text: &str, segments: &mut Vec<Segment>) -> Result<(), HostlistError> {
    if !text.is_empty() {
        check_chars(term, text, "host name")?;
        segments.push(Segment::Literal(text.to_string()));
    }
    Ok(())
}

/// Parses the inside of one bracket group: `1,3,5-7`.
fn parse_ranges(term: &str, inside: &str) -> Result<Vec<NumberRange>, HostlistError> {
    if inside.is_empty() {
        return Err(HostlistError::EmptyBrackets {
            term: term.to_string(),
        });
    }
    let mut ranges = Vec::new();
    for item in inside.split(',') {
        let (first, second) = item.split_once('-').unwrap_or((item, item));
        if first.is_empty() || second.is_empty() {
            return Err(HostlistError::MissingNumber {
                term: term.to_string(),
            });
        }
        let low = parse_bound(term, first)?;
        let high = parse_bound(term, second)?;
        if low > high {
            return Err(HostlistError::ReversedRange {
                term: term.to_string(),
                first: first.to_string(),
                second: second.to_string(),
            });
        }
        // The low bound's written width is the padding: "098" pads to three
        // digits, while "8" is at least one digit wide and so pads nothing.
        ranges.push(NumberRange {
            low,
            high,
            width: first.len(),
        });
    }
    Ok(ranges)
}

/// The most digits a range bound may have: a DNS label's length.
const MAX_BOUND_DIGITS: usize = 63;

/// A term as shown in an error: its first 80 characters, so that a huge input does not make a
/// huge line.
fn shorten(term: &str) -> String {
    match term.char_indices().nth(80) {
        Some((cut, _)) => format!("{}...", &term[..cut]),
        None => term.to_owned(),
    }
}

fn parse_bound(term: &str, text: &str) -> Result<u64, HostlistError> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(HostlistError::NonNumericBound {
            term: term.to_string(),
            bound: text.to_string(),
        });
    }
    // The written width becomes the padding of every generated name; a DNS label holds at
    // most 63 characters, and formatting cannot pad beyond 65,535.
    if text.len() > MAX_BOUND_DIGITS {
        return Err(HostlistError::BoundTooWide {
            term: shorten(term),
            digits: text.len(),
        });
    }
    // Only digits remain, so overflow is the one way parsing can fail.
    text.parse().map_err(|_| HostlistError::BoundTooLarge {
        term: term.to_string(),
        bound: text.to_string(),
    })
}

fn parse_port(term: &str, text: &str) -> Result<u16, HostlistError> {
    // `u16::from_str` accepts a leading '+', which no one means in a port.
    match text.parse::<u16>() {
        Ok(port) if port != 0 && text.bytes().all(|b| b.is_ascii_digit()) => Ok(port),
        _ => Err(HostlistError::BadPort {
            term: term.to_string(),
            port: text.to_string(),
        }),
    }
}

/// Checks a user name or IPv6 address: no leading '-' and no forbidden
/// characters.
fn check_name(term: &str, name: &str, what: &'static str) -> Result<(), HostlistError> {
    if name.starts_with('-') {
        return Err(HostlistError::LeadingDash {
            term: term.to_string(),
            what,
        });
    }
    check_chars(term, name, what)
}

fn check_chars(term: &str, text: &str, what: &'static str) -> Result<(), HostlistError> {
    match text
        .chars()
        .find(|&c| c.is_whitespace() || c.is_control() || FORBIDDEN.contains(c))
    {
        Some(ch) => Err(HostlistError::InvalidCharacter {
            term: term.to_string(),
            what,
            ch,
        }),
        None => Ok(()),
    }
}

/// Splits a name around its last run of ASCII digits into (prefix, value,
/// digits as written, suffix). Names without digits, or whose last number
/// does not fit in a u64 (and so could not be written as a range), give
/// `None`.
fn split_last_number(name: &str) -> Option<(&str, u64, &str, &str)> {
    let end = name.rfind(|c: char| c.is_ascii_digit())? + 1;
    // Walking back over ASCII digit bytes always stops on a character boundary, since no byte
    // of a multi-byte UTF-8 character is ASCII.
    let bytes = name.as_bytes();
    let mut start = end;
    while start > 0 && bytes[start - 1].is_ascii_digit() {
        start -= 1;
    }
    let digits = &name[start..end];
    let value = digits.parse().ok()?;
    Some((&name[..start], value, digits, &name[end..]))
}

/// Writes sorted, distinct numbers as bracket contents (`01-03,07`). A number
/// joins the range before it only if it is one more than the previous number
/// and reads exactly as `expand` would print it with the range's padding.
fn number_ranges(numbers: &[(u64, &str)]) -> String {
    let mut parts = Vec::new();
    let mut index = 0;
    while index < numbers.len() {
        let (_, first) = numbers[index];
        let mut last = index;
        while let Some(&(value, digits)) = numbers.get(last + 1) {
            let follows = numbers[last].0.checked_add(1) == Some(value);
            if !follows || digits != format!("{value:0width$}", width = first.len()) {
                break;
            }
            last += 1;
        }
        if last == index {
            parts.push(first.to_string());
        } else {
            parts.push(format!("{first}-{}", numbers[last].1));
        }
        index = last + 1;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Renders hosts as `user@host:port` (IPv6 hosts in brackets) so tables
    /// stay short.
    fn show(hosts: &[HostSpec]) -> Vec<String> {
        hosts
            .iter()
            .map(|spec| {
                let user = spec
                    .user
                    .as_ref()
                    .map_or(String::new(), |u| format!("{u}@"));
                let host = if spec.host.contains(':') {
                    format!("[{}]", spec.host)
                } else {
                    spec.host.clone()
                };
                let port = spec.port.map_or(String::new(), |p| format!(":{p}"));
                format!("{user}{host}{port}")
            })
            .collect()
    }

    fn term(text: &str) -> String {
        text.to_string()
    }

    #[test]
    fn expand_accepts_valid_expressions() {
        let cases: &[(&str, &[&str])] = &[
            ("worker[01-03]", &["worker01", "worker02", "worker03"]),
            ("[8-10]", &["8", "9", "10"]),
            ("n[8-10]", &["n8", "n9", "n10"]),
            ("n[098-101]", &["n098", "n099", "n100", "n101"]),
            ("n[3]", &["n3"]),
            ("n[007]", &["n007"]),
            ("n[0-2]", &["n0", "n1", "n2"]),
            ("n[1,3,5-7]", &["n1", "n3", "n5", "n6", "n7"]),
            (
                "rack[1-2]-node[01-02]",
                &[
                    "rack1-node01",
                    "rack1-node02",
                    "rack2-node01",
                    "rack2-node02",
                ],
            ),
            ("n[1-2]x[8-9]y", &["n1x8y", "n1x9y", "n2x8y", "n2x9y"]),
            (
                "10.0.1.[5-9,12],gpu[1-4]",
                &[
                    "10.0.1.5",
                    "10.0.1.6",
                    "10.0.1.7",
                    "10.0.1.8",
                    "10.0.1.9",
                    "10.0.1.12",
                    "gpu1",
                    "gpu2",
                    "gpu3",
                    "gpu4",
                ],
            ),
            (
                "ec2-user@worker[1-3]",
                &["ec2-user@worker1", "ec2-user@worker2", "ec2-user@worker3"],
            ),
            ("worker[1-2]:2222", &["worker1:2222", "worker2:2222"]),
            ("root@gpu[1-2]:22", &["root@gpu1:22", "root@gpu2:22"]),
            ("me@corp@login1", &["me@corp@login1"]),
            ("[fe80::1]", &["[fe80::1]"]),
            (
                "root@[fe80::1]:2222,[::1]",
                &["root@[fe80::1]:2222", "[::1]"],
            ),
            ("a,b,a,b", &["a", "b"]),
            ("Worker1,worker1", &["Worker1"]),
            ("worker[1-3],worker2", &["worker1", "worker2", "worker3"]),
            ("n[1-2,2-3]", &["n1", "n2", "n3"]),
            ("a,root@a,a:22,a:22", &["a", "root@a", "a:22"]),
            (" a , b ", &["a", "b"]),
        ];
        for &(expr, want) in cases {
            let got = expand(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(show(&got), want, "{expr}");
        }
    }

    #[test]
    fn expand_keeps_user_host_and_port_apart() {
        let cases = [
            (
                "[fe80::1]",
                HostSpec {
                    user: None,
                    host: term("fe80::1"),
                    port: None,
                },
            ),
            (
                "ec2-user@worker1:2222",
                HostSpec {
                    user: Some(term("ec2-user")),
                    host: term("worker1"),
                    port: Some(2222),
                },
            ),
        ];
        for (expr, want) in cases {
            assert_eq!(expand(expr), Ok(vec![want]), "{expr}");
        }
    }

    #[test]
    fn expand_large_ranges_up_to_the_limit() {
        // (expression, count, first host, last host)
        let cases = [
            ("worker[01-64]", 64, "worker01", "worker64"),
            ("n[1-100000]", 100_000, "n1", "n100000"),
            ("n[1-50000],m[1-50000]", 100_000, "n1", "m50000"),
            ("r[1-100]-n[001-1000]", 100_000, "r1-n001", "r100-n1000"),
        ];
        for (expr, count, first, last) in cases {
            let got = expand(expr).unwrap_or_else(|e| panic!("{expr}: {e}"));
            assert_eq!(got.len(), count, "{expr}");
            assert_eq!(got[0].host, first, "{expr}");
            assert_eq!(got[count - 1].host, last, "{expr}");
        }
    }

    #[test]
    fn expand_rejects_invalid_expressions() {
        use HostlistError::*;
        let too_many = |expr: &str| TooManyHosts { expr: term(expr) };
        let bad_port = |t: &str, port: &str| BadPort {
            term: term(t),
            port: term(port),
        };
        let non_numeric = |t: &str, bound: &str| NonNumericBound {
            term: term(t),
            bound: term(bound),
        };
        let bad_char = |t: &str, what, ch| InvalidCharacter {
            term: term(t),
            what,
            ch,
        };
        let cases: Vec<(&str, HostlistError)> = vec![
            ("", Empty),
            ("   ", Empty),
            ("a,,b", EmptyTerm { expr: term("a,,b") }),
            (",a", EmptyTerm { expr: term(",a") }),
            ("a,", EmptyTerm { expr: term("a,") }),
            (
                "a, ,b",
                EmptyTerm {
                    expr: term("a, ,b"),
                },
            ),
            (
                "worker[01-64",
                UnbalancedOpen {
                    term: term("worker[01-64"),
                },
            ),
            (
                "a,b[1,2",
                UnbalancedOpen {
                    term: term("b[1,2"),
                },
            ),
            (
                "a[1[2]]",
                UnbalancedOpen {
                    term: term("a[1[2]]"),
                },
            ),
            (
                "worker01-64]",
                UnbalancedClose {
                    term: term("worker01-64]"),
                },
            ),
            ("a,b]x,c", UnbalancedClose { term: term("b]x") }),
            (
                "a[1]]",
                UnbalancedClose {
                    term: term("a[1]]"),
                },
            ),
            (
                "worker[]",
                EmptyBrackets {
                    term: term("worker[]"),
                },
            ),
            (
                "n[1,,3]",
                MissingNumber {
                    term: term("n[1,,3]"),
                },
            ),
            (
                "n[1,]",
                MissingNumber {
                    term: term("n[1,]"),
                },
            ),
            (
                "n[1-]",
                MissingNumber {
                    term: term("n[1-]"),
                },
            ),
            (
                "n[-3]",
                MissingNumber {
                    term: term("n[-3]"),
                },
            ),
            ("n[a-3]", non_numeric("n[a-3]", "a")),
            ("n[x]", non_numeric("n[x]", "x")),
            ("n[1-2-3]", non_numeric("n[1-2-3]", "2-3")),
            ("n[ 1]", non_numeric("n[ 1]", " 1")),
            ("n[+1]", non_numeric("n[+1]", "+1")),
            (
                "n[99999999999999999999999]",
                BoundTooLarge {
                    term: term("n[99999999999999999999999]"),
                    bound: term("99999999999999999999999"),
                },
            ),
            (
                "n[0000000000000000000000000000000000000000000000000000000000000001-2]",
                BoundTooWide {
                    term: term(
                        "n[0000000000000000000000000000000000000000000000000000000000000001-2]",
                    ),
                    digits: 64,
                },
            ),
            (
                "n[9-1]",
                ReversedRange {
                    term: term("n[9-1]"),
                    first: term("9"),
                    second: term("1"),
                },
            ),
            (
                "n[10-09]",
                ReversedRange {
                    term: term("n[10-09]"),
                    first: term("10"),
                    second: term("09"),
                },
            ),
            ("n[1-99999999]", too_many("n[1-99999999]")),
            ("n[1-50000],m[1-50001]", too_many("n[1-50000],m[1-50001]")),
            ("n[1-1000][1-1000]", too_many("n[1-1000][1-1000]")),
            (
                "n[0-18446744073709551615]",
                too_many("n[0-18446744073709551615]"),
            ),
            ("worker1:0", bad_port("worker1:0", "0")),
            ("worker1:abc", bad_port("worker1:abc", "abc")),
            ("worker1:65536", bad_port("worker1:65536", "65536")),
            ("worker1:", bad_port("worker1:", "")),
            ("worker1:+22", bad_port("worker1:+22", "+22")),
            ("[fe80::1]:22x", bad_port("[fe80::1]:22x", "22x")),
            (
                "@worker1",
                EmptyUser {
                    term: term("@worker1"),
                },
            ),
            (
                "root@",
                EmptyHost {
                    term: term("root@"),
                },
            ),
            (":22", EmptyHost { term: term(":22") }),
            (
                "root@:22",
                EmptyHost {
                    term: term("root@:22"),
                },
            ),
            (
                "fe80::1",
                ExtraColon {
                    term: term("fe80::1"),
                },
            ),
            (
                "worker1:22:23",
                ExtraColon {
                    term: term("worker1:22:23"),
                },
            ),
            (
                "[fe80::1]x",
                TextAfterIpv6 {
                    term: term("[fe80::1]x"),
                },
            ),
            ("bad\thost", bad_char("bad\thost", "host name", '\t')),
            ("a;reboot", bad_char("a;reboot", "host name", ';')),
            ("n[1-2]$x", bad_char("n[1-2]$x", "host name", '$')),
            ("worker1/x", bad_char("worker1/x", "host name", '/')),
            ("us er@h", bad_char("us er@h", "user name", ' ')),
            (
                "-oProxyCommand=x",
                LeadingDash {
                    term: term("-oProxyCommand=x"),
                    what: "host name",
                },
            ),
            (
                "-x@h",
                LeadingDash {
                    term: term("-x@h"),
                    what: "user name",
                },
            ),
        ];
        for (expr, want) in cases {
            assert_eq!(expand(expr), Err(want), "{expr:?}");
        }
    }

    #[test]
    fn error_messages_are_one_line_and_say_how_to_fix() {
        let cases = [
            ("worker[01-64", "worker[01-64: unbalanced '[': close it with ']'"),
            ("n[9-1]", "n[9-1]: range 9-1 runs backwards: write it as 1-9"),
            ("a,,b", "a,,b: empty host name between commas: remove the extra ','"),
            ("w:99999", "w:99999: invalid port '99999': use a number from 1 to 65535"),
            (
                "n[1-99999999]",
                "n[1-99999999]: more than 100000 hosts in total: check the ranges for a typo such as [1-99999999]",
            ),
            ("a b", "a b: ' ' is not allowed in a host name: remove it"),
        ];
        for (expr, want) in cases {
            let got = expand(expr).expect_err(expr).to_string();
            assert_eq!(got, want);
            assert!(!got.contains('\n'), "{got}");
        }
        let excluded = exclude(expand("a").expect("valid"), "a").expect_err("all excluded");
        assert_eq!(
            excluded.to_string(),
            "every host was excluded by a: narrow the exclude list so at least one host remains"
        );
    }

    #[test]
    fn exclude_removes_matching_host_names() {
        // (hosts, exclusion, hosts kept or the error)
        type Case = (
            &'static str,
            &'static str,
            Result<&'static [&'static str], HostlistError>,
        );
        let cases: &[Case] = &[
            ("worker[1-4]", "worker[2-3]", Ok(&["worker1", "worker4"])),
            ("root@Worker1:22,worker2", "worker1", Ok(&["worker2"])),
            ("a,b", "root@A:2222", Ok(&["b"])),
            ("a,b", "c", Ok(&["a", "b"])),
            ("gpu[1-2],a", "gpu[1-2]", Ok(&["a"])),
            (
                "a,b",
                "A,b",
                Err(HostlistError::AllExcluded {
                    exclude: term("A,b"),
                }),
            ),
            (
                "a",
                "a[",
                Err(HostlistError::UnbalancedOpen { term: term("a[") }),
            ),
            ("a", "", Err(HostlistError::Empty)),
        ];
        for (hosts, excluded, want) in cases {
            let hosts = expand(hosts).expect("valid host list");
            let got = exclude(hosts, excluded);
            match want {
                Ok(want) => assert_eq!(show(&got.expect(excluded)), *want, "{excluded}"),
                Err(want) => assert_eq!(got.as_ref(), Err(want), "{excluded}"),
            }
        }
    }

    #[test]
    fn compress_groups_around_the_last_number() {
        let cases: &[(&[&str], &str)] = &[
            (
                &["worker01", "worker02", "worker03", "worker07", "db1"],
                "db1,worker[01-03,07]",
            ),
            (&[], ""),
            (&["a", "a"], "a"),
            (&["n8", "n9", "n10"], "n[8-10]"),
            (&["n10", "n9", "n11", "n2"], "n[2,9-11]"),
            (&["n098", "n099", "n100", "n101"], "n[098-101]"),
            (&["n09", "n10", "n100"], "n[09-10,100]"),
            (&["n1", "n01", "n2"], "n[01,1-2]"),
            (&["n01", "n2"], "n[01,2]"),
            (
                &[
                    "10.0.1.5",
                    "10.0.1.6",
                    "10.0.1.7",
                    "10.0.1.12",
                    "gpu2",
                    "gpu1",
                ],
                "10.0.1.[5-7,12],gpu[1-2]",
            ),
            (
                &["rack1-node01", "rack1-node02", "rack2-node01"],
                "rack1-node[01-02],rack2-node01",
            ),
            (&["node3-ib", "node1-ib", "node2-ib"], "node[1-3]-ib"),
            (&["login", "db", "db2", "db1"], "db,db[1-2],login"),
            (&["h99999999999999999999999"], "h99999999999999999999999"),
        ];
        for &(hosts, want) in cases {
            assert_eq!(compress(hosts), want, "{hosts:?}");
        }
    }

    #[test]
    fn compress_round_trips_through_expand() {
        // (hosts in any order, the same hosts in compress's sorted order)
        let cases: &[(&[&str], &[&str])] = &[
            (
                &["worker07", "db1", "worker02", "worker01", "worker03"],
                &["db1", "worker01", "worker02", "worker03", "worker07"],
            ),
            (
                &["n10", "n9", "n100", "n099"],
                &["n9", "n10", "n099", "n100"],
            ),
            (&["n2", "n01", "n1", "n02"], &["n01", "n1", "n02", "n2"]),
            (
                &["r2-n1", "r1-n2", "r1-n1", "login", "r10-n1"],
                &["login", "r1-n1", "r1-n2", "r10-n1", "r2-n1"],
            ),
            (
                &["10.0.0.9", "10.0.0.10", "10.0.1.1"],
                &["10.0.0.9", "10.0.0.10", "10.0.1.1"],
            ),
        ];
        for &(hosts, sorted) in cases {
            let compressed = compress(hosts);
            let expanded = expand(&compressed).unwrap_or_else(|e| panic!("{compressed}: {e}"));
            let names: Vec<&str> = expanded.iter().map(|spec| spec.host.as_str()).collect();
            assert_eq!(names, sorted, "{compressed}");
        }
    }

    #[test]
    fn is_hostlist_finds_ranges_and_commas_but_not_ipv6() {
        let cases = [
            ("worker[1-8]:/var/log/x", true),
            ("worker[1-8]", true),
            ("user@worker[01-64]", true),
            ("a,b", true),
            ("a,b:/tmp", true),
            ("[fe80::1],[fe80::2]", true),
            ("worker[1-8", true),
            ("worker1", false),
            ("", false),
            ("worker1:/var/log/a,b", false),
            ("worker1:/var/log/[ab]*", false),
            ("[fe80::1]", false),
            ("[fe80::1]:/x", false),
            ("user@[fe80::1]:/x,y", false),
            ("worker\\[1\\]", false),
            ("worker\\,1", false),
            ("dir/file[1],x", false),
        ];
        for (text, want) in cases {
            assert_eq!(is_hostlist(text), want, "{text:?}");
        }
    }

    #[test]
    fn parse_hosts_file_reads_lines_and_comments() {
        let cases: &[(&str, &[&str])] = &[
            (
                "# cluster\nworker[1-2]\n\n  db1   # primary\nroot@gpu1:2222\nworker1\n",
                &["worker1", "worker2", "db1", "root@gpu1:2222"],
            ),
            ("a\r\nb\r\n", &["a", "b"]),
            ("a,b # two on one line\n", &["a", "b"]),
            ("\t[fe80::1]:22\n", &["[fe80::1]:22"]),
        ];
        for &(text, want) in cases {
            let got =
                parse_hosts_file(text, "hosts.txt").unwrap_or_else(|e| panic!("{text:?}: {e}"));
            assert_eq!(show(&got), want, "{text:?}");
        }
    }

    #[test]
    fn parse_hosts_file_names_the_bad_line() {
        let in_file = |line, error| HostlistError::InFile {
            path: term("hosts.txt"),
            line,
            error: Box::new(error),
        };
        let cases = [
            (
                "a\nb[\n",
                in_file(2, HostlistError::UnbalancedOpen { term: term("b[") }),
            ),
            (
                "a\n\n# x\nb c\n",
                in_file(
                    4,
                    HostlistError::InvalidCharacter {
                        term: term("b c"),
                        what: "host name",
                        ch: ' ',
                    },
                ),
            ),
            (
                "n[1-60000]\nm[1-60000]\n",
                in_file(
                    2,
                    HostlistError::TooManyHosts {
                        expr: term("m[1-60000]"),
                    },
                ),
            ),
            (
                "# only comments\n\n   \n",
                HostlistError::NoHostsInFile {
                    path: term("hosts.txt"),
                },
            ),
            (
                "",
                HostlistError::NoHostsInFile {
                    path: term("hosts.txt"),
                },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_hosts_file(text, "hosts.txt"), Err(want), "{text:?}");
        }
        assert_eq!(
            parse_hosts_file("a\nb[\n", "hosts.txt")
                .expect_err("unbalanced")
                .to_string(),
            "hosts.txt:2: b[: unbalanced '[': close it with ']'"
        );
    }

    /// Regression (issue 9, item 9): a zero-padded bound of 65,536 digits made formatting
    /// panic ("Formatting argument out of range"), from `-w` and from the Lambda's
    /// SMSSH_TARGETS alike.
    #[test]
    fn a_zero_padded_bound_of_65536_digits_panics() {
        let expr = format!("n[{}1-2]", "0".repeat(65_535));
        let err = expand(&expr).expect_err("refused");
        assert!(matches!(
            err,
            HostlistError::BoundTooWide { digits: 65_536, .. }
        ));
        assert!(err.to_string().len() < 200, "the line stays short: {err}");
    }

    /// Found by the `hostlist` fuzz target: a name whose last number follows a multi-byte
    /// character made `compress` (used by `-b` to name each group's hosts) slice inside it.
    #[test]
    fn compress_panics_on_a_number_after_a_multibyte_character() {
        assert_eq!(compress(&["aZ\u{5f0}0-"]), "aZ\u{5f0}0-");
        assert_eq!(compress(&["n\u{e9}1", "n\u{e9}2"]), "n\u{e9}[1-2]");
    }
}
