// Modbus TCP filler PLC written with jsmodbus: the register layout of the
// shipped bottling-filler-modbus tag map, encoded here independently of
// valuegate's decoder (uint64 state_since big-endian, uint64 clock with the
// least significant word first).
//
//   node modbus_filler.js PORT
//
// Every 100 ms the PLC fills a container. After every tenth container it
// stops for a fault (state 2, reason 17) and restarts on the next tick.
// Prints "ready" when listening.
"use strict";

const net = require("net");
const Modbus = require("jsmodbus");

const port = Number(process.argv[2]);
const holding = Buffer.alloc(12 * 2); // registers 0..11; reading past them returns exception 02
const netServer = new net.Server();
new Modbus.server.TCP(netServer, { holding, input: Buffer.alloc(2), coils: Buffer.alloc(1), discrete: Buffer.alloc(1) });

let state = 1;
let reason = 0;
let containers = 65530; // close to the 16-bit wrap
let changes = 0;
let since = BigInt(Date.now());

function writeUint64(address, value, lowWordFirst) {
  const words = [Number((value >> 48n) & 0xffffn), Number((value >> 32n) & 0xffffn), Number((value >> 16n) & 0xffffn), Number(value & 0xffffn)];
  if (lowWordFirst) words.reverse();
  words.forEach((word, index) => holding.writeUInt16BE(word, (address + index) * 2));
}

function publish() {
  holding.writeUInt16BE(state, 0);
  holding.writeUInt16BE(reason, 2);
  writeUint64(2, since, false);
  writeUint64(6, BigInt(Date.now()), true);
  holding.writeUInt16BE(containers & 0xffff, 20);
  holding.writeUInt16BE(changes & 0xffff, 22);
}

function setState(next, nextReason) {
  state = next;
  reason = nextReason;
  changes += 1;
  since = BigInt(Date.now());
}

setInterval(() => {
  if (state === 2) {
    setState(1, 0);
  } else {
    containers = (containers + 1) & 0xffff;
    if (containers % 10 === 0) setState(2, 17);
  }
  publish();
}, 100);

publish();
netServer.listen(port, "127.0.0.1", () => console.log("ready"));
process.on("SIGTERM", () => process.exit(0));
