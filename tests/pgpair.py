"""A PostgreSQL primary and a synchronous streaming standby of the tests' own: their own folders
and ports on loopback, never the machine's shared cluster. initdb, pg_basebackup and
``synchronous_standby_names``, as an operator sets them up; the primary can be killed, the
standby promoted, and the old primary rebuilt from a base backup as the new one's standby.

PostgreSQL refuses to run as root, so the servers run as the ``postgres`` user."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.conftest import in_ci
from tests.server import free_port

BIN = (
    Path(sorted(glob.glob("/usr/lib/postgresql/*/bin"))[-1])
    if glob.glob("/usr/lib/postgresql/*/bin")
    else None
)
STANDBY_NAME = "standby"


def available() -> str | None:
    """Why a pair cannot run here, or None."""
    if BIN is None or not (BIN / "initdb").exists():
        return "PostgreSQL's server binaries are not installed"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "runuser is missing (PostgreSQL must not run as root)"
    return None


class Node:
    def __init__(self, root: Path, name: str) -> None:
        self.dir = root / name
        self.port = free_port()
        self.log = root / f"{name}.log"

    def url_part(self) -> str:
        return f"127.0.0.1:{self.port}"


class PgPair:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self.primary = Node(root, "a")
        self.standby = Node(root, "b")
        self.database = "secureconnect"

    # ----- running commands as postgres ---------------------------------------------------

    def _as_postgres(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed: {result.stderr or result.stdout}")
        return result

    def _own(self) -> None:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")

    def psql(self, node: Node, sql: str, database: str = "postgres") -> str:
        return self._as_postgres(
            str(BIN / "psql"),
            "-h",
            "127.0.0.1",
            "-p",
            str(node.port),
            "-U",
            "postgres",
            "-d",
            database,
            "-Atc",
            sql,
        ).stdout.strip()

    # ----- the pair ----------------------------------------------------------------------

    def start(self) -> PgPair:
        reason = available()
        if reason is not None:
            import pytest

            if in_ci():
                pytest.fail(reason)
            pytest.skip(reason)
        self._own()
        self._as_postgres(
            str(BIN / "initdb"), "-D", str(self.primary.dir), "-U", "postgres", "--auth=trust"
        )
        self._configure(self.primary, synchronous=False)  # nothing could commit yet
        self._start(self.primary)
        self.psql(self.primary, f'CREATE DATABASE "{self.database}"')
        self._standby_of(self.primary, self.standby)
        self.psql(self.primary, "ALTER SYSTEM SET synchronous_standby_names = 'ANY 1 (*)'")
        self.psql(self.primary, "SELECT pg_reload_conf()")
        self.wait_streaming(self.primary, "quorum")
        return self

    def _configure(self, node: Node, synchronous: bool) -> None:
        """``synchronous``: every commit waits for any one standby (what LOCAL_QUORUM gave)."""
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(node.port),
            "unix_socket_directories": f"'{self.root}'",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "wal_keep_size": "'256MB'",
            "hot_standby": "on",
            "fsync": "on",
            "synchronous_commit": "on",
            "synchronous_standby_names": "'ANY 1 (*)'" if synchronous else "''",
        }
        conf = node.dir / "postgresql.conf"
        extra = "".join(f"{k} = {v}\n" for k, v in settings.items())
        self._as_postgres("sh", "-c", f"cat >> {conf} <<'EOF'\n{extra}EOF")

    def _start(self, node: Node) -> None:
        self._as_postgres(
            str(BIN / "pg_ctl"), "-D", str(node.dir), "-l", str(node.log), "-w", "start"
        )

    def _standby_of(self, source: Node, node: Node) -> None:
        """A base backup of ``source`` in ``node``'s folder, streaming from it."""
        if node.dir.exists():
            self._as_postgres("rm", "-rf", str(node.dir))
        self._as_postgres(
            str(BIN / "pg_basebackup"),
            "-h",
            "127.0.0.1",
            "-p",
            str(source.port),
            "-U",
            "postgres",
            "-D",
            str(node.dir),
            "-R",
            "-X",
            "stream",
            # The source's checkpoint at once, not spread over minutes as a busy primary's
            # would be: the backup waits for it (92 s of 94 in this fixture before).
            "-c",
            "fast",
        )
        # Its own port; a standby has no standby of its own, so once promoted it commits
        # locally until one joins it and `oncall durability sync` asks for one again.
        self._configure(node, synchronous=False)
        auto = node.dir / "postgresql.auto.conf"
        conninfo = (
            f"primary_conninfo = 'host=127.0.0.1 port={source.port} user=postgres "
            f"application_name={STANDBY_NAME}'\n"
        )
        self._as_postgres("sh", "-c", f"cat >> {auto} <<'EOF'\n{conninfo}EOF")
        self._start(node)

    def wait_streaming(self, node: Node, sync_state: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            state = self.psql(node, "SELECT sync_state FROM pg_stat_replication")
            if sync_state in state.split():
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"no {sync_state} standby on {node.port}: {state!r}")
            time.sleep(0.2)

    def url(self) -> str:
        """What the services connect with: both hosts, the writable one wins."""
        return (
            f"postgresql+asyncpg://postgres@/{self.database}"
            f"?host={self.primary.url_part()}&host={self.standby.url_part()}"
            "&target_session_attrs=read-write"
        )

    def kill_primary(self) -> None:
        """SIGKILL to the postmaster: as a machine that dies, no shutdown checkpoint."""
        pid = int((self.primary.dir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        # Its backends die with it once they notice; make sure nothing holds the port.
        subprocess.run(["pkill", "-9", "-f", f"postgres -D {self.primary.dir}"], check=False)

    def promote(self) -> None:
        self._as_postgres(str(BIN / "pg_ctl"), "-D", str(self.standby.dir), "-w", "promote")

    def rebuild_old_primary(self) -> None:
        """The lost primary comes back as the new primary's standby, from a base backup."""
        self.primary, self.standby = self.standby, self.primary
        self._standby_of(self.primary, self.standby)
        self.wait_streaming(self.primary, "async")

    def stop(self) -> None:
        for node in (self.primary, self.standby):
            if (node.dir / "postmaster.pid").exists():
                self._as_postgres(
                    str(BIN / "pg_ctl"), "-D", str(node.dir), "-m", "immediate", "stop", check=False
                )
