// The pairwise (inbox) envelope, as secureconnect/crypto/pairwise.py writes it.
import { CryptoError, b64, canonicalJson, unb64, utf8 } from "./primitives.js";

export function encode(initial, header, ciphertext) {
  const env = { v: 1, alg: "dr1", h: b64(header), ct: b64(ciphertext) };
  if (initial) {
    env.x3dh = { ik: b64(initial.identityKey), sk: b64(initial.signingKey),
      ek: b64(initial.ephemeralKey), spk: initial.spkId, opk: initial.opkId };
  }
  return utf8(canonicalJson(env));
}

export function decode(body) {
  let env;
  try {
    env = JSON.parse(typeof body === "string" ? body : new TextDecoder().decode(body));
  } catch (error) {
    throw new CryptoError("bad_envelope", "malformed pairwise envelope");
  }
  if (!env || env.v !== 1) throw new CryptoError("unsupported_version", "unknown protocol version");
  if (env.alg !== "dr1") throw new CryptoError("bad_envelope", "not a pairwise message");
  let initial = null;
  if (env.x3dh) {
    const x = env.x3dh;
    initial = { identityKey: unb64(x.ik), signingKey: unb64(x.sk), ephemeralKey: unb64(x.ek),
      spkId: x.spk, opkId: x.opk };
  }
  return [initial, unb64(env.h), unb64(env.ct)];
}
