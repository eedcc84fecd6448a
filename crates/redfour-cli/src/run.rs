//! `redfour run`: run a command while holding the lock.
//!
//! The order of events, and why:
//! 1. Signal handlers are installed first, so a SIGTERM that arrives while waiting ends the
//!    wait cleanly instead of killing redfour mid-acquire.
//! 2. Redis is pinged: the library retries an unreachable Redis while waiting, which would hide
//!    a wrong `--url` forever.
//!    A signal that arrives while waiting ends the wait, and redfour leaves the fair queue
//!    (`Client::settle`) before it exits, so the next release does not hand the lock to it.
//! 3. The lock is taken with keep-alive (renewed every ttl/3) and a description (`--description`,
//!    or the program's name: never its arguments, which may hold secrets), so `redfour status`
//!    shows what holds it.
//! 4. The child runs in a process group of its own, watched by a second process, with
//!    `REDFOUR_ID` and `REDFOUR_INDEX`; signals are forwarded to the whole group ([`crate::job`]).
//! 5. When it exits, what it left in its group is stopped, the lock is released at once and
//!    the child's status becomes redfour's. If the lease is lost first, the group is stopped
//!    (SIGTERM, SIGKILL after `--grace`) and redfour exits 70: the command can no longer
//!    assume it is alone.

use std::ffi::OsString;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use redfour::{Client, LeaseLost, LockGuard, ReleaseOutcome};

use crate::exit::{self, Failure};
use crate::flags::{RunSettings, WaitLimit, MAX_DESCRIPTION};
use crate::job::{self, Job, StartError, Stopped};
use crate::signals::{self, Signals};
use crate::status_line;

/// How long an interrupted wait may take to leave the fair queue before redfour exits.
pub const SETTLE: Duration = Duration::from_secs(2);

/// Runs `settings.command` under the lock and returns the exit status for redfour.
pub async fn run(
    client: &Client,
    settings: RunSettings,
    mut signals: Signals,
    quiet: bool,
) -> Result<u8, Failure> {
    let RunSettings {
        id,
        ttl,
        wait,
        grace,
        description,
        command,
    } = settings;
    let doing = format!("run `{id}`");
    client
        .ping()
        .await
        .map_err(|e| Failure::from_lib(&e, &doing, client.address()))?;

    let builder = client
        .lock(id.as_str())
        .ttl(ttl)
        .keep_alive(true)
        .description(description.unwrap_or_else(|| describe(&command)));
    let acquire = async {
        match wait {
            WaitLimit::NoWait => builder.try_acquire().await,
            WaitLimit::UpTo(w) => not_acquired_is_none(builder.wait(w).acquire().await),
            WaitLimit::Forever => builder.acquire().await.map(Some),
        }
    };
    // Erased when its future is dropped, as the `select!` ends, whichever way.
    let show_status = !quiet && wait != WaitLimit::NoWait && status_line::stderr_is_terminal();
    let status_line = async {
        if show_status {
            status_line::show(client, &id).await
        } else {
            std::future::pending().await
        }
    };
    let started_waiting = Instant::now();
    let acquired = tokio::select! {
        acquired = acquire => acquired,
        never = status_line => match never {},
        sig = signals.recv() => {
            // The wait was dropped: its queue exit (or the release of a lock it was just
            // handed) runs in the background; let it reach Redis before the process ends.
            let settled = client.settle(SETTLE).await;
            let left = if settled { "" } else { " (leaving the wait queue timed out; the entry expires on its own)" };
            return Err(Failure::new(
                signals::exit_status(sig),
                format!("{doing}: interrupted by {sig} while waiting for the lock; the command was not started{left}"),
            ));
        }
    };
    let guard = match acquired {
        Ok(Some(guard)) => guard,
        Ok(None) => {
            // `status` rather than `wait_progress`: a Redis user with the minimal ACL rule may
            // read a lock this way.
            let about = match client.status(&id).await {
                Ok(status) if status.held => {
                    let mut about = format!(
                        "held by {}",
                        status_line::who(status.host(), status.pid(), status.description())
                    );
                    if let Some(ttl) = status.ttl {
                        about.push_str(&format!(", {} left", status_line::human(ttl)));
                    }
                    about.push_str(&format!(" (index {})", status.index));
                    about
                }
                _ => "held by another".to_owned(),
            };
            let waited = match wait {
                WaitLimit::NoWait => "on the first attempt".to_owned(),
                _ => format!(
                    "within --wait ({})",
                    status_line::human(started_waiting.elapsed())
                ),
            };
            return Err(Failure::new(
                exit::NOT_ACQUIRED,
                format!("{doing}: the lock was not acquired {waited}; it is {about}; the command was not started"),
            ));
        }
        Err(e) => return Err(Failure::from_lib(&e, &doing, client.address())),
    };

    // If redfour dies, its watcher stops the command before the lease can run out: the last
    // renewal left at least two thirds of the ttl.
    let kill_after = grace.min(ttl / 3);
    let mut job = match Job::start(&command, &id, guard.index(), kill_after) {
        Ok(job) => job,
        Err(StartError::Watcher(e)) => {
            release_after_failure(guard, &doing).await;
            return Err(Failure::new(
                exit::OS,
                format!("{doing}: cannot start the process that watches the command: {e}; the command was not started"),
            ));
        }
        Err(StartError::Command(e)) => {
            release_after_failure(guard, &doing).await;
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                exit::NOT_FOUND
            } else {
                exit::CANNOT_EXECUTE
            };
            return Err(Failure::new(
                code,
                format!(
                    "{doing}: cannot execute `{}`: {e}",
                    command[0].to_string_lossy()
                ),
            ));
        }
    };

    let lost = guard.lost();
    tokio::pin!(lost);
    let status = loop {
        tokio::select! {
            // The child's exit wins a tie: its result is decided by the release below.
            biased;
            status = job.wait() => break status,
            why = &mut lost => {
                return Err(lease_lost(job, guard, why, grace, &mut signals, &doing).await);
            }
            sig = signals.recv() => job.signal(sig),
        }
    };
    let left_behind = job.end(Instant::now() + grace).await;
    if let Some(stopped) = left_behind {
        let how = match stopped {
            Stopped::Terminated => "SIGTERM".to_owned(),
            Stopped::Killed => format!("SIGTERM, then SIGKILL after {}", status_line::human(grace)),
        };
        eprintln!("redfour: warning: {doing}: the command left processes running in its process group; they got {how} before the release");
    }
    let status = match status {
        Ok(status) => status,
        Err(e) => {
            release_after_failure(guard, &doing).await;
            return Err(Failure::new(
                exit::OS,
                format!("{doing}: cannot wait for the command: {e}"),
            ));
        }
    };
    let code = job::exit_status(status);
    finish(guard, code, &doing).await
}

/// Releases the lock after the child exited, and decides redfour's exit status.
async fn finish(guard: LockGuard, code: u8, doing: &str) -> Result<u8, Failure> {
    let lost = guard.lost_reason();
    let ttl = guard.ttl();
    match guard.release().await {
        Ok(r) if r.result == ReleaseOutcome::Released => Ok(code),
        Ok(r) => {
            let found = match r.result {
                ReleaseOutcome::Conflict => format!("held by index {}", r.index),
                _ => "gone".to_owned(),
            };
            Err(Failure::new(
                exit::LEASE_LOST,
                format!("{doing}: the lease was lost while the command ran: at release the lock was {found}; the command exited with {code}"),
            ))
        }
        Err(e) => match lost {
            Some(why) => Err(Failure::new(
                exit::LEASE_LOST,
                format!("{doing}: the lease was lost while the command ran ({why}); the command exited with {code}; the release failed too: {}", exit::chain(&e)),
            )),
            None => {
                eprintln!(
                    "redfour: warning: {doing}: could not release the lock (it expires within {}): {}",
                    status_line::human(ttl),
                    exit::one_line(&exit::chain(&e))
                );
                Ok(code)
            }
        },
    }
}

/// The lease ended while the child ran: stop its whole group, give back what may still be ours.
async fn lease_lost(
    mut job: Job,
    guard: LockGuard,
    why: LeaseLost,
    grace: Duration,
    signals: &mut Signals,
    doing: &str,
) -> Failure {
    job.signal(Signal::SIGTERM);
    let kill_at = Instant::now() + grace;
    let deadline = tokio::time::Instant::from_std(kill_at);
    let mut killed = false;
    let status = loop {
        tokio::select! {
            biased;
            status = job.wait() => break status,
            () = tokio::time::sleep_until(deadline), if !killed => {
                killed = true;
                job.signal(Signal::SIGKILL);
            }
            sig = signals.recv() => job.signal(sig),
        }
    };
    // The rest of the group got the same SIGTERM; whatever still runs gets SIGKILL on time.
    if job.end(kill_at).await == Some(Stopped::Killed) {
        killed = true;
    }
    // After `Expired` (renewals failed), the lock may still be ours on the server: give it back.
    // After `Missing` or `Conflict` this answers `expired` or `conflict` and touches nothing.
    let _ = guard.release().await;
    let ended = match status {
        Ok(status) if killed => format!(
            "the command got SIGTERM, then SIGKILL after {}, and ended with {}",
            status_line::human(grace),
            job::exit_status(status)
        ),
        Ok(status) => format!(
            "the command got SIGTERM and ended with {}",
            job::exit_status(status)
        ),
        Err(e) => format!("the command got SIGTERM; waiting for it failed: {e}"),
    };
    Failure::new(
        exit::LEASE_LOST,
        format!("{doing}: the lease was lost while the command ran ({why}); {ended}"),
    )
}

/// Gives the lock back when the command could not run; failures only delay others by the ttl.
async fn release_after_failure(guard: LockGuard, doing: &str) {
    if let Err(e) = guard.release().await {
        eprintln!(
            "redfour: warning: {doing}: could not release the lock: {}",
            exit::one_line(&exit::chain(&e))
        );
    }
}

/// A wait that ran out is an outcome here, not an error.
fn not_acquired_is_none(r: redfour::Result<LockGuard>) -> redfour::Result<Option<LockGuard>> {
    match r {
        Ok(guard) => Ok(Some(guard)),
        Err(e) if e.is_not_acquired() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The lock's description when `--description` is not given: the program as it was named,
/// without its arguments, which may hold secrets (`status` shows the description to anyone
/// who can read the lock).
fn describe(command: &[OsString]) -> String {
    let program = command
        .first()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut text = format!("redfour run {program}");
    if text.len() > MAX_DESCRIPTION {
        let mut end = MAX_DESCRIPTION;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_program_without_its_arguments() {
        let cmd: Vec<OsString> = ["./deploy.sh", "--token", "s3cret", "it's"]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(describe(&cmd), "redfour run ./deploy.sh");
        let long = vec![OsString::from("é".repeat(600))];
        let text = describe(&long);
        assert!(
            text.len() <= MAX_DESCRIPTION + '…'.len_utf8(),
            "{}",
            text.len()
        );
        assert!(text.ends_with('…'));
    }
}
