//! What a command fan-out adds around each host's command: its output files (`--outdir`,
//! `--errdir`) and the shared stdin (`--stdin-all`).
//!
//! Owns: the order of one host's extras: it joins the stdin window before its command starts
//! (or is refused), its files take their final names only once the command ended, and a
//! stdin that failed to read fails the host. Must not know: how output is shown (the caller's
//! sink) or how the fan-out schedules hosts.

use std::sync::Arc;

use crate::ssh::exec::{self, ExecError, ExecRequest, OutputSink, RemoteExit};
use crate::ssh::outdir::OutputFiles;
use crate::ssh::session::Connection;
use crate::ssh::stdin_all::{SharedStdin, WINDOW};

/// A fan-out's extras for every host; neither set, a host's command runs as `exec::run`.
#[derive(Clone)]
pub struct HostIo {
    pub files: Option<Arc<OutputFiles>>,
    pub stdin: Option<Arc<SharedStdin>>,
}

impl HostIo {
    /// The run's exit status once a host's file could not be written: ssh's 255 for its own
    /// failure (each file said why in its own line), unless Ctrl-C's 130.
    pub fn exit_status(&self, code: u8) -> u8 {
        let failed = self.files.as_ref().is_some_and(|files| files.failed());
        if failed && code != 130 {
            255
        } else {
            code
        }
    }

    /// Runs `request` on `conn` with this run's extras, showing the output through `sink`.
    pub async fn run(
        &self,
        conn: &Connection,
        request: &ExecRequest,
        sink: &mut dyn OutputSink,
    ) -> Result<RemoteExit, ExecError> {
        let feed = match &self.stdin {
            Some(shared) => {
                let member = shared
                    .join(&conn.label)
                    .map_err(|_| ExecError::StdinMissed {
                        host: conn.label.clone(),
                        window_mib: WINDOW / (1024 * 1024),
                    })?;
                let feed: exec::StdinFeed = Box::new(move |writer| Box::pin(member.feed(writer)));
                Some(feed)
            }
            None => None,
        };
        let (exit, files) = match &self.files {
            Some(files) => {
                let mut tee = files.tee(&conn.label, sink);
                (run_with(conn, request, feed, &mut tee).await?, Some(tee))
            }
            None => (run_with(conn, request, feed, sink).await?, None),
        };
        if let Some(reason) = self.stdin.as_ref().and_then(|s| s.read_error()) {
            return Err(ExecError::StdinRead {
                host: conn.label.clone(),
                reason,
            });
        }
        if let Some(files) = files {
            files.commit();
        }
        Ok(exit)
    }
}

async fn run_with(
    conn: &Connection,
    request: &ExecRequest,
    feed: Option<exec::StdinFeed>,
    sink: &mut dyn OutputSink,
) -> Result<RemoteExit, ExecError> {
    match feed {
        Some(feed) => exec::run_fed(conn, request, feed, sink).await,
        None => exec::run(conn, request, sink).await,
    }
}
