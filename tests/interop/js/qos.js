'use strict';
// QoS 0/1/2 with binary payloads, publisher and subscriber at the protocol
// version given as argument (4 = 3.1.1, 5).
const { connect, received, end, main, args } = require('./common');

main(async () => {
  const version = Number(args[0] || 5);
  const all = Buffer.alloc(256);
  for (let i = 0; i < 256; i++) all[i] = i;
  const { client: sub } = await connect({ clientId: `mqttjs-sub-${version}`, protocolVersion: version });
  const granted = await sub.subscribeAsync({ 'mqttjs/q/#': { qos: 2 }, 'mqttjs/q1only': { qos: 1 } });
  const { client: pub } = await connect({ clientId: `mqttjs-pub-${version}`, protocolVersion: version });
  for (const qos of [0, 1, 2]) {
    await pub.publishAsync(`mqttjs/q/${qos}`, all, { qos });
    await pub.publishAsync(`mqttjs/q/${qos}`, Buffer.alloc(0), { qos });
    await pub.publishAsync(`mqttjs/q/${qos}`, 'text \u00e9\u4e2d', { qos });
  }
  // Downgraded to the subscription's QoS 1.
  await pub.publishAsync('mqttjs/q1only', 'two', { qos: 2 });
  const got = await received(sub, 10);
  await end(pub);
  await end(sub);
  return { granted: granted.map((g) => [g.topic, g.qos]), received: got };
});
