//! Secrets a request presents: `Authorization: Bearer` for the routes
//! behind one (the pipeline checks it before the body is read), webhook
//! tokens and signatures (checked by their routes), all compared in
//! constant time. A route whose secret is unset is off (403).

use crate::http::error::{AppError, AppResult, Code};

/// Compares in time that depends only on the lengths.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The 403 of a route that is off because its secret `name` is not set.
pub fn disabled(name: &str) -> AppError {
    AppError::new(
        403,
        Code::RouteDisabled,
        format!("this route is off: {name} is not set"),
    )
}

/// Checks `Authorization: Bearer <token>` against the secret `name`, in
/// constant time; a route whose secret is unset is off (403). The pipeline
/// runs it for the routes behind a secret, before their body is read.
pub fn bearer(expected: Option<&str>, header: Option<&str>, name: &str) -> AppResult<()> {
    let Some(expected) = expected else {
        return Err(disabled(name));
    };
    let given = header.and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
    if constant_time_eq(given.as_bytes(), expected.as_bytes()) {
        Ok(())
    } else {
        Err(AppError::new(
            401,
            Code::Unauthorized,
            format!("send Authorization: Bearer <{name}>"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let authorise = |expected, header| bearer(expected, header, "CRON_SECRET");
        assert!(authorise(Some("s3cret"), Some("Bearer s3cret")).is_ok());
        assert_eq!(
            authorise(Some("s3cret"), Some("Bearer nope"))
                .unwrap_err()
                .status,
            401
        );
        assert_eq!(authorise(Some("s3cret"), None).unwrap_err().status, 401);
        assert_eq!(authorise(None, Some("Bearer x")).unwrap_err().status, 403);
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"abc", b"ab"));
    }
}
