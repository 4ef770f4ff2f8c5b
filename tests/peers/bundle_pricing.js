// Outcome pricing of a valuegate bundle for the independent verifier, in exact decimals on BigInt:
// the latest voucher per anchor-day, sufficient (and, for point-day prices, running) days, the
// settlement mode, floor, cap and half-up rounding, and the exclusions of non-routine adjustments.
'use strict';

// A decimal is { coef: BigInt, exp: Number } for coef x 10^exp.
function dec(value) {
  const text = typeof value === 'number' ? String(value) : String(value).trim();
  const match = /^([+-]?)(\d*)(?:\.(\d*))?(?:[eE]([+-]?\d+))?$/.exec(text);
  if (!match || (match[2] === '' && (match[3] === undefined || match[3] === ''))) throw new Error(`${JSON.stringify(value)} is not a decimal number`);
  const fraction = match[3] || '';
  const coef = BigInt((match[1] === '-' ? '-' : '') + (match[2] + fraction || '0'));
  return { coef, exp: Number(match[4] || 0) - fraction.length };
}

function align(a, b) {
  const exp = Math.min(a.exp, b.exp);
  return [a.coef * 10n ** BigInt(a.exp - exp), b.coef * 10n ** BigInt(b.exp - exp), exp];
}

const add = (a, b) => { const [x, y, exp] = align(a, b); return { coef: x + y, exp }; };
const sub = (a, b) => add(a, { coef: -b.coef, exp: b.exp });
const mul = (a, b) => ({ coef: a.coef * b.coef, exp: a.exp + b.exp });
function cmp(a, b) {
  const [x, y] = align(a, b);
  if (x === y) return 0;
  return x < y ? -1 : 1;
}
const ZERO = { coef: 0n, exp: 0 };

// Round to a multiple of `step` (for example 0.01), halves away from zero.
function quantize(value, step) {
  let num = value.coef * 10n ** BigInt(Math.max(0, value.exp - step.exp));
  const den = step.coef * 10n ** BigInt(Math.max(0, step.exp - value.exp));
  const negative = num < 0n;
  if (negative) num = -num;
  let units = num / den;
  if (2n * (num % den) >= den) units += 1n;
  return { coef: (negative ? -units : units) * step.coef, exp: step.exp };
}

// The text Python's Decimal prints for the same coefficient and exponent (no exponent form needed here).
function show(value) {
  const negative = value.coef < 0n;
  let digits = (negative ? -value.coef : value.coef).toString();
  if (value.exp >= 0) return (negative ? '-' : '') + digits + '0'.repeat(value.exp);
  const places = -value.exp;
  digits = digits.padStart(places + 1, '0');
  return `${negative ? '-' : ''}${digits.slice(0, -places)}.${digits.slice(-places)}`;
}

function voucherValue(voucher) {
  const c = voucher.credentialSubject;
  return {
    id: c.voucher_id, seq: c.seq, contract: c.contract, anchor: c.anchor, date: c.period.plant_date,
    point: dec(c.delta.point), low: dec(c.delta.low), running: Boolean(c.reporting.running_day), sufficient: Boolean(c.sufficiency.ok),
  };
}

function priceAnchor(contract, anchorId, values) {
  const anchor = contract.anchors.find((a) => a.id === anchorId);
  if (!anchor || !anchor.price) throw new Error(`anchor ${anchorId} has no price in contract.json`);
  const kind = anchor.price.per;
  const mode = contract.settlement;
  const unit = dec(anchor.price.amount);
  const latest = new Map();
  for (const value of values) {
    const key = `${value.anchor}\n${value.date}`;
    const held = latest.get(key);
    if (!held || value.seq > held.seq || (value.seq === held.seq && value.id > held.id)) latest.set(key, value);
  }
  const kept = [...latest.values()].sort((a, b) => (a.date + a.id < b.date + b.id ? -1 : 1));
  const counted = kept.filter((v) => v.sufficient && (kind === 'avoided_minute' || v.running));
  const total = counted.reduce((sum, v) => add(sum, mode === 'lower_bound' ? v.low : v.point), ZERO);
  let quantity = total;
  if (kind === 'target_met') {
    const target = dec(anchor.target);
    quantity = counted.length && cmp(total, mul(target, { coef: BigInt(counted.length), exp: 0 })) >= 0 ? dec(1) : dec(0);
  }
  let amount = mul(quantity, unit);
  let capApplied = false;
  let floorApplied = false;
  const floor = anchor.floor == null ? null : dec(anchor.floor);
  if (counted.length && cmp(amount, floor || ZERO) < 0) [amount, floorApplied] = [floor || ZERO, floor !== null];
  if (!counted.length) amount = ZERO;
  if (anchor.cap != null && cmp(amount, dec(anchor.cap)) > 0) [amount, capApplied] = [dec(anchor.cap), true];
  return {
    kind, mode, unit, quantity, days: counted.length, capApplied, floorApplied,
    amount: quantize(amount, dec(contract.rounding)), voucherIds: counted.map((v) => v.id),
  };
}

// The engine's line for every priced anchor with vouchers in first..last, exclusions listed but not priced.
function computeLines(contract, first, last, values, adjustments) {
  const lines = new Map();
  for (const anchor of contract.anchors) {
    if (!anchor.price) continue;
    const inPeriod = values.filter((v) => v.anchor === anchor.id && first <= v.date && v.date <= last);
    if (!inPeriod.length) continue;
    const priced = [];
    const excluded = new Map();
    for (const value of inPeriod) {
      const covering = adjustments.find((x) => (x.anchor == null || x.anchor === value.anchor) && x.first_date <= value.date && value.date <= x.last_date);
      if (covering) excluded.set(value.id, covering.id);
      else priced.push(value);
    }
    lines.set(anchor.id, { charge: priceAnchor(contract, anchor.id, priced), excluded });
  }
  return lines;
}

module.exports = { dec, add, sub, cmp, quantize, show, ZERO, voucherValue, priceAnchor, computeLines };
