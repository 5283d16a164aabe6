//! Child processes: run to completion, or serve until stopped.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use qr_procgroup::Group;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::Result;

pub fn step(what: &str) {
    eprintln!("==> {what}");
}

pub fn cmd(program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new(program);
    for name in run_vars() {
        c.env_remove(name);
    }
    c
}

/// The variables `cargo run` set for xtask itself (its package's name,
/// version, manifest dir...). A child cargo that inherited them would hand
/// them to build scripts that watch them (`rerun-if-env-changed`), and
/// those would rebuild, with their dependents, on every run. User settings
/// (`CARGO_HOME`, `CARGO_TARGET_DIR`, `CARGO_INCREMENTAL`...) are kept.
fn run_vars() -> impl Iterator<Item = std::ffi::OsString> {
    const SET_BY_RUN: [&str; 6] = [
        "CARGO_MANIFEST_DIR",
        "CARGO_MANIFEST_PATH",
        "CARGO_CRATE_NAME",
        "CARGO_BIN_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_RUSTC_CURRENT_DIR",
    ];
    std::env::vars_os().map(|(k, _)| k).filter(|k| {
        k.to_str()
            .is_some_and(|k| k.starts_with("CARGO_PKG_") || SET_BY_RUN.contains(&k))
    })
}

fn describe(c: &Command) -> String {
    let mut s = c.get_program().to_string_lossy().into_owned();
    for a in c.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command with inherited output; an error names the command.
pub fn run(c: &mut Command) -> Result {
    let what = describe(c);
    let status = c
        .status()
        .map_err(|e| format!("cannot start `{what}`: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{what}` failed ({status})"))
    }
}

/// A long-running child, in its own process group (the shared
/// `qr-procgroup` crate, which the tests use too). Dropping it stops the
/// group: SIGTERM, then SIGKILL if it has not exited within five seconds.
pub struct Server {
    group: Group,
    url: String,
}

impl Server {
    /// Starts `c` and waits (up to 60 s, or until `stop`) for a stdout line
    /// starting with `ready_prefix`; the next word on that line is the
    /// server's URL.
    pub fn spawn(
        name: &'static str,
        c: &mut Command,
        ready_prefix: &str,
        stop: &StopSignal,
    ) -> Result<Self> {
        let what = describe(c);
        let mut group = Group::spawn(name, c.stdout(Stdio::piped()))
            .map_err(|e| format!("cannot start {name} (`{what}`): {e}"))?;
        let stdout = group.child.stdout.take();
        let (tx, rx) = mpsc::channel();
        let prefix = ready_prefix.to_owned();
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut sent = false;
            for line in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
                if !sent {
                    if let Some(rest) = line.strip_prefix(&prefix) {
                        let url = rest.split_whitespace().next().unwrap_or("").to_owned();
                        let _ = tx.send(url);
                        sent = true;
                        continue;
                    }
                }
                println!("[{name}] {line}");
            }
        });
        let mut server = Server {
            group,
            url: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            server.still_starting(stop)?;
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(url) => {
                    server.url = url;
                    return Ok(server);
                }
                // Its output closed without the line: wait for it to exit.
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
        }
        Err(format!(
            "{name} did not become ready within 60 s (`{what}`); see its output above"
        ))
    }

    /// Starts `c` and waits (up to `timeout`, or until `stop`) until `url`
    /// + `/health` answers 200.
    pub fn spawn_until_healthy(
        name: &'static str,
        c: &mut Command,
        url: &str,
        timeout: Duration,
        stop: &StopSignal,
    ) -> Result<Self> {
        let what = describe(c);
        let group =
            Group::spawn(name, c).map_err(|e| format!("cannot start {name} (`{what}`): {e}"))?;
        let mut server = Server {
            group,
            url: url.to_owned(),
        };
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            server.still_starting(stop)?;
            if health_status(url) == Some(200) {
                return Ok(server);
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        server.group.stop();
        Err(format!(
            "{name} did not answer {url}/health within {} s (`{what}`)",
            timeout.as_secs()
        ))
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// An error if a stop was asked for or the server exited while it was
    /// starting.
    fn still_starting(&mut self, stop: &StopSignal) -> Result {
        if stop.requested() {
            return Err(format!("stopped while {} was starting", self.name()));
        }
        match self.exited() {
            Some(status) => Err(format!(
                "{} exited early ({status}); see its output above",
                self.name()
            )),
            None => Ok(()),
        }
    }

    /// How the server ended, if it has.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.group.exited()
    }

    pub fn name(&self) -> &'static str {
        self.group.name()
    }
}

/// The status code of `GET {base}/health`, if anything answered.
pub fn health_status(base: &str) -> Option<u16> {
    use std::io::{Read, Write};
    let hostport = base.strip_prefix("http://")?.trim_end_matches('/');
    let addr: std::net::SocketAddr = hostport.parse().ok()?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: {hostport}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).ok()?;
    std::str::from_utf8(&head[9..12]).ok()?.parse().ok()
}

/// Ctrl-C / SIGTERM, as something to wait on or to look at.
pub struct StopSignal {
    rx: mpsc::Receiver<()>,
    seen: Arc<AtomicBool>,
}

impl StopSignal {
    /// Whether a stop was asked for.
    pub fn requested(&self) -> bool {
        self.seen.load(Ordering::SeqCst)
    }

    /// Waits up to `d`; true once a stop was asked for.
    pub fn wait_for(&self, d: Duration) -> bool {
        let _ = self.rx.recv_timeout(d);
        self.requested()
    }
}

/// Set once Ctrl-C or SIGTERM arrived (for waits that hold no
/// [`StopSignal`], such as the Worker's build lock).
static STOP_REQUESTED: AtomicBool = AtomicBool::new(false);

/// Whether Ctrl-C or SIGTERM arrived since [`stop_signal`] was installed.
pub fn stop_requested() -> bool {
    STOP_REQUESTED.load(Ordering::SeqCst)
}

pub fn stop_signal() -> Result<StopSignal> {
    let (tx, rx) = mpsc::channel();
    let seen = Arc::new(AtomicBool::new(false));
    let flag = seen.clone();
    ctrlc::set_handler(move || {
        flag.store(true, Ordering::SeqCst);
        STOP_REQUESTED.store(true, Ordering::SeqCst);
        let _ = tx.send(());
    })
    .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    Ok(StopSignal { rx, seen })
}
