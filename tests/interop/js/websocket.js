'use strict';
// MQTT.js over WebSocket in Node: `node js/websocket.js TCP_PORT WS_PORT
// WSS_PORT CA_FILE VERSION`. A subscriber over ws, one over wss and one over
// plain TCP; each publishes once (a 100 KB payload from the wss one), and a
// retained message set over ws reaches a later wss subscriber. MQTT.js
// splits every packet over several frames: a free test of [MQTT-6.0.0-2].
const fs = require('fs');
const { connect, received, end, main, args, port } = require('./common');

main(async () => {
  const [wsPort, wssPort, caFile, versionArg] = args;
  const version = Number(versionArg || 5);
  const ca = fs.readFileSync(caFile);
  const base = { protocolVersion: version };
  const over = {
    ws: { ...base, protocol: 'ws', port: Number(wsPort), path: '/mqtt' },
    wss: { ...base, protocol: 'wss', host: 'localhost', port: Number(wssPort), path: '/', ca },
    tcp: { ...base, port },
  };
  const clients = {};
  for (const [name, opts] of Object.entries(over)) {
    const { client, connack } = await connect({ ...opts, clientId: `mqttjs-${name}-${version}` });
    if (version === 5 ? connack.reasonCode !== 0 : connack.returnCode !== 0) throw new Error(`${name}: CONNACK`);
    await client.subscribeAsync(`mqttjs/ws${version}/all/#`, { qos: 1 });
    clients[name] = client;
  }
  const big = Buffer.alloc(100 * 1024, 7);
  await clients.ws.publishAsync(`mqttjs/ws${version}/all/ws`, 'from ws', { qos: 1 });
  await clients.wss.publishAsync(`mqttjs/ws${version}/all/wss`, big, { qos: 2 });
  await clients.tcp.publishAsync(`mqttjs/ws${version}/all/tcp`, 'from tcp', { qos: 0 });
  const got = {};
  for (const [name, client] of Object.entries(clients)) {
    got[name] = (await received(client, 3))
      .map((m) => ({ topic: m.topic, size: m.payload.length / 2, head: m.payload.slice(0, 16) }))
      .sort((a, b) => a.topic.localeCompare(b.topic));
  }
  await clients.ws.publishAsync(`mqttjs/ws${version}/kept`, 'retained over ws', { qos: 1, retain: true });
  const { client: late } = await connect({ ...over.wss, clientId: `mqttjs-late-${version}` });
  await late.subscribeAsync(`mqttjs/ws${version}/kept`, { qos: 1 });
  const [kept] = await received(late, 1);
  for (const c of [...Object.values(clients), late]) await end(c);
  return { got, kept: { topic: kept.topic, payload: Buffer.from(kept.payload, 'hex').toString(), retain: kept.retain } };
});
