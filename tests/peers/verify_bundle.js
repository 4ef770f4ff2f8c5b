// Independent check of an unpacked valuegate bundle: every voucher's eddsa-jcs-2022 proof,
// its signing key among the gateway keys, each gateway's hash chain, each evidence root rebuilt from
// the bundle's minute records (bundle_evidence.js), key rotation statements,
// the contract revision whose digest each invoice or note records, and each invoice line
// re-priced from its vouchers with that revision: printed fields, completeness and the notes
// later runs owe. Built only on Node's crypto (SHA-256, Ed25519) and the npm `canonicalize`
// package (RFC 8785).
//
//   node verify_bundle.js BUNDLE_FOLDER
//
// Prints one "PASS id" or "FAIL id: reason" line per voucher, a "contract ID sha256:..." line
// with the digest of contract.json, a "contract ID revision N sha256:... FILE prices NUMBERS"
// line (or "FAIL FILE: reason") per earlier revision the manifest lists, one PASS or FAIL line
// per document followed by one per line of it, a "key GATEWAY first|next did:key:..." line per
// gateway key, a "FAIL NAME: reason" line per symbolic link leaving the folder and per unlisted
// file the checks read, a "NOTE NAME: ..." line per other file the manifest does not list, an
// "evidence: ..." line, then a summary line.
// Exits with status 1 when any voucher, key, file, document or line fails, or when vouchers.jsonl
// contains another number of vouchers than the manifest gives. Exits with status 2 and one
// "error: ..." line on stderr naming the file when the bundle cannot be read: malformed JSON, an
// unknown schema or a malformed manifest.
'use strict';

const crypto = require('node:crypto');
const canonicalize = require('canonicalize');
const pricing = require('./bundle_pricing');
const contractTerms = require('./bundle_terms');
const { READ, readJson, readVouchers, walk, checkMembers } = require('./bundle_members');
const { checkEvidence, recordList } = require('./bundle_evidence');

const BASE58 = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';

function base58Decode(text) {
  let number = 0n;
  for (const char of text) {
    const digit = BASE58.indexOf(char);
    if (digit < 0) throw new Error(`invalid base58 character ${JSON.stringify(char)}`);
    number = number * 58n + BigInt(digit);
  }
  const bytes = [];
  while (number > 0n) {
    bytes.unshift(Number(number % 256n));
    number /= 256n;
  }
  // Each leading '1' stands for one leading zero byte.
  for (const char of text) {
    if (char !== '1') break;
    bytes.unshift(0);
  }
  return Buffer.from(bytes);
}

function sha256(data) {
  return crypto.createHash('sha256').update(data).digest();
}

function publicKeyFromMultibase(multibase) {
  if (!multibase.startsWith('z')) throw new Error(`key ${multibase} is not base58btc multibase`);
  const raw = base58Decode(multibase.slice(1));
  if (raw.length !== 34 || raw[0] !== 0xed || raw[1] !== 0x01) throw new Error(`key ${multibase} is not an Ed25519 multikey`);
  return crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x: raw.subarray(2).toString('base64url') }, format: 'jwk' });
}

function checkProof(voucher) {
  const proof = voucher.proof;
  if (!proof || proof.type !== 'DataIntegrityProof' || proof.cryptosuite !== 'eddsa-jcs-2022') {
    return { ok: false, reason: 'missing or unsupported proof' };
  }
  const { proofValue, ...proofConfig } = proof;
  const { proof: _ignored, ...document } = voucher;
  const signed = Buffer.concat([sha256(canonicalize(proofConfig)), sha256(canonicalize(document))]);
  const method = String(proof.verificationMethod);
  const [did, fragment] = method.split('#');
  const multibase = did.replace(/^did:key:/, '');
  if (fragment !== undefined && fragment !== multibase) return { ok: false, reason: 'verification method fragment differs from its key' };
  if (did !== voucher.issuer) return { ok: false, reason: 'issuer differs from the verification method' };
  const key = publicKeyFromMultibase(multibase);
  const signature = base58Decode(String(proofValue).slice(1));
  const ok = String(proofValue).startsWith('z') && crypto.verify(null, signed, key, signature);
  return { ok, reason: ok ? 'ok' : 'signature invalid', multibase };
}

// Microseconds since the epoch of an ISO 8601 instant, or null; string order alone fails across offsets.
function micros(text) {
  if (typeof text !== 'string') return null;
  const match = /^(\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d)(?:\.(\d{1,6})\d*)?(Z|[+-]\d\d:\d\d)?$/.exec(text);
  if (!match) return null;
  const ms = Date.parse(`${match[1].replace(' ', 'T')}${match[3] || 'Z'}`);
  if (Number.isNaN(ms)) return null;
  return BigInt(ms) * 1000n + BigInt((match[2] || '0').padEnd(6, '0'));
}

const multibaseOf = (method) => String(method).replace(/^did:key:/, '').split('#')[0];

// A key carrying a rotation statement must be the one it names, signed by the gateway's key before it.
function checkKeys(keys, contract, out) {
  const schedules = new Map(); // gateway -> [[fromSeq, multibase], ...]
  const byGateway = new Map();
  for (const key of keys) {
    if (!byGateway.has(key.gateway)) byGateway.set(key.gateway, []);
    byGateway.get(key.gateway).push(key);
  }
  for (const [gateway, records] of [...byGateway].sort()) {
    const known = new Set(records.map((r) => r.publicKeyMultibase));
    const firsts = [];
    const rotations = [];
    let allOk = true;
    for (const record of records) {
      const did = `did:key:${record.publicKeyMultibase}`;
      if (record.rotation == null) {
        firsts.push(record.publicKeyMultibase);
        out.push(`key ${gateway} first ${did} valid ${record.validFrom || 'open'}..${record.validTo || 'open'}`);
        continue;
      }
      const claims = record.rotation.credentialSubject || {};
      const reasons = [];
      let check;
      try {
        check = checkProof(record.rotation);
      } catch (error) {
        check = { ok: false, reason: error.message };
      }
      if (!check.ok) reasons.push(`rotation statement: ${check.reason}`);
      else if (check.multibase !== multibaseOf(claims.previous_key)) reasons.push('rotation statement is not signed by the previous key it names');
      if (multibaseOf(claims.next_key) !== record.publicKeyMultibase) reasons.push(`rotation statement names next key ${multibaseOf(claims.next_key)}`);
      if (claims.gateway !== gateway || claims.tenant !== contract.tenant) reasons.push(`rotation statement is for ${claims.tenant}/${claims.gateway}`);
      if (!known.has(multibaseOf(claims.previous_key))) reasons.push(`previous key ${multibaseOf(claims.previous_key)} is not in keys.json`);
      if (record.fromSeq != null && record.fromSeq !== claims.from_seq) reasons.push(`fromSeq ${record.fromSeq} differs from the statement's from_seq ${claims.from_seq}`);
      if (reasons.length) {
        allOk = false;
        out.push(`FAIL key ${gateway} ${did}: ${reasons.join('; ')}`);
      } else {
        rotations.push(claims);
        out.push(`key ${gateway} next ${did} from sequence ${claims.from_seq}: rotation statement verified`);
      }
    }
    rotations.sort((a, b) => a.from_seq - b.from_seq);
    // keys.json is not signed, so a replaced key's untilSeq must end just before the first rotation it signed.
    const replacedAt = new Map();
    for (const claims of rotations) if (!replacedAt.has(multibaseOf(claims.previous_key))) replacedAt.set(multibaseOf(claims.previous_key), claims.from_seq);
    for (const record of records) {
      const from = replacedAt.get(record.publicKeyMultibase);
      if (from !== undefined && record.untilSeq != null && record.untilSeq !== from - 1) {
        out.push(`FAIL key ${gateway} did:key:${record.publicKeyMultibase}: untilSeq ${record.untilSeq} differs from ${from - 1}, the sequence before the rotation statement's from_seq ${from}`);
      }
    }
    if (firsts.length !== 1 || !allOk || !rotations.length) continue;
    // A rotation made before the first voucher takes effect at sequence 1, so the first key then signs no sequence.
    const schedule = [[1, firsts[0]]];
    let lastFrom = 0;
    for (const claims of rotations) {
      const current = schedule[schedule.length - 1][1];
      const previous = multibaseOf(claims.previous_key);
      const reason = previous !== current ? `rotation from sequence ${claims.from_seq} continues from ${previous}, but ${current} was in force`
        : claims.from_seq <= lastFrom ? `two rotations take effect at sequence ${claims.from_seq}` : null;
      if (reason) {
        out.push(`FAIL key ${gateway}: ${reason}`);
        schedule.length = 0;
        break;
      }
      schedule.push([claims.from_seq, multibaseOf(claims.next_key)]);
      lastFrom = claims.from_seq;
    }
    if (schedule.length) schedules.set(gateway, schedule);
  }
  return schedules;
}

function checkVouchers(vouchers, keys, schedules, out, evidence) {
  const gatewayKeys = new Map();
  for (const key of keys) {
    if (!gatewayKeys.has(key.gateway)) gatewayKeys.set(key.gateway, new Set());
    gatewayKeys.get(key.gateway).add(key.publicKeyMultibase);
  }
  const previous = new Map(); // gateway -> { seq, hash }
  const ordered = [...vouchers].sort((a, b) => {
    const [x, y] = [a.credentialSubject, b.credentialSubject];
    if (x.gateway === y.gateway) return x.seq - y.seq;
    return x.gateway < y.gateway ? -1 : 1;
  });
  const passed = new Set();
  for (const voucher of ordered) {
    const claims = voucher.credentialSubject;
    const reasons = [];
    let check;
    try {
      check = checkProof(voucher);
    } catch (error) {
      check = { ok: false, reason: error.message };
    }
    if (!check.ok) reasons.push(`proof: ${check.reason}`);
    if (evidence.has(claims.voucher_id)) reasons.push(evidence.get(claims.voucher_id));
    if (check.multibase && !(gatewayKeys.get(claims.gateway) || new Set()).has(check.multibase)) {
      reasons.push(`key ${check.multibase} is not a key of gateway ${claims.gateway}`);
    } else if (check.multibase && schedules.has(claims.gateway)) {
      const due = schedules.get(claims.gateway).filter(([first]) => first <= claims.seq).pop()[1];
      if (due !== check.multibase) reasons.push(`signed by ${check.multibase}, but the rotation statements give key ${due} for sequence ${claims.seq}`);
    }
    const before = previous.get(claims.gateway);
    if (before === undefined) {
      if (claims.seq === 1 && claims.prev !== null) reasons.push('chain: sequence 1 must have prev null');
    } else if (claims.seq !== before.seq + 1) {
      reasons.push(`chain: sequence ${claims.seq} follows ${before.seq}`);
    } else if (claims.prev !== before.hash) {
      reasons.push(`chain: prev is not the hash of sequence ${before.seq}`);
    }
    previous.set(claims.gateway, { seq: claims.seq, hash: 'sha256:' + sha256(canonicalize(voucher)).toString('hex') });
    if (reasons.length) {
      out.push(`FAIL ${claims.voucher_id}: ${reasons.join('; ')}`);
    } else {
      passed.add(claims.voucher_id);
      out.push(`PASS ${claims.voucher_id}`);
    }
  }
  return passed;
}

// What the settlement engine read at an instant: vouchers stored by then and adjustments recorded and not withdrawn by then.
// A time the bundle lacks counts as "before every document".
function ledger(contract, vouchers, passed, stored, adjustments) {
  const values = new Map(vouchers.map((v) => [v.credentialSubject.voucher_id, pricing.voucherValue(v)]));
  const storedAt = new Map(stored.map((s) => [s.voucher_id, micros(s.stored_at)]));
  const disproved = new Set(stored.filter((s) => s.reproduced === false).map((s) => s.voucher_id));
  const billable = (when) => [...values.values()].filter((v) => passed.has(v.id) && v.contract === contract.id && !disproved.has(v.id)
    && (when === null || storedAt.get(v.id) == null || storedAt.get(v.id) <= when));
  const withdrawnBy = (a, when) => {
    const at = micros(a.withdrawn_at);
    return at !== null && (when === null || at <= when);
  };
  const recorded = (when) => adjustments.filter((a) => !withdrawnBy(a, when) && (when === null || micros(a.created_at) === null || micros(a.created_at) <= when));
  return {
    values,
    // `terms` is the contract revision the run priced with.
    expected: (anchor, first, last, when, terms) => pricing.computeLines(terms, first, last, billable(when), recorded(when)).get(anchor),
  };
}

function printedFields(line, charge) {
  const fields = [
    ['price_kind', line.price_kind, charge.kind], ['mode', line.mode, charge.mode],
    ['unit_price', line.unit_price, charge.unit], ['quantity', line.quantity, charge.quantity], ['days', line.days, charge.days],
    ['cap_applied', line.cap_applied, charge.capApplied], ['floor_applied', line.floor_applied, charge.floorApplied],
  ];
  const reasons = [];
  for (const [name, printed, recomputed] of fields) {
    const decimal = typeof recomputed === 'object';
    let same;
    try {
      same = decimal ? printed != null && pricing.cmp(pricing.dec(printed), recomputed) === 0 : printed === recomputed;
    } catch {
      same = false;
    }
    if (!same) reasons.push(`${name} ${printed} differs from ${decimal ? pricing.show(recomputed) : recomputed} recomputed from its vouchers`);
  }
  return reasons;
}

function checkLine(doc, line, context) {
  const { book, passed, adjustments, docs, billed } = context;
  const contract = doc.priced.contract;
  if (!contract) return [`cannot re-price: the contract terms ${doc.record.contract_digest} of its document are not in the bundle`];
  const reasons = [];
  const { anchor, period_first: first, period_last: last } = line;
  const listed = [];
  for (const vid of line.voucher_ids) {
    const value = book.values.get(vid);
    if (!value) {
      reasons.push(`voucher ${vid} is not in the bundle`);
      continue;
    }
    if (!passed.has(vid)) reasons.push(`voucher ${vid} failed verification`);
    if (value.contract !== contract.id) reasons.push(`voucher ${vid} is for contract ${value.contract}, not ${contract.id}`);
    if (value.anchor !== anchor || value.date < first || value.date > last) reasons.push(`voucher ${vid} is for ${value.anchor} on ${value.date}, outside ${anchor} ${first}..${last}`);
    listed.push(value);
  }
  for (const item of line.excluded || []) {
    const adjustment = adjustments.find((a) => `nonroutine_adjustment:${a.id}` === item.reason);
    const value = book.values.get(item.voucher_id);
    if (!adjustment) reasons.push(`voucher ${item.voucher_id} is excluded by ${item.reason}, which is not in adjustments.json`);
    else if (value && ((adjustment.anchor != null && adjustment.anchor !== anchor) || value.date < adjustment.first_date || value.date > adjustment.last_date)) {
      reasons.push(`voucher ${item.voucher_id} (${value.date}) lies outside adjustment ${adjustment.id}`);
    }
  }
  if (reasons.length) return reasons;

  const charge = pricing.priceAnchor(contract, anchor, listed);
  const amount = pricing.dec(line.amount);
  const key = `${doc.chain}\n${anchor}\n${first}`;
  if (doc.record.kind === 'invoice') {
    if (pricing.cmp(charge.amount, amount)) reasons.push(`amount ${line.amount} differs from ${pricing.show(charge.amount)} re-priced from its vouchers`);
  } else {
    const before = pricing.dec(line.previously_billed);
    if (pricing.cmp(charge.amount, pricing.dec(line.recomputed))) reasons.push(`recomputed ${line.recomputed} differs from ${pricing.show(charge.amount)} re-priced from its vouchers`);
    if (pricing.cmp(pricing.quantize(pricing.sub(pricing.dec(line.recomputed), before), pricing.dec(contract.rounding)), amount)) {
      reasons.push(`amount ${line.amount} is not recomputed ${line.recomputed} minus previously billed ${line.previously_billed}`);
    }
    if (billed.has(key) && pricing.cmp(billed.get(key), before)) reasons.push(`previously billed ${line.previously_billed} differs from ${pricing.show(billed.get(key))} billed before`);
  }
  billed.set(key, pricing.add(billed.get(key) || pricing.ZERO, amount));
  if ([...charge.voucherIds].sort().join() !== [...line.voucher_ids].sort().join()) reasons.push('the listed vouchers include days that do not count');
  reasons.push(...printedFields(line, charge));

  // Completeness: what the engine would have billed when the document was issued is listed or excluded.
  const expected = book.expected(anchor, first, last, doc.issued, contract);
  if (!expected) return reasons;
  const excluded = new Set((line.excluded || []).map((i) => i.voucher_id));
  const later = docs.filter((d) => d.chain === doc.chain && d.order > doc.order).map((d) => d.record.lines.find((l) => l.anchor === anchor)).filter(Boolean);
  for (const vid of expected.charge.voucherIds) {
    if (line.voucher_ids.includes(vid) || excluded.has(vid)) continue;
    if (later.some((l) => l.voucher_ids.includes(vid) || (l.excluded || []).some((i) => i.voucher_id === vid))) continue;
    reasons.push(`voucher ${vid} (${book.values.get(vid).date}) lies in the line's period but is neither billed nor excluded`);
  }
  for (const [vid, adjustment] of expected.excluded) {
    if (!line.voucher_ids.includes(vid)) continue;
    if (later.length && !later[later.length - 1].voucher_ids.includes(vid)) continue;
    reasons.push(`bills voucher ${vid}, which adjustment ${adjustment} excludes; no later note in the bundle corrects it`);
  }
  return reasons;
}

// Every later run corrects the invoice when its period re-prices differently; an invoice has a line per anchor with vouchers.
// The period always re-prices with the terms the invoice recorded: a later contract revision prices only later periods.
function checkCorrections(invoice, context) {
  const { book, docs } = context;
  const reasons = [];
  const terms = invoice.priced.contract;
  if (!terms) return reasons;
  const { number, period_first: first, period_last: last } = invoice.record;
  const chain = docs.filter((d) => d.chain === number);
  const runs = [...new Set(docs.filter((d) => d.issued !== null && invoice.issued !== null && d.issued > invoice.issued).map((d) => d.issued))].sort((a, b) => (a < b ? -1 : 1));
  // A run is named by its invoice, or by its first note when it issued none.
  const runDocument = (when) => docs.filter((d) => d.issued === when).sort((a, b) => (a.record.kind !== 'invoice') - (b.record.kind !== 'invoice'))[0];
  const anchors = terms.anchors.filter((a) => a.price).map((a) => a.id).sort();
  for (const anchor of anchors) {
    if (book.expected(anchor, first, last, invoice.issued, terms) && !chain.some((d) => d.record.lines.some((l) => l.anchor === anchor))) {
      reasons.push(`no line for anchor ${anchor}, though vouchers of it lie in the period`);
    }
    for (const when of runs) {
      const run = runDocument(when);
      const step = pricing.dec(terms.rounding);
      const line = book.expected(anchor, first, last, when, terms);
      const now = pricing.quantize(line ? line.charge.amount : pricing.ZERO, step);
      const amounts = chain.filter((d) => d.issued <= when).flatMap((d) => d.record.lines.filter((l) => l.anchor === anchor).map((l) => pricing.dec(l.amount)));
      const before = pricing.quantize(amounts.reduce(pricing.add, pricing.ZERO), step);
      if (pricing.cmp(now, before)) {
        reasons.push(`line ${anchor}: re-prices to ${pricing.show(now)} at ${run.record.number}, but ${pricing.show(before)} is billed; a credit or debit note is missing`);
        break;
      }
    }
  }
  return reasons;
}

function main() {
  const folder = process.argv[2];
  const members = walk(folder);
  for (const name of ['manifest.json', ...READ]) {
    if (members.outside.has(name)) throw new Error(`${name} is a symbolic link to ${members.outside.get(name)}, outside the bundle folder`);
  }
  const { manifest, files: listed, revisions: entries } = contractTerms.readManifest(folder);
  const lines = readVouchers(folder);
  const isVoucher = ({ voucher }) => voucher !== null && typeof voucher === 'object' && voucher.credentialSubject !== null
    && typeof voucher.credentialSubject === 'object';
  const vouchers = lines.filter(isVoucher).map(({ voucher }) => voucher);
  const keys = readJson(folder, 'keys.json');
  const contract = readJson(folder, 'contract.json');
  const out = [];
  const keyLines = [];
  const schedules = checkKeys(keys, contract, keyLines);
  const stored = readJson(folder, 'stored.json', []);
  const evidence = checkEvidence(folder, manifest, listed, vouchers, contract);
  for (const { line } of lines.filter((entry) => !isVoucher(entry))) out.push(`FAIL vouchers.jsonl line ${line}: not a voucher (no credentialSubject object)`);
  const passed = checkVouchers(vouchers, keys, schedules, out, evidence.reasons);

  // No signature covers the contract files; each document records the digest (and revision) of the terms it was priced with.
  const terms = contractTerms.termsDigest(contract);
  out.push(`contract ${contract.id} ${terms}`);
  const problems = contractTerms.termsProblems(contract);
  if (problems.length) out.push(`FAIL contract.json: ${problems.join('; ')}`);
  // The vouchers' contract ids are signed; contract.json's is not. A renamed contract would turn the per-contract checks off.
  if (vouchers.length && !vouchers.some((v) => v.credentialSubject.contract === contract.id)) {
    out.push(`FAIL contract.json: names contract ${contract.id}, but no voucher of the bundle belongs to it`);
  }
  const inForce = { file: 'contract.json', revision: Number.isInteger(manifest.contract_revision) ? manifest.contract_revision : null,
    listed: manifest.contract_digest, digest: terms, contract, present: true, reasons: [] };
  const revisions = contractTerms.loadRevisions(folder, manifest, contract, members.outside);
  const { documents, written } = contractTerms.readDocuments(folder);
  const adjustments = readJson(folder, 'adjustments.json');
  const book = ledger(contract, vouchers, passed, stored, adjustments);
  const docs = documents.map((record, order) => ({
    record, order, issued: micros(record.issued_at), chain: record.corrects || record.number,
    priced: contractTerms.pricedWith(record, inForce, revisions, written[order]),
  }));
  for (const revision of revisions) {
    const prices = docs.filter((d) => d.priced.terms === revision).map((d) => d.record.number).join(', ') || 'nothing';
    out.push(revision.reasons.length ? `FAIL ${revision.file}: ${revision.reasons.join('; ')}`
      : `contract ${contract.id} revision ${revision.revision} ${revision.digest} ${revision.file} prices ${prices}`);
  }
  const context = { contract, book, passed, adjustments, docs, billed: new Map() };
  for (const doc of docs) {
    const lineLines = doc.record.lines.map((line, index) => {
      let reasons;
      try {
        reasons = checkLine(doc, line, context);
      } catch (error) {
        reasons = [`cannot re-price: ${error.message}`];
      }
      const subject = `${doc.record.number} line ${index + 1} (${line.anchor})`;
      return reasons.length ? `FAIL ${subject}: ${reasons.join('; ')}` : `PASS ${subject}`;
    });
    const reasons = [];
    const total = doc.record.lines.reduce((sum, line) => pricing.add(sum, pricing.dec(line.amount)), pricing.ZERO);
    if (pricing.cmp(total, pricing.dec(doc.record.total))) reasons.push(`total ${doc.record.total} differs from the sum of its lines ${pricing.show(total)}`);
    if (doc.record.kind === 'invoice') reasons.push(...checkCorrections(doc, context));
    const corrected = docs.find((d) => d.record.kind === 'invoice' && d.record.number === doc.record.corrects);
    if (corrected && corrected.record.contract_digest !== doc.record.contract_digest) {
      reasons.push(`priced with ${doc.record.contract_digest}, but the invoice it corrects, ${corrected.record.number}, with ${corrected.record.contract_digest}`);
    }
    if (doc.priced.reason) reasons.push(doc.priced.reason);
    out.push(reasons.length ? `FAIL ${doc.record.number}: ${reasons.join('; ')}` : `PASS ${doc.record.number}`, ...lineLines);
  }
  // keys.json carries no signature either: each first key must match the key recorded at commissioning.
  out.push(...keyLines);
  out.push(...checkMembers(folder, members, listed, entries, recordList(manifest).map((entry) => entry.file)), ...evidence.out);
  if (manifest.vouchers != null && manifest.vouchers !== lines.length) out.push(`FAIL vouchers.jsonl: contains ${lines.length} vouchers, but the manifest gives ${manifest.vouchers}`);
  out.push(evidence.summary);
  const failed = out.filter((line) => line.startsWith('FAIL ')).length;
  out.push(`checked ${lines.length} vouchers and ${documents.length} documents, ${failed} failed`);
  console.log(out.join('\n'));
  process.exit(failed ? 1 : 0);
}

try {
  main();
} catch (error) {
  // Malformed files end here with one line, not a stack trace.
  console.error(`error: ${error.message}`);
  process.exit(2);
}
