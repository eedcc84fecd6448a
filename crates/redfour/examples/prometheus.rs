//! Serving redfour's lock metrics to Prometheus.
//!
//! The library records through the `metrics` facade (feature `metrics`); the application
//! chooses the exporter. Here it is `metrics-exporter-prometheus`, serving
//! `http://127.0.0.1:9000/metrics` while four workers contend for one lock.
//!
//! ```sh
//! redis-server --port 6380 --save "" &
//! REDIS_URL=redis://127.0.0.1:6380 cargo run -p redfour --features metrics --example prometheus
//! curl -s http://127.0.0.1:9000/metrics | grep redfour_
//! ```
//!
//! `METRICS_ADDR` changes the listening address. The example prints what a scrape shows after
//! the first rounds, then goes on until Ctrl-C.

use std::net::SocketAddr;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379/".into());
    let addr: SocketAddr = std::env::var("METRICS_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:9000".into())
        .parse()?;

    // Install the exporter before building clients: the clients describe their metrics (units,
    // help text) to the recorder in force when they are built.
    PrometheusBuilder::new()
        .with_http_listener(addr)
        // `_seconds` and `_total` suffixes, as Prometheus names them.
        .with_recommended_naming(true)
        // Histograms as Prometheus histograms (buckets, in seconds) rather than summaries.
        .set_buckets_for_metric(
            Matcher::Suffix("duration".into()),
            &[
                0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
            ],
        )?
        .install()?;

    let locks = redfour::Client::builder(url)
        .namespace("redfour-example")
        .build()?;

    // Four workers take turns on one lock: each waits up to a second, holds it briefly with
    // keep-alive, and releases it. Some waits run out; every acquisition after the first is a
    // handoff from the previous holder.
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..4 {
        let locks = locks.clone();
        workers.spawn(async move {
            loop {
                let taken = locks
                    .lock("report")
                    .ttl(Duration::from_millis(300))
                    .wait(Duration::from_secs(1))
                    .keep_alive(true)
                    .acquire()
                    .await;
                match taken {
                    Ok(guard) => {
                        tokio::time::sleep(Duration::from_millis(150 + 50 * worker)).await;
                        if let Err(e) = guard.release().await {
                            eprintln!("worker {worker}: release failed: {e}");
                        }
                    }
                    Err(e) if e.is_not_acquired() => {}
                    Err(e) => {
                        eprintln!("worker {worker}: {e}");
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
            }
        });
    }

    tokio::time::sleep(Duration::from_secs(3)).await;
    println!("what Prometheus scrapes from http://{addr}/metrics (redfour's lines):");
    for line in scrape(addr).await?.lines() {
        if line.starts_with("redfour_") {
            println!("  {line}");
        }
    }
    println!("serving on http://{addr}/metrics until Ctrl-C");
    tokio::signal::ctrl_c().await?;
    workers.shutdown().await;
    // Waiters leave the queue and dropped guards are released in the background: let that
    // finish before the process exits.
    locks.settle(Duration::from_secs(2)).await;
    Ok(())
}

/// One `GET /metrics`, as Prometheus would send it.
async fn scrape(addr: SocketAddr) -> std::io::Result<String> {
    let mut conn = tokio::net::TcpStream::connect(addr).await?;
    conn.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await?;
    let mut response = String::new();
    conn.read_to_string(&mut response).await?;
    Ok(response)
}
