//! Fencing tokens: why a lock's index matters more than the lock itself.
//!
//! No lease-based lock can stop a holder that pauses (a GC pause, swapping, `SIGSTOP`, a slow
//! disk) for longer than its ttl: when it resumes, it still *believes* it holds the lock,
//! although the lease ended on the server and another process has taken it. The protection
//! is on the resource side: every write carries the writer's fencing index
//! ([`LockGuard::index`]), strictly increasing across acquisitions, and the resource refuses
//! any index lower than the highest it has already accepted.
//!
//! This example plays that out against a toy store that remembers the highest index seen:
//!
//! 1. Holder A takes the lock with a 500 ms ttl and writes with its index: accepted.
//! 2. A "pauses" for 800 ms, past its ttl, without renewing. Its lease ends on the server.
//! 3. Holder B, waiting meanwhile, is woken by the expiry, takes the lock (greater index) and
//!    writes: accepted.
//! 4. A resumes and writes with its old index: the store rejects it as stale. (A could have
//!    checked `guard.is_lost()` first, but a pause can fall between that check and the write:
//!    only the store's comparison closes the gap.)
//! 5. A's release answers `conflict` and leaves B's lock alone; B releases normally.
//!
//! Run it against a Redis server (keys go to the namespace `fencing-example`):
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run -p redfour --example fencing
//! ```

use std::sync::Mutex;
use std::time::Duration;

use redfour::{Client, LockGuard, ReleaseOutcome};

/// A resource that accepts writes only from the newest lock holder it has seen.
#[derive(Default)]
struct FencedStore {
    state: Mutex<StoreState>,
}

#[derive(Default)]
struct StoreState {
    /// The highest fencing index that ever wrote.
    highest: i64,
    entries: Vec<(i64, String)>,
}

#[derive(Debug)]
struct StaleWriter {
    index: i64,
    highest: i64,
}

impl std::fmt::Display for StaleWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "stale writer: index {} is older than {}, already seen",
            self.index, self.highest
        )
    }
}

impl std::error::Error for StaleWriter {}

impl FencedStore {
    /// Appends `value` if `index` is at least the highest seen (the same holder may write
    /// several times); refuses it otherwise.
    fn write(&self, index: i64, value: &str) -> Result<(), StaleWriter> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if index < state.highest {
            return Err(StaleWriter {
                index,
                highest: state.highest,
            });
        }
        state.highest = index;
        state.entries.push((index, value.to_owned()));
        Ok(())
    }

    fn entries(&self) -> Vec<(i64, String)> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entries
            .clone()
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned());
    // Two clients stand for two processes.
    let process_a = Client::builder(url.as_str())
        .namespace("fencing-example")
        .build()?;
    let process_b = Client::builder(url.as_str())
        .namespace("fencing-example")
        .build()?;
    let store = FencedStore::default();

    // 1. A takes the lock and writes.
    let a: LockGuard = process_a
        .lock("ledger")
        .ttl(Duration::from_millis(500))
        .wait(Duration::from_secs(10))
        .acquire()
        .await?;
    println!("A holds the lock with index {}", a.index());
    store.write(a.index(), "A: first write")?;
    println!("A wrote: accepted");

    // 2 and 3. A pauses past its ttl; B, already waiting, gets the lock when A's lease ends.
    let b_task = tokio::spawn({
        let process_b = process_b.clone();
        async move {
            process_b
                .lock("ledger")
                .ttl(Duration::from_secs(10))
                .wait(Duration::from_secs(10))
                .acquire()
                .await
        }
    });
    println!("A pauses for 800 ms (its ttl is 500 ms)...");
    tokio::time::sleep(Duration::from_millis(800)).await;

    let b = b_task.await??;
    println!(
        "B holds the lock with index {} (A's lease is over: {:?})",
        b.index(),
        a.lost_reason()
    );
    store.write(b.index(), "B: write")?;
    println!("B wrote: accepted");

    // 4. A resumes, unaware, and writes with its old index.
    match store.write(a.index(), "A: write after the pause") {
        Err(stale) => println!("A wrote again: rejected ({stale})"),
        Ok(()) => return Err("the store accepted a stale writer".into()),
    }

    // 5. A's release cannot touch B's lock.
    let released = a.release().await?;
    println!("A releases: {}", released.result);
    if released.result != ReleaseOutcome::Conflict {
        return Err(format!("expected a conflict, got {}", released.result).into());
    }
    let released = b.release().await?;
    println!("B releases: {}", released.result);

    println!("store contents, in order:");
    for (index, value) in store.entries() {
        println!("  [{index}] {value}");
    }
    Ok(())
}
