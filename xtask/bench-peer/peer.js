// cargo xtask bench --peer: the older implementation's idle poll statements, as docs/protocol.md
// section 3 describes them, run on better-sqlite3 against the bench's own session files.
//
//   node peer.js INBOUND_DB OUTBOUND_DB OPS RUNS
//
// Prints one JSON object on stdout: {"available":true, "better_sqlite3":VERSION,
// "polls":{"pending_poll":[us per poll per run...], "due_outbound":[...], "ack_sync":[...]}}
// or {"available":false, "reason":"..."} when better-sqlite3 cannot be loaded (exit 0: a
// missing peer never fails the bench).
//
// Each poll opens its own connection per call, as the older code does for these three:
// - container getPendingMessages (fresh per call): pending rows with the process_after test
//   through datetime(), newest first with a LIMIT, then every ack id loaded and acked rows
//   dropped;
// - host getDueOutboundMessages: outbound opened read-only, rows with deliver_after NULL or
//   due (raw text compare), ORDER BY timestamp; then getDeliveredIds loads the delivered
//   table from inbound.db;
// - host syncProcessingAcks (sweep): load all completed/failed acks from outbound.db, then one
//   transaction on inbound.db of UPDATE ... SET status='completed' WHERE id=? AND
//   status!='completed' per ack.
'use strict';

const path = require('path');

function load() {
  const here = __dirname;
  const roots = [here, path.join(here, '..', '..', 'peer'), path.join(here, '..', '..')];
  for (const extra of (process.env.NODE_PATH || '').split(path.delimiter)) {
    if (extra) roots.push(extra);
  }
  let lastError = null;
  try {
    const resolved = require.resolve('better-sqlite3', { paths: roots });
    const Database = require(resolved);
    let version = 'unknown';
    try {
      version = require(path.join(path.dirname(resolved), '..', 'package.json')).version;
    } catch (_) { /* the version is informational */ }
    return { Database, version };
  } catch (e) {
    lastError = e;
  }
  return { error: `better-sqlite3 not found (npm install in xtask/bench-peer): ${String(lastError && lastError.message).split('\n')[0]}` };
}

function main() {
  const [inbound, outbound, opsText, runsText] = process.argv.slice(2);
  const lib = load();
  if (lib.error) {
    process.stdout.write(JSON.stringify({ available: false, reason: lib.error }) + '\n');
    return;
  }
  const { Database, version } = lib;
  const ops = Math.max(1, parseInt(opsText || '100', 10));
  const runs = Math.max(1, parseInt(runsText || '3', 10));

  const openInboundRo = () => {
    const db = new Database(inbound, { readonly: true, fileMustExist: true });
    db.pragma('busy_timeout = 5000');
    db.pragma('mmap_size = 0');
    return db;
  };
  const openOutboundRo = () => {
    const db = new Database(outbound, { readonly: true, fileMustExist: true });
    db.pragma('busy_timeout = 5000');
    return db;
  };
  const openInboundRw = () => {
    const db = new Database(inbound, { fileMustExist: true });
    db.pragma('busy_timeout = 5000');
    db.pragma('journal_mode = DELETE');
    return db;
  };

  // The on_wake clause is used when the column exists (checked once per process).
  let hasOnWake = null;

  const pendingPoll = () => {
    const inDb = openInboundRo();
    if (hasOnWake === null) {
      hasOnWake = inDb.prepare("SELECT 1 FROM pragma_table_info('messages_in') WHERE name = 'on_wake'").get() !== undefined;
    }
    const rows = inDb.prepare(
      "SELECT * FROM messages_in WHERE status = 'pending' AND (process_after IS NULL OR " +
      "datetime(process_after) <= datetime('now'))" + (hasOnWake ? ' AND (on_wake = 0 OR ? = 1)' : '') +
      ' ORDER BY seq DESC LIMIT ?'
    ).all(...(hasOnWake ? [0, 10] : [10]));
    inDb.close();
    const outDb = openOutboundRo();
    const acked = new Set(outDb.prepare('SELECT message_id FROM processing_ack').all().map(r => r.message_id));
    outDb.close();
    return rows.filter(r => !acked.has(r.id)).reverse().length;
  };

  const dueOutbound = () => {
    const outDb = openOutboundRo();
    const rows = outDb.prepare(
      "SELECT * FROM messages_out WHERE deliver_after IS NULL OR deliver_after <= datetime('now') ORDER BY timestamp"
    ).all();
    outDb.close();
    const inDb = openInboundRo();
    const delivered = new Set(inDb.prepare('SELECT message_out_id FROM delivered').all().map(r => r.message_out_id));
    inDb.close();
    return rows.filter(r => !delivered.has(r.id)).length;
  };

  const ackSync = () => {
    const outDb = openOutboundRo();
    const acks = outDb.prepare(
      "SELECT message_id, status FROM processing_ack WHERE status IN ('completed', 'failed')"
    ).all();
    outDb.close();
    const inDb = openInboundRw();
    const update = inDb.prepare("UPDATE messages_in SET status = 'completed' WHERE id = ? AND status != 'completed'");
    inDb.transaction(list => { for (const a of list) update.run(a.message_id); })(acks);
    inDb.close();
    return acks.length;
  };

  const time = fn => {
    fn(); // warm-up
    const out = [];
    for (let r = 0; r < runs; r++) {
      const start = process.hrtime.bigint();
      for (let i = 0; i < ops; i++) fn();
      out.push(Number(process.hrtime.bigint() - start) / 1000 / ops);
    }
    return out;
  };

  process.stdout.write(JSON.stringify({
    available: true,
    better_sqlite3: version,
    node: process.version,
    polls: {
      pending_poll: time(pendingPoll),
      due_outbound: time(dueOutbound),
      ack_sync: time(ackSync),
    },
  }) + '\n');
}

try {
  main();
} catch (e) {
  process.stdout.write(JSON.stringify({ available: false, reason: `peer failed: ${String(e && e.message).split('\n')[0]}` }) + '\n');
}
