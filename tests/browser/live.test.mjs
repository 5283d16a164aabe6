// web/js/live.js without a browser: the socket's messages reach the page,
// a closed socket is opened again after a growing, jittered wait, the page
// revalidates its reads while there is no socket, a cap's refusal waits
// longer, and stop() leaves nothing running. The WebSocket and the timers
// are scripted fakes. Run by `cargo xtask browser-test`:
// node --test tests/browser/live.test.mjs

import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  backoffMs,
  FIRST_WAIT_MS,
  liveUrl,
  MAX_WAIT_MS,
  PING_MS,
  POLL_MS,
  REFUSED_WAIT_MS,
  watch,
} from '../../web/js/live.js';

/** Timers that run only when the test moves the clock. */
function fakeTimers() {
  let now = 0;
  let next = 1;
  const due = new Map(); // id -> {at, fn, every}
  const timers = {
    setTimeout: (fn, ms) => (due.set(next, { at: now + ms, fn, every: null }), next++),
    setInterval: (fn, ms) => (due.set(next, { at: now + ms, fn, every: ms }), next++),
    clearTimeout: (id) => due.delete(id),
    clearInterval: (id) => due.delete(id),
    pending: () => due.size,
    /** Moves the clock by `ms`, running what falls due in order. */
    advance(ms) {
      const end = now + ms;
      for (;;) {
        const [id, t] = [...due.entries()].sort((a, b) => a[1].at - b[1].at)[0] ?? [];
        if (!t || t.at > end) break;
        now = t.at;
        if (t.every) t.at += t.every;
        else due.delete(id);
        t.fn();
      }
      now = end;
    },
  };
  return timers;
}

/** A WebSocket class whose instances the test opens, feeds and closes. */
function fakeSockets() {
  const made = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      made.push(this);
    }
    send(text) {
      this.sent.push(text);
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }
    // What the server does:
    open() {
      this.readyState = 1;
      this.onopen?.();
    }
    receive(data) {
      this.onmessage?.({ data });
    }
    drop(code = 1006, reason = '') {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
  }
  return { FakeSocket, made };
}

const flush = () => new Promise((r) => setImmediate(r));

function setUp({ random = () => 0.5 } = {}) {
  const timers = fakeTimers();
  const { FakeSocket, made } = fakeSockets();
  const messages = [];
  const states = [];
  let polls = 0;
  const watcher = watch(
    'ws://example.test/api/issues/i1/live',
    {
      onMessage: (m) => messages.push(m),
      onState: (state, detail) => states.push({ state, ...detail }),
      poll: async () => {
        polls += 1;
      },
    },
    { WebSocket: FakeSocket, timers, random },
  );
  return { timers, made, messages, states, watcher, polls: () => polls };
}

test('the wait doubles from 1 s to at most 30 s, between half and all of it', () => {
  assert.equal(backoffMs(1, () => 0), FIRST_WAIT_MS / 2);
  assert.equal(backoffMs(1, () => 1), FIRST_WAIT_MS);
  assert.equal(backoffMs(2, () => 1), 2 * FIRST_WAIT_MS);
  assert.equal(backoffMs(3, () => 0), 2 * FIRST_WAIT_MS);
  assert.equal(backoffMs(20, () => 1), MAX_WAIT_MS);
  assert.equal(backoffMs(1000, () => 0), MAX_WAIT_MS / 2);
  const spread = new Set(Array.from({ length: 50 }, () => backoffMs(6)));
  assert.ok(spread.size > 10, 'jittered: pages dropped together spread out');
  for (const w of spread) assert.ok(w >= MAX_WAIT_MS / 2 && w <= MAX_WAIT_MS);
});

test('the socket URL is on the page host, wss on https', () => {
  assert.equal(
    liveUrl('a b', { protocol: 'https:', host: 'api.quietriots.com' }),
    'wss://api.quietriots.com/api/issues/a%20b/live',
  );
  assert.equal(liveUrl('x', { protocol: 'http:', host: '127.0.0.1:8787' }), 'ws://127.0.0.1:8787/api/issues/x/live');
});

test('messages reach the page; pong and non-JSON frames do not', () => {
  const { made, messages, states, timers } = setUp();
  assert.equal(made.length, 1);
  assert.deepEqual(states, [{ state: 'connecting' }]);
  made[0].open();
  assert.equal(states.at(-1).state, 'live');
  made[0].receive('{"type":"snapshot","rioter_count":3,"watching":1,"posts":[]}');
  made[0].receive('pong');
  made[0].receive('not json');
  made[0].receive('{"type":"update","rioter_count":4}');
  assert.deepEqual(
    messages.map((m) => m.rioter_count),
    [3, 4],
  );
  // Keep-alive pings while open.
  timers.advance(PING_MS * 2);
  assert.deepEqual(made[0].sent, ['ping', 'ping']);
});

test('a dropped socket comes back after the backoff; reads fill the gap meanwhile', async () => {
  const { made, states, timers, polls } = setUp({ random: () => 1 });
  made[0].open();
  made[0].drop(1006);
  await flush();
  assert.equal(polls(), 1, 'one read right after a socket that was open closed');
  assert.deepEqual(states.at(-1), { state: 'reconnecting', code: 1006, waitMs: FIRST_WAIT_MS });
  timers.advance(FIRST_WAIT_MS - 1);
  assert.equal(made.length, 1, 'not before the wait');
  timers.advance(1);
  assert.equal(made.length, 2, 'opened again');
  // It fails to open this time: the next wait doubles, no extra read.
  made[1].drop(1006);
  await flush();
  assert.equal(polls(), 1);
  assert.equal(states.at(-1).waitMs, 2 * FIRST_WAIT_MS);
  // Still down after a poll interval: the page revalidates its reads.
  timers.advance(2 * FIRST_WAIT_MS);
  made[2].drop(1006);
  timers.advance(POLL_MS);
  await flush();
  assert.ok(polls() >= 2, `polled while there was no socket (${polls()})`);
  // Back: polling stops, and the wait starts from 1 s again.
  const open = made.at(-1);
  open.open();
  const before = polls();
  timers.advance(POLL_MS * 3);
  await flush();
  assert.equal(polls(), before, 'no reads while the socket is open');
  open.drop(1001);
  assert.equal(states.at(-1).waitMs, FIRST_WAIT_MS);
});

test('refused by a cap (4009): the reason is shown and the next try waits longer', () => {
  const { made, states, timers } = setUp();
  made[0].open();
  made[0].drop(4009, 'this issue has as many watchers as it can take; retry later');
  assert.deepEqual(states.at(-1), {
    state: 'refused',
    code: 4009,
    reason: 'this issue has as many watchers as it can take; retry later',
    waitMs: REFUSED_WAIT_MS,
  });
  timers.advance(MAX_WAIT_MS);
  assert.equal(made.length, 1, 'no retry at the usual backoff');
  timers.advance(REFUSED_WAIT_MS);
  assert.equal(made.length, 2);
});

test('stop() closes the socket and leaves no timer running', () => {
  const { made, timers, watcher } = setUp();
  made[0].open();
  watcher.stop();
  assert.deepEqual(made[0].closedWith, { code: 1000, reason: 'page closed' });
  assert.equal(timers.pending(), 0);
  made[0].drop(1000);
  timers.advance(REFUSED_WAIT_MS * 2);
  assert.equal(made.length, 1, 'not opened again');
});

test('stop() while the socket is still opening closes it once it opens', () => {
  const { made, timers, watcher } = setUp();
  watcher.stop();
  assert.equal(made[0].closedWith, null, 'closing a socket still opening logs an error in browsers');
  made[0].open();
  assert.deepEqual(made[0].closedWith, { code: 1000, reason: 'page closed' });
  assert.equal(timers.pending(), 0);
});

test('without WebSocket support the page only polls', async () => {
  const timers = fakeTimers();
  const states = [];
  let polls = 0;
  const watcher = watch(
    'ws://example.test/x',
    { onMessage: () => {}, onState: (s) => states.push(s), poll: async () => (polls += 1) },
    { WebSocket: undefined, timers },
  );
  assert.deepEqual(states, ['polling']);
  timers.advance(POLL_MS * 3);
  await flush();
  assert.equal(polls, 3);
  watcher.stop();
  assert.equal(timers.pending(), 0);
});
