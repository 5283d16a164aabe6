//! Issues: `GET /api/issues` and `GET /api/issues/:id`, straight from the
//! primary. (Search, cursors and the KV cache come with the read path.)

use serde_json::{json, Value};
use worker::Response;

use crate::context::{json_response, Ctx};
use crate::error::{AppError, AppResult};

pub const CATEGORIES: &[&str] = &[
    "transport",
    "health",
    "environment",
    "housing",
    "education",
    "economy",
    "community",
    "safety",
    "technology",
    "democracy",
];

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// A syntactically valid issue id (a UUID, lower-cased).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssueId(String);

impl IssueId {
    pub fn parse(raw: &str) -> AppResult<IssueId> {
        uuid::Uuid::parse_str(raw)
            .map(|u| IssueId(u.hyphenated().to_string()))
            .map_err(|_| AppError::validation("id", "must be a UUID"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub category: Option<&'static str>,
    pub limit: u32,
}

impl ListQuery {
    /// From URL query pairs; unknown parameters are ignored, bad values are
    /// 400s that say what is accepted.
    pub fn parse<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> AppResult<ListQuery>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let mut q = ListQuery {
            category: None,
            limit: DEFAULT_LIMIT,
        };
        for (key, value) in pairs {
            let value = value.as_ref();
            match key.as_ref() {
                "category" if !value.is_empty() => {
                    q.category = Some(
                        CATEGORIES
                            .iter()
                            .find(|c| c.eq_ignore_ascii_case(value))
                            .copied()
                            .ok_or_else(|| {
                                AppError::validation(
                                    "category",
                                    format!("must be one of {}", CATEGORIES.join(", ")),
                                )
                            })?,
                    );
                }
                "limit" => {
                    q.limit = match value.parse::<u32>() {
                        Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                        _ => {
                            return Err(AppError::validation(
                                "limit",
                                format!("must be a whole number from 1 to {MAX_LIMIT}"),
                            ))
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(q)
    }
}

const ISSUE_COLUMNS: &str =
    "i.id, i.name, i.category, i.description, i.rioter_count, i.trending_delta, i.created_at, i.updated_at";

pub async fn list(ctx: &Ctx, query: &ListQuery) -> AppResult<Response> {
    let sql = format!(
        "SELECT {ISSUE_COLUMNS} FROM issues i WHERE (?1 IS NULL OR i.category = ?1) \
         ORDER BY i.rioter_count DESC, i.id LIMIT ?2"
    );
    let category = query
        .category
        .map_or(libsql::Value::Null, |c| libsql::Value::Text(c.to_owned()));
    let rows = ctx
        .db()
        .query(
            &sql,
            vec![category, libsql::Value::Integer(i64::from(query.limit))],
        )
        .await?;
    Ok(json_response(200, &json!({ "items": rows }))?)
}

pub async fn get(ctx: &Ctx, raw_id: &str) -> AppResult<Response> {
    let id = IssueId::parse(raw_id)?;
    // One statement: the issue, its organisations and its action count.
    let sql = format!(
        "SELECT {ISSUE_COLUMNS}, \
           (SELECT json_group_array(json_object('id', o.id, 'name', o.name, 'rioter_count', io.rioter_count)) \
              FROM (SELECT * FROM issue_organisation WHERE issue_id = i.id ORDER BY rioter_count DESC) io \
              JOIN organisations o ON o.id = io.organisation_id) AS organisations, \
           (SELECT count(*) FROM actions a WHERE a.issue_id = i.id) AS action_count \
         FROM issues i WHERE i.id = ?1"
    );
    let mut rows = ctx
        .db()
        .query(&sql, vec![libsql::Value::Text(id.as_str().to_owned())])
        .await?;
    let Some(mut issue) = rows.pop() else {
        return Err(AppError::not_found(format!(
            "no issue has the id {}",
            id.as_str()
        )));
    };
    // json_group_array comes back as text; embed it as JSON.
    if let Some(Value::String(orgs)) = issue.get("organisations") {
        let parsed: Value = serde_json::from_str(orgs).unwrap_or_else(|_| json!([]));
        issue.insert("organisations".into(), parsed);
    }
    Ok(json_response(200, &Value::Object(issue))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_ids_must_be_uuids() {
        let id = IssueId::parse("0B7F6C1E-5A1D-4C3E-9B8A-2F4D6E8A0C11").expect("uuid");
        assert_eq!(id.as_str(), "0b7f6c1e-5a1d-4c3e-9b8a-2f4d6e8a0c11");
        for bad in [
            "",
            "42",
            "'; DROP TABLE issues; --",
            "0b7f6c1e-5a1d-4c3e-9b8a",
        ] {
            assert_eq!(IssueId::parse(bad).unwrap_err().status, 400);
        }
    }

    #[test]
    fn list_queries_are_validated() {
        assert_eq!(
            ListQuery::parse::<&str, &str>([]).expect("defaults"),
            ListQuery {
                category: None,
                limit: DEFAULT_LIMIT
            }
        );
        let q =
            ListQuery::parse([("category", "Transport"), ("limit", "5"), ("x", "y")]).expect("ok");
        assert_eq!(
            q,
            ListQuery {
                category: Some("transport"),
                limit: 5
            }
        );
        for (k, v) in [
            ("limit", "0"),
            ("limit", "101"),
            ("limit", "ten"),
            ("category", "cheese"),
        ] {
            let e = ListQuery::parse([(k, v)]).unwrap_err();
            assert_eq!((e.status, e.code), (400, "validation_failed"), "{k}={v}");
        }
    }
}
