"""Where the CLI keeps its login: one JSON file per profile, readable by its owner only."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path


def home() -> Path:
    configured = os.environ.get("SECURECONNECT_CLI_HOME")
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "secureconnect"


@dataclass
class Profile:
    server: str
    token: str | None = None
    username: str | None = None
    user_id: str | None = None
    device_id: str | None = None
    cursors: dict[str, int] = field(default_factory=dict)
    suggestions: bool = True  # suggested replies on this device
    suggestions_off: list[str] = field(default_factory=list)  # ...but not in these conversations

    @classmethod
    def load(cls, name: str, server: str | None) -> Profile:
        path = home() / f"{name}.json"
        if path.exists():
            profile = cls(**json.loads(path.read_text()))
            if server and server != profile.server:
                # Another server: keep the device id (harmless) but not the login.
                return cls(server=server)
            return profile
        return cls(server=server or "http://127.0.0.1:8000")

    def save(self, name: str) -> None:
        directory = home()
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = directory / f"{name}.json"
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(self), f, indent=2)
        os.replace(tmp, path)
