//! The primary, over Hrana's `POST /v3/pipeline`, one HTTP round trip per
//! call, with a deadline on every call.
//!
//! Why not the `libsql` wasm client: it sends a `describe` before every
//! statement (two round trips each), cannot put several statements in one
//! request, and leaves its stream open on the server until it expires. From
//! an edge location far from the primary every round trip costs tens to
//! hundreds of milliseconds, so this module builds the same protocol
//! messages (`libsql-hrana` types) and sends all the statements a request
//! needs, plus the `close` of the stream, in one `fetch`. The request id
//! goes along as `X-Request-Id`, so the primary's logs and round-trip counts
//! line up with ours. (A build with the `bench` feature can swap in a
//! [`Baseline`], the client's request pattern, so `benches/round_trips.rs`
//! can measure the difference.)
//!
//! A hung, unreachable, refusing or overloaded primary is `503
//! primary_unavailable` (with `Retry-After`) within `DB_TIMEOUT_MS`; a failed
//! statement is a 500 whose cause is logged.

use std::cell::Cell;
use std::time::Duration;

use futures::future::{select, Either};
use libsql_hrana::proto::{
    Batch, BatchCond, BatchStep, BatchStreamReq, CloseStreamReq, ExecuteStreamReq, PipelineReqBody,
    PipelineRespBody, Stmt, StmtResult, StreamRequest, StreamResponse, StreamResult,
    Value as HranaValue,
};
use serde_json::{Map, Value};
use worker::AbortController;

use crate::http::error::{AppError, AppResult, Code};
use crate::runtime::{self, Timeout};

/// One result row as a JSON object keyed by column name.
pub type Record = Map<String, Value>;

/// A statement and its positional arguments.
#[derive(Debug, Clone)]
pub struct Query {
    pub sql: String,
    pub args: Vec<HranaValue>,
}

impl Query {
    pub fn new(sql: impl Into<String>, args: Vec<HranaValue>) -> Query {
        Query {
            sql: sql.into(),
            args,
        }
    }
}

/// Another way to send the same statements to the primary, measured
/// against this module's in the benchmarks (`bench` feature only).
#[cfg(feature = "bench")]
pub trait Baseline: Sync {
    fn reads<'a>(
        &'a self,
        db: &'a Db,
        queries: &'a [Query],
    ) -> futures::future::LocalBoxFuture<'a, AppResult<Vec<Vec<Record>>>>;

    fn transaction<'a>(
        &'a self,
        db: &'a Db,
        queries: &'a [Query],
    ) -> futures::future::LocalBoxFuture<'a, AppResult<Vec<Written>>>;
}

pub struct Db {
    pipeline_url: String,
    /// Benchmark builds only: another way to send the same statements.
    #[cfg(feature = "bench")]
    baseline: Option<&'static dyn Baseline>,
    /// The URL and token as configured (the `libsql` client baseline
    /// connects with them).
    #[cfg(feature = "bench")]
    base_url: String,
    #[cfg(feature = "bench")]
    token: Option<String>,
    /// Benchmark builds only: a modelled round trip before each request
    /// (`BENCH_HOP_DELAYS`).
    #[cfg(feature = "bench")]
    hop_delay_ms: u64,
    auth: Option<String>,
    timeout: Duration,
    request_id: String,
    /// Milliseconds spent waiting for the primary in this request.
    spent_ms: Cell<f64>,
}

/// `libsql://host` is `https://host`; the pipeline lives at `/v3/pipeline`.
pub fn pipeline_url(base: &str) -> String {
    let base = base.trim_end_matches('/');
    match base.strip_prefix("libsql://") {
        Some(host) => format!("https://{host}/v3/pipeline"),
        None => format!("{base}/v3/pipeline"),
    }
}

/// The pipeline body for independent reads: one `execute` each, then `close`.
pub fn reads_body(queries: &[Query]) -> PipelineReqBody {
    let mut requests: Vec<StreamRequest> = queries
        .iter()
        .map(|q| StreamRequest::Execute(ExecuteStreamReq { stmt: stmt(q) }))
        .collect();
    requests.push(StreamRequest::Close(CloseStreamReq {}));
    PipelineReqBody {
        baton: None,
        requests,
    }
}

/// Rows of each statement, or the first statement error.
pub fn read_results(body: PipelineRespBody, expected: usize) -> AppResult<Vec<Vec<Record>>> {
    if body.results.len() != expected + 1 {
        return Err(AppError::internal(format!(
            "the primary answered {} results for {} requests",
            body.results.len(),
            expected + 1
        )));
    }
    body.results
        .into_iter()
        .take(expected)
        .map(|result| match result {
            StreamResult::Ok {
                response: StreamResponse::Execute(r),
            } => Ok(records(r.result)),
            StreamResult::Error { error } => Err(statement_error(&error)),
            other => Err(AppError::internal(format!(
                "unexpected result from the primary: {other:?}"
            ))),
        })
        .collect()
}

/// What one statement of a transaction did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Written {
    pub rows: Vec<Record>,
    pub affected: u64,
}

pub(crate) fn stmt(q: &Query) -> Stmt {
    let mut stmt = Stmt::new(q.sql.clone(), true);
    stmt.args = q.args.clone();
    stmt
}

/// The pipeline body for statements that must apply together: one Hrana
/// batch `BEGIN IMMEDIATE`, each statement only if the one before it
/// succeeded, `COMMIT` only if all did, `ROLLBACK` if the commit did not
/// happen; then `close`. Nothing is half-applied, in one round trip.
pub fn transaction_body(queries: &[Query]) -> PipelineReqBody {
    let n = queries.len() as u32;
    let plain = |sql: &str| Stmt::new(sql.to_owned(), false);
    let mut steps = vec![BatchStep {
        condition: None,
        stmt: plain("BEGIN IMMEDIATE"),
    }];
    for (i, q) in queries.iter().enumerate() {
        steps.push(BatchStep {
            condition: Some(BatchCond::Ok { step: i as u32 }),
            stmt: stmt(q),
        });
    }
    steps.push(BatchStep {
        condition: Some(BatchCond::Ok { step: n }),
        stmt: plain("COMMIT"),
    });
    steps.push(BatchStep {
        condition: Some(BatchCond::Not {
            cond: Box::new(BatchCond::Ok { step: n + 1 }),
        }),
        stmt: plain("ROLLBACK"),
    });
    PipelineReqBody {
        baton: None,
        requests: vec![
            StreamRequest::Batch(BatchStreamReq {
                batch: Batch {
                    steps,
                    replication_index: None,
                },
            }),
            StreamRequest::Close(CloseStreamReq {}),
        ],
    }
}

/// A statement error as an AppError: a busy database is 503 (retry), a
/// constraint is 409, anything else is ours (500, logged).
pub(crate) fn statement_error(error: &libsql_hrana::proto::Error) -> AppError {
    match error.code.as_str() {
        "SQLITE_BUSY" | "SQLITE_LOCKED" => {
            AppError::primary_unavailable(format!("the database is busy: {}", error.message))
        }
        c if c.starts_with("SQLITE_CONSTRAINT") => AppError::new(
            409,
            Code::Conflict,
            "the change conflicts with existing data",
        )
        .with_details(serde_json::json!({ "reason": error.message })),
        _ => AppError::internal(format!(
            "statement failed: {} ({})",
            error.message, error.code
        )),
    }
}

/// Each statement's rows and affected-row count, or the error that made the
/// transaction roll back.
pub fn transaction_results(body: PipelineRespBody, expected: usize) -> AppResult<Vec<Written>> {
    let batch = match body.results.into_iter().next() {
        Some(StreamResult::Ok {
            response: StreamResponse::Batch(b),
        }) => b.result,
        Some(StreamResult::Error { error }) => return Err(statement_error(&error)),
        other => {
            return Err(AppError::internal(format!(
                "unexpected answer to a transaction: {other:?}"
            )))
        }
    };
    let commit = expected + 1;
    let committed = matches!(batch.step_results.get(commit), Some(Some(_)));
    if !committed {
        let first_error = batch.step_errors.iter().flatten().next();
        return Err(match first_error {
            Some(e) => statement_error(e),
            None => AppError::internal("the transaction did not commit and gave no error"),
        });
    }
    batch
        .step_results
        .into_iter()
        .skip(1)
        .take(expected)
        .map(|r| match r {
            Some(r) => Ok(Written {
                affected: r.affected_row_count,
                rows: records(r),
            }),
            None => Err(AppError::internal("a committed step has no result")),
        })
        .collect()
}

pub(crate) fn records(result: StmtResult) -> Vec<Record> {
    let names: Vec<String> = result
        .cols
        .iter()
        .enumerate()
        .map(|(i, c)| c.name.clone().unwrap_or_else(|| format!("column{i}")))
        .collect();
    result
        .rows
        .into_iter()
        .map(|row| {
            names
                .iter()
                .cloned()
                .zip(row.values.into_iter().map(to_json))
                .collect()
        })
        .collect()
}

pub(crate) fn to_json(value: HranaValue) -> Value {
    match value {
        HranaValue::None | HranaValue::Null => Value::Null,
        HranaValue::Integer { value } => Value::from(value),
        HranaValue::Float { value } => Value::from(value),
        HranaValue::Text { value } => Value::from(&*value),
        // The schema has no blobs; show one as hex rather than fail.
        HranaValue::Blob { value } => {
            Value::from(value.iter().map(|b| format!("{b:02x}")).collect::<String>())
        }
    }
}

impl Db {
    pub fn new(url: &str, token: Option<&str>, timeout: Duration, request_id: &str) -> Db {
        Db {
            pipeline_url: pipeline_url(url),
            #[cfg(feature = "bench")]
            baseline: None,
            #[cfg(feature = "bench")]
            base_url: url.to_owned(),
            #[cfg(feature = "bench")]
            token: token.map(str::to_owned),
            #[cfg(feature = "bench")]
            hop_delay_ms: 0,
            auth: token.map(|t| format!("Bearer {t}")),
            timeout,
            request_id: request_id.to_owned(),
            spent_ms: Cell::new(0.0),
        }
    }

    /// This client, sending statements the `baseline`'s way (benchmark
    /// builds only).
    #[cfg(feature = "bench")]
    pub fn with_baseline(mut self, baseline: Option<&'static dyn Baseline>) -> Db {
        self.baseline = baseline;
        self
    }

    /// This client, waiting `ms` before each request (benchmark builds
    /// only): the modelled distance to the primary.
    #[cfg(feature = "bench")]
    pub fn with_hop_delay(mut self, ms: u64) -> Db {
        self.hop_delay_ms = ms;
        self
    }

    /// The primary's URL and token, as configured.
    #[cfg(feature = "bench")]
    pub(crate) fn endpoint(&self) -> (&str, &str) {
        (&self.base_url, self.token.as_deref().unwrap_or_default())
    }

    #[cfg(feature = "bench")]
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `/v3/cursor` next to the pipeline.
    #[cfg(feature = "bench")]
    pub(crate) fn cursor_url(&self) -> String {
        let base = self
            .pipeline_url
            .strip_suffix("/pipeline")
            .unwrap_or(&self.pipeline_url);
        format!("{base}/cursor")
    }

    pub fn spent_ms(&self) -> f64 {
        self.spent_ms.get()
    }

    /// Runs one read.
    pub async fn query(&self, sql: &str, args: Vec<HranaValue>) -> AppResult<Vec<Record>> {
        let mut results = self.queries(vec![Query::new(sql, args)]).await?;
        Ok(results.pop().unwrap_or_default())
    }

    /// Runs independent reads in one round trip; rows per query, in order.
    pub async fn queries(&self, queries: Vec<Query>) -> AppResult<Vec<Vec<Record>>> {
        #[cfg(feature = "bench")]
        if let Some(baseline) = self.baseline {
            return baseline.reads(self, &queries).await;
        }
        let body = reads_body(&queries);
        let response = self.send(&body).await?;
        read_results(response, queries.len())
    }

    /// Runs statements as one transaction, in one round trip.
    pub async fn transaction(&self, queries: Vec<Query>) -> AppResult<Vec<Written>> {
        #[cfg(feature = "bench")]
        if let Some(baseline) = self.baseline {
            return baseline.transaction(self, &queries).await;
        }
        let body = transaction_body(&queries);
        let response = self.send(&body).await?;
        transaction_results(response, queries.len())
    }

    /// One POST to the pipeline, bounded by the timeout.
    pub(crate) async fn send(&self, body: &PipelineReqBody) -> AppResult<PipelineRespBody> {
        let json = serde_json::to_string(body).map_err(AppError::internal)?;
        let text = self.post(&self.pipeline_url, json).await?;
        serde_json::from_str(&text)
            .map_err(|e| AppError::internal(format!("unreadable answer from the primary: {e}")))
    }

    /// One POST of `json` to `url` at the primary, bounded by the timeout;
    /// the body of a 200.
    pub(crate) async fn post(&self, url: &str, json: String) -> AppResult<String> {
        let mut headers = vec![
            ("Content-Type", "application/json"),
            ("X-Request-Id", self.request_id.as_str()),
        ];
        if let Some(auth) = &self.auth {
            headers.push(("Authorization", auth.as_str()));
        }
        let controller = AbortController::default();
        let signal = controller.signal();
        let request = runtime::request(url, "POST", &headers, Some(&json), Some(&signal))?;

        let started = worker::Date::now().as_millis();
        let work = Box::pin(async {
            #[cfg(feature = "bench")]
            if self.hop_delay_ms > 0 {
                Timeout::after(Duration::from_millis(self.hop_delay_ms)).await;
            }
            let answer = runtime::fetch(&request).await?;
            Ok::<_, worker::Error>((answer.status, answer.text))
        });
        let outcome = select(work, Timeout::after(self.timeout)).await;
        let elapsed = worker::Date::now().as_millis().saturating_sub(started);
        self.spent_ms.set(self.spent_ms.get() + elapsed as f64);

        let (status, text) = match outcome {
            Either::Left((Ok(answer), _)) => answer,
            Either::Left((Err(e), _)) => {
                tracing::warn!(request_id = %self.request_id, error = %e, "primary unreachable");
                return Err(AppError::primary_unavailable(
                    "the primary could not be reached",
                ));
            }
            Either::Right(_) => {
                controller.abort();
                tracing::warn!(
                    request_id = %self.request_id,
                    timeout_ms = self.timeout.as_millis() as u64,
                    "primary timed out"
                );
                return Err(AppError::primary_unavailable(format!(
                    "the primary did not answer within {} ms",
                    self.timeout.as_millis()
                )));
            }
        };
        match status {
            200 => Ok(text),
            429 | 500..=599 => {
                tracing::warn!(request_id = %self.request_id, status, body = %text, "primary refused");
                Err(AppError::primary_unavailable(format!(
                    "the primary answered {status}"
                )))
            }
            401 | 403 => {
                tracing::error!(request_id = %self.request_id, status, "the primary refused our token");
                Err(AppError::primary_unavailable(
                    "the primary refused our credentials",
                ))
            }
            _ => Err(AppError::internal(format!(
                "the primary answered {status}: {text}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::value as v;
    use libsql_hrana::proto::{Col, ExecuteStreamResp, Row};

    #[test]
    fn urls() {
        assert_eq!(
            pipeline_url("libsql://db.turso.io/"),
            "https://db.turso.io/v3/pipeline"
        );
        assert_eq!(
            pipeline_url("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/v3/pipeline"
        );
    }

    #[test]
    fn reads_go_in_one_pipeline_that_closes_its_stream() {
        let body = reads_body(&[
            Query::new("SELECT ?", vec![v::int(7)]),
            Query::new("SELECT ?", vec![v::text("x")]),
        ]);
        let json = serde_json::to_value(&body).expect("json");
        assert_eq!(json["baton"], Value::Null);
        let kinds: Vec<&str> = json["requests"]
            .as_array()
            .expect("requests")
            .iter()
            .map(|r| r["type"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(kinds, ["execute", "execute", "close"]);
        assert_eq!(json["requests"][0]["stmt"]["args"][0]["value"], "7");
    }

    fn ok(cols: &[&str], rows: Vec<Vec<HranaValue>>) -> StreamResult {
        StreamResult::Ok {
            response: StreamResponse::Execute(ExecuteStreamResp {
                result: StmtResult {
                    cols: cols
                        .iter()
                        .map(|c| Col {
                            name: Some(c.to_string()),
                            decltype: None,
                        })
                        .collect(),
                    rows: rows.into_iter().map(|values| Row { values }).collect(),
                    affected_row_count: 0,
                    last_insert_rowid: None,
                    replication_index: None,
                    rows_read: 0,
                    rows_written: 0,
                    query_duration_ms: 0.0,
                },
            }),
        }
    }

    #[test]
    fn results_become_records_and_errors_become_app_errors() {
        let body = PipelineRespBody {
            baton: None,
            base_url: None,
            results: vec![
                ok(
                    &["n", "s"],
                    vec![vec![HranaValue::Integer { value: 1 }, HranaValue::Null]],
                ),
                StreamResult::Ok {
                    response: StreamResponse::Close(libsql_hrana::proto::CloseStreamResp {}),
                },
            ],
        };
        let rows = read_results(body, 1).expect("rows");
        assert_eq!(rows[0][0]["n"], 1);
        assert!(rows[0][0]["s"].is_null());

        let failed = PipelineRespBody {
            baton: None,
            base_url: None,
            results: vec![
                StreamResult::Error {
                    error: libsql_hrana::proto::Error {
                        message: "no such table".into(),
                        code: "SQLITE_ERROR".into(),
                    },
                },
                StreamResult::None,
            ],
        };
        assert_eq!(read_results(failed, 1).unwrap_err().status, 500);
        let short = PipelineRespBody {
            baton: None,
            base_url: None,
            results: vec![],
        };
        assert_eq!(read_results(short, 1).unwrap_err().code, "internal");
    }
}
