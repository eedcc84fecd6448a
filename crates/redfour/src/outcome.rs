//! What the server answered: the public outcome types of release, renew and status, and the
//! parsing of the replies they come from (the status script's reply, the stored index).

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::error::{Error, ErrorKind, Result};

/// What a release did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReleaseOutcome {
    /// The caller held the lock; it is deleted and waiters are notified.
    Released,
    /// Nothing to release: the lock had expired (or was never taken). Counts as success.
    Expired,
    /// Someone else holds the lock now; it was left alone.
    Conflict,
}

impl ReleaseOutcome {
    /// Node redfour's word for it: `released`, `expired` or `conflict`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ReleaseOutcome::Released => "released",
            ReleaseOutcome::Expired => "expired",
            ReleaseOutcome::Conflict => "conflict",
        }
    }
}

impl fmt::Display for ReleaseOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a renewal did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RenewOutcome {
    /// The caller holds the lock; its expiry is reset to the new ttl.
    Renewed,
    /// The lock is gone (expired, released, or the server lost it): the lease is lost.
    Missing,
    /// Someone else holds the lock: the lease is lost.
    Conflict,
}

impl RenewOutcome {
    /// Node redfour's word for it: `renewed`, `missing` or `conflict`.
    pub fn as_str(&self) -> &'static str {
        match self {
            RenewOutcome::Renewed => "renewed",
            RenewOutcome::Missing => "missing",
            RenewOutcome::Conflict => "conflict",
        }
    }
}

impl fmt::Display for RenewOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A read-only view of one lock, from [`Client::status`](crate::Client::status).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LockStatus {
    /// The lock id, as given.
    pub id: String,
    /// Whether someone holds the lock.
    pub held: bool,
    /// The holder's index (from 1 to [`MAX_INDEX`](crate::MAX_INDEX)), -1 when not held.
    pub index: i64,
    /// The holder's remaining ttl, `None` when not held (a lock without expiry is
    /// [`CorruptData`](ErrorKind::CorruptData), not a status).
    pub ttl: Option<Duration>,
    /// Every field of the lock hash but `index`, as stored. A holder that is this library
    /// writes `host`, `pid`, `acquired_at` (Unix ms by the server's clock) and `attempt` (the
    /// id of the acquire attempt that won, which makes a cancelled acquire's clean-up exact);
    /// `description` only when one was given (the key is absent otherwise, never empty); and
    /// `handoff` (the waiter's queue token) on a lock that the fair queue handed to a waiter,
    /// or `*` on a free lock kept up to 50 ms for the queue's side from Node redfour clients
    /// (then it has no holder but the index and `acquired_at`: see the README, "Mixed fleets");
    /// `fair` = `0` on a lock taken without the fair queue (`ClientBuilder::fair(false)`,
    /// Redlock), which the queue counts as an outsider's holding.
    /// Empty for a Node holder, which writes `index` only; fields written by anyone else
    /// appear too.
    pub holder: BTreeMap<String, String>,
}

impl LockStatus {
    /// The holder's host name, when it recorded one.
    pub fn host(&self) -> Option<&str> {
        self.holder.get("host").map(String::as_str)
    }

    /// The holder's process id, when it recorded one.
    pub fn pid(&self) -> Option<u32> {
        self.holder.get("pid").and_then(|p| p.parse().ok())
    }

    /// The holder's description, when it gave one.
    pub fn description(&self) -> Option<&str> {
        self.holder.get("description").map(String::as_str)
    }

    /// When the lock was acquired, by the server's clock.
    pub fn acquired_at(&self) -> Option<SystemTime> {
        let ms: u64 = self.holder.get("acquired_at")?.parse().ok()?;
        UNIX_EPOCH.checked_add(Duration::from_millis(ms))
    }
}

pub(crate) fn parse_pttl(pttl: i64) -> Duration {
    Duration::from_millis(pttl.max(0) as u64)
}

pub(crate) fn parse_status(id: &str, key: &str, reply: Vec<redis::Value>) -> Result<LockStatus> {
    use redis::Value;
    fn text(v: &Value) -> Option<String> {
        match v {
            Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
            Value::SimpleString(s) => Some(s.clone()),
            Value::Int(i) => Some(i.to_string()),
            _ => None,
        }
    }
    let corrupt =
        |what: &str| Error::new(ErrorKind::CorruptData, what.to_owned()).with_key(key.to_owned());
    let kind = reply
        .first()
        .and_then(text)
        .ok_or_else(|| corrupt("unexpected status reply"))?;
    match kind.as_str() {
        "none" => {
            return Ok(LockStatus {
                id: id.to_owned(),
                held: false,
                index: -1,
                ttl: None,
                holder: BTreeMap::new(),
            })
        }
        "hash" => {}
        other => {
            return Err(corrupt(&format!(
                "the lock key holds a {other}, not a hash"
            )))
        }
    }
    let pttl = match reply.get(1) {
        Some(Value::Int(p)) => *p,
        _ => return Err(corrupt("unexpected status reply")),
    };
    let mut holder = BTreeMap::new();
    let mut index = None;
    for pair in reply[2..].chunks(2) {
        let [field, value] = pair else {
            return Err(corrupt("unexpected status reply"));
        };
        let (Some(field), Some(value)) = (text(field), text(value)) else {
            return Err(corrupt("unexpected status reply"));
        };
        if field == "index" {
            index = Some(parse_index(&value).ok_or_else(|| {
                corrupt("the lock hash has an index that is not an integer from 1 to 2^53-1")
            })?);
        } else {
            holder.insert(field, value);
        }
    }
    let Some(index) = index else {
        return Err(corrupt("the lock hash has no index field"));
    };
    if pttl < 0 {
        return Err(corrupt("the lock hash has no expiry"));
    }
    Ok(LockStatus {
        id: id.to_owned(),
        held: true,
        index,
        ttl: Some(parse_pttl(pttl)),
        holder,
    })
}

/// Reads an index as stored in the hash, in the one form the scripts accept too
/// (`redfour_is_index` in `scripts/lock.lua`): plain decimal digits without a leading zero,
/// from 1 to [`MAX_INDEX`](crate::MAX_INDEX). This library and Node redfour write nothing else
/// (Node's index is an `INCR` result that Redis formats with `%.17g`: plain digits below 1e17),
/// so `1e3`, `0x10`, ` 5`, `05`, `1.0`, `0` and `-5` are corrupt data, whoever reads them.
pub(crate) fn parse_index(s: &str) -> Option<i64> {
    let digits = s.as_bytes();
    if digits.len() > 16 || digits.first().is_none_or(|d| *d == b'0') {
        return None;
    }
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.parse::<i64>().ok().filter(|i| *i <= crate::MAX_INDEX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Any reply Redis (or something posing as it) could send, nested a little.
    fn any_value() -> impl Strategy<Value = redis::Value> {
        use redis::Value;
        let leaf = prop_oneof![
            Just(Value::Nil),
            any::<i64>().prop_map(Value::Int),
            prop::collection::vec(any::<u8>(), 0..24).prop_map(Value::BulkString),
            prop::sample::select(vec!["hash", "none", "string", "index", "-1", "7", "1e300"])
                .prop_map(|s| Value::BulkString(s.as_bytes().to_vec())),
            any::<String>().prop_map(Value::SimpleString),
            any::<f64>().prop_map(Value::Double),
        ];
        leaf.prop_recursive(2, 16, 4, |inner| {
            prop::collection::vec(inner, 0..4).prop_map(Value::Array)
        })
    }

    proptest! {
        /// Status replies are data from the server: whatever they hold, parsing answers a
        /// status or an error, never a panic.
        #[test]
        fn status_parsing_never_panics(reply in prop::collection::vec(any_value(), 0..8)) {
            let _ = parse_status("a", "lock:a", reply);
        }

        #[test]
        fn index_parsing_never_panics(text in any::<String>()) {
            let _ = parse_index(&text);
        }

        /// Exactly the decimal form of 1..=MAX_INDEX is an index: what `i64`'s `Display`
        /// writes for it, and nothing else.
        #[test]
        fn index_parsing_reads_exactly_the_decimals_in_range(n in any::<i64>(), text in "[-+ 0-9ex.]{0,20}") {
            let in_range = (1..=crate::MAX_INDEX).contains(&n);
            prop_assert_eq!(parse_index(&n.to_string()), in_range.then_some(n));
            let canonical = text.parse::<i64>().ok().filter(|i| {
                (1..=crate::MAX_INDEX).contains(i) && i.to_string() == text
            });
            prop_assert_eq!(parse_index(&text), canonical);
        }
    }

    #[test]
    fn index_parsing_refuses_every_other_notation() {
        assert_eq!(parse_index("42"), Some(42));
        assert_eq!(parse_index("1"), Some(1));
        assert_eq!(parse_index("9007199254740991"), Some(crate::MAX_INDEX));
        // Lua's `tonumber` and Rust's float parsing read most of these; Redis's `INCR` and this
        // library do not, and neither library writes them.
        for bad in [
            "",
            "0",
            "-5",
            "+5",
            "05",
            " 5",
            "5 ",
            "5\n",
            "1.5",
            "1.0",
            "1e3",
            "1E3",
            "1.79413e+15",
            "0x10",
            "inf",
            "nan",
            "abc",
            "9007199254740992",
            "99999999999999999999",
            "9223372036854775807",
            "\u{0665}",
        ] {
            assert_eq!(parse_index(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn status_parsing_rejects_garbage() {
        use redis::Value;
        let s = parse_status("a", "lock:a", vec![Value::SimpleString("none".into())]).unwrap();
        assert!(!s.held);
        let err =
            parse_status("a", "lock:a", vec![Value::SimpleString("string".into())]).unwrap_err();
        assert!(err.is_corrupt_data());
        let err = parse_status("a", "lock:a", vec![]).unwrap_err();
        assert!(err.is_corrupt_data());
        let ok = parse_status(
            "a",
            "lock:a",
            vec![
                Value::SimpleString("hash".into()),
                Value::Int(500),
                Value::BulkString(b"index".to_vec()),
                Value::BulkString(b"7".to_vec()),
                Value::BulkString(b"pid".to_vec()),
                Value::BulkString(b"12".to_vec()),
            ],
        )
        .unwrap();
        assert_eq!(ok.index, 7);
        assert_eq!(ok.pid(), Some(12));
        assert_eq!(ok.ttl, Some(Duration::from_millis(500)));
        let no_expiry = parse_status(
            "a",
            "lock:a",
            vec![
                Value::SimpleString("hash".into()),
                Value::Int(-1),
                Value::BulkString(b"index".to_vec()),
                Value::BulkString(b"7".to_vec()),
            ],
        )
        .unwrap_err();
        assert!(no_expiry.is_corrupt_data());
        let odd = parse_status(
            "a",
            "lock:a",
            vec![
                Value::SimpleString("hash".into()),
                Value::Int(5),
                Value::BulkString(b"index".to_vec()),
            ],
        )
        .unwrap_err();
        assert!(odd.is_corrupt_data());
    }
}
