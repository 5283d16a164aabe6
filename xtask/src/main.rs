//! Project tasks: `cargo xtask dev`, `cargo xtask test`, `cargo xtask bench`.
//!
//! Each task installs what it needs that is missing (Rust components, npm
//! packages from package-lock.json), says what it is doing, and stops every
//! process it started, also on Ctrl-C, SIGTERM or failure.

mod proc;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use clap::{Parser, Subcommand};

use proc::{cmd, run, step, Server};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build, start the primary on a data dir, migrate, load the demo seed,
    /// and serve until Ctrl-C. A second run reuses the data.
    Dev {
        /// Port of the libSQL primary.
        #[arg(long, default_value_t = 8080)]
        primary_port: u16,
        /// Where the database lives.
        #[arg(long, default_value = ".data")]
        data_dir: PathBuf,
    },
    /// Run every check CI runs: fmt, clippy, unit and integration tests,
    /// the @libsql/client conformance tests, and the benchmarks in quick mode.
    Test,
    /// Run the benchmarks and write their figures to BENCHMARKS.md.
    Bench {
        /// A few seconds per scenario, to show the code still runs; figures
        /// are printed but not written to BENCHMARKS.md.
        #[arg(long)]
        quick: bool,
    },
}

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(e) = std::env::set_current_dir(root()) {
        eprintln!("error: cannot enter the repository root: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.task {
        Task::Dev {
            primary_port,
            data_dir,
        } => dev(primary_port, &data_dir),
        Task::Test => test(),
        Task::Bench { quick } => bench(quick),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// rustfmt and clippy, added through rustup when missing.
fn ensure_rust_components() -> Result {
    let installed = Command::new("rustup")
        .args(["component", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup ({e}); install Rust with rustup first"))?;
    let installed = String::from_utf8_lossy(&installed.stdout);
    for component in ["rustfmt", "clippy"] {
        if !installed.lines().any(|l| l.starts_with(component)) {
            step(&format!("installing the Rust component {component}"));
            run(cmd("rustup").args(["component", "add", component]))?;
        }
    }
    Ok(())
}

/// node_modules as package-lock.json pins it.
fn ensure_node_modules() -> Result {
    let marker = Path::new("node_modules/.package-lock.json");
    let stale = match (marker.metadata(), Path::new("package-lock.json").metadata()) {
        (Ok(m), Ok(lock)) => match (m.modified(), lock.modified()) {
            (Ok(m), Ok(lock)) => lock > m,
            _ => true,
        },
        _ => true,
    };
    if stale {
        step("installing npm packages from package-lock.json (npm ci)");
        run(cmd("npm").args(["ci", "--no-audit", "--no-fund"]))
            .map_err(|e| format!("{e}\n  (needs Node.js 20 and npm on PATH)"))?;
    }
    Ok(())
}

fn primary_bin(release: bool) -> PathBuf {
    let profile = if release { "release" } else { "debug" };
    PathBuf::from("target")
        .join(profile)
        .join(format!("qr-primary{}", std::env::consts::EXE_SUFFIX))
}

fn build_primary(release: bool) -> Result {
    step(&format!(
        "building the primary ({})",
        if release { "release" } else { "debug" }
    ));
    let mut c = cmd("cargo");
    c.args(["build", "-p", "qr-primary"]);
    if release {
        c.arg("--release");
    }
    run(&mut c)
}

fn dev(primary_port: u16, data_dir: &Path) -> Result {
    let stop = proc::stop_signal()?;
    build_primary(false)?;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let bin = primary_bin(false);
    let db = data_dir.join("primary.db");
    step(&format!(
        "starting the primary on 127.0.0.1:{primary_port} ({})",
        db.display()
    ));
    let primary = Server::spawn(
        "primary",
        cmd(&bin)
            .args([
                "serve",
                "--listen",
                &format!("127.0.0.1:{primary_port}"),
                "--db",
            ])
            .arg(&db),
        "listening: ",
    )?;
    let url = primary.url().to_owned();
    step("applying migrations");
    run(cmd(&bin).args(["migrate", "up", "--url", &url]))?;
    step("loading the demo seed");
    run(cmd(&bin).args(["seed", "demo", "--url", &url]))?;
    println!("ready: {url}");
    stop.wait();
    step("stopping");
    drop(primary);
    Ok(())
}

fn test() -> Result {
    ensure_rust_components()?;
    ensure_node_modules()?;
    step("cargo fmt --check");
    run(cmd("cargo").args(["fmt", "--all", "--check"]))
        .map_err(|e| format!("{e}\n  (run `cargo fmt --all` to fix)"))?;
    step("cargo clippy --all-targets -- -D warnings");
    run(cmd("cargo").args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    build_primary(false)?;
    step("unit and integration tests (cargo test --workspace)");
    run(cmd("cargo").args(["test", "--workspace"]))?;
    step("@libsql/client conformance tests (node --test tests/node/)");
    run(cmd("node")
        .args(["--test", "tests/node/"])
        .env("QR_PRIMARY_BIN", primary_bin(false)))?;
    bench(true)
}

fn bench(quick: bool) -> Result {
    step(&format!(
        "primary protocol benchmark{}",
        if quick { " (quick)" } else { "" }
    ));
    let mut c = cmd("cargo");
    c.args(["bench", "-p", "qr-primary", "--bench", "protocol", "--"]);
    if quick {
        c.arg("--quick");
    } else {
        c.args(["--write", "BENCHMARKS.md"]);
    }
    run(&mut c)
}
