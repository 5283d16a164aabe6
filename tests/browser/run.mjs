// The web client end to end in headless Chromium (Debian's, driven by
// playwright-core; nothing is downloaded). `cargo xtask browser-test`
// starts the stack and runs this with:
//
//   QR_WEB_URL             the Worker, e.g. http://127.0.0.1:8787 (serves the client)
//   QR_API_SAME_SITE_URL   the same Worker as http://localhost:PORT
//   QR_ORIGIN_PORT         a port for another origin of the same site
//                          (http://localhost:PORT, in ALLOWED_ORIGINS)
//   QR_CHROMIUM            the browser, /usr/bin/chromium
//   QR_SCREENSHOTS         where screenshots go
//   QR_CLIENT_IP_HEADER    the header the Worker takes the client IP from
//   QR_WRITES_LIMIT        how many writes a client may make (in a long window)
//
// Each step prints its name and time; a failing step says which and why,
// leaves a screenshot, and ends the run with exit code 1.

import http from 'node:http';
import path from 'node:path';
import { randomUUID } from 'node:crypto';
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (run this through cargo xtask browser-test)`);
  return value;
};
const WEB = env('QR_WEB_URL');
const API_SAME_SITE = env('QR_API_SAME_SITE_URL');
const ORIGIN_PORT = Number(env('QR_ORIGIN_PORT'));
const OTHER_ORIGIN = `http://localhost:${ORIGIN_PORT}`;
const SCREENSHOTS = env('QR_SCREENSHOTS');
const IP_HEADER = env('QR_CLIENT_IP_HEADER');
const WRITES_LIMIT = Number(env('QR_WRITES_LIMIT'));
const TIMEOUT = 15_000;

// --- the step runner --------------------------------------------------------

let current = null; // the page a failing step is screenshot from
let shots = 0;
const started = Date.now();

async function step(name, fn) {
  const t0 = Date.now();
  process.stdout.write(`step ${name} ... `);
  try {
    await fn();
  } catch (e) {
    console.log(`FAILED (${Date.now() - t0} ms)`);
    let shot = '';
    if (current && !current.isClosed()) {
      shot = path.join(SCREENSHOTS, `FAILED-${slug(name)}.png`);
      await current.screenshot({ path: shot, fullPage: true }).catch(() => (shot = ''));
    }
    const why = e && e.message ? e.message : String(e);
    throw new Error(`step "${name}" failed: ${why}${shot ? `\n  screenshot: ${shot}` : ''}`);
  }
  console.log(`ok (${Date.now() - t0} ms)`);
}

function slug(s) {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '');
}

async function screenshot(page, name) {
  shots += 1;
  const file = path.join(SCREENSHOTS, `${String(shots).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

function equal(actual, expected, what) {
  if (actual !== expected) {
    throw new Error(`${what}: expected ${JSON.stringify(expected)}, got ${JSON.stringify(actual)}`);
  }
}

/** Waits until `read()` gives what `ok` accepts; the last value in the error. */
async function until(what, read, ok, within = TIMEOUT) {
  const deadline = Date.now() + within;
  let last;
  for (;;) {
    last = await read();
    if (ok(last)) return last;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${within} ms; last: ${JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

const text = (page, selector) => page.locator(selector).first().innerText({ timeout: TIMEOUT });

/** Console errors and page errors of a page (CSP violations show up here). */
function watchErrors(page) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    // A refused request (404, 400, 429) is logged by the browser itself;
    // the page shows those in words, which the steps check.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) {
      errors.push(`console: ${m.text()}`);
    }
  });
  return errors;
}

// --- fixtures through the API -------------------------------------------------

/** A call to the API from node, as a client with its own rate-limit bucket. */
async function apiCall(method, pathname, { body, cookie, client = 'browser-setup' } = {}) {
  const headers = { [IP_HEADER]: client };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  if (cookie) headers.Cookie = cookie;
  const r = await fetch(`${WEB}${pathname}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await r.json().catch(() => null);
  if (!r.ok) throw new Error(`${method} ${pathname}: ${r.status} ${JSON.stringify(json)}`);
  const setCookie = r.headers.get('set-cookie');
  return { json, cookie: setCookie ? setCookie.split(';')[0] : cookie };
}

// --- the other origin of the same site ------------------------------------------

function serveOtherOrigin() {
  const page = '<!doctype html><meta charset="utf-8"><title>Another origin</title>' +
    '<h1>Another origin of the same site</h1>';
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8' });
    res.end(page);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(ORIGIN_PORT, '127.0.0.1', () => resolve(server));
  });
}

// --- a11y checks run in the page ------------------------------------------------

/** Inputs without a label, text under 4.5:1 contrast, and horizontal overflow. */
function auditInPage() {
  const problems = [];
  for (const el of document.querySelectorAll('input, textarea, select')) {
    if (el.type === 'hidden') continue;
    const labelled =
      (el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`)) ||
      el.closest('label') ||
      el.getAttribute('aria-label') ||
      el.getAttribute('aria-labelledby');
    if (!labelled) problems.push(`no label: <${el.tagName.toLowerCase()} name=${el.name}>`);
  }
  for (const el of document.querySelectorAll('button, a')) {
    if (!el.textContent.trim() && !el.getAttribute('aria-label')) {
      problems.push(`no accessible name: <${el.tagName.toLowerCase()}>`);
    }
  }
  const rgb = (c) => {
    const m = /rgba?\(([\d.]+), ([\d.]+), ([\d.]+)(?:, ([\d.]+))?\)/.exec(c);
    return m ? { r: +m[1], g: +m[2], b: +m[3], a: m[4] === undefined ? 1 : +m[4] } : null;
  };
  const luminance = ({ r, g, b }) => {
    const lin = (v) => ((v /= 255) <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4);
    return 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  };
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = rgb(getComputedStyle(e).backgroundColor);
      if (c && c.a === 1) return c;
    }
    return { r: 255, g: 255, b: 255 };
  };
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  const seen = new Set();
  while (walker.nextNode()) {
    const el = walker.currentNode.parentElement;
    if (!walker.currentNode.textContent.trim() || !el || seen.has(el)) continue;
    seen.add(el);
    const style = getComputedStyle(el);
    if (el.closest('[hidden], .skip, :disabled') || style.visibility === 'hidden') continue;
    if (el.getClientRects().length === 0) continue;
    const fg = rgb(style.color);
    const ratio = (luminance(fg) + 0.05) / (luminance(background(el)) + 0.05);
    const contrast = ratio >= 1 ? ratio : 1 / ratio;
    if (contrast < 4.5) {
      problems.push(`contrast ${contrast.toFixed(2)}:1 for "${el.textContent.trim().slice(0, 40)}"`);
    }
  }
  const overflow = document.documentElement.scrollWidth - window.innerWidth;
  if (overflow > 0) problems.push(`scrolls sideways by ${overflow} px at ${window.innerWidth} px wide`);
  return problems;
}

// --- the run --------------------------------------------------------------------

async function main() {
  console.log(`web client: ${WEB}/   other origin: ${OTHER_ORIGIN}   screenshots: ${SCREENSHOTS}`);
  const tag = `qrtest${randomUUID().slice(0, 8)}`;
  const issueName = `Broken streetlights on Mill Lane ${tag}`;
  let issueId;
  const browser = await chromium.launch({
    executablePath: env('QR_CHROMIUM'),
    args: ['--no-sandbox'],
    headless: true,
  });
  const otherOrigin = await serveOtherOrigin();
  try {
    await step('set up: an issue with 12 posts and 22 actions (through the API)', async () => {
      const created = await apiCall('POST', '/api/issues', {
        body: { name: issueName, category: 'community', description: 'Half the lamps on Mill Lane have been out since October.' },
      });
      issueId = created.json.id;
      let cookie = created.cookie;
      for (let i = 1; i <= 12; i += 1) {
        cookie = (await apiCall('POST', `/api/issues/${issueId}/feed`, { body: { content: `Earlier post number ${i}` }, cookie })).cookie;
      }
      // Two clients: each stays within the run's writes limit.
      for (let i = 1; i <= 22; i += 1) {
        const body = { title: `Step number ${i}`, type: 'action' };
        await apiCall('POST', `/api/issues/${issueId}/actions`, { body, client: `browser-setup-actions-${i % 2}` });
      }
    });

    const context = await browser.newContext({
      viewport: { width: 1280, height: 900 },
      extraHTTPHeaders: { [IP_HEADER]: 'browser-main' },
    });
    const page = await context.newPage();
    page.setDefaultTimeout(TIMEOUT);
    current = page;
    const errors = watchErrors(page);

    await step('list: the issues, and "more issues" pages on', async () => {
      await page.goto(`${WEB}/`);
      await until('ten issues listed', () => page.locator('#issue-list li').count(), (n) => n === 10);
      await screenshot(page, 'list');
      await page.click('#more-issues');
      await until('the next page appended', () => page.locator('#issue-list li').count(), (n) => n > 10);
      const names = await page.locator('#issue-list li a').allInnerTexts();
      equal(new Set(names).size, names.length, 'no issue listed twice');
      check(names.includes(issueName), `the new issue is listed: ${names}`);
    });

    await step('search: finds the issue, and says when nothing matches', async () => {
      await page.fill('#q', tag);
      await page.press('#q', 'Enter');
      await until('one result', () => page.locator('#issue-list li').allInnerTexts(), (t) => t.length === 1 && t[0].includes(issueName));
      check(decodeURIComponent(new URL(page.url()).hash).includes(tag), `the search is in the URL: ${page.url()}`);
      await screenshot(page, 'search');
      await page.fill('#q', 'zzzznothingmatchesthis');
      await page.press('#q', 'Enter');
      await until('no results said in words', () => text(page, '#issue-summary'), (t) => t.startsWith('No issue matches'));
      await page.goBack();
      await until('back to the result', () => page.locator('#issue-list li').count(), (n) => n === 1);
    });

    await step('open an issue: organisations, actions, feed with older posts', async () => {
      await page.click(`#issue-list a:has-text("${tag}")`);
      await until('the issue page', () => text(page, '#issue-name'), (t) => t === issueName);
      equal(await text(page, '#rioter-count'), '0', 'rioters before joining');
      equal(await text(page, '#membership'), 'Join this issue', 'the button');
      await page.getByRole('heading', { name: 'Held responsible' }).waitFor();
      await page.getByRole('heading', { name: 'What you can do' }).waitFor();
      await until('the first page of actions', () => page.locator('.actions li').count(), (n) => n === 20);
      equal(await text(page, '.actions li .name'), 'Step number 1', 'oldest action first');
      await page.click('#more-actions');
      await until('the rest of the actions', () => page.locator('.actions li').count(), (n) => n === 22);
      check(!(await page.locator('#more-actions').count()), 'no more "more actions" after the last page');
      equal(await page.locator('#feed li').count(), 10, 'posts on the first page');
      equal(await text(page, '#feed li .content'), 'Earlier post number 12', 'newest post first');
      await screenshot(page, 'issue');
      await page.click('#older-posts');
      await until('the older posts', () => page.locator('#feed li').count(), (n) => n === 12);
      check(!(await page.locator('#older-posts').count()), 'no more "older posts" after the last page');
    });

    await step('join: the count changes on the page, without a reload', async () => {
      await page.evaluate(() => (window.__sameDocument = true));
      await page.click('#membership');
      await until('the count', () => text(page, '#rioter-count'), (t) => t === '1');
      await until('the button', () => text(page, '#membership'), (t) => t === 'Leave this issue');
      await until('announced', () => text(page, '#status'), (t) => t.includes('You joined'));
      check(await page.evaluate(() => window.__sameDocument === true), 'the page was reloaded');
      const cookies = await context.cookies(WEB);
      const session = cookies.find((c) => c.name === 'qr_session');
      check(session && session.httpOnly, `an HttpOnly session cookie: ${JSON.stringify(cookies)}`);
      check(await page.isVisible('#logout'), 'the log out button shows');
      await screenshot(page, 'joined');
    });

    await step('reload: the session is kept, still joined', async () => {
      await page.reload();
      await until('the issue page', () => text(page, '#issue-name'), (t) => t === issueName);
      equal(await text(page, '#membership'), 'Leave this issue', 'the button after a reload');
      equal(await text(page, '#rioter-count'), '1', 'the count after a reload');
      check(await page.isVisible('#logout'), 'the log out button after a reload');
    });

    await step('my issues: lists the joined issue', async () => {
      await page.click('nav a[href="#/me"]');
      await until('my issues', () => page.locator('#my-issues li').allInnerTexts(), (t) => t.length === 1 && t[0].includes(issueName));
      await screenshot(page, 'my-issues');
      await page.click(`#my-issues a:has-text("${tag}")`);
      await until('back on the issue', () => text(page, '#issue-name'), (t) => t === issueName);
    });

    await step('leave: the count goes back, my issues is empty', async () => {
      await page.click('#membership');
      await until('the count', () => text(page, '#rioter-count'), (t) => t === '0');
      await until('the button', () => text(page, '#membership'), (t) => t === 'Join this issue');
      await until('announced', () => text(page, '#status'), (t) => t.includes('You left'));
      await page.click('nav a[href="#/me"]');
      await until('no issues', () => text(page, '#me-empty'), (t) => t.includes('not joined any issues'));
      await page.goBack();
      await until('the issue page', () => text(page, '#issue-name'), (t) => t === issueName);
    });

    await step('post: the post appears, and is there after a reload', async () => {
      const content = `Reported it to the council again today (${tag}).`;
      await page.fill('#post-content', content);
      await page.click('#post-form button[type=submit]');
      await until('the post at the top of the feed', () => text(page, '#feed li .content'), (t) => t === content);
      await until('announced', () => text(page, '#status'), (t) => t.includes('Your post is on the feed'));
      equal(await page.inputValue('#post-content'), '', 'the form is emptied');
      await screenshot(page, 'posted');
      await page.reload();
      await until('the post after a reload', () => text(page, '#feed li .content'), (t) => t === content);
    });

    await step('errors in words: an empty post, an over-long post, a missing issue', async () => {
      await page.fill('#post-content', '   ');
      await page.click('#post-form button[type=submit]');
      await until('an empty post is refused', () => text(page, '#post-error'), (t) => t === 'Write something first.');
      await page.fill('#post-content', 'x'.repeat(2001));
      await page.click('#post-form button[type=submit]');
      await until(
        'the server refuses an over-long post, in words',
        () => text(page, '#post-error'),
        (t) => t === 'Your post was not accepted: it must be at most 2000 characters.',
      );
      equal(await page.getAttribute('#post-content', 'aria-invalid'), 'true', 'the field is marked invalid');
      check((await page.inputValue('#post-content')).length === 2001, 'the text is kept to fix');
      await screenshot(page, 'post-error');
      await page.goto(`${WEB}/#/issues/00000000-0000-4000-8000-000000000000`);
      await until('a missing issue', () => text(page, 'main h1'), (t) => t === 'Issue not found');
      check((await text(page, 'main .notice')).includes('This issue does not exist.'), 'said in words');
      check(!(await text(page, 'main')).includes('{'), 'no JSON on the page');
      await screenshot(page, 'not-found');
    });

    await step('log out: the session is gone', async () => {
      await page.goto(`${WEB}/#/issues/${issueId}`);
      await until('the issue page', () => text(page, '#issue-name'), (t) => t === issueName);
      await page.click('#logout');
      await until('announced', () => text(page, '#status'), (t) => t.includes('logged out'));
      check(!(await page.isVisible('#logout')), 'the log out button is hidden');
      const cookies = await context.cookies(WEB);
      check(!cookies.some((c) => c.name === 'qr_session'), `no session cookie left: ${JSON.stringify(cookies)}`);
      await page.click('nav a[href="#/me"]');
      await until('signed out', () => text(page, '#me-empty'), (t) => t.includes('not signed in'));
      await screenshot(page, 'logged-out');
    });

    await step('no script errors or CSP violations on the way', async () => {
      equal(errors.join('\n'), '', 'console and page errors');
    });
    await context.close();

    await step('live: another browser sees a join, a post and a leave, with no request', async () => {
      const browserAs = (client) =>
        browser.newContext({ viewport: { width: 1280, height: 900 }, extraHTTPHeaders: { [IP_HEADER]: client } });
      const contextA = await browserAs('browser-live-a');
      const contextB = await browserAs('browser-live-b');
      const a = await contextA.newPage();
      const b = await contextB.newPage();
      current = b;
      const errorsB = watchErrors(b);
      for (const p of [a, b]) {
        await p.goto(`${WEB}/#/issues/${issueId}`);
        await until('the socket open', () => p.getAttribute('#live-status', 'data-state'), (s) => s === 'live');
      }
      await until('both pages counted as watching', () => text(b, '#live-status'), (t) => t.includes(' 2 watching'));
      const before = Number(await text(b, '#rioter-count'));
      // Each page notes when its count changes: A from its join's answer, B from the socket.
      const noteChanges = () => {
        const count = document.getElementById('rioter-count');
        window.__changes = [];
        new MutationObserver(() => window.__changes.push({ at: Date.now(), count: count.textContent })).observe(
          count,
          { childList: true, characterData: true, subtree: true },
        );
      };
      await a.evaluate(noteChanges);
      await b.evaluate(noteChanges);
      const requestsB = [];
      b.on('request', (r) => requestsB.push(`${r.method()} ${r.url()}`));

      await a.click('#membership');
      const joined = String(before + 1);
      const firstShown = async (p) => {
        const changes = await until(`${p === a ? 'A' : 'B'} shows ${joined}`, () => p.evaluate(() => window.__changes), (c) =>
          c.some((x) => x.count === joined),
        );
        return changes.find((x) => x.count === joined).at;
      };
      const lag = (await firstShown(b)) - (await firstShown(a));
      process.stdout.write(`(B showed the join ${lag} ms after A got its answer) `);
      check(lag <= 1000, `B showed the join ${lag} ms after A's answer; a person should see it within a second`);

      const content = `Seen live from another browser (${tag}).`;
      await a.fill('#post-content', content);
      await a.click('#post-form button[type=submit]');
      await until('B shows the post', () => text(b, '#feed li .content'), (t) => t === content);
      await screenshot(b, 'live');
      await a.click('#membership');
      await until('B shows the leave', () => text(b, '#rioter-count'), (t) => t === String(before));
      equal(requestsB.join('\n'), '', 'requests from the watching page');

      await contextA.close();
      await until('B sees A stop watching', () => text(b, '#live-status'), (t) => t.includes(' 1 watching'));
      equal(errorsB.join('\n'), '', 'console and page errors on the watching page');
      await contextB.close();
    });

    await step('429: "too many requests" in words, with the wait', async () => {
      const flood = await browser.newContext({
        viewport: { width: 1280, height: 900 },
        extraHTTPHeaders: { [IP_HEADER]: 'browser-flood' },
      });
      const p = await flood.newPage();
      current = p;
      await p.goto(`${WEB}/#/issues/${issueId}`);
      await until('the issue page', () => text(p, '#issue-name'), (t) => t === issueName);
      // Use up this client's writes, as a script in a loop would.
      let refused = false;
      for (let i = 0; i < WRITES_LIMIT * 2 && !refused; i += 1) {
        const r = await flood.request.post(`${WEB}/api/logout`, { headers: { [IP_HEADER]: 'browser-flood' } });
        refused = r.status() === 429;
      }
      check(refused, `no 429 after ${WRITES_LIMIT * 2} writes`);
      await p.click('#membership');
      const said = await until(
        'the refusal in words',
        () => text(p, '#membership-error'),
        (t) => /^Too many requests, try again in \d+ seconds?\.$/.test(t),
      );
      // The live region is cleared, then set on the next frame (so that a
      // repeated message is announced again): wait for it.
      await until('announced in the live region', () => text(p, '#status'), (t) => t === said);
      equal(await text(p, '#rioter-count'), '0', 'the count is unchanged');
      await screenshot(p, 'rate-limited');
      await flood.close();
    });

    await step('phone-sized screen (375 px): labels, contrast, no sideways scroll', async () => {
      const phone = await browser.newContext({
        viewport: { width: 375, height: 740 },
        deviceScaleFactor: 2,
        isMobile: true,
        hasTouch: true,
        extraHTTPHeaders: { [IP_HEADER]: 'browser-phone' },
      });
      const p = await phone.newPage();
      current = p;
      const phoneErrors = watchErrors(p);
      const screens = [
        ['list', '/#/', '#issue-list li'],
        ['issue', `/#/issues/${issueId}`, '#feed li'],
        ['my-issues', '/#/me', 'main h1'],
        ['not-found', '/#/issues/00000000-0000-4000-8000-000000000000', 'main .notice'],
      ];
      for (const [name, where, ready] of screens) {
        await p.goto(`${WEB}${where}`);
        await p.locator(ready).first().waitFor();
        const problems = await p.evaluate(auditInPage);
        check(!problems.length, `${name}: ${problems.join('; ')}`);
        await screenshot(p, `phone-${name}`);
      }
      // Keyboard: the first Tab reaches the skip link, and focus is visible.
      await p.goto('about:blank');
      await p.goto(`${WEB}/#/`);
      await p.locator('#issue-list li').first().waitFor();
      await p.keyboard.press('Tab');
      const focus = await p.evaluate(() => {
        const el = document.activeElement;
        const s = getComputedStyle(el);
        return { text: el.textContent.trim(), outline: s.outlineStyle, width: parseFloat(s.outlineWidth) };
      });
      equal(focus.text, 'Skip to content', 'the first Tab stop');
      check(focus.outline !== 'none' && focus.width >= 2, `a visible focus outline: ${JSON.stringify(focus)}`);
      equal(phoneErrors.join('\n'), '', 'console and page errors');
      await phone.close();
    });

    await step(`CORS with credentials from ${OTHER_ORIGIN} (same site) to ${API_SAME_SITE}`, async () => {
      const other = await browser.newContext();
      const p = await other.newPage();
      current = p;
      await p.goto(`${OTHER_ORIGIN}/`);
      const result = await p.evaluate(
        async ({ api, id }) => {
          const call = async (method, path, body) => {
            const r = await fetch(`${api}${path}`, {
              method,
              credentials: 'include',
              headers: body === undefined ? {} : { 'Content-Type': 'application/json', 'Idempotency-Key': crypto.randomUUID() },
              body: body === undefined ? undefined : JSON.stringify(body),
            });
            return { status: r.status, body: await r.json(), requestId: r.headers.get('X-Request-Id') };
          };
          return {
            // application/json makes these preflighted.
            join: await call('POST', `/api/issues/${id}/join`, {}),
            me: await call('GET', '/api/me'),
            tooLong: await call('POST', `/api/issues/${id}/feed`, { content: 'x'.repeat(2001) }),
            missing: await call('GET', '/api/issues/00000000-0000-4000-8000-000000000000'),
            leave: await call('DELETE', `/api/issues/${id}/join`),
            logout: await call('POST', '/api/logout', {}),
            after: await call('GET', '/api/me'),
          };
        },
        { api: API_SAME_SITE, id: issueId },
      );
      equal(result.join.status, 200, `the preflighted join (${JSON.stringify(result.join.body)})`);
      equal(result.join.body.member, true, 'joined');
      check(result.me.body.user !== null, 'the session cookie came back on the next call');
      check(result.me.body.issues.some((i) => i.id === issueId), 'my issues has it');
      equal(result.tooLong.status, 400, 'an over-long post');
      equal(result.tooLong.body.error.code, 'validation_failed', 'the error body is readable');
      check(result.tooLong.requestId, 'X-Request-Id is exposed');
      equal(result.missing.status, 404, 'a missing issue');
      equal(result.missing.body.error.code, 'not_found', 'its error body');
      equal(result.leave.body.member, false, 'the preflighted DELETE left');
      equal(result.logout.body.logged_out, true, 'logged out');
      equal(result.after.body.user, null, 'no session after logout');

      // The same page from an origin that is not allowed gets nothing.
      const refused = await browser.newContext();
      const q = await refused.newPage();
      current = q;
      await q.goto(`http://127.0.0.1:${ORIGIN_PORT}/`);
      const outcome = await q.evaluate(async (api) => {
        try {
          await fetch(`${api}/api/issues?limit=1`, { credentials: 'include' });
          return 'read';
        } catch {
          return 'blocked';
        }
      }, API_SAME_SITE);
      equal(outcome, 'blocked', 'a read from an origin not allowed');
      await other.close();
      await refused.close();
    });
  } finally {
    await browser.close();
    otherOrigin.close();
  }
  console.log(`browser tests passed in ${((Date.now() - started) / 1000).toFixed(1)} s; ${shots} screenshots in ${SCREENSHOTS}`);
}

// However a browser or server may hang, the run ends.
setTimeout(() => {
  console.error('\nthe browser tests did not finish within 5 minutes');
  process.exit(1);
}, 300_000).unref();

main().catch((e) => {
  console.error(`\n${e.message}`);
  process.exit(1);
});
