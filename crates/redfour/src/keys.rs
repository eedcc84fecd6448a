//! Key and channel names of the two layouts (Node redfour's, and the cluster layout whose keys
//! of one lock share a hash tag), and validation of user input.

use std::borrow::Cow;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::scripts::{Eval, ScriptSet};

/// The longest lock id (and namespace) accepted, in bytes: 1 MiB. Ids are data of any content
/// (quotes, newlines, Lua syntax, braces); the bound only keeps a runaway id from becoming a
/// runaway key in every request and notice.
pub const MAX_ID_LEN: usize = 1 << 20;

/// The longest ttl accepted: 2^53 − 1 ms, so that Node (JavaScript numbers) reads it exactly and
/// Redis never overflows the expiry time.
pub const MAX_TTL: Duration = Duration::from_millis((1 << 53) - 1);

/// The largest fencing index: 2^53 − 1, so that Node (JavaScript numbers) reads every index
/// exactly. An index is an integer from 1 to `MAX_INDEX`; the lock hash stores it in plain
/// decimal (no sign, leading zero, blank, fraction or exponent), as this library and Node redfour
/// write it. Anything else found there is [`CorruptData`](crate::ErrorKind::CorruptData) for
/// every operation, and is left untouched.
pub const MAX_INDEX: i64 = (1 << 53) - 1;

/// Where the keys and channels of a lock live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Layout {
    /// Node redfour's, byte for byte: lock `{ns}:{id}`, one counter `{ns}index` and one release
    /// channel `{ns}-release` for the whole namespace.
    Node,
    /// For Redis Cluster: every key and channel of one lock starts with the lock key
    /// `{` ns `:` id `}`, so they all hash to one slot (the hash tag is the text between the first
    /// `{` and the next `}`, never empty because the namespace has no braces); a counter per lock
    /// `…}:index`, the queue `…}:queue` and `…}:waiters`, and the sharded channels `…}:release`
    /// and `…}:handoff`. Lock keys end with `}` and the others with a fixed suffix, so no two
    /// locks share a name.
    ///
    /// Every key expires. The counter lives one hour after the last index taken from it
    /// (`REDFOUR_COUNTER_LIFE_MS` in `scripts/grant.lua`): indexes are floored at the server
    /// clock, so a counter that expires loses nothing unless that clock steps back by more
    /// than that, and lock ids used once do not leave a key each forever. The scripts tell a
    /// per-lock counter from Node's shared one (which never expires: Node's wire format) by its
    /// name being exactly the lock key plus `:index`, as [`Namespace::counter`] builds it.
    Cluster,
}

/// The suffixes of a lock's sharded channels in the cluster layout.
const RELEASE_SUFFIX: &str = ":release";
const HANDOFF_SUFFIX: &str = ":handoff";

#[derive(Debug, Clone)]
pub(crate) struct Namespace {
    name: String,
    counter: String,
    channel: String,
    layout: Layout,
}

impl Namespace {
    #[cfg(test)]
    pub(crate) fn new(name: &str) -> Result<Self> {
        Namespace::with_layout(name, Layout::Node)
    }

    pub(crate) fn with_layout(name: &str, layout: Layout) -> Result<Self> {
        if name.is_empty() {
            return Err(Error::invalid("the namespace must not be empty"));
        }
        if name.len() > MAX_ID_LEN {
            return Err(Error::invalid(format!(
                "the namespace is longer than {MAX_ID_LEN} bytes"
            )));
        }
        if layout == Layout::Cluster && name.contains(['{', '}']) {
            return Err(Error::invalid(
                "a namespace for Redis Cluster must not contain `{` or `}` (its keys carry the hash tag `{namespace:id}`)",
            ));
        }
        Ok(Namespace {
            name: name.to_owned(),
            counter: format!("{name}index"),
            channel: format!("{name}-release"),
            layout,
        })
    }

    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The counter of the lock at `lock_key`: Node redfour's `{ns}index` for the whole
    /// namespace, or the lock's own in the cluster layout.
    pub(crate) fn counter(&self, lock_key: &str) -> Cow<'_, str> {
        match self.layout {
            Layout::Node => Cow::Borrowed(&self.counter),
            Layout::Cluster => Cow::Owned(concat(&[lock_key, ":index"])),
        }
    }

    /// The channel on which the release of the lock at `lock_key` is announced: Node redfour's
    /// `{ns}-release` (the message names the lock), or the lock's own sharded channel.
    pub(crate) fn channel(&self, lock_key: &str) -> Cow<'_, str> {
        match self.layout {
            Layout::Node => Cow::Borrowed(&self.channel),
            Layout::Cluster => Cow::Owned(concat(&[lock_key, RELEASE_SUFFIX])),
        }
    }

    /// A `PSUBSCRIBE` pattern that matches the Node layout's release channel and nothing else
    /// (the namespace's glob characters escaped).
    pub(crate) fn release_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.channel.len() + 4);
        for c in self.channel.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\' | '^') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern
    }

    /// The fair queue of the lock at `lock_key`: the FIFO list of waiter tokens
    /// (`{ns}-queue:{id}`) and the hash of their entries (`{ns}-waiters:{id}`). Node redfour
    /// never reads them.
    pub(crate) fn queue_keys(&self, lock_key: &str) -> (String, String) {
        match self.layout {
            Layout::Node => {
                let id = lock_key.get(self.name.len() + 1..).unwrap_or(lock_key);
                (
                    concat(&[&self.name, "-queue:", id]),
                    concat(&[&self.name, "-waiters:", id]),
                )
            }
            Layout::Cluster => (
                concat(&[lock_key, ":queue"]),
                concat(&[lock_key, ":waiters"]),
            ),
        }
    }

    /// The channel on which a client hears that the lock at `lock_key` was handed to one of
    /// its waiters: the client's own `{ns}-handoff:{client}` for all locks, or, in the cluster
    /// layout (where a script can only publish in its lock's slot), the lock's own, shared by
    /// all clients (each notice names the waiter it is for).
    pub(crate) fn handoff_channel(&self, client_token: &str, lock_key: &str) -> Cow<'_, str> {
        match self.layout {
            Layout::Node => Cow::Owned(format!("{}-handoff:{}", self.name, client_token)),
            Layout::Cluster => Cow::Owned(concat(&[lock_key, HANDOFF_SUFFIX])),
        }
    }

    /// The channels a subscriber hears on about the lock at `lock_key` alone, in the cluster
    /// layout: its release channel and its handoff channel (both sharded, in the lock's slot).
    pub(crate) fn lock_channels(&self, lock_key: &str) -> [String; 2] {
        debug_assert_eq!(self.layout, Layout::Cluster, "per-lock channels");
        [
            concat(&[lock_key, RELEASE_SUFFIX]),
            concat(&[lock_key, HANDOFF_SUFFIX]),
        ]
    }

    /// The lock whose release channel `channel` is, in the cluster layout.
    pub(crate) fn lock_of_release_channel<'c>(&self, channel: &'c [u8]) -> Option<&'c [u8]> {
        match self.layout {
            Layout::Node => None,
            Layout::Cluster => channel.strip_suffix(RELEASE_SUFFIX.as_bytes()),
        }
    }

    /// Whether a message on `channel` is a handoff notice: on the client's own handoff
    /// channel (`own`, Node layout), or on any lock's handoff channel (cluster layout).
    pub(crate) fn is_handoff_channel(&self, channel: &[u8], own: Option<&str>) -> bool {
        match self.layout {
            Layout::Node => own.is_some_and(|own| own.as_bytes() == channel),
            Layout::Cluster => channel.ends_with(HANDOFF_SUFFIX.as_bytes()),
        }
    }

    /// `{ns}:{id}` (or `{ns:id}` in the cluster layout), after checking the id.
    pub(crate) fn lock_key(&self, id: &str) -> Result<String> {
        check_id(id)?;
        Ok(match self.layout {
            Layout::Node => concat(&[&self.name, ":", id]),
            Layout::Cluster => concat(&["{", &self.name, ":", id, "}"]),
        })
    }
}

/// The parts one after the other, in one allocation: key names are built on every call, and
/// `format!` costs several times as much.
fn concat(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len()).sum());
    for part in parts {
        out.push_str(part);
    }
    out
}

/// What an acquire writes into the lock hash about its holder.
pub(crate) struct HolderFields<'a> {
    pub(crate) host: &'a str,
    pub(crate) pid: u32,
    /// The attempt's own id, so that its clean-up releases only what it won.
    pub(crate) attempt: &'a str,
    pub(crate) description: Option<&'a str>,
}

/// A fair-queue waiter's side of an acquire.
pub(crate) struct Queueing<'a> {
    /// The waiter's token; empty for a one-shot attempt that does not queue.
    pub(crate) token: &'a str,
    pub(crate) entry_lifetime_ms: u64,
    /// Where a handoff to this waiter is announced.
    pub(crate) handoff_channel: &'a str,
    pub(crate) claim_window_ms: u64,
}

/// Every script call of the crate, built here and only here: each script's KEYS and ARGV, in
/// the order its Lua reads them (see the header of each `scripts/*.lua`). Callers pass meaning
/// (a lock key, a ttl, an index), never positions.
impl Namespace {
    /// The scripts of this layout (notices with `PUBLISH`, or `SPUBLISH` in the lock's slot).
    pub(crate) fn scripts(&self) -> &'static ScriptSet {
        match self.layout {
            Layout::Node => &crate::scripts::NODE,
            Layout::Cluster => &crate::scripts::CLUSTER,
        }
    }

    /// `acquire.lua`: KEYS lock, counter; ARGV ttl, holder fields, and `fair` = `0`: a lock
    /// taken outside the fair queue, which the fair scripts count as an outsider's holding
    /// (see "Outsiders' turns" in scripts/fair_common.lua).
    pub(crate) fn acquire_call(&self, key: &str, ttl_ms: u64, holder: &HolderFields<'_>) -> Eval {
        let mut call = Eval::new(&self.scripts().acquire, &[key, &self.counter(key)]);
        call.arg(ttl_ms);
        holder_args(&mut call, holder);
        call.arg("fair").arg("0");
        call
    }

    /// `fair_acquire.lua`: KEYS lock, counter, queue, entries; ARGV ttl, token, entry
    /// lifetime, handoff channel, claim window, release channel, holder fields.
    pub(crate) fn fair_acquire_call(
        &self,
        key: &str,
        ttl_ms: u64,
        queueing: &Queueing<'_>,
        holder: &HolderFields<'_>,
    ) -> Eval {
        let mut call = self.queue_call(&self.scripts().fair_acquire, key);
        call.arg(ttl_ms)
            .arg(queueing.token)
            .arg(queueing.entry_lifetime_ms)
            .arg(queueing.handoff_channel)
            .arg(queueing.claim_window_ms)
            .arg(&*self.channel(key));
        holder_args(&mut call, holder);
        call
    }

    /// `release.lua`: KEYS lock; ARGV index, release channel.
    pub(crate) fn release_call(&self, key: &str, index: i64) -> Eval {
        let mut call = Eval::new(&self.scripts().release, &[key]);
        call.arg(index).arg(&*self.channel(key));
        call
    }

    /// `fair_release.lua`: KEYS lock, counter, queue, entries; ARGV index, release channel,
    /// claim window, and the token of a waiter whose unclaimed handoff is to be passed on.
    pub(crate) fn fair_release_call(
        &self,
        key: &str,
        index: i64,
        claim_window_ms: u64,
        pass_on_from: Option<&str>,
    ) -> Eval {
        let mut call = self.queue_call(&self.scripts().fair_release, key);
        call.arg(index)
            .arg(&*self.channel(key))
            .arg(claim_window_ms);
        if let Some(token) = pass_on_from {
            call.arg(token);
        }
        call
    }

    /// `fair_leave.lua`: KEYS queue, entries; ARGV the waiter's token.
    pub(crate) fn leave_call(&self, key: &str, token: &str) -> Eval {
        let (queue, entries) = self.queue_keys(key);
        let mut call = Eval::new(&self.scripts().fair_leave, &[&queue, &entries]);
        call.arg(token);
        call
    }

    /// `renew.lua`: KEYS lock; ARGV index, ttl.
    pub(crate) fn renew_call(&self, key: &str, index: i64, ttl_ms: u64) -> Eval {
        let mut call = Eval::new(&self.scripts().renew, &[key]);
        call.arg(index).arg(ttl_ms);
        call
    }

    /// `status.lua`: KEYS lock.
    pub(crate) fn status_call(&self, key: &str) -> Eval {
        Eval::new(&self.scripts().status, &[key])
    }

    /// `redlock_adopt.lua`: KEYS lock, counter; ARGV the index this master granted, the
    /// adopted one.
    pub(crate) fn adopt_call(&self, key: &str, granted: i64, adopted: i64) -> Eval {
        let mut call = Eval::new(&crate::scripts::REDLOCK_ADOPT, &[key, &self.counter(key)]);
        call.arg(granted).arg(adopted);
        call
    }

    /// A fair-queue script on the lock at `key`: KEYS lock, counter, queue, entries.
    fn queue_call(&self, script: &'static redis::Script, key: &str) -> Eval {
        let (queue, entries) = self.queue_keys(key);
        Eval::new(script, &[key, &self.counter(key), &queue, &entries])
    }
}

/// The holder fields as `field, value` pairs, the tail of both acquire scripts' ARGV.
fn holder_args(call: &mut Eval, holder: &HolderFields<'_>) {
    call.arg("host")
        .arg(holder.host)
        .arg("pid")
        .arg(holder.pid)
        .arg("attempt")
        .arg(holder.attempt);
    if let Some(description) = holder.description {
        call.arg("description").arg(description);
    }
}

/// The fields of a lock hash that a listing reads, in the order `list.lua` returns them: the
/// index, then what a holder of this library writes about itself.
pub(crate) const LISTED_FIELDS: [&str; 5] = ["index", "acquired_at", "host", "pid", "description"];

/// The longest field value a listing returns, in bytes; a longer one is answered by its length.
pub(crate) const LISTED_VALUE_MAX: usize = 4096;

/// What a key that `SCAN` found with [`Namespace::scan_pattern`] is.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Found<'k> {
    /// The key where the lock with this id is kept.
    Lock(&'k str),
    /// One of the keys the cluster layout keeps beside a lock (its counter, its queue).
    Own,
    /// Anything else: the key after the namespace's prefix (`NS:` or `{NS:`), or the whole key
    /// without it.
    Other(&'k str),
}

/// Listings: which keys may hold the namespace's locks, and the bounded read of one of them.
impl Namespace {
    /// The `SCAN … MATCH` pattern of the keys where this namespace keeps its locks: `ns:*` in
    /// the Node layout (the counter `nsindex` and the queues `ns-queue:…`, `ns-waiters:…` do not
    /// match it), `{ns:*` in the cluster layout (which matches each lock's counter and queue
    /// too). Glob characters of the namespace are escaped.
    pub(crate) fn scan_pattern(&self) -> String {
        let mut pattern = String::with_capacity(self.name.len() + 4);
        if self.layout == Layout::Cluster {
            pattern.push('{');
        }
        for c in self.name.chars() {
            if matches!(c, '*' | '?' | '[' | ']' | '\\') {
                pattern.push('\\');
            }
            pattern.push(c);
        }
        pattern.push_str(":*");
        pattern
    }

    /// What a key that matches [`scan_pattern`](Namespace::scan_pattern) is: the inverse of
    /// [`lock_key`](Namespace::lock_key), and in the cluster layout the keys beside a lock.
    pub(crate) fn found<'k>(&self, key: &'k str) -> Found<'k> {
        let prefixed = |key: &'k str| match self.layout {
            Layout::Node => key.strip_prefix(self.name.as_str())?.strip_prefix(':'),
            Layout::Cluster => key
                .strip_prefix('{')?
                .strip_prefix(self.name.as_str())?
                .strip_prefix(':'),
        };
        let Some(rest) = prefixed(key) else {
            return Found::Other(key);
        };
        let id = match self.layout {
            Layout::Node => Some(rest),
            Layout::Cluster => rest.strip_suffix('}'),
        };
        match id {
            Some(id) if !id.is_empty() => Found::Lock(id),
            Some(_) => Found::Other(rest),
            // Lock keys end with `}` and the keys beside them with a fixed suffix.
            None => {
                let beside = [":index", ":queue", ":waiters"].iter().any(|suffix| {
                    key.strip_suffix(suffix)
                        .is_some_and(|lock| matches!(self.found(lock), Found::Lock(_)))
                });
                if beside {
                    Found::Own
                } else {
                    Found::Other(rest)
                }
            }
        }
    }

    /// `list.lua`: KEYS the key and, for a key where a lock is kept (`lock`), that lock's queue;
    /// ARGV the longest value returned, a waiter's token (`''` for none), the fields to read.
    pub(crate) fn list_call(&self, key: &str, lock: bool, token: Option<&str>) -> Eval {
        let mut call = if lock {
            let (queue, _) = self.queue_keys(key);
            Eval::new(&crate::scripts::LIST, &[key, &queue])
        } else {
            Eval::new(&crate::scripts::LIST, &[key])
        };
        call.arg(LISTED_VALUE_MAX).arg(token.unwrap_or(""));
        for field in LISTED_FIELDS {
            call.arg(field);
        }
        call
    }
}

pub(crate) fn check_id(id: &str) -> Result<()> {
    if id.is_empty() {
        return Err(Error::invalid("the lock id must not be empty"));
    }
    if id.len() > MAX_ID_LEN {
        return Err(Error::invalid(format!(
            "the lock id is longer than {MAX_ID_LEN} bytes"
        )));
    }
    Ok(())
}

/// The ttl in whole milliseconds, between 1 ms and [`MAX_TTL`].
pub(crate) fn ttl_millis(ttl: Duration) -> Result<u64> {
    if ttl > MAX_TTL {
        return Err(Error::invalid(format!(
            "the ttl {} ms is beyond the largest accepted, {} ms",
            ttl.as_millis(),
            MAX_TTL.as_millis()
        )));
    }
    let ms = ttl.as_millis() as u64;
    if ms == 0 {
        return Err(Error::invalid("the ttl must be at least 1 ms"));
    }
    Ok(ms)
}

pub(crate) fn check_index(index: i64) -> Result<()> {
    if !(1..=MAX_INDEX).contains(&index) {
        return Err(Error::invalid(format!(
            "the index must be an integer from 1 to 2^53 - 1 (got {index})"
        )));
    }
    Ok(())
}

/// The local safety margin subtracted from a lease: a share of the ttl plus a fixed part
/// (by default 1% + 2 ms, as Redlock's): clocks of the client and the servers may run at
/// slightly different rates, and a lease must end here before it ends there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Drift {
    /// Share of the ttl, in millionths.
    pub(crate) ppm: u32,
    pub(crate) fixed: Duration,
}

impl Default for Drift {
    fn default() -> Self {
        Drift {
            ppm: 10_000,
            fixed: Duration::from_millis(2),
        }
    }
}

impl Drift {
    pub(crate) fn of(&self, ttl: Duration) -> Duration {
        let share = ttl.as_nanos() * u128::from(self.ppm) / 1_000_000;
        Duration::from_nanos(share.min(u128::from(u64::MAX)) as u64).saturating_add(self.fixed)
    }
}

/// The default margin for `ttl` (1% + 2 ms).
#[cfg(test)]
pub(crate) fn drift(ttl: Duration) -> Duration {
    Drift::default().of(ttl)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn node_layout() {
        let ns = Namespace::new("mylock").unwrap();
        assert_eq!(ns.lock_key("abc").unwrap(), "mylock:abc");
        assert_eq!(ns.counter("mylock:abc"), "mylockindex");
        assert_eq!(ns.channel("mylock:abc"), "mylock-release");
        let (queue, entries) = ns.queue_keys("mylock:a:b");
        assert_eq!(queue, "mylock-queue:a:b");
        assert_eq!(entries, "mylock-waiters:a:b");
        assert_eq!(ns.handoff_channel("c1", "mylock:a:b"), "mylock-handoff:c1");
    }

    #[test]
    fn channels_are_told_apart_by_layout() {
        let node = Namespace::new("mylock").unwrap();
        assert!(node.is_handoff_channel(b"mylock-handoff:c1", Some("mylock-handoff:c1")));
        assert!(!node.is_handoff_channel(b"mylock-release", Some("mylock-handoff:c1")));
        assert!(
            !node.is_handoff_channel(b"mylock-handoff:c1", None),
            "no fair queue"
        );
        assert_eq!(node.lock_of_release_channel(b"mylock-release"), None);

        let cluster = Namespace::with_layout("jobs", Layout::Cluster).unwrap();
        let key = cluster.lock_key("a:release").unwrap();
        let [release, handoff] = cluster.lock_channels(&key);
        assert_eq!(release, cluster.channel(&key));
        assert_eq!(handoff, cluster.handoff_channel("any client", &key));
        assert!(cluster.is_handoff_channel(handoff.as_bytes(), None));
        assert!(!cluster.is_handoff_channel(release.as_bytes(), None));
        assert_eq!(
            cluster.lock_of_release_channel(release.as_bytes()),
            Some(key.as_bytes())
        );
        assert_eq!(cluster.lock_of_release_channel(handoff.as_bytes()), None);
    }

    /// The hash tag Redis Cluster hashes for `key`: the text between the first `{` and the
    /// next `}` when that is not empty, else the whole key.
    fn hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{') {
            if let Some(len) = key[open + 1..].find('}') {
                if len > 0 {
                    return &key[open + 1..open + 1 + len];
                }
            }
        }
        key
    }

    #[test]
    fn cluster_layout() {
        let ns = Namespace::with_layout("jobs", Layout::Cluster).unwrap();
        let key = ns.lock_key("a:b").unwrap();
        assert_eq!(key, "{jobs:a:b}");
        assert_eq!(ns.counter(&key), "{jobs:a:b}:index");
        assert_eq!(ns.channel(&key), "{jobs:a:b}:release");
        assert_eq!(
            ns.queue_keys(&key),
            (
                "{jobs:a:b}:queue".to_owned(),
                "{jobs:a:b}:waiters".to_owned()
            )
        );
        assert_eq!(ns.handoff_channel("c1", &key), "{jobs:a:b}:handoff");
        for bad in ["a{b", "a}b", "{x}"] {
            let err = Namespace::with_layout(bad, Layout::Cluster).unwrap_err();
            assert!(err.is_invalid_input(), "{bad}: {err}");
        }
    }

    proptest! {
        /// Whatever the id (braces included), every key and channel of one lock hashes to the
        /// same slot, and two ids never share a key.
        #[test]
        fn cluster_keys_share_one_hash_tag(id in "[a-z{}:]{1,12}", other in "[a-z{}:]{1,12}") {
            let ns = Namespace::with_layout("ns", Layout::Cluster).unwrap();
            let key = ns.lock_key(&id).unwrap();
            let (queue, entries) = ns.queue_keys(&key);
            let names = [
                key.clone(),
                ns.counter(&key).into_owned(),
                ns.channel(&key).into_owned(),
                ns.handoff_channel("t", &key).into_owned(),
                queue,
                entries,
            ];
            let tag = hash_tag(&key);
            prop_assert!(!tag.is_empty());
            for name in &names {
                prop_assert_eq!(hash_tag(name), tag, "{}", name);
            }
            if id != other {
                let key2 = ns.lock_key(&other).unwrap();
                let (q2, e2) = ns.queue_keys(&key2);
                let names2 = [
                    key2.clone(),
                    ns.counter(&key2).into_owned(),
                    q2,
                    e2,
                ];
                for a in &names[..] {
                    prop_assert!(!names2.contains(a), "{} shared by {} and {}", a, id, other);
                }
            }
        }
    }

    #[test]
    fn listing_finds_lock_keys_in_both_layouts() {
        let node = Namespace::new("lock").unwrap();
        assert_eq!(node.scan_pattern(), "lock:*");
        assert_eq!(node.found("lock:a:b"), Found::Lock("a:b"));
        assert_eq!(node.found("lock:"), Found::Other(""));
        assert_eq!(node.found("locks:a"), Found::Other("locks:a"));
        for id in ["a", "a}", "{x}:queue", "é"] {
            let key = node.lock_key(id).unwrap();
            assert_eq!(node.found(&key), Found::Lock(id));
        }
        let globs = Namespace::new("a*b?[c]\\").unwrap();
        assert_eq!(globs.scan_pattern(), "a\\*b\\?\\[c\\]\\\\:*");

        let cluster = Namespace::with_layout("jobs", Layout::Cluster).unwrap();
        assert_eq!(cluster.scan_pattern(), "{jobs:*");
        for id in ["a", "a}", "a}:queue", "x:index", "}"] {
            let key = cluster.lock_key(id).unwrap();
            assert_eq!(cluster.found(&key), Found::Lock(id), "{key}");
            let (queue, entries) = cluster.queue_keys(&key);
            for own in [cluster.counter(&key).into_owned(), queue, entries] {
                assert_eq!(cluster.found(&own), Found::Own, "{own}");
            }
        }
        for (other, rest) in [
            ("{jobs:}", "}"),
            ("{jobs:a", "a"),
            ("{jobs:a}:other", "a}:other"),
            ("{jobs:}:index", "}:index"),
            ("jobs:a", "jobs:a"),
            ("{jobsx:a}", "{jobsx:a}"),
        ] {
            assert_eq!(cluster.found(other), Found::Other(rest), "{other}");
        }
    }

    #[test]
    fn rejects_bad_input() {
        assert!(Namespace::new("").is_err());
        let ns = Namespace::new("lock").unwrap();
        assert!(ns.lock_key("").unwrap_err().is_invalid_input());
        assert!(ns.lock_key(&"x".repeat(MAX_ID_LEN + 1)).is_err());
        assert!(ttl_millis(Duration::ZERO).is_err());
        assert!(ttl_millis(Duration::from_micros(999)).is_err());
        assert_eq!(ttl_millis(Duration::from_millis(1)).unwrap(), 1);
        assert!(ttl_millis(MAX_TTL).is_ok());
        assert!(ttl_millis(MAX_TTL + Duration::from_millis(1)).is_err());
        assert!(ttl_millis(Duration::MAX).is_err());
        assert!(check_index(0).is_err());
        assert!(check_index(-1).is_err());
        assert!(check_index(1).is_ok());
        assert!(check_index(MAX_INDEX).is_ok());
        assert!(check_index(MAX_INDEX + 1).is_err());
        assert!(check_index(i64::MAX).is_err());
    }

    proptest! {
        #[test]
        fn drift_is_small_and_positive(ms in 1u64..10_000_000) {
            let ttl = Duration::from_millis(ms);
            let d = drift(ttl);
            prop_assert!(d >= Duration::from_millis(2));
            prop_assert!(d <= ttl / 100 + Duration::from_millis(2));
            let custom = Drift { ppm: 50_000, fixed: Duration::ZERO }.of(ttl);
            prop_assert!(custom <= ttl / 20 + Duration::from_nanos(1));
        }

        #[test]
        fn any_nonempty_id_maps_to_prefixed_key(id in "\\PC{1,64}") {
            let ns = Namespace::new("lock").unwrap();
            let key = ns.lock_key(&id).unwrap();
            prop_assert_eq!(key, format!("lock:{id}"));
        }
    }
}
