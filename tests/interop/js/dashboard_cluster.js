'use strict';
// The dashboard's overview of a cluster, in Debian's headless chromium
// driven by playwright-core: every plot draws one line per node.
// `node js/dashboard_cluster.js MQTT_PORT_1 API_PORT_1 KEY SECRET SHOT_DIR MQTT_PORT_2`:
// signs in on node 1's API, connects an MQTT.js client to each node that
// publishes to its own subscription (node 1 faster than node 2), waits
// until each node's rate line rises, and reports what the plots show.
const path = require('path');
const mqtt = require('mqtt');
const { chromium } = require('playwright-core');
const { signIn } = require('./dashboard_common');

const [, , port1, apiPort, key, secret, shotDir, port2] = process.argv;
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const TIMEOUT = 60000;

const watchdog = setTimeout(() => { console.error('timed out'); process.exit(3); }, 110000);
watchdog.unref();

function client(port, id, perTick) {
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId: id, protocolVersion: 5, reconnectPeriod: 0 });
  return new Promise((resolve, reject) => {
    c.on('error', reject);
    c.on('connect', () => c.subscribe(`${id}/#`, { qos: 0 }, () => {
      let n = 0;
      c.pump = setInterval(() => { for (let i = 0; i < perTick; i++) c.publish(`${id}/t`, `m ${n++}`); }, 100);
      resolve(c);
    }));
  });
}

(async () => {
  const result = { errors: [], logs: [] };
  const browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] });
  const clients = [];
  try {
    const page = await signIn(browser, apiPort, key, secret, { width: 1400, height: 860 }, result, TIMEOUT);

    clients.push(await client(port1, 'on-node1', 30));
    clients.push(await client(port2, 'on-node2', 10));
    clients[0].publish('kept/node1', 'retained', { retain: true });

    // Each node's "in" line rises: two lines, one per node.
    await page.waitForFunction(() => {
      const lines = [...document.querySelectorAll('#plot-rate path.in')];
      return lines.length === 2 && lines.every((p) => Number(p.dataset.max) > 5);
    }, null, { timeout: TIMEOUT });
    await page.waitForTimeout(4000);  // a few more points on the plots
    const nodesOf = (id) => page.$$eval(`#${id} path`, (ps) => ps.map((p) => ({
      node: p.dataset.node, cls: p.getAttribute('class'), max: Number(p.dataset.max), colour: p.style.stroke })));
    result.plots = {};
    for (const id of ['plot-rate', 'plot-connections', 'plot-subscriptions', 'plot-retained']) {
      result.plots[id] = await nodesOf(id);
    }
    result.legend = await page.$$eval('#node-legend span', (s) => s.map((e) => e.dataset.node));
    result.legendVisible = await page.isVisible('#node-legend');
    result.connectionsText = await page.textContent('#stat-connections');
    await page.screenshot({ path: path.join(shotDir, 'dashboard-cluster.png') });
    result.version = browser.version();
  } finally {
    for (const c of clients) { clearInterval(c.pump); c.end(true); }
    await browser.close();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
})().then(() => process.exit(0), (e) => { console.error(e && e.stack || e); process.exit(1); });
