"""Safety numbers, as Signal computes them (libsignal's NumericFingerprintGenerator, version 0).

For each party: hash = SHA-512(version (2 bytes, 0) || key || identifier), then 5200 times
hash = SHA-512(hash || key); the first 30 bytes, as six 5-byte big-endian numbers mod 100000,
give 30 digits. The safety number is both parties' digits, the smaller string first, so that both
sides see the same 60 digits.

A SecureConnect user has one identity per device, so a party's key is the concatenation, in
device-id order, of each active device's Ed25519 signing key and X25519 identity key: a new or
replaced device changes the number, and the client says so.
"""

from __future__ import annotations

import hashlib

ITERATIONS = 5200
VERSION = (0).to_bytes(2, "big")


def party_key(devices: list[tuple[str, bytes, bytes]]) -> bytes:
    """``devices``: (device id, signing key, identity key) of one user's active devices."""
    return b"".join(sk + ik for _, sk, ik in sorted(devices))


def fingerprint(identifier: str, key: bytes) -> str:
    digest = hashlib.sha512(VERSION + key + identifier.encode()).digest()
    for _ in range(ITERATIONS):
        digest = hashlib.sha512(digest + key).digest()
    chunks = (int.from_bytes(digest[i : i + 5], "big") % 100000 for i in range(0, 30, 5))
    return "".join(f"{chunk:05d}" for chunk in chunks)


def safety_number(local_id: str, local_key: bytes, remote_id: str, remote_key: bytes) -> str:
    ours, theirs = fingerprint(local_id, local_key), fingerprint(remote_id, remote_key)
    return ours + theirs if ours < theirs else theirs + ours


def display(number: str) -> str:
    """Twelve groups of five digits, as Signal shows them."""
    return " ".join(number[i : i + 5] for i in range(0, len(number), 5))
