//! The fence between the stores' mutating operations and collections (containerd's
//! metadata lock between writes and the collector): a small part both sides hold.

use std::sync::Arc;
use tokio::sync::Notify;

/// The fence between the stores' mutating operations and collections, created before
/// either: the stores take it (an operation never sees a snapshot or blob vanish under it,
/// and a new root is never written while a collection decides), and [`super::Gc`] waits on it.
/// Operations nest and never wait while one is held: a collection starts only when none
/// runs. Deletions wake the collector through it.
#[derive(Clone, Default)]
pub struct GcFence {
    activity: Arc<std::sync::Mutex<Activity>>,
    changed: Arc<Notify>,
    wake: Arc<Notify>,
}

#[derive(Default)]
struct Activity {
    operations: usize,
    collecting: bool,
}

/// Held by an operation for its whole length; collections wait for it.
pub struct Operation {
    fence: GcFence,
}

impl Drop for Operation {
    fn drop(&mut self) {
        if let Ok(mut a) = self.fence.activity.lock() {
            a.operations -= 1;
        }
        self.fence.changed.notify_waiters();
    }
}

impl GcFence {
    /// Starts an operation (waiting for a collection in progress to end). Operations nest.
    pub async fn operation(&self) -> Operation {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Ok(mut a) = self.activity.lock() {
                if !a.collecting {
                    a.operations += 1;
                    return Operation {
                        fence: self.clone(),
                    };
                }
            }
            notified.await;
        }
    }

    /// Asks for a collection soon; the collector started by [`super::Gc::run`] wakes.
    pub fn schedule(&self) {
        self.wake.notify_one();
    }

    /// Returns at the next [`GcFence::schedule`] (or at once if one came meanwhile).
    pub(super) async fn woken(&self) {
        self.wake.notified().await;
    }

    /// Waits until no operation runs, and keeps new ones out until `end_collecting`.
    pub(super) async fn begin_collecting(&self) {
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Ok(mut a) = self.activity.lock() {
                if a.operations == 0 {
                    a.collecting = true;
                    return;
                }
            }
            notified.await;
        }
    }

    pub(super) fn end_collecting(&self) {
        if let Ok(mut a) = self.activity.lock() {
            a.collecting = false;
        }
        self.changed.notify_waiters();
    }
}
