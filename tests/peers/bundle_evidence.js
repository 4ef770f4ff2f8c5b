// Evidence roots for the independent verifier: each voucher's RFC 6962 Merkle root (SHA-256) rebuilt
// from the per-minute records the bundle carries under records/, following the auditor guide's recipe.
// Recomputing the day's figures needs valuegate's kernels, so this verifier checks the roots only.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const canonicalize = require('canonicalize');
const { climbs, readText } = require('./bundle_members');

function sha256(...parts) {
  const hash = crypto.createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest();
}

// Pair the leaves from the left, and move an odd last node up unchanged. No leaf gives the hash of the empty string.
function merkleRoot(leaves) {
  if (!leaves.length) return 'sha256:' + sha256(Buffer.alloc(0)).toString('hex');
  let level = leaves;
  while (level.length > 1) {
    const next = [];
    for (let i = 0; i + 1 < level.length; i += 2) next.push(sha256(Buffer.from([1]), level[i], level[i + 1]));
    if (level.length % 2) next.push(level[level.length - 1]);
    level = next;
  }
  return 'sha256:' + level[0].toString('hex');
}

// Each listed record file's records as { at: epoch ms of the minute, leaf }, by machine. Problems become FAIL lines in `out`.
function readRecords(folder, entries, listed, out) {
  const machines = new Map();
  for (const entry of entries) {
    if (climbs(entry.file)) throw new Error(`manifest.json lists record file ${entry.file}, outside the bundle`);
    if (!(entry.file in listed)) {
      out.push(`FAIL ${entry.file}: listed under records but without a SHA-256 under files`);
      continue;
    }
    if (!fs.existsSync(path.join(folder, entry.file))) continue; // the member check fails it as missing
    const rows = [];
    const reasons = [];
    readText(folder, entry.file).split('\n').forEach((line, index) => {
      if (!line) return;
      let record;
      try {
        record = JSON.parse(line);
      } catch (error) {
        reasons.push(`line ${index + 1} is not valid JSON: ${error.message}`);
        return;
      }
      if (record.machine !== entry.machine) reasons.push(`line ${index + 1} is a record of machine ${record.machine}, not ${entry.machine}`);
      else rows.push({ at: Date.parse(record.minute), leaf: sha256(Buffer.from([0]), Buffer.from(canonicalize(record), 'utf8')) });
    });
    if (reasons.length) out.push(`FAIL ${entry.file}: ${reasons.join('; ')}`);
    machines.set(entry.machine, rows);
  }
  return machines;
}

// Returns the reasons by voucher id, the FAIL lines of record files and a summary line (null without records).
function checkEvidence(folder, manifest, listed, vouchers, contract, stored) {
  const entries = Array.isArray(manifest.records) ? manifest.records : [];
  const reasons = new Map();
  const out = [];
  if (!entries.length) return { reasons, out, summary: null };
  const machines = readRecords(folder, entries, listed, out);
  const reproduced = new Map(stored.map((item) => [item.voucher_id, item.reproduced]));
  let rebuilt = 0;
  let skipped = 0;
  for (const voucher of vouchers) {
    const claims = voucher.credentialSubject;
    if (claims.contract !== contract.id) continue;
    const start = Date.parse(claims.period.start);
    const end = Date.parse(claims.period.end);
    const leaves = [];
    for (const machine of claims.machines) {
      for (const row of machines.get(machine.id) || []) if (row.at >= start && row.at < end) leaves.push(row.leaf);
    }
    // A bundle built before the cloud stored all of a voucher's records cannot show its root, so that voucher is skipped.
    if (leaves.length < claims.evidence.records && reproduced.get(claims.voucher_id) !== true) {
      skipped += 1;
      continue;
    }
    const root = merkleRoot(leaves);
    if (root !== claims.evidence.merkle_root || leaves.length !== claims.evidence.records) {
      reasons.set(claims.voucher_id, `evidence: ${leaves.length} records give root ${root}, the voucher claims ${claims.evidence.merkle_root} over ${claims.evidence.records}`);
    } else {
      rebuilt += 1;
    }
  }
  const records = [...machines.values()].reduce((sum, rows) => sum + rows.length, 0);
  return { reasons, out, summary: `evidence: ${rebuilt} roots rebuilt from ${records} records, ${reasons.size} failed, ${skipped} skipped` };
}

module.exports = { merkleRoot, checkEvidence };
