//! A Redis Cluster of `redis-server` child processes on free ports, killed on drop.

use std::fmt::Write as _;
use std::io;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::process::free_port;
use crate::server::RedisServer;

/// The number of hash slots of every Redis Cluster.
pub const CLUSTER_SLOTS: u16 = 16384;

/// The `cluster-node-timeout` of every node: how long a node may be unreachable before the
/// others flag it as failing (and, for a master with a replica, before an automatic failover
/// starts).
///
/// Two seconds rather than the minimum that works on one host: a node that does not answer the
/// cluster bus within this time is considered failing, and on a loaded 2-core CI machine a
/// 1-second stall of one process is rare but not unheard of; a spurious failover would break
/// tests that expect a stable topology. A killed master is still replaced in about 3 seconds
/// (this timeout, plus the replica's election delay of 0.5 to 1 second).
pub const NODE_TIMEOUT: Duration = Duration::from_secs(2);

/// How long cluster formation, failover, slot migration and recovery after a restart may take
/// before the kit gives up and panics. Generous: all of these normally take well under 5 seconds,
/// but CI machines are noisy.
const CONVERGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the cluster's state is sampled while waiting for it to converge. Each sample is a
/// few commands per node on cached connections, so this is cheap, but there is no point sampling
/// faster than the cluster bus (whose cron runs every 100 ms) changes anything.
const POLL_INTERVAL: Duration = Duration::from_millis(20);
/// Read, write and connect timeout of the kit's admin connections, so a wedged node fails the
/// test instead of hanging it.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Redis gives a manual failover 5 seconds (`CLUSTER_MF_TIMEOUT`) to complete; past this, a
/// replica that is still a replica has given up, and `CLUSTER FAILOVER` is sent again.
const FAILOVER_RETRY: Duration = Duration::from_secs(6);
/// How often a `CLUSTER MEET` is repeated for a node that the first node still does not know.
/// A handshake that does not complete within the node timeout is dropped by Redis.
const MEET_RETRY: Duration = Duration::from_secs(3);
/// Keys moved by one `MIGRATE` during a slot migration.
const MIGRATE_BATCH: usize = 100;
/// The `MIGRATE` timeout, in milliseconds, below [`ADMIN_TIMEOUT`].
const MIGRATE_TIMEOUT_MS: &str = "5000";
/// Cluster bus ports tried per node: each failure means the port chosen was taken before the
/// server bound it.
const BUS_PORT_ATTEMPTS: usize = 5;

/// A Redis Cluster of real `redis-server` processes owned by a test.
///
/// [`start`](Self::start) spawns the nodes as [`RedisServer`]s (127.0.0.1, free ports, no
/// persistence, a temporary directory each, killed on drop), assigns the 16384 hash slots evenly
/// to the masters, joins everything into one cluster and returns once every node agrees on it.
/// Nodes are numbered in start order: masters first (`0..masters`), then the replicas of master 0,
/// of master 1, and so on. The numbers stay with the processes; *roles* can change
/// ([`failover`](Self::failover), automatic failover after [`kill`](Self::kill)), so ask
/// [`master_indexes`](Self::master_indexes) and [`master_of_slot`](Self::master_of_slot) rather
/// than assuming.
///
/// Every method that changes the cluster waits until the change has converged: all running
/// nodes report `cluster_state:ok`, see each other as connected and healthy, agree on the
/// slot → master map and on who replicates whom, and every running replica has
/// `master_link_status:up` ([`wait_healthy`](Self::wait_healthy)). Failures panic with every
/// node's `CLUSTER NODES` and log.
///
/// Resharding is available in steps ([`begin_migration`](Self::begin_migration), then
/// [`Migration::move_keys`] and [`Migration::finish`]) so that a test can act while a slot is
/// half-moved and clients get `ASK` redirections, or in one call
/// ([`migrate_slot`](Self::migrate_slot)).
///
/// The kit's own commands go over one cached connection per node, so a test that counts client
/// connections (`CLIENT LIST`) may see one extra.
///
/// Nodes run with `--cluster-node-timeout` [`NODE_TIMEOUT`], `--cluster-replica-validity-factor
/// 0`, `--cluster-allow-replica-migration no` and `--repl-diskless-sync-delay 0`; see
/// [`start`](Self::start).
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
    /// Cluster node ids, which survive [`restart`](Self::restart) (they are in `nodes.conf`).
    ids: Vec<String>,
    /// One cached admin connection per node; `None` until first used or after an I/O error.
    conns: Vec<Mutex<Option<redis::Connection>>>,
}

/// A hash slot being moved from one master to another, from
/// [`RedisCluster::begin_migration`].
///
/// While it exists, the source master answers commands about keys it still holds and replies
/// `-ASK <slot> 127.0.0.1:<target port>` for keys it does not have; the target accepts commands
/// for the slot only right after `ASKING` and otherwise replies `-MOVED` to the source.
///
/// Dropping it without [`finish`](Self::finish) leaves the slot in that state.
#[must_use = "a slot stays half-migrated until Migration::finish is called"]
pub struct Migration<'a> {
    cluster: &'a RedisCluster,
    slot: u16,
    source: usize,
    target: usize,
}

impl RedisCluster {
    /// Starts `masters` masters with `replicas_per_master` replicas each and waits until the
    /// cluster is formed.
    ///
    /// Each node is a [`RedisServer`] started with `--cluster-enabled yes --cluster-config-file
    /// nodes.conf --cluster-node-timeout 2000 --appendonly no`, a cluster bus port of its own
    /// (`--cluster-port`: the default, port + 10000, would not exist for half of the ephemeral
    /// ports), and:
    ///
    /// - `--cluster-replica-validity-factor 0`: a replica may take over from a failed master
    ///   however long its replication link was down; otherwise a test that kills a master after
    ///   its replica's link was interrupted (say, by an earlier restart) may wait for a failover
    ///   that never comes.
    /// - `--cluster-allow-replica-migration no`: replicas stay with the master they were given,
    ///   and a master whose last slot is migrated away stays a master instead of becoming a
    ///   replica of the slot's new owner, so the topology only changes when a test asks for it.
    /// - `--repl-diskless-sync-delay 0`: a replica's first sync starts at once instead of after
    ///   the default 5 seconds.
    ///
    /// Masters get the slots in contiguous, even ranges (`CLUSTER ADDSLOTSRANGE`) and distinct
    /// config epochs (`CLUSTER SET-CONFIG-EPOCH`, as `redis-cli --cluster create` does, so no
    /// epoch collision has to be resolved), node 0 meets every other node (`CLUSTER MEET`) and
    /// each replica is given its master (`CLUSTER REPLICATE`) as soon as it knows it. Returns
    /// once every node reports `cluster_state:ok`, every node sees every other as connected and
    /// agrees on the slot map and the replication topology given here, and every replica has
    /// `master_link_status:up`.
    ///
    /// # Panics
    ///
    /// Panics if `masters` is 0 or more than 16384, if a node cannot be started, or if the cluster does not form
    /// within 30 seconds; the message includes every node's log.
    pub fn start(masters: usize, replicas_per_master: usize) -> RedisCluster {
        assert!(
            (1..=usize::from(CLUSTER_SLOTS)).contains(&masters),
            "a cluster needs between 1 and 16384 masters, not {masters}"
        );
        let count = masters * (1 + replicas_per_master);
        let nodes: Vec<RedisServer> = (0..count).map(|_| start_node()).collect();
        let mut cluster = RedisCluster {
            conns: nodes.iter().map(|_| Mutex::new(None)).collect(),
            nodes,
            ids: Vec::new(),
        };
        cluster.ids = (0..count)
            .map(|i| cluster.cmd_text(i, &["CLUSTER", "MYID"]))
            .collect();

        // Distinct epochs must be set while each node knows no other node.
        for i in 0..count {
            cluster.cmd(i, &["CLUSTER", "SET-CONFIG-EPOCH", &(i + 1).to_string()]);
        }
        let mut expected_slots = Vec::with_capacity(masters);
        for master in 0..masters {
            let (first, last) = slot_range(master, masters);
            cluster.cmd(
                master,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &first.to_string(),
                    &last.to_string(),
                ],
            );
            expected_slots.push((first, last, cluster.ids[master].clone()));
        }
        for other in 1..count {
            cluster.meet(other);
        }

        // replica index -> master index
        let expected_master = |replica: usize| (replica - masters) / replicas_per_master.max(1);
        let mut replicated = vec![false; count];
        let mut last_meet = Instant::now();
        cluster.wait_for("the cluster to form", |cluster, snapshot| {
            // Node 0 relays everyone to everyone; repeat a MEET whose handshake was dropped.
            if last_meet.elapsed() >= MEET_RETRY {
                if let Ok(view) = &snapshot.states[0] {
                    for other in 1..count {
                        if view.line(&cluster.ids[other]).is_none() {
                            cluster.meet(other);
                        }
                    }
                }
                last_meet = Instant::now();
            }
            for (replica, done) in replicated.iter_mut().enumerate().skip(masters) {
                if *done {
                    continue;
                }
                let master_id = &cluster.ids[expected_master(replica)];
                let known = match &snapshot.states[replica] {
                    Ok(view) => view
                        .line(master_id)
                        .is_some_and(|line| !line.in_handshake()),
                    Err(_) => false,
                };
                if known {
                    // The node can still refuse, e.g. while the master is in handshake on
                    // its side; it is retried on the next sample.
                    *done = cluster
                        .query::<redis::Value>(
                            replica,
                            redis::cmd("CLUSTER").arg("REPLICATE").arg(master_id),
                        )
                        .is_ok();
                }
            }
            if let Some(replica) = (masters..count).find(|replica| !replicated[*replica]) {
                return Err(format!("node {replica} has not been given its master yet"));
            }
            cluster.check_healthy(snapshot)?;
            let view = snapshot.first_view()?;
            if view.slot_map() != expected_slots {
                return Err(format!(
                    "slot map is {:?}, expected {expected_slots:?}",
                    view.slot_map()
                ));
            }
            for replica in masters..count {
                let master = expected_master(replica);
                let line = view.line(&cluster.ids[replica]);
                if line.and_then(|line| line.master_id.as_deref())
                    != Some(cluster.ids[master].as_str())
                {
                    return Err(format!(
                        "node {replica} is not yet a replica of node {master}"
                    ));
                }
            }
            Ok(())
        });
        cluster
    }

    /// Every node, in start order (masters first), stopped ones included.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// `redis://127.0.0.1:PORT/` of every node, in start order, stopped ones included; give them
    /// all to a cluster client as seeds.
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| format!("{}/", node.url()))
            .collect()
    }

    /// The cluster node id (40 hex characters) of node `i`; it survives
    /// [`restart`](Self::restart).
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn node_id(&self, i: usize) -> String {
        self.ids[i].clone()
    }

    /// The running nodes that are masters now, by their own account (`INFO replication`), in
    /// ascending order.
    ///
    /// # Panics
    ///
    /// Panics if a running node cannot be queried; the message includes its log.
    pub fn master_indexes(&self) -> Vec<usize> {
        self.running()
            .filter(|i| self.replication(*i).master)
            .collect()
    }

    /// The running nodes that are replicas now, by their own account (`INFO replication`), in
    /// ascending order.
    ///
    /// # Panics
    ///
    /// Panics if a running node cannot be queried; the message includes its log.
    pub fn replica_indexes(&self) -> Vec<usize> {
        self.running()
            .filter(|i| !self.replication(*i).master)
            .collect()
    }

    /// The master that node `i` replicates, per its own cluster view, or `None` if it is a
    /// master.
    ///
    /// # Panics
    ///
    /// Panics if node `i` is stopped or cannot be queried, or names a master that is not one of
    /// this cluster's nodes; the message includes the logs.
    pub fn master_of(&self, i: usize) -> Option<usize> {
        let view = self
            .view(i)
            .unwrap_or_else(|err| self.fail(&format!("cannot read node {i}'s view: {err}")));
        let line = view
            .myself()
            .unwrap_or_else(|| self.fail(&format!("node {i}'s CLUSTER NODES has no myself line")));
        line.master_id.as_deref().map(|id| self.index_of(id))
    }

    /// The hash slot of `key`, as `CLUSTER KEYSLOT` on a running node computes it (hash tags
    /// included: `{user}.a` and `{user}.b` share a slot).
    ///
    /// # Panics
    ///
    /// Panics if no node is running or the command fails; the message includes the logs.
    pub fn key_slot(&self, key: &str) -> u16 {
        let node = self.any_running();
        let slot: i64 = self
            .query(node, redis::cmd("CLUSTER").arg("KEYSLOT").arg(key))
            .unwrap_or_else(|err| self.fail(&format!("CLUSTER KEYSLOT {key:?} failed: {err}")));
        u16::try_from(slot)
            .unwrap_or_else(|_| self.fail(&format!("CLUSTER KEYSLOT {key:?} returned {slot}")))
    }

    /// The node that serves `slot`, as the first running node's cluster view has it.
    ///
    /// After [`start`](Self::start), [`failover`](Self::failover),
    /// [`migrate_slot`](Self::migrate_slot) or [`wait_healthy`](Self::wait_healthy), every
    /// running node has the same view.
    ///
    /// # Panics
    ///
    /// Panics if `slot` is 16384 or more, if no node is running, or if the slot has no owner in
    /// that view; the message includes the logs.
    pub fn master_of_slot(&self, slot: u16) -> usize {
        assert!(slot < CLUSTER_SLOTS, "slot {slot} out of range");
        let node = self.any_running();
        let view = self
            .view(node)
            .unwrap_or_else(|err| self.fail(&format!("cannot read node {node}'s view: {err}")));
        match view.owner(slot) {
            Some(id) => self.index_of(id),
            None => self.fail(&format!("slot {slot} has no owner in node {node}'s view")),
        }
    }

    /// Starts moving `slot` from its current master to master `to`: `CLUSTER SETSLOT slot
    /// IMPORTING` on the target, then `MIGRATING` on the source (in that order, so the target is
    /// ready for the `ASK` redirections the source starts giving). No key moves yet.
    ///
    /// # Panics
    ///
    /// Panics if `to` already serves the slot, is not a master, or a command fails; the message
    /// includes the logs.
    pub fn begin_migration(&self, slot: u16, to: usize) -> Migration<'_> {
        let source = self.master_of_slot(slot);
        assert!(
            source != to,
            "slot {slot} is already served by node {to}; nothing to migrate"
        );
        let slot_arg = slot.to_string();
        self.cmd(
            to,
            &[
                "CLUSTER",
                "SETSLOT",
                &slot_arg,
                "IMPORTING",
                &self.ids[source],
            ],
        );
        self.cmd(
            source,
            &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &self.ids[to]],
        );
        Migration {
            cluster: self,
            slot,
            source,
            target: to,
        }
    }

    /// Moves `slot` with its keys to master `to` and waits until every running node agrees:
    /// [`begin_migration`](Self::begin_migration), [`Migration::move_keys`] and
    /// [`Migration::finish`].
    ///
    /// # Panics
    ///
    /// As those three.
    pub fn migrate_slot(&self, slot: u16, to: usize) {
        let migration = self.begin_migration(slot, to);
        migration.move_keys();
        migration.finish();
    }

    /// Promotes replica `replica` with `CLUSTER FAILOVER` (a coordinated failover: the master
    /// stops writes until the replica has caught up, so nothing acknowledged is lost) and waits
    /// until it reports being a master, its old master reports being its replica with the link
    /// up, it serves the old master's slots, and every running node agrees on all of that with
    /// `cluster_state:ok`.
    ///
    /// First waits for the cluster to be [healthy](Self::wait_healthy), since Redis refuses a
    /// coordinated failover while the master is unreachable. `CLUSTER FAILOVER` is sent again if
    /// the replica is still a replica once Redis' 5-second manual failover timeout has passed.
    ///
    /// # Panics
    ///
    /// Panics if `replica` is not a replica or the failover does not complete within 30 seconds;
    /// the message includes every node's view and log.
    pub fn failover(&self, replica: usize) {
        self.wait_healthy();
        let Some(old_master) = self.master_of(replica) else {
            self.fail(&format!(
                "node {replica} is a master; failover needs a replica"
            ))
        };
        let old_slots: Vec<(u16, u16)> = {
            let view = self.view(replica).unwrap_or_else(|err| {
                self.fail(&format!("cannot read node {replica}'s view: {err}"))
            });
            view.line(&self.ids[old_master])
                .map(|line| line.slots.clone())
                .unwrap_or_default()
        };
        let mut sent = Instant::now();
        self.cmd(replica, &["CLUSTER", "FAILOVER"]);
        let (replica_id, old_master_id) = (&self.ids[replica], &self.ids[old_master]);
        self.wait_for(
            &format!("node {replica} to take over from node {old_master}"),
            |cluster, snapshot| {
                let own = snapshot.states[replica]
                    .as_ref()
                    .map_err(|err| format!("node {replica}: {err}"))?;
                if !own.replication.master {
                    if sent.elapsed() >= FAILOVER_RETRY {
                        // The previous attempt timed out; a refusal here shows in the next
                        // sample (or in the panic message).
                        let _ = cluster
                            .query::<redis::Value>(replica, redis::cmd("CLUSTER").arg("FAILOVER"));
                        sent = Instant::now();
                    }
                    return Err(format!("node {replica} is still a replica"));
                }
                let old = snapshot.states[old_master]
                    .as_ref()
                    .map_err(|err| format!("node {old_master}: {err}"))?;
                let old_line = old.myself();
                if old.replication.master
                    || old_line.and_then(|line| line.master_id.as_deref())
                        != Some(replica_id.as_str())
                {
                    return Err(format!(
                        "node {old_master} does not report being node {replica}'s replica yet"
                    ));
                }
                cluster.check_healthy(snapshot)?;
                let view = snapshot.first_view()?;
                let new_slots = view.line(replica_id).map(|line| line.slots.clone());
                if new_slots.as_ref() != Some(&old_slots) {
                    return Err(format!(
                        "node {replica} serves {new_slots:?}, expected node {old_master}'s \
                         former {old_slots:?} (now {:?})",
                        view.line(old_master_id).map(|line| &line.slots)
                    ));
                }
                Ok(())
            },
        );
    }

    /// Kills node `i` with `SIGKILL` ([`RedisServer::stop`]); its port, directory and
    /// `nodes.conf` are kept for [`restart`](Self::restart). Returns at once: the other nodes
    /// notice after [`NODE_TIMEOUT`], and if `i` was a master with a replica, the replica takes
    /// over about a second later. Call [`wait_healthy`](Self::wait_healthy) to wait for that.
    ///
    /// # Panics
    ///
    /// Panics if `i` is out of range.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].stop();
        *self.conn(i) = None;
    }

    /// Starts node `i` again on the same port, from its `nodes.conf` (same node id, same
    /// known peers, same slots), and waits until the cluster is [healthy](Self::wait_healthy)
    /// with it as a member.
    ///
    /// The node comes back with an empty data set (there is no persistence). A replica resyncs
    /// from its master. A master that was replaced while it was down is told so by its peers and
    /// becomes a replica of its replacement. A master that was *not* replaced (it had no replica)
    /// takes its slots back, empty: the keys it held are lost, as they would be for a real
    /// persistence-less master.
    ///
    /// # Panics
    ///
    /// Panics if the node cannot be restarted or the cluster does not become healthy within 30
    /// seconds; the message includes every node's view and log.
    pub fn restart(&mut self, i: usize) {
        *self.conn(i) = None;
        self.nodes[i].restart();
        let id = self.ids[i].clone();
        self.wait_for(&format!("node {i} to rejoin"), |cluster, snapshot| {
            let own = snapshot.states[i]
                .as_ref()
                .map_err(|err| format!("node {i}: {err}"))?;
            if own.myself().map(|line| line.id.as_str()) != Some(id.as_str()) {
                return Err(format!("node {i} came back with another node id"));
            }
            cluster.check_healthy(snapshot)
        });
    }

    /// Waits until the running nodes agree on a healthy cluster: each reports
    /// `cluster_state:ok`, sees every other running node as connected and not failing, knows no
    /// node that is not one of this cluster's, has the same slot → master map as the others,
    /// agrees with each running node on whether it is a master and which master it replicates,
    /// and, if it is a replica, has `master_link_status:up`; and every stopped node is flagged
    /// `fail` by every running node.
    ///
    /// Useful after [`kill`](Self::kill), to wait for the failure to be detected and, for a
    /// master with a replica, for the automatic failover. (A killed master without a replica
    /// leaves its slots unserved: the cluster reports `cluster_state:fail` and this panics.)
    ///
    /// # Panics
    ///
    /// Panics if that does not happen within 30 seconds; the message says what was still
    /// missing, and includes every node's view and log.
    pub fn wait_healthy(&self) {
        self.wait_for("the cluster to be healthy", |cluster, snapshot| {
            cluster.check_healthy(snapshot)
        });
    }

    /// The log of every node, each under a header with its index, port and node id; meant for
    /// failure messages.
    pub fn logs(&self) -> String {
        let mut text = String::new();
        for (i, node) in self.nodes.iter().enumerate() {
            let id = self.ids.get(i).map_or("?", String::as_str);
            let state = if node.is_running() {
                "running"
            } else {
                "stopped"
            };
            let _ = writeln!(
                text,
                "===== node {i}: port {}, id {id}, {state} =====\n{}",
                node.port(),
                node.log()
            );
        }
        text
    }

    // --- plumbing ---

    fn running(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.nodes.len()).filter(|i| self.nodes[*i].is_running())
    }

    fn any_running(&self) -> usize {
        self.running()
            .next()
            .unwrap_or_else(|| self.fail("no node of the cluster is running"))
    }

    fn index_of(&self, id: &str) -> usize {
        self.ids
            .iter()
            .position(|known| known == id)
            .unwrap_or_else(|| self.fail(&format!("node id {id} is not one of this cluster's")))
    }

    fn meet(&self, other: usize) {
        // Errors (a handshake with that address already in progress) are harmless: formation
        // is judged by the nodes' views, and the MEET is repeated if it got lost.
        let _ = self.query::<redis::Value>(
            0,
            redis::cmd("CLUSTER")
                .arg("MEET")
                .arg("127.0.0.1")
                .arg(self.nodes[other].port())
                .arg(bus_port(&self.nodes[other])),
        );
    }

    fn conn(&self, i: usize) -> MutexGuard<'_, Option<redis::Connection>> {
        // A panic while holding the lock leaves at worst a connection in an unknown state, and
        // any error on it drops it.
        self.conns[i].lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `cmd` on node `i` over its cached connection, opening a new one if needed. A
    /// connection that fails other than with an error reply is dropped, and the command is
    /// tried once more on a fresh one if the failed connection was an old one (it may have been
    /// closed by `CLIENT KILL` or a restart).
    fn query<T: redis::FromRedisValue>(&self, i: usize, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        self.with_conn(i, |conn| cmd.query(conn))
    }

    fn with_conn<T>(
        &self,
        i: usize,
        mut f: impl FnMut(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let mut cached = self.conn(i);
        let reused = cached.is_some();
        let mut conn = match cached.take() {
            Some(conn) => conn,
            None => admin_connection(&self.nodes[i])?,
        };
        match f(&mut conn) {
            Err(err) if !is_error_reply(&err) => {
                if !reused {
                    return Err(err);
                }
                let mut conn = admin_connection(&self.nodes[i])?;
                let result = f(&mut conn);
                if result.as_ref().map_or_else(is_error_reply, |_| true) {
                    *cached = Some(conn);
                }
                result
            }
            result => {
                *cached = Some(conn);
                result
            }
        }
    }

    /// Runs a command on node `i`, panicking with the logs if it fails.
    fn cmd(&self, i: usize, args: &[&str]) -> redis::Value {
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        self.query(i, &cmd).unwrap_or_else(|err| {
            self.fail(&format!(
                "{args:?} failed on node {i} (port {}): {err}",
                self.nodes[i].port()
            ))
        })
    }

    fn cmd_text(&self, i: usize, args: &[&str]) -> String {
        let value = self.cmd(i, args);
        redis::from_redis_value::<String>(value.clone())
            .unwrap_or_else(|_| self.fail(&format!("{args:?} on node {i} returned {value:?}")))
    }

    fn replication(&self, i: usize) -> Replication {
        let text: String = self
            .query(i, redis::cmd("INFO").arg("replication"))
            .unwrap_or_else(|err| {
                self.fail(&format!("INFO replication failed on node {i}: {err}"))
            });
        Replication::parse(&text)
    }

    fn view(&self, i: usize) -> Result<NodeState, String> {
        if !self.nodes[i].is_running() {
            return Err("stopped".to_owned());
        }
        let (info, nodes, replication): (String, String, String) = self
            .with_conn(i, |conn| {
                redis::pipe()
                    .cmd("CLUSTER")
                    .arg("INFO")
                    .cmd("CLUSTER")
                    .arg("NODES")
                    .cmd("INFO")
                    .arg("replication")
                    .query(conn)
            })
            .map_err(|err| err.to_string())?;
        Ok(NodeState {
            cluster_ok: info.lines().any(|line| line.trim() == "cluster_state:ok"),
            lines: nodes
                .lines()
                .filter(|line| !line.trim().is_empty())
                .map(NodeLine::parse)
                .collect::<Result<_, _>>()?,
            replication: Replication::parse(&replication),
            raw_nodes: nodes,
        })
    }

    fn snapshot(&self) -> Snapshot {
        Snapshot {
            states: (0..self.nodes.len()).map(|i| self.view(i)).collect(),
        }
    }

    /// Samples the cluster until `check` accepts a snapshot, or panics after
    /// [`CONVERGE_TIMEOUT`] with what `check` last objected to, every node's view and the logs.
    fn wait_for(&self, what: &str, mut check: impl FnMut(&Self, &Snapshot) -> Result<(), String>) {
        let start = Instant::now();
        loop {
            let snapshot = self.snapshot();
            let objection = match check(self, &snapshot) {
                Ok(()) => return,
                Err(objection) => objection,
            };
            if start.elapsed() >= CONVERGE_TIMEOUT {
                let mut views = String::new();
                for (i, state) in snapshot.states.iter().enumerate() {
                    let _ = match state {
                        Ok(state) => writeln!(
                            views,
                            "--- node {i} (cluster_state ok: {}) ---\n{}",
                            state.cluster_ok, state.raw_nodes
                        ),
                        Err(err) => writeln!(views, "--- node {i}: {err} ---"),
                    };
                }
                self.fail(&format!(
                    "timed out after {CONVERGE_TIMEOUT:?} waiting for {what}: {objection}\n\
                     CLUSTER NODES of every node:\n{views}"
                ));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// `Ok` if the running nodes agree on a healthy cluster; see [`Self::wait_healthy`].
    fn check_healthy(&self, snapshot: &Snapshot) -> Result<(), String> {
        let running: Vec<usize> = self.running().collect();
        let reference = snapshot.first_view()?.slot_map();
        let covered: u32 = reference
            .iter()
            .map(|(first, last, _)| u32::from(last - first) + 1)
            .sum();
        if covered != u32::from(CLUSTER_SLOTS) {
            return Err(format!("only {covered} slots are assigned: {reference:?}"));
        }
        for &i in &running {
            let state = snapshot.states[i]
                .as_ref()
                .map_err(|err| format!("node {i}: {err}"))?;
            if !state.cluster_ok {
                return Err(format!("node {i} does not report cluster_state:ok"));
            }
            for line in &state.lines {
                if !self.ids.contains(&line.id) {
                    return Err(format!(
                        "node {i} knows a node that is not ours: {} {:?}",
                        line.id, line.flags
                    ));
                }
            }
            for &j in &running {
                let line = state
                    .line(&self.ids[j])
                    .ok_or_else(|| format!("node {i} does not know node {j}"))?;
                if let Some(flag) = line.bad_flag() {
                    return Err(format!("node {i} flags node {j} as {flag}"));
                }
                if j != i && !line.connected {
                    return Err(format!("node {i} is not connected to node {j}"));
                }
                let own = snapshot.states[j]
                    .as_ref()
                    .map_err(|err| format!("node {j}: {err}"))?
                    .myself()
                    .ok_or_else(|| format!("node {j} has no myself line"))?;
                if (line.is_master(), &line.master_id) != (own.is_master(), &own.master_id) {
                    return Err(format!(
                        "node {i} thinks node {j} is {}, node {j} says it is {}",
                        line.role(),
                        own.role()
                    ));
                }
            }
            for j in (0..self.nodes.len()).filter(|j| !running.contains(j)) {
                // Until then, the others still count on the stopped node (a master's slots, a
                // replica's vote or promotion), so nothing has settled yet.
                let failed = state
                    .line(&self.ids[j])
                    .is_some_and(|line| line.flags.iter().any(|flag| flag == "fail"));
                if !failed {
                    return Err(format!(
                        "node {i} does not flag the stopped node {j} as failed yet"
                    ));
                }
            }
            if state.slot_map() != reference {
                return Err(format!(
                    "node {i} and the first running node disagree on the slot map: {:?} vs \
                     {reference:?}",
                    state.slot_map()
                ));
            }
            let own = state
                .myself()
                .ok_or_else(|| format!("node {i} has no myself line"))?;
            if own.is_master() != state.replication.master {
                return Err(format!(
                    "node {i}'s cluster view says {} but INFO says {}",
                    own.role(),
                    if state.replication.master {
                        "master"
                    } else {
                        "replica"
                    }
                ));
            }
            if !state.replication.master && !state.replication.link_up {
                return Err(format!("node {i}'s replication link is not up"));
            }
        }
        Ok(())
    }

    fn fail(&self, message: &str) -> ! {
        panic!("{message}\n{}", self.logs())
    }
}

impl Migration<'_> {
    /// The slot being migrated.
    pub fn slot(&self) -> u16 {
        self.slot
    }

    /// The node the slot is moving from.
    pub fn source(&self) -> usize {
        self.source
    }

    /// The node the slot is moving to.
    pub fn target(&self) -> usize {
        self.target
    }

    /// Moves every key of the slot from the source to the target: `CLUSTER GETKEYSINSLOT` and
    /// `MIGRATE 127.0.0.1 <target port> "" 0 5000 KEYS ...` in batches of 100, until the source
    /// holds no key of the slot, so keys that appear on the source meanwhile are moved too.
    /// Keys that expire in the meantime are simply not moved.
    ///
    /// # Panics
    ///
    /// Panics if a command fails (e.g. `BUSYKEY`: the target already has one of the keys) or
    /// the source still has keys after 30 seconds; the message includes the logs.
    pub fn move_keys(&self) {
        let cluster = self.cluster;
        let target_port = cluster.nodes[self.target].port();
        let start = Instant::now();
        loop {
            let keys: Vec<Vec<u8>> = cluster
                .query(
                    self.source,
                    redis::cmd("CLUSTER")
                        .arg("GETKEYSINSLOT")
                        .arg(self.slot)
                        .arg(MIGRATE_BATCH),
                )
                .unwrap_or_else(|err| {
                    cluster.fail(&format!(
                        "CLUSTER GETKEYSINSLOT {} failed on node {}: {err}",
                        self.slot, self.source
                    ))
                });
            if keys.is_empty() {
                return;
            }
            if start.elapsed() >= CONVERGE_TIMEOUT {
                cluster.fail(&format!(
                    "node {} still has keys of slot {} after {CONVERGE_TIMEOUT:?} of migration",
                    self.source, self.slot
                ));
            }
            let mut migrate = redis::cmd("MIGRATE");
            migrate
                .arg("127.0.0.1")
                .arg(target_port)
                .arg("")
                .arg(0)
                .arg(MIGRATE_TIMEOUT_MS)
                .arg("KEYS")
                .arg(&keys);
            // `OK`, or `NOKEY` if they all expired since GETKEYSINSLOT.
            let _: redis::Value = cluster.query(self.source, &migrate).unwrap_or_else(|err| {
                cluster.fail(&format!(
                    "MIGRATE of {} keys of slot {} from node {} to node {} failed: {err}",
                    keys.len(),
                    self.slot,
                    self.source,
                    self.target
                ))
            });
        }
    }

    /// Moves any keys left, assigns the slot to the target with `CLUSTER SETSLOT slot NODE
    /// <target id>` on the target (which bumps its config epoch so the change wins
    /// everywhere), the source and every other running master, then waits until every running
    /// node agrees that the target serves the slot, no node has it importing or migrating any
    /// more, and the cluster is [healthy](RedisCluster::wait_healthy).
    ///
    /// # Panics
    ///
    /// Panics if a command fails or the nodes do not agree within 30 seconds; the message
    /// includes every node's view and log.
    pub fn finish(self) {
        let cluster = self.cluster;
        self.move_keys();
        let slot = self.slot.to_string();
        let target_id = &cluster.ids[self.target];
        let setslot = ["CLUSTER", "SETSLOT", &slot, "NODE", target_id];
        cluster.cmd(self.target, &setslot);
        cluster.cmd(self.source, &setslot);
        for master in cluster.master_indexes() {
            if master != self.target && master != self.source {
                cluster.cmd(master, &setslot);
            }
        }
        cluster.wait_for(
            &format!(
                "every node to see slot {} on node {}",
                self.slot, self.target
            ),
            |cluster, snapshot| {
                for i in cluster.running() {
                    let state = snapshot.states[i]
                        .as_ref()
                        .map_err(|err| format!("node {i}: {err}"))?;
                    if state.owner(self.slot) != Some(target_id.as_str()) {
                        return Err(format!(
                            "node {i} sees slot {} on {:?}",
                            self.slot,
                            state.owner(self.slot)
                        ));
                    }
                    if state
                        .lines
                        .iter()
                        .any(|line| line.open_slots.contains(&self.slot))
                    {
                        return Err(format!(
                            "node {i} still has slot {} importing or migrating",
                            self.slot
                        ));
                    }
                }
                cluster.check_healthy(snapshot)
            },
        );
    }
}

impl std::fmt::Debug for RedisCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCluster")
            .field("nodes", &self.nodes)
            .field("ids", &self.ids)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Migration<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Migration")
            .field("slot", &self.slot)
            .field("source", &self.source)
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// Every node's state at one moment; `Err` for a stopped or unreachable node.
struct Snapshot {
    states: Vec<Result<NodeState, String>>,
}

impl Snapshot {
    /// The view of the first node that answered.
    fn first_view(&self) -> Result<&NodeState, String> {
        self.states
            .iter()
            .find_map(|state| state.as_ref().ok())
            .ok_or_else(|| "no node answered".to_owned())
    }
}

/// What one node says about the cluster and itself.
struct NodeState {
    cluster_ok: bool,
    lines: Vec<NodeLine>,
    replication: Replication,
    raw_nodes: String,
}

impl NodeState {
    fn line(&self, id: &str) -> Option<&NodeLine> {
        self.lines.iter().find(|line| line.id == id)
    }

    fn myself(&self) -> Option<&NodeLine> {
        self.lines
            .iter()
            .find(|line| line.flags.iter().any(|flag| flag == "myself"))
    }

    /// `(first, last, owner id)` for every slot range, sorted; each node's slots are listed as
    /// maximal ranges, so two identical assignments give identical maps.
    fn slot_map(&self) -> Vec<(u16, u16, String)> {
        let mut map: Vec<(u16, u16, String)> = self
            .lines
            .iter()
            .filter(|line| line.is_master())
            .flat_map(|line| {
                line.slots
                    .iter()
                    .map(|(first, last)| (*first, *last, line.id.clone()))
            })
            .collect();
        map.sort();
        map
    }

    fn owner(&self, slot: u16) -> Option<&str> {
        self.lines
            .iter()
            .filter(|line| line.is_master())
            .find(|line| {
                line.slots
                    .iter()
                    .any(|(first, last)| (*first..=*last).contains(&slot))
            })
            .map(|line| line.id.as_str())
    }
}

/// One line of `CLUSTER NODES`:
/// `<id> <ip:port@cport[,hostname]> <flags> <master> <ping-sent> <pong-recv> <config-epoch>
/// <link-state> <slot> <slot> ...`.
#[derive(Debug)]
struct NodeLine {
    id: String,
    flags: Vec<String>,
    /// `None` for a master (`-`).
    master_id: Option<String>,
    connected: bool,
    /// Owned slot ranges, inclusive.
    slots: Vec<(u16, u16)>,
    /// Slots shown as `[slot->-id]` (migrating) or `[slot-<-id]` (importing).
    open_slots: Vec<u16>,
}

impl NodeLine {
    fn parse(text: &str) -> Result<NodeLine, String> {
        let fields: Vec<&str> = text.split_whitespace().collect();
        if fields.len() < 8 {
            return Err(format!("cannot parse CLUSTER NODES line {text:?}"));
        }
        let bad_slot = |token: &str| format!("bad slot {token:?} in CLUSTER NODES line {text:?}");
        let mut slots = Vec::new();
        let mut open_slots = Vec::new();
        for token in &fields[8..] {
            if let Some(open) = token.strip_prefix('[') {
                let number = open.split('-').next().unwrap_or_default();
                open_slots.push(number.parse().map_err(|_| bad_slot(token))?);
            } else {
                let (first, last) = token.split_once('-').unwrap_or((token, token));
                let first: u16 = first.parse().map_err(|_| bad_slot(token))?;
                let last: u16 = last.parse().map_err(|_| bad_slot(token))?;
                slots.push((first, last));
            }
        }
        Ok(NodeLine {
            id: fields[0].to_owned(),
            flags: fields[2].split(',').map(str::to_owned).collect(),
            master_id: Some(fields[3])
                .filter(|master| *master != "-")
                .map(str::to_owned),
            connected: fields[7] == "connected",
            slots,
            open_slots,
        })
    }

    fn is_master(&self) -> bool {
        self.flags.iter().any(|flag| flag == "master")
    }

    fn role(&self) -> String {
        match &self.master_id {
            Some(master) if !self.is_master() => format!("a replica of {master}"),
            _ if self.is_master() => "a master".to_owned(),
            _ => format!("neither master nor replica ({:?})", self.flags),
        }
    }

    fn in_handshake(&self) -> bool {
        self.flags.iter().any(|flag| flag == "handshake")
    }

    /// A flag that means the node is not (yet) a healthy member.
    fn bad_flag(&self) -> Option<&str> {
        self.flags
            .iter()
            .map(String::as_str)
            .find(|flag| matches!(*flag, "fail" | "fail?" | "handshake" | "noaddr" | "noflags"))
    }
}

/// The parts of `INFO replication` the kit needs.
struct Replication {
    master: bool,
    link_up: bool,
}

impl Replication {
    fn parse(text: &str) -> Replication {
        let field = |name: &str| {
            text.lines()
                .find_map(|line| line.trim().strip_prefix(name)?.strip_prefix(':'))
        };
        Replication {
            master: field("role") == Some("master"),
            link_up: field("master_link_status") == Some("up"),
        }
    }
}

/// Slots of master `index` of `masters` (at most 16384): contiguous ranges of (almost) equal
/// size, together covering every slot once.
fn slot_range(index: usize, masters: usize) -> (u16, u16) {
    let total = usize::from(CLUSTER_SLOTS);
    let first = index * total / masters;
    let last = (index + 1) * total / masters - 1;
    let to_slot = |slot: usize| u16::try_from(slot).expect("a slot number is below 16384");
    (to_slot(first), to_slot(last))
}

/// Starts one cluster node with a cluster bus port of its own.
fn start_node() -> RedisServer {
    let timeout_ms = NODE_TIMEOUT.as_millis().to_string();
    let mut last_error = None;
    for _ in 0..BUS_PORT_ATTEMPTS {
        let bus_port = match free_port() {
            Ok(port) => port.to_string(),
            Err(err) => panic!("cannot find a free port for a cluster bus: {err}"),
        };
        let args = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            &timeout_ms,
            "--cluster-port",
            &bus_port,
            "--cluster-replica-validity-factor",
            "0",
            "--cluster-allow-replica-migration",
            "no",
            "--repl-diskless-sync-delay",
            "0",
            "--appendonly",
            "no",
        ];
        match RedisServer::try_start_with_args(&args) {
            Ok(server) => return server,
            // The bus port was taken before the server bound it (a lost client port is
            // retried inside `try_start_with_args`, but always with this bus port).
            Err(err) if err.kind() == io::ErrorKind::AddrInUse => last_error = Some(err),
            Err(err) => panic!("failed to start a cluster node: {err}"),
        }
    }
    match last_error {
        Some(err) => {
            panic!("failed to start a cluster node after {BUS_PORT_ATTEMPTS} bus ports: {err}")
        }
        None => unreachable!("BUS_PORT_ATTEMPTS is not 0"),
    }
}

/// The `--cluster-port` a node was started with.
fn bus_port(node: &RedisServer) -> u16 {
    let reply = node.cmd(&["CONFIG", "GET", "cluster-port"]);
    let pair: Vec<String> = redis::from_redis_value(reply.clone())
        .unwrap_or_else(|_| panic!("CONFIG GET cluster-port returned {reply:?}"));
    pair.get(1)
        .and_then(|port| port.parse().ok())
        .unwrap_or_else(|| panic!("CONFIG GET cluster-port returned {reply:?}"))
}

fn admin_connection(node: &RedisServer) -> redis::RedisResult<redis::Connection> {
    let conn = node.client().get_connection_with_timeout(ADMIN_TIMEOUT)?;
    conn.set_read_timeout(Some(ADMIN_TIMEOUT))?;
    conn.set_write_timeout(Some(ADMIN_TIMEOUT))?;
    Ok(conn)
}

/// Whether the server answered with an error, leaving the connection usable.
fn is_error_reply(err: &redis::RedisError) -> bool {
    matches!(
        err.kind(),
        redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_ranges_cover_every_slot_once() {
        for masters in 1..=7 {
            let ranges: Vec<(u16, u16)> = (0..masters).map(|i| slot_range(i, masters)).collect();
            assert_eq!(ranges[0].0, 0);
            assert_eq!(ranges[masters - 1].1, CLUSTER_SLOTS - 1);
            for pair in ranges.windows(2) {
                assert_eq!(pair[0].1 + 1, pair[1].0, "{ranges:?}");
            }
        }
        assert_eq!(slot_range(0, 3), (0, 5460));
        assert_eq!(slot_range(2, 3), (10922, 16383));
    }

    #[test]
    fn parses_cluster_nodes_lines() {
        let line = NodeLine::parse(
            "07c37dfeb235213a872192d90877d0cd55635b91 127.0.0.1:30004@31004,host replica,slave \
             e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 0 1426238317239 4 connected",
        )
        .expect("replica line");
        assert!(!line.is_master());
        assert_eq!(
            line.master_id.as_deref(),
            Some("e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca")
        );
        assert!(line.connected);
        assert!(line.slots.is_empty());

        let line = NodeLine::parse(
            "e7d1eecce10fd6bb5eb35b9f99a514335d9ba9ca 127.0.0.1:30001@31001 myself,master - 0 0 \
             1 connected 0-5460 5462 [5461-<-292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f] \
             [93->-292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f]",
        )
        .expect("master line");
        assert!(line.is_master());
        assert_eq!(line.master_id, None);
        assert_eq!(line.slots, vec![(0, 5460), (5462, 5462)]);
        assert_eq!(line.open_slots, vec![5461, 93]);
        assert_eq!(line.bad_flag(), None);

        let line = NodeLine::parse(
            "292f8b365bb7edb5e285caf0b7e6ddc7265d2f4f 127.0.0.1:30002@31002 master,fail - \
             1426238316232 1426238313228 2 disconnected",
        )
        .expect("failed line");
        assert_eq!(line.bad_flag(), Some("fail"));
        assert!(!line.connected);

        assert!(NodeLine::parse("garbage").is_err());
    }

    #[test]
    fn parses_info_replication() {
        let replica = Replication::parse(
            "# Replication\r\nrole:slave\r\nmaster_host:127.0.0.1\r\nmaster_port:1234\r\n\
             master_link_status:up\r\n",
        );
        assert!(!replica.master && replica.link_up);
        let master = Replication::parse("# Replication\r\nrole:master\r\nconnected_slaves:0\r\n");
        assert!(master.master && !master.link_up);
    }

    #[test]
    fn cluster_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RedisCluster>();
        assert_send_sync::<Migration<'_>>();
    }
}
