use std::time::Duration;

use redfour_test::RedisServer;

#[tokio::test]
async fn smoke() {
    let server = RedisServer::start();
    let locks = redfour::Client::new(&server.url()).unwrap();
    let a = locks.acquire_lock("x", Duration::from_secs(5)).await.unwrap();
    assert!(a.success, "{a:?}");
    let b = locks.acquire_lock("x", Duration::from_secs(5)).await.unwrap();
    assert!(!b.success, "{b:?}");
    let waiter = tokio::spawn({
        let locks = locks.clone();
        async move { locks.wait_acquire_lock("x", Duration::from_secs(5), Some(Duration::from_secs(3))).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = locks.release_lock("x", a.index).await.unwrap();
    assert!(r.success, "{r:?}");
    let w = waiter.await.unwrap().unwrap();
    assert!(w.success && !w.immediate, "{w:?}");
    assert!(w.index > a.index);
    let st = locks.status("x").await.unwrap();
    println!("{st:?}");
    let g = locks.lock("y").ttl(Duration::from_millis(300)).keep_alive(true).acquire().await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(!g.is_lost());
    println!("{g:?}");
    let rel = g.release().await.unwrap();
    assert_eq!(rel.result, redfour::ReleaseOutcome::Released);
}
