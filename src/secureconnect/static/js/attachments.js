// Files, images and voice notes, as secureconnect/client/attachments.py: encrypted here with a
// key of their own, uploaded a chunk at a time as ciphertext, and pointed to by an end-to-end
// encrypted message carrying the key, SHA-256, size, type, name and a small thumbnail.
// tests/vectors/attachment.json holds both clients to the same reading of a pointer.
import { b64, fromUtf8, toHex, unb64, utf8 } from "./crypto/primitives.js";
import * as A from "./crypto/attachment.js";

export const ATTACHMENT = "application/vnd.secureconnect.attachment+json";
export const THUMB_PX = 320;
const MAX_NAME = 255;
const MAX_THUMB_BYTES = 24 * 1024;
const TYPE = /^[A-Za-z0-9_.+-]{1,60}\/[A-Za-z0-9_.+-]{1,60}$/;
const BLOB = /^[0-9a-f]{32}$/;
const SHA256 = /^[0-9a-f]{64}$/;
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
// What a name from someone else may not carry to a screen or a disk.
const UNSAFE = /[\x00-\x1f\x7f-\x9f/\\\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]/g;
const CHUNK_TRIES = 4;

export class AttachmentCorrupt extends Error {
  constructor(message) {
    super(message);
    this.code = "attachment_corrupt";
  }
}

export function safeName(name) {
  const cleaned = Array.from(name.replace(UNSAFE, "_").trim().replace(/^\.+/, ""))
    .slice(0, MAX_NAME).join("");
  return cleaned || "attachment";
}

function strictB64(text) {
  if (typeof text !== "string" || !BASE64.test(text)) throw new Error("not base64");
  return unb64(text);
}

// The pointer in a received message, or null when it is not a well-formed one.
export function parse(body) {
  try {
    const d = JSON.parse(fromUtf8(body));
    if (!d || typeof d !== "object" || Array.isArray(d)) return null;
    const key = strictB64(d.key);
    if (![d.blob, d.sha256, d.type, d.name].every((f) => typeof f === "string")) return null;
    if (!BLOB.test(d.blob)) return null;
    const int = (v) => typeof v === "number" && Number.isInteger(v);
    if (!int(d.size) || !int(d.chunk) || d.size < 0 || d.chunk < 1024) return null;
    if (key.length !== A.KEY_BYTES || !SHA256.test(d.sha256)) return null;
    const thumb = typeof d.thumb === "string" ? strictB64(d.thumb) : null;
    const number = (v) => (int(v) && v >= 0 && v < 2 ** 31 ? v : null);
    return {
      blob: d.blob, key, sha256: d.sha256, size: d.size, chunk: d.chunk,
      type: TYPE.test(d.type) ? d.type : "application/octet-stream",
      name: safeName(d.name),
      caption: typeof d.caption === "string" ? d.caption : "",
      thumb: thumb && thumb.length <= MAX_THUMB_BYTES ? thumb : null,
      width: number(d.w), height: number(d.h), durationMs: number(d.ms),
    };
  } catch (error) {
    return null;
  }
}

export function pointerBody(p) {
  const data = { blob: p.blob, key: b64(p.key), sha256: p.sha256, size: p.size, chunk: p.chunk,
                 type: p.type, name: p.name };
  if (p.caption) data.caption = p.caption;
  if (p.thumb) data.thumb = b64(p.thumb);
  if (p.width != null) data.w = p.width;
  if (p.height != null) data.h = p.height;
  if (p.durationMs != null) data.ms = p.durationMs;
  return utf8(JSON.stringify(data));
}

// A JPEG of at most THUMB_PX a side, drawn from the decoded pixels: nothing of the file's
// metadata (location, camera) survives. Null for what the browser cannot decode.
export async function thumbnailOf(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file);
  } catch (error) {
    return { thumb: null, width: null, height: null };
  }
  const { width, height } = bitmap;
  const scale = Math.min(1, THUMB_PX / Math.max(width, height));
  const canvas = new OffscreenCanvas(Math.max(1, Math.round(width * scale)),
                                     Math.max(1, Math.round(height * scale)));
  canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
  bitmap.close();
  const jpeg = new Uint8Array(await (await canvas.convertToBlob({ type: "image/jpeg", quality: 0.7 })).arrayBuffer());
  return { thumb: jpeg.length <= MAX_THUMB_BYTES ? jpeg : null, width, height };
}

async function retried(step) {
  for (let attempt = 0; ; attempt++) {
    try {
      return await step();
    } catch (error) {
      const transient = error.status === 0 || error.status >= 502;
      if (!transient || attempt === CHUNK_TRIES - 1) throw error;
      await new Promise((r) => setTimeout(r, 500 * 2 ** attempt));
    }
  }
}

// Encrypts and uploads a File; onProgress(done, total) after each chunk. A failed upload is
// removed. Returns the pointer, without caption (the caller adds it).
export async function upload(api, conversationId, file, onProgress = () => {}) {
  const key = crypto.getRandomValues(new Uint8Array(A.KEY_BYTES));
  const chunk = A.DEFAULT_CHUNK;
  const size = file.size;
  const count = A.chunkCount(size, chunk);
  const blob = await api.createBlob(conversationId, A.ciphertextSize(size, chunk), chunk + A.TAG_BYTES);
  try {
    const whole = new Uint8Array(await file.arrayBuffer());
    const sha256 = toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", whole)));
    for (let i = 0; i < count; i++) {
      const sealed = await A.encryptChunk(key, i, i === count - 1, whole.subarray(i * chunk, (i + 1) * chunk));
      await retried(() => api.putChunk(blob.id, i, sealed));
      onProgress(Math.min(size, (i + 1) * chunk), size);
    }
    await api.completeBlob(blob.id);
    const image = file.type.startsWith("image/") ? await thumbnailOf(file) : { thumb: null, width: null, height: null };
    return { blob: blob.id, key, sha256, size, chunk, type: TYPE.test(file.type) ? file.type : "application/octet-stream",
             name: safeName(file.name || "attachment"), caption: "", ...image, durationMs: null };
  } catch (error) {
    api.deleteBlob(blob.id).catch(() => {});
    throw error;
  }
}

// Fetches and decrypts an attachment, checked against its SHA-256 and size: a Blob of its type.
export async function download(api, pointer) {
  const sealed = new Uint8Array(await api.blobContent(pointer.blob));
  const step = pointer.chunk + A.TAG_BYTES;
  const count = A.chunkCount(pointer.size, pointer.chunk);
  if (sealed.length !== A.ciphertextSize(pointer.size, pointer.chunk)) {
    throw new AttachmentCorrupt(`${pointer.name}: the attachment arrived cut short`);
  }
  const parts = [];
  try {
    for (let i = 0; i < count; i++) {
      parts.push(await A.decryptChunk(pointer.key, i, i === count - 1, sealed.subarray(i * step, (i + 1) * step)));
    }
  } catch (error) {
    throw new AttachmentCorrupt(`${pointer.name}: ${error.message}`);
  }
  const plain = new Blob(parts, { type: pointer.type });
  const digest = toHex(new Uint8Array(await crypto.subtle.digest("SHA-256", await plain.arrayBuffer())));
  if (digest !== pointer.sha256 || plain.size !== pointer.size) {
    throw new AttachmentCorrupt(`${pointer.name}: what arrived is not what was sent`);
  }
  return plain;
}

// What a file of this size takes on the server (the limits count ciphertext).
export function sealedSize(size) {
  return A.ciphertextSize(size, A.DEFAULT_CHUNK);
}

export function thumbBase64(pointer) {
  return b64(pointer.thumb);
}

export function humanSize(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)} KB`;
  return `${(bytes / 1024 / 1024).toFixed(1)} MB`;
}
