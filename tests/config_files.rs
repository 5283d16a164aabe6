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
    for class in ["RateLimiter", "IssueCounter", "Outbox"] {
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
