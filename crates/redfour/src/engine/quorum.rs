//! Redlock over independent masters: an acquire asks every master in parallel (each with the
//! single-server acquire script and a per-master timeout) and holds the lock when a majority
//! granted it before its validity ran out; the granting masters then adopt one fencing index.
//!
//! Fencing across masters: each master grants the next index of its own counter (floored at
//! its clock, as on a single server). After a majority granted, every granting master stores
//! the largest of their indexes, `M`, as the holder's and raises its counter to at least `M`;
//! the acquire succeeds only when a majority adopted it. Any later acquisition needs a
//! majority too, which shares at least one master with this one: that master's counter is at
//! least `M`, so the later index is larger. This holds as long as the masters keep their data
//! (a master restarted without persistence forgets its counter; the clock floor still keeps
//! its indexes increasing when the masters' clocks roughly agree).

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::stream::{FuturesUnordered, StreamExt};

use std::sync::Arc;

use super::{Attempt, Context, Direct, Master, Meta, SubServer, Subscriptions};
use crate::cleanup::OnDrop;
use crate::error::{Error, ErrorKind, Result};
use crate::keys::Drift;
use crate::outcome::{LockStatus, ReleaseOutcome, RenewOutcome};

/// The Redlock engine: independent masters, each a [`Direct`] engine, and how many of them
/// make a majority.
pub(crate) struct Quorum {
    nodes: Vec<Direct>,
    /// Each master's client, for its subscription.
    masters: Vec<redis::Client>,
    quorum: usize,
    ctx: Arc<Context>,
}

impl Quorum {
    /// One standalone [`Direct`] engine per master (client and redacted address), all
    /// sharing `ctx`.
    pub(crate) fn new(masters: Vec<(redis::Client, String)>, ctx: Arc<Context>) -> Quorum {
        let nodes: Vec<Direct> = masters
            .iter()
            .map(|(client, address)| {
                Direct::new(
                    Master::Standalone(client.clone()),
                    ctx.clone(),
                    address.clone(),
                )
            })
            .collect();
        let quorum = nodes.len() / 2 + 1;
        Quorum {
            nodes,
            masters: masters.into_iter().map(|(client, _)| client).collect(),
            quorum,
            ctx,
        }
    }

    pub(crate) fn ctx_arc(&self) -> &Arc<Context> {
        &self.ctx
    }

    pub(crate) fn check_ttl(&self, ttl: Duration) -> Result<()> {
        check_ttl(ttl, self.ctx.config.drift)
    }

    pub(crate) async fn attempt(
        &self,
        key: &str,
        ttl_ms: u64,
        meta: &Meta,
        cutoff: Option<Instant>,
    ) -> Result<Attempt> {
        attempt(
            &self.ctx,
            &self.nodes,
            self.quorum,
            key,
            ttl_ms,
            meta,
            cutoff,
        )
        .await
    }

    pub(crate) async fn release(&self, key: &str, index: i64) -> Result<(ReleaseOutcome, i64)> {
        release(&self.nodes, self.quorum, key, index).await
    }

    pub(crate) async fn renew(&self, key: &str, index: i64, ttl_ms: u64) -> Result<RenewOutcome> {
        renew(&self.nodes, self.quorum, key, index, ttl_ms).await
    }

    pub(crate) async fn status(&self, id: &str, key: &str) -> Result<LockStatus> {
        status(&self.nodes, self.quorum, id, key).await
    }

    pub(crate) async fn ping(&self) -> Result<()> {
        ping(&self.nodes, self.quorum).await
    }

    /// Releases on every master in the background; each master answers for itself.
    pub(crate) fn release_in_background(&self, key: &str, index: i64) {
        for node in &self.nodes {
            node.release_in_background(key, index);
        }
    }

    /// One subscription per master, all feeding the same waiters; no fair queue.
    pub(crate) fn subscriptions(&self) -> Subscriptions {
        Subscriptions {
            servers: self.masters.iter().cloned().map(SubServer::fixed).collect(),
            sharded: None,
            fair: None,
        }
    }
}

/// How long one master may take for one step.
fn node_timeout(node: &Direct) -> Duration {
    let config = &node.ctx().config;
    config.node_timeout.min(config.response_timeout)
}

/// `f` on every master in parallel, each bounded by the node timeout; every answer awaited.
async fn on_all<'a, T, F, Fut>(nodes: &'a [Direct], f: F) -> Vec<Result<T>>
where
    F: Fn(&'a Direct) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + 'a,
{
    join_all(
        nodes
            .iter()
            .map(|node| bounded(node, node_timeout(node), f(node))),
    )
    .await
}

/// Whether a majority of the masters answer a `PING`, without waiting for the others once
/// that is decided.
async fn ping(nodes: &[Direct], quorum: usize) -> Result<()> {
    let mut tally = PingTally::new(nodes.len(), quorum);
    gather(
        nodes,
        None,
        |node| node.ping(),
        |_, reply| {
            tally.add(reply);
            tally.listen()
        },
    )
    .await;
    tally.outcome()
}

/// The answers of the masters to a `PING` so far.
#[derive(Debug)]
struct PingTally {
    nodes: usize,
    quorum: usize,
    /// Answered.
    up: usize,
    errors: Vec<Error>,
}

impl PingTally {
    fn new(nodes: usize, quorum: usize) -> PingTally {
        PingTally {
            nodes,
            quorum,
            up: 0,
            errors: Vec::new(),
        }
    }

    fn add(&mut self, reply: Result<()>) {
        match reply {
            Ok(()) => self.up += 1,
            Err(e) => self.errors.push(e),
        }
    }

    /// Decided once a majority answered, or once the masters that did not fail cannot make one.
    fn listen(&self) -> Listen {
        Listen::done_if(self.up >= self.quorum || self.nodes - self.errors.len() < self.quorum)
    }

    /// Up when a majority answered; else a refusal no retry mends, on enough masters to leave
    /// no majority possible, or "quorum lost" with the most telling failure as its source.
    fn outcome(self) -> Result<()> {
        let PingTally {
            nodes,
            quorum,
            up,
            mut errors,
        } = self;
        if up >= quorum {
            return Ok(());
        }
        let lost = Error::new(
            ErrorKind::QuorumLost,
            format!("only {up} of {nodes} masters answered (a majority is {quorum})"),
        );
        // As for an acquire: a refusal no retry mends, on enough masters, speaks for itself.
        Err(lasting(nodes, quorum, &mut errors).unwrap_or_else(|| {
            match errors.into_iter().min_by_key(Error::is_transient) {
                Some(e) => lost.with_source(e),
                None => lost,
            }
        }))
    }
}

/// A master's error that no retry mends (foreign data first, then a refused login or
/// command), when the masters that failed that way leave no majority possible.
fn lasting(nodes: usize, quorum: usize, errors: &mut Vec<Error>) -> Option<Error> {
    let lasting_count = errors.iter().filter(|e| !e.is_transient()).count();
    let lasting = errors
        .iter()
        .position(Error::is_corrupt_data)
        .or_else(|| errors.iter().position(|e| !e.is_transient()));
    lasting
        .filter(|_| nodes - lasting_count < quorum)
        .map(|i| errors.swap_remove(i))
}

/// The error for too few masters answering: a master's own error when it is not a fault of
/// reaching it (foreign data at the key, a command refused), which no retry mends, else
/// "quorum lost".
fn quorum_lost(answered: usize, nodes: usize, quorum: usize, mut errors: Vec<Error>) -> Error {
    // Lasting only when the masters that failed that way leave no majority possible; with
    // enough masters merely unreachable, a retry may still win.
    if let Some(lasting) = lasting(nodes, quorum, &mut errors) {
        return lasting;
    }
    unreachable_quorum(answered, nodes, quorum, errors)
}

/// "Quorum lost": only `answered` of `nodes` masters answered. Its source is the first master's
/// own refusal (an error that is not transient) if any, else the first failure.
fn unreachable_quorum(answered: usize, nodes: usize, quorum: usize, errors: Vec<Error>) -> Error {
    let err = Error::new(
        ErrorKind::QuorumLost,
        format!("{answered} of {nodes} masters answered, and a majority is {quorum}"),
    );
    // The most telling cause: a master's own refusal before a fault of reaching one.
    match errors.into_iter().min_by_key(Error::is_transient) {
        Some(first) => err.with_source(first),
        None => err,
    }
}

/// Locks won on some masters, released (in the background) unless disarmed: the acquire
/// failed, or its future was dropped before it could answer. Held by an [`OnDrop`] guard
/// (see [`wins`]).
struct Wins<'a> {
    nodes: &'a [Direct],
    key: &'a str,
    /// (master, index it granted, index adopted there if any)
    held: Vec<(usize, i64, Option<i64>)>,
}

impl Wins<'_> {
    /// What releasing the wins takes: (master, index), in the order they were won.
    fn releases(&self) -> Vec<(usize, i64)> {
        let mut releases = Vec::new();
        for &(node, granted, adopted) in &self.held {
            // Whichever index the master stores now: the other answers `conflict` or
            // `expired`, changing nothing.
            releases.push((node, granted));
            if let Some(adopted) = adopted.filter(|a| *a != granted) {
                releases.push((node, adopted));
            }
        }
        releases
    }
}

/// Nothing won yet; whatever is pushed to `held` is released in the background unless the
/// guard is disarmed.
fn wins<'a>(nodes: &'a [Direct], key: &'a str) -> OnDrop<Wins<'a>, impl FnOnce(Wins<'a>)> {
    OnDrop::new(
        Wins {
            nodes,
            key,
            held: Vec::new(),
        },
        |wins: Wins<'a>| {
            for (node, index) in wins.releases() {
                wins.nodes[node].release_in_background(wins.key, index);
            }
        },
    )
}

/// Releases what was won now rather than in the background, so that the caller's next
/// attempt does not find its own grants still in place (and take them for someone else's).
/// What cannot be released in time (the node timeout, and `end` if any) is left to the
/// background. The guard stays armed until the releases are in: if this future is dropped
/// meanwhile, everything won is released in the background.
async fn release_now<'a, F: FnOnce(Wins<'a>)>(wins: OnDrop<Wins<'a>, F>, end: Option<Instant>) {
    let (nodes, key) = (wins.nodes, wins.key);
    let releases = wins.releases();
    let done = join_all(releases.iter().map(|&(node, index)| {
        let node = &nodes[node];
        let mut limit = node_timeout(node);
        if let Some(end) = end {
            limit = limit.min(end.saturating_duration_since(Instant::now()));
        }
        bounded(node, limit, node.release(key, index))
    }))
    .await;
    for (&(node, index), result) in releases.iter().zip(done) {
        if result.is_err() {
            nodes[node].release_in_background(key, index);
        }
    }
    wins.disarm();
}

/// A short random pause, so that clients that split the masters between them do not retry
/// in lockstep.
fn jitter() -> Duration {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    Duration::from_millis(5 + h.finish() % 25)
}

/// How long past a waiting acquire's end its last attempt may still listen for the masters:
/// enough for the ones that answer at once, never a full node timeout.
pub(crate) const CUTOFF_SLACK: Duration = Duration::from_millis(100);

/// A Redlock lock needs a validity (ttl − drift margin) left after the masters answered: a
/// ttl the margin eats whole can never be held, so it is refused as input rather than tried.
fn check_ttl(ttl: Duration, drift: Drift) -> Result<()> {
    if crate::lease::validity(ttl, drift).is_zero() {
        return Err(Error::invalid(format!(
            "a ttl of {} ms is too short for Redlock: the clock drift margin ({} µs) leaves it no validity",
            ttl.as_millis(),
            drift.of(ttl).as_micros()
        )));
    }
    Ok(())
}

/// Where an attempt stands once `answered` of the masters answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Tally {
    nodes: usize,
    quorum: usize,
    /// Granted so far.
    granted: usize,
    /// Held by someone else there.
    held: usize,
    /// Failed or timed out.
    failed: usize,
}

impl Tally {
    fn pending(&self) -> usize {
        self.nodes - self.granted - self.held - self.failed
    }

    /// Whether the answers in leave the outcome open: no majority granted yet, and the
    /// masters still out could make one.
    fn open(&self) -> bool {
        self.granted < self.quorum && self.granted + self.pending() >= self.quorum
    }

    /// How much longer the masters still out are worth hearing, for a lock valid for
    /// `validity` from `sent`.
    ///
    /// Once a majority granted, the others' answers cannot change the outcome; their grants
    /// only make the lock sturdier (held, and adopted, on more masters), so they get a quarter
    /// of the validity at most: a stalled minority must not eat the lease (or a waiting
    /// caller's time). Once a majority answered and no majority of grants is possible any
    /// more, nothing is worth waiting for. When too few answered to
    /// tell a held lock from a lost quorum, every master gets its node timeout, so that the
    /// error says which.
    fn listen(&self, sent: Instant, validity: Duration) -> Listen {
        let pending = self.pending();
        if pending == 0 {
            Listen::Done
        } else if self.granted >= self.quorum {
            Listen::Until(sent + validity / 4)
        } else if !self.open() && self.granted + self.held >= self.quorum {
            Listen::Done
        } else {
            Listen::On
        }
    }

    /// What the answers decide once the attempt stopped listening, with `unanswered` masters
    /// still out: `held_pttls` are the remaining ttls reported by the masters that hold the
    /// lock for someone else, `errors` the failures, and `jitter` the least wait reported for
    /// a held lock.
    fn verdict(
        &self,
        unanswered: usize,
        held_pttls: Vec<Duration>,
        errors: Vec<Error>,
        jitter: Duration,
    ) -> Verdict {
        if self.granted >= self.quorum {
            return Verdict::Granted;
        }
        if self.open() && unanswered > 0 {
            return Verdict::Undecided;
        }
        let answered = self.granted + self.held;
        if answered < self.quorum {
            return Verdict::Lost(quorum_lost(answered, self.nodes, self.quorum, errors));
        }
        Verdict::Held(next_free(self.quorum, self.granted, held_pttls, jitter))
    }
}

/// What an attempt's answers decide (see [`Tally::verdict`]).
#[derive(Debug)]
enum Verdict {
    /// A majority granted: its masters adopt one index next.
    Granted,
    /// Cut off by a waiting caller's end with the outcome still open.
    Undecided,
    /// Too few masters answered to tell a held lock from a lost quorum.
    Lost(Error),
    /// Held by someone else on enough masters that no majority granted; a majority may be
    /// free after this long.
    Held(Duration),
}

/// When enough masters would be free for a majority, after an attempt that `granted` on some
/// masters (which it releases, so they are free) and found the lock held on the others with
/// `held_pttls` left: the soonest of those to expire count first. Never less than `jitter`;
/// `jitter` alone when the held masters are too few to make up the majority (the rest failed).
fn next_free(
    quorum: usize,
    granted: usize,
    mut held_pttls: Vec<Duration>,
    jitter: Duration,
) -> Duration {
    held_pttls.sort();
    match quorum.checked_sub(granted + 1) {
        Some(more) => held_pttls
            .get(more)
            .copied()
            .unwrap_or(Duration::ZERO)
            .max(jitter),
        None => jitter,
    }
}

/// How the adoption of a granted majority's fencing index ends, when `took` masters adopted it
/// and the last answer came in at `now`: held when a majority adopted it within the validity
/// (until `valid_until`), won too late past it, undecided past a waiting caller's `end`, and
/// else "quorum lost" (what was granted is released).
fn adoption(
    key: &str,
    took: usize,
    nodes: usize,
    quorum: usize,
    now: Instant,
    valid_until: Instant,
    end: Option<Instant>,
) -> Adoption {
    if took >= quorum && now < valid_until {
        return Adoption::Acquired;
    }
    if now >= valid_until {
        return Adoption::TooLate;
    }
    if end.is_some_and(|e| now >= e) {
        return Adoption::Undecided;
    }
    Adoption::Lost(
        Error::new(
            ErrorKind::QuorumLost,
            format!(
                "a majority granted the lock, but only {took} of {nodes} masters adopted its index (a majority is {quorum}); it was released"
            ),
        )
        .with_key(key),
    )
}

/// See [`adoption`].
#[derive(Debug)]
enum Adoption {
    Acquired,
    TooLate,
    Undecided,
    Lost(Error),
}

/// Whether [`gather`] goes on listening for the masters that have not answered yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Listen {
    /// Until each answers or times out (or the cutoff).
    On,
    /// At most until then.
    Until(Instant),
    /// No longer.
    Done,
}

impl Listen {
    fn done_if(done: bool) -> Listen {
        if done {
            Listen::Done
        } else {
            Listen::On
        }
    }
}

/// `step` on every master in parallel, each bounded by the node timeout and all by `cutoff`,
/// feeding each answer to `answer` as it comes, for as long as `answer` says the others are
/// worth hearing. The steps still out are then dropped: their requests stay sent, and
/// whatever undoing a dropped step needs is its own business (an acquire's cleans up after
/// itself). Returns how many masters had not answered.
async fn gather<'a, T, F, Fut>(
    nodes: &'a [Direct],
    cutoff: Option<Instant>,
    step: F,
    mut answer: impl FnMut(usize, Result<T>) -> Listen,
) -> usize
where
    F: Fn(&'a Direct) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + 'a,
{
    let mut out: FuturesUnordered<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, node)| {
            let limit = node_timeout(node);
            let step = step(node);
            async move { (i, bounded(node, limit, step).await) }
        })
        .collect();
    let mut stop = cutoff;
    loop {
        let cut = async {
            match stop {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            // An answer that is in wins over the cutoff.
            biased;
            next = out.next() => match next {
                Some((i, result)) => match answer(i, result) {
                    Listen::On => {}
                    Listen::Until(at) => stop = Some(stop.map_or(at, |s| s.min(at))),
                    Listen::Done => break,
                },
                None => break,
            },
            _ = cut => break,
        }
    }
    out.len()
}

/// `step` on `node`, bounded by `limit`.
async fn bounded<T>(
    node: &Direct,
    limit: Duration,
    step: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match tokio::time::timeout(limit, step).await {
        Ok(result) => result,
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "the Redlock master at {} did not answer within {} ms",
                node.address(),
                limit.as_millis()
            ),
        )),
    }
}

/// One Redlock acquire: the single-server acquire on every master in parallel, held when a
/// majority granted it within its validity (ttl − drift, counted from before the requests)
/// and adopted one fencing index.
///
/// It stops listening as soon as the answers in decide it (see [`Tally::listen`]), at the
/// node timeout, and, for a waiting acquire, at `cutoff` plus [`CUTOFF_SLACK`] (the adoption
/// too). Every grant is released unless the lock is returned: grants in hand by [`Wins`],
/// grants of masters that answer after the attempt stopped listening by their own step's
/// cleanup (a dropped single-server attempt releases the lock it won).
async fn attempt(
    ctx: &Context,
    nodes: &[Direct],
    quorum: usize,
    key: &str,
    ttl_ms: u64,
    meta: &Meta,
    cutoff: Option<Instant>,
) -> Result<Attempt> {
    let ttl = Duration::from_millis(ttl_ms);
    let drift = ctx.config.drift;
    check_ttl(ttl, drift)?;
    let sent = Instant::now();
    let validity = crate::lease::validity(ttl, drift);
    let valid_until = sent + validity;
    // An attempt started at (or reached) the cutoff still hears the masters that answer at once.
    let end = cutoff.map(|c| {
        c.max(sent) + CUTOFF_SLACK.min(ctx.config.node_timeout.min(ctx.config.response_timeout))
    });
    let mut wins = wins(nodes, key);
    let mut tally = Tally {
        nodes: nodes.len(),
        quorum,
        granted: 0,
        held: 0,
        failed: 0,
    };
    let mut held_pttls = Vec::new();
    let mut errors = Vec::new();
    // When the grant that made a majority came in.
    let mut majority_at = sent;
    let unanswered = gather(
        nodes,
        end,
        |node| node.attempt(key, ttl_ms, meta, None, false),
        |i, reply| {
            match reply {
                // Recorded at once: if this future is dropped, `wins` releases it.
                Ok(Attempt::Acquired { index, .. }) => {
                    wins.held.push((i, index, None));
                    tally.granted += 1;
                    if tally.granted == quorum {
                        majority_at = Instant::now();
                    }
                }
                Ok(Attempt::Held { pttl, .. }) | Ok(Attempt::HandedOver { pttl, .. }) => {
                    held_pttls.push(pttl);
                    tally.held += 1;
                }
                // Not answers of one master (it judges no validity and has no cutoff).
                Ok(Attempt::WonTooLate { .. } | Attempt::Undecided) => tally.failed += 1,
                Err(e) => {
                    errors.push(e);
                    tally.failed += 1;
                }
            }
            tally.listen(sent, validity)
        },
    )
    .await;
    match tally.verdict(unanswered, held_pttls, errors, jitter()) {
        Verdict::Granted => {}
        Verdict::Undecided => {
            // Cut off by a waiting caller's end, with the outcome still open: `wins` releases
            // in the background.
            tracing::debug!(
                key,
                unanswered,
                "Redlock: the wait ran out before the masters decided the attempt"
            );
            return Ok(Attempt::Undecided);
        }
        Verdict::Lost(error) => {
            release_now(wins, end).await;
            return Err(error);
        }
        Verdict::Held(pttl) => {
            release_now(wins, end).await;
            return Ok(Attempt::Held {
                pttl,
                sent,
                holder: None,
            });
        }
    }
    let adopted = wins.held.iter().map(|w| w.1).max().unwrap_or(0);
    let candidates: Vec<(usize, i64)> = wins.held.iter().map(|w| (w.0, w.1)).collect();
    for w in &mut wins.held {
        // Until the answers are in, either index may be stored.
        w.2 = Some(adopted);
    }
    if Instant::now() >= valid_until {
        release_now(wins, end).await;
        return Ok(won_too_late(
            key,
            quorum,
            nodes.len(),
            sent,
            majority_at,
            ttl,
            drift,
        ));
    }
    // Past the validity the adoption is useless; past a waiting caller's end, too late.
    let adopt_until = end.map_or(valid_until, |e| e.min(valid_until));
    let steps = join_all(candidates.iter().map(|&(i, granted)| {
        let node = &nodes[i];
        async move {
            let inv = ctx.ns.adopt_call(key, granted, adopted);
            let step = async {
                let mut conn = node.connection().await?;
                inv.invoke::<i64>(&mut conn)
                    .await
                    .map_err(|e| Error::from_redis(e, Some(key)))
            };
            let limit =
                node_timeout(node).min(adopt_until.saturating_duration_since(Instant::now()));
            matches!(tokio::time::timeout(limit, step).await, Ok(Ok(1)))
        }
    }))
    .await;
    let took = steps.iter().filter(|ok| **ok).count();
    let now = Instant::now();
    let lost = match adoption(key, took, nodes.len(), quorum, now, valid_until, end) {
        Adoption::Acquired => {
            // Masters that granted but did not adopt hold a stray lock under their own index.
            for (&(i, granted), ok) in candidates.iter().zip(&steps) {
                if !ok {
                    nodes[i].release_in_background(key, granted);
                }
            }
            wins.disarm();
            tracing::debug!(key, index = adopted, masters = took, "Redlock acquired");
            return Ok(Attempt::Acquired {
                index: adopted,
                ttl,
                sent,
            });
        }
        Adoption::TooLate => {
            release_now(wins, end).await;
            return Ok(won_too_late(
                key,
                quorum,
                nodes.len(),
                sent,
                now,
                ttl,
                drift,
            ));
        }
        Adoption::Undecided => None,
        Adoption::Lost(error) => Some(error),
    };
    tracing::debug!(
        key,
        adopted = took,
        "Redlock: a majority granted but too few masters adopted its index in time; releasing it"
    );
    let Some(error) = lost else {
        // The caller's time is up: `wins` releases in the background.
        return Ok(Attempt::Undecided);
    };
    release_now(wins, end).await;
    Err(error)
}

/// A majority granted the lock, but its answers were in only at `at`, past the validity.
fn won_too_late(
    key: &str,
    quorum: usize,
    nodes: usize,
    sent: Instant,
    at: Instant,
    ttl: Duration,
    drift: Drift,
) -> Attempt {
    let took = at.saturating_duration_since(sent);
    tracing::debug!(
        key,
        took_ms = took.as_millis() as u64,
        "Redlock: a majority granted the lock after its validity ran out; releasing it"
    );
    Attempt::WonTooLate {
        sent,
        index: None,
        error: Error::validity_expired(
            key,
            &format!("a majority ({quorum} of {nodes}) of the Redlock masters"),
            took,
            crate::lease::validity(ttl, drift),
        ),
    }
}

async fn release(
    nodes: &[Direct],
    quorum: usize,
    key: &str,
    index: i64,
) -> Result<(ReleaseOutcome, i64)> {
    let replies = on_all(nodes, |node| node.release(key, index)).await;
    let unreachable = replies.iter().filter(|reply| reply.is_err()).count();
    let outcome = release_outcome(replies, quorum, index);
    if unreachable > 0 && matches!(outcome, Ok((ReleaseOutcome::Released, _))) {
        tracing::warn!(
            key,
            index,
            unreachable,
            "Redlock release did not reach every master; the lock expires there by its ttl"
        );
    }
    outcome
}

/// What a release of `index` did, from every master's answer (the outcome and the index it
/// stores): a conflict when a majority holds someone else's index (the first such answer's);
/// else released when any master released it; else a conflict when any master holds someone
/// else's; else "quorum lost" when every master failed; else expired (`-1`).
fn release_outcome(
    replies: Vec<Result<(ReleaseOutcome, i64)>>,
    quorum: usize,
    index: i64,
) -> Result<(ReleaseOutcome, i64)> {
    let nodes = replies.len();
    let mut released = 0;
    let mut conflicts = Vec::new();
    let mut errors = Vec::new();
    for reply in replies {
        match reply {
            Ok((ReleaseOutcome::Released, _)) => released += 1,
            Ok((ReleaseOutcome::Conflict, stored)) => conflicts.push(stored),
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    if conflicts.len() >= quorum {
        return Ok((ReleaseOutcome::Conflict, conflicts[0]));
    }
    if released > 0 {
        return Ok((ReleaseOutcome::Released, index));
    }
    if let Some(&stored) = conflicts.first() {
        return Ok((ReleaseOutcome::Conflict, stored));
    }
    if errors.len() == nodes {
        return Err(quorum_lost(0, nodes, quorum, errors));
    }
    Ok((ReleaseOutcome::Expired, -1))
}

async fn renew(
    nodes: &[Direct],
    quorum: usize,
    key: &str,
    index: i64,
    ttl_ms: u64,
) -> Result<RenewOutcome> {
    let mut tally = RenewTally::new(nodes.len(), quorum);
    let unanswered = gather(
        nodes,
        None,
        |node| node.renew(key, index, ttl_ms),
        |_, reply| {
            tally.add(reply);
            tally.listen()
        },
    )
    .await;
    tally.outcome(unanswered)
}

/// The answers of the masters to a renewal so far.
#[derive(Debug)]
struct RenewTally {
    nodes: usize,
    quorum: usize,
    renewed: usize,
    /// Held by someone else there.
    conflicts: usize,
    /// Not renewed there: the conflicts, and the masters where the lock is missing.
    refused: usize,
    errors: Vec<Error>,
}

impl RenewTally {
    fn new(nodes: usize, quorum: usize) -> RenewTally {
        RenewTally {
            nodes,
            quorum,
            renewed: 0,
            conflicts: 0,
            refused: 0,
            errors: Vec::new(),
        }
    }

    fn add(&mut self, reply: Result<RenewOutcome>) {
        match reply {
            Ok(RenewOutcome::Renewed) => self.renewed += 1,
            Ok(RenewOutcome::Conflict) => {
                self.conflicts += 1;
                self.refused += 1;
            }
            Ok(_) => self.refused += 1,
            Err(e) => self.errors.push(e),
        }
    }

    /// Decided once a majority renewed, or once a majority answered and the rest cannot make
    /// one renew (or a majority cannot answer): a stalled master must not hold a renewal up
    /// past the lease it extends.
    fn listen(&self) -> Listen {
        let (renewed, refused, quorum) = (self.renewed, self.refused, self.quorum);
        let pending = self.nodes - renewed - refused - self.errors.len();
        Listen::done_if(
            renewed >= quorum
                || (renewed + pending < quorum && renewed + refused >= quorum)
                || renewed + refused + pending < quorum,
        )
    }

    /// Renewed when a majority renewed; else "quorum lost" when fewer than a majority
    /// answered (`unanswered` were still out); else a conflict when any master holds someone
    /// else's lock, missing when none does.
    fn outcome(self, unanswered: usize) -> Result<RenewOutcome> {
        if self.renewed >= self.quorum {
            return Ok(RenewOutcome::Renewed);
        }
        let answered = self.nodes - self.errors.len() - unanswered;
        if answered < self.quorum {
            return Err(quorum_lost(answered, self.nodes, self.quorum, self.errors));
        }
        Ok(if self.conflicts > 0 {
            RenewOutcome::Conflict
        } else {
            RenewOutcome::Missing
        })
    }
}

/// The lock as a majority of masters see it: held by the index that a majority store (with
/// the shortest remaining ttl among them), or free.
async fn status(nodes: &[Direct], quorum: usize, id: &str, key: &str) -> Result<LockStatus> {
    let mut tally = StatusTally::new(nodes.len(), quorum);
    gather(
        nodes,
        None,
        |node| node.status(id, key),
        |_, reply| {
            tally.add(reply);
            tally.listen()
        },
    )
    .await;
    tally.outcome(id)
}

/// The answers of the masters to a status query so far.
#[derive(Debug)]
struct StatusTally {
    nodes: usize,
    quorum: usize,
    seen: Vec<LockStatus>,
    errors: Vec<Error>,
    /// Foreign data at the key on a master: it decides the query at once.
    corrupt: Option<Error>,
}

impl StatusTally {
    fn new(nodes: usize, quorum: usize) -> StatusTally {
        StatusTally {
            nodes,
            quorum,
            seen: Vec::new(),
            errors: Vec::new(),
            corrupt: None,
        }
    }

    fn add(&mut self, reply: Result<LockStatus>) {
        match reply {
            Ok(status) => self.seen.push(status),
            Err(e) if e.is_corrupt_data() => self.corrupt = Some(e),
            Err(e) => self.errors.push(e),
        }
    }

    /// Decided at once by foreign data; else once an index is stored on a majority, or once a
    /// majority answered and no index can reach one any more (or a majority cannot answer).
    fn listen(&self) -> Listen {
        if self.corrupt.is_some() {
            return Listen::Done;
        }
        let (seen, quorum) = (&self.seen, self.quorum);
        let pending = self.nodes - seen.len() - self.errors.len();
        let most = seen
            .iter()
            .filter(|s| s.held)
            .map(|c| seen.iter().filter(|s| s.held && s.index == c.index).count())
            .max()
            .unwrap_or(0);
        Listen::done_if(
            most >= quorum
                || (most + pending < quorum && seen.len() >= quorum)
                || seen.len() + pending < quorum,
        )
    }

    /// Foreign data's error first; else "quorum lost" when fewer than a majority answered;
    /// else the status of the index a majority store (the one with the shortest ttl, the first
    /// of equals), or free.
    fn outcome(self, id: &str) -> Result<LockStatus> {
        let StatusTally {
            nodes,
            quorum,
            seen,
            errors,
            corrupt,
        } = self;
        if let Some(e) = corrupt {
            return Err(e);
        }
        if seen.len() < quorum {
            return Err(quorum_lost(seen.len(), nodes, quorum, errors));
        }
        let majority = seen.iter().filter(|s| s.held).find(|candidate| {
            seen.iter()
                .filter(|s| s.held && s.index == candidate.index)
                .count()
                >= quorum
        });
        if let Some(found) = majority {
            let index = found.index;
            let shortest = seen
                .iter()
                .filter(|s| s.held && s.index == index)
                .min_by_key(|s| s.ttl)
                .cloned();
            if let Some(status) = shortest {
                return Ok(status);
            }
        }
        Ok(LockStatus {
            id: id.to_owned(),
            held: false,
            index: -1,
            ttl: None,
            holder: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tally(nodes: usize, granted: usize, held: usize, failed: usize) -> Tally {
        Tally {
            nodes,
            quorum: nodes / 2 + 1,
            granted,
            held,
            failed,
        }
    }

    #[test]
    fn a_granted_majority_waits_for_the_rest_a_quarter_of_the_validity() {
        let sent = Instant::now();
        let validity = Duration::from_millis(400);
        assert_eq!(
            tally(3, 2, 0, 0).listen(sent, validity),
            Listen::Until(sent + Duration::from_millis(100))
        );
        assert_eq!(
            tally(5, 3, 1, 0).listen(sent, validity),
            Listen::Until(sent + Duration::from_millis(100))
        );
        // Everyone answered: nothing to wait for.
        assert_eq!(tally(3, 3, 0, 0).listen(sent, validity), Listen::Done);
    }

    #[test]
    fn a_held_majority_is_decided_without_the_stragglers() {
        let sent = Instant::now();
        let validity = Duration::from_secs(1);
        // Two of three hold it elsewhere: the third cannot make a majority of grants.
        assert_eq!(tally(3, 0, 2, 0).listen(sent, validity), Listen::Done);
        assert_eq!(tally(5, 1, 3, 0).listen(sent, validity), Listen::Done);
        // One grant and one held: the third decides.
        let open = tally(3, 1, 1, 0);
        assert!(open.open());
        assert_eq!(open.listen(sent, validity), Listen::On);
        // Too few answered to tell a held lock from a lost quorum: every master is heard.
        assert_eq!(tally(3, 0, 1, 1).listen(sent, validity), Listen::On);
        assert_eq!(tally(5, 0, 0, 3).listen(sent, validity), Listen::On);
        assert!(!tally(5, 0, 0, 3).open());
    }

    #[test]
    fn redlock_ttls_need_a_validity_left_after_the_drift_margin() {
        let drift = Drift::default();
        for ms in [1, 2] {
            let err = check_ttl(Duration::from_millis(ms), drift).unwrap_err();
            assert!(err.is_invalid_input(), "{ms}: {err}");
        }
        check_ttl(Duration::from_millis(3), drift).unwrap();
        let wide = Drift {
            ppm: 100_000,
            fixed: Duration::from_millis(100),
        };
        assert!(check_ttl(Duration::from_millis(111), wide).is_err());
        check_ttl(Duration::from_millis(112), wide).unwrap();
    }

    fn timeout(message: &str) -> Error {
        Error::new(ErrorKind::Timeout, message)
    }

    fn denied(message: &str) -> Error {
        Error::new(ErrorKind::AccessDenied, message)
    }

    fn corrupt(message: &str) -> Error {
        Error::new(ErrorKind::CorruptData, message)
    }

    /// The error an error has as its source, if it is one of ours.
    fn cause(err: &Error) -> Option<&Error> {
        std::error::Error::source(err)?.downcast_ref::<Error>()
    }

    fn ms(ms: u64) -> Duration {
        Duration::from_millis(ms)
    }

    #[test]
    fn the_source_of_a_lost_quorum_is_the_first_refusal_else_the_first_failure() {
        let bare = unreachable_quorum(1, 3, 2, Vec::new());
        assert!(bare.is_quorum_lost(), "{bare}");
        assert_eq!(
            bare.message(),
            "1 of 3 masters answered, and a majority is 2"
        );
        assert!(cause(&bare).is_none());

        // Only transient failures: the first one, of equals.
        let err = unreachable_quorum(1, 3, 2, vec![timeout("a"), timeout("b")]);
        assert_eq!(cause(&err).map(Error::message), Some("a"));
        // A refusal wins over a fault of reaching a master that came in before it.
        let err = unreachable_quorum(0, 3, 2, vec![timeout("a"), denied("b"), denied("c")]);
        assert!(err.is_quorum_lost());
        let source = cause(&err).expect("a source");
        assert!(source.is_access_denied());
        assert_eq!(source.message(), "b");
    }

    #[test]
    fn a_lasting_error_speaks_for_itself_only_when_it_leaves_no_majority() {
        // One refusal of three: the two others could still make a majority.
        let mut errors = vec![timeout("a"), denied("b")];
        assert!(lasting(3, 2, &mut errors).is_none());
        assert_eq!(errors.len(), 2, "nothing taken");
        let err = quorum_lost(1, 3, 2, errors);
        assert!(err.is_quorum_lost() && err.is_transient(), "{err}");
        assert_eq!(cause(&err).map(Error::message), Some("b"));

        // Two refusals of three: no majority is possible, the first refusal is the error.
        let mut errors = vec![timeout("a"), denied("b"), denied("c")];
        let err = lasting(3, 2, &mut errors).expect("lasting");
        assert!(err.is_access_denied(), "{err}");
        assert_eq!(err.message(), "b");
        let err = quorum_lost(0, 3, 2, vec![timeout("a"), denied("b"), denied("c")]);
        assert!(err.is_access_denied() && !err.is_transient(), "{err}");
        assert_eq!(err.message(), "b");

        // Foreign data comes first, wherever it is among the refusals.
        let err = quorum_lost(0, 3, 2, vec![denied("a"), corrupt("b"), denied("c")]);
        assert!(err.is_corrupt_data(), "{err}");
        assert_eq!(err.message(), "b");

        // All transient: quorum lost, whatever their number.
        let err = quorum_lost(0, 5, 3, (0..5).map(|_| timeout("t")).collect());
        assert!(err.is_quorum_lost(), "{err}");
        assert_eq!(
            err.message(),
            "0 of 5 masters answered, and a majority is 3"
        );
    }

    fn verdict(t: Tally, pttls: &[u64], errors: Vec<Error>) -> Verdict {
        let pttls = pttls.iter().copied().map(ms).collect();
        // The masters still out, as `gather` counts them.
        t.verdict(t.pending(), pttls, errors, ms(5))
    }

    #[test]
    fn an_acquire_is_granted_by_a_majority_of_grants_exact_or_clear() {
        assert!(matches!(
            verdict(tally(5, 5, 0, 0), &[], vec![]),
            Verdict::Granted
        ));
        assert!(matches!(
            verdict(tally(5, 4, 1, 0), &[100], vec![]),
            Verdict::Granted
        ));
        // Exactly a majority, the others failed or are still out.
        assert!(matches!(
            verdict(tally(5, 3, 0, 2), &[], vec![timeout("a"), denied("b")]),
            Verdict::Granted
        ));
        assert!(matches!(
            verdict(tally(3, 2, 0, 0), &[], vec![]),
            Verdict::Granted
        ));
    }

    #[test]
    fn an_acquire_one_grant_short_is_held_undecided_or_lost() {
        // A majority answered, one grant short: held, free once one more master is.
        match verdict(tally(5, 2, 1, 2), &[300], vec![timeout("a"), timeout("b")]) {
            Verdict::Held(pttl) => assert_eq!(pttl, ms(300)),
            other => panic!("{other:?}"),
        }
        // Cut off with the outcome still open: undecided, whatever was won.
        assert!(matches!(
            verdict(tally(5, 2, 0, 0), &[], vec![]),
            Verdict::Undecided
        ));
        assert!(matches!(
            verdict(tally(3, 1, 1, 0), &[100], vec![]),
            Verdict::Undecided
        ));
        assert!(matches!(
            verdict(tally(3, 0, 1, 0), &[100], vec![]),
            Verdict::Undecided
        ));
        // Cut off, but the masters still out cannot make a majority of grants.
        assert!(matches!(
            verdict(tally(3, 0, 2, 0), &[100, 200], vec![]),
            Verdict::Held(_)
        ));
        // One answer short of a majority: quorum lost, even with a grant in hand.
        match verdict(
            tally(5, 1, 1, 3),
            &[100],
            vec![timeout("a"), timeout("b"), timeout("c")],
        ) {
            Verdict::Lost(err) => {
                assert!(err.is_quorum_lost(), "{err}");
                assert_eq!(
                    err.message(),
                    "2 of 5 masters answered, and a majority is 3"
                );
                assert_eq!(cause(&err).map(Error::message), Some("a"));
            }
            other => panic!("{other:?}"),
        }
        match verdict(tally(3, 0, 1, 1), &[100], vec![timeout("a")]) {
            Verdict::Lost(err) => assert!(err.is_quorum_lost(), "{err}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn an_acquire_that_every_master_failed_reports_the_telling_error() {
        // Unreachable: quorum lost, its source the refusal among the faults.
        match verdict(
            tally(3, 0, 0, 3),
            &[],
            vec![timeout("a"), denied("b"), timeout("c")],
        ) {
            Verdict::Lost(err) => {
                assert!(err.is_quorum_lost(), "{err}");
                assert_eq!(
                    err.message(),
                    "0 of 3 masters answered, and a majority is 2"
                );
                assert_eq!(cause(&err).map(Error::message), Some("b"));
            }
            other => panic!("{other:?}"),
        }
        // Refused by enough masters to leave no majority: that refusal, foreign data first.
        match verdict(
            tally(3, 0, 0, 3),
            &[],
            vec![denied("a"), timeout("b"), corrupt("c")],
        ) {
            Verdict::Lost(err) => {
                assert!(err.is_corrupt_data(), "{err}");
                assert_eq!(err.message(), "c");
            }
            other => panic!("{other:?}"),
        }
        match verdict(
            tally(3, 0, 0, 3),
            &[],
            vec![timeout("a"), denied("b"), denied("c")],
        ) {
            Verdict::Lost(err) => {
                assert!(err.is_access_denied(), "{err}");
                assert_eq!(err.message(), "b");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_held_lock_is_reported_free_when_enough_masters_would_be() {
        let pttls = [300, 100, 500, 200, 400].map(ms).to_vec();
        let jitter = ms(5);
        // Three free masters needed: the soonest three to expire, whatever their order.
        assert_eq!(next_free(3, 0, pttls.clone(), jitter), ms(300));
        // The ones this attempt won (and releases) are free already.
        assert_eq!(next_free(3, 1, pttls.clone(), jitter), ms(200));
        assert_eq!(next_free(3, 2, pttls.clone(), jitter), ms(100));
        // Ties count once each.
        assert_eq!(
            next_free(3, 0, [200, 100, 200].map(ms).to_vec(), jitter),
            ms(200)
        );
        assert_eq!(
            next_free(3, 1, [200, 200].map(ms).to_vec(), jitter),
            ms(200)
        );
        // Never sooner than the jitter.
        assert_eq!(next_free(3, 2, vec![ms(1)], jitter), jitter);
        assert_eq!(next_free(3, 2, vec![Duration::ZERO], jitter), jitter);
        // Too few held to make up a majority (the rest failed): just the jitter.
        assert_eq!(next_free(3, 0, [100, 200].map(ms).to_vec(), jitter), jitter);
        assert_eq!(next_free(3, 0, Vec::new(), jitter), jitter);
        // A majority won: nothing to wait for.
        assert_eq!(next_free(3, 3, pttls, jitter), jitter);
    }

    #[test]
    fn an_adopted_index_holds_the_lock_only_on_a_majority_within_the_validity() {
        let now = Instant::now();
        let valid_until = now + ms(100);
        // A waiting caller's end still ahead, and reached.
        let (ahead, reached) = (Some(now + ms(50)), Some(now));
        // A clear or an exact majority adopted it in time.
        for took in [5, 3] {
            assert!(matches!(
                adoption("k", took, 5, 3, now, valid_until, None),
                Adoption::Acquired
            ));
            assert!(matches!(
                adoption("k", took, 5, 3, now, valid_until, reached),
                Adoption::Acquired
            ));
        }
        // Past the validity: too late, a majority or not, ahead of the caller's end.
        for took in [5, 3, 2, 0] {
            for end in [None, ahead, reached] {
                assert!(matches!(
                    adoption("k", took, 5, 3, valid_until, valid_until, end),
                    Adoption::TooLate
                ));
            }
        }
        // One short of a majority, in time: undecided past the caller's end, else lost.
        assert!(matches!(
            adoption("k", 2, 5, 3, now, valid_until, reached),
            Adoption::Undecided
        ));
        for end in [None, ahead] {
            match adoption("k", 2, 5, 3, now, valid_until, end) {
                Adoption::Lost(err) => {
                    assert!(err.is_quorum_lost(), "{err}");
                    assert_eq!(err.key(), Some("k"));
                    assert_eq!(
                        err.message(),
                        "a majority granted the lock, but only 2 of 5 masters adopted its index (a majority is 3); it was released"
                    );
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(
            adoption("k", 0, 3, 2, now, valid_until, None),
            Adoption::Lost(_)
        ));
    }

    fn released() -> Result<(ReleaseOutcome, i64)> {
        Ok((ReleaseOutcome::Released, 7))
    }

    fn conflict(stored: i64) -> Result<(ReleaseOutcome, i64)> {
        Ok((ReleaseOutcome::Conflict, stored))
    }

    fn expired() -> Result<(ReleaseOutcome, i64)> {
        Ok((ReleaseOutcome::Expired, -1))
    }

    fn decide_release(
        replies: Vec<Result<(ReleaseOutcome, i64)>>,
    ) -> Result<(ReleaseOutcome, i64)> {
        let quorum = replies.len() / 2 + 1;
        release_outcome(replies, quorum, 7)
    }

    #[test]
    fn a_release_is_released_where_any_master_released_it() {
        assert_eq!(
            decide_release(vec![released(), released(), released()]).unwrap(),
            (ReleaseOutcome::Released, 7)
        );
        // One master is enough, whatever the others say short of a majority of conflicts.
        assert_eq!(
            decide_release(vec![released(), expired(), Err(timeout("a"))]).unwrap(),
            (ReleaseOutcome::Released, 7)
        );
        assert_eq!(
            decide_release(vec![
                conflict(9),
                conflict(9),
                released(),
                expired(),
                Err(timeout("a"))
            ])
            .unwrap(),
            (ReleaseOutcome::Released, 7)
        );
        // Tied: two conflicts are no majority of four.
        assert_eq!(
            decide_release(vec![conflict(8), conflict(9), released(), released()]).unwrap(),
            (ReleaseOutcome::Released, 7)
        );
    }

    #[test]
    fn a_release_conflicts_on_a_majority_of_conflicts_or_when_none_released() {
        // A majority holds someone else's index: the first conflict's index, even where the
        // others released.
        assert_eq!(
            decide_release(vec![
                conflict(8),
                conflict(9),
                conflict(8),
                released(),
                released()
            ])
            .unwrap(),
            (ReleaseOutcome::Conflict, 8)
        );
        assert_eq!(
            decide_release(vec![conflict(9), conflict(8), released()]).unwrap(),
            (ReleaseOutcome::Conflict, 9)
        );
        // Nothing released: any conflict (the first) wins over expired and over failures.
        assert_eq!(
            decide_release(vec![expired(), conflict(9), expired()]).unwrap(),
            (ReleaseOutcome::Conflict, 9)
        );
        assert_eq!(
            decide_release(vec![Err(timeout("a")), conflict(9), Err(denied("b"))]).unwrap(),
            (ReleaseOutcome::Conflict, 9)
        );
        assert_eq!(
            decide_release(vec![conflict(8), conflict(9), expired(), expired()]).unwrap(),
            (ReleaseOutcome::Conflict, 8)
        );
    }

    #[test]
    fn a_release_is_expired_unless_every_master_failed() {
        assert_eq!(
            decide_release(vec![expired(), expired(), expired()]).unwrap(),
            (ReleaseOutcome::Expired, -1)
        );
        // One answer is enough: a release does not need a majority to answer.
        assert_eq!(
            decide_release(vec![expired(), Err(timeout("a")), Err(timeout("b"))]).unwrap(),
            (ReleaseOutcome::Expired, -1)
        );
        let err = decide_release(vec![Err(timeout("a")), Err(denied("b")), Err(timeout("c"))])
            .unwrap_err();
        assert!(err.is_quorum_lost(), "{err}");
        assert_eq!(
            err.message(),
            "0 of 3 masters answered, and a majority is 2"
        );
        assert_eq!(cause(&err).map(Error::message), Some("b"));
        let err = decide_release(vec![Err(denied("a")), Err(timeout("b")), Err(denied("c"))])
            .unwrap_err();
        assert!(err.is_access_denied(), "{err}");
        assert_eq!(err.message(), "a");
    }

    /// Feeds `replies` in this order to `answer`, as [`gather`] does, until it says done:
    /// how many were heard.
    fn hear<T>(replies: Vec<T>, mut answer: impl FnMut(T) -> Listen) -> usize {
        let mut heard = 0;
        for reply in replies {
            heard += 1;
            if answer(reply) == Listen::Done {
                break;
            }
        }
        heard
    }

    /// What a renewal decides when the masters answer `replies` in this order: how many were
    /// heard, and the outcome.
    fn decide_renew(
        nodes: usize,
        replies: Vec<Result<RenewOutcome>>,
    ) -> (usize, Result<RenewOutcome>) {
        let mut tally = RenewTally::new(nodes, nodes / 2 + 1);
        let heard = hear(replies, |reply| {
            tally.add(reply);
            tally.listen()
        });
        (heard, tally.outcome(nodes - heard))
    }

    /// What the renewal tally of `nodes` masters says after each of `replies`.
    fn renew_listens(nodes: usize, replies: Vec<Result<RenewOutcome>>) -> Vec<Listen> {
        let mut tally = RenewTally::new(nodes, nodes / 2 + 1);
        replies
            .into_iter()
            .map(|reply| {
                tally.add(reply);
                tally.listen()
            })
            .collect()
    }

    #[test]
    fn a_renewal_is_decided_by_a_majority_of_renewals() {
        use RenewOutcome::*;
        // Exactly a majority: the third master is not waited for.
        let (heard, outcome) = decide_renew(3, vec![Ok(Renewed), Ok(Renewed), Ok(Conflict)]);
        assert_eq!((heard, outcome.unwrap()), (2, Renewed));
        let (heard, outcome) = decide_renew(
            5,
            vec![
                Ok(Missing),
                Ok(Renewed),
                Err(timeout("a")),
                Ok(Renewed),
                Ok(Renewed),
            ],
        );
        assert_eq!((heard, outcome.unwrap()), (5, Renewed));
        let (heard, outcome) = decide_renew(5, (0..5).map(|_| Ok(Renewed)).collect());
        assert_eq!((heard, outcome.unwrap()), (3, Renewed));
    }

    #[test]
    fn a_renewal_one_short_is_lost_as_a_conflict_or_as_missing() {
        use RenewOutcome::*;
        // A majority refused: decided without the rest.
        let (heard, outcome) = decide_renew(3, vec![Ok(Missing), Ok(Missing), Ok(Renewed)]);
        assert_eq!((heard, outcome.unwrap()), (2, Missing));
        // Any conflict among the refusals makes it a conflict.
        let (heard, outcome) = decide_renew(5, vec![Ok(Missing), Ok(Conflict), Ok(Missing)]);
        assert_eq!((heard, outcome.unwrap()), (3, Conflict));
        // One renewal short, with a failure: a majority answered, so not quorum lost.
        let (heard, outcome) = decide_renew(3, vec![Ok(Renewed), Ok(Missing), Err(timeout("a"))]);
        assert_eq!((heard, outcome.unwrap()), (3, Missing));
        let (heard, outcome) = decide_renew(3, vec![Ok(Renewed), Err(timeout("a")), Ok(Conflict)]);
        assert_eq!((heard, outcome.unwrap()), (3, Conflict));
        // Tied two to two of four: no majority renewed.
        let (heard, outcome) =
            decide_renew(4, vec![Ok(Renewed), Ok(Missing), Ok(Renewed), Ok(Conflict)]);
        assert_eq!((heard, outcome.unwrap()), (4, Conflict));
        // While the masters still out could make a majority renew, they are heard.
        assert_eq!(
            renew_listens(3, vec![Ok(Renewed), Ok(Missing)]),
            [Listen::On, Listen::On]
        );
        assert_eq!(
            renew_listens(3, vec![Ok(Missing), Err(timeout("a"))]),
            [Listen::On, Listen::On]
        );
    }

    #[test]
    fn a_renewal_without_a_majority_answering_is_quorum_lost() {
        use RenewOutcome::*;
        // Every master failed: decided once no majority can answer.
        let (heard, outcome) = decide_renew(
            3,
            vec![Err(timeout("a")), Err(denied("b")), Err(timeout("c"))],
        );
        assert_eq!(heard, 2);
        let err = outcome.unwrap_err();
        assert!(err.is_quorum_lost(), "{err}");
        assert_eq!(
            err.message(),
            "0 of 3 masters answered, and a majority is 2"
        );
        assert_eq!(cause(&err).map(Error::message), Some("b"));
        // One answer short of a majority.
        let (heard, outcome) = decide_renew(
            5,
            vec![
                Ok(Renewed),
                Err(timeout("a")),
                Ok(Missing),
                Err(timeout("b")),
                Err(timeout("c")),
            ],
        );
        assert_eq!(heard, 5);
        let err = outcome.unwrap_err();
        assert!(err.is_quorum_lost(), "{err}");
        assert_eq!(
            err.message(),
            "2 of 5 masters answered, and a majority is 3"
        );
        assert_eq!(cause(&err).map(Error::message), Some("a"));
        // Refused by enough masters to leave no majority: that refusal.
        let (_, outcome) = decide_renew(3, vec![Err(denied("a")), Err(denied("b"))]);
        let err = outcome.unwrap_err();
        assert!(err.is_access_denied(), "{err}");
        assert_eq!(err.message(), "a");
    }

    fn held(index: i64, ttl: u64, host: &str) -> Result<LockStatus> {
        Ok(LockStatus {
            id: "id".to_owned(),
            held: true,
            index,
            ttl: Some(ms(ttl)),
            holder: [("host".to_owned(), host.to_owned())].into(),
        })
    }

    fn free() -> Result<LockStatus> {
        Ok(LockStatus {
            id: "id".to_owned(),
            held: false,
            index: -1,
            ttl: None,
            holder: Default::default(),
        })
    }

    /// What a status query decides when the masters answer `replies` in this order: how many
    /// were heard, and the outcome.
    fn decide_status(
        nodes: usize,
        replies: Vec<Result<LockStatus>>,
    ) -> (usize, Result<LockStatus>) {
        let mut tally = StatusTally::new(nodes, nodes / 2 + 1);
        let heard = hear(replies, |reply| {
            tally.add(reply);
            tally.listen()
        });
        (heard, tally.outcome("id"))
    }

    #[test]
    fn a_status_is_the_index_a_majority_store_with_the_shortest_ttl() {
        // Exactly a majority: the third master is not waited for.
        let (heard, outcome) = decide_status(3, vec![held(7, 300, "a"), held(7, 200, "b"), free()]);
        assert_eq!(heard, 2);
        assert_eq!(outcome.unwrap(), held(7, 200, "b").unwrap());
        let (heard, outcome) = decide_status(
            5,
            vec![
                held(7, 500, "a"),
                free(),
                held(7, 100, "b"),
                Err(timeout("t")),
                held(7, 300, "c"),
            ],
        );
        assert_eq!(heard, 5);
        assert_eq!(outcome.unwrap(), held(7, 100, "b").unwrap());
        // Equal ttls: the first answer of them.
        let (_, outcome) = decide_status(3, vec![held(7, 200, "a"), held(7, 200, "b")]);
        assert_eq!(outcome.unwrap(), held(7, 200, "a").unwrap());
        // A clear majority, answered after a stray index.
        let (heard, outcome) = decide_status(
            5,
            vec![
                held(8, 50, "x"),
                held(7, 400, "a"),
                held(7, 300, "b"),
                held(7, 350, "c"),
            ],
        );
        assert_eq!(heard, 4);
        assert_eq!(outcome.unwrap(), held(7, 300, "b").unwrap());
    }

    #[test]
    fn a_status_without_a_majority_index_is_free() {
        // One short of a majority.
        let (heard, outcome) = decide_status(
            5,
            vec![
                held(7, 100, "a"),
                held(7, 100, "b"),
                free(),
                free(),
                Err(timeout("t")),
            ],
        );
        assert_eq!(heard, 5);
        assert_eq!(outcome.unwrap(), free().unwrap());
        // Decided once no index can reach a majority, without the rest.
        let (heard, outcome) = decide_status(3, vec![free(), free(), held(7, 100, "a")]);
        assert_eq!((heard, outcome.unwrap()), (2, free().unwrap()));
        let (heard, outcome) = decide_status(
            5,
            vec![
                held(7, 100, "a"),
                held(8, 100, "b"),
                free(),
                free(),
                held(7, 100, "c"),
            ],
        );
        assert_eq!((heard, outcome.unwrap()), (4, free().unwrap()));
        // Two indexes, one master each: the third decides.
        let (heard, outcome) = decide_status(3, vec![held(7, 100, "a"), held(8, 100, "b"), free()]);
        assert_eq!((heard, outcome.unwrap()), (3, free().unwrap()));
        // Tied two to two of four.
        let (heard, outcome) = decide_status(
            4,
            vec![
                held(7, 100, "a"),
                held(8, 100, "b"),
                held(7, 100, "c"),
                held(8, 100, "d"),
            ],
        );
        assert_eq!((heard, outcome.unwrap()), (4, free().unwrap()));
    }

    #[test]
    fn a_status_without_a_majority_answering_is_quorum_lost_and_foreign_data_an_error() {
        let (heard, outcome) = decide_status(
            3,
            vec![Err(timeout("a")), Err(denied("b")), held(7, 100, "a")],
        );
        assert_eq!(heard, 2);
        let err = outcome.unwrap_err();
        assert!(err.is_quorum_lost(), "{err}");
        assert_eq!(
            err.message(),
            "0 of 3 masters answered, and a majority is 2"
        );
        assert_eq!(cause(&err).map(Error::message), Some("b"));
        // One answer short of a majority.
        let (_, outcome) = decide_status(
            5,
            vec![
                held(7, 100, "a"),
                held(7, 100, "b"),
                Err(timeout("x")),
                Err(timeout("y")),
                Err(timeout("z")),
            ],
        );
        let err = outcome.unwrap_err();
        assert!(err.is_quorum_lost(), "{err}");
        assert_eq!(
            err.message(),
            "2 of 5 masters answered, and a majority is 3"
        );
        assert_eq!(cause(&err).map(Error::message), Some("x"));
        // Foreign data on one master decides at once, ahead of everything else.
        let (heard, outcome) = decide_status(
            3,
            vec![held(7, 100, "a"), Err(corrupt("c")), held(7, 100, "b")],
        );
        assert_eq!(heard, 2);
        let err = outcome.unwrap_err();
        assert!(err.is_corrupt_data(), "{err}");
        assert_eq!(err.message(), "c");
        let (_, outcome) = decide_status(3, vec![Err(timeout("a")), Err(corrupt("c"))]);
        assert!(outcome.unwrap_err().is_corrupt_data());
    }

    #[test]
    fn a_ping_needs_a_majority_up() {
        let pings = |nodes: usize, replies: Vec<Result<()>>| {
            let mut tally = PingTally::new(nodes, nodes / 2 + 1);
            let heard = hear(replies, |reply| {
                tally.add(reply);
                tally.listen()
            });
            (heard, tally.outcome())
        };
        // Exactly a majority: the third is not waited for.
        let (heard, outcome) = pings(3, vec![Ok(()), Ok(()), Err(timeout("a"))]);
        assert_eq!(heard, 2);
        outcome.unwrap();
        let (heard, outcome) = pings(5, vec![Ok(()), Err(timeout("a")), Ok(()), Ok(())]);
        assert_eq!(heard, 4);
        outcome.unwrap();
        // One short: decided once the failures leave no majority; the refusal is the source.
        let (heard, outcome) = pings(3, vec![Ok(()), Err(timeout("a")), Err(denied("b"))]);
        assert_eq!(heard, 3);
        let err = outcome.unwrap_err();
        assert!(err.is_quorum_lost(), "{err}");
        assert_eq!(
            err.message(),
            "only 1 of 3 masters answered (a majority is 2)"
        );
        assert_eq!(cause(&err).map(Error::message), Some("b"));
        // Every master failed: decided once a majority failed.
        let (heard, outcome) = pings(
            5,
            vec![
                Err(timeout("a")),
                Err(timeout("b")),
                Err(timeout("c")),
                Ok(()),
            ],
        );
        assert_eq!(heard, 3);
        let err = outcome.unwrap_err();
        assert!(err.is_quorum_lost(), "{err}");
        assert_eq!(cause(&err).map(Error::message), Some("a"));
        // Refused by enough masters to leave no majority: that refusal, foreign data first.
        let (_, outcome) = pings(3, vec![Err(denied("a")), Err(corrupt("b"))]);
        let err = outcome.unwrap_err();
        assert!(err.is_corrupt_data(), "{err}");
        assert_eq!(err.message(), "b");
    }
}
