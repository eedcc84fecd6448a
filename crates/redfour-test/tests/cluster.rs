//! Tests of the kit's Redis Cluster against real `redis-server` processes.

use std::time::{Duration, Instant};

use redfour_test::{wait_until, RedisCluster, CLUSTER_SLOTS};

/// Runs one command on node `i` and returns the reply or the error.
fn on(cluster: &RedisCluster, i: usize, args: &[&str]) -> redis::RedisResult<redis::Value> {
    cluster.nodes()[i].try_cmd(args)
}

fn text(value: &redis::Value) -> Option<String> {
    redis::from_redis_value(value.clone()).ok()
}

/// `Some((slot, port))` if `result` is a `kind` redirection (`MOVED` or `ASK`).
fn redirection(
    result: &redis::RedisResult<redis::Value>,
    kind: redis::ServerErrorKind,
) -> Option<(u16, u16)> {
    let err = result.as_ref().err()?;
    if err.kind() != redis::ErrorKind::Server(kind) {
        return None;
    }
    let (addr, slot) = err.redirect_node()?;
    let port = addr.strip_prefix("127.0.0.1:")?.parse().ok()?;
    Some((slot, port))
}

fn port(cluster: &RedisCluster, i: usize) -> u16 {
    cluster.nodes()[i].port()
}

/// Logs how long a test's phases took, for the test output (`--nocapture`).
fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let start = Instant::now();
    let result = f();
    eprintln!("{what}: {:?}", start.elapsed());
    result
}

#[test]
fn three_masters_form_and_serve_keys() {
    let cluster = timed("start 3 masters", || RedisCluster::start(3, 0));
    assert_eq!(cluster.nodes().len(), 3);
    assert_eq!(cluster.master_indexes(), vec![0, 1, 2]);
    assert!(cluster.replica_indexes().is_empty());
    assert_eq!(
        cluster.seed_urls(),
        cluster
            .nodes()
            .iter()
            .map(|node| format!("redis://127.0.0.1:{}/", node.port()))
            .collect::<Vec<_>>()
    );
    for i in 0..3 {
        assert_eq!(cluster.node_id(i).len(), 40, "{}", cluster.logs());
        assert_eq!(cluster.master_of(i), None);
        let info = text(&cluster.nodes()[i].cmd(&["CLUSTER", "INFO"])).expect("CLUSTER INFO");
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
        assert!(info.contains("cluster_known_nodes:3"), "{info}");
    }
    // Slots are split evenly, in order.
    assert_eq!(cluster.master_of_slot(0), 0);
    assert_eq!(cluster.master_of_slot(5460), 0);
    assert_eq!(cluster.master_of_slot(5461), 1);
    assert_eq!(cluster.master_of_slot(CLUSTER_SLOTS - 1), 2);

    // Values from the CLUSTER KEYSLOT documentation; hash tags share a slot.
    assert_eq!(cluster.key_slot("somekey"), 11058);
    assert_eq!(
        cluster.key_slot("foo{hash_tag}"),
        cluster.key_slot("hash_tag")
    );

    let key = "redfour:lock:orders";
    let owner = cluster.master_of_slot(cluster.key_slot(key));
    assert_eq!(
        on(&cluster, owner, &["SET", key, "token"]).ok(),
        Some(redis::Value::Okay)
    );
    let read = on(&cluster, owner, &["GET", key]).expect("GET on the owner");
    assert_eq!(text(&read).as_deref(), Some("token"));
    for other in (0..3).filter(|i| *i != owner) {
        let moved = on(&cluster, other, &["GET", key]);
        assert_eq!(
            redirection(&moved, redis::ServerErrorKind::Moved),
            Some((cluster.key_slot(key), port(&cluster, owner))),
            "{moved:?}"
        );
    }
}

#[test]
fn masters_with_replicas_form() {
    let cluster = timed("start 3 masters + 3 replicas", || RedisCluster::start(3, 1));
    assert_eq!(cluster.master_indexes(), vec![0, 1, 2]);
    assert_eq!(cluster.replica_indexes(), vec![3, 4, 5]);
    for master in 0..3 {
        assert_eq!(cluster.master_of(master + 3), Some(master));
        let info = text(&cluster.nodes()[master + 3].cmd(&["INFO", "replication"]))
            .expect("INFO replication");
        assert!(info.contains("master_link_status:up"), "{info}");
        assert!(
            info.contains(&format!("master_port:{}", port(&cluster, master))),
            "{info}"
        );
    }

    // A write on a master reaches its replica.
    let key = "{replicated}key";
    let master = cluster.master_of_slot(cluster.key_slot(key));
    let replica = master + 3;
    cluster.nodes()[master].cmd(&["SET", key, "value"]);
    let mut conn = cluster.nodes()[replica].connection();
    redis::cmd("READONLY")
        .exec(&mut conn)
        .expect("READONLY on a replica");
    let replicated = wait_until(Duration::from_secs(10), || {
        redis::cmd("GET")
            .arg(key)
            .query::<Option<String>>(&mut conn)
            .ok()
            .flatten()
            .as_deref()
            == Some("value")
    });
    assert!(replicated, "{}", cluster.logs());
}

#[test]
fn migrate_slot_moves_the_keys() {
    let cluster = timed("start 3 masters", || RedisCluster::start(3, 0));
    let keys: Vec<String> = (0..250).map(|n| format!("{{moving}}key{n}")).collect();
    let slot = cluster.key_slot(&keys[0]);
    let source = cluster.master_of_slot(slot);
    let target = (source + 1) % 3;
    for key in &keys {
        cluster.nodes()[source].cmd(&["SET", key, key]);
    }

    timed("migrate_slot", || cluster.migrate_slot(slot, target));

    assert_eq!(cluster.master_of_slot(slot), target);
    let count = cluster.nodes()[source].cmd(&["CLUSTER", "COUNTKEYSINSLOT", &slot.to_string()]);
    assert_eq!(count, redis::Value::Int(0));
    for key in &keys {
        let value = on(&cluster, target, &["GET", key]).expect("GET on the new owner");
        assert_eq!(text(&value).as_deref(), Some(key.as_str()));
    }
    // Every other node sends clients to the new owner.
    for other in (0..3).filter(|i| *i != target) {
        let moved = on(&cluster, other, &["GET", &keys[0]]);
        assert_eq!(
            redirection(&moved, redis::ServerErrorKind::Moved),
            Some((slot, port(&cluster, target))),
            "node {other}: {moved:?}"
        );
    }
    // The neighbouring slots did not move.
    let next = (slot + 1) % CLUSTER_SLOTS;
    assert_ne!(cluster.master_of_slot(next), target);
}

#[test]
fn a_migrating_slot_answers_ask_for_missing_keys() {
    let cluster = timed("start 3 masters", || RedisCluster::start(3, 0));
    let present = "{half}present";
    let missing = "{half}missing";
    let slot = cluster.key_slot(present);
    let source = cluster.master_of_slot(slot);
    let target = (source + 2) % 3;
    cluster.nodes()[source].cmd(&["SET", present, "old"]);

    let migration = cluster.begin_migration(slot, target);
    assert_eq!(
        (migration.slot(), migration.source(), migration.target()),
        (slot, source, target)
    );
    // The slot is still the source's; it serves the key it has and redirects for the other.
    assert_eq!(cluster.master_of_slot(slot), source);
    let value = on(&cluster, source, &["GET", present]).expect("GET of a present key");
    assert_eq!(text(&value).as_deref(), Some("old"));
    let ask = on(&cluster, source, &["GET", missing]);
    assert_eq!(
        redirection(&ask, redis::ServerErrorKind::Ask),
        Some((slot, port(&cluster, target))),
        "{ask:?}"
    );
    // Without ASKING, the target still sends clients to the source.
    let moved = on(&cluster, target, &["GET", missing]);
    assert_eq!(
        redirection(&moved, redis::ServerErrorKind::Moved),
        Some((slot, port(&cluster, source))),
        "{moved:?}"
    );
    // With ASKING, a new key is created on the target.
    let mut conn = cluster.nodes()[target].connection();
    redis::cmd("ASKING").exec(&mut conn).expect("ASKING");
    redis::cmd("SET")
        .arg(missing)
        .arg("new")
        .exec(&mut conn)
        .expect("SET after ASKING");

    migration.move_keys();
    let ask = on(&cluster, source, &["GET", present]);
    assert_eq!(
        redirection(&ask, redis::ServerErrorKind::Ask),
        Some((slot, port(&cluster, target))),
        "the moved key is asked for on the target: {ask:?}"
    );

    timed("finish", || migration.finish());
    assert_eq!(cluster.master_of_slot(slot), target);
    for (key, expected) in [(present, "old"), (missing, "new")] {
        let value = on(&cluster, target, &["GET", key]).expect("GET after the migration");
        assert_eq!(text(&value).as_deref(), Some(expected));
    }
    let moved = on(&cluster, source, &["GET", missing]);
    assert_eq!(
        redirection(&moved, redis::ServerErrorKind::Moved),
        Some((slot, port(&cluster, target))),
        "{moved:?}"
    );
}

#[test]
fn failover_promotes_the_replica() {
    let cluster = timed("start 3 masters + 3 replicas", || RedisCluster::start(3, 1));
    let key = "{failover}key";
    let slot = cluster.key_slot(key);
    let old_master = cluster.master_of_slot(slot);
    let replica = old_master + 3;
    cluster.nodes()[old_master].cmd(&["SET", key, "kept"]);

    timed("failover", || cluster.failover(replica));

    assert_eq!(cluster.master_of_slot(slot), replica);
    assert_eq!(cluster.master_of(replica), None);
    assert_eq!(cluster.master_of(old_master), Some(replica));
    assert!(cluster.master_indexes().contains(&replica));
    assert!(cluster.replica_indexes().contains(&old_master));
    // A coordinated failover loses nothing.
    let value = on(&cluster, replica, &["GET", key]).expect("GET on the new master");
    assert_eq!(text(&value).as_deref(), Some("kept"));
    let moved = on(&cluster, old_master, &["GET", key]);
    assert_eq!(
        redirection(&moved, redis::ServerErrorKind::Moved),
        Some((slot, port(&cluster, replica))),
        "{moved:?}"
    );
}

#[test]
fn a_killed_master_is_replaced_and_rejoins_as_a_replica() {
    let mut cluster = timed("start 3 masters + 3 replicas", || RedisCluster::start(3, 1));
    let old_id = cluster.node_id(0);
    let old_port = port(&cluster, 0);

    cluster.kill(0);
    assert!(!cluster.nodes()[0].is_running());
    timed("automatic failover", || cluster.wait_healthy());
    assert_eq!(cluster.master_of_slot(0), 3);
    assert_eq!(cluster.master_indexes(), vec![1, 2, 3]);

    timed("restart", || cluster.restart(0));
    assert_eq!(port(&cluster, 0), old_port);
    let myid = text(&cluster.nodes()[0].cmd(&["CLUSTER", "MYID"]));
    assert_eq!(myid.as_deref(), Some(old_id.as_str()));
    assert_eq!(cluster.master_of(0), Some(3));
    assert_eq!(cluster.master_of_slot(0), 3);
}
