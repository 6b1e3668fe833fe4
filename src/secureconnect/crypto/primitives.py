"""Thin, strict wrappers over `cryptography`: fixed sizes, raw 32-byte keys, clear errors.

Every key generation takes a :class:`Random` so that tests and vectors can fix the randomness.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
from dataclasses import dataclass
from typing import Protocol

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from secureconnect.errors import SecureConnectError

KEY_BYTES = 32
_RAW = serialization.Encoding.Raw
_RAW_PUBLIC = serialization.PublicFormat.Raw
_RAW_PRIVATE = serialization.PrivateFormat.Raw
_NO_ENCRYPTION = serialization.NoEncryption()


def b64(value: bytes) -> str:
    """Standard base64, the encoding of every key and ciphertext on the wire and at rest."""
    return base64.b64encode(value).decode()


def unb64(value: str) -> bytes:
    return base64.b64decode(value, validate=True)


class CryptoError(SecureConnectError):
    """A message or key failed a check: it must be dropped, never half-trusted."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class Random(Protocol):
    def __call__(self, n: int) -> bytes: ...


def system_random(n: int) -> bytes:
    return os.urandom(n)


class FixedRandom:
    """Deterministic randomness for test vectors: SHA-256 in counter mode over a seed.

    Never for real keys; it exists so that every vector can be regenerated from its inputs.
    """

    def __init__(self, seed: bytes) -> None:
        self.seed = seed
        self.counter = 0

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            out += hashlib.sha256(self.seed + self.counter.to_bytes(8, "big")).digest()
            self.counter += 1
        return out[:n]


@dataclass(frozen=True)
class DHKeyPair:
    private: bytes
    public: bytes

    @classmethod
    def generate(cls, rng: Random = system_random) -> DHKeyPair:
        return cls.from_private(rng(KEY_BYTES))

    @classmethod
    def from_private(cls, private: bytes) -> DHKeyPair:
        key = X25519PrivateKey.from_private_bytes(private)
        return cls(private, key.public_key().public_bytes(_RAW, _RAW_PUBLIC))


@dataclass(frozen=True)
class SigningKeyPair:
    private: bytes
    public: bytes

    @classmethod
    def generate(cls, rng: Random = system_random) -> SigningKeyPair:
        return cls.from_private(rng(KEY_BYTES))

    @classmethod
    def from_private(cls, private: bytes) -> SigningKeyPair:
        key = Ed25519PrivateKey.from_private_bytes(private)
        return cls(private, key.public_key().public_bytes(_RAW, _RAW_PUBLIC))

    def sign(self, message: bytes) -> bytes:
        return Ed25519PrivateKey.from_private_bytes(self.private).sign(message)


def dh(private: bytes, public: bytes) -> bytes:
    """X25519; refuses a peer key that yields the all-zero secret (a small-order point)."""
    if len(public) != KEY_BYTES:
        raise CryptoError("bad_key", "X25519 public keys are 32 bytes")
    try:
        shared = X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(public)
        )
    except ValueError as error:  # cryptography refuses the all-zero result
        raise CryptoError("bad_key", "X25519 key agreement failed (low-order key)") from error
    return shared


def verify(public: bytes, message: bytes, signature: bytes) -> None:
    if len(public) != KEY_BYTES or len(signature) != 64:
        raise CryptoError("bad_signature", "malformed Ed25519 key or signature")
    try:
        Ed25519PublicKey.from_public_bytes(public).verify(signature, message)
    except (InvalidSignature, ValueError) as error:
        raise CryptoError("bad_signature", "signature does not verify") from error


def hkdf(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)


def hmac_sha256(key: bytes, data: bytes) -> bytes:
    return hmac.new(key, data, hashlib.sha256).digest()


def aead_encrypt(key: bytes, nonce: bytes, plaintext: bytes, ad: bytes) -> bytes:
    return AESGCM(key).encrypt(nonce, plaintext, ad)


def aead_decrypt(key: bytes, nonce: bytes, ciphertext: bytes, ad: bytes) -> bytes:
    try:
        return AESGCM(key).decrypt(nonce, ciphertext, ad)
    except InvalidTag as error:
        raise CryptoError("bad_tag", "ciphertext or its associated data was altered") from error


def message_key_material(message_key: bytes, info: bytes) -> tuple[bytes, bytes]:
    """An AES-256-GCM key and a 96-bit nonce from a one-use message key.

    Each message key encrypts exactly one message, so a derived (not random) nonce is safe, and
    it makes ciphertexts reproducible from the vectors' inputs.
    """
    material = hkdf(message_key, b"\x00" * 32, info, 44)
    return material[:32], material[32:]
