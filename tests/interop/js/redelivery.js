'use strict';
// Unacknowledged messages across a lost connection, both ways:
// 1. A subscriber with a persistent session gets a QoS 1 or 2 message and
//    loses its connection before acknowledging it (MQTT.js processes no
//    further packet until the held one is acknowledged, so a second message
//    waits unread in the socket). On resume the broker sends the held one
//    again with DUP set and its original packet identifier [MQTT-4.4.0-1],
//    [MQTT-3.3.1-1], and the second one once.
// 2. A publisher loses its connection right after a QoS 2 PUBLISH, and once
//    right after the PUBREC; MQTT.js resends on reconnect, and the broker
//    delivers each message exactly once [MQTT-4.3.3].
const { connect, received, end, main } = require('./common');

function until(pred) {
  return new Promise((resolve) => {
    const t = setInterval(() => { if (pred()) { clearInterval(t); resolve(); } }, 5);
  });
}

main(async () => {
  const { client: pub } = await connect({ clientId: 'mqttjs-rd-pub' });
  const rounds = [];
  for (const [firstQos, secondQos] of [[2, 1], [1, 2]]) {
    const id = `mqttjs-rd-${firstQos}${secondQos}`;
    const session = { clientId: id, clean: false, properties: { sessionExpiryInterval: 60 } };
    const { client: holder } = await connect({ ...session, clean: true,
      customHandleAcks: () => {} }); // never acknowledges
    const before = holder.wire;
    await holder.subscribeAsync(`${id}/#`, { qos: 2 });
    await pub.publishAsync(`${id}/first`, Buffer.from([firstQos, 0, 0xff]), { qos: firstQos });
    await pub.publishAsync(`${id}/second`, Buffer.from([secondQos, 0, 0xff]), { qos: secondQos });
    await until(() => before.length >= 1);
    holder.stream.destroy();
    const { client: resumed, connack } = await connect(session);
    const after = resumed.wire;
    await received(resumed, 2);
    await end(resumed, { properties: { sessionExpiryInterval: 0 } });
    rounds.push({ before: before.slice(0, 1), sessionPresent: connack.sessionPresent, after });
  }

  const { client: sub } = await connect({ clientId: 'mqttjs-rd-sub' });
  await sub.subscribeAsync('mqttjs/rd/once/#', { qos: 2 });
  const { client: lossy } = await connect({ clientId: 'mqttjs-rd-lossy', clean: false,
    properties: { sessionExpiryInterval: 60 }, reconnectPeriod: 20 });
  let connects = 1;
  lossy.on('connect', () => { connects++; });
  let dropOnPubrec = false;
  lossy.on('packetreceive', (p) => {
    if (p.cmd === 'pubrec' && dropOnPubrec) {
      dropOnPubrec = false;
      lossy.stream.destroy(); // before MQTT.js can answer with PUBREL
    }
  });
  const afterPublish = lossy.publishAsync('mqttjs/rd/once/a', 'after publish', { qos: 2 });
  lossy.stream.destroy();
  await afterPublish;
  dropOnPubrec = true;
  await lossy.publishAsync('mqttjs/rd/once/b', 'after pubrec', { qos: 2 });
  await lossy.publishAsync('mqttjs/rd/once/c', 'sync', { qos: 2 });
  await received(sub, 3);
  // A duplicate would come before the sync message on this path; give a
  // stray one a moment anyway.
  await new Promise((r) => setTimeout(r, 100));
  lossy.options.reconnectPeriod = 0;
  await end(lossy);
  await end(sub);
  await end(pub);
  return { rounds, connects, once: sub.received };
});
