'use strict';
// Topic aliases from broker to client: the subscriber allows 2 aliases; the
// broker may replace topics it has sent before by an alias. MQTT.js resolves
// them; rawTopic shows what came on the wire.
const { connect, received, end, main } = require('./common');

main(async () => {
  const { client: pub } = await connect({ clientId: 'mqttjs-b2c-pub' });
  // A retained message comes first, on subscribe, and may carry an alias too.
  await pub.publishAsync('mqttjs/b2c/r', 'retained', { qos: 2, retain: true });
  const { client: sub, connack } = await connect({ clientId: 'mqttjs-b2c-sub',
    properties: { topicAliasMaximum: 2 } });
  await sub.subscribeAsync('mqttjs/b2c/#', { qos: 2 });
  await received(sub, 1);
  const topics = ['mqttjs/b2c/a', 'mqttjs/b2c/b', 'mqttjs/b2c/r', 'mqttjs/b2c/c'];
  const sent = [['mqttjs/b2c/r', 'retained']];
  for (let round = 0; round < 4; round++) {
    for (const t of topics) {
      const payload = `${t}#${round}`;
      await pub.publishAsync(t, payload, { qos: round % 2 }); // QoS 0/1 keep their order
      sent.push([t, payload]);
    }
  }
  // Same topic many times in a row: the case aliases are for.
  for (let i = 0; i < 5; i++) {
    await pub.publishAsync('mqttjs/b2c/a', `repeat${i}`, { qos: 1 });
    sent.push(['mqttjs/b2c/a', `repeat${i}`]);
  }
  const got = await received(sub, sent.length);
  await end(pub);
  await end(sub);
  return { connack, sent, received: got };
});
