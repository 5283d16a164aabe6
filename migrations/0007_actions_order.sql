-- An issue's actions are listed a page at a time, oldest first: the index
-- serves that order (ending in id, for the keyset) without a sort, and the
-- issue's action count as before.
CREATE INDEX idx_actions_issue_created ON actions (issue_id, created_at, id);
DROP INDEX idx_actions_issue;
