"""A real SecureConnect server in a child process, as a user would run it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import httpx

T = TypeVar("T")


def run_in_thread(coro: Coroutine[Any, Any, T]) -> T:
    """Runs a coroutine on its own thread and loop, so sync and async tests can both call it."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def run_statements(*statements: str, **connect: Any) -> None:
    """Runs SQL statements one after another on a connection of their own (``connect``:
    asyncpg.connect's arguments)."""

    async def run() -> None:
        conn = await asyncpg.connect(**connect)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()

    run_in_thread(run())


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisProcess:
    """A redis-server of the test's own, so that the test can stop and restart it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


URL_LINE = re.compile(r"Open (http://\S+) in your browser")


class PostgresCluster:
    """A PostgreSQL server of the test's own: initdb in a temporary folder, its own port on
    127.0.0.1, scram-sha-256 for every connection (the machine's shared cluster trusts
    127.0.0.1, so it cannot show a password being refused). Runs as the ``postgres`` user."""

    SUPERUSER_PASSWORD = "cluster superuser password"

    def __init__(self) -> None:
        import shutil
        import tempfile

        found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not found or shutil.which("runuser") is None:
            raise RuntimeError("PostgreSQL's server binaries (postgresql) are not installed")
        self.bin = found[-1].parent
        self.dir = Path(tempfile.mkdtemp(prefix="sc-pg-"))
        self.port = free_port()

    def _as_postgres(self, *argv: str) -> None:
        subprocess.run(
            ["runuser", "-u", "postgres", "--", *argv],
            check=True,
            capture_output=True,
            timeout=120,
        )

    def start(self) -> PostgresCluster:
        import pwd

        owner = pwd.getpwnam("postgres")
        os.chown(self.dir, owner.pw_uid, owner.pw_gid)
        pwfile = self.dir / "pw"
        pwfile.write_text(self.SUPERUSER_PASSWORD)
        os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        self._as_postgres(
            str(self.bin / "initdb"),
            *("-D", str(self.dir / "data"), "-U", "postgres", f"--pwfile={pwfile}"),
            "--auth=scram-sha-256",
        )
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir}"
        )
        self._as_postgres(
            str(self.bin / "pg_ctl"),
            *("-D", str(self.dir / "data"), "-o", options, "-l", str(self.dir / "log"), "-w"),
            "start",
        )
        return self

    def sql(self, *statements: str, database: str = "postgres") -> None:
        run_statements(
            *statements,
            host="127.0.0.1",
            port=self.port,
            user="postgres",
            password=self.SUPERUSER_PASSWORD,
            database=database,
        )

    def stop(self) -> None:
        import shutil

        with contextlib.suppress(subprocess.SubprocessError):
            self._as_postgres(
                str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "stop"
            )
        shutil.rmtree(self.dir, ignore_errors=True)


class ServerProcess:
    def __init__(self, data_dir: Path, env: dict[str, str] | None = None) -> None:
        self.data_dir = data_dir
        self.log_path = data_dir / "server.log.jsonl"
        self.extra_env = dict(env or {})
        self.proc: subprocess.Popen[str] | None = None
        self.url = ""
        self.port = 0

    def env(self) -> dict[str, str]:
        """The environment the server runs with: also what an operator's shell would hold."""
        return {
            **os.environ,
            "SECURECONNECT_DATA_DIR": str(self.data_dir),
            "SECURECONNECT_LOG_FILE": str(self.log_path),
            "SECURECONNECT_PORT": str(self.port),
            # No SFU unless the test is about calls (it sets this to true): fifty Janus
            # processes would only slow the suite down.
            "SECURECONNECT_SFU": "false",
            "SECURECONNECT_MEDIA_PROBE_PORT": "0",  # one UDP 5004 per machine; tests pick theirs
            # OWASP's smallest argon2id configuration: 20 ms a hash instead of 140, with a few
            # hundred logins in the suite. Production keeps the library's defaults.
            "SECURECONNECT_ARGON2_MEMORY_KIB": "12288",
            "SECURECONNECT_ARGON2_PARALLELISM": "1",
            # Test clients send far faster than people: the limits' own tests set real ones.
            "SECURECONNECT_RATE_LIMIT_PER_USER_MIN": "1000000",
            "SECURECONNECT_RATE_LIMIT_PER_ADDRESS_MIN": "1000000",
            "SECURECONNECT_REGISTRATIONS_PER_ADDRESS_HOUR": "1000000",
            **self.extra_env,
        }

    def start(self, timeout: float = 30.0, ready: bool = True) -> ServerProcess:
        """Starts it and waits for its URL line and, with ``ready``, for ``/readyz`` 200."""
        env = self.env()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "secureconnect", "serve"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError(f"server exited with {self.proc.wait()}")
            match = URL_LINE.search(line)
            if match:
                self.url = match.group(1)
                self.port = int(self.url.rsplit(":", 1)[1])
                break
        else:
            raise RuntimeError("server did not start in time")
        if ready:
            self.wait_ready(deadline - time.monotonic())
        return self

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise RuntimeError("server never became ready")

    def wait_media(self, timeout: float = 20.0) -> ServerProcess:
        """Waits until this server's Janus and coturn are both up: a call joined before coturn
        is would get no TURN server."""
        deadline = time.monotonic() + timeout
        up = ("secureconnect_janus_up 1.0", "secureconnect_turn_up 1.0")
        while not all(u in httpx.get(self.url + "/metrics", timeout=5).text for u in up):
            if time.monotonic() > deadline:
                raise RuntimeError("Janus or coturn did not come up")
            time.sleep(0.1)
        return self

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.proc is None:
            return 0
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        self.proc = None
        return code

    def kill(self) -> None:
        """A crash: no shutdown code runs, so only what was durable survives."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def database_url(self) -> str | None:
        return self.extra_env.get("SECURECONNECT_DATABASE_URL")

    def query(self, sql: str, *args: Any) -> list[tuple[Any, ...]]:
        """Runs one statement on the server's database, whichever backend it is (``$1``...
        placeholders), and returns its rows."""
        url = self.database_url
        if url is None:
            db = sqlite3.connect(self.data_dir / "secureconnect.db", timeout=10)
            try:
                with db:  # a write commits
                    return db.execute(re.sub(r"\$\d+", "?", sql), args).fetchall()
            finally:
                db.close()

        async def run() -> list[tuple[Any, ...]]:
            conn = await asyncpg.connect(url.replace("postgresql+asyncpg", "postgresql"))
            try:
                return [tuple(r) for r in await conn.fetch(sql, *args)]
            finally:
                await conn.close()

        return run_in_thread(run())

    def tamper(self, sql: str, *args: Any) -> None:
        """Changes the server's database behind its back, as a compromised server would."""
        self.query(sql, *args)

    def stored_data(self) -> bytes:
        """Everything the database holds, as bytes to search (bytea also as hex on PostgreSQL)."""
        if self.database_url is None:
            return b"".join(p.read_bytes() for p in self.data_dir.glob("secureconnect.db*"))
        tables = [
            r[0] for r in self.query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        ]
        rows = []
        for table in tables:
            rows += [r[0] for r in self.query(f'SELECT t::text FROM "{table}" t')]
        return "\n".join(rows).encode()

    def held(self) -> bytes:
        """Everything the server keeps, to search for plaintext: the database, the logs and
        every stored attachment file."""
        held = self.stored_data() + self.log_path.read_bytes()
        for path in (self.data_dir / "blobs").rglob("*"):
            if path.is_file():
                held += path.read_bytes()
        return held

    def log_line(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        """The first log line that ``match``es, waiting for it: a request's access line is
        written after its response has gone out, so a fast client can ask before it exists."""
        deadline = time.monotonic() + timeout
        while True:
            found = next((entry for entry in self.logs() if match(entry)), None)
            if found is not None:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"no matching log line within {timeout} s")
            time.sleep(0.05)

    def logs(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line]
