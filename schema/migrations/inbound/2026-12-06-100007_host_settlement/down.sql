DROP INDEX IF EXISTS idx_messages_in_recurring;
DROP INDEX IF EXISTS idx_held_outbound_due;
DROP TABLE IF EXISTS held_outbound;
DROP TABLE IF EXISTS claim_records;
