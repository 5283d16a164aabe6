//! A small Hrana-over-HTTP client (`POST /v3/pipeline`).
//!
//! The migrate and seed commands use it so that they run against any Hrana
//! server, this primary or Turso, and so that each migration goes over the
//! wire as one atomic batch we can see. (The `libsql` crate's remote client
//! would hide that: it sends `describe` requests and splits scripts itself.)

pub use libsql_hrana::proto::Value;
use libsql_hrana::proto::{
    Batch, BatchCond, BatchResult, BatchStep, BatchStreamReq, CloseStreamReq, Error as HranaError,
    ExecuteStreamReq, PipelineReqBody, PipelineRespBody, Stmt, StmtResult, StreamRequest,
    StreamResponse, StreamResult,
};

#[derive(Debug)]
pub enum ClientError {
    /// The server could not be reached.
    Transport { url: String, source: reqwest::Error },
    /// The server answered with an HTTP error.
    Http { status: u16, body: String },
    /// The server's answer does not follow the protocol.
    Protocol(String),
    /// The statement failed on the server.
    Sql(HranaError),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Transport { url, source } => write!(
                f,
                "cannot reach the database at {url}: {source} (is the primary running? check the URL)"
            ),
            ClientError::Http { status: 401, body } => write!(
                f,
                "the database refused the token (HTTP 401): {body}; pass the right --token / LIBSQL_AUTH_TOKEN"
            ),
            ClientError::Http { status, body } => {
                write!(f, "the database answered HTTP {status}: {body}")
            }
            ClientError::Protocol(what) => write!(f, "unexpected answer from the database: {what}"),
            ClientError::Sql(e) => write!(f, "{} ({})", e.message, e.code),
        }
    }
}

impl std::error::Error for ClientError {}

#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    pipeline_url: String,
    token: Option<String>,
}

/// Turns `libsql://host` into `https://host` and drops a trailing slash, as
/// the libSQL clients do.
pub fn http_base_url(url: &str) -> String {
    let url = url.trim_end_matches('/');
    match url.strip_prefix("libsql://") {
        Some(rest) => format!("https://{rest}"),
        None => url.to_owned(),
    }
}

impl Client {
    pub fn new(url: &str, token: Option<String>) -> Self {
        Client {
            http: reqwest::Client::new(),
            pipeline_url: format!("{}/v3/pipeline", http_base_url(url)),
            token: token.filter(|t| !t.is_empty()),
        }
    }

    /// Sends one pipeline request on the stream named by `baton` (a new
    /// stream when `None`).
    pub async fn pipeline(
        &self,
        baton: Option<String>,
        requests: Vec<StreamRequest>,
    ) -> Result<PipelineRespBody, ClientError> {
        let body = PipelineReqBody { baton, requests };
        let mut request = self.http.post(&self.pipeline_url).json(&body);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        let transport = |source| ClientError::Transport {
            url: self.pipeline_url.clone(),
            source,
        };
        let response = request.send().await.map_err(transport)?;
        let status = response.status();
        let bytes = response.bytes().await.map_err(transport)?;
        if !status.is_success() {
            return Err(ClientError::Http {
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol(e.to_string()))
    }

    /// Runs requests on a fresh stream that is closed at the end of the same
    /// HTTP request; returns one result per request.
    async fn oneshot(
        &self,
        mut requests: Vec<StreamRequest>,
    ) -> Result<Vec<StreamResult>, ClientError> {
        let n = requests.len();
        requests.push(StreamRequest::Close(CloseStreamReq {}));
        let mut body = self.pipeline(None, requests).await?;
        if body.results.len() != n + 1 {
            return Err(ClientError::Protocol(format!(
                "{} results for {} requests",
                body.results.len(),
                n + 1
            )));
        }
        body.results.truncate(n);
        Ok(body.results)
    }

    /// Executes one statement in one round trip.
    pub async fn execute(&self, stmt: Stmt) -> Result<StmtResult, ClientError> {
        let result = self
            .oneshot(vec![StreamRequest::Execute(ExecuteStreamReq { stmt })])
            .await?
            .pop();
        match result {
            Some(StreamResult::Ok {
                response: StreamResponse::Execute(r),
            }) => Ok(r.result),
            Some(StreamResult::Error { error }) => Err(ClientError::Sql(error)),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Runs a batch in one round trip.
    pub async fn batch(&self, batch: Batch) -> Result<BatchResult, ClientError> {
        let result = self
            .oneshot(vec![StreamRequest::Batch(BatchStreamReq { batch })])
            .await?
            .pop();
        match result {
            Some(StreamResult::Ok {
                response: StreamResponse::Batch(r),
            }) => Ok(r.result),
            Some(StreamResult::Error { error }) => Err(ClientError::Sql(error)),
            other => Err(ClientError::Protocol(format!("{other:?}"))),
        }
    }

    /// Runs statements atomically in one round trip: all of them commit, or
    /// none does. On failure, the error names the first failing statement's
    /// index.
    pub async fn transaction(&self, stmts: Vec<Stmt>) -> Result<Vec<StmtResult>, TxError> {
        let n = stmts.len();
        let result = self
            .batch(transaction_batch(stmts))
            .await
            .map_err(TxError::Client)?;
        // Steps: 0 = BEGIN, 1..=n = statements, n+1 = COMMIT, n+2 = ROLLBACK.
        for (i, err) in result.step_errors.iter().enumerate() {
            if let Some(err) = err {
                let statement = (1..=n).contains(&i).then(|| i - 1);
                return Err(TxError::Failed {
                    statement,
                    error: err.clone(),
                });
            }
        }
        let committed = result.step_results.get(n + 1).is_some_and(Option::is_some);
        if !committed {
            return Err(TxError::Client(ClientError::Protocol(
                "the transaction did not commit".into(),
            )));
        }
        Ok(result
            .step_results
            .into_iter()
            .skip(1)
            .take(n)
            .map(Option::unwrap_or_default)
            .collect())
    }

    /// Rows of a query as plain values.
    pub async fn query(&self, sql: &str, args: Vec<Value>) -> Result<Vec<Vec<Value>>, ClientError> {
        let mut stmt = Stmt::new(sql, true);
        stmt.args = args;
        let result = self.execute(stmt).await?;
        Ok(result.rows.into_iter().map(|r| r.values).collect())
    }
}

#[derive(Debug)]
pub enum TxError {
    Client(ClientError),
    /// A statement (by index; `None` for BEGIN/COMMIT) failed and the
    /// transaction was rolled back.
    Failed {
        statement: Option<usize>,
        error: HranaError,
    },
}

impl std::fmt::Display for TxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TxError::Client(e) => e.fmt(f),
            TxError::Failed {
                statement: Some(i),
                error,
            } => write!(
                f,
                "statement {} failed, nothing was applied: {} ({})",
                i + 1,
                error.message,
                error.code
            ),
            TxError::Failed {
                statement: None,
                error,
            } => write!(
                f,
                "the transaction failed, nothing was applied: {} ({})",
                error.message, error.code
            ),
        }
    }
}

impl std::error::Error for TxError {}

/// BEGIN; each statement only if all before it succeeded; COMMIT; ROLLBACK
/// if COMMIT did not happen.
pub fn transaction_batch(stmts: Vec<Stmt>) -> Batch {
    let n = stmts.len() as u32;
    let mut steps = Vec::with_capacity(stmts.len() + 3);
    steps.push(BatchStep {
        condition: None,
        stmt: Stmt::new("BEGIN IMMEDIATE", false),
    });
    for (i, stmt) in stmts.into_iter().enumerate() {
        steps.push(BatchStep {
            condition: Some(BatchCond::Ok { step: i as u32 }),
            stmt,
        });
    }
    steps.push(BatchStep {
        condition: Some(BatchCond::Ok { step: n }),
        stmt: Stmt::new("COMMIT", false),
    });
    steps.push(BatchStep {
        condition: Some(BatchCond::Not {
            cond: Box::new(BatchCond::Ok { step: n + 1 }),
        }),
        stmt: Stmt::new("ROLLBACK", false),
    });
    Batch {
        steps,
        replication_index: None,
    }
}

/// Shorthands for building statement arguments.
pub fn text(s: impl Into<std::sync::Arc<str>>) -> Value {
    Value::Text { value: s.into() }
}

pub fn int(i: i64) -> Value {
    Value::Integer { value: i }
}

pub fn stmt(sql: impl Into<String>, args: Vec<Value>) -> Stmt {
    let mut s = Stmt::new(sql, true);
    s.args = args;
    s
}
