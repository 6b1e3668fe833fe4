"""SFrame (RFC 9605) with AES_128_GCM_SHA256_128, as calls encrypt their media frames.

The browser encrypts and decrypts in a worker (``static/js/crypto/sframe.js``, through
``RTCRtpScriptTransform``); this module is the same format in Python, for the shared vectors and
for tools that check what crossed the SFU. Both pass RFC 9605's own test vector.

A media frame on the wire is ``clear || SFrame(header || ciphertext)``: the first bytes of the
codec's payload (``clear``: VP8's frame tag and, on a key frame, its size; Opus's TOC byte)
stay readable so that the receiving depacketizer, and the SFU switching simulcast layers, can
see what kind of frame it is; they are authenticated as SFrame's metadata, so changing them
breaks decryption.

Keys: each device makes a random 32-byte base key per call; its KID is a random 24-bit sender
tag followed by an 8-bit generation. When someone joins, every sender ratchets forward
(``ratchet``: the generation goes up, and whoever joins cannot go back); when someone leaves,
every sender makes a fresh key with a new tag, which the leaver never receives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from secureconnect.crypto.primitives import CryptoError, hkdf

CIPHER_SUITE = 0x0004  # AES_128_GCM_SHA256_128
NK, NN, NH = 16, 12, 32
KEY_LABEL = b"SFrame 1.0 Secret key "
SALT_LABEL = b"SFrame 1.0 Secret salt "
RATCHET_LABEL = b"SFrame 1.0 Ratchet"
MAX_GENERATION = 0xFF
# Bytes of the payload left in the clear, by frame kind (what Jitsi leaves, for the same reason).
CLEAR_BYTES = {"key": 10, "delta": 3, "audio": 1}


@dataclass(frozen=True)
class FrameKey:
    kid: int
    key: bytes
    salt: bytes


def derive(base_key: bytes, kid: int) -> FrameKey:
    """RFC 9605 section 4.4.2: key and salt from a base key, bound to its KID and suite."""
    context = kid.to_bytes(8, "big") + CIPHER_SUITE.to_bytes(2, "big")
    return FrameKey(
        kid,
        hkdf(base_key, b"", KEY_LABEL + context, NK),
        hkdf(base_key, b"", SALT_LABEL + context, NN),
    )


def ratchet(base_key: bytes) -> bytes:
    """The next generation's base key (RFC 9605 section 5.1): one way, so a participant given
    this one cannot compute the one before."""
    return hkdf(base_key, b"", RATCHET_LABEL, NH)


def _minimal(value: int) -> bytes:
    return value.to_bytes(max(1, (value.bit_length() + 7) // 8), "big")


def encode_header(kid: int, ctr: int) -> bytes:
    """``|X|K|Y|C|`` then KID and CTR: values below 8 fit in the config byte itself."""
    if not (0 <= kid < 2**64 and 0 <= ctr < 2**64):
        raise ValueError("KID and CTR are 64-bit unsigned integers")
    config, tail = 0, b""
    if kid < 8:
        config |= kid << 4
    else:
        kid_bytes = _minimal(kid)
        config |= 0x80 | (len(kid_bytes) - 1) << 4
        tail += kid_bytes
    if ctr < 8:
        config |= ctr
    else:
        ctr_bytes = _minimal(ctr)
        config |= 0x08 | (len(ctr_bytes) - 1)
        tail += ctr_bytes
    return bytes([config]) + tail


def parse_header(data: bytes) -> tuple[int, int, int]:
    """(KID, CTR, header length); ``CryptoError`` ``bad_frame`` for a truncated one."""
    if not data:
        raise CryptoError("bad_frame", "empty SFrame")
    config, at = data[0], 1
    if config & 0x80:
        size = ((config >> 4) & 0x7) + 1
        kid, at = int.from_bytes(data[at : at + size], "big"), at + size
    else:
        kid = (config >> 4) & 0x7
    if config & 0x08:
        size = (config & 0x7) + 1
        ctr, at = int.from_bytes(data[at : at + size], "big"), at + size
    else:
        ctr = config & 0x7
    if at > len(data):
        raise CryptoError("bad_frame", "truncated SFrame header")
    return kid, ctr, at


def _nonce(salt: bytes, ctr: int) -> bytes:
    return bytes(a ^ b for a, b in zip(salt, ctr.to_bytes(NN, "big"), strict=True))


def encrypt(key: FrameKey, ctr: int, metadata: bytes, plaintext: bytes) -> bytes:
    header = encode_header(key.kid, ctr)
    sealed = AESGCM(key.key).encrypt(_nonce(key.salt, ctr), plaintext, header + metadata)
    return header + sealed


def decrypt(keys: Callable[[int], FrameKey | None], metadata: bytes, sframe: bytes) -> bytes:
    """``keys``: the receiver's key for a KID, or None (then ``unknown_key``: ask for it)."""
    kid, ctr, size = parse_header(sframe)
    key = keys(kid)
    if key is None:
        raise CryptoError("unknown_key", f"no media key with KID {kid}")
    try:
        return AESGCM(key.key).decrypt(
            _nonce(key.salt, ctr), sframe[size:], sframe[:size] + metadata
        )
    except InvalidTag as error:
        raise CryptoError("bad_frame", "this frame does not decrypt with its key") from error


def protect(key: FrameKey, ctr: int, frame: bytes, kind: str) -> bytes:
    """A media frame as it goes to the SFU: its first bytes in clear, authenticated."""
    clear = frame[: CLEAR_BYTES[kind]]
    return clear + encrypt(key, ctr, clear, frame[len(clear) :])


def unprotect(keys: Callable[[int], FrameKey | None], data: bytes, kind: str) -> bytes:
    clear = data[: CLEAR_BYTES[kind]]
    return clear + decrypt(keys, clear, data[len(clear) :])
