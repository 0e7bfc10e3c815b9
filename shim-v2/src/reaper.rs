//! The subreaper: every child and orphaned descendant that exits is reaped here, and its
//! status kept until someone asks. Nothing else in the shim calls wait, so no exit status
//! is ever lost to a race. A status is handed out once, and one nobody asked for is dropped
//! after [`KEEP`]: pids are reused (32768 of them by default), and a stale status under a
//! reused pid would read as the new process's exit.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy)]
pub struct Exit {
    pub status: i32,
    pub at: prost_types::Timestamp,
}

type Hook = Box<dyn Fn(i32, Exit) + Send + Sync>;

/// How long an exit nobody has asked for is kept (whoever waits for a child it made asks
/// within moments).
pub const KEEP: Duration = Duration::from_secs(60);

#[derive(Default)]
pub struct Reaper {
    exits: Mutex<HashMap<i32, (Exit, Instant)>>,
    cv: Condvar,
    hook: Mutex<Option<Hook>>,
    /// Set when someone waits for a child it made: the reaper, finding none, sleeps until
    /// then.
    kicked: Mutex<bool>,
    kicked_cv: Condvar,
}

fn status_code(raw: i32) -> i32 {
    if libc::WIFEXITED(raw) {
        libc::WEXITSTATUS(raw)
    } else if libc::WIFSIGNALED(raw) {
        128 + libc::WTERMSIG(raw)
    } else {
        raw
    }
}

impl Reaper {
    /// Makes this process a subreaper and starts reaping.
    pub fn start() -> Arc<Reaper> {
        // SAFETY: prctl with an integer argument; no memory is passed.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let r = Arc::new(Reaper::default());
        let r2 = r.clone();
        std::thread::Builder::new()
            .name("reaper".into())
            .stack_size(64 << 10)
            .spawn(move || r2.run())
            .ok();
        r
    }

    /// Tells the reaper a child was made (whoever waits for one made it): it looks at once,
    /// rather than at its next look.
    fn kick(&self) {
        if let Ok(mut f) = self.kicked.lock() {
            *f = true;
        }
        self.kicked_cv.notify_one();
    }

    /// Called for every exit, after it is recorded.
    pub fn on_exit(&self, hook: impl Fn(i32, Exit) + Send + Sync + 'static) {
        if let Ok(mut h) = self.hook.lock() {
            *h = Some(Box::new(hook));
        }
    }

    fn run(&self) {
        loop {
            let mut raw = 0;
            // SAFETY: waitpid writes the status into a local integer.
            let pid = unsafe { libc::waitpid(-1, &mut raw, 0) };
            if pid <= 0 {
                // No children right now; the next can only come from the shim's own fork or
                // spawn (orphans reach a subreaper only through a child of its own), and
                // whoever made it waits for it, which wakes this. (A timeout, for a child
                // nobody waits for.)
                let mut f = match self.kicked.lock() {
                    Ok(f) => f,
                    Err(p) => p.into_inner(),
                };
                if !*f {
                    f = match self.kicked_cv.wait_timeout(f, Duration::from_secs(1)) {
                        Ok((f, _)) => f,
                        Err(p) => p.into_inner().0,
                    };
                }
                *f = false;
                continue;
            }
            self.record(
                pid,
                Exit {
                    status: status_code(raw),
                    at: crate::now(),
                },
            );
        }
    }

    /// Keeps `pid`'s exit for whoever waits, then tells the hook.
    pub fn record(&self, pid: i32, exit: Exit) {
        if let Ok(mut m) = self.exits.lock() {
            let now = Instant::now();
            m.retain(|_, (_, kept)| now.duration_since(*kept) < KEEP);
            m.insert(pid, (exit, now));
        }
        self.cv.notify_all();
        if let Ok(h) = self.hook.lock() {
            if let Some(h) = h.as_ref() {
                h(pid, exit);
            }
        }
    }

    /// Blocks until `pid` has exited; returns its status (once).
    pub fn wait(&self, pid: i32) -> Exit {
        self.kick();
        let mut m = match self.exits.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        loop {
            if let Some((e, _)) = m.remove(&pid) {
                return e;
            }
            m = match self.cv.wait(m) {
                Ok(m) => m,
                Err(p) => p.into_inner(),
            };
        }
    }

    /// `pid`'s exit if it was reaped already (handed out once).
    pub fn exited(&self, pid: i32) -> Option<Exit> {
        self.exits
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&pid))
            .map(|(e, _)| e)
    }
}

/// The test binary's one reaping reaper: a second one, waiting for any child too, would take
/// the first one's children.
#[cfg(test)]
pub fn for_tests() -> Arc<Reaper> {
    static REAPER: std::sync::OnceLock<Arc<Reaper>> = std::sync::OnceLock::new();
    REAPER.get_or_init(Reaper::start).clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_is_handed_out_once() {
        let r = Reaper::default();
        let exit = |status| Exit {
            status,
            at: crate::now(),
        };
        r.record(41, exit(3));
        assert_eq!(r.exited(41).map(|e| e.status), Some(3));
        assert!(r.exited(41).is_none(), "a reused pid must not find it");
        r.record(42, exit(0));
        assert_eq!(r.wait(42).status, 0);
        assert!(r.exited(42).is_none());
    }
}
