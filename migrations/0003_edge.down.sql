DROP TABLE otp_codes;
DROP TABLE webhook_events;
DROP TABLE idempotency_keys;
DROP TABLE job_runs;
DROP TABLE issue_daily;
DROP VIEW feed_all;
DROP TABLE feed_archive;
