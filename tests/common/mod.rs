//! `TestApp`: the real local stack for integration tests.
//!
//! Starts its own primary (fresh database, migrated and seeded with the demo
//! set) and `wrangler dev` (fresh `--persist-to` dir) on free loopback ports,
//! from the Worker bundle `cargo xtask build-worker --bench` left in `build/`, waits
//! until both answer, and stops both when dropped, also when a test panics.
//! Processes are stopped by the ids we started them with (wrangler with its
//! whole process group, which holds workerd).
//!
//! wrangler dev takes a few seconds and about a gigabyte to start, so each
//! test binary starts one `TestApp` and runs its cases against it, keeping
//! them apart by their data; see [`run_cases`].

#![allow(dead_code)]

pub mod fake_api;
pub mod faults;

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Database timeout the Worker runs with in tests (DB_TIMEOUT_MS).
pub const DB_TIMEOUT: Duration = Duration::from_millis(1500);
pub const ALLOWED_ORIGIN: &str = "https://app.quietriots.test";
/// Admin token (CRON_SECRET) the Worker runs with in tests.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";
/// Fresh TTL of cached reads in tests (CACHE_FRESH_SECS), short so that
/// staleness can be tested.
pub const CACHE_FRESH_SECS: u64 = 2;
/// The header the Worker takes the client IP from in tests
/// (CLIENT_IP_HEADER; Cloudflare's CF-Connecting-IP in production).
pub const CLIENT_IP_HEADER: &str = "X-Test-Client-Ip";

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn primary_bin() -> PathBuf {
    std::env::var_os("QR_PRIMARY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/debug/qr-primary"))
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process in its own group, stopped with it on drop (the shared
/// `qr-procgroup` crate, which xtask uses too).
pub type Proc = qr_procgroup::Group;

/// Starts `cmd` in a process group of its own; a test cannot go on without it.
fn spawn(name: &'static str, cmd: &mut Command) -> Proc {
    Proc::spawn(name, cmd).unwrap_or_else(|e| panic!("cannot start {name}: {e}"))
}

pub struct Primary {
    pub proc: Proc,
    pub url: String,
    pub port: u16,
}

/// Starts the primary on `port` (0: any) over `db`.
pub fn start_primary(db: &Path, port: u16) -> Primary {
    start_primary_with(db, port, &[])
}

/// [`start_primary`] with more `serve` flags (e.g. `--delay-ms 100`).
pub fn start_primary_with(db: &Path, port: u16, flags: &[&str]) -> Primary {
    let bin = primary_bin();
    assert!(
        bin.exists(),
        "{} is missing: run `cargo xtask test` (or `cargo build -p qr-primary`)",
        bin.display()
    );
    let mut cmd = Command::new(&bin);
    cmd.args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--db"])
        .arg(db)
        .args(flags)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped());
    let mut proc = spawn("primary", &mut cmd);
    let stdout = proc.child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("primary output");
    let url = line
        .strip_prefix("listening: ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("primary did not start: {line:?}"))
        .to_owned();
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .expect("port in url");
    Primary { proc, url, port }
}

fn run_ok(what: &str, cmd: &mut Command) {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Checks `check` every 100 ms until it gives a value, for at most
/// `within`; then panics with `what` and the check's last reason. The one
/// way tests wait for something to happen.
#[allow(dead_code)]
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + within;
    loop {
        match check().await {
            Ok(value) => return value,
            Err(why) => assert!(
                Instant::now() < deadline,
                "{what}: not within {within:?}; last: {why}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks `check` every 100 ms for `window`, panicking with `what` the
/// first time it fails: how a test shows that something does not happen
/// (a duplicate reply, a write that must not land) within the time it
/// would have taken.
#[allow(dead_code)]
pub async fn holds_for<F, Fut>(what: &str, window: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + window;
    loop {
        assert!(check().await, "{what}: broken within {window:?}");
        if Instant::now() >= until {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub struct TestApp {
    pub primary: Option<Primary>,
    pub primary_port: u16,
    pub worker: Option<Proc>,
    spec: WorkerSpec,
    pub url: String,
    pub http: reqwest::Client,
    pub dir: tempfile::TempDir,
}

/// The data a TestApp starts with.
pub enum Seed {
    /// The demo set (about 19 issues).
    Demo,
    /// `seed synthetic` with this many issues (and as many users), no feed.
    Synthetic { issues: usize },
}

/// How a [`TestApp`] starts: its data, its cache TTL, Worker vars on top of
/// the test defaults, and an edit of its wrangler.toml.
pub struct Builder {
    seed: Seed,
    cache_fresh_secs: u64,
    vars: Vec<(String, String)>,
    edit: Box<dyn FnOnce(String) -> String>,
    bundle: Option<PathBuf>,
}

#[allow(dead_code)]
impl Builder {
    /// The data set (default: the demo set).
    pub fn seed(mut self, seed: Seed) -> Builder {
        self.seed = seed;
        self
    }

    /// The read cache's fresh TTL (default [`CACHE_FRESH_SECS`]).
    pub fn cache_fresh_secs(mut self, secs: u64) -> Builder {
        self.cache_fresh_secs = secs;
        self
    }

    /// A Worker var on top of the test defaults (which set rate limits high
    /// enough not to get in other tests' way, and take the client IP from
    /// [`CLIENT_IP_HEADER`] so tests can act as many clients).
    pub fn var(mut self, name: &str, value: &str) -> Builder {
        self.vars.push((name.to_owned(), value.to_owned()));
        self
    }

    /// [`Builder::var`] for each of `vars`.
    pub fn vars(mut self, vars: &[(&str, &str)]) -> Builder {
        for (name, value) in vars {
            self = self.var(name, value);
        }
        self
    }

    /// The test's wrangler.toml passed through `edit` (a binding pointed
    /// elsewhere, to fault it).
    pub fn edit_config(mut self, edit: impl FnOnce(String) -> String + 'static) -> Builder {
        self.edit = Box::new(edit);
        self
    }

    /// Runs the Worker bundle of another build directory (a `build/` left
    /// by `cargo xtask build-worker` at another commit, for a before/after
    /// benchmark) instead of this checkout's.
    pub fn bundle(mut self, build_dir: PathBuf) -> Builder {
        self.bundle = Some(build_dir);
        self
    }

    pub async fn start(self) -> TestApp {
        TestApp::start_with(self).await
    }
}

impl TestApp {
    /// The process ids of `wrangler dev` and of the primary (each leads its
    /// process group), while they run.
    pub fn pids(&self) -> (Option<u32>, Option<u32>) {
        (
            self.worker.as_ref().map(|w| w.child.id()),
            self.primary.as_ref().map(|p| p.proc.child.id()),
        )
    }

    /// The stack as most tests want it: [`TestApp::builder`] as it comes.
    pub async fn start() -> TestApp {
        Self::builder().start().await
    }

    pub fn builder() -> Builder {
        Builder {
            seed: Seed::Demo,
            cache_fresh_secs: CACHE_FRESH_SECS,
            vars: Vec::new(),
            edit: Box::new(|toml| toml),
            bundle: None,
        }
    }

    async fn start_with(builder: Builder) -> TestApp {
        let Builder {
            seed,
            cache_fresh_secs,
            vars,
            edit,
            bundle,
        } = builder;
        let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let vars = &vars[..];
        let dir = tempfile::tempdir().expect("temp dir");
        // Another build runs with its own checkout's wrangler.toml: its
        // bindings are those its bundle exports.
        let checkout = bundle
            .as_ref()
            .and_then(|b| b.parent())
            .map_or_else(root, Path::to_path_buf);
        let shim = copy_bundle(dir.path(), bundle);
        let db = dir.path().join("primary.db");
        let primary = start_primary(&db, 0);
        let bin = primary_bin();
        let synthetic;
        let seed_args: Vec<&str> = match seed {
            Seed::Demo => vec!["seed", "demo"],
            Seed::Synthetic { issues } => {
                synthetic = issues.to_string();
                vec![
                    "seed",
                    "synthetic",
                    "--issues",
                    &synthetic,
                    "--users",
                    &synthetic,
                    "--synonyms",
                    "1000",
                    "--feed",
                    "0",
                ]
            }
        };
        for args in [&["migrate", "up"][..], &seed_args] {
            run_ok(
                &format!("qr-primary {}", args.join(" ")),
                Command::new(&bin)
                    .args(args)
                    .args(["--url", &primary.url])
                    .current_dir(root()),
            );
        }

        // The checkout's wrangler.toml without its [build] step: the bundle
        // is built once, before the tests.
        let config = dir.path().join("wrangler.toml");
        let toml = std::fs::read_to_string(checkout.join("wrangler.toml")).expect("wrangler.toml");
        std::fs::write(&config, edit(test_config(&toml, &shim))).expect("write test config");

        let spec = WorkerSpec {
            config,
            port: free_port(),
            inspector: free_port(),
            primary_url: primary.url.clone(),
            // The test defaults, then the test's own (a later --var wins).
            vars: [
                format!("DB_TIMEOUT_MS:{}", DB_TIMEOUT.as_millis()),
                format!("ALLOWED_ORIGINS:{ALLOWED_ORIGIN}"),
                "MAX_BODY_BYTES:4096".to_owned(),
                format!("CACHE_FRESH_SECS:{cache_fresh_secs}"),
                format!("CRON_SECRET:{ADMIN_TOKEN}"),
            ]
            .into_iter()
            .flat_map(|v| ["--var".to_owned(), v])
            .chain(worker_vars(vars))
            .collect(),
            dir: dir.path().to_owned(),
        };
        let worker = spec.spawn();
        let url = format!("http://127.0.0.1:{}", spec.port);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let app = TestApp {
            primary_port: primary.port,
            primary: Some(primary),
            worker: Some(worker),
            spec,
            url,
            http,
            dir,
        };
        app.wait_ready().await;
        app
    }

    /// Until `/health` answers with KV up, and the primary unless the test
    /// stopped it (a test may have faulted the Durable Objects on purpose;
    /// /health names them).
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let last = match self.http.get(format!("{}/health", self.url)).send().await {
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
                    let checks = &body["checks"];
                    let primary_ok = checks["primary"]["ok"] == true || self.primary.is_none();
                    if primary_ok && checks["kv"]["ok"] == true {
                        return;
                    }
                    format!("{status} {text:.500}")
                }
                Err(e) => e.to_string(),
            };
            assert!(
                Instant::now() < deadline,
                "wrangler dev did not become healthy within 90 s; /health last answered: {last}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    pub fn primary_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.primary_port)
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("primary.db")
    }

    /// A Hrana client straight to the primary, to compare with the API.
    pub fn primary_client(&self) -> qr_primary::client::Client {
        qr_primary::client::Client::new(&self.primary_url(), None)
    }

    pub fn stop_primary(&mut self) {
        if let Some(mut p) = self.primary.take() {
            p.proc.stop();
        }
    }

    /// SIGKILLs the primary, as a crash would (nothing flushed).
    pub fn kill_primary(&mut self) {
        if let Some(mut p) = self.primary.take() {
            p.proc.kill();
        }
    }

    /// Starts the primary again on the same port and database.
    pub fn restart_primary(&mut self) {
        self.restart_primary_with(&[]);
    }

    /// Starts the primary again on the same port and database, with more
    /// `serve` flags (e.g. `--delay-ms 100` after seeding without one).
    pub fn restart_primary_with(&mut self, flags: &[&str]) {
        self.stop_primary();
        let db = self.db_path();
        self.primary = Some(start_primary_with(&db, self.primary_port, flags));
    }

    /// Stops `wrangler dev` (and its workerd) as a deploy or a crash would,
    /// and starts it again on the same port and the same persisted state:
    /// every Durable Object loads again from its storage. `kill` is
    /// SIGKILL (nothing is flushed), else SIGTERM.
    pub async fn restart_worker(&mut self, kill: bool) {
        self.stop_worker(kill);
        self.start_worker().await;
    }

    /// Starts `wrangler dev` again and times the way in: from the spawn to
    /// its port taking connections, and the first request from there (`GET
    /// /health`), which waits for workerd to load the bundle and start the
    /// Worker's isolate. For the bundle benchmark.
    #[allow(dead_code)]
    pub async fn start_worker_timed(&mut self) -> (Duration, Duration) {
        assert!(self.worker.is_none(), "the worker is running");
        let spawned = Instant::now();
        self.worker = Some(self.spec.spawn());
        let addr = format!("127.0.0.1:{}", self.spec.port);
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(
                spawned.elapsed() < Duration::from_secs(90),
                "wrangler dev took no connection on {addr} within 90 s"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let listening = spawned.elapsed();
        let asked = Instant::now();
        let first = self
            .http
            .get(format!("{}/health", self.url))
            .send()
            .await
            .expect("the first request");
        let _ = first.bytes().await;
        let first = asked.elapsed();
        self.wait_ready().await;
        (listening, first)
    }

    /// Stops `wrangler dev` and its workerd (SIGKILL when `kill`).
    pub fn stop_worker(&mut self, kill: bool) {
        if let Some(mut worker) = self.worker.take() {
            if kill {
                worker.kill();
            } else {
                worker.stop();
            }
        }
    }

    /// Starts `wrangler dev` again as it first was (same port, state, vars).
    pub async fn start_worker(&mut self) {
        assert!(self.worker.is_none(), "the worker is running");
        self.worker = Some(self.spec.spawn());
        self.wait_ready().await;
    }

    /// The SQLite file holding the storage of the Durable Object of
    /// `class` named `name` (local workerd keeps one file per object and
    /// records its name in it). For tests that edit a stopped stack's
    /// objects.
    pub fn object_storage(&self, class: &str, name: &str) -> PathBuf {
        use libsql_sys::rusqlite::{Connection, OpenFlags};
        let dir = self
            .dir
            .path()
            .join(format!("wrangler-state/v3/do/quiet-riots-edge-{class}"));
        let files = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for file in files.filter_map(|f| f.ok()).map(|f| f.path()) {
            let is_object = file.extension().is_some_and(|x| x == "sqlite")
                && !file.ends_with("metadata.sqlite");
            if !is_object {
                continue;
            }
            let db = Connection::open_with_flags(&file, OpenFlags::SQLITE_OPEN_READ_ONLY)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let named: Option<String> = db
                .query_row("SELECT name FROM __miniflare_do_name", [], |r| r.get(0))
                .ok();
            if named.as_deref() == Some(name) {
                return file;
            }
        }
        panic!("no {class} object named {name:?} in {}", dir.display())
    }

    /// When the Durable Object behind `/health`'s check was loaded.
    pub async fn health_object_loaded_at(&self) -> String {
        let body = self.get_json_any("/health").await;
        body["checks"]["durable_object"]["loaded_at"]
            .as_str()
            .unwrap_or_else(|| panic!("/health has no durable_object.loaded_at: {body}"))
            .to_owned()
    }

    /// Makes the runtime evict every Durable Object the test has used:
    /// sends nothing for longer than the runtime keeps an idle object
    /// (local workerd: about 10 s), then checks that the object behind
    /// `/health` (used just before the pause) was loaded again. The test
    /// must make no request meanwhile; an object woken by its own alarm
    /// may stay loaded.
    pub async fn evict_objects(&self) {
        let before = self.health_object_loaded_at().await;
        tokio::time::sleep(IDLE_EVICTION).await;
        let after = self.health_object_loaded_at().await;
        assert_ne!(
            before, after,
            "the runtime kept an object idle for {IDLE_EVICTION:?}; the eviction helper needs a longer pause"
        );
    }

    /// `GET /api/me` with `cookie`: who the session is.
    pub async fn me(&self, cookie: &str) -> serde_json::Value {
        let r = self
            .get("/api/me")
            .header("Cookie", cookie)
            .send()
            .await
            .expect("me");
        r.json().await.expect("json")
    }

    /// GET and parse the JSON body, whatever the status.
    pub async fn get_json_any(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).send().await.expect("send");
        let text = r.text().await.expect("body");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    /// The primary's `GET /stats`.
    pub async fn primary_stats(&self) -> serde_json::Value {
        self.http
            .get(format!("{}/stats", self.primary_url()))
            .send()
            .await
            .expect("primary stats")
            .json()
            .await
            .expect("json")
    }

    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.http.get(format!("{}{path}", self.url))
    }

    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    /// GET and parse the JSON body; panics with the status on failure.
    pub async fn get_json(&self, path: &str) -> serde_json::Value {
        let r = self.get(path).send().await.expect("send");
        let status = r.status();
        let text = r.text().await.expect("body");
        assert!(status.is_success(), "GET {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("GET {path}: {e}: {text}"))
    }

    /// Hrana requests the primary saw with this request id.
    pub async fn round_trips(&self, request_id: &str) -> u64 {
        let body: serde_json::Value = self
            .http
            .get(format!(
                "{}/stats/requests/{request_id}",
                self.primary_url()
            ))
            .send()
            .await
            .expect("primary stats")
            .json()
            .await
            .expect("json");
        body["hrana_requests"].as_u64().expect("count")
    }

    /// Runs SQL on the primary directly (test setup and checks).
    pub async fn sql(
        &self,
        sql: &str,
        args: Vec<qr_primary::client::Value>,
    ) -> Vec<Vec<qr_primary::client::Value>> {
        self.primary_client()
            .query(sql, args)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }

    /// Adds `n` members of `issue` straight to the primary (new users, of
    /// `country` if given), behind the issue's counter object's back.
    pub async fn insert_members(&self, issue: &str, n: usize, country: Option<&str>) {
        use qr_primary::client::{text, Value};
        for _ in 0..n {
            let user = uuid::Uuid::new_v4().to_string();
            self.sql(
                "INSERT INTO users (id, country) VALUES (?, ?)",
                vec![text(user.as_str()), country.map_or(Value::Null, text)],
            )
            .await;
            self.sql(
                "INSERT INTO user_issues (id, user_id, issue_id) VALUES (?, ?, ?)",
                vec![
                    text(uuid::Uuid::new_v4().to_string()),
                    text(user.as_str()),
                    text(issue),
                ],
            )
            .await;
        }
    }
}

/// How long an idle Durable Object is left alone to be evicted (local
/// workerd evicts after about 10 s idle).
pub const IDLE_EVICTION: Duration = Duration::from_secs(15);

/// How `wrangler dev` is started, kept to start it again on the same state.
struct WorkerSpec {
    config: PathBuf,
    port: u16,
    inspector: u16,
    primary_url: String,
    /// `--var NAME:VALUE` arguments.
    vars: Vec<String>,
    dir: PathBuf,
}

impl WorkerSpec {
    fn spawn(&self) -> Proc {
        let mut cmd = Command::new(root().join("node_modules/.bin/wrangler"));
        cmd.arg("dev")
            .arg("--config")
            .arg(&self.config)
            .args([
                "--local",
                "--ip",
                "127.0.0.1",
                "--port",
                &self.port.to_string(),
            ])
            .args([
                "--inspector-ip",
                "127.0.0.1",
                "--inspector-port",
                &self.inspector.to_string(),
            ])
            .args([
                "--show-interactive-dev-session=false",
                "--test-scheduled",
                "--log-level",
                "warn",
            ])
            .arg("--persist-to")
            .arg(self.dir.join("wrangler-state"))
            .args(["--var", &format!("LIBSQL_URL:{}", self.primary_url)])
            .args(&self.vars)
            .current_dir(&self.dir)
            .env("WRANGLER_SEND_METRICS", "false")
            .env("WRANGLER_SEND_ERROR_REPORTS", "false")
            .env("CLOUDFLARE_CF_FETCH_ENABLED", "false")
            .env("WRANGLER_LOG_PATH", self.dir.join("wrangler-logs"))
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        spawn("wrangler dev", &mut cmd)
    }
}

/// The test default of `RATE_LIMITS`: high enough not to get in other
/// tests' way. A test app with a small policy of its own gives this plus
/// that policy (`format!("{RATE_LIMITS},bot=20/60")`).
pub const RATE_LIMITS: &str = "reads=100000/60,writes=100000/60,create=100000/60,live=100000/60";

/// The test defaults for vars not given in `vars`, then `vars`, as
/// `--var NAME:VALUE` arguments.
fn worker_vars(vars: &[(&str, &str)]) -> Vec<String> {
    let defaults = [
        ("RATE_LIMITS", RATE_LIMITS),
        ("CLIENT_IP_HEADER", CLIENT_IP_HEADER),
    ];
    defaults
        .iter()
        .filter(|(name, _)| !vars.iter().any(|(n, _)| n == name))
        .chain(vars.iter())
        .flat_map(|(name, value)| ["--var".to_owned(), format!("{name}:{value}")])
        .collect()
}

/// A response as the tests look at it.
pub struct Reply {
    pub status: reqwest::StatusCode,
    /// The `qr_session` cookie it set, if any.
    pub cookie: Option<String>,
    /// Every `Set-Cookie` header.
    pub set_cookies: Vec<String>,
    pub location: Option<String>,
    pub headers: reqwest::header::HeaderMap,
    /// The JSON body (`Null` if there is none).
    pub body: serde_json::Value,
}

impl TestApp {
    /// One request, with an optional cookie and JSON body.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        cookie: Option<&str>,
        body: Option<serde_json::Value>,
    ) -> Reply {
        let mut rb = self.request(method, path);
        if let Some(c) = cookie {
            rb = rb.header("Cookie", c);
        }
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.expect("send");
        let headers = r.headers().clone();
        let set_cookies = headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        let location = headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Reply {
            status: r.status(),
            cookie: session_cookie(&headers),
            set_cookies,
            location,
            headers,
            body: r.json().await.unwrap_or(serde_json::Value::Null),
        }
    }
}

/// Fixtures: rows no other case touches, written straight to the primary.
impl TestApp {
    /// A new issue (category `community`); its id.
    pub async fn fresh_issue(&self, name: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.sql(
            "INSERT INTO issues (id, name, category) VALUES (?, ?, 'community')",
            vec![
                qr_primary::client::text(id.as_str()),
                qr_primary::client::text(name),
            ],
        )
        .await;
        id
    }

    /// A new organisation; its id.
    pub async fn fresh_organisation(&self, name: &str) -> String {
        let id = uuid::Uuid::new_v4().to_string();
        self.sql(
            "INSERT INTO organisations (id, name) VALUES (?, ?)",
            vec![
                qr_primary::client::text(id.as_str()),
                qr_primary::client::text(name),
            ],
        )
        .await;
        id
    }

    /// Holds `organisation` responsible for `issue`.
    pub async fn link_organisation(&self, issue: &str, organisation: &str) {
        self.sql(
            "INSERT INTO issue_organisation (id, issue_id, organisation_id) VALUES (?, ?, ?)",
            vec![
                qr_primary::client::text(uuid::Uuid::new_v4().to_string()),
                qr_primary::client::text(issue),
                qr_primary::client::text(organisation),
            ],
        )
        .await;
    }
}

/// An integer the primary returned.
pub fn int(v: &qr_primary::client::Value) -> i64 {
    match v {
        qr_primary::client::Value::Integer { value } => *value,
        other => panic!("not an integer: {other:?}"),
    }
}

/// The `name=value` of the session cookie a response sets, if any (not
/// the one that clears it).
pub fn session_cookie(headers: &reqwest::header::HeaderMap) -> Option<String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with("qr_session=") && !c.starts_with("qr_session=;"))
        .map(|c| c.split(';').next().unwrap_or_default().to_owned())
}

/// Copies the Worker bundle `cargo xtask build-worker --bench` left in `build/`
/// into `dir` (holding xtask's build lock shared, so no build from this
/// checkout is half way through), and returns the copy's `shim.mjs`: a
/// build started while the tests run cannot change what they run.
fn copy_bundle(dir: &Path, chosen: Option<PathBuf>) -> PathBuf {
    // Benchmarks run other builds (Builder::bundle, or for the bundle
    // benchmark QR_BUNDLE_DIR: a build/ dir).
    let chosen = chosen.or_else(|| std::env::var_os("QR_BUNDLE_DIR").map(PathBuf::from));
    let build = chosen.clone().unwrap_or_else(|| root().join("build"));
    let shim = build.join("worker/shim.mjs");
    assert!(
        shim.exists(),
        "{} is missing: run `cargo xtask build-worker --bench` (cargo xtask test does)",
        shim.display()
    );
    // The tests call the benchmark switches too: the development bundle.
    let bundle = std::fs::read_to_string(build.join("bundle.txt")).unwrap_or_default();
    assert!(
        chosen.is_some() || bundle.trim() == "development",
        "build/ holds the {:?} bundle: run `cargo xtask build-worker --bench` (cargo xtask test does)",
        bundle.trim()
    );
    let _ = std::fs::create_dir_all(root().join("target"));
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(root().join("target/worker-build.lock"))
        .expect("the build lock");
    lock.lock_shared().expect("lock the build");
    copy_dir(&build, &dir.join("build")).expect("copy the bundle");
    dir.join("build/worker/shim.mjs")
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// wrangler.toml for tests: no build step, `main` pointing at the bundle,
/// and the web client's assets at the repository's `web/` (the config is
/// written elsewhere, and wrangler resolves paths from the config's folder).
pub fn test_config(toml: &str, shim: &Path) -> String {
    let mut out = String::new();
    let mut section = "";
    for line in toml.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            section = trimmed;
        }
        if section == "[build]" {
            continue;
        }
        if trimmed.starts_with("main = ") {
            out.push_str(&format!("main = {:?}\n", shim.display().to_string()));
            continue;
        }
        if section == "[assets]" && trimmed.starts_with("directory = ") {
            let web = root().join("web");
            out.push_str(&format!("directory = {:?}\n", web.display().to_string()));
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `toml` without its `[assets]` section. Under `wrangler dev` (4.86, its
/// miniflare 4.20260426) a Worker with static assets answers
/// `/cdn-cgi/handler/scheduled` with a 500 "exception": the request reaches
/// the assets' proxy worker, which has no `scheduled` handler (miniflare
/// issue 9882, fixed upstream later). Cron triggers in production call the
/// Worker itself, so a test of them runs the Worker without assets.
pub fn without_assets(toml: String) -> String {
    let mut out = String::new();
    let mut in_assets = false;
    for line in toml.lines() {
        let trimmed = line.trim_start();
        if trimmed.starts_with('[') {
            in_assets = trimmed == "[assets]";
        }
        if !in_assets {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A listener that accepts connections and never answers: a hung primary.
pub struct BlackHole {
    pub addr: SocketAddr,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl BlackHole {
    pub fn on_port(port: u16) -> BlackHole {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("bind black hole");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                match listener.accept() {
                    Ok((socket, _)) => held.push(socket),
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        BlackHole { addr, stop }
    }
}

impl Drop for BlackHole {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub type Case<'a> = (&'static str, Pin<Box<dyn Future<Output = ()> + 'a>>);

/// Runs every case against the shared app, reports each, and fails at the
/// end naming every case that failed (a failing case does not hide others).
pub async fn run_cases(cases: Vec<Case<'_>>) {
    use futures::FutureExt;
    let mut failed = Vec::new();
    for (name, case) in cases {
        let started = Instant::now();
        match std::panic::AssertUnwindSafe(case).catch_unwind().await {
            Ok(()) => eprintln!("case {name} ... ok ({:.1?})", started.elapsed()),
            Err(_) => {
                eprintln!("case {name} ... FAILED");
                failed.push(name);
            }
        }
    }
    assert!(failed.is_empty(), "failed cases: {failed:?}");
}
