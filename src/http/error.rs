//! One error type and one JSON envelope for every failure:
//! `{"error": {"code", "message", "details", "request_id"}}`.
//!
//! A 500 never shows internals: the cause is logged with the request id and
//! the client sees a generic message.

use serde_json::{json, Value};

/// Declares [`Code`]: every code an error envelope can carry, once.
macro_rules! codes {
    ($($variant:ident => $name:literal,)*) => {
        /// The machine-readable `code` of an error envelope.
        // `NoCode`, `WrongCode`...: the variants are the wire names.
        #[allow(clippy::enum_variant_names)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum Code {
            $($variant,)*
        }

        impl Code {
            /// Every code, in the order declared (openapi.yaml lists the same).
            #[cfg(test)]
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            pub fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }

            pub fn parse(name: &str) -> Option<Code> {
                match name {
                    $($name => Some(Code::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

codes! {
    ValidationFailed => "validation_failed",
    MalformedJson => "malformed_json",
    BadBody => "bad_body",
    BadUrl => "bad_url",
    NotFound => "not_found",
    MethodNotAllowed => "method_not_allowed",
    PayloadTooLarge => "payload_too_large",
    UnsupportedMediaType => "unsupported_media_type",
    CorsRefused => "cors_refused",
    OriginRefused => "origin_refused",
    UpgradeRequired => "upgrade_required",
    Forbidden => "forbidden",
    Unauthorized => "unauthorized",
    BadSecret => "bad_secret",
    BadSignature => "bad_signature",
    RouteDisabled => "route_disabled",
    Conflict => "conflict",
    Unprocessable => "unprocessable",
    RateLimited => "rate_limited",
    TooManyAttempts => "too_many_attempts",
    PrimaryUnavailable => "primary_unavailable",
    LimiterUnavailable => "limiter_unavailable",
    CounterUnavailable => "counter_unavailable",
    LinkingUnavailable => "linking_unavailable",
    NoSession => "no_session",
    NoCode => "no_code",
    WrongCode => "wrong_code",
    CodeExpired => "code_expired",
    CodeNotSent => "code_not_sent",
    LinkOnWeb => "link_on_web",
    UnknownAction => "unknown_action",
    JobRunning => "job_running",
    LeaseLost => "lease_lost",
    Internal => "internal",
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Code {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AppError {
    pub status: u16,
    pub code: Code,
    pub message: String,
    pub details: Option<Value>,
    /// Seconds, sent as `Retry-After`.
    pub retry_after: Option<u32>,
    /// Methods, sent as `Allow` with a 405.
    pub allow: Option<Vec<&'static str>>,
}

pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    pub fn new(status: u16, code: Code, message: impl Into<String>) -> Self {
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

    pub fn bad_request(code: Code, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    pub fn validation(field: &str, problem: impl Into<String>) -> Self {
        let problem = problem.into();
        Self::new(400, Code::ValidationFailed, format!("{field}: {problem}"))
            .with_details(json!({ "field": field, "problem": problem }))
    }

    pub fn not_found(what: impl Into<String>) -> Self {
        Self::new(404, Code::NotFound, what)
    }

    pub fn method_not_allowed(allow: Vec<&'static str>) -> Self {
        let mut e = Self::new(
            405,
            Code::MethodNotAllowed,
            format!("this route accepts {}", allow.join(", ")),
        );
        e.allow = Some(allow);
        e
    }

    pub fn primary_unavailable(why: impl Into<String>) -> Self {
        let mut e = Self::new(
            503,
            Code::PrimaryUnavailable,
            "the database is unavailable; retry shortly",
        )
        .with_details(json!({ "reason": why.into() }));
        e.retry_after = Some(5);
        e
    }

    /// A failure that is our fault. `cause` is for the log, not the client.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        Self::new(500, Code::Internal, "something went wrong on our side")
            .with_details(json!({ "log": cause.to_string() }))
    }

    /// The JSON body. Internal causes stay out of it.
    pub fn body(&self, request_id: &str) -> Value {
        let details = if self.status >= 500 && self.code == Code::Internal {
            Value::Null
        } else {
            self.details.clone().unwrap_or(Value::Null)
        };
        json!({
            "error": {
                "code": self.code.as_str(),
                "message": self.message,
                "details": details,
                "request_id": request_id,
            }
        })
    }
}

impl AppError {
    /// Rebuilds an error from its JSON envelope (as [`AppError::body`] made
    /// it), as it crosses from a Durable Object to the Worker.
    pub fn from_envelope(status: u16, body: &Value) -> AppError {
        let error = &body["error"];
        // An object's internal error stays internal (its cause logged here).
        let code = error["code"]
            .as_str()
            .and_then(Code::parse)
            .filter(|c| *c != Code::Internal);
        match code {
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

    #[test]
    fn every_code_is_in_the_spec_and_reads_back() {
        let spec = include_str!("../../openapi.yaml");
        let line = spec
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("enum: [validation_failed"))
            .expect("openapi.yaml lists the error codes");
        let listed: Vec<&str> = line
            .trim_start_matches("enum: [")
            .trim_end_matches(']')
            .split(", ")
            .collect();
        let ours: Vec<&str> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(listed, ours, "openapi.yaml's error codes");
        for code in Code::ALL {
            assert_eq!(Code::parse(code.as_str()), Some(*code));
        }
        assert_eq!(Code::parse("weird"), None);
    }
}
