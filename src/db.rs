//! The primary, through the `libsql` wasm client, with a deadline on every
//! call: a hung or unreachable primary turns into `503 primary_unavailable`
//! with `Retry-After`, never a hung request.
//!
//! Cost to know: the client sends a `describe` before each statement, so a
//! statement is two HTTP round trips to the primary (see TOOLCHAIN.md).

use std::cell::Cell;
use std::time::Duration;

use futures::future::{select, Either};
use libsql::wasm::{CloudflareSender, Connection};
use serde_json::{Map, Value};

use crate::error::{AppError, AppResult};

/// One result row as a JSON object keyed by column name.
pub type Record = Map<String, Value>;

pub struct Db {
    conn: Connection<CloudflareSender>,
    timeout: Duration,
    /// Milliseconds spent waiting for the primary in this request.
    spent_ms: Cell<f64>,
}

/// Whether an error from the client means the primary could not be used
/// (unreachable, refused, overloaded) rather than that the SQL failed.
pub fn is_unavailable(message: &str) -> bool {
    !(message.contains("stream error") || message.contains("error at step"))
}

impl Db {
    pub fn new(url: &str, token: Option<&str>, timeout: Duration) -> Db {
        Db {
            conn: Connection::open_cloudflare_worker(url, token.unwrap_or_default()),
            timeout,
            spent_ms: Cell::new(0.0),
        }
    }

    pub fn spent_ms(&self) -> f64 {
        self.spent_ms.get()
    }

    /// Runs a query and returns its rows.
    pub async fn query(&self, sql: &str, params: Vec<libsql::Value>) -> AppResult<Vec<Record>> {
        let started = worker::Date::now().as_millis();
        let work = Box::pin(async {
            let mut rows = self.conn.query(sql, params).await?;
            let names: Vec<String> = (0..rows.column_count())
                .map(|i| rows.column_name(i).unwrap_or_default().to_owned())
                .collect();
            let mut out = Vec::new();
            while let Some(row) = rows.next().await? {
                let mut record = Map::with_capacity(names.len());
                for (i, name) in names.iter().enumerate() {
                    record.insert(name.clone(), to_json(row.get_value(i as i32)?));
                }
                out.push(record);
            }
            Ok::<_, libsql::Error>(out)
        });
        let deadline = worker::Delay::from(self.timeout);
        let outcome = select(work, deadline).await;
        let elapsed = worker::Date::now().as_millis().saturating_sub(started);
        self.spent_ms.set(self.spent_ms.get() + elapsed as f64);
        match outcome {
            Either::Left((Ok(rows), _)) => Ok(rows),
            Either::Left((Err(e), _)) => {
                let message = e.to_string();
                if is_unavailable(&message) {
                    tracing::warn!(error = %message, "primary unavailable");
                    Err(AppError::primary_unavailable("the primary did not answer"))
                } else {
                    Err(AppError::internal(format!("query failed: {message}")))
                }
            }
            Either::Right(_) => {
                tracing::warn!(
                    timeout_ms = self.timeout.as_millis() as u64,
                    "primary timed out"
                );
                Err(AppError::primary_unavailable(format!(
                    "the primary did not answer within {} ms",
                    self.timeout.as_millis()
                )))
            }
        }
    }
}

fn to_json(value: libsql::Value) -> Value {
    match value {
        libsql::Value::Null => Value::Null,
        libsql::Value::Integer(i) => Value::from(i),
        libsql::Value::Real(f) => Value::from(f),
        libsql::Value::Text(s) => Value::from(s),
        // The schema has no blobs; show one as hex rather than fail.
        libsql::Value::Blob(b) => {
            Value::from(b.iter().map(|x| format!("{x:02x}")).collect::<String>())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sql_errors_are_not_outages() {
        assert!(!is_unavailable(
            "Hrana: `stream error: `Error { message: \"no such table\", code: \"SQLITE_ERROR\" }``"
        ));
        assert!(is_unavailable("Hrana: `http error: `connection refused``"));
        assert!(is_unavailable(
            "Hrana: `api error: `{\"code\":\"STREAMS_EXHAUSTED\"}``"
        ));
    }
}
