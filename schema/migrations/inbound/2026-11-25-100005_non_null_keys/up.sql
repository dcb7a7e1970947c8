-- SQLite lets a TEXT PRIMARY KEY hold NULL (a legacy quirk); a peer that writes one leaves a
-- row nobody can address and every typed read of it fails. Refuse NULL keys on write. Rows
-- already in a legacy file are left as they are.
CREATE TRIGGER IF NOT EXISTS messages_in_id_not_null_insert
BEFORE INSERT ON messages_in
WHEN NEW.id IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: messages_in.id must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS messages_in_id_not_null_update
BEFORE UPDATE OF id ON messages_in
WHEN NEW.id IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: messages_in.id must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS delivered_message_out_id_not_null_insert
BEFORE INSERT ON delivered
WHEN NEW.message_out_id IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: delivered.message_out_id must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS delivered_message_out_id_not_null_update
BEFORE UPDATE OF message_out_id ON delivered
WHEN NEW.message_out_id IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: delivered.message_out_id must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS destinations_name_not_null_insert
BEFORE INSERT ON destinations
WHEN NEW.name IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: destinations.name must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS destinations_name_not_null_update
BEFORE UPDATE OF name ON destinations
WHEN NEW.name IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: destinations.name must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS host_replies_id_not_null_insert
BEFORE INSERT ON host_replies
WHEN NEW.id IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: host_replies.id must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS host_replies_id_not_null_update
BEFORE UPDATE OF id ON host_replies
WHEN NEW.id IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: host_replies.id must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS delivery_attempts_message_out_id_not_null_insert
BEFORE INSERT ON delivery_attempts
WHEN NEW.message_out_id IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: delivery_attempts.message_out_id must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS delivery_attempts_message_out_id_not_null_update
BEFORE UPDATE OF message_out_id ON delivery_attempts
WHEN NEW.message_out_id IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: delivery_attempts.message_out_id must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS host_cursor_name_not_null_insert
BEFORE INSERT ON host_cursor
WHEN NEW.name IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: host_cursor.name must not be NULL');
END;
CREATE TRIGGER IF NOT EXISTS host_cursor_name_not_null_update
BEFORE UPDATE OF name ON host_cursor
WHEN NEW.name IS NULL
BEGIN
  SELECT RAISE(ABORT, 'key: host_cursor.name must not be NULL');
END;
