//! The read cache: Workers KV behind a small in-isolate memory, in front of
//! the primary. Every read route goes through [`serve`].
//!
//! **Entries** hold the response body, its ETag and when it was stored. An
//! entry is *fresh* for `CACHE_FRESH_SECS` (30 s), then *stale* for
//! `CACHE_STALE_SECS` (1 day): a stale entry is served at once (`X-Cache:
//! STALE`) and refreshed behind the response (`ctx.wait_until`). When the
//! primary is down or slow, any entry we still have is served (`X-Cache:
//! STALE`, `Warning: 110`); with none, the answer is 503.
//!
//! **Keys** are `c1:<generations>:<canonical route and parameters>`.
//!
//! **Invalidation by tag.** Each read has tags (`issue:ID`, `issues`, ...);
//! each tag has a generation in KV (`gen:<tag>`, the time of its last
//! invalidation) that is part of the key. [`invalidate`] writes a new
//! generation, so every key under the tag changes at once and old entries
//! simply age out; nothing has to enumerate keys, and no global key is
//! written on every write (only the tags a write touches, at most once a
//! second per tag and isolate, as KV allows about one write per second per
//! key).
//!
//! **Knowing the generations.** An isolate learns a tag's generation once
//! (a KV read of `gen:<tag>`) and then keeps it current from the log of
//! recent invalidations, one KV key it reads every few seconds
//! ([`crate::edge::generations`]); the one `InvalidationLog` object writes
//! it. So a read answered from memory reads no KV at all, however long the
//! tail of tags it is one of.
//!
//! **Staleness bound.** The isolate that handles a write sees it at once.
//! The log publishes a recorded invalidation within a second; other
//! isolates read the log at most [`TRUST_MS`](crate::edge::generations::TRUST_MS) (5 s) after they last did,
//! and KV shows a new value in the same location at once and in other
//! locations within its propagation time (up to about 60 s). So after a
//! write, everyone sees it within those bounds (about 1 + 5 + 60 s at
//! worst, a few seconds in the writer's location); if the log cannot be
//! reached, within the fresh TTL, when the entries they hold go stale.
//!
//! **Hot path.** A hit in the isolate's memory costs no KV read and no
//! Durable Object call; concurrent misses of one key in one isolate share
//! one load from the primary.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};

use futures::future::{FutureExt, LocalBoxFuture};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::domain::cursor::CursorCodec;
use crate::domain::time::now_ms;
use crate::edge::generations::{Generations, Log, LogDue, LOG_KEY};
use crate::edge::reads::Read;
use crate::http::config::Config;
use crate::http::context::Ctx;
use crate::http::error::{AppError, AppResult, Code};
use crate::objects::invalidation_log;
use crate::runtime::Timeout;

/// What an isolate's memory of entries may hold, counted by [`cost`]: keys,
/// bodies and ETags with their bookkeeping (an isolate has 128 MB in all).
/// Sized in bytes, not entries: a detail is about a kilobyte and a list page
/// ten, so a count would either waste memory or drop popular entries.
pub const MEMORY_BYTES: usize = 24 * 1024 * 1024;
/// Tags whose last invalidation by this isolate it remembers before it
/// forgets those past the one-write-a-second window.
const INVALIDATIONS_KEPT: usize = 4096;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub body: String,
    pub etag: String,
    /// Unix milliseconds.
    pub stored_at: u64,
}

impl Entry {
    pub fn new(body: String, now: u64) -> Entry {
        let digest = Sha256::digest(body.as_bytes());
        let etag = format!(
            "\"{}\"",
            digest[..12]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        Entry {
            body,
            etag,
            stored_at: now,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Fresh from memory or KV.
    Hit,
    /// Loaded from the primary now.
    Miss,
    /// Older than the fresh TTL: served, and refreshed behind the response.
    Stale,
    /// The primary failed; this is the last entry we had.
    StaleOnError,
}

impl Outcome {
    pub fn header(self) -> &'static str {
        match self {
            Outcome::Hit => "HIT",
            Outcome::Miss => "MISS",
            Outcome::Stale | Outcome::StaleOnError => "STALE",
        }
    }
}

/// Where an entry of `age_ms` stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Age {
    Fresh,
    Stale,
    Expired,
}

pub fn age(stored_at: u64, now: u64, fresh_secs: u64, stale_secs: u64) -> Age {
    let age = now.saturating_sub(stored_at);
    if age < fresh_secs * 1000 {
        Age::Fresh
    } else if age < (fresh_secs + stale_secs) * 1000 {
        Age::Stale
    } else {
        Age::Expired
    }
}

/// Does `If-None-Match` name this ETag?
pub fn etag_matches(if_none_match: &str, etag: &str) -> bool {
    if_none_match.trim() == "*"
        || if_none_match
            .split(',')
            .map(|t| t.trim().trim_start_matches("W/"))
            .any(|t| t == etag)
}

/// What an entry costs the isolate's memory: its key, body and ETag, and
/// about what the map and the strings' headers take besides.
fn cost(key: &str, entry: &Entry) -> usize {
    const BOOKKEEPING: usize = 96;
    key.len() + entry.body.len() + entry.etag.len() + BOOKKEEPING
}

/// An isolate's entries, within a budget of bytes ([`cost`]). Past it, the
/// oldest entries (by `stored_at`) go, down to three quarters of the budget,
/// so the sort this takes runs once per quarter of the budget inserted, not
/// per insert.
#[derive(Default)]
struct Memory {
    entries: HashMap<String, Entry>,
    bytes: usize,
    budget: usize,
}

impl Memory {
    fn new(budget: usize) -> Memory {
        Memory {
            budget,
            ..Memory::default()
        }
    }

    fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key)
    }

    #[cfg(test)]
    fn bytes(&self) -> usize {
        self.bytes
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }

    fn insert(&mut self, key: &str, entry: Entry) {
        let added = cost(key, &entry);
        if added > self.budget / 4 {
            // One entry may not push out a quarter of the rest.
            return;
        }
        if let Some(old) = self.entries.insert(key.to_owned(), entry) {
            self.bytes -= cost(key, &old);
        }
        self.bytes += added;
        if self.bytes > self.budget {
            let mut by_age: Vec<(u64, String)> = self
                .entries
                .iter()
                .map(|(k, e)| (e.stored_at, k.clone()))
                .collect();
            by_age.sort_unstable();
            for (_, k) in by_age {
                if self.bytes <= self.budget * 3 / 4 {
                    break;
                }
                if let Some(old) = self.entries.remove(&k) {
                    self.bytes -= cost(&k, &old);
                }
            }
        }
    }
}

struct Isolate {
    entries: Memory,
    generations: Generations,
    /// tag -> ms of this isolate's last invalidation write
    invalidated_at: HashMap<String, u64>,
    /// Keys being loaded from the primary by some request of this isolate.
    in_flight: HashSet<String>,
}

impl Default for Isolate {
    fn default() -> Isolate {
        Isolate {
            entries: Memory::new(MEMORY_BYTES),
            generations: Generations::default(),
            invalidated_at: HashMap::new(),
            in_flight: HashSet::new(),
        }
    }
}

thread_local! {
    // Workers run one request at a time per thread; this is per isolate.
    static ISOLATE: RefCell<Isolate> = RefCell::new(Isolate::default());
}

fn with_isolate<T>(f: impl FnOnce(&mut Isolate) -> T) -> T {
    ISOLATE.with(|i| f(&mut i.borrow_mut()))
}

/// A load of `key` under way in this isolate (others wait for it instead of
/// loading it too). The claim ends when this is dropped, also when the
/// request loading it is cancelled mid-load, so no later request waits
/// for a load that will never finish.
struct Loading {
    key: String,
}

impl Loading {
    /// `None` if a load of `key` is already under way.
    fn claim(key: &str) -> Option<Loading> {
        with_isolate(|iso| iso.in_flight.insert(key.to_owned())).then(|| Loading {
            key: key.to_owned(),
        })
    }
}

impl Drop for Loading {
    fn drop(&mut self) {
        with_isolate(|iso| iso.in_flight.remove(&self.key));
    }
}

fn remember(key: &str, entry: &Entry) {
    with_isolate(|iso| iso.entries.insert(key, entry.clone()));
}

/// Reads the log of recent invalidations if it is due: before answering
/// when the isolate has none it can trust, else behind the response.
async fn follow_log(ctx: &Ctx) {
    let due = with_isolate(|iso| iso.generations.log_due(now_ms()));
    match due {
        LogDue::No => {}
        LogDue::Now => {
            let started = now_ms();
            read_log(ctx).await;
            ctx.add_kv_ms(now_ms().saturating_sub(started));
        }
        LogDue::Behind => {
            let detached = ctx.detached();
            ctx.wait_until(async move { read_log(&detached).await });
        }
    }
}

async fn read_log(ctx: &Ctx) {
    let read = match ctx.kv() {
        Ok(kv) => kv.get(LOG_KEY).text().await.map_err(|e| format!("{e:?}")),
        Err(e) => Err(e.message),
    };
    match read {
        Ok(Some(text)) => match serde_json::from_str::<Log>(&text) {
            Ok(log) => with_isolate(|iso| iso.generations.apply(&log, now_ms())),
            Err(e) => tracing::error!(error = %e, "the invalidation log is unreadable"),
        },
        // None yet (nothing was invalidated since the log began): ask for
        // one, behind the response; until then each tag's own key is read.
        Ok(None) => {
            let detached = ctx.detached();
            ctx.wait_until(async move { invalidation_log::ask_to_publish(&detached).await });
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the invalidation log"),
    }
    with_isolate(|iso| iso.generations.log_read());
}

/// A tag's current generation: known to the isolate, else read from KV.
async fn generation(ctx: &Ctx, tag: &str) -> String {
    let known = with_isolate(|iso| iso.generations.get(tag, now_ms()).map(str::to_owned));
    if let Some(value) = known {
        return value;
    }
    let value = match ctx.kv() {
        Ok(kv) => {
            let started = now_ms();
            let read = kv.get(&format!("gen:{tag}")).text().await;
            ctx.add_kv_ms(now_ms().saturating_sub(started));
            match read {
                Ok(v) => v.unwrap_or_else(|| "0".to_owned()),
                Err(e) => {
                    tracing::warn!(tag, error = ?e, "cannot read a cache generation");
                    "0".to_owned()
                }
            }
        }
        Err(_) => "0".to_owned(),
    };
    with_isolate(|iso| iso.generations.note(tag, value, now_ms()))
}

/// Makes every cached read under `tags` miss from now on (see the module
/// docs for who sees it when).
pub async fn invalidate(ctx: &Ctx, tags: &[String]) -> AppResult<()> {
    let kv = ctx.kv()?;
    let now = now_ms();
    // Development only: as if another isolate made the write (the tests
    // of the log's way to other isolates run on one isolate).
    #[cfg(feature = "bench")]
    let here = ctx.bench() != crate::bench::Mode::Elsewhere;
    #[cfg(not(feature = "bench"))]
    let here = true;
    let mut recorded = HashMap::new();
    for tag in tags {
        let (recent, value) = with_isolate(|iso| {
            let last = iso.invalidated_at.get(tag).copied().unwrap_or(0);
            // The new generation must differ from every earlier one.
            let value = now.max(last + 1);
            if here {
                iso.generations.note(tag, value.to_string(), now);
                iso.invalidated_at.insert(tag.clone(), value);
            }
            if iso.invalidated_at.len() > INVALIDATIONS_KEPT {
                iso.invalidated_at
                    .retain(|_, at| now.saturating_sub(*at) < 1000);
            }
            (now.saturating_sub(last) < 1000, value)
        });
        recorded.insert(tag.clone(), value.to_string());
        if recent {
            // KV takes about one write per second per key; the log carries
            // the newer generation to the other isolates.
            continue;
        }
        let started = now_ms();
        let put = kv
            .put(&format!("gen:{tag}"), value.to_string())
            .map_err(|e| AppError::internal(format!("{e:?}")))?
            .execute()
            .await;
        ctx.add_kv_ms(now_ms().saturating_sub(started));
        if let Err(e) = put {
            tracing::warn!(tag, error = ?e, "cannot write a cache generation");
        }
    }
    if !recorded.is_empty() {
        let detached = ctx.detached();
        ctx.wait_until(async move { invalidation_log::record(&detached, recorded).await });
    }
    Ok(())
}

/// Where [`serve`] found the entry it answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The isolate's memory: no KV read for the entry.
    Memory,
    /// Workers KV.
    Kv,
    /// Loaded from the primary for this request (or by a request of the
    /// same isolate it waited for).
    Primary,
}

impl Source {
    /// As `Server-Timing` names it (`cache;desc=memory`).
    pub fn name(self) -> &'static str {
        match self {
            Source::Memory => "memory",
            Source::Kv => "kv",
            Source::Primary => "primary",
        }
    }
}

/// What [`serve`] found.
pub struct Served {
    pub entry: Entry,
    pub outcome: Outcome,
    pub from: Source,
}

fn loader(ctx: &Ctx, read: Read) -> LocalBoxFuture<'static, Result<Entry, AppError>> {
    let config = ctx.config.clone();
    let request_id = ctx.request_id.clone();
    #[cfg(feature = "bench")]
    let baseline = ctx.bench().baseline();
    async move {
        let db = config.db(&request_id);
        #[cfg(feature = "bench")]
        let db = db.with_baseline(baseline);
        let cursors = CursorCodec::new(&config.session_secret)
            .ok_or_else(|| AppError::internal("cannot key the cursor codec"))?;
        let body = read.load(&db, &cursors).await?;
        let body = serde_json::to_string(&body).map_err(AppError::internal)?;
        Ok(Entry::new(body, now_ms()))
    }
    .boxed_local()
}

/// How often a request waiting for another request's load looks for its
/// result.
const FOLLOW_POLL_MS: u64 = 5;

/// Loads `read` once per key per isolate, however many requests ask at once.
///
/// A Worker request may not await I/O that another request started (the
/// runtime cancels it as hung), so the requests that find a load under way
/// do not await it: they wait on their own timer until its entry appears in
/// the isolate's memory, and load themselves only if it failed.
async fn load_once(ctx: &Ctx, key: &str, read: &Read) -> Result<Entry, AppError> {
    let fresh_secs = ctx.config.cache_fresh_secs;
    let fresh_in_memory = || {
        with_isolate(|iso| {
            iso.entries
                .get(key)
                .filter(|e| age(e.stored_at, now_ms(), fresh_secs, 0) == Age::Fresh)
                .cloned()
        })
    };
    let deadline = now_ms() + ctx.config.db_timeout.as_millis() as u64;
    while with_isolate(|iso| iso.in_flight.contains(key)) && now_ms() < deadline {
        Timeout::after(std::time::Duration::from_millis(FOLLOW_POLL_MS)).await;
        if let Some(entry) = fresh_in_memory() {
            return Ok(entry);
        }
    }
    if let Some(entry) = fresh_in_memory() {
        return Ok(entry);
    }
    let loading = Loading::claim(key);
    let started = now_ms();
    let result = loader(ctx, read.clone()).await;
    ctx.add_db_ms(now_ms().saturating_sub(started));
    drop(loading);
    if let Ok(entry) = &result {
        remember(key, entry);
        store(ctx, key, entry);
    }
    result
}

/// Writes the entry to KV behind the response.
fn store(ctx: &Ctx, key: &str, entry: &Entry) {
    let Ok(kv) = ctx.kv() else { return };
    let Ok(json) = serde_json::to_string(entry) else {
        return;
    };
    let ttl = entry_ttl(&ctx.config);
    let key = key.to_owned();
    ctx.wait_until(async move {
        match kv.put(&key, json) {
            Ok(put) => {
                if let Err(e) = put.expiration_ttl(ttl).execute().await {
                    tracing::warn!(key, error = ?e, "cannot store a cache entry");
                }
            }
            Err(e) => tracing::warn!(key, error = ?e, "cannot store a cache entry"),
        }
    });
}

/// Refreshes a stale entry behind the response, unless a load of it is
/// already under way.
fn refresh(ctx: &Ctx, key: &str, read: &Read) {
    let Some(loading) = Loading::claim(key) else {
        return;
    };
    let load = loader(ctx, read.clone());
    let key = key.to_owned();
    let kv = ctx.kv().ok();
    let ttl = entry_ttl(&ctx.config);
    ctx.wait_until(async move {
        let result = load.await;
        drop(loading);
        match result {
            Ok(entry) => {
                remember(&key, &entry);
                if let (Some(kv), Ok(json)) = (kv, serde_json::to_string(&entry)) {
                    if let Ok(put) = kv.put(&key, json) {
                        if let Err(e) = put.expiration_ttl(ttl).execute().await {
                            tracing::warn!(key, error = ?e, "cannot store a refreshed entry");
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(key, code = %e.code, "refresh of a stale entry failed"),
        }
    });
}

/// KV keeps an entry through its fresh and stale time (60 s at least, KV's
/// shortest expiry).
fn entry_ttl(config: &Config) -> u64 {
    (config.cache_fresh_secs + config.cache_stale_secs).max(60)
}

/// The most bytes a Workers KV key may have.
const KV_KEY_MAX_BYTES: usize = 512;

/// An entry's key: the read's key under its tags' generations. A read key
/// that would make it longer than KV takes (a long search with a cursor,
/// words in a script of many bytes per letter) is replaced by its SHA-256.
fn entry_key(generations: &[String], read_key: &str) -> String {
    let key = format!("c1:{}:{read_key}", generations.join("."));
    if key.len() <= KV_KEY_MAX_BYTES {
        return key;
    }
    let digest = Sha256::digest(read_key.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("c1:{}:sha256:{hex}", generations.join("."))
}

/// Answers a read from memory, KV or the primary, in that order.
pub async fn serve(ctx: &Ctx, read: &Read) -> AppResult<Served> {
    follow_log(ctx).await;
    let mut generations = Vec::new();
    for tag in read.tags() {
        generations.push(generation(ctx, &tag).await);
    }
    let key = entry_key(&generations, &read.key());
    let (fresh, stale) = (ctx.config.cache_fresh_secs, ctx.config.cache_stale_secs);

    let in_memory = with_isolate(|iso| iso.entries.get(&key).cloned());
    if let Some(entry) = &in_memory {
        if age(entry.stored_at, now_ms(), fresh, stale) == Age::Fresh {
            return Ok(Served {
                entry: entry.clone(),
                outcome: Outcome::Hit,
                from: Source::Memory,
            });
        }
    }

    let stored: Option<Entry> = match ctx.kv() {
        Ok(kv) => {
            let started = now_ms();
            let got = kv.get(&key).json::<Entry>().await;
            ctx.add_kv_ms(now_ms().saturating_sub(started));
            got.unwrap_or_else(|e| {
                tracing::warn!(error = ?e, "cache read failed; going to the primary");
                None
            })
        }
        Err(_) => None,
    };
    // The newer of memory and KV.
    let known = match (in_memory, stored) {
        (Some(m), Some(s)) if s.stored_at > m.stored_at => Some((s, Source::Kv)),
        (Some(m), _) => Some((m, Source::Memory)),
        (None, s) => s.map(|s| (s, Source::Kv)),
    };
    if let Some((entry, from)) = &known {
        match age(entry.stored_at, now_ms(), fresh, stale) {
            Age::Fresh => {
                remember(&key, entry);
                return Ok(Served {
                    entry: entry.clone(),
                    outcome: Outcome::Hit,
                    from: *from,
                });
            }
            Age::Stale => {
                refresh(ctx, &key, read);
                return Ok(Served {
                    entry: entry.clone(),
                    outcome: Outcome::Stale,
                    from: *from,
                });
            }
            Age::Expired => {}
        }
    }

    match load_once(ctx, &key, read).await {
        Ok(entry) => Ok(Served {
            entry,
            outcome: Outcome::Miss,
            from: Source::Primary,
        }),
        Err(e) if e.code == Code::PrimaryUnavailable => match known {
            Some((entry, from)) => Ok(Served {
                entry,
                outcome: Outcome::StaleOnError,
                from,
            }),
            None => Err(e),
        },
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_load_claim_ends_however_its_load_ends() {
        let claim = Loading::claim("k-claim").expect("first claim");
        assert!(Loading::claim("k-claim").is_none(), "one load at a time");
        // A request cancelled mid-load drops its future, and the claim with it.
        let cancelled = async move {
            let _held = claim;
            futures::future::pending::<()>().await;
        };
        drop(cancelled);
        assert!(
            Loading::claim("k-claim").is_some(),
            "the claim ended with it"
        );
    }

    #[test]
    fn entry_keys_fit_in_kv() {
        let gens = vec![
            "1733300000000-ab12".to_owned(),
            "1733300000001-cd34".to_owned(),
        ];
        let short = entry_key(&gens, "issue/x");
        assert_eq!(short, "c1:1733300000000-ab12.1733300000001-cd34:issue/x");
        // The longest search: 8 words of 64 letters of 4 bytes each, and a cursor.
        let word = "\u{10348}".repeat(crate::domain::search::MAX_TERM_CHARS);
        let long = |last: &str| {
            let mut words = vec![word.clone(); crate::domain::search::MAX_TERMS - 1];
            words.push(last.to_owned());
            format!(
                "issues?category=&limit=100&cursor={}&q={}&sort=popular",
                "c".repeat(200),
                words.join(" ")
            )
        };
        let (a, b) = (
            entry_key(&gens, &long(&word)),
            entry_key(&gens, &long("other")),
        );
        assert!(
            a.len() <= KV_KEY_MAX_BYTES && b.len() <= KV_KEY_MAX_BYTES,
            "{a} {b}"
        );
        assert_ne!(a, b, "different reads keep different keys");
        assert_eq!(
            a,
            entry_key(&gens, &long(&word)),
            "the same read, the same key"
        );
        assert!(
            a.starts_with("c1:1733300000000-ab12.1733300000001-cd34:sha256:"),
            "{a}"
        );
    }

    #[test]
    fn ages() {
        assert_eq!(age(1_000, 1_000, 30, 60), Age::Fresh);
        assert_eq!(age(1_000, 30_999, 30, 60), Age::Fresh);
        assert_eq!(age(1_000, 31_000, 30, 60), Age::Stale);
        assert_eq!(age(1_000, 91_000, 30, 60), Age::Expired);
        assert_eq!(
            age(5_000, 1_000, 30, 60),
            Age::Fresh,
            "clock skew counts as fresh"
        );
    }

    fn entry(body_len: usize, stored_at: u64) -> Entry {
        Entry::new("x".repeat(body_len), stored_at)
    }

    #[test]
    fn memory_is_bounded_by_bytes_and_drops_the_oldest() {
        let one = cost("k0000", &entry(1_000, 0));
        let mut m = Memory::new(one * 100);
        for i in 0..100u64 {
            m.insert(&format!("k{i:04}"), entry(1_000, i));
        }
        assert_eq!(m.len(), 100, "exactly the budget fits");
        assert_eq!(m.bytes(), one * 100);
        m.insert("k0100", entry(1_000, 100));
        assert!(
            m.bytes() <= one * 75,
            "down to three quarters: {}",
            m.bytes()
        );
        assert_eq!(m.len(), 75);
        assert!(m.get("k0000").is_none(), "the oldest went first");
        assert!(m.get("k0025").is_none());
        assert!(m.get("k0026").is_some());
        assert!(m.get("k0100").is_some(), "the newest stayed");
    }

    #[test]
    fn many_small_entries_fit_where_few_large_ones_do() {
        let budget = 1024 * 1024;
        let mut small = Memory::new(budget);
        let mut large = Memory::new(budget);
        for i in 0..2_000u64 {
            small.insert(&format!("issue/{i}"), entry(300, i));
            large.insert(&format!("issues?page={i}"), entry(20_000, i));
        }
        assert_eq!(small.len(), 2_000, "held: {}", small.bytes());
        assert!(large.len() < 60, "{}", large.len());
        assert!(large.bytes() <= budget);
    }

    #[test]
    fn a_replaced_entry_is_counted_once() {
        let mut m = Memory::new(1 << 20);
        m.insert("k", entry(1_000, 1));
        m.insert("k", entry(2_000, 2));
        assert_eq!(m.len(), 1);
        assert_eq!(m.bytes(), cost("k", &entry(2_000, 2)));
        m.insert("huge", entry(1 << 19, 3));
        assert!(m.get("huge").is_none(), "over a quarter of the budget");
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn etags_follow_the_body() {
        let a = Entry::new("{\"a\":1}".into(), 0);
        let b = Entry::new("{\"a\":2}".into(), 0);
        assert_ne!(a.etag, b.etag);
        assert_eq!(a.etag, Entry::new("{\"a\":1}".into(), 99).etag);
        assert!(etag_matches(&a.etag, &a.etag));
        assert!(etag_matches(&format!("\"x\", W/{}", a.etag), &a.etag));
        assert!(etag_matches("*", &a.etag));
        assert!(!etag_matches(&b.etag, &a.etag));
    }
}
