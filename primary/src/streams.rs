//! Hrana-over-HTTP streams: batons, expiry and the cap on open streams.
//!
//! Each stream owns a [`Session`] (one database connection). A request names
//! its stream by a baton; the server answers with a fresh baton and the old
//! one stops working, so requests on one stream are serial by construction.
//! While a request runs, its stream is checked out: a second request with
//! the same baton gets `BATON_REUSED` instead of racing the first.
//!
//! Batons are `<stream id>.<128 random bits>`: unguessable, so one client
//! cannot step into another's transaction.
//!
//! Streams idle longer than the expiry (10 s, as sqld) are dropped; dropping a
//! connection inside a transaction rolls it back. Connections of streams that
//! end cleanly are kept in a small pool for the next stream, once
//! [`Session::reset`] has made them look new (or closed if it cannot).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::engine::{Engine, Session};

/// Why a request could not get its stream. Each maps to an HTTP status and a
/// Hrana error code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamError {
    /// The baton is malformed or does not belong to a live stream.
    BatonInvalid(String),
    /// The baton was already used by another request (running or answered).
    BatonReused,
    /// The stream was closed or expired; its transaction (if any) was rolled back.
    StreamExpired,
    /// The cap on open streams is reached.
    TooManyStreams(usize),
    /// The engine could not open a connection.
    Engine(String),
}

impl StreamError {
    pub fn code(&self) -> &'static str {
        match self {
            StreamError::BatonInvalid(_) => "BATON_INVALID",
            StreamError::BatonReused => "BATON_REUSED",
            StreamError::StreamExpired => "STREAM_EXPIRED",
            StreamError::TooManyStreams(_) => "STREAMS_EXHAUSTED",
            StreamError::Engine(_) => "INTERNAL",
        }
    }
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StreamError::BatonInvalid(why) => write!(f, "invalid baton: {why}"),
            StreamError::BatonReused => write!(
                f,
                "this baton was already used; send each request with the baton of the previous response"
            ),
            StreamError::StreamExpired => write!(
                f,
                "the stream was closed or expired after being idle; its open transaction was rolled back"
            ),
            StreamError::TooManyStreams(max) => write!(
                f,
                "too many open streams (at most {max}); close streams when done or retry shortly"
            ),
            StreamError::Engine(e) => write!(f, "could not open a database connection: {e}"),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_streams: usize,
    pub idle_expiry: Duration,
    pub pool_size: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_streams: 1024,
            idle_expiry: Duration::from_secs(10),
            pool_size: 16,
        }
    }
}

enum Slot {
    Idle {
        session: Box<Session>,
        secret: String,
        idle_since: Instant,
    },
    /// Checked out by a running request.
    Busy,
}

/// Streams that were closed or expired recently, remembered so that a late
/// request gets `STREAM_EXPIRED` rather than a bare "invalid".
const TOMBSTONES: usize = 4096;

#[derive(Default)]
struct Inner {
    next_id: u64,
    slots: HashMap<u64, Slot>,
    pool: Vec<Session>,
    tombstones: std::collections::VecDeque<u64>,
}

pub struct Streams {
    engine: Engine,
    limits: Limits,
    inner: Mutex<Inner>,
}

/// The claim on a stream checked out for one request, handed out with the
/// stream's session. Give both back with [`Streams::finish`]; if the lease is
/// dropped instead (a panic, a client that hung up), the stream is discarded
/// and, with its session, its transaction rolled back.
pub struct Lease {
    streams: Arc<Streams>,
    id: u64,
    secret: String,
    finished: bool,
}

impl Lease {
    /// The baton the response carries if the stream stays open.
    pub fn next_baton(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.finished {
            let mut inner = self.streams.lock();
            inner.slots.remove(&self.id);
            remember_closed(&mut inner, self.id);
        }
    }
}

fn remember_closed(inner: &mut Inner, id: u64) {
    if inner.tombstones.len() >= TOMBSTONES {
        inner.tombstones.pop_front();
    }
    inner.tombstones.push_back(id);
}

fn new_secret() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

impl Streams {
    pub fn new(engine: Engine, limits: Limits) -> Arc<Self> {
        Arc::new(Streams {
            engine,
            limits,
            inner: Mutex::new(Inner::default()),
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// How long a stream may sit idle before it is closed.
    pub fn idle_expiry(&self) -> Duration {
        self.limits.idle_expiry
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding this lock leaves the map consistent (every
        // mutation is a single insert/remove), so recover from poisoning.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of open streams (idle or running).
    pub fn open_count(&self) -> usize {
        self.lock().slots.len()
    }

    /// Checks out the stream named by `baton`, or opens a new one.
    pub fn checkout(
        self: &Arc<Self>,
        baton: Option<&str>,
    ) -> Result<(Lease, Session), StreamError> {
        let Some(baton) = baton else {
            return self.open();
        };
        let (id, secret) = parse_baton(baton)?;
        let mut inner = self.lock();
        let Some(slot) = inner.slots.remove(&id) else {
            return Err(if inner.tombstones.contains(&id) {
                StreamError::StreamExpired
            } else {
                StreamError::BatonInvalid("no stream has this baton".into())
            });
        };
        match slot {
            Slot::Idle {
                session,
                secret: expected,
                ..
            } if constant_time_eq(expected.as_bytes(), secret.as_bytes()) => {
                let session = *session;
                let next = new_secret();
                inner.slots.insert(id, Slot::Busy);
                Ok((
                    Lease {
                        streams: self.clone(),
                        id,
                        secret: next,
                        finished: false,
                    },
                    session,
                ))
            }
            other => {
                // Wrong secret for a live stream: an old baton of this
                // stream, or a forged one. Leave the stream as it was.
                inner.slots.insert(id, other);
                Err(StreamError::BatonReused)
            }
        }
    }

    fn open(self: &Arc<Self>) -> Result<(Lease, Session), StreamError> {
        let mut inner = self.lock();
        if inner.slots.len() >= self.limits.max_streams {
            return Err(StreamError::TooManyStreams(self.limits.max_streams));
        }
        inner.next_id += 1;
        let id = inner.next_id;
        let secret = new_secret();
        inner.slots.insert(id, Slot::Busy);
        let pooled = inner.pool.pop();
        drop(inner);
        let session = match pooled {
            Some(s) => s,
            None => match self.engine.session() {
                Ok(s) => s,
                Err(e) => {
                    self.lock().slots.remove(&id);
                    return Err(StreamError::Engine(e.to_string()));
                }
            },
        };
        Ok((
            Lease {
                streams: self.clone(),
                id,
                secret,
                finished: false,
            },
            session,
        ))
    }

    /// Returns a stream after its request. With `close` the stream ends (its
    /// connection goes back to the pool if [`Session::reset`] can make it look
    /// new); otherwise it waits, idle, for the next baton.
    pub fn finish(&self, mut lease: Lease, mut session: Session, close: bool) {
        lease.finished = true;
        let mut inner = self.lock();
        if close {
            inner.slots.remove(&lease.id);
            remember_closed(&mut inner, lease.id);
            drop(inner);
            // Reset, or close the connection, outside the lock.
            if session.reset() {
                let mut inner = self.lock();
                if inner.pool.len() < self.limits.pool_size {
                    inner.pool.push(session);
                }
            }
        } else {
            inner.slots.insert(
                lease.id,
                Slot::Idle {
                    session: Box::new(session),
                    secret: std::mem::take(&mut lease.secret),
                    idle_since: Instant::now(),
                },
            );
        }
    }

    /// Drops streams idle for longer than the expiry. Returns how many.
    pub fn expire_idle(&self, now: Instant) -> usize {
        let expiry = self.limits.idle_expiry;
        let mut inner = self.lock();
        let expired: Vec<u64> = inner
            .slots
            .iter()
            .filter_map(|(id, slot)| match slot {
                Slot::Idle { idle_since, .. } if now.duration_since(*idle_since) >= expiry => {
                    Some(*id)
                }
                _ => None,
            })
            .collect();
        let mut dropped = Vec::new();
        for id in &expired {
            if let Some(Slot::Idle { session, .. }) = inner.slots.remove(id) {
                dropped.push(session);
            }
            remember_closed(&mut inner, *id);
        }
        drop(inner);
        // Closing connections (and rolling back their transactions) happens
        // outside the lock.
        let count = dropped.len();
        drop(dropped);
        count
    }

    /// Expires idle streams every second until the returned task is aborted.
    pub fn spawn_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let streams = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(streams) = streams.upgrade() else {
                    return;
                };
                let s = streams.clone();
                let n = tokio::task::spawn_blocking(move || s.expire_idle(Instant::now()))
                    .await
                    .unwrap_or(0);
                if n > 0 {
                    tracing::debug!(expired = n, "closed idle streams");
                }
            }
        })
    }
}

fn parse_baton(baton: &str) -> Result<(u64, &str), StreamError> {
    let (id, secret) = baton
        .split_once('.')
        .ok_or_else(|| StreamError::BatonInvalid("malformed baton".into()))?;
    let id = id
        .parse::<u64>()
        .map_err(|_| StreamError::BatonInvalid("malformed baton".into()))?;
    if secret.len() != 32 {
        return Err(StreamError::BatonInvalid("malformed baton".into()));
    }
    Ok((id, secret))
}

/// Compares two byte strings in time that depends only on their lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use libsql_hrana::proto::{ExecuteStreamReq, Stmt, StreamRequest};

    fn streams(limits: Limits) -> (tempfile::TempDir, Arc<Streams>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let engine = Engine::open(&dir.path().join("s.db")).expect("open");
        (dir, Streams::new(engine, limits))
    }

    fn exec(session: &mut Session, sql: &str) {
        session
            .handle(StreamRequest::Execute(ExecuteStreamReq {
                stmt: Stmt::new(sql, true),
            }))
            .expect("execute");
    }

    #[test]
    fn a_baton_works_once() {
        let (_d, s) = streams(Limits::default());
        let (lease, session) = s.checkout(None).expect("open");
        let baton = lease.next_baton();
        s.finish(lease, session, false);
        let (lease, session) = s.checkout(Some(&baton)).expect("first use");
        let next = lease.next_baton();
        assert_ne!(next, baton);
        assert_eq!(
            s.checkout(Some(&baton)).err(),
            Some(StreamError::BatonReused)
        );
        s.finish(lease, session, false);
        assert_eq!(
            s.checkout(Some(&baton)).err(),
            Some(StreamError::BatonReused)
        );
        assert!(s.checkout(Some(&next)).is_ok());
    }

    #[test]
    fn forged_and_malformed_batons_are_refused() {
        let (_d, s) = streams(Limits::default());
        for bad in ["", "x", "1.abc", "999.0123456789abcdef0123456789abcdef"] {
            assert!(matches!(
                s.checkout(Some(bad)).err(),
                Some(StreamError::BatonInvalid(_))
            ));
        }
    }

    #[test]
    fn the_stream_cap_is_enforced_and_freed_by_close() {
        let (_d, s) = streams(Limits {
            max_streams: 2,
            ..Limits::default()
        });
        let (a, a_session) = s.checkout(None).expect("a");
        let b = s.checkout(None).expect("b");
        assert_eq!(s.checkout(None).err(), Some(StreamError::TooManyStreams(2)));
        s.finish(a, a_session, true);
        assert!(s.checkout(None).is_ok());
        drop(b);
        assert_eq!(s.open_count(), 0, "dropped leases free their slot");
    }

    fn single(session: &mut Session, sql: &str) -> i64 {
        let r = session
            .execute(&Stmt::new(sql, true))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
        match r.rows[0].values[0] {
            libsql_hrana::proto::Value::Integer { value } => value,
            ref other => panic!("{sql}: {other:?}"),
        }
    }

    #[test]
    fn a_closed_stream_leaves_no_settings_or_schema_to_the_next() {
        let (_d, s) = streams(Limits::default());
        let pooled = |s: &Arc<Streams>| s.lock().pool.len();

        // Settings the server makes are put back; the connection is reused.
        let (lease, mut session) = s.checkout(None).expect("open");
        exec(&mut session, "CREATE TABLE parent (id INTEGER PRIMARY KEY)");
        exec(
            &mut session,
            "CREATE TABLE child (p REFERENCES parent (id))",
        );
        exec(&mut session, "PRAGMA foreign_keys=OFF");
        exec(&mut session, "PRAGMA query_only=1");
        exec(&mut session, "BEGIN");
        s.finish(lease, session, true);
        assert_eq!(pooled(&s), 1, "the connection went back to the pool");
        let (lease, mut session) = s.checkout(None).expect("reuse");
        assert_eq!(pooled(&s), 0, "and was taken from it");
        assert!(session.is_autocommit());
        assert_eq!(single(&mut session, "PRAGMA foreign_keys"), 1);
        assert_eq!(single(&mut session, "PRAGMA query_only"), 0);
        let orphan = session
            .execute(&Stmt::new("INSERT INTO child VALUES (7)", false))
            .unwrap_err();
        assert_eq!(orphan.code, "SQLITE_CONSTRAINT");
        s.finish(lease, session, true);
        assert_eq!(pooled(&s), 1);

        // Temporary objects, and settings reset does not know, close the
        // connection instead.
        for sql in [
            "CREATE TEMP TABLE scratch (x)",
            "CREATE TEMP VIEW v AS SELECT 1",
            "PRAGMA recursive_triggers=ON",
            "PRAGMA main.cache_size=10",
        ] {
            let (lease, mut session) = s.checkout(None).expect("open");
            exec(&mut session, sql);
            s.finish(lease, session, true);
            assert_eq!(pooled(&s), 0, "{sql}: the connection was closed");
            let (lease, mut session) = s.checkout(None).expect("fresh");
            assert_eq!(
                single(&mut session, "SELECT count(*) FROM temp.sqlite_schema"),
                0
            );
            assert_eq!(single(&mut session, "PRAGMA recursive_triggers"), 0);
            s.finish(lease, session, true);
            assert_eq!(pooled(&s), 1, "a clean connection is pooled");
        }

        // Temporary objects dropped again leave nothing behind.
        let (lease, mut session) = s.checkout(None).expect("open");
        exec(&mut session, "CREATE TEMP TABLE scratch (x)");
        exec(&mut session, "DROP TABLE scratch");
        s.finish(lease, session, true);
        assert_eq!(pooled(&s), 1);
    }

    #[test]
    fn a_pooled_connection_shows_no_earlier_client_s_rowid_or_changes() {
        let (_d, s) = streams(Limits::default());
        let pooled = |s: &Arc<Streams>| s.lock().pool.len();
        let (lease, mut session) = s.checkout(None).expect("open");
        exec(&mut session, "CREATE TABLE t (id INTEGER PRIMARY KEY, v)");
        let inserted = session
            .execute(&Stmt::new("INSERT INTO t (v) VALUES (1), (2), (3)", false))
            .expect("insert");
        assert_eq!(
            (inserted.last_insert_rowid, inserted.affected_row_count),
            (Some(3), 3)
        );
        s.finish(lease, session, true);
        assert_eq!(pooled(&s), 1);

        // The next client gets the same connection, as if new.
        let (lease, mut session) = s.checkout(None).expect("reuse");
        assert_eq!(pooled(&s), 0, "the same connection");
        let one = session
            .execute(&Stmt::new("SELECT 1", true))
            .expect("select");
        assert_eq!((one.last_insert_rowid, one.affected_row_count), (None, 0));
        for sql in [
            "SELECT last_insert_rowid()",
            "SELECT changes()",
            "SELECT total_changes()",
        ] {
            assert_eq!(single(&mut session, sql), 0, "{sql}");
        }
        // Statements that are not INSERT, UPDATE or DELETE report nothing
        // of the last one's.
        let created = session
            .execute(&Stmt::new("CREATE TABLE u (x)", false))
            .expect("create");
        assert_eq!(
            (created.last_insert_rowid, created.affected_row_count),
            (None, 0)
        );
        // Its own writes it sees, as usual.
        let mine = session
            .execute(&Stmt::new("INSERT INTO t (v) VALUES (4)", false))
            .expect("insert");
        assert_eq!(
            (mine.last_insert_rowid, mine.affected_row_count),
            (Some(4), 1)
        );
        assert_eq!(single(&mut session, "SELECT last_insert_rowid()"), 4);
        assert_eq!(single(&mut session, "SELECT changes()"), 1);
        let updated = session
            .execute(&Stmt::new("UPDATE t SET v = 0 WHERE id < 3", false))
            .expect("update");
        assert_eq!(
            (updated.last_insert_rowid, updated.affected_row_count),
            (None, 2)
        );
        assert_eq!(single(&mut session, "SELECT changes()"), 2);
        assert_eq!(single(&mut session, "SELECT total_changes()"), 3);
        // An INSERT that inserts nothing still reports the rowid, as sqld does.
        let none = session
            .execute(&Stmt::new(
                "INSERT INTO t (id, v) SELECT 1, 1 WHERE 0",
                false,
            ))
            .expect("insert nothing");
        assert_eq!(
            (none.last_insert_rowid, none.affected_row_count),
            (Some(4), 0)
        );
        s.finish(lease, session, true);
    }

    #[test]
    fn idle_streams_expire_and_roll_back() {
        let (_d, s) = streams(Limits {
            idle_expiry: Duration::from_millis(10),
            ..Limits::default()
        });
        let (setup, mut session) = s.checkout(None).expect("setup");
        exec(&mut session, "CREATE TABLE t (x)");
        s.finish(setup, session, true);

        let (tx, mut session) = s.checkout(None).expect("tx");
        exec(&mut session, "BEGIN");
        exec(&mut session, "INSERT INTO t VALUES (1)");
        let baton = tx.next_baton();
        s.finish(tx, session, false);
        assert_eq!(s.expire_idle(Instant::now() + Duration::from_secs(1)), 1);
        assert_eq!(
            s.checkout(Some(&baton)).err(),
            Some(StreamError::StreamExpired)
        );

        let (_check, mut session) = s.checkout(None).expect("check");
        let r = session
            .execute(&Stmt::new("SELECT count(*) FROM t", true))
            .expect("count");
        assert!(matches!(
            r.rows[0].values[0],
            libsql_hrana::proto::Value::Integer { value: 0 }
        ));
    }
}
