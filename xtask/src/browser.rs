//! `cargo xtask browser-test`: the web client in a real browser.
//!
//! First the client's modules under `node --test` (no browser), then
//! Debian's Chromium (installed with apt-get when missing), driven by
//! `playwright-core` from package-lock.json with its executable path set,
//! so nothing is downloaded. It starts its own stack (a primary on a fresh
//! database with the demo seed, `wrangler dev` on a free port with a fresh
//! state dir), runs `tests/browser/run.mjs` against it, and stops every
//! process it started (each in a process group of its own) also when the
//! run fails.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use qr_procgroup::Group;

use crate::proc::{self, cmd, run, step, Server};
use crate::{
    build_primary, build_worker_into, ensure_node_modules, primary_bin, run_toml, wrangler, Bundle,
    Result,
};

/// Where Debian's `chromium` package puts the browser.
const CHROMIUM: &str = "/usr/bin/chromium";
/// Where the screenshots of a run go (emptied first).
const SCREENSHOTS: &str = "target/browser-screenshots";
/// The other origin of the same site that the CORS page is served from,
/// when that port is free (it is in the development ALLOWED_ORIGINS).
const SAME_SITE_ORIGIN_PORT: u16 = 3000;
/// The header the Worker takes the client IP from in this run, so that
/// the browser's contexts each have their own rate-limit buckets.
const CLIENT_IP_HEADER: &str = "X-Test-Client-Ip";
/// Writes per client in [`WRITES_WINDOW_SECS`] in this run: the flows stay
/// under it, the rate-limit step goes over it on purpose.
const WRITES_LIMIT: u32 = 20;
/// A long window, so a refusal lasts (`Retry-After` 30 s) well past the
/// click that must meet it, however slow the machine.
const WRITES_WINDOW_SECS: u32 = 600;

pub fn run_browser_tests() -> Result {
    let stop = proc::stop_signal()?;
    ensure_chromium()?;
    ensure_node_modules()?;
    if !Path::new("node_modules/playwright-core/package.json").exists() {
        return Err(
            "node_modules has no playwright-core: it is pinned in package.json; run `npm ci`"
                .to_owned(),
        );
    }
    step("the web client's modules without a browser (node --test tests/browser/*.test.mjs)");
    run(cmd("node").args([
        "--test",
        "tests/browser/api.test.mjs",
        "tests/browser/live.test.mjs",
    ]))?;
    build_primary(false)?;
    let dir = std::env::current_dir()
        .map_err(|e| format!("current dir: {e}"))?
        .join("target/browser-run");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let shim = build_worker_into(Bundle::Development, Some(&dir))?;

    let screenshots = std::env::current_dir()
        .map_err(|e| format!("current dir: {e}"))?
        .join(SCREENSHOTS);
    let _ = std::fs::remove_dir_all(&screenshots);
    std::fs::create_dir_all(&screenshots).map_err(|e| format!("{}: {e}", screenshots.display()))?;

    let bin = primary_bin(false);
    step("starting the primary (fresh database)");
    let primary = Server::spawn(
        "primary",
        cmd(&bin)
            .args(["serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(dir.join("primary.db"))
            .env("RUST_LOG", "warn"),
        "listening: ",
        &stop,
    )?;
    let primary_url = primary.url().to_owned();
    run(cmd(&bin).args(["migrate", "up", "--url", &primary_url]))?;
    step("loading the demo seed");
    run(cmd(&bin).args(["seed", "demo", "--url", &primary_url]))?;

    let port = free_port()?;
    let origin_port = if port_is_free(SAME_SITE_ORIGIN_PORT) {
        SAME_SITE_ORIGIN_PORT
    } else {
        free_port()?
    };
    let origin = format!("http://localhost:{origin_port}");
    let config = dir.join("wrangler.toml");
    let repo = std::env::current_dir().map_err(|e| format!("current dir: {e}"))?;
    let toml = std::fs::read_to_string("wrangler.toml")
        .map_err(|e| format!("cannot read wrangler.toml: {e}"))?;
    std::fs::write(&config, run_toml(&toml, &repo, &shim, None))
        .map_err(|e| format!("cannot write {}: {e}", config.display()))?;
    let log = dir.join("wrangler.log");
    let log_file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let log_err = log_file
        .try_clone()
        .map_err(|e| format!("{}: {e}", log.display()))?;
    step(&format!(
        "starting wrangler dev on 127.0.0.1:{port} (its output: {})",
        log.display()
    ));
    let worker_url = format!("http://127.0.0.1:{port}");
    let vars = [
        format!("LIBSQL_URL:{primary_url}"),
        format!("ALLOWED_ORIGINS:{origin}"),
        format!("CLIENT_IP_HEADER:{CLIENT_IP_HEADER}"),
        format!(
            "RATE_LIMITS:reads=100000/60,writes={WRITES_LIMIT}/{WRITES_WINDOW_SECS},create=100000/60"
        ),
    ];
    let worker = Server::spawn_until_healthy(
        "wrangler dev",
        cmd(wrangler())
            .args(["dev", "--config"])
            .arg(&config)
            .args(["--local", "--ip", "127.0.0.1", "--port", &port.to_string()])
            .args(["--inspector-ip", "127.0.0.1", "--inspector-port"])
            .arg(free_port()?.to_string())
            .args([
                "--show-interactive-dev-session=false",
                "--log-level",
                "warn",
            ])
            .arg("--persist-to")
            .arg(dir.join("wrangler-state"))
            .args(vars.iter().flat_map(|v| ["--var", v.as_str()]))
            .env("WRANGLER_SEND_METRICS", "false")
            .env("WRANGLER_SEND_ERROR_REPORTS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("WRANGLER_LOG_PATH", dir.join("wrangler-logs"))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(log_err),
        &worker_url,
        Duration::from_secs(180),
        &stop,
    )
    .map_err(|e| format!("{e}; its output is in {}", log.display()))?;

    step(&format!(
        "browser tests (node tests/browser/run.mjs); screenshots in {}",
        screenshots.display()
    ));
    let result = run_in_group(
        Command::new("node")
            .arg("tests/browser/run.mjs")
            .env("QR_WEB_URL", &worker_url)
            .env("QR_API_SAME_SITE_URL", format!("http://localhost:{port}"))
            .env("QR_ORIGIN_PORT", origin_port.to_string())
            .env("QR_CHROMIUM", CHROMIUM)
            .env("QR_SCREENSHOTS", &screenshots)
            .env("QR_CLIENT_IP_HEADER", CLIENT_IP_HEADER)
            .env("QR_WRITES_LIMIT", WRITES_LIMIT.to_string()),
        &stop,
    );
    drop(worker);
    drop(primary);
    eprintln!("    screenshots: {}", screenshots.display());
    result.map_err(|e| {
        format!(
            "{e}\n  the failing step is named above; screenshots in {}; wrangler's output in {}",
            screenshots.display(),
            log.display()
        )
    })
}

/// Runs `c` to its end in a process group of its own, which is then
/// stopped as a whole: a browser the script left behind goes with it. A
/// stop (Ctrl-C, SIGTERM) stops the group at once.
fn run_in_group(c: &mut Command, stop: &proc::StopSignal) -> Result {
    let mut group = Group::spawn("browser tests", c)
        .map_err(|e| format!("cannot start `node tests/browser/run.mjs`: {e}"))?;
    let status = loop {
        if let Some(status) = group.exited() {
            break status;
        }
        if stop.wait_for(Duration::from_millis(200)) {
            group.stop();
            return Err("stopped while the browser tests ran".to_owned());
        }
    };
    group.stop();
    if status.success() {
        Ok(())
    } else {
        Err(format!("`node tests/browser/run.mjs` failed ({status})"))
    }
}

/// Debian's `chromium`, installed with apt-get when it is missing (as
/// root; `apt-get update` first if the install fails).
fn ensure_chromium() -> Result {
    if Path::new(CHROMIUM).exists() {
        return Ok(());
    }
    step("installing Debian's chromium (apt-get install -y chromium)");
    let install = || {
        run(cmd("apt-get")
            .args(["install", "-y", "--no-install-recommends", "chromium"])
            .env("DEBIAN_FRONTEND", "noninteractive"))
    };
    let installed = install().or_else(|first| {
        step("the install failed; apt-get update, then once more");
        run(cmd("apt-get").arg("update"))
            .and_then(|()| install())
            .map_err(|second| format!("{first}\n  then: {second}"))
    });
    match installed {
        Ok(()) if Path::new(CHROMIUM).exists() => Ok(()),
        Ok(()) => Err(format!(
            "apt-get installed chromium, but there is no {CHROMIUM}"
        )),
        Err(e) => Err(format!(
            "the browser tests need Chromium at {CHROMIUM} and it could not be installed:\n  {e}\n  \
             install it as root (`apt-get update && apt-get install -y chromium`) and run again"
        )),
    }
}

fn free_port() -> Result<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}
