//! The client stack shared by every scenario: the library's clients, the raw baseline lock on
//! the same kind of connection, round-trip sampling, and an admin connection that observes the
//! server.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::stats::Latencies;
use crate::topology::{Endpoints, Topology};
use crate::Result;

/// The ttl of every lock the bench takes, unless a scenario says otherwise: long enough never to
/// expire during a cycle, so that every release is a real release.
pub const BENCH_TTL: Duration = Duration::from_secs(10);

/// Where the bench connects, and what it calls its keys.
#[derive(Debug, Clone)]
pub struct Target {
    /// The deployment's servers.
    pub endpoints: Endpoints,
    /// A prefix unique to this run, so that concurrent or leftover runs on a shared server never
    /// see each other's keys.
    pub prefix: String,
    /// Whether redfour clients queue their waiters fairly (`ClientBuilder::fair`).
    pub fair: bool,
}

impl Target {
    /// The topology measured here.
    pub fn topology(&self) -> Topology {
        self.endpoints.topology()
    }

    /// Whether the raw and Node baselines run here: only on one server, where they are what
    /// they claim to be (a one-server lock, Node redfour's layout); other topologies are
    /// compared with the baselines of the same run's standalone server.
    pub fn has_baselines(&self) -> bool {
        self.topology() == Topology::Standalone
    }

    /// The namespace of scenario `name`: redfour keys are `{ns}:{id}`, the counter `{ns}index`
    /// (`{{ns}:{id}}` and `{{ns}:{id}}:index` on a cluster).
    pub fn namespace(&self, name: &str) -> String {
        format!("{}-{name}", self.prefix)
    }

    /// A redfour client of the deployment (built with the library's constructor for its
    /// topology) in the scenario's namespace, with the library's default settings but for the
    /// fair queue, which `--no-fair` turns off, and, on Sentinel, replica acknowledgements.
    pub fn client(&self, name: &str) -> Result<redfour::Client> {
        Ok(self
            .endpoints
            .builder()
            .namespace(self.namespace(name))
            .fair(self.fair)
            .build()?)
    }

    /// A connection like the library's command connection (see [`connection_manager`]) to the
    /// first master: the one server, or on other topologies a node whose `PING` is the round
    /// trip of any of them (they all listen on the same loopback).
    pub async fn connection(&self) -> Result<ConnectionManager> {
        let first = self.endpoints.masters().first().copied();
        connection_manager(first.ok_or("the deployment has no master")?).await
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

/// Node redfour 1.0.5's acquire, command for command (its wire format; the Node library sends
/// the same steps in a script of its own text): `EXISTS` the lock, and if it is free `INCR` the
/// shared counter, `HMSET` the index into the lock hash and `PEXPIRE` it. KEYS: lock, counter;
/// ARGV: ttl ms. Replies {1, index, ttl} or {0, -1, pttl}.
const NODE_ACQUIRE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0, -1, redis.call('PTTL', KEYS[1])}
end
local index = redis.call('INCR', KEYS[2])
redis.call('HMSET', KEYS[1], 'index', index)
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[1]))
return {1, index, tonumber(ARGV[1])}
"#;

/// Node redfour 1.0.5's release, command for command: `EXISTS`, `HGET` of the index, and when
/// it is the caller's, `DEL` and `PUBLISH` of the lock key on the release channel. Node splices
/// the channel into its script's source; here it travels as `ARGV[2]`, which costs the server
/// the same. KEYS: lock; ARGV: index, channel. Replies {1, 'released', index}, {1, 'expired', …}
/// or {0, 'conflict', index}.
const NODE_RELEASE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then
  return {1, 'expired', 'expired', 0}
end
local stored = tonumber(redis.call('HGET', KEYS[1], 'index'))
if stored == tonumber(ARGV[1]) then
  redis.call('DEL', KEYS[1])
  redis.call('PUBLISH', ARGV[2], KEYS[1])
  return {1, 'released', stored}
end
return {0, 'conflict', stored}
"#;

/// Node redfour's two scripts, driven from this client stack: what the server spends on a lock
/// cycle of the Node library, in its layout (`{ns}:{id}`, counter `{ns}index`, channel
/// `{ns}-release`). Clones share the connection.
#[derive(Clone)]
pub struct NodeLock {
    conn: ConnectionManager,
    acquire: redis::Script,
    release: redis::Script,
    counter: String,
    channel: String,
    ttl_ms: u64,
}

impl NodeLock {
    /// Node's scripts on their own `ConnectionManager`, configured like redfour's, in the
    /// namespace `ns`.
    pub async fn connect(target: &Target, ns: &str) -> Result<Self> {
        Ok(NodeLock {
            conn: target.connection().await?,
            acquire: redis::Script::new(NODE_ACQUIRE),
            release: redis::Script::new(NODE_RELEASE),
            counter: format!("{ns}index"),
            channel: format!("{ns}-release"),
            ttl_ms: BENCH_TTL.as_millis() as u64,
        })
    }

    /// One acquire attempt of `key` (`{ns}:{id}`): the index when it was free.
    pub async fn acquire(&mut self, key: &str) -> Result<Option<i64>> {
        let reply: Vec<redis::Value> = self
            .acquire
            .key(key)
            .key(&self.counter)
            .arg(self.ttl_ms)
            .invoke_async(&mut self.conn)
            .await?;
        match reply.as_slice() {
            [redis::Value::Int(1), redis::Value::Int(index), ..] => Ok(Some(*index)),
            [redis::Value::Int(0), ..] => Ok(None),
            other => Err(format!("unexpected reply of Node's acquire: {other:?}").into()),
        }
    }

    /// Releases `key` if it holds `index`; true when it was released.
    pub async fn release(&mut self, key: &str, index: i64) -> Result<bool> {
        let reply: Vec<redis::Value> = self
            .release
            .key(key)
            .arg(index)
            .arg(&self.channel)
            .invoke_async(&mut self.conn)
            .await?;
        Ok(matches!(reply.first(), Some(redis::Value::Int(1)))
            && matches!(reply.get(1), Some(redis::Value::BulkString(s)) if s == b"released"))
    }

    /// One full cycle on a key nobody else touches, failing unless both steps happened.
    pub async fn cycle(&mut self, key: &str) -> Result<()> {
        let Some(index) = self.acquire(key).await? else {
            return Err(format!("Node acquire of the free key {key} failed").into());
        };
        if !self.release(key, index).await? {
            return Err(format!("Node release of {key} did not release").into());
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

/// The bench's own connections for looking at the servers (client list, command statistics,
/// cleanup): one to each master of the deployment (one server: one connection). They are opened
/// once, so they never show up as new connections in a scenario. Figures are summed over the
/// masters: on a cluster a lock's scripts run on its slot's master, on Redlock on every master.
pub struct Admin {
    nodes: Vec<ConnectionManager>,
}

impl Admin {
    /// Opens the admin connections.
    pub async fn connect(target: &Target) -> Result<Self> {
        let mut nodes = Vec::new();
        for url in target.endpoints.masters() {
            nodes.push(connection_manager(url).await?);
        }
        Ok(Admin { nodes })
    }

    /// The ids of every connection the masters have open (`CLIENT LIST`), each with the index
    /// of its master.
    pub async fn client_ids(&mut self) -> Result<BTreeSet<(usize, u64)>> {
        let mut ids = BTreeSet::new();
        for (node, conn) in self.nodes.iter_mut().enumerate() {
            let list: String = redis::cmd("CLIENT").arg("LIST").query_async(conn).await?;
            for line in list.lines().filter(|l| !l.trim().is_empty()) {
                let id = line
                    .split(' ')
                    .find_map(|field| field.strip_prefix("id="))
                    .and_then(|id| id.parse().ok())
                    .ok_or_else(|| format!("no id in CLIENT LIST line `{line}`"))?;
                ids.insert((node, id));
            }
        }
        Ok(ids)
    }

    /// The sum of `field` over the masters' `INFO commandstats` lines for `names`; `None` when
    /// a master does not say.
    async fn commandstats(&mut self, names: &[&str], field: &str) -> Result<Option<u64>> {
        let mut total = 0u64;
        for conn in &mut self.nodes {
            let info: String = redis::cmd("INFO")
                .arg("commandstats")
                .query_async(conn)
                .await?;
            match crate::commandstats::sum(&info, names, field) {
                Some(n) => total += n,
                None => return Ok(None),
            }
        }
        Ok(Some(total))
    }

    /// How many `EVALSHA` commands the masters have executed since their start (from
    /// `INFO commandstats`); `None` when one does not say. Every redfour acquire attempt is
    /// one per master it goes to ([`Endpoints::evalsha_per_attempt`]), so this tells when a
    /// waiter's attempt has reached the servers.
    pub async fn evalsha_calls(&mut self) -> Result<Option<u64>> {
        self.commandstats(&["evalsha"], "calls").await
    }

    /// Microseconds the masters have spent executing the commands `names` since their start
    /// (lower case, from `INFO commandstats`); `None` when one does not say. A script's
    /// figure includes the commands it calls, which Redis also counts on their own lines: name
    /// only the commands a client sent.
    pub async fn command_usec(&mut self, names: &[&str]) -> Result<Option<u64>> {
        self.commandstats(names, "usec").await
    }

    /// Waits until the masters have executed at least `calls` `EVALSHA`s in all, polling;
    /// false when `limit` passed first or a master does not report command statistics.
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

    /// Deletes, on every master, every key whose name starts with `prefix` (which must hold
    /// no glob characters) or with `{` and `prefix` (the hash tag of redfour's cluster
    /// layout): what a scenario leaves behind, such as fencing counters, or locks and queues
    /// abandoned when it failed. Keys go one `DEL` each (pipelined), as a cluster node refuses
    /// a `DEL` of keys in different slots.
    pub async fn delete_prefixed(&mut self, prefix: &str) -> Result<()> {
        for conn in &mut self.nodes {
            for pattern in [format!("{prefix}*"), format!("{{{prefix}*")] {
                let mut cursor = 0u64;
                loop {
                    let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(conn)
                        .await?;
                    if !keys.is_empty() {
                        let mut pipe = redis::pipe();
                        for key in &keys {
                            pipe.cmd("DEL").arg(key).ignore();
                        }
                        pipe.query_async::<()>(conn).await?;
                    }
                    if next == 0 {
                        break;
                    }
                    cursor = next;
                }
            }
        }
        Ok(())
    }
}
