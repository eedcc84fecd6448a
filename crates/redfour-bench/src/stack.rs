//! The client stack shared by every scenario: the library's clients, the raw baseline lock on
//! the same kind of connection, round-trip sampling, and an admin connection that observes the
//! server.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::stats::Latencies;
use crate::Result;

/// The ttl of every lock the bench takes, unless a scenario says otherwise: long enough never to
/// expire during a cycle, so that every release is a real release.
pub const BENCH_TTL: Duration = Duration::from_secs(10);

/// Where the bench connects, and what it calls its keys.
#[derive(Debug, Clone)]
pub struct Target {
    /// The Redis URL.
    pub url: String,
    /// A prefix unique to this run, so that concurrent or leftover runs on a shared server never
    /// see each other's keys.
    pub prefix: String,
    /// Whether redfour clients queue their waiters fairly (`ClientBuilder::fair`).
    pub fair: bool,
}

impl Target {
    /// The namespace of scenario `name`: redfour keys are `{ns}:{id}`, the counter `{ns}index`.
    pub fn namespace(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// A redfour client in the scenario's namespace, with the library's default settings but
    /// for the fair queue, which `--no-fair` turns off.
    pub fn client(&self, name: &str) -> Result<redfour::Client> {
        Ok(redfour::Client::builder(self.url.clone())
            .namespace(self.namespace(name))
            .fair(self.fair)
            .build()?)
    }

    /// A connection like the library's command connection (see [`connection_manager`]).
    pub async fn connection(&self) -> Result<ConnectionManager> {
        connection_manager(&self.url).await
    }
}

/// A `ConnectionManager` configured as redfour's `Client::connection()` configures its own
/// (connect timeout 2 s, response timeout 3 s, 3 retries, backoff capped at 2 s), so that the
/// baselines run on the very stack the library uses.
pub async fn connection_manager(url: &str) -> Result<ConnectionManager> {
    let client = redis::Client::open(url)?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(3)))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2));
    Ok(ConnectionManager::new_with_config(client, config).await?)
}

/// Times `samples` sequential `PING`s after `warmup` untimed ones.
pub async fn ping_latencies(
    conn: &mut ConnectionManager,
    warmup: usize,
    samples: usize,
) -> Result<Latencies> {
    for _ in 0..warmup {
        redis::cmd("PING").query_async::<()>(conn).await?;
    }
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples {
        let start = Instant::now();
        redis::cmd("PING").query_async::<()>(conn).await?;
        times.push(start.elapsed());
    }
    Ok(Latencies::new(times))
}

/// The compare-and-delete release of the textbook single-instance Redis lock.
const RAW_RELEASE: &str =
    "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end";

/// The baseline: the minimal correct lock on one Redis, `SET key token NX PX ttl` to acquire and
/// a compare-and-delete script (by `EVALSHA`) to release, with no fencing counter, no metadata,
/// no notification and no cancel safety. Clones share the connection, like redfour's clients.
#[derive(Clone)]
pub struct RawLock {
    conn: ConnectionManager,
    release: redis::Script,
    ttl_ms: u64,
}

impl RawLock {
    /// A raw lock on its own `ConnectionManager`, configured like redfour's.
    pub async fn connect(target: &Target) -> Result<Self> {
        Ok(RawLock {
            conn: target.connection().await?,
            release: redis::Script::new(RAW_RELEASE),
            ttl_ms: BENCH_TTL.as_millis() as u64,
        })
    }

    /// One acquire attempt; `token` must be unique to this acquisition.
    pub async fn acquire(&mut self, key: &str, token: u64) -> Result<bool> {
        let reply: redis::Value = redis::cmd("SET")
            .arg(key)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(self.ttl_ms)
            .query_async(&mut self.conn)
            .await?;
        Ok(!matches!(reply, redis::Value::Nil))
    }

    /// Releases `key` if it still holds `token`; true when something was deleted.
    pub async fn release(&mut self, key: &str, token: u64) -> Result<bool> {
        let deleted: i64 = self
            .release
            .key(key)
            .arg(token)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(deleted == 1)
    }

    /// One full cycle, acquire then release, failing if either step did not happen: the
    /// uncontended scenarios use keys nobody else touches.
    pub async fn cycle(&mut self, key: &str, token: u64) -> Result<()> {
        if !self.acquire(key, token).await? {
            return Err(format!("raw acquire of the free key {key} failed").into());
        }
        if !self.release(key, token).await? {
            return Err(format!("raw release of {key} deleted nothing").into());
        }
        Ok(())
    }
}

/// One redfour cycle on a key nobody else touches: `acquire_lock` then `release_lock`, failing
/// unless both succeed.
pub async fn redfour_cycle(client: &redfour::Client, id: &str) -> Result<()> {
    let lock = client.acquire_lock(id, BENCH_TTL).await?;
    if !lock.success {
        return Err(format!("redfour acquire of the free lock {id} failed").into());
    }
    let released = client.release_lock(id, lock.index).await?;
    if released.result != redfour::ReleaseOutcome::Released {
        return Err(format!("redfour release of {id} answered {}", released.result).into());
    }
    Ok(())
}

/// The bench's own connection for looking at the server (client list, command statistics,
/// cleanup). It is opened once, so it never shows up as a new connection in a scenario.
pub struct Admin {
    conn: ConnectionManager,
}

impl Admin {
    /// Opens the admin connection.
    pub async fn connect(target: &Target) -> Result<Self> {
        Ok(Admin {
            conn: target.connection().await?,
        })
    }

    /// The ids of every connection the server has open (`CLIENT LIST`).
    pub async fn client_ids(&mut self) -> Result<BTreeSet<u64>> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut self.conn)
            .await?;
        list.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|line| {
                line.split(' ')
                    .find_map(|field| field.strip_prefix("id="))
                    .and_then(|id| id.parse().ok())
                    .ok_or_else(|| format!("no id in CLIENT LIST line `{line}`").into())
            })
            .collect()
    }

    /// How many `EVALSHA` commands the server has executed since its start (from
    /// `INFO commandstats`); `None` when the server does not say. Every redfour acquire attempt
    /// is one, so this tells when a waiter's attempt has reached the server.
    pub async fn evalsha_calls(&mut self) -> Result<Option<u64>> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.conn)
            .await?;
        Ok(crate::commandstats::sum(&info, &["evalsha"], "calls"))
    }

    /// Microseconds the server has spent executing the commands `names` since its start
    /// (lower case, from `INFO commandstats`); `None` when the server does not say. A script's
    /// figure includes the commands it calls, which Redis also counts on their own lines: name
    /// only the commands a client sent.
    pub async fn command_usec(&mut self, names: &[&str]) -> Result<Option<u64>> {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut self.conn)
            .await?;
        Ok(crate::commandstats::sum(&info, names, "usec"))
    }

    /// Waits until the server has executed at least `calls` `EVALSHA`s in all, polling; false
    /// when `limit` passed first or the server does not report command statistics.
    pub async fn wait_for_evalsha_calls(&mut self, calls: u64, limit: Duration) -> Result<bool> {
        let deadline = Instant::now() + limit;
        loop {
            match self.evalsha_calls().await? {
                None => return Ok(false),
                Some(n) if n >= calls => return Ok(true),
                Some(_) if Instant::now() >= deadline => return Ok(false),
                Some(_) => {}
            }
        }
    }

    /// Deletes every key whose name starts with `prefix` (which must hold no glob characters):
    /// what a scenario leaves behind, such as fencing counters, or locks and queues abandoned
    /// when it failed.
    pub async fn delete_prefixed(&mut self, prefix: &str) -> Result<()> {
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(format!("{prefix}*"))
                .arg("COUNT")
                .arg(1000)
                .query_async(&mut self.conn)
                .await?;
            if !keys.is_empty() {
                redis::cmd("DEL")
                    .arg(&keys)
                    .query_async::<()>(&mut self.conn)
                    .await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }
}
