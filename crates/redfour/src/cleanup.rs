//! Counts the clean-up work a client left running in the background (a dropped guard's
//! release, an abandoned attempt's clean-up, a waiter leaving the fair queue, a handed-over
//! lock passed on), so that [`Client::settle`](crate::Client::settle) can wait for it before a
//! process exits; and [`OnDrop`], the one guard that starts such work when a future that
//! won something on the server is dropped before it could hand it over.

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

/// Holds a value and undoes it on drop (`undo(value)`) unless disarmed: what an operation won
/// on the server, to be given back if the operation ends (or its future is dropped) before it
/// can hand it over. The value stays reachable (and mutable) through `Deref`, so that what the
/// guard covers can grow while the operation runs. (`Default` lets the drop move the value out
/// for `undo`.)
pub(crate) struct OnDrop<T: Default, F: FnOnce(T)> {
    value: T,
    /// `None` once disarmed.
    undo: Option<F>,
}

impl<T: Default, F: FnOnce(T)> OnDrop<T, F> {
    /// Armed: `undo` runs on `value` when the guard is dropped.
    pub(crate) fn new(value: T, undo: F) -> Self {
        OnDrop {
            value,
            undo: Some(undo),
        }
    }

    /// The operation handed over what it won: the undo never runs. Returns the value.
    pub(crate) fn disarm(mut self) -> T {
        self.undo = None;
        std::mem::take(&mut self.value)
    }
}

impl<T: Default, F: FnOnce(T)> std::ops::Deref for OnDrop<T, F> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T: Default, F: FnOnce(T)> std::ops::DerefMut for OnDrop<T, F> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T: Default, F: FnOnce(T)> Drop for OnDrop<T, F> {
    fn drop(&mut self) {
        if let Some(undo) = self.undo.take() {
            undo(std::mem::take(&mut self.value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::time::Duration;

    #[test]
    fn on_drop_undoes_when_dropped() {
        let undone = RefCell::new(Vec::new());
        let guard = OnDrop::new(7, |v| undone.borrow_mut().push(v));
        assert!(undone.borrow().is_empty(), "not before the drop");
        drop(guard);
        assert_eq!(*undone.borrow(), [7]);
    }

    #[test]
    fn on_drop_undoes_nothing_once_disarmed() {
        let undone = RefCell::new(Vec::new());
        let guard = OnDrop::new(7, |v| undone.borrow_mut().push(v));
        assert_eq!(guard.disarm(), 7);
        assert!(undone.borrow().is_empty());
    }

    #[test]
    fn on_drop_value_is_reachable_and_mutable() {
        let undone = RefCell::new(Vec::new());
        let mut guard = OnDrop::new(vec![1], |v: Vec<i32>| undone.borrow_mut().extend(v));
        guard.push(2);
        assert_eq!(guard.len(), 2);
        assert_eq!(*guard, [1, 2]);
        // The undo sees what the value grew to.
        drop(guard);
        assert_eq!(*undone.borrow(), [1, 2]);
        let mut guard = OnDrop::new(vec![1], |v: Vec<i32>| undone.borrow_mut().extend(v));
        guard[0] = 3;
        assert_eq!(guard.disarm(), [3]);
        assert_eq!(*undone.borrow(), [1, 2], "a disarmed guard undoes nothing");
    }

    #[tokio::test]
    async fn on_drop_undoes_when_its_future_is_dropped() {
        let undone = RefCell::new(Vec::new());
        let pending = async {
            let _guard = OnDrop::new("won", |v| undone.borrow_mut().push(v));
            std::future::pending::<()>().await;
        };
        assert!(
            tokio::time::timeout(Duration::from_millis(10), pending)
                .await
                .is_err(),
            "never ends"
        );
        assert_eq!(*undone.borrow(), ["won"]);
    }

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
