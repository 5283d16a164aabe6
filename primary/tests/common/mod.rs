//! Starts a primary in-process on a free loopback port with a fresh database.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use qr_primary::http::HttpConfig;
use qr_primary::server::{self, Running, ServeConfig};
use qr_primary::streams::Limits;

pub struct TestPrimary {
    pub running: Running,
    pub dir: tempfile::TempDir,
    pub token: Option<String>,
}

#[derive(Default)]
pub struct Options {
    pub token: Option<String>,
    pub limits: Option<Limits>,
    pub max_body_bytes: Option<usize>,
    pub delay: Option<Duration>,
    pub cursor_buffer_bytes: Option<usize>,
}

impl TestPrimary {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let running = server::start(ServeConfig {
            listen: "127.0.0.1:0".parse().expect("addr"),
            db: dir.path().join("test.db"),
            http: HttpConfig {
                token: options.token.clone(),
                max_body_bytes: options
                    .max_body_bytes
                    .unwrap_or(HttpConfig::default().max_body_bytes),
                delay: options.delay.unwrap_or_default(),
                cursor_buffer_bytes: options
                    .cursor_buffer_bytes
                    .unwrap_or(HttpConfig::default().cursor_buffer_bytes),
            },
            limits: options.limits.unwrap_or_default(),
        })
        .await
        .expect("start primary");
        TestPrimary {
            running,
            dir,
            token: options.token,
        }
    }

    pub fn url(&self) -> String {
        self.running.url()
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("test.db")
    }

    /// A `libsql` crate remote connection, as Turso users have.
    pub async fn libsql(&self) -> libsql::Connection {
        let db = libsql::Builder::new_remote(self.url(), self.token.clone().unwrap_or_default())
            .build()
            .await
            .expect("build remote db");
        db.connect().expect("connect")
    }

    pub fn client(&self) -> qr_primary::client::Client {
        qr_primary::client::Client::new(&self.url(), self.token.clone())
    }
}

pub fn short_expiry() -> Limits {
    Limits {
        idle_expiry: Duration::from_millis(800),
        ..Limits::default()
    }
}

/// The repository's migrations folder.
pub fn migrations_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../migrations")
}
