DROP TRIGGER synonyms_fts_after_update;
DROP TRIGGER synonyms_fts_after_delete;
DROP TRIGGER synonyms_fts_after_insert;
DROP TRIGGER issues_fts_after_delete;
DROP TRIGGER issues_fts_after_update;
DROP TRIGGER issues_fts_after_insert;
DROP TABLE issues_fts;
