//! The integration tests of `redfour`, in one test binary: every file of `crates/redfour/tests`
//! linked once rather than once per file (each binary links the whole crate and its
//! dependencies). Each module is one area; `cargo test -p redfour --test it <module>::` runs
//! one of them, e.g. `sentinel::` or `node_interop::`.
//!
//! Every test starts its own servers through the test kit (`redfour-test`) on free ports, so
//! the tests of all modules run side by side in one process.
//!
//! - on one server: `waiting`, `fair_queue`, `guard`, `faults`, `connection`,
//!   `corrupt_data`, `layout`, `node_semantics`, `properties`, `regressions`,
//!   `send_sync`, `fencing`, `blocking` (feature `blocking`), `tls` (feature `tls`);
//! - other topologies: `sentinel`, `cluster`, `redlock`;
//! - against Node redfour 1.0.5: `node_interop` (needs `npm ci` in `interop/`; skipped with a
//!   note unless `REDFOUR_REQUIRE_NODE` is set).
//!
//! `REDFOUR_TEST_FAIR=0` runs them with the fair queue off (`common::fair_mode`).

mod common;

#[cfg(feature = "blocking")]
mod blocking;
mod cluster;
mod connection;
mod corrupt_data;
mod fair_queue;
mod faults;
mod fencing;
mod guard;
mod layout;
mod node_interop;
mod node_semantics;
mod properties;
mod redlock;
mod regressions;
mod send_sync;
mod sentinel;
#[cfg(feature = "tls")]
mod tls;
mod waiting;
