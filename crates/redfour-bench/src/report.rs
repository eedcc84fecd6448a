//! What each scenario reports: one JSON object per line (the contract other tools read), a
//! human-readable table, and the comparison with the performance targets.

use serde::Serialize;

use crate::stats::round_to;
use crate::topology::Topology;

/// One scenario's result. Serialized with `scenario` first and exactly the fields listed in the
/// crate docs; fields marked `skip` feed the target checks and the plot only.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "scenario", rename_all = "lowercase")]
pub enum Report {
    /// Sequential `PING` on the library's connection stack.
    Rtt {
        /// Median round trip, µs.
        p50_us: f64,
        /// 99th percentile round trip, µs.
        p99_us: f64,
    },
    /// Sequential acquire + release on varying keys, redfour and the raw baseline.
    Uncontended {
        /// redfour cycles per second (median of the blocks).
        cycles_per_s: f64,
        /// Raw baseline cycles per second (median of the blocks); `None` (and not in the JSON)
        /// on a topology other than one server, which is compared with the standalone run's.
        #[serde(skip_serializing_if = "Option::is_none")]
        raw_cycles_per_s: Option<f64>,
        /// Server execution time per cycle, µs, (redfour, raw), medians of the blocks, from
        /// `INFO commandstats`; `None` when the server does not report it. Informational.
        #[serde(skip)]
        server_us: Option<(f64, f64)>,
    },
    /// Many tasks on one client, one key each.
    Parallel {
        /// How many tasks ran concurrently.
        tasks: usize,
        /// redfour cycles per second, all tasks together (median of the blocks).
        cycles_per_s: f64,
        /// Raw baseline cycles per second, all tasks together (median of the blocks); `None`
        /// (and not in the JSON) on a topology other than one server.
        #[serde(skip_serializing_if = "Option::is_none")]
        raw_cycles_per_s: Option<f64>,
        /// Node redfour's acquire and release scripts, the same tasks on the same stack, cycles
        /// per second (median of the blocks); `None` (and not in the JSON) on a topology other
        /// than one server.
        #[serde(skip_serializing_if = "Option::is_none")]
        node_cycles_per_s: Option<f64>,
        /// Server execution time per cycle, µs, (redfour, raw), as for `Uncontended`.
        #[serde(skip)]
        server_us: Option<(f64, f64)>,
        /// Server execution time per cycle of Node's scripts, µs. Informational.
        #[serde(skip)]
        node_server_us: Option<f64>,
    },
    /// Server execution time of each lock step, one kind of step at a time, from
    /// `INFO commandstats`: redfour's scripts beside Node redfour's.
    #[serde(rename = "server_cost")]
    ServerCost {
        /// redfour's acquire of a free lock, µs per step.
        acquire_us: f64,
        /// redfour's release with nobody queued, µs per step.
        release_us: f64,
        /// redfour's release handing the lock to a queued waiter, µs per step.
        handoff_us: f64,
        /// Node redfour's acquire of a free lock, µs per step.
        node_acquire_us: f64,
        /// Node redfour's release, µs per step.
        node_release_us: f64,
        /// The raw baseline's `SET NX PX` and compare-and-delete, and `PING`, µs per step.
        /// Informational.
        #[serde(skip)]
        floor_us: (f64, f64, f64),
        /// The targets' ratios (acquire / Node's acquire, release / Node's release, handing
        /// over / Node's release), each the median of the ratios within a round: a spell of
        /// load hits the batches of one round alike, so these are steadier than the ratios of
        /// the fields above. `None`: compute them from the fields.
        #[serde(skip)]
        round_ratios: Option<(f64, f64, f64)>,
    },
    /// From the holder's release call to the already-waiting waiter holding the lock.
    Handoff {
        /// Median handoff latency, µs.
        p50_us: f64,
        /// 99th percentile handoff latency, µs.
        p99_us: f64,
        /// Median `PING` round trip measured in the same run, µs.
        rtt_p50_us: f64,
        /// Median `PING` round trip when each `PING` follows the same idle pause as each
        /// release does (threads parked, as for a handoff), µs: the yardstick of the p50 target.
        idle_rtt_p50_us: f64,
        /// 99th percentile `PING` round trip of the same run, µs.
        #[serde(skip)]
        rtt_p99_us: f64,
        /// The medians of the two parts of a handoff, µs: from the release call to the notice
        /// reaching the waiter's connection reader, and from there to the waiter holding the
        /// guard. `None` when the notices could not be timed. Informational.
        #[serde(skip)]
        split_p50_us: Option<(f64, f64)>,
        /// The floor of a notice on this client stack, each after the same idle pause as a
        /// release, medians in µs: from the call of a `PUBLISH`, and of a script that only
        /// publishes, to the message's arrival in a RESP3 subscriber's reader. `None` off a
        /// standalone server. Informational.
        #[serde(skip)]
        notice_floor_p50_us: Option<(f64, f64)>,
        /// Every handoff latency, µs, ascending (for the plot).
        #[serde(skip)]
        samples_us: Vec<f64>,
    },
    /// Several clients looping wait-acquire → release on one key.
    Contention {
        /// How many workers (each with its own client).
        workers: usize,
        /// How long the loop ran, s.
        seconds: f64,
        /// Acquisitions per second, all workers together.
        handoffs_per_s: f64,
        /// The fewest acquisitions one worker made.
        min_acquisitions: u64,
        /// The most acquisitions one worker made.
        max_acquisitions: u64,
        /// The longest single wait-acquire call, ms.
        max_wait_ms: f64,
        /// Release notices handed to waiters per acquisition.
        wakeups_per_handoff: f64,
        /// The 99th percentile of all waits, ms.
        wait_p99_ms: f64,
        /// Median `PING` round trip measured just before, µs.
        #[serde(skip)]
        rtt_p50_us: f64,
    },
    /// Thousands of waiters on one client: connections, memory, and whether all get through.
    Waiters {
        /// How many waiters (one lock each).
        waiters: usize,
        /// Connections the waiting client opened on the server.
        connections: usize,
        /// Resident memory added by the registered waiters, MiB (`null` if unknown).
        rss_growth_mb: Option<f64>,
        /// Whether every waiter acquired its lock after the holder released them all.
        all_acquired: bool,
    },
}

/// One comparison of a result with its target, or a figure shown beside them.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    /// What is compared, e.g. `uncontended redfour/raw`.
    pub what: String,
    /// The measured value (a ratio, or a plain value).
    pub value: f64,
    /// The target, as text (`≥ 0.90`); for an informational line, `(no target)` or the
    /// target in parentheses that a one-server figure would be held to.
    pub goal: String,
    /// Whether the target is met (true for informational lines).
    pub met: bool,
    /// Informational: counts in no verdict.
    pub info: bool,
}

impl Check {
    fn at_least(what: impl Into<String>, value: f64, min: f64) -> Check {
        Check {
            what: what.into(),
            value,
            goal: format!("≥ {min:.2}"),
            met: value >= min,
            info: false,
        }
    }

    fn is_info(&self) -> bool {
        self.info
    }

    /// A figure shown beside the targets, not one of them.
    fn info(what: impl Into<String>, value: f64) -> Check {
        Check {
            what: what.into(),
            value,
            goal: INFO_GOAL.to_owned(),
            met: true,
            info: true,
        }
    }

    fn at_most(what: impl Into<String>, value: f64, max: f64) -> Check {
        Check {
            what: what.into(),
            value,
            goal: format!("≤ {max:.2}"),
            met: value <= max,
            info: false,
        }
    }

    /// This check as an informational line about `topology`: the issue's targets are stated
    /// for one server, so on other topologies the same ratio is shown with the goal in
    /// parentheses, for reference, and no verdict.
    fn for_topology(self, topology: Topology) -> Check {
        let goal = if self.info {
            self.goal
        } else {
            format!("({})", self.goal)
        };
        Check {
            what: format!("{topology}: {}", self.what),
            goal,
            met: true,
            info: true,
            ..self
        }
    }
}

/// The goal column of an informational line.
const INFO_GOAL: &str = "(no target)";

/// `a / b`; for `b` zero, infinity when `a` is positive and NaN otherwise, so that a missing
/// denominator never passes an "at most" target (NaN passes no comparison at all).
fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else if a > 0.0 {
        f64::INFINITY
    } else {
        f64::NAN
    }
}

impl Report {
    /// The scenario's name, as in the JSON `scenario` field.
    pub fn name(&self) -> &'static str {
        match self {
            Report::Rtt { .. } => "rtt",
            Report::Uncontended { .. } => "uncontended",
            Report::Parallel { .. } => "parallel",
            Report::ServerCost { .. } => "server_cost",
            Report::Handoff { .. } => "handoff",
            Report::Contention { .. } => "contention",
            Report::Waiters { .. } => "waiters",
        }
    }

    /// The JSON line of the contract.
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            // Serializing plain numbers and booleans cannot fail; say so loudly if it ever does.
            format!("{{\"scenario\":\"{}\",\"error\":\"{e}\"}}", self.name())
        })
    }

    /// One human-readable line of measurements.
    pub fn summary(&self) -> String {
        match self {
            Report::Rtt { p50_us, p99_us } => format!("PING p50 {p50_us} µs, p99 {p99_us} µs"),
            Report::Uncontended {
                cycles_per_s,
                raw_cycles_per_s,
                server_us,
            } => format!(
                "redfour {cycles_per_s:.0} cycles/s{}{}",
                raw_cycles_per_s.map_or(String::new(), |raw| format!(", raw {raw:.0} cycles/s")),
                server_summary(*server_us)
            ),
            Report::Parallel {
                tasks,
                cycles_per_s,
                raw_cycles_per_s,
                node_cycles_per_s,
                server_us,
                node_server_us,
            } => format!(
                "{tasks} tasks: redfour {cycles_per_s:.0} cycles/s{}{}{}{}",
                raw_cycles_per_s.map_or(String::new(), |raw| format!(", raw {raw:.0} cycles/s")),
                node_cycles_per_s.map_or(String::new(), |node| format!(
                    ", Node's scripts {node:.0} cycles/s"
                )),
                server_summary(*server_us),
                node_server_us.map_or(String::new(), |us| format!(" (Node's: {us} µs)"))
            ),
            Report::ServerCost {
                acquire_us,
                release_us,
                handoff_us,
                node_acquire_us,
                node_release_us,
                floor_us: (set, cad, ping),
                ..
            } => format!(
                "server µs per step: acquire {acquire_us}, release {release_us}, release handing over {handoff_us}; Node's acquire {node_acquire_us}, release {node_release_us}; raw SET NX PX {set}, compare-and-delete {cad}, PING {ping}"
            ),
            Report::Handoff {
                p50_us,
                p99_us,
                rtt_p50_us,
                rtt_p99_us,
                idle_rtt_p50_us,
                split_p50_us,
                notice_floor_p50_us,
                samples_us,
            } => format!(
                "{} samples: p50 {p50_us} µs, p99 {p99_us} µs (PING p50 {rtt_p50_us} µs, p99 {rtt_p99_us} µs; after an idle pause p50 {idle_rtt_p50_us} µs){}{}",
                samples_us.len(),
                split_p50_us.map_or(String::new(), |(to, after)| format!(
                    "; release to notice p50 {to} µs, notice to guard p50 {after} µs"
                )),
                notice_floor_p50_us.map_or(String::new(), |(publish, script)| format!(
                    "; a notice after an idle pause, call to arrival p50: PUBLISH {publish} µs, from a script {script} µs"
                ))
            ),
            Report::Contention {
                workers,
                seconds,
                handoffs_per_s,
                min_acquisitions,
                max_acquisitions,
                max_wait_ms,
                wakeups_per_handoff,
                wait_p99_ms,
                ..
            } => format!(
                "{workers} workers, {seconds} s: {handoffs_per_s:.0} handoffs/s, acquisitions per worker {min_acquisitions}..{max_acquisitions}, wait p99 {wait_p99_ms} ms, longest {max_wait_ms} ms, {wakeups_per_handoff} wakeups/handoff"
            ),
            Report::Waiters {
                waiters,
                connections,
                rss_growth_mb,
                all_acquired,
            } => format!(
                "{waiters} waiters: {connections} connections, RSS +{} MiB, all acquired: {all_acquired}",
                rss_growth_mb.map_or("?".to_owned(), |m| m.to_string())
            ),
        }
    }

    /// The scenario's targets (see the crate docs), compared with its result.
    pub fn checks(&self) -> Vec<Check> {
        match self {
            Report::Rtt { .. } => Vec::new(),
            Report::Uncontended {
                cycles_per_s,
                raw_cycles_per_s,
                server_us,
            } => {
                let Some(raw_cycles_per_s) = raw_cycles_per_s else {
                    // Compared with the standalone run's baseline instead (`comparisons`).
                    return Vec::new();
                };
                let mut checks = vec![Check::at_least(
                    "uncontended redfour/raw",
                    ratio(*cycles_per_s, *raw_cycles_per_s),
                    0.9,
                )];
                if let Some((redfour, raw)) = server_us {
                    checks.push(Check::info(
                        "(info) uncontended server µs/cycle redfour - raw",
                        redfour - raw,
                    ));
                }
                checks
            }
            Report::Parallel {
                cycles_per_s,
                raw_cycles_per_s,
                node_cycles_per_s,
                server_us,
                node_server_us,
                ..
            } => {
                let (Some(raw_cycles_per_s), Some(node_cycles_per_s)) =
                    (raw_cycles_per_s, node_cycles_per_s)
                else {
                    // Compared with the standalone run's baselines instead (`comparisons`).
                    return Vec::new();
                };
                let mut checks = vec![
                    Check::at_least(
                        "parallel redfour/Node's scripts",
                        ratio(*cycles_per_s, *node_cycles_per_s),
                        0.9,
                    ),
                    Check::info(
                        "(info) parallel redfour/raw",
                        ratio(*cycles_per_s, *raw_cycles_per_s),
                    ),
                ];
                if let Some((redfour, raw)) = server_us {
                    // With the server saturated, its time per cycle bounds the rate.
                    checks.push(Check::info(
                        "(info) parallel server µs/cycle raw/redfour",
                        ratio(*raw, *redfour),
                    ));
                    if let Some(node) = node_server_us {
                        checks.push(Check::info(
                            "(info) parallel server µs/cycle Node/redfour",
                            ratio(*node, *redfour),
                        ));
                    }
                }
                checks
            }
            Report::ServerCost {
                acquire_us,
                release_us,
                handoff_us,
                node_acquire_us,
                node_release_us,
                round_ratios,
                ..
            } => {
                let (acquire, release, handoff) = round_ratios.unwrap_or((
                    ratio(*acquire_us, *node_acquire_us),
                    ratio(*release_us, *node_release_us),
                    ratio(*handoff_us, *node_release_us),
                ));
                vec![
                    Check::at_most("server acquire / Node's acquire", acquire, 1.2),
                    Check::at_most("server release / Node's release", release, 1.2),
                    Check::at_most("server handing over / Node's release", handoff, 2.0),
                ]
            }
            Report::Handoff {
                p50_us,
                p99_us,
                rtt_p50_us,
                rtt_p99_us,
                idle_rtt_p50_us,
                split_p50_us,
                notice_floor_p50_us,
                ..
            } => {
                let mut checks = vec![
                    Check::at_most(
                        "handoff p50 / idle rtt p50",
                        ratio(*p50_us, *idle_rtt_p50_us),
                        1.2,
                    ),
                    Check::at_most("handoff p99 / rtt p99", ratio(*p99_us, *rtt_p99_us), 3.0),
                    Check::info(
                        "(info) handoff p50 / hot rtt p50",
                        ratio(*p50_us, *rtt_p50_us),
                    ),
                ];
                if let Some((to_notice, after)) = split_p50_us {
                    checks.push(Check::info(
                        "(info) handoff release→notice p50 (µs)",
                        *to_notice,
                    ));
                    checks.push(Check::info("(info) handoff notice→guard p50 (µs)", *after));
                }
                if let Some((publish, script)) = notice_floor_p50_us {
                    checks.push(Check::info(
                        "(info) notice floor: PUBLISH / idle rtt p50",
                        ratio(*publish, *idle_rtt_p50_us),
                    ));
                    checks.push(Check::info(
                        "(info) notice floor: script / idle rtt p50",
                        ratio(*script, *idle_rtt_p50_us),
                    ));
                    if let Some((to_notice, _)) = split_p50_us {
                        checks.push(Check::info(
                            "(info) release→notice beyond the script floor (µs)",
                            round_to(to_notice - script, 1),
                        ));
                    }
                }
                checks
            }
            Report::Contention {
                workers,
                seconds,
                handoffs_per_s,
                min_acquisitions,
                max_acquisitions,
                max_wait_ms,
                wakeups_per_handoff,
                rtt_p50_us,
                wait_p99_ms,
            } => {
                let total = handoffs_per_s * seconds;
                // The mean time from one acquisition to the next, all workers together.
                let mean_cycle_ms = ratio(seconds * 1e3, total);
                vec![
                    Check::at_least(
                        "contention handoffs/s × rtt p50",
                        handoffs_per_s * rtt_p50_us / 1e6,
                        0.5,
                    ),
                    Check::at_most(
                        "contention max/min acquisitions",
                        ratio(*max_acquisitions as f64, *min_acquisitions as f64),
                        1.5,
                    ),
                    Check::at_most(
                        "contention max wait / (workers × mean cycle)",
                        ratio(*max_wait_ms, *workers as f64 * mean_cycle_ms),
                        3.0,
                    ),
                    Check::at_most(
                        "contention wait p99 / (workers × mean cycle)",
                        ratio(*wait_p99_ms, *workers as f64 * mean_cycle_ms),
                        1.5,
                    ),
                    Check::at_most("contention wakeups/handoff", *wakeups_per_handoff, 1.1),
                ]
            }
            Report::Waiters {
                waiters,
                connections,
                rss_growth_mb,
                all_acquired,
            } => {
                let mut checks = vec![Check::at_most(
                    "waiters connections",
                    *connections as f64,
                    3.0,
                )];
                if let Some(mb) = rss_growth_mb {
                    // 2 KiB per waiter: 20 MiB for the full run's 10,000.
                    checks.push(Check::at_most(
                        "waiters RSS growth per waiter (KiB)",
                        ratio(mb * 1024.0, *waiters as f64),
                        2.0,
                    ));
                }
                checks.push(Check {
                    what: "waiters all acquired".to_owned(),
                    value: if *all_acquired { 1.0 } else { 0.0 },
                    goal: "= 1 (true)".to_owned(),
                    met: *all_acquired,
                    info: false,
                });
                checks
            }
        }
    }
}

/// The server time per cycle, for a summary line.
fn server_summary(server_us: Option<(f64, f64)>) -> String {
    server_us.map_or(String::new(), |(redfour, raw)| {
        format!(" (server time per cycle: redfour {redfour} µs, raw {raw} µs)")
    })
}

/// One measurement of the run: a scenario's result on one topology.
#[derive(Debug, Clone)]
pub struct Line {
    /// Where it was measured.
    pub topology: Topology,
    /// What was measured.
    pub report: Report,
}

impl Line {
    /// The JSON line of the contract: the report's, and when `labelled` (`--topology` was
    /// given) a `"topology"` field right after `"scenario"`.
    pub fn json(&self, labelled: bool) -> String {
        let json = self.report.json();
        if !labelled {
            return json;
        }
        // Serde writes an internally tagged enum's tag first, so the line starts with it; the
        // scenario and topology names are fixed identifiers, which need no escaping.
        let head = format!("{{\"scenario\":\"{}\"", self.report.name());
        match json.strip_prefix(&head) {
            Some(rest) => format!("{head},\"topology\":\"{}\"{rest}", self.topology),
            None => json,
        }
    }

    /// The target checks of this line (see [`Report::checks`]): as they are on one server;
    /// on another topology as informational lines, with its comparisons to the standalone
    /// `twin` of the same run when there is one. Labelled with the topology when `labelled`.
    fn checks(&self, twin: Option<&Report>, labelled: bool) -> Vec<Check> {
        let own = self.report.checks();
        if self.topology == Topology::Standalone {
            return if labelled {
                own.into_iter()
                    .map(|c| Check {
                        what: format!("{}: {}", self.topology, c.what),
                        ..c
                    })
                    .collect()
            } else {
                own
            };
        }
        let mut checks: Vec<Check> = own
            .into_iter()
            .map(|c| c.for_topology(self.topology))
            .collect();
        if let Some(twin) = twin {
            checks.extend(comparisons(self.topology, &self.report, twin));
        }
        checks
    }
}

/// The figures of `report`, measured on `topology`, against its standalone `twin` of the same
/// run (informational): redfour against redfour on one server, and against the one-server
/// baselines that the other topologies do not run.
fn comparisons(topology: Topology, report: &Report, twin: &Report) -> Vec<Check> {
    let t = topology;
    match (report, twin) {
        (
            Report::Uncontended { cycles_per_s, .. },
            Report::Uncontended {
                cycles_per_s: alone,
                raw_cycles_per_s,
                ..
            },
        ) => {
            let mut checks = vec![Check::info(
                format!("{t}/standalone: uncontended redfour cycles/s"),
                ratio(*cycles_per_s, *alone),
            )];
            if let Some(raw) = raw_cycles_per_s {
                checks.push(Check::info(
                    format!("{t}: uncontended redfour / standalone raw"),
                    ratio(*cycles_per_s, *raw),
                ));
            }
            checks
        }
        (
            Report::Parallel { cycles_per_s, .. },
            Report::Parallel {
                cycles_per_s: alone,
                raw_cycles_per_s,
                node_cycles_per_s,
                ..
            },
        ) => {
            let mut checks = vec![Check::info(
                format!("{t}/standalone: parallel redfour cycles/s"),
                ratio(*cycles_per_s, *alone),
            )];
            if let Some(node) = node_cycles_per_s {
                checks.push(Check::info(
                    format!("{t}: parallel redfour / standalone Node's scripts"),
                    ratio(*cycles_per_s, *node),
                ));
            }
            if let Some(raw) = raw_cycles_per_s {
                checks.push(Check::info(
                    format!("{t}: parallel redfour / standalone raw"),
                    ratio(*cycles_per_s, *raw),
                ));
            }
            checks
        }
        (
            Report::Handoff { p50_us, p99_us, .. },
            Report::Handoff {
                p50_us: alone_p50,
                p99_us: alone_p99,
                ..
            },
        ) => vec![
            Check::info(
                format!("{t}/standalone: handoff p50"),
                ratio(*p50_us, *alone_p50),
            ),
            Check::info(
                format!("{t}/standalone: handoff p99"),
                ratio(*p99_us, *alone_p99),
            ),
        ],
        (
            Report::Contention {
                handoffs_per_s,
                wait_p99_ms,
                ..
            },
            Report::Contention {
                handoffs_per_s: alone_rate,
                wait_p99_ms: alone_p99,
                ..
            },
        ) => vec![
            Check::info(
                format!("{t}/standalone: contention handoffs/s"),
                ratio(*handoffs_per_s, *alone_rate),
            ),
            Check::info(
                format!("{t}/standalone: contention wait p99"),
                ratio(*wait_p99_ms, *alone_p99),
            ),
        ],
        _ => Vec::new(),
    }
}

/// Every target check of every line, with a verdict per target; topologies other than one
/// server add informational lines (their own ratios, and their figures against the standalone
/// twin of the same run). Lines name their topology when `labelled` (`--topology` given).
pub fn targets(lines: &[Line], labelled: bool) -> String {
    let checks: Vec<Check> = lines
        .iter()
        .flat_map(|line| {
            let twin = lines.iter().find(|other| {
                other.topology == Topology::Standalone && other.report.name() == line.report.name()
            });
            line.checks(twin.map(|l| &l.report), labelled)
        })
        .collect();
    if checks.is_empty() {
        return String::new();
    }
    let width = checks.iter().map(|c| c.what.len()).max().unwrap_or(0);
    let mut out = format!(
        "{:<width$}  {:>9}  {:<10}  met\n",
        "target", "value", "goal"
    );
    for c in &checks {
        out.push_str(&format!(
            "{:<width$}  {:>9}  {:<10}  {}\n",
            c.what,
            round_to(c.value, 3),
            c.goal,
            if c.is_info() {
                "-"
            } else if c.met {
                "yes"
            } else {
                "NO"
            }
        ));
    }
    let targets: Vec<&Check> = checks.iter().filter(|c| !c.is_info()).collect();
    let met = targets.iter().filter(|c| c.met).count();
    out.push_str(&format!("{met} of {} targets met", targets.len()));
    if lines.iter().any(|l| l.topology != Topology::Standalone) {
        out.push_str(
            " (issue 12 states its targets for one server: the other topologies' lines are \
             informational, their goals in parentheses for reference)",
        );
    }
    out.push('\n');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_has_the_scenario_first_and_no_internal_fields() {
        let r = Report::Handoff {
            p50_us: 1.5,
            p99_us: 2.0,
            rtt_p50_us: 1.0,
            idle_rtt_p50_us: 1.25,
            rtt_p99_us: 1.0,
            split_p50_us: None,
            notice_floor_p50_us: Some((1.0, 1.1)),
            samples_us: vec![1.0, 2.0],
        };
        assert_eq!(
            r.json(),
            r#"{"scenario":"handoff","p50_us":1.5,"p99_us":2.0,"rtt_p50_us":1.0,"idle_rtt_p50_us":1.25}"#
        );
        let mut s = Report::ServerCost {
            acquire_us: 12.0,
            release_us: 8.0,
            handoff_us: 16.0,
            node_acquire_us: 10.0,
            node_release_us: 8.0,
            floor_us: (2.0, 4.0, 1.0),
            round_ratios: None,
        };
        assert_eq!(
            s.json(),
            r#"{"scenario":"server_cost","acquire_us":12.0,"release_us":8.0,"handoff_us":16.0,"node_acquire_us":10.0,"node_release_us":8.0}"#
        );
        // 1.2, 1.0 and 2.0 times Node's: all at their bound.
        assert!(s.checks().iter().all(|c| c.met), "{:?}", s.checks());
        // The rounds' own ratios, when known, are what is judged.
        let Report::ServerCost { round_ratios, .. } = &mut s else {
            unreachable!()
        };
        *round_ratios = Some((1.3, 1.0, 2.0));
        let met: Vec<bool> = s.checks().iter().map(|c| c.met).collect();
        assert_eq!(met, [false, true, true]);
        let w = Report::Waiters {
            waiters: 3,
            connections: 2,
            rss_growth_mb: None,
            all_acquired: true,
        };
        assert_eq!(
            w.json(),
            r#"{"scenario":"waiters","waiters":3,"connections":2,"rss_growth_mb":null,"all_acquired":true}"#
        );
    }

    #[test]
    fn checks_compare_with_targets() {
        let u = Report::Uncontended {
            cycles_per_s: 850.0,
            raw_cycles_per_s: Some(1000.0),
            server_us: Some((12.0, 4.0)),
        };
        let c = &u.checks()[0];
        assert!(!c.met);
        assert!((c.value - 0.85).abs() < 1e-9);
        let info = &u.checks()[1];
        assert!(info.is_info());
        assert!((info.value - 8.0).abs() < 1e-9);
        let c = Report::Contention {
            workers: 8,
            seconds: 1.0,
            handoffs_per_s: 1000.0,
            min_acquisitions: 100,
            max_acquisitions: 140,
            max_wait_ms: 20.0,
            wakeups_per_handoff: 1.0,
            rtt_p50_us: 600.0,
            wait_p99_ms: 9.0,
        };
        // mean cycle 1 ms: 20 ms ≤ 3 × 8 × 1 ms.
        assert!(c.checks().iter().all(|c| c.met), "{:?}", c.checks());
        assert!(ratio(0.0, 0.0).is_nan());
    }

    #[test]
    fn a_handoff_is_shown_beside_the_floor_of_a_notice() {
        let mut h = Report::Handoff {
            p50_us: 180.0,
            p99_us: 300.0,
            rtt_p50_us: 50.0,
            idle_rtt_p50_us: 100.0,
            rtt_p99_us: 150.0,
            split_p50_us: Some((172.5, 7.5)),
            notice_floor_p50_us: Some((110.0, 120.0)),
            samples_us: Vec::new(),
        };
        let shown: Vec<(String, f64, bool)> = h
            .checks()
            .into_iter()
            .map(|c| (c.what.clone(), c.value, c.is_info()))
            .collect();
        let expected = [
            ("handoff p50 / idle rtt p50", 1.8, false),
            ("handoff p99 / rtt p99", 2.0, false),
            ("(info) handoff p50 / hot rtt p50", 3.6, true),
            ("(info) handoff release→notice p50 (µs)", 172.5, true),
            ("(info) handoff notice→guard p50 (µs)", 7.5, true),
            ("(info) notice floor: PUBLISH / idle rtt p50", 1.1, true),
            ("(info) notice floor: script / idle rtt p50", 1.2, true),
            (
                "(info) release→notice beyond the script floor (µs)",
                52.5,
                true,
            ),
        ];
        assert_eq!(shown.len(), expected.len(), "{shown:?}");
        for ((what, value, info), (want, wanted, wanted_info)) in shown.iter().zip(expected) {
            assert_eq!((what.as_str(), *info), (want, wanted_info));
            assert!((value - wanted).abs() < 1e-9, "{what}: {value}");
        }
        assert!(
            h.summary().contains("from a script 120 µs"),
            "{}",
            h.summary()
        );
        // Off a standalone server there is no floor, and no line about it.
        let Report::Handoff {
            notice_floor_p50_us,
            ..
        } = &mut h
        else {
            unreachable!()
        };
        *notice_floor_p50_us = None;
        assert!(h.checks().iter().all(|c| !c.what.contains("floor")));
    }

    fn uncontended(cycles: f64, raw: Option<f64>) -> Report {
        Report::Uncontended {
            cycles_per_s: cycles,
            raw_cycles_per_s: raw,
            server_us: None,
        }
    }

    #[test]
    fn json_names_the_topology_only_when_labelled() {
        let alone = Line {
            topology: Topology::Standalone,
            report: uncontended(900.0, Some(1000.0)),
        };
        assert_eq!(
            alone.json(false),
            r#"{"scenario":"uncontended","cycles_per_s":900.0,"raw_cycles_per_s":1000.0}"#
        );
        assert_eq!(
            alone.json(true),
            r#"{"scenario":"uncontended","topology":"standalone","cycles_per_s":900.0,"raw_cycles_per_s":1000.0}"#
        );
        // Other topologies have no baselines of their own: the fields are left out.
        let cluster = Line {
            topology: Topology::Cluster,
            report: Report::Parallel {
                tasks: 64,
                cycles_per_s: 5000.0,
                raw_cycles_per_s: None,
                node_cycles_per_s: None,
                server_us: None,
                node_server_us: None,
            },
        };
        assert_eq!(
            cluster.json(true),
            r#"{"scenario":"parallel","topology":"cluster","tasks":64,"cycles_per_s":5000.0}"#
        );
        assert!(cluster.report.checks().is_empty());
        assert!(cluster
            .report
            .summary()
            .starts_with("64 tasks: redfour 5000 cycles/s"));
    }

    #[test]
    fn other_topologies_are_informational_and_compared_with_their_twin() {
        let lines = [
            Line {
                topology: Topology::Standalone,
                report: uncontended(800.0, Some(1000.0)),
            },
            Line {
                topology: Topology::Redlock,
                report: uncontended(400.0, None),
            },
            Line {
                topology: Topology::Redlock,
                report: Report::Handoff {
                    p50_us: 300.0,
                    p99_us: 900.0,
                    rtt_p50_us: 100.0,
                    idle_rtt_p50_us: 200.0,
                    rtt_p99_us: 300.0,
                    split_p50_us: None,
                    notice_floor_p50_us: None,
                    samples_us: Vec::new(),
                },
            },
        ];
        let twin = |l: &Line| {
            lines
                .iter()
                .find(|o| o.topology == Topology::Standalone && o.report.name() == l.report.name())
                .map(|o| &o.report)
        };
        let standalone = lines[0].checks(None, true);
        assert_eq!(standalone.len(), 1);
        assert_eq!(standalone[0].what, "standalone: uncontended redfour/raw");
        assert!(!standalone[0].info && !standalone[0].met);
        assert_eq!(
            lines[0].checks(None, false)[0].what,
            "uncontended redfour/raw"
        );

        let redlock = lines[1].checks(twin(&lines[1]), true);
        let whats: Vec<&str> = redlock.iter().map(|c| c.what.as_str()).collect();
        assert_eq!(
            whats,
            [
                "redlock/standalone: uncontended redfour cycles/s",
                "redlock: uncontended redfour / standalone raw"
            ]
        );
        assert!((redlock[0].value - 0.5).abs() < 1e-9);
        assert!((redlock[1].value - 0.4).abs() < 1e-9);
        assert!(redlock.iter().all(|c| c.info));

        // No standalone handoff in the run: the topology's own ratios only, goals for
        // reference and no verdict.
        let handoff = lines[2].checks(twin(&lines[2]), true);
        assert_eq!(handoff[0].what, "redlock: handoff p50 / idle rtt p50");
        assert_eq!(handoff[0].goal, "(≤ 1.20)");
        assert!(handoff.iter().all(|c| c.info));

        let table = targets(&lines, true);
        assert!(table.contains("0 of 1 targets met (issue 12"), "{table}");
        assert!(!targets(&lines[..1], false).contains("issue 12"));
    }
}
