-- The latest membership intent of each (user, issue): when the client asked
-- to join or leave (unix ms, the Worker's clock when the request came in).
-- A change applies only if no later intent is recorded, so a join or leave
-- kept in the outbox while the primary was away and replayed later cannot
-- undo a newer one made directly after the primary came back.
CREATE TABLE membership_intents (
  user_id    TEXT NOT NULL,
  issue_id   TEXT NOT NULL,
  intent_ms  INTEGER NOT NULL CHECK (intent_ms >= 0),
  PRIMARY KEY (user_id, issue_id)
) WITHOUT ROWID;
