//! Exit statuses, and the one error type of the binary that carries them.
//!
//! Scripts branch on these numbers, so they are part of the contract: keep them in sync with
//! [`EXIT_CODES_HELP`], which `--help` shows.

use std::fmt;
use std::process::ExitCode;

/// The command did what was asked (acquired, released or found expired, renewed, reported,
/// listed: also when nothing is held).
pub const SUCCESS: u8 = 0;
/// A negative outcome that is not an error: held by another, the wait ran out, release
/// conflict, renew missing or conflict.
pub const OUTCOME: u8 = 1;
/// Bad flags or invalid input; nothing was sent to Redis.
pub const USAGE: u8 = 2;
/// EX_DATAERR: the key holds foreign or corrupt data; it was left untouched. Never from
/// `list`, which lists such keys as `foreign`.
pub const DATA: u8 = 65;
/// EX_UNAVAILABLE: Redis cannot be reached, did not answer in time, or refused the command.
/// Also a refused login (wrong password), a command the ACL does not permit, and a sentinel
/// service nobody knows: not 2, which promises that nothing was sent to Redis (and which a
/// wrong password never got before), but reported at once, also by a wait without `--wait`.
pub const UNAVAILABLE: u8 = 69;
/// EX_SOFTWARE: `run` lost the lease while the command ran.
pub const LEASE_LOST: u8 = 70;
/// EX_OSERR: the operating system refused something redfour needs (a runtime, signal handlers,
/// waiting for the child).
pub const OS: u8 = 71;
/// EX_IOERR: the JSON answer could not be written to stdout.
pub const IO: u8 = 74;
/// EX_TEMPFAIL: `run` did not get the lock within `--wait`; the command was not started. Also
/// every acquiring command whose lock was granted too late to be held (its validity ran out
/// while the servers answered; it was released, nobody holds it): try again.
pub const NOT_ACQUIRED: u8 = 75;
/// `run`: the command exists but cannot be executed (as in shells).
pub const CANNOT_EXECUTE: u8 = 126;
/// `run`: the command was not found (as in shells).
pub const NOT_FOUND: u8 = 127;
/// `run`: 128 + N when the command was killed by signal N, or redfour got signal N while
/// waiting for the lock.
pub const SIGNAL_BASE: u8 = 128;

/// The exit-status table shown at the end of `redfour --help`.
pub const EXIT_CODES_HELP: &str = "\
EXIT STATUS:
  0        success: acquired; released (or already expired); renewed; status printed;
           list printed (also when nothing is held)
  1        negative outcome: held by another (acquire), the wait ran out (wait),
           conflict (release), missing or conflict (renew)
  2        usage error or invalid input (bad flag, duration, index or id)
  65       the key holds foreign or corrupt data (left untouched; `list` shows such
           keys as foreign instead)
  69       Redis cannot be reached (with redlock: no majority of the masters), did
           not answer in time (outcome unknown), or refused the command; also, at
           once and without retrying (a wait too), when Redis refuses the login or
           the ACL refuses a command, and when no sentinel knows --service
  70       run: the lease was lost while the command ran (it got SIGTERM, then
           SIGKILL after --grace)
  71       operating-system error (runtime, signal handlers)
  74       the JSON answer could not be written to stdout (acquire and wait
           then release the lock they took)
  75       run: the lock was not acquired within --wait (the command was not started);
           acquire, wait, run: the lock was granted too late to be held (slow or
           stalled servers used up its validity; it was released, nobody holds it)
  126/127  run: the command cannot be executed / was not found
  128+N    run: the command was killed by signal N; any command: redfour got
           signal N (a wait leaves the queue, a won lock is released first)
  other    run: the command's own exit status

Every command but `run` and `list` prints exactly one JSON object on one line to
stdout; `run`'s stdout is the command's; `list` prints a table, or with --json one
JSON object per line. Errors are one line on stderr, starting with `redfour: `. On a
terminal, `wait` and `run` show a status line on stderr while they wait (not with
--quiet).

ENVIRONMENT:
  REDIS_URL, REDFOUR_NAMESPACE  defaults for --url and --namespace
  REDFOUR_TOPOLOGY, REDFOUR_SERVICE  defaults for --topology and --service
  REDFOUR_MASTER_PASSWORD, REDFOUR_MASTER_USER  defaults for --master-password, --master-user
  REDFOUR_TLS_CA                default for --tls-ca
  REDFOUR_LOG                   diagnostics on stderr: a level (`debug`) or a filter
                                (`redfour=trace`), e.g. to watch renewals during `run`";

/// A failure that ends the process: a one-line message for stderr and an exit status.
#[derive(Debug)]
pub struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    /// A failure with this exit status.
    pub fn new(code: u8, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// Invalid input: exit status 2.
    pub fn usage(message: impl Into<String>) -> Self {
        Failure::new(USAGE, message)
    }

    /// Classifies a library error by its kind (never by its text). `doing` says what was
    /// attempted (e.g. "acquire `x`") and `address` is the (password-redacted) Redis address.
    /// The cause (the innermost error of the chain, e.g. "Connection refused (os error 111)")
    /// is said once, at the end.
    pub fn from_lib(err: &redfour::Error, doing: &str, address: &str) -> Self {
        use redfour::ErrorKind;
        let what = summary(err);
        let because = |text: String| match root_cause(err) {
            Some(cause) => format!("{text}: {cause}"),
            None => text,
        };
        match err.kind() {
            ErrorKind::InvalidInput => Failure::usage(because(format!("{doing}: {what}"))),
            ErrorKind::CorruptData => Failure::new(
                DATA,
                format!("{doing}: foreign or corrupt data in Redis at {address}, left untouched: {what}"),
            ),
            ErrorKind::QuorumLost => Failure::new(
                UNAVAILABLE,
                because(format!("{doing}: Redlock quorum lost: {what} ({address})")),
            ),
            ErrorKind::Unavailable => Failure::new(
                UNAVAILABLE,
                because(format!("{doing}: cannot reach Redis at {address}")),
            ),
            // Not transient: the library gave up at once, also a wait without --wait. 69 as
            // every refusal by the server. The server's own words (the root cause) say whether
            // it was the login or the ACL; the library's message is not repeated, since it may
            // name the address already.
            ErrorKind::AccessDenied => Failure::new(
                UNAVAILABLE,
                because(format!(
                    "{doing}: Redis at {address} refused access (check the password, the user name and its ACL)"
                )),
            ),
            ErrorKind::UnknownService => Failure::new(
                UNAVAILABLE,
                because(format!("{doing}: unknown sentinel service at {address}: {what}")),
            ),
            ErrorKind::Timeout => Failure::new(
                UNAVAILABLE,
                because(format!("{doing}: Redis at {address} did not answer in time, the outcome is unknown")),
            ),
            ErrorKind::NotAcquired => Failure::new(NOT_ACQUIRED, format!("{doing}: {what}")),
            // Not held by another, nobody holds it: a retry may win (EX_TEMPFAIL).
            ErrorKind::ValidityExpired => Failure::new(
                NOT_ACQUIRED,
                format!("{doing}: won too late, at {address}: {what}"),
            ),
            // Script failures, other errors of the server (OOM) and kinds added later: the
            // server side is at fault, not the caller's input.
            _ => Failure::new(
                UNAVAILABLE,
                format!("{doing}: Redis at {address} failed the request: {}", chain(err)),
            ),
        }
    }

    /// The exit status.
    #[cfg(test)]
    pub fn code(&self) -> u8 {
        self.code
    }

    /// The same failure with `more` appended to its message.
    pub fn and(mut self, more: &str) -> Self {
        self.message.push_str(more);
        self
    }

    /// Prints the message on stderr (one line) and returns the exit status.
    pub fn report(&self) -> ExitCode {
        eprintln!("redfour: {}", one_line(&self.message));
        ExitCode::from(self.code)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The error's own message and key, without its kind (which the caller says in its own words)
/// or its cause: "message (key `k`)".
pub fn summary(err: &redfour::Error) -> String {
    match err.key() {
        Some(key) => format!("{} (key `{key}`)", err.message()),
        None => err.message().to_owned(),
    }
}

/// The innermost error of the chain: "Connection refused (os error 111)" rather than three
/// layers saying that Redis cannot be reached. `None` when the error has no source.
pub fn root_cause(err: &redfour::Error) -> Option<String> {
    let mut current: &dyn std::error::Error = std::error::Error::source(err)?;
    while let Some(source) = current.source() {
        current = source;
    }
    Some(current.to_string())
}

/// The error and every source under it, each said once: "a: b: c".
pub fn chain(err: &redfour::Error) -> String {
    let mut text = err.to_string();
    let mut current: Option<&dyn std::error::Error> = std::error::Error::source(err);
    while let Some(source) = current {
        text.push_str(": ");
        text.push_str(&source.to_string());
        current = source.source();
    }
    text
}

/// Scripts read stderr line by line: keep every message on one.
pub fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_stay_on_one_line() {
        assert_eq!(one_line("a\nb\r\n  c\t"), "a b c");
    }

    #[test]
    fn the_help_table_names_every_code() {
        for code in [
            SUCCESS,
            OUTCOME,
            USAGE,
            DATA,
            UNAVAILABLE,
            LEASE_LOST,
            OS,
            IO,
            NOT_ACQUIRED,
        ] {
            assert!(
                EXIT_CODES_HELP.contains(&format!("\n  {code} ")),
                "{code} missing from the help table"
            );
        }
        assert!(EXIT_CODES_HELP.contains(&format!("{CANNOT_EXECUTE}/{NOT_FOUND}")));
        assert!(EXIT_CODES_HELP.contains(&format!("{SIGNAL_BASE}+N")));
    }
}
