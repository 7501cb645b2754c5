'use strict';
// The dashboard in a real browser: Debian's chromium, headless, driven by
// playwright-core (never a downloaded browser).
// `node js/dashboard.js MQTT_PORT API_PORT KEY SECRET SHOT_DIR`: signs in
// with the API key, connects an MQTT.js client that publishes to itself,
// waits for the client's row and for the rate plot to rise, saves
// screenshots, kicks the client from its row and reports what happened.
const path = require('path');
const mqtt = require('mqtt');
const { chromium } = require('playwright-core');
const { signIn } = require('./dashboard_common');

const [, , mqttPort, apiPort, key, secret, shotDir] = process.argv;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = 45000;

const watchdog = setTimeout(() => { console.error('timed out'); process.exit(3); }, 110000);
watchdog.unref();

(async () => {
  const result = { errors: [], logs: [] };
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
  let client = null;
  let pump = null;
  try {
    const page = await signIn(browser, apiPort, key, secret, { width: 1400, height: 820 }, result, TIMEOUT);

    // A client that connects and publishes to its own subscription: both
    // rates rise.
    client = mqtt.connect(`mqtt://127.0.0.1:${mqttPort}`, {
      clientId: 'dashboard-demo', protocolVersion: 5, reconnectPeriod: 0, username: 'demo',
    });
    const gone = new Promise((resolve) => {
      client.on('disconnect', (packet) => resolve({ reason: packet.reasonCode }));
      client.on('close', () => resolve({ reason: null }));
    });
    await new Promise((resolve, reject) => { client.on('connect', resolve); client.on('error', reject); });
    await new Promise((resolve) => client.subscribe('demo/#', { qos: 0 }, resolve));
    let n = 0;
    pump = setInterval(() => {
      for (let i = 0; i < 20; i++) client.publish(`demo/t${i % 4}`, `message ${n++}`);
    }, 100);
    client.publish('demo/status', 'online', { retain: true });

    // The rate plot draws the traffic (its "in" line rises above zero).
    await page.waitForFunction(() => {
      const p = document.querySelector('#plot-rate path.in');
      return p && Number(p.dataset.max) > 10;
    }, null, { timeout: TIMEOUT });
    await page.waitForTimeout(3000);  // a few more points on the plots
    result.plotMax = await page.$eval('#plot-rate path.in', (p) => Number(p.dataset.max));
    result.connectionsText = await page.textContent('#stat-connections');
    await page.screenshot({ path: path.join(shotDir, 'dashboard-overview.png') });

    // The client's row appears in the clients table.
    await page.click('#tabs a[data-tab="clients"]');
    const row = 'tr[data-clientid="dashboard-demo"]';
    await page.waitForSelector(row, { timeout: TIMEOUT });
    result.rowText = await page.textContent(row);
    // Search narrows the table to it.
    await page.fill('#clients-search', 'demo');
    await page.waitForFunction(() => document.querySelectorAll('#clients-body tr').length === 1, null,
      { timeout: TIMEOUT });
    await page.screenshot({ path: path.join(shotDir, 'dashboard-clients.png') });

    // Kick from its row: the client gets DISCONNECT 0x98.
    clearInterval(pump);
    pump = null;
    await page.click(`${row} button.kick`);
    const outcome = await Promise.race([gone, new Promise((r) => setTimeout(() => r({ reason: 'timeout' }), TIMEOUT))]);
    result.kickReason = outcome.reason;
    // And its row shows it gone (a clean-start session ends with it).
    await page.waitForSelector(row, { state: 'detached', timeout: TIMEOUT });
    result.rowGone = true;

    // The retained browser lists the retained message.
    await page.click('#tabs a[data-tab="retained"]');
    await page.waitForFunction(() => document.querySelector('#retained-body').textContent.includes('demo/status'),
      null, { timeout: TIMEOUT });
    result.retainedListed = true;
    result.version = browser.version();
  } finally {
    if (pump) clearInterval(pump);
    if (client) client.end(true);
    await browser.close();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
})().then(() => process.exit(0), (e) => { console.error(e && e.stack || e); process.exit(1); });
