//! What a handler gets: typed config, the bindings, the request id, and the
//! primary (connected on first use).

use std::cell::OnceCell;

use serde_json::Value;
use worker::{Env, Response};

use crate::config::Config;
use crate::db::Db;

pub struct Ctx {
    pub config: Config,
    pub env: Env,
    pub request_id: String,
    db: OnceCell<Db>,
}

impl Ctx {
    pub fn new(config: Config, env: Env, request_id: String) -> Ctx {
        Ctx {
            config,
            env,
            request_id,
            db: OnceCell::new(),
        }
    }

    pub fn db(&self) -> &Db {
        self.db.get_or_init(|| {
            Db::new(
                &self.config.libsql_url,
                self.config.libsql_auth_token.as_deref(),
                self.config.db_timeout,
                &self.request_id,
            )
        })
    }

    /// Milliseconds spent on the primary, if it was used.
    pub fn db_ms(&self) -> Option<f64> {
        self.db.get().map(Db::spent_ms)
    }
}

pub fn json_response(status: u16, body: &Value) -> worker::Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}
