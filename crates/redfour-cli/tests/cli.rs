//! Tests of the built `redfour` binary against real redis-server processes: every command,
//! every outcome of the contract table, every exit status.
//!
//! Each test owns its server. Conditions are polled with deadlines ([`wait_until`]); the only
//! fixed waits are for time itself (a ttl that must pass while the lock stays held) and for
//! something that must *not* happen (a signal that must not be forwarded).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use redfour::redis::Value;
use redfour_test::{wait_until, RedisServer};
use serde_json::Value as Json;

/// Longest any single redfour invocation may take in these tests before the test fails.
const DEADLINE: Duration = Duration::from_secs(15);

/// `redfour` as the tests start it: with every signal at its default action, whatever this
/// test process inherited. A background job of a non-interactive shell ignores SIGINT and
/// SIGQUIT, `nohup` ignores SIGHUP, and redfour leaves a signal ignored at start ignored (on
/// purpose: `run_leaves_a_signal_ignored_at_start_ignored`), so a test sending one would wait
/// for an exit that never comes. `env --default-signal` (coreutils 8.31 and later) resets them
/// and execs redfour, so the pid is redfour's; without it, redfour starts as it is.
fn redfour() -> Command {
    static RESETS_SIGNALS: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let resets = *RESETS_SIGNALS.get_or_init(|| {
        Command::new("env")
            .args(["--default-signal", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|status| status.success())
    });
    let mut cmd = if resets {
        let mut env = Command::new("env");
        env.args(["--default-signal", env!("CARGO_BIN_EXE_redfour")]);
        env
    } else {
        Command::new(env!("CARGO_BIN_EXE_redfour"))
    };
    // The caller's environment must not pick the server or the namespace.
    cmd.env_remove("REDIS_URL")
        .env_remove("REDFOUR_NAMESPACE")
        .env_remove("REDFOUR_TLS_CA")
        .env_remove("REDFOUR_TOPOLOGY")
        .env_remove("REDFOUR_SERVICE")
        .env_remove("REDFOUR_MASTER_PASSWORD")
        .env_remove("REDFOUR_MASTER_USER")
        .env_remove("REDFOUR_LOG")
        .stdin(Stdio::null());
    cmd
}

/// `redfour --url <server> ARGS...`
fn cli(server: &RedisServer, args: &[&str]) -> Command {
    let mut cmd = redfour();
    cmd.arg("--url").arg(server.url()).args(args);
    cmd
}

/// What one finished invocation did.
#[derive(Debug)]
struct Ran {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    pid: u32,
    took: Duration,
}

impl Ran {
    fn code(&self) -> i32 {
        self.code
            .unwrap_or_else(|| panic!("killed by a signal: {self:?}"))
    }

    /// The single JSON line on stdout.
    fn json(&self) -> Json {
        let lines: Vec<&str> = self.stdout.lines().collect();
        assert_eq!(lines.len(), 1, "stdout must be exactly one line: {self:?}");
        serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    fn assert_code(&self, code: i32) -> &Self {
        assert_eq!(self.code(), code, "{self:?}");
        self
    }

    /// The reason printed on stderr: one line, starting with `redfour: `.
    fn assert_one_line_reason(&self) -> &Self {
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert_eq!(lines.len(), 1, "stderr must be one line: {self:?}");
        assert!(lines[0].starts_with("redfour: "), "{self:?}");
        self
    }
}

/// Waits for a spawned invocation, failing the test (and killing it) past `deadline`.
fn finish(child: Child, deadline: Duration) -> Ran {
    let pid = child.id();
    let started = Instant::now();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(deadline) {
        Ok(output) => {
            let Output {
                status,
                stdout,
                stderr,
            } = output.expect("wait for redfour");
            Ran {
                code: status.code(),
                stdout: String::from_utf8_lossy(&stdout).into_owned(),
                stderr: String::from_utf8_lossy(&stderr).into_owned(),
                pid,
                took: started.elapsed(),
            }
        }
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            // What it printed before it was killed, if its pipes close now.
            let output = match rx.recv_timeout(Duration::from_secs(2)) {
                Ok(Ok(output)) => format!(
                    "stdout: {:?}, stderr: {:?}",
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                ),
                _ => "its output is still held open by another process".to_owned(),
            };
            panic!("redfour (pid {pid}) still running after {deadline:?}; {output}");
        }
    }
}

fn spawn(mut cmd: Command) -> Child {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn redfour")
}

fn ok(cmd: Command) -> Ran {
    finish(spawn(cmd), DEADLINE)
}

fn acquire(server: &RedisServer, id: &str, ttl: &str) -> Ran {
    ok(cli(server, &["acquire", id, "--ttl", ttl]))
}

/// Takes the lock and returns its index.
fn hold(server: &RedisServer, id: &str, ttl: &str) -> i64 {
    let ran = acquire(server, id, ttl);
    ran.assert_code(0);
    ran.json()["index"].as_i64().expect("index")
}

fn status(server: &RedisServer, id: &str) -> Json {
    let ran = ok(cli(server, &["status", id]));
    ran.assert_code(0);
    ran.json()
}

fn is_held(server: &RedisServer, id: &str) -> bool {
    status(server, id)["held"] == Json::Bool(true)
}

fn get(server: &RedisServer, key: &str) -> Option<String> {
    match server.cmd(&["GET", key]) {
        Value::Nil => None,
        Value::BulkString(b) => Some(String::from_utf8(b).expect("utf-8")),
        other => panic!("GET {key}: {other:?}"),
    }
}

fn int(server: &RedisServer, args: &[&str]) -> i64 {
    match server.cmd(args) {
        Value::Int(i) => i,
        other => panic!("{args:?}: {other:?}"),
    }
}

/// How many times the server ran EVALSHA: each acquire attempt is one.
fn evalsha_calls(server: &RedisServer) -> u64 {
    let info = match server.cmd(&["INFO", "commandstats"]) {
        Value::BulkString(b) => String::from_utf8(b).expect("utf-8"),
        Value::VerbatimString { text, .. } => text,
        other => panic!("INFO: {other:?}"),
    };
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().expect("calls"))
}

fn keys(json: &Json) -> Vec<&str> {
    let mut keys: Vec<&str> = json
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    keys.sort_unstable();
    keys
}

/// A URL where nothing listens: a server's port after the server was stopped.
fn dead_url() -> (RedisServer, String) {
    let mut server = RedisServer::start();
    server.stop();
    let url = server.url();
    (server, url)
}

fn temp() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("redfour-cli-")
        .tempdir()
        .expect("tempdir")
}

fn path_arg(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `run x --ttl 1s --wait 1s -- touch MARKER`: the marker exists only if the command started.
fn run_touching(marker: &Path) -> Vec<&str> {
    vec![
        "run",
        "x",
        "--ttl",
        "1s",
        "--wait",
        "1s",
        "--",
        "touch",
        path_arg(marker),
    ]
}

fn wait_for_file(path: &Path) {
    assert!(
        wait_until(DEADLINE, || path.exists()),
        "{} never appeared",
        path.display()
    );
}

fn send_signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
}

// ---- help -------------------------------------------------------------------------------

#[test]
fn help_shows_the_exit_code_table() {
    let ran = ok({
        let mut c = redfour();
        c.arg("--help");
        c
    });
    ran.assert_code(0);
    for needle in [
        "EXIT STATUS",
        "\n  0 ",
        "\n  1 ",
        "\n  2 ",
        "\n  65 ",
        "\n  69 ",
        "\n  70 ",
        "\n  75 ",
        "128+N",
        "--url",
        "REDIS_URL",
        "--namespace",
        "REDFOUR_NAMESPACE",
        "acquire",
        "wait",
        "release",
        "renew",
        "status",
        "run",
        "list",
        "--quiet",
    ] {
        assert!(
            ran.stdout.contains(needle),
            "{needle:?} missing:\n{}",
            ran.stdout
        );
    }
    let run_help = ok({
        let mut c = redfour();
        c.args(["run", "--help"]);
        c
    });
    run_help.assert_code(0);
    for needle in ["--ttl", "--wait", "--grace", "REDFOUR_INDEX", "CMD"] {
        assert!(
            run_help.stdout.contains(needle),
            "{needle:?} missing:\n{}",
            run_help.stdout
        );
    }
}

#[test]
fn help_does_not_show_the_password_from_the_environment() {
    let ran = ok({
        let mut c = redfour();
        c.env("REDIS_URL", "redis://:hunter2@127.0.0.1:1")
            .arg("--help");
        c
    });
    ran.assert_code(0);
    assert!(!ran.stdout.contains("hunter2"), "{}", ran.stdout);
}

// ---- acquire ----------------------------------------------------------------------------

#[test]
fn acquire_succeeds_then_reports_the_holder() {
    let server = RedisServer::start();
    let first = acquire(&server, "x", "10s");
    first.assert_code(0);
    let json = first.json();
    assert_eq!(keys(&json), ["id", "index", "success", "ttl"], "{json}");
    assert_eq!(json["id"], "x");
    assert_eq!(json["success"], true);
    assert_eq!(json["ttl"], 10_000);
    let index = json["index"].as_i64().expect("index");
    assert!(index > 0, "{json}");

    // The lock outlives the process that took it.
    let pttl = int(&server, &["PTTL", "lock:x"]);
    assert!(pttl > 0 && pttl <= 10_000, "{pttl}");

    let second = acquire(&server, "x", "5s");
    second.assert_code(1);
    let json = second.json();
    assert_eq!(keys(&json), ["id", "index", "success", "ttl"], "{json}");
    assert_eq!(json["success"], false);
    assert_eq!(json["index"], -1);
    let ttl = json["ttl"].as_i64().expect("ttl");
    assert!(
        ttl > 0 && ttl <= 10_000,
        "the holder's remaining ttl: {json}"
    );
    assert!(second.stderr.is_empty(), "{second:?}");

    // Indexes keep increasing.
    let other = hold(&server, "y", "1s");
    assert!(other > index);
}

#[test]
fn namespace_comes_from_the_flag_or_the_environment() {
    let server = RedisServer::start();
    hold_in(&server, &["--namespace", "jobs"], "a");
    assert_eq!(int(&server, &["EXISTS", "jobs:a"]), 1);
    assert_eq!(int(&server, &["EXISTS", "lock:a"]), 0);
    assert!(get(&server, "jobsindex").is_some());

    let mut cmd = cli(&server, &["acquire", "b", "--ttl", "5s"]);
    cmd.env("REDFOUR_NAMESPACE", "env");
    ok(cmd).assert_code(0);
    assert_eq!(int(&server, &["EXISTS", "env:b"]), 1);

    // The URL from the environment, when --url is absent.
    let mut cmd = redfour();
    cmd.env("REDIS_URL", server.url())
        .args(["acquire", "c", "--ttl", "5s"]);
    ok(cmd).assert_code(0);
    assert_eq!(int(&server, &["EXISTS", "lock:c"]), 1);
}

fn hold_in(server: &RedisServer, global: &[&str], id: &str) {
    let mut cmd = cli(server, global);
    cmd.args(["acquire", id, "--ttl", "5s"]);
    ok(cmd).assert_code(0);
}

// ---- wait -------------------------------------------------------------------------------

#[test]
fn wait_acquires_after_another_process_releases() {
    let server = RedisServer::start();
    let index = hold(&server, "x", "30s");
    let before = evalsha_calls(&server);
    let waiter = spawn(cli(&server, &["wait", "x", "--ttl", "5s", "--wait", "20s"]));
    // Release only once the waiter has tried and found the lock held, so it must be woken.
    assert!(
        wait_until(DEADLINE, || evalsha_calls(&server) > before),
        "the waiter never tried"
    );
    let released = ok(cli(
        &server,
        &["release", "x", "--index", &index.to_string()],
    ));
    released.assert_code(0);
    let ran = finish(waiter, DEADLINE);
    ran.assert_code(0);
    let json = ran.json();
    assert_eq!(
        keys(&json),
        ["id", "immediate", "index", "success", "ttl"],
        "{json}"
    );
    assert_eq!(json["success"], true);
    assert_eq!(json["immediate"], false);
    assert_eq!(json["ttl"], 5_000);
    assert!(json["index"].as_i64().expect("index") > index, "{json}");
    // Woken by the release notice, not by the holder's 30 s ttl.
    assert!(ran.took < Duration::from_secs(10), "{ran:?}");
    assert!(is_held(&server, "x"));
}

/// `--fair=false` (or `REDFOUR_FAIR=false`) waits as Node redfour does: no queue entry, and
/// the release that wakes it is announced on the release channel; by default the waiter
/// queues.
#[test]
fn fair_false_waits_without_the_queue() {
    let server = RedisServer::start();
    for (how, queued) in [
        (None, true),
        (Some(("flag", "--fair=false")), false),
        (Some(("env", "false")), false),
    ] {
        let index = hold(&server, "x", "30s");
        let mut cmd = cli(&server, &["wait", "x", "--ttl", "5s", "--wait", "20s"]);
        match how {
            Some(("flag", flag)) => {
                cmd.arg(flag);
            }
            Some((_, value)) => {
                cmd.env("REDFOUR_FAIR", value);
            }
            None => {
                cmd.env_remove("REDFOUR_FAIR");
            }
        }
        let before = evalsha_calls(&server);
        let waiter = spawn(cmd);
        assert!(
            wait_until(DEADLINE, || evalsha_calls(&server) > before),
            "the waiter never tried ({how:?})"
        );
        assert!(
            wait_until(DEADLINE, || (int(&server, &["LLEN", "lock-queue:x"]) == 1)
                == queued),
            "queued should be {queued} ({how:?})"
        );
        ok(cli(
            &server,
            &["release", "x", "--index", &index.to_string()],
        ))
        .assert_code(0);
        let ran = finish(waiter, DEADLINE);
        ran.assert_code(0);
        assert!(ran.took < Duration::from_secs(10), "{how:?}: {ran:?}");
        let json = ran.json();
        ok(cli(
            &server,
            &["release", "x", "--index", &json["index"].to_string()],
        ))
        .assert_code(0);
    }
}

#[test]
fn wait_on_a_free_lock_is_immediate() {
    let server = RedisServer::start();
    let ran = ok(cli(&server, &["wait", "x", "--ttl", "5s"]));
    ran.assert_code(0);
    let json = ran.json();
    assert_eq!(json["success"], true);
    assert_eq!(json["immediate"], true);
}

#[test]
fn wait_exits_1_when_the_wait_runs_out() {
    let server = RedisServer::start();
    hold(&server, "x", "30s");
    let ran = ok(cli(
        &server,
        &["wait", "x", "--ttl", "5s", "--wait", "300ms"],
    ));
    ran.assert_code(1);
    let json = ran.json();
    assert_eq!(json["success"], false);
    assert_eq!(json["index"], -1);
    assert_eq!(json["immediate"], false);
    let ttl = json["ttl"].as_i64().expect("ttl");
    assert!(ttl > 0 && ttl <= 30_000, "{json}");
    assert!(ran.took >= Duration::from_millis(300), "{ran:?}");
    assert!(ran.took < Duration::from_secs(5), "{ran:?}");

    // --wait 0: one attempt.
    let ran = ok(cli(&server, &["wait", "x", "--ttl", "5s", "--wait", "0"]));
    ran.assert_code(1);
    assert_eq!(ran.json()["immediate"], false);
}

// ---- release ----------------------------------------------------------------------------

#[test]
fn release_outcomes() {
    let server = RedisServer::start();
    let index = hold(&server, "x", "30s");

    let conflict = ok(cli(
        &server,
        &["release", "x", "--index", &(index + 1).to_string()],
    ));
    conflict.assert_code(1);
    let json = conflict.json();
    assert_eq!(keys(&json), ["id", "index", "result", "success"], "{json}");
    assert_eq!(json["success"], false);
    assert_eq!(json["result"], "conflict");
    assert_eq!(json["index"], index, "the holder's index: {json}");
    assert!(is_held(&server, "x"));

    let released = ok(cli(
        &server,
        &["release", "x", "--index", &index.to_string()],
    ));
    released.assert_code(0);
    let json = released.json();
    assert_eq!(json["id"], "x");
    assert_eq!(json["success"], true);
    assert_eq!(json["result"], "released");
    assert_eq!(json["index"], index);
    assert_eq!(int(&server, &["EXISTS", "lock:x"]), 0);

    let expired = ok(cli(
        &server,
        &["release", "x", "--index", &index.to_string()],
    ));
    expired.assert_code(0);
    let json = expired.json();
    assert_eq!(json["success"], true);
    assert_eq!(json["result"], "expired");
    assert_eq!(json["index"], -1);
}

// ---- renew ------------------------------------------------------------------------------

#[test]
fn renew_outcomes() {
    let server = RedisServer::start();
    let index = hold(&server, "x", "2s");

    let renewed = ok(cli(
        &server,
        &["renew", "x", "--index", &index.to_string(), "--ttl", "1m"],
    ));
    renewed.assert_code(0);
    let json = renewed.json();
    assert_eq!(keys(&json), ["id", "index", "result", "success"], "{json}");
    assert_eq!(json["success"], true);
    assert_eq!(json["result"], "renewed");
    assert_eq!(json["index"], index);
    let pttl = int(&server, &["PTTL", "lock:x"]);
    assert!(pttl > 2_000 && pttl <= 60_000, "{pttl}");

    let conflict = ok(cli(
        &server,
        &[
            "renew",
            "x",
            "--index",
            &(index + 1).to_string(),
            "--ttl",
            "1m",
        ],
    ));
    conflict.assert_code(1);
    let json = conflict.json();
    assert_eq!(json["success"], false);
    assert_eq!(json["result"], "conflict");
    assert_eq!(json["index"], -1);

    server.cmd(&["DEL", "lock:x"]);
    let missing = ok(cli(
        &server,
        &["renew", "x", "--index", &index.to_string(), "--ttl", "1m"],
    ));
    missing.assert_code(1);
    let json = missing.json();
    assert_eq!(json["success"], false);
    assert_eq!(json["result"], "missing");
    assert_eq!(json["index"], -1);
    assert_eq!(
        int(&server, &["EXISTS", "lock:x"]),
        0,
        "renew must not create the lock"
    );
}

// ---- status -----------------------------------------------------------------------------

#[test]
fn status_of_a_free_and_a_held_lock() {
    let server = RedisServer::start();
    let free = status(&server, "x");
    assert_eq!(
        keys(&free),
        ["held", "holder", "id", "index", "ttl"],
        "{free}"
    );
    assert_eq!(free["id"], "x");
    assert_eq!(free["held"], false);
    assert_eq!(free["index"], -1);
    assert_eq!(free["ttl"], Json::Null);
    assert_eq!(free["holder"], serde_json::json!({}));

    let took = acquire(&server, "x", "10s");
    took.assert_code(0);
    let index = took.json()["index"].as_i64().expect("index");
    let held = status(&server, "x");
    assert_eq!(held["held"], true);
    assert_eq!(held["index"], index);
    let ttl = held["ttl"].as_i64().expect("ttl in ms");
    assert!(ttl > 0 && ttl <= 10_000, "{held}");
    let holder = &held["holder"];
    assert!(!holder["host"].as_str().expect("host").is_empty(), "{held}");
    assert_eq!(
        holder["pid"],
        took.pid.to_string(),
        "the acquiring process: {held}"
    );
    assert!(holder["acquired_at"].as_str().is_some(), "{held}");
    // The fields the README and `status --help` list, `description` absent when none was given.
    assert_eq!(
        keys(holder),
        ["acquired_at", "attempt", "host", "pid"],
        "{held}"
    );
    let mut help = redfour();
    help.args(["status", "--help"]);
    let help = ok(help);
    help.assert_code(0);
    for field in [
        "host",
        "pid",
        "acquired_at",
        "attempt",
        "description",
        "handoff",
    ] {
        assert!(help.stdout.contains(field), "{field}: {}", help.stdout);
    }
}

// ---- usage errors -----------------------------------------------------------------------

#[test]
fn usage_errors_exit_2() {
    // Nothing listens there: a command that got past validation would exit 69, not 2.
    let (_server, url) = dead_url();
    let ours: &[&[&str]] = &[
        &["acquire", "x", "--ttl", "abc"],
        &["acquire", "x", "--ttl", "0"],
        &["acquire", "x", "--ttl", "0s"],
        &["acquire", "x", "--ttl", "-5s"],
        &["acquire", "x", "--ttl", "10x"],
        &["acquire", "x", "--ttl", "1.5s"],
        &["acquire", "", "--ttl", "1s"],
        &["wait", "x", "--ttl", "1s", "--wait", "soon"],
        &["release", "x", "--index", "0"],
        &["release", "x", "--index", "abc"],
        &["release", "x", "--index", "-3"],
        &["renew", "x", "--index", "0", "--ttl", "1s"],
        &["renew", "x", "--index", "1", "--ttl", "0"],
        &["status", ""],
        &["run", "x", "--ttl", "0", "--", "true"],
        &["run", "x", "--ttl", "1s", "--grace", "later", "--", "true"],
        &["--namespace", "", "status", "x"],
    ];
    for args in ours {
        let mut cmd = redfour();
        cmd.arg("--url").arg(&url).args(*args);
        let ran = ok(cmd);
        ran.assert_code(2).assert_one_line_reason();
        assert!(ran.stdout.is_empty(), "{args:?}: {ran:?}");
    }
    // Rejected by clap itself (with its usage text), also exit 2.
    let clap_s: &[&[&str]] = &[
        &["acquire", "x"],
        &["acquire", "--ttl", "1s"],
        &["release", "x"],
        &["renew", "x", "--index", "1"],
        &["run", "x", "--ttl", "1s"],
        &["run", "x", "--ttl", "1s", "--"],
        &["frobnicate"],
        &[],
    ];
    for args in clap_s {
        let mut cmd = redfour();
        cmd.arg("--url").arg(&url).args(*args);
        let ran = ok(cmd);
        ran.assert_code(2);
        assert!(!ran.stderr.is_empty(), "{args:?}: {ran:?}");
    }
    // A URL that does not parse.
    let mut cmd = redfour();
    cmd.args(["--url", "nonsense", "status", "x"]);
    ok(cmd).assert_code(2).assert_one_line_reason();
}

// ---- Redis unreachable ------------------------------------------------------------------

#[test]
fn unreachable_redis_exits_69_quickly() {
    let (server, url) = dead_url();
    let dir = temp();
    let marker = dir.path().join("started");
    let port = format!("127.0.0.1:{}", server.port());
    let commands: Vec<Vec<&str>> = vec![
        vec!["acquire", "x", "--ttl", "1s"],
        vec!["wait", "x", "--ttl", "1s"],
        vec!["wait", "x", "--ttl", "1s", "--wait", "30s"],
        vec!["release", "x", "--index", "1"],
        vec!["renew", "x", "--index", "1", "--ttl", "1s"],
        vec!["status", "x"],
        vec!["run", "x", "--ttl", "1s", "--", "touch", path_arg(&marker)],
    ];
    for args in commands {
        let mut cmd = redfour();
        cmd.arg("--url").arg(&url).args(&args);
        let ran = ok(cmd);
        ran.assert_code(69).assert_one_line_reason();
        assert!(ran.stderr.contains(&port), "the address: {ran:?}");
        assert!(
            ran.took < Duration::from_secs(6),
            "{args:?} took {:?}",
            ran.took
        );
        assert!(ran.stdout.is_empty(), "{ran:?}");
    }
    assert!(!marker.exists(), "run must not start the command");
}

#[test]
fn the_password_is_not_shown_when_redis_is_unreachable() {
    let (server, url) = dead_url();
    let port = format!("127.0.0.1:{}", server.port());
    for userinfo in [":hunter2@", "locker:hunter2@", "hunter2@"] {
        let url = url.replace("redis://", &format!("redis://{userinfo}"));
        for args in every_command() {
            // With the library's diagnostics on too: they must not show it either.
            for log in [None, Some("trace")] {
                let mut cmd = redfour();
                cmd.args(["--url", &url]).args(&args);
                if let Some(level) = log {
                    cmd.env("REDFOUR_LOG", level);
                }
                let ran = ok(cmd);
                ran.assert_code(69);
                assert!(ran.stderr.contains(&port), "the address: {ran:?}");
                assert!(!ran.stderr.contains("hunter2"), "{args:?} {log:?}: {ran:?}");
                assert!(ran.stdout.is_empty(), "{ran:?}");
            }
        }
    }
}

#[test]
fn the_password_is_not_shown_when_it_is_wrong() {
    let server = RedisServer::start_with_args(&["--requirepass", "right-one"]);
    let url = server.url().replace("redis://", "redis://:hunter2@");
    for args in every_command() {
        let mut cmd = redfour();
        cmd.args(["--url", &url]).args(&args);
        let ran = ok(cmd);
        ran.assert_code(69).assert_one_line_reason();
        assert!(!ran.stderr.contains("hunter2"), "{args:?}: {ran:?}");
    }
}

/// A wrong password ends a `wait` or `run` without `--wait` at once (the library gives up on
/// a refused login; the CLI's first `PING` is not what stops it), with exit 69 and a message
/// that says the login was refused, not that Redis cannot be reached; the password shows
/// nowhere.
#[test]
fn a_wrong_password_ends_a_wait_without_limit_at_once_and_says_so() {
    let server = RedisServer::start_with_args(&["--requirepass", "right-one"]);
    let dir = temp();
    let marker = dir.path().join("started");
    for userinfo in [":hunter2@", "locker:hunter2@", ""] {
        let url = server
            .url()
            .replace("redis://", &format!("redis://{userinfo}"));
        for args in [
            vec!["wait", "x", "--ttl", "1s"],
            vec!["run", "x", "--ttl", "1s", "--", "touch", path_arg(&marker)],
        ] {
            let mut cmd = redfour();
            cmd.args(["--url", &url]).args(&args);
            let ran = ok(cmd);
            ran.assert_code(69).assert_one_line_reason();
            assert!(ran.took < Duration::from_secs(6), "{args:?}: {ran:?}");
            assert!(ran.stderr.contains("refused access"), "{args:?}: {ran:?}");
            assert!(ran.stderr.contains("password"), "{args:?}: {ran:?}");
            assert!(ran.stderr.contains(&server.port().to_string()), "{ran:?}");
            assert!(!ran.stderr.contains("hunter2"), "{args:?}: {ran:?}");
            assert!(ran.stdout.is_empty(), "{ran:?}");
        }
    }
    assert!(!marker.exists(), "run must not start the command");
}

/// A mistyped `--service` ends a `wait` without `--wait` at once with exit 69 and a message
/// naming the service nobody knows.
#[test]
fn a_mistyped_sentinel_service_ends_a_wait_without_limit_at_once() {
    let group = redfour_test::SentinelGroup::start(0, 1);
    let mut flags = topology_flags("sentinel", &group.sentinel_urls());
    let typo = format!("{}-typo", group.service());
    flags.extend(["--service".to_owned(), typo.clone()]);
    for args in [
        vec!["wait", "x", "--ttl", "1s"],
        vec!["run", "x", "--ttl", "1s", "--", "true"],
    ] {
        let ran = ok(cli_with(&flags, &args));
        ran.assert_code(69).assert_one_line_reason();
        assert!(ran.took < Duration::from_secs(6), "{args:?}: {ran:?}");
        assert!(
            ran.stderr.contains("unknown sentinel service"),
            "{args:?}: {ran:?}"
        );
        assert!(
            ran.stderr.contains(&format!("`{typo}`")),
            "{args:?}: {ran:?}"
        );
    }
}

/// The cause of an unreachable Redis ("Connection refused") is said once, whatever the
/// command and the topology.
#[test]
fn an_unreachable_redis_names_the_cause_once() {
    let (_servers, urls): (Vec<RedisServer>, Vec<String>) = (0..3).map(|_| dead_url()).unzip();
    let mut commands = every_command();
    commands.push(vec!["wait", "x", "--ttl", "1s"]);
    for flags in [
        topology_flags("standalone", &urls[..1]),
        topology_flags("redlock", &urls),
    ] {
        for args in &commands {
            let ran = ok(cli_with(&flags, args));
            ran.assert_code(69).assert_one_line_reason();
            assert_eq!(
                ran.stderr.matches("Connection refused").count(),
                1,
                "{flags:?} {args:?}: {ran:?}"
            );
        }
    }
}

/// What `ClientBuilder::build` rejects, the CLI no longer checks itself: its reason comes
/// through, one line, exit 2, before anything is sent (nothing listens at these URLs: a
/// command that got past the checks would exit 69). Moved here from the flags' unit tests,
/// which expected the CLI's own wording ("--namespace", "sentinel only", "takes one",
/// "--replica-acks", "--service"); the library's says the same.
#[test]
fn settings_the_library_rejects_exit_2_with_its_reason() {
    let (_a, a) = dead_url();
    let (_b, b) = dead_url();
    let dir = temp();
    let ca = dir.path().join("ca.pem");
    std::fs::write(
        &ca,
        "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let tls_a = a.replace("redis://", "rediss://");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--url", &a, "--namespace", ""],
            "namespace must not be empty",
        ),
        (
            vec!["--url", &a, "--master-password", "p"],
            "sentinel topology only",
        ),
        (
            vec![
                "--topology",
                "redlock",
                "--url",
                &a,
                "--master-password",
                "p",
            ],
            "sentinel topology only",
        ),
        (vec!["--url", &a, "--url", &b], "takes one address"),
        (
            vec!["--topology", "redlock", "--url", &a, "--replica-acks", "1"],
            "replica acknowledgements do not apply to Redlock",
        ),
        (
            vec!["--topology", "sentinel", "--url", &a, "--service", ""],
            "service name must not be empty",
        ),
        (
            vec![
                "--topology",
                "cluster",
                "--url",
                &tls_a,
                "--tls-ca",
                path_arg(&ca),
            ],
            "only supported for the standalone topology",
        ),
    ];
    for (global, says) in cases {
        for args in [vec!["status", "x"], vec!["wait", "x", "--ttl", "1s"]] {
            let mut cmd = redfour();
            cmd.args(&global).args(&args);
            let ran = ok(cmd);
            ran.assert_code(2).assert_one_line_reason();
            assert!(ran.stderr.contains(says), "{global:?}: {ran:?}");
            assert!(ran.stdout.is_empty(), "{ran:?}");
        }
    }
}

/// TCP URLs for `port` carrying `password` in the query string or fragment, which the redis
/// crate does not read but whose writer meant a secret (issue 10).
fn tcp_query_urls(port: u16, password: &str) -> Vec<String> {
    vec![
        format!("redis://127.0.0.1:{port}/?password={password}"),
        format!("redis://127.0.0.1:{port}/?protocol=resp3&pass={password}&PASSWORD={password}"),
        format!("redis://127.0.0.1:{port}/0#{password}"),
    ]
}

/// Unix-socket URLs for `socket` in every form the redis crate reads the password from: `pass`
/// in the query (percent-encoded name, repeated: the last wins), under each unix scheme.
fn unix_urls(socket: &str, password: &str) -> Vec<String> {
    vec![
        format!("unix://{socket}?pass={password}&db=9"),
        format!("redis+unix://{socket}?pass={password}"),
        format!("valkey+unix://{socket}?user=default&p%61ss={password}"),
        format!("unix:{socket}?pass=x&pass={password}&protocol=resp3"),
    ]
}

/// Runs every command with `url`, with and without the library's diagnostics on stderr
/// (`REDFOUR_LOG`), and checks that `secret` shows nowhere while `place` (where Redis is) does.
fn assert_never_shown(url: &str, secret: &str, place: &str, code: i32) {
    for args in every_command() {
        for log in [None, Some("trace")] {
            let mut cmd = redfour();
            cmd.args(["--url", url]).args(&args);
            if let Some(level) = log {
                cmd.env("REDFOUR_LOG", level);
            }
            let ran = ok(cmd);
            ran.assert_code(code);
            let what = format!("{url} {args:?} REDFOUR_LOG={log:?}");
            assert!(!ran.stderr.contains(secret), "{what}: {ran:?}");
            assert!(!ran.stdout.contains(secret), "{what}: {ran:?}");
            assert!(ran.stderr.contains(place), "{what}: the address: {ran:?}");
        }
    }
}

#[test]
fn query_string_and_unix_passwords_are_not_shown_when_redis_is_unreachable() {
    let (server, _) = dead_url();
    let port = format!("127.0.0.1:{}", server.port());
    for url in tcp_query_urls(server.port(), "Qu3ry-S3cret") {
        assert_never_shown(&url, "S3cret", &port, 69);
    }
    let dir = temp();
    let socket = dir.path().join("nobody-listens.sock");
    let socket = path_arg(&socket);
    for url in unix_urls(socket, "UnixS3cret") {
        assert_never_shown(&url, "S3cret", socket, 69);
    }
}

/// A password-protected server on a Unix socket: the password in the query logs in; a wrong
/// one exits 69 and is shown nowhere, nor is a password the redis crate does not read.
#[test]
fn query_string_and_unix_passwords_are_not_shown_when_they_are_wrong() {
    let server = RedisServer::start_unix_with_args(&["--requirepass", "Right-S3cret"]);
    let socket = server
        .unix_socket()
        .expect("a socket")
        .to_str()
        .expect("utf-8");
    for (n, url) in unix_urls(socket, "Right-S3cret").iter().enumerate() {
        let ran = ok({
            let mut cmd = redfour();
            cmd.args(["--url", url, "acquire", &format!("ok{n}"), "--ttl", "1s"]);
            cmd
        });
        ran.assert_code(0);
        assert!(!ran.stderr.contains("S3cret"), "{url}: {ran:?}");
    }
    for url in unix_urls(socket, "Wrong-S3cret") {
        assert_never_shown(&url, "S3cret", socket, 69);
    }
    let port = format!("127.0.0.1:{}", server.port());
    for url in tcp_query_urls(server.port(), "Wrong-S3cret") {
        assert_never_shown(&url, "S3cret", &port, 69);
    }
}

/// URLs that the redis crate rejects: exit 2, and the password shows nowhere, not even in the
/// redis crate's own reason (it quotes an invalid `protocol`).
#[test]
fn invalid_urls_do_not_show_the_password() {
    let urls = [
        "unix:///tmp/r/sock?pass=UnixS3cret&db=x",
        "redis+unix:///tmp/r/sock?pass=UnixS3cret&protocol=9",
        "unix:///tmp/r/sock?protocol=UnixS3cret",
        "redis://127.0.0.1:1/?password=S3cret&protocol=x",
        "redis://user:S3cret",
        "redis://:S3cret@127.0.0.1:1/not-a-db",
        "rediss://127.0.0.1:1/#S3cret",
        "S3cret",
    ];
    for url in urls {
        for log in [None, Some("trace")] {
            let mut cmd = redfour();
            cmd.args(["--url", url, "status", "x"]);
            if let Some(level) = log {
                cmd.env("REDFOUR_LOG", level);
            }
            let ran = ok(cmd);
            ran.assert_code(2).assert_one_line_reason();
            assert!(!ran.stderr.contains("S3cret"), "{url} {log:?}: {ran:?}");
            assert!(ran.stderr.contains("invalid redis URL"), "{url}: {ran:?}");
        }
    }
    // Every topology checks its addresses the same way.
    for topology in ["sentinel", "cluster", "redlock"] {
        let mut cmd = redfour();
        cmd.args(["--topology", topology, "--url", urls[0], "--url", urls[2]]);
        if topology == "sentinel" {
            cmd.args(["--service", "m"]);
        }
        let ran = ok({
            cmd.args(["status", "x"]);
            cmd
        });
        ran.assert_code(2).assert_one_line_reason();
        assert!(!ran.stderr.contains("S3cret"), "{topology}: {ran:?}");
    }
}

/// One invocation of every command that talks to Redis.
fn every_command() -> Vec<Vec<&'static str>> {
    vec![
        vec!["acquire", "x", "--ttl", "1s"],
        vec!["wait", "x", "--ttl", "1s", "--wait", "1s"],
        vec!["release", "x", "--index", "1"],
        vec!["renew", "x", "--index", "1", "--ttl", "1s"],
        vec!["status", "x"],
        vec!["run", "x", "--ttl", "1s", "--", "true"],
    ]
}

// ---- corrupt data -----------------------------------------------------------------------

#[test]
fn foreign_lock_key_exits_65_and_is_left_alone() {
    let server = RedisServer::start();
    server.cmd(&["SET", "lock:x", "foreign"]);
    let dir = temp();
    let marker = dir.path().join("started");
    let commands: Vec<Vec<&str>> = vec![
        vec!["acquire", "x", "--ttl", "1s"],
        vec!["wait", "x", "--ttl", "1s", "--wait", "1s"],
        vec!["release", "x", "--index", "1"],
        vec!["renew", "x", "--index", "1", "--ttl", "1s"],
        vec!["status", "x"],
        run_touching(&marker),
    ];
    for args in commands {
        let ran = ok(cli(&server, &args));
        ran.assert_code(65).assert_one_line_reason();
        assert!(ran.stdout.is_empty(), "{ran:?}");
        assert_eq!(
            get(&server, "lock:x").as_deref(),
            Some("foreign"),
            "{args:?}"
        );
        assert_eq!(int(&server, &["TTL", "lock:x"]), -1, "{args:?}");
    }
    assert!(!marker.exists(), "run must not start the command");
}

/// Issue 10, item 8: the hand-edited indexes of the report each get one answer from every
/// command. Those outside the one grammar (plain decimal, 1 to 2^53-1), and a valid index on a
/// hash without expiry, are corrupt: exit 65, untouched, even by `release --index 5`.
#[test]
fn hand_edited_indexes_get_one_answer_from_every_command() {
    let server = RedisServer::start();
    let dir = temp();
    let marker = dir.path().join("started");
    let snapshot = || {
        (
            server.cmd(&["DUMP", "lock:x"]),
            server.cmd(&["PEXPIRETIME", "lock:x"]),
        )
    };
    let corrupt = [
        ("1.5", true),
        ("0x10", true),
        ("99999999999999999999", true),
        (" 5", true),
        ("1e3", true),
        ("0", true),
        ("-5", true),
        ("5", false),
    ];
    for (index, expires) in corrupt {
        server.cmd(&["DEL", "lock:x"]);
        server.cmd(&["HSET", "lock:x", "index", index]);
        if expires {
            server.cmd(&["PEXPIRE", "lock:x", "600000"]);
        }
        let before = snapshot();
        let mut commands: Vec<Vec<&str>> = every_command();
        commands.push(vec!["release", "x", "--index", "5"]);
        commands.push(vec!["renew", "x", "--index", "5", "--ttl", "1s"]);
        commands.push(vec!["release", "x", "--index", "1000"]);
        commands.push(run_touching(&marker));
        for args in commands {
            let ran = ok(cli(&server, &args));
            ran.assert_code(65).assert_one_line_reason();
            assert!(ran.stdout.is_empty(), "{index:?} {args:?}: {ran:?}");
            assert_eq!(snapshot(), before, "{index:?} {args:?}: changed");
        }
    }
    assert!(!marker.exists(), "run must not start the command");
    assert_eq!(int(&server, &["EXISTS", "lockindex"]), 0);

    // A valid index held by someone else: held for every command.
    server.cmd(&["DEL", "lock:x"]);
    server.cmd(&["HSET", "lock:x", "index", "5"]);
    server.cmd(&["PEXPIRE", "lock:x", "600000"]);
    assert_eq!(status(&server, "x")["index"], 5);
    let ran = acquire(&server, "x", "1s");
    ran.assert_code(1);
    let ran = ok(cli(
        &server,
        &["wait", "x", "--ttl", "1s", "--wait", "100ms"],
    ));
    ran.assert_code(1);
    let ran = ok(cli(&server, &["release", "x", "--index", "4"]));
    ran.assert_code(1);
    assert_eq!(ran.json()["index"], 5, "release names the holder");
    let ran = ok(cli(&server, &["renew", "x", "--index", "4", "--ttl", "1s"]));
    ran.assert_code(1);
    assert_eq!(ran.json()["index"], -1, "renew answers -1, as Node does");
    let ran = ok(cli(&server, &["release", "x", "--index", "5"]));
    ran.assert_code(0);
    assert_eq!(int(&server, &["EXISTS", "lock:x"]), 0);
}

#[test]
fn corrupt_counter_exits_65_and_is_left_alone() {
    let server = RedisServer::start();
    server.cmd(&["SET", "lockindex", "notanumber"]);
    let ran = acquire(&server, "y", "1s");
    ran.assert_code(65).assert_one_line_reason();
    assert!(ran.stderr.contains("lock"), "names the key: {ran:?}");
    assert_eq!(get(&server, "lockindex").as_deref(), Some("notanumber"));
    assert_eq!(int(&server, &["EXISTS", "lock:y"]), 0);
}

// ---- run --------------------------------------------------------------------------------

#[test]
fn run_gives_the_child_its_index_and_releases_after() {
    let server = RedisServer::start();
    let ran = ok(cli(
        &server,
        &[
            "run",
            "x",
            "--ttl",
            "5s",
            "--",
            "sh",
            "-c",
            "echo \"$REDFOUR_ID $REDFOUR_INDEX\"",
        ],
    ));
    ran.assert_code(0);
    assert!(ran.stderr.is_empty(), "{ran:?}");
    let out = ran.stdout.trim();
    let (id, index) = out.split_once(' ').expect("two words");
    assert_eq!(id, "x");
    let index: i64 = index.parse().expect("numeric index");
    assert!(index > 0);
    // Released as soon as the child exited: the next holder gets a greater index.
    assert!(!is_held(&server, "x"));
    assert!(hold(&server, "x", "1s") > index);
}

#[test]
fn run_exits_with_the_child_status() {
    let server = RedisServer::start();
    let ran = ok(cli(
        &server,
        &["run", "x", "--ttl", "5s", "--", "sh", "-c", "exit 7"],
    ));
    ran.assert_code(7);
    assert!(!is_held(&server, "x"), "released after a failing child too");

    // Killed by a signal: 128 + N.
    let ran = ok(cli(
        &server,
        &["run", "x", "--ttl", "5s", "--", "sh", "-c", "kill -KILL $$"],
    ));
    ran.assert_code(137);
    assert!(!is_held(&server, "x"));
}

#[test]
fn run_of_a_missing_command_exits_127() {
    let server = RedisServer::start();
    let ran = ok(cli(
        &server,
        &[
            "run",
            "x",
            "--ttl",
            "5s",
            "--",
            "/nonexistent/redfour-test-command",
        ],
    ));
    ran.assert_code(127).assert_one_line_reason();
    assert!(
        !is_held(&server, "x"),
        "released when the command cannot start"
    );
}

#[test]
fn run_keeps_the_lock_alive_past_its_ttl() {
    let server = RedisServer::start();
    let dir = temp();
    let started = dir.path().join("started");
    let script = format!("touch '{}'; sleep 2", started.display());
    let runner = spawn(cli(
        &server,
        &["run", "job", "--ttl", "600ms", "--", "sh", "-c", &script],
    ));
    wait_for_file(&started);
    // What is tested is the passing of time itself: twice the 600 ms ttl, with no release.
    std::thread::sleep(Duration::from_millis(1200));
    let held = status(&server, "job");
    assert_eq!(held["held"], true, "renewed past its ttl: {held}");
    // The program's name, never its arguments (they may hold secrets; anyone who can read
    // the lock reads the description).
    let description = held["holder"]["description"].as_str().expect("description");
    assert_eq!(description, "redfour run sh", "{held}");
    acquire(&server, "job", "1s").assert_code(1);
    let ran = finish(runner, DEADLINE);
    ran.assert_code(0);
    assert!(ran.stderr.is_empty(), "{ran:?}");
    assert!(!is_held(&server, "job"));
}

#[test]
fn run_exits_75_when_the_lock_stays_held() {
    let server = RedisServer::start();
    hold(&server, "x", "30s");
    let dir = temp();
    let marker = dir.path().join("ran");
    let ran = ok(cli(
        &server,
        &[
            "run",
            "x",
            "--ttl",
            "5s",
            "--wait",
            "300ms",
            "--",
            "touch",
            path_arg(&marker),
        ],
    ));
    ran.assert_code(75).assert_one_line_reason();
    assert!(ran.took >= Duration::from_millis(300), "{ran:?}");
    assert!(!marker.exists(), "the command must not run");
    assert!(ran.stdout.is_empty());

    let ran = ok(cli(
        &server,
        &[
            "run",
            "x",
            "--ttl",
            "5s",
            "--wait",
            "0",
            "--",
            "touch",
            path_arg(&marker),
        ],
    ));
    ran.assert_code(75).assert_one_line_reason();
    assert!(ran.stderr.contains("held by"), "{ran:?}");
    assert!(!marker.exists(), "the command must not run");
}

#[test]
fn run_waits_for_the_holder_then_runs() {
    let server = RedisServer::start();
    let index = hold(&server, "x", "30s");
    let before = evalsha_calls(&server);
    let runner = spawn(cli(
        &server,
        &["run", "x", "--ttl", "5s", "--", "sh", "-c", "echo ran"],
    ));
    assert!(
        wait_until(DEADLINE, || evalsha_calls(&server) > before),
        "run never tried"
    );
    ok(cli(
        &server,
        &["release", "x", "--index", &index.to_string()],
    ))
    .assert_code(0);
    let ran = finish(runner, DEADLINE);
    ran.assert_code(0);
    assert_eq!(ran.stdout, "ran\n");
    // stderr is not a terminal here: no status line.
    assert!(ran.stderr.is_empty(), "{ran:?}");
}

/// A child that records SIGTERM in `term_file` and exits `term_exit` when it gets it. Its
/// `sleep` is in its process group and gets the SIGTERM too; the shell's "Terminated" report
/// of that goes to /dev/null, so that stderr holds redfour's lines only.
fn trapping_child(started: &Path, term_file: &Path, term_exit: i32) -> String {
    format!(
        "exec 2>/dev/null; trap 'echo TERM > \"{}\"; exit {term_exit}' TERM; touch \"{}\"; while true; do sleep 0.05; done",
        term_file.display(),
        started.display()
    )
}

#[test]
fn run_exits_70_and_stops_the_child_when_the_lease_is_lost() {
    let server = RedisServer::start();
    let dir = temp();
    let started = dir.path().join("started");
    let term = dir.path().join("term");
    let script = trapping_child(&started, &term, 0);
    let runner = spawn(cli(
        &server,
        &["run", "x", "--ttl", "900ms", "--", "sh", "-c", &script],
    ));
    wait_for_file(&started);
    // The lock vanishes (as after a Redis restart): the next renewal answers `missing`.
    assert_eq!(int(&server, &["DEL", "lock:x"]), 1);
    let ran = finish(runner, DEADLINE);
    ran.assert_code(70).assert_one_line_reason();
    assert!(ran.stderr.contains("lease"), "{ran:?}");
    assert_eq!(
        std::fs::read_to_string(&term)
            .expect("the child got SIGTERM")
            .trim(),
        "TERM"
    );
}

#[test]
fn run_kills_a_child_that_ignores_sigterm_after_the_grace() {
    let server = RedisServer::start();
    let dir = temp();
    let started = dir.path().join("started");
    let script = format!(
        "trap '' TERM; touch \"{}\"; while true; do sleep 0.05; done",
        started.display()
    );
    let runner = spawn(cli(
        &server,
        &[
            "run", "x", "--ttl", "600ms", "--grace", "200ms", "--", "sh", "-c", &script,
        ],
    ));
    wait_for_file(&started);
    server.cmd(&["DEL", "lock:x"]);
    let ran = finish(runner, DEADLINE);
    ran.assert_code(70).assert_one_line_reason();
    assert!(ran.stderr.contains("SIGKILL"), "{ran:?}");
}

#[test]
fn run_forwards_sigterm_to_the_child() {
    let server = RedisServer::start();
    let dir = temp();
    let started = dir.path().join("started");
    let term = dir.path().join("term");
    let script = trapping_child(&started, &term, 0);
    let runner = spawn(cli(
        &server,
        &["run", "x", "--ttl", "5s", "--", "sh", "-c", &script],
    ));
    wait_for_file(&started);
    send_signal(runner.id(), "-TERM");
    let ran = finish(runner, DEADLINE);
    ran.assert_code(0);
    assert_eq!(
        std::fs::read_to_string(&term).expect("forwarded").trim(),
        "TERM"
    );
    assert!(!is_held(&server, "x"));
}

#[test]
fn run_exits_143_when_the_forwarded_sigterm_kills_the_child() {
    let server = RedisServer::start();
    let dir = temp();
    let started = dir.path().join("started");
    let script = format!(
        "touch \"{}\"; while true; do sleep 0.05; done",
        started.display()
    );
    let runner = spawn(cli(
        &server,
        &["run", "x", "--ttl", "5s", "--", "sh", "-c", &script],
    ));
    wait_for_file(&started);
    send_signal(runner.id(), "-TERM");
    let ran = finish(runner, DEADLINE);
    ran.assert_code(143);
    assert!(!is_held(&server, "x"));
}

#[test]
fn run_leaves_a_signal_ignored_at_start_ignored() {
    // As under `nohup`: SIGHUP ignored from the start must neither stop redfour nor be
    // forwarded (the child would get it with its default action and die).
    let server = RedisServer::start();
    let dir = temp();
    let started = dir.path().join("started");
    let stop = dir.path().join("stop");
    let child = format!(
        "touch \"{}\"; while [ ! -e \"{}\" ]; do sleep 0.05; done; exit 5",
        started.display(),
        stop.display()
    );
    let outer = format!(
        "trap '' HUP; exec \"$0\" --url {} run x --ttl 5s -- sh -c \"$1\"",
        server.url()
    );
    // sh ignores SIGHUP, then becomes redfour (`exec` keeps ignored signals ignored).
    let mut sh = Command::new("sh");
    sh.args(["-c", &outer, env!("CARGO_BIN_EXE_redfour"), &child])
        .env_remove("REDIS_URL")
        .env_remove("REDFOUR_NAMESPACE")
        .stdin(Stdio::null());
    let runner = spawn(sh);
    wait_for_file(&started);
    send_signal(runner.id(), "-HUP");
    // Nothing must happen; give a forwarded signal ample time to arrive before moving on.
    std::thread::sleep(Duration::from_millis(300));
    std::fs::write(&stop, "").expect("stop file");
    let ran = finish(runner, DEADLINE);
    ran.assert_code(5);
}

#[test]
fn run_interrupted_while_waiting_does_not_start_the_command() {
    let server = RedisServer::start();
    hold(&server, "x", "30s");
    let dir = temp();
    let marker = dir.path().join("ran");
    let before = evalsha_calls(&server);
    let runner = spawn(cli(
        &server,
        &["run", "x", "--ttl", "5s", "--", "touch", path_arg(&marker)],
    ));
    assert!(wait_until(DEADLINE, || evalsha_calls(&server) > before));
    send_signal(runner.id(), "-INT");
    let ran = finish(runner, DEADLINE);
    ran.assert_code(130).assert_one_line_reason();
    assert!(!marker.exists());
}

// ---- run: the whole job, its watcher; interrupted waiters ---------------------------------

/// Whether process `pid` still runs: it exists and is not a zombie (an orphan's zombie may
/// never be reaped here: PID 1 of a container need not reap).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rfind(')')
                .and_then(|i| stat[i + 1..].split_whitespace().next())
                .unwrap_or("?");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// The pid a command wrote into `path`.
fn pid_in(path: &Path) -> u32 {
    wait_for_file(path);
    let ok = wait_until(DEADLINE, || {
        std::fs::read_to_string(path).is_ok_and(|s| s.ends_with('\n'))
    });
    assert!(ok, "{} was never written whole", path.display());
    std::fs::read_to_string(path)
        .expect("pid file")
        .trim()
        .parse()
        .expect("a pid")
}

/// Ends `pid` if a test failed before it did.
struct Reap(u32);

impl Drop for Reap {
    fn drop(&mut self) {
        if alive(self.0) {
            let _ = Command::new("kill")
                .args(["-KILL", &self.0.to_string()])
                .status();
        }
    }
}

/// A command whose child (a grandchild of redfour) writes its pid and outlives it by far.
fn with_grandchild(pid_file: &Path, then: &str) -> String {
    format!(
        "sleep 300 & echo $! > \"{}.tmp\"; mv \"{0}.tmp\" \"{0}\"; {then}",
        pid_file.display()
    )
}

#[test]
fn a_lost_lease_stops_the_commands_children_too() {
    let server = RedisServer::start();
    let dir = temp();
    let pid_file = dir.path().join("grandchild");
    let script = with_grandchild(&pid_file, "wait");
    let runner = spawn(cli(
        &server,
        &[
            "run", "x", "--ttl", "900ms", "--grace", "1s", "--", "sh", "-c", &script,
        ],
    ));
    let grandchild = pid_in(&pid_file);
    let _reap = Reap(grandchild);
    assert!(alive(grandchild));
    assert_eq!(int(&server, &["DEL", "lock:x"]), 1);
    let ran = finish(runner, DEADLINE);
    ran.assert_code(70).assert_one_line_reason();
    // The whole process group got SIGTERM with the command: nothing of the job is left.
    assert!(
        !alive(grandchild),
        "the command's child outlived the lost lease: {ran:?}"
    );
}

#[test]
fn run_stops_what_the_command_left_behind_before_the_release() {
    let server = RedisServer::start();
    let dir = temp();
    let pid_file = dir.path().join("straggler");
    let script = with_grandchild(&pid_file, "exit 3");
    let ran = ok(cli(
        &server,
        &[
            "run", "x", "--ttl", "5s", "--grace", "2s", "--", "sh", "-c", &script,
        ],
    ));
    let straggler = pid_in(&pid_file);
    let _reap = Reap(straggler);
    ran.assert_code(3);
    assert!(
        ran.stderr.contains("left processes running"),
        "a warning names what was stopped: {ran:?}"
    );
    // Checked at once: the release came after the group was empty.
    assert!(
        !alive(straggler),
        "a process of the job ran on after the release"
    );
    assert!(!is_held(&server, "x"));
}

#[test]
fn a_killed_redfour_does_not_leave_its_command_running() {
    let server = RedisServer::start();
    let dir = temp();
    let pid_file = dir.path().join("grandchild");
    let script = format!(
        "echo $$ > \"{}\"; {}",
        dir.path().join("child").display(),
        with_grandchild(&pid_file, "wait")
    );
    let runner = spawn(cli(
        &server,
        &[
            "run", "x", "--ttl", "3s", "--grace", "10s", "--", "sh", "-c", &script,
        ],
    ));
    let child = pid_in(&dir.path().join("child"));
    let grandchild = pid_in(&pid_file);
    let (_reap_child, _reap_grandchild) = (Reap(child), Reap(grandchild));
    send_signal(runner.id(), "-KILL");
    let killed_at = Instant::now();
    let ran = finish(runner, DEADLINE);
    assert_eq!(ran.code, None, "redfour was SIGKILLed: {ran:?}");
    // The watcher stops the job within a third of the ttl (1 s, shorter than --grace), well
    // before the lease could end; the margin is for a loaded machine.
    let gone = wait_until(Duration::from_secs(3), || {
        !alive(child) && !alive(grandchild)
    });
    assert!(
        gone,
        "the command ran on without its supervisor: child {} grandchild {}",
        alive(child),
        alive(grandchild)
    );
    assert!(killed_at.elapsed() < Duration::from_secs(3));
    assert!(
        ran.stderr.contains("ended while it ran"),
        "the watcher says why it stopped the command: {ran:?}"
    );
}

#[test]
fn run_forwards_signals_that_would_have_killed_redfour() {
    let server = RedisServer::start();
    for (sig, number) in [("-QUIT", 3), ("-USR1", 10), ("-ALRM", 14), ("-USR2", 12)] {
        let dir = temp();
        let pid_file = dir.path().join("child");
        let script = format!("echo $$ > \"{}\"; exec sleep 300", pid_file.display());
        let runner = spawn(cli(
            &server,
            &["run", "x", "--ttl", "5s", "--", "sh", "-c", &script],
        ));
        let child = pid_in(&pid_file);
        let _reap = Reap(child);
        send_signal(runner.id(), sig);
        let ran = finish(runner, DEADLINE);
        // redfour lived on, forwarded the signal, and reports how the command ended.
        ran.assert_code(128 + number);
        assert!(!alive(child), "{sig}: {ran:?}");
        assert!(!is_held(&server, "x"), "{sig}: released at once");
    }
}

#[test]
fn run_stores_the_program_name_not_its_arguments() {
    let server = RedisServer::start();
    let dir = temp();
    let started = dir.path().join("started");
    let stop = dir.path().join("stop");
    let script = format!(
        "touch \"{}\"; while [ ! -e \"{}\" ]; do sleep 0.05; done",
        started.display(),
        stop.display()
    );
    for (flags, expected) in [
        (&[][..], "redfour run sh"),
        (&["--description", "nightly export"][..], "nightly export"),
    ] {
        let _ = std::fs::remove_file(&started);
        let _ = std::fs::remove_file(&stop);
        let mut args = vec!["run", "x", "--ttl", "5s"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--", "sh", "-c", &script, "sh", "--token=hunter2"]);
        let runner = spawn(cli(&server, &args));
        wait_for_file(&started);
        let held = status(&server, "x");
        assert_eq!(held["holder"]["description"], expected, "{held}");
        assert!(!held.to_string().contains("hunter2"), "{held}");
        std::fs::write(&stop, "").expect("stop");
        finish(runner, DEADLINE).assert_code(0);
    }
    let long = "d".repeat(513);
    ok(cli(
        &server,
        &[
            "run",
            "x",
            "--ttl",
            "5s",
            "--description",
            &long,
            "--",
            "true",
        ],
    ))
    .assert_code(2)
    .assert_one_line_reason();
}

/// `acquire` and `wait` print the index, the only way to release the lock: when the answer
/// cannot be written, the lock is given back and they exit 74.
#[test]
fn an_answer_that_cannot_be_written_gives_the_lock_back() {
    let server = RedisServer::start();
    for command in ["acquire", "wait"] {
        let id = format!("full-{command}");
        let mut cmd = cli(&server, &[command, &id, "--ttl", "30s"]);
        cmd.stdout(
            std::fs::File::options()
                .write(true)
                .open("/dev/full")
                .expect("/dev/full"),
        )
        .stderr(Stdio::piped());
        let out = cmd.output().expect("runs");
        assert_eq!(
            out.status.code(),
            Some(74),
            "{command} > /dev/full: {out:?}"
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("was released"), "{stderr}");
        assert!(
            !is_held(&server, &id),
            "{command} > /dev/full kept the lock"
        );

        // stdout closed: a Rust program's writes to it vanish unless redfour notices.
        let id = format!("closed-{command}");
        let out = Command::new("sh")
            .args([
                "-c",
                "exec \"$0\" \"$@\" >&-",
                env!("CARGO_BIN_EXE_redfour"),
            ])
            .args(["--url", &server.url(), command, &id, "--ttl", "30s"])
            .env_remove("REDIS_URL")
            .env_remove("REDFOUR_NAMESPACE")
            .stdin(Stdio::null())
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(74), "{command} >&-: {out:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("stdout is closed"));
        assert!(!is_held(&server, &id), "{command} >&- kept the lock");
    }
    // `>/dev/null` is a choice: the lock is taken and the answer discarded.
    let out = cli(&server, &["acquire", "discarded", "--ttl", "30s"])
        .stdout(
            std::fs::File::options()
                .write(true)
                .open("/dev/null")
                .expect("/dev/null"),
        )
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(is_held(&server, "discarded"));
}

fn queue_len(server: &RedisServer, id: &str) -> i64 {
    int(server, &["LLEN", &format!("lock-queue:{id}")])
}

/// A waiter interrupted by a signal leaves the fair queue before it exits: the next release
/// hands the lock to the waiter behind it at once, not after the 5 s claim window of a
/// handoff to a process that is gone.
#[test]
fn an_interrupted_waiter_leaves_the_queue_before_exiting() {
    let server = RedisServer::start();
    let cases: [(&[&str], &str, i32); 4] = [
        (&["run", "k", "--ttl", "5s", "--", "true"], "-INT", 130),
        (&["run", "k", "--ttl", "5s", "--", "true"], "-TERM", 143),
        (&["wait", "k", "--ttl", "5s"], "-TERM", 143),
        (&["wait", "k", "--ttl", "5s", "--wait", "30s"], "-HUP", 129),
    ];
    for (args, sig, code) in cases {
        let index = hold(&server, "k", "30s");
        let first = spawn(cli(&server, args));
        assert!(
            wait_until(DEADLINE, || queue_len(&server, "k") == 1),
            "{args:?} never queued"
        );
        let second = spawn(cli(&server, &["wait", "k", "--ttl", "5s", "--wait", "20s"]));
        assert!(wait_until(DEADLINE, || queue_len(&server, "k") == 2));
        send_signal(first.id(), sig);
        let ran = finish(first, DEADLINE);
        ran.assert_code(code).assert_one_line_reason();
        // Checked at once, no polling: it left before it exited.
        assert_eq!(
            queue_len(&server, "k"),
            1,
            "{args:?} {sig}: the interrupted waiter is still queued"
        );
        let released = Instant::now();
        let ran = ok(cli(
            &server,
            &["release", "k", "--index", &index.to_string()],
        ));
        ran.assert_code(0);
        let waiter = finish(second, DEADLINE);
        waiter.assert_code(0);
        assert!(
            released.elapsed() < Duration::from_secs(2),
            "{args:?} {sig}: the next waiter got the lock {:?} after the release",
            released.elapsed()
        );
        let next = waiter.json()["index"].as_i64().expect("index");
        ok(cli(
            &server,
            &["release", "k", "--index", &next.to_string()],
        ))
        .assert_code(0);
    }
}

/// The status line needs a terminal: `script` gives the process one.
#[test]
fn run_shows_who_holds_the_lock_on_a_terminal() {
    if !has_script() {
        return;
    }
    let server = RedisServer::start();
    let index = hold(&server, "x", "30s");
    let dir = temp();
    let transcript: PathBuf = dir.path().join("transcript");
    let inner = format!(
        "{} --url {} run x --ttl 5s --wait 1200ms -- true",
        env!("CARGO_BIN_EXE_redfour"),
        server.url()
    );
    let cmd = on_a_terminal(&inner, &transcript);
    let ran = ok(cmd);
    ran.assert_code(75);
    let text = read_transcript(&transcript);
    // Its place in the queue too, once the first attempt has queued it.
    assert!(text.contains("waiting for lock x: "), "{text:?}");
    assert!(text.contains("held by "), "{text:?}");
    assert!(text.contains(&format!(" left (index {index})")), "{text:?}");
    assert!(text.contains("\x1b[2K"), "the line is erased: {text:?}");
}

#[test]
fn redfour_log_shows_the_library_events_on_stderr() {
    let server = redfour_test::RedisServer::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_redfour"))
        .args(["--url", &server.url(), "acquire", "logged", "--ttl", "5s"])
        .env("REDFOUR_LOG", "redfour=debug")
        .output()
        .expect("runs");
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("redfour.acquire"), "{stderr}");
    // stdout is still exactly one JSON line.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), 1, "{stdout}");
    assert!(stdout.starts_with('{'), "{stdout}");
}

/// The everyday commands on lock `x` through `cli` (a `redfour` command line with its
/// connection options): acquire, status, renew, then a waiter woken by the release, which
/// releases in turn. Returns the waiter's index.
fn acquire_status_renew_wait_release(
    server: &RedisServer,
    cli: impl Fn(&[&str]) -> Command,
) -> i64 {
    let acquired = ok(cli(&["acquire", "x", "--ttl", "30s"]));
    acquired.assert_code(0);
    let index = acquired.json()["index"].as_i64().expect("index");
    let status = ok(cli(&["status", "x"]));
    status.assert_code(0);
    assert_eq!(status.json()["index"], index);
    let index_arg = index.to_string();
    ok(cli(&["renew", "x", "--index", &index_arg, "--ttl", "30s"])).assert_code(0);

    let before = evalsha_calls(server);
    let waiter = spawn(cli(&["wait", "x", "--ttl", "5s", "--wait", "20s"]));
    assert!(
        wait_until(DEADLINE, || evalsha_calls(server) > before),
        "the waiter never tried"
    );
    ok(cli(&["release", "x", "--index", &index_arg])).assert_code(0);
    let waited = finish(waiter, DEADLINE);
    waited.assert_code(0);
    assert_eq!(waited.json()["immediate"], false, "{waited:?}");
    let second = waited.json()["index"].as_i64().expect("index");
    ok(cli(&["release", "x", "--index", &second.to_string()])).assert_code(0);
    second
}

// ---- TLS --------------------------------------------------------------------------------

/// The CA file of a TLS server, as `--tls-ca` takes it.
fn ca_path(server: &RedisServer) -> String {
    path_arg(&server.tls().expect("a TLS server").ca_path()).to_owned()
}

#[test]
fn tls_ca_trusts_a_private_ca_for_every_command() {
    let server = RedisServer::start_tls();
    let ca = ca_path(&server);
    let tls = |args: &[&str]| {
        let mut cmd = cli(&server, &["--tls-ca", &ca]);
        cmd.args(args);
        cmd
    };
    // A waiter over TLS gets the lock once the holder releases it.
    let second = acquire_status_renew_wait_release(&server, tls);

    // The CA from the environment, for `run`.
    let mut run = cli(
        &server,
        &[
            "run",
            "x",
            "--ttl",
            "5s",
            "--",
            "sh",
            "-c",
            "echo $REDFOUR_INDEX",
        ],
    );
    run.env("REDFOUR_TLS_CA", &ca);
    let ran = ok(run);
    ran.assert_code(0);
    assert!(
        ran.stdout.trim().parse::<i64>().expect("index") > second,
        "{ran:?}"
    );
    assert!(!is_held_over_tls(&server, &ca, "x"));
}

fn is_held_over_tls(server: &RedisServer, ca: &str, id: &str) -> bool {
    let ran = ok(cli(server, &["--tls-ca", ca, "status", id]));
    ran.assert_code(0);
    ran.json()["held"] == Json::Bool(true)
}

/// Without the CA (the system's roots only, or another server's CA), every command exits 69
/// quickly with one line that says why, and never shows the password.
#[test]
fn tls_without_trusting_the_ca_exits_69_quickly() {
    let server = RedisServer::start_tls_with_args(&["--requirepass", "hunter2"]);
    let other = RedisServer::start_tls();
    let other_ca = ca_path(&other);
    let url = server.url_with_password();
    for trust in [None, Some(other_ca.as_str())] {
        for args in every_command() {
            let mut cmd = redfour();
            cmd.args(["--url", &url]);
            if let Some(ca) = trust {
                cmd.args(["--tls-ca", ca]);
            }
            cmd.args(&args);
            let ran = ok(cmd);
            ran.assert_code(69).assert_one_line_reason();
            assert!(
                ran.stderr.contains("certificate"),
                "{args:?} {trust:?}: {ran:?}"
            );
            assert!(ran.stderr.contains(&server.port().to_string()), "{ran:?}");
            assert!(!ran.stderr.contains("hunter2"), "{ran:?}");
            assert!(
                ran.took < Duration::from_secs(6),
                "{args:?} took {:?}",
                ran.took
            );
            assert!(ran.stdout.is_empty(), "{ran:?}");
        }
    }
}

#[test]
fn unusable_tls_ca_exits_2() {
    let server = RedisServer::start_tls();
    let dir = temp();
    let not_pem = dir.path().join("key.pem");
    std::fs::write(
        &not_pem,
        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
    )
    .expect("write");
    let corrupt = dir.path().join("corrupt.pem");
    std::fs::write(
        &corrupt,
        "-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    let missing = dir.path().join("missing.pem");
    let plain_url = server.url().replace("rediss://", "redis://");
    let tls_url = server.url();
    let ca = ca_path(&server);
    let cases: [(&str, &str, &str); 4] = [
        (&tls_url, path_arg(&missing), "cannot read"),
        (
            &tls_url,
            path_arg(&not_pem),
            "no certificate in the TLS root certificates",
        ),
        (&tls_url, path_arg(&corrupt), "PEM"),
        (&plain_url, &ca, "rediss://"),
    ];
    for (url, file, needle) in cases {
        let mut cmd = redfour();
        cmd.args(["--url", url, "--tls-ca", file, "status", "x"]);
        let ran = ok(cmd);
        ran.assert_code(2).assert_one_line_reason();
        assert!(ran.stderr.contains(needle), "{file}: {ran:?}");
        assert!(
            ran.stderr.contains(&format!("--tls-ca `{file}`")),
            "the message names the file: {ran:?}"
        );
        assert!(ran.stdout.is_empty(), "{ran:?}");
    }
    // From the environment too.
    let mut cmd = redfour();
    cmd.env("REDFOUR_TLS_CA", &missing)
        .args(["--url", &tls_url, "status", "x"]);
    ok(cmd).assert_code(2).assert_one_line_reason();
}

#[test]
fn insecure_url_skips_certificate_verification() {
    let server = RedisServer::start_tls();
    let url = format!("{}/#insecure", server.url());
    let mut cmd = redfour();
    cmd.args(["--url", &url, "acquire", "x", "--ttl", "30s"]);
    let ran = ok(cmd);
    ran.assert_code(0);
    let index = ran.json()["index"].as_i64().expect("index");
    let mut cmd = redfour();
    cmd.args(["--url", &url, "release", "x", "--index", &index.to_string()]);
    ok(cmd).assert_code(0);
}

#[test]
fn help_documents_tls_ca() {
    let ran = ok({
        let mut c = redfour();
        c.arg("--help");
        c
    });
    ran.assert_code(0);
    for needle in ["--tls-ca", "REDFOUR_TLS_CA", "#insecure"] {
        assert!(
            ran.stdout.contains(needle),
            "{needle:?} missing:\n{}",
            ran.stdout
        );
    }
}

// ---- ACL --------------------------------------------------------------------------------

/// The minimal ACL rule for namespace `lock`; the same as in
/// `crates/redfour/tests/it/connection.rs` (where each command is explained) and the README.
const ACL_RULE: &str = "resetkeys ~lock* resetchannels &lock* &lock-release -@all \
    +ping +evalsha +script|load +hmget +subscribe +psubscribe +pubsub|numsub \
    +time +type +exists +pttl +hget +hgetall +hset +hdel +hexists +pexpire +set +del \
    +publish +rpush +lindex +lpop +lrem +llen";

#[test]
fn every_command_works_for_a_user_with_the_minimal_acl_rule() {
    let server = RedisServer::start();
    let mut setuser = vec!["ACL", "SETUSER", "locker", "reset", "on", ">locker-pw"];
    setuser.extend(ACL_RULE.split_whitespace());
    server.cmd(&setuser);
    let url = format!("redis://locker:locker-pw@127.0.0.1:{}/", server.port());
    let as_locker = |args: &[&str]| {
        let mut cmd = redfour();
        cmd.args(["--url", &url]).args(args);
        cmd
    };

    acquire_status_renew_wait_release(&server, as_locker);
    // `run` renews the lock (keep-alive) while its command runs past the ttl.
    let dir = temp();
    let marker = dir.path().join("ran");
    let ran = ok(as_locker(&[
        "run",
        "x",
        "--ttl",
        "300ms",
        "--",
        "sh",
        "-c",
        &format!("sleep 1 && touch {}", path_arg(&marker)),
    ]));
    ran.assert_code(0);
    assert!(marker.exists(), "{ran:?}");

    // Nothing was refused (`client|setinfo`, which the redis crate sends and ignores the
    // answer of, is refused and logged by Redis 7.2 and later).
    let log = match server.cmd(&["ACL", "LOG"]) {
        Value::Array(entries) => entries,
        other => panic!("ACL LOG: {other:?}"),
    };
    let refused: Vec<String> = log
        .iter()
        .map(|entry| format!("{entry:?}"))
        .filter(|entry| entry.contains("locker") && !entry.contains("client|setinfo"))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");
}

// ---- topologies ---------------------------------------------------------------------------

/// `redfour GLOBAL... ARGS...`
fn cli_with(global: &[String], args: &[&str]) -> Command {
    let mut cmd = redfour();
    cmd.args(global).args(args);
    cmd
}

/// `--topology NAME --url U1 --url U2 ...`
fn topology_flags(name: &str, urls: &[String]) -> Vec<String> {
    let mut flags = vec!["--topology".to_owned(), name.to_owned()];
    for url in urls {
        flags.push("--url".to_owned());
        flags.push(url.clone());
    }
    flags
}

/// `--topology sentinel --url S1 ... --service NAME` for the group's sentinels.
fn sentinel_flags(group: &redfour_test::SentinelGroup) -> Vec<String> {
    let mut flags = topology_flags("sentinel", &group.sentinel_urls());
    flags.extend(["--service".to_owned(), group.service().to_owned()]);
    flags
}

/// Spawns `redfour GLOBAL... run job --ttl TTL` whose command writes its `REDFOUR_INDEX` to
/// `DIR/started` and then runs until `DIR/done` exists; returns once the index is written,
/// with the child and the path of `done`.
fn run_until_done(global: &[String], ttl: &str, dir: &tempfile::TempDir) -> (Child, PathBuf) {
    let started = dir.path().join("started");
    let done = dir.path().join("done");
    // Written under another name and renamed, so that the file appears whole.
    let script = format!(
        "echo \"$REDFOUR_INDEX\" > {s}.tmp && mv {s}.tmp {s}; while [ ! -e {d} ]; do sleep 0.05; done",
        s = path_arg(&started),
        d = path_arg(&done)
    );
    let child = spawn(cli_with(
        global,
        &["run", "job", "--ttl", ttl, "--", "sh", "-c", &script],
    ));
    wait_for_file(&started);
    (child, done)
}

/// The one-shot commands and `run` with their exit statuses, the same on every topology.
fn every_command_works(global: &[String]) {
    let ran = ok(cli_with(global, &["acquire", "job", "--ttl", "10s"]));
    ran.assert_code(0);
    let index = ran.json()["index"].as_i64().expect("index");
    assert!(index > 0, "{ran:?}");
    ok(cli_with(global, &["acquire", "job", "--ttl", "10s"])).assert_code(1);
    let held = ok(cli_with(global, &["status", "job"]));
    held.assert_code(0);
    assert_eq!(held.json()["index"].as_i64(), Some(index), "{held:?}");
    ok(cli_with(
        global,
        &["wait", "job", "--ttl", "1s", "--wait", "200ms"],
    ))
    .assert_code(1);
    let i = index.to_string();
    ok(cli_with(
        global,
        &["renew", "job", "--index", &i, "--ttl", "10s"],
    ))
    .assert_code(0);
    ok(cli_with(global, &["release", "job", "--index", "1"])).assert_code(1);
    let released = ok(cli_with(global, &["release", "job", "--index", &i]));
    released.assert_code(0);
    assert_eq!(released.json()["result"], "released", "{released:?}");
    let free = ok(cli_with(global, &["status", "job"]));
    assert_eq!(free.json()["held"], false, "{free:?}");
    let ran = ok(cli_with(
        global,
        &[
            "run",
            "job",
            "--ttl",
            "5s",
            "--",
            "sh",
            "-c",
            "echo \"$REDFOUR_INDEX\"",
        ],
    ));
    ran.assert_code(0);
    let child_index: i64 = ran.stdout.trim().parse().expect("the child's index");
    assert!(child_index > index, "{ran:?}");
}

#[test]
fn every_command_works_on_a_cluster() {
    let cluster = redfour_test::RedisCluster::start(3, 0);
    every_command_works(&topology_flags("cluster", &cluster.seed_urls()[..1]));
    // The cluster layout: the lock's keys share the hash tag {lock:job}.
    let slot = cluster.key_slot("{lock:job}");
    let owner = &cluster.nodes()[cluster.master_of_slot(slot)];
    assert_eq!(owner.cmd(&["EXISTS", "{lock:job}:index"]), Value::Int(1));
}

/// Two processes on a cluster: a `wait` in one is woken by the release of a `run` in the other
/// (through the lock's sharded channels), long before the holder's ttl.
#[test]
fn a_wait_on_a_cluster_is_woken_by_another_process() {
    let cluster = redfour_test::RedisCluster::start(3, 0);
    let flags = topology_flags("cluster", &cluster.seed_urls());
    let dir = temp();
    let (holder, done) = run_until_done(&flags, "60s", &dir);
    let waiter = spawn(cli_with(
        &flags,
        &["wait", "job", "--ttl", "5s", "--wait", "30s"],
    ));
    // The waiter has queued (fair queue), so it is subscribed and has tried once.
    let owner = &cluster.nodes()[cluster.master_of_slot(cluster.key_slot("{lock:job}"))];
    assert!(
        wait_until(DEADLINE, || owner.cmd(&["EXISTS", "{lock:job}:queue"])
            == Value::Int(1)),
        "the waiter never queued"
    );
    let released = Instant::now();
    std::fs::write(&done, "").expect("write the done file");
    finish(holder, DEADLINE).assert_code(0);
    let ran = finish(waiter, DEADLINE);
    ran.assert_code(0);
    assert_eq!(ran.json()["success"], true, "{ran:?}");
    assert!(
        released.elapsed() < Duration::from_secs(5),
        "woken {:?} after the release",
        released.elapsed()
    );
}

#[test]
fn every_command_works_with_redlock_and_a_lost_quorum_exits_69() {
    let mut servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let flags = topology_flags("redlock", &urls);
    every_command_works(&flags);
    servers[0].stop();
    ok(cli_with(&flags, &["acquire", "other", "--ttl", "5s"])).assert_code(0);
    servers[1].stop();
    let ran = ok(cli_with(&flags, &["acquire", "third", "--ttl", "5s"]));
    ran.assert_code(69).assert_one_line_reason();
    assert!(ran.stderr.contains("quorum"), "{ran:?}");
}

/// Three Redlock masters and the flags that name them.
fn redlock_masters() -> (Vec<RedisServer>, Vec<String>) {
    let servers: Vec<RedisServer> = (0..3).map(|_| RedisServer::start()).collect();
    let urls: Vec<String> = servers.iter().map(RedisServer::url).collect();
    let flags = topology_flags("redlock", &urls);
    (servers, flags)
}

/// Stalls every client of `server` for `ms` (the test kit's own commands too).
fn stall(server: &RedisServer, ms: u64) {
    server.cmd(&["CLIENT", "PAUSE", &ms.to_string(), "ALL"]);
}

/// With one of three Redlock masters stalled, `--wait` is a bound for `wait` and `run` (they
/// took 4.0 and 4.5 s with `--wait 1s`), and a free lock with a short ttl is won at once, by
/// `wait` and by `acquire` (which answered "held by another" after the stalled master had
/// eaten the validity).
#[test]
fn redlock_with_a_stalled_master_keeps_the_wait_bound() {
    let (servers, flags) = redlock_masters();
    ok(cli_with(&flags, &["acquire", "held", "--ttl", "30s"])).assert_code(0);
    stall(&servers[2], 8_000);
    let ran = ok(cli_with(
        &flags,
        &["wait", "free", "--ttl", "300ms", "--wait", "1s"],
    ));
    ran.assert_code(0);
    assert_eq!(ran.json()["success"], true, "{ran:?}");
    assert!(ran.took < Duration::from_millis(1_000), "{ran:?}");
    let ran = ok(cli_with(&flags, &["acquire", "free2", "--ttl", "300ms"]));
    ran.assert_code(0);
    assert_eq!(ran.json()["success"], true, "{ran:?}");
    let ran = ok(cli_with(
        &flags,
        &["wait", "held", "--ttl", "300ms", "--wait", "1s"],
    ));
    ran.assert_code(1);
    assert!(ran.took < Duration::from_millis(1_800), "{ran:?}");
    let ran = ok(cli_with(
        &flags,
        &[
            "run", "held", "--ttl", "300ms", "--wait", "1s", "--", "true",
        ],
    ));
    ran.assert_code(75).assert_one_line_reason();
    assert!(ran.took < Duration::from_millis(1_800), "{ran:?}");
}

/// With one of three Redlock masters stalled, `run` keeps a short lease alive: a renewal is
/// decided by the two others, not held up by the stalled one past the lease it extends.
#[test]
fn redlock_run_keeps_a_short_lease_with_a_stalled_master() {
    let (servers, flags) = redlock_masters();
    let dir = temp();
    let started = dir.path().join("started");
    let script = format!("touch {}; sleep 1.5", path_arg(&started));
    let child = spawn(cli_with(
        &flags,
        &["run", "job", "--ttl", "300ms", "--", "sh", "-c", &script],
    ));
    wait_for_file(&started);
    stall(&servers[2], 3_000);
    let ran = finish(child, DEADLINE);
    ran.assert_code(0);
}

/// A lock that a majority of the masters granted only after its validity had run out is not
/// "held by another" (exit 1): it is won too late (exit 75), released, and nobody holds it.
#[test]
fn redlock_acquire_won_too_late_exits_75() {
    let (servers, flags) = redlock_masters();
    stall(&servers[2], 10_000);
    // The second master answers after ~350 ms: within the node timeout (500 ms), but long
    // after the validity of a 50 ms lock (48 ms).
    stall(&servers[1], 350);
    let ran = ok(cli_with(&flags, &["acquire", "slow", "--ttl", "50ms"]));
    ran.assert_code(75).assert_one_line_reason();
    assert!(ran.stdout.is_empty(), "{ran:?}");
    assert!(
        ran.stderr.contains("too late") && ran.stderr.contains("nobody holds it"),
        "{ran:?}"
    );
    assert!(
        wait_until(DEADLINE, || int(&servers[0], &["EXISTS", "lock:slow"]) == 0
            && int(&servers[1], &["EXISTS", "lock:slow"]) == 0),
        "the grants were not released"
    );
}

/// A ttl that the drift margin (1% + 2 ms) eats whole can never be held with Redlock: usage
/// error, from every command that acquires, rather than a sure failure (or a lucky `wait`).
#[test]
fn redlock_ttls_without_validity_exit_2() {
    let (_servers, flags) = redlock_masters();
    for args in [
        &["acquire", "tiny", "--ttl", "1ms"][..],
        &["acquire", "tiny", "--ttl", "2ms"],
        &["wait", "tiny", "--ttl", "1ms", "--wait", "1s"],
        &["run", "tiny", "--ttl", "1ms", "--", "true"],
    ] {
        let ran = ok(cli_with(&flags, args));
        ran.assert_code(2).assert_one_line_reason();
        assert!(ran.stderr.contains("too short for Redlock"), "{ran:?}");
    }
}

/// `run` holds a lock through `SENTINEL FAILOVER`: its renewals follow the master the
/// sentinels name, the command runs to its end, and the lock is released on the new master.
#[test]
fn run_survives_a_sentinel_failover() {
    let group = redfour_test::SentinelGroup::start(1, 3);
    let mut flags = sentinel_flags(&group);
    flags.extend(
        ["--replica-acks", "1", "--replica-ack-timeout", "2s"]
            .iter()
            .map(|s| s.to_string()),
    );
    // The whole contract first, through the sentinels.
    every_command_works(&flags);
    let dir = temp();
    let (child, done) = run_until_done(&flags, "4s", &dir);
    let index = std::fs::read_to_string(dir.path().join("started")).expect("index file");
    let index = index.trim().to_owned();
    let old = group.master_index();
    let new = group.failover();
    assert_ne!(old, new);
    let master = group.master();
    let stored = |m: &RedisServer| match m.cmd(&["HGET", "lock:job", "index"]) {
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        other => panic!("the new master lost the lock: {other:?}\n{}", group.logs()),
    };
    assert_eq!(stored(master), index);
    // Renewals reach the new master: its expiry moves forward.
    let pttl = |m: &RedisServer| match m.cmd(&["PTTL", "lock:job"]) {
        Value::Int(ms) => ms,
        other => panic!("PTTL: {other:?}"),
    };
    let first = pttl(master);
    assert!(
        wait_until(DEADLINE, || pttl(master) > first),
        "no renewal reached the new master\n{}",
        group.logs()
    );
    std::fs::write(&done, "").expect("write the done file");
    let ran = finish(child, DEADLINE);
    ran.assert_code(0);
    assert_eq!(
        master.cmd(&["EXISTS", "lock:job"]),
        Value::Int(0),
        "released on the new master: {ran:?}"
    );
}

/// The same tour on one server (`--topology standalone`, the default), which also shows that a
/// `wait` that gives up leaves the fair queue: the release after it frees the lock instead of
/// handing it to the process that is gone.
#[test]
fn every_command_works_standalone() {
    let server = RedisServer::start();
    every_command_works(&topology_flags("standalone", &[server.url()]));
}

/// A master with its own password behind sentinels without one: `REDFOUR_MASTER_PASSWORD`
/// (or `--master-password`) logs in to it; without it, exit 69; the password never shows.
#[test]
fn a_sentinel_master_with_its_own_password() {
    let group = redfour_test::SentinelGroup::start_with_password(0, 1, "m4ster-secret");
    let flags = sentinel_flags(&group);
    let ran = ok(cli_with(&flags, &["acquire", "job", "--ttl", "5s"]));
    ran.assert_code(69).assert_one_line_reason();
    let mut cmd = cli_with(&flags, &["acquire", "job", "--ttl", "5s"]);
    cmd.env("REDFOUR_MASTER_PASSWORD", "m4ster-secret");
    let ran = ok(cmd);
    ran.assert_code(0);
    assert!(!ran.stdout.contains("m4ster-secret") && !ran.stderr.contains("m4ster-secret"));
    let mut cmd = cli_with(&flags, &["--master-password", "wrong", "status", "job"]);
    cmd.env_remove("REDFOUR_MASTER_PASSWORD");
    let ran = ok(cmd);
    ran.assert_code(69);
    assert!(!ran.stderr.contains("wrong"), "{ran:?}");
    assert_eq!(
        group.master().cmd(&["EXISTS", "lock:job"]),
        Value::Int(1),
        "acquired on the master"
    );
}

// ---- observing locks ----------------------------------------------------------------------

/// The lines of stdout, each a JSON object.
fn json_lines(ran: &Ran) -> Vec<Json> {
    ran.stdout
        .lines()
        .map(|line| {
            serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {ran:?}"))
        })
        .collect()
}

/// The `--json` lines of `list`, by id.
fn listed(ran: &Ran) -> std::collections::BTreeMap<String, Json> {
    json_lines(ran)
        .into_iter()
        .map(|line| (line["id"].as_str().expect("an id").to_owned(), line))
        .collect()
}

/// Node redfour 1.0.5 (the npm package in `interop/`, driven by `interop/driver.js`) takes the
/// lock `id` on `server` for `ttl_ms` and exits; its index. `None` when `node` or the package
/// is missing (said on stderr), unless `REDFOUR_REQUIRE_NODE` is set, which makes it a failure.
fn node_acquire(server: &RedisServer, id: &str, ttl_ms: u64) -> Option<i64> {
    let interop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../interop");
    let has_node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success());
    if !has_node || !interop.join("node_modules/redfour/package.json").is_file() {
        let why = "`node` or interop/node_modules/redfour is missing (run `npm ci` in interop/)";
        assert!(
            std::env::var_os("REDFOUR_REQUIRE_NODE").is_none_or(|v| v.is_empty()),
            "REDFOUR_REQUIRE_NODE is set, but {why}"
        );
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            format!("SKIPPED the Node redfour holder: {why}\n").as_bytes(),
        );
        return None;
    }
    let command = serde_json::json!({"op": "acquire", "id": id, "ttl": ttl_ms}).to_string();
    let out = Command::new("node")
        .args(["driver.js", &server.url(), "lock", &command])
        .current_dir(&interop)
        .stdin(Stdio::null())
        .output()
        .expect("node runs");
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let answer: Json = stdout
        .lines()
        .filter_map(|line| serde_json::from_str::<Json>(line).ok())
        .find(|line| line["op"] == "acquire")
        .unwrap_or_else(|| panic!("no answer from Node: {out:?}"));
    assert_eq!(answer["success"], true, "{answer}");
    Some(answer["index"].as_i64().expect("Node's index"))
}

/// `run ID --ttl 60s [ARGS...] -- sh -c ...` whose command writes its `REDFOUR_INDEX` to
/// `DIR/started` and runs until `DIR/done` exists: returns once it holds the lock, with the
/// child, its index and the path of `done`.
fn hold_with_run(cmd: Command, dir: &tempfile::TempDir) -> (Child, i64, PathBuf) {
    let started = dir.path().join("started");
    let done = dir.path().join("done");
    let script = format!(
        "echo \"$REDFOUR_INDEX\" > {s}.tmp && mv {s}.tmp {s}; while [ ! -e {d} ]; do sleep 0.05; done",
        s = path_arg(&started),
        d = path_arg(&done)
    );
    let mut cmd = cmd;
    cmd.args(["--", "sh", "-c", &script]);
    let child = spawn(cmd);
    wait_for_file(&started);
    let index = std::fs::read_to_string(&started)
        .expect("the index")
        .trim()
        .parse()
        .expect("a number");
    (child, index, done)
}

/// `list` and `list --json` with nothing held, then with a `run` holder and its description,
/// a queued waiter, a Node redfour holder and a foreign key: every lock with its holder,
/// index, ttl, time held and waiters; the foreign key listed (exit 0, not 65) and left alone.
#[test]
fn list_shows_holders_waiters_node_locks_and_foreign_keys() {
    let server = RedisServer::start();
    let empty = ok(cli(&server, &["list"]));
    empty.assert_code(0);
    assert_eq!(
        empty.stdout, "ID  KIND  INDEX  TTL  HELD FOR  WAITERS  HOLDER\n",
        "{empty:?}"
    );
    let empty = ok(cli(&server, &["list", "--json"]));
    empty.assert_code(0);
    assert_eq!(empty.stdout, "", "{empty:?}");

    let dir = temp();
    let (holder, index, done) = hold_with_run(
        cli(
            &server,
            &[
                "run",
                "job",
                "--ttl",
                "60s",
                "--description",
                "nightly report",
            ],
        ),
        &dir,
    );
    let waiter = spawn(cli(
        &server,
        &["wait", "job", "--ttl", "5s", "--wait", "30s"],
    ));
    assert!(
        wait_until(DEADLINE, || queue_len(&server, "job") == 1),
        "the waiter never queued"
    );
    let node_index = node_acquire(&server, "from-node", 30_000);
    server.cmd(&["SET", "lock:odd", "x"]);

    let ran = ok(cli(&server, &["list", "--json"]));
    ran.assert_code(0);
    assert!(ran.stderr.is_empty(), "{ran:?}");
    let locks = listed(&ran);
    let mut ids = vec!["job", "odd"];
    if node_index.is_some() {
        ids.insert(0, "from-node");
    }
    assert_eq!(locks.keys().map(String::as_str).collect::<Vec<_>>(), ids);
    let job = &locks["job"];
    assert_eq!(
        keys(job),
        [
            "held_for_ms",
            "holder",
            "id",
            "index",
            "kind",
            "ttl",
            "waiters"
        ]
    );
    assert_eq!(job["kind"], "lock");
    assert_eq!(job["index"].as_i64(), Some(index));
    assert_eq!(job["waiters"], 1);
    let ttl = job["ttl"].as_u64().expect("a ttl");
    assert!(ttl > 0 && ttl <= 60_000, "{job}");
    assert!(
        job["held_for_ms"].as_u64().expect("time held") < 60_000,
        "{job}"
    );
    assert_eq!(job["holder"]["pid"].as_u64(), Some(u64::from(holder.id())));
    assert_eq!(job["holder"]["description"], "nightly report");
    let host = job["holder"]["host"].as_str().expect("a host").to_owned();
    assert!(!host.is_empty());
    if let Some(node_index) = node_index {
        let node = &locks["from-node"];
        assert_eq!(
            (&node["kind"], node["index"].as_i64()),
            (&Json::from("lock"), Some(node_index))
        );
        assert_eq!(
            (&node["holder"], &node["held_for_ms"]),
            (&Json::Null, &Json::Null),
            "{node}"
        );
        assert_eq!(node["waiters"], 0);
    }
    let odd = &locks["odd"];
    assert_eq!(odd["kind"], "foreign");
    for field in ["index", "ttl", "held_for_ms", "holder", "waiters"] {
        assert_eq!(odd[field], Json::Null, "{odd}");
    }
    assert_eq!(get(&server, "lock:odd").as_deref(), Some("x"), "left alone");

    // The table: a header and a row per key, in aligned columns.
    let ran = ok(cli(&server, &["list"]));
    ran.assert_code(0);
    let lines: Vec<&str> = ran.stdout.lines().collect();
    assert_eq!(lines.len(), ids.len() + 1, "{ran:?}");
    let kind_at = lines[0].find("KIND").expect("a KIND column");
    let holder_at = lines[0].find("HOLDER").expect("a HOLDER column");
    for line in &lines[1..] {
        assert!(
            line[kind_at..].starts_with("lock ") || line[kind_at..].starts_with("foreign "),
            "{line:?} in {ran:?}"
        );
    }
    let row = |id: &str| {
        *lines
            .iter()
            .find(|l| l.starts_with(&format!("{id} ")))
            .expect("a row")
    };
    assert_eq!(
        &row("job")[holder_at..],
        format!("{host}:{} \"nightly report\"", holder.id())
    );
    assert!(row("job").contains(&index.to_string()));
    assert_eq!(&row("odd")[holder_at..], "a string, not a hash");
    if node_index.is_some() {
        assert_eq!(
            &row("from-node")[holder_at..],
            "not recorded (Node redfour?)"
        );
    }

    std::fs::write(&done, "").expect("write the done file");
    finish(holder, DEADLINE).assert_code(0);
    finish(waiter, DEADLINE).assert_code(0);
}

#[test]
fn list_exits_69_when_redis_is_unreachable() {
    let (_server, url) = dead_url();
    for args in [&["list"][..], &["list", "--json"]] {
        let mut cmd = redfour();
        cmd.args(["--url", &url]).args(args);
        let ran = ok(cmd);
        ran.assert_code(69).assert_one_line_reason();
        assert!(ran.stdout.is_empty(), "{ran:?}");
        assert!(ran.stderr.contains("list the locks"), "{ran:?}");
    }
}

#[test]
fn list_shows_every_master_of_a_cluster() {
    let cluster = redfour_test::RedisCluster::start(3, 0);
    let flags = topology_flags("cluster", &cluster.seed_urls()[..1]);
    let mut indexes = std::collections::BTreeMap::new();
    let mut masters = std::collections::BTreeSet::new();
    for n in 0..9 {
        let id = format!("job-{n}");
        let ran = ok(cli_with(&flags, &["acquire", &id, "--ttl", "60s"]));
        ran.assert_code(0);
        indexes.insert(id.clone(), ran.json()["index"].as_i64().expect("index"));
        masters.insert(cluster.master_of_slot(cluster.key_slot(&format!("{{lock:{id}}}"))));
    }
    assert_eq!(masters.len(), 3, "9 locks spread over the 3 masters");
    let waiter = spawn(cli_with(
        &flags,
        &["wait", "job-0", "--ttl", "5s", "--wait", "30s"],
    ));
    let queue = "{lock:job-0}:queue";
    let owner = &cluster.nodes()[cluster.master_of_slot(cluster.key_slot(queue))];
    assert!(
        wait_until(DEADLINE, || owner.cmd(&["LLEN", queue]) == Value::Int(1)),
        "the waiter never queued"
    );

    let ran = ok(cli_with(&flags, &["list", "--json"]));
    ran.assert_code(0);
    let locks = listed(&ran);
    assert_eq!(
        locks.keys().collect::<Vec<_>>(),
        indexes.keys().collect::<Vec<_>>(),
        "the locks, and not their counters or queues: {ran:?}"
    );
    for (id, lock) in &locks {
        assert_eq!(lock["kind"], "lock");
        assert_eq!(lock["index"].as_i64(), Some(indexes[id]));
        assert_eq!(lock["waiters"], u64::from(id == "job-0"), "{lock}");
        assert!(lock["holder"]["pid"].is_u64(), "{lock}");
    }
    let table = ok(cli_with(&flags, &["list"]));
    table.assert_code(0);
    assert_eq!(table.stdout.lines().count(), 10, "{table:?}");

    let index = indexes["job-0"].to_string();
    ok(cli_with(&flags, &["release", "job-0", "--index", &index])).assert_code(0);
    finish(waiter, DEADLINE).assert_code(0);
}

/// `script` gives `wait` a terminal (80 columns unless told: `stty` widens it); `TERM` is set,
/// since `indicatif` draws nothing on a `dumb` terminal or without one.
fn on_a_terminal(inner: &str, transcript: &Path) -> Command {
    let mut cmd = Command::new("script");
    cmd.args([
        "-q",
        "-e",
        "-c",
        &format!("stty cols 200 rows 40; {inner}"),
        path_arg(transcript),
    ])
    .env("TERM", "xterm")
    .env_remove("REDIS_URL")
    .env_remove("REDFOUR_NAMESPACE");
    cmd
}

fn has_script() -> bool {
    let found = Command::new("script").arg("--version").output().is_ok();
    if !found {
        eprintln!("skipped: `script` (util-linux) is not installed");
    }
    found
}

fn read_transcript(path: &Path) -> String {
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|mut f| f.read_to_string(&mut text))
        .expect("transcript");
    text
}

/// Behind a `run` holder and two waiters, a `wait` on a terminal shows who holds the lock and
/// that it is 3rd in line, and erases the line when it gives up; with `--quiet` it shows
/// nothing.
#[test]
fn wait_shows_the_holder_and_its_place_in_the_queue_on_a_terminal() {
    if !has_script() {
        return;
    }
    let server = RedisServer::start();
    let dir = temp();
    let (holder, index, done) = hold_with_run(
        cli(
            &server,
            &[
                "run",
                "job",
                "--ttl",
                "60s",
                "--description",
                "nightly report",
            ],
        ),
        &dir,
    );
    let status = status(&server, "job");
    let host = status["holder"]["host"]
        .as_str()
        .expect("a host")
        .to_owned();
    let mut waiters = Vec::new();
    for place in 1..=2 {
        waiters.push(spawn(cli(
            &server,
            &["wait", "job", "--ttl", "5s", "--wait", "30s"],
        )));
        assert!(
            wait_until(DEADLINE, || queue_len(&server, "job") == place),
            "waiter {place} never queued"
        );
    }
    let bin = env!("CARGO_BIN_EXE_redfour");
    let url = server.url();
    let transcript = dir.path().join("transcript");
    let inner = format!("{bin} --url {url} wait job --ttl 5s --wait 2500ms");
    let ran = ok(on_a_terminal(&inner, &transcript));
    ran.assert_code(1);
    let text = read_transcript(&transcript);
    let expected = format!(
        "waiting for lock job: 3rd in line; held by {host}:{} \"nightly report\" for ",
        holder.id()
    );
    assert!(text.contains(&expected), "{expected:?} not in {text:?}");
    assert!(text.contains(&format!(" left (index {index})")), "{text:?}");
    assert!(text.contains("\x1b[2K"), "the line is erased: {text:?}");

    let quiet = dir.path().join("quiet");
    let inner = format!("{bin} --url {url} wait job --ttl 5s --wait 1500ms --quiet");
    ok(on_a_terminal(&inner, &quiet)).assert_code(1);
    let text = read_transcript(&quiet);
    assert!(!text.contains("waiting for lock"), "{text:?}");

    std::fs::write(&done, "").expect("write the done file");
    finish(holder, DEADLINE).assert_code(0);
    for waiter in waiters {
        finish(waiter, DEADLINE).assert_code(0);
    }
}

/// `list` for a Redis user with the minimal ACL rule and what listing adds to it.
#[test]
fn list_works_for_a_user_with_the_acl_rule_and_its_additions() {
    let server = RedisServer::start();
    let mut setuser = vec!["ACL", "SETUSER", "lister", "reset", "on", ">lister-pw"];
    setuser.extend(ACL_RULE.split_whitespace());
    setuser.extend(["+scan", "+hstrlen", "+lpos"]);
    server.cmd(&setuser);
    let url = format!("redis://lister:lister-pw@127.0.0.1:{}/", server.port());
    let as_lister = |args: &[&str]| {
        let mut cmd = redfour();
        cmd.args(["--url", &url]).args(args);
        cmd
    };
    ok(as_lister(&["acquire", "x", "--ttl", "30s"])).assert_code(0);
    let ran = ok(as_lister(&["list", "--json"]));
    ran.assert_code(0);
    assert_eq!(json_lines(&ran).len(), 1, "{ran:?}");
    let log = match server.cmd(&["ACL", "LOG"]) {
        Value::Array(entries) => entries,
        other => panic!("ACL LOG: {other:?}"),
    };
    let refused: Vec<String> = log
        .iter()
        .map(|entry| format!("{entry:?}"))
        .filter(|entry| entry.contains("lister") && !entry.contains("client|setinfo"))
        .collect();
    assert!(refused.is_empty(), "{refused:#?}");

    // Without the additions: refused, 69, and said so.
    let mut setuser = vec!["ACL", "SETUSER", "narrow", "reset", "on", ">narrow-pw"];
    setuser.extend(ACL_RULE.split_whitespace());
    server.cmd(&setuser);
    let mut cmd = redfour();
    cmd.args([
        "--url",
        &format!("redis://narrow:narrow-pw@127.0.0.1:{}/", server.port()),
        "list",
    ]);
    let ran = ok(cmd);
    ran.assert_code(69).assert_one_line_reason();
    assert!(ran.stderr.contains("refused access"), "{ran:?}");
}
