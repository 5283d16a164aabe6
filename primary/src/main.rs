//! `qr-primary`: the local libSQL primary for Quiet Riots.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use qr_primary::client::Client;
use qr_primary::http::HttpConfig;
use qr_primary::migrate::{self, Migrator, State};
use qr_primary::seed;
use qr_primary::server::{self, ServeConfig};
use qr_primary::streams::Limits;

/// The local libSQL primary for Quiet Riots.
///
/// Serves a libSQL database file over Hrana (HTTP), the protocol Turso
/// speaks, so the Worker and any libSQL client use it exactly as they use
/// Turso. `migrate` and `seed` work against any Hrana URL, Turso included.
///
/// Typical start:
///   qr-primary serve --db .data/primary.db
///   qr-primary migrate up
///   qr-primary seed demo
#[derive(Parser)]
#[command(name = "qr-primary", version, verbatim_doc_comment)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args)]
struct Target {
    /// Hrana URL of the database (http://, https:// or libsql://).
    #[arg(
        long,
        global = true,
        env = "LIBSQL_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    url: String,
    /// Auth token for the database (Turso: `turso db tokens create NAME`).
    #[arg(long, global = true, env = "LIBSQL_AUTH_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

impl Target {
    fn client(&self) -> Client {
        Client::new(&self.url, self.token.clone())
    }
}

#[derive(Subcommand)]
enum Command {
    /// Serve a database file over Hrana/HTTP (/v2/pipeline, /v3/pipeline, /v3/cursor).
    Serve {
        /// Address to listen on. Without a token only loopback addresses are allowed.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: SocketAddr,
        /// Database file (created if missing; WAL files sit next to it).
        #[arg(long, default_value = ".data/primary.db")]
        db: PathBuf,
        /// Require `Authorization: Bearer TOKEN` on every Hrana request.
        #[arg(long, env = "QR_PRIMARY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Most streams open at once; more get 503 STREAMS_EXHAUSTED.
        #[arg(long, default_value_t = 1024)]
        max_streams: usize,
        /// Seconds an idle stream lives before it is closed and rolled back.
        #[arg(long, default_value_t = 10)]
        stream_expiry_secs: u64,
        /// Largest request body, in bytes.
        #[arg(long, default_value_t = 10 * 1024 * 1024)]
        max_body_bytes: usize,
        /// Wait this long before handling each Hrana request: stands for the
        /// distance from the edge to the primary's region in benchmarks.
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
    },
    /// Apply, revert or list schema migrations.
    Migrate {
        #[command(subcommand)]
        action: MigrateAction,
        /// Folder of NNNN_name.sql / NNNN_name.down.sql files.
        #[arg(long, global = true, default_value = "migrations")]
        dir: PathBuf,
        #[command(flatten)]
        target: Target,
    },
    /// Load data: the small demo set, or a large synthetic set for benchmarks.
    Seed {
        #[command(subcommand)]
        set: SeedSet,
        #[command(flatten)]
        target: Target,
    },
}

#[derive(Subcommand)]
enum MigrateAction {
    /// Apply every pending migration, in order, each in one transaction.
    Up,
    /// Revert the last N applied migrations (default 1), newest first.
    Down {
        #[arg(default_value_t = 1)]
        n: usize,
    },
    /// List migrations: applied (with time), pending, changed or missing.
    Status,
}

#[derive(Subcommand)]
enum SeedSet {
    /// About 19 issues with their organisations, actions, synonyms, users,
    /// members and posts. Skipped when the database already has issues.
    Demo,
    /// A large deterministic set (the same --seed gives the same data).
    Synthetic(seed::SyntheticArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<(), Box<dyn std::error::Error>> {
    match cli.command {
        Command::Serve {
            listen,
            db,
            token,
            max_streams,
            stream_expiry_secs,
            max_body_bytes,
            delay_ms,
        } => {
            if let Some(parent) = db.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent)
                    .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
            }
            let token = token.filter(|t| !t.is_empty());
            let auth = token.is_some();
            let running = server::start(ServeConfig {
                listen,
                db: db.clone(),
                http: HttpConfig {
                    token,
                    max_body_bytes,
                    delay: Duration::from_millis(delay_ms),
                    ..HttpConfig::default()
                },
                limits: Limits {
                    max_streams,
                    idle_expiry: Duration::from_secs(stream_expiry_secs),
                    ..Limits::default()
                },
            })
            .await?;
            if auth {
                tracing::info!("Hrana requests need `Authorization: Bearer <token>`");
            } else {
                tracing::warn!(
                    "no token set: accepting unauthenticated requests, so listening on loopback only"
                );
            }
            // One line on stdout that scripts wait for.
            println!("listening: {} (db {})", running.url(), db.display());
            shutdown_signal().await;
            tracing::info!("stopping");
            running.stop().await?;
            Ok(())
        }
        Command::Migrate {
            action,
            dir,
            target,
        } => {
            let migrations = migrate::load_dir(&dir)?;
            let migrator = Migrator::new(target.client(), migrations);
            match action {
                MigrateAction::Up => {
                    let done = migrator
                        .up(|m| println!("applied {:04}_{}", m.id, m.name))
                        .await?;
                    if done.is_empty() {
                        println!("up to date");
                    }
                }
                MigrateAction::Down { n } => {
                    let done = migrator
                        .down(n, |m| println!("reverted {:04}_{}", m.id, m.name))
                        .await?;
                    if done.is_empty() {
                        println!("nothing to revert");
                    }
                }
                MigrateAction::Status => {
                    for (id, name, state) in migrator.status().await? {
                        let state = match state {
                            State::Applied { at } => format!("applied {at}"),
                            State::Pending => "pending".into(),
                            State::Changed => "CHANGED since applied".into(),
                            State::Missing => "MISSING file".into(),
                        };
                        println!("{id:04}_{name}  {state}");
                    }
                }
            }
            Ok(())
        }
        Command::Seed { set, target } => {
            let client = target.client();
            match set {
                SeedSet::Demo => match seed::demo(&client).await? {
                    seed::DemoOutcome::Loaded(n) => println!("demo set loaded ({n} statements)"),
                    seed::DemoOutcome::Skipped(n) => {
                        println!("demo set skipped: the database already has {n} issues")
                    }
                },
                SeedSet::Synthetic(args) => {
                    let counts =
                        seed::synthetic(&client, &args, |line| eprintln!("{line}")).await?;
                    println!("synthetic set loaded: {counts}");
                }
            }
            Ok(())
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
