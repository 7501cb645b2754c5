'use strict';
// Topic aliases from client to broker: the publisher sets aliases by hand
// (and with autoUseTopicAlias); the subscriber, which allows none, gets the
// full topic names and no Topic Alias property.
const { connect, received, end, main } = require('./common');

main(async () => {
  const { client: sub } = await connect({ clientId: 'mqttjs-tasub' });
  await sub.subscribeAsync('mqttjs/ta/#', { qos: 1 });
  const { client: pub, connack } = await connect({ clientId: 'mqttjs-tapub' });
  const max = (connack.properties || {}).topicAliasMaximum || 0;
  if (max < 2) throw new Error(`broker Topic Alias Maximum ${max}`);
  const sent = [];
  const send = async (topic, alias, payload, qos) => {
    const opts = { qos, properties: { topicAlias: alias } };
    await pub.publishAsync(topic, payload, opts);
    sent.push([topic, alias]);
  };
  await send('mqttjs/ta/one', 1, 'one-set', 0);
  await send('', 1, 'one-alias-q0', 0);
  await send('', 1, 'one-alias-q1', 1);
  await send('mqttjs/ta/two', 2, 'two-set', 1);
  await send('', 2, 'two-alias-q2', 2);
  await send('mqttjs/ta/three', 1, 'alias 1 remapped', 1);
  await send('', 1, 'three-alias', 1);
  await send('', 2, 'two-again', 0);
  await send('mqttjs/ta/plain', undefined, 'no alias', 1);
  const got = await received(sub, sent.length);
  await end(pub);
  await end(sub);
  return { max, sent, received: got };
});
