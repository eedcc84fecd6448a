//! The line on a terminal's stderr that says who `run` is waiting for.

use std::convert::Infallible;
use std::io::Write;
use std::time::{Duration, Instant};

use redfour::{Client, LockStatus};

/// How often the spinner moves.
const TICK: Duration = Duration::from_millis(100);
/// How often the holder is looked up (one read-only round trip).
const POLL_EVERY: u32 = 5;
const SPINNER: [char; 4] = ['|', '/', '-', '\\'];
/// ANSI: carriage return, then erase the whole line.
const CLEAR: &str = "\r\x1b[2K";

/// What the line says about the holder, as of `seen`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    /// Not looked up yet, or the lookup failed.
    Unknown,
    /// Nobody holds it right now (the waiter is about to try again).
    Free,
    /// Someone holds it.
    Held {
        /// `host:pid` when the holder recorded them (this library does; Node redfour doesn't).
        who: Option<String>,
        /// The holder's fencing index.
        index: i64,
        /// The holder's remaining ttl when it was looked up.
        ttl: Option<Duration>,
        /// When it was looked up.
        seen: Instant,
    },
}

impl Holder {
    /// The view of a status answer.
    pub fn from_status(status: &LockStatus, seen: Instant) -> Holder {
        if !status.held {
            return Holder::Free;
        }
        let who = match (status.host(), status.pid()) {
            (Some(host), Some(pid)) => Some(format!("{host}:{pid}")),
            (Some(host), None) => Some(host.to_owned()),
            (None, Some(pid)) => Some(format!("pid {pid}")),
            (None, None) => None,
        };
        Holder::Held {
            who,
            index: status.index,
            ttl: status.ttl,
            seen,
        }
    }

    /// "held by host:pid (index N) for 4.2s more", counting the ttl down from when it was seen.
    pub fn describe(&self, now: Instant) -> String {
        match self {
            Holder::Unknown => String::new(),
            Holder::Free => "(just released)".to_owned(),
            Holder::Held {
                who,
                index,
                ttl,
                seen,
            } => {
                let who = who.as_deref().unwrap_or("another client");
                let mut text = format!("held by {who} (index {index})");
                if let Some(ttl) = ttl {
                    let left = ttl.saturating_sub(now.saturating_duration_since(*seen));
                    text.push_str(&format!(" for {} more", human(left)));
                }
                text
            }
        }
    }
}

/// Redraws the status line on stderr until dropped (the future never completes): run it in a
/// `select!` beside the acquire, then call [`clear`].
pub async fn show(client: &Client, id: &str) -> Infallible {
    let width = terminal_width();
    let mut holder = Holder::Unknown;
    let mut tick: u32 = 0;
    loop {
        if tick.is_multiple_of(POLL_EVERY) {
            holder = match client.status(id).await {
                Ok(status) => Holder::from_status(&status, Instant::now()),
                Err(_) => Holder::Unknown,
            };
        }
        let spinner = SPINNER[(tick as usize) % SPINNER.len()];
        let line = render(spinner, id, &holder, Instant::now(), width);
        let mut err = std::io::stderr().lock();
        // A status line that cannot be drawn is not worth failing the command for.
        let _ = write!(err, "{CLEAR}{line}").and_then(|()| err.flush());
        drop(err);
        tick = tick.wrapping_add(1);
        tokio::time::sleep(TICK).await;
    }
}

/// Erases the status line.
pub fn clear() {
    let mut err = std::io::stderr().lock();
    let _ = write!(err, "{CLEAR}").and_then(|()| err.flush());
}

/// One line, at most `width` characters, so that `\r` can redraw it.
pub fn render(spinner: char, id: &str, holder: &Holder, now: Instant, width: usize) -> String {
    let about = holder.describe(now);
    let line = if about.is_empty() {
        format!("{spinner} waiting for lock {id}")
    } else {
        format!("{spinner} waiting for lock {id} {about}")
    };
    line.chars().take(width.saturating_sub(1).max(1)).collect()
}

/// `COLUMNS` when the shell exports it, else the classic 80.
fn terminal_width() -> usize {
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse().ok())
        .filter(|&c: &usize| c >= 20)
        .unwrap_or(80)
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
    fn line_counts_the_holder_ttl_down() {
        let seen = Instant::now();
        let holder = Holder::Held {
            who: Some("box:42".into()),
            index: 7,
            ttl: Some(Duration::from_secs(10)),
            seen,
        };
        let line = render('|', "job", &holder, seen + Duration::from_secs(3), 200);
        assert_eq!(
            line,
            "| waiting for lock job held by box:42 (index 7) for 7.0s more"
        );
        let line = render('/', "job", &holder, seen + Duration::from_secs(30), 200);
        assert!(line.ends_with("for 0ms more"), "{line}");
    }

    #[test]
    fn line_without_holder_details() {
        let now = Instant::now();
        assert_eq!(
            render('-', "job", &Holder::Unknown, now, 80),
            "- waiting for lock job"
        );
        assert_eq!(
            render('-', "job", &Holder::Free, now, 80),
            "- waiting for lock job (just released)"
        );
        let node = Holder::Held {
            who: None,
            index: 3,
            ttl: None,
            seen: now,
        };
        assert_eq!(
            render('-', "job", &node, now, 80),
            "- waiting for lock job held by another client (index 3)"
        );
    }

    #[test]
    fn line_fits_the_terminal() {
        let id = "x".repeat(300);
        let line = render('|', &id, &Holder::Unknown, Instant::now(), 80);
        assert_eq!(line.chars().count(), 79);
    }
}
