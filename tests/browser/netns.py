"""The project's own test network: browsers in a network namespace of their own, joined to this
machine by a veth pair, so that WebRTC has a real, non-loopback path to Janus and coturn.

Chromium and libnice skip loopback candidates, so calls cannot be tested on 127.0.0.1. Each
``ClientNet`` creates its namespace and link, and removes both when done; traffic only ever goes
between the two ends of that link (addresses in 10.243.0.0/16, which nothing else here uses).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType


def _ip(*args: str, namespace: str | None = None) -> None:
    prefix = ["ip", "netns", "exec", namespace] if namespace else []
    subprocess.run([*prefix, "ip", *args], check=True, capture_output=True, text=True)


def can_make_namespaces() -> str | None:
    """None when this machine can, else why not."""
    if shutil.which("ip") is None:
        return "iproute2 is not installed (apt-get install iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root"
    return None


@dataclass
class ClientNet:
    """A namespace ``name`` whose only link reaches this machine at ``host_ip``."""

    name: str
    host_ip: str
    client_ip: str
    host_link: str

    @classmethod
    def create(cls) -> ClientNet:
        tag = secrets.token_hex(3)
        third = int(tag[:2], 16)
        net = cls(
            name=f"sc-{tag}",
            host_ip=f"10.243.{third}.1",
            client_ip=f"10.243.{third}.2",
            host_link=f"sch{tag}",
        )
        peer = f"scc{tag}"
        _ip("netns", "add", net.name)
        try:
            _ip("link", "add", net.host_link, "type", "veth", "peer", "name", peer)
            _ip("link", "set", peer, "netns", net.name)
            _ip("addr", "add", f"{net.host_ip}/24", "dev", net.host_link)
            _ip("link", "set", net.host_link, "up")
            _ip("addr", "add", f"{net.client_ip}/24", "dev", peer, namespace=net.name)
            _ip("link", "set", peer, "up", namespace=net.name)
            _ip("link", "set", "lo", "up", namespace=net.name)
        except subprocess.CalledProcessError:
            net.remove()
            raise
        return net

    def cut(self, down: bool) -> None:
        """Takes this namespace's only link down (a network drop for everyone in it) or up."""
        _ip("link", "set", self.host_link, "down" if down else "up")

    def wrapper(self, folder: Path, binary: str) -> Path:
        """An executable that runs ``binary`` inside the namespace (what Playwright launches)."""
        script = folder / f"in-{self.name}.sh"
        script.write_text(f'#!/bin/sh\nexec ip netns exec {self.name} {binary} "$@"\n')
        script.chmod(0o755)
        return script

    def remove(self) -> None:
        subprocess.run(["ip", "link", "del", self.host_link], capture_output=True, check=False)
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True, check=False)

    def __enter__(self) -> ClientNet:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.remove()
