#!/usr/bin/env python3
"""Where the server time of a lock step goes: redfour's scripts taken apart, beside Node
redfour's, timed by the server itself (`INFO commandstats`, the `usec` of EVALSHA).

    python3 scripts/lua-cost.py [--port PORT] [--steps N] [--rounds R]

Without --port, a private redis-server (from PATH) is started on a free port and stopped at the
end. Each variant is a script run N times (default 3000) on fresh keys, pipelined on one
connection; the rounds (default 9) run every variant once in turn, so that a slow spell of the
machine hits all of them alike, and the minimum and the median per call are printed, in µs.
The minimum is the cost with the least interference: compare minimums.

The variants:
- the library's scripts as it composes them (the lists in crates/redfour/src/scripts.rs are
  read, so this stays in step with the library), for each lock step, beside Node redfour's
  scripts (the same ones as the bench's `server_cost`, from crates/redfour-bench/src/stack.rs);
- the same Redis calls as redfour's fair acquire written inline, without shared functions, and
  with one thing changed at a time (no clock read, one field pair, EXISTS of one key, INCR for
  the counter);
- the least scripts that still make a step's Redis calls (no checks, no holder metadata): what
  a step costs at the very least, beside Node's;
- one Redis call alone in a script, and an empty script with each step's arguments: the price
  of each call, and of the call's arguments.

No dependency beyond Python 3: it speaks the Redis protocol itself (a dozen lines), because
this is a measuring tool run by hand, not part of the library.
"""

import argparse
import itertools
import os
import re
import socket
import sys

import redis_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "crates/redfour/src/scripts")


class Redis:
    """A minimal RESP2 client: commands in, replies out (errors as Exception values)."""

    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.file = self.sock.makefile("rb")

    @staticmethod
    def encode(args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        return b"".join(out)

    def read(self):
        line = self.file.readline()
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return Exception(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.file.read(n + 2)[:-2].decode(errors="replace")
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self.read() for _ in range(n)]
        raise RuntimeError("unexpected reply %r" % line)

    def pipeline(self, commands):
        self.sock.sendall(b"".join(self.encode(c) for c in commands))
        return [self.read() for _ in commands]

    def call(self, *args):
        return self.pipeline([list(args)])[0]

    def evalsha_usec(self):
        info = self.call("INFO", "commandstats")
        m = re.search(r"cmdstat_evalsha:calls=\d+,usec=(\d+)", info)
        return int(m.group(1)) if m else 0


def library_script(name):
    """The source of the library's script `name` as scripts.rs composes it (Node layout)."""
    with open(os.path.join(ROOT, "crates/redfour/src/scripts.rs")) as f:
        rust = f.read()
    m = re.search(r"\b%s: script!\((.*?)\)" % name, rust, re.S)
    if not m:
        sys.exit("lua-cost: no script `%s` in scripts.rs" % name)
    parts = re.findall(r'"scripts/([a-z_]+\.lua)"|(\$publish)', m.group(1))
    return "".join(lua("publish.lua" if publish else file) for file, publish in parts)


def lua(file):
    with open(os.path.join(SCRIPTS, file)) as f:
        return f.read()


def node_script(name):
    """Node redfour's acquire or release, as the bench runs it (stack.rs)."""
    with open(os.path.join(ROOT, "crates/redfour-bench/src/stack.rs")) as f:
        rust = f.read()
    return rust.split('const %s: &str = r#"' % name)[1].split('"#;')[0]


class Bench:
    def __init__(self, redis, steps):
        self.redis = redis
        self.steps = steps
        self.batch = itertools.count()
        self.ns = "luacost%d" % os.getpid()

    # Keys and arguments of each step, for the i-th step of batch b.
    def key(self, b, i):
        return "%s:%d:%d" % (self.ns, b, i)

    def fair_acquire(self, b, i):
        k = self.key(b, i)
        return [4, k, self.ns + "index", "%s-queue:%d:%d" % (self.ns, b, i),
                "%s-waiters:%d:%d" % (self.ns, b, i), 30000, "", 60000,
                self.ns + "-handoff:c", 5000, self.ns + "-release", "host", "myhost.example",
                "pid", "12345",
                "attempt", "7f3a9c2e1b"]

    def fair_release(self, b, i):
        return [4, self.key(b, i), self.ns + "index", "%s-queue:%d:%d" % (self.ns, b, i),
                "%s-waiters:%d:%d" % (self.ns, b, i), INDEX, self.ns + "-release", 5000]

    def node_acquire(self, b, i):
        return [2, self.key(b, i), self.ns + "nodeindex", 30000]

    def node_release(self, b, i):
        return [1, self.key(b, i), "12345", self.ns + "-release"]

    # Set-ups: what each key holds before its step.
    def held(self, b, i):
        k = self.key(b, i)
        return [["HSET", k, "index", INDEX, "acquired_at", "1764000000123", "host",
                 "myhost.example", "pid", "12345", "attempt", "7f3a9c2e1b"],
                ["PEXPIRE", k, 30000]]

    def held_with_waiter(self, b, i):
        args = self.fair_acquire(b, i)
        args[6] = "waiter%d" % i  # a token: the attempt queues
        args[9] = self.ns + "-nobody-listens"
        return self.held(b, i) + [["EVALSHA", self.queue_sha] + args]

    def held_by_node(self, b, i):
        k = self.key(b, i)
        return [["HSET", k, "index", "12345"], ["PEXPIRE", k, 30000]]

    def delete_own_keys(self):
        """Deletes the keys this run wrote (they all start with its namespace), and no other."""
        cursor = "0"
        while True:
            cursor, keys = self.redis.call("SCAN", cursor, "MATCH", self.ns + "*", "COUNT", 10000)
            if keys:
                self.redis.call("UNLINK", *keys)
            if cursor == "0":
                return

    def run(self, variants, rounds):
        shas = []
        for label, script, _, _ in variants:
            sha = self.redis.call("SCRIPT", "LOAD", script)
            if isinstance(sha, Exception):
                sys.exit("lua-cost: %s does not load: %s" % (label, sha))
            shas.append(sha)
        times = [[] for _ in variants]
        for _ in range(rounds):
            for n, (label, _, args, setup) in enumerate(variants):
                b = next(self.batch)
                if setup:
                    self.redis.pipeline([c for i in range(self.steps) for c in setup(b, i)])
                before = self.redis.evalsha_usec()
                replies = self.redis.pipeline(
                    [["EVALSHA", shas[n]] + args(b, i) for i in range(self.steps)])
                spent = self.redis.evalsha_usec() - before
                errors = [r for r in replies if isinstance(r, Exception)]
                if errors:
                    sys.exit("lua-cost: %s failed: %s" % (label, errors[0]))
                times[n].append(spent / self.steps)
                self.delete_own_keys()
        for (label, _, _, _), t in zip(variants, times):
            t.sort()
            print("%-66s min %6.2f  median %6.2f" % (label, t[0], t[len(t) // 2]))


INDEX = "1764000000123456"

INLINE_ACQUIRE = """
if redis.call('EXISTS', KEYS[1], KEYS[3]) == 0 then
  local t = redis.call('TIME')
  local now_us = tonumber(t[1]) * 1000000 + tonumber(t[2])
  local now = string.format('%d', now_us)
  local raw = redis.call('SET', KEYS[2], now, 'KEEPTTL', 'GET')
  local index = now_us
  if raw and tonumber(raw) >= now_us then
    index = tonumber(raw) + 1
    redis.call('SET', KEYS[2], string.format('%d', index), 'KEEPTTL')
  end
  redis.call('HSET', KEYS[1], 'index', string.format('%d', index),
    'acquired_at', string.format('%d', math.floor(now_us / 1000)), unpack(ARGV, 7))
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return {1, index, tonumber(ARGV[1])}
end
return {0}
"""


# The least scripts that still make a step's Redis calls: no checks, no holder metadata.
LEAST_ACQUIRE = """
if redis.call('EXISTS', KEYS[1], KEYS[3]) == 0 then
  local clock = redis.call('TIME')
  local now = string.format('%d', clock[1] * 1000000 + clock[2])
  redis.call('SET', KEYS[2], now, 'KEEPTTL', 'GET')
  redis.call('HSET', KEYS[1], 'index', now)
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return {1, now, 1}
end
return {0}
"""

LEAST_ACQUIRE_INCR = """
if redis.call('EXISTS', KEYS[1], KEYS[3]) == 0 then
  local index = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], 'index', index)
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  return {1, index, 1}
end
return {0}
"""

LEAST_HANDOVER = """
redis.call('PTTL', KEYS[1])
redis.call('HGET', KEYS[1], 'index')
local head = redis.call('LPOP', KEYS[3])
local entry = cjson.decode(redis.call('HGET', KEYS[4], head))
redis.call('HDEL', KEYS[4], head)
local clock = redis.call('TIME')
local now = string.format('%d', clock[1] * 1000000 + clock[2])
redis.call('SET', KEYS[2], now, 'KEEPTTL', 'GET')
redis.call('HSET', KEYS[1], 'index', now, 'handoff', head)
redis.call('PEXPIRE', KEYS[1], 5000)
redis.call('PUBLISH', entry.c, head .. ' ' .. now)
return {1, 'released', 1}
"""


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int,
                        help="a Redis on 127.0.0.1 to use; only keys named luacost<pid>* are written")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args()

    server = None
    port = args.port
    if port is None:
        server, port = redis_server.start("lua-cost")
    try:
        redis = Redis(port)
        bench = Bench(redis, args.steps)
        bench.queue_sha = redis.call("SCRIPT", "LOAD", library_script("fair_acquire"))
        version = re.search(r"redis_version:(\S+)", redis.call("INFO", "server")).group(1)
        print("Redis %s, %d steps per batch, %d rounds; server µs per call\n"
              % (version, args.steps, args.rounds))
        noop = "return {1, 1, 1}"
        print("# each step, redfour's scripts as shipped beside Node redfour's")
        bench.run([
            ("Node acquire (free key)", node_script("NODE_ACQUIRE"), bench.node_acquire, None),
            ("redfour fair acquire (free key, nobody queued)", library_script("fair_acquire"),
             bench.fair_acquire, None),
            ("Node release", node_script("NODE_RELEASE"), bench.node_release, bench.held_by_node),
            ("redfour fair release (nobody queued)", library_script("fair_release"),
             bench.fair_release, bench.held),
            ("redfour fair release handing over (one waiter queued)",
             library_script("fair_release"), bench.fair_release, bench.held_with_waiter),
        ], args.rounds)
        print("\n# redfour's fair acquire: its Redis calls inline, one change at a time")
        bench.run([
            ("inline: EXISTS 2 keys, TIME, SET GET, HSET 5 pairs, PEXPIRE", INLINE_ACQUIRE,
             bench.fair_acquire, None),
            ("  with every shared function of the fair scripts defined first",
             lua("publish.lua") + lua("lock.lua") + lua("grant.lua") + lua("fair_common.lua")
             + INLINE_ACQUIRE, bench.fair_acquire, None),
            ("  without TIME (a constant clock)", INLINE_ACQUIRE.replace(
                "redis.call('TIME')", "{'1764000000', '123456'}"), bench.fair_acquire, None),
            ("  HSET of the index only", INLINE_ACQUIRE.replace(
                ",\n    'acquired_at', string.format('%d', math.floor(now_us / 1000)), "
                "unpack(ARGV, 7))", ")"), bench.fair_acquire, None),
            ("  EXISTS of the lock only", INLINE_ACQUIRE.replace(
                "KEYS[1], KEYS[3]) == 0", "KEYS[1]) == 0"), bench.fair_acquire, None),
            ("  INCR for the counter (no floor)", INLINE_ACQUIRE.replace(
                "redis.call('SET', KEYS[2], now, 'KEEPTTL', 'GET')",
                "redis.call('INCR', KEYS[2]) and nil"), bench.fair_acquire, None),
        ], args.rounds)
        print("\n# the least scripts that still make a step's calls (no checks, no metadata)")
        bench.run([
            ("Node acquire", node_script("NODE_ACQUIRE"), bench.node_acquire, None),
            ("least acquire with the floor (EXISTS, TIME, SET GET, HSET, PEXPIRE)",
             LEAST_ACQUIRE, lambda b, i: bench.fair_acquire(b, i)[:6], None),
            ("  the same with INCR instead of the floor", LEAST_ACQUIRE_INCR,
             lambda b, i: bench.fair_acquire(b, i)[:6], None),
            ("Node release", node_script("NODE_RELEASE"), bench.node_release,
             bench.held_by_node),
            ("least handover (a release's, an acquire's and the queue's calls)",
             LEAST_HANDOVER, bench.fair_release, bench.held_with_waiter),
        ], args.rounds)
        print("\n# one call alone in a script (fresh keys), and empty scripts")
        bench.run([
            ("empty script, Node acquire's arguments (2 keys, 1 arg)", noop,
             bench.node_acquire, None),
            ("empty script, fair acquire's arguments (4 keys, 12 args)", noop,
             bench.fair_acquire, None),
            ("TIME", "redis.call('TIME') " + noop, bench.fair_acquire, None),
            ("EXISTS of 1 key", "redis.call('EXISTS', KEYS[1]) " + noop, bench.fair_acquire,
             None),
            ("EXISTS of 2 keys", "redis.call('EXISTS', KEYS[1], KEYS[3]) " + noop,
             bench.fair_acquire, None),
            ("INCR of the counter", "redis.call('INCR', KEYS[2]) " + noop, bench.fair_acquire,
             None),
            ("SET of the counter, KEEPTTL GET",
             "redis.call('SET', KEYS[2], '1764000000123456', 'KEEPTTL', 'GET') " + noop,
             bench.fair_acquire, None),
            ("HSET of 1 field pair",
             "redis.call('HSET', KEYS[1], 'index', '1764000000123456') " + noop,
             bench.fair_acquire, None),
            ("HSET of 5 field pairs",
             "redis.call('HSET', KEYS[1], 'index', '1764000000123456', 'acquired_at', "
             "'1764000000123', unpack(ARGV, 7)) " + noop, bench.fair_acquire, None),
            ("PEXPIRE", "redis.call('PEXPIRE', KEYS[1], ARGV[1]) " + noop, bench.fair_acquire,
             bench.held),
            ("PTTL", "redis.call('PTTL', KEYS[1]) " + noop, bench.fair_release, bench.held),
            ("HGET of the index", "redis.call('HGET', KEYS[1], 'index') " + noop,
             bench.fair_release, bench.held),
            ("LINDEX of an empty queue", "redis.call('LINDEX', KEYS[3], 0) " + noop,
             bench.fair_release, bench.held),
            ("DEL", "redis.call('DEL', KEYS[1]) " + noop, bench.fair_release, bench.held),
            ("PUBLISH (nobody subscribed)", "redis.call('PUBLISH', ARGV[2], KEYS[1]) " + noop,
             bench.fair_release, bench.held),
        ], args.rounds)
    finally:
        if server:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
