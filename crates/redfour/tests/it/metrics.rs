//! Lock metrics (feature `metrics`), read through `metrics-util`'s debugging recorder: every
//! name, unit and attribute after a scripted sequence, the gauges back at zero on every path,
//! the opt-in lock attribute.
//!
//! Each test installs its recorder for its own thread only (`set_default_local_recorder`) and
//! runs on a current-thread runtime, so the client's background tasks (keep-alive, the hub,
//! background releases) record on that thread too, and the tests of other modules, running
//! beside it in this process, never reach its recorder.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use metrics::Unit;
use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
use metrics_util::MetricKind;
use redfour::ReleaseOutcome;
use redfour_test::{wait_until_async, RedisServer};

use crate::common::{self, command_calls, exists, fair_mode, wait_gone, DEADLINE};

const WAIT_DURATION: &str = "redfour.lock.wait.duration";
const HOLD_DURATION: &str = "redfour.lock.hold.duration";
const WAITING: &str = "redfour.lock.waiting";
const HELD: &str = "redfour.lock.held";
const LEASES_LOST: &str = "redfour.lock.lease.lost";
const RENEWALS: &str = "redfour.lock.renewals";
const HANDOFFS: &str = "redfour.lock.handoffs";
const RECONNECTS: &str = "redfour.redis.reconnects";

/// One series: a metric name and its attributes, sorted.
type Series = (String, BTreeMap<String, String>);

/// Everything recorded so far. The debugging recorder hands out what changed since the last
/// snapshot (it resets counters and gauges, drains histograms), so this adds the snapshots up.
struct Recorded {
    snapshotter: Snapshotter,
    totals: Mutex<Totals>,
}

#[derive(Default)]
struct Totals {
    counters: HashMap<Series, u64>,
    gauges: HashMap<Series, f64>,
    histograms: HashMap<Series, Vec<f64>>,
    /// The unit each metric was described with, by kind and name.
    units: HashMap<(MetricKind, String), Option<Unit>>,
}

impl Recorded {
    fn new(recorder: &DebuggingRecorder) -> Recorded {
        Recorded {
            snapshotter: recorder.snapshotter(),
            totals: Mutex::default(),
        }
    }

    fn totals(&self) -> std::sync::MutexGuard<'_, Totals> {
        let mut totals = self
            .totals
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, unit, _, value) in self.snapshotter.snapshot().into_vec() {
            let (kind, key) = key.into_parts();
            let series: Series = (
                key.name().to_owned(),
                key.labels()
                    .map(|l| (l.key().to_owned(), l.value().to_owned()))
                    .collect(),
            );
            totals.units.insert((kind, key.name().to_owned()), unit);
            match value {
                DebugValue::Counter(n) => *totals.counters.entry(series).or_default() += n,
                DebugValue::Gauge(delta) => *totals.gauges.entry(series).or_default() += delta.0,
                DebugValue::Histogram(values) => totals
                    .histograms
                    .entry(series)
                    .or_default()
                    .extend(values.iter().map(|v| v.0)),
            }
        }
        totals
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.totals()
            .counters
            .get(&series(name, labels))
            .copied()
            .unwrap_or(0)
    }

    fn gauge(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.totals()
            .gauges
            .get(&series(name, labels))
            .copied()
            .unwrap_or(0.0)
    }

    /// How many values the histogram got.
    fn samples(&self, name: &str, labels: &[(&str, &str)]) -> usize {
        self.totals()
            .histograms
            .get(&series(name, labels))
            .map_or(0, Vec::len)
    }

    /// Every series recorded, by kind, for messages and the attribute checks.
    fn all(&self) -> Vec<(MetricKind, Series)> {
        let totals = self.totals();
        let mut all: Vec<(MetricKind, Series)> = Vec::new();
        all.extend(
            totals
                .counters
                .keys()
                .map(|s| (MetricKind::Counter, s.clone())),
        );
        all.extend(totals.gauges.keys().map(|s| (MetricKind::Gauge, s.clone())));
        all.extend(
            totals
                .histograms
                .keys()
                .map(|s| (MetricKind::Histogram, s.clone())),
        );
        all.sort();
        all
    }

    fn unit(&self, kind: MetricKind, name: &str) -> Option<Unit> {
        self.totals()
            .units
            .get(&(kind, name.to_owned()))
            .copied()
            .flatten()
    }
}

fn series(name: &str, labels: &[(&str, &str)]) -> Series {
    (
        name.to_owned(),
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    )
}

/// Polls `condition` until it holds; fails the test with `what` and the recorded series if it
/// does not within the deadline.
async fn until(seen: &Recorded, what: &str, condition: impl Fn(&Recorded) -> bool) {
    let held = wait_until_async(DEADLINE, || async { condition(seen) }).await;
    assert!(held, "{what}: not reached; recorded {:#?}", seen.all());
}

/// A lock held by no one for long: free once its key expired on the server.
async fn until_expired(server: &RedisServer, key: &str) {
    assert!(
        wait_gone(server, key, DEADLINE).await,
        "{key} never expired\n{}",
        server.log()
    );
}

/// The scripted sequence of the issue (acquire, contended wait, timeout, renewal, lost lease,
/// release) and the rest of the lifecycle, then every name, kind, unit and attribute checked
/// against the table of the crate docs, with exact counts.
#[tokio::test]
async fn every_metric_after_a_scripted_sequence() {
    let recorder = DebuggingRecorder::new();
    let seen = Recorded::new(&recorder);
    let _local = metrics::set_default_local_recorder(&recorder);
    let server = RedisServer::start();
    let a = common::client(&server);
    let b = common::client(&server);
    let lock = [("kind", "lock")];

    // Acquire.
    let first = a
        .lock("job")
        .ttl(Duration::from_secs(10))
        .acquire()
        .await
        .unwrap();
    assert_eq!(seen.gauge(HELD, &lock), 1.0);
    assert_eq!(
        seen.samples(WAIT_DURATION, &[("outcome", "acquired"), ("kind", "lock")]),
        1
    );

    // A contended wait: the waiter counts as waiting until the release hands it the lock (with
    // the fair queue; without it, the release notice wakes it). A ttl within the claim window,
    // so that no claim renewal follows the handoff.
    let attempts = command_calls(&server, "evalsha");
    let waiter = tokio::spawn({
        let b = b.clone();
        async move {
            b.lock("job")
                .ttl(Duration::from_secs(4))
                .wait(DEADLINE)
                .acquire()
                .await
        }
    });
    until(&seen, "one waiter", |s| s.gauge(WAITING, &lock) == 1.0).await;
    assert!(
        wait_until_async(DEADLINE, || async {
            command_calls(&server, "evalsha") > attempts
        })
        .await,
        "the waiter never made its first attempt"
    );
    // Renewal.
    first.renew().await.unwrap();
    assert_eq!(seen.counter(RENEWALS, &[("outcome", "renewed")]), 1);
    // Release.
    first.release().await.unwrap();
    let second = tokio::time::timeout(DEADLINE, waiter)
        .await
        .expect("the waiter got the lock")
        .unwrap()
        .unwrap();
    assert_eq!(seen.gauge(WAITING, &lock), 0.0);
    assert_eq!(seen.gauge(HELD, &lock), 1.0);
    assert_eq!(
        seen.samples(HOLD_DURATION, &[("kind", "lock"), ("end", "released")]),
        1
    );

    // Timeout: a bounded wait runs out while the lock is held.
    let busy = a
        .lock("job")
        .wait(Duration::from_millis(100))
        .acquire()
        .await
        .unwrap_err();
    assert!(busy.is_not_acquired(), "{busy:?}");
    assert_eq!(
        seen.samples(WAIT_DURATION, &[("outcome", "timeout"), ("kind", "lock")]),
        1
    );
    // An error: foreign data at the key.
    server.cmd(&["SET", "lock:foreign", "not a lock"]);
    let foreign = a
        .lock("foreign")
        .wait(Duration::from_secs(1))
        .acquire()
        .await
        .unwrap_err();
    assert!(foreign.is_corrupt_data(), "{foreign:?}");
    second.release().await.unwrap();

    // A lost lease: the holder is frozen (it renews nothing) past its ttl, the server expires
    // the lock, another client takes it, and the holder's next renewal finds it taken.
    let frozen = a
        .lock("frozen")
        .ttl(Duration::from_millis(300))
        .acquire()
        .await
        .unwrap();
    until_expired(&server, "lock:frozen").await;
    let taker = b
        .lock("frozen")
        .ttl(Duration::from_secs(10))
        .try_acquire()
        .await
        .unwrap()
        .expect("the expired lock is free");
    assert!(!frozen.renew().await.unwrap().success);
    assert_eq!(seen.counter(LEASES_LOST, &lock), 1);
    assert_eq!(
        seen.samples(HOLD_DURATION, &[("kind", "lock"), ("end", "lost")]),
        1
    );
    // Its release conflicts: the holding ended already, it is not counted twice.
    assert_eq!(
        frozen.release().await.unwrap().result,
        ReleaseOutcome::Conflict
    );
    // Lost the other way: the lock is simply gone.
    let gone = a
        .lock("gone")
        .ttl(Duration::from_millis(300))
        .try_acquire()
        .await
        .unwrap()
        .expect("free");
    until_expired(&server, "lock:gone").await;
    assert!(!gone.renew().await.unwrap().success);
    drop(gone);
    // A release after the lock expired: the holding ends `expired`.
    let lapsed = a
        .lock("lapsed")
        .ttl(Duration::from_millis(300))
        .try_acquire()
        .await
        .unwrap()
        .expect("free");
    until_expired(&server, "lock:lapsed").await;
    assert_eq!(
        lapsed.release().await.unwrap().result,
        ReleaseOutcome::Expired
    );
    // A renewal that fails (foreign data replaced the lock); its release fails as well, and
    // the guard ends as dropped (released in the background, which fails too).
    let overwritten = a
        .lock("overwritten")
        .ttl(Duration::from_secs(10))
        .try_acquire()
        .await
        .unwrap()
        .expect("free");
    server.cmd(&["SET", "lock:overwritten", "not a lock"]);
    assert!(overwritten.renew().await.unwrap_err().is_corrupt_data());
    assert!(overwritten.release().await.unwrap_err().is_corrupt_data());
    // Dropped without a release.
    drop(taker);
    assert!(a.settle(DEADLINE).await && b.settle(DEADLINE).await);
    assert!(
        !exists(&server, "lock:frozen"),
        "the dropped guard's release"
    );

    // Every connection killed: each client's command connection comes back at its next
    // command, each hub's subscription by itself.
    server.kill_clients();
    until(&seen, "both clients' connections back", |s| {
        s.counter(RECONNECTS, &[("role", "subscriptions")]) == 2
    })
    .await;
    for client in [&a, &b] {
        assert!(
            wait_until_async(DEADLINE, || async { client.ping().await.is_ok() }).await,
            "{}",
            server.log()
        );
    }
    until(&seen, "commands reconnected", |s| {
        s.counter(RECONNECTS, &[("role", "commands")]) == 2
    })
    .await;

    // The whole record, series by series, with the table's attributes.
    let handoffs = u64::from(fair_mode());
    let mut expected: Vec<(MetricKind, Series, f64)> = vec![
        (
            MetricKind::Histogram,
            series(WAIT_DURATION, &[("outcome", "acquired"), ("kind", "lock")]),
            7.0,
        ),
        (
            MetricKind::Histogram,
            series(WAIT_DURATION, &[("outcome", "timeout"), ("kind", "lock")]),
            1.0,
        ),
        (
            MetricKind::Histogram,
            series(WAIT_DURATION, &[("outcome", "error"), ("kind", "lock")]),
            1.0,
        ),
        (
            MetricKind::Histogram,
            series(HOLD_DURATION, &[("kind", "lock"), ("end", "released")]),
            2.0,
        ),
        (
            MetricKind::Histogram,
            series(HOLD_DURATION, &[("kind", "lock"), ("end", "lost")]),
            2.0,
        ),
        (
            MetricKind::Histogram,
            series(HOLD_DURATION, &[("kind", "lock"), ("end", "expired")]),
            1.0,
        ),
        (
            MetricKind::Histogram,
            series(HOLD_DURATION, &[("kind", "lock"), ("end", "dropped")]),
            2.0,
        ),
        (MetricKind::Gauge, series(WAITING, &lock), 0.0),
        (MetricKind::Gauge, series(HELD, &lock), 0.0),
        (MetricKind::Counter, series(LEASES_LOST, &lock), 2.0),
        (
            MetricKind::Counter,
            series(RENEWALS, &[("outcome", "renewed")]),
            1.0,
        ),
        (
            MetricKind::Counter,
            series(RENEWALS, &[("outcome", "conflict")]),
            1.0,
        ),
        (
            MetricKind::Counter,
            series(RENEWALS, &[("outcome", "missing")]),
            1.0,
        ),
        (
            MetricKind::Counter,
            series(RENEWALS, &[("outcome", "error")]),
            1.0,
        ),
        (
            MetricKind::Counter,
            series(RECONNECTS, &[("role", "commands")]),
            2.0,
        ),
        (
            MetricKind::Counter,
            series(RECONNECTS, &[("role", "subscriptions")]),
            2.0,
        ),
    ];
    if handoffs > 0 {
        expected.push((MetricKind::Counter, series(HANDOFFS, &lock), 1.0));
    }
    expected.sort_by(|x, y| (x.0, &x.1).cmp(&(y.0, &y.1)));
    let got: Vec<(MetricKind, Series, f64)> = seen
        .all()
        .into_iter()
        .map(|(kind, s)| {
            let value = match kind {
                MetricKind::Counter => seen.counter(&s.0, &pairs(&s.1)) as f64,
                MetricKind::Gauge => seen.gauge(&s.0, &pairs(&s.1)),
                MetricKind::Histogram => seen.samples(&s.0, &pairs(&s.1)) as f64,
            };
            (kind, s, value)
        })
        .collect();
    assert_eq!(got, expected);

    // Units: seconds for the durations; the counts of the OpenTelemetry table ({waiter},
    // {holding}, ...) are plain counts to the facade.
    for (kind, name, unit) in [
        (MetricKind::Histogram, WAIT_DURATION, Unit::Seconds),
        (MetricKind::Histogram, HOLD_DURATION, Unit::Seconds),
        (MetricKind::Gauge, WAITING, Unit::Count),
        (MetricKind::Gauge, HELD, Unit::Count),
        (MetricKind::Counter, LEASES_LOST, Unit::Count),
        (MetricKind::Counter, RENEWALS, Unit::Count),
        (MetricKind::Counter, RECONNECTS, Unit::Count),
    ] {
        assert_eq!(seen.unit(kind, name), Some(unit), "{name}");
    }
    if handoffs > 0 {
        assert_eq!(seen.unit(MetricKind::Counter, HANDOFFS), Some(Unit::Count));
    }
    // Durations are in seconds: the two lost holdings lasted about their ttl of 300 ms (counted
    // from the guard's creation, a little after the server set the expiry, up to the renewal
    // that found the lock gone or taken).
    let totals = seen.totals();
    let lost = &totals.histograms[&series(HOLD_DURATION, &[("kind", "lock"), ("end", "lost")])];
    assert!(lost.iter().all(|s| (0.2..10.0).contains(s)), "{lost:?}");
}

fn pairs(labels: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect()
}

/// `waiting` and `held` come back to zero however a waiter or a holder goes away: a wait
/// cancelled, a guard dropped, a lease lost to keep-alive while its guard is still alive.
#[tokio::test]
async fn gauges_return_to_zero_on_every_path() {
    let recorder = DebuggingRecorder::new();
    let seen = Recorded::new(&recorder);
    let _local = metrics::set_default_local_recorder(&recorder);
    let server = RedisServer::start();
    let locks = common::client(&server);
    let lock = [("kind", "lock")];

    // A wait cancelled: its future dropped while it waits.
    let holder = locks.lock("busy").acquire().await.unwrap();
    let waiter = tokio::spawn({
        let locks = locks.clone();
        async move { locks.lock("busy").acquire().await }
    });
    until(&seen, "the waiter waits", |s| {
        s.gauge(WAITING, &lock) == 1.0
    })
    .await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    assert_eq!(seen.gauge(WAITING, &lock), 0.0);
    assert_eq!(
        seen.samples(WAIT_DURATION, &[("outcome", "acquired"), ("kind", "lock")]),
        1,
        "a cancelled wait has no outcome to record"
    );

    // Several waits at once, each ending its own way.
    let quick = locks.lock("busy").wait(Duration::from_millis(50)).acquire();
    let patient = locks.lock("busy").wait(DEADLINE).acquire();
    let release = async {
        until(&seen, "two waiters", |s| s.gauge(WAITING, &lock) == 2.0).await;
        // The quick one gives up first; then the patient one gets the lock.
        until(&seen, "one waiter left", |s| s.gauge(WAITING, &lock) == 1.0).await;
        holder.release().await.unwrap();
    };
    let (quick, patient, ()) = tokio::join!(quick, patient, release);
    assert!(quick.unwrap_err().is_not_acquired());
    let patient = patient.unwrap();
    assert_eq!(seen.gauge(WAITING, &lock), 0.0);
    assert_eq!(seen.gauge(HELD, &lock), 1.0);

    // A guard dropped.
    drop(patient);
    assert_eq!(seen.gauge(HELD, &lock), 0.0);

    // A lease lost under keep-alive (the key deleted): no longer held, though the guard lives.
    let kept = locks
        .lock("kept")
        .ttl(Duration::from_millis(600))
        .keep_alive(true)
        .acquire()
        .await
        .unwrap();
    assert_eq!(seen.gauge(HELD, &lock), 1.0);
    server.cmd(&["DEL", "lock:kept"]);
    tokio::time::timeout(DEADLINE, kept.lost())
        .await
        .expect("the keep-alive saw the loss");
    assert_eq!(seen.gauge(HELD, &lock), 0.0);
    assert_eq!(seen.counter(LEASES_LOST, &lock), 1);
    drop(kept);
    assert_eq!(seen.gauge(HELD, &lock), 0.0, "ended once");
    assert_eq!(
        seen.samples(HOLD_DURATION, &[("kind", "lock"), ("end", "dropped")]),
        1,
        "only the first guard's drop"
    );

    // The Node-shaped calls hold no guard: timed, never counted as held.
    let node = locks
        .acquire_lock("node", Duration::from_secs(10))
        .await
        .unwrap();
    assert!(node.success);
    assert_eq!(seen.gauge(HELD, &lock), 0.0);
    locks.release_lock("node", node.index).await.unwrap();
    assert!(locks.settle(DEADLINE).await);
    assert_eq!(seen.gauge(WAITING, &lock), 0.0);
    assert_eq!(seen.gauge(HELD, &lock), 0.0);
}

/// `metric_lock_names(true)` adds the lock's key as `lock` to the lock metrics, and to none
/// of the connection metrics; without it no series has a `lock` attribute (see above).
#[tokio::test]
async fn lock_names_are_an_opt_in_attribute() {
    let recorder = DebuggingRecorder::new();
    let seen = Recorded::new(&recorder);
    let _local = metrics::set_default_local_recorder(&recorder);
    let server = RedisServer::start();
    let named = common::builder(&server)
        .metric_lock_names(true)
        .build()
        .unwrap();
    let guard = named
        .lock("report")
        .keep_alive(true)
        .acquire()
        .await
        .unwrap();
    guard.renew().await.unwrap();
    guard.release().await.unwrap();
    server.kill_clients();
    assert!(wait_until_async(DEADLINE, || async { named.ping().await.is_ok() }).await);

    let mut lock_values = BTreeSet::new();
    for (kind, (name, labels)) in seen.all() {
        let with_lock = labels.get("lock");
        if name == RECONNECTS {
            assert_eq!(with_lock, None, "{kind:?} {name} {labels:?}");
        } else {
            lock_values.insert(with_lock.cloned());
        }
    }
    assert_eq!(
        lock_values,
        BTreeSet::from([Some("lock:report".to_owned())])
    );
    let named_lock = [("kind", "lock"), ("lock", "lock:report")];
    assert_eq!(seen.gauge(HELD, &named_lock), 0.0);
    assert_eq!(
        seen.samples(
            WAIT_DURATION,
            &[
                ("outcome", "acquired"),
                ("kind", "lock"),
                ("lock", "lock:report")
            ]
        ),
        1
    );
    assert_eq!(
        seen.counter(RENEWALS, &[("outcome", "renewed"), ("lock", "lock:report")]),
        1
    );
}
