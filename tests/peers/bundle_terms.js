// Contract terms of a valuegate bundle for the independent verifier: contract.json (the revision in force),
// the earlier revisions the manifest lists in revision files, and the terms each document was priced with.
// A document is re-priced only with the terms whose digest it recorded, never with contract.json instead,
// and it fails when the revision number it records names other terms than that digest.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const canonicalize = require('canonicalize');

const termsDigest = (value) => 'sha256:' + crypto.createHash('sha256').update(canonicalize(value)).digest('hex');
const fileDigest = (data) => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
// NOTE: JSON.parse reads 1.0 as 1, so a revision written as 1.0 passes here while the Python verifier rejects it.
const isRevision = (value) => Number.isInteger(value);
const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);

// The file name the cloud gives revision `number` of contract `id`: the id percent-encoded except A-Z a-z 0-9 - _ . ~,
// with a dot-only id encoded whole so that it cannot climb a folder.
function revisionFile(id, number) {
  let segment = encodeURIComponent(String(id)).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
  if (/^\.+$/.test(segment)) segment = segment.replace(/\./g, '%2E');
  return `contracts/${segment}/revision-${number}.json`;
}

// Throw a one-line error when the manifest lacks the shapes the checks rely on.
function checkManifest(manifest) {
  if (!isObject(manifest)) throw new Error('manifest.json is not a JSON object');
  const files = manifest.files === undefined ? {} : manifest.files;
  if (!isObject(files) || !Object.values(files).every((sha) => typeof sha === 'string')) {
    throw new Error(`manifest.json has an invalid files map (${JSON.stringify(files)})`);
  }
  const inForce = manifest.contract_revision;
  if (inForce != null && !isRevision(inForce)) throw new Error(`manifest.json has an invalid contract_revision ${JSON.stringify(inForce)}`);
  const revisions = manifest.revisions == null ? [] : manifest.revisions;
  const shaped = Array.isArray(revisions) && revisions.every((entry) => isObject(entry) && typeof entry.file === 'string'
    && isRevision(entry.revision) && typeof entry.contract_digest === 'string');
  if (!shaped) throw new Error(`manifest.json has an invalid revisions list (${JSON.stringify(revisions)})`);
  const numbers = revisions.map((entry) => entry.revision);
  if (new Set(numbers).size !== numbers.length || numbers.includes(inForce)) throw new Error(`manifest.json repeats a contract revision (${numbers.join(', ')})`);
  if (new Set(revisions.map((entry) => entry.file)).size !== revisions.length) throw new Error('manifest.json repeats a revision file');
  return { files, revisions };
}

// Read each revision file the manifest lists; `reasons` lists why one cannot be trusted.
// `outside` names the members that are links leaving the bundle folder, which are never read.
function loadRevisions(folder, manifest, contract, outside) {
  const revisions = [];
  for (const entry of manifest.revisions || []) {
    const name = entry.file;
    const terms = { file: name, revision: entry.revision, listed: entry.contract_digest, digest: null, contract: null, present: false, reasons: [] };
    revisions.push(terms);
    const expected = revisionFile(contract.id, entry.revision);
    if (name !== expected) terms.reasons.push(`the manifest labels it revision ${entry.revision}, but that revision's file is ${expected}`);
    // The manifest names the file; a path that leaves the bundle folder is not read.
    if (path.isAbsolute(name) || name.split('/').includes('..') || outside.has(name)) {
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

// The terms `record` was priced with: `{ terms, contract }` when they check, and `reason` when the document fails.
// A revision number that disagrees with the digest fails the document, but its lines are still re-priced with the digest's terms.
function pricedWith(record, inForce, revisions) {
  const recorded = record.contract_digest;
  if (recorded == null) return { terms: inForce, contract: inForce.contract, reason: 'records no contract digest' };
  const all = [inForce, ...revisions];
  const number = record.contract_revision;
  const byDigest = all.find((t) => t.digest === recorded) || all.find((t) => t.listed === recorded);
  const byNumber = isRevision(number) ? all.find((t) => t.revision === number) : undefined;
  const reasons = [];
  if (number != null && !isRevision(number)) {
    reasons.push(`contract_revision ${JSON.stringify(number)} is not a whole number`);
  } else if (number != null && byDigest && byDigest !== byNumber && (byNumber || byDigest.revision !== null)) {
    reasons.push(`records revision ${number}, but its terms digest ${recorded} is that of ${byDigest.file} (revision ${byDigest.revision} in the manifest)`);
  }
  const terms = reasons.length ? byDigest : byNumber || byDigest;
  const named = isRevision(number) ? ` (revision ${number})` : '';
  const failed = (reason) => ({ terms, reason: [...reasons, reason].join('; ') });
  if (!terms) return failed(`priced with contract terms ${recorded}${named}, which neither contract.json nor a revision file of the bundle carries`);
  if (!terms.present) return failed(`priced with revision ${terms.revision}, but ${terms.file} is missing from the bundle`);
  if (terms.digest !== recorded) return failed(`priced with contract terms ${recorded}, but ${terms.file} has ${terms.digest}`);
  if (terms.foreign) return failed(`priced with ${terms.file}, which holds another contract`);
  return { terms, contract: terms.contract, reason: reasons.join('; ') };
}

module.exports = { termsDigest, checkManifest, loadRevisions, pricedWith };
