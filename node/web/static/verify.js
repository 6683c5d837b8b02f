// The browser's own check of a lookup answer, as `markex lookup` does it
// (node/lookup.py verify_answer, open_view; ledger/viewtree.py proof_root,
// PROOF_VERSION 3): the view checkpoint's signature by the node that served
// it, member cosignatures (C2SP tlog-cosignature v1) at a fresh time and
// their quorum, the checkpoint's age, the sparse Merkle proof of the entry
// (or its absence) and that the entry is for the number asked.
// verifyAnswer never throws: it returns {ok, signer, cosigners, members, why}.
import * as ed from './vendor/noble-ed25519/index.js';
import { sha256, sha512 } from './vendor/noble-hashes/sha2.js';

ed.hashes.sha512 = sha512;

const enc = new TextEncoder();
const HASH = 32;
const DEPTH = 64;
const WIDE_FROM = 24;
const BITMAP_BITS = 184;
const BITMAP_BYTES = 23;
const PROOF_VERSION = 3;
const MAX_LISTED = 255;
const EMPTY = new Uint8Array(HASH);
const KEY_CONTEXT = enc.encode('markex/v1/view/key\x00');

class Refused extends Error {}

function concat(...parts) {
  const n = parts.reduce((a, p) => a + p.length, 0);
  const out = new Uint8Array(n);
  let off = 0;
  for (const p of parts) { out.set(p, off); off += p.length; }
  return out;
}

function equal(a, b) {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function compare(a, b) {
  for (let i = 0; i < Math.min(a.length, b.length); i++) {
    if (a[i] !== b[i]) return a[i] - b[i];
  }
  return a.length - b.length;
}

function hex(b) {
  return Array.from(b, (x) => x.toString(16).padStart(2, '0')).join('');
}

// Standard base64, canonical only (it must encode back to the same text).
function b64(text, what) {
  let bin;
  try { bin = atob(text); } catch (e) { throw new Refused(`${what} is not base64`); }
  const out = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  if (btoa(bin) !== text) throw new Refused(`${what} is not canonical base64`);
  return out;
}

const sha = (...parts) => sha256(concat(...parts));
const u8 = (...xs) => Uint8Array.from(xs);

// ---------------------------------------------------------------- notes

function keyId(name, type, pub) {
  return sha(enc.encode(name + '\n'), u8(type), pub).slice(0, 4);
}

function parseNote(data) {
  const split = data.lastIndexOf('\n\n');
  if (split < 0) throw new Refused('the note has no blank line before its signatures');
  const text = data.slice(0, split + 1);
  const block = data.slice(split + 2);
  if (!block.endsWith('\n')) throw new Refused('the note does not end with a signature line');
  const sigs = block.slice(0, -1).split('\n').map((line) => {
    if (!line.startsWith('\u2014 ')) throw new Refused('a signature line does not start with an em dash');
    const rest = line.slice(2);
    const sp = rest.indexOf(' ');
    if (sp <= 0) throw new Refused('a signature line has no signature');
    const raw = b64(rest.slice(sp + 1), 'a signature');
    if (raw.length <= 4) throw new Refused('a signature is shorter than a key id');
    return { name: rest.slice(0, sp), keyId: raw.slice(0, 4), sig: raw.slice(4) };
  });
  return { text, sigs };
}

const DECIMAL = /^(0|[1-9][0-9]*)$/;
const ISSUER = /^[A-Za-z0-9._-]{1,64}$/;

function parseViewCheckpoint(text) {
  const lines = text.slice(0, -1).split('\n');
  if (!text.endsWith('\n') || lines.length !== 5 || lines.some((l) => !l)) {
    throw new Refused('the view checkpoint does not have its five lines');
  }
  const [origin, count, root64, vector, stamp] = lines;
  if (!DECIMAL.test(count)) throw new Refused('the view checkpoint size is not a decimal');
  const root = b64(root64, 'the view root');
  if (root.length !== HASH) throw new Refused('the view root is not 32 bytes');
  const words = vector.split(' ');
  if (words[0] !== 'vector') throw new Refused("the fourth line does not start with 'vector'");
  const items = words.slice(1).map((w) => {
    const eq = w.indexOf('=');
    const issuer = w.slice(0, eq);
    const seq = w.slice(eq + 1);
    if (eq < 0 || !ISSUER.test(issuer) || !DECIMAL.test(seq) || seq === '0') {
      throw new Refused(`vector item ${w.slice(0, 80)} is not <issuer>=<seq>`);
    }
    return issuer;
  });
  for (let i = 1; i < items.length; i++) {
    if (!(items[i - 1] < items[i])) throw new Refused('the vector is not sorted');
  }
  const m = /^signed-at-ms (0|[1-9][0-9]*)$/.exec(stamp);
  if (!m) throw new Refused("the fifth line is not 'signed-at-ms <ms>'");
  return { origin, count: Number(count), root, signedAtMs: Number(m[1]) };
}

// The view checkpoint signed by its node and the fresh cosignatures of the others.
function openView(trust, noteText) {
  const note = parseNote(noteText);
  const origin = note.text.split('\n', 1)[0];
  const signer = trust.members.find((p) => origin === `${trust.consortium}/view/${p.id}`);
  if (!signer) throw new Refused(`the view checkpoint's origin ${origin.slice(0, 80)} names no node of the consortium`);
  const signerKey = b64(signer.public_key, 'a member key');
  const textBytes = enc.encode(note.text);
  const ownId = keyId(origin, 0x01, signerKey);
  let signed = false;
  for (const s of note.sigs) {
    if (s.name === origin && equal(s.keyId, ownId)) {
      if (!ed.verify(s.sig, textBytes, signerKey, { zip215: false })) {
        throw new Refused(`${signer.id}'s signature on the view checkpoint does not verify`);
      }
      signed = true;
    }
  }
  if (!signed) throw new Refused(`the view checkpoint is not signed by ${signer.id}'s known key`);
  const cp = parseViewCheckpoint(note.text);
  const cosignedAt = new Map();
  for (const p of trust.members) {
    if (p.id === signer.id) continue;
    const name = `${trust.consortium}/witness/${p.id}`;
    const pub = b64(p.public_key, 'a member key');
    const id = keyId(name, 0x04, pub);
    for (const s of note.sigs) {
      if (s.name !== name || !equal(s.keyId, id)) continue;
      if (s.sig.length !== 72) throw new Refused(`${p.id}'s cosignature is not 8 + 64 bytes`);
      const t = new DataView(s.sig.buffer, s.sig.byteOffset, 8).getBigUint64(0);
      if (t > 2n ** 63n - 1n) throw new Refused(`${p.id}'s cosignature time is above 2^63-1`);
      const msg = enc.encode(`cosignature/v1\ntime ${t}\n${note.text}`);
      if (!ed.verify(s.sig.slice(8), msg, pub, { zip215: false })) {
        throw new Refused(`${p.id}'s cosignature does not verify`);
      }
      cosignedAt.set(p.id, Math.max(Number(t), cosignedAt.get(p.id) ?? 0));
    }
  }
  return { cp, signer: signer.id, cosignedAt };
}

// ---------------------------------------------------------------- the view proof

function decodeProof(data) {
  if (data.length < 2 || data[0] !== PROOF_VERSION) {
    throw new Refused(`view proof version ${data[0]} is not ${PROOF_VERSION}`);
  }
  const n = data[1];
  let off = 2 + 2 * HASH * n;
  if (data.length < off + BITMAP_BYTES) throw new Refused('the view proof is truncated');
  const listed = [];
  for (let i = 0; i < n; i++) {
    const at = 2 + 2 * HASH * i;
    listed.push([data.slice(at, at + HASH), data.slice(at + HASH, at + 2 * HASH)]);
  }
  const bitmap = BigInt('0x' + (hex(data.slice(off, off + BITMAP_BYTES)) || '0'));
  off += BITMAP_BYTES;
  let m = 0;
  for (let b = bitmap; b; b >>= 1n) m += Number(b & 1n);
  if (data.length !== off + HASH * m) throw new Refused('the view proof siblings do not match its bitmap');
  const siblings = [];
  for (let i = 0; i < m; i++) siblings.push(data.slice(off + HASH * i, off + HASH * (i + 1)));
  return { listed, bitmap, siblings };
}

function wideHash(d, kids) {
  const idx = [...kids.keys()].sort((a, b) => a - b);
  if (idx.length === 1) return sha(u8(0x07, d, idx[0]), kids.get(idx[0]));
  let mask = 0;
  for (const i of idx) mask |= 1 << (15 - i);
  return sha(u8(0x06, d, mask >> 8, mask & 0xff), ...idx.map((i) => kids.get(i)));
}

// ledger/viewtree.py proof_root: the root `proof` leads to for `key` holding `entry`.
function proofRoot(key, entry, proof) {
  const pos = BigInt('0x' + hex(key.slice(0, 8)));
  const prefix = key.slice(0, 8);
  if (proof.listed.length > MAX_LISTED) throw new Refused('the view proof lists too many entries');
  let prev = new Uint8Array(0);
  for (const [k] of proof.listed) {
    if (!equal(k.slice(0, 8), prefix)) throw new Refused('a listed entry is not at the number\'s position');
    if (equal(k, key)) throw new Refused("the proof lists the number's own key");
    if (compare(k, prev) <= 0) throw new Refused('the listed entries are not sorted by key');
    prev = k;
  }
  const members = proof.listed.slice();
  if (entry !== null) members.push([key, entry]);
  members.sort((a, b) => compare(a[0], b[0]) || compare(a[1], b[1]));
  let x = members.length ? sha(u8(0x03), ...members.flat()) : null;
  let next = 0;
  const sibling = () => {
    const s = proof.siblings[next++];
    if (equal(s, EMPTY)) throw new Refused('a sibling is given as an empty subtree');
    return s;
  };
  for (let d = DEPTH - 4; d >= WIDE_FROM; d -= 4) {
    const bit0 = WIDE_FROM + (((d - WIDE_FROM) >> 2) << 4);
    const mask = Number((proof.bitmap >> BigInt(BITMAP_BITS - bit0 - 16)) & 0xffffn);
    const own = Number((pos >> BigInt(DEPTH - d - 4)) & 0xfn);
    if (!mask) {
      if (x !== null) x = sha(u8(0x07, d, own), x);
      continue;
    }
    if ((mask >> (15 - own)) & 1) throw new Refused("the proof names the number's own child as a sibling");
    const kids = new Map();
    for (let i = 15; i >= 0; i--) if ((mask >> (15 - i)) & 1) kids.set(i, sibling());
    if (x !== null) kids.set(own, x);
    x = wideHash(d, kids);
  }
  for (let d = WIDE_FROM - 1; d >= 0; d--) {
    const bit = Number((pos >> BigInt(DEPTH - 1 - d)) & 1n);
    if ((proof.bitmap >> BigInt(BITMAP_BITS - 1 - d)) & 1n) {
      const s = sibling();
      if (x === null) x = sha(u8(0x05, 2 * d + 1 - bit), s);
      else x = sha(u8(0x04), bit ? s : x, bit ? x : s);
    } else if (x !== null) {
      x = sha(u8(0x05, 2 * d + bit), x);
    }
  }
  return x === null ? EMPTY : x;
}

/** The root a view proof (base64) leads to for a key and an entry hash (hex, or null). */
export function proofRootHex(keyHex, entryHashHex, proofB64) {
  const fromHex = (h) => Uint8Array.from(h.match(/../g) || [], (x) => parseInt(x, 16));
  const eh = entryHashHex === null ? null : fromHex(entryHashHex);
  return hex(proofRoot(fromHex(keyHex), eh, decodeProof(b64(proofB64, 'the view proof'))));
}


// ---------------------------------------------------------------- the entry evaluated

const REASONS = ['withdrawn', 'appeal upheld', 'reassigned', 'protected', 'expired', 'superseded'];

// Lexicographic order of [number | string, ...] tuples, as Python compares them.
function cmpTuple(a, b) {
  for (let i = 0; i < a.length; i++) {
    if (a[i] < b[i]) return -1;
    if (a[i] > b[i]) return 1;
  }
  return 0;
}

/** ledger/view.py Entry.evaluate(atMs) on the entry's JSON, as Resolution.to_json gives it. */
export function evaluateEntry(entry, atMs) {
  const cats = new Map(entry.categories.map(([id, rank, risk]) => [id, { rank, risk }]));
  const info = (c) => cats.get(c) || { rank: 0, risk: true };
  const categoryAt = (m) => {
    let cat = m.category;
    for (const [at, c] of m.recategorized) if (at <= atMs) cat = c;
    return cat;
  };
  const whyNot = (m, cat) => {
    const found = m.set_aside
      .filter(([since]) => since <= atMs)
      .map(([since, reason, ref]) => [since, REASONS.indexOf(reason), reason, ref]);
    for (const p of entry.protections) {
      if (p.category === cat && m.observed_at < p.until) {
        const since = Math.max(m.observed_at, p.since);
        if (since <= atMs) found.push([since, REASONS.indexOf('protected'), 'protected', p.decision]);
      }
    }
    if (atMs >= m.expires_at) found.push([m.expires_at, REASONS.indexOf('expired'), 'expired', '']);
    return found.length ? found.sort(cmpTuple)[0] : null;
  };
  const live = [];
  const aside = [];
  for (const m of entry.marks) {
    if (m.observed_at > atMs) continue;
    const cat = categoryAt(m);
    const why = whyNot(m, cat);
    if (why === null) live.push([m, cat]);
    else aside.push({ participant: m.by, record_id: m.id, category: cat, reason: why[2], since: why[0], ref: why[3] });
  }
  const issueKey = (m) => [m.issued_at, m.seq, m.id];
  const latest = new Map();
  for (const [m, cat] of live) {
    const cur = latest.get(m.by);
    if (!cur || cmpTuple(issueKey(m), issueKey(cur[0])) > 0) latest.set(m.by, [m, cat]);
  }
  for (const [m, cat] of live) {
    const win = latest.get(m.by)[0];
    if (win !== m) {
      aside.push({ participant: m.by, record_id: m.id, category: cat, reason: 'superseded', since: win.observed_at, ref: win.id });
    }
  }
  const counting = [...latest.values()].sort((a, b) => cmpTuple([a[0].by, a[0].id], [b[0].by, b[0].id]));
  const combined = combine(entry.rules, info, counting);
  const { category, score } = combined;
  // ledger/view/resolution.py: distinct complainants about calls in the window raise the risk.
  const rules = entry.rules;
  const tags = new Set(entry.complaints
    .filter((c) => c.call_at <= atMs && atMs < c.call_at + rules.complaint_risk_window_ms)
    .map((c) => c.tag));
  let { risk } = combined;
  const RISKS = ['none', 'medium', 'high'];
  if (rules.complaint_risk_complainants && tags.size >= rules.complaint_risk_complainants
      && RISKS.indexOf(rules.complaint_risk) > RISKS.indexOf(risk)) risk = rules.complaint_risk;
  const markers = counting.map(([m, cat]) => ({
    participant: m.by, role: m.role, record_id: m.id, category: cat, score: m.score,
    reports: m.reports, observed_at: m.observed_at, expires_at: m.expires_at,
    recategorized: m.recategorized.some(([at]) => at <= atMs),
  }));
  aside.sort((a, b) => cmpTuple([a.participant, a.record_id], [b.participant, b.record_id]));
  const appeals = [];
  for (const a of entry.appeals) {
    if (atMs < a.filed_at) continue;
    const closed = a.closed_at !== null && atMs >= a.closed_at;
    appeals.push({
      appeal_id: a.id, appellant: a.by, targets: a.targets, status: closed ? a.status : 'pending',
      filed_at: a.filed_at, decided_at: closed ? a.closed_at : null, decision_id: closed ? a.closed_by : '',
    });
  }
  let appeal = 'none';
  if (appeals.some((x) => x.status === 'pending')) appeal = 'pending';
  else if (appeals.length) {
    appeal = appeals.reduce((best, x) => (
      cmpTuple([x.decided_at || 0, x.appeal_id], [best.decided_at || 0, best.appeal_id]) > 0 ? x : best)).status;
  }
  const tenure = entry.reassignments.map((x) => x.effective_at).filter((t) => t <= atMs);
  return {
    category, risk, score, markers, set_aside: aside, appeal, appeals,
    tenure_since: tenure.length ? Math.max(...tenure) : null, complainants: tags.size,
  };
}

function combine(rules, info, counting) {
  const weight = new Map();
  const who = new Map();
  const riskBy = new Set();
  let riskWeight = 0;
  let instituteRisk = false;
  for (const [m, cat] of counting) {
    weight.set(cat, (weight.get(cat) || 0) + m.weight);
    if (!who.has(cat)) who.set(cat, new Set());
    who.get(cat).add(m.by);
    if (info(cat).risk) {
      riskBy.add(m.by);
      riskWeight += m.weight;
      instituteRisk = instituteRisk || m.role === 'institute';
    }
  }
  let risk = 'none';
  if ((instituteRisk && rules.institute_mark_is_high_risk)
      || (riskBy.size && riskBy.size >= rules.high_risk_min_participants)) risk = 'high';
  else if (riskBy.size) risk = 'medium';
  const best = (risky) => {
    const cands = [...weight.keys()].filter((c) => info(c).risk === risky);
    if (!cands.length) return null;
    return cands.sort((a, b) => cmpTuple([-weight.get(a), -info(a).rank, a], [-weight.get(b), -info(b).rank, b]))[0];
  };
  const bestRisk = best(true);
  const bestIdentity = best(false);
  let category = bestRisk;
  if (bestIdentity !== null && (bestRisk === null || (
    who.get(bestIdentity).size >= rules.identity_min_participants
    && weight.get(bestIdentity) > riskWeight && !instituteRisk))) category = bestIdentity;
  let score = 0;
  if (category !== null) {
    let total = 0;
    let num = 0;
    for (const [m, cat] of counting) {
      if (cat === category) { total += m.weight; num += m.weight * m.score; }
    }
    if (total) score = Math.floor((2 * num + total) / (2 * total));
  }
  return { category, risk, score };
}

// JSON with sorted keys: two answers are the same when these strings are.
function canonical(x) {
  if (Array.isArray(x)) return `[${x.map(canonical).join(',')}]`;
  if (x !== null && typeof x === 'object') {
    return `{${Object.keys(x).sort().map((k) => `${JSON.stringify(k)}:${canonical(x[k])}`).join(',')}}`;
  }
  return JSON.stringify(x);
}

const ANSWER_FIELDS = ['category', 'risk', 'score', 'markers', 'set_aside', 'appeal', 'appeals', 'tenure_since'];
const UNMARKED = { category: null, risk: 'none', score: 0, markers: [], set_aside: [], appeal: 'none', appeals: [], tenure_since: null };

// The answer the page shows must be the proven entry's, evaluated here at the answer's time.
function checkAnswer(shown, ours) {
  if (!shown) throw new Refused('the node sent no evaluated answer');
  for (const k of ANSWER_FIELDS) {
    if (canonical(shown[k]) !== canonical(ours[k])) {
      throw new Refused(`the answer's ${k} is not what the proven entry says`);
    }
  }
}

// ---------------------------------------------------------------- the answer

/**
 * Verify the JSON API's answer `api` about `asked` (the number the person
 * asked, from the address bar, never from the answer) with `trust` (the
 * consortium's members and policy) at `nowMs`.
 */
export function verifyAnswer(asked, api, trust, nowMs) {
  const members = trust.members.length;
  try {
    if (api.number !== asked) {
      throw new Refused(`asked about ${asked}, the node answered about ${String(api.number).slice(0, 40)}`);
    }
    const view = openView(trust, api.view_checkpoint);
    const policy = trust.policy;
    const age = nowMs - view.cp.signedAtMs;
    if (age > policy.view_max_age_ms) {
      throw new Refused(`the view checkpoint is ${Math.floor(age / 1000)} s old; the policy allows ${policy.view_max_age_ms / 1000} s`);
    }
    if (-age > policy.clock_skew_ms) throw new Refused('the view checkpoint is signed in the future');
    const fresh = [...view.cosignedAt].filter(
      ([, t]) => nowMs - policy.view_max_age_ms <= t * 1000 && t * 1000 <= nowMs + policy.clock_skew_ms,
    ).map(([id]) => id).sort();
    const key = sha(KEY_CONTEXT, enc.encode(asked));
    const entry = api.entry === null ? null : b64(api.entry, 'the entry');
    let answer = UNMARKED;
    const eh = entry === null ? null : sha(u8(0x00), entry);
    const root = proofRoot(key, eh, decodeProof(b64(api.proof, 'the view proof')));
    if (!equal(root, view.cp.root)) throw new Refused('the view proof does not lead to the view root');
    if (entry !== null) {
      let obj;
      try { obj = JSON.parse(new TextDecoder('ascii', { fatal: true }).decode(entry)); } catch (e) {
        throw new Refused('the proven entry does not decode');
      }
      if (obj.number !== asked) throw new Refused(`the proven entry is for ${String(obj.number).slice(0, 40)}, not ${asked}`);
      if (obj.v !== 3) throw new Refused(`the proven entry is version ${obj.v}, not 3`);
      answer = evaluateEntry(obj, api.at_ms);
    }
    checkAnswer(api.answer, answer);
    const out = { ok: true, signer: view.signer, cosigners: fresh, members, root: hex(root), answer };
    if (fresh.length < policy.cosign_quorum) {
      out.ok = false;
      out.why = `cosigned by ${fresh.length} member(s) at a fresh time; the policy needs ${policy.cosign_quorum}`;
    }
    return out;
  } catch (e) {
    return { ok: false, members, cosigners: [], why: e instanceof Refused ? e.message : `${e.name}: ${e.message}` };
  }
}

// ---------------------------------------------------------------- the node's log

// RFC 9162 2.1.3.2: the root an inclusion path leads to (sizes below 2^53).
function inclusionRoot(leaf, index, size, path) {
  if (!(index < size)) throw new Refused('a record index is beyond the log checkpoint');
  let fn = index;
  let sn = size - 1;
  let r = leaf;
  for (const p of path) {
    if (p.length !== HASH) throw new Refused('an inclusion path hash is not 32 bytes');
    if (sn === 0) throw new Refused('an inclusion path is too long');
    if (fn % 2 === 1 || fn === sn) {
      r = sha(u8(0x01), p, r);
      if (fn % 2 === 0) while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = sha(u8(0x01), r, p);
    }
    fn = Math.floor(fn / 2);
    sn = Math.floor(sn / 2);
  }
  if (sn !== 0) throw new Refused('an inclusion path is too short');
  return r;
}

/** The root (hex) an RFC 9162 inclusion path (hex hashes) leads to; throws when ill formed. */
export function inclusionRootHex(leafHex, index, size, pathHex) {
  const fromHex = (h) => Uint8Array.from(h.match(/../g) || [], (x) => parseInt(x, 16));
  return hex(inclusionRoot(fromHex(leafHex), index, size, pathHex.map(fromHex)));
}

/**
 * The node's log checkpoint (signed by the node that answered, cosigned by
 * members) and each record's leaf at its index under it. Never throws:
 * {ok, proven, total, cosigners, why}. The leaf hashes are the node's: the
 * envelopes stay on the member port (docs/publication.md).
 */
export function verifyLogProofs(api, trust) {
  const records = (api.records || []).filter((x) => x.inclusion);
  const total = (api.records || []).length;
  try {
    if (!total) return { ok: true, proven: 0, total, cosigners: [] };
    if (!api.log_checkpoint) throw new Refused('no log checkpoint was sent');
    const note = parseNote(api.log_checkpoint.note);
    const node = trust.members.find((p) => p.id === api.node);
    if (!node) throw new Refused(`${String(api.node).slice(0, 40)} is not a member`);
    const origin = `${trust.consortium}/log/${node.id}`;
    const pub = b64(node.public_key, 'a member key');
    const lines = note.text.slice(0, -1).split('\n');
    if (lines[0] !== origin || lines.length < 3 || !DECIMAL.test(lines[1])) {
      throw new Refused(`the log checkpoint is not ${node.id}'s`);
    }
    const own = keyId(origin, 0x01, pub);
    const mine = note.sigs.filter((x) => x.name === origin && equal(x.keyId, own));
    if (!mine.length) throw new Refused(`the log checkpoint is not signed by ${node.id}'s known key`);
    for (const x of mine) {
      if (!ed.verify(x.sig, enc.encode(note.text), pub, { zip215: false })) {
        throw new Refused(`${node.id}'s signature on the log checkpoint does not verify`);
      }
    }
    const cosigners = [];
    for (const p of trust.members) {
      if (p.id === node.id) continue;
      const name = `${trust.consortium}/witness/${p.id}`;
      const key = b64(p.public_key, 'a member key');
      const id = keyId(name, 0x04, key);
      for (const x of note.sigs) {
        if (x.name !== name || !equal(x.keyId, id)) continue;
        const t = x.sig.length === 72 ? new DataView(x.sig.buffer, x.sig.byteOffset, 8).getBigUint64(0) : -1n;
        const msg = enc.encode(`cosignature/v1\ntime ${t}\n${note.text}`);
        if (t < 0n || !ed.verify(x.sig.slice(8), msg, key, { zip215: false })) {
          throw new Refused(`${p.id}'s cosignature on the log checkpoint does not verify`);
        }
        if (!cosigners.includes(p.id)) cosigners.push(p.id);
      }
    }
    const size = Number(lines[1]);
    const root = b64(lines[2], 'the log root');
    for (const x of records) {
      if (x.inclusion.size !== size) throw new Refused('an inclusion proof is for another log size');
      const leaf = Uint8Array.from(x.leaf_hash.match(/../g) || [], (h) => parseInt(h, 16));
      const path = x.inclusion.path.map((h) => Uint8Array.from(h.match(/../g) || [], (y) => parseInt(y, 16)));
      if (!equal(inclusionRoot(leaf, x.index, size, path), root)) {
        throw new Refused(`record #${x.index}'s inclusion proof does not lead to the log root`);
      }
    }
    const ok = cosigners.length >= trust.policy.cosign_quorum;
    return { ok, proven: records.length, total, cosigners, why: ok ? undefined : 'the log checkpoint lacks a quorum of cosignatures' };
  } catch (e) {
    return { ok: false, proven: 0, total, cosigners: [], why: e instanceof Refused ? e.message : `${e.name}: ${e.message}` };
  }
}
