'use strict';
// Retained messages: stored, replaced, delivered with retain set to a new
// subscriber, cleared by an empty retained message.
const { connect, received, end, main, args } = require('./common');

main(async () => {
  const version = Number(args[0] || 5);
  const { client: pub } = await connect({ clientId: 'mqttjs-rpub', protocolVersion: version });
  await pub.publishAsync('mqttjs/r/a', Buffer.from([0, 1, 2, 255]), { qos: 1, retain: true });
  await pub.publishAsync('mqttjs/r/b', 'first', { qos: 2, retain: true });
  await pub.publishAsync('mqttjs/r/b', 'second', { qos: 2, retain: true });
  await pub.publishAsync('mqttjs/r/c', 'to be cleared', { qos: 0, retain: true });
  await pub.publishAsync('mqttjs/r/c', '', { qos: 0, retain: true });

  const { client: sub } = await connect({ clientId: 'mqttjs-rsub', protocolVersion: version });
  await sub.subscribeAsync('mqttjs/r/#', { qos: 2 });
  const stored = await received(sub, 2);
  await pub.publishAsync('mqttjs/r/a', 'live', { qos: 1, retain: true });
  const all = await received(sub, 3);
  await end(pub);
  await end(sub);
  return { stored, live: all[2] };
});
