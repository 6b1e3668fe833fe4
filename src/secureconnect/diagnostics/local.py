"""The local target: the ``serve`` processes on this machine, found by their run files
(:mod:`secureconnect.ops.runfile`), their endpoints and their log files."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import httpx

from secureconnect.diagnostics.facts import Action, Facts, Instance, Workload
from secureconnect.ops.runfile import RunFile, load_all

LOG_TAIL = 100
# What a crash leaves in the last lines of a log, and what the runbook calls it.
SIGNATURES = {
    "MemoryError": "OOMKilled",
    "Cannot allocate memory": "OOMKilled",
    "Segmentation fault": "Segfault",
    "Fatal Python error": "Segfault",
}


class Unsupported(Exception):
    """An action this target cannot take; the message says what to do instead."""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    # A zombie has exited; only its parent has not collected it yet.
    return not (stat.exists() and stat.read_text().split(") ", 1)[-1].startswith("Z"))


def cpu_ticks(pid: int) -> int | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[11]) + int(fields[12])  # utime + stime


def tail(path: str | None, lines: int = LOG_TAIL) -> list[str]:
    if not path:
        return []
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 256 * 1024))
            return f.read().decode("utf-8", "replace").splitlines()[-lines:]
    except OSError:
        return []


def serves(run: RunFile, workload: str) -> bool:
    return run.role == workload or run.role == "all" or workload == "all"


class LocalCommands:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    def __call__(self, action: Action) -> str:
        if action.kind == "restart":
            names = [
                f"pid {r.pid} ({r.role} on :{r.port})"
                for r in load_all(self.data_dir)
                if serves(r, action.target)
            ]
            return "stop and start again: " + (", ".join(names) or "no local process")
        if action.kind in ("scale", "rollback"):
            return f"(not on the local target: {action.kind} needs Kubernetes)"
        return action.cli()

    def logs(self, instance: str) -> str:
        return f"tail -n {LOG_TAIL} <the process's SECURECONNECT_LOG_FILE>  # {instance}"

    def raise_memory(self, workload: str) -> str:
        return "free memory on this machine (or give the process more), then restart"


class LocalTarget:
    deploys_from_service = True

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.explain = LocalCommands(data_dir)

    async def facts(self, now_ms: int) -> Facts:
        facts = Facts(f"local {self.data_dir}", now_ms)
        runs = load_all(self.data_dir)
        if not runs:
            facts.gaps.append(f"no run files under {self.data_dir / 'run'}: is serve running here?")
        before = {r.pid: cpu_ticks(r.pid) for r in runs}
        await asyncio.sleep(0.5)
        tick = os.sysconf("SC_CLK_TCK")
        async with httpx.AsyncClient(timeout=2.0) as http:
            for run in runs:
                workload = facts.workloads.setdefault(run.role, Workload(run.role, 0))
                workload.desired += 1
                workload.instances.append(await self._instance(run, http, before, tick, facts))
        return facts

    async def _instance(
        self,
        run: RunFile,
        http: httpx.AsyncClient,
        before: dict[int, int | None],
        tick: int,
        facts: Facts,
    ) -> Instance:
        name = f"{run.name} (pid {run.pid})"
        problems: list[str] = []
        if not alive(run.pid):
            state, ready, cpu = "exited", False, None
            problems.append("exited")
            lines = tail(run.log_file)
            facts.logs[name] = lines
            for line in lines:
                for needle, problem in SIGNATURES.items():
                    if needle in line and problem not in problems:
                        problems.append(problem)
        else:
            start, now = before.get(run.pid), cpu_ticks(run.pid)
            cpu = (
                round((now - start) / tick / 0.5 * 100, 1)
                if start is not None and now is not None
                else None
            )
            try:
                answer = await http.get(f"{run.url}/readyz")
                ready = answer.status_code == 200
                state = "running" if ready else "not ready"
            except httpx.HTTPError as error:
                ready, state = False, f"not answering ({type(error).__name__})"
                problems.append("not answering")
        return Instance(name, ready, state, problems, 0, cpu, run.url)

    def service_urls(self) -> list[str]:
        return [r.url for r in load_all(self.data_dir) if alive(r.pid)]

    def plan(self, action: Action) -> str:
        return self.explain(action)

    async def apply(self, action: Action) -> str:
        if action.kind == "scale":
            raise Unsupported(
                "scale needs Kubernetes: a local serve is one process; for more, run serve "
                "again with --port on PostgreSQL and Redis behind an ingress (docs/operations.md)"
            )
        if action.kind == "rollback":
            raise Unsupported(
                "rollback needs Kubernetes: this machine keeps no earlier image; reinstall the "
                "previous release (see the deploy history) and restart"
            )
        if action.kind != "restart":
            raise Unsupported(f"{action.kind} is not a process action")
        runs = [r for r in load_all(self.data_dir) if serves(r, action.target)]
        if not runs:
            raise Unsupported(f"no local process serves {action.target}")
        done = [await asyncio.to_thread(self._restart, run) for run in runs]
        return "; ".join(done)

    @property
    def url_home(self) -> str:
        return f"database_url in {config_file()}"

    def read_database_url(self) -> str:
        return read_config_url(config_file())

    def write_database_url(self, url: str) -> None:
        write_config_url(config_file(), url)

    async def restart_with_database_url(self) -> str:
        return await self.apply(Action("restart", "all"))

    def _restart(self, run: RunFile) -> str:
        missing = [n for n in run.setting_names if n not in os.environ]
        if missing:
            raise Unsupported(
                "restarting needs the settings the process ran with; not set in this shell: "
                + ", ".join(missing)
            )
        if alive(run.pid):
            os.kill(run.pid, signal.SIGTERM)
            deadline = time.monotonic() + 40
            while alive(run.pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if alive(run.pid):
                raise Unsupported(f"pid {run.pid} did not stop within 40 s; nothing started")
        run.path(self.data_dir).unlink(missing_ok=True)
        env = {**os.environ, "SECURECONNECT_PORT": str(run.port)}
        out = run.path(self.data_dir).with_suffix(".out")
        with open(out, "ab") as sink:
            child = subprocess.Popen(  # noqa: S603 - argv is the one this process was started with
                run.argv,
                cwd=run.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if child.poll() is not None:
                raise Unsupported(f"the new process exited with {child.returncode}; see {out}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{run.url}/readyz", timeout=1.0).status_code == 200:
                    return f"{run.name} restarted (pid {run.pid} -> {child.pid}), ready"
            time.sleep(0.2)
        return f"{run.name} restarted (pid {run.pid} -> {child.pid}) but not ready after 60 s"


# -- the database URL (oncall rotate-db-password) ---------------------------------------------

URL_LINE = re.compile(r"""(?m)^([ \t]*database_url[ \t]*=[ \t]*)(?:"[^"\n]*"|'[^'\n]*')[ \t]*$""")


def config_file() -> Path:
    """The TOML file the local processes read their database URL from, or why not."""
    if "SECURECONNECT_DATABASE_URL" in os.environ:
        raise Unsupported(
            "the database URL comes from this shell's SECURECONNECT_DATABASE_URL, which no "
            "command can change for the processes started from it later: put it in a config "
            'file instead (database_url = "..." in the file SECURECONNECT_CONFIG names), unset '
            "the variable, restart, and run this again"
        )
    named = os.environ.get("SECURECONNECT_CONFIG")
    if not named:
        raise Unsupported(
            "no SECURECONNECT_CONFIG in this shell: on this machine the database URL is kept in "
            'that TOML file (database_url = "postgresql+asyncpg://...")'
        )
    return Path(named)


def read_config_url(path: Path) -> str:
    try:
        url = tomllib.loads(path.read_text()).get("database_url")
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise Unsupported(f"cannot read {path}: {error}") from error
    if not isinstance(url, str):
        raise Unsupported(f"{path} sets no database_url")
    return url


def write_config_url(path: Path, url: str) -> None:
    """Replaces the one ``database_url`` line, leaving the rest of the file as it was; the
    file is replaced whole (never half-written) and readable by its owner only."""
    text = path.read_text()
    quoted = '"' + url.replace("\\", "\\\\").replace('"', '\\"') + '"'
    changed, count = URL_LINE.subn(lambda m: m.group(1) + quoted, text)
    if count != 1:
        raise Unsupported(f'{path}: expected one line database_url = "...", found {count}')
    tmp = path.with_name(f".{path.name}.new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(changed)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    if read_config_url(path) != url:  # pragma: no cover - the pattern and TOML disagree
        raise Unsupported(f"{path}: the new URL did not read back as written")
