// Load for the adapter benchmark: one node-opcua server with COUNT Double
// variables s=v0 .. s=v<COUNT-1> in namespace urn:valuegate:bench, each
// changed RATE times per second.
//
//   node opcua_server.js PORT COUNT RATE PKI_DIR
//
// Prints "ready <counter port>" when listening. GET / on the counter port
// (127.0.0.1) returns what the server did since it started:
//   changes    values written to the variables (the offered load),
//   sent       data-change notifications sent in publish responses, all subscriptions,
//   publishes  publish responses sent, all subscriptions,
//   overflows  notifications discarded because a monitored item's queue was full
//              (node-opcua does not count a queue of size 1 replacing its value).
"use strict";

const http = require("http");
const path = require("path");
const { OPCUAServer, OPCUACertificateManager, DataType, Variant } = require("node-opcua");

const [port, count, rate] = process.argv.slice(2, 5).map(Number);
const pkiDir = process.argv[5];
const TICK_MS = 50;

function subscriptionTotals(server) {
  const totals = { sent: 0, publishes: 0, overflows: 0 };
  for (const session of server.engine.getSessions()) {
    for (const subscription of session.publishEngine ? session.publishEngine.subscriptions : []) {
      const diagnostics = subscription.subscriptionDiagnostics;
      totals.sent += diagnostics.dataChangeNotificationsCount;
      totals.publishes += diagnostics.publishRequestCount;
      totals.overflows += diagnostics.monitoringQueueOverflowCount;
    }
  }
  return totals;
}

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

  // Every TICK_MS the writer makes the changes due by then (COUNT x RATE per second, round robin over the
  // variables), so a late tick catches up instead of lowering the offered rate.
  let changes = 0;
  const started = process.hrtime.bigint();
  setInterval(() => {
    const elapsedMs = Number(process.hrtime.bigint() - started) / 1e6;
    const due = Math.floor((elapsedMs / 1000) * count * rate);
    for (; changes < due; changes += 1) {
      const i = changes % count;
      variables[i].setValueFromSource(new Variant({ dataType: DataType.Double, value: Math.floor(changes / count) + i / count }));
    }
  }, TICK_MS);

  await server.start();
  const counter = http.createServer((request, response) => {
    response.setHeader("Content-Type", "application/json");
    response.end(JSON.stringify({ changes, ...subscriptionTotals(server) }));
  });
  counter.listen(0, "127.0.0.1", () => console.log(`ready ${counter.address().port}`));
  process.on("SIGTERM", async () => {
    counter.close();
    await server.shutdown(0);
    process.exit(0);
  });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
