//! Compile-time proof that the handles, the guard, the error and the futures of the public
//! async API can move across threads: `tokio::spawn` needs `Send + 'static`, and a
//! multi-threaded runtime moves tasks between workers. If one of these stops being `Send`,
//! this file stops compiling.

use std::time::Duration;

use redfour::{
    AcquireResponse, Client, ClientBuilder, Error, ErrorKind, LeaseLost, LockBuilder, LockGuard,
    LockStatus, ReleaseOutcome, ReleaseResponse, RenewOutcome, RenewResponse,
};

fn assert_send<T: Send>(_: &T) {}
fn assert_send_static<T: Send + 'static>(_: &T) {}
fn assert_send_sync_static<T: Send + Sync + 'static>() {}
fn assert_send_static_type<T: Send + 'static>() {}

#[test]
fn handles_guards_and_errors_are_send_and_sync() {
    assert_send_sync_static::<Client>();
    assert_send_sync_static::<LockGuard>();
    assert_send_sync_static::<Error>();
    assert_send_sync_static::<ErrorKind>();
    assert_send_sync_static::<LeaseLost>();
    assert_send_sync_static::<redfour::Stats>();
    assert_send_sync_static::<AcquireResponse>();
    assert_send_sync_static::<ReleaseResponse>();
    assert_send_sync_static::<ReleaseOutcome>();
    assert_send_sync_static::<RenewResponse>();
    assert_send_sync_static::<RenewOutcome>();
    assert_send_sync_static::<LockStatus>();
    assert_send_static_type::<ClientBuilder>();
    assert_send_static_type::<LockBuilder>();

    // Usable as a boxed error in `?`-heavy application code.
    fn assert_std_error<T: std::error::Error + Send + Sync + 'static>() {}
    assert_std_error::<Error>();
}

#[test]
fn futures_of_the_async_api_are_send() {
    // Building a client opens no connection, and futures do nothing until polled.
    let client = Client::new("redis://127.0.0.1:1/").unwrap();
    let ttl = Duration::from_secs(1);

    assert_send(&client.acquire_lock("x", ttl));
    assert_send(&client.wait_acquire_lock("x", ttl, Some(ttl)));
    assert_send(&client.release_lock("x", 1));
    assert_send(&client.renew_lock("x", 1, ttl));
    assert_send(&client.status("x"));
    assert_send(&client.ping());

    // The builder's futures own what they need: they can be spawned as they are.
    assert_send_static(&client.lock("x").ttl(ttl).acquire());
    assert_send_static(&client.lock("x").try_acquire());

    // And the borrowed ones can be spawned with an owned client moved in.
    let owned = client.clone();
    assert_send_static(&async move { owned.acquire_lock("x", ttl).await });
    let owned = client.clone();
    assert_send_static(&async move { owned.wait_acquire_lock("x", ttl, None).await });
    let owned = client;
    assert_send_static(&async move { owned.release_lock("x", 1).await });
}

/// Never called: a guard needs a server. Type-checking it is the test.
#[allow(dead_code)]
fn futures_of_the_guard_are_send(guard: LockGuard) {
    assert_send(&guard.renew());
    assert_send(&guard.renew_with(Duration::from_secs(1)));
    assert_send_static(&guard.lost());
    assert_send_static(&guard.release());
}
