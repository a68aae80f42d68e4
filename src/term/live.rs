//! The live view of a command fan-out on a terminal (`smssh -w HOSTS -- cmd`): every host's
//! state, elapsed time and last line, failures and the still-running first; one host's full
//! output with scrollback and follow; the output groups; the diff of two hosts. When the run
//! ends the view closes (or, while the user browses a host, a group list or a diff, when the
//! user leaves it), and [`print_groups`] leaves the grouped outputs on the normal screen.
//!
//! Owns: the screen while the run lasts (raw mode and the alternate screen, entered by
//! [`start`]) and giving it back on every path: [`LiveView::finish`], a drop of the view, a
//! panic (a hook), a Ctrl-C that ends the process ([`cancel::before_quit`]), SIGTERM and
//! SIGHUP. Keys are
//! read in raw mode, so Ctrl-C arrives as a key and goes through the same stages as the
//! signal ([`cancel::press`]). Invariants: every byte that came from a host or a server passes
//! [`visible`] before it is drawn; what a view copies out of the board is bounded by the
//! board's per-host cap. Must not know: SSH, the command, or how hosts change state.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Once, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::crossterm::{cursor, execute, terminal};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Cell, Paragraph, Row as TableRow, Table, TableState};
use ratatui::{Frame, Terminal};

use crate::fanout::board::{Board, Group, HostState, Row};
use crate::term::cancel::{self, Press};
use crate::term::escape::visible;

/// How often the screen is drawn while nothing is pressed.
const TICK: Duration = Duration::from_millis(100);

/// How often the groups and the diff are computed again while shown: both read every
/// host's output, which is too much work for every frame.
const RECOMPUTE: Duration = Duration::from_secs(2);

/// The most lines of each host a diff compares (the last ones): the comparison costs the
/// product of both counts.
const MAX_DIFF_LINES: usize = 2000;

/// The most lines of one group the group list shows; a host's own view shows all.
const MAX_GROUP_LINES: usize = 200;

/// How long a digit typed to pick a host waits for the next digit of the same number.
const DIGIT_PAUSE: Duration = Duration::from_secs(1);

/// Why the live view could not take the terminal.
#[derive(Debug, thiserror::Error)]
pub enum LiveError {
    #[error("cannot open the live view on this terminal: {0}; printing lines instead")]
    Terminal(std::io::Error),
    #[error("cannot start the live view: {0}; printing lines instead")]
    Thread(std::io::Error),
    #[error("cannot watch for SIGTERM and SIGHUP: {0}; printing lines instead")]
    Signals(std::io::Error),
}

/// Whether this process has the terminal in raw mode on the alternate screen.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The line Ctrl-C had to say while the view owns the screen, shown in its footer.
static NOTICE: Mutex<Option<(String, Instant)>> = Mutex::new(None);

/// How long a notice stays in the footer.
const NOTICE_TIME: Duration = Duration::from_secs(5);

fn notice(line: &str) {
    *NOTICE.lock().unwrap_or_else(PoisonError::into_inner) =
        Some((line.to_owned(), Instant::now()));
}

fn current_notice() -> Option<String> {
    NOTICE
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .filter(|(_, since)| since.elapsed() < NOTICE_TIME)
        .map(|(line, _)| line.clone())
}

/// Gives the terminal back: leaves the alternate screen, shows the cursor, ends raw mode.
/// Idempotent, lock-free and quick, so that the panic hook and a Ctrl-C that ends the
/// process can call it from anywhere.
pub fn restore_terminal() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        let mut out = std::io::stdout();
        let _ = execute!(out, terminal::LeaveAlternateScreen, cursor::Show);
        let _ = terminal::disable_raw_mode();
        let _ = out.flush();
    }
}

/// SIGTERM and SIGHUP end smssh as before (status 128 + the signal's number), after giving
/// the terminal back: their default action would leave it in raw mode on the alternate
/// screen. The listeners stay for the rest of the process, since a signal taken over by tokio
/// is no longer fatal by itself.
fn restore_on_termination() -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    for (kind, number) in [(SignalKind::terminate(), 15), (SignalKind::hangup(), 1)] {
        let mut received = signal(kind)?;
        tokio::spawn(async move {
            if received.recv().await.is_some() {
                restore_terminal();
                std::process::exit(128 + number);
            }
        });
    }
    Ok(())
}

/// Takes the terminal: raw mode, the alternate screen, no cursor. The panic hook that gives
/// it back is installed once per process.
fn enter_terminal() -> std::io::Result<()> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
    });
    terminal::enable_raw_mode()?;
    ACTIVE.store(true, Ordering::SeqCst);
    execute!(
        std::io::stdout(),
        terminal::EnterAlternateScreen,
        cursor::Hide
    )
    .inspect_err(|_| {
        restore_terminal();
    })
}

/// The open view; [`LiveView::finish`] waits for it to close and gives the terminal back,
/// and so does a drop on an error path.
pub struct LiveView {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Opens the view over `board` on stdout, which must be a terminal. It draws and reads keys
/// on its own thread until the run is over (see [`LiveView::finish`]).
pub fn start(board: Arc<Board>) -> Result<LiveView, LiveError> {
    restore_on_termination().map_err(LiveError::Signals)?;
    enter_terminal().map_err(LiveError::Terminal)?;
    cancel::before_quit(restore_terminal);
    cancel::announce_with(notice);
    let done = Arc::new(AtomicBool::new(false));
    let thread_done = Arc::clone(&done);
    let spawned = std::thread::Builder::new()
        .name("live-view".to_owned())
        .spawn(move || {
            let backend = CrosstermBackend::new(std::io::stdout());
            if let Ok(mut screen) = Terminal::new(backend) {
                let mut view = View::new(board);
                // A failed draw or read (the terminal went away) ends the view; the run goes
                // on and its result is printed as usual.
                let _ = view.run(&mut screen, &thread_done);
            }
        });
    match spawned {
        Ok(thread) => Ok(LiveView {
            done,
            thread: Some(thread),
        }),
        Err(err) => {
            close();
            Err(LiveError::Thread(err))
        }
    }
}

/// Gives the terminal back and sends Ctrl-C's lines to stderr again.
fn close() {
    restore_terminal();
    cancel::announce_on_stderr();
}

impl LiveView {
    /// The run is over: waits until the view closes (at once, unless the user is reading a
    /// host, the groups or a diff, which they leave with q), then gives the terminal back.
    pub fn finish(mut self) {
        self.done.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            // The view's thread only draws and reads keys; waiting here holds this worker
            // thread while the user reads, which is the point.
            let _ = tokio::task::block_in_place(|| thread.join());
        }
        close();
    }
}

impl Drop for LiveView {
    fn drop(&mut self) {
        // Reached without `finish` only on an error path: the view's thread sees `done`
        // and ends at its next tick, and the terminal is given back now.
        self.done.store(true, Ordering::SeqCst);
        close();
    }
}

/// Prints the grouped outputs of the hosts whose command ran, after the view closed, so that
/// the terminal keeps the result (the summary of failures follows on stderr). The output is
/// the command's own and stays raw, as `--group` prints it.
pub fn print_groups(board: &Board) {
    let groups = board.groups(|state| matches!(state, HostState::Exited { .. }));
    let mut out = std::io::stdout().lock();
    let rule = "-".repeat(15);
    for group in groups {
        let _ = writeln!(
            out,
            "{rule}\n{} ({})\n{rule}",
            visible(&group.hostlist()),
            group.labels.len()
        );
        if group.dropped > 0 {
            let _ = writeln!(
                out,
                "{}: the first {} bytes of this output were not kept",
                crate::term::diag::program(),
                group.dropped
            );
        }
        let _ = out.write_all(&group.output);
        if !group.output.is_empty() && !group.output.ends_with(b"\n") {
            let _ = writeln!(out);
        }
    }
    let _ = out.flush();
}

/// What the view shows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Screen {
    /// Every host, one row each.
    Hosts,
    /// One host's output, by its number.
    Host(usize),
    /// The output groups.
    Groups,
    /// The diff of two hosts, by number.
    Diff(usize, usize),
}

/// A text screen's scroll position: the first line shown, or the end (follow).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scroll {
    Follow,
    At(usize),
}

struct View {
    board: Arc<Board>,
    screen: Screen,
    scroll: Scroll,
    /// The selected host's number in the host list.
    selected: Option<usize>,
    /// The host marked with Space for a diff.
    marked: Option<usize>,
    digits: String,
    last_digit: Instant,
    /// The groups or diff lines being shown and when they were made.
    cached: Option<(Vec<Line<'static>>, Instant)>,
    /// Lines of the last text screen drawn, for paging.
    page: usize,
    /// The first line the last text screen showed, where scrolling up from the end starts.
    shown_first: usize,
    stopping: bool,
}

impl View {
    fn new(board: Arc<Board>) -> View {
        View {
            board,
            screen: Screen::Hosts,
            scroll: Scroll::At(0),
            selected: None,
            marked: None,
            digits: String::new(),
            last_digit: Instant::now(),
            cached: None,
            page: 20,
            shown_first: 0,
            stopping: false,
        }
    }

    /// Draws and reads keys until the run is over and the user is not reading anything,
    /// or the user leaves after the run.
    fn run(
        &mut self,
        screen: &mut Terminal<CrosstermBackend<std::io::Stdout>>,
        done: &AtomicBool,
    ) -> std::io::Result<()> {
        loop {
            let finished = done.load(Ordering::SeqCst);
            if finished && (self.screen == Screen::Hosts || self.stopping) {
                return Ok(());
            }
            if !ACTIVE.load(Ordering::SeqCst) {
                return Ok(());
            }
            screen.draw(|frame| self.draw(frame, finished))?;
            if event::poll(TICK)? {
                if let Event::Key(key) = event::read()? {
                    if key.kind == KeyEventKind::Press && self.key(key, finished) {
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Acts on one key; true when the view must close.
    fn key(&mut self, key: KeyEvent, finished: bool) -> bool {
        if key.modifiers.contains(KeyModifiers::CONTROL) && key.code == KeyCode::Char('c') {
            let pressed = cancel::press();
            if pressed == Press::Quit {
                cancel::quit();
            }
            if pressed == Press::Stop {
                self.stopping = true;
            }
            if let Some(line) = cancel::describe(&pressed) {
                notice(&line);
            }
            return false;
        }
        if !matches!(key.code, KeyCode::Char(c) if c.is_ascii_digit()) {
            // A number being typed ends at any other key.
            self.digits.clear();
        }
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc | KeyCode::Backspace => {
                if self.screen != Screen::Hosts {
                    self.show(Screen::Hosts);
                } else if finished {
                    return true;
                } else {
                    notice("the run goes on: Ctrl-C shows where it stands, twice stops it");
                }
            }
            KeyCode::Char('g') => self.show(Screen::Groups),
            KeyCode::Char('d') => self.open_diff(),
            KeyCode::Char(' ') if self.screen == Screen::Hosts => {
                self.marked = if self.marked == self.selected {
                    None
                } else {
                    self.selected
                };
            }
            KeyCode::Char(c) if c.is_ascii_digit() && self.screen == Screen::Hosts => self.digit(c),
            KeyCode::Enter if self.screen == Screen::Hosts => {
                if let Some(number) = self.selected_number() {
                    self.show(Screen::Host(number));
                }
            }
            KeyCode::Up | KeyCode::Char('k') => self.move_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.move_by(1),
            KeyCode::PageUp => self.move_by(-(self.page as isize)),
            KeyCode::PageDown => self.move_by(self.page as isize),
            KeyCode::Home => match self.screen {
                Screen::Hosts => self.selected = self.board.rows().first().map(|r| r.number),
                _ => self.scroll = Scroll::At(0),
            },
            KeyCode::End | KeyCode::Char('f') => match self.screen {
                Screen::Hosts => self.selected = self.board.rows().last().map(|r| r.number),
                _ => self.scroll = Scroll::Follow,
            },
            _ => {}
        }
        false
    }

    fn show(&mut self, screen: Screen) {
        self.scroll = match screen {
            Screen::Host(_) => Scroll::Follow,
            _ => Scroll::At(0),
        };
        self.cached = None;
        self.screen = screen;
    }

    /// A digit picks the host of that number (digits typed within a second make one number)
    /// and opens it once the number is complete.
    fn digit(&mut self, c: char) {
        if self.last_digit.elapsed() > DIGIT_PAUSE || self.digits.len() >= 9 {
            self.digits.clear();
        }
        self.last_digit = Instant::now();
        self.digits.push(c);
        let hosts = self.board.len();
        if let Ok(number) = self.digits.parse::<usize>() {
            if (1..=hosts).contains(&number) {
                self.selected = Some(number);
                // No further digit can make another host's number: open it now; otherwise
                // the next digit, or Enter, decides.
                if number.saturating_mul(10) > hosts {
                    self.digits.clear();
                    self.show(Screen::Host(number));
                }
            }
        }
    }

    /// The selected host's number, the first row's when none is selected yet.
    fn selected_number(&self) -> Option<usize> {
        self.selected
            .or_else(|| self.board.rows().first().map(|row| row.number))
    }

    /// Diffs the marked host (or, with none marked, the first host of the largest group of
    /// finished hosts: what most hosts said) against the selected one.
    fn open_diff(&mut self) {
        let Some(selected) = self.selected_number() else {
            return;
        };
        let other = self.marked.filter(|m| *m != selected).or_else(|| {
            let groups = self.board.groups(HostState::is_done);
            let labels: Vec<String> = groups
                .iter()
                .flat_map(|g| g.labels.first().cloned())
                .collect();
            self.board
                .rows()
                .into_iter()
                .filter(|row| labels.contains(&row.label) && row.number != selected)
                .min_by_key(|row| {
                    labels
                        .iter()
                        .position(|l| *l == row.label)
                        .unwrap_or(usize::MAX)
                })
                .map(|row| row.number)
        });
        if let Some(other) = other {
            self.show(Screen::Diff(other, selected));
        } else {
            notice("no other host to compare with: mark one with Space");
        }
    }

    fn move_by(&mut self, delta: isize) {
        if self.screen == Screen::Hosts {
            let rows = self.board.rows();
            let at = self
                .selected
                .and_then(|n| rows.iter().position(|r| r.number == n))
                .unwrap_or(0);
            let to = at
                .saturating_add_signed(delta)
                .min(rows.len().saturating_sub(1));
            self.selected = rows.get(to).map(|r| r.number);
        } else {
            let from = match self.scroll {
                Scroll::At(line) => line,
                Scroll::Follow => self.shown_first,
            };
            self.scroll = Scroll::At(from.saturating_add_signed(delta));
        }
    }

    fn draw(&mut self, frame: &mut Frame, finished: bool) {
        let [head, body, foot] = Layout::vertical([
            Constraint::Length(1),
            Constraint::Min(1),
            Constraint::Length(1),
        ])
        .areas(frame.area());
        let rows = self.board.rows();
        frame.render_widget(Paragraph::new(header(&rows, finished)), head);
        self.page = usize::from(body.height.max(1));
        match self.screen.clone() {
            Screen::Hosts => self.draw_hosts(frame, body, &rows),
            Screen::Host(number) => {
                let (title, note, output) = host_text(&self.board, number);
                // Only the lines on screen are escaped and drawn: a host keeps up to 1 MiB.
                let raw = raw_lines(&output);
                let skip = usize::from(note.is_some());
                self.draw_text(frame, body, title, raw.len() + skip, |i| match &note {
                    Some(note) if i == 0 => note.clone(),
                    _ => Line::from(shown(raw[i - skip])),
                });
            }
            Screen::Groups => {
                let lines =
                    self.cached_lines(|board| group_lines(&board.groups(HostState::is_done)));
                let running = rows.iter().filter(|r| !r.state.is_done()).count();
                let title =
                    format!("output groups of the finished hosts ({running} still running)");
                self.draw_text(frame, body, title, lines.len(), |i| lines[i].clone());
            }
            Screen::Diff(a, b) => {
                let lines = self.cached_lines(|board| diff_lines(board, a, b));
                let name = |n: usize| {
                    rows.iter()
                        .find(|r| r.number == n)
                        .map(|r| visible(&r.label).into_owned())
                        .unwrap_or_default()
                };
                let title = format!("diff: - {} (#{a}) + {} (#{b})", name(a), name(b));
                self.draw_text(frame, body, title, lines.len(), |i| lines[i].clone());
            }
        }
        let footer = match current_notice() {
            Some(line) => Line::styled(
                visible(&line).into_owned(),
                Style::new().add_modifier(Modifier::BOLD),
            ),
            None => Line::styled(
                self.help(finished),
                Style::new().add_modifier(Modifier::DIM),
            ),
        };
        frame.render_widget(Paragraph::new(footer), foot);
    }

    fn help(&self, finished: bool) -> String {
        let leave = if finished {
            "q: close"
        } else {
            "Ctrl-C: status, twice: stop"
        };
        match self.screen {
            Screen::Hosts => format!(
                "Enter/number: host output  g: groups  Space: mark  d: diff marked/selected  {leave}"
            ),
            _ => format!("Up/Down/PgUp/PgDn/Home: scroll  End/f: follow  q/Esc: back  {leave}"),
        }
    }

    /// The groups or the diff: computed when shown and again every [`RECOMPUTE`].
    fn cached_lines(&mut self, make: impl Fn(&Board) -> Vec<Line<'static>>) -> Vec<Line<'static>> {
        match &self.cached {
            Some((lines, made)) if made.elapsed() < RECOMPUTE => lines.clone(),
            _ => {
                let lines = make(&self.board);
                self.cached = Some((lines.clone(), Instant::now()));
                lines
            }
        }
    }

    fn draw_hosts(&mut self, frame: &mut Frame, area: Rect, rows: &[Row]) {
        let widest = rows
            .iter()
            .map(|r| visible(&r.label).chars().count())
            .max()
            .unwrap_or(4)
            .clamp(4, 40);
        let table_rows: Vec<TableRow> = rows
            .iter()
            .map(|row| {
                let mark = if self.marked == Some(row.number) {
                    "*"
                } else {
                    " "
                };
                let (state, style) = state_cell(&row.state);
                let last = match &row.state {
                    HostState::Failed(reason) => reason.as_bytes().to_vec(),
                    _ => row.last_line.clone(),
                };
                TableRow::new(vec![
                    Cell::from(format!("{mark}{}", row.number)),
                    Cell::from(visible(&row.label).into_owned()),
                    Cell::from(state).style(style),
                    Cell::from(row.elapsed.map(elapsed).unwrap_or_default()),
                    Cell::from(shown(&last)),
                ])
            })
            .collect();
        let digits = rows.len().max(1).to_string().len() as u16 + 2;
        let table = Table::new(
            table_rows,
            [
                Constraint::Length(digits),
                Constraint::Length(widest as u16),
                Constraint::Length(14),
                Constraint::Length(7),
                Constraint::Min(10),
            ],
        )
        .header(
            TableRow::new(vec!["#", "host", "state", "time", "last line"])
                .style(Style::new().add_modifier(Modifier::BOLD)),
        )
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        let selected = self
            .selected
            .and_then(|n| rows.iter().position(|r| r.number == n));
        let mut state = TableState::default().with_selected(selected);
        frame.render_stateful_widget(table, area, &mut state);
    }

    /// Draws `count` lines (`line(i)` makes the i-th) under `title`, from the scroll position.
    fn draw_text(
        &mut self,
        frame: &mut Frame,
        area: Rect,
        title: String,
        count: usize,
        line: impl Fn(usize) -> Line<'static>,
    ) {
        let [top, text] = Layout::vertical([Constraint::Length(1), Constraint::Min(1)]).areas(area);
        frame.render_widget(
            Paragraph::new(Line::styled(
                title,
                Style::new().add_modifier(Modifier::BOLD),
            )),
            top,
        );
        let height = usize::from(text.height.max(1));
        let last_page = count.saturating_sub(height);
        let first = match self.scroll {
            Scroll::Follow => last_page,
            Scroll::At(line) if line >= last_page => {
                // Scrolled to the end: follow from now on, as `tail -f` readers expect.
                self.scroll = Scroll::Follow;
                last_page
            }
            Scroll::At(line) => line,
        };
        self.shown_first = first;
        let shown: Vec<Line> = (first..count.min(first + height)).map(line).collect();
        frame.render_widget(Paragraph::new(shown), text);
    }
}

/// The top line: the counts of each state.
fn header(rows: &[Row], finished: bool) -> Line<'static> {
    let count = |f: fn(&HostState) -> bool| rows.iter().filter(|r| f(&r.state)).count();
    let failed = count(HostState::is_failure);
    let done = count(HostState::is_done) - failed;
    let running = count(|s| matches!(s, HostState::Running | HostState::Connecting));
    let queued = count(|s| *s == HostState::Queued);
    let state = if finished { "finished" } else { "running" };
    Line::from(vec![
        Span::styled(
            format!("{} hosts {state}: ", rows.len()),
            Style::new().add_modifier(Modifier::BOLD),
        ),
        Span::styled(format!("{done} ok"), Style::new().fg(Color::Green)),
        Span::raw(format!(", {running} running, {queued} queued, ")),
        Span::styled(format!("{failed} failed"), Style::new().fg(Color::Red)),
    ])
}

/// A state in words and its colour.
fn state_cell(state: &HostState) -> (String, Style) {
    match state {
        HostState::Queued => (
            "queued".to_owned(),
            Style::new().add_modifier(Modifier::DIM),
        ),
        HostState::Connecting => ("connecting".to_owned(), Style::new().fg(Color::Cyan)),
        HostState::Running => ("running".to_owned(), Style::new().fg(Color::Yellow)),
        HostState::Exited { code: 0, how } => {
            (visible(how).into_owned(), Style::new().fg(Color::Green))
        }
        HostState::Exited { how, .. } => (visible(how).into_owned(), Style::new().fg(Color::Red)),
        HostState::Failed(_) => ("failed".to_owned(), Style::new().fg(Color::Red)),
    }
}

/// `1.2s`, `3m05s`, `2h07m`.
fn elapsed(time: Duration) -> String {
    let seconds = time.as_secs();
    match seconds {
        0..=59 => format!("{:.1}s", time.as_secs_f64()),
        60..=3599 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, (seconds / 60) % 60),
    }
}

/// Host bytes as one line of text a terminal cannot act on.
fn shown(bytes: &[u8]) -> String {
    let line = bytes.strip_suffix(b"\r").unwrap_or(bytes);
    visible(&String::from_utf8_lossy(line)).into_owned()
}

/// Host bytes as raw lines (a final newline does not start an empty line).
fn raw_lines(bytes: &[u8]) -> Vec<&[u8]> {
    let body = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    if body.is_empty() {
        return Vec::new();
    }
    body.split(|b| *b == b'\n').collect()
}

/// Host bytes as escaped lines.
fn text_lines(bytes: &[u8]) -> Vec<String> {
    raw_lines(bytes).into_iter().map(shown).collect()
}

/// Host `number`'s title line, the note saying how much of its output was dropped, if any,
/// and its output, raw.
fn host_text(board: &Board, number: usize) -> (String, Option<Line<'static>>, Vec<u8>) {
    let Some((label, output, dropped)) = board.host_output(number) else {
        return (format!("no host #{number}"), None, Vec::new());
    };
    let row = board.rows().into_iter().find(|r| r.number == number);
    let state = row
        .as_ref()
        .map(|r| match &r.state {
            HostState::Failed(reason) => format!("failed: {}", visible(reason)),
            other => state_cell(other).0,
        })
        .unwrap_or_default();
    let time = row.and_then(|r| r.elapsed).map(elapsed).unwrap_or_default();
    let title = format!("#{number} {}  {state}  {time}", visible(&label));
    let note = (dropped > 0).then(|| {
        Line::styled(
            format!("({dropped} earlier bytes were not kept)"),
            Style::new().add_modifier(Modifier::DIM),
        )
    });
    (title, note, output)
}

fn group_lines(groups: &[Group]) -> Vec<Line<'static>> {
    let mut lines = Vec::new();
    for group in groups {
        lines.push(Line::styled(
            format!(
                "---- {} ({}) ----",
                visible(&group.hostlist()),
                group.labels.len()
            ),
            Style::new().add_modifier(Modifier::BOLD),
        ));
        let text = text_lines(&group.output);
        let more = text.len().saturating_sub(MAX_GROUP_LINES);
        lines.extend(text.into_iter().take(MAX_GROUP_LINES).map(Line::from));
        if more > 0 {
            lines.push(Line::styled(
                format!("... {more} more lines (open a host to see them all)"),
                Style::new().add_modifier(Modifier::DIM),
            ));
        }
    }
    lines
}

fn diff_lines(board: &Board, a: usize, b: usize) -> Vec<Line<'static>> {
    let (Some((_, left, _)), Some((_, right, _))) = (board.host_output(a), board.host_output(b))
    else {
        return Vec::new();
    };
    let (left, right) = (text_lines(&left), text_lines(&right));
    let cut = left.len() > MAX_DIFF_LINES || right.len() > MAX_DIFF_LINES;
    let left = &left[left.len().saturating_sub(MAX_DIFF_LINES)..];
    let right = &right[right.len().saturating_sub(MAX_DIFF_LINES)..];
    let mut lines = Vec::new();
    if cut {
        lines.push(Line::styled(
            format!("(the last {MAX_DIFF_LINES} lines of each host are compared)"),
            Style::new().add_modifier(Modifier::DIM),
        ));
    }
    for (change, text) in diff(left, right) {
        let (mark, style) = match change {
            Change::Same => (' ', Style::new()),
            Change::Removed => ('-', Style::new().fg(Color::Red)),
            Change::Added => ('+', Style::new().fg(Color::Green)),
        };
        lines.push(Line::styled(format!("{mark} {text}"), style));
    }
    if lines.is_empty() {
        lines.push(Line::raw("(both hosts printed the same)"));
    }
    lines
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Change {
    Same,
    Removed,
    Added,
}

/// A line diff by longest common subsequence, after the common start and end are set
/// aside. Cost: the product of the two middles' lengths, which [`MAX_DIFF_LINES`] bounds.
fn diff<'a>(left: &'a [String], right: &'a [String]) -> Vec<(Change, &'a str)> {
    let start = left.iter().zip(right).take_while(|(l, r)| l == r).count();
    let end = left[start..]
        .iter()
        .rev()
        .zip(right[start..].iter().rev())
        .take_while(|(l, r)| l == r)
        .count();
    let (a, b) = (
        &left[start..left.len() - end],
        &right[start..right.len() - end],
    );
    // lcs[i][j]: the longest common subsequence of a[i..] and b[j..].
    let width = b.len() + 1;
    let mut lcs = vec![0u16; (a.len() + 1) * width];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i * width + j] = if a[i] == b[j] {
                lcs[(i + 1) * width + j + 1] + 1
            } else {
                lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
            };
        }
    }
    let mut out: Vec<(Change, &str)> = left[..start]
        .iter()
        .map(|l| (Change::Same, l.as_str()))
        .collect();
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push((Change::Same, &a[i]));
            i += 1;
            j += 1;
        } else if i < a.len()
            && (j == b.len() || lcs[(i + 1) * width + j] >= lcs[i * width + j + 1])
        {
            // Removals before additions, as diff(1) shows a changed line.
            out.push((Change::Removed, &a[i]));
            i += 1;
        } else {
            out.push((Change::Added, &b[j]));
            j += 1;
        }
    }
    out.extend(
        left[left.len() - end..]
            .iter()
            .map(|l| (Change::Same, l.as_str())),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owned(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| (*l).to_owned()).collect()
    }

    #[test]
    fn a_diff_keeps_common_lines_and_marks_the_rest() {
        let left = owned(&["a", "b", "c", "d"]);
        let right = owned(&["a", "x", "c", "d", "e"]);
        let changes: Vec<(Change, &str)> = diff(&left, &right);
        assert_eq!(
            changes,
            [
                (Change::Same, "a"),
                (Change::Removed, "b"),
                (Change::Added, "x"),
                (Change::Same, "c"),
                (Change::Same, "d"),
                (Change::Added, "e"),
            ]
        );
    }

    #[test]
    fn host_bytes_are_escaped_before_they_are_drawn() {
        assert_eq!(shown(b"\x1b[2Jgone\r"), "\\x1b[2Jgone");
        assert_eq!(text_lines(b"one\n\x07two\n"), ["one", "\\x07two"]);
        assert!(text_lines(b"").is_empty());
    }

    #[test]
    fn elapsed_times_read_at_a_glance() {
        assert_eq!(elapsed(Duration::from_millis(1200)), "1.2s");
        assert_eq!(elapsed(Duration::from_secs(185)), "3m05s");
        assert_eq!(elapsed(Duration::from_secs(7620)), "2h07m");
    }
}
