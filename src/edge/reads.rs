//! The cacheable reads: what each read route asks for, its cache key, its
//! invalidation tags, and how to load it from the primary.

use serde_json::Value;

use crate::domain::cursor::CursorCodec;
use crate::domain::ids::Id;
use crate::domain::paging::Page;
use crate::domain::search::SearchQuery;
use crate::http::error::AppResult;
use crate::store::db::Db;
use crate::store::issues::{self, ListQuery};
use crate::store::organisations;

#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    Issues(ListQuery),
    Issue(Id),
    Feed(Id, Page),
    Actions(Id, Page),
    Countries(Id),
    Organisations(Page),
    Organisation(Id),
}

/// Tags a write invalidates (see `cache::invalidate`).
pub fn issue_tag(id: &Id) -> String {
    issue_tag_of(id.as_str())
}

/// [`issue_tag`] of an id read back from the primary.
pub fn issue_tag_of(id: &str) -> String {
    format!("issue:{id}")
}

pub fn feed_tag(id: &Id) -> String {
    format!("feed:{}", id.as_str())
}

pub fn org_tag(id: &Id) -> String {
    org_tag_of(id.as_str())
}

/// [`org_tag`] of an id read back from the primary.
pub fn org_tag_of(id: &str) -> String {
    format!("org:{id}")
}

/// Every issue list and search result.
pub const ISSUES_TAG: &str = "issues";
/// The organisation list.
pub const ORGANISATIONS_TAG: &str = "organisations";

fn page_params(page: &Page) -> String {
    format!(
        "cursor={}&limit={}",
        page.cursor.as_deref().unwrap_or(""),
        page.limit
    )
}

impl Read {
    /// The canonical cache key: the route and every parameter, defaults
    /// filled in, in a fixed order.
    pub fn key(&self) -> String {
        match self {
            Read::Issues(q) => format!(
                "issues?category={}&{}&q={}&sort={}",
                q.category.unwrap_or(""),
                page_params(&q.page),
                q.q.as_ref().map(SearchQuery::canonical).unwrap_or_default(),
                q.sort.name()
            ),
            Read::Issue(id) => format!("issue/{}", id.as_str()),
            Read::Feed(id, page) => format!("issue/{}/feed?{}", id.as_str(), page_params(page)),
            Read::Actions(id, page) => {
                format!("issue/{}/actions?{}", id.as_str(), page_params(page))
            }
            Read::Countries(id) => format!("issue/{}/countries", id.as_str()),
            Read::Organisations(page) => format!("organisations?{}", page_params(page)),
            Read::Organisation(id) => format!("organisation/{}", id.as_str()),
        }
    }

    pub fn tags(&self) -> Vec<String> {
        match self {
            Read::Issues(_) => vec![ISSUES_TAG.to_owned()],
            Read::Issue(id) | Read::Actions(id, _) | Read::Countries(id) => vec![issue_tag(id)],
            Read::Feed(id, _) => vec![feed_tag(id)],
            Read::Organisations(_) => vec![ORGANISATIONS_TAG.to_owned()],
            // Its issue list carries counts that move with every join.
            Read::Organisation(id) => vec![org_tag(id), ISSUES_TAG.to_owned()],
        }
    }

    pub async fn load(&self, db: &Db, cursors: &CursorCodec) -> AppResult<Value> {
        match self {
            Read::Issues(q) => issues::list(db, cursors, q).await,
            Read::Issue(id) => issues::detail(db, id).await,
            Read::Feed(id, page) => issues::feed(db, cursors, id, page).await,
            Read::Actions(id, page) => issues::actions(db, cursors, id, page).await,
            Read::Countries(id) => issues::countries(db, id).await,
            Read::Organisations(page) => organisations::list(db, cursors, page).await,
            Read::Organisation(id) => organisations::detail(db, id).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_canonical() {
        let a = ListQuery::parse([("sort", "popular"), ("category", "Health"), ("limit", "20")])
            .expect("a");
        let b = ListQuery::parse([("category", "health"), ("x", "ignored")]).expect("b");
        assert_eq!(Read::Issues(a).key(), Read::Issues(b).key());
        let s1 = ListQuery::parse([("q", "  Late   TRAINS!")]).expect("s1");
        let s2 = ListQuery::parse([("q", "late trains")]).expect("s2");
        assert_eq!(Read::Issues(s1).key(), Read::Issues(s2).key());
    }
}
