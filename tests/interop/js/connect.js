'use strict';
// connect: MQTT 5 with an empty client id and properties, then MQTT 3.1.1,
// then a persistent MQTT 5 session resumed (Session Present).
const { connect, end, main } = require('./common');

main(async () => {
  const out = {};
  let { client, connack } = await connect({
    clientId: '',
    clean: true,
    properties: { sessionExpiryInterval: 0, receiveMaximum: 50, maximumPacketSize: 65536,
      topicAliasMaximum: 4, userProperties: { from: 'mqtt.js' } },
  });
  out.v5 = connack;
  await end(client);

  ({ client, connack } = await connect({ clientId: 'mqttjs-v311', protocolVersion: 4 }));
  out.v311 = connack;
  await end(client);

  const persistent = { clientId: 'mqttjs-persist', clean: false,
    properties: { sessionExpiryInterval: 60 } };
  ({ client, connack } = await connect({ ...persistent, clean: true }));
  out.first = connack;
  await client.subscribeAsync('mqttjs/persist', { qos: 1 });
  await end(client);
  ({ client, connack } = await connect(persistent));
  out.resumed = connack;
  await end(client);
  return out;
});
