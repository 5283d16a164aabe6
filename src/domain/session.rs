//! Signed session cookies.
//!
//! The seed app kept a raw user id in `qr_user_id`: anyone who learned an id
//! could become that user. The session cookie `qr_session` is instead
//! `v1.<kid>.<base64url(payload)>.<base64url(mac)>`, the payload a small JSON
//! object (user id, session id, issued-at) and the MAC an HMAC-SHA256 over
//! everything before the last dot, under a key derived from the secret named
//! by `kid`. Keys rotate: sign with the current key, verify with any key still
//! listed. A legacy `qr_user_id` is reported as such, to be upgraded once by
//! the caller; an invalid session cookie is treated as no cookie.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::domain::ids::Id;

type HmacSha256 = Hmac<Sha256>;

pub const COOKIE_NAME: &str = "qr_session";
pub const LEGACY_COOKIE_NAME: &str = "qr_user_id";
/// A session lasts a year from when it was issued.
pub const LIFETIME_SECS: u64 = 365 * 86_400;
/// Clock skew tolerated on issued-at.
pub const MAX_FUTURE_SKEW_SECS: u64 = 5 * 60;

const VERSION: &str = "v1";
/// Longer than any cookie we issue (about 200 chars), short enough to bound work.
const MAX_COOKIE_LEN: usize = 512;
const FLAGS: &str = "HttpOnly; Secure; SameSite=Lax";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Lower-case hyphenated UUID.
    pub user_id: String,
    /// Lower-case hyphenated UUID; names this sign-in, not the user.
    pub session_id: String,
    /// Unix seconds.
    pub issued_at: u64,
}

impl Session {
    /// A new session for `user_id`, with a fresh random session id.
    pub fn start(user_id: &Id, now_secs: u64) -> Session {
        Session {
            user_id: user_id.as_str().to_owned(),
            session_id: uuid::Uuid::new_v4().hyphenated().to_string(),
            issued_at: now_secs,
        }
    }
}

/// Why a cookie was refused. Never shown to the client: any of these means
/// "not signed in".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    Malformed,
    UnknownKey,
    BadSignature,
    Expired,
    FromTheFuture,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    u: String,
    s: String,
    t: u64,
}

/// The signing key and any previous keys still accepted.
#[derive(Clone)]
pub struct SessionKeys {
    current: (String, HmacSha256),
    previous: Vec<(String, HmacSha256)>,
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Kids only: key material stays out of logs.
        let previous: Vec<&str> = self.previous.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("SessionKeys")
            .field("current", &self.current.0)
            .field("previous", &previous)
            .finish()
    }
}

fn valid_kid(kid: &str) -> bool {
    (1..=16).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// HMAC state keyed with the session key derived from `secret`.
fn derive(kid: &str, secret: &[u8]) -> Result<HmacSha256, String> {
    if !valid_kid(kid) {
        return Err(format!(
            "session key id {kid:?} must be 1 to 16 characters of A-Z a-z 0-9 _ -"
        ));
    }
    if secret.is_empty() {
        return Err(format!("session key {kid:?} has an empty secret"));
    }
    // Domain separation: not the cursor key, not the secret itself.
    let mut d = HmacSha256::new_from_slice(secret).map_err(|e| e.to_string())?;
    d.update(b"quiet-riots session v1");
    HmacSha256::new_from_slice(&d.finalize().into_bytes()).map_err(|e| e.to_string())
}

impl SessionKeys {
    /// Fails on a bad or repeated key id or an empty secret. A previous key
    /// that is the current one (same id, same secret) is ignored: that is
    /// the state between the first two steps of a rotation (docs/operations.md, "Rotate the session key"),
    /// when the current key has been copied into the previous keys and the
    /// new one is not live yet.
    pub fn new(
        current_kid: &str,
        current_secret: &[u8],
        previous: &[(String, Vec<u8>)],
    ) -> Result<SessionKeys, String> {
        let current = (current_kid.to_owned(), derive(current_kid, current_secret)?);
        let mut kids = vec![current_kid];
        let mut prev = Vec::with_capacity(previous.len());
        for (kid, secret) in previous {
            if kid == current_kid && secret.as_slice() == current_secret {
                continue;
            }
            if kids.contains(&kid.as_str()) {
                return Err(format!("session key id {kid:?} is listed twice"));
            }
            kids.push(kid);
            prev.push((kid.clone(), derive(kid, secret)?));
        }
        Ok(SessionKeys {
            current,
            previous: prev,
        })
    }

    fn key(&self, kid: &str) -> Option<&HmacSha256> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|(k, _)| k == kid)
            .map(|(_, mac)| mac)
    }

    /// The cookie value for `s`, signed with the current key.
    pub fn sign(&self, s: &Session) -> String {
        let payload = Payload {
            u: s.user_id.clone(),
            s: s.session_id.clone(),
            t: s.issued_at,
        };
        // Serialising strings and a number cannot fail.
        let json = serde_json::to_vec(&payload).unwrap_or_default();
        let signed = format!(
            "{VERSION}.{}.{}",
            self.current.0,
            URL_SAFE_NO_PAD.encode(json)
        );
        let mut mac = self.current.1.clone();
        mac.update(signed.as_bytes());
        let tag = mac.finalize().into_bytes();
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(tag))
    }

    /// The session in `cookie_value`, if it is intact, signed by a known key
    /// and within its lifetime.
    pub fn verify(&self, cookie_value: &str, now_secs: u64) -> Result<Session, Rejected> {
        if cookie_value.len() > MAX_COOKIE_LEN {
            return Err(Rejected::Malformed);
        }
        let (signed, tag) = cookie_value.rsplit_once('.').ok_or(Rejected::Malformed)?;
        let mut parts = signed.split('.');
        let (Some(version), Some(kid), Some(body), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(Rejected::Malformed);
        };
        if version != VERSION || !valid_kid(kid) {
            return Err(Rejected::Malformed);
        }
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| Rejected::Malformed)?;
        let mut mac = self.key(kid).ok_or(Rejected::UnknownKey)?.clone();
        mac.update(signed.as_bytes());
        // Constant-time, and the full 32 bytes: a truncated tag is refused.
        mac.verify_slice(&tag).map_err(|_| Rejected::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| Rejected::Malformed)?;
        let p: Payload = serde_json::from_slice(&json).map_err(|_| Rejected::Malformed)?;
        let user_id = Id::parse(&p.u, "u").map_err(|_| Rejected::Malformed)?;
        let session_id = Id::parse(&p.s, "s").map_err(|_| Rejected::Malformed)?;
        if p.t > now_secs.saturating_add(MAX_FUTURE_SKEW_SECS) {
            return Err(Rejected::FromTheFuture);
        }
        if now_secs >= p.t.saturating_add(LIFETIME_SECS) {
            return Err(Rejected::Expired);
        }
        Ok(Session {
            user_id: user_id.as_str().to_owned(),
            session_id: session_id.as_str().to_owned(),
            issued_at: p.t,
        })
    }
}

/// `Set-Cookie` for a freshly signed session.
pub fn set_cookie_header(value: &str) -> String {
    format!("{COOKIE_NAME}={value}; Path=/; Max-Age={LIFETIME_SECS}; {FLAGS}")
}

/// `Set-Cookie` that signs out.
pub fn clear_cookie_header() -> String {
    format!("{COOKIE_NAME}=; Path=/; Max-Age=0; {FLAGS}")
}

/// `Set-Cookie` removing the seed app's raw user-id cookie.
pub fn clear_legacy_cookie_header() -> String {
    format!("{LEGACY_COOKIE_NAME}=; Path=/; Max-Age=0; {FLAGS}")
}

/// The name/value pairs of a `Cookie` header, in order, duplicates kept.
/// Pieces without a name or an `=` are skipped; quotes around a value are
/// removed.
pub fn parse_cookies(header: Option<&str>) -> Vec<(String, String)> {
    let Some(header) = header else {
        return Vec::new();
    };
    header
        .split(';')
        .filter_map(|piece| {
            let (name, value) = piece.split_once('=')?;
            let name = name.trim();
            if name.is_empty() {
                return None;
            }
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            Some((name.to_owned(), value.to_owned()))
        })
        .collect()
}

/// What the request's cookies say about who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presented {
    Session(Session),
    /// A seed-app user id (lower-case hyphenated), to be upgraded to a session.
    Legacy(String),
    None,
}

/// A valid `qr_session` wins; else a `qr_user_id` holding a UUID is legacy;
/// anything else is no one.
pub fn presented(keys: &SessionKeys, cookie_header: Option<&str>, now_secs: u64) -> Presented {
    let cookies = parse_cookies(cookie_header);
    let session = cookies
        .iter()
        .filter(|(n, _)| n == COOKIE_NAME)
        .find_map(|(_, v)| keys.verify(v, now_secs).ok());
    if let Some(s) = session {
        return Presented::Session(s);
    }
    cookies
        .iter()
        .filter(|(n, _)| n == LEGACY_COOKIE_NAME)
        .find_map(|(_, v)| Id::parse(v, LEGACY_COOKIE_NAME).ok())
        .map_or(Presented::None, |id| {
            Presented::Legacy(id.as_str().to_owned())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_750_000_000;
    const USER: &str = "0b7f6c1e-5a1d-4c3e-9b8a-2f4d6e8a0c11";
    const SID: &str = "6a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

    fn keys() -> SessionKeys {
        SessionKeys::new(
            "k2",
            b"current secret",
            &[("k1".into(), b"old secret".to_vec())],
        )
        .expect("keys")
    }

    fn session() -> Session {
        Session {
            user_id: USER.into(),
            session_id: SID.into(),
            issued_at: NOW,
        }
    }

    #[test]
    fn round_trips_and_has_the_documented_shape() {
        let c = keys().sign(&session());
        assert!(c.starts_with("v1.k2."), "{c}");
        assert_eq!(c.split('.').count(), 4);
        assert_eq!(keys().verify(&c, NOW + 10), Ok(session()));
        let started = Session::start(&Id::parse(USER, "u").expect("id"), NOW);
        assert_eq!(started.user_id, USER);
        assert_ne!(
            started.session_id,
            Session::start(&Id::parse(USER, "u").expect("id"), NOW).session_id
        );
        assert_eq!(keys().verify(&keys().sign(&started), NOW), Ok(started));
    }

    #[test]
    fn previous_keys_still_verify_and_unknown_keys_do_not() {
        let old = SessionKeys::new("k1", b"old secret", &[]).expect("keys");
        let c = old.sign(&session());
        assert_eq!(keys().verify(&c, NOW), Ok(session()));
        // After the old key is dropped.
        let rotated = SessionKeys::new(
            "k3",
            b"newest",
            &[("k2".into(), b"current secret".to_vec())],
        )
        .expect("keys");
        assert_eq!(rotated.verify(&c, NOW), Err(Rejected::UnknownKey));
        // Same kid, another secret: a forgery.
        let forger = SessionKeys::new("k2", b"guessed secret", &[]).expect("keys");
        assert_eq!(
            keys().verify(&forger.sign(&session()), NOW),
            Err(Rejected::BadSignature)
        );
    }

    #[test]
    fn the_key_is_derived_not_the_secret() {
        // A MAC made with the raw secret is not accepted.
        let c = keys().sign(&session());
        let (signed, _) = c.rsplit_once('.').expect("dot");
        let mut raw = HmacSha256::new_from_slice(b"current secret").expect("key");
        raw.update(signed.as_bytes());
        let forged = format!(
            "{signed}.{}",
            URL_SAFE_NO_PAD.encode(raw.finalize().into_bytes())
        );
        assert_eq!(keys().verify(&forged, NOW), Err(Rejected::BadSignature));
    }

    #[test]
    fn lifetime_and_clock_skew() {
        let c = keys().sign(&session());
        assert!(keys().verify(&c, NOW + LIFETIME_SECS - 1).is_ok());
        assert_eq!(
            keys().verify(&c, NOW + LIFETIME_SECS),
            Err(Rejected::Expired)
        );
        assert!(keys().verify(&c, NOW - MAX_FUTURE_SKEW_SECS).is_ok());
        assert_eq!(
            keys().verify(&c, NOW - MAX_FUTURE_SKEW_SECS - 1),
            Err(Rejected::FromTheFuture)
        );
        let far = Session {
            issued_at: u64::MAX,
            ..session()
        };
        assert_eq!(
            keys().verify(&keys().sign(&far), NOW),
            Err(Rejected::FromTheFuture)
        );
    }

    #[test]
    fn tampering_truncation_and_other_versions_are_refused() {
        let k = keys();
        let c = k.sign(&session());
        for i in 0..c.len() {
            assert!(k.verify(&c[..i], NOW).is_err(), "truncated at {i}");
            for replacement in [b'A', b'.', b'-', b'z', b'0'] {
                let mut bytes = c.clone().into_bytes();
                bytes[i] = replacement;
                let changed = String::from_utf8(bytes).expect("ascii");
                if changed != c {
                    assert!(k.verify(&changed, NOW).is_err(), "{changed}");
                }
            }
        }
        let v2 = c.replacen("v1.", "v2.", 1);
        assert_eq!(k.verify(&v2, NOW), Err(Rejected::Malformed));
        // A signed payload that is not a session.
        let junk_payload = format!(
            "v1.k2.{}",
            URL_SAFE_NO_PAD.encode(br#"{"u":"x","s":"y","t":1}"#)
        );
        let mut mac = k.current.1.clone();
        mac.update(junk_payload.as_bytes());
        let signed_junk = format!(
            "{junk_payload}.{}",
            URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
        );
        assert_eq!(k.verify(&signed_junk, NOW), Err(Rejected::Malformed));
    }

    #[test]
    fn never_panics_on_junk() {
        let k = keys();
        let c = k.sign(&session());
        let mut inputs: Vec<String> = [
            "",
            ".",
            "..",
            "...",
            "....",
            "v1",
            "v1.",
            "v1.k2",
            "v1.k2..",
            "v1.k2...",
            "v1..x.y",
            "v1.é.x.y",
            "v1.k2.%%%.###",
            "\0\0\0",
            "v1.k2.x.y.z",
            "v1.this-kid-is-far-too-long.x.y",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        inputs.push("a".repeat(10_000));
        inputs.push(format!("{c}."));
        inputs.push(format!(".{c}"));
        inputs.push(c.replace('.', ".."));
        for (i, ch) in c.char_indices() {
            inputs.push(format!("{}{}", &c[..i], &c[i + ch.len_utf8()..]));
            inputs.push(format!("{}é{}", &c[..i], &c[i..]));
        }
        for input in &inputs {
            assert!(k.verify(input, NOW).is_err(), "{input}");
            let _ = presented(&k, Some(input), NOW);
            let _ = parse_cookies(Some(input));
        }
    }

    /// Every state the documented rotation (docs/operations.md) passes through is a valid
    /// configuration, and a cookie from before it verifies in each.
    #[test]
    fn each_step_of_a_rotation_keeps_sessions() {
        let before = SessionKeys::new("k1", b"old", &[]).expect("keys");
        let cookie = before.sign(&session());
        // 1. The current key copied into the previous keys: nothing changes.
        let copied =
            SessionKeys::new("k1", b"old", &[("k1".into(), b"old".to_vec())]).expect("keys");
        assert_eq!(copied.sign(&session()), cookie);
        // 2. The new id and secret go live together.
        let after =
            SessionKeys::new("k2", b"new", &[("k1".into(), b"old".to_vec())]).expect("keys");
        for keys in [&before, &copied, &after] {
            assert_eq!(keys.verify(&cookie, NOW), Ok(session()));
        }
        assert!(after
            .sign(&session())
            .starts_with(&format!("{VERSION}.k2.")));
    }

    #[test]
    fn bad_key_configuration_is_refused() {
        assert!(SessionKeys::new("", b"s", &[]).is_err());
        assert!(SessionKeys::new("k.1", b"s", &[]).is_err());
        assert!(SessionKeys::new("seventeen-chars-x", b"s", &[]).is_err());
        assert!(SessionKeys::new("k1", b"", &[]).is_err());
        assert!(SessionKeys::new("k1", b"s", &[("k1".into(), b"t".to_vec())]).is_err());
        assert!(SessionKeys::new("A_z-09", b"s", &[]).is_ok());
        let debug = format!("{:?}", keys());
        assert!(!debug.contains("secret"), "{debug}");
    }

    #[test]
    fn cookie_headers() {
        assert_eq!(
            set_cookie_header("v"),
            "qr_session=v; Path=/; Max-Age=31536000; HttpOnly; Secure; SameSite=Lax"
        );
        assert_eq!(
            clear_cookie_header(),
            "qr_session=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax"
        );
        assert_eq!(
            clear_legacy_cookie_header(),
            "qr_user_id=; Path=/; Max-Age=0; HttpOnly; Secure; SameSite=Lax"
        );
    }

    #[test]
    fn parses_cookie_headers_tolerantly() {
        assert!(parse_cookies(None).is_empty());
        let got = parse_cookies(Some(" a=1;b = 2 ;;junk; =x; c=\"3\"; d=; e=x=y "));
        let want = [("a", "1"), ("b", "2"), ("c", "3"), ("d", ""), ("e", "x=y")];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_valid_session_wins_then_legacy_then_nothing() {
        let k = keys();
        let c = k.sign(&session());
        let legacy = "qr_user_id=0B7F6C1E-5A1D-4C3E-9B8A-2F4D6E8A0C11";
        assert_eq!(
            presented(&k, Some(&format!("{legacy}; qr_session={c}")), NOW),
            Presented::Session(session())
        );
        assert_eq!(
            presented(&k, Some(&format!("qr_session=forged; {legacy}")), NOW),
            Presented::Legacy(USER.into())
        );
        assert_eq!(
            presented(&k, Some(&format!("qr_session={c}")), NOW + LIFETIME_SECS),
            Presented::None
        );
        assert_eq!(presented(&k, Some("qr_user_id=42"), NOW), Presented::None);
        assert_eq!(presented(&k, Some("other=1"), NOW), Presented::None);
        assert_eq!(presented(&k, None, NOW), Presented::None);
        // A duplicate, broken session cookie does not hide a good one.
        assert_eq!(
            presented(&k, Some(&format!("qr_session=bad; qr_session={c}")), NOW),
            Presented::Session(session())
        );
    }
}
