'use strict';
// What the dashboard scripts (dashboard.js, dashboard_cluster.js) share:
// a page of Debian's headless chromium signed in to the dashboard with an
// API key, its script errors and console errors collected in `result`.

async function signIn(browser, apiPort, key, secret, viewport, result, timeout) {
  const page = await browser.newPage({ viewport });
  page.on('pageerror', (e) => result.errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') result.logs.push(m.text()); });
  await page.goto(`http://127.0.0.1:${apiPort}/`);
  await page.fill('#login-key', key);
  await page.fill('#login-secret', secret);
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#login', { state: 'hidden', timeout });
  return page;
}

module.exports = { signIn };
