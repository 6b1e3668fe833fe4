"""STUN Binding (RFC 5389), both ends: the request ``oncall diagnose`` sends, and the answer
video-service gives on its media probe port (UDP 5004, the runbook's ``nc -uz <pod-ip> 5004``).

Only Binding is spoken; no authentication, no other method: the answer says what address the
asker was seen at, which is all a reachability check needs and all it reveals.
"""

from __future__ import annotations

import ipaddress
import os
import struct

MAGIC_COOKIE = 0x2112A442
BINDING_REQUEST = 0x0001
BINDING_SUCCESS = 0x0101
XOR_MAPPED_ADDRESS = 0x0020
MAPPED_ADDRESS = 0x0001
HEADER = struct.Struct("!HHI12s")


def binding_request() -> tuple[bytes, bytes]:
    """(the request, its transaction id)."""
    transaction = os.urandom(12)
    return HEADER.pack(BINDING_REQUEST, 0, MAGIC_COOKIE, transaction), transaction


def _xor(raw: bytes, transaction: bytes) -> bytes:
    key = struct.pack("!I", MAGIC_COOKIE) + transaction
    return bytes(b ^ key[n] for n, b in enumerate(raw))


def binding_answer(request: bytes, host: str, port: int) -> bytes | None:
    """The Binding success for a Binding request from ``host:port``; None for anything else
    (not STUN, another method, a truncated packet): those get no answer at all."""
    if len(request) < HEADER.size:
        return None
    kind, length, cookie, transaction = HEADER.unpack(request[: HEADER.size])
    if kind != BINDING_REQUEST or cookie != MAGIC_COOKIE or len(request) != HEADER.size + length:
        return None
    address = ipaddress.ip_address(host)
    family = 0x01 if address.version == 4 else 0x02
    value = struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + _xor(
        address.packed, transaction
    )
    attribute = struct.pack("!HH", XOR_MAPPED_ADDRESS, len(value)) + value
    return HEADER.pack(BINDING_SUCCESS, len(attribute), MAGIC_COOKIE, transaction) + attribute


def mapped_address(answer: bytes, transaction: bytes) -> str:
    """``host:port`` from a Binding success (XOR-MAPPED-ADDRESS, or the old MAPPED-ADDRESS).

    Raises ``OSError`` when the answer is not a success for this transaction."""
    kind, length, cookie, got = HEADER.unpack(answer[: HEADER.size])
    if kind != BINDING_SUCCESS or cookie != MAGIC_COOKIE or got != transaction:
        raise OSError(f"not a STUN binding success (type 0x{kind:04x})")
    body = answer[HEADER.size : HEADER.size + length]
    while len(body) >= 4:
        attr, size = struct.unpack("!HH", body[:4])
        value = body[4 : 4 + size]
        if attr in (XOR_MAPPED_ADDRESS, MAPPED_ADDRESS) and len(value) >= 8:
            xor = attr == XOR_MAPPED_ADDRESS
            mapped_port = struct.unpack("!H", value[2:4])[0] ^ ((MAGIC_COOKIE >> 16) if xor else 0)
            raw = value[4:8] if value[1] == 0x01 else value[4:20]
            if xor:
                raw = _xor(raw, transaction)
            return f"{ipaddress.ip_address(raw)}:{mapped_port}"
        body = body[4 + size + (-size % 4) :]
    raise OSError("STUN answer without a mapped address")
