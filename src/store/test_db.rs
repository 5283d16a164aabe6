//! For native tests: the primary's engine on a temporary database with
//! every migration applied, driven through the same pipeline bodies the
//! Worker sends ([`crate::store::db`]).

use libsql_hrana::proto::{PipelineReqBody, PipelineRespBody, StreamResult};
use qr_primary::engine::{Engine, Session};

use crate::http::error::AppResult;
use crate::store::db::{self, Query, Record, Written};

pub struct TestDb {
    _dir: tempfile::TempDir,
    engine: Engine,
    session: Session,
}

impl TestDb {
    pub fn migrated() -> TestDb {
        let dir = tempfile::tempdir().expect("dir");
        let engine = Engine::open(&dir.path().join("t.db")).expect("engine");
        let migrations = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<_> = std::fs::read_dir(&migrations)
            .expect("migrations")
            .map(|e| e.expect("entry").path())
            .filter(|p| {
                let name = p.to_string_lossy();
                name.ends_with(".sql") && !name.ends_with(".down.sql")
            })
            .collect();
        files.sort();
        let conn = engine.connect().expect("conn");
        for f in files {
            conn.execute_batch(&std::fs::read_to_string(&f).expect("sql"))
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
        }
        let session = engine.session().expect("session");
        TestDb {
            _dir: dir,
            engine,
            session,
        }
    }

    /// Runs SQL text directly (fixtures).
    pub fn exec(&self, sql: &str) {
        self.engine
            .connect()
            .expect("conn")
            .execute_batch(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// One integer from a query.
    pub fn int(&self, sql: &str) -> i64 {
        self.engine
            .connect()
            .expect("conn")
            .query_row(sql, [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    fn send(&mut self, body: PipelineReqBody) -> PipelineRespBody {
        let results = body
            .requests
            .into_iter()
            .map(|r| match self.session.handle(r) {
                Ok(response) => StreamResult::Ok { response },
                Err(error) => StreamResult::Error { error },
            })
            .collect();
        PipelineRespBody {
            baton: None,
            base_url: None,
            results,
        }
    }

    pub fn transaction(&mut self, queries: Vec<Query>) -> AppResult<Vec<Written>> {
        let n = queries.len();
        let body = self.send(db::transaction_body(&queries));
        db::transaction_results(body, n)
    }

    pub fn reads(&mut self, queries: Vec<Query>) -> AppResult<Vec<Vec<Record>>> {
        let n = queries.len();
        let body = self.send(db::reads_body(&queries));
        db::read_results(body, n)
    }

    /// `EXPLAIN QUERY PLAN` of a statement with its arguments, a step a line.
    pub fn query_plan(&mut self, q: &Query) -> String {
        let explain = Query::new(format!("EXPLAIN QUERY PLAN {}", q.sql), q.args.clone());
        self.reads(vec![explain])
            .unwrap_or_else(|e| panic!("{}: {e:?}", q.sql))
            .concat()
            .iter()
            .filter_map(|r| r.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .collect::<Vec<_>>()
            .join("\n")
    }
}
