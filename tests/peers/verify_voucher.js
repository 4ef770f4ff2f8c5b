// Independent check of a valuegate voucher: reads one signed voucher (JSON) on stdin,
// re-derives the eddsa-jcs-2022 hash input with the npm `canonicalize` package and
// Node's own SHA-256, and verifies the Ed25519 signature with Node's crypto module.
// Prints "valid" or "invalid: <reason>" and exits 0 or 1.
'use strict';
const crypto = require('crypto');
const canonicalize = require('canonicalize');

const ALPHABET = '123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz';

function base58Decode(text) {
  let value = 0n;
  for (const ch of text) {
    const digit = ALPHABET.indexOf(ch);
    if (digit < 0) throw new Error(`invalid base58 character ${ch}`);
    value = value * 58n + BigInt(digit);
  }
  const bytes = [];
  while (value > 0n) {
    bytes.unshift(Number(value % 256n));
    value /= 256n;
  }
  for (const ch of text) {
    if (ch !== '1') break;
    bytes.unshift(0);
  }
  return Buffer.from(bytes);
}

function publicKeyFromDidKey(method) {
  const did = method.split('#')[0];
  if (!did.startsWith('did:key:z')) throw new Error(`not a did:key: ${method}`);
  const raw = base58Decode(did.slice('did:key:z'.length));
  if (raw.length !== 34 || raw[0] !== 0xed || raw[1] !== 0x01) throw new Error('not an Ed25519 did:key');
  const x = raw.subarray(2).toString('base64url');
  return crypto.createPublicKey({ key: { kty: 'OKP', crv: 'Ed25519', x }, format: 'jwk' });
}

function sha256(text) {
  return crypto.createHash('sha256').update(Buffer.from(text, 'utf8')).digest();
}

function verify(secured) {
  const { proof, ...document } = secured;
  if (!proof || proof.cryptosuite !== 'eddsa-jcs-2022') return 'missing eddsa-jcs-2022 proof';
  const { proofValue, ...proofConfig } = proof;
  if (!proofValue || !proofValue.startsWith('z')) return 'proofValue is not base58btc';
  const signer = proof.verificationMethod.split('#')[0];
  if (String(document.issuer).startsWith('did:key:') && document.issuer !== signer) return 'issuer is not the signing key';
  const signed = Buffer.concat([sha256(canonicalize(proofConfig)), sha256(canonicalize(document))]);
  const key = publicKeyFromDidKey(proof.verificationMethod);
  return crypto.verify(null, signed, key, base58Decode(proofValue.slice(1))) ? null : 'signature does not verify';
}

let input = '';
process.stdin.on('data', (chunk) => { input += chunk; });
process.stdin.on('end', () => {
  let problem;
  try {
    problem = verify(JSON.parse(input));
  } catch (err) {
    problem = err.message;
  }
  if (problem) {
    console.log(`invalid: ${problem}`);
    process.exit(1);
  }
  console.log('valid');
});
