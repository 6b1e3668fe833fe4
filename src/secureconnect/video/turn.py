"""TURN through coturn: short-lived credentials from a shared secret, and a locked-down coturn.

Credentials follow coturn's ``use-auth-secret`` scheme (the "TURN REST API" draft): the username
is ``<expiry unix time>:<user id>`` and the password ``base64(HMAC-SHA1(secret, username))``, so
coturn checks them without asking anyone, and a credential stops working at its expiry.

On one machine video-service runs coturn as its child with a secret made at each start, like
Janus. Relaying to private, loopback and link-local addresses is refused, except to the address
the SFU offers media on: a TURN server inside a network must not become a way into it
(CVE-2020-26262 and its class). In Kubernetes, coturn is its own Deployment with the secret
from ``secureconnect-secrets`` (``SECURECONNECT_TURN_URLS`` and ``SECURECONNECT_TURN_SECRET``).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import secrets
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path

from secureconnect.stun import stun_binding
from secureconnect.video.child import Supervised
from secureconnect.video.schemas import IceServer

REALM = "secureconnect"
# Where a relay may never go, unless it is the SFU itself: RFC 1918, CGNAT, loopback,
# link-local, "this network", benchmarking and IPv6 unique-local and link-local.
DENIED_PEERS = (
    "0.0.0.0-0.255.255.255",
    "10.0.0.0-10.255.255.255",
    "100.64.0.0-100.127.255.255",
    "127.0.0.0-127.255.255.255",
    "169.254.0.0-169.254.255.255",
    "172.16.0.0-172.31.255.255",
    "192.0.0.0-192.0.0.255",
    "192.168.0.0-192.168.255.255",
    "198.18.0.0-198.19.255.255",
    "::1",
    "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
)


def credentials(secret: str, user_id: str, ttl_s: int, now_s: float) -> tuple[str, str]:
    """(username, password) valid for ``ttl_s`` from ``now_s``."""
    username = f"{int(now_s) + ttl_s}:{user_id}"
    digest = hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()
    return username, base64.b64encode(digest).decode()


def ice_servers(
    urls: list[str], secret: str, user_id: str, ttl_s: int, now_s: float
) -> list[IceServer]:
    username, password = credentials(secret, user_id, ttl_s, now_s)
    return [IceServer(urls=urls, username=username, credential=password)]


def _free_udp_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True)
class TurnConfig:
    folder: Path
    listen: str
    port: int
    relay_ports: str
    secret: str
    allowed_peers: tuple[str, ...]

    def write(self) -> Path:
        low, _, high = self.relay_ports.partition("-")
        lines = [
            f"listening-ip={self.listen}",
            f"listening-port={self.port}",
            f"relay-ip={self.listen}",
            f"min-port={low}",
            f"max-port={high or low}",
            "use-auth-secret",
            f"static-auth-secret={self.secret}",
            f"realm={REALM}",
            "fingerprint",
            "no-tls",
            "no-dtls",
            "no-tcp-relay",
            "no-cli",
            "no-multicast-peers",
            "no-software-attribute",
            "no-rfc5780",
            "stale-nonce=600",
            "user-quota=24",
            "total-quota=2400",
            f"pidfile={self.folder / 'turnserver.pid'}",
            "no-stdout-log",
            f"log-file={self.folder / 'turnserver.log'}",
            "simple-log",
            *(f"denied-peer-ip={r}" for r in DENIED_PEERS),
            *(f"allowed-peer-ip={a}" for a in self.allowed_peers),
        ]
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.folder / "turnserver.conf"
        path.write_text("\n".join(lines) + "\n")
        path.chmod(0o600)
        return path


class TurnSupervisor(Supervised):
    """Runs coturn for this machine's calls; ``urls`` and ``secret`` go out with each call."""

    name = "coturn"

    def __init__(
        self,
        binary: str,
        folder: Path,
        listen: str,
        port: int,
        relay_ports: str,
        allowed_peers: tuple[str, ...],
    ) -> None:
        self.binary = shutil.which(binary)
        super().__init__(installed=self.binary is not None)
        self.folder = folder
        self.listen = listen
        self.port = port
        self.relay_ports = relay_ports
        self.allowed_peers = allowed_peers
        self.config: TurnConfig | None = None

    @property
    def urls(self) -> list[str]:
        if self.config is None:
            return []
        return [f"turn:{self.config.listen}:{self.config.port}?transport=udp"]

    @property
    def secret(self) -> str:
        if self.config is None:
            raise RuntimeError("coturn has not been configured yet")
        return self.config.secret

    def prepare(self) -> list[str]:
        assert self.binary is not None
        self.config = TurnConfig(
            folder=self.folder,
            listen=self.listen,
            port=self.port or _free_udp_port(self.listen),
            relay_ports=self.relay_ports,
            secret=secrets.token_urlsafe(32),
            allowed_peers=self.allowed_peers,
        )
        return [self.binary, "-c", str(self.config.write())]

    async def check(self) -> None:
        """A STUN binding answered on the TURN port."""
        assert self.config is not None
        await asyncio.to_thread(stun_binding, self.config.listen, self.config.port, 0.5)
