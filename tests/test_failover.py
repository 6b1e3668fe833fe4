"""The database's "consistency level", for real (runbook 23.7): a PostgreSQL primary and a
synchronous standby of the test's own; the primary killed under write load, the standby
promoted, the services carrying on by themselves with nothing acknowledged missing; the
diagnosis showing both nodes; the emergency switch asked for, recorded and undone; the lost
node rebuilt from a base backup and streaming again."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from secureconnect.client import ApiError, Client
from tests.helpers import PASSWORD, run_cli, signed_up
from tests.pgpair import PgPair
from tests.server import ServerProcess

pytestmark = pytest.mark.slow  # two PostgreSQL servers of its own


@pytest.fixture
def pair():
    # Not under pytest's tmp_path: the postgres user must reach it, and that is root's alone.
    root = Path(tempfile.mkdtemp(prefix="sc-pgpair-"))
    root.chmod(0o755)
    nodes = PgPair(root / "pg")
    try:
        yield nodes.start()
    finally:
        nodes.stop()
        shutil.rmtree(root, ignore_errors=True)


async def send_until_stored(client: Client, conv_id: str, text: str, deadline: float):
    """As a client does: the same message id until the server says it holds it."""
    msg_id = uuid.uuid4().hex
    while True:
        try:
            return await client.send(
                conv_id, text.encode(), content_type="text/plain", client_msg_id=msg_id, attempts=1
            )
        except (ApiError, OSError) as error:
            if isinstance(error, ApiError) and error.status not in (502, 503, 504):
                raise
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def oncall(server: ServerProcess, home: Path, *args: str):
    return run_cli(server.url, home, "oncall", *args, "--profile", "oncall", timeout=60)


async def test_a_lost_primary_loses_no_acknowledged_message(pair: PgPair, tmp_path) -> None:
    server = ServerProcess(
        tmp_path / "server",
        {
            "SECURECONNECT_DATABASE_URL": pair.url(),
            "SECURECONNECT_ADMINS": '["oncall"]',
            "SECURECONNECT_DB_POOL_TIMEOUT_S": "2",
        },
    )
    server.data_dir.mkdir()
    server.start()
    home = tmp_path / "cli"
    run_cli(server.url, home, "register", "oncall", "--profile", "oncall", check=True)
    run_cli(server.url, home, "login", "oncall", "--profile", "oncall", check=True)
    alice = await signed_up(Client(server.url), "alice")
    bob = await signed_up(Client(server.url), "bob")
    try:
        report = oncall(server, home, "diagnose", "database")
        assert f"primary at 127.0.0.1:{pair.primary.port}" in report.stdout, report.stdout
        assert "standby at 127.0.0.1: streaming, quorum" in " ".join(report.stdout.split())
        conv = await alice.direct("bob")
        acked: list[int] = []
        killed_at = resumed_at = 0.0
        deadline = time.monotonic() + 90
        for i in range(120):  # bounded in count and in time
            if i == 40:
                pair.kill_primary()
                killed_at = time.monotonic()
                await asyncio.sleep(1.0)  # the operator notices, then promotes
                pair.promote()
            sent = await send_until_stored(alice, conv.id, f"message {i}", deadline)
            if killed_at and not resumed_at:
                resumed_at = time.monotonic()
            acked.append(sent.seq)
        assert resumed_at - killed_at < 15
        # Everything acknowledged is on the new primary, once, in order.
        stored = [m async for m in bob.all_messages(conv.id) if m.kind == "message"]
        assert [m.body.decode() for m in stored] == [f"message {i}" for i in range(120)]
        assert [m.seq for m in stored] == acked
        report = oncall(server, home, "diagnose", "database")
        assert f"primary at 127.0.0.1:{pair.standby.port}" in report.stdout, report.stdout
        assert "no standby" in report.stdout
        # Back to sync needs a standby: refused until the lost node is rebuilt and streams.
        refused = oncall(server, home, "durability", "sync", "--yes")
        assert refused.returncode == 1 and "no standby streams" in refused.stderr
        pair.rebuild_old_primary()
        admin = await signed_in(server, "oncall")
        incident = await admin.incident_open("Database failover", "P1")
        await admin.aclose()
        done = oncall(server, home, "durability", "sync", "--yes")
        assert done.returncode == 0, done.stderr
        said = " ".join(done.stdout.split())
        assert "synchronous_commit=on" in said and "1 standby(s) streaming" in said
        pair.wait_streaming(pair.primary, "quorum")
        # The emergency switch: asked first, recorded, undone.
        asked = run_cli(
            server.url, home, "oncall", "durability", "local", "--profile", "oncall", stdin="n\n"
        )
        assert asked.returncode == 1 and "nothing changed" in asked.stdout
        assert oncall(server, home, "durability", "local", "--yes").returncode == 0
        relaxed = " ".join(oncall(server, home, "diagnose", "database").stdout.split())
        assert "synchronous_commit=local" in relaxed
        assert "$ secureconnect oncall durability sync" in relaxed
        assert oncall(server, home, "durability", "sync", "--yes").returncode == 0
        timeline = " ".join(oncall(server, home, "show", str(incident.number)).stdout.split())
        assert "oncall durability local" in timeline and "oncall durability sync" in timeline
        await send_until_stored(alice, conv.id, "after the rebuild", time.monotonic() + 10)
    finally:
        await alice.aclose()
        await bob.aclose()
        server.stop()


async def signed_in(server: ServerProcess, name: str) -> Client:
    client = Client(server.url)
    await client.login(name, PASSWORD)
    return client
