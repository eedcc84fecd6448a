//! Tests of the test kit against real `redis-server` processes.

use std::net::TcpListener;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use redfour_test::{wait_until, wait_until_async, which_redis_server, RedisServer};

const DEADLINE: Duration = Duration::from_secs(10);

fn get(server: &RedisServer, conn: &mut redis::Connection, key: &str) -> Option<String> {
    redis::cmd("GET")
        .arg(key)
        .query(conn)
        .unwrap_or_else(|err| panic!("GET failed: {err}\n{}", server.log()))
}

#[test]
fn redis_server_is_on_path() {
    assert!(which_redis_server().is_file());
}

#[test]
fn start_ping_set_get() {
    let server = RedisServer::start();
    assert!(server.is_running());
    assert_ne!(server.port(), 6379);
    assert_eq!(server.url(), format!("redis://127.0.0.1:{}", server.port()));

    let mut conn = server.connection();
    let pong: String = redis::cmd("PING").query(&mut conn).expect("PING");
    assert_eq!(pong, "PONG", "{}", server.log());
    redis::cmd("SET")
        .arg("key")
        .arg("value")
        .exec(&mut conn)
        .expect("SET");
    assert_eq!(get(&server, &mut conn, "key").as_deref(), Some("value"));

    // Persistence really is off, and DEBUG is enabled for fault tests.
    assert_eq!(
        server.cmd(&["CONFIG", "GET", "save"]),
        redis::Value::Array(vec![
            redis::Value::BulkString(b"save".to_vec()),
            redis::Value::BulkString(Vec::new()),
        ])
    );
    assert_eq!(server.cmd(&["DEBUG", "SLEEP", "0"]), redis::Value::Okay);
    assert!(
        server.log().contains("Ready to accept connections"),
        "{}",
        server.log()
    );
}

#[test]
fn stop_makes_connections_fail() {
    let mut server = RedisServer::start();
    let mut conn = server.connection();
    redis::cmd("PING")
        .exec(&mut conn)
        .expect("PING before stop");

    server.stop();
    assert!(!server.is_running());
    assert!(
        redis::cmd("PING").exec(&mut conn).is_err(),
        "old connection still works"
    );
    assert!(
        server.client().get_connection().is_err(),
        "new connection accepted"
    );
    assert!(server.try_cmd(&["PING"]).is_err());
    server.stop(); // idempotent
}

#[test]
fn restart_uses_same_port_and_loses_data() {
    let mut server = RedisServer::start();
    let port = server.port();
    let first_pid = server.pid();
    server.cmd(&["SET", "key", "value"]);

    server.restart();
    assert!(server.is_running());
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), first_pid);
    assert!(!Path::new(&format!("/proc/{first_pid}")).exists());

    let mut conn = server.connection();
    assert_eq!(
        get(&server, &mut conn, "key"),
        None,
        "data survived a restart"
    );

    // Restarting from stopped works too, and the server stays usable.
    server.stop();
    server.restart();
    assert_eq!(
        server.cmd(&["PING"]),
        redis::Value::SimpleString("PONG".to_owned())
    );
}

#[test]
fn restart_reports_a_port_taken_by_someone_else() {
    let mut server = RedisServer::start();
    server.stop();
    let squatter = TcpListener::bind(("127.0.0.1", server.port())).expect("bind the freed port");

    let err = server.try_restart().expect_err("restarted on a taken port");
    assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse, "{err}");
    assert!(!server.is_running());
    assert!(
        server.log().contains("Address already in use"),
        "{}",
        server.log()
    );

    drop(squatter);
    server.restart();
    assert_eq!(
        server.cmd(&["PING"]),
        redis::Value::SimpleString("PONG".to_owned())
    );
}

#[test]
fn two_servers_get_different_ports() {
    let a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), b.port());
    assert_ne!(a.pid(), b.pid());
    a.cmd(&["SET", "key", "a"]);
    let mut conn = b.connection();
    assert_eq!(get(&b, &mut conn, "key"), None);
}

#[test]
fn drop_kills_the_process_and_removes_the_dir() {
    let server = RedisServer::start();
    let pid = server.pid();
    let dir = server.dir().to_path_buf();
    let proc_entry = format!("/proc/{pid}");
    assert!(Path::new(&proc_entry).exists());
    assert!(dir.exists());

    drop(server);
    assert!(
        wait_until(DEADLINE, || !Path::new(&proc_entry).exists()),
        "process {pid} still exists"
    );
    assert!(!dir.exists());
}

#[test]
fn kill_clients_drops_connections_but_keeps_data() {
    let server = RedisServer::start();
    server.cmd(&["SET", "key", "value"]);
    let mut conn = server.connection();
    redis::cmd("PING").exec(&mut conn).expect("PING");
    let mut subscriber = server.connection();
    redis::cmd("SUBSCRIBE")
        .arg("channel")
        .exec(&mut subscriber)
        .expect("SUBSCRIBE");

    let killed = server.kill_clients();
    assert!(killed >= 2, "killed {killed}\n{}", server.log());
    assert!(redis::cmd("PING").exec(&mut conn).is_err());

    let mut conn = server.connection();
    assert_eq!(get(&server, &mut conn, "key").as_deref(), Some("value"));
}

#[test]
fn requirepass_is_enforced_and_remembered() {
    let mut server = RedisServer::start_with_args(&["--requirepass", "s3cret:@"]);
    assert_eq!(server.password(), Some("s3cret:@"));
    assert!(!format!("{server:?}").contains("s3cret"));

    let anonymous = redis::Client::open(server.url()).expect("client");
    let mut conn = anonymous.get_connection().expect("connect");
    let err = redis::cmd("GET")
        .arg("key")
        .exec(&mut conn)
        .expect_err("GET without AUTH");
    assert!(err.to_string().contains("NOAUTH"), "{err}");

    server.cmd(&["SET", "key", "value"]);
    let mut conn = server.connection();
    assert_eq!(get(&server, &mut conn, "key").as_deref(), Some("value"));

    server.restart();
    assert_eq!(
        server.cmd(&["PING"]),
        redis::Value::SimpleString("PONG".to_owned())
    );
}

#[test]
fn unix_socket_server_answers_on_its_socket_with_the_password_in_the_query() {
    let mut server = RedisServer::start_unix_with_args(&["--requirepass", "s3cret"]);
    let socket = server.unix_socket().expect("a socket").to_owned();
    assert!(socket.starts_with(server.dir()), "{socket:?}");
    let url = server.unix_url().expect("a unix URL");
    assert_eq!(url, format!("unix://{}", socket.display()));
    assert!(RedisServer::start().unix_url().is_none());

    // The redis crate reads the password of a unix URL from `pass`.
    server.cmd(&["SET", "key", "value"]);
    let client = redis::Client::open(format!("{url}?pass=s3cret")).expect("client");
    let mut conn = client.get_connection().expect("connect over the socket");
    assert_eq!(get(&server, &mut conn, "key").as_deref(), Some("value"));
    let anonymous = redis::Client::open(url.as_str()).expect("client");
    let err = redis::cmd("GET")
        .arg("key")
        .exec(&mut anonymous.get_connection().expect("connect"))
        .expect_err("GET without AUTH");
    assert!(err.to_string().contains("NOAUTH"), "{err}");

    server.restart();
    let mut conn = client
        .get_connection()
        .expect("the socket is back after a restart");
    assert_eq!(get(&server, &mut conn, "key"), None);
}

#[test]
fn bad_arguments_fail_fast_with_the_output() {
    let err = RedisServer::try_start_with_args(&["--no-such-option", "1"]).expect_err("started");
    assert_ne!(err.kind(), std::io::ErrorKind::AddrInUse);
    assert!(err.to_string().contains("no-such-option"), "{err}");
}

#[test]
fn wait_until_reports_timeouts() {
    let calls = AtomicUsize::new(0);
    assert!(wait_until(DEADLINE, || calls
        .fetch_add(1, Ordering::SeqCst)
        == 3));
    assert_eq!(calls.load(Ordering::SeqCst), 4);
    assert!(!wait_until(Duration::ZERO, || false));
    assert!(!wait_until(Duration::from_millis(30), || false));
}

#[tokio::test]
async fn usable_from_tokio_tests() {
    let mut server = RedisServer::start();
    let mut conn = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("async connection");
    redis::cmd("SET")
        .arg("key")
        .arg("value")
        .exec_async(&mut conn)
        .await
        .expect("SET");

    server.stop();
    let probe = server.client();
    assert!(
        wait_until_async(DEADLINE, || {
            let probe = probe.clone();
            async move { probe.get_multiplexed_async_connection().await.is_err() }
        })
        .await
    );
    assert!(!wait_until_async(Duration::from_millis(20), || async { false }).await);

    server.restart();
    let mut conn = server
        .client()
        .get_multiplexed_async_connection()
        .await
        .expect("reconnect");
    let value: Option<String> = redis::cmd("GET")
        .arg("key")
        .query_async(&mut conn)
        .await
        .expect("GET");
    assert_eq!(value, None);
}

// ---- TLS servers --------------------------------------------------------------------------

/// Whether something answers `PING` on `port` in plain RESP, without TLS.
fn answers_plain_ping(port: u16) -> bool {
    redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .and_then(|c| c.get_connection_with_timeout(Duration::from_secs(2)))
        .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn))
        .is_ok()
}

#[test]
fn tls_server_speaks_tls_only_and_trusts_its_own_ca() {
    let mut server = RedisServer::start_tls();
    let tls = server.tls().expect("a TLS server has certificates");
    assert_eq!(
        server.url(),
        format!("rediss://127.0.0.1:{}", server.port())
    );
    assert!(tls.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert_eq!(
        std::fs::read_to_string(tls.ca_path()).expect("CA file"),
        tls.ca_pem()
    );
    assert!(!format!("{server:?}").contains("PRIVATE KEY"));
    assert!(!format!("{tls:?}").contains("PRIVATE KEY"));

    // The kit's connections go over TLS.
    server.cmd(&["SET", "key", "value"]);
    let mut conn = server.connection();
    assert_eq!(get(&server, &mut conn, "key").as_deref(), Some("value"));
    // The port does not speak plain RESP, and there is no plain port.
    assert!(!answers_plain_ping(server.port()));
    assert_eq!(
        server.cmd(&["CONFIG", "GET", "port"]),
        redis::Value::Array(vec![
            redis::Value::BulkString(b"port".to_vec()),
            redis::Value::BulkString(b"0".to_vec()),
        ])
    );

    // A client that trusts only the system's roots refuses the certificate.
    let untrusting = redis::Client::open(server.url()).expect("client");
    let Err(err) = untrusting.get_connection_with_timeout(DEADLINE) else {
        panic!("connected without trusting the CA");
    };
    assert!(err.to_string().contains("certificate"), "{err}");
    // By name or by address, the server certificate is valid for the CA.
    for host in ["127.0.0.1", "localhost"] {
        let url = format!("rediss://{host}:{}", server.port());
        let client = redis::Client::build_with_tls(url, tls.redis_certificates(false))
            .expect("client with the CA");
        let mut conn = client
            .get_connection_with_timeout(DEADLINE)
            .unwrap_or_else(|e| panic!("{host}: {e}\n{}", server.log()));
        assert_eq!(get(&server, &mut conn, "key").as_deref(), Some("value"));
    }

    // A restart keeps TLS and the certificates.
    let ca = tls.ca_pem().to_owned();
    server.restart();
    assert_eq!(server.tls().map(|t| t.ca_pem()), Some(ca.as_str()));
    assert_eq!(
        server.cmd(&["PING"]),
        redis::Value::SimpleString("PONG".to_owned())
    );
}

#[test]
fn tls_server_can_require_client_certificates() {
    let server = RedisServer::start_tls_with_args(&["--tls-auth-clients", "yes"]);
    let tls = server.tls().expect("certificates");
    // The kit presents its client certificate.
    assert_eq!(
        server.cmd(&["PING"]),
        redis::Value::SimpleString("PONG".to_owned())
    );
    // Without one, the handshake or the first command fails.
    let anonymous =
        redis::Client::build_with_tls(server.url(), tls.redis_certificates(false)).expect("client");
    let refused = anonymous
        .get_connection_with_timeout(DEADLINE)
        .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn));
    assert!(refused.is_err(), "{refused:?}");
}

#[test]
fn tls_server_with_a_password() {
    let server = RedisServer::start_tls_with_args(&["--requirepass", "tls-pw"]);
    assert!(server.url_with_password().starts_with("rediss://:tls-pw@"));
    assert_eq!(
        server.cmd(&["PING"]),
        redis::Value::SimpleString("PONG".to_owned())
    );
}
