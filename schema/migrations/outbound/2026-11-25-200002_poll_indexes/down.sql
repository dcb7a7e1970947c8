DROP INDEX IF EXISTS idx_processing_ack_status;
