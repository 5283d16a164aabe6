// The issues the session's user has joined.

import { api, ApiError } from '../api.js';
import { failure, h, replace, rioters, when } from '../dom.js';

export async function meView(main, _params, session) {
  let me;
  try {
    me = await api.me();
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    replace(main, failure('Your issues could not be loaded', e.words(), () => meView(main, _params, session)));
    return;
  }
  session.update(me);
  const title = h('h1', {}, 'My issues');
  if (!me.user) {
    replace(
      main,
      title,
      h('p', { id: 'me-empty' }, 'You are not signed in. Joining an issue or posting starts a session in this browser.'),
      h('p', {}, h('a', { href: '#/' }, 'Find an issue to join')),
    );
    return;
  }
  if (!me.issues.length) {
    replace(
      main,
      title,
      h('p', { id: 'me-empty' }, 'You have not joined any issues yet.'),
      h('p', {}, h('a', { href: '#/' }, 'Find an issue to join')),
    );
    return;
  }
  replace(
    main,
    title,
    h('p', {}, `You have joined ${me.issues.length === 1 ? 'one issue' : `${me.issues.length} issues`}.`),
    h(
      'ul',
      { class: 'issues', id: 'my-issues' },
      me.issues.map((i) =>
        h(
          'li',
          {},
          h('a', { href: `#/issues/${encodeURIComponent(i.id)}` }, i.name),
          h('span', { class: 'meta' }, `${rioters(i.rioter_count)} · joined `, when(i.joined_at)),
        ),
      ),
    ),
  );
}
