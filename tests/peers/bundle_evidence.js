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

const MINUTE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:00Z$/;
// A file with a wrong machine in the manifest fails on every line; the first ones show the cause.
const MAX_LINE_REASONS = 20;
// A canonical record takes about 230 bytes; this leaves room for many reason codes and refuses a file padded to exhaust memory.
const MAX_RECORD_BYTES = 8192;

// The manifest's records list, checked as the Python verifier checks it; a malformed list makes the bundle unreadable.
function recordList(manifest) {
  const entries = manifest.records == null ? [] : manifest.records;
  const shaped = Array.isArray(entries) && entries.every((item) => item !== null && typeof item === 'object'
    && typeof item.machine === 'string' && typeof item.file === 'string' && Number.isInteger(item.records) && item.records >= 0);
  if (!shaped) throw new Error('manifest.json has an invalid records list; each entry needs a machine, a file and a records count');
  for (const entry of entries) {
    if (climbs(entry.file)) throw new Error(`manifest.json lists record file ${entry.file}, outside the bundle`);
  }
  const files = new Set(entries.map((entry) => entry.file));
  const machines = new Set(entries.map((entry) => entry.machine));
  if (files.size !== entries.length || machines.size !== entries.length) throw new Error('manifest.json lists a machine or a record file twice in its records list');
  return entries;
}

// The fields of a valuegate/minute/v1 record besides machine, minute and reasons, all whole numbers.
const COUNTS = ['running_ms', 'idle_ms', 'planned_stop_ms', 'unplanned_stop_ms', 'changeover_ms', 'offline_ms', 'produced', 'reject', 'stops', 'uncertain_ms'];
const FIELDS = ['machine', 'minute', 'reasons', ...COUNTS].sort();

// Whether a minute that matches MINUTE names a real instant: Date.parse would move 24:00 or 30 February to another day.
function validMinute(minute) {
  const at = Date.parse(minute);
  return Number.isFinite(at) && new Date(at).toISOString() === minute.replace('Z', '.000Z');
}

// A UTF-16 surrogate without its partner: JSON.parse accepts one written as an escape, but it is no Unicode text.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

// Why one line is no valid record of `machine`, or null when it is one.
function lineProblem(line, record, machine, before) {
  if (record === null || typeof record !== 'object' || Array.isArray(record)) return 'is not a JSON object';
  if (Object.keys(record).sort().join() !== FIELDS.join()) return `has the fields ${Object.keys(record).sort().join(', ')}, not those of a valuegate/minute/v1 record`;
  const reasons = record.reasons;
  if (COUNTS.some((name) => !Number.isInteger(record[name])) || reasons === null || typeof reasons !== 'object' || Array.isArray(reasons)
    || Object.values(reasons).some((value) => !Number.isInteger(value))) return 'has a field that is not a whole number (reasons: an object of whole numbers)';
  if ([record.machine, record.minute, ...Object.keys(reasons)].some((text) => typeof text === 'string' && LONE_SURROGATE.test(text))) {
    return 'contains a lone UTF-16 surrogate, which is no Unicode text';
  }
  if (record.machine !== machine) return `is a record of machine ${record.machine}, not ${machine}`;
  if (typeof record.minute !== 'string' || !MINUTE.test(record.minute) || !validMinute(record.minute)) return `has the minute ${JSON.stringify(record.minute)}, which is no UTC minute written YYYY-MM-DDTHH:MM:00Z`;
  if (canonicalize(record) !== line) return 'is not in RFC 8785 canonical form';
  if (before !== null && record.minute <= before) return `(minute ${record.minute}) is not after the line before it`;
  return null;
}

// Each listed record file's records as { at: epoch ms of the minute, leaf }, by machine. Problems become FAIL lines in `out`.
function readRecords(folder, entries, listed, out) {
  const machines = new Map();
  for (const entry of entries) {
    if (!(entry.file in listed)) {
      out.push(`FAIL ${entry.file}: listed under records but without a SHA-256 under files`);
      continue;
    }
    if (!fs.existsSync(path.join(folder, entry.file))) continue; // the member check fails it as missing
    const size = fs.statSync(path.join(folder, entry.file)).size;
    if (size > MAX_RECORD_BYTES * Math.max(entry.records, 1)) {
      out.push(`FAIL ${entry.file}: is ${size} bytes, more than ${MAX_RECORD_BYTES} for each of the ${entry.records} records the manifest gives; not read`);
      continue;
    }
    let text;
    try {
      text = readText(folder, entry.file);
    } catch (error) {
      // Not UTF-8, or longer than a JavaScript string can hold.
      out.push(`FAIL ${entry.file}: cannot be read: ${error.message}`);
      continue;
    }
    const rows = [];
    const reasons = [];
    let bad = 0;
    let before = null;
    const lines = text.split('\n');
    if (lines[lines.length - 1] === '') lines.pop(); // the newline that ends the last line
    lines.forEach((line, index) => {
      let record;
      let problem = line ? null : 'is empty';
      try {
        if (!problem) {
          record = JSON.parse(line);
          problem = lineProblem(line, record, entry.machine, before);
        }
      } catch (error) {
        problem = `is not valid JSON: ${error.message}`;
      }
      if (problem) {
        bad += 1;
        if (bad <= MAX_LINE_REASONS) reasons.push(`line ${index + 1} ${problem}`);
        return;
      }
      before = record.minute;
      rows.push({ at: Date.parse(record.minute), leaf: sha256(Buffer.from([0]), Buffer.from(line, 'utf8')) });
    });
    if (bad > MAX_LINE_REASONS) reasons.push(`${bad - MAX_LINE_REASONS} more lines fail like those above`);
    if (rows.length + bad !== entry.records) reasons.push(`contains ${rows.length + bad} records, but the manifest gives ${entry.records}`);
    if (reasons.length) out.push(`FAIL ${entry.file}: ${reasons.join('; ')}`);
    machines.set(entry.machine, rows);
  }
  return machines;
}

// Returns the reasons by voucher id, the FAIL lines of record files and a summary line.
function checkEvidence(folder, manifest, listed, vouchers, contract) {
  const entries = recordList(manifest);
  const reasons = new Map();
  const out = [];

  // A record file the list does not name would go unchecked, as if the bundle carried no records.
  const named = new Set(entries.map((entry) => entry.file));
  const folderOfRecords = path.join(folder, 'records');
  const present = fs.existsSync(folderOfRecords) ? fs.readdirSync(folderOfRecords).map((name) => `records/${name}`) : [];
  for (const name of present.filter((file) => !named.has(file)).sort()) {
    out.push(`FAIL ${name}: a record file that the manifest's records list does not name, so no check reads its records`);
  }
  if (!entries.length) return { reasons, out, summary: 'evidence: the bundle carries no minute records, so no root was rebuilt' };

  const machines = readRecords(folder, entries, listed, out);
  let rebuilt = 0;
  for (const voucher of vouchers) {
    const claims = voucher.credentialSubject;
    if (claims.contract !== contract.id) continue;
    const start = Date.parse(claims.period.start);
    const end = Date.parse(claims.period.end);
    const leaves = [];
    for (const machine of claims.machines) {
      for (const row of machines.get(machine.id) || []) if (row.at >= start && row.at < end) leaves.push(row.leaf);
    }
    const root = merkleRoot(leaves);
    if (leaves.length < claims.evidence.records) {
      reasons.set(claims.voucher_id, `evidence: the bundle carries ${leaves.length} of the ${claims.evidence.records} records the voucher commits to`);
    } else if (root !== claims.evidence.merkle_root || leaves.length !== claims.evidence.records) {
      reasons.set(claims.voucher_id, `evidence: ${leaves.length} records give root ${root}, the voucher claims ${claims.evidence.merkle_root} over ${claims.evidence.records}`);
    } else {
      rebuilt += 1;
    }
  }
  const records = [...machines.values()].reduce((sum, rows) => sum + rows.length, 0);
  return { reasons, out, summary: `evidence: ${rebuilt} roots rebuilt from ${records} records, ${reasons.size} failed` };
}

module.exports = { merkleRoot, checkEvidence, recordList };
