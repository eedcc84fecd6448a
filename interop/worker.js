#!/usr/bin/env node
// A Node redfour 1.0.5 worker for mixed-fleet measurements (scripts/mixed-fleet.py): takes the
// lock with waitAcquireLock, holds it for a while, releases it, again and again until told to
// stop, and prints each critical section as it ends.
//
// Usage:
//   node worker.js REDIS_URL NAMESPACE ID TTL_MS WAIT_MS WORK_MS [CHECK_KEY]
//
// With CHECK_KEY, each critical section starts with INCR CHECK_KEY and ends with DECR of it,
// and prints the INCR's result as "inside": anything but 1 means two sections overlapped.
//
// Output, one JSON object per line on stdout:
//   {"event":"ready"}                                 connected and subscribed
//   {"start_us":…,"end_us":…,"index":…[,"inside":…]} one critical section (wall clock, µs)
//   {"event":"timeout"}                               a waitAcquireLock gave up (WAIT_MS passed)
//   {"event":"error","message":"…"}
// It stops at end of standard input (or on SIGTERM) after the section in progress.
'use strict';

const Lock = require('redfour');

const [url, namespace, id, ttl, waitTtl, work, checkKey] = process.argv.slice(2);
if (!work) {
  process.stderr.write('usage: node worker.js REDIS_URL NAMESPACE ID TTL_MS WAIT_MS WORK_MS\n');
  process.exit(2);
}

function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

// Wall-clock microseconds, finer than Date.now(), comparable with other processes' clocks.
function nowUs() {
  return Math.round((performance.timeOrigin + performance.now()) * 1000);
}

const lock = new Lock({ redis: url, namespace });
for (const client of [lock._redisConnection, lock._redisSubscriber]) {
  client.on('error', (err) => emit({ event: 'error', message: String(err && err.message) }));
}

let stopping = false;
process.stdin.on('end', () => { stopping = true; });
process.stdin.resume();
process.on('SIGTERM', () => { stopping = true; });

function quit() {
  let open = 2;
  const done = () => {
    open -= 1;
    if (open === 0) process.exit(0);
  };
  lock._redisConnection.quit(done);
  lock._redisSubscriber.quit(done);
  setTimeout(() => process.exit(1), 5000).unref();
}

function cycle() {
  if (stopping) return quit();
  lock.waitAcquireLock(id, Number(ttl), Number(waitTtl), (err, held) => {
    if (err) {
      emit({ event: 'error', message: String(err && err.message) });
      return quit();
    }
    if (!held.success) {
      emit({ event: 'timeout' });
      return setImmediate(cycle);
    }
    const start = nowUs();
    const section = (inside) => setTimeout(() => {
      const end = nowUs();
      const release = () => lock.releaseLock(held, (err2) => {
        if (err2) emit({ event: 'error', message: String(err2 && err2.message) });
        const line = { start_us: start, end_us: end, index: held.index };
        if (inside !== undefined) line.inside = inside;
        emit(line);
        setImmediate(cycle);
      });
      if (checkKey) {
        lock._redisConnection.decr(checkKey, release);
      } else {
        release();
      }
    }, Number(work));
    if (checkKey) {
      lock._redisConnection.incr(checkKey, (err3, inside) => {
        if (err3) emit({ event: 'error', message: String(err3 && err3.message) });
        section(inside);
      });
    } else {
      section(undefined);
    }
  });
}

Promise.all([
  new Promise((resolve) => lock._redisConnection.once('ready', resolve)),
  new Promise((resolve) => lock._redisSubscriber.once('subscribe', resolve)),
]).then(() => {
  emit({ event: 'ready' });
  cycle();
});
