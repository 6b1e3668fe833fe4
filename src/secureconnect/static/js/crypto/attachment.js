// Attachment encryption, as secureconnect/crypto/attachment.py: AES-256-GCM over fixed-size
// chunks, nonce = 4 zero bytes || chunk index (8 bytes, big-endian) under a key used once, and
// associated data that binds each chunk to its place and marks the last (STREAM, as in age).
import { CryptoError, aeadDecrypt, aeadEncrypt, concat, utf8 } from "./primitives.js";

export const KEY_BYTES = 32;
export const TAG_BYTES = 16;
export const DEFAULT_CHUNK = 4 * 1024 * 1024;
const LABEL = utf8("SecureConnect attachment v1");

function u64(n) {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setBigUint64(0, BigInt(n));
  return out;
}

export function nonce(index) {
  return concat(new Uint8Array(4), u64(index));
}

export function associatedData(index, last) {
  return concat(LABEL, u64(index), new Uint8Array([last ? 1 : 0]));
}

export function chunkCount(size, chunk) {
  return Math.max(1, Math.ceil(size / chunk));
}

export function ciphertextSize(size, chunk) {
  return size + chunkCount(size, chunk) * TAG_BYTES;
}

export function encryptChunk(key, index, last, plaintext) {
  return aeadEncrypt(key, nonce(index), plaintext, associatedData(index, last));
}

export async function decryptChunk(key, index, last, ciphertext) {
  try {
    return await aeadDecrypt(key, nonce(index), ciphertext, associatedData(index, last));
  } catch (error) {
    throw new CryptoError("bad_attachment",
      `chunk ${index} of the attachment does not decrypt: altered or cut`);
  }
}
