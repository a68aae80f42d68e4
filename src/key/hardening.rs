//! Process hardening done before any key material exists: no core dumps, not dumpable, and
//! memory locked so key pages are never swapped.
//!
//! Owns: the process-wide security posture. Invariant: [`lock_down`] runs before the first
//! secret fetch, so that every later copy of the key (including the ones inside the AWS SDK and
//! the SSH crates, which we cannot wrap) lives in memory that is locked, excluded from core
//! dumps and, through the zeroizing allocator the binaries install, wiped when freed.
//! Must not know: anything about secrets or SSH.

use std::sync::atomic::{AtomicBool, Ordering};

use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// What [`lock_down`] managed to do; shown with `-v` so an operator can see why memory was not
/// locked on a host with a small `RLIMIT_MEMLOCK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posture {
    pub core_dumps_disabled: bool,
    pub memory_locked: Result<(), MemoryLockError>,
}

/// Set once every page of the process is locked (present and future).
static ALL_LOCKED: AtomicBool = AtomicBool::new(false);

/// True when [`lock_down`] locked all memory; otherwise the key module locks the key's own
/// pages ([`crate::key::lock`]).
pub fn all_memory_locked() -> bool {
    ALL_LOCKED.load(Ordering::SeqCst)
}

/// Why memory was not locked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemoryLockError {
    #[error("RLIMIT_MEMLOCK is {hard} bytes; raise it to unlimited to lock key pages")]
    Limited { hard: u64 },
    #[error("{call}: {errno}")]
    Refused {
        call: &'static str,
        errno: nix::errno::Errno,
    },
}

/// Disables core dumps and locks the process memory where the OS allows it.
///
/// Memory is locked with `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)` whenever the limit
/// does not apply: the hard `RLIMIT_MEMLOCK` is already unlimited, or the process may raise it
/// (CAP_SYS_RESOURCE, which lifts the distributions' default of 8 MiB), or it holds
/// CAP_IPC_LOCK, which locks beyond any limit (root has both, root in a container often only
/// the second). With
/// a finite limit, `MCL_FUTURE` would turn later allocations into failures once the limit is
/// reached, which would abort a large copy half-way, so an unprivileged user with a finite hard
/// limit gets its soft limit raised to the hard one, and the decoded key's own pages are locked
/// within it ([`crate::key::lock`]). `MCL_ONFAULT` locks pages as
/// they are touched rather than faulting in every thread stack up front.
pub fn lock_down() -> Posture {
    let core_dumps_disabled = disable_core_dumps();
    let memory_locked = lock_memory();
    ALL_LOCKED.store(memory_locked.is_ok(), Ordering::SeqCst);
    Posture {
        core_dumps_disabled,
        memory_locked,
    }
}

fn lock_memory() -> Result<(), MemoryLockError> {
    let refused = |call| move |errno| MemoryLockError::Refused { call, errno };
    let (_, hard) = getrlimit(Resource::RLIMIT_MEMLOCK).map_err(refused("getrlimit"))?;
    let lifted = setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY).is_ok();
    // CAP_IPC_LOCK locks beyond the limit, without lifting it (root in a container often has
    // it but not CAP_SYS_RESOURCE).
    if !lifted && !has_ipc_lock_capability() {
        // Not privileged to lift the limit: use what the limit allows for the key's pages.
        let _ = setrlimit(Resource::RLIMIT_MEMLOCK, hard, hard);
        return Err(MemoryLockError::Limited { hard });
    }
    let flags = MlockAllFlags::MCL_CURRENT
        | MlockAllFlags::MCL_FUTURE
        | MlockAllFlags::from_bits_retain(nix::libc::MCL_ONFAULT);
    mlockall(flags).map_err(refused("mlockall"))
}

fn disable_core_dumps() -> bool {
    setrlimit(Resource::RLIMIT_CORE, 0, 0).is_ok() && nix::sys::prctl::set_dumpable(false).is_ok()
}

/// CAP_IPC_LOCK's bit in the capability sets of /proc/PID/status (linux/capability.h).
const CAP_IPC_LOCK: u32 = 14;

/// True when the process's effective capabilities include CAP_IPC_LOCK, read from
/// `/proc/self/status` (no capability library needed; false when it cannot be read).
fn has_ipc_lock_capability() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|effective| effective & (1 << CAP_IPC_LOCK) != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    // lock_down itself is not called here: locking all memory would change what the other
    // tests of this process observe (key::tests checks the key's own pages are locked).
    #[test]
    fn core_dumps_are_disabled() {
        assert!(disable_core_dumps());
        let (soft, hard) = getrlimit(Resource::RLIMIT_CORE).unwrap();
        assert_eq!((soft, hard), (0, 0));
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
    }
}
