//! The IssueCounter's sockets: opening one (caps, snapshot), counting those
//! that watch, pushing an update to all. The messages, the coalescing and
//! the caps are [`crate::domain::live`]; the object wires them to its
//! storage and alarm ([`super::issue_counter`]).
//!
//! Sockets are accepted through the hibernation API: the runtime holds
//! them while the object is evicted, and wakes it (a fresh instance that
//! loads its storage) for a close or a message. So nothing about a socket
//! lives only in memory: its client is its tag ([`live::client_tag`]), and
//! what the object owes the sockets ([`Pending`]) is saved in the object's
//! table `live`. Keep-alives (`ping`) are answered by the runtime itself
//! (auto-response) without waking the object.

use worker::worker_sys::web_sys;
use worker::{Response, Result, State, WebSocket, WebSocketPair, WebSocketRequestResponsePair};

use super::shape::{self, Shape};
use crate::domain::live::{self, Caps, Message, Pending, Seed};

/// The header the Worker passes a new socket's [`Seed`] in (JSON).
pub const SEED_HEADER: &str = "X-Live-Seed";

/// The tag of a socket refused by a cap: accepted only to be closed with
/// its code, never counted as watching.
pub const REFUSED: &str = "refused";

/// `web_sys::WebSocket.OPEN`.
const OPEN: u16 = 1;

/// The saved [`Pending`]: version 1.
impl Shape for Pending {
    const VERSION: u32 = 1;
}

/// The saved state, read; when unreadable (logged with `object`), a state
/// that owes every socket an update, so each gets the current values.
pub fn pending_from(text: &str, object: &str) -> Pending {
    shape::decode::<Pending>(text).unwrap_or_else(|why| {
        tracing::error!(object = %object, error = %why, "issue counter: saved live state unreadable; pushing the current values");
        Pending {
            dirty: true,
            ..Pending::default()
        }
    })
}

/// Keep-alives answered by the runtime: a `ping` text frame gets `pong`
/// without waking the object. Set on every start of the object, so it holds
/// for sockets accepted before an eviction too.
pub fn answer_pings(state: &State) {
    match WebSocketRequestResponsePair::new(live::PING, live::PONG) {
        Ok(pair) => state.set_websocket_auto_response(&pair),
        Err(e) => tracing::warn!(error = ?e, "issue counter: no ping auto-response"),
    }
}

/// Opens a socket for `seed`'s client: accepted (hibernatable, tagged with
/// the client) and sent its snapshot, made by `snapshot` from how many
/// watch then; or, over a cap, accepted plainly and closed at once with
/// the refusal's code and reason (a browser sees those, not an HTTP
/// status). A refused socket is hibernatable too (a plain one left the
/// runtime an unhandled error when its client went), tagged [`REFUSED`]; it
/// is closing, so it never counts as watching. Returns the 101 and whether
/// the socket now watches.
pub fn open(
    state: &State,
    seed: &Seed,
    caps: Caps,
    snapshot: impl FnOnce(usize) -> Message,
) -> Result<(Response, bool)> {
    // Sockets closing (refused ones among them) are on their way out.
    let open = watching(state, None);
    let mine = state
        .get_websockets_with_tag(&seed.client)
        .iter()
        .filter(|ws| is_open(ws))
        .count();
    let pair = WebSocketPair::new()?;
    let watching = match live::admit(open, mine, caps) {
        Err(refusal) => {
            state.accept_websocket_with_tags(&pair.server, &[REFUSED]);
            let close = refusal.close();
            pair.server.close(Some(close.code), Some(close.reason))?;
            false
        }
        Ok(()) => {
            state.accept_websocket_with_tags(&pair.server, &[seed.client.as_str()]);
            pair.server
                .send_with_str(snapshot(watching(state, None)).text())?;
            true
        }
    };
    Ok((Response::from_websocket(pair.client)?, watching))
}

/// Whether a socket was refused by a cap (and so never watched).
pub fn was_refused(state: &State, ws: &WebSocket) -> bool {
    state.get_tags(ws).iter().any(|t| t == REFUSED)
}

fn is_open(ws: &WebSocket) -> bool {
    let raw: &web_sys::WebSocket = ws.as_ref();
    raw.ready_state() == OPEN
}

/// Open sockets, but `except` (one being closed).
pub fn watchers(state: &State, except: Option<&WebSocket>) -> Vec<WebSocket> {
    state
        .get_websockets()
        .into_iter()
        .filter(|ws| is_open(ws) && except != Some(ws))
        .collect()
}

/// How many sockets watch, but `except`.
pub fn watching(state: &State, except: Option<&WebSocket>) -> usize {
    watchers(state, except).len()
}

/// Sends `message` to every socket in `to`; how many sends failed (a
/// socket closing meanwhile; its close event follows).
pub fn send_all(to: &[WebSocket], message: &Message) -> usize {
    let text = message.text();
    to.iter()
        .filter(|ws| ws.send_with_str(&text).is_err())
        .count()
}

#[cfg(test)]
mod tests {
    use super::super::shape::fixture;
    use super::*;

    #[test]
    fn every_saved_shape_loads() {
        let p = pending_from(&fixture("issue_counter_live.v1.json"), "test");
        assert!(p.dirty);
        assert_eq!(p.last_push_ms, 1_796_122_417_300);
        assert_eq!(p.posts.len(), 1);
        assert_eq!(p.posts[0].author.as_deref(), Some("Ann"));
        assert_eq!(p.recent.len(), 2);
        assert_eq!(p.known_total, 42);
        assert_eq!(
            p.known_organisations
                .get("0a6c7e1e-8a51-4c1e-bb56-1b1f9f0f6b01"),
            Some(&40)
        );
    }

    #[test]
    fn the_current_shape_round_trips_with_its_version() {
        let p = pending_from(&fixture("issue_counter_live.v1.json"), "test");
        let text = shape::encode(&p).expect("encode");
        assert!(text.contains("\"v\":1"), "{text}");
        assert_eq!(pending_from(&text, "test"), p);
    }

    #[test]
    fn an_unreadable_state_pushes_the_current_values() {
        let p = pending_from("{\"v\": 1, \"dirty\": \"maybe\"}", "test");
        assert!(p.dirty, "every socket gets the current values once");
        assert!(p.posts.is_empty());
    }
}
