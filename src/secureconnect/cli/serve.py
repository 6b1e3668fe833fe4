"""Runs the server under uvicorn and says where to find it once it is listening."""

from __future__ import annotations

import faulthandler
import socket
from pathlib import Path
from typing import Any

import uvicorn

from secureconnect.app import create_app
from secureconnect.config import Settings
from secureconnect.edge.lean_ws import LeanWebSocketProtocol
from secureconnect.edge.logging import configure_logging
from secureconnect.edge.sentry import start_sentry
from secureconnect.heap import limit_arenas
from secureconnect.ops.runfile import RunFile

WS_MIN_FRAME = 64 * 1024


def ws_max_frame(settings: Settings) -> int:
    """The largest frame a device may send: a ``send`` frame carries a whole message, base64."""
    return max(WS_MIN_FRAME, 4 * -(-settings.max_message_bytes // 3) + 4096)


def _listen(host: str, port: int) -> socket.socket:
    """The server's socket, bound before anything else starts. Janus and coturn pick free ports
    of their own during startup; when uvicorn bound only after that, one of them could take
    this port first (seen in CI: "address already in use", and the server exited)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise SystemExit(
            f"secureconnect: cannot listen on {host}:{port}: {error.strerror}"
        ) from None
    return sock


def serve(settings: Settings) -> None:
    limit_arenas()  # before any thread starts (secureconnect/heap.py)
    configure_logging(settings.log_level, settings.log_file)
    start_sentry(settings)
    # Bound now, not by uvicorn after startup: the app names itself by its address (a
    # video-service replica tells the others where to forward a call's requests), and nothing
    # started meanwhile can take the port.
    sock = _listen(settings.host, settings.port)
    settings = settings.model_copy(update={"port": int(sock.getsockname()[1])})
    if settings.log_file is not None:
        # A hard crash (segmentation fault, abort) then leaves its trace in the log the
        # diagnosis reads, like `kubectl logs` shows a pod's last words (runbook 23.5).
        faulthandler.enable(open(settings.log_file, "a"))  # noqa: SIM115 - open until exit
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # Said, not guessed: the app's __call__ hands over a coroutine rather than being one
        # (app.py), which uvicorn's guess would take for the old two-step interface.
        interface="asgi3",
        # uvloop and httptools when installed ("auto"); `uvicorn[standard]` brings both.
        loop="auto",
        http=_http_protocol(settings),
        # uvicorn's websockets-sansio protocol, keeping less per idle socket (edge/lean_ws.py).
        ws=LeanWebSocketProtocol,
        server_header=False,  # what runs the platform is nobody else's business
        ws_max_size=ws_max_frame(settings),
        # Bodies are ciphertext, which does not compress; a deflate context per connection
        # would cost memory and CPU for nothing (docs/decisions/0002).
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_interval_s,
        ws_ping_timeout=settings.ws_ping_timeout_s,
        timeout_graceful_shutdown=int(settings.shutdown_grace_s),
        # Behind the ingress, the client's address is in X-Forwarded-For; believed only from
        # the proxies named in SECURECONNECT_TRUSTED_PROXIES (the deny list depends on it).
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=",".join(settings.trusted_proxies) or None,
    )
    server = _AnnouncingServer(config, settings)
    # Server.run, not asyncio.run(server.serve()): only run() applies the loop choice above.
    server.run(sockets=[sock])
    # Only a clean stop removes it: a crash leaves the file behind as evidence for `diagnose`.
    if server.run_file is not None:
        server.run_file.unlink(missing_ok=True)


def _http_protocol(settings: Settings) -> Any:
    """httptools with deadlines for slow clients (edge/slow.py); uvicorn's choice without it."""
    try:
        from secureconnect.edge.slow import TimelyHttpToolsProtocol
    except ImportError:  # httptools is not installed: h11, without the deadlines
        return "auto"

    class Protocol(TimelyHttpToolsProtocol):
        header_timeout_s = settings.header_timeout_s
        body_timeout_s = settings.body_timeout_s

    return Protocol


class _AnnouncingServer(uvicorn.Server):
    """Prints the URL once the socket is bound, so that ``--port 0`` shows the real port."""

    def __init__(self, config: uvicorn.Config, settings: Settings) -> None:
        super().__init__(config)
        self.settings = settings
        self.run_file: Path | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.should_exit or not self.servers:
            return
        port = self.servers[0].sockets[0].getsockname()[1]
        url = self.settings.model_copy(update={"port": port}).effective_public_url
        s = self.settings
        self.run_file = RunFile.current(url, port, s.role, s.effective_release, s.log_file).write(
            s.data_dir
        )
        print(
            f"SecureConnect ({self.settings.role}) is running. Open {url} in your browser.",
            flush=True,
        )
