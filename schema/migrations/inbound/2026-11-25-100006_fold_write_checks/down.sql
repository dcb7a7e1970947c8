DROP TRIGGER IF EXISTS messages_in_write_check_insert;
DROP TRIGGER IF EXISTS messages_in_write_check_update;
CREATE TRIGGER IF NOT EXISTS messages_in_seq_even_insert
BEFORE INSERT ON messages_in
WHEN NEW.seq IS NULL OR NEW.seq <= 0 OR NEW.seq % 2 <> 0
BEGIN
  SELECT RAISE(ABORT, 'seq parity: messages_in.seq must be a positive even number (host seq)');
END;
CREATE TRIGGER IF NOT EXISTS messages_in_seq_even_update
BEFORE UPDATE OF seq ON messages_in
WHEN NEW.seq IS NULL OR NEW.seq <= 0 OR NEW.seq % 2 <> 0
BEGIN
  SELECT RAISE(ABORT, 'seq parity: messages_in.seq must be a positive even number (host seq)');
END;
