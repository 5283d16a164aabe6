//! `cargo xtask smoke --url URL`: a read-only check of a running Worker,
//! deployed or local. It reads, never writes: health, a list, a detail (with
//! its cache headers), a search, the error envelope, and the headers every
//! response must carry.

use std::time::Duration;

use serde_json::Value;

use crate::Result;

struct Response {
    status: u16,
    headers: Vec<(String, String)>,
    body: Value,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn get(agent: &ureq::Agent, base: &str, path: &str) -> Result<Response> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let response = match agent.get(&url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => return Err(format!("GET {url}: {e}")),
    };
    let status = response.status();
    let headers = response
        .headers_names()
        .into_iter()
        .filter_map(|name| {
            let value = response.header(&name)?.to_owned();
            Some((name, value))
        })
        .collect();
    let text = response
        .into_string()
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text)
            .map_err(|e| format!("GET {url}: not JSON ({e}): {text:.200}"))?
    };
    Ok(Response {
        status,
        headers,
        body,
    })
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

const REQUIRED_HEADERS: [&str; 5] = [
    "x-request-id",
    "x-content-type-options",
    "content-security-policy",
    "strict-transport-security",
    "referrer-policy",
];

fn headers_present(path: &str, r: &Response) -> Result {
    for h in REQUIRED_HEADERS {
        check(r.header(h).is_some(), || format!("{path}: no {h} header"))?;
    }
    Ok(())
}

/// A cached read says how it was served and how it may be cached.
fn cache_headers(path: &str, r: &Response) -> Result {
    check(r.header("etag").is_some(), || format!("{path}: no ETag"))?;
    check(
        matches!(r.header("x-cache"), Some("HIT" | "MISS" | "STALE")),
        || format!("{path}: X-Cache is {:?}", r.header("x-cache")),
    )?;
    // Browsers keep reads but revalidate them (with the ETag) every time.
    check(r.header("cache-control") == Some("no-cache"), || {
        format!("{path}: Cache-Control is {:?}", r.header("cache-control"))
    })
}

fn envelope(path: &str, r: &Response, status: u16, code: &str) -> Result {
    check(r.status == status, || {
        format!("{path}: status {} (wanted {status})", r.status)
    })?;
    check(r.body["error"]["code"] == code, || {
        format!(
            "{path}: error code {} (wanted {code})",
            r.body["error"]["code"]
        )
    })?;
    check(
        r.body["error"]["request_id"].as_str() == r.header("x-request-id"),
        || format!("{path}: the envelope's request_id differs from X-Request-Id"),
    )?;
    headers_present(path, r)
}

/// Runs every check; returns the number of checks passed.
pub fn run(base: &str) -> Result<usize> {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build();
    let mut passed = 0;
    let mut step = |name: &str, result: Result| -> Result {
        match result {
            Ok(()) => {
                passed += 1;
                eprintln!("  ok   {name}");
                Ok(())
            }
            Err(e) => {
                eprintln!("  FAIL {name}: {e}");
                Err(format!("smoke check failed: {name}: {e}"))
            }
        }
    };

    let health = get(&agent, base, "/health")?;
    step("health answers 200 with every part up", {
        check(health.status == 200, || {
            format!("status {}: {}", health.status, health.body)
        })
        .and_then(|()| check(health.body["status"] == "ok", || health.body.to_string()))
        .and_then(|()| headers_present("/health", &health))
    })?;

    let list = get(&agent, base, "/api/issues?limit=3")?;
    let items = list.body["items"].as_array().cloned().unwrap_or_default();
    step("the issue list has issues", {
        check(list.status == 200, || format!("status {}", list.status))
            .and_then(|()| check(!items.is_empty(), || "no issues".to_owned()))
            .and_then(|()| headers_present("/api/issues", &list))
    })?;

    let id = items
        .first()
        .and_then(|i| i["id"].as_str())
        .unwrap_or_default()
        .to_owned();
    let detail = get(&agent, base, &format!("/api/issues/{id}"))?;
    step("an issue's detail matches the list", {
        check(detail.status == 200, || format!("status {}", detail.status))
            .and_then(|()| check(detail.body["id"] == id.as_str(), || detail.body.to_string()))
            .and_then(|()| {
                check(detail.body["organisations"].is_array(), || {
                    "no organisations array".to_owned()
                })
            })
            .and_then(|()| headers_present("/api/issues/:id", &detail))
            .and_then(|()| cache_headers("/api/issues/:id", &detail))
    })?;

    // A word of the name (letters only, so it needs no escaping)
    // must find the issue.
    let name = items
        .first()
        .and_then(|i| i["name"].as_str())
        .unwrap_or_default();
    let word = name
        .split(|c: char| !c.is_ascii_alphabetic())
        .filter(|w| w.len() >= 3)
        .max_by_key(|w| w.len())
        .unwrap_or("a")
        .to_ascii_lowercase();
    let path = format!("/api/issues?q={word}&limit=100");
    let search = get(&agent, base, &path)?;
    step(&format!("searching {word:?} finds the issue"), {
        check(search.status == 200, || format!("status {}", search.status))
            .and_then(|()| {
                let found = search.body["items"]
                    .as_array()
                    .is_some_and(|hits| hits.iter().any(|h| h["id"] == id.as_str()));
                check(found, || format!("{path}: {id} not among {}", search.body))
            })
            .and_then(|()| headers_present(&path, &search))
    })?;

    let bad = get(&agent, base, "/api/issues/not-a-uuid")?;
    step(
        "a malformed id is a 400 envelope",
        envelope("/api/issues/not-a-uuid", &bad, 400, "validation_failed"),
    )?;

    let missing = get(&agent, base, "/smoke-test-no-such-route")?;
    step(
        "an unknown route is a 404 envelope",
        envelope("/smoke-test-no-such-route", &missing, 404, "not_found"),
    )?;
    Ok(passed)
}
