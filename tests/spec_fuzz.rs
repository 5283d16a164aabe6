//! The spec is the server: schemathesis generates requests from
//! `openapi.yaml` (valid ones and ones each rule of the spec refuses) and
//! sends them to the real stack; the run fails on any 5xx, any answer the
//! spec does not describe (status, content type, body), any request the
//! spec allows that the server refuses, and any the spec refuses that the
//! server accepts. Deterministic (the same cases every run) and bounded.
//!
//! `schemathesis.toml` turns one check off for the few operations where a
//! request the spec allows can still be refused (signed cursors, ids that
//! must exist), and says why.
//!
//! schemathesis comes from the Python package registry into `target/py`
//! (`cargo xtask test` installs it; see [`SCHEMATHESIS`]); `QR_SCHEMATHESIS`
//! names another executable.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use common::{root, Seed, TestApp, CACHE_FRESH_SECS};

/// Where `cargo xtask test` installs schemathesis.
const SCHEMATHESIS: &str = "target/py/bin/schemathesis";
/// Cases per operation and phase.
const EXAMPLES: &str = "25";

fn schemathesis() -> PathBuf {
    let bin = std::env::var_os("QR_SCHEMATHESIS")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(SCHEMATHESIS));
    assert!(
        bin.exists(),
        "{} is missing: `cargo xtask test` installs it, or run \
         `python3 -m venv target/py && target/py/bin/pip install schemathesis==4.32.5`",
        bin.display()
    );
    bin
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_is_the_one_the_spec_describes() {
    let bin = schemathesis();
    // WhatsApp's Graph API, for the one-time codes phone linking sends.
    let graph = common::fake_api::FakeApi::start().await;
    // Every secret set, so that operator and webhook routes are on (and
    // answer 401 without their credentials rather than 403 "off").
    let app = TestApp::start_configured(
        Seed::Demo,
        CACHE_FRESH_SECS,
        &[
            ("BOT_TOKEN", "spec-fuzz-bot-token-0123456789"),
            ("WHATSAPP_APP_SECRET", "spec-fuzz-whatsapp-secret"),
            ("WHATSAPP_VERIFY_TOKEN", "spec-fuzz-verify-token"),
            ("TELEGRAM_SECRET_TOKEN", "spec-fuzz-telegram-secret"),
            ("WHATSAPP_ACCESS_TOKEN", "spec-fuzz-graph-token"),
            ("WHATSAPP_PHONE_NUMBER_ID", "PN1"),
            ("WHATSAPP_API_BASE", &graph.url),
            // The production limit, so that a body at a field's longest is
            // judged by its fields, not refused whole (413).
            ("MAX_BODY_BYTES", "65536"),
        ],
    )
    .await;
    let started = Instant::now();
    let out = Command::new(&bin)
        .args(["run", "openapi.yaml", "--url", &app.url])
        // Every check: the default, and schemathesis.toml can turn one off
        // per operation (`--checks` here would override it).
        .args(["--max-examples", EXAMPLES])
        .args(["--generation-deterministic", "--workers", "1"])
        // The development-only benchmark switches are not the API.
        .args(["--exclude-path-regex", "^/__bench"])
        .args(["--request-timeout", "10", "--no-color"])
        .current_dir(root())
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "{report}\n{}\n(schemathesis took {:.1?})",
        String::from_utf8_lossy(&out.stderr),
        started.elapsed()
    );
    assert!(
        out.status.success(),
        "schemathesis found answers the spec does not describe (above)"
    );
}
