//! What the Worker benchmarks share: their command line (`--quick`,
//! `--write FILE`), percentiles, and writing a section of BENCHMARKS.md
//! between its markers.

#![allow(dead_code)]

use std::time::Duration;

pub struct Args {
    pub quick: bool,
    pub write: Option<String>,
}

pub fn args() -> Args {
    let args: Vec<String> = std::env::args().collect();
    Args {
        quick: args.iter().any(|a| a == "--quick"),
        write: args
            .iter()
            .position(|a| a == "--write")
            .and_then(|i| args.get(i + 1))
            .cloned(),
    }
}

/// The `p` quantile (0..=1) of `samples` in ms, nearest rank; 0 for none.
pub fn pct_ms(samples: &[Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e3
}

/// The markers of section `name`.
pub fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- {name}:start -->"),
        format!("<!-- {name}:end -->"),
    )
}

/// Prints `body` as section `name` and, with `--write FILE`, puts it
/// between the section's markers in FILE (appended when they are missing).
pub fn publish(name: &str, body: &str, write: Option<&str>) {
    let (start, end) = markers(name);
    let section = format!("{start}\n{}\n{end}\n", body.trim_end());
    println!("{section}");
    let Some(path) = write else {
        return;
    };
    let old = std::fs::read_to_string(path).unwrap_or_else(|_| "# Benchmarks\n\n".into());
    let new = match (old.find(&start), old.find(&end)) {
        (Some(s), Some(e)) if e > s => format!(
            "{}{}{}",
            &old[..s],
            section.trim_end(),
            &old[e + end.len()..]
        ),
        _ => format!("{}\n\n{}", old.trim_end(), section),
    };
    if let Err(e) = std::fs::write(path, new) {
        eprintln!("cannot write {path}: {e}");
        std::process::exit(1);
    }
    eprintln!("wrote {path}");
}

/// The first text column of each row.
pub fn texts(rows: &[Vec<qr_primary::client::Value>]) -> Vec<String> {
    rows.iter()
        .filter_map(|r| match r.first() {
            Some(qr_primary::client::Value::Text { value }) => Some(value.to_string()),
            _ => None,
        })
        .collect()
}

/// What people type: topic words, place names, a topic with a place, and
/// words that match nothing (typos, things nobody raised), most common first
/// (drawn Zipf(1.0) in this order).
pub const SEARCH_TERMS: &[&str] = &[
    "potholes",
    "rail delays",
    "flooding leeds",
    "broadband",
    "sewage",
    "bus cuts bristol",
    "rent",
    "noise at night",
    "pothoels",
    "litter glasgow",
    "energy bills",
    "school funding",
    "cycle lanes",
    "streetlights york",
    "air pollution near schools",
    "library",
    "dentist access",
    "parking fines cardiff",
    "recycling",
    "graffiti",
    "youth clubs",
    "damp homes",
    "trams",
    "bin collections hull",
    "footpaths",
    "tree felling",
    "water leaks",
    "post office",
    "childcare",
    "hospital waiting",
    "inverness",
    "truro",
    "speeding",
    "fly-tipping",
    "heat pumps",
    "council tax",
    "dog fouling",
    "ferries",
    "carlisle floods",
    "lincoln",
];

/// CPU time (user + system, ms) used so far by the processes of the
/// process group `leader` whose command name is `comm` (`workerd`, `node`,
/// `qr-primary`). Read from `/proc/PID/stat` in clock ticks of 10 ms (the
/// Linux default, `getconf CLK_TCK` = 100). Processes that ended are not
/// counted, so take differences over a span in which none ends.
pub fn group_cpu_ms(leader: u32, comm: &str) -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut ticks = 0;
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid pgrp session tty tpgid flags minflt
        // cminflt majflt cmajflt utime stime ...
        let Some((head, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        if head.rsplit_once('(').map(|(_, c)| c) != Some(comm) {
            continue;
        }
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
        if field(2) != Some(u64::from(leader)) {
            continue;
        }
        ticks += field(11).unwrap_or(0) + field(12).unwrap_or(0);
    }
    ticks * 10
}

/// The build a benchmark compares this checkout's with, run beside it in
/// the same run: `QR_BEFORE_BUNDLE` (a `build/` directory another commit's
/// `cargo xtask build-worker` left) and `QR_BEFORE_LABEL` (what to call it,
/// say the commit). `cargo xtask bench --before COMMIT` sets both.
pub struct Before {
    pub label: String,
    pub build: std::path::PathBuf,
}

impl Before {
    /// `RATE_LIMITS` for the earlier build: the test default's policies
    /// that builds before the live sockets know (they refuse a
    /// configuration naming a policy they do not).
    pub const RATE_LIMITS: &'static str = "reads=100000/60,writes=100000/60,create=100000/60";
}

pub fn before() -> Option<Before> {
    let build = std::path::PathBuf::from(std::env::var_os("QR_BEFORE_BUNDLE")?);
    let label = std::env::var("QR_BEFORE_LABEL").unwrap_or_else(|_| build.display().to_string());
    Some(Before { label, build })
}

/// CPU time (ms) used by the stack's processes: every `workerd` of the
/// Worker's process group (the Worker, its objects and the local KV) and
/// the primary.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    pub workerd: u64,
    pub primary: u64,
}

impl Cpu {
    /// So far, for the process groups led by `wrangler dev` and the
    /// primary (`TestApp::pids`).
    pub fn now((worker, primary): (Option<u32>, Option<u32>)) -> Cpu {
        Cpu {
            workerd: worker.map_or(0, |pid| group_cpu_ms(pid, "workerd")),
            primary: primary.map_or(0, |pid| group_cpu_ms(pid, "qr-primary")),
        }
    }

    pub fn since(self, before: Cpu) -> Cpu {
        Cpu {
            workerd: self.workerd.saturating_sub(before.workerd),
            primary: self.primary.saturating_sub(before.primary),
        }
    }
}

/// Today's date (UTC) as `YYYY-MM-DD`, for a section's heading.
pub fn today() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut date = qr_primary::seed::iso_time(i64::try_from(secs).unwrap_or(0));
    date.truncate("YYYY-MM-DD".len());
    date
}

/// `name;dur=N` of a `Server-Timing` header, in whole ms.
pub fn timing(header: &str, name: &str) -> Option<u32> {
    header.split(',').find_map(|part| {
        let part = part.trim();
        let rest = part.strip_prefix(name)?.strip_prefix(";dur=")?;
        rest.trim().parse::<f64>().ok().map(|v| v.round() as u32)
    })
}
