//! Process hardening while key material may be held: no core dumps (`PR_SET_DUMPABLE` 0 and
//! `RLIMIT_CORE` 0, which also keeps other same-uid processes out of `/proc/PID/mem`), and memory
//! locked against swap when permitted. Locking needs `CAP_IPC_LOCK` or an unlimited
//! `RLIMIT_MEMLOCK`; without either, locking all future allocations could make an allocation
//! fail, so it is skipped with a notice instead.
//!
//! Also the test-only pause point: with `PSK_GUARD_TEST_PAUSE=1` the process, after its work is
//! done and every key has been dropped, prints `psk-guard: paused PID` on stderr and waits for a
//! line on stdin, so a test can read its whole memory.

use nix::sys::resource::{getrlimit, setrlimit, Resource, RLIM_INFINITY};

/// What hardening achieved (for logs and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hardening {
    pub dumps_disabled: bool,
    pub memory_locked: bool,
}

fn has_cap_ipc_lock() -> bool {
    // CapEff in /proc/self/status; CAP_IPC_LOCK is bit 14.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|h| u64::from_str_radix(h.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 14) != 0)
}

/// One malloc arena for every thread (glibc otherwise gives each thread that allocates its own,
/// up to 8 per core): `check`'s blocking threads (file checks, history scan, /proc) then reuse
/// the memory the others freed instead of each keeping theirs resident. Measured with
/// `MALLOC_ARENA_MAX=1`: check at 10,000 tunnels peaks 1.7 MB lower (22.5 -> 20.8 MB). Call
/// before any thread starts.
pub fn one_malloc_arena() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no pointer is passed.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Applies the hardening; never fails the run, only reports what it could not do.
pub fn harden() -> Hardening {
    let dumps_disabled = nix::sys::prctl::set_dumpable(false).is_ok()
        && setrlimit(Resource::RLIMIT_CORE, 0, 0).is_ok();
    if !dumps_disabled {
        tracing::info!("could not disable core dumps; a crash could write key material to disk");
    }
    let unlimited =
        getrlimit(Resource::RLIMIT_MEMLOCK).is_ok_and(|(soft, _)| soft == RLIM_INFINITY);
    let memory_locked = if has_cap_ipc_lock() || unlimited {
        use nix::sys::mman::{mlockall, MlockAllFlags};
        // MCL_ONFAULT (Linux 4.4, not in nix's flag set): lock pages as they are touched instead
        // of faulting in every mapping (thread stacks, buffer capacity) at once.
        const MCL_ONFAULT: i32 = 4;
        let flags = MlockAllFlags::MCL_CURRENT
            | MlockAllFlags::MCL_FUTURE
            | MlockAllFlags::from_bits_retain(MCL_ONFAULT);
        match mlockall(flags) {
            Ok(()) => true,
            Err(e) => {
                tracing::info!(error = %e, "could not lock memory; key pages may be swapped");
                false
            }
        }
    } else {
        tracing::info!("memory not locked (no CAP_IPC_LOCK and RLIMIT_MEMLOCK is limited); key pages may be swapped");
        false
    };
    Hardening {
        dumps_disabled,
        memory_locked,
    }
}

/// The test-only pause point (see the module documentation).
pub fn test_pause_point() {
    if std::env::var_os("PSK_GUARD_TEST_PAUSE").is_some_and(|v| v == "1") {
        let dumpable = nix::sys::prctl::get_dumpable().unwrap_or(true);
        let locked_kb = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmLck:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            })
            .unwrap_or(0);
        eprintln!(
            "psk-guard: paused {} dumpable={} locked_kb={locked_kb}",
            std::process::id(),
            u8::from(dumpable)
        );
        let mut line = String::new();
        let _ = std::io::stdin().read_line(&mut line);
    }
}

/// Overwrites a stretch of the stack below the caller, where callees that handled key bytes in
/// their frames (hash block buffers) have returned from.
#[inline(never)]
pub fn scrub_stack() {
    let mut buf = [0u8; 16 * 1024];
    zeroize::Zeroize::zeroize(&mut buf[..]);
    std::hint::black_box(&buf);
}
