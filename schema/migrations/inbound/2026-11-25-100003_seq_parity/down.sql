DROP TRIGGER IF EXISTS messages_in_seq_even_insert;
DROP TRIGGER IF EXISTS messages_in_seq_even_update;
