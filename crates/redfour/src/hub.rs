//! The notification hub: one subscriber per server the engine names (`engine::Subscriptions`),
//! to the namespace's release channel (and, with the fair queue, to the client's own handoff
//! channel), fanned out to the waiters registered for each lock key. Where those servers are is
//! the engine's business: a fixed address, the master the sentinels name (looked up again at
//! every reconnection, and when it moves), or each Redlock master, all feeding the same waiters.
//!
//! When the engine hands over a sharded source instead (a cluster), each lock with waiters has
//! its own sharded channels (`SSUBSCRIBE`), subscribed while the lock has waiters, through a
//! cluster connection that follows the slots.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinHandle;

use crate::backoff::Backoff;
use crate::cleanup::{Cleanup, Ticket};
use crate::engine::{Conn, SubServer, Subscriptions};
use crate::keys::Namespace;
use crate::outcome::parse_index;
use crate::sync::lock;

/// Whether the subscription is live (for a waiter about to make its first attempt).
///
/// Waiters already waiting learn of a subscription that went down or came back from their
/// own slot instead: every such change wakes them all (notices sent while the subscription
/// was down are lost, so each tries again).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct HubState {
    pub(crate) subscribed: bool,
}

/// A lock handed straight to one of this client's waiters by a release (fair queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handoff {
    pub(crate) index: i64,
    /// How long the server keeps the handed-over lock unless the new holder claims it.
    pub(crate) window: Duration,
}

/// A change to the sharded subscriptions of a cluster hub.
enum SubChange {
    Subscribe(Arc<str>),
    Unsubscribe(Arc<str>),
}

/// Work for the janitor task, each counted as pending clean-up until done.
enum Chore {
    Leave {
        ticket: Ticket,
        key: Arc<str>,
        token: String,
    },
    PassOn {
        ticket: Ticket,
        key: String,
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

/// The registered waiters, by lock key and by registration id. A key is stored once, shared
/// by the map and the registrations of that lock.
#[derive(Default)]
struct Waiters {
    by_key: HashMap<Arc<str>, HashMap<u64, Arc<Slot>>>,
    by_id: HashMap<u64, Arc<Slot>>,
}

struct Shared {
    waiters: Mutex<Waiters>,
    next_id: AtomicU64,
    state: watch::Sender<HubState>,
    /// Subscriptions up (several with Redlock).
    live: AtomicUsize,
    notices: AtomicU64,
    /// Handoff notices that reached a registered waiter.
    handoffs: AtomicU64,
    /// Subscriptions that came back after they had been up and dropped.
    reconnects: AtomicU64,
    /// Names the channels, and tells them apart.
    ns: Namespace,
    /// The client's own handoff channel (Node layout with the fair queue).
    handoff_channel: Option<String>,
    /// Whether waiters queue (and so get tokens and handoffs).
    fair: bool,
    client_token: String,
    janitor: Option<mpsc::UnboundedSender<Chore>>,
    /// The client's count of clean-up work in the background.
    cleanup: Arc<Cleanup>,
    /// Cluster: the subscriber task's orders, and the locks whose channels are subscribed.
    sharded: Option<mpsc::UnboundedSender<SubChange>>,
    ready: Mutex<HashSet<Arc<str>>>,
}

impl Shared {
    /// The queue token of the waiter registered as `id`.
    fn token(&self, id: u64) -> String {
        format!("{}/{}", self.client_token, id)
    }

    #[allow(clippy::too_many_arguments)]
    fn new(
        state: watch::Sender<HubState>,
        ns: Namespace,
        handoff_channel: Option<String>,
        fair: bool,
        client_token: String,
        janitor: Option<mpsc::UnboundedSender<Chore>>,
        cleanup: Arc<Cleanup>,
        sharded: Option<mpsc::UnboundedSender<SubChange>>,
    ) -> Shared {
        Shared {
            waiters: Mutex::new(Waiters::default()),
            next_id: AtomicU64::new(0),
            state,
            live: AtomicUsize::new(0),
            notices: AtomicU64::new(0),
            handoffs: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            ns,
            handoff_channel,
            fair,
            client_token,
            janitor,
            cleanup,
            sharded,
            ready: Mutex::new(HashSet::new()),
        }
    }

    fn dispatch_release(&self, key: &[u8]) {
        // Lock keys are text: other bytes name no lock of this client's.
        let Ok(key) = std::str::from_utf8(key) else {
            return;
        };
        let waiters = lock(&self.waiters);
        if let Some(entries) = waiters.by_key.get(key) {
            // One add for them all, before any is woken: a waiter that reads the stats
            // after its wake-up finds its notice counted.
            self.notices
                .fetch_add(entries.len() as u64, Ordering::Relaxed);
            for slot in entries.values() {
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
        // An index in the one form the scripts write (1 ..= 2^53-1, plain decimal): the
        // release that a handed-over guard sends later trusts the index it was given.
        let (Some(index), Ok(window_ms)) = (parse_index(index), window.parse::<u64>()) else {
            tracing::warn!(payload = %text, "ignoring a malformed handoff notice");
            return;
        };
        let handoff = Handoff {
            index,
            window: Duration::from_millis(window_ms),
        };
        let Some(rest) = token
            .strip_prefix(self.client_token.as_str())
            .and_then(|rest| rest.strip_prefix('/'))
        else {
            // For a waiter of another client (a cluster's handoff channels are per lock and
            // shared by every client): not ours to act on.
            return;
        };
        let id = rest.parse::<u64>().ok();
        // Stored under the waiters' lock: a registration dropped meanwhile is either still
        // there (its drop, which unregisters under that lock and then looks, finds the handoff
        // and passes it on) or already gone (passed on below). Stored after the lookup, once
        // the lock is let go, it could land in a slot nobody reads any more, and the lock would
        // stay handed to nobody for the claim window.
        let slot = id.and_then(|id| {
            let waiters = lock(&self.waiters);
            let slot = waiters.by_id.get(&id)?;
            *lock(&slot.handoff) = Some(handoff);
            Some(slot.clone())
        });
        match slot {
            Some(slot) => {
                self.notices.fetch_add(1, Ordering::Relaxed);
                self.handoffs.fetch_add(1, Ordering::Relaxed);
                // Its own target, so that a profiler can time the notice's arrival alone.
                tracing::trace!(target: "redfour::handoff_notice", key, index, "handoff notice");
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
            let _ = janitor.send(Chore::PassOn {
                ticket: self.cleanup.ticket(),
                key: key.to_owned(),
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

    /// Wakes the waiters of one lock without a notice (they try again): its sharded
    /// subscription came (back), and notices may have been lost meanwhile.
    fn wake_key(&self, key: &str) {
        let waiters = lock(&self.waiters);
        if let Some(entries) = waiters.by_key.get(key) {
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
    /// Starts the subscriber task(s) (and, for the fair queue, the janitor). Must be called
    /// inside a Tokio runtime.
    pub(crate) fn start(
        subscriptions: Subscriptions,
        ns: Namespace,
        connect_timeout: Duration,
        cleanup: Arc<Cleanup>,
    ) -> Hub {
        let Subscriptions {
            servers,
            sharded: cluster,
            fair,
        } = subscriptions;
        let (state, _) = watch::channel(HubState::default());
        let mut channels = Channels::default();
        let mut tasks = Vec::new();
        let fair_on = fair.is_some();
        if fair_on {
            channels
                .patterns
                .push((ns.release_pattern(), ns.channel("").into_owned()));
        } else {
            channels.exact.push(ns.channel("").into_owned());
        }
        let (janitor, handoff_channel, client_token) = match fair {
            Some(setup) => {
                if let Some(channel) = &setup.handoff_channel {
                    channels.exact.push(channel.clone());
                }
                let (tx, rx) = mpsc::unbounded_channel();
                tasks.push(tokio::spawn(janitor(
                    rx,
                    setup.conn,
                    ns.clone(),
                    setup.claim_window_ms,
                )));
                (Some(tx), setup.handoff_channel, setup.client_token)
            }
            None => (None, None, String::new()),
        };
        let (sharded, orders) = cluster.as_ref().map(|_| mpsc::unbounded_channel()).unzip();
        let shared = Arc::new(Shared::new(
            state,
            ns,
            handoff_channel,
            fair_on,
            client_token,
            janitor,
            cleanup,
            sharded,
        ));
        for server in servers {
            tasks.push(tokio::spawn(run(
                Arc::downgrade(&shared),
                server,
                channels.clone(),
                connect_timeout,
            )));
        }
        if let (Some(builder), Some(orders)) = (cluster, orders) {
            tasks.push(tokio::spawn(run_cluster(
                Arc::downgrade(&shared),
                builder,
                orders,
                connect_timeout,
            )));
        }
        Hub { shared, tasks }
    }

    /// Registers a waiter for `key`. The registration is removed when dropped.
    pub(crate) fn register(&self, key: &str) -> Registration {
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = Arc::new(Slot {
            notify: Notify::new(),
            handoff: Mutex::new(None),
        });
        let key = {
            let mut waiters = lock(&self.shared.waiters);
            // The lock's other waiters share its key.
            let key: Arc<str> = match waiters.by_key.get_key_value(key) {
                Some((shared, _)) => shared.clone(),
                None => key.into(),
            };
            let entries = waiters.by_key.entry(key.clone()).or_default();
            let first = entries.is_empty();
            entries.insert(id, slot.clone());
            waiters.by_id.insert(id, slot.clone());
            if first {
                if let Some(orders) = &self.shared.sharded {
                    // Under the waiters' lock, so that orders for one key go out in the order
                    // its registrations came and went.
                    let _ = orders.send(SubChange::Subscribe(key.clone()));
                }
            }
            key
        };
        let token = self.shared.fair.then(|| self.shared.token(id));
        Registration {
            shared: self.shared.clone(),
            key,
            id,
            slot,
            token,
            queued: AtomicBool::new(false),
            done: AtomicBool::new(false),
        }
    }

    /// With the fair queue, the queue token of the waiter for `key` registered first.
    pub(crate) fn first_token(&self, key: &str) -> Option<String> {
        if !self.shared.fair {
            return None;
        }
        let first = *lock(&self.shared.waiters).by_key.get(key)?.keys().min()?;
        Some(self.shared.token(first))
    }

    pub(crate) fn registrations(&self) -> usize {
        lock(&self.shared.waiters).by_id.len()
    }

    /// Notices (release or handoff) delivered to waiters so far.
    pub(crate) fn notices(&self) -> u64 {
        self.shared.notices.load(Ordering::Relaxed)
    }

    /// Handoff notices that reached a registered waiter so far.
    pub(crate) fn handoffs(&self) -> u64 {
        self.shared.handoffs.load(Ordering::Relaxed)
    }

    /// Subscriptions that came back after they had been up and dropped, so far.
    pub(crate) fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }
}

/// A waiter's place in the hub. Dropping it deregisters the waiter and, with the fair queue,
/// takes it out of the server's queue (or passes on a lock handed to it too late).
pub(crate) struct Registration {
    shared: Arc<Shared>,
    key: Arc<str>,
    id: u64,
    slot: Arc<Slot>,
    token: Option<String>,
    queued: AtomicBool,
    done: AtomicBool,
}

impl Registration {
    /// Resolves on the next notice for the key, or when the subscription went down or came
    /// back. A wake-up that came since the last call is not lost: `Notify` keeps one permit.
    pub(crate) async fn notified(&self) {
        self.slot.notify.notified().await;
    }

    /// Waits (at most `limit`) until notices for this waiter's lock can arrive: the
    /// subscription is up, and on a cluster the lock's own channels are subscribed. Past
    /// `limit` the waiter goes on anyway: its fallback timer still wakes it.
    pub(crate) async fn ready(&self, limit: Duration) {
        let _ = tokio::time::timeout(limit, async {
            // Whatever makes it ready (the subscription coming up, on a cluster this lock's
            // channels subscribed) wakes the registered waiters, after the change: a wake-up
            // between the check and the wait is kept as the slot's permit.
            while !self.can_hear() {
                self.slot.notify.notified().await;
            }
        })
        .await;
    }

    /// Whether notices for this waiter's lock can arrive now.
    fn can_hear(&self) -> bool {
        self.shared.state.borrow().subscribed
            && (self.shared.sharded.is_none() || lock(&self.shared.ready).contains(&*self.key))
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

    /// The waiter left the queue itself: dropping the registration need not.
    pub(crate) fn left(&self) {
        self.queued.store(false, Ordering::Relaxed);
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
            if let Some(entries) = waiters.by_key.get_mut(&*self.key) {
                entries.remove(&self.id);
                if entries.is_empty() {
                    waiters.by_key.remove(&*self.key);
                    if let Some(orders) = &self.shared.sharded {
                        let _ = orders.send(SubChange::Unsubscribe(self.key.clone()));
                    }
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
                let _ = janitor.send(Chore::Leave {
                    ticket: self.shared.cleanup.ticket(),
                    key: self.key.clone(),
                    token,
                });
            }
        }
    }
}

/// Runs the clean-up commands of waiters that left. Ends when the hub is dropped.
async fn janitor(
    mut chores: mpsc::UnboundedReceiver<Chore>,
    mut conn: Conn,
    ns: Namespace,
    claim_window_ms: u64,
) {
    while let Some(chore) = chores.recv().await {
        match chore {
            Chore::Leave {
                // Held until the command's answer is in.
                ticket: _ticket,
                key,
                token,
            } => {
                let r: redis::RedisResult<i64> =
                    ns.leave_call(&key, &token).invoke(&mut conn).await;
                if let Err(e) = r {
                    tracing::debug!(key = &*key, token, error = %e, "could not leave the queue; the entry will expire");
                }
            }
            Chore::PassOn {
                ticket: _ticket,
                key,
                index,
                token,
            } => {
                let r: redis::RedisResult<redis::Value> = ns
                    .fair_release_call(&key, index, claim_window_ms, Some(&token))
                    .invoke(&mut conn)
                    .await;
                if let Err(e) = r {
                    tracing::warn!(key, index, error = %e, "could not pass on an unclaimed handoff; it expires after the claim window");
                }
            }
        }
    }
}

/// What a subscriber of one server listens on: channels by name, and patterns (`PSUBSCRIBE`).
/// With the fair queue the release channel is subscribed by a pattern that matches it alone:
/// `PUBSUB NUMSUB` does not count pattern subscribers, so the scripts can count the clients
/// that wait without queueing (Node redfour's, and this library's with the queue off) by that
/// command (see "Outsiders' turns" in scripts/fair_common.lua).
/// A user whose ACL rule does not allow the pattern (`NOPERM`) subscribes to the channel itself,
/// and is then counted with the outsiders (see `subscribed_by_name`).
#[derive(Debug, Clone, Default)]
struct Channels {
    exact: Vec<String>,
    /// (pattern, the one channel it matches).
    patterns: Vec<(String, String)>,
}

/// Whether a subscription to a pattern was refused by the user's ACL rule, so that the
/// channel itself is subscribed instead.
fn subscribed_by_name(err: &redis::RedisError, channel: &str) -> bool {
    let refused = err.code() == Some("NOPERM");
    if refused {
        tracing::warn!(
            channel,
            "the ACL rule does not allow PSUBSCRIBE of the release channel; subscribing to it by name, which counts this client among the waiters outside the queue: where the rule allows PUBSUB NUMSUB, releases then give turns nobody takes (a 50 ms pause, after 63 releases at the most once backed off); add the channel itself to the rule (see the README on ACLs)"
        );
    }
    refused
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
    server: SubServer,
    channels: Channels,
    connect_timeout: Duration,
) {
    let mut use_resp3 = true;
    let mut backoff = Backoff::new(Duration::from_millis(25), Duration::from_secs(2));
    // Whether a session of this task was up before: the next one to come up is a reconnect.
    let mut again = false;
    loop {
        // A move of the server (a failover the sentinels announce) ends the session:
        // subscribe at the new one. Watched from before the server is looked up, so that a
        // move meanwhile counts.
        let mut switched = server.moves();
        let client = server.locate(connect_timeout).await;
        let moved = async {
            match &mut switched {
                Some(switches) => {
                    if switches.changed().await.is_err() {
                        std::future::pending::<()>().await;
                    }
                }
                None => std::future::pending::<()>().await,
            }
        };
        let session = async {
            match client {
                Ok(client) => match (resp3_client(&client), use_resp3) {
                    (Some(resp3), true) => {
                        run_resp3(&shared, &resp3, &channels, connect_timeout, again).await
                    }
                    _ => run_resp2(&shared, &client, &channels, connect_timeout, again).await,
                },
                Err(e) => {
                    tracing::warn!(error = %e, "cannot find the master to subscribe to");
                    Session::Failed
                }
            }
        };
        let outcome = tokio::select! {
            outcome = session => outcome,
            () = moved => {
                // The session's connection is dropped with it: mark the subscription down.
                mark_unsubscribed(&shared, &channels)
            }
        };
        if let Session::Ended = outcome {
            server.session_ended();
        }
        match outcome {
            Session::Ended => {
                again = true;
                backoff.reset();
            }
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
        backoff.wait().await;
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

/// `again`: an earlier session of the same subscriber task was up (a reconnect).
fn mark_subscribed(shared: &Weak<Shared>, channels: &Channels, again: bool) -> bool {
    let Some(shared) = shared.upgrade() else {
        return false;
    };
    if again {
        shared.reconnects.fetch_add(1, Ordering::Relaxed);
        crate::metrics::reconnect(crate::metrics::Role::Subscriptions);
    }
    shared.live.fetch_add(1, Ordering::Relaxed);
    shared.state.send_modify(|s| s.subscribed = true);
    tracing::debug!(?channels, "subscribed");
    shared.wake_all();
    true
}

fn mark_unsubscribed(shared: &Weak<Shared>, channels: &Channels) -> Session {
    let Some(shared) = shared.upgrade() else {
        return Session::HubGone;
    };
    let live = shared
        .live
        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
            Some(n.saturating_sub(1))
        })
        .map_or(0, |n| n.saturating_sub(1));
    shared.state.send_modify(|s| s.subscribed = live > 0);
    tracing::warn!(?channels, "subscription lost; reconnecting");
    // Notices are lost until it is back: every waiter tries again now, and once more when
    // it is back.
    shared.wake_all();
    Session::Ended
}

fn dispatch(shared: &Shared, channel: &[u8], payload: &[u8]) {
    if shared
        .ns
        .is_handoff_channel(channel, shared.handoff_channel.as_deref())
    {
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
    channels: &Channels,
    connect_timeout: Duration,
    again: bool,
) -> Session {
    let disconnected = Arc::new(Notify::new());
    let sender = {
        let shared = shared.clone();
        let disconnected = disconnected.clone();
        move |info: redis::PushInfo| -> Result<(), ()> {
            match info.kind {
                redis::PushKind::Message | redis::PushKind::PMessage => {
                    // A pattern's message names the pattern first.
                    let (channel, payload) = match &info.data[..] {
                        [channel, payload] | [_, channel, payload] => (channel, payload),
                        _ => return Ok(()),
                    };
                    if let (
                        Some(shared),
                        redis::Value::BulkString(c),
                        redis::Value::BulkString(p),
                    ) = (shared.upgrade(), channel, payload)
                    {
                        dispatch(&shared, c, p);
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
        if !channels.exact.is_empty() {
            conn.subscribe(&channels.exact).await?;
        }
        for (pattern, channel) in &channels.patterns {
            if let Err(e) = conn.psubscribe(pattern).await {
                if !subscribed_by_name(&e, channel) {
                    return Err(e);
                }
                conn.subscribe(channel).await?;
            }
        }
        Ok::<_, redis::RedisError>(conn)
    };
    match tokio::time::timeout(connect_timeout, connect).await {
        Ok(Ok(conn)) => {
            if !mark_subscribed(shared, channels, again) {
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
    channels: &Channels,
    connect_timeout: Duration,
    again: bool,
) -> Session {
    match tokio::time::timeout(connect_timeout, subscribe(client, channels)).await {
        Ok(Ok(pubsub)) => {
            if !mark_subscribed(shared, channels, again) {
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
    channels: &Channels,
) -> redis::RedisResult<redis::aio::PubSub> {
    let mut pubsub = client.get_async_pubsub().await?;
    for channel in &channels.exact {
        pubsub.subscribe(channel).await?;
    }
    for (pattern, channel) in &channels.patterns {
        if let Err(e) = pubsub.psubscribe(pattern).await {
            if !subscribed_by_name(&e, channel) {
                return Err(e);
            }
            pubsub.subscribe(channel).await?;
        }
    }
    Ok(pubsub)
}

/// The cluster subscriber: one RESP3 cluster connection whose push messages are dispatched in
/// its reader. Each lock with waiters has its two sharded channels subscribed (`SSUBSCRIBE`
/// goes to the master of the lock's slot); the cluster connection subscribes again after a
/// reconnection or a slot move, and the server's own `SUNSUBSCRIBE` (sent when the slot moves
/// away from a node) makes this task subscribe again at once. Every (re)subscription wakes
/// the lock's waiters, since notices may have been lost meanwhile.
async fn run_cluster(
    shared: Weak<Shared>,
    builder: redis::cluster::ClusterClientBuilder,
    mut orders: mpsc::UnboundedReceiver<SubChange>,
    connect_timeout: Duration,
) {
    let sender = {
        let shared = shared.clone();
        move |info: redis::PushInfo| -> Result<(), ()> {
            let Some(shared) = shared.upgrade() else {
                return Ok(());
            };
            let channel = match info.data.first() {
                Some(redis::Value::BulkString(c)) => c,
                _ => return Ok(()),
            };
            let key = shared.ns.lock_of_release_channel(channel);
            match info.kind {
                redis::PushKind::SMessage => {
                    if let Some(redis::Value::BulkString(payload)) = info.data.get(1) {
                        dispatch(&shared, channel, payload);
                    }
                }
                redis::PushKind::SSubscribe => {
                    if let Some(key) = key.and_then(|k| std::str::from_utf8(k).ok()) {
                        let wanted = lock(&shared.waiters).by_key.contains_key(key);
                        if wanted {
                            lock(&shared.ready).insert(key.into());
                            shared.wake_key(key);
                        }
                    }
                }
                redis::PushKind::SUnsubscribe => {
                    if let Some(key) = key.and_then(|k| std::str::from_utf8(k).ok()) {
                        lock(&shared.ready).remove(key);
                        let wanted = lock(&shared.waiters).by_key.contains_key(key);
                        if wanted {
                            tracing::debug!(key, "sharded subscription dropped by the server (slot moved?); subscribing again");
                            shared.wake_key(key);
                            if let Some(orders) = &shared.sharded {
                                let _ = orders.send(SubChange::Subscribe(key.into()));
                            }
                        }
                    }
                }
                _ => {}
            }
            Ok(())
        }
    };
    let client = match builder
        .use_protocol(redis::ProtocolVersion::RESP3)
        .push_sender(sender)
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the cluster subscription client; waiters will poll");
            return;
        }
    };
    let mut backoff = Backoff::new(Duration::from_millis(25), Duration::from_secs(2));
    let mut conn = loop {
        match tokio::time::timeout(connect_timeout, client.get_async_connection()).await {
            Ok(Ok(conn)) => break conn,
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot connect to the cluster to subscribe"),
            Err(_) => tracing::warn!("connecting to the cluster to subscribe timed out"),
        }
        if shared.strong_count() == 0 {
            return;
        }
        backoff.wait().await;
    };
    if !mark_subscribed(&shared, &Channels::default(), false) {
        return;
    }
    while let Some(order) = orders.recv().await {
        let Some(hub) = shared.upgrade() else {
            return;
        };
        match order {
            SubChange::Subscribe(key) => {
                if !lock(&hub.waiters).by_key.contains_key(&*key) {
                    continue;
                }
                let subscribed = tokio::time::timeout(
                    connect_timeout,
                    conn.ssubscribe(&hub.ns.lock_channels(&key)[..]),
                )
                .await;
                match subscribed {
                    Ok(Ok(())) => {
                        lock(&hub.ready).insert(key.clone());
                        hub.wake_key(&key);
                    }
                    failed => {
                        match failed {
                            Ok(Err(e)) => {
                                tracing::warn!(key = &*key, error = %e, "cannot subscribe to the lock's channels; retrying")
                            }
                            _ => {
                                tracing::warn!(
                                    key = &*key,
                                    "subscribing to the lock's channels timed out; retrying"
                                )
                            }
                        }
                        // Retried later from the queue of orders, so that one unreachable
                        // slot does not hold up the subscriptions of every other lock.
                        if let Some(orders) = hub.sharded.clone() {
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_millis(250)).await;
                                let _ = orders.send(SubChange::Subscribe(key));
                            });
                        }
                    }
                }
            }
            SubChange::Unsubscribe(key) => {
                if lock(&hub.waiters).by_key.contains_key(&*key) {
                    // Waiters came back meanwhile.
                    continue;
                }
                lock(&hub.ready).remove(&key);
                let unsubscribed = tokio::time::timeout(
                    connect_timeout,
                    conn.sunsubscribe(&hub.ns.lock_channels(&key)[..]),
                )
                .await;
                if !matches!(unsubscribed, Ok(Ok(()))) {
                    tracing::debug!(
                        key = &*key,
                        "could not unsubscribe from the lock's channels"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use futures_util::FutureExt;

    use super::*;

    /// A hub with no subscription and no janitor: notices are fed to `dispatch` by hand.
    fn detached(handoff_channel: Option<&str>) -> Hub {
        detached_in(
            Namespace::new("lock").expect("a valid namespace"),
            handoff_channel,
            handoff_channel.is_some(),
        )
    }

    fn detached_in(ns: Namespace, handoff_channel: Option<&str>, fair: bool) -> Hub {
        with_janitor(ns, handoff_channel, fair, None)
    }

    /// As `detached_in`, with the janitor's orders going to `janitor` (read by the test).
    fn with_janitor(
        ns: Namespace,
        handoff_channel: Option<&str>,
        fair: bool,
        janitor: Option<mpsc::UnboundedSender<Chore>>,
    ) -> Hub {
        let (state, _) = watch::channel(HubState::default());
        let shared = Arc::new(Shared::new(
            state,
            ns,
            handoff_channel.map(str::to_owned),
            fair,
            "me".to_owned(),
            janitor,
            Arc::default(),
            None,
        ));
        Hub {
            shared,
            tasks: Vec::new(),
        }
    }

    /// Whether the waiter was woken (a stored permit completes `notified` at once).
    fn woken(registration: &Registration) -> bool {
        registration.notified().now_or_never().is_some()
    }

    #[test]
    fn a_release_notice_wakes_every_waiter_of_that_lock_and_no_other() {
        let hub = detached(None);
        let a1 = hub.register("lock:a");
        let a2 = hub.register("lock:a");
        let b = hub.register("lock:b");
        assert_eq!(hub.registrations(), 3);
        dispatch(&hub.shared, b"lock-release", b"lock:a");
        assert!(woken(&a1) && woken(&a2));
        assert!(!woken(&b), "another lock's waiter");
        assert_eq!(hub.notices(), 2);
        // A lock with no waiter: nobody to wake, nothing counted.
        dispatch(&hub.shared, b"lock-release", b"lock:c");
        assert_eq!(hub.notices(), 2);
        drop(a1);
        dispatch(&hub.shared, b"lock-release", b"lock:a");
        assert!(woken(&a2));
        assert_eq!(hub.notices(), 3, "a dropped registration is not woken");
        drop((a2, b));
        assert_eq!(hub.registrations(), 0);
    }

    #[test]
    fn a_handoff_reaches_only_the_waiter_it_names() {
        let hub = detached(Some("lock-handoff:me"));
        let first = hub.register("lock:a");
        let second = hub.register("lock:a");
        let token = second.token().expect("fair waiters have tokens").to_owned();
        assert!(token.starts_with("me/"), "{token}");
        let notice = format!("{token} 42 5000 lock:a");
        dispatch(&hub.shared, b"lock-handoff:me", notice.as_bytes());
        assert!(woken(&second) && !woken(&first));
        assert_eq!(
            second.take_handoff(),
            Some(Handoff {
                index: 42,
                window: Duration::from_millis(5000)
            })
        );
        assert_eq!(first.take_handoff(), None);
        assert_eq!(hub.handoffs(), 1);
        // Another client's waiter, a malformed notice: ignored.
        for payload in [
            "other/0 7 5000 lock:a",
            "me/0 x 5000 lock:a",
            "me/0 7",
            "",
            // Not an index as the scripts write it: out of range, or not plain decimal.
            "me/0 9007199254740992 5000 lock:a",
            "me/0 0 5000 lock:a",
            "me/0 -7 5000 lock:a",
            "me/0 +7 5000 lock:a",
            "me/0 07 5000 lock:a",
        ] {
            dispatch(&hub.shared, b"lock-handoff:me", payload.as_bytes());
        }
        assert!(!woken(&first) && first.take_handoff().is_none());
        assert_eq!(hub.handoffs(), 1);
        // On the release channel, the same bytes are a lock key, not a handoff.
        dispatch(&hub.shared, b"lock-release", notice.as_bytes());
        assert!(second.take_handoff().is_none());
    }

    #[test]
    fn in_the_cluster_layout_each_locks_handoff_channel_carries_handoffs() {
        let ns = Namespace::with_layout("lock", crate::keys::Layout::Cluster).expect("namespace");
        let key = ns.lock_key("a").expect("key");
        let [release, handoff] = ns.lock_channels(&key);
        let hub = detached_in(ns, None, true);
        let waiter = hub.register(&key);
        let token = waiter.token().expect("fair waiters have tokens").to_owned();
        let notice = format!("{token} 7 5000 {key}");
        // On the lock's release channel the same bytes are a lock key, not a handoff.
        dispatch(&hub.shared, release.as_bytes(), notice.as_bytes());
        assert!(waiter.take_handoff().is_none());
        dispatch(&hub.shared, handoff.as_bytes(), notice.as_bytes());
        assert!(woken(&waiter));
        assert_eq!(waiter.take_handoff().map(|h| h.index), Some(7));
        // A release on the lock's own channel names the lock.
        dispatch(&hub.shared, release.as_bytes(), key.as_bytes());
        assert!(woken(&waiter));
        assert_eq!(hub.handoffs(), 1);
    }

    /// A handoff notice that races the drop of the waiter it names is passed on exactly once:
    /// by the drop when the notice was stored first, by the dispatch when the waiter was gone
    /// first, never by neither (the lock would sit handed to nobody for the claim window).
    #[test]
    fn a_handoff_racing_its_waiters_drop_is_passed_on_exactly_once() {
        const ROUNDS: usize = 40_000;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let ns = Namespace::new("lock").expect("namespace");
        let hub = with_janitor(ns, Some("lock-handoff:me"), true, Some(tx));
        let barrier = std::sync::Barrier::new(2);
        let mut lost = 0;
        for round in 0..ROUNDS {
            let waiter = hub.register("lock:a");
            let notice = format!(
                "{} {} 5000 lock:a",
                waiter.token().expect("token"),
                round + 1
            );
            let waiter = Mutex::new(Some(waiter));
            std::thread::scope(|threads| {
                threads.spawn(|| {
                    barrier.wait();
                    dispatch(&hub.shared, b"lock-handoff:me", notice.as_bytes());
                });
                threads.spawn(|| {
                    barrier.wait();
                    drop(lock(&waiter).take());
                });
            });
            let mut passed_on = 0;
            while let Ok(chore) = rx.try_recv() {
                if let Chore::PassOn { index, .. } = chore {
                    assert_eq!(index, round as i64 + 1);
                    passed_on += 1;
                }
            }
            assert!(passed_on <= 1, "round {round}: passed on {passed_on} times");
            lost += 1 - passed_on;
        }
        assert_eq!(lost, 0, "handoffs passed on by nobody in {ROUNDS} rounds");
    }
}
