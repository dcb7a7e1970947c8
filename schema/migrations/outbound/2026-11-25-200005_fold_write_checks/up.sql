-- Every trigger is parsed on every open, and the readers and writers here open a file per
-- operation: 100005's six key triggers cost ~40 us per outbound.db open (a host sweeping 500
-- sessions pays it 1,000 times). Keep the one check that guards what peers really write: the
-- message rows, whose id and seq the agent addresses. Parity and key checks become one
-- trigger per event and table.
DROP TRIGGER IF EXISTS messages_out_id_not_null_insert;
DROP TRIGGER IF EXISTS messages_out_id_not_null_update;
DROP TRIGGER IF EXISTS processing_ack_message_id_not_null_insert;
DROP TRIGGER IF EXISTS processing_ack_message_id_not_null_update;
DROP TRIGGER IF EXISTS session_state_key_not_null_insert;
DROP TRIGGER IF EXISTS session_state_key_not_null_update;
DROP TRIGGER IF EXISTS messages_out_seq_odd_insert;
DROP TRIGGER IF EXISTS messages_out_seq_odd_update;
CREATE TRIGGER IF NOT EXISTS messages_out_write_check_insert
BEFORE INSERT ON messages_out
WHEN NEW.id IS NULL OR NEW.seq IS NULL OR NEW.seq <= 0 OR NEW.seq % 2 <> 1
BEGIN
  SELECT RAISE(ABORT, 'seq parity: messages_out.seq must be a positive odd number (container seq), and its id must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS messages_out_write_check_update
BEFORE UPDATE OF id, seq ON messages_out
WHEN NEW.id IS NULL OR NEW.seq IS NULL OR NEW.seq <= 0 OR NEW.seq % 2 <> 1
BEGIN
  SELECT RAISE(ABORT, 'seq parity: messages_out.seq must be a positive odd number (container seq), and its id must not be NULL');
END;
