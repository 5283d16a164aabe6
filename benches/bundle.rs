//! The Worker bundle: its size, and how long a cold start takes with it,
//! side by side for several builds in one run.
//!
//! Bundles are `build/` directories as `cargo xtask build-worker` leaves
//! them, named in `QR_BUNDLES` as `label=dir;label=dir` (default: the
//! current `build/` as "this build"). For each: the wasm's raw and gzipped
//! size; then `wrangler dev` is started on it again and again (5 times, 2
//! with `--quick`), timing the spawn until its port takes connections and
//! the first request after that (`GET /health`, answered once workerd has
//! compiled the wasm and started the isolate). The stack is the tests' own
//! (a primary and wrangler dev on free ports, on 127.0.0.1). `--write FILE`
//! puts the table into FILE when it compares two bundles or more.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support.rs"]
mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::TestApp;

fn gzipped(bytes: &[u8]) -> usize {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip").len()
}

fn median_ms(mut samples: Vec<Duration>) -> f64 {
    samples.sort();
    samples[samples.len() / 2].as_secs_f64() * 1e3
}

fn range_ms(samples: &[Duration]) -> String {
    let ms = |d: &Duration| d.as_secs_f64() * 1e3;
    let lo = samples.iter().map(ms).fold(f64::INFINITY, f64::min);
    let hi = samples.iter().map(ms).fold(0.0, f64::max);
    format!("{lo:.0}–{hi:.0}")
}

struct Row {
    label: String,
    raw: usize,
    gz: usize,
    listening: Vec<Duration>,
    first: Vec<Duration>,
}

fn bundles() -> Vec<(String, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    match std::env::var("QR_BUNDLES") {
        Ok(list) if !list.trim().is_empty() => list
            .split(';')
            .map(|item| {
                let (label, dir) = item
                    .split_once('=')
                    .unwrap_or_else(|| panic!("QR_BUNDLES: {item:?} is not label=dir"));
                (label.trim().to_owned(), root.join(dir.trim()))
            })
            .collect(),
        _ => vec![("this build".to_owned(), root.join("build"))],
    }
}

#[tokio::main]
async fn main() {
    let args = support::args();
    let starts = if args.quick { 2 } else { 5 };
    let mut rows = Vec::new();
    for (label, dir) in bundles() {
        let wasm = std::fs::read(dir.join("index_bg.wasm"))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join("index_bg.wasm").display()));
        eprintln!(
            "bundle {label}: {} KiB raw; starting wrangler dev on it {starts} times",
            wasm.len() / 1024
        );
        // The harness copies the bundle named here (a run's own copy).
        std::env::set_var("QR_BUNDLE_DIR", &dir);
        let mut app = TestApp::start().await;
        let (mut listening, mut first) = (Vec::new(), Vec::new());
        for n in 0..starts {
            app.stop_worker(false);
            let (l, f) = app.start_worker_timed().await;
            eprintln!(
                "  start {}: port open after {:.0} ms, first request {:.0} ms",
                n + 1,
                l.as_secs_f64() * 1e3,
                f.as_secs_f64() * 1e3
            );
            listening.push(l);
            first.push(f);
        }
        drop(app);
        rows.push(Row {
            label,
            raw: wasm.len(),
            gz: gzipped(&wasm),
            listening,
            first,
        });
    }
    std::env::remove_var("QR_BUNDLE_DIR");

    let base = &rows[0];
    let mut table = String::from(
        "| bundle | wasm raw | wasm gzipped | vs first | port open, median (range) | first request, median (range) |\n\
         |---|---:|---:|---:|---:|---:|\n",
    );
    for r in &rows {
        table += &format!(
            "| {} | {} KiB | {} KiB | {:.2}x | {:.0} ms ({}) | {:.0} ms ({}) |\n",
            r.label,
            r.raw / 1024,
            r.gz / 1024,
            r.gz as f64 / base.gz as f64,
            median_ms(r.listening.clone()),
            range_ms(&r.listening),
            median_ms(r.first.clone()),
            range_ms(&r.first),
        );
    }
    let body = format!(
        "{starts} starts of `wrangler dev` per bundle on this machine (2 cores), one after another in one run. \
         \"Port open\": from spawning wrangler until its port takes connections; \"first request\": \
         the first `GET /health` after that, which workerd answers once it has compiled the wasm \
         and started the isolate. Gzip at its best level, as the deploy budget counts it.\n\n{table}"
    );
    // One bundle alone compares nothing: its figures are printed only.
    let write = args.write.as_deref().filter(|_| rows.len() > 1);
    support::publish("bundle", &body, write);
}
