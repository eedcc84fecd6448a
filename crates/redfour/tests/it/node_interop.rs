//! Interoperability with Node redfour 1.0.5, the npm package this library ports.
//!
//! Each test starts its own `redis-server` and a Node process running `interop/driver.js`, which
//! drives the unmodified npm package (pinned in `interop/package-lock.json`) with JSON lines on
//! stdin and answers with one JSON object per line. Rust and Node then share one Redis and one
//! namespace: holders block each other, releases on either side wake waiters on the other,
//! fencing indexes keep increasing across both, and each side releases the other's locks by index.
//!
//! Needs `node` on `PATH` and `npm ci` run in `interop/`. Without them the tests print why and
//! pass, unless `REDFOUR_REQUIRE_NODE` is set (CI sets it), in which case they fail.

use std::collections::{BTreeMap, VecDeque};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redfour::{Client, ReleaseOutcome};
use redfour_test::{wait_until_async, RedisServer};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// How long any single answer from the Node driver may take before the test fails.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// The bound on "woken promptly". The fallbacks that would wake a waiter which missed the release
/// notice fire much later: Node retries after the holder's remaining ttl (about 20 s here) or at
/// the end of its 5 s `waitTtl`; the Rust waiters poll every 60 s at most and give up after 10 s.
/// A notice takes milliseconds; the rest of the margin is for a loaded CI machine.
const PROMPT: Duration = Duration::from_secs(2);

/// The holder's ttl in the wake-up tests: far longer than [`PROMPT`], so that only a release
/// notice can explain a prompt wake-up.
const LONG_TTL: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// Finding Node and the npm package
// ---------------------------------------------------------------------------------------------

struct NodeSetup {
    node: PathBuf,
    interop: PathBuf,
}

/// `node` and `interop/node_modules/redfour`, or `None` (after saying why) when the tests should
/// be skipped. Panics instead of skipping when `REDFOUR_REQUIRE_NODE` is set.
fn node_setup() -> Option<NodeSetup> {
    // crates/redfour -> the workspace root.
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate lives in crates/redfour");
    let interop = root.join("interop");
    let package = interop.join("node_modules/redfour/package.json");
    let node = find_on_path("node");
    let missing = match (&node, package.is_file()) {
        (Some(_), true) => None,
        (None, _) => Some("`node` is not on PATH".to_owned()),
        (Some(_), false) => Some(format!(
            "{} is missing (run `npm ci` in {})",
            package.display(),
            interop.display()
        )),
    };
    if let Some(why) = missing {
        let required = std::env::var_os("REDFOUR_REQUIRE_NODE").is_some_and(|v| !v.is_empty());
        if required {
            panic!("REDFOUR_REQUIRE_NODE is set, but {why}");
        }
        // Straight to the process's stderr: the test harness captures `eprintln!` of passing
        // tests, and a skip nobody sees is worse than no test.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED Node interop test: {why}. Set REDFOUR_REQUIRE_NODE=1 to make this a failure."
        );
        return None;
    }
    let manifest = std::fs::read_to_string(&package).unwrap_or_default();
    assert!(
        manifest.contains("\"version\": \"1.0.5\""),
        "{} is not redfour 1.0.5; run `npm ci` in {}",
        package.display(),
        interop.display()
    );
    Some(NodeSetup {
        node: node?,
        interop,
    })
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

// ---------------------------------------------------------------------------------------------
// The driver's output: flat JSON objects
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    /// Kept as written, so that big integers are compared digit for digit.
    Num(String),
    Bool(bool),
    Null,
}

/// One line of driver output.
#[derive(Debug, Clone)]
struct Msg {
    raw: String,
    fields: BTreeMap<String, Val>,
}

impl Msg {
    fn parse(raw: &str) -> Result<Msg, String> {
        let fields = FlatJson {
            s: raw.as_bytes(),
            i: 0,
        }
        .object()?;
        Ok(Msg {
            raw: raw.to_owned(),
            fields,
        })
    }

    fn str(&self, key: &str) -> Option<&str> {
        match self.fields.get(key) {
            Some(Val::Str(s)) => Some(s),
            _ => None,
        }
    }

    fn num(&self, key: &str) -> Option<&str> {
        match self.fields.get(key) {
            Some(Val::Num(n)) => Some(n),
            _ => None,
        }
    }

    fn i64(&self, key: &str) -> i64 {
        self.num(key)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("`{key}` is not an integer in {}", self.raw))
    }

    fn bool(&self, key: &str) -> bool {
        match self.fields.get(key) {
            Some(Val::Bool(b)) => *b,
            _ => panic!("`{key}` is not a boolean in {}", self.raw),
        }
    }

    /// The answer to a command that succeeded on the Node side (no `error` field).
    fn ok(self) -> Msg {
        assert!(
            !self.fields.contains_key("error"),
            "the Node driver reported an error: {}",
            self.raw
        );
        self
    }
}

/// A parser for the one shape the driver prints: an object of strings, numbers, booleans and
/// nulls. The test crate has no JSON dependency, and this is all it needs.
struct FlatJson<'a> {
    s: &'a [u8],
    i: usize,
}

impl FlatJson<'_> {
    fn object(mut self) -> Result<BTreeMap<String, Val>, String> {
        let mut fields = BTreeMap::new();
        self.expect(b'{')?;
        if self.peek() == Some(b'}') {
            self.i += 1;
        } else {
            loop {
                let key = self.string()?;
                self.expect(b':')?;
                let value = self.value()?;
                fields.insert(key, value);
                match self.next() {
                    Some(b',') => continue,
                    Some(b'}') => break,
                    other => return Err(self.unexpected(other)),
                }
            }
        }
        self.skip_ws();
        if self.i != self.s.len() {
            return Err(format!("trailing text at byte {}", self.i));
        }
        Ok(fields)
    }

    fn skip_ws(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_whitespace) {
            self.i += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.i += 1;
        Some(b)
    }

    fn expect(&mut self, want: u8) -> Result<(), String> {
        match self.next() {
            Some(b) if b == want => Ok(()),
            other => Err(self.unexpected(other)),
        }
    }

    fn unexpected(&self, got: Option<u8>) -> String {
        match got {
            Some(b) => format!("unexpected `{}` at byte {}", b as char, self.i),
            None => "unexpected end of line".to_owned(),
        }
    }

    fn value(&mut self) -> Result<Val, String> {
        match self.peek() {
            Some(b'"') => self.string().map(Val::Str),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.i;
                while self
                    .s
                    .get(self.i)
                    .is_some_and(|b| b"+-.eE0123456789".contains(b))
                {
                    self.i += 1;
                }
                let raw = std::str::from_utf8(&self.s[start..self.i]).map_err(|e| e.to_string())?;
                Ok(Val::Num(raw.to_owned()))
            }
            _ => {
                for (word, val) in [
                    ("true", Val::Bool(true)),
                    ("false", Val::Bool(false)),
                    ("null", Val::Null),
                ] {
                    if self.s[self.i..].starts_with(word.as_bytes()) {
                        self.i += word.len();
                        return Ok(val);
                    }
                }
                Err(format!(
                    "unsupported value at byte {} (nested values are not expected)",
                    self.i
                ))
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let b = *self.s.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match b {
                b'"' => break,
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("unterminated escape")?;
                    self.i += 1;
                    let c = match e {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let mut unit = self.hex4()?;
                            if (0xD800..0xDC00).contains(&unit)
                                && self.s[self.i..].starts_with(b"\\u")
                            {
                                self.i += 2;
                                let low = self.hex4()?;
                                unit = 0x10000
                                    + ((unit - 0xD800) << 10)
                                    + (low.wrapping_sub(0xDC00) & 0x3FF);
                            }
                            char::from_u32(unit).unwrap_or(char::REPLACEMENT_CHARACTER)
                        }
                        other => return Err(format!("bad escape `\\{}`", other as char)),
                    };
                    let mut buf = [0; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                _ => out.push(b),
            }
        }
        String::from_utf8(out).map_err(|e| e.to_string())
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self.s.get(self.i..self.i + 4).ok_or("short \\u escape")?;
        self.i += 4;
        let digits = std::str::from_utf8(digits).map_err(|e| e.to_string())?;
        u32::from_str_radix(digits, 16).map_err(|e| e.to_string())
    }
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).expect("a test duration fits in u64 milliseconds")
}

// ---------------------------------------------------------------------------------------------
// The Node driver process
// ---------------------------------------------------------------------------------------------

/// A running `node interop/driver.js URL NAMESPACE`, killed on drop.
struct NodeDriver {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Lines read while looking for another one.
    backlog: VecDeque<Msg>,
    /// Everything sent and received, for failure messages.
    transcript: Vec<String>,
    stderr: Arc<Mutex<String>>,
    next_tag: u64,
}

impl NodeDriver {
    /// Starts the driver and waits until it is connected and subscribed to the release channel.
    async fn start(setup: &NodeSetup, url: &str, namespace: &str) -> NodeDriver {
        let mut child = Command::new(&setup.node)
            .arg("driver.js")
            .arg(url)
            .arg(namespace)
            .current_dir(&setup.interop)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", setup.node.display()));
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let stderr = Arc::new(Mutex::new(String::new()));
        tokio::spawn({
            let stderr = Arc::clone(&stderr);
            async move {
                let mut buf = [0; 4096];
                while let Ok(n @ 1..) = stderr_pipe.read(&mut buf).await {
                    let text = String::from_utf8_lossy(&buf[..n]);
                    stderr
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_str(&text);
                }
            }
        });
        let mut driver = NodeDriver {
            child,
            stdin,
            stdout,
            backlog: VecDeque::new(),
            transcript: Vec::new(),
            stderr,
            next_tag: 0,
        };
        driver
            .expect("the ready event", |m| m.str("event") == Some("ready"))
            .await;
        driver
    }

    /// What the driver said and printed so far, for failure messages.
    fn context(&self) -> String {
        let stderr = self.stderr.lock().unwrap_or_else(|p| p.into_inner());
        format!(
            "--- driver transcript ---\n{}\n--- driver stderr ---\n{}",
            self.transcript.join("\n"),
            stderr
        )
    }

    async fn send(&mut self, line: String) {
        self.transcript.push(format!("> {line}"));
        let written = async {
            self.stdin.write_all(line.as_bytes()).await?;
            self.stdin.write_all(b"\n").await?;
            self.stdin.flush().await
        }
        .await;
        if let Err(e) = written {
            panic!("cannot write to the Node driver: {e}\n{}", self.context());
        }
    }

    /// Sends a command with a fresh tag; returns the tag to look for its answer.
    async fn send_command(&mut self, fields: &str) -> String {
        self.next_tag += 1;
        let tag = format!("t{}", self.next_tag);
        self.send(format!("{{\"tag\":{},{fields}}}", json_str(&tag)))
            .await;
        tag
    }

    /// The first line (from the backlog, then from the driver) matching `pred`; the others are
    /// kept for later. Panics after [`ANSWER_TIMEOUT`].
    async fn expect(&mut self, what: &str, pred: impl Fn(&Msg) -> bool) -> Msg {
        if let Some(pos) = self.backlog.iter().position(&pred) {
            return self.backlog.remove(pos).expect("position is in range");
        }
        let deadline = tokio::time::Instant::now() + ANSWER_TIMEOUT;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.stdout.next_line()).await {
                Ok(Ok(Some(line))) => line,
                Ok(Ok(None)) => panic!(
                    "the Node driver exited while we waited for {what}\n{}",
                    self.context()
                ),
                Ok(Err(e)) => panic!("cannot read from the Node driver: {e}\n{}", self.context()),
                Err(_) => panic!(
                    "no {what} from the Node driver within {ANSWER_TIMEOUT:?}\n{}",
                    self.context()
                ),
            };
            self.transcript.push(format!("< {line}"));
            let msg = Msg::parse(&line).unwrap_or_else(|e| {
                panic!("unparsable driver output ({e}): {line}\n{}", self.context())
            });
            if msg.str("event") == Some("error") {
                panic!("the Node driver reported an error\n{}", self.context());
            }
            if pred(&msg) {
                return msg;
            }
            self.backlog.push_back(msg);
        }
    }

    /// The answer to the command sent with `tag`.
    async fn answer(&mut self, tag: &str) -> Msg {
        let msg = self
            .expect(&format!("the answer to {tag}"), |m| {
                m.str("tag") == Some(tag)
            })
            .await;
        msg.ok()
    }

    /// Node's `acquireLock(id, ttl)`.
    async fn acquire(&mut self, id: &str, ttl: Duration) -> Msg {
        let tag = self
            .send_command(&format!(
                "\"op\":\"acquire\",\"id\":{},\"ttl\":{}",
                json_str(id),
                millis(ttl)
            ))
            .await;
        self.answer(&tag).await
    }

    /// Starts Node's `waitAcquireLock(id, ttl, waitTtl)`; returns the tag of its answer.
    async fn start_wait(&mut self, id: &str, ttl: Duration, wait: Duration) -> String {
        self.send_command(&format!(
            "\"op\":\"wait\",\"id\":{},\"ttl\":{},\"waitTtl\":{}",
            json_str(id),
            millis(ttl),
            millis(wait)
        ))
        .await
    }

    /// Waits until a `waitAcquireLock` on `id` has failed an attempt and listens for a release.
    async fn waiting(&mut self, id: &str) {
        self.expect(&format!("the waiting event for {id}"), |m| {
            m.str("event") == Some("waiting") && m.str("id") == Some(id)
        })
        .await;
    }

    /// Node's `releaseLock({id, index})`.
    async fn release(&mut self, id: &str, index: i64) -> Msg {
        let tag = self
            .send_command(&format!(
                "\"op\":\"release\",\"id\":{},\"index\":{index}",
                json_str(id)
            ))
            .await;
        self.answer(&tag).await
    }

    /// Asks the driver to quit its Redis clients and checks that it exits cleanly.
    async fn quit(mut self) {
        self.send("{\"op\":\"quit\"}".to_owned()).await;
        self.expect("the bye event", |m| m.str("event") == Some("bye"))
            .await;
        match tokio::time::timeout(ANSWER_TIMEOUT, self.child.wait()).await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => panic!("the Node driver exited with {status}\n{}", self.context()),
            Ok(Err(e)) => panic!("cannot wait for the Node driver: {e}\n{}", self.context()),
            Err(_) => panic!(
                "the Node driver did not exit within {ANSWER_TIMEOUT:?} after quitting\n{}",
                self.context()
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers on the Rust and Redis side
// ---------------------------------------------------------------------------------------------

fn rust_client(server: &RedisServer, namespace: &str) -> Client {
    Client::builder(server.url())
        .namespace(namespace)
        .build()
        .expect("a valid client configuration")
}

/// The counter key `{ns}index`, as an integer.
fn counter(server: &RedisServer, namespace: &str) -> i64 {
    let key = format!("{namespace}index");
    redis::from_redis_value(server.cmd(&["GET", &key]))
        .unwrap_or_else(|e| panic!("{key} is not an integer: {e}\n{}", server.log()))
}

/// The server's clock in microseconds (`TIME`).
fn server_micros(server: &RedisServer) -> i64 {
    let (secs, micros): (i64, i64) = redis::from_redis_value(server.cmd(&["TIME"]))
        .unwrap_or_else(|e| panic!("unexpected TIME reply: {e}"));
    secs * 1_000_000 + micros
}

/// How many scripts the server has run by `EVALSHA` or `EVAL` (`INFO commandstats`).
fn script_calls(server: &RedisServer) -> u64 {
    let info: String = redis::from_redis_value(server.cmd(&["INFO", "commandstats"]))
        .unwrap_or_else(|e| panic!("unexpected INFO reply: {e}"));
    info.lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| l.split(['=', ',']).nth(1)?.parse::<u64>().ok())
        .sum()
}

// ---------------------------------------------------------------------------------------------
// The tests
// ---------------------------------------------------------------------------------------------

/// A lock held by Rust is held for Node too: Node's `acquireLock` answers `success: false` with
/// the holder's remaining ttl, and leaves the lock alone. Uses the default namespace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_holder_blocks_node() {
    let Some(setup) = node_setup() else { return };
    let server = RedisServer::start();
    let locks = rust_client(&server, redfour::DEFAULT_NAMESPACE);
    let mut node = NodeDriver::start(&setup, &server.url(), redfour::DEFAULT_NAMESPACE).await;

    let guard = locks
        .lock("token-refresh")
        .ttl(Duration::from_secs(10))
        .acquire()
        .await
        .expect("Rust acquires a free lock");
    let before = locks.status("token-refresh").await.expect("status");
    let answer = node.acquire("token-refresh", Duration::from_secs(5)).await;
    let after = locks.status("token-refresh").await.expect("status");

    assert!(!answer.bool("success"), "{}", answer.raw);
    assert_eq!(answer.i64("index"), -1, "{}", answer.raw);
    let node_ttl = Duration::from_millis(
        u64::try_from(answer.i64("ttl")).expect("a remaining ttl is not negative"),
    );
    let (ttl_before, ttl_after) = (before.ttl.expect("held"), after.ttl.expect("held"));
    assert!(
        ttl_after <= node_ttl && node_ttl <= ttl_before,
        "Node saw {node_ttl:?} left; Rust saw {ttl_before:?} before and {ttl_after:?} after\n{}",
        node.context()
    );
    // Node's failed attempt changed nothing: same holder, same metadata.
    assert!(after.held);
    assert_eq!(after.index, guard.index());
    assert_eq!(after.holder, before.holder);
    assert!(after.host().is_some(), "{after:?}");

    let released = guard.release().await.expect("release");
    assert_eq!(released.result, ReleaseOutcome::Released);
    let answer = node.acquire("token-refresh", Duration::from_secs(5)).await;
    assert!(answer.bool("success"), "{}", answer.raw);
    let node_index = answer.i64("index");
    let answer = node.release("token-refresh", node_index).await;
    assert_eq!(answer.str("result"), Some("released"), "{}", answer.raw);
    node.quit().await;
}

/// A Node `waitAcquireLock` is woken by a Rust release through the shared release channel, long
/// before the Rust holder's ttl or Node's `waitTtl` would have let it try again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_release_wakes_node_waiter() {
    let Some(setup) = node_setup() else { return };
    let namespace = "interop-wake-node";
    let server = RedisServer::start();
    let locks = rust_client(&server, namespace);
    let mut node = NodeDriver::start(&setup, &server.url(), namespace).await;

    let guard = locks
        .lock("report")
        .ttl(LONG_TTL)
        .acquire()
        .await
        .expect("Rust acquires a free lock");
    let tag = node
        .start_wait("report", Duration::from_secs(5), Duration::from_secs(5))
        .await;
    node.waiting("report").await;

    let released_at = Instant::now();
    let released = guard.release().await.expect("release");
    assert_eq!(released.result, ReleaseOutcome::Released);
    let answer = node.answer(&tag).await;
    let woke_after = released_at.elapsed();

    assert!(answer.bool("success"), "{}", answer.raw);
    assert!(
        woke_after < PROMPT,
        "Node took {woke_after:?} to acquire after the Rust release\n{}",
        node.context()
    );
    let node_index = answer.i64("index");
    assert!(
        node_index > released.index,
        "Node's index {node_index} is not above Rust's {}",
        released.index
    );
    let status = locks.status("report").await.expect("status");
    assert!(status.held);
    assert_eq!(status.index, node_index);
    assert!(
        status.holder.is_empty(),
        "Node stores no metadata: {status:?}"
    );

    let answer = node.release("report", node_index).await;
    assert_eq!(answer.str("result"), Some("released"), "{}", answer.raw);
    node.quit().await;
}

/// A Rust waiter is woken by a Node `releaseLock`: Node publishes the lock key on
/// `{ns}-release`, the channel the Rust client's shared subscription listens to.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_release_wakes_rust_waiter() {
    let Some(setup) = node_setup() else { return };
    let namespace = "interop-wake-rust";
    let server = RedisServer::start();
    // No polling fallback within the test's time frame: only the notice can wake the waiter.
    let locks = Client::builder(server.url())
        .namespace(namespace)
        .max_poll_interval(Duration::from_secs(60))
        .build()
        .expect("a valid client configuration");
    let mut node = NodeDriver::start(&setup, &server.url(), namespace).await;

    // Load the acquire script and open the connection, so that the waiter's first attempt is a
    // single EVALSHA that `script_calls` can see.
    let warm = locks
        .acquire_lock("warm-up", Duration::from_secs(1))
        .await
        .expect("acquire");
    locks
        .release_lock("warm-up", warm.index)
        .await
        .expect("release");

    let held = node.acquire("nightly", LONG_TTL).await;
    assert!(held.bool("success"), "{}", held.raw);
    let node_index = held.i64("index");

    let calls_before = script_calls(&server);
    let waiter = tokio::spawn({
        let locks = locks.clone();
        async move {
            let guard = locks
                .lock("nightly")
                .ttl(Duration::from_secs(10))
                .wait(Duration::from_secs(10))
                .acquire()
                .await;
            (guard, Instant::now())
        }
    });
    // The waiter registers for notices, subscribes, then makes its first attempt, which fails:
    // once the server has run it, the waiter is waiting for a notice.
    let attempted = wait_until_async(ANSWER_TIMEOUT, || async {
        locks.stats().waiters >= 1 && script_calls(&server) > calls_before
    })
    .await;
    assert!(attempted, "the Rust waiter never made its first attempt");

    let released_at = Instant::now();
    let answer = node.release("nightly", node_index).await;
    assert_eq!(answer.str("result"), Some("released"), "{}", answer.raw);
    let (guard, acquired_at) = tokio::time::timeout(ANSWER_TIMEOUT, waiter)
        .await
        .expect("the Rust waiter finishes")
        .expect("the waiter task does not panic");
    let guard = guard.expect("the Rust waiter acquires after the Node release");
    let woke_after = acquired_at.duration_since(released_at);

    assert!(
        woke_after < PROMPT,
        "Rust took {woke_after:?} to acquire after the Node release"
    );
    assert!(
        !guard.acquired_immediately(),
        "the first attempt should have found the lock held by Node"
    );
    assert!(guard.index() > node_index);
    let released = guard.release().await.expect("release");
    assert_eq!(released.result, ReleaseOutcome::Released);
    assert_eq!(locks.stats().waiters, 0);
    node.quit().await;
}

/// Fencing indexes keep increasing when Node and Rust take turns: Node `INCR`s the counter,
/// Rust floors it at the server clock in microseconds, and Node reads those big indexes exactly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn indexes_increase_across_node_and_rust() {
    let Some(setup) = node_setup() else { return };
    let namespace = "interop-fencing";
    let server = RedisServer::start();
    let locks = rust_client(&server, namespace);
    let mut node = NodeDriver::start(&setup, &server.url(), namespace).await;
    let ttl = Duration::from_secs(10);

    let mut indexes: Vec<(&str, i64)> = Vec::new();
    let mut previous: Option<i64> = None;
    for round in 0..3 {
        // Node: INCR of whatever the counter holds, read back exactly by both sides.
        let answer = node.acquire("shared", ttl).await;
        assert!(answer.bool("success"), "{}", answer.raw);
        let node_index = answer.i64("index");
        match previous {
            None => assert_eq!(node_index, 1, "a fresh counter starts at 1"),
            Some(p) => assert_eq!(node_index, p + 1, "Node INCRs the shared counter"),
        }
        assert_eq!(counter(&server, namespace), node_index);
        let status = locks.status("shared").await.expect("status");
        assert_eq!(
            status.index, node_index,
            "Rust reads Node's index {}",
            answer.raw
        );
        let answer = node.release("shared", node_index).await;
        assert_eq!(answer.str("result"), Some("released"), "{}", answer.raw);
        assert_eq!(answer.i64("index"), node_index, "{}", answer.raw);
        indexes.push(("node", node_index));

        // Rust: floored at the server clock, so far above Node's small counter at first.
        let clock = server_micros(&server);
        let rust_index = if round % 2 == 0 {
            let guard = locks
                .lock("shared")
                .ttl(ttl)
                .acquire()
                .await
                .expect("acquire");
            let index = guard.index();
            assert_eq!(
                guard.release().await.expect("release").result,
                ReleaseOutcome::Released
            );
            index
        } else {
            let acquired = locks.acquire_lock("shared", ttl).await.expect("acquire");
            assert!(acquired.success, "{acquired:?}");
            let released = locks
                .release_lock("shared", acquired.index)
                .await
                .expect("release");
            assert_eq!(released.result, ReleaseOutcome::Released);
            acquired.index
        };
        assert!(
            rust_index >= clock,
            "Rust's index {rust_index} is below the server clock {clock} µs"
        );
        assert!(
            rust_index < (1 << 53),
            "Rust's index {rust_index} is beyond what Node reads exactly"
        );
        assert_eq!(counter(&server, namespace), rust_index);
        indexes.push(("rust", rust_index));
        previous = Some(rust_index);
    }

    for pair in indexes.windows(2) {
        assert!(
            pair[0].1 < pair[1].1,
            "indexes must strictly increase: {indexes:?}"
        );
    }
    // The last Node index was a Rust index + 1: the digits went through JavaScript unchanged.
    let (_, last_node) = indexes[indexes.len() - 2];
    assert!(last_node > 1_000_000_000_000_000, "{indexes:?}");
    node.quit().await;
}

/// Node's `releaseLock` of a lock taken by Rust: a wrong index is a conflict that leaves the lock
/// alone; the right index releases it; releasing again answers `expired`, and so does the Rust
/// guard afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_releases_a_rust_lock_by_index() {
    let Some(setup) = node_setup() else { return };
    let namespace = "interop-release";
    let server = RedisServer::start();
    let locks = rust_client(&server, namespace);
    let mut node = NodeDriver::start(&setup, &server.url(), namespace).await;

    let guard = locks
        .lock("invoice-42")
        .ttl(Duration::from_secs(10))
        .description("interop test")
        .acquire()
        .await
        .expect("Rust acquires a free lock");
    let index = guard.index();

    let answer = node.release("invoice-42", index + 1).await;
    assert!(!answer.bool("success"), "{}", answer.raw);
    assert_eq!(answer.str("result"), Some("conflict"), "{}", answer.raw);
    assert_eq!(
        answer.i64("index"),
        index,
        "Node reports the holder's index"
    );
    let status = locks.status("invoice-42").await.expect("status");
    assert!(status.held && status.index == index, "{status:?}");
    assert_eq!(status.description(), Some("interop test"));

    let answer = node.release("invoice-42", index).await;
    assert!(answer.bool("success"), "{}", answer.raw);
    assert_eq!(answer.str("result"), Some("released"), "{}", answer.raw);
    assert_eq!(answer.i64("index"), index, "{}", answer.raw);
    let status = locks.status("invoice-42").await.expect("status");
    assert!(!status.held, "{status:?}");

    let answer = node.release("invoice-42", index).await;
    assert!(answer.bool("success"), "{}", answer.raw);
    assert_eq!(answer.str("result"), Some("expired"), "{}", answer.raw);
    let released = guard.release().await.expect("release");
    assert_eq!(released.result, ReleaseOutcome::Expired);
    node.quit().await;
}

/// `Client::list` shows a lock that Node redfour holds, beside one of this library's: its
/// index and remaining ttl, and no holder (Node records none).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_holder_is_listed() {
    let Some(setup) = node_setup() else { return };
    let server = RedisServer::start();
    let locks = rust_client(&server, redfour::DEFAULT_NAMESPACE);
    let mut node = NodeDriver::start(&setup, &server.url(), redfour::DEFAULT_NAMESPACE).await;
    let answer = node.acquire("from-node", Duration::from_secs(30)).await;
    assert!(answer.bool("success"), "{}", answer.raw);
    let rust = locks.lock("from-rust").acquire().await.expect("acquired");

    let listed = locks.list().await.expect("listed");
    let ids: Vec<&str> = listed.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, ["from-node", "from-rust"], "{listed:?}");
    let from_node = &listed[0];
    assert_eq!(from_node.kind, redfour::ListingKind::Lock);
    assert_eq!(from_node.index, Some(answer.i64("index")));
    assert_eq!(from_node.holder, None, "{from_node:?}");
    assert_eq!(from_node.held_for, None, "{from_node:?}");
    let ttl = from_node.ttl.expect("a lock's ttl");
    assert!(
        ttl <= Duration::from_secs(30) && ttl > Duration::from_secs(20),
        "{ttl:?}"
    );
    assert_eq!(listed[1].index, Some(rust.index()));
    assert!(listed[1].holder.is_some(), "{:?}", listed[1]);

    rust.release().await.expect("released");
    let answer = node.release("from-node", answer.i64("index")).await;
    assert_eq!(answer.str("result"), Some("released"), "{}", answer.raw);
    assert_eq!(locks.list().await.expect("listed"), Vec::new());
    node.quit().await;
}

#[test]
fn flat_json_parser() {
    let m = Msg::parse(
        r#"{"op":"acquire","tag":"t1","success":true,"index":1794130000000001,"ttl":-1,"x":null,"s":"a\"\\\u00e9\ud83d\ude00"}"#,
    )
    .expect("parses");
    assert_eq!(m.str("op"), Some("acquire"));
    assert!(m.bool("success"));
    assert_eq!(m.i64("index"), 1_794_130_000_000_001);
    assert_eq!(m.i64("ttl"), -1);
    assert_eq!(m.fields.get("x"), Some(&Val::Null));
    assert_eq!(m.str("s"), Some("a\"\\é😀"));
    assert_eq!(Msg::parse("{}").expect("parses").fields.len(), 0);
    assert!(Msg::parse(r#"{"a":{"b":1}}"#).is_err());
    assert!(Msg::parse(r#"{"a":1} x"#).is_err());
    assert!(Msg::parse(r#"{"a":"#).is_err());
    assert_eq!(json_str("a\"b\\\n"), r#""a\"b\\\u000a""#);
}

// ---------------------------------------------------------------------------------------------
// Mixed fleets: no side starves (issue 14)
// ---------------------------------------------------------------------------------------------

/// What one side of a mixed fleet did on the contended lock.
#[derive(Debug, Default)]
struct Side {
    sections: usize,
    /// `INCR` results at the start of a critical section other than 1: overlaps.
    overlaps: Vec<i64>,
}

/// A worker process that prints its critical sections as JSON lines (`interop/worker.js`,
/// `redfour-worker`), with its output.
type LineWorker = (
    tokio::process::Child,
    tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
);

/// Starts `command` as a line worker and waits for its `{"event":"ready"}`.
async fn line_worker(mut command: Command) -> LineWorker {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {command:?}: {e}"));
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let ready = tokio::time::timeout(ANSWER_TIMEOUT, lines.next_line())
        .await
        .expect("a worker did not get ready in time")
        .expect("reading a worker");
    assert_eq!(ready.as_deref(), Some(r#"{"event":"ready"}"#));
    (child, lines)
}

/// Stops a line worker (end of input: it stops after the section in progress) and adds what
/// it did to `side`.
async fn stop_line_worker((mut child, mut lines): LineWorker, side: &mut Side) {
    drop(child.stdin.take());
    loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("a worker did not stop in time")
            .expect("reading a worker");
        let Some(line) = line else { break };
        let msg = Msg::parse(&line).unwrap_or_else(|e| panic!("{e}: {line}"));
        if msg.fields.contains_key("event") {
            panic!("a worker reported {line}");
        }
        side.sections += 1;
        let inside = msg.i64("inside");
        if inside != 1 {
            side.overlaps.push(inside);
        }
    }
    let status = child.wait().await.expect("waiting for a worker");
    assert!(status.success(), "a worker exited with {status}");
}

/// How the Rust side of a mixed fleet runs.
enum RustSide {
    /// Tasks of this test process, each with its own client (a debug build, in `cargo test`).
    InProcess(usize),
    /// `redfour-worker` processes, release-built (see [`release_worker`]).
    Processes(PathBuf, usize),
}

/// The release-built `redfour-worker` (`cargo build --release -p redfour-worker`, which
/// `scripts/test` runs first), or `None` (after saying why) when it is missing or older than
/// the library's sources. Missing is a failure when `REDFOUR_REQUIRE_NODE` is set, as for the
/// other interop tests.
fn release_worker() -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("the crate lives in crates/redfour");
    let target =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    let worker = target.join("release/redfour-worker");
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let built = modified(&worker);
    let mut newest_source = None;
    let mut dirs = vec![
        root.join("crates/redfour/src"),
        root.join("crates/redfour-worker/src"),
    ];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                newest_source = newest_source.max(modified(&path));
            }
        }
    }
    let why = match built {
        None => format!("{} is missing", worker.display()),
        Some(built) if newest_source.is_some_and(|s| s > built) => {
            format!("{} is older than the library's sources", worker.display())
        }
        Some(_) => return Some(worker),
    };
    let why = format!("{why}: build it with `cargo build --release -p redfour-worker`");
    if std::env::var_os("REDFOUR_REQUIRE_NODE").is_some_and(|v| !v.is_empty()) {
        panic!("REDFOUR_REQUIRE_NODE is set, but {why}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED mixed-fleet test with release-built Rust workers: {why}."
    );
    None
}

/// `node_workers` Node redfour workers (`interop/worker.js`: `waitAcquireLock(id, 2000,
/// 20000)`, 30 ms of work, `releaseLock`) and the Rust workers of `rust` (fair, each its own
/// client: `lock(id).ttl(2 s).wait(20 s).acquire()`, 30 ms, release) contend for one lock for
/// `run_for`. Each critical section starts with `INCR` of a check key and ends with `DECR`:
/// a value other than 1 is an overlap. Returns what each side did (Node, Rust).
async fn mixed_fleet(
    setup: &NodeSetup,
    node_workers: usize,
    rust: RustSide,
    run_for: Duration,
) -> (Side, Side) {
    const ID: &str = "hot";
    const CHECK: &str = "mixed-inside";
    let server = RedisServer::start();
    let url = server.url();

    let mut nodes = Vec::new();
    for _ in 0..node_workers {
        let mut command = Command::new(&setup.node);
        command
            .args(["worker.js", &url, "lock", ID, "2000", "20000", "30", CHECK])
            .current_dir(&setup.interop);
        nodes.push(line_worker(command).await);
    }
    let (rust_workers, mut processes) = match rust {
        RustSide::InProcess(n) => (n, Vec::new()),
        RustSide::Processes(path, n) => {
            let mut processes = Vec::new();
            for _ in 0..n {
                let mut command = Command::new(&path);
                command.args([url.as_str(), "lock", ID, "30", CHECK]);
                processes.push(line_worker(command).await);
            }
            (0, processes)
        }
    };

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut rusts = tokio::task::JoinSet::new();
    for _ in 0..rust_workers {
        let locks = rust_client(&server, "lock");
        let mut check = server
            .client()
            .get_multiplexed_async_connection()
            .await
            .expect("a connection for the overlap check");
        let stop = Arc::clone(&stop);
        rusts.spawn(async move {
            let mut side = Side::default();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let guard = locks
                    .lock(ID)
                    .ttl(Duration::from_secs(2))
                    .wait(Duration::from_secs(20))
                    .acquire()
                    .await
                    .expect("a Rust worker's acquire");
                let inside: i64 = redis::cmd("INCR")
                    .arg(CHECK)
                    .query_async(&mut check)
                    .await
                    .expect("INCR");
                if inside != 1 {
                    side.overlaps.push(inside);
                }
                // The work done while holding the lock.
                tokio::time::sleep(Duration::from_millis(30)).await;
                let _: i64 = redis::cmd("DECR")
                    .arg(CHECK)
                    .query_async(&mut check)
                    .await
                    .expect("DECR");
                guard.release().await.expect("a Rust worker's release");
                side.sections += 1;
            }
            side
        });
    }

    tokio::time::sleep(run_for).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut rust = Side::default();
    while let Some(done) = rusts.join_next().await {
        let side = done.expect("a Rust worker panicked");
        rust.sections += side.sections;
        rust.overlaps.extend(side.overlaps);
    }
    for worker in processes.drain(..) {
        stop_line_worker(worker, &mut rust).await;
    }
    let mut node = Side::default();
    for worker in nodes {
        stop_line_worker(worker, &mut node).await;
    }
    (node, rust)
}

/// Asserts no overlap, and that each side's share of the critical sections is within 2 × of
/// its share of the workers (at least half of it, at most twice it).
fn assert_shares(node: &Side, rust: &Side, node_workers: usize, rust_workers: usize) {
    assert!(
        node.overlaps.is_empty() && rust.overlaps.is_empty(),
        "critical sections overlapped: Node saw {:?}, Rust saw {:?}",
        node.overlaps,
        rust.overlaps
    );
    let total = (node.sections + rust.sections) as f64;
    let workers = (node_workers + rust_workers) as f64;
    for (name, side, n) in [("Node", node, node_workers), ("Rust", rust, rust_workers)] {
        let share = side.sections as f64 / total;
        let due = n as f64 / workers;
        assert!(
            share >= due / 2.0 && share <= (due * 2.0).min(1.0),
            "{name} had {} of {total} critical sections ({:.1}%), its workers {:.1}% of all: \
             Node {} sections, Rust {}",
            side.sections,
            share * 100.0,
            due * 100.0,
            node.sections,
            rust.sections
        );
    }
    eprintln!(
        "mixed fleet, {node_workers} Node + {rust_workers} Rust workers: Node {} sections, Rust {}",
        node.sections, rust.sections
    );
}

/// Three Node redfour workers and three fair Rust workers on one lock: neither side starves
/// (before the outsiders' turns, the Rust queue kept the lock 98% of the time), and no two
/// critical sections overlap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_fleet_three_and_three_share_the_lock() {
    let Some(setup) = node_setup() else { return };
    let (node, rust) = mixed_fleet(&setup, 3, RustSide::InProcess(3), Duration::from_secs(6)).await;
    assert_shares(&node, &rust, 3, 3);
}

/// One Node worker among five Rust workers gets its share, and no more than twice it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_fleet_one_node_among_five_rust() {
    let Some(setup) = node_setup() else { return };
    let (node, rust) = mixed_fleet(&setup, 1, RustSide::InProcess(5), Duration::from_secs(6)).await;
    assert_shares(&node, &rust, 1, 5);
}

/// Node holding, Rust waiting: five Node workers, which take the lock again as soon as they
/// release it, and one Rust worker, a release-built `redfour-worker` process (in a debug build
/// the Rust client answers a release announcement several times slower than Node, and loses
/// nearly every race for a lock just released). The Rust worker gets its share: the releases
/// of the queue's side keep the lock for it while the Node side had more than its due.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_fleet_one_rust_among_five_node() {
    let Some(setup) = node_setup() else { return };
    let Some(worker) = release_worker() else {
        return;
    };
    let (node, rust) = mixed_fleet(
        &setup,
        5,
        RustSide::Processes(worker, 1),
        Duration::from_secs(6),
    )
    .await;
    assert_shares(&node, &rust, 5, 1);
}
