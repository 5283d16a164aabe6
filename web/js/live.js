// Live updates of one issue over a WebSocket (GET /api/issues/:id/live;
// docs/live.md has the messages). The socket pushes the issue's counts,
// new posts and how many watch; the page makes no requests while it is open.
//
// When the socket closes, it is opened again after a wait that doubles with
// each failure (1 s, 2 s, 4 s ... up to 30 s), each wait between half and
// all of that so that pages dropped together do not come back together.
// While there is no socket, the page revalidates its reads instead (`poll`,
// every 30 s; an unchanged issue is a 304), and once right after a socket
// that was open closes, so nothing is missed in between. Without WebSocket
// support at all, it only polls.

export const FIRST_WAIT_MS = 1_000;
export const MAX_WAIT_MS = 30_000;
/** After a cap refused the socket (4008, 4009): try again only this much later. */
export const REFUSED_WAIT_MS = 120_000;
export const POLL_MS = 30_000;
/** Keep-alive; the runtime answers it without waking the issue's object. */
export const PING_MS = 30_000;

/** The wait before attempt `failures` + 1: half to all of the doubled wait. */
export function backoffMs(failures, random = Math.random) {
  const doubled = FIRST_WAIT_MS * 2 ** Math.min(Math.max(failures - 1, 0), 16);
  const ceiling = Math.min(MAX_WAIT_MS, doubled);
  return Math.round(ceiling / 2 + (random() * ceiling) / 2);
}

/** The socket's URL for an issue, on this page's own host. */
export function liveUrl(issueId, location = globalThis.location) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${location.host}/api/issues/${encodeURIComponent(issueId)}/live`;
}

/**
 * Watches `url`. `onMessage(msg)` gets each snapshot and update;
 * `onState(state, detail)` hears `live`, `connecting`, `reconnecting`
 * (`{waitMs}`), `refused` (`{code, reason, waitMs}`) and `polling` (no
 * WebSocket here); `poll()` revalidates the page's reads. Returns
 * `{stop()}`, which closes the socket and cancels every timer.
 * `deps` replaces the browser's WebSocket, timers and randomness in tests.
 */
export function watch(url, { onMessage, onState = () => {}, poll = null }, deps = {}) {
  const Socket = 'WebSocket' in deps ? deps.WebSocket : globalThis.WebSocket;
  const timers = deps.timers ?? globalThis;
  const random = deps.random ?? Math.random;
  let socket = null;
  let failures = 0;
  let stopped = false;
  let retry = null;
  let ping = null;
  let polling = null;

  const revalidate = () => {
    if (poll) Promise.resolve().then(poll).catch(() => {});
  };
  const startPolling = () => {
    if (poll && polling === null) polling = timers.setInterval(revalidate, POLL_MS);
  };
  const stopPolling = () => {
    if (polling !== null) timers.clearInterval(polling);
    polling = null;
  };
  const stopPing = () => {
    if (ping !== null) timers.clearInterval(ping);
    ping = null;
  };

  function connect() {
    retry = null;
    if (stopped) return;
    onState('connecting');
    let opened = false;
    let s;
    try {
      s = new Socket(url);
    } catch {
      closed(1006, '', false);
      return;
    }
    socket = s;
    s.onopen = () => {
      opened = true;
      failures = 0;
      stopPolling();
      onState('live');
      ping = timers.setInterval(() => {
        if (s.readyState === 1) s.send('ping');
      }, PING_MS);
    };
    s.onmessage = (event) => {
      if (typeof event.data !== 'string' || event.data === 'pong') return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message && typeof message === 'object') onMessage(message);
    };
    s.onclose = (event) => closed(event.code, event.reason, opened);
  }

  function closed(code, reason, opened) {
    stopPing();
    socket = null;
    if (stopped) return;
    failures += 1;
    // Changes made while the socket was closing are caught up by a read.
    if (opened) revalidate();
    startPolling();
    if (code === 4008 || code === 4009) {
      onState('refused', { code, reason, waitMs: REFUSED_WAIT_MS });
      retry = timers.setTimeout(connect, REFUSED_WAIT_MS);
      return;
    }
    const waitMs = backoffMs(failures, random);
    onState('reconnecting', { code, waitMs });
    retry = timers.setTimeout(connect, waitMs);
  }

  if (typeof Socket !== 'function') {
    onState('polling');
    startPolling();
  } else {
    connect();
  }

  return {
    stop() {
      stopped = true;
      if (retry !== null) timers.clearTimeout(retry);
      stopPing();
      stopPolling();
      if (socket) {
        const s = socket;
        socket = null;
        s.onclose = null;
        s.onmessage = null;
        // A socket still opening cannot be closed without an error in the
        // console; it is closed as soon as it opens.
        if (s.readyState === 0) s.onopen = () => s.close(1000, 'page closed');
        else s.close(1000, 'page closed');
      }
    },
  };
}
