-- Why a batch's handler failed (panicked, returned an error, or ran past its deadline), one
-- row per message of the batch, written by the container for the operator. The batch's
-- `processing` claims stay in place: the host counts the try and retries, or fails the message
-- after its limit. The reason is bounded by the writer (1 KiB), the row count too (1000).
CREATE TABLE IF NOT EXISTS failure_notes (
  message_id TEXT PRIMARY KEY,
  reason TEXT NOT NULL,
  at TEXT NOT NULL
);

-- Alive versus active: `.heartbeat` says the container is alive (it is touched while idle
-- too); this single row says whether it is working on a batch. `busy_since` is set in the
-- transaction that claims a batch and cleared in the one that commits its last part (or notes
-- its failure); NULL while idle, and then `updated_at` is when it became idle. A table of its
-- own rather than a column of upstream's `container_state`: that table keeps the shape older
-- containers write, and this migration stays re-runnable (no ALTER TABLE).
CREATE TABLE IF NOT EXISTS container_activity (
  id INTEGER PRIMARY KEY CHECK (id = 1),
  busy_since TEXT,
  updated_at TEXT NOT NULL
);
