"""Calls across video-service replicas: any replica drives a call (it forwards to the one whose
Janus hosts it), a replica that shuts down hands its calls over, and a replica that died is
taken over by the next one asked. PostgreSQL + Redis, two replicas, each with its own Janus."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import Iterator

import pytest

from secureconnect.client import ApiError, CallChanged, Client
from tests.conftest import FAST, backend_env, drop_database, in_ci
from tests.helpers import PASSWORD, call_owner, listening, signed_up, unique
from tests.server import RedisProcess, ServerProcess

pytestmark = [pytest.mark.slow, pytest.mark.solo]


@pytest.fixture
def cluster(tmp_path) -> Iterator[tuple[dict[str, str], list[ServerProcess]]]:  # type: ignore[no-untyped-def]
    if shutil.which("janus") is None:
        if in_ci():
            pytest.fail("janus is not installed")
        pytest.skip("janus is not installed")
    redis = RedisProcess()
    redis.start()
    env, database = backend_env("postgresql")
    env.update(
        {
            **FAST,
            "SECURECONNECT_REDIS_URL": redis.url,
            "SECURECONNECT_SFU": "true",
            "SECURECONNECT_TURN": "false",
            "SECURECONNECT_CALL_RING_S": "60",
        }
    )
    started: list[ServerProcess] = []
    try:
        yield env, started
    finally:
        for server in started:
            server.stop()
        redis.stop()
        drop_database(database)


def replica(env: dict[str, str], folder, ports: str, started: list[ServerProcess]) -> ServerProcess:  # type: ignore[no-untyped-def]
    server = ServerProcess(folder, {**env, "SECURECONNECT_JANUS_RTP_PORTS": ports})
    server.data_dir.mkdir(exist_ok=True)
    started.append(server.start())
    return server


async def joined(client: Client, call_id: str, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        try:
            return await client.join_call(call_id)
        except ApiError as error:
            assert error.code == "calls_unavailable" and time.monotonic() < deadline, error
            await asyncio.sleep(0.3)


async def test_any_replica_drives_a_call_and_a_stopped_one_hands_it_over(cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    env, started = cluster
    a = replica(env, tmp_path / "a", "24000-24199", started)
    b = replica(env, tmp_path / "b", "24200-24399", started)
    alice_name, bob_name = unique("alice"), unique("bob")
    alice = await signed_up(Client(a.url), alice_name)
    bob = await signed_up(Client(b.url), bob_name)
    try:
        conv = await alice.direct(bob_name)
        call = await alice.start_call(conv.id)
        await joined(alice, call.id)
        host = await call_owner(env, call.id)
        assert host.endswith(f":{a.port}")
        # Bob's requests land on the other replica: it sends them on to the host.
        seat = await joined(bob, call.id)
        assert {p.username for p in seat.call.participants} == {alice_name, bob_name}
        await bob.call_heartbeat(call.id)
        assert (await bob.configure_call(call.id, audio=False)).state == "live"
        # The host shuts down: it lets the call go, the devices hear the epoch change, and the
        # replica they reach next takes the call over.
        async with listening(bob) as bob_hears:
            a.stop()
            await bob_hears.wait_for(
                lambda heard: any(
                    isinstance(e, CallChanged) and e.call.sfu_epoch == 0 for e in heard.events
                ),
                timeout=20,
            )
        alice_on_b = Client(b.url)
        await alice_on_b.login(alice_name, PASSWORD, device_id=alice.login_info.device_id)  # type: ignore[union-attr]
        try:
            await joined(bob, call.id)
            again = await joined(alice_on_b, call.id)
            assert len(again.call.participants) == 2
            assert (await call_owner(env, call.id)).endswith(f":{b.port}")
            # The new host dies without a word: the next replica asked takes the call over,
            # and the devices join there.
            b.kill()
            c = replica(env, tmp_path / "c", "24400-24599", started)
            bob_on_c = Client(c.url)
            await bob_on_c.login(bob_name, PASSWORD, device_id=bob.login_info.device_id)  # type: ignore[union-attr]
            try:
                with pytest.raises(ApiError) as lost:
                    await bob_on_c.call_heartbeat(call.id)
                assert lost.value.code == "not_in_call"  # the seat was on the dead replica
                assert (await call_owner(env, call.id)).endswith(f":{c.port}")
                rejoined = await joined(bob_on_c, call.id)
                assert rejoined.call.sfu_epoch > 0
            finally:
                await bob_on_c.aclose()
        finally:
            await alice_on_b.aclose()
    finally:
        await alice.aclose()
        await bob.aclose()


async def test_a_removal_the_host_missed_still_puts_them_out(cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The hosting replica answers heartbeats from memory between its store rounds; a removal
    whose Redis message it never got (here: made in the store alone) must still take the
    member out within a round or two, while their heartbeats keep coming through the other
    replica, not after the heartbeat timeout. PostgreSQL and Redis, as in production."""
    import asyncpg

    env, started = cluster
    a = replica(env, tmp_path / "a", "24400-24599", started)
    b = replica(env, tmp_path / "b", "24600-24799", started)
    names = [unique("alice"), unique("bob"), unique("carol")]
    alice = await signed_up(Client(a.url), names[0])
    bob = await signed_up(Client(a.url), names[1])
    carol = await signed_up(Client(b.url), names[2])  # her requests are forwarded to the host
    try:
        group = await alice.create_group(names[1:], "standup")
        call = await alice.start_call(group.id)
        for client in (alice, bob, carol):
            await joined(client, call.id)
            await client.call_heartbeat(call.id)
        db = await asyncpg.connect(env["SECURECONNECT_DATABASE_URL"].replace("+asyncpg", ""))
        try:
            await db.execute(
                "UPDATE members SET left_seq = 1 WHERE conversation_id = $1"
                " AND user_id = (SELECT id FROM users WHERE username = $2)",
                group.id,
                names[2],
            )
        finally:
            await db.close()
        started_at = time.monotonic()
        while True:
            with contextlib.suppress(ApiError):
                await carol.call_heartbeat(call.id)
            present = {p.username for p in (await alice.get_call(call.id)).participants}
            if names[2] not in present:
                break
            # Rounds are 5 s apart here; the heartbeat timeout, which drops anyone, is 30 s.
            assert time.monotonic() - started_at < 12.0, "carol is still in the call"
            await asyncio.sleep(0.5)
        assert present == set(names[:2])
        with pytest.raises(ApiError) as refused:
            await carol.call_heartbeat(call.id)
        assert refused.value.status == 403
    finally:
        for client in (alice, bob, carol):
            await client.aclose()
