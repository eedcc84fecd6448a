//! A Redis Sentinel deployment owned by a test: a master, its replicas and the sentinels that
//! watch them, all killed on drop.

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{kill_and_reap, Kind};
use crate::server::{which_redis_server, RedisServer};

/// The name the sentinels monitor the master under.
const SERVICE: &str = "redfour-test";
/// Sentinel `down-after-milliseconds`: how long a silent instance takes to be subjectively down.
const DOWN_AFTER_MS: u64 = 1000;
/// Sentinel `failover-timeout`. Besides bounding a failover, it is how long a sentinel waits
/// before retrying a failed election (twice this), and before re-pointing a replica that
/// follows the wrong master (a restarted node): small keeps the tests fast.
const FAILOVER_TIMEOUT_MS: u64 = 5000;
/// Arguments of every data node. Without the first, a diskless full sync waits 5 seconds for
/// more replicas to join before it starts, on every start, restart and failover.
const NODE_ARGS: [&str; 2] = ["--repl-diskless-sync-delay", "0"];

/// Connect, read and write timeout of the kit's connections to sentinels.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the group gets to replicate and for its sentinels to discover one another
/// ([`SentinelGroup::wait_settled`]); after a failover or a restart, sentinels take about 10
/// seconds to re-point a node.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(45);
/// How long the sentinels get to agree on the master when nothing is failing over.
const AGREE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a failover gets, from the request or the kill to a settled group.
const FAILOVER_WAIT: Duration = Duration::from_secs(45);
/// How long replicas get to catch up with the master.
const REPLICATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Between two checks of the group, each of which opens a connection per process.
const GROUP_POLL_INTERVAL: Duration = Duration::from_millis(50);

const CONFIG_FILE: &str = "sentinel.conf";
/// Where a sentinel writes, and how it shows it is ready.
const SENTINEL: Kind = Kind {
    label: "sentinel",
    log_file: "sentinel.log",
    stdio_file: "sentinel.stdio",
    // Logged once the sentinel has bound its port and loaded its configuration (Redis 7.0 logs
    // no "Ready to accept connections" in sentinel mode).
    ready_line: "Sentinel ID is",
    mode: Some("--sentinel"),
    ping_replies: &[b"+PONG"],
};
const LOCALHOST: &str = "127.0.0.1";

/// A Redis Sentinel process owned by a test (`redis-server <config> --sentinel`).
///
/// It listens on 127.0.0.1 only, on a port chosen free at start, with its configuration file
/// (which the sentinel rewrites as it learns), its working directory and its log in a temporary
/// directory. Dropping the value kills the process with `SIGKILL`, reaps it and removes the
/// directory. Started by [`SentinelGroup::start`], reached through
/// [`SentinelGroup::sentinels`].
pub struct SentinelProcess {
    port: u16,
    pid: u32,
    dir: TempDir,
    /// `None` once killed.
    child: Mutex<Option<Child>>,
}

impl SentinelProcess {
    /// Starts a sentinel monitoring `127.0.0.1:master_port` as `service`, on a free port, and
    /// waits until it answers `PING`. Retries on a fresh port when the chosen one was taken
    /// before the sentinel could bind it.
    fn start(
        binary: &Path,
        service: &str,
        master_port: u16,
        quorum: usize,
        auth_pass: Option<&str>,
    ) -> io::Result<SentinelProcess> {
        let dir = tempfile::Builder::new()
            .prefix("redfour-sentinel-")
            .tempdir()?;
        let (port, child) = SENTINEL.start(dir.path(), None, |port| {
            // A fresh file on every attempt: a failed sentinel may have rewritten the last one.
            let mut config = config(port, dir.path(), service, master_port, quorum)?;
            if let Some(password) = auth_pass {
                config.push_str(&format!("sentinel auth-pass {service} {password}\n"));
            }
            fs::write(dir.path().join(CONFIG_FILE), config)?;
            // The configuration file must be the first argument; `SENTINEL.mode` comes last.
            let mut command = Command::new(binary);
            command
                .arg(dir.path().join(CONFIG_FILE))
                .current_dir(dir.path());
            Ok(command)
        })?;
        Ok(SentinelProcess {
            port,
            pid: child.id(),
            dir,
            child: Mutex::new(Some(child)),
        })
    }

    /// The TCP port the sentinel listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT/`, the form a Sentinel-aware client takes.
    pub fn url(&self) -> String {
        format!("redis://{LOCALHOST}:{}/", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The temporary directory holding the sentinel's configuration file and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The configuration file, as the sentinel last rewrote it (it records its id, epochs, and
    /// the replicas and sentinels it found).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join(CONFIG_FILE)
    }

    /// The sentinel's log (its `+sdown`, `+odown`, `+switch-master`, ... events), and its
    /// stdout/stderr if not empty, for assertion messages.
    pub fn log(&self) -> String {
        SENTINEL.log(self.dir.path())
    }

    /// Whether the sentinel process is alive.
    pub fn is_running(&self) -> bool {
        match self.child().as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Runs one command, e.g. `&["SENTINEL", "MASTER", "redfour-test"]`, on a new connection
    /// with 5-second timeouts, and returns the reply.
    ///
    /// # Errors
    ///
    /// The connection failed or the sentinel replied with an error.
    ///
    /// # Panics
    ///
    /// Panics if `args` is empty.
    pub fn try_cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        self.query(args)
    }

    /// Runs one command on a new connection and returns the reply; see
    /// [`try_cmd`](Self::try_cmd).
    ///
    /// # Panics
    ///
    /// Panics if `args` is empty, the connection fails or the sentinel replies with an error;
    /// the message includes the sentinel log.
    pub fn cmd(&self, args: &[&str]) -> redis::Value {
        self.try_cmd(args).unwrap_or_else(|err| {
            panic!("{args:?} failed on {}: {err}\n{}", self.url(), self.log())
        })
    }

    fn query<T: redis::FromRedisValue>(&self, args: &[&str]) -> redis::RedisResult<T> {
        query(&mut self.connection()?, args)
    }

    /// A connection with timeouts, so a wedged sentinel fails the test instead of hanging it.
    fn connection(&self) -> redis::RedisResult<redis::Connection> {
        let client = redis::Client::open(self.url())?;
        let conn = client.get_connection_with_timeout(ADMIN_TIMEOUT)?;
        conn.set_read_timeout(Some(ADMIN_TIMEOUT))?;
        conn.set_write_timeout(Some(ADMIN_TIMEOUT))?;
        Ok(conn)
    }

    fn child(&self) -> MutexGuard<'_, Option<Child>> {
        // A panic while holding the lock cannot leave the `Option` inconsistent.
        self.child.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child().take() {
            kill_and_reap(child);
        }
    }
}

impl fmt::Debug for SentinelProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelProcess")
            .field("port", &self.port)
            .field("pid", &self.pid)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

/// A master, its replicas and the Redis Sentinel processes watching them, owned by a test.
///
/// The data nodes are [`RedisServer`]s: index 0 starts as the master, the others as its
/// replicas, all with `--repl-diskless-sync-delay 0` so full syncs start at once. Every sentinel
/// monitors the master as [`service`](Self::service) with a quorum of a majority of the
/// sentinels, `down-after-milliseconds 1000` and `failover-timeout 5000`, so an automatic
/// failover takes a few seconds.
///
/// Roles move: after a failover the master is another index. [`master_index`](Self::master_index)
/// and [`master_addr`](Self::master_addr) ask the sentinels (and the nodes) each time.
/// Methods that wait poll the sentinels and the nodes with a deadline, and panic with the
/// reason and every process's log ([`logs`](Self::logs)) when it passes.
///
/// Dropping the group kills the sentinels first, then the data nodes, with `SIGKILL`.
pub struct SentinelGroup {
    // Declared first so they are dropped first: no sentinel sees the data nodes die.
    sentinels: Vec<SentinelProcess>,
    servers: Vec<RedisServer>,
    quorum: usize,
}

/// A sentinel's answers about the master, parsed.
type Fields = HashMap<String, String>;

impl SentinelGroup {
    /// Starts a master, `replicas` replicas of it and `sentinels` sentinels, and returns once
    /// the group could fail over: every replica's link to the master is up, and every sentinel
    /// names the master, knows every replica and sees it connected, and knows every other
    /// sentinel (see [`wait_settled`](Self::wait_settled)). Takes about 2 seconds with several
    /// sentinels: they find one another through hello messages sent every 2 seconds.
    ///
    /// # Panics
    ///
    /// Panics if `sentinels` is 0, if a process cannot be started, or if the group does not
    /// settle within 45 seconds; the message includes the logs.
    pub fn start(replicas: usize, sentinels: usize) -> SentinelGroup {
        SentinelGroup::start_inner(replicas, sentinels, None)
    }

    /// As [`start`](Self::start), with data nodes that require `password` (`requirepass`, and
    /// `masterauth` for their replication) and sentinels told it (`sentinel auth-pass`); the
    /// sentinels themselves need none. The kit's own commands to the data nodes authenticate.
    ///
    /// # Panics
    ///
    /// As [`start`](Self::start); also if `password` contains whitespace or quotes.
    pub fn start_with_password(replicas: usize, sentinels: usize, password: &str) -> SentinelGroup {
        assert!(
            !password.is_empty() && !password.contains(|c: char| c.is_whitespace() || c == '"'),
            "the test password must be one plain word"
        );
        SentinelGroup::start_inner(replicas, sentinels, Some(password))
    }

    fn start_inner(replicas: usize, sentinels: usize, password: Option<&str>) -> SentinelGroup {
        assert!(sentinels > 0, "a SentinelGroup needs at least one sentinel");
        let binary = which_redis_server();
        let mut node_args = NODE_ARGS.to_vec();
        if let Some(password) = password {
            node_args.extend(["--requirepass", password, "--masterauth", password]);
        }
        let master = RedisServer::start_with_args(&node_args);
        let master_port = master.port().to_string();
        let mut replica_args = node_args.clone();
        replica_args.extend(["--replicaof", LOCALHOST, &master_port]);
        let mut group = SentinelGroup {
            sentinels: Vec::with_capacity(sentinels),
            servers: vec![master],
            quorum: sentinels / 2 + 1,
        };
        for _ in 0..replicas {
            group
                .servers
                .push(RedisServer::start_with_args(&replica_args));
        }
        // A sentinel learns the replicas from the master's INFO, which it asks for at once and
        // then every 10 seconds: the replicas must be listed before the first one.
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        group.poll_or_panic("the replicas to sync with the master", deadline, || {
            group.check_replication(0)
        });
        for _ in 0..sentinels {
            match SentinelProcess::start(
                &binary,
                SERVICE,
                group.servers[0].port(),
                group.quorum,
                password,
            ) {
                Ok(sentinel) => group.sentinels.push(sentinel),
                Err(err) => group.fail("cannot start a sentinel", &err.to_string()),
            }
        }
        group.poll_or_panic(
            "the sentinels to discover the group",
            deadline,
            || match group.check_settled()? {
                0 => Ok(()),
                other => Err(format!("the sentinels name data node {other}, not 0")),
            },
        );
        group
    }

    /// The name the sentinels monitor the master under: `"redfour-test"`.
    pub fn service(&self) -> &str {
        SERVICE
    }

    /// The sentinels' quorum: a majority of them.
    pub fn quorum(&self) -> usize {
        self.quorum
    }

    /// `redis://127.0.0.1:PORT/` of every sentinel, in start order.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(SentinelProcess::url).collect()
    }

    /// The sentinel processes, in start order.
    pub fn sentinels(&self) -> &[SentinelProcess] {
        &self.sentinels
    }

    /// The data nodes: index 0 was the master at start, the others its replicas.
    pub fn servers(&self) -> &[RedisServer] {
        &self.servers
    }

    /// The master's address as the sentinels report it (`SENTINEL GET-MASTER-ADDR-BY-NAME`),
    /// e.g. `("127.0.0.1", 40123)`. Waits until every sentinel names the same address.
    ///
    /// # Panics
    ///
    /// Panics if they still disagree after 30 seconds (the message lists each one's answer and
    /// the logs).
    pub fn master_addr(&self) -> (String, u16) {
        let deadline = Instant::now() + AGREE_TIMEOUT;
        self.poll_or_panic("the sentinels to agree on the master", deadline, || {
            self.agreed_addr()
        })
    }

    /// The index in [`servers`](Self::servers) of the master: the data node every sentinel
    /// names and which reports `role:master`. Waits until both hold.
    ///
    /// # Panics
    ///
    /// Panics if they do not within 30 seconds, e.g. because the named master is stopped and
    /// no failover happened; the message includes the logs.
    pub fn master_index(&self) -> usize {
        let deadline = Instant::now() + AGREE_TIMEOUT;
        self.poll_or_panic("a master named by the sentinels", deadline, || {
            self.named_running_master()
        })
    }

    /// The current master, as [`master_index`](Self::master_index) finds it.
    ///
    /// # Panics
    ///
    /// As [`master_index`](Self::master_index).
    pub fn master(&self) -> &RedisServer {
        &self.servers[self.master_index()]
    }

    /// Asks a sentinel for a failover (`SENTINEL FAILOVER`) and waits until it is complete:
    /// every sentinel names another data node, that node reports `role:master`, and the group
    /// has [settled](Self::wait_settled) around it: every running node, the old master
    /// included, is its replica with the link up. Returns the new master's index.
    ///
    /// Waits for a settled group first. Takes about 11 seconds: the promotion takes one, then
    /// the sentinels let the old master report `role:master` for 8 seconds before they turn it
    /// into a replica, on their next `INFO` of it (every 10 seconds). As in production, writes
    /// are lost if the promoted replica had not received them, or if the old master accepted
    /// them in the meantime (its resync discards them): call
    /// [`wait_replicated`](Self::wait_replicated) first when a test needs its writes kept.
    ///
    /// # Panics
    ///
    /// Panics if no replica is running, or if the failover is not complete within 45 seconds;
    /// the message includes the logs.
    pub fn failover(&self) -> usize {
        let old = self.wait_settled();
        if self.running_replicas(old).next().is_none() {
            self.fail("cannot fail over", "no replica is running");
        }
        let deadline = Instant::now() + FAILOVER_WAIT;
        let sentinel = &self.sentinels[0];
        self.poll_or_panic("the sentinel to accept SENTINEL FAILOVER", deadline, || {
            match sentinel.try_cmd(&["SENTINEL", "FAILOVER", SERVICE]) {
                Ok(_) => Ok(()),
                // The group was settled, so the failover in progress is ours: an earlier
                // attempt whose reply was lost.
                Err(err) if err.code() == Some("INPROG") => Ok(()),
                // NOGOODSLAVE: the sentinel's view of the replicas is momentarily stale.
                Err(err) => Err(format!(
                    "SENTINEL FAILOVER on sentinel :{} failed: {err}",
                    sentinel.port()
                )),
            }
        });
        let new = self.poll_or_panic("the sentinels to name a new master", deadline, || {
            self.new_master(old)
        });
        self.poll_or_panic(
            "the group to settle after the failover",
            deadline,
            || match self.check_settled()? {
                master if master == new => Ok(()),
                other => Err(format!(
                    "the sentinels name data node {other}, not the new master {new}"
                )),
            },
        );
        new
    }

    /// Stops (`SIGKILL`) the current master, found with [`master_index`](Self::master_index),
    /// and returns its index. Its port stays reserved for
    /// [`restart_server`](Self::restart_server). Follow with
    /// [`wait_for_new_master`](Self::wait_for_new_master).
    ///
    /// # Panics
    ///
    /// As [`master_index`](Self::master_index).
    pub fn kill_master(&mut self) -> usize {
        let master = self.master_index();
        self.servers[master].stop();
        master
    }

    /// Waits until every sentinel names the same data node other than `old`, and that node
    /// reports `role:master`; returns its index. The other replicas may not follow it yet: call
    /// [`wait_settled`](Self::wait_settled) for that.
    ///
    /// After [`kill_master`](Self::kill_master) this takes a few seconds: 1 second for the
    /// sentinels to find the master down, then an election and the promotion.
    ///
    /// # Panics
    ///
    /// Panics if `old` is not an index of [`servers`](Self::servers), or if there is no such
    /// master within 45 seconds; the message includes the logs.
    pub fn wait_for_new_master(&self, old: usize) -> usize {
        assert!(
            old < self.servers.len(),
            "data node {old} does not exist; there are {}",
            self.servers.len()
        );
        let deadline = Instant::now() + FAILOVER_WAIT;
        self.poll_or_panic("the sentinels to name a new master", deadline, || {
            self.new_master(old)
        })
    }

    /// Restarts data node `i` on its port (stopping it first if it runs), with its start
    /// arguments and an empty data set, then waits until the group has
    /// [settled](Self::wait_settled), which includes node `i` being a replica of the master with
    /// its link up and its data synced.
    ///
    /// The node comes back as it started: node 0 as a master, the others as replicas of node
    /// 0's port. If that is not the master any more, the sentinels re-point it once it has
    /// stayed up and kept its role a while (8 seconds for a master, `failover-timeout`, 5
    /// seconds, for a replica), on their next `INFO` of it: about 11 seconds in all. Restarting
    /// the node the sentinels still name as master (before a failover happened) gives a master
    /// with an empty data set.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range, if the node cannot be restarted, or if the group does not
    /// settle within 45 seconds; the message includes the logs.
    pub fn restart_server(&mut self, i: usize) {
        assert!(
            i < self.servers.len(),
            "data node {i} does not exist; there are {}",
            self.servers.len()
        );
        self.servers[i].restart();
        self.wait_settled();
    }

    /// Waits until the group is settled, and returns the master's index. Settled means: every
    /// sentinel names the same data node, which reports `role:master` and lists every other
    /// running node as its replica; each of those reports `role:slave` of it with
    /// `master_link_status:up`; and every sentinel flags the master just `master` (no failover
    /// in progress), knows each of those replicas and sees it connected (flags just `slave`),
    /// and sees every other sentinel connected. Stopped nodes are left out. This is when a new
    /// failover can start.
    ///
    /// A sentinel's other fields about a replica (`master-link-status`, `master-port`,
    /// `role-reported`) are not waited for: they come from the replica's `INFO`, which
    /// sentinels refresh only every 10 seconds.
    ///
    /// # Panics
    ///
    /// Panics if the group does not settle within 45 seconds; the message gives the last
    /// unmet condition and the logs.
    pub fn wait_settled(&self) -> usize {
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        self.poll_or_panic("the group to settle", deadline, || self.check_settled())
    }

    /// Waits until every running replica has processed everything the master had in its
    /// replication stream when this was called (`slave_repl_offset` at least the master's
    /// `master_repl_offset`), so a write acknowledged before the call is readable on every
    /// replica and survives a failover. Stopped nodes are left out.
    ///
    /// # Panics
    ///
    /// Panics if the master cannot be found (see [`master_index`](Self::master_index)) or a
    /// replica does not catch up within 30 seconds; the message includes the logs.
    pub fn wait_replicated(&self) {
        let master = self.master_index();
        let offset = self
            .replication_info(master)
            .and_then(|info| field_u64(&info, "master_repl_offset", master))
            .unwrap_or_else(|reason| self.fail("cannot read the master's offset", &reason));
        let deadline = Instant::now() + REPLICATION_TIMEOUT;
        self.poll_or_panic(
            &format!("the replicas to reach offset {offset} of master {master}"),
            deadline,
            || {
                for i in self.running_replicas(master) {
                    let info = self.check_replica(i, master)?;
                    let processed = field_u64(&info, "slave_repl_offset", i)?;
                    if processed < offset {
                        return Err(format!("data node {i} is at offset {processed}"));
                    }
                }
                Ok(())
            },
        );
    }

    /// The logs of every sentinel and every data node, each under a header naming it, for
    /// assertion messages. The sentinels come first: their events (`+sdown`, `+switch-master`,
    /// `+convert-to-slave`…) explain a group's state, and an output cut short keeps its start.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for (i, sentinel) in self.sentinels.iter().enumerate() {
            let _ = writeln!(text, "===== sentinel {i} (port {}) =====", sentinel.port());
            text.push_str(&sentinel.log());
            text.push('\n');
        }
        for (i, server) in self.servers.iter().enumerate() {
            let state = if server.is_running() { "" } else { ", stopped" };
            let _ = writeln!(
                text,
                "===== data node {i} (port {}{state}) =====",
                server.port()
            );
            text.push_str(&server.log());
            text.push('\n');
        }
        text
    }

    /// Calls `check` until it succeeds or `deadline` passes; then panics with `what`, the last
    /// reason `check` gave and the logs.
    fn poll_or_panic<T>(
        &self,
        what: &str,
        deadline: Instant,
        mut check: impl FnMut() -> Result<T, String>,
    ) -> T {
        let started = Instant::now();
        loop {
            let reason = match check() {
                Ok(value) => return value,
                Err(reason) => reason,
            };
            let now = Instant::now();
            if now >= deadline {
                self.fail(
                    &format!(
                        "gave up waiting for {what} after {:.1?}",
                        now.duration_since(started)
                    ),
                    &format!("last check: {reason}"),
                );
            }
            std::thread::sleep(GROUP_POLL_INTERVAL.min(deadline - now));
        }
    }

    fn fail(&self, what: &str, reason: &str) -> ! {
        panic!("SentinelGroup: {what}: {reason}\n{}", self.logs())
    }

    /// Every running data node but `master`.
    fn running_replicas(&self, master: usize) -> impl Iterator<Item = usize> + '_ {
        (0..self.servers.len()).filter(move |&i| i != master && self.servers[i].is_running())
    }

    /// `INFO replication` of data node `i`, as fields.
    fn replication_info(&self, i: usize) -> Result<Fields, String> {
        let server = &self.servers[i];
        if !server.is_running() {
            return Err(format!("data node {i} (port {}) is stopped", server.port()));
        }
        let reply = server
            .try_cmd(&["INFO", "replication"])
            .map_err(|err| format!("INFO on data node {i} failed: {err}"))?;
        let text: String = redis::from_redis_value(reply)
            .map_err(|err| format!("INFO on data node {i}: unexpected reply: {err}"))?;
        Ok(parse_info(&text))
    }

    /// Checks that node `master` reports `role:master`.
    fn check_master(&self, master: usize) -> Result<(), String> {
        let info = self.replication_info(master)?;
        match info.get("role").map(String::as_str) {
            Some("master") => Ok(()),
            role => Err(format!(
                "data node {master} reports role {role:?}, not master"
            )),
        }
    }

    /// Checks that node `i` reports being a replica of node `master` with the link up; returns
    /// its `INFO replication`.
    fn check_replica(&self, i: usize, master: usize) -> Result<Fields, String> {
        let info = self.replication_info(i)?;
        let master_port = self.servers[master].port().to_string();
        let get = |key: &str| info.get(key).map(String::as_str);
        if get("role") != Some("slave")
            || get("master_port") != Some(master_port.as_str())
            || get("master_link_status") != Some("up")
        {
            return Err(format!(
                "data node {i} reports role {:?}, master port {:?}, link {:?}; expected a \
                 replica of data node {master} (port {master_port}) with the link up",
                get("role"),
                get("master_port"),
                get("master_link_status"),
            ));
        }
        Ok(info)
    }

    /// Checks that node `master` is a master and every other running node its replica, with
    /// the master listing each one.
    fn check_replication(&self, master: usize) -> Result<(), String> {
        let info = self.replication_info(master)?;
        for i in self.running_replicas(master) {
            self.check_replica(i, master)?;
            let listed = format!("port={},", self.servers[i].port());
            if !info
                .iter()
                .any(|(key, value)| key.starts_with("slave") && value.contains(&listed))
            {
                return Err(format!("data node {master} does not list data node {i}"));
            }
        }
        Ok(())
    }

    /// The master address each sentinel reports, in order.
    fn named_addrs(&self) -> Result<Vec<(String, u16)>, String> {
        self.sentinels
            .iter()
            .map(|sentinel| {
                sentinel
                    .query::<Option<(String, u16)>>(&[
                        "SENTINEL",
                        "GET-MASTER-ADDR-BY-NAME",
                        SERVICE,
                    ])
                    .map_err(|err| {
                        format!(
                            "GET-MASTER-ADDR-BY-NAME on sentinel :{}: {err}",
                            sentinel.port()
                        )
                    })?
                    .ok_or_else(|| format!("sentinel :{} knows no master", sentinel.port()))
            })
            .collect()
    }

    /// The master address, if every sentinel reports the same one.
    fn agreed_addr(&self) -> Result<(String, u16), String> {
        let addrs = self.named_addrs()?;
        if addrs.windows(2).all(|pair| pair[0] == pair[1]) {
            return Ok(addrs[0].clone());
        }
        let answers: Vec<String> = self
            .sentinels
            .iter()
            .zip(&addrs)
            .map(|(sentinel, (host, port))| {
                format!("sentinel :{} names {host}:{port}", sentinel.port())
            })
            .collect();
        Err(format!("the sentinels disagree: {}", answers.join(", ")))
    }

    /// The index of the data node every sentinel names.
    fn named_master(&self) -> Result<usize, String> {
        let (host, port) = self.agreed_addr()?;
        self.servers
            .iter()
            .position(|server| host == LOCALHOST && server.port() == port)
            .ok_or_else(|| format!("the sentinels name {host}:{port}, which is no data node"))
    }

    /// The data node every sentinel names, if it reports `role:master`.
    fn named_running_master(&self) -> Result<usize, String> {
        let master = self.named_master()?;
        self.check_master(master)?;
        Ok(master)
    }

    /// The data node every sentinel names, if it is not `old` and reports `role:master`.
    fn new_master(&self, old: usize) -> Result<usize, String> {
        let master = self.named_master()?;
        if master == old {
            return Err(format!("the sentinels still name data node {old}"));
        }
        self.check_master(master)?;
        Ok(master)
    }

    /// The master's index if the group is settled (see [`wait_settled`](Self::wait_settled)),
    /// else what is not.
    fn check_settled(&self) -> Result<usize, String> {
        let master = self.named_running_master()?;
        self.check_replication(master)?;
        for sentinel in &self.sentinels {
            let who = format!("sentinel :{}", sentinel.port());
            let mut conn = sentinel
                .connection()
                .map_err(|err| format!("cannot connect to {who}: {err}"))?;
            let entry: Fields = query(&mut conn, &["SENTINEL", "MASTER", SERVICE])
                .map_err(|err| format!("SENTINEL MASTER on {who}: {err}"))?;
            let flags = entry.get("flags").map(String::as_str);
            if flags != Some("master") {
                return Err(format!("{who} flags the master {flags:?}"));
            }

            let others: Vec<Fields> = query(&mut conn, &["SENTINEL", "SENTINELS", SERVICE])
                .map_err(|err| format!("SENTINEL SENTINELS on {who}: {err}"))?;
            let connected = others
                .iter()
                .filter(|other| other.get("flags").map(String::as_str) == Some("sentinel"))
                .count();
            if connected != self.sentinels.len() - 1 {
                return Err(format!(
                    "{who} sees {connected} other sentinels connected, not {}",
                    self.sentinels.len() - 1
                ));
            }

            // Only the flags: the rest of a replica's entry (its role, master, link) comes from
            // its INFO, which a sentinel asks for every 10 seconds only, and a failover does not
            // read it (SENTINEL FAILOVER picks among connected replicas refreshed in the last
            // 30 seconds). The nodes themselves were checked above.
            let replicas: Vec<Fields> = query(&mut conn, &["SENTINEL", "REPLICAS", SERVICE])
                .map_err(|err| format!("SENTINEL REPLICAS on {who}: {err}"))?;
            for i in self.running_replicas(master) {
                let port = self.servers[i].port().to_string();
                let Some(replica) = replicas
                    .iter()
                    .find(|replica| replica.get("port") == Some(&port))
                else {
                    return Err(format!("{who} does not know data node {i} (port {port})"));
                };
                let flags = replica.get("flags").map(String::as_str);
                if flags != Some("slave") {
                    return Err(format!("{who} flags data node {i} {flags:?}"));
                }
            }
        }
        Ok(master)
    }
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        // Fields drop in declaration order anyway; this states the order.
        self.sentinels.clear();
        self.servers.clear();
    }
}

impl fmt::Debug for SentinelGroup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelGroup")
            .field("service", &SERVICE)
            .field("quorum", &self.quorum)
            .field("servers", &self.servers)
            .field("sentinels", &self.sentinels)
            .finish()
    }
}

fn query<T: redis::FromRedisValue>(
    conn: &mut redis::Connection,
    args: &[&str],
) -> redis::RedisResult<T> {
    assert!(!args.is_empty(), "a command needs at least its name");
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(conn)
}

/// `INFO` text as `field -> value`; section headers and blank lines are skipped.
fn parse_info(text: &str) -> Fields {
    text.lines()
        .filter_map(|line| line.trim_end().split_once(':'))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

fn field_u64(info: &Fields, key: &str, node: usize) -> Result<u64, String> {
    info.get(key)
        .and_then(|value| value.parse().ok())
        .ok_or_else(|| format!("data node {node} reports no numeric {key}"))
}

/// The sentinel's configuration file. It must be writable: the sentinel records what it learns
/// in it.
fn config(
    port: u16,
    dir: &Path,
    service: &str,
    master_port: u16,
    quorum: usize,
) -> io::Result<String> {
    let mut text = String::new();
    let mut line = |line: String| {
        text.push_str(&line);
        text.push('\n');
    };
    line(format!("port {port}"));
    line(format!("bind {LOCALHOST}"));
    line("daemonize no".to_owned());
    line(format!("dir {}", quote(dir)?));
    line(format!("logfile {}", quote(&dir.join(SENTINEL.log_file))?));
    line("loglevel notice".to_owned());
    line(format!(
        "sentinel monitor {service} {LOCALHOST} {master_port} {quorum}"
    ));
    line(format!(
        "sentinel down-after-milliseconds {service} {DOWN_AFTER_MS}"
    ));
    line(format!(
        "sentinel failover-timeout {service} {FAILOVER_TIMEOUT_MS}"
    ));
    line(format!("sentinel parallel-syncs {service} 1"));
    Ok(text)
}

/// `path` as a double-quoted configuration argument.
fn quote(path: &Path) -> io::Result<String> {
    let text = path.to_str().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{} is not UTF-8", path.display()),
        )
    })?;
    let mut quoted = String::from("\"");
    for c in text.chars() {
        if c == '"' || c == '\\' {
            quoted.push('\\');
        }
        quoted.push(c);
    }
    quoted.push('"');
    Ok(quoted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn info_is_parsed_into_fields() {
        let info = parse_info(
            "# Replication\r\nrole:slave\r\nmaster_port:6380\r\n\
             slave0:ip=127.0.0.1,port=6381,state=online\r\n\r\n",
        );
        assert_eq!(info.get("role").map(String::as_str), Some("slave"));
        assert_eq!(info.get("master_port").map(String::as_str), Some("6380"));
        assert_eq!(
            info.get("slave0").map(String::as_str),
            Some("ip=127.0.0.1,port=6381,state=online")
        );
        assert_eq!(info.len(), 3);
        assert_eq!(field_u64(&info, "master_port", 1), Ok(6380));
        assert!(field_u64(&info, "role", 1).is_err());
    }

    #[test]
    fn paths_are_quoted_for_the_config_file() {
        assert_eq!(
            quote(Path::new("/tmp/a b\"c\\d")).expect("UTF-8"),
            "\"/tmp/a b\\\"c\\\\d\""
        );
    }

    #[test]
    fn config_monitors_the_master() {
        let config = config(26000, Path::new("/tmp/x"), "svc", 7000, 2).expect("config");
        assert!(config.contains("port 26000\n"), "{config}");
        assert!(
            config.contains("sentinel monitor svc 127.0.0.1 7000 2\n"),
            "{config}"
        );
        let monitor = config.find("sentinel monitor").expect("monitor line");
        let down_after = config.find("down-after-milliseconds").expect("down-after");
        assert!(monitor < down_after, "options must follow the monitor line");
    }

    #[test]
    fn group_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<SentinelGroup>();
        assert_send_sync::<SentinelProcess>();
    }
}
