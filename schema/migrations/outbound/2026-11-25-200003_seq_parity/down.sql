DROP TRIGGER IF EXISTS messages_out_seq_odd_insert;
DROP TRIGGER IF EXISTS messages_out_seq_odd_update;
