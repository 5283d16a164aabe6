//! CORS against an allow-list of origins, with credentials (the session
//! cookie). Requests from other origins are still answered, but without
//! `Access-Control-Allow-Origin`, so browsers keep the response from the
//! page; a preflight from another origin is refused with 403.

pub const ALLOW_METHODS: &str = "GET, HEAD, POST, DELETE, OPTIONS";
pub const ALLOW_HEADERS: &str = "Content-Type, Idempotency-Key, If-None-Match, X-Request-Id";
pub const EXPOSE_HEADERS: &str = "ETag, X-Cache, X-Request-Id, Retry-After, RateLimit, \
     RateLimit-Policy, Server-Timing, Location, Idempotent-Replayed";
pub const MAX_AGE_SECS: &str = "600";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// No `Origin` header: not a cross-origin browser request.
    NoOrigin,
    /// A listed origin; echo it back.
    Allowed(String),
    /// An origin not on the list.
    Refused,
}

pub fn check(origin: Option<&str>, allowed: &[String]) -> Cors {
    match origin {
        None => Cors::NoOrigin,
        Some(o) if allowed.iter().any(|a| a == o) => Cors::Allowed(o.to_owned()),
        Some(_) => Cors::Refused,
    }
}

/// Headers for a response to an allowed origin (`Timing-Allow-Origin`: the
/// page's performance timing sees `Server-Timing`).
pub fn response_headers(origin: &str) -> [(&'static str, String); 4] {
    [
        ("Access-Control-Allow-Origin", origin.to_owned()),
        ("Timing-Allow-Origin", origin.to_owned()),
        ("Access-Control-Allow-Credentials", "true".to_owned()),
        ("Access-Control-Expose-Headers", EXPOSE_HEADERS.to_owned()),
    ]
}

/// Extra headers for an allowed preflight.
pub fn preflight_headers() -> [(&'static str, &'static str); 3] {
    [
        ("Access-Control-Allow-Methods", ALLOW_METHODS),
        ("Access-Control-Allow-Headers", ALLOW_HEADERS),
        ("Access-Control-Max-Age", MAX_AGE_SECS),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_origins_are_allowed() {
        let allowed = vec!["https://quietriots.com".to_owned()];
        assert_eq!(check(None, &allowed), Cors::NoOrigin);
        assert_eq!(
            check(Some("https://quietriots.com"), &allowed),
            Cors::Allowed("https://quietriots.com".into())
        );
        assert_eq!(check(Some("https://evil.example"), &allowed), Cors::Refused);
        assert_eq!(
            check(Some("https://quietriots.com.evil.example"), &allowed),
            Cors::Refused
        );
    }

    #[test]
    fn writes_may_send_and_read_their_idempotency_headers() {
        let allowed = preflight_headers()
            .iter()
            .find(|(k, _)| *k == "Access-Control-Allow-Headers")
            .map(|(_, v)| v.split(", ").collect::<Vec<_>>())
            .unwrap_or_default();
        assert!(allowed.contains(&"Idempotency-Key"), "{allowed:?}");
        let exposed: Vec<&str> = EXPOSE_HEADERS.split(", ").collect();
        for h in ["Location", "Idempotent-Replayed"] {
            assert!(exposed.contains(&h), "{exposed:?}");
        }
    }
}
