//! wrangler.toml and .dev.vars.example, checked as files: no secret in any
//! `[vars]`, every environment with every binding, and the settings the
//! deploy guide relies on.

use std::collections::BTreeSet;

use toml::Value;

fn read(path: &str) -> String {
    std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path))
        .unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn wrangler() -> Value {
    read("wrangler.toml").parse().expect("wrangler.toml parses")
}

/// Secret names listed in .dev.vars.example.
fn secret_names() -> BTreeSet<String> {
    read(".dev.vars.example")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .collect()
}

/// The top level and each `[env.NAME]` table, by name.
fn environments(config: &Value) -> Vec<(String, &Value)> {
    let mut out = vec![("(top level)".to_owned(), config)];
    if let Some(envs) = config.get("env").and_then(Value::as_table) {
        for (name, table) in envs {
            out.push((name.clone(), table));
        }
    }
    out
}

#[test]
fn no_secret_is_a_var() {
    let secrets = secret_names();
    for must in [
        "LIBSQL_AUTH_TOKEN",
        "SESSION_SECRET",
        "BOT_TOKEN",
        "CRON_SECRET",
    ] {
        assert!(secrets.contains(must), ".dev.vars.example must list {must}");
    }
    let config = wrangler();
    for (env, table) in environments(&config) {
        let Some(vars) = table.get("vars").and_then(Value::as_table) else {
            continue;
        };
        for key in vars.keys() {
            assert!(
                !secrets.contains(key),
                "{key} is a secret but is set in [vars] of {env}"
            );
            let upper = key.to_uppercase();
            for word in ["TOKEN", "SECRET", "PASSWORD", "KEY"] {
                assert!(
                    !upper.contains(word),
                    "{key} in [vars] of {env} looks like a secret"
                );
            }
        }
    }
}

#[test]
fn every_environment_has_every_binding_and_var() {
    let config = wrangler();
    let top = environments(&config)[0].1;
    let var_names = |t: &Value| -> BTreeSet<String> {
        t.get("vars")
            .and_then(Value::as_table)
            .map(|v| v.keys().cloned().collect())
            .unwrap_or_default()
    };
    let do_names = |t: &Value| -> BTreeSet<String> {
        t.get("durable_objects")
            .and_then(|d| d.get("bindings"))
            .and_then(Value::as_array)
            .map(|b| {
                b.iter()
                    .filter_map(|x| x.get("name").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let kv_names = |t: &Value| -> BTreeSet<String> {
        t.get("kv_namespaces")
            .and_then(Value::as_array)
            .map(|b| {
                b.iter()
                    .filter_map(|x| x.get("binding").and_then(Value::as_str).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    assert!(do_names(top).contains("RATE_LIMITER") && do_names(top).contains("ISSUE_COUNTER"));
    assert!(kv_names(top).contains("CACHE"));
    let envs = environments(&config);
    let names: BTreeSet<&str> = envs.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.contains("staging") && names.contains("production"),
        "{names:?}"
    );
    for (env, table) in &envs[1..] {
        assert_eq!(var_names(table), var_names(top), "vars of {env}");
        assert_eq!(do_names(table), do_names(top), "Durable Objects of {env}");
        assert_eq!(kv_names(table), kv_names(top), "KV namespaces of {env}");
        let url = table["vars"]["LIBSQL_URL"].as_str().unwrap_or_default();
        assert!(
            url.starts_with("libsql://") || url.starts_with("https://"),
            "{env} must use Turso: {url}"
        );
    }
}

#[test]
fn pinned_settings_and_durable_object_migrations() {
    let config = wrangler();
    let date = config["compatibility_date"]
        .as_str()
        .expect("compatibility_date");
    assert_eq!(date.len(), 10, "a pinned date, YYYY-MM-DD");
    assert!(
        config["compatibility_flags"].is_array(),
        "compatibility_flags pinned (an explicit list, even if empty)"
    );
    for env in ["staging", "production"] {
        for key in ["compatibility_date", "compatibility_flags"] {
            assert!(
                config["env"][env].get(key).is_none(),
                "{env} inherits the top-level {key}"
            );
        }
    }
    assert_eq!(config["observability"]["enabled"].as_bool(), Some(true));
    let migrated: BTreeSet<&str> = config["migrations"]
        .as_array()
        .expect("[[migrations]]")
        .iter()
        .flat_map(|m| {
            m.get("new_sqlite_classes")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
        })
        .filter_map(Value::as_str)
        .collect();
    // Every class any environment binds has its migration.
    for (env, table) in environments(&config) {
        let bound = table["durable_objects"]["bindings"]
            .as_array()
            .expect("Durable Object bindings");
        for class in bound.iter().filter_map(|b| b["class_name"].as_str()) {
            assert!(
                migrated.contains(class),
                "{class} (bound in {env}) needs a new_sqlite_classes migration"
            );
        }
    }
    for class in ["RateLimiter", "IssueCounter", "Outbox", "InvalidationLog"] {
        assert!(migrated.contains(class), "{class} needs a migration");
    }
}

/// The cron triggers are exactly the ones the jobs are scheduled on
/// (`jobs::SCHEDULE`), so none runs nothing and no schedule is unreachable.
#[test]
fn cron_triggers_match_the_job_schedule() {
    let config = wrangler();
    let crons: BTreeSet<String> = config["triggers"]["crons"]
        .as_array()
        .expect("[triggers] crons")
        .iter()
        .map(|c| c.as_str().expect("a cron string").to_owned())
        .collect();
    let scheduled: BTreeSet<String> = quiet_riots_edge::SCHEDULE
        .iter()
        .map(|(cron, _)| (*cron).to_owned())
        .collect();
    assert_eq!(crons, scheduled);
    for env in ["staging", "production"] {
        assert!(
            config["env"][env].get("triggers").is_none(),
            "{env} inherits the top-level triggers"
        );
    }
}

/// The `run_worker_first` patterns of `[assets]`.
fn worker_first(config: &Value) -> Vec<String> {
    config["assets"]["run_worker_first"]
        .as_array()
        .expect("[assets] run_worker_first is a list")
        .iter()
        .map(|p| p.as_str().expect("a pattern").to_owned())
        .collect()
}

/// Whether `path` matches a `run_worker_first` pattern, where `*` stands
/// for any characters, slashes included (Workers static routing).
fn glob_matches(pattern: &str, path: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == path,
        Some((head, tail)) => {
            let Some(rest) = path.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&i| rest.is_char_boundary(i))
                .any(|i| glob_matches(tail, &rest[i..]))
        }
    }
}

#[test]
fn glob_patterns_match_as_static_routing_does() {
    assert!(glob_matches("/api/*", "/api/issues/x/join"));
    assert!(glob_matches("/api/*", "/api/"));
    assert!(!glob_matches("/api/*", "/api"));
    assert!(glob_matches("/health", "/health"));
    assert!(!glob_matches("/health", "/health/x"));
    assert!(glob_matches("/*.js", "/js/main.js"));
    assert!(!glob_matches("/webhooks/*", "/index.html"));
}

/// Every route of the router (the benchmark route too, which only the
/// development bundle has) reaches the Worker before the static assets are
/// looked at; no file of the web client is hidden behind a Worker route;
/// and `/` is the web client.
#[test]
fn every_worker_route_runs_the_worker_first_and_no_web_file_is_shadowed() {
    let config = wrangler();
    assert_eq!(config["assets"]["directory"].as_str(), Some("./web"));
    let patterns = worker_first(&config);
    let mut paths: Vec<String> = quiet_riots_edge::ROUTES
        .iter()
        .map(|(_, pattern, _, _)| {
            pattern
                .split('/')
                .map(|s| if s.starts_with(':') { "x" } else { s })
                .collect::<Vec<_>>()
                .join("/")
        })
        .collect();
    paths.push("/__bench/constant".to_owned());
    for path in &paths {
        assert!(
            patterns.iter().any(|p| glob_matches(p, path)),
            "{path} is a Worker route but no run_worker_first pattern covers it: {patterns:?}"
        );
    }
    // Each pattern serves some route (none is left over from an old one).
    for p in &patterns {
        assert!(
            paths.iter().any(|path| glob_matches(p, path)),
            "run_worker_first pattern {p} covers no route"
        );
    }
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let mut files = Vec::new();
    collect_files(&web, &web, &mut files);
    assert!(files.contains(&"/index.html".to_owned()), "{files:?}");
    for file in files.iter().chain(["/".to_owned()].iter()) {
        assert!(
            !patterns.iter().any(|p| glob_matches(p, file)),
            "web{file} would never be served: a run_worker_first pattern covers it"
        );
    }
}

fn collect_files(root: &std::path::Path, dir: &std::path::Path, out: &mut Vec<String>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            collect_files(root, &path, out);
        } else {
            let relative = path.strip_prefix(root).expect("under web/");
            out.push(format!("/{}", relative.display()));
        }
    }
}

/// Environments inherit `[assets]` (wrangler lets them): one web client
/// everywhere, served as the top level says.
#[test]
fn environments_inherit_the_web_client() {
    let config = wrangler();
    for env in ["staging", "production"] {
        assert!(
            config["env"][env].get("assets").is_none(),
            "{env} inherits the top-level [assets]"
        );
    }
}

/// The web client's headers: a strict Content-Security-Policy (nothing
/// inline, nothing from elsewhere), nosniff, a referrer policy, and every
/// file revalidated.
#[test]
fn the_web_client_has_strict_headers_and_nothing_inline() {
    let headers = read("web/_headers");
    let rules: Vec<&str> = headers
        .lines()
        .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(
        rules.first().copied(),
        Some("/*"),
        "one rule for every file"
    );
    let header = |name: &str| -> String {
        rules
            .iter()
            .filter_map(|l| l.trim().split_once(": "))
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_owned())
            .unwrap_or_else(|| panic!("web/_headers sets no {name}"))
    };
    let csp = header("Content-Security-Policy");
    let directives: Vec<&str> = csp.split(';').map(str::trim).collect();
    for must in [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ] {
        assert!(directives.contains(&must), "CSP lacks {must}: {csp}");
    }
    for never in [
        "'unsafe-inline'",
        "'unsafe-eval'",
        "*",
        "data:",
        "http:",
        "https:",
    ] {
        assert!(
            !csp.split_whitespace()
                .any(|w| w.trim_end_matches(';') == never),
            "CSP allows {never}: {csp}"
        );
    }
    assert_eq!(header("X-Content-Type-Options"), "nosniff");
    assert_eq!(header("Referrer-Policy"), "no-referrer");
    assert_eq!(header("Cache-Control"), "no-cache");

    // What the CSP would block must not be there: no inline script or
    // style, no event-handler attributes, no javascript: URLs.
    let web = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("web");
    let mut files = Vec::new();
    collect_files(&web, &web, &mut files);
    for file in files.iter().filter(|f| f.ends_with(".html")) {
        let html = read(&format!("web{file}"));
        let lower = html.to_lowercase();
        for tag in lower.match_indices("<script").map(|(i, _)| &lower[i..]) {
            let open = &tag[..tag.find('>').expect("a closed tag")];
            assert!(open.contains(" src="), "web{file}: an inline <script>");
        }
        assert!(!lower.contains("<style"), "web{file}: an inline <style>");
        assert!(!lower.contains(" style="), "web{file}: a style attribute");
        assert!(
            !lower.contains("javascript:"),
            "web{file}: a javascript: URL"
        );
        let handler = inline_handler(&lower);
        assert!(
            handler.is_none(),
            "web{file}: an inline handler {handler:?}"
        );
        assert!(
            lower.contains("<meta name=\"viewport\""),
            "web{file}: a viewport meta for phones"
        );
    }
}

/// An ` on...=` attribute in `html`, if any.
fn inline_handler(html: &str) -> Option<&str> {
    html.match_indices(" on")
        .map(|(i, _)| &html[i + 1..])
        .find_map(|rest| {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphabetic())
                .collect();
            (name.len() > 2 && rest[name.len()..].starts_with('=')).then(|| &rest[..name.len()])
        })
}
