DROP TABLE IF EXISTS host_cursor;
DROP TABLE IF EXISTS delivery_attempts;
DROP TRIGGER IF EXISTS host_replies_seq_even_update;
DROP TRIGGER IF EXISTS host_replies_seq_even_insert;
DROP TABLE IF EXISTS host_replies;
