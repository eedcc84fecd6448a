//! The signals redfour catches instead of dying of them.
//!
//! Every signal whose default action ends a process and that another process sends on
//! purpose is caught, for as long as a command lasts: a one-shot command that gets one stops
//! and cleans up (a wait leaves the fair queue, a lock won by an interrupted acquire is given
//! back), and `run` forwards it to its command's process group. Not caught: SIGKILL (it
//! cannot be), the faults a process raises on itself (SIGSEGV, SIGBUS, SIGILL, SIGFPE,
//! SIGABRT, SIGTRAP, SIGSYS), the real-time signals, SIGXCPU/SIGXFSZ (resource limits of
//! redfour itself) and SIGPIPE (ignored by Rust programs). If one of those ends redfour
//! during `run`, its watcher stops the command ([`crate::job`]).
//!
//! A signal this process ignored from the start (under `nohup`, or SIGINT in a shell's
//! background job) is left ignored: catching it would reset it to its default in the child,
//! which would then die of a hangup that `nohup` was meant to shield it from.

use std::future::poll_fn;
use std::task::Poll;

use nix::sys::signal::Signal;
use tokio::signal::unix::{signal as listen, SignalKind};

use crate::exit;

/// The signals caught, in the order they are checked when several are pending.
const CAUGHT: &[Signal] = &[
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGIO,
    #[cfg(any(target_os = "linux", target_os = "android"))]
    Signal::SIGPWR,
];

/// The caught signals' streams.
pub struct Signals {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
}

impl Signals {
    /// Starts catching every signal of [`CAUGHT`] that was not ignored at start.
    pub fn install() -> std::io::Result<Signals> {
        let ignored = ignored_at_start();
        let mut streams = Vec::with_capacity(CAUGHT.len());
        for &sig in CAUGHT {
            if ignored & signal_bit(sig) == 0 {
                streams.push((sig, listen(SignalKind::from_raw(sig as i32))?));
            }
        }
        Ok(Signals { streams })
    }

    /// The next signal received. Cancel safe.
    pub async fn recv(&mut self) -> Signal {
        poll_fn(|cx| {
            for (sig, stream) in &mut self.streams {
                // `None` only when the runtime shuts down: then this signal never comes.
                if let Poll::Ready(Some(())) = stream.poll_recv(cx) {
                    return Poll::Ready(*sig);
                }
            }
            Poll::Pending
        })
        .await
    }
}

/// redfour's exit status after signal `sig` ended what it was doing: 128 + N, as shells do.
pub fn exit_status(sig: Signal) -> u8 {
    u8::try_from(i32::from(exit::SIGNAL_BASE) + sig as i32).unwrap_or(u8::MAX)
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
    fn exit_status_is_128_plus_the_signal() {
        assert_eq!(exit_status(Signal::SIGINT), 130);
        assert_eq!(exit_status(Signal::SIGQUIT), 131);
        assert_eq!(exit_status(Signal::SIGTERM), 143);
    }

    #[test]
    fn every_caught_signal_is_catchable() {
        // tokio refuses the signals that cannot be handled; none of them is in the list.
        for forbidden in [
            Signal::SIGKILL,
            Signal::SIGSTOP,
            Signal::SIGSEGV,
            Signal::SIGILL,
            Signal::SIGFPE,
        ] {
            assert!(!CAUGHT.contains(&forbidden), "{forbidden}");
        }
    }
}
