//! Acquire, wait, release, renew and status: the operations of Node redfour, and the
//! idiomatic [`LockBuilder`] that hands out [`LockGuard`]s.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::Instrument;

use crate::client::Client;
use crate::error::{Error, ErrorKind, Result};
use crate::guard::LockGuard;
use crate::keys::{check_index, ttl_millis};
use crate::scripts::Eval;

/// The answer to an acquire: Node redfour's `acquireLock` / `waitAcquireLock` response.
///
/// When `success` is false, the lock is held by someone else: `index` is -1 and `ttl` is the
/// holder's remaining ttl.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AcquireResponse {
    /// The lock id, as given.
    pub id: String,
    /// Whether the lock was acquired.
    pub success: bool,
    /// The fencing index of the new holder, or -1 when not acquired.
    pub index: i64,
    /// The lock's ttl when acquired; the holder's remaining ttl when not.
    pub ttl: Duration,
    /// True when the first attempt won (always equal to `success` for a one-shot acquire).
    pub immediate: bool,
}

/// What a release did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReleaseOutcome {
    /// The caller held the lock; it is deleted and waiters are notified.
    Released,
    /// Nothing to release: the lock had expired (or was never taken). Counts as success.
    Expired,
    /// Someone else holds the lock now; it was left alone.
    Conflict,
}

impl ReleaseOutcome {
    /// Node redfour's word for it: `released`, `expired` or `conflict`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReleaseOutcome::Released => "released",
            ReleaseOutcome::Expired => "expired",
            ReleaseOutcome::Conflict => "conflict",
        }
    }
}

impl fmt::Display for ReleaseOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to a release: Node redfour's `releaseLock` response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReleaseResponse {
    /// The lock id, as given.
    pub id: String,
    /// True for [`ReleaseOutcome::Released`] and [`ReleaseOutcome::Expired`].
    pub success: bool,
    /// What happened.
    pub result: ReleaseOutcome,
    /// The released index; the current holder's index on conflict; -1 when expired. These are
    /// Node redfour's answers (a renewal's conflict answers -1 instead: see
    /// [`RenewResponse::index`]).
    pub index: i64,
}

/// What a renewal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RenewOutcome {
    /// The caller holds the lock; its expiry is reset to the new ttl.
    Renewed,
    /// The lock is gone (expired, released, or the server lost it): the lease is lost.
    Missing,
    /// Someone else holds the lock: the lease is lost.
    Conflict,
}

impl RenewOutcome {
    /// Node redfour's word for it: `renewed`, `missing` or `conflict`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RenewOutcome::Renewed => "renewed",
            RenewOutcome::Missing => "missing",
            RenewOutcome::Conflict => "conflict",
        }
    }
}

impl fmt::Display for RenewOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The answer to a renewal: Node redfour's `renewLock` response.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RenewResponse {
    /// The lock id, as given.
    pub id: String,
    /// True only for [`RenewOutcome::Renewed`].
    pub success: bool,
    /// What happened.
    pub result: RenewOutcome,
    /// The caller's index when renewed, -1 otherwise: also on conflict, where a release names
    /// the holder's index ([`ReleaseResponse::index`]). Both are Node redfour's answers, kept
    /// for wire compatibility; [`Client::status`] tells who holds the lock.
    pub index: i64,
}

/// A read-only view of one lock, from [`Client::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockStatus {
    /// The lock id, as given.
    pub id: String,
    /// Whether someone holds the lock.
    pub held: bool,
    /// The holder's index (from 1 to [`MAX_INDEX`](crate::MAX_INDEX)), -1 when not held.
    pub index: i64,
    /// The holder's remaining ttl, `None` when not held (a lock without expiry is
    /// [`CorruptData`](ErrorKind::CorruptData), not a status).
    pub ttl: Option<Duration>,
    /// Every field of the lock hash but `index`, as stored. A holder that is this library
    /// writes `host`, `pid`, `acquired_at` (Unix ms by the server's clock) and `attempt` (the
    /// id of the acquire attempt that won, which makes a cancelled acquire's clean-up exact);
    /// `description` only when one was given (the key is absent otherwise, never empty); and
    /// `handoff` (the waiter's queue token) on a lock that the fair queue handed to a waiter.
    /// Empty for a Node holder, which writes `index` only; fields written by anyone else
    /// appear too.
    pub holder: BTreeMap<String, String>,
}

impl LockStatus {
    /// The holder's host name, when it recorded one.
    pub fn host(&self) -> Option<&str> {
        self.holder.get("host").map(String::as_str)
    }

    /// The holder's process id, when it recorded one.
    pub fn pid(&self) -> Option<u32> {
        self.holder.get("pid").and_then(|p| p.parse().ok())
    }

    /// The holder's description, when it gave one.
    pub fn description(&self) -> Option<&str> {
        self.holder.get("description").map(String::as_str)
    }

    /// When the lock was acquired, by the server's clock.
    pub fn acquired_at(&self) -> Option<SystemTime> {
        let ms: u64 = self.holder.get("acquired_at")?.parse().ok()?;
        UNIX_EPOCH.checked_add(Duration::from_millis(ms))
    }
}

/// The result of one acquire attempt on the server.
#[derive(Debug)]
pub(crate) enum Attempt {
    Acquired {
        index: i64,
        ttl: Duration,
        /// When the attempt was sent: the lease is counted from here.
        sent: Instant,
    },
    /// Fair queue: the lock had already been handed to this waiter (its notice was lost or is
    /// still in flight); `pttl` is what is left of the claim window.
    HandedOver {
        index: i64,
        pttl: Duration,
        sent: Instant,
    },
    Held {
        pttl: Duration,
        sent: Instant,
        /// The holder's index, when the script tells it (fair queue).
        holder: Option<i64>,
    },
    /// Granted, but the answer came after the lock's validity had run out: what was granted
    /// is released (or being released), and nobody holds the lock for this attempt.
    WonTooLate {
        sent: Instant,
        /// The index granted and given up, when one server granted it.
        index: Option<i64>,
        /// [`ErrorKind::ValidityExpired`], saying how late.
        error: Error,
    },
    /// With Redlock, a waiting acquire's last attempt ran out of time before enough masters
    /// answered to decide it (anything granted is released).
    Undecided,
}

/// What a wait ended with.
pub(crate) enum Waited {
    Acquired {
        index: i64,
        ttl: Duration,
        deadline: Instant,
        /// A handed-over lock lives only for the claim window until claimed.
        claim: bool,
        immediate: bool,
    },
    GaveUp {
        pttl: Duration,
        waited: Duration,
    },
}

/// Holder metadata written into the lock hash.
#[derive(Clone, Default)]
pub(crate) struct Meta {
    pub(crate) description: Option<Arc<str>>,
}

/// Cleans up after an attempt whose outcome its caller will never learn: the future was
/// dropped while the request was in flight, or the request failed in transit. Each attempt
/// writes its own id into the lock hash, so the clean-up releases the lock only if that very
/// attempt won it. On a multiplexed connection the clean-up is sent after the attempt, so it
/// runs after it on the server.
struct InFlight<'a> {
    client: &'a Client,
    key: &'a str,
    attempt_id: &'a str,
    armed: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let client = self.client.clone();
        let key = self.key.to_owned();
        let attempt_id = self.attempt_id.to_owned();
        self.client.inner.cleanup.spawn(
            async move {
                if let Err(e) = client.release_attempt(&key, &attempt_id).await {
                    tracing::debug!(key, error = %e, "could not clean up after an abandoned attempt; a lock it won expires by its ttl");
                }
            }
            .in_current_span(),
        );
    }
}

/// A handed-over lock whose claim is in flight; released by index if the claim never
/// completes.
struct Unclaimed<'a> {
    client: &'a Client,
    key: &'a str,
    index: i64,
    armed: bool,
}

impl Drop for Unclaimed<'_> {
    fn drop(&mut self) {
        if self.armed {
            release_in_background(self.client, self.key, self.index);
        }
    }
}

pub(crate) fn release_in_background(client: &Client, key: &str, index: i64) {
    let owner = client.clone();
    let key = key.to_owned();
    let spawned = client.inner.cleanup.spawn({
        let key = key.clone();
        async move {
            match owner.release_key(&key, index).await {
                Ok(r) => tracing::debug!(key, index, result = %r.0, "released in the background"),
                Err(e) => tracing::warn!(key, index, error = %e, "background release failed; the lock will expire by its ttl"),
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

/// An attempt with no cutoff cannot be cut off; should one be, it is a failure to retry.
fn undecided(key: &str) -> Error {
    Error::new(
        ErrorKind::Timeout,
        "the Redlock masters did not decide the acquire in time; anything granted was released",
    )
    .with_key(key)
}

fn parse_pttl(pttl: i64) -> Duration {
    Duration::from_millis(pttl.max(0) as u64)
}

fn parse_status(id: &str, key: &str, reply: Vec<redis::Value>) -> Result<LockStatus> {
    use redis::Value;
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }
    let corrupt =
        |what: &str| Error::new(ErrorKind::CorruptData, what.to_owned()).with_key(key.to_owned());
    let kind = reply
        .first()
        .and_then(text)
        .ok_or_else(|| corrupt("unexpected status reply"))?;
    match kind.as_str() {
        "none" => {
            return Ok(LockStatus {
                id: id.to_owned(),
                held: false,
                index: -1,
                ttl: None,
                holder: BTreeMap::new(),
            })
        }
        "hash" => {}
        other => {
            return Err(corrupt(&format!(
                "the lock key holds a {other}, not a hash"
            )))
        }
    }
    let pttl = match reply.get(1) {
        Some(Value::Int(p)) => *p,
        _ => return Err(corrupt("unexpected status reply")),
    };
    let mut holder = BTreeMap::new();
    let mut index = None;
    for pair in reply[2..].chunks(2) {
        let [field, value] = pair else {
            return Err(corrupt("unexpected status reply"));
        };
        let (Some(field), Some(value)) = (text(field), text(value)) else {
            return Err(corrupt("unexpected status reply"));
        };
        if field == "index" {
            index = Some(parse_index(&value).ok_or_else(|| {
                corrupt("the lock hash has an index that is not an integer from 1 to 2^53-1")
            })?);
        } else {
            holder.insert(field, value);
        }
    }
    let Some(index) = index else {
        return Err(corrupt("the lock hash has no index field"));
    };
    if pttl < 0 {
        return Err(corrupt("the lock hash has no expiry"));
    }
    Ok(LockStatus {
        id: id.to_owned(),
        held: true,
        index,
        ttl: Some(parse_pttl(pttl)),
        holder,
    })
}

/// Reads an index as stored in the hash, in the one form the scripts accept too
/// (`redfour_is_index` in `scripts/common.lua`): plain decimal digits without a leading zero,
/// from 1 to [`MAX_INDEX`](crate::MAX_INDEX). This library and Node redfour write nothing else
/// (Node's index is an `INCR` result that Redis formats with `%.17g`: plain digits below 1e17),
/// so `1e3`, `0x10`, ` 5`, `05`, `1.0`, `0` and `-5` are corrupt data, whoever reads them.
pub(crate) fn parse_index(s: &str) -> Option<i64> {
    let digits = s.as_bytes();
    if digits.len() > 16 || digits.first().is_none_or(|d| *d == b'0') {
        return None;
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.parse::<i64>().ok().filter(|i| *i <= crate::MAX_INDEX)
}

impl Client {
    /// One attempt on the server, safe to cancel: if the caller goes away while the request
    /// is in flight (or the request fails in transit) and the attempt won, the lock is released
    /// rather than left to expire.
    ///
    /// `cutoff` (Redlock only; a waiting acquire's end): past it, masters that have not
    /// answered yet are not waited for (a little slack past it is granted, so that an attempt
    /// started at the cutoff still hears the masters that answer at once).
    pub(crate) async fn attempt(
        &self,
        key: &str,
        ttl_ms: u64,
        meta: &Meta,
        token: Option<&str>,
        cutoff: Option<Instant>,
    ) -> Result<Attempt> {
        if let Some((nodes, quorum)) = self.inner.redlock() {
            return crate::redlock::attempt(self, nodes, quorum, key, ttl_ms, meta, cutoff).await;
        }
        self.attempt_on_server(key, ttl_ms, meta, token, true).await
    }

    /// [`attempt`](Client::attempt) on this client's one server (or one Redlock master).
    /// `judge_validity`: a lock won after its validity is released here and answered as
    /// `WonTooLate`; off for a Redlock master, whose grant only the whole attempt can judge
    /// (and release), without a round trip more on a master that is slow already.
    pub(crate) async fn attempt_on_server(
        &self,
        key: &str,
        ttl_ms: u64,
        meta: &Meta,
        token: Option<&str>,
        judge_validity: bool,
    ) -> Result<Attempt> {
        let seq = self.inner.attempts.fetch_add(1, Ordering::Relaxed);
        let attempt_id = format!("{}#{seq}", self.inner.token);
        let mut in_flight = InFlight {
            client: self,
            key,
            attempt_id: &attempt_id,
            armed: true,
        };
        let result = self
            .attempt_now(key, ttl_ms, meta, token, &attempt_id)
            .await;
        // After a transient error the attempt may or may not have run: stay armed.
        in_flight.armed = matches!(&result, Err(e) if e.is_transient());
        // A lock won after its lease had already run out on this process's clock (the reply
        // was held up for longer than the ttl) is no lock to rely on: release it at once and
        // say so (it is not held by someone else: `ValidityExpired`).
        if let Ok(Attempt::Acquired { index, ttl, sent }) = &result {
            if judge_validity && crate::guard::won_too_late(*sent, *ttl, self.inner.config.drift) {
                tracing::warn!(
                    key,
                    index,
                    waited_ms = sent.elapsed().as_millis() as u64,
                    "the lock was won after its ttl had run out here; releasing it"
                );
                // Armed again while the release is out: if this future is dropped meanwhile,
                // or the release fails, the attempt's cleanup releases the lock by its id.
                in_flight.armed = true;
                match self.release_key(key, *index).await {
                    Ok(_) => in_flight.armed = false,
                    Err(e) => {
                        tracing::warn!(key, index, error = %e, "cannot release a lock won too late; cleaning up in the background");
                    }
                }
                let drift = self.inner.config.drift;
                return Ok(Attempt::WonTooLate {
                    sent: *sent,
                    // The lock this attempt just gave up: a handoff notice with a higher index
                    // is news.
                    index: Some(*index),
                    error: Error::validity_expired(
                        key,
                        "the server",
                        sent.elapsed(),
                        crate::guard::validity_limit(*ttl, drift),
                    ),
                });
            }
        }
        result
    }

    /// A ttl to acquire with, in ms: within the bounds, and with Redlock long enough to leave
    /// a validity after the drift margin.
    fn lock_ttl(&self, ttl: Duration) -> Result<u64> {
        let ttl_ms = ttl_millis(ttl)?;
        if self.inner.redlock().is_some() {
            crate::redlock::check_ttl(ttl, self.inner.config.drift)?;
        }
        Ok(ttl_ms)
    }

    /// Releases the lock at `key` if the attempt `attempt_id` holds it.
    async fn release_attempt(&self, key: &str, attempt_id: &str) -> Result<()> {
        // On the connection the attempt went out on, so that the check runs after it on the
        // server: acquires that wait for replicas use their own connection, where an attempt
        // can sit behind another one's `WAIT` long after its caller gave up.
        let mut conn = if self.inner.config.replica_acks > 0 {
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
                self.release_key(key, index).await?;
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
        let _slot = self.inner.attempt_slots.acquire().await.ok();
        let mut conn = self.connection().await?;
        let inner = &self.inner;
        let holder = &inner.holder;
        let scripts = inner.scripts();
        let mut inv;
        if inner.config.fair {
            inv = self.queue_eval(&scripts.fair_acquire, key);
            inv.arg(ttl_ms)
                .arg(token.unwrap_or(""))
                .arg(inner.config.entry_lifetime().as_millis() as u64)
                .arg(&*inner.handoff_channel_for(key))
                .arg(inner.config.claim_window.as_millis() as u64);
        } else {
            inv = Eval::new(&scripts.acquire, &[key, &inner.ns.counter(key)]);
            inv.arg(ttl_ms);
        }
        inv.arg("host")
            .arg(&holder.host)
            .arg("pid")
            .arg(holder.pid)
            .arg("attempt")
            .arg(attempt_id);
        if let Some(desc) = &meta.description {
            inv.arg("description").arg(&**desc);
        }
        let sent = Instant::now();
        let map_err = |e| {
            let err = Error::from_redis(e, Some(key));
            if err.is_corrupt_data() && err.message().contains("counter") {
                err.with_key(inner.ns.counter(key).into_owned())
            } else {
                err
            }
        };
        let replicas = inner.config.replica_acks;
        let (reply, acked): (Vec<i64>, Option<redis::RedisResult<i64>>) = if replicas > 0 {
            // The script and `WAIT` go out together on one connection (the acknowledgement
            // then counts this very write), the connection kept for such acquires: `WAIT`
            // blocks it, and renewals and releases must not queue behind it.
            drop(conn);
            let mut acks = self.ack_connection().await?;
            let (reply, acked) = inv
                .invoke_then_wait(&mut acks, key, replicas, inner.config.replica_ack_timeout)
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
            let refused = match acked {
                Ok(acked) if acked >= i64::from(replicas) => None,
                Ok(acked) => Some(Error::new(
                    ErrorKind::NotReplicated,
                    format!(
                        "the acquire was acknowledged by {acked} of the {replicas} replicas asked for within {} ms; the lock was released",
                        inner.config.replica_ack_timeout.as_millis()
                    ),
                )
                .with_key(key)),
                // `WAIT` itself failed (an ACL without `+wait`): the lock was won all the same.
                Err(e) => Some(Error::from_redis(e, Some(key))),
            };
            if let Some(err) = refused {
                tracing::warn!(key, index, error = %err, "an acquire was not acknowledged by enough replicas; releasing it");
                // If this release fails or is cut off, the caller's attempt cleanup (armed while
                // the release is out) releases the lock by the attempt's id.
                if let Err(e) = self.release_key(key, index).await {
                    tracing::warn!(key, index, error = %e, "cannot release an unacknowledged lock; cleaning up in the background");
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

    /// Waits for the lock: registered for notices before the first attempt, woken by a release
    /// notice (or, with the fair queue, by the lock being handed over), by the holder's expiry,
    /// or by a resubscription after a reconnect.
    pub(crate) async fn wait_for(
        &self,
        key: &str,
        ttl_ms: u64,
        meta: &Meta,
        wait: Option<Duration>,
        force_claim: bool,
    ) -> Result<Waited> {
        let started = Instant::now();
        // A wait too long to represent is a wait forever.
        let deadline = wait
            .filter(|w| !w.is_zero())
            .and_then(|w| started.checked_add(w));
        // The fair queue's hub needs the command connection: while Redis is unreachable,
        // retry as the attempts below would, until the wait runs out.
        let mut backoff = Duration::from_millis(50);
        let hub = loop {
            match self.hub().await {
                Ok(hub) => break hub,
                Err(e) if e.is_transient() && deadline.is_none_or(|d| Instant::now() < d) => {
                    tracing::warn!(key, error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot reach redis to wait; retrying");
                    let wake = Instant::now() + backoff;
                    tokio::time::sleep_until(deadline.map_or(wake, |d| d.min(wake)).into()).await;
                    backoff = (backoff * 2).min(self.inner.config.max_poll);
                }
                Err(e) => return Err(e),
            }
        };
        let registration = hub.register(key);
        let mut state = hub.state();
        {
            let mut limit = self.inner.config.connect_timeout;
            if let Some(d) = deadline {
                limit = limit.min(d.saturating_duration_since(Instant::now()));
            }
            // If the subscription is not up in time, try anyway: the fallback timer still
            // wakes this waiter, and the resubscription will too.
            registration.ready(limit).await;
        }
        state.borrow_and_update();
        let max_poll = self.inner.config.max_poll;
        let ttl = Duration::from_millis(ttl_ms);
        let token = registration.token().map(str::to_owned);
        let mut first = true;
        backoff = Duration::from_millis(50);
        let mut last_pttl = Duration::ZERO;
        // The send time of the last attempt that found the lock held by someone else, and the
        // newest holder index such attempts saw. A handoff notice with an index above every
        // holder seen is newer than all those attempts, so a lease counted from the last one's
        // send time is never too long; a notice with an index at or below one of them is stale
        // (that handoff ran out unclaimed and someone else took the lock).
        let mut last_held_sent = started;
        let mut newest_holder_seen = 0_i64;
        // Why the last attempt that came to a decision failed, when not because the lock was
        // held: reported if the wait runs out with it.
        let mut last_failure: Option<Error> = None;
        loop {
            let attempt = self.attempt(key, ttl_ms, meta, token.as_deref(), deadline);
            let pause = match attempt.await {
                Ok(Attempt::Acquired { index, ttl, sent }) => {
                    registration.finish();
                    return Ok(Waited::Acquired {
                        index,
                        ttl,
                        deadline: crate::guard::lease_deadline(sent, ttl, self.inner.config.drift),
                        claim: false,
                        immediate: first,
                    });
                }
                Ok(Attempt::HandedOver { index, pttl, sent }) => {
                    let until = crate::guard::lease_deadline(sent, pttl, self.inner.config.drift);
                    if let Some(waited) = self
                        .settle_handoff(key, index, ttl, until, force_claim)
                        .await?
                    {
                        registration.finish();
                        return Ok(waited);
                    }
                    Duration::ZERO
                }
                Ok(Attempt::Held { pttl, sent, holder }) => {
                    last_held_sent = sent;
                    // Unknown holder: treat any later notice as possibly stale.
                    newest_holder_seen = newest_holder_seen.max(holder.unwrap_or(i64::MAX));
                    backoff = Duration::from_millis(50);
                    last_pttl = pttl;
                    last_failure = None;
                    // Wake just after the holder's expiry, in case it never releases.
                    (pttl + Duration::from_millis(1)).clamp(Duration::from_millis(5), max_poll)
                }
                Ok(Attempt::WonTooLate { sent, index, error }) => {
                    // As for a held lock: the lock this attempt gave up may be handed on.
                    last_held_sent = sent;
                    newest_holder_seen = newest_holder_seen.max(index.unwrap_or(i64::MAX));
                    last_pttl = Duration::ZERO;
                    tracing::debug!(key, error = %error, retry_in_ms = backoff.as_millis() as u64, "won too late while waiting; retrying");
                    last_failure = Some(error);
                    // Slow servers: back off as from a failure.
                    let pause = backoff;
                    backoff = (backoff * 2).min(max_poll);
                    pause
                }
                // Only at the end of the wait: the last decided attempt speaks for it.
                Ok(Attempt::Undecided) => Duration::ZERO,
                Err(e) if e.is_transient() => {
                    if deadline.is_some_and(|d| Instant::now() >= d) {
                        return Err(e);
                    }
                    tracing::warn!(key, error = %e, retry_in_ms = backoff.as_millis() as u64, "acquire attempt failed while waiting; retrying");
                    let pause = backoff;
                    backoff = (backoff * 2).min(max_poll);
                    last_failure = Some(e);
                    pause
                }
                Err(e) => return Err(e),
            };
            first = false;
            let now = Instant::now();
            if let Some(d) = deadline {
                if now >= d {
                    if let Some(token) = &token {
                        // Leave the queue now rather than from the registration's drop (a
                        // background chore): a process that gives up and exits at once, as
                        // the CLI's `wait` does, must not leave an entry that a release would
                        // hand the lock to.
                        self.leave_queue(key, token).await;
                        registration.left();
                    }
                    if let Some(e) = last_failure {
                        return Err(e);
                    }
                    return Ok(Waited::GaveUp {
                        pttl: last_pttl,
                        waited: now - started,
                    });
                }
            }
            let wake_at = deadline.map_or(now + pause, |d| d.min(now + pause));
            tokio::select! {
                _ = registration.notified() => {
                    if let Some(handoff) = registration.take_handoff() {
                        if handoff.index <= newest_holder_seen {
                            // Either way the next attempt tells where the lock is.
                            tracing::debug!(key, index = handoff.index, "ignoring a stale handoff notice");
                        } else {
                            tracing::trace!(key, index = handoff.index, "the lock was handed over");
                            let until = crate::guard::lease_deadline(last_held_sent, handoff.window, self.inner.config.drift);
                            if let Some(waited) = self
                                .settle_handoff(key, handoff.index, ttl, until, force_claim)
                                .await?
                            {
                                registration.finish();
                                return Ok(waited);
                            }
                        }
                    } else {
                        tracing::trace!(key, "woken by a release notice");
                    }
                }
                _ = tokio::time::sleep_until(wake_at.into()) => {}
                changed = state.changed() => {
                    if changed.is_err() {
                        // The hub is gone: cannot happen while `hub` is borrowed, but never spin.
                        tokio::time::sleep_until(wake_at.into()).await;
                    }
                }
            }
        }
    }

    /// Turns a lock handed to this waiter into a lease. The server keeps a handed-over lock
    /// for the claim window only; when the lease counted from `until` is too short to claim
    /// the full ttl in the background (or the caller has no guard to do it, `force_claim`),
    /// claim it now. `None`: the handoff was lost meanwhile, or the claim's outcome is unknown
    /// (the lock is then released by its index, which passes it on); keep waiting.
    async fn settle_handoff(
        &self,
        key: &str,
        index: i64,
        ttl: Duration,
        until: Instant,
        force_claim: bool,
    ) -> Result<Option<Waited>> {
        // `until` counts the server's window from this waiter's last attempt, which can be up
        // to a poll interval older than the handoff: when that leaves less than half the ttl
        // (or nothing), claim the full ttl, as for a ttl longer than the claim window.
        let remaining = until.saturating_duration_since(Instant::now());
        // With replica acknowledgements, a handed-over lock (written by the releaser) is held
        // only once its claim was acknowledged: claim it now, whatever the ttl.
        let acks = self.inner.config.replica_acks > 0;
        let claim = ttl > self.inner.config.claim_window || remaining < ttl / 2 || acks;
        if !claim || (!force_claim && !acks && remaining >= Duration::from_millis(50)) {
            return Ok(Some(Waited::Acquired {
                index,
                ttl,
                deadline: until,
                claim,
                immediate: false,
            }));
        }
        // Until the answer is read, nobody else knows this lock is ours: if this future is
        // dropped, or the claim fails in transit, release it by index (it goes to the next
        // waiter) rather than leave it held for a full ttl with no holder.
        let mut unclaimed = Unclaimed {
            client: self,
            key,
            index,
            armed: true,
        };
        let sent = Instant::now();
        let ttl_ms = ttl.as_millis() as u64;
        let claimed = if acks {
            self.renew_acknowledged(key, index, ttl_ms).await
        } else {
            self.renew_key(key, index, ttl_ms).await
        };
        match claimed {
            Ok(RenewOutcome::Renewed) => {
                unclaimed.armed = false;
                Ok(Some(Waited::Acquired {
                    index,
                    ttl,
                    deadline: crate::guard::lease_deadline(sent, ttl, self.inner.config.drift),
                    claim: false,
                    immediate: false,
                }))
            }
            Ok(_) => {
                unclaimed.armed = false;
                tracing::debug!(
                    key,
                    index,
                    "a handed-over lock expired before it was claimed"
                );
                Ok(None)
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(key, index, error = %e, "claiming a handed-over lock failed; passing it on");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Takes the waiter `token` out of the lock's queue (best effort: an entry left behind
    /// expires on the server).
    async fn leave_queue(&self, key: &str, token: &str) {
        let (queue, entries) = self.inner.ns.queue_keys(key);
        let left = async {
            let mut conn = self.connection().await?;
            Eval::new(&self.inner.scripts().fair_leave, &[&queue, &entries])
                .arg(token)
                .invoke::<i64>(&mut conn)
                .await
                .map_err(|e| Error::from_redis(e, Some(key)))
        };
        if let Err(e) = left.await {
            tracing::debug!(key, error = %e, "could not leave the queue; the entry will expire");
        }
    }

    /// An invocation of a fair-queue script on the lock at `key`: its KEYS are the lock, the
    /// counter, the queue list and the queue entries.
    fn queue_eval(&self, script: &'static redis::Script, key: &str) -> Eval {
        let ns = &self.inner.ns;
        let (queue, entries) = ns.queue_keys(key);
        Eval::new(script, &[key, &ns.counter(key), &queue, &entries])
    }

    pub(crate) async fn release_key(&self, key: &str, index: i64) -> Result<(ReleaseOutcome, i64)> {
        if let Some((nodes, quorum)) = self.inner.redlock() {
            return crate::redlock::release(nodes, quorum, key, index).await;
        }
        let mut conn = self.connection().await?;
        let inner = &self.inner;
        let scripts = inner.scripts();
        let mut inv;
        if inner.config.fair {
            inv = self.queue_eval(&scripts.fair_release, key);
            inv.arg(index)
                .arg(&*inner.ns.channel(key))
                .arg(inner.config.claim_window.as_millis() as u64);
        } else {
            inv = Eval::new(&scripts.release, &[key]);
            inv.arg(index).arg(&*inner.ns.channel(key));
        }
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
                    let err = Error::from_redis(e, Some(key));
                    let Some(pause) = retries.next().filter(|_| err.is_transient()) else {
                        return Err(err);
                    };
                    tracing::debug!(key, index, error = %err, "release failed; trying again");
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

    pub(crate) async fn renew_key(
        &self,
        key: &str,
        index: i64,
        ttl_ms: u64,
    ) -> Result<RenewOutcome> {
        if let Some((nodes, quorum)) = self.inner.redlock() {
            return crate::redlock::renew(nodes, quorum, key, index, ttl_ms).await;
        }
        let mut conn = self.connection().await?;
        let reply = Eval::new(&self.inner.scripts().renew, &[key])
            .arg(index)
            .arg(ttl_ms)
            .invoke(&mut conn)
            .await
            .map_err(|e| Error::from_redis(e, Some(key)))?;
        Self::renew_outcome(key, reply)
    }

    /// A renewal followed by `WAIT` for the configured replicas on the acknowledgement
    /// connection: `NotReplicated` (transient) when fewer acknowledged it in time.
    async fn renew_acknowledged(&self, key: &str, index: i64, ttl_ms: u64) -> Result<RenewOutcome> {
        let config = &self.inner.config;
        let mut conn = self.ack_connection().await?;
        let (reply, acked) = Eval::new(&self.inner.scripts().renew, &[key])
            .arg(index)
            .arg(ttl_ms)
            .invoke_then_wait(
                &mut conn,
                key,
                config.replica_acks,
                config.replica_ack_timeout,
            )
            .await
            .map_err(|e| Error::from_redis(e, Some(key)))?;
        let outcome = Self::renew_outcome(key, reply)?;
        if outcome != RenewOutcome::Renewed {
            return Ok(outcome);
        }
        let acked = acked.map_err(|e| Error::from_redis(e, Some(key)))?;
        if acked < i64::from(config.replica_acks) {
            return Err(Error::new(
                ErrorKind::NotReplicated,
                format!(
                    "the claim of a handed-over lock was acknowledged by {acked} of the {} replicas asked for",
                    config.replica_acks
                ),
            )
            .with_key(key));
        }
        Ok(outcome)
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

    /// Node's `acquireLock(id, ttl)`: one attempt, one round trip.
    ///
    /// On success the lock is held until `ttl` runs out or it is released with
    /// [`release_lock`](Client::release_lock) and the returned index. When someone else holds
    /// it, `success` is false and `ttl` is the holder's remaining ttl: that is an outcome, not
    /// an error. A lock granted too late to be held (the answer came after its validity had
    /// run out: ttl less the drift margin, counted from the request; the whole ttl for ttls of
    /// a few ms on one server) is released at once and reported as
    /// [`ErrorKind::ValidityExpired`]: nobody holds it, and trying again may win. Prefer
    /// [`lock`](Client::lock), whose guard tracks the lease for you.
    ///
    /// With Redlock, the attempt is decided as soon as the masters' answers allow: a majority
    /// granted (the others are heard until their
    /// [node timeout](crate::ClientBuilder::node_timeout), never past a quarter of the
    /// validity), or a majority answered and no majority of grants is possible any more. A
    /// stalled minority costs an acquire that much at most, and does not eat its validity.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an empty id or a ttl under 1 ms or over
    /// [`MAX_TTL`](crate::MAX_TTL), and with Redlock for a ttl that the drift margin leaves no
    /// validity (2 ms or less by default); [`ErrorKind::ValidityExpired`] for a lock granted
    /// too late (released); [`ErrorKind::CorruptData`] when the key holds foreign data (left
    /// untouched); [`ErrorKind::Unavailable`] or [`ErrorKind::Timeout`] for Redis faults (with
    /// Redlock, [`ErrorKind::QuorumLost`] when too few masters answer);
    /// [`ErrorKind::AccessDenied`] when Redis refuses the login or a command (ACL);
    /// [`ErrorKind::UnknownService`] when no sentinel knows the service.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. If the future is dropped after the request was sent and the lock is won on
    /// the server anyway, it is released in the background, not left held until its ttl.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> redfour::Result<()> {
    /// use std::time::Duration;
    /// let locks = redfour::Client::new("redis://127.0.0.1/")?;
    /// let lock = locks.acquire_lock("report", Duration::from_secs(60)).await?;
    /// if lock.success {
    ///     // ... work ...
    ///     locks.release_lock("report", lock.index).await?;
    /// } else {
    ///     println!("held by someone else for {:?} more", lock.ttl);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn acquire_lock(&self, id: &str, ttl: Duration) -> Result<AcquireResponse> {
        let key = self.inner.ns.lock_key(id)?;
        let ttl_ms = self.lock_ttl(ttl)?;
        let span = tracing::debug_span!("redfour.acquire", key, ttl_ms);
        let attempt = self
            .attempt(&key, ttl_ms, &Meta::default(), None, None)
            .instrument(span)
            .await?;
        Ok(match attempt {
            Attempt::Acquired { index, ttl, .. } => AcquireResponse {
                id: id.to_owned(),
                success: true,
                index,
                ttl,
                immediate: true,
            },
            // Only a waiter with a queue token can be handed a lock.
            Attempt::Held { pttl, .. } | Attempt::HandedOver { pttl, .. } => AcquireResponse {
                id: id.to_owned(),
                success: false,
                index: -1,
                ttl: pttl,
                immediate: false,
            },
            Attempt::WonTooLate { error, .. } => return Err(error),
            // Only a waiting acquire has a cutoff.
            Attempt::Undecided => return Err(undecided(&key)),
        })
    }

    /// Node's `waitAcquireLock(id, ttl, waitTtl)`: acquire, waiting up to `wait` for the holder
    /// to let go (`None` or zero: wait forever).
    ///
    /// The waiter is woken by the holder's release notice (pub/sub, shared by every waiter of
    /// this client), or when the holder's ttl runs out, or after a reconnect. When the wait
    /// runs out, one last attempt is made and its answer returned: `success` false with the
    /// holder's remaining ttl. `immediate` tells whether the first attempt won.
    ///
    /// The wait is a bound. With Redlock, no attempt listens for the masters past the end of
    /// the wait plus 100 ms (or the node timeout, if shorter): the answer comes at most that
    /// late, plus one round trip when a majority had granted the lock by then (its adoption).
    /// On a single server the last attempt takes one round trip (up to the response timeout
    /// when the server stalls).
    ///
    /// # Errors
    ///
    /// As [`acquire_lock`](Client::acquire_lock). While waiting, Redis being unreachable and
    /// locks granted too late are retried (with backoff) until the wait runs out; if the last
    /// attempt that came to a decision failed that way, its error is returned
    /// ([`ErrorKind::ValidityExpired`], [`ErrorKind::Unavailable`], ...) rather than an answer.
    /// Errors that are not [transient](Error::is_transient), such as a refused login
    /// ([`ErrorKind::AccessDenied`]) or an unknown Sentinel service
    /// ([`ErrorKind::UnknownService`]), end the wait at once, also one without a limit.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe. Dropping the future deregisters the waiter; if an attempt already won on
    /// the server, the lock is released in the background.
    pub async fn wait_acquire_lock(
        &self,
        id: &str,
        ttl: Duration,
        wait: Option<Duration>,
    ) -> Result<AcquireResponse> {
        let key = self.inner.ns.lock_key(id)?;
        let ttl_ms = self.lock_ttl(ttl)?;
        let span = tracing::debug_span!(
            "redfour.wait",
            key,
            ttl_ms,
            wait_ms = wait.map(|w| w.as_millis() as u64)
        );
        let waited = self
            .wait_for(&key, ttl_ms, &Meta::default(), wait, true)
            .instrument(span)
            .await?;
        Ok(match waited {
            // Claimed already (`force_claim`): the ttl is what the server keeps.
            Waited::Acquired {
                index,
                ttl,
                immediate,
                ..
            } => AcquireResponse {
                id: id.to_owned(),
                success: true,
                index,
                ttl,
                immediate,
            },
            Waited::GaveUp { pttl, .. } => AcquireResponse {
                id: id.to_owned(),
                success: false,
                index: -1,
                ttl: pttl,
                immediate: false,
            },
        })
    }

    /// Node's `releaseLock(lock)`: releases the lock only if `index` is the current holder's.
    ///
    /// `released` deletes the lock and wakes waiters; `expired` means there was nothing to
    /// release (success); `conflict` means someone else holds it now, and nothing is touched.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::InvalidInput`] for an empty id or an index under 1;
    /// [`ErrorKind::CorruptData`] when the key holds foreign data (left untouched);
    /// [`ErrorKind::AccessDenied`] when Redis refuses the login or the command (ACL);
    /// [`ErrorKind::Unavailable`] / [`ErrorKind::Timeout`] for Redis faults, once four tries
    /// have failed: after a transient fault (unreachable, timed out) the release is sent up to
    /// three more times, 0, 50 and 200 ms apart, while the connection reconnects by itself
    /// (after a timeout the lock may or may not have been released; retrying is safe). Any
    /// other error ends it at once. When an earlier try broke off and a later one answers, the
    /// later one's answer is returned: `expired` or `conflict` may then mean that an earlier
    /// try released the lock. With Redlock each master gets these tries, and the release fails
    /// only when no master answered.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future after the request was sent does not cancel it: the lock may still
    /// be released. Retrying is safe: a second release answers `expired` or `conflict`.
    pub async fn release_lock(&self, id: &str, index: i64) -> Result<ReleaseResponse> {
        let key = self.inner.ns.lock_key(id)?;
        check_index(index)?;
        let span = tracing::debug_span!("redfour.release", key, index);
        let (result, idx) = self
            .release_key(&key, index)
            .instrument(span.clone())
            .await?;
        span.in_scope(|| tracing::debug!(%result, holder_index = idx, "release"));
        Ok(ReleaseResponse {
            id: id.to_owned(),
            success: result != ReleaseOutcome::Conflict,
            result,
            index: idx,
        })
    }

    /// Node's `renewLock(lock, ttl)`: resets the lock's expiry to `ttl`, only for the holder
    /// with `index`.
    ///
    /// # Errors
    ///
    /// As [`release_lock`](Client::release_lock), plus [`ErrorKind::InvalidInput`] for a bad
    /// ttl.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future after the request was sent does not cancel it; retrying is safe.
    pub async fn renew_lock(&self, id: &str, index: i64, ttl: Duration) -> Result<RenewResponse> {
        let key = self.inner.ns.lock_key(id)?;
        check_index(index)?;
        let ttl_ms = ttl_millis(ttl)?;
        let span = tracing::debug_span!("redfour.renew", key, index, ttl_ms);
        let result = self
            .renew_key(&key, index, ttl_ms)
            .instrument(span.clone())
            .await?;
        span.in_scope(|| tracing::debug!(%result, "renew"));
        let success = result == RenewOutcome::Renewed;
        Ok(RenewResponse {
            id: id.to_owned(),
            success,
            result,
            index: if success { index } else { -1 },
        })
    }

    /// Who holds the lock `id`, with which index, for how much longer, and the holder's
    /// metadata (host, pid, description, acquired-at). One round trip, read-only.
    ///
    /// # Errors
    ///
    /// [`ErrorKind::CorruptData`] when the key holds something other than a lock, a lock
    /// without an index, or a lock without expiry; Redis faults as usual.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing.
    pub async fn status(&self, id: &str) -> Result<LockStatus> {
        let key = self.inner.ns.lock_key(id)?;
        if let Some((nodes, quorum)) = self.inner.redlock() {
            return crate::redlock::status(nodes, quorum, id).await;
        }
        let mut conn = self.connection().await?;
        let reply: Vec<redis::Value> = Eval::new(&self.inner.scripts().status, &[&key])
            .invoke(&mut conn)
            .await
            .map_err(|e| Error::from_redis(e, Some(&key)))?;
        parse_status(id, &key, reply)
    }

    /// Starts building a lock on `id`; finish with [`LockBuilder::acquire`] or
    /// [`LockBuilder::try_acquire`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> redfour::Result<()> {
    /// use std::time::Duration;
    /// let locks = redfour::Client::new("redis://127.0.0.1/")?;
    /// let guard = locks
    ///     .lock("token-refresh")
    ///     .ttl(Duration::from_secs(30))
    ///     .wait(Duration::from_secs(10))
    ///     .acquire()
    ///     .await?;
    /// println!("holding with fencing index {}", guard.index());
    /// guard.release().await?;
    /// # Ok(()) }
    /// ```
    pub fn lock(&self, id: impl Into<String>) -> LockBuilder {
        LockBuilder {
            client: self.clone(),
            id: id.into(),
            ttl: LockBuilder::DEFAULT_TTL,
            wait: None,
            keep_alive: false,
            meta: Meta::default(),
        }
    }
}

/// Settings for taking one lock; created by [`Client::lock`].
#[must_use = "a lock builder does nothing until `acquire()` or `try_acquire()` is awaited"]
pub struct LockBuilder {
    client: Client,
    id: String,
    ttl: Duration,
    wait: Option<Duration>,
    keep_alive: bool,
    meta: Meta,
}

impl fmt::Debug for LockBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockBuilder")
            .field("id", &self.id)
            .field("ttl", &self.ttl)
            .field("wait", &self.wait)
            .field("keep_alive", &self.keep_alive)
            .finish_non_exhaustive()
    }
}

impl LockBuilder {
    /// The ttl used when none is set.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(30);

    /// How long the lock lives on the server unless renewed or released: the bound on how long
    /// a crashed holder blocks everyone. Between 1 ms and [`MAX_TTL`](crate::MAX_TTL).
    ///
    /// Default: 30 s.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The longest [`acquire`](LockBuilder::acquire) waits for the holder to let go. Zero means
    /// forever, as in Node redfour. A bound, kept within a small slack (see
    /// [`Client::wait_acquire_lock`]), also when servers stall.
    ///
    /// Default: forever.
    pub fn wait(mut self, wait: Duration) -> Self {
        self.wait = Some(wait);
        self
    }

    /// Renew the lease in the background every ttl/3 while the guard lives; the guard's
    /// [`lost`](LockGuard::lost) signal fires if a renewal finds the lock missing or taken, or
    /// the lease deadline passes without a confirmed renewal.
    ///
    /// Default: off.
    pub fn keep_alive(mut self, on: bool) -> Self {
        self.keep_alive = on;
        self
    }

    /// A free-text description stored with the lock (shown by `status`), e.g. what the holder
    /// is doing.
    ///
    /// Default: none.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.meta.description = Some(description.into().into());
        self
    }

    /// Acquires the lock, waiting for the holder to let go (forever unless
    /// [`wait`](LockBuilder::wait) bounds it).
    ///
    /// The returned guard holds the lock until it is released, its lease ends, or it is
    /// dropped (then it is released in the background).
    ///
    /// # Errors
    ///
    /// [`ErrorKind::NotAcquired`] when a bounded wait ran out (the holder's remaining ttl is in
    /// [`Error::holder_ttl`]); [`ErrorKind::InvalidInput`] for an empty id or a bad ttl (with
    /// Redlock, one the drift margin leaves no validity); [`ErrorKind::CorruptData`] for
    /// foreign data at the key; Redis faults that outlast the wait as
    /// [`ErrorKind::Unavailable`] or [`ErrorKind::Timeout`], and locks still granted too late
    /// when it runs out as [`ErrorKind::ValidityExpired`] (the last attempt's reason is
    /// reported). Errors that are not [transient](Error::is_transient) end the wait at once,
    /// also one without a limit: a refused login or command ([`ErrorKind::AccessDenied`]), a
    /// service no sentinel knows ([`ErrorKind::UnknownService`]).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: dropping the future deregisters the waiter, and a lock won by an attempt in
    /// flight is released in the background.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # async fn example() -> redfour::Result<()> {
    /// use std::time::Duration;
    /// let locks = redfour::Client::new("redis://127.0.0.1/")?;
    /// match locks.lock("nightly").wait(Duration::from_secs(5)).acquire().await {
    ///     Ok(guard) => {
    ///         // ... work ...
    ///         guard.release().await?;
    ///     }
    ///     Err(e) if e.is_not_acquired() => println!("busy: {e}"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn acquire(self) -> Result<LockGuard> {
        let key = self.client.inner.ns.lock_key(&self.id)?;
        let ttl_ms = self.client.lock_ttl(self.ttl)?;
        let span = tracing::debug_span!(
            "redfour.wait",
            key,
            ttl_ms,
            wait_ms = self.wait.map(|w| w.as_millis() as u64)
        );
        let waited = self
            .client
            .wait_for(&key, ttl_ms, &self.meta, self.wait, false)
            .instrument(span)
            .await?;
        match waited {
            Waited::Acquired {
                index,
                ttl,
                deadline,
                claim,
                immediate,
            } => Ok(LockGuard::new(
                self.client,
                self.id,
                key,
                index,
                ttl,
                deadline,
                immediate,
                self.keep_alive,
                claim,
            )),
            Waited::GaveUp { pttl, waited } => Err(Error::not_acquired(&key, waited, pttl)),
        }
    }

    /// One attempt, no waiting: `Ok(None)` when someone else holds the lock.
    ///
    /// # Errors
    ///
    /// As [`acquire`](LockBuilder::acquire), without `NotAcquired`:
    /// [`ErrorKind::ValidityExpired`] when the lock was granted too late to be held (it was
    /// released; nobody holds it, so this is not `Ok(None)`).
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: a lock won by the attempt in flight is released in the background.
    pub async fn try_acquire(self) -> Result<Option<LockGuard>> {
        let key = self.client.inner.ns.lock_key(&self.id)?;
        let ttl_ms = self.client.lock_ttl(self.ttl)?;
        let span = tracing::debug_span!("redfour.acquire", key, ttl_ms);
        match self
            .client
            .attempt(&key, ttl_ms, &self.meta, None, None)
            .instrument(span)
            .await?
        {
            Attempt::Acquired { index, ttl, sent } => {
                let deadline =
                    crate::guard::lease_deadline(sent, ttl, self.client.inner.config.drift);
                Ok(Some(LockGuard::new(
                    self.client,
                    self.id,
                    key,
                    index,
                    ttl,
                    deadline,
                    true,
                    self.keep_alive,
                    false,
                )))
            }
            // Only a waiter with a queue token can be handed a lock.
            Attempt::Held { .. } | Attempt::HandedOver { .. } => Ok(None),
            Attempt::WonTooLate { error, .. } => Err(error),
            // Only a waiting acquire has a cutoff.
            Attempt::Undecided => Err(undecided(&key)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any reply Redis (or something posing as it) could send, nested a little.
    fn any_value() -> impl Strategy<Value = redis::Value> {
        use redis::Value;
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::Int),
            prop::collection::vec(any::<u8>(), 0..24).prop_map(Value::BulkString),
            prop::sample::select(vec!["hash", "none", "string", "index", "-1", "7", "1e300"])
                .prop_map(|s| Value::BulkString(s.as_bytes().to_vec())),
            any::<String>().prop_map(Value::SimpleString),
            any::<f64>().prop_map(Value::Double),
        ];
        leaf.prop_recursive(2, 16, 4, |inner| {
            prop::collection::vec(inner, 0..4).prop_map(Value::Array)
        })
    }

    proptest! {
        /// Status replies are data from the server: whatever they hold, parsing answers a
        /// status or an error, never a panic.
        #[test]
        fn status_parsing_never_panics(reply in prop::collection::vec(any_value(), 0..8)) {
            let _ = parse_status("a", "lock:a", reply);
        }

        #[test]
        fn index_parsing_never_panics(text in any::<String>()) {
            let _ = parse_index(&text);
        }

        /// Exactly the decimal form of 1..=MAX_INDEX is an index: what `i64`'s `Display`
        /// writes for it, and nothing else.
        #[test]
        fn index_parsing_reads_exactly_the_decimals_in_range(n in any::<i64>(), text in "[-+ 0-9ex.]{0,20}") {
            let in_range = (1..=crate::MAX_INDEX).contains(&n);
            prop_assert_eq!(parse_index(&n.to_string()), in_range.then_some(n));
            let canonical = text.parse::<i64>().ok().filter(|i| {
                (1..=crate::MAX_INDEX).contains(i) && i.to_string() == text
            });
            prop_assert_eq!(parse_index(&text), canonical);
        }
    }

    #[test]
    fn index_parsing_refuses_every_other_notation() {
        assert_eq!(parse_index("42"), Some(42));
        assert_eq!(parse_index("1"), Some(1));
        assert_eq!(parse_index("9007199254740991"), Some(crate::MAX_INDEX));
        // Lua's `tonumber` and Rust's float parsing read most of these; Redis's `INCR` and this
        // library do not, and neither library writes them.
        for bad in [
            "",
            "0",
            "-5",
            "+5",
            "05",
            " 5",
            "5 ",
            "5\n",
            "1.5",
            "1.0",
            "1e3",
            "1E3",
            "1.79413e+15",
            "0x10",
            "inf",
            "nan",
            "abc",
            "9007199254740992",
            "99999999999999999999",
            "9223372036854775807",
            "\u{0665}",
        ] {
            assert_eq!(parse_index(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn status_parsing_rejects_garbage() {
        use redis::Value;
        let s = parse_status("a", "lock:a", vec![Value::SimpleString("none".into())]).unwrap();
        assert!(!s.held);
        let err =
            parse_status("a", "lock:a", vec![Value::SimpleString("string".into())]).unwrap_err();
        assert!(err.is_corrupt_data());
        let err = parse_status("a", "lock:a", vec![]).unwrap_err();
        assert!(err.is_corrupt_data());
        let ok = parse_status(
            "a",
            "lock:a",
            vec![
                Value::SimpleString("hash".into()),
                Value::Int(500),
                Value::BulkString(b"index".to_vec()),
                Value::BulkString(b"7".to_vec()),
                Value::BulkString(b"pid".to_vec()),
                Value::BulkString(b"12".to_vec()),
            ],
        )
        .unwrap();
        assert_eq!(ok.index, 7);
        assert_eq!(ok.pid(), Some(12));
        assert_eq!(ok.ttl, Some(Duration::from_millis(500)));
        let no_expiry = parse_status(
            "a",
            "lock:a",
            vec![
                Value::SimpleString("hash".into()),
                Value::Int(-1),
                Value::BulkString(b"index".to_vec()),
                Value::BulkString(b"7".to_vec()),
            ],
        )
        .unwrap_err();
        assert!(no_expiry.is_corrupt_data());
        let odd = parse_status(
            "a",
            "lock:a",
            vec![
                Value::SimpleString("hash".into()),
                Value::Int(5),
                Value::BulkString(b"index".to_vec()),
            ],
        )
        .unwrap_err();
        assert!(odd.is_corrupt_data());
    }
}
