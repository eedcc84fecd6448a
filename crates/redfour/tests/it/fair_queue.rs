//! The fair queue (`ClientBuilder::fair(true)`): FIFO order, direct handoff with one notice
//! and no broadcast, dead and cancelled waiters that must not block the queue, a handoff to a
//! waiter dropped at that very moment, the claim of a handed-over lock, Node-style (unfair)
//! clients on the same keys, and exclusion under contention.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use redfour::{LockGuard, ReleaseOutcome};
use redfour_test::{wait_until_async, RedisServer};
use redis::AsyncCommands;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::common::{self, exists, int, pttl, stored_index, strings, text, DEADLINE};

/// A ttl no test reaches: a lock that goes away did so because it was released or handed over.
const TTL: Duration = Duration::from_secs(30);

/// How long a waiter may take to get a lock handed to it (one notice, a few round trips),
/// with ample room for a loaded machine; far below every poll interval and claim window that
/// would otherwise hide a lost notice.
const HANDOFF: Duration = Duration::from_secs(2);

/// A fair client of `server`; waiters poll every 5 s at most, so a waiter that gets the lock
/// sooner was told so.
fn fair(server: &RedisServer) -> redfour::ClientBuilder {
    common::builder(server)
        .fair(true)
        .max_poll_interval(Duration::from_secs(5))
}

fn queue_key(id: &str) -> String {
    format!("lock-queue:{id}")
}

fn entries_key(id: &str) -> String {
    format!("lock-waiters:{id}")
}

/// How many waiters queue for `id`.
fn queued(server: &RedisServer, id: &str) -> i64 {
    int(server, &["LLEN", &queue_key(id)])
}

/// How many queue entries `id` has.
fn entries(server: &RedisServer, id: &str) -> i64 {
    int(server, &["HLEN", &entries_key(id)])
}

/// Polls until exactly `n` waiters queue for `id`; returns the token of the last one.
async fn until_queued(server: &RedisServer, id: &str, n: usize) -> String {
    let reached = wait_until_async(DEADLINE, || async { queued(server, id) == n as i64 }).await;
    assert!(
        reached,
        "expected {n} queued waiters on {id}, found {}: {:?}",
        queued(server, id),
        strings(server, &["LRANGE", &queue_key(id), "0", "-1"])
    );
    text(server, &["LINDEX", &queue_key(id), &(n - 1).to_string()]).expect("queued token")
}

/// The waiter token a handed-over lock is reserved for.
fn handoff_field(server: &RedisServer, id: &str) -> Option<String> {
    text(server, &["HGET", &format!("lock:{id}"), "handoff"])
}

/// The server clock in milliseconds (`TIME`), the clock queue entries expire on.
fn server_ms(server: &RedisServer) -> i64 {
    let t = strings(server, &["TIME"]);
    let secs: i64 = t[0].parse().expect("TIME seconds");
    let micros: i64 = t[1].parse().expect("TIME microseconds");
    secs * 1000 + micros / 1000
}

/// Puts a waiter that is not there at the tail of the queue of `id`: its handoff channel
/// has no subscriber.
fn push_ghost(server: &RedisServer, id: &str, token: &str, expires_ms: i64) {
    int(server, &["RPUSH", &queue_key(id), token]);
    let entry = format!(r#"{{"t":10000,"e":{expires_ms},"c":"lock-handoff:nobody","m":[]}}"#);
    int(server, &["HSET", &entries_key(id), token, &entry]);
}

fn notices(clients: &[redfour::Client]) -> Vec<u64> {
    clients
        .iter()
        .map(|c| c.stats().notices_delivered)
        .collect()
}

fn handoffs(clients: &[redfour::Client]) -> Vec<u64> {
    clients
        .iter()
        .map(|c| c.stats().handoffs_received)
        .collect()
}

/// A plain Redis subscriber, as a Node process listens, recording every message.
struct Listener {
    messages: Arc<Mutex<Vec<(String, String)>>>,
    task: JoinHandle<()>,
}

impl Listener {
    /// Returns once the server confirmed the subscription.
    async fn start(server: &RedisServer, channel: &str) -> Listener {
        Listener::subscribed(server, channel, false).await
    }

    /// The same by a pattern that matches `channel` alone (a fair client listens so):
    /// `PUBSUB NUMSUB` does not count it, so it is not taken for a Node process waiting
    /// without the queue, to which releases would give turns.
    async fn by_pattern(server: &RedisServer, channel: &str) -> Listener {
        Listener::subscribed(server, channel, true).await
    }

    async fn subscribed(server: &RedisServer, channel: &str, pattern: bool) -> Listener {
        let raw = server.client();
        let mut pubsub = raw.get_async_pubsub().await.expect("subscriber");
        if pattern {
            pubsub.psubscribe(channel).await.expect("PSUBSCRIBE");
        } else {
            pubsub.subscribe(channel).await.expect("SUBSCRIBE");
        }
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        let task = tokio::spawn(async move {
            let mut stream = pubsub.into_on_message();
            while let Some(msg) = stream.next().await {
                let payload: String = msg.get_payload().unwrap_or_default();
                sink.lock()
                    .expect("not poisoned")
                    .push((msg.get_channel_name().to_owned(), payload));
            }
        });
        Listener { messages, task }
    }

    fn messages(&self) -> Vec<(String, String)> {
        self.messages.lock().expect("not poisoned").clone()
    }

    /// Polls until at least one message arrived; returns them all.
    async fn until_message(&self) -> Vec<(String, String)> {
        self.until_messages(1).await
    }

    /// Polls until at least `n` messages arrived; returns them all.
    async fn until_messages(&self, n: usize) -> Vec<(String, String)> {
        wait_until_async(DEADLINE, || async { self.messages().len() >= n }).await;
        let messages = self.messages();
        assert!(
            messages.len() >= n,
            "{} of {n} messages: {messages:?}",
            messages.len()
        );
        messages
    }
}

/// One-shot acquires of `id` (`acquire_lock`), every few ms, until one succeeds; panics at
/// the deadline.
async fn poll_until_acquired(
    locks: &redfour::Client,
    id: &str,
    ttl: Duration,
) -> redfour::AcquireResponse {
    let started = Instant::now();
    loop {
        let attempt = locks.acquire_lock(id, ttl).await.expect("an attempt");
        if attempt.success {
            return attempt;
        }
        assert!(
            started.elapsed() < DEADLINE,
            "{id} was never free: {attempt:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Spawns a waiter that sends its guard to `tx` once it holds the lock.
fn spawn_waiter(
    locks: &redfour::Client,
    id: &str,
    ttl: Duration,
    w: usize,
    tx: &mpsc::UnboundedSender<(usize, LockGuard)>,
) -> JoinHandle<()> {
    let locks = locks.clone();
    let id = id.to_owned();
    let tx = tx.clone();
    tokio::spawn(async move {
        let guard = locks
            .lock(id)
            .ttl(ttl)
            .wait(DEADLINE)
            .acquire()
            .await
            .expect("acquire");
        tx.send((w, guard)).expect("the test is listening");
    })
}

/// Receives the next guard, failing if none comes within [`HANDOFF`].
async fn next_guard(rx: &mut mpsc::UnboundedReceiver<(usize, LockGuard)>) -> (usize, LockGuard) {
    tokio::time::timeout(HANDOFF, rx.recv())
        .await
        .expect("no waiter got the lock in time")
        .expect("a waiter task failed")
}

/// Six waiters, each on its own client, queue one after another behind a holder: they get
/// the lock in that order, with increasing fencing indexes, each as soon as the previous one
/// lets go (the poll interval is 5 s: nobody waits for a timer).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiters_get_the_lock_in_the_order_they_queued() {
    const WAITERS: usize = 6;
    let server = RedisServer::start();
    let holder = fair(&server).build().unwrap();
    let held = holder
        .lock("fifo")
        .ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");

    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    let mut tokens = Vec::new();
    for w in 0..WAITERS {
        let locks = fair(&server).build().unwrap();
        let order = order.clone();
        tasks.push(tokio::spawn(async move {
            let guard = locks
                .lock("fifo")
                .ttl(TTL)
                .wait(DEADLINE)
                .acquire()
                .await
                .expect("acquire");
            order.lock().unwrap().push((w, guard.index()));
            // Hold it a little, so that the next waiter really has to wait for this one.
            tokio::time::sleep(Duration::from_millis(10)).await;
            assert_eq!(
                guard.release().await.unwrap().result,
                ReleaseOutcome::Released
            );
        }));
        tokens.push(until_queued(&server, "fifo", w + 1).await);
    }
    assert_eq!(
        strings(&server, &["LRANGE", &queue_key("fifo"), "0", "-1"]),
        tokens,
        "the queue is not in arrival order"
    );

    let started = Instant::now();
    let held_index = held.index();
    assert_eq!(
        held.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
    for task in tasks {
        tokio::time::timeout(DEADLINE, task)
            .await
            .expect("a waiter never got the lock")
            .unwrap();
    }
    let took = started.elapsed();

    let order = order.lock().unwrap().clone();
    let who: Vec<usize> = order.iter().map(|(w, _)| *w).collect();
    assert_eq!(who, (0..WAITERS).collect::<Vec<_>>(), "{order:?}");
    let mut last = held_index;
    for (w, index) in &order {
        assert!(*index > last, "waiter {w}: index {index} after {last}");
        last = *index;
    }
    assert!(
        took < Duration::from_secs(3),
        "{WAITERS} handoffs took {took:?}: someone waited for its poll timer"
    );
    assert!(!exists(&server, "lock:fifo"));
    assert_eq!(queued(&server, "fifo"), 0);
    assert_eq!(entries(&server, "fifo"), 0);
}

/// A release with waiters hands the lock over in the release script itself (the lock key
/// never disappears), tells the first waiter only (one notice per handoff), and publishes
/// nothing on the release channel; the last release, with nobody queued, publishes as Node
/// redfour does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_hands_over_directly_with_one_notice() {
    const WAITERS: usize = 4;
    let server = RedisServer::start();
    let holder = fair(&server).build().unwrap();
    let held = holder
        .lock("handoff")
        .ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");
    let listener = Listener::by_pattern(&server, "lock-release").await;

    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut clients = Vec::new();
    let mut tokens = Vec::new();
    for w in 0..WAITERS {
        let locks = fair(&server).build().unwrap();
        spawn_waiter(&locks, "handoff", TTL, w, &tx);
        tokens.push(until_queued(&server, "handoff", w + 1).await);
        clients.push(locks);
    }
    assert_eq!(notices(&clients), vec![0; WAITERS]);

    let mut releasing = (held.index(), held.release());
    for (w, token) in tokens.iter().enumerate() {
        let (previous, release) = releasing;
        assert_eq!(release.await.unwrap().result, ReleaseOutcome::Released);
        // Handed over inside the release script: the key is there, reserved for the next
        // waiter, with a fresh index.
        assert_eq!(
            handoff_field(&server, "handoff").as_deref(),
            Some(token.as_str()),
            "handoff {w}"
        );
        let index: i64 = stored_index(&server, "lock:handoff")
            .expect("the handed-over lock exists")
            .parse()
            .unwrap();
        assert!(
            index > previous,
            "handoff {w}: index {index} after {previous}"
        );

        let (got, guard) = next_guard(&mut rx).await;
        assert_eq!(got, w, "the lock went to waiter {got} out of turn");
        assert_eq!(guard.index(), index);
        let mut expected = vec![1; w + 1];
        expected.resize(WAITERS, 0);
        assert_eq!(
            notices(&clients),
            expected,
            "after handoff {w}: one notice per handoff, to the new holder's client only"
        );
        assert_eq!(
            handoffs(&clients),
            expected,
            "after handoff {w}: one handoff received, by the new holder's client only"
        );
        assert!(
            listener.messages().is_empty(),
            "a handoff published on the release channel: {:?}",
            listener.messages()
        );
        releasing = (guard.index(), guard.release());
    }
    let (_, release) = releasing;
    assert_eq!(release.await.unwrap().result, ReleaseOutcome::Released);
    // Nobody queues any more: the lock is deleted and the release announced.
    assert!(!exists(&server, "lock:handoff"));
    assert_eq!(
        listener.until_message().await,
        vec![("lock-release".to_owned(), "lock:handoff".to_owned())]
    );
    assert_eq!(notices(&clients), vec![1; WAITERS]);
    assert_eq!(handoffs(&clients), vec![1; WAITERS]);
    assert_eq!(holder.stats().handoffs_received, 0);
    assert_eq!(queued(&server, "handoff"), 0);
    assert_eq!(entries(&server, "handoff"), 0);
}

/// For comparison, without the fair queue: one release wakes every waiter of the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfair_release_notifies_every_waiter() {
    const WAITERS: usize = 4;
    let server = RedisServer::start();
    let holder = common::client(&server);
    let waiters = common::builder(&server)
        .max_poll_interval(Duration::from_secs(5))
        .build()
        .unwrap();
    let held = holder
        .lock("stampede")
        .ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");

    let (tx, mut rx) = mpsc::unbounded_channel();
    for w in 0..WAITERS {
        spawn_waiter(&waiters, "stampede", TTL, w, &tx);
    }
    let waiting = wait_until_async(DEADLINE, || async {
        waiters.stats().waiters == WAITERS && common::listeners(&server, "lock-release") == 1
    })
    .await;
    assert!(waiting, "registrations: {}", waiters.stats().waiters);
    assert_eq!(waiters.stats().notices_delivered, 0);

    assert_eq!(
        held.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
    for _ in 0..WAITERS {
        let (_, guard) = next_guard(&mut rx).await;
        guard.release().await.unwrap();
    }
    let delivered = waiters.stats().notices_delivered;
    assert!(
        delivered >= WAITERS as u64,
        "{delivered} notices for {WAITERS} waiters"
    );
    if !common::fair_mode() {
        assert_eq!(
            waiters.stats().handoffs_received,
            0,
            "a broadcast is not a handoff"
        );
    }
}

/// Entries of waiters that are gone (expired, unreadable, missing) at the head of the queue
/// are dropped by the release, which hands the lock to the first live waiter behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_entries_at_the_head_are_skipped() {
    let server = RedisServer::start();
    let holder = fair(&server).build().unwrap();
    let waiter = fair(&server).build().unwrap();
    let held = holder
        .lock("dead")
        .ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");

    let past = server_ms(&server) - 1000;
    push_ghost(&server, "dead", "ghost-expired", past);
    int(&server, &["RPUSH", &queue_key("dead"), "ghost-missing"]);
    int(&server, &["RPUSH", &queue_key("dead"), "ghost-garbage"]);
    int(
        &server,
        &["HSET", &entries_key("dead"), "ghost-garbage", "{not json"],
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_waiter(&waiter, "dead", TTL, 0, &tx);
    let token = until_queued(&server, "dead", 4).await;

    let held_index = held.index();
    assert_eq!(
        held.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
    assert_eq!(handoff_field(&server, "dead"), Some(token));
    let (_, guard) = next_guard(&mut rx).await;
    assert!(guard.index() > held_index);
    assert_eq!(queued(&server, "dead"), 0);
    assert_eq!(entries(&server, "dead"), 0);
    assert_eq!(
        guard.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
    assert!(!exists(&server, "lock:dead"));
}

/// Entries that have not expired but cannot be used (a reserved holder field, an odd list of
/// fields, no handoff channel, a ttl that is not a whole number of milliseconds from 1 on) are
/// dropped as dead by the release, which hands the lock to the live waiter behind them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_live_entries_at_the_head_are_skipped() {
    let server = RedisServer::start();
    let holder = fair(&server).build().unwrap();
    let waiter = fair(&server).build().unwrap();
    let held = holder
        .lock("malformed")
        .ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");

    let future = server_ms(&server) + 600_000;
    let ghosts = [
        (
            "ghost-reserved",
            format!(r#"{{"t":10000,"e":{future},"c":"lock-handoff:nobody","m":["index","1"]}}"#),
        ),
        (
            "ghost-odd",
            format!(r#"{{"t":10000,"e":{future},"c":"lock-handoff:nobody","m":["host"]}}"#),
        ),
        (
            "ghost-number",
            format!(r#"{{"t":10000,"e":{future},"c":"lock-handoff:nobody","m":["host",7]}}"#),
        ),
        (
            "ghost-nochannel",
            format!(r#"{{"t":10000,"e":{future},"c":"","m":[]}}"#),
        ),
        (
            "ghost-zero-ttl",
            format!(r#"{{"t":0,"e":{future},"c":"lock-handoff:nobody","m":[]}}"#),
        ),
        (
            "ghost-half-ttl",
            format!(r#"{{"t":1.5,"e":{future},"c":"lock-handoff:nobody","m":[]}}"#),
        ),
        ("ghost-array", "[1,2,3]".to_owned()),
    ];
    for (token, entry) in &ghosts {
        int(&server, &["RPUSH", &queue_key("malformed"), token]);
        int(&server, &["HSET", &entries_key("malformed"), token, entry]);
    }
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_waiter(&waiter, "malformed", TTL, 0, &tx);
    let token = until_queued(&server, "malformed", ghosts.len() + 1).await;

    let held_index = held.index();
    assert_eq!(
        held.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
    assert_eq!(handoff_field(&server, "malformed"), Some(token));
    let (_, guard) = next_guard(&mut rx).await;
    assert!(guard.index() > held_index);
    assert_eq!(queued(&server, "malformed"), 0);
    assert_eq!(entries(&server, "malformed"), 0);
    assert_eq!(
        guard.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
}

/// A release that hands the lock over takes the next index as an acquire does: after a
/// counter ahead of the clock (moved by hand, or a Node fleet's) it is the counter plus one;
/// after Node redfour's small counter it is floored at the server clock; and the counter
/// keeps its expiry either way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_takes_its_index_as_an_acquire_does() {
    let server = RedisServer::start();
    let holder = fair(&server).build().unwrap();
    let waiter = fair(&server).build().unwrap();
    let ahead: i64 = 8_000_000_000_000_000;
    for (counter, expected) in [(ahead, Some(ahead + 1)), (57, None)] {
        let held = holder
            .lock("counted")
            .ttl(TTL)
            .try_acquire()
            .await
            .unwrap()
            .expect("free lock");
        let (tx, mut rx) = mpsc::unbounded_channel();
        spawn_waiter(&waiter, "counted", TTL, 0, &tx);
        until_queued(&server, "counted", 1).await;
        server.cmd(&["SET", "lockindex", &counter.to_string(), "PX", "600000"]);
        let clock_us = server_ms(&server) * 1000;

        assert_eq!(
            held.release().await.unwrap().result,
            ReleaseOutcome::Released
        );
        let (_, guard) = next_guard(&mut rx).await;
        match expected {
            Some(index) => assert_eq!(guard.index(), index),
            None => assert!(
                guard.index() >= clock_us,
                "index {} below the server clock {clock_us}",
                guard.index()
            ),
        }
        assert_eq!(
            text(&server, &["GET", "lockindex"]),
            Some(guard.index().to_string()),
            "the counter does not hold the new index"
        );
        let left = pttl(&server, "lockindex");
        assert!(
            left > 500_000 && left <= 600_000,
            "the counter's expiry changed: {left}"
        );
        assert_eq!(
            guard.release().await.unwrap().result,
            ReleaseOutcome::Released
        );
    }
}

/// The turn state a release left in the entries hash of `id`: (credit, backoff), or None.
fn turn_state(server: &RedisServer, id: &str) -> Option<(f64, u32)> {
    let raw = text(server, &["HGET", &entries_key(id), "turn"])?;
    let parts: Vec<&str> = raw.split(' ').collect();
    assert_eq!(parts.len(), 7, "turn state {raw:?}");
    Some((
        parts[0].parse().expect("credit"),
        parts[4].parse().expect("backoff"),
    ))
}

/// With a client subscribed to the release channel by name (as Node redfour is, and which
/// never queues), a release that would hand the lock to the queue gives that outsider a turn:
/// it deletes the lock and announces it; the queue takes nothing for the turn (50 ms), then its
/// head gets the lock. A turn nobody took makes the next come later (the backoff), so the next
/// release hands over at once. Without such a listener nothing of this happens (the tests
/// above). A turn whose end lies further ahead than a turn lasts (a clock that stepped back,
/// a hand-written field) holds nobody up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outsiders_get_turns_and_untaken_turns_come_rarer() {
    let server = RedisServer::start();
    let holder = fair(&server).build().unwrap();
    let waiter = fair(&server).build().unwrap();
    let outsider = Listener::start(&server, "lock-release").await;
    let held = holder
        .lock("turns")
        .ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_waiter(&waiter, "turns", TTL, 0, &tx);
    until_queued(&server, "turns", 1).await;

    // The first release owes the outsider a turn: announced, not handed over.
    assert_eq!(
        held.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
    assert_eq!(
        outsider.until_message().await,
        [("lock-release".to_owned(), "lock:turns".to_owned())]
    );
    assert_eq!(handoff_field(&server, "turns"), None);
    // Nobody took it: the queue's head gets the lock once the turn is over.
    let (_, first) = next_guard(&mut rx).await;
    assert!(turn_state(&server, "turns").is_some());

    // The next release closes the untaken turn (backoff 1) and hands over directly.
    spawn_waiter(&waiter, "turns", TTL, 1, &tx);
    until_queued(&server, "turns", 1).await;
    assert_eq!(
        first.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
    let (_, second) = next_guard(&mut rx).await;
    assert!(handoff_field(&server, "turns").is_some(), "not handed over");
    let (credit, backoff) = turn_state(&server, "turns").expect("turn state");
    assert_eq!(backoff, 1);
    assert!(credit <= 0.0, "credit {credit}");
    assert_eq!(outsider.messages().len(), 1, "{:?}", outsider.messages());

    // After the one release the backoff skipped, a turn is due again, and with nobody queued
    // it holds too: the lock is announced, and the queue's side takes nothing until the turn
    // is over, however soon it comes back (a worker taking the lock again at once would
    // otherwise keep it from the outsiders).
    let second_index = second.index();
    second.release().await.unwrap();
    outsider.until_messages(2).await;
    let raw = text(&server, &["HGET", &entries_key("turns"), "turn"]).expect("turn state");
    let fields: Vec<&str> = raw.split(' ').collect();
    assert_eq!(fields[2], second_index.to_string(), "turn state {raw}");
    let until: i64 = fields[1].parse().expect("turn end");
    assert!(until > 0, "no turn recorded: {raw}");
    let short = poll_until_acquired(&holder, "turns", Duration::from_millis(300)).await;
    assert!(
        server_ms(&server) >= until,
        "taken before the turn's end ({until}): {raw}"
    );

    // A turn said to end an hour from now is no turn: when the holder's lock expires, the
    // queue's head takes it at once (its timer fires at the holder's expiry).
    spawn_waiter(&waiter, "turns", TTL, 2, &tx);
    until_queued(&server, "turns", 1).await;
    let far = server_ms(&server) + 3_600_000;
    int(
        &server,
        &[
            "HSET",
            &entries_key("turns"),
            "turn",
            &format!("5.0000 {far} 1 0 0 0 0"),
        ],
    );
    let (_, third) = next_guard(&mut rx).await;
    assert!(third.index() > short.index);
    third.release().await.unwrap();
}

/// Keyspace events of `lock:{id}` (generic and hash commands) since the last call:
/// `SET lock:{id}-mark` is a barrier, its event arrives after every event before it.
struct KeyEvents {
    listener: Listener,
    id: String,
    seen: usize,
}

impl KeyEvents {
    async fn start(server: &RedisServer, id: &str) -> KeyEvents {
        assert_eq!(
            text(server, &["CONFIG", "SET", "notify-keyspace-events", "Kgh$"]).as_deref(),
            Some("OK")
        );
        let listener = Listener::by_pattern(server, &format!("__keyspace@0__:lock:{id}*")).await;
        KeyEvents {
            listener,
            id: id.to_owned(),
            seen: 0,
        }
    }

    async fn since_last(&mut self, server: &RedisServer) -> Vec<String> {
        let mark = format!("lock:{}-mark", self.id);
        assert_eq!(text(server, &["SET", &mark, "1"]).as_deref(), Some("OK"));
        let channel = format!("__keyspace@0__:{mark}");
        let arrived = wait_until_async(DEADLINE, || async {
            self.listener.messages()[self.seen..]
                .iter()
                .any(|(c, _)| *c == channel)
        })
        .await;
        assert!(arrived, "the barrier's event never came");
        let all = self.listener.messages();
        let upto = self.seen
            + all[self.seen..]
                .iter()
                .position(|(c, _)| *c == channel)
                .expect("the barrier");
        let key = format!("__keyspace@0__:lock:{}", self.id);
        let events = all[self.seen..upto]
            .iter()
            .filter(|(c, _)| *c == key)
            .map(|(_, e)| e.clone())
            .collect();
        self.seen = upto + 1;
        events
    }
}

/// Outsiders that take the lock again at once (Node redfour's waitAcquireLock does) keep it
/// from the queue whenever its clients are the slower to answer an announcement. So once they
/// have had holdings beyond their due, a release with nobody queued keeps the lock for the
/// queue's side (deleted and written again, not only deleted, and announced) until the debt is
/// paid; then releases are plain again. Here an outsider (a subscriber by name, as Node
/// redfour is) held twice while a fair client waited: that client's release keeps the lock
/// (two holdings against one), the next deletes it (two against two).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_queue_keeps_the_lock_while_outsiders_had_more_than_their_due() {
    let server = RedisServer::start();
    let mut events = KeyEvents::start(&server, "keep").await;
    let outsider = Listener::start(&server, "lock-release").await;
    let locks = fair(&server).build().unwrap();

    // An outsider's holding (Node redfour writes the index and nothing else), seen by a waiter.
    int(&server, &["HSET", "lock:keep", "index", "11"]);
    int(&server, &["PEXPIRE", "lock:keep", "10000"]);
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_waiter(&locks, "keep", TTL, 0, &tx);
    until_queued(&server, "keep", 1).await;
    let seen = wait_until_async(DEADLINE, || async {
        turn_state(&server, "keep").is_some_and(|(credit, _)| credit <= -1.0)
    })
    .await;
    assert!(seen, "turn state {:?}", turn_state(&server, "keep"));
    // Released and taken again by another outsider before the waiter looked; the waiter sees
    // that holding too when the release is announced.
    int(&server, &["HSET", "lock:keep", "index", "12"]);
    int(&server, &["PUBLISH", "lock-release", "lock:keep"]);
    let seen = wait_until_async(DEADLINE, || async {
        turn_state(&server, "keep").is_some_and(|(credit, _)| credit <= -2.0)
    })
    .await;
    assert!(seen, "turn state {:?}", turn_state(&server, "keep"));
    // The outsider lets go, as Node redfour releases: the waiter gets the lock.
    int(&server, &["DEL", "lock:keep"]);
    int(&server, &["PUBLISH", "lock-release", "lock:keep"]);
    let (_, guard) = next_guard(&mut rx).await;
    let announced = outsider.messages().len();
    events.since_last(&server).await;

    // Two outsiders' holdings against one of the queue's: kept, and announced; a fair
    // acquire takes it as its own.
    let last = guard.index();
    assert_eq!(
        guard.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
    assert_eq!(
        events.since_last(&server).await,
        ["del", "hset", "expire"],
        "not kept"
    );
    outsider.until_messages(announced + 1).await;
    let again = poll_until_acquired(&locks, "keep", TTL).await;
    assert!(again.index > last);
    events.since_last(&server).await;
    // Two and two: deleted and announced, nothing kept.
    assert_eq!(
        locks
            .release_lock("keep", again.index)
            .await
            .unwrap()
            .result,
        ReleaseOutcome::Released
    );
    assert_eq!(events.since_last(&server).await, ["del"]);
    outsider.until_messages(announced + 2).await;
    let (credit, backoff) = turn_state(&server, "keep").expect("turn state");
    assert_eq!(backoff, 0);
    assert!(credit > -1.0, "credit {credit}");
}

/// A lock kept for the queue's side that nobody took lets the queue's debt go: the next
/// release by the queue's side gives the outsiders their turn instead of keeping the lock for
/// nobody again. A fencing counter the scripts refuse makes a release that would keep the
/// lock a plain one (deleted and announced), as releases were before the outsiders came.
/// The turn state is written by hand: a debt of 3 holdings, the last kept lock untaken or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untaken_kept_lock_lets_the_debt_go() {
    let server = RedisServer::start();
    let mut events = KeyEvents::start(&server, "debt").await;
    let _outsider = Listener::start(&server, "lock-release").await;
    let locks = fair(&server).build().unwrap();
    let cycle = |kept: &'static str| {
        let (server, locks) = (&server, &locks);
        async move {
            int(
                server,
                &[
                    "HSET",
                    &entries_key("debt"),
                    "turn",
                    &format!("-3.0000 0 0 0 0 0 {kept}"),
                ],
            );
            let held = poll_until_acquired(locks, "debt", TTL).await;
            assert_eq!(
                locks.release_lock("debt", held.index).await.unwrap().result,
                ReleaseOutcome::Released
            );
        }
    };

    // The last kept lock was taken (`kept` 0): owed 3 - 1, kept again.
    cycle("0").await;
    assert_eq!(
        events.since_last(&server).await,
        ["hset", "expire", "del", "hset", "expire"],
        "granted, then kept"
    );
    let (credit, _) = turn_state(&server, "debt").expect("turn state");
    assert_eq!(credit, -2.0);
    // Nobody takes it: gone once it expired (50 ms).
    assert!(common::wait_gone(&server, "lock:debt", DEADLINE).await);

    // The last kept lock went untaken: the debt is let go, the outsiders get a turn.
    cycle("1794130000000000").await;
    assert_eq!(events.since_last(&server).await, ["hset", "expire", "del"]);
    let (credit, _) = turn_state(&server, "debt").expect("turn state");
    assert_eq!(credit, 1.0);

    // A counter the scripts refuse: released plainly, nothing kept, the counter as it was.
    assert!(common::wait_gone(&server, "lock:debt", DEADLINE).await);
    let held = poll_until_acquired(&locks, "debt", TTL).await;
    int(
        &server,
        &["HSET", &entries_key("debt"), "turn", "-3.0000 0 0 0 0 0 0"],
    );
    assert_eq!(
        text(&server, &["SET", "lockindex", "abc"]).as_deref(),
        Some("OK")
    );
    events.since_last(&server).await;
    assert_eq!(
        locks.release_lock("debt", held.index).await.unwrap().result,
        ReleaseOutcome::Released
    );
    assert_eq!(events.since_last(&server).await, ["del"]);
    assert_eq!(text(&server, &["GET", "lockindex"]).as_deref(), Some("abc"));
}

/// A waiter that died after its last refresh (its entry is still valid) is handed the lock
/// and never claims it: the lock lives for the claim window only, then the next live waiter
/// takes it, woken by its timer at the handed-over lock's expiry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unclaimed_handoff_expires_after_the_claim_window() {
    const WINDOW: Duration = Duration::from_millis(300);
    let server = RedisServer::start();
    let holder = fair(&server).claim_window(WINDOW).build().unwrap();
    // It polls every 500 ms: the lock handed to the ghost does not wake it.
    let waiter = fair(&server)
        .claim_window(WINDOW)
        .max_poll_interval(Duration::from_millis(500))
        .build()
        .unwrap();
    let held = holder
        .lock("ghost")
        .ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");

    let future = server_ms(&server) + 60_000;
    push_ghost(&server, "ghost", "ghost", future);
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_waiter(&waiter, "ghost", TTL, 0, &tx);
    until_queued(&server, "ghost", 2).await;

    let started = Instant::now();
    assert_eq!(
        held.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
    assert_eq!(handoff_field(&server, "ghost").as_deref(), Some("ghost"));
    let ghost_index: i64 = stored_index(&server, "lock:ghost")
        .unwrap()
        .parse()
        .unwrap();
    let left = pttl(&server, "lock:ghost");
    assert!(
        (0..=WINDOW.as_millis() as i64).contains(&left),
        "the handed-over lock lives {left} ms, beyond the claim window"
    );

    let (_, guard) = tokio::time::timeout(WINDOW + Duration::from_secs(1), rx.recv())
        .await
        .expect("the live waiter did not get the lock within the claim window + 1 s")
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= WINDOW - Duration::from_millis(50),
        "acquired after {took:?}, while the ghost's handoff should still block it"
    );
    assert!(guard.index() > ghost_index);
    assert_eq!(
        handoff_field(&server, "ghost"),
        None,
        "took it as a waiter's own attempt"
    );
    assert_eq!(queued(&server, "ghost"), 0);
    assert_eq!(entries(&server, "ghost"), 0);
    assert_eq!(
        guard.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
}

/// Polls until nobody queues for `cancel` and no entry is left (well before the entries
/// could expire: they live 15 s).
async fn assert_left(server: &RedisServer, who: &str) {
    let left = wait_until_async(Duration::from_secs(3), || async {
        queued(server, "cancel") == 0 && entries(server, "cancel") == 0
    })
    .await;
    assert!(
        left,
        "{who} waiters still queued: {:?}, entries {:?}",
        strings(server, &["LRANGE", &queue_key("cancel"), "0", "-1"]),
        strings(server, &["HGETALL", &entries_key("cancel")])
    );
}

/// Waits that give up, are aborted or are dropped by a timeout (also while their first
/// attempt is in flight) leave the queue at once; the holder's release then finds nobody
/// queued: it deletes the lock and announces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_waiters_leave_the_queue() {
    let server = RedisServer::start();
    let holder = fair(&server).build().unwrap();
    let waiters = fair(&server).build().unwrap();
    let held = holder
        .lock("cancel")
        .ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");

    // Aborted tasks.
    let mut tasks = Vec::new();
    for n in 1..=3 {
        let waiters = waiters.clone();
        tasks.push(tokio::spawn(async move {
            waiters
                .lock("cancel")
                .ttl(TTL)
                .acquire()
                .await
                .map(|g| g.index())
        }));
        until_queued(&server, "cancel", n).await;
    }
    for task in &tasks {
        task.abort();
    }
    for task in tasks {
        assert!(task.await.unwrap_err().is_cancelled());
    }

    assert_left(&server, "aborted").await;

    // Futures dropped once queued (by `select!`, as a timeout would).
    let waits =
        futures_util::future::join_all((0..3).map(|_| waiters.lock("cancel").ttl(TTL).acquire()));
    tokio::select! {
        r = waits => panic!("the waits ended: {r:?}"),
        _ = until_queued(&server, "cancel", 3) => {}
    }
    assert_left(&server, "dropped").await;

    // Bounded waits that give up.
    let gave_up = futures_util::future::join_all((0..3).map(|_| {
        waiters
            .lock("cancel")
            .ttl(TTL)
            .wait(Duration::from_millis(200))
            .acquire()
    }))
    .await;
    for r in gave_up {
        assert!(r.unwrap_err().is_not_acquired());
    }
    assert_left(&server, "gave up").await;

    // Waits dropped at every point of their first attempt: before it is sent, while it is in
    // flight, after its answer arrived.
    for i in 0..100u64 {
        let wait = waiters.lock("cancel").ttl(TTL).acquire();
        let budget = Duration::from_micros((i % 20) * 60);
        let r = tokio::time::timeout(budget, wait).await;
        assert!(r.is_err(), "{r:?}");
    }

    assert_left(&server, "dropped during their first attempt").await;
    assert_eq!(waiters.stats().waiters, 0);

    let listener = Listener::start(&server, "lock-release").await;
    assert_eq!(
        held.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
    assert!(
        !exists(&server, "lock:cancel"),
        "the lock was handed to a waiter that left: {:?}",
        handoff_field(&server, "cancel")
    );
    assert_eq!(
        listener.until_message().await,
        vec![("lock-release".to_owned(), "lock:cancel".to_owned())]
    );
}

/// `settle` returns once the background clean-up of dropped waits and guards has reached
/// Redis: checked at once after it returns, with no polling, the queue is empty and the
/// dropped guard's lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settle_waits_for_the_clean_up_of_dropped_waits_and_guards() {
    let server = RedisServer::start();
    let holder = fair(&server).build().unwrap();
    let waiters = fair(&server).build().unwrap();
    let held = holder
        .lock("settle")
        .ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");
    for round in 0..20 {
        let waits = futures_util::future::join_all(
            (0..3).map(|_| waiters.lock("settle").ttl(TTL).acquire()),
        );
        tokio::select! {
            r = waits => panic!("the waits ended: {r:?}"),
            _ = until_queued(&server, "settle", 3) => {}
        }
        assert!(
            waiters.settle(Duration::from_secs(5)).await,
            "round {round}: clean-up still pending"
        );
        assert_eq!(
            (queued(&server, "settle"), entries(&server, "settle")),
            (0, 0),
            "round {round}: settle returned before the waiters left the queue"
        );
    }
    drop(held);
    assert!(holder.settle(Duration::from_secs(5)).await);
    assert!(
        !exists(&server, "lock:settle"),
        "settle returned before the dropped guard's release"
    );
    // Nothing pending: true at once, even with no time to wait.
    assert!(holder.settle(Duration::ZERO).await);
    assert_eq!(holder.stats().background_cleanups_pending, 0);
    assert_eq!(waiters.stats().background_cleanups_pending, 0);
}

/// The first waiter is aborted just as the holder releases (at varying moments around the
/// release's round trip): whatever it had reached (still queued, handed the lock, notified,
/// holding), the lock reaches the second waiter promptly, never after the 10 s claim window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handoff_to_a_waiter_dropped_meanwhile_is_passed_on() {
    const ROUNDS: u64 = 30;
    let server = RedisServer::start();
    let build = || {
        fair(&server)
            .claim_window(Duration::from_secs(10))
            .max_poll_interval(Duration::from_secs(10))
            .build()
            .unwrap()
    };
    let (holder, first, second) = (build(), build(), build());
    let first_won = Arc::new(AtomicUsize::new(0));
    let mut slowest = Duration::ZERO;

    for round in 0..ROUNDS {
        let held = holder
            .lock("race")
            .ttl(TTL)
            .try_acquire()
            .await
            .unwrap()
            .expect("the lock is free between rounds");
        let a = tokio::spawn({
            let first = first.clone();
            let first_won = first_won.clone();
            async move {
                let _guard = first
                    .lock("race")
                    .ttl(TTL)
                    .acquire()
                    .await
                    .expect("acquire");
                first_won.fetch_add(1, Ordering::SeqCst);
                std::future::pending::<()>().await;
            }
        });
        until_queued(&server, "race", 1).await;
        let (tx, mut rx) = mpsc::unbounded_channel();
        spawn_waiter(&second, "race", TTL, 1, &tx);
        until_queued(&server, "race", 2).await;

        let release = tokio::spawn(held.release());
        let spin = Instant::now() + Duration::from_micros((round % 15) * 80);
        while Instant::now() < spin {
            std::hint::spin_loop();
        }
        a.abort();
        let started = Instant::now();
        assert_eq!(
            release.await.unwrap().unwrap().result,
            ReleaseOutcome::Released
        );
        let got = tokio::time::timeout(HANDOFF, rx.recv()).await;
        let took = started.elapsed();
        let (_, guard) = got
            .unwrap_or_else(|_| {
                panic!(
                    "round {round}: the second waiter is stuck; lock {:?} handoff {:?} pttl {}",
                    stored_index(&server, "lock:race"),
                    handoff_field(&server, "race"),
                    pttl(&server, "lock:race")
                )
            })
            .unwrap();
        slowest = slowest.max(took);
        let _ = a.await;
        assert_eq!(
            guard.release().await.unwrap().result,
            ReleaseOutcome::Released,
            "round {round}"
        );
        assert!(!exists(&server, "lock:race"), "round {round}");
        let clean = wait_until_async(DEADLINE, || async {
            queued(&server, "race") == 0
                && entries(&server, "race") == 0
                && first.stats().waiters == 0
                && second.stats().waiters == 0
        })
        .await;
        assert!(clean, "round {round}: the queue was not cleaned up");
    }
    eprintln!(
        "the first waiter had acquired before its abort in {} of {ROUNDS} rounds; slowest pass-on {slowest:?}",
        first_won.load(Ordering::SeqCst)
    );
    assert!(!exists(&server, "lock:race"));
}

/// The notice of a handoff and the answer of the waiter's own attempt travel on different
/// connections: a waiter whose attempt found the lock handed over takes it, and the notice,
/// arriving after that, must not be taken for a handoff to a waiter that left (passing the
/// lock on would release it under its holder).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_notice_for_a_handoff_already_taken_is_ignored() {
    let server = RedisServer::start();
    let holder = fair(&server).build().unwrap();
    let waiter = fair(&server).build().unwrap();
    let held = holder
        .lock("late")
        .ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_waiter(&waiter, "late", TTL, 0, &tx);
    let token = until_queued(&server, "late", 1).await;

    // Hand the lock over as the release script does, holding the notice back.
    let index = (held.index() + 1).to_string();
    server.cmd(&["DEL", "lock:late"]);
    server.cmd(&["LPOP", &queue_key("late")]);
    server.cmd(&["HDEL", &entries_key("late"), &token]);
    server.cmd(&["HSET", "lock:late", "index", &index, "handoff", &token]);
    server.cmd(&["PEXPIRE", "lock:late", "5000"]);
    // A release notice makes the waiter try: its attempt finds the lock handed to it.
    server.cmd(&["PUBLISH", "lock-release", "lock:late"]);
    let (_, guard) = next_guard(&mut rx).await;
    assert_eq!(guard.index().to_string(), index);
    assert_eq!(waiter.stats().waiters, 0);

    // Now the notice arrives.
    let (client_token, _) = token.rsplit_once('/').expect("token = client/waiter");
    let notice = format!("{token} {index} 5000 lock:late");
    let heard = int(
        &server,
        &["PUBLISH", &format!("lock-handoff:{client_token}"), &notice],
    );
    assert_eq!(heard, 1, "the waiter's client does not listen");
    let passed_on = wait_until_async(Duration::from_millis(500), || async {
        stored_index(&server, "lock:late").as_deref() != Some(index.as_str())
    })
    .await;
    assert!(
        !passed_on,
        "the late notice released the lock under its holder"
    );
    assert_eq!(
        guard.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
}

/// A lock handed over lives only for the claim window (300 ms) until the new holder claims
/// it: a guard, and a Node-style `wait_acquire_lock` caller, both claim their full 3 s ttl in
/// the background, and the guard's deadline moves with the claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handed_over_lock_is_claimed_for_its_full_ttl() {
    const WINDOW: Duration = Duration::from_millis(300);
    const CLAIMED: Duration = Duration::from_secs(3);
    let server = RedisServer::start();
    let build = || fair(&server).claim_window(WINDOW).build().unwrap();
    let (holder, guarded, node_style) = (build(), build(), build());
    let held = holder
        .lock("claim")
        .ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");

    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_waiter(&guarded, "claim", CLAIMED, 0, &tx);
    until_queued(&server, "claim", 1).await;
    let released_at = Instant::now();
    held.release().await.unwrap();
    let left = pttl(&server, "lock:claim");
    assert!(
        (0..=WINDOW.as_millis() as i64).contains(&left),
        "the handed-over lock lives {left} ms"
    );
    let (_, guard) = next_guard(&mut rx).await;

    let moved = wait_until_async(DEADLINE, || async {
        guard.deadline() > released_at + Duration::from_secs(1)
    })
    .await;
    assert!(
        moved,
        "the guard's deadline never moved beyond the claim window: {guard:?}"
    );
    // Past the claim window, the lock is still there with most of its full ttl.
    tokio::time::sleep_until((released_at + Duration::from_millis(500)).into()).await;
    let left = pttl(&server, "lock:claim");
    assert!(left > 1000, "PTTL {left} ms: the lock was not claimed");
    assert!(!guard.is_lost(), "{:?}", guard.lost_reason());

    // The same through the Node-shaped API, which has no guard to claim with.
    let node_wait = tokio::spawn({
        let node_style = node_style.clone();
        async move {
            node_style
                .wait_acquire_lock("claim", CLAIMED, Some(DEADLINE))
                .await
                .unwrap()
        }
    });
    until_queued(&server, "claim", 1).await;
    let released_at = Instant::now();
    assert_eq!(
        guard.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
    let lock = tokio::time::timeout(HANDOFF, node_wait)
        .await
        .expect("the handoff never arrived")
        .unwrap();
    assert!(lock.success && !lock.immediate, "{lock:?}");
    assert_eq!(lock.ttl, CLAIMED);
    tokio::time::sleep_until((released_at + Duration::from_millis(500)).into()).await;
    let left = pttl(&server, "lock:claim");
    assert!(left > 1000, "PTTL {left} ms: the lock was not claimed");
    assert_eq!(
        node_style
            .release_lock("claim", lock.index)
            .await
            .unwrap()
            .result,
        ReleaseOutcome::Released
    );
    assert!(!exists(&server, "lock:claim"));
}

/// A lock handed over with a ttl within the claim window lives that ttl from the handoff;
/// the waiter's last attempt, from which its lease is counted, may be older than the ttl
/// (here 600 ms old for a 400 ms ttl): the guard must still start with a live lease, not
/// one that ended before the handoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_ttl_handoff_after_a_long_wait_starts_a_live_lease() {
    const SHORT: Duration = Duration::from_millis(400);
    let server = RedisServer::start();
    let holder = fair(&server).build().unwrap();
    // Polls every 5 s: between its first attempt and the handoff it makes no other.
    let waiter = fair(&server).build().unwrap();
    let held = holder
        .lock("short")
        .ttl(TTL)
        .try_acquire()
        .await
        .unwrap()
        .expect("free lock");
    let (tx, mut rx) = mpsc::unbounded_channel();
    spawn_waiter(&waiter, "short", SHORT, 0, &tx);
    until_queued(&server, "short", 1).await;
    // Time passing is the point: the waiter's only attempt gets older than its ttl.
    tokio::time::sleep(Duration::from_millis(600)).await;

    held.release().await.unwrap();
    let (_, guard) = next_guard(&mut rx).await;
    assert!(
        !guard.is_lost() && guard.remaining() >= SHORT / 2,
        "a lease of {:?} ({:?}) for a lock the server keeps {} ms",
        guard.remaining(),
        guard.lost_reason(),
        pttl(&server, "lock:short")
    );
    assert_eq!(
        guard.release().await.unwrap().result,
        ReleaseOutcome::Released
    );
}

/// One locked increment of the Redis key `value`: a non-atomic read-modify-write that loses
/// updates unless the lock excludes; `inside` catches two holders at once in this process.
async fn increment(conn: &mut redis::aio::MultiplexedConnection, inside: &AtomicBool) {
    assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
    let value: Option<i64> = conn.get("value").await.expect("GET");
    tokio::task::yield_now().await;
    let () = conn
        .set("value", value.unwrap_or(0) + 1)
        .await
        .expect("SET");
    inside.store(false, Ordering::SeqCst);
}

/// Fair and unfair (Node-style) clients on the same lock still exclude each other; and a
/// plain release, which knows nothing of the queue, wakes the fair waiters, who then take
/// the lock in their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_and_unfair_clients_mix() {
    const TASKS: usize = 16;
    const ROUNDS: usize = 50;
    let server = RedisServer::start();
    // Unfair waiters only learn of a handoff through their timer: keep it short.
    let poll = Duration::from_millis(100);
    let clients: Vec<redfour::Client> = (0..4)
        .map(|c| {
            common::builder(&server)
                .fair(c % 2 == 0)
                .max_poll_interval(poll)
                .build()
                .unwrap()
        })
        .collect();
    let data = redis::Client::open(server.url()).unwrap();
    let inside = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let locks = clients[t % clients.len()].clone();
        let mut conn = data.get_multiplexed_async_connection().await.unwrap();
        let inside = inside.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..ROUNDS {
                let guard = locks
                    .lock("mixed")
                    .ttl(Duration::from_secs(10))
                    .wait(Duration::from_secs(30))
                    .acquire()
                    .await
                    .expect("acquire");
                increment(&mut conn, &inside).await;
                assert_eq!(
                    guard.release().await.unwrap().result,
                    ReleaseOutcome::Released
                );
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        text(&server, &["GET", "value"]).as_deref(),
        Some((TASKS * ROUNDS).to_string().as_str())
    );
    assert!(!exists(&server, "lock:mixed"));

    // A Node-style holder's release wakes fair waiters that poll only every 10 s.
    let plain = common::client(&server);
    let held = plain.acquire_lock("plain", TTL).await.unwrap();
    assert!(held.success);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut waiters = Vec::new();
    for w in 0..3 {
        let locks = fair(&server)
            .max_poll_interval(Duration::from_secs(10))
            .build()
            .unwrap();
        spawn_waiter(&locks, "plain", TTL, w, &tx);
        until_queued(&server, "plain", w + 1).await;
        waiters.push(locks);
    }
    assert_eq!(
        plain
            .release_lock("plain", held.index)
            .await
            .unwrap()
            .result,
        ReleaseOutcome::Released
    );
    for w in 0..3 {
        let (got, guard) = next_guard(&mut rx).await;
        assert_eq!(got, w, "out of turn");
        assert!(guard.index() > held.index);
        guard.release().await.unwrap();
    }
    assert!(!exists(&server, "lock:plain"));
    assert_eq!(queued(&server, "plain"), 0);
}

/// Eight fair clients, 100 locked increments each: the count is exact, nobody waits long for
/// one acquisition, and the queue serves them in turn: when the first worker is done, every
/// other one is well advanced (an unfair lock lets a releaser take it straight back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_workers_increment_exactly_and_in_turn() {
    const WORKERS: usize = 8;
    const ROUNDS: usize = 100;
    let server = RedisServer::start();
    let clients: Vec<redfour::Client> = (0..WORKERS)
        .map(|_| fair(&server).build().unwrap())
        .collect();
    // Open every client's connections (and subscription) first, so that all start together.
    for (i, locks) in clients.iter().enumerate() {
        locks
            .lock(format!("warm-up-{i}"))
            .acquire()
            .await
            .unwrap()
            .release()
            .await
            .unwrap();
    }
    let data = redis::Client::open(server.url()).unwrap();
    let inside = Arc::new(AtomicBool::new(false));
    let sequence = Arc::new(Mutex::new(Vec::with_capacity(WORKERS * ROUNDS)));
    let start = Arc::new(tokio::sync::Barrier::new(WORKERS));
    let mut tasks = Vec::new();
    for (w, locks) in clients.iter().cloned().enumerate() {
        let mut conn = data.get_multiplexed_async_connection().await.unwrap();
        let (inside, sequence, start) = (inside.clone(), sequence.clone(), start.clone());
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let mut slowest = Duration::ZERO;
            for _ in 0..ROUNDS {
                let asked = Instant::now();
                let guard = locks
                    .lock("turns")
                    .ttl(Duration::from_secs(10))
                    .wait(Duration::from_secs(30))
                    .acquire()
                    .await
                    .expect("acquire");
                slowest = slowest.max(asked.elapsed());
                sequence.lock().unwrap().push(w);
                increment(&mut conn, &inside).await;
                assert_eq!(
                    guard.release().await.unwrap().result,
                    ReleaseOutcome::Released
                );
            }
            slowest
        }));
    }
    let mut slowest = Duration::ZERO;
    for task in tasks {
        slowest = slowest.max(task.await.unwrap());
    }
    assert_eq!(
        text(&server, &["GET", "value"]).as_deref(),
        Some((WORKERS * ROUNDS).to_string().as_str())
    );
    assert!(
        slowest < Duration::from_secs(2),
        "one acquisition waited {slowest:?}"
    );

    let sequence = sequence.lock().unwrap().clone();
    let mut counts = [0usize; WORKERS];
    for w in sequence {
        counts[w] += 1;
        if counts[w] == ROUNDS {
            break;
        }
    }
    let least = *counts.iter().min().unwrap();
    assert!(
        least >= ROUNDS / 2,
        "when the first worker finished, the others had {counts:?} rounds"
    );
    eprintln!("rounds when the first worker finished: {counts:?}; slowest acquisition {slowest:?}");
    assert!(!exists(&server, "lock:turns"));
    assert_eq!(queued(&server, "turns"), 0);
}

/// Three fair and three unfair clients (this library with the queue off, an "outsider" like
/// Node redfour) loop on one lock: the unfair ones get turns, so each side gets at least half
/// its share of the holdings (before the `fair` = `0` mark, their holdings were not seen and
/// every turn counted as untaken, and they got a sixtieth of theirs), and nobody overlaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fair_and_unfair_workers_share_the_lock() {
    let server = RedisServer::start();
    let inside = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..6 {
        let fair_client = w % 2 == 0;
        let locks = common::builder(&server)
            .fair(fair_client)
            .max_poll_interval(Duration::from_secs(5))
            .build()
            .unwrap();
        let (inside, stop) = (inside.clone(), stop.clone());
        workers.spawn(async move {
            let mut sections = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let guard = locks
                    .lock("shared")
                    .ttl(TTL)
                    .wait(DEADLINE)
                    .acquire()
                    .await
                    .expect("acquire");
                assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                tokio::time::sleep(Duration::from_millis(10)).await;
                inside.store(false, Ordering::SeqCst);
                guard.release().await.expect("release");
                sections += 1;
            }
            (fair_client, sections)
        });
    }
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut fair_sections, mut unfair_sections) = (0, 0);
    while let Some(done) = workers.join_next().await {
        match done.expect("a worker panicked") {
            (true, n) => fair_sections += n,
            (false, n) => unfair_sections += n,
        }
    }
    let total = (fair_sections + unfair_sections) as f64;
    for (name, n) in [("fair", fair_sections), ("unfair", unfair_sections)] {
        assert!(
            n as f64 / total >= 0.25,
            "{name} clients had {n} of {total} holdings (fair {fair_sections}, unfair {unfair_sections})"
        );
    }
}
