//! `redfour`: take a Redis lock from the shell, or run a command while holding one.
//!
//! The flow: clap parses the raw flags ([`flags::Flags`]), which are checked and resolved into
//! [`flags::Settings`]; a single-threaded runtime then runs the command ([`commands`], [`run`],
//! [`list`]).
//! Every failure is a [`exit::Failure`], which knows its exit status; the table of statuses is
//! in [`exit`] and at the end of `redfour --help`.
#![forbid(unsafe_code)]

mod commands;
mod duration;
mod exit;
mod flags;
mod job;
mod list;
mod run;
mod signals;
mod status_line;

use std::process::ExitCode;

use clap::Parser;

use crate::exit::Failure;

/// `REDFOUR_LOG=debug` (or any `tracing` filter) prints the library's spans and events
/// (acquire, wait, renewals, lost leases) on stderr. Off by default: stderr stays one line per
/// error for scripts.
fn init_diagnostics() {
    let Ok(filter) = std::env::var("REDFOUR_LOG") else {
        return;
    };
    match tracing_subscriber::EnvFilter::try_new(&filter) {
        Ok(filter) => tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        Err(e) => eprintln!("redfour: ignoring REDFOUR_LOG={filter:?}: {e}"),
    }
}

fn main() -> ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == job::WATCH_ARG) {
        // Not a user command: the watcher `run` starts beside its command (see `job`).
        return job::watch_main(&args[2..]);
    }
    let flags = match flags::Flags::try_parse() {
        Ok(flags) => flags,
        Err(err) => {
            // Usage errors exit 2; --help and --version print to stdout and exit 0.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(exit::USAGE));
        }
    };
    init_diagnostics();
    let settings = match flags.resolve() {
        Ok(settings) => settings,
        Err(failure) => return failure.report(),
    };
    // One thread is plenty: a handful of sockets, one child and a timer or two.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return Failure::new(exit::OS, format!("cannot start the runtime: {e}")).report(),
    };
    match runtime.block_on(commands::execute(settings)) {
        Ok(code) => ExitCode::from(code),
        Err(failure) => failure.report(),
    }
}
