//! CORS against an allow-list of origins, with credentials (the session
//! cookie). Reads from other origins are still answered, but without
//! `Access-Control-Allow-Origin`, so browsers keep the response from the
//! page; a preflight from another origin is refused with 403.
//!
//! Writes from other origins are refused with 403 too, before they run. A
//! browser sends a form-encoded or bodiless POST (a join, a logout) without
//! a preflight, and with the site's cookies when the page is on the same
//! site (any `*.localhost` or `*.quietriots.com` page, say): without this
//! check such a write would be done in the person's name, and only its
//! answer kept from the page. The Worker's own origin (the web client it
//! serves) may write; requests without `Origin` (bots, servers, curl) are
//! not browser requests and pass.

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
    /// The Worker's own origin: a page it serves itself. Needs no CORS
    /// headers.
    SameOrigin,
    /// An origin not on the list.
    Refused,
}

/// `own` is the origin of the request's URL (`scheme://host[:port]`).
pub fn check(origin: Option<&str>, allowed: &[String], own: &str) -> Cors {
    match origin {
        None => Cors::NoOrigin,
        Some(o) if allowed.iter().any(|a| a == o) => Cors::Allowed(o.to_owned()),
        Some(o) if o == own => Cors::SameOrigin,
        Some(_) => Cors::Refused,
    }
}

/// Whether a request with this method and origin may run. Only reads
/// (`GET`, `HEAD`) and `OPTIONS` run for a refused origin; anything else
/// may change state.
pub fn may_run(method: &str, cors: &Cors) -> bool {
    !matches!(cors, Cors::Refused) || matches!(method, "GET" | "HEAD" | "OPTIONS")
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
        let own = "https://api.quietriots.com";
        assert_eq!(check(None, &allowed, own), Cors::NoOrigin);
        assert_eq!(
            check(Some("https://quietriots.com"), &allowed, own),
            Cors::Allowed("https://quietriots.com".into())
        );
        assert_eq!(check(Some(own), &allowed, own), Cors::SameOrigin);
        for refused in [
            "https://evil.example",
            "https://quietriots.com.evil.example",
            // Same site, other origin: still not on the list.
            "https://blog.quietriots.com",
            "http://api.quietriots.com",
            "null",
        ] {
            assert_eq!(
                check(Some(refused), &allowed, own),
                Cors::Refused,
                "{refused}"
            );
        }
    }

    #[test]
    fn a_refused_origin_may_only_read() {
        for method in ["GET", "HEAD", "OPTIONS"] {
            assert!(may_run(method, &Cors::Refused), "{method}");
        }
        for method in ["POST", "DELETE", "PUT", "PATCH", "PROPFIND"] {
            assert!(!may_run(method, &Cors::Refused), "{method}");
            for cors in [
                Cors::NoOrigin,
                Cors::SameOrigin,
                Cors::Allowed("https://quietriots.com".into()),
            ] {
                assert!(may_run(method, &cors), "{method} {cors:?}");
            }
        }
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
