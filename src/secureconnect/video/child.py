"""A supervised child process: started, watched, restarted with backoff when it exits.

video-service runs the media servers it needs this way (Janus, coturn), in its own container,
so that the pod's CPU is theirs too and one readiness check tells whether calls can work.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import signal
import time
from typing import Literal

log = logging.getLogger("secureconnect.video")

START_TIMEOUT_S = 15.0
PR_SET_PDEATHSIG = 1
MAX_BACKOFF_S = 30.0

State = Literal["not installed", "starting", "up", "down"]


def _die_with_parent() -> None:
    """In the child, before exec: SIGKILL when the parent goes (Linux's PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class Supervised:
    """Subclasses say how to start the child (:meth:`prepare`) and how to tell it answers
    (:meth:`check`); ``state`` is what readiness and the metrics report."""

    name = "child"

    def __init__(self, installed: bool) -> None:
        self.state: State = "down" if installed else "not installed"
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0
        self.exits = 0

    @property
    def installed(self) -> bool:
        return self.state != "not installed"

    def prepare(self) -> list[str]:
        """Writes a fresh configuration and returns the command line."""
        raise NotImplementedError

    async def check(self) -> None:
        """Returns once the child serves; raises ``OSError`` or ``ValueError`` until then."""
        raise NotImplementedError

    async def closed(self) -> None:
        """Called after the child stopped for good (close clients, sockets)."""

    async def run(self) -> None:
        """Until cancelled: start the child, wait for it to exit, start it again."""
        if not self.installed:
            log.warning(f"{self.name} is not installed: calls are unavailable")
            return
        backoff = 1.0
        try:
            while True:
                started = time.monotonic()
                process = await self._start_once()
                code = await process.wait()
                self.exits += 1
                self.state = "down"
                log.error(f"{self.name} exited", extra={"fields": {"code": code}})
                if time.monotonic() - started > 60:
                    backoff = 1.0  # it ran a good while: this is a fresh failure
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        finally:
            await self.stop()

    async def _start_once(self) -> asyncio.subprocess.Process:
        self.state = "starting"
        argv = self.prepare()
        self.starts += 1
        self.process = process = await asyncio.create_subprocess_exec(
            *argv,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            # Its own session, so that a Ctrl-C reaches video-service, which stops it; and it
            # dies with video-service even when that is killed (no orphan holding ports).
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline and process.returncode is None:
            with contextlib.suppress(OSError, ValueError):
                await self.check()
                self.state = "up"
                log.info(f"{self.name} up", extra={"fields": {"pid": process.pid}})
                return process
            await asyncio.sleep(0.1)
        if process.returncode is None:
            log.error(f"{self.name} did not answer in time; restarting it")
            process.kill()
        return process

    async def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None and process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        await self.closed()
        if self.installed:
            self.state = "down"
