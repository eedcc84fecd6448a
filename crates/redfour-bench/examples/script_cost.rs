//! Server time of each step of a lock, one kind of step at a time, from `INFO commandstats`:
//! the part of the bench's ratios that is spent inside redis-server, where no client can save
//! it.
//!
//! ```text
//! cargo run --release -p redfour-bench --example script_cost [-- REDIS_URL [N]]
//! ```
//!
//! Without a URL, a private `redis-server` is started through the test kit. Each batch runs `N`
//! (default 2000) steps of one kind, sequentially, with nothing else on the server, and prints
//! the server's execution time per step (the `usec` of the batch's commands divided by `N`):
//!
//! - redfour (library defaults, fair queue on): acquire of a free key; release with nobody
//!   queued; release that hands the lock to a queued waiter (the waiter is queued by the fair
//!   acquire script itself, with a token and a channel nobody listens on, so that no client
//!   reacts in the background);
//! - the raw baseline of the bench: `SET NX PX`; the compare-and-delete script;
//! - `PING`, the floor of any command.
//!
//! Keys live in the namespace `rfcost-<pid>` and are deleted at the end.

use std::time::Duration;

use redis::aio::MultiplexedConnection;

// The bench's own reader of `INFO commandstats` (the bench is a binary crate).
#[path = "../src/commandstats.rs"]
mod commandstats;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const TTL: Duration = Duration::from_secs(30);

/// The library's fair acquire script, as the library builds it (shared functions first).
const FAIR_ACQUIRE: &str = concat!(
    include_str!("../../redfour/src/scripts/fair_acquire_free.lua"),
    include_str!("../../redfour/src/scripts/publish.lua"),
    include_str!("../../redfour/src/scripts/lock.lua"),
    include_str!("../../redfour/src/scripts/grant.lua"),
    include_str!("../../redfour/src/scripts/fair_common.lua"),
    include_str!("../../redfour/src/scripts/fair_acquire.lua"),
);

const RAW_RELEASE: &str =
    "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let n: usize = match args.get(1) {
        Some(n) => n.parse().map_err(|_| "N must be a positive integer")?,
        None => 2000,
    };
    if n == 0 {
        return Err("N must be a positive integer".into());
    }
    let _server;
    let url = match args.first() {
        Some(url) => url.clone(),
        None => {
            _server = redfour_test::RedisServer::start();
            _server.url()
        }
    };
    let ns = format!("rfcost-{}", std::process::id());
    let locks = redfour::Client::builder(url.clone())
        .namespace(ns.clone())
        .build()?;
    let mut conn = redis::Client::open(url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    // Warm up: connections open, scripts loaded.
    let warm = locks.acquire_lock("warm", TTL).await?;
    locks.release_lock("warm", warm.index).await?;

    println!("server time per step, µs (N = {n}, from INFO commandstats)");

    let before = usec(&mut conn, &["ping"]).await?;
    for _ in 0..n {
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
    }
    report("PING", usec(&mut conn, &["ping"]).await? - before, n);

    let ids: Vec<String> = (0..n).map(|i| format!("k{i}")).collect();
    let before = usec(&mut conn, &["evalsha"]).await?;
    let mut held = Vec::with_capacity(n);
    for id in &ids {
        let lock = locks.acquire_lock(id, TTL).await?;
        if !lock.success {
            return Err(format!("{id} was not free").into());
        }
        held.push(lock.index);
    }
    report(
        "redfour acquire, free key",
        usec(&mut conn, &["evalsha"]).await? - before,
        n,
    );

    let before = usec(&mut conn, &["evalsha"]).await?;
    for (id, index) in ids.iter().zip(&held) {
        release(&locks, id, *index).await?;
    }
    report(
        "redfour release, nobody queued",
        usec(&mut conn, &["evalsha"]).await? - before,
        n,
    );

    // Every lock held again, with one waiter queued behind it.
    let acquire = redis::Script::new(FAIR_ACQUIRE);
    held.clear();
    for (i, id) in ids.iter().enumerate() {
        let lock = locks.acquire_lock(id, TTL).await?;
        held.push(lock.index);
        let key = format!("{ns}:{id}");
        let reply: Vec<i64> = acquire
            .key(&key)
            .key(format!("{ns}index"))
            .key(format!("{ns}-queue:{id}"))
            .key(format!("{ns}-waiters:{id}"))
            .arg(TTL.as_millis() as u64)
            .arg(format!("waiter{i}"))
            .arg(60_000)
            .arg(format!("{ns}-nobody-listens"))
            .arg(5_000)
            .arg("host")
            .arg("elsewhere")
            .invoke_async(&mut conn)
            .await?;
        if reply.first() != Some(&0) {
            return Err(format!("the waiter on {id} did not queue: {reply:?}").into());
        }
    }
    let before = usec(&mut conn, &["evalsha"]).await?;
    for (id, index) in ids.iter().zip(&held) {
        release(&locks, id, *index).await?;
    }
    report(
        "redfour release, handing over",
        usec(&mut conn, &["evalsha"]).await? - before,
        n,
    );

    let keys: Vec<String> = ids.iter().map(|id| format!("{ns}-raw:{id}")).collect();
    let before = usec(&mut conn, &["set"]).await?;
    for key in &keys {
        let set: redis::Value = redis::cmd("SET")
            .arg(key)
            .arg("token")
            .arg("NX")
            .arg("PX")
            .arg(TTL.as_millis() as u64)
            .query_async(&mut conn)
            .await?;
        if matches!(set, redis::Value::Nil) {
            return Err(format!("{key} was not free").into());
        }
    }
    report(
        "raw SET NX PX",
        usec(&mut conn, &["set"]).await? - before,
        n,
    );

    let raw_release = redis::Script::new(RAW_RELEASE);
    let before = usec(&mut conn, &["evalsha"]).await?;
    for key in &keys {
        let deleted: i64 = raw_release
            .key(key)
            .arg("token")
            .invoke_async(&mut conn)
            .await?;
        if deleted != 1 {
            return Err(format!("{key} was not deleted").into());
        }
    }
    report(
        "raw compare-and-delete",
        usec(&mut conn, &["evalsha"]).await? - before,
        n,
    );

    cleanup(&mut conn, &ns).await
}

async fn release(locks: &redfour::Client, id: &str, index: i64) -> Result<(), BoxError> {
    let released = locks.release_lock(id, index).await?;
    if released.result != redfour::ReleaseOutcome::Released {
        return Err(format!("release of {id} answered {}", released.result).into());
    }
    Ok(())
}

fn report(what: &str, usec: u64, n: usize) {
    println!("{what:<34} {:>7.2}", usec as f64 / n as f64);
}

/// The summed `usec=` of the `cmdstat_{name}` lines for `names`.
async fn usec(conn: &mut MultiplexedConnection, names: &[&str]) -> Result<u64, BoxError> {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await?;
    commandstats::sum(&info, names, "usec").ok_or_else(|| "unreadable INFO commandstats".into())
}

/// Deletes every key of the namespace: the handed-over locks, the counters.
async fn cleanup(conn: &mut MultiplexedConnection, ns: &str) -> Result<(), BoxError> {
    let mut cursor = 0u64;
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{ns}*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(&keys).query_async::<()>(conn).await?;
        }
        if next == 0 {
            return Ok(());
        }
        cursor = next;
    }
}
