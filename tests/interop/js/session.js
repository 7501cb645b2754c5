'use strict';
// Session resume: a persistent MQTT 5 session (clean: false, Session Expiry
// Interval) gets the QoS 1/2 messages published while it was offline, and
// keeps its subscriptions; unsubscribing ends one of them.
const { connect, received, end, main } = require('./common');

main(async () => {
  const opts = { clientId: 'mqttjs-session', clean: false,
    properties: { sessionExpiryInterval: 60 } };
  let { client, connack } = await connect({ ...opts, clean: true });
  const first = connack;
  await client.subscribeAsync({ 'mqttjs/s/one': { qos: 1 }, 'mqttjs/s/two': { qos: 2 } });
  await end(client);

  const { client: pub } = await connect({ clientId: 'mqttjs-session-pub' });
  for (let i = 0; i < 3; i++) {
    await pub.publishAsync('mqttjs/s/one', `one-${i}`, { qos: 1,
      properties: { userProperties: { i: String(i) } } });
  }
  await pub.publishAsync('mqttjs/s/two', Buffer.from([0, 0xfe, 0xff]), { qos: 2 });
  ({ client, connack } = await connect(opts));
  const resumed = connack;
  const queued = await received(client, 4);
  await client.unsubscribeAsync('mqttjs/s/one');
  await pub.publishAsync('mqttjs/s/one', 'after unsubscribe', { qos: 1 });
  await pub.publishAsync('mqttjs/s/two', 'still subscribed', { qos: 1 });
  const all = await received(client, 5);
  await end(pub);
  await end(client);
  return { first, resumed, queued, after: all.slice(4) };
});
