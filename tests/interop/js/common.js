'use strict';
// Shared helpers of the MQTT.js interop scripts. Each script is run as
// `node js/SCRIPT.js PORT [ARGS...]` by tests/interop/test_interop_mqttjs.py
// and prints one JSON line: what it received, exactly (payloads in hex),
// for the Python side to compare. Any failure exits non-zero.
const mqtt = require('mqtt');

const port = Number(process.argv[2]);
const args = process.argv.slice(3);
const TIMEOUT_MS = Number(process.env.MQTTJS_TIMEOUT_MS || 10000);

const watchdog = setTimeout(() => {
  console.error(`timed out after ${TIMEOUT_MS} ms`);
  process.exit(3);
}, TIMEOUT_MS);
watchdog.unref();

// Connects; resolves with {client, connack} on CONNACK, rejects on error.
function connect(opts = {}) {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect({
      host: '127.0.0.1',
      port,
      protocolVersion: 5,
      reconnectPeriod: 0,
      connectTimeout: TIMEOUT_MS,
      ...opts,
    });
    client.received = [];
    client.waiters = [];
    // Every PUBLISH as it came off the wire, before MQTT.js handles it.
    client.wire = [];
    client.on('packetreceive', (p) => {
      if (p.cmd === 'publish') {
        client.wire.push({ topic: p.topic.toString(), messageId: p.messageId, qos: p.qos,
          dup: p.dup, payload: p.payload.toString('hex') });
      }
    });
    client.on('message', (topic, payload, packet) => {
      client.received.push(record(topic, payload, packet));
      client.waiters = client.waiters.filter((w) => !w());
    });
    client.once('connect', (connack) => resolve({ client, connack: plain(connack) }));
    client.once('error', reject);
  });
}

// Waits until the client has received n messages in all; resolves with them.
function received(client, n) {
  return new Promise((resolve) => {
    const check = () => {
      if (client.received.length >= n) {
        resolve(client.received.slice());
        return true;
      }
      return false;
    };
    if (!check()) client.waiters.push(check);
  });
}

// JSON-safe copy: Buffers become {hex: "..."}.
function plain(v) {
  if (Buffer.isBuffer(v)) return { hex: v.toString('hex') };
  if (Array.isArray(v)) return v.map(plain);
  if (v && typeof v === 'object') {
    const out = {};
    for (const [k, x] of Object.entries(v)) {
      if (x !== undefined) out[k] = plain(x);
    }
    return out;
  }
  return v;
}

function record(topic, payload, packet) {
  return {
    topic, // after MQTT.js resolved any Topic Alias
    rawTopic: packet.topic.toString(), // as it came on the wire
    payload: payload.toString('hex'),
    qos: packet.qos,
    retain: packet.retain,
    dup: packet.dup,
    props: plain(packet.properties || {}),
  };
}

function end(client, opts) {
  return new Promise((resolve) => client.end(false, opts || {}, () => resolve()));
}

function main(fn) {
  fn().then((result) => {
    process.stdout.write(JSON.stringify(result) + '\n', () => process.exit(0));
  }, (err) => {
    console.error(err && err.stack ? err.stack : err);
    process.exit(1);
  });
}

module.exports = { mqtt, port, args, connect, received, plain, end, main };
