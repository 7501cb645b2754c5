'use strict';
// Subscription Identifiers: each delivery carries the identifier of the
// subscription it matched; none when the subscription had none.
const { connect, received, end, main } = require('./common');

main(async () => {
  const { client: sub, connack } = await connect({ clientId: 'mqttjs-sid' });
  await sub.subscribeAsync('mqttjs/si/a', { qos: 1, properties: { subscriptionIdentifier: 1 } });
  await sub.subscribeAsync('mqttjs/si/b/+', { qos: 2,
    properties: { subscriptionIdentifier: 268435455 } });
  await sub.subscribeAsync('mqttjs/si/c', { qos: 1 });
  // Replacing a subscription replaces its identifier [MQTT-3.8.4-3].
  await sub.subscribeAsync('mqttjs/si/d', { qos: 1, properties: { subscriptionIdentifier: 7 } });
  await sub.subscribeAsync('mqttjs/si/d', { qos: 1, properties: { subscriptionIdentifier: 8 } });
  const { client: pub } = await connect({ clientId: 'mqttjs-sid-pub' });
  await pub.publishAsync('mqttjs/si/a', 'a', { qos: 1 });
  await pub.publishAsync('mqttjs/si/b/x', 'b', { qos: 2 });
  await pub.publishAsync('mqttjs/si/c', 'c', { qos: 1 });
  await pub.publishAsync('mqttjs/si/d', 'd', { qos: 0 });
  const got = await received(sub, 4);
  await end(pub);
  await end(sub);
  return { connack, received: got };
});
