//! Protocol overhead of the primary: the same point reads and single-row
//! inserts, run on the libSQL engine in-process and through Hrana over HTTP
//! (one pipeline request per statement, as the Worker sends them), with 1, 4
//! and 16 concurrent clients. The ratio of the two is the cost of the
//! protocol. Prints figures; `--write FILE` also puts them in FILE between
//! markers. `--quick` runs each scenario for a moment only.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use qr_primary::client::{int, stmt, text, Client};
use qr_primary::engine::Engine;

const ROWS: i64 = 10_000;
const START: &str = "<!-- primary-protocol:start -->";
const END: &str = "<!-- primary-protocol:end -->";

#[derive(Clone, Copy, PartialEq)]
enum Op {
    Read,
    Insert,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Read => "point read",
            Op::Insert => "insert",
        }
    }
}

struct Figures {
    ops: usize,
    secs: f64,
    latencies: Vec<Duration>,
}

impl Figures {
    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs
    }
    fn pct(&mut self, p: f64) -> Duration {
        self.latencies.sort_unstable();
        let i = ((self.latencies.len() as f64 - 1.0) * p).round() as usize;
        self.latencies.get(i).copied().unwrap_or_default()
    }
}

fn key(n: u64) -> String {
    format!("issue-{:06}", n % ROWS as u64)
}

fn direct(engine: &Engine, op: Op, clients: usize, dur: Duration) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let engine = engine.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let conn = engine.connect().expect("connect");
                let mut lat = Vec::new();
                let mut n = c as u64 * 7919;
                while !stop.load(Ordering::Relaxed) {
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let t = Instant::now();
                    match op {
                        Op::Read => {
                            let mut s = conn
                                .prepare_cached(
                                    "SELECT id, name, rioter_count FROM bench_issues WHERE id = ?",
                                )
                                .expect("prepare");
                            let _: i64 = s.query_row([key(n >> 33)], |r| r.get(2)).expect("read");
                        }
                        Op::Insert => {
                            let mut s = conn
                                .prepare_cached(
                                    "INSERT INTO bench_events (issue_id, at) VALUES (?, ?)",
                                )
                                .expect("prepare");
                            s.execute((key(n >> 33), n as i64)).expect("insert");
                        }
                    }
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    std::thread::sleep(dur);
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for h in handles {
        latencies.extend(h.join().expect("thread"));
    }
    Figures {
        ops: latencies.len(),
        secs: started.elapsed().as_secs_f64(),
        latencies,
    }
}

async fn over_http(url: &str, op: Op, clients: usize, dur: Duration) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let client = Client::new(url, None);
            let stop = stop.clone();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                let mut n = c as u64 * 7919;
                while !stop.load(Ordering::Relaxed) {
                    n = n
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    let t = Instant::now();
                    let s = match op {
                        Op::Read => stmt(
                            "SELECT id, name, rioter_count FROM bench_issues WHERE id = ?",
                            vec![text(key(n >> 33))],
                        ),
                        Op::Insert => stmt(
                            "INSERT INTO bench_events (issue_id, at) VALUES (?, ?)",
                            vec![text(key(n >> 33)), int(n as i64)],
                        ),
                    };
                    client.execute(s).await.expect("statement over HTTP");
                    lat.push(t.elapsed());
                }
                lat
            })
        })
        .collect();
    tokio::time::sleep(dur).await;
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for t in tasks {
        latencies.extend(t.await.expect("task"));
    }
    Figures {
        ops: latencies.len(),
        secs: started.elapsed().as_secs_f64(),
        latencies,
    }
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map_or("unknown".into(), |kb| {
            format!("{:.1} GiB", kb as f64 / 1048576.0)
        });
    format!(
        "{cores} cores, {mem} memory, {} {}, libSQL {}",
        std::env::consts::OS,
        std::env::consts::ARCH,
        libsql_sys::rusqlite::version()
    )
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
    let dur = if quick {
        Duration::from_millis(300)
    } else {
        Duration::from_secs(4)
    };

    let dir = tempfile::tempdir().expect("temp dir");
    let db = dir.path().join("bench.db");
    let engine = Engine::open(&db).expect("open");
    {
        let conn = engine.connect().expect("connect");
        conn.execute_batch(
            "CREATE TABLE bench_issues (id TEXT PRIMARY KEY, name TEXT NOT NULL, rioter_count INTEGER NOT NULL);
             CREATE TABLE bench_events (id INTEGER PRIMARY KEY, issue_id TEXT NOT NULL, at INTEGER NOT NULL);
             CREATE INDEX bench_events_issue ON bench_events (issue_id);
             BEGIN;",
        )
        .expect("schema");
        for i in 0..ROWS {
            conn.execute(
                "INSERT INTO bench_issues VALUES (?, ?, ?)",
                (key(i as u64), format!("Issue number {i}"), i),
            )
            .expect("fill");
        }
        conn.execute_batch("COMMIT").expect("commit");
    }

    // The server runs as its own process, as in development and tests.
    let mut child = Command::new(env!("CARGO_BIN_EXE_qr-primary"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(&db)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn qr-primary");
    let stdout = child.stdout.take().expect("stdout");
    let server = KillOnDrop(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("ready line");
    let url = line
        .strip_prefix("listening: ")
        .and_then(|r| r.split_whitespace().next())
        .expect("listening line")
        .to_owned();

    let mut table = String::from(
        "| operation | clients | in-process ops/s | HTTP ops/s | HTTP / in-process | in-process p50 | HTTP p50 | HTTP p99 |\n|---|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for op in [Op::Read, Op::Insert] {
        for clients in [1, 4, 16] {
            let mut d = direct(&engine, op, clients, dur);
            let mut h = over_http(&url, op, clients, dur).await;
            let row = format!(
                "| {} | {clients} | {:.0} | {:.0} | {:.2}x | {:.3} ms | {:.3} ms | {:.3} ms |\n",
                op.name(),
                d.rate(),
                h.rate(),
                h.rate() / d.rate(),
                d.pct(0.5).as_secs_f64() * 1e3,
                h.pct(0.5).as_secs_f64() * 1e3,
                h.pct(0.99).as_secs_f64() * 1e3,
            );
            eprint!("{row}");
            table.push_str(&row);
        }
    }
    drop(server);

    let section = format!(
        "{START}\n## Primary: protocol overhead\n\n\
         Measured {} on {}. Each scenario ran {:.1} s in-process (libSQL engine, one connection per client thread) \
         and then {:.1} s through Hrana over HTTP (`POST /v3/pipeline`, one request per statement, new stream closed in the same request) \
         against the `qr-primary` release binary on 127.0.0.1; the load generator shares the machine's cores with the server. \
         Table of 10,000 issues; inserts go to an indexed table; `synchronous=FULL`, WAL. Command: `cargo xtask bench`.\n\n{table}\n{END}\n",
        today(),
        machine(),
        dur.as_secs_f64(),
        dur.as_secs_f64(),
    );
    println!("{section}");
    if let Some(path) = write {
        let old = std::fs::read_to_string(&path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
        let new = match (old.find(START), old.find(END)) {
            (Some(s), Some(e)) if e > s => format!(
                "{}{}{}",
                &old[..s],
                section.trim_end(),
                &old[e + END.len()..]
            ),
            _ => format!("{}\n{}", old.trim_end(), section),
        };
        std::fs::write(&path, new).expect("write benchmarks file");
        eprintln!("wrote {path}");
    }
}

fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    qr_primary::seed::iso_time(secs)[..10].to_owned()
}
