// The list of issues, with search and "more issues" paging.

import { api, ApiError } from '../api.js';
import { failure, h, nextPage, replace, rioters } from '../dom.js';

export async function issuesView(main, { q = '' }) {
  const input = h('input', {
    id: 'q',
    name: 'q',
    type: 'search',
    value: q,
    autocomplete: 'off',
    'aria-describedby': 'q-hint',
  });
  const form = h(
    'form',
    { class: 'search', role: 'search', onsubmit: (e) => search(e, input) },
    h('label', { for: 'q' }, 'Search issues'),
    h('p', { id: 'q-hint', class: 'hint' }, 'Words in the name or description, e.g. "pothole".'),
    h('div', { class: 'row' }, input, h('button', { type: 'submit' }, 'Search')),
  );
  const list = h('ul', { class: 'issues', id: 'issue-list' });
  const summary = h('p', { class: 'summary', id: 'issue-summary' });
  const more = h('div', { class: 'more' });
  replace(main, h('h1', {}, q ? 'Search' : 'Issues'), form, summary, list, more);

  let page;
  try {
    page = await api.issues({ q });
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    replace(main, failure('Issues could not be loaded', e.words(), () => issuesView(main, { q })));
    return;
  }
  summary.textContent = q
    ? page.items.length
      ? `Issues matching "${q}":`
      : `No issue matches "${q}".`
    : 'The issues people are joining, most rioters first.';
  show(page, list, more, q);
}

function search(event, input) {
  event.preventDefault();
  const q = input.value.trim();
  location.hash = q ? `#/?q=${encodeURIComponent(q)}` : '#/';
}

function show(page, list, more, q) {
  for (const issue of page.items) list.append(item(issue));
  nextPage(more, page, {
    id: 'more-issues',
    label: 'More issues',
    shown: 'more issues shown.',
    load: (cursor) => api.issues({ q, cursor }),
    show: (next) => show(next, list, more, q),
  });
}

function item(issue) {
  return h(
    'li',
    {},
    h('a', { href: `#/issues/${encodeURIComponent(issue.id)}` }, issue.name),
    h('span', { class: 'meta' }, `${issue.category} · ${rioters(issue.rioter_count)}`),
  );
}
