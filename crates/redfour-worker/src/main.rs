//! `redfour-worker`: a Rust worker for mixed-fleet tests and measurements (the node_interop
//! tests, `scripts/mixed-fleet.py --rust-side lib`): the library in a loop, the Rust
//! counterpart of `interop/worker.js`. It takes the lock with
//! `lock(id).ttl(2 s).wait(20 s).acquire()` (the fair queue on, the default), holds it for
//! `WORK_MS`, releases it and at once tries again, until its standard input ends; then it
//! finishes the section in progress and exits.
//!
//! ```text
//! cargo build --release -p redfour-worker
//! target/release/redfour-worker REDIS_URL NAMESPACE ID WORK_MS [CHECK_KEY]
//! ```
//!
//! With `CHECK_KEY`, each critical section starts with `INCR CHECK_KEY` and ends with `DECR`
//! of it, and prints the `INCR`'s result as `inside`: anything but 1 means two sections
//! overlapped (as worker.js does; the node_interop tests use both).
//!
//! Output, one JSON object per line on stdout, as worker.js prints them:
//! `{"event":"ready"}` once connected, then `{"start_us":…,"end_us":…,"index":…[,"inside":…]}`
//! for each critical section (wall clock, µs), `{"event":"error","message":"…"}` on a failure.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const USAGE: &str = "usage: redfour-worker REDIS_URL NAMESPACE ID WORK_MS [CHECK_KEY]";

fn now_us() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros())
}

fn emit(line: &str) {
    let mut out = std::io::stdout().lock();
    // A closed pipe means the measurement is over; nothing left to tell.
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (url, namespace, id, work_ms, check_key) = match &args[..] {
        [u, n, i, w] => (u, n, i, w, None),
        [u, n, i, w, c] => (u, n, i, w, Some(c.clone())),
        _ => return Err(USAGE.into()),
    };
    let work = Duration::from_millis(work_ms.parse().map_err(|_| USAGE)?);
    let client = redfour::Client::builder(url.clone())
        .namespace(namespace.clone())
        .build()?;
    client.ping().await?;
    let mut check = match &check_key {
        Some(_) => Some(
            redis::Client::open(url.as_str())?
                .get_multiplexed_async_connection()
                .await?,
        ),
        None => None,
    };
    let (stop_tx, mut stop) = tokio::sync::watch::channel(false);
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut std::io::stdin(), &mut std::io::sink());
        let _ = stop_tx.send(true);
    });
    emit(r#"{"event":"ready"}"#);
    while !*stop.borrow_and_update() {
        let guard = match client
            .lock(id)
            .ttl(Duration::from_secs(2))
            .wait(Duration::from_secs(20))
            .acquire()
            .await
        {
            Ok(guard) => guard,
            Err(e) => {
                emit(&serde_json::json!({"event": "error", "message": e.to_string()}).to_string());
                // Not a busy loop while Redis is away.
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let start = now_us();
        let mut inside = None;
        if let (Some(conn), Some(key)) = (check.as_mut(), &check_key) {
            inside = Some(redis::cmd("INCR").arg(key).query_async::<i64>(conn).await?);
        }
        tokio::time::sleep(work).await;
        if let (Some(conn), Some(key)) = (check.as_mut(), &check_key) {
            redis::cmd("DECR").arg(key).query_async::<i64>(conn).await?;
        }
        let end = now_us();
        let index = guard.index();
        if let Err(e) = guard.release().await {
            emit(&serde_json::json!({"event": "error", "message": e.to_string()}).to_string());
        }
        let mut line = serde_json::json!({"start_us": start, "end_us": end, "index": index});
        if let Some(inside) = inside {
            line["inside"] = inside.into();
        }
        emit(&line.to_string());
    }
    Ok(())
}
