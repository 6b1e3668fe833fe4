"""Sender keys: how one ciphertext in a conversation is readable by every member's devices.

Each sending device has, per conversation, a chain key that advances by HMAC-SHA256 with every
message (as in Signal's Sender Keys and Matrix's Megolm) and an Ed25519 key that signs every
message. Members' devices receive the chain key *at its current position* over pairwise sessions,
so a newcomer can read what follows and nothing before. Removing a member makes every remaining
sender start a new key, which the removed member never receives.

Wire form (a conversation message body, content type ``application/vnd.secureconnect.e2ee+json``):
``{"v": 1, "alg": "sk1", "dev": sender device, "kid": key id, "i": iteration, "ct": base64,
"sig": base64}``. The AEAD's associated data and the signed bytes both begin with the context
(conversation, sender device, key id, iteration), so a ciphertext cannot be replayed elsewhere.
"""

from __future__ import annotations

import base64
import json
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from secureconnect.crypto import PROTOCOL_VERSION
from secureconnect.crypto.primitives import (
    CryptoError,
    Random,
    SigningKeyPair,
    aead_decrypt,
    aead_encrypt,
    b64,
    hmac_sha256,
    message_key_material,
    system_random,
    unb64,
    verify,
)

CONTENT_TYPE = "application/vnd.secureconnect.e2ee+json"
MK_INFO = b"SecureConnect_SenderKey_v1"
CONTEXT_LABEL = b"SC-MSG-v1"
MAX_SKIP = 2000  # iterations a receiver will jump ahead in one go
MAX_STORED = 2000  # skipped message keys kept per sender key for late messages
ROTATE_AFTER_MESSAGES = 100
ROTATE_AFTER_SECONDS = 7 * 24 * 3600


def advance(chain_key: bytes) -> tuple[bytes, bytes]:
    """(next chain key, message key)."""
    return hmac_sha256(chain_key, b"\x02"), hmac_sha256(chain_key, b"\x01")


def _lp(value: str) -> bytes:
    raw = value.encode()
    return len(raw).to_bytes(2, "big") + raw


def context(conversation_id: str, device_id: str, key_id: int, iteration: int) -> bytes:
    return (
        CONTEXT_LABEL
        + _lp(conversation_id)
        + _lp(device_id)
        + key_id.to_bytes(4, "big")
        + iteration.to_bytes(4, "big")
    )


AEAD_TAG_BYTES = 16  # AES-256-GCM's tag
SIGNATURE_B64_CHARS = 88  # an Ed25519 signature (64 bytes), base64


def encode(envelope: dict[str, Any]) -> bytes:
    """Canonical JSON (sorted keys, no spaces): the bytes the vectors pin down."""
    return json.dumps(envelope, sort_keys=True, separators=(",", ":")).encode()


def decode(body: bytes) -> dict[str, Any]:
    try:
        envelope = json.loads(body)
    except ValueError as error:
        raise CryptoError("bad_envelope", "message is not an encrypted envelope") from error
    if not isinstance(envelope, dict) or envelope.get("v") != PROTOCOL_VERSION:
        raise CryptoError("unsupported_version", "unknown encryption protocol version")
    if envelope.get("alg") != "sk1":
        raise CryptoError("bad_envelope", "not a sender-key message")
    try:
        kid, i, dev = envelope["kid"], envelope["i"], envelope["dev"]
        if not (isinstance(kid, int) and isinstance(i, int) and isinstance(dev, str)):
            raise TypeError
        base64.b64decode(envelope["ct"], validate=True)
        base64.b64decode(envelope["sig"], validate=True)
    except (KeyError, TypeError, ValueError) as error:
        raise CryptoError("bad_envelope", "malformed encrypted envelope") from error
    return envelope


@dataclass
class OutboundSenderKey:
    key_id: int
    chain_key: bytes
    iteration: int
    signing: SigningKeyPair
    created_at: float
    shared_with: set[str] = field(default_factory=set)
    # The chain key at iteration 0, kept so that a member who missed this key can be given it
    # from the message they need on (and no earlier).
    initial_chain_key: bytes = b""

    def __post_init__(self) -> None:
        if not self.initial_chain_key and self.iteration == 0:
            self.initial_chain_key = self.chain_key

    @classmethod
    def generate(cls, rng: Random = system_random, now: float | None = None) -> OutboundSenderKey:
        return cls(
            key_id=int.from_bytes(rng(4), "big"),
            chain_key=rng(32),
            iteration=0,
            signing=SigningKeyPair.generate(rng),
            created_at=time.time() if now is None else now,
        )

    def due_for_rotation(self, now: float | None = None) -> bool:
        age = (time.time() if now is None else now) - self.created_at
        return self.iteration >= ROTATE_AFTER_MESSAGES or age >= ROTATE_AFTER_SECONDS

    def share(self) -> dict[str, Any]:
        """What a member's device needs to read from the next message on."""
        return {
            "kid": self.key_id,
            "ck": b64(self.chain_key),
            "i": self.iteration,
            "spk": b64(self.signing.public),
        }

    def share_from(self, iteration: int) -> dict[str, Any]:
        """The key as it stood at ``iteration`` (which must not be in the future)."""
        if not 0 <= iteration <= self.iteration or not self.initial_chain_key:
            raise CryptoError("unknown_iteration", "cannot share this key from that message")
        chain = self.initial_chain_key
        for _ in range(iteration):
            chain, _mk = advance(chain)
        return {
            "kid": self.key_id,
            "ck": b64(chain),
            "i": iteration,
            "spk": b64(self.signing.public),
        }

    def encrypt(self, conversation_id: str, device_id: str, plaintext: bytes) -> bytes:
        ctx = context(conversation_id, device_id, self.key_id, self.iteration)
        self.chain_key, mk = advance(self.chain_key)
        key, nonce = message_key_material(mk, MK_INFO)
        ciphertext = aead_encrypt(key, nonce, plaintext, ctx)
        envelope = {
            "v": PROTOCOL_VERSION,
            "alg": "sk1",
            "dev": device_id,
            "kid": self.key_id,
            "i": self.iteration,
            "ct": b64(ciphertext),
            "sig": b64(self.signing.sign(ctx + ciphertext)),
        }
        self.iteration += 1
        return encode(envelope)

    def envelope_size(self, device_id: str, plaintext_len: int) -> int:
        """The exact length of what :meth:`encrypt` would return for that much plaintext,
        without advancing the chain: so a client can refuse a message that is too long before
        it spends a message key on it."""
        sealed = plaintext_len + AEAD_TAG_BYTES
        template = {
            "v": PROTOCOL_VERSION,
            "alg": "sk1",
            "dev": device_id,
            "kid": self.key_id,
            "i": self.iteration,
            "ct": "A" * (4 * -(-sealed // 3)),
            "sig": "A" * SIGNATURE_B64_CHARS,
        }
        return len(encode(template))

    def to_json(self) -> dict[str, Any]:
        return {
            "kid": self.key_id,
            "ck": b64(self.chain_key),
            "i": self.iteration,
            "sig": b64(self.signing.private),
            "created_at": self.created_at,
            "shared_with": sorted(self.shared_with),
            "ck0": b64(self.initial_chain_key),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OutboundSenderKey:
        return cls(
            data["kid"],
            unb64(data["ck"]),
            data["i"],
            SigningKeyPair.from_private(unb64(data["sig"])),
            data["created_at"],
            set(data["shared_with"]),
            unb64(data["ck0"]),
        )


@dataclass
class InboundSenderKey:
    key_id: int
    chain_key: bytes
    iteration: int
    signing_public: bytes
    skipped: OrderedDict[int, bytes] = field(default_factory=OrderedDict)

    @classmethod
    def from_share(cls, share: dict[str, Any]) -> InboundSenderKey:
        return cls(share["kid"], unb64(share["ck"]), share["i"], unb64(share["spk"]))

    def decrypt(self, conversation_id: str, envelope: dict[str, Any]) -> bytes:
        """Verifies, then decrypts; each message decrypts once (a replay is refused)."""
        i, device_id = envelope["i"], envelope["dev"]
        ciphertext = unb64(envelope["ct"])
        ctx = context(conversation_id, device_id, self.key_id, i)
        verify(self.signing_public, ctx + ciphertext, unb64(envelope["sig"]))
        if i < self.iteration:
            mk = self.skipped.get(i)
            if mk is None:
                raise CryptoError("replay", "message already read, or older than this key")
            plaintext = self._open(mk, ciphertext, ctx)
            del self.skipped[i]
            return plaintext
        if i - self.iteration > MAX_SKIP:
            raise CryptoError("too_many_skipped", f"more than {MAX_SKIP} messages missing")
        chain, skipped = self.chain_key, OrderedDict(self.skipped)
        for n in range(self.iteration, i):
            chain, skipped[n] = advance(chain)
        chain, mk = advance(chain)
        plaintext = self._open(mk, ciphertext, ctx)
        while len(skipped) > MAX_STORED:
            skipped.popitem(last=False)
        self.chain_key, self.iteration, self.skipped = chain, i + 1, skipped
        return plaintext

    @staticmethod
    def _open(mk: bytes, ciphertext: bytes, ctx: bytes) -> bytes:
        key, nonce = message_key_material(mk, MK_INFO)
        return aead_decrypt(key, nonce, ciphertext, ctx)

    def to_json(self) -> dict[str, Any]:
        return {
            "kid": self.key_id,
            "ck": b64(self.chain_key),
            "i": self.iteration,
            "spk": b64(self.signing_public),
            "skipped": [[n, b64(mk)] for n, mk in self.skipped.items()],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InboundSenderKey:
        return cls(
            data["kid"],
            unb64(data["ck"]),
            data["i"],
            unb64(data["spk"]),
            OrderedDict((n, unb64(mk)) for n, mk in data["skipped"]),
        )
