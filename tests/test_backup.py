"""The restore drill (issue 15, runbook 23.7): data through the API, a backup taken while
messages keep arriving, a restore into a fresh instance, and everything acknowledged before the
backup is there, in order, with the memberships, keys and incidents; a damaged backup or a
non-empty target is refused. On the embedded SQLite and on PostgreSQL."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from secureconnect.client import Client
from secureconnect.client.devicestore import DeviceStore
from secureconnect.client.secure import SecureClient
from tests.conftest import backend_env, drop_database
from tests.helpers import PASSWORD, signed_up, started_devices, unique
from tests.server import ServerProcess

pytestmark = pytest.mark.slow  # servers and CLI processes


def secureconnect(proc: ServerProcess, *args: str) -> subprocess.CompletedProcess[str]:
    """The command as an operator runs it beside that instance (its settings, its shell)."""
    return subprocess.run(
        [sys.executable, "-m", "secureconnect", *args],
        env=proc.env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


async def test_a_backup_under_write_load_restores_what_was_acknowledged(
    own_server: ServerProcess, tmp_path: Path
) -> None:
    source = own_server
    source.extra_env["SECURECONNECT_ADMINS"] = '["oncall"]'
    source.start()
    backend = "postgresql" if source.database_url else "sqlite"
    oncall = await signed_up(Client(source.url), "oncall")

    async def user(prefix: str) -> Client:
        return await signed_up(Client(source.url), unique(prefix))

    alice, bob = await started_devices(user, tmp_path, "alice", "bob")
    conv = await alice.client.create_group([bob.username], "drill")
    incident = await oncall.incident_open("Restore drill", "P3")
    attached = tmp_path / "contract.pdf"
    attached.write_bytes(b"%PDF-1.7 signed contract " * 5000)
    file_seq = (await alice.send_file(conv.id, attached)).seq
    acked = [file_seq] + [
        (await alice.client.send(conv.id, f"m{i}".encode())).seq for i in range(20)
    ]

    stop = asyncio.Event()
    during: list[int] = []

    async def keep_writing() -> None:
        while not stop.is_set():
            during.append((await alice.client.send(conv.id, b"during")).seq)

    writer = asyncio.create_task(keep_writing())
    await asyncio.sleep(0.2)
    taken = await asyncio.to_thread(secureconnect, source, "backup", "--to", str(tmp_path / "b"))
    stop.set()
    await writer
    assert taken.returncode == 0, taken.stderr
    assert "backed up" in taken.stdout and backend in taken.stdout
    assert "1 attachment chunks" in taken.stdout
    [folder] = list((tmp_path / "b").iterdir())

    env, database = backend_env(backend)
    target = ServerProcess(tmp_path / "restored", {**env, "SECURECONNECT_ADMINS": '["oncall"]'})
    target.data_dir.mkdir()
    try:
        restored = secureconnect(target, "restore", str(folder))
        assert restored.returncode == 0, restored.stderr
        assert "restored and verified" in restored.stdout
        again = secureconnect(target, "restore", str(folder))  # never over data
        assert again.returncode == 1 and "restore needs an empty" in again.stderr
        target.start()
        async with Client(target.url) as reader:
            await reader.login(bob.username, PASSWORD)
            seqs = [m.seq async for m in reader.all_messages(conv.id) if m.kind == "message"]
            assert set(acked) <= set(seqs)  # every message acknowledged before the backup
            assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # and no gap after
            assert set(seqs) - set(acked) <= set(during)
            members = {m.username for m in await reader.members(conv.id)}
            assert members == {alice.username, bob.username}
            assert [d.device_id for d in await reader.user_devices(alice.username)] == [
                alice.device_id
            ]
            # The attachment comes back whole: the same bytes, checked against its SHA-256.
            await reader.logout()
            await reader.login(bob.username, PASSWORD, device_id=bob.device_id)
            again_bob = SecureClient(reader, DeviceStore(tmp_path / "bob.json"))
            await again_bob.start()
            entry = next(e for e in await again_bob.timeline(conv.id) if e.attachment)
            saved = await again_bob.save_attachment(entry, tmp_path / "restored.pdf")
            assert saved.read_bytes() == attached.read_bytes()
        async with Client(target.url) as admin:
            await admin.login("oncall", PASSWORD)
            assert (await admin.incident(str(incident.number))).title == "Restore drill"
    finally:
        target.stop()
        drop_database(database)

    # A damaged backup is refused before anything is written.
    [data] = [p for p in folder.iterdir() if p.is_file() and p.name != "manifest.json"]
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 1
    data.write_bytes(bytes(raw))
    env, database = backend_env(backend)
    fresh = ServerProcess(tmp_path / "fresh", env)
    fresh.data_dir.mkdir()
    try:
        refused = secureconnect(fresh, "restore", str(folder))
        assert refused.returncode == 1 and "does not match the manifest" in refused.stderr
        assert not (fresh.data_dir / "secureconnect.db").exists()
    finally:
        drop_database(database)
    for client in (oncall, alice.client, bob.client):
        await client.aclose()


def test_backups_beyond_the_kept_number_are_removed(own_server: ServerProcess, tmp_path) -> None:
    own_server.start()
    for _ in range(3):
        assert secureconnect(own_server, "backup", "--to", str(tmp_path / "b"), "--keep", "2")
    kept = sorted((tmp_path / "b").iterdir())
    assert len(kept) == 2 and all((k / "manifest.json").exists() for k in kept)
