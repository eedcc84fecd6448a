//! The one-shot commands: acquire, wait, release, renew, status (each prints one JSON object on
//! one line of stdout and maps its outcome to an exit status), and list ([`crate::list`]).

use std::collections::BTreeMap;
use std::io::Write;
use std::time::Duration;

use redfour::Client;
use serde::Serialize;

use crate::exit::{self, Failure};
use crate::flags::{Action, Settings, WaitLimit};
use crate::signals::{self, Signals};
use crate::{run, status_line};

/// Redis must answer a connection attempt within this, so an unreachable server is reported
/// in seconds rather than retried for long.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// One retry absorbs a blip; more would only delay the report that Redis is down.
const RECONNECT_RETRIES: usize = 1;

/// Runs the resolved command and returns its exit status.
pub async fn execute(settings: Settings) -> Result<u8, Failure> {
    let builder = |tls_ca: Option<&[u8]>| {
        let mut builder =
            Client::builder_with_topology(settings.topology.clone(), settings.urls.iter().cloned())
                .namespace(settings.namespace.clone())
                .fair(settings.fair)
                .connect_timeout(CONNECT_TIMEOUT)
                .reconnect_retries(RECONNECT_RETRIES);
        if let Some((user, password)) = &settings.master_credentials {
            builder = builder.master_credentials(user.as_deref(), password.clone());
        }
        if let Some((replicas, timeout)) = settings.replica_acks {
            builder = builder.replica_acks(replicas, timeout);
        }
        if let Some(pem) = tls_ca {
            builder = builder.tls_root_certificates(pem);
        }
        builder
    };
    let tls_ca = settings.tls_ca.as_ref();
    // The checks of the settings are `build()`'s (the flags only check what the library
    // never sees): its reason, with its cause, is the message, and exit status 2. When the
    // same settings without `--tls-ca` pass, the file is what was refused: the message names it.
    let client = builder(tls_ca.map(|ca| ca.pem.as_slice()))
        .build()
        .map_err(|e| {
            let mut what = exit::summary(&e);
            if let Some(cause) = exit::root_cause(&e) {
                what = format!("{what}: {cause}");
            }
            match tls_ca {
                Some(ca) if builder(None).build().is_ok() => {
                    Failure::usage(format!("invalid --tls-ca `{}`: {what}", ca.path.display()))
                }
                _ => Failure::usage(what),
            }
        })?;
    // Caught from here on: a signal ends the command cleanly (see `signals`).
    let mut signals = Signals::install()
        .map_err(|e| Failure::new(exit::OS, format!("cannot install signal handlers: {e}")))?;
    // What the command is doing (for the message if a signal ends it), and the doing of it.
    type Step<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<u8, Failure>> + 'a>>;
    let (doing, one_shot): (String, Step<'_>) = match &settings.action {
        Action::Run(run) => return run::run(&client, run.clone(), signals, settings.quiet).await,
        Action::Acquire { id, ttl } => (
            format!("acquire `{id}`"),
            Box::pin(acquire(&client, id, *ttl)),
        ),
        Action::Wait { id, ttl, wait } => (
            format!("wait for `{id}`"),
            Box::pin(wait_for(&client, id, *ttl, *wait, settings.quiet)),
        ),
        Action::Release { id, index } => (
            format!("release `{id}`"),
            Box::pin(release(&client, id, *index)),
        ),
        Action::Renew { id, index, ttl } => (
            format!("renew `{id}`"),
            Box::pin(renew(&client, id, *index, *ttl)),
        ),
        Action::Status { id } => (format!("status of `{id}`"), Box::pin(status(&client, id))),
        Action::List { json } => (
            "list the locks".to_owned(),
            Box::pin(crate::list::list(&client, *json)),
        ),
    };
    tokio::select! {
        result = one_shot => result,
        sig = signals.recv() => {
            // The command's future was dropped: a lock an acquire in flight won is released,
            // and a wait leaves the fair queue, in the background. Let that reach Redis
            // before the process ends, so nobody waits for a waiter that is gone.
            let settled = client.settle(run::SETTLE).await;
            let cleanup = if settled {
                ""
            } else {
                "; the clean-up did not finish in time (what it left expires on its own)"
            };
            Err(Failure::new(
                signals::exit_status(sig),
                format!("{doing}: interrupted by {sig}{cleanup}"),
            ))
        }
    }
}

#[derive(Serialize)]
struct AcquireJson<'a> {
    id: &'a str,
    success: bool,
    index: i64,
    ttl: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    immediate: Option<bool>,
}

#[derive(Serialize)]
struct OutcomeJson<'a> {
    id: &'a str,
    success: bool,
    result: &'static str,
    index: i64,
}

#[derive(Serialize)]
struct StatusJson<'a> {
    id: &'a str,
    held: bool,
    index: i64,
    ttl: Option<u64>,
    holder: &'a BTreeMap<String, String>,
}

async fn acquire(client: &Client, id: &str, ttl: Duration) -> Result<u8, Failure> {
    let doing = format!("acquire `{id}`");
    let r = client
        .acquire_lock(id, ttl)
        .await
        .map_err(|e| Failure::from_lib(&e, &doing, client.address()))?;
    let answer = AcquireJson {
        id,
        success: r.success,
        index: r.index,
        ttl: millis(r.ttl),
        immediate: None,
    };
    deliver(client, &answer).await?;
    Ok(if r.success {
        exit::SUCCESS
    } else {
        exit::OUTCOME
    })
}

async fn wait_for(
    client: &Client,
    id: &str,
    ttl: Duration,
    wait: WaitLimit,
    quiet: bool,
) -> Result<u8, Failure> {
    let doing = format!("wait for `{id}`");
    let failure = |e: redfour::Error| Failure::from_lib(&e, &doing, client.address());
    // While waiting, the library retries an unreachable Redis (forever without --wait): find
    // out first that it is there at all, so a wrong URL fails fast. (A refused login or an
    // unknown sentinel service ends a wait at once in the library itself.)
    client.ping().await.map_err(failure)?;
    let waiting = async {
        match wait {
            WaitLimit::NoWait => client.acquire_lock(id, ttl).await,
            WaitLimit::UpTo(w) => client.wait_acquire_lock(id, ttl, Some(w)).await,
            WaitLimit::Forever => client.wait_acquire_lock(id, ttl, None).await,
        }
    };
    // The status line is erased when its future is dropped: when the wait ends, or when a
    // signal ends the command.
    let show = !quiet && wait != WaitLimit::NoWait && status_line::stderr_is_terminal();
    let status_line = async {
        if show {
            status_line::show(client, id).await
        } else {
            std::future::pending().await
        }
    };
    let r = tokio::select! {
        r = waiting => r,
        never = status_line => match never {},
    }
    .map_err(failure)?;
    let answer = AcquireJson {
        id,
        success: r.success,
        index: r.index,
        ttl: millis(r.ttl),
        immediate: Some(r.immediate),
    };
    deliver(client, &answer).await?;
    Ok(if r.success {
        exit::SUCCESS
    } else {
        exit::OUTCOME
    })
}

async fn release(client: &Client, id: &str, index: i64) -> Result<u8, Failure> {
    let doing = format!("release `{id}`");
    let r = client
        .release_lock(id, index)
        .await
        .map_err(|e| Failure::from_lib(&e, &doing, client.address()))?;
    print_outcome(id, r.success, r.result.as_str(), r.index)
}

async fn renew(client: &Client, id: &str, index: i64, ttl: Duration) -> Result<u8, Failure> {
    let doing = format!("renew `{id}`");
    let r = client
        .renew_lock(id, index, ttl)
        .await
        .map_err(|e| Failure::from_lib(&e, &doing, client.address()))?;
    print_outcome(id, r.success, r.result.as_str(), r.index)
}

/// The answer of `release` and `renew`: one JSON line, exit 0 on success, 1 otherwise.
fn print_outcome(id: &str, success: bool, result: &'static str, index: i64) -> Result<u8, Failure> {
    print_json(&OutcomeJson {
        id,
        success,
        result,
        index,
    })?;
    Ok(if success {
        exit::SUCCESS
    } else {
        exit::OUTCOME
    })
}

async fn status(client: &Client, id: &str) -> Result<u8, Failure> {
    let doing = format!("status of `{id}`");
    let s = client
        .status(id)
        .await
        .map_err(|e| Failure::from_lib(&e, &doing, client.address()))?;
    print_json(&StatusJson {
        id,
        held: s.held,
        index: s.index,
        ttl: s.ttl.map(millis),
        holder: &s.holder,
    })?;
    Ok(exit::SUCCESS)
}

/// Prints the answer of `acquire` or `wait`. The index in it is the only way to release the
/// lock: when it cannot be delivered, the lock is given back and the command fails (74).
async fn deliver(client: &Client, answer: &AcquireJson<'_>) -> Result<(), Failure> {
    let Err(failure) = print_json(answer) else {
        return Ok(());
    };
    if !answer.success {
        return Err(failure);
    }
    let then = match client.release_lock(answer.id, answer.index).await {
        Ok(_) => format!("the lock (index {}) was released", answer.index),
        Err(e) => format!(
            "releasing the lock (index {}) failed too, so it stays held until its ttl ends: {}",
            answer.index,
            exit::one_line(&exit::chain(&e))
        ),
    };
    Err(failure.and(&format!("; {then}")))
}

/// Whole milliseconds, as every `ttl` field of the JSON answers.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Writes one JSON object and a newline to stdout, and flushes.
fn print_json<T: Serialize>(value: &T) -> Result<(), Failure> {
    let mut line = serde_json::to_vec(value)
        .map_err(|e| Failure::new(exit::IO, format!("cannot encode the answer: {e}")))?;
    line.push(b'\n');
    if stdout_was_closed() {
        return Err(Failure::new(
            exit::IO,
            "cannot write the answer: stdout is closed (`>&-`; to discard it, use `>/dev/null`)",
        ));
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&line)
        .and_then(|()| out.flush())
        .map_err(|e| Failure::new(exit::IO, format!("cannot write the answer to stdout: {e}")))
}

/// Whether redfour was started with stdout closed (`>&-`). Before `main`, Rust's runtime
/// opens /dev/null read-write on a closed standard descriptor, and writes then vanish; a
/// shell's `>/dev/null` opens it write-only, which stays an accepted way to discard the
/// answer.
pub fn stdout_was_closed() -> bool {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    use nix::sys::stat::{fstat, stat, SFlag};
    let out = std::io::stdout();
    let fd = std::os::fd::AsFd::as_fd(&out);
    let Ok(flags) = fcntl(fd, FcntlArg::F_GETFL) else {
        return true;
    };
    let read_write = OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE == OFlag::O_RDWR;
    let (Ok(here), Ok(null)) = (fstat(fd), stat("/dev/null")) else {
        return false;
    };
    let is_char = |st: &nix::sys::stat::FileStat| {
        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFCHR
    };
    read_write && is_char(&here) && is_char(&null) && here.st_rdev == null.st_rdev
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_json_has_the_node_fields_in_order() {
        let json = serde_json::to_string(&AcquireJson {
            id: "x",
            success: false,
            index: -1,
            ttl: 1500,
            immediate: None,
        })
        .unwrap();
        assert_eq!(json, r#"{"id":"x","success":false,"index":-1,"ttl":1500}"#);
        let json = serde_json::to_string(&AcquireJson {
            id: "x",
            success: true,
            index: 9,
            ttl: 10,
            immediate: Some(true),
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"id":"x","success":true,"index":9,"ttl":10,"immediate":true}"#
        );
    }

    #[test]
    fn status_json_shows_null_ttl() {
        let holder = BTreeMap::new();
        let json = serde_json::to_string(&StatusJson {
            id: "x",
            held: false,
            index: -1,
            ttl: None,
            holder: &holder,
        })
        .unwrap();
        assert_eq!(
            json,
            r#"{"id":"x","held":false,"index":-1,"ttl":null,"holder":{}}"#
        );
    }

    #[test]
    fn millis_saturates() {
        assert_eq!(millis(Duration::from_micros(1999)), 1);
        assert_eq!(millis(Duration::MAX), u64::MAX);
    }
}
