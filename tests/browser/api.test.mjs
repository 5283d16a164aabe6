// web/js/api.js without a browser: errors in words, Retry-After, and the
// retry of a write that got no answer (same Idempotency-Key). Node's
// fetch is replaced by a scripted one. Run by `cargo xtask browser-test`
// before the browser starts: node --test tests/browser/api.test.mjs

import assert from 'node:assert/strict';
import { afterEach, test } from 'node:test';

import { api, ApiError, retryAfterSecs } from '../../web/js/api.js';

const realFetch = globalThis.fetch;
afterEach(() => {
  globalThis.fetch = realFetch;
});

/** Answers each call with the next of `replies` (a Response or an Error), and records the calls. */
function script(...replies) {
  const calls = [];
  globalThis.fetch = async (url, init) => {
    calls.push({ url, ...init });
    const next = replies.shift();
    if (next instanceof Error) throw next;
    return next;
  };
  return calls;
}

const json = (status, body, headers = {}) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json', ...headers },
  });

const envelope = (code, message, details = null) => ({
  error: { code, message, details, request_id: 'req-1' },
});

test('Retry-After in seconds or as an HTTP date', () => {
  assert.equal(retryAfterSecs('7'), 7);
  assert.equal(retryAfterSecs(' 12 '), 12);
  const now = Date.parse('2026-12-03T12:00:00Z');
  assert.equal(retryAfterSecs('Thu, 03 Dec 2026 12:00:30 GMT', now), 30);
  assert.equal(retryAfterSecs('Thu, 03 Dec 2026 11:00:00 GMT', now), 0);
  assert.equal(retryAfterSecs(null), null);
  assert.equal(retryAfterSecs('soon'), null);
});

test('a 429 is "too many requests" with the wait from Retry-After', async () => {
  script(json(429, envelope('rate_limited', 'over the writes limit', { retry_after_secs: 9 }), { 'Retry-After': '3' }));
  const e = await api.join('i1').catch((e) => e);
  assert.ok(e instanceof ApiError);
  assert.equal(e.status, 429);
  assert.equal(e.words(), 'Too many requests, try again in 3 seconds.');
});

test('without Retry-After, the wait comes from the error details', async () => {
  script(json(429, envelope('rate_limited', 'over', { retry_after_secs: 1 })));
  const e = await api.issues().catch((e) => e);
  assert.equal(e.words(), 'Too many requests, try again in 1 second.');
});

test('errors in words: validation, not found, unavailable, unknown', async () => {
  script(json(400, envelope('validation_failed', 'content: must be at most 2000 characters', { field: 'content' })));
  let e = await api.post('i1', 'x').catch((e) => e);
  assert.equal(e.field, 'content');
  assert.equal(e.reason(), 'must be at most 2000 characters');
  assert.equal(e.words(), 'That was not accepted: must be at most 2000 characters.');

  script(json(404, envelope('not_found', 'no issue')));
  e = await api.issue('i1').catch((e) => e);
  assert.equal(e.words('This issue does not exist.'), 'This issue does not exist.');

  script(json(503, envelope('primary_unavailable', 'the database did not answer'), { 'Retry-After': '2' }));
  e = await api.me().catch((e) => e);
  assert.equal(e.words(), 'Quiet Riots is unavailable for a moment, try again in 2 seconds.');

  script(new Response('<html>bad gateway</html>', { status: 502, statusText: 'Bad Gateway', headers: { 'X-Request-Id': 'r9' } }));
  e = await api.me().catch((e) => e);
  assert.equal(e.code, 'http_502');
  assert.equal(e.words(), 'Something went wrong (502): Bad Gateway (reference r9)');
});

test('reads send the cookie and no key; writes send a fresh Idempotency-Key', async () => {
  const calls = script(
    json(200, { items: [], next_cursor: null }),
    json(201, { id: 'p1' }),
    json(201, { id: 'p2' }),
  );
  await api.issues({ q: 'pot holes', cursor: 'c1' });
  await api.post('i 1', 'hello');
  await api.post('i 1', 'hello');
  assert.equal(calls[0].url, '/api/issues?q=pot+holes&cursor=c1&limit=10');
  assert.equal(calls[0].method, 'GET');
  assert.equal(calls[0].credentials, 'same-origin');
  assert.equal(calls[0].headers['Idempotency-Key'], undefined);
  assert.equal(calls[1].url, '/api/issues/i%201/feed');
  assert.equal(calls[1].credentials, 'same-origin');
  assert.equal(calls[1].headers['Content-Type'], 'application/json');
  assert.deepEqual(JSON.parse(calls[1].body), { content: 'hello' });
  const [a, b] = [calls[1].headers['Idempotency-Key'], calls[2].headers['Idempotency-Key']];
  assert.match(a, /^[0-9a-f-]{36}$/);
  assert.notEqual(a, b, 'each write its own key');
});

test('a write with no answer is sent once more with the same key', async () => {
  const calls = script(new TypeError('Failed to fetch'), json(200, { member: true, rioter_count: 5 }));
  const { status, body } = await api.join('i1');
  assert.equal(status, 200);
  assert.equal(body.rioter_count, 5);
  assert.equal(calls.length, 2);
  assert.equal(calls[0].headers['Idempotency-Key'], calls[1].headers['Idempotency-Key']);
  assert.equal(calls[1].method, 'POST');
});

test('no answer twice is a network error in words; a read is not retried', async () => {
  script(new TypeError('Failed to fetch'), new TypeError('Failed to fetch'));
  let e = await api.leave('i1').catch((e) => e);
  assert.equal(e.code, 'network');
  assert.equal(e.words(), 'Cannot reach Quiet Riots. Check your connection and try again.');
  const calls = script(new TypeError('Failed to fetch'));
  e = await api.me().catch((e) => e);
  assert.equal(e.code, 'network');
  assert.equal(calls.length, 1);
});

test('a refused write is not retried', async () => {
  const calls = script(json(400, envelope('validation_failed', 'content: empty', { field: 'content' })));
  await api.post('i1', ' ').catch(() => {});
  assert.equal(calls.length, 1);
});
