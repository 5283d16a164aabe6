// The Quiet Riots API, same origin as this page (openapi.yaml describes it).
// Every call sends the session cookie; every failure is an ApiError whose
// `words` say what went wrong in a sentence a person can act on.

/** A failed call: the HTTP status (0 when nothing answered) and the API's error envelope. */
export class ApiError extends Error {
  constructor({ status, code, message, details, requestId, retryAfter }) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.code = code;
    this.details = details ?? null;
    this.requestId = requestId ?? null;
    this.retryAfter = retryAfter ?? null;
  }

  /** The field a validation error names (`content`, `q`, ...), if any. */
  get field() {
    return this.details && typeof this.details.field === 'string' ? this.details.field : null;
  }

  /** The error in words. `notFound` says what was missing, for a 404. */
  words(notFound = 'That page does not exist.') {
    const wait = this.retryAfter;
    switch (this.code) {
      case 'network':
        return 'Cannot reach Quiet Riots. Check your connection and try again.';
      case 'rate_limited':
        return `Too many requests, try again in ${plural(wait ?? 1, 'second')}.`;
      case 'not_found':
        return notFound;
      case 'validation_failed':
        return `That was not accepted: ${this.reason()}.`;
      case 'payload_too_large':
        return 'That is too long to send.';
      case 'primary_unavailable':
      case 'limiter_unavailable':
      case 'counter_unavailable':
        return wait
          ? `Quiet Riots is unavailable for a moment, try again in ${plural(wait, 'second')}.`
          : 'Quiet Riots is unavailable for a moment, try again soon.';
      case 'cors_refused':
      case 'forbidden':
        return 'This page is not allowed to do that.';
      default:
        return `Something went wrong (${this.status || 'no answer'}): ${this.message}` +
          (this.requestId ? ` (reference ${this.requestId})` : '');
    }
  }

  /** A validation message without its leading `field: `. */
  reason() {
    const field = this.field;
    const text = this.message || 'not valid';
    return field && text.startsWith(`${field}: `) ? text.slice(field.length + 2) : text;
  }
}

function plural(n, unit) {
  return `${n} ${unit}${n === 1 ? '' : 's'}`;
}

/** Whole seconds from a `Retry-After` header (seconds or an HTTP date). */
export function retryAfterSecs(value, now = Date.now()) {
  if (value == null || value === '') return null;
  if (/^\d+$/.test(value.trim())) return Number(value.trim());
  const at = Date.parse(value);
  return Number.isNaN(at) ? null : Math.max(0, Math.ceil((at - now) / 1000));
}

async function call(method, path, { body, idempotencyKey } = {}) {
  const headers = { Accept: 'application/json' };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (idempotencyKey) headers['Idempotency-Key'] = idempotencyKey;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      credentials: 'same-origin',
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch (e) {
    throw new ApiError({ status: 0, code: 'network', message: String(e) });
  }
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (response.ok) return { status: response.status, body: json };
  const error = (json && json.error) || {};
  const retryAfter =
    retryAfterSecs(response.headers.get('Retry-After')) ??
    (error.details && Number.isInteger(error.details.retry_after_secs)
      ? error.details.retry_after_secs
      : null);
  throw new ApiError({
    status: response.status,
    code: error.code || `http_${response.status}`,
    message: error.message || response.statusText || 'no message',
    details: error.details,
    requestId: error.request_id || response.headers.get('X-Request-Id'),
    retryAfter,
  });
}

async function read(path) {
  return (await call('GET', path)).body;
}

/**
 * A write with an Idempotency-Key: if nothing answered (a dropped
 * connection), it is sent once more with the same key, so the server
 * applies it at most once.
 */
async function write(method, path, body) {
  const idempotencyKey = crypto.randomUUID();
  try {
    return await call(method, path, { body, idempotencyKey });
  } catch (e) {
    if (e instanceof ApiError && e.code === 'network') {
      return call(method, path, { body, idempotencyKey });
    }
    throw e;
  }
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

const issuePath = (id) => `/api/issues/${encodeURIComponent(id)}`;

export const api = {
  /** A page of issues: `{items, next_cursor}`; `q` searches. */
  issues: ({ q, cursor, limit = 10 } = {}) => read(`/api/issues${query({ q, cursor, limit })}`),
  issue: (id) => read(issuePath(id)),
  actions: (id, { cursor, limit = 20 } = {}) => read(`${issuePath(id)}/actions${query({ cursor, limit })}`),
  feed: (id, { cursor, limit = 10 } = {}) => read(`${issuePath(id)}/feed${query({ cursor, limit })}`),
  /** `{user, issues}`; `user` is null without a session. */
  me: () => read('/api/me'),
  /** `{status, body}`: 200 with the membership, or 202 when it is queued. */
  join: (id) => write('POST', `${issuePath(id)}/join`),
  leave: (id) => write('DELETE', `${issuePath(id)}/join`),
  post: (id, content) => write('POST', `${issuePath(id)}/feed`, { content }),
  logout: () => write('POST', '/api/logout'),
};
