// Load for the adapter benchmark: COUNT simulated Modbus TCP devices, written
// with jsmodbus, on ports BASE_PORT .. BASE_PORT + COUNT - 1 of 127.0.0.1.
// Each device has REGISTERS holding registers; every 100 ms each register
// is incremented, so every poll reads fresh values.
//
//   node modbus_devices.js BASE_PORT COUNT REGISTERS
//
// Prints "ready" when every device listens.
"use strict";

const net = require("net");
const Modbus = require("jsmodbus");

const [basePort, count, registers] = process.argv.slice(2).map(Number);
const blocks = [];
let listening = 0;

for (let device = 0; device < count; device += 1) {
  const holding = Buffer.alloc(registers * 2);
  blocks.push(holding);
  const netServer = new net.Server();
  // A reader that exits resets its connections; without a handler the reset would end this process.
  netServer.on("connection", (socket) => socket.on("error", () => {}));
  new Modbus.server.TCP(netServer, { holding, input: Buffer.alloc(2), coils: Buffer.alloc(1), discrete: Buffer.alloc(1) });
  netServer.listen(basePort + device, "127.0.0.1", () => {
    listening += 1;
    if (listening === count) console.log("ready");
  });
}

let tick = 0;
setInterval(() => {
  tick = (tick + 1) & 0xffff;
  for (const holding of blocks) {
    for (let register = 0; register < registers; register += 1) {
      holding.writeUInt16BE((tick + register) & 0xffff, register * 2);
    }
  }
}, 100);

process.on("SIGTERM", () => process.exit(0));
