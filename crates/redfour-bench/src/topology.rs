//! `--topology`: the deployments the bench can measure besides one server, how the test kit
//! starts them, and where their clients and the bench's admin connections go.

use std::fmt;
use std::time::Duration;

use clap::ValueEnum;
use redfour_test::{RedisCluster, RedisServer, SentinelGroup};

use crate::scenarios::Scenario;
use crate::Result;

/// Masters of the cluster and of the Redlock deployment.
pub const MASTERS: usize = 3;

/// How long a Sentinel-side acquire waits for its replica's acknowledgement (`WAIT 1 …`).
/// `WAIT` returns as soon as the replica answers (a loopback round trip), so this only bounds
/// the worst case; it is generous because a late acknowledgement fails an acquire
/// (`NotReplicated`), and a loaded two-core machine can stall a replica for tens of ms.
pub const REPLICA_ACK_TIMEOUT: Duration = Duration::from_secs(1);

/// A Redis deployment the bench measures redfour on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Topology {
    /// One server (what the bench measures without `--topology`).
    Standalone,
    /// A Redis Cluster of 3 masters without replicas; redfour's cluster layout.
    Cluster,
    /// A master and 1 replica watched by 1 sentinel; acquires wait for the replica's
    /// acknowledgement (`replica_acks(1, …)`).
    Sentinel,
    /// 3 independent masters, Redlock quorum.
    Redlock,
}

impl Topology {
    /// The topology's name, as in `--topology` and the JSON `topology` field.
    pub fn name(self) -> &'static str {
        match self {
            Topology::Standalone => "standalone",
            Topology::Cluster => "cluster",
            Topology::Sentinel => "sentinel",
            Topology::Redlock => "redlock",
        }
    }

    /// What the test kit starts for it, for the run's header.
    pub fn setup(self) -> String {
        match self {
            Topology::Standalone => "one redis-server".to_owned(),
            Topology::Cluster => format!("Redis Cluster of {MASTERS} masters, no replicas"),
            Topology::Sentinel => format!(
                "a master, 1 replica, 1 sentinel; acquires wait for the replica (replica_acks(1, {} ms))",
                REPLICA_ACK_TIMEOUT.as_millis()
            ),
            Topology::Redlock => format!(
                "Redlock over {MASTERS} independent masters (no fair queue: the library has none for Redlock)"
            ),
        }
    }

    /// Whether `scenario` is measured on this topology. One server runs them all; the others
    /// run the lock paths whose cost the topology changes (uncontended, handoff, contention),
    /// and the cluster also `parallel`, whose locks spread over its masters. `rtt` (a `PING`
    /// is the same on every node), `server_cost` (one server's commandstats beside Node's
    /// scripts) and `waiters` (one client's memory, which the topology barely changes) stay
    /// on one server.
    pub fn measures(self, scenario: Scenario) -> bool {
        match self {
            Topology::Standalone => true,
            Topology::Cluster => matches!(
                scenario,
                Scenario::Uncontended
                    | Scenario::Parallel
                    | Scenario::Handoff
                    | Scenario::Contention
            ),
            Topology::Sentinel | Topology::Redlock => matches!(
                scenario,
                Scenario::Uncontended | Scenario::Handoff | Scenario::Contention
            ),
        }
    }

    /// The scenarios this topology measures, in running order.
    pub fn scenarios(self) -> Vec<Scenario> {
        Scenario::ALL
            .into_iter()
            .filter(|s| self.measures(*s))
            .collect()
    }
}

impl fmt::Display for Topology {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a deployment listens: what the bench's redfour clients are built from, and the
/// masters its admin connections and baselines reach.
#[derive(Debug, Clone)]
pub enum Endpoints {
    /// One server.
    Standalone {
        /// Its URL.
        url: String,
    },
    /// A Redis Cluster.
    Cluster {
        /// Every node, given to the cluster client as seeds.
        seeds: Vec<String>,
        /// The masters, which hold every key.
        masters: Vec<String>,
    },
    /// A Sentinel deployment.
    Sentinel {
        /// The sentinels' URLs.
        sentinels: Vec<String>,
        /// The name the sentinels monitor the master under.
        service: String,
        /// The master's URL when the run started (the bench fails no node over).
        master: String,
    },
    /// Independent masters for Redlock.
    Redlock {
        /// Every master's URL.
        masters: Vec<String>,
    },
}

impl Endpoints {
    /// The topology these endpoints belong to.
    pub fn topology(&self) -> Topology {
        match self {
            Endpoints::Standalone { .. } => Topology::Standalone,
            Endpoints::Cluster { .. } => Topology::Cluster,
            Endpoints::Sentinel { .. } => Topology::Sentinel,
            Endpoints::Redlock { .. } => Topology::Redlock,
        }
    }

    /// Every server that holds keys (never empty): the one server, the cluster's masters,
    /// the sentinels' master, the Redlock masters. Admin connections go to each.
    pub fn masters(&self) -> Vec<&str> {
        match self {
            Endpoints::Standalone { url } => vec![url.as_str()],
            Endpoints::Sentinel { master, .. } => vec![master.as_str()],
            Endpoints::Cluster { masters, .. } | Endpoints::Redlock { masters } => {
                masters.iter().map(String::as_str).collect()
            }
        }
    }

    /// A builder of a redfour client for this deployment, with the library's constructor
    /// for it (and, for Sentinel, `replica_acks(1, REPLICA_ACK_TIMEOUT)`).
    pub fn builder(&self) -> redfour::ClientBuilder {
        match self {
            Endpoints::Standalone { url } => redfour::Client::builder(url.clone()),
            Endpoints::Cluster { seeds, .. } => redfour::Client::cluster(seeds.clone()),
            Endpoints::Sentinel {
                sentinels, service, ..
            } => redfour::Client::sentinel(sentinels.clone(), service.clone())
                .replica_acks(1, REPLICA_ACK_TIMEOUT),
            Endpoints::Redlock { masters } => redfour::Client::redlock(masters.clone()),
        }
    }

    /// How many `EVALSHA`s the masters execute, all together, for one acquire attempt: one,
    /// but for Redlock, which sends the attempt to every master.
    pub fn evalsha_per_attempt(&self) -> u64 {
        match self {
            Endpoints::Redlock { masters } => masters.len() as u64,
            _ => 1,
        }
    }
}

/// The servers the test kit started for a topology other than one server; dropping it kills
/// them all.
pub enum Deployment {
    /// A Redis Cluster.
    Cluster(RedisCluster),
    /// A master, its replica and a sentinel.
    Sentinel(SentinelGroup),
    /// Independent masters.
    Redlock(Vec<RedisServer>),
}

impl Deployment {
    /// Every server's log (and the sentinel's), for the message of a scenario that failed on
    /// this deployment.
    pub fn logs(&self) -> String {
        match self {
            Deployment::Cluster(cluster) => cluster.logs(),
            Deployment::Sentinel(group) => group.logs(),
            Deployment::Redlock(servers) => servers
                .iter()
                .enumerate()
                .map(|(i, server)| format!("--- master {i} ---\n{}", server.log()))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }

    /// Starts `topology` through the test kit (on a blocking thread: the kit waits by
    /// polling), and returns it with its endpoints. `Ok(None)` for [`Topology::Standalone`],
    /// whose server the caller starts or is given.
    ///
    /// # Errors
    ///
    /// When a process cannot be started or the deployment does not form in time; the message
    /// carries the kit's explanation (with the servers' logs).
    pub async fn start(topology: Topology) -> Result<Option<(Deployment, Endpoints)>> {
        if topology == Topology::Standalone {
            return Ok(None);
        }
        // The kit reports failures by panicking (it is made for tests): the panic stays on the
        // blocking thread and comes back here as an error.
        let started = tokio::task::spawn_blocking(move || Deployment::start_blocking(topology))
            .await
            .map_err(|e| {
                let why = if e.is_panic() {
                    panic_message(e.into_panic())
                } else {
                    e.to_string()
                };
                format!("cannot start the {topology} deployment for the run: {why}")
            })?;
        Ok(Some(started.map_err(|e| {
            format!("cannot start the {topology} deployment for the run: {e}")
        })?))
    }

    fn start_blocking(topology: Topology) -> std::io::Result<(Deployment, Endpoints)> {
        Ok(match topology {
            Topology::Cluster => {
                let cluster = RedisCluster::start(MASTERS, 0);
                let masters = cluster
                    .master_indexes()
                    .into_iter()
                    .map(|i| format!("{}/", cluster.nodes()[i].url()))
                    .collect();
                let endpoints = Endpoints::Cluster {
                    seeds: cluster.seed_urls(),
                    masters,
                };
                (Deployment::Cluster(cluster), endpoints)
            }
            Topology::Sentinel => {
                // One sentinel is enough: clients ask it for the master once, and the bench
                // fails nothing over; more would only add processes to a two-core machine.
                let group = SentinelGroup::start(1, 1);
                let endpoints = Endpoints::Sentinel {
                    sentinels: group.sentinel_urls(),
                    service: group.service().to_owned(),
                    master: format!("{}/", group.master().url()),
                };
                (Deployment::Sentinel(group), endpoints)
            }
            Topology::Redlock => {
                let servers = (0..MASTERS)
                    .map(|_| RedisServer::try_start())
                    .collect::<std::io::Result<Vec<_>>>()?;
                let endpoints = Endpoints::Redlock {
                    masters: servers.iter().map(|s| format!("{}/", s.url())).collect(),
                };
                (Deployment::Redlock(servers), endpoints)
            }
            Topology::Standalone => {
                return Err(std::io::Error::other(
                    "one server is not a deployment of its own",
                ))
            }
        })
    }
}

/// The text of a panic payload (the kit panics with a `String` or a `&str`).
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload.downcast_ref::<&str>().map_or_else(
            || "a panic without a message".to_owned(),
            |s| (*s).to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_the_argument_parser() {
        for topology in [
            Topology::Standalone,
            Topology::Cluster,
            Topology::Sentinel,
            Topology::Redlock,
        ] {
            assert_eq!(
                Topology::from_str(topology.name(), false),
                Ok(topology),
                "{topology}"
            );
            assert_eq!(topology.to_string(), topology.name());
        }
        assert!(Topology::from_str("replicated", false).is_err());
    }

    #[test]
    fn each_topology_measures_what_issue_12_asks() {
        assert_eq!(Topology::Standalone.scenarios(), Scenario::ALL);
        assert_eq!(
            Topology::Cluster.scenarios(),
            [
                Scenario::Uncontended,
                Scenario::Parallel,
                Scenario::Handoff,
                Scenario::Contention
            ]
        );
        for t in [Topology::Sentinel, Topology::Redlock] {
            assert_eq!(
                t.scenarios(),
                [
                    Scenario::Uncontended,
                    Scenario::Handoff,
                    Scenario::Contention
                ]
            );
        }
    }

    #[test]
    fn endpoints_name_their_masters() {
        let cluster = Endpoints::Cluster {
            seeds: vec!["redis://127.0.0.1:1/".into(), "redis://127.0.0.1:2/".into()],
            masters: vec!["redis://127.0.0.1:1/".into()],
        };
        assert_eq!(cluster.topology(), Topology::Cluster);
        assert_eq!(cluster.masters(), ["redis://127.0.0.1:1/"]);
        assert_eq!(cluster.evalsha_per_attempt(), 1);
        let redlock = Endpoints::Redlock {
            masters: (1..=3).map(|p| format!("redis://127.0.0.1:{p}/")).collect(),
        };
        assert_eq!(redlock.masters().len(), 3);
        assert_eq!(redlock.evalsha_per_attempt(), 3);
        let sentinel = Endpoints::Sentinel {
            sentinels: vec!["redis://127.0.0.1:9/".into()],
            service: "svc".into(),
            master: "redis://127.0.0.1:5/".into(),
        };
        assert_eq!(sentinel.masters(), ["redis://127.0.0.1:5/"]);
        // The library accepts what the bench builds (no connection is made by build()).
        for endpoints in [cluster, redlock, sentinel] {
            endpoints
                .builder()
                .namespace("rfbench1-x")
                .build()
                .unwrap_or_else(|e| panic!("{endpoints:?}: {e}"));
        }
    }

    #[test]
    fn panic_messages_are_recovered() {
        assert_eq!(panic_message(Box::new("static")), "static");
        assert_eq!(panic_message(Box::new(String::from("owned"))), "owned");
        assert_eq!(panic_message(Box::new(3)), "a panic without a message");
    }
}
