//! TLS (`rediss://`): a server whose certificate comes from a private CA, trusted with
//! `ClientBuilder::tls_root_certificates` or through a `redis::Client` built with
//! `build_with_tls` (with a client certificate too); the waiters' subscription over TLS; what
//! happens without trusting the CA; `#insecure`.
//!
//! Every server here speaks TLS only (the test kit's `RedisServer::start_tls`), so any
//! connection that works went through TLS.

use std::time::{Duration, Instant};

use redfour::ReleaseOutcome;
use redfour_test::{wait_until_async, RedisServer};

use crate::common::{command_calls, listeners, DEADLINE};

/// A ttl no test reaches.
const TTL: Duration = Duration::from_secs(30);

/// How long a waiter may take to get the lock after the release notice; far below the poll
/// interval ([`POLL`]) and the holder's ttl, so a waiter that makes it was woken by the notice.
const NOTICE: Duration = Duration::from_secs(5);

/// The waiters' poll interval: long enough that only a notice wakes them within [`NOTICE`].
const POLL: Duration = Duration::from_secs(60);

/// How long a failed connection may take to be reported: the 1 s connect timeout, one retry
/// with its backoff, and room for a loaded machine.
const REPORTED: Duration = Duration::from_secs(5);

fn ca(server: &RedisServer) -> String {
    server
        .tls()
        .expect("a TLS server has certificates")
        .ca_pem()
        .to_owned()
}

/// A client of the TLS `server` that trusts its CA, with short timeouts.
fn trusting(server: &RedisServer, fair: bool) -> redfour::Client {
    redfour::Client::builder(server.url())
        .tls_root_certificates(ca(server))
        .connect_timeout(Duration::from_secs(1))
        .reconnect_retries(1)
        .max_poll_interval(POLL)
        .fair(fair)
        .build()
        .expect("valid settings")
}

/// Takes `id` with `holder`, lets a waiter of `waiters` queue behind it, releases, and checks
/// that the waiter got the lock through a notice on its (TLS) subscription.
async fn handoff_by_notice(
    server: &RedisServer,
    holder: &redfour::Client,
    waiters: &redfour::Client,
    id: &str,
) {
    let held = holder
        .lock(id)
        .ttl(TTL)
        .try_acquire()
        .await
        .expect("acquire over TLS")
        .expect("a free lock");
    let attempts = command_calls(server, "evalsha");
    let waiter = tokio::spawn({
        let waiters = waiters.clone();
        let id = id.to_owned();
        async move { waiters.lock(id).ttl(TTL).wait(TTL).acquire().await }
    });
    // Subscribed, and its first attempt found the lock held: from now on only the release
    // notice (or a poll a minute away) wakes it.
    let waiting = wait_until_async(DEADLINE, || async {
        waiters.stats().waiters == 1
            && listeners(server, "lock-release") >= 1
            && command_calls(server, "evalsha") > attempts
    })
    .await;
    assert!(
        waiting,
        "the waiter never subscribed and tried\n{}",
        server.log()
    );
    let notices = waiters.stats().notices_delivered;

    let released = Instant::now();
    assert_eq!(
        held.release().await.expect("release").result,
        ReleaseOutcome::Released
    );
    let guard = tokio::time::timeout(NOTICE, waiter)
        .await
        .expect("the waiter was not woken by the release notice")
        .expect("waiter task")
        .expect("the waiter's acquire");
    assert!(released.elapsed() < NOTICE);
    assert!(!guard.acquired_immediately());
    assert!(
        waiters.stats().notices_delivered > notices,
        "no notice reached the waiter"
    );
    assert_eq!(
        guard.release().await.expect("release").result,
        ReleaseOutcome::Released
    );
}

async fn acquire_renew_status_release(locks: &redfour::Client, id: &str) {
    let guard = locks
        .lock(id)
        .ttl(TTL)
        .acquire()
        .await
        .expect("acquire over TLS");
    let status = locks.status(id).await.expect("status");
    assert!(status.held);
    assert_eq!(status.index, guard.index());
    assert!(guard.renew().await.expect("renew").success);
    assert_eq!(
        guard.release().await.expect("release").result,
        ReleaseOutcome::Released
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_ca_given_to_the_builder_is_trusted() {
    let server = RedisServer::start_tls();
    for fair in [true, false] {
        let id = format!("tls-{fair}");
        let holder = trusting(&server, fair);
        let waiters = trusting(&server, fair);
        assert!(holder.address().starts_with("rediss://"), "{holder:?}");
        holder.ping().await.expect("ping over TLS");
        acquire_renew_status_release(&holder, &id).await;
        handoff_by_notice(&server, &holder, &waiters, &id).await;
        // The waiter's subscription (RESP3) and the janitor's connection are up; nothing
        // else: a handful of connections, all TLS since the server has no plain port.
        assert!(listeners(&server, "lock-release") >= 1);
    }
}

/// A `redis::Client` built with `build_with_tls` keeps its certificates in the library's
/// connections, the subscription included: here the server requires a client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_redis_client_with_a_client_certificate() {
    let server = RedisServer::start_tls_with_args(&["--tls-auth-clients", "yes"]);
    let tls = server.tls().expect("certificates");
    let builder = |fair: bool| {
        let redis =
            redfour::redis::Client::build_with_tls(server.url(), tls.redis_certificates(true))
                .expect("a TLS redis client");
        redfour::Client::from_redis_client(redis)
            .connect_timeout(Duration::from_secs(1))
            .max_poll_interval(POLL)
            .fair(fair)
    };
    for fair in [true, false] {
        let id = format!("mtls-{fair}");
        let holder = builder(fair).build().expect("valid settings");
        let waiters = builder(fair).build().expect("valid settings");
        acquire_renew_status_release(&holder, &id).await;
        handoff_by_notice(&server, &holder, &waiters, &id).await;
    }

    // Without the client certificate, the server refuses the connection.
    let anonymous = redfour::Client::builder(server.url())
        .tls_root_certificates(tls.ca_pem())
        .connect_timeout(Duration::from_secs(1))
        .reconnect_retries(1)
        .build()
        .expect("valid settings");
    let started = Instant::now();
    let err = anonymous
        .acquire_lock("mtls", TTL)
        .await
        .expect_err("connected without a client certificate");
    assert!(err.is_unavailable(), "{err:?}");
    assert!(started.elapsed() < REPORTED, "took {:?}", started.elapsed());
}

/// Not trusting the server's CA (the system's roots only, or another CA) fails the first
/// command quickly with `Unavailable`, saying why, instead of hanging.
#[tokio::test]
async fn a_server_whose_ca_is_not_trusted_is_unavailable_quickly() {
    let server = RedisServer::start_tls();
    let other = RedisServer::start_tls();
    let system_roots = redfour::Client::builder(server.url());
    let other_ca = redfour::Client::builder(server.url()).tls_root_certificates(ca(&other));
    for builder in [system_roots, other_ca] {
        let locks = builder
            .connect_timeout(Duration::from_secs(1))
            .reconnect_retries(1)
            .build()
            .expect("valid settings");
        let started = Instant::now();
        let err = locks
            .acquire_lock("untrusted", TTL)
            .await
            .expect_err("acquired over an untrusted connection");
        let took = started.elapsed();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(took < REPORTED, "took {took:?}");
        let text = err.to_string();
        // The cause is in the source chain (`Display` no longer appends it, issue 11).
        let mut cause = std::error::Error::source(&err);
        let mut chain = text.clone();
        while let Some(source) = cause {
            chain = format!("{chain}: {source}");
            cause = source.source();
        }
        assert!(chain.contains("certificate"), "{chain}");
        assert!(text.contains(&server.port().to_string()), "{text}");

        let started = Instant::now();
        assert!(locks.ping().await.expect_err("ping").is_unavailable());
        // A bounded wait gives up at its end, reporting the same cause.
        let err = locks
            .lock("untrusted")
            .wait(Duration::from_secs(1))
            .acquire()
            .await
            .expect_err("waited over an untrusted connection");
        assert!(err.is_unavailable(), "{err:?}");
        assert!(
            started.elapsed() < 2 * REPORTED,
            "took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn builder_rejects_unusable_root_certificates() {
    let cases: [(&str, &[u8], &str); 4] = [
        (
            "redis://127.0.0.1:1",
            b"-----BEGIN CERTIFICATE-----",
            "rediss",
        ),
        ("rediss://127.0.0.1:1", b"", "no certificate"),
        (
            "rediss://127.0.0.1:1",
            b"not a certificate",
            "no certificate",
        ),
        (
            "rediss://127.0.0.1:1",
            b"-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
            "PEM",
        ),
    ];
    for (url, pem, needle) in cases {
        let err = redfour::Client::builder(url)
            .tls_root_certificates(pem)
            .build()
            .expect_err("accepted");
        assert!(err.is_invalid_input(), "{url} {pem:?}: {err:?}");
        assert!(err.to_string().contains(needle), "{url} {pem:?}: {err}");
    }
    // A redis::Client carries its own TLS settings.
    let redis = redfour::redis::Client::open("rediss://127.0.0.1:1").expect("client");
    let err = redfour::Client::from_redis_client(redis)
        .tls_root_certificates("-----BEGIN CERTIFICATE-----")
        .build()
        .expect_err("accepted");
    assert!(err.is_invalid_input(), "{err:?}");
}

#[test]
fn debug_does_not_show_the_certificates_or_the_password() {
    let server = RedisServer::start_tls_with_args(&["--requirepass", "tls-secret"]);
    let ca = ca(&server);
    let builder = redfour::Client::builder(server.url_with_password()).tls_root_certificates(ca);
    let shown = format!("{builder:?}");
    assert!(!shown.contains("BEGIN CERTIFICATE"), "{shown}");
    assert!(!shown.contains("tls-secret"), "{shown}");
    assert!(shown.contains("tls_root_certificates"), "{shown}");
    let locks = builder.build().expect("valid settings");
    let shown = format!("{locks:?}");
    assert!(!shown.contains("tls-secret"), "{shown}");
    assert!(shown.contains("rediss://"), "{shown}");
}

/// `#insecure` turns verification off (the redis crate's URL fragment, honoured with the
/// `tls-insecure` feature): no CA needed.
#[cfg(feature = "tls-insecure")]
#[tokio::test]
async fn insecure_fragment_skips_verification() {
    let server = RedisServer::start_tls();
    let url = format!("{}/#insecure", server.url());
    let locks = redfour::Client::builder(url)
        .connect_timeout(Duration::from_secs(1))
        .reconnect_retries(1)
        .build()
        .expect("valid settings");
    acquire_renew_status_release(&locks, "insecure").await;
    handoff_by_notice(&server, &locks, &locks, "insecure").await;
}

#[cfg(feature = "blocking")]
#[test]
fn blocking_client_with_a_private_ca() {
    let server = RedisServer::start_tls();
    let locks = redfour::blocking::Client::builder(server.url())
        .tls_root_certificates(ca(&server))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .expect("valid settings");
    let guard = locks
        .lock("blocking-tls")
        .ttl(TTL)
        .acquire()
        .expect("acquire");
    assert!(locks.status("blocking-tls").expect("status").held);
    assert!(guard.renew().expect("renew").success);
    assert_eq!(
        guard.release().expect("release").result,
        ReleaseOutcome::Released
    );
}
