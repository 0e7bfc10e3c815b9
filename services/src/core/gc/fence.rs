//! The fence between the stores' mutating operations and collections (containerd's
//! metadata lock between writes and the collector): a small part both sides hold.

use crate::core::error::Result;
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

/// What a store asks of the collector after a deletion (containerd's `gcScheduler`): the
/// stores name this, not [`super::Gc`], which reads them.
pub trait Collector: Send + Sync {
    /// Collects now, in every namespace.
    fn collect_now(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + '_>>;
}

/// A store's hold on the collector: the fence its writes take, and collections after its
/// deletions.
#[derive(Clone)]
pub struct GcHandle {
    fence: GcFence,
    collector: Arc<dyn Collector>,
}

impl GcHandle {
    pub fn new(fence: GcFence, collector: Arc<dyn Collector>) -> Self {
        GcHandle { fence, collector }
    }

    /// See [`GcFence::operation`].
    pub async fn operation(&self) -> Operation {
        self.fence.operation().await
    }

    /// After a deletion: what only the deleted record held goes now (`now`, so never inside
    /// an operation: the collection would wait for it) or soon.
    pub async fn after_delete(&self, now: bool) -> Result<()> {
        if now {
            self.collector.collect_now().await
        } else {
            self.fence.schedule();
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn operations_nest_and_collections_wait_for_them() {
        let fence = GcFence::default();
        let outer = fence.operation().await;
        // A store call inside an operation (unpack's prepare) takes it again without waiting.
        let inner = tokio::time::timeout(Duration::from_secs(1), fence.operation()).await;
        assert!(inner.is_ok());
        let collecting = {
            let fence = fence.clone();
            tokio::spawn(async move { fence.begin_collecting().await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!collecting.is_finished());
        drop(inner);
        drop(outer);
        tokio::time::timeout(Duration::from_secs(1), collecting)
            .await
            .unwrap()
            .unwrap();
        // While collecting, a new operation waits for the end.
        let waiting = tokio::time::timeout(Duration::from_millis(50), fence.operation()).await;
        assert!(waiting.is_err());
        fence.end_collecting();
        assert!(
            tokio::time::timeout(Duration::from_secs(1), fence.operation())
                .await
                .is_ok()
        );
    }
}
