//! The line on a terminal's stderr that says what `wait` and `run` are waiting for: who holds
//! the lock, for how long, and this waiter's place in the queue ("3rd in line").
//!
//! Drawn by `indicatif` (a spinner redrawn at most 10 times a second, hidden when stderr is
//! not a terminal or `TERM` is `dumb`, erased when the wait ends). The lock is read once a
//! second (`Client::wait_progress`, one read-only script call); between reads the times count
//! on from the last one, on this process's clock.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use redfour::{Client, Listing, ListingKind, WaitProgress};

/// How often the line is redrawn (the spinner moves, the times count).
const TICK: Duration = Duration::from_millis(100);
/// How often the lock and the queue are read.
const READ_EVERY: Duration = Duration::from_secs(1);
/// When the first read is made: once the wait's first attempt has queued it (a round trip or
/// two), so that the first read already finds its place.
const FIRST_READ: Duration = Duration::from_millis(250);

/// Whether stderr is a terminal, where the line is shown (`indicatif` checks it again, and
/// `TERM`).
pub fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// What the line was last told: a read of the lock and the queue, and when it was made.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// This waiter's place in the queue, from 1.
    pub place: Option<u64>,
    /// The lock.
    pub lock: LockView,
    /// When it was read.
    pub at: Instant,
}

/// The lock as the line shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockView {
    /// Nobody holds it (a waiter is about to take it).
    Free,
    /// The key holds something else, for this reason.
    Foreign(Option<String>),
    /// Held.
    Held(Held),
}

/// A held lock, as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// `host:pid "description"` (see [`who`]).
    pub who: String,
    /// How long it had been held when read.
    pub held_for: Option<Duration>,
    /// Its remaining ttl when read.
    pub ttl: Option<Duration>,
    /// The holder's fencing index.
    pub index: Option<i64>,
}

impl Held {
    /// The view of a lock that a listing found held.
    pub fn of(lock: &Listing) -> Held {
        let holder = lock.holder.as_ref();
        Held {
            who: who(
                holder.and_then(|h| h.host.as_deref()),
                holder.and_then(|h| h.pid),
                holder.and_then(|h| h.description.as_deref()),
            ),
            held_for: lock.held_for,
            ttl: lock.ttl,
            index: lock.index,
        }
    }

    /// "held by HOST:PID "DESCRIPTION" for 1m05s, 25.0s left (index N)", `since` after the
    /// read.
    pub fn describe(&self, since: Duration) -> String {
        let mut text = format!("held by {}", self.who);
        if let Some(held) = self.held_for {
            text.push_str(&format!(" for {}", human(held + since)));
        }
        if let Some(ttl) = self.ttl {
            text.push_str(&format!(", {} left", human(ttl.saturating_sub(since))));
        }
        if let Some(index) = self.index {
            text.push_str(&format!(" (index {index})"));
        }
        text
    }
}

impl Seen {
    /// The view of a read made at `at`.
    pub fn of(progress: &WaitProgress, at: Instant) -> Seen {
        let lock = match &progress.lock {
            None => LockView::Free,
            Some(lock) if lock.kind == ListingKind::Lock => LockView::Held(Held::of(lock)),
            Some(lock) => LockView::Foreign(lock.foreign.clone()),
        };
        Seen {
            place: progress.place,
            lock,
            at,
        }
    }
}

/// Shows the status line on stderr until the future is dropped (it never completes): run it
/// in a `select!` beside the wait. Dropping it erases the line.
pub async fn show(client: &Client, id: &str) -> Infallible {
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr_with_hz(10));
    // The template is a constant: it parses, or every test of the line fails.
    if let Ok(style) = ProgressStyle::with_template("{spinner} {wide_msg}") {
        bar.set_style(style.tick_chars("|/-\\ "));
    }
    let _erase = Erase(bar.clone());
    if bar.is_hidden() {
        // Not a terminal: nothing to show, and nothing to read.
        return std::future::pending().await;
    }
    bar.enable_steady_tick(TICK);
    let mut seen: Option<Seen> = None;
    let mut next_read = Instant::now() + FIRST_READ;
    loop {
        let now = Instant::now();
        if now >= next_read {
            next_read = now + READ_EVERY;
            // A failed read is not worth failing the command for: the line says less.
            seen = client
                .wait_progress(id)
                .await
                .ok()
                .map(|progress| Seen::of(&progress, Instant::now()));
        }
        bar.set_message(describe(id, seen.as_ref(), Instant::now()));
        tokio::time::sleep(TICK).await;
    }
}

/// Erases the line when the wait ends, whichever way.
struct Erase(ProgressBar);

impl Drop for Erase {
    fn drop(&mut self) {
        self.0.finish_and_clear();
    }
}

/// The line's text at `now`: "waiting for lock ID: 3rd in line; held by HOST:PID
/// "DESCRIPTION" for 1m05s, 25.0s left (index N)", the times counted on from the read. The
/// place comes first: a narrow terminal cuts the end of the line.
pub fn describe(id: &str, seen: Option<&Seen>, now: Instant) -> String {
    let mut text = format!("waiting for lock {}", printable(id));
    let Some(seen) = seen else {
        return text;
    };
    text.push_str(": ");
    if let Some(place) = seen.place {
        text.push_str(&format!("{} in line; ", ordinal(place)));
    }
    match &seen.lock {
        LockView::Free => text.push_str("just released"),
        LockView::Foreign(why) => {
            text.push_str("the key holds foreign data");
            if let Some(why) = why {
                text.push_str(&format!(" ({why})"));
            }
        }
        LockView::Held(held) => {
            text.push_str(&held.describe(now.saturating_duration_since(seen.at)));
        }
    }
    text
}

/// `host:pid "description"`, as much of it as the holder recorded; "another client" when it
/// recorded nothing (Node redfour records nothing).
pub fn who(host: Option<&str>, pid: Option<u32>, description: Option<&str>) -> String {
    let mut text = match (host, pid) {
        (Some(host), Some(pid)) => format!("{}:{pid}", printable(host)),
        (Some(host), None) => printable(host),
        (None, Some(pid)) => format!("pid {pid}"),
        (None, None) => "another client".to_owned(),
    };
    if let Some(description) = description {
        text.push_str(&format!(" \"{}\"", printable(description)));
    }
    text
}

/// 1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st, 101st, 111th.
pub fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Text from Redis or the user, with control characters escaped, so that it stays on its
/// line (and in its column).
pub fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// 950ms, 4.2s, 3m05s, 2h07m.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms < 1_000 {
        format!("{ms}ms")
    } else if ms < 60_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else if ms < 3_600_000 {
        let s = d.as_secs();
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        let m = d.as_secs() / 60;
        format!("{}h{:02}m", m / 60, m % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_durations() {
        assert_eq!(human(Duration::from_millis(950)), "950ms");
        assert_eq!(human(Duration::from_millis(4_240)), "4.2s");
        assert_eq!(human(Duration::from_secs(185)), "3m05s");
        assert_eq!(human(Duration::from_secs(2 * 3600 + 7 * 60 + 5)), "2h07m");
    }

    #[test]
    fn ordinals() {
        let said: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111, 112]
            .into_iter()
            .map(ordinal)
            .collect();
        assert_eq!(
            said,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd",
                "101st", "111th", "112th"
            ]
        );
    }

    fn held(place: Option<u64>, at: Instant) -> Seen {
        Seen {
            place,
            lock: LockView::Held(Held {
                who: who(Some("box"), Some(42), Some("deploy")),
                held_for: Some(Duration::from_secs(60)),
                ttl: Some(Duration::from_secs(10)),
                index: Some(7),
            }),
            at,
        }
    }

    #[test]
    fn the_line_counts_on_from_the_read() {
        let at = Instant::now();
        let seen = held(Some(3), at);
        assert_eq!(
            describe("job", Some(&seen), at + Duration::from_secs(3)),
            "waiting for lock job: 3rd in line; held by box:42 \"deploy\" for 1m03s, 7.0s left (index 7)"
        );
        let late = describe("job", Some(&held(None, at)), at + Duration::from_secs(30));
        assert_eq!(
            late,
            "waiting for lock job: held by box:42 \"deploy\" for 1m30s, 0ms left (index 7)"
        );
    }

    #[test]
    fn the_line_without_a_holder() {
        let at = Instant::now();
        assert_eq!(describe("job", None, at), "waiting for lock job");
        let free = Seen {
            place: Some(1),
            lock: LockView::Free,
            at,
        };
        assert_eq!(
            describe("job", Some(&free), at),
            "waiting for lock job: 1st in line; just released"
        );
        let node = Seen {
            place: None,
            lock: LockView::Held(Held {
                who: who(None, None, None),
                held_for: None,
                ttl: Some(Duration::from_millis(1500)),
                index: Some(3),
            }),
            at,
        };
        assert_eq!(
            describe("job", Some(&node), at),
            "waiting for lock job: held by another client, 1.5s left (index 3)"
        );
        let foreign = Seen {
            place: None,
            lock: LockView::Foreign(Some("a string, not a hash".into())),
            at,
        };
        assert_eq!(
            describe("j\nb", Some(&foreign), at),
            "waiting for lock j\\nb: the key holds foreign data (a string, not a hash)"
        );
    }

    #[test]
    fn holders_say_what_they_recorded() {
        assert_eq!(
            who(Some("box"), Some(42), Some("nightly")),
            "box:42 \"nightly\""
        );
        assert_eq!(who(Some("box"), None, None), "box");
        assert_eq!(who(None, Some(7), None), "pid 7");
        assert_eq!(who(None, None, None), "another client");
        assert_eq!(
            who(Some("a\nb"), None, Some("x\ty")),
            "a\\nb \"x\\ty\"",
            "one line"
        );
    }
}
