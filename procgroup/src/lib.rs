//! A child process in its own process group, stopped with the whole group:
//! SIGTERM, then SIGKILL if it is still there after five seconds, and on
//! drop too (also when a test fails). The one way the tests, the
//! benchmarks and `cargo xtask` stop what they start; only ever by the
//! process ids they started.
//!
//! A process that is killed (a test run stopped by a timeout, SIGKILL)
//! drops nothing, so each group also has a watchdog: a shell that waits
//! for its standard input to close, which the kernel does when this
//! process ends however it ends, and then stops the group. A group stopped
//! the usual way stops its watchdog first.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long a group has to exit after SIGTERM before SIGKILL.
const GRACE: Duration = Duration::from_secs(5);

pub struct Group {
    name: &'static str,
    /// The group's leader (its stdout, if piped, is the caller's to take).
    pub child: Child,
    /// `None` where `/proc` cannot say when the leader started.
    watchdog: Option<Child>,
}

impl Group {
    /// Starts `cmd` as the leader of a new process group, watched.
    pub fn spawn(name: &'static str, cmd: &mut Command) -> std::io::Result<Group> {
        let child = cmd.process_group(0).spawn()?;
        let watchdog = start_time(child.id()).and_then(|at| watchdog(child.id(), &at).ok());
        Ok(Group {
            name,
            child,
            watchdog,
        })
    }

    /// Stops the watchdog: this process stops the group itself.
    fn unwatch(&mut self) {
        if let Some(mut watchdog) = self.watchdog.take() {
            let _ = watchdog.kill();
            let _ = watchdog.wait();
        }
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
        self.unwatch();
        self.signal("-KILL");
        let _ = self.child.wait();
    }

    /// SIGTERM, then SIGKILL after [`GRACE`]; stragglers left in the group
    /// by an exited leader get SIGKILL. Returns once the leader is gone.
    pub fn stop(&mut self) {
        self.unwatch();
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

/// When process `pid` started (field 22 of `/proc/PID/stat`, in clock ticks
/// since boot): with its id, what tells it from a later process that got
/// the same id.
fn start_time(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; it ends at the last ')'.
    let after_name = stat.rsplit_once(") ")?.1;
    after_name.split(' ').nth(19).map(str::to_owned)
}

/// The watchdog of the group led by `leader`, which started at `started`
/// ([`start_time`]). Once its standard input closes it stops the group the
/// way [`Group::stop`] does, if the leader is still that process; in a
/// process group of its own, so a signal to this process's group does not
/// take it down first.
fn watchdog(leader: u32, started: &str) -> std::io::Result<Child> {
    let grace = GRACE.as_secs();
    let script = format!(
        "read _; \
         now=$(sed 's/.*) //' /proc/{leader}/stat 2>/dev/null | cut -d' ' -f20); \
         [ \"$now\" = '{started}' ] || exit 0; \
         kill -TERM -{leader} 2>/dev/null; \
         i=0; while [ $i -lt {grace} ] && kill -0 -{leader} 2>/dev/null; do sleep 1; i=$((i+1)); done; \
         kill -KILL -{leader} 2>/dev/null"
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
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

    /// Waits up to 3 s for `group`'s leader to exit.
    fn exits(group: &mut Group) -> bool {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if group.exited().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    #[test]
    fn a_group_is_stopped_when_its_owner_dies_without_stopping_it() {
        let mut group = Group::spawn("sleeper", Command::new("sleep").arg("60")).expect("spawn");
        let watchdog = group
            .watchdog
            .as_mut()
            .expect("a watchdog (Linux has /proc)");
        // What the kernel does when this process dies: the pipe closes.
        drop(watchdog.stdin.take());
        assert!(exits(&mut group), "the watchdog stopped the group");
    }

    #[test]
    fn a_watchdog_leaves_alone_a_process_that_reused_the_id() {
        let mut group = Group::spawn("sleeper", Command::new("sleep").arg("60")).expect("spawn");
        group.unwatch();
        // A watchdog that remembers another start time for this id.
        let mut other = watchdog(group.child.id(), "1").expect("spawn a watchdog");
        drop(other.stdin.take());
        other.wait().expect("the watchdog ends");
        assert!(group.exited().is_none(), "not the process it watched");
        group.stop();
    }

    #[test]
    fn a_group_stopped_as_usual_stops_its_watchdog() {
        let mut group = Group::spawn("sleeper", Command::new("sleep").arg("60")).expect("spawn");
        let watchdog = group.watchdog.as_ref().expect("a watchdog").id();
        group.stop();
        assert!(
            std::fs::read_to_string(format!("/proc/{watchdog}/stat"))
                .map(|stat| stat.contains(") Z "))
                .unwrap_or(true),
            "the watchdog is gone"
        );
    }
}
