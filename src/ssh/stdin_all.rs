//! `--stdin-all` (pssh's `-I`): the local stdin read once and streamed to every host's
//! command, in bounded memory whatever its size.
//!
//! Owns: one window of at most [`WINDOW`] bytes of stdin, in [`CHUNK`]-sized chunks, that
//! every live host reads through at its own pace, and the rule for sliding it. A chunk leaves
//! the window once every host that is sending has sent it and no other host may still start
//! (the fan-out's queued, connecting and just-started hosts, which the caller's [`Census`]
//! names); so the slowest live host holds the window back, a host whose command ended or
//! whose session failed leaves it at once, and a host that would start after the window
//! moved on is refused in one line instead of getting part of stdin. One escape keeps a run
//! that cannot go on from waiting on itself: when only hosts waiting for a turn (`-j`) could
//! still start and every live host has sent everything, the window slides for the live ones.
//! Stdin shorter than the window is kept whole, so any `-j` works for it. Invariant: memory is
//! the window plus one chunk being read. Must not know: how sessions are made or scheduled.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::Notify;

/// Bytes read from stdin at a time, and so the unit the window slides by.
pub const CHUNK: usize = 256 * 1024;

/// The most bytes of stdin held in memory.
pub const WINDOW: usize = 16 * 1024 * 1024;

/// How often a wait looks again at the fan-out's hosts, which report no changes themselves.
const RECHECK: Duration = Duration::from_millis(20);

/// Where a host that has not ended stands in the fan-out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Waiting for its turn (`-j`).
    Queued,
    /// Logging in.
    Connecting,
    /// Logged in: it joins the window as its command starts.
    Running,
}

/// The caller's view of the hosts that have not ended: each label with its stage.
pub type Census = Box<dyn Fn() -> Vec<(String, Stage)> + Send + Sync>;

/// How stdin ended, once it has.
#[derive(Debug, Clone, PartialEq, Eq)]
enum End {
    Eof,
    Failed(String),
}

#[derive(Debug, Default)]
struct Window {
    /// The index of `chunks[0]` in the whole of stdin.
    base: u64,
    chunks: VecDeque<Arc<Vec<u8>>>,
    end: Option<End>,
    /// Each sending host's next chunk index, by member id.
    members: BTreeMap<u64, u64>,
    next_member: u64,
    /// Every label that ever joined.
    joined: HashSet<String>,
}

/// The shared window; see the module documentation.
pub struct SharedStdin {
    window: Mutex<Window>,
    changed: Notify,
    census: Census,
}

/// One host's place in the window; it leaves when dropped.
pub struct Member {
    shared: Arc<SharedStdin>,
    id: u64,
}

/// A host that would start after the window moved on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Missed;

/// What [`SharedStdin::make_room`] found.
enum Room {
    Made,
    /// A member has not sent the oldest chunk yet.
    SlowestMember,
    /// A host may still start and need the oldest chunk.
    HostsStarting,
}

enum Next {
    Chunk(Arc<Vec<u8>>),
    End,
}

impl SharedStdin {
    /// Starts reading `input` (the local stdin) on a task of its own.
    pub fn start(
        input: impl AsyncRead + Unpin + Send + 'static,
        census: Census,
    ) -> Arc<SharedStdin> {
        let shared = Arc::new(SharedStdin {
            window: Mutex::new(Window::default()),
            changed: Notify::new(),
            census,
        });
        tokio::spawn(Arc::clone(&shared).fill(input));
        shared
    }

    fn lock(&self) -> MutexGuard<'_, Window> {
        self.window.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Joins the window from its start, unless it already moved on.
    pub fn join(self: &Arc<Self>, label: &str) -> Result<Member, Missed> {
        let mut window = self.lock();
        if window.base > 0 {
            return Err(Missed);
        }
        let id = window.next_member;
        window.next_member += 1;
        window.members.insert(id, 0);
        window.joined.insert(label.to_owned());
        Ok(Member {
            shared: Arc::clone(self),
            id,
        })
    }

    /// Why reading stdin failed, once it has.
    pub fn read_error(&self) -> Option<String> {
        match &self.lock().end {
            Some(End::Failed(reason)) => Some(reason.clone()),
            _ => None,
        }
    }

    /// Waits for a change (a chunk read, a host leaving or advancing), or [`RECHECK`].
    async fn wait_for_change(
        &self,
        notified: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>,
    ) {
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(RECHECK) => {}
        }
    }

    async fn fill(self: Arc<Self>, mut input: impl AsyncRead + Unpin) {
        loop {
            loop {
                let notified = self.changed.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                match self.make_room() {
                    Room::Made => break,
                    Room::SlowestMember => self.wait_for_change(notified).await,
                    // Only the census can change this; it is asked again after a pause
                    // rather than at every member's step.
                    Room::HostsStarting => tokio::time::sleep(RECHECK).await,
                }
            }
            let mut chunk = Vec::with_capacity(CHUNK);
            let mut end = None;
            while chunk.len() < CHUNK {
                match input.read_buf(&mut chunk).await {
                    Ok(0) => {
                        end = Some(End::Eof);
                        break;
                    }
                    Ok(_) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(err) => {
                        end = Some(End::Failed(err.to_string()));
                        break;
                    }
                }
            }
            let done = end.is_some();
            {
                let mut window = self.lock();
                if !chunk.is_empty() {
                    window.chunks.push_back(Arc::new(chunk));
                }
                window.end = end;
            }
            self.changed.notify_waiters();
            if done {
                return;
            }
        }
    }

    /// Makes room for one more chunk if the window has it or the rule lets it slide.
    fn make_room(&self) -> Room {
        let max_chunks = WINDOW / CHUNK;
        {
            let window = self.lock();
            if window.chunks.len() < max_chunks {
                return Room::Made;
            }
            if window.members.values().any(|cursor| *cursor <= window.base) {
                return Room::SlowestMember;
            }
        }
        // The census is taken outside the window's lock: it locks the caller's state.
        let census = (self.census)();
        let mut window = self.lock();
        let head = window.base + window.chunks.len() as u64;
        let slowest = window.members.values().copied().min();
        if slowest.is_some_and(|cursor| cursor <= window.base) {
            return Room::SlowestMember;
        }
        let mut queued = false;
        for (label, stage) in &census {
            match stage {
                Stage::Queued => queued = true,
                Stage::Connecting => return Room::HostsStarting,
                Stage::Running if !window.joined.contains(label) => return Room::HostsStarting,
                Stage::Running => {}
            }
        }
        // Hosts waiting for a turn get one only when a live host ends, which needs the rest of
        // stdin: slide for the live ones once they have sent everything there is.
        if queued && slowest.is_none_or(|cursor| cursor < head) {
            return Room::HostsStarting;
        }
        window.chunks.pop_front();
        window.base += 1;
        Room::Made
    }

    /// The chunk at `cursor`, waiting for it to be read; `End` after the last one.
    async fn next(&self, cursor: u64) -> Next {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let window = self.lock();
                let offset = cursor.saturating_sub(window.base);
                if let Some(chunk) = usize::try_from(offset)
                    .ok()
                    .and_then(|at| window.chunks.get(at))
                {
                    return Next::Chunk(Arc::clone(chunk));
                }
                if window.end.is_some() {
                    return Next::End;
                }
            }
            self.wait_for_change(notified).await;
        }
    }
}

impl Member {
    /// Sends all of stdin to `writer`, then end-of-file. A write that fails (the command or
    /// the session ended) leaves the window at once.
    pub async fn feed(self, mut writer: impl AsyncWrite + Unpin) {
        let mut cursor = 0u64;
        while let Next::Chunk(chunk) = self.shared.next(cursor).await {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
            cursor += 1;
            self.shared.lock().members.insert(self.id, cursor);
            self.shared.changed.notify_waiters();
        }
        let _ = writer.shutdown().await;
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.shared.lock().members.remove(&self.id);
        self.shared.changed.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A census that says every host already started.
    fn all_started() -> Census {
        Box::new(Vec::new)
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 % 251) as u8).collect()
    }

    #[tokio::test]
    async fn every_member_gets_all_of_an_input_four_times_the_window() {
        let data = pattern(4 * WINDOW + 12345);
        let shared = SharedStdin::start(std::io::Cursor::new(data.clone()), all_started());
        let mut tasks = Vec::new();
        for host in 0..3 {
            let member = shared.join(&format!("h{host}")).unwrap();
            tasks.push(tokio::spawn(async move {
                let (mut ours, theirs) = tokio::io::duplex(64 * 1024);
                let feeding = tokio::spawn(member.feed(theirs));
                let mut got = Vec::new();
                ours.read_to_end(&mut got).await.unwrap();
                feeding.await.unwrap();
                got
            }));
            // The window holds at most its bound while the members read.
            assert!(shared.lock().chunks.len() <= WINDOW / CHUNK);
        }
        for task in tasks {
            assert!(task.await.unwrap() == data);
        }
        assert!(shared.join("late").is_err(), "the window moved on");
    }

    #[tokio::test]
    async fn a_member_that_leaves_does_not_hold_the_window() {
        let data = pattern(3 * WINDOW);
        let shared = SharedStdin::start(std::io::Cursor::new(data.clone()), all_started());
        let quitter = shared.join("quitter").unwrap();
        let reader = shared.join("reader").unwrap();
        drop(quitter);
        let (mut ours, theirs) = tokio::io::duplex(64 * 1024);
        let feeding = tokio::spawn(reader.feed(theirs));
        let mut got = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), ours.read_to_end(&mut got))
            .await
            .expect("the window slid without the member that left")
            .unwrap();
        feeding.await.unwrap();
        assert!(got == data);
    }

    #[tokio::test]
    async fn a_host_still_logging_in_holds_the_window_and_input_within_it_stays_whole() {
        let connecting: Census = Box::new(|| vec![("slow".to_owned(), Stage::Connecting)]);
        let data = pattern(2 * WINDOW);
        let shared = SharedStdin::start(std::io::Cursor::new(data), connecting);
        let member = shared.join("fast").unwrap();
        let (mut ours, theirs) = tokio::io::duplex(64 * 1024);
        tokio::spawn(member.feed(theirs));
        let mut got = vec![0u8; WINDOW];
        ours.read_exact(&mut got).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(
            shared.lock().base,
            0,
            "nothing slid while a host was logging in"
        );
        assert!(shared.join("slow").is_ok());
    }
}
