//! Connection settings: passwords, ACL users, database numbers, an existing `redis::Client`.

use std::time::Duration;

use redfour_test::RedisServer;

use crate::common;

fn quick(url: String) -> redfour::ClientBuilder {
    redfour::Client::builder(url)
        .connect_timeout(Duration::from_secs(1))
        .reconnect_retries(1)
        .fair(common::fair_mode())
}

#[tokio::test]
async fn password_in_the_url_is_used_and_never_shown() {
    let server = RedisServer::start_with_args(&["--requirepass", "s3cret-pw"]);
    let url = server.url_with_password();
    assert!(url.contains("s3cret-pw"), "{url}");

    let locks = quick(url).build().unwrap();
    assert!(!format!("{locks:?}").contains("s3cret-pw"));
    assert!(!locks.address().contains("s3cret-pw"));
    let got = locks
        .acquire_lock("pw", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(got.success);
    // A waiter needs the subscription connection to authenticate too.
    let waiter = tokio::spawn({
        let locks = locks.clone();
        async move {
            locks
                .lock("pw")
                .wait(Duration::from_secs(5))
                .acquire()
                .await
        }
    });
    assert!(
        redfour_test::wait_until_async(common::DEADLINE, || {
            let n = locks.stats().waiters;
            async move { n == 1 }
        })
        .await
    );
    locks.release_lock("pw", got.index).await.unwrap();
    let guard = waiter.await.unwrap().unwrap();
    assert!(guard.index() > got.index);
    guard.release().await.unwrap();
}

#[tokio::test]
async fn a_wrong_password_is_access_denied_and_not_leaked() {
    let server = RedisServer::start_with_args(&["--requirepass", "right-one"]);
    // RESP3 logs in with `HELLO 3 AUTH`, whose refusal redis-rs reports differently.
    for query in ["", "?protocol=resp3"] {
        let url = format!("redis://:wrong-one@127.0.0.1:{}/{query}", server.port());
        let locks = quick(url).build().unwrap();
        let err = locks
            .acquire_lock("x", Duration::from_secs(1))
            .await
            .unwrap_err();
        // Was `is_unavailable()`: issue 11 makes a refused login a kind of its own, not
        // transient.
        assert!(err.is_access_denied(), "{query}: {err:?}");
        assert!(!err.is_transient(), "{query}: {err:?}");
        let text = err.to_string();
        assert!(!text.contains("wrong-one"), "{text}");
        assert!(!format!("{err:?}").contains("wrong-one"), "{err:?}");
        assert!(text.contains(&server.port().to_string()), "{text}");
    }
}

/// A wait without a limit, by a library user who did not `ping` first (as the CLI does): a
/// wrong password or none at all ends it within seconds with the refusal, instead of retrying
/// forever.
#[tokio::test]
async fn a_wrong_password_ends_a_wait_without_limit_at_once() {
    let server = RedisServer::start_with_args(&["--requirepass", "right-one"]);
    let port = server.port();
    let urls = [
        format!("redis://:wrong-one@127.0.0.1:{port}/"),
        format!("redis://:wrong-one@127.0.0.1:{port}/?protocol=resp3"),
        format!("redis://locker:wrong-one@127.0.0.1:{port}/"),
        // No password where one is needed: NOAUTH at the first command.
        format!("redis://127.0.0.1:{port}/"),
    ];
    for url in urls {
        for fair in [true, false] {
            let locks = quick(url.clone()).fair(fair).build().unwrap();
            let started = std::time::Instant::now();
            let waited = tokio::time::timeout(
                Duration::from_secs(10),
                locks.wait_acquire_lock("x", Duration::from_secs(1), None),
            )
            .await;
            let took = started.elapsed();
            let err = match waited {
                Ok(Err(err)) => err,
                Ok(Ok(r)) => panic!("{url} fair {fair}: acquired {r:?}"),
                Err(_) => panic!("{url} fair {fair}: still waiting after {took:?}"),
            };
            assert!(err.is_access_denied(), "{url} fair {fair}: {err:?}");
            assert!(took < Duration::from_secs(5), "{url} fair {fair}: {took:?}");
            assert!(!format!("{err:?}").contains("wrong-one"), "{err:?}");
            let started = std::time::Instant::now();
            let err = tokio::time::timeout(Duration::from_secs(10), locks.lock("y").acquire())
                .await
                .unwrap_or_else(|_| panic!("{url} fair {fair}: lock().acquire() still waiting"))
                .unwrap_err();
            assert!(err.is_access_denied(), "{url} fair {fair}: {err:?}");
            assert!(started.elapsed() < Duration::from_secs(5), "{url}");
        }
    }
    assert_eq!(common::dbsize(&server), 0);
}

/// A Redis that is down but configured right is still waited for: the wait started while it
/// was down gets the lock once it is back.
#[tokio::test]
async fn a_wait_started_while_redis_is_down_gets_the_lock_when_it_is_back() {
    let mut server = RedisServer::start_with_args(&["--requirepass", "right-one"]);
    let url = format!("redis://:right-one@127.0.0.1:{}/", server.port());
    server.stop();
    for fair in [true, false] {
        let locks = quick(url.clone()).fair(fair).build().unwrap();
        let waiter = tokio::spawn({
            let locks = locks.clone();
            async move {
                locks
                    .wait_acquire_lock("down", Duration::from_secs(5), None)
                    .await
            }
        });
        // Something that must not happen: the wait giving up while Redis is down (a
        // refused login gives up within about a second, see above).
        tokio::time::sleep(Duration::from_secs(3)).await;
        assert!(!waiter.is_finished(), "fair {fair}: {:?}", waiter.await);
        server.restart();
        let got = tokio::time::timeout(common::DEADLINE, waiter)
            .await
            .expect("the wait did not end after the restart")
            .unwrap()
            .expect("acquired once Redis is back");
        assert!(got.success, "fair {fair}: {got:?}");
        assert!(locks.release_lock("down", got.index).await.unwrap().success);
        server.stop();
    }
}

#[tokio::test]
async fn acl_user_and_database_number() {
    let server = RedisServer::start();
    server.cmd(&[
        "ACL",
        "SETUSER",
        "locker",
        "on",
        ">pw-of-locker",
        "~*",
        "&*",
        "+@all",
    ]);
    let url = format!("redis://locker:pw-of-locker@127.0.0.1:{}/3", server.port());
    let locks = quick(url).namespace("db3").build().unwrap();
    let got = locks
        .acquire_lock("x", Duration::from_secs(5))
        .await
        .unwrap();
    assert!(got.success);

    // The lock lives in database 3, not in database 0.
    assert_eq!(common::int(&server, &["EXISTS", "db3:x"]), 0);
    let mut conn = server.connection();
    let in_db3: i64 = redis::pipe()
        .cmd("SELECT")
        .arg(3)
        .ignore()
        .cmd("EXISTS")
        .arg("db3:x")
        .query(&mut conn)
        .map(|(n,): (i64,)| n)
        .unwrap();
    assert_eq!(in_db3, 1);
    assert!(locks.release_lock("x", got.index).await.unwrap().success);
}

#[tokio::test]
async fn a_user_without_permission_is_access_denied_and_nothing_changes() {
    let server = RedisServer::start();
    // May read, may not run scripts.
    server.cmd(&[
        "ACL",
        "SETUSER",
        "reader",
        "on",
        ">pw-of-reader",
        "~*",
        "&*",
        "+@read",
        "+ping",
    ]);
    let url = format!("redis://reader:pw-of-reader@127.0.0.1:{}/", server.port());
    let locks = quick(url).build().unwrap();
    let err = locks
        .acquire_lock("x", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), redfour::ErrorKind::AccessDenied, "{err:?}");
    assert_eq!(common::dbsize(&server), 0);
}

// ---- passwords never shown ----------------------------------------------------------------

/// TCP URLs with the password `pw-SECRET-1` in every place a URL can carry one: the user info
/// (which redis-rs reads), and the query string and fragment (which it ignores, but whoever
/// wrote one there meant a secret).
fn password_urls(port: u16) -> Vec<String> {
    vec![
        format!("redis://:pw-SECRET-1@127.0.0.1:{port}/"),
        format!("redis://locker:pw-SECRET-1@127.0.0.1:{port}/2"),
        format!("redis://pw-SECRET-1@127.0.0.1:{port}"),
        format!("redis://:pw-SECRET-1@127.0.0.1:{port}/?protocol=resp3"),
        format!("valkey://:pw%2DSECRET%2D1@127.0.0.1:{port}"),
        format!("redis://127.0.0.1:{port}/?password=pw-SECRET-1"),
        format!("redis://127.0.0.1:{port}/?protocol=3&pass=pw-SECRET-1&PASSWORD=pw-SECRET-1"),
        format!("redis://127.0.0.1:{port}/0#pw-SECRET-1"),
    ]
}

/// Unix-socket URLs for `socket` with the password `pw-SECRET-1` in each form redis-rs reads
/// (`pass` in the query, percent-encoded or not, repeated: the last wins) and in user info.
fn unix_password_urls(socket: &str, password: &str) -> Vec<String> {
    vec![
        format!("unix://{socket}?pass={password}&db=9"),
        format!("redis+unix://{socket}?pass={password}"),
        format!("valkey+unix://{socket}?user=default&pass={password}"),
        format!("unix:{socket}?p%61ss={password}"),
        format!("unix://localhost{socket}?pass=x&pass={password}&protocol=resp3"),
        format!("unix://:{password}@localhost{socket}?pass={password}"),
    ]
}

fn assert_hidden(what: &str, shown: &str) {
    assert!(
        !shown.contains("SECRET"),
        "{what} shows the password: {shown}"
    );
}

#[test]
fn debug_output_never_shows_the_password() {
    let urls = password_urls(6380)
        .into_iter()
        .chain(unix_password_urls("/tmp/r/sock", "pw-SECRET-1"));
    for url in urls {
        let builder = redfour::Client::builder(url.clone()).namespace("ns");
        assert_hidden("ClientBuilder Debug", &format!("{builder:?}"));
        let locks = builder.build().unwrap();
        assert_hidden("Client Debug", &format!("{locks:?}"));
        assert_hidden("Client::address", locks.address());
        let place = if url.contains("unix") {
            "/tmp/r/sock"
        } else {
            "127.0.0.1:6380"
        };
        assert!(locks.address().contains(place), "{locks:?}");
        assert_hidden("LockBuilder Debug", &format!("{:?}", locks.lock("x")));

        let redis = redis::Client::open(url.as_str()).unwrap();
        let builder = redfour::Client::from_redis_client(redis);
        assert_hidden(
            "ClientBuilder Debug (redis::Client)",
            &format!("{builder:?}"),
        );
        assert_hidden(
            "Client Debug (redis::Client)",
            &format!("{:?}", builder.build().unwrap()),
        );
    }
}

/// Every topology lists its addresses in `Debug` and messages, each redacted.
#[test]
fn address_lists_never_show_the_password() {
    let urls: Vec<String> = password_urls(6380)
        .into_iter()
        .chain(unix_password_urls("/tmp/r/sock", "pw-SECRET-1"))
        .collect();
    let tcp: Vec<String> = password_urls(6380);
    let builders = [
        redfour::Client::sentinel(urls.clone(), "m"),
        redfour::Client::redlock(urls.clone()),
        // Cluster nodes must share one password and speak TCP.
        redfour::Client::cluster(tcp[..1].to_vec()),
    ];
    for builder in builders {
        assert_hidden("ClientBuilder Debug", &format!("{builder:?}"));
        let locks = builder.build().unwrap();
        assert_hidden("Client Debug", &format!("{locks:?}"));
        assert_hidden("Client::address", locks.address());
    }
}

#[cfg(feature = "blocking")]
#[test]
fn blocking_debug_output_never_shows_the_password() {
    let urls = password_urls(6380)
        .into_iter()
        .chain(unix_password_urls("/tmp/r/sock", "pw-SECRET-1"));
    for url in urls {
        let builder = redfour::blocking::Client::builder(url);
        assert_hidden("blocking ClientBuilder Debug", &format!("{builder:?}"));
        let locks = builder.build().unwrap();
        assert_hidden("blocking Client Debug", &format!("{locks:?}"));
        assert_hidden("blocking Client::address", locks.address());
    }
}

/// A refused connection (nothing listens on the port any more): every operation reports
/// `Unavailable` with the address, and neither the message nor `Debug` shows the password.
#[tokio::test]
async fn a_refused_connection_does_not_show_the_password() {
    let mut server = RedisServer::start();
    server.stop();
    let port = server.port().to_string();
    for url in password_urls(server.port()) {
        let locks = quick(url).build().unwrap();
        let ttl = Duration::from_secs(1);
        let errors = [
            locks.ping().await.unwrap_err(),
            locks.acquire_lock("x", ttl).await.unwrap_err(),
            locks
                .wait_acquire_lock("x", ttl, Some(Duration::from_millis(300)))
                .await
                .unwrap_err(),
            locks.release_lock("x", 1).await.unwrap_err(),
            locks.renew_lock("x", 1, ttl).await.unwrap_err(),
            locks.status("x").await.unwrap_err(),
        ];
        for err in errors {
            assert!(err.is_unavailable(), "{err:?}");
            let text = err.to_string();
            assert!(text.contains(&port), "the address is missing: {text}");
            assert_hidden("error message", &text);
            assert_hidden("error Debug", &format!("{err:?}"));
        }
    }
}

/// A Unix socket that does not exist: every form of unix URL fails with the socket's path in
/// the message, and without the password.
#[tokio::test]
async fn a_missing_unix_socket_does_not_show_the_password() {
    let socket = std::env::temp_dir().join(format!("redfour-{}-gone.sock", std::process::id()));
    let socket = socket.to_str().unwrap();
    for url in unix_password_urls(socket, "pw-SECRET-1") {
        let locks = quick(url).build().unwrap();
        let ttl = Duration::from_secs(1);
        let errors = [
            locks.ping().await.unwrap_err(),
            locks.acquire_lock("x", ttl).await.unwrap_err(),
            locks
                .wait_acquire_lock("x", ttl, Some(Duration::from_millis(300)))
                .await
                .unwrap_err(),
            locks.status("x").await.unwrap_err(),
        ];
        for err in errors {
            assert!(err.is_unavailable(), "{err:?}");
            let text = err.to_string();
            assert!(text.contains(socket), "the socket is missing: {text}");
            assert_hidden("error message", &text);
            assert_hidden("error Debug", &format!("{err:?}"));
        }
    }
}

/// A real server on a Unix socket: the password in the query logs in, and a wrong one is
/// reported as unavailable without being shown.
#[tokio::test]
async fn a_unix_socket_password_is_used_and_a_wrong_one_never_shown() {
    let server = RedisServer::start_unix_with_args(&["--requirepass", "right-one"]);
    let socket = server.unix_socket().unwrap().to_str().unwrap().to_owned();
    for url in unix_password_urls(&socket, "right-one") {
        let locks = quick(url.clone()).build().unwrap();
        assert!(!locks.address().contains("right-one"), "{locks:?}");
        locks
            .ping()
            .await
            .unwrap_or_else(|e| panic!("{url}: {e:?}"));
    }
    for url in unix_password_urls(&socket, "pw-SECRET-1") {
        let locks = quick(url.clone()).build().unwrap();
        let err = locks
            .acquire_lock("x", Duration::from_secs(1))
            .await
            .unwrap_err();
        // Was `is_unavailable()`: a refused login is `AccessDenied` since issue 11.
        assert!(err.is_access_denied(), "{url}: {err:?}");
        let text = err.to_string();
        assert!(text.contains(&socket), "the socket is missing: {text}");
        assert_hidden("error message", &text);
        assert_hidden("error Debug", &format!("{err:?}"));
    }
}

// ---- the minimal ACL rule -----------------------------------------------------------------

/// The least an ACL user needs for every redfour operation in the default namespace `lock`
/// (README, "Redis ACL"): acquire, wait (with and without the fair queue), release, renew,
/// status, keep-alive, and the CLI's commands. Keep it in sync with the README and with
/// `crates/redfour-cli/tests/cli.rs`.
///
/// - `ping`: `Client::ping` (the CLI's `wait` and `run` ping first).
/// - `evalsha`, `script|load`: every operation is a script, reloaded after `NOSCRIPT`.
/// - `hmget`: releasing a lock won by an acquire whose future was dropped in flight.
/// - `subscribe`: the waiters' subscription (HELLO and AUTH need no permission).
/// - `psubscribe` and the channel `&lock-release` itself (a pattern is allowed only when it is
///   literally one of the rule's channel patterns): a fair client hears the release channel
///   through a pattern matching it alone, so that `pubsub|numsub` in the scripts counts only the
///   clients that wait without queueing (Node redfour's), and `llen` weighs them against the
///   queue (the outsiders' turns, issue 14).
/// - the rest are the commands the scripts run, which Redis checks like any other:
///   `lrem` only when a fair-queue waiter gives up.
const ACL_RULE: &str = "resetkeys ~lock* resetchannels &lock* &lock-release -@all \
    +ping +evalsha +script|load +hmget +subscribe +psubscribe +pubsub|numsub \
    +time +type +exists +pttl +hget +hgetall +hset +hdel +hexists +pexpire +set +del \
    +publish +rpush +lindex +lpop +lrem +llen";

/// The same commands with the exact keys and channels of namespace `lock` instead of `lock*`.
const ACL_RULE_EXACT_KEYS: &str = "resetkeys ~lock:* ~lockindex ~lock-queue:* ~lock-waiters:* \
    resetchannels &lock-release &lock-handoff:* -@all \
    +ping +evalsha +script|load +hmget +subscribe +psubscribe +pubsub|numsub \
    +time +type +exists +pttl +hget +hgetall +hset +hdel +hexists +pexpire +set +del \
    +publish +rpush +lindex +lpop +lrem +llen";

/// The rule documented before the outsiders' turns (issue 14): a user's rule written then keeps
/// working, without the turns (the release channel is subscribed by name, and the scripts find
/// no outsiders to count).
const ACL_RULE_BEFORE_TURNS: &str = "resetkeys ~lock* resetchannels &lock* -@all \
    +ping +evalsha +script|load +hmget +subscribe \
    +time +type +exists +pttl +hget +hgetall +hset +hdel +hexists +pexpire +set +del \
    +publish +rpush +lindex +lpop +lrem";

/// Creates (or replaces) the user `name` with password `name-pw` and `rule`.
fn acl_user(server: &RedisServer, name: &str, rule: &str) -> String {
    let password = format!(">{name}-pw");
    let mut args = vec!["ACL", "SETUSER", name, "reset", "on", password.as_str()];
    args.extend(rule.split_whitespace());
    server.cmd(&args);
    format!("redis://{name}:{name}-pw@127.0.0.1:{}/", server.port())
}

/// What `ACL LOG` recorded for `user`, one line per entry: `reason context object`.
///
/// `client|setinfo` is left out: the redis crate sends it on connecting and ignores the answer;
/// Redis 7.2 and later log the refusal (7.0 has no such subcommand).
fn acl_denials(server: &RedisServer, user: &str) -> Vec<String> {
    let redis::Value::Array(entries) = server.cmd(&["ACL", "LOG"]) else {
        panic!("ACL LOG: not an array");
    };
    entries
        .iter()
        .filter_map(|entry| {
            let fields = match entry {
                redis::Value::Array(items) => items
                    .chunks(2)
                    .map(|kv| (common::value_text(&kv[0]), common::value_text(&kv[1])))
                    .collect::<Vec<_>>(),
                redis::Value::Map(pairs) => pairs
                    .iter()
                    .map(|(k, v)| (common::value_text(k), common::value_text(v)))
                    .collect(),
                other => panic!("ACL LOG entry: {other:?}"),
            };
            let field = |name: &str| {
                fields
                    .iter()
                    .find(|(k, _)| k.as_deref() == Some(name))
                    .and_then(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            (field("username") == user && field("object") != "client|setinfo").then(|| {
                format!(
                    "{} {} {}",
                    field("reason"),
                    field("context"),
                    field("object")
                )
            })
        })
        .collect()
}

/// A client for the ACL tests: waiters poll once a minute, so only a notice wakes them quickly.
fn acl_client(url: &str, fair: bool) -> redfour::Client {
    quick(url.to_owned())
        .fair(fair)
        .max_poll_interval(Duration::from_secs(60))
        .build()
        .expect("valid settings")
}

/// Aborts the task when dropped: a waiter left behind by an operation that failed must not
/// keep its client (and its subscription) alive into the next case.
struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Every operation of the library, through `locks`, on locks named after `id`. The first
/// error ends it.
async fn every_operation(
    server: &RedisServer,
    locks: &redfour::Client,
    id: &str,
) -> redfour::Result<()> {
    const TTL: Duration = Duration::from_secs(30);
    locks.ping().await?;

    // The guard API: acquire, status, renew, release.
    let guard = locks.lock(id).ttl(TTL).acquire().await?;
    let status = locks.status(id).await?;
    assert!(status.held && status.index == guard.index(), "{status:?}");
    assert!(guard.renew().await?.success);

    // A waiter queued behind the holder is woken by the release notice, well before its
    // next poll (a minute away) or the holder's ttl.
    let attempts = common::command_calls(server, "evalsha");
    let mut waiter = AbortOnDrop(tokio::spawn({
        let locks = locks.clone();
        let id = id.to_owned();
        async move { locks.lock(id).ttl(TTL).wait(TTL).acquire().await }
    }));
    let waiting = redfour_test::wait_until_async(common::DEADLINE, || async {
        waiter.0.is_finished()
            || (locks.stats().waiters == 1
                && common::listeners(server, "lock-release") == 1
                && common::command_calls(server, "evalsha") > attempts)
    })
    .await;
    assert!(waiting, "the waiter did not subscribe and try");
    if waiter.0.is_finished() {
        let early = (&mut waiter.0).await.expect("waiter task")?;
        panic!("the waiter got a held lock: {early:?}");
    }
    let notices = locks.stats().notices_delivered;
    guard.release().await?;
    let second = tokio::time::timeout(Duration::from_secs(5), &mut waiter.0)
        .await
        .expect("the waiter was not woken by the release notice")
        .expect("waiter task")?;
    assert!(locks.stats().notices_delivered > notices);

    // A waiter that gives up (and leaves the fair queue).
    let gave_up = locks
        .lock(id)
        .wait(Duration::from_millis(200))
        .acquire()
        .await
        .expect_err("the lock is held");
    assert!(gave_up.is_not_acquired(), "{gave_up:?}");
    // Its queue entry goes away (the janitor's `LREM`), long before it would expire.
    let left = redfour_test::wait_until_async(Duration::from_secs(2), || async {
        !common::exists(server, &format!("lock-queue:{id}"))
    })
    .await;
    assert!(left, "the queue entry of a waiter that gave up stayed");
    second.release().await?;

    // Keep-alive renews a short lease past its ttl.
    let kept = locks
        .lock(format!("{id}-kept"))
        .ttl(Duration::from_millis(300))
        .keep_alive(true)
        .acquire()
        .await?;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(kept.lost_reason(), None);
    assert!(locks.status(&format!("{id}-kept")).await?.held);
    kept.release().await?;

    // Node's API, after the server lost its scripts (reloaded on NOSCRIPT).
    server.cmd(&["SCRIPT", "FLUSH"]);
    let got = locks.acquire_lock(id, TTL).await?;
    assert!(got.success);
    assert!(locks.renew_lock(id, got.index, TTL).await?.success);
    assert!(locks.release_lock(id, got.index).await?.success);
    let got = locks.wait_acquire_lock(id, TTL, Some(TTL)).await?;
    assert!(got.success && got.immediate);
    assert!(locks.release_lock(id, got.index).await?.success);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_minimal_acl_rule_allows_every_operation() {
    let server = RedisServer::start();
    for (user, rule) in [("locker", ACL_RULE), ("exact", ACL_RULE_EXACT_KEYS)] {
        let url = acl_user(&server, user, rule);
        for fair in [true, false] {
            let locks = acl_client(&url, fair);
            let id = format!("{user}-{fair}");
            every_operation(&server, &locks, &id)
                .await
                .unwrap_or_else(|e| {
                    panic!("{user}, fair {fair}: {e}\n{:?}", acl_denials(&server, user))
                });
        }
        assert_eq!(acl_denials(&server, user), Vec::<String>::new(), "{user}");
    }
    // The rule really is that narrow: other keys and other commands are refused.
    let locks = quick(acl_user(&server, "narrow", ACL_RULE))
        .namespace("other")
        .build()
        .unwrap();
    let err = locks
        .acquire_lock("x", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), redfour::ErrorKind::AccessDenied, "{err:?}");
    assert_eq!(
        common::strings(&server, &["KEYS", "other*"]),
        Vec::<String>::new(),
        "nothing was written"
    );
}

/// A user whose rule was written before the outsiders' turns (without `psubscribe`,
/// `pubsub|numsub`, `llen` and the release channel's own pattern) can still do everything, with
/// the fair queue and without.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rule_from_before_the_outsiders_turns_still_works() {
    let server = RedisServer::start();
    let url = acl_user(&server, "before", ACL_RULE_BEFORE_TURNS);
    for fair in [true, false] {
        let locks = acl_client(&url, fair);
        let id = format!("before-{fair}");
        every_operation(&server, &locks, &id)
            .await
            .unwrap_or_else(|e| panic!("fair {fair}: {e}\n{:?}", acl_denials(&server, "before")));
    }
}

/// A user missing any one command of the rule (but `subscribe`, see below) gets an error of kind
/// `AccessDenied` (was `Redis` before issue 11) saying that Redis refused it, within a few seconds, instead of a hang.
///
/// `hmget` and `lrem` run where nobody can receive an error (after a dropped acquire, after a
/// waiter left), so they are checked through `ACL LOG` by the test above. Without
/// `psubscribe`, `pubsub|numsub` or `llen` everything works, without the outsiders' turns (the
/// test above). Without `subscribe`,
/// waiters still get the lock, later: they fall back to polling (see the report in the
/// subscription's warning log).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_missing_one_command_gets_a_clear_error_quickly() {
    let server = RedisServer::start();
    let commands: Vec<&str> = ACL_RULE
        .split_whitespace()
        .filter(|part| part.starts_with('+'))
        .filter(|part| {
            !matches!(
                *part,
                "+hmget" | "+lrem" | "+subscribe" | "+psubscribe" | "+pubsub|numsub" | "+llen"
            )
        })
        .collect();
    assert!(commands.len() > 15, "{commands:?}");
    for missing in commands {
        let rule: Vec<&str> = ACL_RULE
            .split_whitespace()
            .filter(|part| *part != missing)
            .collect();
        let rule = rule.join(" ");
        let user = format!("no-{}", &missing[1..].replace('|', "-"));
        let locks = acl_client(&acl_user(&server, &user, &rule), true);
        let started = std::time::Instant::now();
        let outcome = tokio::time::timeout(
            Duration::from_secs(5),
            every_operation(&server, &locks, &user),
        )
        .await;
        let took = started.elapsed();
        let err = match outcome {
            Ok(Err(err)) => err,
            Ok(Ok(())) => panic!("everything worked without {missing}"),
            Err(_) => panic!("without {missing}: still running after {took:?}"),
        };
        assert_eq!(
            err.kind(),
            redfour::ErrorKind::AccessDenied,
            "without {missing}: {err:?}"
        );
        let text = err.to_string();
        assert!(text.contains("refused"), "without {missing}: {text}");
        assert!(
            !acl_denials(&server, &user).is_empty(),
            "without {missing}: nothing in ACL LOG"
        );
    }
}

/// A reporter that prints the source chain (as `anyhow`'s `{:#}` does) says the cause of an
/// unreachable Redis once: `Display` does not append the source. The chain is followed through
/// this crate's errors down to the first error of redis-rs (whose own `Display` repeats its
/// I/O source's text: that is redis-rs's choice, not this crate's).
#[tokio::test]
async fn an_unreachable_redis_names_the_cause_once_in_the_chain() {
    fn chain(err: &redfour::Error) -> String {
        let mut text = err.to_string();
        let mut source = std::error::Error::source(err);
        while let Some(s) = source {
            text.push_str(": ");
            text.push_str(&s.to_string());
            source = s
                .downcast_ref::<redfour::Error>()
                .and_then(std::error::Error::source);
        }
        text
    }
    let mut servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    for server in &mut servers {
        server.stop();
    }
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let standalone = quick(urls[0].clone()).build().unwrap();
    let redlock = redfour::Client::builder_with_topology(redfour::Topology::Redlock, urls.clone())
        .connect_timeout(Duration::from_secs(1))
        .reconnect_retries(1)
        .build()
        .unwrap();
    for locks in [standalone, redlock] {
        let acquired = locks.acquire_lock("x", Duration::from_secs(1)).await;
        for err in [acquired.unwrap_err(), locks.ping().await.unwrap_err()] {
            assert!(err.is_unavailable(), "{err:?}");
            let text = chain(&err);
            assert_eq!(text.matches("Connection refused").count(), 1, "{text}");
            assert!(
                text.contains(&servers[0].port().to_string()) || err.is_quorum_lost(),
                "{text}"
            );
        }
    }
}
