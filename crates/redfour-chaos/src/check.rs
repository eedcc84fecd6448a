//! The checker: reads the merged history of a run and checks what redfour promises.
//!
//! - **V** (exclusion): no two holdings overlap, where a holding counts from its `acquire_ok`
//!   to the first of: its own lease deadline (the latest it saw renewed), its release call,
//!   the keep-alive reporting the lease lost, the process being killed.
//! - **F** (fencing): the indexes of those holdings strictly increase in the order they were
//!   acquired, and the resource never accepts a write with a lower index than one it accepted.
//! - **R** (only the holder): no release answers `released` for an index when a higher index
//!   was already acquired before that release was called.
//! - **L** (liveness): every wait returns (unless its process was killed or frozen), and while
//!   someone waits, the lock is never free for longer than the scenario's bound.
//! - **A** (unknown outcomes): after an acquire whose outcome is unknown, someone acquires the
//!   lock within the ttl plus the bound: a lock the attempt may have won does not outlive its
//!   ttl. (That it never makes two holders is V.)
//!
//! A lock left on the server after the run is checked by the run itself (see `scenario`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use crate::events::{Event, What};

/// What a run is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// The lock's ttl, ns.
    pub ttl_ns: u64,
    /// The longest the lock may stay free while someone waits, ns.
    pub free_while_waiting_ns: u64,
}

/// One rule broken, with the events around it.
#[derive(Debug, Clone, Serialize)]
pub struct Violation {
    /// `V`, `F`, `R`, `L` or `A`.
    pub rule: char,
    /// What is wrong.
    pub message: String,
    /// The events around it, one per line.
    pub context: Vec<String>,
}

/// The outcome of a check.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Events read.
    pub events: usize,
    /// Acquisitions (`acquire_ok`).
    pub acquisitions: usize,
    /// Acquires that failed knowingly (mostly waits that ran out).
    pub acquire_failed: usize,
    /// Acquires with an unknown outcome.
    pub acquire_unknown: usize,
    /// Acquisitions logged with their lease already over (a holder frozen between the reply
    /// and its log line; or a library that returned a lock won too late).
    pub acquired_expired: usize,
    /// Fenced writes the resource accepted.
    pub writes_accepted: usize,
    /// Fenced writes the resource rejected (a stale holder stopped by fencing).
    pub writes_rejected: usize,
    /// Leases the keep-alive reported lost.
    pub leases_lost: usize,
    /// Release answers by outcome.
    pub releases: BTreeMap<String, usize>,
    /// Faults injected, by kind.
    pub faults: BTreeMap<String, usize>,
    /// The longest the lock stayed free while someone waited, ms.
    pub longest_free_while_waiting_ms: f64,
    /// Every violation found.
    pub violations: Vec<Violation>,
}

impl Report {
    /// The violations of one rule.
    pub fn of(&self, rule: char) -> impl Iterator<Item = &Violation> {
        self.violations.iter().filter(move |v| v.rule == rule)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{} events: {} acquisitions ({} failed, {} unknown, {} expired on arrival), writes {} accepted / {} rejected, {} leases lost, releases {:?}, faults {:?}, longest free while waiting {:.1} ms",
            self.events,
            self.acquisitions,
            self.acquire_failed,
            self.acquire_unknown,
            self.acquired_expired,
            self.writes_accepted,
            self.writes_rejected,
            self.leases_lost,
            self.releases,
            self.faults,
            self.longest_free_while_waiting_ms
        )?;
        for v in &self.violations {
            writeln!(f, "violation {}: {}", v.rule, v.message)?;
            for line in &v.context {
                writeln!(f, "    {line}")?;
            }
        }
        Ok(())
    }
}

/// One acquisition and what became of it.
#[derive(Debug, Clone)]
struct Holding {
    who: String,
    index: i64,
    /// Position of the `acquire_ok` event in the timeline.
    at: usize,
    ok: u64,
    deadline: u64,
    /// When a renewal of this holding was last seen (after the server made it).
    renewed: Option<u64>,
    release_invoked: Option<u64>,
    release_done: Option<(u64, String)>,
    lost: Option<u64>,
    killed: Option<u64>,
}

impl Holding {
    /// The end of the holding as its holder may rely on it.
    fn end(&self) -> u64 {
        [
            Some(self.deadline),
            self.release_invoked,
            self.lost,
            self.killed,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.deadline)
    }

    /// When the server had the lock free again, at the latest: the release's answer, or the
    /// lock's expiry there, at most one ttl after the last write that set it. That write (the
    /// grant, a renewal) was made before the holder logged it, or, for a renewal still in
    /// flight, before the holder's release answered or its process was killed; 50 ms cover a
    /// request already on the wire at that moment.
    fn freed(&self, ttl_ns: u64) -> u64 {
        match &self.release_done {
            Some((t, outcome)) if outcome == "released" => *t,
            done => {
                let last_write = [
                    Some(self.ok),
                    self.renewed,
                    done.as_ref().map(|(t, _)| *t),
                    self.killed,
                ]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(self.ok);
                last_write + ttl_ns + 50_000_000
            }
        }
    }
}

/// A wait: from `acquire_invoked` to its outcome (`None` if it never came).
#[derive(Debug, Clone)]
struct Wait {
    who: String,
    from: u64,
    to: Option<u64>,
}

fn context(events: &[Event], at: usize) -> Vec<String> {
    let from = at.saturating_sub(6);
    let to = (at + 7).min(events.len());
    events[from..to]
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let mark = if from + i == at { ">>" } else { "  " };
            format!(
                "{mark} {:>16} {:>4} {}",
                e.t,
                e.who,
                serde_json::to_string(&e.what).unwrap_or_default()
            )
        })
        .collect()
}

/// Checks the history `events` (sorted by time) of one lock.
pub fn check(events: &[Event], bounds: Bounds) -> Report {
    let mut report = Report {
        events: events.len(),
        ..Report::default()
    };
    let mut holdings: Vec<Holding> = Vec::new();
    let mut current: BTreeMap<String, usize> = BTreeMap::new();
    let mut waits: Vec<Wait> = Vec::new();
    let mut open_wait: BTreeMap<String, usize> = BTreeMap::new();
    let mut gone: BTreeSet<String> = BTreeSet::new();
    let mut frozen: BTreeSet<String> = BTreeSet::new();
    let mut accepted_max: Option<(i64, usize)> = None;
    let mut unknown: Vec<(u64, usize)> = Vec::new();

    for (at, e) in events.iter().enumerate() {
        let who = e.who.clone();
        match &e.what {
            What::AcquireInvoked => {
                open_wait.insert(who.clone(), waits.len());
                waits.push(Wait {
                    who,
                    from: e.t,
                    to: None,
                });
            }
            What::AcquireOk { index, deadline } => {
                if let Some(w) = open_wait.remove(&who) {
                    waits[w].to = Some(e.t);
                }
                report.acquisitions += 1;
                current.insert(who.clone(), holdings.len());
                holdings.push(Holding {
                    who: who.clone(),
                    index: *index,
                    at,
                    ok: e.t,
                    deadline: *deadline,
                    renewed: None,
                    release_invoked: None,
                    release_done: None,
                    lost: None,
                    killed: None,
                });
            }
            What::AcquireFailed { .. } | What::AcquireUnknown { .. } => {
                if matches!(e.what, What::AcquireFailed { .. }) {
                    report.acquire_failed += 1;
                } else {
                    report.acquire_unknown += 1;
                    unknown.push((e.t, at));
                }
                if let Some(w) = open_wait.remove(&who) {
                    waits[w].to = Some(e.t);
                }
            }
            What::Renewed { deadline, .. } => {
                if let Some(&h) = current.get(&who) {
                    holdings[h].deadline = holdings[h].deadline.max(*deadline);
                    holdings[h].renewed = Some(e.t);
                }
            }
            What::LeaseLost { .. } => {
                report.leases_lost += 1;
                if let Some(&h) = current.get(&who) {
                    holdings[h].lost.get_or_insert(e.t);
                }
            }
            What::WriteAnswered { accepted, .. } => {
                if *accepted {
                    report.writes_accepted += 1;
                } else {
                    report.writes_rejected += 1;
                }
            }
            What::ReleaseInvoked { deadline, .. } => {
                if let Some(&h) = current.get(&who) {
                    holdings[h].release_invoked = Some(e.t);
                    // The deadline as it stood then: a renewal not seen before counts, as made
                    // before this moment.
                    if *deadline > holdings[h].deadline {
                        holdings[h].deadline = *deadline;
                        holdings[h].renewed = Some(e.t);
                    }
                }
            }
            What::ReleaseDone { outcome, .. } => {
                let kind = if outcome.starts_with("error") {
                    "error".to_owned()
                } else {
                    outcome.clone()
                };
                *report.releases.entry(kind).or_default() += 1;
                if let Some(h) = current.remove(&who) {
                    holdings[h].release_done = Some((e.t, outcome.clone()));
                }
            }
            What::ResourceAccepted { index, .. } => {
                if let Some((max, max_at)) = accepted_max {
                    if *index < max {
                        report.violations.push(Violation {
                            rule: 'F',
                            message: format!(
                                "the resource accepted index {index} after accepting {max} (event {max_at})"
                            ),
                            context: context(events, at),
                        });
                    }
                }
                if accepted_max.is_none_or(|(max, _)| *index > max) {
                    accepted_max = Some((*index, at));
                }
            }
            What::Fault { kind, target } => {
                *report.faults.entry(kind.clone()).or_default() += 1;
                match kind.as_str() {
                    "kill" | "kill-at-end" => {
                        gone.insert(target.clone());
                        if let Some(h) = current.remove(target) {
                            holdings[h].killed = Some(e.t);
                        }
                        if let Some(w) = open_wait.remove(target) {
                            // A killed waiter's wait ends with it.
                            waits[w].to = Some(e.t);
                        }
                    }
                    "stop" => {
                        frozen.insert(target.clone());
                    }
                    "cont" => {
                        frozen.remove(target);
                    }
                    _ => {}
                }
            }
            What::Enter { .. } | What::Exit { .. } | What::ResourceRejected { .. } => {}
        }
    }

    // L: every wait returned, unless its process was killed or is still frozen.
    for w in &waits {
        if w.to.is_none() && !gone.contains(&w.who) && !frozen.contains(&w.who) {
            let at = events
                .iter()
                .position(|e| e.t == w.from && e.who == w.who)
                .unwrap_or(0);
            report.violations.push(Violation {
                rule: 'L',
                message: format!("the wait of {} never returned", w.who),
                context: context(events, at),
            });
        }
    }

    // F: no index is handed out twice, whatever became of the holdings.
    let mut seen: BTreeMap<i64, &Holding> = BTreeMap::new();
    for h in &holdings {
        if let Some(first) = seen.insert(h.index, h) {
            report.violations.push(Violation {
                rule: 'F',
                message: format!(
                    "index {} acquired twice, by {} and by {}",
                    h.index, first.who, h.who
                ),
                context: context(events, h.at),
            });
        }
    }
    // Acquisitions whose lease was over when they were logged: the library answers those as
    // not acquired, unless the holder was frozen between the reply and its log line.
    report.acquired_expired = holdings.iter().filter(|h| h.end() <= h.ok).count();

    // V and F over the holdings that had any validity at all.
    let mut valid: Vec<&Holding> = holdings.iter().filter(|h| h.end() > h.ok).collect();
    valid.sort_by_key(|h| h.ok);
    let mut latest: Option<&Holding> = None;
    for pair in valid.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        if b.index <= a.index {
            report.violations.push(Violation {
                rule: 'F',
                message: format!(
                    "{} acquired index {} after {} had acquired index {}",
                    b.who, b.index, a.who, a.index
                ),
                context: context(events, b.at),
            });
        }
    }
    for h in &valid {
        if let Some(l) = latest {
            if h.ok < l.end() {
                report.violations.push(Violation {
                    rule: 'V',
                    message: format!(
                        "{} (index {}) acquired at {} while {} (index {}) held the lock until {}",
                        h.who,
                        h.index,
                        h.ok,
                        l.who,
                        l.index,
                        l.end()
                    ),
                    context: context(events, h.at),
                });
            }
        }
        if latest.is_none_or(|l| h.end() > l.end()) {
            latest = Some(h);
        }
    }

    // R: a release that succeeded although a higher index had been acquired before it was
    // called.
    for h in &holdings {
        let (Some(called), Some((_, outcome))) = (h.release_invoked, &h.release_done) else {
            continue;
        };
        if outcome != "released" {
            continue;
        }
        if let Some(newer) = holdings.iter().find(|o| o.index > h.index && o.ok < called) {
            report.violations.push(Violation {
                rule: 'R',
                message: format!(
                    "{} released index {} although {} had acquired index {} before",
                    h.who, h.index, newer.who, newer.index
                ),
                context: context(events, newer.at),
            });
        }
    }

    // L: while someone waits, the lock is taken again within the bound.
    let mut by_ok: Vec<&Holding> = holdings.iter().collect();
    by_ok.sort_by_key(|h| h.ok);
    let mut longest = 0u64;
    for pair in by_ok.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        let freed = a.freed(bounds.ttl_ns);
        if b.ok <= freed {
            continue;
        }
        // The longest stretch of the gap during which someone (not the old holder) waited.
        let Some(gap) = waits
            .iter()
            .filter(|w| w.who != a.who && w.from < b.ok && w.to.is_some_and(|to| to >= b.ok))
            .map(|w| b.ok - w.from.max(freed))
            .max()
        else {
            continue;
        };
        longest = longest.max(gap);
        if gap > bounds.free_while_waiting_ns {
            report.violations.push(Violation {
                rule: 'L',
                message: format!(
                    "the lock was free for {:.1} ms while {} waited (bound {:.1} ms)",
                    gap as f64 / 1e6,
                    b.who,
                    bounds.free_while_waiting_ns as f64 / 1e6
                ),
                context: context(events, b.at),
            });
        }
    }
    report.longest_free_while_waiting_ms = longest as f64 / 1e6;

    // A: the lock is taken again within ttl + bound of an unknown outcome, when the history
    // goes on that long and someone tries.
    let last = events.last().map_or(0, |e| e.t);
    for (t, at) in unknown {
        let limit = t + bounds.ttl_ns + bounds.free_while_waiting_ns;
        if limit > last {
            continue;
        }
        let next_ok = holdings.iter().map(|h| h.ok).filter(|ok| *ok >= t).min();
        let tried = waits.iter().any(|w| w.from >= t && w.from < limit);
        if tried && next_ok.is_none_or(|ok| ok > limit) {
            report.violations.push(Violation {
                rule: 'A',
                message: format!(
                    "nobody acquired the lock within ttl + bound ({:.1} ms) of an acquire with an unknown outcome",
                    (bounds.ttl_ns + bounds.free_while_waiting_ns) as f64 / 1e6
                ),
                context: context(events, at),
            });
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    fn ev(t: u64, who: &str, what: What) -> Event {
        Event {
            t: t * MS,
            who: who.to_owned(),
            what,
        }
    }

    fn bounds() -> Bounds {
        Bounds {
            ttl_ns: 1000 * MS,
            free_while_waiting_ns: 100 * MS,
        }
    }

    /// A clean round of `who` with `index` from `start` ms, holding 10 ms.
    fn round(start: u64, who: &str, index: i64) -> Vec<Event> {
        vec![
            ev(start, who, What::AcquireInvoked),
            ev(
                start + 1,
                who,
                What::AcquireOk {
                    index,
                    deadline: (start + 900) * MS,
                },
            ),
            ev(start + 2, who, What::Enter { index }),
            ev(
                start + 10,
                who,
                What::WriteAnswered {
                    index,
                    accepted: true,
                },
            ),
            ev(start + 11, who, What::Exit { index }),
            ev(
                start + 12,
                who,
                What::ReleaseInvoked {
                    index,
                    deadline: (start + 900) * MS,
                },
            ),
            ev(
                start + 13,
                who,
                What::ReleaseDone {
                    index,
                    outcome: "released".to_owned(),
                },
            ),
        ]
    }

    fn sorted(mut events: Vec<Event>) -> Vec<Event> {
        events.sort_by_key(|e| e.t);
        events
    }

    #[test]
    fn a_clean_history_passes() {
        let mut events = round(0, "w1", 5);
        events.extend(round(20, "w2", 6));
        let report = check(&sorted(events), bounds());
        assert!(report.violations.is_empty(), "{report}");
        assert_eq!(report.acquisitions, 2);
        assert_eq!(report.releases.get("released"), Some(&2));
    }

    #[test]
    fn overlap_is_a_v_violation() {
        let mut events = round(0, "w1", 5);
        // w2 acquires while w1 still holds (before w1's release call at 12 ms).
        events.extend(round(5, "w2", 6));
        let report = check(&sorted(events), bounds());
        assert_eq!(report.of('V').count(), 1, "{report}");
        assert!(report.of('V').next().is_some_and(|v| !v.context.is_empty()));
    }

    #[test]
    fn a_lower_index_later_is_an_f_violation() {
        let mut events = round(0, "w1", 7);
        events.extend(round(20, "w2", 6));
        events.push(ev(
            30,
            "resource",
            What::ResourceAccepted {
                writer: "w1".into(),
                index: 7,
            },
        ));
        events.push(ev(
            31,
            "resource",
            What::ResourceAccepted {
                writer: "w2".into(),
                index: 6,
            },
        ));
        let report = check(&sorted(events), bounds());
        assert_eq!(report.of('F').count(), 2, "{report}");
    }

    #[test]
    fn an_index_handed_out_twice_is_an_f_violation() {
        let mut events = round(0, "w1", 7);
        events.extend(round(20, "w2", 7));
        let report = check(&sorted(events), bounds());
        // Twice the same index, and not increasing.
        assert_eq!(report.of('F').count(), 2, "{report}");
    }

    #[test]
    fn a_stale_release_that_succeeds_is_an_r_violation() {
        // w1's lease ended at 50 ms; w2 acquired at 101 ms; w1's release at 200 ms said released.
        let events = vec![
            ev(0, "w1", What::AcquireInvoked),
            ev(
                1,
                "w1",
                What::AcquireOk {
                    index: 5,
                    deadline: 50 * MS,
                },
            ),
            ev(100, "w2", What::AcquireInvoked),
            ev(
                101,
                "w2",
                What::AcquireOk {
                    index: 6,
                    deadline: 900 * MS,
                },
            ),
            ev(
                200,
                "w1",
                What::ReleaseInvoked {
                    index: 5,
                    deadline: 50 * MS,
                },
            ),
            ev(
                201,
                "w1",
                What::ReleaseDone {
                    index: 5,
                    outcome: "released".into(),
                },
            ),
        ];
        let report = check(&events, bounds());
        assert_eq!(report.of('R').count(), 1, "{report}");
        assert_eq!(report.of('V').count(), 0, "{report}");
    }

    #[test]
    fn a_wait_that_never_returns_is_an_l_violation_unless_killed() {
        let events = vec![
            ev(0, "w1", What::AcquireInvoked),
            ev(1, "w2", What::AcquireInvoked),
        ];
        let mut with_kill = events.clone();
        with_kill.push(ev(
            5,
            "chaos",
            What::Fault {
                kind: "kill".into(),
                target: "w2".into(),
            },
        ));
        assert_eq!(check(&events, bounds()).of('L').count(), 2);
        assert_eq!(check(&with_kill, bounds()).of('L').count(), 1);
    }

    #[test]
    fn a_lock_left_by_an_unknown_outcome_is_an_a_violation() {
        let mut events = vec![
            ev(0, "w1", What::AcquireInvoked),
            ev(
                3000,
                "w1",
                What::AcquireUnknown {
                    reason: "timed out".into(),
                },
            ),
            ev(3010, "w2", What::AcquireInvoked),
            ev(
                3011,
                "w2",
                What::AcquireFailed {
                    reason: "held".into(),
                },
            ),
        ];
        // Taken again 2 s after the unknown outcome: within ttl (1 s) + bound (0.1 s)? No.
        events.push(ev(5000, "w2", What::AcquireInvoked));
        events.push(ev(
            5001,
            "w2",
            What::AcquireOk {
                index: 9,
                deadline: 6000 * MS,
            },
        ));
        let report = check(&events, bounds());
        assert_eq!(report.of('A').count(), 1, "{report}");
        // Taken again 0.5 s after it: fine.
        let mut quick = events[..4].to_vec();
        quick.push(ev(3500, "w2", What::AcquireInvoked));
        quick.push(ev(
            3501,
            "w2",
            What::AcquireOk {
                index: 9,
                deadline: 9000 * MS,
            },
        ));
        quick.push(ev(5000, "w2", What::Enter { index: 9 }));
        assert_eq!(check(&quick, bounds()).of('A').count(), 0);
    }

    #[test]
    fn a_dead_holder_frees_the_lock_one_ttl_after_its_grant() {
        // w1 is killed holding; the lock expires at most 1 s (the ttl) + 50 ms after its grant.
        let mut events = vec![
            ev(0, "w1", What::AcquireInvoked),
            ev(
                1,
                "w1",
                What::AcquireOk {
                    index: 5,
                    deadline: 900 * MS,
                },
            ),
            ev(
                10,
                "chaos",
                What::Fault {
                    kind: "kill".into(),
                    target: "w1".into(),
                },
            ),
            ev(20, "w2", What::AcquireInvoked),
        ];
        let mut late = events.clone();
        events.push(ev(
            1040,
            "w2",
            What::AcquireOk {
                index: 6,
                deadline: 2000 * MS,
            },
        ));
        assert_eq!(check(&events, bounds()).of('L').count(), 0);
        // Taken again only 400 ms after the expiry, while w2 waited (bound 100 ms).
        late.push(ev(
            1460,
            "w2",
            What::AcquireOk {
                index: 6,
                deadline: 2400 * MS,
            },
        ));
        let report = check(&late, bounds());
        assert_eq!(report.of('L').count(), 1, "{report}");
    }

    #[test]
    fn a_lock_free_too_long_while_someone_waits_is_an_l_violation() {
        let mut events = round(0, "w1", 5);
        events.push(ev(5, "w2", What::AcquireInvoked));
        // Released at 13 ms, taken again only at 500 ms.
        events.push(ev(
            500,
            "w2",
            What::AcquireOk {
                index: 6,
                deadline: 1400 * MS,
            },
        ));
        let report = check(&sorted(events), bounds());
        assert_eq!(report.of('L').count(), 1, "{report}");
        assert!(report.longest_free_while_waiting_ms > 480.0);
    }
}
