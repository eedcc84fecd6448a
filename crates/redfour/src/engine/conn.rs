//! The command connection of each topology behind one [`ConnectionLike`]: a reconnecting
//! connection to one server, a connection to whichever server the sentinels name as master,
//! or a cluster connection (which follows `MOVED`, `ASK` and `TRYAGAIN` by itself).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::backoff::Backoff;
use crate::sync::lock;
use redis::aio::{ConnectionLike, ConnectionManager, MultiplexedConnection};
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, SingleNodeRoutingInfo, SlotAddr};
use redis::sentinel::SentinelClient;
use redis::{AsyncConnectionConfig, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

/// A command connection, cheap to clone (clones share the underlying connection).
#[derive(Clone)]
pub(crate) enum Conn {
    Single(crate::metrics::Watched<ConnectionManager>),
    Sentinel(SentinelConn),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Sentinel(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Sentinel(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Sentinel(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Runs the script call `call` and then `WAIT replicas timeout` on this connection (see
    /// [`query_then_wait`](Conn::query_then_wait)), reloading the script on `NOSCRIPT`.
    /// Returns the script's reply and how many replicas acknowledged it (or why `WAIT` failed:
    /// the script's effects stand either way).
    pub(crate) async fn eval_then_wait<T: redis::FromRedisValue>(
        &mut self,
        call: &crate::scripts::Eval,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> RedisResult<(T, RedisResult<i64>)> {
        let (cmd, script) = call.parts();
        let (reply, acked) = match self.query_then_wait(cmd, key, replicas, timeout).await {
            Err(err)
                if err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript) =>
            {
                script.load_async(self).await?;
                self.query_then_wait(cmd, key, replicas, timeout).await?
            }
            other => other?,
        };
        Ok((redis::from_redis_value(reply)?, acked))
    }

    /// Runs `cmd` and then `WAIT replicas timeout` as one pipeline, so that both go over the
    /// same connection to the master that holds `key` (on a cluster, the master of the key's
    /// slot): the answer counts the replicas that acknowledged that very write. Returns `cmd`'s
    /// reply (an error reply as an `Err`) and the count (or `WAIT`'s own error).
    pub(crate) async fn query_then_wait(
        &mut self,
        cmd: &Cmd,
        key: &str,
        replicas: u32,
        timeout: Duration,
    ) -> RedisResult<(Value, RedisResult<i64>)> {
        let mut pipe = redis::pipe();
        pipe.add_command(cmd.clone());
        pipe.cmd("WAIT")
            .arg(replicas)
            .arg(timeout.as_millis() as u64);
        let replies = match self {
            Conn::Cluster(c) => {
                let route = Route::with_key(key.as_bytes(), SlotAddr::Master);
                c.route_pipeline(pipe, 0, 2, SingleNodeRoutingInfo::SpecificNode(route))
                    .await?
            }
            other => other.req_packed_commands(&pipe, 0, 2).await?,
        };
        let mut replies = replies.into_iter();
        let (Some(reply), Some(acked)) = (replies.next(), replies.next()) else {
            return Err(RedisError::from((
                redis::ErrorKind::Parse,
                "a pipeline of two commands answered fewer replies",
            )));
        };
        let reply = match reply {
            Value::ServerError(e) => return Err(e.into()),
            other => other,
        };
        // The script ran (and may have won) whatever `WAIT` answered: its failure (a user
        // without `+wait`, say) is reported apart, so that the caller can release what it won.
        let acked = match acked {
            Value::ServerError(e) => Err(e.into()),
            other => redis::from_redis_value(other).map_err(Into::into),
        };
        Ok((reply, acked))
    }
}

/// A connection to the master that the sentinels name, re-resolved after a failure that may
/// mean the master moved: a lost or refused connection, a timeout, or a server that answers
/// `READONLY` (a demoted master) or `MASTERDOWN`.
#[derive(Clone)]
pub(crate) struct SentinelConn {
    pub(crate) shared: Arc<SentinelShared>,
    /// Which of the shared connections this handle uses (see [`Lane`]).
    pub(crate) lane: Lane,
}

/// The two command connections of a client: the shared one, and one for acquires that wait
/// for replica acknowledgements (`WAIT` blocks its connection).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    Commands = 0,
    Acks = 1,
}

impl From<Lane> for crate::metrics::Role {
    fn from(lane: Lane) -> Self {
        match lane {
            Lane::Commands => crate::metrics::Role::Commands,
            Lane::Acks => crate::metrics::Role::Acks,
        }
    }
}

pub(crate) struct SentinelShared {
    sentinel: tokio::sync::Mutex<SentinelClient>,
    /// The sentinels, for the `+switch-master` watcher.
    sentinels: Vec<redis::ConnectionInfo>,
    /// Bumped at every `+switch-master` for this service: subscriptions reconnect.
    switches: tokio::sync::watch::Sender<u64>,
    /// The `+switch-master` watcher, started with the first connection, stopped on drop.
    watcher: Mutex<Option<tokio::task::AbortHandle>>,
    /// The connection in use and its generation (so that a failure on an old connection does
    /// not throw away a newer one).
    current: [Mutex<Option<(u64, MultiplexedConnection)>>; 2],
    generation: AtomicU64,
    /// Which lanes had a connection before (their next one is a reconnection, for metrics).
    opened: crate::metrics::Opened,
    config: AsyncConnectionConfig,
    retries: usize,
    service: String,
    db: i64,
}

impl SentinelShared {
    pub(crate) fn new(
        sentinel: SentinelClient,
        sentinels: Vec<redis::ConnectionInfo>,
        service: String,
        connect_timeout: Duration,
        response_timeout: Duration,
        retries: usize,
        db: i64,
    ) -> SentinelShared {
        SentinelShared {
            sentinel: tokio::sync::Mutex::new(sentinel),
            sentinels,
            switches: tokio::sync::watch::channel(0).0,
            watcher: Mutex::new(None),
            current: [Mutex::new(None), Mutex::new(None)],
            generation: AtomicU64::new(0),
            opened: Default::default(),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(connect_timeout))
                .set_response_timeout(Some(response_timeout)),
            retries,
            service,
            db,
        }
    }

    /// A client for the current master, asked from the sentinels (which check that it calls
    /// itself master).
    pub(crate) async fn master_client(&self) -> RedisResult<redis::Client> {
        let found = self.sentinel.lock().await.async_get_client().await;
        match found {
            Err(e) if e.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel => {
                Err(self.unknown_service_or(e).await)
            }
            other => other,
        }
    }

    /// redis-rs says "master name not found" alike for a name no sentinel knows (a mistake no
    /// retry mends) and for a known master that is down or not promoted yet (a failover, which
    /// passes), and does not say which sentinels it could not reach. Asks every sentinel
    /// whether it knows the name at all: only when each one answers that it does not is the
    /// error an unknown service; otherwise it stays `err` (transient).
    async fn unknown_service_or(&self, err: RedisError) -> RedisError {
        let asks = self.sentinels.iter().map(|info| async move {
            let client = redis::Client::open(info.clone()).ok()?;
            let mut conn = client
                .get_multiplexed_async_connection_with_config(&self.config)
                .await
                .ok()?;
            let address: Option<Vec<String>> = redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(&self.service)
                .query_async(&mut conn)
                .await
                .ok()?;
            Some(address.is_none())
        });
        let unknown = futures_util::future::join_all(asks).await;
        if !unknown.is_empty() && unknown.iter().all(|u| *u == Some(true)) {
            return redis::make_extension_error(
                crate::error::UNKNOWN_SERVICE.into(),
                Some(match unknown.len() {
                    1 => format!(
                        "the sentinel does not monitor a master named `{}` (check the service name)",
                        self.service
                    ),
                    n => format!(
                        "none of the {n} sentinels monitors a master named `{}` (check the service name)",
                        self.service
                    ),
                }),
            );
        }
        err
    }

    /// Changes at every failover the sentinels announce (`+switch-master`).
    pub(crate) fn switches(&self) -> tokio::sync::watch::Receiver<u64> {
        self.switches.subscribe()
    }

    /// Starts the `+switch-master` watcher if it is not running. Inside a Tokio runtime.
    pub(crate) fn watch_failovers(self: &Arc<Self>) {
        let mut watcher = lock(&self.watcher);
        if watcher.is_none() {
            let task = tokio::spawn(watch_switches(Arc::downgrade(self)));
            *watcher = Some(task.abort_handle());
        }
    }

    /// Forgets the current connection, so that the next command asks the sentinels again.
    pub(crate) fn forget(&self) {
        for current in &self.current {
            *lock(current) = None;
        }
    }

    async fn connection(&self, lane: Lane) -> RedisResult<(u64, MultiplexedConnection)> {
        let slot = &self.current[lane as usize];
        if let Some(current) = lock(slot).clone() {
            return Ok(current);
        }
        let mut delay = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        let mut attempt = 0;
        loop {
            let found = async {
                let client = self.master_client().await?;
                client
                    .get_multiplexed_async_connection_with_config(&self.config)
                    .await
            }
            .await;
            match found {
                Ok(conn) => {
                    let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
                    let mut current = lock(slot);
                    // Another caller may have connected meanwhile: keep one connection.
                    if let Some(existing) = current.clone() {
                        return Ok(existing);
                    }
                    *current = Some((generation, conn.clone()));
                    self.opened.opened(lane.into());
                    return Ok((generation, conn));
                }
                // A refused login or an unknown service stays so: report it at once.
                Err(e)
                    if attempt < self.retries
                        && crate::error::Error::from_redis(e.clone(), None).is_transient() =>
                {
                    tracing::debug!(service = %self.service, error = %e, "cannot reach the master yet; asking the sentinels again");
                    attempt += 1;
                    delay.wait().await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn after_error(&self, lane: Lane, generation: u64, err: &RedisError) {
        let moved = err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || err.code().is_some_and(master_moved);
        if moved {
            self.drop_connection(lane, generation, &err.to_string());
        }
    }

    /// An error reply read as a value (the multiplexed connection hands those back as `Ok`)
    /// that says this server is no longer a usable master.
    fn after_reply(&self, lane: Lane, generation: u64, reply: &Value) {
        if let Value::ServerError(e) = reply {
            if master_moved(e.code()) {
                self.drop_connection(lane, generation, e.code());
            }
        }
    }

    fn drop_connection(&self, lane: Lane, generation: u64, why: &str) {
        {
            let mut current = lock(&self.current[lane as usize]);
            if current.as_ref().is_some_and(|(g, _)| *g == generation) {
                tracing::debug!(service = %self.service, error = why, "master connection failed; asking the sentinels at the next command");
                *current = None;
            }
        }
    }
}

impl Drop for SentinelShared {
    fn drop(&mut self) {
        if let Some(watcher) = lock(&self.watcher).take() {
            watcher.abort();
        }
    }
}

/// How often the `+switch-master` watcher checks that its sentinel still answers.
const SENTINEL_PING_EVERY: Duration = Duration::from_secs(5);

/// Listens to the sentinels' `+switch-master` announcements (one sentinel at a time, the next
/// one when it goes away): at a failover of this service, commands and subscriptions move to
/// the new master at once, instead of writing to the old one until it is demoted (which can
/// take the sentinels several seconds, long enough for a lock on the new master to expire).
async fn watch_switches(shared: std::sync::Weak<SentinelShared>) {
    use futures_util::StreamExt;
    let sentinels = match shared.upgrade() {
        Some(s) => s.sentinels.clone(),
        None => return,
    };
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    for info in sentinels.iter().cycle() {
        let Ok(client) = redis::Client::open(info.clone()) else {
            continue;
        };
        let subscribed = async {
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe("+switch-master").await?;
            Ok::<_, RedisError>(pubsub)
        };
        match tokio::time::timeout(Duration::from_secs(2), subscribed).await {
            Ok(Ok(pubsub)) => {
                backoff.reset();
                let (mut sink, mut messages) = pubsub.split();
                loop {
                    // A sentinel that stops answering (a partition) would leave this watch
                    // silent forever: ping it now and then, and move on to the next one.
                    let msg = tokio::select! {
                        msg = messages.next() => msg,
                        () = tokio::time::sleep(SENTINEL_PING_EVERY) => {
                            let pong = tokio::time::timeout(
                                Duration::from_secs(2),
                                sink.ping::<redis::Value>(),
                            )
                            .await;
                            if matches!(pong, Ok(Ok(_))) {
                                continue;
                            }
                            tracing::debug!(sentinel = %info.addr(), "the sentinel stopped answering; watching the next one");
                            break;
                        }
                    };
                    let Some(msg) = msg else {
                        break;
                    };
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    let payload = String::from_utf8_lossy(msg.get_payload_bytes()).into_owned();
                    // "<service> <old ip> <old port> <new ip> <new port>"
                    if payload.split(' ').next() == Some(shared.service.as_str()) {
                        tracing::info!(service = %shared.service, switch = %payload, "the sentinels switched the master; following");
                        shared.forget();
                        shared.switches.send_modify(|n| *n += 1);
                    }
                }
            }
            _ => {
                tracing::debug!(sentinel = %info.addr(), "cannot watch this sentinel for failovers; trying the next");
            }
        }
        if shared.strong_count() == 0 {
            return;
        }
        backoff.wait().await;
    }
}

/// Error codes of a server that is not (or not yet) a master that can take writes: a demoted
/// master, or one that lost its replicas under `min-replicas-to-write`, or one still loading.
fn master_moved(code: &str) -> bool {
    matches!(code, "READONLY" | "MASTERDOWN" | "LOADING" | "NOREPLICAS")
}

impl ConnectionLike for SentinelConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            let (generation, mut conn) = self.shared.connection(self.lane).await?;
            let reply = conn.req_packed_command(cmd).await;
            match &reply {
                Err(e) => self.shared.after_error(self.lane, generation, e),
                Ok(value) => self.shared.after_reply(self.lane, generation, value),
            }
            reply
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            let (generation, mut conn) = self.shared.connection(self.lane).await?;
            let reply = conn.req_packed_commands(pipeline, offset, count).await;
            match &reply {
                Err(e) => self.shared.after_error(self.lane, generation, e),
                Ok(values) => {
                    for value in values {
                        self.shared.after_reply(self.lane, generation, value);
                    }
                }
            }
            reply
        })
    }

    fn get_db(&self) -> i64 {
        self.shared.db
    }
}
