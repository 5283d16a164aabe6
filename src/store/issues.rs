//! Issues: list and search, detail, feed, actions and countries.
//!
//! Every loader returns the JSON body of its route and costs one round trip
//! to the primary (an existence check rides in the same pipeline where a 404
//! must be told apart from an empty list).

use crate::domain::writes::CATEGORIES;
use crate::store::value as v;
use serde_json::{json, Value};

use crate::domain::cursor::{CursorCodec, Position};
use crate::domain::ids::Id;
use crate::domain::paging::{self, Page};
use crate::domain::search::{SearchQuery, BM25};
use crate::http::error::{AppError, AppResult};
use crate::store::db::{Db, Query, Record};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    /// Most rioters first.
    Popular,
    /// Newest first.
    New,
    /// Largest trending delta first.
    Trending,
    /// Best search match first (bm25); only with `q`.
    Relevance,
}

impl Sort {
    pub fn name(self) -> &'static str {
        match self {
            Sort::Popular => "popular",
            Sort::New => "new",
            Sort::Trending => "trending",
            Sort::Relevance => "relevance",
        }
    }

    /// The column the order is on (descending, ties by ascending id).
    fn column(self) -> &'static str {
        match self {
            Sort::Popular => "rioter_count",
            Sort::New => "created_at",
            Sort::Trending => "trending_delta",
            Sort::Relevance => "score",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub q: Option<SearchQuery>,
    pub category: Option<&'static str>,
    pub sort: Sort,
    pub page: Page,
}

impl ListQuery {
    /// From URL query pairs; unknown parameters are ignored, bad values are
    /// 400s that say what is accepted.
    pub fn parse<K, V>(pairs: impl IntoIterator<Item = (K, V)>) -> AppResult<ListQuery>
    where
        K: AsRef<str>,
        V: AsRef<str>,
    {
        let pairs: Vec<(String, String)> = pairs
            .into_iter()
            .map(|(k, v)| (k.as_ref().to_owned(), v.as_ref().to_owned()))
            .collect();
        let mut q = None;
        let mut category = None;
        let mut sort = None;
        for (key, value) in &pairs {
            match key.as_str() {
                "q" => q = SearchQuery::parse(value),
                // An empty value is not one of the allowed ones either.
                "category" => {
                    category = Some(
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
                    )
                }
                "sort" => {
                    sort = Some(match value.as_str() {
                        "popular" => Sort::Popular,
                        "new" => Sort::New,
                        "trending" => Sort::Trending,
                        "relevance" => Sort::Relevance,
                        _ => {
                            return Err(AppError::validation(
                                "sort",
                                "must be one of trending, popular, new (or relevance with q)",
                            ))
                        }
                    })
                }
                _ => {}
            }
        }
        let sort = match (sort, &q) {
            (Some(Sort::Relevance), None) => {
                return Err(AppError::validation("sort", "relevance needs a search (q)"))
            }
            (Some(s), _) => s,
            (None, Some(_)) => Sort::Relevance,
            (None, None) => Sort::Popular,
        };
        Ok(ListQuery {
            q,
            category,
            sort,
            page: Page::parse(&pairs)?,
        })
    }

    /// What the cursor is bound to: everything but the page itself.
    pub fn canonical(&self) -> String {
        format!(
            "issues|q={}|category={}|sort={}",
            self.q
                .as_ref()
                .map(SearchQuery::canonical)
                .unwrap_or_default(),
            self.category.unwrap_or(""),
            self.sort.name()
        )
    }
}

pub const ISSUE_COLUMNS: &str = "i.id, i.name, i.category, i.description, i.rioter_count, \
     i.trending_delta, i.created_at, i.updated_at";

/// SQL and arguments for one page of a list or search.
pub fn list_query(q: &ListQuery, after: Option<&Position>) -> AppResult<Query> {
    let mut args: Vec<crate::store::value::Value> = Vec::new();
    let mut arg = |v: crate::store::value::Value| {
        args.push(v);
        format!("?{}", args.len())
    };
    let column = q.sort.column();
    let keyset = |arg: &mut dyn FnMut(crate::store::value::Value) -> String,
                  prefix: &str|
     -> AppResult<String> {
        let Some(pos) = after else {
            return Ok(String::new());
        };
        let key = crate::store::value::cursor_key(&pos.key, q.sort == Sort::New)?;
        let k = arg(key);
        let id = arg(v::text(pos.id.clone()));
        // Descending key, ascending id: rows after (k, id).
        Ok(format!(
            " AND ({prefix}{column} <= {k} AND ({prefix}{column} < {k} OR {prefix}id > {id}))"
        ))
    };
    let sql = match &q.q {
        None => {
            let mut filter = String::from("1 = 1");
            if let Some(c) = q.category {
                filter += &format!(" AND i.category = {}", arg(v::text(c)));
            }
            filter += &keyset(&mut arg, "i.")?;
            let limit = arg(v::int(i64::from(q.page.limit) + 1));
            format!(
                "SELECT {ISSUE_COLUMNS} FROM issues i WHERE {filter} \
                 ORDER BY i.{column} DESC, i.id LIMIT {limit}"
            )
        }
        Some(search) if q.sort == Sort::Relevance => {
            // Rank in the index alone, then join only the page to issues.
            let matching = arg(v::text(search.fts()));
            let mut inner = format!(
                "SELECT issue_id, {BM25} AS score FROM issues_fts WHERE issues_fts MATCH {matching}"
            );
            if let Some(pos) = after {
                let k = arg(crate::store::value::cursor_key(&pos.key, false)?);
                let id = arg(v::text(pos.id.clone()));
                inner += &format!(" AND ({BM25} > {k} OR ({BM25} = {k} AND issue_id > {id}))");
            }
            let limit = arg(v::int(i64::from(q.page.limit) + 1));
            let category = match q.category {
                // The page can only be cut after the category filter.
                Some(c) => format!(" WHERE i.category = {}", arg(v::text(c))),
                None => {
                    inner += &format!(" ORDER BY score, issue_id LIMIT {limit}");
                    String::new()
                }
            };
            format!(
                "SELECT {ISSUE_COLUMNS}, f.score AS score FROM ({inner}) f \
                 JOIN issues i ON i.id = f.issue_id{category} ORDER BY f.score, i.id LIMIT {limit}"
            )
        }
        Some(search) => {
            let matching = arg(v::text(search.fts()));
            let mut inner = format!(
                "SELECT {ISSUE_COLUMNS} FROM issues_fts f JOIN issues i ON i.id = f.issue_id \
                 WHERE issues_fts MATCH {matching}"
            );
            if let Some(c) = q.category {
                inner += &format!(" AND i.category = {}", arg(v::text(c)));
            }
            let after = keyset(&mut arg, "")?;
            let limit = arg(v::int(i64::from(q.page.limit) + 1));
            format!("SELECT * FROM ({inner}) WHERE 1 = 1{after} ORDER BY {column} DESC, id LIMIT {limit}")
        }
    };
    Ok(Query::new(sql, args))
}

pub async fn list(db: &Db, cursors: &CursorCodec, q: &ListQuery) -> AppResult<Value> {
    let canonical = q.canonical();
    let after = q.page.position(cursors, &canonical)?;
    let query = list_query(q, after.as_ref())?;
    let rows = db.queries(vec![query]).await?.pop().unwrap_or_default();
    let column = q.sort.column();
    let (mut items, next) = paging::split(rows, q.page.limit, column);
    for item in &mut items {
        item.remove("score");
    }
    Ok(json!({
        "items": items,
        "next_cursor": next.map(|p| cursors.encode(&canonical, &p)),
    }))
}

/// Parses JSON text columns (built with json_group_array/json_object) in place.
fn embed_json(record: &mut Record, columns: &[&str]) {
    for column in columns {
        if let Some(Value::String(text)) = record.get(*column) {
            let parsed = serde_json::from_str(text).unwrap_or(Value::Null);
            record.insert((*column).to_owned(), parsed);
        }
    }
}

fn found(rows: &[Record]) -> bool {
    !rows.is_empty()
}

fn exists_query(id: &Id) -> Query {
    Query::new(
        "SELECT 1 AS found FROM issues WHERE id = ?1",
        vec![v::text(id.as_str().to_owned())],
    )
}

fn not_found(id: &Id) -> AppError {
    AppError::not_found(format!("no issue has the id {}", id.as_str()))
}

pub async fn detail(db: &Db, id: &Id) -> AppResult<Value> {
    let sql = format!(
        "SELECT {ISSUE_COLUMNS}, \
           (SELECT json_group_array(json_object('id', o.id, 'name', o.name, 'rioter_count', io.rioter_count)) \
              FROM (SELECT * FROM issue_organisation WHERE issue_id = i.id \
                    ORDER BY rioter_count DESC, organisation_id) io \
              JOIN organisations o ON o.id = io.organisation_id) AS organisations, \
           (SELECT json_group_array(json_object('country_code', country_code, 'rioter_count', rioter_count)) \
              FROM (SELECT country_code, rioter_count FROM country_breakdown WHERE issue_id = i.id \
                    ORDER BY rioter_count DESC, country_code LIMIT 5)) AS top_countries, \
           (SELECT json_object('needs_met', needs_met, 'membership', membership, 'influence', influence, \
                               'connection', connection, 'computed_at', computed_at) \
              FROM community_health WHERE issue_id = i.id) AS health, \
           (SELECT count(*) FROM actions a WHERE a.issue_id = i.id) AS action_count \
         FROM issues i WHERE i.id = ?1"
    );
    let mut rows = db
        .query(&sql, vec![v::text(id.as_str().to_owned())])
        .await?;
    let mut issue = rows.pop().ok_or_else(|| not_found(id))?;
    embed_json(&mut issue, &["organisations", "top_countries", "health"]);
    Ok(Value::Object(issue))
}

pub async fn feed(db: &Db, cursors: &CursorCodec, id: &Id, page: &Page) -> AppResult<Value> {
    let canonical = format!("feed|{}", id.as_str());
    let after = page.position(cursors, &canonical)?;
    let mut args = vec![
        v::text(id.as_str().to_owned()),
        v::int(i64::from(page.limit) + 1),
    ];
    let keyset = match &after {
        None => String::new(),
        Some(pos) => {
            args.push(crate::store::value::cursor_key(&pos.key, true)?);
            args.push(v::text(pos.id.clone()));
            " AND created_at <= ?3 AND (created_at < ?3 OR id > ?4)".to_owned()
        }
    };
    // Each table is read through its (issue_id, created_at DESC, id) index
    // and only the page is merged.
    let part = |table: &str, archived: u8| {
        format!(
            "SELECT * FROM (SELECT id, user_id, content, likes, created_at, {archived} AS archived \
             FROM {table} WHERE issue_id = ?1{keyset} ORDER BY created_at DESC, id LIMIT ?2)"
        )
    };
    let sql = format!(
        "SELECT p.id, p.content, p.likes, p.created_at, p.archived, u.display_name AS author \
         FROM ({} UNION ALL {}) p LEFT JOIN users u ON u.id = p.user_id \
         ORDER BY p.created_at DESC, p.id LIMIT ?2",
        part("feed", 0),
        part("feed_archive", 1)
    );
    let rows = issue_rows(db, id, Query::new(sql, args)).await?;
    let (mut items, next) = paging::split(rows, page.limit, "created_at");
    for item in &mut items {
        let archived = item.get("archived").and_then(Value::as_i64) == Some(1);
        item.insert("archived".into(), Value::Bool(archived));
    }
    Ok(json!({
        "items": items,
        "next_cursor": next.map(|p| cursors.encode(&canonical, &p)),
    }))
}

/// The rows of `query`, a list that belongs to issue `id`, read with the
/// issue's existence in one round trip: 404 when the issue does not exist.
async fn issue_rows(db: &Db, id: &Id, query: Query) -> AppResult<Vec<Record>> {
    let mut results = db.queries(vec![exists_query(id), query]).await?;
    let rows = results.pop().unwrap_or_default();
    if !found(&results.pop().unwrap_or_default()) {
        return Err(not_found(id));
    }
    Ok(rows)
}

/// A whole list that belongs to one issue: 404 when the issue does not exist.
async fn issue_items(db: &Db, id: &Id, sql: &str) -> AppResult<Value> {
    let query = Query::new(sql, vec![v::text(id.as_str().to_owned())]);
    let rows = issue_rows(db, id, query).await?;
    Ok(json!({ "items": rows.into_iter().map(Value::Object).collect::<Vec<_>>() }))
}

/// A page of an issue's actions, oldest first (an issue can gather any
/// number of them, so they are paged like the feed).
pub async fn actions(db: &Db, cursors: &CursorCodec, id: &Id, page: &Page) -> AppResult<Value> {
    let canonical = format!("actions|{}", id.as_str());
    let after = page.position(cursors, &canonical)?;
    let mut args = vec![
        v::text(id.as_str().to_owned()),
        v::int(i64::from(page.limit) + 1),
    ];
    let keyset = match &after {
        None => "",
        Some(pos) => {
            args.push(crate::store::value::cursor_key(&pos.key, true)?);
            args.push(v::text(pos.id.clone()));
            " AND (created_at > ?3 OR (created_at = ?3 AND id > ?4))"
        }
    };
    let sql = format!(
        "SELECT id, title, description, type, time_required, external_url, created_at \
         FROM actions WHERE issue_id = ?1{keyset} ORDER BY created_at, id LIMIT ?2"
    );
    let rows = issue_rows(db, id, Query::new(sql, args)).await?;
    let (items, next) = paging::split(rows, page.limit, "created_at");
    Ok(json!({
        "items": items.into_iter().map(Value::Object).collect::<Vec<_>>(),
        "next_cursor": next.map(|p| cursors.encode(&canonical, &p)),
    }))
}

pub async fn countries(db: &Db, id: &Id) -> AppResult<Value> {
    issue_items(
        db,
        id,
        "SELECT country_code, rioter_count FROM country_breakdown WHERE issue_id = ?1 \
         ORDER BY rioter_count DESC, country_code",
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_queries_are_validated() {
        let q = ListQuery::parse::<&str, &str>([]).expect("defaults");
        assert_eq!(
            (q.sort, q.page.limit, q.q.is_none()),
            (Sort::Popular, 20, true)
        );
        let q = ListQuery::parse([
            ("q", "Late trains"),
            ("category", "Transport"),
            ("limit", "5"),
        ])
        .expect("search");
        assert_eq!(q.sort, Sort::Relevance);
        assert_eq!(q.category, Some("transport"));
        assert_eq!(
            q.canonical(),
            "issues|q=late trains|category=transport|sort=relevance"
        );
        for (k, v) in [
            ("limit", "0"),
            ("limit", "101"),
            ("limit", "ten"),
            ("category", "cheese"),
            ("sort", "random"),
            ("sort", "relevance"),
            // Empty is not one of the allowed values.
            ("category", ""),
            ("sort", ""),
        ] {
            let e = ListQuery::parse([(k, v)]).unwrap_err();
            assert_eq!(
                (e.status, e.code.as_str()),
                (400, "validation_failed"),
                "{k}={v}"
            );
        }
    }

    #[test]
    fn list_sql_binds_every_value() {
        let q = ListQuery::parse([("q", "x'); DROP TABLE issues; --"), ("category", "health")])
            .expect("query");
        let after = Position {
            key: json!(1.5),
            id: "abc".into(),
        };
        let query = list_query(&q, Some(&after)).expect("sql");
        assert!(!query.sql.contains("DROP"), "{}", query.sql);
        assert!(!query.sql.contains("abc"));
        assert_eq!(query.args.len(), 5);
        let plain = ListQuery::parse([("sort", "new")]).expect("query");
        let bad = Position {
            key: json!(5),
            id: "x".into(),
        };
        assert!(
            list_query(&plain, Some(&bad)).is_err(),
            "new sorts on a text key"
        );
    }
}
