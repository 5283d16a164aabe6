//! Phone numbers in E.164: `+`, a country code starting 1-9, 7 to 15 digits
//! in all. This agrees with the `users.phone` CHECK (`'+[1-9]*'`, length 8
//! to 16). Spaces, hyphens, dots and parentheses are accepted between digits
//! as typed ("+44 20 7946 0958") and stripped; nothing else is.

use crate::http::error::{AppError, AppResult};

const MIN_DIGITS: usize = 7;
const MAX_DIGITS: usize = 15;
/// Generous room for separators; bounds the work on hostile input.
const MAX_RAW_LEN: usize = 40;

/// A phone number in canonical E.164 form, e.g. `+442079460958`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PhoneE164(String);

fn is_separator(c: char) -> bool {
    matches!(c, ' ' | '-' | '.' | '(' | ')')
}

impl PhoneE164 {
    /// `field` names the parameter in the 400 when `raw` is not E.164.
    pub fn parse(raw: &str, field: &str) -> AppResult<PhoneE164> {
        let bad = |problem: &str| AppError::validation(field, problem);
        if raw.len() > MAX_RAW_LEN {
            return Err(bad("is too long for a phone number"));
        }
        if raw.starts_with("00") {
            return Err(bad("must start with + and the country code, not 00"));
        }
        let Some(rest) = raw.strip_prefix('+') else {
            return Err(bad("must start with + and the country code"));
        };
        // "+44 (0)20 ..." would silently become the wrong number.
        if rest.contains("(0)") {
            return Err(bad("must not contain the national trunk prefix (0)"));
        }
        let mut digits = String::with_capacity(MAX_DIGITS);
        // Separators seen since the last digit; only kept legal if a digit follows.
        let mut pending_separator = false;
        for c in rest.chars() {
            if c.is_ascii_digit() {
                digits.push(c);
                pending_separator = false;
            } else if is_separator(c) {
                if digits.is_empty() {
                    return Err(bad("must have a digit straight after the +"));
                }
                pending_separator = true;
            } else {
                return Err(bad(
                    "may contain only digits after the +, with spaces, hyphens, dots or parentheses between them",
                ));
            }
        }
        if pending_separator {
            return Err(bad("must end with a digit"));
        }
        if digits.starts_with('0') {
            return Err(bad("country codes do not start with 0"));
        }
        if !(MIN_DIGITS..=MAX_DIGITS).contains(&digits.len()) {
            return Err(bad("must have 7 to 15 digits including the country code"));
        }
        Ok(PhoneE164(format!("+{digits}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_e164_and_strips_separators_between_digits() {
        for (raw, want) in [
            ("+442079460958", "+442079460958"),
            ("+44 20 7946 0958", "+442079460958"),
            ("+1 (415) 555-2671", "+14155552671"),
            ("+1.415.555.2671", "+14155552671"),
            ("+49-30-1234567", "+49301234567"),
            ("+1234567", "+1234567"),
            ("+123456789012345", "+123456789012345"),
        ] {
            let p = PhoneE164::parse(raw, "phone").expect(raw);
            assert_eq!(p.as_str(), want);
            // What the schema's CHECK demands.
            assert!(p.as_str().starts_with('+') && (8..=16).contains(&p.as_str().len()));
        }
    }

    #[test]
    fn refuses_everything_else() {
        for raw in [
            "",
            "+",
            "442079460958",
            "00442079460958",
            "+0442079460958",
            "+123456",
            "+1234567890123456",
            "+44 20 7946 095O",
            "+44 20 7946 0958 ",
            " +442079460958",
            "+ 442079460958",
            "+(44) 20 7946 0958",
            "+442079460958-",
            "+44/20/7946/0958",
            "+44_2079460958",
            "+44 (0)20 7946 0958",
            "+44\t2079460958",
            "++442079460958",
            "+44２079460958",
            "tel:+442079460958",
            "+1 415 555 2671 ext 2",
        ] {
            let e = PhoneE164::parse(raw, "phone").unwrap_err();
            assert_eq!(e.status, 400, "{raw}");
            assert_eq!(e.details.expect("details")["field"], "phone", "{raw}");
        }
        let long = format!("+44{}", " 1".repeat(50));
        assert!(PhoneE164::parse(&long, "phone").is_err());
    }
}
