// Modbus TCP server written with modbus-serial's ServerTCP, for unit id 3:
// holding registers 0..5 hold the float32 values 1.5, 3.0 and -1.11 with
// the low word first (CDAB), registers 6..15 hold 1000 + address, and
// register 8 returns exception 02 (illegal data address) as a PLC does for
// an address it does not map. Input registers hold 2000 + address, odd
// coils are on and discrete input 0 is on.
//
//   node modbus_vector.js PORT
"use strict";

const ModbusRTU = require("modbus-serial");

const port = Number(process.argv[2]);
const floats = [1.5, 3.0, -1.11];
const words = [];
for (const value of floats) {
  const buffer = Buffer.alloc(4);
  buffer.writeFloatBE(value, 0);
  words.push(buffer.readUInt16BE(2), buffer.readUInt16BE(0)); // low word first
}

function holding(address) {
  if (address === 8) {
    throw { modbusErrorCode: 0x02, msg: "Illegal data address" };
  }
  if (address < words.length) return words[address];
  if (address < 16) return 1000 + address;
  throw { modbusErrorCode: 0x02, msg: "Illegal data address" };
}

const vector = {
  getHoldingRegister: (address) => holding(address),
  getInputRegister: (address) => 2000 + address,
  getCoil: (address) => address % 2 === 1,
  getDiscreteInput: (address) => address === 0,
};

const server = new ModbusRTU.ServerTCP(vector, { host: "127.0.0.1", port, unitID: 3 });
server.on("initialized", () => console.log("ready"));
server.on("socketError", (err) => console.error(err.message));
process.on("SIGTERM", () => server.close(() => process.exit(0)));
