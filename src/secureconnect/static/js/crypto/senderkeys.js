// Sender keys as in secureconnect/crypto/senderkeys.py.
import {
  CryptoError, aeadDecrypt, aeadEncrypt, b64, canonicalJson, concat, draw, hmacSha256,
  messageKeyMaterial, readU32, sign, signingKeyPair, systemRandom, u32, unb64, utf8, verify,
  generateSigning,
} from "./primitives.js";

export const CONTENT_TYPE = "application/vnd.secureconnect.e2ee+json";
const MK_INFO = "SecureConnect_SenderKey_v1";
const MAX_SKIP = 2000;
const MAX_STORED = 2000;
export const ROTATE_AFTER_MESSAGES = 100;
export const ROTATE_AFTER_SECONDS = 7 * 24 * 3600;

export async function advance(ck) {
  return [await hmacSha256(ck, new Uint8Array([2])), await hmacSha256(ck, new Uint8Array([1]))];
}

function lp(text) {
  const raw = utf8(text);
  const len = new Uint8Array(2);
  new DataView(len.buffer).setUint16(0, raw.length);
  return concat(len, raw);
}

export function context(conversationId, deviceId, keyId, iteration) {
  return concat(utf8("SC-MSG-v1"), lp(conversationId), lp(deviceId), u32(keyId), u32(iteration));
}

export function encode(envelope) {
  return utf8(canonicalJson(envelope));
}

export function decode(body) {
  let env;
  try {
    env = JSON.parse(typeof body === "string" ? body : new TextDecoder().decode(body));
  } catch (error) {
    throw new CryptoError("bad_envelope", "message is not an encrypted envelope");
  }
  if (!env || typeof env !== "object" || env.v !== 1) {
    throw new CryptoError("unsupported_version", "unknown encryption protocol version");
  }
  if (env.alg !== "sk1") throw new CryptoError("bad_envelope", "not a sender-key message");
  if (!Number.isInteger(env.kid) || !Number.isInteger(env.i) || typeof env.dev !== "string"
      || typeof env.ct !== "string" || typeof env.sig !== "string") {
    throw new CryptoError("bad_envelope", "malformed encrypted envelope");
  }
  return env;
}

// The exact length of what encrypt() returns for that much plaintext, without a key's secrets:
// the composer counts with it as the person types, and sending refuses with it.
export function envelopeSize(deviceId, keyId, iteration, plaintextLength) {
  const sealed = plaintextLength + 16;  // AES-256-GCM's tag
  const envelope = { v: 1, alg: "sk1", dev: deviceId, kid: keyId, i: iteration,
    ct: "A".repeat(4 * Math.ceil(sealed / 3)), sig: "A".repeat(88) };  // Ed25519, base64
  return encode(envelope).length;
}

export class OutboundSenderKey {
  constructor(s) {
    Object.assign(this, s);
  }

  static async generate(rng = systemRandom, now = Date.now() / 1000) {
    const kid = readU32(await draw(rng, 4), 0);
    const chainKey = await draw(rng, 32);
    const signing = await generateSigning(rng);
    return new OutboundSenderKey({ keyId: kid, chainKey, iteration: 0, signing, createdAt: now,
      sharedWith: new Set(), initialChainKey: chainKey });
  }

  dueForRotation(now = Date.now() / 1000) {
    return this.iteration >= ROTATE_AFTER_MESSAGES || now - this.createdAt >= ROTATE_AFTER_SECONDS;
  }

  share() {
    return { kid: this.keyId, ck: b64(this.chainKey), i: this.iteration, spk: b64(this.signing.public) };
  }

  async shareFrom(iteration) {
    if (iteration < 0 || iteration > this.iteration) {
      throw new CryptoError("unknown_iteration", "cannot share this key from that message");
    }
    let chain = this.initialChainKey;
    for (let n = 0; n < iteration; n++) [chain] = await advance(chain);
    return { kid: this.keyId, ck: b64(chain), i: iteration, spk: b64(this.signing.public) };
  }

  async encrypt(conversationId, deviceId, plaintext) {
    const ctx = context(conversationId, deviceId, this.keyId, this.iteration);
    const [next, mk] = await advance(this.chainKey);
    this.chainKey = next;
    const [key, nonce] = await messageKeyMaterial(mk, MK_INFO);
    const ct = await aeadEncrypt(key, nonce, plaintext, ctx);
    const envelope = { v: 1, alg: "sk1", dev: deviceId, kid: this.keyId, i: this.iteration,
      ct: b64(ct), sig: b64(await sign(this.signing.private, concat(ctx, ct))) };
    this.iteration += 1;
    return encode(envelope);
  }

  // The exact length encrypt() would return for that much plaintext, without advancing the
  // chain: a message too long is refused before it spends a message key (as the Python SDK).
  envelopeSize(deviceId, plaintextLength) {
    return envelopeSize(deviceId, this.keyId, this.iteration, plaintextLength);
  }

  toJSON() {
    return { kid: this.keyId, ck: b64(this.chainKey), i: this.iteration, sig: b64(this.signing.private),
      created_at: this.createdAt, shared_with: [...this.sharedWith].sort(), ck0: b64(this.initialChainKey) };
  }

  static async fromJSON(d) {
    return new OutboundSenderKey({ keyId: d.kid, chainKey: unb64(d.ck), iteration: d.i,
      signing: await signingKeyPair(unb64(d.sig)), createdAt: d.created_at,
      sharedWith: new Set(d.shared_with), initialChainKey: unb64(d.ck0) });
  }
}

export class InboundSenderKey {
  constructor(s) {
    Object.assign(this, s);
  }

  static fromShare(share) {
    return new InboundSenderKey({ keyId: share.kid, chainKey: unb64(share.ck), iteration: share.i,
      signingPublic: unb64(share.spk), skipped: new Map() });
  }

  async decrypt(conversationId, envelope) {
    const i = envelope.i;
    const ct = unb64(envelope.ct);
    const ctx = context(conversationId, envelope.dev, this.keyId, i);
    await verify(this.signingPublic, concat(ctx, ct), unb64(envelope.sig));
    if (i < this.iteration) {
      const mk = this.skipped.get(i);
      if (!mk) throw new CryptoError("replay", "message already read, or older than this key");
      const pt = await open(mk, ct, ctx);
      this.skipped.delete(i);
      return pt;
    }
    if (i - this.iteration > MAX_SKIP) {
      throw new CryptoError("too_many_skipped", `more than ${MAX_SKIP} messages missing`);
    }
    let chain = this.chainKey;
    const skipped = new Map(this.skipped);
    for (let n = this.iteration; n < i; n++) {
      const [next, mk] = await advance(chain);
      skipped.set(n, mk);
      chain = next;
    }
    const [next, mk] = await advance(chain);
    const pt = await open(mk, ct, ctx);
    while (skipped.size > MAX_STORED) skipped.delete(skipped.keys().next().value);
    this.chainKey = next;
    this.iteration = i + 1;
    this.skipped = skipped;
    return pt;
  }

  toJSON() {
    return { kid: this.keyId, ck: b64(this.chainKey), i: this.iteration, spk: b64(this.signingPublic),
      skipped: [...this.skipped].map(([n, mk]) => [n, b64(mk)]) };
  }

  static fromJSON(d) {
    return new InboundSenderKey({ keyId: d.kid, chainKey: unb64(d.ck), iteration: d.i,
      signingPublic: unb64(d.spk), skipped: new Map(d.skipped.map(([n, mk]) => [n, unb64(mk)])) });
  }
}

async function open(mk, ct, ctx) {
  const [key, nonce] = await messageKeyMaterial(mk, MK_INFO);
  return aeadDecrypt(key, nonce, ct, ctx);
}
