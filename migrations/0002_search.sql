-- Full-text search over issue names, descriptions and synonym terms.
--
-- issues_fts keeps its own copy of the text (a plain FTS5 table), because
-- one of its columns (synonyms) is built from another table. Its rowid is
-- the issue's rowid so the triggers below find a row without a scan; queries
-- join on issue_id. VACUUM may renumber rowids of tables without an INTEGER
-- PRIMARY KEY: after one, rebuild the index (see migrations/README.md).
-- unicode61 with remove_diacritics folds case and accents ("café" = "cafe");
-- the prefix indexes make "pothol*" cheap.

CREATE VIRTUAL TABLE issues_fts USING fts5(
  issue_id UNINDEXED,
  name,
  description,
  synonyms,
  tokenize = 'unicode61 remove_diacritics 2',
  prefix = '2 3'
);

CREATE TRIGGER issues_fts_after_insert AFTER INSERT ON issues BEGIN
  INSERT INTO issues_fts (rowid, issue_id, name, description, synonyms)
  VALUES (new.rowid, new.id, new.name, new.description,
          (SELECT coalesce(group_concat(term, ' '), '') FROM synonyms WHERE issue_id = new.id));
END;

CREATE TRIGGER issues_fts_after_update AFTER UPDATE OF id, name, description ON issues BEGIN
  DELETE FROM issues_fts WHERE rowid = old.rowid;
  INSERT INTO issues_fts (rowid, issue_id, name, description, synonyms)
  VALUES (new.rowid, new.id, new.name, new.description,
          (SELECT coalesce(group_concat(term, ' '), '') FROM synonyms WHERE issue_id = new.id));
END;

CREATE TRIGGER issues_fts_after_delete AFTER DELETE ON issues BEGIN
  DELETE FROM issues_fts WHERE rowid = old.rowid;
END;

-- A synonym change rewrites the row of the issue(s) it belongs to.
CREATE TRIGGER synonyms_fts_after_insert AFTER INSERT ON synonyms BEGIN
  DELETE FROM issues_fts WHERE rowid = (SELECT rowid FROM issues WHERE id = new.issue_id);
  INSERT INTO issues_fts (rowid, issue_id, name, description, synonyms)
  SELECT i.rowid, i.id, i.name, i.description,
         (SELECT coalesce(group_concat(term, ' '), '') FROM synonyms WHERE issue_id = i.id)
  FROM issues i WHERE i.id = new.issue_id;
END;

CREATE TRIGGER synonyms_fts_after_delete AFTER DELETE ON synonyms BEGIN
  DELETE FROM issues_fts WHERE rowid = (SELECT rowid FROM issues WHERE id = old.issue_id);
  INSERT INTO issues_fts (rowid, issue_id, name, description, synonyms)
  SELECT i.rowid, i.id, i.name, i.description,
         (SELECT coalesce(group_concat(term, ' '), '') FROM synonyms WHERE issue_id = i.id)
  FROM issues i WHERE i.id = old.issue_id;
END;

CREATE TRIGGER synonyms_fts_after_update AFTER UPDATE OF issue_id, term ON synonyms BEGIN
  DELETE FROM issues_fts WHERE rowid IN (SELECT rowid FROM issues WHERE id IN (old.issue_id, new.issue_id));
  INSERT INTO issues_fts (rowid, issue_id, name, description, synonyms)
  SELECT i.rowid, i.id, i.name, i.description,
         (SELECT coalesce(group_concat(term, ' '), '') FROM synonyms WHERE issue_id = i.id)
  FROM issues i WHERE i.id IN (old.issue_id, new.issue_id);
END;

-- Back-fill: the migration may meet a database that already has issues.
INSERT INTO issues_fts (rowid, issue_id, name, description, synonyms)
SELECT i.rowid, i.id, i.name, i.description,
       (SELECT coalesce(group_concat(term, ' '), '') FROM synonyms WHERE issue_id = i.id)
FROM issues i;
