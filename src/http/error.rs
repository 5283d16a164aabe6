//! One error type and one JSON envelope for every failure:
//! `{"error": {"code", "message", "details", "request_id"}}`.
//!
//! A 500 never shows internals: the cause is logged with the request id and
//! the client sees a generic message.

use serde_json::{json, Value};

#[derive(Debug, Clone, PartialEq)]
pub struct AppError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u32>,
    /// Methods, sent as `Allow` with a 405.
    pub allow: Option<Vec<&'static str>>,
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        AppError {
            status,
            code,
            message: message.into(),
            details: None,
            retry_after: None,
            allow: None,
        }
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = Some(details);
        self
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    pub fn validation(field: &str, problem: impl Into<String>) -> Self {
        let problem = problem.into();
        Self::new(400, "validation_failed", format!("{field}: {problem}"))
            .with_details(json!({ "field": field, "problem": problem }))
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(404, "not_found", what)
    }

    pub fn method_not_allowed(allow: Vec<&'static str>) -> Self {
        let mut e = Self::new(
            405,
            "method_not_allowed",
            format!("this route accepts {}", allow.join(", ")),
        );
        e.allow = Some(allow);
        e
    }

    pub fn primary_unavailable(why: impl Into<String>) -> Self {
        let mut e = Self::new(
            503,
            "primary_unavailable",
            "the database is unavailable; retry shortly",
        )
        .with_details(json!({ "reason": why.into() }));
        e.retry_after = Some(5);
        e
    }

    /// A failure that is our fault. `cause` is for the log, not the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::new(500, "internal", "something went wrong on our side")
            .with_details(json!({ "log": cause.to_string() }))
    }

    /// The JSON body. Internal causes stay out of it.
    pub fn body(&self, request_id: &str) -> Value {
        let details = if self.status >= 500 && self.code == "internal" {
            Value::Null
        } else {
            self.details.clone().unwrap_or(Value::Null)
        };
        json!({
            "error": {
                "code": self.code,
                "message": self.message,
                "details": details,
                "request_id": request_id,
            }
        })
    }
}

/// Codes an error envelope may carry when it crosses from a Durable Object
/// to the Worker; anything else arrives as `internal`.
const KNOWN_CODES: &[&str] = &[
    "validation_failed",
    "malformed_json",
    "not_found",
    "conflict",
    "rate_limited",
    "primary_unavailable",
    "limiter_unavailable",
    "unprocessable",
];

impl AppError {
    /// Rebuilds an error from its JSON envelope (as [`AppError::body`] made it).
    pub fn from_envelope(status: u16, body: &Value) -> AppError {
        let error = &body["error"];
        let code = error["code"].as_str().unwrap_or("");
        match KNOWN_CODES.iter().find(|k| **k == code) {
            Some(code) => {
                let mut e = AppError::new(
                    status,
                    code,
                    error["message"].as_str().unwrap_or("").to_owned(),
                );
                e.details = Some(error["details"].clone()).filter(|d| !d.is_null());
                if status == 503 || status == 429 {
                    e.retry_after = Some(5);
                }
                e
            }
            None => AppError::internal(format!("an object answered {status}: {body}")),
        }
    }
}

impl From<worker::Error> for AppError {
    fn from(e: worker::Error) -> Self {
        AppError::internal(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_envelope_has_every_field() {
        let body = AppError::validation("limit", "at most 100").body("req-1");
        assert_eq!(body["error"]["code"], "validation_failed");
        assert_eq!(body["error"]["message"], "limit: at most 100");
        assert_eq!(body["error"]["details"]["field"], "limit");
        assert_eq!(body["error"]["request_id"], "req-1");
    }

    #[test]
    fn envelopes_cross_back_into_errors() {
        let e = AppError::validation("organisation_id", "not linked");
        let back = AppError::from_envelope(400, &e.body(""));
        assert_eq!(back.code, "validation_failed");
        assert_eq!(back.details, e.details);
        let odd = AppError::from_envelope(500, &json!({"error": {"code": "weird"}}));
        assert_eq!(odd.code, "internal");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let body = AppError::internal("secret table name in a panic").body("r");
        assert_eq!(body["error"]["code"], "internal");
        assert!(body["error"]["details"].is_null());
        assert!(!body.to_string().contains("secret"));
    }
}
