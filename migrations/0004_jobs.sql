-- Scheduled jobs (expand only): where a job's pass stopped, what a run
-- corrected, and an index for archiving the feed oldest first.

-- The last issue id a run finished; the next run continues after it (NULL:
-- the pass is complete, the next run starts over).
ALTER TABLE job_runs ADD COLUMN cursor TEXT;
-- JSON: what the run changed (reconcile_counts lists its corrections).
ALTER TABLE job_runs ADD COLUMN details TEXT;

-- archive_feed takes the oldest posts first, in bounded batches.
CREATE INDEX idx_feed_created ON feed (created_at, id);
