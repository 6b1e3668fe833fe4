"""The media probe: video-service answers STUN Binding requests on UDP 5004, so that the
runbook's reachability check (23.6 step 3) gets a real answer, not just "open or filtered"."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

from secureconnect.stun import binding_answer

log = logging.getLogger("secureconnect.video")


class MediaProbe(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.answered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # What create_datagram_endpoint hands over; not every loop subclasses the asyncio type.
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        answer = binding_answer(data, str(addr[0]), addr[1])
        if answer is not None and self.transport is not None:
            self.transport.sendto(answer, addr)
            self.answered += 1


async def start_media_probe(host: str, port: int) -> asyncio.DatagramTransport | None:
    """Listening, or None (and a warning) when the port is taken: the probe must never stop
    the server from starting."""
    loop = asyncio.get_running_loop()
    try:
        transport, _ = await loop.create_datagram_endpoint(MediaProbe, local_addr=(host, port))
    except OSError as error:
        log.warning(
            "media probe not listening",
            extra={"fields": {"udp": f"{host}:{port}", "error": str(error)}},
        )
        return None
    log.info("media probe listening", extra={"fields": {"udp": f"{host}:{port}"}})
    return transport
