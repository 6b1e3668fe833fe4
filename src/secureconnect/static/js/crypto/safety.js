// Signal's numeric safety numbers, as secureconnect/crypto/safety.py computes them.
import { concat, utf8 } from "./primitives.js";

const ITERATIONS = 5200;

// devices: [[deviceId, signingKey, identityKey], ...] of one user's active devices.
export function partyKey(devices) {
  const sorted = [...devices].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  return concat(...sorted.map(([, sk, ik]) => concat(sk, ik)));
}

export async function fingerprint(identifier, key) {
  let digest = new Uint8Array(await crypto.subtle.digest("SHA-512", concat(new Uint8Array(2), key, utf8(identifier))));
  for (let i = 0; i < ITERATIONS; i++) {
    digest = new Uint8Array(await crypto.subtle.digest("SHA-512", concat(digest, key)));
  }
  let out = "";
  for (let at = 0; at < 30; at += 5) {
    let value = 0n;
    for (let j = 0; j < 5; j++) value = (value << 8n) | BigInt(digest[at + j]);
    out += (value % 100000n).toString().padStart(5, "0");
  }
  return out;
}

export async function safetyNumber(localId, localKey, remoteId, remoteKey) {
  const ours = await fingerprint(localId, localKey);
  const theirs = await fingerprint(remoteId, remoteKey);
  return ours < theirs ? ours + theirs : theirs + ours;
}

export function display(number) {
  return number.match(/.{5}/g).join(" ");
}
