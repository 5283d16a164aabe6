//! The issue write routes: `POST /api/issues` (create, linking
//! organisations), `POST /api/issues/:id/feed` (a post by the caller),
//! `POST /api/issues/:id/synonyms` and `POST /api/issues/:id/actions`.
//!
//! **One transaction per write.** Everything a write changes goes to the
//! primary as one Hrana batch (`BEGIN IMMEDIATE .. COMMIT`, [`Db::transaction`]):
//! the row itself, the caller's `users` row when the caller is new (see
//! [`crate::edge::identity`]), today's `issue_daily` count (posts, actions), the
//! organisation links of a new issue, the idempotency record. Every
//! statement is conditional on the write being valid (the issue exists, the
//! organisations exist, the synonym is new), so an invalid write changes
//! nothing, and a last `SELECT` says why it did not happen: 404 (no such
//! issue), 400 naming `organisation_ids` (unknown organisations), 409
//! `conflict` (the issue already has that synonym).
//!
//! **Round trips to the primary**: a write without `Idempotency-Key` costs
//! exactly one (the transaction). With a key, two: one read of
//! `idempotency_keys` first, then the transaction, which also inserts the
//! record (`status_code`, `response_body`, `expires_at` = now + 24 h). A
//! replay costs one (the read). A caller presenting a seed-era legacy cookie
//! adds the one-time upgrade of [`identity::caller`].
//!
//! **Idempotency.** The scope is the caller's user id (a new caller has a
//! fresh scope); the request hash covers the route, the issue and the body
//! ([`writes::request_hash`]). The same key with the same request replays the
//! first response (status and body byte for byte, `Idempotent-Replayed:
//! true`); with another request it is 422 `unprocessable`. Two concurrent
//! requests with one key both miss the read, but the record's primary key
//! `(scope, key)` lets only one transaction commit: the other fails on that
//! constraint, rolls back whole, reads the record and replays it. Only
//! successful writes are recorded; a refused one (404, 400, 409) may be
//! retried with its key. An expired record is deleted in the transaction
//! that replaces it.
//!
//! **Cache.** After the commit the write invalidates the tags of the reads
//! it changes (see [`Write::tags`]), so the writer's next `GET` misses and
//! sees it. A post is also passed on to the issue's counter object for its
//! live sockets, after the response (`wait_until`); its author's name comes
//! back in the write's check, so that costs no round trip, and a failure
//! is logged, never the post's. Times (`created_at`, `expires_at`, the `issue_daily` day) are
//! the Worker's clock, taken once per request.

use crate::domain::time::iso;
use crate::domain::time::now_ms;
use crate::store::value::{self as v, opt_text, text};
use serde_json::{json, Value};
use worker::Response;

use crate::domain::ids::Id;
use crate::domain::live::Post as LivePost;
use crate::domain::writes::{
    self, Fresh, Idempotency, NewAction, NewIssue, NewPost, NewSynonym, StoredWrite, WriteKind,
};
use crate::edge::cache;
use crate::edge::identity;
use crate::edge::outbox::{self, Queued};
use crate::edge::reads::{self, ISSUES_TAG, ORGANISATIONS_TAG};
use crate::http::context::Ctx;
use crate::http::error::{AppError, AppResult, Code};
use crate::http::router::Route;
use crate::objects::issue_counter;
use crate::store::db::{Query, Record, Written};

/// How long an idempotency record is replayed.
pub const IDEMPOTENCY_TTL_MS: u64 = 24 * 60 * 60 * 1000;

/// A validated write.
#[derive(Debug, Clone, PartialEq)]
pub enum Write {
    Issue(NewIssue),
    Post(Id, NewPost),
    Synonym(Id, NewSynonym),
    Action(Id, NewAction),
}

impl Write {
    /// A stored write, checked: a malformed issue id, then a bad body,
    /// is a 400 naming the field.
    pub fn parse(stored: &StoredWrite) -> AppResult<Write> {
        let issue = || Id::parse(stored.issue_id.as_deref().unwrap_or_default(), "id");
        let body = stored.body.as_ref();
        Ok(match stored.kind {
            WriteKind::Issue => Write::Issue(NewIssue::parse(body)?),
            WriteKind::Post => Write::Post(issue()?, NewPost::parse(body)?),
            WriteKind::Synonym => Write::Synonym(issue()?, NewSynonym::parse(body)?),
            WriteKind::Action => Write::Action(issue()?, NewAction::parse(body)?),
        })
    }

    /// The ids it creates.
    pub fn fresh(&self) -> Fresh {
        match self {
            Write::Issue(new) => Fresh::new(new.organisation_ids.len()),
            _ => Fresh::new(0),
        }
    }

    /// The issue the write goes to (none for a new issue).
    pub fn issue(&self) -> Option<&Id> {
        match self {
            Write::Issue(_) => None,
            Write::Post(id, _) | Write::Synonym(id, _) | Write::Action(id, _) => Some(id),
        }
    }

    pub fn kind(&self) -> WriteKind {
        match self {
            Write::Issue(_) => WriteKind::Issue,
            Write::Post(..) => WriteKind::Post,
            Write::Synonym(..) => WriteKind::Synonym,
            Write::Action(..) => WriteKind::Action,
        }
    }

    /// The table the new row goes to.
    pub fn table(&self) -> &'static str {
        match self {
            Write::Issue(_) => "issues",
            Write::Post(..) => "feed",
            Write::Synonym(..) => "synonyms",
            Write::Action(..) => "actions",
        }
    }

    /// Cache tags of the reads this write changes.
    pub fn tags(&self) -> Vec<String> {
        match self {
            // Lists and searches; a linked organisation's detail lists its
            // issues and the organisation list counts them.
            Write::Issue(new) => {
                let mut tags = vec![ISSUES_TAG.to_owned()];
                if !new.organisation_ids.is_empty() {
                    tags.push(ORGANISATIONS_TAG.to_owned());
                    tags.extend(new.organisation_ids.iter().map(reads::org_tag));
                }
                tags
            }
            Write::Post(id, _) => vec![reads::feed_tag(id)],
            // Search matches synonyms.
            Write::Synonym(id, _) => vec![reads::issue_tag(id), ISSUES_TAG.to_owned()],
            // The actions list and the detail's action_count.
            Write::Action(id, _) => vec![reads::issue_tag(id)],
        }
    }

    /// The hash an `Idempotency-Key` is matched with: the route, the issue
    /// and the body as sent.
    pub fn request_hash(&self, body: Option<&Value>) -> String {
        writes::request_hash(&json!({
            "write": self.kind().name(),
            "issue": self.issue().map(Id::as_str),
            "body": body.cloned().unwrap_or(Value::Null),
        }))
    }

    /// Where a created resource lives, from the response body: only a new
    /// issue has a route of its own.
    pub fn location(&self, body: &str) -> Option<String> {
        match self {
            Write::Issue(_) => serde_json::from_str::<Value>(body)
                .ok()
                .and_then(|b| b["id"].as_str().map(|id| format!("/api/issues/{id}"))),
            _ => None,
        }
    }
}

/// A response as stored and replayed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub body: String,
    pub location: Option<String>,
}

/// The statements of one write and the response it gives when it commits.
#[derive(Debug, Clone)]
pub struct Plan {
    pub queries: Vec<Query>,
    pub reply: Reply,
}

/// The JSON array of `ids`, as an argument for `json_each`.
fn json_list<'a>(ids: impl IntoIterator<Item = &'a str>) -> v::Value {
    v::text(Value::from(ids.into_iter().collect::<Vec<_>>()).to_string())
}

const ISSUE_EXISTS: &str = "EXISTS (SELECT 1 FROM issues WHERE id = ?2)";

/// The caller's `users` row when it does not exist yet, only when `cond`
/// holds (`?1` user, `?2` the id `cond` refers to).
fn user_row(user_id: &str, cond: &str, cond_id: &str) -> Query {
    Query::new(
        format!("INSERT INTO users (id) SELECT ?1 WHERE {cond} ON CONFLICT (id) DO NOTHING"),
        vec![text(user_id), text(cond_id)],
    )
}

/// `EXISTS` of the new row, with its id as `?2`.
fn row_written(table: &str) -> String {
    format!("EXISTS (SELECT 1 FROM {table} WHERE id = ?2)")
}

/// Today's posts or actions of the issue, counted when the row was written.
fn daily(column: &str, table: &str, issue: &Id, row: &str, day: &str) -> Query {
    Query::new(
        format!(
            "INSERT INTO issue_daily (issue_id, day, {column}) \
             SELECT ?1, ?3, 1 WHERE {} \
             ON CONFLICT (issue_id, day) DO UPDATE SET {column} = {column} + 1",
            row_written(table)
        ),
        vec![text(issue.as_str()), text(row), text(day)],
    )
}

/// The last statement of every write: whether the row was written and, if
/// not, why; for a post also its author's name (for the live sockets).
fn check(write: &Write, row: &str, user_id: &str) -> Query {
    match write {
        Write::Issue(new) => Query::new(
            "SELECT EXISTS (SELECT 1 FROM issues WHERE id = ?1) AS written, \
             (SELECT json_group_array(value) FROM json_each(?2) \
              WHERE value NOT IN (SELECT id FROM organisations)) AS unknown_organisations",
            vec![
                text(row),
                json_list(new.organisation_ids.iter().map(Id::as_str)),
            ],
        ),
        Write::Post(issue, _) => Query::new(
            "SELECT EXISTS (SELECT 1 FROM issues WHERE id = ?1) AS issue_exists, \
             EXISTS (SELECT 1 FROM feed WHERE id = ?2) AS written, \
             (SELECT display_name FROM users WHERE id = ?3) AS author",
            vec![text(issue.as_str()), text(row), text(user_id)],
        ),
        Write::Synonym(issue, _) | Write::Action(issue, _) => Query::new(
            format!(
                "SELECT EXISTS (SELECT 1 FROM issues WHERE id = ?1) AS issue_exists, \
                 {} AS written",
                row_written(write.table())
            ),
            vec![text(issue.as_str()), text(row)],
        ),
    }
}

/// The statements that write, and the body of the 201.
fn statements(write: &Write, user_id: &str, fresh: &Fresh, now: &str) -> (Vec<Query>, Value) {
    let row = fresh.row.as_str();
    let day = &now[..10.min(now.len())];
    match write {
        Write::Issue(new) => {
            let orgs = || json_list(new.organisation_ids.iter().map(Id::as_str));
            let mut qs = vec![Query::new(
                "INSERT INTO issues (id, name, category, description, created_at, updated_at) \
                 SELECT ?1, ?2, ?3, ?4, ?5, ?5 WHERE NOT EXISTS (SELECT 1 FROM json_each(?6) \
                 WHERE value NOT IN (SELECT id FROM organisations))",
                vec![
                    text(row),
                    text(&new.name),
                    text(new.category),
                    text(&new.description),
                    text(now),
                    orgs(),
                ],
            )];
            if !new.organisation_ids.is_empty() {
                let links: Vec<Value> = fresh
                    .links
                    .iter()
                    .zip(&new.organisation_ids)
                    .map(|(link, org)| json!([link, org.as_str()]))
                    .collect();
                qs.push(Query::new(
                    "INSERT INTO issue_organisation (id, issue_id, organisation_id, created_at) \
                     SELECT json_extract(value, '$[0]'), ?1, json_extract(value, '$[1]'), ?2 \
                     FROM json_each(?3) WHERE EXISTS (SELECT 1 FROM issues WHERE id = ?1)",
                    vec![
                        text(row),
                        text(now),
                        v::text(Value::from(links).to_string()),
                    ],
                ));
            }
            qs.push(user_row(user_id, &row_written("issues"), row));
            let body = json!({
                "id": row,
                "name": new.name,
                "category": new.category,
                "description": new.description,
                "rioter_count": 0,
                "trending_delta": 0,
                "created_at": now,
                "updated_at": now,
                "organisation_ids": new.organisation_ids.iter().map(Id::as_str).collect::<Vec<_>>(),
            });
            (qs, body)
        }
        Write::Post(issue, post) => {
            let qs = vec![
                // Before the post: its user_id refers to the row.
                user_row(user_id, ISSUE_EXISTS, issue.as_str()),
                Query::new(
                    format!(
                        "INSERT INTO feed (id, issue_id, user_id, content, created_at) \
                         SELECT ?1, ?2, ?3, ?4, ?5 WHERE {ISSUE_EXISTS}"
                    ),
                    vec![
                        text(row),
                        text(issue.as_str()),
                        text(user_id),
                        text(&post.content),
                        text(now),
                    ],
                ),
                daily("posts", "feed", issue, row, day),
            ];
            let body = json!({
                "id": row,
                "issue_id": issue.as_str(),
                "content": post.content,
                "likes": 0,
                "created_at": now,
                "archived": false,
            });
            (qs, body)
        }
        Write::Synonym(issue, synonym) => {
            let qs = vec![
                Query::new(
                    format!(
                        "INSERT INTO synonyms (id, issue_id, term, created_at) \
                         SELECT ?1, ?2, ?3, ?4 WHERE {ISSUE_EXISTS} \
                         ON CONFLICT (issue_id, term) DO NOTHING"
                    ),
                    vec![
                        text(row),
                        text(issue.as_str()),
                        text(&synonym.term),
                        text(now),
                    ],
                ),
                user_row(user_id, &row_written("synonyms"), row),
            ];
            let body = json!({
                "id": row,
                "issue_id": issue.as_str(),
                "term": synonym.term,
                "created_at": now,
            });
            (qs, body)
        }
        Write::Action(issue, action) => {
            let qs = vec![
                Query::new(
                    format!(
                        "INSERT INTO actions (id, issue_id, title, description, type, \
                         time_required, external_url, created_at) \
                         SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 WHERE {ISSUE_EXISTS}"
                    ),
                    vec![
                        text(row),
                        text(issue.as_str()),
                        text(&action.title),
                        text(&action.description),
                        text(action.kind),
                        opt_text(action.time_required.as_deref()),
                        opt_text(action.external_url.as_deref()),
                        text(now),
                    ],
                ),
                user_row(user_id, &row_written("actions"), row),
                daily("actions", "actions", issue, row, day),
            ];
            let body = json!({
                "id": row,
                "issue_id": issue.as_str(),
                "title": action.title,
                "description": action.description,
                "type": action.kind,
                "time_required": action.time_required,
                "external_url": action.external_url,
                "created_at": now,
            });
            (qs, body)
        }
    }
}

/// Every statement of one write, in order: (with a key) the expired record
/// removed, the write, (with a key) the new record, the check.
pub fn plan(
    write: &Write,
    user_id: &str,
    fresh: &Fresh,
    now_ms: u64,
    idempotency: Option<&Idempotency>,
) -> Plan {
    let now = iso(now_ms);
    let (writes, body) = statements(write, user_id, fresh, &now);
    let body = body.to_string();
    let mut queries = Vec::with_capacity(writes.len() + 3);
    if let Some(i) = idempotency {
        queries.push(Query::new(
            "DELETE FROM idempotency_keys WHERE scope = ?1 AND key = ?2 AND expires_at <= ?3",
            vec![text(&i.scope), text(&i.key), text(&now)],
        ));
    }
    queries.extend(writes);
    if let Some(i) = idempotency {
        // No ON CONFLICT: a concurrent first use of the key wins, this
        // transaction fails on the primary key and rolls back.
        queries.push(Query::new(
            format!(
                "INSERT INTO idempotency_keys \
                 (scope, key, request_hash, status_code, response_body, created_at, expires_at) \
                 SELECT ?1, ?3, ?4, 201, ?5, ?6, ?7 WHERE {}",
                row_written(write.table())
            ),
            vec![
                text(&i.scope),
                text(&fresh.row),
                text(&i.key),
                text(&i.hash),
                text(&body),
                text(&now),
                text(iso(now_ms.saturating_add(IDEMPOTENCY_TTL_MS))),
            ],
        ));
    }
    queries.push(check(write, &fresh.row, user_id));
    let location = write.location(&body);
    Plan {
        queries,
        reply: Reply {
            status: 201,
            body,
            location,
        },
    }
}

fn flag(row: Option<&Record>, name: &str) -> bool {
    row.and_then(|r| r.get(name)).and_then(Value::as_i64) == Some(1)
}

/// Reads the check (the last statement of a [`plan`]): `Ok` when the row was
/// written, else the error that says why not.
pub fn outcome(write: &Write, written: &[Written]) -> AppResult<()> {
    let check = written.last().and_then(|w| w.rows.first());
    if check.is_none() {
        return Err(AppError::internal("the write's check is missing"));
    }
    if flag(check, "written") {
        return Ok(());
    }
    match write {
        Write::Issue(_) => {
            let unknown: Vec<String> = check
                .and_then(|r| r.get("unknown_organisations"))
                .and_then(Value::as_str)
                .and_then(|s| serde_json::from_str(s).ok())
                .unwrap_or_default();
            if unknown.is_empty() {
                return Err(AppError::internal("the issue was not written"));
            }
            let problem = format!("no organisation has the id {}", unknown.join(", "));
            Err(AppError::new(
                400,
                Code::ValidationFailed,
                format!("organisation_ids: {problem}"),
            )
            .with_details(json!({
                "field": "organisation_ids",
                "problem": problem,
                "unknown": unknown,
            })))
        }
        _ if !flag(check, "issue_exists") => Err(AppError::not_found(format!(
            "no issue has the id {}",
            write.issue().map(Id::as_str).unwrap_or_default()
        ))),
        Write::Synonym(_, synonym) => Err(AppError::new(
            409,
            Code::Conflict,
            format!("this issue already has the synonym {:?}", synonym.term),
        )
        .with_details(json!({ "field": "term" }))),
        _ => Err(AppError::internal(format!(
            "the {} was not written",
            write.kind().name()
        ))),
    }
}

/// The read of an earlier use of a key (only records not expired at `now`).
pub fn record_query(i: &Idempotency, now_ms: u64) -> Query {
    Query::new(
        "SELECT request_hash, status_code, response_body FROM idempotency_keys \
         WHERE scope = ?1 AND key = ?2 AND expires_at > ?3",
        vec![text(&i.scope), text(&i.key), text(iso(now_ms))],
    )
}

/// What an earlier use of the key means for this request: nothing (go
/// ahead), a replay of its response, or 422 when it was another request.
pub fn earlier(write: &Write, i: &Idempotency, rows: &[Record]) -> AppResult<Option<Reply>> {
    let Some(record) = rows.first() else {
        return Ok(None);
    };
    if record.get("request_hash").and_then(Value::as_str) != Some(i.hash.as_str()) {
        return Err(AppError::new(
            422,
            Code::Unprocessable,
            "this Idempotency-Key was used with a different request; use a new key",
        )
        .with_details(json!({ "field": "Idempotency-Key" })));
    }
    let status = record
        .get("status_code")
        .and_then(Value::as_i64)
        .and_then(|s| u16::try_from(s).ok());
    let body = record.get("response_body").and_then(Value::as_str);
    match (status, body) {
        (Some(status), Some(body)) => Ok(Some(Reply {
            status,
            location: write.location(body),
            body: body.to_owned(),
        })),
        _ => Err(AppError::new(
            409,
            Code::Conflict,
            "a request with this Idempotency-Key is still in progress; retry later",
        )
        .with_details(json!({ "field": "Idempotency-Key" }))),
    }
}

/// Did the transaction fail because the key's record already exists (a
/// concurrent request with the same key committed first)?
pub fn is_key_conflict(e: &AppError) -> bool {
    e.code == Code::Conflict
        && e.details
            .as_ref()
            .and_then(|d| d["reason"].as_str())
            .is_some_and(|r| r.contains("idempotency_keys"))
}

/// `POST` of a new issue, post, synonym or action.
pub async fn handle(
    ctx: &Ctx,
    route: &Route,
    body: Option<&Value>,
    idempotency_key: Option<&str>,
    cookie_header: Option<&str>,
) -> AppResult<Response> {
    run(ctx, route, body, idempotency_key, cookie_header).await
}

/// The write a route asks for, as data (what the outbox keeps).
fn stored_of(route: &Route, body: Option<&Value>) -> AppResult<StoredWrite> {
    let (kind, issue_id) = match route {
        Route::CreateIssue => (WriteKind::Issue, None),
        Route::AddPost { id } => (WriteKind::Post, Some(id)),
        Route::AddSynonym { id } => (WriteKind::Synonym, Some(id)),
        Route::AddAction { id } => (WriteKind::Action, Some(id)),
        _ => return Err(AppError::internal("not an issue write route")),
    };
    Ok(StoredWrite {
        kind,
        issue_id: issue_id.cloned(),
        body: body.cloned(),
    })
}

async fn run(
    ctx: &Ctx,
    route: &Route,
    body: Option<&Value>,
    idempotency_key: Option<&str>,
    cookie_header: Option<&str>,
) -> AppResult<Response> {
    let stored = stored_of(route, body)?;
    let write = Write::parse(&stored)?;
    let key = writes::idempotency_key(idempotency_key)?;
    let caller = identity::caller(ctx, cookie_header).await?;
    let now = now_ms();
    let idempotency = key.map(|key| Idempotency {
        scope: caller.user_id.clone(),
        key,
        hash: write.request_hash(body),
    });
    let fresh = write.fresh();
    match apply(
        ctx,
        &write,
        &caller.user_id,
        &fresh,
        idempotency.as_ref(),
        now,
    )
    .await
    {
        Ok((reply, replayed)) => respond(&reply, &caller.set_cookies, replayed),
        // The primary is away: keep the write, exactly as planned, for later.
        Err(e) if outbox::should_queue(&e) => {
            let queued = Queued::Write {
                write: stored,
                user_id: caller.user_id.clone(),
                fresh: fresh.clone(),
                now_ms: now,
                idempotency,
            };
            let receipt = outbox::enqueue(ctx, &queued).await?;
            outbox::accepted(
                &receipt,
                json!({ "resource": { "kind": write.kind().name(), "id": fresh.row } }),
                &caller.set_cookies,
            )
        }
        Err(e) => Err(e),
    }
}

/// Runs a parsed write for `user_id` with fresh ids (one round trip; two
/// with an idempotency key): the reply, and whether it replays an earlier one.
pub async fn perform(
    ctx: &Ctx,
    write: &Write,
    user_id: &str,
    idempotency: Option<&Idempotency>,
    now: u64,
) -> AppResult<(Reply, bool)> {
    apply(ctx, write, user_id, &write.fresh(), idempotency, now).await
}

/// Replays a write the outbox kept, with the ids and time it was planned with.
pub async fn replay(
    ctx: &Ctx,
    queued: &crate::edge::outbox::Queued,
) -> (AppResult<()>, Option<&'static str>) {
    let Queued::Write {
        write,
        user_id,
        fresh,
        now_ms,
        idempotency,
    } = queued
    else {
        return (Err(AppError::internal("not a write")), None);
    };
    let write = match Write::parse(write) {
        Ok(w) => w,
        Err(e) => return (Err(e), None),
    };
    let result = apply(ctx, &write, user_id, fresh, idempotency.as_ref(), *now_ms)
        .await
        .map(|_| ());
    (result, Some(write.table()))
}

/// Runs `write` with the given ids: with a key, an earlier use of it first.
async fn apply(
    ctx: &Ctx,
    write: &Write,
    user_id: &str,
    fresh: &Fresh,
    idempotency: Option<&Idempotency>,
    now: u64,
) -> AppResult<(Reply, bool)> {
    if let Some(i) = idempotency {
        if let Some(reply) = stored(ctx, write, i, now).await? {
            return Ok((reply, true));
        }
    }
    let plan = plan(write, user_id, fresh, now, idempotency);
    match ctx.db().transaction(plan.queries).await {
        Ok(written) => {
            outcome(write, &written)?;
            if let Write::Post(issue, post) = write {
                pass_on(ctx, issue, live_post(&fresh.row, post, &written, now));
            }
        }
        Err(e) => {
            let Some(i) = idempotency.filter(|_| is_key_conflict(&e)) else {
                return Err(e);
            };
            return match stored(ctx, write, i, now).await? {
                Some(reply) => Ok((reply, true)),
                None => Err(e),
            };
        }
    }
    // The write is committed: a failed invalidation must not turn it into an
    // error (the client would retry it); the fresh TTL bounds the staleness.
    if let Err(e) = cache::invalidate(ctx, &write.tags()).await {
        tracing::warn!(request_id = %ctx.request_id, error = ?e, "cache invalidation after a write failed");
    }
    Ok((plan.reply, false))
}

/// A committed post as the live sockets get it; its author's name is in the
/// write's check.
fn live_post(row: &str, post: &NewPost, written: &[Written], now_ms: u64) -> LivePost {
    let author = written
        .last()
        .and_then(|w| w.rows.first())
        .and_then(|r| r.get("author"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    LivePost {
        id: row.to_owned(),
        author,
        content: post.content.clone(),
        created_at: iso(now_ms),
    }
}

/// Tells the issue's object about a committed post after the response
/// (a failure is logged; the post stands).
fn pass_on(ctx: &Ctx, issue: &Id, post: LivePost) {
    let detached = ctx.detached();
    let issue = issue.as_str().to_owned();
    ctx.wait_until(async move { issue_counter::notify_post(&detached, &issue, &post).await });
}

/// The response an earlier use of the key stored, if any (one round trip).
async fn stored(
    ctx: &Ctx,
    write: &Write,
    i: &Idempotency,
    now_ms: u64,
) -> AppResult<Option<Reply>> {
    let rows = ctx
        .db()
        .queries(vec![record_query(i, now_ms)])
        .await?
        .pop()
        .unwrap_or_default();
    earlier(write, i, &rows)
}

fn respond(reply: &Reply, set_cookies: &[String], replayed: bool) -> AppResult<Response> {
    let mut response = Response::ok(reply.body.clone())?.with_status(reply.status);
    let headers = response.headers_mut();
    headers.set("Content-Type", "application/json")?;
    if let Some(location) = &reply.location {
        headers.set("Location", location)?;
    }
    if replayed {
        headers.set("Idempotent-Replayed", "true")?;
    }
    for cookie in set_cookies {
        headers.append("Set-Cookie", cookie)?;
    }
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUE: &str = "0b7f6c1e-5a1d-4c3e-9b8a-2f4d6e8a0c11";
    const ORG: &str = "6a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
    const USER: &str = "11111111-2222-4333-8444-555555555555";
    /// 2026-11-24T23:15:58.123Z
    const NOW: u64 = 1_795_562_158_123;

    fn issue_id() -> Id {
        Id::parse(ISSUE, "id").expect("id")
    }

    fn parse(route: Route, body: Value) -> AppResult<Write> {
        Write::parse(&stored_of(&route, Some(&body))?)
    }

    fn fresh(row: &str, links: usize) -> Fresh {
        Fresh {
            row: row.to_owned(),
            links: (0..links).map(|i| format!("link-{i}")).collect(),
        }
    }

    fn key(hash: &str) -> Idempotency {
        Idempotency {
            scope: USER.into(),
            key: "k1".into(),
            hash: hash.into(),
        }
    }

    fn new_issue(orgs: &[&str]) -> Write {
        parse(
            Route::CreateIssue,
            json!({"name": "Late trains", "category": "transport", "organisation_ids": orgs}),
        )
        .expect("issue")
    }

    fn every_write() -> Vec<Write> {
        let id = ISSUE.to_owned();
        vec![
            new_issue(&[ORG]),
            new_issue(&[]),
            parse(Route::AddPost { id: id.clone() }, json!({"content": "hi"})).expect("post"),
            parse(
                Route::AddSynonym { id: id.clone() },
                json!({"term": "Rail"}),
            )
            .expect("syn"),
            parse(
                Route::AddAction { id },
                json!({"title": "Write", "type": "idea", "external_url": "https://x.org"}),
            )
            .expect("action"),
        ]
    }

    /// The highest `?N` in `sql`.
    fn params(sql: &str) -> usize {
        let b = sql.as_bytes();
        let mut max = 0;
        for (i, c) in b.iter().enumerate() {
            if *c == b'?' {
                let digits: String = sql[i + 1..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                max = max.max(digits.parse().unwrap_or(0));
            }
        }
        max
    }

    #[test]
    fn timestamps_have_the_schemas_format() {
        assert_eq!(iso(NOW), "2026-11-24T23:15:58.123Z");
        assert_eq!(iso(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso(951_782_400_007), "2000-02-29T00:00:00.007Z");
    }

    #[test]
    fn routes_parse_into_writes_and_name_bad_fields() {
        let w = parse(
            Route::AddPost {
                id: ISSUE.to_uppercase(),
            },
            json!({"content": " x "}),
        )
        .expect("post");
        assert_eq!(
            w,
            Write::Post(
                issue_id(),
                NewPost {
                    content: "x".into()
                }
            )
        );
        let e = parse(Route::AddPost { id: "42".into() }, json!({"content": "x"})).unwrap_err();
        assert_eq!(e.details.expect("details")["field"], "id");
        let e = parse(Route::AddSynonym { id: ISSUE.into() }, json!({"word": "x"})).unwrap_err();
        assert_eq!(e.details.expect("details")["field"], "word");
        let e = Write::parse(&stored_of(&Route::CreateIssue, None).expect("stored")).unwrap_err();
        assert_eq!(e.details.expect("details")["field"], "body");
        assert_eq!(parse(Route::Me, json!({})).unwrap_err().status, 500);
    }

    #[test]
    fn every_statement_binds_exactly_its_arguments() {
        for write in every_write() {
            for idem in [None, Some(key("h"))] {
                let p = plan(&write, USER, &fresh("row", 1), NOW, idem.as_ref());
                for q in &p.queries {
                    assert_eq!(params(&q.sql), q.args.len(), "{}", q.sql);
                }
            }
        }
    }

    #[test]
    fn plans_write_conditionally_and_check_last() {
        let post = &every_write()[2];
        let p = plan(post, USER, &fresh("row", 0), NOW, None);
        let sqls: Vec<&str> = p.queries.iter().map(|q| q.sql.as_str()).collect();
        assert_eq!(sqls.len(), 4);
        assert!(sqls[0].starts_with("INSERT INTO users"), "the author first");
        assert!(sqls[1].starts_with("INSERT INTO feed"));
        assert!(sqls[2].contains("posts = posts + 1"));
        assert!(v::same(&p.queries[2].args[2], &v::text("2026-11-24")));
        assert!(sqls[3].starts_with("SELECT"));
        assert_eq!(p.reply.status, 201);
        assert_eq!(p.reply.location, None);
        let body: Value = serde_json::from_str(&p.reply.body).expect("json");
        assert_eq!(body["created_at"], "2026-11-24T23:15:58.123Z");

        let keyed = plan(post, USER, &fresh("row", 0), NOW, Some(&key("h")));
        assert_eq!(keyed.queries.len(), 6);
        assert!(keyed.queries[0]
            .sql
            .starts_with("DELETE FROM idempotency_keys"));
        let record = &keyed.queries[4];
        assert!(record.sql.starts_with("INSERT INTO idempotency_keys"));
        assert!(!record.sql.contains("ON CONFLICT"));
        assert!(v::same(&record.args[4], &v::text(keyed.reply.body.clone())));
        assert!(v::same(
            &record.args[6],
            &v::text("2026-11-25T23:15:58.123Z")
        ));

        let issue = plan(&every_write()[0], USER, &fresh("new", 1), NOW, None);
        assert_eq!(issue.queries.len(), 4, "issue, links, user, check");
        assert_eq!(issue.reply.location.as_deref(), Some("/api/issues/new"));
        assert!(v::same(
            &issue.queries[1].args[2],
            &v::text(format!(r#"[["link-0","{ORG}"]]"#))
        ));
        let bare = plan(&every_write()[1], USER, &fresh("new", 0), NOW, None);
        assert_eq!(
            bare.queries.len(),
            3,
            "no links statement without organisations"
        );
    }

    fn written(check: Value) -> Vec<Written> {
        vec![
            Written::default(),
            Written {
                rows: vec![check.as_object().expect("object").clone()],
                affected: 0,
            },
        ]
    }

    #[test]
    fn outcomes_tell_why_nothing_was_written() {
        let [issue, _, post, synonym, action] = &every_write()[..] else {
            panic!("five writes");
        };
        assert!(outcome(post, &written(json!({"issue_exists": 1, "written": 1}))).is_ok());
        let missing = json!({"issue_exists": 0, "written": 0});
        for w in [post, synonym, action] {
            assert_eq!(
                outcome(w, &written(missing.clone())).unwrap_err().status,
                404
            );
        }
        let dup = outcome(synonym, &written(json!({"issue_exists": 1, "written": 0}))).unwrap_err();
        assert_eq!((dup.status, dup.code.as_str()), (409, "conflict"));
        let odd = outcome(post, &written(json!({"issue_exists": 1, "written": 0}))).unwrap_err();
        assert_eq!(odd.status, 500);

        let unknown = json!({"written": 0, "unknown_organisations": format!("[\"{ORG}\"]")});
        let e = outcome(issue, &written(unknown)).unwrap_err();
        assert_eq!((e.status, e.code.as_str()), (400, "validation_failed"));
        let details = e.details.expect("details");
        assert_eq!(details["field"], "organisation_ids");
        assert_eq!(details["unknown"], json!([ORG]));
        let ok = json!({"written": 1, "unknown_organisations": "[]"});
        assert!(outcome(issue, &written(ok)).is_ok());
        assert_eq!(outcome(issue, &[]).unwrap_err().status, 500);
    }

    fn record(hash: &str, status: Value, body: Value) -> Vec<Record> {
        vec![
            json!({"request_hash": hash, "status_code": status, "response_body": body})
                .as_object()
                .expect("object")
                .clone(),
        ]
    }

    #[test]
    fn an_earlier_use_of_a_key_replays_or_refuses() {
        let issue = new_issue(&[]);
        let i = key("h1");
        assert_eq!(earlier(&issue, &i, &[]), Ok(None));
        let body = json!({"id": "abc"}).to_string();
        let replay = earlier(&issue, &i, &record("h1", json!(201), json!(body)))
            .expect("replay")
            .expect("some");
        assert_eq!(
            replay,
            Reply {
                status: 201,
                body,
                location: Some("/api/issues/abc".into())
            }
        );
        let other = earlier(&issue, &i, &record("h2", json!(201), json!("{}"))).unwrap_err();
        assert_eq!((other.status, other.code.as_str()), (422, "unprocessable"));
        let pending = earlier(&issue, &i, &record("h1", Value::Null, Value::Null)).unwrap_err();
        assert_eq!(pending.status, 409);
    }

    #[test]
    fn request_hashes_cover_route_issue_and_body() {
        let body = json!({"content": "x"});
        let other = "6a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d".to_owned();
        let a = parse(Route::AddPost { id: ISSUE.into() }, body.clone()).expect("a");
        let b = parse(Route::AddPost { id: other }, body.clone()).expect("b");
        assert_eq!(a.request_hash(Some(&body)), a.request_hash(Some(&body)));
        assert_ne!(a.request_hash(Some(&body)), b.request_hash(Some(&body)));
        assert_ne!(
            a.request_hash(Some(&body)),
            a.request_hash(Some(&json!({"content": "y"})))
        );
    }

    #[test]
    fn key_conflicts_are_told_from_other_conflicts() {
        let conflict = |reason: &str| {
            AppError::new(409, Code::Conflict, "x").with_details(json!({ "reason": reason }))
        };
        assert!(is_key_conflict(&conflict(
            "SQLITE_CONSTRAINT: UNIQUE constraint failed: idempotency_keys.scope, idempotency_keys.key"
        )));
        assert!(!is_key_conflict(&conflict(
            "SQLITE_CONSTRAINT: UNIQUE constraint failed: synonyms.issue_id, synonyms.term"
        )));
        assert!(!is_key_conflict(&AppError::internal("idempotency_keys")));
    }

    #[test]
    fn tags_follow_the_reads_a_write_changes() {
        let w = every_write();
        let org = Id::parse(ORG, "o").expect("org");
        assert_eq!(
            w[0].tags(),
            vec![
                ISSUES_TAG.to_owned(),
                ORGANISATIONS_TAG.to_owned(),
                reads::org_tag(&org)
            ]
        );
        assert_eq!(w[1].tags(), vec![ISSUES_TAG.to_owned()]);
        assert_eq!(w[2].tags(), vec![reads::feed_tag(&issue_id())]);
        assert_eq!(
            w[3].tags(),
            vec![reads::issue_tag(&issue_id()), ISSUES_TAG.to_owned()]
        );
        // Exactly the tags of the reads that show actions.
        let actions =
            crate::edge::reads::Read::Actions(issue_id(), crate::domain::paging::Page::first())
                .tags();
        let detail = crate::edge::reads::Read::Issue(issue_id()).tags();
        assert_eq!(w[4].tags(), actions);
        assert_eq!(w[4].tags(), detail);
    }

    /// The plans run on the real engine (the local primary's, in process):
    /// the SQL is valid, invalid writes change nothing, and the results read
    /// as the Worker reads them.
    mod on_libsql {
        use super::*;
        use crate::store::test_db::TestDb;

        /// The engine with the fixtures every case starts from.
        struct Db(TestDb);

        impl Db {
            fn new() -> Db {
                let db = TestDb::migrated();
                db.exec(&format!(
                    "INSERT INTO issues (id, name, category) VALUES ('{ISSUE}', 'Potholes', 'transport');
                     INSERT INTO organisations (id, name) VALUES ('{ORG}', 'Council');"
                ));
                Db(db)
            }

            fn transaction(&mut self, queries: Vec<Query>) -> AppResult<Vec<Written>> {
                self.0.transaction(queries)
            }

            fn read(&mut self, query: Query) -> Vec<Record> {
                self.0
                    .reads(vec![query])
                    .expect("read")
                    .pop()
                    .unwrap_or_default()
            }

            fn count(&self, sql: &str) -> i64 {
                self.0.int(sql)
            }

            fn run(
                &mut self,
                write: &Write,
                row: &str,
                idem: Option<&Idempotency>,
            ) -> AppResult<()> {
                let links = match write {
                    Write::Issue(n) => n.organisation_ids.len(),
                    _ => 0,
                };
                let p = plan(write, USER, &fresh(row, links), NOW, idem);
                let written = self.transaction(p.queries)?;
                outcome(write, &written)
            }
        }

        #[test]
        fn writes_apply_whole_or_not_at_all() {
            let mut db = Db::new();
            let [issue, bare, post, synonym, action] = &every_write()[..] else {
                panic!("five writes");
            };
            let new_row = "aaaaaaaa-0000-4000-8000-000000000001";
            db.run(issue, new_row, None).expect("issue");
            assert_eq!(
                db.count(&format!(
                    "SELECT count(*) FROM issue_organisation WHERE issue_id = '{new_row}' AND organisation_id = '{ORG}'"
                )),
                1
            );
            assert_eq!(
                db.count("SELECT count(*) FROM issues_fts WHERE issues_fts MATCH 'late'"),
                1,
                "searchable at once"
            );
            db.run(bare, "aaaaaaaa-0000-4000-8000-000000000002", None)
                .expect("no organisations");

            let unknown_org = "99999999-0000-4000-8000-000000000000";
            let e = db
                .run(
                    &new_issue(&[ORG, unknown_org]),
                    "bbbbbbbb-0000-4000-8000-000000000000",
                    None,
                )
                .unwrap_err();
            assert_eq!(e.details.expect("details")["unknown"], json!([unknown_org]));
            assert_eq!(
                db.count("SELECT count(*) FROM issues"),
                3,
                "nothing half-written"
            );
            assert_eq!(db.count("SELECT count(*) FROM issue_organisation"), 1);

            db.run(post, "cccccccc-0000-4000-8000-000000000001", None)
                .expect("post");
            db.run(post, "cccccccc-0000-4000-8000-000000000002", None)
                .expect("post");
            db.run(action, "dddddddd-0000-4000-8000-000000000001", None)
                .expect("action");
            assert_eq!(
                db.count(&format!(
                    "SELECT posts * 10 + actions FROM issue_daily WHERE issue_id = '{ISSUE}' AND day = '2026-11-24'"
                )),
                21
            );
            assert_eq!(
                db.count(&format!(
                    "SELECT count(*) FROM feed WHERE user_id = '{USER}'"
                )),
                2,
                "the new caller's row came with the first write"
            );
            assert_eq!(db.count("SELECT count(*) FROM users"), 1);

            db.run(synonym, "eeeeeeee-0000-4000-8000-000000000001", None)
                .expect("synonym");
            let dup = db
                .run(synonym, "eeeeeeee-0000-4000-8000-000000000002", None)
                .unwrap_err();
            assert_eq!(dup.status, 409);
            assert_eq!(
                db.count("SELECT count(*) FROM issues_fts WHERE issues_fts MATCH 'rail'"),
                1
            );

            let gone = Id::parse(unknown_org, "id").expect("id");
            for w in [
                Write::Post(
                    gone.clone(),
                    NewPost {
                        content: "x".into(),
                    },
                ),
                Write::Synonym(gone.clone(), NewSynonym { term: "x".into() }),
            ] {
                assert_eq!(
                    db.run(&w, "ffffffff-0000-4000-8000-000000000001", None)
                        .unwrap_err()
                        .status,
                    404
                );
            }
            assert_eq!(db.count("SELECT count(*) FROM feed"), 2);
        }

        #[test]
        fn a_posts_check_names_its_author_for_the_live_sockets() {
            let mut db = Db::new();
            let post = &every_write()[2];
            let Write::Post(_, new_post) = post else {
                panic!("a post");
            };
            let row = "cccccccc-0000-4000-8000-000000000009";
            let p = plan(post, USER, &fresh(row, 0), NOW, None);
            let written = db.transaction(p.queries).expect("post");
            let live = live_post(row, new_post, &written, NOW);
            assert_eq!(live.author, None, "a new user has no name yet");
            assert_eq!((live.id.as_str(), live.content.as_str()), (row, "hi"));
            assert_eq!(live.created_at, "2026-11-24T23:15:58.123Z");
            db.0.exec(&format!(
                "UPDATE users SET display_name = 'Ann' WHERE id = '{USER}'"
            ));
            let p = plan(
                post,
                USER,
                &fresh("cccccccc-0000-4000-8000-00000000000a", 0),
                NOW,
                None,
            );
            let written = db.transaction(p.queries).expect("post");
            let live = live_post(row, new_post, &written, NOW);
            assert_eq!(live.author.as_deref(), Some("Ann"));
        }

        #[test]
        fn a_key_is_recorded_with_the_write_and_guards_duplicates() {
            let mut db = Db::new();
            let post = &every_write()[2];
            let i = key("h1");
            db.run(post, "cccccccc-0000-4000-8000-000000000001", Some(&i))
                .expect("first");
            let rows = db.read(record_query(&i, NOW));
            let replay = earlier(post, &i, &rows)
                .expect("same request")
                .expect("replay");
            assert_eq!(replay.status, 201);
            let stored: Value = serde_json::from_str(&replay.body).expect("json");
            assert_eq!(stored["id"], "cccccccc-0000-4000-8000-000000000001");
            let other = Idempotency {
                hash: "h2".into(),
                ..i.clone()
            };
            assert_eq!(earlier(post, &other, &rows).unwrap_err().status, 422);

            // A concurrent duplicate missed the read: the key's primary key
            // refuses it, and nothing of it is written.
            let e = db
                .run(post, "cccccccc-0000-4000-8000-000000000002", Some(&i))
                .unwrap_err();
            assert!(is_key_conflict(&e), "{e:?}");
            assert_eq!(db.count("SELECT count(*) FROM feed"), 1);
            assert_eq!(
                db.count(&format!(
                    "SELECT posts FROM issue_daily WHERE issue_id = '{ISSUE}'"
                )),
                1
            );

            // An expired record is replaced.
            db.0.exec("UPDATE idempotency_keys SET expires_at = '2000-01-01T00:00:00.000Z'");
            db.run(post, "cccccccc-0000-4000-8000-000000000003", Some(&i))
                .expect("after expiry");
            assert_eq!(db.count("SELECT count(*) FROM idempotency_keys"), 1);
            assert_eq!(db.count("SELECT count(*) FROM feed"), 2);
        }
    }
}
