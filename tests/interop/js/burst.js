'use strict';
// Many QoS 1 and 2 publications in flight at once, beyond every inflight
// window; the subscriber allows only a few unacknowledged ones
// (Receive Maximum), so the broker must queue and pace without losing any.
const { connect, received, end, main } = require('./common');

main(async () => {
  const n = 600;
  const { client: sub } = await connect({ clientId: 'mqttjs-burst-sub',
    properties: { receiveMaximum: 3 } });
  await sub.subscribeAsync('mqttjs/burst', { qos: 2 });
  const { client: pub, connack } = await connect({ clientId: 'mqttjs-burst-pub' });
  // MQTT.js does not itself keep to the broker's Receive Maximum; do it here,
  // as the spec asks of a client [MQTT-3.3.4-7].
  const window = (connack.properties || {}).receiveMaximum || 65535;
  const inflight = new Set();
  for (let i = 0; i < n; i++) {
    if (inflight.size >= window) await Promise.race(inflight);
    const p = pub.publishAsync('mqttjs/burst', `b${String(i).padStart(4, '0')}`,
      { qos: 1 + (i % 2) });
    inflight.add(p);
    p.then(() => inflight.delete(p), () => {});
  }
  await Promise.all(inflight);
  const got = await received(sub, n);
  await end(pub);
  await end(sub);
  return { n, received: got.map((m) => [m.qos, Buffer.from(m.payload, 'hex').toString()]) };
});
