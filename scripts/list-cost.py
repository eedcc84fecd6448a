#!/usr/bin/env python3
"""What `redfour list` costs on a namespace of 100,000 keys: its wall time, and how long the
server spent in its slowest command meanwhile (SLOWLOG of every command of 20 µs or more).

    cargo build --release -p redfour-cli
    python3 scripts/list-cost.py [--runs N] [--others N] [--bin target/release/redfour]

A private redis-server (from PATH) is started on a free port and stopped at the end; nothing
else is touched. The namespace `lock` is filled, by the server itself in short Lua calls of
5,000 keys each, with the keys a busy deployment has:
- 50,000 locks as this library writes them (index, acquired_at, host, pid, attempt,
  description), with an hour of ttl;
- 10,000 locks as Node redfour writes them (index only);
- 5,000 fair queues of two waiters each (`lock-queue:ID` and `lock-waiters:ID`: 10,000 keys);
- 29,999 foreign strings where locks are kept (`lock:other-N`), and the counter `lockindex`;
and with --others N, N more keys of another namespace (SCAN walks them too).

Each run is `redfour list --json` to /dev/null; the minimum and the median wall time are
printed; then what another client saw meanwhile (PING round trips, one after the other, during
the runs and for 3 s before them); then, over all runs, the commands the server ran (calls,
µs per call) and the slowest call of each (SLOWLOG: execution time on the server, which on a
busy machine includes the moments the server was not scheduled).

No dependency beyond Python 3: the Redis client is scripts/lua-cost.py's.
"""

import argparse
import importlib.util
import os
import statistics
import subprocess
import sys
import threading
import time

import redis_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Commands that took this long or more are logged by the server (SLOWLOG) during the runs.
SLOW_US = 20

_spec = importlib.util.spec_from_file_location(
    "lua_cost", os.path.join(ROOT, "scripts", "lua-cost.py"))
_lua_cost = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_lua_cost)
Redis = _lua_cost.Redis

# Each call writes keys FIRST .. LAST of one kind; short calls keep the server responsive.
FILL = {
    "library": """
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  local key = 'lock:job-' .. i
  redis.call('HSET', key, 'index', string.format('%d', 1764000000000000 + i), 'acquired_at',
    '1764000000000', 'host', 'worker-' .. (i % 40), 'pid', tostring(1000 + i % 30000),
    'attempt', 'c' .. i .. '#0', 'description', 'redfour run ./nightly-' .. (i % 100) .. '.sh')
  redis.call('PEXPIRE', key, 3600000)
end
return 1""",
    "node": """
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  redis.call('HSET', 'lock:node-' .. i, 'index', tostring(i))
  redis.call('PEXPIRE', 'lock:node-' .. i, 3600000)
end
return 1""",
    "queues": """
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  redis.call('RPUSH', 'lock-queue:job-' .. i, 'a/1', 'b/2')
  redis.call('HSET', 'lock-waiters:job-' .. i, 'a/1', '{}', 'b/2', '{}')
  redis.call('PEXPIRE', 'lock-queue:job-' .. i, 3600000)
  redis.call('PEXPIRE', 'lock-waiters:job-' .. i, 3600000)
end
return 1""",
    "foreign": """
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  redis.call('SET', 'lock:other-' .. i, 'x')
end
return 1""",
    "others": """
for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do
  redis.call('SET', 'cache:item-' .. i, 'x')
end
return 1""",
}


def fill(redis, kind, count, chunk=5000):
    for first in range(1, count + 1, chunk):
        last = min(first + chunk - 1, count)
        reply = redis.call("EVAL", FILL[kind], 0, first, last)
        if isinstance(reply, Exception):
            sys.exit("list-cost: filling %s: %s" % (kind, reply))


def commandstats(redis):
    stats = {}
    for line in redis.call("INFO", "commandstats").splitlines():
        if line.startswith("cmdstat_"):
            name, rest = line[len("cmdstat_"):].split(":", 1)
            fields = dict(kv.split("=") for kv in rest.split(","))
            stats[name] = (int(fields["calls"]), float(fields["usec"]))
    return stats


def probe(port, seconds=None, stop=None):
    """Round trips of PING, one after the other, on a connection of its own: for `seconds`, or
    until `stop` is set. The latencies in ms, sorted."""
    redis = Redis(port)
    times = []
    end = time.perf_counter() + seconds if seconds else None
    while not (stop.is_set() if stop else time.perf_counter() >= end):
        started = time.perf_counter()
        redis.call("PING")
        times.append((time.perf_counter() - started) * 1000)
        time.sleep(0.001)
    return sorted(times)


def summary(times):
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]
    return "p50 %.2f ms, p99 %.2f ms, max %.2f ms (%d pings)" % (
        pick(0.5), pick(0.99), times[-1], len(times))


def start_server():
    return redis_server.start("list-cost")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--others", type=int, default=0,
                        help="keys of another namespace to add (default 0)")
    parser.add_argument("--bin", default=os.path.join(ROOT, "target/release/redfour"))
    args = parser.parse_args()
    if not os.access(args.bin, os.X_OK):
        sys.exit("list-cost: no %s (cargo build --release -p redfour-cli)" % args.bin)

    server, port = start_server()
    try:
        redis = Redis(port)
        fill(redis, "library", 50000)
        fill(redis, "node", 10000)
        fill(redis, "queues", 5000)
        fill(redis, "foreign", 29999)
        redis.call("SET", "lockindex", "1764000000050000")
        if args.others:
            fill(redis, "others", args.others)
        keys = redis.call("DBSIZE")
        version = redis.call("INFO", "server").split("redis_version:")[1].split()[0]
        print("Redis %s; %d keys, %d of them in the namespace `lock`; %s"
              % (version, keys, keys - args.others, os.path.relpath(args.bin, ROOT)))

        # Every command of 20 µs or more is logged (the rest cannot be the slowest).
        redis.call("CONFIG", "SET", "slowlog-log-slower-than", str(SLOW_US))
        redis.call("CONFIG", "SET", "slowlog-max-len", "100000")
        redis.call("SLOWLOG", "RESET")
        redis.call("CONFIG", "RESETSTAT")
        url = "redis://127.0.0.1:%d" % port
        idle = probe(port, seconds=3)
        stop, during = threading.Event(), []
        prober = threading.Thread(target=lambda: during.extend(probe(port, stop=stop)))
        prober.start()
        walls, rows = [], None
        for _ in range(args.runs):
            started = time.perf_counter()
            out = subprocess.run([args.bin, "--url", url, "list", "--json"],
                                 stdout=subprocess.PIPE, check=True)
            walls.append(time.perf_counter() - started)
            rows = out.stdout.count(b"\n")
        stop.set()
        prober.join()
        during.sort()
        stats = commandstats(redis)
        logged = redis.call("SLOWLOG", "GET", "-1")
        redis.call("CONFIG", "SET", "slowlog-log-slower-than", "10000")

        print("%d runs of `redfour list --json`: %d rows each; wall time min %.2f s, median %.2f s"
              % (args.runs, rows, min(walls), statistics.median(walls)))
        print("another client's PING round trips: idle %s; during the runs %s"
              % (summary(idle), summary(during)))
        # The slowest of each command the listing sent, and how many took 1 ms or more.
        slowest = {}
        for entry in logged:
            name = str(entry[3][0]).lower()
            duration, over_ms = slowest.get(name, (0, 0))
            slowest[name] = (max(duration, entry[2]), over_ms + (entry[2] >= 1000))
        print("commands per run: calls, server µs per call; over all runs: the slowest call, "
              "calls of 1 ms or more (the script's own Redis calls count within EVALSHA)")
        for name, (calls, usec) in sorted(stats.items(), key=lambda kv: -kv[1][1]):
            if name.split("|")[0] in ("config", "slowlog", "info", "script", "ping"):
                continue
            top, over_ms = slowest.get(name, (0, 0))
            top = "%d" % top if top else "<%d" % SLOW_US
            print("  %-8s %8d  %7.2f  %7s  %d"
                  % (name, calls // args.runs, usec / calls, top, over_ms))
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
