//! A distributed lock (a binary semaphore with a lease) on Redis, whose waiters are woken by
//! pub/sub instead of polling. The Rust implementation of the Node library
//! [`redfour`](https://www.npmjs.com/package/redfour), wire-compatible with it: Node and Rust
//! processes contend for the same locks on the same Redis. Needs Redis 6.2 or later.
//!
//! # Quick start
//!
//! The original's usage example: one task takes the lock, another waits for it, and the
//! release wakes the waiter at once.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! # #[tokio::main]
//! # async fn main() -> redfour::Result<()> {
//! let locks = redfour::Client::builder("redis://127.0.0.1:6379/")
//!     .namespace("mylock")
//!     .build()?;
//!
//! // First, acquire the lock; it expires after 60 s if never released.
//! let first = locks.lock("token-refresh").ttl(Duration::from_secs(60)).acquire().await?;
//! println!("acquired with index {}", first.index());
//!
//! // Another task (or server) waits up to 10 s for it.
//! let waiter = tokio::spawn({
//!     let locks = locks.clone();
//!     async move {
//!         locks
//!             .lock("token-refresh")
//!             .ttl(Duration::from_secs(60))
//!             .wait(Duration::from_secs(10))
//!             .acquire()
//!             .await
//!     }
//! });
//!
//! // When the first holder releases, the waiter is notified and takes the lock.
//! tokio::time::sleep(Duration::from_secs(3)).await;
//! first.release().await?;
//! let second = waiter.await.expect("waiter task")?;
//! println!("acquired after waiting, index {}", second.index());
//! second.release().await?;
//! # Ok(()) }
//! ```
//!
//! # From Node redfour to Rust
//!
//! | Node redfour | Rust | result |
//! |---|---|---|
//! | `new Lock({redis, namespace})` | [`Client::builder`]`(url).namespace(ns).build()`, or [`Client::from_redis_client`] | a cheap-to-clone [`Client`] |
//! | `acquireLock(id, ttl)` | [`Client::acquire_lock`]`(id, ttl)` | [`AcquireResponse`] `{ id, success, index, ttl }` |
//! | `waitAcquireLock(id, ttl, waitTtl)` | [`Client::wait_acquire_lock`]`(id, ttl, Some(wait))` (`None` or zero: forever) | [`AcquireResponse`] with `immediate` |
//! | `releaseLock(lock)` | [`Client::release_lock`]`(id, index)` | [`ReleaseResponse`]: `released` / `expired` / `conflict` |
//! | `renewLock(lock, ttl)` | [`Client::renew_lock`]`(id, index, ttl)` | [`RenewResponse`]: `renewed` / `missing` / `conflict` |
//! | — | [`Client::lock`]`(id).ttl(..).wait(..).acquire()` | a [`LockGuard`]: index, deadline, `release()`, `renew()`, `lost()` |
//! | — | [`Client::status`]`(id)` | [`LockStatus`]: holder, index, remaining ttl, metadata |
//! | — | [`Client::list`]`()` | every [`Listing`] of the namespace (found with `SCAN`): each held lock's holder, index, remaining ttl, time held and waiters, and foreign keys |
//! | — | [`Client::wait_progress`]`(id)` | [`WaitProgress`]: the lock a waiter of this client waits for, and the waiter's place in its queue |
//!
//! The keys are Node's: the lock is the hash `{ns}:{id}` with the field `index` (plus `host`,
//! `pid`, `acquired_at`, `attempt`, an optional `description` and, on a lock handed to a
//! queued waiter, `handoff`, all of which Node ignores), the counter is `{ns}index` (a string
//! without expiry, as Node keeps it), and releases are announced on the channel `{ns}-release`
//! with the lock key as the message. The fair queue's own keys, `{ns}-queue:{id}` and
//! `{ns}-waiters:{id}`, expire on their own. The index is stored in plain decimal, from 1 to [`MAX_INDEX`] (2^53 − 1); a lock hash with
//! anything else there, or without expiry, is [`ErrorKind::CorruptData`] for every operation
//! and is never changed.
//!
//! # Sentinel, Cluster, Redlock
//!
//! The same API runs on a master watched by Redis Sentinel ([`Client::sentinel`], following
//! failovers), on Redis Cluster ([`Client::cluster`]: every key of a lock shares the hash tag
//! `{ns:id}`, notices on sharded pub/sub) and on independent masters with the Redlock algorithm
//! ([`Client::redlock`]: a majority within validity = ttl − elapsed − drift). What each of them
//! can lose in a failover, and what [`ClientBuilder::replica_acks`] narrows, is in the README's
//! "Topologies" section; [`Topology`] names them for [`Client::builder_with_topology`].
//!
//! ```no_run
//! # async fn example() -> redfour::Result<()> {
//! let locks = redfour::Client::cluster(["redis://10.0.1.1:7000", "redis://10.0.1.2:7000"])
//!     .build()?;
//! let guard = locks.lock("import").acquire().await?;
//! guard.release().await?;
//! # Ok(()) }
//! ```
//!
//! # Waiting in line
//!
//! By default ([`ClientBuilder::fair`]) waiters queue in FIFO order on the server, in the list
//! `{ns}-queue:{id}` with their entries in the hash `{ns}-waiters:{id}` (both vanish when nobody
//! waits). A release hands the lock straight to the first live waiter, with a fresh index, and
//! notifies only that waiter (on its client's channel `{ns}-handoff:{client}`): it holds the lock
//! when the notice arrives, with no stampede and no waiter passed over. Entries expire on the
//! server's clock, so a waiter that died is skipped; a lock handed to a waiter that never claims
//! it expires after the [claim window](ClientBuilder::claim_window). Node redfour clients keep
//! working beside the queue, without its fairness: they take a free lock when they see one. With
//! `fair(false)` a release wakes every waiter and the fastest wins, as in Node redfour.
//!
//! # What is guaranteed, and what is not
//!
//! - **Exclusion while Redis keeps its data**: at most one holder per lock on one Redis server.
//!   A Redis restart without persistence forgets every lock; holders learn it at their next
//!   renewal (`missing`, and the guard's [`lost`](LockGuard::lost) signal fires).
//! - **Fencing**: every acquisition gets an index greater than all earlier ones in the
//!   namespace, even after the counter key was lost: the acquire script floors it at the
//!   server's clock in microseconds (below 2^53, so Node reads it exactly). A lease can always
//!   end early in practice (a process pause, a clock jump, a failover), so the only protection
//!   against a stale holder is for the resource to reject writes with an older index: see
//!   `examples/fencing.rs`.
//! - **Leases on the local monotonic clock**: a guard's [`deadline`](LockGuard::deadline) is the
//!   time the acquire was *sent* plus the ttl minus a drift margin, never a wall-clock time.
//! - **Only the holder releases or renews**: both compare the index on the server.
//! - **No lost wake-ups**: a waiter is registered on the client's single subscription before its
//!   first attempt; it also wakes when the holder's ttl runs out, and after a reconnect.
//! - **First come, first served** among this library's waiters (with the fair queue).
//! - **Cancel safety**: dropping a pending acquire deregisters it, and if the acquire already won
//!   on the server, the lock is released in the background.
//! - **Foreign data is never touched**: a key of the wrong type, a corrupt counter, a lock
//!   without expiry or with an index that is not plain decimal from 1 to [`MAX_INDEX`] give an
//!   [`ErrorKind::CorruptData`] error from every operation and are left as they are.
//! - **Not guaranteed**: replicated Redis (Sentinel, Cluster) replicates asynchronously, so a
//!   failover can lose a lock that was just granted; and no lease-based lock survives a
//!   holder paused (GC, swap, SIGSTOP) beyond its ttl. Use the fencing index.
//!
//! # Connections
//!
//! A [`Client`] uses a small fixed number of connections, whatever the number of locks and
//! waiters. Each is opened at first use and reconnects by itself.
//!
//! | topology | connections |
//! |---|---|
//! | single server | one multiplexed command connection, and one subscription shared by all waiters (opened at the first wait): two |
//! | … with [`replica_acks`](ClientBuilder::replica_acks) | one more command connection for the acquires and handoff claims that `WAIT` (it blocks its connection): three |
//! | Sentinel | the same two (three) to the master, plus one subscription to a sentinel for `+switch-master`, and brief connections to the sentinels whenever the master is looked up (at the start, after a failure) |
//! | Cluster | one connection per node, masters and replicas (the cluster client's), for commands; as many for the waiters' sharded subscriptions; as many again with `replica_acks` |
//! | Redlock | per master, one command connection and one subscription |
//!
//! [`Client::stats`] counts the subscription's reconnections. Scripts run with `EVALSHA` and
//! are reloaded when the server answers `NOSCRIPT`.
//!
//! # Metrics
//!
//! With the feature `metrics`, the client records what its locks do through the
//! [`metrics`](https://docs.rs/metrics) facade: the application installs the exporter
//! (`metrics-exporter-prometheus`, StatsD, OpenTelemetry through a bridge, ...), before it
//! builds its clients, since each [`build`](ClientBuilder::build) describes the metrics (unit,
//! help text) to the recorder in force. Names and attributes follow OpenTelemetry's style; a
//! Prometheus exporter turns the dots into underscores (`redfour_lock_wait_duration`, with
//! `_seconds` and `_total` added by its recommended naming). Without a recorder, or without the
//! feature, nothing is recorded, and without the feature `metrics` is not a dependency.
//!
//! | name | kind | unit | attributes | recorded |
//! |---|---|---|---|---|
//! | `redfour.lock.wait.duration` | histogram | s | `outcome` = `acquired` / `timeout` / `error`, `kind` | from an acquire's call to its outcome: every [`acquire`](LockBuilder::acquire), [`wait_acquire_lock`](Client::wait_acquire_lock), and the one-shot [`try_acquire`](LockBuilder::try_acquire) and [`acquire_lock`](Client::acquire_lock) (a wait of zero: `timeout` when the lock was held). A cancelled acquire records nothing; invalid input neither |
//! | `redfour.lock.hold.duration` | histogram | s | `kind`, `end` = `released` / `expired` / `lost` / `dropped` | from a guard's acquisition to its end: its release (`released`, or `expired` when the lock had expired on the server), its lease lost (a renewal found the lock `missing` or taken, keep-alive or [`lost`](LockGuard::lost) saw the deadline pass; a release answering `conflict` too), or its drop without a release (`dropped`, also when the release failed) |
//! | `redfour.lock.waiting` | gauge | {waiter} | `kind` | acquires that wait, while they run (back down when they win, give up, fail or are dropped) |
//! | `redfour.lock.held` | gauge | {holding} | `kind` | guards holding their lock: up at the acquisition, down at the end above |
//! | `redfour.lock.lease.lost` | counter | {lease} | `kind` | leases lost while their guard lived (as [`Stats::leases_lost`]) |
//! | `redfour.lock.renewals` | counter | {renewal} | `outcome` = `renewed` / `missing` / `conflict` / `error` | every renewal of a guard's lease: [`renew`](LockGuard::renew), [`renew_with`](LockGuard::renew_with), keep-alive (which also claims a handed-over lock); as [`Stats::renewals`] and [`Stats::renewal_failures`] |
//! | `redfour.lock.handoffs` | counter | {handoff} | `kind` | locks a release handed straight to one of the client's waiters (fair queue) |
//! | `redfour.redis.reconnects` | counter | {reconnect} | `role` = `commands` / `subscriptions` / `acks` | a connection that came back after it was lost: the command connection (`acks`: the one of [`replica_acks`](ClientBuilder::replica_acks)) at the first command it answers again, the waiters' subscription when it is up again. A cluster's connections reconnect inside the redis crate, uncounted |
//!
//! `kind` is `lock` (shared locks and semaphores will add theirs). The facade has no
//! annotation units: the `{...}` counts are recorded as
//! [`Unit::Count`](https://docs.rs/metrics/0.24/metrics/enum.Unit.html#variant.Count). The
//! Node-shaped [`acquire_lock`](Client::acquire_lock) holds no guard, so it is timed but
//! never counted as held; its [`renew_lock`](Client::renew_lock) is not counted either.
//!
//! The lock is not an attribute by default: every lock name would become a time series of its
//! own. [`ClientBuilder::metric_lock_names`] adds it as `lock` (the lock's key) to every metric
//! but the reconnections. With the default attributes each record's key is built at compile
//! time (nothing is allocated to name it); BENCHMARKS.md ("Metrics cost") has what recording
//! costs. `examples/prometheus.rs` serves the metrics for Prometheus.
//!
//! # Features
//!
//! - `blocking`: [`blocking`], the same API for synchronous code.
//! - `tls`: `rediss://` URLs, verified against the system's root certificates or the private
//!   CAs given to [`ClientBuilder::tls_root_certificates`]. For mutual TLS, build a
//!   [`redis::Client`] with [`redis::Client::build_with_tls`] and pass it to
//!   [`Client::from_redis_client`].
//! - `metrics`: lock metrics through the `metrics` facade (see [Metrics](#metrics)).
//! - `tls-insecure`: also honours `rediss://host:port/#insecure`, which turns certificate
//!   verification off entirely (for tests and debugging; `build()` refuses such a URL without
//!   this feature).
//!
// The items behind features: linked where the feature is on (docs.rs builds with all of
// them); where it is off, at the list above (at `redis::Client` for redis-rs's
// `build_with_tls`), so `cargo doc` without features has no broken links.
#![cfg_attr(feature = "blocking", doc = "[`blocking`]: crate::blocking")]
#![cfg_attr(not(feature = "blocking"), doc = "[`blocking`]: crate#features")]
#![cfg_attr(
    feature = "metrics",
    doc = "[`ClientBuilder::metric_lock_names`]: ClientBuilder::metric_lock_names"
)]
#![cfg_attr(
    not(feature = "metrics"),
    doc = "[`ClientBuilder::metric_lock_names`]: crate#metrics"
)]
#![cfg_attr(
    feature = "tls",
    doc = "[`ClientBuilder::tls_root_certificates`]: ClientBuilder::tls_root_certificates",
    doc = "[`redis::Client::build_with_tls`]: redis::Client::build_with_tls"
)]
#![cfg_attr(
    not(feature = "tls"),
    doc = "[`ClientBuilder::tls_root_certificates`]: crate#features",
    doc = "[`redis::Client::build_with_tls`]: redis::Client"
)]
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

// The public shells: the client, the two ways to take a lock, the held lock, listings.
mod client;
mod guard;
mod list;
mod lock;
mod node;
mod outcome;

// The machinery, from the wait loop down to the server (see ARCHITECTURE.md).
mod backoff;
mod cleanup;
mod config;
mod engine;
mod error;
mod hub;
mod keys;
mod lease;
mod metrics;
mod redact;
mod scripts;
mod stats;
mod sync;
mod wait;

#[cfg(feature = "blocking")]
pub mod blocking;

pub use client::{Client, ClientBuilder, Topology, DEFAULT_NAMESPACE};
pub use error::{Error, ErrorKind, Result};
pub use guard::{LeaseLost, LockGuard};
pub use keys::{MAX_ID_LEN, MAX_INDEX, MAX_TTL};
pub use list::{Holder, Listing, ListingKind, WaitProgress};
pub use lock::LockBuilder;
pub use node::{AcquireResponse, ReleaseResponse, RenewResponse};
pub use outcome::{LockStatus, ReleaseOutcome, RenewOutcome};

/// The redis crate this library is built on, for [`Client::from_redis_client`].
pub use redis;
pub use stats::Stats;
