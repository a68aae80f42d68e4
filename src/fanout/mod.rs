//! The fan-out engine: one job per host, at most `parallel` in flight, each with its own
//! connect retries and deadline, all sharing one key fetch and one known_hosts load.
//!
//! Owns: the concurrency bound (a semaphore), per-host deadlines, retry with exponential
//! back-off for connection failures that a retry can fix, and cancellation on Ctrl-C (no new
//! host starts; running jobs are dropped, which closes their sessions). Invariants: every host
//! of the input yields exactly one [`HostOutcome`], in input order; a dead or slow host costs
//! at most its own deadline and never blocks another host's progress. Must not know: what the
//! job does (exec, copy) or how results are printed.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::key::source::KeySource;
use crate::plan::{FanoutOptions, HostPlan};
use crate::ssh::session::{self, ConnectError, Connection, HostKeyDb};

/// Why a host produced no job result. `E` is the job's own error type.
#[derive(Debug, thiserror::Error)]
pub enum HostError<E> {
    #[error(transparent)]
    Connect(ConnectError),
    #[error("no result within {seconds}s (--timeout): the host or the command is too slow")]
    Timeout { seconds: u64 },
    #[error("interrupted")]
    Cancelled,
    #[error(transparent)]
    Job(E),
}

impl<E> HostError<E> {
    /// True when the message already names the host (connection failures name the host and
    /// port), so that a renderer does not name it twice.
    pub fn names_host(&self) -> bool {
        matches!(self, HostError::Connect(err) if err.names_host())
    }
}

/// What happened on one host.
#[derive(Debug)]
pub struct HostOutcome<T, E> {
    pub plan: HostPlan,
    pub result: Result<T, HostError<E>>,
    pub duration: Duration,
}

/// Runs `work` for every item, each with the plan of the host it concerns: at most
/// `options.parallel` at once, each bounded by `options.host_timeout` from the moment it gets
/// its turn, all stopped by Ctrl-C (no new item starts; running ones are dropped, which closes
/// whatever sessions they hold). This is the one parallel executor of the crate: logins
/// ([`run`]), host-key probes and work on sessions that are already open all go through it.
pub async fn for_each<X, T, E, F, Fut>(
    items: Vec<(HostPlan, X)>,
    options: &FanoutOptions,
    work: F,
) -> Vec<HostOutcome<T, E>>
where
    X: Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
    F: Fn(HostPlan, X) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, HostError<E>>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(options.parallel.max(1)));
    let work = Arc::new(work);
    let mut tasks = Vec::with_capacity(items.len());
    for (plan, item) in items {
        let permits = Arc::clone(&permits);
        let work = Arc::clone(&work);
        let host_timeout = options.host_timeout;
        tasks.push(tokio::spawn(async move {
            // Waiting for a permit is not the host's time: its deadline starts with its turn.
            let permit = tokio::select! {
                permit = permits.acquire_owned() => permit.ok(),
                () = crate::term::cancel::cancelled() => None,
            };
            let started = Instant::now();
            let result = match permit {
                None => Err(HostError::Cancelled),
                Some(_permit) => {
                    let job = work(plan.clone(), item);
                    let bounded = async {
                        match host_timeout {
                            Some(limit) => tokio::time::timeout(limit, job).await.unwrap_or(Err(
                                HostError::Timeout {
                                    seconds: limit.as_secs().max(1),
                                },
                            )),
                            None => job.await,
                        }
                    };
                    tokio::select! {
                        result = bounded => result,
                        () = crate::term::cancel::cancelled() => Err(HostError::Cancelled),
                    }
                }
            };
            HostOutcome {
                plan,
                result,
                duration: started.elapsed(),
            }
        }));
    }
    let mut outcomes = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(outcome) => outcomes.push(outcome),
            // A task only fails to join if it panicked; that is a bug, and hiding it as a host
            // failure would be worse than stopping here.
            Err(err) => std::panic::resume_unwind(err.into_panic()),
        }
    }
    outcomes
}

/// Logs in to every host (with `--retries` for failures a retry can fix) and runs `job` on
/// the authenticated connection, through [`for_each`].
pub async fn run<T, E, F, Fut>(
    plans: Vec<HostPlan>,
    keys: Arc<KeySource>,
    db: HostKeyDb,
    options: &FanoutOptions,
    job: F,
) -> Vec<HostOutcome<T, E>>
where
    T: Send + 'static,
    E: Send + 'static,
    F: Fn(Connection, HostPlan) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, E>> + Send + 'static,
{
    let job = Arc::new(job);
    let retry = options.clone();
    let items = plans.into_iter().map(|plan| (plan, ())).collect();
    for_each(items, options, move |plan, ()| {
        let keys = Arc::clone(&keys);
        let db = db.clone();
        let job = Arc::clone(&job);
        let retry = retry.clone();
        async move {
            let conn = connect_with_retries(&plan, &keys, &db, &retry)
                .await
                .map_err(HostError::Connect)?;
            job(conn, plan).await.map_err(HostError::Job)
        }
    })
    .await
}

/// One login, tried again after `options.backoff` (doubling) while the failure is one a retry
/// can fix and `options.retries` allows.
async fn connect_with_retries(
    plan: &HostPlan,
    keys: &KeySource,
    db: &HostKeyDb,
    options: &FanoutOptions,
) -> Result<Connection, ConnectError> {
    let mut attempt = 0;
    loop {
        match session::connect(plan, keys, db).await {
            Ok(conn) => return Ok(conn),
            Err(err) if err.is_retryable() && attempt < options.retries => {
                let wait = options.backoff * 2u32.saturating_pow(attempt);
                crate::term::diag::debug(format_args!("{err}; retrying in {wait:?}"));
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(err) => return Err(err),
        }
    }
}
