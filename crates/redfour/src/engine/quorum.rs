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

    /// Every lock a majority of the masters hold with one index, and foreign keys (see
    /// [`crate::list::majority`]). Each master is scanned whole: the node timeout bounds no
    /// listing, each of its round trips has the response timeout.
    pub(crate) async fn list(&self) -> Result<Vec<crate::list::Listing>> {
        let lists = join_all(self.nodes.iter().map(Direct::list)).await;
        let mut errors = Vec::new();
        let per_master: Vec<_> = lists
            .into_iter()
            .map(|list| list.map_err(|e| errors.push(e)).ok())
            .collect();
        let answered = per_master.iter().flatten().count();
        if answered < self.quorum {
            return Err(quorum_lost(answered, self.nodes.len(), self.quorum, errors));
        }
        Ok(crate::list::majority_listing(per_master, self.quorum))
    }

    /// The lock at `key` as a majority of the masters see it (no queue, so no place).
    pub(crate) async fn peek(&self, id: &str, key: &str) -> Result<crate::list::Seen> {
        let mut errors = Vec::new();
        let seen: Vec<_> = on_all(&self.nodes, |node| node.peek(id, key, None))
            .await
            .into_iter()
            .map(|seen| seen.map_err(|e| errors.push(e)).ok())
            .collect();
        let answered = seen.iter().flatten().count();
        if answered < self.quorum {
            return Err(quorum_lost(answered, self.nodes.len(), self.quorum, errors));
        }
        Ok(crate::list::majority(&seen, self.quorum))
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
#[derive(Default)]
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
mod tests;
