'use strict';
// MQTT.js's own alias management (autoAssignTopicAlias): it picks aliases
// and sends repeated topics as an alias alone; the broker must resolve them.
const { connect, received, end, main } = require('./common');

main(async () => {
  const { client: sub } = await connect({ clientId: 'mqttjs-auto-sub' });
  await sub.subscribeAsync('mqttjs/auto/#', { qos: 1 });
  const { client: pub } = await connect({ clientId: 'mqttjs-auto-pub', autoAssignTopicAlias: true });
  const wire = [];
  pub.on('packetsend', (p) => {
    if (p.cmd === 'publish') wire.push([p.topic, (p.properties || {}).topicAlias || null]);
  });
  const sent = [];
  for (let round = 0; round < 3; round++) {
    for (const t of ['x', 'y', 'z']) {
      const topic = `mqttjs/auto/${t}`;
      await pub.publishAsync(topic, `${t}${round}`, { qos: round % 2 });
      sent.push([topic, `${t}${round}`]);
    }
  }
  const got = await received(sub, sent.length);
  await end(pub);
  await end(sub);
  return { wire, sent, received: got };
});
