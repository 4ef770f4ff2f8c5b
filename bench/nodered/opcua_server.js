// Load for the adapter benchmark: one node-opcua server with COUNT Double
// variables s=v0 .. s=v<COUNT-1> in namespace urn:valuegate:bench, each
// changed once per second.
//
//   node opcua_server.js PORT COUNT PKI_DIR
//
// Prints "ready" when listening.
"use strict";

const path = require("path");
const { OPCUAServer, OPCUACertificateManager, DataType, Variant } = require("node-opcua");

const [port, count] = process.argv.slice(2, 4).map(Number);
const pkiDir = process.argv[4];

async function main() {
  const serverCertificateManager = new OPCUACertificateManager({ rootFolder: path.join(pkiDir, "server"), automaticallyAcceptUnknownCertificate: true });
  const server = new OPCUAServer({
    port,
    hostname: "127.0.0.1",
    resourcePath: "/",
    serverCertificateManager,
    maxConnections: 10,
    serverCapabilities: { maxMonitoredItems: 200000, maxMonitoredItemsPerSubscription: 200000 },
    buildInfo: { productName: "valuegate benchmark load", manufacturerName: "valuegate" },
  });
  await server.initialize();

  const addressSpace = server.engine.addressSpace;
  const namespace = addressSpace.registerNamespace("urn:valuegate:bench");
  const folder = namespace.addFolder(addressSpace.rootFolder.objects, { browseName: "Bench" });
  const variables = [];
  for (let i = 0; i < count; i += 1) {
    variables.push(namespace.addVariable({ componentOf: folder, browseName: `v${i}`, nodeId: `s=v${i}`, dataType: "Double",
      value: new Variant({ dataType: DataType.Double, value: 0 }) }));
  }

  // Each variable changes once per second; the updates are spread over ten slices of 100 ms.
  let tick = 0;
  setInterval(() => {
    const slice = tick % 10;
    const value = Math.floor(tick / 10);
    for (let i = slice; i < count; i += 10) {
      variables[i].setValueFromSource(new Variant({ dataType: DataType.Double, value: value + i / count }));
    }
    tick += 1;
  }, 100);

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
