//! Opaque, tamper-evident pagination cursors.
//!
//! A cursor names the last row of a page by its sort key and id (keyset
//! pagination: stable while rows are inserted, no row twice or skipped), and
//! is bound to the query it came from (route, filters, sort): used with
//! another query it is refused. It is `base64url(JSON) "." base64url(MAC)`,
//! the MAC an HMAC-SHA256 under a key derived from `SESSION_SECRET`; a
//! changed cursor is a 400.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::http::error::AppError;

type HmacSha256 = Hmac<Sha256>;

/// Where the previous page ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    /// The sort key of the last row (a number or a string).
    pub key: Value,
    /// The id of the last row (ties on the key are broken by id).
    pub id: String,
}

#[derive(Serialize, Deserialize)]
struct Payload {
    v: u8,
    /// Hash of the query the cursor belongs to.
    q: String,
    k: Value,
    i: String,
}

pub struct CursorCodec {
    /// HMAC state keyed with the cursor key, cloned for each use.
    mac: HmacSha256,
}

/// A short, stable fingerprint of a query's canonical description.
pub fn fingerprint(canonical_query: &str) -> String {
    let digest = Sha256::digest(canonical_query.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..12])
}

fn invalid() -> AppError {
    AppError::validation(
        "cursor",
        "is not a cursor this query gave out; start again without one",
    )
}

/// Bytes of the HMAC-SHA256 tag a cursor carries (128 bits).
const TAG_LEN: usize = 16;

impl CursorCodec {
    /// `None` only if HMAC refused the key, which it does for no length.
    pub fn new(secret: &[u8]) -> Option<CursorCodec> {
        // Domain separation: the cursor key is derived, not the secret itself.
        let mut derive = HmacSha256::new_from_slice(secret).ok()?;
        derive.update(b"quiet-riots cursor v1");
        let key = derive.finalize().into_bytes();
        Some(CursorCodec {
            mac: HmacSha256::new_from_slice(&key).ok()?,
        })
    }

    fn mac(&self, data: &[u8]) -> Vec<u8> {
        let mut mac = self.mac.clone();
        mac.update(data);
        mac.finalize().into_bytes()[..TAG_LEN].to_vec()
    }

    pub fn encode(&self, canonical_query: &str, position: &Position) -> String {
        let payload = Payload {
            v: 1,
            q: fingerprint(canonical_query),
            k: position.key.clone(),
            i: position.id.clone(),
        };
        let json = serde_json::to_vec(&payload).unwrap_or_default();
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&json),
            URL_SAFE_NO_PAD.encode(self.mac(&json))
        )
    }

    /// The position in `cursor`, if it is intact and belongs to this query.
    pub fn decode(&self, canonical_query: &str, cursor: &str) -> Result<Position, AppError> {
        if cursor.len() > 512 {
            return Err(invalid());
        }
        let (body, sig) = cursor.split_once('.').ok_or_else(invalid)?;
        let json = URL_SAFE_NO_PAD.decode(body).map_err(|_| invalid())?;
        let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| invalid())?;
        // The whole tag or nothing: HMAC's truncated check alone accepts
        // any prefix, down to one byte (forged in at most 256 tries).
        if sig.len() != TAG_LEN {
            return Err(invalid());
        }
        let mut mac = self.mac.clone();
        mac.update(&json);
        mac.verify_truncated_left(&sig).map_err(|_| invalid())?;
        let payload: Payload = serde_json::from_slice(&json).map_err(|_| invalid())?;
        if payload.v != 1 || payload.q != fingerprint(canonical_query) {
            return Err(invalid());
        }
        if !(payload.k.is_number() || payload.k.is_string()) || payload.i.len() > 64 {
            return Err(invalid());
        }
        Ok(Position {
            key: payload.k,
            id: payload.i,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn codec() -> CursorCodec {
        CursorCodec::new(b"test secret").expect("codec")
    }

    #[test]
    fn round_trips_within_its_query() {
        let pos = Position {
            key: json!(-3.25),
            id: "abc".into(),
        };
        let c = codec().encode("issues|popular|", &pos);
        assert_eq!(codec().decode("issues|popular|", &c).expect("decode"), pos);
    }

    #[test]
    fn other_queries_changes_and_other_keys_are_refused() {
        let pos = Position {
            key: json!(42),
            id: "abc".into(),
        };
        let c = codec().encode("issues|popular|", &pos);
        assert!(codec().decode("issues|new|", &c).is_err(), "another sort");
        let other = CursorCodec::new(b"other").expect("codec");
        assert!(other.decode("issues|popular|", &c).is_err());
        // Flip each character in turn: every change is caught.
        for i in 0..c.len() {
            let mut bytes = c.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).expect("ascii");
            if changed != c {
                let e = codec().decode("issues|popular|", &changed).unwrap_err();
                assert_eq!((e.status, e.code.as_str()), (400, "validation_failed"));
            }
        }
        // A tag cut short or grown is refused whatever its bytes: each
        // shorter prefix of the real tag, and the tag with a byte more.
        let (body, tag) = c.split_once('.').expect("two parts");
        let tag = URL_SAFE_NO_PAD.decode(tag).expect("tag");
        for len in 1..tag.len() {
            let cut = format!("{body}.{}", URL_SAFE_NO_PAD.encode(&tag[..len]));
            assert!(
                codec().decode("issues|popular|", &cut).is_err(),
                "{len} bytes"
            );
        }
        let mut longer = tag.clone();
        longer.push(0);
        let longer = format!("{body}.{}", URL_SAFE_NO_PAD.encode(&longer));
        assert!(codec().decode("issues|popular|", &longer).is_err());
        for junk in ["", ".", "abc", "a.b.c", &"x".repeat(600)] {
            assert!(codec().decode("issues|popular|", junk).is_err());
        }
    }
}
