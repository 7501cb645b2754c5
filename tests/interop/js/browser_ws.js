'use strict';
// The real browser: Debian's chromium, headless, driven by playwright-core
// (never a downloaded browser). `node js/browser_ws.js PORT WS_PORT WSS_PORT
// SCREENSHOT`: serves browser/page.html and the mqtt package's browser
// bundle (dist/mqtt.min.js) from a loopback HTTP server, opens the page,
// which connects over ws and wss, and prints what the page received; the
// screenshot of the page is saved for the record.
const http = require('http');
const fs = require('fs');
const path = require('path');
const { chromium } = require('playwright-core');

const [, , , wsPort, wssPort, shot] = process.argv;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const here = path.join(__dirname, '..');
const files = {
  '/page.html': ['text/html', fs.readFileSync(path.join(here, 'browser', 'page.html'))],
  '/mqtt.min.js': ['application/javascript',
    fs.readFileSync(path.join(here, 'node_modules', 'mqtt', 'dist', 'mqtt.min.js'))],
};

const watchdog = setTimeout(() => { console.error('timed out'); process.exit(3); }, 60000);
watchdog.unref();

(async () => {
  const server = http.createServer((req, res) => {
    const f = files[new URL(req.url, 'http://x').pathname];
    if (!f) { res.writeHead(404); res.end(); return; }
    res.writeHead(200, { 'Content-Type': f[0] });
    res.end(f[1]);
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
  try {
    // The wss certificate comes from the test's own CA.
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    const page = await context.newPage();
    const logs = [];
    page.on('console', (m) => logs.push(m.text()));
    page.on('pageerror', (e) => logs.push(String(e)));
    const q = new URLSearchParams({ ws: `ws://127.0.0.1:${wsPort}/mqtt`, wss: `wss://localhost:${wssPort}/mqtt` });
    await page.goto(`http://127.0.0.1:${server.address().port}/page.html?${q}`);
    await page.waitForFunction(() => window.done === true, null, { timeout: 45000 });
    const results = await page.evaluate(() => window.results);
    if (shot) await page.screenshot({ path: shot, fullPage: true });
    const version = browser.version();
    process.stdout.write(JSON.stringify({ version, results, logs }) + '\n');
  } finally {
    await browser.close();
    server.close();
  }
})().then(() => process.exit(0), (e) => { console.error(e && e.stack || e); process.exit(1); });
