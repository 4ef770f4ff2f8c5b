// Independent check of an unpacked valuegate bundle: every voucher's eddsa-jcs-2022 proof,
// its signing key among the gateway keys, each gateway's hash chain, and the digest of the
// contract terms that each invoice or note records.
// Built only on Node's crypto (SHA-256, Ed25519) and the npm `canonicalize` package (RFC 8785).
//
//   node verify_bundle.js BUNDLE_FOLDER
//
// Prints one "PASS id" or "FAIL id: reason" line per voucher, a "contract ID sha256:..." line
// with the digest of contract.json, one PASS or FAIL line per document, then a summary line.
// Exits with status 1 when any voucher or document fails.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const canonicalize = require('canonicalize');

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

function main() {
  const folder = process.argv[2];
  const vouchers = fs.readFileSync(path.join(folder, 'vouchers.jsonl'), 'utf8').split('\n').filter((line) => line.trim()).map((line) => JSON.parse(line));
  const keys = JSON.parse(fs.readFileSync(path.join(folder, 'keys.json'), 'utf8'));
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
  let failed = 0;
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
    if (check.multibase && !(gatewayKeys.get(claims.gateway) || new Set()).has(check.multibase)) {
      reasons.push(`key ${check.multibase} is not a key of gateway ${claims.gateway}`);
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
      failed += 1;
      console.log(`FAIL ${claims.voucher_id}: ${reasons.join('; ')}`);
    } else {
      console.log(`PASS ${claims.voucher_id}`);
    }
  }

  // contract.json carries no signature; each document records the digest of the terms it was priced with.
  const contract = JSON.parse(fs.readFileSync(path.join(folder, 'contract.json'), 'utf8'));
  const terms = 'sha256:' + sha256(canonicalize(contract)).toString('hex');
  console.log(`contract ${contract.id} ${terms}`);
  const documents = JSON.parse(fs.readFileSync(path.join(folder, 'invoices.json'), 'utf8'));
  for (const document of documents) {
    if (document.contract_digest === terms) {
      console.log(`PASS ${document.number}`);
    } else {
      failed += 1;
      console.log(`FAIL ${document.number}: priced with contract terms ${document.contract_digest}, not those of contract.json`);
    }
  }
  console.log(`checked ${ordered.length} vouchers and ${documents.length} documents, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();
