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

import asyncio
import base64
import contextlib
import ctypes
import glob
import hashlib
import hmac
import logging
import secrets
import shutil
import signal
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

log = logging.getLogger("secureconnect.video")

VIDEOROOM = "janus.plugin.videoroom"
# What Janus may load: the HTTP transport and VideoRoom. Everything else Debian ships stays off.
KEEP_PLUGINS = ("libjanus_videoroom.so",)
KEEP_TRANSPORTS = ("libjanus_http.so",)
LIB_DIRS = ("/usr/lib/*/janus", "/usr/lib/janus", "/usr/local/lib/janus", "/opt/janus/lib/janus")
START_TIMEOUT_S = 15.0
PR_SET_PDEATHSIG = 1
MAX_BACKOFF_S = 30.0

State = Literal["not installed", "starting", "up", "down"]


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

    @classmethod
    def fresh(cls, folder: Path, libs: Path, rtp_ports: str) -> JanusConfig:
        return cls(
            folder=folder,
            libs=libs,
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
    ice_ignore_list = "vmnet"
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


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent goes (Linux's PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _others(folder: Path, keep: Sequence[str]) -> list[str]:
    return sorted(p.name for p in folder.glob("*.so") if p.name not in keep)


class JanusSupervisor:
    """Runs Janus and keeps it running; ``state`` is what readiness and metrics report."""

    def __init__(self, binary: str, folder: Path, rtp_ports: str, libs: Path | None = None) -> None:
        self.binary = shutil.which(binary)
        self.libs = lib_dir(libs) if self.binary else None
        self.folder = folder
        self.rtp_ports = rtp_ports
        self.state: State = "not installed" if self.libs is None else "down"
        self.config: JanusConfig | None = None
        self.process: asyncio.subprocess.Process | None = None
        self._http: httpx.AsyncClient | None = None
        self.starts = 0
        self.exits = 0

    @property
    def installed(self) -> bool:
        return self.libs is not None

    def token(self, plugins: Sequence[str] = (VIDEOROOM,), valid_s: int = 3600) -> str:
        if self.config is None:
            raise RuntimeError("Janus has not been configured yet")
        return signed_token(self.config.token_secret, plugins, valid_s, time.time())

    async def info(self) -> dict[str, object]:
        """Janus's ``info`` answer (server name, version, plugins): proof that its API answers."""
        if self.config is None:
            raise RuntimeError("Janus has not been configured yet")
        if self._http is None:  # one client for the supervisor's life, not one per poll
            self._http = httpx.AsyncClient(timeout=2.0)
        response = await self._http.get(f"{self.config.api_url}/info")
        response.raise_for_status()
        answer: dict[str, object] = response.json()
        return answer

    async def run(self) -> None:
        """Until cancelled: start Janus, wait for it to exit, start it again."""
        if self.binary is None or self.libs is None:
            log.warning("janus is not installed: calls are unavailable")
            return
        backoff = 1.0
        try:
            while True:
                started = time.monotonic()
                await self._start_once(self.binary, self.libs)
                assert self.process is not None
                code = await self.process.wait()
                self.exits += 1
                self.state = "down"
                log.error("janus exited", extra={"fields": {"code": code}})
                if time.monotonic() - started > 60:
                    backoff = 1.0  # it ran a good while: this is a fresh failure
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            await self.stop()

    async def _start_once(self, binary: str, libs: Path) -> None:
        self.state = "starting"
        self.config = JanusConfig.fresh(self.folder, libs, self.rtp_ports)
        self.config.write()
        self.starts += 1
        self.process = await asyncio.create_subprocess_exec(
            binary,
            f"--configs-folder={self.config.folder}",
            f"--config={self.config.folder / 'janus.jcfg'}",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            # Its own session, so that a Ctrl-C reaches video-service, which stops it; and it
            # dies with video-service even when that is killed (no orphaned SFU holding ports).
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and self.process.returncode is None:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                await self.info()
                self.state = "up"
                log.info("janus up", extra={"fields": {"pid": self.process.pid}})
                return
            await asyncio.sleep(0.1)
        if self.process.returncode is None:
            log.error("janus did not answer in time; restarting it")
            self.process.kill()

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
        if self.installed:
            self.state = "down"
