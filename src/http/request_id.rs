//! Request ids: a caller's `X-Request-Id` is kept when it is sane, else a
//! fresh UUID v4. The id is echoed on every response and in every log line.

/// The id to use for a request, given its `X-Request-Id` header.
pub fn choose(header: Option<&str>) -> String {
    match header.map(str::trim) {
        Some(id) if is_sane(id) => id.to_owned(),
        _ => uuid::Uuid::new_v4().to_string(),
    }
}

/// 1 to 128 characters of letters, digits and `-_.:`; nothing that could
/// break a log line or a header.
pub fn is_sane(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sane_ids_are_kept_others_replaced() {
        assert_eq!(choose(Some("abc-123_x.y:z")), "abc-123_x.y:z");
        for bad in ["", "has space", "new\nline", "quote\"", &"x".repeat(129)] {
            let chosen = choose(Some(bad));
            assert_ne!(chosen, bad);
            assert!(uuid::Uuid::parse_str(&chosen).is_ok(), "{chosen}");
        }
        assert!(uuid::Uuid::parse_str(&choose(None)).is_ok());
    }
}
