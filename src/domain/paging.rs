//! Pages of a list: `limit` and `cursor`, and cutting one page from rows.

use serde_json::Value;

use crate::domain::cursor::{CursorCodec, Position};
use crate::http::error::{AppError, AppResult};

/// A result row, keyed by column name.
pub type Row = serde_json::Map<String, Value>;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    pub cursor: Option<String>,
    pub limit: u32,
}

impl Page {
    /// The first page at the default size.
    pub fn first() -> Page {
        Page {
            cursor: None,
            limit: DEFAULT_LIMIT,
        }
    }

    pub fn parse(pairs: &[(String, String)]) -> AppResult<Page> {
        let mut page = Page::first();
        for (key, value) in pairs {
            match key.as_str() {
                "limit" => {
                    page.limit = match value.parse::<u32>() {
                        Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                        _ => {
                            return Err(AppError::validation(
                                "limit",
                                format!("must be a whole number from 1 to {MAX_LIMIT}"),
                            ))
                        }
                    }
                }
                "cursor" if !value.is_empty() => page.cursor = Some(value.clone()),
                _ => {}
            }
        }
        Ok(page)
    }

    /// The position the cursor names, checked against its query.
    pub fn position(&self, codec: &CursorCodec, canonical: &str) -> AppResult<Option<Position>> {
        self.cursor
            .as_deref()
            .map(|c| codec.decode(canonical, c))
            .transpose()
    }
}

/// Rows sorted by `column`, then `id`, were fetched with `limit + 1`: keep
/// `limit`, and if there were more, where the next page starts (the last
/// kept row's `column` and `id`).
pub fn split(mut rows: Vec<Row>, limit: u32, column: &str) -> (Vec<Row>, Option<Position>) {
    let limit = limit as usize;
    if rows.len() > limit {
        rows.truncate(limit);
        let next = rows.last().map(|last| Position {
            key: last.get(column).cloned().unwrap_or(Value::Null),
            id: last
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
        });
        (rows, next)
    } else {
        (rows, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn limits_are_capped_with_a_clear_error() {
        assert_eq!(Page::parse(&[]).expect("default").limit, DEFAULT_LIMIT);
        assert_eq!(
            Page::parse(&pairs(&[("limit", "100")])).expect("max").limit,
            100
        );
        let e = Page::parse(&pairs(&[("limit", "101")])).unwrap_err();
        assert!(e.message.contains("1 to 100"), "{}", e.message);
    }

    #[test]
    fn split_keeps_the_page_and_points_past_it() {
        let rows: Vec<Row> = (0..3)
            .map(|i| {
                json!({"id": format!("r{i}"), "at": i * 10})
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
            })
            .collect();
        let (page, next) = split(rows.clone(), 2, "at");
        assert_eq!(page.len(), 2);
        assert_eq!(
            next,
            Some(Position {
                key: json!(10),
                id: "r1".to_owned()
            })
        );
        let (page, next) = split(rows, 3, "at");
        assert_eq!((page.len(), next), (3, None));
    }
}
