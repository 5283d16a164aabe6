//! The Outbox Durable Object: writes kept while the primary is away, and
//! their replay in arrival order (see [`crate::edge::outbox`] for the design).
//!
//! Requests (from the Worker only):
//! - `POST /enqueue` with a [`Queued`]: stores it (the answer comes after
//!   the storage write, so an answered entry is durable) and answers a
//!   [`Receipt`];
//! - `GET /status/{id}`: the entry's status, attempts, error and times;
//!
//! The alarm replays queued entries one at a time, oldest first, and stops
//! at the first that finds the primary still away, trying again after a
//! pause that grows to 30 s. Done entries are kept a day for their status.
//!
//! Saved state: table `entries`, one row per write (the columns below are
//! the table's first and only layout so far; a change adds columns with
//! defaults). Each entry's `payload` is a [`Queued`] as versioned JSON
//! text ([`super::shape`]): version 1 (before versions) is the same JSON
//! without `v`, version 2 names it. An entry whose payload cannot be read
//! is kept, marked `failed` with the reason (its status URL says so), and
//! logged at error level with its id; the queue moves on.

use std::cell::Cell;
use std::time::Duration;

use serde::Deserialize;
use serde_json::json;
use worker::{durable_object, Env, Method, Request, Response, Result, State};

use super::shape::{self, Shape};
use crate::domain::time::now_ms;
use crate::domain::writes::StoredWrite;
use crate::edge::outbox::{self, Queued, Receipt, Replayed, Status, KEEP_DONE_MS};
use crate::http::config::Config;
use crate::http::context::Ctx;
use crate::routes::issue_writes;
use crate::routes::membership;

impl Shape for Queued {
    /// 3: a write is kept as data ([`StoredWrite`]); versions 1 and 2 kept
    /// the route's path and the body.
    const VERSION: u32 = 3;

    fn upgrade(v: u32, mut body: serde_json::Value) -> std::result::Result<Self, String> {
        if v < 3 && body["kind"] == "write" {
            let object = body
                .as_object_mut()
                .ok_or_else(|| "an entry is not an object".to_owned())?;
            let path = match object.remove("path") {
                Some(serde_json::Value::String(path)) => path,
                _ => return Err("a write without its path".to_owned()),
            };
            let sent = object.remove("body").filter(|b| !b.is_null());
            let write = StoredWrite::from_path(&path, sent)
                .ok_or_else(|| format!("a write to {path:.100}, which is no write route"))?;
            object.insert(
                "write".to_owned(),
                serde_json::to_value(write).map_err(|e| e.to_string())?,
            );
        }
        serde_json::from_value(body).map_err(|e| e.to_string())
    }
}

/// A saved entry, read; why not, for its `failed` status.
fn entry(payload: &str) -> std::result::Result<Queued, String> {
    shape::decode::<Queued>(payload).map_err(|why| format!("unreadable entry: {why}"))
}

/// Entries replayed by one alarm before it yields to the next.
const BATCH: usize = 50;

#[durable_object]
pub struct Outbox {
    state: State,
    env: Env,
    /// Replays in a row that found the primary away (for the pause).
    waits: Cell<u32>,
    /// The table exists (made once per instance, not per call).
    ready: Cell<bool>,
}

#[derive(Deserialize)]
struct Head {
    seq: i64,
    id: String,
    payload: String,
    attempts: i64,
}

#[derive(Deserialize)]
struct Row {
    id: String,
    status: String,
    attempts: i64,
    error: Option<String>,
    created_ms: i64,
    done_ms: Option<i64>,
    payload: String,
}

impl Outbox {
    fn ensure_table(&self) -> Result<()> {
        if self.ready.get() {
            return Ok(());
        }
        self.state.storage().sql().exec(
            "CREATE TABLE IF NOT EXISTS entries (\
               seq INTEGER PRIMARY KEY AUTOINCREMENT, \
               id TEXT NOT NULL UNIQUE, \
               payload TEXT NOT NULL, \
               status TEXT NOT NULL, \
               attempts INTEGER NOT NULL DEFAULT 0, \
               error TEXT, \
               created_ms INTEGER NOT NULL, \
               done_ms INTEGER)",
            None,
        )?;
        self.ready.set(true);
        Ok(())
    }

    async fn alarm_in(&self, ms: u64) -> Result<()> {
        self.state
            .storage()
            .set_alarm(Duration::from_millis(ms))
            .await
    }

    async fn enqueue(&self, queued: &Queued) -> Result<Receipt> {
        self.ensure_table()?;
        let id = uuid::Uuid::new_v4().to_string();
        let payload = shape::encode(queued).map_err(worker::Error::RustError)?;
        let sql = self.state.storage().sql();
        sql.exec(
            "INSERT INTO entries (id, payload, status, created_ms) VALUES (?, ?, 'queued', ?)",
            vec![id.clone().into(), payload.into(), (now_ms() as i64).into()],
        )?;
        #[derive(Deserialize)]
        struct N {
            n: i64,
        }
        let ahead = sql
            .exec(
                "SELECT count(*) AS n FROM entries WHERE status = 'queued'",
                None,
            )?
            .one::<N>()?
            .n
            .saturating_sub(1)
            .max(0) as u64;
        if self.state.storage().get_alarm().await?.is_none() {
            self.alarm_in(outbox::wait_ms(0)).await?;
        }
        Ok(Receipt { id, ahead })
    }

    fn status(&self, id: &str) -> Result<Option<serde_json::Value>> {
        self.ensure_table()?;
        let rows: Vec<Row> = self
            .state
            .storage()
            .sql()
            .exec(
                "SELECT id, status, attempts, error, created_ms, done_ms, payload \
                 FROM entries WHERE id = ?",
                vec![id.into()],
            )?
            .to_array()?;
        Ok(rows.into_iter().next().map(|r| {
            let iso = |ms: i64| crate::domain::time::iso(ms.max(0) as u64);
            let kind = serde_json::from_str::<serde_json::Value>(&r.payload)
                .ok()
                .and_then(|p| p["kind"].as_str().map(str::to_owned));
            json!({
                "id": r.id,
                "status": Status::parse(&r.status).map_or("unknown", Status::name),
                "kind": kind,
                "attempts": r.attempts,
                "error": r.error,
                "queued_at": iso(r.created_ms),
                "done_at": r.done_ms.map(iso),
            })
        }))
    }

    fn finish(&self, seq: i64, status: Status, attempts: i64, error: Option<&str>) -> Result<()> {
        self.state.storage().sql().exec(
            "UPDATE entries SET status = ?, attempts = ?, error = ?, done_ms = ? WHERE seq = ?",
            vec![
                status.name().into(),
                attempts.into(),
                error.map_or(worker::SqlStorageValue::Null, Into::into),
                (now_ms() as i64).into(),
                seq.into(),
            ],
        )?;
        Ok(())
    }

    /// Replays the oldest queued entries; when to look again, if at all.
    async fn replay(&self) -> Result<Option<u64>> {
        self.ensure_table()?;
        let sql = self.state.storage().sql();
        sql.exec(
            "DELETE FROM entries WHERE status <> 'queued' AND done_ms < ?",
            vec![(now_ms().saturating_sub(KEEP_DONE_MS) as i64).into()],
        )?;
        let config = Config::load(&self.env).map_err(worker::Error::RustError)?;
        for _ in 0..BATCH {
            let heads: Vec<Head> = sql
                .exec(
                    "SELECT seq, id, payload, attempts FROM entries \
                     WHERE status = 'queued' ORDER BY seq LIMIT 1",
                    None,
                )?
                .to_array()?;
            let Some(head) = heads.into_iter().next() else {
                self.waits.set(0);
                return Ok(None);
            };
            let ctx = Ctx::for_object(
                config.clone(),
                self.env.clone(),
                format!("outbox-{}", head.id),
            );
            let attempts = head.attempts + 1;
            let queued = match entry(&head.payload) {
                Ok(q) => q,
                Err(why) => {
                    tracing::error!(outbox_id = %head.id, reason = %why, "outbox: entry failed");
                    self.finish(head.seq, Status::Failed, attempts, Some(&why))?;
                    continue;
                }
            };
            let mut superseded = false;
            let (result, table) = match queued {
                q @ Queued::Write { .. } => issue_writes::replay(&ctx, &q).await,
                Queued::Membership { change } => match membership::apply(&ctx, &change).await {
                    Ok(answer) => {
                        superseded = answer.superseded;
                        (Ok(()), None)
                    }
                    Err(e) => (Err(e), None),
                },
            };
            match outbox::replayed(&result, table, attempts as u32) {
                Replayed::Applied if superseded => {
                    tracing::info!(outbox_id = %head.id, "outbox: superseded by a newer change");
                    let why = Some(outbox::SUPERSEDED);
                    self.finish(head.seq, Status::Superseded, attempts, why)?;
                }
                Replayed::Applied => {
                    tracing::info!(outbox_id = %head.id, "outbox: replayed");
                    self.finish(head.seq, Status::Applied, attempts, None)?;
                }
                Replayed::Failed(why) => {
                    tracing::error!(outbox_id = %head.id, reason = %why, "outbox: entry failed");
                    self.finish(head.seq, Status::Failed, attempts, Some(&why))?;
                }
                Replayed::Retry(why) => {
                    sql.exec(
                        "UPDATE entries SET attempts = ?, error = ? WHERE seq = ?",
                        vec![attempts.into(), why.into(), head.seq.into()],
                    )?;
                    return Ok(Some(outbox::wait_ms(0)));
                }
                Replayed::Wait => {
                    let waits = self.waits.get();
                    self.waits.set(waits.saturating_add(1));
                    return Ok(Some(outbox::wait_ms(waits)));
                }
            }
            self.waits.set(0);
        }
        Ok(Some(0))
    }
}

impl DurableObject for Outbox {
    fn new(state: State, env: Env) -> Self {
        Outbox {
            state,
            env,
            waits: Cell::new(0),
            ready: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let path = req.path();
        match (req.method(), path.as_str()) {
            (Method::Post, "/enqueue") => {
                let queued: Queued = match super::body(&mut req).await {
                    Ok(q) => q,
                    Err(e) => return Response::error(format!("bad entry: {e}"), 400),
                };
                Response::from_json(&self.enqueue(&queued).await?)
            }
            (Method::Get, p) if p.starts_with("/status/") => {
                match self.status(&p["/status/".len()..])? {
                    Some(body) => Response::from_json(&body),
                    None => Response::error("no such entry", 404),
                }
            }
            _ => super::not_found(),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        match self.replay().await {
            Ok(Some(ms)) => {
                self.alarm_in(ms).await?;
                Response::ok("more")
            }
            Ok(None) => Response::ok("empty"),
            Err(e) => {
                tracing::error!(error = %e, "outbox: replay failed; trying again");
                self.alarm_in(outbox::wait_ms(3)).await?;
                Response::ok("retry")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::shape::fixture;
    use super::*;
    use crate::domain::writes::WriteKind;
    use crate::store::membership::Op;

    #[test]
    fn every_saved_shape_loads() {
        for (name, op) in [
            ("outbox.v1.membership.json", Op::Join),
            ("outbox.v2.membership.json", Op::Leave),
            ("outbox.v3.membership.json", Op::Join),
        ] {
            match entry(&fixture(name)) {
                Ok(Queued::Membership { change }) => {
                    assert_eq!(change.op, op, "{name}");
                    assert_eq!(change.user_id, "3b8e9a52-3f0e-4f35-8d7e-0c2b9e5f1a77");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
        for name in [
            "outbox.v1.write.json",
            "outbox.v2.write.json",
            "outbox.v3.write.json",
        ] {
            match entry(&fixture(name)) {
                Ok(Queued::Write { write, now_ms, .. }) => {
                    assert_eq!(write.kind, WriteKind::Post, "{name}");
                    assert_eq!(
                        write.issue_id.as_deref(),
                        Some("6f1d0f3e-2b1c-4a55-9d0e-5f3b2c1a0e11"),
                        "{name}"
                    );
                    assert_eq!(
                        write.body,
                        Some(json!({"content": "Still flooded on Mill Lane"})),
                        "{name}"
                    );
                    assert_eq!(now_ms, 1_796_122_417_300, "{name}");
                }
                other => panic!("{name}: {other:?}"),
            }
        }
    }

    #[test]
    fn entries_are_saved_with_their_version_and_read_back() {
        let Ok(q) = entry(&fixture("outbox.v1.write.json")) else {
            panic!("fixture")
        };
        let text = shape::encode(&q).expect("encode");
        assert!(
            text.contains("\"v\":3") && text.contains("\"kind\":\"write\""),
            "{text}"
        );
        assert_eq!(entry(&text), Ok(q));
    }

    #[test]
    fn an_unreadable_entry_fails_with_the_reason() {
        let why = entry(&fixture("outbox.unreadable.json")).expect_err("unreadable");
        assert!(
            why.starts_with("unreadable entry: saved state (version 2)"),
            "{why}"
        );
        assert!(why.contains("teleport"), "{why}");
    }
}
