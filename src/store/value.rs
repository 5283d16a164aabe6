//! Statement arguments: the Hrana protocol's own value type, with short
//! constructors. The Worker sends these as they are; nothing converts them.

use std::sync::Arc;

pub use libsql_hrana::proto::Value;

use crate::http::error::{AppError, AppResult};

pub fn text(s: impl Into<String>) -> Value {
    let s: String = s.into();
    Value::Text {
        value: Arc::from(s),
    }
}

pub fn int(i: i64) -> Value {
    Value::Integer { value: i }
}

pub fn real(f: f64) -> Value {
    Value::Float { value: f }
}

pub fn null() -> Value {
    Value::Null
}

/// `s`, or NULL.
pub fn opt_text(s: Option<&str>) -> Value {
    s.map_or(Value::Null, text)
}

/// A cursor's sort key as an SQL value of the kind the sort needs.
pub fn cursor_key(key: &serde_json::Value, textual: bool) -> AppResult<Value> {
    let bad = || AppError::validation("cursor", "does not fit this sort");
    match (key, textual) {
        (serde_json::Value::String(s), true) => Ok(text(s.clone())),
        (serde_json::Value::Number(n), false) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => Ok(int(i)),
            (None, Some(f)) => Ok(real(f)),
            _ => Err(bad()),
        },
        _ => Err(bad()),
    }
}

/// The protocol's type has no `PartialEq`; tests compare arguments by value.
#[cfg(test)]
pub fn same(a: &Value, b: &Value) -> bool {
    format!("{a:?}") == format!("{b:?}")
}
