//! Country breakdown: members of each issue by their country
//! (`users.country`; members without one are not counted). The job reads
//! what the breakdown should be and what it is, and writes only the
//! difference.

use std::collections::BTreeMap;

/// (issue id, country code) -> members.
pub type Breakdown = BTreeMap<(String, String), i64>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Insert the row, or set its count.
    Set {
        issue_id: String,
        country_code: String,
        rioter_count: i64,
    },
    /// The issue has no members from this country any more.
    Remove {
        issue_id: String,
        country_code: String,
    },
}

/// What turns `current` into `wanted`; nothing when they are the same.
/// Countries with no members are removed rather than kept at 0.
pub fn diff(wanted: &Breakdown, current: &Breakdown) -> Vec<Change> {
    let mut changes = Vec::new();
    for ((issue_id, country_code), n) in wanted {
        if *n > 0 && current.get(&(issue_id.clone(), country_code.clone())) != Some(n) {
            changes.push(Change::Set {
                issue_id: issue_id.clone(),
                country_code: country_code.clone(),
                rioter_count: *n,
            });
        }
    }
    for (issue_id, country_code) in current.keys() {
        let key = (issue_id.clone(), country_code.clone());
        if wanted.get(&key).copied().unwrap_or(0) <= 0 {
            changes.push(Change::Remove {
                issue_id: key.0,
                country_code: key.1,
            });
        }
    }
    changes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breakdown(rows: &[(&str, &str, i64)]) -> Breakdown {
        rows.iter()
            .map(|(i, c, n)| ((i.to_string(), c.to_string()), *n))
            .collect()
    }

    #[test]
    fn only_differences_are_written() {
        let wanted = breakdown(&[("a", "GB", 3), ("a", "FR", 1), ("b", "DE", 2)]);
        let current = breakdown(&[("a", "GB", 3), ("a", "FR", 2), ("b", "US", 4)]);
        let changes = diff(&wanted, &current);
        assert_eq!(
            changes,
            vec![
                Change::Set {
                    issue_id: "a".into(),
                    country_code: "FR".into(),
                    rioter_count: 1
                },
                Change::Set {
                    issue_id: "b".into(),
                    country_code: "DE".into(),
                    rioter_count: 2
                },
                Change::Remove {
                    issue_id: "b".into(),
                    country_code: "US".into()
                },
            ]
        );
    }

    #[test]
    fn the_same_breakdown_needs_nothing() {
        let b = breakdown(&[("a", "GB", 3)]);
        assert!(diff(&b, &b).is_empty());
        assert!(diff(&Breakdown::new(), &Breakdown::new()).is_empty());
        let zero = breakdown(&[("a", "GB", 0)]);
        assert!(diff(&zero, &Breakdown::new()).is_empty(), "no zero rows");
    }
}
