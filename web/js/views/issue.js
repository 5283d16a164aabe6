// One issue: what it is, who is held responsible, the actions, joining and
// leaving (the count updates in place from the write's answer), and the
// feed with posting and "older posts" paging. While the page is open, the
// issue's live socket moves the counts and adds other people's posts
// (../live.js), with no requests from the page.

import { api, ApiError } from '../api.js';
import { announce, failure, h, nextPage, replace, rioters, when } from '../dom.js';
import { liveUrl, watch } from '../live.js';

const NOT_FOUND = 'This issue does not exist. It may have been removed, or the link is wrong.';

export async function issueView(main, { id }, session, page) {
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
    replace(main, failure(title, e.words(NOT_FOUND), () => issueView(main, { id }, session, page)));
    return;
  }
  const it = issue.value;
  const member =
    me.status === 'fulfilled' && me.value.issues.some((i) => i.id === it.id);
  if (me.status === 'fulfilled') session.update(me.value);
  document.title = `${it.name} · Quiet Riots`;
  const members = membership(it, member, session);
  const orgs = organisations(it.organisations);
  const posts = feedSection(it.id, feed, session);
  replace(
    main,
    h('p', { class: 'back' }, h('a', { href: '#/' }, '← All issues')),
    h('h1', { id: 'issue-name' }, it.name),
    h('p', { class: 'meta' }, it.category),
    it.description ? h('p', { class: 'description' }, it.description) : null,
    members.section,
    orgs.section,
    actionsSection(it.id, actions),
    posts.section,
  );
  const live = watch(liveUrl(it.id), {
    onMessage(message) {
      if (Number.isInteger(message.rioter_count)) members.setCount(message.rioter_count);
      if (message.organisations && typeof message.organisations === 'object') {
        orgs.setCounts(message.organisations);
      }
      if (Number.isInteger(message.watching)) members.setWatching(message.watching);
      const list = Array.isArray(message.posts) ? message.posts : [];
      if (message.type === 'snapshot') {
        // Newest first, ids only: any before the newest post this page
        // shows were made while it loaded (or while its socket was away).
        const newer = list.findIndex((postId) => posts.has(postId));
        if (newer !== 0 && list.length > 0) posts.catchUp();
      } else if (message.type === 'update') {
        posts.add(list.filter((p) => p && typeof p.id === 'string'));
        if (message.posts_missed) posts.catchUp();
      }
    },
    onState: members.setLive,
    // Without a socket: the same reads the page made, revalidated.
    async poll() {
      const fresh = await api.issue(it.id);
      members.setCount(fresh.rioter_count);
      orgs.setCounts(Object.fromEntries(fresh.organisations.map((o) => [o.id, o.rioter_count])));
      await posts.catchUp();
    },
  });
  page.onLeave(() => live.stop());
}

/** What the live status line says for a state of the socket (live.js). */
function liveWords(state, detail, watching) {
  switch (state) {
    case 'live':
      return watching === null
        ? 'Live: changes show as they happen.'
        : `Live: changes show as they happen. ${watching.toLocaleString('en-GB')} watching.`;
    case 'connecting':
      return 'Connecting for live updates…';
    case 'refused':
      return `Live updates are not available${detail.reason ? ` (${detail.reason})` : ''}; this page refreshes every 30 seconds.`;
    case 'polling':
      return 'This browser cannot take live updates; this page refreshes every 30 seconds.';
    default:
      return 'Live updates paused; reconnecting. This page refreshes every 30 seconds meanwhile.';
  }
}

function membership(issue, member, session) {
  const count = h('strong', { id: 'rioter-count' }, issue.rioter_count.toLocaleString('en-GB'));
  const unit = h('span', {}, issue.rioter_count === 1 ? ' rioter' : ' rioters');
  const setCount = (n) => {
    count.textContent = n.toLocaleString('en-GB');
    unit.textContent = n === 1 ? ' rioter' : ' rioters';
  };
  // Not a live region: a busy issue's count would be read out all the time.
  const status = h('p', { id: 'live-status', class: 'meta' });
  let state = 'connecting';
  let detail = {};
  let watching = null;
  const showLive = () => {
    status.textContent = liveWords(state, detail, watching);
    status.dataset.state = state;
  };
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
        setCount(body.rioter_count);
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
  showLive();
  return {
    section: h(
      'section',
      { class: 'membership', 'aria-label': 'Membership' },
      h('p', { class: 'count' }, count, unit),
      status,
      button,
      error,
    ),
    setCount,
    setWatching(n) {
      watching = n;
      showLive();
    },
    setLive(next, nextDetail = {}) {
      state = next;
      detail = nextDetail;
      showLive();
    },
  };
}

function organisations(list) {
  const counts = new Map(); // organisation id -> its count's element
  const section = h(
    'section',
    { 'aria-labelledby': 'organisations-h' },
    h('h2', { id: 'organisations-h' }, 'Held responsible'),
    list.length
      ? h(
          'ul',
          { class: 'organisations' },
          list.map((o) => {
            const count = h('span', { class: 'meta' }, rioters(o.rioter_count));
            counts.set(o.id, count);
            return h('li', {}, h('span', { class: 'name' }, o.name), count);
          }),
        )
      : h('p', {}, 'No organisation is linked to this issue yet.'),
  );
  return {
    section,
    /** `{organisation id: count}`; organisations this page does not show are left out. */
    setCounts(byId) {
      for (const [orgId, n] of Object.entries(byId)) {
        if (Number.isInteger(n) && counts.has(orgId)) counts.get(orgId).textContent = rioters(n);
      }
    },
  };
}

function actionsSection(issueId, result) {
  const title = h('h2', { id: 'actions-h' }, 'What you can do');
  if (result.status === 'rejected') {
    return h('section', { 'aria-labelledby': 'actions-h' }, title, loadError(result.reason));
  }
  if (!result.value.items.length) {
    return h('section', { 'aria-labelledby': 'actions-h' }, title, h('p', {}, 'No actions yet.'));
  }
  const list = h('ul', { class: 'actions' });
  const more = h('div', { class: 'more' });
  showActions(issueId, result.value, list, more);
  return h('section', { 'aria-labelledby': 'actions-h' }, title, list, more);
}

/** Adds a page of actions to the list, and a "More actions" button while there are more. */
function showActions(issueId, page, list, more) {
  list.append(...page.items.map(action));
  nextPage(more, page, {
    id: 'more-actions',
    label: 'More actions',
    shown: 'more actions shown.',
    load: (cursor) => api.actions(issueId, { cursor }),
    show: (next) => showActions(issueId, next, list, more),
  });
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
  const shown = new Set(); // ids of the posts on the page
  /** Puts posts made since the page loaded at the top (given oldest first), each once. */
  const add = (oldestFirst, author) => {
    for (const p of oldestFirst) {
      if (shown.has(p.id)) continue;
      shown.add(p.id);
      list.querySelector('li.empty')?.remove();
      list.prepend(post(p, author ?? p.author));
    }
  };
  const section = h(
    'section',
    { 'aria-labelledby': 'feed-h' },
    h('h2', { id: 'feed-h' }, 'Feed'),
    postForm(issueId, (p) => add([p], 'You'), session),
    list,
    more,
  );
  const failed = result.status === 'rejected';
  if (failed) list.replaceWith(loadError(result.reason));
  else showPosts(issueId, result.value, list, more, shown);
  let catching = null;
  return {
    section,
    has: (postId) => shown.has(postId),
    /** Posts from an update, oldest first. */
    add: (oldestFirst) => {
      if (!failed) add(oldestFirst);
    },
    /**
     * Reads the feed's first page for posts the page missed, one read at a
     * time. A failed read changes nothing (the next update or poll tries again).
     */
    catchUp() {
      if (failed) return Promise.resolve();
      catching ??= api
        .feed(issueId)
        .then((page) => add([...page.items].reverse()))
        .catch(() => {})
        .finally(() => {
          catching = null;
        });
      return catching;
    },
  };
}

function showPosts(issueId, page, list, more, shown) {
  for (const p of page.items) {
    if (shown.has(p.id)) continue;
    shown.add(p.id);
    list.append(post(p));
  }
  if (!list.children.length) list.append(h('li', { class: 'empty' }, 'No posts yet. Be the first.'));
  nextPage(more, page, {
    id: 'older-posts',
    label: 'Older posts',
    shown: 'older posts shown.',
    load: (cursor) => api.feed(issueId, { cursor }),
    show: (next) => showPosts(issueId, next, list, more, shown),
  });
}

function post(p, author = p.author) {
  return h(
    'li',
    {},
    h('p', { class: 'content' }, p.content),
    h('p', { class: 'meta' }, author || 'Someone', ' · ', when(p.created_at), p.archived ? ' · archived' : ''),
  );
}

function postForm(issueId, posted, session) {
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
        posted(body);
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
