//! Timing helpers shared by the benchmarks (`mod common;` in each): on a machine shared with
//! other work, `VPCFW_BENCH_CPU_TIME=1` times by the thread's CPU time instead of wall time.
// Each benchmark uses only some of these.
#![allow(dead_code)]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Whether `VPCFW_BENCH_CPU_TIME=1` asks for CPU-time measurement (Linux only).
pub fn cpu_mode() -> bool {
    static CPU: OnceLock<bool> = OnceLock::new();
    *CPU.get_or_init(|| {
        cfg!(target_os = "linux")
            && std::env::var_os("VPCFW_BENCH_CPU_TIME").is_some_and(|v| v == "1")
    })
}

/// A monotonic clock: the thread's CPU time in CPU-time mode, else wall time since first use.
pub fn clock() -> Duration {
    if cpu_mode() {
        return thread_cpu_time();
    }
    static START: OnceLock<Instant> = OnceLock::new();
    START.get_or_init(Instant::now).elapsed()
}

/// The calling thread's CPU time.
#[cfg(target_os = "linux")]
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID is always supported on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0);
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// The calling thread's CPU time (never called: [`cpu_mode`] is false off Linux).
#[cfg(not(target_os = "linux"))]
pub fn thread_cpu_time() -> Duration {
    unreachable!("CPU-time mode is Linux only")
}
