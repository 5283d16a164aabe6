//! A local stand-in for the WhatsApp Graph API and the Telegram Bot API:
//! answers every `POST` and records what it received, so tests can see the
//! replies the Worker sent. It can be told to fail the next N requests (or
//! all of them) with a 500, to exercise retries and failure records.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::Router;
use serde_json::Value;

#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub authorization: Option<String>,
    pub body: Value,
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    fail_next: AtomicUsize,
    fail_all: AtomicBool,
}

pub struct FakeApi {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

async fn record(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let received = Received {
        path: uri.path().to_owned(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    };
    shared.received.lock().expect("lock").push(received);
    let failing = shared.fail_all.load(Ordering::SeqCst)
        || shared
            .fail_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
    if failing {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":{"message":"fake outage"}}"#.to_owned(),
        )
    } else {
        (
            StatusCode::OK,
            r#"{"ok":true,"messages":[{"id":"wamid.out"}]}"#.to_owned(),
        )
    }
}

impl FakeApi {
    pub async fn start() -> FakeApi {
        let shared = Arc::new(Shared::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind fake API");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let app = Router::new()
            .fallback(axum::routing::post(record))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FakeApi { url, shared, task }
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    pub fn fail_next(&self, n: usize) {
        self.shared.fail_next.store(n, Ordering::SeqCst);
    }

    pub fn fail_all(&self, on: bool) {
        self.shared.fail_all.store(on, Ordering::SeqCst);
    }

    /// Waits (up to `within`) until `count` requests match `pick`; then
    /// returns them.
    pub async fn wait_for(
        &self,
        within: Duration,
        count: usize,
        pick: impl Fn(&Received) -> bool,
    ) -> Vec<Received> {
        let deadline = Instant::now() + within;
        loop {
            let got: Vec<Received> = self.received().into_iter().filter(|r| pick(r)).collect();
            if got.len() >= count || Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for FakeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}
