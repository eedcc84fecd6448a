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

use crate::client::Client;
use crate::error::{Error, ErrorKind, Result};
use crate::lock::{release_in_background, Attempt, LockStatus, Meta, ReleaseOutcome, RenewOutcome};
use crate::scripts::{Eval, REDLOCK_ADOPT};

/// How long one master may take for one step.
fn node_timeout(client: &Client) -> Duration {
    let config = &client.inner.config;
    config.node_timeout.min(config.response_timeout)
}

/// `f` on every master in parallel, each bounded by the node timeout.
async fn on_all<'a, T, F, Fut>(nodes: &'a [Client], f: F) -> Vec<Result<T>>
where
    F: Fn(&'a Client) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + 'a,
{
    join_all(nodes.iter().map(|node| {
        let limit = node_timeout(node);
        let step = f(node);
        async move {
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
    }))
    .await
}

/// The error for too few masters answering: a master's own error when it is not a fault of
/// reaching it (foreign data at the key, a command refused), which no retry mends, else
/// "quorum lost".
fn quorum_lost(answered: usize, nodes: usize, quorum: usize, mut errors: Vec<Error>) -> Error {
    // Lasting only when the masters that failed that way leave no majority possible; with
    // enough masters merely unreachable, a retry may still win.
    let lasting_count = errors.iter().filter(|e| !e.is_transient()).count();
    let lasting = errors
        .iter()
        .position(Error::is_corrupt_data)
        .or_else(|| errors.iter().position(|e| !e.is_transient()));
    if let Some(i) = lasting.filter(|_| nodes - lasting_count < quorum) {
        return errors.swap_remove(i);
    }
    unreachable_quorum(answered, nodes, quorum, errors)
}

fn unreachable_quorum(answered: usize, nodes: usize, quorum: usize, errors: Vec<Error>) -> Error {
    let err = Error::new(
        ErrorKind::Unavailable,
        format!(
            "Redlock quorum lost: {answered} of {nodes} masters answered, and a majority is {quorum}"
        ),
    );
    // The most telling cause: a master's own refusal before a fault of reaching one.
    match errors.into_iter().min_by_key(Error::is_transient) {
        Some(first) => err.with_source(first),
        None => err,
    }
}

/// Locks won on some masters, released (in the background) unless disarmed: the acquire
/// failed, or its future was dropped before it could answer.
struct Wins<'a> {
    nodes: &'a [Client],
    key: &'a str,
    /// (master, index it granted, index adopted there if any)
    held: Vec<(usize, i64, Option<i64>)>,
    armed: bool,
}

impl Drop for Wins<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for &(node, granted, adopted) in &self.held {
            // Whichever index the master stores now: the other answers `conflict` or
            // `expired`, changing nothing.
            release_in_background(&self.nodes[node], self.key, granted);
            if let Some(adopted) = adopted.filter(|a| *a != granted) {
                release_in_background(&self.nodes[node], self.key, adopted);
            }
        }
    }
}

/// A short random pause, so that clients that split the masters between them do not retry
/// in lockstep.
fn jitter() -> Duration {
    let mut h = RandomState::new().build_hasher();
    h.write_u64(0);
    Duration::from_millis(5 + h.finish() % 25)
}

pub(crate) async fn attempt(
    client: &Client,
    nodes: &[Client],
    quorum: usize,
    key: &str,
    ttl_ms: u64,
    meta: &Meta,
) -> Result<Attempt> {
    let ttl = Duration::from_millis(ttl_ms);
    let sent = Instant::now();
    let replies = on_all(nodes, |node| node.attempt(key, ttl_ms, meta, None)).await;
    let mut wins = Wins {
        nodes,
        key,
        held: Vec::new(),
        armed: true,
    };
    let mut held_pttls = Vec::new();
    let mut errors = Vec::new();
    for (i, reply) in replies.into_iter().enumerate() {
        match reply {
            Ok(Attempt::Acquired { index, .. }) => wins.held.push((i, index, None)),
            Ok(Attempt::Held { pttl, .. }) | Ok(Attempt::HandedOver { pttl, .. }) => {
                held_pttls.push(pttl)
            }
            Err(e) => errors.push(e),
        }
    }
    if wins.held.len() >= quorum {
        let adopted = wins.held.iter().map(|w| w.1).max().unwrap_or(0);
        let candidates: Vec<(usize, i64)> = wins.held.iter().map(|w| (w.0, w.1)).collect();
        for w in &mut wins.held {
            // Until the answers are in, either index may be stored.
            w.2 = Some(adopted);
        }
        let counter = client.inner.ns.counter(key);
        let steps = join_all(candidates.iter().map(|&(i, granted)| {
            let node = &nodes[i];
            let counter = &counter;
            async move {
                let mut inv = Eval::new(&REDLOCK_ADOPT, &[key, counter]);
                inv.arg(granted).arg(adopted);
                let step = async {
                    let mut conn = node.connection().await?;
                    inv.invoke::<i64>(&mut conn)
                        .await
                        .map_err(|e| Error::from_redis(e, Some(key)))
                };
                matches!(
                    tokio::time::timeout(node_timeout(node), step).await,
                    Ok(Ok(1))
                )
            }
        }))
        .await;
        let took = steps.iter().filter(|ok| **ok).count();
        if took >= quorum && !crate::guard::won_too_late(sent, ttl, client.inner.config.drift) {
            // Masters that granted but did not adopt hold a stray lock under their own index.
            for (&(i, granted), ok) in candidates.iter().zip(&steps) {
                if !ok {
                    release_in_background(&nodes[i], key, granted);
                }
            }
            wins.armed = false;
            tracing::debug!(key, index = adopted, masters = took, "Redlock acquired");
            return Ok(Attempt::Acquired {
                index: adopted,
                ttl,
                sent,
            });
        }
        tracing::debug!(
            key,
            adopted = took,
            "Redlock: a majority granted but the lock could not be confirmed in time; releasing it"
        );
        // `wins` releases everything on drop.
        return Ok(Attempt::Held {
            pttl: Duration::ZERO,
            sent,
            holder: None,
        });
    }
    let answered = nodes.len() - errors.len();
    if answered < quorum {
        return Err(quorum_lost(answered, nodes.len(), quorum, errors));
    }
    // Not enough grants: when would enough masters be free? The ones this attempt won (and
    // releases now) are; of the others, the soonest to expire first.
    held_pttls.sort();
    let free = wins.held.len();
    let pttl = match quorum.checked_sub(free + 1) {
        Some(more) => held_pttls
            .get(more)
            .copied()
            .unwrap_or(Duration::ZERO)
            .max(jitter()),
        None => jitter(),
    };
    Ok(Attempt::Held {
        pttl,
        sent,
        holder: None,
    })
}

pub(crate) async fn release(
    nodes: &[Client],
    quorum: usize,
    key: &str,
    index: i64,
) -> Result<(ReleaseOutcome, i64)> {
    let replies = on_all(nodes, |node| node.release_key(key, index)).await;
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
        if !errors.is_empty() {
            tracing::warn!(
                key,
                index,
                unreachable = errors.len(),
                "Redlock release did not reach every master; the lock expires there by its ttl"
            );
        }
        return Ok((ReleaseOutcome::Released, index));
    }
    if let Some(&stored) = conflicts.first() {
        return Ok((ReleaseOutcome::Conflict, stored));
    }
    if errors.len() == nodes.len() {
        return Err(quorum_lost(0, nodes.len(), quorum, errors));
    }
    Ok((ReleaseOutcome::Expired, -1))
}

pub(crate) async fn renew(
    nodes: &[Client],
    quorum: usize,
    key: &str,
    index: i64,
    ttl_ms: u64,
) -> Result<RenewOutcome> {
    let replies = on_all(nodes, |node| node.renew_key(key, index, ttl_ms)).await;
    let mut renewed = 0;
    let mut conflicts = 0;
    let mut errors = Vec::new();
    for reply in replies {
        match reply {
            Ok(RenewOutcome::Renewed) => renewed += 1,
            Ok(RenewOutcome::Conflict) => conflicts += 1,
            Ok(_) => {}
            Err(e) => errors.push(e),
        }
    }
    if renewed >= quorum {
        return Ok(RenewOutcome::Renewed);
    }
    let answered = nodes.len() - errors.len();
    if answered < quorum {
        return Err(quorum_lost(answered, nodes.len(), quorum, errors));
    }
    Ok(if conflicts > 0 {
        RenewOutcome::Conflict
    } else {
        RenewOutcome::Missing
    })
}

/// The lock as a majority of masters see it: held by the index that a majority store (with
/// the shortest remaining ttl among them), or free.
pub(crate) async fn status(nodes: &[Client], quorum: usize, id: &str) -> Result<LockStatus> {
    let replies = on_all(nodes, |node| node.status(id)).await;
    let mut seen: Vec<LockStatus> = Vec::new();
    let mut errors = Vec::new();
    for reply in replies {
        match reply {
            Ok(status) => seen.push(status),
            Err(e) if e.is_corrupt_data() => return Err(e),
            Err(e) => errors.push(e),
        }
    }
    if seen.len() < quorum {
        return Err(quorum_lost(seen.len(), nodes.len(), quorum, errors));
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
