// Members of an unpacked valuegate bundle for the independent verifier: every file under the folder,
// the symbolic links that leave it (never read), the files the manifest does not list, and reading a file as JSON.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

// Files the checks read; every one must be listed in the manifest.
const READ = ['contract.json', 'vouchers.jsonl', 'keys.json', 'invoices.json', 'adjustments.json', 'stored.json'];

// Whether an unpacked name lands outside the bundle folder: absolute, a drive letter, or a '..' part (with / or \\).
const climbs = (name) => /^[/\\]/.test(name) || name[1] === ':' || name.replace(/\\/g, '/').split('/').includes('..');

// The bytes `data` of the bundle file `name` as text, which must be UTF-8; a byte order mark is kept,
// so that JSON.parse rejects it as Python's json does.
function decode(name, data) {
  try {
    return new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(data);
  } catch (error) {
    // The decoder throws TypeError on bytes that are not UTF-8, and RangeError on text too long for one string.
    if (error instanceof TypeError) throw new Error(`${name} is not valid UTF-8`);
    throw new Error(`${name} cannot be read: ${error.message}`);
  }
}

const readText = (folder, name) => decode(name, fs.readFileSync(path.join(folder, name)));

// Parse `text` of the bundle file `name`; the error names the file.
function parseJson(name, text) {
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new Error(`${name} is not valid JSON: ${error.message}`);
  }
}

// Read the bundle file `name` as JSON; `fallback` stands for an optional file that is absent.
function readJson(folder, name, fallback) {
  if (fallback !== undefined && !fs.existsSync(path.join(folder, name))) return fallback;
  return parseJson(name, readText(folder, name));
}

// The vouchers of vouchers.jsonl, one JSON document a line; blank lines are skipped, but count in the line numbers of errors.
// Like the Python verifier, bytes that are not UTF-8 are replaced rather than rejected, so the proofs fail.
// Each entry is { line, voucher }; a line that parses to something other than an object is kept for a FAIL.
const readVouchers = (folder) => fs.readFileSync(path.join(folder, 'vouchers.jsonl'), 'utf8').split('\n')
  .map((line, index) => line.trim() && { line: index + 1, voucher: parseJson(`vouchers.jsonl line ${index + 1}`, line) }).filter(Boolean);

// Every file under `folder` by its relative name, and each symbolic link that leaves the folder or cannot be followed.
function walk(folder) {
  const root = fs.realpathSync(folder);
  const files = [];
  const outside = new Map();
  const visit = (dir, prefix) => {
    for (const entry of fs.readdirSync(dir, { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1))) {
      const name = prefix + entry.name;
      const full = path.join(dir, entry.name);
      if (entry.isSymbolicLink()) {
        let target = null;
        try {
          target = fs.realpathSync(full);
        } catch {
          // A link that cannot be followed is named with the ones that leave the folder.
        }
        if (target === null || !target.startsWith(root + path.sep)) outside.set(name, fs.readlinkSync(full));
        else if (fs.statSync(full).isFile()) files.push(name);
      } else if (entry.isDirectory()) {
        visit(full, `${name}/`);
      } else if (entry.isFile()) {
        files.push(name);
      }
    }
  };
  visit(root, '');
  return { files, outside };
}

// Returns a FAIL line per link leaving the folder, per listed file missing or changed, and per unlisted file the checks read.
// Every other unlisted file gets a NOTE line. Revision files are checked with their terms elsewhere.
function checkMembers(folder, members, listed, revisions, recordFiles = []) {
  const out = [];
  for (const [name, target] of members.outside) out.push(`FAIL ${name}: symbolic link to ${target} leaves the bundle folder; not read`);
  const revisionFiles = new Set(revisions.map((entry) => entry.file));
  const present = new Set(members.files);
  for (const [name, expected] of Object.entries(listed).sort()) {
    if (revisionFiles.has(name) || members.outside.has(name)) continue;
    if (!present.has(name)) {
      out.push(`FAIL ${name}: missing from the bundle, though the manifest lists it`);
      continue;
    }
    const actual = 'sha256:' + crypto.createHash('sha256').update(fs.readFileSync(path.join(folder, name))).digest('hex');
    const wanted = expected.startsWith('sha256:') ? expected : `sha256:${expected}`;
    if (actual !== wanted) out.push(`FAIL ${name}: SHA-256 ${actual} differs from the manifest's ${expected}`);
  }
  // A record file missing from `listed` fails in the evidence check instead.
  const known = new Set(['manifest.json', ...Object.keys(listed), ...revisionFiles, ...recordFiles]);
  for (const name of members.files.filter((file) => !known.has(file))) {
    out.push(READ.includes(name) ? `FAIL ${name}: not listed in the manifest, though it is read` : `NOTE ${name}: not listed in the manifest; not checked`);
  }
  return out;
}

module.exports = { READ, climbs, decode, readText, parseJson, readJson, readVouchers, walk, checkMembers };
