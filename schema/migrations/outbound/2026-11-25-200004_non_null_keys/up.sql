-- SQLite lets a TEXT PRIMARY KEY hold NULL (a legacy quirk); a peer that writes one leaves a
-- row nobody can address and every typed read of it fails. Refuse NULL keys on write. Rows
-- already in a legacy file are left as they are.
CREATE TRIGGER IF NOT EXISTS messages_out_id_not_null_insert
BEFORE INSERT ON messages_out
WHEN NEW.id IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: messages_out.id must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS messages_out_id_not_null_update
BEFORE UPDATE OF id ON messages_out
WHEN NEW.id IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: messages_out.id must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS processing_ack_message_id_not_null_insert
BEFORE INSERT ON processing_ack
WHEN NEW.message_id IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: processing_ack.message_id must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS processing_ack_message_id_not_null_update
BEFORE UPDATE OF message_id ON processing_ack
WHEN NEW.message_id IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: processing_ack.message_id must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS session_state_key_not_null_insert
BEFORE INSERT ON session_state
WHEN NEW.key IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: session_state.key must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS session_state_key_not_null_update
BEFORE UPDATE OF key ON session_state
WHEN NEW.key IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: session_state.key must not be NULL');
END;
