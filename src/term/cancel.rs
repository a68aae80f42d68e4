//! Ctrl-C as a request to stop: long loops poll [`requested`] between SFTP requests and unwind
//! through their normal error paths, so temporary files are removed and summaries printed.
//!
//! Owns: the process-wide stop flag and the stages of Ctrl-C. Without an account of the run
//! ([`account_with`]), the first Ctrl-C requests the stop and the next one ends the process.
//! A fan-out registers an account: then the first Ctrl-C only shows where the run stands, a
//! second one within [`CONFIRM_WINDOW`] requests the stop (a later one shows the account
//! again), and one more ends the process. The signal and a Ctrl-C key read in raw mode
//! (the live view) go through the same [`press`]. Invariant: once set, the stop flag stays
//! set. Must not know: what is being stopped or how the account is made.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static WAKE: Notify = Notify::const_new();

/// How soon a second Ctrl-C must follow the account for the run to stop.
pub const CONFIRM_WINDOW: Duration = Duration::from_secs(1);

pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
    WAKE.notify_waiters();
}

/// Completes once a stop was requested; for `select!` against work that cannot poll a flag.
pub async fn cancelled() {
    let notified = WAKE.notified();
    // Checked after creating the waiter, so a request between the two is not missed.
    if requested() {
        return;
    }
    notified.await;
}

pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Makes the account of a run, in one line.
type Account = Box<dyn Fn() -> String + Send>;
/// Shows a line to the user while something else owns the screen.
type Announce = Box<dyn Fn(&str) + Send>;

/// What the stages of Ctrl-C know about the run.
struct Stages {
    account: Option<Account>,
    /// When the account was last shown: a second Ctrl-C before [`CONFIRM_WINDOW`] stops.
    shown: Option<Instant>,
    announce: Option<Announce>,
    /// Run just before a Ctrl-C ends the process at once, to give the terminal back.
    before_quit: Option<fn()>,
}

static STAGES: Mutex<Stages> = Mutex::new(Stages {
    account: None,
    shown: None,
    announce: None,
    before_quit: None,
});

fn stages() -> std::sync::MutexGuard<'static, Stages> {
    // The stages hold no invariant a panic could break half-way.
    STAGES.lock().unwrap_or_else(PoisonError::into_inner)
}

/// From now on the first Ctrl-C shows `account()` instead of stopping.
pub fn account_with(account: impl Fn() -> String + Send + 'static) {
    stages().account = Some(Box::new(account));
}

/// From now on the lines Ctrl-C prints go to `announce` instead of stderr (the live view
/// shows them in its own screen), until [`announce_on_stderr`].
pub fn announce_with(announce: impl Fn(&str) + Send + 'static) {
    stages().announce = Some(Box::new(announce));
}

/// The lines Ctrl-C prints go to stderr again.
pub fn announce_on_stderr() {
    stages().announce = None;
}

/// `restore` runs before a Ctrl-C ends the process at once (it must be quick and must not
/// take locks the interrupted code may hold).
pub fn before_quit(restore: fn()) {
    stages().before_quit = Some(restore);
}

/// What one Ctrl-C did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Press {
    /// The first of two: where the run stands, in one line.
    Account(String),
    /// The stop was requested now.
    Stop,
    /// A stop was already requested: the process must end now.
    Quit,
}

/// One Ctrl-C, from the signal or from a key read in raw mode.
pub fn press() -> Press {
    let pressed = next_stage(&mut stages(), requested(), Instant::now());
    if pressed == Press::Stop {
        request();
    }
    pressed
}

/// The stage a Ctrl-C at `now` reaches, given whether a stop was `requested` before it.
fn next_stage(stages: &mut Stages, requested: bool, now: Instant) -> Press {
    if requested {
        return Press::Quit;
    }
    let confirming = stages
        .shown
        .is_some_and(|shown| now.saturating_duration_since(shown) <= CONFIRM_WINDOW);
    match &stages.account {
        Some(account) if !confirming => {
            let line = account();
            stages.shown = Some(now);
            Press::Account(line)
        }
        _ => Press::Stop,
    }
}

/// The line shown for `press`, if any.
pub fn describe(press: &Press) -> Option<String> {
    match press {
        Press::Account(line) => Some(format!(
            "{line} (Ctrl-C again within {}s to stop)",
            CONFIRM_WINDOW.as_secs()
        )),
        Press::Stop => {
            Some("interrupted: stopping after cleaning up (Ctrl-C again to quit now)".to_owned())
        }
        Press::Quit => None,
    }
}

/// Ends the process at once with 130, as a shell reports SIGINT, after the terminal
/// restorer registered with [`before_quit`].
pub fn quit() -> ! {
    // The restorer is copied out so that the lock is not held while it runs.
    let restore = stages().before_quit;
    if let Some(restore) = restore {
        restore();
    }
    std::process::exit(130)
}

/// Acts on SIGINT through [`press`] for the rest of the process: shows the account or the
/// stop on stderr (or where [`announce_with`] says), and quits on a Ctrl-C after the stop.
pub fn watch_ctrl_c() {
    tokio::spawn(async {
        // One listener for the whole run, so that a second SIGINT that arrives while the
        // first is handled is not lost between two listeners.
        let Ok(mut interrupts) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        else {
            return;
        };
        while interrupts.recv().await.is_some() {
            let pressed = press();
            match describe(&pressed) {
                Some(line) => {
                    let stages = stages();
                    match &stages.announce {
                        Some(announce) => announce(&line),
                        None => crate::term::diag::error(&line),
                    }
                }
                None => quit(),
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stages(account: bool) -> Stages {
        Stages {
            account: account.then(|| -> Account { Box::new(|| "done 1, queued 0".to_owned()) }),
            shown: None,
            announce: None,
            before_quit: None,
        }
    }

    #[test]
    fn without_an_account_the_first_ctrl_c_stops_and_the_next_quits() {
        let mut plain = stages(false);
        let now = Instant::now();
        assert_eq!(next_stage(&mut plain, false, now), Press::Stop);
        assert_eq!(next_stage(&mut plain, true, now), Press::Quit);
        assert_eq!(describe(&Press::Quit), None);
    }

    #[test]
    fn with_an_account_only_a_quick_second_ctrl_c_stops() {
        let mut fanout = stages(true);
        let start = Instant::now();
        let first = next_stage(&mut fanout, false, start);
        assert_eq!(first, Press::Account("done 1, queued 0".to_owned()));
        assert!(describe(&first).is_some_and(|l| l.contains("Ctrl-C again within 1s")));
        // Too late: the account again, and the window starts over.
        let late = start + CONFIRM_WINDOW + Duration::from_millis(100);
        assert!(matches!(
            next_stage(&mut fanout, false, late),
            Press::Account(_)
        ));
        let quick = late + Duration::from_millis(300);
        assert_eq!(next_stage(&mut fanout, false, quick), Press::Stop);
        assert_eq!(next_stage(&mut fanout, true, quick), Press::Quit);
    }
}
