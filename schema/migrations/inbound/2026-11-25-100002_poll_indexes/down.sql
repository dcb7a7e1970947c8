DROP INDEX IF EXISTS idx_messages_in_status_seq;
