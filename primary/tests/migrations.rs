//! Migrations up, down and up again; changed files refused; the schema's FTS
//! triggers; the demo and synthetic seeds' consistency.

mod common;

use common::{migrations_dir, TestPrimary};
use libsql_hrana::proto::Value;
use qr_primary::client::{stmt, text, Client};
use qr_primary::migrate::{load_dir, MigrateError, Migrator, State};
use qr_primary::seed;

async fn scalar(client: &Client, sql: &str, args: Vec<Value>) -> String {
    let rows = client.query(sql, args).await.expect(sql);
    match rows.first().and_then(|r| r.first()) {
        Some(Value::Integer { value }) => value.to_string(),
        Some(Value::Text { value }) => value.to_string(),
        Some(Value::Null) | None => "NULL".into(),
        Some(other) => format!("{other:?}"),
    }
}

async fn migrated(primary: &TestPrimary) -> Client {
    let client = primary.client();
    let migrator = Migrator::new(client.clone(), load_dir(&migrations_dir()).expect("load"));
    migrator.up(|_| {}).await.expect("migrate up");
    client
}

/// Names of schema objects other than SQLite's and FTS shadow tables.
async fn schema_objects(client: &Client) -> String {
    scalar(
        client,
        "SELECT group_concat(type || ':' || name, ' ') FROM (SELECT type, name FROM sqlite_schema \
         WHERE name NOT LIKE 'sqlite_%' AND name NOT LIKE 'issues_fts_%' ORDER BY type, name)",
        vec![],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn up_down_and_up_again() {
    let primary = TestPrimary::start().await;
    let client = primary.client();
    let migrations = load_dir(&migrations_dir()).expect("load migrations");
    assert!(
        migrations.len() >= 3,
        "the schema comes in several migrations"
    );
    assert!(
        migrations.iter().all(|m| m.down.is_some()),
        "every migration has a down file"
    );
    let migrator = Migrator::new(client.clone(), migrations.clone());

    let applied = migrator.up(|_| {}).await.expect("up");
    assert_eq!(applied.len(), migrations.len());
    let full_schema = schema_objects(&client).await;
    for table in [
        "users",
        "issues",
        "organisations",
        "issue_organisation",
        "actions",
        "feed",
        "user_issues",
        "synonyms",
        "country_breakdown",
        "community_health",
        "user_identities",
        "feed_archive",
        "issue_daily",
        "job_runs",
        "idempotency_keys",
        "webhook_events",
        "issues_fts",
    ] {
        assert!(
            full_schema.contains(&format!("table:{table} "))
                || full_schema.ends_with(&format!("table:{table}")),
            "missing table {table}: {full_schema}"
        );
    }
    assert!(full_schema.contains("view:feed_all"), "{full_schema}");
    assert!(
        migrator.up(|_| {}).await.expect("up again").is_empty(),
        "nothing left to apply"
    );
    let status = migrator.status().await.expect("status");
    assert!(
        status
            .iter()
            .all(|(_, _, s)| matches!(s, State::Applied { .. })),
        "{status:?}"
    );

    let reverted = migrator
        .down(migrations.len(), |_| {})
        .await
        .expect("down all");
    assert_eq!(reverted.len(), migrations.len());
    assert_eq!(
        schema_objects(&client).await,
        "table:_migrations",
        "down removes everything"
    );

    migrator.up(|_| {}).await.expect("up after down");
    assert_eq!(schema_objects(&client).await, full_schema);
}

/// A migration of several lines, with LF line endings.
const TWO_LF: &str = "-- The second table.\nCREATE TABLE two (\n  x\n);\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_changed_or_missing_migration_is_refused() {
    let primary = TestPrimary::start().await;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("0001_one.sql"), "CREATE TABLE one (x);").expect("write");
    std::fs::write(dir.path().join("0001_one.down.sql"), "DROP TABLE one;").expect("write");
    std::fs::write(dir.path().join("0002_two.sql"), TWO_LF).expect("write");
    std::fs::write(dir.path().join("0002_two.down.sql"), "DROP TABLE two;").expect("write");
    let migrator =
        |d: &std::path::Path| Migrator::new(primary.client(), load_dir(d).expect("load"));
    migrator(dir.path()).up(|_| {}).await.expect("up");

    std::fs::write(dir.path().join("0001_one.sql"), "CREATE TABLE one (x, y);").expect("edit");
    let m = migrator(dir.path());
    assert!(matches!(
        m.up(|_| {}).await,
        Err(MigrateError::Changed { id: 1, .. })
    ));
    assert!(matches!(
        m.down(1, |_| {}).await,
        Err(MigrateError::Changed { id: 1, .. })
    ));
    let status = m.status().await.expect("status");
    assert_eq!(status[0].2, State::Changed);

    // Line endings alone do not count as a change (a checkout that turns LF
    // into CRLF); anything else does.
    std::fs::write(dir.path().join("0001_one.sql"), "CREATE TABLE one (x);").expect("restore");
    std::fs::write(
        dir.path().join("0002_two.sql"),
        TWO_LF.replace('\n', "\r\n"),
    )
    .expect("crlf");
    let m = migrator(dir.path());
    assert!(
        m.status()
            .await
            .expect("status")
            .iter()
            .all(|(_, _, s)| matches!(s, State::Applied { .. })),
        "a CRLF copy of an applied migration is unchanged"
    );
    m.up(|_| {}).await.expect("restored and CRLF files pass");
    std::fs::write(dir.path().join("0002_two.sql"), TWO_LF.trim_end()).expect("edit");
    assert!(matches!(
        migrator(dir.path()).up(|_| {}).await,
        Err(MigrateError::Changed { id: 2, .. })
    ));
    std::fs::write(dir.path().join("0002_two.sql"), TWO_LF).expect("restore");

    std::fs::remove_file(dir.path().join("0002_two.sql")).expect("remove");
    let e = migrator(dir.path())
        .up(|_| {})
        .await
        .expect_err("missing file");
    assert!(matches!(e, MigrateError::Missing { id: 2, .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failing_migration_applies_nothing() {
    let primary = TestPrimary::start().await;
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("0001_ok.sql"), "CREATE TABLE ok (x);").expect("write");
    std::fs::write(
        dir.path().join("0002_bad.sql"),
        "CREATE TABLE half (x);\nINSERT INTO half VALUES (1);\nCREATE TABLE broken (;",
    )
    .expect("write");
    let m = Migrator::new(primary.client(), load_dir(dir.path()).expect("load"));
    let e = m.up(|_| {}).await.expect_err("0002 must fail");
    let message = e.to_string();
    assert!(
        message.contains("0002_bad") && message.contains("statement 3"),
        "{message}"
    );
    let client = primary.client();
    assert_eq!(
        scalar(&client, "SELECT group_concat(id) FROM _migrations", vec![]).await,
        "1"
    );
    assert_eq!(
        scalar(
            &client,
            "SELECT count(*) FROM sqlite_schema WHERE name = 'half'",
            vec![]
        )
        .await,
        "0",
        "the failed migration's first statements were rolled back"
    );
}

async fn search(client: &Client, query: &str) -> String {
    scalar(
        client,
        "SELECT group_concat(name, '|') FROM (SELECT i.name FROM issues_fts f JOIN issues i ON i.id = f.issue_id \
         WHERE issues_fts MATCH ? ORDER BY i.name)",
        vec![text(query)],
    )
    .await
}

#[tokio::test(flavor = "multi_thread")]
async fn fts_triggers_follow_issues_and_synonyms() {
    let primary = TestPrimary::start().await;
    let client = migrated(&primary).await;
    let issue = "0b7f6c1e-5a1d-4c3e-9b8a-2f4d6e8a0c11";
    client
        .execute(stmt(
            "INSERT INTO issues (id, name, category, description) VALUES (?, 'Broken streetlights', 'safety', 'Dark streets at night')",
            vec![text(issue)],
        ))
        .await
        .expect("insert issue");
    assert_eq!(search(&client, "streetl*").await, "Broken streetlights");
    assert_eq!(search(&client, "dark").await, "Broken streetlights");

    client
        .execute(stmt(
            "UPDATE issues SET name = 'Broken lamp posts' WHERE id = ?",
            vec![text(issue)],
        ))
        .await
        .expect("rename");
    assert_eq!(
        search(&client, "streetlights").await,
        "NULL",
        "the old name is gone"
    );
    assert_eq!(search(&client, "lamp").await, "Broken lamp posts");

    client
        .execute(stmt(
            "INSERT INTO synonyms (id, issue_id, term) VALUES ('5d2c9a4e-1f3b-4e6d-8a7c-9b0e1d2f3a4b', ?, 'no lighting')",
            vec![text(issue)],
        ))
        .await
        .expect("synonym");
    assert_eq!(
        search(&client, "\"no lighting\"").await,
        "Broken lamp posts"
    );
    client
        .execute(stmt(
            "DELETE FROM synonyms WHERE issue_id = ?",
            vec![text(issue)],
        ))
        .await
        .expect("delete synonym");
    assert_eq!(search(&client, "lighting").await, "NULL");

    // Changing a synonym's term or moving it to another issue rewrites the
    // rows of the issues concerned.
    let other = "6e1d2c3b-4a5f-4b7e-8c9d-0a1b2c3d4e5f";
    client
        .execute(stmt(
            "INSERT INTO issues (id, name, category, description) VALUES (?, 'Noisy roadworks', 'environment', 'Drilling at dawn')",
            vec![text(other)],
        ))
        .await
        .expect("insert other issue");
    client
        .execute(stmt(
            "INSERT INTO synonyms (id, issue_id, term) VALUES ('7f3e2d1c-0b9a-4c8d-9e7f-6a5b4c3d2e1f', ?, 'no lighting')",
            vec![text(issue)],
        ))
        .await
        .expect("synonym again");
    client
        .execute(stmt(
            "UPDATE synonyms SET term = 'dim roads' WHERE issue_id = ?",
            vec![text(issue)],
        ))
        .await
        .expect("change the term");
    assert_eq!(
        search(&client, "lighting").await,
        "NULL",
        "the old term is gone"
    );
    assert_eq!(search(&client, "dim").await, "Broken lamp posts");
    client
        .execute(stmt(
            "UPDATE synonyms SET issue_id = ? WHERE term = 'dim roads'",
            vec![text(other)],
        ))
        .await
        .expect("move the synonym");
    assert_eq!(search(&client, "dim").await, "Noisy roadworks");
    assert_eq!(
        search(&client, "lamp").await,
        "Broken lamp posts",
        "the old issue keeps its own text"
    );
    assert_eq!(search(&client, "drilling").await, "Noisy roadworks");
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM issues_fts", vec![]).await,
        "2",
        "one row per issue"
    );
    client
        .execute(stmt("DELETE FROM issues WHERE id = ?", vec![text(other)]))
        .await
        .expect("delete other issue");

    client
        .execute(stmt("DELETE FROM issues WHERE id = ?", vec![text(issue)]))
        .await
        .expect("delete issue");
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM issues_fts", vec![]).await,
        "0"
    );
}

/// Every count column equals what it counts.
async fn assert_counts_consistent(client: &Client) {
    let checks = [
        ("issues", "SELECT count(*) FROM issues i WHERE rioter_count != (SELECT count(*) FROM user_issues u WHERE u.issue_id = i.id)"),
        ("issue_organisation", "SELECT count(*) FROM issue_organisation io WHERE rioter_count != (SELECT count(*) FROM user_issues u WHERE u.issue_id = io.issue_id AND u.organisation_id = io.organisation_id)"),
        ("feed authors are members", "SELECT count(*) FROM feed f WHERE NOT EXISTS (SELECT 1 FROM user_issues u WHERE u.issue_id = f.issue_id AND u.user_id = f.user_id)"),
    ];
    for (what, sql) in checks {
        assert_eq!(
            scalar(client, sql, vec![]).await,
            "0",
            "{what} inconsistent"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_seed_is_consistent_and_loads_once() {
    let primary = TestPrimary::start().await;
    let client = migrated(&primary).await;
    assert!(matches!(
        seed::demo(&client).await.expect("seed"),
        seed::DemoOutcome::Loaded(_)
    ));
    let issues: i64 = scalar(&client, "SELECT count(*) FROM issues", vec![])
        .await
        .parse()
        .expect("n");
    assert!(
        (15..=25).contains(&issues),
        "about 19 demo issues, got {issues}"
    );
    assert_counts_consistent(&client).await;
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM country_breakdown cb WHERE rioter_count != (SELECT count(*) FROM user_issues u JOIN users us ON us.id = u.user_id WHERE u.issue_id = cb.issue_id AND us.country = cb.country_code)", vec![]).await,
        "0"
    );
    assert!(search(&client, "pothol*")
        .await
        .to_lowercase()
        .contains("pothole"));
    assert!(
        matches!(seed::demo(&client).await.expect("again"), seed::DemoOutcome::Skipped(n) if n == issues)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_synthetic_seed_is_consistent_and_deterministic() {
    let args = seed::SyntheticArgs {
        issues: 300,
        users: 400,
        organisations: 20,
        synonyms: 200,
        memberships_per_user: 3,
        feed: 1500,
        zipf: 1.0,
        seed: 42,
    };
    let mut fingerprints = Vec::new();
    for _ in 0..2 {
        let primary = TestPrimary::start().await;
        let client = migrated(&primary).await;
        let counts = seed::synthetic(&client, &args, |_| {})
            .await
            .expect("synthetic");
        assert_eq!(counts.issues, 300);
        assert_eq!(counts.feed, 1500);
        assert_counts_consistent(&client).await;
        // Zipf: the most popular issue has many more members than the median.
        let top: i64 = scalar(&client, "SELECT max(rioter_count) FROM issues", vec![])
            .await
            .parse()
            .expect("top");
        assert!(top > 50, "top issue has {top} members");
        fingerprints.push(
            scalar(
                &client,
                "SELECT group_concat(id || name || rioter_count, ',') FROM (SELECT * FROM issues ORDER BY id)",
                vec![],
            )
            .await,
        );
        let again = seed::synthetic(&client, &args, |_| {}).await;
        assert!(matches!(again, Err(seed::SeedError::NotEmpty(300))));
    }
    assert_eq!(fingerprints[0], fingerprints[1], "same seed, same data");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_queries_are_served_by_indexes() {
    let primary = TestPrimary::start().await;
    let client = migrated(&primary).await;
    let queries = [
        "SELECT id FROM issues ORDER BY rioter_count DESC, id LIMIT 20",
        "SELECT id FROM issues ORDER BY created_at DESC, id LIMIT 20",
        "SELECT id FROM issues ORDER BY trending_delta DESC, id LIMIT 20",
        "SELECT id FROM issues WHERE category = 'health' ORDER BY rioter_count DESC, id LIMIT 20",
        "SELECT id FROM issues WHERE category = 'health' ORDER BY created_at DESC, id LIMIT 20",
        "SELECT id FROM issues WHERE category = 'health' ORDER BY trending_delta DESC, id LIMIT 20",
        "SELECT id FROM feed WHERE issue_id = 'x' ORDER BY created_at DESC, id LIMIT 20",
        "SELECT id FROM feed_archive WHERE issue_id = 'x' ORDER BY created_at DESC, id LIMIT 20",
        "SELECT id FROM actions WHERE issue_id = 'x' ORDER BY created_at, id LIMIT 20",
        "SELECT id FROM organisations ORDER BY name, id LIMIT 20",
        "SELECT count(*) FROM user_issues WHERE issue_id = 'x' AND organisation_id = 'y'",
    ];
    for sql in queries {
        let rows = client
            .query(&format!("EXPLAIN QUERY PLAN {sql}"), vec![])
            .await
            .expect("plan");
        let plan: Vec<String> = rows
            .iter()
            .filter_map(|r| match r.last() {
                Some(Value::Text { value }) => Some(value.to_string()),
                _ => None,
            })
            .collect();
        let plan = plan.join(" | ");
        assert!(!plan.contains("TEMP B-TREE"), "{sql}: {plan}");
        assert!(
            !plan.starts_with("SCAN") || plan.contains("USING"),
            "{sql}: {plan}"
        );
    }
}

/// Each migration applies to a database that already holds the ones before
/// it and data (as on a running system), and keeps that data whole.
#[tokio::test(flavor = "multi_thread")]
async fn migrations_apply_one_by_one_onto_data() {
    let primary = TestPrimary::start().await;
    let client = primary.client();
    let all = load_dir(&migrations_dir()).expect("load");
    Migrator::new(client.clone(), all[..1].to_vec())
        .up(|_| {})
        .await
        .expect("first migration");
    let args = seed::SyntheticArgs {
        issues: 500,
        users: 300,
        organisations: 20,
        synonyms: 300,
        memberships_per_user: 2,
        feed: 2000,
        zipf: 1.0,
        seed: 7,
    };
    seed::synthetic(&client, &args, |_| {})
        .await
        .expect("data on the first schema");
    for n in 2..=all.len() {
        let applied = Migrator::new(client.clone(), all[..n].to_vec())
            .up(|_| {})
            .await
            .unwrap_or_else(|e| panic!("migration {n} onto data: {e}"));
        assert_eq!(applied, vec![all[n - 1].id]);
        assert_eq!(
            scalar(&client, "SELECT count(*) FROM issues", vec![]).await,
            "500"
        );
        assert_eq!(
            scalar(&client, "SELECT count(*) FROM feed", vec![]).await,
            "2000"
        );
    }
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM issues_fts", vec![]).await,
        "500",
        "search back-filled"
    );
    assert_eq!(
        scalar(&client, "SELECT count(*) FROM feed_all", vec![]).await,
        "2000"
    );
    assert_counts_consistent(&client).await;
}
