//! What a handler gets: typed config, the bindings, the request id, the
//! primary (connected on first use), and timings for `Server-Timing`.

use std::cell::{Cell, OnceCell, RefCell};
use std::future::Future;
use std::rc::Rc;

use serde_json::Value;
use worker::{Env, Response};

use crate::domain::rate_limit::Verdict;
use crate::http::config::Config;
use crate::http::error::{AppError, AppResult};
use crate::store::db::Db;

pub struct Ctx {
    pub config: Rc<Config>,
    pub env: Env,
    pub request_id: String,
    /// `None` in a [`Ctx::detached`] copy.
    worker: Option<worker::Context>,
    db: OnceCell<Db>,
    kv_ms: Cell<u64>,
    kv_calls: Cell<u32>,
    db_ms: Cell<u64>,
    do_ms: Cell<u64>,
    do_calls: Cell<u32>,
    rate_limit: Cell<Option<Verdict>>,
    #[cfg(feature = "bench")]
    bench: Cell<crate::bench::Mode>,
    /// `Set-Cookie` headers that must reach the client even if the request
    /// fails (see [`Ctx::keep_cookies`]).
    kept_cookies: RefCell<Vec<String>>,
    /// More `Server-Timing` metrics, as written (`name;dur=N`).
    phases: RefCell<Vec<String>>,
}

impl Ctx {
    pub fn new(config: Rc<Config>, env: Env, request_id: String, worker: worker::Context) -> Ctx {
        let mut ctx = Ctx::for_object(config, env, request_id);
        ctx.worker = Some(worker);
        ctx
    }

    pub fn db(&self) -> &Db {
        self.db.get_or_init(|| {
            let db = self.config.db(&self.request_id);
            #[cfg(feature = "bench")]
            let db = db.with_baseline(self.bench().baseline());
            db
        })
    }

    /// The benchmark switch this request came through (benchmark builds,
    /// development only; see [`crate::bench`]). Set before the handler runs.
    #[cfg(feature = "bench")]
    pub fn set_bench(&self, mode: crate::bench::Mode) {
        self.bench.set(mode);
    }

    #[cfg(feature = "bench")]
    pub fn bench(&self) -> crate::bench::Mode {
        self.bench.get()
    }

    /// The cache's KV namespace.
    pub fn kv(&self) -> AppResult<worker::kv::KvStore> {
        self.env
            .kv("CACHE")
            .map_err(|e| AppError::internal(format!("KV binding CACHE: {e}")))
    }

    /// A context for work a Durable Object does on its own (the outbox's
    /// replays): no request, so `wait_until` work is spawned.
    pub fn for_object(config: Rc<Config>, env: Env, request_id: String) -> Ctx {
        Ctx {
            config,
            env,
            request_id,
            worker: None,
            db: OnceCell::new(),
            kv_ms: Cell::new(0),
            kv_calls: Cell::new(0),
            db_ms: Cell::new(0),
            do_ms: Cell::new(0),
            do_calls: Cell::new(0),
            rate_limit: Cell::new(None),
            #[cfg(feature = "bench")]
            bench: Cell::new(crate::bench::Mode::Normal),
            kept_cookies: RefCell::new(Vec::new()),
            phases: RefCell::new(Vec::new()),
        }
    }

    /// A copy that owns everything it needs, for work that outlives the
    /// request's handler (webhook processing after the `200`); its own
    /// `wait_until` work is spawned on the same event.
    pub fn detached(&self) -> Ctx {
        Ctx::for_object(
            self.config.clone(),
            self.env.clone(),
            self.request_id.clone(),
        )
    }

    /// Runs `work` after the response is sent (within the platform's limit).
    pub fn wait_until(&self, work: impl Future<Output = ()> + 'static) {
        match &self.worker {
            Some(worker) => worker.wait_until(work),
            // Already inside a `wait_until`: the event stays alive while
            // the spawned work runs alongside.
            None => worker::wasm_bindgen_futures::spawn_local(work),
        }
    }

    pub fn add_kv_ms(&self, ms: u64) {
        self.kv_ms.set(self.kv_ms.get() + ms);
        self.kv_calls.set(self.kv_calls.get() + 1);
    }

    pub fn add_db_ms(&self, ms: u64) {
        self.db_ms.set(self.db_ms.get() + ms);
    }

    /// The limiter's verdict, for the `RateLimit` headers (the last one
    /// set wins: the strictest policy a request paid is checked last).
    pub fn set_rate_limit(&self, verdict: Verdict) {
        self.rate_limit.set(Some(verdict));
    }

    pub fn rate_limit(&self) -> Option<Verdict> {
        self.rate_limit.get()
    }

    /// Cookies the pipeline adds to an error response: a legacy cookie's
    /// upgrade commits before the write it came with, so the session it
    /// hands over must reach the client even if that write then fails. (A
    /// successful response carries them from its handler.)
    pub fn keep_cookies(&self, cookies: &[String]) {
        self.kept_cookies.borrow_mut().extend_from_slice(cookies);
    }

    pub fn kept_cookies(&self) -> Vec<String> {
        self.kept_cookies.borrow().clone()
    }

    /// A `Server-Timing` metric of the request's own (a phase inside an
    /// object that answered, say), after `kv`, `do` and `db`.
    pub fn add_phase(&self, name: &str, ms: u64) {
        self.phases.borrow_mut().push(format!("{name};dur={ms}"));
    }

    /// A `Server-Timing` metric that is a number but not a duration
    /// (`name;desc=N`).
    pub fn add_figure(&self, name: &str, n: u64) {
        self.phases.borrow_mut().push(format!("{name};desc={n}"));
    }

    pub fn phases(&self) -> Vec<String> {
        self.phases.borrow().clone()
    }

    /// One Durable Object call and the milliseconds it took.
    pub fn add_do_ms(&self, ms: u64) {
        self.do_ms.set(self.do_ms.get() + ms);
        self.do_calls.set(self.do_calls.get() + 1);
    }

    /// Milliseconds spent waiting for Durable Objects, if any were called
    /// (`Some(0)` for calls quicker than a millisecond).
    pub fn do_ms(&self) -> Option<u64> {
        (self.do_calls.get() > 0).then(|| self.do_ms.get())
    }

    /// Milliseconds spent on KV, if any.
    pub fn kv_ms(&self) -> Option<u64> {
        // Reported when KV was asked, even if it answered within 1 ms.
        (self.kv_calls.get() > 0).then(|| self.kv_ms.get())
    }

    /// Milliseconds spent on the primary, if it was used.
    pub fn db_ms(&self) -> Option<u64> {
        let direct = self.db.get().map_or(0, |db| db.spent_ms() as u64);
        Some(direct + self.db_ms.get()).filter(|_| self.db.get().is_some() || self.db_ms.get() > 0)
    }
}

pub fn json_response(status: u16, body: &Value) -> worker::Result<Response> {
    Ok(Response::from_json(body)?.with_status(status))
}
