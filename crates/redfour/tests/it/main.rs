//! The integration tests of `redfour`, in one test binary with a module per area: every test
//! binary links the whole crate and its dependencies, so one binary is linked once where a file
//! per area was linked eighteen times. `cargo test -p redfour --test it <module>::` runs one
//! area, e.g. `sentinel::` or `node_interop::`. New tests go into a module here, not into a new
//! file beside `it/`.
//!
//! Every test starts its own servers through the test kit (`redfour-test`) on free ports, so
//! the tests of all modules run side by side in one process.
//!
//! - on one server: `waiting`, `fair_queue`, `guard`, `faults`, `connection`,
//!   `corrupt_data`, `layout`, `node_semantics`, `properties`, `regressions`,
//!   `send_sync`, `fencing`, `blocking` (feature `blocking`), `tls` (feature `tls`),
//!   `metrics` (feature `metrics`);
//! - other topologies: `sentinel`, `cluster`, `redlock`;
//! - observing locks on each of them: `list`;
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
mod list;
#[cfg(feature = "metrics")]
mod metrics;
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
