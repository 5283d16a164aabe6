//! Faults under load, the longer run: more sessions than the test and
//! longer phases around the same faults (the primary SIGKILLed for 20 s and
//! started again on the same file; workerd SIGKILLed and the stack started
//! again on the same data). Prints what the clients were told and what the
//! primary holds afterwards (`tests/common/faults.rs`), and fails if
//! anything acknowledged or queued was lost or duplicated, a count is off,
//! or a read hung. `--quick`: a few seconds per phase, a 5 s outage.

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support.rs"]
mod support;

use std::time::Duration;

use common::faults::{self, Plan};
use common::TestApp;

#[tokio::main]
async fn main() {
    let args = support::args();
    let plan = if args.quick {
        Plan {
            sessions: 6,
            issues: 4,
            think: Duration::from_millis(100),
            settle: Duration::from_secs(2),
            outage: Duration::from_secs(5),
        }
    } else {
        Plan {
            sessions: 32,
            issues: 16,
            think: Duration::from_millis(100),
            settle: Duration::from_secs(15),
            outage: Duration::from_secs(20),
        }
    };
    eprintln!("faults: starting the stack; plan {plan:?}");
    let mut app = TestApp::start().await;
    let report = faults::run(&mut app, &plan).await;
    let verdict = if report.clean() {
        format!(
            "Nothing acknowledged or queued was lost or applied twice, every count matched its members, no read hung; {} queued joins and leaves were overtaken by newer ones of the same pair and left unapplied, as the ordering rule says.",
            report.superseded
        )
    } else {
        "The run was NOT clean: see the table (lost, duplicated, count mismatches, hung)."
            .to_owned()
    };
    let body = format!(
        "### Faults under load\n\n\
         {} sessions, each a request every {:?} or so (half reads of details, lists and feeds, a quarter joins or leaves, a quarter posts) over {} issues: {:?} of load, the primary SIGKILLed for {:?} and started again on the same file, {:?} more, workerd SIGKILLed and the stack started again on the same data, {:?} more. Then the outbox drains and the primary is compared with every answer.\n\n{}\n\n{verdict}\n",
        plan.sessions,
        plan.think,
        plan.issues,
        plan.settle,
        plan.outage,
        plan.settle,
        plan.settle,
        faults::table(&plan, &report),
    );
    support::publish("faults", &body, args.write.as_deref());
    // Stop the stack before a failing exit (`exit` runs no destructors).
    drop(app);
    if !report.clean() {
        eprintln!("faults: the run was not clean: {report:#?}");
        std::process::exit(1);
    }
}
