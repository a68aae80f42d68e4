//! Locking the pages that hold a decoded key, for a process that cannot lock all of its memory
//! (an unprivileged user under a finite `RLIMIT_MEMLOCK`, the distributions' default): the key
//! is small, so its pages fit within even the default 8 MiB, and it is the one thing that must
//! never reach swap.
//!
//! This is the crate's only `unsafe` code (audited: see the SAFETY comment). Owns: which
//! regions hold a decoded key (the key's own allocation, plus the heap buffers of an RSA key's
//! private numbers). Must not know: where the key came from.

#![allow(unsafe_code)]

use std::ffi::c_void;
use std::ptr::NonNull;
use std::sync::Arc;

use russh::keys::ssh_key::private::KeypairData;
use russh::keys::PrivateKey;

/// Locks the memory of `key`'s private parts. Returns how many bytes were asked to be locked;
/// an error means the limit did not allow it (the key then stays unlocked, as before).
pub fn lock_key(key: &Arc<PrivateKey>) -> Result<usize, nix::Error> {
    let own = std::mem::size_of::<PrivateKey>();
    // SAFETY-relevant: the pointer and length describe the live allocation of the Arc's
    // value, which outlives this call because we hold a reference to the Arc.
    let mut regions: Vec<(*const u8, usize)> = vec![(Arc::as_ptr(key).cast::<u8>(), own)];
    if let KeypairData::Rsa(pair) = key.key_data() {
        let private = pair.private();
        for number in [private.d(), private.iqmp(), private.p(), private.q()] {
            let bytes = number.as_bytes();
            regions.push((bytes.as_ptr(), bytes.len()));
        }
    }
    let mut locked = 0;
    for (start, len) in regions {
        let Some(start) = NonNull::new(start.cast_mut().cast::<c_void>()) else {
            continue;
        };
        if len == 0 {
            continue;
        }
        // SAFETY: `mlock` only changes the residency of the pages that contain
        // `start..start + len`; it neither reads nor writes them. The range lies inside a live
        // allocation borrowed for this call (see above), so every page in it is mapped, which
        // is all `mlock` requires. Pages stay locked after the allocation is freed, which costs
        // at most those few pages of the limit and is safe.
        unsafe { nix::sys::mman::mlock(start, len) }?;
        locked += len;
    }
    Ok(locked)
}
