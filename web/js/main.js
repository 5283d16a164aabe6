// The web client: hash routes (#/, #/?q=..., #/issues/ID, #/me), the
// session's state in the header, and logging out.

import { api, ApiError } from './api.js';
import { announce, clearAnnouncement, failure, replace } from './dom.js';
import { issueView } from './views/issue.js';
import { issuesView } from './views/issues.js';
import { meView } from './views/me.js';

const main = document.getElementById('main');
const logout = document.getElementById('logout');

/** Whether this browser has a session, as far as the page knows. */
const session = {
  update(me) {
    logout.hidden = !me.user;
  },
  /** A write succeeded: the server has started a session if there was none. */
  signedIn() {
    logout.hidden = false;
  },
};

/** The view and its parameters for a location hash. */
function route(hash) {
  const [path, search = ''] = hash.replace(/^#/, '').split('?');
  const params = Object.fromEntries(new URLSearchParams(search));
  const issue = /^\/issues\/([^/]+)$/.exec(path);
  if (issue) return { view: issueView, params: { id: decodeURIComponent(issue[1]) } };
  if (path === '/me') return { view: meView, params };
  return { view: issuesView, params: { q: params.q || '' } };
}

let shown = 0;
/** What the shown view asked to run when it is left (closing its live socket). */
const leaving = [];

async function render() {
  const seq = ++shown;
  for (const leave of leaving.splice(0)) leave();
  const page = { onLeave: (fn) => (seq === shown ? leaving.push(fn) : fn()) };
  const { view, params } = route(location.hash);
  clearAnnouncement();
  document.title = 'Quiet Riots';
  for (const link of document.querySelectorAll('nav a')) {
    const current = link.getAttribute('href') === (location.hash || '#/').split('?')[0];
    if (current) link.setAttribute('aria-current', 'page');
    else link.removeAttribute('aria-current');
  }
  // Each render fills its own element, so a slow earlier one that ends
  // late writes into a detached element rather than over this one.
  const into = document.createElement('div');
  main.replaceChildren(into);
  main.setAttribute('aria-busy', 'true');
  try {
    await view(into, params, session, page);
  } catch (e) {
    replace(into, failure('Something went wrong', String(e), render));
  } finally {
    if (seq === shown) main.removeAttribute('aria-busy');
  }
}

logout.addEventListener('click', async () => {
  logout.disabled = true;
  try {
    await api.logout();
    session.update({ user: null });
    await render();
    announce('You are logged out.');
  } catch (e) {
    if (!(e instanceof ApiError)) throw e;
    announce(e.words(), { error: true });
  } finally {
    logout.disabled = false;
  }
});

window.addEventListener('hashchange', () => {
  render().then(() => main.focus({ preventScroll: false }));
});

api
  .me()
  .then((me) => session.update(me))
  .catch(() => {});
render();
