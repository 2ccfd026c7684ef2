//! The process's randomness, from the seed: this test binary defines `getrandom(2)`'s libc
//! wrapper, which the standard library (the keys of every `HashMap`), `rand` (openraft's
//! election timeouts) and `uuid` (topic ids) read their randomness from. Each run reseeds
//! it and starts on a fresh thread (the standard library draws a thread's hash keys once,
//! on its first map), so a seed draws the same numbers every time, in any order of seeds.
//!
//! The only unsafe code in the workspace, and only in the simulator's binary: a C function
//! with libc's signature, writing into the caller's buffer.
#![allow(unsafe_code)]

use std::sync::Mutex;

static STATE: Mutex<u64> = Mutex::new(0x5EED);

/// Makes the next random bytes a function of `seed` alone.
pub fn reseed(seed: u64) {
    *STATE.lock().unwrap_or_else(|p| p.into_inner()) = seed ^ 0xD1B5_4A32_D192_ED03;
}

fn fill(dest: &mut [u8]) {
    let mut state = STATE.lock().unwrap_or_else(|p| p.into_inner());
    for chunk in dest.chunks_mut(8) {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

/// libc's `ssize_t getrandom(void *buf, size_t buflen, unsigned int flags)`.
///
/// # Safety
/// `buf` must be valid for writes of `buflen` bytes, as for the libc function.
#[no_mangle]
pub unsafe extern "C" fn getrandom(buf: *mut u8, buflen: usize, _flags: u32) -> isize {
    if buf.is_null() {
        return -1;
    }
    // SAFETY: the caller gives a buffer of `buflen` writable bytes (getrandom's contract).
    let dest = unsafe { std::slice::from_raw_parts_mut(buf, buflen) };
    fill(dest);
    buflen as isize
}

/// libc's `int getentropy(void *buf, size_t buflen)` (at most 256 bytes).
///
/// # Safety
/// As for [`getrandom`].
#[no_mangle]
pub unsafe extern "C" fn getentropy(buf: *mut u8, buflen: usize) -> i32 {
    if buflen > 256 {
        return -1;
    }
    // SAFETY: the same contract as getrandom's.
    match unsafe { getrandom(buf, buflen, 0) } {
        -1 => -1,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    fn hash_keys_of_a_fresh_thread(seed: u64) -> u64 {
        super::reseed(seed);
        std::thread::spawn(|| std::collections::hash_map::RandomState::new().hash_one(1u64))
            .join()
            .expect("thread")
    }

    #[test]
    fn a_seed_gives_a_fresh_thread_the_same_hash_keys() {
        let a = hash_keys_of_a_fresh_thread(7);
        let b = hash_keys_of_a_fresh_thread(8);
        let c = hash_keys_of_a_fresh_thread(7);
        assert_eq!(a, c, "the same seed, the same keys");
        assert_ne!(a, b, "another seed, other keys");
    }
}
