//! The shim's one way to run work in a forked child: the child runs a closure and ends with
//! `_exit` of the code it returns, never returning into the shim's code; the parent gets the
//! child's pid and waits for it through the reaper (which owns every wait).

/// Forks; in the child runs `body` and `_exit`s with its code (101 if it panics); in the
/// parent returns the child's pid. What `body` captures is dropped in the parent too: the
/// parent's copy of a descriptor moved into `body` is closed when this returns.
///
/// # Safety
/// The shim has several threads, and the child has one, with every lock as it was at the
/// fork: `body` may make only calls that cannot wait for a lock another thread held
/// (async-signal-safe system calls on memory prepared before the fork), unless it has made
/// sure of more (glibc's `fork` leaves its own heap consistent for the child).
pub unsafe fn spawn(body: impl FnOnce() -> i32) -> std::io::Result<libc::pid_t> {
    // SAFETY: the caller answers for what the child runs; it ends in _exit below.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if pid == 0 {
        let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101);
        // SAFETY: ends the forked child without running the parent's exit handlers.
        unsafe { libc::_exit(code) };
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_exit_code_is_what_the_body_returns() {
        let reaper = crate::reaper::for_tests();
        // SAFETY: the body makes no calls at all.
        let seven = unsafe { spawn(|| 7) }.unwrap();
        assert_eq!(reaper.wait(seven).status, 7);
    }
}
