//! The notification hub: one subscription per client to the namespace's release channel,
//! fanned out to the waiters registered for each lock key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;

/// Whether the subscription is live, and how many times it (re)started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HubState {
    pub(crate) subscribed: bool,
    /// Bumped on every successful (re)subscription: notices sent while the subscription was
    /// down are lost, so every waiter tries again when it changes.
    pub(crate) generation: u64,
}

pub(crate) struct Hub {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

/// Waiters by lock key, each with its own `Notify`.
type Waiters = HashMap<Box<[u8]>, HashMap<u64, Arc<Notify>>>;

struct Shared {
    waiters: Mutex<Waiters>,
    next_id: AtomicU64,
    state: watch::Sender<HubState>,
    notices: AtomicU64,
}

impl Shared {
    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, Waiters> {
        // A panic while holding this lock cannot leave the map inconsistent (each operation is
        // a single insert or remove), so a poisoned lock is still usable.
        self.waiters.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn dispatch(&self, key: &[u8]) {
        let waiters = self.lock_waiters();
        if let Some(entries) = waiters.get(key) {
            for notify in entries.values() {
                self.notices.fetch_add(1, Ordering::Relaxed);
                notify.notify_one();
            }
        }
    }

    fn wake_all(&self) {
        let waiters = self.lock_waiters();
        for entries in waiters.values() {
            for notify in entries.values() {
                notify.notify_one();
            }
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hub {
    /// Starts the subscriber task. Must be called inside a Tokio runtime.
    pub(crate) fn start(client: redis::Client, channel: String, connect_timeout: Duration) -> Hub {
        let (state, _) = watch::channel(HubState::default());
        let shared = Arc::new(Shared {
            waiters: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            state,
            notices: AtomicU64::new(0),
        });
        let task = tokio::spawn(run(
            Arc::downgrade(&shared),
            client,
            channel,
            connect_timeout,
        ));
        Hub { shared, task }
    }

    /// Registers a waiter for `key`. The registration is removed when dropped.
    pub(crate) fn register(&self, key: &str) -> Registration {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let notify = Arc::new(Notify::new());
        self.shared
            .lock_waiters()
            .entry(key.as_bytes().into())
            .or_default()
            .insert(id, notify.clone());
        Registration {
            shared: self.shared.clone(),
            key: key.as_bytes().into(),
            id,
            notify,
        }
    }

    pub(crate) fn state(&self) -> watch::Receiver<HubState> {
        self.shared.state.subscribe()
    }

    pub(crate) fn registrations(&self) -> usize {
        self.shared.lock_waiters().values().map(HashMap::len).sum()
    }

    /// Release notices delivered to waiters so far.
    pub(crate) fn notices(&self) -> u64 {
        self.shared.notices.load(Ordering::Relaxed)
    }
}

/// A waiter's place in the hub. Dropping it deregisters the waiter.
pub(crate) struct Registration {
    shared: Arc<Shared>,
    key: Box<[u8]>,
    id: u64,
    notify: Arc<Notify>,
}

impl Registration {
    /// Resolves on the next release notice for the key (or on a resubscription). A notice that
    /// arrived since the last call is not lost: `Notify` keeps one permit.
    pub(crate) async fn notified(&self) {
        self.notify.notified().await;
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut waiters = self.shared.lock_waiters();
        if let Some(entries) = waiters.get_mut(&self.key) {
            entries.remove(&self.id);
            if entries.is_empty() {
                waiters.remove(&self.key);
            }
        }
    }
}

/// The subscriber loop: (re)connect, subscribe, fan out, until the hub is dropped.
///
/// It holds only a weak reference to the hub, so it never keeps its owner alive; the hub also
/// aborts it on drop.
async fn run(
    shared: Weak<Shared>,
    client: redis::Client,
    channel: String,
    connect_timeout: Duration,
) {
    let mut backoff = Duration::from_millis(25);
    loop {
        let connected = tokio::time::timeout(connect_timeout, subscribe(&client, &channel)).await;
        match connected {
            Ok(Ok(pubsub)) => {
                backoff = Duration::from_millis(25);
                {
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    shared.state.send_modify(|s| {
                        s.subscribed = true;
                        s.generation += 1;
                    });
                    tracing::debug!(%channel, "subscribed to the release channel");
                    shared.wake_all();
                }
                let mut messages = pubsub.into_on_message();
                while let Some(msg) = messages.next().await {
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    shared.dispatch(msg.get_payload_bytes());
                }
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                shared.state.send_modify(|s| s.subscribed = false);
                tracing::warn!(%channel, "release subscription lost; reconnecting");
            }
            Ok(Err(err)) => {
                tracing::warn!(%channel, error = %err, "cannot subscribe to the release channel");
            }
            Err(_) => {
                tracing::warn!(%channel, "subscribing to the release channel timed out");
            }
        }
        if shared.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

async fn subscribe(
    client: &redis::Client,
    channel: &str,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(channel).await?;
    Ok(pubsub)
}
