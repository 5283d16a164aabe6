//! The statements of the jobs. Each takes exactly the arguments it uses
//! (the primary refuses unused ones); a test checks that.

use crate::store::value::{self as v, opt_text, text};

use super::{health, Job, LEASE_SECS};
use crate::store::db::Query;

const NOW: &str = "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')";

/// Issues of a batch: after cursor `?1` ('' for the start), `?2` of them.
const BATCH: &str = "SELECT id FROM issues WHERE id > ?1 ORDER BY id LIMIT ?2";

fn batch_args(cursor: Option<&str>, size: u32) -> Vec<v::Value> {
    vec![text(cursor.unwrap_or("")), v::int(i64::from(size))]
}

/// Takes the job's lease (see the module doc of [`super`]): lapsed runs
/// are marked failed, the new run is inserted only if none is running, and
/// the primary's clock and the last run's cursor come back.
/// Results: 0 lapsed runs, 1 the insert (affected 1: the lease is ours),
/// 2 one row (`now`, `today`, `archive_before`, `cursor`, `holder`).
pub fn acquire(job: Job, run_id: &str) -> Vec<Query> {
    let name = job.name();
    vec![
        Query::new(
            format!(
                "UPDATE job_runs SET status = 'failed', finished_at = {NOW}, lease_until = NULL, \
                 error = 'lease expired: the run stopped without finishing' \
                 WHERE job = ?1 AND status = 'running' AND (lease_until IS NULL OR lease_until <= {NOW})"
            ),
            vec![text(name)],
        ),
        Query::new(
            format!(
                "INSERT INTO job_runs (id, job, status, lease_until) \
                 SELECT ?1, ?2, 'running', strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+{LEASE_SECS} seconds') \
                 WHERE NOT EXISTS (SELECT 1 FROM job_runs WHERE job = ?2 AND status = 'running')"
            ),
            vec![text(run_id), text(name)],
        ),
        Query::new(
            format!(
                "SELECT {NOW} AS now, date('now') AS today, \
                 strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-90 days') AS archive_before, \
                 (SELECT cursor FROM job_runs WHERE job = ?1 AND status <> 'running' \
                  ORDER BY started_at DESC, id LIMIT 1) AS cursor, \
                 (SELECT json_object('id', id, 'started_at', started_at, 'lease_until', lease_until) \
                  FROM job_runs WHERE job = ?1 AND status = 'running' AND id <> ?2) AS holder"
            ),
            vec![text(name), text(run_id)],
        ),
    ]
}

/// The first two statements of every batch transaction: extend the lease
/// and record progress, then fail the transaction (integer overflow, the
/// one error SQLite raises from a plain expression) if no row was updated,
/// that is if the lease is no longer this run's.
pub fn heartbeat(run_id: &str, cursor: Option<&str>, touched: u64) -> Vec<Query> {
    vec![
        Query::new(
            format!(
                "UPDATE job_runs SET lease_until = strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '+{LEASE_SECS} seconds'), \
                 cursor = ?2, rows_touched = ?3 WHERE id = ?1 AND status = 'running'"
            ),
            vec![
                text(run_id),
                opt_text(cursor),
                v::int(touched as i64),
            ],
        ),
        Query::new(FENCE, vec![]),
    ]
}

/// Raises an error unless the statement before it changed a row.
pub const FENCE: &str = "SELECT CASE WHEN changes() = 1 THEN 1 \
     ELSE abs(-9223372036854775807 - 1) END AS lease_held";

/// Statements [`heartbeat`] puts before a batch's own.
pub const HEARTBEAT_LEN: usize = 2;

/// Ends the run: its status, rows, error, cursor and details; the lease
/// goes. Only while the run still holds it.
pub fn finish(
    run_id: &str,
    status: &str,
    touched: u64,
    error: Option<&str>,
    cursor: Option<&str>,
    details: Option<&str>,
) -> Query {
    Query::new(
        format!(
            "UPDATE job_runs SET status = ?2, finished_at = {NOW}, rows_touched = ?3, error = ?4, \
             cursor = ?5, details = ?6, lease_until = NULL WHERE id = ?1 AND status = 'running'"
        ),
        vec![
            text(run_id),
            text(status),
            v::int(touched as i64),
            opt_text(error),
            opt_text(cursor),
            opt_text(details),
        ],
    )
}

/// Recent runs, newest first; of one job or all.
pub fn list_runs(job: Option<Job>, limit: u32) -> Query {
    Query::new(
        "SELECT id, job, status, started_at, finished_at, \
         CAST(round((julianday(finished_at) - julianday(started_at)) * 86400000) AS INTEGER) AS duration_ms, \
         rows_touched, error, cursor, details, lease_until FROM job_runs WHERE (?1 IS NULL OR job = ?1) \
         ORDER BY started_at DESC, id LIMIT ?2",
        vec![opt_text(job.map(Job::name)), v::int(i64::from(limit))],
    )
}

/// How many issues the batch has and its last id.
pub fn batch_bounds(cursor: Option<&str>, size: u32) -> Query {
    Query::new(
        format!("SELECT count(*) AS n, max(id) AS last FROM ({BATCH})"),
        batch_args(cursor, size),
    )
}

/// `trending_delta` of the batch's issues: joins in the 7 UTC days ending
/// `?3` (today) minus joins in the 7 days before; changed rows come back.
pub fn trending(cursor: Option<&str>, size: u32, today: &str) -> Query {
    let mut args = batch_args(cursor, size);
    args.push(text(today));
    Query::new(
        format!(
            "UPDATE issues SET trending_delta = t.delta FROM ( \
               SELECT b.id, coalesce((SELECT sum(CASE WHEN d.day > date(?3, '-7 days') \
                 THEN d.joins ELSE -d.joins END) FROM issue_daily d \
                 WHERE d.issue_id = b.id AND d.day > date(?3, '-14 days') AND d.day <= ?3), 0) AS delta \
               FROM ({BATCH}) b) AS t \
             WHERE issues.id = t.id AND issues.trending_delta <> t.delta RETURNING issues.id"
        ),
        args,
    )
}

/// Members per issue of the batch, taken from `user_issues`.
const ACTUAL: &str = "(SELECT count(*) FROM user_issues u WHERE u.issue_id = i.id)";
const ACTUAL_ORG: &str = "(SELECT count(*) FROM user_issues u \
     WHERE u.issue_id = io.issue_id AND u.organisation_id = io.organisation_id)";

/// reconcile_counts: the drift of the batch (issues, then organisations),
/// the corrections, and the issues with joins or leaves since yesterday
/// (their counter objects are live). Results: 0 issue drift (`id`, `was`,
/// `now`), 1 organisation drift (`issue_id`, `organisation_id`, `was`,
/// `now`), 2 issue update, 3 organisation update, 4 active issues (`id`).
pub fn reconcile(cursor: Option<&str>, size: u32, today: &str) -> Vec<Query> {
    let args = batch_args(cursor, size);
    let issues = format!(
        "SELECT i.id, i.rioter_count AS was, {ACTUAL} AS now FROM issues i WHERE i.id IN ({BATCH})"
    );
    let orgs = format!(
        "SELECT io.id, io.issue_id, io.organisation_id, io.rioter_count AS was, {ACTUAL_ORG} AS now \
         FROM issue_organisation io WHERE io.issue_id IN ({BATCH})"
    );
    let mut active_args = args.clone();
    active_args.push(text(today));
    vec![
        Query::new(
            format!("SELECT id, was, now FROM ({issues}) WHERE was <> now ORDER BY id"),
            args.clone(),
        ),
        Query::new(
            format!(
                "SELECT issue_id, organisation_id, was, now FROM ({orgs}) WHERE was <> now \
                 ORDER BY issue_id, organisation_id"
            ),
            args.clone(),
        ),
        Query::new(
            format!(
                "UPDATE issues SET rioter_count = c.now, updated_at = {NOW} FROM ({issues}) AS c \
                 WHERE issues.id = c.id AND issues.rioter_count <> c.now"
            ),
            args.clone(),
        ),
        Query::new(
            format!(
                "UPDATE issue_organisation SET rioter_count = c.now FROM ({orgs}) AS c \
                 WHERE issue_organisation.id = c.id AND issue_organisation.rioter_count <> c.now"
            ),
            args,
        ),
        Query::new(
            format!(
                "SELECT DISTINCT issue_id AS id FROM issue_daily WHERE issue_id IN ({BATCH}) \
                 AND day >= date(?3, '-1 day') AND (joins > 0 OR leaves > 0) ORDER BY issue_id"
            ),
            active_args,
        ),
    ]
}

/// health, read: per issue of the batch, members and activity in the
/// window ending `?3`, and the stored scores (NULL when none).
pub fn health_inputs(cursor: Option<&str>, size: u32, today: &str) -> Query {
    let mut args = batch_args(cursor, size);
    args.push(text(today));
    let window = health::WINDOW_DAYS;
    Query::new(
        format!(
            "SELECT b.id, {ACTUAL} AS members, \
               coalesce(sum(d.joins), 0) AS joins, coalesce(sum(d.leaves), 0) AS leaves, \
               coalesce(sum(d.posts), 0) AS posts, coalesce(sum(d.actions), 0) AS actions, \
               h.needs_met, h.membership, h.influence, h.connection \
             FROM ({BATCH}) b JOIN issues i ON i.id = b.id \
             LEFT JOIN issue_daily d ON d.issue_id = b.id \
               AND d.day > date(?3, '-{window} days') AND d.day <= ?3 \
             LEFT JOIN community_health h ON h.issue_id = b.id \
             GROUP BY b.id ORDER BY b.id"
        ),
        args,
    )
}

/// health, write: the issue's scores, only when they differ.
pub fn health_upsert(issue_id: &str, s: &health::Scores) -> Query {
    Query::new(
        format!(
            "INSERT INTO community_health (issue_id, needs_met, membership, influence, connection) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (issue_id) DO UPDATE SET \
             needs_met = excluded.needs_met, membership = excluded.membership, \
             influence = excluded.influence, connection = excluded.connection, computed_at = {NOW} \
             WHERE needs_met <> excluded.needs_met OR membership <> excluded.membership \
             OR influence <> excluded.influence OR connection <> excluded.connection"
        ),
        vec![
            text(issue_id),
            v::int(s.needs_met),
            v::int(s.membership),
            v::int(s.influence),
            v::int(s.connection),
        ],
    )
}

/// countries, read: 0 the batch's issues, 1 members by country, 2 the
/// stored breakdown.
pub fn countries_inputs(cursor: Option<&str>, size: u32) -> Vec<Query> {
    let args = batch_args(cursor, size);
    vec![
        Query::new(BATCH, args.clone()),
        Query::new(
            format!(
                "SELECT ui.issue_id, us.country AS country_code, count(*) AS n \
                 FROM user_issues ui JOIN users us ON us.id = ui.user_id \
                 WHERE ui.issue_id IN ({BATCH}) AND us.country IS NOT NULL \
                 GROUP BY ui.issue_id, us.country"
            ),
            args.clone(),
        ),
        Query::new(
            format!(
                "SELECT issue_id, country_code, rioter_count AS n FROM country_breakdown \
                 WHERE issue_id IN ({BATCH})"
            ),
            args,
        ),
    ]
}

pub fn country_change(change: &super::countries::Change, new_id: &str) -> Query {
    use super::countries::Change;
    match change {
        Change::Set {
            issue_id,
            country_code,
            rioter_count,
        } => Query::new(
            format!(
                "INSERT INTO country_breakdown (id, issue_id, country_code, rioter_count) \
                 VALUES (?1, ?2, ?3, ?4) ON CONFLICT (issue_id, country_code) DO UPDATE SET \
                 rioter_count = excluded.rioter_count, updated_at = {NOW} \
                 WHERE rioter_count <> excluded.rioter_count"
            ),
            vec![
                text(new_id),
                text(issue_id),
                text(country_code),
                v::int(*rioter_count),
            ],
        ),
        Change::Remove {
            issue_id,
            country_code,
        } => Query::new(
            "DELETE FROM country_breakdown WHERE issue_id = ?1 AND country_code = ?2",
            vec![text(issue_id), text(country_code)],
        ),
    }
}

/// archive_feed, one batch: the oldest `?2` posts created before `?1` are
/// copied to `feed_archive` and deleted from `feed`, in one transaction;
/// a post is deleted only if its archived copy exists, and one already
/// archived is not copied twice. Results: 0 the issues touched (`issue_id`),
/// 1 the copy, 2 the delete (affected: posts moved).
pub fn archive(before: &str, size: u32) -> Vec<Query> {
    let args = vec![text(before), v::int(i64::from(size))];
    let oldest = "SELECT id, issue_id, user_id, content, likes, created_at FROM feed \
                  WHERE created_at < ?1 ORDER BY created_at, id LIMIT ?2";
    vec![
        Query::new(
            format!("SELECT DISTINCT issue_id FROM ({oldest})"),
            args.clone(),
        ),
        Query::new(
            format!(
                "INSERT INTO feed_archive (id, issue_id, user_id, content, likes, created_at) \
                 SELECT * FROM ({oldest}) WHERE true ON CONFLICT (id) DO NOTHING"
            ),
            args.clone(),
        ),
        Query::new(
            format!(
                "DELETE FROM feed WHERE id IN (SELECT id FROM ({oldest})) \
                 AND EXISTS (SELECT 1 FROM feed_archive a WHERE a.id = feed.id)"
            ),
            args,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The highest `?N` a statement uses.
    fn highest_placeholder(sql: &str) -> usize {
        let bytes = sql.as_bytes();
        let mut highest = 0;
        for (i, b) in bytes.iter().enumerate() {
            if *b == b'?' {
                let digits: String = sql[i + 1..]
                    .chars()
                    .take_while(char::is_ascii_digit)
                    .collect();
                highest = highest.max(digits.parse().unwrap_or(0));
            }
        }
        highest
    }

    #[test]
    fn every_statement_uses_exactly_its_arguments() {
        let scores = health::Scores::default();
        let set = super::super::countries::Change::Set {
            issue_id: "i".into(),
            country_code: "GB".into(),
            rioter_count: 1,
        };
        let remove = super::super::countries::Change::Remove {
            issue_id: "i".into(),
            country_code: "GB".into(),
        };
        let mut all = acquire(Job::Trending, "r");
        all.extend(heartbeat("r", Some("c"), 3));
        all.push(finish("r", "succeeded", 1, None, None, None));
        all.push(list_runs(None, 20));
        all.push(batch_bounds(None, 10));
        all.push(trending(None, 10, "2026-11-25"));
        all.extend(reconcile(Some("c"), 10, "2026-11-25"));
        all.push(health_inputs(None, 10, "2026-11-25"));
        all.push(health_upsert("i", &scores));
        all.extend(countries_inputs(None, 10));
        all.push(country_change(&set, "n"));
        all.push(country_change(&remove, "n"));
        all.extend(archive("2026-08-27T00:00:00.000Z", 10));
        for q in all {
            assert_eq!(highest_placeholder(&q.sql), q.args.len(), "{}", q.sql);
        }
    }

    #[test]
    fn the_lease_is_fenced() {
        let beat = heartbeat("r", None, 0);
        assert_eq!(beat.len(), HEARTBEAT_LEN);
        assert!(beat[0].sql.contains("WHERE id = ?1 AND status = 'running'"));
        assert!(beat[1].sql.contains("changes() = 1"));
        assert!(acquire(Job::Health, "r")[1]
            .sql
            .contains("NOT EXISTS (SELECT 1 FROM job_runs WHERE job = ?2 AND status = 'running')"));
    }
}

/// The statements against the real engine (no Worker needed).
#[cfg(test)]
mod on_libsql {
    use super::*;
    use crate::store::test_db::TestDb;

    const TODAY: &str = "2026-11-25";
    const A: &str = "10000000-0000-4000-8000-000000000001";
    const B: &str = "20000000-0000-4000-8000-000000000002";

    fn db_with_issues() -> TestDb {
        let db = TestDb::migrated();
        db.exec(&format!(
            "INSERT INTO issues (id, name, category) VALUES ('{A}', 'A', 'transport'), ('{B}', 'B', 'health');"
        ));
        db
    }

    fn take(db: &mut TestDb, job: Job, run: &str) -> bool {
        let w = db.transaction(acquire(job, run)).expect("acquire");
        w[1].affected == 1
    }

    #[test]
    fn one_run_holds_the_lease_and_a_lapsed_one_is_taken_over() {
        let mut db = TestDb::migrated();
        assert!(take(&mut db, Job::Trending, "r1"));
        assert!(!take(&mut db, Job::Trending, "r2"), "r1 holds it");
        assert!(take(&mut db, Job::Health, "h1"), "other jobs are free");
        db.exec("UPDATE job_runs SET lease_until = '2000-01-01T00:00:00.000Z' WHERE id = 'r1'");
        assert!(take(&mut db, Job::Trending, "r3"), "r1's lease lapsed");
        assert_eq!(
            db.int("SELECT count(*) FROM job_runs WHERE id = 'r1' AND status = 'failed' AND error LIKE 'lease expired%'"),
            1
        );
        // r1 wakes up: its heartbeat fails and its batch writes nothing.
        let mut qs = heartbeat("r1", None, 0);
        qs.push(Query::new("UPDATE issues SET rioter_count = 99", vec![]));
        let e = db.transaction(qs).expect_err("fenced");
        assert!(
            format!("{:?}", e.details).contains("integer overflow"),
            "{e:?}"
        );
        let mut qs = heartbeat("r3", Some("c"), 7);
        qs.push(Query::new("SELECT 1", vec![]));
        db.transaction(qs).expect("the holder's batch");
        assert_eq!(
            db.int("SELECT rows_touched FROM job_runs WHERE id = 'r3'"),
            7
        );
        let w = db
            .transaction(vec![finish("r3", "succeeded", 9, None, None, Some("{}"))])
            .expect("finish");
        assert_eq!(w[0].affected, 1);
        assert!(take(&mut db, Job::Trending, "r4"), "free after finishing");
        db.exec("INSERT INTO job_runs (id, job, status) VALUES ('odd', 'countries', 'running')");
        assert!(
            take(&mut db, Job::Countries, "c1"),
            "a running row without a lease blocks nothing"
        );
    }

    #[test]
    fn trending_is_this_weeks_joins_minus_last_weeks() {
        let mut db = db_with_issues();
        db.exec(&format!(
            "INSERT INTO issue_daily (issue_id, day, joins, leaves) VALUES
               ('{A}', '2026-11-25', 5, 9), ('{A}', '2026-11-19', 2, 0),
               ('{A}', '2026-11-18', 4, 0), ('{A}', '2026-11-12', 1, 0),
               ('{A}', '2026-11-11', 100, 0),
               ('{B}', '2026-11-15', 3, 0);"
        ));
        let w = db
            .transaction(vec![trending(None, 10, TODAY)])
            .expect("run");
        assert_eq!(w[0].affected, 2);
        assert_eq!(
            db.int(&format!(
                "SELECT trending_delta FROM issues WHERE id = '{A}'"
            )),
            2
        );
        assert_eq!(
            db.int(&format!(
                "SELECT trending_delta FROM issues WHERE id = '{B}'"
            )),
            -3
        );
        let again = db
            .transaction(vec![trending(None, 10, TODAY)])
            .expect("again");
        assert_eq!(again[0].affected, 0, "nothing changes the second time");
        let (first, rest) = (
            db.transaction(vec![batch_bounds(None, 1)]).expect("bounds"),
            db.transaction(vec![batch_bounds(Some(A), 1)])
                .expect("bounds"),
        );
        assert_eq!(first[0].rows[0]["last"], A);
        assert_eq!(rest[0].rows[0]["last"], B);
    }

    #[test]
    fn reconcile_repairs_drift_once() {
        let mut db = db_with_issues();
        let org = "30000000-0000-4000-8000-000000000003";
        db.exec(&format!(
            "INSERT INTO organisations (id, name) VALUES ('{org}', 'Council');
             INSERT INTO issue_organisation (id, issue_id, organisation_id, rioter_count) VALUES ('io', '{A}', '{org}', 7);
             INSERT INTO users (id) VALUES ('u1'), ('u2');
             INSERT INTO user_issues (id, user_id, issue_id, organisation_id) VALUES
               ('m1', 'u1', '{A}', '{org}'), ('m2', 'u2', '{A}', NULL);
             UPDATE issues SET rioter_count = 5 WHERE id = '{B}';
             INSERT INTO issue_daily (issue_id, day, joins) VALUES ('{A}', '2026-11-24', 2);"
        ));
        let w = db.transaction(reconcile(None, 10, TODAY)).expect("run");
        assert_eq!(w[0].rows.len(), 2, "both issues drifted: {:?}", w[0].rows);
        assert_eq!(w[1].rows[0]["was"], 7);
        assert_eq!(w[1].rows[0]["now"], 1);
        assert_eq!((w[2].affected, w[3].affected), (2, 1));
        assert_eq!(w[4].rows.len(), 1, "A is active");
        assert_eq!(
            db.int(&format!("SELECT rioter_count FROM issues WHERE id = '{A}'")),
            2
        );
        assert_eq!(
            db.int(&format!("SELECT rioter_count FROM issues WHERE id = '{B}'")),
            0
        );
        let again = db.transaction(reconcile(None, 10, TODAY)).expect("again");
        assert!(again[0].rows.is_empty() && again[1].rows.is_empty());
        assert_eq!((again[2].affected, again[3].affected), (0, 0));
    }

    #[test]
    fn archive_moves_each_old_post_exactly_once() {
        let mut db = db_with_issues();
        db.exec(&format!(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 25)
             INSERT INTO feed (id, issue_id, content, created_at)
             SELECT 'old-' || i, '{A}', 'post', printf('2026-01-01T00:00:%02d.000Z', i) FROM n;
             INSERT INTO feed (id, issue_id, content, created_at) VALUES ('new', '{B}', 'recent', '2026-11-20T00:00:00.000Z');"
        ));
        let before = "2026-08-27T00:00:00.000Z";
        let mut moved = Vec::new();
        loop {
            let w = db.transaction(archive(before, 10)).expect("batch");
            moved.push(w[2].affected);
            if w[2].affected < 10 {
                break;
            }
        }
        assert_eq!(moved, [10, 10, 5]);
        assert_eq!(db.int("SELECT count(*) FROM feed_archive"), 25);
        assert_eq!(db.int("SELECT count(*) FROM feed"), 1);
        assert_eq!(db.int("SELECT count(*) FROM feed_all"), 26);
        assert_eq!(db.int("SELECT count(DISTINCT id) FROM feed_all"), 26);
        let again = db.transaction(archive(before, 10)).expect("again");
        assert_eq!(again[2].affected, 0);
    }

    #[test]
    fn batches_are_read_through_indexes() {
        let mut db = TestDb::migrated();
        let plan = db.query_plan(&archive("x", 1)[2]);
        assert!(plan.contains("idx_feed_created"), "{plan}");
        assert!(!plan.contains("TEMP B-TREE"), "no sort of the feed: {plan}");
        for q in [trending(None, 1, TODAY), health_inputs(None, 1, TODAY)]
            .iter()
            .chain(reconcile(None, 1, TODAY).iter())
        {
            let plan = db.query_plan(q);
            // Only the batch itself (at most its size of rows) is scanned.
            let scans: Vec<&str> = plan
                .lines()
                .filter(|l| l.trim_start().starts_with("SCAN") && l.trim() != "SCAN b")
                .collect();
            assert!(scans.is_empty(), "{}\n{plan}", q.sql);
        }
    }

    #[test]
    fn health_and_country_inputs_read_the_batch() {
        let mut db = db_with_issues();
        db.exec(&format!(
            "INSERT INTO users (id, country) VALUES ('u1', 'GB'), ('u2', 'GB'), ('u3', NULL);
             INSERT INTO user_issues (id, user_id, issue_id) VALUES ('m1', 'u1', '{A}'), ('m2', 'u2', '{A}'), ('m3', 'u3', '{A}');
             INSERT INTO issue_daily (issue_id, day, joins, posts, actions) VALUES
               ('{A}', '2026-11-25', 3, 2, 1), ('{A}', '2026-10-01', 50, 0, 0);"
        ));
        let rows = db
            .reads(vec![health_inputs(None, 10, TODAY)])
            .expect("health")
            .remove(0);
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (&rows[0]["members"], &rows[0]["joins"], &rows[0]["posts"]),
            (&3.into(), &3.into(), &2.into()),
            "the window holds only the last 28 days"
        );
        assert!(rows[0]["needs_met"].is_null());
        let w = db
            .transaction(vec![health_upsert(A, &health::Scores::default())])
            .expect("upsert");
        assert_eq!(w[0].affected, 1);
        let w = db
            .transaction(vec![health_upsert(A, &health::Scores::default())])
            .expect("same scores");
        assert_eq!(w[0].affected, 0, "the same scores write nothing");
        let read = db.reads(countries_inputs(None, 10)).expect("countries");
        assert_eq!(read[0].len(), 2);
        assert_eq!(read[1].len(), 1);
        assert_eq!(read[1][0]["n"], 2);
        let set = super::super::countries::Change::Set {
            issue_id: A.into(),
            country_code: "GB".into(),
            rioter_count: 2,
        };
        let w = db
            .transaction(vec![country_change(&set, "cb1")])
            .expect("set");
        assert_eq!(w[0].affected, 1);
        let w = db
            .transaction(vec![country_change(&set, "cb2")])
            .expect("again");
        assert_eq!(w[0].affected, 0, "an unchanged count writes nothing");
    }
}
