//! Typed ids: a UUID, checked once at the edge of the API.

use crate::http::error::{AppError, AppResult};

/// A syntactically valid id (a UUID, lower-case hyphenated).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Id(String);

impl Id {
    /// `field` names the parameter in the 400 when `raw` is not a UUID.
    pub fn parse(raw: &str, field: &str) -> AppResult<Id> {
        uuid::Uuid::parse_str(raw)
            .map(|u| Id(u.hyphenated().to_string()))
            .map_err(|_| AppError::validation(field, "must be a UUID"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_must_be_uuids() {
        let id = Id::parse("0B7F6C1E-5A1D-4C3E-9B8A-2F4D6E8A0C11", "id").expect("uuid");
        assert_eq!(id.as_str(), "0b7f6c1e-5a1d-4c3e-9b8a-2f4d6e8a0c11");
        for bad in [
            "",
            "42",
            "'; DROP TABLE issues; --",
            "0b7f6c1e-5a1d-4c3e-9b8a",
        ] {
            assert_eq!(Id::parse(bad, "id").unwrap_err().status, 400);
        }
    }
}
