// The call's media encryption, off the main thread: every encoded frame this browser sends is
// encrypted here with SFrame before it leaves, and every frame received is decrypted here before
// the decoder sees it (RTCRtpScriptTransform). A frame with no key to send under is dropped,
// never sent in the clear; a frame that does not decrypt is dropped and counted.
import * as SF from "./crypto/sframe.js";

const RATCHET_AHEAD = 16;     // generations a receiver will ratchet forward by itself
const KEEP_OLD_MS = 5000;     // old keys kept for frames still in flight

let sending = null;           // { key, ctr }
const keys = new Map();       // KID (BigInt) -> derived key
const bases = new Map();      // sender tag -> { gen, base }
const failures = { unknownKey: 0, badFrame: 0 };
const missingTags = new Set();
let decrypted = 0;

const tagOf = (kid) => kid >> 8n;
const genOf = (kid) => Number(kid & 0xffn);

async function learn(kid, base) {
  kid = BigInt(kid);
  keys.set(kid, await SF.derive(base, kid));
  const tag = tagOf(kid);
  const known = bases.get(tag);
  if (!known || known.gen <= genOf(kid)) bases.set(tag, { gen: genOf(kid), base });
  // Frames under this key came first and were dropped: the decoder now needs a key frame,
  // which the sender's encoder may not make for minutes unless asked.
  if (missingTags.delete(tag)) self.postMessage({ type: "recovered", tag: String(tag) });
}

// A sender ratchets forward when someone joins; receivers follow it without being told.
async function keyFor(kid) {
  const found = keys.get(kid);
  if (found) return found;
  const known = bases.get(tagOf(kid));
  const ahead = known ? genOf(kid) - known.gen : -1;
  if (!known || ahead <= 0 || ahead > RATCHET_AHEAD) {
    missingTags.add(tagOf(kid));
    return undefined;
  }
  let base = known.base;
  for (let i = 0; i < ahead; i++) base = await SF.ratchet(base);
  await learn(kid, base);
  return keys.get(kid);
}

function kindOf(frame, mediaKind) {
  if (mediaKind === "audio") return "audio";
  return frame.type === "key" ? "key" : "delta";
}

function encryptor(mediaKind) {
  return async (frame, controller) => {
    if (!sending) return;  // no key yet: nothing leaves unencrypted
    const data = new Uint8Array(frame.data);
    const out = await SF.protect(sending.key, sending.ctr++, data, kindOf(frame, mediaKind));
    frame.data = out.buffer;
    controller.enqueue(frame);
  };
}

function decryptor(mediaKind) {
  return async (frame, controller) => {
    const data = new Uint8Array(frame.data);
    const kind = kindOf(frame, mediaKind);
    try {
      const clear = data.subarray(0, SF.CLEAR_BYTES[kind]);
      const [kid] = SF.parseHeader(data.subarray(clear.length));
      await keyFor(kid);
      const plain = await SF.unprotect((k) => keys.get(k), data, kind);
      frame.data = plain.buffer;
      decrypted++;
      controller.enqueue(frame);
    } catch (error) {
      if (error.code === "unknown_key") failures.unknownKey++;
      else failures.badFrame++;
    }
  };
}

self.onrtctransform = (event) => {
  const { operation, kind } = event.transformer.options;
  const transform = operation === "encrypt" ? encryptor(kind) : decryptor(kind);
  event.transformer.readable
    .pipeThrough(new TransformStream({ transform }))
    .pipeTo(event.transformer.writable)
    .catch(() => {});
};

self.onmessage = async ({ data }) => {
  if (data.type === "send") {
    const kid = BigInt(data.kid);
    sending = { key: await SF.derive(data.base, kid), ctr: 0 };
  } else if (data.type === "receive") {
    await learn(data.kid, data.base);
  } else if (data.type === "forget") {
    // Someone left: keys of senders who replaced theirs go after frames in flight are done.
    const old = [...keys.keys()].filter((kid) => data.tags.includes(String(tagOf(kid))));
    setTimeout(() => { for (const kid of old) keys.delete(kid); }, KEEP_OLD_MS);
  } else if (data.type === "stats") {
    self.postMessage({ type: "stats", decrypted, failures: { ...failures },
      missing: [...missingTags].map(String) });
    failures.unknownKey = 0;
    failures.badFrame = 0;
  }
};
