// Building the page. Text from the API only ever goes in as text
// (textContent), never as HTML, so nothing it holds can run here.

import { ApiError } from './api.js';

/**
 * An element: `h('a', {href: '#/'}, 'Issues')`. Attributes named `on...`
 * with a function are event listeners; `false`/`null` attributes are left
 * out; children are nodes, strings or arrays of them.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else if (value === true) {
      el.setAttribute(name, '');
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replaces what `el` holds. */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/** Says `text` in the live region (read out by screen readers, shown on screen). */
export function announce(text, { error = false } = {}) {
  const status = document.getElementById('status');
  status.classList.toggle('error', error);
  // A repeated message must still be announced: clear, then set.
  status.textContent = '';
  requestAnimationFrame(() => {
    status.textContent = text;
  });
}

export function clearAnnouncement() {
  const status = document.getElementById('status');
  status.textContent = '';
  status.classList.remove('error');
}

export function rioters(n) {
  return `${n.toLocaleString('en-GB')} ${n === 1 ? 'rioter' : 'rioters'}`;
}

/** A `<time>` for an ISO-8601 timestamp. */
export function when(iso) {
  const d = new Date(iso);
  const text = Number.isNaN(d.getTime())
    ? iso
    : d.toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'short' });
  return h('time', { datetime: iso }, text);
}

/** A failed load, in words, with a way to try again. */
export function failure(title, words, retry) {
  return h(
    'div',
    { class: 'notice error', role: 'alert' },
    h('h1', {}, title),
    h('p', {}, words),
    retry ? h('button', { type: 'button', onclick: retry }, 'Try again') : null,
    h('p', {}, h('a', { href: '#/' }, 'Back to all issues')),
  );
}

/**
 * The "next page" button of a paged list, in `more`: none when `page` is the
 * last. A click loads the next page (`load(cursor)`), hands it to `show`
 * and says how many came (`N ${shown}`); a failure is said in words and the
 * button works again.
 */
export function nextPage(more, page, { id, label, shown, load, show }) {
  replace(more);
  if (!page.next_cursor) return;
  const button = h('button', { type: 'button', id }, label);
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const next = await load(page.next_cursor);
      show(next);
      announce(`${next.items.length} ${shown}`);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      button.disabled = false;
      announce(e.words(), { error: true });
    }
  });
  more.append(button);
}
