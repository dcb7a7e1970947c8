-- Why a batch's handler failed (panicked, returned an error, or ran past its deadline), one
-- row per message of the batch, written by the container for the operator. The batch's
-- `processing` claims stay in place: the host counts the try and retries, or fails the message
-- after its limit. The reason is bounded by the writer (1 KiB).
CREATE TABLE IF NOT EXISTS failure_notes (
  message_id TEXT PRIMARY KEY,
  reason TEXT NOT NULL,
  at TEXT NOT NULL
);

-- Alive versus active: `.heartbeat` says the container is alive (it is touched while idle
-- too); `busy_since` says it is working on a batch: set in the transaction that claims the
-- batch, cleared in the one that commits its last part. NULL while idle.
ALTER TABLE container_state ADD COLUMN busy_since TEXT;
