-- Host-owned tables that the older implementation does not know (extra tables are fine for it).

-- Replies the host itself originates (the command gate's denial). Upstream wrote them into
-- outbound.db through a read-only handle with `max(seq) + 2`; here they live in the host's own
-- file with a host (even) seq and are delivered like any messages_out row.
CREATE TABLE IF NOT EXISTS host_replies (
  id TEXT PRIMARY KEY,
  seq INTEGER NOT NULL UNIQUE,
  in_reply_to TEXT,
  timestamp TEXT NOT NULL,
  kind TEXT NOT NULL,
  platform_id TEXT,
  channel_type TEXT,
  thread_id TEXT,
  content TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS host_replies_seq_even_insert
BEFORE INSERT ON host_replies
WHEN NEW.seq IS NULL OR NEW.seq <= 0 OR NEW.seq % 2 <> 0
BEGIN
  SELECT RAISE(ABORT, 'seq parity: host_replies.seq must be a positive even number (host seq)');
END;
CREATE TRIGGER IF NOT EXISTS host_replies_seq_even_update
BEFORE UPDATE OF seq ON host_replies
WHEN NEW.seq IS NULL OR NEW.seq <= 0 OR NEW.seq % 2 <> 0
BEGIN
  SELECT RAISE(ABORT, 'seq parity: host_replies.seq must be a positive even number (host seq)');
END;

-- Delivery attempts, kept in the file so that they survive a host restart.
CREATE TABLE IF NOT EXISTS delivery_attempts (
  message_out_id TEXT PRIMARY KEY,
  attempts INTEGER NOT NULL DEFAULT 0,
  last_error TEXT,
  last_attempt_at TEXT NOT NULL
);

-- Host cursors: named high-water marks ("every outbound row up to this seq is settled") so
-- that delivery polls read only what is new. Pure optimisation: losing a row costs one rescan.
CREATE TABLE IF NOT EXISTS host_cursor (
  name TEXT PRIMARY KEY,
  seq INTEGER NOT NULL
);
