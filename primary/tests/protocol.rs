//! The raw protocol: every request type over plain HTTP, and bad input that
//! must get a clear error while the server keeps serving.

mod common;

use common::{Options, TestPrimary};
use qr_primary::streams::Limits;
use serde_json::{json, Value};

async fn post(primary: &TestPrimary, path: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("{}{path}", primary.url()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("send");
    let status = response.status().as_u16();
    (status, response.text().await.expect("body"))
}

async fn pipeline(primary: &TestPrimary, body: Value) -> (u16, Value) {
    let (status, text) = post(primary, "/v3/pipeline", body.to_string()).await;
    (status, serde_json::from_str(&text).expect("json body"))
}

/// The server still answers queries.
async fn still_serving(primary: &TestPrimary) {
    let (status, body) = pipeline(
        primary,
        json!({"baton": null, "requests": [
            {"type": "execute", "stmt": {"sql": "SELECT 7"}}, {"type": "close"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"][0]["response"]["result"]["rows"][0][0]["value"],
        "7"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn every_request_type_in_one_pipeline() {
    let primary = TestPrimary::start().await;
    let (status, body) = pipeline(
        &primary,
        json!({"baton": null, "requests": [
            {"type": "sequence", "sql": "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT, data BLOB); INSERT INTO t (name) VALUES ('seed');"},
            {"type": "store_sql", "sql_id": 1, "sql": "INSERT INTO t (name, data) VALUES (:name, ?2)"},
            {"type": "execute", "stmt": {"sql_id": 1, "named_args": [{"name": "name", "value": {"type": "text", "value": "ada"}}],
                                          "args": [{"type": "null"}, {"type": "blob", "base64": "AAEC/w"}]}},
            {"type": "describe", "sql": "SELECT name AS who, 1 + ? FROM t"},
            {"type": "describe", "sql_id": 1},
            {"type": "execute", "stmt": {"sql": "SELECT id, name, data, 1.5 FROM t ORDER BY id", "want_rows": true}},
            {"type": "execute", "stmt": {"sql": "SELECT * FROM t", "want_rows": false}},
            {"type": "execute", "stmt": {"sql": "BEGIN"}},
            {"type": "get_autocommit"},
            {"type": "execute", "stmt": {"sql": "ROLLBACK"}},
            {"type": "close_sql", "sql_id": 1},
            {"type": "execute", "stmt": {"sql_id": 1}},
            {"type": "get_autocommit"},
            {"type": "close"},
            {"type": "get_autocommit"}
        ]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let r = &body["results"];
    assert!(body["baton"].is_null(), "a closed stream has no baton");
    for i in [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 12, 13] {
        assert_eq!(r[i]["type"], "ok", "request {i}: {}", r[i]);
    }
    let insert = &r[2]["response"]["result"];
    assert_eq!(insert["affected_row_count"], 1);
    assert_eq!(insert["last_insert_rowid"], "2");
    let describe = &r[3]["response"]["result"];
    assert_eq!(describe["params"], json!([{"name": null}]));
    assert_eq!(describe["cols"][0]["name"], "who");
    assert_eq!(describe["cols"][0]["decltype"], "TEXT");
    assert_eq!(describe["is_readonly"], true);
    assert_eq!(r[4]["response"]["result"]["is_readonly"], false);
    assert_eq!(r[4]["response"]["result"]["params"][0]["name"], ":name");
    let rows = &r[5]["response"]["result"]["rows"];
    assert_eq!(rows[1][0], json!({"type": "integer", "value": "2"}));
    assert_eq!(rows[1][1], json!({"type": "text", "value": "ada"}));
    assert_eq!(rows[1][2], json!({"type": "blob", "base64": "AAEC/w"}));
    assert_eq!(rows[1][3], json!({"type": "float", "value": 1.5}));
    assert_eq!(rows[0][2], json!({"type": "null"}));
    assert_eq!(r[6]["response"]["result"]["rows"], json!([]));
    assert_eq!(
        r[6]["response"]["result"]["cols"].as_array().map(Vec::len),
        Some(3)
    );
    assert_eq!(r[8]["response"]["is_autocommit"], false);
    assert_eq!(r[11]["type"], "error");
    assert_eq!(r[11]["error"]["code"], "SQL_NOT_FOUND");
    assert_eq!(r[12]["response"]["is_autocommit"], true);
    assert_eq!(r[14]["error"]["code"], "STREAM_CLOSED");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transaction_spans_requests_through_batons() {
    let primary = TestPrimary::start().await;
    let (_, first) = pipeline(
        &primary,
        json!({"baton": null, "requests": [
            {"type": "execute", "stmt": {"sql": "CREATE TABLE k (v)"}},
            {"type": "execute", "stmt": {"sql": "BEGIN"}},
            {"type": "execute", "stmt": {"sql": "INSERT INTO k VALUES (1)"}}]}),
    )
    .await;
    let baton = first["baton"].as_str().expect("baton").to_owned();
    let (status, second) = pipeline(
        &primary,
        json!({"baton": baton, "requests": [
            {"type": "execute", "stmt": {"sql": "SELECT count(*) FROM k"}},
            {"type": "execute", "stmt": {"sql": "COMMIT"}}]}),
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(
        second["results"][0]["response"]["result"]["rows"][0][0]["value"],
        "1"
    );
    assert_ne!(second["baton"], json!(baton));

    // The used baton is refused now; the new one works.
    let (status, reused) = pipeline(&primary, json!({"baton": baton, "requests": []})).await;
    assert_eq!(status, 400);
    assert_eq!(reused["code"], "BATON_REUSED");
    let (status, _) = pipeline(
        &primary,
        json!({"baton": second["baton"], "requests": [{"type": "close"}]}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_get_clear_errors_and_the_server_goes_on() {
    let primary = TestPrimary::start_with(Options {
        max_body_bytes: Some(4096),
        ..Options::default()
    })
    .await;
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("/v3/pipeline", "{not json".into(), 400, "PROTO_INVALID"),
        ("/v3/pipeline", "[]".into(), 400, "PROTO_INVALID"),
        ("/v3/pipeline", json!({"baton": null, "requests": [{"type": "explode"}]}).to_string(), 400, "PROTO_INVALID"),
        ("/v3/pipeline", json!({"baton": null, "requests": [{"type": "execute", "stmt": {"sql": "SELECT ?", "args": [{"type": "integer", "value": "NaN"}]}}]}).to_string(), 400, "PROTO_INVALID"),
        ("/v3/pipeline", json!({"baton": "garbage", "requests": []}).to_string(), 400, "BATON_INVALID"),
        ("/v3/pipeline", json!({"baton": "12.0123456789abcdef0123456789abcdef", "requests": []}).to_string(), 400, "BATON_INVALID"),
        ("/v3/cursor", json!({"baton": null}).to_string(), 400, "PROTO_INVALID"),
        ("/v3/cursor", json!({"baton": "garbage", "batch": {"steps": []}}).to_string(), 400, "BATON_INVALID"),
        ("/v3/cursor", json!({"baton": "12.0123456789abcdef0123456789abcdef", "batch": {"steps": [{"stmt": {"sql": "SELECT 1"}}]}}).to_string(), 400, "BATON_INVALID"),
        ("/v3/pipeline", format!("{{\"baton\": null, \"requests\": [], \"pad\": \"{}\"}}", "x".repeat(10_000)), 413, "BODY_TOO_LARGE"),
    ];
    for (path, body, want_status, want_code) in cases {
        let (status, text) = post(&primary, path, body.clone()).await;
        assert_eq!(status, want_status, "{path} {body:.80}: {text}");
        let error: Value = serde_json::from_str(&text).expect("JSON error body");
        assert_eq!(error["code"], want_code, "{text}");
        assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
        still_serving(&primary).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn used_and_closed_batons_on_the_cursor_are_refused() {
    let primary = TestPrimary::start().await;
    let (_, open) = pipeline(
        &primary,
        json!({"baton": null, "requests": [{"type": "get_autocommit"}]}),
    )
    .await;
    let baton = open["baton"].as_str().expect("baton").to_owned();
    let batch = |baton: &str| {
        json!({"baton": baton, "batch": {"steps": [{"stmt": {"sql": "SELECT 1"}}]}}).to_string()
    };
    let (status, text) = post(&primary, "/v3/cursor", batch(&baton)).await;
    assert_eq!(status, 200, "{text}");
    let next: Value = serde_json::from_str(text.lines().next().expect("head")).expect("json");
    let next = next["baton"].as_str().expect("next baton").to_owned();

    let (status, text) = post(&primary, "/v3/cursor", batch(&baton)).await;
    assert_eq!(status, 400, "{text}");
    let error: Value = serde_json::from_str(&text).expect("JSON error body");
    assert_eq!(error["code"], "BATON_REUSED");
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));

    let (status, _) = pipeline(
        &primary,
        json!({"baton": next, "requests": [{"type": "close"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, text) = post(&primary, "/v3/cursor", batch(&next)).await;
    assert_eq!(status, 400, "{text}");
    let error: Value = serde_json::from_str(&text).expect("JSON error body");
    assert_eq!(error["code"], "STREAM_EXPIRED");
    still_serving(&primary).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn batch_conditions_on_the_wire() {
    let primary = TestPrimary::start().await;
    let (status, body) = pipeline(
        &primary,
        json!({"baton": null, "requests": [
            {"type": "batch", "batch": {"steps": [
                {"stmt": {"sql": "SELECT 1"}},
                {"stmt": {"sql": "SELECT nope"}},
                {"stmt": {"sql": "SELECT 'or'"}, "condition": {"type": "or", "conds": [
                    {"type": "ok", "step": 1}, {"type": "error", "step": 1}]}},
                {"stmt": {"sql": "SELECT 'neither'"}, "condition": {"type": "or", "conds": [
                    {"type": "ok", "step": 1}, {"type": "not", "cond": {"type": "is_autocommit"}}]}},
                {"stmt": {"sql": "SELECT 'and'"}, "condition": {"type": "and", "conds": [
                    {"type": "ok", "step": 2}, {"type": "is_autocommit"}]}}
            ]}},
            {"type": "close"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let result = &body["results"][0]["response"]["result"];
    let ran: Vec<bool> = result["step_results"]
        .as_array()
        .expect("step results")
        .iter()
        .map(|r| !r.is_null())
        .collect();
    assert_eq!(ran, [true, false, true, false, true], "{body}");
    assert_eq!(result["step_results"][2]["rows"][0][0]["value"], "or");
}

#[tokio::test(flavor = "multi_thread")]
async fn statement_errors_are_hrana_errors_inside_a_200() {
    let primary = TestPrimary::start().await;
    let (status, body) = pipeline(
        &primary,
        json!({"baton": null, "requests": [
            {"type": "execute", "stmt": {"sql": "SELECT * FROM missing"}},
            {"type": "execute", "stmt": {"sql": ""}},
            {"type": "execute", "stmt": {"sql": "SELECT 1; SELECT 2"}},
            {"type": "execute", "stmt": {"sql": "SELECT ?"}},
            {"type": "execute", "stmt": {"sql": "SELECT 1", "sql_id": 4}},
            {"type": "execute", "stmt": {"sql": "SELECT 'still fine'"}},
            {"type": "close"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let codes: Vec<&str> = body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["error"]["code"].as_str().unwrap_or("ok"))
        .collect();
    assert_eq!(
        codes,
        [
            "SQLITE_ERROR",
            "SQL_NO_STATEMENT",
            "SQL_MANY_STATEMENTS",
            "ARGS_INVALID",
            "ARGS_INVALID",
            "ok",
            "ok"
        ]
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stream_leaves_nothing_to_the_next_and_cannot_touch_other_files() {
    let primary = TestPrimary::start().await;
    let other = primary.dir.path().join("other.db");
    let other = other.display();
    let (status, body) = pipeline(
        &primary,
        json!({"baton": null, "requests": [
            {"type": "execute", "stmt": {"sql": "PRAGMA foreign_keys=OFF"}},
            {"type": "execute", "stmt": {"sql": "PRAGMA query_only=ON"}},
            {"type": "execute", "stmt": {"sql": format!("ATTACH '{other}' AS other")}},
            {"type": "execute", "stmt": {"sql": format!("VACUUM INTO '{other}'")}},
            {"type": "sequence", "sql": format!("SELECT 1; ATTACH '{other}' AS other;")},
            {"type": "execute", "stmt": {"sql": "DETACH other"}},
            {"type": "close"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for i in 2..=5 {
        let error = &body["results"][i]["error"];
        assert_eq!(error["code"], "SQLITE_AUTH", "request {i}: {body}");
        assert!(
            error["message"]
                .as_str()
                .is_some_and(|m| m.contains("VACUUM INTO")),
            "{error}"
        );
    }
    assert!(!primary.dir.path().join("other.db").exists());

    let (status, body) = pipeline(
        &primary,
        json!({"baton": null, "requests": [
            {"type": "execute", "stmt": {"sql": "PRAGMA foreign_keys"}},
            {"type": "execute", "stmt": {"sql": "PRAGMA query_only"}},
            {"type": "execute", "stmt": {"sql": "CREATE TEMP TABLE mine (x)"}},
            {"type": "close"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let value = |i: usize| body["results"][i]["response"]["result"]["rows"][0][0]["value"].clone();
    assert_eq!(value(0), "1", "foreign keys are enforced again");
    assert_eq!(value(1), "0", "the connection is writable again");

    let (_, body) = pipeline(
        &primary,
        json!({"baton": null, "requests": [
            {"type": "execute", "stmt": {"sql": "SELECT count(*) FROM temp.sqlite_schema"}},
            {"type": "close"}]}),
    )
    .await;
    assert_eq!(
        body["results"][0]["response"]["result"]["rows"][0][0]["value"], "0",
        "another stream's temporary table is not seen: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cursor_streams_ndjson_entries() {
    let primary = TestPrimary::start().await;
    pipeline(
        &primary,
        json!({"baton": null, "requests": [
            {"type": "sequence", "sql": "CREATE TABLE n (x); INSERT INTO n VALUES (1), (2), (3);"},
            {"type": "close"}]}),
    )
    .await;
    let (status, text) = post(
        &primary,
        "/v3/cursor",
        json!({"baton": null, "batch": {"steps": [
            {"stmt": {"sql": "SELECT x FROM n ORDER BY x"}},
            {"stmt": {"sql": "SELECT nope"}},
            {"stmt": {"sql": "SELECT 'skipped'"}, "condition": {"type": "ok", "step": 1}},
            {"stmt": {"sql": "INSERT INTO n VALUES (4)"}, "condition": {"type": "error", "step": 1}}
        ]}})
        .to_string(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert!(lines[0]["baton"].is_string(), "{}", lines[0]);
    let kinds: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l["type"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(
        kinds,
        [
            "step_begin",
            "row",
            "row",
            "row",
            "step_end",
            "step_error",
            "step_begin",
            "step_end"
        ]
    );
    assert_eq!(lines[1]["cols"][0]["name"], "x");
    assert_eq!(lines[2]["row"][0]["value"], "1");
    assert_eq!(lines[4]["row"][0]["value"], "3");
    assert_eq!(lines[5]["affected_row_count"], 0);
    assert_eq!(lines[6]["step"], 1);
    assert_eq!(lines[7]["step"], 3);
    assert_eq!(lines[8]["affected_row_count"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cursor_baton_works_as_soon_as_it_is_read() {
    let primary = TestPrimary::start().await;
    pipeline(
        &primary,
        json!({"baton": null, "requests": [
            {"type": "execute", "stmt": {"sql": "CREATE TABLE q (x)"}}, {"type": "close"}]}),
    )
    .await;
    // The last step takes a while, so that a baton sent before the steps
    // are done would find its stream still busy.
    let mut cursor = reqwest::Client::new()
        .post(format!("{}/v3/cursor", primary.url()))
        .body(
            json!({"baton": null, "batch": {"steps": [
                {"stmt": {"sql": "BEGIN"}},
                {"stmt": {"sql": "INSERT INTO q VALUES (1)"}},
                {"stmt": {"sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 1000000) SELECT count(*) FROM c"}}
            ]}})
            .to_string(),
        )
        .send()
        .await
        .expect("send cursor");
    assert_eq!(cursor.status(), 200);
    let mut text = Vec::new();
    while !text.contains(&b'\n') {
        let chunk = cursor.chunk().await.expect("read").expect("a first line");
        text.extend_from_slice(&chunk);
    }
    let end = text.iter().position(|b| *b == b'\n').expect("newline");
    let head: Value = serde_json::from_slice(&text[..end]).expect("head line");
    let baton = head["baton"].as_str().expect("baton").to_owned();

    // The next request goes at once, before the rest of the body is read.
    let (status, body) = pipeline(
        &primary,
        json!({"baton": baton, "requests": [
            {"type": "execute", "stmt": {"sql": "COMMIT"}},
            {"type": "execute", "stmt": {"sql": "SELECT count(*) FROM q"}},
            {"type": "close"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["results"][0]["type"], "ok", "{body}");
    assert_eq!(
        body["results"][1]["response"]["result"]["rows"][0][0]["value"],
        "1"
    );

    while let Some(chunk) = cursor.chunk().await.expect("read") {
        text.extend_from_slice(&chunk);
    }
    let lines: Vec<Value> = String::from_utf8(text)
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("each line is JSON"))
        .collect();
    assert_eq!(lines.len(), 1 + 2 + 2 + 3, "{lines:?}");
    assert_eq!(lines[6]["row"][0]["value"], "1000000");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cursor_whose_reader_stalls_is_closed_and_rolled_back() {
    let primary = TestPrimary::start_with(Options {
        limits: Some(common::short_expiry()),
        cursor_buffer_bytes: Some(64 * 1024),
        ..Options::default()
    })
    .await;
    pipeline(
        &primary,
        json!({"baton": null, "requests": [
            {"type": "execute", "stmt": {"sql": "CREATE TABLE w (x)"}}, {"type": "close"}]}),
    )
    .await;
    // About 50 MB of response, far more than the socket buffers take, to
    // a client that sends its request and then reads nothing.
    let body = json!({"baton": null, "batch": {"steps": [
        {"stmt": {"sql": "BEGIN IMMEDIATE"}},
        {"stmt": {"sql": "INSERT INTO w VALUES (1)"}},
        {"stmt": {"sql": "WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM c WHERE x < 400) SELECT zeroblob(100000) FROM c"}}
    ]}})
    .to_string();
    let mut socket = std::net::TcpStream::connect(primary.running.addr).expect("connect");
    std::io::Write::write_all(
        &mut socket,
        format!(
            "POST /v3/cursor HTTP/1.1\r\nhost: primary\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .expect("send request");

    let streams = &primary.running.streams;
    let wait_for = |open: usize| async move {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        while streams.open_count() != open {
            assert!(
                std::time::Instant::now() < deadline,
                "{} streams open, waiting for {open}",
                streams.open_count()
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    wait_for(1).await;
    wait_for(0).await;

    // The write lock is free again and the insert was rolled back.
    let (status, body) = pipeline(
        &primary,
        json!({"baton": null, "requests": [
            {"type": "execute", "stmt": {"sql": "SELECT count(*) FROM w"}},
            {"type": "execute", "stmt": {"sql": "INSERT INTO w VALUES (2)"}},
            {"type": "close"}]}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"][0]["response"]["result"]["rows"][0][0]["value"],
        "0"
    );
    assert_eq!(body["results"][1]["type"], "ok", "{body}");
    drop(socket);
}

#[tokio::test(flavor = "multi_thread")]
async fn v2_pipeline_and_the_info_endpoints() {
    let primary = TestPrimary::start().await;
    let (status, text) = post(
        &primary,
        "/v2/pipeline",
        json!({"baton": null, "requests": [{"type": "execute", "stmt": {"sql": "SELECT 'v2'"}}, {"type": "close"}]}).to_string(),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("\"v2\""));
    let http = reqwest::Client::new();
    for path in ["/v2", "/v3", "/health", "/version"] {
        let r = http
            .get(format!("{}{path}", primary.url()))
            .send()
            .await
            .expect("get");
        assert_eq!(r.status(), 200, "{path}");
    }
    let version = http
        .get(format!("{}/version", primary.url()))
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(version.starts_with("qr-primary "), "{version}");
    let missing = http
        .get(format!("{}/nope", primary.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.expect("json 404");
    assert_eq!(body["code"], "NOT_FOUND");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_stream_cap_answers_503_until_a_stream_closes() {
    let primary = TestPrimary::start_with(Options {
        limits: Some(Limits {
            max_streams: 2,
            ..Limits::default()
        }),
        ..Options::default()
    })
    .await;
    let open = json!({"baton": null, "requests": [{"type": "get_autocommit"}]});
    let (_, a) = pipeline(&primary, open.clone()).await;
    let (_, _b) = pipeline(&primary, open.clone()).await;
    let response = reqwest::Client::new()
        .post(format!("{}/v3/pipeline", primary.url()))
        .body(open.to_string())
        .send()
        .await
        .expect("send");
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["code"], "STREAMS_EXHAUSTED");
    let (status, _) = pipeline(
        &primary,
        json!({"baton": a["baton"], "requests": [{"type": "close"}]}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = pipeline(&primary, open).await;
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn auth_is_checked_before_anything_else() {
    let primary = TestPrimary::start_with(Options {
        token: Some("tok".into()),
        ..Options::default()
    })
    .await;
    let body = json!({"baton": null, "requests": [{"type": "close"}]}).to_string();
    let http = reqwest::Client::new();
    for auth in [None, Some("Bearer nope"), Some("tok"), Some("Basic tok")] {
        let mut req = http
            .post(format!("{}/v3/pipeline", primary.url()))
            .body(body.clone());
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let r = req.send().await.expect("send");
        assert_eq!(r.status(), 401, "{auth:?}");
    }
    let r = http
        .post(format!("{}/v3/pipeline", primary.url()))
        .header("authorization", "Bearer tok")
        .body(body)
        .send()
        .await
        .expect("send");
    assert_eq!(r.status(), 200);
    // Health needs no token (load balancers and scripts poll it).
    let r = http
        .get(format!("{}/health", primary.url()))
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_public_address_without_a_token_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let result = qr_primary::server::start(qr_primary::server::ServeConfig {
        listen: "0.0.0.0:0".parse().expect("addr"),
        db: dir.path().join("x.db"),
        http: Default::default(),
        limits: Default::default(),
    })
    .await;
    let Err(e) = result else {
        panic!("must refuse to listen publicly without a token");
    };
    assert!(e.to_string().contains("without a token"), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn requests_are_counted_per_endpoint_and_request_id() {
    let primary = TestPrimary::start().await;
    let http = reqwest::Client::new();
    let send = |path: &'static str, body: Value, id: &'static str| {
        http.post(format!("{}{path}", primary.url()))
            .header("x-request-id", id)
            .body(body.to_string())
            .send()
    };
    let one = json!({"baton": null, "requests": [{"type": "execute", "stmt": {"sql": "SELECT 1"}}, {"type": "close"}]});
    let batch = json!({"baton": null, "batch": {"steps": [{"stmt": {"sql": "SELECT 1"}}]}});
    send("/v3/pipeline", one.clone(), "req-a")
        .await
        .expect("a1");
    send("/v3/pipeline", one.clone(), "req-a")
        .await
        .expect("a2");
    send("/v3/cursor", batch, "req-a")
        .await
        .expect("a3")
        .text()
        .await
        .expect("drain");
    send("/v2/pipeline", one, "req-b").await.expect("b1");
    let count = |id: &'static str| {
        let http = http.clone();
        let url = format!("{}/stats/requests/{id}", primary.url());
        async move {
            let body: Value = http
                .get(url)
                .send()
                .await
                .expect("stats")
                .json()
                .await
                .expect("json");
            body["hrana_requests"].as_u64().expect("count")
        }
    };
    assert_eq!(count("req-a").await, 3);
    assert_eq!(count("req-b").await, 1);
    assert_eq!(count("never-seen").await, 0);
    let totals: Value = http
        .get(format!("{}/stats", primary.url()))
        .send()
        .await
        .expect("stats")
        .json()
        .await
        .expect("json");
    assert_eq!(totals["hrana_requests"]["v3_pipeline"], 2);
    assert_eq!(totals["hrana_requests"]["v3_cursor"], 1);
    assert_eq!(totals["hrana_requests"]["v2_pipeline"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_delay_flag_holds_each_request() {
    let primary = TestPrimary::start_with(Options {
        delay: Some(std::time::Duration::from_millis(300)),
        ..Options::default()
    })
    .await;
    let started = std::time::Instant::now();
    still_serving(&primary).await;
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));
}
