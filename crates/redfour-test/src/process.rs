//! What the kit's child processes (`redis-server`, sentinels) have in common: finding a port,
//! spawning until the process is ready, and reading what it logged.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::tls::TlsCerts;

/// Fresh ports tried by [`Kind::start`] before giving up; each failure is a lost port race.
const START_ATTEMPTS: usize = 10;
/// How long one spawned process gets to be ready.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// Between two readiness checks of a spawned process.
const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// What redis logs or prints when it cannot bind its port.
const ADDR_IN_USE: &str = "Address already in use";

/// Why one spawn did not give a ready process.
pub(crate) enum SpawnError {
    /// The port was taken: worth another try (another port, or the same one a bit later).
    PortInUse,
    /// Anything else: retrying would fail the same way.
    Fatal(io::Error),
}

/// What sets one kind of child process apart; spawning it, waiting for it and reading its log
/// work the same for every kind.
pub(crate) struct Kind {
    /// What messages call the process: `redis-server`, `sentinel`.
    pub(crate) label: &'static str,
    /// The log file, in the process's directory.
    pub(crate) log_file: &'static str,
    /// stdout and stderr of the process, in its directory: config errors are printed there,
    /// before the log file is opened.
    pub(crate) stdio_file: &'static str,
    /// Logged once the process has bound its port. Seeing it in *our* log proves that the answer
    /// to `PING` came from our process and not from whoever won a port race against it.
    pub(crate) ready_line: &'static str,
    /// The argument that selects the binary's mode (`--sentinel`): added last to the command
    /// line, and named in spawn errors.
    pub(crate) mode: Option<&'static str>,
    /// The starts of the replies to `PING` that show the process is serving; any other reply
    /// (`-LOADING`) means not yet.
    pub(crate) ping_replies: &'static [&'static [u8]],
}

impl Kind {
    /// Spawns the process on a free port and waits until it is ready, on a fresh port again
    /// while the chosen one is taken before the process can bind it, up to [`START_ATTEMPTS`]
    /// times. `command` gives the command line for a port (without stdio or mode), and may
    /// prepare files for it. Returns the port and the ready child.
    ///
    /// Errors are those of `command`, of [`spawn_ready`](Self::spawn_ready), and
    /// [`io::ErrorKind::AddrInUse`] if every port was lost; their messages include the log.
    pub(crate) fn start(
        &self,
        dir: &Path,
        tls: Option<&TlsCerts>,
        mut command: impl FnMut(u16) -> io::Result<Command>,
    ) -> io::Result<(u16, Child)> {
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            match self.spawn_ready(command(port)?, port, dir, tls) {
                Ok(child) => return Ok((port, child)),
                Err(SpawnError::PortInUse) => continue,
                Err(SpawnError::Fatal(err)) => return Err(err),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!(
                "every one of {START_ATTEMPTS} ports was taken before {} could bind it\n{}",
                self.label,
                self.log(dir)
            ),
        ))
    }

    /// Spawns `command` with its stdout and stderr appended to the stdio file in `dir`, and
    /// waits until the process is ready: its ready line is in the log and it answers `PING` on
    /// `port` (over TLS with `tls`). Kills it on any failure.
    pub(crate) fn spawn_ready(
        &self,
        mut command: Command,
        port: u16,
        dir: &Path,
        tls: Option<&TlsCerts>,
    ) -> Result<Child, SpawnError> {
        let log_path = dir.join(self.log_file);
        // Earlier runs share the log file; only what this process writes counts.
        let offset = file_len(&log_path);
        let stdio_offset = file_len(&dir.join(self.stdio_file));
        let mut child = self.spawn(&mut command, dir).map_err(|err| {
            let program = Path::new(command.get_program()).display();
            let mode = self.mode.map(|mode| format!(" {mode}")).unwrap_or_default();
            SpawnError::Fatal(io::Error::new(
                err.kind(),
                format!("cannot spawn {program}{mode}: {err}"),
            ))
        })?;

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match child.try_wait() {
                Ok(None) => {}
                Ok(Some(status)) => {
                    return Err(self.exited(status, port, dir, offset, stdio_offset))
                }
                Err(err) => {
                    kill_and_reap(child);
                    return Err(SpawnError::Fatal(err));
                }
            }
            if read_from(&log_path, offset).contains(self.ready_line)
                && self.answers_ping(port, tls)
            {
                return Ok(child);
            }
            if Instant::now() >= deadline {
                kill_and_reap(child);
                return Err(SpawnError::Fatal(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} on port {port} not ready after {READY_TIMEOUT:?}\n{}",
                        self.label,
                        self.log(dir)
                    ),
                )));
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// The log of every process run in `dir`, oldest first, followed by what they printed if
    /// anything; meant for failure messages, so reading errors are reported in the text.
    pub(crate) fn log(&self, dir: &Path) -> String {
        let log_path = dir.join(self.log_file);
        let mut text = match fs::read(&log_path) {
            Ok(bytes) => format!(
                "--- {} ---\n{}",
                log_path.display(),
                String::from_utf8_lossy(&bytes)
            ),
            Err(err) => format!("--- {}: {err} ---\n", log_path.display()),
        };
        let stdio = read_from(&dir.join(self.stdio_file), 0);
        if !stdio.trim().is_empty() {
            text.push_str(&format!("\n--- {} stdout/stderr ---\n", self.label));
            text.push_str(&stdio);
        }
        text
    }

    fn spawn(&self, command: &mut Command, dir: &Path) -> io::Result<Child> {
        let stdio = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(self.stdio_file))?;
        if let Some(mode) = self.mode {
            command.arg(mode);
        }
        command
            .stdin(Stdio::null())
            .stdout(stdio.try_clone()?)
            .stderr(stdio)
            .spawn()
    }

    /// Why a process that exited before it was ready did: a lost port race, or anything else.
    fn exited(
        &self,
        status: ExitStatus,
        port: u16,
        dir: &Path,
        offset: u64,
        stdio_offset: u64,
    ) -> SpawnError {
        let output = read_from(&dir.join(self.log_file), offset)
            + &read_from(&dir.join(self.stdio_file), stdio_offset);
        if output.contains(ADDR_IN_USE) {
            return SpawnError::PortInUse;
        }
        SpawnError::Fatal(io::Error::other(format!(
            "{} on port {port} exited with {status}\n{}",
            self.label,
            self.log(dir)
        )))
    }

    /// Whether something on `port` answers `PING` (over TLS with `tls`) with one of the
    /// [`ping_replies`](Self::ping_replies). Silence means not yet.
    fn answers_ping(&self, port: u16, tls: Option<&TlsCerts>) -> bool {
        match tls {
            Some(tls) => tls
                .probe(port)
                .is_some_and(|mut stream| self.pongs(&mut stream)),
            None => {
                let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
                let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                else {
                    return false;
                };
                let timeout = Some(Duration::from_millis(500));
                if stream.set_read_timeout(timeout).is_err()
                    || stream.set_write_timeout(timeout).is_err()
                {
                    return false;
                }
                self.pongs(&mut &stream)
            }
        }
    }

    fn pongs(&self, stream: &mut (impl Read + Write)) -> bool {
        if stream.write_all(b"PING\r\n").is_err() || stream.flush().is_err() {
            return false;
        }
        let mut reply = Vec::new();
        let mut buf = [0_u8; 64];
        while !reply.ends_with(b"\r\n") {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => return false,
                Ok(n) => reply.extend_from_slice(&buf[..n]),
            }
        }
        self.ping_replies
            .iter()
            .any(|expected| reply.starts_with(expected))
    }
}

/// A port that was free a moment ago.
pub(crate) fn free_port() -> io::Result<u16> {
    Ok(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?
        .local_addr()?
        .port())
}

/// Kills `child` with `SIGKILL` and reaps it.
pub(crate) fn kill_and_reap(mut child: Child) {
    // Errors mean the process is already gone; `wait` reaps it either way.
    let _ = child.kill();
    let _ = child.wait();
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).map(|meta| meta.len()).unwrap_or(0)
}

/// The file's text from byte `offset` on; empty if it cannot be read.
fn read_from(path: &Path, offset: u64) -> String {
    let Ok(bytes) = fs::read(path) else {
        return String::new();
    };
    let start = usize::try_from(offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kind whose "process" is a shell script, so the mechanics can be checked without redis.
    const SCRIPT: Kind = Kind {
        label: "script",
        log_file: "script.log",
        stdio_file: "script.stdio",
        ready_line: "ready",
        mode: Some("--mode"),
        ping_replies: &[b"+PONG"],
    };

    fn script(text: &str) -> Command {
        let mut command = Command::new("sh");
        command.arg("-c").arg(text);
        command
    }

    #[test]
    fn spawn_errors_name_the_binary_and_the_mode() {
        let dir = tempfile::tempdir().expect("temp dir");
        let binary = dir.path().join("no-such-binary");
        match SCRIPT.spawn_ready(Command::new(&binary), 1, dir.path(), None) {
            Err(SpawnError::Fatal(err)) => {
                assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
                let expected = format!("cannot spawn {} --mode: ", binary.display());
                assert!(err.to_string().starts_with(&expected), "{err}");
            }
            Err(SpawnError::PortInUse) => panic!("a missing binary is no port race"),
            Ok(_) => panic!("a missing binary was spawned"),
        }
    }

    #[test]
    fn exit_with_address_in_use_is_a_lost_port_race() {
        let dir = tempfile::tempdir().expect("temp dir");
        let command = script("echo 'bind: Address already in use'; exit 1");
        assert!(matches!(
            SCRIPT.spawn_ready(command, 1, dir.path(), None),
            Err(SpawnError::PortInUse)
        ));
    }

    #[test]
    fn other_exits_are_fatal_and_carry_the_output() {
        let dir = tempfile::tempdir().expect("temp dir");
        let command = script("echo 'bad argument'; exit 1");
        match SCRIPT.spawn_ready(command, 1, dir.path(), None) {
            Err(SpawnError::Fatal(err)) => {
                let text = err.to_string();
                assert!(text.starts_with("script on port 1 exited with "), "{text}");
                assert!(
                    text.contains("--- script stdout/stderr ---\nbad argument"),
                    "{text}"
                );
            }
            Err(SpawnError::PortInUse) => panic!("no port race here"),
            Ok(_) => panic!("a process that exited was taken for ready"),
        }
    }

    #[test]
    fn log_reports_a_missing_file_and_skips_blank_output() {
        let dir = tempfile::tempdir().expect("temp dir");
        let missing = SCRIPT.log(dir.path());
        assert!(missing.starts_with("--- "), "{missing}");
        assert!(!missing.contains("stdout/stderr"), "{missing}");

        fs::write(dir.path().join(SCRIPT.log_file), "line\n").expect("write log");
        fs::write(dir.path().join(SCRIPT.stdio_file), " \n").expect("write stdio");
        let log_path = dir.path().join(SCRIPT.log_file);
        assert_eq!(
            SCRIPT.log(dir.path()),
            format!("--- {} ---\nline\n", log_path.display())
        );
    }

    #[test]
    fn read_from_starts_at_the_offset() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("file");
        fs::write(&path, "earlier run\nthis run\n").expect("write");
        assert_eq!(read_from(&path, 12), "this run\n");
        assert_eq!(read_from(&path, 1000), "");
        assert_eq!(file_len(&path), 21);
        assert_eq!(file_len(&dir.path().join("missing")), 0);
        assert_eq!(read_from(&dir.path().join("missing"), 0), "");
    }
}
