// SFrame (RFC 9605), AES_128_GCM_SHA256_128: the same format as secureconnect/crypto/sframe.py,
// checked against the same vectors (RFC 9605's own among them). Runs in the call worker, on
// every media frame: CryptoKeys are imported once per KID, not per frame.
import { CryptoError, concat, hkdf, utf8 } from "./primitives.js";

const subtle = globalThis.crypto.subtle;
export const CIPHER_SUITE = 0x0004;
const NK = 16, NN = 12, NH = 32;
// Payload bytes left in the clear (and authenticated): VP8's frame tag, and on a key frame its
// size, so depacketizers and the SFU still see what kind of frame it is; Opus's TOC byte.
export const CLEAR_BYTES = { key: 10, delta: 3, audio: 1 };

function bytesOf(value, size) {
  let v = BigInt(value);
  const out = new Uint8Array(size);
  for (let i = size - 1; i >= 0; i--) { out[i] = Number(v & 0xffn); v >>= 8n; }
  return out;
}

function minimal(value) {
  let v = BigInt(value), n = 1;
  while (v > 0xffn) { v >>= 8n; n++; }
  return bytesOf(value, n);
}

function readBig(bytes, at, size) {
  let v = 0n;
  for (let i = 0; i < size; i++) v = (v << 8n) | BigInt(bytes[at + i]);
  return v;
}

export function encodeHeader(kid, ctr) {
  const k = BigInt(kid), c = BigInt(ctr);
  let config = 0;
  const tail = [];
  if (k < 8n) config |= Number(k) << 4;
  else { const b = minimal(k); config |= 0x80 | ((b.length - 1) << 4); tail.push(b); }
  if (c < 8n) config |= Number(c);
  else { const b = minimal(c); config |= 0x08 | (b.length - 1); tail.push(b); }
  return concat(new Uint8Array([config]), ...tail);
}

// [kid, ctr, header length], kid and ctr as BigInt.
export function parseHeader(data) {
  if (!data.length) throw new CryptoError("bad_frame", "empty SFrame");
  const config = data[0];
  let at = 1, kid, ctr;
  if (config & 0x80) { const n = ((config >> 4) & 7) + 1; kid = readBig(data, at, n); at += n; }
  else kid = BigInt((config >> 4) & 7);
  if (config & 0x08) { const n = (config & 7) + 1; ctr = readBig(data, at, n); at += n; }
  else ctr = BigInt(config & 7);
  if (at > data.length) throw new CryptoError("bad_frame", "truncated SFrame header");
  return [kid, ctr, at];
}

// {kid, key (raw), salt, aes (CryptoKey)}
export async function derive(baseKey, kid) {
  const context = concat(bytesOf(kid, 8), bytesOf(CIPHER_SUITE, 2));
  const key = await hkdf(baseKey, new Uint8Array(0), concat(utf8("SFrame 1.0 Secret key "), context), NK);
  const salt = await hkdf(baseKey, new Uint8Array(0), concat(utf8("SFrame 1.0 Secret salt "), context), NN);
  const aes = await subtle.importKey("raw", key, "AES-GCM", false, ["encrypt", "decrypt"]);
  return { kid: BigInt(kid), key, salt, aes };
}

export async function ratchet(baseKey) {
  return hkdf(baseKey, new Uint8Array(0), utf8("SFrame 1.0 Ratchet"), NH);
}

function nonce(salt, ctr) {
  const c = bytesOf(ctr, NN);
  return salt.map((b, i) => b ^ c[i]);
}

export async function encrypt(key, ctr, metadata, plaintext) {
  const header = encodeHeader(key.kid, ctr);
  const sealed = await subtle.encrypt(
    { name: "AES-GCM", iv: nonce(key.salt, ctr), additionalData: concat(header, metadata) },
    key.aes, plaintext);
  return concat(header, new Uint8Array(sealed));
}

// keys(kid) -> key or undefined (then "unknown_key": ask the sender for it).
export async function decrypt(keys, metadata, sframe) {
  const [kid, ctr, size] = parseHeader(sframe);
  const key = keys(kid);
  if (!key) throw new CryptoError("unknown_key", `no media key with KID ${kid}`);
  try {
    const plain = await subtle.decrypt(
      { name: "AES-GCM", iv: nonce(key.salt, ctr), additionalData: concat(sframe.subarray(0, size), metadata) },
      key.aes, sframe.subarray(size));
    return new Uint8Array(plain);
  } catch (error) {
    throw new CryptoError("bad_frame", "this frame does not decrypt with its key");
  }
}

export async function protect(key, ctr, frame, kind) {
  const clear = frame.subarray(0, CLEAR_BYTES[kind]);
  return concat(clear, await encrypt(key, ctr, clear, frame.subarray(clear.length)));
}

export async function unprotect(keys, data, kind) {
  const clear = data.subarray(0, CLEAR_BYTES[kind]);
  return concat(clear, await decrypt(keys, clear, data.subarray(clear.length)));
}
