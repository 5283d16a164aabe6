//! An acknowledged write survives `kill -9` of the server process.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use qr_primary::client::{int, stmt, Client};

/// Starts the real binary on a free port and waits for its `listening:` line.
fn spawn(db: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_qr-primary"))
        .args(["serve", "--listen", "127.0.0.1:0", "--db"])
        .arg(db)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn qr-primary");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read");
    let url = line
        .strip_prefix("listening: ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
        .to_owned();
    (child, url)
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn acknowledged_writes_survive_kill_9() {
    let dir = tempfile::tempdir().expect("dir");
    let db = dir.path().join("durable.db");
    let (child, url) = spawn(&db);
    let mut child = KillOnDrop(child);
    let client = Client::new(&url, None);
    client
        .execute(stmt("CREATE TABLE d (n INTEGER PRIMARY KEY)", vec![]))
        .await
        .expect("create");
    for n in 0..200 {
        client
            .execute(stmt("INSERT INTO d VALUES (?)", vec![int(n)]))
            .await
            .expect("insert acknowledged");
    }
    // SIGKILL: no shutdown path runs, nothing is flushed by the server.
    child.0.kill().expect("kill -9");
    child.0.wait().expect("reap");

    let (again, url) = spawn(&db);
    let _again = KillOnDrop(again);
    let rows = Client::new(&url, None)
        .query("SELECT count(*), sum(n) FROM d", vec![])
        .await
        .expect("count after restart");
    assert_eq!(
        format!("{:?}", rows[0]),
        format!("{:?}", vec![int(200), int((0..200).sum())])
    );
}
