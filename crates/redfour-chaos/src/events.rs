//! The history of a run: every process appends one JSON object per event to its own log file,
//! timestamped with `CLOCK_MONOTONIC`, which all processes of the machine share, so that the
//! checker can merge the files into one timeline.

use std::fs::{File, OpenOptions};
use std::io::{self, BufRead, BufReader, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Nanoseconds on `CLOCK_MONOTONIC`.
pub fn now_ns() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(ts) => (ts.tv_sec() as u64)
            .saturating_mul(1_000_000_000)
            .saturating_add(ts.tv_nsec() as u64),
        // Cannot happen for CLOCK_MONOTONIC on Linux; 0 would show up as a broken history.
        Err(_) => 0,
    }
}

/// An `Instant` of this process on the shared clock (`Instant` is `CLOCK_MONOTONIC` on Linux,
/// but does not expose its value).
pub fn instant_ns(at: Instant) -> u64 {
    let now = Instant::now();
    let base = now_ns();
    if at >= now {
        base.saturating_add(duration_ns(at - now))
    } else {
        base.saturating_sub(duration_ns(now - at))
    }
}

fn duration_ns(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// One line of a log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When, ns on `CLOCK_MONOTONIC`.
    pub t: u64,
    /// Who: `w3` for worker 3, `resource`, or `chaos` (the fault injector).
    pub who: String,
    /// What happened.
    #[serde(flatten)]
    pub what: What,
}

/// What happened. `index` is the fencing index of the holding the event belongs to;
/// `deadline` the end of that holder's lease as its own process counts it, ns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "ev", rename_all = "snake_case")]
// The fields mean the same in every variant, as documented above.
#[allow(missing_docs)]
pub enum What {
    /// A worker started waiting for the lock.
    AcquireInvoked,
    /// It holds the lock.
    AcquireOk { index: i64, deadline: u64 },
    /// It does not, and knows it (the wait ran out, or an error that left nothing behind).
    AcquireFailed { reason: String },
    /// It does not know whether it holds the lock (a timeout, a lost connection).
    AcquireUnknown { reason: String },
    /// It entered its critical section.
    Enter { index: i64 },
    /// Its lease was renewed (the keep-alive moved the deadline).
    Renewed { index: i64, deadline: u64 },
    /// Its lease is lost (the keep-alive said so).
    LeaseLost { index: i64, reason: String },
    /// The resource answered its fenced write.
    WriteAnswered { index: i64, accepted: bool },
    /// It left its critical section.
    Exit { index: i64 },
    /// It asked to release, with its lease deadline at that moment.
    ReleaseInvoked { index: i64, deadline: u64 },
    /// The release's answer: `released`, `expired`, `conflict`, or `error: …`.
    ReleaseDone { index: i64, outcome: String },
    /// The resource accepted a fenced write (logged by the resource, in its order).
    ResourceAccepted { writer: String, index: i64 },
    /// The resource rejected a fenced write: a higher index had written.
    ResourceRejected {
        writer: String,
        index: i64,
        highest: i64,
    },
    /// A fault: `kill` (SIGKILL), `stop` (SIGSTOP), `cont` (SIGCONT) of `target`, or a
    /// server-side fault (`restart`, `client-kill-pubsub`, …).
    Fault { kind: String, target: String },
}

/// Appends events to one file, one line each, written through at once so that a process killed
/// with `SIGKILL` loses nothing it logged.
pub struct Log {
    who: String,
    file: Mutex<File>,
}

impl Log {
    /// Opens (creates, or appends to) `path`.
    pub fn open(path: &Path, who: impl Into<String>) -> io::Result<Log> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Log {
            who: who.into(),
            file: Mutex::new(file),
        })
    }

    /// Records `what` now.
    pub fn record(&self, what: What) -> io::Result<()> {
        self.record_at(now_ns(), what)
    }

    /// Records `what` at `t`.
    pub fn record_at(&self, t: u64, what: What) -> io::Result<()> {
        let event = Event {
            t,
            who: self.who.clone(),
            what,
        };
        let mut line = serde_json::to_string(&event).map_err(io::Error::other)?;
        line.push('\n');
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        file.write_all(line.as_bytes())
    }
}

/// Every event of every `*.log` file in `dir`, sorted by time. A torn last line (a process
/// killed in the middle of a write) is skipped; any other unreadable line is an error.
pub fn read_dir(dir: &Path) -> io::Result<Vec<Event>> {
    let mut events = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("log") {
            continue;
        }
        let lines: Vec<String> = BufReader::new(File::open(&path)?)
            .lines()
            .collect::<io::Result<_>>()?;
        let last = lines.len().saturating_sub(1);
        for (n, line) in lines.iter().enumerate() {
            match serde_json::from_str::<Event>(line) {
                Ok(event) => events.push(event),
                Err(_) if n == last => {}
                Err(e) => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{}:{}: {e}: {line}", path.display(), n + 1),
                    ))
                }
            }
        }
    }
    events.sort_by_key(|e| e.t);
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_sorts() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Log::open(&dir.path().join("a.log"), "w1").expect("open");
        let b = Log::open(&dir.path().join("b.log"), "w2").expect("open");
        b.record_at(20, What::Enter { index: 7 }).expect("write");
        a.record_at(
            10,
            What::AcquireOk {
                index: 7,
                deadline: 99,
            },
        )
        .expect("write");
        // A torn last line, as a killed process leaves it.
        std::fs::OpenOptions::new()
            .append(true)
            .open(dir.path().join("b.log"))
            .and_then(|mut f| f.write_all(b"{\"t\":30,\"who"))
            .expect("append");
        let events = read_dir(dir.path()).expect("read");
        assert_eq!(events.len(), 2);
        assert_eq!(events[0].who, "w1");
        assert_eq!(events[1].what, What::Enter { index: 7 });
    }

    #[test]
    fn shared_clock_matches_instants() {
        let at = Instant::now() + Duration::from_millis(50);
        let ns = instant_ns(at);
        let now = now_ns();
        assert!(
            ns > now && ns - now <= 50_000_000 + 1_000_000,
            "{ns} vs {now}"
        );
    }
}
