//! Organisations: the list (by name) and one organisation with its issues.

use crate::store::value as v;
use serde_json::{json, Value};

use crate::domain::cursor::CursorCodec;
use crate::domain::ids::Id;
use crate::domain::paging::{self, Page};
use crate::http::error::{AppError, AppResult};
use crate::store::db::{Db, Query};

pub async fn list(db: &Db, cursors: &CursorCodec, page: &Page) -> AppResult<Value> {
    let canonical = "organisations";
    let after = page.position(cursors, canonical)?;
    let mut args = vec![v::int(i64::from(page.limit) + 1)];
    let keyset = match &after {
        None => "",
        Some(pos) => {
            args.push(crate::store::value::cursor_key(&pos.key, true)?);
            args.push(v::text(pos.id.clone()));
            "WHERE (o.name, o.id) > (?2, ?3)"
        }
    };
    let sql = format!(
        "SELECT o.id, o.name, o.category, o.description, o.logo_url, \
           (SELECT count(*) FROM issue_organisation io WHERE io.organisation_id = o.id) AS issue_count \
         FROM organisations o {keyset} ORDER BY o.name, o.id LIMIT ?1"
    );
    let rows = db
        .queries(vec![Query::new(sql, args)])
        .await?
        .pop()
        .unwrap_or_default();
    let (items, next) = paging::split(rows, page.limit, "name");
    Ok(json!({
        "items": items,
        "next_cursor": next.map(|p| cursors.encode(canonical, &p)),
    }))
}

/// One organisation and the issues it is held responsible for (most
/// rioters first, at most 100).
pub async fn detail(db: &Db, id: &Id) -> AppResult<Value> {
    let sql = "SELECT o.id, o.name, o.category, o.description, o.logo_url, o.created_at, \
           (SELECT json_group_array(json_object('id', x.id, 'name', x.name, 'category', x.category, \
                     'rioter_count', x.rioter_count, 'organisation_rioter_count', x.org_count)) \
              FROM (SELECT i.id, i.name, i.category, i.rioter_count, io.rioter_count AS org_count \
                    FROM issue_organisation io JOIN issues i ON i.id = io.issue_id \
                    WHERE io.organisation_id = o.id ORDER BY i.rioter_count DESC, i.id LIMIT 100) x) AS issues \
         FROM organisations o WHERE o.id = ?1";
    let mut rows = db.query(sql, vec![v::text(id.as_str().to_owned())]).await?;
    let mut org = rows.pop().ok_or_else(|| {
        AppError::not_found(format!("no organisation has the id {}", id.as_str()))
    })?;
    if let Some(Value::String(text)) = org.get("issues") {
        let parsed = serde_json::from_str(text).unwrap_or_else(|_| json!([]));
        org.insert("issues".into(), parsed);
    }
    Ok(Value::Object(org))
}
