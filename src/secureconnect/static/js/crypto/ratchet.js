// The Double Ratchet as in secureconnect/crypto/ratchet.py.
import {
  CryptoError, aeadDecrypt, aeadEncrypt, b64, concat, dh, dhKeyPair, equal, generateDH, hkdf,
  hmacSha256, messageKeyMaterial, readU32, systemRandom, u32, unb64, utf8,
} from "./primitives.js";

const RK_INFO = utf8("SecureConnect_Ratchet_v1");
const MK_INFO = "SecureConnect_Message_v1";
const MAX_SKIP = 1000;
const MAX_STORED = 2000;
const MAX_OLD_CHAINS = 20;

async function kdfRk(rk, dhOut) {
  const out = await hkdf(dhOut, rk, RK_INFO, 64);
  return [out.slice(0, 32), out.slice(32)];
}

async function kdfCk(ck) {
  return [await hmacSha256(ck, new Uint8Array([2])), await hmacSha256(ck, new Uint8Array([1]))];
}

export function encodeHeader(dhPub, pn, n) {
  return concat(dhPub, u32(pn), u32(n));
}

export function decodeHeader(h) {
  if (h.length !== 40) throw new CryptoError("bad_header", "ratchet header must be 40 bytes");
  return [h.slice(0, 32), readU32(h, 32), readU32(h, 36)];
}

const skippedKey = (dhPub, n) => `${b64(dhPub)}|${n}`;

export class Ratchet {
  constructor(s) {
    Object.assign(this, s);
  }

  static async forInitiator(secret, ad, responderSpk, rng = systemRandom) {
    const dhs = await generateDH(rng);
    const [rk, cks] = await kdfRk(secret, await dh(dhs.private, responderSpk));
    return new Ratchet({ ad, dhs, dhr: responderSpk, rk, cks, ckr: null, ns: 0, nr: 0, pn: 0,
      skipped: new Map(), oldDhr: [] });
  }

  static forResponder(secret, ad, spk) {
    return new Ratchet({ ad, dhs: spk, dhr: null, rk: secret, cks: null, ckr: null, ns: 0, nr: 0,
      pn: 0, skipped: new Map(), oldDhr: [] });
  }

  async encrypt(plaintext) {
    if (!this.cks) throw new CryptoError("no_session", "cannot send before receiving");
    const [next, mk] = await kdfCk(this.cks);
    this.cks = next;
    const header = encodeHeader(this.dhs.public, this.pn, this.ns);
    this.ns += 1;
    const [key, nonce] = await messageKeyMaterial(mk, MK_INFO);
    return [header, await aeadEncrypt(key, nonce, plaintext, concat(this.ad, header))];
  }

  // Decrypts, or throws and leaves the session exactly as it was.
  async decrypt(header, ciphertext, rng = systemRandom) {
    const trial = new Ratchet({ ...this, skipped: new Map(this.skipped), oldDhr: [...this.oldDhr] });
    const plaintext = await trial._decrypt(header, ciphertext, rng);
    Object.assign(this, trial);
    return plaintext;
  }

  async _decrypt(header, ciphertext, rng) {
    const [dhPub, pn, n] = decodeHeader(header);
    const slot = skippedKey(dhPub, n);
    if (this.skipped.has(slot)) {
      const mk = this.skipped.get(slot);
      this.skipped.delete(slot);
      return this._open(mk, header, ciphertext);
    }
    if (this.oldDhr.some((k) => equal(k, dhPub))) {
      throw new CryptoError("replay", "message already received (or its key was forgotten)");
    }
    if (!this.dhr || !equal(dhPub, this.dhr)) {
      await this._skip(pn);
      await this._step(dhPub, rng);
    } else if (n < this.nr) {
      throw new CryptoError("replay", "message already received (or its key was forgotten)");
    }
    await this._skip(n);
    const [next, mk] = await kdfCk(this.ckr);
    this.ckr = next;
    this.nr += 1;
    return this._open(mk, header, ciphertext);
  }

  async _open(mk, header, ciphertext) {
    const [key, nonce] = await messageKeyMaterial(mk, MK_INFO);
    return aeadDecrypt(key, nonce, ciphertext, concat(this.ad, header));
  }

  async _skip(until) {
    if (!this.ckr) return;
    if (until - this.nr > MAX_SKIP) {
      throw new CryptoError("too_many_skipped", `more than ${MAX_SKIP} messages missing`);
    }
    while (this.nr < until) {
      const [next, mk] = await kdfCk(this.ckr);
      this.ckr = next;
      this.skipped.set(skippedKey(this.dhr, this.nr), mk);
      this.nr += 1;
      while (this.skipped.size > MAX_STORED) this.skipped.delete(this.skipped.keys().next().value);
    }
  }

  async _step(dhPub, rng) {
    this.pn = this.ns;
    this.ns = 0;
    this.nr = 0;
    if (this.dhr) this.oldDhr = [...this.oldDhr, this.dhr].slice(-MAX_OLD_CHAINS);
    this.dhr = dhPub;
    [this.rk, this.ckr] = await kdfRk(this.rk, await dh(this.dhs.private, this.dhr));
    this.dhs = await generateDH(rng);
    [this.rk, this.cks] = await kdfRk(this.rk, await dh(this.dhs.private, this.dhr));
  }

  toJSON() {
    const o = (v) => (v ? b64(v) : null);
    return {
      ad: b64(this.ad), dhs: b64(this.dhs.private), dhr: o(this.dhr), rk: b64(this.rk),
      cks: o(this.cks), ckr: o(this.ckr), ns: this.ns, nr: this.nr, pn: this.pn,
      skipped: [...this.skipped].map(([k, mk]) => {
        const [d, n] = k.split("|");
        return [d, Number(n), b64(mk)];
      }),
      old_dhr: this.oldDhr.map(b64),
    };
  }

  static async fromJSON(d) {
    const o = (v) => (v ? unb64(v) : null);
    return new Ratchet({
      ad: unb64(d.ad), dhs: await dhKeyPair(unb64(d.dhs)), dhr: o(d.dhr), rk: unb64(d.rk),
      cks: o(d.cks), ckr: o(d.ckr), ns: d.ns, nr: d.nr, pn: d.pn,
      skipped: new Map(d.skipped.map(([k, n, mk]) => [`${k}|${n}`, unb64(mk)])),
      oldDhr: (d.old_dhr || []).map(unb64),
    });
  }
}
