#!/usr/bin/env node
// Drives Node redfour 1.0.5 (the npm package, unmodified) for the Rust interop tests in
// crates/redfour/tests/it/node_interop.rs, and for trying the interop by hand.
//
// Usage:
//   node driver.js REDIS_URL [NAMESPACE] [COMMAND_JSON ...]
//
// With commands on the command line, they run one after the other and the driver exits.
// Without, it reads commands as JSON lines on stdin and starts each one as soon as it arrives
// (so a `wait` can be pending while later commands run); it exits at end of input or on
// {"op":"quit"}, after the pending commands have answered.
//
// Commands (`tag` is optional and echoed in the answer, to match answers to commands):
//   {"op":"acquire","id":"x","ttl":1000}                  -> lock.acquireLock(id, ttl)
//   {"op":"wait","id":"x","ttl":1000,"waitTtl":5000}      -> lock.waitAcquireLock(id, ttl, waitTtl)
//   {"op":"release","id":"x","index":42}                  -> lock.releaseLock({id, index})
//   {"op":"quit"}
//
// Output, one flat JSON object per line on stdout:
//   {"event":"ready","namespace":"lock"}        connected, and subscribed to the release channel
//   {"op":"acquire","tag":"t","id":"x","success":true,"index":42,"ttl":1000}
//   {"op":"wait",...}                            as acquire (Node's answer has no `immediate`)
//   {"op":"release","tag":"t","id":"x","success":true,"result":"released","index":42}
//   {"event":"waiting","id":"x"}                 a waitAcquireLock attempt failed and now waits
//                                                for a release notice (or the holder's ttl)
//   {"op":"...","tag":"t","error":"message"}    a command failed
//   {"event":"error","message":"..."}            a Redis client reported an error
//   {"event":"bye"}                              both Redis clients quit; the process exits
// Indexes are printed as JavaScript numbers: exact below 2^53, which is what the tests check.
'use strict';

const readline = require('readline');
const Lock = require('redfour');

const [url, namespace = 'lock', ...argvCommands] = process.argv.slice(2);
if (!url) {
  process.stderr.write('usage: node driver.js REDIS_URL [NAMESPACE] [COMMAND_JSON ...]\n');
  process.exit(2);
}

function emit(obj) {
  process.stdout.write(`${JSON.stringify(obj)}\n`);
}

const lock = new Lock({ redis: url, namespace });
const prefix = `${namespace}:`;

for (const client of [lock._redisConnection, lock._redisSubscriber]) {
  // An unhandled 'error' event would kill the process without a word.
  client.on('error', (err) => emit({ event: 'error', message: String(err && err.message) }));
}

// waitAcquireLock adds a listener named after the lock key each time an attempt fails and it
// starts waiting; that is the moment a test may release the lock to check the wake-up.
lock._subscribers.on('newListener', (name) => {
  if (typeof name === 'string' && name.startsWith(prefix)) {
    emit({ event: 'waiting', id: name.slice(prefix.length) });
  }
});

function run(cmd) {
  return new Promise((resolve) => {
    const base = { op: cmd.op };
    if (cmd.tag !== undefined) base.tag = cmd.tag;
    const answer = (err, res) => {
      if (err) {
        emit(Object.assign(base, { id: cmd.id, error: String(err && err.message ? err.message : err) }));
      } else {
        emit(Object.assign(base, res));
      }
      resolve();
    };
    try {
      switch (cmd.op) {
        case 'acquire':
          lock.acquireLock(cmd.id, cmd.ttl, answer);
          break;
        case 'wait':
          lock.waitAcquireLock(cmd.id, cmd.ttl, cmd.waitTtl, answer);
          break;
        case 'release':
          lock.releaseLock({ id: cmd.id, index: cmd.index }, answer);
          break;
        default:
          answer(new Error(`unknown op ${JSON.stringify(cmd.op)}`));
      }
    } catch (err) {
      answer(err);
    }
  });
}

function parse(line) {
  try {
    const cmd = JSON.parse(line);
    if (cmd === null || typeof cmd !== 'object' || Array.isArray(cmd)) throw new Error('not an object');
    return cmd;
  } catch (err) {
    emit({ event: 'error', message: `bad command ${JSON.stringify(line)}: ${err.message}` });
    return null;
  }
}

let quitting = false;
function quit(pending) {
  if (quitting) return;
  quitting = true;
  Promise.all(pending).then(() => {
    let open = 2;
    const done = () => {
      open -= 1;
      if (open === 0) emit({ event: 'bye' });
    };
    lock._redisConnection.quit(done);
    lock._redisSubscriber.quit(done);
    // Should the server not answer QUIT, exit anyway rather than hang the test.
    setTimeout(() => {
      process.stderr.write('driver: the Redis clients did not close within 5 s\n');
      process.exit(1);
    }, 5000).unref();
  });
}

// Ready once the command connection is up and the release channel is subscribed: before that, a
// release notice could be missed, and a test could not tell a wake-up from a timeout.
const ready = Promise.all([
  new Promise((resolve) => lock._redisConnection.once('ready', resolve)),
  new Promise((resolve) => lock._redisSubscriber.once('subscribe', resolve)),
]);

ready.then(async () => {
  emit({ event: 'ready', namespace });
  if (argvCommands.length > 0) {
    for (const line of argvCommands) {
      const cmd = parse(line);
      if (cmd && cmd.op !== 'quit') await run(cmd);
    }
    quit([]);
    return;
  }
  const pending = new Set();
  const input = readline.createInterface({ input: process.stdin, terminal: false });
  input.on('line', (line) => {
    if (quitting || line.trim() === '') return;
    const cmd = parse(line);
    if (!cmd) return;
    if (cmd.op === 'quit') {
      input.close();
      // An open stdin keeps the process alive even after readline lets go of it.
      process.stdin.destroy();
      return;
    }
    const job = run(cmd).then(() => pending.delete(job));
    pending.add(job);
  });
  input.on('close', () => quit([...pending]));
});
