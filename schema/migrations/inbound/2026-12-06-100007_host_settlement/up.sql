-- State the host keeps about the container's file in its own file, so that it never has to
-- write (or roll back) the container's file.

-- Claims (`processing` acks) the host has seen in outbound.db, and which of them it has settled
-- (counted as a try, retried or failed) after their container stopped. The claim itself stays
-- in outbound.db until the next container clears it at start-up; this record keeps the host
-- from counting one claim twice, from killing a new container for its predecessor's claim, and
-- from missing a claim the container dropped without answering. Rows go when their message is
-- no longer pending.
CREATE TABLE IF NOT EXISTS claim_records (
  message_id TEXT NOT NULL,
  claimed_at TEXT NOT NULL,
  seen_at TEXT NOT NULL,
  settled_at TEXT,
  PRIMARY KEY (message_id, claimed_at)
);

-- Outbound rows read but not yet due (`deliver_after` in the future). The delivery cursor
-- passes them, so a row scheduled far ahead never makes every pass re-read what follows it;
-- each pass looks here for the held rows that have come due.
CREATE TABLE IF NOT EXISTS held_outbound (
  source TEXT NOT NULL,
  seq INTEGER NOT NULL,
  message_out_id TEXT NOT NULL,
  deliver_after_ms INTEGER NOT NULL,
  PRIMARY KEY (source, seq)
);
CREATE INDEX IF NOT EXISTS idx_held_outbound_due ON held_outbound(deliver_after_ms);

-- Finished rows that still carry a recurrence: a series whose next occurrence was never
-- inserted (an older host crashed between its two statements, or a `failed` run). Few rows,
-- read on every sync: a partial index keeps that read off the history.
CREATE INDEX IF NOT EXISTS idx_messages_in_recurring ON messages_in(status, seq)
  WHERE recurrence IS NOT NULL;
