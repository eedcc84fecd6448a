//! The notification hub: one subscription per client, to the namespace's release channel (and,
//! with the fair queue, to the client's own handoff channel), fanned out to the waiters
//! registered for each lock key.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::keys::Namespace;
use crate::scripts::{self, Eval};

/// Whether the subscription is live, and how many times it (re)started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HubState {
    pub(crate) subscribed: bool,
    /// Bumped on every successful (re)subscription: notices sent while the subscription was
    /// down are lost, so every waiter tries again when it changes.
    pub(crate) generation: u64,
}

/// A lock handed straight to one of this client's waiters by a release (fair queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handoff {
    pub(crate) index: i64,
    /// How long the server keeps the handed-over lock unless the new holder claims it.
    pub(crate) window: Duration,
}

/// What the fair queue needs from the hub: where handoffs arrive, and a connection on which to
/// tidy up after waiters that left (leave the queue, pass on a lock handed to a waiter that
/// is gone).
pub(crate) struct FairSetup {
    pub(crate) handoff_channel: String,
    pub(crate) client_token: String,
    pub(crate) conn: ConnectionManager,
    pub(crate) claim_window_ms: u64,
}

/// Work for the janitor task.
enum Chore {
    Leave {
        queue: String,
        entries: String,
        token: String,
    },
    PassOn {
        key: String,
        queue: String,
        entries: String,
        index: i64,
        token: String,
    },
}

pub(crate) struct Hub {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

struct Slot {
    notify: Notify,
    handoff: Mutex<Option<Handoff>>,
}

#[derive(Default)]
struct Waiters {
    by_key: HashMap<Box<[u8]>, HashMap<u64, Arc<Slot>>>,
    by_id: HashMap<u64, (Box<str>, Arc<Slot>)>,
}

struct Shared {
    waiters: Mutex<Waiters>,
    next_id: AtomicU64,
    state: watch::Sender<HubState>,
    notices: AtomicU64,
    handoff_channel: Option<String>,
    client_token: String,
    janitor: Option<mpsc::UnboundedSender<Chore>>,
    ns: Namespace,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every critical section is a single insert, remove or read, so a poisoned lock still
    // holds consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shared {
    fn dispatch_release(&self, key: &[u8]) {
        let waiters = lock(&self.waiters);
        if let Some(entries) = waiters.by_key.get(key) {
            for slot in entries.values() {
                self.notices.fetch_add(1, Ordering::Relaxed);
                slot.notify.notify_one();
            }
        }
    }

    /// `"{token} {index} {window_ms} {key}"` on this client's handoff channel.
    fn dispatch_handoff(&self, payload: &[u8]) {
        let text = String::from_utf8_lossy(payload);
        let mut parts = text.splitn(4, ' ');
        let (Some(token), Some(index), Some(window), Some(key)) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            tracing::warn!(payload = %text, "ignoring a malformed handoff notice");
            return;
        };
        let (Ok(index), Ok(window_ms)) = (index.parse::<i64>(), window.parse::<u64>()) else {
            tracing::warn!(payload = %text, "ignoring a malformed handoff notice");
            return;
        };
        let handoff = Handoff {
            index,
            window: Duration::from_millis(window_ms),
        };
        let id = token
            .strip_prefix(self.client_token.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
            .and_then(|id| id.parse::<u64>().ok());
        let slot = id.and_then(|id| lock(&self.waiters).by_id.get(&id).map(|(_, s)| s.clone()));
        match slot {
            Some(slot) => {
                self.notices.fetch_add(1, Ordering::Relaxed);
                // Its own target, so that a profiler can time the notice's arrival alone.
                tracing::trace!(target: "redfour::handoff_notice", key, index, "handoff notice");
                *lock(&slot.handoff) = Some(handoff);
                slot.notify.notify_one();
            }
            None => {
                // The waiter is gone: it left while the lock was being handed to it, or it
                // took the lock by its own attempt before this notice came. The server tells
                // the two apart (a taken handoff is no longer marked), so passing on is safe.
                tracing::debug!(
                    key,
                    index,
                    "handoff notice for a waiter that is gone; passing it on if unclaimed"
                );
                self.pass_on(key, index, token);
            }
        }
    }

    /// Passes on a lock handed to `token` (index `index`): on the server, only while that
    /// handoff is still unclaimed, so a waiter that did take it never loses it this way.
    fn pass_on(&self, key: &str, index: i64, token: &str) {
        if let Some(janitor) = &self.janitor {
            let (queue, entries) = self.ns.queue_keys(key);
            let _ = janitor.send(Chore::PassOn {
                key: key.to_owned(),
                queue,
                entries,
                index,
                token: token.to_owned(),
            });
        }
    }

    fn wake_all(&self) {
        let waiters = lock(&self.waiters);
        for entries in waiters.by_key.values() {
            for slot in entries.values() {
                slot.notify.notify_one();
            }
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Hub {
    /// Starts the subscriber task (and, for the fair queue, the janitor). Must be called inside
    /// a Tokio runtime.
    pub(crate) fn start(
        client: redis::Client,
        ns: Namespace,
        connect_timeout: Duration,
        fair: Option<FairSetup>,
    ) -> Hub {
        let release_channel = ns.channel().to_owned();
        let (state, _) = watch::channel(HubState::default());
        let mut channels = vec![release_channel];
        let mut tasks = Vec::new();
        let (janitor, handoff_channel, client_token) = match fair {
            Some(setup) => {
                channels.push(setup.handoff_channel.clone());
                let (tx, rx) = mpsc::unbounded_channel();
                tasks.push(tokio::spawn(janitor(
                    rx,
                    setup.conn,
                    ns.counter().to_owned(),
                    ns.channel().to_owned(),
                    setup.claim_window_ms,
                )));
                (Some(tx), Some(setup.handoff_channel), setup.client_token)
            }
            None => (None, None, String::new()),
        };
        let shared = Arc::new(Shared {
            waiters: Mutex::new(Waiters::default()),
            next_id: AtomicU64::new(0),
            state,
            notices: AtomicU64::new(0),
            handoff_channel,
            client_token,
            janitor,
            ns,
        });
        tasks.push(tokio::spawn(run(
            Arc::downgrade(&shared),
            client,
            channels,
            connect_timeout,
        )));
        Hub { shared, tasks }
    }

    /// Registers a waiter for `key`. The registration is removed when dropped.
    pub(crate) fn register(&self, key: &str) -> Registration {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            notify: Notify::new(),
            handoff: Mutex::new(None),
        });
        {
            let mut waiters = lock(&self.shared.waiters);
            waiters
                .by_key
                .entry(key.as_bytes().into())
                .or_default()
                .insert(id, slot.clone());
            waiters.by_id.insert(id, (key.into(), slot.clone()));
        }
        let token = self
            .shared
            .handoff_channel
            .as_ref()
            .map(|_| format!("{}/{}", self.shared.client_token, id));
        Registration {
            shared: self.shared.clone(),
            key: key.into(),
            id,
            slot,
            token,
            queued: AtomicBool::new(false),
            done: AtomicBool::new(false),
        }
    }

    pub(crate) fn state(&self) -> watch::Receiver<HubState> {
        self.shared.state.subscribe()
    }

    pub(crate) fn registrations(&self) -> usize {
        lock(&self.shared.waiters).by_id.len()
    }

    /// Notices (release or handoff) delivered to waiters so far.
    pub(crate) fn notices(&self) -> u64 {
        self.shared.notices.load(Ordering::Relaxed)
    }
}

/// A waiter's place in the hub. Dropping it deregisters the waiter and, with the fair queue,
/// takes it out of the server's queue (or passes on a lock handed to it too late).
pub(crate) struct Registration {
    shared: Arc<Shared>,
    key: Box<str>,
    id: u64,
    slot: Arc<Slot>,
    token: Option<String>,
    queued: AtomicBool,
    done: AtomicBool,
}

impl Registration {
    /// Resolves on the next notice for the key (or on a resubscription). A notice that arrived
    /// since the last call is not lost: `Notify` keeps one permit.
    pub(crate) async fn notified(&self) {
        self.slot.notify.notified().await;
    }

    /// The waiter's token in the fair queue, when the client uses it.
    ///
    /// Once the token is handed out, an attempt may queue the waiter on the server even if
    /// nobody reads its answer (the wait is dropped while the attempt is in flight), so from
    /// then on dropping the registration leaves the queue (a no-op if it never joined). The
    /// leave goes out on the same multiplexed connection after the attempt, so it runs after it.
    pub(crate) fn token(&self) -> Option<&str> {
        if self.token.is_some() {
            self.queued.store(true, Ordering::Relaxed);
        }
        self.token.as_deref()
    }

    /// A lock handed to this waiter, if one arrived.
    pub(crate) fn take_handoff(&self) -> Option<Handoff> {
        lock(&self.slot.handoff).take()
    }

    /// The waiter got the lock: the server already took it out of the queue.
    pub(crate) fn finish(&self) {
        self.done.store(true, Ordering::Relaxed);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        let done = self.done.load(Ordering::Relaxed);
        {
            let mut waiters = lock(&self.shared.waiters);
            waiters.by_id.remove(&self.id);
            if let Some(entries) = waiters.by_key.get_mut(self.key.as_bytes()) {
                entries.remove(&self.id);
                if entries.is_empty() {
                    waiters.by_key.remove(self.key.as_bytes());
                }
            }
        }
        // Unregistered: a notice from now on finds no slot and goes to `dispatch_handoff`'s
        // pass-on, which the server refuses for a handoff already taken.
        let handoff = self.take_handoff();
        if done {
            // The waiter has the lock. A notice stored here is for that very lock: never pass
            // it on from here (one still to come is refused by the server, see above).
        } else if let Some(handoff) = handoff {
            // Handed a lock it will never use (the wait gave up or was dropped meanwhile).
            if let Some(token) = &self.token {
                self.shared.pass_on(&self.key, handoff.index, token);
            }
        } else if self.queued.load(Ordering::Relaxed) {
            if let (Some(janitor), Some(token)) = (&self.shared.janitor, self.token.take()) {
                let (queue, entries) = self.shared.ns.queue_keys(&self.key);
                let _ = janitor.send(Chore::Leave {
                    queue,
                    entries,
                    token,
                });
            }
        }
    }
}

/// Runs the clean-up commands of waiters that left. Ends when the hub is dropped.
async fn janitor(
    mut chores: mpsc::UnboundedReceiver<Chore>,
    mut conn: ConnectionManager,
    counter: String,
    release_channel: String,
    claim_window_ms: u64,
) {
    while let Some(chore) = chores.recv().await {
        match chore {
            Chore::Leave {
                queue,
                entries,
                token,
            } => {
                let r: redis::RedisResult<i64> =
                    Eval::new(&scripts::FAIR_LEAVE, &[&queue, &entries])
                        .arg(&token)
                        .invoke(&mut conn)
                        .await;
                if let Err(e) = r {
                    tracing::debug!(queue, token, error = %e, "could not leave the queue; the entry will expire");
                }
            }
            Chore::PassOn {
                key,
                queue,
                entries,
                index,
                token,
            } => {
                let r: redis::RedisResult<redis::Value> =
                    Eval::new(&scripts::FAIR_RELEASE, &[&key, &counter, &queue, &entries])
                        .arg(index)
                        .arg(&release_channel)
                        .arg(claim_window_ms)
                        .arg(&token)
                        .invoke(&mut conn)
                        .await;
                if let Err(e) = r {
                    tracing::warn!(key, index, error = %e, "could not pass on an unclaimed handoff; it expires after the claim window");
                }
            }
        }
    }
}

/// The subscriber loop: (re)connect, subscribe, fan out, until the hub is dropped.
///
/// It holds only a weak reference to the hub, so it never keeps its owner alive; the hub also
/// aborts it on drop.
///
/// On Redis 6 and later the subscription is a RESP3 connection whose push messages are
/// dispatched right in the connection's reader, one task hop less between a release and the
/// waiter than the RESP2 pub/sub stream, which older servers get.
async fn run(
    shared: Weak<Shared>,
    client: redis::Client,
    channels: Vec<String>,
    connect_timeout: Duration,
) {
    let resp3 = resp3_client(&client);
    let mut use_resp3 = resp3.is_some();
    let mut backoff = Duration::from_millis(25);
    loop {
        let outcome = match (&resp3, use_resp3) {
            (Some(resp3), true) => run_resp3(&shared, resp3, &channels, connect_timeout).await,
            _ => run_resp2(&shared, &client, &channels, connect_timeout).await,
        };
        match outcome {
            Session::Ended => backoff = Duration::from_millis(25),
            Session::Failed => {}
            Session::NoResp3 => {
                tracing::debug!("the server does not speak RESP3; subscribing with RESP2");
                use_resp3 = false;
                continue;
            }
            Session::HubGone => return,
        }
        if shared.strong_count() == 0 {
            return;
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// How one subscription session ended.
enum Session {
    /// It was up and then dropped.
    Ended,
    /// It never came up.
    Failed,
    /// The server refused RESP3.
    NoResp3,
    /// Nobody needs the hub any more.
    HubGone,
}

fn mark_subscribed(shared: &Weak<Shared>, channels: &[String]) -> bool {
    let Some(shared) = shared.upgrade() else {
        return false;
    };
    shared.state.send_modify(|s| {
        s.subscribed = true;
        s.generation += 1;
    });
    tracing::debug!(?channels, "subscribed");
    shared.wake_all();
    true
}

fn mark_unsubscribed(shared: &Weak<Shared>, channels: &[String]) -> Session {
    let Some(shared) = shared.upgrade() else {
        return Session::HubGone;
    };
    shared.state.send_modify(|s| s.subscribed = false);
    tracing::warn!(?channels, "subscription lost; reconnecting");
    Session::Ended
}

fn dispatch(shared: &Shared, channel: &[u8], payload: &[u8]) {
    if shared.handoff_channel.as_deref().map(str::as_bytes) == Some(channel) {
        shared.dispatch_handoff(payload);
    } else {
        shared.dispatch_release(payload);
    }
}

/// The same server, credentials and TLS settings (the connection info carries the address with
/// its certificates and `#insecure` flag), speaking RESP3.
fn resp3_client(client: &redis::Client) -> Option<redis::Client> {
    let info = client.get_connection_info().clone();
    let settings = info
        .redis_settings()
        .clone()
        .set_protocol(redis::ProtocolVersion::RESP3);
    redis::Client::open(info.set_redis_settings(settings)).ok()
}

async fn run_resp3(
    shared: &Weak<Shared>,
    client: &redis::Client,
    channels: &[String],
    connect_timeout: Duration,
) -> Session {
    let disconnected = Arc::new(Notify::new());
    let sender = {
        let shared = shared.clone();
        let disconnected = disconnected.clone();
        move |info: redis::PushInfo| -> Result<(), ()> {
            match info.kind {
                redis::PushKind::Message => {
                    if let (Some(shared), [channel, payload]) = (shared.upgrade(), &info.data[..]) {
                        if let (redis::Value::BulkString(c), redis::Value::BulkString(p)) =
                            (channel, payload)
                        {
                            dispatch(&shared, c, p);
                        }
                    }
                }
                // `notify_one` keeps a permit, so a disconnection before the wait is not lost.
                redis::PushKind::Disconnection => disconnected.notify_one(),
                _ => {}
            }
            Ok(())
        }
    };
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(connect_timeout))
        .set_response_timeout(Some(connect_timeout))
        .set_push_sender(sender);
    let connect = async {
        let mut conn = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        conn.subscribe(channels).await?;
        Ok::<_, redis::RedisError>(conn)
    };
    match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok(conn)) => {
            if !mark_subscribed(shared, channels) {
                return Session::HubGone;
            }
            disconnected.notified().await;
            drop(conn);
            mark_unsubscribed(shared, channels)
        }
        Ok(Err(err)) => {
            let text = err.to_string();
            if err.code() == Some("NOPROTO") || text.contains("HELLO") {
                return Session::NoResp3;
            }
            tracing::warn!(?channels, error = %err, "cannot subscribe");
            Session::Failed
        }
        Err(_) => {
            tracing::warn!(?channels, "subscribing timed out");
            Session::Failed
        }
    }
}

async fn run_resp2(
    shared: &Weak<Shared>,
    client: &redis::Client,
    channels: &[String],
    connect_timeout: Duration,
) -> Session {
    match tokio::time::timeout(connect_timeout, subscribe(client, channels)).await {
        Ok(Ok(pubsub)) => {
            if !mark_subscribed(shared, channels) {
                return Session::HubGone;
            }
            let mut messages = pubsub.into_on_message();
            while let Some(msg) = messages.next().await {
                let Some(shared) = shared.upgrade() else {
                    return Session::HubGone;
                };
                dispatch(
                    &shared,
                    msg.get_channel_name().as_bytes(),
                    msg.get_payload_bytes(),
                );
            }
            mark_unsubscribed(shared, channels)
        }
        Ok(Err(err)) => {
            tracing::warn!(?channels, error = %err, "cannot subscribe");
            Session::Failed
        }
        Err(_) => {
            tracing::warn!(?channels, "subscribing timed out");
            Session::Failed
        }
    }
}

async fn subscribe(
    client: &redis::Client,
    channels: &[String],
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    for channel in channels {
        pubsub.subscribe(channel).await?;
    }
    Ok(pubsub)
}
