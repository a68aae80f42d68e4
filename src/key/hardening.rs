//! Process hardening done before any key material exists: no core dumps, not dumpable, and
//! memory locked so key pages are never swapped.
//!
//! Owns: the process-wide security posture. Invariant: [`lock_down`] runs before the first
//! secret fetch, so that every later copy of the key (including the ones inside the AWS SDK and
//! the SSH crates, which we cannot wrap) lives in memory that is locked, excluded from core
//! dumps and, through the zeroizing allocator the binaries install, wiped when freed.
//! Must not know: anything about secrets or SSH.

use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// What [`lock_down`] managed to do; shown with `-v` so an operator can see why memory was not
/// locked on a host with a small `RLIMIT_MEMLOCK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posture {
    pub core_dumps_disabled: bool,
    pub memory_locked: Result<(), MemoryLockError>,
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
/// Memory is locked with `mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)` whenever
/// `RLIMIT_MEMLOCK` can be made unlimited: the hard limit is already unlimited, or the process
/// may raise it (root, whose CAP_SYS_RESOURCE lifts the distributions' default of 8 MiB). With
/// a finite limit, `MCL_FUTURE` would turn later allocations into failures once the limit is
/// reached, which would abort a large copy half-way, so an unprivileged user with a finite hard
/// limit gets its soft limit raised to the hard one and no lock. `MCL_ONFAULT` locks pages as
/// they are touched rather than faulting in every thread stack up front.
pub fn lock_down() -> Posture {
    let core_dumps_disabled = setrlimit(Resource::RLIMIT_CORE, 0, 0).is_ok()
        && nix::sys::prctl::set_dumpable(false).is_ok();
    let memory_locked = lock_memory();
    Posture {
        core_dumps_disabled,
        memory_locked,
    }
}

fn lock_memory() -> Result<(), MemoryLockError> {
    let refused = |call| move |errno| MemoryLockError::Refused { call, errno };
    let (_, hard) = getrlimit(Resource::RLIMIT_MEMLOCK).map_err(refused("getrlimit"))?;
    if setrlimit(Resource::RLIMIT_MEMLOCK, RLIM_INFINITY, RLIM_INFINITY).is_err() {
        // Not privileged to lift the limit: use what the limit allows for other locks.
        let _ = setrlimit(Resource::RLIMIT_MEMLOCK, hard, hard);
        return Err(MemoryLockError::Limited { hard });
    }
    let flags = MlockAllFlags::MCL_CURRENT
        | MlockAllFlags::MCL_FUTURE
        | MlockAllFlags::from_bits_retain(nix::libc::MCL_ONFAULT);
    mlockall(flags).map_err(refused("mlockall"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_down_disables_core_dumps() {
        let posture = lock_down();
        assert!(posture.core_dumps_disabled);
        let (soft, hard) = getrlimit(Resource::RLIMIT_CORE).unwrap();
        assert_eq!((soft, hard), (0, 0));
        assert!(!nix::sys::prctl::get_dumpable().unwrap());
    }
}
