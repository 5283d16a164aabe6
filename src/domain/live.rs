//! Live updates of an issue over a WebSocket: the messages, their
//! coalescing, the guards and the caps, free of the JS runtime so they are
//! tested natively. The IssueCounter object ([`crate::objects::live`]) holds
//! the sockets and calls in here; `docs/live.md` is the protocol.
//!
//! **Messages** (JSON text frames, server to client): first a
//! [`Message::Snapshot`], then [`Message::Update`]s. An update carries the
//! current values (the count, per-organisation counts, how many watch) and
//! the posts made since the previous update, so a client that missed
//! nothing in between and a client that just took a snapshot both end on
//! the same values: values are absolute, never deltas.
//!
//! **Coalescing** ([`Pending`]): a change marks the issue dirty; an update
//! goes out at once when none went out in the last [`PUSH_EVERY_MS`], else
//! at the end of that interval, carrying whatever happened meanwhile. So a
//! socket gets at most `1000 / PUSH_EVERY_MS` updates a second however hot
//! the issue, and the last value is always sent (the dirty flag is only
//! cleared by the update that carries it). The object saves [`Pending`] and
//! sets a storage alarm for the push, so both survive an eviction.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::domain::counter::Counts;

/// At most one update per socket this often (4 a second).
pub const PUSH_EVERY_MS: u64 = 250;
/// Posts one update carries at most; more in one interval are counted in
/// `posts_missed` (the client reads the feed for them).
pub const MAX_POSTS_PER_UPDATE: usize = 20;
/// Newest posts' ids in a snapshot.
pub const SNAPSHOT_POSTS: usize = 20;

/// The text a client sends to keep its socket alive, and the answer. The
/// runtime answers it without waking the object (auto-response).
pub const PING: &str = "ping";
pub const PONG: &str = "pong";

/// A close code and its reason (at most 123 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Close {
    pub code: u16,
    pub reason: &'static str,
}

/// The client sent something other than [`PING`]: the socket only pushes.
pub const UNSUPPORTED: Close = Close {
    code: 1003,
    reason: "this socket only pushes; send nothing but the text \"ping\"",
};

/// Why a new socket is closed at once (after the handshake, so that a
/// browser sees the code and the reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// This client already has its most sockets on this issue.
    ClientFull,
    /// The issue already has its most sockets.
    IssueFull,
}

impl Refusal {
    pub fn close(self) -> Close {
        match self {
            Refusal::ClientFull => Close {
                code: 4008,
                reason: "too many sockets from this client on this issue; close one first",
            },
            Refusal::IssueFull => Close {
                code: 4009,
                reason: "this issue has as many watchers as it can take; retry later",
            },
        }
    }
}

/// Most open sockets per issue and per client on one issue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    pub per_issue: usize,
    pub per_client: usize,
}

impl Default for Caps {
    fn default() -> Self {
        Caps {
            per_issue: 10_000,
            per_client: 8,
        }
    }
}

/// Whether one more socket may open, given those open now on the issue and
/// those of the same client on it.
pub fn admit(open: usize, open_for_client: usize, caps: Caps) -> Result<(), Refusal> {
    if open_for_client >= caps.per_client {
        Err(Refusal::ClientFull)
    } else if open >= caps.per_issue {
        Err(Refusal::IssueFull)
    } else {
        Ok(())
    }
}

/// The tag a client's sockets carry in the object: a short hash of its key
/// (the client IP), so the object keeps no address.
pub fn client_tag(client: &str) -> String {
    let mut tag = "c:".to_owned();
    for byte in &Sha256::digest(client.as_bytes())[..8] {
        let _ = write!(tag, "{byte:02x}");
    }
    tag
}

/// Whether a WebSocket may open from a page of `origin`: one of the allowed
/// origins, or the Worker's own. A request without `Origin` is not from a
/// browser page (a bot, a server) and may open. (Browsers send `Origin` on
/// every WebSocket handshake and CORS does not apply to them, so this check
/// is what keeps other sites' pages out.)
pub fn origin_allowed(origin: Option<&str>, allowed: &[String], own: &str) -> bool {
    match origin {
        None => true,
        Some(o) => o == own || allowed.iter().any(|a| a == o),
    }
}

/// Whether a request asks for a WebSocket (`Upgrade: websocket`).
pub fn is_upgrade(upgrade: Option<&str>) -> bool {
    upgrade.is_some_and(|u| {
        u.split(',')
            .any(|p| p.trim().eq_ignore_ascii_case("websocket"))
    })
}

/// The code to answer a peer's close with: its own when it may be sent
/// back, else 1000 (1005 and 1006 are never sent on the wire).
pub fn echo_code(code: usize) -> u16 {
    let code = u16::try_from(code).unwrap_or(1000);
    if matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999) {
        code
    } else {
        1000
    }
}

/// A post as an update carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Post {
    pub id: String,
    /// The author's display name (`null` for a user without one).
    pub author: Option<String>,
    pub content: String,
    pub created_at: String,
}

/// A post's id and time, for a snapshot's newest ids.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recent {
    pub id: String,
    pub created_at: String,
}

/// What the Worker hands the object with a new socket: the issue as its
/// cached reads know it (the object's own counts win once it has them),
/// and whose socket it is.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed {
    pub issue_id: String,
    pub rioter_count: i64,
    /// Every organisation held responsible, with its count.
    pub organisations: BTreeMap<String, i64>,
    /// The newest posts, newest first.
    pub posts: Vec<Recent>,
    /// [`client_tag`] of the client.
    pub client: String,
}

impl Seed {
    /// From the bodies of the issue's detail and its first feed page (as
    /// the read cache serves them).
    pub fn from_reads(issue_id: &str, client: &str, detail: &Value, feed: Option<&Value>) -> Seed {
        let organisations = detail["organisations"]
            .as_array()
            .map(|orgs| {
                orgs.iter()
                    .filter_map(|o| {
                        Some((o["id"].as_str()?.to_owned(), o["rioter_count"].as_i64()?))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let posts = feed
            .and_then(|f| f["items"].as_array())
            .map(|items| {
                items
                    .iter()
                    .filter_map(|p| {
                        Some(Recent {
                            id: p["id"].as_str()?.to_owned(),
                            created_at: p["created_at"].as_str()?.to_owned(),
                        })
                    })
                    .take(SNAPSHOT_POSTS)
                    .collect()
            })
            .unwrap_or_default();
        Seed {
            issue_id: issue_id.to_owned(),
            rioter_count: detail["rioter_count"].as_i64().unwrap_or(0),
            organisations,
            posts,
            client: client_tag(client),
        }
    }
}

/// The values every message carries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Values {
    pub rioter_count: i64,
    pub organisations: BTreeMap<String, i64>,
    pub watching: usize,
}

/// The values now: the object's exact counts when it has them, else the
/// last counts the reads gave (`known`); every organisation `known` lists
/// appears, with 0 when nobody holds it responsible.
pub fn values(
    counts: Option<&Counts>,
    known: &BTreeMap<String, i64>,
    known_total: i64,
    watching: usize,
) -> Values {
    match counts {
        Some(c) => {
            let mut organisations: BTreeMap<String, i64> =
                known.keys().map(|k| (k.clone(), 0)).collect();
            for (org, n) in c.organisations() {
                organisations.insert(org.to_owned(), n);
            }
            Values {
                rioter_count: c.total,
                organisations,
                watching,
            }
        }
        None => Values {
            rioter_count: known_total,
            organisations: known.clone(),
            watching,
        },
    }
}

/// A message to the client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Message {
    Snapshot {
        issue_id: String,
        #[serde(flatten)]
        values: Values,
        /// The newest posts' ids, newest first.
        posts: Vec<String>,
    },
    Update {
        #[serde(flatten)]
        values: Values,
        /// Posts since the previous update, oldest first.
        posts: Vec<Post>,
        /// Posts made in the interval beyond [`MAX_POSTS_PER_UPDATE`].
        #[serde(skip_serializing_if = "is_zero")]
        posts_missed: u32,
    },
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Message {
    pub fn text(&self) -> String {
        // A map of strings and integers: serialising cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// The newest post ids for a snapshot: those the reads gave and those the
/// object heard of since (the read cache may not show a post made a moment
/// ago), newest first, each once.
pub fn newest_posts(from_reads: &[Recent], heard: &[Recent]) -> Vec<String> {
    let mut all: Vec<&Recent> = from_reads.iter().chain(heard).collect();
    all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    let mut ids: Vec<String> = Vec::new();
    for r in all {
        if !ids.contains(&r.id) {
            ids.push(r.id.clone());
        }
        if ids.len() == SNAPSHOT_POSTS {
            break;
        }
    }
    ids
}

/// What the object has not pushed yet, and when it last pushed; saved with
/// the object's state (a push may be due after an eviction).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Pending {
    /// Something changed since the last update.
    pub dirty: bool,
    /// Unix ms of the last update.
    pub last_push_ms: u64,
    /// Posts for the next update, oldest first.
    pub posts: Vec<Post>,
    pub posts_missed: u32,
    /// The newest posts heard of, for snapshots.
    pub recent: Vec<Recent>,
    /// The last counts the reads gave (used until the object counts).
    pub known_total: i64,
    pub known_organisations: BTreeMap<String, i64>,
}

impl Pending {
    /// Something changed at `now`: when the update should go.
    pub fn changed(&mut self, now: u64) -> u64 {
        self.dirty = true;
        self.push_at(now).unwrap_or(now)
    }

    /// A post was made: remembered for snapshots, and, when someone
    /// watches, queued for the next update.
    pub fn post(&mut self, post: Post, watched: bool, now: u64) -> Option<u64> {
        let recent = Recent {
            id: post.id.clone(),
            created_at: post.created_at.clone(),
        };
        if !self.recent.iter().any(|r| r.id == recent.id) {
            self.recent.insert(0, recent);
            self.recent.truncate(SNAPSHOT_POSTS);
        }
        if !watched {
            return None;
        }
        if self.posts.iter().any(|p| p.id == post.id) {
            return self.push_at(now);
        }
        self.posts.push(post);
        if self.posts.len() > MAX_POSTS_PER_UPDATE {
            self.posts.remove(0);
            self.posts_missed = self.posts_missed.saturating_add(1);
        }
        Some(self.changed(now))
    }

    /// When the next update is due, if one is.
    pub fn push_at(&self, now: u64) -> Option<u64> {
        self.dirty
            .then(|| now.max(self.last_push_ms.saturating_add(PUSH_EVERY_MS)))
    }

    /// The update due at `now`, if one is; taking it clears what it carries.
    pub fn take(&mut self, now: u64, values: Values) -> Option<Message> {
        if self.push_at(now)? > now {
            return None;
        }
        self.dirty = false;
        self.last_push_ms = now;
        Some(Message::Update {
            values,
            posts: std::mem::take(&mut self.posts),
            posts_missed: std::mem::take(&mut self.posts_missed),
        })
    }

    /// Nobody watches any more: nothing is owed to anyone.
    pub fn forget(&mut self) {
        self.dirty = false;
        self.posts.clear();
        self.posts_missed = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn post(id: &str, at: &str) -> Post {
        Post {
            id: id.into(),
            author: Some("Ann".into()),
            content: "hello".into(),
            created_at: at.into(),
        }
    }

    fn vals(n: i64) -> Values {
        Values {
            rioter_count: n,
            organisations: BTreeMap::from([("o1".to_owned(), n)]),
            watching: 2,
        }
    }

    #[test]
    fn a_quiet_issue_pushes_at_once_then_at_most_every_interval() {
        let mut p = Pending::default();
        let t0 = 1_000_000;
        assert_eq!(p.push_at(t0), None, "nothing changed");
        assert_eq!(p.take(t0, vals(0)), None);
        assert_eq!(p.changed(t0), t0, "the first change goes at once");
        assert!(p.take(t0, vals(1)).is_some());
        // Three changes in the next interval: one update at its end, with
        // the last value.
        for (i, dt) in [10, 60, 200].iter().enumerate() {
            assert_eq!(p.changed(t0 + dt), t0 + PUSH_EVERY_MS, "change {i}");
        }
        assert_eq!(p.take(t0 + 200, vals(4)), None, "not yet");
        let Some(Message::Update { values, .. }) = p.take(t0 + PUSH_EVERY_MS, vals(4)) else {
            panic!("due");
        };
        assert_eq!(values.rioter_count, 4);
        assert_eq!(p.push_at(t0 + 300), None, "nothing left owed");
        // Late (an alarm delivered late, or after an eviction): at once.
        p.changed(t0 + 10_000);
        assert!(p.take(t0 + 10_000, vals(5)).is_some());
    }

    #[test]
    fn at_most_a_few_updates_a_second_under_any_load() {
        let mut p = Pending::default();
        let mut sent = 0;
        let mut last = 0;
        // A change every millisecond for ten seconds; the object pushes
        // whenever its alarm says an update is due.
        let mut alarm: Option<u64> = None;
        for now in 0..10_000u64 {
            let at = p.changed(now);
            alarm = Some(alarm.map_or(at, |a| a.min(at)));
            if alarm.is_some_and(|a| a <= now) {
                if let Some(Message::Update { values, .. }) = p.take(now, vals(now as i64)) {
                    sent += 1;
                    last = values.rioter_count;
                }
                alarm = p.push_at(now);
            }
        }
        assert!(sent <= 10_000 / PUSH_EVERY_MS + 1, "{sent} updates");
        assert!(sent >= 10_000 / PUSH_EVERY_MS - 1, "{sent} updates");
        // The last change is delivered by the alarm still set.
        let now = alarm.expect("a push is owed");
        let Some(Message::Update { values, .. }) = p.take(now, vals(9_999)) else {
            panic!("the last value");
        };
        assert!(last < 9_999);
        assert_eq!(values.rioter_count, 9_999);
    }

    #[test]
    fn posts_are_each_delivered_once_and_bounded() {
        let mut p = Pending::default();
        let t0 = 1_000_000;
        let first = post("a", "2026-12-01T00:00:00.000Z");
        assert_eq!(p.post(first.clone(), true, t0), Some(t0));
        assert_eq!(p.post(first, true, t0), Some(t0));
        let Some(Message::Update { posts, .. }) = p.take(t0, vals(0)) else {
            panic!("due");
        };
        assert_eq!(posts.len(), 1, "a repeated notice is one post");
        for i in 0..MAX_POSTS_PER_UPDATE + 3 {
            p.post(
                post(&format!("p{i:02}"), "2026-12-01T00:00:01.000Z"),
                true,
                t0 + 100,
            );
        }
        let Some(Message::Update {
            posts,
            posts_missed,
            ..
        }) = p.take(t0 + PUSH_EVERY_MS, vals(0))
        else {
            panic!("due");
        };
        assert_eq!(posts.len(), MAX_POSTS_PER_UPDATE);
        assert_eq!(posts_missed, 3);
        assert_eq!(posts[0].id, "p03", "the newest are kept, oldest first");
        // Unwatched: only remembered for the next snapshot.
        let unwatched = post("q", "2026-12-01T00:00:02.000Z");
        assert_eq!(p.post(unwatched, false, t0 + 900), None);
        assert!(!p.dirty);
        assert_eq!(p.recent[0].id, "q");
        assert!(p.recent.len() <= SNAPSHOT_POSTS);
    }

    #[test]
    fn message_shapes() {
        let snapshot = Message::Snapshot {
            issue_id: "i1".into(),
            values: vals(3),
            posts: vec!["p2".into(), "p1".into()],
        };
        let v: Value = serde_json::from_str(&snapshot.text()).expect("json");
        assert_eq!(
            v,
            json!({
                "type": "snapshot",
                "issue_id": "i1",
                "rioter_count": 3,
                "organisations": {"o1": 3},
                "watching": 2,
                "posts": ["p2", "p1"],
            })
        );
        let update = Message::Update {
            values: vals(4),
            posts: vec![post("p3", "2026-12-01T00:00:00.000Z")],
            posts_missed: 0,
        };
        let v: Value = serde_json::from_str(&update.text()).expect("json");
        assert_eq!(
            v,
            json!({
                "type": "update",
                "rioter_count": 4,
                "organisations": {"o1": 4},
                "watching": 2,
                "posts": [{"id": "p3", "author": "Ann", "content": "hello",
                           "created_at": "2026-12-01T00:00:00.000Z"}],
            })
        );
        let missed = Message::Update {
            values: vals(4),
            posts: vec![],
            posts_missed: 2,
        };
        assert!(missed.text().contains("\"posts_missed\":2"));
    }

    #[test]
    fn values_prefer_the_objects_counts_and_list_every_organisation() {
        let known = BTreeMap::from([("o1".to_owned(), 7), ("o2".to_owned(), 1)]);
        assert_eq!(values(None, &known, 8, 1).organisations, known);
        assert_eq!(values(None, &known, 8, 1).rioter_count, 8);
        let counts = Counts::from_groups([(Some("o1".to_owned()), 2), (None, 1)]);
        let v = values(Some(&counts), &known, 8, 3);
        assert_eq!(v.rioter_count, 3);
        assert_eq!(
            v.organisations,
            BTreeMap::from([("o1".to_owned(), 2), ("o2".to_owned(), 0)])
        );
        assert_eq!(v.watching, 3);
    }

    #[test]
    fn a_seed_comes_from_the_cached_reads() {
        let detail = json!({
            "id": "i1", "rioter_count": 5,
            "organisations": [{"id": "o1", "name": "Council", "rioter_count": 4}, {"bad": 1}],
        });
        let feed = json!({"items": [
            {"id": "p2", "created_at": "2026-12-01T00:00:02.000Z", "content": "x"},
            {"id": "p1", "created_at": "2026-12-01T00:00:01.000Z", "content": "y"},
        ]});
        let seed = Seed::from_reads("i1", "1.2.3.4", &detail, Some(&feed));
        assert_eq!(seed.rioter_count, 5);
        assert_eq!(seed.organisations, BTreeMap::from([("o1".to_owned(), 4)]));
        assert_eq!(seed.posts.len(), 2);
        assert_eq!(seed.client, client_tag("1.2.3.4"));
        assert!(!seed.client.contains("1.2.3.4"));
        let bare = Seed::from_reads("i1", "x", &json!({}), None);
        assert_eq!((bare.rioter_count, bare.posts.len()), (0, 0));
    }

    #[test]
    fn snapshots_merge_the_reads_posts_with_those_heard_since() {
        let r = |id: &str, s: u32| Recent {
            id: id.into(),
            created_at: format!("2026-12-01T00:00:{s:02}.000Z"),
        };
        let reads = [r("p2", 2), r("p1", 1)];
        let heard = [r("p3", 3), r("p2", 2)];
        assert_eq!(newest_posts(&reads, &heard), ["p3", "p2", "p1"]);
        let many: Vec<Recent> = (0..30).map(|i| r(&format!("x{i:02}"), i)).collect();
        let ids = newest_posts(&many, &[]);
        assert_eq!(ids.len(), SNAPSHOT_POSTS);
        assert_eq!(ids[0], "x29");
    }

    #[test]
    fn guards() {
        let allowed = vec!["https://quietriots.com".to_owned()];
        let own = "https://api.quietriots.com";
        assert!(origin_allowed(None, &allowed, own), "a bot or a server");
        assert!(origin_allowed(
            Some("https://quietriots.com"),
            &allowed,
            own
        ));
        assert!(origin_allowed(Some(own), &allowed, own));
        assert!(!origin_allowed(Some("https://evil.example"), &allowed, own));
        assert!(!origin_allowed(Some("null"), &allowed, own));
        assert!(is_upgrade(Some("websocket")));
        assert!(is_upgrade(Some("WebSocket")));
        assert!(is_upgrade(Some("h2c, websocket")));
        assert!(!is_upgrade(Some("h2c")));
        assert!(!is_upgrade(None));
    }

    #[test]
    fn caps_refuse_with_their_own_codes() {
        let caps = Caps {
            per_issue: 3,
            per_client: 2,
        };
        assert_eq!(admit(0, 0, caps), Ok(()));
        assert_eq!(admit(2, 1, caps), Ok(()));
        assert_eq!(admit(2, 2, caps), Err(Refusal::ClientFull));
        assert_eq!(admit(3, 0, caps), Err(Refusal::IssueFull));
        for r in [Refusal::ClientFull, Refusal::IssueFull] {
            let c = r.close();
            assert!((4000..5000).contains(&c.code));
            assert!(c.reason.len() <= 123, "a close reason fits a frame");
        }
        assert_ne!(Refusal::ClientFull.close(), Refusal::IssueFull.close());
        assert!(UNSUPPORTED.reason.len() <= 123);
    }

    #[test]
    fn a_peers_close_code_is_echoed_when_it_may_be() {
        assert_eq!(echo_code(1000), 1000);
        assert_eq!(echo_code(4001), 4001);
        assert_eq!(echo_code(1005), 1000);
        assert_eq!(echo_code(1006), 1000);
        assert_eq!(echo_code(70_000), 1000);
    }
}
