//! FTS5 search against the seed app's LIKE search, at the primary's engine,
//! on a synthetic set (100,000 issues and 10,000 synonyms; `--quick`: 5,000
//! and 500). Search terms are drawn Zipf(1.0) from a fixed word list, the
//! same terms for both. Prints figures; `--write FILE` puts them in FILE.

#[path = "support.rs"]
mod support;

use std::time::{Duration, Instant};

use qr_primary::client::Client;
use qr_primary::engine::Engine;
use qr_primary::http::HttpConfig;
use qr_primary::migrate::{load_dir, Migrator};
use qr_primary::seed::{self, Rng, SyntheticArgs, Zipf};
use qr_primary::server::{self, ServeConfig};
use quiet_riots_edge::search::{SearchQuery, FTS_SQL, LIKE_BASELINE_SQL};
use support::SEARCH_TERMS as TERMS;

const START: &str = "<!-- search:start -->";
const END: &str = "<!-- search:end -->";

struct Run {
    latencies: Vec<Duration>,
    rows: usize,
}

impl Run {
    fn pct(&self, p: f64) -> Duration {
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies[i]
    }
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.latencies.iter().sum::<Duration>().as_secs_f64()
    }
}

fn run(engine: &Engine, sql: &str, args: &[String]) -> Run {
    let conn = engine.connect().expect("connect");
    let mut stmt = conn.prepare(sql).expect("prepare");
    let mut latencies = Vec::with_capacity(args.len());
    let mut rows = 0;
    for arg in args {
        let t = Instant::now();
        let n = stmt.query_map([arg], |_| Ok(())).expect("query").count();
        latencies.push(t.elapsed());
        rows += n;
    }
    latencies.sort_unstable();
    Run { latencies, rows }
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let write = args
        .iter()
        .position(|a| a == "--write")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let (issues, synonyms, queries) = if quick {
        (5_000, 500, 200)
    } else {
        (100_000, 10_000, 2_000)
    };

    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("search.db");
    let running = server::start(ServeConfig {
        listen: "127.0.0.1:0".parse().expect("addr"),
        db: db.clone(),
        http: HttpConfig::default(),
        limits: Default::default(),
    })
    .await
    .expect("primary");
    let client = Client::new(&running.url(), None);
    let migrations = load_dir(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations"))
        .expect("migrations");
    Migrator::new(client.clone(), migrations)
        .up(|_| {})
        .await
        .expect("migrate");
    eprintln!("seeding {issues} issues and {synonyms} synonyms ...");
    let started = Instant::now();
    seed::synthetic(
        &client,
        &SyntheticArgs {
            issues,
            users: 1_000,
            organisations: 200,
            synonyms,
            memberships_per_user: 2,
            feed: 0,
            zipf: 1.0,
            seed: 1,
        },
        |line| eprintln!("{line}"),
    )
    .await
    .expect("seed");
    eprintln!("seeded in {:.1?}", started.elapsed());
    running.stop().await.expect("stop");

    let engine = Engine::open(&db).expect("open");
    let zipf = Zipf::new(TERMS.len(), 1.0);
    let mut rng = Rng::new(3);
    let picked: Vec<&str> = (0..queries).map(|_| TERMS[zipf.sample(&mut rng)]).collect();
    let fts_args: Vec<String> = picked
        .iter()
        .map(|t| SearchQuery::parse(t).expect("term").fts())
        .collect();
    let like_args: Vec<String> = picked.iter().map(|t| format!("%{t}%")).collect();
    // Warm both (page cache), then measure.
    run(&engine, FTS_SQL, &fts_args[..20.min(queries)]);
    run(&engine, LIKE_BASELINE_SQL, &like_args[..20.min(queries)]);
    let fts = run(&engine, FTS_SQL, &fts_args);
    let like = run(&engine, LIKE_BASELINE_SQL, &like_args);

    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let table = format!(
        "| search | queries/s | p50 | p95 | p99 | rows returned |\n|---|---:|---:|---:|---:|---:|\n\
         | LIKE (the seed's) | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {} |\n\
         | FTS5 bm25 | {:.0} | {:.3} ms | {:.3} ms | {:.3} ms | {} |\n\n\
         FTS5 against LIKE: **{:.0}x** the throughput, p95 {:.3} ms against {:.2} ms.\n",
        like.rate(), ms(like.pct(0.5)), ms(like.pct(0.95)), ms(like.pct(0.99)), like.rows,
        fts.rate(), ms(fts.pct(0.5)), ms(fts.pct(0.95)), ms(fts.pct(0.99)), fts.rows,
        fts.rate() / like.rate(), ms(fts.pct(0.95)), ms(like.pct(0.95)),
    );
    let section = format!(
        "{START}\n## Search: FTS5 against the seed's LIKE\n\n\
         {issues} issues, {synonyms} synonyms (synthetic, seed 1), {queries} queries per side, drawn Zipf(1.0) \
         from {} searches (single topic or place words, topic + place, longer phrases, and words that match \
         nothing such as typos; see `benches/search.rs`), run one after another on one connection of the libSQL engine (no HTTP), 20 warm-up queries each. \
         Both return at most 20 rows. Command: `cargo xtask bench`.\n\n{table}{END}\n",
        TERMS.len()
    );
    println!("{section}");
    if let Some(path) = write {
        write_section(&path, &section);
    }
}

fn write_section(path: &str, section: &str) {
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let new = match (old.find(START), old.find(END)) {
        (Some(s), Some(e)) if e > s => format!(
            "{}{}{}",
            &old[..s],
            section.trim_end(),
            &old[e + END.len()..]
        ),
        _ => format!("{}\n\n{}", old.trim_end(), section),
    };
    std::fs::write(path, new).expect("write benchmarks file");
    eprintln!("wrote {path}");
}
