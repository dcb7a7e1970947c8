#!/usr/bin/env node
// older-host.mjs — a stand-in for the OLDER host (upstream's Node 20 host on better-sqlite3 12),
// written from docs/protocol.md (1.1, 1.3, 2.3, 3.2, 5) and docs/format.md (3, 7, 9, 10), so
// that the Rust container (runtime/examples/echo_container.rs) and the older-container peer can
// be tested against the statements of the host implementation still in the field.
//
// Run with Node 20 (plain JavaScript, nothing to compile):
//
//   node older-host.mjs --container-cmd PATH [--data-dir DIR] [--group G] [--session S]
//        [--container-arg ARG]... [--message TEXT]... [--admin] [--converse]
//        [--kill-after N]... [--timeout-secs N] [--id-prefix P] [--tick-ms N] [--sweep-ms N]
//        [--max-messages N] [--poll-ms N]
//
// - The session lives in ONE folder, DIR/v2-sessions/G/S/ (the older layout: inbound.db,
//   outbound.db, .heartbeat, inbox/, outbox/ together). A new folder is made the way
//   initSessionFolder does: the folder and outbox/, each DB created, journal_mode DELETE set,
//   CREATE TABLE IF NOT EXISTS of the current shape (docs/format.md §3), closed. An existing folder
//   is used as it is (never migrated).
// - Messages come from --message (repeatable) or stdin (one per line). Each passes the command
//   gate of docs/format.md §9 first: filtered commands are dropped; an admin command from a
//   non-admin (no --admin) is denied the way upstream did it: the denial is INSERTed into
//   outbound.db through the host's READ-ONLY handle with max(seq)+2 over messages_out alone,
//   which fails ("attempt to write a readonly database"); the failure is logged on stderr and
//   nothing reaches messages_in or the chat. Other messages are written as channel-inbound chat
//   rows (id `<prefix>-<n>:<group>`, content {text, sender, senderId}, address cli/local) by
//   insertMessage: nextEvenSeq over messages_in only, no transaction.
//   Default: all messages are written first (a burst); --converse writes the next one only
//   once the previous is answered.
// - Before each wake: destinations and session_routing are written into inbound.db, the
//   group's container.json is rewritten (DIR/groups/G/container.json), .heartbeat is removed,
//   then `<container-cmd> --workspace <session folder> --config <container.json> [args]` is
//   spawned (no sandbox: --config stands for upstream's read-only nested mount of the file).
// - Every --tick-ms (default 1000, upstream's delivery poll): delivery (getDueOutboundMessages
//   with its raw-text deliver_after comparison and ORDER BY timestamp, minus getDeliveredIds,
//   each printed then markDelivered INSERT OR IGNORE). Every --sweep-ms (default 60000): the
//   sweep: syncProcessingAcks → wake if countDueMessages and not running → SLA check (docs/format.md
//   section 7; SIGKILL when stuck) or claim reset → recurrence fan-out (two statements). A
//   reset pass (after a kill, or when the container is not running) bumps each claimed pending
//   message with retryWithBackoff (`datetime('now','+N seconds')`, N = 5 x 2^tries) or
//   markMessageFailed after 5 tries, then deleteOrphanProcessingClaims (a READ-WRITE open of
//   outbound.db).
// - --kill-after N: SIGKILL the container once N replies were delivered while it holds a claim
//   (repeatable), then the reset pass.
// - Each delivered reply is one JSON line on stdout, like the Rust example host:
//   {"seq":3,"id":"msg-…","in_reply_to":"m-1:g","text":"echo: hi","source":"container"}
//   A reply naming a sent message not yet answered answers it; any other reply answers the
//   oldest message still unanswered. Everything else goes to stderr.
// - When every written message is answered: the container is stopped (SIGTERM, 1 s, SIGKILL:
//   `docker stop -t 1`), one last sweep (no wake) and delivery run.
//
// Left out (no test needs them, and no adapter exists here): attachments (docs/protocol.md §1.3),
// agent-to-agent routing and the channel ACL of delivery (2.3 steps 3-4), system action
// handlers (2.4: logged and marked delivered), the central database, TIMEZONE (cron is UTC).
//
// Exit status: 0 all answered once, 1 error, 2 --timeout-secs passed first, 3 a message was
// answered more than once.
//
// Every statement here is this file's own, written from the documents' description.

import Database from "better-sqlite3";
import fs from "node:fs";
import path from "node:path";
import { spawn } from "node:child_process";
import readline from "node:readline";

// ---------------------------------------------------------------------------------------------
// Command line

function parseArgs(argv) {
  const o = {
    dataDir: "./data",
    group: "example-group",
    session: "example-session",
    containerCmd: null,
    containerArgs: [],
    messages: [],
    admin: false,
    converse: false,
    killAfter: [],
    timeoutSecs: 60,
    idPrefix: null,
    tickMs: 1000,
    sweepMs: 60000,
    maxMessages: null,
    pollMs: null,
  };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let v;
    const eq = a.indexOf("=");
    if (a.startsWith("--") && eq > 0) {
      v = a.slice(eq + 1);
      a = a.slice(0, eq);
    }
    const next = () => {
      if (v !== undefined) return v;
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      return argv[++i];
    };
    const num = () => {
      const n = Number(next());
      if (!Number.isFinite(n) || n < 0) usage(`${a} needs a number`);
      return n;
    };
    switch (a) {
      case "--data-dir": o.dataDir = next(); break;
      case "--group": o.group = next(); break;
      case "--session": o.session = next(); break;
      case "--container-cmd": o.containerCmd = next(); break;
      case "--container-arg": o.containerArgs.push(next()); break;
      case "--message": o.messages.push(next()); break;
      case "--admin": o.admin = true; break;
      case "--converse": o.converse = true; break;
      case "--kill-after": o.killAfter.push(num()); break;
      case "--timeout-secs": o.timeoutSecs = num(); break;
      case "--id-prefix": o.idPrefix = next(); break;
      case "--tick-ms": o.tickMs = Math.max(1, num()); break;
      case "--sweep-ms": o.sweepMs = Math.max(1, num()); break;
      case "--max-messages": o.maxMessages = num(); break;
      case "--poll-ms": o.pollMs = Math.max(1, num()); break;
      case "--help":
        process.stdout.write(HELP);
        process.exit(0);
        break;
      default: usage(`unknown argument ${a}`);
    }
  }
  if (!o.containerCmd) usage("--container-cmd PATH is required");
  return o;
}

const HELP =
  "usage: node older-host.mjs --container-cmd PATH [--data-dir DIR] [--group G] [--session S]\n" +
  "  [--container-arg ARG]... [--message TEXT]... [--admin] [--converse] [--kill-after N]...\n" +
  "  [--timeout-secs N] [--id-prefix P] [--tick-ms N] [--sweep-ms N] [--max-messages N] [--poll-ms N]\n";

function usage(why) {
  process.stderr.write(`older-host: ${why}\n${HELP}`);
  process.exit(1);
}

const log = (s) => process.stderr.write(`older-host: ${s}\n`);
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const newId = (prefix) => `${prefix}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;

// ---------------------------------------------------------------------------------------------
// Schema (docs/format.md §3, the current upstream shape), as initSessionFolder runs it

const INBOUND_SCHEMA = `
CREATE TABLE IF NOT EXISTS messages_in (
  id TEXT PRIMARY KEY,
  seq INTEGER UNIQUE,
  kind TEXT NOT NULL,
  timestamp TEXT NOT NULL,
  status TEXT DEFAULT 'pending',
  process_after TEXT,
  recurrence TEXT,
  series_id TEXT,
  tries INTEGER DEFAULT 0,
  trigger INTEGER NOT NULL DEFAULT 1,
  platform_id TEXT,
  channel_type TEXT,
  thread_id TEXT,
  content TEXT NOT NULL,
  source_session_id TEXT,
  on_wake INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS idx_messages_in_series ON messages_in(series_id);
CREATE TABLE IF NOT EXISTS delivered (
  message_out_id TEXT PRIMARY KEY,
  platform_message_id TEXT,
  status TEXT NOT NULL DEFAULT 'delivered',
  delivered_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS destinations (
  name TEXT PRIMARY KEY,
  display_name TEXT,
  type TEXT NOT NULL,
  channel_type TEXT,
  platform_id TEXT,
  agent_group_id TEXT
);
CREATE TABLE IF NOT EXISTS session_routing (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  channel_type TEXT,
  platform_id TEXT,
  thread_id TEXT
);
`;

const OUTBOUND_SCHEMA = `
CREATE TABLE IF NOT EXISTS messages_out (
  id TEXT PRIMARY KEY,
  seq INTEGER UNIQUE,
  in_reply_to TEXT,
  timestamp TEXT NOT NULL,
  deliver_after TEXT,
  recurrence TEXT,
  kind TEXT NOT NULL,
  platform_id TEXT,
  channel_type TEXT,
  thread_id TEXT,
  content TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS processing_ack (
  message_id TEXT PRIMARY KEY,
  status TEXT NOT NULL,
  status_changed TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS session_state (
  key TEXT PRIMARY KEY,
  value TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS container_state (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  current_tool TEXT,
  tool_declared_timeout_ms INTEGER,
  tool_started_at TEXT,
  updated_at TEXT NOT NULL
);
`;

// ---------------------------------------------------------------------------------------------
// The session's files

const opts = parseArgs(process.argv.slice(2));
const dataDir = path.resolve(opts.dataDir);
const sessionDir = path.join(dataDir, "v2-sessions", opts.group, opts.session);
const INBOUND = path.join(sessionDir, "inbound.db");
const OUTBOUND = path.join(sessionDir, "outbound.db");
const HEARTBEAT = path.join(sessionDir, ".heartbeat");
const groupDir = path.join(dataDir, "groups", opts.group);
const CONTAINER_JSON = path.join(groupDir, "container.json");
// The chat this host talks to: the CLI adapter's terminal (docs/protocol.md §1.2).
const ADDRESS = { channel_type: "cli", platform_id: "local", thread_id: null };

/** initSessionFolder: only for a session that does not exist yet. */
function initSessionFolder() {
  fs.mkdirSync(path.join(sessionDir, "outbox"), { recursive: true });
  for (const [file, schema] of [[INBOUND, INBOUND_SCHEMA], [OUTBOUND, OUTBOUND_SCHEMA]]) {
    const db = new Database(file);
    db.pragma("journal_mode = DELETE");
    db.exec(schema);
    db.close();
  }
}

/** The host's per-operation read-write handle on inbound.db (busy, DELETE, column patch). */
function openInbound() {
  const db = new Database(INBOUND, { fileMustExist: true });
  db.pragma("busy_timeout = 5000");
  db.pragma("journal_mode = DELETE");
  const have = new Set(db.prepare("PRAGMA table_info(messages_in)").all().map((c) => c.name));
  if (!have.has("series_id")) {
    db.exec("ALTER TABLE messages_in ADD COLUMN series_id TEXT");
    db.exec("UPDATE messages_in SET series_id = id WHERE series_id IS NULL");
    db.exec("CREATE INDEX IF NOT EXISTS idx_messages_in_series ON messages_in(series_id)");
  }
  if (!have.has("trigger")) db.exec("ALTER TABLE messages_in ADD COLUMN trigger INTEGER NOT NULL DEFAULT 1");
  if (!have.has("source_session_id")) db.exec("ALTER TABLE messages_in ADD COLUMN source_session_id TEXT");
  if (!have.has("on_wake")) db.exec("ALTER TABLE messages_in ADD COLUMN on_wake INTEGER NOT NULL DEFAULT 0");
  return db;
}

function withInbound(fn) {
  const db = openInbound();
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

/** The host's read-only handle on the container's file; null when there is none yet. */
function openOutboundReadOnly() {
  if (!fs.existsSync(OUTBOUND)) return null;
  const db = new Database(OUTBOUND, { readonly: true, fileMustExist: true });
  db.pragma("busy_timeout = 5000");
  return db;
}

function withOutbound(fn, dflt) {
  const db = openOutboundReadOnly();
  if (!db) return dflt;
  try {
    return fn(db);
  } finally {
    db.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Statements (docs/protocol.md §3.2)

function nextEvenSeq(db) {
  const m = Number(db.prepare("SELECT MAX(seq) AS m FROM messages_in").get().m ?? 0);
  return m < 2 ? 2 : m + 2 - (m % 2);
}

function insertMessage(db, m) {
  const seq = nextEvenSeq(db);
  db.prepare(
    "INSERT INTO messages_in (id, seq, kind, timestamp, status, process_after, recurrence, series_id, " +
      "tries, trigger, platform_id, channel_type, thread_id, content, source_session_id, on_wake) " +
      "VALUES (?, ?, ?, ?, 'pending', ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?)",
  ).run(
    m.id,
    seq,
    m.kind,
    m.timestamp ?? new Date().toISOString(),
    m.process_after ?? null,
    m.recurrence ?? null,
    m.series_id ?? m.id,
    m.trigger ?? 1,
    m.platform_id ?? null,
    m.channel_type ?? null,
    m.thread_id ?? null,
    m.content,
    m.source_session_id ?? null,
    m.on_wake ?? 0,
  );
  return seq;
}

function countDueMessages() {
  return withInbound(
    (db) =>
      db
        .prepare(
          "SELECT COUNT(*) AS n FROM messages_in WHERE status = 'pending' AND trigger = 1 AND " +
            "(process_after IS NULL OR datetime(process_after) <= datetime('now'))",
        )
        .get().n,
  );
}

function syncProcessingAcks() {
  const finished = withOutbound(
    (db) => db.prepare("SELECT message_id, status FROM processing_ack WHERE status IN ('completed', 'failed')").all(),
    [],
  );
  if (finished.length === 0) return 0;
  return withInbound((db) => {
    const upd = db.prepare("UPDATE messages_in SET status = 'completed' WHERE id = ? AND status != 'completed'");
    let n = 0;
    db.transaction(() => {
      for (const a of finished) n += upd.run(a.message_id).changes;
    })();
    return n;
  });
}

function retryWithBackoff(db, id, seconds) {
  db.prepare(
    "UPDATE messages_in SET tries = tries + 1, process_after = datetime('now', ?) WHERE id = ?",
  ).run(`+${seconds} seconds`, id);
}

function markMessageFailed(db, id) {
  db.prepare("UPDATE messages_in SET status = 'failed' WHERE id = ?").run(id);
}

function getDueOutboundMessages(db) {
  return db
    .prepare("SELECT * FROM messages_out WHERE (deliver_after IS NULL OR deliver_after <= datetime('now')) ORDER BY timestamp")
    .all();
}

function getDeliveredIds(db) {
  return new Set(db.prepare("SELECT message_out_id FROM delivered").all().map((r) => r.message_out_id));
}

function patchDelivered(db) {
  const have = new Set(db.prepare("PRAGMA table_info(delivered)").all().map((c) => c.name));
  if (!have.has("platform_message_id")) db.exec("ALTER TABLE delivered ADD COLUMN platform_message_id TEXT");
  if (!have.has("status")) db.exec("ALTER TABLE delivered ADD COLUMN status TEXT NOT NULL DEFAULT 'delivered'");
}

function markDelivered(db, id, platformId) {
  db.prepare(
    "INSERT OR IGNORE INTO delivered (message_out_id, platform_message_id, status, delivered_at) VALUES (?, ?, 'delivered', datetime('now'))",
  ).run(id, platformId);
}

function markDeliveryFailed(db, id) {
  db.prepare(
    "INSERT OR IGNORE INTO delivered (message_out_id, platform_message_id, status, delivered_at) VALUES (?, NULL, 'failed', datetime('now'))",
  ).run(id);
}

/** After a reset pass: the dead container's claims go, through a READ-WRITE open. */
function deleteOrphanProcessingClaims() {
  if (!fs.existsSync(OUTBOUND)) return 0;
  const db = new Database(OUTBOUND, { fileMustExist: true });
  try {
    db.pragma("busy_timeout = 5000");
    return db.prepare("DELETE FROM processing_ack WHERE status = 'processing'").run().changes;
  } finally {
    db.close();
  }
}

/** The denial as upstream wrote it (docs/format.md §10): through the read-only handle. */
function writeOutboundDirect(msg) {
  const db = openOutboundReadOnly();
  if (!db) throw new Error("no outbound.db");
  try {
    const seq = Number(db.prepare("SELECT COALESCE(MAX(seq), 0) + 2 AS s FROM messages_out").get().s);
    db.prepare(
      "INSERT INTO messages_out (id, seq, in_reply_to, timestamp, kind, platform_id, channel_type, thread_id, content) " +
        "VALUES (?, ?, ?, datetime('now'), 'chat', ?, ?, ?, ?)",
    ).run(msg.id, seq, msg.in_reply_to, msg.platform_id, msg.channel_type, msg.thread_id, msg.content);
    return seq;
  } finally {
    db.close();
  }
}

// ---------------------------------------------------------------------------------------------
// Recurrence: a small five-field cron (minute hour day-of-month month day-of-week), in UTC

function cronField(spec, lo, hi) {
  const set = new Set();
  for (const part of spec.split(",")) {
    const [range, stepText] = part.split("/");
    const step = stepText ? Number(stepText) : 1;
    let a = lo;
    let b = hi;
    if (range !== "*") {
      const [x, y] = range.split("-");
      a = Number(x);
      b = y === undefined ? (stepText ? hi : a) : Number(y);
    }
    if (![a, b, step].every(Number.isInteger) || step < 1) throw new Error(`bad cron field ${spec}`);
    for (let v = a; v <= b; v += step) set.add(v === 7 && hi === 7 ? 0 : v);
  }
  return set;
}

/** The first fire of `expr` strictly after `from`, as ISO. */
function nextCronFire(expr, from = new Date()) {
  const f = expr.trim().split(/\s+/);
  if (f.length !== 5) throw new Error(`bad cron expression ${expr}`);
  const [mi, ho, dom, mo, dow] = [
    cronField(f[0], 0, 59), cronField(f[1], 0, 23), cronField(f[2], 1, 31), cronField(f[3], 1, 12), cronField(f[4], 0, 7),
  ];
  const domAny = f[2] === "*";
  const dowAny = f[4] === "*";
  const t = new Date(Math.floor(from.getTime() / 60000) * 60000 + 60000);
  for (let i = 0; i < 366 * 24 * 60; i++, t.setTime(t.getTime() + 60000)) {
    const dayOk = domAny && dowAny
      ? true
      : domAny
        ? dow.has(t.getUTCDay())
        : dowAny
          ? dom.has(t.getUTCDate())
          : dom.has(t.getUTCDate()) || dow.has(t.getUTCDay());
    if (mi.has(t.getUTCMinutes()) && ho.has(t.getUTCHours()) && mo.has(t.getUTCMonth() + 1) && dayOk) {
      return t.toISOString();
    }
  }
  throw new Error(`cron expression ${expr} never fires within a year`);
}

/** Completed rows with a recurrence: clone, then clear the old recurrence (no transaction). */
function fanOutRecurrences() {
  withInbound((db) => {
    const done = db.prepare("SELECT * FROM messages_in WHERE status = 'completed' AND recurrence IS NOT NULL").all();
    for (const r of done) {
      let next;
      try {
        next = nextCronFire(r.recurrence);
      } catch (e) {
        log(`recurrence of ${r.id}: ${e.message}`);
        continue;
      }
      const id = newId(r.kind === "task" ? "task" : "msg");
      insertMessage(db, {
        id,
        kind: r.kind,
        content: r.content,
        process_after: next,
        recurrence: r.recurrence,
        series_id: r.series_id ?? r.id,
        platform_id: r.platform_id,
        channel_type: r.channel_type,
        thread_id: r.thread_id,
        // Tasks and their clones carry SQLite's datetime('now'), not ISO (docs/protocol.md §1.1).
        timestamp: db.prepare("SELECT datetime('now') AS t").get().t,
      });
      db.prepare("UPDATE messages_in SET recurrence = NULL WHERE id = ?").run(r.id);
      log(`recurrence: ${r.id} continues as ${id} at ${next}`);
    }
  });
}

// ---------------------------------------------------------------------------------------------
// Liveness (docs/format.md §7)

/** Both text formats (ISO and SQLite's datetime('now')) as UTC milliseconds. */
function parseTime(text) {
  if (text === null || text === undefined) return null;
  const s = String(text).trim();
  const iso = /[zZ]|[+-]\d\d:?\d\d$/.test(s) ? s : `${s.replace(" ", "T")}Z`;
  const ms = Date.parse(iso);
  return Number.isNaN(ms) ? null : ms;
}

function heartbeatMs() {
  try {
    return fs.statSync(HEARTBEAT).mtimeMs;
  } catch {
    return null;
  }
}

function readClaims() {
  return withOutbound(
    (db) => db.prepare("SELECT message_id, status_changed FROM processing_ack WHERE status = 'processing'").all(),
    [],
  );
}

function readContainerState() {
  return withOutbound((db) => {
    try {
      return db.prepare("SELECT * FROM container_state WHERE id = 1").get() ?? null;
    } catch {
      return null;
    }
  }, null);
}

function stuckReason(now) {
  const hb = heartbeatMs();
  const state = readContainerState();
  const bash = state && state.current_tool === "Bash" && Number(state.tool_declared_timeout_ms) > 0
    ? Number(state.tool_declared_timeout_ms)
    : 0;
  const ceiling = Math.max(30 * 60 * 1000, bash);
  if (hb !== null && now - hb > ceiling) return `heartbeat ${Math.round((now - hb) / 1000)} s old`;
  const tolerance = Math.max(60 * 1000, bash);
  for (const c of readClaims()) {
    const at = parseTime(c.status_changed);
    if (at !== null && now - at > tolerance && (hb === null || hb <= at)) {
      return `claim of ${c.message_id} ${Math.round((now - at) / 1000)} s old with no heartbeat since`;
    }
  }
  return null;
}

/** After a kill, or with no container running: retry or fail each claimed pending message. */
function resetPass() {
  const claims = readClaims();
  if (claims.length === 0) return;
  withInbound((db) => {
    for (const c of claims) {
      const row = db.prepare("SELECT status, tries, process_after FROM messages_in WHERE id = ?").get(c.message_id);
      if (!row || row.status !== "pending") continue;
      const due = parseTime(row.process_after);
      if (due !== null && due > Date.now()) continue; // already scheduled for a later retry
      const tries = Number(row.tries ?? 0);
      if (tries >= 5) {
        markMessageFailed(db, c.message_id);
        log(`sweep: ${c.message_id} failed after ${tries} tries`);
      } else {
        const seconds = 5 * 2 ** tries;
        retryWithBackoff(db, c.message_id, seconds);
        log(`sweep: retry of ${c.message_id} in ${seconds} s (try ${tries + 1})`);
      }
    }
  });
  const n = deleteOrphanProcessingClaims();
  log(`sweep: deleted ${n} orphan processing claim(s)`);
}

// ---------------------------------------------------------------------------------------------
// The container

let child = null; // { proc, exited: Promise, done: boolean }
let starts = 0;
let kills = 0;

function running() {
  return child !== null && !child.done;
}

function writeWiring() {
  withInbound((db) => {
    db.transaction(() => {
      db.prepare("DELETE FROM destinations").run();
      db.prepare(
        "INSERT INTO destinations (name, display_name, type, channel_type, platform_id, agent_group_id) VALUES (?, ?, 'channel', ?, ?, NULL)",
      ).run("cli", "the terminal", ADDRESS.channel_type, ADDRESS.platform_id);
    })();
    db.prepare(
      "INSERT OR REPLACE INTO session_routing (id, channel_type, platform_id, thread_id) VALUES (1, ?, ?, ?)",
    ).run(ADDRESS.channel_type, ADDRESS.platform_id, ADDRESS.thread_id);
  });
}

function writeContainerJson() {
  fs.mkdirSync(groupDir, { recursive: true });
  const cfg = {
    mcpServers: {},
    packages: { apt: [], npm: [] },
    additionalMounts: [],
    skills: "all",
    groupName: opts.group,
    assistantName: opts.group,
    agentGroupId: opts.group,
  };
  if (opts.maxMessages !== null) cfg.maxMessagesPerPrompt = opts.maxMessages;
  // Not upstream's: the Rust container's poll intervals, so tests run quickly.
  if (opts.pollMs !== null) {
    cfg.pollIntervalIdleMs = opts.pollMs;
    cfg.pollIntervalActiveMs = opts.pollMs;
  }
  fs.writeFileSync(CONTAINER_JSON, `${JSON.stringify(cfg, null, 2)}\n`);
}

function wake(why) {
  if (running()) return;
  writeWiring();
  writeContainerJson();
  fs.rmSync(HEARTBEAT, { force: true });
  const argv = ["--workspace", sessionDir, "--config", CONTAINER_JSON, ...opts.containerArgs];
  const proc = spawn(opts.containerCmd, argv, { stdio: ["ignore", "ignore", "inherit"] });
  const c = { proc, done: false };
  c.exited = new Promise((resolve) => {
    proc.on("exit", (code, signal) => {
      c.done = true;
      resolve(signal ? `signal ${signal}` : `exit status ${code}`);
    });
    proc.on("error", (e) => {
      c.done = true;
      log(`cannot start ${opts.containerCmd}: ${e.message}`);
      resolve(`spawn error ${e.message}`);
    });
  });
  child = c;
  starts++;
  log(`started container pid ${proc.pid} (${why})`);
}

async function killContainer(why) {
  if (!running()) return;
  const pid = child.proc.pid;
  child.proc.kill("SIGKILL");
  const how = await child.exited;
  kills++;
  log(`killed container pid ${pid} (${why}): ${how}`);
}

/** `docker stop -t 1`: SIGTERM, a second of grace, SIGKILL. */
async function stopContainer() {
  if (!running()) return null;
  child.proc.kill("SIGTERM");
  const how = await Promise.race([child.exited, sleep(1000).then(() => null)]);
  if (how !== null) return how;
  child.proc.kill("SIGKILL");
  return `${await child.exited} (killed after 1 s)`;
}

// ---------------------------------------------------------------------------------------------
// Sweep and delivery

async function sweep({ wakeAllowed }) {
  const synced = syncProcessingAcks();
  if (synced) log(`sweep: ${synced} message(s) completed from the container's acks`);
  if (wakeAllowed && !running() && countDueMessages() > 0) wake("messages are due");
  if (running()) {
    const why = stuckReason(Date.now());
    if (why) {
      await killContainer(`stuck: ${why}`);
      resetPass();
    }
  } else {
    resetPass();
  }
  fanOutRecurrences();
}

const sent = []; // ids written, in order
const answers = new Map(); // id -> count
let extra = 0;
let delivered = 0;
const deliveryThrows = new Map(); // id -> failed attempts

function deliver() {
  const due = withOutbound((db) => getDueOutboundMessages(db), []);
  if (due.length === 0) return;
  withInbound((db) => {
    const done = getDeliveredIds(db);
    const todo = due.filter((r) => !done.has(r.id));
    if (todo.length === 0) return;
    patchDelivered(db);
    for (const row of todo) {
      let platformId = null;
      try {
        platformId = deliverMessage(row);
      } catch (e) {
        // A throw retries next tick; the third one records the row failed.
        const n = (deliveryThrows.get(row.id) ?? 0) + 1;
        deliveryThrows.set(row.id, n);
        log(`delivery of ${row.id} failed (attempt ${n}): ${e.message}`);
        if (n >= 3) markDeliveryFailed(db, row.id);
        continue;
      }
      markDelivered(db, row.id, platformId);
    }
  });
}

/** The stand-in channel adapter: one JSON line per reply on stdout. */
function deliverMessage(row) {
  if (row.kind === "system") {
    let action = "?";
    try {
      action = JSON.parse(row.content).action;
    } catch {}
    log(`system action ${action} from ${row.id}: no handler here`);
    return null;
  }
  if (!row.channel_type || !row.platform_id) {
    log(`${row.id} has no channel: not delivered anywhere`);
    return null;
  }
  let text = "";
  try {
    const c = JSON.parse(row.content);
    if (typeof c.text === "string") text = c.text;
  } catch {}
  const line = { seq: row.seq, id: row.id, in_reply_to: row.in_reply_to, text, source: "container" };
  process.stdout.write(`${JSON.stringify(line)}\n`);
  delivered++;
  const named = row.in_reply_to && sent.includes(row.in_reply_to) && !answers.has(row.in_reply_to)
    ? row.in_reply_to
    : null;
  const to = named ?? sent.find((id) => !answers.has(id));
  if (to) answers.set(to, (answers.get(to) ?? 0) + 1);
  else extra++;
  return null;
}

// ---------------------------------------------------------------------------------------------
// The command gate (docs/format.md §9) and writing messages

const FILTERED = new Set(["/help", "/login", "/logout", "/doctor", "/config", "/remote-control"]);
const ADMIN = new Set(["/clear", "/compact", "/context", "/cost", "/files"]);

/** Returns the id written, or null when the gate dropped or denied the message. */
function acceptChat(n, text) {
  const id = `${prefix}-${n}:${opts.group}`;
  if (text.startsWith("/")) {
    const cmd = text.split(/\s+/)[0].toLowerCase();
    if (FILTERED.has(cmd)) {
      log(`${cmd} is filtered: dropped`);
      return null;
    }
    if (ADMIN.has(cmd) && !opts.admin) {
      try {
        const seq = writeOutboundDirect({
          id: newId("msg"),
          in_reply_to: id,
          ...ADDRESS,
          content: JSON.stringify({ text: `Permission denied: ${cmd} requires admin access.` }),
        });
        log(`${cmd} denied (not an admin): denial written as seq ${seq}`);
      } catch (e) {
        log(`${cmd} denied (not an admin): the denial could not be written: ${e.message}`);
      }
      return null;
    }
  }
  // writeSessionMessage: (no attachments) insert, close.
  const seq = withInbound((db) =>
    insertMessage(db, {
      id,
      kind: "chat",
      content: JSON.stringify({ text, sender: "cli", senderId: "cli:local" }),
      ...ADDRESS,
    }),
  );
  log(`wrote ${id} (seq ${seq}): ${text}`);
  sent.push(id);
  return id;
}

async function readStdin() {
  const out = [];
  const rl = readline.createInterface({ input: process.stdin });
  for await (const line of rl) if (line.trim()) out.push(line);
  return out;
}

// ---------------------------------------------------------------------------------------------
// Main

const prefix = opts.idPrefix ?? `m${Date.now()}`;

async function main() {
  if (!fs.existsSync(sessionDir)) {
    initSessionFolder();
    log(`created session folder ${sessionDir}`);
  } else {
    log(`session folder ${sessionDir}`);
  }
  const texts = opts.messages.length ? opts.messages : await readStdin();
  let nextText = 0;
  const writeNext = () => {
    while (nextText < texts.length) {
      const n = nextText + 1;
      const id = acceptChat(n, texts[nextText++]);
      if (id !== null && opts.converse) {
        wake("a message was written"); // the router wakes the container right away
        return;
      }
    }
    // A burst: every message is in before the container starts.
    if (sent.length) wake("messages were written");
  };
  writeNext();

  const kill = [...opts.killAfter].sort((a, b) => b - a); // next threshold last
  const deadline = Date.now() + opts.timeoutSecs * 1000;
  let lastSweep = 0;
  const allAnswered = () => nextText >= texts.length && sent.every((id) => answers.has(id));
  while (!allAnswered()) {
    if (Date.now() >= deadline) {
      log(`timed out after ${opts.timeoutSecs} s; unanswered: ${JSON.stringify(sent.filter((id) => !answers.has(id)))}`);
      await stopContainer();
      return 2;
    }
    if (Date.now() - lastSweep >= opts.sweepMs) {
      lastSweep = Date.now();
      await sweep({ wakeAllowed: true });
    }
    deliver();
    if (opts.converse && sent.every((id) => answers.has(id))) writeNext();
    if (kill.length && delivered >= kill[kill.length - 1] && running()) {
      const pending = new Set(
        withInbound((db) => db.prepare("SELECT id FROM messages_in WHERE status = 'pending'").all().map((r) => r.id)),
      );
      const claimed = readClaims().filter((c) => pending.has(c.message_id));
      if (claimed.length) {
        const n = kill.pop();
        await killContainer(`--kill-after ${n}: holding ${claimed.map((c) => c.message_id).join(", ")}`);
        log(`kill -9 after ${delivered} delivered replies (--kill-after ${n})`);
        resetPass();
      }
    }
    await sleep(opts.tickMs);
  }
  const how = await stopContainer();
  if (how) log(`container stopped: ${how}`);
  await sweep({ wakeAllowed: false });
  deliver();
  const dups = [...answers].filter(([, n]) => n > 1);
  if (dups.length || extra) {
    log(`answered more than once: ${JSON.stringify(dups)} (${extra} extra replies)`);
    return 3;
  }
  log(`all ${sent.length} message(s) answered; ${starts} container start(s), ${kills} kill(s)`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  async (e) => {
    log(`error: ${e.stack ?? e}`);
    if (running()) child.proc.kill("SIGKILL");
    process.exit(1);
  },
);
