//! Child processes: run to completion, or serve until stopped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::Result;

pub fn step(what: &str) {
    eprintln!("==> {what}");
}

pub fn cmd(program: impl AsRef<std::ffi::OsStr>) -> Command {
    Command::new(program)
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

/// A long-running child that printed a ready line. Dropping it stops it:
/// SIGTERM, then SIGKILL if it has not exited within five seconds.
pub struct Server {
    name: &'static str,
    child: Child,
    url: String,
}

impl Server {
    /// Starts `c` and waits (up to 60 s) for a stdout line starting with
    /// `ready_prefix`; the next word on that line is the server's URL.
    pub fn spawn(name: &'static str, c: &mut Command, ready_prefix: &str) -> Result<Self> {
        let what = describe(c);
        let mut child = c
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {name} (`{what}`): {e}"))?;
        let stdout = child.stdout.take();
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
            name,
            child,
            url: String::new(),
        };
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(url) => {
                server.url = url;
                Ok(server)
            }
            Err(_) => Err(format!(
                "{name} did not become ready within 60 s (`{what}`); see its output above"
            )),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..50 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        eprintln!("{} did not stop on SIGTERM; killing it", self.name);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Ctrl-C / SIGTERM, as something to wait on.
pub struct StopSignal(mpsc::Receiver<()>);

impl StopSignal {
    pub fn wait(&self) {
        let _ = self.0.recv();
    }
}

pub fn stop_signal() -> Result<StopSignal> {
    let (tx, rx) = mpsc::channel();
    ctrlc::set_handler(move || {
        let _ = tx.send(());
    })
    .map_err(|e| format!("cannot install the Ctrl-C handler: {e}"))?;
    Ok(StopSignal(rx))
}
