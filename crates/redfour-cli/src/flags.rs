//! The command line: raw flags as clap parses them ([`Flags`]), then checked and resolved into
//! [`Settings`], which is all the rest of the binary sees.
//!
//! Durations and indexes are taken as text here and validated in [`Flags::resolve`], so that a
//! bad value gets a one-line reason and exit status 2 from this crate, not a clap usage dump.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::duration;
use crate::exit::{Failure, EXIT_CODES_HELP};

/// Take a Redis lock from the shell, or run a command while holding one.
///
/// Wire-compatible with the Node library redfour: the lock `ID` is the Redis hash `NS:ID`, the
/// fencing counter is `NSindex`, releases are announced on the channel `NS-release`.
#[derive(Debug, Parser)]
#[command(name = "redfour", version, after_help = EXIT_CODES_HELP, max_term_width = 100)]
pub struct Flags {
    /// Redis to use: redis://[user][:password@]host[:port][/db], rediss:// for TLS (which
    /// trusts the system's root certificates, or the CA of --tls-ca; rediss://...#insecure
    /// skips certificate verification, for tests only), or unix:///path/to.sock?pass=PASSWORD&db=N
    /// for a Unix socket. Passwords are shown as *** in messages. Repeat it for the other
    /// topologies: the sentinels for `sentinel`, seed nodes for `cluster`, every master for
    /// `redlock`.
    #[arg(
        long,
        global = true,
        env = "REDIS_URL",
        hide_env_values = true,
        value_name = "URL",
        default_value = DEFAULT_URL,
        action = clap::ArgAction::Append
    )]
    url: Vec<String>,

    /// How the Redis behind --url is laid out: one server (standalone), a master watched by
    /// Redis Sentinel (sentinel, with --service), Redis Cluster (cluster; its keys are
    /// {NS:ID}... and are not Node redfour's), or independent masters locked with the Redlock
    /// algorithm (redlock).
    #[arg(
        long,
        global = true,
        env = "REDFOUR_TOPOLOGY",
        value_name = "TOPOLOGY",
        value_enum,
        default_value_t = TopologyArg::Standalone
    )]
    topology: TopologyArg,

    /// With --topology sentinel: the name the sentinels monitor the master under.
    #[arg(long, global = true, env = "REDFOUR_SERVICE", value_name = "NAME")]
    service: Option<String>,

    /// With --topology sentinel: the master's password, when it is not the first --url's (the
    /// sentinels'). Prefer the environment variable: a flag shows in the process list.
    #[arg(
        long,
        global = true,
        env = "REDFOUR_MASTER_PASSWORD",
        hide_env_values = true,
        value_name = "PASSWORD"
    )]
    master_password: Option<String>,

    /// With --master-password: the master's ACL user name.
    #[arg(long, global = true, env = "REDFOUR_MASTER_USER", value_name = "USER")]
    master_user: Option<String>,

    /// After each acquire, wait until N replicas acknowledged it (WAIT); when fewer did within
    /// --replica-ack-timeout, the lock is released and the acquire fails (exit 69; a wait keeps
    /// trying). For sentinel, cluster, or a standalone master with replicas.
    #[arg(long, global = true, value_name = "N")]
    replica_acks: Option<u32>,

    /// How long --replica-acks waits for the acknowledgements.
    #[arg(long, global = true, value_name = "DURATION", default_value = "100ms")]
    replica_ack_timeout: String,

    /// Namespace of the keys: the lock is NS:ID, the counter NSindex.
    #[arg(
        long,
        global = true,
        env = "REDFOUR_NAMESPACE",
        hide_env_values = true,
        value_name = "NS",
        default_value = redfour::DEFAULT_NAMESPACE
    )]
    namespace: String,

    /// Trust the CA certificate(s) in FILE (PEM), and only those, for a rediss:// --url: for a
    /// Redis whose certificate comes from a private CA.
    #[arg(long, global = true, env = "REDFOUR_TLS_CA", value_name = "FILE")]
    tls_ca: Option<PathBuf>,

    /// The fair queue (true, the default): `wait` and `run` queue in FIFO order, and a release
    /// hands the lock to the first in line with one notice; Node redfour waiters on the same
    /// lock get turns in proportion to their number. false: Node redfour's own behaviour
    /// exactly: no queue, every release wakes every waiter and the fastest takes the lock. Use
    /// false where the fleet must behave as Node redfour does (say, while a migration is
    /// compared against the old fleet); it has no effect with --topology redlock (no queue).
    /// Also: yes/no, on/off, 1/0.
    #[arg(
        long,
        global = true,
        env = "REDFOUR_FAIR",
        value_name = "BOOL",
        default_value = "true",
        value_parser = clap::builder::BoolishValueParser::new(),
        action = clap::ArgAction::Set
    )]
    fair: bool,

    /// Don't show the status line that `wait` and `run` draw on stderr while they wait (it
    /// is shown only when stderr is a terminal).
    #[arg(long, short, global = true)]
    quiet: bool,

    #[command(subcommand)]
    command: Command,
}

/// `--topology`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TopologyArg {
    Standalone,
    Sentinel,
    Cluster,
    Redlock,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Try once to take the lock; it stays held after redfour exits, until released or expired.
    ///
    /// Prints {"id","success","index","ttl"}; when another holds the lock, index is -1 and ttl
    /// is the holder's remaining time. Exit status 0 when acquired, 1 when held by another, 75
    /// when granted too late to be held (slow servers used up its validity; released).
    Acquire {
        #[command(flatten)]
        id: IdArg,
        #[command(flatten)]
        ttl: TtlArg,
    },
    /// Take the lock, waiting for the holder to let go (woken by its release notice).
    ///
    /// Prints {"id","success","index","ttl","immediate"}; immediate is true when no waiting was
    /// needed. Exit status 0 when acquired, 1 when the wait ran out, 75 when its last attempt
    /// was granted too late to be held (released). On a terminal, a status line on stderr shows
    /// who holds the lock and this waiter's place in the queue while it waits (not with
    /// --quiet).
    Wait {
        #[command(flatten)]
        id: IdArg,
        #[command(flatten)]
        ttl: TtlArg,
        #[command(flatten)]
        wait: WaitArg,
    },
    /// Release the lock, only if INDEX still holds it.
    ///
    /// Prints {"id","success","result","index"} with result released, expired (nothing to
    /// release) or conflict (another holds it now; index is theirs). Exit status 0 for released
    /// or expired, 1 for conflict.
    Release {
        #[command(flatten)]
        id: IdArg,
        #[command(flatten)]
        index: IndexArg,
    },
    /// Reset the lock's expiry to TTL, only if INDEX still holds it.
    ///
    /// Prints {"id","success","result","index"} with result renewed, missing or conflict;
    /// index is INDEX when renewed and -1 otherwise, also on conflict (Node redfour's answer;
    /// release names the holder's index instead). Exit status 0 when renewed, 1 otherwise.
    Renew {
        #[command(flatten)]
        id: IdArg,
        #[command(flatten)]
        index: IndexArg,
        #[command(flatten)]
        ttl: TtlArg,
    },
    /// Show who holds the lock.
    ///
    /// Prints {"id","held","index","ttl","holder"}: ttl in milliseconds or null, holder every
    /// field of the lock hash but index: host, pid, acquired_at (Unix ms), attempt, description
    /// (only when one was given), handoff (on a lock handed to a queued waiter); {} for a Node
    /// holder.
    Status {
        #[command(flatten)]
        id: IdArg,
    },
    /// List every lock held in the namespace, and foreign keys where locks are kept.
    ///
    /// A table (ID, KIND, INDEX, TTL, HELD FOR, WAITERS, HOLDER), or with --json one object
    /// per line: {"id","kind","index","ttl","held_for_ms","holder","waiters"} with kind lock or
    /// foreign, ttl and held_for_ms in milliseconds, holder {"host","pid","description"} (null
    /// for a holder that recorded nothing, as Node redfour's), waiters the fair queue's length
    /// (null with redlock). Keys are found with SCAN, never KEYS. A key that holds something
    /// other than a lock is listed as foreign and left alone. Exit status 0, also when nothing
    /// is held (the table's header alone; no line with --json).
    List {
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a command while holding the lock, renewing it every TTL/3.
    ///
    /// Waits for the lock (forever unless --wait), runs CMD in a process group of its own with
    /// REDFOUR_ID and REDFOUR_INDEX (the fencing index) in its environment, forwards the signals
    /// redfour gets (SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGALRM, ...) to that
    /// whole group, and releases the lock as soon as CMD exits (after stopping what CMD left
    /// running in its group). Exits with CMD's status (128+N if signal N killed it); 75 if the
    /// lock was not acquired within --wait (CMD not started); 70 if the lease was lost while CMD
    /// ran (its group gets SIGTERM, then SIGKILL after --grace). If redfour itself is killed, a
    /// watcher process stops CMD's group (SIGTERM, SIGKILL after --grace or a third of the ttl,
    /// whichever is shorter). On a terminal, CMD gets the terminal (it can read it; Ctrl-C
    /// reaches it directly), and while waiting a status line on stderr shows who holds the lock
    /// and this waiter's place in the queue (not with --quiet).
    Run {
        #[command(flatten)]
        id: IdArg,
        #[command(flatten)]
        ttl: TtlArg,
        #[command(flatten)]
        wait: WaitArg,
        /// Time CMD gets to exit after SIGTERM once the lease is lost, before SIGKILL.
        #[arg(
            long,
            value_name = "D",
            default_value = "5s",
            allow_hyphen_values = true
        )]
        grace: String,
        /// What `redfour status` shows as the holder's description (default: `redfour run
        /// PROGRAM`; CMD's arguments are never stored, since anyone who can read the lock can
        /// read them). At most 512 bytes.
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// The command to run, and its arguments (put `--` before it).
        #[arg(
            value_name = "CMD",
            required = true,
            num_args = 1..,
            trailing_var_arg = true,
            allow_hyphen_values = true
        )]
        command: Vec<OsString>,
    },
}

#[derive(Debug, Args)]
struct IdArg {
    /// The lock's name (non-empty).
    #[arg(value_name = "ID")]
    id: String,
}

#[derive(Debug, Args)]
struct TtlArg {
    /// Lease length: the lock expires this long after it is taken or renewed, unless released.
    /// 500ms, 10s, 2m, 1h, or a bare number of milliseconds; not zero.
    #[arg(long, value_name = "D", allow_hyphen_values = true)]
    ttl: String,
}

#[derive(Debug, Args)]
struct WaitArg {
    /// Longest time to wait for the lock (same units as --ttl); 0 means a single attempt.
    /// Without it, wait forever.
    #[arg(long, value_name = "D", allow_hyphen_values = true)]
    wait: Option<String>,
}

#[derive(Debug, Args)]
struct IndexArg {
    /// The fencing index the lock was acquired with (an integer from 1 to 2^53-1).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    index: String,
}

/// `--url`'s default.
const DEFAULT_URL: &str = "redis://127.0.0.1:6379";

/// The validated command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settings {
    /// Where Redis is (one address for standalone).
    pub urls: Vec<String>,
    /// How it is laid out.
    pub topology: redfour::Topology,
    /// `--replica-acks` and `--replica-ack-timeout`.
    pub replica_acks: Option<(u32, Duration)>,
    /// `--master-user` and `--master-password` (sentinel).
    pub master_credentials: Option<(Option<String>, String)>,
    /// The key namespace.
    pub namespace: String,
    /// `--fair`: the fair queue, or Node redfour's wake-everyone waiting.
    pub fair: bool,
    /// `--tls-ca`: the only CAs trusted for `rediss://`.
    pub tls_ca: Option<TlsCa>,
    /// `--quiet`: no status line while waiting.
    pub quiet: bool,
    /// What to do.
    pub action: Action,
}

/// The `--tls-ca` file: where it is, for messages, and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsCa {
    /// The file, as given.
    pub path: PathBuf,
    /// Its contents: PEM certificates, if the file is what it should be.
    pub pem: Vec<u8>,
}

/// One subcommand with checked values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// `acquire`.
    Acquire { id: String, ttl: Duration },
    /// `wait`.
    Wait {
        id: String,
        ttl: Duration,
        wait: WaitLimit,
    },
    /// `release`.
    Release { id: String, index: i64 },
    /// `renew`.
    Renew {
        id: String,
        index: i64,
        ttl: Duration,
    },
    /// `status`.
    Status { id: String },
    /// `list`, as a table or (`json`) JSON lines.
    List { json: bool },
    /// `run`.
    Run(RunSettings),
}

/// How long to wait for a lock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitLimit {
    /// No `--wait`: until the lock is acquired.
    Forever,
    /// `--wait 0`: one attempt.
    NoWait,
    /// `--wait D`.
    UpTo(Duration),
}

/// The longest `--description` (it is only there to help people).
pub const MAX_DESCRIPTION: usize = 512;

/// The checked flags of `run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunSettings {
    /// The lock id.
    pub id: String,
    /// The lease length; the keep-alive renews every third of it.
    pub ttl: Duration,
    /// How long to wait for the lock.
    pub wait: WaitLimit,
    /// SIGTERM-to-SIGKILL delay after a lost lease.
    pub grace: Duration,
    /// The holder description to store, if `--description` was given.
    pub description: Option<String>,
    /// The program and its arguments (never empty).
    pub command: Vec<OsString>,
}

impl Flags {
    /// Checks every value and resolves the raw flags into [`Settings`].
    ///
    /// # Errors
    ///
    /// A [`Failure`] with exit status 2 and a one-line reason.
    pub fn resolve(self) -> Result<Settings, Failure> {
        // The settings the library takes (namespace, service name, how many URLs, which
        // topology takes master credentials, TLS roots or replica acknowledgements) are
        // checked by `ClientBuilder::build`, whose reason comes through with exit status 2
        // (see `commands::execute`). Only what the library never sees is checked here: which
        // flags go together, and the values this crate parses.
        let topology = match (self.topology, self.service) {
            (TopologyArg::Sentinel, Some(service)) => redfour::Topology::Sentinel { service },
            (TopologyArg::Sentinel, None) => {
                return Err(Failure::usage(
                    "--topology sentinel needs --service NAME (the name the sentinels monitor the master under)",
                ))
            }
            (_, Some(_)) => {
                return Err(Failure::usage(
                    "--service applies to --topology sentinel only",
                ))
            }
            (TopologyArg::Standalone, None) => redfour::Topology::Standalone,
            (TopologyArg::Cluster, None) => redfour::Topology::Cluster,
            (TopologyArg::Redlock, None) => redfour::Topology::Redlock,
        };
        let urls = self.url;
        let master_credentials = match (self.master_user, self.master_password) {
            (user, Some(password)) => Some((user, password)),
            (Some(_), None) => return Err(Failure::usage("--master-user needs --master-password")),
            (None, None) => None,
        };
        let tls_ca = match &self.tls_ca {
            Some(path) => Some(read_tls_ca(path)?),
            None => None,
        };
        let replica_acks = match self.replica_acks {
            Some(n) => Some((
                n,
                parse_duration("--replica-ack-timeout", &self.replica_ack_timeout)?,
            )),
            None => None,
        };
        let action = match self.command {
            Command::Acquire { id, ttl } => Action::Acquire {
                id: id.check()?,
                ttl: ttl.check()?,
            },
            Command::Wait { id, ttl, wait } => Action::Wait {
                id: id.check()?,
                ttl: ttl.check()?,
                wait: wait.check()?,
            },
            Command::Release { id, index } => Action::Release {
                id: id.check()?,
                index: index.check()?,
            },
            Command::Renew { id, index, ttl } => Action::Renew {
                id: id.check()?,
                index: index.check()?,
                ttl: ttl.check()?,
            },
            Command::Status { id } => Action::Status { id: id.check()? },
            Command::List { json } => Action::List { json },
            Command::Run {
                id,
                ttl,
                wait,
                grace,
                description,
                command,
            } => {
                if let Some(d) = &description {
                    if d.len() > MAX_DESCRIPTION {
                        return Err(Failure::usage(format!(
                            "invalid --description: {} bytes, at most {MAX_DESCRIPTION}",
                            d.len()
                        )));
                    }
                }
                let command_name_empty = command.first().is_none_or(|c| c.is_empty());
                if command_name_empty {
                    return Err(Failure::usage("invalid CMD: the command must not be empty"));
                }
                Action::Run(RunSettings {
                    id: id.check()?,
                    ttl: ttl.check()?,
                    wait: wait.check()?,
                    grace: parse_duration("--grace", &grace)?,
                    description,
                    command,
                })
            }
        };
        Ok(Settings {
            urls,
            topology,
            replica_acks,
            master_credentials,
            namespace: self.namespace,
            fair: self.fair,
            tls_ca,
            quiet: self.quiet,
            action,
        })
    }
}

/// The `--tls-ca` file, read. `build()` checks the rest (a `rediss://` URL, certificates in
/// it), and the message of a refusal names the file.
fn read_tls_ca(path: &std::path::Path) -> Result<TlsCa, Failure> {
    let pem = std::fs::read(path).map_err(|e| {
        Failure::usage(format!(
            "invalid --tls-ca `{}`: cannot read it: {e}",
            path.display()
        ))
    })?;
    Ok(TlsCa {
        path: path.to_owned(),
        pem,
    })
}

impl IdArg {
    fn check(self) -> Result<String, Failure> {
        if self.id.is_empty() {
            return Err(Failure::usage("invalid ID: the lock id must not be empty"));
        }
        if self.id.len() > redfour::MAX_ID_LEN {
            return Err(Failure::usage(format!(
                "invalid ID: the lock id is longer than {} bytes",
                redfour::MAX_ID_LEN
            )));
        }
        Ok(self.id)
    }
}

impl TtlArg {
    fn check(self) -> Result<Duration, Failure> {
        let ttl = parse_duration("--ttl", &self.ttl)?;
        if ttl.is_zero() {
            return Err(Failure::usage(format!(
                "invalid --ttl `{}`: the ttl must be at least 1ms",
                self.ttl
            )));
        }
        if ttl > redfour::MAX_TTL {
            return Err(Failure::usage(format!(
                "invalid --ttl `{}`: the ttl must be at most {} ms",
                self.ttl,
                redfour::MAX_TTL.as_millis()
            )));
        }
        Ok(ttl)
    }
}

impl WaitArg {
    fn check(self) -> Result<WaitLimit, Failure> {
        Ok(match self.wait {
            None => WaitLimit::Forever,
            Some(text) => match parse_duration("--wait", &text)? {
                d if d.is_zero() => WaitLimit::NoWait,
                d => WaitLimit::UpTo(d),
            },
        })
    }
}

impl IndexArg {
    fn check(self) -> Result<i64, Failure> {
        match self.index.parse::<i64>() {
            Ok(n) if (1..=redfour::MAX_INDEX).contains(&n) && !self.index.starts_with('+') => Ok(n),
            _ => Err(Failure::usage(format!(
                "invalid --index `{}`: expected an integer from 1 to 2^53-1",
                self.index
            ))),
        }
    }
}

fn parse_duration(flag: &str, text: &str) -> Result<Duration, Failure> {
    duration::parse(text).map_err(|why| Failure::usage(format!("invalid {flag} `{text}`: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exit::USAGE;

    fn resolve(args: &[&str]) -> Result<Settings, Failure> {
        let mut argv = vec!["redfour"];
        argv.extend_from_slice(args);
        Flags::try_parse_from(argv)
            .expect("clap accepts it")
            .resolve()
    }

    #[test]
    fn topologies() {
        let s = resolve(&["status", "x"]).unwrap();
        assert_eq!(s.urls, [DEFAULT_URL]);
        let s = resolve(&[
            "--topology",
            "sentinel",
            "--service",
            "mymaster",
            "--url",
            "redis://s1:26379",
            "--url",
            "redis://s2:26379",
            "status",
            "x",
        ])
        .unwrap();
        assert_eq!(s.urls, ["redis://s1:26379", "redis://s2:26379"]);
        assert_eq!(
            s.topology,
            redfour::Topology::Sentinel {
                service: "mymaster".into()
            }
        );
        let s = resolve(&[
            "--topology",
            "cluster",
            "--url",
            "redis://c:1",
            "status",
            "x",
        ])
        .unwrap();
        assert_eq!(s.topology, redfour::Topology::Cluster);
        let s = resolve(&[
            "--topology",
            "redlock",
            "--url",
            "redis://a",
            "--url",
            "redis://b",
            "--url",
            "redis://c",
            "status",
            "x",
        ])
        .unwrap();
        assert_eq!(s.topology, redfour::Topology::Redlock);
        assert_eq!(s.urls.len(), 3);
        let s = resolve(&["--replica-acks", "1", "status", "x"]).unwrap();
        assert_eq!(s.replica_acks, Some((1, Duration::from_millis(100))));
        // Checked by `ClientBuilder::build` (see the binary's test
        // `settings_the_library_rejects_exit_2_with_its_reason`), not here.
        for args in [
            &["--namespace", "", "status", "x"][..],
            &["--master-password", "p", "status", "x"],
            &["--url", "redis://a", "--url", "redis://b", "status", "x"],
            &[
                "--topology",
                "redlock",
                "--replica-acks",
                "1",
                "status",
                "x",
            ],
            &["--topology", "sentinel", "--service", "", "status", "x"],
        ] {
            assert!(resolve(args).is_ok(), "{args:?}");
        }
        for (args, says) in [
            (&["--topology", "sentinel", "status", "x"][..], "--service"),
            (&["--service", "m", "status", "x"][..], "sentinel only"),
            (
                &[
                    "--topology",
                    "sentinel",
                    "--service",
                    "m",
                    "--master-user",
                    "u",
                    "status",
                    "x",
                ][..],
                "--master-password",
            ),
            (
                &[
                    "--replica-acks",
                    "1",
                    "--replica-ack-timeout",
                    "soon",
                    "status",
                    "x",
                ][..],
                "--replica-ack-timeout",
            ),
        ] {
            let err = usage_error(args);
            assert!(err.contains(says), "{args:?}: {err}");
        }
    }

    fn usage_error(args: &[&str]) -> String {
        let err = resolve(args).expect_err("rejected");
        assert_eq!(err.code(), USAGE, "{err}");
        err.to_string()
    }

    #[test]
    fn definition_is_consistent() {
        use clap::CommandFactory;
        Flags::command().debug_assert();
    }

    #[test]
    fn resolves_every_command() {
        let s = resolve(&["--url", "redis://h:1", "acquire", "x", "--ttl", "10s"]).unwrap();
        assert_eq!(s.urls, ["redis://h:1"]);
        assert_eq!(s.topology, redfour::Topology::Standalone);
        // The default, unless the environment running the tests sets one.
        let default_ns = std::env::var("REDFOUR_NAMESPACE").unwrap_or_else(|_| "lock".into());
        assert_eq!(s.namespace, default_ns);
        assert_eq!(
            s.action,
            Action::Acquire {
                id: "x".into(),
                ttl: Duration::from_secs(10)
            }
        );
        let s = resolve(&["wait", "x", "--ttl", "1s", "--namespace", "n"]).unwrap();
        assert_eq!(s.namespace, "n");
        // The default, unless the environment running the tests sets one.
        let default_fair = !matches!(
            std::env::var("REDFOUR_FAIR").as_deref(),
            Ok("false" | "no" | "off" | "0")
        );
        assert_eq!(s.fair, default_fair);
        for (given, fair) in [
            ("--fair=false", false),
            ("--fair=no", false),
            ("--fair=0", false),
            ("--fair=true", true),
            ("--fair=on", true),
        ] {
            let s = resolve(&["wait", "x", "--ttl", "1s", given]).unwrap();
            assert_eq!(s.fair, fair, "{given}");
        }
        let refused =
            Flags::try_parse_from(["redfour", "wait", "x", "--ttl", "1s", "--fair=maybe"])
                .expect_err("not a boolean");
        assert_eq!(refused.exit_code(), 2);
        assert!(matches!(
            s.action,
            Action::Wait {
                wait: WaitLimit::Forever,
                ..
            }
        ));
        let s = resolve(&["wait", "x", "--ttl", "1s", "--wait", "0"]).unwrap();
        assert!(matches!(
            s.action,
            Action::Wait {
                wait: WaitLimit::NoWait,
                ..
            }
        ));
        let s = resolve(&["release", "x", "--index", "42"]).unwrap();
        assert_eq!(
            s.action,
            Action::Release {
                id: "x".into(),
                index: 42
            }
        );
        let s = resolve(&["release", "x", "--index", "9007199254740991"]).unwrap();
        assert_eq!(
            s.action,
            Action::Release {
                id: "x".into(),
                index: redfour::MAX_INDEX
            }
        );
        let s = resolve(&["renew", "x", "--index", "7", "--ttl", "250"]).unwrap();
        assert_eq!(
            s.action,
            Action::Renew {
                id: "x".into(),
                index: 7,
                ttl: Duration::from_millis(250)
            }
        );
        let s = resolve(&["status", "x"]).unwrap();
        assert_eq!(s.action, Action::Status { id: "x".into() });
        assert!(!s.quiet);
        let s = resolve(&["list"]).unwrap();
        assert_eq!(s.action, Action::List { json: false });
        let s = resolve(&["-q", "list", "--json"]).unwrap();
        assert_eq!(s.action, Action::List { json: true });
        assert!(s.quiet);
        let s = resolve(&["wait", "x", "--ttl", "1s", "--quiet"]).unwrap();
        assert!(s.quiet);
    }

    #[test]
    fn run_takes_the_command_verbatim() {
        let s = resolve(&[
            "run", "job", "--ttl", "30s", "--wait", "2m", "--", "sh", "-c", "exit 3", "--ttl",
        ])
        .unwrap();
        let Action::Run(run) = s.action else {
            panic!("not run")
        };
        assert_eq!(run.wait, WaitLimit::UpTo(Duration::from_secs(120)));
        assert_eq!(run.grace, Duration::from_secs(5));
        assert_eq!(run.command, ["sh", "-c", "exit 3", "--ttl"]);
        // Without `--`, the first word after the flags starts the command.
        let s = resolve(&["run", "job", "--ttl", "1s", "--grace", "0", "ls", "-l"]).unwrap();
        let Action::Run(run) = s.action else {
            panic!("not run")
        };
        assert_eq!(run.grace, Duration::ZERO);
        assert_eq!(run.command, ["ls", "-l"]);
    }

    #[test]
    fn rejects_invalid_values_with_one_line() {
        for (args, needle) in [
            (&["acquire", "x", "--ttl", "0"][..], "--ttl `0`"),
            (&["acquire", "x", "--ttl", "0ms"], "at least 1ms"),
            (&["acquire", "x", "--ttl", "-5s"], "negative"),
            (&["acquire", "x", "--ttl", "soon"], "--ttl `soon`"),
            (&["acquire", "x", "--ttl", "10x"], "unknown unit"),
            (&["acquire", "", "--ttl", "1s"], "ID"),
            (&["wait", "x", "--ttl", "1s", "--wait", "-1"], "--wait"),
            (&["release", "x", "--index", "0"], "--index `0`"),
            (&["release", "x", "--index", "-3"], "from 1 to 2^53-1"),
            (&["release", "x", "--index", "abc"], "from 1 to 2^53-1"),
            (
                &["release", "x", "--index", "9007199254740992"],
                "--index `9007199254740992`",
            ),
            (&["release", "x", "--index", "1e3"], "--index `1e3`"),
            (&["renew", "x", "--index", "+4", "--ttl", "1s"], "--index"),
            (
                &["run", "x", "--ttl", "1s", "--grace", "z", "true"],
                "--grace",
            ),
            (&["run", "x", "--ttl", "1s", "--", ""], "CMD"),
        ] {
            let message = usage_error(args);
            assert!(message.contains(needle), "{args:?}: {message}");
            assert!(!message.contains('\n'), "{args:?}: {message}");
        }
        let huge = format!("{}ms", redfour::MAX_TTL.as_millis() + 1);
        assert!(usage_error(&["acquire", "x", "--ttl", &huge]).contains("at most"));
    }

    #[test]
    fn tls_ca_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ca = dir.path().join("ca.pem");
        let pem = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";
        std::fs::write(&ca, pem).unwrap();
        let ca_arg = ca.to_str().unwrap();
        let s = resolve(&["--url", "rediss://h:1", "--tls-ca", ca_arg, "status", "x"]).unwrap();
        let read = s.tls_ca.expect("--tls-ca read");
        assert_eq!(read.pem, pem.as_bytes());
        assert_eq!(read.path, ca);
        let s = resolve(&["--url", "REDISS://h:1", "status", "x", "--tls-ca", ca_arg]).unwrap();
        assert!(s.tls_ca.is_some());

        // What the file holds, and whether the URL is rediss://, are `build()`'s to check (the
        // CLI's tests run them: `unusable_tls_ca_exits_2`); a file that cannot be read is the
        // flag's.
        let missing = dir.path().join("missing.pem");
        let args = [
            "--url",
            "rediss://h:1",
            "--tls-ca",
            missing.to_str().unwrap(),
            "status",
            "x",
        ];
        let message = usage_error(&args);
        assert!(message.contains("cannot read"), "{message}");
        assert!(message.contains("--tls-ca `"), "{message}");
        assert!(!message.contains('\n'), "{message}");
    }

    #[test]
    fn clap_rejects_missing_pieces() {
        for args in [
            &["redfour", "acquire", "x"][..],
            &["redfour", "acquire", "--ttl", "1s"],
            &["redfour", "run", "x", "--ttl", "1s"],
            &["redfour", "release", "x"],
            &["redfour", "frobnicate"],
        ] {
            let err = Flags::try_parse_from(args).expect_err("rejected");
            assert_eq!(err.exit_code(), 2, "{args:?}");
        }
    }
}
