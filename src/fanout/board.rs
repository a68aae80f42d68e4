//! The fan-out's state board: where every host of a command fan-out stands while it runs
//! (queued, connecting, running, exited with a status, failed with a reason), since when,
//! and the newest part of what it printed.
//!
//! Owns: the per-host states and their transitions, each host's bounded output tail
//! ([`OUTPUT_CAP`] bytes, the newest kept, the dropped ones counted), the order in which a
//! view lists hosts (failures, then the still-running, then the queued, then the finished),
//! the grouping of identical outputs, and the one-line account of a run that the first
//! Ctrl-C prints. Invariants: memory per host is bounded whatever a host sends; a host that
//! reached an end state (exited or failed) never goes back. Must not know: how the board is
//! drawn (`term::live`), what the command is, or how a host's session works.
//!
//! The executor (`fanout::for_each`) reports turns and its own failures through [`turn`] and
//! [`settle`] to the board installed for this process ([`install`]); a command job reports
//! its start, its output and its exit through a [`Slot`]. Nothing is recorded while no board
//! is installed, so rotations, copies and checks pay nothing.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::config::hostlist;
use crate::fanout::HostError;
use crate::ssh::exec::{OutputSink, RemoteExit};

/// The most bytes of output the board keeps per host (stdout and stderr as they arrived);
/// older bytes are dropped first and counted.
pub const OUTPUT_CAP: usize = 1024 * 1024;

/// How far back from the end of a host's output its last line is looked for: a line longer
/// than this shows its last part only, and drawing a row never scans more.
const LAST_LINE_SCAN: usize = 4096;

/// The most characters of a failure reason or signal name the board keeps: a server must not
/// make one row arbitrarily long.
const MAX_REASON: usize = 512;

/// The most characters of a hostlist in the Ctrl-C account, so that the line stays one line
/// when host names do not compress.
const MAX_HOSTLIST: usize = 300;

/// Where one host stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostState {
    /// Waiting for its turn (`-j`).
    Queued,
    /// Has its turn: connecting and logging in.
    Connecting,
    /// Logged in; the command runs.
    Running,
    /// The command ended: its exit code as ssh reports it and how it ended, in words.
    Exited { code: u8, how: String },
    /// The host produced no exit status: why, in one line.
    Failed(String),
}

impl HostState {
    /// Whether the host reached an end state.
    pub fn is_done(&self) -> bool {
        matches!(self, HostState::Exited { .. } | HostState::Failed(_))
    }

    /// Whether the host failed: no exit status, or a non-zero one.
    pub fn is_failure(&self) -> bool {
        match self {
            HostState::Failed(_) => true,
            HostState::Exited { code, .. } => *code != 0,
            _ => false,
        }
    }

    /// The view's order: failures first, then the still-running, the queued, the finished.
    fn rank(&self) -> u8 {
        match self {
            HostState::Failed(_) => 0,
            HostState::Exited { code, .. } if *code != 0 => 1,
            HostState::Running => 2,
            HostState::Connecting => 3,
            HostState::Queued => 4,
            HostState::Exited { .. } => 5,
        }
    }
}

/// The newest bytes of one host's output, at most `cap`, with the count of older bytes
/// dropped to stay there.
#[derive(Debug)]
struct Tail {
    bytes: VecDeque<u8>,
    cap: usize,
    dropped: u64,
}

impl Tail {
    fn new(cap: usize) -> Tail {
        Tail {
            bytes: VecDeque::new(),
            cap,
            dropped: 0,
        }
    }

    fn push(&mut self, data: &[u8]) {
        // Only the newest `cap` bytes of `data` can survive, so no more are copied in.
        let kept = &data[data.len().saturating_sub(self.cap)..];
        self.dropped += (data.len() - kept.len()) as u64;
        let overflow = (self.bytes.len() + kept.len()).saturating_sub(self.cap);
        self.bytes.drain(..overflow);
        self.dropped += overflow as u64;
        self.bytes.extend(kept);
    }

    /// The last line that has any text (a carriage return starts a line again, as a
    /// progress meter uses it), at most [`LAST_LINE_SCAN`] bytes of it.
    fn last_line(&self) -> Vec<u8> {
        let start = self.bytes.len().saturating_sub(LAST_LINE_SCAN);
        let recent: Vec<u8> = self.bytes.range(start..).copied().collect();
        recent
            .split(|b| *b == b'\n')
            .rev()
            .filter_map(|line| {
                let shown = line.rsplit(|b| *b == b'\r').find(|part| !is_blank(part))?;
                Some(shown.to_vec())
            })
            .next()
            .unwrap_or_default()
    }
}

fn is_blank(text: &[u8]) -> bool {
    text.iter().all(u8::is_ascii_whitespace)
}

#[derive(Debug)]
struct Entry {
    label: String,
    state: HostState,
    started: Option<Instant>,
    ended: Option<Instant>,
    output: Tail,
}

/// One host as a view shows it, copied out of the board.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The host's position in the input, from 1: stable while states change.
    pub number: usize,
    pub label: String,
    pub state: HostState,
    /// Since its turn came; frozen at its end. None while queued.
    pub elapsed: Option<Duration>,
    /// The host's last line of output with any text, raw (the view escapes it).
    pub last_line: Vec<u8>,
}

/// Hosts whose outputs are byte for byte the same.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// In input order.
    pub labels: Vec<String>,
    /// The output they share, raw (the view escapes it).
    pub output: Vec<u8>,
    /// Bytes dropped from the front of the first host's output ([`OUTPUT_CAP`]).
    pub dropped: u64,
}

impl Group {
    /// The hosts as a compressed hostlist (`worker[01-03]`).
    pub fn hostlist(&self) -> String {
        let labels: Vec<&str> = self.labels.iter().map(String::as_str).collect();
        hostlist::compress(&labels)
    }
}

/// Every host of one fan-out, in input order.
#[derive(Debug)]
pub struct Board {
    hosts: Mutex<Vec<Entry>>,
    index: HashMap<String, usize>,
}

impl Board {
    /// A board of queued hosts, each keeping at most `cap` bytes of output. Labels are
    /// unique in a fan-out (`plan::targets` removes duplicates); a repeated label would
    /// report to its first host.
    pub fn new(labels: impl IntoIterator<Item = String>, cap: usize) -> Board {
        let hosts: Vec<Entry> = labels
            .into_iter()
            .map(|label| Entry {
                label,
                state: HostState::Queued,
                started: None,
                ended: None,
                output: Tail::new(cap),
            })
            .collect();
        let mut index = HashMap::with_capacity(hosts.len());
        for (i, entry) in hosts.iter().enumerate() {
            index.entry(entry.label.clone()).or_insert(i);
        }
        Board {
            hosts: Mutex::new(hosts),
            index,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Vec<Entry>> {
        // A panic while holding the lock cannot leave an entry half-written in a way that
        // matters for display, so a poisoned board is still read.
        self.hosts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies `change` to the host named `label`, unless it already reached an end state.
    fn update(&self, label: &str, change: impl FnOnce(&mut Entry)) {
        let Some(&i) = self.index.get(label) else {
            return;
        };
        let mut hosts = self.lock();
        let entry = &mut hosts[i];
        if !entry.state.is_done() {
            change(entry);
        }
    }

    /// The host got its turn: it is connecting from now.
    pub fn connecting(&self, label: &str) {
        self.update(label, |entry| {
            entry.state = HostState::Connecting;
            entry.started = Some(Instant::now());
        });
    }

    /// The host's command started.
    pub fn running(&self, label: &str) {
        self.update(label, |entry| {
            entry.state = HostState::Running;
            entry.started.get_or_insert_with(Instant::now);
        });
    }

    /// The host ended in `state` (an end state).
    fn end(&self, label: &str, state: HostState) {
        self.update(label, |entry| {
            entry.state = state;
            entry.ended = Some(Instant::now());
        });
    }

    /// The host ended in `state` unless its job already reported an end (a command's exit
    /// status): jobs without a [`Slot`], such as copies, end when the executor sees them end.
    fn end_unless_ended(&self, label: &str, state: HostState) {
        self.update(label, |entry| {
            if !entry.state.is_done() {
                entry.state = state;
                entry.ended = Some(Instant::now());
            }
        });
    }

    /// The host's command ended with `exit`.
    pub fn exited(&self, label: &str, exit: &RemoteExit) {
        let how = match exit {
            RemoteExit::Status(status) => format!("exit {status}"),
            RemoteExit::Signal { name, .. } => format!("signal {}", cut(name)),
            RemoteExit::NoStatus => "no exit status".to_owned(),
        };
        self.end(
            label,
            HostState::Exited {
                code: exit.code(),
                how,
            },
        );
    }

    /// The host failed without an exit status.
    pub fn failed(&self, label: &str, reason: &str) {
        self.end(label, HostState::Failed(cut(reason)));
    }

    /// Output from the host, stdout and stderr alike, in arrival order.
    pub fn output(&self, label: &str, data: &[u8]) {
        let Some(&i) = self.index.get(label) else {
            return;
        };
        self.lock()[i].output.push(data);
    }

    /// Every host, failures first, then the still-running, the queued and the finished,
    /// each class in input order.
    pub fn rows(&self) -> Vec<Row> {
        let now = Instant::now();
        let hosts = self.lock();
        let mut rows: Vec<Row> = hosts
            .iter()
            .enumerate()
            .map(|(i, entry)| Row {
                number: i + 1,
                label: entry.label.clone(),
                state: entry.state.clone(),
                elapsed: entry.started.map(|started| {
                    entry
                        .ended
                        .unwrap_or(now)
                        .saturating_duration_since(started)
                }),
                last_line: entry.output.last_line(),
            })
            .collect();
        drop(hosts);
        rows.sort_by_key(|row| (row.state.rank(), row.number));
        rows
    }

    /// Host `number`'s (from 1) label, kept output and the count of bytes dropped before it.
    pub fn host_output(&self, number: usize) -> Option<(String, Vec<u8>, u64)> {
        let hosts = self.lock();
        let entry = hosts.get(number.checked_sub(1)?)?;
        Some((
            entry.label.clone(),
            entry.output.bytes.iter().copied().collect(),
            entry.output.dropped,
        ))
    }

    /// The number of hosts.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether the board has no host.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether every host reached an end state.
    pub fn all_done(&self) -> bool {
        self.lock().iter().all(|entry| entry.state.is_done())
    }

    /// Hosts with identical output (hosts that printed nothing form a group too), largest
    /// group first, then in order of each group's first host. Only `filter`'s hosts count.
    pub fn groups(&self, filter: impl Fn(&HostState) -> bool) -> Vec<Group> {
        let mut hosts = self.lock();
        // Outputs are bucketed by a hash of their bytes and compared in full only within a
        // bucket, so grouping many hosts stays linear in their output.
        let mut buckets: HashMap<u64, Vec<usize>> = HashMap::new();
        let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
        for i in 0..hosts.len() {
            if !filter(&hosts[i].state) {
                continue;
            }
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            hosts[i].output.bytes.make_contiguous().hash(&mut hasher);
            let bucket = buckets.entry(hasher.finish()).or_default();
            let same = bucket
                .iter()
                .copied()
                .find(|&g| hosts[groups[g].0].output.bytes == hosts[i].output.bytes);
            match same {
                Some(g) => groups[g].1.push(i),
                None => {
                    bucket.push(groups.len());
                    groups.push((i, vec![i]));
                }
            }
        }
        groups.sort_by_key(|(first, members)| (std::cmp::Reverse(members.len()), *first));
        groups
            .into_iter()
            .map(|(first, members)| Group {
                labels: members.iter().map(|&i| hosts[i].label.clone()).collect(),
                output: hosts[first].output.bytes.iter().copied().collect(),
                dropped: hosts[first].output.dropped,
            })
            .collect()
    }

    /// Where the run stands, in one line: `done N, running N: HOSTS, queued N, failed N:
    /// HOSTS` (connecting hosts count as running; a non-zero exit status is a failure).
    pub fn account(&self) -> String {
        let hosts = self.lock();
        let (mut done, mut queued) = (0usize, 0usize);
        let (mut running, mut failed) = (Vec::new(), Vec::new());
        for entry in hosts.iter() {
            match &entry.state {
                state if state.is_failure() => failed.push(entry.label.as_str()),
                HostState::Exited { .. } => done += 1,
                HostState::Queued => queued += 1,
                HostState::Connecting | HostState::Running => running.push(entry.label.as_str()),
                HostState::Failed(_) => failed.push(entry.label.as_str()),
            }
        }
        let listed = |label: &str, hosts: &[&str]| {
            if hosts.is_empty() {
                format!("{label} 0")
            } else {
                format!("{label} {}: {}", hosts.len(), bounded_hostlist(hosts))
            }
        };
        format!(
            "done {done}, {}, queued {queued}, {}",
            listed("running", &running),
            listed("failed", &failed)
        )
    }
}

/// `hosts` compressed, cut at [`MAX_HOSTLIST`] characters.
fn bounded_hostlist(hosts: &[&str]) -> String {
    let list = hostlist::compress(hosts);
    match list.char_indices().nth(MAX_HOSTLIST) {
        Some((end, _)) => format!("{}...", &list[..end]),
        None => list,
    }
}

/// `text` cut at [`MAX_REASON`] characters, on one line.
fn cut(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    match line.char_indices().nth(MAX_REASON) {
        Some((end, _)) => format!("{}...", &line[..end]),
        None => line.to_owned(),
    }
}

/// The board this process's fan-out reports to, if one is installed.
static CURRENT: Mutex<Option<Arc<Board>>> = Mutex::new(None);

/// Makes `board` the one the executor and jobs report to, from now on.
pub fn install(board: Arc<Board>) {
    *CURRENT.lock().unwrap_or_else(PoisonError::into_inner) = Some(board);
}

/// The installed board, if any.
pub fn installed() -> Option<Arc<Board>> {
    CURRENT
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// The executor's hook: `label` got its turn.
pub fn turn(label: &str) {
    if let Some(board) = installed() {
        board.connecting(label);
    }
}

/// The executor's hook: `label` yielded `result`. Failures the executor decided (no login,
/// a deadline, Ctrl-C, a lost session, `--fail-fast`) end the host here; a command's own
/// result is reported by its [`Slot`], which knows the exit status, and any other job (a
/// copy) ends here as done or failed.
pub fn settle<T, E>(label: &str, result: &Result<T, HostError<E>>) {
    let Some(board) = installed() else { return };
    let reason = match result {
        Ok(_) => {
            let done = HostState::Exited {
                code: 0,
                how: "done".to_owned(),
            };
            return board.end_unless_ended(label, done);
        }
        Err(HostError::Job(_)) => {
            return board.end_unless_ended(label, HostState::Failed("failed".to_owned()))
        }
        Err(HostError::Connect(err)) => err.to_string(),
        Err(HostError::Lost(end)) => end.to_string(),
        Err(HostError::Timeout { seconds }) => {
            HostError::<std::convert::Infallible>::Timeout { seconds: *seconds }.to_string()
        }
        Err(HostError::Cancelled) => HostError::<std::convert::Infallible>::Cancelled.to_string(),
        Err(HostError::NotStarted) => HostError::<std::convert::Infallible>::NotStarted.to_string(),
        Err(HostError::Stopped) => HostError::<std::convert::Infallible>::Stopped.to_string(),
    };
    board.failed(label, &reason);
}

/// One host's place on the installed board, for the job that runs its command.
#[derive(Debug)]
pub struct Slot {
    board: Option<Arc<Board>>,
    label: String,
}

impl Slot {
    /// The slot of `label`; it records nothing when no board is installed.
    pub fn of(label: &str) -> Slot {
        Slot {
            board: installed(),
            label: label.to_owned(),
        }
    }

    /// The command started.
    pub fn running(&self) {
        if let Some(board) = &self.board {
            board.running(&self.label);
        }
    }

    /// The command ended with `exit`.
    pub fn exited(&self, exit: &RemoteExit) {
        if let Some(board) = &self.board {
            board.exited(&self.label, exit);
        }
    }

    /// The command could not run or finish: `reason`.
    pub fn failed(&self, reason: &dyn std::fmt::Display) {
        if let Some(board) = &self.board {
            board.failed(&self.label, &reason.to_string());
        }
    }

    /// A sink that keeps the output on the board.
    pub fn sink(&self) -> Feed<'_> {
        Feed { slot: self }
    }
}

/// Output to a host's place on the board, in arrival order.
pub struct Feed<'a> {
    slot: &'a Slot,
}

impl OutputSink for Feed<'_> {
    fn stdout(&mut self, data: &[u8]) {
        if let Some(board) = &self.slot.board {
            board.output(&self.slot.label, data);
        }
    }

    fn stderr(&mut self, data: &[u8]) {
        self.stdout(data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board(labels: &[&str], cap: usize) -> Board {
        Board::new(labels.iter().map(|l| (*l).to_owned()), cap)
    }

    #[test]
    fn a_tail_keeps_the_newest_bytes_and_counts_the_rest() {
        let mut tail = Tail::new(8);
        tail.push(b"0123");
        tail.push(b"456789");
        assert_eq!(tail.bytes.iter().copied().collect::<Vec<_>>(), b"23456789");
        assert_eq!(tail.dropped, 2);
        // One push far past the cap copies in only what survives.
        tail.push(&[b'x'; 100]);
        assert_eq!(tail.bytes.len(), 8);
        assert_eq!(tail.dropped, 102);
    }

    #[test]
    fn the_last_line_is_the_last_with_text_after_any_carriage_return() {
        let mut tail = Tail::new(1024);
        tail.push(b"first\nsecond\n\n  \n");
        assert_eq!(tail.last_line(), b"second");
        tail.push(b"10%\r50%\r");
        assert_eq!(tail.last_line(), b"50%");
        let mut long = Tail::new(1 << 20);
        long.push(&vec![b'a'; 100_000]);
        assert_eq!(long.last_line().len(), LAST_LINE_SCAN);
    }

    #[test]
    fn rows_put_failures_then_running_then_queued_then_finished() {
        let b = board(&["ok", "queued", "run", "bad", "down"], 64);
        b.connecting("ok");
        b.exited("ok", &RemoteExit::Status(0));
        b.connecting("run");
        b.running("run");
        b.connecting("bad");
        b.exited("bad", &RemoteExit::Status(3));
        b.failed("down", "connection refused");
        let order: Vec<(usize, String)> =
            b.rows().into_iter().map(|r| (r.number, r.label)).collect();
        let expected = [
            (5, "down"),
            (4, "bad"),
            (3, "run"),
            (2, "queued"),
            (1, "ok"),
        ];
        assert_eq!(
            order,
            expected.map(|(n, l)| (n, l.to_owned())).to_vec(),
            "failures, running, queued, finished"
        );
        assert_eq!(
            b.account(),
            "done 1, running 1: run, queued 1, failed 2: bad,down"
        );
    }

    #[test]
    fn an_end_state_is_final() {
        let b = board(&["h"], 64);
        b.failed("h", "interrupted\nsecond line");
        b.exited("h", &RemoteExit::Status(0));
        b.running("h");
        let row = &b.rows()[0];
        assert_eq!(row.state, HostState::Failed("interrupted".to_owned()));
        assert!(row.elapsed.is_none(), "it never got a turn");
    }

    #[test]
    fn identical_outputs_group_whatever_their_ring_layout() {
        let b = board(&["a1", "a2", "b", "a3"], 5);
        // a1 wrapped around its ring, a2 did not: the same bytes all the same.
        b.output("a1", b"xxxx");
        b.output("a1", b"same\n");
        b.output("a2", b"same\n");
        b.output("a3", b"same\n");
        b.output("b", b"else\n");
        let groups = b.groups(|_| true);
        assert_eq!(groups.len(), 2);
        assert_eq!(groups[0].labels, ["a1", "a2", "a3"]);
        assert_eq!(groups[0].hostlist(), "a[1-3]");
        assert_eq!(groups[0].output, b"same\n");
        assert_eq!(groups[0].dropped, 4);
        assert_eq!(groups[1].labels, ["b"]);
    }

    #[test]
    fn settle_names_the_executors_own_failures() {
        let b = Arc::new(board(&["t"], 64));
        install(Arc::clone(&b));
        settle::<(), std::io::Error>("t", &Err(HostError::Timeout { seconds: 5 }));
        *CURRENT.lock().unwrap() = None;
        match &b.rows()[0].state {
            HostState::Failed(reason) => assert!(reason.contains("--timeout"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }
}
