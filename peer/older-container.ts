// older-container.ts — a stand-in for the OLDER container (the TypeScript agent runner that
// upstream runs on Bun with bun:sqlite), written from docs/protocol.md sections 2-4 and
// docs/format.md, so that the Rust host (runtime/examples/host.rs, or a host loop in a test) can be
// tested against the statements and the poll loop of the implementation still in the field.
//
// Run:  node_modules/.bin/bun older-container.ts [--workspace DIR] [--config PATH] [--slow-ms N]
//       (or ./older-container.sh, the wrapper a sandbox starts)
//
// - --workspace DIR: the folder holding inbound.db, outbound.db and .heartbeat (default
//   /workspace). It only knows the SINGLE layout: the Rust host's split layout reaches it
//   through the sandbox's mount plan, which assembles exactly that view.
// - --config PATH: container.json (default <workspace>/agent/container.json); unreadable or
//   malformed means the defaults, as upstream did.
// - --slow-ms N: how long the stand-in agent "thinks" per query (tests kill it meanwhile).
//
// What it does, as docs/protocol.md describes the older runner:
// - outbound.db: ONE long-lived read-write handle (journal_mode DELETE, busy_timeout 5000,
//   foreign_keys ON) that creates session_state / container_state IF NOT EXISTS and adds
//   session_state.updated_at when missing;
// - inbound.db: a long-lived read-only handle (busy 5000, mmap 0) for max-seq, destinations,
//   routing and the newest row of a channel; a FRESH read-only handle for every pending poll;
// - getPendingMessages: status pending and due, the on_wake clause (first poll only) when the
//   column exists, ORDER BY seq DESC LIMIT n BEFORE dropping acked rows, then reversed;
// - markProcessing / markCompleted: one transaction of INSERT OR REPLACE INTO processing_ack;
// - writeMessageOut: max seq over BOTH tables, next odd, INSERT with datetime('now'), no
//   transaction;
// - the poll loop of docs/protocol.md §4: system rows dropped, a batch without a trigger=1 row
//   sleeps 1000 ms, processing acks, /clear (continuation dropped, `Session cleared.` with
//   in_reply_to NULL routed to the batch's first row), one long query with follow-up polls
//   every 500 ms (a raw slash command ends the input stream and stays pending; pushed rows are
//   acked completed right after the push), `result` acks the initial batch completed BEFORE its
//   text becomes rows, the batch is acked completed again at stream end;
// - the stand-in agent answers each chat message `echo: <text>` through `<message to="NAME">`
//   blocks in its result text; a block takes its thread and in_reply_to from the newest
//   messages_in row of the destination's channel (so a burst's replies all name its newest
//   message), else NULL and the batch's first id;
// - processing claims of a crashed predecessor are deleted at start-up; the legacy
//   sdk_session_id continuation is adopted;
// - .heartbeat is touched on each provider event (query start, each push, the result), never
//   while idle;
// - SIGTERM / SIGINT end the process at once (no clean-up: a claim in flight stays for the
//   host, as with `docker stop`); SIGKILL obviously cleans nothing either.
//
// Left out (no test needs them): task scripts (docs/protocol.md §4 step 4: task rows reach the stand-in
// agent, which answers only chat), the corrective push (the stand-in always writes its blocks),
// MCP tools (send_message, questions, scheduling), provider errors and continuation validity.
//
// Every statement here is this file's own, written from the documents' description.

import { Database } from "bun:sqlite";
import fs from "node:fs";
import path from "node:path";

type Row = Record<string, any>;

// ---------------------------------------------------------------------------------------------
// Command line and configuration

function parseArgs(argv: string[]) {
  const out = { workspace: "/workspace", config: "", slowMs: 0 };
  for (let i = 0; i < argv.length; i++) {
    let a = argv[i];
    let v: string | undefined;
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
    switch (a) {
      case "--workspace":
        out.workspace = next();
        break;
      case "--config":
        out.config = next();
        break;
      case "--slow-ms":
        out.slowMs = Number(next());
        if (!Number.isFinite(out.slowMs) || out.slowMs < 0) usage("--slow-ms needs a number");
        break;
      default:
        usage(`unknown argument ${a}`);
    }
  }
  if (!out.config) out.config = path.join(out.workspace, "agent", "container.json");
  return out;
}

function usage(why: string): never {
  process.stderr.write(
    `older-container: ${why}\nusage: older-container.ts [--workspace DIR] [--config PATH] [--slow-ms N]\n`,
  );
  process.exit(2);
}

const args = parseArgs(process.argv.slice(2));
const pid = process.pid;
const log = (s: string) => process.stderr.write(`older-container[${pid}]: ${s}\n`);

/** container.json as the older runner reads it: unreadable or malformed → the defaults. */
function loadConfig(file: string) {
  let raw: any = {};
  try {
    raw = JSON.parse(fs.readFileSync(file, "utf8")) ?? {};
    if (typeof raw !== "object") raw = {};
  } catch {
    raw = {};
  }
  const n = Number(raw.maxMessagesPerPrompt);
  return {
    provider: String(raw.provider || "claude").toLowerCase(),
    assistantName: String(raw.assistantName || ""),
    // 10 by default, also for 0 (docs/protocol.md §5, runner defaults).
    maxMessagesPerPrompt: Number.isInteger(n) && n > 0 ? n : 10,
  };
}

const config = loadConfig(args.config);
const INBOUND = path.join(args.workspace, "inbound.db");
const OUTBOUND = path.join(args.workspace, "outbound.db");
const HEARTBEAT = path.join(args.workspace, ".heartbeat");
const CONTINUATION_KEY = `continuation:${config.provider}`;

process.on("SIGTERM", () => process.exit(0));
process.on("SIGINT", () => process.exit(0));

// ---------------------------------------------------------------------------------------------
// The two handles

/** The long-lived read-write handle on the container's own file. */
function openOutbound(): Database {
  const db = new Database(OUTBOUND);
  db.exec("PRAGMA journal_mode = DELETE");
  db.exec("PRAGMA busy_timeout = 5000");
  db.exec("PRAGMA foreign_keys = ON");
  db.exec(
    "CREATE TABLE IF NOT EXISTS session_state (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL)",
  );
  db.exec(
    "CREATE TABLE IF NOT EXISTS container_state (id INTEGER PRIMARY KEY CHECK (id = 1), current_tool TEXT, " +
      "tool_declared_timeout_ms INTEGER, tool_started_at TEXT, updated_at TEXT NOT NULL)",
  );
  const cols = db.query("PRAGMA table_info(session_state)").all() as Row[];
  if (!cols.some((c) => c.name === "updated_at")) {
    db.exec("ALTER TABLE session_state ADD COLUMN updated_at TEXT NOT NULL DEFAULT ''");
  }
  return db;
}

/** A read-only handle on the host's file (long-lived, or fresh per pending poll). */
function openInboundReadOnly(): Database {
  const db = new Database(INBOUND, { readonly: true });
  db.exec("PRAGMA busy_timeout = 5000");
  db.exec("PRAGMA mmap_size = 0");
  return db;
}

let outbound: Database;
let inbound: Database;
try {
  outbound = openOutbound();
  inbound = openInboundReadOnly();
} catch (e) {
  log(`fatal start-up error: ${(e as Error).message}`);
  process.exit(1);
}

/** Whether messages_in has the on_wake column: checked once per process. */
const hasOnWake = (inbound.query("PRAGMA table_info(messages_in)").all() as Row[]).some(
  (c) => c.name === "on_wake",
);

// ---------------------------------------------------------------------------------------------
// Statements (docs/protocol.md §3.1)

function getPendingMessages(first: boolean): Row[] {
  const db = openInboundReadOnly();
  let rows: Row[];
  try {
    const wake = hasOnWake ? " AND (on_wake = 0 OR ? = 1)" : "";
    const sql =
      "SELECT * FROM messages_in WHERE status = 'pending' AND (process_after IS NULL OR " +
      `datetime(process_after) <= datetime('now'))${wake} ORDER BY seq DESC LIMIT ?`;
    const params = hasOnWake
      ? [first ? 1 : 0, config.maxMessagesPerPrompt]
      : [config.maxMessagesPerPrompt];
    rows = db.query(sql).all(...params) as Row[];
  } finally {
    db.close();
  }
  // Every ack id, then the acked rows dropped: the LIMIT came first.
  const acked = new Set(
    (outbound.query("SELECT message_id FROM processing_ack").all() as Row[]).map((r) => r.message_id),
  );
  return rows.filter((r) => !acked.has(r.id)).reverse();
}

const setAck = outbound.query(
  "INSERT OR REPLACE INTO processing_ack (message_id, status, status_changed) VALUES (?, ?, datetime('now'))",
);
const ackAll = outbound.transaction((ids: string[], status: string) => {
  for (const id of ids) setAck.run(id, status);
});
const markProcessing = (ids: string[]) => ids.length && ackAll(ids, "processing");
const markCompleted = (ids: string[]) => ids.length && ackAll(ids, "completed");

function newId(prefix: string): string {
  return `${prefix}-${Date.now()}-${Math.random().toString(36).slice(2, 8)}`;
}

interface Out {
  id?: string;
  kind?: string;
  in_reply_to: string | null;
  platform_id: string | null;
  channel_type: string | null;
  thread_id: string | null;
  content: unknown;
}

/** Next odd seq above the max over both tables, then the INSERT: no transaction. */
function writeMessageOut(m: Out): { id: string; seq: number } {
  const maxIn = Number((inbound.query("SELECT MAX(seq) AS m FROM messages_in").get() as Row)?.m ?? 0);
  const maxOut = Number((outbound.query("SELECT MAX(seq) AS m FROM messages_out").get() as Row)?.m ?? 0);
  const max = Math.max(maxIn, maxOut, 0);
  const seq = max % 2 === 0 ? max + 1 : max + 2;
  const id = m.id ?? newId("msg");
  outbound
    .query(
      "INSERT INTO messages_out (id, seq, in_reply_to, timestamp, deliver_after, recurrence, kind, " +
        "platform_id, channel_type, thread_id, content) VALUES (?, ?, ?, datetime('now'), NULL, NULL, ?, ?, ?, ?, ?)",
    )
    .run(
      id,
      seq,
      m.in_reply_to,
      m.kind ?? "chat",
      m.platform_id,
      m.channel_type,
      m.thread_id,
      JSON.stringify(m.content),
    );
  return { id, seq };
}

function getState(key: string): string | null {
  const r = outbound.query("SELECT value FROM session_state WHERE key = ?").get(key) as Row | null;
  return r ? String(r.value) : null;
}
function setState(key: string, value: string) {
  outbound
    .query("INSERT OR REPLACE INTO session_state (key, value, updated_at) VALUES (?, ?, ?)")
    .run(key, value, new Date().toISOString());
}
function deleteState(key: string) {
  outbound.query("DELETE FROM session_state WHERE key = ?").run(key);
}

function destinations(): Row[] {
  try {
    return inbound.query("SELECT * FROM destinations").all() as Row[];
  } catch {
    return [];
  }
}

function sessionRouting(): Row {
  try {
    return (inbound.query("SELECT * FROM session_routing WHERE id = 1").get() as Row) ?? {};
  } catch {
    return {};
  }
}

function touchHeartbeat() {
  const now = new Date();
  try {
    fs.utimesSync(HEARTBEAT, now, now);
  } catch {
    try {
      fs.writeFileSync(HEARTBEAT, "");
    } catch {
      // The folder may be gone: never an error.
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Start-up

const staleClaims = outbound.query("DELETE FROM processing_ack WHERE status = 'processing'").run().changes;
{
  // Continuation migration: a legacy sdk_session_id is adopted when the provider has none.
  const legacy = getState("sdk_session_id");
  if (legacy !== null) {
    if (getState(CONTINUATION_KEY) === null) setState(CONTINUATION_KEY, legacy);
    deleteState("sdk_session_id");
  }
}
const baked = destinations(); // baked into the "system prompt"; lookups stay live
log(
  `started on ${args.workspace} (provider ${config.provider}, batches of up to ${config.maxMessagesPerPrompt}, ` +
    `${baked.length} destination(s)${staleClaims ? `; deleted ${staleClaims} stale claim(s)` : ""})`,
);

// ---------------------------------------------------------------------------------------------
// The stand-in agent and the poll loop

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function contentOf(r: Row): any {
  try {
    return JSON.parse(r.content);
  } catch {
    return {};
  }
}
const isChat = (r: Row) => r.kind === "chat" || r.kind === "chat-sdk";
const textOf = (r: Row) => {
  const t = contentOf(r).text;
  return typeof t === "string" ? t : "";
};
const triggers = (r: Row) => r.trigger === undefined || r.trigger === null || Number(r.trigger) === 1;

/** Commands the container keeps out of the agent's raw input. */
const FILTERED = new Set(["/help", "/login", "/logout", "/doctor", "/config", "/start"]);
function isRawSlash(r: Row): boolean {
  if (!isChat(r)) return false;
  const t = textOf(r).trim();
  if (!t.startsWith("/")) return false;
  return !FILTERED.has(t.split(/\s+/)[0].toLowerCase());
}

/** The destination name the agent writes for a message: the one of its channel. */
function destinationFor(r: Row): string | null {
  const all = destinations();
  const same = all.find(
    (d) => d.type === "channel" && d.channel_type === r.channel_type && d.platform_id === r.platform_id,
  );
  if (same) return String(same.name);
  if (all.length === 1) return String(all[0].name);
  const routing = sessionRouting();
  const dflt = all.find(
    (d) => d.channel_type === routing.channel_type && d.platform_id === routing.platform_id,
  );
  return dflt ? String(dflt.name) : null;
}

function escapeXml(s: string) {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");
}
function unescapeXml(s: string) {
  return s.replace(/&lt;/g, "<").replace(/&gt;/g, ">").replace(/&amp;/g, "&");
}

/** The agent's result text for the messages it was given. */
function agentResult(input: Row[]): string {
  const parts: string[] = [];
  for (const r of input) {
    if (!isChat(r) || !triggers(r)) continue;
    const to = destinationFor(r);
    if (to === null) continue;
    parts.push(`<message to="${escapeXml(to)}">${escapeXml(`echo: ${textOf(r)}`)}</message>`);
  }
  if (parts.length === 0) parts.push("<internal>nothing to say</internal>");
  return parts.join("\n");
}

/** Turns the result's `<message to="N">` blocks into rows (unknown names dropped). */
function sendBlocks(result: string, batchFirstId: string): number {
  let sent = 0;
  const re = /<message to="([^"]*)">([\s\S]*?)<\/message>/g;
  for (const m of result.matchAll(re)) {
    const name = unescapeXml(m[1]);
    const text = unescapeXml(m[2]);
    const dest = inbound.query("SELECT * FROM destinations WHERE name = ?").get(name) as Row | null;
    if (!dest) {
      log(`dropped a block to unknown destination ${JSON.stringify(name)}`);
      continue;
    }
    let channel_type: string | null;
    let platform_id: string | null;
    if (dest.type === "agent") {
      channel_type = "agent";
      platform_id = dest.agent_group_id;
    } else {
      channel_type = dest.channel_type;
      platform_id = dest.platform_id;
    }
    const newest = inbound
      .query(
        "SELECT id, thread_id FROM messages_in WHERE channel_type IS ? AND platform_id IS ? ORDER BY seq DESC LIMIT 1",
      )
      .get(channel_type, platform_id) as Row | null;
    const w = writeMessageOut({
      in_reply_to: newest ? newest.id : batchFirstId,
      thread_id: newest ? newest.thread_id : null,
      channel_type,
      platform_id,
      content: { text },
    });
    log(`wrote ${w.id} (seq ${w.seq}) to ${name}: ${text}`);
    sent++;
  }
  return sent;
}

/** One long query over `initial`, with follow-up polls pushing new rows into it. */
async function runQuery(initial: Row[], batchFirstId: string) {
  touchHeartbeat(); // provider event: init
  const turns = Number(getState(CONTINUATION_KEY) ?? "0") || 0;
  setState(CONTINUATION_KEY, String(turns)); // init stores the continuation
  const input = [...initial];
  let streamOpen = true;
  const followUp = () => {
    if (!streamOpen) return;
    const rows = getPendingMessages(false);
    if (rows.some(isRawSlash)) {
      // A raw slash command ends the input stream and stays pending.
      streamOpen = false;
      return;
    }
    const pushed = rows.filter((r) => r.kind !== "system");
    if (pushed.length === 0) return;
    const ids = pushed.map((r) => r.id);
    markProcessing(ids);
    input.push(...pushed);
    touchHeartbeat(); // provider event
    markCompleted(ids); // right after the push
    log(`pushed ${ids.join(", ")} into the running query`);
  };
  const end = Date.now() + args.slowMs;
  while (Date.now() < end) {
    await sleep(Math.min(500, Math.max(0, end - Date.now())));
    followUp();
  }
  const result = agentResult(input);
  touchHeartbeat(); // provider event: result
  markCompleted(initial.map((r) => r.id)); // BEFORE the text becomes rows
  const sent = sendBlocks(result, batchFirstId);
  setState(CONTINUATION_KEY, String(turns + sent)); // stream end: a changed continuation
  log(`query over ${input.map((r) => r.seq).join(", ")}: ${sent} block(s) sent`);
}

async function loop() {
  let first = true;
  for (;;) {
    const rows = getPendingMessages(first).filter((r) => r.kind !== "system");
    first = false;
    if (rows.length === 0 || !rows.some(triggers)) {
      await sleep(1000);
      continue;
    }
    const ids = rows.map((r) => r.id);
    markProcessing(ids);
    const head = rows[0];
    const clears = rows.filter((r) => isChat(r) && textOf(r).trim().toLowerCase().startsWith("/clear"));
    if (clears.length > 0) {
      deleteState(CONTINUATION_KEY);
      const w = writeMessageOut({
        in_reply_to: null,
        channel_type: head.channel_type,
        platform_id: head.platform_id,
        thread_id: head.thread_id,
        content: { text: "Session cleared." },
      });
      markCompleted(clears.map((r) => r.id));
      log(`/clear: continuation dropped, wrote ${w.id} (seq ${w.seq})`);
    }
    const rest = rows.filter((r) => !clears.includes(r));
    if (rest.length === 0) continue; // only commands: loop, no sleep
    await runQuery(rest, head.id);
    markCompleted(rest.map((r) => r.id)); // the batch again, at stream end
  }
}

loop().catch((e) => {
  log(`poll loop failed: ${(e as Error).stack ?? e}`);
  process.exit(1);
});
