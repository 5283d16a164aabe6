//! Statement arguments: the Hrana protocol's own value type, with short
//! constructors. The Worker sends these as they are; nothing converts them.

use std::sync::Arc;

pub use libsql_hrana::proto::Value;

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

/// The protocol's type has no `PartialEq`; tests compare arguments by value.
#[cfg(test)]
pub fn same(a: &Value, b: &Value) -> bool {
    format!("{a:?}") == format!("{b:?}")
}
