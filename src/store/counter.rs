//! The SQL an IssueCounter flush sends: its counts as absolute values.

use crate::domain::counter::Counts;
use crate::store::db::Query;
use crate::store::value as v;

/// Writes `counts` to the primary as absolute values: the issue's
/// `rioter_count` and each linked organisation's, zero for a linked
/// organisation the counts do not name (its last member left, or a recount
/// found none). Rows already holding the value are left alone, so a
/// repeated flush writes nothing.
pub fn flush_queries(issue_id: &str, counts: &Counts) -> Vec<Query> {
    let text = |s: &str| v::text(s.to_owned());
    let mut qs = vec![Query::new(
        "UPDATE issues SET rioter_count = ?1, \
         updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now') \
         WHERE id = ?2 AND rioter_count <> ?1",
        vec![v::int(counts.total), text(issue_id)],
    )];
    for (org, n) in counts.organisations() {
        qs.push(Query::new(
            "UPDATE issue_organisation SET rioter_count = ?1 \
             WHERE issue_id = ?2 AND organisation_id = ?3 AND rioter_count <> ?1",
            vec![v::int(n), text(issue_id), text(org)],
        ));
    }
    let counted: Vec<v::Value> = counts
        .organisations()
        .filter(|(_, n)| *n > 0)
        .map(|(org, _)| text(org))
        .collect();
    let placeholders: Vec<String> = (2..counted.len() + 2).map(|i| format!("?{i}")).collect();
    let mut args = vec![text(issue_id)];
    args.extend(counted);
    qs.push(Query::new(
        format!(
            "UPDATE issue_organisation SET rioter_count = 0 \
             WHERE issue_id = ?1 AND rioter_count <> 0 AND organisation_id NOT IN ({})",
            placeholders.join(", ")
        ),
        args,
    ));
    qs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_sets_absolute_values() {
        let counts = Counts::from_groups([(None, 3), (Some("o".to_owned()), 2)]);
        let qs = flush_queries("i", &counts);
        assert_eq!(qs.len(), 3, "the issue, its one organisation, the rest");
        assert!(qs[0].sql.contains("SET rioter_count = ?1"));
        assert!(v::same(&qs[0].args[0], &v::int(5)));
        assert!(v::same(&qs[1].args[0], &v::int(2)));
    }

    /// On the primary's engine: the flush writes the counts, a repeated
    /// flush (a retried alarm) writes nothing, and an organisation whose
    /// members all left goes back to zero.
    #[test]
    fn flushes_on_the_engine_are_idempotent_and_zero_empty_organisations() {
        use crate::store::test_db::TestDb;
        let mut db = TestDb::migrated();
        db.exec(
            "INSERT INTO issues (id, name, category) VALUES ('i', 'Potholes', 'transport');
             INSERT INTO organisations (id, name) VALUES ('a', 'Council'), ('b', 'Water board');
             INSERT INTO issue_organisation (id, issue_id, organisation_id, rioter_count)
               VALUES ('ia', 'i', 'a', 0), ('ib', 'i', 'b', 7);",
        );
        let counts = Counts::from_groups([(None, 1), (Some("a".to_owned()), 2)]);
        let changed = |w: Vec<crate::store::db::Written>| w.iter().map(|w| w.affected).sum::<u64>();
        let first = db.transaction(flush_queries("i", &counts)).expect("flush");
        assert_eq!(changed(first), 3, "issue, a, and b back to zero");
        assert_eq!(db.int("SELECT rioter_count FROM issues WHERE id = 'i'"), 3);
        assert_eq!(
            db.int("SELECT rioter_count FROM issue_organisation WHERE id = 'ia'"),
            2
        );
        assert_eq!(
            db.int("SELECT rioter_count FROM issue_organisation WHERE id = 'ib'"),
            0
        );
        let again = db.transaction(flush_queries("i", &counts)).expect("flush");
        assert_eq!(changed(again), 0, "a retried flush writes nothing");
        // Nobody left with any organisation.
        let none = Counts::from_groups([(None, 1)]);
        db.transaction(flush_queries("i", &none)).expect("flush");
        assert_eq!(
            db.int("SELECT sum(rioter_count) FROM issue_organisation WHERE issue_id = 'i'"),
            0
        );
    }
}
