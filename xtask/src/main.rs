//! Project tasks: `cargo xtask dev`, `cargo xtask test`, `cargo xtask bench`.
//!
//! Each task installs what it needs that is missing (Rust components, npm
//! packages from package-lock.json), says what it is doing, and stops every
//! process it started, also on Ctrl-C, SIGTERM or failure.

mod browser;
mod proc;
mod site;
mod smoke;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Duration;

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
    /// Install what is missing, build, start the primary on a data dir,
    /// migrate, load the demo seed, start `wrangler dev`, and serve until
    /// Ctrl-C. A second run reuses the data.
    Dev {
        /// Port of the Worker (wrangler dev).
        #[arg(long, default_value_t = 8787)]
        port: u16,
        /// Port of the libSQL primary.
        #[arg(long, default_value_t = 8080)]
        primary_port: u16,
        /// Where the database and the local KV/Durable Object state live
        /// (default: .data in the repository).
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Build the Worker bundle (build/worker/shim.mjs + wasm) with
    /// worker-build and wasm-opt: the deployable bundle, without benchmark
    /// code (what `wrangler deploy` builds), unless `--bench`.
    BuildWorker {
        /// The development and test bundle: with the benchmark switches
        /// (the `bench` feature; they answer only in development).
        #[arg(long)]
        bench: bool,
        /// Also copy the bundle to DIR/build (a run's own copy, which no
        /// other build from this checkout touches).
        #[arg(long, value_name = "DIR")]
        into: Option<PathBuf>,
    },
    /// `wrangler deploy --dry-run` for staging and production (offline),
    /// with the bundle's size against its budget.
    DeployCheck,
    /// Read-only smoke test of a running Worker (deployed or local).
    Smoke {
        /// Base URL of the Worker, e.g. https://quiet-riots-edge.example.workers.dev
        #[arg(long)]
        url: String,
    },
    /// Run every check CI runs: fmt, clippy, the deploy check, unit and
    /// integration tests (with the spec fuzz run), the @libsql/client
    /// conformance tests, the browser tests, and the benchmarks in quick
    /// mode.
    Test {
        /// The inner loop: fmt, clippy and the native tests only (no
        /// wrangler, no Worker build).
        #[arg(long)]
        fast: bool,
    },
    /// The web client in headless Chromium (Debian's, installed when
    /// missing) against its own stack: every flow end to end, CORS from
    /// another origin of the same site, screenshots in
    /// target/browser-screenshots.
    BrowserTest,
    /// Run the benchmarks and write their figures to BENCHMARKS.md.
    Bench {
        /// A few seconds per scenario, to show the code still runs; figures
        /// are printed but not written to BENCHMARKS.md.
        #[arg(long)]
        quick: bool,
        /// A commit to compare with: its Worker is built by its own
        /// `cargo xtask build-worker` in a worktree under target/before/,
        /// and the hot-issue and load benchmarks run it beside this
        /// checkout's in the same run (before/after tables).
        #[arg(long, value_name = "COMMIT")]
        before: Option<String>,
        /// Only these benchmarks (their file names in benches/, comma
        /// separated: `--only hot_issue,load`).
        #[arg(long, value_name = "NAMES", value_delimiter = ',')]
        only: Vec<String>,
    },
}

type Result<T = ()> = std::result::Result<T, String>;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // A path given on the command line is the caller's, not the repo's.
    let here = std::env::current_dir().unwrap_or_else(|_| root());
    if let Err(e) = std::env::set_current_dir(root()) {
        eprintln!("error: cannot enter the repository root: {e}");
        return ExitCode::FAILURE;
    }
    let result = match cli.task {
        Task::Dev {
            port,
            primary_port,
            data_dir,
        } => dev(
            port,
            primary_port,
            &data_dir.map_or_else(|| root().join(".data"), |d| here.join(d)),
        ),
        Task::BuildWorker { bench, into } => {
            let bundle = if bench {
                Bundle::Development
            } else {
                Bundle::Production
            };
            build_worker_into(bundle, into.map(|d| here.join(d)).as_deref()).map(|_| ())
        }
        Task::DeployCheck => deploy_check(),
        Task::Smoke { url } => {
            step(&format!("smoke test of {url}"));
            smoke::run(&url).map(|n| eprintln!("smoke: {n} checks passed"))
        }
        Task::Test { fast: true } => test_fast(),
        Task::Test { fast: false } => test(),
        Task::BrowserTest => browser::run_browser_tests(),
        Task::Bench {
            quick,
            before,
            only,
        } => bench(quick, before.as_deref(), &only),
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

/// The wasm target, worker-build and wasm-bindgen-cli at the versions the
/// Worker needs (TOOLCHAIN.md), installed from the crate registry if missing.
fn ensure_wasm_tools() -> Result {
    let targets = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map_err(|e| format!("cannot run rustup ({e}); install Rust with rustup first"))?;
    if !String::from_utf8_lossy(&targets.stdout)
        .lines()
        .any(|l| l.trim() == "wasm32-unknown-unknown")
    {
        step("installing the Rust target wasm32-unknown-unknown");
        run(cmd("rustup").args(["target", "add", "wasm32-unknown-unknown"]))?;
    }
    // `cargo install --list` names each installed crate and version
    // (worker-build has no --version flag).
    let listed = cmd("cargo")
        .args(["install", "--list"])
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    let listed = String::from_utf8_lossy(&listed.stdout);
    for (krate, version, locked) in [
        ("worker-build", WORKER_BUILD_VERSION, true),
        ("wasm-bindgen-cli", WASM_BINDGEN_VERSION, false),
    ] {
        if !listed.contains(&format!("{krate} v{version}:")) {
            step(&format!(
                "installing {krate} {version} from the crate registry (a few minutes, once)"
            ));
            let mut c = cmd("cargo");
            c.args(["install", krate, "--version", version]);
            if locked {
                c.arg("--locked");
            }
            run(&mut c)?;
        }
    }
    Ok(())
}

/// schemathesis (from the Python package registry), which `tests/spec_fuzz.rs`
/// runs against the stack, in its own virtual environment under target/.
const SCHEMATHESIS_VERSION: &str = "4.32.5";
const PYTHON_ENV: &str = "target/py";

/// schemathesis at [`SCHEMATHESIS_VERSION`] in [`PYTHON_ENV`], installed with
/// Python's venv and pip when missing.
fn ensure_schemathesis() -> Result {
    let env = Path::new(PYTHON_ENV);
    let bin = env.join("bin/schemathesis");
    let installed = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(SCHEMATHESIS_VERSION));
    if installed {
        return Ok(());
    }
    if !env.join("bin/pip").exists() {
        step(&format!("creating a Python environment in {PYTHON_ENV}"));
        run(cmd("python3").args(["-m", "venv"]).arg(env)).map_err(|e| {
            format!("{e}\n  (needs Python 3 with its venv module: python3 -m venv)")
        })?;
    }
    step(&format!(
        "installing schemathesis {SCHEMATHESIS_VERSION} from the Python package registry"
    ));
    run(cmd(env.join("bin/pip")).args([
        "install",
        "--disable-pip-version-check",
        &format!("schemathesis=={SCHEMATHESIS_VERSION}"),
    ]))
}

const WORKER_BUILD_VERSION: &str = "0.1.14";
/// Must equal the `wasm-bindgen` pin in Cargo.toml.
const WASM_BINDGEN_VERSION: &str = "0.2.130";

/// The esbuild binary that came with wrangler from npm.
fn esbuild_bin() -> Result<PathBuf> {
    let dir = Path::new("node_modules/@esbuild");
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("{}: {e}; run `npm ci`", dir.display()))?;
    entries
        .filter_map(|e| e.ok())
        .map(|e| e.path().join("bin/esbuild"))
        .find(|p| p.exists())
        .map(|p| std::fs::canonicalize(&p).unwrap_or(p))
        .ok_or_else(|| "no esbuild binary under node_modules/@esbuild; run `npm ci`".to_owned())
}

fn which(bin: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(bin))
            .find(|p| p.is_file())
    })
}

/// Holds `target/worker-build.lock` for as long as it lives: one build of
/// the Worker at a time from one checkout. Two at once (two `cargo xtask
/// dev`, or `wrangler dev`'s own `[build]` beside ours) write the same
/// `build/` files, and one reads what the other half wrote.
fn build_lock() -> Result<std::fs::File> {
    let path = Path::new("target/worker-build.lock");
    std::fs::create_dir_all("target").map_err(|e| format!("cannot create target/: {e}"))?;
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => return Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => step(&format!(
            "waiting for another build of the Worker from this checkout to finish ({})",
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => {
            return Err(format!("cannot lock {}: {e}", path.display()))
        }
    }
    // Polled rather than blocking, so that Ctrl-C or SIGTERM (to `cargo
    // xtask dev`, say) stops the wait.
    loop {
        if proc::stop_requested() {
            return Err("stopped while waiting for the build lock".to_owned());
        }
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(std::fs::TryLockError::WouldBlock) => {
                std::thread::sleep(Duration::from_millis(200))
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(format!("cannot lock {}: {e}", path.display()))
            }
        }
    }
}

/// What a Worker bundle is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bundle {
    /// Deployed: no benchmark code, no `libsql` crate.
    Production,
    /// `cargo xtask dev`, the tests and the benchmarks: with the `bench`
    /// feature.
    Development,
}

impl Bundle {
    fn name(self) -> &'static str {
        match self {
            Bundle::Production => "production",
            Bundle::Development => "development",
        }
    }
}

/// The file in build/ that says which [`Bundle`] it holds; the test harness
/// reads it.
const BUNDLE_MARKER: &str = "build/bundle.txt";

/// The development bundle, for tests and benchmarks.
fn build_worker() -> Result {
    build_worker_into(Bundle::Development, None).map(|_| ())
}

/// Builds the Worker (one build at a time from this checkout, see
/// [`build_lock`]) and, with `into`, copies the bundle to `into/build`
/// while still holding the lock: a run that reads its own copy never sees
/// another run's build half written. The bundle's `shim.mjs`.
fn build_worker_into(bundle: Bundle, into: Option<&Path>) -> Result<PathBuf> {
    ensure_wasm_tools()?;
    ensure_node_modules()?;
    let _lock = build_lock()?;
    build_worker_locked(bundle)?;
    let Some(dir) = into else {
        return Ok(Path::new("build/worker/shim.mjs").to_path_buf());
    };
    let target = dir.join("build");
    let fresh = dir.join("build.new");
    let _ = std::fs::remove_dir_all(&fresh);
    copy_dir(Path::new("build"), &fresh)
        .map_err(|e| format!("cannot copy the bundle to {}: {e}", fresh.display()))?;
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&fresh, &target)
        .map_err(|e| format!("cannot move the bundle to {}: {e}", target.display()))?;
    Ok(target.join("worker/shim.mjs"))
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            copy_dir(&path, &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(&path, to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

fn build_worker_locked(bundle: Bundle) -> Result {
    step(&format!(
        "building the {} Worker (worker-build --profile wasm-release{})",
        bundle.name(),
        if bundle == Bundle::Development {
            " --features bench"
        } else {
            ""
        }
    ));
    let wasm_bindgen = which("wasm-bindgen").ok_or("wasm-bindgen is not on PATH (~/.cargo/bin)")?;
    let mut c = cmd("worker-build");
    // wasm-opt runs below, from node_modules (worker-build would download it).
    c.args(["--profile", "wasm-release", "--no-opt"]);
    if bundle == Bundle::Development {
        c.args(["--features", "bench"]);
    }
    run(c
        .env("WASM_BINDGEN_BIN", wasm_bindgen)
        .env("ESBUILD_BIN", esbuild_bin()?))?;
    let wasm = Path::new("build/index_bg.wasm");
    let built = size_of(wasm)?;
    optimise_wasm(wasm)?;
    let size = size_of(wasm)?;
    eprintln!(
        "    worker bundle: {} ({} KiB; {} KiB before wasm-opt; {} KiB gzipped)",
        wasm.display(),
        size / 1024,
        built / 1024,
        gzipped_size(wasm)? / 1024
    );
    std::fs::write(BUNDLE_MARKER, format!("{}\n", bundle.name()))
        .map_err(|e| format!("cannot write {BUNDLE_MARKER}: {e}"))
}

fn size_of(path: &Path) -> Result<u64> {
    Ok(path
        .metadata()
        .map_err(|e| format!("the build left no {}: {e}", path.display()))?
        .len())
}

/// The wasm features the Rust toolchain and wasm-bindgen emit, which
/// wasm-opt must accept (workerd's V8 runs them all).
const WASM_FEATURES: [&str; 6] = [
    "--enable-bulk-memory",
    "--enable-mutable-globals",
    "--enable-nontrapping-float-to-int",
    "--enable-sign-ext",
    "--enable-reference-types",
    "--enable-multivalue",
];

/// `wasm-opt -Oz` in place, with binaryen from package-lock.json. The
/// result is kept under target/wasm-opt by the input's hash, so a rebuild
/// that changed nothing (wrangler runs the build on every start) skips it.
fn optimise_wasm(wasm: &Path) -> Result {
    use std::hash::{Hash, Hasher};
    let wasm_opt = Path::new("node_modules/.bin/wasm-opt");
    if !wasm_opt.exists() {
        return Err(format!(
            "{} is missing: run `npm ci` (binaryen is pinned in package-lock.json)",
            wasm_opt.display()
        ));
    }
    let input = std::fs::read(wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    input.hash(&mut hasher);
    WASM_FEATURES.hash(&mut hasher);
    let cache = Path::new("target/wasm-opt");
    let kept = cache.join(format!("{:016x}.wasm", hasher.finish()));
    if kept.exists() {
        step("wasm-opt -Oz: unchanged input, reusing its output");
        return std::fs::copy(&kept, wasm)
            .map(|_| ())
            .map_err(|e| format!("cannot copy {} to {}: {e}", kept.display(), wasm.display()));
    }
    step("wasm-opt -Oz (binaryen, from node_modules)");
    let out = wasm.with_extension("opt.wasm");
    run(cmd(wasm_opt)
        .arg(wasm)
        .arg("-Oz")
        .args(WASM_FEATURES)
        .arg("-o")
        .arg(&out))?;
    std::fs::create_dir_all(cache).map_err(|e| format!("{}: {e}", cache.display()))?;
    // Old outputs are not worth keeping: one per build kind is enough.
    if let Ok(entries) = std::fs::read_dir(cache) {
        let mut old: Vec<_> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| Some((e.metadata().ok()?.modified().ok()?, e.path())))
            .collect();
        old.sort();
        for (_, path) in old.iter().rev().skip(3) {
            let _ = std::fs::remove_file(path);
        }
    }
    std::fs::copy(&out, &kept).map_err(|e| format!("cannot keep {}: {e}", kept.display()))?;
    std::fs::rename(&out, wasm).map_err(|e| format!("cannot replace {}: {e}", wasm.display()))
}

/// Most the gzipped wasm may weigh (Workers' limits are 3 MiB on the free
/// plan and 10 MiB on paid ones; a smaller bundle starts faster).
const WASM_GZIP_BUDGET: u64 = 1024 * 1024;

fn gzipped_size(path: &Path) -> Result<u64> {
    use std::io::Write;
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder
        .write_all(&bytes)
        .and_then(|()| encoder.finish())
        .map(|gz| gz.len() as u64)
        .map_err(|e| format!("gzip: {e}"))
}

/// Strings only benchmark code puts in the wasm: its route prefix, and the
/// `libsql` client's own messages.
const BENCH_MARKERS: [&str; 2] = ["/__bench/", "libsql::wasm"];

/// The first [`BENCH_MARKERS`] string `wasm` holds, if any.
fn bench_marker_in(wasm: &[u8]) -> Option<&'static str> {
    BENCH_MARKERS
        .into_iter()
        .find(|m| wasm.windows(m.len()).any(|w| w == m.as_bytes()))
}

fn deploy_check() -> Result {
    ensure_node_modules()?;
    same_site()?;
    no_libsql_crate()?;
    for env in ["staging", "production"] {
        step(&format!("wrangler deploy --dry-run --env {env}"));
        let outdir = PathBuf::from("target/deploy").join(env);
        let _ = std::fs::remove_dir_all(&outdir);
        run(cmd(wrangler())
            .args(["deploy", "--dry-run", "--env", env, "--outdir"])
            .arg(&outdir)
            .env("WRANGLER_SEND_METRICS", "false")
            .env("WRANGLER_SEND_ERROR_REPORTS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("WRANGLER_LOG_PATH", "target/deploy/logs"))?;
        let wasm = std::fs::read_dir(&outdir)
            .map_err(|e| format!("{}: {e}", outdir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|x| x == "wasm"))
            .ok_or_else(|| format!("the dry run left no .wasm in {}", outdir.display()))?;
        let raw = wasm.metadata().map_err(|e| e.to_string())?.len();
        let gz = gzipped_size(&wasm)?;
        let bytes = std::fs::read(&wasm).map_err(|e| format!("{}: {e}", wasm.display()))?;
        if let Some(marker) = bench_marker_in(&bytes) {
            return Err(format!(
                "the {env} bundle holds benchmark code ({marker:?} is in {}); \
                 wrangler's build must run `cargo xtask build-worker` without --bench",
                wasm.display()
            ));
        }
        eprintln!(
            "    {env}: wasm {} KiB raw, {} KiB gzipped (budget {} KiB gzipped)",
            raw / 1024,
            gz / 1024,
            WASM_GZIP_BUDGET / 1024
        );
        if gz > WASM_GZIP_BUDGET {
            return Err(format!(
                "the {env} wasm is {} KiB gzipped, over the {} KiB budget",
                gz / 1024,
                WASM_GZIP_BUDGET / 1024
            ));
        }
    }
    Ok(())
}

/// The production build's dependency tree has no `libsql` crate (the
/// benchmark baseline's client; `libsql-hrana` is the protocol's types).
fn no_libsql_crate() -> Result {
    step("checking that the deployed Worker links no libsql crate");
    let out = cmd("cargo")
        .args([
            "tree",
            "-p",
            "quiet-riots-edge",
            "--target",
            "wasm32-unknown-unknown",
            "-e",
            "normal",
            "--prefix",
            "none",
        ])
        .output()
        .map_err(|e| format!("cannot run cargo tree: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let tree = String::from_utf8_lossy(&out.stdout);
    match links_libsql(&tree) {
        Some(line) => Err(format!(
            "the production Worker depends on {line}: keep `libsql` optional, behind the `bench` feature"
        )),
        None => Ok(()),
    }
}

/// The line of `cargo tree --prefix none` output that names the `libsql`
/// crate itself (not `libsql-hrana` or `libsql-sys`), if any.
fn links_libsql(tree: &str) -> Option<&str> {
    tree.lines().find(|l| l.starts_with("libsql v"))
}

/// Each deployed environment's allowed origins are on the site the Worker
/// answers on (browsers drop a cross-site API's session cookie).
fn same_site() -> Result {
    step("checking that every allowed origin is on the API's site");
    let text = std::fs::read_to_string("wrangler.toml")
        .map_err(|e| format!("cannot read wrangler.toml: {e}"))?;
    let config: toml::Value = text
        .parse()
        .map_err(|e| format!("wrangler.toml does not parse: {e}"))?;
    let mut wrong = Vec::new();
    for env in ["staging", "production"] {
        let (hosts, origins) = site::environment(&config, env)?;
        eprintln!("    {env}: API on {hosts:?}, origins {origins:?}");
        wrong.extend(
            site::cross_site(&hosts, &origins)
                .into_iter()
                .map(|w| format!("[env.{env}] {w}")),
        );
    }
    if wrong.is_empty() {
        return Ok(());
    }
    Err(format!(
        "cross-site configuration; browsers would drop the session cookie:\n  {}\n  \
         serve the API on the web app's site (a custom domain such as api.<site> in the \
         environment's `routes`), or allow only origins on the API's site",
        wrong.join("\n  ")
    ))
}

fn wrangler() -> PathBuf {
    PathBuf::from("node_modules/.bin/wrangler")
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

fn dev(port: u16, primary_port: u16, data_dir: &Path) -> Result {
    let stop = proc::stop_signal()?;
    build_primary(false)?;
    std::fs::create_dir_all(data_dir)
        .map_err(|e| format!("cannot create {}: {e}", data_dir.display()))?;
    let data_dir = &std::fs::canonicalize(data_dir)
        .map_err(|e| format!("cannot resolve {}: {e}", data_dir.display()))?;
    let shim = build_worker_into(Bundle::Development, Some(data_dir))?;
    let config = dev_config(data_dir, &shim)?;
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
        &stop,
    )?;
    let url = primary.url().to_owned();
    step("applying migrations");
    run(cmd(&bin).args(["migrate", "up", "--url", &url]))?;
    step("loading the demo seed");
    run(cmd(&bin).args(["seed", "demo", "--url", &url]))?;
    step(&format!("starting wrangler dev on 127.0.0.1:{port}"));
    let worker_url = format!("http://127.0.0.1:{port}");
    let worker = Server::spawn_until_healthy(
        "wrangler dev",
        cmd(wrangler())
            .args(["dev", "--config"])
            .arg(&config)
            .args(["--local", "--ip", "127.0.0.1", "--port", &port.to_string()])
            .args([
                "--inspector-ip",
                "127.0.0.1",
                "--show-interactive-dev-session=false",
            ])
            .args(["--test-scheduled", "--persist-to"])
            .arg(data_dir.join("wrangler"))
            .args(["--var", &format!("LIBSQL_URL:{url}")])
            .env("WRANGLER_SEND_METRICS", "false")
            .env("WRANGLER_SEND_ERROR_REPORTS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("WRANGLER_LOG_PATH", data_dir.join("wrangler-logs")),
        &worker_url,
        Duration::from_secs(180),
        &stop,
    )?;
    println!("ready: {worker_url}");
    println!("web client: {worker_url}/");
    let mut servers = [worker, primary];
    let ended = loop {
        if stop.wait_for(Duration::from_secs(1)) {
            break None;
        }
        if let Some(s) = servers
            .iter_mut()
            .find_map(|s| s.exited().map(|st| (s.name(), st)))
        {
            break Some(s);
        }
    };
    step("stopping");
    drop(servers);
    match ended {
        None => Ok(()),
        Some((name, status)) => Err(format!(
            "{name} stopped by itself ({status}); see its output above"
        )),
    }
}

/// The run's own wrangler config in `data_dir` (see [`dev_toml`]).
/// `.dev.vars` is copied beside it (wrangler reads it next to the config).
fn dev_config(data_dir: &Path, shim: &Path) -> Result<PathBuf> {
    let repo = std::env::current_dir().map_err(|e| format!("current dir: {e}"))?;
    let toml = std::fs::read_to_string("wrangler.toml")
        .map_err(|e| format!("cannot read wrangler.toml: {e}"))?;
    let config = data_dir.join("wrangler.toml");
    std::fs::write(&config, dev_toml(&toml, &repo, data_dir, shim))
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let vars = Path::new(".dev.vars");
    if vars.exists() {
        std::fs::copy(vars, data_dir.join(".dev.vars"))
            .map_err(|e| format!("cannot copy .dev.vars into {}: {e}", data_dir.display()))?;
    }
    Ok(config)
}

/// The repository's wrangler.toml (`toml`) for a run that keeps its config
/// in `data_dir`: [`run_toml`] with a build step that rebuilds into the
/// run's copy of the bundle when `src/` changes (wrangler dev watches it).
/// Two runs from one checkout thus never read each other's half-written
/// bundle.
fn dev_toml(toml: &str, repo: &Path, data_dir: &Path, shim: &Path) -> String {
    let build = format!(
        "[build]\ncommand = {:?}\ncwd = {:?}\nwatch_dir = {:?}\n",
        format!(
            "cargo xtask build-worker --bench --into {}",
            data_dir.display()
        ),
        repo.display().to_string(),
        repo.join("src").display().to_string(),
    );
    run_toml(toml, repo, shim, Some(&build))
}

/// The repository's wrangler.toml (`toml`) written outside the repository
/// (`repo`) for a run: `main` at the run's bundle (`shim`), the `[build]`
/// section replaced by `build` (none: wrangler builds nothing), and the web
/// client's assets at the repository's `web/` (wrangler resolves relative
/// paths from the config's folder).
fn run_toml(toml: &str, repo: &Path, shim: &Path, build: Option<&str>) -> String {
    let mut out = String::new();
    let mut section = "";
    for line in toml.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            section = trimmed;
            if section == "[build]" {
                out.push_str(build.unwrap_or_default());
                continue;
            }
        }
        if section == "[build]" {
            continue;
        }
        if trimmed.starts_with("main = ") {
            out.push_str(&format!("main = {:?}\n", shim.display().to_string()));
            continue;
        }
        if section == "[assets]" && trimmed.starts_with("directory = ") {
            let web = repo.join("web");
            out.push_str(&format!("directory = {:?}\n", web.display().to_string()));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `cargo fmt --check`, and clippy natively (with and without the bench
/// feature) and for the wasm target.
fn lint() -> Result {
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
    step("cargo clippy with the bench feature");
    run(cmd("cargo").args([
        "clippy",
        "-p",
        "quiet-riots-edge",
        "--all-targets",
        "--features",
        "bench",
        "--",
        "-D",
        "warnings",
    ]))?;
    for features in [None, Some("bench")] {
        step(&format!(
            "cargo clippy for the wasm target{}",
            features.map_or(String::new(), |f| format!(" (--features {f})"))
        ));
        let mut c = cmd("cargo");
        c.args([
            "clippy",
            "--target",
            "wasm32-unknown-unknown",
            "--lib",
            "-p",
            "quiet-riots-edge",
        ]);
        if let Some(f) = features {
            c.args(["--features", f]);
        }
        run(c.args(["--", "-D", "warnings"]))?;
    }
    Ok(())
}

/// The inner loop: fmt, clippy and the native tests (the crates' unit
/// tests and the integration tests that need no running stack).
fn test_fast() -> Result {
    ensure_rust_components()?;
    ensure_wasm_tools()?;
    lint()?;
    step("native tests: unit tests, the layout, the spec's routes, the config files, the primary");
    run(cmd("cargo").args(["test", "--workspace", "--lib", "--bins"]))?;
    run(cmd("cargo").args([
        "test",
        "-p",
        "quiet-riots-edge",
        "--test",
        "layers",
        "--test",
        "openapi",
        "--test",
        "config_files",
    ]))?;
    run(cmd("cargo").args(["test", "-p", "qr-primary", "--tests"]))
}

fn test() -> Result {
    ensure_rust_components()?;
    ensure_wasm_tools()?;
    ensure_node_modules()?;
    ensure_schemathesis()?;
    lint()?;
    // The deployable bundle first (its checks scan what wrangler builds),
    // then the development bundle the tests and benchmarks run.
    deploy_check()?;
    build_primary(false)?;
    build_worker()?;
    step("unit and integration tests (cargo test --workspace); integration tests start the primary and wrangler dev");
    run(cmd("cargo").args(["test", "--workspace"]))?;
    step("@libsql/client conformance tests (node --test tests/node/)");
    run(cmd("node")
        .args(["--test", "tests/node/"])
        .env("QR_PRIMARY_BIN", primary_bin(false)))?;
    browser::run_browser_tests()?;
    bench(true, None, &[])
}

/// Builds the Worker of `commit` with that commit's own xtask, in a git
/// worktree of its own (target/before/COMMIT, with its own target dir and
/// node_modules), and returns its label and the `build/` directory it left.
fn build_before(commit: &str) -> Result<(String, PathBuf)> {
    let out = cmd("git")
        .args(["rev-parse", "--short", &format!("{commit}^{{commit}}")])
        .output()
        .map_err(|e| format!("cannot run git: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{commit:?} is not a commit of this repository: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let label = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    let tree = root().join("target/before").join(&label);
    if !tree.join("Cargo.toml").exists() {
        step(&format!("checking out {label} in {}", tree.display()));
        run(cmd("git")
            .args(["worktree", "add", "--force", "--detach"])
            .arg(&tree)
            .arg(&label))?;
    }
    // Older commits build the benchmark switches in always; newer ones
    // only with --bench.
    let source = std::fs::read_to_string(tree.join("xtask/src/main.rs"))
        .map_err(|e| format!("{}: {e}", tree.display()))?;
    let mut c = cmd("cargo");
    c.args(["xtask", "build-worker"]).current_dir(&tree);
    if source.contains("Bundle::Development") {
        c.arg("--bench");
    }
    step(&format!(
        "building the Worker of {label} with its own xtask (a cold build takes minutes)"
    ));
    run(&mut c)?;
    let build = tree.join("build");
    if !build.join("worker/shim.mjs").exists() {
        return Err(format!(
            "the build of {label} left no {}",
            build.join("worker/shim.mjs").display()
        ));
    }
    Ok((label, build))
}

fn bench(quick: bool, before: Option<&str>, only: &[String]) -> Result {
    // (package, bench, what)
    let benches = [
        ("qr-primary", "protocol", "primary protocol overhead"),
        ("quiet-riots-edge", "search", "FTS5 against LIKE search"),
        ("quiet-riots-edge", "edge", "cached reads in wrangler dev"),
        (
            "quiet-riots-edge",
            "round_trips",
            "one pipeline against the libsql client's round trips (primary delay 100 ms)",
        ),
        (
            "quiet-riots-edge",
            "hot_issue",
            "a hot issue: counter object against an UPDATE per join",
        ),
        (
            "quiet-riots-edge",
            "rate_limit",
            "the rate limiter's added latency",
        ),
        (
            "quiet-riots-edge",
            "load",
            "load: reads, mixed users, abuse (wrangler dev, synthetic data)",
        ),
        (
            "quiet-riots-edge",
            "reads_ab",
            "reads: this build against --before's, in alternating rounds",
        ),
        (
            "quiet-riots-edge",
            "faults",
            "faults under load: the primary and workerd killed",
        ),
        (
            "quiet-riots-edge",
            "live",
            "live sockets: fan-out to many watchers, push against polling",
        ),
        (
            "quiet-riots-edge",
            "bundle",
            "the Worker bundle: size and cold start (QR_BUNDLES to compare builds)",
        ),
    ];
    if let Some(unknown) = only
        .iter()
        .find(|o| !benches.iter().any(|(_, b, _)| b == o))
    {
        return Err(format!(
            "no benchmark is called {unknown:?}; they are: {}",
            benches.map(|(_, b, _)| b).join(", ")
        ));
    }
    let benches = benches
        .into_iter()
        .filter(|(_, b, _)| only.is_empty() || only.iter().any(|o| o == b));
    if !quick {
        // The Worker benchmarks run the Worker bundle and the primary binary.
        build_primary(false)?;
        build_worker()?;
    }
    let before = before.map(build_before).transpose()?;
    for (package, bench, what) in benches {
        step(&format!(
            "benchmark: {what}{}",
            if quick { " (quick)" } else { "" }
        ));
        let mut c = cmd("cargo");
        c.args(["bench", "-p", package, "--bench", bench, "--"]);
        if let Some((label, build)) = &before {
            c.env("QR_BEFORE_LABEL", label)
                .env("QR_BEFORE_BUNDLE", build);
        }
        if quick {
            c.arg("--quick");
        } else {
            if bench == "load" {
                // Load runs the primary as production would: optimised.
                build_primary(true)?;
                let bin = std::env::current_dir()
                    .map_err(|e| format!("current dir: {e}"))?
                    .join(primary_bin(true));
                c.env("QR_PRIMARY_BIN", bin);
            }
            // Benchmarks run in their package's folder; give an absolute path.
            let file = std::env::current_dir()
                .map_err(|e| format!("current dir: {e}"))?
                .join("BENCHMARKS.md");
            c.arg("--write").arg(file);
        }
        run(&mut c)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn benchmark_strings_are_found_in_a_wasm() {
        assert_eq!(bench_marker_in(b"\0asm...GET /api/issues..."), None);
        assert_eq!(
            bench_marker_in(b"\0asm.../__bench/constant..."),
            Some("/__bench/")
        );
        assert_eq!(
            bench_marker_in(b"\0asm...at libsql::wasm::Connection"),
            Some("libsql::wasm")
        );
    }

    #[test]
    fn the_dev_config_points_at_the_runs_bundle_and_the_repositorys_web_folder() {
        let repo = Path::new("/repo");
        let toml = std::fs::read_to_string(root().join("wrangler.toml")).expect("wrangler.toml");
        let out = dev_toml(
            &toml,
            repo,
            Path::new("/data"),
            Path::new("/data/build/worker/shim.mjs"),
        );
        let config: toml::Value = out.parse().expect("the dev config parses");
        assert_eq!(config["main"].as_str(), Some("/data/build/worker/shim.mjs"));
        assert_eq!(config["assets"]["directory"].as_str(), Some("/repo/web"));
        assert_eq!(
            config["build"]["command"].as_str(),
            Some("cargo xtask build-worker --bench --into /data")
        );
        assert_eq!(config["build"]["watch_dir"].as_str(), Some("/repo/src"));
        // Everything else as it was.
        let original: toml::Value = toml.parse().expect("wrangler.toml parses");
        assert_eq!(
            config["assets"]["run_worker_first"],
            original["assets"]["run_worker_first"]
        );
        assert_eq!(config["env"], original["env"]);
    }

    #[test]
    fn only_the_libsql_crate_itself_counts() {
        let production =
            "quiet-riots-edge v0.1.0\nlibsql-hrana v0.10.0\nlibsql-sys v0.10.0\nworker v0.6.7\n";
        assert_eq!(links_libsql(production), None);
        let bench = format!("{production}libsql v0.10.0\n");
        assert_eq!(links_libsql(&bench), Some("libsql v0.10.0"));
    }
}
