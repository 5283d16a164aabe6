-- Tables the edge Worker needs: the feed archive, daily activity for
-- trending, job runs, idempotency records, webhook dedupe, one-time codes.

-- Posts older than 90 days move here (the archive_feed job); reads see both
-- through feed_all.
CREATE TABLE feed_archive (
  id          TEXT PRIMARY KEY NOT NULL,
  issue_id    TEXT NOT NULL REFERENCES issues (id) ON DELETE CASCADE,
  user_id     TEXT REFERENCES users (id) ON DELETE SET NULL,
  content     TEXT NOT NULL,
  likes       INTEGER NOT NULL DEFAULT 0 CHECK (likes >= 0),
  created_at  TEXT NOT NULL,
  archived_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX idx_feed_archive_issue ON feed_archive (issue_id, created_at DESC, id);

CREATE VIEW feed_all AS
  SELECT id, issue_id, user_id, content, likes, created_at, 0 AS archived FROM feed
  UNION ALL
  SELECT id, issue_id, user_id, content, likes, created_at, 1 AS archived FROM feed_archive;

-- Joins, leaves, posts and actions per issue per UTC day.
CREATE TABLE issue_daily (
  issue_id TEXT NOT NULL REFERENCES issues (id) ON DELETE CASCADE,
  day      TEXT NOT NULL CHECK (day GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]'),
  joins    INTEGER NOT NULL DEFAULT 0 CHECK (joins >= 0),
  leaves   INTEGER NOT NULL DEFAULT 0 CHECK (leaves >= 0),
  posts    INTEGER NOT NULL DEFAULT 0 CHECK (posts >= 0),
  actions  INTEGER NOT NULL DEFAULT 0 CHECK (actions >= 0),
  PRIMARY KEY (issue_id, day)
);
CREATE INDEX idx_issue_daily_day ON issue_daily (day);

CREATE TABLE job_runs (
  id           TEXT PRIMARY KEY NOT NULL,
  job          TEXT NOT NULL,
  started_at   TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  finished_at  TEXT,
  status       TEXT NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
  rows_touched INTEGER NOT NULL DEFAULT 0 CHECK (rows_touched >= 0),
  error        TEXT,
  -- A running job holds the lease until then; a crashed run's lease lapses.
  lease_until  TEXT
);
CREATE INDEX idx_job_runs_job ON job_runs (job, started_at DESC);

-- The stored outcome of a write sent with an Idempotency-Key, per caller.
CREATE TABLE idempotency_keys (
  scope         TEXT NOT NULL,
  key           TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
  request_hash  TEXT NOT NULL,
  status_code   INTEGER,
  response_body TEXT,
  created_at    TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  expires_at    TEXT NOT NULL,
  PRIMARY KEY (scope, key)
);
CREATE INDEX idx_idempotency_expires ON idempotency_keys (expires_at);

-- Inbound webhook events already seen (Meta retries for days).
CREATE TABLE webhook_events (
  provider     TEXT NOT NULL CHECK (provider IN ('whatsapp', 'telegram')),
  event_id     TEXT NOT NULL,
  received_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
  processed_at TEXT,
  PRIMARY KEY (provider, event_id)
);
CREATE INDEX idx_webhook_events_received ON webhook_events (received_at);

-- One-time codes for linking a phone; only a hash of the code is kept.
CREATE TABLE otp_codes (
  id          TEXT PRIMARY KEY NOT NULL,
  user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
  phone       TEXT NOT NULL,
  code_hash   TEXT NOT NULL,
  attempts    INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),
  expires_at  TEXT NOT NULL,
  consumed_at TEXT,
  created_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
CREATE INDEX idx_otp_codes_phone ON otp_codes (phone, created_at DESC);
