ALTER TABLE container_state DROP COLUMN busy_since;
DROP TABLE IF EXISTS failure_notes;
