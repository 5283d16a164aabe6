//! Saved shapes of the Durable Objects' state, and how each is read back.
//!
//! Every object is evicted when idle (local workerd after about 10 s,
//! Cloudflare after some seconds to minutes) and restarted on every deploy;
//! the next request loads what the object saved. So what is saved must load
//! back exactly, and in a form later code still reads:
//!
//! - **Text, parsed in Rust.** State is saved as JSON text in a TEXT column
//!   and parsed by `serde_json` in Rust, so no value ever passes through a
//!   JavaScript number on its way to storage and back (a JS number holds
//!   integers exactly only up to 2^53; a time in nanoseconds does not fit).
//!   Integers that can exceed 2^53 are written as decimal strings besides,
//!   so the text stays exact for any JavaScript tool that reads it.
//! - **A version in every saved state**: `{"v": N, ...}`. [`decode`] reads
//!   every version up to the current one (a state saved without `v` is
//!   version 1, the shape before versions existed), so a deploy that
//!   changes a struct never strands what is stored. A state saved by newer
//!   code (a rollback) is read as the current shape if it parses as one.
//! - **Unreadable is not an outage.** A state that cannot be read at all is
//!   an [`Unreadable`]: the object logs it at error level with its key,
//!   counts it, and starts afresh in its safe direction (see each object).
//!
//! Pure code: no runtime, tested natively with the fixtures of every shape
//! in `tests/fixtures/objects/`.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A state shape that names its version when saved.
pub trait Shape: Sized + Serialize + DeserializeOwned {
    /// The version this code writes.
    const VERSION: u32;

    /// A state saved as version `v` (from 1 to [`Self::VERSION`]), its
    /// `v` field removed. The default reads every version as the current
    /// shape, which holds while versions only added fields with defaults.
    fn upgrade(v: u32, body: Value) -> Result<Self, String> {
        let _ = v;
        serde_json::from_value(body).map_err(|e| e.to_string())
    }
}

/// Why a saved state could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unreadable {
    /// The version it named, if it named one.
    pub version: Option<u32>,
    pub reason: String,
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.version {
            Some(v) => write!(f, "saved state (version {v}) unreadable: {}", self.reason),
            None => write!(f, "saved state unreadable: {}", self.reason),
        }
    }
}

/// The JSON text to save: the state's fields and `"v": VERSION`.
pub fn encode<T: Shape>(state: &T) -> Result<String, String> {
    let mut value = serde_json::to_value(state).map_err(|e| e.to_string())?;
    let object = value
        .as_object_mut()
        .ok_or("a saved state must serialize to a JSON object")?;
    object.insert("v".to_owned(), Value::from(T::VERSION));
    serde_json::to_string(&value).map_err(|e| e.to_string())
}

/// Reads saved JSON text of any version this code knows.
pub fn decode<T: Shape>(text: &str) -> Result<T, Unreadable> {
    let unreadable = |version, reason: String| Unreadable { version, reason };
    let mut value: Value =
        serde_json::from_str(text).map_err(|e| unreadable(None, format!("not JSON: {e}")))?;
    let object = value
        .as_object_mut()
        .ok_or_else(|| unreadable(None, "not a JSON object".to_owned()))?;
    let version = match object.remove("v") {
        None => 1,
        Some(v) => v
            .as_u64()
            .and_then(|v| u32::try_from(v).ok())
            .filter(|v| *v >= 1)
            .ok_or_else(|| unreadable(None, format!("version {v} is not a positive integer")))?,
    };
    let read_as = version.min(T::VERSION);
    T::upgrade(read_as, value).map_err(|reason| {
        let reason = if version > T::VERSION {
            format!(
                "saved by newer code (this code reads up to version {}): {reason}",
                T::VERSION
            )
        } else {
            reason
        };
        unreadable(Some(version), reason)
    })
}

/// A `u64` saved as a decimal string (exact in any JSON reader). Reads a
/// string or a JSON number; a number or string with a fraction or an
/// exponent (an integer once rounded through a floating point) is rounded
/// up, which for the times saved here is the conservative direction.
pub mod u64_text {
    use super::*;

    pub fn serialize<S: Serializer>(n: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&n.to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            Text(String),
            Int(u64),
            Float(f64),
        }
        match Either::deserialize(d)? {
            Either::Int(n) => Ok(n),
            Either::Float(f) => from_f64(f).ok_or_else(|| bad(&f.to_string())),
            Either::Text(t) => parse(&t).ok_or_else(|| bad(&t)),
        }
    }

    fn bad<E: serde::de::Error>(what: &str) -> E {
        E::custom(format!("{what:.40} is not a non-negative integer"))
    }

    /// Decimal text of a non-negative integer, or of a float (`1.7e18`).
    pub fn parse(text: &str) -> Option<u64> {
        let text = text.trim();
        text.parse::<u64>()
            .ok()
            .or_else(|| text.parse::<f64>().ok().and_then(from_f64))
    }

    fn from_f64(f: f64) -> Option<u64> {
        // `as` saturates at u64::MAX; 2^64 itself rounds to it.
        (f.is_finite() && f >= 0.0).then(|| f.ceil() as u64)
    }
}

/// A saved state of `tests/fixtures/objects/`, for the objects' tests.
#[cfg(test)]
pub(crate) fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/objects/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        #[serde(with = "u64_text")]
        big: u64,
        #[serde(default)]
        added: u32,
    }

    impl Shape for V2 {
        const VERSION: u32 = 2;
        fn upgrade(v: u32, body: Value) -> Result<Self, String> {
            match v {
                // Version 1 called it `old`.
                1 => {
                    let big = body.get("old").cloned().ok_or("no `old`")?;
                    let big = u64_text::deserialize(big).map_err(|e| e.to_string())?;
                    Ok(V2 { big, added: 0 })
                }
                _ => serde_json::from_value(body).map_err(|e| e.to_string()),
            }
        }
    }

    #[test]
    fn encodes_with_its_version_and_big_integers_as_text() {
        let text = encode(&V2 {
            big: u64::MAX,
            added: 3,
        })
        .expect("encode");
        let value: Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["v"], 2);
        assert_eq!(value["big"], "18446744073709551615");
        assert_eq!(
            decode::<V2>(&text).expect("decode"),
            V2 {
                big: u64::MAX,
                added: 3
            }
        );
    }

    #[test]
    fn a_state_without_a_version_is_version_1() {
        assert_eq!(
            decode::<V2>(r#"{"old": 1796122417300000001}"#).expect("v1"),
            V2 {
                big: 1_796_122_417_300_000_001,
                added: 0
            }
        );
        assert_eq!(decode::<V2>(r#"{"v": 1, "old": "5"}"#).expect("v1").big, 5);
    }

    #[test]
    fn a_newer_state_is_read_as_the_current_shape_when_it_parses() {
        let newer = r#"{"v": 3, "big": "7", "added": 1, "later": true}"#;
        assert_eq!(decode::<V2>(newer).expect("newer"), V2 { big: 7, added: 1 });
        let e = decode::<V2>(r#"{"v": 3, "renamed": 1}"#).expect_err("unreadable");
        assert_eq!(e.version, Some(3));
        assert!(e.reason.contains("newer code"), "{e}");
    }

    #[test]
    fn unreadable_states_say_why() {
        for (text, why) in [
            ("", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"v": 0, "big": "1"}"#, "not a positive integer"),
            (r#"{"v": "2", "big": "1"}"#, "not a positive integer"),
            (r#"{"v": 2, "big": "-1"}"#, "not a non-negative integer"),
            (r#"{"v": 2}"#, "missing field"),
        ] {
            let e = decode::<V2>(text).expect_err(text);
            assert!(e.to_string().contains(why), "{text}: {e}");
        }
    }

    #[test]
    fn integers_rounded_through_a_float_round_up() {
        assert_eq!(
            u64_text::parse("1796122417300000000"),
            Some(1_796_122_417_300_000_000)
        );
        assert_eq!(
            u64_text::parse("1.7961224173e18"),
            Some(1_796_122_417_300_000_000)
        );
        assert_eq!(u64_text::parse("2.5"), Some(3));
        assert_eq!(u64_text::parse("-1"), None);
        assert_eq!(u64_text::parse("NaN"), None);
        assert_eq!(u64_text::parse("x"), None);
    }
}
