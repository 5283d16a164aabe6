DROP INDEX idx_feed_created;
ALTER TABLE job_runs DROP COLUMN details;
ALTER TABLE job_runs DROP COLUMN cursor;
