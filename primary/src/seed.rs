//! Seed data: the demo set and the synthetic generator.
//!
//! Both load through the Hrana client, so they work against this primary and
//! against Turso. The synthetic set is deterministic: the same arguments give
//! byte-for-byte the same rows (ids included), so benchmarks can be compared.
//! Counts are written consistent with memberships: `issues.rioter_count` is
//! the number of `user_issues` rows of the issue, and so on.

use std::fmt;

use libsql_hrana::proto::{Stmt, Value};

use crate::client::{int, stmt, text, Client, ClientError, TxError};
use crate::sql::split_statements;

pub const DEMO_SQL: &str = include_str!("../seed/demo.sql");

#[derive(Debug)]
pub enum SeedError {
    Client(ClientError),
    Tx(TxError),
    NotEmpty(i64),
}

impl fmt::Display for SeedError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SeedError::Client(e) => e.fmt(f),
            SeedError::Tx(e) => write!(f, "seeding failed: {e}"),
            SeedError::NotEmpty(n) => write!(
                f,
                "the database already has {n} issues; the synthetic set needs an empty, migrated database \
                 (start the primary with a fresh --db file and run `migrate up`)"
            ),
        }
    }
}

impl std::error::Error for SeedError {}

impl From<ClientError> for SeedError {
    fn from(e: ClientError) -> Self {
        SeedError::Client(e)
    }
}

impl From<TxError> for SeedError {
    fn from(e: TxError) -> Self {
        SeedError::Tx(e)
    }
}

pub enum DemoOutcome {
    Loaded(usize),
    Skipped(i64),
}

async fn issue_count(client: &Client) -> Result<i64, ClientError> {
    let rows = client.query("SELECT count(*) FROM issues", vec![]).await?;
    Ok(match rows.first().and_then(|r| r.first()) {
        Some(Value::Integer { value }) => *value,
        _ => 0,
    })
}

/// Loads the demo set in one transaction, unless the database has issues.
pub async fn demo(client: &Client) -> Result<DemoOutcome, SeedError> {
    let existing = issue_count(client).await?;
    if existing > 0 {
        return Ok(DemoOutcome::Skipped(existing));
    }
    let stmts: Vec<Stmt> = split_statements(DEMO_SQL)
        .into_iter()
        .map(|s| stmt(s, vec![]))
        .collect();
    let n = stmts.len();
    client.transaction(stmts).await?;
    Ok(DemoOutcome::Loaded(n))
}

/// Sizes of the synthetic set.
#[derive(Debug, Clone, clap::Args)]
pub struct SyntheticArgs {
    /// Issues to create.
    #[arg(long, default_value_t = 10_000)]
    pub issues: usize,
    /// Users to create.
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Organisations (each issue links to 1-3 of them).
    #[arg(long, default_value_t = 500)]
    pub organisations: usize,
    /// Synonym terms, spread over issues.
    #[arg(long, default_value_t = 10_000)]
    pub synonyms: usize,
    /// Memberships per user on average; issues are picked Zipf-distributed.
    #[arg(long, default_value_t = 3)]
    pub memberships_per_user: usize,
    /// Feed posts (by members of the issue), spread over the last 180 days.
    #[arg(long, default_value_t = 100_000)]
    pub feed: usize,
    /// Zipf exponent of issue popularity.
    #[arg(long, default_value_t = 1.0)]
    pub zipf: f64,
    /// Random seed: the same seed gives the same data.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Row counts of a loaded synthetic set.
#[derive(Debug, Default, Clone)]
pub struct Counts {
    pub users: usize,
    pub organisations: usize,
    pub issues: usize,
    pub issue_organisations: usize,
    pub synonyms: usize,
    pub memberships: usize,
    pub feed: usize,
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} users, {} organisations, {} issues, {} issue-organisation links, {} synonyms, {} memberships, {} feed posts",
            self.users,
            self.organisations,
            self.issues,
            self.issue_organisations,
            self.synonyms,
            self.memberships,
            self.feed
        )
    }
}

/// splitmix64: small, fast, and the same everywhere.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x5DEE_CE66_D1CE_4E5B)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// Uniform in `[0, 1)`.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn uuid(&mut self) -> String {
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&self.next_u64().to_le_bytes());
        bytes[8..].copy_from_slice(&self.next_u64().to_le_bytes());
        uuid::Builder::from_random_bytes(bytes)
            .into_uuid()
            .hyphenated()
            .to_string()
    }

    pub fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

/// Samples ranks `0..n` with probability proportional to `1 / (rank + 1)^s`.
pub struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    pub fn new(n: usize, s: f64) -> Self {
        let mut cdf = Vec::with_capacity(n);
        let mut total = 0.0;
        for rank in 0..n {
            total += 1.0 / ((rank + 1) as f64).powf(s);
            cdf.push(total);
        }
        for c in &mut cdf {
            *c /= total;
        }
        Zipf { cdf }
    }

    pub fn sample(&self, rng: &mut Rng) -> usize {
        let u = rng.unit();
        self.cdf
            .partition_point(|c| *c < u)
            .min(self.cdf.len().saturating_sub(1))
    }
}

/// `YYYY-MM-DDTHH:MM:SS.000Z` for seconds since the Unix epoch.
pub fn iso_time(unix_secs: i64) -> String {
    let days = unix_secs.div_euclid(86_400);
    let secs = unix_secs.rem_euclid(86_400);
    // Civil-from-days (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.000Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Fixed "now" of the synthetic set (2026-11-01T00:00:00Z), so the data does
/// not depend on when it was generated.
const SYNTHETIC_NOW: i64 = 1_793_491_200;
const DAY: i64 = 86_400;

const CATEGORIES: &[&str] = &[
    "transport",
    "health",
    "environment",
    "housing",
    "education",
    "economy",
    "community",
    "safety",
    "technology",
    "democracy",
];
const TOPICS: &[&str] = &[
    "potholes",
    "rail delays",
    "bus cuts",
    "hospital waiting",
    "rent rises",
    "litter",
    "flooding",
    "school funding",
    "broadband",
    "energy bills",
    "air pollution",
    "sewage",
    "speeding",
    "streetlights",
    "fly-tipping",
    "childcare costs",
    "library closures",
    "parking fines",
    "noise",
    "cycle lanes",
    "recycling",
    "youth clubs",
    "dentist access",
    "damp homes",
    "bin collections",
    "footpaths",
    "graffiti",
    "tree felling",
    "water leaks",
    "post office closures",
];
const QUALIFIERS: &[&str] = &[
    "getting worse",
    "near schools",
    "on main roads",
    "at night",
    "every winter",
    "since spring",
    "for older people",
    "in new estates",
    "around the station",
    "by the river",
];
const PLACES: &[&str] = &[
    "Leeds",
    "Bristol",
    "Glasgow",
    "Cardiff",
    "Belfast",
    "Norwich",
    "Brighton",
    "Sheffield",
    "York",
    "Plymouth",
    "Dundee",
    "Swansea",
    "Derby",
    "Exeter",
    "Hull",
    "Bath",
    "Oxford",
    "Cambridge",
    "Leicester",
    "Aberdeen",
    "Inverness",
    "Carlisle",
    "Truro",
    "Lincoln",
];
const WORDS: &[&str] = &[
    "council",
    "residents",
    "repair",
    "report",
    "delay",
    "unsafe",
    "children",
    "cost",
    "service",
    "promise",
    "weeks",
    "months",
    "funding",
    "petition",
    "meeting",
    "complaint",
    "broken",
    "dangerous",
    "daily",
    "ignored",
    "neighbours",
    "support",
    "action",
    "change",
];
const COUNTRIES: &[&str] = &[
    "GB", "GB", "GB", "GB", "GB", "GB", "IE", "FR", "DE", "US", "ES", "PL", "IN", "NG",
];

fn sentence(rng: &mut Rng, words: usize) -> String {
    let mut s = String::new();
    for i in 0..words {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(rng.pick(WORDS));
    }
    s.push('.');
    s
}

/// Collects rows and writes them as multi-row INSERTs, many per transaction.
struct Loader<'a> {
    client: &'a Client,
    table: &'static str,
    columns: &'static [&'static str],
    rows_per_stmt: usize,
    stmts_per_tx: usize,
    pending_values: Vec<Value>,
    pending_rows: usize,
    pending_stmts: Vec<Stmt>,
    written: usize,
    total: usize,
    progress: &'a mut dyn FnMut(String),
}

impl<'a> Loader<'a> {
    fn new(
        client: &'a Client,
        table: &'static str,
        columns: &'static [&'static str],
        total: usize,
        progress: &'a mut dyn FnMut(String),
    ) -> Self {
        // SQLite allows 32766 parameters per statement; stay well below.
        let rows_per_stmt = (8_000 / columns.len()).clamp(1, 500);
        Loader {
            client,
            table,
            columns,
            rows_per_stmt,
            stmts_per_tx: 20,
            pending_values: Vec::new(),
            pending_rows: 0,
            pending_stmts: Vec::new(),
            written: 0,
            total,
            progress,
        }
    }

    async fn row(&mut self, values: Vec<Value>) -> Result<(), SeedError> {
        debug_assert_eq!(values.len(), self.columns.len());
        self.pending_values.extend(values);
        self.pending_rows += 1;
        if self.pending_rows == self.rows_per_stmt {
            self.cut();
            if self.pending_stmts.len() == self.stmts_per_tx {
                self.flush().await?;
            }
        }
        Ok(())
    }

    fn cut(&mut self) {
        if self.pending_rows == 0 {
            return;
        }
        let placeholders = format!("({})", vec!["?"; self.columns.len()].join(","));
        let sql = format!(
            "INSERT INTO {} ({}) VALUES {}",
            self.table,
            self.columns.join(", "),
            vec![placeholders; self.pending_rows].join(",")
        );
        self.pending_stmts
            .push(stmt(sql, std::mem::take(&mut self.pending_values)));
        self.written += self.pending_rows;
        self.pending_rows = 0;
    }

    async fn flush(&mut self) -> Result<(), SeedError> {
        self.cut();
        if self.pending_stmts.is_empty() {
            return Ok(());
        }
        let stmts = std::mem::take(&mut self.pending_stmts);
        self.client.transaction(stmts).await?;
        (self.progress)(format!("  {}: {}/{}", self.table, self.written, self.total));
        Ok(())
    }

    async fn finish(mut self) -> Result<usize, SeedError> {
        self.flush().await?;
        Ok(self.written)
    }
}

fn opt_text(v: Option<String>) -> Value {
    v.map_or(Value::Null, text)
}

/// Generates and loads a synthetic set. `progress` hears one line per batch.
pub async fn synthetic(
    client: &Client,
    args: &SyntheticArgs,
    mut progress: impl FnMut(String),
) -> Result<Counts, SeedError> {
    let existing = issue_count(client).await?;
    if existing > 0 {
        return Err(SeedError::NotEmpty(existing));
    }
    let progress: &mut dyn FnMut(String) = &mut progress;
    let mut rng = Rng::new(args.seed);
    let mut counts = Counts::default();

    // Users.
    let users: Vec<(String, &str)> = (0..args.users)
        .map(|_| (rng.uuid(), rng.pick(COUNTRIES)))
        .collect();
    let mut loader = Loader::new(
        client,
        "users",
        &[
            "id",
            "display_name",
            "email",
            "phone",
            "country",
            "created_at",
        ],
        users.len(),
        progress,
    );
    for (i, (id, country)) in users.iter().enumerate() {
        let phone = (i % 2 == 0).then(|| format!("+4477{:08}", i));
        let email = (i % 3 == 0).then(|| format!("user{i}@example.org"));
        let created = SYNTHETIC_NOW - (rng.below(365) as i64) * DAY;
        loader
            .row(vec![
                text(id.as_str()),
                text(format!("User {i}")),
                opt_text(email),
                opt_text(phone),
                text(*country),
                text(iso_time(created)),
            ])
            .await?;
    }
    counts.users = loader.finish().await?;

    // Organisations.
    let orgs: Vec<String> = (0..args.organisations).map(|_| rng.uuid()).collect();
    let mut loader = Loader::new(
        client,
        "organisations",
        &["id", "name", "category", "description", "created_at"],
        orgs.len(),
        progress,
    );
    for (i, id) in orgs.iter().enumerate() {
        let name = format!("{} {} Authority {i}", rng.pick(PLACES), rng.pick(TOPICS));
        let description = sentence(&mut rng, 8);
        loader
            .row(vec![
                text(id.as_str()),
                text(name),
                text(rng.pick(CATEGORIES)),
                text(description),
                text(iso_time(SYNTHETIC_NOW - 400 * DAY)),
            ])
            .await?;
    }
    counts.organisations = loader.finish().await?;

    // Issues, their organisations, and memberships (computed before the
    // issues are written so that their counts are exact).
    let issues: Vec<String> = (0..args.issues).map(|_| rng.uuid()).collect();
    let issue_orgs: Vec<Vec<usize>> = (0..args.issues)
        .map(|_| {
            if orgs.is_empty() {
                return vec![];
            }
            let mut picked: Vec<usize> = (0..1 + rng.below(3))
                .map(|_| rng.below(orgs.len()))
                .collect();
            picked.sort_unstable();
            picked.dedup();
            picked
        })
        .collect();
    let zipf = Zipf::new(args.issues.max(1), args.zipf);
    let mut memberships: Vec<(usize, usize, Option<usize>)> = Vec::new();
    let mut members_of: Vec<Vec<usize>> = vec![Vec::new(); args.issues];
    if args.issues > 0 {
        for user in 0..args.users {
            let k = 1 + rng.below(args.memberships_per_user.max(1) * 2);
            let mut mine: Vec<usize> = (0..k).map(|_| zipf.sample(&mut rng)).collect();
            mine.sort_unstable();
            mine.dedup();
            for issue in mine {
                let org = (!issue_orgs[issue].is_empty() && rng.below(2) == 0)
                    .then(|| issue_orgs[issue][rng.below(issue_orgs[issue].len())]);
                memberships.push((user, issue, org));
                members_of[issue].push(user);
            }
        }
    }
    let mut loader = Loader::new(
        client,
        "issues",
        &[
            "id",
            "name",
            "category",
            "description",
            "rioter_count",
            "trending_delta",
            "created_at",
            "updated_at",
        ],
        issues.len(),
        progress,
    );
    for (i, id) in issues.iter().enumerate() {
        let name = format!(
            "{} {} in {}",
            capitalise(rng.pick(TOPICS)),
            rng.pick(QUALIFIERS),
            rng.pick(PLACES)
        );
        let description = sentence(&mut rng, 14);
        let created = iso_time(
            SYNTHETIC_NOW - (rng.below(365) as i64) * DAY - rng.below(DAY as usize) as i64,
        );
        let trending = rng.below(41) as i64 - 20;
        loader
            .row(vec![
                text(id.as_str()),
                text(name),
                text(rng.pick(CATEGORIES)),
                text(description),
                int(members_of[i].len() as i64),
                int(trending),
                text(created.as_str()),
                text(created),
            ])
            .await?;
    }
    counts.issues = loader.finish().await?;

    let links: usize = issue_orgs.iter().map(Vec::len).sum();
    let mut loader = Loader::new(
        client,
        "issue_organisation",
        &["id", "issue_id", "organisation_id", "rioter_count"],
        links,
        progress,
    );
    for (issue, picked) in issue_orgs.iter().enumerate() {
        for org in picked {
            // Counted from user_issues once the memberships are in.
            loader
                .row(vec![
                    text(rng.uuid()),
                    text(issues[issue].as_str()),
                    text(orgs[*org].as_str()),
                    int(0),
                ])
                .await?;
        }
    }
    counts.issue_organisations = loader.finish().await?;

    // Synonyms: distinct terms per issue.
    let mut loader = Loader::new(
        client,
        "synonyms",
        &["id", "issue_id", "term"],
        args.synonyms,
        progress,
    );
    let mut seen = std::collections::HashSet::new();
    if args.issues > 0 {
        for _ in 0..args.synonyms {
            let issue = rng.below(args.issues);
            let term = format!("{} {}", rng.pick(TOPICS), rng.pick(WORDS));
            if !seen.insert((issue, term.clone())) {
                continue;
            }
            loader
                .row(vec![
                    text(rng.uuid()),
                    text(issues[issue].as_str()),
                    text(term),
                ])
                .await?;
        }
    }
    counts.synonyms = loader.finish().await?;

    let mut loader = Loader::new(
        client,
        "user_issues",
        &["id", "user_id", "issue_id", "organisation_id", "joined_at"],
        memberships.len(),
        progress,
    );
    for (user, issue, org) in &memberships {
        let joined = SYNTHETIC_NOW - rng.below(180 * DAY as usize) as i64;
        loader
            .row(vec![
                text(rng.uuid()),
                text(users[*user].0.as_str()),
                text(issues[*issue].as_str()),
                org.map_or(Value::Null, |o| text(orgs[o].as_str())),
                text(iso_time(joined)),
            ])
            .await?;
    }
    counts.memberships = loader.finish().await?;

    // Per-organisation counts follow from the memberships just written.
    client
        .execute(stmt(
            "UPDATE issue_organisation SET rioter_count = (SELECT count(*) FROM user_issues u \
             WHERE u.issue_id = issue_organisation.issue_id \
             AND u.organisation_id = issue_organisation.organisation_id)",
            vec![],
        ))
        .await?;

    // Feed posts by members, Zipf over issues (popular issues talk more).
    let mut loader = Loader::new(
        client,
        "feed",
        &[
            "id",
            "issue_id",
            "user_id",
            "content",
            "likes",
            "created_at",
        ],
        args.feed,
        progress,
    );
    let with_members: Vec<usize> = (0..args.issues)
        .filter(|i| !members_of[*i].is_empty())
        .collect();
    if !with_members.is_empty() {
        let feed_zipf = Zipf::new(with_members.len(), args.zipf);
        for _ in 0..args.feed {
            let issue = with_members[feed_zipf.sample(&mut rng)];
            let user = members_of[issue][rng.below(members_of[issue].len())];
            let created = SYNTHETIC_NOW - rng.below(180 * DAY as usize) as i64;
            loader
                .row(vec![
                    text(rng.uuid()),
                    text(issues[issue].as_str()),
                    text(users[user].0.as_str()),
                    text(sentence(&mut rng, 10)),
                    int(rng.below(20) as i64),
                    text(iso_time(created)),
                ])
                .await?;
        }
    }
    counts.feed = loader.finish().await?;
    Ok(counts)
}

fn capitalise(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_time_formats_known_instants() {
        assert_eq!(iso_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso_time(SYNTHETIC_NOW), "2026-11-01T00:00:00.000Z");
        assert_eq!(iso_time(951_782_400), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn rng_is_deterministic_and_uuids_are_v4() {
        let (mut a, mut b) = (Rng::new(7), Rng::new(7));
        let (x, y) = (a.uuid(), b.uuid());
        assert_eq!(x, y);
        let parsed = uuid::Uuid::parse_str(&x).expect("uuid");
        assert_eq!(parsed.get_version_num(), 4);
    }

    #[test]
    fn zipf_favours_low_ranks() {
        let z = Zipf::new(1000, 1.0);
        let mut rng = Rng::new(1);
        let mut hits = [0usize; 1000];
        for _ in 0..100_000 {
            hits[z.sample(&mut rng)] += 1;
        }
        // P(rank 0) = 1/H(1000) ~ 0.134; P(rank 9) ~ 0.0134.
        assert!((12_000..15_000).contains(&hits[0]), "{}", hits[0]);
        assert!(hits[0] > 5 * hits[9]);
    }
}
