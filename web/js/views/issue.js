// One issue: what it is, who is held responsible, the actions, joining and
// leaving (the count updates in place from the write's answer), and the
// feed with posting and "older posts" paging.

import { api, ApiError } from '../api.js';
import { announce, failure, h, replace, rioters, when } from '../dom.js';

const NOT_FOUND = 'This issue does not exist. It may have been removed, or the link is wrong.';

export async function issueView(main, { id }, session) {
  const [issue, actions, feed, me] = await Promise.allSettled([
    api.issue(id),
    api.actions(id),
    api.feed(id),
    api.me(),
  ]);
  if (issue.status === 'rejected') {
    const e = issue.reason;
    if (!(e instanceof ApiError)) throw e;
    const title = e.code === 'not_found' ? 'Issue not found' : 'This issue could not be loaded';
    replace(main, failure(title, e.words(NOT_FOUND), () => issueView(main, { id }, session)));
    return;
  }
  const it = issue.value;
  const member =
    me.status === 'fulfilled' && me.value.issues.some((i) => i.id === it.id);
  if (me.status === 'fulfilled') session.update(me.value);
  document.title = `${it.name} · Quiet Riots`;
  replace(
    main,
    h('p', { class: 'back' }, h('a', { href: '#/' }, '← All issues')),
    h('h1', { id: 'issue-name' }, it.name),
    h('p', { class: 'meta' }, it.category),
    it.description ? h('p', { class: 'description' }, it.description) : null,
    membership(it, member, session),
    organisations(it.organisations),
    actionsSection(actions),
    feedSection(it.id, feed, session),
  );
}

function membership(issue, member, session) {
  const count = h('strong', { id: 'rioter-count' }, issue.rioter_count.toLocaleString('en-GB'));
  const unit = h('span', {}, issue.rioter_count === 1 ? ' rioter' : ' rioters');
  const button = h('button', { type: 'button', id: 'membership', class: 'primary' });
  const error = h('p', { id: 'membership-error', class: 'error', hidden: true });
  let joined = member;
  const label = () => {
    button.textContent = joined ? 'Leave this issue' : 'Join this issue';
    button.classList.toggle('primary', !joined);
  };
  label();
  button.addEventListener('click', async () => {
    button.disabled = true;
    error.hidden = true;
    try {
      const { status, body } = joined ? await api.leave(issue.id) : await api.join(issue.id);
      session.signedIn();
      if (status === 202) {
        joined = !joined;
        announce('Saved. It will count as soon as Quiet Riots is back.');
      } else {
        joined = body.member;
        count.textContent = body.rioter_count.toLocaleString('en-GB');
        unit.textContent = body.rioter_count === 1 ? ' rioter' : ' rioters';
        announce(
          `${joined ? 'You joined' : 'You left'} ${issue.name}. ${rioters(body.rioter_count)}.`,
        );
      }
      label();
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      error.textContent = e.words(NOT_FOUND);
      error.hidden = false;
      announce(e.words(NOT_FOUND), { error: true });
    } finally {
      button.disabled = false;
    }
  });
  return h(
    'section',
    { class: 'membership', 'aria-label': 'Membership' },
    h('p', { class: 'count' }, count, unit),
    button,
    error,
  );
}

function organisations(list) {
  return h(
    'section',
    { 'aria-labelledby': 'organisations-h' },
    h('h2', { id: 'organisations-h' }, 'Held responsible'),
    list.length
      ? h(
          'ul',
          { class: 'organisations' },
          list.map((o) =>
            h('li', {}, h('span', { class: 'name' }, o.name), h('span', { class: 'meta' }, rioters(o.rioter_count))),
          ),
        )
      : h('p', {}, 'No organisation is linked to this issue yet.'),
  );
}

function actionsSection(result) {
  const title = h('h2', { id: 'actions-h' }, 'What you can do');
  if (result.status === 'rejected') {
    return h('section', { 'aria-labelledby': 'actions-h' }, title, loadError(result.reason));
  }
  const items = result.value.items;
  return h(
    'section',
    { 'aria-labelledby': 'actions-h' },
    title,
    items.length
      ? h('ul', { class: 'actions' }, items.map(action))
      : h('p', {}, 'No actions yet.'),
  );
}

function action(a) {
  const link = /^https?:\/\//i.test(a.external_url || '')
    ? h('a', { href: a.external_url, rel: 'noopener noreferrer', target: '_blank' }, 'Find out more')
    : null;
  return h(
    'li',
    {},
    h('span', { class: 'name' }, a.title),
    h('span', { class: 'meta' }, [a.type, a.time_required].filter(Boolean).join(' · ')),
    a.description ? h('p', {}, a.description) : null,
    link,
  );
}

function feedSection(issueId, result, session) {
  const list = h('ol', { class: 'feed', id: 'feed' });
  const more = h('div', { class: 'more' });
  const section = h(
    'section',
    { 'aria-labelledby': 'feed-h' },
    h('h2', { id: 'feed-h' }, 'Feed'),
    postForm(issueId, list, session),
    list,
    more,
  );
  if (result.status === 'rejected') {
    list.replaceWith(loadError(result.reason));
    return section;
  }
  showPosts(issueId, result.value, list, more);
  return section;
}

function showPosts(issueId, page, list, more) {
  for (const p of page.items) list.append(post(p));
  if (!list.children.length) list.append(h('li', { class: 'empty' }, 'No posts yet. Be the first.'));
  replace(more);
  if (!page.next_cursor) return;
  const button = h('button', { type: 'button', id: 'older-posts' }, 'Older posts');
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const next = await api.feed(issueId, { cursor: page.next_cursor });
      showPosts(issueId, next, list, more);
      announce(`${next.items.length} older posts shown.`);
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      button.disabled = false;
      announce(e.words(), { error: true });
    }
  });
  more.append(button);
}

function post(p, author = p.author) {
  return h(
    'li',
    {},
    h('p', { class: 'content' }, p.content),
    h('p', { class: 'meta' }, author || 'Someone', ' · ', when(p.created_at), p.archived ? ' · archived' : ''),
  );
}

function postForm(issueId, list, session) {
  const text = h('textarea', {
    id: 'post-content',
    name: 'content',
    rows: 3,
    required: true,
    'aria-describedby': 'post-hint post-error',
  });
  const error = h('p', { id: 'post-error', class: 'error', hidden: true });
  const submit = h('button', { type: 'submit' }, 'Post');
  const form = h(
    'form',
    { class: 'post', id: 'post-form' },
    h('label', { for: 'post-content' }, 'Write a post'),
    h('p', { id: 'post-hint', class: 'hint' }, 'Up to 2,000 characters. Everyone can read it.'),
    text,
    error,
    submit,
  );
  const showError = (words) => {
    error.textContent = words;
    error.hidden = false;
    text.setAttribute('aria-invalid', 'true');
  };
  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    error.hidden = true;
    text.removeAttribute('aria-invalid');
    if (!text.value.trim()) {
      showError('Write something first.');
      text.focus();
      return;
    }
    submit.disabled = true;
    try {
      const { status, body } = await api.post(issueId, text.value);
      session.signedIn();
      if (status === 202) {
        announce('Saved. Your post will appear as soon as Quiet Riots is back.');
      } else {
        list.querySelector('li.empty')?.remove();
        list.prepend(post(body, 'You'));
        announce('Your post is on the feed.');
      }
      text.value = '';
    } catch (e) {
      if (!(e instanceof ApiError)) throw e;
      const words = e.code === 'validation_failed' && e.field === 'content'
        ? `Your post was not accepted: it ${e.reason()}.`
        : e.words(NOT_FOUND);
      showError(words);
      announce(words, { error: true });
      text.focus();
    } finally {
      submit.disabled = false;
    }
  });
  return form;
}

function loadError(e) {
  if (!(e instanceof ApiError)) throw e;
  return h('p', { class: 'error', role: 'alert' }, e.words(NOT_FOUND));
}
