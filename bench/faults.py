"""Faults under load, and backup and restore of 100,000 messages (issue 15).

The platform as Kubernetes runs it, on loopback: two chat replicas on PostgreSQL (a primary and
a synchronous standby of the bench's own, tests/pgpair.py) and Redis; one sender posting into a
group, two receivers on different replicas, all end-to-end encrypted SDK devices. For each phase
(first a control with no fault, then each fault), a bounded number of messages at a bounded
rate; the fault comes a third of the way in:

- kill -9 of a chat replica (the sender's and one receiver's), restarted at once, as its pod is;
- Redis restarted (the bus between replicas);
- the PostgreSQL primary killed, the standby promoted a second later.

For each: messages acknowledged, stored, delivered to each device, duplicates shown to a person,
losses, and the seconds from the fault until both devices had a message sent after it (beside
the control's delivery time, measured in the same run). Goal: zero lost, zero duplicates shown,
delivery back within 5 s.

Then backup and restore of 100,000 messages (SQLite, then PostgreSQL), with a plain copy of the
same database (``cp``; ``pg_dump``/``pg_restore`` alone) as the reference.

    .venv/bin/python bench/faults.py                       # everything
    .venv/bin/python bench/faults.py --skip-backup --per-phase 60
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import httpx
from servers import secure_device
from tests.pgpair import PgPair
from tests.server import RedisProcess, ServerProcess

from secureconnect.client import ApiError
from secureconnect.client.secure import PlainMessage, SecureClient
from secureconnect.client.types import Ready

PASSWORD = "benchmark password 1"
QUIET = {"SECURECONNECT_LOG_LEVEL": "WARNING", "SECURECONNECT_DB_POOL_TIMEOUT_S": "2"}
SETTLE_S = 8.0  # after a phase's last send, for what is in flight to arrive


@dataclass
class Receiver:
    name: str
    device: SecureClient
    shown: list[tuple[str, float]] = field(default_factory=list)  # (text, when)
    task: asyncio.Task[None] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)

    async def listen(self, conv_id: str) -> None:
        async for event in self.device.events():
            if isinstance(event, Ready):
                self.ready.set()
            elif (
                isinstance(event, PlainMessage)
                and event.kind == "message"
                and event.conversation_id == conv_id
            ):
                self.shown.append((event.text, time.monotonic()))


async def send_until_stored(sender: SecureClient, conv_id: str, text: str, deadline: float) -> bool:
    """The SDK sends with one message id and retries it; a phase keeps trying until it is
    stored or the phase's time is up (then it is not acknowledged, and not counted lost)."""
    while time.monotonic() < deadline:
        try:
            await sender.send(conv_id, text.encode())
            return True
        except (ApiError, httpx.HTTPError):
            await asyncio.sleep(0.3)
    return False


async def phase(
    name: str,
    fault: object,
    sender: SecureClient,
    receivers: list[Receiver],
    conv_id: str,
    count: int,
    rate: float,
) -> dict[str, object]:
    tag = uuid.uuid4().hex[:6]
    acked: list[str] = []
    sent_at: dict[str, float] = {}
    fault_at = 0.0
    deadline = time.monotonic() + count / rate + 60
    for i in range(count):
        if i == count // 3 and callable(fault):
            fault_at = time.monotonic()
            await asyncio.to_thread(fault)
        text = f"{name}-{tag}-{i}"
        sent_at[text] = time.monotonic()
        if await send_until_stored(sender, conv_id, text, deadline):
            acked.append(text)
        await asyncio.sleep(1 / rate)
    await asyncio.sleep(SETTLE_S)
    history = await sender.history(conv_id)
    stored = {m.text for m in history if isinstance(m, PlainMessage) and m.kind == "message"}
    row: dict[str, object] = {"phase": name, "acknowledged": len(acked)}
    row["stored"] = sum(1 for t in acked if t in stored)
    lost = len(acked) - int(row["stored"])  # type: ignore[call-overload]
    resumed = []
    latencies = []
    for r in receivers:
        mine = [(t, at) for t, at in r.shown if t.startswith(f"{name}-{tag}-")]
        texts = [t for t, _ in mine]
        row[f"delivered to {r.name}"] = len(set(texts) & set(acked))
        row[f"duplicates shown to {r.name}"] = len(texts) - len(set(texts))
        lost += len(set(acked) - set(texts))
        latencies += [at - sent_at[t] for t, at in mine if t in sent_at]
        after = [at for t, at in mine if fault_at and sent_at.get(t, 0) >= fault_at]
        if fault_at:
            resumed.append(min(after) - fault_at if after else float("inf"))
    row["lost"] = lost
    row["delivery p50 ms"] = round(statistics.median(latencies) * 1000, 1) if latencies else None
    row["resumed after s"] = round(max(resumed), 2) if resumed else None
    return row


def pg_folder() -> Path:
    """Outside the temporary folder of this run: the postgres user must reach it."""
    root = Path(tempfile.mkdtemp(prefix="sc-pgpair-"))
    root.chmod(0o755)
    return root


async def faults(per_phase: int, rate: float, tmp: Path) -> list[dict[str, object]]:
    pg_root = pg_folder()
    pair = PgPair(pg_root / "pg").start()
    redis = RedisProcess()
    redis.start()
    env = {**QUIET, "SECURECONNECT_DATABASE_URL": pair.url(), "SECURECONNECT_REDIS_URL": redis.url}
    replicas = []
    rows: list[dict[str, object]] = []
    try:
        for n in range(2):
            (tmp / f"replica{n}").mkdir()
            replicas.append(ServerProcess(tmp / f"replica{n}", env).start())
        a, b = replicas
        run = uuid.uuid4().hex[:6]
        sender = await secure_device(a.url, f"alice{run}", tmp, PASSWORD)
        receivers = [
            Receiver("bob (replica 1)", await secure_device(a.url, f"bob{run}", tmp, PASSWORD)),
            Receiver("carol (replica 2)", await secure_device(b.url, f"carol{run}", tmp, PASSWORD)),
        ]
        conv = await sender.client.create_group([r.device.username for r in receivers], "bench")
        for r in receivers:
            r.task = asyncio.create_task(r.listen(conv.id))
            await asyncio.wait_for(r.ready.wait(), 20)
        await sender.send(conv.id, b"warm up")

        def kill_replica() -> None:
            a.kill()
            a.start()

        def restart_redis() -> None:
            redis.stop()
            redis.start()

        def lose_primary() -> None:
            pair.kill_primary()
            time.sleep(1.0)  # the operator notices, then promotes
            pair.promote()

        for name, fault in (
            ("control", None),
            ("kill -9 chat replica", kill_replica),
            ("Redis restarted", restart_redis),
            ("PostgreSQL primary lost", lose_primary),
        ):
            rows.append(await phase(name, fault, sender, receivers, conv.id, per_phase, rate))
        for r in receivers:
            if r.task is not None:
                r.task.cancel()
            await r.device.client.aclose()
        await sender.client.aclose()
    finally:
        for replica in replicas:
            replica.stop()
        redis.stop()
        pair.stop()
        shutil.rmtree(pg_root, ignore_errors=True)
    return rows


# ----- backup and restore of 100,000 messages -------------------------------------------------


def fill_sqlite(path: Path, messages: int) -> None:
    """Rows as the API writes them (two users, one conversation, ciphertext-like bodies),
    inserted directly: the bench measures the backup, not 100,000 HTTP requests."""
    db = sqlite3.connect(path)
    now = int(time.time() * 1000)
    db.execute(
        "INSERT INTO users (id, username, password_hash, created_at) VALUES (?, ?, ?, ?)",
        ("u" * 32, "filler", "x", now),
    )
    db.execute(
        "INSERT INTO conversations (id, kind, name, created_by, created_at, last_seq)"
        " VALUES (?, 'group', 'bench', ?, ?, ?)",
        ("c" * 32, "u" * 32, now, messages),
    )
    db.execute(
        "INSERT INTO members (conversation_id, user_id, role, joined_seq)"
        " VALUES (?, ?, 'admin', 0)",
        ("c" * 32, "u" * 32),
    )
    db.executemany(
        "INSERT INTO events (conversation_id, seq, kind, sender_user_id, sender_device_id,"
        " client_msg_id, content_type, body, created_at) VALUES (?, ?, 'message', ?, NULL, ?,"
        " 'application/vnd.secureconnect.senderkey+json', ?, ?)",
        (
            ("c" * 32, seq, "u" * 32, f"m{seq}", os.urandom(300), now)
            for seq in range(1, messages + 1)
        ),
    )
    db.commit()
    db.close()


def cli(env: dict[str, str], *args: str) -> float:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "secureconnect", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        check=False,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr)
    return time.perf_counter() - started


def backups(messages: int, tmp: Path) -> list[dict[str, object]]:
    rows = []
    # SQLite: a migrated data folder, filled, backed up, restored into a fresh one.
    source = tmp / "sqlite-source"
    env = {"SECURECONNECT_DATA_DIR": str(source), **QUIET}
    cli(env, "migrate")
    fill_sqlite(source / "secureconnect.db", messages)
    took_backup = cli(env, "backup", "--to", str(tmp / "sqlite-backups"))
    [folder] = list((tmp / "sqlite-backups").iterdir())
    took_restore = cli(
        {**env, "SECURECONNECT_DATA_DIR": str(tmp / "sqlite-restored")}, "restore", str(folder)
    )
    started = time.perf_counter()
    shutil.copyfile(source / "secureconnect.db", tmp / "plain-copy.db")
    copy = time.perf_counter() - started
    size = (source / "secureconnect.db").stat().st_size / 2**20
    rows.append(
        {
            "backend": f"SQLite ({size:.0f} MiB)",
            "backup s": round(took_backup, 2),
            "restore s": round(took_restore, 2),
            "reference: plain copy s": round(copy, 3),
            "backup / copy": round(took_backup / copy, 1),
        }
    )
    # PostgreSQL: the same rows in a fresh database on the machine's server.
    from tests.conftest import backend_env, drop_database

    pg_env, database = backend_env("postgresql")
    restored_env, restored_db = backend_env("postgresql")
    try:
        env = {**QUIET, **pg_env, "SECURECONNECT_DATA_DIR": str(tmp / "pg-data")}
        cli(env, "migrate")
        libpq = pg_env["SECURECONNECT_DATABASE_URL"].replace("+asyncpg", "")
        fill_postgres(libpq, messages)
        took_backup = cli(env, "backup", "--to", str(tmp / "pg-backups"))
        [folder] = list((tmp / "pg-backups").iterdir())
        took_restore = cli(
            {**QUIET, **restored_env, "SECURECONNECT_DATA_DIR": str(tmp / "pg-restored")},
            "restore",
            str(folder),
        )
        started = time.perf_counter()
        subprocess.run(
            ["pg_dump", "--format=custom", f"--file={tmp / 'plain.pgdump'}", libpq], check=True
        )
        dump = time.perf_counter() - started
        rows.append(
            {
                "backend": "PostgreSQL",
                "backup s": round(took_backup, 2),
                "restore s": round(took_restore, 2),
                "reference: plain pg_dump s": round(dump, 2),
                "backup / pg_dump": round(took_backup / dump, 2),
            }
        )
    finally:
        drop_database(database)
        drop_database(restored_db)
    return rows


def fill_postgres(url: str, messages: int) -> None:
    import asyncpg

    async def go() -> None:
        conn = await asyncpg.connect(url)
        now = int(time.time() * 1000)
        await conn.execute(
            "INSERT INTO users (id, username, password_hash, created_at) VALUES ($1, $2, $3, $4)",
            "u" * 32,
            "filler",
            "x",
            now,
        )
        await conn.execute(
            "INSERT INTO conversations (id, kind, name, created_by, created_at, last_seq)"
            " VALUES ($1, 'group', 'bench', $2, $3, $4)",
            "c" * 32,
            "u" * 32,
            now,
            messages,
        )
        await conn.copy_records_to_table(
            "events",
            records=[
                (
                    "c" * 32,
                    seq,
                    "message",
                    "u" * 32,
                    None,
                    f"m{seq}",
                    "application/vnd.secureconnect.senderkey+json",
                    os.urandom(300),
                    now,
                )
                for seq in range(1, messages + 1)
            ],
            columns=[
                "conversation_id",
                "seq",
                "kind",
                "sender_user_id",
                "sender_device_id",
                "client_msg_id",
                "content_type",
                "body",
                "created_at",
            ],
        )
        await conn.close()

    asyncio.run(go())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--per-phase", type=int, default=150, help="messages in each phase")
    parser.add_argument("--rate", type=float, default=25.0, help="messages a second")
    parser.add_argument("--messages", type=int, default=100_000, help="for the backup")
    parser.add_argument("--skip-faults", action="store_true")
    parser.add_argument("--skip-backup", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if not args.skip_faults:
            rows = asyncio.run(faults(args.per_phase, args.rate, tmp))
            control = rows[0]["delivery p50 ms"]
            print(f"\nfaults ({args.per_phase} messages a phase at {args.rate:g}/s):")
            for row in rows:
                resumed = row["resumed after s"]
                ok = (
                    row["lost"] == 0
                    and not any(v for k, v in row.items() if k.startswith("duplicates") and v)
                    and (resumed is None or resumed <= 5)
                )
                print(
                    f"  {row['phase']:<24} "
                    + ", ".join(f"{k} {v}" for k, v in row.items() if k != "phase")
                    + f" (control p50 {control} ms){'' if ok else '  GOAL MISSED'}"
                )
        if not args.skip_backup:
            print(f"\nbackup and restore of {args.messages:,} messages:")
            for row in backups(args.messages, tmp):
                print("  " + ", ".join(f"{k} {v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
