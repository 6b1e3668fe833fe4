"""Attachment encryption: AES-256-GCM over fixed-size chunks, so that a file of any size is
encrypted, uploaded, downloaded and decrypted a chunk at a time (``static/js/crypto/attachment.js``
repeats it; ``tests/vectors/attachment.json`` holds both to the same bytes).

Each attachment has its own random 32-byte key, used for nothing else, so the nonce of chunk
``i`` may simply count: 4 zero bytes, then ``i`` as 8 bytes big-endian. The associated data
binds each chunk to its place and marks the last one (as the STREAM construction of Hoang,
Reyhanitabar, Rogaway and Vizár does, and age after it): chunks cannot be reordered, dropped
or the file cut short without the tag failing. The key, the plaintext's SHA-256 and its size
travel inside the end-to-end encrypted message, so the server holds only ciphertext.
"""

from __future__ import annotations

from secureconnect.crypto.primitives import CryptoError, aead_decrypt, aead_encrypt

KEY_BYTES = 32
TAG_BYTES = 16
DEFAULT_CHUNK = 4 * 1024 * 1024  # plaintext bytes a chunk: 25 requests for 100 MiB
LABEL = b"SecureConnect attachment v1"


def nonce(index: int) -> bytes:
    return bytes(4) + index.to_bytes(8, "big")


def associated_data(index: int, last: bool) -> bytes:
    return LABEL + index.to_bytes(8, "big") + (b"\x01" if last else b"\x00")


def chunk_count(size: int, chunk: int) -> int:
    """An empty file is one empty chunk: there is always a last one to authenticate."""
    return max(1, -(-size // chunk))


def ciphertext_size(size: int, chunk: int) -> int:
    return size + chunk_count(size, chunk) * TAG_BYTES


def encrypt_chunk(key: bytes, index: int, last: bool, plaintext: bytes) -> bytes:
    return aead_encrypt(key, nonce(index), plaintext, associated_data(index, last))


def decrypt_chunk(key: bytes, index: int, last: bool, ciphertext: bytes) -> bytes:
    try:
        return aead_decrypt(key, nonce(index), ciphertext, associated_data(index, last))
    except CryptoError as error:
        raise CryptoError(
            "bad_attachment", f"chunk {index} of the attachment does not decrypt: altered or cut"
        ) from error
