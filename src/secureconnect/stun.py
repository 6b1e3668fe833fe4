"""STUN Binding (RFC 5389), both ends: the request ``oncall diagnose`` sends, and the answer
video-service gives on its media probe port (UDP 5004, the runbook's ``nc -uz <pod-ip> 5004``).

The server side speaks only Binding, with no authentication: the answer says what address the
asker was seen at, which is all a reachability check needs and all it reveals. The client side
also speaks TURN Allocate and CreatePermission, so that the diagnosis and the tests prove a real
allocation with the credentials a call hands out, and coturn's relay policy.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import socket
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


def stun_binding(host: str, port: int, timeout: float = 2.0) -> str:
    """Sends a Binding request and returns the address the server saw us at (XOR-MAPPED-ADDRESS).

    Raises ``OSError`` (refused, unreachable, not a STUN answer) or ``TimeoutError``."""
    request, transaction = binding_request()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        sock.send(request)
        return mapped_address(sock.recv(2048), transaction)


# ----- TURN (RFC 8656), the client side: enough to prove a credential and a relay policy -----

ALLOCATE = 0x0003
CREATE_PERMISSION = 0x0008
ERROR_CLASS = 0x0110
USERNAME = 0x0006
MESSAGE_INTEGRITY = 0x0008
ERROR_CODE = 0x0009
REALM = 0x0014
NONCE = 0x0015
XOR_PEER_ADDRESS = 0x0012
XOR_RELAYED_ADDRESS = 0x0016
REQUESTED_TRANSPORT = 0x0019
UDP = 17


def _attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def _attributes(body: bytes) -> dict[int, bytes]:
    found: dict[int, bytes] = {}
    while len(body) >= 4:
        attr, size = struct.unpack("!HH", body[:4])
        found.setdefault(attr, body[4 : 4 + size])
        body = body[4 + size + (-size % 4) :]
    return found


def _xor_address(host: str, port: int, transaction: bytes) -> bytes:
    address = ipaddress.ip_address(host)
    family = 0x01 if address.version == 4 else 0x02
    return struct.pack("!BBH", 0, family, port ^ (MAGIC_COOKIE >> 16)) + _xor(
        address.packed, transaction
    )


def _unxor_address(value: bytes, transaction: bytes) -> str:
    port = struct.unpack("!H", value[2:4])[0] ^ (MAGIC_COOKIE >> 16)
    raw = _xor(value[4:8] if value[1] == 0x01 else value[4:20], transaction)
    return f"{ipaddress.ip_address(raw)}:{port}"


class TurnRefused(OSError):
    """The TURN server answered with an error: ``code`` is its STUN error code (401, 403...)."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"TURN error {code}: {reason}")
        self.code = code


class TurnClient:
    """A TURN allocation over UDP with long-term credentials (MESSAGE-INTEGRITY, HMAC-SHA1
    keyed with MD5(username:realm:password), as RFC 8489 section 9.2 defines)."""

    def __init__(self, host: str, port: int, username: str, password: str) -> None:
        self.server = (host, port)
        self.username = username
        self.password = password
        self.realm = b""
        self.nonce = b""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(2.0)

    def close(self) -> None:
        self.sock.close()

    def _send(self, method: int, attributes: bytes) -> dict[int, bytes]:
        for _ in range(2):  # the first answer may be 401 with the realm and nonce to use
            transaction = os.urandom(12)
            body = attributes
            if self.nonce:
                body += _attribute(USERNAME, self.username.encode())
                body += _attribute(REALM, self.realm) + _attribute(NONCE, self.nonce)
                key = hashlib.md5(  # noqa: S324 - the key derivation RFC 8489 fixes
                    f"{self.username}:{self.realm.decode()}:{self.password}".encode()
                ).digest()
                header = HEADER.pack(method, len(body) + 24, MAGIC_COOKIE, transaction)
                mac = hmac.new(key, header + body, hashlib.sha1).digest()
                body += _attribute(MESSAGE_INTEGRITY, mac)
            self.sock.sendto(
                HEADER.pack(method, len(body), MAGIC_COOKIE, transaction) + body, self.server
            )
            answer = self.sock.recv(4096)
            kind, length, _, got = HEADER.unpack(answer[: HEADER.size])
            if got != transaction:
                raise OSError("TURN answer for another transaction")
            found = _attributes(answer[HEADER.size : HEADER.size + length])
            found[0] = transaction
            if kind & ERROR_CLASS != ERROR_CLASS:
                return found
            error = found.get(ERROR_CODE, b"\0\0\0\0")
            code = (error[2] & 0x7) * 100 + error[3]
            if code in (401, 438) and REALM in found and NONCE in found and not self.nonce:
                self.realm, self.nonce = found[REALM], found[NONCE]
                continue
            if code == 438 and NONCE in found:  # a stale nonce: once more with the new one
                self.nonce = found[NONCE]
                continue
            raise TurnRefused(code, error[4:].decode(errors="replace"))
        raise TurnRefused(401, "credentials refused")

    def allocate(self) -> str:
        """Allocates a UDP relay; returns its ``host:port``."""
        found = self._send(ALLOCATE, _attribute(REQUESTED_TRANSPORT, bytes([UDP, 0, 0, 0])))
        return _unxor_address(found[XOR_RELAYED_ADDRESS], found[0])

    def permit(self, peer: str) -> None:
        """Asks to relay to ``peer`` (an IPv4 address, whose XOR uses the magic cookie alone);
        :class:`TurnRefused` 403 when the server's policy forbids it."""
        transaction = os.urandom(12)
        self._send(
            CREATE_PERMISSION, _attribute(XOR_PEER_ADDRESS, _xor_address(peer, 0, transaction))
        )
