//! A child process in its own process group, stopped with the whole group:
//! SIGTERM, then SIGKILL if it is still there after five seconds, and on
//! drop too (also when a test fails). The one way the tests, the
//! benchmarks and `cargo xtask` stop what they start; only ever by the
//! process ids they started.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a group has to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

pub struct Group {
    name: &'static str,
    /// The group's leader (its stdout, if piped, is the caller's to take).
    pub child: Child,
}

impl Group {
    /// Starts `cmd` as the leader of a new process group.
    pub fn spawn(name: &'static str, cmd: &mut Command) -> std::io::Result<Group> {
        let child = cmd.process_group(0).spawn()?;
        Ok(Group { name, child })
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Sends `signal` (`-TERM`, `-KILL`, `-STOP`, ...) to the whole group.
    pub fn signal(&self, signal: &str) {
        let _ = Command::new("kill")
            .args([signal, "--", &format!("-{}", self.child.id())])
            .stderr(Stdio::null())
            .status();
    }

    /// The leader's exit status, if it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGKILL to the group, and waits for the leader.
    pub fn kill(&mut self) {
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL after [`GRACE`]; stragglers left in the group
    /// by an exited leader get SIGKILL. Returns once the leader is gone.
    pub fn stop(&mut self) {
        if self.exited().is_some() {
            self.signal("-KILL");
            return;
        }
        self.signal("-TERM");
        let deadline = Instant::now() + GRACE;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                self.signal("-KILL");
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!("{} ignored SIGTERM for {GRACE:?}; killing it", self.name);
        self.kill();
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_is_stopped_with_its_children() {
        // A shell whose child would outlive it without the group's signal.
        let mut group = Group::spawn(
            "sleeper",
            Command::new("sh")
                .args(["-c", "sleep 60 & echo $! ; wait"])
                .stdout(Stdio::piped()),
        )
        .expect("spawn");
        let mut line = String::new();
        let stdout = group.child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .expect("the child's pid");
        let grandchild = line.trim().to_owned();
        let started = Instant::now();
        group.stop();
        assert!(started.elapsed() < GRACE, "SIGTERM was enough");
        // Gone, or a zombie waiting for init to reap it.
        let running = || {
            std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                .map(|stat| !stat.contains(") Z "))
                .unwrap_or(false)
        };
        let deadline = Instant::now() + Duration::from_secs(2);
        while running() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(!running(), "the group's other process is gone too");
    }
}
