-- The latest membership intent of each (user, issue): when the client asked
-- to join or leave (the Worker's clock when the request came in, ISO-8601
-- UTC with milliseconds, which sorts as text). A change applies only if no
-- later intent is recorded, so a join or leave kept in the outbox while the
-- primary was away and replayed later cannot undo a newer one made directly
-- after the primary came back.
CREATE TABLE membership_intents (
  user_id    TEXT NOT NULL,
  issue_id   TEXT NOT NULL,
  intent_at  TEXT NOT NULL,
  PRIMARY KEY (user_id, issue_id)
) WITHOUT ROWID;
