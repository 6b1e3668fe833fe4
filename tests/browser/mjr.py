"""Janus's own recordings (.mjr), read back as the frames Janus had: what an SFU operator could
capture of a call. The format: "MJR00002", a JSON header, then per RTP packet "MEET", a 4-byte
receive time, a 2-byte length and the packet (Janus's docs, "Recordings")."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Packet:
    ssrc: int
    seq: int
    timestamp: int
    marker: bool
    payload: bytes


def read(path: Path) -> tuple[dict[str, Any], list[Packet]]:
    data = path.read_bytes()
    if data[:8] != b"MJR00002":
        raise ValueError(f"{path.name} is not a Janus recording")
    size = int.from_bytes(data[8:10], "big")
    header = json.loads(data[10 : 10 + size])
    packets, at = [], 10 + size
    while at + 10 <= len(data) and data[at : at + 4] == b"MEET":
        length = int.from_bytes(data[at + 8 : at + 10], "big")
        packets.append(_rtp(data[at + 10 : at + 10 + length]))
        at += 10 + length
    return header, packets


def _rtp(packet: bytes) -> Packet:
    first, second = packet[0], packet[1]
    at = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # header extensions
        at += 4 + 4 * int.from_bytes(packet[at + 2 : at + 4], "big")
    end = len(packet) - (packet[-1] if first & 0x20 else 0)
    return Packet(
        ssrc=int.from_bytes(packet[8:12], "big"),
        seq=int.from_bytes(packet[2:4], "big"),
        timestamp=int.from_bytes(packet[4:8], "big"),
        marker=bool(second & 0x80),
        payload=packet[at:end],
    )


def vp8_frames(packets: list[Packet]) -> list[bytes]:
    """Whole frames, rebuilt from VP8's payload descriptor (RFC 7741); a frame with a packet
    missing is left out."""
    frames: list[bytes] = []
    parts: list[bytes] = []
    last: Packet | None = None
    for p in sorted(packets, key=lambda p: (p.ssrc, p.timestamp, p.seq)):
        start, body = _vp8_descriptor(p.payload)
        continuing = (
            last is not None
            and last.ssrc == p.ssrc
            and last.timestamp == p.timestamp
            and (last.seq + 1) % 65536 == p.seq
        )
        if start:
            parts = [body]
        elif continuing and parts:
            parts.append(body)
        else:
            parts = []
        if p.marker and parts:
            frames.append(b"".join(parts))
            parts = []
        last = p
    return frames


def _vp8_descriptor(payload: bytes) -> tuple[bool, bytes]:
    first, at = payload[0], 1
    if first & 0x80:  # X: an extension byte follows
        ext, at = payload[1], 2
        if ext & 0x80:  # I: picture id, 7 or 15 bits
            at += 2 if payload[at] & 0x80 else 1
        if ext & 0x40:  # L: TL0PICIDX
            at += 1
        if ext & 0x30:  # T or K: TID/KEYIDX
            at += 1
    return bool(first & 0x10) and first & 0x07 == 0, payload[at:]
