-- Seq parity is enforced by the file itself, not by convention: host rows carry positive even
-- seqs. A peer that breaks it gets an error instead of corrupting "edit message N" targets.
-- Rows already in a legacy file are left as they are; only new writes are checked.
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
