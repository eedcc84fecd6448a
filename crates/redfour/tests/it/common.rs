//! Helpers shared by the integration tests: clients with test-friendly settings and thin,
//! typed wrappers over the test kit's raw commands, so that assertions read as what they check.
//!
//! Every helper that talks to Redis goes through [`RedisServer::cmd`], which opens its own
//! connection: the library's connections are never borrowed to inspect the server.

use std::time::Duration;

use redfour_test::{wait_until_async, RedisServer};
use redis::Value;

/// How long a test polls for a condition that should hold almost at once.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A client of `server` in the default namespace, with short timeouts so that a broken test
/// fails quickly instead of hanging.
pub fn client(server: &RedisServer) -> redfour::Client {
    builder(server).build().expect("client settings are valid")
}

/// A client of `server` whose waiters poll only every 10 s: within a test, only a release
/// notice, the holder's expiry or a resubscription can explain their wake-up.
pub fn slow_poll_client(server: &RedisServer) -> redfour::Client {
    builder(server)
        .max_poll_interval(Duration::from_secs(10))
        .build()
        .expect("client settings are valid")
}

/// The builder behind [`client`], for tests that change one more setting.
///
/// `REDFOUR_TEST_FAIR=0` runs the suites with the fair queue off (Node redfour's wake-everyone
/// waiting); `./scripts/test` runs them both ways.
pub fn builder(server: &RedisServer) -> redfour::ClientBuilder {
    redfour::Client::builder(server.url())
        .connect_timeout(Duration::from_secs(1))
        .response_timeout(Duration::from_secs(3))
        .fair(fair_mode())
}

/// Whether the suites run with the fair queue (the library's default) or without it.
pub fn fair_mode() -> bool {
    std::env::var("REDFOUR_TEST_FAIR").map_or(true, |v| v != "0")
}

/// Runs a command that answers an integer.
pub fn int(server: &RedisServer, args: &[&str]) -> i64 {
    match server.cmd(args) {
        Value::Int(i) => i,
        other => panic!(
            "{args:?}: expected an integer, got {other:?}\n{}",
            server.log()
        ),
    }
}

/// Runs a command that answers a string or nil.
pub fn text(server: &RedisServer, args: &[&str]) -> Option<String> {
    value_text(&server.cmd(args))
}

/// The text of a bulk, simple or verbatim string reply; `None` for nil.
pub fn value_text(value: &Value) -> Option<String> {
    match value {
        Value::Nil => None,
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Okay => Some("OK".to_owned()),
        Value::Int(i) => Some(i.to_string()),
        other => panic!("expected a string reply, got {other:?}"),
    }
}

/// Runs a command that answers an array of strings (e.g. `LRANGE`, `HGETALL`, `KEYS`).
pub fn strings(server: &RedisServer, args: &[&str]) -> Vec<String> {
    match server.cmd(args) {
        Value::Array(items) => items
            .iter()
            .map(|v| value_text(v).unwrap_or_default())
            .collect(),
        Value::Map(pairs) => pairs
            .iter()
            .flat_map(|(k, v)| [value_text(k), value_text(v)])
            .map(Option::unwrap_or_default)
            .collect(),
        other => panic!(
            "{args:?}: expected an array, got {other:?}\n{}",
            server.log()
        ),
    }
}

pub fn exists(server: &RedisServer, key: &str) -> bool {
    int(server, &["EXISTS", key]) == 1
}

pub fn pttl(server: &RedisServer, key: &str) -> i64 {
    int(server, &["PTTL", key])
}

pub fn dbsize(server: &RedisServer) -> i64 {
    int(server, &["DBSIZE"])
}

/// The `index` field of a lock hash, as stored.
pub fn stored_index(server: &RedisServer, key: &str) -> Option<String> {
    text(server, &["HGET", key, "index"])
}

/// How many connections are subscribed to `channel`.
pub fn numsub(server: &RedisServer, channel: &str) -> i64 {
    match server.cmd(&["PUBSUB", "NUMSUB", channel]) {
        Value::Array(items) if items.len() == 2 => match items[1] {
            Value::Int(n) => n,
            ref other => panic!("PUBSUB NUMSUB: unexpected count {other:?}"),
        },
        other => panic!("PUBSUB NUMSUB: unexpected reply {other:?}"),
    }
}

/// How many subscriptions hear on `channel`: connections subscribed to it by name, plus the
/// patterns subscribed on the server (a fair client subscribes to the release channel by a
/// pattern matching it alone; each test's server has no other patterns).
pub fn listeners(server: &RedisServer, channel: &str) -> i64 {
    numsub(server, channel) + int(server, &["PUBSUB", "NUMPAT"])
}

/// The `calls` count of one command in `INFO commandstats` (0 when the command never ran).
///
/// Redis 7 names the lines `cmdstat_<command>` (`cmdstat_evalsha`, `cmdstat_eval`) and
/// subcommands `cmdstat_<command>|<sub>` (`cmdstat_script|load`); commands run by a script
/// count too.
pub fn command_calls(server: &RedisServer, command: &str) -> u64 {
    let info = text(server, &["INFO", "commandstats"]).unwrap_or_default();
    let prefix = format!("cmdstat_{command}:");
    info.lines()
        .find_map(|line| line.trim().strip_prefix(prefix.as_str()))
        .map_or(0, |stats| {
            stats
                .split(',')
                .find_map(|kv| kv.strip_prefix("calls="))
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no calls= in `{stats}`"))
        })
}

/// Polls until `key` is gone from the server; false if it is still there at the deadline.
pub async fn wait_gone(server: &RedisServer, key: &str, deadline: Duration) -> bool {
    wait_until_async(deadline, || async move { !exists(server, key) }).await
}

/// Runs `op` until it answers something other than a transient fault (`Unavailable`,
/// `Timeout`), for operations documented as safe to retry (release, renew, status) right after
/// a fault: the connection that broke reports its failure once before it reconnects.
///
/// # Panics
///
/// On any other error, or if the faults outlast [`DEADLINE`].
pub async fn retry_transient<T, F, Fut>(mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = redfour::Result<T>>,
{
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if (e.is_unavailable() || e.is_timeout()) && std::time::Instant::now() < end => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!("{e:?}"),
        }
    }
}

/// Spawns a waiter for `id` in `client` (waiting up to `wait`) and returns once it is
/// registered with the client's hub: subscribed (or past the subscription's time limit) and
/// about to make, or past, its first attempt.
pub async fn spawn_waiter(
    client: &redfour::Client,
    id: &str,
    wait: Duration,
) -> tokio::task::JoinHandle<redfour::Result<redfour::LockGuard>> {
    let before = client.stats().waiters;
    let waiter = client.clone();
    let id = id.to_owned();
    let waiting = tokio::spawn(async move { waiter.lock(id).wait(wait).acquire().await });
    assert!(
        wait_until_async(DEADLINE, || async { client.stats().waiters > before }).await,
        "the waiter never registered"
    );
    waiting
}

/// Releases `guard` and returns the guard that the waiter `waiting` got, with the time from
/// the release to the waiter's answer.
pub async fn hand_over(
    guard: redfour::LockGuard,
    waiting: tokio::task::JoinHandle<redfour::Result<redfour::LockGuard>>,
) -> (redfour::LockGuard, Duration) {
    let released = std::time::Instant::now();
    guard.release().await.expect("released");
    let got = tokio::time::timeout(DEADLINE, waiting)
        .await
        .expect("the waiter answered in time")
        .expect("the waiter task did not panic")
        .expect("the waiter got the lock");
    (got, released.elapsed())
}

/// Tasks that take and release one lock in a loop (each in its own client), checking that no
/// two of them hold it at once and that fencing indexes strictly increase.
pub struct Contenders {
    rounds: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Contenders {
    /// Starts one contender per client on lock `id`.
    pub fn start(clients: Vec<redfour::Client>, id: &str) -> Contenders {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let inside = Arc::new(AtomicBool::new(false));
        let rounds = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let last = Arc::new(Mutex::new(0_i64));
        let tasks = clients
            .into_iter()
            .map(|client| {
                let (inside, rounds, stop, last) =
                    (inside.clone(), rounds.clone(), stop.clone(), last.clone());
                let id = id.to_owned();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        let guard = client
                            .lock(id.clone())
                            .ttl(Duration::from_secs(5))
                            .wait(Duration::from_secs(30))
                            .acquire()
                            .await
                            .expect("acquired");
                        assert!(!inside.swap(true, Ordering::SeqCst), "two holders at once");
                        {
                            let mut last = last.lock().expect("not poisoned");
                            assert!(guard.index() > *last, "{} after {}", guard.index(), *last);
                            *last = guard.index();
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                        inside.store(false, Ordering::SeqCst);
                        guard.release().await.expect("released");
                        rounds.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Contenders {
            rounds,
            stop,
            tasks,
        }
    }

    /// Rounds completed so far, by all contenders.
    pub fn rounds(&self) -> usize {
        self.rounds.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits (up to `deadline`) until `more` rounds beyond the current count are done.
    pub async fn progress(&self, more: usize, deadline: Duration) -> bool {
        let target = self.rounds() + more;
        wait_until_async(deadline, || async { self.rounds() >= target }).await
    }

    /// Stops the contenders after their current round and waits for them; a contender's
    /// failed assertion fails the caller here.
    pub async fn stop(self) -> usize {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let rounds = self.rounds.clone();
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("contenders finish")
                .expect("no contender failed");
        }
        rounds.load(std::sync::atomic::Ordering::Relaxed)
    }
}
