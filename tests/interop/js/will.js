'use strict';
// Will: sent when the connection is lost without DISCONNECT, and on
// DISCONNECT with reason 0x04; not on a normal DISCONNECT.
const { connect, received, end, main, args } = require('./common');

main(async () => {
  const version = Number(args[0] || 5);
  const { client: watcher } = await connect({ clientId: 'mqttjs-watch', protocolVersion: version });
  await watcher.subscribeAsync('mqttjs/will/#', { qos: 2 });
  const will = (name) => ({
    topic: `mqttjs/will/${name}`,
    payload: Buffer.from(`gone ${name} \u00e9`),
    qos: 1,
    retain: false,
    ...(version === 5 ? { properties: { willDelayInterval: 0, contentType: 'text/plain',
      payloadFormatIndicator: true, userProperties: { who: name } } } : {}),
  });
  const { client: lost } = await connect({ clientId: 'mqttjs-lost', protocolVersion: version,
    will: will('lost') });
  lost.stream.destroy(); // TCP close, no DISCONNECT
  await received(watcher, 1);

  const { client: normal } = await connect({ clientId: 'mqttjs-normal', protocolVersion: version,
    will: will('normal') });
  await end(normal);
  if (version === 5) {
    const { client: w4 } = await connect({ clientId: 'mqttjs-0x04', protocolVersion: version,
      will: will('0x04') });
    await end(w4, { reasonCode: 0x04 });
  }
  const { client: pub } = await connect({ clientId: 'mqttjs-wpub', protocolVersion: version });
  await pub.publishAsync('mqttjs/will/end', 'end', { qos: 1 });
  const got = await received(watcher, version === 5 ? 3 : 2);
  await end(pub);
  await end(watcher);
  return { received: got };
});
