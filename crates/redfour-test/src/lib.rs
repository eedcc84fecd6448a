//! Test kit for redfour: real `redis-server` processes owned by the test that starts them.
//!
//! [`RedisServer::start`] spawns `redis-server` on a free port of 127.0.0.1, with persistence
//! off and its working directory and log in a fresh temporary directory, and returns once the
//! server answers `PING`. The process is killed (`SIGKILL`) and the directory removed when the
//! value is dropped, so a panicking test leaves nothing behind. Nothing here ever talks to a
//! server on the default port 6379.
//!
//! Fault tests can [`stop`](RedisServer::stop) a server and [`restart`](RedisServer::restart) it
//! on the same port (with an empty data set), or drop every client connection with
//! [`kill_clients`](RedisServer::kill_clients). Put [`log`](RedisServer::log) into assertion
//! messages: it is what explains a failure that only happens on CI.
//!
//! The API is synchronous (`std::process`, `std::net`), so it works the same from plain `#[test]`
//! functions and from `#[tokio::test]` ones. Waiting for a condition is done by polling with a
//! deadline: [`wait_until`] and, inside a runtime, [`wait_until_async`].
//!
//! [`RedisServer::start_tls`] starts a server that speaks TLS only, with a private CA and
//! certificates made at test time ([`TlsCerts`]); its [`url`](RedisServer::url) is `rediss://`.
//! [`RedisServer::start_unix_with_args`] starts one that also listens on a Unix socket in its
//! directory, for `unix://` URLs ([`unix_url`](RedisServer::unix_url)).
//!
//! [`RedisCluster::start`] starts a Redis Cluster of such servers (masters, optionally with
//! replicas) and returns once every node agrees on the slot map. Tests can then move a slot
//! between masters ([`migrate_slot`](RedisCluster::migrate_slot)), or in steps to see `ASK`
//! redirections mid-way ([`begin_migration`](RedisCluster::begin_migration)), promote a replica
//! ([`failover`](RedisCluster::failover)), or [`kill`](RedisCluster::kill) and
//! [`restart`](RedisCluster::restart) nodes; each of these waits until the cluster has converged
//! again.
//!
//! [`SentinelGroup::start`] starts a Redis Sentinel deployment: a master, its replicas and
//! sentinel processes ([`SentinelProcess`]) monitoring it as
//! [`service`](SentinelGroup::service), and returns once the sentinels know every node and one
//! another. Clients take its [`sentinel_urls`](SentinelGroup::sentinel_urls); fault tests move
//! the master with [`failover`](SentinelGroup::failover), or
//! [`kill_master`](SentinelGroup::kill_master) and
//! [`wait_for_new_master`](SentinelGroup::wait_for_new_master), and put
//! [`logs`](SentinelGroup::logs) into assertion messages.
//!
//! `redis-server` must be on `PATH` ([`which_redis_server`]).
//!
//! # Examples
//!
//! ```no_run
//! use redfour_test::{wait_until, RedisServer};
//! use std::time::Duration;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut server = RedisServer::start();
//! let mut conn = server.connection();
//! redis::cmd("SET").arg("key").arg("value").exec(&mut conn)?;
//!
//! // Simulate an outage: the server goes away and comes back on the same port, empty.
//! server.stop();
//! assert!(redis::cmd("PING").exec(&mut conn).is_err());
//! server.restart();
//!
//! let mut conn = server.connection();
//! let value: Option<String> = redis::cmd("GET").arg("key").query(&mut conn)?;
//! assert_eq!(value, None, "server log:\n{}", server.log());
//!
//! // Poll for a condition instead of sleeping.
//! assert!(wait_until(Duration::from_secs(5), || server.is_running()));
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod cluster;
mod process;
mod proxy;
mod sentinel;
mod server;
mod tls;
mod wait;

pub use cluster::{Migration, RedisCluster, CLUSTER_SLOTS, NODE_TIMEOUT};
pub use proxy::Proxy;
pub use sentinel::{SentinelGroup, SentinelProcess};
pub use server::{which_redis_server, RedisServer};
pub use tls::TlsCerts;
pub use wait::{wait_until, wait_until_async, wait_until_every};
