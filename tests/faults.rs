//! Faults under load (short): a mixed load of reads, joins, leaves and
//! posts from many sessions while the primary is SIGKILLed for 20 s and
//! started again on the same file, then workerd is SIGKILLed and the stack
//! started again on the same data. Nothing acknowledged or queued is lost
//! or duplicated, every count equals its members, and no read hangs. The
//! run and its checks are in `common/faults.rs`; `cargo xtask bench` runs a
//! longer one (BENCHMARKS.md).

mod common;

use std::time::Duration;

use common::faults::{self, Plan};
use common::TestApp;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_acknowledged_is_lost_when_the_primary_and_workerd_are_killed() {
    let mut app = TestApp::start().await;
    let plan = Plan {
        sessions: 12,
        issues: 6,
        think: Duration::from_millis(100),
        settle: Duration::from_secs(4),
        outage: Duration::from_secs(20),
    };
    let report = faults::run(&mut app, &plan).await;
    eprintln!("{}\n{:#?}", faults::table(&plan, &report), report.examples);
    assert!(report.clean(), "{report:#?}");
    assert!(
        report.queued > 0 && report.acknowledged > 0,
        "the load wrote both directly and through the outbox: {report:#?}"
    );
    assert!(
        report.outage_reads_served > 0,
        "the cache served reads during the outage: {report:#?}"
    );
}
