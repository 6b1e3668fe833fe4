"""The Double Ratchet ("The Double Ratchet Algorithm", Signal, rev. 1), section 3 with the
recommended functions of section 5.2, except that ENCRYPT is AES-256-GCM keyed from the message
key by HKDF (WebCrypto has it; the CBC+HMAC construction would be more code for the same end).

Header: DH public key (32 bytes) || PN (4 bytes, big-endian) || N (4 bytes, big-endian).
AEAD associated data: the session's X3DH associated data || header.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Any

from secureconnect.crypto.primitives import (
    CryptoError,
    DHKeyPair,
    Random,
    aead_decrypt,
    aead_encrypt,
    b64,
    dh,
    hkdf,
    hmac_sha256,
    message_key_material,
    system_random,
    unb64,
)

RK_INFO = b"SecureConnect_Ratchet_v1"
MK_INFO = b"SecureConnect_Message_v1"
MAX_SKIP = 1000  # message keys skipped in one chain before a message is refused
MAX_STORED = 2000  # skipped keys kept across chains; the oldest are forgotten first
HEADER_BYTES = 40
MAX_OLD_CHAINS = 20


def kdf_rk(rk: bytes, dh_out: bytes) -> tuple[bytes, bytes]:
    out = hkdf(dh_out, rk, RK_INFO, 64)
    return out[:32], out[32:]


def kdf_ck(ck: bytes) -> tuple[bytes, bytes]:
    """(next chain key, message key), section 5.2: HMAC with constants 0x02 and 0x01."""
    return hmac_sha256(ck, b"\x02"), hmac_sha256(ck, b"\x01")


def encode_header(dh_pub: bytes, pn: int, n: int) -> bytes:
    return dh_pub + pn.to_bytes(4, "big") + n.to_bytes(4, "big")


def decode_header(header: bytes) -> tuple[bytes, int, int]:
    if len(header) != HEADER_BYTES:
        raise CryptoError("bad_header", "ratchet header must be 40 bytes")
    return header[:32], int.from_bytes(header[32:36], "big"), int.from_bytes(header[36:], "big")


@dataclass
class Ratchet:
    ad: bytes
    dhs: DHKeyPair
    dhr: bytes | None
    rk: bytes
    cks: bytes | None
    ckr: bytes | None
    ns: int = 0
    nr: int = 0
    pn: int = 0
    skipped: OrderedDict[tuple[bytes, int], bytes] = field(default_factory=OrderedDict)
    # Earlier receiving chains: a message on one of them whose key is gone is a replay,
    # not a new ratchet step.
    old_dhr: list[bytes] = field(default_factory=list)

    @classmethod
    def for_initiator(
        cls, sk: bytes, ad: bytes, responder_spk: bytes, rng: Random = system_random
    ) -> Ratchet:
        dhs = DHKeyPair.generate(rng)
        rk, cks = kdf_rk(sk, dh(dhs.private, responder_spk))
        return cls(ad, dhs, responder_spk, rk, cks, None)

    @classmethod
    def for_responder(cls, sk: bytes, ad: bytes, spk: DHKeyPair) -> Ratchet:
        return cls(ad, spk, None, sk, None, None)

    def encrypt(self, plaintext: bytes) -> tuple[bytes, bytes]:
        if self.cks is None:
            raise CryptoError("no_session", "cannot send before receiving on this session")
        self.cks, mk = kdf_ck(self.cks)
        header = encode_header(self.dhs.public, self.pn, self.ns)
        self.ns += 1
        key, nonce = message_key_material(mk, MK_INFO)
        return header, aead_encrypt(key, nonce, plaintext, self.ad + header)

    def decrypt(self, header: bytes, ciphertext: bytes, rng: Random = system_random) -> bytes:
        """Decrypts, or raises and leaves the session exactly as it was."""
        trial = replace(self, skipped=OrderedDict(self.skipped), old_dhr=list(self.old_dhr))
        plaintext = trial._decrypt(header, ciphertext, rng)
        self.__dict__.update(trial.__dict__)
        return plaintext

    def _decrypt(self, header: bytes, ciphertext: bytes, rng: Random) -> bytes:
        dh_pub, pn, n = decode_header(header)
        stored = self.skipped.pop((dh_pub, n), None)
        if stored is not None:
            return self._open(stored, header, ciphertext)
        if dh_pub in self.old_dhr:
            raise CryptoError("replay", "message already received (or its key was forgotten)")
        if dh_pub != self.dhr:
            self._skip(pn)
            self._step(dh_pub, rng)
        elif n < self.nr:
            raise CryptoError("replay", "message already received (or its key was forgotten)")
        self._skip(n)
        assert self.ckr is not None
        self.ckr, mk = kdf_ck(self.ckr)
        self.nr += 1
        return self._open(mk, header, ciphertext)

    def _open(self, mk: bytes, header: bytes, ciphertext: bytes) -> bytes:
        key, nonce = message_key_material(mk, MK_INFO)
        return aead_decrypt(key, nonce, ciphertext, self.ad + header)

    def _skip(self, until: int) -> None:
        if self.ckr is None:
            return
        if until - self.nr > MAX_SKIP:
            raise CryptoError("too_many_skipped", f"more than {MAX_SKIP} messages missing")
        assert self.dhr is not None
        while self.nr < until:
            self.ckr, mk = kdf_ck(self.ckr)
            self.skipped[(self.dhr, self.nr)] = mk
            self.nr += 1
            while len(self.skipped) > MAX_STORED:
                self.skipped.popitem(last=False)

    def _step(self, dh_pub: bytes, rng: Random) -> None:
        self.pn, self.ns, self.nr = self.ns, 0, 0
        if self.dhr is not None:
            self.old_dhr = [*self.old_dhr, self.dhr][-MAX_OLD_CHAINS:]
        self.dhr = dh_pub
        self.rk, self.ckr = kdf_rk(self.rk, dh(self.dhs.private, self.dhr))
        self.dhs = DHKeyPair.generate(rng)
        self.rk, self.cks = kdf_rk(self.rk, dh(self.dhs.private, self.dhr))

    # ----- persistence ---------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        return {
            "ad": b64(self.ad),
            "dhs": b64(self.dhs.private),
            "dhr": _ob(self.dhr),
            "rk": b64(self.rk),
            "cks": _ob(self.cks),
            "ckr": _ob(self.ckr),
            "ns": self.ns,
            "nr": self.nr,
            "pn": self.pn,
            "skipped": [[b64(k[0]), k[1], b64(mk)] for k, mk in self.skipped.items()],
            "old_dhr": [b64(k) for k in self.old_dhr],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Ratchet:
        return cls(
            ad=unb64(data["ad"]),
            dhs=DHKeyPair.from_private(unb64(data["dhs"])),
            dhr=_ou(data["dhr"]),
            rk=unb64(data["rk"]),
            cks=_ou(data["cks"]),
            ckr=_ou(data["ckr"]),
            ns=data["ns"],
            nr=data["nr"],
            pn=data["pn"],
            skipped=OrderedDict(((unb64(k), n), unb64(mk)) for k, n, mk in data["skipped"]),
            old_dhr=[unb64(k) for k in data.get("old_dhr", [])],
        )


def _ob(value: bytes | None) -> str | None:
    return None if value is None else b64(value)


def _ou(value: str | None) -> bytes | None:
    return None if value is None else unb64(value)
