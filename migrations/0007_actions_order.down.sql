CREATE INDEX idx_actions_issue ON actions (issue_id);
DROP INDEX idx_actions_issue_created;
