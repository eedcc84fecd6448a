//! Lock metrics through the `metrics` facade (feature `metrics`): every recording point of the
//! crate is one call into this module. Without the feature the same names exist as empty
//! inline functions and zero-sized types, so the callers compile to nothing and the crate does
//! not depend on `metrics` at all.
//!
//! The names, units and attributes are the table in the crate docs (`lib.rs`, "Metrics"); the
//! test `tests/it/metrics.rs` checks them against a recorder.

/// Which primitive a record is about: the `kind` attribute. Shared locks and semaphores add
/// a variant each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Lock,
}

/// How a wait ended: the `outcome` attribute of `redfour.lock.wait.duration`.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WaitEnd {
    Acquired,
    /// Not acquired: the wait ran out (a one-shot attempt, which waits zero, found the lock
    /// held).
    Timeout,
    Error,
}

/// How a holding ended: the `end` attribute of `redfour.lock.hold.duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// Released by its holder.
    Released,
    /// The lock had expired on the server when its holder released it.
    Expired,
    /// The lease was lost while held (a renewal found the lock gone or taken, or the deadline
    /// passed unrenewed), or a release found someone else holding it.
    Lost,
    /// The guard was dropped without a release (or its release failed): released in the
    /// background.
    Dropped,
}

/// Which connection came back: the `role` attribute of `redfour.redis.reconnects`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    /// The command connection.
    Commands,
    /// The waiters' subscription.
    Subscriptions,
    /// The connection of acquires that wait for replica acknowledgements.
    Acks,
}

/// What a wait's result says about its outcome.
#[cfg_attr(not(feature = "metrics"), allow(dead_code))]
pub(crate) trait Decided {
    fn wait_end(&self) -> WaitEnd;
}

impl Decided for crate::wait::Waited {
    fn wait_end(&self) -> WaitEnd {
        match self {
            crate::wait::Waited::Acquired { .. } => WaitEnd::Acquired,
            crate::wait::Waited::GaveUp { .. } => WaitEnd::Timeout,
        }
    }
}

impl Decided for crate::engine::Attempt {
    fn wait_end(&self) -> WaitEnd {
        use crate::engine::Attempt;
        match self {
            Attempt::Acquired { .. } => WaitEnd::Acquired,
            // A one-shot attempt (no queue token) is never handed a lock: held either way.
            Attempt::Held { .. } | Attempt::HandedOver { .. } => WaitEnd::Timeout,
            // Both become errors for the caller.
            Attempt::WonTooLate { .. } | Attempt::Undecided => WaitEnd::Error,
        }
    }
}

impl End {
    /// The end a guard's release answered.
    pub(crate) fn of_release(outcome: crate::outcome::ReleaseOutcome) -> End {
        use crate::outcome::ReleaseOutcome;
        match outcome {
            ReleaseOutcome::Released => End::Released,
            ReleaseOutcome::Expired => End::Expired,
            // Someone else held it: this guard had lost it before.
            ReleaseOutcome::Conflict => End::Lost,
        }
    }
}

#[cfg(feature = "metrics")]
pub(crate) use on::*;

#[cfg(not(feature = "metrics"))]
pub(crate) use off::*;

#[cfg(feature = "metrics")]
mod on {
    use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
    use std::sync::Arc;
    use std::time::Instant;

    use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata, Unit};
    use redis::aio::ConnectionLike;
    use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

    use super::{Decided, End, Kind, Role, WaitEnd};
    use crate::config::Config;
    use crate::error::Result;
    use crate::outcome::RenewOutcome;

    pub(crate) const WAIT_DURATION: &str = "redfour.lock.wait.duration";
    pub(crate) const HOLD_DURATION: &str = "redfour.lock.hold.duration";
    pub(crate) const WAITING: &str = "redfour.lock.waiting";
    pub(crate) const HELD: &str = "redfour.lock.held";
    pub(crate) const LEASES_LOST: &str = "redfour.lock.lease.lost";
    pub(crate) const RENEWALS: &str = "redfour.lock.renewals";
    pub(crate) const HANDOFFS: &str = "redfour.lock.handoffs";
    pub(crate) const RECONNECTS: &str = "redfour.redis.reconnects";

    static METADATA: Metadata<'static> =
        Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

    /// A key whose name and labels are all `'static`: built at compile time (its hash too), so
    /// that naming a record with the default attributes allocates nothing.
    macro_rules! key {
        ($name:expr $(, $k:literal => $v:literal)* $(,)?) => {{
            static LABELS: &[Label] = &[$(Label::from_static_parts($k, $v)),*];
            static KEY: Key = Key::from_static_parts($name, LABELS);
            &KEY
        }};
    }

    /// Tells the recorder in force what each metric is, with its unit. Called at every
    /// `ClientBuilder::build`: cheap, idempotent, and it reaches a recorder installed between
    /// two builds.
    pub(crate) fn describe() {
        metrics::describe_histogram!(
            WAIT_DURATION,
            Unit::Seconds,
            "Time from an acquire's call to its outcome (acquired, timeout, error)"
        );
        metrics::describe_histogram!(
            HOLD_DURATION,
            Unit::Seconds,
            "Time a guard held its lock, by how the holding ended"
        );
        metrics::describe_gauge!(
            WAITING,
            Unit::Count,
            "Acquires waiting for a lock now ({waiter})"
        );
        metrics::describe_gauge!(HELD, Unit::Count, "Locks held by guards now ({holding})");
        metrics::describe_counter!(
            LEASES_LOST,
            Unit::Count,
            "Leases lost while their guard was alive ({lease})"
        );
        metrics::describe_counter!(
            RENEWALS,
            Unit::Count,
            "Guard renewals, by outcome ({renewal})"
        );
        metrics::describe_counter!(
            HANDOFFS,
            Unit::Count,
            "Locks handed straight to a waiter of this process by a release ({handoff})"
        );
        metrics::describe_counter!(
            RECONNECTS,
            Unit::Count,
            "Connections to Redis that came back after they were lost ({reconnect})"
        );
    }

    /// What a record is about: its primitive, and the lock's key when the client opted in
    /// (`ClientBuilder::metric_lock_names`).
    #[derive(Clone)]
    pub(crate) struct Subject {
        kind: Kind,
        lock: Option<Arc<str>>,
    }

    impl Subject {
        pub(crate) fn new(config: &Config, kind: Kind, key: &str) -> Subject {
            Subject {
                kind,
                lock: config.metric_lock_names.then(|| key.into()),
            }
        }

        /// `key` with the `lock` attribute added when the client opted in.
        fn key(&self, key: &'static Key) -> KeyRef {
            match &self.lock {
                None => KeyRef::Static(key),
                Some(lock) => {
                    KeyRef::Owned(key.with_extra_labels(vec![Label::new("lock", lock.to_string())]))
                }
            }
        }

        fn histogram(&self, key: &'static Key) -> Histogram {
            let key = self.key(key);
            metrics::with_recorder(|r| r.register_histogram(key.get(), &METADATA))
        }

        fn gauge(&self, key: &'static Key) -> Gauge {
            let key = self.key(key);
            metrics::with_recorder(|r| r.register_gauge(key.get(), &METADATA))
        }

        fn counter(&self, key: &'static Key) -> Counter {
            let key = self.key(key);
            metrics::with_recorder(|r| r.register_counter(key.get(), &METADATA))
        }
    }

    enum KeyRef {
        Static(&'static Key),
        Owned(Key),
    }

    impl KeyRef {
        fn get(&self) -> &Key {
            match self {
                KeyRef::Static(key) => key,
                KeyRef::Owned(key) => key,
            }
        }
    }

    /// An acquire in progress. A waiting one counts in `redfour.lock.waiting` until it is
    /// dropped (won, given up, failed or cancelled); [`end`](Wait::end) records its duration.
    pub(crate) struct Wait {
        subject: Subject,
        started: Instant,
        /// The gauge raised at the start, lowered on drop; `None` for a one-shot attempt.
        waiting: Option<Gauge>,
    }

    impl Wait {
        /// A waiting acquire of the lock at `key`.
        pub(crate) fn start(config: &Config, kind: Kind, key: &str) -> Wait {
            let subject = Subject::new(config, kind, key);
            let waiting = match subject.kind {
                Kind::Lock => subject.gauge(key!(WAITING, "kind" => "lock")),
            };
            waiting.increment(1.0);
            Wait {
                subject,
                started: Instant::now(),
                waiting: Some(waiting),
            }
        }

        /// A one-shot attempt on the lock at `key`: timed, not counted as waiting.
        pub(crate) fn attempt(config: &Config, kind: Kind, key: &str) -> Wait {
            Wait {
                subject: Subject::new(config, kind, key),
                started: Instant::now(),
                waiting: None,
            }
        }

        /// Records how the acquire ended and how long it took; hands `result` back.
        pub(crate) fn end<T: Decided>(self, result: Result<T>) -> Result<T> {
            let end = match &result {
                Ok(decided) => decided.wait_end(),
                Err(_) => WaitEnd::Error,
            };
            let key = match (self.subject.kind, end) {
                (Kind::Lock, WaitEnd::Acquired) => {
                    key!(WAIT_DURATION, "outcome" => "acquired", "kind" => "lock")
                }
                (Kind::Lock, WaitEnd::Timeout) => {
                    key!(WAIT_DURATION, "outcome" => "timeout", "kind" => "lock")
                }
                (Kind::Lock, WaitEnd::Error) => {
                    key!(WAIT_DURATION, "outcome" => "error", "kind" => "lock")
                }
            };
            self.subject
                .histogram(key)
                .record(self.started.elapsed().as_secs_f64());
            result
        }
    }

    impl Drop for Wait {
        fn drop(&mut self) {
            if let Some(waiting) = &self.waiting {
                waiting.decrement(1.0);
            }
        }
    }

    /// A guard's holding: counts in `redfour.lock.held` from its start until it ends, once,
    /// whichever way comes first (a release, a loss, the guard's drop).
    pub(crate) struct Hold {
        subject: Subject,
        started: Instant,
        held: Gauge,
        ended: AtomicBool,
    }

    impl Hold {
        pub(crate) fn start(config: &Config, kind: Kind, key: &str) -> Hold {
            let subject = Subject::new(config, kind, key);
            let held = match subject.kind {
                Kind::Lock => subject.gauge(key!(HELD, "kind" => "lock")),
            };
            held.increment(1.0);
            Hold {
                subject,
                started: Instant::now(),
                held,
                ended: AtomicBool::new(false),
            }
        }

        /// The holding ended this way (only the first end counts).
        pub(crate) fn end(&self, end: End) {
            if self.ended.swap(true, Ordering::Relaxed) {
                return;
            }
            self.held.decrement(1.0);
            let key = match (self.subject.kind, end) {
                (Kind::Lock, End::Released) => {
                    key!(HOLD_DURATION, "kind" => "lock", "end" => "released")
                }
                (Kind::Lock, End::Expired) => {
                    key!(HOLD_DURATION, "kind" => "lock", "end" => "expired")
                }
                (Kind::Lock, End::Lost) => key!(HOLD_DURATION, "kind" => "lock", "end" => "lost"),
                (Kind::Lock, End::Dropped) => {
                    key!(HOLD_DURATION, "kind" => "lock", "end" => "dropped")
                }
            };
            self.subject
                .histogram(key)
                .record(self.started.elapsed().as_secs_f64());
        }

        /// The lease was lost while the guard was alive (counted once per guard by the
        /// caller): `redfour.lock.lease.lost`, and the holding ends.
        pub(crate) fn lost(&self) {
            if self.ended.load(Ordering::Relaxed) {
                // Released or dropped already: no holding to lose.
                return;
            }
            let key = match self.subject.kind {
                Kind::Lock => key!(LEASES_LOST, "kind" => "lock"),
            };
            self.subject.counter(key).increment(1);
            self.end(End::Lost);
        }

        /// A renewal of this guard's lease answered `result`.
        pub(crate) fn renewal(&self, result: &Result<RenewOutcome>) {
            let key = match result {
                Ok(RenewOutcome::Renewed) => key!(RENEWALS, "outcome" => "renewed"),
                Ok(RenewOutcome::Missing) => key!(RENEWALS, "outcome" => "missing"),
                Ok(RenewOutcome::Conflict) => key!(RENEWALS, "outcome" => "conflict"),
                Err(_) => key!(RENEWALS, "outcome" => "error"),
            };
            self.subject.counter(key).increment(1);
        }
    }

    impl Drop for Hold {
        fn drop(&mut self) {
            // Every guard ends its holding itself; this only keeps the gauge right if one
            // ever does not.
            self.end(End::Dropped);
        }
    }

    /// A lock was handed to one of this client's waiters.
    pub(crate) fn handoff(config: &Config, kind: Kind, key: &str) {
        let subject = Subject::new(config, kind, key);
        let metric = match kind {
            Kind::Lock => key!(HANDOFFS, "kind" => "lock"),
        };
        subject.counter(metric).increment(1);
    }

    /// A connection came back after it had been lost.
    pub(crate) fn reconnect(role: Role) {
        let key = match role {
            Role::Commands => key!(RECONNECTS, "role" => "commands"),
            Role::Subscriptions => key!(RECONNECTS, "role" => "subscriptions"),
            Role::Acks => key!(RECONNECTS, "role" => "acks"),
        };
        metrics::with_recorder(|r| r.register_counter(key, &METADATA)).increment(1);
    }

    /// Which of a client's connections (per role) were opened before: the next one opened in
    /// a role is a reconnection.
    #[derive(Default)]
    pub(crate) struct Opened([AtomicBool; 2]);

    impl Opened {
        /// A connection of `role` (commands or acks) was opened.
        pub(crate) fn opened(&self, role: Role) {
            let slot = match role {
                Role::Acks => &self.0[1],
                _ => &self.0[0],
            };
            if slot.swap(true, Ordering::Relaxed) {
                reconnect(role);
            }
        }
    }

    /// A reconnecting connection (the redis crate's `ConnectionManager`, which reconnects by
    /// itself and says nothing) whose reconnections are counted: once it has answered, a
    /// command failing in a way that makes the manager reconnect marks it down, and the next
    /// command answered counts a reconnection.
    #[derive(Clone)]
    pub(crate) struct Watched<C> {
        inner: C,
        role: Role,
        state: Arc<AtomicU8>,
    }

    /// [`Watched`]'s states: never answered yet (a first connection that fails and then
    /// succeeds is no reconnection), up, down after it was up.
    const NEVER_UP: u8 = 0;
    const UP: u8 = 1;
    const DOWN: u8 = 2;

    /// `conn`, with its reconnections counted under `role`.
    pub(crate) fn watched<C>(conn: C, role: Role) -> Watched<C> {
        Watched {
            inner: conn,
            role,
            state: Arc::new(AtomicU8::new(NEVER_UP)),
        }
    }

    impl<C> Watched<C> {
        fn saw<T>(&self, result: &RedisResult<T>) {
            match result {
                // The usual case costs one load.
                Ok(_) => match self.state.load(Ordering::Relaxed) {
                    UP => {}
                    DOWN => {
                        if self.state.swap(UP, Ordering::Relaxed) == DOWN {
                            reconnect(self.role);
                        }
                    }
                    _ => self.state.store(UP, Ordering::Relaxed),
                },
                // What makes the manager reconnect: an unrecoverable error (a dropped
                // connection, an unparsable reply), or an I/O error opening the connection.
                // A response timeout alone does not.
                Err(e) if drops_connection(e) => {
                    let _ =
                        self.state
                            .compare_exchange(UP, DOWN, Ordering::Relaxed, Ordering::Relaxed);
                }
                Err(_) => {}
            }
        }
    }

    fn drops_connection(e: &RedisError) -> bool {
        e.is_unrecoverable_error() || (e.is_io_error() && !e.is_timeout())
    }

    impl<C: ConnectionLike + Send + Sync> ConnectionLike for Watched<C> {
        fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
            watch(self, |c| c.req_packed_command(cmd))
        }

        fn req_packed_commands<'a>(
            &'a mut self,
            pipeline: &'a Pipeline,
            offset: usize,
            count: usize,
        ) -> RedisFuture<'a, Vec<Value>> {
            watch(self, |c| c.req_packed_commands(pipeline, offset, count))
        }

        fn get_db(&self) -> i64 {
            self.inner.get_db()
        }
    }

    fn watch<'a, C: Send + Sync, T: Send + 'a>(
        conn: &'a mut Watched<C>,
        call: impl FnOnce(&'a mut C) -> RedisFuture<'a, T>,
    ) -> RedisFuture<'a, T> {
        let Watched { inner, role, state } = conn;
        let this = Watched {
            inner: (),
            role: *role,
            state: state.clone(),
        };
        let reply = call(inner);
        Box::pin(async move {
            let result = reply.await;
            this.saw(&result);
            result
        })
    }
}

#[cfg(not(feature = "metrics"))]
mod off {
    //! The same names as `on`, doing nothing.

    use super::{Decided, End, Kind, Role};
    use crate::config::Config;
    use crate::error::Result;
    use crate::outcome::RenewOutcome;

    #[inline(always)]
    pub(crate) fn describe() {}

    pub(crate) struct Wait;

    impl Wait {
        #[inline(always)]
        pub(crate) fn start(_: &Config, _: Kind, _: &str) -> Wait {
            Wait
        }

        #[inline(always)]
        pub(crate) fn attempt(_: &Config, _: Kind, _: &str) -> Wait {
            Wait
        }

        #[inline(always)]
        pub(crate) fn end<T: Decided>(self, result: Result<T>) -> Result<T> {
            result
        }
    }

    pub(crate) struct Hold;

    impl Hold {
        #[inline(always)]
        pub(crate) fn start(_: &Config, _: Kind, _: &str) -> Hold {
            Hold
        }

        #[inline(always)]
        pub(crate) fn end(&self, _: End) {}

        #[inline(always)]
        pub(crate) fn lost(&self) {}

        #[inline(always)]
        pub(crate) fn renewal(&self, _: &Result<RenewOutcome>) {}
    }

    #[inline(always)]
    pub(crate) fn handoff(_: &Config, _: Kind, _: &str) {}

    #[inline(always)]
    pub(crate) fn reconnect(_: Role) {}

    #[derive(Default)]
    pub(crate) struct Opened;

    impl Opened {
        #[inline(always)]
        pub(crate) fn opened(&self, _: Role) {}
    }

    /// Without the feature, a watched connection is the connection itself.
    pub(crate) type Watched<C> = C;

    #[inline(always)]
    pub(crate) fn watched<C>(conn: C, _: Role) -> Watched<C> {
        conn
    }
}

#[cfg(all(test, feature = "metrics"))]
mod tests {
    use std::collections::VecDeque;
    use std::io;

    use futures_util::FutureExt;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use redis::aio::ConnectionLike;
    use redis::{Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

    use super::*;

    /// A connection that answers from a script: `Ok` or an I/O error of the given kind.
    struct Scripted(VecDeque<Option<io::ErrorKind>>);

    impl Scripted {
        fn next(&mut self) -> RedisResult<Value> {
            match self.0.pop_front().flatten() {
                None => Ok(Value::Okay),
                Some(kind) => Err(RedisError::from(io::Error::new(kind, "scripted"))),
            }
        }
    }

    impl ConnectionLike for Scripted {
        fn req_packed_command<'a>(&'a mut self, _: &'a Cmd) -> RedisFuture<'a, Value> {
            let reply = self.next();
            Box::pin(async move { reply })
        }

        fn req_packed_commands<'a>(
            &'a mut self,
            _: &'a Pipeline,
            _: usize,
            _: usize,
        ) -> RedisFuture<'a, Vec<Value>> {
            let reply = self.next().map(|v| vec![v]);
            Box::pin(async move { reply })
        }

        fn get_db(&self) -> i64 {
            0
        }
    }

    /// The reconnections a watched connection counts for a sequence of answers.
    fn reconnections(answers: &[Option<io::ErrorKind>]) -> u64 {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let mut conn = watched(Scripted(answers.iter().copied().collect()), Role::Commands);
            for _ in answers {
                let _ = conn
                    .req_packed_command(&redis::cmd("PING"))
                    .now_or_never()
                    .expect("answers at once");
            }
        });
        snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .map(|(key, _, _, value)| {
                assert_eq!(key.key().name(), RECONNECTS);
                match value {
                    DebugValue::Counter(n) => n,
                    other => panic!("{other:?}"),
                }
            })
            .sum()
    }

    #[test]
    fn a_watched_connection_counts_each_return_after_a_loss() {
        use io::ErrorKind::{ConnectionRefused, ConnectionReset, TimedOut};
        // Up, lost (twice while reconnecting), back: one reconnection.
        let lost_once = [
            None,
            Some(ConnectionReset),
            Some(ConnectionRefused),
            None,
            None,
        ];
        assert_eq!(reconnections(&lost_once), 1);
        // Twice.
        let lost_twice = [
            None,
            Some(ConnectionReset),
            None,
            Some(ConnectionReset),
            None,
        ];
        assert_eq!(reconnections(&lost_twice), 2);
        // Unreachable at first, then up: a first connection, no reconnection.
        assert_eq!(reconnections(&[Some(ConnectionRefused), None, None]), 0);
        // A response timeout does not make the manager reconnect.
        assert_eq!(reconnections(&[None, Some(TimedOut), None]), 0);
    }
}
