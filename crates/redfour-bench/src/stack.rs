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
        Ok(parse_evalsha_calls(&info))
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
        Ok(parse_command_usec(&info, names))
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

/// `calls=` of the `cmdstat_evalsha` line of `INFO commandstats`; 0 when the command has not
/// run yet (Redis omits its line), `None` when the text is not a commandstats section at all.
fn parse_evalsha_calls(info: &str) -> Option<u64> {
    if !info.contains("# Commandstats") {
        return None;
    }
    let Some(line) = info.lines().find(|l| l.starts_with("cmdstat_evalsha:")) else {
        return Some(0);
    };
    line.trim_start_matches("cmdstat_evalsha:")
        .split(',')
        .find_map(|field| field.strip_prefix("calls="))
        .and_then(|n| n.trim().parse().ok())
}

/// The sum of `usec=` over the `cmdstat_{name}` lines of `INFO commandstats` for `names` (0
/// for a command that has not run: Redis omits its line); `None` when the text is not a
/// commandstats section or a line cannot be read.
fn parse_command_usec(info: &str, names: &[&str]) -> Option<u64> {
    if !info.contains("# Commandstats") {
        return None;
    }
    let mut total = 0u64;
    for line in info.lines() {
        let Some((name, fields)) = line
            .strip_prefix("cmdstat_")
            .and_then(|l| l.split_once(':'))
        else {
            continue;
        };
        if !names.contains(&name) {
            continue;
        }
        total += fields
            .split(',')
            .find_map(|f| f.strip_prefix("usec="))
            .and_then(|n| n.trim().parse::<u64>().ok())?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commandstats() {
        let info = "# Commandstats\r\ncmdstat_eval:calls=2,usec=10,usec_per_call=5.00\r\n\
                    cmdstat_evalsha:calls=1234,usec=99,usec_per_call=0.08,rejected_calls=0\r\n";
        assert_eq!(parse_evalsha_calls(info), Some(1234));
        assert_eq!(
            parse_evalsha_calls("# Commandstats\r\ncmdstat_ping:calls=1\r\n"),
            Some(0)
        );
        assert_eq!(parse_evalsha_calls(""), None);
    }

    #[test]
    fn sums_the_named_commands() {
        let info = "# Commandstats\r\ncmdstat_evalsha:calls=10,usec=120,usec_per_call=12.00\r\n\
                    cmdstat_hset:calls=10,usec=20,usec_per_call=2.00\r\n\
                    cmdstat_set:calls=5,usec=5,usec_per_call=1.00\r\n\
                    cmdstat_info:calls=3,usec=300,usec_per_call=100.00\r\n";
        assert_eq!(parse_command_usec(info, &["evalsha"]), Some(120));
        assert_eq!(parse_command_usec(info, &["evalsha", "set"]), Some(125));
        assert_eq!(parse_command_usec(info, &["ping"]), Some(0));
        assert_eq!(parse_command_usec("nope", &["set"]), None);
    }
}
