//! A `redis-server` child process on a free port, killed on drop.

use std::fmt;
use std::io;
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::process::{kill_and_reap, Kind, SpawnError};
use crate::tls::{self, TlsCerts};
use crate::wait::wait_until;

/// Spawns tried by `try_restart` on the fixed port.
const RESTART_ATTEMPTS: usize = 5;
/// How long a restart waits for the old port to become bindable again.
const PORT_FREE_TIMEOUT: Duration = Duration::from_secs(5);
/// Read/write timeout of the connections made by `cmd`, so a wedged server fails the test
/// instead of hanging it.
const ADMIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a server writes, and how it shows it is ready.
const REDIS_SERVER: Kind = Kind {
    label: "redis-server",
    log_file: "redis.log",
    stdio_file: "redis.stdio",
    // Logged at `notice` level once the listening socket is bound.
    ready_line: "Ready to accept connections",
    mode: None,
    // `-NOAUTH` when a password is required.
    ping_replies: &[b"+PONG", b"-NOAUTH"],
};
const NOT_FOUND: &str = "redis-server not found in PATH; install it (apt-get install redis-server)";

/// Returns the path of the `redis-server` binary found on `PATH`.
///
/// # Panics
///
/// Panics with "redis-server not found in PATH; install it (apt-get install redis-server)" when
/// there is none.
pub fn which_redis_server() -> PathBuf {
    find_redis_server().unwrap_or_else(|| panic!("{NOT_FOUND}"))
}

fn find_redis_server() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("redis-server"))
        .find(|candidate| candidate.is_file())
}

/// A `redis-server` process owned by a test.
///
/// It listens on 127.0.0.1 only, on a port chosen free at start, with `--save ""` and
/// `--appendonly no` (nothing survives a restart), `--enable-debug-command yes`, and its working
/// directory and log file in a temporary directory. Dropping the value kills the process with
/// `SIGKILL`, reaps it and removes the directory.
///
/// `RedisServer` is `Send + Sync`: share it through an `Arc` with tasks that need
/// [`url`](Self::url) or [`cmd`](Self::cmd); [`stop`](Self::stop) and
/// [`restart`](Self::restart) take `&mut self`.
///
/// A `--requirepass` given to [`start_with_args`](Self::start_with_args) is remembered:
/// [`client`](Self::client), [`connection`](Self::connection) and [`cmd`](Self::cmd) log in with
/// it, while [`url`](Self::url) stays without credentials so tests can check that they are
/// required. `Debug` output does not show the password.
///
/// [`start_tls`](Self::start_tls) starts a server that speaks TLS only, with certificates made
/// for it ([`tls`](Self::tls)); everything else works the same, over TLS.
///
/// [`start_unix_with_args`](Self::start_unix_with_args) starts one that also listens on a Unix
/// socket in its directory ([`unix_socket`](Self::unix_socket), [`unix_url`](Self::unix_url)).
pub struct RedisServer {
    port: u16,
    /// `--unixsocket`, when the server also listens on one.
    unix_socket: Option<PathBuf>,
    binary: PathBuf,
    extra_args: Vec<String>,
    password: Option<String>,
    tls: Option<TlsCerts>,
    dir: TempDir,
    process: Mutex<Process>,
}

struct Process {
    /// `None` once stopped.
    child: Option<Child>,
    /// Of the most recent child, kept after a stop.
    pid: u32,
}

impl RedisServer {
    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// Panics when [`try_start`](Self::try_start) fails; the message includes the server log.
    pub fn start() -> RedisServer {
        Self::start_with_args(&[])
    }

    /// Starts a server with extra command-line configuration, e.g. `&["--requirepass", "secret"]`.
    ///
    /// The arguments come after the kit's own, so they can override them. Readiness is judged by
    /// the server's "Ready to accept connections" log line, so do not lower `--loglevel` below
    /// `notice`.
    ///
    /// # Panics
    ///
    /// Panics when [`try_start_with_args`](Self::try_start_with_args) fails; the message includes
    /// the server log.
    pub fn start_with_args(args: &[&str]) -> RedisServer {
        match Self::try_start_with_args(args) {
            Ok(server) => server,
            Err(err) => panic!("failed to start redis-server: {err}"),
        }
    }

    /// Starts a server on a free port and waits until it answers `PING`.
    ///
    /// # Errors
    ///
    /// See [`try_start_with_args`](Self::try_start_with_args).
    pub fn try_start() -> io::Result<RedisServer> {
        Self::try_start_with_args(&[])
    }

    /// Starts a server with extra command-line configuration and waits until it answers `PING`.
    ///
    /// The port is found by binding 127.0.0.1:0 and closing the listener before the server is
    /// spawned, so another process can take it in between: a server that fails to bind is
    /// retried on a fresh port, up to 10 times.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotFound`] if `redis-server` is not on `PATH`,
    /// [`io::ErrorKind::AddrInUse`] if every attempt lost its port,
    /// [`io::ErrorKind::TimedOut`] if the server did not answer within 10 seconds, and an error of
    /// another kind if the process could not be spawned or exited (a bad argument, say). The
    /// message includes the server log.
    pub fn try_start_with_args(args: &[&str]) -> io::Result<RedisServer> {
        Self::try_start_inner(args, false, false)
    }

    /// Starts a server that speaks TLS only, with certificates made for it, and waits until it
    /// answers `PING` over TLS.
    ///
    /// A private CA is generated, and with it a server certificate for `127.0.0.1` and
    /// `localhost` and a client certificate, all written into [`dir`](Self::dir)
    /// (see [`TlsCerts`]). The server listens with `--tls-port` on a free port and no plain TCP
    /// port (`--port 0`), and does not ask for client certificates (`--tls-auth-clients no`).
    /// [`url`](Self::url) is then `rediss://127.0.0.1:PORT`, and a client must trust
    /// [`TlsCerts::ca_pem`] to connect; the kit's own connections ([`client`](Self::client),
    /// [`cmd`](Self::cmd), ...) do, and present the client certificate when asked.
    ///
    /// # Panics
    ///
    /// Panics when [`try_start_tls_with_args`](Self::try_start_tls_with_args) fails.
    pub fn start_tls() -> RedisServer {
        Self::start_tls_with_args(&[])
    }

    /// [`start_tls`](Self::start_tls) with extra configuration, e.g.
    /// `&["--tls-auth-clients", "yes"]` to require client certificates.
    ///
    /// # Panics
    ///
    /// Panics when [`try_start_tls_with_args`](Self::try_start_tls_with_args) fails; the message
    /// includes the server log.
    pub fn start_tls_with_args(args: &[&str]) -> RedisServer {
        match Self::try_start_tls_with_args(args) {
            Ok(server) => server,
            Err(err) => panic!("failed to start redis-server with TLS: {err}"),
        }
    }

    /// [`start_tls`](Self::start_tls) with extra configuration, without panicking.
    ///
    /// # Errors
    ///
    /// As [`try_start_with_args`](Self::try_start_with_args); also an error if the certificates
    /// cannot be made or written, and an error of another kind if this `redis-server` was built
    /// without TLS (it exits at once, and its output says so).
    pub fn try_start_tls_with_args(args: &[&str]) -> io::Result<RedisServer> {
        Self::try_start_inner(args, true, false)
    }

    /// Starts a server that listens on a Unix socket too, `redis.sock` in its
    /// [`dir`](Self::dir) (mode 700), besides its TCP port; it is ready when it answers `PING`
    /// on the TCP port, by which time the socket exists. The socket stays across
    /// [`restart`](Self::restart), and [`client`](Self::client) and [`cmd`](Self::cmd) keep
    /// using TCP.
    ///
    /// # Panics
    ///
    /// Panics when the server cannot be started (see
    /// [`try_start_with_args`](Self::try_start_with_args)); the message includes the server log.
    pub fn start_unix_with_args(args: &[&str]) -> RedisServer {
        match Self::try_start_inner(args, false, true) {
            Ok(server) => server,
            Err(err) => panic!("failed to start redis-server with a unix socket: {err}"),
        }
    }

    fn try_start_inner(args: &[&str], with_tls: bool, with_unix: bool) -> io::Result<RedisServer> {
        let binary = find_redis_server()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, NOT_FOUND))?;
        let dir = tempfile::Builder::new().prefix("redfour-test-").tempdir()?;
        let unix_socket = with_unix.then(|| dir.path().join("redis.sock"));
        // Kept with the other arguments, so that a restart listens on the socket again.
        let mut extra_args: Vec<String> = Vec::new();
        if let Some(socket) = &unix_socket {
            let socket = socket.to_str().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "temporary path is not UTF-8")
            })?;
            extra_args
                .extend(["--unixsocket", socket, "--unixsocketperm", "700"].map(String::from));
        }
        extra_args.extend(args.iter().map(|arg| (*arg).to_owned()));
        let password = requirepass(&extra_args);
        let tls = if with_tls {
            tls::install_crypto_provider();
            Some(TlsCerts::generate(dir.path())?)
        } else {
            None
        };

        let (port, child) = REDIS_SERVER.start(dir.path(), tls.as_ref(), |port| {
            Ok(command(
                &binary,
                port,
                dir.path(),
                tls.as_ref(),
                &extra_args,
            ))
        })?;
        let pid = child.id();
        Ok(RedisServer {
            port,
            unix_socket,
            binary,
            extra_args,
            password,
            tls,
            dir,
            process: Mutex::new(Process {
                child: Some(child),
                pid,
            }),
        })
    }

    /// The TCP port the server listens on (its TLS port for a [TLS server](Self::start_tls));
    /// it stays the same across [`restart`](Self::restart).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The certificates of a server started with [`start_tls`](Self::start_tls); `None` for a
    /// plain one.
    pub fn tls(&self) -> Option<&TlsCerts> {
        self.tls.as_ref()
    }

    /// The process id of the current server, or of the last one if it is stopped.
    pub fn pid(&self) -> u32 {
        self.process().pid
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` for a [TLS server](Self::start_tls)), without
    /// credentials even if the server requires a password.
    pub fn url(&self) -> String {
        format!("{}://127.0.0.1:{}", self.scheme(), self.port)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        }
    }

    /// The Unix socket of a server started with
    /// [`start_unix_with_args`](Self::start_unix_with_args); `None` for others.
    pub fn unix_socket(&self) -> Option<&Path> {
        self.unix_socket.as_deref()
    }

    /// `unix://` and the [`unix_socket`](Self::unix_socket)'s path, without credentials (the
    /// redis crate reads them from the query: `?pass=...&user=...&db=...`); `None` for a server
    /// without a socket.
    pub fn unix_url(&self) -> Option<String> {
        self.unix_socket
            .as_ref()
            .map(|socket| format!("unix://{}", socket.display()))
    }

    /// The `--requirepass` given at start, if any.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// [`url`](Self::url) with the [`password`](Self::password) in it, when there is one.
    pub fn url_with_password(&self) -> String {
        match &self.password {
            Some(password) => format!(
                "{}://:{}@127.0.0.1:{}",
                self.scheme(),
                percent_encode(password),
                self.port
            ),
            None => self.url(),
        }
    }

    /// The temporary directory holding the server's working files and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server log, followed by anything the process printed; meant for failure messages.
    ///
    /// Covers every process started by this value, including failed attempts, oldest first.
    /// Reading errors are reported in the returned text rather than as a panic.
    pub fn log(&self) -> String {
        REDIS_SERVER.log(self.dir.path())
    }

    /// A client for this server, logged in with the [`password`](Self::password) if any.
    ///
    /// For a [TLS server](Self::start_tls) it trusts the server's CA (and no other) and presents
    /// the client certificate when asked.
    ///
    /// # Panics
    ///
    /// Cannot fail in practice: the URL and the certificates are made here and always parse.
    pub fn client(&self) -> redis::Client {
        let client = match &self.tls {
            Some(tls) => redis::Client::build_with_tls(
                self.url_with_password(),
                tls.redis_certificates(true),
            ),
            None => redis::Client::open(self.url_with_password()),
        };
        client.unwrap_or_else(|err| {
            panic!(
                "invalid settings for the test server on port {}: {err}",
                self.port
            )
        })
    }

    /// A new synchronous connection to this server, logged in with the
    /// [`password`](Self::password) if any.
    ///
    /// # Panics
    ///
    /// Panics if the connection fails, e.g. because the server is stopped; the message includes
    /// the server log.
    pub fn connection(&self) -> redis::Connection {
        self.client()
            .get_connection_with_timeout(ADMIN_TIMEOUT)
            .unwrap_or_else(|err| panic!("cannot connect to {}: {err}\n{}", self.url(), self.log()))
    }

    /// Runs one command on a new connection and returns the reply.
    ///
    /// For test plumbing such as `&["CONFIG", "SET", "maxmemory", "1mb"]`,
    /// `&["DEBUG", "SLEEP", "1"]` or `&["CLIENT", "KILL", "TYPE", "pubsub"]`.
    ///
    /// # Errors
    ///
    /// The connection failed or the server replied with an error.
    ///
    /// # Panics
    ///
    /// Panics if `args` is empty.
    pub fn try_cmd(&self, args: &[&str]) -> redis::RedisResult<redis::Value> {
        assert!(
            !args.is_empty(),
            "RedisServer::cmd needs at least the command name"
        );
        let mut cmd = redis::cmd(args[0]);
        for arg in &args[1..] {
            cmd.arg(*arg);
        }
        cmd.query(&mut self.admin_connection()?)
    }

    /// Runs one command on a new connection and returns the reply; see [`try_cmd`](Self::try_cmd).
    ///
    /// # Panics
    ///
    /// Panics if `args` is empty, the connection fails or the server replies with an error; the
    /// message includes the server log.
    pub fn cmd(&self, args: &[&str]) -> redis::Value {
        self.try_cmd(args).unwrap_or_else(|err| {
            panic!("{args:?} failed on {}: {err}\n{}", self.url(), self.log())
        })
    }

    /// Closes every client connection, normal and pub/sub, to simulate a network drop; the
    /// server keeps running and its data stays.
    ///
    /// Returns how many connections were closed. That count can include connections whose client
    /// had already hung up but which the server had not yet noticed (the ones [`cmd`](Self::cmd)
    /// opens, for instance), so compare it with `>=`.
    ///
    /// # Panics
    ///
    /// Panics if the server cannot be reached; the message includes the server log.
    pub fn kill_clients(&self) -> usize {
        // One connection for both kills, so the second cannot count the first one's.
        let mut conn = self.admin_connection().unwrap_or_else(|err| {
            panic!("cannot connect to {}: {err}\n{}", self.url(), self.log())
        });
        ["normal", "pubsub"]
            .iter()
            .map(|kind| {
                let killed: redis::RedisResult<i64> = redis::cmd("CLIENT")
                    .arg("KILL")
                    .arg("TYPE")
                    .arg(*kind)
                    .query(&mut conn);
                match killed {
                    Ok(killed) => usize::try_from(killed).unwrap_or(0),
                    Err(err) => panic!("CLIENT KILL TYPE {kind} failed: {err}\n{}", self.log()),
                }
            })
            .sum()
    }

    /// Whether the server process is alive (it may have been stopped, or have crashed).
    pub fn is_running(&self) -> bool {
        match self.process().child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Kills the server with `SIGKILL` and reaps it; clients see their connections reset and new
    /// connections refused. The port stays this server's for [`restart`](Self::restart). Does
    /// nothing if already stopped.
    pub fn stop(&mut self) {
        self.process().kill();
    }

    /// Stops the server if it is running and starts a new one on the same port, with the same
    /// arguments and an empty data set, then waits until it answers `PING`.
    ///
    /// # Panics
    ///
    /// Panics when [`try_restart`](Self::try_restart) fails; the message includes the server log.
    pub fn restart(&mut self) {
        if let Err(err) = self.try_restart() {
            panic!(
                "failed to restart redis-server on port {}: {err}",
                self.port
            );
        }
    }

    /// Stops the server if it is running and starts a new one on the same port; see
    /// [`restart`](Self::restart).
    ///
    /// Waits up to 5 seconds for the port to be bindable and retries a few times if the new
    /// process still cannot bind it.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::AddrInUse`] if the port stayed taken (by another process, since the old
    /// server is dead), [`io::ErrorKind::TimedOut`] if the server did not answer within 10
    /// seconds, another kind if it could not be spawned or exited. The message includes the
    /// server log.
    pub fn try_restart(&mut self) -> io::Result<()> {
        self.stop();
        let port_deadline = Instant::now() + PORT_FREE_TIMEOUT;
        for _ in 0..RESTART_ATTEMPTS {
            // std sets SO_REUSEADDR on Unix listeners, as redis does, so this succeeds exactly
            // when the new server's bind can.
            wait_until(
                port_deadline.saturating_duration_since(Instant::now()),
                || TcpListener::bind((Ipv4Addr::LOCALHOST, self.port)).is_ok(),
            );
            let command_line = command(
                &self.binary,
                self.port,
                self.dir.path(),
                self.tls.as_ref(),
                &self.extra_args,
            );
            match REDIS_SERVER.spawn_ready(
                command_line,
                self.port,
                self.dir.path(),
                self.tls.as_ref(),
            ) {
                Ok(child) => {
                    let mut process = self.process();
                    process.pid = child.id();
                    process.child = Some(child);
                    return Ok(());
                }
                Err(SpawnError::PortInUse) => continue,
                Err(SpawnError::Fatal(err)) => return Err(err),
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            format!("port {} stayed in use\n{}", self.port, self.log()),
        ))
    }

    /// A connection with timeouts, so a wedged server fails the test instead of hanging it.
    fn admin_connection(&self) -> redis::RedisResult<redis::Connection> {
        let conn = self.client().get_connection_with_timeout(ADMIN_TIMEOUT)?;
        conn.set_read_timeout(Some(ADMIN_TIMEOUT))?;
        conn.set_write_timeout(Some(ADMIN_TIMEOUT))?;
        Ok(conn)
    }

    fn process(&self) -> MutexGuard<'_, Process> {
        // A panic while holding the lock cannot leave `Process` inconsistent.
        self.process.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Process {
    fn kill(&mut self) {
        if let Some(child) = self.child.take() {
            kill_and_reap(child);
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.process().kill();
    }
}

impl fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisServer")
            .field("port", &self.port)
            .field("unix_socket", &self.unix_socket)
            .field("pid", &self.pid())
            .field("dir", &self.dir.path())
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// The value following the last `--requirepass`, as redis itself would take it.
fn requirepass(args: &[String]) -> Option<String> {
    args.windows(2)
        .rev()
        .find(|pair| pair[0] == "--requirepass")
        .map(|pair| pair[1].clone())
        .filter(|password| !password.is_empty())
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|byte| {
            if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                char::from(byte).to_string()
            } else {
                format!("%{byte:02X}")
            }
        })
        .collect()
}

/// The command line of a server on `port` with its files in `dir`; the kit's own arguments come
/// first, so `extra_args` can override them.
fn command(
    binary: &Path,
    port: u16,
    dir: &Path,
    tls: Option<&TlsCerts>,
    extra_args: &[String],
) -> Command {
    let listen = match tls {
        Some(tls) => tls.server_args(port),
        None => vec!["--port".to_owned(), port.to_string()],
    };
    let mut command = Command::new(binary);
    command
        .args(listen)
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"])
        .args(["--daemonize", "no"])
        .args(["--enable-debug-command", "yes"])
        .args(["--loglevel", "notice"])
        .arg("--dir")
        .arg(dir)
        .arg("--logfile")
        .arg(dir.join(REDIS_SERVER.log_file))
        .args(extra_args);
    command
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requirepass_takes_the_last_value() {
        let args = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(requirepass(&args(&[])), None);
        assert_eq!(requirepass(&args(&["--requirepass"])), None);
        assert_eq!(requirepass(&args(&["--requirepass", ""])), None);
        assert_eq!(
            requirepass(&args(&[
                "--requirepass",
                "a",
                "--maxmemory",
                "1mb",
                "--requirepass",
                "b"
            ])),
            Some("b".to_owned())
        );
    }

    #[test]
    fn percent_encoding_keeps_unreserved_bytes() {
        assert_eq!(percent_encode("aZ09-._~"), "aZ09-._~");
        assert_eq!(percent_encode("p@ss:w/rd %"), "p%40ss%3Aw%2Frd%20%25");
    }

    #[test]
    fn server_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RedisServer>();
    }
}
