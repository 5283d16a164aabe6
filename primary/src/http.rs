//! The HTTP face of the primary: Hrana 2 and 3 over HTTP, as sqld and Turso
//! serve them, plus `/health` and `/version`.
//!
//! | route            | what                                                         |
//! |------------------|--------------------------------------------------------------|
//! | `POST /v2/pipeline` | pipeline (JSON), used by `@libsql/client` over `http://`  |
//! | `POST /v3/pipeline` | pipeline (JSON), used by the `libsql` Rust client          |
//! | `POST /v3/cursor`   | a batch whose results stream back as NDJSON                |
//! | `GET /v2`, `GET /v3` | 200: this version is supported                            |
//! | `GET /version`   | the server's version                                         |
//! | `GET /health`    | 200 when the database answers                                |
//! | `GET /stats`     | Hrana requests served per endpoint; open streams; `UPDATE issues SET rioter_count` statements run (loopback only) |
//! | `GET /stats/requests/{id}` | Hrana requests sent with `X-Request-Id: id` in the last two minutes (loopback only) |
//!
//! Failures of the whole request (bad JSON, bad baton, body too large, no
//! auth) are HTTP errors with a JSON body `{"message": ..., "code": ...}`;
//! failures of one statement are Hrana errors inside a 200 response.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use libsql_hrana::proto::{
    CursorEntry, CursorReqBody, CursorRespBody, PipelineReqBody, PipelineRespBody, StreamRequest,
    StreamResult,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::stats::{Endpoint, Stats};
use crate::streams::{constant_time_eq, StreamError, Streams};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Bearer token every Hrana request must carry; `None` disables auth.
    pub token: Option<String>,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Added before each Hrana request is handled, to stand for the distance
    /// between the edge and the primary in benchmarks.
    pub delay: Duration,
    /// Most bytes of a `/v3/cursor` response held in the server, written or
    /// not. A response that fits is sent once its steps have run and its
    /// stream is free for the next request; a larger one streams while the
    /// steps run, as fast as the client reads.
    pub cursor_buffer_bytes: usize,
}

/// The default of [`HttpConfig::cursor_buffer_bytes`]: most results fit
/// (so their stream is free before the baton goes out), and a thousand
/// cursors at once hold at most about a gigabyte.
pub const CURSOR_BUFFER_BYTES: usize = 1024 * 1024;

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            token: None,
            max_body_bytes: 10 * 1024 * 1024,
            delay: Duration::ZERO,
            cursor_buffer_bytes: CURSOR_BUFFER_BYTES,
        }
    }
}

#[derive(Clone)]
struct AppState {
    streams: Arc<Streams>,
    config: Arc<HttpConfig>,
    stats: Arc<Stats>,
}

pub fn router(streams: Arc<Streams>, config: HttpConfig) -> Router {
    let state = AppState {
        streams,
        config: Arc::new(config),
        stats: Arc::default(),
    };
    let hrana = Router::new()
        .route(
            "/v2/pipeline",
            post(|s, h, b| pipeline(s, h, b, Endpoint::V2Pipeline)),
        )
        .route(
            "/v3/pipeline",
            post(|s, h, b| pipeline(s, h, b, Endpoint::V3Pipeline)),
        )
        .route("/v3/cursor", post(cursor))
        .route("/stats", get(stats))
        .route("/stats/requests/{id}", get(stats_for_request))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(hrana)
        .route("/v2", get(supported))
        .route("/v3", get(supported))
        .route("/version", get(version))
        .route("/health", get(health))
        .fallback(not_found)
        .with_state(state)
}

/// A failure of a whole HTTP request.
#[derive(Debug)]
pub struct HttpError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl HttpError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        HttpError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl From<StreamError> for HttpError {
    fn from(e: StreamError) -> Self {
        let status = match e {
            StreamError::TooManyStreams(_) | StreamError::Engine(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            _ => StatusCode::BAD_REQUEST,
        };
        HttpError::new(status, e.code(), e.to_string())
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "message": self.message, "code": self.code });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

async fn require_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &state.config.token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return HttpError::new(
                StatusCode::UNAUTHORIZED,
                "UNAUTHORIZED",
                "missing or wrong `Authorization: Bearer <token>`",
            )
            .into_response();
        }
    }
    next.run(request).await
}

/// Reads the body within the size cap and parses it as JSON.
async fn read_json<T: serde::de::DeserializeOwned>(
    body: Body,
    limit: usize,
) -> Result<T, HttpError> {
    let bytes: Bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        HttpError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "BODY_TOO_LARGE",
            format!("the request body is larger than {limit} bytes (or could not be read)"),
        )
    })?;
    serde_json::from_slice(&bytes).map_err(|e| {
        HttpError::new(
            StatusCode::BAD_REQUEST,
            "PROTO_INVALID",
            format!("the request body is not a valid Hrana request: {e}"),
        )
    })
}

/// Counts the request and waits out the configured delay.
async fn arrive(state: &AppState, headers: &HeaderMap, endpoint: Endpoint) {
    let request_id = headers.get("x-request-id").and_then(|v| v.to_str().ok());
    state.stats.record(endpoint, request_id);
    if !state.config.delay.is_zero() {
        tokio::time::sleep(state.config.delay).await;
    }
}

async fn pipeline(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
    endpoint: Endpoint,
) -> Result<Response, HttpError> {
    arrive(&state, &headers, endpoint).await;
    let req: PipelineReqBody = read_json(body, state.config.max_body_bytes).await?;
    let (lease, mut session) = state.streams.checkout(req.baton.as_deref())?;
    let streams = state.streams.clone();
    let run = tokio::task::spawn_blocking(move || {
        let mut results = Vec::with_capacity(req.requests.len());
        let mut closed = false;
        for request in req.requests {
            if closed {
                results.push(StreamResult::Error {
                    error: crate::engine::error(
                        "STREAM_CLOSED",
                        "the stream was closed earlier in this pipeline",
                    ),
                });
                continue;
            }
            closed = matches!(request, StreamRequest::Close(_));
            results.push(match session.handle(request) {
                Ok(response) => StreamResult::Ok { response },
                Err(error) => StreamResult::Error { error },
            });
        }
        let baton = (!closed).then(|| lease.next_baton());
        streams.finish(lease, session, closed);
        PipelineRespBody {
            baton,
            base_url: None,
            results,
        }
    });
    let body = run.await.map_err(|e| {
        tracing::error!(error = %e, "pipeline task failed");
        HttpError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "the request failed inside the server; the stream was closed",
        )
    })?;
    Ok(axum::Json(body).into_response())
}

async fn cursor(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, HttpError> {
    arrive(&state, &headers, Endpoint::V3Cursor).await;
    let req: CursorReqBody = read_json(body, state.config.max_body_bytes).await?;
    let (lease, mut session) = state.streams.checkout(req.baton.as_deref())?;
    let head = CursorRespBody {
        baton: Some(lease.next_baton()),
        base_url: None,
    };
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut out = CursorOut::new(
        ndjson_line(&head),
        tx,
        state.config.cursor_buffer_bytes,
        state.streams.idle_expiry(),
    );
    let streams = state.streams.clone();
    tokio::task::spawn_blocking(move || {
        // When the reader hangs up or stalls, `emit` returns false, the batch
        // stops and the lease is dropped: the stream is closed and rolled
        // back. (A reader that hangs up after the steps have run leaves an
        // idle stream, which expires and rolls back like any other.)
        let mut alive = true;
        session.batch_cursor(&req.batch, |entry| {
            alive = out.push(ndjson_line(&entry));
            alive
        });
        if alive {
            // The stream is free for its next request before the response
            // is written out.
            streams.finish(lease, session, false);
            out.flush();
        } else if out.stalled {
            drop(lease);
            drop(session);
            out.push_anyway(ndjson_line(&CursorEntry::Error {
                error: crate::engine::error(
                    "CURSOR_STALLED",
                    "the client read nothing of this response for as long as a stream may be idle; the stream was closed and its transaction rolled back",
                ),
            }));
        }
    });
    let stream = tokio_stream::StreamExt::map(
        tokio_stream::wrappers::UnboundedReceiverStream::new(rx),
        // The line's budget is given back as it is handed to the connection.
        |(line, _budget): Line| Ok::<_, Infallible>(line),
    );
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// A line of a cursor response with its share of the byte budget.
type Line = (Bytes, Option<OwnedSemaphorePermit>);

/// The lines of one `/v3/cursor` response, on their way to the client.
///
/// The head line (the baton) is held back, with the entries after it, until
/// the steps have run and the stream is free again, so that a client can
/// send its next request as soon as it has the baton. Only when the held
/// lines outgrow the budget do they go out while the steps run; each line
/// then waits for budget, given back as the client reads, and a client that
/// reads nothing for `stall` stops the batch.
struct CursorOut {
    /// Lines held back, or `None` once they went out.
    held: Option<Vec<Bytes>>,
    held_bytes: usize,
    tx: tokio::sync::mpsc::UnboundedSender<Line>,
    budget: Arc<Semaphore>,
    limit: usize,
    stall: Duration,
    /// A line waited for budget longer than `stall`.
    stalled: bool,
}

impl CursorOut {
    fn new(
        head: Bytes,
        tx: tokio::sync::mpsc::UnboundedSender<Line>,
        limit: usize,
        stall: Duration,
    ) -> Self {
        let limit = limit.clamp(1, u32::MAX as usize);
        CursorOut {
            held_bytes: head.len(),
            held: Some(vec![head]),
            tx,
            budget: Arc::new(Semaphore::new(limit)),
            limit,
            stall,
            stalled: false,
        }
    }

    /// Queues a line; false when the client is gone or stalled. Runs on a
    /// blocking thread (it may wait for budget).
    fn push(&mut self, line: Bytes) -> bool {
        if self.tx.is_closed() {
            return false;
        }
        if let Some(held) = &mut self.held {
            self.held_bytes += line.len();
            held.push(line);
            return self.held_bytes <= self.limit || self.flush();
        }
        self.send(line)
    }

    /// Sends the held lines, if any; false when the client is gone or
    /// stalled.
    fn flush(&mut self) -> bool {
        let held = self.held.take().unwrap_or_default();
        held.into_iter().all(|line| self.send(line))
    }

    fn send(&mut self, line: Bytes) -> bool {
        let share = u32::try_from(line.len().min(self.limit)).unwrap_or(u32::MAX);
        let wait = tokio::time::timeout(self.stall, self.budget.clone().acquire_many_owned(share));
        match tokio::runtime::Handle::current().block_on(wait) {
            Ok(Ok(permit)) => self.tx.send((line, Some(permit))).is_ok(),
            Ok(Err(_closed)) => false,
            Err(_elapsed) => {
                self.stalled = true;
                false
            }
        }
    }

    /// Queues a last line outside the budget.
    fn push_anyway(&mut self, line: Bytes) {
        let _ = self.tx.send((line, None));
    }
}

fn ndjson_line<T: serde::Serialize>(value: &T) -> Bytes {
    // Serialising these protocol types cannot fail: they hold only strings,
    // numbers, booleans and sequences of them.
    let mut line = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    line.push(b'\n');
    Bytes::from(line)
}

async fn supported() -> StatusCode {
    StatusCode::OK
}

async fn version() -> String {
    format!("qr-primary {VERSION} (libSQL {})", libsql_version())
}

fn libsql_version() -> &'static str {
    libsql_sys::rusqlite::version()
}

async fn health(State(state): State<AppState>) -> Result<&'static str, HttpError> {
    let engine = state.streams.engine().clone();
    let check = tokio::task::spawn_blocking(move || -> Result<(), String> {
        let conn = engine.connect().map_err(|e| e.to_string())?;
        conn.query_row("SELECT 1", [], |_| Ok(()))
            .map_err(|e| e.to_string())
    })
    .await;
    match check {
        Ok(Ok(())) => Ok("ok"),
        Ok(Err(e)) => Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNHEALTHY",
            format!("the database does not answer: {e}"),
        )),
        Err(_) => Err(HttpError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNHEALTHY",
            "the health check failed",
        )),
    }
}

/// Stats are for the machine the primary runs on.
fn loopback_only(request: &Request) -> Result<(), HttpError> {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    match peer {
        Some(addr) if !addr.ip().is_loopback() => Err(HttpError::new(
            StatusCode::FORBIDDEN,
            "FORBIDDEN",
            "stats are served to loopback clients only",
        )),
        _ => Ok(()),
    }
}

async fn stats(State(state): State<AppState>, request: Request) -> Result<Response, HttpError> {
    loopback_only(&request)?;
    let snapshot = state.stats.snapshot();
    Ok(axum::Json(serde_json::json!({
        "hrana_requests": snapshot,
        "open_streams": state.streams.open_count(),
        "counter_updates": state.streams.engine().counter_updates(),
    }))
    .into_response())
}

async fn stats_for_request(
    State(state): State<AppState>,
    Path(id): Path<String>,
    request: Request,
) -> Result<Response, HttpError> {
    loopback_only(&request)?;
    Ok(axum::Json(serde_json::json!({
        "request_id": id,
        "hrana_requests": state.stats.for_request(&id),
    }))
    .into_response())
}

async fn not_found() -> HttpError {
    HttpError::new(
        StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such endpoint; Hrana is served at /v2/pipeline, /v3/pipeline and /v3/cursor",
    )
}
