// OPC UA server written with node-opcua: a production line with variables
// Line/state (Int32), Line/count (UInt32), Line/speed (Double) and
// Line/fault (Boolean) in namespace urn:valuegate:peer:line.
//
//   node opcua_server.js PORT PKI_DIR [--namespaces-before N] [--max-items-per-call N]
//
// Writing true to Line/fault sets the status of Line/state to
// BadCommunicationError while keeping its value, as a PLC does when a field
// bus link drops. Writing false sets it Good again. --namespaces-before
// registers N other namespaces first, so that the line's namespace index
// moves. Prints "ready" when listening.
"use strict";

const path = require("path");
const { OPCUAServer, OPCUACertificateManager, DataType, StatusCodes, Variant } = require("node-opcua");

const args = process.argv.slice(2);
const port = Number(args[0]);
const pkiDir = args[1];
function option(name, fallback) {
  const at = args.indexOf(name);
  return at >= 0 ? Number(args[at + 1]) : fallback;
}

async function main() {
  const serverCertificateManager = new OPCUACertificateManager({ rootFolder: path.join(pkiDir, "server"), automaticallyAcceptUnknownCertificate: true });
  const maxItems = option("--max-items-per-call", 0);
  const server = new OPCUAServer({
    port,
    hostname: "127.0.0.1",
    resourcePath: "/",
    serverCertificateManager,
    serverCapabilities: maxItems ? { operationLimits: { maxMonitoredItemsPerCall: maxItems } } : undefined,
    buildInfo: { productName: "valuegate test peer", manufacturerName: "valuegate tests" },
  });
  await server.initialize();

  const addressSpace = server.engine.addressSpace;
  for (let i = 0; i < option("--namespaces-before", 0); i += 1) {
    addressSpace.registerNamespace(`urn:valuegate:peer:other:${i}`);
  }
  const namespace = addressSpace.registerNamespace("urn:valuegate:peer:line");
  const line = namespace.addObject({ organizedBy: addressSpace.rootFolder.objects, browseName: "Line", nodeId: "s=Line" });
  const variable = (name, dataType, value) =>
    namespace.addVariable({
      componentOf: line,
      browseName: name,
      nodeId: `s=Line/${name}`,
      dataType,
      accessLevel: "CurrentRead | CurrentWrite",
      userAccessLevel: "CurrentRead | CurrentWrite",
      value: new Variant({ dataType: DataType[dataType], value }),
    });

  const state = variable("state", "Int32", 1);
  variable("count", "UInt32", 0);
  variable("speed", "Double", 0.0);
  const fault = variable("fault", "Boolean", false);
  fault.on("value_changed", (dataValue) => {
    const current = state.readValue().value;
    const status = dataValue.value.value ? StatusCodes.BadCommunicationError : StatusCodes.Good;
    state.setValueFromSource(current, status);
  });

  await server.start();
  console.log("ready");
  process.on("SIGTERM", async () => {
    await server.shutdown(0);
    process.exit(0);
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
