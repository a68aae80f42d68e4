//! Ctrl-C as a request to stop: long loops poll [`requested`] between SFTP requests and unwind
//! through their normal error paths, so temporary files are removed and summaries printed.
//!
//! Owns: the process-wide stop flag. Invariant: once set it stays set. Must not know: what is
//! being stopped.

use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static WAKE: Notify = Notify::const_new();

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

/// Sets the flag on the first Ctrl-C; a second Ctrl-C ends the process at once, as users
/// expect when a clean stop takes too long.
pub fn watch_ctrl_c() {
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            request();
            crate::term::diag::error(
                "interrupted: stopping after cleaning up (Ctrl-C again to quit now)",
            );
            if tokio::signal::ctrl_c().await.is_ok() {
                std::process::exit(130);
            }
        }
    });
}
