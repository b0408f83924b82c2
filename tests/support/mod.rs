//! Support for the remote tests: a real sqld per test, a latency and fault
//! proxy, JWTs for sqld's auth, the row checks the tests share, and the
//! latency measurement (which the report uses too).
//!
//! Each test binary uses only part of it.
#![allow(dead_code)]

pub mod jwt;
pub mod latency;
pub mod proxy;
pub mod rows;
pub mod sqld;

/// Why the remote tests are ignored, and the panic of one run with
/// `--ignored` but without a server.
pub const NEEDS_SQLD: &str = "needs sqld: set TRACE_WRITER_SQLD to its path and run with --ignored";

/// How many times the fault loops repeat: `TRACE_WRITER_REMOTE_REPEAT`, 5
/// by default.
pub fn repeats() -> usize {
    match std::env::var("TRACE_WRITER_REMOTE_REPEAT") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("TRACE_WRITER_REMOTE_REPEAT is not a number: {v:?}")),
        _ => 5,
    }
}

/// A pseudo-random number below `n`, different per call and per run: fault
/// schedules vary from run to run without a dependency.
pub fn jitter(n: u64) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos
        ^ CALLS
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    // splitmix64's finaliser.
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    x % n.max(1)
}
