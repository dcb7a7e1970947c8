-- The host reads claims (`processing` acks) every sweep: index them so that the read does not
-- grow with the number of finished acks.
CREATE INDEX IF NOT EXISTS idx_processing_ack_status ON processing_ack(status);
