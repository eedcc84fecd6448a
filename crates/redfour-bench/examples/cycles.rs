//! A fixed number of uncontended acquire + release cycles of one side of the `uncontended`
//! scenario, for profilers that count instead of time (callgrind counts instructions whatever
//! else the machine does). Run it twice with different counts and subtract, so that start-up
//! cancels out:
//!
//! ```text
//! cargo build --release -p redfour-bench --examples
//! valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%p \
//!     target/release/examples/cycles redfour 2000 redis://127.0.0.1:6379/
//! ```
//!
//! `SIDE` is `redfour` (the library's `acquire_lock` + `release_lock`, default settings),
//! `guard` (`lock(id).acquire()` + `guard.release()`: the path that records the most with the
//! `metrics` feature: a wait, a holding) or `raw` (`SET NX PX` + compare-and-delete by
//! `EVALSHA`, as in the bench). Keys live in the namespace `rfcycles-<pid>` and are deleted by
//! the cycles themselves.
//!
//! `CYCLES_RUNTIME=current_thread` runs it on a one-thread runtime, whose counts vary less
//! from one run to the next.
//!
//! Built with the bench's `metrics` feature, it installs a Prometheus recorder first, so that
//! the difference between the two builds' counts is what recording costs (BENCHMARKS.md,
//! "Metrics cost").

use std::time::Duration;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const TTL: Duration = Duration::from_secs(10);
const USAGE: &str = "usage: cycles redfour|guard|raw N REDIS_URL";

fn main() -> Result<(), BoxError> {
    // `CYCLES_RUNTIME=current_thread`: everything on one thread, so that the counts do not
    // move with the worker threads' parking and stealing (steadier to compare two builds).
    let mut runtime = match std::env::var("CYCLES_RUNTIME").as_deref() {
        Ok("current_thread") => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all().build()?.block_on(cycles())
}

async fn cycles() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [side, n, url] = &args[..] else {
        return Err(USAGE.into());
    };
    let n: u64 = n.parse().map_err(|_| USAGE)?;
    let ns = format!("rfcycles-{}", std::process::id());
    #[cfg(feature = "metrics")]
    let _metrics = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    match side.as_str() {
        "redfour" | "guard" => {
            let client = redfour::Client::builder(url.clone())
                .namespace(ns.clone())
                .build()?;
            for i in 0..n {
                let id = format!("k{}", i % 1000);
                let released = if side == "guard" {
                    let guard = client.lock(&id).ttl(TTL).acquire().await?;
                    guard.release().await?
                } else {
                    let lock = client.acquire_lock(&id, TTL).await?;
                    if !lock.success {
                        return Err(format!("cycle {i} on {id} was not acquired").into());
                    }
                    client.release_lock(&id, lock.index).await?
                };
                if released.result != redfour::ReleaseOutcome::Released {
                    return Err(format!("cycle {i} on {id} failed").into());
                }
            }
            // The fencing counter is the one key a cycle leaves behind.
            let mut conn = redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?;
            redis::cmd("DEL")
                .arg(format!("{ns}index"))
                .query_async::<()>(&mut conn)
                .await?;
        }
        "raw" => {
            let client = redis::Client::open(url.as_str())?;
            let mut conn = redis::aio::ConnectionManager::new(client).await?;
            let release = redis::Script::new(
                "if redis.call('get',KEYS[1])==ARGV[1] then return redis.call('del',KEYS[1]) else return 0 end",
            );
            for i in 0..n {
                let key = format!("{ns}:k{}", i % 1000);
                let set: redis::Value = redis::cmd("SET")
                    .arg(&key)
                    .arg(i)
                    .arg("NX")
                    .arg("PX")
                    .arg(TTL.as_millis() as u64)
                    .query_async(&mut conn)
                    .await?;
                let deleted: i64 = release.key(&key).arg(i).invoke_async(&mut conn).await?;
                if matches!(set, redis::Value::Nil) || deleted != 1 {
                    return Err(format!("raw cycle {i} on {key} failed").into());
                }
            }
        }
        _ => return Err(USAGE.into()),
    }
    Ok(())
}
