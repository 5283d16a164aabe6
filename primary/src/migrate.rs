//! Schema migrations: `migrations/NNNN_name.sql` with `NNNN_name.down.sql`.
//!
//! Applied migrations are recorded in `_migrations (id, name, checksum,
//! applied_at)`. Each migration, with its `_migrations` row, goes to the
//! server as one batch wrapped in a transaction: it applies whole or not at
//! all, in one round trip, on this primary and on Turso alike. A migration
//! whose file changed after it was applied stops `up` and `down`: fix the
//! file, or write a new migration.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::client::{int, stmt, text, Client, ClientError, TxError};
use crate::sql::split_statements;

const CREATE_TABLE: &str = "CREATE TABLE IF NOT EXISTS _migrations (\
    id INTEGER PRIMARY KEY NOT NULL, \
    name TEXT NOT NULL, \
    checksum TEXT NOT NULL, \
    applied_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')))";

/// One migration found on disk.
#[derive(Debug, Clone)]
pub struct Migration {
    pub id: i64,
    pub name: String,
    pub up: String,
    pub down: Option<String>,
    pub checksum: String,
}

/// One migration recorded in `_migrations`.
#[derive(Debug, Clone)]
pub struct Applied {
    pub id: i64,
    pub name: String,
    pub checksum: String,
    pub applied_at: String,
}

#[derive(Debug)]
pub enum MigrateError {
    Io(PathBuf, std::io::Error),
    BadFileName(PathBuf),
    DuplicateId(i64),
    Client(ClientError),
    Changed {
        id: i64,
        name: String,
    },
    Missing {
        id: i64,
        name: String,
    },
    NoDown {
        id: i64,
        name: String,
    },
    Failed {
        id: i64,
        name: String,
        error: TxError,
    },
}

impl std::fmt::Display for MigrateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MigrateError::Io(path, e) => write!(f, "cannot read {}: {e}", path.display()),
            MigrateError::BadFileName(path) => write!(
                f,
                "{} is not named NNNN_name.sql or NNNN_name.down.sql; rename it",
                path.display()
            ),
            MigrateError::DuplicateId(id) => {
                write!(f, "two migration files share the number {id:04}; renumber one")
            }
            MigrateError::Client(e) => e.fmt(f),
            MigrateError::Changed { id, name } => write!(
                f,
                "migration {id:04}_{name} was applied but its file has changed since; \
                 restore the file and put the change in a new migration"
            ),
            MigrateError::Missing { id, name } => write!(
                f,
                "migration {id:04}_{name} is applied in the database but its file is missing; restore it"
            ),
            MigrateError::NoDown { id, name } => write!(
                f,
                "migration {id:04}_{name} has no {id:04}_{name}.down.sql, so it cannot be reverted"
            ),
            MigrateError::Failed { id, name, error } => {
                write!(f, "migration {id:04}_{name} failed: {error}")
            }
        }
    }
}

impl std::error::Error for MigrateError {}

impl From<ClientError> for MigrateError {
    fn from(e: ClientError) -> Self {
        MigrateError::Client(e)
    }
}

/// The checksum recorded for a migration's up file. Line endings do not
/// change a migration: a CRLF copy of a file (as a Windows checkout makes)
/// has the checksum of its LF original. Any other change counts, a final
/// newline added or removed included, and the checksum of an LF file is
/// the SHA-256 of its bytes, as recorded since the first migration.
pub fn checksum(sql: &str) -> String {
    hex::encode(Sha256::digest(sql.replace("\r\n", "\n").as_bytes()))
}

/// Reads `dir`, sorted by number.
pub fn load_dir(dir: &Path) -> Result<Vec<Migration>, MigrateError> {
    let entries = std::fs::read_dir(dir).map_err(|e| MigrateError::Io(dir.to_owned(), e))?;
    let mut ups: BTreeMap<i64, (String, String)> = BTreeMap::new();
    let mut downs: BTreeMap<i64, String> = BTreeMap::new();
    for entry in entries {
        let path = entry
            .map_err(|e| MigrateError::Io(dir.to_owned(), e))?
            .path();
        let Some(file) = path.file_name().and_then(|f| f.to_str()) else {
            continue;
        };
        if !file.ends_with(".sql") {
            continue;
        }
        let (stem, is_down) = match file.strip_suffix(".down.sql") {
            Some(stem) => (stem, true),
            None => (file.trim_end_matches(".sql"), false),
        };
        let (num, name) = stem
            .split_once('_')
            .filter(|(n, name)| n.len() == 4 && !name.is_empty())
            .ok_or_else(|| MigrateError::BadFileName(path.clone()))?;
        let id: i64 = num
            .parse()
            .map_err(|_| MigrateError::BadFileName(path.clone()))?;
        let sql = std::fs::read_to_string(&path).map_err(|e| MigrateError::Io(path.clone(), e))?;
        if is_down {
            downs.insert(id, sql);
        } else if ups.insert(id, (name.to_owned(), sql)).is_some() {
            return Err(MigrateError::DuplicateId(id));
        }
    }
    Ok(ups
        .into_iter()
        .map(|(id, (name, up))| Migration {
            id,
            checksum: checksum(&up),
            down: downs.remove(&id),
            name,
            up,
        })
        .collect())
}

pub struct Migrator {
    client: Client,
    migrations: Vec<Migration>,
}

/// What `status` reports for one migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Applied {
        at: String,
    },
    Pending,
    Changed,
    /// In the database but not on disk.
    Missing,
}

impl Migrator {
    pub fn new(client: Client, migrations: Vec<Migration>) -> Self {
        Migrator { client, migrations }
    }

    async fn applied(&self) -> Result<Vec<Applied>, MigrateError> {
        self.client.execute(stmt(CREATE_TABLE, vec![])).await?;
        let rows = self
            .client
            .query(
                "SELECT id, name, checksum, applied_at FROM _migrations ORDER BY id",
                vec![],
            )
            .await?;
        let as_text = |v: &libsql_hrana::proto::Value| match v {
            libsql_hrana::proto::Value::Text { value } => value.to_string(),
            libsql_hrana::proto::Value::Integer { value } => value.to_string(),
            _ => String::new(),
        };
        Ok(rows
            .iter()
            .filter_map(|r| match r.as_slice() {
                [libsql_hrana::proto::Value::Integer { value: id }, name, sum, at] => {
                    Some(Applied {
                        id: *id,
                        name: as_text(name),
                        checksum: as_text(sum),
                        applied_at: as_text(at),
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// Every migration on disk or in the database, with its state.
    pub async fn status(&self) -> Result<Vec<(i64, String, State)>, MigrateError> {
        let applied = self.applied().await?;
        let mut out = Vec::new();
        for m in &self.migrations {
            let state = match applied.iter().find(|a| a.id == m.id) {
                Some(a) if a.checksum != m.checksum => State::Changed,
                Some(a) => State::Applied {
                    at: a.applied_at.clone(),
                },
                None => State::Pending,
            };
            out.push((m.id, m.name.clone(), state));
        }
        for a in &applied {
            if !self.migrations.iter().any(|m| m.id == a.id) {
                out.push((a.id, a.name.clone(), State::Missing));
            }
        }
        out.sort_by_key(|(id, _, _)| *id);
        Ok(out)
    }

    /// Refuses to go on when an applied migration changed or vanished.
    fn check(&self, applied: &[Applied]) -> Result<(), MigrateError> {
        for a in applied {
            match self.migrations.iter().find(|m| m.id == a.id) {
                None => {
                    return Err(MigrateError::Missing {
                        id: a.id,
                        name: a.name.clone(),
                    })
                }
                Some(m) if m.checksum != a.checksum => {
                    return Err(MigrateError::Changed {
                        id: m.id,
                        name: m.name.clone(),
                    })
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Applies pending migrations in order; `report` hears of each as it is
    /// applied. Returns the ids applied.
    pub async fn up(&self, mut report: impl FnMut(&Migration)) -> Result<Vec<i64>, MigrateError> {
        let applied = self.applied().await?;
        self.check(&applied)?;
        let mut done = Vec::new();
        for m in &self.migrations {
            if applied.iter().any(|a| a.id == m.id) {
                continue;
            }
            let mut stmts: Vec<_> = split_statements(&m.up)
                .into_iter()
                .map(|s| stmt(s, vec![]))
                .collect();
            stmts.push(stmt(
                "INSERT INTO _migrations (id, name, checksum) VALUES (?, ?, ?)",
                vec![int(m.id), text(m.name.as_str()), text(m.checksum.as_str())],
            ));
            self.client
                .transaction(stmts)
                .await
                .map_err(|error| MigrateError::Failed {
                    id: m.id,
                    name: m.name.clone(),
                    error,
                })?;
            report(m);
            done.push(m.id);
        }
        Ok(done)
    }

    /// Reverts the last `count` applied migrations, newest first.
    pub async fn down(
        &self,
        count: usize,
        mut report: impl FnMut(&Migration),
    ) -> Result<Vec<i64>, MigrateError> {
        let applied = self.applied().await?;
        self.check(&applied)?;
        let mut done = Vec::new();
        for a in applied.iter().rev().take(count) {
            // `check` guarantees the file exists.
            let Some(m) = self.migrations.iter().find(|m| m.id == a.id) else {
                continue;
            };
            let down = m.down.as_ref().ok_or_else(|| MigrateError::NoDown {
                id: m.id,
                name: m.name.clone(),
            })?;
            let mut stmts: Vec<_> = split_statements(down)
                .into_iter()
                .map(|s| stmt(s, vec![]))
                .collect();
            stmts.push(stmt(
                "DELETE FROM _migrations WHERE id = ?",
                vec![int(m.id)],
            ));
            self.client
                .transaction(stmts)
                .await
                .map_err(|error| MigrateError::Failed {
                    id: m.id,
                    name: m.name.clone(),
                    error,
                })?;
            report(m);
            done.push(m.id);
        }
        Ok(done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_line_endings_leave_the_checksum_alone() {
        let lf = "CREATE TABLE t (\n  x\n);\n";
        assert_eq!(checksum(lf), checksum(&lf.replace('\n', "\r\n")));
        assert_eq!(checksum(lf), hex::encode(Sha256::digest(lf.as_bytes())));
        assert_ne!(checksum(lf), checksum(lf.trim_end()));
        assert_ne!(checksum(lf), checksum(&lf.replace('x', "y")));
    }
}
