#!/usr/bin/env python3
"""Who gets a contended lock in a mixed fleet: Node redfour workers beside `redfour run` loops.

    python3 scripts/mixed-fleet.py [--node N] [--rust M] [--seconds S] [--work-ms W]
                                   [--rust-side cli|lib] [--redfour PATH] [--worker PATH]
                                   [--port PORT] [--json]

N Node redfour 1.0.5 workers (interop/worker.js: waitAcquireLock(id, 2000, 20000), W ms of
work, releaseLock, again) and M Rust workers (each a loop of
`redfour run hot --ttl 2s --wait 20s -- <W ms of work>`, the CLI with its defaults) contend
for one lock for S seconds. With `--rust-side lib`, each Rust worker is instead the library in
a loop in its own process (crates/redfour-worker: acquire, W ms,
release, and at once again, as worker.js does), which re-acquires far sooner than a new
`redfour run` process can. Printed for each side: critical sections, sections per second,
its share of all sections beside its share of the workers; and for the whole run, whether two
critical sections overlapped (each is timed by the wall clock inside it, so an overlap means
exclusion failed) and the longest time the lock stood free between two sections.

Needs redis-server on PATH (a private one is started on a free port unless --port is given;
only the keys of the namespace `mixed<pid>` are written, and deleted at the end), node with
interop/node_modules (`cd interop && npm ci`), and a built `redfour` binary (default:
target/release/redfour, then target/debug/redfour), or for `--rust-side lib` a built
target/release/redfour-worker (`cargo build --release -p redfour-worker`; --worker for another).
Python 3 only, no packages.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

import redis_server

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ID = "hot"


def find_redfour(given):
    if given:
        return given
    for build in ("release", "debug"):
        path = os.path.join(ROOT, "target", build, "redfour")
        if os.path.exists(path):
            return path
    sys.exit("mixed-fleet: no redfour binary; build one (cargo build --release -p redfour-cli) "
             "or pass --redfour")


def line_worker(side, command, sections, errors, ready, n):
    """A worker process that prints its sections as JSON lines (worker.js, redfour-worker)."""
    proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def read():
        for line in proc.stdout:
            msg = json.loads(line)
            if msg.get("event") == "ready":
                ready.release()
            elif msg.get("event") in ("error", "timeout"):
                errors.append((side, msg))
            elif "start_us" in msg:
                sections.append((side, msg["start_us"], msg["end_us"], n))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return proc, thread


def node_worker(url, ns, work_ms, sections, errors, ready, n):
    return line_worker("node", ["node", os.path.join(ROOT, "interop", "worker.js"), url, ns, ID,
                                "2000", "20000", str(work_ms)], sections, errors, ready, n)


def lib_worker(worker, url, ns, work_ms, sections, errors, ready, n):
    return line_worker("rust", [worker, url, ns, ID, str(work_ms)],
                       sections, errors, ready, n)


def rust_worker(redfour, url, ns, work_ms, sections, errors, stop, log_dir, n):
    log = os.path.join(log_dir, "rust%d" % n)
    # The job times its own critical section, inside the lock, with the wall clock.
    job = ('s=$(date +%%s%%6N); sleep %s; e=$(date +%%s%%6N); echo "$s $e $REDFOUR_INDEX" >> %s'
           % (work_ms / 1000.0, log))
    env = dict(os.environ, REDIS_URL=url, REDFOUR_NAMESPACE=ns)
    while not stop.is_set():
        done = subprocess.run(
            [redfour, "run", ID, "--ttl", "2s", "--wait", "20s", "--", "sh", "-c", job],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0 and not stop.is_set():
            errors.append(("rust", {"exit": done.returncode, "stderr": done.stderr.strip()}))
    if os.path.exists(log):
        with open(log) as f:
            for line in f:
                start, end, _ = line.split()
                sections.append(("rust", int(start), int(end), n))


def delete_namespace(port, ns):
    """Deletes the run's keys (all named after its namespace), and no others."""
    keys = subprocess.run(["redis-cli", "-p", str(port), "--scan", "--pattern", ns + "*"],
                          capture_output=True, text=True).stdout.split()
    if keys:
        subprocess.run(["redis-cli", "-p", str(port), "UNLINK"] + keys, capture_output=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--node", type=int, default=3)
    parser.add_argument("--rust", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--work-ms", type=int, default=30)
    parser.add_argument("--rust-side", choices=("cli", "lib"), default="cli",
                        help="Rust workers as `redfour run` loops (cli) or library loops (lib)")
    parser.add_argument("--redfour")
    parser.add_argument("--worker", default=os.path.join(ROOT, "target", "release",
                                                         "redfour-worker"))
    parser.add_argument("--port", type=int, help="a Redis on 127.0.0.1 to use instead")
    parser.add_argument("--json", action="store_true", help="one JSON object instead of a table")
    args = parser.parse_args()
    if args.node and not os.path.exists(os.path.join(ROOT, "interop", "node_modules", "redfour")):
        sys.exit("mixed-fleet: Node redfour is missing: cd interop && npm ci")
    lib = args.rust_side == "lib"
    if args.rust and lib and not os.path.exists(args.worker):
        sys.exit("mixed-fleet: no redfour-worker; build it: "
                 "cargo build --release -p redfour-worker")
    redfour = find_redfour(args.redfour) if args.rust and not lib else None

    server = None
    port = args.port
    if port is None:
        server, port = redis_server.start("mixed-fleet")
    url = "redis://127.0.0.1:%d" % port
    ns = "mixed%d" % os.getpid()
    sections, errors = [], []
    log_dir = tempfile.mkdtemp(prefix="mixed-fleet-logs-")
    try:
        ready = threading.Semaphore(0)
        nodes = [node_worker(url, ns, args.work_ms, sections, errors, ready, n)
                 for n in range(args.node)]
        libs = [lib_worker(args.worker, url, ns, args.work_ms, sections, errors, ready, n)
                for n in range(args.rust if lib else 0)]
        for _ in nodes + libs:
            if not ready.acquire(timeout=30):
                sys.exit("mixed-fleet: a worker did not connect within 30 s")
        stop = threading.Event()
        rusts = [threading.Thread(target=rust_worker, args=(
            redfour, url, ns, args.work_ms, sections, errors, stop, log_dir, n))
            for n in range(0 if lib else args.rust)]
        began = time.time()
        for t in rusts:
            t.start()
        time.sleep(args.seconds)
        stopped = time.time()
        stop.set()
        for proc, _ in nodes + libs:
            proc.stdin.close()
        for t in rusts:
            t.join()
        for proc, thread in nodes + libs:
            proc.wait(timeout=30)
            thread.join()
        elapsed = stopped - began
    finally:
        if server:
            server.terminate()
            server.wait()
        else:
            delete_namespace(port, ns)

    # Workers that got ready early may have looped before every worker was ready, and the
    # workers finish what they started once told to stop: only the sections that began within
    # the measurement count.
    began_us, stopped_us = int(began * 1e6), int(stopped * 1e6)
    sections = sorted((s for s in sections if began_us <= s[1] < stopped_us),
                      key=lambda s: s[1])
    overlaps = sum(1 for a, b in zip(sections, sections[1:]) if b[1] < a[2])
    gaps = [b[1] - a[2] for a, b in zip(sections, sections[1:])]
    total = len(sections)
    workers = args.node + args.rust
    result = {"node_workers": args.node, "rust_workers": args.rust, "rust_side": args.rust_side,
              "seconds": round(elapsed, 2),
              "work_ms": args.work_ms, "sections": total, "overlaps": overlaps,
              "max_free_ms": round(max(gaps) / 1000, 1) if gaps else None,
              "errors": len(errors)}
    for side, n in (("node", args.node), ("rust", args.rust)):
        count = sum(1 for s in sections if s[0] == side)
        result[side] = {"sections": count, "per_s": round(count / elapsed, 2),
                        "share": round(count / total, 3) if total else None,
                        "worker_share": round(n / workers, 3),
                        "per_worker": [sum(1 for s in sections if s[0] == side and s[3] == w)
                                       for w in range(n)]}
    if args.json:
        print(json.dumps(result))
    else:
        print("%d Node + %d Rust workers (%s), %.1f s, %d ms of work per section"
              % (args.node, args.rust, "library loops" if lib else "redfour run loops",
                 elapsed, args.work_ms))
        print("%-6s %9s %8s %7s %13s" % ("side", "sections", "per s", "share", "worker share"))
        for side in ("node", "rust"):
            r = result[side]
            share = "-" if r["share"] is None else "%.1f%%" % (100 * r["share"])
            print("%-6s %9d %8.2f %7s %12.1f%%" % (side, r["sections"], r["per_s"], share,
                                                   100 * r["worker_share"]))
        print("overlapping sections: %d; longest free spell: %s ms; errors: %d"
              % (overlaps, result["max_free_ms"], len(errors)))
    for side, err in errors[:5]:
        print("error (%s): %s" % (side, err), file=sys.stderr)
    return 1 if overlaps else 0


if __name__ == "__main__":
    sys.exit(main())
