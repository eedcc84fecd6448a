#!/usr/bin/env node
// A Node redfour 1.0.5 worker for the chaos suite (crates/redfour-chaos): the Node side of a
// mixed fleet. It does what the suite's Rust worker (crates/redfour-chaos/src/worker.rs) does,
// and logs it the same way, so that one checker judges both: loop acquire (waitAcquireLock) →
// enter → hold → one fenced write to the resource → exit → releaseLock on one lock, until the
// stop file appears.
//
// Usage (the Rust worker's flags, those of a standalone Redis):
//   node chaos-worker.js --url REDIS_URL --namespace NS --lock ID --ttl-ms T --hold-ms H
//     --wait-ms W --resource HOST:PORT --log FILE --who NAME --stop-file FILE [--think-ms P]
//
// --think-ms: a pause after each release before the next round (default 0). Without one, a
// Node worker asks again the moment its release answers, before the waiters that the release
// notice wakes can, and often takes the lock back: Node redfour does not queue.
//
// Log: one JSON object per line appended to FILE, each written with one write(2) as it happens
// (a SIGKILL loses nothing already logged): {"t": ns on CLOCK_MONOTONIC, "who": NAME,
// "ev": …, …} with the events of crates/redfour-chaos/src/events.rs. `process.hrtime.bigint()`
// reads CLOCK_MONOTONIC on Linux, the clock the other processes of the run stamp with.
//
// The lease, as the Rust library counts it (crates/redfour/src/lease.rs): from the moment the
// successful attempt was sent, ttl − drift margin (1 % of the ttl + 2 ms). waitAcquireLock does
// not say when its last attempt went out, so this worker notes the time of every acquireLock
// call it makes (a moment before the request is written: the lease it counts ends no later than
// the library's would). A lock won too late to have any lease left is released and logged as
// not acquired, as the Rust library answers it. Node redfour has no keep-alive: the critical
// section ends at the hold time or at the lease deadline, whichever comes first, so the hold
// must be well below the ttl. A worker frozen past its deadline (SIGSTOP) logs the lease lost
// when it runs again, then makes its write anyway, as a paused process would: fencing must
// stop it.
//
// Exit status: 0 after the stop file appeared, 1 on a failure of the harness (the resource, the
// log), 2 on bad arguments.
'use strict';

const fs = require('fs');
const net = require('net');
const Lock = require('redfour');

const FLAGS = {
  '--url': 'url',
  '--namespace': 'namespace',
  '--lock': 'lock',
  '--ttl-ms': 'ttlMs',
  '--hold-ms': 'holdMs',
  '--wait-ms': 'waitMs',
  '--resource': 'resource',
  '--log': 'log',
  '--who': 'who',
  '--stop-file': 'stopFile',
  '--think-ms': 'thinkMs',
};
const OPTIONAL = { thinkMs: '0' };
const NUMBERS = ['ttlMs', 'holdMs', 'waitMs', 'thinkMs'];

function usage(why) {
  const flags = Object.entries(FLAGS)
    .map(([flag, name]) => (name in OPTIONAL ? `[${flag} …]` : `${flag} …`));
  process.stderr.write(`chaos-worker: ${why}\nusage: node chaos-worker.js ${flags.join(' ')}\n`);
  process.exit(2);
}

function parseArgs(argv) {
  const cfg = { ...OPTIONAL };
  for (let i = 0; i < argv.length; i += 2) {
    const name = FLAGS[argv[i]];
    if (!name) usage(`unknown argument \`${argv[i]}\``);
    if (i + 1 >= argv.length) usage(`${argv[i]} needs a value`);
    cfg[name] = argv[i + 1];
  }
  for (const [flag, name] of Object.entries(FLAGS)) {
    if (cfg[name] === undefined) usage(`${flag} is required`);
  }
  for (const name of NUMBERS) {
    if (!/^[0-9]+$/.test(cfg[name])) usage(`${name} must be a whole number of ms`);
    cfg[name] = Number(cfg[name]);
  }
  if (cfg.ttlMs < 1) usage('the ttl must be at least 1 ms');
  const colon = cfg.resource.lastIndexOf(':');
  const port = Number(cfg.resource.slice(colon + 1));
  if (colon < 1 || !Number.isInteger(port) || port < 1 || port > 65535) {
    usage('--resource must be HOST:PORT');
  }
  cfg.resourceHost = cfg.resource.slice(0, colon);
  cfg.resourcePort = port;
  return cfg;
}

const cfg = parseArgs(process.argv.slice(2));

// The lease arithmetic of crates/redfour/src/lease.rs, in ns: the drift margin is 1 % of the
// ttl + 2 ms; the lease is ttl − margin; an answer counts as won while it came back within the
// lease, or within the whole ttl for ttls so short that the margin would eat them.
const TTL_NS = BigInt(cfg.ttlMs) * 1000000n;
const DRIFT_NS = (TTL_NS * 10000n) / 1000000n + 2000000n;
const VALIDITY_NS = TTL_NS > DRIFT_NS ? TTL_NS - DRIFT_NS : 0n;
const WON_LIMIT_NS = TTL_NS > 2n * DRIFT_NS ? VALIDITY_NS : TTL_NS;
if (BigInt(cfg.holdMs) * 1000000n >= VALIDITY_NS) {
  usage('the hold must be shorter than the lease (ttl − 1 % − 2 ms): Node redfour cannot renew');
}

const now = () => process.hrtime.bigint();

// The event log. `t` and `deadline` are ns as integers (bigints, which JSON.stringify refuses);
// indexes are JavaScript numbers, exact below 2^53, as every index redfour hands out is.
const logFd = fs.openSync(cfg.log, 'a');
function record(ev, fields = {}, t = now()) {
  const parts = [`"t":${t}`, `"who":${JSON.stringify(cfg.who)}`, `"ev":${JSON.stringify(ev)}`];
  for (const [k, v] of Object.entries(fields)) {
    parts.push(`${JSON.stringify(k)}:${typeof v === 'bigint' ? v.toString() : JSON.stringify(v)}`);
  }
  fs.writeSync(logFd, `{${parts.join(',')}}\n`);
}

function fail(why) {
  process.stderr.write(`chaos-worker ${cfg.who}: ${why}\n`);
  process.exit(1);
}

// The resource: one request line, one answer line (crates/redfour-chaos/src/resource.rs).
function connectResource() {
  return new Promise((resolve, reject) => {
    const socket = net.createConnection({ host: cfg.resourceHost, port: cfg.resourcePort });
    let buffered = '';
    const pending = [];
    socket.setNoDelay(true);
    socket.setEncoding('utf8');
    socket.on('data', (chunk) => {
      buffered += chunk;
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        const next = pending.shift();
        if (next) next.resolve(line);
      }
    });
    const broken = (err) => {
      for (const p of pending.splice(0)) p.reject(err);
    };
    socket.on('error', (err) => { broken(err); reject(err); });
    socket.on('close', () => broken(new Error('the resource closed the connection')));
    socket.on('connect', () => resolve({
      ask(request) {
        return new Promise((res, rej) => {
          pending.push({ resolve: res, reject: rej });
          socket.write(`${request}\n`);
        });
      },
      end() { socket.end(); },
    }));
  });
}

async function fencedWrite(resource, index) {
  const answer = await resource.ask(`W ${index} ${cfg.who}`);
  if (answer === 'OK') return true;
  if (answer.startsWith('STALE ')) return false;
  throw new Error(`the resource answered \`${answer}\``);
}

async function readUnfenced(resource) {
  const answer = await resource.ask('R');
  if (!/^-?[0-9]+$/.test(answer)) throw new Error(`the resource answered \`${answer}\``);
  return Number(answer);
}

async function setUnfenced(resource, value) {
  const answer = await resource.ask(`S ${value}`);
  if (answer !== 'OK') throw new Error(`the resource answered \`${answer}\``);
}

const lock = new Lock({ redis: cfg.url, namespace: cfg.namespace });
for (const client of [lock._redisConnection, lock._redisSubscriber]) {
  // Without a listener, a connection error would kill the process; the client reconnects by
  // itself, and a command that failed answers its callback with the error.
  client.on('error', (err) => process.stderr.write(`redis: ${err && err.message}\n`));
}

// The time each attempt of waitAcquireLock is sent: it calls `this.acquireLock` for every try.
let lastSent = 0n;
const acquireLock = lock.acquireLock;
lock.acquireLock = function timedAcquireLock(...args) {
  lastSent = now();
  return acquireLock.apply(this, args);
};

const waitAcquire = () => new Promise((resolve) => {
  lock.waitAcquireLock(cfg.lock, cfg.ttlMs, cfg.waitMs, (err, held) => resolve({ err, held }));
});
const release = (held) => new Promise((resolve) => {
  lock.releaseLock(held, (err, answer) => resolve({ err, answer }));
});
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
const message = (err) => String((err && err.message) || err);

async function round(resource) {
  record('acquire_invoked');
  const { err, held } = await waitAcquire();
  if (err) {
    // The request may have reached the server: as for the Rust worker, the outcome is unknown.
    record('acquire_unknown', { reason: message(err) });
    await sleep(10);
    return;
  }
  if (!held.success) {
    record('acquire_failed', { reason: `still held after ${cfg.waitMs} ms` });
    return;
  }
  const sent = lastSent;
  const deadline = sent + VALIDITY_NS;
  if (now() - sent >= WON_LIMIT_NS) {
    // Won after its lease had run out (this process was frozen meanwhile): not held.
    const r = await release(held);
    const outcome = r.err ? `error: ${message(r.err)}` : r.answer.result;
    record('acquire_failed', { reason: `won too late (index ${held.index}); release: ${outcome}` });
    return;
  }
  const index = held.index;
  record('acquire_ok', { index, deadline });
  record('enter', { index });
  const before = await readUnfenced(resource);

  // The critical section ends at the hold time, or at the lease deadline if that comes first.
  const entered = now();
  const until = entered + BigInt(cfg.holdMs) * 1000000n;
  const end = until < deadline ? until : deadline;
  await sleep(Number((end - entered) / 1000000n));
  if (now() >= deadline) {
    record('lease_lost', { index, reason: 'the lease deadline passed in the critical section' });
  }

  const accepted = await fencedWrite(resource, index);
  record('write_answered', { index, accepted });
  await setUnfenced(resource, before + 1);
  record('exit', { index });

  record('release_invoked', { index, deadline });
  const r = await release(held);
  record('release_done', { index, outcome: r.err ? `error: ${message(r.err)}` : r.answer.result });
  if (cfg.thinkMs > 0) await sleep(cfg.thinkMs);
}

function quit(status) {
  let open = 2;
  const done = () => {
    open -= 1;
    if (open === 0) process.exit(status);
  };
  lock._redisConnection.quit(done);
  lock._redisSubscriber.quit(done);
  setTimeout(() => process.exit(status), 2000).unref();
}

async function main() {
  // Subscribed before the first attempt, so that the first wait hears every release.
  await Promise.all([
    new Promise((resolve) => lock._redisConnection.once('ready', resolve)),
    new Promise((resolve) => lock._redisSubscriber.once('subscribe', resolve)),
  ]);
  const resource = await connectResource();
  while (!fs.existsSync(cfg.stopFile)) {
    await round(resource);
  }
  resource.end();
  quit(0);
}

main().catch((err) => fail(message(err)));
