-- Every trigger is parsed on every open, and the readers and writers here open a file per
-- operation: 100005's twelve key triggers cost ~40 us per inbound.db open (a host sweeping 500
-- sessions pays it 1,000 times). Keep the one check that guards what peers really write: the
-- message rows, whose id and seq the agent addresses. Parity and key checks become one
-- trigger per event and table.
DROP TRIGGER IF EXISTS messages_in_id_not_null_insert;
DROP TRIGGER IF EXISTS messages_in_id_not_null_update;
DROP TRIGGER IF EXISTS delivered_message_out_id_not_null_insert;
DROP TRIGGER IF EXISTS delivered_message_out_id_not_null_update;
DROP TRIGGER IF EXISTS destinations_name_not_null_insert;
DROP TRIGGER IF EXISTS destinations_name_not_null_update;
DROP TRIGGER IF EXISTS host_replies_id_not_null_insert;
DROP TRIGGER IF EXISTS host_replies_id_not_null_update;
DROP TRIGGER IF EXISTS delivery_attempts_message_out_id_not_null_insert;
DROP TRIGGER IF EXISTS delivery_attempts_message_out_id_not_null_update;
DROP TRIGGER IF EXISTS host_cursor_name_not_null_insert;
DROP TRIGGER IF EXISTS host_cursor_name_not_null_update;
DROP TRIGGER IF EXISTS messages_in_seq_even_insert;
DROP TRIGGER IF EXISTS messages_in_seq_even_update;
CREATE TRIGGER IF NOT EXISTS messages_in_write_check_insert
BEFORE INSERT ON messages_in
WHEN NEW.id IS NULL OR NEW.seq IS NULL OR NEW.seq <= 0 OR NEW.seq % 2 <> 0
BEGIN
  SELECT RAISE(ABORT, 'seq parity: messages_in.seq must be a positive even number (host seq), and its id must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS messages_in_write_check_update
BEFORE UPDATE OF id, seq ON messages_in
WHEN NEW.id IS NULL OR NEW.seq IS NULL OR NEW.seq <= 0 OR NEW.seq % 2 <> 0
BEGIN
  SELECT RAISE(ABORT, 'seq parity: messages_in.seq must be a positive even number (host seq), and its id must not be NULL');
END;
