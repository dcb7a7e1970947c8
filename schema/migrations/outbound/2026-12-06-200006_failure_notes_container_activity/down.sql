DROP TABLE IF EXISTS container_activity;
DROP TABLE IF EXISTS failure_notes;
