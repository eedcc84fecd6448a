//! The direct engine: a lock kept on one Redis master, reached directly (one server),
//! through the sentinels (whichever server they name as master) or through a cluster (the
//! master of the lock's slot). One script call per operation; with replica acknowledgements,
//! acquires and claims go out with `WAIT` on a connection of their own.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;
use tracing::Instrument;

use super::conn::{Conn, Lane, SentinelConn, SentinelShared};
use super::{Attempt, Context, FairSetup, Meta, SubServer, Subscriptions};
use crate::cleanup::OnDrop;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::keys::{HolderFields, Layout, Namespace, Queueing};
use crate::outcome::{
    parse_index, parse_pttl, parse_status, LockStatus, ReleaseOutcome, RenewOutcome,
};

/// How the master that holds a lock is reached.
// One per engine, behind its `Arc`: the variants' sizes do not matter.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Master {
    /// One server.
    Standalone(redis::Client),
    /// Whichever server the sentinels name, asked again after a fault.
    Sentinel(Arc<SentinelShared>),
    /// The master of the lock's slot, followed through `MOVED`, `ASK` and `TRYAGAIN`.
    Cluster {
        client: redis::cluster::ClusterClient,
        /// The seed nodes, for the subscription's own cluster client.
        urls: Vec<String>,
    },
}

/// The direct engine; cheap to clone (clones share the connections).
#[derive(Clone)]
pub(crate) struct Direct {
    inner: Arc<DirectInner>,
}

pub(crate) struct DirectInner {
    master: Master,
    /// The shared command connection, opened on first use.
    conn: OnceCell<Conn>,
    /// For acquires that wait for replica acknowledgements: `WAIT` blocks its connection, so
    /// it does not share the one that renewals and releases use.
    ack_conn: OnceCell<Conn>,
    ctx: Arc<Context>,
    /// Where this engine connects, password redacted, for messages.
    address: String,
}

impl std::ops::Deref for Direct {
    type Target = DirectInner;

    fn deref(&self) -> &DirectInner {
        &self.inner
    }
}

/// Cleans up after an attempt whose outcome its caller will never learn: the future was
/// dropped while the request was in flight, or the request failed in transit. Each attempt
/// writes its own id into the lock hash, so the clean-up releases the lock only if that very
/// attempt won it. On a multiplexed connection the clean-up is sent after the attempt, so it
/// runs after it on the server.
fn in_flight<'a>(
    direct: &'a Direct,
    key: &'a str,
    attempt_id: &'a str,
) -> OnDrop<&'a str, impl FnOnce(&'a str) + 'a> {
    OnDrop::new(attempt_id, move |attempt_id: &str| {
        let owner = direct.clone();
        let key = key.to_owned();
        let attempt_id = attempt_id.to_owned();
        direct.ctx.cleanup.spawn(
            async move {
                if let Err(e) = owner.release_attempt(&key, &attempt_id).await {
                    tracing::debug!(key, error = %e.report(), "could not clean up after an abandoned attempt; a lock it won expires by its ttl");
                }
            }
            .in_current_span(),
        );
    })
}

impl Direct {
    pub(crate) fn new(master: Master, ctx: Arc<Context>, address: String) -> Direct {
        Direct {
            inner: Arc::new(DirectInner {
                master,
                conn: OnceCell::new(),
                ack_conn: OnceCell::new(),
                ctx,
                address,
            }),
        }
    }

    pub(crate) fn ctx(&self) -> &Context {
        &self.ctx
    }

    pub(crate) fn ctx_arc(&self) -> &Arc<Context> {
        &self.inner.ctx
    }

    /// How this engine reaches its master.
    pub(crate) fn master(&self) -> &Master {
        &self.master
    }

    /// Where this engine connects, password redacted.
    pub(crate) fn address(&self) -> &str {
        &self.address
    }

    /// Whether acquires and claims wait for replica acknowledgements.
    pub(crate) fn acknowledged(&self) -> bool {
        self.ctx.config.replica_acks > 0
    }

    /// The shared command connection, opened on first use.
    pub(crate) async fn connection(&self) -> Result<Conn> {
        self.connection_on(Lane::Commands).await
    }

    /// The connection for acquires that `WAIT` for replicas, opened on first use.
    async fn ack_connection(&self) -> Result<Conn> {
        self.connection_on(Lane::Acks).await
    }

    async fn connection_on(&self, lane: Lane) -> Result<Conn> {
        let cell = match lane {
            Lane::Commands => &self.conn,
            Lane::Acks => &self.ack_conn,
        };
        let conn = cell
            .get_or_try_init(|| async {
                let config = &self.ctx.config;
                let opened = match &self.master {
                    Master::Standalone(client) => {
                        let manager = ConnectionManagerConfig::new()
                            .set_connection_timeout(Some(config.connect_timeout))
                            .set_response_timeout(Some(config.response_timeout))
                            .set_number_of_retries(config.reconnect_retries)
                            .set_max_delay(Duration::from_secs(2));
                        ConnectionManager::new_with_config(client.clone(), manager)
                            .await
                            .map(|c| Conn::Single(crate::metrics::watched(c, lane.into())))
                    }
                    // Resolved through the sentinels at the first command, and again after a
                    // failure that may mean the master moved.
                    Master::Sentinel(shared) => {
                        shared.watch_failovers();
                        Ok(Conn::Sentinel(SentinelConn {
                            shared: shared.clone(),
                            lane,
                        }))
                    }
                    Master::Cluster { client, .. } => {
                        client.get_async_connection().await.map(Conn::Cluster)
                    }
                };
                opened.map_err(|e| {
                    let err = Error::from_redis(e, None);
                    // A handshake reply that does not parse means the peer is not a Redis
                    // server (a wrong port, an HTTP proxy): it cannot be reached, and no key
                    // was read, so it is not CorruptData.
                    if err.is_timeout() || err.is_unavailable() || err.is_corrupt_data() {
                        err.reclassify(
                            crate::ErrorKind::Unavailable,
                            format!("cannot connect to redis at {}", self.address),
                        )
                    } else if err.is_access_denied() {
                        // Say which server refused the login.
                        let message = format!("{} (redis at {})", err.message(), self.address);
                        err.reclassify(ErrorKind::AccessDenied, message)
                    } else {
                        err
                    }
                })
            })
            .await?;
        Ok(conn.clone())
    }

    /// Opens the command connection (if it is not open) and sends `PING`.
    pub(crate) async fn ping(&self) -> Result<()> {
        let mut conn = self.connection().await?;
        redis::cmd("PING")
            .query_async::<()>(&mut conn)
            .await
            .map_err(|e| Error::from_redis(e, None))
    }

    /// Who holds the lock `id` (at `key`): one read-only script call.
    pub(crate) async fn status(&self, id: &str, key: &str) -> Result<LockStatus> {
        let mut conn = self.connection().await?;
        let reply: Vec<redis::Value> = self
            .ctx
            .ns
            .status_call(key)
            .invoke(&mut conn)
            .await
            .map_err(|e| Error::from_redis(e, Some(key)))?;
        parse_status(id, key, reply)
    }

    /// Claims a lock handed to this client's waiter: a renewal, acknowledged by replicas
    /// when the client asks for acknowledgements.
    pub(crate) async fn claim(&self, key: &str, index: i64, ttl_ms: u64) -> Result<RenewOutcome> {
        if self.acknowledged() {
            self.renew_acknowledged(key, index, ttl_ms).await
        } else {
            self.renew(key, index, ttl_ms).await
        }
    }

    /// Where the hub subscribes for this master's notices.
    pub(crate) fn subscriptions(&self, fair: Option<FairSetup>) -> Subscriptions {
        let (servers, sharded) = match &self.master {
            Master::Standalone(client) => (vec![SubServer::fixed(client.clone())], None),
            Master::Sentinel(shared) => (vec![SubServer::sentinel(shared.clone())], None),
            Master::Cluster { urls, .. } => {
                (Vec::new(), Some(cluster_builder(urls, &self.ctx.config)))
            }
        };
        Subscriptions {
            servers,
            sharded,
            fair,
        }
    }

    /// What the hub needs for the fair queue: where handoffs arrive, and a connection to
    /// tidy up after waiters that left.
    pub(crate) async fn fair_setup(&self) -> Result<FairSetup> {
        let ctx = &self.ctx;
        Ok(FairSetup {
            handoff_channel: match ctx.ns.layout() {
                Layout::Node => Some(ctx.handoff_channel_for("").into_owned()),
                Layout::Cluster => None,
            },
            client_token: ctx.token.clone(),
            conn: self.connection().await?,
            claim_window_ms: ctx.config.claim_window.as_millis() as u64,
        })
    }

    /// One attempt on this server (a whole acquire, or one Redlock master's part of one); see
    /// [`Engine::attempt`](super::Engine::attempt).
    /// `judge_validity`: a lock won after its validity is released here and answered as
    /// `WonTooLate`; off for a Redlock master, whose grant only the whole attempt can judge
    /// (and release), without a round trip more on a master that is slow already.
    pub(crate) async fn attempt(
        &self,
        key: &str,
        ttl_ms: u64,
        meta: &Meta,
        token: Option<&str>,
        judge_validity: bool,
    ) -> Result<Attempt> {
        let seq = self.ctx.attempts.fetch_add(1, Ordering::Relaxed);
        let attempt_id = format!("{}#{seq}", self.ctx.token);
        let in_flight = in_flight(self, key, &attempt_id);
        let result = self
            .attempt_now(key, ttl_ms, meta, token, &attempt_id)
            .await;
        // After a transient error the attempt may or may not have run: stay armed.
        if matches!(&result, Err(e) if e.is_transient()) {
            return result;
        }
        // A lock won after its lease had already run out on this process's clock (the reply
        // was held up for longer than the ttl) is no lock to rely on: release it at once and
        // say so (it is not held by someone else: `ValidityExpired`).
        if let Ok(Attempt::Acquired { index, ttl, sent }) = &result {
            if judge_validity && crate::lease::won_too_late(*sent, *ttl, self.ctx.config.drift) {
                tracing::warn!(
                    key,
                    index,
                    waited_ms = sent.elapsed().as_millis() as u64,
                    "the lock was won after its ttl had run out here; releasing it"
                );
                // Still armed while the release is out: if this future is dropped meanwhile,
                // or the release fails, the attempt's cleanup releases the lock by its id.
                match self.release(key, *index).await {
                    Ok(_) => {
                        in_flight.disarm();
                    }
                    Err(e) => {
                        tracing::warn!(key, index, error = %e.report(), "cannot release a lock won too late; cleaning up in the background");
                    }
                }
                let drift = self.ctx.config.drift;
                return Ok(Attempt::WonTooLate {
                    sent: *sent,
                    // The lock this attempt just gave up: a handoff notice with a higher index
                    // is news.
                    index: Some(*index),
                    error: Error::validity_expired(
                        key,
                        "the server",
                        sent.elapsed(),
                        crate::lease::validity_limit(*ttl, drift),
                    ),
                });
            }
        }
        // The caller learns the outcome.
        in_flight.disarm();
        result
    }

    /// Releases the lock at `key` if the attempt `attempt_id` holds it.
    async fn release_attempt(&self, key: &str, attempt_id: &str) -> Result<()> {
        // On the connection the attempt went out on, so that the check runs after it on the
        // server: acquires that wait for replicas use their own connection, where an attempt
        // can sit behind another one's `WAIT` long after its caller gave up.
        let mut conn = if self.acknowledged() {
            self.ack_connection().await?
        } else {
            self.connection().await?
        };
        let (owner, index): (Option<String>, Option<String>) = redis::cmd("HMGET")
            .arg(key)
            .arg("attempt")
            .arg("index")
            .query_async(&mut conn)
            .await
            .map_err(|e| Error::from_redis(e, Some(key)))?;
        if owner.as_deref() == Some(attempt_id) {
            if let Some(index) = index.as_deref().and_then(parse_index) {
                tracing::debug!(key, index, "releasing a lock won by an abandoned attempt");
                self.release(key, index).await?;
            }
        }
        Ok(())
    }

    async fn attempt_now(
        &self,
        key: &str,
        ttl_ms: u64,
        meta: &Meta,
        token: Option<&str>,
        attempt_id: &str,
    ) -> Result<Attempt> {
        // Taken before the request is built, so that waiting attempts hold no buffers. The
        // semaphore is never closed; without a permit the attempt would only go unbounded.
        let _slot = self.ctx.attempt_slots.acquire().await.ok();
        let mut conn = self.connection().await?;
        let inner = &*self.ctx;
        let holder = HolderFields {
            host: &inner.holder.host,
            pid: inner.holder.pid,
            attempt: attempt_id,
            description: meta.description.as_deref(),
        };
        let inv = if inner.config.fair {
            let queueing = Queueing {
                token: token.unwrap_or(""),
                entry_lifetime_ms: inner.config.entry_lifetime().as_millis() as u64,
                handoff_channel: &inner.handoff_channel_for(key),
                claim_window_ms: inner.config.claim_window.as_millis() as u64,
            };
            inner.ns.fair_acquire_call(key, ttl_ms, &queueing, &holder)
        } else {
            inner.ns.acquire_call(key, ttl_ms, &holder)
        };
        let sent = Instant::now();
        let map_err = |e| script_error(&inner.ns, e, key);
        let replicas = inner.config.replica_acks;
        let (reply, acked): (Vec<i64>, Option<redis::RedisResult<i64>>) = if replicas > 0 {
            // The script and `WAIT` go out together on one connection (the acknowledgement
            // then counts this very write), the connection kept for such acquires: `WAIT`
            // blocks it, and renewals and releases must not queue behind it.
            drop(conn);
            let mut acks = self.ack_connection().await?;
            let (reply, acked) = acks
                .eval_then_wait(&inv, key, replicas, inner.config.replica_ack_timeout)
                .await
                .map_err(map_err)?;
            (reply, Some(acked))
        } else {
            (inv.invoke(&mut conn).await.map_err(map_err)?, None)
        };
        let (won, index, ttl) = match reply[..] {
            [won, index, ttl, ..] => (won, index, ttl),
            _ => {
                return Err(Error::new(ErrorKind::Script, "unexpected acquire reply").with_key(key))
            }
        };
        // The fair script adds the holder's index to a "held" answer; -1 when unknown.
        let holder = reply.get(3).copied().filter(|i| *i > 0);
        let ttl = parse_pttl(ttl);
        tracing::debug!(
            key,
            outcome = match won {
                1 => "acquired",
                2 => "handed over",
                _ => "held",
            },
            index,
            ttl_ms = ttl.as_millis() as u64,
            "acquire attempt"
        );
        if let (1, Some(acked)) = (won, acked) {
            // A failed `WAIT` (an ACL without `+wait`) refuses too: the lock was won all the
            // same, and is given back.
            let refused = check_acks(
                acked,
                replicas,
                inner.config.replica_ack_timeout,
                key,
                "the acquire",
                "; the lock was released",
            )
            .err();
            if let Some(err) = refused {
                tracing::warn!(key, index, error = %err.report(), "an acquire was not acknowledged by enough replicas; releasing it");
                // If this release fails or is cut off, the caller's attempt cleanup (armed while
                // the release is out) releases the lock by the attempt's id.
                if let Err(e) = self.release(key, index).await {
                    tracing::warn!(key, index, error = %e.report(), "cannot release an unacknowledged lock; cleaning up in the background");
                    return Err(e);
                }
                return Err(err);
            }
        }
        Ok(match won {
            1 => Attempt::Acquired { index, ttl, sent },
            2 => Attempt::HandedOver {
                index,
                pttl: ttl,
                sent,
            },
            _ => Attempt::Held {
                pttl: ttl,
                sent,
                holder,
            },
        })
    }

    /// Takes the waiter `token` out of the lock's queue (best effort: an entry left behind
    /// expires on the server).
    pub(crate) async fn leave_queue(&self, key: &str, token: &str) {
        let left = async {
            let mut conn = self.connection().await?;
            self.ctx
                .ns
                .leave_call(key, token)
                .invoke::<i64>(&mut conn)
                .await
                .map_err(|e| Error::from_redis(e, Some(key)))
        };
        if let Err(e) = left.await {
            tracing::debug!(key, error = %e.report(), "could not leave the queue; the entry will expire");
        }
    }

    pub(crate) async fn release(&self, key: &str, index: i64) -> Result<(ReleaseOutcome, i64)> {
        let mut conn = self.connection().await?;
        let inner = &*self.ctx;
        let inv = if inner.config.fair {
            let window_ms = inner.config.claim_window.as_millis() as u64;
            inner.ns.fair_release_call(key, index, window_ms, None)
        } else {
            inner.ns.release_call(key, index)
        };
        // A release is safe to repeat (it acts only for `index`), so a connection that broke
        // under it (a Redis restart, a dropped connection, a failover) or a slot in migration
        // gets a few more tries instead of leaving the lock to its ttl. If an earlier try did
        // run, a later one answers `expired`, or `conflict` once someone else took the lock.
        let mut retries = [
            Duration::ZERO,
            Duration::from_millis(50),
            Duration::from_millis(200),
        ]
        .into_iter();
        let (ok, word, idx): (i64, String, i64) = loop {
            match inv.invoke(&mut conn).await {
                Ok(reply) => break reply,
                Err(e) => {
                    // A handoff takes the next index: the counter may be what failed.
                    let err = script_error(&inner.ns, e, key);
                    let Some(pause) = retries.next().filter(|_| err.is_transient()) else {
                        return Err(err);
                    };
                    tracing::debug!(key, index, error = %err.report(), "release failed; trying again");
                    tokio::time::sleep(pause).await;
                }
            }
        };
        let outcome = match (ok, word.as_str()) {
            (1, "released") => ReleaseOutcome::Released,
            (1, "expired") => ReleaseOutcome::Expired,
            (0, "conflict") => ReleaseOutcome::Conflict,
            _ => {
                return Err(Error::new(
                    ErrorKind::Script,
                    format!("unexpected release reply `{word}`"),
                )
                .with_key(key))
            }
        };
        Ok((outcome, idx))
    }

    pub(crate) async fn renew(&self, key: &str, index: i64, ttl_ms: u64) -> Result<RenewOutcome> {
        let mut conn = self.connection().await?;
        let reply = self
            .ctx
            .ns
            .renew_call(key, index, ttl_ms)
            .invoke(&mut conn)
            .await
            .map_err(|e| Error::from_redis(e, Some(key)))?;
        renew_outcome(key, reply)
    }

    /// A renewal followed by `WAIT` for the configured replicas on the acknowledgement
    /// connection: `NotReplicated` (transient) when fewer acknowledged it in time.
    async fn renew_acknowledged(&self, key: &str, index: i64, ttl_ms: u64) -> Result<RenewOutcome> {
        let config = &self.ctx.config;
        let mut conn = self.ack_connection().await?;
        let call = self.ctx.ns.renew_call(key, index, ttl_ms);
        let (reply, acked) = conn
            .eval_then_wait(&call, key, config.replica_acks, config.replica_ack_timeout)
            .await
            .map_err(|e| Error::from_redis(e, Some(key)))?;
        let outcome = renew_outcome(key, reply)?;
        if outcome != RenewOutcome::Renewed {
            return Ok(outcome);
        }
        check_acks(
            acked,
            config.replica_acks,
            config.replica_ack_timeout,
            key,
            "the claim of a handed-over lock",
            "",
        )?;
        Ok(outcome)
    }

    /// Releases the lock at `key` held by `index` in the background, counted as pending
    /// clean-up until done.
    pub(crate) fn release_in_background(&self, key: &str, index: i64) {
        let owner = self.clone();
        let key = key.to_owned();
        let spawned = self.ctx.cleanup.spawn({
            let key = key.clone();
            async move {
                match owner.release(&key, index).await {
                    Ok(r) => tracing::debug!(key, index, result = %r.0, "released in the background"),
                    Err(e) => tracing::warn!(key, index, error = %e.report(), "background release failed; the lock will expire by its ttl"),
                }
            }
            .in_current_span()
        });
        if !spawned {
            tracing::debug!(
                key,
                index,
                "no runtime to release on; the lock will expire by its ttl"
            );
        }
    }
}

/// Whether a write was acknowledged by the `wanted` replicas within `timeout` (`WAIT`'s
/// answer, or its failure): `NotReplicated` naming `what` and the count when too few did in
/// time, the failure itself when `WAIT` could not run. `then` ends the message (what was done
/// about it).
fn check_acks(
    acked: redis::RedisResult<i64>,
    wanted: u32,
    timeout: Duration,
    key: &str,
    what: &str,
    then: &str,
) -> Result<()> {
    match acked {
        Ok(acked) if acked >= i64::from(wanted) => Ok(()),
        Ok(acked) => Err(Error::new(
            ErrorKind::NotReplicated,
            format!(
                "{what} was acknowledged by {acked} of the {wanted} replicas asked for within {} ms{then}",
                timeout.as_millis()
            ),
        )
        .with_key(key)),
        Err(e) => Err(Error::from_redis(e, Some(key))),
    }
}

/// The outcome in a renew script's reply.
fn renew_outcome(key: &str, reply: (i64, String, i64, i64)) -> Result<RenewOutcome> {
    let (ok, word, _idx, _extra) = reply;
    match (ok, word.as_str()) {
        (1, "renewed") => Ok(RenewOutcome::Renewed),
        (0, "missing") => Ok(RenewOutcome::Missing),
        (0, "conflict") => Ok(RenewOutcome::Conflict),
        _ => Err(Error::new(
            ErrorKind::Script,
            format!("unexpected renew reply `{word}`"),
        )
        .with_key(key)),
    }
}

/// A cluster client's settings: the seed nodes and this client's timeouts and retries.
pub(crate) fn cluster_builder(
    urls: &[String],
    config: &Config,
) -> redis::cluster::ClusterClientBuilder {
    redis::cluster::ClusterClientBuilder::new(urls.to_vec())
        .connection_timeout(config.connect_timeout)
        .response_timeout(config.response_timeout)
        .retries(config.reconnect_retries.min(u32::MAX as usize) as u32)
}

/// The error of a script call on `key`'s lock, naming the key at fault: the counter's when the
/// counter was (only the scripts that take an index raise that: acquires and handoffs), the
/// lock's otherwise.
fn script_error(ns: &Namespace, e: redis::RedisError, key: &str) -> Error {
    if Error::about_counter(&e) {
        Error::from_redis(e, Some(key)).with_key(ns.counter(key).into_owned())
    } else {
        Error::from_redis(e, Some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_are_checked_against_the_replicas_asked_for() {
        let timeout = Duration::from_millis(250);
        for acked in [2, 3] {
            assert!(check_acks(Ok(acked), 2, timeout, "k", "the acquire", "").is_ok());
        }
        let err = check_acks(Ok(1), 2, timeout, "k", "the acquire", "; released").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotReplicated);
        assert!(err.is_transient(), "{err:?}");
        assert_eq!(err.key(), Some("k"));
        assert_eq!(
            err.message(),
            "the acquire was acknowledged by 1 of the 2 replicas asked for within 250 ms; released"
        );
        // `WAIT` refused (an ACL without `+wait`): that refusal, not a count.
        let refused = redis::make_extension_error(
            "NOPERM".into(),
            Some("no permission to run the 'wait' command".into()),
        );
        let err = check_acks(Err(refused), 1, timeout, "k", "the claim", "").unwrap_err();
        assert_ne!(err.kind(), ErrorKind::NotReplicated, "{err:?}");
        assert_eq!(err.key(), Some("k"));
    }
}
