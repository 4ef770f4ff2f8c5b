// Members of an unpacked valuegate bundle for the independent verifier: every file under the folder,
// the symbolic links that leave it (never read), and the files the manifest does not list.
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');

// Files the checks read; every one must be listed in the manifest.
const READ = ['contract.json', 'vouchers.jsonl', 'keys.json', 'invoices.json', 'adjustments.json', 'stored.json'];

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

// A FAIL line per link leaving the folder, per listed file missing or changed (revision files are checked with their terms),
// and per unlisted file the checks read; a NOTE line per other unlisted file.
function checkMembers(folder, members, listed, revisions) {
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
  const known = new Set(['manifest.json', ...Object.keys(listed), ...revisionFiles]);
  for (const name of members.files.filter((file) => !known.has(file))) {
    out.push(READ.includes(name) ? `FAIL ${name}: not listed in the manifest, though it is read` : `NOTE ${name}: not listed in the manifest; not checked`);
  }
  return out;
}

module.exports = { READ, walk, checkMembers };
