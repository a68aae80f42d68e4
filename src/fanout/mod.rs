//! The fan-out engine: one job per host, at most `parallel` in flight, each with its own
//! connect retries and deadline, all sharing one key fetch and one known_hosts load.
//!
//! Owns: the concurrency bound (a semaphore), per-host deadlines, retry with exponential
//! back-off for connection failures that a retry can fix, and cancellation on Ctrl-C (no new
//! host starts; running jobs are dropped, which closes their sessions), and the same stop at
//! the first failed host when `--fail-fast` asks for it ([`Stop`]). Invariants: hosts take
//! their turns in input order; every host of the input yields exactly one [`HostOutcome`], in
//! input order; a dead or slow host costs at most its own deadline and never blocks another
//! host's progress. Must not know: what the job does (exec, copy) or how results are printed.

pub mod board;
pub mod limits;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{oneshot, watch, Semaphore};

use crate::key::source::KeySource;
use crate::plan::{FanoutOptions, HostPlan};
use crate::ssh::session::{self, ConnectError, Connection, HostKeyDb, SessionEnd};

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
    Lost(SessionEnd),
    #[error(transparent)]
    Job(E),
    /// `--fail-fast`: another host failed before this one got its turn.
    #[error("never started: another host failed first (--fail-fast)")]
    NotStarted,
    /// `--fail-fast`: another host failed while this one ran, and its session was closed.
    #[error("stopped: another host failed first (--fail-fast)")]
    Stopped,
}

impl<E> HostError<E> {
    /// True when the message already names the host (connection failures name the host and
    /// port), so that a renderer does not name it twice.
    pub fn names_host(&self) -> bool {
        matches!(self, HostError::Connect(err) if err.names_host())
    }
}

/// A run's stop at its first failed host (`--fail-fast`). Disarmed, it never fires. Armed,
/// it fires at the first host whose result is an error, or whose job calls
/// [`Stop::host_failed`] (a command's non-zero exit status is a failure only the job can see);
/// from then on no host starts ([`HostError::NotStarted`]) and the running ones are dropped,
/// which closes their sessions ([`HostError::Stopped`]).
#[derive(Debug, Clone)]
pub struct Stop {
    fired: Option<Arc<watch::Sender<bool>>>,
}

impl Stop {
    /// A stop that fires at the first failure when `armed`, and never otherwise.
    pub fn new(armed: bool) -> Stop {
        Stop {
            fired: armed.then(|| Arc::new(watch::Sender::new(false))),
        }
    }

    /// Reports a failed host: an armed stop fires.
    pub fn host_failed(&self) {
        if let Some(fired) = &self.fired {
            fired.send_replace(true);
        }
    }

    /// Whether the stop has fired.
    pub fn has_fired(&self) -> bool {
        self.fired.as_ref().is_some_and(|fired| *fired.borrow())
    }

    /// Resolves once the stop fires; never, when it is disarmed.
    async fn fired(&self) {
        match &self.fired {
            // The sender lives as long as `self`, so `wait_for` ends only by firing.
            Some(fired) => {
                let _ = fired.subscribe().wait_for(|fired| *fired).await;
            }
            None => std::future::pending().await,
        }
    }
}

/// The hosts that never started because a `--fail-fast` run stopped first, in input order.
pub fn never_started<T, E>(outcomes: &[HostOutcome<T, E>]) -> Vec<&str> {
    outcomes
        .iter()
        .filter(|o| matches!(o.result, Err(HostError::NotStarted)))
        .map(|o| o.plan.label.as_str())
        .collect()
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
/// With `options.fail_fast`, the first failed host stops the run ([`Stop`]).
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
    for_each_until(items, options, Stop::new(options.fail_fast), work).await
}

/// [`for_each`] with the caller's [`Stop`], which its jobs can also fire.
pub async fn for_each_until<X, T, E, F, Fut>(
    items: Vec<(HostPlan, X)>,
    options: &FanoutOptions,
    stop: Stop,
    work: F,
) -> Vec<HostOutcome<T, E>>
where
    X: Send + 'static,
    T: Send + 'static,
    E: Send + 'static,
    F: Fn(HostPlan, X) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<T, HostError<E>>> + Send + 'static,
{
    let parallel =
        limits::parallel_within_limits(options.parallel, items.iter().map(|(plan, _)| plan));
    let permits = Arc::new(Semaphore::new(parallel.max(1)));
    let work = Arc::new(work);
    let mut tasks = Vec::with_capacity(items.len());
    // Hosts take their turns in input order, as pdsh's window slides, so that the hosts a
    // `--fail-fast` stop leaves out are the last ones: each task queues for a permit only
    // once the one before it has its permit or gave up waiting (and so dropped `queued`).
    let mut previous: Option<oneshot::Receiver<()>> = None;
    for (plan, item) in items {
        let permits = Arc::clone(&permits);
        let work = Arc::clone(&work);
        let host_timeout = options.host_timeout;
        let stop = stop.clone();
        let (queued, next_may_queue) = oneshot::channel::<()>();
        let may_queue = previous.replace(next_may_queue);
        tasks.push(tokio::spawn(async move {
            // Waiting for a permit is not the host's time: its deadline starts with its turn.
            let turn = async {
                if let Some(may_queue) = may_queue {
                    // Ends when the host before has queued: a sent value or a dropped sender.
                    let _ = may_queue.await;
                }
                permits.acquire_owned().await.ok()
            };
            let permit = tokio::select! {
                permit = turn => permit,
                () = crate::term::cancel::cancelled() => None,
                () = stop.fired() => None,
            };
            drop(queued);
            let started = Instant::now();
            let result = match permit {
                // A permit freed by a host that the stop closed may be taken before this
                // task sees the stop: it is checked again before the host starts.
                _ if stop.has_fired() => Err(HostError::NotStarted),
                None => Err(HostError::Cancelled),
                Some(_permit) => {
                    board::turn(&plan.label);
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
                    // A job that fires the stop itself returns its own result at once:
                    // that result is polled first, so its host is not reported as stopped.
                    let result = tokio::select! {
                        biased;
                        result = bounded => result,
                        () = crate::term::cancel::cancelled() => Err(HostError::Cancelled),
                        () = stop.fired() => Err(HostError::Stopped),
                    };
                    // Ctrl-C stops every host anyway, and its hosts are reported as such.
                    if matches!(&result, Err(err) if !matches!(err, HostError::Cancelled)) {
                        stop.host_failed();
                    }
                    result
                }
            };
            board::settle(&plan.label, &result);
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

/// The keepalive interval of a fan-out's sessions when the configuration sets none: with
/// ServerAliveCountMax's default of 3, a host that stops answering after login (a frozen
/// sshd, a path that drops packets without a reset) fails by name after about 45 seconds
/// instead of holding the run for ever (or for BatchMode's 300 s, three times), while a
/// command that runs for hours is never cut off: sshd answers keepalives while it runs.
/// `ServerAliveInterval 0` still turns them off.
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(15);

/// `plan` with [`DEFAULT_KEEPALIVE_INTERVAL`] when its configuration sets no interval.
fn with_default_keepalive(mut plan: HostPlan) -> HostPlan {
    if plan.server_alive_interval.is_none() {
        plan.server_alive_interval = Some(DEFAULT_KEEPALIVE_INTERVAL);
    }
    plan
}

/// Logs in to every host (with `--retries` for failures a retry can fix) and runs `job` on
/// the authenticated connection, through [`for_each`]. Sessions send keepalives by default
/// ([`DEFAULT_KEEPALIVE_INTERVAL`]).
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
    run_until(plans, keys, db, options, Stop::new(options.fail_fast), job).await
}

/// [`run`] with the caller's [`Stop`], which `job` can fire for a failure only it sees.
pub async fn run_until<T, E, F, Fut>(
    plans: Vec<HostPlan>,
    keys: Arc<KeySource>,
    db: HostKeyDb,
    options: &FanoutOptions,
    stop: Stop,
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
    let gates = Arc::new(limits::JumpGates::default());
    let items = plans
        .into_iter()
        .map(|plan| (with_default_keepalive(plan), ()))
        .collect();
    for_each_until(items, options, stop, move |plan, ()| {
        let keys = Arc::clone(&keys);
        let db = db.clone();
        let job = Arc::clone(&job);
        let retry = retry.clone();
        let gates = Arc::clone(&gates);
        async move {
            let conn = connect_with_retries(&plan, &keys, &db, &retry, &gates)
                .await
                .map_err(HostError::Connect)?;
            let ended = conn.ended();
            unless_session_lost(job(conn, plan), ended).await
        }
    })
    .await
}

/// How long a job may go on after its session ended, to finish with what already arrived
/// (an exit status, the last SFTP replies) before its host is failed with the session's end.
const GRACE_AFTER_SESSION_END: Duration = Duration::from_secs(2);

/// `job`'s result, unless its session ends under it: a job waiting on a channel whose
/// server froze (a full send window, an SFTP reply that never comes) would otherwise wait
/// for its own timeouts, one after the other. Jobs that finish in the grace after the end
/// keep their result when it is a success; a failure then is reported as the session's
/// end, which says why.
async fn unless_session_lost<T, E>(
    job: impl Future<Output = Result<T, E>>,
    ended: impl Future<Output = SessionEnd>,
) -> Result<T, HostError<E>> {
    tokio::pin!(job);
    let end = tokio::select! {
        result = &mut job => return result.map_err(HostError::Job),
        end = ended => end,
    };
    match tokio::time::timeout(GRACE_AFTER_SESSION_END, job).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) if end == SessionEnd::ClosedByServer => Err(HostError::Job(err)),
        Ok(Err(_)) | Err(_) => Err(HostError::Lost(end)),
    }
}

/// One login, tried again after `options.backoff` (doubling) while the failure is one a retry
/// can fix and `options.retries` allows; each attempt first waits for its turn at the jump
/// hosts on its way ([`limits::JumpGates`]), outside its ConnectTimeout.
async fn connect_with_retries(
    plan: &HostPlan,
    keys: &KeySource,
    db: &HostKeyDb,
    options: &FanoutOptions,
    gates: &limits::JumpGates,
) -> Result<Connection, ConnectError> {
    let mut attempt = 0;
    loop {
        let login = {
            let _paced = gates.enter(plan).await;
            session::connect(plan, keys, db).await
        };
        match login {
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::plan::{test_keys, test_plan};

    #[test]
    fn fanout_sessions_send_keepalives_unless_configured() {
        let unset = test_plan("h", 22);
        assert_eq!(unset.server_alive_interval, None);
        assert_eq!(
            with_default_keepalive(unset).keepalive_interval(),
            Some(DEFAULT_KEEPALIVE_INTERVAL)
        );
        for configured in [Duration::ZERO, Duration::from_secs(2)] {
            let mut plan = test_plan("h", 22);
            plan.server_alive_interval = Some(configured);
            assert_eq!(
                with_default_keepalive(plan).server_alive_interval,
                Some(configured)
            );
        }
    }

    fn options(parallel: usize, host_timeout: Option<Duration>) -> FanoutOptions {
        FanoutOptions {
            parallel,
            host_timeout,
            retries: 0,
            backoff: Duration::from_millis(10),
            fail_fast: false,
        }
    }

    #[tokio::test]
    async fn outcomes_come_in_input_order_with_at_most_parallel_running() {
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let items: Vec<(HostPlan, u64)> = (0..12)
            .map(|i| (test_plan(&format!("h{i}"), 22), 12 - i))
            .collect();
        let (running_in, most_in) = (Arc::clone(&running), Arc::clone(&most));
        let outcomes = for_each(items, &options(3, None), move |plan, delay| {
            let (running, most) = (Arc::clone(&running_in), Arc::clone(&most_in));
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                // Later hosts finish first, so the order of the outcomes must be restored.
                tokio::time::sleep(Duration::from_millis(delay * 5)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Ok::<_, HostError<std::convert::Infallible>>(plan.label)
            }
        })
        .await;
        let labels: Vec<String> = outcomes
            .into_iter()
            .map(|o| o.result.expect("every item succeeds"))
            .collect();
        let expected: Vec<String> = (0..12).map(|i| format!("h{i}")).collect();
        assert_eq!(labels, expected);
        assert_eq!(most.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_host_past_its_deadline_fails_alone() {
        let items = vec![
            (test_plan("fast", 22), Duration::ZERO),
            (test_plan("slow", 22), Duration::from_secs(600)),
            (test_plan("also-fast", 22), Duration::ZERO),
        ];
        let outcomes = for_each(
            items,
            &options(8, Some(Duration::from_millis(200))),
            |_plan, delay| async move {
                tokio::time::sleep(delay).await;
                Ok::<(), HostError<std::convert::Infallible>>(())
            },
        )
        .await;
        assert!(outcomes[0].result.is_ok());
        assert!(matches!(
            outcomes[1].result,
            Err(HostError::Timeout { seconds: 1 })
        ));
        assert!(outcomes[2].result.is_ok());
    }

    #[tokio::test]
    async fn a_job_error_is_the_hosts_failure_and_does_not_name_the_host() {
        let items = vec![(test_plan("h1", 22), ())];
        let outcomes = for_each(items, &options(1, None), |_plan, ()| async {
            Err::<(), _>(HostError::Job(std::io::Error::other("disk full")))
        })
        .await;
        let err = outcomes[0].result.as_ref().expect_err("the job failed");
        assert!(!err.names_host());
        assert_eq!(err.to_string(), "disk full");
    }

    /// Hosts h0..h5, two at a time: h0 fails at once, h1 would run for ten minutes.
    fn fail_fast_items() -> Vec<(HostPlan, usize)> {
        (0..6)
            .map(|i| (test_plan(&format!("h{i}"), 22), i))
            .collect()
    }

    #[tokio::test]
    async fn fail_fast_stops_the_running_and_starts_no_other_host() {
        let mut fail_fast = options(2, None);
        fail_fast.fail_fast = true;
        let started = std::time::Instant::now();
        let outcomes = for_each(fail_fast_items(), &fail_fast, |_plan, i| async move {
            if i == 0 {
                // Long enough for h1 to be running when h0 fails.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Err(HostError::Job("disk full"));
            }
            tokio::time::sleep(Duration::from_secs(600)).await;
            Ok(())
        })
        .await;
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "h1 was not stopped"
        );
        assert!(matches!(
            outcomes[0].result,
            Err(HostError::Job("disk full"))
        ));
        assert!(matches!(outcomes[1].result, Err(HostError::Stopped)));
        assert_eq!(never_started(&outcomes), ["h2", "h3", "h4", "h5"]);
    }

    #[tokio::test]
    async fn a_job_can_fire_the_stop_and_keep_its_own_result() {
        let mut fail_fast = options(2, None);
        fail_fast.fail_fast = true;
        let stop = Stop::new(true);
        let job_stop = stop.clone();
        let outcomes = for_each_until(fail_fast_items(), &fail_fast, stop, move |_plan, i| {
            let stop = job_stop.clone();
            async move {
                if i == 0 {
                    // A command that ran and exited 1: a result, and a failure only the job sees.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    stop.host_failed();
                    return Ok::<_, HostError<std::convert::Infallible>>(1);
                }
                tokio::time::sleep(Duration::from_secs(600)).await;
                Ok(0)
            }
        })
        .await;
        assert!(matches!(outcomes[0].result, Ok(1)));
        assert!(matches!(outcomes[1].result, Err(HostError::Stopped)));
        assert_eq!(never_started(&outcomes).len(), 4);
    }

    #[tokio::test]
    async fn without_fail_fast_a_failure_stops_nothing() {
        let outcomes = for_each(
            fail_fast_items(),
            &options(2, None),
            |_plan, i| async move {
                if i == 0 {
                    return Err(HostError::Job("disk full"));
                }
                Ok(())
            },
        )
        .await;
        assert!(outcomes[1..].iter().all(|o| o.result.is_ok()));
        assert!(!Stop::new(false).has_fired());
    }

    #[tokio::test]
    async fn a_refused_login_is_a_connection_failure_after_every_retry() {
        // A port that was just free: nothing listens there, so the kernel refuses at once.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let plans = vec![test_plan("127.0.0.1", port)];
        let db = HostKeyDb::load(&plans, []).expect("no known_hosts file to read");
        let keys = Arc::new(test_keys());
        let attempts = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&attempts);
        let mut retrying = options(1, None);
        retrying.retries = 2;
        let outcomes = run(plans, keys, db, &retrying, move |_conn, _plan| {
            counted.fetch_add(1, Ordering::SeqCst);
            async { Ok::<(), std::convert::Infallible>(()) }
        })
        .await;
        let err = outcomes[0].result.as_ref().expect_err("nothing listens");
        assert!(
            matches!(err, HostError::Connect(ConnectError::Refused { port: p, .. }) if *p == port),
            "{err}"
        );
        assert!(err.names_host());
        assert_eq!(attempts.load(Ordering::SeqCst), 0, "the job never ran");
    }
}
