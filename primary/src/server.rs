//! Starting and stopping the primary.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use crate::engine::Engine;
use crate::http::{self, HttpConfig};
use crate::streams::{Limits, Streams};

#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub db: PathBuf,
    pub http: HttpConfig,
    pub limits: Limits,
}

/// A running primary. Dropping it does not stop it; call [`Running::stop`].
pub struct Running {
    pub addr: SocketAddr,
    pub streams: Arc<Streams>,
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
    reaper: tokio::task::JoinHandle<()>,
}

impl Running {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting requests, lets running ones finish, and returns.
    pub async fn stop(self) -> std::io::Result<()> {
        let _ = self.shutdown.send(());
        self.reaper.abort();
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(std::io::Error::other(e)),
        }
    }
}

#[derive(Debug)]
pub enum StartError {
    /// No token is set and the address is not a loopback address.
    PublicWithoutToken(SocketAddr),
    Database(String),
    Bind(SocketAddr, std::io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::PublicWithoutToken(addr) => write!(
                f,
                "refusing to listen on {addr} without a token: set --token (or QR_PRIMARY_TOKEN), \
                 or listen on a loopback address such as 127.0.0.1"
            ),
            StartError::Database(e) => write!(f, "cannot open the database: {e}"),
            StartError::Bind(addr, e) => write!(
                f,
                "cannot listen on {addr}: {e} (is another server using this port? pick another with --listen)"
            ),
        }
    }
}

impl std::error::Error for StartError {}

/// Opens the database and starts serving on `config.listen` (port 0 picks a
/// free port; see [`Running::addr`]).
pub async fn start(config: ServeConfig) -> Result<Running, StartError> {
    if config.http.token.is_none() && !config.listen.ip().is_loopback() {
        return Err(StartError::PublicWithoutToken(config.listen));
    }
    let db = config.db.clone();
    let engine = tokio::task::spawn_blocking(move || Engine::open(&db))
        .await
        .map_err(|e| StartError::Database(e.to_string()))?
        .map_err(|e| StartError::Database(format!("{}: {e}", config.db.display())))?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError::Bind(config.listen, e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Bind(config.listen, e))?;
    let streams = Streams::new(engine, config.limits);
    let reaper = streams.spawn_reaper();
    let app = http::router(streams.clone(), config.http);
    let (shutdown, on_shutdown) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async {
            let _ = on_shutdown.await;
        })
        .await
    });
    Ok(Running {
        addr,
        streams,
        shutdown,
        task,
        reaper,
    })
}
