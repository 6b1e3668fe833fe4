// X3DH as in secureconnect/crypto/x3dh.py (Signal's spec; Ed25519 signing key for XEdDSA).
import {
  concat, dh, draw, generateDH, generateSigning, hkdf, sign, systemRandom, u32, utf8, verify,
} from "./primitives.js";

const INFO = utf8("SecureConnect_X3DH_v1");
const F = new Uint8Array(32).fill(0xff);

export const identityPayload = (ik) => concat(utf8("SC-IK-v1"), ik);
export const spkPayload = (id, spk) => concat(utf8("SC-SPK-v1"), u32(id), spk);

export async function generateIdentity(rng = systemRandom) {
  return { dh: await generateDH(rng), signing: await generateSigning(rng) };
}

export async function identitySig(identity) {
  return sign(identity.signing.private, identityPayload(identity.dh.public));
}

export async function signPrekey(identity, id, spk) {
  return sign(identity.signing.private, spkPayload(id, spk.public));
}

export async function verifyBundle(b) {
  await verify(b.signingKey, identityPayload(b.identityKey), b.identitySig);
  await verify(b.signingKey, spkPayload(b.spkId, b.spk), b.spkSig);
}

const kdf = (outputs) => hkdf(concat(F, ...outputs), new Uint8Array(32), INFO, 32);

export function associatedData(ikA, skA, ikB, skB) {
  return concat(ikA, skA, ikB, skB);
}

// Alice's side: returns { secret, ad, header } where header carries what Bob needs.
export async function initiate(own, bundle, rng = systemRandom) {
  await verifyBundle(bundle);
  const ek = await generateDH(rng);
  const outputs = [
    await dh(own.dh.private, bundle.spk),
    await dh(ek.private, bundle.identityKey),
    await dh(ek.private, bundle.spk),
  ];
  if (bundle.opk) outputs.push(await dh(ek.private, bundle.opk));
  return {
    secret: await kdf(outputs),
    ad: associatedData(own.dh.public, own.signing.public, bundle.identityKey, bundle.signingKey),
    header: {
      identityKey: own.dh.public, signingKey: own.signing.public, ephemeralKey: ek.public,
      spkId: bundle.spkId, opkId: bundle.opk ? bundle.opkId : null,
    },
  };
}

export async function respond(own, spk, opk, header) {
  const outputs = [
    await dh(spk.private, header.identityKey),
    await dh(own.dh.private, header.ephemeralKey),
    await dh(spk.private, header.ephemeralKey),
  ];
  if (opk) outputs.push(await dh(opk.private, header.ephemeralKey));
  return {
    secret: await kdf(outputs),
    ad: associatedData(header.identityKey, header.signingKey, own.dh.public, own.signing.public),
  };
}

export { draw };
