//! Strict validation of write bodies into domain types.
//!
//! Each body is first matched against a raw struct that refuses unknown
//! fields, then every field is checked and trimmed; a failure is a 400
//! `validation_failed` naming the field. Lengths count characters, as
//! SQLite's `length()` does in the schema's CHECKs. Also here: the
//! `Idempotency-Key` header and the request hash that key is matched with.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::ids::Id;
use crate::http::error::{AppError, AppResult};

const MAX_ORGANISATIONS: usize = 20;
const ACTION_TYPES: &[&str] = &["idea", "action", "together"];

/// A serde error as a 400; serde names the field for unknown and missing ones.
fn from_serde(e: serde_json::Error) -> AppError {
    let msg = e.to_string();
    let named = |prefix: &str| {
        msg.strip_prefix(prefix)
            .and_then(|rest| rest.split_once('`'))
            .map(|(field, _)| field.to_owned())
    };
    if let Some(field) = named("unknown field `") {
        AppError::validation(&field, "is not a field of this request")
    } else if let Some(field) = named("missing field `") {
        AppError::validation(&field, "is required")
    } else {
        AppError::validation("body", msg)
    }
}

/// The body as `T`, refusing a missing body, a non-object and unknown fields.
fn raw<'de, T: Deserialize<'de>>(body: Option<&'de Value>) -> AppResult<T> {
    match body {
        None | Some(Value::Null) => Err(AppError::validation("body", "is required")),
        Some(v @ Value::Object(_)) => T::deserialize(v).map_err(from_serde),
        Some(_) => Err(AppError::validation("body", "must be a JSON object")),
    }
}

/// A string field; `null` counts as absent.
fn string<'a>(v: &'a Option<Value>, field: &str) -> AppResult<Option<&'a str>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(AppError::validation(field, "must be a string")),
    }
}

/// Embedding, override and isolate controls (U+202A-U+202E,
/// U+2066-U+2069): they reorder how the text around them is shown
/// ("Trojan source"), and nothing a person types needs them.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Characters that show nothing by themselves: white space, zero-width
/// spaces and joiners, direction marks, invisible operators, variation
/// selectors, the Hangul fillers, the soft hyphen. A text made only of
/// these is blank.
fn is_invisible(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2060}'..='\u{2064}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
        )
}

/// Text as stored: the byte order mark (U+FEFF) removed wherever it is,
/// the line and paragraph separators (U+2028, U+2029) made line breaks,
/// trimmed. At most `max` characters; control characters and bidi
/// controls refused, and line breaks too unless `multiline`. May be blank.
fn text(raw: &str, field: &str, max: usize, multiline: bool) -> AppResult<String> {
    let normalised: String = raw
        .chars()
        .filter(|c| *c != '\u{FEFF}')
        .map(|c| match c {
            '\u{2028}' | '\u{2029}' => '\n',
            c => c,
        })
        .collect();
    let t = normalised.trim();
    if t.chars()
        .any(|c| c.is_control() && !(multiline && matches!(c, '\n' | '\r')))
    {
        return Err(AppError::validation(
            field,
            if multiline {
                "must not contain control characters other than line breaks"
            } else {
                "must not contain control characters or line breaks"
            },
        ));
    }
    if t.chars().any(is_bidi_control) {
        return Err(AppError::validation(
            field,
            "must not contain bidirectional embedding, override or isolate characters (U+202A-U+202E, U+2066-U+2069)",
        ));
    }
    if t.chars().count() > max {
        return Err(AppError::validation(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    Ok(t.to_owned())
}

/// Whether `t` shows anything at all.
fn visible(t: &str) -> bool {
    !t.chars().all(is_invisible)
}

/// Required text: present, a string, and with something visible once
/// trimmed.
fn required(v: &Option<Value>, field: &str, max: usize, multiline: bool) -> AppResult<String> {
    let s = string(v, field)?.ok_or_else(|| AppError::validation(field, "is required"))?;
    let t = text(s, field, max, multiline)?;
    if !visible(&t) {
        return Err(AppError::validation(
            field,
            "must not be empty or only invisible characters",
        ));
    }
    Ok(t)
}

/// Optional text; absent, `null`, blank and invisible are all `None`.
fn optional(
    v: &Option<Value>,
    field: &str,
    max: usize,
    multiline: bool,
) -> AppResult<Option<String>> {
    match string(v, field)? {
        None => Ok(None),
        Some(s) => text(s, field, max, multiline).map(|t| Some(t).filter(|t| visible(t))),
    }
}

/// One of `allowed`, any case; the canonical lower-case spelling.
fn one_of(v: &Option<Value>, field: &str, allowed: &[&'static str]) -> AppResult<&'static str> {
    let s = required(v, field, 50, false)?;
    allowed
        .iter()
        .find(|a| a.eq_ignore_ascii_case(&s))
        .copied()
        .ok_or_else(|| {
            AppError::validation(field, format!("must be one of {}", allowed.join(", ")))
        })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIssue {
    name: Option<Value>,
    category: Option<Value>,
    description: Option<Value>,
    organisation_ids: Option<Value>,
}

/// `POST /issues`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewIssue {
    pub name: String,
    /// One of [`CATEGORIES`].
    pub category: &'static str,
    /// Empty when not given.
    pub description: String,
    /// Distinct, at most 20.
    pub organisation_ids: Vec<Id>,
}

impl NewIssue {
    pub fn parse(body: Option<&Value>) -> AppResult<NewIssue> {
        let r: RawIssue = raw(body)?;
        let name = required(&r.name, "name", 200, false)?;
        let category = one_of(&r.category, "category", CATEGORIES)?;
        let description = optional(&r.description, "description", 5000, true)?.unwrap_or_default();
        let ids = match &r.organisation_ids {
            None | Some(Value::Null) => &[][..],
            Some(Value::Array(a)) => a.as_slice(),
            Some(_) => {
                return Err(AppError::validation(
                    "organisation_ids",
                    "must be an array of ids",
                ))
            }
        };
        if ids.len() > MAX_ORGANISATIONS {
            return Err(AppError::validation(
                "organisation_ids",
                format!("must have at most {MAX_ORGANISATIONS} ids"),
            ));
        }
        let mut organisation_ids: Vec<Id> = Vec::with_capacity(ids.len());
        for (i, v) in ids.iter().enumerate() {
            let field = format!("organisation_ids[{i}]");
            let s = v
                .as_str()
                .ok_or_else(|| AppError::validation(&field, "must be a UUID"))?;
            let id = Id::parse(s, &field)?;
            if organisation_ids.contains(&id) {
                return Err(AppError::validation(&field, "is listed twice"));
            }
            organisation_ids.push(id);
        }
        Ok(NewIssue {
            name,
            category,
            description,
            organisation_ids,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPost {
    content: Option<Value>,
}

/// `POST /issues/{id}/feed`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewPost {
    pub content: String,
}

impl NewPost {
    pub fn parse(body: Option<&Value>) -> AppResult<NewPost> {
        let r: RawPost = raw(body)?;
        Ok(NewPost {
            content: required(&r.content, "content", 2000, true)?,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSynonym {
    term: Option<Value>,
}

/// `POST /issues/{id}/synonyms`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewSynonym {
    /// Lower-case, single spaces between words.
    pub term: String,
}

impl NewSynonym {
    pub fn parse(body: Option<&Value>) -> AppResult<NewSynonym> {
        let r: RawSynonym = raw(body)?;
        let raw =
            string(&r.term, "term")?.ok_or_else(|| AppError::validation("term", "is required"))?;
        if raw.chars().any(|c| {
            !(c.is_alphanumeric() || c.is_whitespace() || matches!(c, '-' | '\'' | '\u{2019}'))
        }) {
            return Err(AppError::validation(
                "term",
                "may contain only letters, digits, spaces, hyphens and apostrophes",
            ));
        }
        let term = raw
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .to_lowercase();
        // Counted last: lower-casing can change the length.
        match term.chars().count() {
            0 => Err(AppError::validation("term", "must not be empty")),
            n if n > 100 => Err(AppError::validation(
                "term",
                "must be at most 100 characters",
            )),
            _ => Ok(NewSynonym { term }),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAction {
    title: Option<Value>,
    description: Option<Value>,
    #[serde(rename = "type")]
    kind: Option<Value>,
    time_required: Option<Value>,
    external_url: Option<Value>,
}

/// `POST /issues/{id}/actions`.
#[derive(Debug, Clone, PartialEq)]
pub struct NewAction {
    pub title: String,
    /// Empty when not given.
    pub description: String,
    /// `idea`, `action` or `together` (the JSON field `type`).
    pub kind: &'static str,
    pub time_required: Option<String>,
    /// An `http(s)://` URL.
    pub external_url: Option<String>,
}

fn url(v: &Option<Value>, field: &str) -> AppResult<Option<String>> {
    let Some(u) = optional(v, field, 2000, false)? else {
        return Ok(None);
    };
    let lower = u.to_ascii_lowercase();
    let Some(rest) = ["https://", "http://"]
        .iter()
        .find_map(|scheme| lower.strip_prefix(scheme))
    else {
        return Err(AppError::validation(
            field,
            "must start with https:// or http://",
        ));
    };
    if u.chars()
        .any(|c| c.is_whitespace() || matches!(c, '"' | '<' | '>' | '\\' | '`'))
    {
        return Err(AppError::validation(
            field,
            "must not contain spaces, quotes, angle brackets or backslashes",
        ));
    }
    let host = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if host.is_empty() {
        return Err(AppError::validation(field, "must name a host"));
    }
    Ok(Some(u))
}

impl NewAction {
    pub fn parse(body: Option<&Value>) -> AppResult<NewAction> {
        let r: RawAction = raw(body)?;
        Ok(NewAction {
            title: required(&r.title, "title", 200, false)?,
            description: optional(&r.description, "description", 2000, true)?.unwrap_or_default(),
            kind: one_of(&r.kind, "type", ACTION_TYPES)?,
            time_required: optional(&r.time_required, "time_required", 50, false)?,
            external_url: url(&r.external_url, "external_url")?,
        })
    }
}

/// `v` with every object's keys in sorted order, whatever serde_json's map
/// preserves.
fn canonical(v: &Value) -> Value {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), canonical(v)))
                    .collect(),
            )
        }
        Value::Array(a) => Value::Array(a.iter().map(canonical).collect()),
        other => other.clone(),
    }
}

/// SHA-256 (hex) of the body's canonical JSON: the same request sent again
/// with the same `Idempotency-Key` hashes the same, key order aside.
pub fn request_hash(body: &Value) -> String {
    let digest = Sha256::digest(canonical(body).to_string().as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `Idempotency-Key` header: absent is fine; present must be 1 to 255
/// printable ASCII characters.
pub fn idempotency_key(header: Option<&str>) -> AppResult<Option<String>> {
    let Some(k) = header else {
        return Ok(None);
    };
    if k.is_empty() || k.len() > 255 || !k.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err(AppError::validation(
            "Idempotency-Key",
            "must be 1 to 255 printable ASCII characters",
        ));
    }
    Ok(Some(k.to_owned()))
}

/// The categories an issue can have.
pub const CATEGORIES: &[&str] = &[
    "transport",
    "health",
    "environment",
    "housing",
    "education",
    "economy",
    "community",
    "safety",
    "technology",
    "democracy",
];

/// What a write makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WriteKind {
    Issue,
    Post,
    Synonym,
    Action,
}

impl WriteKind {
    pub fn name(self) -> &'static str {
        match self {
            WriteKind::Issue => "issue",
            WriteKind::Post => "post",
            WriteKind::Synonym => "synonym",
            WriteKind::Action => "action",
        }
    }
}

/// A write as the outbox keeps it: what it makes, the issue it goes to
/// (none for a new issue) and its body as sent. It is parsed again, with
/// the same checks, when it is replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredWrite {
    pub kind: WriteKind,
    #[serde(default)]
    pub issue_id: Option<String>,
    pub body: Option<Value>,
}

impl StoredWrite {
    /// An entry kept before writes were stored as data named its route's
    /// path instead: `/api/issues`, or `/api/issues/{id}/feed`,
    /// `.../synonyms`, `.../actions`.
    pub fn from_path(path: &str, body: Option<Value>) -> Option<StoredWrite> {
        let rest = path.strip_prefix("/api/issues")?;
        let (kind, issue_id) = if rest.is_empty() || rest == "/" {
            (WriteKind::Issue, None)
        } else {
            let (id, what) = rest.strip_prefix('/')?.split_once('/')?;
            let kind = match what.trim_end_matches('/') {
                "feed" => WriteKind::Post,
                "synonyms" => WriteKind::Synonym,
                "actions" => WriteKind::Action,
                _ => return None,
            };
            (kind, Some(id.to_owned()))
        };
        Some(StoredWrite {
            kind,
            issue_id,
            body,
        })
    }
}

/// Ids a write creates: the row, and one per organisation link.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fresh {
    pub row: String,
    pub links: Vec<String>,
}

impl Fresh {
    pub fn new(links: usize) -> Fresh {
        let id = || uuid::Uuid::new_v4().to_string();
        Fresh {
            row: id(),
            links: (0..links).map(|_| id()).collect(),
        }
    }
}

/// An `Idempotency-Key` in its scope, with the hash of the request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idempotency {
    pub scope: String,
    pub key: String,
    pub hash: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ORG: &str = "0b7f6c1e-5a1d-4c3e-9b8a-2f4d6e8a0c11";
    const ORG2: &str = "6a1c2b3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";

    /// The field a 400 names.
    fn field(e: AppError) -> String {
        assert_eq!(
            (e.status, e.code.as_str()),
            (400, "validation_failed"),
            "{e:?}"
        );
        e.details.expect("details")["field"]
            .as_str()
            .expect("field")
            .to_owned()
    }

    fn with(base: &Value, key: &str, value: Value) -> Value {
        let mut v = base.clone();
        v[key] = value;
        v
    }

    fn issue() -> Value {
        json!({"name": "Late trains", "category": "transport"})
    }

    #[test]
    fn a_good_issue_is_trimmed() {
        let body = json!({
            "name": "  Late trains ",
            "category": "Transport",
            "description": "\n Every day.\r\nAgain. \t",
            "organisation_ids": [ORG.to_uppercase(), ORG2],
        });
        let i = NewIssue::parse(Some(&body)).expect("issue");
        assert_eq!(i.name, "Late trains");
        assert_eq!(i.category, "transport");
        assert_eq!(i.description, "Every day.\r\nAgain.");
        let ids: Vec<&str> = i.organisation_ids.iter().map(Id::as_str).collect();
        assert_eq!(ids, [ORG, ORG2]);
        let minimal = NewIssue::parse(Some(&issue())).expect("issue");
        assert_eq!(
            (minimal.description.as_str(), minimal.organisation_ids.len()),
            ("", 0)
        );
        let nulls = with(
            &with(&issue(), "description", json!(null)),
            "organisation_ids",
            json!(null),
        );
        assert!(NewIssue::parse(Some(&nulls)).is_ok());
    }

    #[test]
    fn invisible_text_is_blank_and_hidden_controls_are_refused_or_normalised() {
        for blank in [
            "\u{200B}\u{200B}",
            "\u{FEFF}",
            " \u{2060}\u{00AD} ",
            "\u{200E}",
            "\u{3164}",
        ] {
            let e = NewIssue::parse(Some(&with(&issue(), "name", json!(blank)))).unwrap_err();
            assert_eq!(field(e), "name", "{blank:?}");
            let e = NewPost::parse(Some(&json!({ "content": blank }))).unwrap_err();
            assert_eq!(field(e), "content", "{blank:?}");
            // An optional field that shows nothing is absent.
            let i = NewIssue::parse(Some(&with(&issue(), "description", json!(blank))))
                .expect("blank description");
            assert_eq!(i.description, "");
        }
        for bidi in ["\u{202E}evil", "a\u{2066}b\u{2069}", "x\u{202A}"] {
            let e = NewIssue::parse(Some(&with(&issue(), "name", json!(bidi)))).unwrap_err();
            assert_eq!(field(e), "name", "{bidi:?}");
            let e = NewPost::parse(Some(&json!({ "content": bidi }))).unwrap_err();
            assert_eq!(field(e), "content", "{bidi:?}");
        }
        // The BOM goes; line and paragraph separators are line breaks:
        // kept as such where line breaks are, refused where they are not.
        let i = NewIssue::parse(Some(&with(
            &with(&issue(), "name", json!("\u{FEFF}Late\u{FEFF} trains")),
            "description",
            json!("One\u{2028}two\u{2029}three"),
        )))
        .expect("normalised");
        assert_eq!(i.name, "Late trains");
        assert_eq!(i.description, "One\ntwo\nthree");
        let e = NewIssue::parse(Some(&with(&issue(), "name", json!("a\u{2028}b")))).unwrap_err();
        assert_eq!(field(e), "name");
        // Joiners inside visible text (emoji sequences) are kept.
        let p = NewPost::parse(Some(
            &json!({ "content": "Family \u{1F468}\u{200D}\u{1F469}" }),
        ))
        .expect("post");
        assert!(p.content.contains('\u{200D}'));
    }

    #[test]
    fn each_bad_issue_field_is_named() {
        let base = issue();
        let bad = [
            (with(&base, "name", json!("   ")), "name"),
            (with(&base, "name", json!(7)), "name"),
            (with(&base, "name", json!("a\u{0}b")), "name"),
            (with(&base, "name", json!("two\nlines")), "name"),
            (with(&base, "name", json!("x".repeat(201))), "name"),
            (json!({"category": "transport"}), "name"),
            (with(&base, "category", json!("cheese")), "category"),
            (json!({"name": "x"}), "category"),
            (
                with(&base, "description", json!("tab\there")),
                "description",
            ),
            (
                with(&base, "description", json!("x".repeat(5001))),
                "description",
            ),
            (with(&base, "description", json!(["x"])), "description"),
            (
                with(&base, "organisation_ids", json!(ORG)),
                "organisation_ids",
            ),
            (
                with(&base, "organisation_ids", json!(vec![ORG; 21])),
                "organisation_ids",
            ),
            (
                with(&base, "organisation_ids", json!([ORG, "nope"])),
                "organisation_ids[1]",
            ),
            (
                with(&base, "organisation_ids", json!([ORG, 5])),
                "organisation_ids[1]",
            ),
            (
                with(&base, "organisation_ids", json!([ORG, ORG.to_uppercase()])),
                "organisation_ids[1]",
            ),
            (with(&base, "rioter_count", json!(9)), "rioter_count"),
        ];
        for (body, want) in bad {
            assert_eq!(
                field(NewIssue::parse(Some(&body)).unwrap_err()),
                want,
                "{body}"
            );
        }
        let twenty: Vec<String> = (0..20)
            .map(|i| format!("{i:08}-5a1d-4c3e-9b8a-2f4d6e8a0c11"))
            .collect();
        assert!(NewIssue::parse(Some(&with(&base, "organisation_ids", json!(twenty)))).is_ok());
    }

    #[test]
    fn missing_and_non_object_bodies_are_refused() {
        for body in [
            None,
            Some(json!(null)),
            Some(json!([])),
            Some(json!("x")),
            Some(json!(["Late", "transport"])),
        ] {
            assert_eq!(field(NewIssue::parse(body.as_ref()).unwrap_err()), "body");
            assert_eq!(field(NewPost::parse(body.as_ref()).unwrap_err()), "body");
            assert_eq!(field(NewSynonym::parse(body.as_ref()).unwrap_err()), "body");
            assert_eq!(field(NewAction::parse(body.as_ref()).unwrap_err()), "body");
        }
    }

    #[test]
    fn lengths_count_characters_not_bytes() {
        let name = "é".repeat(200);
        let i = NewIssue::parse(Some(&with(&issue(), "name", json!(name)))).expect("200 chars");
        assert_eq!(i.name.chars().count(), 200);
        assert!(NewIssue::parse(Some(&with(&issue(), "name", json!("é".repeat(201))))).is_err());
        let emoji = "🚆".repeat(2000);
        assert!(NewPost::parse(Some(&json!({"content": emoji}))).is_ok());
        assert_eq!(
            field(NewPost::parse(Some(&json!({"content": "🚆".repeat(2001)}))).unwrap_err()),
            "content"
        );
    }

    #[test]
    fn posts() {
        let p = NewPost::parse(Some(&json!({"content": "  first line\nsecond  "}))).expect("post");
        assert_eq!(p.content, "first line\nsecond");
        for body in [
            json!({}),
            json!({"content": ""}),
            json!({"content": " \n "}),
            json!({"content": 1}),
            json!({"content": "bell\u{7}"}),
        ] {
            assert_eq!(
                field(NewPost::parse(Some(&body)).unwrap_err()),
                "content",
                "{body}"
            );
        }
        let e = NewPost::parse(Some(&json!({"content": "x", "likes": 1000}))).unwrap_err();
        assert_eq!(field(e), "likes");
    }

    #[test]
    fn synonyms_are_normalised() {
        let s = NewSynonym::parse(Some(&json!({"term": "  Late\t  TRAINS  o'clock-ish  "})))
            .expect("term");
        assert_eq!(s.term, "late trains o'clock-ish");
        let s = NewSynonym::parse(Some(&json!({"term": "Überfüllte Züge 2"}))).expect("term");
        assert_eq!(s.term, "überfüllte züge 2");
        assert!(NewSynonym::parse(Some(&json!({"term": "é".repeat(100)}))).is_ok());
        for body in [
            json!({}),
            json!({"term": "   "}),
            json!({"term": ["x"]}),
            json!({"term": "trains!"}),
            json!({"term": "a_b"}),
            json!({"term": "<script>"}),
            json!({"term": "x".repeat(101)}),
            json!({"term": "é".repeat(101)}),
        ] {
            assert_eq!(
                field(NewSynonym::parse(Some(&body)).unwrap_err()),
                "term",
                "{body}"
            );
        }
        assert_eq!(
            field(NewSynonym::parse(Some(&json!({"term": "x", "issue_id": ORG}))).unwrap_err()),
            "issue_id"
        );
    }

    #[test]
    fn actions() {
        let body = json!({
            "title": " Write to your MP ",
            "description": " Template below.\nSign it. ",
            "type": "Action",
            "time_required": " 10 minutes ",
            "external_url": " https://example.org/letter?x=1#top ",
        });
        let a = NewAction::parse(Some(&body)).expect("action");
        assert_eq!(a.title, "Write to your MP");
        assert_eq!(a.description, "Template below.\nSign it.");
        assert_eq!(a.kind, "action");
        assert_eq!(a.time_required.as_deref(), Some("10 minutes"));
        assert_eq!(
            a.external_url.as_deref(),
            Some("https://example.org/letter?x=1#top")
        );
        let minimal = NewAction::parse(Some(
            &json!({"title": "t", "type": "idea", "external_url": ""}),
        ))
        .expect("action");
        assert_eq!(
            (
                minimal.description.as_str(),
                minimal.time_required,
                minimal.external_url
            ),
            ("", None, None)
        );
        assert!(NewAction::parse(Some(
            &json!({"title": "t", "type": "together", "external_url": "HTTP://x.org"})
        ))
        .is_ok());

        let base = json!({"title": "t", "type": "idea"});
        let bad = [
            (with(&base, "title", json!("")), "title"),
            (with(&base, "title", json!("x".repeat(201))), "title"),
            (json!({"type": "idea"}), "title"),
            (
                with(&base, "description", json!("x".repeat(2001))),
                "description",
            ),
            (with(&base, "type", json!("petition")), "type"),
            (json!({"title": "t"}), "type"),
            (
                with(&base, "time_required", json!("x".repeat(51))),
                "time_required",
            ),
            (with(&base, "time_required", json!("a\nb")), "time_required"),
            (
                with(&base, "external_url", json!("javascript:alert(1)")),
                "external_url",
            ),
            (
                with(&base, "external_url", json!("ftp://example.org")),
                "external_url",
            ),
            (
                with(&base, "external_url", json!("https://exa mple.org")),
                "external_url",
            ),
            (
                with(&base, "external_url", json!("https://")),
                "external_url",
            ),
            (
                with(&base, "external_url", json!("https:///path")),
                "external_url",
            ),
            (
                with(&base, "external_url", json!("https://x.org/\"onmouseover")),
                "external_url",
            ),
            (
                with(
                    &base,
                    "external_url",
                    json!(format!("https://x.org/{}", "a".repeat(2000))),
                ),
                "external_url",
            ),
            (with(&base, "external_url", json!(true)), "external_url"),
            (with(&base, "kind", json!("idea")), "kind"),
        ];
        for (body, want) in bad {
            assert_eq!(
                field(NewAction::parse(Some(&body)).unwrap_err()),
                want,
                "{body}"
            );
        }
    }

    #[test]
    fn request_hash_ignores_key_order_only() {
        let a: Value =
            serde_json::from_str(r#"{"b": 1, "a": {"y": [1, {"q": 1, "p": 2}], "x": "s"}}"#)
                .expect("json");
        let b: Value =
            serde_json::from_str(r#"{"a": {"x": "s", "y": [1, {"p": 2, "q": 1}]}, "b": 1}"#)
                .expect("json");
        assert_eq!(request_hash(&a), request_hash(&b));
        assert_eq!(request_hash(&a).len(), 64);
        assert!(request_hash(&a)
            .bytes()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(
            request_hash(&a),
            request_hash(&json!({"b": 2, "a": {"x": "s", "y": [1, {"p": 2, "q": 1}]}}))
        );
        assert_ne!(request_hash(&json!([1, 2])), request_hash(&json!([2, 1])));
        // Known value: SHA-256 of `{"a":1}`.
        assert_eq!(
            request_hash(&json!({"a": 1})),
            "015abd7f5cc57a2dd94b7590f04ad8084273905ee33ec5cebeae62276a97f862"
        );
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(idempotency_key(None), Ok(None));
        assert_eq!(
            idempotency_key(Some("abc-123_X")),
            Ok(Some("abc-123_X".into()))
        );
        assert!(idempotency_key(Some(&"k".repeat(255))).is_ok());
        for bad in [
            "".to_owned(),
            "k".repeat(256),
            "tab\there".into(),
            "é".into(),
            "nul\0".into(),
        ] {
            assert_eq!(
                field(idempotency_key(Some(&bad)).unwrap_err()),
                "Idempotency-Key"
            );
        }
    }

    #[test]
    fn a_kept_route_path_reads_as_a_stored_write() {
        let id = "6f1d0f3e-2b1c-4a55-9d0e-5f3b2c1a0e11";
        let body = Some(json!({"content": "hi"}));
        for (path, kind, issue) in [
            ("/api/issues".to_owned(), WriteKind::Issue, None),
            (format!("/api/issues/{id}/feed"), WriteKind::Post, Some(id)),
            (
                format!("/api/issues/{id}/synonyms/"),
                WriteKind::Synonym,
                Some(id),
            ),
            (
                format!("/api/issues/{id}/actions"),
                WriteKind::Action,
                Some(id),
            ),
        ] {
            let stored = StoredWrite::from_path(&path, body.clone()).expect(&path);
            assert_eq!(stored.kind, kind, "{path}");
            assert_eq!(stored.issue_id.as_deref(), issue, "{path}");
            assert_eq!(stored.body, body);
        }
        for path in ["/api/issues/x/join", "/api/me", "/api/issues/x", ""] {
            assert_eq!(StoredWrite::from_path(path, None), None, "{path}");
        }
    }
}
