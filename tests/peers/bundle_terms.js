// Contract terms of a valuegate bundle for the independent verifier: the manifest's schema and shapes, contract.json
// (the revision in force), the earlier revisions the manifest lists in revision files, and the terms each document was priced with.
// A document is re-priced only with the terms whose digest it recorded, never with contract.json instead,
// and it fails when the revision number it records names other terms than that digest.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const canonicalize = require('canonicalize');
const { climbs, decode, parseJson, readText } = require('./bundle_members');
const { cmp, dec, ZERO } = require('./bundle_pricing');

const SCHEMA = 'valuegate/bundle/v1';
const termsDigest = (value) => 'sha256:' + crypto.createHash('sha256').update(canonicalize(value)).digest('hex');
const fileDigest = (data) => 'sha256:' + crypto.createHash('sha256').update(data).digest('hex');
// JSON.parse reads 1.0 as 1, so callers also ask fractionalNumbers whether the text wrote a fraction or an exponent.
const isRevision = (value) => Number.isInteger(value);
const isObject = (value) => value !== null && typeof value === 'object' && !Array.isArray(value);
const pathKey = (...segments) => JSON.stringify(segments);

const TOKEN = /\s*(?:"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|[{}[\]:,]|true|false|null)/y;

// Each number that `text` writes with a fraction or an exponent (2.0, 1e0), as written, by its path in JSON.stringify form
// (pathKey('revisions', 0, 'revision')). Python's json reads these as floats, which are no revision numbers, while JSON.parse
// reads 2.0 as 2; the raw text lets this verifier judge them alike. Call it only on text JSON.parse accepted.
function fractionalNumbers(text) {
  const found = new Map();
  const stack = []; // { array, index, key } per open array or object
  let keyNext = false;
  TOKEN.lastIndex = 0;
  for (let match = TOKEN.exec(text); match !== null; match = TOKEN.exec(text)) {
    const token = match[0].trimStart();
    const frame = stack[stack.length - 1];
    if (token === '}' || token === ']') {
      stack.pop();
      keyNext = false;
    } else if (token === ',') {
      if (frame.array) frame.index += 1;
      else keyNext = true;
    } else if (keyNext) {
      frame.key = JSON.parse(token);
      keyNext = false;
    } else if (token !== ':') {
      const path = JSON.stringify(stack.map((f) => (f.array ? f.index : f.key)));
      // A repeated key replaces the earlier value and all below it, as in JSON.parse.
      for (const seen of [...found.keys()]) if (seen === path || seen.startsWith(path.slice(0, -1) + ',')) found.delete(seen);
      if (token === '{' || token === '[') {
        stack.push({ array: token === '[', index: 0, key: null });
        keyNext = token === '{';
      } else if (/^-?\d/.test(token) && /[.eE]/.test(token)) {
        found.set(path, token);
      }
    }
  }
  return found;
}

// The file name the cloud gives revision `number` of contract `id`: the id percent-encoded except A-Z a-z 0-9 - _ . ~,
// with a dot-only id encoded whole so that it cannot climb a folder.
function revisionFile(id, number) {
  let segment = encodeURIComponent(String(id)).replace(/[!'()*]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase());
  if (/^\.+$/.test(segment)) segment = segment.replace(/\./g, '%2E');
  return `contracts/${segment}/revision-${number}.json`;
}

// Throw a one-line error when the manifest has another schema or lacks the shapes the checks rely on.
// `text` is the manifest as written, to tell 2.0 from 2.
function checkManifest(manifest, text) {
  if (!isObject(manifest)) throw new Error('manifest.json is not a JSON object');
  if (manifest.schema !== SCHEMA) throw new Error(`unknown bundle schema ${JSON.stringify(manifest.schema)} in manifest.json; this verifier reads ${SCHEMA}`);
  const written = fractionalNumbers(text);
  const whole = (value, ...path) => isRevision(value) && !written.has(pathKey(...path));
  const files = manifest.files === undefined ? {} : manifest.files;
  if (!isObject(files) || !Object.values(files).every((sha) => typeof sha === 'string')) {
    throw new Error(`manifest.json has an invalid files map (${JSON.stringify(files)})`);
  }
  const inForce = manifest.contract_revision;
  if (inForce != null && !whole(inForce, 'contract_revision')) {
    throw new Error(`manifest.json has an invalid contract_revision ${written.get(pathKey('contract_revision')) || JSON.stringify(inForce)}`);
  }
  if (manifest.vouchers != null && !whole(manifest.vouchers, 'vouchers')) {
    throw new Error(`manifest.json has an invalid vouchers count ${written.get(pathKey('vouchers')) || JSON.stringify(manifest.vouchers)}`);
  }
  const revisions = manifest.revisions == null ? [] : manifest.revisions;
  const shaped = Array.isArray(revisions) && revisions.every((entry, index) => isObject(entry) && typeof entry.file === 'string'
    && whole(entry.revision, 'revisions', index, 'revision') && typeof entry.contract_digest === 'string');
  if (!shaped) throw new Error(`manifest.json has an invalid revisions list (${JSON.stringify(revisions)})`);
  const numbers = revisions.map((entry) => entry.revision);
  if (new Set(numbers).size !== numbers.length || numbers.includes(inForce)) throw new Error(`manifest.json repeats a contract revision (${numbers.join(', ')})`);
  const leaving = revisions.map((entry) => entry.file).filter(climbs);
  if (leaving.length) throw new Error(`manifest.json lists revision file ${leaving.map((name) => JSON.stringify(name)).join(', ')} outside the bundle`);
  if (new Set(revisions.map((entry) => entry.file)).size !== revisions.length) throw new Error('manifest.json repeats a revision file');
  return { files, revisions };
}

// manifest.json, checked (see checkManifest), with its files map and revisions list.
function readManifest(folder) {
  const text = readText(folder, 'manifest.json');
  const manifest = parseJson('manifest.json', text);
  return { manifest, ...checkManifest(manifest, text) };
}

// The documents of invoices.json, and for each by position its contract_revision as written when that has a fraction
// or an exponent (JSON.parse reads 2.0 as 2), else undefined.
function readDocuments(folder) {
  const text = readText(folder, 'invoices.json');
  const documents = parseJson('invoices.json', text);
  const numbers = fractionalNumbers(text);
  return { documents, written: Array.isArray(documents) ? documents.map((_, index) => numbers.get(pathKey(index, 'contract_revision'))) : [] };
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
    // checkManifest rejected names that climb; a symbolic link leaving the bundle folder is not read either.
    if (outside.has(name)) {
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
    // A revision file that is not UTF-8 JSON makes the bundle unreadable, as in the Python verifier.
    terms.contract = parseJson(name, decode(name, data));
    terms.digest = termsDigest(terms.contract);
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
// `written` is its contract_revision as invoices.json writes it when that has a fraction or an exponent (see fractionalNumbers).
function pricedWith(record, inForce, revisions, written) {
  const recorded = record.contract_digest;
  if (recorded == null) return { terms: inForce, contract: inForce.contract, reason: 'records no contract digest' };
  const all = [inForce, ...revisions];
  const number = record.contract_revision;
  const whole = isRevision(number) && written === undefined;
  // Revisions can share terms (an amendment undone); among those, the one with the recorded revision number is taken.
  const sameFound = all.filter((t) => t.digest === recorded);
  const matching = sameFound.length ? sameFound : all.filter((t) => t.listed === recorded);
  const byDigest = (whole && matching.find((t) => t.revision === number)) || matching[0];
  const byNumber = whole ? all.find((t) => t.revision === number) : undefined;
  const reasons = [];
  if (number != null && !whole) {
    reasons.push(`contract_revision ${written || JSON.stringify(number)} is not a whole number`);
  } else if (number != null && byDigest && byDigest !== byNumber && (byNumber || byDigest.revision !== null)) {
    reasons.push(`records revision ${number}, but its terms digest ${recorded} is that of ${byDigest.file} (revision ${byDigest.revision} in the manifest)`);
  }
  const terms = reasons.length ? byDigest : byNumber || byDigest;
  const named = whole ? ` (revision ${number})` : '';
  const failed = (reason) => ({ terms, reason: [...reasons, reason].join('; ') });
  if (!terms) return failed(`priced with contract terms ${recorded}${named}, which neither contract.json nor a revision file of the bundle carries`);
  if (!terms.present) return failed(`priced with revision ${terms.revision}, but ${terms.file} is missing from the bundle`);
  if (terms.digest !== recorded) return failed(`priced with contract terms ${recorded}, but ${terms.file} has ${terms.digest}`);
  if (terms.foreign) return failed(`priced with ${terms.file}, which holds another contract`);
  return { terms, contract: terms.contract, reason: reasons.join('; ') };
}

// The metric each price unit bills; target_met fits any metric.
const PRICE_METRIC = { oee_point_day: 'oee_points', availability_point_day: 'availability_points', avoided_minute: 'unplanned_downtime_rate' };

// The decimal `value` of a contract amount, or undefined when it is absent or no decimal (the schema checks report that).
function amount(value) {
  if (value === undefined || value === null) return undefined;
  try {
    return dec(value);
  } catch {
    return undefined;
  }
}

// List why `contract` cannot be the terms anything was priced with, or return an empty list. The dates: a term or period
// that ends before it starts, and a reporting period outside the term or overlapping its baseline. The anchors: a baseline
// that needs no day, a repeated id, a price unit that bills another metric. The money: a price not above zero, a negative
// cap or floor, a floor above the cap, and a rounding step that is no positive power of ten.
function termsProblems(contract) {
  const problems = [];
  if (!isObject(contract)) return problems;
  const dated = (value) => typeof value === 'string';
  if (dated(contract.start) && dated(contract.end) && contract.end < contract.start) {
    problems.push(`the contract ends (${contract.end}) before it starts (${contract.start})`);
  }
  if (contract.rounding !== undefined && !/^(?:10*|0\.0*1)$/.test(String(contract.rounding))) {
    problems.push(`rounding ${JSON.stringify(contract.rounding)} is not a positive power of ten such as 0.01`);
  }
  const anchors = Array.isArray(contract.anchors) ? contract.anchors : [];
  const ids = new Set();
  anchors.forEach((anchor, index) => {
    if (!isObject(anchor)) return;
    const where = `anchors[${index}]`;
    if (ids.has(anchor.id)) problems.push(`${where}.id ${JSON.stringify(anchor.id)} repeats an earlier anchor id`);
    ids.add(anchor.id);
    for (const part of ['baseline', 'reporting']) {
      const period = anchor[part];
      if (isObject(period) && dated(period.first_date) && dated(period.last_date) && period.last_date < period.first_date) {
        problems.push(`${where}.${part} ends (${period.last_date}) before it starts (${period.first_date})`);
      }
    }
    const { baseline, reporting } = anchor;
    if (isObject(baseline) && isObject(reporting) && dated(baseline.last_date) && dated(reporting.first_date) && reporting.first_date <= baseline.last_date) {
      problems.push(`${where}.reporting starts (${reporting.first_date}) before the baseline ends (${baseline.last_date})`);
    }
    if (isObject(reporting) && dated(reporting.first_date) && dated(reporting.last_date) && dated(contract.start) && dated(contract.end)
      && (reporting.first_date < contract.start || reporting.last_date > contract.end)) {
      problems.push(`${where}.reporting ${reporting.first_date} .. ${reporting.last_date} lies outside the contract term ${contract.start} .. ${contract.end}`);
    }
    if (isObject(baseline) && baseline.min_days !== undefined && !(Number.isInteger(baseline.min_days) && baseline.min_days >= 1)) {
      problems.push(`${where}.baseline.min_days is ${JSON.stringify(baseline.min_days)}, not a whole number of at least 1`);
    }
    const per = isObject(anchor.price) ? anchor.price.per : undefined;
    if (per in PRICE_METRIC && PRICE_METRIC[per] !== anchor.metric) {
      problems.push(`${where}.price.per ${per} bills ${PRICE_METRIC[per]}, but the anchor measures ${anchor.metric}`);
    }
    const price = isObject(anchor.price) ? amount(anchor.price.amount) : undefined;
    if (price !== undefined && cmp(price, ZERO) <= 0) problems.push(`${where}.price.amount ${anchor.price.amount} is not above zero`);
    const cap = amount(anchor.cap);
    const floor = amount(anchor.floor);
    if (cap !== undefined && cmp(cap, ZERO) < 0) problems.push(`${where}.cap ${anchor.cap} is negative`);
    if (floor !== undefined && cmp(floor, ZERO) < 0) problems.push(`${where}.floor ${anchor.floor} is negative`);
    if (cap !== undefined && floor !== undefined && cmp(floor, cap) > 0) problems.push(`${where}.floor ${anchor.floor} lies above the cap ${anchor.cap}`);
  });
  return problems;
}

module.exports = { termsDigest, fractionalNumbers, checkManifest, readManifest, readDocuments, loadRevisions, pricedWith, termsProblems };
