// Runs every JSON vector through the browser implementation; returns a list of failures.
// Evaluated by Playwright inside Chromium with the vectors as its argument.
async (vectors) => {
  const P = await import("/static/js/crypto/primitives.js");
  const X = await import("/static/js/crypto/x3dh.js");
  const { Ratchet } = await import("/static/js/crypto/ratchet.js");
  const SK = await import("/static/js/crypto/senderkeys.js");
  const S = await import("/static/js/crypto/safety.js");
  const PW = await import("/static/js/crypto/pairwise.js");
  const SF = await import("/static/js/crypto/sframe.js");
  const failures = [];
  const u = P.unb64;
  const same = (a, b) => P.toHex(a) === P.toHex(b);
  const check = (ok, what) => { if (!ok) failures.push(what); };
  const refused = async (fn, code, what) => {
    try { await fn(); failures.push(`${what}: accepted`); }
    catch (e) { if (e.code !== code) failures.push(`${what}: ${e.code || e} instead of ${code}`); }
  };
  let checked = 0;

  // X3DH
  for (const c of vectors.x3dh.cases) {
    const alice = { dh: await P.dhKeyPair(u(c.alice.identity_private)),
                    signing: await P.signingKeyPair(u(c.alice.signing_private)) };
    const bob = { dh: await P.dhKeyPair(u(c.bob.identity_private)),
                  signing: await P.signingKeyPair(u(c.bob.signing_private)) };
    const b = c.bundle;
    const bundle = { identityKey: u(b.identity_key), signingKey: u(b.signing_key),
      identitySig: u(b.identity_sig), spkId: b.spk_id, spk: u(b.spk), spkSig: u(b.spk_sig),
      opkId: b.opk_id, opk: b.opk ? u(b.opk) : null };
    check(same(await X.identitySig(bob), bundle.identitySig), `x3dh ${c.name}: identity sig`);
    const eph = u(c.alice.ephemeral_private);
    const out = await X.initiate(alice, bundle, () => eph);
    check(P.b64(out.secret) === c.shared_secret, `x3dh ${c.name}: secret`);
    check(P.b64(out.ad) === c.associated_data, `x3dh ${c.name}: ad`);
    const spk = await P.dhKeyPair(u(c.bob.spk_private));
    const opk = c.bob.opk_private ? await P.dhKeyPair(u(c.bob.opk_private)) : null;
    const back = await X.respond(bob, spk, opk, out.header);
    check(P.b64(back.secret) === c.shared_secret, `x3dh ${c.name}: responder secret`);
    checked++;
  }
  for (const bad of vectors.x3dh.invalid_bundles) {
    const b = bad.bundle;
    const bundle = { identityKey: u(b.identity_key), signingKey: u(b.signing_key),
      identitySig: u(b.identity_sig), spkId: b.spk_id, spk: u(b.spk), spkSig: u(b.spk_sig) };
    await refused(async () => X.initiate(await X.generateIdentity(), bundle), bad.error, bad.name);
  }

  // Double Ratchet transcript
  const r = vectors.ratchet;
  const rng = new P.FixedRandom(r.random.seed);
  const secret = await rng.next(32);
  const ad = await rng.next(96);
  check(P.b64(secret) === r.shared_secret, "ratchet: seeded secret");
  const bobSpk = await P.generateDH(rng);
  const parties = { alice: await Ratchet.forInitiator(secret, ad, bobSpk.public, rng),
                    bob: Ratchet.forResponder(secret, ad, bobSpk) };
  for (const op of r.operations) {
    const ratchet = parties[op.by];
    if (op.op === "encrypt") {
      const [h, ct] = await ratchet.encrypt(P.utf8(op.plaintext));
      check(P.b64(h) === op.header && P.b64(ct) === op.ciphertext, `ratchet: encrypt ${op.plaintext}`);
      check(P.fromUtf8(PW.encode(null, h, ct)) === op.wire, `ratchet: wire ${op.plaintext}`);
    } else if (op.op === "decrypt") {
      const pt = await ratchet.decrypt(u(op.header), u(op.ciphertext), rng);
      check(P.fromUtf8(pt) === op.plaintext, `ratchet: decrypt ${op.plaintext}`);
    } else {
      const before = JSON.stringify(ratchet.toJSON());
      await refused(() => ratchet.decrypt(u(op.header), u(op.ciphertext), rng), op.error,
                    `ratchet: ${op.case}`);
      check(JSON.stringify(ratchet.toJSON()) === before, `ratchet: ${op.case} changed state`);
    }
    checked++;
  }

  // Sender keys
  const s = vectors.senderkey;
  const inbound = SK.InboundSenderKey.fromShare(s.share);
  for (const i of s.receive_order) {
    const m = s.messages[i];
    const pt = await inbound.decrypt(s.conversation_id, SK.decode(m.body));
    check(P.fromUtf8(pt) === m.plaintext, `senderkey: message ${i}`);
    checked++;
  }
  for (const c of s.invalid) {
    const receiver = c.after_all ? inbound : SK.InboundSenderKey.fromShare(s.share);
    await refused(() => receiver.decrypt(c.conversation_id || s.conversation_id, SK.decode(c.body)),
                  c.error, `senderkey: ${c.name}`);
  }
  const late = SK.InboundSenderKey.fromShare(s.share_after_5);
  for (const m of s.messages) {
    await refused(() => late.decrypt(s.conversation_id, SK.decode(m.body)), s.late_joiner.error,
                  `senderkey: late joiner reads ${m.iteration}`);
  }
  // Re-create the chain from the vector's seed and compare the wire bytes.
  const outbound = await SK.OutboundSenderKey.generate(new P.FixedRandom("senderkey/chain"), 0);
  check(P.canonicalJson(outbound.share()) === P.canonicalJson(s.share), "senderkey: share");
  for (const m of s.messages) {
    const body = await outbound.encrypt(s.conversation_id, s.device_id, P.utf8(m.plaintext));
    check(P.fromUtf8(body) === m.body, `senderkey: encrypt ${m.iteration}`);
  }

  // Safety numbers
  const sv = vectors.safety;
  const key = (party) => S.partyKey(party.devices.map(([d, sk, ik]) => [d, u(sk), u(ik)]));
  check(await S.fingerprint("alice", key(sv.alice)) === sv.alice_fingerprint, "safety: alice");
  check(await S.safetyNumber("bob", key(sv.bob), "alice", key(sv.alice)) === sv.safety_number,
        "safety: number");

  // RFC 8032
  for (const c of vectors.rfc8032.cases) {
    const pair = await P.signingKeyPair(P.hex(c.secret));
    check(P.toHex(pair.public) === c.public, `rfc8032 ${c.name}: public`);
    check(P.toHex(await P.sign(pair.private, P.hex(c.message))) === c.signature, `rfc8032 ${c.name}: sig`);
  }

  // Wycheproof, through the same wrappers
  for (const g of vectors.x25519.testGroups) for (const t of g.tests) {
    const shared = P.hex(t.shared);
    if (t.result === "invalid" || shared.every((b) => b === 0)) {
      await refused(() => P.dh(P.hex(t.private), P.hex(t.public)), "bad_key", `x25519 ${t.tcId}`);
    } else {
      try {
        check(same(await P.dh(P.hex(t.private), P.hex(t.public)), shared), `x25519 ${t.tcId}`);
      } catch (e) { failures.push(`x25519 ${t.tcId}: ${e.code || e}`); }
    }
    checked++;
  }
  for (const g of vectors.ed25519.testGroups) for (const t of g.tests) {
    const pk = P.hex(g.publicKey.pk);
    if (t.result === "valid") {
      try { await P.verify(pk, P.hex(t.msg), P.hex(t.sig)); }
      catch (e) { failures.push(`ed25519 ${t.tcId}: rejected`); }
    } else {
      await refused(() => P.verify(pk, P.hex(t.msg), P.hex(t.sig)), "bad_signature", `ed25519 ${t.tcId}`);
    }
    checked++;
  }
  for (const g of vectors.aes_gcm.testGroups) {
    if (g.keySize !== 256 || g.ivSize !== 96 || g.tagSize !== 128) continue;
    for (const t of g.tests) {
      const sealed = P.concat(P.hex(t.ct), P.hex(t.tag));
      if (t.result === "valid") {
        const pt = await P.aeadDecrypt(P.hex(t.key), P.hex(t.iv), sealed, P.hex(t.aad));
        check(P.toHex(pt) === t.msg, `aes-gcm ${t.tcId}`);
      } else {
        await refused(() => P.aeadDecrypt(P.hex(t.key), P.hex(t.iv), sealed, P.hex(t.aad)),
                      "bad_tag", `aes-gcm ${t.tcId}`);
      }
      checked++;
    }
  }
  for (const g of vectors.hkdf.testGroups) for (const t of g.tests) {
    if (t.result !== "valid") continue;
    const okm = await P.hkdf(P.hex(t.ikm), P.hex(t.salt), P.hex(t.info), Number(t.size));
    check(P.toHex(okm) === t.okm, `hkdf ${t.tcId}`);
    checked++;
  }
  for (const g of vectors.hmac.testGroups) for (const t of g.tests) {
    const tag = await P.hmacSha256(P.hex(t.key), P.hex(t.msg));
    const matches = P.toHex(tag.slice(0, g.tagSize / 8)) === t.tag;
    check(matches === (t.result === "valid"), `hmac ${t.tcId}`);
    checked++;
  }

  // SFrame (RFC 9605): headers, the RFC's known answer, the media framing and its ratchet.
  const sf = vectors.sframe;
  for (const h of sf.headers) {
    check(P.toHex(SF.encodeHeader(BigInt(h.kid), BigInt(h.ctr))) === h.encoded, `sframe header ${h.kid}/${h.ctr}`);
    const [kid, ctr, size] = SF.parseHeader(P.hex(h.encoded));
    check(kid === BigInt(h.kid) && ctr === BigInt(h.ctr) && size === h.encoded.length / 2, `sframe parse ${h.encoded}`);
    checked++;
  }
  const rfc = sf.rfc9605;
  const rk = await SF.derive(P.hex(rfc.base_key), rfc.kid);
  check(P.toHex(rk.key) === rfc.sframe_key && P.toHex(rk.salt) === rfc.sframe_salt, "sframe rfc9605 key");
  check(P.toHex(await SF.encrypt(rk, rfc.ctr, P.hex(rfc.metadata), P.hex(rfc.pt))) === rfc.ct, "sframe rfc9605 ct");
  const rpt = await SF.decrypt((k) => (k === rk.kid ? rk : undefined), P.hex(rfc.metadata), P.hex(rfc.ct));
  check(P.toHex(rpt) === rfc.pt, "sframe rfc9605 decrypt");
  let base = u(sf.generations[0].base_key);
  for (const g of sf.generations) {
    check(P.b64(base) === g.base_key, `sframe ratchet ${g.kid}`);
    const d = await SF.derive(base, g.kid);
    check(P.b64(d.key) === g.key && P.b64(d.salt) === g.salt, `sframe derive ${g.kid}`);
    base = await SF.ratchet(base);
    checked++;
  }
  const first = await SF.derive(u(sf.generations[0].base_key), sf.generations[0].kid);
  const keys = (k) => (k === first.kid ? first : undefined);
  for (const f of sf.frames) {
    const wire = u(f.wire);
    check(P.b64(await SF.protect(first, f.ctr, u(f.plain), f.kind)) === f.wire, `sframe protect ${f.kind}`);
    check(P.b64(await SF.unprotect(keys, wire, f.kind)) === f.plain, `sframe unprotect ${f.kind}`);
    for (const at of [0, SF.CLEAR_BYTES[f.kind], wire.length - 1]) {
      const bad = wire.slice();
      bad[at] ^= 1;
      await refused(() => SF.unprotect(keys, bad, f.kind), "bad_frame", `sframe tampered ${f.kind}@${at}`);
    }
    await refused(() => SF.unprotect(() => undefined, wire, f.kind), "unknown_key", `sframe no key ${f.kind}`);
    checked++;
  }
  // Suggested replies: the served pack, then the same tokens, scores and chips as Python.
  const SG = await import("/static/js/suggest.js");
  const sg = vectors.suggest;
  const pack = await SG.fetchPack();
  check(pack.sha256 === sg.pack_sha256, `suggest: served pack ${pack.sha256}`);
  for (const f of sg.fnv1a) check(SG.fnv1a(f.text) === f.hash, `suggest fnv1a ${JSON.stringify(f.text)}`);
  for (const c of sg.cases) {
    const what = `suggest ${JSON.stringify(c.text).slice(0, 40)}`;
    const tokens = pack.context(c.text, c.earlier);
    check(JSON.stringify(tokens) === JSON.stringify(c.tokens), `${what}: tokens ${JSON.stringify(tokens)}`);
    const answered = pack.answered(c.own);
    check(JSON.stringify(answered) === JSON.stringify(c.answered), `${what}: answered ${JSON.stringify(answered)}`);
    check(JSON.stringify(pack.scores(tokens, answered)) === JSON.stringify(c.scores), `${what}: scores`);
    const verdict = pack.decide(c.text, c.lang, c.earlier, c.own);
    check(verdict.silent === c.silent, `${what}: silent ${verdict.silent}`);
    const got = verdict.suggestions.map((x) => [x.intent, x.text]);
    check(JSON.stringify(got) === JSON.stringify(c.suggestions), `${what}: ${JSON.stringify(got)}`);
    checked++;
  }
  for (const a of sg.answered) {
    check(pack.answeredWith(a.text) === a.intent, `suggest answered ${JSON.stringify(a)}`);
    checked++;
  }
  for (const l of sg.languages) {
    check(pack.language(l.own, l.fallback) === l.language, `suggest language ${JSON.stringify(l)}`);
    checked++;
  }
  // Attachments: the same chunks as Python, the same refusals, the same reading of pointers.
  const AC = await import("/static/js/crypto/attachment.js");
  const AT = await import("/static/js/attachments.js");
  for (const f of vectors.attachment.files) {
    const key = u(f.key);
    const sealed = f.chunks.map(u);
    const last = sealed.length - 1;
    check(AC.ciphertextSize(u(f.plain).length, f.chunk) === f.ciphertext_size, `attachment size ${f.ciphertext_size}`);
    const opened = [];
    for (let i = 0; i <= last; i++) {
      const plain = u(f.plain).subarray(i * f.chunk, (i + 1) * f.chunk);
      check(same(await AC.encryptChunk(key, i, i === last, plain), sealed[i]), `attachment encrypt ${f.ciphertext_size}/${i}`);
      opened.push(...(await AC.decryptChunk(key, i, i === last, sealed[i])));
    }
    check(P.b64(new Uint8Array(opened)) === f.plain, `attachment decrypt ${f.ciphertext_size}`);
    if (last >= 1) {
      await refused(() => AC.decryptChunk(key, 0, false, sealed[1]), "bad_attachment", "attachment reordered");
      await refused(() => AC.decryptChunk(key, last - 1, true, sealed[last - 1]), "bad_attachment", "attachment cut short");
    }
    await refused(() => AC.decryptChunk(key, last, false, sealed[last]), "bad_attachment", "attachment last as inner");
    checked++;
  }
  for (const p of vectors.attachment.pointers) {
    const got = AT.parse(P.utf8(p.body));
    const shown = got && { blob: got.blob, type: got.type, name: got.name, caption: got.caption, size: got.size,
      width: got.width, height: got.height, duration_ms: got.durationMs, thumb: got.thumb ? P.b64(got.thumb) : null };
    const sorted = (o) => o && JSON.stringify(Object.keys(o).sort().map((k) => [k, o[k]]));
    check(sorted(shown) === sorted(p.parsed), `attachment pointer ${p.body.slice(0, 60)}: ${JSON.stringify(shown)}`);
    checked++;
  }
  return { failures, checked };
}
