//! The spec is the server: schemathesis generates requests from
//! `openapi.yaml` (valid ones and ones each rule of the spec refuses) and
//! sends them to the real stack; the run fails on any 5xx, any answer the
//! spec does not describe (status, content type, body), any request the
//! spec allows that the server refuses, and any the spec refuses that the
//! server accepts. Deterministic (the same cases every run) and bounded.
//!
//! `schemathesis.toml` gives the operator and bot routes their tokens, mixes
//! ids of the demo set into generated ones, and loads
//! `tests/spec_fuzz_hooks.py`, which drops exactly the refusals of
//! spec-valid requests that no schema can state (a cursor this server did
//! not sign, ids that must exist), each recognised by the field the 400
//! names.
//!
//! Rules whose bounds live inside a pattern (lengths counted after
//! trimming, digits counted between separators) are also probed at their
//! edges first: each value is sent to the server and judged by the spec
//! (with the validator schemathesis uses), and the two must agree.
//!
//! schemathesis comes from the Python package registry into `target/py`
//! (`cargo xtask test` installs it; see [`SCHEMATHESIS`]); `QR_SCHEMATHESIS`
//! names another executable.

mod common;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use common::{root, TestApp, ADMIN_TOKEN};

/// Where `cargo xtask test` installs schemathesis.
const SCHEMATHESIS: &str = "target/py/bin/schemathesis";
/// Cases per operation and phase.
const EXAMPLES: &str = "100";
/// The same cases every run (`QR_FUZZ_SEED` picks others, to explore).
const SEED: &str = "20261203";
const BOT_TOKEN: &str = "spec-fuzz-bot-token-0123456789";

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
    let app = TestApp::builder()
        .var("BOT_TOKEN", BOT_TOKEN)
        .var("WHATSAPP_APP_SECRET", "spec-fuzz-whatsapp-secret")
        .var("WHATSAPP_VERIFY_TOKEN", "spec-fuzz-verify-token")
        .var("TELEGRAM_SECRET_TOKEN", "spec-fuzz-telegram-secret")
        .var("WHATSAPP_ACCESS_TOKEN", "spec-fuzz-graph-token")
        .var("WHATSAPP_PHONE_NUMBER_ID", "PN1")
        .var("WHATSAPP_API_BASE", &graph.url)
        // The production limit, so that a body at a field's longest is
        // judged by its fields, not refused whole (413).
        .var("MAX_BODY_BYTES", "65536")
        .start()
        .await;
    demo_ids_exist(&app).await;
    let dropped = app.dir.path().join("dropped.tsv");
    let seed = std::env::var("QR_FUZZ_SEED").unwrap_or_else(|_| SEED.to_owned());
    // Another spec (a deliberately wrong copy shows the run failing).
    let spec = std::env::var("QR_FUZZ_SPEC").unwrap_or_else(|_| "openapi.yaml".to_owned());
    edges_agree(&app, &bin, &spec).await;
    a_refusal_is_as_documented(&app, &bin, &spec).await;
    let started = Instant::now();
    let out = Command::new(&bin)
        .args(["run", &spec, "--url", &app.url])
        // Every check (the default); schemathesis.toml loads the hooks.
        .args(["--max-examples", EXAMPLES])
        .args(["--seed", &seed, "--workers", "1"])
        .args(["--generation-database", "none"])
        // The development-only benchmark switches are not the API.
        .args(["--exclude-path-regex", "^/__bench"])
        .args(["--request-timeout", "10", "--no-color"])
        // The tokens schemathesis.toml sends to the routes behind them.
        .env("QR_FUZZ_ADMIN_TOKEN", ADMIN_TOKEN)
        .env("QR_FUZZ_BOT_TOKEN", BOT_TOKEN)
        // Where the hooks list the failures they drop, and why.
        .env("QR_FUZZ_DROPPED", &dropped)
        // No __pycache__ beside the hooks in the checkout.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .current_dir(root())
        .output()
        .expect("run schemathesis");
    let report = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "{report}\n{}\n(schemathesis took {:.1?})",
        String::from_utf8_lossy(&out.stderr),
        started.elapsed()
    );
    eprintln!("refusals of spec-valid requests the hooks dropped, by reason:");
    for (reason, n) in tally(&dropped) {
        eprintln!("  {n:5}  {reason}");
    }
    assert!(
        out.status.success(),
        "schemathesis found answers the spec does not describe (above)"
    );
}

/// How often each reason (the first column of the hooks' log) occurs.
fn tally(log: &std::path::Path) -> std::collections::BTreeMap<String, usize> {
    let mut counts = std::collections::BTreeMap::new();
    let text = std::fs::read_to_string(log).unwrap_or_default();
    for line in text.lines() {
        let mut columns = line.split('\t');
        let reason = columns.next().unwrap_or_default();
        let operation = columns.next().unwrap_or_default();
        *counts.entry(format!("{reason} ({operation})")).or_default() += 1;
    }
    counts
}

/// The demo rows schemathesis.toml mixes into generated ids exist here, so
/// that the run reaches them (a changed demo set fails here, not silently).
async fn demo_ids_exist(app: &TestApp) {
    let text = std::fs::read_to_string(root().join("schemathesis.toml")).expect("config");
    let config: toml::Table = text.parse().expect("schemathesis.toml");
    let mut checked = 0;
    for (name, dictionary) in config["dictionaries"].as_table().expect("dictionaries") {
        for id in dictionary["values"].as_array().expect("values") {
            let id = id.as_str().expect("an id");
            let mut found = false;
            for kind in ["issues", "organisations"] {
                let r = app
                    .get(&format!("/api/{kind}/{id}"))
                    .send()
                    .await
                    .expect("send");
                found |= r.status().is_success();
            }
            assert!(
                found,
                "schemathesis.toml's {name} names {id}, which the demo set does not have"
            );
            checked += 1;
        }
    }
    assert!(checked >= 10, "schemathesis.toml names {checked} demo ids");
}

/// The demo issue the edge probes write to.
const ISSUE: &str = "4260ce86-ca96-4d78-ba56-9ee452a5d423";

/// A request: method, path and JSON body.
type Request = (reqwest::Method, String, Option<serde_json::Value>);

/// One value of one field, in a request that is otherwise valid.
struct Probe {
    /// The field a refusal names (`details.field`).
    field: &'static str,
    /// The schema of the field in openapi.yaml, as a JSON pointer.
    schema: &'static str,
    value: String,
    method: reqwest::Method,
    path: String,
    body: Option<serde_json::Value>,
}

fn probes() -> Vec<Probe> {
    use reqwest::Method;
    use serde_json::json;
    let x = |n: usize| "x".repeat(n);
    let mut out = Vec::new();
    let mut add = |field, schema, values: Vec<String>, make: &dyn Fn(&str) -> Request| {
        for value in values {
            let (method, path, body) = make(&value);
            out.push(Probe {
                field,
                schema,
                value,
                method,
                path,
                body,
            });
        }
    };
    let issue = |v: &str| {
        (
            Method::POST,
            "/api/issues".to_owned(),
            Some(json!({"name": v, "category": "community"})),
        )
    };
    add(
        "name",
        "#/components/schemas/NewIssue/properties/name",
        vec![
            x(200),
            x(201),
            format!(" \t{}\u{2028}", x(200)),
            format!("\u{FEFF}{}", x(200)),
            format!("{}\nx", x(9)),
            "\u{200B}\u{2060}".into(),
            " a\u{202E}b".into(),
        ],
        &issue,
    );
    let described = |v: &str| {
        (
            Method::POST,
            "/api/issues".to_owned(),
            Some(json!({"name": "Edge probe", "category": "community", "description": v})),
        )
    };
    add(
        "description",
        "#/components/schemas/NewIssue/properties/description",
        vec![
            x(5000),
            x(5001),
            format!("\n{}\n", x(5000)),
            "a\r\nb\u{2029}c".into(),
            "a\tb".into(),
        ],
        &described,
    );
    let category = |v: &str| {
        (
            Method::POST,
            "/api/issues".to_owned(),
            Some(json!({"name": "Edge probe", "category": v})),
        )
    };
    add(
        "category",
        "#/components/schemas/CategoryInput",
        vec![" TransPort\t".into(), "transports".into(), "".into()],
        &category,
    );
    let post = |v: &str| {
        (
            Method::POST,
            format!("/api/issues/{ISSUE}/feed"),
            Some(json!({"content": v})),
        )
    };
    add(
        "content",
        "#/components/schemas/NewPost/properties/content",
        vec![
            x(2000),
            x(2001),
            format!("\u{2029}{}\r\n", x(2000)),
            " \n\u{00AD} ".into(),
        ],
        &post,
    );
    let synonym = |v: &str| {
        (
            Method::POST,
            format!("/api/issues/{ISSUE}/synonyms"),
            Some(json!({"term": v})),
        )
    };
    let spaced = |n: usize| format!("\t{}{}{}\n", "é".repeat(40), " ".repeat(30), "b".repeat(n));
    add(
        "term",
        "#/components/schemas/NewSynonym/properties/term",
        vec![
            "q".repeat(100),
            "q".repeat(101),
            spaced(59),
            spaced(60),
            "Ⓐ-2’s".into(),
            "a_b".into(),
        ],
        &synonym,
    );
    let action = |field: &'static str| {
        move |v: &str| {
            (
                Method::POST,
                format!("/api/issues/{ISSUE}/actions"),
                Some(json!({"title": "Edge probe", "type": "idea", field: v})),
            )
        }
    };
    add(
        "title",
        "#/components/schemas/NewAction/properties/title",
        vec![x(200), x(201)],
        &action("title"),
    );
    add(
        "time_required",
        "#/components/schemas/NewAction/properties/time_required",
        vec![x(50), x(51), format!(" {} ", x(50)), "a\nb".into()],
        &action("time_required"),
    );
    add(
        "external_url",
        "#/components/schemas/NewAction/properties/external_url",
        vec![
            format!("https://{}", x(1992)),
            format!("https://{}", x(1993)),
            format!("HTTP://{}", x(1993)),
            format!("http://{}", x(1994)),
            " https://x.org/a?b#c ".into(),
            "https:///x".into(),
            "https://x y".into(),
            "\u{200B}".into(),
        ],
        &action("external_url"),
    );
    add(
        "type",
        "#/components/schemas/ActionTypeInput",
        vec!["\u{3000}TOGETHER ".into(), "petition".into()],
        &action("type"),
    );
    let phone = |v: &str| {
        (
            Method::POST,
            "/api/me/phone".to_owned(),
            Some(json!({"phone": v})),
        )
    };
    add(
        "phone",
        "#/components/schemas/Phone",
        vec![
            "+123456789012345".into(),
            "+1234567890123456".into(),
            "+1234567".into(),
            "+123456".into(),
            "+1 (415) 555-2671".into(),
            "+44 (0)20 7946 0958".into(),
            "+(44) 20 7946 0958".into(),
            "+44 20 7946 0958 ".into(),
            format!("+44{}", " 1".repeat(19)),
        ],
        &phone,
    );
    let code = |v: &str| {
        (
            Method::POST,
            "/api/me/phone/verify".to_owned(),
            Some(json!({"phone": "+447700900123", "code": v})),
        )
    };
    add(
        "code",
        "#/components/schemas/OtpCode",
        vec![" 123456\n".into(), "12345".into(), "1234567".into()],
        &code,
    );
    let listed = |v: &str| (Method::GET, format!("/api/issues?category={v}"), None);
    add(
        "category",
        "#/components/schemas/CategoryParameter",
        vec!["HEALTH".into(), "".into()],
        &listed,
    );
    out
}

/// Each probe is sent; the server's verdict (accepted, or refused naming
/// the field) must be the spec's.
async fn edges_agree(app: &TestApp, schemathesis: &std::path::Path, spec: &str) {
    let probes = probes();
    let judged: Vec<(&str, serde_json::Value)> = probes
        .iter()
        .map(|p| (p.schema, serde_json::Value::from(p.value.as_str())))
        .collect();
    let spec = spec_verdicts(schemathesis, spec, &judged);
    let mut disagree = Vec::new();
    for (probe, spec_valid) in probes.iter().zip(spec) {
        let mut request = app.request(probe.method.clone(), &probe.path);
        if let Some(body) = &probe.body {
            request = request.json(body);
        }
        let r = request.send().await.expect("send");
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        let server_valid = match status {
            200..=299 | 401 | 409 => true,
            400 if body["error"]["details"]["field"] == probe.field => false,
            _ => panic!(
                "{} {} ({} = {:.60?}): unexpected {status} {body}",
                probe.method, probe.path, probe.field, probe.value
            ),
        };
        if server_valid != spec_valid {
            disagree.push(format!(
                "{} {:.80?} ({} characters): the server {}, the spec {}",
                probe.field,
                probe.value,
                probe.value.chars().count(),
                if server_valid { "accepts" } else { "refuses" },
                if spec_valid { "allows" } else { "does not" }
            ));
        }
    }
    assert!(
        disagree.is_empty(),
        "spec and server disagree:\n{}",
        disagree.join("\n")
    );
}

/// The rate limits are far above what the run sends, so schemathesis never
/// sees a 429; this one is provoked (the `otp` policy: 5 codes an hour per
/// phone) and its headers and body are judged by the spec's
/// `TooManyRequests`.
async fn a_refusal_is_as_documented(app: &TestApp, schemathesis: &std::path::Path, spec: &str) {
    let mut refused = None;
    for _ in 0..10 {
        let r = app
            .request(reqwest::Method::POST, "/api/me/phone")
            .json(&serde_json::json!({ "phone": "+447700900999" }))
            .send()
            .await
            .expect("send");
        if r.status() == 429 {
            refused = Some(r);
            break;
        }
        assert_eq!(r.status(), 202, "a code for a new phone");
    }
    let r = refused.expect("the sixth code for one phone within the hour is refused");
    let header = |name: &str| {
        let value = r.headers().get(name).and_then(|v| v.to_str().ok());
        serde_json::Value::from(value.unwrap_or_else(|| panic!("a 429 without {name}")))
    };
    let mut judged = vec![
        (
            "#/components/headers/Retry-After/schema",
            header("Retry-After"),
        ),
        (
            "#/components/headers/RateLimit-Policy/schema",
            header("RateLimit-Policy"),
        ),
        ("#/components/headers/RateLimit/schema", header("RateLimit")),
    ];
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "rate_limited", "{body}");
    judged.push((
        "#/components/responses/TooManyRequests/content/application~1json/schema",
        body,
    ));
    let verdicts = spec_verdicts(schemathesis, spec, &judged);
    for ((schema, value), valid) in judged.iter().zip(verdicts) {
        assert!(valid, "the 429's {value} does not fit {schema}");
    }
}

/// Whether each value is valid by the schema its JSON pointer names in
/// openapi.yaml, by the validator schemathesis uses (jsonschema_rs, in its
/// environment).
fn spec_verdicts(
    schemathesis: &std::path::Path,
    spec: &str,
    judged: &[(&str, serde_json::Value)],
) -> Vec<bool> {
    use std::io::Write;
    let python = schemathesis.with_file_name("python");
    let script = "import json, sys, yaml, jsonschema_rs\n\
        spec = yaml.safe_load(open(sys.argv[1]))\n\
        print(json.dumps([jsonschema_rs.validator_for({'$ref': p, 'components': spec['components']}).is_valid(v)\n\
        for p, v in json.load(sys.stdin)]))\n";
    let mut child = Command::new(&python)
        .args(["-c", script])
        .arg(root().join(spec))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{}: {e}", python.display()));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(serde_json::to_string(judged).expect("json").as_bytes())
        .expect("write");
    let out = child.wait_with_output().expect("python");
    assert!(out.status.success(), "the spec's verdicts failed");
    serde_json::from_slice(&out.stdout).expect("verdicts")
}
