-- Polls cost what is new, not the session's history: the container's pending poll, the host's
-- due count and the ack sync all start from `status = 'pending'` rows, newest seq first.
CREATE INDEX IF NOT EXISTS idx_messages_in_status_seq ON messages_in(status, seq);
