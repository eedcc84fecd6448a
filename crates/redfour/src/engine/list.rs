//! Listing on a direct engine: `SCAN` of the master (every master of a cluster), each step
//! pipelined with the bounded read (`list.lua`) of the keys the step before found, and a
//! waiter's look at its lock. Redlock's majority over its masters is in `quorum.rs`.

use redis::aio::ConnectionLike;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Pipeline, Value};

use super::{Conn, Direct, Master};
use crate::error::{Error, ErrorKind, Result};
use crate::keys::Found;
use crate::list::{parse_seen, Listing, Seen, SCAN_COUNT};
use crate::scripts::Eval;

/// A key that `SCAN` found, to be read.
struct ToRead {
    key: String,
    /// The lock id (or what follows the namespace's prefix).
    id: String,
    /// Whether the key is where a lock is kept (its queue is read too).
    lock: bool,
}

impl Direct {
    /// Every lock and foreign key of the namespace on this engine's master: the one server,
    /// the master the sentinels name, or each master of a cluster in turn.
    pub(crate) async fn list(&self) -> Result<Vec<Listing>> {
        let mut conn = self.connection().await?;
        let mut out = Vec::new();
        if matches!(self.master(), Master::Cluster { .. }) {
            for slot in master_slots(&mut conn).await? {
                self.scan(&mut conn, Some(slot), &mut out).await?;
            }
        } else {
            self.scan(&mut conn, None, &mut out).await?;
        }
        Ok(out)
    }

    /// The lock `id` (at `key`) as a listing shows it, and the place of the waiter `token` in
    /// its queue: one script call.
    pub(crate) async fn peek(&self, id: &str, key: &str, token: Option<&str>) -> Result<Seen> {
        let mut conn = self.connection().await?;
        let reply: Value = self
            .ctx()
            .ns
            .list_call(key, true, token)
            .invoke(&mut conn)
            .await
            .map_err(|e| Error::from_redis(e, Some(key)))?;
        parse_seen(id, key, &reply)
    }

    /// `SCAN`s one master (on a cluster, the master of `slot`) to the end, reading each key it
    /// finds; the listings go to `out`. Each round trip carries the reads of the keys found by
    /// the step before and the next step.
    async fn scan(&self, conn: &mut Conn, slot: Option<u16>, out: &mut Vec<Listing>) -> Result<()> {
        let ns = &self.ctx().ns;
        let pattern = ns.scan_pattern();
        // `None` once the scan is complete.
        let mut cursor = Some("0".to_owned());
        let mut found: Vec<ToRead> = Vec::new();
        while cursor.is_some() || !found.is_empty() {
            let calls: Vec<Eval> = found
                .iter()
                .map(|f| ns.list_call(&f.key, f.lock, None))
                .collect();
            let mut pipe = redis::pipe();
            for call in &calls {
                pipe.add_command(call.parts().0.clone());
            }
            if let Some(cursor) = &cursor {
                pipe.cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg(&pattern)
                    .arg("COUNT")
                    .arg(SCAN_COUNT);
            }
            let mut replies = send(conn, &pipe, slot).await?;
            let step = match cursor {
                Some(_) => replies.pop(),
                None => None,
            };
            if replies.iter().any(is_noscript) {
                // The server lost the script (a restart, `SCRIPT FLUSH`): load it, read again.
                crate::scripts::LIST
                    .load_async(conn)
                    .await
                    .map_err(|e| Error::from_redis(e, None))?;
                let mut reads = redis::pipe();
                for call in &calls {
                    reads.add_command(call.parts().0.clone());
                }
                replies = send(conn, &reads, slot).await?;
            }
            if replies.len() != calls.len() {
                return Err(Error::new(
                    ErrorKind::Script,
                    "a pipeline answered fewer replies than it had commands",
                ));
            }
            for ((read, call), reply) in found.iter().zip(&calls).zip(replies) {
                let reply = match reply {
                    // On a cluster, a key that moved since the step found it (`MOVED`, `ASK`):
                    // read it where it is now. Elsewhere the error comes back the same.
                    Value::ServerError(_) => call
                        .invoke::<Value>(conn)
                        .await
                        .map_err(|e| Error::from_redis(e, Some(&read.key)))?,
                    reply => reply,
                };
                if let Some(listing) = parse_seen(&read.id, &read.key, &reply)?.listing {
                    out.push(listing);
                }
            }
            found.clear();
            if let Some(step) = step {
                let (next, keys) = parse_step(step)?;
                cursor = (next != "0").then_some(next);
                for key in keys {
                    let key = match String::from_utf8(key) {
                        Ok(key) => key,
                        // Never a lock (ids are text), and not readable by name here.
                        Err(e) => {
                            out.push(Listing::unreadable(&e.into_bytes()));
                            continue;
                        }
                    };
                    let read = match ns.found(&key) {
                        Found::Lock(id) => (id.to_owned(), true),
                        Found::Own => continue,
                        Found::Other(rest) => (rest.to_owned(), false),
                    };
                    found.push(ToRead {
                        id: read.0,
                        lock: read.1,
                        key,
                    });
                }
            }
        }
        Ok(())
    }
}

fn is_noscript(reply: &Value) -> bool {
    matches!(reply, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

/// Sends `pipe` on `conn`; on a cluster, to the master of `slot`.
async fn send(conn: &mut Conn, pipe: &Pipeline, slot: Option<u16>) -> Result<Vec<Value>> {
    let count = pipe.len();
    let replies = match (conn, slot) {
        (Conn::Cluster(cluster), Some(slot)) => {
            let route = SingleNodeRoutingInfo::SpecificNode(Route::new(slot, SlotAddr::Master));
            cluster.route_pipeline(pipe.clone(), 0, count, route).await
        }
        (conn, _) => conn.req_packed_commands(pipe, 0, count).await,
    };
    replies.map_err(|e| Error::from_redis(e, None))
}

/// A `SCAN` reply: the next cursor and the keys found.
fn parse_step(reply: Value) -> Result<(String, Vec<Vec<u8>>)> {
    let unexpected = || Error::new(ErrorKind::Script, "unexpected SCAN reply");
    let Value::Array(parts) = reply else {
        if let Value::ServerError(e) = reply {
            return Err(Error::from_redis(e.into(), None));
        }
        return Err(unexpected());
    };
    let mut parts = parts.into_iter();
    let (Some(Value::BulkString(cursor)), Some(Value::Array(keys))) = (parts.next(), parts.next())
    else {
        return Err(unexpected());
    };
    let cursor = String::from_utf8(cursor).map_err(|_| unexpected())?;
    let keys = keys
        .into_iter()
        .map(|key| match key {
            Value::BulkString(key) => Ok(key),
            _ => Err(unexpected()),
        })
        .collect::<Result<_>>()?;
    Ok((cursor, keys))
}

/// One slot of each master of the cluster (`CLUSTER SLOTS`), to route each master's `SCAN`
/// by: a master is scanned once, whatever the number of its slot ranges.
async fn master_slots(conn: &mut Conn) -> Result<Vec<u16>> {
    let Conn::Cluster(cluster) = conn else {
        return Ok(Vec::new());
    };
    let mut cmd = redis::cmd("CLUSTER");
    cmd.arg("SLOTS");
    let reply = cluster
        .route_command(cmd, RoutingInfo::SingleNode(SingleNodeRoutingInfo::Random))
        .await
        .map_err(|e| Error::from_redis(e, None))?;
    masters_of(&reply)
        .ok_or_else(|| Error::new(ErrorKind::Script, "unexpected CLUSTER SLOTS reply"))
}

/// From a `CLUSTER SLOTS` reply (`[[start, end, [host, port, ...], replicas...], ...]`): the
/// first slot of each master.
fn masters_of(reply: &Value) -> Option<Vec<u16>> {
    let Value::Array(ranges) = reply else {
        return None;
    };
    let mut masters: Vec<(&Value, i64, u16)> = Vec::new();
    for range in ranges {
        let Value::Array(range) = range else {
            return None;
        };
        let (Some(Value::Int(start)), Some(Value::Array(master))) = (range.first(), range.get(2))
        else {
            return None;
        };
        let (Some(host), Some(Value::Int(port))) = (master.first(), master.get(1)) else {
            return None;
        };
        let start = u16::try_from(*start).ok()?;
        if !masters.iter().any(|(h, p, _)| *h == host && p == port) {
            masters.push((host, *port, start));
        }
    }
    Some(masters.into_iter().map(|(_, _, slot)| slot).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::BulkString(host.as_bytes().to_vec()),
            Value::Int(port),
            Value::BulkString(b"id".to_vec()),
        ])
    }

    #[test]
    fn one_slot_per_master() {
        let range =
            |start, end, master| Value::Array(vec![Value::Int(start), Value::Int(end), master]);
        let reply = Value::Array(vec![
            range(0, 99, node("10.0.0.1", 7000)),
            range(100, 199, node("10.0.0.2", 7000)),
            range(200, 16383, node("10.0.0.1", 7000)),
        ]);
        assert_eq!(masters_of(&reply), Some(vec![0, 100]));
        assert_eq!(masters_of(&Value::Array(vec![Value::Int(1)])), None);
        assert_eq!(masters_of(&Value::Nil), None);
    }

    #[test]
    fn scan_steps_are_parsed() {
        let step = Value::Array(vec![
            Value::BulkString(b"17".to_vec()),
            Value::Array(vec![Value::BulkString(b"lock:a".to_vec())]),
        ]);
        let (cursor, keys) = parse_step(step).unwrap();
        assert_eq!(cursor, "17");
        assert_eq!(keys, vec![b"lock:a".to_vec()]);
        assert!(parse_step(Value::Array(vec![Value::Int(0)])).is_err());
    }
}
