//! `redfour-chaos`: the fault-injection suite of redfour.
//!
//! Worker **processes** (so that a pause or a kill hits exactly one holder) loop acquire →
//! critical section → one fenced write to a resource server → release on one lock, and append
//! every step to a log with `CLOCK_MONOTONIC` timestamps. A run injects one kind of fault on a
//! seeded schedule (freezing or killing the holder, restarting Redis with or without
//! persistence, killing the subscriptions, a Sentinel failover, moving the lock's slot between
//! the masters of a cluster), and the [checker](check) then merges the logs and checks
//! exclusion (V), fencing (F), that only the holder releases (R) and liveness (L).
//!
//! Most scenarios run against one redis-server; `sentinel-failover` and `cluster-reshard` run
//! against a Sentinel group and a Redis Cluster, with workers on the matching topology (see
//! [`scenario::Topology`]). `mixed-fleet` puts Node redfour 1.0.5 workers
//! (`interop/chaos-worker.js`, which log the same events) beside the Rust ones on one lock; it
//! needs `node` and `npm ci` in `interop/` (see [`node`]).
//!
//! ```text
//! cargo run -p redfour-chaos -- list
//! cargo run -p redfour-chaos -- run freeze-holder --seconds 30 --seed 7
//! cargo run -p redfour-chaos -- soak --seconds 600
//! ```
//!
//! The scenarios and what each promises are in [`scenario::all`]; `RELIABILITY.md` has the
//! results.

#![deny(missing_docs)]

pub mod check;
pub mod events;
pub mod node;
pub mod resource;
pub mod scenario;
pub mod worker;

/// The error type of the harness (not of the library under test).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
