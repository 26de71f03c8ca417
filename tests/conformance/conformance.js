#!/usr/bin/env node
// SPDX-License-Identifier: Apache-2.0
//
// Conformance of the C immudb server with the OFFICIAL Node SDK
// immudb-node 1.1.1 (unchanged, from npm). Every method the SDK offers is
// called, except SQL (out of scope), and its answers are checked with
// node's assert, verified calls included (the SDK checks the server's
// inclusion, consistency and linear proofs on the client).
//
// Usage (run.sh drives the phases and the server):
//   node conformance.js --port P [--host H] [--user U] [--password W]
//        [--work DIR] [--data DIR] [--phase PHASE]
//        [--verbose]
//
//   main           every SDK method against a fresh server, then the
//                  client-side tamper checks: the SDK's local state file
//                  (rootPath JSON) is given a wrong txhash / txid, and a
//                  proxy alters the server's responses in flight; the
//                  verified calls must reject. Leaves DIR/root.json
//                  (the trusted state) and DIR/handoff.json for the next
//                  phases.
//   tamper-disk    with the server STOPPED: edits two stored values (found
//                  by unique markers) in <data>/defaultdb/log/*.log: one
//                  naive byte flip, and one careful rewrite that also fixes
//                  the entry's hValue and the frame's body CRC.
//   verify-tamper  with the server restarted on the tampered data: a
//                  verifiedGet of either key must reject, while a
//                  verifiedGet of an untouched key still verifies.
//   tamper-disk-2  server stopped again: undoes the naive flip and deletes
//                  the key index, so the server rebuilds it from the log
//                  and believes the careful rewrite.
//   verify-tamper-2  the careful rewrite must still be caught (by the SDK's
//                  proof check if the server serves it); the restored value
//                  verifies again.
//
// Output: one line per check, "ok <name>" or "not ok <name>: <reason>",
// then "N passed, M failed". Exit status 0 only if nothing failed. The
// SDK's own console output goes to stderr (prefixed "# sdk"), only for
// failing checks unless --verbose.
//
// Known immudb-node 1.1.1 bugs this file works around (none is a server
// matter; see TAP-RESULTS.md and the spec, immudb-crypto.md 11.15):
//  * verifiedZAdd(At) and verifiedSetReference(At) with an EMPTY local
//    state (txid 0) compute a wrong source Alh (txFrom sets prevAlh to the
//    tx's own Alh), so they always reject. A verifiedSet is done first so
//    the local state is never empty when they run.
//  * state.get throws a TypeError (swallowed: the verified call resolves
//    `undefined` WITHOUT calling the server) when the state file knows the
//    server but not the current database. After useDatabase of another
//    database, currentState() is called first: it stores that database's
//    state. Every verified call's result is asserted non-undefined.
//  * execAll sets kv, zadd AND ref on every Op, a protobuf oneof, so only
//    the last (ref) survives: every op is sent as a Ref. Only Ref ops are
//    usable, with Uint8Array keys (the SDK does not UTF-8 encode them; a
//    string would be taken as base64).
//  * the server UUID header is never read (wrong event), so every state is
//    stored under the key "undefined".
//  * getInstance() calls process.exit(0) when its initial login fails; the
//    'exit' handler below turns that into a failure.
'use strict';

const assert = require('assert');
const crypto = require('crypto');
const fs = require('fs');
const path = require('path');
const os = require('os');

// ---------------------------------------------------------------------------
// arguments
// ---------------------------------------------------------------------------
const PHASES = ['main', 'tamper-disk', 'verify-tamper', 'tamper-disk-2', 'verify-tamper-2'];
const args = {
  host: process.env.IMMUDB_HOST || '127.0.0.1',
  port: process.env.IMMUDB_PORT || '3322',
  user: process.env.IMMUDB_USER || 'immudb',
  password: process.env.IMMUDB_PWD || 'immudb',
  work: '',
  data: '',
  phase: 'main',
  verbose: false,
  timeout: 30000,
};
for (let i = 2; i < process.argv.length; i++) {
  const a = process.argv[i];
  const next = () => {
    if (i + 1 >= process.argv.length) {
      console.error(`conformance.js: ${a} needs a value`);
      process.exit(2);
    }
    return process.argv[++i];
  };
  switch (a) {
    case '--host': args.host = next(); break;
    case '--port': args.port = next(); break;
    case '--user': args.user = next(); break;
    case '--password': args.password = next(); break;
    case '--work': args.work = next(); break;
    case '--data': args.data = next(); break;
    case '--phase': args.phase = next(); break;
    case '--timeout': args.timeout = Number(next()) * 1000; break;
    case '--verbose': args.verbose = true; break;
    case '-h': case '--help':
      console.log('usage: node conformance.js --port P [--host H] [--user U] ' +
        '[--password W] [--work DIR] [--data DIR] ' +
        `[--phase ${PHASES.join('|')}] [--timeout S] [--verbose]`);
      process.exit(0);
      break;
    default:
      console.error(`conformance.js: unknown argument ${a}`);
      process.exit(2);
  }
}
if (!PHASES.includes(args.phase)) {
  console.error(`conformance.js: unknown phase ${args.phase}`);
  process.exit(2);
}
if (!args.work) {
  args.work = fs.mkdtempSync(path.join(os.tmpdir(), 'immu-conf-'));
}
fs.mkdirSync(args.work, { recursive: true });
// The SDK reads .env from the current directory (dotenv) and writes its
// default state file ./root: run from the scratch directory.
process.chdir(args.work);
// Every SDK client adds exit/SIGINT/uncaughtException listeners.
process.setMaxListeners(100);

// ---------------------------------------------------------------------------
// output and the SDK's console
// ---------------------------------------------------------------------------
const out = (line) => process.stdout.write(line + '\n');
const sdkLog = [];
const origError = console.error.bind(console);
function sdkConsole(kind) {
  return (...xs) => {
    const text = xs.map((x) => {
      if (x instanceof Error) return `${x.message}`;
      if (typeof x === 'object' && x !== null) {
        try { return JSON.stringify(x); } catch (e) { return String(x); }
      }
      return String(x);
    }).join(' ').replace(/\s+/g, ' ').trim();
    sdkLog.push(`${kind}: ${text}`);
    if (sdkLog.length > 50) sdkLog.shift();
    if (args.verbose) process.stderr.write(`# sdk ${kind}: ${text}\n`);
  };
}
console.log = sdkConsole('log');
console.info = sdkConsole('info');
console.warn = sdkConsole('warn');
console.error = sdkConsole('error');

let passed = 0;
let failed = 0;
let summaryPrinted = false;
let lastUncaught = null;

// The SDK's State installs an uncaughtException handler that only saves
// the state file, so an exception thrown inside a gRPC callback (e.g. a
// malformed proof) leaves the call's promise pending forever. Record it;
// the per-check timeout reports it.
process.on('uncaughtException', (e) => {
  lastUncaught = e;
  origError(`# uncaught exception: ${e && e.stack ? e.stack : e}`);
});
process.on('exit', (code) => {
  if (!summaryPrinted) {
    out('not ok phase-complete: the process exited before the end ' +
        `(exit code ${code}; immudb-node's getInstance exits 0 when its login fails)`);
    out(`${passed} passed, ${failed + 1} failed`);
    process.exitCode = 1;
  }
});

const GRPC_CODES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT',
  'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED',
  'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE',
  'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];

function describe(e) {
  if (e === undefined) return 'rejected without a reason (an SDK verification step failed)';
  if (e === null) return 'rejected with null (an SDK verification step failed)';
  if (typeof e === 'string') return `rejected: ${e}`;
  if (e instanceof assert.AssertionError) {
    return `assertion failed: ${e.message.replace(/\s+/g, ' ').slice(0, 600)}`;
  }
  if (typeof e === 'object' && e.code !== undefined && e.details !== undefined) {
    return `gRPC ${e.code} ${GRPC_CODES[e.code] || ''}: ${e.details}`;
  }
  if (e instanceof Error) return `${e.name}: ${e.message}`;
  return `rejected: ${String(e)}`;
}

function withTimeout(p, ms, what) {
  let timer;
  return Promise.race([
    p,
    new Promise((_, reject) => {
      timer = setTimeout(() => {
        const why = lastUncaught ? ` (uncaught exception in the SDK: ${lastUncaught.message})` : '';
        reject(new Error(`${what} did not settle within ${ms / 1000}s${why}`));
      }, ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

// Runs one named check. |fn| returns a promise (or value); a rejection or
// throw fails the check. Returns what fn returned (undefined on failure).
async function check(name, fn) {
  sdkLog.length = 0;
  lastUncaught = null;
  try {
    const r = await withTimeout(Promise.resolve().then(fn), args.timeout, name);
    passed++;
    out(`ok ${name}${r && r.note ? ` (${r.note})` : ''}`);
    return r;
  } catch (e) {
    failed++;
    out(`not ok ${name}: ${describe(e)}`);
    if (!args.verbose) {
      for (const l of sdkLog.slice(-6)) process.stderr.write(`#   sdk ${l.slice(0, 400)}\n`);
    }
    return undefined;
  }
}

// Expects |p| to reject; returns the rejection reason. |pred| may assert on
// the reason.
async function rejects(p, what, pred) {
  let res;
  try {
    res = await p;
  } catch (e) {
    if (pred) pred(e);
    return e;
  }
  throw new assert.AssertionError({
    message: `${what} resolved (${JSON.stringify(res, replacer).slice(0, 200)}) but was expected to reject`,
  });
}

function replacer(k, v) {
  if (v instanceof Uint8Array) return Buffer.from(v).toString('hex');
  return v;
}

function errText(e) {
  if (typeof e === 'string') return e;
  if (e && e.details !== undefined) return String(e.details);
  if (e && e.message !== undefined) return String(e.message);
  return String(e);
}

function finish() {
  summaryPrinted = true;
  out(`${passed} passed, ${failed} failed`);
  process.exitCode = failed === 0 ? 0 : 1;
  // grpc channels keep the loop alive; the SDK saves its state on exit.
  setImmediate(() => process.exit(process.exitCode));
}

// ---------------------------------------------------------------------------
// the SDK
// ---------------------------------------------------------------------------
let ImmudbClient;
let schema;
let sdkUtil;
try {
  ImmudbClient = require('immudb-node').default;
  schema = require('immudb-node/dist/src/proto/schema_pb');
  sdkUtil = require('immudb-node/dist/src/util');
} catch (e) {
  origError(`conformance.js: cannot load immudb-node (run npm ci in ${__dirname}): ${e.message}`);
  summaryPrinted = true;
  out('not ok load-sdk: ' + e.message);
  out('0 passed, 1 failed');
  process.exit(1);
}
const READ = 1;
const READ_WRITE = 2;
const GRANT = schema.PermissionAction.GRANT;
const REVOKE = schema.PermissionAction.REVOKE;

const sha256 = (b) => crypto.createHash('sha256').update(b).digest();
const bytes = (x) => {
  if (x === undefined || x === null) return Buffer.alloc(0);
  if (typeof x === 'string') return Buffer.from(x, 'base64'); // toObject()
  return Buffer.from(x);
};
const rootPath = (name) => path.join(args.work, name);
const STATE_KEY = 'undefined'; // the SDK never learns the server UUID

function readStateFile(file) {
  return JSON.parse(fs.readFileSync(file, 'utf-8'));
}

// A second, independent SDK client (the constructor is public; getInstance
// is a process-wide singleton). Each has its own state file.
function newClient(stateFile) {
  return new ImmudbClient({ host: args.host, port: args.port, rootPath: stateFile });
}

function ensure(x, what) {
  assert.ok(x !== undefined && x !== null,
    `${what} returned ${x} (the SDK swallowed an error; see its log)`);
  return x;
}

// Runs fn(port) with a gRPC proxy on 127.0.0.1 in front of the server.
// |mutate| maps a method name of the SDK's ImmuServiceService
// (verifiableGet, ...) to a function that alters the response in place.
async function withProxy(mutate, fn) {
  const grpc = require('@grpc/grpc-js');
  const services = require('immudb-node/dist/src/proto/schema_grpc_pb');
  const upstream = new services.ImmuServiceClient(`${args.host}:${args.port}`,
    grpc.credentials.createInsecure());
  const impl = {};
  for (const [name, def] of Object.entries(services.ImmuServiceService)) {
    if (def.requestStream || def.responseStream) continue;
    impl[name] = (call, cb) => {
      const md = new grpc.Metadata();
      for (const v of call.metadata.get('authorization')) md.add('authorization', v);
      upstream[name](call.request, md, (err, res) => {
        if (!err && mutate[name]) {
          try {
            mutate[name](res);
          } catch (e) {
            cb({ code: grpc.status.INTERNAL, details: `proxy: ${e.message}` });
            return;
          }
        }
        cb(err, res);
      });
    };
  }
  const server = new grpc.Server();
  server.addService(services.ImmuServiceService, impl);
  const port = await new Promise((resolve, reject) => server.bindAsync('127.0.0.1:0',
    grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  server.start();
  try {
    return await fn(port);
  } finally {
    server.forceShutdown();
    upstream.close();
  }
}

// ---------------------------------------------------------------------------
// phase main
// ---------------------------------------------------------------------------
async function phaseMain() {
  const DEF = 'defaultdb';
  const mainState = rootPath('root.json');
  for (const f of ['root.json', 'root-user.json', 'root-good.json', 'root-badhash.json',
    'root-future.json', 'root-load.json', 'root-shutdown.json', 'handoff.json']) {
    fs.rmSync(rootPath(f), { force: true });
  }
  const ctx = {}; // tx ids and values seen so far

  // --- connection, login, databases ---------------------------------------
  const c = await check('getInstance (login, listDatabases, useDatabase, health)', async () => {
    const cl = await ImmudbClient.getInstance({
      host: args.host,
      port: args.port,
      user: args.user,
      password: args.password,
      database: DEF,
      rootPath: mainState,
      autoLogin: true,
      autoDatabase: true,
    });
    assert.ok(cl instanceof ImmudbClient);
    return cl;
  });
  if (!c) return;

  await check('login', async () => {
    const r = ensure(await c.login({ user: args.user, password: args.password }), 'login');
    assert.strictEqual(typeof r.token, 'string');
    assert.ok(r.token.length > 0, 'empty token');
    if (args.user === 'immudb' && args.password === 'immudb') {
      assert.match(r.warning, /default password/,
        'LoginResponse.warning should warn about the default admin password');
    }
  });

  await check('login with a wrong password is refused', async () => {
    const other = newClient(rootPath('root-user.json'));
    await rejects(other.login({ user: args.user, password: 'Wrong-Pass1!' }), 'login');
  });

  await check('health', async () => {
    const r = ensure(await c.health(), 'health');
    assert.strictEqual(r.status, true);
    assert.strictEqual(typeof r.version, 'string');
    assert.ok(r.version.length > 0, 'empty version');
  });

  await check('listDatabases', async () => {
    const r = ensure(await c.listDatabases(), 'listDatabases');
    const names = r.databasesList.map((d) => d.databasename);
    assert.ok(names.includes(DEF), `no defaultdb in ${names}`);
    assert.ok(!names.includes('systemdb'), `systemdb listed: ${names}`);
  });

  await check('useDatabase', async () => {
    const r = ensure(await c.useDatabase({ databasename: DEF }), 'useDatabase');
    assert.strictEqual(typeof r.token, 'string');
    assert.ok(r.token.length > 0);
  });

  await check('useDatabase of a missing database is refused', async () => {
    const other = newClient(rootPath('root-user.json'));
    await other.login({ user: args.user, password: args.password });
    await rejects(other.useDatabase({ databasename: 'nosuchdb' }), 'useDatabase(nosuchdb)');
  });

  await check('currentState (initial)', async () => {
    const r = ensure(await c.currentState(), 'currentState');
    assert.strictEqual(typeof r.txid, 'number');
    assert.strictEqual(bytes(r.txhash).length, 32, 'txhash must be 32 bytes');
    if (r.txid === 0) {
      assert.ok(bytes(r.txhash).equals(sha256(Buffer.alloc(0))),
        'the state of an empty database must be H("")');
    }
    ctx.tx0 = r.txid;
  });
  const base = ctx.tx0 || 0;

  // --- verified writes first: the local state must not stay empty ---------
  await check('verifiedSet (first, from the initial state)', async () => {
    const r = ensure(await c.verifiedSet({ key: 'conf:vkey1', value: 'vvalue1' }), 'verifiedSet');
    assert.strictEqual(r.id, base + 1);
    assert.strictEqual(r.nentries, 1);
    assert.strictEqual(r.bltxid, r.id - 1, 'BlTxID must be ID-1');
    ctx.vset1 = r.id;
  });

  await check('verifiedSet state matches the server (client Alh == CurrentState.txHash)', async () => {
    const st = readStateFile(mainState)[STATE_KEY][DEF];
    const cur = ensure(await c.currentState(), 'currentState');
    assert.strictEqual(st.txid, ctx.vset1);
    assert.strictEqual(cur.txid, ctx.vset1);
    assert.ok(Buffer.from(st.txhash).equals(bytes(cur.txhash)),
      `client-computed Alh ${Buffer.from(st.txhash).toString('hex')} != server state ${bytes(cur.txhash).toString('hex')}`);
  });

  // --- plain KV -------------------------------------------------------------
  await check('set', async () => {
    const r = ensure(await c.set({ key: 'conf:key1', value: 'value1' }), 'set');
    assert.strictEqual(r.id, ctx.vset1 + 1);
    assert.strictEqual(r.nentries, 1);
    assert.strictEqual(r.bltxid, r.id - 1);
    ctx.tx1 = r.id;
  });

  await check('get', async () => {
    const r = ensure(await c.get({ key: 'conf:key1' }), 'get');
    assert.deepStrictEqual(r, { tx: ctx.tx1, key: 'conf:key1', value: 'value1' });
  });

  await check('get of a missing key is refused (key not found)', async () => {
    await rejects(c.get({ key: 'conf:missing' }), 'get(missing)', (e) => {
      assert.match(errText(e), /key not found/);
    });
  });

  await check('set (second value of the same key)', async () => {
    const r = ensure(await c.set({ key: 'conf:key1', value: 'value1b' }), 'set');
    assert.strictEqual(r.id, ctx.tx1 + 1);
    ctx.tx2 = r.id;
    const g = ensure(await c.get({ key: 'conf:key1' }), 'get');
    assert.deepStrictEqual(g, { tx: ctx.tx2, key: 'conf:key1', value: 'value1b' });
  });

  await check('set of an empty value', async () => {
    const r = ensure(await c.set({ key: 'conf:empty', value: '' }), 'set');
    ctx.txEmpty = r.id;
    const g = ensure(await c.get({ key: 'conf:empty' }), 'get');
    assert.strictEqual(g.value, '');
    assert.strictEqual(g.tx, r.id);
  });

  await check('setAll', async () => {
    const r = ensure(await c.setAll({
      kvsList: [
        { key: 'conf:batch:a', value: 'A' },
        { key: 'conf:batch:b', value: 'BB' },
        { key: 'conf:batch:c', value: 'CCC' },
      ],
    }), 'setAll');
    assert.strictEqual(r.nentries, 3);
    assert.strictEqual(r.id, ctx.txEmpty + 1);
    assert.strictEqual(bytes(r.prevalh).length, 32);
    ctx.txBatch = r.id;
  });

  await check('getAll (missing keys are skipped)', async () => {
    const r = ensure(await c.getAll({
      keysList: ['conf:batch:a', 'conf:nope', 'conf:batch:c', 'conf:key1'],
      sincetx: 0,
    }), 'getAll');
    assert.deepStrictEqual(r.entriesList, [
      { tx: ctx.txBatch, key: 'conf:batch:a', value: 'A' },
      { tx: ctx.txBatch, key: 'conf:batch:c', value: 'CCC' },
      { tx: ctx.tx2, key: 'conf:key1', value: 'value1b' },
    ]);
  });

  await check('scan (prefix, ascending)', async () => {
    const r = ensure(await c.scan({ prefix: 'conf:batch:', sincetx: ctx.txBatch }), 'scan');
    assert.deepStrictEqual(r.entriesList, [
      { tx: ctx.txBatch, key: 'conf:batch:a', value: 'A' },
      { tx: ctx.txBatch, key: 'conf:batch:b', value: 'BB' },
      { tx: ctx.txBatch, key: 'conf:batch:c', value: 'CCC' },
    ]);
  });

  await check('scan (prefix, descending, limit 2)', async () => {
    const r = ensure(await c.scan({ prefix: 'conf:batch:', desc: true, limit: 2 }), 'scan');
    assert.deepStrictEqual(r.entriesList.map((e) => e.key), ['conf:batch:c', 'conf:batch:b']);
  });

  await check('scan (seekkey, ascending: after the seek key)', async () => {
    const r = ensure(await c.scan({ prefix: 'conf:batch:', seekkey: 'conf:batch:a' }), 'scan');
    const keys = r.entriesList.map((e) => e.key);
    // immudb's seek key is exclusive in 1.x
    assert.deepStrictEqual(keys, ['conf:batch:b', 'conf:batch:c']);
  });

  await check('history', async () => {
    const r = ensure(await c.history({ key: 'conf:key1' }), 'history');
    assert.deepStrictEqual(r.entriesList, [
      { tx: ctx.tx1, key: 'conf:key1', value: 'value1' },
      { tx: ctx.tx2, key: 'conf:key1', value: 'value1b' },
    ]);
  });

  await check('history (desc, limit 1)', async () => {
    const r = ensure(await c.history({ key: 'conf:key1', desc: true, limit: 1 }), 'history');
    assert.deepStrictEqual(r.entriesList, [{ tx: ctx.tx2, key: 'conf:key1', value: 'value1b' }]);
  });

  await check('history (offset 1)', async () => {
    const r = ensure(await c.history({ key: 'conf:key1', offset: 1 }), 'history');
    assert.deepStrictEqual(r.entriesList, [{ tx: ctx.tx2, key: 'conf:key1', value: 'value1b' }]);
  });

  // immudb 1.x answers Count/CountAll with "not yet supported"; a server
  // that implements them must return the right number.
  await check('count', async () => {
    try {
      const r = await c.count({ prefix: 'conf:batch:' });
      assert.strictEqual(r.count, 3, 'three keys under conf:batch:');
      return { note: `count=${r.count}` };
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      assert.match(errText(e), /support/i, 'a refusal should say it is not supported');
      return { note: `refused like immudb 1.x: ${errText(e)}` };
    }
  });

  await check('countAll', async () => {
    try {
      const r = await c.countAll();
      assert.strictEqual(typeof r.count, 'number');
      assert.ok(r.count >= 6, `countAll=${r.count}, at least 6 keys were written`);
      return { note: `count=${r.count}` };
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
      assert.match(errText(e), /support/i, 'a refusal should say it is not supported');
      return { note: `refused like immudb 1.x: ${errText(e)}` };
    }
  });

  // --- references -----------------------------------------------------------
  await check('setReference', async () => {
    const r = ensure(await c.setReference({ key: 'conf:ref1', referencedKey: 'conf:key1' }), 'setReference');
    assert.strictEqual(r.nentries, 1);
    assert.strictEqual(r.id, ctx.txBatch + 1);
    ctx.txRef1 = r.id;
    const g = ensure(await c.get({ key: 'conf:ref1' }), 'get');
    assert.deepStrictEqual(g, { tx: ctx.tx2, key: 'conf:key1', value: 'value1b' });
  });

  await check('setReferenceAt (bound to the first value)', async () => {
    const r = ensure(await c.setReferenceAt({ key: 'conf:ref2', referencedKey: 'conf:key1', attx: ctx.tx1 }),
      'setReferenceAt');
    assert.strictEqual(r.id, ctx.txRef1 + 1);
    ctx.txRef2 = r.id;
    const g = ensure(await c.get({ key: 'conf:ref2' }), 'get');
    assert.deepStrictEqual(g, { tx: ctx.tx1, key: 'conf:key1', value: 'value1' });
  });

  await check('setReference to a missing key is refused', async () => {
    await rejects(c.setReference({ key: 'conf:ref3', referencedKey: 'conf:missing' }), 'setReference');
  });

  // --- sorted sets ----------------------------------------------------------
  await check('zAdd', async () => {
    const r1 = ensure(await c.zAdd({ set: 'conf:set', score: 1.5, key: 'conf:key1' }), 'zAdd');
    const r2 = ensure(await c.zAdd({ set: 'conf:set', score: 0.5, key: 'conf:batch:a' }), 'zAdd');
    assert.strictEqual(r1.id, ctx.txRef2 + 1);
    assert.strictEqual(r2.id, r1.id + 1);
    assert.strictEqual(r1.nentries, 1);
    ctx.txZ = r2.id;
  });

  await check('zAddAt (bound to the first value)', async () => {
    const r = ensure(await c.zAddAt({ set: 'conf:set', score: 3, key: 'conf:key1', attx: ctx.tx1 }), 'zAddAt');
    assert.strictEqual(r.id, ctx.txZ + 1);
    ctx.txZAt = r.id;
  });

  await check('zAdd of a missing key is refused', async () => {
    await rejects(c.zAdd({ set: 'conf:set', score: 1, key: 'conf:missing' }), 'zAdd');
  });

  await check('zScan', async () => {
    const r = ensure(await c.zScan({ set: 'conf:set', sincetx: ctx.txZAt }), 'zScan');
    assert.deepStrictEqual(r.entriesList, [
      { set: 'conf:set', key: 'conf:batch:a', score: 0.5, attx: 0 },
      { set: 'conf:set', key: 'conf:key1', score: 1.5, attx: 0 },
      { set: 'conf:set', key: 'conf:key1', score: 3, attx: ctx.tx1 },
    ]);
  });

  await check('zScan (desc, limit 2)', async () => {
    const r = ensure(await c.zScan({ set: 'conf:set', desc: true, limit: 2 }), 'zScan');
    assert.deepStrictEqual(r.entriesList.map((e) => e.score), [3, 1.5]);
  });

  await check('zScan (seek after an entry: seekkey/seekscore, exclusive and inclusive)', async () => {
    const ex = ensure(await c.zScan({ set: 'conf:set', seekkey: 'conf:batch:a', seekscore: 0.5 }), 'zScan');
    assert.deepStrictEqual(ex.entriesList.map((e) => [e.key, e.score]),
      [['conf:key1', 1.5], ['conf:key1', 3]]);
    const inc = ensure(await c.zScan({
      set: 'conf:set', seekkey: 'conf:batch:a', seekscore: 0.5, inclusiveseek: true,
    }), 'zScan');
    assert.deepStrictEqual(inc.entriesList.map((e) => [e.key, e.score]),
      [['conf:batch:a', 0.5], ['conf:key1', 1.5], ['conf:key1', 3]]);
  });

  await check('zScan (minscore / maxscore)', async () => {
    const r = ensure(await c.zScan({
      set: 'conf:set', minscore: { score: 1 }, maxscore: { score: 2 },
    }), 'zScan');
    assert.deepStrictEqual(r.entriesList.map((e) => [e.key, e.score]), [['conf:key1', 1.5]]);
  });

  // --- execAll (the SDK can only send Ref ops, see the header) -----------------
  await check('execAll (two reference ops)', async () => {
    const r = ensure(await c.execAll({
      operationsList: [
        { ref: { key: Buffer.from('conf:xref1'), referencedkey: Buffer.from('conf:key1'), attx: 0, boundref: false } },
        { ref: { key: Buffer.from('conf:xref2'), referencedkey: Buffer.from('conf:batch:b'), attx: 0, boundref: false } },
      ],
    }), 'execAll');
    assert.strictEqual(r.nentries, 2);
    assert.strictEqual(r.id, ctx.txZAt + 1);
    ctx.txExec = r.id;
    const g1 = ensure(await c.get({ key: 'conf:xref1' }), 'get');
    assert.deepStrictEqual(g1, { tx: ctx.tx2, key: 'conf:key1', value: 'value1b' });
    const g2 = ensure(await c.get({ key: 'conf:xref2' }), 'get');
    assert.deepStrictEqual(g2, { tx: ctx.txBatch, key: 'conf:batch:b', value: 'BB' });
  });

  await check('execAll of a kv op (sent by the SDK as an empty Ref) is refused', async () => {
    await rejects(c.execAll({
      operationsList: [{ kv: { key: Buffer.from('conf:x'), value: Buffer.from('y') } }],
    }), 'execAll');
  });

  // --- transactions ---------------------------------------------------------
  await check('txById', async () => {
    const r = ensure(await c.txById({ tx: ctx.txBatch }), 'txById');
    assert.strictEqual(r.metadata.id, ctx.txBatch);
    assert.strictEqual(r.metadata.nentries, 3);
    assert.strictEqual(r.metadata.bltxid, ctx.txBatch - 1);
    const want = [['conf:batch:a', 'A'], ['conf:batch:b', 'BB'], ['conf:batch:c', 'CCC']];
    let layout = '';
    assert.strictEqual(r.entriesList.length, 3);
    r.entriesList.forEach((e, i) => {
      const [k, v] = want[i];
      assert.ok(bytes(e.key).equals(Buffer.concat([Buffer.from([0]), Buffer.from(k)])),
        `entry ${i} key ${bytes(e.key).toString('hex')}`);
      const ev = Buffer.concat([Buffer.from([0]), Buffer.from(v)]);
      assert.ok(bytes(e.hvalue).equals(sha256(ev)), `entry ${i} hValue != H(0x00||value)`);
      // immudb <= 1.1 (the SDK's schema): TxEntry {key=1, hValue=2,
      // vOff=3, vLen=4}; immudb >= 1.2: {key=1, hValue=2, vLen=3,
      // metadata=4, value=5}, so an old client reads a new server's vLen
      // as vOff. Either layout is accepted.
      if (e.vlen === 0 && e.voff === ev.length) {
        layout = 'vLen in field 3 (immudb >= 1.2 TxEntry): the SDK sees it as voff';
      } else {
        assert.strictEqual(e.vlen, ev.length, `entry ${i} vLen (voff=${e.voff})`);
        layout = 'vLen in field 4 (immudb 1.1 TxEntry)';
      }
    });
    // The header hashes as the SDK computes them must chain: the Alh of
    // tx N-1 is the PrevAlh of tx N.
    const prev = ensure(await c.txById({ tx: ctx.txBatch - 1 }), 'txById');
    const m = new schema.TxMetadata();
    m.setId(prev.metadata.id);
    m.setPrevalh(bytes(prev.metadata.prevalh));
    m.setTs(prev.metadata.ts);
    m.setNentries(prev.metadata.nentries);
    m.setEh(bytes(prev.metadata.eh));
    m.setBltxid(prev.metadata.bltxid);
    m.setBlroot(bytes(prev.metadata.blroot));
    assert.ok(Buffer.from(sdkUtil.getAlh(m)).equals(bytes(r.metadata.prevalh)),
      'Alh(tx N-1) computed in the v0 layout != PrevAlh(tx N)');
    return { note: layout };
  });

  await check('txById of a missing tx is refused', async () => {
    await rejects(c.txById({ tx: 1000000 }), 'txById(1000000)');
  });

  await check('txScan', async () => {
    const r = ensure(await c.txScan({ initialtx: ctx.tx1, limit: 3, desc: false }), 'txScan');
    assert.deepStrictEqual(r.txsList.map((t) => t.metadata.id), [ctx.tx1, ctx.tx1 + 1, ctx.tx1 + 2]);
    assert.strictEqual(r.txsList[0].entriesList.length, 1);
  });

  await check('txScan (desc)', async () => {
    const r = ensure(await c.txScan({ initialtx: ctx.txBatch, limit: 2, desc: true }), 'txScan');
    assert.deepStrictEqual(r.txsList.map((t) => t.metadata.id), [ctx.txBatch, ctx.txBatch - 1]);
  });

  await check('currentState', async () => {
    const r = ensure(await c.currentState(), 'currentState');
    assert.strictEqual(r.txid, ctx.txExec);
    assert.strictEqual(bytes(r.txhash).length, 32);
  });

  // --- verified reads -------------------------------------------------------
  await check('verifiedGet', async () => {
    const r = ensure(await c.verifiedGet({ key: 'conf:key1' }), 'verifiedGet');
    assert.strictEqual(r.tx, ctx.tx2);
    assert.strictEqual(r.key, 'conf:key1');
    assert.strictEqual(r.value, 'value1b');
    assert.strictEqual(r.referencedby, undefined);
  });

  await check('verifiedGetAt (older tx: proof from the entry to the local state)', async () => {
    const r = ensure(await c.verifiedGetAt({ key: 'conf:key1', attx: ctx.tx1 }), 'verifiedGetAt');
    assert.strictEqual(r.tx, ctx.tx1);
    assert.strictEqual(r.value, 'value1');
  });

  await check('verifiedGetSince', async () => {
    const r = ensure(await c.verifiedGetSince({ key: 'conf:batch:b', sincetx: ctx.txExec }), 'verifiedGetSince');
    assert.strictEqual(r.tx, ctx.txBatch);
    assert.strictEqual(r.value, 'BB');
  });

  await check('verifiedGet of an empty value', async () => {
    const r = ensure(await c.verifiedGet({ key: 'conf:empty' }), 'verifiedGet');
    assert.strictEqual(r.value, '');
    assert.strictEqual(r.tx, ctx.txEmpty);
  });

  await check('verifiedGet of a reference (referencedBy)', async () => {
    const r = ensure(await c.verifiedGet({ key: 'conf:ref2' }), 'verifiedGet');
    assert.strictEqual(r.value, 'value1');
    assert.strictEqual(r.key, 'conf:key1');
    assert.strictEqual(r.tx, ctx.txRef2, 'vTx of a reference is the reference tx');
    assert.ok(r.referencedby, 'referencedBy missing');
    assert.strictEqual(r.referencedby.tx, ctx.txRef2);
    assert.strictEqual(r.referencedby.attx, ctx.tx1);
    assert.ok(bytes(r.referencedby.key).equals(Buffer.from('conf:ref2')));
  });

  await check('verifiedGet of a missing key is refused', async () => {
    await rejects(c.verifiedGet({ key: 'conf:missing' }), 'verifiedGet(missing)');
  });

  // --- verified writes ------------------------------------------------------
  await check('verifiedSet', async () => {
    const r = ensure(await c.verifiedSet({ key: 'conf:vkey2', value: 'vvalue2' }), 'verifiedSet');
    assert.strictEqual(r.id, ctx.txExec + 1);
    ctx.vset2 = r.id;
    const g = ensure(await c.verifiedGet({ key: 'conf:vkey2' }), 'verifiedGet');
    assert.strictEqual(g.value, 'vvalue2');
    assert.strictEqual(g.tx, r.id);
  });

  await check('verifiedSetReference', async () => {
    const r = ensure(await c.verifiedSetReference({ key: 'conf:vref1', referencedKey: 'conf:key1' }),
      'verifiedSetReference');
    assert.strictEqual(r.id, ctx.vset2 + 1);
    assert.strictEqual(r.nentries, 1);
    ctx.vref1 = r.id;
    const g = ensure(await c.get({ key: 'conf:vref1' }), 'get');
    assert.strictEqual(g.value, 'value1b');
  });

  await check('verifiedSetReferenceAt', async () => {
    const r = ensure(await c.verifiedSetReferenceAt({ key: 'conf:vref2', referencedKey: 'conf:key1', attx: ctx.tx1 }),
      'verifiedSetReferenceAt');
    assert.strictEqual(r.id, ctx.vref1 + 1);
    ctx.vref2 = r.id;
    const g = ensure(await c.verifiedGet({ key: 'conf:vref2' }), 'verifiedGet');
    assert.strictEqual(g.value, 'value1');
    assert.strictEqual(g.referencedby.attx, ctx.tx1);
  });

  await check('verifiedZAdd', async () => {
    const r = ensure(await c.verifiedZAdd({ set: 'conf:vset', score: 2.25, key: 'conf:key1' }), 'verifiedZAdd');
    assert.strictEqual(r.id, ctx.vref2 + 1);
    assert.strictEqual(r.nentries, 1);
    ctx.vz1 = r.id;
  });

  await check('verifiedZAddAt', async () => {
    const r = ensure(await c.verifiedZAddAt({ set: 'conf:vset', score: -7, key: 'conf:key1', attx: ctx.tx1 }),
      'verifiedZAddAt');
    assert.strictEqual(r.id, ctx.vz1 + 1);
    ctx.vz2 = r.id;
    const z = ensure(await c.zScan({ set: 'conf:vset', sincetx: r.id }), 'zScan');
    assert.deepStrictEqual(z.entriesList, [
      { set: 'conf:vset', key: 'conf:key1', score: -7, attx: ctx.tx1 },
      { set: 'conf:vset', key: 'conf:key1', score: 2.25, attx: 0 },
    ]);
  });

  await check('verifiedTxById (older tx)', async () => {
    const r = ensure(await c.verifiedTxById({ tx: ctx.txBatch }), 'verifiedTxById');
    assert.strictEqual(r.metadata.id, ctx.txBatch);
    assert.strictEqual(r.entriesList.length, 3);
  });

  await check('verifiedTxById (newest tx)', async () => {
    const r = ensure(await c.verifiedTxById({ tx: ctx.vz2 }), 'verifiedTxById');
    assert.strictEqual(r.metadata.id, ctx.vz2);
  });

  await check('verifiedTxById (tx 1: proof over the whole history)', async () => {
    const r = ensure(await c.verifiedTxById({ tx: 1 }), 'verifiedTxById');
    assert.strictEqual(r.metadata.id, 1);
  });

  await check('local state file after verified calls == server state', async () => {
    const st = readStateFile(mainState)[STATE_KEY][DEF];
    const cur = ensure(await c.currentState(), 'currentState');
    assert.strictEqual(st.txid, ctx.vz2);
    assert.strictEqual(cur.txid, ctx.vz2);
    assert.ok(Buffer.from(st.txhash).equals(bytes(cur.txhash)), 'txhash differs');
  });

  // A longer chain: many txs between the trusted state and the target, so
  // the dual proof needs inclusion, consistency and last-inclusion proofs
  // of a bigger tree.
  await check('verifiedGet after 40 more txs (longer dual proof)', async () => {
    const st = readStateFile(mainState)[STATE_KEY][DEF];
    for (let i = 0; i < 40; i++) {
      ensure(await c.set({ key: `conf:many:${i}`, value: `v${i}` }), 'set');
    }
    const r = ensure(await c.verifiedGet({ key: 'conf:many:39' }), 'verifiedGet');
    assert.strictEqual(r.value, 'v39');
    assert.strictEqual(r.tx, st.txid + 40);
    const r2 = ensure(await c.verifiedGetAt({ key: 'conf:key1', attx: ctx.tx1 }), 'verifiedGetAt');
    assert.strictEqual(r2.value, 'value1');
    ctx.last = r.tx;
  });

  // --- a second database ----------------------------------------------------
  await check('createDatabase', async () => {
    ensure(await c.createDatabase({ databasename: 'confdb' }), 'createDatabase');
    const r = ensure(await c.listDatabases(), 'listDatabases');
    const names = r.databasesList.map((d) => d.databasename);
    assert.ok(names.includes('confdb') && names.includes(DEF), `databases: ${names}`);
    assert.ok(names.indexOf(DEF) < names.indexOf('confdb'), `creation order: ${names}`);
  });

  await check('createDatabase of an existing database is refused', async () => {
    await rejects(c.createDatabase({ databasename: 'confdb' }), 'createDatabase(confdb again)');
  });

  await check('useDatabase (second database) and its isolation', async () => {
    ensure(await c.useDatabase({ databasename: 'confdb' }), 'useDatabase');
    // The SDK's state.get throws (and the verified call resolves undefined)
    // when the state file lacks this database: currentState stores it.
    const s = ensure(await c.currentState(), 'currentState');
    ctx.confBase = s.txid;
    await rejects(c.get({ key: 'conf:key1' }), 'get(conf:key1) in confdb', (e) => {
      assert.match(errText(e), /key not found/);
    });
    const r = ensure(await c.set({ key: 'conf:key1', value: 'other db' }), 'set');
    assert.strictEqual(r.id, s.txid + 1);
    const g = ensure(await c.get({ key: 'conf:key1' }), 'get');
    assert.strictEqual(g.value, 'other db');
  });

  await check('verifiedSet and verifiedGet in the second database', async () => {
    const r = ensure(await c.verifiedSet({ key: 'conf:vkey', value: 'in confdb' }), 'verifiedSet');
    assert.strictEqual(r.id, ctx.confBase + 2);
    const g = ensure(await c.verifiedGet({ key: 'conf:key1' }), 'verifiedGet');
    assert.strictEqual(g.value, 'other db');
    const st = readStateFile(mainState)[STATE_KEY];
    assert.strictEqual(st.confdb.txid, r.id);
    assert.strictEqual(st[DEF].txid, ctx.last, 'defaultdb state must be untouched');
  });

  await check('useDatabase back to defaultdb', async () => {
    ensure(await c.useDatabase({ databasename: DEF }), 'useDatabase');
    const g = ensure(await c.verifiedGet({ key: 'conf:key1' }), 'verifiedGet');
    assert.strictEqual(g.value, 'value1b');
  });

  await check('calls without login are refused (Unauthenticated)', async () => {
    const anon = newClient(rootPath('root-user.json'));
    await rejects(anon.set({ key: 'conf:anon', value: 'x' }), 'set without login', (e) => {
      assert.strictEqual(e.code, 16, `expected UNAUTHENTICATED, got ${describe(e)}`);
    });
    await rejects(anon.listDatabases(), 'listDatabases without login');
  });

  await check('login without useDatabase (several databases): data calls need a database', async () => {
    const cl = newClient(rootPath('root-user.json'));
    ensure(await cl.login({ user: args.user, password: args.password }), 'login');
    await rejects(cl.set({ key: 'conf:nodb', value: 'x' }), 'set before useDatabase', (e) => {
      assert.match(errText(e), /select a database/);
    });
    ensure(await cl.useDatabase({ databasename: DEF }), 'useDatabase');
    ensure(await cl.set({ key: 'conf:nodb', value: 'x' }), 'set after useDatabase');
  });

  await check('UTF-8 keys and values', async () => {
    const k = 'conf:ключ:鍵:🔑';
    const v = 'значение — 値 — 🚀 — \u00e9\u0301';
    const r = ensure(await c.set({ key: k, value: v }), 'set');
    const g = ensure(await c.get({ key: k }), 'get');
    assert.deepStrictEqual(g, { tx: r.id, key: k, value: v });
    const vg = ensure(await c.verifiedGet({ key: k }), 'verifiedGet');
    assert.strictEqual(vg.value, v);
  });

  await check('a 3 MiB value: verifiedSet, get, verifiedGet (HTTP/2 flow control)', async () => {
    const big = crypto.randomBytes(3 * 1024 * 1024 / 2).toString('hex');
    const r = ensure(await c.verifiedSet({ key: 'conf:big', value: big }), 'verifiedSet');
    const g = ensure(await c.get({ key: 'conf:big' }), 'get');
    assert.strictEqual(g.value.length, big.length);
    assert.ok(g.value === big, 'value differs');
    const vg = ensure(await c.verifiedGet({ key: 'conf:big' }), 'verifiedGet');
    assert.ok(vg.value === big, 'verified value differs');
    assert.strictEqual(vg.tx, r.id);
  });

  await check('50 concurrent sets, then a verifiedGet of each 10th', async () => {
    const rs = await Promise.all(Array.from({ length: 50 }, (_, i) =>
      c.set({ key: `conf:conc:${i}`, value: `c${i}` })));
    const ids = rs.map((r) => ensure(r, 'set').id).sort((a, b) => a - b);
    assert.strictEqual(new Set(ids).size, 50, 'tx ids must be distinct');
    assert.strictEqual(ids[49] - ids[0], 49, `tx ids must be consecutive: ${ids[0]}..${ids[49]}`);
    for (let i = 0; i < 50; i += 10) {
      const g = ensure(await c.verifiedGet({ key: `conf:conc:${i}` }), 'verifiedGet');
      assert.strictEqual(g.value, `c${i}`);
      assert.strictEqual(g.tx, rs[i].id);
    }
  });

  // --- users ----------------------------------------------------------------
  const U = 'confuser';
  const P1 = 'Conf1234!';
  const P2 = 'Conf5678?';
  await check('createUser', async () => {
    ensure(await c.createUser({ user: U, password: P1, permission: READ_WRITE, database: DEF }), 'createUser');
  });

  await check('createUser of an existing user is refused', async () => {
    await rejects(c.createUser({ user: U, password: P1, permission: READ_WRITE, database: DEF }), 'createUser');
  });

  await check('createUser with a weak password is refused', async () => {
    await rejects(c.createUser({ user: 'weakuser', password: 'short', permission: READ, database: DEF }),
      'createUser(weak password)');
  });

  await check('createUser on a missing database is refused', async () => {
    await rejects(c.createUser({ user: 'nodbuser', password: P1, permission: READ, database: 'nosuchdb' }),
      'createUser(nosuchdb)');
  });

  await check('listUsers', async () => {
    const r = ensure(await c.listUsers(), 'listUsers');
    const names = r.usersList.map((u) => u.user);
    assert.ok(names.includes('immudb') && names.includes(U), `users: ${names}`);
    const u = r.usersList.find((x) => x.user === U);
    assert.strictEqual(u.active, true);
    assert.strictEqual(u.createdby, 'immudb');
    assert.deepStrictEqual(u.permissionsList, [{ database: DEF, permission: READ_WRITE }]);
    const adm = r.usersList.find((x) => x.user === 'immudb');
    assert.ok(adm.permissionsList.some((p) => p.permission === 255), 'immudb is sysadmin (255)');
  });

  const uc = newClient(rootPath('root-user.json'));
  await check('new user: login, useDatabase, set/get, sees only its databases', async () => {
    ensure(await uc.login({ user: U, password: P1 }), 'login');
    const l = ensure(await uc.listDatabases(), 'listDatabases');
    assert.deepStrictEqual(l.databasesList.map((d) => d.databasename), [DEF]);
    ensure(await uc.useDatabase({ databasename: DEF }), 'useDatabase');
    const r = ensure(await uc.set({ key: 'conf:byuser', value: 'hi' }), 'set');
    const g = ensure(await uc.get({ key: 'conf:byuser' }), 'get');
    assert.strictEqual(g.tx, r.id);
    await rejects(uc.useDatabase({ databasename: 'confdb' }), 'useDatabase(confdb) without permission');
    // listUsers as a readwrite user: immudb >= 1.2 refuses it (admin
    // only); 1.1 answered with the caller's own entry. Either is fine.
    try {
      const lu = await uc.listUsers();
      assert.deepStrictEqual(lu.usersList.map((u) => u.user), [U],
        'a readwrite user may see only itself');
    } catch (e) {
      if (e instanceof assert.AssertionError) throw e;
    }
    await rejects(uc.createDatabase({ databasename: 'userdb' }), 'createDatabase as a non-sysadmin');
  });

  await check('new user: verified calls with its own state', async () => {
    ensure(await uc.useDatabase({ databasename: DEF }), 'useDatabase');
    const g = ensure(await uc.verifiedGet({ key: 'conf:key1' }), 'verifiedGet');
    assert.strictEqual(g.value, 'value1b');
    const s = ensure(await uc.verifiedSet({ key: 'conf:byuser2', value: 'hi2' }), 'verifiedSet');
    assert.strictEqual(s.nentries, 1);
  });

  await check('changePermission (GRANT read on confdb)', async () => {
    ensure(await c.changePermission({ action: GRANT, username: U, database: 'confdb', permission: READ }),
      'changePermission');
    const r = ensure(await c.listUsers(), 'listUsers');
    const u = r.usersList.find((x) => x.user === U);
    const perms = u.permissionsList.map((p) => `${p.database}:${p.permission}`).sort();
    assert.deepStrictEqual(perms, [`confdb:${READ}`, `${DEF}:${READ_WRITE}`]);
    // The user can now read confdb, but not write it.
    ensure(await uc.login({ user: U, password: P1 }), 'login');
    ensure(await uc.useDatabase({ databasename: 'confdb' }), 'useDatabase(confdb)');
    const g = ensure(await uc.get({ key: 'conf:key1' }), 'get');
    assert.strictEqual(g.value, 'other db');
    await rejects(uc.set({ key: 'conf:ro', value: 'x' }), 'set with read permission');
  });

  await check('changePermission (REVOKE on confdb)', async () => {
    ensure(await c.changePermission({ action: REVOKE, username: U, database: 'confdb', permission: READ }),
      'changePermission');
    const r = ensure(await c.listUsers(), 'listUsers');
    const u = r.usersList.find((x) => x.user === U);
    assert.deepStrictEqual(u.permissionsList.map((p) => p.database), [DEF]);
    ensure(await uc.login({ user: U, password: P1 }), 'login');
    await rejects(uc.useDatabase({ databasename: 'confdb' }), 'useDatabase(confdb) after REVOKE');
  });

  await check('changePassword', async () => {
    ensure(await c.changePassword({ user: U, oldpassword: P1, newpassword: P2 }), 'changePassword');
    const other = newClient(rootPath('root-user.json'));
    await rejects(other.login({ user: U, password: P1 }), 'login with the old password');
    ensure(await other.login({ user: U, password: P2 }), 'login with the new password');
  });

  await check('changePassword of the user itself (old password checked)', async () => {
    const self = newClient(rootPath('root-user.json'));
    ensure(await self.login({ user: U, password: P2 }), 'login');
    await rejects(self.changePassword({ user: U, oldpassword: 'Wrong999!', newpassword: P1 }),
      'changePassword with a wrong old password');
    ensure(await self.changePassword({ user: U, oldpassword: P2, newpassword: P1 }), 'changePassword');
    ensure(await newClient(rootPath('root-user.json')).login({ user: U, password: P1 }), 'login');
  });

  await check('setActiveUser (deactivate, then activate)', async () => {
    ensure(await c.setActiveUser({ username: U, active: false }), 'setActiveUser(false)');
    let r = ensure(await c.listUsers(), 'listUsers');
    assert.strictEqual(r.usersList.find((x) => x.user === U).active, false);
    await rejects(newClient(rootPath('root-user.json')).login({ user: U, password: P1 }),
      'login of a deactivated user');
    ensure(await c.setActiveUser({ username: U, active: true }), 'setActiveUser(true)');
    r = ensure(await c.listUsers(), 'listUsers');
    assert.strictEqual(r.usersList.find((x) => x.user === U).active, true);
    ensure(await newClient(rootPath('root-user.json')).login({ user: U, password: P1 }), 'login');
  });

  // --- admin odds and ends --------------------------------------------------
  await check('compactIndex', async () => {
    await c.compactIndex();
    const g = ensure(await c.get({ key: 'conf:key1' }), 'get after compactIndex');
    assert.strictEqual(g.value, 'value1b');
  });

  await check('updateAuthConfig is refused (deprecated in immudb 1.x)', async () => {
    await rejects(c.updateAuthConfig({ kind: 1 }), 'updateAuthConfig');
  });

  await check('updateMTLSConfig is refused (deprecated in immudb 1.x)', async () => {
    await rejects(c.updateMTLSConfig({ enabled: false }), 'updateMTLSConfig');
  });

  // --- tamper check 1: a tampered local state -------------------------------
  // The SDK trusts its state file. A wrong txhash there must make the next
  // verified calls reject: the server's proofs chain to the real Alh.
  c.state.commit();
  const good = readStateFile(mainState);
  const writeState = (file, mutate) => {
    const s = JSON.parse(JSON.stringify(good));
    // keep only defaultdb: a fresh client uses defaultdb
    mutate(s[STATE_KEY][DEF]);
    fs.writeFileSync(file, JSON.stringify(s));
  };
  async function stateClient(file, port) {
    const cl = new ImmudbClient({ host: args.host, port: port || args.port, rootPath: file });
    ensure(await cl.login({ user: args.user, password: args.password }), 'login');
    ensure(await cl.useDatabase({ databasename: DEF }), 'useDatabase');
    return cl;
  }

  await check('tamper.state control: an untouched copy of the state verifies', async () => {
    writeState(rootPath('root-good.json'), () => {});
    const cl = await stateClient(rootPath('root-good.json'));
    const g = ensure(await cl.verifiedGet({ key: 'conf:key1' }), 'verifiedGet');
    assert.strictEqual(g.value, 'value1b');
    ensure(await cl.verifiedTxById({ tx: ctx.tx1 }), 'verifiedTxById');
  });

  await check('tamper.state: wrong txhash makes verifiedGet reject', async () => {
    writeState(rootPath('root-badhash.json'), (s) => { s.txhash[5] ^= 0x01; });
    const cl = await stateClient(rootPath('root-badhash.json'));
    await rejects(cl.verifiedGet({ key: 'conf:key1' }), 'verifiedGet with a tampered state');
  });

  await check('tamper.state: wrong txhash makes verifiedTxById reject', async () => {
    writeState(rootPath('root-badhash.json'), (s) => { s.txhash[31] ^= 0x80; });
    const cl = await stateClient(rootPath('root-badhash.json'));
    await rejects(cl.verifiedTxById({ tx: ctx.tx1 }), 'verifiedTxById with a tampered state');
  });

  await check('tamper.state: wrong txhash makes verifiedSet reject', async () => {
    writeState(rootPath('root-badhash.json'), (s) => { s.txhash[0] ^= 0xff; });
    const cl = await stateClient(rootPath('root-badhash.json'));
    await rejects(cl.verifiedSet({ key: 'conf:afterbad', value: 'x' }), 'verifiedSet with a tampered state');
  });

  await check('tamper.state: txid swapped to an older tx makes verifiedGet reject', async () => {
    writeState(rootPath('root-badhash.json'), (s) => { s.txid -= 1; });
    const cl = await stateClient(rootPath('root-badhash.json'));
    await rejects(cl.verifiedGet({ key: 'conf:key1' }), 'verifiedGet with a wrong txid');
  });

  await check('tamper.state: a txid beyond the server is refused', async () => {
    writeState(rootPath('root-future.json'), (s) => { s.txid += 1000; });
    const cl = await stateClient(rootPath('root-future.json'));
    const e = await rejects(cl.verifiedGet({ key: 'conf:key1' }), 'verifiedGet with a future txid');
    return { note: describe(e) };
  });

  // --- tamper check 2: a lying server (responses altered in flight) -------
  // A gRPC proxy built from the SDK's own service definition forwards every
  // call to the real server and alters one field of chosen responses; the
  // SDK's proof checks must reject them. An unaltered call through the same
  // proxy is the control.
  await check('tamper.response control: verified calls through the proxy verify', async () => {
    await withProxy({}, async (port) => {
      writeState(rootPath('root-good.json'), () => {});
      const cl = await stateClient(rootPath('root-good.json'), port);
      const g = ensure(await cl.verifiedGet({ key: 'conf:key1' }), 'verifiedGet');
      assert.strictEqual(g.value, 'value1b');
      ensure(await cl.verifiedTxById({ tx: ctx.tx1 }), 'verifiedTxById');
      ensure(await cl.verifiedSet({ key: 'conf:viaproxy', value: 'p' }), 'verifiedSet');
    });
  });

  await check('tamper.response: verifiedGet rejects an altered value', async () => {
    await withProxy({
      verifiableGet: (res) => {
        const e = res.getEntry();
        const v = Buffer.from(e.getValue_asU8());
        v[v.length - 1] ^= 0x01; // value1b -> value1c
        e.setValue(v);
      },
    }, async (port) => {
      writeState(rootPath('root-good.json'), () => {});
      const cl = await stateClient(rootPath('root-good.json'), port);
      await rejects(cl.verifiedGet({ key: 'conf:key1' }), 'verifiedGet of an altered value');
    });
  });

  await check('tamper.response: verifiedTxById rejects an altered linear proof', async () => {
    await withProxy({
      verifiableTxById: (res) => {
        const lp = res.getDualproof().getLinearproof();
        const terms = lp.getTermsList_asU8().map((t) => Buffer.from(t));
        terms[terms.length - 1][0] ^= 0x01;
        lp.setTermsList(terms);
      },
    }, async (port) => {
      writeState(rootPath('root-good.json'), () => {});
      const cl = await stateClient(rootPath('root-good.json'), port);
      await rejects(cl.verifiedTxById({ tx: ctx.tx1 }), 'verifiedTxById with an altered proof');
    });
  });

  await check('tamper.response: verifiedSet rejects an altered tx header', async () => {
    await withProxy({
      verifiableSet: (res) => {
        // the SDK only logs an Eh mismatch, but the Alh it computes from
        // the altered header no longer chains
        const md = res.getDualproof().getTargettxmetadata();
        md.setTs(md.getTs() + 1);
      },
    }, async (port) => {
      writeState(rootPath('root-good.json'), () => {});
      const cl = await stateClient(rootPath('root-good.json'), port);
      await rejects(cl.verifiedSet({ key: 'conf:viaproxy', value: 'q' }), 'verifiedSet with an altered header');
    });
  });

  // --- prepare tamper check 2 (on disk) -------------------------------------
  // Values longer than the index's inline limit (256 bytes), so reads fetch
  // them from the tx log, each with a unique marker to find its bytes:
  //   conf:tamper   gets one byte flipped (a naive edit: the record's
  //                 checksums and hValue no longer match),
  //   conf:tamper2  gets one byte changed AND its hValue and the frame's
  //                 body CRC rewritten to match (a careful attacker: only
  //                 the tx header's Eh, covered by the Alh chain, is left).
  const mk = () => `TAMPER-MARKER-${crypto.randomBytes(8).toString('hex')}-`;
  const t1 = { key: 'conf:tamper', marker: mk() };
  const t2 = { key: 'conf:tamper2', marker: mk() };
  for (const t of [t1, t2]) t.value = t.marker + 'x'.repeat(400);
  await check('tamper.disk prepare: verifiedSet/verifiedGet of the values to tamper', async () => {
    for (const t of [t1, t2]) {
      t.tx = ensure(await c.verifiedSet({ key: t.key, value: t.value }), 'verifiedSet').id;
    }
    // more txs after them: the tampered frames are not the log's tail
    for (let i = 0; i < 3; i++) ensure(await c.set({ key: `conf:after:${i}`, value: 'x' }), 'set');
    for (const t of [t1, t2]) {
      const g = ensure(await c.verifiedGet({ key: t.key }), 'verifiedGet');
      assert.strictEqual(g.value, t.value);
    }
    // The state the client trusts from here on (the data is still honest).
    const cur = ensure(await c.currentState(), 'currentState');
    fs.writeFileSync(rootPath('handoff.json'), JSON.stringify({
      naive: t1, careful: t2,
      controlKey: 'conf:key1', controlValue: 'value1b', controlAtTx: ctx.tx1,
      state: { txid: cur.txid, txhash: bytes(cur.txhash).toString('hex') },
    }));
  });

  // shutdown() ends the process (state.commit, logout, process.exit(0)):
  // run it in a child process.
  await check('shutdown (child process: verifiedGet, then shutdown exits 0 and saves the state)', async () => {
    const file = rootPath('root-shutdown.json');
    fs.rmSync(file, { force: true });
    const J = JSON.stringify;
    const script = `
      const C = require(${J(require.resolve('immudb-node'))}).default;
      console.log = console.error = () => {};
      (async () => {
        const c = new C({ host: ${J(args.host)}, port: ${J(String(args.port))}, rootPath: ${J(file)} });
        await c.login({ user: ${J(args.user)}, password: ${J(args.password)} });
        await c.useDatabase({ databasename: 'defaultdb' });
        const g = await c.verifiedGet({ key: 'conf:key1' });
        if (!g || g.value !== 'value1b') process.exit(3);
        await c.shutdown();
        process.exit(4);
      })().catch(() => process.exit(5));`;
    const r = require('child_process').spawnSync(process.execPath, ['-e', script],
      { timeout: args.timeout, encoding: 'utf-8' });
    assert.strictEqual(r.status, 0, `child exit status ${r.status} signal ${r.signal} ${r.stderr}`);
    const st = readStateFile(file)[STATE_KEY][DEF];
    assert.ok(st.txid > 0 && st.txhash.length === 32, 'state saved');
  });

  // --- logout last: it revokes the tokens -----------------------------------
  await check('logout', async () => {
    await c.logout();
    await rejects(c.get({ key: 'conf:key1' }), 'get after logout');
  });

  // grpc-js 1.2.0 (the SDK's pinned transport) sends an RST_STREAM after
  // every finished call, and all its clients share one connection: a server's HTTP/2 rapid-reset
  // guard must not count those, or a busy SDK client gets a GOAWAY.
  await check('300 calls in a row on one connection', async () => {
    // Health needs no login. Last check of the phase: all the SDK's
    // clients share one connection (grpc-js subchannel pool), so a GOAWAY
    // would also fail the calls of other checks.
    const cl = newClient(rootPath('root-load.json'));
    for (let i = 0; i < 300; i++) {
      try {
        const h = await cl.health();
        assert.strictEqual(h.status, true);
      } catch (e) {
        if (e instanceof assert.AssertionError) throw e;
        throw new Error(`call ${i + 1} of 300 failed: ${describe(e)}`);
      }
    }
  });

  c.state.commit();
}

// ---------------------------------------------------------------------------
// phase tamper-disk (server stopped)
// ---------------------------------------------------------------------------

// CRC-32C (Castagnoli), as the server's log frames use (crc32c.h).
const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();
function crc32c(buf, crc = 0) {
  let c = ~crc >>> 0;
  for (let i = 0; i < buf.length; i++) c = CRC32C_TABLE[(c ^ buf[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

// Finds the one occurrence of |marker| in <data>/defaultdb/log/*.log.
function findMarker(marker) {
  const logDir = path.join(args.data, 'defaultdb', 'log');
  const files = fs.readdirSync(logDir).filter((f) => f.endsWith('.log')).sort();
  assert.ok(files.length > 0, `no *.log in ${logDir}`);
  const hits = [];
  for (const f of files) {
    const buf = fs.readFileSync(path.join(logDir, f));
    for (let at = buf.indexOf(marker); at >= 0; at = buf.indexOf(marker, at + 1)) {
      hits.push({ file: path.join(logDir, f), at, buf });
    }
  }
  assert.strictEqual(hits.length, 1, `the marker occurs ${hits.length} times in ${files}`);
  return hits[0];
}

async function phaseTamperDisk() {
  assert.ok(args.data, '--data is required');
  const h = JSON.parse(fs.readFileSync(rootPath('handoff.json'), 'utf-8'));

  await check('tamper.disk: flip one byte of a stored value in the log (naive)', async () => {
    const { file, at, buf } = findMarker(h.naive.marker);
    const pos = at + h.naive.marker.length; // the first 'x' after the marker
    assert.strictEqual(buf[pos], 0x78);
    const fd = fs.openSync(file, 'r+');
    try {
      fs.writeSync(fd, Buffer.from([0x79]), 0, 1, pos); // 'x' -> 'y'
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    h.naive.flipped = { file, pos };
    fs.writeFileSync(rootPath('handoff.json'), JSON.stringify(h));
    return { note: `${path.basename(file)} offset ${pos}` };
  });

  await check('tamper.disk: rewrite a value with a matching hValue and body CRC (careful)', async () => {
    // Frame (src/store/txrec.h): u32 magic "IMTX" | u32 plen | u32 crc_head
    // | u32 crc_body | head | body; head = 161 bytes + tx md (u16 mdLen at
    // head+123); entry = u16 kvmdLen | kvmd | u16 klen | key | u32 vlen |
    // 32 hVal | value. crc_body = crc32c(body).
    const { file, at, buf } = findMarker(h.careful.marker);
    let f = -1;
    for (let i = at - 16; i >= 0; i--) {
      if (buf.readUInt32BE(i) === 0x494d5458 && i + 16 + buf.readUInt32BE(i + 4) > at) { f = i; break; }
    }
    assert.ok(f >= 0, 'no frame start before the value');
    const plen = buf.readUInt32BE(f + 4);
    const head = f + 16;
    const hlen = 161 + buf.readUInt16BE(head + 123);
    assert.strictEqual(crc32c(buf.subarray(head, head + hlen), crc32c(buf.subarray(f + 4, f + 8))),
      buf.readUInt32BE(f + 8), 'crc_head does not match: the frame layout is not the one expected');
    const body = buf.subarray(head + hlen, head + plen);
    assert.strictEqual(crc32c(body), buf.readUInt32BE(f + 12),
      'crc_body does not match: the frame layout is not the one expected');
    // The stored value is 0x00 || user value; hVal precedes it.
    const vstart = at - 1;
    const vlen = buf.readUInt32BE(vstart - 36);
    assert.strictEqual(vlen, 1 + h.careful.value.length, 'vlen before the value');
    const value = Buffer.from(buf.subarray(vstart, vstart + vlen));
    assert.ok(sha256(value).equals(buf.subarray(vstart - 32, vstart)), 'hVal before the value');
    value[1 + h.careful.marker.length] ^= 0x01; // 'x' -> 'y'
    const patched = Buffer.from(buf);
    value.copy(patched, vstart);
    sha256(value).copy(patched, vstart - 32);
    patched.writeUInt32BE(crc32c(patched.subarray(head + hlen, head + plen)), f + 12);
    const fd = fs.openSync(file, 'r+');
    try {
      fs.writeSync(fd, patched, f, 16 + plen, f);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    return { note: `${path.basename(file)}: frame at ${f}, value at ${vstart}` };
  });
}

// Second round (server stopped again): the naive flip is undone, and the
// key index is deleted so that the server rebuilds it from the log, where
// the careful rewrite left a record whose checksums and hValue agree. Only
// the tx header's Eh (covered by the Alh chain the client holds) still
// tells the truth.
async function phaseTamperDisk2() {
  assert.ok(args.data, '--data is required');
  const h = JSON.parse(fs.readFileSync(rootPath('handoff.json'), 'utf-8'));

  await check('tamper.disk round 2: undo the naive flip', async () => {
    assert.ok(h.naive.flipped, 'round 1 did not flip');
    const { file, pos } = h.naive.flipped;
    const fd = fs.openSync(file, 'r+');
    try {
      const b = Buffer.alloc(1);
      fs.readSync(fd, b, 0, 1, pos);
      assert.strictEqual(b[0], 0x79, 'the flipped byte changed since round 1');
      fs.writeSync(fd, Buffer.from([0x78]), 0, 1, pos);
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
  });

  await check('tamper.disk round 2: delete the key index (rebuilt from the tampered log)', async () => {
    const ix = path.join(args.data, 'defaultdb', 'index');
    assert.ok(fs.existsSync(ix), `no ${ix}`);
    fs.rmSync(ix, { recursive: true, force: true });
  });
}

// ---------------------------------------------------------------------------
// phase verify-tamper (server restarted on the tampered data)
// ---------------------------------------------------------------------------
// The htree root of a Tx (as returned by txById / verifiedTxById, in
// toObject form) computed by the SDK from its entries' keys and hValues.
function entriesRoot(r) {
  const m = new schema.TxMetadata();
  m.setId(r.metadata.id);
  m.setEh(bytes(r.metadata.eh));
  const tx = new schema.Tx();
  tx.setMetadata(m);
  tx.setEntriesList(r.entriesList.map((e) => {
    const te = new schema.TxEntry();
    te.setKey(bytes(e.key));
    te.setHvalue(bytes(e.hvalue));
    return te;
  }));
  return Buffer.from(require('immudb-node/dist/src/tx').txFrom(tx).htree.root);
}

async function phaseVerifyTamper(round) {
  const h = JSON.parse(fs.readFileSync(rootPath('handoff.json'), 'utf-8'));
  const R = round === 1 ? 'tamper.disk' : 'tamper.disk round 2';
  const modified = (t) => t.marker + 'y' + t.value.slice(t.marker.length + 1);
  // The trusted state saved by phase main (the SDK reloads it).
  const cl = newClient(rootPath('root.json'));
  const ok = await check(`${R}: login to the restarted server`, async () => {
    ensure(await cl.login({ user: args.user, password: args.password }), 'login');
    ensure(await cl.useDatabase({ databasename: 'defaultdb' }), 'useDatabase');
    return true;
  });
  if (!ok) return;

  await check(`${R}: the server state is unchanged after the restart`, async () => {
    // read it without the SDK's currentState(), which would overwrite the
    // trusted local state
    const { Empty } = require('google-protobuf/google/protobuf/empty_pb');
    const st = await new Promise((resolve, reject) => cl.client.currentState(
      new Empty(), cl._metadata, (err, res) => (err ? reject(err) : resolve(res))));
    assert.strictEqual(st.getTxid(), h.state.txid);
    assert.strictEqual(Buffer.from(st.getTxhash_asU8()).toString('hex'), h.state.txhash);
  });

  await check(`${R} control: txById of an untouched tx: entries hash to its Eh`, async () => {
    const r = ensure(await cl.txById({ tx: h.controlAtTx }), 'txById');
    assert.ok(entriesRoot(r).equals(bytes(r.metadata.eh)), 'htree root != Eh');
  });

  // Round 2 rebuilt the index from a log holding a carefully tampered tx:
  // our indexer refuses that tx, so reads that need the index past it are
  // refused at once with DATA_LOSS naming the tx (never a hang, never the
  // tampered value). Either that or the correct, verified answer passes.
  const orCorruptRefusal = async (fn) => {
    try {
      return await fn();
    } catch (e) {
      if (round === 2 && e && e.code === 15 && /corrupted/.test(String(e.details || e.message))) {
        return { note: `refused as corrupted: ${describe(e)}` };
      }
      throw e;
    }
  };

  await check(`${R} control: verifiedGet of an untouched key still verifies`, async () => orCorruptRefusal(async () => {
    const g = ensure(await cl.verifiedGet({ key: h.controlKey }), 'verifiedGet');
    assert.strictEqual(g.value, h.controlValue);
    const g2 = ensure(await cl.verifiedGetAt({ key: h.controlKey, attx: h.controlAtTx }), 'verifiedGetAt');
    assert.ok(g2.value.length > 0);
  }));

  if (round === 2) {
    await check(`${R} (naive, undone): verifiedGet of the restored value verifies again`, async () => orCorruptRefusal(async () => {
      const g = ensure(await cl.verifiedGet({ key: h.naive.key }), 'verifiedGet');
      assert.strictEqual(g.value, h.naive.value);
    }));
  }

  const cases = round === 1 ? [['naive', h.naive], ['careful', h.careful]] : [['careful, index rebuilt', h.careful]];
  for (const [kind, t] of cases) {
    await check(`${R} (${kind}): what a plain get returns`, async () => {
      try {
        const g = await cl.get({ key: t.key });
        if (g.value === modified(t)) return { note: 'the server serves the modified value; only the client check can catch it' };
        if (g.value === t.value) return { note: 'the server still serves the original value' };
        return { note: `the server serves another value (${g.value.length} bytes)` };
      } catch (e) {
        return { note: `the server refuses to serve it: ${errText(e)}` };
      }
    });

    await check(`${R} (${kind}): verifiedGet of the tampered key rejects`, async () => {
      const e = await rejects(cl.verifiedGet({ key: t.key }), 'verifiedGet of the tampered value');
      return { note: e === undefined || e === null ? 'caught by the SDK\'s proof check' : `refused by the server: ${describe(e)}` };
    });

    // immudb-node's verifiedTxById checks only the dual proof, not the
    // entries, so it is the server's job not to serve a tx whose entries no
    // longer match its header: immudb re-hashes every tx it reads (store
    // tx.readFrom rebuilds the htree and compares the Alh: "tx data is
    // corrupted"). Refusing is fine; serving entries that do not hash to the
    // header's Eh is not.
    // (round 1 only: round 2 reads the same tx records again)
    const txReads = round === 1 ? [
      ['verifiedTxById', (tx) => cl.verifiedTxById({ tx })],
      ['txById', (tx) => cl.txById({ tx })],
    ] : [];
    for (const [what, call] of txReads) {
      await check(`${R} (${kind}): ${what} of the tampered tx is refused or consistent`, async () => {
        let r;
        try {
          r = ensure(await call(t.tx), what);
        } catch (e) {
          if (e instanceof assert.AssertionError) throw e;
          return { note: `refused: ${describe(e)}` };
        }
        const root = entriesRoot(r);
        assert.ok(root.equals(bytes(r.metadata.eh)),
          `the server served tx ${t.tx} although its entries no longer hash to its Eh ` +
          `(htree root ${root.toString('hex').slice(0, 16)}.. != Eh ${bytes(r.metadata.eh).toString('hex').slice(0, 16)}..); ` +
          'immudb refuses such a tx ("tx data is corrupted")' +
          (what === 'verifiedTxById' ? ', and the SDK does not check the entries: it accepted them' : ''));
        return { note: 'served, entries consistent' };
      });
    }
  }

  await check(`${R} control: verifiedGet of an untouched key after the tampered reads`, async () => orCorruptRefusal(async () => {
    const g = ensure(await cl.verifiedGet({ key: h.controlKey }), 'verifiedGet');
    assert.strictEqual(g.value, h.controlValue);
  }));
}

// ---------------------------------------------------------------------------
(async () => {
  try {
    if (args.phase === 'main') await phaseMain();
    else if (args.phase === 'tamper-disk') await phaseTamperDisk();
    else if (args.phase === 'verify-tamper') await phaseVerifyTamper(1);
    else if (args.phase === 'tamper-disk-2') await phaseTamperDisk2();
    else await phaseVerifyTamper(2);
  } catch (e) {
    failed++;
    out(`not ok phase ${args.phase}: unexpected ${describe(e)}`);
    origError(e && e.stack);
  }
  finish();
})();
