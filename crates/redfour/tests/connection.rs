//! Connection settings: passwords, ACL users, database numbers, an existing `redis::Client`.

mod common;

use std::time::Duration;

use redfour_test::RedisServer;

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
            let n = locks.waiter_registrations();
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
async fn a_wrong_password_is_unavailable_and_not_leaked() {
    let server = RedisServer::start_with_args(&["--requirepass", "right-one"]);
    let url = format!("redis://:wrong-one@127.0.0.1:{}/", server.port());
    let locks = quick(url).build().unwrap();
    let err = locks
        .acquire_lock("x", Duration::from_secs(1))
        .await
        .unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    let text = err.to_string();
    assert!(!text.contains("wrong-one"), "{text}");
    assert!(text.contains(&server.port().to_string()), "{text}");
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
async fn a_user_without_permission_gets_a_redis_error_and_nothing_changes() {
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
    assert_eq!(err.kind(), redfour::ErrorKind::Redis, "{err:?}");
    assert_eq!(common::dbsize(&server), 0);
}
