//! The requests the `libsql` wasm client (0.10, feature `cloudflare`) sends
//! for the same statements, rebuilt over Hrana with our `fetch`, so a
//! benchmark can compare it with one pipeline per call. Read from the
//! client's source (`libsql::wasm::Connection`, `hrana::Statement::new`,
//! `hrana::stream`):
//!
//! - `Connection::query`, per statement, one after another on the
//!   connection's stream: `POST /v3/pipeline` `[describe]`, then `POST
//!   /v3/cursor` with the statement; each answer's baton is sent with the
//!   next request, and the stream is left open (the client never closes it).
//! - `Connection::transaction(Immediate)`, `Transaction::execute` per
//!   statement, `commit`: `[batch BEGIN IMMEDIATE, get_autocommit]` on a new
//!   stream; per statement `[describe]`, then `[batch stmt,
//!   get_autocommit]`; then `[execute COMMIT, get_autocommit, close]` (or
//!   `ROLLBACK` after a failed statement).
//!
//! Development benchmarks only: [`Db`] uses it when a request came through
//! `/__bench/per-statement/...`. [`client_reads`] runs reads through the
//! client itself (`/__bench/libsql-client/...`), to check the rebuilt
//! pattern in the real runtime.

use libsql_hrana::proto::{
    Batch, BatchResult, CloseStreamReq, CursorEntry, CursorReqBody, CursorRespBody,
    DescribeStreamReq, ExecuteStreamReq, GetAutocommitStreamReq, PipelineReqBody, PipelineRespBody,
    Stmt, StmtResult, StreamRequest, StreamResponse, StreamResult,
};

use futures::future::{select, Either};
use serde_json::Value;

use crate::http::error::{AppError, AppResult};
use crate::runtime::Timeout;
use crate::store::db::{records, statement_error, stmt, Db, Query, Record, Written};

/// One pipeline request on the stream named by `baton`; its responses, and
/// the baton for the next request.
async fn pipeline(
    db: &Db,
    baton: Option<String>,
    requests: Vec<StreamRequest>,
) -> AppResult<(Vec<StreamResponse>, Option<String>)> {
    let expected = requests.len();
    let PipelineRespBody { baton, results, .. } =
        db.send(&PipelineReqBody { baton, requests }).await?;
    if results.len() != expected {
        return Err(AppError::internal(format!(
            "the primary answered {} results for {expected} requests",
            results.len()
        )));
    }
    let responses = results
        .into_iter()
        .map(|r| match r {
            StreamResult::Ok { response } => Ok(response),
            StreamResult::Error { error } => Err(statement_error(&error)),
            StreamResult::None => Err(AppError::internal("no result from the primary")),
        })
        .collect::<AppResult<Vec<_>>>()?;
    Ok((responses, baton))
}

fn describe(sql: &str) -> StreamRequest {
    StreamRequest::Describe(DescribeStreamReq {
        sql: Some(sql.to_owned()),
        sql_id: None,
        replication_index: None,
    })
}

fn get_autocommit() -> StreamRequest {
    StreamRequest::GetAutocommit(GetAutocommitStreamReq {})
}

fn batch(stmt: Stmt) -> StreamRequest {
    StreamRequest::Batch(libsql_hrana::proto::BatchStreamReq {
        batch: Batch::single(stmt),
    })
}

/// The one step of a single-statement batch.
fn single_step(response: Option<StreamResponse>) -> AppResult<StmtResult> {
    let result: BatchResult = match response {
        Some(StreamResponse::Batch(b)) => b.result,
        other => {
            return Err(AppError::internal(format!(
                "unexpected answer to a batch: {other:?}"
            )))
        }
    };
    if let Some(Some(e)) = result.step_errors.into_iter().next() {
        return Err(statement_error(&e));
    }
    result
        .step_results
        .into_iter()
        .next()
        .flatten()
        .ok_or_else(|| AppError::internal("a batch step has no result"))
}

/// One statement through `/v3/cursor`: its rows, and the next baton.
async fn cursor(
    db: &Db,
    baton: Option<String>,
    q: &Query,
) -> AppResult<(Vec<Record>, Option<String>)> {
    let body = CursorReqBody {
        baton,
        batch: Batch::single(stmt(q)),
    };
    let json = serde_json::to_string(&body).map_err(AppError::internal)?;
    let text = db.post(&db.cursor_url(), json).await?;
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let head: CursorRespBody = lines
        .next()
        .ok_or_else(|| AppError::internal("an empty cursor answer"))
        .and_then(|l| serde_json::from_str(l).map_err(AppError::internal))?;
    let mut result = StmtResult::default();
    for line in lines {
        match serde_json::from_str::<CursorEntry>(line).map_err(AppError::internal)? {
            CursorEntry::StepBegin(b) => result.cols = b.cols,
            CursorEntry::Row { row } => result.rows.push(row),
            CursorEntry::StepEnd(e) => result.affected_row_count = e.affected_row_count,
            CursorEntry::StepError(e) => return Err(statement_error(&e.error)),
            CursorEntry::Error { error } => return Err(statement_error(&error)),
            CursorEntry::None | CursorEntry::ReplicationIndex { .. } => {}
        }
    }
    Ok((records(result), head.baton))
}

/// Independent reads as `Connection::query` sends them.
pub async fn reads(db: &Db, queries: &[Query]) -> AppResult<Vec<Vec<Record>>> {
    let mut baton = None;
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        let (_, next) = pipeline(db, baton, vec![describe(&q.sql)]).await?;
        let (rows, next) = cursor(db, next, q).await?;
        baton = next;
        out.push(rows);
    }
    Ok(out)
}

/// Statements as a transaction the client's way: begin, describe and
/// execute each, commit; rolled back after the first failure.
pub async fn transaction(db: &Db, queries: &[Query]) -> AppResult<Vec<Written>> {
    let plain = |sql: &str| Stmt::new(sql.to_owned(), false);
    let (_, mut baton) = pipeline(
        db,
        None,
        vec![batch(plain("BEGIN IMMEDIATE")), get_autocommit()],
    )
    .await?;
    let mut out = Vec::with_capacity(queries.len());
    for q in queries {
        let (_, next) = pipeline(db, baton.take(), vec![describe(&q.sql)]).await?;
        let (responses, next) = pipeline(db, next, vec![batch(stmt(q)), get_autocommit()]).await?;
        baton = next;
        match single_step(responses.into_iter().next()) {
            Ok(result) => out.push(Written {
                affected: result.affected_row_count,
                rows: records(result),
            }),
            Err(e) => {
                if let Err(r) = finish(db, baton, "ROLLBACK").await {
                    tracing::warn!(code = %r.code, "rollback after a failed statement");
                }
                return Err(e);
            }
        }
    }
    finish(db, baton, "COMMIT").await?;
    Ok(out)
}

/// `COMMIT` or `ROLLBACK` and the close of the stream, as `finalize` sends them.
async fn finish(db: &Db, baton: Option<String>, sql: &str) -> AppResult<()> {
    let execute = StreamRequest::Execute(ExecuteStreamReq {
        stmt: Stmt::new(sql.to_owned(), false),
    });
    pipeline(
        db,
        baton,
        vec![
            execute,
            get_autocommit(),
            StreamRequest::Close(CloseStreamReq {}),
        ],
    )
    .await
    .map(|_| ())
}

/// Independent reads through the `libsql` wasm client itself
/// (`Connection::open_cloudflare_worker`, one connection, `query` per
/// statement), bounded by the Db's timeout.
pub async fn client_reads(db: &Db, queries: &[Query]) -> AppResult<Vec<Vec<Record>>> {
    let (url, token) = db.endpoint();
    let conn = libsql::wasm::Connection::open_cloudflare_worker(url, token);
    let work = Box::pin(async {
        let mut out = Vec::with_capacity(queries.len());
        for q in queries {
            let mut rows = conn
                .query(&q.sql, q.args.iter().map(client_value).collect::<Vec<_>>())
                .await?;
            let names: Vec<String> = (0..rows.column_count())
                .map(|i| {
                    rows.column_name(i)
                        .map_or_else(|| format!("column{i}"), str::to_owned)
                })
                .collect();
            let mut records = Vec::new();
            while let Some(row) = rows.next().await? {
                let mut record = Record::new();
                for (i, name) in (0..).zip(&names) {
                    record.insert(name.clone(), json(row.get_value(i)?));
                }
                records.push(record);
            }
            out.push(records);
        }
        Ok::<_, libsql::Error>(out)
    });
    let outcome = select(work, Timeout::after(db.timeout())).await;
    match outcome {
        Either::Left((Ok(out), _)) => Ok(out),
        Either::Left((Err(e), _)) => Err(AppError::primary_unavailable(format!(
            "the libsql client failed: {e}"
        ))),
        Either::Right(_) => Err(AppError::primary_unavailable(format!(
            "the libsql client did not answer within {} ms",
            db.timeout().as_millis()
        ))),
    }
}

/// An argument as the `libsql` client takes it.
fn client_value(value: &crate::store::value::Value) -> libsql::Value {
    use crate::store::value::Value as H;
    match value {
        H::None | H::Null => libsql::Value::Null,
        H::Integer { value } => libsql::Value::Integer(*value),
        H::Float { value } => libsql::Value::Real(*value),
        H::Text { value } => libsql::Value::Text(value.to_string()),
        H::Blob { value } => libsql::Value::Blob(value.to_vec()),
    }
}

fn json(value: libsql::Value) -> Value {
    match value {
        libsql::Value::Null => Value::Null,
        libsql::Value::Integer(i) => Value::from(i),
        libsql::Value::Real(f) => Value::from(f),
        libsql::Value::Text(s) => Value::from(s),
        libsql::Value::Blob(b) => {
            Value::from(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
        }
    }
}
