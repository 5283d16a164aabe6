//! Executes Hrana stream requests against one libSQL connection.
//!
//! A [`Session`] is the server side of one Hrana stream: a connection to the
//! database file plus the SQL texts the client stored with `store_sql`. Every
//! method here is synchronous (the engine is a C library); the HTTP layer runs
//! sessions on Tokio's blocking pool.
//!
//! The engine is libSQL's own SQLite fork (`libsql-ffi`), reached through the
//! rusqlite-style API that `libsql-sys` exports and `sqld` itself builds on.
//! The high-level `libsql` crate wraps the same engine, but its statement type
//! does not expose `sqlite3_stmt_readonly`/`sqlite3_stmt_isexplain`, which the
//! Hrana `describe` request must answer.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use libsql_hrana::proto::{
    Batch, BatchCond, BatchResult, Col, CursorEntry, DescribeCol, DescribeParam, DescribeResult,
    Error as HranaError, Row, StepBeginEntry, StepEndEntry, StepErrorEntry, Stmt, StmtResult,
    StreamRequest, StreamResponse,
};
use libsql_sys::rusqlite::hooks::{AuthAction, AuthContext, Authorization};
use libsql_sys::rusqlite::{self, types::ValueRef, Connection, OpenFlags};

use crate::sql::Verb;

/// How long a statement waits for a lock held by another connection before
/// it fails with `SQLITE_BUSY`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// The most SQL texts one stream may keep with `store_sql`.
pub const MAX_STORED_SQL: usize = 256;
/// The most row data one `execute` collects into a response (the cursor
/// endpoint streams instead and has no such cap).
pub const MAX_RESULT_BYTES: usize = 32 * 1024 * 1024;

/// Connection settings every connection starts with (see [`Engine::connect`])
/// and that [`Session::reset`] puts back before another stream reuses it.
const SETTINGS: &str = "PRAGMA foreign_keys=ON; PRAGMA synchronous=FULL; PRAGMA query_only=OFF;";

/// Pragmas a client may set (or call with an argument) without making its
/// connection unfit for another stream: those [`SETTINGS`] and the busy
/// handler put back, and those that only read or check. Setting any other
/// pragma (`recursive_triggers`, `cache_size`, `locking_mode`, ...) keeps the
/// connection from the pool.
const POOL_SAFE_PRAGMAS: &[&str] = &[
    "foreign_keys",
    "synchronous",
    "query_only",
    "busy_timeout",
    "table_info",
    "table_xinfo",
    "table_list",
    "index_info",
    "index_xinfo",
    "index_list",
    "foreign_key_list",
    "foreign_key_check",
    "integrity_check",
    "quick_check",
    "wal_checkpoint",
];

/// Opens connections to one database file with the settings every stream uses.
#[derive(Debug, Clone)]
pub struct Engine {
    path: Arc<Path>,
    /// Autocommit writes queue here, in arrival order, instead of racing for
    /// SQLite's write lock and backing off in the busy handler's sleeps.
    write_queue: Arc<Mutex<()>>,
    /// Statements run that update an issue's `rioter_count`
    /// ([`is_counter_update`]), for the hot-issue benchmark.
    counter_updates: Arc<AtomicU64>,
}

/// `UPDATE issues SET rioter_count ...`, however spaced or cased: the
/// statements the hot-issue benchmark counts.
pub fn is_counter_update(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split_whitespace()
        .take(4)
        .map(str::to_ascii_lowercase)
        .collect();
    words.len() == 4
        && words[0] == "update"
        && words[1] == "issues"
        && words[2] == "set"
        && words[3].starts_with("rioter_count")
}

impl Engine {
    /// Opens (creating if needed) the database and switches it to WAL, so
    /// readers never wait for a writer.
    pub fn open(path: &Path) -> Result<Self, rusqlite::Error> {
        let engine = Engine {
            path: path.into(),
            write_queue: Arc::default(),
            counter_updates: Arc::default(),
        };
        let conn = engine.connect()?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            tracing::warn!(%mode, "the database did not switch to WAL mode");
        }
        Ok(engine)
    }

    /// Statements run so far that updated an issue's `rioter_count`.
    pub fn counter_updates(&self) -> u64 {
        self.counter_updates.load(Ordering::Relaxed)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A new connection: foreign keys enforced, `synchronous=FULL` so that a
    /// write is on disk before it is acknowledged, and a busy handler so that
    /// a statement waits up to [`BUSY_TIMEOUT`] for another connection's lock.
    pub fn connect(&self) -> Result<Connection, rusqlite::Error> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
            | OpenFlags::SQLITE_OPEN_URI;
        let conn = Connection::open_with_flags(&*self.path, flags)?;
        configure(&conn)?;
        conn.set_prepared_statement_cache_capacity(64);
        Ok(conn)
    }

    /// A connection for a client's stream: as [`Engine::connect`], and
    /// guarded by [`authorize`].
    pub fn session(&self) -> Result<Session, rusqlite::Error> {
        let conn = self.connect()?;
        let guard = Arc::new(Guard::default());
        let hook = guard.clone();
        conn.authorizer(Some(move |ctx: AuthContext<'_>| authorize(&ctx, &hook)));
        client_change_counts(&conn, &guard)?;
        Ok(Session {
            conn,
            stored_sql: HashMap::new(),
            write_queue: self.write_queue.clone(),
            counter_updates: self.counter_updates.clone(),
            in_turn: false,
            guard,
        })
    }
}

/// Applies [`SETTINGS`] and the busy handler (which `PRAGMA busy_timeout`
/// replaces).
fn configure(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.busy_handler(Some(retry_while_busy))?;
    conn.execute_batch(SETTINGS)
}

/// What a session's authorizer shares with the session.
#[derive(Default)]
struct Guard {
    /// A statement of the session is being stepped (not prepared).
    stepping: AtomicBool,
    /// The client set a pragma that [`Session::reset`] does not put back.
    unfit_for_pool: AtomicBool,
    /// The client set a pragma [`Session::reset`] puts back.
    settings_changed: AtomicBool,
    /// The client created temporary tables, views, indexes or triggers.
    temp_schema: AtomicBool,
    /// The connection's total of changed rows when its client got it: the
    /// SQL functions `changes()` and `total_changes()` count from here, so
    /// a pooled connection does not show its earlier clients' writes.
    changes_base: AtomicI64,
}

/// The connection's count of rows changed since it opened.
fn total_changes(conn: &Connection) -> i64 {
    // SAFETY: the handle belongs to `conn`, which is open for this call.
    unsafe { libsql_sys::ffi::sqlite3_total_changes64(conn.handle()) }
}

/// `changes()` and `total_changes()` as the session's client should see
/// them: its own writes only (see [`Guard::changes_base`]). SQLite lets an
/// application-defined function replace a built-in one of the same name.
fn client_change_counts(conn: &Connection, guard: &Arc<Guard>) -> Result<(), rusqlite::Error> {
    use rusqlite::functions::FunctionFlags;
    let flags = || FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_INNOCUOUS;
    let base = guard.clone();
    conn.create_scalar_function("changes", 0, flags(), move |ctx| {
        // SAFETY: the connection running this function outlives the call.
        let db = unsafe { ctx.get_connection()? };
        let mine = total_changes(&db) > base.changes_base.load(Ordering::Relaxed);
        Ok(if mine { db.changes() as i64 } else { 0 })
    })?;
    let base = guard.clone();
    conn.create_scalar_function("total_changes", 0, flags(), move |ctx| {
        // SAFETY: as above.
        let db = unsafe { ctx.get_connection()? };
        Ok(total_changes(&db) - base.changes_base.load(Ordering::Relaxed))
    })
}

/// Marks [`Guard::stepping`] for as long as it lives.
struct Stepping<'a>(&'a Guard);

impl<'a> Stepping<'a> {
    fn start(guard: &'a Guard) -> Self {
        guard.stepping.store(true, Ordering::Relaxed);
        Stepping(guard)
    }
}

impl Drop for Stepping<'_> {
    fn drop(&mut self) {
        self.0.stepping.store(false, Ordering::Relaxed);
    }
}

/// SQLite asks this about every action of a statement it prepares.
///
/// `ATTACH` opens or creates any file the server may write, and `VACUUM INTO`
/// writes one (it attaches its target): a client may do neither, nor
/// `DETACH`. Plain `VACUUM` stays allowed: while it runs, it attaches `''`
/// (a private temporary database), which is the one attach allowed, and
/// only while a statement is being stepped, so never a client's own
/// `ATTACH`, which is refused when it is prepared.
fn authorize(ctx: &AuthContext<'_>, guard: &Guard) -> Authorization {
    match ctx.action {
        AuthAction::Attach { filename: "" } if guard.stepping.load(Ordering::Relaxed) => {
            Authorization::Allow
        }
        AuthAction::Attach { .. } | AuthAction::Detach { .. } => Authorization::Deny,
        AuthAction::Unknown { code, .. }
            if code == libsql_sys::ffi::SQLITE_ATTACH || code == libsql_sys::ffi::SQLITE_DETACH =>
        {
            Authorization::Deny
        }
        AuthAction::Pragma {
            pragma_name,
            pragma_value: Some(_),
        } => {
            let flag = if POOL_SAFE_PRAGMAS
                .iter()
                .any(|p| p.eq_ignore_ascii_case(pragma_name))
            {
                &guard.settings_changed
            } else {
                &guard.unfit_for_pool
            };
            flag.store(true, Ordering::Relaxed);
            Authorization::Allow
        }
        AuthAction::CreateTempTable { .. }
        | AuthAction::CreateTempIndex { .. }
        | AuthAction::CreateTempTrigger { .. }
        | AuthAction::CreateTempView { .. } => {
            guard.temp_schema.store(true, Ordering::Relaxed);
            Authorization::Allow
        }
        _ => Authorization::Allow,
    }
}

/// SQLite's own busy timeout sleeps in growing steps (up to 100 ms), which
/// shows as long tail latency under write contention. Retry every
/// millisecond instead, for up to [`BUSY_TIMEOUT`].
fn retry_while_busy(attempt: i32) -> bool {
    if u128::try_from(attempt).unwrap_or(u128::MAX) >= BUSY_TIMEOUT.as_millis() {
        return false;
    }
    std::thread::sleep(Duration::from_millis(1));
    true
}

/// The server side of one Hrana stream.
pub struct Session {
    conn: Connection,
    stored_sql: HashMap<i32, String>,
    write_queue: Arc<Mutex<()>>,
    counter_updates: Arc<AtomicU64>,
    /// This session holds its turn in `write_queue` (for a whole batch).
    in_turn: bool,
    guard: Arc<Guard>,
}

impl Session {
    pub fn is_autocommit(&self) -> bool {
        self.conn.is_autocommit()
    }

    /// Makes a session that is being returned to the pool look new: no open
    /// transaction, no stored SQL, the connection [`SETTINGS`]. Returns
    /// false when that cannot be done and the connection must be closed
    /// instead: the transaction would not end, the client set a pragma not
    /// in [`POOL_SAFE_PRAGMAS`], or it left temporary tables, views or
    /// triggers or an attached database behind.
    ///
    /// The checks that cost statements run only when the authorizer saw
    /// the client do something they undo: most streams (a pipeline that
    /// reads or writes rows) go back to the pool at no cost.
    pub fn reset(&mut self) -> bool {
        self.stored_sql.clear();
        if self.guard.unfit_for_pool.load(Ordering::Relaxed) {
            return false;
        }
        if !self.conn.is_autocommit() && self.conn.execute_batch("ROLLBACK").is_err() {
            return false;
        }
        if self.guard.temp_schema.load(Ordering::Relaxed) {
            if !matches!(self.has_own_schema(), Ok(false)) {
                return false;
            }
            self.guard.temp_schema.store(false, Ordering::Relaxed);
        }
        if self.guard.settings_changed.load(Ordering::Relaxed) {
            let configured = configure(&self.conn).is_ok();
            // Our own pragmas pass the authorizer too.
            self.guard.settings_changed.store(false, Ordering::Relaxed);
            if !configured {
                return false;
            }
        }
        self.forget_client();
        true
    }

    /// Clears what SQLite keeps per connection about the last client's
    /// statements: `last_insert_rowid()` is 0 and `changes()` and
    /// `total_changes()` count from now, as on a new connection.
    fn forget_client(&self) {
        // SAFETY: the handle belongs to `self.conn`, which is open.
        unsafe { libsql_sys::ffi::sqlite3_set_last_insert_rowid(self.conn.handle(), 0) };
        self.guard
            .changes_base
            .store(total_changes(&self.conn), Ordering::Relaxed);
    }

    /// Whether the connection holds schema of its own: an attached database,
    /// or objects in `temp`.
    fn has_own_schema(&self) -> Result<bool, rusqlite::Error> {
        let mut list = self.conn.prepare("PRAGMA database_list")?;
        let names = list
            .query_map([], |row| row.get::<_, String>(1))?
            .collect::<Result<Vec<_>, _>>()?;
        if names.iter().any(|n| n != "main" && n != "temp") {
            return Ok(true);
        }
        let temp_objects: i64 =
            self.conn
                .query_row("SELECT count(*) FROM temp.sqlite_schema", [], |row| {
                    row.get(0)
                })?;
        Ok(temp_objects > 0)
    }

    /// Handles one request of a pipeline. `close` is answered here but the
    /// caller ends the stream.
    pub fn handle(&mut self, request: StreamRequest) -> Result<StreamResponse, HranaError> {
        use libsql_hrana::proto::*;
        match request {
            StreamRequest::None => Err(error("ARGS_INVALID", "missing request type")),
            StreamRequest::Close(_) => Ok(StreamResponse::Close(CloseStreamResp {})),
            StreamRequest::Execute(req) => {
                let result = self.execute(&req.stmt)?;
                Ok(StreamResponse::Execute(ExecuteStreamResp { result }))
            }
            StreamRequest::Batch(req) => {
                let result = self.batch(&req.batch)?;
                Ok(StreamResponse::Batch(BatchStreamResp { result }))
            }
            StreamRequest::Sequence(req) => {
                let sql = self.sql_text(req.sql.as_deref(), req.sql_id)?.to_owned();
                self.sequence(&sql)?;
                Ok(StreamResponse::Sequence(SequenceStreamResp {}))
            }
            StreamRequest::Describe(req) => {
                let sql = self.sql_text(req.sql.as_deref(), req.sql_id)?.to_owned();
                let result = self.describe(&sql)?;
                Ok(StreamResponse::Describe(DescribeStreamResp { result }))
            }
            StreamRequest::StoreSql(req) => {
                if !self.stored_sql.contains_key(&req.sql_id)
                    && self.stored_sql.len() >= MAX_STORED_SQL
                {
                    return Err(error(
                        "SQL_STORE_TOO_MANY",
                        format!("a stream may store at most {MAX_STORED_SQL} SQL texts; close some with close_sql"),
                    ));
                }
                self.stored_sql.insert(req.sql_id, req.sql);
                Ok(StreamResponse::StoreSql(StoreSqlStreamResp {}))
            }
            StreamRequest::CloseSql(req) => {
                self.stored_sql.remove(&req.sql_id);
                Ok(StreamResponse::CloseSql(CloseSqlStreamResp {}))
            }
            StreamRequest::GetAutocommit(_) => {
                Ok(StreamResponse::GetAutocommit(GetAutocommitStreamResp {
                    is_autocommit: self.conn.is_autocommit(),
                }))
            }
        }
    }

    /// Runs each statement of `sql` (as `execute_batch` does: one step
    /// each), marking the steps for [`authorize`].
    fn sequence(&self, sql: &str) -> Result<(), HranaError> {
        let mut statements = rusqlite::Batch::new(&self.conn, sql);
        while let Some(mut statement) = statements.next().map_err(sqlite_error)? {
            let _stepping = Stepping::start(&self.guard);
            statement.raw_query().next().map_err(sqlite_error)?;
        }
        Ok(())
    }

    fn sql_text<'a>(
        &'a self,
        sql: Option<&'a str>,
        sql_id: Option<i32>,
    ) -> Result<&'a str, HranaError> {
        match (sql, sql_id) {
            (Some(sql), None) => Ok(sql),
            (None, Some(id)) => self.stored_sql.get(&id).map(String::as_str).ok_or_else(|| {
                error(
                    "SQL_NOT_FOUND",
                    format!("no SQL text is stored under sql_id {id}"),
                )
            }),
            (Some(_), Some(_)) => Err(error(
                "ARGS_INVALID",
                "give either `sql` or `sql_id`, not both",
            )),
            (None, None) => Err(error("ARGS_INVALID", "give `sql` or `sql_id`")),
        }
    }

    /// Executes one statement and collects its rows.
    pub fn execute(&mut self, stmt: &Stmt) -> Result<StmtResult, HranaError> {
        let mut result = StmtResult {
            cols: vec![],
            rows: vec![],
            affected_row_count: 0,
            last_insert_rowid: None,
            replication_index: None,
            rows_read: 0,
            rows_written: 0,
            query_duration_ms: 0.0,
        };
        let want_rows = stmt.want_rows.unwrap_or(true);
        let started = std::time::Instant::now();
        let mut bytes = 0usize;
        let end = self.run(stmt, |event| match event {
            RunEvent::Columns(cols) => result.cols = cols,
            RunEvent::Row(row) => {
                if want_rows && bytes <= MAX_RESULT_BYTES {
                    bytes += row.values.iter().map(value_size).sum::<usize>();
                    result.rows.push(row)
                }
            }
        })?;
        if bytes > MAX_RESULT_BYTES {
            return Err(error(
                "RESPONSE_TOO_LARGE",
                format!("the result is larger than {MAX_RESULT_BYTES} bytes; page it with LIMIT or read it through /v3/cursor"),
            ));
        }
        result.affected_row_count = end.affected_row_count;
        result.last_insert_rowid = end.last_insert_rowid;
        result.query_duration_ms = started.elapsed().as_secs_f64() * 1000.0;
        Ok(result)
    }

    /// Executes a batch, evaluating each step's condition against the steps
    /// before it.
    pub fn batch(&mut self, batch: &Batch) -> Result<BatchResult, HranaError> {
        validate_batch(batch)?;
        // A batch that opens a write transaction (`BEGIN IMMEDIATE`, as
        // clients wrap atomic batches) waits its turn with the lone writes
        // for the whole batch, instead of spinning on SQLITE_BUSY against
        // them.
        let opens_write = batch.steps.first().is_some_and(|s| {
            s.condition.is_none()
                && s.stmt.sql.as_deref().is_some_and(|sql| {
                    let sql = sql.trim_start().to_ascii_uppercase();
                    sql.starts_with("BEGIN IMMEDIATE") || sql.starts_with("BEGIN EXCLUSIVE")
                })
        });
        let queue = self.write_queue.clone();
        let turn = (opens_write && self.conn.is_autocommit())
            .then(|| queue.lock().unwrap_or_else(|p| p.into_inner()));
        self.in_turn = turn.is_some();
        let result = self.run_batch(batch);
        self.in_turn = false;
        drop(turn);
        result
    }

    fn run_batch(&mut self, batch: &Batch) -> Result<BatchResult, HranaError> {
        let mut result = BatchResult {
            step_results: Vec::with_capacity(batch.steps.len()),
            step_errors: Vec::with_capacity(batch.steps.len()),
            replication_index: None,
        };
        for step in &batch.steps {
            let run = match &step.condition {
                None => true,
                Some(cond) => self.eval_cond(cond, &result.step_results, &result.step_errors),
            };
            if !run {
                result.step_results.push(None);
                result.step_errors.push(None);
                continue;
            }
            match self.execute(&step.stmt) {
                Ok(r) => {
                    result.step_results.push(Some(r));
                    result.step_errors.push(None);
                }
                Err(e) => {
                    result.step_results.push(None);
                    result.step_errors.push(Some(e));
                }
            }
        }
        Ok(result)
    }

    /// Executes a batch as a cursor: entries are handed to `emit` as they are
    /// produced. `emit` returns false when the reader has gone away, which
    /// stops the batch.
    pub fn batch_cursor(&mut self, batch: &Batch, mut emit: impl FnMut(CursorEntry) -> bool) {
        if let Err(e) = validate_batch(batch) {
            emit(CursorEntry::Error { error: e });
            return;
        }
        // For conditions only success or failure matters, so keep flags.
        let mut oks: Vec<Option<()>> = Vec::with_capacity(batch.steps.len());
        let mut errs: Vec<Option<()>> = Vec::with_capacity(batch.steps.len());
        for (index, step) in batch.steps.iter().enumerate() {
            let run = match &step.condition {
                None => true,
                Some(cond) => self.eval_cond(cond, &oks, &errs),
            };
            if !run {
                oks.push(None);
                errs.push(None);
                continue;
            }
            let step_no = index as u32;
            let want_rows = step.stmt.want_rows.unwrap_or(true);
            let mut alive = true;
            let outcome = self.run(&step.stmt, |event| {
                if !alive {
                    return;
                }
                alive = match event {
                    RunEvent::Columns(cols) => emit(CursorEntry::StepBegin(StepBeginEntry {
                        step: step_no,
                        cols,
                    })),
                    RunEvent::Row(row) if want_rows => emit(CursorEntry::Row { row }),
                    RunEvent::Row(_) => true,
                };
            });
            if !alive {
                return;
            }
            match outcome {
                Ok(end) => {
                    oks.push(Some(()));
                    errs.push(None);
                    if !emit(CursorEntry::StepEnd(StepEndEntry {
                        affected_row_count: end.affected_row_count,
                        last_insert_rowid: end.last_insert_rowid,
                    })) {
                        return;
                    }
                }
                Err(error) => {
                    oks.push(None);
                    errs.push(Some(()));
                    if !emit(CursorEntry::StepError(StepErrorEntry {
                        step: step_no,
                        error,
                    })) {
                        return;
                    }
                }
            }
        }
    }

    fn eval_cond<T, E>(&self, cond: &BatchCond, oks: &[Option<T>], errs: &[Option<E>]) -> bool {
        match cond {
            BatchCond::None => false,
            BatchCond::Ok { step } => oks.get(*step as usize).is_some_and(Option::is_some),
            BatchCond::Error { step } => errs.get(*step as usize).is_some_and(Option::is_some),
            BatchCond::Not { cond } => !self.eval_cond(cond, oks, errs),
            BatchCond::And(list) => list.conds.iter().all(|c| self.eval_cond(c, oks, errs)),
            BatchCond::Or(list) => list.conds.iter().any(|c| self.eval_cond(c, oks, errs)),
            BatchCond::IsAutocommit {} => self.conn.is_autocommit(),
        }
    }

    fn describe(&self, sql: &str) -> Result<DescribeResult, HranaError> {
        let stmt = self.prepare(sql)?;
        let params = (1..=stmt.parameter_count())
            .map(|i| DescribeParam {
                name: stmt.parameter_name(i).map(str::to_owned),
            })
            .collect();
        let cols = stmt
            .columns()
            .iter()
            .map(|c| DescribeCol {
                name: c.name().to_owned(),
                decltype: c.decl_type().map(str::to_owned),
            })
            .collect();
        Ok(DescribeResult {
            params,
            cols,
            is_explain: stmt.is_explain() != 0,
            is_readonly: stmt.readonly(),
        })
    }

    fn prepare(&self, sql: &str) -> Result<rusqlite::CachedStatement<'_>, HranaError> {
        if crate::sql::is_blank(sql) {
            return Err(error("SQL_NO_STATEMENT", "the SQL text holds no statement"));
        }
        // The engine would silently run only the first of several
        // statements; Hrana asks for exactly one.
        if crate::sql::has_many_statements(sql) {
            return Err(error(
                "SQL_MANY_STATEMENTS",
                "the SQL text holds more than one statement; use a batch or a sequence",
            ));
        }
        self.conn.prepare_cached(sql).map_err(sqlite_error)
    }

    /// Prepares, binds and steps one statement, reporting columns and rows to
    /// `on_event`.
    fn run(&self, stmt: &Stmt, mut on_event: impl FnMut(RunEvent)) -> Result<StepEnd, HranaError> {
        let sql = self.sql_text(stmt.sql.as_deref(), stmt.sql_id)?;
        let mut prepared = self.prepare(sql)?;
        bind_args(&mut prepared, stmt)?;
        let readonly = prepared.readonly();
        // Inside an explicit transaction the write lock is SQLite's business
        // (the transaction may hold it across requests); a lone write waits
        // its turn here.
        let _turn = (!readonly && !self.in_turn && self.conn.is_autocommit())
            .then(|| self.write_queue.lock().unwrap_or_else(|p| p.into_inner()));
        let cols: Vec<Col> = prepared
            .columns()
            .iter()
            .map(|c| Col {
                name: Some(c.name().to_owned()),
                decltype: c.decl_type().map(str::to_owned),
            })
            .collect();
        let width = cols.len();
        on_event(RunEvent::Columns(cols));
        let stepping = Stepping::start(&self.guard);
        let mut rows = prepared.raw_query();
        loop {
            match rows.next() {
                Ok(Some(row)) => {
                    let mut values = Vec::with_capacity(width);
                    for i in 0..width {
                        let value = row.get_ref(i).map_err(sqlite_error)?;
                        values.push(to_hrana(value));
                    }
                    on_event(RunEvent::Row(Row { values }));
                }
                Ok(None) => break,
                Err(e) => return Err(sqlite_error(e)),
            }
        }
        drop(rows);
        drop(stepping);
        if !readonly && is_counter_update(sql) {
            self.counter_updates.fetch_add(1, Ordering::Relaxed);
        }
        // As sqld: the rows changed only for INSERT, UPDATE and DELETE
        // (SQLite leaves the count of the last such statement in place
        // through any other), and the last inserted rowid only for an INSERT.
        let verb = crate::sql::verb(sql);
        let changes_rows = !readonly && matches!(verb, Some(Verb::Insert | Verb::Change));
        Ok(StepEnd {
            affected_row_count: if changes_rows { self.conn.changes() } else { 0 },
            last_insert_rowid: (verb == Some(Verb::Insert)).then(|| self.conn.last_insert_rowid()),
        })
    }
}

/// Roughly how many bytes a value adds to a JSON response.
fn value_size(value: &libsql_hrana::proto::Value) -> usize {
    use libsql_hrana::proto::Value;
    match value {
        Value::Text { value } => value.len() + 16,
        Value::Blob { value } => value.len() * 4 / 3 + 16,
        _ => 24,
    }
}

enum RunEvent {
    Columns(Vec<Col>),
    Row(Row),
}

struct StepEnd {
    affected_row_count: u64,
    last_insert_rowid: Option<i64>,
}

/// A condition may only look at steps that run before its own.
fn validate_batch(batch: &Batch) -> Result<(), HranaError> {
    fn check(cond: &BatchCond, current: u32) -> Result<(), HranaError> {
        match cond {
            BatchCond::Ok { step } | BatchCond::Error { step } if *step >= current => Err(error(
                "BATCH_COND_INVALID",
                format!("the condition of step {current} refers to step {step}, which does not run before it"),
            )),
            BatchCond::Not { cond } => check(cond, current),
            BatchCond::And(list) | BatchCond::Or(list) => {
                list.conds.iter().try_for_each(|c| check(c, current))
            }
            _ => Ok(()),
        }
    }
    for (i, step) in batch.steps.iter().enumerate() {
        if let Some(cond) = &step.condition {
            check(cond, i as u32)?;
        }
    }
    Ok(())
}

/// Binds positional then named arguments. As the Hrana spec asks, an
/// argument the statement does not take, or a parameter left without an
/// argument, is an error; a named argument wins over a positional one.
fn bind_args(prepared: &mut rusqlite::Statement<'_>, stmt: &Stmt) -> Result<(), HranaError> {
    let count = prepared.parameter_count();
    if stmt.args.len() > count {
        return Err(error(
            "ARGS_INVALID",
            format!(
                "{} positional arguments given but the statement takes {count}",
                stmt.args.len()
            ),
        ));
    }
    let mut bound = vec![false; count + 1];
    for (i, value) in stmt.args.iter().enumerate() {
        bind_one(prepared, i + 1, value)?;
        bound[i + 1] = true;
    }
    for arg in &stmt.named_args {
        let index = named_index(prepared, &arg.name)?.ok_or_else(|| {
            error(
                "ARGS_INVALID",
                format!("the statement has no parameter named `{}`", arg.name),
            )
        })?;
        bind_one(prepared, index, &arg.value)?;
        bound[index] = true;
    }
    if let Some(missing) = (1..=count).find(|i| !bound[*i]) {
        let name = prepared
            .parameter_name(missing)
            .map(|n| format!(" `{n}`"))
            .unwrap_or_default();
        return Err(error(
            "ARGS_INVALID",
            format!("no argument given for parameter {missing}{name}"),
        ));
    }
    Ok(())
}

fn named_index(
    prepared: &rusqlite::Statement<'_>,
    name: &str,
) -> Result<Option<usize>, HranaError> {
    if name.starts_with([':', '@', '$']) {
        return prepared.parameter_index(name).map_err(sqlite_error);
    }
    for prefix in [':', '@', '$'] {
        if let Some(i) = prepared
            .parameter_index(&format!("{prefix}{name}"))
            .map_err(sqlite_error)?
        {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

fn bind_one(
    prepared: &mut rusqlite::Statement<'_>,
    index: usize,
    value: &libsql_hrana::proto::Value,
) -> Result<(), HranaError> {
    use libsql_hrana::proto::Value;
    let bound = match value {
        Value::None | Value::Null => prepared.raw_bind_parameter(index, rusqlite::types::Null),
        Value::Integer { value } => prepared.raw_bind_parameter(index, value),
        Value::Float { value } => prepared.raw_bind_parameter(index, value),
        Value::Text { value } => prepared.raw_bind_parameter(index, &**value),
        Value::Blob { value } => prepared.raw_bind_parameter(index, &value[..]),
    };
    bound.map_err(sqlite_error)
}

fn to_hrana(value: ValueRef<'_>) -> libsql_hrana::proto::Value {
    use libsql_hrana::proto::Value;
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(value) => Value::Integer { value },
        ValueRef::Real(value) => Value::Float { value },
        // SQLite does not check that TEXT is UTF-8; JSON must be.
        ValueRef::Text(bytes) => Value::Text {
            value: String::from_utf8_lossy(bytes).into(),
        },
        ValueRef::Blob(bytes) => Value::Blob {
            value: Bytes::copy_from_slice(bytes),
        },
    }
}

pub fn error(code: &str, message: impl Into<String>) -> HranaError {
    HranaError {
        message: message.into(),
        code: code.to_owned(),
    }
}

/// Maps an engine error to a Hrana error whose code names the SQLite primary
/// result code (`SQLITE_CONSTRAINT`, `SQLITE_BUSY`, ...), as sqld does.
pub fn sqlite_error(e: rusqlite::Error) -> HranaError {
    match &e {
        rusqlite::Error::SqliteFailure(failure, message) => {
            let code = result_code_name(failure.extended_code);
            let message = message.clone().unwrap_or_else(|| failure.to_string());
            error(code, format!("{code}: {message}{}", hint(code)))
        }
        rusqlite::Error::InvalidParameterName(_) | rusqlite::Error::InvalidParameterCount(..) => {
            error("ARGS_INVALID", e.to_string())
        }
        rusqlite::Error::SqlInputError {
            error: failure,
            msg,
            offset,
            ..
        } => {
            let code = result_code_name(failure.extended_code);
            error(
                code,
                format!("{code}: {msg} (at offset {offset}){}", hint(code)),
            )
        }
        _ => error("SQLITE_ERROR", e.to_string()),
    }
}

/// What an error message adds for a code that needs explaining.
fn hint(code: &str) -> &'static str {
    match code {
        // Only `authorize` refuses statements.
        "SQLITE_AUTH" => {
            "; ATTACH, DETACH and VACUUM INTO are refused: they open or write other files on the server"
        }
        _ => "",
    }
}

/// The name of a SQLite primary result code (the low 8 bits of an extended code).
pub fn result_code_name(extended_code: i32) -> &'static str {
    match extended_code & 0xff {
        1 => "SQLITE_ERROR",
        2 => "SQLITE_INTERNAL",
        3 => "SQLITE_PERM",
        4 => "SQLITE_ABORT",
        5 => "SQLITE_BUSY",
        6 => "SQLITE_LOCKED",
        7 => "SQLITE_NOMEM",
        8 => "SQLITE_READONLY",
        9 => "SQLITE_INTERRUPT",
        10 => "SQLITE_IOERR",
        11 => "SQLITE_CORRUPT",
        12 => "SQLITE_NOTFOUND",
        13 => "SQLITE_FULL",
        14 => "SQLITE_CANTOPEN",
        15 => "SQLITE_PROTOCOL",
        16 => "SQLITE_EMPTY",
        17 => "SQLITE_SCHEMA",
        18 => "SQLITE_TOOBIG",
        19 => "SQLITE_CONSTRAINT",
        20 => "SQLITE_MISMATCH",
        21 => "SQLITE_MISUSE",
        22 => "SQLITE_NOLFS",
        23 => "SQLITE_AUTH",
        24 => "SQLITE_FORMAT",
        25 => "SQLITE_RANGE",
        26 => "SQLITE_NOTADB",
        _ => "SQLITE_UNKNOWN",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use libsql_hrana::proto::{BatchCondList, BatchStep, Value};

    fn session() -> (tempfile::TempDir, Session) {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open(&dir.path().join("t.db")).expect("open");
        let session = engine.session().expect("session");
        (dir, session)
    }

    /// Which of the reset's checks a stream makes necessary: none for rows
    /// read and written, the settings for a safe pragma (put back, then
    /// clear again), the schema check for a temporary object.
    #[test]
    fn a_reset_does_only_the_work_the_stream_made_necessary() {
        let (_d, mut s) = session();
        let flags = |s: &Session| {
            (
                s.guard.settings_changed.load(Ordering::Relaxed),
                s.guard.temp_schema.load(Ordering::Relaxed),
            )
        };
        s.execute(&stmt("CREATE TABLE t (x)", vec![]))
            .expect("create");
        s.execute(&stmt("INSERT INTO t VALUES (1)", vec![]))
            .expect("insert");
        s.execute(&stmt("SELECT * FROM t", vec![])).expect("select");
        assert_eq!(flags(&s), (false, false), "rows alone need no checks");
        assert!(s.reset());

        s.execute(&stmt("PRAGMA foreign_keys=OFF", vec![]))
            .expect("pragma");
        assert_eq!(flags(&s), (true, false));
        assert!(s.reset());
        assert_eq!(flags(&s), (false, false), "our own pragmas do not count");
        let on: i64 = s
            .conn
            .query_row("PRAGMA foreign_keys", [], |r| r.get(0))
            .expect("read");
        assert_eq!(on, 1, "put back");

        s.execute(&stmt("CREATE TEMP TABLE scratch (y)", vec![]))
            .expect("temp");
        assert_eq!(flags(&s), (false, true));
        assert!(
            !s.reset(),
            "a temporary table keeps the connection from the pool"
        );
    }

    fn stmt(sql: &str, args: Vec<Value>) -> Stmt {
        let mut s = Stmt::new(sql, true);
        s.args = args;
        s
    }

    #[test]
    fn values_round_trip_through_a_table() {
        let (_dir, mut s) = session();
        s.execute(&stmt("CREATE TABLE t (v)", vec![]))
            .expect("create");
        let values = vec![
            Value::Null,
            Value::Integer { value: i64::MIN },
            Value::Integer { value: i64::MAX },
            Value::Float { value: -1.5e300 },
            Value::Text {
                value: "zoë ✊ \"quoted\"\n".into(),
            },
            Value::Blob {
                value: Bytes::from_static(&[0, 255, 1, 2]),
            },
        ];
        for v in &values {
            s.execute(&stmt("INSERT INTO t VALUES (?)", vec![v.clone()]))
                .expect("insert");
        }
        let out = s
            .execute(&stmt("SELECT v FROM t ORDER BY rowid", vec![]))
            .expect("select");
        let got: Vec<String> = out
            .rows
            .iter()
            .map(|r| format!("{:?}", r.values[0]))
            .collect();
        let want: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
        assert_eq!(got, want);
    }

    #[test]
    fn oversized_results_are_refused_not_buffered() {
        let (_dir, mut s) = session();
        let e = s
            .execute(&stmt(
                "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 30) \
                 SELECT zeroblob(1000000) FROM c",
                vec![],
            ))
            .unwrap_err();
        assert_eq!(e.code, "RESPONSE_TOO_LARGE");
        assert!(
            s.execute(&stmt("SELECT 1", vec![])).is_ok(),
            "the stream goes on"
        );
    }

    #[test]
    fn missing_and_extra_arguments_are_errors() {
        let (_dir, mut s) = session();
        let e = s
            .execute(&stmt("SELECT ?, ?", vec![Value::Null]))
            .unwrap_err();
        assert_eq!(e.code, "ARGS_INVALID");
        let e = s
            .execute(&stmt("SELECT ?", vec![Value::Null, Value::Null]))
            .unwrap_err();
        assert_eq!(e.code, "ARGS_INVALID");
    }

    #[test]
    fn named_arguments_find_their_prefix() {
        let (_dir, mut s) = session();
        let mut q = stmt("SELECT :a + @b", vec![]);
        q.bind_named("a".into(), Value::Integer { value: 2 });
        q.bind_named("@b".into(), Value::Integer { value: 3 });
        let r = s.execute(&q).expect("execute");
        assert!(matches!(r.rows[0].values[0], Value::Integer { value: 5 }));
    }

    #[test]
    fn counter_updates_are_counted_when_they_run() {
        assert!(is_counter_update(
            "update  issues\n SET rioter_count = rioter_count + 1"
        ));
        assert!(!is_counter_update("UPDATE issues SET name = 'x'"));
        assert!(!is_counter_update(
            "UPDATE issue_organisation SET rioter_count = 1"
        ));
        let (_dir, mut s) = session();
        s.execute(&stmt(
            "CREATE TABLE issues (id INTEGER PRIMARY KEY, rioter_count INTEGER)",
            vec![],
        ))
        .expect("create");
        s.execute(&stmt("INSERT INTO issues VALUES (1, 0)", vec![]))
            .expect("insert");
        for _ in 0..3 {
            s.execute(&stmt(
                "UPDATE issues SET rioter_count = rioter_count + 1",
                vec![],
            ))
            .expect("update");
        }
        assert!(s
            .execute(&stmt("UPDATE issues SET rioter_count = x", vec![]))
            .is_err());
        assert_eq!(s.counter_updates.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_transaction_batch_holds_the_write_turn_without_deadlocking() {
        let (_dir, mut s) = session();
        s.execute(&stmt("CREATE TABLE t (x INTEGER)", vec![]))
            .expect("create");
        let batch = crate::client::transaction_batch(vec![
            stmt("INSERT INTO t VALUES (1)", vec![]),
            stmt("INSERT INTO t VALUES (2)", vec![]),
        ]);
        // Runs on another thread so that a deadlock fails the test instead
        // of hanging it.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let r = s
                .batch(&batch)
                .map(|r| r.step_errors.iter().all(Option::is_none));
            let after = s.execute(&stmt("INSERT INTO t VALUES (3)", vec![])).is_ok();
            let _ = tx.send((r, after));
        });
        let (r, after) = rx
            .recv_timeout(std::time::Duration::from_secs(10))
            .expect("the batch finished");
        assert!(r.expect("batch"), "every step succeeded");
        assert!(after, "the turn was given back");
    }

    #[test]
    fn batch_conditions_follow_earlier_steps() {
        let (_dir, mut s) = session();
        let step = |sql: &str, condition: Option<BatchCond>| BatchStep {
            condition,
            stmt: stmt(sql, vec![]),
        };
        let batch = Batch {
            steps: vec![
                step("SELECT 1", None),
                step("SELECT nope", None),
                step("SELECT 3", Some(BatchCond::Ok { step: 1 })),
                step(
                    "SELECT 4",
                    Some(BatchCond::And(BatchCondList {
                        conds: vec![BatchCond::Ok { step: 0 }, BatchCond::Error { step: 1 }],
                    })),
                ),
                step(
                    "SELECT 5",
                    Some(BatchCond::Not {
                        cond: Box::new(BatchCond::IsAutocommit {}),
                    }),
                ),
            ],
            replication_index: None,
        };
        let r = s.batch(&batch).expect("batch");
        let ran: Vec<bool> = r.step_results.iter().map(Option::is_some).collect();
        assert_eq!(ran, vec![true, false, false, true, false]);
        assert!(r.step_errors[1].is_some());
        assert!(r.step_errors[2].is_none(), "a skipped step has no error");
    }

    #[test]
    fn an_or_condition_runs_its_step_when_any_part_holds() {
        let (_dir, mut s) = session();
        let step = |sql: &str, condition: Option<BatchCond>| BatchStep {
            condition,
            stmt: stmt(sql, vec![]),
        };
        let or = |conds: Vec<BatchCond>| Some(BatchCond::Or(BatchCondList { conds }));
        let batch = Batch {
            steps: vec![
                step("SELECT 1", None),
                step("SELECT nope", None),
                step(
                    "SELECT 'one holds'",
                    or(vec![
                        BatchCond::Ok { step: 1 },
                        BatchCond::Error { step: 1 },
                    ]),
                ),
                step(
                    "SELECT 'none holds'",
                    or(vec![
                        BatchCond::Ok { step: 1 },
                        BatchCond::Not {
                            cond: Box::new(BatchCond::Ok { step: 0 }),
                        },
                    ]),
                ),
                step("SELECT 'empty'", or(vec![])),
                step(
                    "SELECT 'nested'",
                    or(vec![
                        BatchCond::Ok { step: 3 },
                        BatchCond::And(BatchCondList {
                            conds: vec![BatchCond::Ok { step: 2 }, BatchCond::IsAutocommit {}],
                        }),
                    ]),
                ),
            ],
            replication_index: None,
        };
        let r = s.batch(&batch).expect("batch");
        let ran: Vec<bool> = r.step_results.iter().map(Option::is_some).collect();
        assert_eq!(ran, vec![true, false, true, false, false, true]);
        let later = Batch {
            steps: vec![step(
                "SELECT 1",
                or(vec![
                    BatchCond::IsAutocommit {},
                    BatchCond::Error { step: 0 },
                ]),
            )],
            replication_index: None,
        };
        assert_eq!(
            s.batch(&later).unwrap_err().code,
            "BATCH_COND_INVALID",
            "every part of an or is checked"
        );
    }

    #[test]
    fn a_condition_on_a_later_step_is_rejected() {
        let (_dir, mut s) = session();
        let batch = Batch {
            steps: vec![BatchStep {
                condition: Some(BatchCond::Ok { step: 0 }),
                stmt: stmt("SELECT 1", vec![]),
            }],
            replication_index: None,
        };
        assert_eq!(s.batch(&batch).unwrap_err().code, "BATCH_COND_INVALID");
    }

    #[test]
    fn a_write_blocked_by_a_transaction_fails_busy_after_the_timeout() {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open(&dir.path().join("b.db")).expect("open");
        let (mut holder, mut writer) = (engine.session().expect("a"), engine.session().expect("b"));
        holder
            .execute(&stmt("CREATE TABLE t (x)", vec![]))
            .expect("create");
        holder
            .execute(&stmt("BEGIN IMMEDIATE", vec![]))
            .expect("begin");
        let started = std::time::Instant::now();
        let e = writer
            .execute(&stmt("INSERT INTO t VALUES (1)", vec![]))
            .unwrap_err();
        assert_eq!(e.code, "SQLITE_BUSY");
        assert!(
            started.elapsed() >= BUSY_TIMEOUT,
            "waited for the lock first"
        );
        holder.execute(&stmt("COMMIT", vec![])).expect("commit");
        writer
            .execute(&stmt("INSERT INTO t VALUES (1)", vec![]))
            .expect("free again");
    }

    #[test]
    fn a_string_of_many_semicolons_is_one_statement_answered_promptly() {
        // Within the default 10 MiB body cap; the old check asked
        // sqlite3_complete() about the whole prefix at every `;`.
        let (dir, mut s) = session();
        let text = ";".repeat(4 << 20);
        let sql = format!("SELECT '{text}'");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(s.execute(&stmt(&sql, vec![])));
        });
        let r = rx
            .recv_timeout(std::time::Duration::from_secs(20))
            .expect("answered within 20 s")
            .expect("one statement");
        assert!(matches!(&r.rows[0].values[0], Value::Text { value } if **value == *text));
        drop(dir);
    }

    #[test]
    fn attach_detach_and_vacuum_into_are_refused() {
        let (dir, mut s) = session();
        s.execute(&stmt("CREATE TABLE t (x)", vec![]))
            .expect("create");
        let target = dir.path().join("elsewhere.db");
        let name = target.display().to_string();
        let refused = [
            stmt(&format!("ATTACH '{name}' AS other"), vec![]),
            stmt(
                "ATTACH ? AS other",
                vec![Value::Text {
                    value: name.as_str().into(),
                }],
            ),
            stmt("ATTACH '' AS scratch", vec![]),
            stmt("ATTACH ':memory:' AS scratch", vec![]),
            stmt("DETACH temp", vec![]),
            stmt(&format!("VACUUM INTO '{name}'"), vec![]),
            stmt(
                "VACUUM INTO ?",
                vec![Value::Text {
                    value: name.as_str().into(),
                }],
            ),
        ];
        for q in &refused {
            let e = s.execute(q).unwrap_err();
            assert_eq!(e.code, "SQLITE_AUTH", "{:?}: {e:?}", q.sql);
            assert!(
                e.message.contains("ATTACH, DETACH and VACUUM INTO"),
                "{e:?}"
            );
        }
        let in_sequence = s.handle(StreamRequest::Sequence(
            libsql_hrana::proto::SequenceStreamReq {
                sql: Some(format!(
                    "INSERT INTO t VALUES (1); ATTACH '{name}' AS other;"
                )),
                sql_id: None,
                replication_index: None,
            },
        ));
        assert_eq!(in_sequence.unwrap_err().code, "SQLITE_AUTH");
        assert!(!target.exists(), "no file was created");
        // Plain VACUUM still works, alone and in a sequence.
        s.execute(&stmt("VACUUM", vec![])).expect("vacuum");
        s.handle(StreamRequest::Sequence(
            libsql_hrana::proto::SequenceStreamReq {
                sql: Some("VACUUM; SELECT 1;".into()),
                sql_id: None,
                replication_index: None,
            },
        ))
        .expect("vacuum in a sequence");
        assert!(!target.exists());
        let r = s
            .execute(&stmt("SELECT count(*) FROM t", vec![]))
            .expect("count");
        assert!(matches!(r.rows[0].values[0], Value::Integer { value: 1 }));
    }

    #[test]
    fn constraint_errors_carry_the_sqlite_code() {
        let (_dir, mut s) = session();
        s.execute(&stmt("CREATE TABLE u (k TEXT PRIMARY KEY)", vec![]))
            .expect("create");
        s.execute(&stmt("INSERT INTO u VALUES ('a')", vec![]))
            .expect("insert");
        let e = s
            .execute(&stmt("INSERT INTO u VALUES ('a')", vec![]))
            .unwrap_err();
        assert_eq!(e.code, "SQLITE_CONSTRAINT");
        let e = s.execute(&stmt("SELEC 1", vec![])).unwrap_err();
        assert_eq!(e.code, "SQLITE_ERROR");
        let e = s.execute(&stmt("SELECT 1; SELECT 2", vec![])).unwrap_err();
        assert_eq!(e.code, "SQL_MANY_STATEMENTS");
    }
}
