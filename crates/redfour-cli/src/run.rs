//! `redfour run`: run a command while holding the lock.
//!
//! The order of events, and why:
//! 1. Signal handlers are installed first, so a SIGTERM that arrives while waiting ends the
//!    wait cleanly instead of killing redfour mid-acquire.
//! 2. Redis is pinged: the library retries an unreachable Redis while waiting, which would hide
//!    a wrong `--url` forever.
//! 3. The lock is taken with keep-alive (renewed every ttl/3) and the command line as its
//!    description, so `redfour status` shows what holds it.
//! 4. The child runs with `REDFOUR_ID` and `REDFOUR_INDEX`; signals are forwarded to it.
//! 5. When it exits, the lock is released at once and its status becomes redfour's. If the
//!    lease is lost first, the child is stopped (SIGTERM, SIGKILL after `--grace`) and redfour
//!    exits 70: the command can no longer assume it is alone.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use redfour::{Client, LeaseLost, LockGuard, ReleaseOutcome};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal as listen, SignalKind};

use crate::exit::{self, Failure};
use crate::flags::{RunSettings, WaitLimit};
use crate::status_line::{self, Holder};

/// The longest description stored with the lock (it is only there to help people).
const MAX_DESCRIPTION: usize = 512;

/// Runs `settings.command` under the lock and returns the exit status for redfour.
pub async fn run(client: &Client, settings: RunSettings) -> Result<u8, Failure> {
    let RunSettings {
        id,
        ttl,
        wait,
        grace,
        command,
    } = settings;
    let doing = format!("run `{id}`");
    let mut signals = Signals::install().map_err(|e| {
        Failure::new(
            exit::OS,
            format!("{doing}: cannot install signal handlers: {e}"),
        )
    })?;
    client
        .ping()
        .await
        .map_err(|e| Failure::from_lib(&e, &doing, client.address()))?;

    let builder = client
        .lock(id.as_str())
        .ttl(ttl)
        .keep_alive(true)
        .description(describe(&command));
    let acquire = async {
        match wait {
            WaitLimit::NoWait => builder.try_acquire().await,
            WaitLimit::UpTo(w) => not_acquired_is_none(builder.wait(w).acquire().await),
            WaitLimit::Forever => builder.acquire().await.map(Some),
        }
    };
    let show_status = stderr_is_terminal();
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
            if show_status {
                status_line::clear();
            }
            return Err(Failure::new(
                signal_status(sig),
                format!("{doing}: interrupted by {sig} while waiting for the lock; the command was not started"),
            ));
        }
    };
    if show_status {
        status_line::clear();
    }
    let guard = match acquired {
        Ok(Some(guard)) => guard,
        Ok(None) => {
            let holder = match client.status(&id).await {
                Ok(status) => Holder::from_status(&status, Instant::now()),
                Err(_) => Holder::Unknown,
            };
            let about = match holder.describe(Instant::now()) {
                text if text.starts_with("held") => text,
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

    let mut child = match spawn(&command, &id, guard.index()) {
        Ok(child) => child,
        Err(e) => {
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
            status = child.wait() => break status,
            why = &mut lost => {
                return Err(lease_lost(&mut child, guard, why, grace, &mut signals, &doing).await);
            }
            sig = signals.recv() => forward(&child, sig),
        }
    };
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
    let code = exit_status(status);
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
                format!("{doing}: the lease was lost while the command ran ({why}); the command exited with {code}; the release failed too: {e}"),
            )),
            None => {
                eprintln!(
                    "redfour: warning: {doing}: could not release the lock (it expires within {}): {}",
                    status_line::human(ttl),
                    exit::one_line(&e.to_string())
                );
                Ok(code)
            }
        },
    }
}

/// The lease ended while the child ran: stop the child, give back what may still be ours.
async fn lease_lost(
    child: &mut Child,
    guard: LockGuard,
    why: LeaseLost,
    grace: Duration,
    signals: &mut Signals,
    doing: &str,
) -> Failure {
    send(child, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    let mut killed = false;
    let status = loop {
        tokio::select! {
            biased;
            status = child.wait() => break status,
            () = tokio::time::sleep_until(deadline), if !killed => {
                killed = true;
                // Fails only if the child is already gone, which `wait` reports next.
                let _ = child.start_kill();
            }
            sig = signals.recv() => forward(child, sig),
        }
    };
    // After `Expired` (renewals failed), the lock may still be ours on the server: give it back.
    // After `Missing` or `Conflict` this answers `expired` or `conflict` and touches nothing.
    let _ = guard.release().await;
    let ended = match status {
        Ok(status) if killed => format!(
            "the command got SIGTERM, then SIGKILL after {}, and ended with {}",
            status_line::human(grace),
            exit_status(status)
        ),
        Ok(status) => format!(
            "the command got SIGTERM and ended with {}",
            exit_status(status)
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
            exit::one_line(&e.to_string())
        );
    }
}

fn spawn(command: &[OsString], id: &str, index: i64) -> std::io::Result<Child> {
    let (program, args) = command
        .split_first()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "empty command"))?;
    Command::new(program)
        .args(args)
        .env("REDFOUR_ID", id)
        .env("REDFOUR_INDEX", index.to_string())
        .spawn()
}

/// A wait that ran out is an outcome here, not an error.
fn not_acquired_is_none(r: redfour::Result<LockGuard>) -> redfour::Result<Option<LockGuard>> {
    match r {
        Ok(guard) => Ok(Some(guard)),
        Err(e) if e.is_not_acquired() => Ok(None),
        Err(e) => Err(e),
    }
}

/// The child's status as an exit status: its code, or 128 + the signal that killed it.
fn exit_status(status: ExitStatus) -> u8 {
    if let Some(code) = status.code() {
        // Unix exit codes are 0..=255 already.
        return u8::try_from(code & 0xff).unwrap_or(u8::MAX);
    }
    match status.signal() {
        Some(sig) => u8::try_from(i32::from(exit::SIGNAL_BASE) + sig).unwrap_or(u8::MAX),
        None => u8::MAX,
    }
}

fn signal_status(sig: Signal) -> u8 {
    u8::try_from(i32::from(exit::SIGNAL_BASE) + sig as i32).unwrap_or(u8::MAX)
}

fn forward(child: &Child, sig: Signal) {
    send(child, sig);
}

fn send(child: &Child, sig: Signal) {
    // `id()` is `None` once the child was reaped, so a recycled pid is never signalled.
    let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) else {
        return;
    };
    // ESRCH: it exited in between; `wait` reports that.
    let _ = signal::kill(Pid::from_raw(pid), sig);
}

/// The command line, quoted the way a shell would need it, for the lock's description.
fn describe(command: &[OsString]) -> String {
    let words: Vec<String> = command
        .iter()
        .map(|w| {
            let w = w.to_string_lossy();
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                w.into_owned()
            } else {
                format!("'{}'", w.replace('\'', r"'\''"))
            }
        })
        .collect();
    let mut text = format!("redfour run {}", words.join(" "));
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

fn stderr_is_terminal() -> bool {
    use std::io::IsTerminal;
    std::io::stderr().is_terminal()
}

/// SIGINT, SIGTERM and SIGHUP, caught for as long as `run` lasts.
///
/// A signal this process ignored from the start (under `nohup`, or SIGINT in a shell's
/// background job) is left ignored: catching it would reset it to its default in the child,
/// which would then die of a hangup that `nohup` was meant to shield it from.
struct Signals {
    interrupt: Option<tokio::signal::unix::Signal>,
    terminate: Option<tokio::signal::unix::Signal>,
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Signals {
    fn install() -> std::io::Result<Signals> {
        let ignored = ignored_at_start();
        let catch = |sig: Signal, kind: SignalKind| -> std::io::Result<_> {
            if ignored & signal_bit(sig) != 0 {
                Ok(None)
            } else {
                listen(kind).map(Some)
            }
        };
        Ok(Signals {
            interrupt: catch(Signal::SIGINT, SignalKind::interrupt())?,
            terminate: catch(Signal::SIGTERM, SignalKind::terminate())?,
            hangup: catch(Signal::SIGHUP, SignalKind::hangup())?,
        })
    }

    /// The next signal received. Cancel safe.
    async fn recv(&mut self) -> Signal {
        // `recv` yields `None` only when the runtime shuts down; never spin on it.
        tokio::select! {
            Some(()) = next(&mut self.interrupt) => Signal::SIGINT,
            Some(()) = next(&mut self.terminate) => Signal::SIGTERM,
            Some(()) = next(&mut self.hangup) => Signal::SIGHUP,
            else => std::future::pending().await,
        }
    }
}

async fn next(signal: &mut Option<tokio::signal::unix::Signal>) -> Option<()> {
    match signal {
        Some(signal) => signal.recv().await,
        None => None,
    }
}

/// The set of signals ignored when the process started, as a mask with bit N-1 for signal N.
///
/// Read from `/proc/self/status` (Linux), since asking `sigaction` would need `unsafe`; where
/// that file does not exist, nothing is taken as ignored.
fn ignored_at_start() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| parse_sig_ign(&status))
        .unwrap_or(0)
}

fn parse_sig_ign(status: &str) -> Option<u64> {
    let hex = status.lines().find_map(|l| l.strip_prefix("SigIgn:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

fn signal_bit(sig: Signal) -> u64 {
    1u64 << ((sig as i32 - 1) & 63)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_the_command_line() {
        let cmd: Vec<OsString> = ["sh", "-c", "exit 7", "it's", ""]
            .iter()
            .map(OsString::from)
            .collect();
        assert_eq!(describe(&cmd), r"redfour run sh -c 'exit 7' 'it'\''s' ''");
        let long = vec![OsString::from("é".repeat(600))];
        let text = describe(&long);
        assert!(
            text.len() <= MAX_DESCRIPTION + '…'.len_utf8(),
            "{}",
            text.len()
        );
        assert!(text.ends_with('…'));
    }

    #[test]
    fn reads_the_ignored_signals() {
        let status = "Name:\tredfour\nSigBlk:\t0000000000000000\nSigIgn:\t0000000000001001\n";
        let mask = parse_sig_ign(status).unwrap();
        assert_ne!(mask & signal_bit(Signal::SIGHUP), 0);
        assert_ne!(mask & signal_bit(Signal::SIGPIPE), 0);
        assert_eq!(mask & signal_bit(Signal::SIGINT), 0);
        assert_eq!(parse_sig_ign("Name:\tx\n"), None);
        // Rust ignores SIGPIPE before `main`: the live value is readable and says so.
        if std::path::Path::new("/proc/self/status").exists() {
            assert_ne!(ignored_at_start() & signal_bit(Signal::SIGPIPE), 0);
        }
    }

    #[test]
    fn exit_status_of_a_signal_is_128_plus() {
        assert_eq!(exit_status(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_status(ExitStatus::from_raw(0)), 0);
        assert_eq!(exit_status(ExitStatus::from_raw(15)), 143);
        assert_eq!(exit_status(ExitStatus::from_raw(9)), 137);
        assert_eq!(signal_status(Signal::SIGINT), 130);
    }
}
