// End-to-end encryption in the browser: the port of secureconnect/client/secure.py. The state is
// plain JSON kept in IndexedDB; private keys never leave this browser.
import { allMessages } from "./api.js";
import * as P from "./crypto/primitives.js";
import * as PW from "./crypto/pairwise.js";
import { Ratchet } from "./crypto/ratchet.js";
import * as SK from "./crypto/senderkeys.js";
import * as SAFETY from "./crypto/safety.js";
import * as X from "./crypto/x3dh.js";
import * as store from "./store.js";
import { ATTACHMENT, pointerBody } from "./attachments.js";

const { b64, unb64 } = P;
const PREKEY_STOCK = 100;
const PREKEY_REFILL_BELOW = 50;
const SPK_ROTATE_S = 7 * 24 * 3600;

export class IdentityChangedError extends Error {
  constructor(username) {
    super(`${username}'s keys changed`);
    this.username = username;
  }
}

// Refused before sending: encrypted, it would be over the server's limit. `over` is how many
// characters to take out (charsOver).
export class MessageTooLong extends Error {
  constructor(over, size, limit) {
    super(`message too long: ${over} characters over the limit (${size} bytes once encrypted; the server takes ${limit})`);
    this.code = "too_long";
    this.over = over;
  }
}

// The fewest characters to take off the end of `text` for what is left to fit. Found on the
// exact size rather than by the 16/9 of base64'ing twice: each base64 rounds to whole groups, so
// a ratio can be a few bytes short, and then "take out N" would not be enough.
export function charsOver(text, fits) {
  const chars = [...text];
  let low = 1;
  let high = chars.length;
  while (low < high) {
    const middle = Math.floor((low + high) / 2);
    if (fits(chars.slice(0, chars.length - middle).join(""))) high = middle;
    else low = middle + 1;
  }
  return low;
}

// The message inside the sender-key envelope: its kind, its bytes, what it answers.
function innerOf(contentType, text, replyTo) {
  const envelope = { t: contentType, b: b64(P.utf8(text)) };
  if (replyTo !== null) envelope.r = replyTo;
  return P.utf8(JSON.stringify(envelope));
}

export class SecureClient {
  constructor(api) {
    this.api = api;
    this.state = null;
    this.failed = [];
    this.notices = [];
    this.lock = Promise.resolve();
  }

  // Operations on the state run one at a time: the ratchets must never interleave.
  serial(fn) {
    const run = this.lock.then(fn, fn);
    this.lock = run.catch(() => {});
    return run;
  }

  get deviceId() { return this.state.device_id; }
  get username() { return this.state.username; }

  async start() {
    const me = await this.api.me();
    this.maxMessageBytes = me.max_message_bytes || 65536;
    this.editWindowS = me.edit_window_s ?? 86400;
    const key = `device:${me.username}`;
    let state = await store.load(key);
    if (!state || state.device_id !== me.device_id) state = await this.newDevice(me);
    this.storeKey = key;
    this.state = state;
    await this.rotateSpkIfDue();
    await this.api.publishKeys(await this.publicKeys());
    await this.topUpPrekeys();
    await this.save();
  }

  async newDevice(me) {
    const dhPair = await P.generateLongTerm("X25519");
    const sigPair = await P.generateLongTerm("Ed25519");
    return {
      device_id: me.device_id, user_id: me.user_id, username: me.username, created_at: Date.now(),
      // Non-extractable CryptoKeys: IndexedDB keeps them, no script can read their bytes.
      identity: { dh: dhPair.private, dh_pub: b64(dhPair.public),
                  sig: sigPair.private, sig_pub: b64(sigPair.public) },
      spks: {}, spk_current: 0, opks: {}, next_opk_id: 1, sessions: {}, outbound: {},
      inbound: {}, contacts: {}, messages: {}, requested: [],
    };
  }

  async identity() {
    const id = this.state.identity;
    return { dh: { private: id.dh, public: unb64(id.dh_pub) },
             signing: { private: id.sig, public: unb64(id.sig_pub) } };
  }

  save() { return store.save(this.storeKey, this.state); }

  async rotateSpkIfDue() {
    const spks = this.state.spks;
    const current = spks[this.state.spk_current];
    if (current && Date.now() / 1000 - current.created < SPK_ROTATE_S) return;
    const id = this.state.spk_current + 1;
    spks[id] = { priv: b64((await P.generateDH()).private), created: Date.now() / 1000 };
    this.state.spk_current = id;
    for (const old of Object.keys(spks).map(Number).sort((a, b) => a - b).slice(0, -3)) delete spks[old];
  }

  async publicKeys() {
    const identity = await this.identity();
    const id = this.state.spk_current;
    const spk = await P.dhKeyPair(unb64(this.state.spks[id].priv));
    return { identity_key: b64(identity.dh.public), signing_key: b64(identity.signing.public),
      identity_sig: b64(await X.identitySig(identity)),
      signed_prekey: { id, key: b64(spk.public), signature: b64(await X.signPrekey(identity, id, spk)) } };
  }

  async topUpPrekeys() {
    const { one_time_prekeys: stock } = await this.api.prekeyCount();
    if (stock >= PREKEY_REFILL_BELOW) return;
    const fresh = [];
    for (let n = stock; n < PREKEY_STOCK; n++) {
      const id = this.state.next_opk_id++;
      const pair = await P.generateDH();
      this.state.opks[id] = b64(pair.private);
      fresh.push({ id, key: b64(pair.public) });
    }
    await this.save();
    for (let i = 0; i < fresh.length; i += 100) await this.api.uploadPrekeys(fresh.slice(i, i + 100));
  }

  // ----- sending -------------------------------------------------------------------------------

  // For the composer's counter: the size a text would have once encrypted, exactly as sending
  // will measure it (with a key not made yet, the largest key id a new one can have).
  textSizer(conversationId, replyTo = null) {
    const stored = this.state.outbound[conversationId];
    const [kid, i] = stored ? [stored.kid, stored.i] : [0xffffffff, 0];
    return (text) => SK.envelopeSize(this.deviceId, kid, i, innerOf("text/plain", text, replyTo).length);
  }

  // `replyTo`: the seq of the message this one answers (shown as a quote everywhere).
  send(conversationId, text, replyTo = null) {
    return this.sendInner(conversationId, "text/plain", text, replyTo);
  }

  // A reaction, an edit or a deletion for everyone (timeline.js): a message like any other.
  sendEvent(conversationId, contentType, payload) {
    return this.sendInner(conversationId, contentType, JSON.stringify(payload), null);
  }

  // A file's pointer (attachments.js), once its ciphertext is uploaded.
  sendAttachment(conversationId, pointer, replyTo = null) {
    return this.sendInner(conversationId, ATTACHMENT, P.fromUtf8(pointerBody(pointer)), replyTo);
  }

  sendInner(conversationId, contentType, text, replyTo) {
    return this.serial(async () => {
      const key = await this.outboundKey(conversationId);
      const sizeOf = (t) => key.envelopeSize(this.deviceId, innerOf(contentType, t, replyTo).length);
      const inner = innerOf(contentType, text, replyTo);
      const size = key.envelopeSize(this.deviceId, inner.length);
      if (size > this.maxMessageBytes) {
        const over = charsOver(text, (t) => sizeOf(t) <= this.maxMessageBytes);
        throw new MessageTooLong(over, size, this.maxMessageBytes);
      }
      const body = await key.encrypt(conversationId, this.deviceId, inner);
      this.state.outbound[conversationId] = key.toJSON();
      await this.save();
      const sent = await this.api.send(conversationId, body, SK.CONTENT_TYPE, crypto.randomUUID());
      const plain = { conversation_id: conversationId, seq: sent.seq, kind: "message",
        sender: this.username, sender_id: this.state.user_id, sender_device_id: this.deviceId,
        content_type: contentType, text, created_at: sent.created_at, reply_to: replyTo };
      await this.remember(plain);
      return plain;
    });
  }

  async outboundKey(conversationId) {
    const devices = await this.api.conversationDevices(conversationId);
    this.checkIdentities(devices);
    const targets = new Map(devices.filter((d) => d.device_id !== this.deviceId).map((d) => [d.device_id, d]));
    const stored = this.state.outbound[conversationId];
    let key = stored ? await SK.OutboundSenderKey.fromJSON(stored) : null;
    const fresh = !key || key.dueForRotation() || [...key.sharedWith].some((d) => !targets.has(d));
    if (fresh) key = await SK.OutboundSenderKey.generate();
    const missing = [...targets.values()].filter((d) => !key.sharedWith.has(d.device_id));
    if (missing.length) {
      const share = { type: "sender_key", conversation_id: conversationId, ...key.share() };
      const ids = missing.map((d) => d.device_id);
      const batch = await this.encryptEach(ids, share, await this.claimFresh(ids));
      await this.save();
      await this.api.sendInbox(batch);
      for (const d of missing) key.sharedWith.add(d.device_id);
    }
    if (fresh || missing.length) {
      // Kept now, not once a message goes with it: the others hold it already, and a message
      // refused as too long is cut to fit this key (its id's length counts), not the next one.
      this.state.outbound[conversationId] = key.toJSON();
      await this.save();
    }
    return key;
  }

  // The prekey bundles of those of these devices without a session yet, by device, claimed in
  // one request, not one each: a call's key to four newcomers would otherwise wait for four
  // round trips in a row.
  async claimFresh(deviceIds) {
    const fresh = deviceIds.filter((d) => !(this.state.sessions[d] || []).length);
    const bundles = fresh.length ? await this.api.claim(fresh) : [];
    return new Map(bundles.map((b) => [b.device_id, b]));
  }

  // One payload to each of these devices, as [device_id, body] pairs.
  async encryptEach(deviceIds, payload, claimed) {
    const out = [];
    for (const d of deviceIds) out.push([d, await this.pairwiseEncrypt(d, payload, claimed.get(d))]);
    return out;
  }

  async pairwiseEncrypt(deviceId, payload, claimed = null) {
    let sessions = this.state.sessions[deviceId];
    if (!sessions || !sessions.length) {
      const b = claimed || (await this.api.claim([deviceId]))[0];
      const bundle = { identityKey: unb64(b.identity_key), signingKey: unb64(b.signing_key),
        identitySig: unb64(b.identity_sig), spkId: b.spk_id, spk: unb64(b.spk),
        spkSig: unb64(b.spk_sig), opkId: b.opk_id, opk: b.opk ? unb64(b.opk) : null };
      this.checkIdentities([b]);
      const { secret, ad, header } = await X.initiate(await this.identity(), bundle);
      const ratchet = await Ratchet.forInitiator(secret, ad, bundle.spk);
      sessions = [{ ratchet: ratchet.toJSON(), base_ek: null, pending: {
        ik: b64(header.identityKey), sk: b64(header.signingKey), ek: b64(header.ephemeralKey),
        spk: header.spkId, opk: header.opkId } }];
      this.state.sessions[deviceId] = sessions;
    }
    const session = sessions[0];
    const ratchet = await Ratchet.fromJSON(session.ratchet);
    const [header, ct] = await ratchet.encrypt(P.utf8(JSON.stringify(payload)));
    session.ratchet = ratchet.toJSON();
    const p = session.pending;
    const initial = p ? { identityKey: unb64(p.ik), signingKey: unb64(p.sk), ephemeralKey: unb64(p.ek),
      spkId: p.spk, opkId: p.opk } : null;
    return PW.encode(initial, header, ct);
  }

  // A call's media key (or a request for one) to exactly these devices of the call, each over
  // its pairwise session: never through the conversation's sender key, which members outside
  // the call hold too. The devices come from the call's roster, in which video-service seats
  // only current members' devices. Only the encryption holds the store's queue: bundles are
  // claimed before it and the batch is posted after it. On a busy machine each round trip can
  // take seconds, and a key (or an incoming one behind it) must not wait for other messages'
  // round trips; two batches that arrive out of order are fine (the ratchet keeps skipped keys).
  async sendCallPayload(deviceIds, payload) {
    const targets = [...new Set(deviceIds)].filter((d) => d !== this.deviceId);
    const claimed = await this.claimFresh(targets);
    const batch = await this.serial(async () => {
      const out = await this.encryptEach(targets, payload, claimed);
      await this.save();
      return out;
    });
    if (batch.length) await this.api.sendInbox(batch);
    return batch.map(([d]) => d);
  }

  // ----- receiving -----------------------------------------------------------------------------

  handleInbox(item) {
    return this.serial(async () => {
      let payload;
      try {
        payload = await this.pairwiseDecrypt(item);
      } catch (error) {
        console.warn("dropped a pairwise message we cannot read:", error.code || error, error.message);
        await this.save();
        return [];
      }
      await this.save();
      const produced = [];
      if (payload.type === "key_request") {
        await this.answerKeyRequest(item, payload);
        return produced;
      }
      if (payload.type === "call_key" || payload.type === "call_key_request") {
        // Media keys for a call: the call screen takes them (they never reach the server).
        if (this.onCallKey) this.onCallKey(item.sender_id, item.sender_device_id, payload);
        return produced;
      }
      if (payload.type === "sender_key") {
        const record = SK.InboundSenderKey.fromShare(payload);
        this.state.inbound[`${payload.conversation_id}|${item.sender_device_id}|${record.keyId}`] =
          { ...record.toJSON(), owner: item.sender_id };
        await this.save();
        const waiting = this.failed;
        this.failed = [];
        for (const m of waiting) produced.push(await this.decryptNow(m));
      }
      return produced;
    });
  }

  async pairwiseDecrypt(item) {
    const [initial, header, ct] = PW.decode(item.body);
    const sessions = (this.state.sessions[item.sender_device_id] ||= []);
    let candidates = sessions;
    if (initial) {
      let known = sessions.find((s) => s.base_ek === b64(initial.ephemeralKey));
      if (!known) {
        const spkRecord = this.state.spks[initial.spkId];
        if (!spkRecord) throw new P.CryptoError("unknown_prekey", "signed prekey no longer held");
        const spk = await P.dhKeyPair(unb64(spkRecord.priv));
        let opk = null;
        if (initial.opkId !== null && initial.opkId !== undefined) {
          const priv = this.state.opks[initial.opkId];
          if (!priv) throw new P.CryptoError("unknown_prekey", "one-time prekey already used");
          delete this.state.opks[initial.opkId];
          opk = await P.dhKeyPair(unb64(priv));
        }
        const { secret, ad } = await X.respond(await this.identity(), spk, opk, initial);
        known = { ratchet: Ratchet.forResponder(secret, ad, spk).toJSON(), pending: null,
          base_ek: b64(initial.ephemeralKey) };
        sessions.unshift(known);
        sessions.splice(3);
      }
      candidates = [known];
    }
    for (const session of candidates) {
      const ratchet = await Ratchet.fromJSON(session.ratchet);
      try {
        const plaintext = await ratchet.decrypt(header, ct);
        session.ratchet = ratchet.toJSON();
        session.pending = null;
        return JSON.parse(P.fromUtf8(plaintext));
      } catch (error) {
        continue;
      }
    }
    throw new P.CryptoError("no_session", "no session decrypts this pairwise message");
  }

  decrypt(message) {
    return this.serial(() => this.decryptNow(message));
  }

  async decryptNow(m) {
    const cached = (this.state.messages[m.conversation_id] || {})[m.seq];
    if (cached) return cached;
    const base = { conversation_id: m.conversation_id, seq: m.seq, kind: m.kind, sender: m.sender,
      sender_id: m.sender_id, sender_device_id: m.sender_device_id, created_at: m.created_at };
    if (m.kind === "call") {
      // Written by the server in the clear: that a call happened, who was in it, how long.
      return { ...base, call: JSON.parse(P.fromUtf8(m.body)) };
    }
    if (m.kind === "membership") {
      const change = JSON.parse(P.fromUtf8(m.body));
      if (change.action === "remove" || change.action === "leave") {
        delete this.state.outbound[m.conversation_id];
        await this.save();
      }
      return { ...base, membership: change };
    }
    try {
      if (m.content_type !== SK.CONTENT_TYPE) {
        throw new P.CryptoError("not_encrypted", "this message was not end-to-end encrypted");
      }
      const env = SK.decode(m.body);
      if (env.dev !== m.sender_device_id) throw new P.CryptoError("sender_mismatch", "wrong device");
      const slot = `${m.conversation_id}|${env.dev}|${env.kid}`;
      const stored = this.state.inbound[slot];
      if (!stored) throw new P.CryptoError("unknown_sender_key", "no key for this sender yet");
      if (stored.owner !== m.sender_id) throw new P.CryptoError("sender_mismatch", "wrong owner");
      const record = SK.InboundSenderKey.fromJSON(stored);
      const inner = JSON.parse(P.fromUtf8(await record.decrypt(m.conversation_id, env)));
      this.state.inbound[slot] = { ...record.toJSON(), owner: stored.owner };
      const plain = { ...base, content_type: inner.t, text: P.fromUtf8(unb64(inner.b)),
        reply_to: Number.isInteger(inner.r) ? inner.r : null };
      await this.remember(plain);
      return plain;
    } catch (error) {
      if (error.code === "unknown_sender_key") {
        this.failed.push(m);
        await this.requestKey(m).catch((e) => console.warn("key request not sent:", e.message));
      }
      // Sent before this device existed: its keys never came here. Not a fault: say so plainly.
      // (No key for it, or a key that starts after it: the sender shares its current iteration.)
      const before = ["unknown_sender_key", "replay"].includes(error.code) && this.state.created_at && m.created_at < this.state.created_at;
      return { ...base, failed: before ? "before_this_device" : (error.code || "error") };
    }
  }

  // ----- lost keys: ask the sender's device, answer others' requests (as the Python SDK) ---------

  async requestKey(m) {
    let env;
    try { env = SK.decode(m.body); } catch { return; }
    const marker = `${m.conversation_id}|${env.dev}|${env.kid}`;
    this.state.requested ||= [];
    if (this.state.requested.includes(marker) || !m.sender_device_id) return;
    let devices;
    try { devices = await this.api.conversationDevices(m.conversation_id); } catch { return; }
    const target = devices.find((d) => d.device_id === m.sender_device_id);
    if (!target) return;
    const request = { type: "key_request", conversation_id: m.conversation_id, kid: env.kid,
      i: env.i, seq: m.seq };
    const body = await this.pairwiseEncrypt(target.device_id, request);
    this.state.requested.push(marker);
    await this.save();
    await this.api.sendInbox([[target.device_id, body]]);
  }

  // Re-shares a sender key from the message asked about, and only if the asker was a member
  // when it was sent: a late joiner never gets what came before their joining.
  async answerKeyRequest(item, request) {
    const conv = request.conversation_id;
    const stored = this.state.outbound[conv];
    if (!stored || stored.kid !== request.kid) return;
    let members;
    try { members = await this.api.members(conv); } catch { return; }
    const asker = members.find((x) => x.user_id === item.sender_id);
    if (!asker || request.seq <= asker.joined_seq) return;
    const key = await SK.OutboundSenderKey.fromJSON(stored);
    let share;
    try {
      share = { type: "sender_key", conversation_id: conv, ...(await key.shareFrom(request.i)) };
    } catch { return; }
    const devices = await this.api.conversationDevices(conv);
    const target = devices.find((d) => d.device_id === item.sender_device_id);
    if (!target) return;
    const body = await this.pairwiseEncrypt(target.device_id, share);
    await this.save();
    await this.api.sendInbox([[target.device_id, body]]);
  }

  // What this device has read of a conversation, oldest first (for the conversation list).
  has(conversationId, seq) {
    return Boolean((this.state.messages[conversationId] || {})[seq]);
  }

  known(conversationId) {
    return Object.values(this.state.messages[conversationId] || {}).sort((a, b) => a.seq - b.seq);
  }

  async remember(plain) {
    (this.state.messages[plain.conversation_id] ||= {})[plain.seq] = plain;
    if (this.onRemember) this.onRemember(plain);  // the device's search index
    await this.save();
  }

  async history(conversationId) {
    const out = [];
    for (const m of await allMessages(this.api, conversationId)) out.push(await this.decrypt(m));
    return out;
  }

  async syncInbox() {
    const produced = [];
    for (const item of await this.api.inbox()) {
      produced.push(...(await this.handleInbox({ ...item, body: unb64(item.body) })));
      await this.api.ackInbox(item.id);
    }
    return produced;
  }

  // ----- identities ----------------------------------------------------------------------------

  checkIdentities(devices) {
    // Whom this device had looked at before: a first look finds nothing "new", whatever the order.
    const looked = new Set(Object.entries(this.state.contacts)
      .filter(([, c]) => Object.keys(c.devices).length || c.verified).map(([name]) => name));
    for (const d of devices) {
      const contact = (this.state.contacts[d.username] ||= { devices: {}, verified: false });
      const keys = [d.signing_key, d.identity_key];
      const known = contact.devices[d.device_id];
      if (d.device_id === this.deviceId) { contact.devices[d.device_id] = keys; continue; }  // this very device
      if (!known) {
        if (looked.has(d.username)) {
          // Another device of one's own is a security notice for oneself, not a contact's change.
          const change = d.username === this.username ? "own_new_device" : "new_device";
          this.notices.push({ username: d.username, device_id: d.device_id, change });
          contact.verified = false;
        }
        contact.devices[d.device_id] = keys;
      } else if (known[0] !== keys[0] || known[1] !== keys[1]) {
        contact.verified = false;
        throw new IdentityChangedError(d.username);
      }
    }
  }

  async safetyNumber(username) {
    const mine = await this.api.userDevices(this.username);
    const theirs = await this.api.userDevices(username);
    const key = (ds) => SAFETY.partyKey(ds.map((d) => [d.device_id, unb64(d.signing_key), unb64(d.identity_key)]));
    return SAFETY.safetyNumber(this.username, key(mine), username, key(theirs));
  }

  async markVerified(username) {
    (this.state.contacts[username] ||= { devices: {}, verified: false }).verified = true;
    await this.save();
  }

  isVerified(username) {
    return Boolean((this.state.contacts[username] || {}).verified);
  }

  async acceptIdentity(username) {
    const devices = await this.api.userDevices(username);
    this.state.contacts[username] = { devices: Object.fromEntries(
      devices.map((d) => [d.device_id, [d.signing_key, d.identity_key]])), verified: false };
    await this.save();
  }
}
