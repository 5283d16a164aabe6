//! Rate limiting as plain data and arithmetic: the policies, an exact GCRA,
//! the IETF rate-limit header fields, and an in-isolate gate for the hot
//! read path. No I/O and no clock: every time is passed in as unix
//! milliseconds, so a Durable Object (elsewhere) owns the state and the
//! tests use a fake clock.
//!
//! ## GCRA
//!
//! One bucket per (policy, subject), named by [`object_name`]. Its whole
//! state is the theoretical arrival time (TAT). With emission interval
//! `T = window / limit` and burst tolerance `window - T`, a fresh bucket
//! admits exactly `limit` requests at one instant and then one per `T`.
//!
//! The TAT is kept in **nanoseconds** (`tat_ns`), not milliseconds: `T` is
//! often fractional in ms (7 per minute is 8571.43 ms; 100000 per second is
//! 0.01 ms), and a TAT rounded to whole ms drifts by the rounding on every
//! request, so a burst of `limit` would no longer fit. `T` in ns is rounded
//! *up*, which makes the arithmetic exact integers: `limit` fit, `limit + 1`
//! do not, and the long-run rate is at most (and within 0.01% of) the
//! configured one. A TAT beyond one full bucket (a shortened window, clock
//! skew) is clamped to one full bucket.
//!
//! ## Headers
//!
//! The structured-field form of draft-ietf-httpapi-ratelimit-headers (-08
//! to -10): `RateLimit-Policy: "reads";q=120;w=60` and
//! `RateLimit: "reads";r=119;t=1`, where `t` is the whole seconds (rounded
//! up) until the bucket is full again. `Retry-After` is in whole seconds,
//! rounded up, at least 1 on a refusal.
//!
//! ## Local gate and its error bound
//!
//! [`LocalGate`] saves a Durable Object round trip per read: an isolate
//! reserves a block of `B = block_size(policy)` tokens at once (the DO runs
//! [`check`] with cost `B`), records it with [`LocalGate::grant`] and spends
//! it locally. Every token is taken from the global bucket before it is
//! spent, so the isolates together never admit more than the global bucket
//! granted: the limit is never exceeded. (A token is spent within its
//! grant's lifetime of being reserved, so over a short interval admissions
//! may lag the GCRA by at most one block; [`grant_ttl_ms`] keeps that
//! lifetime to one block's worth of time.)
//!
//! The error runs the other way. A token reserved but not yet spent counts
//! against the client, so with `I` isolates holding unspent blocks (at most
//! `B - 1` each, since the request that asked spends the first token) a
//! client may be refused up to `(B - 1) * I` tokens early. (Fewer than `B`
//! tokens left globally also refuse a block of `B`: the DO may fall back to
//! a block of `remaining` to avoid that.) A refusal is remembered with
//! [`LocalGate::deny`] until its retry time, so a refused client is refused
//! locally without asking again. One block per key is asked for at a time
//! ([`Local::AskOne`] for the requests that arrive meanwhile), so parallel
//! requests do not each reserve a block.

use std::collections::HashMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const NS_PER_MS: u128 = 1_000_000;

/// Longest subject kept verbatim in an object name; longer ones are hashed.
pub const MAX_SUBJECT_LEN: usize = 128;

/// `limit` requests per `window_ms`, under a name used in object names and
/// headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub name: &'static str,
    pub limit: u32,
    pub window_ms: u64,
}

/// The Durable Object name of one bucket: `"reads:1.2.3.4"`.
///
/// A subject longer than [`MAX_SUBJECT_LEN`] bytes, or one starting with
/// `#`, becomes `#` and the hex SHA-256 of it, so no raw subject can pose as
/// another's hash.
pub fn object_name(policy: &Policy, subject: &str) -> String {
    if subject.len() <= MAX_SUBJECT_LEN && !subject.starts_with('#') {
        return format!("{}:{subject}", policy.name);
    }
    let mut name = format!("{}:#", policy.name);
    for byte in Sha256::digest(subject.as_bytes()) {
        let _ = write!(name, "{byte:02x}");
    }
    name
}

/// The built-in policies, each overridable by configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policies {
    /// Per IP.
    pub reads: Policy,
    /// Per IP.
    pub writes: Policy,
    /// Per user.
    pub create: Policy,
    /// Per phone (E.164).
    pub bot: Policy,
    /// Per phone (E.164).
    pub otp: Policy,
    /// New live sockets (`GET /api/issues/:id/live`), per IP.
    pub live: Policy,
}

impl Default for Policies {
    fn default() -> Self {
        let p = |name, limit, secs: u64| Policy {
            name,
            limit,
            window_ms: secs * 1000,
        };
        Policies {
            reads: p("reads", 120, 60),
            writes: p("writes", 30, 60),
            create: p("create", 20, 60),
            bot: p("bot", 60, 60),
            otp: p("otp", 5, 3600),
            live: p("live", 30, 60),
        }
    }
}

const MAX_LIMIT: u64 = 100_000;
const MAX_WINDOW_SECS: u64 = 86_400;

impl Policies {
    pub fn all(&self) -> [&Policy; 6] {
        [
            &self.reads,
            &self.writes,
            &self.create,
            &self.bot,
            &self.otp,
            &self.live,
        ]
    }

    fn by_name(&mut self, name: &str) -> Option<&mut Policy> {
        match name {
            "reads" => Some(&mut self.reads),
            "writes" => Some(&mut self.writes),
            "create" => Some(&mut self.create),
            "bot" => Some(&mut self.bot),
            "otp" => Some(&mut self.otp),
            "live" => Some(&mut self.live),
            _ => None,
        }
    }

    /// The defaults with `spec` applied: `"reads=120/60,otp=5/3600"`, each
    /// entry `name=limit/window_seconds`. `None` or blank keeps the defaults.
    pub fn from_overrides(spec: Option<&str>) -> Result<Policies, String> {
        let mut policies = Policies::default();
        let Some(spec) = spec.filter(|s| !s.trim().is_empty()) else {
            return Ok(policies);
        };
        let mut seen: Vec<&'static str> = Vec::new();
        for entry in spec.split(',').map(str::trim) {
            let shape = || format!("{entry:?}: expected name=limit/window_seconds");
            if entry.is_empty() {
                return Err("an empty entry (two commas in a row?)".into());
            }
            let (name, numbers) = entry.split_once('=').ok_or_else(shape)?;
            let (limit, window) = numbers.split_once('/').ok_or_else(shape)?;
            let name = name.trim();
            let policy = policies.by_name(name).ok_or_else(|| {
                format!("unknown policy {name:?} (known: reads, writes, create, bot, otp, live)")
            })?;
            if seen.contains(&policy.name) {
                return Err(format!("policy {name:?} is given twice"));
            }
            seen.push(policy.name);
            let limit = number(name, "limit", limit, MAX_LIMIT)?;
            let window = number(name, "window (seconds)", window, MAX_WINDOW_SECS)?;
            policy.limit = u32::try_from(limit).map_err(|e| e.to_string())?;
            policy.window_ms = window * 1000;
        }
        Ok(policies)
    }
}

fn number(policy: &str, what: &str, raw: &str, max: u64) -> Result<u64, String> {
    let n: u64 = raw
        .trim()
        .parse()
        .map_err(|_| format!("{policy}: {what} {raw:?} is not a whole number"))?;
    if !(1..=max).contains(&n) {
        return Err(format!("{policy}: {what} must be 1 to {max}, not {n}"));
    }
    Ok(n)
}

/// The state of one bucket: the theoretical arrival time in unix
/// nanoseconds, 0 for a bucket never used.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gcra {
    pub tat_ns: u64,
}

impl Gcra {
    /// [`check`], keeping the new state.
    pub fn admit(&mut self, policy: &Policy, now_ms: u64, cost: u32) -> Decision {
        let d = check(policy, self.tat_ns, now_ms, cost);
        self.tat_ns = d.new_tat_ns;
        d
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// The state to keep; the old one when refused or peeking.
    pub new_tat_ns: u64,
    /// Requests of cost 1 that would still be allowed now.
    pub remaining: u32,
    /// Milliseconds until the bucket is full again.
    pub reset_ms: u64,
    /// Milliseconds until this request would be allowed; 0 when allowed or
    /// not `retryable`.
    pub retry_after_ms: u64,
    /// False when waiting cannot help: the cost exceeds the limit (or the
    /// limit is 0). Answer such a request without `Retry-After`.
    pub retryable: bool,
}

/// The emission interval in ns, rounded up: the long-run rate never
/// exceeds the policy's.
fn interval_ns(policy: &Policy) -> u128 {
    let limit = u128::from(policy.limit.max(1));
    (u128::from(policy.window_ms) * NS_PER_MS)
        .div_ceil(limit)
        .max(1)
}

fn ceil_ms(ns: u128) -> u64 {
    u64::try_from(ns.div_ceil(NS_PER_MS)).unwrap_or(u64::MAX)
}

/// Whether a request of `cost` tokens is allowed at `now_ms`, for a bucket
/// whose state is `tat_ns`. Pure: keep `new_tat_ns` to make it stick.
///
/// Cost 0 is a peek: it never consumes, and answers whether one more
/// request would be allowed now.
pub fn check(policy: &Policy, tat_ns: u64, now_ms: u64, cost: u32) -> Decision {
    let t = interval_ns(policy);
    let capacity = u128::from(policy.limit) * t;
    let now = u128::from(now_ms) * NS_PER_MS;
    // Time owed, at most one full bucket.
    let level = u128::from(tat_ns).saturating_sub(now).min(capacity);
    let remaining = |level: u128| u32::try_from((capacity - level) / t).unwrap_or(u32::MAX);
    let refused = |retry_after_ns: u128, retryable: bool| Decision {
        allowed: false,
        new_tat_ns: tat_ns,
        remaining: remaining(level),
        reset_ms: ceil_ms(level),
        retry_after_ms: ceil_ms(retry_after_ns),
        retryable,
    };
    if policy.limit == 0 || cost > policy.limit {
        return refused(0, false);
    }
    let needed = level + u128::from(cost.max(1)) * t;
    if needed > capacity {
        return refused(needed - capacity, true);
    }
    if cost == 0 {
        return Decision {
            allowed: true,
            new_tat_ns: tat_ns,
            remaining: remaining(level),
            reset_ms: ceil_ms(level),
            retry_after_ms: 0,
            retryable: true,
        };
    }
    Decision {
        allowed: true,
        new_tat_ns: u64::try_from(now + needed).unwrap_or(u64::MAX),
        remaining: remaining(needed),
        reset_ms: ceil_ms(needed),
        retry_after_ms: 0,
        retryable: true,
    }
}

/// The state of a bucket started afresh half used at `now_ms`: half the
/// limit (rounded down) is spent, so at least one request is allowed at
/// once and a burst gets at most half what a full bucket would. The
/// limiter starts a bucket whose saved state it cannot read so: letting
/// the client through, but not with a whole new allowance.
pub fn half_used(policy: &Policy, now_ms: u64) -> u64 {
    let spent = u128::from(policy.limit / 2) * interval_ns(policy);
    u64::try_from(u128::from(now_ms) * NS_PER_MS + spent).unwrap_or(u64::MAX)
}

/// A structured-field string: quoted, `\` and `"` escaped, anything but
/// printable ASCII dropped.
fn sf_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars().filter(|c| (' '..='~').contains(c)) {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// The `RateLimit-Policy` value: `"reads";q=120;w=60`.
pub fn policy_header(policy: &Policy) -> String {
    format!(
        "{};q={};w={}",
        sf_string(policy.name),
        policy.limit,
        policy.window_ms.div_ceil(1000)
    )
}

/// The `RateLimit` value: `"reads";r=REMAINING;t=SECONDS_UNTIL_FULL`.
pub fn limit_header(policy: &Policy, remaining: u32, reset_ms: u64) -> String {
    format!(
        "{};r={};t={}",
        sf_string(policy.name),
        remaining,
        reset_ms.div_ceil(1000)
    )
}

/// A refusal's wait in whole seconds: rounded up, at least 1.
pub fn retry_after_secs_of(retry_after_ms: u64) -> u32 {
    u32::try_from(retry_after_ms.div_ceil(1000))
        .unwrap_or(u32::MAX)
        .max(1)
}

/// Tokens an isolate reserves at once: a tenth of the limit, at least 1.
pub fn block_size(policy: &Policy) -> u32 {
    (policy.limit / 10).max(1)
}

/// How long a granted block may be spent: one block's worth of time at the
/// policy's rate (at least 1 ms, at most the window).
pub fn grant_ttl_ms(policy: &Policy) -> u64 {
    let ns = u128::from(block_size(policy)) * interval_ns(policy);
    ceil_ms(ns).clamp(1, policy.window_ms.max(1))
}

/// How long writes of one bucket are refused (503) by default while the
/// limiter keeps failing for it, counted from its first failure in a row.
/// After that the isolate limits the bucket itself ([`Outages`]) until the
/// limiter answers again, so a broken limiter pauses writes for a bounded
/// time, never for ever.
pub const FAIL_CLOSED_MS: u64 = 30_000;

/// Keys an [`Outages`] follows at most.
pub const OUTAGE_MAX_KEYS: usize = 10_000;

/// What a write whose limiter failed gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenDown {
    /// Still within the window from the first failure: refuse (503).
    Refuse { retry_after_ms: u64 },
    /// Past it: the isolate's own bucket of the same policy decided.
    Local(Decision),
}

#[derive(Debug, Clone, Copy)]
struct Outage {
    since_ms: u64,
    local: Gcra,
}

/// Limiter failures per bucket in this isolate: the first failure of a run
/// starts a window (`fail_closed_ms`, [`FAIL_CLOSED_MS`] by default) in
/// which writes are refused; past
/// it, writes are admitted by a bucket of the same policy kept here (the
/// limit then holds per isolate, not globally). An answer from the limiter
/// ends the run.
#[derive(Debug, Default)]
pub struct Outages {
    runs: HashMap<String, Outage>,
}

impl Outages {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.runs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The limiter failed for `key`: what the write gets.
    pub fn failed(
        &mut self,
        key: &str,
        policy: &Policy,
        now_ms: u64,
        fail_closed_ms: u64,
    ) -> WhenDown {
        if !self.runs.contains_key(key) && self.runs.len() >= OUTAGE_MAX_KEYS {
            // The longest run goes: it is the nearest to limiting locally.
            if let Some(oldest) = self
                .runs
                .iter()
                .min_by_key(|(_, o)| o.since_ms)
                .map(|(k, _)| k.clone())
            {
                self.runs.remove(&oldest);
            }
        }
        let run = self.runs.entry(key.to_owned()).or_insert(Outage {
            since_ms: now_ms,
            local: Gcra::default(),
        });
        let until = run.since_ms.saturating_add(fail_closed_ms);
        if now_ms < until {
            return WhenDown::Refuse {
                retry_after_ms: until - now_ms,
            };
        }
        WhenDown::Local(run.local.admit(policy, now_ms, 1))
    }

    /// The limiter answered for `key`: its run of failures is over.
    pub fn answered(&mut self, key: &str) {
        if !self.runs.is_empty() {
            self.runs.remove(key);
        }
    }
}

/// Keys a [`LocalGate`] holds by default.
pub const LOCAL_GATE_MAX_KEYS: usize = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    /// A locally held token was spent; `remaining_hint` are left here (not
    /// globally).
    Allowed { remaining_hint: u32 },
    /// Nothing held: ask the global limiter for a block, then `grant` it
    /// (or `deny`, or `release` on a failure).
    AskGlobal,
    /// Nothing held, and another request of this isolate is asking for a
    /// block already: ask the global limiter for this request's one token
    /// only. (Every request that found the gate empty asking for a block
    /// would reserve a block each: a browser's parallel requests would
    /// spend several blocks of the client's allowance for a handful of
    /// reads, and be refused early.)
    AskOne,
    /// Refused by the global limiter and not yet due to retry.
    Denied { retry_after_ms: u64 },
}

#[derive(Debug, Clone, Copy)]
struct Held {
    tokens: u32,
    /// Tokens are spendable strictly before this.
    expires_at_ms: u64,
    denied_until_ms: u64,
    /// A block is being asked for (by one request of this isolate) until
    /// then, at the latest.
    asking_until_ms: u64,
    /// Recency, from the gate's counter; the smallest is evicted first.
    used: u64,
}

impl Held {
    fn useful(&self, now_ms: u64) -> bool {
        (self.tokens > 0 && now_ms < self.expires_at_ms)
            || now_ms < self.denied_until_ms
            || now_ms < self.asking_until_ms
    }
}

/// How long a block request keeps others of the isolate from asking for
/// one too, at most (it normally ends with `grant`, `deny` or `release`).
pub const ASKING_MS: u64 = 5_000;

/// Tokens reserved from the global limiter, spent in this isolate. Bounded:
/// past `max_keys`, entries with nothing useful go first, then the least
/// recently used.
#[derive(Debug)]
pub struct LocalGate {
    held: HashMap<String, Held>,
    max_keys: usize,
    /// The latest time seen by `take`, for expiring on insert.
    now_ms: u64,
    counter: u64,
}

impl Default for LocalGate {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalGate {
    pub fn new() -> Self {
        Self::with_max_keys(LOCAL_GATE_MAX_KEYS)
    }

    pub fn with_max_keys(max_keys: usize) -> Self {
        LocalGate {
            held: HashMap::new(),
            max_keys: max_keys.max(1),
            now_ms: 0,
            counter: 0,
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.len()
    }

    fn tick(&mut self) -> u64 {
        self.counter += 1;
        self.counter
    }

    pub fn take(&mut self, key: &str, now_ms: u64) -> Local {
        self.now_ms = self.now_ms.max(now_ms);
        let used = self.tick();
        let Some(h) = self.held.get_mut(key) else {
            self.insert(
                key,
                Held {
                    tokens: 0,
                    expires_at_ms: 0,
                    denied_until_ms: 0,
                    asking_until_ms: now_ms + ASKING_MS,
                    used,
                },
            );
            return Local::AskGlobal;
        };
        if now_ms < h.denied_until_ms {
            h.used = used;
            return Local::Denied {
                retry_after_ms: h.denied_until_ms - now_ms,
            };
        }
        if h.tokens > 0 && now_ms < h.expires_at_ms {
            h.tokens -= 1;
            h.used = used;
            return Local::Allowed {
                remaining_hint: h.tokens,
            };
        }
        if now_ms < h.asking_until_ms {
            h.used = used;
            return Local::AskOne;
        }
        h.tokens = 0;
        h.asking_until_ms = now_ms + ASKING_MS;
        h.used = used;
        Local::AskGlobal
    }

    /// How long `key` is still refused locally, if it is (the write path's
    /// check: writes ask the global limiter for every token).
    pub fn denied(&mut self, key: &str, now_ms: u64) -> Option<u64> {
        self.now_ms = self.now_ms.max(now_ms);
        let h = self.held.get(key)?;
        (now_ms < h.denied_until_ms).then(|| h.denied_until_ms - now_ms)
    }

    /// A block request that failed: the next request asks again.
    pub fn release(&mut self, key: &str) {
        if let Some(h) = self.held.get_mut(key) {
            h.asking_until_ms = 0;
        }
    }

    /// Record `tokens` granted by the global limiter, spendable until
    /// `expires_at_ms`. Added to a live earlier grant, whose (earlier)
    /// expiry then holds for all.
    pub fn grant(&mut self, key: &str, tokens: u32, expires_at_ms: u64) {
        let (now, used) = (self.now_ms, self.tick());
        if let Some(h) = self.held.get_mut(key) {
            if h.tokens > 0 && now < h.expires_at_ms {
                h.tokens = h.tokens.saturating_add(tokens);
                h.expires_at_ms = h.expires_at_ms.min(expires_at_ms);
            } else {
                h.tokens = tokens;
                h.expires_at_ms = expires_at_ms;
            }
            h.denied_until_ms = 0;
            h.asking_until_ms = 0;
            h.used = used;
            return;
        }
        let held = Held {
            tokens,
            expires_at_ms,
            denied_until_ms: 0,
            asking_until_ms: 0,
            used,
        };
        if held.useful(now) {
            self.insert(key, held);
        }
    }

    /// Refuse `key` locally until `until_ms`, dropping any tokens held.
    pub fn deny(&mut self, key: &str, until_ms: u64) {
        let (now, used) = (self.now_ms, self.tick());
        let held = Held {
            tokens: 0,
            expires_at_ms: 0,
            denied_until_ms: until_ms,
            asking_until_ms: 0,
            used,
        };
        if let Some(h) = self.held.get_mut(key) {
            *h = held;
        } else if held.useful(now) {
            self.insert(key, held);
        }
    }

    fn insert(&mut self, key: &str, held: Held) {
        if self.held.len() >= self.max_keys {
            let now = self.now_ms;
            self.held.retain(|_, h| h.useful(now));
        }
        if self.held.len() >= self.max_keys {
            // Evict a tenth at once, so a flood of new keys costs one scan
            // per many inserts rather than one per insert.
            let batch = (self.held.len() + 1 - self.max_keys).max(self.max_keys / 10);
            let mut ages: Vec<u64> = self.held.values().map(|h| h.used).collect();
            let nth = batch.clamp(1, ages.len()) - 1;
            let (_, cutoff, _) = ages.select_nth_unstable(nth);
            let cutoff = *cutoff;
            self.held.retain(|_, h| h.used > cutoff);
        }
        self.held.insert(key.to_owned(), held);
    }
}

/// What the limiter said, for the response headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    pub policy: Policy,
    pub remaining: u32,
    pub reset_ms: u64,
}

impl Verdict {
    pub fn headers(&self) -> [(&'static str, String); 2] {
        [
            ("RateLimit-Policy", policy_header(&self.policy)),
            (
                "RateLimit",
                limit_header(&self.policy, self.remaining, self.reset_ms),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(limit: u32, window_secs: u64) -> Policy {
        Policy {
            name: "test",
            limit,
            window_ms: window_secs * 1000,
        }
    }

    const NOW: u64 = 1_760_000_000_000;

    #[test]
    fn a_fresh_bucket_allows_exactly_limit_at_one_instant() {
        // Whole-ms, fractional-ms and sub-ms emission intervals.
        for p in [policy(120, 60), policy(7, 60), policy(100_000, 1)] {
            let mut g = Gcra::default();
            for i in 0..p.limit {
                let d = g.admit(&p, NOW, 1);
                assert!(d.allowed, "{p:?}: request {} refused", i + 1);
                assert_eq!(d.remaining, p.limit - i - 1);
            }
            let d = g.admit(&p, NOW, 1);
            assert!(!d.allowed, "{p:?}: request limit+1 allowed");
            assert!(d.retryable);
            assert_eq!(d.remaining, 0);
        }
    }

    #[test]
    fn a_refusal_waits_one_interval_then_allows_exactly_one() {
        for (p, t_ms) in [(policy(120, 60), 500.0), (policy(7, 60), 60_000.0 / 7.0)] {
            let mut g = Gcra::default();
            for _ in 0..p.limit {
                assert!(g.admit(&p, NOW, 1).allowed);
            }
            let refused = g.admit(&p, NOW, 1);
            assert_eq!(refused.new_tat_ns, g.tat_ns, "a refusal changes nothing");
            assert!(
                (refused.retry_after_ms as f64 - t_ms).abs() <= 1.0,
                "{refused:?}"
            );
            let later = NOW + refused.retry_after_ms;
            assert!(!g.admit(&p, later - 1, 1).allowed, "one ms early");
            assert!(g.admit(&p, later, 1).allowed);
            assert!(!g.admit(&p, later, 1).allowed, "only one per interval");
        }
    }

    #[test]
    fn twice_the_rate_never_beats_the_bound_and_is_not_starved() {
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rand = move || {
            seed = seed
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (seed >> 11) as f64 / (1u64 << 53) as f64
        };
        for (p, windows) in [
            (policy(7, 60), 300.0),
            (policy(120, 60), 40.0),
            (policy(3, 1), 2000.0),
            (policy(100_000, 1), 3.0),
        ] {
            let t_ms = p.window_ms as f64 / f64::from(p.limit);
            let end = p.window_ms as f64 * windows;
            let mut g = Gcra::default();
            let mut clock = 0.0;
            let mut admitted = Vec::new();
            while clock < end {
                // Uniform gaps in [0, T): twice the allowed rate on average.
                clock += rand() * t_ms;
                let now = NOW + clock as u64;
                if g.admit(&p, now, 1).allowed {
                    admitted.push(now - NOW);
                }
            }
            // For admitted i <= j: j - i + 1 <= limit + (t_j - t_i) / T,
            // i.e. s_j - s_i + 1 <= limit with s_k = k - t_k / T.
            let mut min_s = f64::INFINITY;
            for (k, &t) in admitted.iter().enumerate() {
                let s = k as f64 - t as f64 / t_ms;
                min_s = min_s.min(s);
                assert!(s - min_s + 1.0 <= f64::from(p.limit) + 1e-6, "{p:?} at {k}");
            }
            let fair = end / t_ms;
            assert!(admitted.len() as f64 >= 0.99 * fair, "{p:?} starved");
        }
    }

    #[test]
    fn cost_n_consumes_n_and_more_than_the_limit_never_fits() {
        let p = policy(10, 10);
        let mut g = Gcra::default();
        let d = g.admit(&p, NOW, 4);
        assert!(d.allowed);
        assert_eq!(d.remaining, 6);
        let d = g.admit(&p, NOW, 7);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ms, 1000, "one interval short");
        assert!(g.admit(&p, NOW, 6).allowed);
        assert!(!g.admit(&p, NOW, 1).allowed);

        let d = check(&p, 0, NOW, 11);
        assert!(!d.allowed && !d.retryable);
        assert_eq!((d.retry_after_ms, d.remaining, d.new_tat_ns), (0, 10, 0));
    }

    #[test]
    fn cost_zero_peeks_without_consuming() {
        let p = policy(3, 3);
        let mut g = Gcra::default();
        for _ in 0..10 {
            let d = g.admit(&p, NOW, 0);
            assert!(d.allowed);
            assert_eq!(d.remaining, 3);
        }
        assert_eq!(g.tat_ns, 0);
        for _ in 0..3 {
            assert!(g.admit(&p, NOW, 1).allowed);
        }
        let before = g;
        let d = g.admit(&p, NOW, 0);
        assert!(!d.allowed && d.retryable);
        assert_eq!((d.remaining, d.retry_after_ms, d.reset_ms), (0, 1000, 3000));
        assert_eq!(g, before);
    }

    #[test]
    fn a_far_future_tat_is_clamped_to_one_full_bucket() {
        let p = policy(10, 10);
        let d = check(&p, u64::MAX, NOW, 1);
        assert_eq!((d.retry_after_ms, d.reset_ms), (1000, 10_000));
    }

    #[test]
    fn header_values_are_exact() {
        let p = Policies::default();
        assert_eq!(policy_header(&p.reads), r#""reads";q=120;w=60"#);
        assert_eq!(policy_header(&p.otp), r#""otp";q=5;w=3600"#);

        let mut g = Gcra::default();
        let d = g.admit(&p.reads, NOW, 1);
        assert_eq!(
            limit_header(&p.reads, d.remaining, d.reset_ms),
            r#""reads";r=119;t=1"#
        );
        assert!(d.allowed);
        for _ in 1..120 {
            g.admit(&p.reads, NOW, 1);
        }
        let d = g.admit(&p.reads, NOW, 1);
        assert_eq!(
            limit_header(&p.reads, d.remaining, d.reset_ms),
            r#""reads";r=0;t=60"#
        );
        assert_eq!(
            retry_after_secs_of(d.retry_after_ms),
            1,
            "500 ms rounds up to 1 s"
        );

        let mut g = Gcra::default();
        for _ in 0..5 {
            g.admit(&p.otp, NOW, 1);
        }
        let d = g.admit(&p.otp, NOW + 1, 1);
        assert_eq!(retry_after_secs_of(d.retry_after_ms), 720);
        assert_eq!(
            limit_header(&p.otp, d.remaining, d.reset_ms),
            r#""otp";r=0;t=3600"#
        );

        let odd = Policy {
            name: "a\"b\\c\n",
            limit: 1,
            window_ms: 1500,
        };
        assert_eq!(policy_header(&odd), r#""a\"b\\c";q=1;w=2"#);
    }

    #[test]
    fn a_failing_limiter_refuses_writes_for_a_bounded_time_then_limits_locally() {
        let p = Policy {
            name: "writes",
            limit: 3,
            window_ms: 60_000,
        };
        let mut o = Outages::new();
        let t0 = 1_000_000;
        assert_eq!(
            o.failed("writes:a", &p, t0, FAIL_CLOSED_MS),
            WhenDown::Refuse {
                retry_after_ms: FAIL_CLOSED_MS
            }
        );
        assert_eq!(
            o.failed("writes:a", &p, t0 + FAIL_CLOSED_MS - 1, FAIL_CLOSED_MS),
            WhenDown::Refuse { retry_after_ms: 1 }
        );
        // Another key has its own window.
        assert!(matches!(
            o.failed("writes:b", &p, t0 + FAIL_CLOSED_MS, FAIL_CLOSED_MS),
            WhenDown::Refuse { .. }
        ));
        // Past the window: the isolate's own bucket, with the same limit.
        let after = t0 + FAIL_CLOSED_MS;
        for _ in 0..3 {
            assert!(
                matches!(o.failed("writes:a", &p, after, FAIL_CLOSED_MS), WhenDown::Local(d) if d.allowed)
            );
        }
        assert!(
            matches!(o.failed("writes:a", &p, after, FAIL_CLOSED_MS), WhenDown::Local(d) if !d.allowed)
        );
        // The limiter answers: the run is over, a new failure starts a new one.
        o.answered("writes:a");
        assert!(matches!(
            o.failed("writes:a", &p, after + 1, FAIL_CLOSED_MS),
            WhenDown::Refuse { retry_after_ms } if retry_after_ms == FAIL_CLOSED_MS
        ));
    }

    #[test]
    fn outages_are_bounded() {
        let p = Policy {
            name: "writes",
            limit: 3,
            window_ms: 60_000,
        };
        let mut o = Outages::new();
        for i in 0..OUTAGE_MAX_KEYS + 5 {
            o.failed(&format!("writes:{i}"), &p, 1_000 + i as u64, FAIL_CLOSED_MS);
        }
        assert_eq!(o.len(), OUTAGE_MAX_KEYS);
        // The newest run is kept.
        assert!(matches!(
            o.failed(
                &format!("writes:{}", OUTAGE_MAX_KEYS + 4),
                &p,
                2_000_000,
                FAIL_CLOSED_MS
            ),
            WhenDown::Local(_)
        ));
    }

    #[test]
    fn a_bucket_started_half_used_lets_half_through() {
        for limit in [1, 2, 7, 30, 120] {
            let p = Policy {
                name: "writes",
                limit,
                window_ms: 60_000,
            };
            let now = 1_796_122_417_300;
            let mut g = Gcra {
                tat_ns: half_used(&p, now),
            };
            let left = check(&p, g.tat_ns, now, 0).remaining;
            assert_eq!(left, limit - limit / 2, "limit {limit}");
            assert!(left >= 1);
            for _ in 0..left {
                assert!(g.admit(&p, now, 1).allowed);
            }
            assert!(!g.admit(&p, now, 1).allowed, "limit {limit}");
        }
    }

    #[test]
    fn object_names_cap_and_hash_long_subjects() {
        let p = Policies::default();
        assert_eq!(object_name(&p.reads, "1.2.3.4"), "reads:1.2.3.4");
        assert_eq!(object_name(&p.otp, "+447700900123"), "otp:+447700900123");
        let exact = "x".repeat(MAX_SUBJECT_LEN);
        assert_eq!(object_name(&p.create, &exact), format!("create:{exact}"));

        let long_a = "a".repeat(MAX_SUBJECT_LEN + 1);
        let long_b = "b".repeat(MAX_SUBJECT_LEN + 1);
        let a = object_name(&p.reads, &long_a);
        assert_eq!(a.len(), "reads:#".len() + 64);
        assert!(a.starts_with("reads:#"));
        assert_eq!(a, object_name(&p.reads, &long_a), "stable");
        assert_ne!(a, object_name(&p.reads, &long_b));
        // A subject shaped like a hash is hashed too, so it cannot alias one.
        let alias = a.trim_start_matches("reads:");
        assert_ne!(object_name(&p.reads, alias), a);
    }

    #[test]
    fn overrides_parse_and_keep_the_rest() {
        let d = Policies::default();
        assert_eq!(Policies::from_overrides(None), Ok(d.clone()));
        assert_eq!(Policies::from_overrides(Some("  ")), Ok(d.clone()));
        let p = Policies::from_overrides(Some("reads=10/1, otp = 3/600")).expect("valid");
        assert_eq!(
            (p.reads.name, p.reads.limit, p.reads.window_ms),
            ("reads", 10, 1000)
        );
        assert_eq!((p.otp.limit, p.otp.window_ms), (3, 600_000));
        assert_eq!(
            (&p.writes, &p.create, &p.bot),
            (&d.writes, &d.create, &d.bot)
        );
        let live = Policies::from_overrides(Some("live=5/60")).expect("live");
        assert_eq!((live.live.name, live.live.limit), ("live", 5));
        let max = Policies::from_overrides(Some("bot=100000/86400")).expect("bounds");
        assert_eq!((max.bot.limit, max.bot.window_ms), (100_000, 86_400_000));
    }

    #[test]
    fn bad_overrides_name_the_problem() {
        for (spec, needle) in [
            ("nope=1/1", "unknown policy \"nope\""),
            ("reads=0/60", "reads: limit must be 1 to 100000"),
            ("reads=100001/60", "reads: limit must be 1 to 100000"),
            ("reads=-1/60", "reads: limit \"-1\" is not a whole number"),
            ("reads=x/60", "reads: limit \"x\" is not a whole number"),
            ("reads=10/0", "reads: window (seconds) must be 1 to 86400"),
            (
                "reads=10/86401",
                "reads: window (seconds) must be 1 to 86400",
            ),
            (
                "reads=10/1.5",
                "reads: window (seconds) \"1.5\" is not a whole number",
            ),
            (
                "reads=10",
                "\"reads=10\": expected name=limit/window_seconds",
            ),
            ("reads", "\"reads\": expected name=limit/window_seconds"),
            ("reads=1/1,reads=2/2", "policy \"reads\" is given twice"),
            ("reads=1/1,,otp=1/1", "empty entry"),
        ] {
            let e = Policies::from_overrides(Some(spec)).unwrap_err();
            assert!(e.contains(needle), "{spec:?} gave {e:?}");
        }
    }

    #[test]
    fn block_size_and_grant_ttl() {
        let p = Policies::default();
        assert_eq!(block_size(&p.reads), 12);
        assert_eq!(block_size(&p.otp), 1);
        assert_eq!(grant_ttl_ms(&p.reads), 6000, "12 tokens at 500 ms");
        assert_eq!(grant_ttl_ms(&p.otp), 720_000);
    }

    #[test]
    fn the_gate_spends_a_grant_then_asks_again() {
        let mut gate = LocalGate::new();
        assert_eq!(gate.take("reads:1.2.3.4", NOW), Local::AskGlobal);
        gate.grant("reads:1.2.3.4", 3, NOW + 6000);
        for left in [2, 1, 0] {
            assert_eq!(
                gate.take("reads:1.2.3.4", NOW),
                Local::Allowed {
                    remaining_hint: left
                }
            );
        }
        assert_eq!(gate.take("reads:1.2.3.4", NOW), Local::AskGlobal);
        assert_eq!(gate.take("reads:5.6.7.8", NOW), Local::AskGlobal, "per key");
    }

    /// Requests that find the gate empty while one of them asks for a block
    /// ask for one token each, not a block each.
    #[test]
    fn one_block_is_asked_for_at_a_time() {
        let mut gate = LocalGate::new();
        assert_eq!(gate.take("k", NOW), Local::AskGlobal);
        for _ in 0..5 {
            assert_eq!(gate.take("k", NOW + 1), Local::AskOne);
        }
        gate.grant("k", 4, NOW + 6000);
        assert_eq!(
            gate.take("k", NOW + 2),
            Local::Allowed { remaining_hint: 3 }
        );
        // A failed ask lets the next request ask again ...
        for _ in 0..3 {
            assert!(matches!(gate.take("k", NOW + 3), Local::Allowed { .. }));
        }
        assert_eq!(gate.take("k", NOW + 4), Local::AskGlobal);
        assert_eq!(gate.take("k", NOW + 4), Local::AskOne);
        gate.release("k");
        assert_eq!(gate.take("k", NOW + 5), Local::AskGlobal);
        // ... and so does one that never ended, once it is old enough.
        assert_eq!(gate.take("k", NOW + 5 + ASKING_MS - 1), Local::AskOne);
        assert_eq!(gate.take("k", NOW + 5 + ASKING_MS), Local::AskGlobal);
        // A refusal ends the ask too.
        gate.deny("k", NOW + 20_000);
        assert_eq!(gate.denied("k", NOW + 19_000), Some(1_000));
        assert_eq!(gate.denied("k", NOW + 20_000), None);
    }

    #[test]
    fn the_gate_honours_expiry() {
        let mut gate = LocalGate::new();
        gate.take("k", NOW);
        gate.grant("k", 5, NOW + 100);
        assert!(matches!(gate.take("k", NOW + 99), Local::Allowed { .. }));
        assert_eq!(gate.take("k", NOW + 100), Local::AskGlobal);
        // A second grant on a live one keeps the earlier expiry.
        gate.grant("k", 2, NOW + 1000);
        gate.grant("k", 2, NOW + 5000);
        assert_eq!(
            gate.take("k", NOW + 999),
            Local::Allowed { remaining_hint: 3 }
        );
        assert_eq!(gate.take("k", NOW + 1000), Local::AskGlobal);
        // An already expired grant is not even stored.
        gate.grant("old", 5, NOW);
        assert_eq!(gate.take("old", NOW + 1000), Local::AskGlobal);
    }

    #[test]
    fn the_gate_refuses_until_the_deny_ends() {
        let mut gate = LocalGate::new();
        gate.take("k", NOW);
        gate.grant("k", 5, NOW + 10_000);
        gate.deny("k", NOW + 500);
        assert_eq!(
            gate.take("k", NOW + 100),
            Local::Denied {
                retry_after_ms: 400
            }
        );
        assert_eq!(
            gate.take("k", NOW + 499),
            Local::Denied { retry_after_ms: 1 }
        );
        assert_eq!(
            gate.take("k", NOW + 500),
            Local::AskGlobal,
            "tokens dropped"
        );
        gate.deny("k", NOW + 1000);
        gate.grant("k", 1, NOW + 2000);
        assert!(
            matches!(gate.take("k", NOW + 600), Local::Allowed { .. }),
            "a grant lifts a deny"
        );
    }

    #[test]
    fn the_gate_stays_under_its_key_bound() {
        let mut gate = LocalGate::with_max_keys(100);
        gate.take("x", NOW);
        gate.grant("keep", 1_000_000, NOW + 1_000_000);
        for i in 0..10_000u64 {
            let key = format!("k{i}");
            let now = NOW + i;
            assert_eq!(gate.take(&key, now), Local::AskGlobal);
            // Half expire soon (evicted as useless), half outlive the run
            // (evicted as least recently used).
            if i % 2 == 0 {
                gate.grant(&key, 2, now + 50);
            } else {
                gate.deny(&key, now + 1_000_000);
            }
            assert!(gate.len() <= 100, "{} keys at {i}", gate.len());
            if i % 10 == 0 {
                // Used often, so never the oldest.
                assert!(matches!(gate.take("keep", now), Local::Allowed { .. }));
            }
        }
        assert!(matches!(
            gate.take("keep", NOW + 10_000),
            Local::Allowed { .. }
        ));
        assert_eq!(LocalGate::new().max_keys, LOCAL_GATE_MAX_KEYS);
    }
}
