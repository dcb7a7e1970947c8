DROP TRIGGER IF EXISTS messages_out_write_check_insert;
DROP TRIGGER IF EXISTS messages_out_write_check_update;
CREATE TRIGGER IF NOT EXISTS messages_out_seq_odd_insert
BEFORE INSERT ON messages_out
WHEN NEW.seq IS NULL OR NEW.seq <= 0 OR NEW.seq % 2 <> 1
BEGIN
  SELECT RAISE(ABORT, 'seq parity: messages_out.seq must be a positive odd number (container seq)');
END;
CREATE TRIGGER IF NOT EXISTS messages_out_seq_odd_update
BEFORE UPDATE OF seq ON messages_out
WHEN NEW.seq IS NULL OR NEW.seq <= 0 OR NEW.seq % 2 <> 1
BEGIN
  SELECT RAISE(ABORT, 'seq parity: messages_out.seq must be a positive odd number (container seq)');
END;
