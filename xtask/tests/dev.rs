//! `cargo xtask dev` as a newcomer runs it: it brings the seeded stack up on
//! the ports and data dir it is given, prints `ready: URL` once both serve
//! (and the web client's URL), stops everything it started on SIGTERM, and
//! a second run keeps the data.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Two different free ports (both held until both are known).
fn free_ports() -> (u16, u16) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("a free port");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("address").port();
    (port(&a), port(&b))
}

/// The dev command, stopped (its whole process group) when dropped, so a
/// failing test leaves nothing running.
struct Dev {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Dev {
    fn start(port: u16, primary_port: u16, data_dir: &std::path::Path) -> Dev {
        let mut child = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["dev", "--port", &port.to_string()])
            .args(["--primary-port", &primary_port.to_string()])
            .arg("--data-dir")
            .arg(data_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .process_group(0)
            .spawn()
            .expect("start cargo xtask dev");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("[dev] {line}");
                let _ = tx.send(line);
            }
        });
        Dev { child, lines }
    }

    /// Waits for the `ready:` line; its URL.
    fn ready(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(420);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("cargo xtask dev exited before it was ready ({status})");
            }
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
                if let Some(url) = line.strip_prefix("ready: ") {
                    return url.trim().to_owned();
                }
            }
        }
        panic!("cargo xtask dev printed no ready line in time");
    }

    /// Waits for the `web client:` line (printed after `ready:`); its URL.
    fn web_client(&mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(500)) {
                if let Some(url) = line.strip_prefix("web client: ") {
                    return url.trim().to_owned();
                }
            }
        }
        panic!("cargo xtask dev printed no web client line after its ready line");
    }

    /// SIGTERM to the dev command alone (not its group): it must stop what
    /// it started itself.
    fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("cargo xtask dev did not stop on SIGTERM");
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGTERM first: the dev command stops the primary and wrangler
            // it started (each in a process group of its own, which a kill
            // of this group would miss), then SIGKILL what is left.
            let _ = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = self.child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{}", self.child.id())])
                .status();
            let _ = self.child.wait();
        }
    }
}

fn listening(port: u16) -> bool {
    TcpStream::connect_timeout(
        &std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        Duration::from_millis(500),
    )
    .is_ok()
}

#[test]
fn dev_serves_the_seeded_stack_stops_on_sigterm_and_keeps_its_data() {
    let data = tempfile_dir();
    let (port, primary_port) = free_ports();
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();

    let mut dev = Dev::start(port, primary_port, &data);
    let url = dev.ready();
    assert_eq!(url, format!("http://127.0.0.1:{port}"));
    let health = agent.get(&format!("{url}/health")).call().expect("health");
    assert_eq!(health.status(), 200);
    // The web client, from the repository's web/, at the URL it prints.
    let web = dev.web_client();
    assert_eq!(web, format!("{url}/"));
    let page = agent.get(&web).call().expect("the web client");
    assert_eq!(page.content_type(), "text/html");
    let csp = page
        .header("Content-Security-Policy")
        .unwrap_or_default()
        .to_owned();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    let html = page.into_string().expect("the page");
    assert!(html.contains("src=\"/js/main.js\""), "{html}");
    let list: serde_json::Value = agent
        .get(&format!("{url}/api/issues?limit=100"))
        .call()
        .expect("list")
        .into_json()
        .expect("json");
    let seeded = list["items"].as_array().map_or(0, Vec::len);
    assert!(seeded >= 15, "the demo seed is loaded: {seeded} issues");
    let created: serde_json::Value = agent
        .post(&format!("{url}/api/issues"))
        .send_json(serde_json::json!({
            "name": "Kept between two dev runs",
            "category": "community",
        }))
        .expect("create")
        .into_json()
        .expect("json");
    let id = created["id"]
        .as_str()
        .expect("the new issue's id")
        .to_owned();

    dev.terminate();
    assert!(
        !listening(port),
        "wrangler dev still listens after the stop"
    );
    assert!(
        !listening(primary_port),
        "the primary still listens after the stop"
    );
    assert!(
        data.join("primary.db").exists(),
        "the data dir holds the database"
    );

    // A second run on the same data: the issue is still there.
    let mut dev = Dev::start(port, primary_port, &data);
    let url = dev.ready();
    let again = agent
        .get(&format!("{url}/api/issues/{id}"))
        .call()
        .expect("the issue after a restart");
    assert_eq!(again.status(), 200);
    dev.terminate();
    let _ = std::fs::remove_dir_all(&data);
}

/// Two stacks started from one checkout at the same moment (their builds of
/// the Worker take turns): both come up.
#[test]
fn two_devs_started_at_once_both_get_ready() {
    let (a_data, b_data) = (tempfile_dir(), tempfile_dir());
    let (a_port, a_primary) = free_ports();
    let (b_port, b_primary) = free_ports();
    let mut a = Dev::start(a_port, a_primary, &a_data);
    let mut b = Dev::start(b_port, b_primary, &b_data);
    let (a_url, b_url) = (a.ready(), b.ready());
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build();
    for url in [&a_url, &b_url] {
        let health = agent.get(&format!("{url}/health")).call().expect("health");
        assert_eq!(health.status(), 200, "{url}");
    }
    a.terminate();
    b.terminate();
    for dir in [a_data, b_data] {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A fresh directory under the system's temp dir.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "qr-xtask-dev-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    ));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}
