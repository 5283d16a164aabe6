//! The InvalidationLog Durable Object (one, named [`NAME`]): the cache's
//! recent invalidations in one place, published to one KV key that every
//! isolate reads every few seconds instead of each tag's own key (see
//! [`crate::edge::generations`] for why that is exact).
//!
//! Requests (from the Worker only):
//! - `POST /record` with `{"tags": {"<tag>": "<generation>", ...}}`: moves
//!   each tag's generation on ([`next_generation`]) and notes when (the
//!   answer comes after the storage write), and publishes;
//! - `POST /publish`: publishes (an isolate that found no log asks for one).
//!
//! Publishing writes [`LOG_KEY`] at most once a second (KV takes about one
//! write per second per key): at once if the last was longer ago, else by
//! the alarm. It first drops what is older than [`LOG_WINDOW_MS`]; the
//! log's `from` is the later of that cut and the time the table was made,
//! so a log never claims invalidations it does not hold.
//!
//! Saved state: table `recent` (tag, generation as text, `at_ms`) and table
//! `meta` (`since_ms`: when `recent` was made; `published_ms`). These are
//! the tables' first layout; a change adds columns with defaults.

use std::cell::Cell;
use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use worker::{durable_object, Env, Method, Request, Response, Result, State};

use super::client;
use crate::domain::time::now_ms;
use crate::edge::generations::{next_generation, Log, LOG_KEY, LOG_WINDOW_MS};
use crate::http::context::Ctx;

/// The one object's name.
pub const NAME: &str = "all";
/// The shortest time between two publications.
const PUBLISH_EVERY_MS: u64 = 1_000;
/// Most tags one record may carry (a write touches a handful).
pub const MAX_TAGS: usize = 64;

#[derive(Serialize, Deserialize)]
struct Record {
    tags: HashMap<String, String>,
}

#[derive(Deserialize)]
struct Meta {
    value: i64,
}

#[derive(Deserialize)]
struct Held {
    generation: String,
}

#[derive(Deserialize)]
struct Row {
    tag: String,
    generation: String,
}

#[durable_object]
pub struct InvalidationLog {
    state: State,
    env: Env,
    /// The tables exist (made once per instance, not per call).
    ready: Cell<bool>,
}

impl InvalidationLog {
    fn ensure_tables(&self) -> Result<()> {
        if self.ready.get() {
            return Ok(());
        }
        let sql = self.state.storage().sql();
        sql.exec(
            "CREATE TABLE IF NOT EXISTS recent (\
               tag TEXT PRIMARY KEY, generation TEXT NOT NULL, at_ms INTEGER NOT NULL)",
            None,
        )?;
        sql.exec(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL)",
            None,
        )?;
        // The first time only: from now on every record is in `recent`.
        sql.exec(
            "INSERT OR IGNORE INTO meta (key, value) VALUES ('since_ms', ?)",
            vec![(now_ms() as i64).into()],
        )?;
        self.ready.set(true);
        Ok(())
    }

    fn meta(&self, key: &str) -> Result<Option<u64>> {
        let rows: Vec<Meta> = self
            .state
            .storage()
            .sql()
            .exec("SELECT value FROM meta WHERE key = ?", vec![key.into()])?
            .to_array()?;
        Ok(rows.first().map(|m| m.value.max(0) as u64))
    }

    fn record(&self, record: &Record) -> Result<()> {
        let sql = self.state.storage().sql();
        let now = now_ms() as i64;
        for (tag, recorded) in &record.tags {
            let held: Vec<Held> = sql
                .exec(
                    "SELECT generation FROM recent WHERE tag = ?",
                    vec![tag.as_str().into()],
                )?
                .to_array()?;
            let generation = next_generation(held.first().map(|h| h.generation.as_str()), recorded);
            sql.exec(
                "INSERT INTO recent (tag, generation, at_ms) VALUES (?, ?, ?) \
                 ON CONFLICT(tag) DO UPDATE SET generation = excluded.generation, \
                   at_ms = excluded.at_ms",
                vec![tag.as_str().into(), generation.into(), now.into()],
            )?;
        }
        Ok(())
    }

    /// Publishes now if the last publication is a second old, else sets the
    /// alarm for when it will be.
    async fn publish_soon(&self) -> Result<()> {
        let now = now_ms();
        let last = self.meta("published_ms")?.unwrap_or(0);
        let next = last + PUBLISH_EVERY_MS;
        if now >= next {
            self.publish().await
        } else {
            self.state
                .storage()
                .set_alarm(Duration::from_millis(next - now))
                .await
        }
    }

    /// [`Self::publish_soon`]; a publication that fails is tried again by
    /// the alarm (what was recorded is kept either way).
    async fn publish_or_retry(&self) -> Result<()> {
        if let Err(e) = self.publish_soon().await {
            tracing::error!(error = %e, "invalidation log: cannot publish; trying again in 1 s");
            self.state
                .storage()
                .set_alarm(Duration::from_millis(PUBLISH_EVERY_MS))
                .await?;
        }
        Ok(())
    }

    async fn publish(&self) -> Result<()> {
        let now = now_ms();
        let sql = self.state.storage().sql();
        let cut = now.saturating_sub(LOG_WINDOW_MS);
        sql.exec(
            "DELETE FROM recent WHERE at_ms < ?",
            vec![(cut as i64).into()],
        )?;
        let since = self.meta("since_ms")?.unwrap_or(now);
        let rows: Vec<Row> = sql
            .exec("SELECT tag, generation FROM recent", None)?
            .to_array()?;
        let log = Log {
            v: Log::VERSION,
            from: since.max(cut),
            at: now,
            tags: rows.into_iter().map(|r| (r.tag, r.generation)).collect(),
        };
        let text =
            serde_json::to_string(&log).map_err(|e| worker::Error::RustError(e.to_string()))?;
        self.env
            .kv("CACHE")?
            .put(LOG_KEY, text)?
            .execute()
            .await
            .map_err(|e| worker::Error::RustError(format!("{e:?}")))?;
        sql.exec(
            "INSERT INTO meta (key, value) VALUES ('published_ms', ?) \
             ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            vec![(now as i64).into()],
        )?;
        Ok(())
    }
}

impl DurableObject for InvalidationLog {
    fn new(state: State, env: Env) -> Self {
        InvalidationLog {
            state,
            env,
            ready: Cell::new(false),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        self.ensure_tables()?;
        match (req.method(), req.path().as_str()) {
            (Method::Post, "/record") => {
                let record: Record = match super::body(&mut req).await {
                    Ok(r) => r,
                    Err(e) => return Response::error(format!("bad record: {e}"), 400),
                };
                if record.tags.is_empty() || record.tags.len() > MAX_TAGS {
                    return Response::error(format!("1 to {MAX_TAGS} tags"), 400);
                }
                self.record(&record)?;
                self.publish_or_retry().await?;
                Response::empty().map(|r| r.with_status(204))
            }
            (Method::Post, "/publish") => {
                self.publish_or_retry().await?;
                Response::empty().map(|r| r.with_status(204))
            }
            _ => super::not_found(),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        self.ensure_tables()?;
        self.publish_or_retry().await?;
        Response::ok("published")
    }
}

/// Records invalidations (tag -> new generation) in the log. A failure is
/// logged: the writer's own isolate already moved on, and other isolates
/// then see the write when their entries' fresh time runs out.
/// More tags than one record takes (a phone link that merged a user of many
/// issues) go in several.
pub async fn record(ctx: &Ctx, tags: HashMap<String, String>) {
    for record in records(tags) {
        let sent = match serde_json::to_string(&record) {
            Ok(body) => send(ctx, "/record", Some(body)).await,
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = sent {
            tracing::warn!(request_id = %ctx.request_id, error = %e, tags = record.tags.len(), "invalidation log: invalidations were not recorded");
        }
    }
}

/// `tags` in records of at most [`MAX_TAGS`].
fn records(tags: HashMap<String, String>) -> Vec<Record> {
    let tags: Vec<(String, String)> = tags.into_iter().collect();
    tags.chunks(MAX_TAGS)
        .map(|chunk| Record {
            tags: chunk.iter().cloned().collect(),
        })
        .collect()
}

/// Asks the log to publish (an isolate found none).
pub async fn ask_to_publish(ctx: &Ctx) {
    if let Err(e) = send(ctx, "/publish", None).await {
        tracing::warn!(request_id = %ctx.request_id, error = %e, "invalidation log: cannot ask for a publication");
    }
}

async fn send(ctx: &Ctx, path: &str, body: Option<String>) -> std::result::Result<(), String> {
    let reply = client::call(ctx, "INVALIDATION_LOG", NAME, Method::Post, path, body)
        .await
        .map_err(|e| e.to_string())?;
    match reply.status {
        204 => Ok(()),
        s => Err(format!("answered {s}: {:.200}", reply.text)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn many_tags_go_in_several_records_none_lost() {
        let tags: HashMap<String, String> = (0..(MAX_TAGS * 2 + 1))
            .map(|i| (format!("issue:{i}"), i.to_string()))
            .collect();
        let records = records(tags.clone());
        assert_eq!(records.len(), 3);
        assert!(records
            .iter()
            .all(|r| (1..=MAX_TAGS).contains(&r.tags.len())));
        let back: HashMap<String, String> = records.into_iter().flat_map(|r| r.tags).collect();
        assert_eq!(back, tags);
        assert!(super::records(HashMap::new()).is_empty());
    }
}
