//! The IssueCounter Durable Object: one per issue (named by its id), the
//! exact live rioter count. The logic is in [`crate::domain::counter`] and
//! [`crate::store::membership`]; this file is the wiring to the runtime.
//!
//! Requests (from the Worker only; objects are not reachable from outside):
//! - `POST /change` with a [`Change`]: writes the membership through to the
//!   primary and answers [`Answer`] or the error envelope's fields;
//! - `GET /count`: the live count, without touching the primary;
//! - `POST /recount` with a [`RecountAsk`]: take the count again from
//!   `user_issues` now, with no change in flight, and answer [`Recount`]
//!   (the reconcile_counts job);
//! - `GET /live` with `Upgrade: websocket` and a [`Seed`] in
//!   [`live::SEED_HEADER`]: a socket that gets a snapshot, then the
//!   issue's updates ([`super::live`], [`crate::domain::live`]);
//! - `POST /post` with a [`Post`]: a post was made on the issue (pushed to
//!   the sockets with the next update).
//!
//! The object holds the issue's sockets because it sees every count change
//! the moment it happens: an update costs no call between objects. Its one
//! alarm serves both the flush to the primary and the next update, each
//! when due.
//!
//! State (SQLite storage of the object, one row of table `counter`): the
//! counts, whether they are trusted, and a version that moves with every
//! change, so the alarm knows whether the primary has the latest numbers;
//! saved as versioned JSON text ([`super::shape`]):
//! - version 1 (before versions): the same fields without `v`;
//!   `doubtful` may be missing (false);
//! - version 2: `{"v": 2, ...}`, plus `recovered`.
//!
//! A state that cannot be read is logged at error level with the object's
//! id, counted (`recovered`), and the object starts uncounted: the next
//! change takes the count again from `user_issues` in its transaction, so
//! the count is exact again at once and no change is refused.

use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::Duration;

use futures::channel::mpsc;
use futures::future::{select, Either};
use futures::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::json;
use worker::{
    durable_object, Env, Method, Request, Response, Result, State, WebSocket,
    WebSocketIncomingMessage,
};

use super::client;
use super::live;
use super::shape::{self, Shape};
use crate::domain::counter::{self, Counts};
use crate::domain::live::{self as push, Message, Pending, Post, Seed};
use crate::domain::time::now_ms;
use crate::http::config::Config;
use crate::http::context::Ctx;
use crate::http::error::{AppError, AppResult, Code};
use crate::runtime::Timeout;
use crate::store::db::Db;
use crate::store::membership::{self, Change, Op, Outcome};

/// How long a change waits in the queue before giving up (503).
const QUEUE_WAIT: Duration = Duration::from_secs(10);
/// Most changes in one transaction.
const GROUP_MAX: usize = 100;
/// A failed flush is tried again this much later.
const FLUSH_RETRY_MS: u64 = 5_000;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Stored {
    issue_id: Option<String>,
    counts: Counts,
    counted: bool,
    version: u64,
    flushed_version: u64,
    last_flush_ms: u64,
    /// The count may have missed a committed change: a group's outcome is
    /// unknown. Kept for the saved shapes and for inspection; an object
    /// that restarts trusts no saved count (a group may have been in
    /// flight when it stopped), so its first group takes the count again.
    #[serde(default)]
    doubtful: bool,
    /// How many times the saved state was unreadable and started afresh.
    #[serde(default)]
    recovered: u32,
}

impl Shape for Stored {
    const VERSION: u32 = 2;
}

/// The saved state, read; when unreadable (logged with `object`), a state
/// that has no count yet, so the next change counts again.
fn stored_from(text: &str, object: &str) -> Stored {
    shape::decode::<Stored>(text).unwrap_or_else(|why| {
        tracing::error!(object = %object, error = %why, "issue counter: saved state unreadable; counting again from user_issues");
        Stored {
            recovered: 1,
            ..Stored::default()
        }
    })
}

/// The answer to a change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Answer {
    pub changed: bool,
    pub member: bool,
    pub rioter_count: i64,
    /// Unix ms at which `rioter_count` was exact.
    pub as_of_ms: u64,
    /// A later join or leave of the same user and issue was recorded
    /// first, so this one changed nothing ([`crate::store::membership`]).
    #[serde(default)]
    pub superseded: bool,
    /// Where the change's time went inside the object.
    #[serde(default)]
    pub phases: Phases,
}

/// Where a change's time went inside the object, in milliseconds (the
/// Worker passes them on in `Server-Timing`; the hot-issue benchmark reads
/// them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phases {
    /// From its arrival until its group went out.
    pub queued_ms: u64,
    /// Its group's transaction at the primary, as the object waited for it.
    pub commit_ms: u64,
    /// After the transaction: the saved state, the alarm.
    pub after_ms: u64,
    /// How many changes went in its group.
    pub group: u32,
}

/// What the reconcile job asks of an issue's object.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecountAsk {
    pub issue_id: String,
    pub request_id: String,
}

/// The object's count before and after a recount (`before` is `None` when
/// it had no count yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recount {
    pub before: Option<i64>,
    pub after: i64,
}

/// What a queued change's waiter is told: its answer, or that no group is
/// in flight and it should send the queue itself.
enum Wake {
    Done(AppResult<Answer>),
    Lead,
}

/// How a queued change's answer reaches its request. Waiters sleep until
/// told (no polling: a hot issue has hundreds waiting at once).
type Waiter = mpsc::UnboundedSender<Wake>;

/// Queued changes, each with its waiter and when it arrived (Unix ms).
type Queue = RefCell<Vec<(Change, Waiter, u64)>>;

/// Clears the "a transaction is in flight" flag however the sender ends
/// (also if its request is cancelled), and wakes the first change still
/// waiting so that it takes over.
struct Sending<'a> {
    flag: &'a Cell<bool>,
    queue: &'a Queue,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        self.flag.set(false);
        wake_first(self.queue);
    }
}

/// Tells the oldest change still waiting that no one is sending.
fn wake_first(queue: &Queue) {
    if let Some((_, waiter, _)) = queue.borrow().iter().find(|(_, w, _)| !w.is_closed()) {
        let _ = waiter.unbounded_send(Wake::Lead);
    }
}

/// A recount waiting for the group in flight: changes start no group
/// meanwhile, so the recount goes next. Its end (also if it gives up or is
/// cancelled before it sends) hands the queue back.
struct RecountWaiting<'a> {
    count: &'a Cell<u32>,
    sending: &'a Cell<bool>,
    queue: &'a Queue,
}

impl<'a> RecountWaiting<'a> {
    fn new(count: &'a Cell<u32>, sending: &'a Cell<bool>, queue: &'a Queue) -> Self {
        count.set(count.get() + 1);
        RecountWaiting {
            count,
            sending,
            queue,
        }
    }
}

impl Drop for RecountWaiting<'_> {
    fn drop(&mut self) {
        self.count.set(self.count.get().saturating_sub(1));
        if self.count.get() == 0 && !self.sending.get() {
            wake_first(self.queue);
        }
    }
}

#[durable_object]
pub struct IssueCounter {
    state: State,
    env: Env,
    stored: RefCell<Stored>,
    /// The count can be moved by deltas; when false, the next group takes
    /// it again from `user_issues`.
    trusted: Cell<bool>,
    queue: Queue,
    sending: Cell<bool>,
    /// Recounts waiting for the group in flight (see [`RecountWaiting`]).
    recounts_waiting: Cell<u32>,
    /// Counts moved (or an update is owed) since the alarm was last checked.
    alarm_due: Cell<bool>,
    /// What the sockets are owed, saved in table `live`.
    pending: RefCell<Pending>,
    /// How many sockets watch, once counted since the object started.
    watching: Cell<Option<usize>>,
    /// The alarm as this instance last set or read it (Unix ms; outer
    /// `None`: not read yet), so that a group does not read it again.
    alarm_at: Cell<Option<Option<u64>>>,
}

impl IssueCounter {
    fn load(state: &State) -> Result<Stored> {
        let sql = state.storage().sql();
        sql.exec(
            "CREATE TABLE IF NOT EXISTS counter (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL)",
            None,
        )?;
        sql.exec(
            "CREATE TABLE IF NOT EXISTS live (id INTEGER PRIMARY KEY CHECK (id = 1), state TEXT NOT NULL)",
            None,
        )?;
        #[derive(Deserialize)]
        struct Row {
            state: String,
        }
        let rows: Vec<Row> = sql
            .exec("SELECT state FROM counter WHERE id = 1", None)?
            .to_array()?;
        Ok(match rows.first() {
            Some(row) => stored_from(&row.state, &state.id().to_string()),
            None => Stored::default(),
        })
    }

    /// What the sockets are owed, as saved.
    fn load_pending(state: &State) -> Result<Pending> {
        #[derive(Deserialize)]
        struct Row {
            state: String,
        }
        let rows: Vec<Row> = state
            .storage()
            .sql()
            .exec("SELECT state FROM live WHERE id = 1", None)?
            .to_array()?;
        Ok(match rows.first() {
            Some(row) => live::pending_from(&row.state, &state.id().to_string()),
            None => Pending::default(),
        })
    }

    fn save_pending(&self) -> Result<()> {
        let json = shape::encode(&*self.pending.borrow()).map_err(worker::Error::RustError)?;
        self.state.storage().sql().exec(
            "INSERT INTO live (id, state) VALUES (1, ?) \
             ON CONFLICT (id) DO UPDATE SET state = excluded.state",
            vec![json.into()],
        )?;
        Ok(())
    }

    /// How many sockets watch (counted once per start of the object, then
    /// kept up to date by opens, closes and pushes).
    fn watching(&self) -> usize {
        match self.watching.get() {
            Some(n) => n,
            None => {
                let n = live::watching(&self.state, None);
                self.watching.set(Some(n));
                n
            }
        }
    }

    /// Something the sockets show changed: an update is owed, if anyone
    /// watches.
    fn changed(&self) -> Result<()> {
        if self.watching() == 0 {
            return Ok(());
        }
        self.pending.borrow_mut().changed(now_ms());
        self.alarm_due.set(true);
        self.save_pending()
    }

    /// The values a message carries now.
    fn values(&self, watching: usize) -> push::Values {
        let s = self.stored.borrow();
        let p = self.pending.borrow();
        push::values(
            s.counted.then_some(&s.counts),
            &p.known_organisations,
            p.known_total,
            watching,
        )
    }

    /// A new socket: its snapshot, and everyone else learns it watches.
    fn open_socket(&self, seed: &Seed) -> Result<Response> {
        let caps = self.config().map(|c| c.live_caps).unwrap_or_default();
        {
            let mut p = self.pending.borrow_mut();
            p.known_total = seed.rioter_count;
            p.known_organisations = seed.organisations.clone();
        }
        let (response, watches) = live::open(&self.state, seed, caps, |watching| {
            self.watching.set(Some(watching));
            Message::Snapshot {
                issue_id: seed.issue_id.clone(),
                values: self.values(watching),
                posts: push::newest_posts(&seed.posts, &self.pending.borrow().recent),
            }
        })?;
        if watches && self.watching() > 1 {
            self.changed()?;
        } else {
            self.save_pending()?;
        }
        Ok(response)
    }

    /// A post was made on the issue.
    fn post(&self, post: Post) -> Result<()> {
        let watched = self.watching() > 0;
        if self
            .pending
            .borrow_mut()
            .post(post, watched, now_ms())
            .is_some()
        {
            self.alarm_due.set(true);
        }
        self.save_pending()
    }

    /// A socket closed or failed: one fewer watches.
    async fn socket_gone(&self, ws: &WebSocket) -> Result<()> {
        let n = live::watching(&self.state, Some(ws));
        self.watching.set(Some(n));
        if n == 0 {
            self.pending.borrow_mut().forget();
            self.save_pending()?;
        } else {
            self.changed()?;
        }
        self.schedule().await
    }

    /// Sends the update that is due, if one is.
    fn push(&self, now: u64) -> Result<()> {
        if self.pending.borrow().push_at(now).is_none_or(|at| at > now) {
            return Ok(());
        }
        let to = live::watchers(&self.state, None);
        self.watching.set(Some(to.len()));
        if to.is_empty() {
            self.pending.borrow_mut().forget();
            return self.save_pending();
        }
        let values = self.values(to.len());
        let update = self.pending.borrow_mut().take(now, values);
        if let Some(update) = update {
            let failed = live::send_all(&to, &update);
            if failed > 0 {
                tracing::warn!(
                    failed,
                    sockets = to.len(),
                    "issue counter: some updates not sent"
                );
            }
        }
        self.save_pending()
    }

    fn save(&self) -> Result<()> {
        let json = shape::encode(&*self.stored.borrow()).map_err(worker::Error::RustError)?;
        self.state.storage().sql().exec(
            "INSERT INTO counter (id, state) VALUES (1, ?) \
             ON CONFLICT (id) DO UPDATE SET state = excluded.state",
            vec![json.into()],
        )?;
        Ok(())
    }

    /// When the alarm must next run: the next update owed to the sockets,
    /// or the next flush the primary needs, whichever is first.
    fn next_due(&self, now: u64) -> Option<u64> {
        let flush = {
            let s = self.stored.borrow();
            (s.version != s.flushed_version).then(|| counter::next_flush_at(s.last_flush_ms, now))
        };
        let push = self.pending.borrow().push_at(now);
        match (flush, push) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// After a call: sets the alarm if counts moved or an update is owed. A
    /// failure is logged, not answered: the change itself committed, and
    /// the next one tries the alarm again.
    async fn schedule_if_due(&self) {
        if !self.alarm_due.replace(false) {
            return;
        }
        if let Err(e) = self.schedule().await {
            self.alarm_due.set(true);
            tracing::error!(error = %e, "issue counter: cannot set its alarm; the next change tries again");
        }
    }

    /// Sets the alarm for [`Self::next_due`] unless it is set earlier.
    async fn schedule(&self) -> Result<()> {
        let now = now_ms();
        let Some(at) = self.next_due(now) else {
            return Ok(());
        };
        let storage = self.state.storage();
        let set = match self.alarm_at.get() {
            Some(known) => known,
            None => storage
                .get_alarm()
                .await?
                .map(|t| u64::try_from(t).unwrap_or(0)),
        };
        if set.is_none_or(|t| t > at) {
            storage
                .set_alarm(Duration::from_millis(at.saturating_sub(now)))
                .await?;
            self.alarm_at.set(Some(Some(at)));
        } else {
            self.alarm_at.set(Some(set));
        }
        Ok(())
    }

    /// The primary; `request_id` goes along with every call.
    fn db(&self, request_id: &str) -> AppResult<Db> {
        let config = self.config()?;
        let db = config.db(request_id);
        #[cfg(feature = "bench")]
        let db = db.with_hop_delay(config.hop_delays.object_primary_ms);
        Ok(db)
    }

    fn config(&self) -> AppResult<Rc<Config>> {
        Config::load(&self.env).map_err(|e| AppError::internal(format!("configuration: {e}")))
    }

    /// The primary, for a group of changes. In benchmark builds (in
    /// development only), called the way the `libsql` client would when a
    /// change of the group asked for it ([`crate::bench`]).
    fn group_db(&self, changes: &[Change]) -> AppResult<Db> {
        let first = changes
            .first()
            .ok_or_else(|| AppError::internal("an empty group"))?;
        let db = self.db(&first.request_id)?;
        #[cfg(feature = "bench")]
        let db = {
            let per_statement = changes.iter().any(|c| c.per_statement)
                && crate::bench::allowed(&self.config()?.environment);
            db.with_baseline(if per_statement {
                crate::bench::Mode::PerStatement.baseline()
            } else {
                None
            })
        };
        Ok(db)
    }

    /// Queues a change and waits for its answer. Changes that arrive while
    /// a transaction is in flight go together in the next one (group
    /// commit): a hot issue costs a few transactions a second, not one per
    /// join. Whoever finds no transaction in flight sends the queue's next
    /// group, then hands the rest to the first change still waiting
    /// ([`Sending`]'s drop) and answers: a sender that went on until the
    /// queue was empty would hold its own answer (and every recount) for as
    /// long as a steady stream of changes kept coming.
    async fn change(&self, change: Change) -> AppResult<Answer> {
        let (waiter, mut told) = mpsc::unbounded();
        self.queue.borrow_mut().push((change, waiter, now_ms()));
        let mut deadline = Timeout::after(QUEUE_WAIT);
        loop {
            if !self.sending.get() && self.recounts_waiting.get() == 0 {
                self.sending.set(true);
                let _sending = Sending {
                    flag: &self.sending,
                    queue: &self.queue,
                };
                self.send_group().await;
            }
            match select(told.next(), &mut deadline).await {
                Either::Left((Some(Wake::Done(answer)), _)) => return answer,
                Either::Left((Some(Wake::Lead), _)) => continue,
                // The request sending this change's group went away mid-flight.
                Either::Left((None, _)) => {
                    return Err(AppError::primary_unavailable(
                        "the change's outcome is unknown; retry it (joining and leaving are idempotent)",
                    ))
                }
                Either::Right(_) => {
                    return Err(AppError::primary_unavailable(
                        "the issue's changes are queued too long; retry shortly",
                    ))
                }
            }
        }
    }

    /// Takes the count again from `user_issues`, as the only transaction in
    /// flight, so the count it takes is exact: it waits for the group in
    /// flight, if any, and goes before the changes queued behind it, which
    /// then go as usual. A count that differs is saved and flushed like any
    /// change.
    async fn recount(&self, ask: &RecountAsk) -> AppResult<Recount> {
        let deadline = now_ms() + QUEUE_WAIT.as_millis() as u64;
        let waiting = RecountWaiting::new(&self.recounts_waiting, &self.sending, &self.queue);
        while self.sending.get() {
            if now_ms() > deadline {
                return Err(AppError::primary_unavailable(
                    "the issue's changes are queued too long; retry shortly",
                ));
            }
            Timeout::after(Duration::from_millis(2)).await;
        }
        self.sending.set(true);
        drop(waiting);
        let _sending = Sending {
            flag: &self.sending,
            queue: &self.queue,
        };
        let db = self.db(&ask.request_id)?;
        let count = membership::count_query(&ask.issue_id);
        let rows = db.query(&count.sql, count.args).await?;
        let counts = membership::counts_of(&rows);
        let before = {
            let mut s = self.stored.borrow_mut();
            let before = s.counted.then_some(s.counts.total);
            s.issue_id.get_or_insert_with(|| ask.issue_id.clone());
            let moved = !s.counted || s.counts != counts;
            if moved {
                s.counts = counts;
                s.counted = true;
                s.version += 1;
            }
            s.doubtful = false;
            (before, moved)
        };
        let (before, moved) = before;
        self.trusted.set(true);
        self.save().map_err(AppError::from)?;
        if moved {
            self.changed().map_err(AppError::from)?;
        }
        let s = self.stored.borrow();
        if s.version != s.flushed_version {
            self.alarm_due.set(true);
        }
        Ok(Recount {
            before,
            after: s.counts.total,
        })
    }

    /// Sends the queue's next group (the oldest changes, at most
    /// [`GROUP_MAX`]). A change whose request has gone (its waiter dropped)
    /// is not sent: no one would learn its outcome.
    async fn send_group(&self) {
        let group: Vec<(Change, Waiter, u64)> = {
            let mut queue = self.queue.borrow_mut();
            queue.retain(|(_, w, _)| !w.is_closed());
            let n = queue.len().min(GROUP_MAX);
            queue.drain(..n).collect()
        };
        if group.is_empty() {
            return;
        }
        let changes: Vec<Change> = group.iter().map(|(c, _, _)| c.clone()).collect();
        let sent_ms = now_ms();
        let answers = match self.apply_group(&changes).await {
            Ok(answers) => answers,
            Err(e) => changes.iter().map(|_| Err(e.clone())).collect(),
        };
        for ((_, waiter, arrived_ms), mut answer) in group.into_iter().zip(answers) {
            if let Ok(a) = &mut answer {
                a.phases.queued_ms = sent_ms.saturating_sub(arrived_ms);
            }
            let _ = waiter.unbounded_send(Wake::Done(answer));
        }
    }

    /// One transaction for a group of changes; an answer per change.
    async fn apply_group(&self, changes: &[Change]) -> AppResult<Vec<AppResult<Answer>>> {
        let db = self.group_db(changes)?;
        // One group is in flight at a time (the queue has one sender), so
        // a count taken here sees no other change of the issue in flight.
        let count = !self.trusted.get();
        // Untrusted until the outcome is known: if this request is dropped
        // mid-flight (its caller went away), the next group counts again
        // instead of missing a change that may have committed. Nothing is
        // saved first: a storage write here would hold the transaction's
        // request behind the object's output gate until the write is
        // durable, on every group. An object that restarts mid-flight
        // distrusts its saved count anyway (`new`).
        self.trusted.set(false);
        let mut statements = Vec::new();
        let mut sizes = Vec::with_capacity(changes.len());
        for (i, change) in changes.iter().enumerate() {
            // The count, when asked for, comes after the group's last change.
            let qs = membership::statements(change, count && i + 1 == changes.len());
            sizes.push(qs.len());
            statements.extend(qs);
        }
        let commit_started = now_ms();
        let result = db.transaction(statements).await;
        let commit_ended = now_ms();
        let commit_ms = commit_ended.saturating_sub(commit_started);
        let mut written = match result {
            Ok(w) => w.into_iter(),
            Err(e) => {
                let known = e.code != Code::PrimaryUnavailable;
                self.trusted
                    .set(counter::trusted_after(count, known, false));
                self.stored.borrow_mut().doubtful = !self.trusted.get();
                self.save().map_err(AppError::from)?;
                return Err(e);
            }
        };
        let mut outcomes = Vec::with_capacity(changes.len());
        let mut counted = false;
        for (i, (change, size)) in changes.iter().zip(sizes).enumerate() {
            let mine: Vec<_> = written.by_ref().take(size).collect();
            let with_count = count && i + 1 == changes.len();
            let outcome = membership::outcome(change, mine, with_count);
            counted |= matches!(&outcome, Ok(o) if o.counts.is_some());
            outcomes.push(outcome);
        }
        self.trusted
            .set(counter::trusted_after(count, true, counted));
        if let Err(e) = self.record(changes, &outcomes) {
            // The group committed at the primary: its answers stand. What
            // this object saved is behind, so its next group counts again.
            tracing::error!(code = %e.code, details = ?e.details, "issue counter: a committed group's counts were not saved; counting again");
            self.trusted.set(false);
        }
        let total = self.stored.borrow().counts.total;
        let as_of_ms = now_ms();
        let group = u32::try_from(changes.len()).unwrap_or(u32::MAX);
        Ok(outcomes
            .into_iter()
            .map(|o| {
                o.map(|o| Answer {
                    changed: o.changed,
                    member: o.member,
                    rioter_count: total,
                    as_of_ms,
                    superseded: o.superseded,
                    phases: Phases {
                        commit_ms,
                        after_ms: as_of_ms.saturating_sub(commit_ended),
                        group,
                        ..Phases::default()
                    },
                })
            })
            .collect())
    }

    /// Moves the stored counts by a committed group's outcomes, saves them
    /// and makes sure a flush is due.
    fn record(&self, changes: &[Change], outcomes: &[AppResult<Outcome>]) -> AppResult<()> {
        let moved = {
            let mut s = self.stored.borrow_mut();
            let mut moved = false;
            for (change, outcome) in changes.iter().zip(outcomes) {
                let Ok(outcome) = outcome else { continue };
                s.issue_id.get_or_insert_with(|| change.issue_id.clone());
                match &outcome.counts {
                    // Taken after every change of the group: replaces them all.
                    Some(counts) => {
                        moved |= !s.counted || s.counts != *counts;
                        s.counts = counts.clone();
                        s.counted = true;
                    }
                    None if outcome.changed && s.counted => {
                        let delta = if change.op == Op::Join { 1 } else { -1 };
                        s.counts.apply(delta, outcome.organisation_id.as_deref());
                        moved = true;
                    }
                    None => {}
                }
            }
            if moved {
                s.version += 1;
            }
            s.doubtful = !self.trusted.get();
            moved
        };
        self.save().map_err(AppError::from)?;
        if moved {
            self.changed().map_err(AppError::from)?;
        }
        let dirty = {
            let s = self.stored.borrow();
            s.version != s.flushed_version
        };
        if dirty {
            self.alarm_due.set(true);
        }
        Ok(())
    }

    /// Writes the counts to the primary if it does not have them yet.
    async fn flush(&self) -> AppResult<()> {
        let (issue_id, counts, version) = {
            let s = self.stored.borrow();
            if s.version == s.flushed_version || !s.counted {
                return Ok(());
            }
            let Some(issue_id) = s.issue_id.clone() else {
                return Ok(());
            };
            (issue_id, s.counts.clone(), s.version)
        };
        let db = self.db(&format!("flush-{issue_id}"))?;
        db.transaction(crate::store::counter::flush_queries(&issue_id, &counts))
            .await?;
        {
            let mut s = self.stored.borrow_mut();
            s.flushed_version = version;
            s.last_flush_ms = now_ms();
        }
        self.save().map_err(AppError::from)?;
        Ok(())
    }
}

fn error_response(e: &AppError) -> Result<Response> {
    if e.status >= 500 {
        tracing::warn!(code = %e.code, details = ?e.details, "issue counter");
    }
    Ok(Response::from_json(&e.body(""))?.with_status(e.status))
}

impl DurableObject for IssueCounter {
    fn new(state: State, env: Env) -> Self {
        let stored = match Self::load(&state) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "issue counter: cannot read its storage; counting again");
                Stored::default()
            }
        };
        let pending = Self::load_pending(&state).unwrap_or_else(|e| {
            tracing::error!(error = %e, "issue counter: cannot read its live state; pushing the current values");
            Pending {
                dirty: true,
                ..Pending::default()
            }
        });
        live::answer_pings(&state);
        IssueCounter {
            state,
            env,
            stored: RefCell::new(stored),
            // Never trusted at the start: a group in flight when the last
            // instance stopped may have committed without being recorded
            // (its state is not saved before a group goes out; see
            // `apply_group`). The first group takes the count again in its
            // transaction.
            trusted: Cell::new(false),
            queue: RefCell::new(Vec::new()),
            sending: Cell::new(false),
            recounts_waiting: Cell::new(0),
            alarm_due: Cell::new(false),
            pending: RefCell::new(pending),
            watching: Cell::new(None),
            alarm_at: Cell::new(None),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        match (req.method(), req.path().as_str()) {
            (Method::Post, "/change") => {
                let change: Change = match super::body(&mut req).await {
                    Ok(c) => c,
                    Err(e) => return Response::error(format!("bad change: {e}"), 400),
                };
                let mut answer = self.change(change).await;
                let after = now_ms();
                self.schedule_if_due().await;
                if let Ok(a) = &mut answer {
                    a.phases.after_ms += now_ms().saturating_sub(after);
                }
                match answer {
                    Ok(answer) => Response::from_json(&answer),
                    Err(e) => error_response(&e),
                }
            }
            (Method::Get, "/count") => {
                let s = self.stored.borrow();
                Response::from_json(&json!({
                    "rioter_count": s.counts.total,
                    "trusted": s.counted,
                    "flushed": s.version == s.flushed_version,
                    "recovered": s.recovered,
                }))
            }
            (Method::Post, "/recount") => {
                let ask: RecountAsk = match super::body(&mut req).await {
                    Ok(a) => a,
                    Err(e) => return Response::error(format!("bad recount: {e}"), 400),
                };
                let answer = self.recount(&ask).await;
                self.schedule_if_due().await;
                match answer {
                    Ok(answer) => Response::from_json(&answer),
                    Err(e) => error_response(&e),
                }
            }
            (Method::Get, "/live") => {
                let seed = req
                    .headers()
                    .get(live::SEED_HEADER)?
                    .and_then(|text| serde_json::from_str::<Seed>(&text).ok());
                let upgrade = req.headers().get("Upgrade")?;
                let Some(seed) = seed.filter(|_| push::is_upgrade(upgrade.as_deref())) else {
                    return Response::error("a socket needs Upgrade: websocket and its seed", 400);
                };
                let response = self.open_socket(&seed)?;
                self.schedule_if_due().await;
                Ok(response)
            }
            (Method::Post, "/post") => {
                let post: Post = match super::body(&mut req).await {
                    Ok(p) => p,
                    Err(e) => return Response::error(format!("bad post: {e}"), 400),
                };
                self.post(post)?;
                self.schedule_if_due().await;
                Response::ok("noted")
            }
            _ => super::not_found(),
        }
    }

    /// Anything a client sends but the `ping` the runtime answers: a
    /// `ping` that reached the object anyway is answered; anything else
    /// closes the socket with 1003 (it only pushes).
    async fn websocket_message(
        &self,
        ws: WebSocket,
        message: WebSocketIncomingMessage,
    ) -> Result<()> {
        let sent = match message {
            WebSocketIncomingMessage::String(text) if text == push::PING => {
                ws.send_with_str(push::PONG)
            }
            _ => {
                let close = push::UNSUPPORTED;
                ws.close(Some(close.code), Some(close.reason))
            }
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "issue counter: answering a socket failed");
        }
        Ok(())
    }

    async fn websocket_close(
        &self,
        ws: WebSocket,
        code: usize,
        _reason: String,
        _clean: bool,
    ) -> Result<()> {
        // Completes the closing handshake (a closed socket refuses; fine).
        let _ = ws.close(Some(push::echo_code(code)), Some("closed"));
        if live::was_refused(&self.state, &ws) {
            return Ok(());
        }
        self.socket_gone(&ws).await
    }

    async fn websocket_error(&self, ws: WebSocket, error: worker::Error) -> Result<()> {
        tracing::warn!(error = %error, "issue counter: a socket failed");
        self.socket_gone(&ws).await
    }

    /// The update owed to the sockets, when due (first: it waits on
    /// nothing), then the flush to the primary, when due; then the alarm
    /// for whatever is left.
    async fn alarm(&self) -> Result<Response> {
        // The alarm that woke it is spent.
        self.alarm_at.set(Some(None));
        let now = now_ms();
        self.push(now)?;
        let flush_due = {
            let s = self.stored.borrow();
            s.version != s.flushed_version && counter::next_flush_at(s.last_flush_ms, now) <= now
        };
        let mut retry_at = None;
        if flush_due {
            if let Err(e) = self.flush().await {
                tracing::warn!(code = %e.code, details = ?e.details, "issue counter: flush failed; retrying");
                retry_at = Some(now_ms() + FLUSH_RETRY_MS);
            }
        }
        // Computed after the flush: changes that came in meanwhile count.
        let now = now_ms();
        let next = match (retry_at, self.pending.borrow().push_at(now)) {
            (Some(retry), push) => Some(push.map_or(retry, |p| p.min(retry))),
            (None, _) => self.next_due(now),
        };
        if let Some(at) = next {
            self.state
                .storage()
                .set_alarm(Duration::from_millis(at.saturating_sub(now)))
                .await?;
            self.alarm_at.set(Some(Some(at)));
        }
        Response::ok("done")
    }
}

/// The Worker's side: sends a change to the issue's object. An object that
/// cannot be reached is 503 (writes fail closed).
pub async fn send_change(ctx: &Ctx, change: &Change) -> AppResult<Answer> {
    call(ctx, &change.issue_id, "change", change).await
}

/// Asks the issue's object to take its count again from `user_issues`,
/// now (after memberships changed outside it: the reconcile_counts job,
/// two users merged by a phone link); its count before and after.
pub async fn recount(ctx: &Ctx, issue_id: &str) -> AppResult<Recount> {
    let ask = RecountAsk {
        issue_id: issue_id.to_owned(),
        request_id: ctx.request_id.clone(),
    };
    call(ctx, issue_id, "recount", &ask).await
}

/// Opens a live socket on the issue's object for `seed`: the object's 101
/// (its socket's client end, in a response of our own so that the
/// pipeline may add its headers). An object that cannot be reached, or
/// that refuses, is 503.
pub async fn open_live(ctx: &Ctx, seed: &Seed) -> AppResult<Response> {
    let unavailable = |why: String| {
        tracing::warn!(request_id = %ctx.request_id, error = %why, "issue counter: no live socket");
        let mut err = AppError::new(
            503,
            Code::CounterUnavailable,
            "live updates are unavailable; retry shortly",
        );
        err.retry_after = Some(5);
        err
    };
    let seed_json = serde_json::to_string(seed).map_err(AppError::internal)?;
    let answer = client::upgrade(
        ctx,
        "ISSUE_COUNTER",
        &seed.issue_id,
        "/live",
        &[("Upgrade", "websocket"), (live::SEED_HEADER, &seed_json)],
    )
    .await
    .map_err(|e| unavailable(e.to_string()))?;
    let status = answer.status_code();
    match answer.websocket() {
        Some(ws) if status == 101 => Response::from_websocket(ws).map_err(AppError::from),
        _ => Err(unavailable(format!("the object answered {status}"))),
    }
}

/// Tells the issue's object about a committed post, for its sockets. Never
/// fails the post: a failure is logged (the post is in the feed anyway).
pub async fn notify_post(ctx: &Ctx, issue_id: &str, post: &Post) {
    let sent = match serde_json::to_string(post) {
        Ok(body) => client::call(
            ctx,
            "ISSUE_COUNTER",
            issue_id,
            Method::Post,
            "/post",
            Some(body),
        )
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| match r.status {
            200 => Ok(()),
            s => Err(format!("answered {s}: {:.200}", r.text)),
        }),
        Err(e) => Err(e.to_string()),
    };
    if let Err(e) = sent {
        tracing::warn!(request_id = %ctx.request_id, issue = %issue_id, error = %e, "issue counter: a post was not passed on to live sockets");
    }
}

/// POSTs `body` to `/{path}` of the issue's object and reads its answer.
async fn call<T: Serialize, A: serde::de::DeserializeOwned>(
    ctx: &Ctx,
    issue_id: &str,
    path: &str,
    body: &T,
) -> AppResult<A> {
    let unavailable = |e: worker::Error| {
        tracing::warn!(request_id = %ctx.request_id, error = %e, "issue counter unreachable");
        let mut err = AppError::new(
            503,
            Code::CounterUnavailable,
            "membership changes are unavailable; retry shortly",
        );
        err.retry_after = Some(5);
        err
    };
    let body = serde_json::to_string(body).map_err(AppError::internal)?;
    #[cfg(feature = "bench")]
    {
        let ms = ctx.config.hop_delays.worker_object_ms;
        crate::bench::hop(ms).await;
        ctx.add_do_ms(ms);
    }
    let reply = client::call(
        ctx,
        "ISSUE_COUNTER",
        issue_id,
        Method::Post,
        &format!("/{path}"),
        Some(body),
    )
    .await
    .map_err(unavailable)?;
    let (status, text) = (reply.status, reply.text);
    if status == 200 {
        return serde_json::from_str(&text)
            .map_err(|e| AppError::internal(format!("issue counter answered {text:.200}: {e}")));
    }
    let envelope: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    Err(AppError::from_envelope(status, &envelope))
}

#[cfg(test)]
mod tests {
    use super::super::shape::fixture;
    use super::*;

    #[test]
    fn every_saved_shape_loads() {
        for (name, version, doubtful) in [
            ("issue_counter.v1.json", 57, false),
            ("issue_counter.v1-doubtful.json", 58, true),
            ("issue_counter.v2.json", 57, false),
        ] {
            let s = stored_from(&fixture(name), "test");
            assert_eq!(s.recovered, 0, "{name}");
            assert_eq!(
                s.issue_id.as_deref(),
                Some("6f1d0f3e-2b1c-4a55-9d0e-5f3b2c1a0e11")
            );
            assert!(s.counted, "{name}");
            assert_eq!(s.counts.total, 42, "{name}");
            assert_eq!(
                s.counts.by_org.get("0a6c7e1e-8a51-4c1e-bb56-1b1f9f0f6b01"),
                Some(&40)
            );
            assert_eq!((s.version, s.doubtful), (version, doubtful), "{name}");
            assert_eq!(s.last_flush_ms, 1_796_122_417_300);
        }
    }

    #[test]
    fn the_current_shape_round_trips_with_its_version() {
        let s = stored_from(&fixture("issue_counter.v1-doubtful.json"), "test");
        let text = shape::encode(&s).expect("encode");
        assert!(text.contains("\"v\":2"), "{text}");
        let back = stored_from(&text, "test");
        assert_eq!(
            (back.counts, back.version, back.doubtful),
            (s.counts, s.version, s.doubtful)
        );
    }

    #[test]
    fn an_unreadable_state_counts_again_and_is_counted() {
        let s = stored_from(&fixture("issue_counter.unreadable.json"), "test");
        assert!(
            !s.counted,
            "the next change takes the count from user_issues"
        );
        assert_eq!(s.recovered, 1);
    }
}
