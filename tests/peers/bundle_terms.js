// Contract terms of a valuegate bundle for the independent verifier: contract.json (the revision in force),
// the earlier revisions the manifest lists in revision files, and the terms each document was priced with.
// A document is re-priced only with the terms whose digest it recorded, never with contract.json instead.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const canonicalize = require('canonicalize');

const termsDigest = (value) => 'sha256:' + crypto.createHash('sha256').update(canonicalize(value)).digest('hex');
const fileDigest = (data) => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
const isRevision = (value) => Number.isInteger(value);

// Read each revision file the manifest lists; `reasons` lists why one cannot be trusted.
function loadRevisions(folder, manifest, contract) {
  const revisions = [];
  for (const entry of manifest.revisions || []) {
    const name = String(entry.file);
    const terms = { file: name, revision: isRevision(entry.revision) ? entry.revision : null, listed: entry.contract_digest, digest: null, contract: null, present: false, reasons: [] };
    revisions.push(terms);
    // The manifest names the file; a path that leaves the bundle folder is not read.
    if (path.isAbsolute(name) || name.split('/').includes('..')) {
      terms.reasons.push('the manifest names a path outside the bundle');
      continue;
    }
    const file = path.join(folder, name);
    if (!fs.existsSync(file)) {
      terms.reasons.push(`missing from the bundle, though the manifest lists it as revision ${terms.revision}`);
      continue;
    }
    terms.present = true;
    const data = fs.readFileSync(file);
    const listedSha = (manifest.files || {})[name];
    if (listedSha !== fileDigest(data)) terms.reasons.push(`SHA-256 ${fileDigest(data)} differs from the manifest's ${listedSha}`);
    try {
      terms.contract = JSON.parse(data.toString('utf8'));
      terms.digest = termsDigest(terms.contract);
    } catch (error) {
      terms.reasons.push(`not JSON: ${error.message}`);
      continue;
    }
    if (terms.digest !== terms.listed) terms.reasons.push(`terms digest ${terms.digest} differs from the manifest's ${terms.listed}`);
    if (terms.contract.id !== contract.id || terms.contract.tenant !== contract.tenant) {
      terms.reasons.push(`holds contract ${terms.contract.id} of ${terms.contract.tenant}, not ${contract.id} of ${contract.tenant}`);
      terms.foreign = true;
    }
  }
  return revisions;
}

// The terms `record` was priced with: `{ terms, contract }` when they check, otherwise `{ reason }`.
function pricedWith(record, inForce, revisions) {
  const recorded = record.contract_digest;
  if (recorded == null) return { terms: inForce, contract: inForce.contract, reason: 'records no contract digest' };
  const all = [inForce, ...revisions];
  let terms = isRevision(record.contract_revision) ? all.find((t) => t.revision === record.contract_revision) : undefined;
  terms = terms || all.find((t) => t.digest === recorded) || all.find((t) => t.listed === recorded);
  const named = isRevision(record.contract_revision) ? ` (revision ${record.contract_revision})` : '';
  if (!terms) return { reason: `priced with contract terms ${recorded}${named}, which neither contract.json nor a revision file of the bundle carries` };
  if (!terms.present) return { terms, reason: `priced with revision ${terms.revision}, but ${terms.file} is missing from the bundle` };
  if (terms.digest !== recorded) return { terms, reason: `priced with contract terms ${recorded}, but ${terms.file} has ${terms.digest}` };
  if (terms.foreign) return { terms, reason: `priced with ${terms.file}, which holds another contract` };
  return { terms, contract: terms.contract };
}

module.exports = { termsDigest, loadRevisions, pricedWith };
