//! What observing locks answers: the public types of [`Client::list`] (every lock of the
//! namespace, read with `SCAN`) and [`Client::wait_progress`] (a waiter's view of the lock it
//! waits for), the parsing of `list.lua`'s reply and Redlock's majority rule for listings. Where
//! the keys are scanned is the engine's business (`engine/list.rs`); which keys may hold a lock
//! is `keys.rs`'s; the two methods are in `client.rs`.
//!
//! [`Client::list`]: crate::Client::list
//! [`Client::wait_progress`]: crate::Client::wait_progress

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::error::{Error, ErrorKind, Result};
use crate::outcome::parse_index;

/// What a [`Listing`] is.
///
/// Only plain locks exist today; shared locks and counting semaphores will add their kinds,
/// hence `#[non_exhaustive]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ListingKind {
    /// A lock, held (by this library or by Node redfour).
    Lock,
    /// A key where the namespace keeps its locks that holds something else: another type, a
    /// hash without a valid index, or without expiry (what every operation on it refuses as
    /// [`CorruptData`](ErrorKind::CorruptData)). Listed and left alone.
    Foreign,
}

impl ListingKind {
    /// `lock` or `foreign`, as `redfour list --json` writes it.
    pub fn as_str(&self) -> &'static str {
        match self {
            ListingKind::Lock => "lock",
            ListingKind::Foreign => "foreign",
        }
    }
}

impl fmt::Display for ListingKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a holder of this library recorded about itself in the lock: Node redfour records
/// nothing, and its locks have no `Holder`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Holder {
    /// The holder's host name.
    pub host: Option<String>,
    /// The holder's process id.
    pub pid: Option<u32>,
    /// The description given to [`LockBuilder::description`](crate::LockBuilder::description)
    /// (`redfour run --description`). One longer than 4 KiB is not read: it shows as
    /// `… (N bytes)`.
    pub description: Option<String>,
}

/// One key of the namespace, as [`Client::list`](crate::Client::list) found it: a held lock, or a foreign key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Listing {
    /// The lock id: the key without the namespace's prefix (`NS:`, or `{NS:` and the closing
    /// `}` on a cluster). For a foreign key that is not where a lock is kept (on a cluster,
    /// `{NS:x` without its `}`), what follows `{NS:`.
    pub id: String,
    /// The Redis key.
    pub key: String,
    /// A lock, or a foreign key.
    pub kind: ListingKind,
    /// The holder's fencing index (locks only).
    pub index: Option<i64>,
    /// The holder's remaining ttl when the key was read (locks only).
    pub ttl: Option<Duration>,
    /// How long the holder has held the lock, by the server's clock: from its `acquired_at`
    /// (which this library writes, Node redfour does not; on a lock handed to a queued waiter,
    /// from the handoff).
    pub held_for: Option<Duration>,
    /// Who holds it, when the holder recorded it (this library does; Node redfour does not).
    pub holder: Option<Holder>,
    /// How many waiters stand in the lock's fair queue, counting entries of waiters that died
    /// and whose entries have not expired yet. `None` with Redlock, which has no queue, and for
    /// foreign keys. Node redfour's waiters, and those of clients with
    /// [`fair(false)`](crate::ClientBuilder::fair), do not queue and are not counted.
    pub waiters: Option<u64>,
    /// For a foreign key, why it is not a lock ("a string, not a hash", "a hash without
    /// expiry", ...).
    pub foreign: Option<String>,
}

/// A waiter's view of the lock it waits for: who holds it, and where the waiter stands in the
/// queue. From [`Client::wait_progress`](crate::Client::wait_progress).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WaitProgress {
    /// The lock as [`Client::list`](crate::Client::list) shows it; `None` when nobody holds it (a waiter is about
    /// to take it).
    pub lock: Option<Listing>,
    /// The place in the lock's fair queue of this client's waiter, from 1 (next in line):
    /// entries of waiters that died count until they expire. `None` when this client has no
    /// waiter of the lock in its queue: none waits, its first attempt has not queued it yet,
    /// the lock was just handed to it, or there is no queue (Redlock,
    /// [`fair(false)`](crate::ClientBuilder::fair)).
    pub place: Option<u64>,
}

/// How many keys one `SCAN` step asks for. Each step, pipelined with the reads of the keys the
/// step before found, is one round trip; a step of 250 costs the server about 0.2 ms on a
/// namespace of 100,000 keys (1,000 cost 0.8 ms: too long a stall for the other clients).
pub(crate) const SCAN_COUNT: u64 = 250;

impl Listing {
    /// A key whose name is not UTF-8 where the namespace keeps its locks: never a lock (ids
    /// are text), listed as foreign without being read.
    pub(crate) fn unreadable(key: &[u8]) -> Listing {
        let key = String::from_utf8_lossy(key).into_owned();
        Listing {
            id: key.clone(),
            key,
            kind: ListingKind::Foreign,
            index: None,
            ttl: None,
            held_for: None,
            holder: None,
            waiters: None,
            foreign: Some("a key whose name is not UTF-8".to_owned()),
        }
    }
}

/// One key as one server answered `list.lua`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Seen {
    /// `None`: nothing is kept there (the key is gone, or it holds no lock).
    pub(crate) listing: Option<Listing>,
    /// The asked waiter's place in the queue, from 1.
    pub(crate) place: Option<u64>,
}

/// Reads `list.lua`'s reply about `key` (where the lock `id` is kept, or a key that is not
/// where a lock is kept, with `id` what follows the namespace's prefix).
pub(crate) fn parse_seen(id: &str, key: &str, reply: &redis::Value) -> Result<Seen> {
    use redis::Value;
    let unexpected = || {
        Error::new(
            ErrorKind::Script,
            "unexpected reply from the listing script",
        )
        .with_key(key)
    };
    let Value::Array(items) = reply else {
        return Err(unexpected());
    };
    let int = |i: usize| match items.get(i) {
        Some(Value::Int(n)) => Some(*n),
        _ => None,
    };
    let (Some(kind), Some(pttl), Some(now_ms), Some(queued), Some(place)) =
        (text(items.first()), int(1), int(2), int(3), int(4))
    else {
        return Err(unexpected());
    };
    let place = u64::try_from(place).ok().filter(|p| *p > 0);
    let listing = |kind: ListingKind| Listing {
        id: id.to_owned(),
        key: key.to_owned(),
        kind,
        index: None,
        ttl: None,
        held_for: None,
        holder: None,
        waiters: None,
        foreign: None,
    };
    let foreign = |why: String| Seen {
        listing: Some(Listing {
            foreign: Some(why),
            ..listing(ListingKind::Foreign)
        }),
        place,
    };
    match kind.as_str() {
        "none" => {
            return Ok(Seen {
                listing: None,
                place,
            })
        }
        "hash" => {}
        other => return Ok(foreign(format!("a {other}, not a hash"))),
    }
    // The index, then the other fields of `LISTED_FIELDS`, in order.
    let field = |i: usize| -> std::result::Result<Option<String>, i64> {
        match items.get(5 + i) {
            None | Some(Value::Nil) => Ok(None),
            Some(Value::Int(len)) => Err(*len),
            Some(other) => Ok(text(Some(other))),
        }
    };
    let index = match field(0) {
        Ok(Some(raw)) => parse_index(&raw),
        Ok(None) => return Ok(foreign("a hash without an index field".to_owned())),
        Err(_) => None,
    };
    let Some(index) = index else {
        return Ok(foreign(
            "a hash whose index is not an integer from 1 to 2^53-1".to_owned(),
        ));
    };
    if pttl < 0 {
        return Ok(foreign("a hash without expiry".to_owned()));
    }
    let value = |i: usize| match field(i) {
        Ok(v) => v,
        Err(len) => Some(format!("… ({len} bytes)")),
    };
    let acquired_at = value(1).and_then(|at| at.parse::<i64>().ok());
    let held_for =
        acquired_at.map(|at| Duration::from_millis(now_ms.saturating_sub(at).max(0) as u64));
    let holder = Holder {
        host: value(2),
        pid: value(3).and_then(|pid| pid.parse().ok()),
        description: value(4),
    };
    let recorded = holder.host.is_some() || holder.pid.is_some() || holder.description.is_some();
    Ok(Seen {
        listing: Some(Listing {
            index: Some(index),
            ttl: Some(Duration::from_millis(pttl as u64)),
            held_for,
            holder: recorded.then_some(holder),
            // -1: the queue key holds something else.
            waiters: u64::try_from(queued).ok(),
            ..listing(ListingKind::Lock)
        }),
        place,
    })
}

fn text(value: Option<&redis::Value>) -> Option<String> {
    use redis::Value;
    match value? {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

/// The Redlock view of one key from what each master saw (`None`: that master did not
/// answer): the lock a majority of the masters (`quorum` of them) hold with one index, the one
/// with the shortest ttl among them; else foreign data, if any master holds some; else
/// nothing. Queues are not Redlock's: no waiters, no place.
pub(crate) fn majority(seen: &[Option<Seen>], quorum: usize) -> Seen {
    let listings = || seen.iter().flatten().filter_map(|s| s.listing.as_ref());
    let locks = || listings().filter(|l| l.kind == ListingKind::Lock);
    let agreed = locks()
        .filter(|candidate| locks().filter(|l| l.index == candidate.index).count() >= quorum)
        .min_by_key(|l| l.ttl);
    let chosen = agreed.or_else(|| listings().find(|l| l.kind == ListingKind::Foreign));
    Seen {
        listing: chosen.map(|l| Listing {
            waiters: None,
            ..l.clone()
        }),
        place: None,
    }
}

/// The Redlock listing from each master's (`None`: that master could not be listed): every
/// key by [`majority`].
pub(crate) fn majority_listing(
    per_master: Vec<Option<Vec<Listing>>>,
    quorum: usize,
) -> Vec<Listing> {
    let masters = per_master.len();
    let mut by_key: BTreeMap<String, Vec<Option<Seen>>> = BTreeMap::new();
    for (i, listings) in per_master.into_iter().enumerate() {
        for listing in listings.into_iter().flatten() {
            let seen = by_key
                .entry(listing.key.clone())
                .or_insert_with(|| vec![None; masters]);
            seen[i] = Some(Seen {
                listing: Some(listing),
                place: None,
            });
        }
    }
    by_key
        .values()
        .filter_map(|seen| majority(seen, quorum).listing)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use redis::Value;

    fn bulk(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    /// A `list.lua` reply about a hash.
    fn hash(pttl: i64, queued: i64, place: i64, fields: Vec<Value>) -> Value {
        let mut items = vec![
            Value::SimpleString("hash".into()),
            Value::Int(pttl),
            Value::Int(1_000_000),
            Value::Int(queued),
            Value::Int(place),
        ];
        items.extend(fields);
        Value::Array(items)
    }

    #[test]
    fn a_lock_of_this_library() {
        let reply = hash(
            5_000,
            3,
            2,
            vec![
                bulk("42"),
                bulk("990000"),
                bulk("box"),
                bulk("123"),
                bulk("nightly"),
            ],
        );
        let seen = parse_seen("job", "lock:job", &reply).unwrap();
        assert_eq!(seen.place, Some(2));
        let lock = seen.listing.unwrap();
        assert_eq!(lock.kind, ListingKind::Lock);
        assert_eq!(lock.index, Some(42));
        assert_eq!(lock.ttl, Some(Duration::from_secs(5)));
        assert_eq!(lock.held_for, Some(Duration::from_secs(10)));
        assert_eq!(lock.waiters, Some(3));
        let holder = lock.holder.unwrap();
        assert_eq!(holder.host.as_deref(), Some("box"));
        assert_eq!(holder.pid, Some(123));
        assert_eq!(holder.description.as_deref(), Some("nightly"));
    }

    #[test]
    fn a_node_lock_has_no_holder() {
        let reply = hash(
            5_000,
            0,
            0,
            vec![bulk("7"), Value::Nil, Value::Nil, Value::Nil, Value::Nil],
        );
        let lock = parse_seen("n", "lock:n", &reply).unwrap().listing.unwrap();
        assert_eq!(lock.kind, ListingKind::Lock);
        assert_eq!(lock.index, Some(7));
        assert_eq!(lock.holder, None);
        assert_eq!(lock.held_for, None);
        assert_eq!(lock.waiters, Some(0));
    }

    #[test]
    fn foreign_keys_say_why() {
        let string = Value::Array(vec![
            Value::SimpleString("string".into()),
            Value::Int(-1),
            Value::Int(1),
            Value::Int(0),
            Value::Int(0),
        ]);
        let cases = [
            (string, "a string, not a hash"),
            (
                hash(5, 0, 0, vec![Value::Nil]),
                "a hash without an index field",
            ),
            (hash(5, 0, 0, vec![Value::Int(300)]), "not an integer"),
            (hash(5, 0, 0, vec![bulk("05")]), "not an integer"),
            (hash(-1, 0, 0, vec![bulk("5")]), "without expiry"),
        ];
        for (reply, why) in cases {
            let listing = parse_seen("x", "lock:x", &reply).unwrap().listing.unwrap();
            assert_eq!(listing.kind, ListingKind::Foreign);
            assert!(
                listing.foreign.as_deref().unwrap().contains(why),
                "{listing:?}"
            );
            assert_eq!(listing.index, None);
            assert_eq!(listing.waiters, None);
        }
        let none = Value::Array(vec![
            Value::SimpleString("none".into()),
            Value::Int(-2),
            Value::Int(1),
            Value::Int(2),
            Value::Int(1),
        ]);
        let seen = parse_seen("x", "lock:x", &none).unwrap();
        assert_eq!((seen.listing, seen.place), (None, Some(1)));
    }

    #[test]
    fn a_long_description_is_not_shown() {
        let reply = hash(
            5,
            0,
            0,
            vec![
                bulk("1"),
                bulk("x"),
                Value::Nil,
                bulk("pid?"),
                Value::Int(9000),
            ],
        );
        let lock = parse_seen("x", "lock:x", &reply).unwrap().listing.unwrap();
        let holder = lock.holder.unwrap();
        assert_eq!(holder.description.as_deref(), Some("… (9000 bytes)"));
        assert_eq!(holder.pid, None, "a pid that is not a number");
        assert_eq!(lock.held_for, None, "an acquired_at that is not a number");
    }

    fn held(key: &str, index: i64, ttl_ms: u64) -> Listing {
        Listing {
            id: key.to_owned(),
            key: key.to_owned(),
            kind: ListingKind::Lock,
            index: Some(index),
            ttl: Some(Duration::from_millis(ttl_ms)),
            held_for: None,
            holder: None,
            waiters: Some(0),
            foreign: None,
        }
    }

    fn seen(listing: Option<Listing>) -> Option<Seen> {
        Some(Seen {
            listing,
            place: None,
        })
    }

    #[test]
    fn redlock_lists_what_a_majority_holds() {
        let a = || held("a", 5, 900);
        // Held on two of three with the same index: listed, with the shortest ttl.
        let agreed = majority(
            &[seen(Some(a())), seen(Some(held("a", 5, 800))), seen(None)],
            2,
        );
        let lock = agreed.listing.unwrap();
        assert_eq!(lock.ttl, Some(Duration::from_millis(800)));
        assert_eq!(lock.waiters, None, "no queue with Redlock");
        // Two indexes, or one master: not listed.
        assert_eq!(
            majority(&[seen(Some(a())), seen(Some(held("a", 6, 900))), None], 2).listing,
            None
        );
        assert_eq!(majority(&[seen(Some(a())), None, None], 2).listing, None);
        // Foreign data on one master: listed as foreign unless a majority holds a lock.
        let mut odd = held("a", 1, 1);
        odd.kind = ListingKind::Foreign;
        odd.index = None;
        let listed = majority(&[seen(Some(odd.clone())), seen(Some(a())), seen(None)], 2);
        assert_eq!(listed.listing.unwrap().kind, ListingKind::Foreign);
        let listed = majority(&[seen(Some(odd)), seen(Some(a())), seen(Some(a()))], 2);
        assert_eq!(listed.listing.unwrap().kind, ListingKind::Lock);

        let all = majority_listing(
            vec![
                Some(vec![a(), held("b", 1, 10)]),
                None,
                Some(vec![a(), held("c", 1, 10)]),
            ],
            2,
        );
        assert_eq!(
            all.iter().map(|l| l.key.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
    }

    /// Any reply Redis (or something posing as it) could send, nested a little.
    fn any_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::Int),
            prop::collection::vec(any::<u8>(), 0..24).prop_map(Value::BulkString),
            prop::sample::select(vec!["hash", "none", "string", "-1", "7", "1e300"])
                .prop_map(|s| Value::BulkString(s.as_bytes().to_vec())),
            any::<String>().prop_map(Value::SimpleString),
        ];
        leaf.prop_recursive(2, 16, 12, |inner| {
            prop::collection::vec(inner, 0..12).prop_map(Value::Array)
        })
    }

    proptest! {
        /// Listing replies are data from the server: whatever they hold, parsing answers a
        /// listing or an error, never a panic.
        #[test]
        fn parsing_never_panics(reply in any_value()) {
            let _ = parse_seen("a", "lock:a", &reply);
        }
    }
}
