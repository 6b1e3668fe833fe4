"""Run files: each ``serve`` process says where it is, so the local diagnosis target can find it.

``<data_dir>/run/<role>-<port>.json`` is written once the socket is bound and removed on a clean
shutdown. A file whose process is gone is a crash, which is exactly what the diagnosis wants to
see. The file holds no secrets: it names the settings the process had, never their values.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class RunFile:
    pid: int
    url: str
    port: int
    role: str
    release: str
    argv: list[str]
    cwd: str
    setting_names: list[str] = field(default_factory=list)
    log_file: str | None = None
    started_at: float = field(default_factory=time.time)

    @property
    def name(self) -> str:
        return f"{self.role}-{self.port}"

    def path(self, data_dir: Path) -> Path:
        return data_dir / "run" / f"{self.name}.json"

    def write(self, data_dir: Path) -> Path:
        target = self.path(data_dir)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(target)
        return target

    @classmethod
    def current(
        cls, url: str, port: int, role: str, release: str, log_file: Path | None
    ) -> RunFile:
        return cls(
            pid=os.getpid(),
            url=url,
            port=port,
            role=role,
            release=release,
            argv=[sys.executable, "-m", "secureconnect", *sys.argv[1:]],
            cwd=os.getcwd(),
            setting_names=sorted(k for k in os.environ if k.startswith("SECURECONNECT_")),
            log_file=str(log_file.resolve()) if log_file else None,
        )


def load_all(data_dir: Path) -> list[RunFile]:
    found = []
    for path in sorted((data_dir / "run").glob("*.json")):
        try:
            found.append(RunFile(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue  # half-written or foreign: not ours to interpret
    return found
