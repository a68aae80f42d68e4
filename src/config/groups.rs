//! Named host groups: smssh's `[groups]` tables (the administrator's and the user's) and
//! ClusterShell's group files, and the expansion of `@group` terms in hostlist expressions.
//!
//! Owns: the two group file formats ClusterShell reads without running anything (the default
//! `local` source's `name: nodeset` file and the `groups.d/*.yaml` sources), which group a
//! name means (smssh's own groups first, then ClusterShell's default source; `@source:name`
//! for another ClusterShell source), and the expansion itself. Invariants: nothing here runs a
//! command (a ClusterShell source whose groups come from other upcalls is skipped and named in
//! [`Groups::notes`]); an expansion is finite (a cycle is refused in one line naming it, and
//! the expanded text is bounded); a user cannot redefine a name the administrator defined.
//! Must not know: where the files live (the caller passes their paths), AWS or SSH; an EC2
//! group's filter is handed back as text for the caller's discovery.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The most bytes read from one group file: more is refused, not truncated.
const MAX_FILE: u64 = 16 * 1024 * 1024;

/// The most bytes of hostlist text one expansion may produce: references that multiply (each
/// group naming the next one twice) would otherwise grow exponentially.
const MAX_EXPANSION: usize = 4 * 1024 * 1024;

/// How an EC2 group's value starts: the rest is one filter, as `--ec2-filter` takes it.
const EC2_PREFIX: &str = "ec2:";

/// The `map` upcall of ClusterShell's shipped `local` source. smssh reads the files it names
/// itself instead of running it; a source with any other command is skipped.
const LOCAL_MAP: &str = "[ -f $CFGDIR/groups ] && f=$CFGDIR/groups || f=$CFGDIR/groups.d/local.cfg; sed -n 's/^$GROUP:\\(.*\\)/\\1/p' $f";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupError {
    #[error("{path}: {reason}: fix the file or remove it")]
    Read { path: String, reason: String },
    #[error("{path}: larger than {} MiB: a group file is a short list; check the path", MAX_FILE / (1024 * 1024))]
    TooBig { path: String },
    #[error("{path}: {reason}: fix the file")]
    Parse { path: String, reason: String },
    #[error(
        "{path}: group name {name:?}: a group name is letters, digits, '_', '-' and '.': rename it"
    )]
    BadName { path: String, name: String },
    #[error(
        "{term}: no such group: define it under [groups] in {config}, or see smssh --list-groups"
    )]
    Unknown { term: String, config: String },
    #[error("{term}: no ClusterShell group source named {source_name:?}: see smssh --list-groups")]
    UnknownSource { term: String, source_name: String },
    #[error("{chain}: these groups refer to each other in a cycle: remove one of the references")]
    Cycle { chain: String },
    #[error("{group} ({path}): {operator:?} is a ClusterShell set operator, which smssh does not evaluate: write the group as a list of hosts and groups")]
    Operator {
        group: String,
        path: String,
        operator: char,
    },
    #[error("{group}: expands to more than {} MiB of host names: check the groups for references that repeat", MAX_EXPANSION / (1024 * 1024))]
    TooLarge { group: String },
    #[error("{group} ({path}): {value:?} is not an EC2 filter: write ec2:NAME=VALUE[,VALUE...], as --ec2-filter takes")]
    BadEc2 {
        group: String,
        path: String,
        value: String,
    },
    #[error("{group} is an EC2 group, and {place} takes host names only: name the hosts, or use the group with -w")]
    Ec2NotHere { group: String, place: &'static str },
}

/// What a group stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupValue {
    /// A hostlist that may name other groups.
    Hosts(String),
    /// The running EC2 instances matching one filter (`ec2:tag:Role=gpu`).
    Ec2(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Definition {
    value: GroupValue,
    /// The file that defined it, for messages and `--list-groups`.
    origin: PathBuf,
}

/// Which namespace an unqualified `@name` is looked up in.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Scope {
    /// smssh's own groups, then ClusterShell's default source.
    Own,
    /// One ClusterShell source: as in ClusterShell, a group refers to the groups of its own
    /// source without the `source:` prefix.
    Source(String),
}

/// What an expression stands for once every `@group` is replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    /// The hostlist terms, joined by commas; `None` when only EC2 groups were named.
    pub hostlist: Option<String>,
    /// One EC2 filter per EC2 group named, each its own discovery.
    pub ec2_filters: Vec<String>,
}

/// Every group smssh knows, from every file it read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Groups {
    own: BTreeMap<String, Definition>,
    /// Which of `own` the administrator defined (a user cannot redefine those).
    admin_names: BTreeMap<String, PathBuf>,
    sources: BTreeMap<String, BTreeMap<String, Definition>>,
    default_source: Option<String>,
    /// Where a user defines groups, named when a group is unknown.
    user_config: PathBuf,
    /// What was read differently from ClusterShell or left out, for `-v`.
    pub notes: Vec<String>,
}

/// Group names with their values, in file order.
type NamedValues = Vec<(String, String)>;

/// A `[groups]` table in a TOML file whose other keys belong to other readers.
#[derive(Deserialize)]
struct GroupsTable {
    #[serde(default)]
    groups: BTreeMap<String, String>,
}

/// True when the expression names a group (a term that starts with `@`), so that the files
/// need to be read at all.
pub fn mentions_group(expr: &str) -> bool {
    split_terms(expr, false)
        .iter()
        .any(|term| term.starts_with('@'))
}

impl Groups {
    /// No groups yet; `user_config` is the file named when a group is unknown.
    pub fn new(user_config: &Path) -> Groups {
        Groups {
            user_config: user_config.to_path_buf(),
            ..Groups::default()
        }
    }

    /// Adds the `[groups]` table of a TOML file (a missing file adds nothing). The
    /// administrator's file is read first: its names are fixed, and a user's definition of one
    /// of them is left out (with a note), so that `@workers` means the same hosts in every
    /// account's scripts and audit records; users add names of their own.
    pub fn add_toml_file(&mut self, path: &Path, administrator: bool) -> Result<(), GroupError> {
        let Some(text) = read_bounded(path)? else {
            return Ok(());
        };
        let table: GroupsTable = toml::from_str(&text).map_err(|err| GroupError::Parse {
            path: path.display().to_string(),
            reason: err.message().to_owned(),
        })?;
        for (name, value) in table.groups {
            check_name(path, &name)?;
            let value = match value.strip_prefix(EC2_PREFIX) {
                Some(filter) => {
                    if !filter.contains('=') || filter.starts_with('=') {
                        return Err(GroupError::BadEc2 {
                            group: format!("@{name}"),
                            path: path.display().to_string(),
                            value,
                        });
                    }
                    GroupValue::Ec2(filter.to_owned())
                }
                None => GroupValue::Hosts(value),
            };
            if let Some(admin) = self.admin_names.get(&name) {
                self.notes.push(format!(
                    "{}: group @{name} is the administrator's ({}); this definition is not used",
                    path.display(),
                    admin.display()
                ));
                continue;
            }
            if administrator {
                self.admin_names.insert(name.clone(), path.to_path_buf());
            }
            self.own.insert(
                name,
                Definition {
                    value,
                    origin: path.to_path_buf(),
                },
            );
        }
        Ok(())
    }

    /// Reads ClusterShell's group configuration as ClusterShell 1.9 finds it: every
    /// `groups.conf` of `confs` that exists (later files override earlier keys), `$CFGDIR`
    /// being the directory of the last one; the YAML sources of `[Main] autodir`; the `local`
    /// source's file (`$CFGDIR/groups`, else `$CFGDIR/groups.d/local.cfg`) when its `map` is
    /// the shipped one. Sources defined by other commands are skipped with a note.
    pub fn add_clustershell(&mut self, confs: &[PathBuf]) -> Result<(), GroupError> {
        let mut ini = Ini::default();
        let mut cfgdir = None;
        for conf in confs {
            if let Some(text) = read_bounded(conf)? {
                ini.merge(&text);
                cfgdir = conf.parent().map(Path::to_path_buf);
            }
        }
        let Some(cfgdir) = cfgdir else {
            return Ok(());
        };
        let substitute = |dir: &str| {
            let cfg = cfgdir.display().to_string();
            PathBuf::from(dir.replace("${CFGDIR}", &cfg).replace("$CFGDIR", &cfg))
        };
        let main = ini.sections.get("Main").cloned().unwrap_or_default();
        let confdir = main.get("groupsdir").or_else(|| main.get("confdir"));
        for dir in confdir.map(|d| d.split_whitespace()).into_iter().flatten() {
            for file in files_with_extension(&substitute(dir), "conf")? {
                self.notes.push(format!(
                    "{}: ClusterShell group sources defined by commands (upcalls) are not read: smssh runs no command from group files",
                    file.display()
                ));
            }
        }
        let mut order = Vec::new();
        let mut seen_dirs = Vec::new();
        for dir in main
            .get("autodir")
            .map(|d| d.split_whitespace())
            .into_iter()
            .flatten()
        {
            let dir = substitute(dir);
            if seen_dirs.contains(&dir) {
                continue;
            }
            for file in files_with_extension(&dir, "yaml")? {
                let Some(text) = read_bounded(&file)? else {
                    continue;
                };
                for (source, groups) in parse_yaml_sources(&text, &file)? {
                    self.add_source(&source, groups, &file, &mut order);
                }
            }
            seen_dirs.push(dir);
        }
        for (section, keys) in &ini.sections {
            for source in section.split(',').map(str::trim) {
                if source == "Main" || source.is_empty() {
                    continue;
                }
                let emulated = source == "local"
                    && keys
                        .get("map")
                        .is_some_and(|map| same_words(map, LOCAL_MAP));
                if !emulated {
                    self.notes.push(format!(
                        "ClusterShell group source {source:?}: its groups come from commands (upcalls), which smssh never runs; it is skipped"
                    ));
                    continue;
                }
                let flat = cfgdir.join("groups");
                let file = if flat.exists() {
                    flat
                } else {
                    cfgdir.join("groups.d/local.cfg")
                };
                let Some(text) = read_bounded(&file)? else {
                    continue;
                };
                let groups = parse_local_file(&text);
                self.add_source(source, groups, &file, &mut order);
            }
        }
        self.default_source = match main.get("default").map(|d| d.trim()) {
            Some(name) if !name.is_empty() => Some(name.to_owned()),
            // As ClusterShell: without a default, the first source found is the default.
            _ => order.first().cloned(),
        };
        Ok(())
    }

    fn add_source(
        &mut self,
        source: &str,
        groups: Vec<(String, String)>,
        file: &Path,
        order: &mut Vec<String>,
    ) {
        if order.iter().any(|s| s == source) {
            self.notes.push(format!(
                "{}: ClusterShell group source {source:?} is defined earlier; this one is not used",
                file.display()
            ));
            return;
        }
        order.push(source.to_owned());
        let entries = self.sources.entry(source.to_owned()).or_default();
        for (name, value) in groups {
            entries
                .entry(name)
                .and_modify(|d| {
                    // A name on several lines of the local file is their union, as sed prints
                    // every matching line.
                    if let GroupValue::Hosts(text) = &mut d.value {
                        text.push(' ');
                        text.push_str(&value);
                    }
                })
                .or_insert_with(|| Definition {
                    value: GroupValue::Hosts(value.clone()),
                    origin: file.to_path_buf(),
                });
        }
    }

    /// Replaces every `@group` term of `expr` with what the group stands for, in place, so
    /// the hosts keep the order they were written in.
    pub fn expand(&self, expr: &str) -> Result<Expansion, GroupError> {
        let mut out = Expander::default();
        self.expand_into(&Scope::Own, expr, &mut Vec::new(), &mut out)?;
        Ok(out.finish())
    }

    /// Like [`Groups::expand`], for a place that takes host names only (`--exclude`, scp
    /// gather operands): an EC2 group there is refused.
    pub fn expand_hosts(&self, expr: &str, place: &'static str) -> Result<String, GroupError> {
        let expansion = self.expand(expr)?;
        if !expansion.ec2_filters.is_empty() {
            // Named by the term that brought the EC2 group in, perhaps through others.
            let group = split_terms(expr, false)
                .into_iter()
                .find(|term| {
                    term.starts_with('@')
                        && self.expand(term).is_ok_and(|e| !e.ec2_filters.is_empty())
                })
                .unwrap_or(expr)
                .to_owned();
            return Err(GroupError::Ec2NotHere { group, place });
        }
        Ok(expansion.hostlist.unwrap_or_default())
    }

    /// Every group, as `@name` (`@source:name` outside ClusterShell's default source) with its
    /// expansion, smssh's own first, each list sorted by name.
    pub fn list(&self) -> Vec<(String, Result<Expansion, GroupError>)> {
        let mut listed = Vec::new();
        for name in self.own.keys() {
            let term = format!("@{name}");
            let expansion = self.expand(&term);
            listed.push((term, expansion));
        }
        for (source, groups) in &self.sources {
            for name in groups.keys() {
                // A default-source group that one of smssh's own shadows is reachable as
                // `@source:name` only.
                let default = self.default_source.as_deref() == Some(source.as_str())
                    && !self.own.contains_key(name);
                let term = if default {
                    format!("@{name}")
                } else {
                    format!("@{source}:{name}")
                };
                listed.push((term.clone(), self.expand(&term)));
            }
        }
        listed
    }

    fn expand_into(
        &self,
        scope: &Scope,
        text: &str,
        stack: &mut Vec<(Scope, String, String)>,
        out: &mut Expander,
    ) -> Result<(), GroupError> {
        // ClusterShell separates nodesets by whitespace as well as commas; a space inside a
        // host name is refused by the hostlist parser either way.
        for term in split_terms(text, true) {
            let Some(reference) = term.strip_prefix('@') else {
                out.push_term(term, stack)?;
                continue;
            };
            let (scope, name, definition) = self.lookup(scope, reference, term)?;
            if let Some(at) = stack.iter().position(|(s, n, _)| *s == scope && *n == name) {
                let mut chain: Vec<&str> = stack[at..].iter().map(|(_, _, t)| t.as_str()).collect();
                chain.push(term);
                return Err(GroupError::Cycle {
                    chain: chain.join(" -> "),
                });
            }
            match &definition.value {
                GroupValue::Ec2(filter) => {
                    if !out.ec2_filters.contains(filter) {
                        out.ec2_filters.push(filter.clone());
                    }
                }
                GroupValue::Hosts(value) => {
                    if let Some(operator) = operator_in(value) {
                        return Err(GroupError::Operator {
                            group: term.to_owned(),
                            path: definition.origin.display().to_string(),
                            operator,
                        });
                    }
                    stack.push((scope.clone(), name, term.to_owned()));
                    self.expand_into(&scope, value, stack, out)?;
                    stack.pop();
                }
            }
        }
        Ok(())
    }

    /// The definition a reference (`name` or `source:name`, without its `@`) means in `scope`.
    fn lookup(
        &self,
        scope: &Scope,
        reference: &str,
        term: &str,
    ) -> Result<(Scope, String, &Definition), GroupError> {
        let unknown = || GroupError::Unknown {
            term: term.to_owned(),
            config: self.user_config.display().to_string(),
        };
        if let Some((source, name)) = reference.split_once(':') {
            let groups = self
                .sources
                .get(source)
                .ok_or_else(|| GroupError::UnknownSource {
                    term: term.to_owned(),
                    source_name: source.to_owned(),
                })?;
            let definition = groups.get(name).ok_or_else(unknown)?;
            return Ok((
                Scope::Source(source.to_owned()),
                name.to_owned(),
                definition,
            ));
        }
        let found = match scope {
            Scope::Own => self
                .own
                .get(reference)
                .map(|d| (Scope::Own, d))
                .or_else(|| {
                    let source = self.default_source.as_ref()?;
                    let definition = self.sources.get(source)?.get(reference)?;
                    Some((Scope::Source(source.clone()), definition))
                }),
            Scope::Source(source) => self
                .sources
                .get(source)
                .and_then(|groups| groups.get(reference))
                .map(|d| (scope.clone(), d)),
        };
        let (scope, definition) = found.ok_or_else(unknown)?;
        Ok((scope, reference.to_owned(), definition))
    }
}

/// Collects an expansion's terms within [`MAX_EXPANSION`].
#[derive(Default)]
struct Expander {
    hostlist: String,
    ec2_filters: Vec<String>,
}

impl Expander {
    fn push_term(
        &mut self,
        term: &str,
        stack: &[(Scope, String, String)],
    ) -> Result<(), GroupError> {
        if self.hostlist.len() + term.len() + 1 > MAX_EXPANSION {
            let group = stack
                .first()
                .map_or_else(|| term.to_owned(), |(_, _, t)| t.clone());
            return Err(GroupError::TooLarge { group });
        }
        if !self.hostlist.is_empty() {
            self.hostlist.push(',');
        }
        self.hostlist.push_str(term);
        Ok(())
    }

    fn finish(self) -> Expansion {
        Expansion {
            hostlist: (!self.hostlist.is_empty()).then_some(self.hostlist),
            ec2_filters: self.ec2_filters,
        }
    }
}

/// The terms of an expression: split at commas (and, with `whitespace`, at spaces) outside
/// brackets, trimmed, empty ones dropped (the hostlist parser reports an empty term of a
/// plain expression itself).
fn split_terms(text: &str, whitespace: bool) -> Vec<&str> {
    let mut terms = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (at, c) in text.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                terms.push(&text[start..at]);
                start = at + 1;
            }
            c if whitespace && depth == 0 && c.is_whitespace() => {
                terms.push(&text[start..at]);
                start = at + c.len_utf8();
            }
            _ => {}
        }
    }
    terms.push(&text[start..]);
    terms
        .into_iter()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect()
}

/// ClusterShell's set operators (`!` difference, `&` intersection, `^` symmetric
/// difference) outside brackets, which smssh refuses rather than misreads as host names.
fn operator_in(value: &str) -> Option<char> {
    let mut depth = 0usize;
    for c in value.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.saturating_sub(1),
            '!' | '&' | '^' if depth == 0 => return Some(c),
            _ => {}
        }
    }
    None
}

fn check_name(path: &Path, name: &str) -> Result<(), GroupError> {
    let valid = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(GroupError::BadName {
            path: path.display().to_string(),
            name: name.to_owned(),
        })
    }
}

/// A file's text, `None` when it does not exist; at most [`MAX_FILE`] bytes.
fn read_bounded(path: &Path) -> Result<Option<String>, GroupError> {
    let read_error = |err: std::io::Error| GroupError::Read {
        path: path.display().to_string(),
        reason: err.to_string(),
    };
    let file = match std::fs::File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(read_error(err)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE {
        return Err(GroupError::TooBig {
            path: path.display().to_string(),
        });
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| GroupError::Parse {
            path: path.display().to_string(),
            reason: "not UTF-8 text".to_owned(),
        })
}

/// The files of `dir` whose names end in `.EXT`, sorted as ClusterShell's glob is; a missing
/// directory has none.
fn files_with_extension(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, GroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => {
            return Err(GroupError::Read {
                path: dir.display().to_string(),
                reason: err.to_string(),
            })
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == ext))
        .collect();
    files.sort();
    Ok(files)
}

fn same_words(a: &str, b: &str) -> bool {
    a.split_whitespace().eq(b.split_whitespace())
}

/// The INI files ClusterShell reads with Python's ConfigParser: `[section]`, `key: value` or
/// `key = value`, `#`/`;` comment lines, indented continuation lines; a later file's key
/// replaces an earlier one's. Keys are lower-cased as ConfigParser does; section names are
/// kept.
#[derive(Debug, Default)]
struct Ini {
    sections: BTreeMap<String, BTreeMap<String, String>>,
}

impl Ini {
    fn merge(&mut self, text: &str) {
        let mut section: Option<String> = None;
        let mut last_key: Option<String> = None;
        for line in text.lines() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                continue;
            }
            if line.starts_with(char::is_whitespace) {
                if let (Some(section), Some(key)) = (&section, &last_key) {
                    if let Some(value) = self
                        .sections
                        .get_mut(section)
                        .and_then(|keys| keys.get_mut(key))
                    {
                        value.push('\n');
                        value.push_str(trimmed);
                    }
                }
                continue;
            }
            if let Some(name) = trimmed.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
                section = Some(name.trim().to_owned());
                self.sections.entry(name.trim().to_owned()).or_default();
                last_key = None;
                continue;
            }
            let Some(section) = &section else { continue };
            let split = trimmed.find([':', '=']).map(|at| trimmed.split_at(at));
            if let Some((key, value)) = split {
                let key = key.trim().to_ascii_lowercase();
                let value = value[1..].trim().to_owned();
                self.sections
                    .entry(section.clone())
                    .or_default()
                    .insert(key.clone(), value);
                last_key = Some(key);
            }
        }
    }
}

/// ClusterShell's local group file: `name: nodeset` per line, as its `map` command's sed
/// reads it (a name is letters, digits, `_` and `-` at the start of the line). Other lines,
/// comments included, are no group, as for that sed.
fn parse_local_file(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(':')?;
            let plain = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'));
            plain.then(|| (name.to_owned(), value.trim().to_owned()))
        })
        .collect()
}

/// The YAML form of ClusterShell's group sources: top-level `source:` keys, each followed by
/// indented `group: nodeset` lines (a nodeset plain or quoted, or a block list of nodesets,
/// which ClusterShell joins). Anything else is refused with its line: smssh reads this
/// form only, rather than a general YAML document.
fn parse_yaml_sources(text: &str, path: &Path) -> Result<Vec<(String, NamedValues)>, GroupError> {
    let refuse = |number: usize, why: &str| GroupError::Parse {
        path: format!("{}:{number}", path.display()),
        reason: format!(
            "{why} (smssh reads ClusterShell's form: source:, then indented group: nodeset lines)"
        ),
    };
    let mut sources: Vec<(String, NamedValues)> = Vec::new();
    let mut group_indent: Option<usize> = None;
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let line = strip_yaml_comment(raw);
        let content = line.trim_end();
        if content.trim().is_empty() || content == "---" || content == "..." {
            continue;
        }
        let indent = content.len() - content.trim_start().len();
        let content = content.trim_start();
        if indent == 0 {
            let Some(source) = content.strip_suffix(':') else {
                return Err(refuse(number, "expected a source name followed by ':'"));
            };
            sources.push((yaml_key(source, number, &refuse)?, Vec::new()));
            group_indent = None;
            continue;
        }
        let Some((_, groups)) = sources.last_mut() else {
            return Err(refuse(number, "indented text before any source name"));
        };
        if let Some(item) = content
            .strip_prefix("- ")
            .or((content == "-").then_some(""))
        {
            let deeper = group_indent.is_some_and(|g| indent > g);
            let Some((_, value)) = groups.last_mut().filter(|_| deeper) else {
                return Err(refuse(number, "a list item outside a group"));
            };
            let item = yaml_scalar(item.trim(), number, &refuse)?;
            if !value.is_empty() {
                value.push(',');
            }
            value.push_str(&item);
            continue;
        }
        match group_indent {
            Some(g) if g != indent => {
                return Err(refuse(number, "indentation differs from the group above"))
            }
            _ => group_indent = Some(indent),
        }
        let Some((key, value)) = content.split_once(':') else {
            return Err(refuse(number, "expected group: nodeset"));
        };
        let value = yaml_scalar(value.trim(), number, &refuse)?;
        groups.push((yaml_key(key, number, &refuse)?, value));
    }
    Ok(sources)
}

/// The part of a YAML line before a comment: `#` at the start or after whitespace, outside
/// quotes.
fn strip_yaml_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut previous = ' ';
    for (at, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && previous.is_whitespace() => return &line[..at],
            None => {}
        }
        previous = c;
    }
    line
}

fn yaml_key(
    key: &str,
    number: usize,
    refuse: &dyn Fn(usize, &str) -> GroupError,
) -> Result<String, GroupError> {
    let key = yaml_scalar(key.trim(), number, refuse)?;
    if key.is_empty() {
        return Err(refuse(number, "an empty name"));
    }
    Ok(key)
}

/// A plain, single-quoted or double-quoted scalar. Plain text that YAML would read as
/// something else (a flow list, an alias, a tag, a block scalar) is refused: ClusterShell
/// would not read it as a nodeset either.
fn yaml_scalar(
    text: &str,
    number: usize,
    refuse: &dyn Fn(usize, &str) -> GroupError,
) -> Result<String, GroupError> {
    if let Some(inner) = text.strip_prefix('\'') {
        let inner = inner
            .strip_suffix('\'')
            .ok_or_else(|| refuse(number, "an unclosed single quote"))?;
        return Ok(inner.replace("''", "'"));
    }
    if let Some(inner) = text.strip_prefix('"') {
        let inner = inner
            .strip_suffix('"')
            .ok_or_else(|| refuse(number, "an unclosed double quote"))?;
        if inner.contains('\\') {
            return Err(refuse(
                number,
                "escapes in double quotes: use single quotes",
            ));
        }
        return Ok(inner.to_owned());
    }
    if text.starts_with(['[', '{', '@', '`', '&', '*', '!', '|', '>', '%']) {
        return Err(refuse(
            number,
            "a plain value that YAML reads as something else: quote it, as in 'node[1-8]'",
        ));
    }
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups_from(toml_text: &str) -> (tempfile::TempDir, Groups) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, toml_text).unwrap();
        let mut groups = Groups::new(&path);
        groups.add_toml_file(&path, false).unwrap();
        (dir, groups)
    }

    #[test]
    fn groups_expand_in_place_through_other_groups() {
        let (_dir, groups) = groups_from(
            "secret_id = \"x\"\n[groups]\nworkers = \"w[01-02]\"\ngpu = \"ec2:tag:Role=gpu\"\nall = \"@workers, db1 @gpu\"\n",
        );
        let expansion = groups.expand("login1,@all,w9").unwrap();
        assert_eq!(
            expansion.hostlist.as_deref(),
            Some("login1,w[01-02],db1,w9")
        );
        assert_eq!(expansion.ec2_filters, vec!["tag:Role=gpu".to_owned()]);
        let err = groups
            .expand_hosts("@workers,@all", "--exclude")
            .unwrap_err();
        assert!(err.to_string().starts_with("@all is an EC2 group"), "{err}");
        assert!(mentions_group("a, @b") && !mentions_group("user@host,b[1-2]"));
    }

    #[test]
    fn cycles_unknown_names_and_operators_are_refused_in_one_line() {
        let (_dir, groups) =
            groups_from("[groups]\na = \"@b\"\nb = \"x1,@c\"\nc = \"@a\"\nd = \"n[1-4]!n2\"\n");
        let cases = [
            (
                "@a",
                "@a -> @b -> @c -> @a: these groups refer to each other in a cycle",
            ),
            ("@nope", "@nope: no such group"),
            ("@d", "'!' is a ClusterShell set operator"),
            ("@x:y", "no ClusterShell group source named \"x\""),
        ];
        for (expr, needle) in cases {
            let err = groups.expand(expr).unwrap_err().to_string();
            assert!(err.contains(needle), "{expr}: {err}");
            assert!(!err.contains('\n'));
        }
    }

    #[test]
    fn references_that_multiply_are_bounded() {
        let mut text = String::from("[groups]\ng0 = \"host-with-a-long-name[0001-9999]\"\n");
        for level in 1..40 {
            text.push_str(&format!("g{level} = \"@g{p},@g{p}\"\n", p = level - 1));
        }
        let (_dir, groups) = groups_from(&text);
        let err = groups.expand("@g39").unwrap_err();
        assert!(matches!(err, GroupError::TooLarge { .. }), "{err}");
    }

    #[test]
    fn the_administrators_names_stay_theirs() {
        let dir = tempfile::tempdir().unwrap();
        let system = dir.path().join("system.toml");
        let user = dir.path().join("user.toml");
        std::fs::write(
            &system,
            "[audit]\nsyslog = false\n[groups]\nworkers = \"w[1-2]\"\n",
        )
        .unwrap();
        std::fs::write(&user, "[groups]\nworkers = \"evil1\"\nmine = \"m1\"\n").unwrap();
        let mut groups = Groups::new(&user);
        groups.add_toml_file(&system, true).unwrap();
        groups.add_toml_file(&user, false).unwrap();
        assert_eq!(
            groups.expand("@workers,@mine").unwrap().hostlist.as_deref(),
            Some("w[1-2],m1")
        );
        assert!(
            groups.notes[0].contains("is the administrator's"),
            "{:?}",
            groups.notes
        );
    }

    #[test]
    fn bad_names_and_ec2_values_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        for (text, needle) in [
            ("[groups]\n\"a b\" = \"x\"\n", "group name \"a b\""),
            ("[groups]\ng = \"ec2:tag\"\n", "is not an EC2 filter"),
            ("[groups]\ng = 3\n", "fix the file"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Groups::new(&path).add_toml_file(&path, false).unwrap_err();
            assert!(err.to_string().contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn yaml_sources_and_the_local_file_are_read_without_running_anything() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path();
        std::fs::create_dir_all(cfg.join("groups.d")).unwrap();
        std::fs::write(
            cfg.join("groups.conf"),
            format!("[Main]\ndefault: local\nautodir: $CFGDIR/groups.d\n\n[local]\nmap: {LOCAL_MAP}\n\n[slurm]\nmap: sinfo -h -o %N -p $GROUP\n"),
        )
        .unwrap();
        std::fs::write(
            cfg.join("groups.d/local.cfg"),
            "# comment\nadm: a1\ncompute: c[1-3] @adm\n",
        )
        .unwrap();
        std::fs::write(
            cfg.join("groups.d/site.yaml"),
            "racks:\n    r1: 'n[1-2]'  # first rack\n    r2: \"n3\"\n    both: '@r1,@r2'\n    listed:\n        - 'm1'\n        - m2\n",
        )
        .unwrap();
        let mut groups = Groups::new(Path::new("/nonexistent"));
        groups.add_clustershell(&[cfg.join("groups.conf")]).unwrap();
        let expand = |e: &str| groups.expand(e).unwrap().hostlist.unwrap();
        assert_eq!(expand("@compute"), "c[1-3],a1");
        assert_eq!(expand("@racks:both"), "n[1-2],n3");
        assert_eq!(expand("@racks:listed"), "m1,m2");
        assert!(
            groups.notes.iter().any(|n| n.contains("\"slurm\"")),
            "{:?}",
            groups.notes
        );
        let listed: Vec<String> = groups.list().into_iter().map(|(t, _)| t).collect();
        assert!(listed.contains(&"@adm".to_owned()) && listed.contains(&"@racks:r1".to_owned()));
    }

    #[test]
    fn yaml_outside_clustershells_form_is_refused_with_its_line() {
        for text in [
            "racks: {a: b}\n",
            "  a: b\n",
            "racks:\n  a: [1, 2]\n",
            "racks:\n  a: 'x\n",
        ] {
            let err = parse_yaml_sources(text, Path::new("g.yaml")).unwrap_err();
            assert!(err.to_string().starts_with("g.yaml:"), "{text:?}: {err}");
        }
    }
}
