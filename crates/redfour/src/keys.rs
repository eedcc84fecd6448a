//! Key and channel names of the Node-compatible layout, and validation of user input.

use std::time::Duration;

use crate::error::{Error, Result};

/// The longest lock id (and namespace) accepted, in bytes: 1 MiB. Ids are data of any content
/// (quotes, newlines, Lua syntax, braces); the bound only keeps a runaway id from becoming a
/// runaway key in every request and notice.
pub const MAX_ID_LEN: usize = 1 << 20;

/// The longest ttl accepted: 2^53 − 1 ms, so that Node (JavaScript numbers) reads it exactly and
/// Redis never overflows the expiry time.
pub const MAX_TTL: Duration = Duration::from_millis((1 << 53) - 1);

#[derive(Debug, Clone)]
pub(crate) struct Namespace {
    name: String,
    counter: String,
    channel: String,
}

impl Namespace {
    pub(crate) fn new(name: &str) -> Result<Self> {
        if name.is_empty() {
            return Err(Error::invalid("the namespace must not be empty"));
        }
        if name.len() > MAX_ID_LEN {
            return Err(Error::invalid(format!(
                "the namespace is longer than {MAX_ID_LEN} bytes"
            )));
        }
        Ok(Namespace {
            name: name.to_owned(),
            counter: format!("{name}index"),
            channel: format!("{name}-release"),
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// `{ns}index`: Node redfour's counter key.
    pub(crate) fn counter(&self) -> &str {
        &self.counter
    }

    /// `{ns}-release`: Node redfour's release channel.
    pub(crate) fn channel(&self) -> &str {
        &self.channel
    }

    /// The fair queue of the lock at `lock_key` (`{ns}:{id}`): the FIFO list of waiter tokens
    /// `{ns}-queue:{id}` and the hash of their entries `{ns}-waiters:{id}`. Node redfour never
    /// reads them.
    pub(crate) fn queue_keys(&self, lock_key: &str) -> (String, String) {
        let id = lock_key.get(self.name.len() + 1..).unwrap_or(lock_key);
        (
            concat(&[&self.name, "-queue:", id]),
            concat(&[&self.name, "-waiters:", id]),
        )
    }

    /// `{ns}-handoff:{client}`: the channel on which one client hears that a lock was handed
    /// to one of its waiters.
    pub(crate) fn handoff_channel(&self, client_token: &str) -> String {
        format!("{}-handoff:{}", self.name, client_token)
    }

    /// `{ns}:{id}`, after checking the id.
    pub(crate) fn lock_key(&self, id: &str) -> Result<String> {
        check_id(id)?;
        Ok(concat(&[&self.name, ":", id]))
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
    if index <= 0 {
        return Err(Error::invalid(format!(
            "the index must be a positive number (got {index})"
        )));
    }
    Ok(())
}

/// The local safety margin subtracted from a lease: 1% of the ttl plus 2 ms (as Redlock's).
pub(crate) fn drift(ttl: Duration) -> Duration {
    ttl / 100 + Duration::from_millis(2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn node_layout() {
        let ns = Namespace::new("mylock").unwrap();
        assert_eq!(ns.lock_key("abc").unwrap(), "mylock:abc");
        assert_eq!(ns.counter(), "mylockindex");
        assert_eq!(ns.channel(), "mylock-release");
        let (queue, entries) = ns.queue_keys("mylock:a:b");
        assert_eq!(queue, "mylock-queue:a:b");
        assert_eq!(entries, "mylock-waiters:a:b");
        assert_eq!(ns.handoff_channel("c1"), "mylock-handoff:c1");
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
    }

    proptest! {
        #[test]
        fn drift_is_small_and_positive(ms in 1u64..10_000_000) {
            let ttl = Duration::from_millis(ms);
            let d = drift(ttl);
            prop_assert!(d >= Duration::from_millis(2));
            prop_assert!(d <= ttl / 100 + Duration::from_millis(2));
        }

        #[test]
        fn any_nonempty_id_maps_to_prefixed_key(id in "\\PC{1,64}") {
            let ns = Namespace::new("lock").unwrap();
            let key = ns.lock_key(&id).unwrap();
            prop_assert_eq!(key, format!("lock:{id}"));
        }
    }
}
