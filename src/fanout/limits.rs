//! What a fan-out may open at once on this machine and on the hosts it goes through.
//!
//! Owns: raising the open-file soft limit to the hard limit, fitting `-j` under it (with one
//! line when it does not fit), and pacing logins through a shared jump host so that they stay
//! under sshd's default `MaxStartups 10:30:100`. Invariants: the number of sessions in flight
//! never needs more descriptors than the limit allows; at most [`JUMP_HOST_STARTUPS`] logins
//! through one jump host are unauthenticated at once within a run. Must not know: what runs on
//! the sessions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use nix::sys::resource::{getrlimit, setrlimit, Resource};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::plan::{HostPlan, Route};

/// Descriptors kept free for everything that is not a session: the runtime's epoll and
/// eventfd, standard streams, the key fetch's HTTPS connection, the file being copied, the
/// known_hosts and config files read on demand.
const RESERVED_FDS: u64 = 64;

/// Logins through one jump host that may be under way at once. sshd's default
/// `MaxStartups 10:30:100` starts dropping unauthenticated connections at random once 10
/// are open, and a fan-out through a bastion opens one connection to it per destination;
/// staying below 10 also leaves room for other users' logins to the bastion.
pub const JUMP_HOST_STARTUPS: usize = 8;

/// The descriptors one session to `plan` holds: its socket, a local file (a gather's
/// destination, an upload's source), one socket per jump host on the way, and the three
/// pipes of a ProxyCommand.
pub fn descriptors_per_session(plan: &HostPlan) -> u64 {
    let mut count = 2;
    let mut route = &plan.route;
    while let Route::Jump(hop) = route {
        count += 1;
        route = &hop.route;
    }
    if matches!(route, Route::Command(_)) {
        count += 3;
    }
    count
}

/// Raises the open-file soft limit to the hard limit and returns the limit now in effect;
/// a fan-out of hundreds of sessions needs more than the usual soft limit of 1024.
pub fn raise_open_file_limit() -> u64 {
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                hard
            } else {
                soft
            }
        }
        Ok((soft, _)) => soft,
        // getrlimit cannot fail for a valid resource; were it to, assume the common default
        // rather than stop the run.
        Err(_) => 1024,
    }
}

/// How many sessions fit at once when each holds `per_session` descriptors under `limit`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fit {
    pub parallel: usize,
    /// Descriptors `requested` sessions would need, when that is more than the limit.
    pub needed: Option<u64>,
}

pub fn fit_parallel(requested: usize, per_session: u64, limit: u64) -> Fit {
    let per_session = per_session.max(1);
    let needed = (requested as u64)
        .saturating_mul(per_session)
        .saturating_add(RESERVED_FDS);
    if needed <= limit {
        return Fit {
            parallel: requested,
            needed: None,
        };
    }
    let room = limit.saturating_sub(RESERVED_FDS) / per_session;
    Fit {
        parallel: usize::try_from(room)
            .unwrap_or(usize::MAX)
            .clamp(1, requested.max(1)),
        needed: Some(needed),
    }
}

/// `requested` sessions at once, or as many as the open-file limit allows for `plans`, with
/// one line saying so when it is fewer.
pub fn parallel_within_limits<'a>(
    requested: usize,
    plans: impl IntoIterator<Item = &'a HostPlan>,
) -> usize {
    let per_session = plans
        .into_iter()
        .map(descriptors_per_session)
        .max()
        .unwrap_or(1);
    let limit = raise_open_file_limit();
    let fit = fit_parallel(requested, per_session, limit);
    // Said once per process: a rotation runs several fan-outs over the same hosts.
    static SAID: AtomicBool = AtomicBool::new(false);
    if let Some(needed) = fit.needed.filter(|_| !SAID.swap(true, Ordering::Relaxed)) {
        crate::term::diag::warn(format_args!(
            "-j {requested} needs about {needed} open files, more than this process may open \
             ({limit}, the hard limit of `ulimit -n`): running {} hosts at once; raise the \
             limit (limits.conf, systemd LimitNOFILE) for more",
            fit.parallel
        ));
    }
    fit.parallel
}

/// The jump hosts `plan` goes through, as `host:port`, sorted so that every login takes
/// their gates in the same order.
fn jump_hosts(plan: &HostPlan) -> Vec<String> {
    let mut hops = Vec::new();
    let mut route = &plan.route;
    while let Route::Jump(hop) = route {
        hops.push(format!("{}:{}", hop.hostname, hop.port));
        route = &hop.route;
    }
    hops.sort();
    hops.dedup();
    hops
}

/// One gate per jump host, shared by the logins of a run.
#[derive(Debug, Default)]
pub struct JumpGates {
    gates: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl JumpGates {
    /// Waits until a login to `plan` may start without exceeding [`JUMP_HOST_STARTUPS`] on
    /// any jump host on its way; the login holds the permits until it has authenticated.
    pub async fn enter(&self, plan: &HostPlan) -> Vec<OwnedSemaphorePermit> {
        let mut permits = Vec::new();
        for hop in jump_hosts(plan) {
            let gate = {
                let mut gates = self
                    .gates
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner());
                Arc::clone(
                    gates
                        .entry(hop)
                        .or_insert_with(|| Arc::new(Semaphore::new(JUMP_HOST_STARTUPS))),
                )
            };
            // The semaphore is never closed, so acquiring can only wait, not fail.
            if let Ok(permit) = gate.acquire_owned().await {
                permits.push(permit);
            }
        }
        permits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_fits_under_the_open_file_limit() {
        // (requested, per session, limit, parallel, needed)
        let cases = [
            (64, 2, 1024, 64, None),
            (480, 2, 1024, 480, None),
            (1000, 2, 1024, 480, Some(2064)),
            (1000, 5, 1024, 192, Some(5064)),
            (1000, 2, 1_048_576, 1000, None),
            (10, 2, 10, 1, Some(84)),
            (0, 2, 10, 1, Some(64)),
        ];
        for (requested, per_session, limit, parallel, needed) in cases {
            assert_eq!(
                fit_parallel(requested, per_session, limit),
                Fit { parallel, needed },
                "-j {requested}, {per_session} per session, limit {limit}"
            );
        }
    }

    fn through(hops: &[&str], host: &str) -> HostPlan {
        let mut plan = crate::plan::test_plan(host, 22);
        for hop in hops.iter().rev() {
            let mut jump = crate::plan::test_plan(hop, 22);
            jump.route = std::mem::replace(&mut plan.route, Route::Direct);
            plan.route = Route::Jump(Box::new(jump));
        }
        plan
    }

    #[test]
    fn descriptors_count_every_hop_and_a_proxy_commands_pipes() {
        let mut command = crate::plan::test_plan("a", 22);
        command.route = Route::Command("nc %h %p".to_owned());
        let cases = [
            (crate::plan::test_plan("a", 22), 2),
            (through(&["bastion"], "a"), 3),
            (through(&["outer", "inner"], "a"), 4),
            (command, 5),
        ];
        for (plan, expected) in cases {
            assert_eq!(descriptors_per_session(&plan), expected, "{:?}", plan.route);
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn at_most_the_startup_limit_of_logins_pass_one_jump_host_at_once() {
        let gates = Arc::new(JumpGates::default());
        let inside = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut logins = Vec::new();
        for i in 0..40 {
            let gates = Arc::clone(&gates);
            let inside = Arc::clone(&inside);
            let most = Arc::clone(&most);
            // Half go through one bastion, the rest through a chain that ends at it too.
            let plan = if i % 2 == 0 {
                through(&["bastion"], &format!("10.0.0.{i}"))
            } else {
                through(&["outer", "bastion"], &format!("10.0.0.{i}"))
            };
            logins.push(tokio::spawn(async move {
                let _permits = gates.enter(&plan).await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for login in logins {
            login.await.expect("a login task");
        }
        assert_eq!(most.load(Ordering::SeqCst), JUMP_HOST_STARTUPS);
    }

    #[test]
    fn raising_the_limit_reaches_the_hard_limit() {
        let limit = raise_open_file_limit();
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        assert_eq!(soft, hard);
        assert_eq!(limit, soft);
    }
}
