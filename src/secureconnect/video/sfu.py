"""The SFU: Janus (VideoRoom), a child process of video-service, driven over its HTTP API.

video-service writes Janus's whole configuration itself, into ``<data_dir>/janus/``: the API and
the admin API listen on 127.0.0.1 only (in Kubernetes, the pod's address behind a NetworkPolicy
that admits video-service alone), every request needs a token signed with a secret made at each
start (``token_auth_secret``), the admin API a random ``admin_secret`` and VideoRoom room
creation a random ``admin_key``; media uses a fixed ``rtp_port_range``. Nothing is read from
``/etc/janus``: a stock Debian config there does not weaken ours.

The supervisor starts Janus, calls it up once its API answers, and restarts it when it exits,
backing off up to 30 s, so that ``/readyz`` is false while it is away and true again by itself.
"""

from __future__ import annotations

import base64
import glob
import hashlib
import hmac
import json
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

from secureconnect.video.child import Supervised

VIDEOROOM = "janus.plugin.videoroom"
# What Janus may load: the HTTP transport and VideoRoom. Everything else Debian ships stays off.
KEEP_PLUGINS = ("libjanus_videoroom.so",)
KEEP_TRANSPORTS = ("libjanus_http.so",)
LIB_DIRS = ("/usr/lib/*/janus", "/usr/lib/janus", "/usr/local/lib/janus", "/opt/janus/lib/janus")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def signed_token(secret: str, plugins: Sequence[str], valid_s: int, now_s: float) -> str:
    """A Janus signed token (``token_auth_secret`` mode): ``expiry,janus,plugin...:signature``,
    the signature base64 of HMAC-SHA1 over the part before the colon."""
    data = ",".join([str(int(now_s) + valid_s), "janus", *plugins])
    digest = hmac.new(secret.encode(), data.encode(), hashlib.sha1).digest()
    return f"{data}:{base64.b64encode(digest).decode()}"


def lib_dir(configured: Path | None) -> Path | None:
    """Where Janus's plugins and transports are installed (Debian: /usr/lib/<arch>/janus)."""
    candidates = [str(configured)] if configured else [p for g in LIB_DIRS for p in glob.glob(g)]
    for candidate in candidates:
        if (Path(candidate) / "plugins").is_dir() and (Path(candidate) / "transports").is_dir():
            return Path(candidate)
    return None


@dataclass(frozen=True)
class JanusConfig:
    """One start's configuration: ports, secrets and folders. Secrets are new at every start
    and never logged."""

    folder: Path
    libs: Path
    http_port: int
    admin_port: int
    rtp_ports: str
    token_secret: str
    admin_secret: str
    admin_key: str
    media_address: str | None = None

    @classmethod
    def fresh(
        cls, folder: Path, libs: Path, rtp_ports: str, media_address: str | None = None
    ) -> JanusConfig:
        return cls(
            folder=folder,
            libs=libs,
            media_address=media_address,
            http_port=free_port(),
            admin_port=free_port(),
            rtp_ports=rtp_ports,
            token_secret=secrets.token_urlsafe(32),
            admin_secret=secrets.token_urlsafe(32),
            admin_key=secrets.token_urlsafe(32),
        )

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/janus"

    def write(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        plugins = _others(self.libs / "plugins", KEEP_PLUGINS)
        transports = _others(self.libs / "transports", KEEP_TRANSPORTS)
        enforce = f'\n    ice_enforce_list = "{self.media_address}"' if self.media_address else ""
        files = {
            "janus.jcfg": f"""general: {{
    configs_folder = "{self.folder}"
    plugins_folder = "{self.libs / "plugins"}"
    transports_folder = "{self.libs / "transports"}"
    events_folder = "{self.libs / "events"}"
    loggers_folder = "{self.libs / "loggers"}"
    log_to_stdout = true
    debug_level = 4
    debug_timestamps = true
    server_name = "secureconnect-sfu"
    session_timeout = 60
    token_auth = true
    token_auth_secret = "{self.token_secret}"
    admin_secret = "{self.admin_secret}"
    protected_folders = ["/bin", "/boot", "/dev", "/etc", "/lib", "/proc", "/sys", "/usr", "/var"]
}}
media: {{
    rtp_port_range = "{self.rtp_ports}"
}}
nat: {{
    nice_debug = false
    ice_ignore_list = "vmnet"{enforce}
}}
plugins: {{
    disable = "{",".join(plugins)}"
}}
transports: {{
    disable = "{",".join(transports)}"
}}
events: {{
    broadcast = false
}}
""",
            "janus.transport.http.jcfg": f"""general: {{
    json = "compact"
    base_path = "/janus"
    http = true
    ip = "127.0.0.1"
    port = {self.http_port}
    https = false
}}
admin: {{
    admin_base_path = "/admin"
    admin_http = true
    admin_ip = "127.0.0.1"
    admin_port = {self.admin_port}
    admin_https = false
}}
cors: {{
}}
""",
            "janus.plugin.videoroom.jcfg": f"""general: {{
    admin_key = "{self.admin_key}"
    lock_rtp_forward = true
}}
""",
        }
        for name, text in files.items():
            path = self.folder / name
            path.write_text(text)
            path.chmod(0o600)


def local_addresses() -> tuple[str, ...]:
    """This machine's IPv4 addresses but loopback (from ``ip -j addr``): where Janus offers
    media when no single media address is set."""
    try:
        shown = subprocess.run(
            ["ip", "-j", "-4", "addr"],  # noqa: S607 - iproute2, wherever PATH has it
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        found = [
            a["local"]
            for link in json.loads(shown)
            for a in link.get("addr_info", [])
            if not str(a.get("local", "")).startswith("127.")
        ]
    except (OSError, ValueError, subprocess.SubprocessError):
        return ()
    return tuple(found)


def _others(folder: Path, keep: Sequence[str]) -> list[str]:
    return sorted(p.name for p in folder.glob("*.so") if p.name not in keep)


class JanusSupervisor(Supervised):
    """Runs Janus and keeps it running. ``generation`` counts its starts: rooms and sessions
    belong to one generation and are gone when Janus restarts."""

    name = "janus"

    def __init__(
        self,
        binary: str,
        folder: Path,
        rtp_ports: str,
        libs: Path | None = None,
        media_address: str | None = None,
    ) -> None:
        self.media_address = media_address
        self.binary = shutil.which(binary)
        self.libs = lib_dir(libs) if self.binary else None
        super().__init__(installed=self.libs is not None)
        self.folder = folder
        self.rtp_ports = rtp_ports
        self.config: JanusConfig | None = None
        self._http: httpx.AsyncClient | None = None

    @property
    def generation(self) -> int:
        return self.starts

    @property
    def http(self) -> httpx.AsyncClient:
        """One client for the supervisor's life, not one per request."""
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(5.0, read=40.0))
        return self._http

    def token(self, plugins: Sequence[str] = (VIDEOROOM,), valid_s: int = 3600) -> str:
        if self.config is None:
            raise RuntimeError("Janus has not been configured yet")
        return signed_token(self.config.token_secret, plugins, valid_s, time.time())

    async def info(self) -> dict[str, object]:
        """Janus's ``info`` answer (server name, version, plugins): proof that its API answers."""
        if self.config is None:
            raise RuntimeError("Janus has not been configured yet")
        response = await self.http.get(f"{self.config.api_url}/info", timeout=2.0)
        response.raise_for_status()
        answer: dict[str, object] = response.json()
        return answer

    def prepare(self) -> list[str]:
        assert self.binary is not None
        assert self.libs is not None
        self.config = JanusConfig.fresh(self.folder, self.libs, self.rtp_ports, self.media_address)
        self.config.write()
        return [
            self.binary,
            f"--configs-folder={self.config.folder}",
            f"--config={self.config.folder / 'janus.jcfg'}",
        ]

    async def check(self) -> None:
        try:
            await self.info()
        except httpx.HTTPError as error:
            raise OSError(str(error)) from error

    async def closed(self) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None
