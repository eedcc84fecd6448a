//! `handoff`: how long after the holder lets go the next waiter holds the lock.
//!
//! Each sample: client A takes the lock; a task waits for it on client B
//! (`lock(id).acquire()`, the guard API, no wait limit); once B's waiter is registered *and* its first attempt
//! has been executed by the server (the server's `EVALSHA` count moved; on a cluster the count
//! summed over the masters, on Redlock by one per master) and a settle time has passed, A notes `Instant::now()` and calls `release_lock`. The waiter task notes
//! `Instant::now()` as soon as `acquire` returns its guard. Both instants come from the same
//! monotonic clock in the same process, so their difference is the handoff latency, with
//! nothing estimated. B then releases, and the next sample starts.
//!
//! The instant the notice reaches B's connection reader is taken too (from the library's
//! `redfour::handoff_notice` trace event), which splits each sample into the part before the
//! notice arrives (release request, server, notice) and the part after (the library waking
//! the waiter).
//!
//! Then the yardsticks, each after the same idle pause as a release: a `PING` round trip,
//! and then, on a standalone server, the floor of a notice on this client stack: from the call
//! of a `PUBLISH` (and, in turn, of a script that does nothing but publish) on a command
//! connection to the push message's arrival in the reader of a RESP3 subscription, as the
//! library's notices arrive. A handoff is such a script-published notice plus what the
//! handover script does on the server beyond publishing, and the waiter's wake-up.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use redis::aio::{ConnectionManager, MultiplexedConnection};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::report::Report;
use crate::scenarios::{poll_until, Ctx};
use crate::stack::{ping_latencies, BENCH_TTL};
use crate::stats::{round_to, Latencies};
use crate::Result;

const NAME: &str = "handoff";
const ID: &str = "handoff";

/// How long to wait for one step of a sample before calling the harness (or the library)
/// stuck.
const STEP_LIMIT: Duration = Duration::from_secs(10);

/// Measures the round trip, then the handoffs.
pub async fn run(ctx: &mut Ctx) -> Result<Report> {
    let holder = ctx.target.client(NAME)?;
    let waiter = ctx.target.client(NAME)?;
    holder.ping().await?;
    waiter.ping().await?;

    let mut conn = ctx.target.connection().await?;
    let rtt = ping_latencies(&mut conn, ctx.params.rtt_warmup, ctx.params.rtt_samples).await?;
    // Time for the first attempt's answer to travel back and the waiter to park, once the
    // server has executed it.
    let settle = (rtt.percentile(99.0) * 2).max(Duration::from_millis(1));

    // Times the notice's arrival in the waiter's connection reader (see `notice_clock`).
    let clocked = crate::notice_clock::install();
    let p = &ctx.params;
    let mut samples = Vec::with_capacity(p.handoff_samples);
    let mut to_notice = Vec::with_capacity(p.handoff_samples);
    let mut notice_to_holder = Vec::with_capacity(p.handoff_samples);
    for i in 0..p.handoff_warmup + p.handoff_samples {
        let held = holder.acquire_lock(ID, BENCH_TTL).await?;
        if !held.success {
            return Err(format!("the holder could not take the free lock {ID}").into());
        }
        let attempts_before = ctx.admin.evalsha_calls().await?;

        // In a JoinSet so that an early return (an error) aborts the waiter instead of leaving
        // it behind to disturb the next scenario.
        let mut task = JoinSet::new();
        task.spawn({
            let waiter = waiter.clone();
            async move {
                let got = waiter.lock(ID).ttl(BENCH_TTL).acquire().await;
                (got, Instant::now())
            }
        });
        if !poll_until(STEP_LIMIT, || waiter.stats().waiters >= 1).await {
            return Err("the waiter did not register within 10 s".into());
        }
        let attempted = match attempts_before {
            Some(n) => {
                let attempt = ctx.target.endpoints.evalsha_per_attempt();
                ctx.admin
                    .wait_for_evalsha_calls(n + attempt, STEP_LIMIT)
                    .await?
            }
            None => false,
        };
        // Without command statistics, fall back to a generous pause for the first attempt.
        tokio::time::sleep(if attempted { settle } else { settle * 20 }).await;

        crate::notice_clock::take();
        let released_at = Instant::now();
        let released = holder.release_lock(ID, held.index).await?;
        if released.result != redfour::ReleaseOutcome::Released {
            return Err(format!("the holder's release answered {}", released.result).into());
        }
        let (got, holds_at) = tokio::time::timeout(STEP_LIMIT, task.join_next())
            .await
            .map_err(|_| "the waiter did not get the lock within 10 s of the release")?
            .ok_or("the waiter task vanished")??;
        let got = got?;
        if got.acquired_immediately() {
            return Err("the waiter got the lock at its first attempt: not a handoff".into());
        }
        if i >= p.handoff_warmup {
            samples.push(holds_at.saturating_duration_since(released_at));
            if let Some(notice) = crate::notice_clock::take().filter(|_| clocked) {
                to_notice.push(notice.saturating_duration_since(released_at));
                notice_to_holder.push(holds_at.saturating_duration_since(notice));
            }
        }
        got.release().await?;
    }

    // The same PING, each after the pause that precedes every release above: the round trip
    // a parked runtime really pays, the fair yardstick for a handoff.
    let mut cold = Vec::with_capacity(p.handoff_samples);
    for _ in 0..p.handoff_samples {
        tokio::time::sleep(settle).await;
        let start = Instant::now();
        redis::cmd("PING").query_async::<()>(&mut conn).await?;
        cold.push(start.elapsed());
    }
    let cold = Latencies::new(cold);

    // On one server, the floor of a notice, after the same pause: a `PUBLISH`, and a script
    // that only publishes, in turn.
    let notice_floor = match ctx.target.has_baselines() {
        true => {
            let mut floor =
                NoticeFloor::subscribe(&ctx.target, &ctx.target.namespace(NAME)).await?;
            let (mut published, mut scripted) = (Vec::new(), Vec::new());
            for _ in 0..p.handoff_samples {
                tokio::time::sleep(settle).await;
                published.push(floor.publish(&mut conn, false).await?);
                tokio::time::sleep(settle).await;
                scripted.push(floor.publish(&mut conn, true).await?);
            }
            Some((
                Latencies::new(published).p50_us(),
                Latencies::new(scripted).p50_us(),
            ))
        }
        false => None,
    };

    // Only when every sample had its notice timed: a partial split would mislead.
    let split = (to_notice.len() == samples.len()).then(|| {
        (
            Latencies::new(to_notice).p50_us(),
            Latencies::new(notice_to_holder).p50_us(),
        )
    });
    let handoff = Latencies::new(samples);
    Ok(Report::Handoff {
        p50_us: handoff.p50_us(),
        p99_us: handoff.p99_us(),
        rtt_p50_us: rtt.p50_us(),
        rtt_p99_us: rtt.p99_us(),
        idle_rtt_p50_us: cold.p50_us(),
        split_p50_us: split,
        notice_floor_p50_us: notice_floor,
        samples_us: handoff
            .sorted_us()
            .into_iter()
            .map(|us| round_to(us, 1))
            .collect(),
    })
}

/// A script that only publishes (`KEYS[1]`: the channel, `ARGV[1]`: the message): the least
/// a notice sent from a lock script costs.
const PUBLISH_ONLY: &str = "return redis.call('PUBLISH', KEYS[1], ARGV[1])";

/// A RESP3 subscription whose reader notes when a message arrives, as the library's hub does
/// with its notices, and the channel it listens to.
struct NoticeFloor {
    /// Kept open for the measurement.
    _subscriber: MultiplexedConnection,
    channel: String,
    arrived: Arc<Mutex<Option<Instant>>>,
    wake: Arc<Notify>,
    script: redis::Script,
}

impl NoticeFloor {
    async fn subscribe(target: &crate::stack::Target, ns: &str) -> Result<NoticeFloor> {
        let url = *target
            .endpoints
            .masters()
            .first()
            .ok_or("the deployment has no master")?;
        let info = redis::Client::open(url)?.get_connection_info().clone();
        let settings = info
            .redis_settings()
            .clone()
            .set_protocol(redis::ProtocolVersion::RESP3);
        let client = redis::Client::open(info.set_redis_settings(settings))?;
        let arrived = Arc::new(Mutex::new(None));
        let wake = Arc::new(Notify::new());
        let sender = {
            let (arrived, wake) = (arrived.clone(), wake.clone());
            move |push: redis::PushInfo| -> std::result::Result<(), ()> {
                if push.kind == redis::PushKind::Message {
                    *arrived.lock().unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
                    wake.notify_one();
                }
                Ok(())
            }
        };
        let config = redis::AsyncConnectionConfig::new().set_push_sender(sender);
        let mut subscriber = client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let channel = format!("{ns}-notice-floor");
        subscriber.subscribe(&channel).await?;
        Ok(NoticeFloor {
            _subscriber: subscriber,
            channel,
            arrived,
            wake,
            script: redis::Script::new(PUBLISH_ONLY),
        })
    }

    /// Publishes one message from `conn` (by `PUBLISH`, or from inside a script) and returns
    /// the time from the call to the message's arrival in the subscriber's reader.
    async fn publish(&mut self, conn: &mut ConnectionManager, scripted: bool) -> Result<Duration> {
        self.arrived
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let start = Instant::now();
        let receivers: i64 = if scripted {
            self.script
                .key(&self.channel)
                .arg("x")
                .invoke_async(conn)
                .await?
        } else {
            redis::cmd("PUBLISH")
                .arg(&self.channel)
                .arg("x")
                .query_async(conn)
                .await?
        };
        if receivers != 1 {
            return Err(format!("a floor message reached {receivers} subscribers, not 1").into());
        }
        let deadline = tokio::time::Instant::now() + STEP_LIMIT;
        loop {
            let wake = self.wake.notified();
            if let Some(at) = *self.arrived.lock().unwrap_or_else(PoisonError::into_inner) {
                return Ok(at.saturating_duration_since(start));
            }
            if tokio::time::timeout_at(deadline, wake).await.is_err() {
                return Err("a floor message did not arrive within 10 s".into());
            }
        }
    }
}
