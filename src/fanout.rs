//! The fan-out engine: one job per host, at most `parallel` sessions in flight, each with its
//! own connect retries and deadline, all sharing one key fetch and one known_hosts load.
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

use crate::keysource::KeySource;
use crate::plan::HostPlan;
use crate::session::{self, ConnectError, Connection, HostKeyDb};

/// Limits of one fan-out run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutOptions {
    /// Sessions in flight at once (`-j`).
    pub parallel: usize,
    /// Deadline for one host, connection included (`--timeout`); None waits for the job.
    pub host_timeout: Option<Duration>,
    /// Extra connection attempts after a failure that may pass (`--retries`).
    pub retries: u32,
    /// First wait before a retry; doubles for each further one.
    pub backoff: Duration,
}

impl Default for FanoutOptions {
    fn default() -> FanoutOptions {
        FanoutOptions {
            parallel: 64,
            host_timeout: None,
            retries: 0,
            backoff: Duration::from_millis(500),
        }
    }
}

/// Why a host did not produce a job result.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error(
        "{host}: no result within {seconds}s (--timeout): the host or the command is too slow"
    )]
    Timeout { host: String, seconds: u64 },
    #[error("{host}: interrupted")]
    Cancelled { host: String },
    #[error("{host}: {reason}")]
    Job { host: String, reason: String },
}

/// What happened on one host.
#[derive(Debug)]
pub struct HostOutcome<T> {
    pub plan: HostPlan,
    pub result: Result<T, HostError>,
    pub duration: Duration,
}

/// Runs `job` on every host. The job receives an authenticated connection and the host's plan
/// and returns its result or a one-line reason.
pub async fn run<T, F, Fut>(
    plans: Vec<HostPlan>,
    keys: Arc<KeySource>,
    db: HostKeyDb,
    options: &FanoutOptions,
    job: F,
) -> Vec<HostOutcome<T>>
where
    T: Send + 'static,
    F: Fn(Connection, HostPlan) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, String>> + Send + 'static,
{
    let permits = Arc::new(Semaphore::new(options.parallel.max(1)));
    let job = Arc::new(job);
    let mut tasks = Vec::with_capacity(plans.len());
    for plan in plans {
        let permits = Arc::clone(&permits);
        let keys = Arc::clone(&keys);
        let db = db.clone();
        let job = Arc::clone(&job);
        let options = options.clone();
        tasks.push(tokio::spawn(async move {
            let label = plan.label.clone();
            // Waiting for a permit is not the host's time: its deadline starts with its turn.
            let permit = tokio::select! {
                permit = permits.acquire_owned() => permit.ok(),
                () = crate::cancel::cancelled() => None,
            };
            let started = Instant::now();
            let result = match permit {
                None => Err(HostError::Cancelled { host: label }),
                Some(_permit) => {
                    let work = one_host(&plan, &keys, &db, &options, job.as_ref());
                    let bounded = async {
                        match options.host_timeout {
                            Some(limit) => tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                                Err(HostError::Timeout {
                                    host: plan.label.clone(),
                                    seconds: limit.as_secs().max(1),
                                })
                            }),
                            None => work.await,
                        }
                    };
                    tokio::select! {
                        result = bounded => result,
                        () = crate::cancel::cancelled() => Err(HostError::Cancelled { host: plan.label.clone() }),
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

async fn one_host<T, F, Fut>(
    plan: &HostPlan,
    keys: &KeySource,
    db: &HostKeyDb,
    options: &FanoutOptions,
    job: &F,
) -> Result<T, HostError>
where
    F: Fn(Connection, HostPlan) -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let mut attempt = 0;
    let conn = loop {
        match session::connect(plan, keys, db).await {
            Ok(conn) => break conn,
            Err(err) if err.is_retryable() && attempt < options.retries => {
                let wait = options.backoff * 2u32.saturating_pow(attempt);
                crate::diag::debug(format_args!("{err}; retrying in {wait:?}"));
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(err) => return Err(HostError::Connect(err)),
        }
    };
    job(conn, plan.clone())
        .await
        .map_err(|reason| HostError::Job {
            host: plan.label.clone(),
            reason,
        })
}
