//! Counts the clean-up work a client left running in the background (a dropped guard's
//! release, an abandoned attempt's clean-up, a waiter leaving the fair queue, a handed-over
//! lock passed on), so that [`Client::settle`](crate::Client::settle) can wait for it before a
//! process exits.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Cleanup {
    pending: AtomicUsize,
    idle: Notify,
}

/// One piece of clean-up work, counted as pending until dropped.
pub(crate) struct Ticket(Arc<Cleanup>);

impl Drop for Ticket {
    fn drop(&mut self) {
        if self.0.pending.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Cleanup {
    /// Counts a piece of work as pending until the ticket is dropped.
    pub(crate) fn ticket(self: &Arc<Self>) -> Ticket {
        self.pending.fetch_add(1, Ordering::AcqRel);
        Ticket(self.clone())
    }

    /// Spawns `work` on the current runtime, counted as pending until it ends. `false` when
    /// there is no runtime to run it on (the work is then not done).
    pub(crate) fn spawn<F>(self: &Arc<Self>, work: F) -> bool
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return false;
        };
        let ticket = self.ticket();
        handle.spawn(async move {
            work.await;
            drop(ticket);
        });
        true
    }

    /// The pieces of work still pending.
    pub(crate) fn pending(&self) -> usize {
        self.pending.load(Ordering::Acquire)
    }

    /// Resolves once no work is pending.
    pub(crate) async fn idle(&self) {
        loop {
            // Registered before the check, so a ticket dropped in between still wakes us.
            let notified = self.idle.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.pending() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn idle_waits_for_every_ticket() {
        let cleanup = Arc::new(Cleanup::default());
        // Nothing pending: at once.
        tokio::time::timeout(Duration::from_secs(1), cleanup.idle())
            .await
            .expect("idle with nothing pending");
        let a = cleanup.ticket();
        let b = cleanup.ticket();
        assert_eq!(cleanup.pending(), 2);
        let waiting = tokio::spawn({
            let cleanup = cleanup.clone();
            async move { cleanup.idle().await }
        });
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one ticket is still out");
        drop(b);
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("idle after the last ticket")
            .expect("task");
        assert_eq!(cleanup.pending(), 0);
    }

    #[tokio::test]
    async fn spawned_work_is_pending_until_it_ends() {
        let cleanup = Arc::new(Cleanup::default());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        assert!(cleanup.spawn(async move {
            let _ = rx.await;
        }));
        assert_eq!(cleanup.pending(), 1);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), cleanup.idle())
                .await
                .is_err(),
            "the work has not ended"
        );
        tx.send(()).expect("send");
        tokio::time::timeout(Duration::from_secs(1), cleanup.idle())
            .await
            .expect("idle once the work ended");
    }

    #[test]
    fn spawn_without_a_runtime_does_nothing() {
        let cleanup = Arc::new(Cleanup::default());
        assert!(!cleanup.spawn(async {}));
        assert_eq!(cleanup.pending(), 0);
    }
}
