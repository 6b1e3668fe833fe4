// WebCrypto wrappers matching secureconnect/crypto/primitives.py byte for byte.
// Raw 32-byte keys everywhere; private keys enter WebCrypto through fixed PKCS#8 prefixes.

const subtle = globalThis.crypto.subtle;
const X25519_PKCS8 = hex("302e020100300506032b656e04220420");
const ED25519_PKCS8 = hex("302e020100300506032b657004220420");

export class CryptoError extends Error {
  constructor(code, message) {
    super(message);
    this.code = code;
  }
}

export function hex(s) {
  const out = new Uint8Array(s.length / 2);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(s.substr(i * 2, 2), 16);
  return out;
}

export function toHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

export function b64(bytes) {
  let s = "";
  for (const b of bytes) s += String.fromCharCode(b);
  return btoa(s);
}

export function unb64(text) {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}

function b64url(bytes) {
  return b64(bytes).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

function unb64url(text) {
  const padded = text.replace(/-/g, "+").replace(/_/g, "/");
  return unb64(padded + "=".repeat((4 - (padded.length % 4)) % 4));
}

export function concat(...parts) {
  const total = parts.reduce((n, p) => n + p.length, 0);
  const out = new Uint8Array(total);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

export function equal(a, b) {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i] ^ b[i];
  return diff === 0;
}

export const utf8 = (s) => new TextEncoder().encode(s);
export const fromUtf8 = (b) => new TextDecoder().decode(b);

export function u32(n) {
  const out = new Uint8Array(4);
  new DataView(out.buffer).setUint32(0, n);
  return out;
}

export function readU32(bytes, at) {
  return new DataView(bytes.buffer, bytes.byteOffset).getUint32(at);
}

export function systemRandom(n) {
  return crypto.getRandomValues(new Uint8Array(n));
}

// Deterministic randomness for test vectors: SHA-256(seed || counter, 8 bytes BE), concatenated.
export class FixedRandom {
  constructor(seed) {
    this.seed = typeof seed === "string" ? utf8(seed) : seed;
    this.counter = 0n;
  }
  async next(n) {
    let out = new Uint8Array(0);
    while (out.length < n) {
      const c = new Uint8Array(8);
      new DataView(c.buffer).setBigUint64(0, this.counter);
      this.counter += 1n;
      out = concat(out, new Uint8Array(await subtle.digest("SHA-256", concat(this.seed, c))));
    }
    return out.slice(0, n);
  }
}

// rng: (n) => Uint8Array | Promise<Uint8Array>
export async function draw(rng, n) {
  return rng.next ? rng.next(n) : rng(n);
}

async function privateKey(kind, raw, usages) {
  const prefix = kind === "X25519" ? X25519_PKCS8 : ED25519_PKCS8;
  return subtle.importKey("pkcs8", concat(prefix, raw), { name: kind }, true, usages);
}

async function publicOf(kind, raw) {
  const usages = kind === "X25519" ? ["deriveBits"] : ["sign"];
  const key = await privateKey(kind, raw, usages);
  return unb64url((await subtle.exportKey("jwk", key)).x);
}

export async function dhKeyPair(privateRaw) {
  return { private: privateRaw, public: await publicOf("X25519", privateRaw) };
}

export async function generateDH(rng = systemRandom) {
  return dhKeyPair(await draw(rng, 32));
}

export async function signingKeyPair(privateRaw) {
  return { private: privateRaw, public: await publicOf("Ed25519", privateRaw) };
}

export async function generateSigning(rng = systemRandom) {
  return signingKeyPair(await draw(rng, 32));
}

// A device's long-term keys: made inside WebCrypto and never extractable. Only the public half
// leaves it. (Ratchet and prekey secrets stay raw: the protocol state is serialised.)
export async function generateLongTerm(kind) {
  const usages = kind === "X25519" ? ["deriveBits"] : ["sign", "verify"];
  const pair = await subtle.generateKey({ name: kind }, false, usages);
  return { private: pair.privateKey,
           public: new Uint8Array(await subtle.exportKey("raw", pair.publicKey)) };
}

const asKey = (kind, priv, usages) =>
  (priv instanceof CryptoKey ? priv : privateKey(kind, priv, usages));

export async function dh(privateRaw, publicRaw) {
  if (publicRaw.length !== 32) throw new CryptoError("bad_key", "X25519 public keys are 32 bytes");
  const priv = await asKey("X25519", privateRaw, ["deriveBits"]);
  let pub;
  try {
    pub = await subtle.importKey("raw", publicRaw, { name: "X25519" }, false, []);
    const bits = new Uint8Array(await subtle.deriveBits({ name: "X25519", public: pub }, priv, 256));
    if (bits.every((b) => b === 0)) throw new Error("all-zero");
    return bits;
  } catch (error) {
    throw new CryptoError("bad_key", "X25519 key agreement failed (low-order key)");
  }
}

export async function sign(privateRaw, message) {
  const key = await asKey("Ed25519", privateRaw, ["sign"]);
  return new Uint8Array(await subtle.sign({ name: "Ed25519" }, key, message));
}

export async function verify(publicRaw, message, signature) {
  if (publicRaw.length !== 32 || signature.length !== 64) {
    throw new CryptoError("bad_signature", "malformed Ed25519 key or signature");
  }
  let ok = false;
  try {
    const key = await subtle.importKey("raw", publicRaw, { name: "Ed25519" }, false, ["verify"]);
    ok = await subtle.verify({ name: "Ed25519" }, key, signature, message);
  } catch (error) {
    ok = false;
  }
  if (!ok) throw new CryptoError("bad_signature", "signature does not verify");
}

export async function hkdf(ikm, salt, info, length) {
  const key = await subtle.importKey("raw", ikm, "HKDF", false, ["deriveBits"]);
  const bits = await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt, info }, key, length * 8);
  return new Uint8Array(bits);
}

export async function hmacSha256(key, data) {
  const k = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, data));
}

export async function aeadEncrypt(key, nonce, plaintext, ad) {
  const k = await subtle.importKey("raw", key, "AES-GCM", false, ["encrypt"]);
  const ct = await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: ad }, k, plaintext);
  return new Uint8Array(ct);
}

export async function aeadDecrypt(key, nonce, ciphertext, ad) {
  const k = await subtle.importKey("raw", key, "AES-GCM", false, ["decrypt"]);
  try {
    const pt = await subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: ad }, k, ciphertext);
    return new Uint8Array(pt);
  } catch (error) {
    throw new CryptoError("bad_tag", "ciphertext or its associated data was altered");
  }
}

// An AES-256-GCM key and 96-bit nonce from a one-use message key.
export async function messageKeyMaterial(messageKey, info) {
  const material = await hkdf(messageKey, new Uint8Array(32), utf8(info), 44);
  return [material.slice(0, 32), material.slice(32)];
}

// Canonical JSON: sorted keys, no spaces (what Python's json.dumps(sort_keys=True,
// separators=(",", ":")) writes for ASCII data).
export function canonicalJson(value) {
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  if (Array.isArray(value)) return "[" + value.map(canonicalJson).join(",") + "]";
  const keys = Object.keys(value).sort();
  return "{" + keys.map((k) => JSON.stringify(k) + ":" + canonicalJson(value[k])).join(",") + "}";
}
