"""``secureconnect oncall rotate-db-password`` on this machine, against a PostgreSQL of the
test's own that checks passwords: the new password is set, written where the services read it,
the services restart and serve, and PostgreSQL refuses the old one (runbook 23.8)."""

from __future__ import annotations

import os
import signal
import tomllib
from collections.abc import Iterator

import asyncpg
import httpx
import pytest
from sqlalchemy import make_url

from secureconnect.client import Client
from secureconnect.ops.runfile import load_all
from tests.conftest import in_ci
from tests.helpers import run_cli, signed_up
from tests.server import PostgresCluster, ServerProcess, pid_alive, run_in_thread

pytestmark = pytest.mark.slow  # a PostgreSQL cluster and servers of its own

FIRST = "first-password-1"


@pytest.fixture
def cluster() -> Iterator[PostgresCluster]:
    try:
        pg = PostgresCluster().start()
    except (RuntimeError, KeyError) as missing:  # no server binaries, or no postgres user
        if in_ci():
            pytest.fail(f"PostgreSQL is needed in CI: {missing}")
        pytest.skip(str(missing))
    pg.sql(f"CREATE ROLE sc_app LOGIN PASSWORD '{FIRST}'", "CREATE DATABASE sc OWNER sc_app")
    yield pg
    pg.stop()


async def connects(url: str) -> bool:
    u = make_url(url)
    try:
        conn = await asyncpg.connect(
            host=u.host, port=u.port, user=u.username, password=u.password, database=u.database
        )
    except asyncpg.InvalidPasswordError:
        return False
    await conn.close()
    return True


def test_the_database_password_is_rotated_and_the_old_one_refused(cluster, tmp_path) -> None:
    old_url = f"postgresql+asyncpg://sc_app:{FIRST}@127.0.0.1:{cluster.port}/sc"
    config = tmp_path / "secureconnect.toml"
    config.write_text(
        '# what the local processes read\nadmins = ["oncall"]\n'
        f'database_url = "{old_url}"\nlog_level = "INFO"\n'
    )
    config.chmod(0o600)
    data = tmp_path / "data"
    data.mkdir()
    srv = ServerProcess(data, {"SECURECONNECT_CONFIG": str(config)}).start()
    home = tmp_path / "home"
    shell = srv.env()  # the on-call's shell: the settings the server was started with
    try:
        assert run_cli(srv.url, home, "register", "oncall", env=shell).returncode == 0
        assert run_cli(srv.url, home, "login", "oncall", env=shell).returncode == 0

        async def before() -> tuple[str, str, str]:
            alice = await signed_up(Client(srv.url), "alice")
            bob = await signed_up(Client(srv.url), "bob")
            conv = await alice.direct(bob.login_info.username)
            await alice.send(conv.id, b"sent before the rotation", content_type="text/plain")
            await alice.aclose()
            await bob.aclose()
            return alice.token, bob.token, conv.id

        alice_token, bob_token, conv_id = run_in_thread(before())

        # A URL in the shell's environment cannot be changed for later starts: refused, untouched.
        in_env = run_cli(
            srv.url,
            home,
            *("oncall", "rotate-db-password", "--data-dir", str(data), "--yes"),
            env={**shell, "SECURECONNECT_DATABASE_URL": old_url},
        )
        assert in_env.returncode == 1
        assert "SECURECONNECT_DATABASE_URL" in in_env.stderr
        assert run_in_thread(connects(old_url))

        # It asks first; "n" changes nothing.
        declined = run_cli(
            srv.url,
            home,
            "oncall",
            "rotate-db-password",
            "--data-dir",
            str(data),
            env=shell,
            stdin="n\n",
        )
        assert declined.returncode == 1 and "nothing changed" in declined.stdout
        assert "give PostgreSQL role sc_app a new password" in " ".join(declined.stdout.split())
        assert tomllib.loads(config.read_text())["database_url"] == old_url

        rotated = run_cli(
            srv.url,
            home,
            "oncall",
            "rotate-db-password",
            "--data-dir",
            str(data),
            "--yes",
            env=shell,
        )
        assert rotated.returncode == 0, rotated.stdout + rotated.stderr
        said = " ".join(rotated.stdout.split())  # the terminal wraps long lines
        assert "restarted" in said and "ready; the old password is refused" in said

        new_url = tomllib.loads(config.read_text())["database_url"]
        old, new = make_url(old_url), make_url(new_url)
        assert new.password and new.password != FIRST
        assert (new.username, new.host, new.port, new.database) == (
            old.username,
            old.host,
            old.port,
            old.database,
        )
        # The rest of the file is as it was, and only its owner may read it.
        assert config.read_text().startswith('# what the local processes read\nadmins = ["oncall"]')
        assert config.stat().st_mode & 0o777 == 0o600
        # PostgreSQL itself: the old password is refused, the new one lets the role in.
        assert not run_in_thread(connects(old_url))
        assert run_in_thread(connects(new_url))
        # Neither password is printed or logged.
        logs = srv.log_path.read_text()
        for secret in (FIRST, new.password):
            assert secret not in rotated.stdout + rotated.stderr + logs

        # The restarted process serves, on the new password, with everything that was there.
        (run,) = load_all(data)
        assert run.pid != srv.proc.pid and pid_alive(run.pid)
        assert httpx.get(srv.url + "/readyz").status_code == 200

        async def after() -> list[str]:
            async with Client(srv.url, token=bob_token) as bob:
                reply = await bob.send(conv_id, b"sent after it", content_type="text/plain")
                assert reply.seq > 0
            async with Client(srv.url, token=alice_token) as alice:
                page = await alice.history(conv_id)
                return [m.body.decode() for m in page.messages if m.kind == "message"]

        assert run_in_thread(after()) == ["sent before the rotation", "sent after it"]
        shown = run_cli(srv.url, home, "oncall", "list", env=shell)
        assert shown.returncode == 0
    finally:
        for run in load_all(data):  # the process the tooling started
            if pid_alive(run.pid) and (srv.proc is None or run.pid != srv.proc.pid):
                os.kill(run.pid, signal.SIGTERM)
        srv.stop()
